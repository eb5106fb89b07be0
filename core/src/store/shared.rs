//! What a long-running server needs from a store its threads share
//! (smsotp-radiusd), whatever the backend: [`SharedBackend`], opened by
//! [`open_shared`]. A reply must never leave before the writes it relies
//! on are durable (a consumed code, a new challenge), so the server hands
//! its reply to [`SharedBackend::defer`] and the backend sends it on once
//! they are: at once for a backend whose every write is durable when it
//! returns ([`super::memory::MemoryStore`], [`super::redis::RedisStore`]), after the batch's commit for
//! SQLite's group commit ([`super::sqlite::SharedStore`]).

use super::{sqlite, Store, StoreError};
use crate::config::StoreSpec;

/// Work to do once the writes before it are durable: called once, with
/// `Ok(())` if they are, or with why they were rolled back (for the log),
/// in which case it must answer as for a failed store.
pub type Deferred = Box<dyn FnOnce(Result<(), &str>) + Send>;

/// Called on the thread that ran a batch of deferred work, once all of it
/// has run (see [`SharedBackend::after_each_batch`]).
pub type AfterBatch = Box<dyn Fn() + Send + Sync>;

/// A store shared by a server's threads: the whole [`Store`], plus a way to
/// wait for durability without holding up the thread.
pub trait SharedBackend: Store + Send + Sync {
    /// A handle on this same store for one engine (each worker thread
    /// opens its own engine): what is written through any handle is
    /// written to this store, and [`SharedBackend::defer`] covers it.
    fn handle(&self) -> Box<dyn Store>;
    /// Runs `f` once everything this thread wrote through the store (and
    /// its handles) since its last `defer` is durable, on whichever thread
    /// made it so; with an error if it was rolled back instead.
    fn defer(&self, f: Deferred);
    /// Returns once everything deferred so far has run (its writes
    /// durable or rolled back): for shutdown, and for a long task that
    /// wants its writes out now and then.
    fn flush(&self);
    /// Has `f` run after each batch of deferred work, on the thread that
    /// ran it: deferred work may leave something to finish for the whole
    /// batch at once (smsotp-radiusd queues its replies and sends them
    /// together). Set once; later calls are ignored.
    fn after_each_batch(&self, f: AfterBatch);
    /// Whether its handles' waits can suspend a coroutine rather than
    /// park their thread (see [`super::suspend`]), so that a server may
    /// decide many requests per thread: Redis's shared connection. A
    /// SQLite call waits on nothing but the disk.
    fn suspends(&self) -> bool {
        false
    }
    /// For a thread that decides many requests in coroutines (see
    /// [`super::suspend`]): a handle whose calls queue their commands and
    /// suspend, and the [`Driver`](super::suspend::Driver) that thread
    /// calls to send them all, and take in the answers, once every
    /// coroutine waits. `None` where the store has no such thing: the
    /// thread uses [`SharedBackend::handle`].
    fn fiber_handle(&self) -> Option<(Box<dyn Store>, Box<dyn super::suspend::Driver>)> {
        None
    }
}

/// Keeps a shared store's background work going (SQLite: its committer
/// and checkpoint threads). Dropping it makes durable what is pending,
/// runs what was deferred, and ends that work; keep it for as long as the
/// store is used, and drop it after the store's last use.
#[must_use = "dropping the guard stops the store's background work"]
pub struct SharedGuard(
    /// The backend's own guard (SQLite: its `Committer`); `None` if it
    /// needs none.
    #[allow(dead_code)]
    Option<Box<dyn Send + Sync>>,
);

impl SharedGuard {
    /// A guard for a backend with no background work.
    pub fn none() -> Self {
        SharedGuard(None)
    }
}

/// Opens the configured store for a server's threads to share, whichever
/// backend it is; [`super::open`] is the same for one thread.
pub fn open_shared(spec: &StoreSpec) -> Result<(Box<dyn SharedBackend>, SharedGuard), StoreError> {
    match spec {
        StoreSpec::Sqlite { .. } => {
            let store = sqlite::SqliteStore::open_spec(spec)?;
            let (shared, committer) =
                sqlite::SharedStore::batched(store).map_err(|source| StoreError::Start {
                    location: spec.location(),
                    source,
                })?;
            Ok((Box::new(shared), SharedGuard(Some(Box::new(committer)))))
        }
        // Connects on first use (and again after a failure): a server
        // started while Redis is down comes up, and answers once it is
        // back. Its handles share one connection, pipelined.
        StoreSpec::Redis(r) => Ok((
            Box::new(super::redis::RedisStore::shared(r)),
            SharedGuard::none(),
        )),
    }
}
