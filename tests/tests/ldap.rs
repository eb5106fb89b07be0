//! LDAP / Active Directory as a directory (issue #18), against a private
//! OpenLDAP slapd ([`smsotp_e2e::slapd`]).
//!
//! The first tests check the harness itself with OpenLDAP's own tools
//! (ldap-utils), not our product: that the server starts and stops within
//! bounds, that both TLS paths work with the test CA and fail with the
//! wrong one, and that the access control is what the product's tests will
//! rely on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use smsotp_e2e::slapd::{
    run_tool, run_tool_input, Slapd, ToolRun, ALICE_MOBILE, BOB_VERIFIED, DAVE_MOBILE, ERIN_MOBILE,
    START_TIMEOUT,
};
use smsotp_e2e::{closed_port, BlackHole};

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
