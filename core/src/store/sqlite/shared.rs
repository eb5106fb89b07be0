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
use crate::store::{
    BackupHash, ChallengeRecord, FailureState, PhoneRecord, SendPermit, SmsWindow, Step, Store,
    StoreError,
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

/// Called on the thread that ran a batch of deferred work, once all of it
/// has run.
pub type AfterBatch = Box<dyn Fn() + Send + Sync>;

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

/// Work to do once the writes before it are committed: called with
/// `Ok(())` if they are, or with why they were rolled back.
pub type Deferred = Box<dyn FnOnce(Result<(), &str>) + Send>;

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
    fn lockout_and_phone(
        &self,
        user: &str,
        now: Millis,
    ) -> Result<(Option<Millis>, Option<PhoneRecord>), StoreError> {
        self.with(|s| s.lockout_and_phone(user, now))
    }
    fn challenge_and_lockout(
        &self,
        id: &ChallengeId,
        user: &str,
        now: Millis,
    ) -> Result<(Option<ChallengeRecord>, Option<Millis>), StoreError> {
        self.with(|s| s.challenge_and_lockout(id, user, now))
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
    fn purge(&self, now: Millis, keep: Duration) -> Result<(), StoreError> {
        self.with(|s| s.purge(now, keep))
    }
    fn cached_number(&self, key: &str) -> Result<Option<(String, Option<String>)>, StoreError> {
        if let Some((e164, region)) = self.0.numbers().get(key) {
            return Ok(Some((
                e164.to_string(),
                region.as_deref().map(str::to_owned),
            )));
        }
        let found = self.with(|s| s.cached_number(key))?;
        if let Some((e164, region)) = &found {
            self.remember_number(key, e164, region.as_deref());
        }
        Ok(found)
    }
    fn cache_number(&self, key: &str, e164: &str, region: Option<&str>) -> Result<(), StoreError> {
        self.with(|s| s.cache_number(key, e164, region))?;
        self.remember_number(key, e164, region);
        Ok(())
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
}

#[cfg(test)]
mod tests {
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
            s.cache_number("k", "+12025550143", Some("US")).unwrap();
        });
        // Gone from the table (a layout rebuild): still known.
        other.conn.execute("DELETE FROM number_cache", []).unwrap();
        let want = Some(("+12025550143".to_string(), Some("US".to_string())));
        assert_eq!(shared.cached_number("k").unwrap(), want);
        // A row another process cached is read once, then remembered.
        other.cache_number("k2", "+12025550144", None).unwrap();
        assert!(shared.cached_number("k2").unwrap().is_some());
        shared.flush();
        other.conn.execute("DELETE FROM number_cache", []).unwrap();
        assert!(shared.cached_number("k2").unwrap().is_some());
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
        let admin =
            SqliteStore::open(&d.path().join("state.db"), Duration::from_millis(500)).unwrap();
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
}
