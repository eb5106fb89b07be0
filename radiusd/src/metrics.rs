//! `GET /metrics` (`radius.metrics`): what smsotp-radiusd and the store
//! count, in the Prometheus text format (version 0.0.4, encoded by the
//! `prometheus-client` crate).
//!
//! Three kinds of numbers:
//! - today's SMS counters of the store (`smsotp status`'s numbers, read
//!   at each scrape: every host on a shared store shows the same; they
//!   start again from 0 at 00:00 UTC, which Prometheus reads as a counter
//!   reset): `smsotp_sms_sent_total`, `_failed_total`, `_resent_total`
//!   by provider and country, `_refused_total` and `_monitored_total` by
//!   country and limit, `_receipts_total` by provider, country and state;
//! - this process's requests by outcome since it started
//!   (`smsotp_radius_requests_total{outcome=…}`, [`Outcome`]);
//! - the time of each send through the provider chain, a histogram per
//!   provider (`smsotp_sms_send_seconds`), fed by the engines'
//!   [`SendObserver`] hook.
//!
//! The HTTP side is deliberately small: one thread, one connection at a
//! time, the request head (at most [`HEAD_MAX`] bytes, parsed by
//! `httparse`) read within [`CLIENT_TIME`], the answer written within it
//! too, then the connection closed. A slow or silent client holds the
//! thread for at most that long; nothing else waits on it. Only `GET
//! /metrics` is served; other paths are 404, other methods 405.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::encoding::prometheus_text::{encode, CONTENT_TYPE};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use smsotp_core::flow::SendObserver;
use smsotp_core::store::{Counted, Counts};

/// The longest request head read.
pub const HEAD_MAX: usize = 8192;
/// How long one client may take to send its request, and again to read
/// the answer.
pub const CLIENT_TIME: Duration = Duration::from_secs(5);
/// How often the idle thread looks whether it should stop.
const POLL: Duration = Duration::from_millis(100);

/// What became of one datagram, as `smsotp_radius_requests_total`'s
/// `outcome` label names it. A retransmit answered again from the
/// duplicate cache, or dropped while its first copy is decided, is not
/// counted again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered Access-Accept (Status-Server's answer included).
    Accept,
    /// Answered Access-Reject (a decision rolled back by the store too).
    Reject,
    /// Answered Access-Challenge.
    Challenge,
    /// Dropped: Message-Authenticator missing or wrong, or Proxy-State
    /// without it.
    DroppedBadAuthenticator,
    /// Dropped: not a well-formed request we serve.
    DroppedMalformed,
    /// Dropped: no `[[radius.client]]` matches its source.
    DroppedUnknownClient,
    /// Dropped unanswered: its queue or the send lane was full.
    DroppedOverload,
}

impl Outcome {
    /// The label value.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Accept => "access_accept",
            Outcome::Reject => "access_reject",
            Outcome::Challenge => "access_challenge",
            Outcome::DroppedBadAuthenticator => "dropped_bad_authenticator",
            Outcome::DroppedMalformed => "dropped_malformed",
            Outcome::DroppedUnknownClient => "dropped_unknown_client",
            Outcome::DroppedOverload => "dropped_overload",
        }
    }

    const ALL: [Outcome; 7] = [
        Outcome::Accept,
        Outcome::Reject,
        Outcome::Challenge,
        Outcome::DroppedBadAuthenticator,
        Outcome::DroppedMalformed,
        Outcome::DroppedUnknownClient,
        Outcome::DroppedOverload,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SendLabels {
    provider: String,
    country: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    country: String,
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiptLabels {
    provider: String,
    country: String,
    state: String,
}

fn send_histogram() -> Histogram {
    // 25 ms to 25.6 s: an outbox line to a gateway at its time-out.
    Histogram::new(exponential_buckets(0.025, 2.0, 11))
}

/// What this process counts across reloads: requests by outcome and send
/// times. Cheap to share; every method takes `&self`.
pub struct Metrics {
    requests: Family<OutcomeLabels, Counter>,
    send_seconds: Family<ProviderLabels, Histogram, fn() -> Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let requests: Family<OutcomeLabels, Counter> = Family::default();
        // Every outcome shows from the start, at 0.
        for o in Outcome::ALL {
            let _ = requests.get_or_create(&OutcomeLabels { outcome: o.word() });
        }
        Metrics {
            requests,
            send_seconds: Family::new_with_constructor(send_histogram as fn() -> Histogram),
        }
    }
}

impl Metrics {
    /// Counts one datagram's outcome.
    pub fn request(&self, o: Outcome) {
        self.requests
            .get_or_create(&OutcomeLabels { outcome: o.word() })
            .inc();
    }

    /// The text of one scrape: this process's numbers and `counters`, the
    /// store's counters of today (`Err`: they could not be read; the
    /// scrape says so in `smsotp_sms_counters_up 0` and shows the rest).
    pub fn render(&self, counters: Result<&Counts, ()>) -> String {
        let mut reg = Registry::with_prefix("smsotp");
        reg.register(
            "radius_requests",
            "RADIUS datagrams by what became of them, since this process started",
            self.requests.clone(),
        );
        reg.register(
            "sms_send_seconds",
            "Time of each send through the provider chain, by the provider that ended it",
            self.send_seconds.clone(),
        );
        let up: Gauge = Gauge::default();
        up.set(i64::from(counters.is_ok()));
        reg.register(
            "sms_counters_up",
            "1 if the store's SMS counters could be read for this scrape",
            up,
        );
        let sent = Family::<SendLabels, Counter>::default();
        let failed = Family::<SendLabels, Counter>::default();
        let resent = Family::<SendLabels, Counter>::default();
        let refused = Family::<LimitLabels, Counter>::default();
        let monitored = Family::<LimitLabels, Counter>::default();
        let receipts = Family::<ReceiptLabels, Counter>::default();
        for (k, n) in counters.map(|c| c.as_slice()).unwrap_or_default() {
            let send = || SendLabels {
                provider: k.provider.clone(),
                country: k.country.clone(),
            };
            let limit = |l: smsotp_core::store::LimitKind| LimitLabels {
                country: k.country.clone(),
                limit: l.key().to_owned(),
            };
            let c = match &k.what {
                Counted::Sent => sent.get_or_create_owned(&send()),
                Counted::Failed => failed.get_or_create_owned(&send()),
                Counted::Resent => resent.get_or_create_owned(&send()),
                Counted::Refused(l) => refused.get_or_create_owned(&limit(*l)),
                Counted::Monitored(l) => monitored.get_or_create_owned(&limit(*l)),
                Counted::Receipt(s) => receipts.get_or_create_owned(&ReceiptLabels {
                    provider: k.provider.clone(),
                    country: k.country.clone(),
                    state: s.clone(),
                }),
            };
            c.inc_by(*n);
        }
        for (name, help, fam) in [
            ("sms_sent", "SMS a provider took today (UTC), from the store", sent),
            (
                "sms_failed",
                "SMS a provider did not take today (UTC), from the store",
                failed,
            ),
            (
                "sms_resent",
                "Codes sent again through this provider after a failed delivery receipt today (UTC)",
                resent,
            ),
        ] {
            reg.register(name, help, fam);
        }
        reg.register(
            "sms_refused",
            "SMS refused by an enforced limit today (UTC), from the store",
            refused,
        );
        reg.register(
            "sms_monitored",
            "SMS sent over a limit in monitor mode today (UTC), from the store",
            monitored,
        );
        reg.register(
            "sms_receipts",
            "Delivery receipts by state today (UTC), from the store",
            receipts,
        );
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &reg);
        out
    }
}

impl SendObserver for Metrics {
    fn send_took(&self, provider: &str, took: Duration, _sent: bool) {
        self.send_seconds
            .get_or_create(&ProviderLabels {
                provider: provider.to_owned(),
            })
            .observe(took.as_secs_f64());
    }
}

/// Binds the metrics address (at start, so a taken port fails the start
/// with a message, as the RADIUS addresses do).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves `listener` on a thread of its own until `stop`: each scrape
/// renders `metrics` with what `counters` reads from the store then.
pub fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    counters: Box<dyn Fn() -> Result<Counts, ()> + Send>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = one(conn, &|| {
                            metrics.render(counters().as_ref().map_err(|_| ()))
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(POLL);
                    }
                    // A connection reset before accept, out of descriptors:
                    // wait a little and go on.
                    Err(_) => std::thread::sleep(POLL),
                }
            }
        })
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Metrics,
    NotFound,
    WrongMethod,
    Bad,
    TooLarge,
}

/// Reads what `head` asks for; `None` while it is incomplete.
fn asked(head: &[u8]) -> Option<Asked> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Partial) if head.len() >= HEAD_MAX => Some(Asked::TooLarge),
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => Some(Asked::TooLarge),
        Err(_) => Some(Asked::Bad),
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("");
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            Some(match (req.method, path) {
                (Some("GET"), "/metrics") => Asked::Metrics,
                (_, "/metrics") => Asked::WrongMethod,
                _ => Asked::NotFound,
            })
        }
    }
}

/// Answers one connection: reads the head within [`CLIENT_TIME`], writes
/// the answer within it again, closes.
fn one(mut conn: TcpStream, render: &dyn Fn() -> String) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_write_timeout(Some(CLIENT_TIME))?;
    let deadline = Instant::now() + CLIENT_TIME;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let what = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        conn.set_read_timeout(Some(left))?;
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n.min(HEAD_MAX - head.len().min(HEAD_MAX))]);
        if let Some(a) = asked(&head) {
            break a;
        }
    };
    let (status, ctype, body) = match what {
        Asked::Metrics => ("200 OK", CONTENT_TYPE, render()),
        Asked::NotFound => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "only GET /metrics is served here\n".into(),
        ),
        Asked::WrongMethod => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "use GET\n".into(),
        ),
        Asked::Bad => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "not an HTTP request\n".into(),
        ),
        Asked::TooLarge => (
            "431 Request Header Fields Too Large",
            "text/plain; charset=utf-8",
            "request head too large\n".into(),
        ),
    };
    let allow = if what == Asked::WrongMethod {
        "Allow: GET\r\n"
    } else {
        ""
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(reply.as_bytes())?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use smsotp_core::store::{CounterKey, LimitKind};

    #[test]
    fn heads_are_read_as_what_they_ask() {
        assert_eq!(
            asked(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Asked::Metrics)
        );
        assert_eq!(
            asked(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Some(Asked::Metrics)
        );
        assert_eq!(asked(b"GET / HTTP/1.1\r\n\r\n"), Some(Asked::NotFound));
        assert_eq!(
            asked(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Asked::WrongMethod)
        );
        assert_eq!(asked(b"GET /metr"), None);
        assert_eq!(asked(b"\x16\x03\x01 hello"), Some(Asked::Bad));
        let long = format!("GET /metrics HTTP/1.1\r\nX: {}", "a".repeat(HEAD_MAX));
        assert_eq!(asked(long.as_bytes()), Some(Asked::TooLarge));
    }

    #[test]
    fn a_scrape_shows_outcomes_send_times_and_the_store_s_counters() {
        let m = Metrics::default();
        m.request(Outcome::Challenge);
        m.request(Outcome::Challenge);
        m.request(Outcome::DroppedUnknownClient);
        m.send_took("sms1", Duration::from_millis(30), true);
        let k = |p: &str, c: &str, w| CounterKey::new(p, Some(c), w);
        let counts = vec![
            (k("-", "NG", Counted::Refused(LimitKind::PerCountry)), 3),
            (k("sms1", "GB", Counted::Sent), 2),
            (k("smpp", "GB", Counted::Receipt("UNDELIV".into())), 1),
        ];
        let text = m.render(Ok(&counts));
        for line in [
            "smsotp_radius_requests_total{outcome=\"access_challenge\"} 2",
            "smsotp_radius_requests_total{outcome=\"dropped_unknown_client\"} 1",
            "smsotp_radius_requests_total{outcome=\"access_accept\"} 0",
            "smsotp_sms_send_seconds_count{provider=\"sms1\"} 1",
            "smsotp_sms_send_seconds_bucket{provider=\"sms1\",le=\"0.05\"} 1",
            "smsotp_sms_counters_up 1",
            "smsotp_sms_sent_total{provider=\"sms1\",country=\"GB\"} 2",
            "smsotp_sms_refused_total{country=\"NG\",limit=\"sms_per_country\"} 3",
            "smsotp_sms_receipts_total{provider=\"smpp\",country=\"GB\",state=\"UNDELIV\"} 1",
            "# TYPE smsotp_sms_send_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        let text = m.render(Err(()));
        assert!(text.contains("smsotp_sms_counters_up 0"), "{text}");
        assert!(!text.contains("smsotp_sms_sent_total{"), "{text}");
    }

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_404_otherwise_and_a_silent_client_does_not_block_it() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let m = Arc::new(Metrics::default());
        m.request(Outcome::Accept);
        let stop = Arc::new(AtomicBool::new(false));
        let t = serve(
            l,
            m,
            Box::new(|| Ok(vec![(CounterKey::new("web", Some("US"), Counted::Sent), 4)])),
            stop.clone(),
        )
        .unwrap();
        let r = get(addr, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")),
            "{r}"
        );
        assert!(
            r.contains("\nsmsotp_sms_sent_total{provider=\"web\",country=\"US\"} 4\n"),
            "{r}"
        );
        assert!(r.contains("{outcome=\"access_accept\"} 1\n"), "{r}");
        let r = get(addr, "GET /admin HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        // A client that connects and says nothing is cut off after
        // CLIENT_TIME; the one after it is answered then.
        let silent = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        let r = get(addr, "GET /metrics HTTP/1.0\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        let waited = started.elapsed();
        assert!(waited < CLIENT_TIME + Duration::from_secs(3), "{waited:?}");
        drop(silent);
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
    }
}
