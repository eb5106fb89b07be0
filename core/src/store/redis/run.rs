//! Running commands: on this handle's own connection (opened on first
//! use, checked against the code key, replaced when it broke) or on the
//! one a server's handles share (`mux.rs`); what a failure means for the
//! connection and what it tells the caller.

use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::Instant;

use redis::{Connection, ConnectionLike, RedisResult};

use super::conn::{Bounded, Conn, OpenError};
use super::mux::{Mux, MuxConn};
use super::{Failed, RedisStore, CACHE_PAUSE};
use crate::store::{KeyFingerprint, StoreError};

impl RedisStore {
    pub(super) fn lock(&self) -> MutexGuard<'_, Option<Conn>> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn key_fp_lock(&self) -> MutexGuard<'_, Option<KeyFingerprint>> {
        self.key_fp.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn unavailable(&self, what: String) -> StoreError {
        StoreError::Unavailable {
            location: self.spec.url.clone(),
            source: Box::new(Failed(what)),
        }
    }

    pub(super) fn map_err(&self, e: &redis::RedisError) -> StoreError {
        if e.kind() == redis::ErrorKind::Parse {
            return self.unavailable(format!(
                "what answered is not a Redis server (check store.url): {e}"
            ));
        }
        if e.kind() == redis::ErrorKind::UnexpectedReturnType {
            return StoreError::Corrupt {
                location: self.spec.url.clone(),
                source: Box::new(Failed(format!("unexpected reply: {e}"))),
            };
        }
        if e.is_timeout() {
            return self.unavailable(format!(
                "no answer within store.timeout ({})",
                crate::config::human_duration(self.spec.timeout)
            ));
        }
        self.unavailable(e.to_string())
    }

    pub(super) fn connect(&self) -> Result<Conn, StoreError> {
        let key = self.key_fp_lock().clone();
        // The handshake sends nothing without a password or a db: a
        // command shows now whether the server answers and lets us in,
        // PING or, for a handle bound to a key, the key check itself.
        let mut conn = Conn::open(&self.spec, key.is_none()).map_err(|e| match e {
            OpenError::Setup(m) => self.unavailable(m),
            OpenError::Sentinels(why) => {
                self.unavailable(format!("no sentinel led to a master: {}", why.join("; ")))
            }
            OpenError::Redis(e) if e.is_timeout() => self.unavailable(format!(
                "cannot connect within store.connect_timeout ({})",
                crate::config::human_duration(self.spec.connect_timeout)
            )),
            OpenError::Redis(e)
                if e.kind() == redis::ErrorKind::Parse
                    || e.kind() == redis::ErrorKind::UnexpectedReturnType =>
            {
                self.map_err(&e)
            }
            OpenError::Redis(e) if e.is_io_error() => {
                self.unavailable(format!("cannot connect: {e}"))
            }
            OpenError::Redis(e) | OpenError::Answer(e) => self.map_err(&e),
        })?;
        if let Some(key) = key {
            self.check_key_on(&mut Bounded(&mut conn.c), &key)?;
        }
        Ok(conn)
    }

    /// Runs `f` on the connection (opening it if needed); a connection
    /// that failed is dropped, for the next call to open a new one (with
    /// sentinels: to ask them again where the master is).
    ///
    /// A server's handles share one connection instead (`mux.rs`), with
    /// the same rules.
    pub(super) fn run<T: Send>(
        &self,
        mut f: impl FnMut(&mut dyn ConnectionLike) -> RedisResult<T> + Send,
    ) -> Result<T, StoreError> {
        let Some(mux) = &self.mux else {
            return self.run_then(f, |_| false);
        };
        let r = self.run_shared(mux, &mut f);
        self.note_reach(&r);
        r
    }

    /// Notes whether the server was reached (see `unreachable_at`).
    pub(super) fn note_reach<T>(&self, r: &Result<T, StoreError>) {
        let down = matches!(r, Err(StoreError::Unavailable { .. }));
        let mut at = self
            .unreachable_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *at = down.then(Instant::now);
    }

    /// Whether a command failed for want of the server within
    /// [`CACHE_PAUSE`].
    pub(super) fn recently_unreachable(&self) -> bool {
        self.unreachable_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < CACHE_PAUSE)
    }

    /// [`Self::run`] on the connection a server's handles share.
    pub(super) fn run_shared<T>(
        &self,
        mux: &Arc<Mux>,
        f: &mut impl FnMut(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut c = MuxConn {
            mux,
            db: self.spec.db,
            failed: None,
        };
        f(&mut c).map_err(|e| match c.failed.take() {
            Some(open) => again(&open, &self.spec.url),
            None => self.map_err(&e),
        })
    }

    /// [`Self::run`] on a connection of this handle's own even where the
    /// server's handles share one: for commands that leave state on the
    /// connection between calls (`WATCH`).
    pub(super) fn run_alone<T: Send>(
        &self,
        f: impl FnMut(&mut dyn ConnectionLike) -> RedisResult<T> + Send,
    ) -> Result<T, StoreError> {
        self.run_then(f, |_| false)
    }

    /// [`Self::run`] for a write that must outlive a failover (lockouts,
    /// unlocks, backup codes, registrations, opt-outs): once it is done,
    /// [`Conn::make_durable`]. What that wait says never turns the write
    /// into an error: the write stands on the master either way.
    pub(super) fn run_durable<T: Send>(
        &self,
        f: impl FnMut(&mut dyn ConnectionLike) -> RedisResult<T> + Send,
    ) -> Result<T, StoreError> {
        self.run_then(f, |_| true)
    }

    /// Runs `f`, then makes its write durable if `durable` says, from
    /// what `f` answered, that it wrote something that must last.
    ///
    /// One case is retried, once, on a new connection: a connection kept
    /// from an earlier call that the server had closed under it (Redis
    /// restarted, a failover, an idle timeout), which shows as a broken
    /// pipe, a reset or end of file, never as a timeout. Else every worker
    /// of smsotp-radiusd would fail one login after each Redis restart. The
    /// server that closed the connection cannot have run the command;
    /// should it have run all the same (it died after running it, before
    /// answering), running a script twice only counts a send or a failure
    /// twice or finds a code already used: stricter, never weaker.
    ///
    /// The connection is this handle's own and blocks in its reads, so a
    /// caller that can be suspended (see `store::suspend`) has it run on a
    /// thread of its own meanwhile: a `WAIT` for the replicas holds up no
    /// other request.
    pub(super) fn run_then<T: Send>(
        &self,
        f: impl FnMut(&mut dyn ConnectionLike) -> RedisResult<T> + Send,
        durable: impl FnOnce(&T) -> bool + Send,
    ) -> Result<T, StoreError> {
        let r = crate::store::suspend::off_thread(|| self.run_own(f, durable));
        self.note_reach(&r);
        r
    }

    /// [`Self::run_then`] on this handle's own connection.
    pub(super) fn run_own<T>(
        &self,
        mut f: impl FnMut(&mut dyn ConnectionLike) -> RedisResult<T>,
        durable: impl FnOnce(&T) -> bool,
    ) -> Result<T, StoreError> {
        let mut g = self.lock();
        if g.as_mut().is_some_and(Conn::stale) {
            *g = None;
        }
        let kept = g.is_some();
        let first = {
            let conn = match &mut *g {
                Some(c) => c,
                None => g.insert(self.connect()?),
            };
            let r = f(&mut Bounded(&mut conn.c));
            conn.used();
            r
        };
        let result = match first {
            Err(e) if kept && e.is_connection_dropped() && !e.is_timeout() => {
                *g = None;
                let conn = g.insert(self.connect()?);
                let r = f(&mut Bounded(&mut conn.c));
                conn.used();
                r
            }
            r => r,
        };
        match result {
            Ok(v) => {
                if durable(&v) {
                    if let Some(conn) = g.as_mut() {
                        if let Err(e) = conn.make_durable(&self.spec) {
                            if broken(&e, &conn.c) {
                                *g = None;
                            }
                        }
                    }
                }
                Ok(v)
            }
            Err(e) => {
                if g.as_ref().is_none_or(|conn| broken(&e, &conn.c)) {
                    *g = None;
                }
                Err(self.map_err(&e))
            }
        }
    }
}

/// Whether the connection is of no more use: an I/O error or a timeout
/// (the reply may still come and would answer the next command), a reply
/// that is not Redis, or a master that a failover made a replica
/// (`READONLY`; the next connection asks the sentinels again).
pub(super) fn broken(e: &redis::RedisError, conn: &Connection) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || e.kind() == redis::ErrorKind::Parse
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        || e.code() == Some("READONLY")
        || e.to_string().contains("READONLY")
        || !redis::ConnectionLike::is_open(conn)
}

/// `e` once more, for each of the handles a shared connection failed to
/// open for (the error type is not `Clone`; what it says is kept).
/// Opening fails as unavailable, with another code key, or with what is
/// not Redis's answer.
pub(super) fn again(e: &StoreError, location: &str) -> StoreError {
    match e {
        StoreError::KeyMismatch(m) => StoreError::KeyMismatch(m.clone()),
        StoreError::Corrupt { location, source } => StoreError::Corrupt {
            location: location.clone(),
            source: Box::new(Failed(source.to_string())),
        },
        StoreError::Unavailable { location, source } => StoreError::Unavailable {
            location: location.clone(),
            source: Box::new(Failed(source.to_string())),
        },
        other => StoreError::Unavailable {
            location: location.to_owned(),
            source: Box::new(Failed(other.to_string())),
        },
    }
}
