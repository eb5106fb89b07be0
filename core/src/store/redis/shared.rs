//! [`SharedBackend`] on Redis: the handles of smsotp-radiusd's threads,
//! on the connection they share (`mux.rs`), or for a worker with fibers
//! on one of its own that it drives.

use std::sync::Arc;

use super::mux::{self, Mux};
use super::RedisStore;
use crate::store::shared::{AfterBatch, Deferred};
use crate::store::{SharedBackend, Store};

impl SharedBackend for RedisStore {
    fn handle(&self) -> Box<dyn Store> {
        Box::new(self.handle_on(self.mux.clone()))
    }
    fn defer(&self, f: Deferred) {
        f(Ok(()));
        if let Some(after) = self.after_batch.get() {
            after();
        }
    }
    fn flush(&self) {}
    fn after_each_batch(&self, f: AfterBatch) {
        let _ = self.after_batch.set(f);
    }
    fn suspends(&self) -> bool {
        self.mux.is_some()
    }
    fn fiber_handle(&self) -> Option<(Box<dyn Store>, Box<dyn crate::store::suspend::Driver>)> {
        self.mux.as_ref()?;
        // A connection of the thread's own, which it drives itself.
        let connector = RedisStore {
            key_fp: self.key_fp.clone(),
            ..Self::lazy(&self.spec)
        };
        let mux = Arc::new(Mux::driven(connector));
        let handle = self.handle_on(Some(mux.clone()));
        Some((Box::new(handle), Box::new(mux::Driven(mux))))
    }
}

impl RedisStore {
    /// A handle on this store for one engine, its commands on `mux`.
    fn handle_on(&self, mux: Option<Arc<Mux>>) -> RedisStore {
        RedisStore {
            numbers: self.numbers.clone(),
            key_fp: self.key_fp.clone(),
            mux,
            ..RedisStore::lazy(&self.spec)
        }
    }
}
