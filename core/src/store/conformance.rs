//! What every [`Store`] must do, as one suite run against each backend
//! (`MemoryStore`, `SqliteStore` on a file, `SharedStore` plain and
//! batched): a new backend is done when it passes all of it.
//!
//! A backend is given as a [`Backend`]: something that hands out handles
//! on one store, so the races run as they do on a host, where many
//! processes (for SQLite, connections of their own) use one store at once.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::counters::{Counted, CounterKey, Day, KEEP_DAYS};
use super::limits::{
    Backoff, BreakerState, BreakerTrip, KeyedWindow, LimitKind, LimitMode, SendDecision, SendLimits,
};
use super::migrate::{self, ImportCounts, KindCounts, Lockout, Outcome, Record, Snapshot};
use super::{
    AtOnce, BackupHash, ChallengeRecord, PhoneRecord, SendPermit, Step, Store, StoreError,
};
use crate::config::Rate;
use crate::otp::ChallengeId;

/// One fresh store, shared by the threads of a test.
pub(super) trait Backend: Sync {
    /// Runs `f` with a handle on the store (for SQLite, a connection of
    /// its own, as another process would have).
    fn with_handle(&self, f: &mut dyn FnMut(&dyn Store));
}

/// Makes a fresh, empty store for one test.
pub(super) type Make<'a> = &'a dyn Fn() -> Box<dyn Backend>;

/// One test of the suite.
pub(super) type Test = fn(Make<'_>);

/// Every test of the suite, by name, for the backend modules to run.
pub(super) const ALL: &[(&str, Test)] = &[
    ("single_use_under_races", single_use_under_races),
    ("send_windows", send_windows),
    ("lockout_and_its_end", lockout_and_its_end),
    (
        "backup_codes_used_once_under_races",
        backup_codes_used_once_under_races,
    ),
    ("enrollment", enrollment),
    ("opt_out", opt_out),
    ("language", language),
    ("challenge_binding", challenge_binding),
    ("start_at_once", start_at_once),
    ("expiry", expiry),
    ("export_and_import", export_and_import),
    (
        "import_keeps_the_newest_under_races",
        import_keeps_the_newest_under_races,
    ),
    ("keyed_windows", keyed_windows),
    ("keyed_windows_under_races", keyed_windows_under_races),
    ("backoff", backoff),
    ("monitor_mode", monitor_mode),
    ("spend_breaker", spend_breaker),
    ("spend_breaker_under_races", spend_breaker_under_races),
    ("counters", counters),
    ("counters_keep_a_bounded_number_of_days", counters_keep_days),
    ("counters_under_races", counters_under_races),
];

/// Runs the whole suite against one backend, naming the test that fails.
pub(super) fn run_all(make: Make<'_>) {
    for (name, test) in ALL {
        eprintln!("conformance: {name}");
        test(make);
    }
}

const THREADS: usize = 8;

/// A rate of `n` per `secs` seconds (also used by the SQLite tests).
pub(crate) fn rate(n: u32, secs: u64) -> Rate {
    Rate {
        count: NonZeroU32::new(n).unwrap(),
        window: Duration::from_secs(secs),
    }
}

/// A pending SMS-code challenge of `user` for sshd (also used by the
/// SQLite tests).
pub(crate) fn record(id: u8, user: &str) -> ChallengeRecord {
    ChallengeRecord {
        id: ChallengeId([id; 16]),
        user: user.into(),
        service: "sshd".into(),
        code_mac: [id; 32],
        phone_masked: "******0143".into(),
        created_at: 1_000,
        sent_at: 1_000,
        expires_at: 301_000,
        attempts_left: 3,
        resends_used: 0,
        step: Step::Code,
        pending_phone: None,
    }
}

/// Runs `f` once on one handle.
fn on(b: &dyn Backend, mut f: impl FnMut(&dyn Store)) {
    b.with_handle(&mut f);
}

/// Runs `f` on `THREADS` threads at once, each with its own handle;
/// returns how many of them said true.
fn race(b: &dyn Backend, f: impl Fn(&dyn Store) -> bool + Sync) -> u32 {
    let won = AtomicU32::new(0);
    // Not std's Barrier: a thread whose handle fails to open panics before
    // it arrives, and the others would wait for it forever (a CI run hung
    // so). These wait 60 s at most, then fail naming why.
    let left = std::sync::Mutex::new(THREADS);
    let all_in = std::sync::Condvar::new();
    let start = || {
        let mut n = left.lock().unwrap();
        *n -= 1;
        if *n == 0 {
            all_in.notify_all();
            return;
        }
        let (n, waited) = all_in
            .wait_timeout_while(n, Duration::from_secs(60), |n| *n > 0)
            .unwrap();
        assert!(
            !waited.timed_out() || *n == 0,
            "{} racing thread(s) never started: their handle failed to open (see their panic)",
            *n
        );
    };
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                b.with_handle(&mut |s| {
                    start();
                    if f(s) {
                        won.fetch_add(1, Ordering::SeqCst);
                    }
                });
            });
        }
    });
    won.into_inner()
}

/// Of concurrent right answers exactly one takes the code, through each
/// way a code is taken.
pub(super) fn single_use_under_races(make: Make<'_>) {
    let b = make();
    let (a, c) = (record(1, "alice"), record(2, "alice"));
    on(&*b, |s| {
        s.insert_challenge(&a).unwrap();
        s.insert_challenge(&c).unwrap();
        s.record_failure("alice", 2_000, 5, Duration::from_secs(60))
            .unwrap();
    });
    let won = race(&*b, |s| s.consume(&a.id, &a.code_mac, "alice").unwrap());
    assert_eq!(won, 1, "consume");
    let won = race(&*b, |s| {
        s.consume_code(&c.id, "alice", "sshd", &c.code_mac, 2_000)
            .unwrap()
            .is_some()
    });
    assert_eq!(won, 1, "consume_code");
    on(&*b, |s| {
        assert_eq!(s.challenge(&a.id).unwrap(), None);
        assert_eq!(s.challenge(&c.id).unwrap(), None);
        // A success clears the failure count.
        assert_eq!(s.failures("alice", 2_000).unwrap().count, 0);
    });
    // Of concurrent sends, no more than the window allows.
    let b = make();
    let won = race(&*b, |s| {
        s.reserve_sms("bob", 5_000, rate(3, 3600), rate(100, 3600))
            .unwrap()
            == SendPermit::Granted
    });
    assert_eq!(won, 3, "reserve_sms");
}

/// Per-user and global windows, and that they slide.
pub(super) fn send_windows(make: Make<'_>) {
    let b = make();
    let (user, global) = (rate(2, 3600), rate(3, 3600));
    on(&*b, |s| {
        let r = |u: &str, at| s.reserve_sms(u, at, user, global).unwrap();
        assert_eq!(r("alice", 0), SendPermit::Granted);
        assert_eq!(r("alice", 1_000), SendPermit::Granted);
        assert_eq!(r("alice", 2_000), SendPermit::UserLimit);
        assert_eq!(r("bob", 3_000), SendPermit::Granted);
        assert_eq!(r("carol", 4_000), SendPermit::GlobalLimit);
        let w = s.sms_window("alice", 2_000, user).unwrap();
        assert_eq!(w.sent, 2);
        // The oldest leaves the window an hour after it was sent.
        assert_eq!(w.next_allowed_at, Some(3_600_000));
        assert_eq!(r("alice", 3_599_999), SendPermit::UserLimit);
        // Sliding: one of alice's has left both windows by now.
        assert_eq!(r("alice", 3_600_000), SendPermit::Granted);
        assert_eq!(s.sms_window("alice", 3_600_000, user).unwrap().sent, 2);
        // Clearing forgets the user's sends, not the global count.
        assert_eq!(
            s.clear_sms_window("alice", 3_600_000, user.window).unwrap(),
            2
        );
        assert_eq!(s.sms_window("alice", 3_600_000, user).unwrap().sent, 0);
        // The global window slid too (alice's is its one send): two more.
        assert_eq!(r("dave", 3_600_001), SendPermit::Granted);
        assert_eq!(r("erin", 3_600_001), SendPermit::Granted);
        // A refused start takes nothing and stores nothing.
        let mut c = record(9, "frank");
        c.created_at = 3_600_002;
        assert_eq!(
            s.start_challenge(&c, user, global).unwrap(),
            SendPermit::GlobalLimit
        );
        assert_eq!(s.challenge(&c.id).unwrap(), None);
        assert_eq!(s.sms_window("frank", 3_600_002, user).unwrap().sent, 0);
    });
    // A granted start stores the challenge and counts the SMS.
    let b = make();
    on(&*b, |s| {
        let c = record(1, "alice");
        assert_eq!(
            s.start_challenge(&c, user, global).unwrap(),
            SendPermit::Granted
        );
        assert_eq!(s.challenge(&c.id).unwrap(), Some(c.clone()));
        assert_eq!(s.sms_window("alice", 1_000, user).unwrap().sent, 1);
    });
}

/// Failures lock a user out at the threshold, until the lockout ends or
/// an admin lifts it; an ended lockout starts a fresh count.
pub(super) fn lockout_and_its_end(make: Make<'_>) {
    let b = make();
    let lockout = Duration::from_secs(600);
    on(&*b, |s| {
        for n in 1..3 {
            let f = s.record_failure("alice", 1_000, 3, lockout).unwrap();
            assert_eq!((f.count, f.locked_until), (n, None));
        }
        assert_eq!(s.locked_until("alice", 1_000).unwrap(), None);
        let f = s.record_failure("alice", 2_000, 3, lockout).unwrap();
        assert_eq!(f.locked_until, Some(602_000));
        assert_eq!(s.locked_until("alice", 601_999).unwrap(), Some(602_000));
        assert_eq!(s.locked_until("bob", 2_000).unwrap(), None);
        // A locked-out user's right code is not taken.
        let c = record(1, "alice");
        s.insert_challenge(&c).unwrap();
        assert_eq!(
            s.consume_code(&c.id, "alice", "sshd", &c.code_mac, 3_000)
                .unwrap(),
            None
        );
        assert!(s.challenge(&c.id).unwrap().is_some());
        // Its end.
        assert_eq!(s.locked_until("alice", 602_000).unwrap(), None);
        let f = s.record_failure("alice", 602_000, 3, lockout).unwrap();
        assert_eq!((f.count, f.locked_until), (1, None));
        // An admin lifts it.
        for _ in 0..3 {
            s.record_failure("bob", 1_000, 3, lockout).unwrap();
        }
        assert!(s.locked_until("bob", 1_000).unwrap().is_some());
        s.unlock("bob").unwrap();
        assert_eq!(s.failures("bob", 1_000).unwrap(), Default::default());
        // Wrong answers count down the challenge's tries and end it.
        assert_eq!(s.wrong_attempt(&c.id).unwrap(), Some(2));
        assert_eq!(s.wrong_attempt(&c.id).unwrap(), Some(1));
        assert_eq!(s.wrong_attempt(&c.id).unwrap(), Some(0));
        assert_eq!(s.challenge(&c.id).unwrap(), None);
        assert_eq!(s.wrong_attempt(&c.id).unwrap(), None);
    });
}

/// Each backup code works once, however many logins try it at once.
pub(super) fn backup_codes_used_once_under_races(make: Make<'_>) {
    let b = make();
    let codes = [
        BackupHash {
            tag: [1; 8],
            hash: "h1".into(),
        },
        BackupHash {
            tag: [2; 8],
            hash: "h2".into(),
        },
    ];
    let c = record(1, "alice");
    let mut hash = String::new();
    on(&*b, |s| {
        s.replace_backup_codes("alice", &codes, 1_000).unwrap();
        assert_eq!(s.backup_codes_left("alice").unwrap(), 2);
        let found = s.backup_candidates("alice", &[2; 8]).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found, ["h2"]);
        assert!(s.backup_candidates("bob", &[2; 8]).unwrap().is_empty());
        hash = found[0].clone();
        s.insert_challenge(&c).unwrap();
        s.record_failure("alice", 1_000, 5, Duration::from_secs(60))
            .unwrap();
    });
    let won = race(&*b, |s| {
        s.consume_backup_code("alice", &hash, Some(&c.id))
            .unwrap()
            .is_some()
    });
    assert_eq!(won, 1);
    on(&*b, |s| {
        assert_eq!(s.backup_codes_left("alice").unwrap(), 1);
        assert!(s.backup_candidates("alice", &[2; 8]).unwrap().is_empty());
        assert_eq!(s.challenge(&c.id).unwrap(), None);
        assert_eq!(s.failures("alice", 1_000).unwrap().count, 0);
        assert_eq!(s.revoke_backup_codes("alice").unwrap(), 1);
        assert_eq!(s.backup_codes_left("alice").unwrap(), 0);
    });
}

/// A number entered at enrollment is registered only once its code is.
pub(super) fn enrollment(make: Make<'_>) {
    let b = make();
    on(&*b, |s| {
        let mut c = record(1, "alice");
        c.step = Step::EnrollNumber;
        s.insert_challenge(&c).unwrap();
        let mac = [7; 32];
        assert!(s
            .enroll_number(&c.id, "+12025550143", &mac, 2_000, 302_000, 3)
            .unwrap());
        let now = s.challenge(&c.id).unwrap().unwrap();
        assert_eq!(now.step, Step::EnrollCode);
        assert_eq!(now.pending_phone.as_deref(), Some("+12025550143"));
        assert_ne!(now.phone_masked, "+12025550143");
        // Only once waiting for a number.
        assert!(!s
            .enroll_number(&c.id, "+12025550144", &mac, 2_000, 302_000, 3)
            .unwrap());
        assert_eq!(s.phone("alice").unwrap(), None);
        // Not with the wrong code, nor for another user.
        assert!(!s
            .complete_enrollment(&c.id, &c.code_mac, "alice", 3_000, "enroll:sshd")
            .unwrap());
        assert!(!s
            .complete_enrollment(&c.id, &mac, "bob", 3_000, "enroll:sshd")
            .unwrap());
        assert_eq!(s.phone("alice").unwrap(), None);
        assert!(s
            .complete_enrollment(&c.id, &mac, "alice", 3_000, "enroll:sshd")
            .unwrap());
        let want = PhoneRecord {
            e164: "+12025550143".into(),
            set_at: 3_000,
            set_by: "enroll:sshd".into(),
        };
        assert_eq!(s.phone("alice").unwrap(), Some(want));
        assert_eq!(s.challenge(&c.id).unwrap(), None);
        // Once only.
        assert!(!s
            .complete_enrollment(&c.id, &mac, "alice", 3_000, "enroll:sshd")
            .unwrap());
        // A number an admin registered meanwhile stays.
        let admin = PhoneRecord {
            e164: "+12025550100".into(),
            set_at: 1,
            set_by: "admin:root".into(),
        };
        s.set_phone("bob", &admin).unwrap();
        let mut d = record(2, "bob");
        d.step = Step::EnrollNumber;
        s.insert_challenge(&d).unwrap();
        assert!(s
            .enroll_number(&d.id, "+12025550199", &mac, 2_000, 302_000, 3)
            .unwrap());
        assert!(s
            .complete_enrollment(&d.id, &mac, "bob", 3_000, "enroll:sshd")
            .unwrap());
        assert_eq!(s.phone("bob").unwrap(), Some(admin.clone()));
        assert!(s.clear_phone("bob").unwrap());
        assert!(!s.clear_phone("bob").unwrap());
    });
}

/// Opt-outs are kept with who set them and when, and listed in order.
pub(super) fn opt_out(make: Make<'_>) {
    let b = make();
    on(&*b, |s| {
        assert_eq!(s.opt_out("bob").unwrap(), None);
        s.set_opt_out("bob", Some(("admin:root", 5))).unwrap();
        s.set_opt_out("alice", Some(("admin:root", 6))).unwrap();
        s.set_opt_out("bob", Some(("admin:ops", 7))).unwrap();
        assert_eq!(s.opt_out("bob").unwrap(), Some(("admin:ops".into(), 7)));
        assert_eq!(s.opted_out_users().unwrap(), ["alice", "bob"]);
        s.set_opt_out("bob", None).unwrap();
        assert_eq!(s.opt_out("bob").unwrap(), None);
        assert_eq!(s.opted_out_users().unwrap(), ["alice"]);
    });
}

/// A user's language is kept, replaced and cleared, and is nobody else's.
pub(super) fn language(make: Make<'_>) {
    let b = make();
    on(&*b, |s| {
        assert_eq!(s.language("bob").unwrap(), None);
        s.set_language("bob", Some("de")).unwrap();
        s.set_language("alice", Some("fr")).unwrap();
        assert_eq!(s.language("bob").unwrap().as_deref(), Some("de"));
        s.set_language("bob", Some("nl")).unwrap();
        assert_eq!(s.language("bob").unwrap().as_deref(), Some("nl"));
        // The login's state brings it along, with or without a request.
        let state = s.login_state("bob", 1_000, None).unwrap();
        assert_eq!(state.language.as_deref(), Some("nl"));
        let id = record(9, "bob").id;
        let state = s.login_state("bob", 1_000, Some(&id)).unwrap();
        assert_eq!(state.language.as_deref(), Some("nl"));
        s.set_language("bob", None).unwrap();
        assert_eq!(s.language("bob").unwrap(), None);
        assert_eq!(s.login_state("bob", 1_000, None).unwrap().language, None);
        s.set_language("bob", None).unwrap();
        assert_eq!(s.language("alice").unwrap().as_deref(), Some("fr"));
    });
}

/// A login whose number was found outside the store starts in one step
/// when nothing in the store stands in the way, and otherwise writes
/// nothing and shows what does: a lockout, another registered number,
/// the request's own challenge.
pub(super) fn start_at_once(make: Make<'_>) {
    let b = make();
    let limits = SendLimits::user_and_global(rate(2, 3600), rate(100, 3600));
    let lockout = Duration::from_secs(600);
    on(&*b, |s| {
        let num = "+12025550143";
        let started =
            |c: &ChallengeRecord, request| match s.start_at_once(c, &limits, num, request).unwrap()
            {
                AtOnce::Started {
                    decision, language, ..
                } => (decision.permit(), language),
                AtOnce::Seen(st) => panic!("not started: {st:?}"),
            };
        let seen =
            |c: &ChallengeRecord, request| match s.start_at_once(c, &limits, num, request).unwrap()
            {
                AtOnce::Seen(st) => *st,
                AtOnce::Started { .. } => panic!("started"),
            };
        // Nothing in the way: counted and stored, the language along.
        s.set_language("alice", Some("fr")).unwrap();
        let c = record(1, "alice");
        assert_eq!(started(&c, false), (SendPermit::Granted, Some("fr".into())));
        assert_eq!(s.challenge(&c.id).unwrap(), Some(c.clone()));
        // The same number registered in the store is no obstacle, and
        // is told.
        s.set_phone("alice", &phone_rec(num, 5)).unwrap();
        let c2 = record(2, "alice");
        match s.start_at_once(&c2, &limits, num, false).unwrap() {
            AtOnce::Started {
                decision,
                registered,
                ..
            } => {
                assert_eq!(decision.permit(), SendPermit::Granted);
                assert_eq!(registered, Some(phone_rec(num, 5)));
            }
            AtOnce::Seen(st) => panic!("not started: {st:?}"),
        }
        // The limits refuse as start_challenge_with does: nothing stored.
        let c3 = record(3, "alice");
        assert_eq!(started(&c3, false).0, SendPermit::UserLimit);
        assert_eq!(s.challenge(&c3.id).unwrap(), None);
        // Another number in the store wins: seen, nothing written.
        s.set_phone("bob", &phone_rec("+12025550199", 6)).unwrap();
        let b1 = record(4, "bob");
        let st = seen(&b1, false);
        assert_eq!(st.phone, Some(phone_rec("+12025550199", 6)));
        assert_eq!((st.locked_until, st.request_challenge), (None, None));
        assert_eq!(s.challenge(&b1.id).unwrap(), None);
        assert_eq!(s.sms_window("bob", 1_000, rate(2, 3600)).unwrap().sent, 0);
        // A lockout: seen with its end, nothing written.
        for _ in 0..3 {
            s.record_failure("carol", 500, 3, lockout).unwrap();
        }
        let k = record(5, "carol");
        let st = seen(&k, false);
        assert_eq!(st.locked_until, Some(600_500));
        assert_eq!(s.challenge(&k.id).unwrap(), None);
        assert_eq!(s.sms_window("carol", 1_000, rate(2, 3600)).unwrap().sent, 0);
        // The request's own challenge, asked about: seen, left as it was.
        let st = seen(&c, true);
        assert_eq!(st.request_challenge, Some(c.clone()));
        assert_eq!(st.language.as_deref(), Some("fr"));
        assert_eq!(s.sms_window("alice", 1_000, rate(2, 3600)).unwrap().sent, 2);
        // A request whose id is new starts.
        s.set_language("dave", None).unwrap();
        let d = record(6, "dave");
        assert_eq!(started(&d, true), (SendPermit::Granted, None));
        // Another login's challenge under the id is a conflict, as for
        // start_challenge_with.
        let e = s
            .start_at_once(&record(6, "erin"), &limits, num, false)
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{e:?}");
        assert_eq!(s.challenge(&d.id).unwrap(), Some(d.clone()));
    });
}

/// A challenge answers only its own user and service, its id is never
/// taken over by another login, and a stale request leaves a newer
/// challenge with its id alone.
pub(super) fn challenge_binding(make: Make<'_>) {
    let b = make();
    on(&*b, |s| {
        let c = record(1, "alice");
        s.insert_challenge(&c).unwrap();
        let e = s.insert_challenge(&record(1, "bob")).unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{e:?}");
        let mut other_service = record(1, "alice");
        other_service.service = "sudo".into();
        assert!(s.insert_challenge(&other_service).is_err());
        assert_eq!(s.challenge(&c.id).unwrap(), Some(c.clone()));
        // The login state brings the challenge asked about along, whoever's.
        let st = s.login_state("bob", 2_000, Some(&c.id)).unwrap();
        assert_eq!(st.request_challenge, Some(c.clone()));
        let st = s
            .login_state("alice", 2_000, Some(&record(9, "alice").id))
            .unwrap();
        assert_eq!(st.request_challenge, None);
        let st = s.login_state("alice", 2_000, None).unwrap();
        assert_eq!(st.request_challenge, None);
        for (user, service) in [("bob", "sshd"), ("alice", "sudo")] {
            assert_eq!(
                s.consume_code(&c.id, user, service, &c.code_mac, 2_000)
                    .unwrap(),
                None
            );
        }
        assert_eq!(
            s.consume_code(&c.id, "alice", "sshd", &[0; 32], 2_000)
                .unwrap(),
            None
        );
        // Waiting for a backup code, an SMS code is not taken.
        assert!(s.set_step(&c.id, &c.code_mac, Step::BackupOnly).unwrap());
        assert!(!s.set_step(&c.id, &[0; 32], Step::Code).unwrap());
        assert_eq!(
            s.consume_code(&c.id, "alice", "sshd", &c.code_mac, 2_000)
                .unwrap(),
            None
        );
        assert!(s.set_step(&c.id, &c.code_mac, Step::Code).unwrap());
        // The same login's newer challenge takes the id.
        let mut newer = record(1, "alice");
        newer.code_mac = [9; 32];
        s.insert_challenge(&newer).unwrap();
        assert!(!s.withdraw(&c.id, &c.code_mac).unwrap());
        assert!(!s.consume(&c.id, &c.code_mac, "alice").unwrap());
        assert_eq!(s.challenge(&c.id).unwrap(), Some(newer.clone()));
        // A resend replaces the code.
        assert!(s
            .replace_code(&c.id, &[5; 32], 3_000, 303_000, 3, 1)
            .unwrap());
        assert!(!s
            .replace_code(&ChallengeId([8; 16]), &[5; 32], 3_000, 303_000, 3, 1)
            .unwrap());
        assert_eq!(
            s.consume_code(&c.id, "alice", "sshd", &[5; 32], 3_000)
                .unwrap(),
            Some(c.phone_masked.clone())
        );
        let d = record(2, "alice");
        s.insert_challenge(&d).unwrap();
        assert!(s.withdraw(&d.id, &d.code_mac).unwrap());
        assert!(!s.withdraw(&d.id, &d.code_mac).unwrap());
    });
}

/// Expiry, as a login sees it: an expired challenge is never taken, and
/// stays expired (whether the backend has forgotten it yet or not); sends
/// older than the windows count for nothing, and forgetting them (a
/// backend's own business) changes no count. A number cache, if the
/// backend keeps one, never answers with another number than it was given.
pub(super) fn expiry(make: Make<'_>) {
    let b = make();
    let (user, global) = (rate(1, 60), rate(1_000, 120));
    on(&*b, |s| {
        let c = record(1, "alice");
        s.insert_challenge(&c).unwrap();
        assert_eq!(
            s.consume_code(&c.id, "alice", "sshd", &c.code_mac, c.expires_at)
                .unwrap(),
            None
        );
        // Later writes, any of which may forget what has expired.
        let mut later = c.expires_at;
        for n in 2..40u8 {
            later += 31_000;
            let mut d = record(n, "bob");
            (d.created_at, d.sent_at, d.expires_at) = (later, later, later + 300_000);
            s.insert_challenge(&d).unwrap();
            let mut e = record(n.wrapping_add(100), &format!("user{n}"));
            (e.created_at, e.sent_at, e.expires_at) = (later, later, later + 300_000);
            assert_eq!(
                s.start_challenge(&e, user, global).unwrap(),
                SendPermit::Granted
            );
            s.reserve_sms("bob", later + 1, user, global).unwrap();
        }
        // Gone, or still there as it was: never usable again.
        match s.challenge(&c.id).unwrap() {
            None => {}
            Some(kept) => assert_eq!(kept, c),
        }
        let state = s.answer_state(&c.id, "alice", later).unwrap();
        assert!(state.challenge.is_none_or(|k| k.expires_at == c.expires_at));
        assert_eq!(
            s.consume_code(&c.id, "alice", "sshd", &c.code_mac, later)
                .unwrap(),
            None
        );
        // Old sends count in no window, forgotten or not.
        for n in 2..38u8 {
            let w = s.sms_window(&format!("user{n}"), later, user).unwrap();
            assert_eq!(w, Default::default(), "user{n}");
        }
        assert_eq!(
            s.reserve_sms("user2", later, user, global).unwrap(),
            SendPermit::Granted
        );
        // The cache of validated numbers: kept or not, never wrong.
        let cache = s.number_cache();
        cache.put("k", "+12025550143", Some("US"));
        let got = cache.get("k");
        assert!(
            got.is_none() || got == Some(("+12025550143".into(), Some("US".into()))),
            "{got:?}"
        );
        assert_eq!(cache.get("other"), None);
    });
}

fn phone_rec(e164: &str, set_at: i64) -> PhoneRecord {
    PhoneRecord {
        e164: e164.into(),
        set_at,
        set_by: "admin:root".into(),
    }
}

fn backup_code(n: u8) -> BackupHash {
    BackupHash {
        tag: [n; 8],
        hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt{n}$hash{n}"),
    }
}

fn export_of(b: &dyn Backend, now: i64) -> Snapshot {
    let mut snap = None;
    on(b, |s| snap = Some(s.export(now).unwrap()));
    snap.unwrap()
}

fn import_into(b: &dyn Backend, snap: &Snapshot, now: i64) -> ImportCounts {
    let mut counts = None;
    on(b, |s| counts = Some(migrate::import(s, snap, now).unwrap()));
    counts.unwrap()
}

fn kinds(c: &ImportCounts) -> [(u64, u64, u64); 5] {
    let k = |k: &KindCounts| (k.copied, k.present, k.kept);
    [
        k(&c.phones),
        k(&c.backup_codes),
        k(&c.opt_outs),
        k(&c.languages),
        k(&c.lockouts),
    ]
}

/// Numbers, backup codes, opt-outs, languages and running lockouts come out of one
/// store and go into another by each kind's rule (as the dry run
/// counts): an older record never replaces a newer one, a second import
/// changes nothing, and challenges, send windows and failure counts stay
/// behind, counted.
pub(super) fn export_and_import(make: Make<'_>) {
    let src = make();
    let dst = make();
    let lockout = Duration::from_secs(900);
    on(&*src, |s| {
        s.set_phone("alice", &phone_rec("+12025550143", 10))
            .unwrap();
        s.set_phone("bob", &phone_rec("+12025550144", 10)).unwrap();
        s.set_phone("carol", &phone_rec("+12025550145", 30))
            .unwrap();
        s.replace_backup_codes("alice", &[backup_code(1), backup_code(2)], 20)
            .unwrap();
        s.replace_backup_codes("bob", &[backup_code(3)], 20)
            .unwrap();
        s.set_opt_out("dave", Some(("admin:root", 40))).unwrap();
        s.set_language("alice", Some("de")).unwrap();
        s.set_language("bob", Some("fr")).unwrap();
        // A running lockout, a count below it, a lockout that has ended.
        s.record_failure("eve", 1_000, 1, lockout).unwrap();
        s.record_failure("frank", 1_000, 5, lockout).unwrap();
        s.record_failure("gina", 1_000, 1, Duration::from_secs(1))
            .unwrap();
        let c = record(1, "alice");
        assert_eq!(
            s.start_challenge(&c, rate(5, 3600), rate(100, 3600))
                .unwrap(),
            SendPermit::Granted
        );
    });
    let now = 5_000;
    let snap = export_of(&*src, now);
    let users = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        snap.phones
            .iter()
            .map(|p| p.user.clone())
            .collect::<Vec<_>>(),
        users(vec!["alice", "bob", "carol"])
    );
    assert_eq!(snap.phones[2].phone, phone_rec("+12025550145", 30));
    assert_eq!(
        snap.backup_codes
            .iter()
            .map(|b| (b.user.clone(), b.codes.len()))
            .collect::<Vec<_>>(),
        [("alice".to_owned(), 2), ("bob".to_owned(), 1)]
    );
    assert_eq!(snap.opt_outs.len(), 1);
    assert_eq!(
        (
            snap.opt_outs[0].user.as_str(),
            snap.opt_outs[0].set_by.as_str()
        ),
        ("dave", "admin:root")
    );
    assert_eq!(snap.opt_outs[0].set_at, 40);
    assert_eq!(
        snap.languages
            .iter()
            .map(|l| (l.user.as_str(), l.language.as_str()))
            .collect::<Vec<_>>(),
        [("alice", "de"), ("bob", "fr")]
    );
    assert_eq!(
        snap.lockouts,
        [Lockout {
            user: "eve".into(),
            count: 1,
            locked_until: 901_000
        }]
    );
    let left = snap.left_behind;
    assert_eq!(
        (left.challenges, left.send_windows, left.failure_counts),
        (1, 1, 2)
    );

    // The target: a newer number for bob, an older one for carol, codes of
    // bob's own.
    on(&*dst, |s| {
        s.set_phone("bob", &phone_rec("+12025550199", 50)).unwrap();
        s.set_phone("carol", &phone_rec("+12025550198", 5)).unwrap();
        s.replace_backup_codes("bob", &[backup_code(9)], 60)
            .unwrap();
        s.set_language("bob", Some("nl")).unwrap();
    });
    let planned = migrate::plan(&export_of(&*dst, now), &snap);
    let counts = import_into(&*dst, &snap, now);
    assert_eq!(counts, planned, "the dry run counts as the import does");
    assert_eq!(
        kinds(&counts),
        [(2, 0, 1), (1, 0, 1), (1, 0, 0), (1, 0, 1), (1, 0, 0)]
    );
    on(&*dst, |s| {
        assert_eq!(
            s.phone("alice").unwrap(),
            Some(phone_rec("+12025550143", 10))
        );
        assert_eq!(s.phone("bob").unwrap(), Some(phone_rec("+12025550199", 50)));
        assert_eq!(
            s.phone("carol").unwrap(),
            Some(phone_rec("+12025550145", 30))
        );
        assert_eq!(s.backup_codes_left("alice").unwrap(), 2);
        assert_eq!(
            s.backup_candidates("alice", &[2; 8]).unwrap(),
            [backup_code(2).hash]
        );
        assert_eq!(
            s.backup_candidates("bob", &[9; 8]).unwrap(),
            [backup_code(9).hash]
        );
        assert_eq!(s.backup_codes_left("bob").unwrap(), 1);
        assert_eq!(s.opt_out("dave").unwrap(), Some(("admin:root".into(), 40)));
        assert_eq!(s.language("alice").unwrap().as_deref(), Some("de"));
        // The target's own setting stays.
        assert_eq!(s.language("bob").unwrap().as_deref(), Some("nl"));
        assert_eq!(s.locked_until("eve", now).unwrap(), Some(901_000));
        assert_eq!(s.failures("eve", now).unwrap().count, 1);
        // Short-lived state stayed behind.
        assert_eq!(s.failures("frank", now).unwrap().count, 0);
        assert_eq!(s.challenge(&record(1, "alice").id).unwrap(), None);
        assert_eq!(s.sms_window("alice", now, rate(5, 3600)).unwrap().sent, 0);
    });

    // Again: nothing new.
    let again = import_into(&*dst, &snap, now);
    assert_eq!(again.copied(), 0);
    assert_eq!(
        kinds(&again),
        [(0, 2, 1), (0, 1, 1), (0, 1, 0), (0, 1, 1), (0, 1, 0)]
    );
    assert_eq!(migrate::plan(&export_of(&*dst, now), &snap), again);

    // And back, into a fresh store: what the target holds now.
    let back = make();
    let snap = export_of(&*dst, now);
    let counts = import_into(&*back, &snap, now);
    assert_eq!(
        kinds(&counts),
        [(3, 0, 0), (2, 0, 0), (1, 0, 0), (2, 0, 0), (1, 0, 0)]
    );
    let mut round = export_of(&*back, now);
    let mut expected = snap;
    for s in [&mut round, &mut expected] {
        // Who made the codes when is kept where the backend keeps it.
        for b in &mut s.backup_codes {
            b.set_at = None;
            b.codes.sort_by(|x, y| x.hash.cmp(&y.hash));
        }
        s.left_behind = Default::default();
    }
    assert_eq!(round, expected);
}

/// Of concurrent imports of one user's number, the newest stays,
/// whatever the order they run in: each reads and writes in one step.
pub(super) fn import_keeps_the_newest_under_races(make: Make<'_>) {
    let b = make();
    let next = AtomicU32::new(0);
    let copied = race(&*b, |s| {
        let i = next.fetch_add(1, Ordering::SeqCst);
        let p = migrate::UserPhone {
            user: "alice".into(),
            phone: phone_rec(&format!("+120255501{i:02}"), 100 + i64::from(i)),
        };
        s.import_record(&Record::Phone(&p), 0).unwrap() == Outcome::Copied
    });
    assert!(copied >= 1);
    on(&*b, |s| {
        let last = THREADS as u32 - 1;
        assert_eq!(
            s.phone("alice").unwrap(),
            Some(phone_rec(
                &format!("+120255501{last:02}"),
                100 + i64::from(last)
            ))
        );
    });
}

pub(super) mod backends {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::sqlite::{Committer, SharedStore, SqliteStore};
    use crate::store::SharedBackend;

    impl Backend for MemoryStore {
        fn with_handle(&self, f: &mut dyn FnMut(&dyn Store)) {
            f(self);
        }
    }

    /// A store file; each handle is a connection of its own.
    struct SqliteFile(tempfile::TempDir);

    impl SqliteFile {
        fn new() -> Self {
            SqliteFile(tempfile::tempdir().unwrap())
        }
        fn open(&self) -> SqliteStore {
            SqliteStore::open(&self.0.path().join("state.db"), Duration::from_secs(30)).unwrap()
        }
    }

    impl Backend for SqliteFile {
        fn with_handle(&self, f: &mut dyn FnMut(&dyn Store)) {
            f(&self.open());
        }
    }

    /// A batched shared store, as smsotp-radiusd runs it.
    /// The committer and the directory are kept for as long as the store.
    struct Batched(
        SharedStore,
        #[allow(dead_code)] Committer,
        #[allow(dead_code)] tempfile::TempDir,
    );

    impl Backend for Batched {
        fn with_handle(&self, f: &mut dyn FnMut(&dyn Store)) {
            f(&self.0);
            // The request's answer waits for its commit.
            let (tx, rx) = std::sync::mpsc::channel();
            self.0.defer(Box::new(move |r| {
                let _ = tx.send(r.is_ok());
            }));
            assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
        }
    }

    /// What a server relies on from a [`SharedBackend`]: handles write to
    /// the one store, deferred work runs once, told the writes are durable,
    /// then the end-of-batch hook; `flush` returns once it all has run.
    pub(in crate::store) fn shared_backend_contract(s: &dyn SharedBackend) {
        use std::sync::Arc;
        let batches = Arc::new(AtomicU32::new(0));
        let counted = batches.clone();
        s.after_each_batch(Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        let c = record(1, "alice");
        s.handle().insert_challenge(&c).unwrap();
        assert_eq!(s.challenge(&c.id).unwrap(), Some(c.clone()));
        let (tx, rx) = std::sync::mpsc::channel();
        s.defer(Box::new(move |r| {
            let _ = tx.send(r.is_ok());
        }));
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
        s.flush();
        assert!(rx.try_recv().is_err(), "deferred work ran once");
        assert!(batches.load(Ordering::SeqCst) >= 1);
    }

    #[test]
    fn shared_backends_keep_the_contract() {
        shared_backend_contract(&MemoryStore::new());
        let file = SqliteFile::new();
        shared_backend_contract(&SharedStore::new(file.open()));
        let file = SqliteFile::new();
        let (shared, _committer) = SharedStore::batched(file.open()).unwrap();
        shared_backend_contract(&shared);
    }

    #[test]
    fn open_shared_opens_the_configured_store() {
        let d = tempfile::tempdir().unwrap();
        let spec = crate::config::StoreSpec::Sqlite {
            path: d.path().join("state.db"),
            busy_timeout: Duration::from_secs(5),
        };
        let (shared, guard) = crate::store::open_shared(&spec).unwrap();
        shared_backend_contract(&*shared);
        drop(shared);
        drop(guard);
        let again = crate::store::open(&spec).unwrap();
        assert!(again.challenge(&record(1, "alice").id).unwrap().is_some());
    }

    #[test]
    fn memory_store() {
        run_all(&|| Box::new(MemoryStore::new()));
    }

    #[test]
    fn sqlite_store() {
        run_all(&|| Box::new(SqliteFile::new()));
    }

    /// A shared store with each step committed on its own.
    struct Plain(SharedStore, #[allow(dead_code)] tempfile::TempDir);

    impl Backend for Plain {
        fn with_handle(&self, f: &mut dyn FnMut(&dyn Store)) {
            f(&self.0);
        }
    }

    #[test]
    fn shared_store() {
        run_all(&|| {
            let file = SqliteFile::new();
            Box::new(Plain(SharedStore::new(file.open()), file.0))
        });
    }

    #[test]
    fn batched_shared_store() {
        run_all(&|| {
            let file = SqliteFile::new();
            let (shared, committer) = SharedStore::batched(file.open()).unwrap();
            Box::new(Batched(shared, committer, file.0))
        });
    }
}

/// The user's and global windows (roomy) and one keyed window of `kind`.
fn with_window(kind: LimitKind, key: &str, r: Rate, mode: LimitMode) -> SendLimits {
    let mut l = SendLimits::user_and_global(rate(100, 3600), rate(1000, 3600));
    l.windows.push(KeyedWindow::new(kind, key, r, mode));
    l
}

fn refused(by: LimitKind) -> SendDecision {
    SendDecision {
        refused: Some(by),
        ..SendDecision::default()
    }
}

/// Per number, country and source: each counts every user's sends under
/// its key, refuses at its bound (counting nothing, storing nothing),
/// keeps keys apart, and slides; days work as windows.
pub(super) fn keyed_windows(make: Make<'_>) {
    let day = 86_400_000;
    // Day 10 since the epoch: a bucket starts here.
    let t = 10 * day;
    for kind in [
        LimitKind::PerNumber,
        LimitKind::PerCountry,
        LimitKind::PerSource,
    ] {
        let b = make();
        let l = with_window(kind, "k1", rate(2, 86_400), LimitMode::Enforce);
        let other = with_window(kind, "k2", rate(2, 86_400), LimitMode::Enforce);
        on(&*b, |s| {
            let ok = SendDecision::granted();
            assert_eq!(s.reserve_sends("alice", t, &l).unwrap(), ok, "{kind:?}");
            assert_eq!(s.reserve_sends("bob", t + 1_000, &l).unwrap(), ok);
            assert_eq!(
                s.reserve_sends("carol", t + 2_000, &l).unwrap(),
                refused(kind)
            );
            // Another key has a window of its own.
            assert_eq!(s.reserve_sends("carol", t + 2_000, &other).unwrap(), ok);
            // Nothing was counted for the refused send, nothing stored.
            let w = s.sms_window("carol", t + 2_000, rate(5, 3600)).unwrap();
            assert_eq!(w.sent, 1);
            let mut c = record(7, "dave");
            c.created_at = t + 3_000;
            assert_eq!(s.start_challenge_with(&c, &l).unwrap(), refused(kind));
            assert_eq!(s.challenge(&c.id).unwrap(), None);
            // Not yet a day later, both still count.
            assert_eq!(
                s.reserve_sends("erin", t + day - 1, &l).unwrap(),
                refused(kind)
            );
            // A day later both have left the window.
            assert_eq!(
                s.reserve_sends("erin", t + day, &l).unwrap(),
                ok,
                "{kind:?}"
            );
            let mut c = record(8, "frank");
            c.created_at = t + day + 1;
            assert_eq!(s.start_challenge_with(&c, &l).unwrap(), ok);
            assert_eq!(s.challenge(&c.id).unwrap(), Some(c.clone()));
            assert_eq!(
                s.reserve_sends("gina", t + day + 2, &l).unwrap(),
                refused(kind)
            );
        });
    }
}

/// Of concurrent sends to one number (from different users), exactly the
/// limit is granted; likewise per country and per source.
pub(super) fn keyed_windows_under_races(make: Make<'_>) {
    for kind in [
        LimitKind::PerNumber,
        LimitKind::PerCountry,
        LimitKind::PerSource,
    ] {
        let b = make();
        let l = with_window(kind, "shared", rate(3, 3600), LimitMode::Enforce);
        let n = AtomicU32::new(0);
        let won = race(&*b, |s| {
            let i = n.fetch_add(1, Ordering::SeqCst) + 1;
            let mut c = record(u8::try_from(i).unwrap(), &format!("u{i}"));
            c.created_at = 5_000;
            s.start_challenge_with(&c, &l).unwrap().refused.is_none()
        });
        assert_eq!(won, 3, "{kind:?}");
    }
}

/// The back-off: after the n-th send of a streak the next waits
/// first·2^(n-1), at most max; refused sends count nothing; a gap of
/// twice max ends the streak.
pub(super) fn backoff(make: Make<'_>) {
    let b = make();
    let mut l = SendLimits::user_and_global(rate(100, 3600), rate(1000, 3600));
    let bo = Backoff {
        first: Duration::from_secs(60),
        max: Duration::from_secs(240),
    };
    l.backoff = Some((bo, LimitMode::Enforce));
    let m = 60_000;
    on(&*b, |s| {
        let r = |at| s.reserve_sends("alice", at, &l).unwrap();
        assert_eq!(r(0), SendDecision::granted());
        let d = r(m - 1);
        assert_eq!(d.refused, Some(LimitKind::Backoff));
        assert_eq!(d.retry_at, Some(m));
        assert_eq!(r(m).refused, None);
        // Second of the streak: 2m.
        assert_eq!(r(3 * m - 1).retry_at, Some(3 * m));
        assert_eq!(r(3 * m).refused, None);
        // Third: 4m (the cap).
        assert_eq!(r(7 * m - 1).retry_at, Some(7 * m));
        assert_eq!(r(7 * m).refused, None);
        // Fourth: capped at 4m.
        assert_eq!(r(11 * m - 1).retry_at, Some(11 * m));
        assert_eq!(r(11 * m).refused, None);
        // 8m (2 × max) without a send: a new streak, 1m after its first.
        assert_eq!(r(19 * m).refused, None);
        assert_eq!(r(20 * m - 1).retry_at, Some(20 * m));
        // Another user is not held back.
        assert_eq!(
            s.reserve_sends("bob", 20 * m - 1, &l).unwrap().refused,
            None
        );
        // The user's window counts only what was granted.
        assert_eq!(
            s.sms_window("alice", 20 * m, rate(100, 3600)).unwrap().sent,
            6
        );
    });
}

/// Monitor mode: a full limit grants, names itself, and the window still
/// counts; an enforced one after it still refuses.
pub(super) fn monitor_mode(make: Make<'_>) {
    let b = make();
    let mut l = with_window(
        LimitKind::PerCountry,
        "NG",
        rate(1, 86_400),
        LimitMode::Monitor,
    );
    l.per_user = rate(2, 3600);
    l.per_user_mode = LimitMode::Monitor;
    l.backoff = Some((
        Backoff {
            first: Duration::from_secs(60),
            max: Duration::from_secs(60),
        },
        LimitMode::Monitor,
    ));
    on(&*b, |s| {
        assert_eq!(
            s.reserve_sends("alice", 0, &l).unwrap(),
            SendDecision::granted()
        );
        let d = s.reserve_sends("alice", 1, &l).unwrap();
        assert_eq!(d.refused, None);
        assert_eq!(d.monitored, [LimitKind::Backoff, LimitKind::PerCountry]);
        let d = s.reserve_sends("alice", 2, &l).unwrap();
        assert_eq!(
            d.monitored,
            [
                LimitKind::PerUser,
                LimitKind::Backoff,
                LimitKind::PerCountry
            ]
        );
        assert_eq!(s.sms_window("alice", 3, rate(10, 3600)).unwrap().sent, 3);
        // Enforced per number after the monitored ones: refuses.
        let mut strict = l.clone();
        strict.windows.push(KeyedWindow::new(
            LimitKind::PerNumber,
            "+2348000000000",
            rate(1, 3600),
            LimitMode::Enforce,
        ));
        assert_eq!(s.reserve_sends("bob", 4, &strict).unwrap().refused, None);
        let d = s.reserve_sends("carol", 5, &strict).unwrap();
        assert_eq!(d.refused, Some(LimitKind::PerNumber));
        assert!(d.monitored.is_empty());
    });
}

/// The user's and global windows (roomy) and the spend budget: `budget`
/// units a day, this SMS costing `cost`.
fn with_budget(budget: u32, cost: u32, mode: LimitMode) -> SendLimits {
    let mut l = SendLimits::user_and_global(rate(100, 3600), rate(1000, 3600));
    l.windows
        .push(KeyedWindow::budget(rate(budget, 86_400), cost, mode));
    l
}

/// The spend breaker: each SMS adds its cost; the send that finds the
/// budget spent trips it and alone is told so; a trip refuses even with
/// room, stores nothing, until a reset (which forgets the spend) or one
/// window after the trip; the admin view shows it.
pub(super) fn spend_breaker(make: Make<'_>) {
    let day = 86_400_000;
    let t = 10 * day;
    let b = make();
    // 10.000 units; to NG 4.000, elsewhere 1.000.
    let ng = with_budget(10_000, 4_000, LimitMode::Enforce);
    let gb = with_budget(10_000, 1_000, LimitMode::Enforce);
    let w = ng.windows[1].clone();
    on(&*b, |s| {
        let ok = SendDecision::granted();
        assert_eq!(s.breaker(&w, t).unwrap(), BreakerState::default());
        assert_eq!(s.reserve_sends("alice", t, &ng).unwrap(), ok);
        assert_eq!(s.reserve_sends("bob", t + 1, &ng).unwrap(), ok);
        assert_eq!(s.breaker(&w, t + 2).unwrap().spent, 8_000);
        // 8.000 + 4.000 would pass 10.000: refused, and the trip.
        let d = s.reserve_sends("carol", t + 2, &ng).unwrap();
        assert_eq!(d.refused, Some(LimitKind::DailyBudget));
        assert!(d.tripped_now);
        let st = s.breaker(&w, t + 3).unwrap();
        assert_eq!(
            st,
            BreakerState {
                trip: Some(BreakerTrip {
                    at: t + 2,
                    until: t + 2 + day,
                    user: "carol".into(),
                    spent: 8_000,
                }),
                spent: 8_000,
            }
        );
        // Tripped: a cheaper SMS that would fit is refused too, and no
        // second "tripped now"; nothing counted, nothing stored.
        let mut c = record(9, "dave");
        c.created_at = t + 4;
        let d = s.start_challenge_with(&c, &gb).unwrap();
        assert_eq!(d.refused, Some(LimitKind::DailyBudget));
        assert!(!d.tripped_now);
        assert_eq!(s.challenge(&c.id).unwrap(), None);
        assert_eq!(s.breaker(&w, t + 5).unwrap().spent, 8_000);
        // A monitored budget ignores the trip and never trips.
        let mon = with_budget(10_000, 4_000, LimitMode::Monitor);
        let d = s.reserve_sends("erin", t + 6, &mon).unwrap();
        assert_eq!(d.refused, None);
        assert_eq!(d.monitored, [LimitKind::DailyBudget]);
        // The reset: returns what it cleared, forgets the spend.
        let before = s.reset_breaker(&w, t + 7).unwrap();
        assert_eq!(before.trip.map(|t| t.user), Some("carol".into()));
        assert_eq!(before.spent, 12_000);
        assert_eq!(s.breaker(&w, t + 8).unwrap(), BreakerState::default());
        assert_eq!(s.reserve_sends("frank", t + 8, &ng).unwrap(), ok);
        assert_eq!(s.reserve_sends("gina", t + 9, &ng).unwrap(), ok);
        let d = s.reserve_sends("hank", t + 10, &gb).unwrap();
        assert_eq!(d.refused, None, "2 × 4.000 + 1.000 fits");
        let d = s.reserve_sends("ivan", t + 11, &gb).unwrap();
        assert_eq!(d.refused, None, "9.000 + 1.000 fits exactly");
        let d = s.reserve_sends("ivan", t + 12, &gb).unwrap();
        assert!(d.tripped_now, "10.000 + 1.000 does not");
        // Not yet a window after the trip: still tripped (the window has
        // room by then, as its sends have left it).
        let later = t + 12 + day - 1;
        assert_eq!(
            s.reserve_sends("judy", later, &gb).unwrap().refused,
            Some(LimitKind::DailyBudget)
        );
        assert!(s.breaker(&w, later).unwrap().trip.is_some());
        // One window after the trip it closes by itself.
        assert_eq!(s.reserve_sends("judy", t + 12 + day, &gb).unwrap(), ok);
        assert_eq!(s.breaker(&w, t + 12 + day).unwrap().trip, None);
    });
}

/// Of concurrent sends that find the budget spent, exactly one trips the
/// breaker; exactly the budget is granted.
pub(super) fn spend_breaker_under_races(make: Make<'_>) {
    let b = make();
    let l = with_budget(3, 1, LimitMode::Enforce);
    let n = AtomicU32::new(0);
    let tripped = AtomicU32::new(0);
    let won = race(&*b, |s| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        let mut c = record(u8::try_from(i).unwrap(), &format!("u{i}"));
        c.created_at = 5_000;
        let d = s.start_challenge_with(&c, &l).unwrap();
        if d.tripped_now {
            tripped.fetch_add(1, Ordering::SeqCst);
        }
        d.refused.is_none()
    });
    assert_eq!(won, 3);
    assert_eq!(tripped.into_inner(), 1);
}

fn ckey(provider: &str, country: &str, what: Counted) -> CounterKey {
    CounterKey::new(provider, Some(country), what)
}

/// The SMS counters: each call adds one to each key (a key twice adds
/// two), per UTC day; a day reads back each key once, in key order,
/// without the other days' counts; an empty call counts nothing.
pub(super) fn counters(make: Make<'_>) {
    let day = 86_400_000;
    // 2026-12-03, 23:59:59.999 UTC: the next call is on the next day.
    let today = Day::parse("2026-12-03").unwrap();
    let t = today.start() + day - 1;
    let b = make();
    on(&*b, |s| {
        assert!(s.counters(today, t).unwrap().is_empty());
        let sent = ckey("sms1", "NG", Counted::Sent);
        let refused = ckey("-", "--", Counted::Refused(LimitKind::PerCountry));
        let monitored = ckey("-", "GB", Counted::Monitored(LimitKind::Global));
        let undeliv = ckey("smpp", "GB", Counted::Receipt("UNDELIV".into()));
        s.count(t - 10, std::slice::from_ref(&sent)).unwrap();
        s.count(t - 9, &[refused.clone(), sent.clone()]).unwrap();
        s.count(t - 8, &[monitored.clone(), monitored.clone()])
            .unwrap();
        s.count(t - 7, std::slice::from_ref(&undeliv)).unwrap();
        s.count(t - 6, &[]).unwrap();
        let want = vec![
            (refused.clone(), 1),
            (monitored.clone(), 2),
            (undeliv.clone(), 1),
            (sent.clone(), 2),
        ];
        assert_eq!(s.counters(today, t).unwrap(), want);
        // Midnight UTC: a new day starts from nothing; yesterday stays.
        s.count(t + 1, std::slice::from_ref(&sent)).unwrap();
        let tomorrow = Day(today.0 + 1);
        assert_eq!(
            s.counters(tomorrow, t + 1).unwrap(),
            vec![(sent.clone(), 1)]
        );
        assert_eq!(s.counters(today, t + 1).unwrap(), want);
        // A day that has not come reads as nothing.
        assert!(s.counters(Day(tomorrow.0 + 1), t + 1).unwrap().is_empty());
    });
}

/// Only the last KEEP_DAYS days are kept: a day drops out of reads as
/// soon as it is older, and out of the store as later days are counted.
pub(super) fn counters_keep_days(make: Make<'_>) {
    let first = Day::parse("2026-11-01").unwrap();
    let b = make();
    let k = ckey("sms1", "DE", Counted::Sent);
    on(&*b, |s| {
        for i in 0..12 {
            let d = Day(first.0 + i);
            s.count(d.start() + 3_600_000, std::slice::from_ref(&k))
                .unwrap();
        }
        let last = Day(first.0 + 11);
        let now = last.start() + 7_200_000;
        let kept: Vec<i64> = (0..12)
            .filter(|&i| !s.counters(Day(first.0 + i), now).unwrap().is_empty())
            .collect();
        assert_eq!(kept, (12 - KEEP_DAYS..12).collect::<Vec<_>>());
        assert_eq!(s.counters(last, now).unwrap(), vec![(k.clone(), 1)]);
    });
}

/// Counts from many handles at once are all kept.
pub(super) fn counters_under_races(make: Make<'_>) {
    let b = make();
    let today = Day::parse("2026-12-03").unwrap();
    let t = today.start() + 1000;
    let k = ckey("sms1", "FR", Counted::Sent);
    let f = ckey("sms1", "FR", Counted::Failed);
    let won = race(&*b, |s| {
        for _ in 0..5 {
            s.count(t, &[k.clone(), f.clone()]).unwrap();
        }
        true
    });
    assert_eq!(won, THREADS as u32);
    on(&*b, |s| {
        let n = 5 * THREADS as u64;
        assert_eq!(
            s.counters(today, t).unwrap(),
            vec![(k.clone(), n), (f.clone(), n)]
        );
    });
}
