//! The Debian packages end to end, on this machine: install the two `.deb`
//! files that `scripts/build-debs.sh` built with `apt-get install`, log in
//! through the installed module with its shipped config, let
//! pam-auth-update enable the shipped profile and check that the stack it
//! writes stops a wrong password before any SMS, start the installed server
//! the way its unit's ExecStartPre/ExecStart say and answer a challenge with
//! radclient, then `apt-get remove` (conffiles stay) and `apt-get purge`
//! (everything goes). A second test runs the README's install steps
//! literally (docs/install.md, which must match the README) and then logs in
//! through the machine's own sshd config and PAM stack on a loopback port:
//! root with its key, a user with password and code; then the README's
//! "Removing" steps.
//!
//! Needs root (CI runs as root on a throwaway Debian 12 machine), the
//! packages in target/debian/ (`scripts/build-debs.sh`; `scripts/test.sh`
//! builds them first) and the Debian packages `pamtester libpam-wrapper
//! libnss-wrapper freeradius-utils`.
//!
//! What it changes on the machine, and how it leaves it: it refuses to run
//! when libpam-smsotp or smsotp-radiusd is installed, or /etc/smsotp,
//! /var/lib/smsotp or the module exist (a hand install would be deleted by
//! the purge); /etc/pam.d/common-* are restored from a copy taken first;
//! the packages are purged at the end, also when a step fails; the sshd
//! drop-in the README writes (/etc/ssh/sshd_config.d/smsotp.conf) must not
//! exist before and is removed after. The first test's users and passwords
//! come from nss_wrapper and pam_matrix, as in the other PAM tests; the
//! README test logs in through the real pam_unix, so it creates one local
//! user with a password (`smsotp-deb-e2e`, refused if it exists) and deletes
//! it again. The two tests take turns. About 15 s each.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use smsotp_e2e::pamenv::PamEnv;
use smsotp_e2e::radiusd::{free_port, radclient, run_bounded};
use smsotp_e2e::sshd::{login_kbd_interactive, CodeAnswer, SystemSshd};
use smsotp_e2e::{workspace_root, Outbox};

const PACKAGES: [&str; 2] = ["libpam-smsotp", "smsotp-radiusd"];
const CONFIG: &str = "/etc/smsotp/smsotp.toml";
const PHONES: &str = "/etc/smsotp/phones.toml";
const SECRETS: &str = "/etc/smsotp/secrets";
const STATE: &str = "/var/lib/smsotp";
const OUTBOX: &str = "/var/lib/smsotp/outbox.jsonl";
/// Beside pam_unix.so, which libpam-modules ships in /lib on Debian 12.
const MODULE: &str = "/lib/x86_64-linux-gnu/security/pam_smsotp.so";
const PROFILE: &str = "/usr/share/pam-configs/smsotp";
const UNIT: &str = "/usr/lib/systemd/system/smsotp-radiusd.service";
const RADIUS_PAM: &str = "/etc/pam.d/smsotp-radius";
const COMMON: [&str; 5] = [
    "/etc/pam.d/common-auth",
    "/etc/pam.d/common-account",
    "/etc/pam.d/common-password",
    "/etc/pam.d/common-session",
    "/etc/pam.d/common-session-noninteractive",
];
const ALICE_PHONE: &str = "+12015550123";
const CODE_SENT: &str = "Code sent to ******0123.";
const APT_LIMIT: Duration = Duration::from_secs(300);
const SMS_WAIT: Duration = Duration::from_secs(10);
const READY: &str = "smsotp-radiusd: ready";
/// The sshd drop-in the README copies from the package's example.
const DROPIN: &str = "/etc/ssh/sshd_config.d/smsotp.conf";
const DROPIN_EXAMPLE: &str = "/usr/share/doc/libpam-smsotp/examples/sshd_config.d-smsotp.conf";
/// The local user the README test creates for a real pam_unix login.
const SSH_USER: &str = "smsotp-deb-e2e";
const SSH_USER_PHONE: &str = "+12015550188";

/// Both tests install and purge the same packages: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `program args` (bounded); panics with its output unless it exits 0.
fn run(program: &str, args: &[&str], limit: Duration) -> String {
    let (ok, out) = try_run(program, args, limit);
    assert!(ok, "`{program} {}` failed:\n{out}", args.join(" "));
    out
}

/// Runs `program args` (bounded); returns (exited 0, stdout+stderr).
fn try_run(program: &str, args: &[&str], limit: Duration) -> (bool, String) {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LANG", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (status, out, timed_out) = run_bounded(cmd, b"", limit);
    assert!(
        !timed_out,
        "`{program} {}` took over {limit:?}:\n{out}",
        args.join(" ")
    );
    (status.success(), out)
}

/// dpkg's status of `pkg`: "install ok installed", "deinstall ok
/// config-files", or "" when dpkg does not know it.
fn dpkg_status(pkg: &str) -> String {
    let (_, out) = try_run(
        "dpkg-query",
        &["-W", "-f=${Status}", pkg],
        Duration::from_secs(30),
    );
    if out.contains("no packages found") || out.contains("not-installed") {
        String::new()
    } else {
        out.trim().to_owned()
    }
}

fn mode(path: &str) -> u32 {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!((m.uid(), m.gid()), (0, 0), "{path} must be root:root");
    m.permissions().mode() & 0o7777
}

fn exists(path: &str) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// The files under /usr/share/doc and the man pages that the shipped
/// config, the man pages and the unit's Documentation= refer to.
fn doc_references(texts: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for text in texts {
        // Paths: /usr/share/doc/… up to a blank, quote or closing bracket
        // (man pages write '-' as "\-").
        let plain = text.replace("\\-", "-");
        for (i, _) in plain.match_indices("/usr/share/doc/") {
            let path: String = plain[i..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !"\"'`)],".contains(*c))
                .collect();
            let path = path.trim_end_matches('.').to_owned();
            if path.rsplit('/').next().is_some_and(|f| f.contains('.')) && !out.contains(&path) {
                out.push(path);
            }
        }
        // man:NAME(SECTION) of the unit.
        for word in plain.split_whitespace() {
            if let Some((name, rest)) = word.strip_prefix("man:").and_then(|w| w.split_once('(')) {
                let section = rest.trim_end_matches(')');
                let path = format!("/usr/share/man/man{section}/{name}.{section}.gz");
                if !out.contains(&path) {
                    out.push(path);
                }
            }
        }
    }
    out
}

fn installed_doc_references() -> Vec<String> {
    let mut texts = vec![
        std::fs::read_to_string(CONFIG).expect("read config"),
        std::fs::read_to_string(UNIT).expect("read unit"),
    ];
    for page in [
        "man5/smsotp.toml.5",
        "man8/smsotp.8",
        "man8/pam_smsotp.8",
        "man8/smsotp-radiusd.8",
    ] {
        let gz = format!("/usr/share/man/{page}.gz");
        let out = Command::new("zcat").arg(&gz).output().expect("zcat");
        assert!(out.status.success(), "{gz} not installed");
        texts.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    doc_references(&texts)
}

/// docs/security.md names the test behind each promise as
/// `path.rs::test_name`: each must exist, so the page cannot promise what
/// no test holds (a renamed or deleted test fails here).
#[test]
fn security_md_names_only_tests_that_exist() {
    let root = workspace_root();
    let page = std::fs::read_to_string(root.join("docs/security.md")).expect("docs/security.md");
    let mut named = 0;
    for item in page.split('`').skip(1).step_by(2) {
        let Some((path, name)) = item.split_once("::") else {
            continue;
        };
        if !path.ends_with(".rs") {
            continue;
        }
        let text = std::fs::read_to_string(root.join(path))
            .unwrap_or_else(|e| panic!("docs/security.md names {path}: {e}"));
        assert!(
            text.contains(&format!("fn {name}(")),
            "docs/security.md names {path}::{name}, which {path} does not have"
        );
        named += 1;
    }
    assert!(named >= 40, "only {named} tests named in docs/security.md");
}

/// Without installing: what the shipped config, the man pages and the unit
/// refer to is what the packages install, the unit's documentation is man
/// pages (no placeholder URL), and the man pages are dated alike.
#[test]
fn shipped_references_are_packaged() {
    let root = workspace_root();
    let read =
        |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let pages = [
        "packaging/man/smsotp.toml.5",
        "packaging/man/smsotp.8",
        "packaging/man/pam_smsotp.8",
        "packaging/man/smsotp-radiusd.8",
    ];
    let mut texts = vec![
        read("config/smsotp.toml"),
        read("packaging/smsotp-radiusd.service"),
    ];
    texts.extend(pages.iter().map(|p| read(p)));
    let assets = format!(
        "{}{}",
        read("pam_smsotp/Cargo.toml"),
        read("radiusd/Cargo.toml")
    );
    let refs = doc_references(&texts);
    for doc in [
        "/usr/share/doc/libpam-smsotp/smpp.md",
        "/usr/share/doc/libpam-smsotp/http-providers.md",
        "/usr/share/doc/libpam-smsotp/ldap.md",
        "/usr/share/doc/libpam-smsotp/redis.md",
        "/usr/share/doc/libpam-smsotp/security.md",
        "/usr/share/man/man5/smsotp.toml.5.gz",
    ] {
        assert!(
            refs.iter().any(|r| r == doc),
            "nothing refers to {doc}: {refs:?}"
        );
    }
    for r in &refs {
        let installed = r.trim_start_matches('/').trim_end_matches(".gz");
        assert!(
            assets.contains(&format!("\"{installed}\"")),
            "{r} is referred to but no [package.metadata.deb] assets entry installs it"
        );
    }
    // The shipped config points to installed files, not to the repository.
    let config = read("config/smsotp.toml");
    assert!(
        !config.contains("docs/"),
        "config/smsotp.toml names a repository path"
    );
    let unit = read("packaging/smsotp-radiusd.service");
    let doc_line = unit
        .lines()
        .find(|l| l.starts_with("Documentation="))
        .expect("Documentation=");
    assert_eq!(
        doc_line,
        "Documentation=man:smsotp-radiusd(8) man:smsotp.toml(5)"
    );
    // One date and this version on every page: .TH NAME SECTION "DATE" "smsotp VERSION" …
    let dated = |p: &str| -> (String, String) {
        let page = read(p);
        let th = page.lines().next().unwrap_or_default();
        let fields: Vec<&str> = th.split('"').collect();
        assert!(th.starts_with(".TH ") && fields.len() >= 4, "{p}: {th}");
        (fields[1].to_owned(), fields[3].to_owned())
    };
    let first = dated(pages[0]);
    assert_eq!(
        first.1,
        format!("smsotp {}", env!("CARGO_PKG_VERSION")),
        "{}",
        pages[0]
    );
    assert!(
        first.0.len() == 10 && first.0.starts_with("20"),
        "{}: {}",
        pages[0],
        first.0
    );
    for p in &pages[1..] {
        assert_eq!(
            dated(p),
            first,
            "{p} is dated or versioned unlike {}",
            pages[0]
        );
    }
}

/// The two .deb files of this version, from packaging/debian/changelog's
/// revision (scripts/build-debs.sh checks that its version is Cargo's).
fn debs() -> Vec<PathBuf> {
    let changelog = std::fs::read_to_string(workspace_root().join("packaging/debian/changelog"))
        .expect("read packaging/debian/changelog");
    let top = changelog
        .lines()
        .next()
        .and_then(|l| l.split_once('(')?.1.split_once(')').map(|(v, _)| v))
        .expect("changelog starts with `smsotp (VERSION-REV) ...`");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        top.starts_with(&format!("{version}-")),
        "packaging/debian/changelog is at {top}, Cargo at {version}"
    );
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("debian");
    PACKAGES
        .iter()
        .map(|p| {
            let deb = dir.join(format!("{p}_{top}_amd64.deb"));
            assert!(
                deb.exists(),
                "{} not found: run scripts/build-debs.sh first (scripts/test.sh does)",
                deb.display()
            );
            deb
        })
        .collect()
}

/// Undoes what the test did to the machine, whatever step it stopped at:
/// stops the server, restores /etc/pam.d/common-*, purges the packages.
struct Machine {
    common: Vec<(&'static str, Option<Vec<u8>>)>,
    server: Option<Child>,
    /// The local user this test created, deleted on drop.
    user: Option<&'static str>,
}

impl Machine {
    /// Checks that the machine has nothing of ours and saves common-*.
    fn take() -> Machine {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the Debian package test installs packages: run it as root (scripts/test.sh)"
        );
        for p in PACKAGES {
            assert_eq!(
                dpkg_status(p),
                "",
                "{p} is known to dpkg already; this test would purge it. Purge it first (apt-get purge {p}) or use a throwaway machine"
            );
        }
        for p in ["/etc/smsotp", STATE, MODULE, DROPIN] {
            assert!(
                !exists(p),
                "{p} exists (a hand install?); the test's purge would delete it. Move it away or use a throwaway machine"
            );
        }
        Machine {
            common: COMMON.iter().map(|p| (*p, std::fs::read(p).ok())).collect(),
            server: None,
            user: None,
        }
    }

    fn restore_common(&self) {
        for (p, saved) in &self.common {
            match saved {
                Some(bytes) if std::fs::read(p).ok().as_ref() != Some(bytes) => {
                    std::fs::write(p, bytes).unwrap_or_else(|e| eprintln!("restore {p}: {e}"));
                }
                None if exists(p) => {
                    let _ = std::fs::remove_file(p);
                }
                _ => {}
            }
        }
    }

    fn stop_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            // SAFETY: kill with a pid we own and a valid signal.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.stop_server();
        // Purge first (its prerm takes the profile out of common-*), then put
        // back the exact files saved at the start.
        if PACKAGES.iter().any(|p| !dpkg_status(p).is_empty()) {
            let mut args = vec!["purge", "-y", "-q"];
            args.extend(PACKAGES);
            let (ok, out) = try_run("apt-get", &args, APT_LIMIT);
            if !ok {
                eprintln!("cleanup: apt-get purge failed:\n{out}");
            }
        }
        self.restore_common();
        // Not there before the test (take() checked), so ours.
        if exists(DROPIN) {
            let _ = std::fs::remove_file(DROPIN);
        }
        if let Some(user) = self.user.take() {
            let (ok, out) = try_run("userdel", &[user], Duration::from_secs(30));
            if !ok {
                eprintln!("cleanup: userdel {user} failed:\n{out}");
            }
        }
    }
}

/// The `auth` lines of /etc/pam.d/common-auth, comments dropped.
fn common_auth_lines() -> Vec<String> {
    std::fs::read_to_string(COMMON[0])
        .expect("read common-auth")
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("auth"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// Index of the first line naming `module`.
fn line_of(lines: &[String], module: &str) -> Option<usize> {
    lines
        .iter()
        .position(|l| l.split_whitespace().any(|w| w == module))
}

/// A service file with common-auth's auth lines as pam-auth-update wrote
/// them, pam_unix swapped for pam_matrix (same control field, so the same
/// jumps), everything else as is: module names without a path, so libpam
/// finds pam_smsotp.so in its own directory, and the default config.
fn service_from_common_auth(env: &mut PamEnv, name: &str) -> String {
    let matrix = format!(
        "{} passdb={}",
        env.tools.pam_matrix.display(),
        env.scratch.path("passdb").display()
    );
    let lines: Vec<String> = common_auth_lines()
        .into_iter()
        .map(|l| {
            let Some(at) = l.find("pam_unix.so") else {
                return l;
            };
            // Drop pam_unix's own arguments (nullok, try_first_pass).
            format!("{}{matrix}", &l[..at])
        })
        .collect();
    env.service(name, &lines)
}

/// ExecStartPre= and ExecStart= of the installed unit, split into words.
fn unit_commands() -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(UNIT).unwrap_or_else(|e| panic!("{UNIT}: {e}"));
    let get = |key: &str| -> Vec<String> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("{UNIT} has no {key}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    (get("ExecStartPre="), get("ExecStart="))
}

#[test]
fn debs_install_log_in_serve_radius_remove_and_purge() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let debs = debs();
    let mut machine = Machine::take();
    let t0 = Instant::now();

    // ---------------------------------------------------------------- install
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    let deb_args: Vec<String> = debs.iter().map(|d| d.display().to_string()).collect();
    args.extend(deb_args.iter().map(String::as_str));
    run("apt-get", &args, APT_LIMIT);
    for p in PACKAGES {
        assert_eq!(dpkg_status(p), "install ok installed", "{p}");
    }
    assert!(exists(MODULE), "{MODULE} not installed");
    assert!(exists("/usr/sbin/smsotp") && exists("/usr/sbin/smsotp-radiusd"));
    assert!(!exists("/usr/bin/radiusd") && !exists("/usr/sbin/radiusd"));
    assert_eq!(mode(CONFIG), 0o640, "{CONFIG}");
    assert_eq!(mode(STATE), 0o700, "{STATE}");
    assert_eq!(mode(SECRETS), 0o700, "{SECRETS}");
    let conffiles = run(
        "dpkg-query",
        &["-W", "-f=${Conffiles}", "libpam-smsotp"],
        Duration::from_secs(30),
    );
    assert!(conffiles.contains(CONFIG), "conffiles: {conffiles}");
    let profile = std::fs::read_to_string(PROFILE).expect("pam-auth-update profile");
    assert!(profile.contains("Default: no"), "{profile}");
    // The documentation the config, the man pages and the unit point to is
    // on the machine.
    for doc in installed_doc_references() {
        assert!(exists(&doc), "{doc} is referred to but not installed");
    }
    // Installing changes no PAM stack, and neither enables nor starts the
    // server (its config has no [radius] table yet).
    assert_eq!(line_of(&common_auth_lines(), "pam_smsotp.so"), None);
    assert!(!exists(
        "/etc/systemd/system/multi-user.target.wants/smsotp-radiusd.service"
    ));
    // The admin tool accepts the shipped config.
    run(
        "/usr/sbin/smsotp",
        &["check-config", "--config", CONFIG],
        Duration::from_secs(30),
    );
    let shipped_config = std::fs::read(CONFIG).expect("read config");
    // The sshd drop-in as the README copies it: remove says it is still in
    // place, purge deletes it (its first line is the shipped one).
    std::fs::copy(DROPIN_EXAMPLE, DROPIN).expect("copy the sshd drop-in example");

    // ------------------------------------- login with the installed module
    // The shipped config as is: outbox provider in /var/lib/smsotp, phones
    // from /etc/smsotp/phones.toml. The admin's only step: a phone number.
    std::fs::write(PHONES, format!("alice = \"{ALICE_PHONE}\"\n")).expect("write phones");
    std::fs::set_permissions(PHONES, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let outbox = Outbox {
        path: PathBuf::from(OUTBOX),
    };
    let mut env = PamEnv::new();
    let matrix = env.matrix_line();
    let direct = env.service(
        "deb-direct",
        &[matrix, "auth required pam_smsotp.so".into()],
    );
    let seen = outbox.count();
    let mut login = env.login(&direct, "alice");
    login
        .password()
        .expect_text(CODE_SENT)
        .expect_prompt("SMS code");
    login.answer_code_from_outbox(&outbox, seen);
    login.finish().assert_success();
    assert_eq!(mode(OUTBOX) & 0o077, 0, "{OUTBOX} must be root-only");

    // ------------------------------------------ the pam-auth-update profile
    run(
        "pam-auth-update",
        &["--enable", "smsotp"],
        Duration::from_secs(60),
    );
    let lines = common_auth_lines();
    eprintln!(
        "common-auth with the profile enabled:\n{}",
        lines.join("\n")
    );
    let pos = |m: &str| {
        line_of(&lines, m).unwrap_or_else(|| panic!("{m} not in common-auth: {lines:#?}"))
    };
    let (unix, deny, permit, smsotp) = (
        pos("pam_unix.so"),
        pos("pam_deny.so"),
        pos("pam_permit.so"),
        pos("pam_smsotp.so"),
    );
    assert!(
        unix < deny && deny < permit && permit < smsotp,
        "pam_smsotp must come after the password and the pam_deny it skips: {lines:#?}"
    );
    assert_eq!(lines[smsotp], "auth required pam_smsotp.so", "{lines:#?}");
    let service = service_from_common_auth(&mut env, "deb-common-auth");
    // A wrong password ends at pam_deny: no SMS.
    let seen = outbox.count();
    let mut login = env.login(&service, "alice");
    login.expect_prompt("Password").answer("not-the-password");
    login.finish().assert_failure().assert_not_saw("SMS code");
    assert_eq!(outbox.count(), seen, "a wrong password sent an SMS");
    // The right one goes on to the code.
    let mut login = env.login(&service, "alice");
    login
        .password()
        .expect_text(CODE_SENT)
        .expect_prompt("SMS code");
    login.answer_code_from_outbox(&outbox, seen);
    login.finish().assert_success();

    // ------------------------------- the installed server, as its unit runs it
    let port = free_port(false);
    let secret = "deb-e2e-secret-5c1f";
    let secret_file = format!("{SECRETS}/deb-e2e");
    std::fs::write(&secret_file, secret).expect("write secret");
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600))
        .expect("chmod secret");
    let mut radius_config = shipped_config.clone();
    radius_config.extend_from_slice(
        format!(
            "\n[radius]\nlisten = [\"127.0.0.1:{port}\"]\nprimary = {{ kind = \"none\" }}\n\n\
             [[radius.client]]\nname = \"deb-e2e\"\naddress = \"127.0.0.1\"\nsecret_file = \"{secret_file}\"\n"
        )
        .as_bytes(),
    );
    std::fs::write(CONFIG, &radius_config).expect("write radius config");
    let (pre, start) = unit_commands();
    assert_eq!(
        start,
        ["/usr/sbin/smsotp-radiusd", "--config", CONFIG],
        "ExecStart"
    );
    let pre_args: Vec<&str> = pre[1..].iter().map(String::as_str).collect();
    run(&pre[0], &pre_args, Duration::from_secs(30));
    let mut child = Command::new(&start[0])
        .args(&start[1..])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start smsotp-radiusd");
    let stderr = child.stderr.take().expect("stderr");
    machine.server = Some(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut log = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains(READY) {
                    break;
                }
            }
            Err(_) => panic!("smsotp-radiusd not ready in 10 s:\n{log}"),
        }
    }
    let server = format!("127.0.0.1:{port}");
    let rc_secret = std::env::temp_dir().join(format!("smsotp-deb-e2e-{}", std::process::id()));
    std::fs::write(&rc_secret, secret).expect("write radclient secret");
    let seen = outbox.count();
    let first = radclient(
        &server,
        "auth",
        &rc_secret,
        "User-Name = \"alice\"\nUser-Password = \"vpn-pw\"\nMessage-Authenticator = 0x00\n",
        Duration::from_secs(5),
    );
    assert_eq!(
        first.received.as_deref(),
        Some("Access-Challenge"),
        "{}\n--- server ---\n{log}",
        first.output
    );
    assert!(
        first.output.contains("******0123"),
        "no masked number in the Reply-Message:\n{}",
        first.output
    );
    let state = first.state();
    let code = outbox.wait_beyond(seen, SMS_WAIT).code();
    let second = radclient(
        &server,
        "auth",
        &rc_secret,
        &format!(
            "User-Name = \"alice\"\nUser-Password = \"{code}\"\nMessage-Authenticator = 0x00\nState = 0x{}\n",
            smsotp_e2e::radiusd::hex(&state)
        ),
        Duration::from_secs(5),
    );
    let _ = std::fs::remove_file(&rc_secret);
    assert_eq!(
        second.received.as_deref(),
        Some("Access-Accept"),
        "{}\n--- server ---\n{log}",
        second.output
    );
    machine.stop_server();
    // Back to the shipped bytes and mode, so dpkg sees an unmodified conffile.
    std::fs::write(CONFIG, &shipped_config).expect("restore config");
    std::fs::set_permissions(CONFIG, std::fs::Permissions::from_mode(0o640)).expect("chmod");

    // ------------------------------------------------------------- remove
    // With the profile still enabled: prerm must take pam_smsotp out of
    // common-auth before the module goes, or every login would fail.
    let mut args = vec!["remove", "-y", "-q"];
    args.extend(PACKAGES);
    let removed = run("apt-get", &args, APT_LIMIT);
    for p in PACKAGES {
        assert_eq!(dpkg_status(p), "deinstall ok config-files", "{p}");
    }
    assert!(
        removed.contains("smsotp.conf is still in place") && exists(DROPIN),
        "remove must keep the sshd drop-in and say so:\n{removed}"
    );
    assert_eq!(
        line_of(&common_auth_lines(), "pam_smsotp.so"),
        None,
        "common-auth still names the removed module"
    );
    assert!(!exists(MODULE) && !exists(PROFILE) && !exists("/usr/sbin/smsotp"));
    assert_eq!(
        std::fs::read(CONFIG).ok().as_deref(),
        Some(shipped_config.as_slice()),
        "remove must keep the conffile"
    );
    assert!(exists(RADIUS_PAM), "remove must keep {RADIUS_PAM}");
    assert!(exists(PHONES) && exists(&secret_file) && exists(STATE));

    // -------------------------------------------------------------- purge
    let mut args = vec!["purge", "-y", "-q"];
    args.extend(PACKAGES);
    let purged = run("apt-get", &args, APT_LIMIT);
    for p in PACKAGES {
        assert_eq!(dpkg_status(p), "", "{p} still known to dpkg after purge");
    }
    assert!(
        purged.contains(&format!("deleted {DROPIN}")),
        "purge must say it deleted the sshd drop-in:\n{purged}"
    );
    for p in ["/etc/smsotp", STATE, RADIUS_PAM, DROPIN] {
        assert!(!exists(p), "{p} survived the purge");
    }
    drop(machine);
    eprintln!("debian package test: {:?}", t0.elapsed());
}

/// The commands of the first ```sh block after the line `heading` in
/// `text`: comments stay (bash drops them), lines ending in `\` are joined.
fn sh_block(text: &str, heading: &str) -> Vec<String> {
    let after = format!("\n{text}");
    let after = after
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no heading {heading:?}"))
        .1;
    let body = after
        .split_once("```sh\n")
        .and_then(|(_, b)| b.split_once("\n```"))
        .unwrap_or_else(|| panic!("no ```sh block after {heading:?}"))
        .0;
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in body.lines() {
        match line.strip_suffix('\\') {
            Some(head) => cur.push_str(head),
            None => {
                cur.push_str(line);
                if !cur.trim().is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                cur.clear();
            }
        }
    }
    out
}

/// Runs one README line with bash, from the repository root, the way an
/// admin pastes it: `editor` changes nothing (the shipped config stays) and
/// `systemctl` does nothing (no init here; the test starts its own sshd
/// from the same files afterwards). Returns (exit code, output).
fn run_readme_line(line: &str) -> (i32, String) {
    let line = match std::env::var("CARGO_TARGET_DIR") {
        Ok(dir) => line.replace("./target/", &format!("{dir}/")),
        Err(_) => line.to_owned(),
    };
    let script = format!(
        "set -e -o pipefail\neditor() {{ :; }}\nsystemctl() {{ echo \"(test: systemctl $* not run)\"; }}\n{line}\n"
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script])
        .current_dir(workspace_root())
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LANG", "C")
        .env_remove("SUDO_USER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // apt asks before it removes anything; the admin answers yes.
    let (status, out, timed_out) = run_bounded(cmd, b"y\n", APT_LIMIT);
    assert!(
        !timed_out,
        "README line took over {APT_LIMIT:?}: {line}\n{out}"
    );
    (status.code().unwrap_or(-1), out)
}

/// Runs every line of a README block; `smsotp doctor` may exit 1 (it does
/// for warnings) but must report no error. Returns doctor's last output.
fn run_readme_block(lines: &[String]) -> String {
    let mut doctor = String::new();
    for line in lines {
        let (code, out) = run_readme_line(line);
        eprintln!("$ {line}\n{out}");
        if line.trim_start().starts_with("smsotp doctor") {
            assert!(code == 0 || code == 1, "`{line}` exited {code}:\n{out}");
            assert!(
                out.contains("\n0 error(s)"),
                "doctor found errors after the README's steps:\n{out}"
            );
            doctor = out;
        } else {
            assert_eq!(code, 0, "README line failed: `{line}`\n{out}");
        }
    }
    doctor
}

/// Generates an ed25519 key pair at `path` (and `path.pub`).
fn keygen(path: &std::path::Path) {
    let p = path.display().to_string();
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "smsotp-deb-e2e",
            "-f",
            &p,
        ],
        Duration::from_secs(30),
    );
}

#[test]
fn debs_readme_install_steps_keep_root_key_login_and_ask_users_for_a_code() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let install =
        std::fs::read_to_string(workspace_root().join("docs/install.md")).expect("docs/install.md");
    assert!(
        readme.contains(&install),
        "README.md's Install section differs from docs/install.md (the copy the package ships): keep them the same"
    );
    let steps = sh_block(&install, "## Install (Debian 12 packages)");
    let removing = sh_block(&install, "### Removing");
    assert!(steps
        .iter()
        .any(|l| l.contains("pam-auth-update --enable smsotp")));
    debs(); // built, with the right version
    let mut machine = Machine::take();
    let (exists_already, _) = try_run("getent", &["passwd", SSH_USER], Duration::from_secs(10));
    assert!(
        !exists_already,
        "user {SSH_USER} exists; this test creates and deletes it. Delete it first"
    );
    std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");

    // ------------------------------------------------ the README, literally
    let doctor = run_readme_block(&steps);
    assert!(
        doctor.contains("root") && !doctor.contains("LOCKED OUT"),
        "doctor after the README's steps:\n{doctor}"
    );
    assert_eq!(
        std::fs::read(DROPIN).ok(),
        std::fs::read(DROPIN_EXAMPLE).ok(),
        "the README's drop-in is the shipped example"
    );
    assert!(line_of(&common_auth_lines(), "pam_smsotp.so").is_some());

    // A local user with a real password (pam_unix) and a number.
    run(
        "useradd",
        &["-M", "-s", "/bin/sh", "-c", "smsotp package test", SSH_USER],
        Duration::from_secs(30),
    );
    machine.user = Some(SSH_USER);
    let password = "Deb-e2e-password-7";
    let mut chpasswd = Command::new("chpasswd");
    chpasswd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (status, out, _) = run_bounded(
        chpasswd,
        format!("{SSH_USER}:{password}\n").as_bytes(),
        Duration::from_secs(30),
    );
    assert!(status.success(), "chpasswd: {out}");
    let mut phones = std::fs::read_to_string(PHONES).expect("phones.toml");
    phones.push_str(&format!("\"{SSH_USER}\" = \"{SSH_USER_PHONE}\"\n"));
    std::fs::write(PHONES, phones).expect("write phones.toml");

    let dir = tempfile::tempdir().expect("scratch dir");
    let root_key = dir.path().join("root_key");
    let user_key = dir.path().join("user_key");
    keygen(&root_key);
    keygen(&user_key);
    std::fs::copy(root_key.with_extension("pub"), dir.path().join("root.keys")).expect("keys");
    std::fs::copy(
        user_key.with_extension("pub"),
        dir.path().join(format!("{SSH_USER}.keys")),
    )
    .expect("keys");
    let outbox = PathBuf::from(OUTBOX);

    let sshd = SystemSshd::start(dir.path());
    // root: its key alone, as before the install.
    let (ok, out) = sshd.key_login("root", &root_key);
    assert!(ok, "root's key login broke:\n{out}\n{}", sshd.log());
    // A user: password and code through /etc/pam.d/sshd and common-auth.
    let login = login_kbd_interactive(
        sshd.port,
        SSH_USER,
        password,
        Some(&outbox),
        CodeAnswer::Right,
    );
    assert!(
        login.succeeded() && login.prompts().iter().any(|p| p.contains("SMS code")),
        "password and code login failed:\n{}\n{}",
        login.transcript(),
        sshd.log()
    );
    let login = login_kbd_interactive(
        sshd.port,
        SSH_USER,
        password,
        Some(&outbox),
        CodeAnswer::Wrong,
    );
    assert!(
        login.refused(),
        "a wrong code logged in:\n{}",
        login.transcript()
    );
    // The user's key alone still logs in (the default keeps key users in).
    let (ok, out) = sshd.key_login(SSH_USER, &user_key);
    assert!(ok, "a user's key login broke:\n{out}");
    drop(sshd);

    // ---- the stricter line the drop-in documents: key, then password and code
    let example = std::fs::read_to_string(DROPIN_EXAMPLE).expect("drop-in example");
    let strict_line = "AuthenticationMethods publickey,keyboard-interactive keyboard-interactive";
    assert!(
        example.contains(&format!("#   {strict_line}\n")),
        "{example}"
    );
    let strict = example.replace(
        "\nAuthenticationMethods publickey keyboard-interactive\n",
        &format!("\n{strict_line}\n"),
    );
    assert_ne!(
        strict, example,
        "the drop-in's AuthenticationMethods line moved"
    );
    std::fs::write(DROPIN, strict).expect("write the stricter drop-in");
    let sshd = SystemSshd::start(dir.path());
    let (ok, out) = sshd.key_login(SSH_USER, &user_key);
    assert!(!ok, "with the stricter line a key alone logged in:\n{out}");
    let (ok, out) = sshd.key_login("root", &root_key);
    assert!(
        ok,
        "with the stricter line root's key login broke:\n{out}\n{}",
        sshd.log()
    );
    drop(sshd);

    // ---------- what the README's earlier drop-in did, and doctor seeing it
    std::fs::write(
        DROPIN,
        "KbdInteractiveAuthentication yes\nAuthenticationMethods keyboard-interactive\n",
    )
    .expect("write the old drop-in");
    let sshd = SystemSshd::start(dir.path());
    let (ok, out) = sshd.key_login("root", &root_key);
    assert!(
        !ok,
        "root logged in with the old drop-in (the test cannot tell):\n{out}"
    );
    drop(sshd);
    let (code, out) = run_readme_line("smsotp doctor");
    assert_eq!(code, 1, "{out}");
    assert!(
        !out.contains("\n0 error(s)") && out.contains("ERROR") && out.contains("Match User root"),
        "doctor must report root's SSH lock-out with the Match block as fix:\n{out}"
    );
    std::fs::copy(DROPIN_EXAMPLE, DROPIN).expect("put the README's drop-in back");

    // ---------------------------------------------------- README "Removing"
    run_readme_block(&removing);
    for p in PACKAGES {
        assert_eq!(
            dpkg_status(p),
            "",
            "{p} still known to dpkg after the README's removal"
        );
    }
    for p in ["/etc/smsotp", STATE, DROPIN, MODULE] {
        assert!(!exists(p), "{p} survived the README's removal steps");
    }
    assert_eq!(line_of(&common_auth_lines(), "pam_smsotp.so"), None);
    // Afterwards root's key still works, on Debian's own settings.
    let sshd = SystemSshd::start(dir.path());
    let (ok, out) = sshd.key_login("root", &root_key);
    assert!(
        ok,
        "root's key login broke after removal:\n{out}\n{}",
        sshd.log()
    );
    drop(sshd);
    drop(machine);
}
