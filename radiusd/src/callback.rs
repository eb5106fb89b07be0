//! The HTTP status callbacks of `[receipts] listen`: one thread, one
//! request at a time, answering on the path of each HTTP provider's
//! `status_callback`.
//!
//! A reverse proxy in front does TLS and forwards those paths; this
//! serves plain HTTP, meant for a loopback address, through
//! [`crate::http`] (one connection at a time, the whole request read
//! within a few seconds, bodies capped at [`MAX_BODY`]: 413). Each
//! request is routed by path to its provider (none: 404), authenticated
//! and read by the core
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

use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use smsotp_core::audit::Level;
use smsotp_core::files;
use smsotp_core::sms::http::callback::{read_callback, CallbackError, CallbackRequest};
use smsotp_core::sms::ProviderSpec;

use crate::http::{Request, Response};
use crate::runtime::Runtime;
use crate::server::event;

/// The largest callback body read; a gateway's report is far smaller.
pub const MAX_BODY: usize = 16 * 1024;
pub use crate::http::bind;

/// What one callback got, for the response and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Read and counted (whether or not a code was held for it).
    Taken,
    /// No provider answers on this path.
    NotFound,
    /// Not POST or GET.
    BadMethod,
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
            Answer::Forbidden => 403,
            Answer::Malformed => 400,
            Answer::Unavailable => 503,
        }
    }
}

/// Serves callbacks on `listener` on a thread of its own until `stop`,
/// with the runtime `current` returns at each request. Nothing here
/// should panic; if something does, the request gets 503 and the loop
/// goes on.
pub fn serve(
    listener: TcpListener,
    current: impl Fn() -> Arc<Runtime> + Send + 'static,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    crate::http::serve(
        "callbacks",
        listener,
        MAX_BODY,
        stop,
        move |req: &Request| {
            let rt = current();
            let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handle(&rt, &req.method, &req.target, &req.headers, &req.body)
            }))
            .unwrap_or_else(|_| {
                rt.log(
                    Level::Error,
                    &event(
                        "panic",
                        "internal error while reading a status callback".into(),
                    ),
                );
                Answer::Unavailable
            });
            rt.sinks.flush();
            Response::text(answer.status(), "")
        },
    )
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
