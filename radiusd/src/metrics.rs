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
//! Served by [`crate::http`] (one thread, one connection at a time,
//! bounded in time and size): only `GET /metrics`; other paths are 404,
//! other methods 405.

use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text::{encode, CONTENT_TYPE};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use smsotp_core::flow::SendObserver;
use smsotp_core::store::{Counted, Counts};

pub use crate::http::bind;
use crate::http::{Request, Response};

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

/// Serves `listener` on a thread of its own until `stop`: each scrape
/// renders `metrics` with what `counters` reads from the store then.
pub fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    counters: Box<dyn Fn() -> Result<Counts, ()> + Send>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    crate::http::serve("metrics", listener, 0, stop, move |r: &Request| {
        answer(r, &|| metrics.render(counters().as_ref().map_err(|_| ())))
    })
}

/// The answer to `r`: the metrics for `GET /metrics`, else 404 or 405.
fn answer(r: &Request, render: &dyn Fn() -> String) -> Response {
    match (r.method.as_str(), r.path()) {
        ("GET", "/metrics") => Response {
            status: 200,
            content_type: CONTENT_TYPE,
            body: render(),
            allow: None,
        },
        (_, "/metrics") => Response {
            allow: Some("GET"),
            ..Response::text(405, "use GET\n")
        },
        _ => Response::text(404, "only GET /metrics is served here\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::CLIENT_TIME;
    use smsotp_core::store::{CounterKey, LimitKind};
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    #[test]
    fn only_get_metrics_is_served() {
        let req = |method: &str, target: &str| Request {
            method: method.into(),
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        let render = || "m 1\n".to_owned();
        let r = answer(&req("GET", "/metrics?x=1"), &render);
        assert_eq!((r.status, r.body.as_str()), (200, "m 1\n"));
        assert_eq!(r.content_type, CONTENT_TYPE);
        assert_eq!(answer(&req("GET", "/"), &render).status, 404);
        let r = answer(&req("POST", "/metrics"), &render);
        assert_eq!((r.status, r.allow), (405, Some("GET")));
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
