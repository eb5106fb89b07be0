//! `smsotp doctor` on `[[directory]] kind = "ldap"` (issue #18 point 6):
//! the built binary, as root, against a scratch config pointing at a
//! private OpenLDAP slapd ([`smsotp_e2e::slapd`]), a closed port, a black
//! hole or a name that does not resolve. Each case checks the step that
//! doctor names and its cause; `user show` names the LDAP source.
//!
//! Needs `cargo build --workspace` (or `SMSOTP_CLI=path`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use smsotp_e2e::findings::{count, find, show};
use std::time::Duration;

use serde_json::Value;
use smsotp_e2e::slapd::{Slapd, ALICE_MOBILE, BOB_VERIFIED};
use smsotp_e2e::{closed_port, BlackHole, Scratch};

use smsotp_e2e::ToolRun as Run;

fn smsotp(s: &Scratch, args: &[&str]) -> Run {
    smsotp_e2e::run_tool(s, args, Duration::from_secs(60))
}

/// A scratch config whose one directory is `ldap` (the body of a
/// `[[directory]]` table), with a small sound host for doctor's other
/// checks, so only the LDAP findings matter.
fn scratch(ldap: &str) -> Scratch {
    let s = Scratch::new();
    let text = format!(
        "[[directory]]\nkind = \"ldap\"\n{ldap}\n{}",
        s.base_tables(false, true)
    );
    s.write("smsotp.toml", &text, 0o600);
    s.write("sshd_config", "UsePAM yes\n", 0o644);
    std::fs::create_dir(s.path("pam.d")).unwrap();
    s
}

/// The usual directory on `url`: the service account, the test CA (or
/// `ca`), short timeouts.
fn table(s: &Slapd, url: &str, ca: &std::path::Path, password_file: &std::path::Path) -> String {
    format!(
        "urls = [\"{url}\"]\nca_file = \"{}\"\nbind_dn = \"{}\"\nbind_password_file = \"{}\"\n\
         base = \"{}\"\nconnect_timeout = \"1s\"\ntimeout = \"1s\"\n",
        ca.display(),
        s.service_dn(),
        password_file.display(),
        s.people(),
    )
}

/// `smsotp --json doctor [--user NAME]`: the run and its LDAP findings.
fn doctor(s: &Scratch, user: Option<&str>) -> (Run, Vec<Value>) {
    let sshd = s.path("sshd_config");
    let pam = s.path("pam.d");
    let mut args = vec![
        "--json",
        "doctor",
        "--sshd-config",
        sshd.to_str().unwrap(),
        "--pam-dir",
        pam.to_str().unwrap(),
    ];
    if let Some(u) = user {
        args.extend(["--user", u]);
    }
    let r = smsotp(s, &args);
    let j: Value =
        serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{r}"));
    let ldap: Vec<Value> = j["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f["area"] == "ldap")
        .collect();
    assert!(!ldap.is_empty(), "no ldap finding:\n{r}");
    assert!(
        !r.stdout.contains("panicked") && !r.stderr.contains("panicked"),
        "{r}"
    );
    (r, ldap)
}

#[test]
fn doctor_passes_every_step_for_alice_over_ldaps_and_starttls() {
    let slapd = Slapd::start();
    for (url, extra) in [
        (slapd.url_ldaps(), ""),
        (slapd.url_plain(), "starttls = true\n"),
    ] {
        let s = scratch(&format!(
            "{}{extra}",
            table(
                &slapd,
                &url,
                &slapd.ca_file(),
                &slapd.service_password_file()
            )
        ));
        let (r, f) = doctor(&s, Some("alice"));
        let tls = if extra.is_empty() { "TLS" } else { "StartTLS" };
        find(&f, "ok", &[&url, "DNS: 127.0.0.1 is 127.0.0.1:"]);
        find(&f, "ok", &[&url, "TCP: connected"]);
        find(
            &f,
            "ok",
            &[&url, &format!("{tls}: the certificate is trusted")],
        );
        find(&f, "ok", &[&url, "bind: bound as", slapd.service_dn()]);
        find(&f, "ok", &["alice: search: entry", &slapd.user_dn("alice")]);
        find(
            &f,
            "ok",
            &["alice: mobile holds ******5678, a valid number"],
        );
        assert_eq!(count(&f, "warning") + count(&f, "error"), 0, "{}", show(&f));
        // Masked, always.
        assert!(!r.stdout.contains(ALICE_MOBILE), "{r}");
        assert!(!r.stdout.contains(&ALICE_MOBILE[1..]), "{r}");

        // Without --user: connect and bind, and the hint.
        let (_, f) = doctor(&s, None);
        find(&f, "ok", &["bind: bound as"]);
        find(&f, "info", &["connect and bind work", "--user NAME"]);
        assert!(
            !f.iter()
                .any(|x| x["message"].as_str().unwrap().contains("search")),
            "{}",
            show(&f)
        );
    }
}

#[test]
fn doctor_names_a_missing_entry_and_a_missing_phone_attribute() {
    let slapd = Slapd::start();
    let s = scratch(&table(
        &slapd,
        &slapd.url_ldaps(),
        &slapd.ca_file(),
        &slapd.service_password_file(),
    ));
    let (r, f) = doctor(&s, Some("nobody"));
    assert_eq!(r.code, 1, "{r}");
    let e = find(
        &f,
        "error",
        &["nobody: search: no entry", "(uid=nobody)", slapd.people()],
    );
    assert!(e["fix"].as_str().unwrap().contains("filter"), "{e}");

    let (r, f) = doctor(&s, Some("carol"));
    assert_eq!(r.code, 1, "{r}");
    find(&f, "ok", &["carol: search: entry", &slapd.user_dn("carol")]);
    let e = find(&f, "error", &["carol: no phone attribute", "mobile"]);
    assert!(
        e["fix"].as_str().unwrap().contains("phone_attributes"),
        "{e}"
    );

    // Gluu's attribute after mobile: bob's number is found in it.
    let s = scratch(&format!(
        "{}phone_attributes = [\"mobile\", \"phoneNumberVerified\"]\n",
        table(
            &slapd,
            &slapd.url_ldaps(),
            &slapd.ca_file(),
            &slapd.service_password_file()
        )
    ));
    let (r, f) = doctor(&s, Some("bob"));
    find(&f, "ok", &["bob: phoneNumberVerified holds ******4321"]);
    assert!(!r.stdout.contains(BOB_VERIFIED), "{r}");
}

#[test]
fn doctor_names_a_refused_service_bind_with_the_ldap_code() {
    let slapd = Slapd::start();
    let s = Scratch::new();
    let wrong = s.write("wrong.password", "not-the-password\n", 0o600);
    let text = format!(
        "[[directory]]\nkind = \"ldap\"\n{}\n{}",
        table(&slapd, &slapd.url_ldaps(), &slapd.ca_file(), &wrong),
        s.base_tables(false, true)
    );
    s.write("smsotp.toml", &text, 0o600);
    s.write("sshd_config", "UsePAM yes\n", 0o644);
    std::fs::create_dir(s.path("pam.d")).unwrap();
    let (r, f) = doctor(&s, Some("alice"));
    assert_eq!(r.code, 1, "{r}");
    find(&f, "ok", &["TLS: the certificate is trusted"]);
    let e = find(
        &f,
        "error",
        &[
            &slapd.url_ldaps(),
            "bind: bind as",
            slapd.service_dn(),
            "invalidCredentials",
            "(49)",
        ],
    );
    assert!(
        e["fix"].as_str().unwrap().contains("bind_password_file"),
        "{e}"
    );
    // It stops at the failed step.
    assert!(
        !f.iter()
            .any(|x| x["message"].as_str().unwrap().contains("search")),
        "{}",
        show(&f)
    );
    assert!(!r.stdout.contains("not-the-password"), "{r}");
}

#[test]
fn doctor_names_the_certificate_problem_with_the_wrong_ca() {
    let slapd = Slapd::start();
    for (url, extra) in [
        (slapd.url_ldaps(), ""),
        (slapd.url_plain(), "starttls = true\n"),
    ] {
        let s = scratch(&format!(
            "{}{extra}",
            table(
                &slapd,
                &url,
                &slapd.wrong_ca_file(),
                &slapd.service_password_file()
            )
        ));
        let (r, f) = doctor(&s, Some("alice"));
        assert_eq!(r.code, 1, "{r}");
        let tls = if extra.is_empty() { "TLS" } else { "StartTLS" };
        find(&f, "ok", &[&url, "TCP: connected"]);
        let e = find(&f, "error", &[&url, &format!("{tls}: "), "unknown issuer"]);
        assert!(e["fix"].as_str().unwrap().contains("ca_file"), "{e}");
        find(&f, "error", &["no server in urls answered"]);
        assert!(
            !f.iter()
                .any(|x| x["message"].as_str().unwrap().contains("bind")),
            "{}",
            show(&f)
        );
    }
}

#[test]
fn doctor_names_the_tcp_step_for_a_closed_port_and_the_dns_step_for_a_bad_name() {
    let slapd = Slapd::start();
    let closed = format!("ldaps://127.0.0.1:{}", closed_port());
    let s = scratch(&table(
        &slapd,
        &closed,
        &slapd.ca_file(),
        &slapd.service_password_file(),
    ));
    let (r, f) = doctor(&s, Some("alice"));
    assert_eq!(r.code, 1, "{r}");
    find(&f, "ok", &[&closed, "DNS:"]);
    let e = find(
        &f,
        "error",
        &[&closed, "TCP: cannot connect to 127.0.0.1:", "refused"],
    );
    assert!(e["fix"].as_str().unwrap().contains("port"), "{e}");

    let bad = "ldaps://nonexistent.invalid";
    let s = scratch(&table(
        &slapd,
        bad,
        &slapd.ca_file(),
        &slapd.service_password_file(),
    ));
    let (r, f) = doctor(&s, Some("alice"));
    assert_eq!(r.code, 1, "{r}");
    let e = find(
        &f,
        "error",
        &[
            bad,
            "DNS: the host name \"nonexistent.invalid\" does not resolve",
        ],
    );
    assert!(e["fix"].as_str().unwrap().contains("resolv"), "{e}");
    assert!(
        !f.iter()
            .any(|x| x["message"].as_str().unwrap().contains("TCP")),
        "{}",
        show(&f)
    );
}

#[test]
fn doctor_gives_up_on_a_black_hole_at_the_tls_step_within_its_timeout() {
    let slapd = Slapd::start();
    let hole = BlackHole::start();
    let url = format!("ldaps://127.0.0.1:{}", hole.port);
    let s = scratch(&table(
        &slapd,
        &url,
        &slapd.ca_file(),
        &slapd.service_password_file(),
    ));
    let (r, f) = doctor(&s, Some("alice"));
    assert_eq!(r.code, 1, "{r}");
    find(&f, "ok", &[&url, "TCP: connected"]);
    find(
        &f,
        "error",
        &[
            &url,
            "TLS: ",
            "did not complete the TLS handshake within timeout (1 second)",
        ],
    );
    // doctor's step (1 s) and the admins' lookups (1 s each) at most, with room.
    assert!(r.took < Duration::from_secs(15), "{r}");
}

#[test]
fn doctor_says_when_the_first_url_is_down_and_the_second_answers() {
    let slapd = Slapd::start();
    let closed = format!("ldaps://127.0.0.1:{}", closed_port());
    let good = slapd.url_ldaps();
    let mut t = table(
        &slapd,
        &closed,
        &slapd.ca_file(),
        &slapd.service_password_file(),
    );
    t = t.replace(
        &format!("urls = [\"{closed}\"]"),
        &format!("urls = [\"{closed}\", \"{good}\"]"),
    );
    let s = scratch(&t);
    let (r, f) = doctor(&s, Some("alice"));
    assert_eq!(r.code, 1, "warnings count as problems: {r}");
    find(&f, "warning", &[&closed, "TCP: cannot connect"]);
    find(&f, "warning", &["the first URL is down", &good, "failover"]);
    find(&f, "ok", &[&good, "bind: bound as"]);
    find(&f, "ok", &["alice: mobile holds ******5678"]);
    assert_eq!(count(&f, "error"), 0, "{}", show(&f));
}

#[test]
fn doctor_no_network_skips_the_directories() {
    let s = scratch(&format!(
        "urls = [\"ldaps://127.0.0.1:{}\"]\nbase = \"dc=example,dc=org\"\nconnect_timeout = \"1s\"\ntimeout = \"1s\"\n",
        closed_port()
    ));
    let sshd = s.path("sshd_config");
    let pam = s.path("pam.d");
    let r = smsotp(
        &s,
        &[
            "doctor",
            "--no-network",
            "--user",
            "alice",
            "--sshd-config",
            sshd.to_str().unwrap(),
            "--pam-dir",
            pam.to_str().unwrap(),
        ],
    );
    assert!(r.stdout.contains("not checked (--no-network)"), "{r}");
    assert!(!r.stdout.contains("TCP:"), "{r}");
}

#[test]
fn user_show_names_the_ldap_source_or_why_it_cannot_ask() {
    let slapd = Slapd::start();
    let s = scratch(&table(
        &slapd,
        &slapd.url_ldaps(),
        &slapd.ca_file(),
        &slapd.service_password_file(),
    ));
    let r = smsotp(&s, &["user", "show", "alice"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout
            .contains(&format!("******5678 (from ldap {})", slapd.url_ldaps())),
        "{r}"
    );
    assert!(!r.stdout.contains(ALICE_MOBILE), "{r}");
    let r = smsotp(&s, &["--json", "user", "show", "alice"]);
    let j: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(j["source"], format!("ldap {}", slapd.url_ldaps()), "{r}");

    // A directory that cannot be reached: the error, not "no number".
    let closed = format!("ldaps://127.0.0.1:{}", closed_port());
    let s = scratch(&table(
        &slapd,
        &closed,
        &slapd.ca_file(),
        &slapd.service_password_file(),
    ));
    let r = smsotp(&s, &["user", "show", "alice"]);
    assert!(
        r.stdout.contains("phone:         ERROR: ") && r.stdout.contains(&closed),
        "{r}"
    );
    assert!(r.stdout.contains("cannot connect"), "{r}");
    assert!(!r.stdout.contains("none registered"), "{r}");
    assert!(!r.stderr.contains("panicked"), "{r}");
}

#[test]
fn doctor_reports_an_active_directory_account_enabled_or_disabled() {
    let slapd = Slapd::start();
    // The test schema has AD's `user` class but no objectCategory, so the
    // preset's filter is narrowed to what it holds.
    let s = scratch(&format!(
        "{}preset = \"active_directory\"\nfilter = \"(&(objectClass=user)(sAMAccountName={{user}}))\"\n",
        table(
            &slapd,
            &slapd.url_ldaps(),
            &slapd.ca_file(),
            &slapd.service_password_file()
        )
    ));
    let (_, f) = doctor(&s, Some("dave"));
    find(&f, "ok", &["dave: search: entry", &slapd.user_dn("dave")]);
    find(
        &f,
        "ok",
        &["dave: the account is enabled (userAccountControl)"],
    );
    find(&f, "ok", &["dave: mobile holds ******3333"]);
    let (r, f) = doctor(&s, Some("erin"));
    assert_eq!(r.code, 1, "{r}");
    find(
        &f,
        "warning",
        &["erin: the account is disabled", "no code is sent"],
    );
    assert!(
        !f.iter()
            .any(|x| x["message"].as_str().unwrap().contains("holds")),
        "{}",
        show(&f)
    );
}
