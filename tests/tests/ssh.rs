//! Real SSH logins: OpenSSH sshd on a loopback port with keyboard-interactive
//! and a PAM stack of password (pam_matrix) then pam_smsotp; the client is
//! paramiko, reading the texted code from the outbox.
//!
//! Needs root and Debian's openssh-server, libpam-wrapper, python3-paramiko.
//! See tests/src/sshd.rs for how sshd is started and cleaned up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::time::Duration;

use smsotp_e2e::sshd::{ensure_user, CodeAnswer, Login, Sshd, SshdSetup};
use smsotp_e2e::{module_path, Scratch};

const USER: &str = "smsotp-ssh-t1";
const PASSWORD: &str = "correct horse battery";
/// libphonenumber's own example US number: the module validates numbers, and
/// the fictional 555-01xx range (+1 555 010 0123) is rejected as invalid.
const PHONE: &str = "+12015550123";
const MAX_ATTEMPTS: usize = 3;

/// The module's code prompt. sshd puts PAM info messages that came before a
/// prompt in front of its text ("Code sent to ******0123.\nSMS code: "), so
/// prompts are matched by their end.
const CODE_PROMPT: &str = "SMS code: ";

fn code_prompts(login: &Login) -> usize {
    login
        .prompts()
        .iter()
        .filter(|p| p.ends_with(CODE_PROMPT))
        .count()
}

/// Whether the user was shown `text`, as a prompt or as an instruction.
fn shown(login: &Login, text: &str) -> bool {
    login
        .prompts()
        .iter()
        .chain(&login.infos())
        .any(|p| p.contains(text))
}

/// sshd whose stack is pam_matrix (password) then pam_smsotp with a config
/// in `scratch` that sends by outbox.
fn sshd_with_module(scratch: &Scratch) -> Sshd {
    ensure_user(USER);
    scratch.phones(&[(USER, PHONE)]);
    let config = scratch.config(&format!("[otp]\nmax_attempts = {MAX_ATTEMPTS}\n"));
    Sshd::start(
        &SshdSetup::new(USER, PASSWORD)
            .then_required(&module_path(), &format!("config={}", config.display())),
    )
}

/// What explains a failure: the client's transcript and the module's audit
/// file (if the test has a scratch dir). sshd's log is printed by its guard
/// when a test panics.
fn context(login: &Login, scratch: Option<&Scratch>) -> String {
    let audit = scratch
        .and_then(|s| std::fs::read_to_string(s.path("audit.jsonl")).ok())
        .unwrap_or_default();
    format!("{}\n---- audit.jsonl ----\n{audit}", login.transcript())
}

/// The harness alone (no pam_smsotp): proves sshd, PAM service naming and
/// the client work, so a failure below points at the module.
#[test]
fn password_only_stack_logs_in() {
    ensure_user(USER);
    let sshd = Sshd::start(&SshdSetup::new(USER, PASSWORD));
    let login = sshd.login(USER, PASSWORD, None, CodeAnswer::None);
    assert!(login.succeeded(), "{}", context(&login, None));
    assert_eq!(login.prompts(), ["Password: "], "{}", context(&login, None));

    let bad = sshd.login(USER, "wrong", None, CodeAnswer::None);
    assert!(bad.refused(), "{}", context(&bad, None));
}

#[test]
fn right_code_logs_in() {
    let scratch = Scratch::new();
    let sshd = sshd_with_module(&scratch);
    let outbox = scratch.outbox();

    let login = sshd.login(USER, PASSWORD, Some(&outbox.path), CodeAnswer::Right);
    let ctx = context(&login, Some(&scratch));
    assert!(login.succeeded(), "login failed:\n{ctx}");

    let prompts = login.prompts();
    assert_eq!(
        prompts.first().map(String::as_str),
        Some("Password: "),
        "{ctx}"
    );
    assert_eq!(code_prompts(&login), 1, "one code prompt expected:\n{ctx}");
    let sent = outbox.all();
    assert_eq!(sent.len(), 1, "exactly one SMS expected: {sent:?}\n{ctx}");
    assert_eq!(sent[0].to, PHONE, "{ctx}");
    assert!(
        shown(&login, "******0123"),
        "the masked number was not shown:\n{ctx}"
    );
}

#[test]
fn wrong_code_is_refused() {
    let scratch = Scratch::new();
    let sshd = sshd_with_module(&scratch);
    let outbox = scratch.outbox();

    let login = sshd.login(USER, PASSWORD, Some(&outbox.path), CodeAnswer::Wrong);
    let ctx = context(&login, Some(&scratch));
    assert!(login.refused(), "wrong code was not refused:\n{ctx}");
    // Every try was used, each answered with a (wrong) code, never empty
    // (an empty answer asks for a new code instead).
    assert_eq!(code_prompts(&login), MAX_ATTEMPTS, "{ctx}");
    assert!(
        login.of("answer").all(|a| a["kind"] != "empty"),
        "the client had to give an empty answer:\n{ctx}"
    );
    assert!(shown(&login, "tries left"), "no tries-left message:\n{ctx}");
    let sent = outbox.all();
    assert_eq!(
        sent.len(),
        1,
        "one SMS for the whole challenge: {sent:?}\n{ctx}"
    );
    assert_eq!(sent[0].to, PHONE, "{ctx}");
    // sshd logs the PAM failure for the user.
    let failed = format!("Failed keyboard-interactive/pam for {USER}");
    assert!(
        sshd.wait_log(&failed, Duration::from_secs(5)),
        "sshd did not log {failed:?}:\n{ctx}"
    );
}

#[test]
fn wrong_password_sends_no_sms() {
    let scratch = Scratch::new();
    let sshd = sshd_with_module(&scratch);
    let outbox = scratch.outbox();

    let login = sshd.login(
        USER,
        "not the password",
        Some(&outbox.path),
        CodeAnswer::Right,
    );
    let ctx = context(&login, Some(&scratch));
    assert!(login.refused(), "{ctx}");
    assert_eq!(code_prompts(&login), 0, "{ctx}");
    // The refusal came after the PAM stack returned, so anything it sent is
    // in the outbox already.
    assert_eq!(
        outbox.count(),
        0,
        "an SMS was sent after a wrong password:\n{ctx}"
    );
}
