//! The socket side: a reader thread per listening socket that sorts what
//! arrives into two bounded queues ([`crate::triage`]), worker threads
//! that answer what is queued (answers with a State first), the duplicate
//! cache, reload and shutdown.
//!
//! A datagram goes: its queue (full: dropped unread, one warning a minute
//! counts them; see below) → client lookup by source address (unknown:
//! dropped, with a rate-limited log line) → decode and
//! Message-Authenticator check with that client's secret (bad: dropped,
//! logged) → duplicate cache (a retransmit gets the cached reply, or
//! nothing while the first copy is in flight) → [`handler::handle`], on
//! the worker, or on a thread of the send lane ([`crate::lane`]) for a
//! request that may send an SMS (`may_send`) → the reply is encoded
//! and, once the store has made durable the writes it relies on
//! ([`SharedBackend::defer`]: SQLite's group commit), cached and sent with
//! the rest of its batch ([`outgoing`]). Only requests that pass the checks
//! reach the cache, so forged packets cannot fill it or pin a key.
//!
//! A request stays in flight in the duplicate cache from its admission
//! until its reply is cached, on whichever thread it is decided: a
//! retransmit during a slow send is dropped, never decided a second time
//! (no second SMS, no second password check).
//!
//! When the send lane is full (`[radius] max_pending_sends` requests
//! waiting for their gateway), a further request that may send an SMS is
//! dropped, not rejected, and its in-flight mark is forgotten: its sends
//! take 0.2 to 1.5 s, so the NAS's retransmit a few seconds later usually
//! finds room and the user logs in; a NAS with a second RADIUS server
//! fails over to it; and nothing has been done for the request (no
//! password checked, no SMS), so deciding the retransmit afresh is safe. A
//! reject would end a login that a second's wait would have let through.
//! The drops are counted in one warning a minute.
//!
//! When the workers cannot keep up (more requests than the CPU can
//! decide), the queues fill instead of the kernel's socket buffer: the
//! reader keeps reading, so an answer with a State still finds room in
//! its queue while the flood of new requests is dropped at the reader for
//! the price of one read (RFC 5080 §2.2.3). `[radius] max_queued` bounds
//! each queue, and so the memory and the wait of what is queued. On stop,
//! the answers queued are still decided and the new requests queued are
//! dropped (counted in the "stopped" line): nothing was done for them, so
//! their retransmits are safe to decide afresh.
//!
//! On a store whose waits suspend (Redis: [`SharedBackend::suspends`]),
//! a worker decides up to `FIBERS_PER_WORKER` (32) requests at once,
//! each in a fiber (`fibers.rs`), rather than one at a time with its
//! thread parked on every store step: it takes what is queued, starts
//! each decision until its store call waits, resumes those whose
//! answers came, sends the round's replies in one batch, and when every
//! fiber waits sends their commands and reads the answers on its own
//! connection (`server_fibers.rs`). First rounds whose phone lookup may
//! wait (LDAP, NSS) go to the send lane too: a fiber must not block its
//! worker.
//!
//! What a reload replaces, one generation of configuration with its
//! store, is a [`Runtime`] (`runtime.rs`).
//!
//! [`SharedBackend::defer`]: smsotp_core::store::SharedBackend::defer
//! [`SharedBackend::suspends`]: smsotp_core::store::SharedBackend::suspends

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use smsotp_core::audit::{Event, Level};
use smsotp_core::flow::CountBatch;
use smsotp_core::store::Store;
use smsotp_core::Engine;

use crate::dedup::{DedupKey, Seen, ShardedDedup};
use crate::handler::{self, Broken, ClientInfo, Decision, Outcome};
use crate::lane::{self, SendLane};
use crate::metrics::{Metrics, Outcome as Tally};
use crate::outgoing;
use crate::runtime::{check_phone_lists, Runtime};
use crate::triage::{self, Datagram, Kind, Next, Queues};
use crate::wire::{self, DecodeOptions, Reply, ReplyCode, Request, RequestCode};

#[path = "server_fibers.rs"]
mod fiber_worker;
use fiber_worker::fiber_worker;

pub const IDENT: &str = "smsotp-radiusd";
/// RFC 5080: a retransmit within this window gets the cached reply.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(30);
const DEDUP_MAX: usize = 65_536;
/// Locks the duplicate cache is split under (see [`ShardedDedup`]).
const DEDUP_SHARDS: usize = 16;
/// Requests a worker decides at once on a store that suspends (see
/// `fibers.rs`).
const FIBERS_PER_WORKER: usize = 32;

/// A server-level event (not about a login decision) with its detail.
pub(crate) fn event(name: &'static str, detail: String) -> Event {
    Event {
        event: name,
        detail: Some(detail),
        ..Event::default()
    }
}

/// At most `per_minute` lines a minute; the rest are counted and reported
/// with the next line that gets through.
struct LogLimiter {
    window_start: Instant,
    lines: u32,
    suppressed: u64,
    per_minute: u32,
}

impl LogLimiter {
    fn new(per_minute: u32) -> Self {
        LogLimiter {
            window_start: Instant::now(),
            lines: 0,
            suppressed: 0,
            per_minute,
        }
    }

    /// `Some(suppressed so far)` if this line may be written.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        if now.duration_since(self.window_start) >= Duration::from_secs(60) {
            self.window_start = now;
            self.lines = 0;
        }
        if self.lines < self.per_minute {
            self.lines += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// Logs a warning through `limiter`; `detail` gets the count of lines
/// suppressed since the last one written.
fn limited_log(
    limiter: &Mutex<LogLimiter>,
    rt: &Runtime,
    name: &'static str,
    detail: impl FnOnce(u64) -> String,
) {
    let admitted = limiter
        .lock()
        .ok()
        .and_then(|mut l| l.admit(Instant::now()));
    if let Some(suppressed) = admitted {
        rt.log(Level::Warning, &event(name, detail(suppressed)));
    }
}

/// An engine and the runtime generation it was opened for: each worker and
/// each send-lane thread keeps its own.
type EngineSlot = Option<(u64, Engine)>;

/// The send lane of this server: requests that may send an SMS.
type Lane = SendLane<Job, EngineSlot>;

struct Job {
    runtime: Arc<Runtime>,
    client: usize,
    request: Request,
    key: DedupKey,
    from: SocketAddr,
    socket: Arc<UdpSocket>,
}

/// Shared by every thread.
struct Shared {
    runtime: RwLock<Arc<Runtime>>,
    dedup: ShardedDedup,
    stop: AtomicBool,
    unknown_log: Mutex<LogLimiter>,
    bad_log: Mutex<LogLimiter>,
    full_log: Mutex<LogLimiter>,
    overload_log: Mutex<LogLimiter>,
    handled: AtomicU64,
    /// Requests by outcome and send times, for `/metrics`; kept across
    /// reloads.
    metrics: Arc<Metrics>,
    /// The SMS counts of every engine, written to the store every
    /// [`COUNTS_EVERY`] and when the server stops (one write a second
    /// rather than one per SMS); kept across reloads.
    counts: Arc<CountBatch>,
    count_log: Mutex<LogLimiter>,
}

/// Tells the store that this thread (not a worker: the main loop, the
/// metrics server) has finished its step: a SQLite store's commit would
/// otherwise wait for it to join, every time.
fn done_with_store(rt: &Runtime) {
    rt.store.defer(Box::new(|_| {}));
}

/// How often the gathered SMS counts are written to the store.
const COUNTS_EVERY: Duration = Duration::from_secs(1);

/// Writes the gathered SMS counts to the store; a store that refuses
/// them keeps them gathered for the next time, with a warning.
fn flush_counts(shared: &Shared) {
    if shared.counts.is_empty() {
        return;
    }
    let rt = shared.runtime();
    let flushed = shared.counts.flush(&*rt.store.handle());
    done_with_store(&rt);
    if let Err(e) = flushed {
        limited_log(&shared.count_log, &rt, "count_failed", |suppressed| {
            format!(
                "the SMS counters were not written to the store: {e}; they are kept and \
                 written when it takes them ({suppressed} more such lines since the last)"
            )
        });
    }
}

impl Shared {
    fn runtime(&self) -> Arc<Runtime> {
        match self.runtime.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Binds a UDP socket; IPv6 sockets are IPv6-only so `0.0.0.0:1812` and
/// `[::]:1812` can both be listed.
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Bursts of requests (a VPN concentrator after a restart) should queue
    // in the kernel rather than be dropped.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(s)
}

/// Signals the server reacts to, set by handlers (see main).
pub struct Signals {
    pub terminate: Arc<AtomicBool>,
    pub reload: Arc<AtomicBool>,
}

/// Runs until `signals.terminate`; reloads on `signals.reload`.
pub fn run(
    config_path: PathBuf,
    sockets: Vec<UdpSocket>,
    callbacks: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
    runtime: Runtime,
    signals: Signals,
) -> std::io::Result<()> {
    let workers = runtime.radius.workers;
    let max_pending_sends = runtime.radius.max_pending_sends;
    let max_queued = runtime.radius.max_queued;
    let shared = Arc::new(Shared {
        runtime: RwLock::new(Arc::new(runtime)),
        dedup: ShardedDedup::new(DEDUP_WINDOW, DEDUP_MAX, DEDUP_SHARDS),
        stop: AtomicBool::new(false),
        unknown_log: Mutex::new(LogLimiter::new(20)),
        bad_log: Mutex::new(LogLimiter::new(60)),
        full_log: Mutex::new(LogLimiter::new(1)),
        overload_log: Mutex::new(LogLimiter::new(1)),
        handled: AtomicU64::new(0),
        metrics: Arc::new(Metrics::default()),
        counts: Arc::new(CountBatch::new()),
        count_log: Mutex::new(LogLimiter::new(1)),
    });
    let stop_http = Arc::new(AtomicBool::new(false));
    let metrics_thread = match metrics_listener {
        Some(listener) => {
            let reads = shared.clone();
            Some(crate::metrics::serve(
                listener,
                shared.metrics.clone(),
                Box::new(move || today_s_counters(&reads)),
                stop_http.clone(),
            )?)
        }
        None => None,
    };
    check_phone_lists(shared.runtime());
    crate::receipts::start(&shared.runtime());
    let lane: Arc<Lane> = {
        let shared = shared.clone();
        SendLane::new(
            "send",
            max_pending_sends,
            lane::IDLE_EXIT,
            move |engine: &mut EngineSlot, job: Job| answer(&shared, engine, job),
        )
    };
    // One reader per socket keeps the kernel's buffer empty and sorts
    // what it reads (see the module doc): one hand-off on the way in, to
    // an idle worker only when one waits. What may wait for an SMS
    // gateway goes on to the send lane, so the workers are never held up
    // by one.
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut all_queues: Vec<Arc<Queues>> = Vec::new();
    let callbacks_thread = match callbacks {
        Some(listener) => {
            let current = shared.clone();
            Some(crate::callback::serve(
                listener,
                move || current.runtime(),
                stop_http.clone(),
            )?)
        }
        None => None,
    };
    for sock in sockets {
        let sock = Arc::new(sock);
        let local = sock.local_addr()?;
        let queues = Arc::new(Queues::new(max_queued));
        all_queues.push(queues.clone());
        {
            let sock = sock.clone();
            let shared = shared.clone();
            let queues = queues.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("reader-{}", local.port()))
                    .spawn(move || reader(&shared, &queues, &sock, local))?,
            );
        }
        let suspends = shared.runtime().store.suspends();
        for i in 0..workers {
            let sock = sock.clone();
            let shared = shared.clone();
            let lane = lane.clone();
            let queues = queues.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("worker-{i}-{}", local.port()))
                    .spawn(move || {
                        if suspends {
                            fiber_worker(&shared, &lane, &queues, &sock, FIBERS_PER_WORKER)
                        } else {
                            worker(&shared, &lane, &queues, &sock)
                        }
                    })?,
            );
        }
    }

    let mut counts_at = Instant::now();
    while !signals.terminate.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if counts_at.elapsed() >= COUNTS_EVERY {
            flush_counts(&shared);
            counts_at = Instant::now();
        }
        if signals.reload.swap(false, Ordering::Relaxed) {
            reload(&shared, &config_path);
            let radius = &shared.runtime().radius;
            lane.set_max(radius.max_pending_sends);
            for q in &all_queues {
                q.set_max(radius.max_queued);
            }
        }
    }
    let rt = shared.runtime();
    rt.log(
        Level::Info,
        &event("stopping", "finishing requests in flight".into()),
    );
    shared.stop.store(true, Ordering::Relaxed);
    // The readers stop reading; each worker finishes the request it holds
    // and the answers queued, and the send lane every request handed to
    // it; then the replies waiting for a commit go out. New requests
    // still queued are dropped (see the module doc).
    let unread: usize = all_queues.iter().map(|q| q.stop()).sum();
    for t in threads {
        let _ = t.join();
    }
    lane.shutdown();
    stop_http.store(true, Ordering::Relaxed);
    for t in [metrics_thread, callbacks_thread].into_iter().flatten() {
        let _ = t.join();
    }
    flush_counts(&shared);
    shared.runtime().store.flush();
    rt.log(
        Level::Info,
        &event(
            "stopped",
            format!(
                "{} requests handled{}",
                shared.handled.load(Ordering::Relaxed),
                match unread {
                    0 => String::new(),
                    n => format!(
                        ", {} dropped unread (their NAS retransmits)",
                        smsotp_core::counted(n, "new request", "new requests")
                    ),
                }
            ),
        ),
    );
    // The audit lines still queued for syslog go out before the exit.
    rt.sinks.close(Duration::from_secs(2));
    Ok(())
}

fn reload(shared: &Shared, path: &Path) {
    let old = shared.runtime();
    match Runtime::load(path, old.generation + 1, old.debug) {
        Ok((new, warnings)) => {
            for w in warnings {
                new.log(Level::Warning, &event("config_warning", w));
            }
            for (changed, what) in [
                (
                    new.config.receipts.listen != old.config.receipts.listen,
                    "receipts.listen changed: restart the server to serve status callbacks there",
                ),
                (
                    new.radius.metrics != old.radius.metrics,
                    "radius.metrics changed: restart the server to serve /metrics there",
                ),
            ] {
                if changed {
                    new.log(Level::Warning, &event("reload", what.into()));
                }
            }
            if new.radius.listen != old.radius.listen {
                new.log(
                    Level::Warning,
                    &event(
                        "reload",
                        "radius.listen changed: restart the server to listen on the new addresses"
                            .into(),
                    ),
                );
            }
            // Swap first, then say so: whoever reads "reloaded" in the log
            // must find the new configuration in force.
            let new = Arc::new(new);
            match shared.runtime.write() {
                Ok(mut w) => *w = new.clone(),
                Err(poisoned) => *poisoned.into_inner() = new.clone(),
            }
            new.log(
                Level::Info,
                &event("reloaded", format!("configuration from {}", path.display())),
            );
            check_phone_lists(new.clone());
            crate::receipts::start(&new);
        }
        Err(e) => old.log(
            Level::Error,
            &event(
                "reload_failed",
                format!("reload failed: {e}; still running the previous configuration"),
            ),
        ),
    }
}

/// The reader of `sock`: reads datagrams and queues each by its kind
/// until told to stop; what finds its queue full is dropped and counted.
/// Nothing in it should panic; if something does, it reads on, since a
/// socket without its reader would go silent.
fn reader(shared: &Shared, queues: &Queues, sock: &UdpSocket, local: SocketAddr) {
    while catch_unwind(AssertUnwindSafe(|| read(shared, queues, sock, local))).is_err() {
        shared.runtime().log(
            Level::Error,
            &event("panic", format!("internal error in the reader of {local}")),
        );
    }
}

fn read(shared: &Shared, queues: &Queues, sock: &UdpSocket, local: SocketAddr) {
    let mut buf = triage::buffer();
    while !shared.stop.load(Ordering::Relaxed) {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                shared
                    .runtime()
                    .log(Level::Error, &event("socket_error", e.to_string()));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let kind = triage::classify(&buf[..n.min(buf.len())]);
        match queues.push(kind, Datagram { buf, len: n, from }) {
            Ok(next) => buf = next,
            Err(d) => {
                buf = d.buf;
                if !shared.stop.load(Ordering::Relaxed) {
                    shed(shared, queues, kind, from, local);
                }
            }
        }
    }
}

/// Logs (at most once a minute, with the count since) a datagram dropped
/// because its queue was full.
fn shed(shared: &Shared, queues: &Queues, kind: Kind, from: SocketAddr, local: SocketAddr) {
    shared.metrics.request(Tally::DroppedOverload);
    let rt = shared.runtime();
    limited_log(&shared.overload_log, &rt, "overload", |suppressed| {
        let (answers, new) = queues.lengths();
        format!(
            "more requests than the workers can answer on {local}: the queue of {} is full \
             (radius.max_queued = {}; {answers} answers and {new} new requests waiting), \
             dropped one from {from} unanswered, the NAS retransmits; answers with a State \
             go first ({suppressed} more dropped since the last line)",
            kind.word(),
            queues.max()
        )
    });
}

/// One worker: takes a datagram (answers first), checks it, answers it;
/// again until the queues stop and no answer is left.
fn worker(shared: &Arc<Shared>, lane: &Arc<Lane>, queues: &Queues, sock: &Arc<UdpSocket>) {
    // The engine of the runtime generation it was opened for.
    let mut engine: EngineSlot = None;
    // The buffer of the datagram just decided, back to the reader.
    let mut done: Option<Vec<u8>> = None;
    loop {
        let d = match queues.next(done.take(), Duration::from_millis(200)) {
            Next::Work(d) => d,
            Next::Idle => continue,
            Next::Stop => return,
        };
        let from = d.from;
        // The login itself runs under catch_unwind in `answer`; this keeps a
        // worker alive through anything else a datagram could trip.
        let handled = catch_unwind(AssertUnwindSafe(|| {
            if let Some(job) = admit(shared, sock, d.bytes(), d.len, from) {
                if may_send(&job.request, job.runtime.first_rounds_wait) {
                    hand_over(shared, lane, job);
                } else {
                    answer(shared, &mut engine, job);
                }
            }
        }));
        if handled.is_err() {
            engine = None;
            shared.runtime().log(
                Level::Error,
                &event(
                    "panic",
                    format!("internal error on a datagram from {from}; dropped"),
                ),
            );
        }
        done = Some(d.buf);
    }
}

/// The checks before any work: a known client, a well-formed packet with
/// a valid Message-Authenticator, not a duplicate. `n` is the datagram's
/// size, which may exceed what `datagram` kept of it.
fn admit(
    shared: &Shared,
    sock: &Arc<UdpSocket>,
    datagram: &[u8],
    n: usize,
    from: SocketAddr,
) -> Option<Job> {
    let rt = shared.runtime();
    let Some((index, client)) = rt.client_for(from.ip()).and_then(|c| {
        rt.clients
            .iter()
            .position(|x| std::ptr::eq(x, c))
            .map(|i| (i, c))
    }) else {
        shared.metrics.request(Tally::DroppedUnknownClient);
        limited_log(&shared.unknown_log, &rt, "unknown_client", |suppressed| {
            format!("dropped a packet from {from}: no [[radius.client]] matches ({suppressed} more not logged)")
        });
        return None;
    };
    let opts = DecodeOptions {
        require_message_authenticator: client.spec.require_message_authenticator,
        limit_proxy_state: client.spec.limit_proxy_state,
    };
    let decoded = if n > wire::MAX_PACKET {
        Err(wire::WireError::Malformed(format!(
            "datagram of {n}+ bytes exceeds {}",
            wire::MAX_PACKET
        )))
    } else {
        wire::decode_request(datagram, client.secret.expose(), opts)
    };
    let request = match decoded {
        Ok(r) => r,
        Err(e) => {
            shared.metrics.request(match e {
                wire::WireError::MissingMessageAuthenticator
                | wire::WireError::BadMessageAuthenticator
                | wire::WireError::ProxyStateWithoutAuthenticator => Tally::DroppedBadAuthenticator,
                wire::WireError::Malformed(_)
                | wire::WireError::UnsupportedCode(_)
                | wire::WireError::BadUserPassword(_) => Tally::DroppedMalformed,
            });
            limited_log(&shared.bad_log, &rt, "dropped", |suppressed| {
                format!(
                    "client {} ({from}): {e}; packet dropped ({suppressed} more not logged)",
                    client.spec.name
                )
            });
            return None;
        }
    };
    let key = DedupKey {
        client: from,
        identifier: request.identifier,
        authenticator: request.authenticator,
    };
    match shared.dedup.shard(&key).check(key, Instant::now()) {
        Seen::New => {}
        Seen::InFlight => return None,
        Seen::Done(reply) => {
            let _ = sock.send_to(&reply, from);
            return None;
        }
    }
    Some(Job {
        runtime: rt.clone(),
        client: index,
        request,
        key,
        from,
        socket: sock.clone(),
    })
}

/// Whether deciding `r` may send an SMS, and so wait for a gateway: an
/// Access-Request without State (a first round in challenge mode, where
/// the password is also checked; any append-mode login), or with a State
/// and an empty answer (a request for a new code), when the runtime's
/// sends or password checks can wait at all (`waits`:
/// [`Runtime::first_rounds_wait`]). Everything else (a code with its
/// State, Status-Server) is decided by the worker that read it.
fn may_send(r: &Request, waits: bool) -> bool {
    waits
        && r.code == RequestCode::AccessRequest
        && (r.state.is_none() || r.user_password.as_ref().is_none_or(|p| p.is_empty()))
}

/// Hands `job` to the send lane; when the lane is full, drops it (see the
/// module doc) so that the NAS's retransmit is decided afresh.
fn hand_over(shared: &Shared, lane: &Arc<Lane>, job: Job) {
    let Err(job) = lane.submit(job) else {
        return;
    };
    shared.dedup.shard(&job.key).forget(&job.key);
    shared.metrics.request(Tally::DroppedOverload);
    limited_log(
        &shared.full_log,
        &job.runtime,
        "send_lane_full",
        |suppressed| {
            format!(
                "{} requests are waiting for the SMS gateway (radius.max_pending_sends = {}): \
             dropped a login from client {} ({}), the NAS retransmits ({suppressed} more dropped \
             since the last line)",
                lane.pending(),
                lane.max(),
                job.runtime.clients[job.client].spec.name,
                job.from
            )
        },
    );
}

/// An engine for `rt`'s generation on `store`, a handle of its store;
/// `None` (logged) if it cannot open.
fn open_engine(shared: &Shared, rt: &Runtime, store: Box<dyn Store>) -> Option<Engine> {
    match Engine::open_shared(
        rt.config.clone(),
        &rt.log_options(),
        store,
        &rt.directories,
        &rt.sms,
    ) {
        Ok(mut e) => {
            if let Some(r) = &rt.receipts {
                e.set_receipt_sink(r.registry.clone());
            }
            e.set_send_observer(shared.metrics.clone());
            e.set_count_batch(shared.counts.clone());
            Some(e)
        }
        Err(e) => {
            rt.log(
                Level::Error,
                &event("unavailable", format!("cannot open the engine: {e}")),
            );
            None
        }
    }
}

/// Decides `job` and has the reply sent once the store has committed what
/// the decision relies on.
fn answer(shared: &Arc<Shared>, engine: &mut EngineSlot, job: Job) {
    let rt = &job.runtime;
    if engine.as_ref().map(|(g, _)| *g) != Some(rt.generation) {
        *engine = open_engine(shared, rt, rt.store.handle()).map(|e| (rt.generation, e));
    }
    decide(shared, engine.as_ref().map(|(_, e)| e), job);
}

/// Decides `job` with `engine` (`None`: it could not be opened) and has
/// the reply sent once the store has committed what the decision relies
/// on.
fn decide(shared: &Arc<Shared>, engine: Option<&Engine>, job: Job) {
    let rt = &job.runtime;
    let client = &rt.clients[job.client];
    let decision = match engine {
        Some(e) => {
            let info = ClientInfo {
                name: client.spec.name.clone(),
                mode: client.spec.mode,
            };
            catch_unwind(AssertUnwindSafe(|| {
                handler::handle(e, &*rt.primary, &info, &job.request, job.from.ip())
            }))
            .unwrap_or_else(|_| {
                rt.log(
                    Level::Error,
                    &event(
                        "panic",
                        "internal error while handling a request; rejected".into(),
                    ),
                );
                handler::reply(Outcome::Failed(Broken::Panic))
            })
        }
        None => handler::reply(Outcome::Failed(Broken::NoEngine)),
    };
    let decided = decision.word();
    let outcome = match &decision {
        Decision::Accept { .. } => Tally::Accept,
        Decision::Reject { .. } => Tally::Reject,
        Decision::Challenge { .. } => Tally::Challenge,
    };
    let reply = to_reply(decision);
    let mut bytes = wire::encode_reply(&job.request, &reply, client.secret.expose());
    bytes.shrink_to_fit();
    // Sent once the store has committed what the decision relies on (a
    // consumed code, a new challenge): never an answer the disk could
    // take back.
    let shared = shared.clone();
    let runtime = job.runtime.clone();
    runtime.store.defer(Box::new(move |committed| {
        let bytes = match committed {
            Ok(()) => {
                shared.metrics.request(outcome);
                bytes
            }
            Err(why) => {
                shared.metrics.request(Tally::Reject);
                let rt = &job.runtime;
                let client = &rt.clients[job.client].spec.name;
                rt.log(
                    Level::Error,
                    &store_failed(why, &job.request, client, job.from, decided),
                );
                let reject = to_reply(handler::reply(Outcome::Failed(Broken::RolledBack)));
                wire::encode_reply(
                    &job.request,
                    &reject,
                    rt.clients[job.client].secret.expose(),
                )
            }
        };
        // The decision's log line goes out before its reply.
        outgoing::log_first(&job.runtime.sinks);
        shared
            .dedup
            .shard(&job.key)
            .complete(job.key, bytes.clone(), Instant::now());
        outgoing::queue(outgoing::Reply {
            socket: job.socket,
            to: job.from,
            bytes,
        });
        shared.handled.fetch_add(1, Ordering::Relaxed);
    }));
}

/// The store's SMS counters of today, for a scrape of `/metrics`; a
/// store that cannot say is logged (at warning) and the scrape goes on
/// without them.
fn today_s_counters(shared: &Shared) -> Result<smsotp_core::store::Counts, ()> {
    // What was counted since the last write, too.
    flush_counts(shared);
    let rt = shared.runtime();
    let now = smsotp_core::clock::Clock::now_ms(&smsotp_core::clock::SystemClock);
    let read = rt
        .store
        .handle()
        .counters(smsotp_core::store::Day::of(now), now);
    done_with_store(&rt);
    read.map_err(|e| {
        rt.log(
            Level::Warning,
            &event(
                "metrics",
                format!("cannot read the SMS counters for /metrics: {e}"),
            ),
        )
    })
}

/// The log line for a request whose decision was logged but whose writes
/// were rolled back: it names the request as that line did (the same
/// login context), and says the decision did not stand.
fn store_failed(
    why: &str,
    request: &Request,
    client: &str,
    from: SocketAddr,
    decided: &'static str,
) -> Event {
    let mut e = match handler::login_context(client, request, from.ip()) {
        Some(ctx) => ctx.event("store_failed"),
        None => Event {
            event: "store_failed",
            service: format!("radius:{client}"),
            rhost: Some(from.ip().to_string()),
            ..Event::default()
        },
    };
    e.outcome = Some("failure");
    e.reason = Some("store_failed");
    e.detail = Some(format!(
        "{why}; the {decided} logged for this request was not stored: rejected instead"
    ));
    e
}

/// The wire form of a decision.
fn to_reply(d: Decision) -> Reply {
    match d {
        Decision::Accept { message } => Reply {
            code: Some(ReplyCode::Accept),
            reply_message: message,
            ..Reply::default()
        },
        Decision::Reject { message } => Reply {
            code: Some(ReplyCode::Reject),
            reply_message: message,
            ..Reply::default()
        },
        Decision::Challenge {
            state,
            message,
            session_timeout,
        } => Reply {
            code: Some(ReplyCode::Challenge),
            reply_message: Some(message),
            state: Some(state.to_vec()),
            session_timeout: Some(session_timeout),
        },
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
