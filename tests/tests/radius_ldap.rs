//! smsotp-radiusd with `primary = { kind = "ldap" }` (issue #18 points 3
//! and 7): the password is checked by a bind to a private OpenLDAP slapd
//! ([`smsotp_e2e::slapd`]) over ldaps:// with the test CA, and the number
//! comes from the same `[[directory]] kind = "ldap"`.
//!
//! Each test starts its own slapd and server (on free loopback ports) and
//! keeps the [`Slapd`] guard on its own thread; both stop when dropped.
//! Needs the Debian packages `slapd ldap-utils` and a built server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::time::{Duration, Instant};

use smsotp_e2e::pamenv::audit_lines;
use smsotp_e2e::radiusd::{
    assert_medians_alike, code, median_times, ClientSpec, Nas, Primary, Radiusd, Reply, Request,
    ServerSpec,
};
use smsotp_e2e::slapd::{Slapd, ALICE_MOBILE, DAVE_MOBILE, PEOPLE, SERVICE_DN};
use smsotp_e2e::{closed_port, BlackHole, Outbox, Scratch};

const SECRET: &str = "e2e-secret-L-4b7e";
const SMS_WAIT: Duration = Duration::from_secs(5);
const LOG_WAIT: Duration = Duration::from_secs(5);

/// `[[directory]] kind = "ldap"` for `url`, over TLS with the test CA,
/// bound as the service account, searching under ou=people; `extra` adds
/// keys. No cache: every lookup asks the server.
fn directory(s: &Slapd, url: &str, extra: &str) -> String {
    format!(
        "[[directory]]\nkind = \"ldap\"\nurls = [\"{url}\"]\nca_file = \"{}\"\n\
         bind_dn = \"{SERVICE_DN}\"\nbind_password_file = \"{}\"\nbase = \"{PEOPLE}\"\n\
         cache_ttl = \"0s\"\n{extra}\n",
        s.ca_file().display(),
        s.service_password_file().display(),
    )
}

/// A server with one challenge-mode client ("vpn" on 127.0.0.1), the
/// given `[[directory]]` tables and an LDAP primary.
fn start(directories: &str, primary: Primary) -> (Scratch, Radiusd, Nas) {
    let scratch = Scratch::new();
    let spec = ServerSpec::new(vec![ClientSpec::new("vpn", "127.0.0.1", SECRET)])
        .extra(directories)
        .primary(primary);
    let srv = Radiusd::start(&scratch, spec);
    let nas = srv.nas("127.0.0.1", "vpn");
    (scratch, srv, nas)
}

fn ldap() -> Primary {
    Primary::Ldap { directory: None }
}

/// Access-Request(user, password), the reply checked (authenticators).
fn ask(srv: &Radiusd, nas: &Nas, user: &str, password: &str) -> Reply {
    let req = Request::access(nas.id()).user(user).password(password);
    nas.exchange(&req, &|| srv.context())
}

fn assert_code(reply: &Reply, expected: u8, what: &str, srv: &Radiusd, s: &Slapd) {
    assert_eq!(
        reply.code(),
        expected,
        "{what}: expected {}, got {}\n{}\n--- slapd ---\n{}",
        code::name(expected),
        reply.packet.describe(),
        srv.context(),
        tail(&s.log())
    );
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A login that must pass: Challenge with a State, an SMS to `phone`,
/// then the code is accepted.
fn logs_in(srv: &Radiusd, nas: &Nas, outbox: &Outbox, s: &Slapd, user: &str, phone: &str) {
    let seen = outbox.count();
    let first = ask(srv, nas, user, s.user_password(user));
    assert_code(&first, code::ACCESS_CHALLENGE, "right password", srv, s);
    let sms = outbox.wait_beyond(seen, SMS_WAIT);
    assert_eq!(sms.to, phone, "the number from the directory");
    let req = Request::access(nas.id())
        .user(user)
        .password(&sms.code())
        .state(&first.state());
    let second = nas.exchange(&req, &|| srv.context());
    assert_code(&second, code::ACCESS_ACCEPT, "right code", srv, s);
}

/// A login that must fail at the password: Access-Reject, no SMS. Returns
/// the Reply-Message (empty when there is none).
fn refused(srv: &Radiusd, nas: &Nas, outbox: &Outbox, s: &Slapd, user: &str, pw: &str) -> String {
    let seen = outbox.count();
    let r = ask(srv, nas, user, pw);
    assert_code(&r, code::ACCESS_REJECT, &format!("{user}: refused"), srv, s);
    assert_eq!(
        outbox.count(),
        seen,
        "{user}: no SMS for a refused password"
    );
    r.message()
}

/// The bind requests slapd logged (`-d stats`: `BIND dn="…" method=128`;
/// a bind that succeeds adds a second line with `mech=`, not counted).
fn binds(s: &Slapd) -> Vec<String> {
    s.log()
        .lines()
        .filter(|l| l.contains(" BIND dn=") && l.contains(" method="))
        .map(str::to_owned)
        .collect()
}

/// Waits until slapd has logged at least `n` BIND lines.
fn wait_binds(s: &Slapd, n: usize) -> Vec<String> {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let b = binds(s);
        if b.len() >= n || Instant::now() >= deadline {
            return b;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The audit lines about `user`'s refused password.
fn bad_password_lines(scratch: &Scratch, user: &str) -> Vec<serde_json::Value> {
    audit_lines(scratch)
        .into_iter()
        .filter(|l| l["user"] == user && l["reason"] == "bad_password")
        .collect()
}

#[test]
fn ldap_primary_right_password_gets_a_code_to_the_ldap_mobile() {
    let s = Slapd::start();
    let (scratch, srv, nas) = start(&directory(&s, &s.url_ldaps(), ""), ldap());
    let outbox = scratch.outbox();
    logs_in(&srv, &nas, &outbox, &s, "alice", ALICE_MOBILE);
    // slapd saw the service bind, then alice's own bind.
    let b = wait_binds(&s, 2);
    assert!(
        b.iter()
            .any(|l| l.contains(&format!("dn=\"{SERVICE_DN}\"")))
            && b.iter()
                .any(|l| l.contains(&format!("dn=\"{}\"", s.user_dn("alice")))),
        "expected a service bind and alice's bind:\n{}",
        b.join("\n")
    );
    let log = srv.log();
    assert!(
        !log.contains(s.user_password("alice")),
        "password logged:\n{log}"
    );
}

#[test]
fn ldap_primary_wrong_password_and_unknown_user_look_the_same() {
    let s = Slapd::start();
    let (scratch, srv, nas) = start(&directory(&s, &s.url_ldaps(), ""), ldap());
    let outbox = scratch.outbox();
    let wrong_pw = "not-alice-Pw-99";
    let wrong = refused(&srv, &nas, &outbox, &s, "alice", wrong_pw);
    let unknown = refused(&srv, &nas, &outbox, &s, "mallory", "mallory-Pw-77");
    // carol exists but has no number: her wrong password is refused the
    // same way, before any lookup of a number.
    let no_phone = refused(&srv, &nas, &outbox, &s, "carol", wrong_pw);
    assert_eq!(wrong, unknown, "the NAS cannot tell them apart");
    assert_eq!(wrong, no_phone);
    // The same audit line for each: a bad password, nothing more.
    for user in ["alice", "mallory", "carol"] {
        let lines = bad_password_lines(&scratch, user);
        assert_eq!(lines.len(), 1, "{user}: {lines:#?}\n{}", srv.context());
        assert_eq!(lines[0]["event"], "reject", "{user}: {:#}", lines[0]);
    }
    // The right password still works afterwards (the failures did not
    // poison anything), and nothing secret was logged.
    logs_in(&srv, &nas, &outbox, &s, "alice", ALICE_MOBILE);
    let log = srv.log();
    let audit = std::fs::read_to_string(scratch.path("audit.jsonl")).unwrap_or_default();
    for secret in [
        wrong_pw,
        "mallory-Pw-77",
        s.user_password("alice"),
        "12345678",
    ] {
        assert!(!log.contains(secret), "stderr holds {secret:?}:\n{log}");
        assert!(!audit.contains(secret), "audit holds {secret:?}:\n{audit}");
    }
}

/// Issue #20 point 6, timing: a wrong password, an unknown user (bound
/// as a decoy DN) and a user without a number take the same time to be
/// refused (medians of 30 interleaved tries within a factor of two).
#[test]
fn ldap_primary_refusals_take_the_same_time() {
    let s = Slapd::start();
    let (scratch, srv, nas) = start(&directory(&s, &s.url_ldaps(), ""), ldap());
    let outbox = scratch.outbox();
    let ask = |user: &str| {
        let r = ask(&srv, &nas, user, "not-the-Pw-31");
        assert_code(&r, code::ACCESS_REJECT, user, &srv, &s);
    };
    let cases: [(&str, &dyn Fn()); 3] = [
        ("a wrong password (alice)", &|| ask("alice")),
        ("no number (carol)", &|| ask("carol")),
        ("an unknown user (mallory)", &|| ask("mallory")),
    ];
    let medians = median_times(30, &cases);
    assert_medians_alike(&cases, &medians, &srv.context());
    assert_eq!(outbox.count(), 0, "no SMS for a wrong password");
}

#[test]
fn ldap_primary_empty_password_is_refused_before_any_bind() {
    let s = Slapd::start();
    let (scratch, srv, nas) = start(&directory(&s, &s.url_ldaps(), ""), ldap());
    let outbox = scratch.outbox();
    let before = binds(&s).len();
    refused(&srv, &nas, &outbox, &s, "alice", "");
    // A marker: a wrong password takes two binds (service, then alice).
    // Once they are in slapd's log, anything the empty password caused
    // would be there before them.
    refused(&srv, &nas, &outbox, &s, "alice", "not-alice-Pw-99");
    let after = wait_binds(&s, before + 2);
    assert_eq!(
        after.len(),
        before + 2,
        "the empty password reached slapd (or the marker did not):\n{}",
        after[before..].join("\n")
    );
    let user_binds = after[before..]
        .iter()
        .filter(|l| l.contains(&s.user_dn("alice")))
        .count();
    assert_eq!(user_binds, 1, "{}", after[before..].join("\n"));
    // The empty password is refused like a wrong one.
    assert_eq!(bad_password_lines(&scratch, "alice").len(), 2);
}

#[test]
fn ldap_primary_active_directory_refuses_a_disabled_account() {
    let s = Slapd::start();
    // The test schema has no objectCategory, so the preset's filter is
    // narrowed to what the seeded AD-style entries carry.
    let ad = directory(
        &s,
        &s.url_ldaps(),
        "name = \"ad\"\npreset = \"active_directory\"\n\
         filter = \"(&(objectClass=user)(sAMAccountName={user}))\"\n",
    );
    let (scratch, srv, nas) = start(
        &ad,
        Primary::Ldap {
            directory: Some("ad".into()),
        },
    );
    let outbox = scratch.outbox();
    logs_in(&srv, &nas, &outbox, &s, "dave", DAVE_MOBILE);
    // erin (userAccountControl 514) with her right password: no bind as
    // her at all, and the same answer as a wrong password.
    let before = binds(&s).len();
    let disabled = refused(&srv, &nas, &outbox, &s, "erin", s.user_password("erin"));
    let wrong = refused(&srv, &nas, &outbox, &s, "dave", "not-dave-Pw-99");
    assert_eq!(disabled, wrong);
    let after = wait_binds(&s, before + 3);
    assert!(
        !after[before..].iter().any(|l| l.contains("Erin Example")),
        "erin was bound as:\n{}",
        after[before..].join("\n")
    );
    assert_eq!(bad_password_lines(&scratch, "erin").len(), 1);
}

#[test]
fn ldap_primary_user_dn_template_binds_as_the_templated_dn() {
    let s = Slapd::start();
    let dir = directory(
        &s,
        &s.url_ldaps(),
        &format!("user_dn = \"uid={{user}},{PEOPLE}\"\n"),
    );
    let (scratch, srv, nas) = start(&dir, ldap());
    let outbox = scratch.outbox();
    logs_in(&srv, &nas, &outbox, &s, "alice", ALICE_MOBILE);
    refused(&srv, &nas, &outbox, &s, "alice", "not-alice-Pw-99");
    // An unknown name makes a DN that does not exist: refused the same.
    refused(&srv, &nas, &outbox, &s, "mallory", "mallory-Pw-77");
    // A name with DN specials is escaped, not spliced into the DN.
    refused(&srv, &nas, &outbox, &s, "x,ou=services", "whatever-Pw-1");
    let b = binds(&s);
    assert!(
        b.iter().any(|l| l.contains("uid=x\\,ou\\=services")
            || l.contains("uid=x\\2Cou\\3Dservices")
            || l.contains("uid=x\\2cou\\3dservices")),
        "no escaped bind DN in slapd's log:\n{}",
        b.join("\n")
    );
}

#[test]
fn ldap_primary_unreachable_directory_fails_closed_and_says_why() {
    // Nothing listens on the port: the connection is refused.
    let s = Slapd::start();
    let url = format!("ldaps://127.0.0.1:{}", closed_port());
    let (scratch, srv, nas) = start(&directory(&s, &url, "connect_timeout = \"1s\"\n"), ldap());
    let outbox = scratch.outbox();
    let mark = srv.log_mark();
    refused(&srv, &nas, &outbox, &s, "alice", s.user_password("alice"));
    let found = srv.wait_log("cannot connect to", mark, LOG_WAIT);
    assert!(found.is_some(), "no cause in the log:\n{}", srv.context());
    let log = srv.log();
    let line = log[mark..]
        .lines()
        .find(|l| l.contains("cannot connect to"))
        .unwrap_or_default();
    assert!(
        line.contains("ldap directory") && line.contains(&url),
        "{line}"
    );
    assert!(
        !log.contains(s.user_password("alice")),
        "password logged:\n{log}"
    );

    // A server that accepts and never answers: the TLS handshake times out.
    let hole = BlackHole::start();
    let url = format!("ldaps://127.0.0.1:{}", hole.port);
    let (scratch, srv, nas) = start(&directory(&s, &url, "timeout = \"1s\"\n"), ldap());
    let outbox = scratch.outbox();
    let mark = srv.log_mark();
    refused(&srv, &nas, &outbox, &s, "alice", s.user_password("alice"));
    assert!(
        srv.wait_log("no answer within the timeout", mark, LOG_WAIT)
            .is_some(),
        "no timeout in the log:\n{}",
        srv.context()
    );
}
