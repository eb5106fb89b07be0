//! Enrollment (`no_phone = "enroll"`) and backup codes end to end: through
//! pamtester with the built PAM module, and through smsotp-radiusd's
//! Access-Challenge rounds. Backup codes are made with the built `smsotp`
//! tool. Needs what tests/pam.rs and tests/radius.rs need, and
//! `cargo build --workspace`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::path::PathBuf;
use std::process::Command;

use smsotp_e2e::pamenv::PamEnv;
use smsotp_e2e::radiusd::{code, ClientSpec, Nas, Radiusd, Request, ServerSpec};
use smsotp_e2e::{workspace_root, Scratch};

const ALICE_PHONE: &str = "+12015550123";
const SECRET: &str = "e2e-secret-enroll-4411";
const NAS_PASSWORD: &str = "nas-pw-5521";

fn cli(config: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let out = Command::new(target.join("debug/smsotp"))
        .arg("--json")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run smsotp");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "smsotp {args:?}: {e}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn backup_codes(config: &std::path::Path, user: &str, n: &str) -> Vec<String> {
    cli(config, &["backup-codes", "generate", user, "--count", n])["codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

// --------------------------------------------------------------------- PAM

#[test]
fn pam_enrollment_registers_the_number_after_its_code() {
    let mut env = PamEnv::new();
    env.scratch.phones(&[("alice", ALICE_PHONE)]);
    env.scratch.config(
        "[policy]\nno_phone = \"enroll\"\n[phone]\ndefault_region = \"US\"\nallowed_countries = [\"US\"]\n",
    );
    let svc = env.smsotp_service("enroll-pam", "");
    let outbox = env.scratch.outbox();
    let mut login = env.login(&svc, "bob");
    login
        .password()
        .expect_text("Enter your mobile number")
        .expect_prompt("Mobile number for SMS codes")
        .answer("+49 30 1234567")
        .expect_text("cannot receive codes here")
        .expect_prompt("Mobile number for SMS codes")
        .answer("(201) 555-0177")
        .expect_text("Code sent to ******0177")
        .expect_prompt("SMS code");
    let sms = login.answer_code_from_outbox(&outbox, 0);
    assert_eq!(sms.to, "+12015550177");
    let out = login.finish();
    out.assert_success().assert_saw("now registered");
    let j = cli(&env.config_path(), &["user", "show", "bob"]);
    assert_eq!(j["phone"], "******0177", "{j}");
    assert_eq!(j["source"], "store (set by enroll:enroll-pam)");

    // The next login sends to it without asking.
    let mut login = env.login(&svc, "bob");
    login
        .password()
        .expect_text("Code sent to ******0177.")
        .expect_prompt("SMS code");
    login.answer_code_from_outbox(&outbox, 1);
    login.finish().assert_success();
}

#[test]
fn pam_enrollment_with_a_wrong_code_registers_nothing() {
    let mut env = PamEnv::new();
    env.scratch
        .config("[policy]\nno_phone = \"enroll\"\n[otp]\nmax_attempts = 1\n");
    let svc = env.smsotp_service("enroll-wrong", "");
    let mut login = env.login(&svc, "bob");
    login
        .password()
        .expect_prompt("Mobile number for SMS codes")
        .answer("+12015550177")
        .expect_prompt("SMS code")
        .answer("000000");
    login.finish().assert_failure();
    let j = cli(&env.config_path(), &["user", "show", "bob"]);
    assert_eq!(j["phone"], serde_json::Value::Null, "{j}");
}

#[test]
fn pam_backup_code_in_place_of_the_sms_code() {
    let mut env = PamEnv::new();
    env.scratch.phones(&[("alice", ALICE_PHONE)]);
    env.scratch.config("");
    let svc = env.smsotp_service("backup-pam", "");
    let codes = backup_codes(&env.config_path(), "alice", "3");
    let mut login = env.login(&svc, "alice");
    login
        .password()
        .expect_text("Code sent to ******0123.")
        .expect_prompt("SMS code")
        .answer(&codes[0]);
    login
        .finish()
        .assert_success()
        .assert_saw("Backup code accepted; 2 left.");
    // Used once only.
    let mut login = env.login(&svc, "alice");
    login
        .password()
        .expect_prompt("SMS code")
        .answer(&codes[0])
        .expect_text("Wrong code");
    login.abort();
    // No number at all, no_phone = "deny": a backup code still works.
    let codes = backup_codes(&env.config_path(), "bob", "1");
    let mut login = env.login(&svc, "bob");
    login
        .password()
        .expect_text("Enter one of your backup codes")
        .expect_prompt("Backup code")
        .answer(&codes[0]);
    login.finish().assert_success().assert_saw("0 left");
}

#[test]
fn pam_concurrent_use_of_one_backup_code_succeeds_once() {
    let mut env = PamEnv::new();
    env.scratch.phones(&[("alice", ALICE_PHONE)]);
    env.scratch.config("");
    let svc = env.smsotp_service("backup-race", "");
    let codes = backup_codes(&env.config_path(), "alice", "2");
    let mut a = env.login(&svc, "alice");
    let mut b = env.login(&svc, "alice");
    a.password().expect_prompt("SMS code");
    b.password().expect_prompt("SMS code");
    a.answer(&codes[1]);
    b.answer(&codes[1]);
    let (ra, rb) = (a.finish(), b.finish());
    assert_eq!(
        [ra.success, rb.success].iter().filter(|s| **s).count(),
        1,
        "exactly one login wins\n{ra}\n{rb}"
    );
}

// ------------------------------------------------------------------ RADIUS

fn radius(extra: &str) -> (Scratch, Radiusd, Nas) {
    let scratch = Scratch::new();
    scratch.phones(&[("alice", ALICE_PHONE)]);
    let srv = Radiusd::start(
        &scratch,
        ServerSpec::new(vec![ClientSpec::new("vpn", "127.0.0.1", SECRET)]).extra(extra),
    );
    let nas = Nas::new(
        "127.0.0.1".parse().unwrap(),
        format!("127.0.0.1:{}", srv.port).parse().unwrap(),
        SECRET,
    );
    (scratch, srv, nas)
}

#[test]
fn radius_enrollment_through_challenges() {
    let (scratch, srv, nas) = radius("[policy]\nno_phone = \"enroll\"\n");
    let outbox = scratch.outbox();
    let first = nas.exchange(
        &Request::access(nas.id()).user("bob").password(NAS_PASSWORD),
        &|| srv.context(),
    );
    assert_eq!(first.code(), code::ACCESS_CHALLENGE, "{}", srv.context());
    assert!(
        first.message().contains("Enter your mobile number"),
        "{}",
        first.message()
    );
    let state = first.state();
    let bad = nas.exchange(
        &Request::access(nas.id())
            .user("bob")
            .password("not a number")
            .state(&state),
        &|| srv.context(),
    );
    assert_eq!(bad.code(), code::ACCESS_CHALLENGE);
    assert_eq!(bad.state(), state, "the State binds every step");
    let second = nas.exchange(
        &Request::access(nas.id())
            .user("bob")
            .password("+12015550177")
            .state(&state),
        &|| srv.context(),
    );
    assert_eq!(second.code(), code::ACCESS_CHALLENGE, "{}", srv.context());
    assert!(
        second.message().contains("Code sent to ******0177"),
        "{}",
        second.message()
    );
    let sms = outbox.wait_beyond(0, std::time::Duration::from_secs(5));
    assert_eq!(sms.to, "+12015550177");
    // The State of another user does not carry the enrollment.
    let other = nas.exchange(
        &Request::access(nas.id())
            .user("carol")
            .password(&sms.code())
            .state(&state),
        &|| srv.context(),
    );
    assert_eq!(other.code(), code::ACCESS_REJECT);
    let last = nas.exchange(
        &Request::access(nas.id())
            .user("bob")
            .password(&sms.code())
            .state(&state),
        &|| srv.context(),
    );
    assert_eq!(last.code(), code::ACCESS_ACCEPT, "{}", srv.context());
    assert!(last.message().contains("registered"), "{}", last.message());
    let j = cli(&scratch.path("smsotp.toml"), &["user", "show", "bob"]);
    assert_eq!(j["phone"], "******0177", "{j}");
    assert_eq!(j["source"], "store (set by enroll:radius:vpn)");
}

#[test]
fn radius_backup_code_in_the_second_round() {
    let (scratch, srv, nas) = radius("");
    let codes = backup_codes(&scratch.path("smsotp.toml"), "alice", "2");
    let first = nas.exchange(
        &Request::access(nas.id())
            .user("alice")
            .password(NAS_PASSWORD),
        &|| srv.context(),
    );
    assert_eq!(first.code(), code::ACCESS_CHALLENGE);
    let state = first.state();
    let reply = nas.exchange(
        &Request::access(nas.id())
            .user("alice")
            .password(&codes[0])
            .state(&state),
        &|| srv.context(),
    );
    assert_eq!(reply.code(), code::ACCESS_ACCEPT, "{}", srv.context());
    assert_eq!(
        reply.message(),
        "Backup code accepted; 1 left. Ask your administrator for new ones."
    );
    // Reused: refused.
    let first = nas.exchange(
        &Request::access(nas.id())
            .user("alice")
            .password(NAS_PASSWORD),
        &|| srv.context(),
    );
    let again = nas.exchange(
        &Request::access(nas.id())
            .user("alice")
            .password(&codes[0])
            .state(&first.state()),
        &|| srv.context(),
    );
    assert_eq!(
        again.code(),
        code::ACCESS_CHALLENGE,
        "a wrong code, tries left"
    );
}
