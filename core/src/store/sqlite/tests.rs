#[test]
fn number_cache_round_trip() {
    let s = SqliteStore::open_in_memory().unwrap();
    let cache = s.number_cache();
    assert_eq!(cache.get("k"), None);
    cache.put("k", "+12025550143", Some("US"));
    cache.put("k", "+12025550143", Some("US"));
    assert_eq!(
        cache.get("k"),
        Some(("+12025550143".into(), Some("US".into())))
    );
}

use super::*;
use crate::clock::Millis;
use crate::otp::ChallengeId;
use crate::store::{
    Counted, CounterKey, Day, FailureState, PhoneRecord, SendPermit, SmsWindow, Store,
};

pub(super) use crate::store::conformance::{rate, record};

#[test]
fn the_configured_store_opens_as_a_sqlite_file() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("sub").join("state.db");
    let spec = crate::config::StoreSpec::Sqlite {
        path: path.clone(),
        busy_timeout: Duration::from_secs(5),
    };
    let s = crate::store::open(&spec).unwrap();
    let rec = PhoneRecord {
        e164: "+12025550143".into(),
        set_at: 1,
        set_by: "admin:root".into(),
    };
    s.set_phone("alice", &rec).unwrap();
    let other = SqliteStore::open(&path, Duration::from_secs(5)).unwrap();
    assert_eq!(other.phone("alice").unwrap(), Some(rec));
}

#[test]
fn sqlite_errors_become_backend_neutral_cases() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    std::fs::write(&p, vec![b'x'; 4096]).unwrap();
    let e = SqliteStore::open(&p, Duration::from_secs(1))
        .err()
        .expect("garbage opened as a store");
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
    assert!(e
        .to_string()
        .starts_with(&format!("state store {}: ", p.display())));
    // Issue #20: the message says how to recover and what that costs.
    let text = e.to_string();
    for want in [
        "not a SQLite database",
        "move the file away",
        "recreated",
        "lost unless you restore a backup",
    ] {
        assert!(text.contains(want), "{want:?} missing: {text}");
    }
}

#[test]
fn per_user_and_global_windows() {
    let s = SqliteStore::open_in_memory().unwrap();
    let (user, global) = (rate(2, 3600), rate(3, 3600));
    assert_eq!(
        s.reserve_sms("alice", 0, user, global).unwrap(),
        SendPermit::Granted
    );
    assert_eq!(
        s.reserve_sms("alice", 1, user, global).unwrap(),
        SendPermit::Granted
    );
    assert_eq!(
        s.reserve_sms("alice", 2, user, global).unwrap(),
        SendPermit::UserLimit
    );
    assert_eq!(
        s.reserve_sms("bob", 3, user, global).unwrap(),
        SendPermit::Granted
    );
    assert_eq!(
        s.reserve_sms("carol", 4, user, global).unwrap(),
        SendPermit::GlobalLimit
    );
    // The window slides: an hour after the first sends, they no longer count.
    let later = 3_600_001;
    assert_eq!(
        s.reserve_sms("alice", later, user, global).unwrap(),
        SendPermit::Granted
    );
}

#[test]
fn sms_window_counts_the_user_and_says_when_the_next_is_allowed() {
    let s = SqliteStore::open_in_memory().unwrap();
    let (user, global) = (rate(3, 3600), rate(100, 3600));
    let hour = 3_600_000;
    assert_eq!(
        s.sms_window("alice", 0, user).unwrap(),
        SmsWindow::default()
    );
    // Two sends in the same millisecond share a row.
    for at in [1_000, 1_000, 5_000] {
        s.reserve_sms("alice", at, user, global).unwrap();
    }
    s.reserve_sms("bob", 6_000, user, global).unwrap();
    assert_eq!(
        s.sms_window("alice", 10_000, user).unwrap(),
        SmsWindow {
            sent: 3,
            next_allowed_at: Some(1_000 + hour)
        }
    );
    // Below the limit: a count and no wait.
    assert_eq!(
        s.sms_window("alice", 10_000, rate(4, 3600)).unwrap(),
        SmsWindow {
            sent: 3,
            next_allowed_at: None
        }
    );
    // A limit of 1 must wait for the newest send to leave.
    assert_eq!(
        s.sms_window("alice", 10_000, rate(1, 3600))
            .unwrap()
            .next_allowed_at,
        Some(5_000 + hour)
    );
    // At that instant the first two have left, and the store agrees.
    let w = s.sms_window("alice", 1_000 + hour, user).unwrap();
    assert_eq!(
        w,
        SmsWindow {
            sent: 1,
            next_allowed_at: None
        }
    );
    assert_eq!(
        s.reserve_sms("alice", 1_000 + hour, user, global).unwrap(),
        SendPermit::Granted
    );
    assert_eq!(s.sms_window("bob", 10_000, user).unwrap().sent, 1);
}

#[test]
fn clearing_the_window_lets_the_user_send_again_and_spares_others() {
    let s = SqliteStore::open_in_memory().unwrap();
    let (user, global) = (rate(2, 3600), rate(5, 3600));
    for at in [1, 2] {
        s.reserve_sms("alice", at, user, global).unwrap();
    }
    s.reserve_sms("bob", 3, user, global).unwrap();
    assert_eq!(
        s.reserve_sms("alice", 4, user, global).unwrap(),
        SendPermit::UserLimit
    );
    assert_eq!(
        s.clear_sms_window("alice", 5, Duration::from_secs(3600))
            .unwrap(),
        2
    );
    assert_eq!(
        s.sms_window("alice", 5, user).unwrap(),
        SmsWindow::default()
    );
    assert_eq!(s.sms_window("bob", 5, user).unwrap().sent, 1);
    assert_eq!(
        s.reserve_sms("alice", 6, user, global).unwrap(),
        SendPermit::Granted
    );
    // The global window still holds the cleared sends: 2 + 1 + 1 of 5.
    s.reserve_sms("carol", 7, user, global).unwrap();
    assert_eq!(
        s.reserve_sms("dave", 8, user, global).unwrap(),
        SendPermit::GlobalLimit
    );
    // Nothing left to clear.
    assert_eq!(
        s.clear_sms_window("erin", 9, Duration::from_secs(3600))
            .unwrap(),
        0
    );
}

#[test]
fn lockout_after_n_failures_and_its_end() {
    let s = SqliteStore::open_in_memory().unwrap();
    let lock = Duration::from_secs(60);
    assert_eq!(s.record_failure("alice", 0, 3, lock).unwrap().count, 1);
    assert_eq!(
        s.record_failure("alice", 1, 3, lock).unwrap().locked_until,
        None
    );
    let st = s.record_failure("alice", 2, 3, lock).unwrap();
    assert_eq!(
        st,
        FailureState {
            count: 3,
            locked_until: Some(60_002)
        }
    );
    assert_eq!(s.locked_until("alice", 30_000).unwrap(), Some(60_002));
    assert_eq!(s.locked_until("alice", 60_002).unwrap(), None);
    // After the lockout, counting starts over.
    assert_eq!(s.record_failure("alice", 70_000, 3, lock).unwrap().count, 1);
    s.clear_failures("alice").unwrap();
    assert_eq!(
        s.failures("alice", 70_000).unwrap(),
        FailureState::default()
    );
}

#[test]
fn wrong_attempts_count_down_and_delete() {
    let s = SqliteStore::open_in_memory().unwrap();
    let c = record(1, "alice");
    s.insert_challenge(&c).unwrap();
    assert_eq!(s.challenge(&c.id).unwrap().unwrap(), c);
    assert_eq!(s.wrong_attempt(&c.id).unwrap(), Some(2));
    assert_eq!(s.wrong_attempt(&c.id).unwrap(), Some(1));
    assert_eq!(s.wrong_attempt(&c.id).unwrap(), Some(0));
    assert_eq!(s.challenge(&c.id).unwrap(), None);
    assert_eq!(s.wrong_attempt(&c.id).unwrap(), None);
}

#[test]
fn consume_succeeds_once_and_only_for_the_current_code() {
    let s = SqliteStore::open_in_memory().unwrap();
    let c = record(2, "alice");
    s.insert_challenge(&c).unwrap();
    assert!(!s.consume(&c.id, &[9; 32], "alice").unwrap());
    assert!(s
        .replace_code(&c.id, &[5; 32], 2_000, 302_000, 3, 1)
        .unwrap());
    assert!(
        !s.consume(&c.id, &c.code_mac, "alice").unwrap(),
        "old code after resend"
    );
    assert!(s.consume(&c.id, &[5; 32], "alice").unwrap());
    assert!(!s.consume(&c.id, &[5; 32], "alice").unwrap(), "second use");
}

#[test]
fn consume_code_takes_only_a_usable_challenge_and_once() {
    let s = SqliteStore::open_in_memory().unwrap();
    let c = record(4, "alice");
    s.insert_challenge(&c).unwrap();
    let mut other = record(5, "alice");
    other.step = Step::EnrollCode;
    s.insert_challenge(&other).unwrap();
    let lock = Duration::from_secs(60);
    let take = |id: &ChallengeId, user: &str, service: &str, mac: &[u8; 32], now: Millis| {
        s.consume_code(id, user, service, mac, now).unwrap()
    };
    // Each condition refuses on its own, and leaves the challenge be.
    assert_eq!(take(&c.id, "alice", "sshd", &[9; 32], 2_000), None, "mac");
    assert_eq!(take(&c.id, "bob", "sshd", &c.code_mac, 2_000), None, "user");
    assert_eq!(
        take(&c.id, "alice", "sudo", &c.code_mac, 2_000),
        None,
        "service"
    );
    assert_eq!(
        take(&c.id, "alice", "sshd", &c.code_mac, 301_000),
        None,
        "expired"
    );
    let enroll = (&other.id, &other.code_mac);
    assert_eq!(
        take(enroll.0, "alice", "sshd", enroll.1, 2_000),
        None,
        "step"
    );
    s.record_failure("alice", 2_000, 1, lock).unwrap();
    assert_eq!(
        take(&c.id, "alice", "sshd", &c.code_mac, 3_000),
        None,
        "locked"
    );
    assert_eq!(s.challenge(&c.id).unwrap().as_ref(), Some(&c));
    assert_eq!(s.locked_until("alice", 3_000).unwrap(), Some(62_000));
    // Once the lockout has ended, the right code is taken, the
    // failure count cleared, and the code is used up.
    assert_eq!(
        take(&c.id, "alice", "sshd", &c.code_mac, 62_000).as_deref(),
        Some("******0143")
    );
    assert_eq!(s.challenge(&c.id).unwrap(), None);
    assert_eq!(
        s.failures("alice", 62_000).unwrap(),
        FailureState::default()
    );
    assert_eq!(
        take(&c.id, "alice", "sshd", &c.code_mac, 62_000),
        None,
        "reuse"
    );
    assert!(s.challenge(&other.id).unwrap().is_some());
}

#[test]
fn file_store_is_private_and_shared_between_connections() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state/state.db");
    let a = SqliteStore::open(&p, Duration::from_secs(5)).unwrap();
    let b = SqliteStore::open(&p, Duration::from_secs(5)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dmode = std::fs::metadata(p.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dmode, 0o700);
    let c = record(3, "alice");
    a.insert_challenge(&c).unwrap();
    assert!(b.consume(&c.id, &c.code_mac, "alice").unwrap());
    assert!(!a.consume(&c.id, &c.code_mac, "alice").unwrap());
}

#[test]
fn concurrent_processes_never_exceed_the_window() {
    // Eight connections (as eight sshd processes would have) race for a
    // window of 10 sends: exactly 10 are granted.
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    drop(SqliteStore::open(&p, Duration::from_secs(10)).unwrap());
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || {
                let s = SqliteStore::open(&p, Duration::from_secs(10)).unwrap();
                (0..5)
                    .filter(|i| {
                        s.reserve_sms("alice", *i, rate(10, 3600), rate(100, 3600))
                            .unwrap()
                            == SendPermit::Granted
                    })
                    .count()
            })
        })
        .collect();
    let granted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(granted, 10);
}

#[test]
fn a_newer_challenge_of_the_login_replaces_it_but_never_another_logins() {
    let s = SqliteStore::open_in_memory().unwrap();
    let a = record(6, "alice");
    s.insert_challenge(&a).unwrap();
    let mut bob = record(6, "bob");
    bob.code_mac = [1; 32];
    assert!(s.insert_challenge(&bob).is_err(), "another user's id");
    let mut sudo = record(6, "alice");
    sudo.service = "sudo".into();
    assert!(s.insert_challenge(&sudo).is_err(), "another service's id");
    assert_eq!(s.challenge(&a.id).unwrap().as_ref(), Some(&a));
    // A newer challenge of the same login takes the id; what the older
    // request clears up after itself leaves it be.
    let mut newer = record(6, "alice");
    newer.code_mac = [2; 32];
    newer.created_at += 10;
    s.start_challenge(&newer, rate(10, 3600), rate(10, 3600))
        .unwrap();
    assert!(!s.set_step(&a.id, &a.code_mac, Step::BackupOnly).unwrap());
    assert!(!s.withdraw(&a.id, &a.code_mac).unwrap());
    assert_eq!(s.challenge(&a.id).unwrap().as_ref(), Some(&newer));
    assert!(s
        .set_step(&a.id, &newer.code_mac, Step::BackupOnly)
        .unwrap());
    assert!(s.withdraw(&a.id, &newer.code_mac).unwrap());
    assert_eq!(s.challenge(&a.id).unwrap(), None);
}

#[test]
fn of_concurrent_right_answers_exactly_one_takes_the_code() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    let c = record(9, "alice");
    SqliteStore::open(&p, Duration::from_secs(5))
        .unwrap()
        .insert_challenge(&c)
        .unwrap();
    let go = std::sync::Barrier::new(6);
    let taken: usize = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (go, c, p) = (&go, &c, &p);
                scope.spawn(move || {
                    let s = SqliteStore::open(p, Duration::from_secs(5)).unwrap();
                    go.wait();
                    s.consume_code(&c.id, "alice", "sshd", &c.code_mac, 2_000)
                        .unwrap()
                        .is_some()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| usize::from(t.join().unwrap()))
            .sum()
    });
    assert_eq!(taken, 1);
}

#[test]
fn the_old_index_by_user_is_dropped_and_the_challenges_kept() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    let c = record(8, "alice");
    {
        let s = SqliteStore::open(&p, Duration::from_secs(5)).unwrap();
        s.conn
            .execute_batch("CREATE INDEX challenge_user ON challenge(user, service, created_at)")
            .unwrap();
        s.insert_challenge(&c).unwrap();
    }
    let s = SqliteStore::open(&p, Duration::from_secs(5)).unwrap();
    let indexes: i64 = s
        .conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'challenge_user'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 0);
    assert_eq!(s.challenge(&c.id).unwrap(), Some(c));
}

#[test]
fn older_layout_is_rebuilt_and_newer_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    {
        let c = Connection::open(&p).unwrap();
        c.execute_batch("CREATE TABLE challenge (id TEXT PRIMARY KEY); CREATE TABLE sms_sent (user TEXT, at INTEGER);")
            .unwrap();
    }
    let s = SqliteStore::open(&p, Duration::from_secs(5)).unwrap();
    s.insert_challenge(&record(7, "alice")).unwrap();
    assert!(s.challenge(&ChallengeId([7; 16])).unwrap().is_some());
    drop(s);
    Connection::open(&p)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let e = SqliteStore::open(&p, Duration::from_secs(5))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("newer"), "{e}");
}

/// Dice that always say "sweep", so a sweep is due whenever its
/// interval allows.
struct AlwaysSweep;

impl crate::random::RandomSource for AlwaysSweep {
    fn fill(&self, buf: &mut [u8]) -> Result<(), crate::random::RandomError> {
        buf.fill(0);
        Ok(())
    }
}

fn rows(s: &SqliteStore, table: &str) -> i64 {
    s.conn
        .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Expired rows are deleted, not only ignored: by the writes that add
/// rows of their kind, at most every 30 s per handle; a resend's send
/// leaves challenges alone (its own may have expired).
#[test]
fn expired_rows_are_deleted_eventually() {
    let mut s = SqliteStore::open_in_memory().unwrap();
    s.set_sweep_dice(Box::new(AlwaysSweep));
    let (user, global) = (rate(5, 3600), rate(100, 7200));
    let c = record(4, "alice");
    assert_eq!(
        s.start_challenge(&c, user, global).unwrap(),
        SendPermit::Granted
    );
    assert_eq!((rows(&s, "challenge"), rows(&s, "sms_sent")), (1, 1));
    assert!(rows(&s, "sms_global") > 0);
    // Expired, but a resend's send does not delete it.
    let later = c.expires_at + 60_000;
    s.reserve_sms("bob", later, user, global).unwrap();
    assert!(s.challenge(&c.id).unwrap().is_some());
    // A new challenge does; within 30 s of the last sweep, nothing does.
    let mut d = record(5, "bob");
    d.created_at = later + 29_999;
    d.expires_at = d.created_at + 300_000;
    s.insert_challenge(&d).unwrap();
    assert!(s.challenge(&c.id).unwrap().is_some());
    d.created_at = later + 30_000;
    s.insert_challenge(&d).unwrap();
    assert_eq!(s.challenge(&c.id).unwrap(), None);
    assert!(s.challenge(&d.id).unwrap().is_some());
    // Sends go once older than the longest window (2 h here), not before.
    s.reserve_sms("bob", 7_200_999, user, global).unwrap();
    assert_eq!(rows(&s, "sms_sent"), 3, "alice's is still inside 2 h");
    s.reserve_sms("bob", 7_230_999, user, global).unwrap();
    assert_eq!(rows(&s, "sms_sent"), 3, "alice's went, bob's third came");
    assert_eq!(s.sms_window("alice", 7_300_000, user).unwrap().sent, 0);
    // A global bucket goes once it ends more than 2 h ago.
    s.reserve_sms("carol", 7_400_000, user, global).unwrap();
    let oldest_end: i64 = s
        .conn
        .query_row("SELECT MIN((bucket + 1) * size) FROM sms_global", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(oldest_end > 7_400_000 - 7_200_000, "{oldest_end}");
}

/// Without the dice's say-so, nothing is swept: about one write in 32.
#[test]
fn sweeps_are_rare() {
    struct NeverSweep;
    impl crate::random::RandomSource for NeverSweep {
        fn fill(&self, buf: &mut [u8]) -> Result<(), crate::random::RandomError> {
            buf.fill(8);
            Ok(())
        }
    }
    let mut s = SqliteStore::open_in_memory().unwrap();
    s.set_sweep_dice(Box::new(NeverSweep));
    let c = record(4, "alice");
    s.insert_challenge(&c).unwrap();
    let mut d = record(5, "bob");
    d.created_at = c.expires_at + 3_600_000;
    d.expires_at = d.created_at + 300_000;
    s.insert_challenge(&d).unwrap();
    assert!(s.challenge(&c.id).unwrap().is_some());
}

#[test]
fn short_lived_handles_keep_the_wal_that_the_next_open_reads_short() {
    // Each PAM login opens the store, writes twice (the challenge stored,
    // then deleted when the code is consumed) and exits; the next one reads every WAL frame since
    // the last checkpoint. 300 such logins write far more than
    // SHORT_LIVED_CHECKPOINT pages: the WAL must have been checkpointed (at
    // a commit past the limit) and started again (by the next write of
    // that process; a fresh process cannot know the checkpoint finished),
    // not grown towards SQLite's default of 1000.
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("state.db");
    for i in 0..300 {
        let s = SqliteStore::open(&path, Duration::from_secs(5)).unwrap();
        let mut rec = PhoneRecord {
            e164: "+12025550143".into(),
            set_at: i,
            set_by: "admin:root".into(),
        };
        s.set_phone(&format!("user{i}"), &rec).unwrap();
        // A second write that changes the row (SQLite writes nothing for a
        // row rewritten as it was).
        rec.set_at += 1000;
        s.set_phone(&format!("user{i}"), &rec).unwrap();
    }
    let s = SqliteStore::open(&path, Duration::from_secs(5)).unwrap();
    let page: i64 = s
        .conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap();
    assert_eq!(page, 1024, "a reopened store keeps its small pages");
    let ac: i64 = s
        .conn
        .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
        .unwrap();
    eprintln!("DEBUG autocheckpoint {ac}");
    let frames = (std::fs::metadata(d.path().join("state.db-wal"))
        .unwrap()
        .len()
        - 32)
        / (page as u64 + 24);
    assert!(
        frames <= SHORT_LIVED_CHECKPOINT as u64 + 16,
        "the WAL grew to {frames} frames"
    );
    assert_eq!(s.phone("user0").unwrap().map(|r| r.set_at), Some(1000));
    assert_eq!(s.phone("user299").unwrap().map(|r| r.set_at), Some(1299));
}

/// A store file built by `script` (a fixture in `testdata/`), opened by
/// today's code.
fn open_fixture(script: &str) -> (tempfile::TempDir, SqliteStore) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    Connection::open(&p).unwrap().execute_batch(script).unwrap();
    let s = SqliteStore::open(&p, Duration::from_secs(5)).unwrap();
    (d, s)
}

/// Layout 2 kept lockouts and failure counts only; an upgrade used to drop
/// them with the short-lived tables, unlocking everyone.
#[test]
fn layout_2_keeps_its_lockout() {
    let (_d, s) = open_fixture(include_str!("testdata/layout-v2.sql"));
    assert_eq!(s.layout_version().unwrap(), SCHEMA_VERSION);
    let now: Millis = 2_000;
    assert_eq!(
        s.failures("mallory", now).unwrap(),
        FailureState {
            count: 5,
            locked_until: Some(4_102_444_800_000)
        }
    );
    assert_eq!(
        s.locked_until("mallory", now).unwrap(),
        Some(4_102_444_800_000)
    );
    assert_eq!(s.failures("bob", now).unwrap().count, 2);
    // Short-lived state is rebuilt in today's layout, and works.
    assert_eq!(s.challenge(&ChallengeId([7; 16])).unwrap(), None);
    s.insert_challenge(&record(8, "alice")).unwrap();
    assert!(s.challenge(&ChallengeId([8; 16])).unwrap().is_some());
}

/// Today's layout, written by hand as it is today: whatever the next
/// layout change does, these rows must come through it.
#[test]
fn layout_3_keeps_what_is_durable() {
    let (_d, s) = open_fixture(include_str!("testdata/layout-v3.sql"));
    assert_eq!(s.layout_version().unwrap(), SCHEMA_VERSION);
    let now: Millis = 5_000;
    assert_eq!(
        s.phone("alice").unwrap(),
        Some(PhoneRecord {
            e164: "+12025550143".into(),
            set_at: 1000,
            set_by: "admin:root".into(),
        })
    );
    assert_eq!(s.phone("carol").unwrap().unwrap().e164, "+447700900123");
    assert_eq!(
        s.login_state("alice", now, None)
            .unwrap()
            .phone
            .unwrap()
            .set_at,
        1000
    );
    assert_eq!(s.backup_codes_left("alice").unwrap(), 2);
    assert_eq!(
        s.backup_candidates("alice", &[1, 2, 3, 4, 5, 6, 7, 8])
            .unwrap(),
        vec!["$argon2id$fixture-hash-0".to_owned()]
    );
    assert_eq!(
        s.opt_out("dave").unwrap(),
        Some(("admin:root".into(), 3000))
    );
    assert_eq!(s.opted_out_users().unwrap(), vec!["dave".to_owned()]);
    assert_eq!(
        s.locked_until("mallory", now).unwrap(),
        Some(4_102_444_800_000)
    );
    assert_eq!(s.failures("bob", now).unwrap().count, 2);
}

/// Layout 4 only added a table: a layout-3 store keeps even its pending
/// challenge and its send windows, and counts in the new windows at once.
#[test]
fn layout_3_gains_the_keyed_windows_and_keeps_the_rest() {
    let mut script = include_str!("testdata/layout-v3.sql").to_owned();
    let c = record(9, "alice");
    script.push_str(&format!(
        "INSERT INTO challenge VALUES (x'{}', 'alice', 'sshd', x'{}', '{}', {}, {}, {}, {}, 0, 0, NULL);
         INSERT INTO sms_sent VALUES ('alice', 1000, 1);",
        "09".repeat(16),
        "09".repeat(32),
        c.phone_masked,
        c.created_at,
        c.sent_at,
        c.expires_at,
        c.attempts_left
    ));
    let (_d, s) = open_fixture(&script);
    assert_eq!(s.layout_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(s.challenge(&c.id).unwrap(), Some(c));
    assert_eq!(s.sms_window("alice", 2_000, rate(5, 3600)).unwrap().sent, 1);
    assert_eq!(s.phone("alice").unwrap().unwrap().e164, "+12025550143");
    let mut l = crate::store::SendLimits::user_and_global(rate(5, 3600), rate(100, 3600));
    l.windows.push(crate::store::KeyedWindow::new(
        crate::store::LimitKind::PerNumber,
        "+12025550143",
        rate(1, 86_400),
        crate::store::LimitMode::Enforce,
    ));
    assert_eq!(s.reserve_sends("bob", 3_000, &l).unwrap().refused, None);
    assert_eq!(
        s.reserve_sends("carol", 4_000, &l).unwrap().refused,
        Some(crate::store::LimitKind::PerNumber)
    );
}

/// Layout 4, written by hand as it was.
#[test]
fn layout_4_keeps_what_is_durable() {
    let (_d, s) = open_fixture(include_str!("testdata/layout-v4.sql"));
    assert_eq!(s.layout_version().unwrap(), SCHEMA_VERSION);
    let now: Millis = 5_000;
    assert_eq!(s.phone("carol").unwrap().unwrap().e164, "+447700900123");
    assert_eq!(s.backup_codes_left("alice").unwrap(), 2);
    assert_eq!(s.opted_out_users().unwrap(), vec!["dave".to_owned()]);
    assert_eq!(
        s.locked_until("mallory", now).unwrap(),
        Some(4_102_444_800_000)
    );
    assert_eq!(s.failures("bob", now).unwrap().count, 2);
    let n: u32 = s
        .conn
        .query_row("SELECT count FROM sms_limit", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2, "layout 5 only adds the breaker table: windows stay");
    // And that table works.
    let mut l = crate::store::SendLimits::user_and_global(rate(5, 3600), rate(100, 3600));
    l.windows.push(crate::store::KeyedWindow::budget(
        rate(1, 86_400),
        1,
        crate::store::LimitMode::Enforce,
    ));
    assert_eq!(s.reserve_sends("bob", now, &l).unwrap().refused, None);
    assert!(s.reserve_sends("bob", now + 1, &l).unwrap().tripped_now);
    assert!(s.breaker(&l.windows[1], now + 2).unwrap().trip.is_some());
}

/// The sweep forgets keyed-window buckets older than any window of their
/// size, whatever this host's limits are.
#[test]
fn the_sweep_forgets_old_keyed_buckets() {
    let s = SqliteStore::open_in_memory().unwrap();
    let day = 86_400_000;
    let l = {
        let mut l = crate::store::SendLimits::user_and_global(rate(5, 3600), rate(100, 3600));
        l.windows.push(crate::store::KeyedWindow::new(
            crate::store::LimitKind::PerCountry,
            "NG",
            rate(10, 86_400),
            crate::store::LimitMode::Enforce,
        ));
        l
    };
    s.reserve_sends("alice", 10 * day, &l).unwrap();
    let rows = |s: &SqliteStore| -> u32 {
        s.conn
            .query_row("SELECT COUNT(*) FROM sms_limit", [], |r| r.get(0))
            .unwrap()
    };
    s.write(|tx| {
        SqliteStore::sweep_in(
            tx,
            11 * day - 1,
            sweep::Kinds::Sends {
                keep: Duration::from_secs(3600),
            },
        )
    })
    .unwrap();
    assert_eq!(rows(&s), 1, "still inside a day");
    s.write(|tx| {
        SqliteStore::sweep_in(
            tx,
            11 * day + day / 30,
            sweep::Kinds::Sends {
                keep: Duration::from_secs(3600),
            },
        )
    })
    .unwrap();
    assert_eq!(rows(&s), 0);
}

/// Layout 5, written by hand as it was: a trip of the spend breaker is
/// there after a reopen, and refuses; the store gains the counters.
#[test]
fn layout_5_keeps_what_is_durable() {
    let (_d, s) = open_fixture(include_str!("testdata/layout-v5.sql"));
    assert_eq!(s.layout_version().unwrap(), SCHEMA_VERSION);
    let now: Millis = 5_000;
    assert_eq!(s.phone("carol").unwrap().unwrap().e164, "+447700900123");
    assert_eq!(s.backup_codes_left("alice").unwrap(), 2);
    assert_eq!(s.opted_out_users().unwrap(), vec!["dave".to_owned()]);
    assert_eq!(
        s.locked_until("mallory", now).unwrap(),
        Some(4_102_444_800_000)
    );
    let w = crate::store::KeyedWindow::budget(rate(5, 86_400), 1, crate::store::LimitMode::Enforce);
    let trip = s.breaker(&w, now).unwrap().trip.unwrap();
    assert_eq!(
        (trip.at, trip.user.as_str(), trip.spent),
        (4000, "erin", 2000)
    );
    let mut l = crate::store::SendLimits::user_and_global(rate(5, 3600), rate(100, 3600));
    l.windows.push(w);
    let d = s.reserve_sends("bob", now, &l).unwrap();
    assert_eq!(d.refused, Some(crate::store::LimitKind::DailyBudget));
    assert!(!d.tripped_now);
    let k = CounterKey::new("sms1", Some("GB"), Counted::Sent);
    s.count(now, std::slice::from_ref(&k)).unwrap();
    assert_eq!(s.counters(Day::of(now), now).unwrap(), vec![(k, 1)]);
}

/// Today's layout, written by hand as it is today: what layout 5 kept,
/// and a day's counters (a counter this build cannot name is left out).
#[test]
fn layout_6_keeps_what_is_durable() {
    let (_d, s) = open_fixture(include_str!("testdata/layout-v6.sql"));
    assert_eq!(s.layout_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(s.phone("carol").unwrap().unwrap().e164, "+447700900123");
    assert_eq!(s.backup_codes_left("alice").unwrap(), 2);
    assert_eq!(s.opted_out_users().unwrap(), vec!["dave".to_owned()]);
    assert_eq!(
        s.locked_until("mallory", 5_000).unwrap(),
        Some(4_102_444_800_000)
    );
    let w = crate::store::KeyedWindow::budget(rate(5, 86_400), 1, crate::store::LimitMode::Enforce);
    assert!(s.breaker(&w, 5_000).unwrap().trip.is_some());
    let day = Day(20425);
    let now = day.start() + 1;
    let sent = CounterKey::new("sms1", Some("GB"), Counted::Sent);
    let refused = CounterKey::new(
        "-",
        Some("NG"),
        Counted::Refused(crate::store::LimitKind::PerCountry),
    );
    let undeliv = CounterKey::new("smpp", Some("GB"), Counted::Receipt("UNDELIV".into()));
    assert_eq!(
        s.counters(day, now).unwrap(),
        vec![(refused, 3), (undeliv, 1), (sent.clone(), 7)]
    );
    s.count(now, std::slice::from_ref(&sent)).unwrap();
    assert_eq!(s.counters(day, now).unwrap().last(), Some(&(sent, 8)));
}

/// An upgrade from any earlier layout keeps what today's layout holds: a
/// store made today, with its `user_version` set back as an older build
/// would have left it, comes through the rebuild with every durable row.
#[test]
fn an_upgrade_keeps_todays_durable_rows() {
    // Set back to layouts 3 to 6 (layouts 4 to 7 only add tables), and
    // to layout 2 (the rebuild of short-lived tables).
    for (fixture, version) in [
        (include_str!("testdata/layout-v3.sql"), 3),
        (include_str!("testdata/layout-v4.sql"), 4),
        (include_str!("testdata/layout-v5.sql"), 5),
        (include_str!("testdata/layout-v6.sql"), 6),
        (include_str!("testdata/layout-v6.sql"), 2),
    ] {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.db");
        let c = Connection::open(&p).unwrap();
        c.execute_batch(fixture).unwrap();
        c.pragma_update(None, "user_version", version).unwrap();
        drop(c);
        let s = SqliteStore::open(&p, Duration::from_secs(5)).unwrap();
        assert_eq!(s.layout_version().unwrap(), SCHEMA_VERSION);
        let now: Millis = 5_000;
        assert!(s.phone("alice").unwrap().is_some());
        assert_eq!(s.backup_codes_left("alice").unwrap(), 2);
        assert!(s.opt_out("dave").unwrap().is_some());
        assert_eq!(
            s.locked_until("mallory", now).unwrap(),
            Some(4_102_444_800_000),
            "from layout {version}"
        );
        // Layout 7's table is there to use.
        s.set_language("alice", Some("de")).unwrap();
        assert_eq!(s.language("alice").unwrap().as_deref(), Some("de"));
    }
}

#[test]
fn a_store_path_that_is_a_symlink_fifo_or_directory_is_refused_at_once() {
    let d = tempfile::tempdir().unwrap();
    let real = d.path().join("real.db");
    drop(SqliteStore::open(&real, Duration::from_secs(5)).unwrap());
    let link = d.path().join("state.db");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let e = SqliteStore::open(&link, Duration::from_secs(5))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is a symlink"), "{e}");
    assert!(e.contains("point store.path at the real file"), "{e}");

    let fifo = d.path().join("fifo.db");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let started = std::time::Instant::now();
    let e = SqliteStore::open(&fifo, Duration::from_secs(5))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is a FIFO, not a regular file"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));

    let e = SqliteStore::open(d.path(), Duration::from_secs(5))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is a directory"), "{e}");
}

/// Logins racing on a new host open a store that does not exist yet, all
/// at once. Switching the new file to WAL made some of them fail with
/// "database is locked" (one round of 16 opens in 50 to 200: SQLite
/// answers the switch's losers at once, without the busy handler), which
/// failed those logins. Every open must succeed, and the store be usable.
#[test]
fn many_processes_open_a_new_store_at_once() {
    const ROUNDS: usize = 300;
    const AT_ONCE: usize = 16;
    for round in 0..ROUNDS {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state.db");
        let opened: Vec<Result<(), String>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..AT_ONCE)
                .map(|i| {
                    let path = &path;
                    s.spawn(move || {
                        let st = SqliteStore::open(path, Duration::from_secs(10))
                            .map_err(|e| format!("open {i}: {e}"))?;
                        st.insert_challenge(&record(i as u8, "alice"))
                            .map_err(|e| format!("write {i}: {e}"))
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let failed: Vec<_> = opened.into_iter().filter_map(Result::err).collect();
        assert!(failed.is_empty(), "round {round}: {failed:?}");
        let s = SqliteStore::open(&path, Duration::from_secs(10)).unwrap();
        let mode: String = s
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}

/// A batch of counts the store cannot take (here: a read-only
/// connection) stays whole for the next flush, with what was counted
/// meanwhile; then it is written once, a day at a time.
#[test]
fn a_count_batch_keeps_what_the_store_refused() {
    let s = SqliteStore::open_in_memory().unwrap();
    let batch = crate::flow::CountBatch::new();
    let sent = CounterKey::new("sms1", Some("DE"), Counted::Sent);
    let failed = CounterKey::new("sms2", None, Counted::Failed);
    let day = 86_400_000;
    let (yesterday, today) = (20_000 * day + 5, 20_001 * day + 7);
    batch.add(yesterday, [(sent.clone(), 1)]);
    batch.add(today, [(sent.clone(), 1), (failed.clone(), 1)]);
    s.conn.pragma_update(None, "query_only", true).unwrap();
    assert!(batch.flush(&s).is_err());
    batch.add(today, [(sent.clone(), 1)]);
    assert!(!batch.is_empty());
    s.conn.pragma_update(None, "query_only", false).unwrap();
    assert_eq!(batch.flush(&s).unwrap(), 4);
    assert!(batch.is_empty());
    assert_eq!(batch.flush(&s).unwrap(), 0);
    assert_eq!(
        s.counters(Day::of(today), today).unwrap(),
        vec![(sent.clone(), 2), (failed, 1)]
    );
    assert_eq!(
        s.counters(Day::of(yesterday), today).unwrap(),
        vec![(sent, 1)]
    );
}
