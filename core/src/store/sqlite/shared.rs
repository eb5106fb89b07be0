//! Group commit for smsotp-radiusd: one SQLite connection shared by the
//! server's threads ([`SharedStore`]), how a step joins the open batch and
//! how an answer waits for its commit (`defer`), and the store's
//! [`SharedBackend`] and number-cache faces. The committer thread itself
//! ([`Committer`]: when to commit, turn-taking with other processes
//! through the waiting signal, WAL checkpoints on a thread of their own)
//! is in `commit.rs`.

use std::time::Duration;

use super::SqliteStore;
use crate::clock::Millis;
use crate::config::Rate;
use crate::otp::ChallengeId;
use crate::phone::{MemoryNumbers, NumberCache};
use crate::store::counters::{CounterKey, Counts, Day};
use crate::store::migrate::{Outcome, Record, Snapshot};
use crate::store::shared::{AfterBatch, Deferred, SharedBackend};
use crate::store::{
    AnswerState, BackupHash, BreakerState, ChallengeRecord, FailureState, KeyedWindow, LoginState,
    PhoneRecord, SendDecision, SendLimits, SmsWindow, Step, Store, StoreError,
};

#[path = "commit.rs"]
mod commit;

use commit::{checkpoint_loop, commit_loop, lock_spinning};
#[cfg(test)]
use commit::{HOLD_MAX, HOLD_UNASKED, TURN};

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
    numbers: MemoryNumbers,
    /// Runs after each batch of deferred work (see
    /// [`SharedStore::after_each_batch`]).
    after_batch: std::sync::OnceLock<AfterBatch>,
}

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
            numbers: MemoryNumbers::default(),
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
        self.0.numbers.put(key, e164, region);
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

    /// Waits until the writes this thread made since its last `defer` are
    /// committed (see [`Store::durable`]); an error naming why if their
    /// batch was rolled back.
    fn wait_durable(&self) -> Result<(), StoreError> {
        let touched = TOUCHED
            .with(|t| t.get())
            .is_some_and(|(id, _)| id == self.id());
        if !touched || !self.0.batched {
            return Ok(());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        self.defer(Box::new(move |done| {
            let _ = tx.send(done.map_err(str::to_owned));
        }));
        let failed = |why: String| StoreError::Unavailable {
            location: self.0.lock().store.path.clone(),
            source: why.into(),
        };
        match rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(failed(why)),
            // The closure was dropped unrun: no committer took it.
            Err(_) => Err(failed("the commit thread has ended".into())),
        }
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

impl Store for SharedStore {
    fn durable(&self) -> Result<(), StoreError> {
        self.wait_durable()
    }
    fn locked_until(&self, user: &str, now: Millis) -> Result<Option<Millis>, StoreError> {
        self.with(|s| s.locked_until(user, now))
    }
    fn login_state(
        &self,
        user: &str,
        now: Millis,
        request: Option<&ChallengeId>,
    ) -> Result<LoginState, StoreError> {
        self.with(|s| s.login_state(user, now, request))
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
    fn reserve_sends(
        &self,
        user: &str,
        now: Millis,
        limits: &SendLimits,
    ) -> Result<SendDecision, StoreError> {
        self.with(|s| s.reserve_sends(user, now, limits))
    }
    fn insert_challenge(&self, c: &ChallengeRecord) -> Result<(), StoreError> {
        self.with(|s| s.insert_challenge(c))
    }
    fn start_challenge_with(
        &self,
        c: &ChallengeRecord,
        limits: &SendLimits,
    ) -> Result<SendDecision, StoreError> {
        self.with(|s| s.start_challenge_with(c, limits))
    }
    fn breaker(&self, w: &KeyedWindow, now: Millis) -> Result<BreakerState, StoreError> {
        self.with(|s| s.breaker(w, now))
    }
    fn add_counts(&self, at: Millis, counts: &[(CounterKey, u64)]) -> Result<(), StoreError> {
        self.with(|s| s.add_counts(at, counts))
    }
    fn counters(&self, day: Day, now: Millis) -> Result<Counts, StoreError> {
        self.with(|s| s.counters(day, now))
    }
    fn reset_breaker(&self, w: &KeyedWindow, now: Millis) -> Result<BreakerState, StoreError> {
        self.with(|s| s.reset_breaker(w, now))
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
    fn set_language(&self, user: &str, lang: Option<&str>) -> Result<(), StoreError> {
        self.with(|s| s.set_language(user, lang))
    }
    fn language(&self, user: &str) -> Result<Option<String>, StoreError> {
        self.with(|s| s.language(user))
    }
    fn export(&self, now: Millis) -> Result<Snapshot, StoreError> {
        self.with(|s| s.export(now))
    }
    fn import_record(&self, rec: &Record<'_>, now: Millis) -> Result<Outcome, StoreError> {
        self.with(|s| s.import_record(rec, now))
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
        if let Some(found) = self.0.numbers.get(key) {
            return Ok(Some(found));
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
