//! The `smsotp` admin tool end to end: the built binary against a scratch
//! config, store and outbox, as root (which the tool requires). Doctor is
//! pointed at deliberately broken sshd_config and PAM files in the scratch
//! dir with `--sshd-config` and `--pam-dir`.
//!
//! Needs `cargo build -p smsotp` (or `SMSOTP_CLI=path`).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use smsotp_e2e::{workspace_root, Scratch};

const ALICE_PHONE: &str = "+12015550123";

fn cli_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SMSOTP_CLI") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let p = target.join("debug/smsotp");
    assert!(
        p.exists(),
        "{} not found; run `cargo build -p smsotp`",
        p.display()
    );
    p
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn smsotp(scratch: &Scratch, args: &[&str]) -> Run {
    let out = Command::new(cli_path())
        .arg("--config")
        .arg(scratch.path("smsotp.toml"))
        .args(args)
        .env_remove("SUDO_USER")
        .output()
        .expect("run smsotp");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn scratch(extra: &str) -> Scratch {
    let s = Scratch::new();
    s.phones(&[("alice", ALICE_PHONE)]);
    s.config(extra);
    s
}

#[test]
fn check_config_prints_the_effective_config_or_the_fault() {
    let s = scratch("[policy]\nno_phone = \"enroll\"\n");
    let r = smsotp(&s, &["check-config"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("valid"), "{r}");
    let r = smsotp(&s, &["--json", "check-config"]);
    let j = r.json();
    assert_eq!(j["ok"], true);
    assert_eq!(j["effective"]["policy"]["no_phone"], "enroll");
    assert_eq!(j["effective"]["providers"][0]["kind"], "outbox");

    s.write("smsotp.toml", "[otp]\nlength = 99\n", 0o600);
    let r = smsotp(&s, &["check-config"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stdout.contains("otp.length") && r.stdout.contains(":2:"),
        "{r}"
    );
    let j = smsotp(&s, &["--json", "check-config"]).json();
    assert_eq!(j["ok"], false);
    // Another command on a broken config: EX_CONFIG.
    assert_eq!(smsotp(&s, &["user", "show", "alice"]).code, 78);
}

#[test]
fn usage_errors_exit_2() {
    let s = scratch("");
    assert_eq!(smsotp(&s, &["no-such-command"]).code, 2);
    assert_eq!(smsotp(&s, &["test-send"]).code, 2);
    assert_eq!(
        smsotp(&s, &["backup-codes", "generate", "alice", "--count", "0"]).code,
        2
    );
}

#[test]
fn user_phone_set_show_clear() {
    let s = scratch("[phone]\nallowed_countries = [\"US\"]\n");
    let j = smsotp(&s, &["--json", "user", "show", "alice"]).json();
    assert_eq!(j["phone"], "******0123");
    assert!(j["source"].as_str().unwrap().starts_with("file "), "{j}");

    let r = smsotp(&s, &["user", "set-phone", "alice", "+1 201 555 0177"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("******0177"), "{r}");
    assert!(!r.stdout.contains("2015550177"), "full number printed: {r}");
    let j = smsotp(&s, &["--json", "user", "show", "alice"]).json();
    assert_eq!(j["phone"], "******0177");
    assert_eq!(j["source"], "store (set by admin:root)");
    // The phone file is never rewritten.
    let file = std::fs::read_to_string(s.path("phones.toml")).unwrap();
    assert!(
        file.contains(ALICE_PHONE) && !file.contains("0177"),
        "{file}"
    );

    // Not a number, a country not allowed: EX_DATAERR, nothing changes.
    assert_eq!(
        smsotp(&s, &["user", "set-phone", "alice", "call me"]).code,
        65
    );
    let r = smsotp(&s, &["user", "set-phone", "alice", "+49 30 1234567"]);
    assert_eq!(r.code, 65, "{r}");
    assert!(r.stderr.contains("allowed_countries"), "{r}");

    let r = smsotp(&s, &["user", "clear-phone", "alice"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("still has ******0123"), "{r}");
    let j = smsotp(&s, &["--json", "user", "clear-phone", "alice"]).json();
    assert_eq!(j["removed"], false);

    let j = smsotp(&s, &["--json", "user", "show", "nobody"]).json();
    assert_eq!(j["phone"], Value::Null);
}

#[test]
fn backup_codes_generate_show_revoke() {
    let s = scratch("");
    let j = smsotp(
        &s,
        &[
            "--json",
            "backup-codes",
            "generate",
            "alice",
            "--count",
            "4",
        ],
    )
    .json();
    let codes: Vec<String> = j["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 4);
    assert!(
        codes.iter().all(|c| c.len() == 11 && &c[5..6] == "-"),
        "{codes:?}"
    );
    let j = smsotp(&s, &["--json", "user", "show", "alice"]).json();
    assert_eq!(j["backup_codes_left"], 4);
    // Only hashes in the store.
    let db = std::fs::read(s.path("state.db")).unwrap();
    let wal = std::fs::read(s.path("state.db-wal")).unwrap_or_default();
    for c in &codes {
        let bare = c.replace('-', "");
        for form in [c.as_str(), bare.as_str(), &bare.to_uppercase()] {
            for bytes in [&db, &wal] {
                assert!(!bytes.windows(form.len()).any(|w| w == form.as_bytes()));
            }
        }
    }
    let r = smsotp(&s, &["backup-codes", "generate", "alice"]);
    assert_eq!(r.code, 0, "{r}");
    assert_eq!(
        r.stdout.lines().filter(|l| l.trim().len() == 11).count(),
        10,
        "{r}"
    );
    let r = smsotp(&s, &["backup-codes", "revoke", "alice"]);
    assert!(r.stdout.contains("10 backup code(s) revoked"), "{r}");
    let j = smsotp(&s, &["--json", "user", "show", "alice"]).json();
    assert_eq!(j["backup_codes_left"], 0);
}

#[test]
fn unlock_resets_failures() {
    let s = scratch("");
    let r = smsotp(&s, &["user", "unlock", "alice"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("nothing to clear (not locked"), "{r}");
    let j = smsotp(&s, &["--json", "user", "unlock", "alice"]).json();
    assert_eq!(j["was_locked"], false);
}

#[test]
fn opt_out_needs_the_policy_and_mandatory_ignores_it() {
    let s = scratch("");
    let r = smsotp(&s, &["user", "opt-out", "alice"]);
    assert_eq!(r.code, 78, "{r}");
    assert!(r.stderr.contains("user_opt_out"), "{r}");

    let s = scratch("[policy]\nuser_opt_out = true\n");
    assert_eq!(smsotp(&s, &["user", "opt-out", "alice"]).code, 0);
    let j = smsotp(&s, &["--json", "user", "show", "alice"]).json();
    assert_eq!(j["opted_out"], true);
    assert_eq!(j["opt_out_honoured"], true);
    assert_eq!(smsotp(&s, &["user", "opt-in", "alice"]).code, 0);
    assert_eq!(
        smsotp(&s, &["--json", "user", "show", "alice"]).json()["opted_out"],
        false
    );

    let s = scratch("[policy]\nuser_opt_out = true\nmandatory = true\n");
    let r = smsotp(&s, &["user", "opt-out", "alice"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("ignored"), "{r}");
    let j = smsotp(&s, &["--json", "user", "show", "alice"]).json();
    assert_eq!(j["opt_out_honoured"], false);
}

#[test]
fn test_send_says_which_provider_took_it() {
    let s = Scratch::new();
    s.phones(&[("alice", ALICE_PHONE)]);
    let d = s.path("").display().to_string();
    // A failing command provider first, then the outbox.
    let text = format!(
        "{}[[provider]]\nkind = \"command\"\nname = \"broken\"\nprogram = \"/bin/false\"\n\n[[provider]]\nkind = \"outbox\"\nname = \"box\"\npath = \"{d}/outbox.jsonl\"\n",
        s.base_tables(true, false)
    );
    s.write("smsotp.toml", &text, 0o600);
    let r = smsotp(&s, &["test-send", "--to", "+1 201 555 0199"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("through provider box"), "{r}");
    assert!(r.stdout.contains("broken"), "{r}");
    let j = smsotp(&s, &["--json", "test-send", "--user", "alice"]).json();
    assert_eq!(j["provider"], "box");
    let sent = s.outbox().all();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].to, "+12015550199");
    assert_eq!(sent[1].to, ALICE_PHONE);
    // No number for the user: EX_NOUSER; nothing works: EX_UNAVAILABLE.
    assert_eq!(smsotp(&s, &["test-send", "--user", "bob"]).code, 67);
    let text = format!(
        "{}[[provider]]\nkind = \"command\"\nname = \"broken\"\nprogram = \"/bin/false\"\n",
        s.base_tables(true, false)
    );
    s.write("smsotp.toml", &text, 0o600);
    let r = smsotp(&s, &["test-send", "--to", "+12015550199"]);
    assert_eq!(r.code, 69, "{r}");
}

fn doctor(s: &Scratch) -> Run {
    let sshd = s.path("sshd_config");
    let pam = s.path("pam.d");
    smsotp(
        s,
        &[
            "doctor",
            "--no-network",
            "--sshd-config",
            sshd.to_str().unwrap(),
            "--pam-dir",
            pam.to_str().unwrap(),
        ],
    )
}

#[test]
fn doctor_reports_each_fault_of_a_broken_host() {
    let s = scratch("[policy]\nprovider_down = \"allow\"\nuser_opt_out = true\nmandatory = true\n");
    std::fs::create_dir(s.path("sshd_config.d")).unwrap();
    s.write(
        "sshd_config",
        "Include sshd_config.d/*.conf\nUsePAM no\nPasswordAuthentication yes\n",
        0o644,
    );
    s.write(
        "sshd_config.d/10-local.conf",
        "KbdInteractiveAuthentication no\nAuthenticationMethods publickey\n",
        0o644,
    );
    std::fs::create_dir(s.path("pam.d")).unwrap();
    s.write(
        "pam.d/common-auth",
        "auth sufficient pam_unix.so nullok\n",
        0o644,
    );
    s.write(
        "pam.d/sshd",
        "@include common-auth\nauth optional pam_smsotp.so\n",
        0o644,
    );
    s.write(
        "pam.d/sudo",
        "auth required pam_unix.so\nauth [success=ok default=ignore] pam_smsotp.so\n",
        0o644,
    );
    s.write(
        "pam.d/login",
        "-auth requisite pam_unix.so\n-auth [success=ok authinfo_unavail=ignore default=bad] pam_smsotp.so\n",
        0o644,
    );
    // A vendor token readable by others.
    let token = s.write("twilio-token", "secret-token\n", 0o644);
    s.config(&format!(
        "[policy]\nprovider_down = \"allow\"\nuser_opt_out = true\nmandatory = true\n\
         [[provider]]\nkind = \"twilio\"\naccount_sid = \"AC00000000000000000000000000000000\"\n\
         auth_token_file = \"{}\"\nfrom = \"+12015550100\"\n",
        token.display()
    ));
    // A world-readable phone list is fine; a group-writable one is not.
    s.write(
        "phones.toml",
        &format!("alice = \"{ALICE_PHONE}\"\n"),
        0o664,
    );
    let r = doctor(&s);
    assert_eq!(r.code, 1, "{r}");
    let out = &r.stdout;
    for needle in [
        "UsePAM is not yes",
        "10-local.conf:1",
        "KbdInteractiveAuthentication is no",
        "PasswordAuthentication is yes",
        "never uses keyboard-interactive",
        "sshd: /",
        "pam_smsotp is `optional`",
        "comes before pam_smsotp",
        "default=ignore",
        "authinfo_unavail=ignore",
        "`-auth` skips pam_smsotp",
        "a wrong password still goes on to pam_smsotp",
        "provider_down = \"allow\"",
        "IGNORED because mandatory = true",
        "phones.toml: is writable by group or others",
        "twilio-token: is readable or writable by group or others",
        "root: cannot look up the number",
    ] {
        assert!(
            out.contains(needle),
            "doctor did not report {needle:?}\n{r}"
        );
    }
    let j = {
        let sshd = s.path("sshd_config");
        let pam = s.path("pam.d");
        smsotp(
            &s,
            &[
                "--json",
                "doctor",
                "--no-network",
                "--sshd-config",
                sshd.to_str().unwrap(),
                "--pam-dir",
                pam.to_str().unwrap(),
            ],
        )
        .json()
    };
    assert_eq!(j["ok"], false);
    assert!(j["errors"].as_u64().unwrap() >= 8, "{j}");
}

#[test]
fn doctor_on_a_sound_host_finds_no_errors() {
    let s = scratch("");
    s.write(
        "sshd_config",
        "UsePAM yes\nKbdInteractiveAuthentication yes\nPasswordAuthentication no\nAuthenticationMethods publickey,keyboard-interactive\n",
        0o644,
    );
    std::fs::create_dir(s.path("pam.d")).unwrap();
    s.write(
        "pam.d/common-auth",
        "auth [success=1 default=ignore] pam_unix.so nullok\nauth requisite pam_deny.so\nauth required pam_permit.so\n",
        0o644,
    );
    s.write(
        "pam.d/sshd",
        "@include common-auth\nauth required pam_smsotp.so\n",
        0o644,
    );
    smsotp(&s, &["user", "set-phone", "root", "+12015550111"]);
    smsotp(&s, &["backup-codes", "generate", "root"]);
    let r = doctor(&s);
    let j: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("ERROR"))
        .collect();
    assert!(j.is_empty(), "{r}");
    assert!(r.stdout.contains("pam_smsotp is required"), "{r}");
    assert!(r.stdout.contains("root has ******0111"), "{r}");
}

#[test]
fn user_show_has_the_sms_window_and_unlock_says_what_it_cleared() {
    let s = scratch("[limits]\nsms_per_user = \"4/30m\"\n");
    let r = smsotp(&s, &["user", "show", "alice"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout
            .contains("SMS sent:      0 of 4 in the last 30 minutes (limits.sms_per_user)\n"),
        "{r}"
    );
    let j = smsotp(&s, &["--json", "user", "show", "alice"]).json();
    assert_eq!(
        j["sms_window"],
        serde_json::json!({"sent": 0, "limit": 4, "window_secs": 1800,
                           "limit_reached": false, "next_sms_at": null}),
        "{j}"
    );
    let r = smsotp(&s, &["user", "unlock", "alice"]);
    assert_eq!(r.code, 0, "{r}");
    assert_eq!(
        r.stdout,
        "alice: nothing to clear (not locked, no failures, no SMS in the per-user window)\n"
    );
    let j = smsotp(&s, &["--json", "user", "unlock", "alice"]).json();
    assert_eq!(j["sms_cleared"], 0, "{j}");
    assert_eq!(j["was_locked"], false, "{j}");
    let audit = std::fs::read_to_string(s.path("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"event\":\"admin_unlock\"") && audit.contains("nothing to clear"),
        "{audit}"
    );
}
