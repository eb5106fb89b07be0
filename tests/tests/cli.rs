//! The `smsotp` admin tool end to end: the built binary against a scratch
//! config, store and outbox, as root (which the tool requires). Doctor is
//! pointed at deliberately broken sshd_config and PAM files in the scratch
//! dir with `--sshd-config` and `--pam-dir`.
//!
//! Needs `cargo build -p smsotp` (or `SMSOTP_CLI=path`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use smsotp_e2e::{cli_path, workspace_root, Scratch};

const ALICE_PHONE: &str = "+12015550123";

use smsotp_e2e::ToolRun as Run;

fn smsotp(scratch: &Scratch, args: &[&str]) -> Run {
    smsotp_e2e::run_tool(scratch, args, std::time::Duration::from_secs(60))
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
    // For people: sections with key = value, not JSON.
    assert!(!r.stdout.contains('{'), "JSON in the plain output: {r}");
    assert!(r.stdout.contains("[policy]\n"), "{r}");
    assert!(r.stdout.contains("no_phone      = enroll"), "{r}");
    assert!(
        r.stdout
            .contains("phone lists: 1 number valid, 0 entries not usable"),
        "{r}"
    );
    let r = smsotp(&s, &["--json", "check-config"]);
    let j = r.json();
    assert_eq!(j["ok"], true);
    assert_eq!(j["effective"]["policy"]["no_phone"], "enroll");
    assert_eq!(j["effective"]["providers"][0]["kind"], "outbox");
    assert_eq!(j["phone_lists"]["valid"], 1);

    // An invalid config: EX_CONFIG, with file:line:column and the key.
    s.write("smsotp.toml", "[otp]\nlength = 99\n", 0o600);
    let r = smsotp(&s, &["check-config"]);
    assert_eq!(r.code, 78, "{r}");
    assert!(r.stderr.contains("smsotp.toml:2:10: otp.length"), "{r}");
    let r = smsotp(&s, &["--json", "check-config"]);
    assert_eq!(r.code, 78, "{r}");
    let j = r.json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["exit"], 78);
    assert!(j["error"].as_str().unwrap().contains(":2:10:"), "{j}");
    // Another command on a broken config: EX_CONFIG.
    assert_eq!(smsotp(&s, &["user", "show", "alice"]).code, 78);

    // No config at all: the advice is the tool's option, not the PAM
    // module's argument.
    std::fs::remove_file(s.path("smsotp.toml")).unwrap();
    let r = smsotp(&s, &["check-config"]);
    assert_eq!(r.code, 78, "{r}");
    assert!(r.stderr.contains("--config PATH"), "{r}");
    assert!(!r.stderr.contains("config="), "PAM syntax suggested: {r}");
}

#[test]
fn check_config_shows_each_provider_and_where_it_connects_without_secrets() {
    let s = Scratch::new();
    s.phones(&[("alice", ALICE_PHONE)]);
    let password = s.write("smpp-password", "smpp-pw-31c9\n", 0o600);
    let token = s.write("twilio-token", "twilio-token-77ab\n", 0o600);
    let text = format!(
        "{}[[provider]]\nkind = \"smpp\"\nname = \"smsc\"\nhost = \"smsc.example.net\"\nport = 2776\n\
         tls = true\nsystem_id = \"smsotp-e2e\"\npassword_file = \"{}\"\nsource_addr = \"SMSOTP\"\n\n\
         [[provider]]\nkind = \"twilio\"\naccount_sid = \"AC00000000000000000000000000000000\"\n\
         auth_token_file = \"{}\"\nfrom = \"+12015550100\"\n\n\
         [[provider]]\nkind = \"command\"\nname = \"script\"\nprogram = \"/bin/true\"\n",
        s.base_tables(true, false),
        password.display(),
        token.display()
    );
    s.write("smsotp.toml", &text, 0o600);
    let r = smsotp(&s, &["check-config"]);
    assert_eq!(r.code, 0, "{r}");
    for needle in [
        "[[provider]] smsc (smpp)",
        "host          = smsc.example.net",
        "port          = 2776",
        "system_id     = smsotp-e2e",
        "tls           = on",
        "source_addr   = SMSOTP",
        "[[provider]] twilio (http)",
        "endpoint      = https://api.twilio.com",
        "number_format = e164",
        "[[provider]] script (command)",
        "program = /bin/true",
    ] {
        assert!(r.stdout.contains(needle), "no {needle:?} in\n{r}");
    }
    let j = smsotp(&s, &["--json", "check-config"]).json();
    let p = &j["effective"]["providers"];
    assert_eq!(p[0]["kind"], "smpp");
    assert_eq!(p[0]["host"], "smsc.example.net");
    assert_eq!(p[0]["port"], 2776);
    assert_eq!(p[0]["system_id"], "smsotp-e2e");
    assert_eq!(p[0]["tls"], true);
    assert_eq!(p[1]["kind"], "http");
    assert_eq!(p[1]["preset"], "twilio");
    assert_eq!(p[2]["kind"], "command");
    let all = format!("{}{}", r.stdout, j);
    assert!(!all.contains("\"other\""), "{all}");
    for secret in ["smpp-pw-31c9", "twilio-token-77ab"] {
        assert!(!all.contains(secret), "secret {secret} shown: {all}");
    }
}

#[test]
fn check_config_names_each_bad_phone_list_entry_with_the_fix() {
    let s = scratch("[phone]\nallowed_countries = [\"US\"]\n");
    s.phones(&[
        ("alice", ALICE_PHONE),
        ("carol", "0151 2345678"),
        ("dave", "+49 30 1234567"),
    ]);
    let r = smsotp(&s, &["check-config"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stdout.contains("1 number valid, 2 entries not usable"),
        "{r}"
    );
    assert!(r.stdout.contains("phones.toml:2:9: carol: "), "{r}");
    assert!(
        r.stdout.contains("+49 171 1234567") && r.stdout.contains("set phone.default_region"),
        "{r}"
    );
    assert!(r.stdout.contains("phones.toml:3:8: dave: "), "{r}");
    assert!(
        r.stdout.contains("add \"DE\" to phone.allowed_countries"),
        "{r}"
    );
    assert!(
        !r.stdout.contains("2345678") && !r.stdout.contains("301234567"),
        "whole number shown: {r}"
    );
    let r = smsotp(&s, &["--json", "check-config"]);
    assert_eq!(r.code, 1, "{r}");
    let j = r.json();
    assert_eq!(j["ok"], false);
    let bad = &j["phone_lists"]["bad"];
    assert_eq!(bad[0]["user"], "carol");
    assert_eq!(bad[0]["line"], 2);
    assert!(
        bad[0]["path"].as_str().unwrap().ends_with("phones.toml"),
        "{j}"
    );
    assert_eq!(bad[1]["user"], "dave");
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

/// alice with a number; a failing command provider `broken`, then the
/// outbox `box`.
fn broken_then_outbox() -> Scratch {
    let s = Scratch::new();
    s.phones(&[("alice", ALICE_PHONE)]);
    let d = s.path("").display().to_string();
    let text = format!(
        "{}[[provider]]\nkind = \"command\"\nname = \"broken\"\nprogram = \"/bin/false\"\n\n[[provider]]\nkind = \"outbox\"\nname = \"box\"\npath = \"{d}/outbox.jsonl\"\n",
        s.base_tables(true, false)
    );
    s.write("smsotp.toml", &text, 0o600);
    s
}

#[test]
fn test_send_says_which_provider_took_it() {
    let s = broken_then_outbox();
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

#[test]
fn test_send_provider_sends_through_that_one_only() {
    let s = broken_then_outbox();
    // The second provider on its own.
    let r = smsotp(&s, &["test-send", "--user", "alice", "--provider", "box"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("through provider box"), "{r}");
    assert!(!r.stdout.contains("broken"), "the first was tried: {r}");
    assert_eq!(s.outbox().count(), 1);
    // The first on its own: no failover to the outbox.
    let r = smsotp(
        &s,
        &[
            "--json",
            "test-send",
            "--to",
            "+12015550199",
            "--provider",
            "broken",
        ],
    );
    assert_eq!(r.code, 69, "{r}");
    assert!(
        r.json()["error"].as_str().unwrap().contains("broken"),
        "{r}"
    );
    assert_eq!(s.outbox().count(), 1, "failed over despite --provider");
    // A name that is not configured: a usage error naming the ones there are.
    let r = smsotp(&s, &["test-send", "--user", "alice", "--provider", "sms1"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr.contains("\"sms1\"") && r.stderr.contains("broken, box"),
        "{r}"
    );
}

#[test]
fn test_send_to_a_bad_listed_number_is_bad_data_with_the_line_and_the_fix() {
    let s = scratch("");
    s.phones(&[("alice", ALICE_PHONE), ("carol", "0171 1234567")]);
    let r = smsotp(&s, &["test-send", "--user", "carol"]);
    assert_eq!(r.code, 65, "{r}");
    assert!(
        r.stderr.contains("phones.toml:2:9: the number for carol"),
        "{r}"
    );
    assert!(
        r.stderr.contains("fix: ") && r.stderr.contains("phone.default_region"),
        "{r}"
    );
    assert!(!r.stderr.contains("store"), "blamed on the store: {r}");
    assert_eq!(s.outbox().count(), 0);
    // A number outside phone.allowed_countries is refused as a login would.
    let s = scratch("[phone]\nallowed_countries = [\"DE\"]\n");
    let r = smsotp(&s, &["test-send", "--user", "alice"]);
    assert_eq!(r.code, 65, "{r}");
    assert!(r.stderr.contains("allowed_countries"), "{r}");
    assert_eq!(s.outbox().count(), 0);
}

/// Each exit code smsotp(8), the README and the tool's own doc promise,
/// produced by the built binary.
#[test]
fn every_documented_exit_code() {
    let s = scratch("");
    let code = |args: &[&str]| smsotp(&s, args).code;
    // 0 ok.
    assert_eq!(code(&["check-config"]), 0);
    // 2 usage.
    assert_eq!(code(&["test-send"]), 2);
    assert_eq!(code(&["user", "frobnicate", "alice"]), 2);
    // 65 bad data: not a number.
    assert_eq!(code(&["test-send", "--to", "call me"]), 65);
    // 67 no number for the user.
    assert_eq!(code(&["test-send", "--user", "bob"]), 67);
    // 77 not root (a config the caller does not own).
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(cli_path())
        .arg("--config")
        .arg(s.path("smsotp.toml"))
        .arg("check-config")
        .output()
        .expect("run setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(err.contains("must run as root"), "{err}");
    // 1 problems found: a phone-list entry no login could use.
    s.phones(&[("alice", ALICE_PHONE), ("carol", "12")]);
    assert_eq!(code(&["check-config"]), 1);
    s.phones(&[("alice", ALICE_PHONE)]);
    // 69 no provider could send (a command provider that exits 75,
    // EX_TEMPFAIL).
    let d = s.dir.path().display().to_string();
    s.write("tempfail.sh", "#!/bin/sh\nexit 75\n", 0o755);
    let text = format!(
        "{}[[provider]]\nkind = \"command\"\nprogram = \"{d}/tempfail.sh\"\n",
        s.base_tables(true, false)
    );
    s.write("smsotp.toml", &text, 0o600);
    assert_eq!(code(&["test-send", "--user", "alice"]), 69);
    // 74 the store cannot be opened (its directory is a file).
    s.write("blocker", "", 0o600);
    let text = s
        .base_tables(true, true)
        .replace(&format!("{d}/state.db"), &format!("{d}/blocker/state.db"));
    assert!(text.contains("blocker/state.db"), "{text}");
    s.write("smsotp.toml", &text, 0o600);
    let r = smsotp(&s, &["user", "show", "alice"]);
    assert_eq!(r.code, 74, "{r}");
    assert!(r.stderr.contains("state store"), "{r}");
    // 78 the config is invalid.
    s.write("smsotp.toml", "[otp]\nlength = 99\n", 0o600);
    assert_eq!(code(&["check-config"]), 78);
    assert_eq!(code(&["test-send", "--user", "alice"]), 78);
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
        "UsePAM yes\nKbdInteractiveAuthentication yes\nPasswordAuthentication no\nAuthenticationMethods publickey,keyboard-interactive\n\
         Match User root\n  AuthenticationMethods publickey\n",
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

/// The stricter form of the shipped sshd drop-in
/// (config/sshd_config.d/smsotp.conf documents it): key users need the
/// password and the code after their key, root keeps a key-only way in.
const DROP_IN: &str = "KbdInteractiveAuthentication yes\nPasswordAuthentication no\n\
    AuthenticationMethods publickey,keyboard-interactive keyboard-interactive\n\
    Match User root\n\tAuthenticationMethods publickey\n";

/// The drop-in without its Match block.
fn drop_in_without_match() -> &'static str {
    let end = DROP_IN
        .find("Match")
        .expect("the drop-in has a Match block");
    &DROP_IN[..end]
}

/// Debian 12's stock sshd_config, its `Include` pointed at a scratch
/// sshd_config.d that holds `drop_in` as smsotp.conf.
fn debian_sshd(s: &Scratch, drop_in: &str) -> PathBuf {
    let stock = std::fs::read_to_string(workspace_root().join("tests/data/debian12-sshd_config"))
        .expect("read tests/data/debian12-sshd_config");
    let dir = s.path("sshd_config.d");
    std::fs::create_dir_all(&dir).unwrap();
    let include = format!("Include {}/*.conf", dir.display());
    let main: String = stock
        .lines()
        .map(|l| {
            if l.starts_with("Include ") {
                include.clone()
            } else {
                l.to_owned()
            }
        })
        .map(|l| l + "\n")
        .collect();
    assert!(main.contains(&include), "no Include line in the stock file");
    s.write("sshd_config.d/smsotp.conf", drop_in, 0o644);
    s.write("sshd_config", &main, 0o644)
}

fn debian_pam_dir() -> PathBuf {
    workspace_root().join("tests/data/debian12-pam.d")
}

/// `smsotp --json doctor` on the given host files: the findings.
fn doctor_findings(s: &Scratch, sshd: &Path, pam_dir: &Path) -> (Run, Vec<Value>) {
    let r = smsotp(
        s,
        &[
            "--json",
            "doctor",
            "--no-network",
            "--sshd-config",
            sshd.to_str().unwrap(),
            "--pam-dir",
            pam_dir.to_str().unwrap(),
        ],
    );
    let findings = r.json()["findings"].as_array().cloned().unwrap_or_default();
    assert!(!findings.is_empty(), "{r}");
    (r, findings)
}

fn with_level<'a>(findings: &'a [Value], level: &str) -> Vec<&'a Value> {
    findings.iter().filter(|f| f["level"] == level).collect()
}

fn message(f: &Value) -> &str {
    f["message"].as_str().unwrap_or_default()
}

/// The drop-in the package ships and the README copies.
fn shipped_drop_in() -> String {
    std::fs::read_to_string(workspace_root().join("config/sshd_config.d/smsotp.conf"))
        .expect("read config/sshd_config.d/smsotp.conf")
}

#[test]
fn doctor_on_stock_debian_with_the_shipped_drop_in_finds_no_error() {
    let s = scratch("");
    let sshd = debian_sshd(&s, &shipped_drop_in());
    let (r, f) = doctor_findings(&s, &sshd, &debian_pam_dir());
    assert!(with_level(&f, "error").is_empty(), "{r}");
    // root has no number, but its key alone lets it in: no lock-out.
    assert!(
        with_level(&f, "info")
            .iter()
            .any(|x| message(x).starts_with("root logs in with a key alone (Match User root at ")),
        "no break-glass finding\n{r}"
    );
    // The one thing it leaves open is said: a key alone skips the code.
    assert!(
        with_level(&f, "warning")
            .iter()
            .any(|x| x["area"] == "sshd" && message(x).contains("publickey")),
        "{r}"
    );
}

#[test]
fn doctor_on_stock_debian_with_the_stricter_drop_in_finds_no_error() {
    let s = scratch("");
    let r = smsotp(&s, &["user", "set-phone", "root", "+12015550111"]);
    assert_eq!(r.code, 0, "{r}");
    let sshd = debian_sshd(&s, DROP_IN);
    let (r, f) = doctor_findings(&s, &sshd, &debian_pam_dir());
    assert!(with_level(&f, "error").is_empty(), "{r}");
    // Nothing in the sshd or PAM areas needs fixing either.
    let faults: Vec<&Value> = f
        .iter()
        .filter(|x| x["level"] == "warning" && (x["area"] == "sshd" || x["area"] == "pam"))
        .collect();
    assert!(faults.is_empty(), "{faults:?}\n{r}");
    let info = with_level(&f, "info");
    let glass = info
        .iter()
        .find(|x| message(x).starts_with("root logs in with a key alone (Match User root at "))
        .unwrap_or_else(|| panic!("no break-glass finding\n{r}"));
    assert!(
        message(glass).contains("sshd_config.d/smsotp.conf:4)"),
        "{glass}"
    );
    // su and sudo (and their -l/-i forms) load pam_smsotp through
    // common-auth, after pam_unix's jump over pam_deny.
    for service in ["su", "su-l", "sudo", "sudo-i", "sshd", "login"] {
        let want = format!("{service}: pam_smsotp is required at ");
        assert!(
            with_level(&f, "ok")
                .iter()
                .any(|x| message(x).starts_with(&want) && message(x).contains("common-auth:")),
            "{service} not reported as loading pam_smsotp\n{r}"
        );
    }
    // Debian's `auth sufficient pam_rootok.so` is explained, never "fixed".
    let rootok: Vec<&Value> = f
        .iter()
        .filter(|x| message(x).contains("pam_rootok.so"))
        .collect();
    assert_eq!(rootok.len(), 4, "su, su-l, chfn, chsh: {rootok:?}");
    for x in rootok {
        assert_eq!(x["level"], "info", "{x}");
        assert!(x["fix"].is_null(), "{x}");
    }
}

#[test]
fn doctor_reports_the_root_lock_out_without_the_match_block() {
    let s = scratch("");
    smsotp(&s, &["user", "set-phone", "root", "+12015550111"]);
    let sshd = debian_sshd(&s, drop_in_without_match());
    let (r, f) = doctor_findings(&s, &sshd, &debian_pam_dir());
    assert_eq!(r.code, 1, "{r}");
    let errors = with_level(&f, "error");
    assert_eq!(errors.len(), 1, "{r}");
    let e = errors[0];
    assert_eq!(e["area"], "sshd");
    assert!(
        message(e).starts_with("root cannot log in over SSH")
            && message(e).contains("PermitRootLogin prohibit-password (sshd's default)"),
        "{e}"
    );
    let fix = e["fix"].as_str().unwrap_or_default();
    assert!(
        fix.contains("`Match User root`")
            && fix.contains("`    AuthenticationMethods publickey`")
            && fix.contains("sshd_config.d/smsotp.conf"),
        "{fix}"
    );
}

#[test]
fn doctor_reports_root_without_a_number_when_root_needs_a_code() {
    let s = scratch("");
    let drop_in = format!("{}PermitRootLogin yes\n", drop_in_without_match());
    let sshd = debian_sshd(&s, &drop_in);
    let (r, f) = doctor_findings(&s, &sshd, &debian_pam_dir());
    let errors = with_level(&f, "error");
    assert_eq!(errors.len(), 1, "{r}");
    let e = errors[0];
    assert_eq!(e["area"], "users");
    assert!(
        message(e).starts_with("root cannot log in over SSH")
            && message(e).contains("no number, no backup codes and is not exempt"),
        "{e}"
    );
    let fix = e["fix"].as_str().unwrap_or_default();
    for needle in [
        "smsotp user set-phone root +NUMBER",
        "smsotp backup-codes generate root",
        "policy.exempt_users",
    ] {
        assert!(fix.contains(needle), "{needle} missing from {fix}");
    }

    // Backup codes are a way in: no error, and no lock-out.
    let r = smsotp(&s, &["backup-codes", "generate", "root", "--count", "2"]);
    assert_eq!(r.code, 0, "{r}");
    let (r, f) = doctor_findings(&s, &sshd, &debian_pam_dir());
    assert!(with_level(&f, "error").is_empty(), "{r}");
    assert!(!r.stdout.contains("LOCKED OUT"), "{r}");

    // Exempt: keyboard-interactive asks only the password.
    let s = scratch("[policy]\nexempt_users = [\"root\"]\n");
    let sshd = debian_sshd(&s, &drop_in);
    let (r, f) = doctor_findings(&s, &sshd, &debian_pam_dir());
    assert!(with_level(&f, "error").is_empty(), "{r}");
    assert!(
        with_level(&f, "info")
            .iter()
            .any(|x| message(x).starts_with("root is exempt") && message(x).contains("PAM_IGNORE")),
        "{r}"
    );
}

#[test]
fn doctor_warns_about_a_short_radius_secret() {
    let run = |secret: &str| {
        let s = Scratch::new();
        s.phones(&[("alice", ALICE_PHONE)]);
        let file = s.write("vpn.secret", secret, 0o600);
        s.config(&format!(
            "[radius]\nlisten = [\"127.0.0.1:1812\"]\nprimary = {{ kind = \"pam\" }}\n\
             [[radius.client]]\nname = \"vpn\"\naddress = \"127.0.0.1\"\nsecret_file = \"{}\"\n",
            file.display()
        ));
        let sshd = debian_sshd(&s, DROP_IN);
        let (r, f) = doctor_findings(&s, &sshd, &debian_pam_dir());
        let radius: Vec<Value> = f.into_iter().filter(|x| x["area"] == "radius").collect();
        assert_eq!(radius.len(), 1, "{r}");
        assert!(
            !r.stdout.contains(secret.trim()),
            "the secret was printed: {r}"
        );
        radius[0].clone()
    };
    let short = run("abcde\n");
    assert_eq!(short["level"], "warning", "{short}");
    assert!(message(&short).contains("only 5 bytes"), "{short}");
    let fix = short["fix"].as_str().unwrap_or_default();
    assert!(fix.contains("head -c 24 /dev/urandom | base64 >"), "{fix}");
    let fine = run("0123456789abcdef\n");
    assert_eq!(fine["level"], "ok", "{fine}");
}

#[test]
fn doctor_checks_the_admin_running_it() {
    let s = scratch("");
    smsotp(&s, &["user", "set-phone", "root", "+12015550111"]);
    smsotp(&s, &["backup-codes", "generate", "root"]);
    let sshd = debian_sshd(&s, DROP_IN);
    let out = Command::new(cli_path())
        .arg("--config")
        .arg(s.path("smsotp.toml"))
        .args(["--json", "doctor", "--no-network", "--sshd-config"])
        .arg(&sshd)
        .arg("--pam-dir")
        .arg(debian_pam_dir())
        .env("SUDO_USER", "bob")
        .output()
        .expect("run smsotp");
    let j: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let f = j["findings"].as_array().unwrap();
    let bob = f
        .iter()
        .find(|x| message(x).starts_with("bob "))
        .unwrap_or_else(|| panic!("bob not checked: {j}"));
    assert_eq!(bob["level"], "warning", "{bob}");
    assert!(message(bob).contains("LOCKED OUT"), "{bob}");
    let fix = bob["fix"].as_str().unwrap_or_default();
    for needle in [
        "smsotp user set-phone bob +NUMBER",
        "smsotp backup-codes generate bob",
        "policy.exempt_users",
    ] {
        assert!(fix.contains(needle), "{needle} missing from {fix}");
    }
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

#[test]
fn check_config_and_doctor_show_the_loader_warnings() {
    let s = Scratch::new();
    s.phones(&[("alice", ALICE_PHONE)]);
    let text = format!(
        "{}[[provider]]\nkind = \"smpp\"\nname = \"smsc\"\nhost = \"smsc.example.net\"\n\
         system_id = \"acme\"\n",
        s.base_tables(true, false)
    );
    s.write("smsotp.toml", &text, 0o600);
    let r = smsotp(&s, &["check-config"]);
    assert_eq!(r.code, 0, "a warning alone is no failure: {r}");
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("warning: ") && l.contains("password_file")),
        "{r}"
    );
    let j = smsotp(&s, &["--json", "check-config"]).json();
    assert_eq!(j["warnings"].as_array().map(Vec::len), Some(1), "{j}");
    let r = smsotp(
        &s,
        &[
            "--json",
            "doctor",
            "--no-network",
            "--pam-dir",
            s.path("no-pam.d").to_str().unwrap(),
        ],
    );
    let findings = r.json()["findings"].as_array().cloned().unwrap_or_default();
    assert!(
        findings.iter().any(|f| f["area"] == "config"
            && f["level"] == "warning"
            && message(f).contains("password_file")),
        "{r}"
    );
}

/// check-config prints the SMS with the longest values, its encoding and
/// count, and warns (naming otp.message) on a character that forces UCS-2
/// and on a text that needs more than one SMS; the default text fits one.
#[test]
fn check_config_counts_the_sms_and_warns_on_ucs2_and_length() {
    let s = scratch("");
    let r = smsotp(&s, &["check-config"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("en (sms): GSM-7, ") && l.ends_with(", 1 SMS")),
        "{r}"
    );
    assert!(!r.stdout.contains("warning: "), "{r}");
    let j = smsotp(&s, &["--json", "check-config"]).json();
    let en = |j: &serde_json::Value| {
        j["sms"]["templates"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["language"] == "en"))
            .cloned()
            .unwrap_or_default()
    };
    let t = en(&j);
    assert_eq!(
        (t["encoding"].as_str(), t["segments"].as_u64()),
        (Some("GSM-7"), Some(1)),
        "{j}"
    );
    assert_eq!(
        j["sms"]["values"]["user"]["value"].as_str().map(str::len),
        Some(32)
    );

    // A typographic dash: UCS-2, named with its position and a stand-in.
    let s = scratch("[otp]\nmessage = \"{code} – your code for {host}\"\n");
    let r = smsotp(&s, &["check-config"]);
    assert_eq!(r.code, 0, "a warning alone is no failure: {r}");
    let w: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(w.len(), 1, "{r}");
    assert!(
        w[0].contains("otp.message: the de, en, es, fr, it, nl, pt SMS goes as UCS-2 because of '–' (U+2013), character 8")
            && w[0].contains("write \"-\" instead"),
        "{r}"
    );
    let j = smsotp(&s, &["--json", "check-config"]).json();
    assert_eq!(en(&j)["encoding"], "UCS-2", "{j}");
    assert_eq!(en(&j)["first_non_gsm"]["position"], 8, "{j}");

    // A long GSM-7 text: more than one SMS.
    let long = "Please do not share this code with anyone. ".repeat(4);
    let s = scratch(&format!("[otp]\nmessage = \"{{code}} {long}\"\n"));
    let r = smsotp(&s, &["check-config"]);
    assert!(
        r.stdout
            .contains("en (otp.message): GSM-7, 179 septets, 2 SMS"),
        "{r}"
    );
    assert!(
        r.stdout.lines().any(|l| l.starts_with("warning: ")
            && l.contains("otp.message: the de, en, es, fr, it, nl, pt SMS takes 2 SMS")),
        "{r}"
    );
    let j = smsotp(&s, &["--json", "check-config"]).json();
    assert_eq!(j["warnings"].as_array().map(Vec::len), Some(1), "{j}");
}

/// A config that is a FIFO is refused at once (it used to block in
/// open()); one reached through a symlink whose target's directory others
/// can write is refused naming that directory.
#[test]
fn check_config_refuses_a_fifo_or_an_unsafe_symlink_at_once() {
    let s = scratch("");
    let config = s.path("smsotp.toml");
    let real = s.path("real.toml");
    std::fs::rename(&config, &real).unwrap();
    let c = std::ffi::CString::new(config.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let r = smsotp_e2e::run_tool(&s, &["check-config"], std::time::Duration::from_secs(10));
    assert_eq!(r.code, 78, "{r}");
    assert!(r.took < std::time::Duration::from_secs(5), "{r}");
    assert!(
        r.stderr.contains(&format!(
            "{}: is a FIFO, not a regular file",
            config.display()
        )),
        "{r}"
    );

    // Through a symlink into a directory others can write: refused, and
    // the directory is named.
    use std::os::unix::fs::PermissionsExt;
    std::fs::remove_file(&config).unwrap();
    let open_dir = s.path("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::rename(&real, open_dir.join("smsotp.toml")).unwrap();
    std::os::unix::fs::symlink(open_dir.join("smsotp.toml"), &config).unwrap();
    let r = smsotp(&s, &["check-config"]);
    assert_eq!(r.code, 78, "{r}");
    assert!(
        r.stderr.contains(&format!(
            "{}: is on the path {} resolves to through a symlink",
            open_dir.display(),
            config.display()
        )),
        "{r}"
    );
    assert!(
        r.stderr.contains("writable by group or others (mode 0777)"),
        "{r}"
    );
    assert!(r.stderr.contains("chmod go-w"), "{r}");
}
