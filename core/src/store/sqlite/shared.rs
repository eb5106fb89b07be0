//! Group commit for smsotp-radiusd: one SQLite connection shared by the
//! server's threads ([`SharedStore`]), its committer thread ([`Committer`]),
//! turn-taking with other processes through the waiting signal, and WAL
//! checkpoints on a thread of their own.

use std::path::Path;
use std::time::Duration;

use super::SqliteStore;
use crate::clock::Millis;
use crate::config::Rate;
use crate::otp::ChallengeId;
use crate::phone::NumberCache;
use crate::store::shared::{AfterBatch, Deferred, SharedBackend};
use crate::store::{
    AnswerState, BackupHash, ChallengeRecord, FailureState, LoginState, PhoneRecord, SendPermit,
    SmsWindow, Step, Store, StoreError,
};

/// One store shared by the threads of a long-running server: a single
/// connection behind a mutex. SQLite would serialise the writers anyway;
/// one connection spares them its busy-wait sleeps.
///
/// [`SharedStore::batched`] adds group commit: the steps of many requests
/// share one transaction, committed by a thread of its own as soon as it
/// can, and each request's answer waits for that commit
/// ([`SharedStore::defer`]). Nothing is answered before what it relies on
/// is on disk, and a busy server pays for one commit per batch rather than
/// one per step.
#[derive(Clone)]
pub struct SharedStore(std::sync::Arc<SharedInner>);

struct SharedInner {
    state: std::sync::Mutex<SharedState>,
    /// Deferred work and what the committer waits on, under a lock of its
    /// own: a request hands in its answer without waiting for the store's
    /// lock (a commit, another request's step). Taken after `state` when
    /// both are held, never before.
    queue: std::sync::Mutex<Queue>,
    /// Wakes the committer (with `queue`): a transaction is open, or work
    /// is deferred.
    wake: std::sync::Condvar,
    /// Threads amid a request: they used the store and have not deferred
    /// their answer yet. The committer waits a little for them, so one
    /// commit serves them too.
    in_request: std::sync::atomic::AtomicUsize,
    /// The committer has ended: whoever defers commits, and steps run
    /// outside any batch. Set with both locks held.
    closed: std::sync::atomic::AtomicBool,
    batched: bool,
    /// Validated numbers, as in the `number_cache` table. Its rows never
    /// change meaning (the key holds the build's version), so they can be
    /// remembered without asking the store, or taking its lock, again.
    numbers: std::sync::RwLock<Numbers>,
    /// Runs after each batch of deferred work (see
    /// [`SharedStore::after_each_batch`]).
    after_batch: std::sync::OnceLock<AfterBatch>,
}

/// Number-cache key -> (E.164 number, region).
type Numbers = std::collections::HashMap<Box<str>, (Box<str>, Option<Box<str>>)>;

/// Validated numbers a [`SharedStore`] remembers at most; beyond, it
/// starts over.
const NUMBERS_REMEMBERED: usize = 100_000;

struct SharedState {
    store: SqliteStore,
    /// The transaction steps run in now; counts up at every commit or
    /// rollback.
    epoch: u64,
    /// The newest epoch whose writes were rolled back (0: none), and why.
    last_failed: u64,
    failure: String,
    /// When the last commit ended, and since when transactions have
    /// followed each other with no turn for other processes.
    last_commit: std::time::Instant,
    held_since: std::time::Instant,
    /// Turns left to other processes so far.
    turns: u64,
}

/// What the committer waits on (see [`SharedInner::queue`]).
struct Queue {
    deferred: Vec<(u64, Deferred)>,
    /// A transaction is open: commit it before long even if no answer
    /// waits for it.
    open: bool,
    stop: bool,
    /// The committer sleeps on `wake` (only then is it worth a wake-up).
    idle: bool,
    /// The committer waits for `in_request` to reach zero.
    gathering: bool,
    /// Tests hold the committer off to interleave requests at will.
    #[cfg(test)]
    paused: bool,
}

thread_local! {
    /// The first epoch this thread's steps ran in since its last
    /// [`SharedStore::defer`], with the store it was in.
    static TOUCHED: std::cell::Cell<Option<(usize, u64)>> = const { std::cell::Cell::new(None) };
}

/// Owns the committer thread of a [`SharedStore::batched`] store. Dropping
/// it commits what is pending, runs what was deferred, and ends the thread.
pub struct Committer {
    inner: std::sync::Arc<SharedInner>,
    thread: Option<std::thread::JoinHandle<()>>,
    checkpointer: Option<std::thread::JoinHandle<()>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SharedStore {
    /// Each step commits on its own; [`SharedStore::defer`] runs at once.
    pub fn new(store: SqliteStore) -> Self {
        Self::make(store, false)
    }

    /// Group commit (see the type). Keep the [`Committer`] for as long as
    /// the store is used.
    pub fn batched(store: SqliteStore) -> std::io::Result<(Self, Committer)> {
        // Checkpoints (copying the WAL back into the database, with an
        // fsync) run on a connection and thread of their own, not inside a
        // commit that every waiting answer depends on.
        let file = store
            .conn
            .path()
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from);
        if file.is_some() {
            store
                .conn
                .pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(std::io::Error::other)?;
        }
        let busy_timeout = store.busy_timeout;
        let shared = Self::make(store, true);
        let inner = shared.0.clone();
        let thread = std::thread::Builder::new()
            .name("store-commit".into())
            .spawn(move || commit_loop(&inner))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let checkpointer = match file {
            Some(file) => {
                let stop = stop.clone();
                let inner = shared.0.clone();
                Some(
                    std::thread::Builder::new()
                        .name("store-checkpoint".into())
                        .spawn(move || checkpoint_loop(&file, busy_timeout, &inner, &stop))?,
                )
            }
            None => None,
        };
        let committer = Committer {
            inner: shared.0.clone(),
            thread: Some(thread),
            checkpointer,
            stop,
        };
        Ok((shared, committer))
    }

    fn make(store: SqliteStore, batched: bool) -> Self {
        SharedStore(std::sync::Arc::new(SharedInner {
            state: std::sync::Mutex::new(SharedState {
                store,
                epoch: 1,
                last_failed: 0,
                failure: String::new(),
                last_commit: std::time::Instant::now(),
                held_since: std::time::Instant::now(),
                turns: 0,
            }),
            queue: std::sync::Mutex::new(Queue {
                deferred: Vec::new(),
                open: false,
                stop: false,
                idle: false,
                gathering: false,
                #[cfg(test)]
                paused: false,
            }),
            wake: std::sync::Condvar::new(),
            in_request: std::sync::atomic::AtomicUsize::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
            batched,
            numbers: std::sync::RwLock::new(std::collections::HashMap::new()),
            after_batch: std::sync::OnceLock::new(),
        }))
    }

    fn id(&self) -> usize {
        std::sync::Arc::as_ptr(&self.0) as usize
    }

    /// Runs `f` once everything this thread wrote since its last `defer`
    /// is committed, on the committer thread; with an error if it was
    /// rolled back instead, in which case `f` must answer as for a failed
    /// store.
    pub fn defer(&self, f: Deferred) {
        use std::sync::atomic::Ordering::Relaxed;
        let touched = TOUCHED
            .with(|t| t.take())
            .filter(|(id, _)| *id == self.id());
        if !self.0.batched {
            f(Ok(()));
            return self.0.batch_done();
        }
        let mut q = self.0.queue();
        let in_request = if touched.is_some() {
            // Under `queue`, so the committer's wait for zero sees it.
            let was = self
                .0
                .in_request
                .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)))
                .unwrap_or(0);
            was.saturating_sub(1)
        } else {
            self.0.in_request.load(Relaxed)
        };
        // Nothing touched: nothing to lose.
        let first = touched.map_or(u64::MAX, |(_, e)| e);
        q.deferred.push((first, f));
        if self.0.closed.load(Relaxed) {
            // No committer any more (shutting down): commit here.
            drop(q);
            let done = self.0.lock().commit(&self.0);
            done.run(&self.0);
            return;
        }
        let wake = q.idle || q.gathering && in_request == 0;
        drop(q);
        if wake {
            self.0.wake.notify_one();
        }
    }

    /// Has `f` run after each batch of deferred work, on the thread that
    /// ran it: deferred work may leave something for it to finish for the
    /// whole batch at once (smsotp-radiusd queues its replies and sends
    /// them together). Set once; later calls are ignored.
    pub fn after_each_batch(&self, f: AfterBatch) {
        let _ = self.0.after_batch.set(f);
    }

    fn remember_number(&self, key: &str, e164: &str, region: Option<&str>) {
        let mut numbers = self.0.numbers.write().unwrap_or_else(|p| p.into_inner());
        if numbers.len() >= NUMBERS_REMEMBERED {
            numbers.clear();
        }
        numbers.insert(key.into(), (e164.into(), region.map(Into::into)));
    }

    /// Returns once everything deferred so far has run (its writes
    /// committed or rolled back).
    pub fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        let inner = self.0.clone();
        self.defer(Box::new(move |_| {
            // What the work before this left for the end of its batch is
            // done now, or "flushed" would not cover it.
            inner.batch_done();
            let _ = tx.send(());
        }));
        // If the committer is gone, the closure was dropped unrun: nothing
        // is left to wait for.
        let _ = rx.recv();
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&SqliteStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut st = self.0.lock();
        if !self.0.batched || self.0.closed.load(Relaxed) {
            return f(&st.store);
        }
        if st.store.conn.is_autocommit() {
            st.give_others_a_turn();
            st.store.set_busy_timeout();
            st.store
                .conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| st.store.err(e))?;
            // An idle committer sleeps until work is deferred; from now on
            // it must commit before long whatever happens.
            let mut q = self.0.queue();
            q.open = true;
            let idle = q.idle;
            drop(q);
            if idle {
                self.0.wake.notify_one();
            }
        }
        let epoch = st.epoch;
        let id = self.id();
        let first_step = TOUCHED.with(|t| {
            let first = t.get().filter(|(i, _)| *i == id).is_none();
            if first {
                t.set(Some((id, epoch)));
            }
            first
        });
        if first_step {
            self.0.in_request.fetch_add(1, Relaxed);
        }
        let out = f(&st.store);
        if let Err(e) = &out {
            if st.store.conn.is_autocommit() {
                // SQLite rolled the whole transaction back (I/O error, disk
                // full, …): everything since the last commit is gone.
                st.last_failed = st.epoch;
                st.failure = e.to_string();
                st.epoch += 1;
            }
        }
        out
    }
}

impl Queue {
    #[cfg(test)]
    fn paused(&self) -> bool {
        self.paused
    }
    #[cfg(not(test))]
    fn paused(&self) -> bool {
        false
    }
}

impl SharedInner {
    fn numbers(&self) -> std::sync::RwLockReadGuard<'_, Numbers> {
        self.numbers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SharedState> {
        lock_spinning(&self.state)
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The end of a batch of deferred work: the hook, if any.
    fn batch_done(&self) {
        if let Some(f) = self.after_batch.get() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        }
    }
}

/// Locks `m`, trying for a few dozen microseconds before sleeping.
///
/// The store's lock is held for a few microseconds per step, and taken
/// several times per request by every worker. A thread that sleeps on it
/// at once must be woken when it is free, which takes longer than the
/// step it waited for: the lock then sits free while the CPU idles, and
/// under load requests queue behind wake-ups (a lock convoy). Trying
/// again for a while avoids most of those sleeps. (Yielding the core now
/// and then while trying cost more in task switches than it saved.)
fn lock_spinning<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
fn commit_loop(inner: &SharedInner) {
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
/// [`WaitSignal`]); and at most before it does so unasked, for a writer
/// whose signal this process cannot see (one that could not open the
/// signal file). Unasked turns come after half the store's busy timeout
/// if that is shorter (the processes sharing the store share its
/// config), so such a writer still gets its turn in time. Each turn holds
/// up every request in flight for [`TURN`]: at 500 ms, they showed in the
/// p99 latency under load.
const HOLD_MAX: Duration = Duration::from_millis(10);
const HOLD_UNASKED: Duration = Duration::from_millis(2_000);
const TURN: Duration = Duration::from_micros(2_500);

/// How long a commit waits for requests under way to join it.
const GATHER: Duration = Duration::from_micros(500);

/// How long a transaction may stay open with no answer waiting for it.
const IDLE_COMMIT: Duration = Duration::from_millis(20);

/// Deferred work taken at a commit, with how its writes ended.
struct Committed {
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
    fn give_others_a_turn(&mut self) {
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
    fn commit(&mut self, inner: &SharedInner) -> Committed {
        if !self.store.conn.is_autocommit() {
            if let Err(e) = self.store.conn.execute_batch("COMMIT") {
                let _ = self.store.conn.execute_batch("ROLLBACK");
                self.last_failed = self.epoch;
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
    fn run(self, inner: &SharedInner) {
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
fn checkpoint_loop(
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

impl Store for SharedStore {
    fn locked_until(&self, user: &str, now: Millis) -> Result<Option<Millis>, StoreError> {
        self.with(|s| s.locked_until(user, now))
    }
    fn login_state(&self, user: &str, now: Millis) -> Result<LoginState, StoreError> {
        self.with(|s| s.login_state(user, now))
    }
    fn answer_state(
        &self,
        id: &ChallengeId,
        user: &str,
        now: Millis,
    ) -> Result<AnswerState, StoreError> {
        self.with(|s| s.answer_state(id, user, now))
    }
    fn record_failure(
        &self,
        user: &str,
        now: Millis,
        after: u32,
        lockout: Duration,
    ) -> Result<FailureState, StoreError> {
        self.with(|s| s.record_failure(user, now, after, lockout))
    }
    fn clear_failures(&self, user: &str) -> Result<(), StoreError> {
        self.with(|s| s.clear_failures(user))
    }
    fn unlock(&self, user: &str) -> Result<(), StoreError> {
        self.with(|s| s.unlock(user))
    }
    fn failures(&self, user: &str, now: Millis) -> Result<FailureState, StoreError> {
        self.with(|s| s.failures(user, now))
    }
    fn sms_window(&self, user: &str, now: Millis, per_user: Rate) -> Result<SmsWindow, StoreError> {
        self.with(|s| s.sms_window(user, now, per_user))
    }
    fn clear_sms_window(
        &self,
        user: &str,
        now: Millis,
        window: Duration,
    ) -> Result<u32, StoreError> {
        self.with(|s| s.clear_sms_window(user, now, window))
    }
    fn reserve_sms(
        &self,
        user: &str,
        now: Millis,
        per_user: Rate,
        global: Rate,
    ) -> Result<SendPermit, StoreError> {
        self.with(|s| s.reserve_sms(user, now, per_user, global))
    }
    fn insert_challenge(&self, c: &ChallengeRecord) -> Result<(), StoreError> {
        self.with(|s| s.insert_challenge(c))
    }
    fn start_challenge(
        &self,
        c: &ChallengeRecord,
        per_user: Rate,
        global: Rate,
    ) -> Result<SendPermit, StoreError> {
        self.with(|s| s.start_challenge(c, per_user, global))
    }
    fn challenge(&self, id: &ChallengeId) -> Result<Option<ChallengeRecord>, StoreError> {
        self.with(|s| s.challenge(id))
    }
    fn replace_code(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        sent_at: Millis,
        expires_at: Millis,
        attempts_left: u32,
        resends_used: u32,
    ) -> Result<bool, StoreError> {
        self.with(|s| {
            s.replace_code(
                id,
                code_mac,
                sent_at,
                expires_at,
                attempts_left,
                resends_used,
            )
        })
    }
    fn wrong_attempt(&self, id: &ChallengeId) -> Result<Option<u32>, StoreError> {
        self.with(|s| s.wrong_attempt(id))
    }
    fn consume(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        user: &str,
    ) -> Result<bool, StoreError> {
        self.with(|s| s.consume(id, code_mac, user))
    }
    fn consume_code(
        &self,
        id: &ChallengeId,
        user: &str,
        service: &str,
        code_mac: &[u8; 32],
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        self.with(|s| s.consume_code(id, user, service, code_mac, now))
    }
    fn delete_challenge(&self, id: &ChallengeId) -> Result<(), StoreError> {
        self.with(|s| s.delete_challenge(id))
    }
    fn withdraw(&self, id: &ChallengeId, code_mac: &[u8; 32]) -> Result<bool, StoreError> {
        self.with(|s| s.withdraw(id, code_mac))
    }
    fn phone(&self, user: &str) -> Result<Option<PhoneRecord>, StoreError> {
        self.with(|s| s.phone(user))
    }
    fn set_phone(&self, user: &str, rec: &PhoneRecord) -> Result<(), StoreError> {
        self.with(|s| s.set_phone(user, rec))
    }
    fn clear_phone(&self, user: &str) -> Result<bool, StoreError> {
        self.with(|s| s.clear_phone(user))
    }
    fn enroll_number(
        &self,
        id: &ChallengeId,
        e164: &str,
        code_mac: &[u8; 32],
        sent_at: Millis,
        expires_at: Millis,
        attempts_left: u32,
    ) -> Result<bool, StoreError> {
        self.with(|s| s.enroll_number(id, e164, code_mac, sent_at, expires_at, attempts_left))
    }
    fn complete_enrollment(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        user: &str,
        at: Millis,
        set_by: &str,
    ) -> Result<bool, StoreError> {
        self.with(|s| s.complete_enrollment(id, code_mac, user, at, set_by))
    }
    fn set_step(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        step: Step,
    ) -> Result<bool, StoreError> {
        self.with(|s| s.set_step(id, code_mac, step))
    }
    fn replace_backup_codes(
        &self,
        user: &str,
        codes: &[BackupHash],
        at: Millis,
    ) -> Result<(), StoreError> {
        self.with(|s| s.replace_backup_codes(user, codes, at))
    }
    fn backup_candidates(&self, user: &str, tag: &[u8; 8]) -> Result<Vec<String>, StoreError> {
        self.with(|s| s.backup_candidates(user, tag))
    }
    fn consume_backup_code(
        &self,
        user: &str,
        hash: &str,
        challenge: Option<&ChallengeId>,
    ) -> Result<Option<u32>, StoreError> {
        self.with(|s| s.consume_backup_code(user, hash, challenge))
    }
    fn backup_codes_left(&self, user: &str) -> Result<u32, StoreError> {
        self.with(|s| s.backup_codes_left(user))
    }
    fn revoke_backup_codes(&self, user: &str) -> Result<u32, StoreError> {
        self.with(|s| s.revoke_backup_codes(user))
    }
    fn set_opt_out(&self, user: &str, set: Option<(&str, Millis)>) -> Result<(), StoreError> {
        self.with(|s| s.set_opt_out(user, set))
    }
    fn opt_out(&self, user: &str) -> Result<Option<(String, Millis)>, StoreError> {
        self.with(|s| s.opt_out(user))
    }
    fn opted_out_users(&self) -> Result<Vec<String>, StoreError> {
        self.with(|s| s.opted_out_users())
    }
    fn number_cache(&self) -> &dyn NumberCache {
        self
    }
}

/// The host's cache of validated numbers: remembered in memory too, since
/// its entries never change meaning, so a number found once is found again
/// without the store's lock.
impl SharedStore {
    /// [`SqliteStore::validated_number`], from memory if it was read or
    /// remembered through this store before.
    pub fn validated_number(
        &self,
        key: &str,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        if let Some((e164, region)) = self.0.numbers().get(key) {
            return Ok(Some((
                e164.to_string(),
                region.as_deref().map(str::to_owned),
            )));
        }
        let found = self.with(|s| s.validated_number(key))?;
        if let Some((e164, region)) = &found {
            self.remember_number(key, e164, region.as_deref());
        }
        Ok(found)
    }

    /// [`SqliteStore::remember_validated_number`], and in memory.
    pub fn remember_validated_number(
        &self,
        key: &str,
        e164: &str,
        region: Option<&str>,
    ) -> Result<(), StoreError> {
        self.with(|s| s.remember_validated_number(key, e164, region))?;
        self.remember_number(key, e164, region);
        Ok(())
    }
}

/// Group commit as the backend-neutral [`SharedBackend`] smsotp-radiusd
/// uses: its handles are clones, which share the connection and the batch.
impl SharedBackend for SharedStore {
    fn handle(&self) -> Box<dyn Store> {
        Box::new(self.clone())
    }
    fn defer(&self, f: Deferred) {
        SharedStore::defer(self, f);
    }
    fn flush(&self) {
        SharedStore::flush(self);
    }
    fn after_each_batch(&self, f: AfterBatch) {
        SharedStore::after_each_batch(self, f);
    }
}

/// A failing cache is only slower, never wrong: errors are ignored.
impl NumberCache for SharedStore {
    fn get(&self, key: &str) -> Option<(String, Option<String>)> {
        self.validated_number(key).ok().flatten()
    }
    fn put(&self, key: &str, e164: &str, region: Option<&str>) {
        let _ = self.remember_validated_number(key, e164, region);
    }
}

#[cfg(test)]
#[path = "shared_tests.rs"]
mod tests;
