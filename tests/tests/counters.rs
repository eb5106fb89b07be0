//! The SMS counters end to end (issue #21 point 5): smsotp-radiusd, asked
//! by radclient, counts what it sends and what a limit refuses in the
//! store; `smsotp status --json` on the same config reads them back, and
//! the server's `/metrics` (`radius.metrics`) shows the same numbers with
//! the requests by outcome and the send times.
//!
//! Needs what tests/radius.rs needs (radclient) and `cargo build
//! --workspace`. The server listens on loopback only, is bounded in time
//! and stopped on drop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use smsotp_e2e::radiusd::{radclient, ClientSpec, Radiusd, ServerSpec};
use smsotp_e2e::{run_tool, Scratch};

const SECRET: &str = "e2e-secret-counters-5b1e";
const NAS_PASSWORD: &str = "nas-pw-2291";
/// alice and dave share one number; its limit is one SMS a day.
const SHARED_PHONE: &str = "+12015550123";
const SMS_WAIT: Duration = Duration::from_secs(20);
const TOOL_LIMIT: Duration = Duration::from_secs(20);

fn attrs(user: &str, password: &str, state: Option<&[u8]>) -> String {
    let mut t = format!(
        "User-Name = \"{user}\"\nUser-Password = \"{password}\"\nMessage-Authenticator = 0x00\n"
    );
    if let Some(s) = state {
        let hex: String = s.iter().map(|b| format!("{b:02x}")).collect();
        t.push_str(&format!("State = 0x{hex}\n"));
    }
    t
}

/// A TCP port free on 127.0.0.1 right now.
fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// One HTTP GET of `path`, bounded in time: (status line, whole answer).
fn get(port: u16, path: &str) -> (String, String) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).expect("read the answer");
    let status = out.lines().next().unwrap_or_default().to_owned();
    (status, out)
}

/// The value of the sample `name{labels}` in a scrape, if it is there.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A login through radclient (challenge, then the code), a second account
/// of the same number refused by `sms_per_number = "1/1d"`, a packet from
/// an unknown client and one with the wrong secret: `smsotp status
/// --json` shows one SMS sent and one refused by sms_per_number, and
/// `/metrics` the same with the requests by outcome and one send time.
#[test]
fn status_and_metrics_show_what_radius_logins_sent_and_what_a_limit_refused() {
    let scratch = Scratch::new();
    scratch.phones(&[
        ("alice", SHARED_PHONE),
        ("dave", SHARED_PHONE),
        ("erin", "+12015550124"),
        ("frank", "+12015550125"),
    ]);
    let metrics_port = free_tcp_port();
    let mut spec = ServerSpec::new(vec![ClientSpec::new("vpn", "127.0.0.1", SECRET)])
        .extra("[limits]\nsms_per_number = \"1/1d\"\n");
    spec.radius_extra = format!("metrics = \"127.0.0.1:{metrics_port}\"\n");
    let mut srv = Radiusd::start(&scratch, spec);
    let outbox = scratch.outbox();

    // Nothing counted yet: every outcome at 0, the counters readable.
    let (status, text) = get(metrics_port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{text}");
    assert_eq!(
        sample(
            &text,
            "smsotp_radius_requests_total{outcome=\"access_challenge\"}"
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(sample(&text, "smsotp_sms_counters_up"), Some(1.0), "{text}");

    // alice: challenge, SMS, code, accept.
    let first = srv.radclient("vpn", "auth", &attrs("alice", NAS_PASSWORD, None));
    first.assert_received("Access-Challenge", &srv);
    let code = outbox.wait_beyond(0, SMS_WAIT).code();
    let second = srv.radclient("vpn", "auth", &attrs("alice", &code, Some(&first.state())));
    second.assert_received("Access-Accept", &srv);
    // dave, same number: refused by the number's limit, nothing sent.
    let refused = srv.radclient("vpn", "auth", &attrs("dave", NAS_PASSWORD, None));
    refused.assert_received("Access-Reject", &srv);
    assert_eq!(outbox.count(), 1, "no second SMS");
    // From ::1, which no client has: dropped. With the wrong secret:
    // Message-Authenticator does not verify, dropped.
    let unknown = radclient(
        &format!("[::1]:{}", srv.port),
        "auth",
        &srv.secret_file("vpn"),
        &attrs("alice", NAS_PASSWORD, None),
        Duration::from_secs(1),
    );
    assert!(unknown.no_reply(), "{}", unknown.output);
    let wrong = scratch.path("wrong-secret");
    std::fs::write(&wrong, "not-the-shared-secret-at-all").unwrap();
    let bad = radclient(
        &srv.v4_text(),
        "auth",
        &wrong,
        &attrs("alice", NAS_PASSWORD, None),
        Duration::from_secs(1),
    );
    assert!(bad.no_reply(), "{}", bad.output);

    // smsotp status --json, on the server's own config and store.
    // (The server writes its counts once a second.)
    let j = smsotp_e2e::status_when(&scratch, |j| {
        j["counters"]["total"]["sent"] == 1
            && j["counters"]["total"]["refused"]["sms_per_number"] == 1
    });
    let c = &j["counters"];
    assert_eq!(c["kept_days"], 8, "{j}");
    assert_eq!(c["total"]["sent"], 1, "{j}");
    assert_eq!(c["total"]["failed"], 0, "{j}");
    assert_eq!(c["total"]["refused"]["sms_per_number"], 1, "{j}");
    assert_eq!(c["total"]["refused"].as_object().unwrap().len(), 1, "{j}");
    let rows = c["rows"].as_array().unwrap();
    let sent = rows
        .iter()
        .find(|r| r["sent"] == 1)
        .unwrap_or_else(|| panic!("no row with the SMS sent: {j}"));
    assert_eq!(sent["country"], "US", "{j}");
    let provider = sent["provider"].as_str().unwrap().to_owned();
    assert_ne!(provider, "-", "{j}");
    let refusal = rows
        .iter()
        .find(|r| r["provider"] == "-")
        .unwrap_or_else(|| panic!("no row of refusals: {j}"));
    assert_eq!(refusal["country"], "US", "{j}");
    assert_eq!(refusal["refused"]["sms_per_number"], 1, "{j}");
    assert_eq!(refusal["sent"], 0, "{j}");
    assert_eq!(j["breaker"]["state"], "off", "{j}");
    // The text names the day and both rows.
    let r = run_tool(&scratch, &["status"], TOOL_LIMIT);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("(UTC), per provider and country:"), "{r}");
    assert!(r.stdout.contains("refused by sms_per_number 1"), "{r}");
    // A day the store does not keep is a usage error that says which are.
    let r = run_tool(&scratch, &["status", "--day", "2001-01-01"], TOOL_LIMIT);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("keeps 8 days"), "{r}");

    // /metrics: the same counters, the outcomes, one send time.
    let (status, text) = get(metrics_port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{text}");
    assert!(
        text.contains("Content-Type: text/plain; version=0.0.4"),
        "{text}"
    );
    for (series, want) in [
        (
            format!("smsotp_sms_sent_total{{provider=\"{provider}\",country=\"US\"}}"),
            1.0,
        ),
        (
            "smsotp_sms_refused_total{country=\"US\",limit=\"sms_per_number\"}".to_owned(),
            1.0,
        ),
        (
            "smsotp_radius_requests_total{outcome=\"access_challenge\"}".into(),
            1.0,
        ),
        (
            "smsotp_radius_requests_total{outcome=\"access_accept\"}".into(),
            1.0,
        ),
        (
            "smsotp_radius_requests_total{outcome=\"access_reject\"}".into(),
            1.0,
        ),
        (
            "smsotp_radius_requests_total{outcome=\"dropped_unknown_client\"}".into(),
            1.0,
        ),
        (
            "smsotp_radius_requests_total{outcome=\"dropped_bad_authenticator\"}".into(),
            1.0,
        ),
        (
            format!("smsotp_sms_send_seconds_count{{provider=\"{provider}\"}}"),
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, &series), Some(want), "{series} in:\n{text}");
    }
    assert!(
        !text.contains("2015550123"),
        "no whole number in the metrics"
    );
    let (status, _) = get(metrics_port, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    // The server gathers its counts and writes them once a second; what
    // /metrics shows includes those not yet written, and those counted
    // just before it stops are written when it stops.
    let sent = format!("smsotp_sms_sent_total{{provider=\"{provider}\",country=\"US\"}}");
    let erin = srv.radclient("vpn", "auth", &attrs("erin", NAS_PASSWORD, None));
    erin.assert_received("Access-Challenge", &srv);
    outbox.wait_beyond(1, SMS_WAIT);
    let (_, text) = get(metrics_port, "/metrics");
    assert_eq!(sample(&text, &sent), Some(2.0), "{text}");
    let frank = srv.radclient("vpn", "auth", &attrs("frank", NAS_PASSWORD, None));
    frank.assert_received("Access-Challenge", &srv);
    outbox.wait_beyond(2, SMS_WAIT);
    let status = srv.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let r = run_tool(&scratch, &["--json", "status"], TOOL_LIMIT);
    assert_eq!(r.code, 0, "{r}");
    assert_eq!(r.json()["counters"]["total"]["sent"], 3, "{r}");
}
