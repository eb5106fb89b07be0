//! LDAP / Active Directory as a directory (issue #18), against a private
//! OpenLDAP slapd ([`smsotp_e2e::slapd`]).
//!
//! The first tests check the harness itself with OpenLDAP's own tools
//! (ldap-utils), not our product: that the server starts and stops within
//! bounds, that both TLS paths work with the test CA and fail with the
//! wrong one, and that the access control is what the product's tests will
//! rely on.
//!
//! The tests below them drive the product (issue #18 point 7): logins
//! through pamtester with the built PAM module ([`PamEnv`]) and through a
//! real sshd, and the built `smsotp` tool, against a config whose
//! `[[directory]] kind = "ldap"` points at the private slapd. Needs
//! `cargo build --workspace` and the Debian packages of both harnesses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use smsotp_e2e::pamenv::{audit_lines, PamEnv};
use smsotp_e2e::slapd::{
    run_tool, run_tool_input, Slapd, ToolRun, ALICE_MOBILE, BOB_VERIFIED, DAVE_MOBILE, ERIN_MOBILE,
    PEOPLE, START_TIMEOUT,
};
use smsotp_e2e::sshd::{ensure_user, CodeAnswer, Sshd, SshdSetup};
use smsotp_e2e::{closed_port, module_path, BlackHole, Scratch};

/// `ldapsearch -x -LLL` against `url`, trusting `ca`, bound as `bind`
/// (dn, password) or anonymously, for `filter` under the base.
fn ldapsearch(
    s: &Slapd,
    url: &str,
    ca: &Path,
    extra: &[&str],
    bind: Option<(&str, &str)>,
    filter: &str,
    attrs: &[&str],
) -> ToolRun {
    let mut cmd = s.ldap_tool("ldapsearch", ca);
    cmd.args([
        "-x",
        "-LLL",
        "-o",
        "ldif-wrap=no",
        "-o",
        "nettimeout=5",
        "-H",
        url,
    ])
    .args(extra);
    if let Some((dn, pw)) = bind {
        cmd.args(["-D", dn, "-w", pw]);
    }
    cmd.args(["-b", s.base(), filter]).args(attrs);
    run_tool(cmd)
}

fn ldapmodify_as(s: &Slapd, dn: &str, pw: &str, ldif: &str) -> ToolRun {
    let mut cmd: Command = s.ldap_tool("ldapmodify", &s.ca_file());
    cmd.args(["-x", "-ZZ", "-o", "nettimeout=5", "-H", &s.url_plain()])
        .args(["-D", dn, "-w", pw]);
    run_tool_input(cmd, ldif.as_bytes())
}

fn connects(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_ok()
}

#[test]
fn slapd_starts_and_stops_within_bounds() {
    let t = Instant::now();
    let mut s = Slapd::start();
    let started = t.elapsed();
    eprintln!("Slapd::start took {started:?}");
    assert!(started < START_TIMEOUT, "start took {started:?}");
    assert!(s.is_running());
    assert!(connects(s.plain_port) && connects(s.ldaps_port));

    let t = Instant::now();
    s.stop();
    let stopped = t.elapsed();
    eprintln!("Slapd::stop took {stopped:?}");
    assert!(stopped < Duration::from_secs(5), "stop took {stopped:?}");
    assert!(!s.is_running());
    assert!(!connects(s.plain_port), "port still open after stop");
    assert!(!connects(s.ldaps_port), "port still open after stop");

    // A directory that went away comes back with its data.
    s.restart();
    assert!(s.search("(uid=alice)", &["mobile"]).contains(ALICE_MOBILE));

    let dir = s.ca_file().parent().unwrap().to_path_buf();
    let plain = s.plain_port;
    drop(s);
    assert!(!connects(plain), "port still open after drop");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn ldaps_with_the_test_ca_finds_alice() {
    let s = Slapd::start();
    let r = ldapsearch(
        &s,
        &s.url_ldaps(),
        &s.ca_file(),
        &[],
        Some((s.service_dn(), s.service_password())),
        "(uid=alice)",
        &["mobile"],
    );
    assert!(r.ok(), "{}", r.text);
    assert!(
        r.text.contains(&format!("mobile: {ALICE_MOBILE}")),
        "{}",
        r.text
    );
    // The certificate names localhost, 127.0.0.1 and ::1 (ldapsearch
    // cannot show it for localhost: libldap checks the reverse name of the
    // peer's address instead), and nothing else.
    for (flag, name, good) in [
        ("-verify_hostname", "localhost", true),
        ("-verify_ip", "127.0.0.1", true),
        ("-verify_ip", "::1", true),
        ("-verify_hostname", "example.org", false),
    ] {
        let mut cmd = Command::new("openssl");
        cmd.arg("verify")
            .arg("-CAfile")
            .arg(s.ca_file())
            .args([flag, name])
            .arg(s.server_cert_file());
        let r = run_tool(cmd);
        assert_eq!(r.ok(), good, "{name}: {}", r.text);
    }
}

#[test]
fn starttls_works_and_the_seed_is_complete() {
    let s = Slapd::start();
    let svc = Some((s.service_dn(), s.service_password()));
    let r = ldapsearch(
        &s,
        &s.url_plain(),
        &s.ca_file(),
        &["-ZZ"],
        svc,
        "(|(uid=bob)(sAMAccountName=dave)(sAMAccountName=erin)(uid=carol))",
        &[
            "mobile",
            "phoneNumberVerified",
            "userAccountControl",
            "sAMAccountName",
        ],
    );
    assert!(r.ok(), "{}", r.text);
    for want in [
        format!("phoneNumberVerified: {BOB_VERIFIED}"),
        format!("mobile: {DAVE_MOBILE}"),
        format!("mobile: {ERIN_MOBILE}"),
        "userAccountControl: 512".into(),
        "userAccountControl: 514".into(),
        format!("dn: {}", s.user_dn("carol")),
        format!("dn: {}", s.user_dn("dave")),
    ] {
        assert!(r.text.contains(&want), "no {want:?} in\n{}", r.text);
    }
    // AD's "account enabled" filter: bit 2 of userAccountControl clear.
    let r = ldapsearch(
        &s,
        &s.url_plain(),
        &s.ca_file(),
        &["-ZZ"],
        svc,
        "(&(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))",
        &["sAMAccountName"],
    );
    assert!(r.ok(), "{}", r.text);
    assert!(r.text.contains("sAMAccountName: dave"), "{}", r.text);
    assert!(!r.text.contains("erin"), "{}", r.text);
    // Every seeded user can bind with their password, and only with it.
    for uid in ["alice", "bob", "carol", "dave", "erin"] {
        let dn = s.user_dn(uid);
        let mut who = s.ldap_tool("ldapwhoami", &s.ca_file());
        who.args(["-x", "-ZZ", "-H", &s.url_plain(), "-D", &dn])
            .args(["-w", s.user_password(uid)]);
        let r = run_tool(who);
        assert!(r.ok(), "{uid}: {}", r.text);
        assert!(r.text.contains(&format!("dn:{dn}")), "{}", r.text);
        let mut bad = s.ldap_tool("ldapwhoami", &s.ca_file());
        bad.args(["-x", "-ZZ", "-H", &s.url_plain(), "-D", &dn])
            .args(["-w", "not-the-password"]);
        let r = run_tool(bad);
        assert!(
            !r.ok() && r.text.contains("Invalid credentials"),
            "{uid}: {}",
            r.text
        );
    }
}

#[test]
fn the_wrong_ca_is_refused() {
    let s = Slapd::start();
    let svc = Some((s.service_dn(), s.service_password()));
    for (url, extra) in [(s.url_ldaps(), &[][..]), (s.url_plain(), &["-ZZ"][..])] {
        let r = ldapsearch(
            &s,
            &url,
            &s.wrong_ca_file(),
            extra,
            svc,
            "(uid=alice)",
            &["mobile"],
        );
        assert!(!r.ok(), "{url} with the wrong CA: {}", r.text);
        assert!(!r.text.contains(ALICE_MOBILE), "{}", r.text);
        // The same search with the right CA works, so the CA made the difference.
        let r = ldapsearch(
            &s,
            &url,
            &s.ca_file(),
            extra,
            svc,
            "(uid=alice)",
            &["mobile"],
        );
        assert!(r.ok(), "{url} with the test CA: {}", r.text);
    }
    // (slapd cannot tell: under TLS 1.3 the client rejects the certificate
    // after the server finished its part.) openssl agrees.
    let mut cmd = Command::new("openssl");
    cmd.arg("verify")
        .arg("-CAfile")
        .arg(s.wrong_ca_file())
        .arg(s.server_cert_file());
    let r = run_tool(cmd);
    assert!(!r.ok(), "{}", r.text);
}

#[test]
fn the_service_account_writes_mobile_and_a_user_cannot_write_another() {
    let s = Slapd::start();
    let carol = s.user_dn("carol");
    let set = |number: &str| {
        format!("dn: {carol}\nchangetype: modify\nreplace: mobile\nmobile: {number}\n")
    };
    // The password file is what the product will read: 0600, one line.
    let file = s.service_password_file();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", file.display());
    let text = std::fs::read_to_string(&file).unwrap();
    let password = text.strip_suffix('\n').expect("one line");
    let r = ldapmodify_as(&s, s.service_dn(), password, &set("+4915199990000"));
    assert!(r.ok(), "{}", r.text);
    assert!(
        s.search("(uid=carol)", &["mobile"])
            .contains("mobile: +4915199990000"),
        "{}",
        s.search("(uid=carol)", &["mobile"])
    );

    // Only mobile: the service account cannot change another attribute.
    let r = ldapmodify_as(
        &s,
        s.service_dn(),
        s.service_password(),
        &format!("dn: {carol}\nchangetype: modify\nreplace: sn\nsn: Changed\n"),
    );
    assert!(
        !r.ok() && r.text.contains("Insufficient access"),
        "{}",
        r.text
    );

    // alice cannot write carol's entry, nor her own mobile.
    let alice = s.user_dn("alice");
    let r = ldapmodify_as(&s, &alice, s.user_password("alice"), &set("+4915100000001"));
    assert!(
        !r.ok() && r.text.contains("Insufficient access"),
        "{}",
        r.text
    );
    let own = format!("dn: {alice}\nchangetype: modify\nreplace: mobile\nmobile: +4915100000002\n");
    let r = ldapmodify_as(&s, &alice, s.user_password("alice"), &own);
    assert!(
        !r.ok() && r.text.contains("Insufficient access"),
        "{}",
        r.text
    );
    let now = s.search("(|(uid=carol)(uid=alice))", &["mobile"]);
    assert!(
        now.contains("mobile: +4915199990000") && now.contains(ALICE_MOBILE),
        "{now}"
    );

    // A user reads their own entry, not another's.
    let as_alice = |base: &str| {
        let mut cmd = s.ldap_tool("ldapsearch", &s.ca_file());
        cmd.args(["-x", "-LLL", "-H", &s.url_ldaps(), "-D", &alice])
            .args(["-w", s.user_password("alice"), "-s", "base", "-b", base])
            .arg("mobile");
        run_tool(cmd)
    };
    let r = as_alice(&alice);
    assert!(r.ok() && r.text.contains(ALICE_MOBILE), "{}", r.text);
    let r = as_alice(&carol);
    assert!(!r.text.contains("+4915199990000"), "{}", r.text);
}

#[test]
fn anonymous_search_finds_nothing() {
    let s = Slapd::start();
    let r = ldapsearch(
        &s,
        &s.url_ldaps(),
        &s.ca_file(),
        &[],
        None,
        "(objectClass=*)",
        &[],
    );
    assert!(
        !r.text.contains("dn:"),
        "anonymous saw entries:\n{}",
        r.text
    );
    assert!(
        !r.text.contains("+49"),
        "anonymous saw a number:\n{}",
        r.text
    );
    // Yet the same search as the service account sees them, so the ACL
    // made the difference.
    let svc = Some((s.service_dn(), s.service_password()));
    let r = ldapsearch(
        &s,
        &s.url_ldaps(),
        &s.ca_file(),
        &[],
        svc,
        "(objectClass=*)",
        &[],
    );
    assert!(
        r.text.contains(&format!("dn: {}", s.user_dn("dave"))),
        "{}",
        r.text
    );
    // Nobody but the rootdn reads password hashes.
    assert!(!r.text.contains("userPassword"), "{}", r.text);
}

#[test]
fn add_puts_more_entries_in() {
    let s = Slapd::start();
    s.add(&format!(
        "dn: uid=frank,{}\nobjectClass: inetOrgPerson\nuid: frank\ncn: Frank\nsn: Example\nmobile: +4915166667777\n",
        s.people()
    ));
    assert!(s
        .search("(uid=frank)", &["mobile"])
        .contains("+4915166667777"));
}

#[test]
fn the_black_hole_holds_connections_silently_and_the_closed_port_refuses() {
    let hole = BlackHole::start();
    let mut c = TcpStream::connect(("127.0.0.1", hole.port)).expect("connect to the black hole");
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    c.write_all(b"\x30\x0c\x02\x01\x01\x60\x07\x02\x01\x03\x04\x00\x80\x00")
        .unwrap(); // an anonymous LDAP bind request
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let e = c.read(&mut buf).expect_err("the black hole answered");
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{e}"
    );
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert_eq!(
        hole.close(),
        1,
        "the black hole did not hold the connection"
    );
    // Dropped: the connection is closed now.
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    // (reset rather than EOF: the bind request was never read)
    match c.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the dropped black hole left the connection open: {other:?}"),
    }

    let port = closed_port();
    let e = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
        .expect_err("closed port accepted");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
}

// ------------------------------------------------------------ the product

use smsotp_e2e::ToolRun as Run;

/// `smsotp --config SCRATCH/smsotp.toml ARGS`, killed (and the test
/// failed) after [`TOOL_LIMIT`].
fn smsotp(scratch: &Scratch, args: &[&str]) -> Run {
    smsotp_e2e::run_tool(scratch, args, TOOL_LIMIT)
}

/// How long one `smsotp` run may take (every LDAP step is bounded by the
/// config's 2 s timeouts).
const TOOL_LIMIT: Duration = Duration::from_secs(15);

/// The directory's name in the configs below (messages and `user show`).
const LDAP_NAME: &str = "e2e-ldap";

/// A `[[directory]] kind = "ldap"` table for `s`: the given URLs, the test
/// CA, the service account, base `ou=people`, 2 s timeouts, then `extra`
/// (keys not set here).
fn ldap_table(s: &Slapd, urls: &[String], extra: &str) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[[directory]]\nkind = \"ldap\"\nname = \"{LDAP_NAME}\"\nurls = [{}]\nca_file = \"{}\"\n\
         bind_dn = \"{}\"\nbind_password_file = \"{}\"\nbase = \"{}\"\n\
         connect_timeout = \"2s\"\ntimeout = \"2s\"\n{extra}\n\n",
        urls.join(", "),
        s.ca_file().display(),
        s.service_dn(),
        s.service_password_file().display(),
        s.people(),
    )
}

/// A `[[directory]] kind = "file"` table for the scratch's phones.toml.
fn file_table(scratch: &Scratch) -> String {
    format!(
        "[[directory]]\nkind = \"file\"\npath = \"{}\"\n\n",
        scratch.path("phones.toml").display()
    )
}

/// Writes smsotp.toml: `top` (e.g. `[policy]`), the scratch's store, audit
/// and outbox, then the `[[directory]]` tables in order.
fn write_config(scratch: &Scratch, top: &str, directories: &[String]) {
    let text = format!(
        "{top}\n{}{}",
        scratch.base_tables(false, true),
        directories.concat()
    );
    scratch.write("smsotp.toml", &text, 0o600);
}

/// A login of `user` that must get its code by SMS at `number` and log in
/// with it; the SMS is the `seen`+1st in the outbox.
fn login_with_code(env: &PamEnv, svc: &str, user: &str, number: &str, seen: usize) {
    let outbox = env.scratch.outbox();
    let mut login = env.login(svc, user);
    login
        .password()
        .expect_text(&format!(
            "Code sent to ******{}",
            &number[number.len() - 4..]
        ))
        .expect_prompt("SMS code");
    let sms = login.answer_code_from_outbox(&outbox, seen);
    assert_eq!(sms.to, number, "{}", login.dialog());
    login.finish().assert_success();
    assert_eq!(outbox.count(), seen + 1, "one SMS for one login");
}

/// A login of `user` that fails without an SMS, within `bound`.
fn login_fails_without_sms(env: &PamEnv, svc: &str, user: &str, bound: Duration) -> String {
    let outbox = env.scratch.outbox();
    let seen = outbox.count();
    let t = Instant::now();
    let mut login = env.login(svc, user);
    login.password();
    let out = login.finish();
    let took = t.elapsed();
    out.assert_failure().assert_not_saw("Code sent");
    assert!(
        took < bound,
        "the failed login of {user:?} took {took:?}:\n{out}"
    );
    assert_eq!(outbox.count(), seen, "an SMS was sent for {user:?}:\n{out}");
    out.transcript
}

/// The audit file as text (for assertions on what the admin sees): each
/// line's event and detail, unescaped.
fn audit_text(scratch: &Scratch) -> String {
    audit_lines(scratch)
        .iter()
        .map(|l| {
            format!(
                "{} {}\n",
                l["event"].as_str().unwrap_or(""),
                l["detail"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn ldaps_mobile_and_starttls_phone_number_verified_log_in() {
    let s = Slapd::start();
    let mut env = PamEnv::new();
    // alice's `mobile` over ldaps://.
    write_config(&env.scratch, "", &[ldap_table(&s, &[s.url_ldaps()], "")]);
    let svc = env.smsotp_service("ldaps", "");
    login_with_code(&env, &svc, "alice", ALICE_MOBILE, 0);
    let j = smsotp(&env.scratch, &["--json", "user", "show", "alice"]).json();
    assert_eq!(j["phone"], "******5678", "{j}");
    assert_eq!(
        j["source"],
        format!("ldap {LDAP_NAME} ({})", s.url_ldaps()),
        "user show does not name the LDAP directory: {j}"
    );
    // bob has no `mobile`: with the default attributes, no number.
    let j = smsotp(&env.scratch, &["--json", "user", "show", "bob"]).json();
    assert_eq!(j["phone"], serde_json::Value::Null, "{j}");

    // bob's `phoneNumberVerified` over ldap:// with StartTLS.
    write_config(
        &env.scratch,
        "",
        &[ldap_table(
            &s,
            &[s.url_plain()],
            "starttls = true\nphone_attributes = [\"phoneNumberVerified\"]",
        )],
    );
    login_with_code(&env, &svc, "bob", BOB_VERIFIED, 1);
    let j = smsotp(&env.scratch, &["--json", "user", "show", "bob"]).json();
    assert_eq!(j["phone"], "******4321", "{j}");
    assert!(
        j["source"].as_str().unwrap_or("").contains(LDAP_NAME),
        "{j}"
    );
    // alice has no phoneNumberVerified: no SMS, the login fails
    // (no_phone = "deny" by default).
    login_fails_without_sms(&env, &svc, "alice", Duration::from_secs(10));
    // The audit names masked numbers only.
    let raw = std::fs::read_to_string(env.scratch.path("audit.jsonl")).unwrap();
    for whole in [ALICE_MOBILE, BOB_VERIFIED] {
        assert!(!raw.contains(&whole[1..]), "{whole} in the audit:\n{raw}");
    }
}

#[test]
fn two_directories_are_asked_in_order() {
    let s = Slapd::start();
    let mut env = PamEnv::new();
    // A file list first that lacks alice and has carol: alice from LDAP,
    // carol from the file (she has no number in LDAP).
    env.scratch.phones(&[("carol", "+4915100001111")]);
    write_config(
        &env.scratch,
        "",
        &[
            file_table(&env.scratch),
            ldap_table(&s, &[s.url_ldaps()], ""),
        ],
    );
    let svc = env.smsotp_service("two", "");
    login_with_code(&env, &svc, "alice", ALICE_MOBILE, 0);
    login_with_code(&env, &svc, "carol", "+4915100001111", 1);

    // The file has alice too, with another number: the first directory
    // that has her answers.
    env.scratch
        .phones(&[("alice", "+4915100002222"), ("carol", "+4915100001111")]);
    login_with_code(&env, &svc, "alice", "+4915100002222", 2);

    // LDAP first: its number wins for alice; carol, whom LDAP lacks a
    // number for, gets the file's.
    write_config(
        &env.scratch,
        "",
        &[
            ldap_table(&s, &[s.url_ldaps()], ""),
            file_table(&env.scratch),
        ],
    );
    login_with_code(&env, &svc, "alice", ALICE_MOBILE, 3);
    login_with_code(&env, &svc, "carol", "+4915100001111", 4);
    let j = smsotp(&env.scratch, &["--json", "user", "show", "alice"]).json();
    assert!(
        j["source"].as_str().unwrap_or("").contains(LDAP_NAME),
        "{j}"
    );
    let j = smsotp(&env.scratch, &["--json", "user", "show", "carol"]).json();
    assert!(
        j["source"].as_str().unwrap_or("").contains("phones.toml"),
        "{j}"
    );
}

#[test]
fn a_closed_first_url_fails_over_to_the_second() {
    let s = Slapd::start();
    let mut env = PamEnv::new();
    let down = format!("ldaps://127.0.0.1:{}", closed_port());
    write_config(
        &env.scratch,
        "",
        &[ldap_table(&s, &[down, s.url_ldaps()], "")],
    );
    let svc = env.smsotp_service("failover", "");
    let t = Instant::now();
    login_with_code(&env, &svc, "alice", ALICE_MOBILE, 0);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[test]
fn a_server_that_never_answers_fails_closed_in_time_or_is_skipped() {
    let hole = BlackHole::start();
    let mut env = PamEnv::new();
    env.scratch.phones(&[("alice", "+4915100003333")]);
    // The black hole's URLs need no real CA: the handshake never ends.
    let table = |extra: &str| {
        format!(
            "[[directory]]\nkind = \"ldap\"\nname = \"{LDAP_NAME}\"\nurls = [\"ldaps://127.0.0.1:{}\"]\n\
             base = \"{PEOPLE}\"\nconnect_timeout = \"1s\"\ntimeout = \"1s\"\n{extra}\n\n",
            hole.port
        )
    };
    write_config(&env.scratch, "", &[table(""), file_table(&env.scratch)]);
    let svc = env.smsotp_service("blackhole", "");
    login_fails_without_sms(&env, &svc, "alice", Duration::from_secs(5));
    let audit = audit_text(&env.scratch);
    assert!(
        audit.contains(LDAP_NAME),
        "the audit does not name the directory:\n{audit}"
    );

    // on_unavailable = "next": the file's number, still in time.
    write_config(
        &env.scratch,
        "",
        &[table("on_unavailable = \"next\""), file_table(&env.scratch)],
    );
    let t = Instant::now();
    login_with_code(&env, &svc, "alice", "+4915100003333", 0);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let audit = audit_text(&env.scratch);
    assert!(audit.contains("directory_skipped"), "{audit}");
    assert!(hole.close() >= 2, "the black hole was not asked");
}

#[test]
fn filter_injection_finds_nothing() {
    let s = Slapd::start();
    let mut env = PamEnv::new();
    let names = ["*", "*)(uid=*", "a)(|(objectClass=*"];
    for (i, name) in names.iter().enumerate() {
        env.add_user(name, 3001 + i as u32, 3001 + i as u32, "", &[]);
    }
    write_config(&env.scratch, "", &[ldap_table(&s, &[s.url_ldaps()], "")]);
    let svc = env.smsotp_service("inject", "");
    for name in names {
        let shown = login_fails_without_sms(&env, &svc, name, Duration::from_secs(10));
        assert!(!shown.contains("+49"), "{shown}");
        let r = smsotp(&env.scratch, &["--json", "user", "show", name]);
        assert!(
            !r.stdout.contains("5678") && !r.stdout.contains("+49"),
            "user show {name:?} found a number: {r}"
        );
        if r.code == 0 {
            assert_eq!(r.json()["phone"], serde_json::Value::Null, "{r}");
        }
    }
    // slapd got each name as one escaped value, never as filter syntax.
    // (slapd logs the filter normalized: attribute names in lower case.)
    let log = s.log().to_lowercase();
    for escaped in [
        "filter=\"(uid=\\2a)\"",
        "filter=\"(uid=\\2a\\29\\28uid=\\2a)\"",
        "filter=\"(uid=a\\29\\28|\\28objectclass=\\2a)\"",
    ] {
        assert!(log.contains(escaped), "no {escaped} in slapd's log:\n{log}");
    }
    let searches = log.matches(" srch base=").count();
    assert_eq!(
        searches,
        2 * names.len(),
        "one search per login and per user show:\n{log}"
    );
    // The same directory still finds alice, so "nothing" was not an outage.
    login_with_code(&env, &svc, "alice", ALICE_MOBILE, 0);
}

#[test]
fn a_wrong_bind_password_fails_closed_and_says_so() {
    let s = Slapd::start();
    let mut env = PamEnv::new();
    let wrong = env
        .scratch
        .write("ldap.secret", "not-the-service-password\n", 0o600);
    let table = ldap_table(&s, &[s.url_ldaps()], "").replace(
        &s.service_password_file().display().to_string(),
        &wrong.display().to_string(),
    );
    write_config(&env.scratch, "", &[table]);
    let svc = env.smsotp_service("badbind", "");
    login_fails_without_sms(&env, &svc, "alice", Duration::from_secs(10));
    let audit = audit_text(&env.scratch).to_lowercase();
    assert!(
        audit.contains("bind as \"cn=smsotp,ou=services,dc=example,dc=org\" refused")
            && audit.contains("invalidcredentials (wrong dn or password) (49)"),
        "the audit does not say the bind was refused:\n{audit}"
    );
    assert!(!audit.contains("not-the-service-password"), "{audit}");
    let r = smsotp(&env.scratch, &["user", "show", "alice"]);
    let text = format!("{}{}", r.stdout, r.stderr).to_lowercase();
    assert!(
        text.contains("wrong dn or password"),
        "user show does not say why: {r}"
    );
    assert!(!text.contains("5678"), "{r}");
}

#[test]
fn the_wrong_ca_fails_closed_and_says_so() {
    let s = Slapd::start();
    let mut env = PamEnv::new();
    let svc = env.smsotp_service("badca", "");
    for (url, extra) in [(s.url_ldaps(), ""), (s.url_plain(), "starttls = true")] {
        let table = ldap_table(&s, std::slice::from_ref(&url), extra).replace(
            &s.ca_file().display().to_string(),
            &s.wrong_ca_file().display().to_string(),
        );
        write_config(&env.scratch, "", &[table]);
        login_fails_without_sms(&env, &svc, "alice", Duration::from_secs(10));
        let audit = audit_text(&env.scratch).to_lowercase();
        assert!(
            audit.contains("not signed by a trusted ca (unknown issuer): set ca_file"),
            "{url}: the audit does not name the certificate problem:\n{audit}"
        );
        let r = smsotp(&env.scratch, &["user", "show", "alice"]);
        let text = format!("{}{}", r.stdout, r.stderr).to_lowercase();
        assert!(
            text.contains("unknown issuer"),
            "{url}: user show does not say why: {r}"
        );
        std::fs::remove_file(env.scratch.path("audit.jsonl")).unwrap();
    }
}

/// Enrolls carol (no phone in LDAP) through a login; returns her entry's
/// `mobile` as the rootdn sees it afterwards, and the audit.
fn enroll_carol(write_back: bool) -> (String, String) {
    const NUMBER: &str = "+4915112340099";
    let s = Slapd::start();
    let mut env = PamEnv::new();
    write_config(
        &env.scratch,
        "[policy]\nno_phone = \"enroll\"\n",
        &[ldap_table(
            &s,
            &[s.url_ldaps()],
            &format!("write_back = {write_back}"),
        )],
    );
    let svc = env.smsotp_service("enroll", "");
    let outbox = env.scratch.outbox();
    let mut login = env.login(&svc, "carol");
    login
        .password()
        .expect_prompt("Mobile number for SMS codes")
        .answer(NUMBER)
        .expect_text("Code sent to ******0099")
        .expect_prompt("SMS code");
    let sms = login.answer_code_from_outbox(&outbox, 0);
    assert_eq!(sms.to, NUMBER);
    login.finish().assert_success().assert_saw("now registered");
    let found = s.search("(uid=carol)", &["mobile"]);
    (found, audit_text(&env.scratch))
}

#[test]
fn write_back_after_enrollment_is_in_the_directory() {
    let (found, audit) = enroll_carol(true);
    assert!(found.contains("mobile: +4915112340099"), "{found}\n{audit}");
    assert!(!audit.contains("directory_write_back_failed"), "{audit}");
}

#[test]
fn without_write_back_the_directory_is_left_alone() {
    let (found, audit) = enroll_carol(false);
    assert!(
        found.contains("uid=carol"),
        "the search found no carol: {found}"
    );
    assert!(!found.contains("mobile:"), "{found}");
    assert!(!audit.contains("directory_write_back_failed"), "{audit}");
}

#[test]
fn active_directory_preset_sends_to_dave_and_not_to_disabled_erin() {
    let s = Slapd::start();
    let mut env = PamEnv::new();
    // The preset sets filter and phone_attributes; the table gives only
    // where and how to connect.
    let table = ldap_table(&s, &[s.url_ldaps()], "preset = \"active_directory\"").replace(
        &format!("base = \"{}\"", s.people()),
        &format!("base = \"{}\"", s.base()),
    );
    write_config(&env.scratch, "", &[table]);
    let svc = env.smsotp_service("ad", "");
    login_with_code(&env, &svc, "dave", DAVE_MOBILE, 0);
    login_fails_without_sms(&env, &svc, "erin", Duration::from_secs(10));
    let audit = audit_text(&env.scratch).to_lowercase();
    assert!(audit.contains("disabled"), "{audit}");
    let r = smsotp(&env.scratch, &["user", "show", "erin"]);
    let text = format!("{}{}", r.stdout, r.stderr);
    assert!(text.contains("disabled"), "user show erin: {r}");
    assert!(!text.contains("5555"), "user show erin: {r}");
    // alice is no AD user: the preset's filter does not find her.
    login_fails_without_sms(&env, &svc, "alice", Duration::from_secs(10));
}

#[test]
fn an_ssh_login_gets_its_code_at_the_number_from_ldap() {
    const USER: &str = "smsotp-ldap-t1";
    const PASSWORD: &str = "ldap ssh battery";
    const NUMBER: &str = "+4915112340077";
    let s = Slapd::start();
    s.add(&format!(
        "dn: uid={USER},{}\nobjectClass: inetOrgPerson\nuid: {USER}\ncn: SSH Test\nsn: Test\nmobile: {NUMBER}\n",
        s.people()
    ));
    ensure_user(USER);
    let scratch = Scratch::new();
    write_config(&scratch, "", &[ldap_table(&s, &[s.url_ldaps()], "")]);
    let sshd = Sshd::start(&SshdSetup::new(USER, PASSWORD).then_required(
        &module_path(),
        &format!("config={}", scratch.path("smsotp.toml").display()),
    ));
    let outbox = scratch.outbox();
    let login = sshd.login(USER, PASSWORD, Some(&outbox.path), CodeAnswer::Right);
    let ctx = format!(
        "{}\n--- audit\n{}",
        login.transcript(),
        audit_text(&scratch)
    );
    assert!(login.succeeded(), "{ctx}");
    let sent = outbox.all();
    assert_eq!(sent.len(), 1, "{sent:?}\n{ctx}");
    assert_eq!(sent[0].to, NUMBER, "{ctx}");

    // The number is the directory's: without it, the same login fails
    // and sends nothing.
    s.modify(&format!(
        "dn: uid={USER},{}\nchangetype: modify\ndelete: mobile\n",
        s.people()
    ));
    let login = sshd.login(USER, PASSWORD, Some(&outbox.path), CodeAnswer::Right);
    assert!(login.refused(), "{}", login.transcript());
    assert_eq!(outbox.count(), 1, "{}", login.transcript());
}

/// The directory's `preferredLanguage` (issue #22): alice's entry says
/// German, so her prompt and SMS are German; `language_attribute = ""`
/// turns that off.
#[test]
fn preferred_language_from_the_directory_picks_the_messages() {
    let s = Slapd::start();
    s.modify(&format!(
        "dn: uid=alice,{}\nchangetype: modify\nadd: preferredLanguage\npreferredLanguage: de\n",
        s.people()
    ));
    let mut env = PamEnv::new();
    std::fs::create_dir_all(env.scratch.path("messages")).unwrap();
    let top = format!(
        "[messages]\ndir = \"{}\"\n",
        env.scratch.path("messages").display()
    );
    write_config(&env.scratch, &top, &[ldap_table(&s, &[s.url_ldaps()], "")]);
    let svc = env.smsotp_service("ldap-lang", "");
    let outbox = env.scratch.outbox();
    let mut login = env.login(&svc, "alice");
    login
        .password()
        .expect_text("Code an ******5678 gesendet.")
        .expect_prompt("SMS-Code: ");
    let sms = login.answer_code_from_outbox(&outbox, 0);
    login.finish().assert_success();
    assert!(
        sms.message.contains("ist Ihr Anmeldecode"),
        "{}",
        sms.message
    );

    write_config(
        &env.scratch,
        &top,
        &[ldap_table(
            &s,
            &[s.url_ldaps()],
            "language_attribute = \"\"",
        )],
    );
    login_with_code(&env, &svc, "alice", ALICE_MOBILE, 1);
}
