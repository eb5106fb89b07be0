//! pam_smsotp.so end to end: the real module, driven by `pamtester` under
//! pam_wrapper (service files in a temp dir) and nss_wrapper (fake users and
//! groups), after pam_matrix has checked the password. No system file is
//! touched.
//!
//! Needs the Debian packages `pamtester libpam-wrapper libnss-wrapper` and a
//! built module (`cargo build -p pam_smsotp`, or `SMSOTP_PAM_MODULE=path`).
//! The `harness_*` tests check the harness itself with system modules only.
//!
//! Each test has its own scratch dir (config, store, outbox, audit) and its
//! own service names, so they run in parallel. Only `expired_code_*` sleeps
//! (31 s, the minimum ttl of 30 s plus one).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::time::{Duration, Instant};

use smsotp_e2e::pamenv::{audit_lines, Login, Outcome, PamEnv, LOGIN_TIMEOUT, PASSWORD};
use smsotp_e2e::wrong_code as wrong;

const ALICE_PHONE: &str = "+12015550123";
const CODE_SENT: &str = "Code sent to ******0123.";
const NEW_CODE_SENT: &str = "New code sent to ******0123.";
const PROMPT: &str = "SMS code";
const TRY_LATER: &str = "A code cannot be used for this login now. Try again later.";
/// The per-user limit's text, a whole hour's window just begun.
const LIMIT_REACHED: &str = "Too many codes were sent recently. Try again in about 60 minutes.";

/// Everyone but bob has a phone. The numbers are valid (libphonenumber's
/// US example 201-555-0123 and neighbours); +1 555 numbers are refused as
/// invalid, since 555 is no area code.
fn phones(env: &PamEnv) {
    env.scratch.phones(&[
        ("alice", ALICE_PHONE),
        ("carol", "+12015551123"),
        ("dave", "+12015552123"),
        ("erin", "+12015553123"),
    ]);
}

/// A scratch env with phones, the default config plus `extra`, and one
/// service `name` running pam_matrix then pam_smsotp.
fn setup(name: &str, extra: &str) -> (PamEnv, String) {
    let mut env = PamEnv::new();
    phones(&env);
    env.scratch.config(extra);
    let service = env.smsotp_service(name, "");
    (env, service)
}

/// Password, then the module says it sent a code and prompts for it.
fn up_to_code_prompt(env: &PamEnv, service: &str, user: &str) -> Login {
    let mut login = env.login(service, user);
    login
        .password()
        .expect_text(CODE_SENT)
        .expect_prompt(PROMPT);
    login
}

/// Every audit line has the expected keys, none holds a code or the full
/// number; returns the lines.
fn check_audit(env: &PamEnv, codes: &[String]) -> Vec<serde_json::Value> {
    let lines = audit_lines(&env.scratch);
    for line in &lines {
        for key in ["event", "user", "service", "outcome"] {
            assert!(line.get(key).is_some(), "audit line lacks {key:?}: {line}");
        }
        let text = line.to_string();
        assert!(
            !text.contains("2015550123"),
            "audit line holds a full phone number: {text}"
        );
        let mut words = Vec::new();
        collect_words(line, &mut words);
        for code in codes {
            assert!(
                !words.iter().any(|w| w == code),
                "audit line holds the code {code}: {text}"
            );
        }
    }
    lines
}

/// Alphanumeric words of every string and number in `v`, except time stamps
/// (whose fractions could look like a code).
fn collect_words(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.extend(
            s.split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_owned),
        ),
        serde_json::Value::Number(n) => out.push(n.to_string()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_words(x, out)),
        serde_json::Value::Object(m) => m
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "at" | "time" | "ts" | "timestamp"))
            .for_each(|(_, x)| collect_words(x, out)),
        _ => {}
    }
}

/// The audit has at least one line about `user` on `service`.
fn audit_mentions(lines: &[serde_json::Value], user: &str, service: &str) {
    assert!(
        lines
            .iter()
            .any(|l| l["user"] == user && l["service"] == service),
        "no audit line for user {user} on {service}: {lines:#?}"
    );
}

fn assert_no_prompt(out: &Outcome) {
    out.assert_not_saw(PROMPT).assert_not_saw("Code sent");
}

// ------------------------------------------------------------------ harness

#[test]
fn harness_password_then_permit() {
    let mut env = PamEnv::new();
    let lines = [
        env.matrix_line(),
        env.system_line("required", "pam_permit.so", ""),
    ];
    let svc = env.service("h-permit", &lines);
    let mut login = env.login(&svc, "alice");
    login.password();
    let out = login.finish();
    out.assert_success();
    assert_eq!(out.pam_result(), Some("successfully authenticated"));
    assert!(out.dialog.contains(&format!("«{PASSWORD}»")), "{out}");
}

#[test]
fn harness_wrong_password_fails() {
    let mut env = PamEnv::new();
    let lines = [
        env.matrix_line(),
        env.system_line("required", "pam_permit.so", ""),
    ];
    let svc = env.service("h-wrongpw", &lines);
    let mut login = env.login(&svc, "alice");
    login.expect_prompt("Password").answer("not-the-password");
    let out = login.finish();
    out.assert_failure();
    assert_eq!(out.pam_result(), Some("Authentication failure"));
}

#[test]
fn harness_deny_after_password_fails() {
    let mut env = PamEnv::new();
    let lines = [
        env.matrix_line(),
        env.system_line("required", "pam_deny.so", ""),
    ];
    let svc = env.service("h-deny", &lines);
    let mut login = env.login(&svc, "alice");
    login.password();
    login.finish().assert_failure();
}

#[test]
fn harness_unknown_service_is_denied() {
    let env = PamEnv::new();
    let mut login = env.login("h-no-such-service", "alice");
    login.close_stdin();
    login.finish().assert_failure();
}

/// nss_wrapper's group file is what modules see: dave is a listed member of
/// svc-backup, erin has it as primary group, alice is in neither.
#[test]
fn harness_nss_wrapper_groups() {
    let mut env = PamEnv::new();
    let lines = [
        env.matrix_line(),
        env.system_line("required", "pam_succeed_if.so", "user ingroup svc-backup"),
    ];
    let svc = env.service("h-groups", &lines);
    for (user, ok) in [("dave", true), ("erin", true), ("alice", false)] {
        let mut login = env.login(&svc, user);
        login.password();
        let out = login.finish();
        assert_eq!(out.success, ok, "{user}: {out}");
    }
}

#[test]
fn harness_watchdog_kills_a_hung_login() {
    let mut env = PamEnv::new();
    let lines = [
        env.matrix_line(),
        env.system_line("required", "pam_permit.so", ""),
    ];
    let svc = env.service("h-hang", &lines);
    let started = Instant::now();
    let mut login = env.login_with_timeout(&svc, "alice", Duration::from_secs(1));
    login.expect_prompt("Password");
    // Never answer, never close stdin.
    let out = login.wait();
    assert!(out.timed_out && !out.success, "{out}");
    assert!(out.signal.is_some(), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
#[should_panic(expected = "expected text \"SMS code\"")]
fn harness_expect_fails_fast_when_the_text_never_comes() {
    let mut env = PamEnv::new();
    let lines = [
        env.matrix_line(),
        env.system_line("required", "pam_deny.so", ""),
    ];
    let svc = env.service("h-panic", &lines);
    let mut login = env.login(&svc, "alice");
    login.password().expect_text("SMS code");
}

// --------------------------------------------------------------- the module

#[test]
fn right_code_succeeds() {
    let (env, svc) = setup("e2e-right", "");
    let outbox = env.scratch.outbox();
    let mut login = up_to_code_prompt(&env, &svc, "alice");
    let sms = login.answer_code_from_outbox(&outbox, 0);
    let out = login.finish();
    out.assert_success();
    assert_eq!(sms.to, ALICE_PHONE);
    assert_eq!(outbox.count(), 1, "exactly one SMS");
    let code = sms.code();
    assert!(
        !out.transcript.contains(&code),
        "the code was shown to the user: {out}"
    );
    assert!(
        !out.transcript.contains("201555"),
        "the full number was shown: {out}"
    );
    let audit = check_audit(&env, &[code]);
    audit_mentions(&audit, "alice", &svc);
}

#[test]
fn debug_argument_is_accepted() {
    let mut env = PamEnv::new();
    phones(&env);
    env.scratch.config("");
    let svc = env.smsotp_service("e2e-debug", "debug");
    let outbox = env.scratch.outbox();
    let mut login = up_to_code_prompt(&env, &svc, "alice");
    let sms = login.answer_code_from_outbox(&outbox, 0);
    let out = login.finish();
    out.assert_success();
    assert!(
        !out.transcript.contains(&sms.code()),
        "debug showed the code: {out}"
    );
    check_audit(&env, &[sms.code()]);
}

#[test]
fn a_used_code_is_refused_the_second_time() {
    let (env, svc) = setup("e2e-reuse", "");
    let outbox = env.scratch.outbox();
    let mut first = up_to_code_prompt(&env, &svc, "alice");
    let old = first.answer_code_from_outbox(&outbox, 0).code();
    first.finish().assert_success();

    let mut second = up_to_code_prompt(&env, &svc, "alice");
    let new = outbox.wait_beyond(1, Duration::from_secs(10)).code();
    if new == old {
        eprintln!("the two codes happen to be equal; nothing to check");
        return;
    }
    second.answer(&old).expect_text("Wrong code, 2 tries left.");
    second.expect_prompt(PROMPT).answer(&new);
    second.finish().assert_success();
    check_audit(&env, &[old, new]);
}

#[test]
fn wrong_codes_up_to_the_limit_fail() {
    let (env, svc) = setup("e2e-wrong", "");
    let outbox = env.scratch.outbox();
    let mut login = up_to_code_prompt(&env, &svc, "alice");
    let code = outbox.wait_beyond(0, Duration::from_secs(10)).code();
    let bad = wrong(&code);
    login.answer(&bad).expect_text("Wrong code, 2 tries left.");
    login
        .expect_prompt(PROMPT)
        .answer(&bad)
        .expect_text("Wrong code, 1 try left.");
    login
        .expect_prompt(PROMPT)
        .answer(&bad)
        .expect_text("Too many wrong codes.");
    let out = login.finish();
    out.assert_failure();
    out.assert_not_saw("0 tries left");
    let after = out
        .transcript
        .split("Too many wrong codes.")
        .nth(1)
        .unwrap_or_default();
    assert!(
        !after.contains(PROMPT),
        "prompted again after the last try: {out}"
    );
    assert_eq!(outbox.count(), 1, "no new SMS after wrong codes");
    let audit = check_audit(&env, &[code, bad]);
    audit_mentions(&audit, "alice", &svc);
}

#[test]
fn expired_code_is_refused_and_enter_sends_a_new_one() {
    let (env, svc) = setup(
        "e2e-expired",
        "[otp]\nttl = \"30s\"\nresend = { max = 2, cooldown = \"0s\" }\n",
    );
    let outbox = env.scratch.outbox();
    let mut login = env.login_with_timeout(&svc, "alice", Duration::from_secs(60));
    login
        .password()
        .expect_text(CODE_SENT)
        .expect_prompt(PROMPT);
    let old = outbox.wait_beyond(0, Duration::from_secs(10)).code();
    std::thread::sleep(Duration::from_secs(31));
    login
        .answer(&old)
        .expect_text("The code has expired. Press Enter for a new one.");
    login
        .expect_prompt(PROMPT)
        .answer("")
        .expect_text(NEW_CODE_SENT);
    login.expect_prompt(PROMPT);
    let new = login.answer_code_from_outbox(&outbox, 1).code();
    let out = login.finish();
    out.assert_success();
    assert_eq!(outbox.count(), 2, "one SMS at the start, one on Enter");
    check_audit(&env, &[old, new]);
}

#[test]
fn empty_answer_sends_a_new_code_and_the_old_one_stops_working() {
    let (env, svc) = setup(
        "e2e-resend",
        "[otp]\nresend = { max = 2, cooldown = \"0s\" }\n",
    );
    let outbox = env.scratch.outbox();
    let mut login = up_to_code_prompt(&env, &svc, "alice");
    let old = outbox.wait_beyond(0, Duration::from_secs(10));
    login.answer("").expect_text(NEW_CODE_SENT);
    let new = outbox.wait_beyond(1, Duration::from_secs(10));
    assert_eq!(new.to, ALICE_PHONE);
    login.expect_prompt(PROMPT);
    if old.code() != new.code() {
        login.answer(&old.code()).expect_text("Wrong code");
        login.expect_prompt(PROMPT);
    }
    login.answer(&new.code());
    let out = login.finish();
    out.assert_success();
    assert_eq!(outbox.count(), 2);
    check_audit(&env, &[old.code(), new.code()]);
}

#[test]
fn empty_answer_during_the_cooldown_sends_nothing() {
    // Default cooldown: 30 s.
    let (env, svc) = setup("e2e-cooldown", "");
    let outbox = env.scratch.outbox();
    let mut login = up_to_code_prompt(&env, &svc, "alice");
    login
        .answer("")
        .expect_text("Wait ")
        .expect_text(" before asking for a new code.");
    login.expect_prompt(PROMPT);
    assert_eq!(outbox.count(), 1, "no SMS during the cooldown");
    login.answer_code_from_outbox(&outbox, 0);
    let out = login.finish();
    out.assert_success().assert_not_saw(NEW_CODE_SENT);
    assert_eq!(outbox.count(), 1);
}

#[test]
fn exempt_user_gets_no_sms_and_the_rest_of_the_stack_decides() {
    let (env, svc) = setup("e2e-exempt-user", "[policy]\nexempt_users = [\"carol\"]\n");
    let outbox = env.scratch.outbox();

    let mut login = env.login(&svc, "carol");
    login.password();
    let out = login.finish();
    out.assert_success();
    assert_no_prompt(&out);

    let mut login = env.login(&svc, "carol");
    login.expect_prompt("Password").answer("not-the-password");
    let out = login.finish();
    out.assert_failure();
    assert_no_prompt(&out);
    assert_eq!(outbox.count(), 0, "no SMS for an exempt user");

    // Control: alice is not exempt.
    let login = up_to_code_prompt(&env, &svc, "alice");
    login.abort();
    assert_eq!(outbox.count(), 1);
    check_audit(&env, &[]);
}

fn exempt_group_case(svc: &str, user: &str) {
    let (env, svc) = setup(svc, "[policy]\nexempt_groups = [\"svc-backup\"]\n");
    let outbox = env.scratch.outbox();
    let mut login = env.login(&svc, user);
    login.password();
    let out = login.finish();
    out.assert_success();
    assert_no_prompt(&out);
    assert_eq!(outbox.count(), 0, "no SMS for a member of an exempt group");

    // Control: alice is in no exempt group.
    let login = up_to_code_prompt(&env, &svc, "alice");
    login.abort();
    assert_eq!(outbox.count(), 1);
    check_audit(&env, &[]);
}

#[test]
fn exempt_group_member_gets_no_sms() {
    exempt_group_case("e2e-exempt-group", "dave");
}

#[test]
fn exempt_group_as_primary_group_gets_no_sms() {
    exempt_group_case("e2e-exempt-pgroup", "erin");
}

#[test]
fn no_phone_deny_refuses() {
    let (env, svc) = setup("e2e-nophone-deny", "[policy]\nno_phone = \"deny\"\n");
    let mut login = env.login(&svc, "bob");
    login
        .password()
        .expect_text("No phone number is registered for this account. Contact your administrator.");
    let out = login.finish();
    out.assert_failure();
    assert_no_prompt(&out);
    assert_eq!(env.scratch.outbox().count(), 0);
    let audit = check_audit(&env, &[]);
    audit_mentions(&audit, "bob", &svc);
}

/// What `user` sees typing `password`, then nothing more (stdin closed at
/// the next prompt), with their name replaced by `USER`; the login must
/// fail.
fn refused_transcript(env: &PamEnv, svc: &str, user: &str, password: &str) -> String {
    let mut login = env.login(svc, user);
    login.expect_prompt("Password").answer(password);
    let out = login.finish();
    out.assert_failure();
    out.transcript.replace(user, "USER")
}

/// Issue #20 point 6: the second factor shows nothing before the password
/// is right (`requisite`): a wrong password of a user with a number
/// (alice), of one without (bob) and of a name the system does not know
/// read the same, and no code is asked for or sent. Enumeration by the
/// second factor would need the first.
#[test]
fn a_wrong_password_reads_the_same_for_any_user() {
    let (env, svc) = setup("e2e-enum-pw", "[policy]\nno_phone = \"deny\"\n");
    let alice = refused_transcript(&env, &svc, "alice", "not-the-password-7");
    for user in ["bob", "mallory"] {
        assert_eq!(
            refused_transcript(&env, &svc, user, "not-the-password-7"),
            alice,
            "{user} vs alice"
        );
    }
    assert!(
        !alice.contains(PROMPT) && !alice.contains("phone"),
        "{alice}"
    );
    assert_eq!(env.scratch.outbox().count(), 0);
    // pam_smsotp never ran: nothing in its audit.
    assert_eq!(audit_lines(&env.scratch), Vec::<serde_json::Value>::new());
}

/// Issue #20 point 6, past the password: a user the first factor knows
/// but the system has never heard of (in pam_matrix's passdb, not in
/// passwd) reads exactly as a user without a number, under each
/// `no_phone` policy that asks something of them; the audit says why.
#[test]
fn past_the_password_an_unknown_user_reads_as_one_without_a_number() {
    for (policy, text) in [
        (
            "deny",
            "No phone number is registered for this account. Contact your administrator.",
        ),
        (
            "enroll",
            "No phone number is registered for this account. \
             Enter your mobile number to register it for SMS codes.",
        ),
    ] {
        let (env, svc) = setup(
            &format!("e2e-enum-{policy}"),
            &format!("[policy]\nno_phone = \"{policy}\"\n"),
        );
        // mallory passes the password step, yet has no account.
        let passdb = env.scratch.path("passdb");
        let mut db = std::fs::read_to_string(&passdb).unwrap();
        db.push_str(&format!("mallory:{PASSWORD}:{svc}\n"));
        env.scratch.write("passdb", &db, 0o600);
        let transcript = |user: &str| {
            let mut login = env.login(&svc, user);
            login.password().expect_text(text);
            let out = login.finish();
            out.assert_failure();
            out.assert_not_saw("Code sent");
            out.transcript.replace(user, "USER")
        };
        let bob = transcript("bob");
        assert!(bob.contains(text), "{bob}");
        assert_eq!(transcript("mallory"), bob, "no_phone = {policy}");
        eprintln!("no_phone = {policy}:\n{bob}");
        assert_eq!(env.scratch.outbox().count(), 0);
        let audit = check_audit(&env, &[]);
        audit_mentions(&audit, "bob", &svc);
        audit_mentions(&audit, "mallory", &svc);
    }
}

#[test]
fn no_phone_allow_lets_in_without_sms() {
    let (env, svc) = setup("e2e-nophone-allow", "[policy]\nno_phone = \"allow\"\n");
    let mut login = env.login(&svc, "bob");
    login.password();
    let out = login.finish();
    out.assert_success();
    assert_no_prompt(&out);
    assert_eq!(env.scratch.outbox().count(), 0);
    let audit = check_audit(&env, &[]);
    audit_mentions(&audit, "bob", &svc);
}

/// A config whose only provider is a command that records the call and
/// exits 1.
fn failing_provider(name: &str, provider_down: &str) -> (PamEnv, String) {
    let mut env = PamEnv::new();
    phones(&env);
    let calls = env.scratch.path("calls");
    let script = env.scratch.write(
        "fail-sms.sh",
        &format!("#!/bin/sh\necho called >> {}\nexit 1\n", calls.display()),
        0o755,
    );
    let text = format!(
        "[policy]\nprovider_down = \"{provider_down}\"\n\n{}[[provider]]\nkind = \"command\"\nprogram = \"{}\"\ntimeout = \"5s\"\n",
        env.scratch.base_tables(true, false),
        script.display()
    );
    env.scratch.write("smsotp.toml", &text, 0o600);
    let svc = env.smsotp_service(name, "");
    (env, svc)
}

fn provider_calls(env: &PamEnv) -> usize {
    std::fs::read_to_string(env.scratch.path("calls"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn provider_down_deny_refuses() {
    let (env, svc) = failing_provider("e2e-down-deny", "deny");
    let mut login = env.login(&svc, "alice");
    login
        .password()
        .expect_text("The code could not be sent. Try again later.");
    let out = login.finish();
    out.assert_failure();
    assert_no_prompt(&out);
    assert!(
        provider_calls(&env) >= 1,
        "the provider command was never run: {out}"
    );
    let audit = check_audit(&env, &[]);
    audit_mentions(&audit, "alice", &svc);
}

#[test]
fn provider_down_allow_lets_in() {
    let (env, svc) = failing_provider("e2e-down-allow", "allow");
    let mut login = env.login(&svc, "alice");
    login.password();
    let out = login.finish();
    out.assert_success();
    assert_no_prompt(&out);
    assert!(
        provider_calls(&env) >= 1,
        "the provider command was never run: {out}"
    );
    let audit = check_audit(&env, &[]);
    audit_mentions(&audit, "alice", &svc);
}

#[test]
fn sms_per_user_limit_refuses_the_third_login() {
    let (env, svc) = setup("e2e-ratelimit", "[limits]\nsms_per_user = \"2/1h\"\n");
    let outbox = env.scratch.outbox();
    let mut codes = Vec::new();
    for seen in 0..2 {
        let mut login = up_to_code_prompt(&env, &svc, "alice");
        codes.push(login.answer_code_from_outbox(&outbox, seen).code());
        login.finish().assert_success();
    }
    let mut login = env.login(&svc, "alice");
    login.password().expect_text(LIMIT_REACHED);
    let out = login.finish();
    out.assert_failure();
    assert_no_prompt(&out);
    assert_eq!(outbox.count(), 2, "no third SMS");
    let lines = check_audit(&env, &codes);
    let refused = lines
        .iter()
        .find(|l| l["event"] == "reject" && l["reason"] == "rate_limited")
        .unwrap_or_else(|| panic!("no rate_limited reject: {lines:#?}"));
    assert_eq!(refused["limit"], "sms_per_user", "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("sms_per_user = 2/1h reached; next SMS allowed in ")),
        "{refused}"
    );

    // The admin sees the window, and `unlock` clears it.
    let show = smsotp_cli(&env, &["user", "show", "alice"]);
    assert!(
        show.contains("SMS sent:      2 of 2 in the last 1 hour (limits.sms_per_user); LIMIT REACHED: next SMS allowed in ")
            && show.contains("`smsotp user unlock alice` clears it"),
        "{show}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&smsotp_cli(&env, &["--json", "user", "show", "alice"])).unwrap();
    assert_eq!(j["sms_window"]["sent"], 2, "{j}");
    assert_eq!(j["sms_window"]["limit"], 2, "{j}");
    assert_eq!(j["sms_window"]["limit_reached"], true, "{j}");
    assert!(j["sms_window"]["next_sms_at"].is_string(), "{j}");
    let unlock = smsotp_cli(&env, &["user", "unlock", "alice"]);
    assert_eq!(
        unlock,
        "alice: cleared 2 SMS from the per-user window (limits.sms_per_user = 2/1h)\n"
    );
    let j: serde_json::Value =
        serde_json::from_str(&smsotp_cli(&env, &["--json", "user", "show", "alice"])).unwrap();
    assert_eq!(j["sms_window"]["sent"], 0, "{j}");
    assert_eq!(j["sms_window"]["limit_reached"], false, "{j}");
    assert_eq!(
        smsotp_cli(&env, &["user", "unlock", "alice"]),
        "alice: nothing to clear (not locked, no failures, no SMS in the per-user window)\n"
    );

    let mut login = up_to_code_prompt(&env, &svc, "alice");
    codes.push(login.answer_code_from_outbox(&outbox, 2).code());
    login.finish().assert_success();
    let lines = check_audit(&env, &codes);
    assert!(
        lines.iter().any(|l| l["event"] == "admin_unlock"
            && l["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("cleared 2 SMS"))),
        "the unlock is not audited: {lines:#?}"
    );
}

/// Runs the built `smsotp` tool on the env's config; its stdout (it must
/// succeed).
fn smsotp_cli(env: &PamEnv, args: &[&str]) -> String {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| smsotp_e2e::workspace_root().join("target"));
    let cli = std::env::var_os("SMSOTP_CLI")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| target.join("debug/smsotp"));
    let out = std::process::Command::new(&cli)
        .arg("--config")
        .arg(env.scratch.path("smsotp.toml"))
        .args(args)
        .env_remove("SUDO_USER")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}; run `cargo build --workspace`", cli.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "smsotp {args:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn under_pam_silent_the_prompt_names_the_phone() {
    // sudo calls pam_authenticate with PAM_SILENT: info lines are not
    // shown, so the prompt says where the code went.
    let (env, svc) = setup("e2e-silent", "");
    let outbox = env.scratch.outbox();
    let mut login = env.login_doing(&svc, "alice", "authenticate(PAM_SILENT)", LOGIN_TIMEOUT);
    login
        .password()
        .expect_prompt("SMS code (sent to ******0123): ");
    let code = login.answer_code_from_outbox(&outbox, 0).code();
    let out = login.finish();
    out.assert_success();
    assert!(!out.transcript.contains(CODE_SENT), "{out}");
    check_audit(&env, &[code]);
}

#[test]
fn lockout_after_wrong_codes_then_it_ends() {
    let (env, svc) = setup(
        "e2e-lockout",
        "[limits]\nlockout_after = 3\nlockout = \"2s\"\n",
    );
    let outbox = env.scratch.outbox();
    let mut login = up_to_code_prompt(&env, &svc, "alice");
    let code = outbox.wait_beyond(0, Duration::from_secs(10)).code();
    let bad = wrong(&code);
    login.answer(&bad).expect_text("Wrong code, 2 tries left.");
    login
        .expect_prompt(PROMPT)
        .answer(&bad)
        .expect_text("Wrong code, 1 try left.");
    login
        .expect_prompt(PROMPT)
        .answer(&bad)
        .expect_text("Too many wrong codes.");
    login.finish().assert_failure();
    let locked_at = Instant::now();

    let mut login = env.login(&svc, "alice");
    login.password().expect_text(TRY_LATER);
    let out = login.finish();
    out.assert_failure();
    assert_no_prompt(&out);
    assert_eq!(outbox.count(), 1, "no SMS while locked out");
    assert!(
        locked_at.elapsed() < Duration::from_secs(2),
        "too slow to observe a 2 s lockout"
    );

    std::thread::sleep(Duration::from_millis(2200).saturating_sub(locked_at.elapsed()));
    let mut login = up_to_code_prompt(&env, &svc, "alice");
    let sms = login.answer_code_from_outbox(&outbox, 1);
    login.finish().assert_success();
    check_audit(&env, &[code, bad, sms.code()]);
}

/// A broken config never lets anyone in, never crashes pamtester, and sends
/// nothing.
fn assert_refused_without_sms(env: &PamEnv, svc: &str) -> Outcome {
    let mut login = env.login(svc, "alice");
    login.password();
    let out = login.finish();
    out.assert_failure();
    assert_no_prompt(&out);
    assert_eq!(env.scratch.outbox().count(), 0, "an SMS was sent: {out}");
    out
}

#[test]
fn missing_config_refuses() {
    let mut env = PamEnv::new();
    phones(&env);
    let missing = env.scratch.path("no-such-config.toml");
    let lines = [env.matrix_line(), env.smsotp_line_with_config(&missing, "")];
    let svc = env.service("e2e-noconfig", &lines);
    assert_refused_without_sms(&env, &svc);
}

#[test]
fn corrupt_config_refuses() {
    let mut env = PamEnv::new();
    phones(&env);
    let text = format!(
        "[otp\nlength = 6\n\n{}",
        env.scratch.base_tables(true, true)
    );
    env.scratch.write("smsotp.toml", &text, 0o600);
    let svc = env.smsotp_service("e2e-badconfig", "");
    assert_refused_without_sms(&env, &svc);
}

#[test]
fn world_readable_config_refuses() {
    use std::os::unix::fs::PermissionsExt;
    let mut env = PamEnv::new();
    phones(&env);
    let config = env.scratch.config("");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let svc = env.smsotp_service("e2e-config0644", "");
    assert_refused_without_sms(&env, &svc);

    // Control: the same config at 0600 works.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let login = up_to_code_prompt(&env, &svc, "alice");
    login.abort();
    assert_eq!(env.scratch.outbox().count(), 1);
}

#[test]
fn a_code_sent_for_one_service_is_refused_by_another() {
    let mut env = PamEnv::new();
    phones(&env);
    env.scratch.config("");
    let svc_a = env.smsotp_service("e2e-bind-a", "");
    let svc_b = env.smsotp_service("e2e-bind-b", "");
    let outbox = env.scratch.outbox();

    let login_a = up_to_code_prompt(&env, &svc_a, "alice");
    let code_a = outbox.wait_beyond(0, Duration::from_secs(10)).code();
    login_a.abort();

    let mut login_b = up_to_code_prompt(&env, &svc_b, "alice");
    let code_b = outbox.wait_beyond(1, Duration::from_secs(10)).code();
    if code_a == code_b {
        eprintln!("the two codes happen to be equal; nothing to check");
        return;
    }
    login_b
        .answer(&code_a)
        .expect_text("Wrong code, 2 tries left.");
    login_b.expect_prompt(PROMPT).answer(&code_b);
    let out = login_b.finish();
    out.assert_success();
    assert_eq!(outbox.count(), 2);
    let audit = check_audit(&env, &[code_a, code_b]);
    audit_mentions(&audit, "alice", &svc_b);
}

#[test]
fn a_retry_on_the_same_handle_sends_no_second_sms() {
    // sudo's passwd_tries: after a failed code round sudo calls
    // pam_authenticate(PAM_SILENT) again on the same handle. pam_retry does
    // the same; pamtester cannot.
    let (env, svc) = setup("e2e-retry", "[limits]\nlockout_after = 10\n");
    let outbox = env.scratch.outbox();
    let prompt = "SMS code (sent to ******0123)";
    let mut login = env.login_with_program(
        env!("CARGO_BIN_EXE_pam_retry"),
        &[&svc, "alice", "3"],
        &svc,
        "alice",
        LOGIN_TIMEOUT,
    );
    login.password().expect_prompt(prompt);
    let code = outbox.wait_beyond(0, Duration::from_secs(10)).code();
    let bad = wrong(&code);
    login.answer(&bad).expect_text("Wrong code, 2 tries left.");
    login
        .expect_prompt(prompt)
        .answer(&bad)
        .expect_text("Wrong code, 1 try left.");
    login
        .expect_prompt(prompt)
        .answer(&bad)
        .expect_text("Too many wrong codes.")
        .expect_text("pam_retry: try 1: AUTH_ERR");
    for n in 2..=3 {
        login
            .password()
            .expect_text("The SMS code was not accepted; no new code is sent for this attempt.")
            .expect_text(&format!("pam_retry: try {n}: MAXTRIES"));
    }
    let out = login.finish();
    assert!(!out.transcript.contains("successfully"), "{out}");
    assert_eq!(outbox.count(), 1, "one SMS per handle: {out}");
    let lines = check_audit(&env, &[code, bad]);
    let count = |event: &str| lines.iter().filter(|l| l["event"] == event).count();
    assert_eq!(count("wrong_code"), 3, "{lines:#?}");
    assert_eq!(count("retry_refused"), 2, "{lines:#?}");
    let j: serde_json::Value =
        serde_json::from_str(&smsotp_cli(&env, &["--json", "user", "show", "alice"])).unwrap();
    assert_eq!(j["failures"], 3, "three failures, not nine: {j}");
}

fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// A FIFO where the config or the phone list belongs used to hang the
/// login for ever in open(): now it is refused at once, the login fails
/// with the unavailable text, and nothing is sent.
#[test]
fn a_fifo_as_config_or_phone_list_fails_the_login_at_once() {
    let mut env = PamEnv::new();
    phones(&env);
    let fifo = env.scratch.path("fifo.toml");
    mkfifo(&fifo);
    let lines = [env.matrix_line(), env.smsotp_line_with_config(&fifo, "")];
    let svc = env.service("e2e-fifoconfig", &lines);
    let started = Instant::now();
    let out = assert_refused_without_sms(&env, &svc);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}:\n{out}",
        started.elapsed()
    );
    out.assert_saw("SMS login is not available (configuration problem)");

    // The phone list a FIFO: the config is fine, the lookup fails at once.
    let list = env.scratch.path("phones.toml");
    std::fs::remove_file(&list).unwrap();
    mkfifo(&list);
    env.scratch.config("");
    let svc = env.smsotp_service("e2e-fifophones", "");
    let started = Instant::now();
    let out = assert_refused_without_sms(&env, &svc);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}:\n{out}",
        started.elapsed()
    );
    out.assert_saw("SMS login is not available");
    let audit = std::fs::read_to_string(env.scratch.path("audit.jsonl")).unwrap_or_default();
    assert!(audit.contains("is a FIFO, not a regular file"), "{audit}");
}

/// The `command` provider's program gets stdin, stdout and stderr only:
/// a descriptor the host (here pamtester, as sshd would) holds without
/// close-on-exec is not passed on.
#[test]
fn a_command_provider_program_inherits_no_descriptor_of_the_host() {
    let mut env = PamEnv::new();
    phones(&env);
    let host_fds = env.scratch.path("host-fds");
    let child_fds = env.scratch.path("child-fds");
    let script = env.scratch.write(
        "send.sh",
        &format!(
            "#!/bin/sh\nls /proc/$PPID/fd > {}\nls /proc/self/fd > {}\n",
            host_fds.display(),
            child_fds.display()
        ),
        0o700,
    );
    let text = format!(
        "{}[[provider]]\nkind = \"command\"\nname = \"script\"\nprogram = \"{}\"\n",
        env.scratch.base_tables(true, false),
        script.display()
    );
    env.scratch.write("smsotp.toml", &text, 0o600);
    let svc = env.smsotp_service("e2e-cmdfds", "");

    // A descriptor without close-on-exec, at a number nothing else uses,
    // inherited by pamtester; closed here once it is started.
    const LEAKED: i32 = 733;
    let leak = env.scratch.write("leak", "x", 0o600);
    let c = std::ffi::CString::new(leak.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; both descriptors are closed below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0, "open");
    // SAFETY: dup2 onto a number of our choosing (no close-on-exec).
    assert_eq!(unsafe { libc::dup2(fd, LEAKED) }, LEAKED, "dup2");
    let login = env.login(&svc, "alice");
    // SAFETY: ours to close; pamtester holds its own copies.
    unsafe {
        libc::close(fd);
        libc::close(LEAKED);
    }
    let mut login = login;
    login
        .password()
        .expect_text(CODE_SENT)
        .expect_prompt(PROMPT);
    login.abort();

    let list = |p: &std::path::Path| -> Vec<i32> {
        let mut v: Vec<i32> = std::fs::read_to_string(p)
            .unwrap()
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        v.sort_unstable();
        v
    };
    let host = list(&host_fds);
    assert!(
        host.contains(&LEAKED),
        "pamtester should hold {LEAKED}: {host:?}"
    );
    // 0, 1, 2, and the directory `ls` reads (the lowest free number).
    assert_eq!(list(&child_fds), vec![0, 1, 2, 3]);
}
