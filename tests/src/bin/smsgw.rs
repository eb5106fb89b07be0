//! smsgw: a stand-in HTTP SMS gateway for end-to-end tests and
//! `scripts/bench-gateway.sh`. It answers every request after a set delay,
//! as real gateways do (200 to 1500 ms), or never (`--delay hang`: it
//! reads the request and holds the connection until the client gives up).
//!
//! It takes what the generic `kind = "http"` provider sends with
//! `body = { to = "{number}", message = "{message}" }` (a form), and
//! appends one line per request, when it arrives, to `--log PATH` in the
//! outbox's form (`{"to": …, "message": …}`), so radload's `--outbox` and
//! the tests read the codes from it, and counting its lines counts the
//! SMS the gateway was asked to send. `--stats PATH` is rewritten after
//! each request: `requests=N connections=M in_flight_max=K` (connections
//! below requests: keep-alive connections were reused).
//!
//! HTTP/1.1 with keep-alive, one thread per connection; bound to a
//! loopback address only. Prints `smsgw listening on ADDR` when ready.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const USAGE: &str =
    "usage: smsgw --listen 127.0.0.1:PORT --delay MS|hang --log PATH [--stats PATH]";

struct Gateway {
    /// `None`: never answer.
    delay: Option<Duration>,
    log: Mutex<std::fs::File>,
    stats: Option<PathBuf>,
    requests: AtomicU64,
    connections: AtomicU64,
    in_flight: AtomicU64,
    in_flight_max: AtomicU64,
    stats_lock: Mutex<()>,
}

impl Gateway {
    fn write_stats(&self) {
        if let Some(p) = &self.stats {
            // One writer at a time, counts read under the lock: otherwise a
            // thread holding older counts can rename its file over a newer
            // one (the last SMS of a run then went uncounted: "511 for 512").
            let _one = self.stats_lock.lock().unwrap();
            let text = format!(
                "requests={} connections={} in_flight_max={}\n",
                self.requests.load(Ordering::SeqCst),
                self.connections.load(Ordering::SeqCst),
                self.in_flight_max.load(Ordering::SeqCst)
            );
            let tmp = p.with_extension("tmp");
            if std::fs::write(&tmp, text).is_ok() {
                let _ = std::fs::rename(&tmp, p);
            }
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one request; `None` at the end of the connection.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut line = String::new();
    let mut length = 0usize;
    // The request line (blank lines before it are allowed), then headers.
    let mut seen_request_line = false;
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if !seen_request_line {
            seen_request_line = !l.is_empty();
            continue;
        }
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body).ok()?;
    Some(body)
}

fn serve(gw: &Gateway, stream: TcpStream) {
    gw.connections.fetch_add(1, Ordering::SeqCst);
    let _ = stream.set_nodelay(true);
    let mut out = stream.try_clone().expect("clone the stream");
    let mut r = BufReader::new(stream);
    while let Some(body) = read_request(&mut r) {
        let form = String::from_utf8_lossy(&body).into_owned();
        let mut to = String::new();
        let mut message = String::new();
        for pair in form.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match percent_decode(k).as_str() {
                "to" => to = percent_decode(v),
                "message" => message = percent_decode(v),
                _ => {}
            }
        }
        let line = serde_json::json!({ "to": to, "message": message }).to_string();
        {
            let mut f = gw.log.lock().unwrap();
            let _ = writeln!(f, "{line}");
        }
        gw.requests.fetch_add(1, Ordering::SeqCst);
        let now = gw.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        gw.in_flight_max.fetch_max(now, Ordering::SeqCst);
        gw.write_stats();
        let Some(delay) = gw.delay else {
            // Never answer: wait for the client to close.
            let mut sink = [0u8; 512];
            while matches!(r.get_mut().read(&mut sink), Ok(n) if n > 0) {}
            gw.in_flight.fetch_sub(1, Ordering::SeqCst);
            return;
        };
        std::thread::sleep(delay);
        gw.in_flight.fetch_sub(1, Ordering::SeqCst);
        let reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nOK";
        if out.write_all(reply).is_err() {
            return;
        }
    }
}

fn main() {
    let mut listen: Option<SocketAddr> = None;
    let mut delay: Option<Option<Duration>> = None;
    let mut log: Option<PathBuf> = None;
    let mut stats: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--listen" => listen = Some(value().parse().expect("--listen ADDR")),
            "--delay" => {
                let v = value();
                delay = Some(if v == "hang" {
                    None
                } else {
                    Some(Duration::from_millis(v.parse().expect("--delay MS|hang")))
                });
            }
            "--log" => log = Some(value().into()),
            "--stats" => stats = Some(value().into()),
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let (Some(listen), Some(delay), Some(log)) = (listen, delay, log) else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    assert!(listen.ip().is_loopback(), "smsgw listens on loopback only");
    let listener = TcpListener::bind(listen).expect("bind");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("open the log");
    let gw = Arc::new(Gateway {
        delay,
        log: Mutex::new(file),
        stats,
        requests: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        in_flight_max: AtomicU64::new(0),
        stats_lock: Mutex::new(()),
    });
    gw.write_stats();
    println!(
        "smsgw listening on {}",
        listener.local_addr().expect("addr")
    );
    let _ = std::io::stdout().flush();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let gw = gw.clone();
        std::thread::spawn(move || serve(&gw, stream));
    }
}
