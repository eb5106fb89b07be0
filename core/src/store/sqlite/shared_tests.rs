use super::*;
use crate::store::sqlite::tests::record;
use crate::store::sqlite::{SqliteStore, WaitSignal};

/// A batched store on a file, and a second connection to look at it as
/// another process would.
fn batched_pair() -> (tempfile::TempDir, SharedStore, Committer, SqliteStore) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    let (shared, committer) =
        SharedStore::batched(SqliteStore::open(&p, Duration::from_secs(5)).unwrap()).unwrap();
    let other = SqliteStore::open(&p, Duration::from_secs(5)).unwrap();
    (d, shared, committer, other)
}

/// Defers a probe; returns what it was told and whether `id` was
/// visible to `other` at that moment.
fn probe(
    shared: &SharedStore,
    other: SqliteStore,
    id: ChallengeId,
) -> std::sync::mpsc::Receiver<(Result<(), String>, bool, SqliteStore)> {
    let (tx, rx) = std::sync::mpsc::channel();
    shared.defer(Box::new(move |outcome| {
        let seen = other.challenge(&id).unwrap().is_some();
        let _ = tx.send((outcome.map_err(str::to_owned), seen, other));
    }));
    rx
}

fn wait<T>(rx: &std::sync::mpsc::Receiver<T>) -> T {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("deferred work never ran")
}

#[test]
fn deferred_work_runs_once_its_writes_are_committed() {
    let (_d, shared, _committer, other) = batched_pair();
    let c = record(1, "alice");
    shared.insert_challenge(&c).unwrap();
    let (outcome, seen, other) = wait(&probe(&shared, other, c.id));
    assert_eq!(outcome, Ok(()));
    assert!(seen, "another connection must see the challenge by then");
    // And a consumed code is gone for everyone before the answer.
    assert!(shared.consume(&c.id, &c.code_mac, "alice").unwrap());
    let (outcome, seen, _) = wait(&probe(&shared, other, c.id));
    assert_eq!(outcome, Ok(()));
    assert!(!seen);
}

#[test]
fn deferred_work_of_a_rolled_back_batch_is_told_so() {
    let (_d, shared, _committer, other) = batched_pair();
    // Hold the committer off while the batch fails, as a busy server's
    // requests interleave: one request wrote, another one's step fails.
    shared.0.queue().paused = true;
    let c = record(2, "alice");
    shared.insert_challenge(&c).unwrap();
    // What SQLite does on some I/O errors: the whole transaction goes.
    let err = shared.with(|s| {
        s.conn.execute_batch("ROLLBACK").unwrap();
        Err::<(), _>(s.err(rusqlite::Error::InvalidQuery))
    });
    assert!(err.is_err());
    let rx = probe(&shared, other, c.id);
    shared.0.queue().paused = false;
    shared.0.wake.notify_one();
    let (outcome, seen, other) = wait(&rx);
    assert!(
        outcome.is_err(),
        "the challenge was rolled back: {outcome:?}"
    );
    assert!(!seen);
    // A later request starts afresh and commits.
    let c2 = record(3, "bob");
    shared.insert_challenge(&c2).unwrap();
    let (outcome, seen, other) = wait(&probe(&shared, other, c2.id));
    assert_eq!(outcome, Ok(()));
    assert!(seen);
    // A request that touched nothing is not failed by others' trouble.
    let (outcome, _, _) = wait(&probe(&shared, other, c2.id));
    assert_eq!(outcome, Ok(()));
}

#[test]
fn durable_returns_once_this_threads_writes_are_committed() {
    let (_d, shared, _committer, other) = batched_pair();
    // Nothing written: nothing to wait for.
    shared.durable().unwrap();
    let c = record(4, "alice");
    shared.insert_challenge(&c).unwrap();
    shared.durable().unwrap();
    assert!(
        other.challenge(&c.id).unwrap().is_some(),
        "another connection must see the challenge once durable returns"
    );
}

#[test]
fn durable_fails_when_this_threads_batch_was_rolled_back() {
    let (_d, shared, _committer, other) = batched_pair();
    shared.0.queue().paused = true;
    let c = record(5, "alice");
    shared.insert_challenge(&c).unwrap();
    let err = shared.with(|s| {
        s.conn.execute_batch("ROLLBACK").unwrap();
        Err::<(), _>(s.err(rusqlite::Error::InvalidQuery))
    });
    assert!(err.is_err());
    let unpause = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            shared.0.queue().paused = false;
            shared.0.wake.notify_one();
        })
    };
    let e = shared.durable().expect_err("the challenge was rolled back");
    unpause.join().unwrap();
    assert!(
        matches!(e, StoreError::Unavailable { .. }),
        "a rolled-back batch is the store being unavailable: {e}"
    );
    assert!(other.challenge(&c.id).unwrap().is_none());
    // The next request starts afresh.
    let c2 = record(6, "bob");
    shared.insert_challenge(&c2).unwrap();
    shared.durable().unwrap();
    assert!(other.challenge(&c2.id).unwrap().is_some());
}

#[test]
fn many_threads_share_batches_and_every_answer_follows_its_commit() {
    let (_d, shared, committer, _other) = batched_pair();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        for t in 0..8u8 {
            let shared = shared.clone();
            let tx = tx.clone();
            scope.spawn(move || {
                for i in 0..100u8 {
                    let mut c = record(i, &format!("user{t}"));
                    c.id = ChallengeId([t, i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
                    shared.insert_challenge(&c).unwrap();
                    let tx = tx.clone();
                    shared.defer(Box::new(move |o| {
                        let _ = tx.send((c.id, o.is_ok()));
                    }));
                }
            });
        }
    });
    drop(tx);
    // Dropping the committer commits the rest and runs what is left.
    drop(committer);
    let answers: Vec<_> = rx.iter().collect();
    assert_eq!(answers.len(), 800);
    assert!(answers.iter().all(|(_, ok)| *ok));
    let epochs = shared.0.lock().epoch;
    assert!(epochs > 1, "at least one commit");
    for (id, _) in answers {
        assert!(shared.challenge(&id).unwrap().is_some());
    }
}

#[test]
fn an_unbatched_shared_store_runs_deferred_work_at_once() {
    let shared = SharedStore::new(SqliteStore::open_in_memory().unwrap());
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = ran.clone();
    shared.defer(Box::new(move |o| {
        assert!(o.is_ok());
        r.store(true, std::sync::atomic::Ordering::SeqCst);
    }));
    assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
}

#[test]
fn the_end_of_batch_hook_follows_the_work_of_its_batch() {
    use std::sync::{Arc, Mutex};
    let (_d, shared, _committer, _other) = batched_pair();
    // What ran, in order, on which thread.
    let log: Arc<Mutex<Vec<(String, std::thread::ThreadId)>>> = Arc::default();
    let l = log.clone();
    shared.after_each_batch(Box::new(move || {
        l.lock()
            .unwrap()
            .push(("hook".into(), std::thread::current().id()));
    }));
    // Set once: a second hook is ignored.
    let second = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = second.clone();
    shared.after_each_batch(Box::new(move || {
        s2.store(true, std::sync::atomic::Ordering::SeqCst);
    }));
    for n in 0..3 {
        shared.insert_challenge(&record(n, "alice")).unwrap();
        let l = log.clone();
        shared.defer(Box::new(move |o| {
            assert!(o.is_ok());
            l.lock()
                .unwrap()
                .push((format!("work {n}"), std::thread::current().id()));
        }));
    }
    // flush returns only once the hook has covered all of it.
    shared.flush();
    let log = log.lock().unwrap().clone();
    let works: Vec<usize> = (0..log.len()).filter(|&i| log[i].0 != "hook").collect();
    assert_eq!(works.len(), 3, "{log:?}");
    let last_work = *works.last().unwrap();
    let hook_after = log[last_work..]
        .iter()
        .find(|(what, _)| what == "hook")
        .expect("a hook run after the last work");
    // On the thread that ran the work, not the caller's.
    assert_eq!(hook_after.1, log[last_work].1, "{log:?}");
    assert_ne!(hook_after.1, std::thread::current().id());
    assert!(!second.load(std::sync::atomic::Ordering::SeqCst));

    // Unbatched: work, then the hook, at once on the caller's thread.
    let plain = SharedStore::new(SqliteStore::open_in_memory().unwrap());
    let hooked = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let h = hooked.clone();
    plain.after_each_batch(Box::new(move || {
        h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));
    plain.defer(Box::new(|_| {}));
    assert_eq!(hooked.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn handing_in_an_answer_does_not_wait_for_the_store() {
    let (_d, shared, _committer, _other) = batched_pair();
    shared.insert_challenge(&record(1, "alice")).unwrap();
    // Another thread holds the store's lock, as a long step would.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let holder = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            let _st = shared.0.lock();
            held_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(500));
        })
    };
    held_rx.recv().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let t0 = std::time::Instant::now();
    shared.defer(Box::new(move |o| {
        let _ = tx.send(o.is_ok());
    }));
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(250), "defer waited {took:?}");
    // It runs once the store is free and the step committed.
    assert!(wait(&rx));
    assert!(t0.elapsed() >= Duration::from_millis(400));
    holder.join().unwrap();
}

/// Runs `f` as one request's steps and waits for its commit.
fn request<T>(shared: &SharedStore, f: impl FnOnce(&SharedStore) -> T) -> T {
    let out = f(shared);
    shared.flush();
    out
}

#[test]
fn a_batched_store_sees_other_processes_writes_at_its_next_transaction() {
    let (_d, shared, _committer, other) = batched_pair();
    let lock = Duration::from_secs(600);
    // A batched store keeps one connection and transactions open across
    // requests; what it reads must still follow other processes'
    // commits (a guard for any caching added to it).
    request(&shared, |s| {
        assert_eq!(s.phone("alice").unwrap(), None);
        assert_eq!(s.locked_until("alice", 1_000).unwrap(), None);
        assert_eq!(s.opt_out("alice").unwrap(), None);
        assert_eq!(s.phone("alice").unwrap(), None, "twice");
    });
    // The admin tool and an sshd login, in other processes.
    let rec = PhoneRecord {
        e164: "+12025550143".into(),
        set_at: 1_000,
        set_by: "admin:root".into(),
    };
    other.set_phone("alice", &rec).unwrap();
    other.record_failure("alice", 1_000, 1, lock).unwrap();
    other
        .set_opt_out("alice", Some(("admin:root", 1_000)))
        .unwrap();
    request(&shared, |s| {
        assert_eq!(s.phone("alice").unwrap(), Some(rec.clone()));
        assert_eq!(s.locked_until("alice", 2_000).unwrap(), Some(601_000));
        assert!(s.opt_out("alice").unwrap().is_some());
        // Past the lockout.
        assert_eq!(s.locked_until("alice", 601_000).unwrap(), None);
    });
    // Our own writes are seen at once, in the same transaction.
    request(&shared, |s| {
        s.unlock("alice").unwrap();
        assert_eq!(s.locked_until("alice", 2_000).unwrap(), None);
        s.clear_phone("alice").unwrap();
        assert_eq!(s.phone("alice").unwrap(), None);
        s.set_opt_out("alice", None).unwrap();
        assert_eq!(s.opt_out("alice").unwrap(), None);
        s.record_failure("alice", 3_000, 1, lock).unwrap();
        assert_eq!(s.locked_until("alice", 3_000).unwrap(), Some(603_000));
        let c = record(9, "alice");
        s.insert_challenge(&c).unwrap();
        assert!(s.consume(&c.id, &c.code_mac, "alice").unwrap());
        assert_eq!(s.failures("alice", 3_000).unwrap().count, 0);
        assert_eq!(
            s.locked_until("alice", 3_000).unwrap(),
            None,
            "a right code clears them"
        );
    });
    // And other processes see them once committed.
    assert_eq!(other.phone("alice").unwrap(), None);
    assert_eq!(other.locked_until("alice", 3_000).unwrap(), None);
}

#[test]
fn a_shared_store_remembers_validated_numbers_without_the_store() {
    let (_d, shared, _committer, other) = batched_pair();
    request(&shared, |s| {
        s.remember_validated_number("k", "+12025550143", Some("US"))
            .unwrap();
    });
    // Gone from the table (a layout rebuild): still known.
    other.conn.execute("DELETE FROM number_cache", []).unwrap();
    let want = Some(("+12025550143".to_string(), Some("US".to_string())));
    assert_eq!(shared.validated_number("k").unwrap(), want);
    // A row another process cached is read once, then remembered.
    other
        .remember_validated_number("k2", "+12025550144", None)
        .unwrap();
    assert!(shared.validated_number("k2").unwrap().is_some());
    shared.flush();
    other.conn.execute("DELETE FROM number_cache", []).unwrap();
    assert!(shared.validated_number("k2").unwrap().is_some());
    shared.flush();
}

/// Keeps `shared` at full load from 8 threads (a login's steps, then
/// its answer waits for the commit: the batch's transaction stays open
/// while any of them is under way) while `meanwhile` runs.
fn under_load<T>(shared: &SharedStore, meanwhile: impl FnOnce() -> T) -> T {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for t in 0..8u8 {
            let shared = shared.clone();
            let stop = &stop;
            scope.spawn(move || {
                let mut i: u32 = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let mut c = record(t, &format!("load{t}"));
                    c.id.0[..4].copy_from_slice(&i.to_be_bytes());
                    shared.insert_challenge(&c).unwrap();
                    for _ in 0..4 {
                        shared.locked_until(&c.user, 1_000).unwrap();
                    }
                    shared.delete_challenge(&c.id).unwrap();
                    shared.defer(Box::new(|_| {}));
                }
            });
        }
        let out = meanwhile();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        out
    })
}

#[test]
fn other_processes_get_the_write_lock_while_a_batched_store_is_busy() {
    let (d, shared, committer, _other) = batched_pair();
    // Another process with a short busy timeout: an sshd login or the
    // admin tool while smsotp-radiusd is at full load.
    let admin = SqliteStore::open(&d.path().join("state.db"), Duration::from_millis(500)).unwrap();
    let failures = under_load(&shared, || {
        let mut failures = Vec::new();
        for i in 0..40 {
            std::thread::sleep(Duration::from_millis(5));
            if let Err(e) =
                admin.record_failure(&format!("user{i}"), 1_000, 5, Duration::from_secs(60))
            {
                failures.push(e.to_string());
            }
        }
        failures
    });
    assert!(
        failures.is_empty(),
        "writes that waited out the busy timeout: {failures:?}"
    );
    drop(committer);
    assert_eq!(shared.failures("user39", 1_000).unwrap().count, 1);
}

#[test]
fn a_busy_batched_store_takes_no_turns_when_nobody_waits() {
    // Each turn holds up every request in flight for 2.5 ms: only for
    // a writer that says it waits (or after HOLD_UNASKED).
    let (_d, shared, committer, _other) = batched_pair();
    under_load(&shared, || std::thread::sleep(Duration::from_millis(600)));
    assert_eq!(shared.0.lock().turns, 0, "turns taken with nobody waiting");
    drop(committer);
}

#[test]
fn a_busy_batched_store_leaves_a_turn_when_asked() {
    use std::os::fd::AsRawFd;
    let (d, shared, committer, _other) = batched_pair();
    let login = WaitSignal::open(&d.path().join("state.db")).unwrap();
    let busy_for = |st: &mut SharedState, held: Duration| {
        let now = std::time::Instant::now();
        st.last_commit = now;
        st.held_since = now.checked_sub(held).unwrap();
    };
    let mut st = shared.0.lock();
    busy_for(&mut st, HOLD_MAX * 2);
    st.give_others_a_turn();
    assert_eq!(st.turns, 0, "a turn with nobody waiting");
    assert!(WaitSignal::set(login.0.as_raw_fd(), true));
    let t = std::time::Instant::now();
    st.give_others_a_turn();
    assert_eq!(st.turns, 1, "no turn for a waiting login");
    assert!(t.elapsed() >= TURN);
    WaitSignal::set(login.0.as_raw_fd(), false);
    busy_for(&mut st, HOLD_UNASKED / 2);
    st.give_others_a_turn();
    assert_eq!(st.turns, 1, "an unasked turn before HOLD_UNASKED");
    busy_for(&mut st, HOLD_UNASKED);
    st.give_others_a_turn();
    assert_eq!(st.turns, 2, "no turn after HOLD_UNASKED");
    // A short busy timeout brings unasked turns forward: a writer
    // that cannot say it waits must not wait it out.
    st.store.busy_timeout = Duration::from_millis(400);
    busy_for(&mut st, Duration::from_millis(200));
    st.give_others_a_turn();
    assert_eq!(st.turns, 3, "no turn after half a 400 ms busy timeout");
    drop(st);
    drop(committer);
}

#[test]
fn a_write_waiting_for_the_lock_says_so_until_it_has_it() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("state.db");
    let server = SqliteStore::open(&db, Duration::from_secs(5)).unwrap();
    let signal = server.wait_signal.as_ref().unwrap();
    // The server holds the write lock, as under load.
    server.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    std::thread::scope(|scope| {
        let login = scope.spawn(|| {
            let login = SqliteStore::open(&db, Duration::from_secs(5)).unwrap();
            login.record_failure("alice", 1_000, 5, Duration::from_secs(60))
        });
        let t = std::time::Instant::now();
        while !signal.someone_waits() {
            assert!(
                t.elapsed() < Duration::from_secs(3),
                "the waiting write never said so"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        server.conn.execute_batch("COMMIT").unwrap();
        login.join().unwrap().unwrap();
    });
    assert!(!signal.someone_waits(), "still says it waits once written");
    assert_eq!(server.failures("alice", 1_000).unwrap().count, 1);
}

#[test]
fn the_wait_signal_is_never_opened_through_a_link() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("elsewhere");
    std::fs::write(&target, "keep").unwrap();
    std::os::unix::fs::symlink(&target, d.path().join("state.db-waiting")).unwrap();
    assert!(WaitSignal::open(&d.path().join("state.db")).is_none());
}

#[test]
fn the_wait_signal_says_whether_someone_waits() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("state.db");
    let server = WaitSignal::open(&db).unwrap();
    let login = WaitSignal::open(&db).unwrap();
    let mode = std::fs::metadata(d.path().join("state.db-waiting"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!server.someone_waits());
    assert!(WaitSignal::set(login.0.as_raw_fd(), true));
    assert!(server.someone_waits());
    WaitSignal::set(login.0.as_raw_fd(), false);
    assert!(!server.someone_waits());
    // Closing the handle ends the wait too (a process that dies while
    // it waits).
    assert!(WaitSignal::set(login.0.as_raw_fd(), true));
    drop(login);
    assert!(!server.someone_waits());
}

#[test]
fn without_its_committer_a_batched_store_commits_as_it_goes() {
    // After shutdown, or should the commit thread ever die: nothing
    // deferred may wait forever, and nothing written may stay
    // uncommitted.
    let (_d, shared, committer, other) = batched_pair();
    drop(committer);
    let c = record(5, "alice");
    shared.insert_challenge(&c).unwrap();
    let (outcome, seen, _) = wait(&probe(&shared, other, c.id));
    assert_eq!(outcome, Ok(()));
    assert!(seen);
}
