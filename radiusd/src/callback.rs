//! The HTTP status callbacks of `[receipts] listen`: one thread, one
//! request at a time, answering on the path of each HTTP provider's
//! `status_callback`.
//!
//! A reverse proxy in front does TLS and forwards those paths; this
//! serves plain HTTP, meant for a loopback address. Each request is
//! routed by path to its provider (none: 404), its body capped at
//! [`MAX_BODY`] (413), authenticated and read by the core
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
use std::sync::atomic::{AtomicBool, Ordering};
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
/// request gets no answer and the loop goes on.
pub fn serve(listener: Listener, current: &dyn Fn() -> Arc<Runtime>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let mut req = match listener.0.recv_timeout(POLL) {
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
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let method = req.method().as_str().to_owned();
            let url = req.url().to_owned();
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
            let declared = req.body_length();
            let mut body = Vec::new();
            let over = match declared {
                Some(n) if n > MAX_BODY => true,
                _ => {
                    let r = req
                        .as_reader()
                        .take(MAX_BODY as u64 + 1)
                        .read_to_end(&mut body);
                    r.is_err() || body.len() > MAX_BODY
                }
            };
            if over {
                return Answer::TooLarge;
            }
            handle(&rt, &method, &url, &headers, &body)
        }));
        let answer = answer.unwrap_or_else(|_| {
            rt.log(
                Level::Error,
                &event(
                    "panic",
                    "internal error while reading a status callback".into(),
                ),
            );
            Answer::Unavailable
        });
        let _ = req.respond(tiny_http::Response::empty(answer.status()));
        rt.sinks.flush();
    }
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
