//! One connection for all of a server's handles (smsotp-radiusd's
//! workers), their commands pipelined: [`Mux`].
//!
//! With a connection per worker, every store step of every login cost a
//! round trip of its own: a write, a read, and two wake-ups (the server's
//! and the worker's), on both sides. On a small machine those wake-ups,
//! not the commands, were most of what Redis cost (bench-radius
//! STORE=redis). Here the handles queue their commands, and one thread,
//! the connection's, sends all that is queued in one write, then reads
//! the answers of the oldest batch on the wire, and so on: k steps cost
//! one write, one read and one server wake-up, plus a wake-up per waiting
//! worker. Nothing waits to gather a batch: a batch is what queued while
//! the thread was busy, so one worker alone gets its own round trip at
//! once. The next batch goes out before the answers of the last one are
//! read, so the server is never idle waiting for the thread to be
//! scheduled. (A handle leading the batches in turn, with no thread, was
//! tried first: handing the lead on cost a wake-up that waited behind
//! every busy worker, and the connection sat idle meanwhile.)
//!
//! A driven mux ([`Mux::driven`]) has no thread: it belongs to one
//! smsotp-radiusd worker, whose fibers queue their commands and suspend
//! (`store::suspend`); when all of them wait, the worker itself sends
//! what is queued in one write and reads the answers ([`Mux::drive`]).
//! With one thread to a connection, no hand-off costs a wake-up: the
//! server's answer wakes the worker that reads it. The send lane's
//! threads, which park, share a mux with a thread as below.
//!
//! The thread starts with the first command and ends after
//! [`IDLE_EXIT`] without one, keeping the connection for the next. Only
//! [`super::RedisStore::shared`] stores have one: smsotp-radiusd's. The
//! PAM module and the admin tool never start a thread.
//!
//! Commands keep the order they were queued in, and each handle waits
//! for its answer before its next command, so what one handle sees is
//! what it would see on a connection of its own. A MULTI block or a
//! script stays one unit on the server; another handle's commands can
//! come between two of one handle's calls, as another host's could.
//!
//! Only [`super::RedisStore::run`] goes through here: a write that must
//! be durable waits for the replicas and the append-only file on the
//! connection that wrote it (`WAIT`, `WAITAOF`), up to half of
//! `store.timeout`, and that wait would hold up every worker; `WATCH`
//! holds until `EXEC` on its connection. Those keep a connection of their
//! handle's own.
//!
//! The thread does what a handle did with its own connection: opens the
//! connection when there is none (checking the key fingerprint), PINGs
//! one idle for a second, drops one that broke (failing every command on
//! the wire with it), and sends what was on the wire once more on a new
//! connection when a connection it kept across a pause turns out closed
//! before it answered anything (see [`super::RedisStore::run_then`] for
//! why that is safe).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use redis::{ConnectionLike, RedisError, RedisResult, Value};

use super::conn::Conn;
use super::RedisStore;
use crate::store::StoreError;

/// How long the connection's thread waits for a command before it ends.
pub(super) const IDLE_EXIT: Duration = Duration::from_secs(5);

/// The shared connection and the commands queued for it.
pub(super) struct Mux {
    state: Mutex<State>,
    /// Signalled when a command is queued while the thread waits.
    work: Condvar,
    /// Opens connections: a plain store on the same server, sharing the
    /// handles' code key.
    connector: RedisStore,
    /// Driven by the one thread whose handles use it ([`Mux::drive`]),
    /// with no thread of its own.
    driven: bool,
}

#[derive(Default)]
struct State {
    /// Waiting to be sent, in order.
    queue: VecDeque<Arc<Slot>>,
    /// Whether the connection's thread is running.
    running: bool,
    /// Whether it waits for a command (else it will look at the queue
    /// without being told).
    waiting: bool,
    /// The connection, while no thread has it.
    conn: Option<Conn>,
    /// Drop the connection before the next batch (the code key changed:
    /// the next one is checked as it opens).
    reset: bool,
}

/// One handle's commands, and where its answers go.
struct Slot {
    /// The commands, packed as the crate packs them.
    bytes: Vec<u8>,
    /// How many answers they get.
    replies: usize,
    /// The handle's thread, woken when `outcome` is set.
    waiter: Thread,
    outcome: Mutex<Option<Result<Vec<Value>, Failure>>>,
}

/// Why a slot got no answers.
#[derive(Clone)]
pub(super) enum Failure {
    /// The exchange failed (I/O, timeout, not Redis), or the thread could
    /// not be started.
    Redis(RedisError),
    /// No connection could be opened (unreachable, refused, another code
    /// key): what [`RedisStore::connect`] said.
    Open(Arc<StoreError>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Mux {
    /// A mux whose connections `connector` opens.
    pub(super) fn new(connector: RedisStore) -> Self {
        Mux {
            state: Mutex::default(),
            work: Condvar::new(),
            connector,
            driven: false,
        }
    }

    /// A mux for the handles of one thread that drives it itself
    /// ([`Mux::drive`]): a worker whose fibers queue their commands, then
    /// sends them all and reads the answers when every fiber waits. No
    /// thread is started, and no hand-off to one costs a wake-up.
    pub(super) fn driven(connector: RedisStore) -> Self {
        Mux {
            driven: true,
            ..Mux::new(connector)
        }
    }

    /// Sends every command queued in one write and reads their answers,
    /// on this thread: for a driven mux, called by the thread that owns
    /// it when its fibers all wait. Returns whether anything was queued.
    pub(super) fn drive(&self) -> bool {
        let (mut conn, batch) = {
            let mut s = lock(&self.state);
            if s.queue.is_empty() {
                return false;
            }
            let conn = s.conn.take();
            let conn = if std::mem::take(&mut s.reset) {
                None
            } else {
                conn
            };
            (conn, s.queue.drain(..).collect::<Vec<_>>())
        };
        let mut resumed = conn.is_some();
        let mut wire = VecDeque::from([batch]);
        conn = self.send(conn, &mut wire, 0, &mut resumed);
        while !wire.is_empty() && conn.is_some() {
            conn = self.read_oldest(conn, &mut wire, &mut resumed);
        }
        let mut s = lock(&self.state);
        if !std::mem::take(&mut s.reset) {
            s.conn = conn;
        }
        true
    }

    /// Sends `bytes` (`replies` answers) in the next batch and waits for
    /// the answers.
    pub(super) fn exchange(
        self: &Arc<Self>,
        bytes: Vec<u8>,
        replies: usize,
    ) -> Result<Vec<Value>, Failure> {
        let slot = Arc::new(Slot {
            bytes,
            replies,
            waiter: thread::current(),
            outcome: Mutex::new(None),
        });
        if self.driven {
            lock(&self.state).queue.push_back(slot.clone());
            let mut suspended = false;
            loop {
                if let Some(r) = lock(&slot.outcome).take() {
                    return r;
                }
                // A fiber waits for its thread to drive the mux. Outside
                // the fibers (the engine opening), or when the thread
                // resumed it unanswered (it drives a newer mux since a
                // reload), the caller drives it. A drive answers every
                // slot queued (within the timeouts); one neither queued
                // nor answered was lost to a bug in a drive.
                if (suspended || !crate::store::suspend::wait_for(slot.clone()))
                    && !self.drive()
                    && lock(&slot.outcome).is_none()
                {
                    return Err(no_answer());
                }
                suspended = true;
            }
        }
        // The thread answers within the connect and command timeouts;
        // this bound holds should it not (a bug), so no worker waits for
        // ever on a command.
        let s = &self.connector.spec;
        let deadline = Instant::now() + s.connect_timeout + 4 * s.timeout;
        {
            let mut s = lock(&self.state);
            if !s.running {
                let mux = self.clone();
                thread::Builder::new()
                    .name("redis".into())
                    .spawn(move || {
                        // A bug here must not leave the workers waiting
                        // for a thread that is gone: the next command
                        // starts another.
                        let served =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| mux.serve()));
                        if served.is_err() {
                            mux.abandon();
                        }
                    })
                    .map_err(|e| Failure::Redis(e.into()))?;
                s.running = true;
            } else if s.waiting {
                self.work.notify_one();
            }
            s.queue.push_back(slot.clone());
        }
        loop {
            let outcome = lock(&slot.outcome).take();
            if let Some(r) = outcome {
                return r;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(no_answer());
            }
            // A coroutine's call (smsotp-radiusd on Redis) suspends, and
            // its thread decides other requests meanwhile.
            if !crate::store::suspend::wait_for(slot.clone()) {
                thread::park_timeout(left);
            }
        }
    }

    /// After the thread died of a bug: what waits to be sent fails, and
    /// the next command starts a new thread.
    fn abandon(&self) {
        let mut s = lock(&self.state);
        s.running = false;
        s.waiting = false;
        s.conn = None;
        let why = Failure::Redis(RedisError::from((
            redis::ErrorKind::Client,
            "the shared Redis connection's thread failed",
        )));
        for slot in s.queue.drain(..) {
            complete(&slot, Err(why.clone()));
        }
    }

    /// Drops the connection before the next batch, for a new one to be
    /// opened (and checked against the code key as it opens).
    pub(super) fn reset(&self) {
        let mut s = lock(&self.state);
        s.conn = None;
        s.reset = true;
    }

    /// The connection's thread: sends what is queued, reads the oldest
    /// batch's answers, until nothing came for [`IDLE_EXIT`].
    fn serve(&self) {
        let mut conn = lock(&self.state).conn.take();
        // Whether `conn` was kept across a pause and has not answered
        // since: if the server closed it meanwhile, what was sent on it
        // did not run.
        let mut resumed = conn.is_some();
        let mut wire: VecDeque<Vec<Arc<Slot>>> = VecDeque::new();
        loop {
            let batch = {
                let mut s = lock(&self.state);
                if s.queue.is_empty() && wire.is_empty() {
                    s.waiting = true;
                    let (g, _) = self
                        .work
                        .wait_timeout_while(s, IDLE_EXIT, |s| s.queue.is_empty())
                        .unwrap_or_else(PoisonError::into_inner);
                    s = g;
                    s.waiting = false;
                    if s.queue.is_empty() {
                        s.running = false;
                        if !std::mem::take(&mut s.reset) {
                            s.conn = conn;
                        }
                        return;
                    }
                    resumed = conn.is_some();
                }
                // Not with answers still to read on it.
                if s.reset && wire.is_empty() {
                    s.reset = false;
                    conn = None;
                }
                s.queue.drain(..).collect::<Vec<_>>()
            };
            if !batch.is_empty() {
                wire.push_back(batch);
                let last = wire.len() - 1;
                conn = self.send(conn, &mut wire, last, &mut resumed);
            }
            if !wire.is_empty() {
                conn = self.read_oldest(conn, &mut wire, &mut resumed);
            }
        }
    }

    /// Reads the answers of the oldest batch on the wire and completes
    /// its slots; returns the connection if it is still good.
    fn read_oldest(
        &self,
        mut conn: Option<Conn>,
        wire: &mut VecDeque<Vec<Arc<Slot>>>,
        resumed: &mut bool,
    ) -> Option<Conn> {
        let oldest = wire.front()?;
        match conn.as_mut().map(|c| read(c, oldest)) {
            Some(Ok(answers)) => {
                *resumed = false;
                let readonly = answers.iter().flatten().any(is_readonly);
                for (slot, a) in oldest.iter().zip(answers) {
                    complete(slot, Ok(a));
                }
                wire.pop_front();
                // A failover made the master a replica: the next batch
                // asks the sentinels again, and what is on the wire to
                // this one fails now.
                if readonly {
                    let e = RedisError::from((
                        redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
                        "the master became a replica (READONLY)",
                    ));
                    fail_all(wire, &Failure::Redis(e));
                    return None;
                }
                conn
            }
            Some(Err((e, false))) if *resumed && dropped(&e) => {
                *resumed = false;
                self.send(None, wire, 0, resumed)
            }
            Some(Err((e, _))) => {
                fail_all(wire, &Failure::Redis(e));
                None
            }
            // No connection: `send` failed the wire already.
            None => None,
        }
    }

    /// Writes the batches of `wire` from `from` on, on `conn` or a new
    /// connection; the connection if it is good. When it is not, every
    /// batch on the wire is failed (or, once, sent again on a new
    /// connection: see `resumed` in [`Self::serve`]).
    fn send(
        &self,
        conn: Option<Conn>,
        wire: &mut VecDeque<Vec<Arc<Slot>>>,
        from: usize,
        resumed: &mut bool,
    ) -> Option<Conn> {
        let mut from = from;
        // PING one that sat idle, never one with answers still to read.
        let mut conn = match conn {
            Some(mut c) if from == 0 => (!c.stale()).then_some(c),
            c => c,
        };
        loop {
            let mut c = match conn.take() {
                Some(c) => c,
                None => match self.connector.connect() {
                    Ok(c) => {
                        // A new connection: what an old one had on the
                        // wire (and did not answer) goes again on it.
                        from = 0;
                        *resumed = false;
                        c
                    }
                    Err(e) => {
                        fail_all(wire, &Failure::Open(Arc::new(e)));
                        return None;
                    }
                },
            };
            let slots = || wire.iter().skip(from).flatten();
            let mut bytes = Vec::with_capacity(slots().map(|s| s.bytes.len()).sum());
            for s in slots() {
                bytes.extend_from_slice(&s.bytes);
            }
            match c.c.send_packed_command(&bytes) {
                Ok(()) => {
                    c.used();
                    return Some(c);
                }
                Err(e) if *resumed && dropped(&e) => *resumed = false,
                Err(e) => {
                    fail_all(wire, &Failure::Redis(e));
                    return None;
                }
            }
        }
    }
}

/// A slot that got no answer by its deadline.
fn no_answer() -> Failure {
    Failure::Redis(RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer from the shared Redis connection",
    )))
}

/// What the thread that owns a driven mux calls to drive it.
pub(super) struct Driven(pub(super) Arc<Mux>);

impl crate::store::suspend::Driver for Driven {
    fn drive(&self) -> bool {
        self.0.drive()
    }
}

/// Closed by the server (not a timeout: a command that timed out may yet
/// run).
fn dropped(e: &RedisError) -> bool {
    e.is_connection_dropped() && !e.is_timeout()
}

/// Reads the answers of `batch`, each slot's; or the error, and whether
/// anything of the batch was answered before it.
fn read(c: &mut Conn, batch: &[Arc<Slot>]) -> Result<Vec<Vec<Value>>, (RedisError, bool)> {
    let mut all = Vec::with_capacity(batch.len());
    for slot in batch {
        let mut answers = Vec::with_capacity(slot.replies);
        while answers.len() < slot.replies {
            match c.c.recv_response() {
                // RESP3 pushes come between answers; none is asked for.
                Ok(Value::Push { .. }) => {}
                Ok(v) => answers.push(v),
                Err(e) => return Err((e, !all.is_empty() || !answers.is_empty())),
            }
        }
        all.push(answers);
    }
    c.used();
    Ok(all)
}

fn is_readonly(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "READONLY")
}

fn fail_all(wire: &mut VecDeque<Vec<Arc<Slot>>>, why: &Failure) {
    for batch in wire.drain(..) {
        for slot in &batch {
            complete(slot, Err(why.clone()));
        }
    }
}

impl crate::store::suspend::Pending for Slot {
    fn ready(&self) -> bool {
        lock(&self.outcome).is_some()
    }
}

fn complete(slot: &Slot, r: Result<Vec<Value>, Failure>) {
    *lock(&slot.outcome) = Some(r);
    slot.waiter.unpark();
}

/// A handle's view of the shared connection: what the `redis` crate's
/// commands, pipelines and scripts run on, each call one slot.
pub(super) struct MuxConn<'a> {
    pub(super) mux: &'a Arc<Mux>,
    pub(super) db: i64,
    /// Why the connection could not be opened, for the caller to give
    /// back as it is (the crate's error type cannot carry it).
    pub(super) failed: Option<Arc<StoreError>>,
}

impl MuxConn<'_> {
    fn send(&mut self, bytes: &[u8], replies: usize) -> RedisResult<Vec<Value>> {
        match self.mux.exchange(bytes.to_vec(), replies) {
            Ok(v) => Ok(v),
            Err(Failure::Redis(e)) => Err(e),
            Err(Failure::Open(e)) => {
                self.failed = Some(e);
                Err(RedisError::from((
                    redis::ErrorKind::Io,
                    "cannot open the shared Redis connection",
                )))
            }
        }
    }
}

impl ConnectionLike for MuxConn<'_> {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        Ok(self.send(cmd, 1)?.pop().unwrap_or(Value::Nil))
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let answers = self.send(cmd, offset + count)?;
        super::conn::pipeline_answers(answers, offset)
    }

    fn get_db(&self) -> i64 {
        self.db
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").query::<()>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        true
    }
}
