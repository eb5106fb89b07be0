//! The committer of a batched [`SharedStore`](super::SharedStore): when a batch is committed
//! (as soon as an answer waits for it, after a moment for requests under
//! way to join), how the write lock is left to other processes now and
//! then, how deferred work learns how its writes ended, and the WAL
//! checkpoints on a thread of their own. Also the store lock's
//! spin-then-sleep.

use std::path::Path;
use std::time::Duration;

use super::super::SqliteStore;
use super::{Committer, Deferred, SharedInner, SharedState};

/// Locks `m`, trying for a few dozen microseconds before sleeping.
///
/// The store's lock is held for a few microseconds per step, and taken
/// several times per request by every worker. A thread that sleeps on it
/// at once must be woken when it is free, which takes longer than the
/// step it waited for: the lock then sits free while the CPU idles, and
/// under load requests queue behind wake-ups (a lock convoy). Trying
/// again for a while avoids most of those sleeps. (Yielding the core now
/// and then while trying cost more in task switches than it saved.)
pub(super) fn lock_spinning<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    let mut started = None;
    for i in 0u32.. {
        match m.try_lock() {
            Ok(g) => return g,
            Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        if i % 16 == 15 {
            let t0 = *started.get_or_insert_with(std::time::Instant::now);
            if t0.elapsed() >= SPIN_FOR {
                break;
            }
        } else {
            std::hint::spin_loop();
        }
    }
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long [`lock_spinning`] tries before it sleeps: several times a
/// step's hold, well under a wake-up's cost.
const SPIN_FOR: Duration = Duration::from_micros(50);

/// The committer: commits as soon as a transaction is open or work is
/// deferred. While it commits and runs the deferred work, other threads'
/// steps gather in the next transaction: the busier the server, the
/// larger each batch.
pub(super) fn commit_loop(inner: &SharedInner) {
    // Should a commit ever panic, the store must not fall silent: whoever
    // defers commits from then on (as after shutdown), and the thread ends.
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| commit_rounds(inner)));
    if ran.is_err() {
        let _st = inner.lock();
        let _q = inner.queue();
        inner
            .closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn commit_rounds(inner: &SharedInner) {
    use std::sync::atomic::Ordering::Relaxed;
    loop {
        let mut q = inner.queue();
        // Commit when an answer waits for it. A transaction no answer
        // waits for yet gets a moment, then is committed anyway, so the
        // write lock is never kept from other processes for long.
        while !q.stop && (q.deferred.is_empty() || q.paused()) {
            q.idle = true;
            if !q.open {
                q = inner.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            } else {
                let (guard, timeout) = inner
                    .wake
                    .wait_timeout(q, IDLE_COMMIT)
                    .unwrap_or_else(|p| p.into_inner());
                q = guard;
                if timeout.timed_out() && !q.paused() {
                    q.idle = false;
                    break;
                }
            }
            q.idle = false;
        }
        // Gather: requests under way will want this commit too.
        let since = std::time::Instant::now();
        while !q.stop && inner.in_request.load(Relaxed) > 0 {
            let left = GATHER.saturating_sub(since.elapsed());
            if left.is_zero() {
                break;
            }
            q.gathering = true;
            q = inner
                .wake
                .wait_timeout(q, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            q.gathering = false;
        }
        let stopping = q.stop;
        drop(q);
        let mut st = inner.lock();
        if stopping && st.store.conn.is_autocommit() {
            let q = inner.queue();
            if q.deferred.is_empty() {
                // Whoever defers from now on commits.
                inner.closed.store(true, Relaxed);
                return;
            }
        }
        let done = st.commit(inner);
        drop(st);
        done.run(inner);
    }
}

/// Back-to-back transactions of a batched store before it leaves the
/// write lock to other processes for [`TURN`], if one says it waits (see
/// [`WaitSignal`](super::super::WaitSignal)); and at most before it does so unasked, for a writer
/// whose signal this process cannot see (one that could not open the
/// signal file). Unasked turns come after half the store's busy timeout
/// if that is shorter (the processes sharing the store share its
/// config), so such a writer still gets its turn in time. Each turn holds
/// up every request in flight for [`TURN`]: at 500 ms, they showed in the
/// p99 latency under load.
pub(super) const HOLD_MAX: Duration = Duration::from_millis(10);
pub(super) const HOLD_UNASKED: Duration = Duration::from_millis(2_000);
pub(super) const TURN: Duration = Duration::from_micros(2_500);

/// How long a commit waits for requests under way to join it.
const GATHER: Duration = Duration::from_micros(500);

/// How long a transaction may stay open with no answer waiting for it.
const IDLE_COMMIT: Duration = Duration::from_millis(20);

/// Deferred work taken at a commit, with how its writes ended.
pub(super) struct Committed {
    deferred: Vec<(u64, Deferred)>,
    last_failed: u64,
    failure: String,
}

impl SharedState {
    /// Called before a new transaction begins. Under steady load the
    /// batches follow each other with no moment
    /// between them in which another process (an sshd login, the admin
    /// tool) could take the write lock, and it would wait out its busy
    /// timeout: after [`HOLD_MAX`] of back-to-back transactions, leave the
    /// lock free for [`TURN`] (those processes retry every millisecond) if
    /// one of them waits, and after [`SharedState::unasked_after`] in any
    /// case.
    pub(super) fn give_others_a_turn(&mut self) {
        let now = std::time::Instant::now();
        let free_for = now.saturating_duration_since(self.last_commit);
        if free_for >= TURN {
            self.held_since = now;
        } else {
            let held = now.saturating_duration_since(self.held_since);
            let waits = || match &self.store.wait_signal {
                Some(signal) => signal.someone_waits(),
                None => true,
            };
            if held >= self.unasked_after() || held >= HOLD_MAX && waits() {
                std::thread::sleep(TURN.saturating_sub(free_for));
                self.held_since = std::time::Instant::now();
                self.turns += 1;
            }
        }
    }

    /// How long transactions may follow each other before a turn is left
    /// to other processes even if none says it waits.
    fn unasked_after(&self) -> Duration {
        (self.store.busy_timeout / 2).min(HOLD_UNASKED)
    }

    /// Commits the open transaction (if any) and takes the work deferred
    /// so far: all of it relies on steps that ran before, under this lock,
    /// so in this transaction or an earlier one.
    pub(super) fn commit(&mut self, inner: &SharedInner) -> Committed {
        if !self.store.conn.is_autocommit() {
            if let Err(e) = self.store.conn.execute_batch("COMMIT") {
                let _ = self.store.conn.execute_batch("ROLLBACK");
                self.last_failed = self.epoch;
                // Through the store's error classes, so a full disk or a
                // damaged file says what to do, as it does elsewhere.
                let e = super::super::sqlite_error(String::new(), e);
                let e =
                    std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
                self.failure = format!("state store {}: commit failed: {e}", self.store.path);
            }
            self.epoch += 1;
            self.last_commit = std::time::Instant::now();
        }
        let mut q = inner.queue();
        q.open = false;
        let deferred = std::mem::take(&mut q.deferred);
        drop(q);
        Committed {
            deferred,
            last_failed: self.last_failed,
            failure: if self.last_failed > 0 {
                self.failure.clone()
            } else {
                String::new()
            },
        }
    }
}

impl Committed {
    /// Runs the deferred work, outside the store's lock, then `inner`'s
    /// end-of-batch hook.
    pub(super) fn run(self, inner: &SharedInner) {
        if self.deferred.is_empty() {
            return;
        }
        for (first, f) in self.deferred {
            let outcome = if first > self.last_failed {
                Ok(())
            } else {
                Err(self.failure.as_str())
            };
            // A panic in one answer must not stop the others.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(outcome)));
        }
        inner.batch_done();
    }
}

/// How often the checkpoint thread moves the WAL into the database. Its
/// second step holds up every request in flight for a few milliseconds
/// (it commits, copies and syncs): every 500 ms, that showed in the p99
/// latency under load. Every 2 s, the WAL of a server at full load grows
/// larger: scripts/bench-radius.sh prints it (52,680 KB after its rounds,
/// against 13,956 KB with a checkpoint every 500 ms).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(2_000);

/// Checkpoints `file`'s WAL every [`CHECKPOINT_EVERY`] until `stop`.
///
/// A PASSIVE checkpoint first, which copies most of the log without
/// holding anyone up; then, with the store's lock (the batch so far
/// committed), a second one for the few frames written meanwhile. A log
/// copied in full is started over by the next transaction, so the WAL
/// file stays bounded however busy the server is.
pub(super) fn checkpoint_loop(
    file: &Path,
    busy_timeout: Duration,
    inner: &SharedInner,
    stop: &std::sync::atomic::AtomicBool,
) {
    let Ok(store) = SqliteStore::open(file, busy_timeout) else {
        return;
    };
    let checkpoint = || {
        store
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
    };
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::park_timeout(CHECKPOINT_EVERY);
        let _ = checkpoint();
        let mut st = inner.lock();
        if inner.closed.load(std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        let done = st.commit(inner);
        let _ = checkpoint();
        drop(st);
        done.run(inner);
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.checkpointer.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        self.inner.queue().stop = true;
        self.inner.wake.notify_all();
        if let Some(t) = self.thread.take() {
            // The last reference may go away inside deferred work, on the
            // committer thread itself: it ends on its own.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}
