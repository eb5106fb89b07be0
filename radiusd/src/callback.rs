//! The HTTP status callbacks of `[receipts] listen`: one thread, one
//! request at a time, answering on the path of each HTTP provider's
//! `status_callback`.
//!
//! A reverse proxy in front does TLS and forwards those paths; this
//! serves plain HTTP, meant for a loopback address. Each request is
//! routed by path to its provider (none: 404), its body capped at
//! [`MAX_BODY`] (413) and given a few seconds to arrive (tiny_http sets
//! no time-outs on its connections: a client slow to send its headers
//! holds only a tiny_http connection thread; see `read_body` for the
//! body), authenticated and read by the core
//! ([`smsotp_core::sms::http::callback::read_callback`]: a missing or
//! wrong signature or token is 403 and an audit line without id or
//! number), and its report fed to the same [`Registry`] the SMPP
//! receipts go to, which counts it and hands a failure in time to the
//! resend thread. A report about a message not held here is counted
//! and answered 200 all the same: gateways retry anything else.
//!
//! The listener is bound once at start (`bind`) and lives as long as
//! the process; each request is handled with the configuration in force
//! (a reload changes the providers and their paths, not the address).
//!
//! [`Registry`]: crate::receipts::Registry

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smsotp_core::audit::Level;
use smsotp_core::files;
use smsotp_core::sms::http::callback::{read_callback, CallbackError, CallbackRequest};
use smsotp_core::sms::ProviderSpec;

use crate::runtime::Runtime;
use crate::server::event;

/// The largest callback body read; a gateway's report is far smaller.
pub const MAX_BODY: usize = 16 * 1024;
/// How long the loop waits for a request before it looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);
/// The bodies tiny_http reads itself before it hands a request over.
const BUFFERED: usize = 1024;
/// How long a longer body may take to arrive.
const READ_FOR: Duration = Duration::from_secs(5);
/// The most such bodies being read at once.
const MAX_READERS: usize = 4;

/// The listener of `receipts.listen`.
pub struct Listener(tiny_http::Server);

impl Listener {
    /// The address it listens on (for tests that bind port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.0.server_addr().to_ip()
    }
}

/// Binds `addr` for the callbacks.
pub fn bind(addr: SocketAddr) -> std::io::Result<Listener> {
    tiny_http::Server::http(addr)
        .map(Listener)
        .map_err(std::io::Error::other)
}

/// What one callback got, for the response and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Read and counted (whether or not a code was held for it).
    Taken,
    /// No provider answers on this path.
    NotFound,
    /// Not POST or GET.
    BadMethod,
    /// The body is over [`MAX_BODY`].
    TooLarge,
    /// Signature or token missing or wrong.
    Forbidden,
    /// Authenticated but unreadable.
    Malformed,
    /// The provider's secret file cannot be read (logged).
    Unavailable,
}

impl Answer {
    fn status(self) -> u16 {
        match self {
            Answer::Taken => 200,
            Answer::NotFound => 404,
            Answer::BadMethod => 405,
            Answer::TooLarge => 413,
            Answer::Forbidden => 403,
            Answer::Malformed => 400,
            Answer::Unavailable => 503,
        }
    }
}

/// Serves callbacks until `stop`, with the runtime `current` returns at
/// each request. Nothing here should panic; if something does, the
/// request gets 503 and the loop goes on.
pub fn serve(listener: Listener, current: &dyn Fn() -> Arc<Runtime>, stop: &AtomicBool) {
    let readers = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        let req = match listener.0.recv_timeout(POLL) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                current().log(
                    Level::Error,
                    &event(
                        "receipts",
                        format!("the status callback listener failed: {e}; callbacks are no longer answered"),
                    ),
                );
                return;
            }
        };
        let rt = current();
        let Some((req, body)) = read_body(req, &readers) else {
            continue;
        };
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let body = body?;
            let headers: Vec<(String, String)> = req
                .headers()
                .iter()
                .map(|h| {
                    (
                        h.field.as_str().as_str().to_owned(),
                        h.value.as_str().to_owned(),
                    )
                })
                .collect();
            Ok(handle(
                &rt,
                req.method().as_str(),
                req.url(),
                &headers,
                &body,
            ))
        }));
        let answer = match answer {
            Ok(Ok(a) | Err(a)) => a,
            Err(_) => {
                rt.log(
                    Level::Error,
                    &event(
                        "panic",
                        "internal error while reading a status callback".into(),
                    ),
                );
                Answer::Unavailable
            }
        };
        let _ = req.respond(tiny_http::Response::empty(answer.status()));
        rt.sinks.flush();
    }
}

/// The body of `req`, at most [`MAX_BODY`]. tiny_http has read bodies up
/// to [`BUFFERED`] before handing the request over; a longer one (or one
/// without a length) is read on a helper thread for at most [`READ_FOR`],
/// so a client that stalls mid-body cannot hold up the callbacks behind
/// it; at most [`MAX_READERS`] such reads at once, more get 503. `None`:
/// the request was answered or given up.
fn read_body(
    mut req: tiny_http::Request,
    readers: &Arc<AtomicUsize>,
) -> Option<(tiny_http::Request, Result<Vec<u8>, Answer>)> {
    fn read(req: &mut tiny_http::Request) -> Result<Vec<u8>, Answer> {
        let mut body = Vec::new();
        let r = req
            .as_reader()
            .take(MAX_BODY as u64 + 1)
            .read_to_end(&mut body);
        match r {
            Ok(_) if body.len() <= MAX_BODY => Ok(body),
            Ok(_) => Err(Answer::TooLarge),
            Err(_) => Err(Answer::Malformed),
        }
    }
    match req.body_length() {
        Some(n) if n > MAX_BODY => return Some((req, Err(Answer::TooLarge))),
        Some(n) if n <= BUFFERED => {
            let body = read(&mut req);
            return Some((req, body));
        }
        _ => {}
    }
    if readers.load(Ordering::Relaxed) >= MAX_READERS {
        let _ = req.respond(tiny_http::Response::empty(Answer::Unavailable.status()));
        return None;
    }
    readers.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let count = readers.clone();
    let spawned = std::thread::Builder::new()
        .name("callback-body".into())
        .spawn(move || {
            let body = read(&mut req);
            // Gone when the wait was over: the request is dropped unanswered.
            let _ = tx.send((req, body));
            count.fetch_sub(1, Ordering::Relaxed);
        });
    if spawned.is_err() {
        // The request went with the closure: dropped unanswered.
        readers.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    rx.recv_timeout(READ_FOR).ok()
}

/// One callback, already read: routes it, authenticates it and feeds it
/// to the registry.
pub fn handle(
    rt: &Runtime,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Answer {
    if method != "POST" && method != "GET" {
        return Answer::BadMethod;
    }
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let found = rt.config.providers.iter().find_map(|p| match p {
        ProviderSpec::Http(h) => h
            .status_callback
            .as_ref()
            .filter(|c| c.path == path)
            .map(|c| (h.name.as_str(), c)),
        _ => None,
    });
    let (Some((provider, cb)), Some(receipts)) = (found, &rt.receipts) else {
        return Answer::NotFound;
    };
    let registry = &receipts.registry;
    let secret = match files::read_secret(&cb.secret_file) {
        Ok(s) => s,
        Err(e) => {
            registry.log(
                Level::Error,
                "receipt_failed",
                format!(
                    "provider={provider}: cannot check a status callback: {e}; \
                     put the key in that file (owner root, mode 0600)"
                ),
            );
            return Answer::Unavailable;
        }
    };
    let req = CallbackRequest {
        query,
        headers,
        body,
    };
    match read_callback(cb, secret.expose(), &req) {
        Ok(report) => {
            registry.on_status(provider, report.message_id, report.state, Instant::now());
            Answer::Taken
        }
        Err(CallbackError::Forbidden(why)) => {
            registry.log(
                Level::Warning,
                "receipt_forbidden",
                format!("provider={provider}: status callback refused (403): {why}"),
            );
            Answer::Forbidden
        }
        Err(e) => {
            registry.log(
                Level::Warning,
                "receipt_unreadable",
                format!("provider={provider}: {e}; answered 400"),
            );
            Answer::Malformed
        }
    }
}
