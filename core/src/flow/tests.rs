//! The login rules, with a fixed clock, fake SMS providers and accounts, and
//! an in-memory store.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use super::*;
use crate::audit::tests::MemorySink;
use crate::clock::FixedClock;
use crate::directory::tests::FakeAccounts;
use crate::directory::{Directory, Entry, FileDirectory};
use crate::random::FixedRandom;
use crate::sms::tests::FakeSms;
use crate::sms::SendError;
use crate::store::sqlite::SqliteStore;

/// A clock the test keeps a handle to while the engine owns a box of it.
#[derive(Clone)]
struct SharedClock(Rc<FixedClock>);

impl Clock for SharedClock {
    fn now_ms(&self) -> Millis {
        self.0.now_ms()
    }
}

pub(super) struct Harness {
    pub(super) engine: Engine,
    clock: Rc<FixedClock>,
    pub(super) sms: FakeSms,
    audit: MemorySink,
    _dir: tempfile::TempDir,
}

pub(super) const ALICE: &str = "+12025550123";

fn harness(extra_toml: &str) -> Harness {
    harness_with(extra_toml, vec![])
}

fn harness_with(extra_toml: &str, providers: Vec<Box<dyn SmsProvider>>) -> Harness {
    harness_dirs(extra_toml, providers, Vec::new())
}

/// [`harness_with`], with `before` asked ahead of the phone file.
fn harness_dirs(
    extra_toml: &str,
    providers: Vec<Box<dyn SmsProvider>>,
    before: Vec<Box<dyn Directory>>,
) -> Harness {
    let store = Box::new(SqliteStore::open_in_memory().unwrap());
    harness_full(extra_toml, providers, before, store)
}

/// [`harness_dirs`] on `store`.
pub(super) fn harness_full(
    extra_toml: &str,
    providers: Vec<Box<dyn SmsProvider>>,
    before: Vec<Box<dyn Directory>>,
    store: Box<dyn Store>,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let phones = dir.path().join("phones.toml");
    std::fs::write(
        &phones,
        format!(
            "alice = \"{ALICE}\"\nbob = \"+12025550199\"\nerin = \"+49301234567\"\n\
             dave = \"{ALICE}\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&phones, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = Config::from_toml(Path::new("/test/smsotp.toml"), extra_toml).unwrap();
    let clock = Rc::new(FixedClock::at(1_700_000_000_000));
    let sms = FakeSms::named("fake");
    let providers = if providers.is_empty() {
        vec![Box::new(sms.clone()) as Box<dyn SmsProvider>]
    } else {
        providers
    };
    let audit = MemorySink::default();
    let mut accounts = FakeAccounts::default();
    accounts.0.insert(
        "alice".into(),
        (String::new(), vec!["alice".into(), "staff".into()]),
    );
    accounts
        .0
        .insert("svc".into(), (String::new(), vec!["svc-backup".into()]));
    let parts = Parts {
        store,
        directories: before
            .into_iter()
            .chain([Box::new(FileDirectory::new(phones)) as Box<dyn Directory>])
            .collect(),
        providers,
        accounts: Box::new(accounts),
        clock: Box::new(SharedClock(clock.clone())),
        rng: Box::new(FixedRandom::new(42)),
        audit: Audit {
            sinks: vec![Box::new(audit.clone())],
        },
        key: OtpKey::from_bytes(&[3u8; 32]),
        host: "web1".into(),
    };
    Harness {
        engine: Engine::with_parts(cfg, parts),
        clock,
        sms,
        audit,
        _dir: dir,
    }
}

pub(super) fn ctx(user: &str, service: &str) -> LoginContext {
    LoginContext {
        user: user.into(),
        service: service.into(),
        rhost: Some("192.0.2.7".into()),
    }
}

impl Harness {
    pub(super) fn start(&self, c: &LoginContext) -> ChallengeInfo {
        match self.engine.start(c).unwrap() {
            Start::Challenge(ch) => ch,
            Start::Done(v) => panic!("expected a challenge, got {v:?}"),
        }
    }

    pub(super) fn last_code(&self) -> String {
        let sent = self.sms.sent.borrow();
        let (_, text) = sent.last().expect("an SMS was sent");
        text.split(' ').next().unwrap().to_owned()
    }

    pub(super) fn sent_count(&self) -> usize {
        self.sms.sent.borrow().len()
    }

    pub(super) fn answer(&self, c: &LoginContext, ch: &ChallengeInfo, input: &str) -> Answer {
        self.engine.answer(c, &ch.id, input).unwrap()
    }

    pub(super) fn audit_text(&self) -> String {
        self.audit
            .0
            .borrow()
            .iter()
            .map(|(_, e)| format!("{}\n", e.to_line()))
            .collect()
    }
}

fn wrong(code: &str) -> String {
    // A different code of the same shape.
    code.chars()
        .map(|c| {
            if c == '9' {
                '0'
            } else {
                ((c as u8) + 1) as char
            }
        })
        .collect()
}

#[test]
fn right_code_is_accepted_once() {
    let h = harness("");
    let c = ctx("alice", "sshd");
    let ch = h.start(&c);
    assert_eq!(ch.phone_masked, "******0123");
    assert_eq!(ch.attempts_left, 3);
    assert_eq!(ch.expires_in, Duration::from_secs(300));
    let (to, text) = h.sms.sent.borrow()[0].clone();
    assert_eq!(to, ALICE);
    assert!(
        text.ends_with(" is your login code for web1. It expires in 5 minutes."),
        "{text}"
    );
    let code = h.last_code();
    assert_eq!(code.len(), 6);
    assert_eq!(
        h.answer(&c, &ch, &code),
        Answer::Done(Verdict::Accept(Accept::CodeVerified))
    );
    // Single use: the same code again is refused.
    assert_eq!(
        h.answer(&c, &ch, &code),
        Answer::Done(Verdict::Reject(Reject::UnknownChallenge))
    );
    // No log line holds the code.
    assert!(!h.audit_text().contains(&code), "{}", h.audit_text());
    assert!(
        h.audit_text()
            .contains("event=accept user=alice service=sshd"),
        "{}",
        h.audit_text()
    );
}

/// Issue #20: a RADIUS retransmit that reaches a restarted server (its
/// duplicate cache gone) is the same request again: it gets the challenge
/// its first copy opened and no second SMS; another request, or the same
/// one for another user or service, opens its own.
#[test]
fn a_repeated_request_gets_its_challenge_again_without_a_second_sms() {
    let h = harness("");
    let c = ctx("alice", "radius:vpn");
    let start = |c: &LoginContext, key: &[u8; 16]| match h.engine.start_for_request(c, key).unwrap()
    {
        Start::Challenge(ch) => ch,
        Start::Done(v) => panic!("expected a challenge, got {v:?}"),
    };
    let first = start(&c, &[7; 16]);
    assert_eq!(h.sent_count(), 1);
    let code = h.last_code();
    let again = start(&c, &[7; 16]);
    assert_eq!(h.sent_count(), 1, "a second SMS for a repeated request");
    assert_eq!(again.id, first.id);
    assert!(
        h.audit_text().contains("repeated_request"),
        "{}",
        h.audit_text()
    );
    let other = start(&c, &[8; 16]);
    assert_ne!(other.id, first.id);
    assert_eq!(h.sent_count(), 2);
    let bob = start(&ctx("bob", "radius:vpn"), &[7; 16]);
    assert_ne!(bob.id, first.id, "the id is bound to the user");
    assert_eq!(h.sent_count(), 3);
    // The first challenge still takes its code; once used, a repeat of its
    // request is a new first round (the login ended: a NAS does not repeat
    // a request it got an answer to).
    assert!(matches!(
        h.answer(&c, &first, &code),
        Answer::Done(Verdict::Accept(_))
    ));
    let after = start(&c, &[7; 16]);
    assert_eq!(h.sent_count(), 4);
    assert_eq!(after.id, first.id);
}

#[test]
fn wrong_codes_count_down_then_reject() {
    let h = harness("");
    let c = ctx("alice", "sshd");
    let ch = h.start(&c);
    let bad = wrong(&h.last_code());
    assert!(matches!(
        h.answer(&c, &ch, &bad),
        Answer::Retry(Retry::WrongCode { tries_left: 2 }, _)
    ));
    assert!(matches!(
        h.answer(&c, &ch, "not-a-code!"),
        Answer::Retry(Retry::WrongCode { tries_left: 1 }, _)
    ));
    assert_eq!(
        h.answer(&c, &ch, &bad),
        Answer::Done(Verdict::Reject(Reject::WrongCode))
    );
    // The right code no longer helps once the tries are used up.
    let code = h.last_code();
    assert_eq!(
        h.answer(&c, &ch, &code),
        Answer::Done(Verdict::Reject(Reject::UnknownChallenge))
    );
    assert_eq!(
        Retry::WrongCode { tries_left: 1 }.user_message(),
        "Wrong code, 1 try left."
    );
    assert_eq!(
        Retry::WrongCode { tries_left: 2 }.user_message(),
        "Wrong code, 2 tries left."
    );
}

#[test]
fn code_is_bound_to_user_and_service() {
    let h = harness("");
    let alice_sshd = ctx("alice", "sshd");
    let ch = h.start(&alice_sshd);
    let code = h.last_code();
    assert_eq!(
        h.answer(&ctx("alice", "sudo"), &ch, &code),
        Answer::Done(Verdict::Reject(Reject::UnknownChallenge))
    );
    assert_eq!(
        h.answer(&ctx("bob", "sshd"), &ch, &code),
        Answer::Done(Verdict::Reject(Reject::UnknownChallenge))
    );
    // A code sent for sshd is worthless in a sudo challenge of the same user.
    let sudo = ctx("alice", "sudo");
    let ch2 = h.start(&sudo);
    assert!(matches!(
        h.answer(&sudo, &ch2, &code),
        Answer::Retry(Retry::WrongCode { .. }, _)
    ));
    // The sshd challenge itself was left intact by the foreign attempts.
    assert_eq!(
        h.answer(&alice_sshd, &ch, &code),
        Answer::Done(Verdict::Accept(Accept::CodeVerified))
    );
}

#[test]
fn expired_code_offers_a_new_one() {
    let h = harness("[otp]\nttl = \"1m\"\nresend = { max = 1, cooldown = \"30s\" }\n");
    let c = ctx("alice", "sshd");
    let ch = h.start(&c);
    let code = h.last_code();
    h.clock.advance(Duration::from_secs(60));
    assert!(matches!(
        h.answer(&c, &ch, &code),
        Answer::Retry(Retry::Expired, _)
    ));
    assert!(matches!(
        h.answer(&c, &ch, ""),
        Answer::Retry(Retry::Resent { .. }, _)
    ));
    assert_eq!(h.sent_count(), 2);
    let new = h.last_code();
    assert_ne!(new, code);
    // The old code is dead; the new one works.
    assert!(matches!(
        h.answer(&c, &ch, &code),
        Answer::Retry(Retry::WrongCode { .. }, _)
    ));
    assert_eq!(
        h.answer(&c, &ch, &new),
        Answer::Done(Verdict::Accept(Accept::CodeVerified))
    );
}

#[test]
fn strict_expiry_rejects_even_with_resends_left() {
    let h = harness("[otp]\nttl = \"30s\"\nresend = { max = 2, cooldown = \"0s\" }\n");
    let c = ctx("alice", "radius:vpn");
    let ch = h.start(&c);
    let code = h.last_code();
    h.clock.advance(Duration::from_secs(30));
    for input in [code.as_str(), ""] {
        let a = h
            .engine
            .answer_with(&c, &ch.id, input, Expired::Reject)
            .unwrap();
        let want = if input.is_empty() {
            Reject::UnknownChallenge
        } else {
            Reject::Expired
        };
        assert_eq!(a, Answer::Done(Verdict::Reject(want)), "{input:?}");
    }
    assert_eq!(h.sent_count(), 1);
}

#[test]
fn expired_without_resends_left_rejects() {
    let h = harness("[otp]\nttl = \"30s\"\nresend = { max = 0 }\n");
    let c = ctx("alice", "sshd");
    let ch = h.start(&c);
    let code = h.last_code();
    h.clock.advance(Duration::from_secs(31));
    assert_eq!(
        h.answer(&c, &ch, &code),
        Answer::Done(Verdict::Reject(Reject::Expired))
    );
}

#[test]
fn resend_respects_cooldown_and_count() {
    let h = harness("[otp]\nresend = { max = 2, cooldown = \"30s\" }\n");
    let c = ctx("alice", "sshd");
    let ch = h.start(&c);
    match h.answer(&c, &ch, "") {
        Answer::Retry(r @ Retry::Cooldown { .. }, _) => {
            assert_eq!(
                r.user_message(),
                "Wait 30 seconds before asking for a new code."
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.sent_count(), 1);
    h.clock.advance(Duration::from_secs(30));
    assert!(matches!(
        h.answer(&c, &ch, ""),
        Answer::Retry(Retry::Resent { .. }, _)
    ));
    h.clock.advance(Duration::from_secs(30));
    assert!(matches!(
        h.answer(&c, &ch, "  "),
        Answer::Retry(Retry::Resent { .. }, _)
    ));
    h.clock.advance(Duration::from_secs(30));
    assert!(matches!(
        h.answer(&c, &ch, ""),
        Answer::Retry(Retry::NoResendsLeft, _)
    ));
    assert_eq!(h.sent_count(), 3);
    let code = h.last_code();
    assert_eq!(
        h.answer(&c, &ch, &code),
        Answer::Done(Verdict::Accept(Accept::CodeVerified))
    );
}

#[test]
fn exempt_users_and_groups_get_no_code() {
    let h = harness("[policy]\nexempt_users = [\"bob\"]\nexempt_groups = [\"svc-backup\"]\n");
    assert_eq!(
        h.engine.start(&ctx("bob", "sshd")).unwrap(),
        Start::Done(Verdict::NotApplicable(Skip::ExemptUser))
    );
    assert_eq!(
        h.engine.start(&ctx("svc", "sshd")).unwrap(),
        Start::Done(Verdict::NotApplicable(Skip::ExemptGroup))
    );
    assert_eq!(h.sent_count(), 0);
    // Members of other groups still need a code.
    h.start(&ctx("alice", "sshd"));
    assert_eq!(h.sent_count(), 1);
}

#[test]
fn no_phone_follows_policy() {
    let deny = harness("");
    assert_eq!(
        deny.engine.start(&ctx("nobody", "sshd")).unwrap(),
        Start::Done(Verdict::Reject(Reject::NoPhone))
    );
    let allow = harness("[policy]\nno_phone = \"allow\"\n");
    assert_eq!(
        allow.engine.start(&ctx("nobody", "sshd")).unwrap(),
        Start::Done(Verdict::Accept(Accept::NoPhoneAllowed))
    );
    assert!(
        allow.audit_text().contains("event=fail_open"),
        "{}",
        allow.audit_text()
    );
    assert_eq!(allow.sent_count() + deny.sent_count(), 0);
}

#[test]
fn provider_down_follows_policy_but_refusals_always_deny() {
    let down = || -> Vec<Box<dyn SmsProvider>> {
        vec![Box::new(FakeSms::failing(
            "gw",
            SendError::Transient("connection refused".into()),
        ))]
    };
    let h = harness_with("", down());
    assert_eq!(
        h.engine.start(&ctx("alice", "sshd")).unwrap(),
        Start::Done(Verdict::Reject(Reject::ProviderDown))
    );
    let h = harness_with("[policy]\nprovider_down = \"allow\"\n", down());
    assert_eq!(
        h.engine.start(&ctx("alice", "sshd")).unwrap(),
        Start::Done(Verdict::Accept(Accept::ProviderDownAllowed))
    );
    let loud = h
        .audit
        .0
        .borrow()
        .iter()
        .any(|(l, e)| *l == Level::Error && e.event == "fail_open");
    assert!(loud, "{}", h.audit_text());
    // A refused number is not an outage: never let in.
    let refused: Vec<Box<dyn SmsProvider>> = vec![Box::new(FakeSms::failing(
        "gw",
        SendError::Rejected("invalid destination".into()),
    ))];
    let h = harness_with("[policy]\nprovider_down = \"allow\"\n", refused);
    assert_eq!(
        h.engine.start(&ctx("alice", "sshd")).unwrap(),
        Start::Done(Verdict::Reject(Reject::SendRefused))
    );
}

#[test]
fn failover_sends_the_same_code_once() {
    let primary = FakeSms::failing("primary", SendError::Transient("timeout".into()));
    let backup = FakeSms::named("backup");
    let h = harness_with(
        "",
        vec![Box::new(primary.clone()), Box::new(backup.clone())],
    );
    let c = ctx("alice", "sshd");
    let ch = h.engine.start(&c).unwrap();
    let Start::Challenge(ch) = ch else {
        panic!("{ch:?}")
    };
    assert_eq!(backup.sent.borrow().len(), 1);
    let code = backup.sent.borrow()[0]
        .1
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        h.answer(&c, &ch, &code),
        Answer::Done(Verdict::Accept(Accept::CodeVerified))
    );
    assert!(
        h.audit_text().contains("event=failover"),
        "{}",
        h.audit_text()
    );
}

#[test]
fn per_user_sms_limit() {
    let h = harness("[limits]\nsms_per_user = \"2/1h\"\n");
    let c = ctx("alice", "sshd");
    h.start(&c);
    h.clock.advance(Duration::from_secs(600));
    h.start(&c);
    h.clock.advance(Duration::from_secs(59));
    // The first send leaves the window 3600 s after it: 2941 s from now.
    let refused = Reject::RateLimited(Limit::PerUser {
        wait: Duration::from_secs(2941),
    });
    assert_eq!(
        h.engine.start(&c).unwrap(),
        Start::Done(Verdict::Reject(refused))
    );
    assert_eq!(h.sent_count(), 2);
    assert_eq!(
        refused.user_message(),
        "Too many codes were sent recently. Try again in about 50 minutes."
    );
    let audit = h.audit_text();
    assert!(
        audit.contains("reason=rate_limited limit=sms_per_user phone=******0123 detail=\"sms_per_user = 2/1h reached; next SMS allowed in 49m 1s\""),
        "{audit}"
    );
    // Other users are not affected; the window slides.
    h.start(&ctx("bob", "sshd"));
    h.clock.advance(Duration::from_secs(3601));
    h.start(&c);
}

#[test]
fn global_sms_limit() {
    let h = harness("[limits]\nsms_global = \"2/1m\"\n");
    h.start(&ctx("alice", "sshd"));
    h.start(&ctx("bob", "sshd"));
    assert_eq!(
        h.engine.start(&ctx("erin", "sshd")).unwrap(),
        Start::Done(Verdict::Reject(Reject::RateLimited(Limit::Global)))
    );
    // Nobody's fault: the text does not speak of the user's own codes.
    let text = Reject::RateLimited(Limit::Global).user_message();
    assert!(text.contains("this system"), "{text}");
    assert!(!text.contains("you"), "{text}");
    let audit = h.audit_text();
    assert!(
        audit.contains("reason=rate_limited limit=sms_global")
            && audit.contains("detail=\"sms_global = 2/1m reached\""),
        "{audit}"
    );
}

fn refused_by(h: &Harness, c: &LoginContext) -> Reject {
    match h.engine.start(c).unwrap() {
        Start::Done(Verdict::Reject(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Two accounts sharing a number share its limit; the user reads the
/// global text, the audit line names the limit and masks the number.
#[test]
fn per_number_limit_counts_every_account_of_the_number() {
    let h = harness("[limits]\nsms_per_number = \"2/1d\"\n");
    h.start(&ctx("alice", "sshd"));
    h.start(&ctx("dave", "sshd"));
    let r = refused_by(&h, &ctx("alice", "sshd"));
    assert_eq!(r, Reject::RateLimited(Limit::PerNumber));
    assert_eq!(
        r.user_message(),
        Reject::RateLimited(Limit::Global).user_message()
    );
    assert_eq!(h.sent_count(), 2);
    // Another number is not affected.
    h.start(&ctx("bob", "sshd"));
    let audit = h.audit_text();
    assert!(
        audit.contains("reason=rate_limited limit=sms_per_number phone=******0123 detail=\"sms_per_number = 2/1day reached\""),
        "{audit}"
    );
    assert!(!audit.contains(ALICE), "{audit}");
    // A day later the window has slid.
    h.clock.advance(Duration::from_secs(86_400));
    h.start(&ctx("dave", "sshd"));
}

/// Each country its own window: the listed rate, or `default`.
#[test]
fn per_country_limit_by_region_with_a_default() {
    let h = harness("[limits]\nsms_per_country = { default = \"2/1d\", us = \"1/1d\" }\n");
    h.start(&ctx("alice", "sshd"));
    let r = refused_by(&h, &ctx("bob", "sshd"));
    assert_eq!(
        r,
        Reject::RateLimited(Limit::PerCountry {
            region: Some(phonenumber::country::Id::US)
        })
    );
    // DE falls under the default, two a day.
    h.start(&ctx("erin", "sshd"));
    h.clock.advance(Duration::from_secs(3700));
    h.start(&ctx("erin", "sshd"));
    h.clock.advance(Duration::from_secs(3700));
    assert!(matches!(
        refused_by(&h, &ctx("erin", "sshd")),
        Reject::RateLimited(Limit::PerCountry { .. })
    ));
    let audit = h.audit_text();
    assert!(
        audit.contains("limit=sms_per_country")
            && audit.contains("detail=\"sms_per_country region=US = 1/1day reached\"")
            && audit.contains("detail=\"sms_per_country region=DE = 2/1day reached\""),
        "{audit}"
    );
}

/// Per source address: the same host in another spelling is the same
/// source; logins without one are not counted.
#[test]
fn per_source_limit_normalises_the_address_and_skips_unknown_sources() {
    let h = harness("[limits]\nsms_per_source = \"1/1h\"\n");
    let from = |user: &str, rhost: Option<&str>| LoginContext {
        rhost: rhost.map(Into::into),
        ..ctx(user, "sshd")
    };
    h.start(&from("alice", Some("192.0.2.7")));
    assert_eq!(
        refused_by(&h, &from("bob", Some(" ::ffff:192.0.2.7"))),
        Reject::RateLimited(Limit::PerSource)
    );
    h.start(&from("bob", Some("192.0.2.8")));
    h.start(&from("erin", None));
    h.start(&from("dave", Some("")));
    assert!(h.audit_text().contains("limit=sms_per_source"));
}

/// The back-off: 1, 2, 4 … minutes, capped, told as the user's own wait;
/// a long enough pause starts over.
#[test]
fn backoff_grows_then_caps_then_resets() {
    let h = harness(
        "[limits]\nbackoff = { first = \"1m\", max = \"4m\" }\nsms_per_user = \"100/1h\"\n",
    );
    let c = ctx("alice", "sshd");
    h.start(&c);
    for wait in [60, 120, 240, 240] {
        h.clock.advance(Duration::from_secs(wait - 1));
        let r = refused_by(&h, &c);
        assert_eq!(
            r,
            Reject::RateLimited(Limit::Backoff {
                wait: Duration::from_secs(1)
            }),
            "after {wait}s"
        );
        assert!(r.user_message().contains("Try again in about"), "{r:?}");
        h.clock.advance(Duration::from_secs(1));
        h.start(&c);
    }
    assert_eq!(h.sent_count(), 5);
    // 2 × max without a send: the next one's wait is 1m again.
    h.clock.advance(Duration::from_secs(480));
    h.start(&c);
    h.clock.advance(Duration::from_secs(60));
    h.start(&c);
    assert!(h.audit_text().contains("limit=backoff"));
}

/// The back-off in monitor mode: sends at once, and says so without a
/// made-up wait.
#[test]
fn backoff_in_monitor_mode_sends_and_logs() {
    let h = harness("[limits]\nbackoff = { first = \"1m\" }\nmonitor = [\"backoff\"]\n");
    let c = ctx("alice", "sshd");
    h.start(&c);
    h.start(&c);
    assert_eq!(h.sent_count(), 2);
    let audit = h.audit_text();
    assert!(
        audit.contains("event=limit_monitor")
            && audit.contains("detail=\"would have refused the SMS: backoff reached (first 1m, max 32m); sent, as limits.monitor lists backoff\""),
        "{audit}"
    );
}

/// Monitor mode: the SMS goes out, the window counts it, and a warning
/// says which limit would have refused.
#[test]
fn monitor_mode_sends_and_logs_what_it_would_have_refused() {
    let h = harness(
        "[limits]\nsms_per_number = \"1/1d\"\nsms_per_country = { US = \"1/1d\" }\n\
         monitor = [\"sms_per_country\"]\n",
    );
    h.start(&ctx("alice", "sshd"));
    // bob: another US number; the country limit is only monitored.
    h.start(&ctx("bob", "sshd"));
    assert_eq!(h.sent_count(), 2);
    let audit = h.audit_text();
    assert!(
        audit.contains("event=limit_monitor")
            && audit.contains("limit=sms_per_country phone=******0199 detail=\"would have refused the SMS: sms_per_country region=US = 1/1day reached; sent, as limits.monitor lists sms_per_country\""),
        "{audit}"
    );
    assert!(h
        .audit
        .0
        .borrow()
        .iter()
        .any(|(l, e)| e.event == "limit_monitor" && *l == Level::Warning));
    // The per-number limit is enforced all the same.
    assert_eq!(
        refused_by(&h, &ctx("dave", "sshd")),
        Reject::RateLimited(Limit::PerNumber)
    );
}

/// A resend counts against the number's limits too.
#[test]
fn a_resend_meets_the_per_number_limit() {
    let h = harness(
        "[limits]\nsms_per_number = \"1/1d\"\n[otp]\nresend = { max = 2, cooldown = \"0s\" }\n",
    );
    let c = ctx("alice", "sshd");
    let ch = h.start(&c);
    assert!(matches!(
        h.answer(&c, &ch, ""),
        Answer::Retry(Retry::ResendLimited, _)
    ));
    assert_eq!(h.sent_count(), 1);
}

#[test]
fn limit_waits_are_told_in_minutes_then_hours() {
    let told = |secs| {
        Reject::RateLimited(Limit::PerUser {
            wait: Duration::from_secs(secs),
        })
        .user_message()
    };
    assert!(told(0).ends_with("in about 1 minute."), "{}", told(0));
    assert!(told(61).ends_with("in about 2 minutes."), "{}", told(61));
    assert!(told(7140).ends_with("in about 119 minutes."));
    assert!(told(7200).ends_with("in about 2 hours."), "{}", told(7200));
    assert!(told(86_400).ends_with("in about 24 hours."));
}

#[test]
fn an_admin_cleared_window_sends_again() {
    let h = harness("[limits]\nsms_per_user = \"1/1h\"\n");
    let c = ctx("alice", "sshd");
    h.start(&c);
    assert!(matches!(
        h.engine.start(&c).unwrap(),
        Start::Done(Verdict::Reject(Reject::RateLimited(Limit::PerUser { .. })))
    ));
    let now = h.engine.now();
    assert_eq!(
        h.engine
            .store()
            .clear_sms_window("alice", now, Duration::from_secs(3600))
            .unwrap(),
        1
    );
    h.start(&c);
    assert_eq!(h.sent_count(), 2);
}

#[test]
fn an_expired_code_whose_resend_meets_the_limit_says_so() {
    let h = harness(
        "[limits]\nsms_per_user = \"1/1h\"\n[otp]\nttl = \"1m\"\nresend = { max = 2, cooldown = \"0s\" }\n",
    );
    let c = ctx("alice", "sshd");
    let ch = h.start(&c);
    h.clock.advance(Duration::from_secs(61));
    assert_eq!(
        h.answer(&c, &ch, ""),
        Answer::Done(Verdict::Reject(Reject::RateLimited(Limit::PerUser {
            wait: Duration::from_secs(3600 - 61)
        })))
    );
    assert_eq!(h.sent_count(), 1);
}

#[test]
fn lockout_after_consecutive_failures_and_its_end() {
    let h = harness("[limits]\nlockout_after = 4\nlockout = \"10m\"\n");
    let c = ctx("alice", "sshd");
    let ch = h.start(&c);
    let bad = wrong(&h.last_code());
    h.answer(&c, &ch, &bad);
    h.answer(&c, &ch, &bad);
    assert_eq!(
        h.answer(&c, &ch, &bad),
        Answer::Done(Verdict::Reject(Reject::WrongCode))
    );
    let ch = h.start(&c);
    assert_eq!(
        h.answer(&c, &ch, &wrong(&h.last_code())),
        Answer::Done(Verdict::Reject(Reject::WrongCode))
    );
    assert!(
        h.audit_text().contains("event=locked_out"),
        "{}",
        h.audit_text()
    );
    // Locked: no SMS, whatever service.
    let before = h.sent_count();
    assert_eq!(
        h.engine.start(&ctx("alice", "sudo")).unwrap(),
        Start::Done(Verdict::Reject(Reject::LockedOut))
    );
    assert_eq!(h.sent_count(), before);
    assert_eq!(
        Reject::LockedOut.user_message(),
        "A code cannot be used for this login now. Try again later."
    );
    h.clock.advance(Duration::from_secs(600));
    let ch = h.start(&c);
    assert_eq!(
        h.answer(&c, &ch, &h.last_code()),
        Answer::Done(Verdict::Accept(Accept::CodeVerified))
    );
}

#[test]
fn a_lockout_meanwhile_refuses_the_right_code_of_an_open_challenge() {
    let h = harness("[limits]\nlockout_after = 2\nlockout = \"10m\"\n");
    let c = ctx("alice", "sshd");
    let ch = h.start(&c);
    let code = h.last_code();
    // A second login, elsewhere, fails until the user is locked out.
    let other = ctx("alice", "sudo");
    let ch2 = h.start(&other);
    let bad = wrong(&h.last_code());
    h.answer(&other, &ch2, &bad);
    h.answer(&other, &ch2, &bad);
    assert!(h.audit_text().contains("event=locked_out"));
    assert_eq!(
        h.answer(&c, &ch, &code),
        Answer::Done(Verdict::Reject(Reject::LockedOut))
    );
    // The challenge is gone with it: once the lockout ends, the old code
    // is no good either.
    h.clock.advance(Duration::from_secs(600));
    assert_eq!(
        h.answer(&c, &ch, &code),
        Answer::Done(Verdict::Reject(Reject::UnknownChallenge))
    );
}

#[test]
fn one_per_login_challenges_are_found_by_user_and_service_until_they_expire() {
    let h = harness("[otp]\nttl = \"2m\"\n");
    let c = ctx("alice", "radius:vpn");
    assert_eq!(h.engine.pending(&c).unwrap(), None);
    let Start::Challenge(first) = h.engine.start_one_per_login(&c).unwrap() else {
        panic!("no challenge");
    };
    assert_eq!(h.engine.pending(&c).unwrap().map(|p| p.id), Some(first.id));
    assert_eq!(
        h.engine.pending(&ctx("alice", "radius:other")).unwrap(),
        None
    );
    assert_eq!(h.engine.pending(&ctx("bob", "radius:vpn")).unwrap(), None);
    // The same login again: the same id, a new code in place of the first.
    let old = h.last_code();
    let Start::Challenge(second) = h.engine.start_one_per_login(&c).unwrap() else {
        panic!("no challenge");
    };
    assert_eq!(second.id, first.id);
    let new = h.last_code();
    // FixedRandom: the two codes differ in every run, so the old one is
    // always tried.
    assert_ne!(old, new);
    assert!(matches!(
        h.engine.answer(&c, &second.id, &old).unwrap(),
        Answer::Retry(..)
    ));
    h.clock.advance(Duration::from_secs(120));
    assert_eq!(h.engine.pending(&c).unwrap(), None, "expired");
    // A challenge-mode login of the same user has an id of its own.
    let Start::Challenge(random) = h.engine.start(&c).unwrap() else {
        panic!("no challenge");
    };
    assert_ne!(random.id, first.id);
    assert_eq!(h.engine.pending(&c).unwrap(), None);
}

#[test]
fn success_resets_the_failure_count() {
    let h = harness("[limits]\nlockout_after = 3\nsms_per_user = \"100/1h\"\n");
    let c = ctx("alice", "sshd");
    for _ in 0..3 {
        let ch = h.start(&c);
        h.answer(&c, &ch, &wrong(&h.last_code()));
        h.answer(&c, &ch, &wrong(&h.last_code()));
        // Stop before the third consecutive failure... by succeeding.
        let ch = h.start(&c);
        assert_eq!(
            h.answer(&c, &ch, &h.last_code()),
            Answer::Done(Verdict::Accept(Accept::CodeVerified))
        );
        h.clock.advance(Duration::from_secs(60));
    }
}

#[test]
fn country_allow_list_is_enforced_at_send_time() {
    let h = harness("[phone]\nallowed_countries = [\"US\"]\n");
    assert_eq!(
        h.engine.start(&ctx("erin", "sshd")).unwrap(),
        Start::Done(Verdict::Reject(Reject::CountryNotAllowed))
    );
    assert_eq!(h.sent_count(), 0);
    h.start(&ctx("alice", "sshd"));
}

#[test]
fn codes_are_alphanumeric_when_configured() {
    let h = harness("[otp]\nalphabet = \"alphanumeric\"\nlength = 8\n");
    let c = ctx("alice", "sshd");
    let ch = h.start(&c);
    let code = h.last_code();
    assert_eq!(code.len(), 8);
    // Typed in lower case with a space: still right.
    let typed = format!("{} {}", code[..4].to_lowercase(), code[4..].to_lowercase());
    assert_eq!(
        h.answer(&c, &ch, &typed),
        Answer::Done(Verdict::Accept(Accept::CodeVerified))
    );
}

/// One scripted answer, computed when the prompt comes.
type Reply = Box<dyn Fn(&Harness) -> String>;

/// A scripted user: answers in order, records what it was shown.
struct ScriptedConversation {
    answers: VecDeque<Reply>,
    shown: Rc<RefCell<Vec<String>>>,
    harness: Rc<Harness>,
    /// Drops info messages, as PAM does under PAM_SILENT.
    silent: bool,
}

impl Conversation for ScriptedConversation {
    fn info(&mut self, text: &str) -> Result<(), ConversationError> {
        if !self.silent {
            self.shown.borrow_mut().push(format!("info: {text}"));
        }
        Ok(())
    }
    fn shows_info(&self) -> bool {
        !self.silent
    }
    fn error(&mut self, text: &str) -> Result<(), ConversationError> {
        self.shown.borrow_mut().push(format!("error: {text}"));
        Ok(())
    }
    fn ask_secret(&mut self, prompt: &str) -> Result<Zeroizing<String>, ConversationError> {
        self.shown.borrow_mut().push(format!("prompt: {prompt}"));
        match self.answers.pop_front() {
            Some(f) => Ok(Zeroizing::new(f(&self.harness))),
            None => Err(ConversationError::Gone {
                detail: "user hung up".into(),
            }),
        }
    }
    fn ask_text(&mut self, prompt: &str) -> Result<Zeroizing<String>, ConversationError> {
        self.shown
            .borrow_mut()
            .push(format!("prompt (echo): {prompt}"));
        match self.answers.pop_front() {
            Some(f) => Ok(Zeroizing::new(f(&self.harness))),
            None => Err(ConversationError::Gone {
                detail: "user hung up".into(),
            }),
        }
    }
}

fn converse(
    h: Harness,
    answers: Vec<Reply>,
) -> (Result<Verdict, FlowError>, Vec<String>, Rc<Harness>) {
    converse_with(h, answers, false)
}

fn converse_with(
    h: Harness,
    answers: Vec<Reply>,
    silent: bool,
) -> (Result<Verdict, FlowError>, Vec<String>, Rc<Harness>) {
    let h = Rc::new(h);
    let shown = Rc::new(RefCell::new(Vec::new()));
    let answers_len = answers.len();
    let mut conv = ScriptedConversation {
        answers: answers.into(),
        shown: shown.clone(),
        harness: h.clone(),
        silent,
    };
    let r = run(&h.engine, &mut conv, &ctx("alice", "sshd"));
    assert!(
        conv.answers.is_empty() || r.is_err(),
        "{} of {answers_len} answers unused",
        conv.answers.len()
    );
    let shown = shown.borrow().clone();
    (r, shown, h)
}

#[test]
fn conversation_wrong_then_resend_then_right() {
    let h = harness("[otp]\nresend = { max = 1, cooldown = \"0s\" }\n");
    let (r, shown, _) = converse(
        h,
        vec![
            Box::new(|h: &Harness| wrong(&h.last_code())),
            Box::new(|_: &Harness| String::new()),
            Box::new(|h: &Harness| h.last_code()),
        ],
    );
    assert_eq!(r.unwrap(), Verdict::Accept(Accept::CodeVerified));
    assert_eq!(
        shown,
        vec![
            "info: Code sent to ******0123.",
            "prompt: SMS code: ",
            "error: Wrong code, 2 tries left.",
            "prompt: SMS code: ",
            "info: New code sent to ******0123.",
            "prompt: SMS code: ",
        ]
    );
}

#[test]
fn a_silent_conversation_names_the_phone_in_the_prompt() {
    // sudo asks PAM_SILENT: info lines are dropped, so the prompt carries
    // where the code (and the resent one) went.
    let h = harness("[otp]\nresend = { max = 1, cooldown = \"0s\" }\n");
    let (r, shown, _) = converse_with(
        h,
        vec![
            Box::new(|h: &Harness| wrong(&h.last_code())),
            Box::new(|_: &Harness| String::new()),
            Box::new(|h: &Harness| h.last_code()),
        ],
        true,
    );
    assert_eq!(r.unwrap(), Verdict::Accept(Accept::CodeVerified));
    assert_eq!(
        shown,
        vec![
            "prompt: SMS code (sent to ******0123): ",
            "error: Wrong code, 2 tries left.",
            "prompt: SMS code (sent to ******0123): ",
            "prompt: SMS code (sent to ******0123): ",
        ]
    );
}

#[test]
fn a_silent_conversation_keeps_the_plain_backup_prompt() {
    let h = harness("[policy]\nno_phone = \"deny\"\n");
    let h = Rc::new(h);
    h.engine.generate_backup_codes("nophone", 2).unwrap();
    let shown = Rc::new(RefCell::new(Vec::new()));
    let mut conv = ScriptedConversation {
        answers: VecDeque::new(),
        shown: shown.clone(),
        harness: h.clone(),
        silent: true,
    };
    let r = run(&h.engine, &mut conv, &ctx("nophone", "sudo"));
    assert!(
        matches!(
            r,
            Err(FlowError::Conversation(ConversationError::Gone { .. }))
        ),
        "{r:?}"
    );
    assert_eq!(*shown.borrow(), vec!["prompt: Backup code: ".to_owned()]);
}

#[test]
fn conversation_hang_up_abandons_the_challenge() {
    let h = harness("");
    let (r, _, h) = converse(h, vec![]);
    assert!(
        matches!(
            r,
            Err(FlowError::Conversation(ConversationError::Gone { .. }))
        ),
        "{r:?}"
    );
    assert!(
        h.audit_text().contains("event=abandoned"),
        "{}",
        h.audit_text()
    );
}

#[test]
fn conversation_tells_why_it_refused() {
    let h = harness("[policy]\nexempt_users = []\n");
    let (r, shown, _) = converse(
        h,
        vec![
            Box::new(|_: &Harness| "000000".into()),
            Box::new(|_: &Harness| "000001".into()),
            Box::new(|_: &Harness| "000002".into()),
        ],
    );
    // The fixed RNG never draws these three codes for alice.
    assert_eq!(r.unwrap(), Verdict::Reject(Reject::WrongCode));
    assert_eq!(shown.last().unwrap(), "error: Too many wrong codes.");
}

#[test]
fn empty_answers_during_the_cooldown_end_the_login() {
    // A client that presses Enter forever (or whose input ended) is cut off.
    let h = harness("[otp]\nresend = { max = 2, cooldown = \"5m\" }\n");
    let answers: Vec<Reply> = (0..200)
        .map(|_| Box::new(|_: &Harness| String::new()) as Reply)
        .collect();
    let h = Rc::new(h);
    let shown = Rc::new(RefCell::new(Vec::new()));
    let mut conv = ScriptedConversation {
        answers: answers.into(),
        shown: shown.clone(),
        harness: h.clone(),
        silent: false,
    };
    let r = run(&h.engine, &mut conv, &ctx("alice", "sshd")).unwrap();
    assert_eq!(r, Verdict::Reject(Reject::NoCodeEntered));
    assert_eq!(conv.answers.len(), 200 - 4);
    assert_eq!(
        shown.borrow().last().unwrap(),
        "error: No code was entered."
    );
}

// ------------------------------------------------ backup codes, enrollment

fn backup_codes(h: &Harness, user: &str, n: usize) -> Vec<String> {
    crate::backup::generate(
        h.engine.store(),
        &OtpKey::from_bytes(&[3u8; 32]),
        &crate::random::OsRandom,
        user,
        n,
        0,
    )
    .unwrap()
    .iter()
    .map(|c| c.to_string())
    .collect()
}

#[test]
fn backup_code_at_the_code_prompt_is_accepted_once() {
    let h = harness("");
    let codes = backup_codes(&h, "alice", 3);
    let c = ctx("alice", "sshd");
    let ch = h.start(&c);
    assert_eq!(
        h.answer(&c, &ch, &codes[0]),
        Answer::Done(Verdict::Accept(Accept::BackupCode { left: 2 }))
    );
    assert_eq!(
        Accept::BackupCode { left: 2 }.user_message().unwrap(),
        "Backup code accepted; 2 left. Ask your administrator for new ones."
    );
    // The same code again is a wrong code.
    let ch = h.start(&c);
    assert!(matches!(
        h.answer(&c, &ch, &codes[0]),
        Answer::Retry(Retry::WrongCode { tries_left: 2 }, _)
    ));
    assert!(
        h.audit_text().contains("reason=backup_code"),
        "{}",
        h.audit_text()
    );
    assert!(!h.audit_text().contains(&codes[1]));
}

#[test]
fn backup_codes_can_be_turned_off() {
    let h = harness("[policy]\nbackup_codes = false\n");
    let codes = backup_codes(&h, "alice", 1);
    let c = ctx("alice", "sshd");
    let ch = h.start(&c);
    assert!(matches!(
        h.answer(&c, &ch, &codes[0]),
        Answer::Retry(Retry::WrongCode { .. }, _)
    ));
}

#[test]
fn no_phone_deny_with_backup_codes_asks_for_one() {
    let h = harness("");
    let c = ctx("carol", "sshd");
    assert_eq!(
        h.engine.start(&c).unwrap(),
        Start::Done(Verdict::Reject(Reject::NoPhone))
    );
    let codes = backup_codes(&h, "carol", 2);
    let ch = h.start(&c);
    assert_eq!(ch.step, Step::BackupOnly);
    assert_eq!(ch.prompt(), BACKUP_PROMPT);
    assert_eq!(h.sent_count(), 0);
    assert!(matches!(
        h.answer(&c, &ch, ""),
        Answer::Retry(Retry::NeedBackupCode, _)
    ));
    assert!(matches!(
        h.answer(&c, &ch, "123456"),
        Answer::Retry(Retry::WrongCode { tries_left: 2 }, _)
    ));
    assert_eq!(
        h.answer(&c, &ch, &codes[1]),
        Answer::Done(Verdict::Accept(Accept::BackupCode { left: 1 }))
    );
}

#[test]
fn provider_down_falls_back_to_a_backup_code() {
    let down = FakeSms::failing("down", SendError::Transient("timeout".into()));
    let h = harness_with("", vec![Box::new(down)]);
    let c = ctx("alice", "sshd");
    assert_eq!(
        h.engine.start(&c).unwrap(),
        Start::Done(Verdict::Reject(Reject::ProviderDown))
    );
    let codes = backup_codes(&h, "alice", 1);
    let ch = h.start(&c);
    assert_eq!(ch.step, Step::BackupOnly);
    assert!(ch.intro().contains("could not be sent"), "{}", ch.intro());
    assert_eq!(
        h.answer(&c, &ch, &codes[0]),
        Answer::Done(Verdict::Accept(Accept::BackupCode { left: 0 }))
    );
}

#[test]
fn opt_out_is_honoured_only_when_allowed_and_not_mandatory() {
    for (toml, honoured) in [
        ("", false),
        ("[policy]\nuser_opt_out = true\n", true),
        ("[policy]\nuser_opt_out = true\nmandatory = true\n", false),
    ] {
        let h = harness(toml);
        h.engine
            .store()
            .set_opt_out("alice", Some(("admin:root", 0)))
            .unwrap();
        let r = h.engine.start(&ctx("alice", "sshd")).unwrap();
        if honoured {
            assert_eq!(
                r,
                Start::Done(Verdict::NotApplicable(Skip::OptedOut)),
                "{toml}"
            );
        } else {
            assert!(matches!(r, Start::Challenge(_)), "{toml}: {r:?}");
        }
    }
}

#[test]
fn enrollment_saves_the_number_only_after_the_code() {
    let h = harness("[policy]\nno_phone = \"enroll\"\n[phone]\ndefault_region = \"US\"\nallowed_countries = [\"US\"]\n");
    let c = ctx("carol", "sshd");
    let ch = h.start(&c);
    assert_eq!(ch.step, Step::EnrollNumber);
    assert!(ch.echo());
    assert_eq!(h.sent_count(), 0);
    // Not a number, then a country not allowed: asked again.
    assert!(matches!(
        h.answer(&c, &ch, "call me"),
        Answer::Retry(Retry::BadNumber(_), _)
    ));
    assert!(matches!(
        h.answer(&c, &ch, "+49 30 1234567"),
        Answer::Retry(Retry::CountryNotAllowed, _)
    ));
    // A national number in the default region.
    let Answer::Retry(Retry::EnrollCodeSent { phone_masked }, info) =
        h.answer(&c, &ch, "(202) 555-0177")
    else {
        panic!("expected a code to the new number")
    };
    assert_eq!(phone_masked, "******0177");
    assert_eq!(info.step, Step::EnrollCode);
    assert_eq!(h.sms.sent.borrow().last().unwrap().0, "+12025550177");
    assert!(
        h.engine.store().phone("carol").unwrap().is_none(),
        "not before the code"
    );
    assert!(matches!(
        h.answer(&c, &ch, &wrong(&h.last_code())),
        Answer::Retry(Retry::WrongCode { .. }, _)
    ));
    assert!(h.engine.store().phone("carol").unwrap().is_none());
    assert_eq!(
        h.answer(&c, &ch, &h.last_code()),
        Answer::Done(Verdict::Accept(Accept::Enrolled))
    );
    let rec = h.engine.store().phone("carol").unwrap().unwrap();
    assert_eq!(rec.e164, "+12025550177");
    assert_eq!(rec.set_by, "enroll:sshd");
    // The next login uses it, and offers no enrollment.
    let ch = h.start(&c);
    assert_eq!(ch.step, Step::Code);
    assert_eq!(ch.phone_masked, "******0177");
}

#[test]
fn enrollment_never_replaces_a_registered_number() {
    let h = harness("[policy]\nno_phone = \"enroll\"\n");
    let c = ctx("carol", "sshd");
    let ch = h.start(&c);
    let Answer::Retry(Retry::EnrollCodeSent { .. }, _) = h.answer(&c, &ch, "+12025550177") else {
        panic!()
    };
    // An admin registers another number meanwhile: it stays.
    h.engine
        .store()
        .set_phone(
            "carol",
            &crate::store::PhoneRecord {
                e164: "+12025550188".into(),
                set_at: 0,
                set_by: "admin:root".into(),
            },
        )
        .unwrap();
    assert_eq!(
        h.answer(&c, &ch, &h.last_code()),
        Answer::Done(Verdict::Accept(Accept::Enrolled))
    );
    assert_eq!(
        h.engine.store().phone("carol").unwrap().unwrap().e164,
        "+12025550188"
    );
    // Users with a number (from a file) never see enrollment.
    assert_eq!(h.start(&ctx("alice", "sshd")).step, Step::Code);
}

#[test]
fn enrollment_conversation() {
    let h = harness("[policy]\nno_phone = \"enroll\"\n");
    let h = Rc::new(h);
    let shown = Rc::new(RefCell::new(Vec::new()));
    let answers: Vec<Reply> = vec![
        Box::new(|_: &Harness| "not a number".into()),
        Box::new(|_: &Harness| "+1 202 555 0177".into()),
        Box::new(|h: &Harness| h.last_code()),
    ];
    let mut conv = ScriptedConversation {
        answers: answers.into(),
        shown: shown.clone(),
        harness: h.clone(),
        silent: false,
    };
    let r = run(&h.engine, &mut conv, &ctx("carol", "sshd")).unwrap();
    assert_eq!(r, Verdict::Accept(Accept::Enrolled));
    let shown = shown.borrow();
    assert_eq!(shown[1], "prompt (echo): Mobile number for SMS codes: ");
    assert!(shown[2].starts_with("error: "), "{shown:?}");
    assert_eq!(shown[3], "prompt (echo): Mobile number for SMS codes: ");
    assert_eq!(
        shown[4],
        "info: Code sent to ******0177. Enter it to register this number."
    );
    assert_eq!(shown[5], "prompt: SMS code: ");
    assert_eq!(
        shown[6],
        "info: Your mobile number is now registered for SMS codes."
    );
}

#[test]
fn store_number_comes_before_the_directories() {
    let h = harness("");
    h.engine
        .store()
        .set_phone(
            "alice",
            &crate::store::PhoneRecord {
                e164: "+12025550188".into(),
                set_at: 0,
                set_by: "admin:root".into(),
            },
        )
        .unwrap();
    let found = h.engine.find_phone("alice").unwrap().unwrap();
    assert_eq!(found.phone.e164(), "+12025550188");
    assert_eq!(found.source, "store (set by admin:root)");
    assert!(h.engine.store().clear_phone("alice").unwrap());
    assert_eq!(
        h.engine.find_phone("alice").unwrap().unwrap().phone.e164(),
        ALICE
    );
}

#[test]
fn only_a_failed_code_round_ends_the_round() {
    // What pam_smsotp remembers on the handle: a retry after these sends
    // nothing; after the others the flow itself decides again (a limit or
    // lockout still refuses, with its own text).
    for r in [Reject::WrongCode, Reject::Expired, Reject::NoCodeEntered] {
        assert!(r.ends_code_round(), "{r:?}");
    }
    for r in [
        Reject::LockedOut,
        Reject::RateLimited(Limit::Global),
        Reject::NoPhone,
        Reject::ProviderDown,
        Reject::SendRefused,
        Reject::CountryNotAllowed,
        Reject::UnknownChallenge,
    ] {
        assert!(!r.ends_code_round(), "{r:?}");
    }
}

/// The store's one-transaction check of round two (SQL) and the rule as
/// flow states it ([`machine::code_opens`]) give the same answer for every
/// way a code can fail to open a challenge, and for the one way it opens.
#[test]
fn consume_code_agrees_with_the_rule() {
    use crate::store::sqlite::SqliteStore;
    use crate::store::{ChallengeRecord, Store};
    let now: Millis = 1_700_000_000_000;
    let right = [7u8; 32];
    let alice = ctx("alice", "sshd");
    let base = ChallengeRecord {
        id: crate::otp::ChallengeId([1; 16]),
        user: "alice".into(),
        service: "sshd".into(),
        code_mac: right,
        phone_masked: "******0123".into(),
        created_at: now - 1_000,
        sent_at: now - 1_000,
        expires_at: now + 60_000,
        attempts_left: 3,
        resends_used: 0,
        step: Step::Code,
        pending_phone: None,
    };
    let other_user = ChallengeRecord {
        user: "bob".into(),
        ..base.clone()
    };
    let other_service = ChallengeRecord {
        service: "sudo".into(),
        ..base.clone()
    };
    let expired = ChallengeRecord {
        expires_at: now,
        ..base.clone()
    };
    let backup_only = ChallengeRecord {
        step: Step::BackupOnly,
        ..base.clone()
    };
    let enrolling = ChallengeRecord {
        step: Step::EnrollCode,
        pending_phone: Some(ALICE.into()),
        ..base.clone()
    };
    let cases = [
        ("usable", &base, right, false, true),
        ("wrong code", &base, [8u8; 32], false, false),
        ("locked out", &base, right, true, false),
        ("another user's", &other_user, right, false, false),
        ("another service's", &other_service, right, false, false),
        ("expired", &expired, right, false, false),
        ("backup code only", &backup_only, right, false, false),
        ("enrollment code", &enrolling, right, false, false),
    ];
    for (what, rec, mac, lock, expected) in cases {
        let store = SqliteStore::open_in_memory().unwrap();
        store.insert_challenge(rec).unwrap();
        if lock {
            store
                .record_failure("alice", now - 1, 1, Duration::from_secs(900))
                .unwrap();
        }
        let locked = store
            .answer_state(&rec.id, "alice", now)
            .unwrap()
            .locked_until;
        assert_eq!(locked.is_some(), lock, "{what}: the lockout is set up");
        let rule = machine::code_opens(rec, &alice, Step::Code, locked.is_some(), &mac, now);
        let sql = store
            .consume_code(&rec.id, "alice", "sshd", &mac, now)
            .unwrap()
            .is_some();
        assert_eq!(rule, expected, "{what}: the rule");
        assert_eq!(sql, expected, "{what}: consume_code");
    }
}

/// The one-line and append-mode texts RADIUS shows are the core's.
#[test]
fn one_line_and_appended_texts() {
    let info = |step, attempts_left| ChallengeInfo {
        id: crate::otp::ChallengeId([0; 16]),
        phone_masked: "******0123".into(),
        expires_in: Duration::from_secs(300),
        attempts_left,
        step,
    };
    assert_eq!(
        info(Step::Code, 3).intro_with_tries(),
        "Code sent to ******0123. 3 tries left."
    );
    assert_eq!(
        info(Step::Code, 1).intro_with_tries(),
        "Code sent to ******0123. 1 try left."
    );
    assert_eq!(
        info(Step::BackupOnly, 3).intro_with_tries(),
        info(Step::BackupOnly, 3).intro()
    );
    assert_eq!(
        info(Step::Code, 3).appended_message(),
        "Code sent to ******0123. Log in again with your password followed by the code."
    );
    assert_eq!(
        info(Step::BackupOnly, 3).appended_message(),
        "The code could not be sent. Enter one of your backup codes. \
         Log in again with your password followed by a backup code."
    );
    assert_eq!(
        info(Step::EnrollNumber, 3).appended_message(),
        Reject::NoPhone.user_message()
    );
    assert_eq!(
        Retry::WrongCode { tries_left: 2 }.appended_message(),
        "Wrong code, 2 tries left. Log in again with your password followed by the code."
    );
}

/// A directory that knows no one, may be down (with `on_unavailable =
/// "next"`), and records what enrollment writes back to it.
#[derive(Clone, Default)]
struct WritingDirectory {
    writes: Rc<RefCell<Vec<(String, String)>>>,
    refuse_writes: bool,
    down: bool,
}

impl Directory for WritingDirectory {
    fn name(&self) -> String {
        "ldap fake".into()
    }
    fn lookup(&self, _user: &str) -> Result<Option<Entry>, DirectoryError> {
        if self.down {
            return Err(DirectoryError::Unavailable {
                directory: self.name(),
                error: crate::directory::ldap::LdapError::Timeout {
                    url: "ldap://fake".into(),
                    step: "binding",
                },
            });
        }
        Ok(None)
    }
    fn next_when_unavailable(&self) -> bool {
        true
    }
    fn write_back(&self, user: &str, e164: &str) -> Result<bool, DirectoryError> {
        self.writes
            .borrow_mut()
            .push((user.to_owned(), e164.to_owned()));
        if self.refuse_writes {
            return Err(DirectoryError::Ldap {
                directory: self.name(),
                error: crate::directory::ldap::LdapError::Refused {
                    url: "ldap://fake".into(),
                    operation: "modify".into(),
                    code: 50,
                    message: String::new(),
                },
            });
        }
        Ok(true)
    }
}

/// Enrolls carol at (202) 555-0177 through `h`.
fn enroll_carol(h: &Harness) -> Answer {
    let c = ctx("carol", "sshd");
    let ch = h.start(&c);
    assert_eq!(ch.step, Step::EnrollNumber);
    assert!(matches!(
        h.answer(&c, &ch, "(202) 555-0177"),
        Answer::Retry(Retry::EnrollCodeSent { .. }, _)
    ));
    h.answer(&c, &ch, &h.last_code())
}

const ENROLL: &str = "[policy]\nno_phone = \"enroll\"\n[phone]\ndefault_region = \"US\"\n";

#[test]
fn an_enrolled_number_is_written_back_to_the_directory() {
    let d = WritingDirectory::default();
    let h = harness_dirs(ENROLL, vec![], vec![Box::new(d.clone())]);
    assert_eq!(
        enroll_carol(&h),
        Answer::Done(Verdict::Accept(Accept::Enrolled))
    );
    assert_eq!(
        *d.writes.borrow(),
        [("carol".to_owned(), "+12025550177".to_owned())]
    );
    assert!(
        h.audit_text().contains("directory_write_back"),
        "{}",
        h.audit_text()
    );
    assert!(!h.audit_text().contains("directory_write_back_failed"));
    // A wrong code writes nothing.
    let d = WritingDirectory::default();
    let h = harness_dirs(ENROLL, vec![], vec![Box::new(d.clone())]);
    let c = ctx("carol", "sshd");
    let ch = h.start(&c);
    h.answer(&c, &ch, "(202) 555-0177");
    h.answer(&c, &ch, &wrong(&h.last_code()));
    assert!(d.writes.borrow().is_empty());
}

#[test]
fn a_failed_write_back_keeps_the_login_and_the_stored_number() {
    let d = WritingDirectory {
        refuse_writes: true,
        ..WritingDirectory::default()
    };
    let h = harness_dirs(ENROLL, vec![], vec![Box::new(d.clone())]);
    assert_eq!(
        enroll_carol(&h),
        Answer::Done(Verdict::Accept(Accept::Enrolled))
    );
    assert_eq!(d.writes.borrow().len(), 1);
    assert_eq!(
        h.engine.store().phone("carol").unwrap().unwrap().e164,
        "+12025550177"
    );
    let text = h.audit_text();
    assert!(text.contains("directory_write_back_failed"), "{text}");
    assert!(text.contains("insufficientAccessRights"), "{text}");
}

#[test]
fn an_unavailable_directory_marked_next_is_skipped_and_audited() {
    let d = WritingDirectory {
        down: true,
        ..WritingDirectory::default()
    };
    let h = harness_dirs("", vec![], vec![Box::new(d)]);
    let ch = h.start(&ctx("alice", "sshd"));
    assert_eq!(ch.step, Step::Code);
    let text = h.audit_text();
    assert!(text.contains("directory_skipped"), "{text}");
    assert!(text.contains("ldap://fake"), "{text}");
}

/// The PAM path opens a Redis store on first use: with the server down an
/// exempt user is let through without the store being reached, and a user
/// who needs a code is refused as unavailable, not let in, within the
/// configured timeouts.
#[test]
fn a_login_engine_decides_exemption_before_reaching_a_server_store() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let phones = dir.path().join("phones.toml");
    std::fs::write(&phones, format!("alice = \"{ALICE}\"\n")).unwrap();
    let toml = format!(
        "[policy]\nexempt_users = [\"bob\"]\n\n[otp]\nkey_file = \"{}\"\n\n\
         [store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\n\
         connect_timeout = \"300ms\"\ntimeout = \"300ms\"\n\n\
         [[directory]]\nkind = \"file\"\npath = \"{}\"\n\n\
         [audit]\nsyslog = false\n",
        dir.path().join("otp.key").display(),
        phones.display()
    );
    let cfg = Config::from_toml(Path::new("/test/smsotp.toml"), &toml).unwrap();
    let log = LogOptions {
        ident: "test".into(),
        debug: false,
        stderr: false,
        server: None,
    };
    // The eager open (what the admin tool's checks use) sees the server down.
    assert!(matches!(
        Engine::open(cfg.clone(), &log),
        Err(FlowError::Store(StoreError::Unavailable { .. }))
    ));
    let engine = Engine::open_for_login(cfg, &log).unwrap();
    assert_eq!(
        engine.start(&ctx("bob", "sshd")).unwrap(),
        Start::Done(Verdict::NotApplicable(Skip::ExemptUser))
    );
    let t = std::time::Instant::now();
    let e = engine.start(&ctx("alice", "sshd")).unwrap_err();
    assert_eq!(e.failure(), Failure::Unavailable, "{e}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

// ------------------------------------------------------------ receipts

/// Keeps what the engine hands it, as smsotp-radiusd's registry does.
#[derive(Default)]
struct CollectSink(
    std::sync::Mutex<Vec<SentCode>>,
    std::sync::Mutex<Vec<crate::otp::ChallengeId>>,
);

impl ReceiptSink for CollectSink {
    fn sent(&self, code: SentCode) {
        self.0.lock().unwrap().push(code);
    }
    fn done(&self, id: &crate::otp::ChallengeId) {
        self.1.lock().unwrap().push(*id);
    }
}

fn receipt_harness() -> (Harness, FakeSms, FakeSms, std::sync::Arc<CollectSink>) {
    receipt_harness_with("")
}

fn receipt_harness_with(
    extra_toml: &str,
) -> (Harness, FakeSms, FakeSms, std::sync::Arc<CollectSink>) {
    let first = FakeSms {
        tracked: true,
        ..FakeSms::named("smsc")
    };
    let second = FakeSms::named("backup");
    let mut h = harness_with(
        extra_toml,
        vec![Box::new(first.clone()), Box::new(second.clone())],
    );
    let sink = std::sync::Arc::new(CollectSink::default());
    h.engine.set_receipt_sink(sink.clone());
    (h, first, second, sink)
}

#[test]
fn a_failed_receipt_sends_the_same_code_once_through_the_next_provider() {
    use crate::sms::smpp::ReceiptState;
    let (h, first, second, sink) = receipt_harness();
    let c = ctx("alice", "sshd");
    let ch = h.start(&c);
    let sent = sink.0.lock().unwrap().pop().expect("the sink got the code");
    assert_eq!(
        (
            sent.message_id.as_str(),
            sent.provider_index,
            sent.provider.as_str()
        ),
        ("m1", 0, "smsc")
    );
    let code = first.sent.borrow()[0]
        .1
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(&*sent.code, &code);
    assert!(!format!("{sent:?}").contains(&code), "Debug hides the code");

    let r = h
        .engine
        .resend_after_receipt(&sent, ReceiptState::Undeliverable)
        .unwrap();
    assert_eq!(r, ReceiptResend::Resent("backup".into()));
    let again = second.sent.borrow().clone();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, ALICE);
    assert!(
        again[0].1.starts_with(&code),
        "the same code: {}",
        again[0].1
    );
    let log = h.audit_text();
    assert!(log.contains("event=resent_after_receipt"), "{log}");
    assert!(log.contains("from=smsc state=UNDELIV"), "{log}");
    assert!(!log.contains(&code), "no code in the log: {log}");
    // The backup provider gave no id: nothing more to wait for.
    assert!(sink.0.lock().unwrap().is_empty());
    // Counted: the first send through smsc, the resend through backup.
    assert_eq!(
        counted(&h),
        vec![
            row("backup", "US", "sent", 1),
            row("backup", "US", "resent", 1),
            row("smsc", "US", "sent", 1),
        ]
    );

    // The code still opens the login; once used, a receipt sends nothing.
    assert_eq!(
        h.answer(&c, &ch, &code),
        Answer::Done(Verdict::Accept(Accept::CodeVerified))
    );
    assert_eq!(*sink.1.lock().unwrap(), vec![ch.id], "the sink forgets it");
    let r = h
        .engine
        .resend_after_receipt(&sent, ReceiptState::Rejected)
        .unwrap();
    assert_eq!(r, ReceiptResend::NotOpen);
    assert_eq!(second.sent.borrow().len(), 1);
}

#[test]
fn no_resend_for_an_expired_or_replaced_code_nor_past_the_last_provider() {
    use crate::sms::smpp::ReceiptState;
    let (h, _first, second, sink) = receipt_harness();
    let c = ctx("alice", "sshd");
    let ch = h.start(&c);
    let sent = sink.0.lock().unwrap().pop().unwrap();
    // Replaced by a resend the user asked for: the old code is closed.
    h.clock.advance(Duration::from_secs(61));
    let _ = h.answer(&c, &ch, "");
    let replaced = sink.0.lock().unwrap().pop().expect("the new code too");
    assert_ne!(&*replaced.code, &*sent.code);
    assert_eq!(
        h.engine
            .resend_after_receipt(&sent, ReceiptState::Undeliverable)
            .unwrap(),
        ReceiptResend::NotOpen
    );
    // Expired: closed.
    h.clock.advance(Duration::from_secs(301));
    assert_eq!(
        h.engine
            .resend_after_receipt(&replaced, ReceiptState::Expired)
            .unwrap(),
        ReceiptResend::NotOpen
    );
    assert!(second.sent.borrow().is_empty());

    // Sent by the last provider: logged, nothing sent.
    let bob = ctx("bob", "sshd");
    h.start(&bob);
    let mut last = sink.0.lock().unwrap().pop().unwrap();
    last.provider_index = 1;
    last.provider = "backup".into();
    assert_eq!(
        h.engine
            .resend_after_receipt(&last, ReceiptState::Undeliverable)
            .unwrap(),
        ReceiptResend::NoNextProvider
    );
    assert!(second.sent.borrow().is_empty());
    assert!(h.audit_text().contains("event=receipt_failed"));
}

/// The second SMS after a failed receipt costs what any SMS costs: a
/// full window (here the number's) or a spent budget refuses it, and it
/// is logged with the limit; the code still opens the login.
#[test]
fn a_resend_after_a_receipt_meets_the_limits_and_the_breaker() {
    use crate::sms::smpp::ReceiptState;
    let (h, first, second, sink) = receipt_harness_with("[limits]\nsms_per_number = \"1/1d\"\n");
    let c = ctx("alice", "sshd");
    let ch = h.start(&c);
    let sent = sink.0.lock().unwrap().pop().unwrap();
    assert_eq!(
        h.engine
            .resend_after_receipt(&sent, ReceiptState::Undeliverable)
            .unwrap(),
        ReceiptResend::Limited(Limit::PerNumber)
    );
    assert!(
        second.sent.borrow().is_empty(),
        "nothing sent past the limit"
    );
    let (lvl, e) = events_of(&h, "receipt_failed").pop().unwrap();
    assert_eq!((lvl, e.limit), (Level::Warning, Some("sms_per_number")));
    let d = e.detail.unwrap();
    assert!(
        d.contains("not sent again: sms_per_number = 1/1day reached"),
        "{d}"
    );
    let code = first.sent.borrow()[0]
        .1
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        h.answer(&c, &ch, &code),
        Answer::Done(Verdict::Accept(Accept::CodeVerified))
    );

    // The budget: the first SMS spends it, the second trips the breaker
    // (one alert) instead of being sent.
    let (h, _first, second, sink) = receipt_harness_with("[limits]\ndaily_budget = 1\n");
    h.start(&c);
    let sent = sink.0.lock().unwrap().pop().unwrap();
    assert_eq!(
        h.engine
            .resend_after_receipt(&sent, ReceiptState::Rejected)
            .unwrap(),
        ReceiptResend::Limited(Limit::DailyBudget)
    );
    assert!(second.sent.borrow().is_empty());
    assert_eq!(events_of(&h, "breaker_tripped").len(), 1);
}

/// The back-off slows what a user (or someone typing their name) asks
/// for; a resend after a failed receipt stands in for an SMS that never
/// arrived, so it does not wait for it, and counts in the streak.
#[test]
fn a_resend_after_a_receipt_does_not_wait_for_the_backoff_but_counts_in_it() {
    use crate::sms::smpp::ReceiptState;
    let (h, _first, second, sink) =
        receipt_harness_with("[limits]\nbackoff = { first = \"1m\", max = \"8m\" }\n");
    let c = ctx("alice", "sshd");
    h.start(&c);
    let sent = sink.0.lock().unwrap().pop().unwrap();
    assert_eq!(
        h.engine
            .resend_after_receipt(&sent, ReceiptState::Undeliverable)
            .unwrap(),
        ReceiptResend::Resent("backup".into())
    );
    assert_eq!(second.sent.borrow().len(), 1);
    assert!(
        events_of(&h, "limit_monitor").is_empty(),
        "not logged as monitored"
    );
    // Two SMS in the streak: a new login 61 s on must wait for the
    // back-off's second step (2 min after the last).
    h.clock.advance(Duration::from_secs(61));
    assert_eq!(
        refused_by(&h, &c),
        Reject::RateLimited(Limit::Backoff {
            wait: Duration::from_secs(59)
        })
    );
}

/// The audit lines of `event`, with their levels.
fn events_of(h: &Harness, event: &str) -> Vec<(Level, Event)> {
    h.audit
        .0
        .borrow()
        .iter()
        .filter(|(_, e)| e.event == event)
        .cloned()
        .collect()
}

/// The spend breaker: the send that finds the budget spent is refused
/// and alerts, once; later ones are refused quietly; codes sent before
/// the trip still verify.
#[test]
fn spend_breaker_trips_once_alerts_once_and_issued_codes_still_verify() {
    let h = harness("[limits]\ndaily_budget = 2\n");
    let a = ctx("alice", "sshd");
    let ch_a = h.start(&a);
    let code_a = h.last_code();
    h.start(&ctx("bob", "sshd"));
    assert_eq!(
        refused_by(&h, &ctx("erin", "sshd")),
        Reject::RateLimited(Limit::DailyBudget)
    );
    assert_eq!(
        refused_by(&h, &ctx("dave", "sshd")),
        Reject::RateLimited(Limit::DailyBudget)
    );
    assert_eq!(h.sent_count(), 2);
    let alerts = events_of(&h, "breaker_tripped");
    assert_eq!(alerts.len(), 1, "{}", h.audit_text());
    let (level, e) = &alerts[0];
    assert_eq!(*level, Level::Alert);
    assert_eq!(e.user, "erin");
    assert_eq!(e.limit, Some("daily_budget"));
    let detail = e.detail.clone().unwrap();
    assert!(
        detail.contains("spent 2 of daily_budget = 2 SMS per 1day"),
        "{detail}"
    );
    assert!(!e.to_line().contains("49301234567"), "{}", e.to_line());
    assert!(h.audit_text().contains("limit=daily_budget"));
    // Alice's code, sent before the trip, still opens.
    assert!(matches!(
        h.answer(&a, &ch_a, &code_a),
        Answer::Done(Verdict::Accept(_))
    ));
    // The user reads what any limit beyond the user says.
    assert!(Reject::RateLimited(Limit::DailyBudget)
        .user_message()
        .contains("maximum"));
}

/// While the breaker is tripped, a user with backup codes is asked for
/// one (no SMS), as when no provider can send.
#[test]
fn spend_breaker_offers_backup_codes() {
    let h = harness("[limits]\ndaily_budget = 1\n");
    h.start(&ctx("bob", "sshd"));
    let codes = backup_codes(&h, "alice", 2);
    let a = ctx("alice", "sshd");
    let ch = h.start(&a);
    assert_eq!(ch.step, Step::BackupOnly);
    assert_eq!(h.sent_count(), 1);
    assert_eq!(
        h.answer(&a, &ch, &codes[0]),
        Answer::Done(Verdict::Accept(Accept::BackupCode { left: 1 }))
    );
    let fb = events_of(&h, "backup_fallback");
    assert_eq!(fb.len(), 1);
    assert_eq!(fb[0].1.limit, Some("daily_budget"));
    // The fallback's send found the budget spent: it alerted, once.
    assert_eq!(events_of(&h, "breaker_tripped").len(), 1);
}

/// Each SMS adds its country's cost; the budget is in cost units.
#[test]
fn spend_breaker_weighs_each_country() {
    let h = harness("[limits]\ndaily_budget = 10.0\nsms_cost = { default = 1, DE = 6.5 }\n");
    h.start(&ctx("erin", "sshd"));
    h.start(&ctx("alice", "sshd"));
    h.start(&ctx("bob", "sshd"));
    // 8.5 spent: another 6.5 to DE would pass 10, a 1 to the US not.
    h.clock.advance(Duration::from_secs(3700));
    assert_eq!(
        refused_by(&h, &ctx("erin", "sshd")),
        Reject::RateLimited(Limit::DailyBudget)
    );
    // Tripped: even the cheap one is refused now.
    h.clock.advance(Duration::from_secs(3700));
    assert_eq!(
        refused_by(&h, &ctx("alice", "sshd")),
        Reject::RateLimited(Limit::DailyBudget)
    );
    let w = h.engine.budget_window().unwrap();
    let st = h.engine.store().breaker(&w, h.engine.now()).unwrap();
    assert_eq!(st.spent, 8_500);
    assert_eq!(st.trip.unwrap().user, "erin");
    let (_, e) = &events_of(&h, "breaker_tripped")[0];
    assert!(
        e.detail
            .as_deref()
            .unwrap()
            .contains("spent 8.5 of daily_budget = 10 cost units"),
        "{e:?}"
    );
}

/// Monitor mode: every SMS goes out; the would-be refusals are logged
/// as `limit_monitor`, and nothing trips.
#[test]
fn spend_breaker_in_monitor_mode_sends_and_logs() {
    let h = harness("[limits]\ndaily_budget = 1\nmonitor = [\"daily_budget\"]\n");
    h.start(&ctx("alice", "sshd"));
    h.start(&ctx("bob", "sshd"));
    h.start(&ctx("erin", "sshd"));
    assert_eq!(h.sent_count(), 3);
    let m = events_of(&h, "limit_monitor");
    assert_eq!(m.len(), 2, "{}", h.audit_text());
    assert_eq!(m[0].1.limit, Some("daily_budget"));
    let d = m[0].1.detail.as_deref().unwrap();
    assert!(d.contains("would have tripped the spend breaker"), "{d}");
    assert!(events_of(&h, "breaker_tripped").is_empty());
    let w = h.engine.budget_window().unwrap();
    let st = h.engine.store().breaker(&w, h.engine.now()).unwrap();
    assert_eq!((st.trip, st.spent), (None, 3_000));
}

/// An admin's reset lets the next login send at once; the next trip
/// alerts again.
#[test]
fn spend_breaker_reset_sends_again_and_the_next_trip_alerts() {
    let h = harness("[limits]\ndaily_budget = 1\n");
    h.start(&ctx("alice", "sshd"));
    refused_by(&h, &ctx("bob", "sshd"));
    let w = h.engine.budget_window().unwrap();
    let before = h.engine.store().reset_breaker(&w, h.engine.now()).unwrap();
    assert_eq!(before.trip.unwrap().user, "bob");
    h.start(&ctx("bob", "sshd"));
    assert_eq!(h.sent_count(), 2);
    refused_by(&h, &ctx("erin", "sshd"));
    assert_eq!(events_of(&h, "breaker_tripped").len(), 2);
}

/// A resend asked for while the breaker is tripped sends nothing (the
/// resend trips it here, and alerts); the code already sent still opens.
#[test]
fn a_resend_meets_the_spend_breaker_and_the_sent_code_still_opens() {
    let h = harness("[limits]\ndaily_budget = 1\n[otp]\nresend = { max = 2, cooldown = \"0s\" }\n");
    let c = ctx("alice", "sshd");
    let ch = h.start(&c);
    let code = h.last_code();
    assert!(matches!(
        h.answer(&c, &ch, ""),
        Answer::Retry(Retry::ResendLimited, _)
    ));
    assert_eq!(h.sent_count(), 1);
    assert_eq!(events_of(&h, "breaker_tripped").len(), 1);
    assert!(matches!(
        h.answer(&c, &ch, &code),
        Answer::Done(Verdict::Accept(_))
    ));
}

/// The day's counters of the harness's store, as (provider, country,
/// counter name, count).
fn counted(h: &Harness) -> Vec<(String, String, String, u64)> {
    let now = h.engine.now();
    h.engine
        .store()
        .counters(crate::store::Day::of(now), now)
        .unwrap()
        .into_iter()
        .map(|(k, n)| (k.provider, k.country, k.what.name(), n))
        .collect()
}

fn row(p: &str, c: &str, w: &str, n: u64) -> (String, String, String, u64) {
    (p.into(), c.into(), w.into(), n)
}

/// The engine counts in the store: each provider that failed and the one
/// that took the SMS, by country; a refusal by the limit that refused
/// (no provider); a monitored limit apart.
#[test]
fn sends_failures_refusals_and_monitored_limits_are_counted() {
    let primary = FakeSms::failing("primary", SendError::Transient("timeout".into()));
    let backup = FakeSms::named("backup");
    let h = harness_with(
        "[limits]\nsms_per_country = { US = \"1/1d\", DE = \"1/1d\" }\nsms_per_number = \"1/1d\"\n\
         monitor = [\"sms_per_country\"]\n",
        vec![Box::new(primary), Box::new(backup)],
    );
    h.start(&ctx("alice", "sshd"));
    // bob: US again, over the monitored country limit; sent.
    h.start(&ctx("bob", "sshd"));
    // dave shares alice's number: refused by the number's limit.
    refused_by(&h, &ctx("dave", "sshd"));
    h.start(&ctx("erin", "sshd"));
    assert_eq!(
        counted(&h),
        vec![
            row("-", "US", "refused:sms_per_number", 1),
            row("-", "US", "monitored:sms_per_country", 1),
            row("backup", "DE", "sent", 1),
            row("backup", "US", "sent", 2),
            row("primary", "DE", "failed", 1),
            row("primary", "US", "failed", 2),
        ]
    );
}

/// A store that cannot take the count: a warning, and the login goes on.
#[test]
fn a_count_that_fails_never_fails_the_login() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    let store = SqliteStore::open(&p, Duration::from_secs(1)).unwrap();
    rusqlite::Connection::open(&p)
        .unwrap()
        .execute_batch("DROP TABLE sms_count")
        .unwrap();
    let h = harness_full("", vec![], Vec::new(), Box::new(store));
    let c = ctx("alice", "sshd");
    let ch = h.start(&c);
    let code = h.last_code();
    assert_eq!(
        h.answer(&c, &ch, &code),
        Answer::Done(Verdict::Accept(Accept::CodeVerified))
    );
    assert!(h
        .audit
        .0
        .borrow()
        .iter()
        .any(|(l, e)| e.event == "count_failed"
            && *l == Level::Warning
            && e.detail
                .as_deref()
                .is_some_and(|t| t.contains("(sent)") && t.contains("the login goes on"))));
}

/// The audit line of a send says how many SMS the text took, counted as
/// the provider sends it.
#[test]
fn the_sent_event_counts_the_sms() {
    let provider =
        "[[provider]]\nkind = \"outbox\"\nname = \"fake\"\npath = \"/nonexistent/outbox.jsonl\"\n";
    let h = harness(provider);
    h.start(&ctx("alice", "sshd"));
    assert!(
        h.audit_text().contains("event=sent user=alice service=sshd rhost=192.0.2.7 phone=******0123 provider=fake segments=1\n"),
        "{}",
        h.audit_text()
    );
    // One typographic apostrophe makes it UCS-2: 73 units, two SMS.
    let h = harness(&format!(
        "[otp]\nmessage = \"{{code}} it’s {}\"\n{provider}",
        "x".repeat(61)
    ));
    h.start(&ctx("alice", "sshd"));
    assert!(
        h.audit_text().contains("provider=fake segments=2\n"),
        "{}",
        h.audit_text()
    );
}

/// Sets `user`'s language in the store as `smsotp user set-language`
/// does, a minute before the next login (an engine reuses a read of the
/// stored language for a minute).
fn set_language(h: &Harness, user: &str, lang: Option<&str>) {
    h.engine.store().set_language(user, lang).unwrap();
    h.clock.advance(Duration::from_secs(61));
}

#[test]
fn a_read_of_the_stored_language_is_reused_for_a_minute() {
    let h = harness("");
    assert_eq!(h.engine.catalogue_for("erin").lang(), "en");
    h.engine.store().set_language("erin", Some("de")).unwrap();
    assert_eq!(
        h.engine.catalogue_for("erin").lang(),
        "en",
        "within the minute"
    );
    assert_eq!(h.engine.catalogue_for("bob").lang(), "en");
    assert_eq!(
        h.engine.catalogue_for("erin").lang(),
        "de",
        "another user's read in between"
    );
    h.engine.store().set_language("erin", None).unwrap();
    h.clock.advance(Duration::from_secs(61));
    assert_eq!(h.engine.catalogue_for("erin").lang(), "en");
    // A new login reads it again at once.
    h.engine.store().set_language("erin", Some("nl")).unwrap();
    assert_eq!(
        h.engine.catalogue_for("erin").lang(),
        "en",
        "within the minute"
    );
    h.start(&ctx("erin", "sshd"));
    assert_eq!(
        h.engine.catalogue_for("erin").lang(),
        "nl",
        "after a new login's start"
    );
}

/// The language of a login: the user's setting in the store, else the
/// session's locale (when followed), else the number's country (when
/// `by_number`), else the default; a language without a catalogue is
/// passed over.
#[test]
fn the_language_is_the_users_then_the_locale_then_the_number_then_the_default() {
    let mut h = harness(
        "[messages]\nlanguage = \"by_number\"\ndefault_language = \"fr\"\nfollow_locale = true\n",
    );
    let lang = |h: &Harness, user: &str| h.engine.catalogue_for(user).lang().to_owned();
    assert_eq!(lang(&h, "erin"), "de", "a German number");
    assert_eq!(lang(&h, "alice"), "en", "a US number");
    assert_eq!(lang(&h, "nobody"), "fr", "no number: the default");
    h.engine.set_session_locale(Some("it_IT.UTF-8".into()));
    assert_eq!(lang(&h, "erin"), "it", "the locale before the number");
    set_language(&h, "erin", Some("nl"));
    assert_eq!(
        lang(&h, "erin"),
        "nl",
        "the user's setting before the locale"
    );
    set_language(&h, "erin", Some("sv"));
    assert_eq!(lang(&h, "erin"), "it", "no catalogue for sv: passed over");
    h.engine.set_session_locale(Some("C.UTF-8".into()));
    assert_eq!(lang(&h, "erin"), "de");
}

#[test]
fn without_by_number_or_follow_locale_the_default_is_used() {
    let mut h = harness("[messages]\ndefault_language = \"es\"\n");
    h.engine.set_session_locale(Some("de_DE.UTF-8".into()));
    assert_eq!(h.engine.catalogue_for("erin").lang(), "es");
    set_language(&h, "erin", Some("pt"));
    assert_eq!(h.engine.catalogue_for("erin").lang(), "pt");
    assert_eq!(h.engine.catalogue_without_store().lang(), "es");
}

/// A German user's SMS is German, with the same code, lifetime and tries
/// as anyone's; `otp.message`, once set, is every language's SMS.
#[test]
fn the_sms_is_in_the_users_language_and_nothing_else_changes() {
    let h = harness("");
    set_language(&h, "erin", Some("de"));
    let info = h.start(&ctx("erin", "sshd"));
    let code = h.last_code();
    let text = h.sms.sent.borrow().last().unwrap().1.clone();
    assert_eq!(
        text,
        format!("{code} ist Ihr Anmeldecode für web1. Er verfällt in 5 Minuten.")
    );
    let en = h.start(&ctx("bob", "sshd"));
    assert_eq!(info.attempts_left, en.attempts_left);
    assert_eq!(info.expires_in, en.expires_in);
    assert_eq!(code.len(), h.last_code().len());
    let de = h.engine.catalogue_for("erin");
    assert_eq!(
        info.intro_with_tries_in(de),
        format!("Code an {} gesendet. Noch 3 Versuche.", info.phone_masked)
    );

    let h = harness("[otp]\nmessage = \"Code {code}\"\n");
    set_language(&h, "erin", Some("de"));
    h.start(&ctx("erin", "sshd"));
    assert!(h.sms.sent.borrow().last().unwrap().1.starts_with("Code "));
}

/// A directory that knows frank, with a German number and Italian as
/// his language (as LDAP's preferredLanguage would say).
struct LanguageDirectory;

impl Directory for LanguageDirectory {
    fn name(&self) -> String {
        "fake ldap".into()
    }
    fn lookup(&self, user: &str) -> Result<Option<Entry>, crate::directory::DirectoryError> {
        Ok((user == "frank").then(|| Entry {
            raw: "+491701234567".into(),
            source: "fake ldap".into(),
            location: "fake ldap uid=frank".into(),
            line: None,
            language: Some("it".into()),
        }))
    }
}

/// The directory's language comes after the user's setting and before
/// the number's country, in the texts and in the SMS.
#[test]
fn the_directorys_language_comes_before_the_number() {
    let h = harness_dirs(
        "[[directory]]\nkind = \"ldap\"\nurls = [\"ldaps://ldap.invalid\"]\n\
         base = \"dc=example,dc=org\"\n[messages]\nlanguage = \"by_number\"\n",
        vec![],
        vec![Box::new(LanguageDirectory)],
    );
    assert_eq!(h.engine.catalogue_for("frank").lang(), "it");
    assert_eq!(
        h.engine.catalogue_for("erin").lang(),
        "de",
        "no language: the number"
    );
    h.start(&ctx("frank", "sshd"));
    let code = h.last_code();
    assert_eq!(
        h.sms.sent.borrow().last().unwrap().1,
        format!("{code} è il suo codice di accesso per web1. Scade tra 5 minuti.")
    );
    set_language(&h, "frank", Some("nl"));
    assert_eq!(h.engine.catalogue_for("frank").lang(), "nl");
}
