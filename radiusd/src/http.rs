//! The small HTTP/1.1 server behind `radius.metrics` and
//! `receipts.listen`: one thread per listener, one connection at a time,
//! the whole request (head parsed by `httparse`, at most [`HEAD_MAX`]
//! bytes; a body only by its Content-Length, at most what the caller
//! allows) read within [`CLIENT_TIME`], the answer written within it too,
//! then the connection closed.
//!
//! A slow or silent client holds its listener for at most
//! [`CLIENT_TIME`], and nothing else waits on it: no thread per
//! connection, so no number of clients can exhaust threads or memory.
//! Both listeners are meant for loopback (a reverse proxy in front of the
//! callbacks does TLS and faces the gateways), and check-config warns
//! otherwise.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest request head read.
pub const HEAD_MAX: usize = 8192;
/// How long one client may take to send its request, and again to read
/// the answer.
pub const CLIENT_TIME: Duration = Duration::from_secs(5);
/// How often an idle listener looks whether it should stop.
const POLL: Duration = Duration::from_millis(100);

/// One request, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The request target: path and query, as sent.
    pub target: String,
    /// The header fields, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (empty without a Content-Length).
    pub body: Vec<u8>,
}

impl Request {
    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Its Content-Type (with a body).
    pub content_type: &'static str,
    /// The body.
    pub body: String,
    /// The methods an `405` allows.
    pub allow: Option<&'static str>,
}

impl Response {
    /// A plain-text answer.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            allow: None,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Binds `addr` (at start, so a taken port fails the start with a
/// message, as the RADIUS addresses do).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves `listener` on a thread named `name` until `stop`: each request
/// read whole (bodies up to `body_max` bytes) goes to `handle`, whose
/// answer is sent back. What cannot be read is answered here (400, 411,
/// 413, 431) or, when the client went silent or away, not at all.
pub fn serve(
    name: &str,
    listener: TcpListener,
    body_max: usize,
    stop: Arc<AtomicBool>,
    mut handle: impl FnMut(&Request) -> Response + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = one(conn, body_max, &mut handle);
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

/// Why a request was not handed on.
#[derive(Debug, PartialEq, Eq)]
enum Unread {
    /// Closed, or silent past the deadline: nobody to answer.
    Gone,
    /// Answered with this.
    Refused(Response),
}

/// What a request head is: `None` while incomplete; else the request
/// (without its body) and the length of the head, or the answer that
/// refuses it.
fn parse_head(head: &[u8], body_max: usize) -> Option<Result<(Request, usize, usize), Response>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let too_large = || Response::text(431, "request head too large\n");
    let at = match req.parse(head) {
        Ok(httparse::Status::Partial) if head.len() >= HEAD_MAX => return Some(Err(too_large())),
        Ok(httparse::Status::Partial) => return None,
        Err(httparse::Error::TooManyHeaders) => return Some(Err(too_large())),
        Err(_) => return Some(Err(Response::text(400, "not an HTTP request\n"))),
        Ok(httparse::Status::Complete(at)) => at,
    };
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).trim().to_owned(),
            )
        })
        .collect();
    let field = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if field("transfer-encoding").is_some() {
        return Some(Err(Response::text(
            411,
            "send the body with a Content-Length\n",
        )));
    }
    let length = match field("content-length").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) if n <= body_max => n,
        Some(Ok(_)) => return Some(Err(Response::text(413, "body too large\n"))),
        Some(Err(_)) => return Some(Err(Response::text(400, "bad Content-Length\n"))),
    };
    let request = Request {
        method: req.method.unwrap_or_default().to_owned(),
        target: req.path.unwrap_or_default().to_owned(),
        headers,
        body: Vec::new(),
    };
    Some(Ok((request, at, length)))
}

/// Reads one whole request from `conn` by `deadline`.
fn read_request(
    conn: &mut TcpStream,
    deadline: Instant,
    body_max: usize,
) -> Result<Request, Unread> {
    let mut data = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let mut read = |data: &mut Vec<u8>, room: usize| -> Result<(), Unread> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Unread::Gone);
        }
        conn.set_read_timeout(Some(left))
            .map_err(|_| Unread::Gone)?;
        match conn.read(&mut buf[..room.clamp(1, 1024)]) {
            Ok(0) | Err(_) => Err(Unread::Gone),
            Ok(n) => {
                data.extend_from_slice(&buf[..n]);
                Ok(())
            }
        }
    };
    let (mut request, at, length) = loop {
        let room = (HEAD_MAX + body_max).saturating_sub(data.len());
        read(&mut data, room)?;
        let head = &data[..data.len().min(HEAD_MAX)];
        match parse_head(head, body_max) {
            None => {}
            Some(Ok(r)) => break r,
            Some(Err(refusal)) => return Err(Unread::Refused(refusal)),
        }
    };
    while data.len() < at + length {
        let room = (at + length).saturating_sub(data.len());
        read(&mut data, room)?;
    }
    data.truncate(at + length);
    request.body = data.split_off(at);
    Ok(request)
}

/// Answers one connection: reads the request within [`CLIENT_TIME`],
/// writes the answer within it again, closes.
fn one(
    mut conn: TcpStream,
    body_max: usize,
    handle: &mut dyn FnMut(&Request) -> Response,
) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_write_timeout(Some(CLIENT_TIME))?;
    let answer = match read_request(&mut conn, Instant::now() + CLIENT_TIME, body_max) {
        Ok(req) => handle(&req),
        Err(Unread::Refused(r)) => r,
        Err(Unread::Gone) => return Ok(()),
    };
    let allow = answer
        .allow
        .map_or_else(String::new, |a| format!("Allow: {a}\r\n"));
    let reply = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n{}",
        answer.status,
        reason(answer.status),
        answer.content_type,
        answer.body.len(),
        answer.body
    );
    conn.write_all(reply.as_bytes())?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_or_refused_with_the_right_status() {
        let ok = |h: &[u8]| parse_head(h, 100).unwrap().unwrap();
        let (r, at, len) = ok(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            (r.method.as_str(), r.path(), at, len),
            ("GET", "/metrics", 38, 0)
        );
        let (r, _, len) = ok(b"POST /cb HTTP/1.1\r\ncontent-length: 12\r\nX-A:  b \r\n\r\n");
        assert_eq!(len, 12);
        assert_eq!(r.headers[1], ("X-A".into(), "b".into()));
        assert_eq!(parse_head(b"GET /metr", 100), None);
        let status = |h: &[u8]| parse_head(h, 100).unwrap().unwrap_err().status;
        assert_eq!(status(b"\x16\x03\x01 hello"), 400);
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n"),
            413
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(HEAD_MAX));
        assert_eq!(status(&long.as_bytes()[..HEAD_MAX]), 431);
    }

    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(request).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    /// Bodies arrive whole (in pieces too), a stalled client is cut off
    /// after CLIENT_TIME and the next one is answered then.
    #[test]
    fn serves_whole_requests_one_at_a_time_and_cuts_off_a_stalled_client() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let t = serve("test-http", l, 64, stop.clone(), |r: &Request| {
            Response::text(
                200,
                format!(
                    "{} {} {}",
                    r.method,
                    r.path(),
                    String::from_utf8_lossy(&r.body)
                ),
            )
        })
        .unwrap();
        let r = exchange(
            addr,
            b"POST /a?q HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello+ignored",
        );
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nPOST /a hello"), "{r}");
        let r = exchange(addr, b"POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 413 "), "{r}");
        // Stalled mid-body.
        let mut stalled = TcpStream::connect(addr).unwrap();
        stalled
            .write_all(b"POST /b HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        let started = Instant::now();
        let r = exchange(addr, b"GET /c HTTP/1.0\r\n\r\n");
        assert!(r.ends_with("GET /c "), "{r}");
        let waited = started.elapsed();
        assert!(waited < CLIENT_TIME + Duration::from_secs(3), "{waited:?}");
        let mut rest = String::new();
        stalled
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = stalled.read_to_string(&mut rest);
        assert_eq!(rest, "", "a stalled client is closed unanswered");
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
    }
}
