//! Drives `smsotp-radiusd` end to end: starts the real binary on loopback
//! ports with a scratch config, talks to it with packets crafted here (so
//! every reply's authenticators are checked byte by byte) and with FreeRADIUS's
//! `radclient` as an independent peer.
//!
//! Pieces:
//!
//! - [`Radiusd`]: one server process. [`Radiusd::start`] picks a free port
//!   (the same one on 127.0.0.1 and ::1), writes the client secrets and the
//!   config into the scratch dir, and waits for `smsotp-radiusd: ready` on
//!   stderr. It is killed when dropped, and by a watchdog after
//!   [`SERVER_LIFETIME`] in any case.
//! - [`Request`], [`Packet`], [`check_reply`]: RADIUS wire format (RFC 2865,
//!   Message-Authenticator per RFC 3579), enough to build any request,
//!   including broken ones, and to verify a reply completely.
//! - [`Nas`]: a UDP socket bound to a chosen loopback source address that
//!   sends requests and checks replies; [`Nas::silent`] asserts that no
//!   reply comes.
//! - [`radclient`]: runs `radclient -x` (bounded in time) and parses the
//!   `Received Access-…` line and the reply attributes.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};

use crate::Scratch;

/// What the Debian packages the RADIUS tests need are called (besides
/// [`crate::pamenv::PACKAGES`] for the PAM parts).
pub const PACKAGES: &str = "freeradius-utils libpam-radius-auth";
/// The line the server prints on stderr once every socket is bound.
pub const READY: &str = "smsotp-radiusd: ready";
/// How long the server may take to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test waits for a reply that must come.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a test waits to be sure that no reply comes.
pub const SILENCE: Duration = Duration::from_millis(1000);
/// A server is killed after this long whatever the test does.
pub const SERVER_LIFETIME: Duration = Duration::from_secs(120);
/// How long SIGTERM may take to end the server.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

const RADCLIENT: &str = "/usr/bin/radclient";

/// RADIUS packet codes.
pub mod code {
    pub const ACCESS_REQUEST: u8 = 1;
    pub const ACCESS_ACCEPT: u8 = 2;
    pub const ACCESS_REJECT: u8 = 3;
    pub const ACCESS_CHALLENGE: u8 = 11;
    pub const STATUS_SERVER: u8 = 12;

    /// The name radclient prints for a code.
    pub fn name(code: u8) -> String {
        match code {
            ACCESS_REQUEST => "Access-Request".into(),
            ACCESS_ACCEPT => "Access-Accept".into(),
            ACCESS_REJECT => "Access-Reject".into(),
            ACCESS_CHALLENGE => "Access-Challenge".into(),
            STATUS_SERVER => "Status-Server".into(),
            other => format!("code {other}"),
        }
    }
}

/// RADIUS attribute types.
pub mod attr {
    pub const USER_NAME: u8 = 1;
    pub const USER_PASSWORD: u8 = 2;
    pub const NAS_IP_ADDRESS: u8 = 4;
    pub const REPLY_MESSAGE: u8 = 18;
    pub const STATE: u8 = 24;
    pub const SESSION_TIMEOUT: u8 = 27;
    pub const NAS_IDENTIFIER: u8 = 32;
    pub const PROXY_STATE: u8 = 33;
    pub const MESSAGE_AUTHENTICATOR: u8 = 80;
}

// ------------------------------------------------------------------ crypto

pub fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

pub fn hmac_md5(key: &[u8], data: &[u8]) -> [u8; 16] {
    let mut m = <Hmac<Md5> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// `n` bytes from the kernel's random source.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    b
}

fn random_authenticator() -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&random_bytes(16));
    a
}

/// User-Password hiding (RFC 2865 5.2): pad to a multiple of 16 with NULs
/// (an empty password becomes 16 NULs), then XOR with the MD5 chain.
pub fn hide_password(password: &[u8], secret: &[u8], authenticator: &[u8; 16]) -> Vec<u8> {
    let len = password.len().div_ceil(16).max(1) * 16;
    let mut p = password.to_vec();
    p.resize(len, 0);
    let mut out = Vec::with_capacity(len);
    let mut prev: Vec<u8> = authenticator.to_vec();
    for chunk in p.chunks(16) {
        let b = md5(&[secret, &prev]);
        let c: Vec<u8> = chunk.iter().zip(b.iter()).map(|(x, y)| x ^ y).collect();
        out.extend_from_slice(&c);
        prev = c;
    }
    out
}

/// The inverse of [`hide_password`], trailing NULs removed.
pub fn unhide_password(hidden: &[u8], secret: &[u8], authenticator: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hidden.len());
    let mut prev: Vec<u8> = authenticator.to_vec();
    for chunk in hidden.chunks(16) {
        let b = md5(&[secret, &prev]);
        out.extend(chunk.iter().zip(b.iter()).map(|(x, y)| x ^ y));
        prev = chunk.to_vec();
    }
    while out.last() == Some(&0) {
        out.pop();
    }
    out
}

// ------------------------------------------------------------------ packets

/// A decoded packet (request or reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub code: u8,
    pub id: u8,
    pub authenticator: [u8; 16],
    /// In wire order.
    pub attrs: Vec<(u8, Vec<u8>)>,
}

impl Packet {
    /// Strict decoding: the length field must equal the datagram length and
    /// the attributes must fill it exactly.
    pub fn decode(bytes: &[u8]) -> Result<Packet, String> {
        if bytes.len() < 20 {
            return Err(format!("{} bytes: shorter than a header", bytes.len()));
        }
        let len = u16::from_be_bytes([bytes[2], bytes[3]]) as usize;
        if len != bytes.len() {
            return Err(format!(
                "length field {len} but datagram of {} bytes",
                bytes.len()
            ));
        }
        let mut attrs = Vec::new();
        let mut i = 20;
        while i < len {
            if i + 2 > len {
                return Err(format!("attribute header at {i} runs past the end"));
            }
            let (t, l) = (bytes[i], bytes[i + 1] as usize);
            if l < 2 || i + l > len {
                return Err(format!("attribute {t} at {i} has bad length {l}"));
            }
            attrs.push((t, bytes[i + 2..i + l].to_vec()));
            i += l;
        }
        let mut authenticator = [0u8; 16];
        authenticator.copy_from_slice(&bytes[4..20]);
        Ok(Packet {
            code: bytes[0],
            id: bytes[1],
            authenticator,
            attrs,
        })
    }

    /// The first attribute of type `t`.
    pub fn attr(&self, t: u8) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|(at, _)| *at == t)
            .map(|(_, v)| v.as_slice())
    }

    /// Every attribute of type `t`, in order.
    pub fn all(&self, t: u8) -> Vec<&[u8]> {
        self.attrs
            .iter()
            .filter(|(at, _)| *at == t)
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// All Reply-Message attributes joined (a long one may be split).
    pub fn reply_message(&self) -> Option<String> {
        let parts = self.all(attr::REPLY_MESSAGE);
        if parts.is_empty() {
            return None;
        }
        Some(parts.iter().map(|p| String::from_utf8_lossy(p)).collect())
    }

    pub fn state(&self) -> Option<Vec<u8>> {
        self.attr(attr::STATE).map(<[u8]>::to_vec)
    }

    pub fn session_timeout(&self) -> Option<u32> {
        let v = self.attr(attr::SESSION_TIMEOUT)?;
        Some(u32::from_be_bytes(v.try_into().ok()?))
    }

    /// The attributes without Message-Authenticator, which differs between
    /// two replies that say the same.
    pub fn attrs_but_message_authenticator(&self) -> Vec<(u8, Vec<u8>)> {
        self.attrs
            .iter()
            .filter(|(t, _)| *t != attr::MESSAGE_AUTHENTICATOR)
            .cloned()
            .collect()
    }

    /// A one-line summary for failure messages.
    pub fn describe(&self) -> String {
        let attrs: Vec<String> = self
            .attrs
            .iter()
            .map(|(t, v)| match *t {
                attr::REPLY_MESSAGE | attr::USER_NAME => {
                    format!("{t}={:?}", String::from_utf8_lossy(v))
                }
                _ => format!("{t}=0x{}", hex(v)),
            })
            .collect();
        format!(
            "{} id {} [{}]",
            code::name(self.code),
            self.id,
            attrs.join(", ")
        )
    }
}

/// One attribute of a request under construction.
#[derive(Debug, Clone)]
pub enum Item {
    /// Sent as given.
    Raw(u8, Vec<u8>),
    /// User-Password, hidden with the secret at encoding time.
    Password(Vec<u8>),
    /// Message-Authenticator, computed at encoding time (16 bytes).
    MessageAuthenticator,
}

/// A request to encode: the items in wire order.
#[derive(Debug, Clone)]
pub struct Request {
    pub code: u8,
    pub id: u8,
    pub authenticator: [u8; 16],
    pub items: Vec<Item>,
}

impl Request {
    /// An Access-Request with a random Request Authenticator and
    /// Message-Authenticator as its first attribute.
    pub fn access(id: u8) -> Request {
        Request {
            code: code::ACCESS_REQUEST,
            id,
            authenticator: random_authenticator(),
            items: vec![Item::MessageAuthenticator],
        }
    }

    /// A Status-Server with Message-Authenticator.
    pub fn status(id: u8) -> Request {
        Request {
            code: code::STATUS_SERVER,
            ..Request::access(id)
        }
    }

    /// Drops Message-Authenticator.
    pub fn without_message_authenticator(mut self) -> Self {
        self.items
            .retain(|i| !matches!(i, Item::MessageAuthenticator));
        self
    }

    pub fn raw(mut self, t: u8, v: &[u8]) -> Self {
        self.items.push(Item::Raw(t, v.to_vec()));
        self
    }

    pub fn user(self, name: &str) -> Self {
        self.raw(attr::USER_NAME, name.as_bytes())
    }

    pub fn password(mut self, pw: &str) -> Self {
        self.items.push(Item::Password(pw.as_bytes().to_vec()));
        self
    }

    pub fn state(self, state: &[u8]) -> Self {
        self.raw(attr::STATE, state)
    }

    pub fn nas_identifier(self, nas: &str) -> Self {
        self.raw(attr::NAS_IDENTIFIER, nas.as_bytes())
    }

    pub fn proxy_state(self, v: &[u8]) -> Self {
        self.raw(attr::PROXY_STATE, v)
    }

    /// The datagram, authenticated with `secret`.
    pub fn encode(&self, secret: &[u8]) -> Vec<u8> {
        let mut out = vec![self.code, self.id, 0, 0];
        out.extend_from_slice(&self.authenticator);
        let mut ma_at = None;
        for item in &self.items {
            let (t, v) = match item {
                Item::Raw(t, v) => (*t, v.clone()),
                Item::Password(p) => (
                    attr::USER_PASSWORD,
                    hide_password(p, secret, &self.authenticator),
                ),
                Item::MessageAuthenticator => {
                    ma_at = Some(out.len() + 2);
                    (attr::MESSAGE_AUTHENTICATOR, vec![0u8; 16])
                }
            };
            assert!(v.len() <= 253, "attribute {t} too long to encode");
            out.push(t);
            out.push((v.len() + 2) as u8);
            out.extend_from_slice(&v);
        }
        let len = out.len() as u16;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        if let Some(at) = ma_at {
            let mac = hmac_md5(secret, &out);
            out[at..at + 16].copy_from_slice(&mac);
        }
        out
    }
}

/// Encodes a reply the way a server must (for the in-test fake server):
/// Message-Authenticator first, then `attrs`, then the Response
/// Authenticator over it all.
pub fn encode_reply(
    code: u8,
    id: u8,
    request_authenticator: &[u8; 16],
    attrs: &[(u8, Vec<u8>)],
    secret: &[u8],
) -> Vec<u8> {
    let mut out = vec![code, id, 0, 0];
    out.extend_from_slice(request_authenticator);
    out.extend_from_slice(&[attr::MESSAGE_AUTHENTICATOR, 18]);
    out.extend_from_slice(&[0u8; 16]);
    for (t, v) in attrs {
        out.push(*t);
        out.push((v.len() + 2) as u8);
        out.extend_from_slice(v);
    }
    let len = out.len() as u16;
    out[2..4].copy_from_slice(&len.to_be_bytes());
    let mac = hmac_md5(secret, &out);
    out[22..38].copy_from_slice(&mac);
    let auth = md5(&[&out, secret]);
    out[4..20].copy_from_slice(&auth);
    out
}

/// Checks a request's Message-Authenticator (for the in-test fake server).
pub fn request_message_authenticator_ok(bytes: &[u8], secret: &[u8]) -> bool {
    let Ok(p) = Packet::decode(bytes) else {
        return false;
    };
    let Some(pos) = ma_offset(bytes) else {
        return false;
    };
    let Some(ma) = p.attr(attr::MESSAGE_AUTHENTICATOR) else {
        return false;
    };
    let mut zeroed = bytes.to_vec();
    zeroed[pos..pos + 16].fill(0);
    ma.len() == 16 && hmac_md5(secret, &zeroed)[..] == ma[..]
}

/// The byte offset of the first Message-Authenticator's value.
fn ma_offset(bytes: &[u8]) -> Option<usize> {
    let mut i = 20;
    while i + 2 <= bytes.len() {
        let (t, l) = (bytes[i], bytes[i + 1] as usize);
        if l < 2 {
            return None;
        }
        if t == attr::MESSAGE_AUTHENTICATOR {
            return Some(i + 2);
        }
        i += l;
    }
    None
}

/// Verifies a reply to a request with `request_id` and
/// `request_authenticator`, completely: well formed, same ID, Response
/// Authenticator right, Message-Authenticator present as the first
/// attribute and right (RFC 3579 3.2: computed with the Request
/// Authenticator in place).
pub fn check_reply(
    bytes: &[u8],
    request_id: u8,
    request_authenticator: &[u8; 16],
    secret: &[u8],
) -> Result<Packet, String> {
    let p = Packet::decode(bytes)?;
    if p.id != request_id {
        return Err(format!("reply id {} to request id {request_id}", p.id));
    }
    let mut with_req_auth = bytes.to_vec();
    with_req_auth[4..20].copy_from_slice(request_authenticator);
    let expect = md5(&[&with_req_auth, secret]);
    if expect != p.authenticator {
        return Err(format!("bad Response Authenticator in {}", p.describe()));
    }
    match p.attrs.first() {
        Some((attr::MESSAGE_AUTHENTICATOR, v)) if v.len() == 16 => {}
        _ => {
            return Err(format!(
                "Message-Authenticator is not the first attribute of {}",
                p.describe()
            ))
        }
    }
    if p.all(attr::MESSAGE_AUTHENTICATOR).len() != 1 {
        return Err(format!(
            "more than one Message-Authenticator in {}",
            p.describe()
        ));
    }
    let mut zeroed = with_req_auth;
    zeroed[22..38].fill(0);
    if hmac_md5(secret, &zeroed)[..] != bytes[22..38] {
        return Err(format!("bad Message-Authenticator in {}", p.describe()));
    }
    Ok(p)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    let s = s.trim().trim_start_matches("0x");
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

// ------------------------------------------------------------------ a NAS

/// A reply that passed [`check_reply`], with its bytes.
#[derive(Debug, Clone)]
pub struct Reply {
    pub packet: Packet,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn code(&self) -> u8 {
        self.packet.code
    }

    pub fn message(&self) -> String {
        self.packet.reply_message().unwrap_or_default()
    }

    /// The State, which must be there.
    pub fn state(&self) -> Vec<u8> {
        self.packet
            .state()
            .unwrap_or_else(|| panic!("no State in {}", self.packet.describe()))
    }
}

/// A RADIUS client on its own UDP socket, with a shared secret.
pub struct Nas {
    pub sock: UdpSocket,
    pub server: SocketAddr,
    pub secret: Vec<u8>,
    next_id: std::cell::Cell<u8>,
}

impl Nas {
    /// A socket on `source` (any port) talking to `server`.
    pub fn new(source: IpAddr, server: SocketAddr, secret: &str) -> Nas {
        let sock = UdpSocket::bind(SocketAddr::new(source, 0))
            .unwrap_or_else(|e| panic!("bind {source}: {e}"));
        Nas {
            sock,
            server,
            secret: secret.as_bytes().to_vec(),
            next_id: std::cell::Cell::new(random_bytes(1)[0]),
        }
    }

    /// A fresh packet ID.
    pub fn id(&self) -> u8 {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        id
    }

    pub fn send_bytes(&self, bytes: &[u8]) {
        self.sock
            .send_to(bytes, self.server)
            .unwrap_or_else(|e| panic!("send to {}: {e}", self.server));
    }

    /// The next datagram from the server within `timeout`.
    pub fn recv_bytes(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock.set_read_timeout(Some(left)).expect("timeout");
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) if from == self.server => return Some(buf[..n].to_vec()),
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(e) => panic!("recv from {}: {e}", self.server),
            }
        }
    }

    /// Encodes `req` with this NAS's secret.
    pub fn encode(&self, req: &Request) -> Vec<u8> {
        req.encode(&self.secret)
    }

    /// Sends `req` and returns the checked reply; panics (with `ctx`, e.g.
    /// the server's log) if none comes or it does not check out.
    pub fn exchange(&self, req: &Request, ctx: &dyn Fn() -> String) -> Reply {
        let bytes = self.encode(req);
        self.send_bytes(&bytes);
        self.reply_to(req, ctx)
    }

    /// Waits for and checks the reply to `req` (already sent).
    pub fn reply_to(&self, req: &Request, ctx: &dyn Fn() -> String) -> Reply {
        let Some(reply) = self.recv_bytes(REPLY_TIMEOUT) else {
            panic!(
                "no reply from {} to {} id {} within {REPLY_TIMEOUT:?}\n{}",
                self.server,
                code::name(req.code),
                req.id,
                ctx()
            );
        };
        match check_reply(&reply, req.id, &req.authenticator, &self.secret) {
            Ok(packet) => Reply {
                packet,
                bytes: reply,
            },
            Err(e) => panic!("bad reply 0x{}: {e}\n{}", hex(&reply), ctx()),
        }
    }

    /// Sends `bytes` and asserts that nothing comes back within [`SILENCE`].
    pub fn silent(&self, bytes: &[u8], what: &str, ctx: &dyn Fn() -> String) {
        self.send_bytes(bytes);
        if let Some(r) = self.recv_bytes(SILENCE) {
            let shown = Packet::decode(&r).map_or_else(|e| e, |p| p.describe());
            panic!(
                "{what}: expected no reply, got 0x{} ({shown})\n{}",
                hex(&r),
                ctx()
            );
        }
    }
}

// ------------------------------------------------------------------ radclient

/// What one `radclient -x` run printed.
#[derive(Debug, Clone)]
pub struct RadclientRun {
    /// "Access-Accept", "Access-Challenge", ... from the `Received` line.
    pub received: Option<String>,
    /// The attributes printed after the `Received` line, quotes removed.
    pub attrs: Vec<(String, String)>,
    pub output: String,
    pub timed_out: bool,
}

impl RadclientRun {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.attrs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The State as bytes (radclient prints it as 0x…).
    pub fn state(&self) -> Vec<u8> {
        unhex(
            self.attr("State")
                .unwrap_or_else(|| panic!("radclient saw no State:\n{}", self.output)),
        )
    }

    pub fn no_reply(&self) -> bool {
        self.received.is_none()
    }

    /// Asserts the reply was `expected` ("Access-Accept", ...), showing
    /// radclient's output and `srv`'s log when it was not.
    pub fn assert_received(&self, expected: &str, srv: &Radiusd) {
        assert_eq!(
            self.received.as_deref(),
            Some(expected),
            "radclient: expected {expected}\n--- radclient ---\n{}\n{}",
            self.output,
            srv.context()
        );
    }
}

/// Runs `radclient -x -t TIMEOUT -r 1 -S SECRET_FILE SERVER COMMAND` with
/// `attrs` (one `Name = value` a line) on stdin. `timeout` is how long it
/// waits for the reply (one try). The run is killed if it takes 10 s more.
pub fn radclient(
    server: &str,
    command: &str,
    secret_file: &Path,
    attrs: &str,
    timeout: Duration,
) -> RadclientRun {
    assert!(
        Path::new(RADCLIENT).exists(),
        "{RADCLIENT} not found; install the Debian packages: apt-get install -y {PACKAGES}"
    );
    let mut cmd = Command::new(RADCLIENT);
    cmd.args([
        "-x",
        "-t",
        &format!("{}", timeout.as_secs_f32()),
        "-r",
        "1",
        "-S",
    ])
    .arg(secret_file)
    .args([server, command])
    .env_clear()
    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    .env("LANG", "C")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let (status, output, timed_out) =
        run_bounded(cmd, attrs.as_bytes(), timeout + Duration::from_secs(10));
    let _ = status;
    let mut received = None;
    let mut attrs_out = Vec::new();
    let mut in_reply = false;
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("Received ") {
            received = rest.split_whitespace().next().map(str::to_owned);
            in_reply = true;
            continue;
        }
        if in_reply {
            match line.strip_prefix('\t') {
                Some(a) => {
                    if let Some((n, v)) = a.split_once(" = ") {
                        attrs_out
                            .push((n.trim().to_owned(), v.trim().trim_matches('"').to_owned()));
                    }
                }
                None => in_reply = false,
            }
        }
    }
    RadclientRun {
        received,
        attrs: attrs_out,
        output,
        timed_out,
    }
}

/// Runs `cmd` with `input` on stdin, killing it after `limit`; returns its
/// status, stdout and stderr together, and whether it was killed.
pub fn run_bounded(mut cmd: Command, input: &[u8], limit: Duration) -> (ExitStatus, String, bool) {
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let mut out = child.stdout.take().expect("stdout piped");
    let mut err = child.stderr.take().expect("stderr piped");
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() > deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("wait");
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("wait: {e}"),
        }
    };
    let mut text = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    text.push_str(&String::from_utf8_lossy(&t_err.join().unwrap_or_default()));
    (status, text, timed_out)
}

// ------------------------------------------------------------------ server

/// The server binary. `SMSOTP_RADIUSD` overrides; otherwise
/// target/{debug,release}/smsotp-radiusd, whichever is newer.
pub fn radiusd_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SMSOTP_RADIUSD") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    [
        target.join("debug/smsotp-radiusd"),
        target.join("release/smsotp-radiusd"),
    ]
    .into_iter()
    .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
    .max_by_key(|(t, _)| *t)
    .map(|(_, p)| p)
    .unwrap_or_else(|| {
        panic!(
            "smsotp-radiusd not found under {}; run `cargo build -p smsotp-radiusd` first",
            target.display()
        )
    })
}

/// One `[[radius.client]]` entry.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub name: String,
    /// An address or CIDR.
    pub address: String,
    pub secret: String,
    /// "challenge" or "append".
    pub mode: String,
    pub require_message_authenticator: bool,
    pub limit_proxy_state: bool,
}

impl ClientSpec {
    /// A challenge-mode client requiring Message-Authenticator.
    pub fn new(name: &str, address: &str, secret: &str) -> ClientSpec {
        ClientSpec {
            name: name.into(),
            address: address.into(),
            secret: secret.into(),
            mode: "challenge".into(),
            require_message_authenticator: true,
            limit_proxy_state: false,
        }
    }

    pub fn append(mut self) -> Self {
        self.mode = "append".into();
        self
    }

    /// For NASes that send no Message-Authenticator (pam_radius_auth 2.0.0).
    pub fn legacy(mut self) -> Self {
        self.require_message_authenticator = false;
        self.limit_proxy_state = true;
        self
    }

    /// Where [`Radiusd::start`] writes the secret.
    pub fn secret_path(&self, scratch: &Scratch) -> PathBuf {
        scratch.path(&format!("secret-{}", self.name))
    }
}

/// How the server checks the password.
#[derive(Debug, Clone)]
pub enum Primary {
    None,
    /// `{ kind = "pam", service }`, run under pam_wrapper with service files
    /// from `service_dir` (see [`crate::pamenv::PamEnv`]).
    Pam {
        service: String,
        service_dir: PathBuf,
    },
    /// `{ kind = "ldap" }`, or `{ kind = "ldap", directory = NAME }`: the
    /// `[[directory]] kind = "ldap"` table goes into `extra`.
    Ldap {
        directory: Option<String>,
    },
}

/// Everything [`Radiusd::start`] needs besides the scratch dir.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub clients: Vec<ClientSpec>,
    pub primary: Primary,
    /// Other TOML (`[otp]`, `[limits]`, …) for the config.
    pub extra: String,
    pub workers: u32,
    /// `[radius] max_pending_sends`, when set.
    pub max_pending_sends: Option<u32>,
    /// Also listen on `[::1]` (same port).
    pub ipv6: bool,
    /// `[[provider]]` tables to use instead of the scratch outbox.
    pub providers: Option<String>,
    /// A `[store]` table to use instead of the scratch SQLite file.
    pub store: Option<String>,
    /// More keys of the `[radius]` table (`metrics = "…"`), one a line.
    pub radius_extra: String,
}

impl ServerSpec {
    pub fn new(clients: Vec<ClientSpec>) -> ServerSpec {
        ServerSpec {
            clients,
            primary: Primary::None,
            extra: String::new(),
            workers: 4,
            max_pending_sends: None,
            ipv6: true,
            providers: None,
            store: None,
            radius_extra: String::new(),
        }
    }

    /// Replaces the outbox provider with these `[[provider]]` tables.
    pub fn providers(mut self, toml: &str) -> Self {
        self.providers = Some(toml.into());
        self
    }

    pub fn extra(mut self, toml: &str) -> Self {
        self.extra = toml.into();
        self
    }

    pub fn primary(mut self, p: Primary) -> Self {
        self.primary = p;
        self
    }

    /// The `[radius]` table (and its clients) for `port`.
    pub fn radius_toml(&self, scratch: &Scratch, port: u16) -> String {
        let mut listen = vec![format!("\"127.0.0.1:{port}\"")];
        if self.ipv6 {
            listen.push(format!("\"[::1]:{port}\""));
        }
        let primary = match &self.primary {
            Primary::None => "{ kind = \"none\" }".to_owned(),
            Primary::Pam { service, .. } => {
                format!("{{ kind = \"pam\", service = \"{service}\" }}")
            }
            Primary::Ldap { directory: None } => "{ kind = \"ldap\" }".to_owned(),
            Primary::Ldap {
                directory: Some(name),
            } => format!("{{ kind = \"ldap\", directory = \"{name}\" }}"),
        };
        let mut t = format!(
            "[radius]\nlisten = [{}]\nprimary = {primary}\nworkers = {}\n",
            listen.join(", "),
            self.workers
        );
        if let Some(n) = self.max_pending_sends {
            t.push_str(&format!("max_pending_sends = {n}\n"));
        }
        t.push_str(&self.radius_extra);
        for c in &self.clients {
            t.push_str(&format!(
                "\n[[radius.client]]\nname = \"{}\"\naddress = \"{}\"\nsecret_file = \"{}\"\nmode = \"{}\"\nrequire_message_authenticator = {}\nlimit_proxy_state = {}\n",
                c.name,
                c.address,
                c.secret_path(scratch).display(),
                c.mode,
                c.require_message_authenticator,
                c.limit_proxy_state
            ));
        }
        t
    }

    /// The whole config text: `extra`, `[radius]`, then the scratch tables.
    /// The scratch's tables, with [`ServerSpec::store`] in place of its
    /// `[store]` when set.
    fn base_tables(&self, scratch: &Scratch) -> String {
        let base = scratch.base_tables(true, self.providers.is_none());
        match &self.store {
            None => base,
            Some(store) => {
                let sqlite = format!(
                    "[store]\nkind = \"sqlite\"\npath = \"{}/state.db\"\n\n",
                    scratch.dir.path().display()
                );
                assert!(base.contains(&sqlite), "the scratch's [store] changed");
                base.replace(&sqlite, store)
            }
        }
    }

    pub fn config_text(&self, scratch: &Scratch, port: u16) -> String {
        format!(
            "{}\n{}\n{}{}",
            self.extra,
            self.radius_toml(scratch, port),
            self.base_tables(scratch),
            self.providers.as_deref().unwrap_or_default()
        )
    }
}

/// A UDP port free on both 127.0.0.1 and ::1 right now.
pub fn free_port(ipv6: bool) -> u16 {
    for _ in 0..50 {
        let v4 = UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = v4.local_addr().expect("local addr").port();
        if !ipv6 || UdpSocket::bind(("::1", port)).is_ok() {
            return port;
        }
    }
    panic!("no UDP port free on both 127.0.0.1 and ::1");
}

#[derive(Default)]
struct Log {
    text: String,
    eof: bool,
}

type SharedLog = Arc<(Mutex<Log>, Condvar)>;

/// A running `smsotp-radiusd`.
pub struct Radiusd {
    pub port: u16,
    pub config: PathBuf,
    pub spec: ServerSpec,
    scratch_dir: PathBuf,
    child: Arc<Mutex<Child>>,
    log: SharedLog,
    /// The log of earlier runs (before a restart).
    earlier: String,
    reader: Option<JoinHandle<()>>,
    stop_watchdog: Option<mpsc::Sender<()>>,
    watchdog: Option<JoinHandle<()>>,
}

impl Radiusd {
    /// Fails the test unless `reply` is of code `expected`, saying `what`
    /// was asked, what came back and the server's log.
    pub fn assert_code(&self, reply: &Reply, expected: u8, what: &str) {
        assert_eq!(
            reply.code(),
            expected,
            "{what}: expected {}, got {}\n{}",
            code::name(expected),
            reply.packet.describe(),
            self.context()
        );
    }

    /// Writes the secrets and config into `scratch`, starts the server on a
    /// free port and waits until it is ready. Retries on another port if the
    /// one picked was taken in the meantime.
    pub fn start(scratch: &Scratch, spec: ServerSpec) -> Radiusd {
        for c in &spec.clients {
            let p = c.secret_path(scratch);
            std::fs::write(&p, &c.secret).expect("write secret");
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod secret");
        }
        let config = scratch.path("smsotp.toml");
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port(spec.ipv6);
            scratch.write("smsotp.toml", &spec.config_text(scratch, port), 0o600);
            let mut s = Radiusd::spawn(scratch.dir.path(), &config, port, spec.clone());
            match s.wait_ready() {
                Ok(()) => return s,
                Err(log) if log.contains("in use") => {
                    last = log;
                    continue;
                }
                Err(log) => panic!(
                    "smsotp-radiusd did not become ready\n--- config ---\n{}\n--- stderr ---\n{log}",
                    std::fs::read_to_string(&config).unwrap_or_default()
                ),
            }
        }
        panic!("smsotp-radiusd: no free port after 5 tries; last stderr:\n{last}");
    }

    fn spawn(scratch_dir: &Path, config: &Path, port: u16, spec: ServerSpec) -> Radiusd {
        let mut cmd = Command::new(radiusd_path());
        cmd.arg("--config")
            .arg(config)
            .arg("--debug")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C")
            .current_dir(scratch_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(v) = std::env::var_os("RUST_BACKTRACE") {
            cmd.env("RUST_BACKTRACE", v);
        }
        if let Primary::Pam { service_dir, .. } = &spec.primary {
            let tools = crate::pamenv::Tools::find();
            cmd.env("LD_PRELOAD", &tools.pam_wrapper)
                .env("PAM_WRAPPER", "1")
                .env("PAM_WRAPPER_SERVICE_DIR", service_dir);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", radiusd_path().display()));
        let mut stderr = child.stderr.take().expect("stderr piped");
        let log: SharedLog = Arc::new((Mutex::new(Log::default()), Condvar::new()));
        let reader = {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut bytes = [0u8; 4096];
                loop {
                    let n = stderr.read(&mut bytes).unwrap_or(0);
                    let (lock, cv) = &*log;
                    let mut l = lock.lock().unwrap_or_else(|e| e.into_inner());
                    if n == 0 {
                        l.eof = true;
                        cv.notify_all();
                        return;
                    }
                    l.text.push_str(&String::from_utf8_lossy(&bytes[..n]));
                    cv.notify_all();
                }
            })
        };
        let child = Arc::new(Mutex::new(child));
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let watchdog = {
            let child = Arc::clone(&child);
            std::thread::spawn(move || {
                if let Err(RecvTimeoutError::Timeout) = stop_rx.recv_timeout(SERVER_LIFETIME) {
                    let mut c = child.lock().unwrap_or_else(|e| e.into_inner());
                    if matches!(c.try_wait(), Ok(None)) {
                        eprintln!("smsotp-radiusd still running after {SERVER_LIFETIME:?}: killed");
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                }
            })
        };
        Radiusd {
            port,
            config: config.to_path_buf(),
            spec,
            scratch_dir: scratch_dir.to_path_buf(),
            child,
            log,
            earlier: String::new(),
            reader: Some(reader),
            stop_watchdog: Some(stop_tx),
            watchdog: Some(watchdog),
        }
    }

    /// Waits for [`READY`]; on failure returns the log.
    fn wait_ready(&mut self) -> Result<(), String> {
        if self.wait_log(READY, 0, START_TIMEOUT).is_some() {
            return Ok(());
        }
        self.kill();
        Err(self.log())
    }

    pub fn v4(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn v6(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), self.port)
    }

    /// `127.0.0.1:PORT` for radclient.
    pub fn v4_text(&self) -> String {
        self.v4().to_string()
    }

    /// `[::1]:PORT` for radclient.
    pub fn v6_text(&self) -> String {
        self.v6().to_string()
    }

    /// A NAS on `source` talking to the server over the same family, with
    /// the secret of client `client`.
    pub fn nas(&self, source: &str, client: &str) -> Nas {
        let ip: IpAddr = source.parse().expect("source address");
        let server = if ip.is_ipv6() { self.v6() } else { self.v4() };
        Nas::new(ip, server, &self.secret_of(client))
    }

    pub fn secret_of(&self, client: &str) -> String {
        self.client(client).secret.clone()
    }

    fn client(&self, name: &str) -> &ClientSpec {
        self.spec
            .clients
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no client {name} in the spec"))
    }

    /// The file holding client `name`'s secret (for radclient -S).
    pub fn secret_file(&self, name: &str) -> PathBuf {
        self.scratch_dir
            .join(format!("secret-{}", self.client(name).name))
    }

    /// Runs radclient against the IPv4 listener with client `client`'s
    /// secret.
    pub fn radclient(&self, client: &str, command: &str, attrs: &str) -> RadclientRun {
        radclient(
            &self.v4_text(),
            command,
            &self.secret_file(client),
            attrs,
            REPLY_TIMEOUT,
        )
    }

    /// Like [`Radiusd::radclient`] where no reply is expected: waits
    /// [`SILENCE`] only.
    pub fn radclient_silent(&self, client: &str, command: &str, attrs: &str) -> RadclientRun {
        radclient(
            &self.v4_text(),
            command,
            &self.secret_file(client),
            attrs,
            SILENCE,
        )
    }

    /// Everything the server printed on stderr (all runs).
    pub fn log(&self) -> String {
        let l = self.log.0.lock().unwrap_or_else(|e| e.into_inner());
        format!("{}{}", self.earlier, l.text)
    }

    /// The length of this run's log so far (a mark for [`Radiusd::wait_log`]).
    pub fn log_mark(&self) -> usize {
        self.log
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .text
            .len()
    }

    /// Waits for `text` in this run's log after byte `from`; returns the
    /// offset just past it.
    pub fn wait_log(&self, text: &str, from: usize, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.log;
        let mut l = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(i) = l.text.get(from..).and_then(|t| t.find(text)) {
                return Some(from + i + text.len());
            }
            let now = Instant::now();
            if l.eof || now >= deadline {
                return None;
            }
            l = cv
                .wait_timeout(l, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The log and the audit file, for failure messages.
    pub fn context(&self) -> String {
        format!(
            "--- smsotp-radiusd stderr ---\n{}\n--- audit ---\n{}",
            self.log(),
            std::fs::read_to_string(self.scratch_dir.join("audit.jsonl")).unwrap_or_default()
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// Sends `sig` (libc::SIGHUP, …) to the server.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) with a pid we own (our child, not yet reaped while
        // `self.child` holds it) has no memory-safety preconditions.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Whether the process is still running.
    pub fn running(&self) -> bool {
        matches!(
            self.child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_wait(),
            Ok(None)
        )
    }

    /// SIGTERM, then waits up to `timeout` for the exit; returns the status,
    /// or `None` if it did not exit (it is then killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
                if let Ok(Some(s)) = c.try_wait() {
                    drop(c);
                    self.finish_run();
                    return Some(s);
                }
            }
            if Instant::now() > deadline {
                self.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the server again with the same config and port (after
    /// [`Radiusd::terminate`]), and waits until it is ready.
    pub fn restart(&mut self) {
        assert!(!self.running(), "restart() needs the server stopped");
        let earlier = self.log();
        let next = Radiusd::spawn(
            &self.scratch_dir.clone(),
            &self.config.clone(),
            self.port,
            self.spec.clone(),
        );
        self.stop();
        let old = std::mem::replace(self, next);
        drop(old);
        self.earlier = format!("{earlier}--- restart ---\n");
        if let Err(log) = self.wait_ready() {
            panic!(
                "smsotp-radiusd did not become ready after a restart:\n{}{log}",
                self.earlier
            );
        }
    }

    fn kill(&self) {
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(c.try_wait(), Ok(None)) {
            let _ = c.kill();
            let _ = c.wait();
            if matches!(self.spec.primary, Primary::Pam { .. }) {
                remove_stale_wrapper_dir(c.id());
            }
        }
    }

    /// After the process ended: wait for the end of its stderr.
    fn finish_run(&mut self) {
        let (lock, cv) = &*self.log;
        let l = lock.lock().unwrap_or_else(|e| e.into_inner());
        let l = cv
            .wait_timeout_while(l, Duration::from_secs(2), |l| !l.eof)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        let eof = l.eof;
        drop(l);
        if eof {
            if let Some(r) = self.reader.take() {
                let _ = r.join();
            }
        }
    }

    fn stop(&mut self) {
        self.kill();
        self.stop_watchdog.take();
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Radiusd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Describes how a process ended, for messages.
pub fn describe_status(s: &ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "unknown".into(),
    }
}

/// pam_wrapper copies the service dir to /tmp/pam.X and removes it at exit;
/// a killed process leaves it. Remove the one that belonged to `pid`.
fn remove_stale_wrapper_dir(pid: u32) {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.len() != 5 || !name.starts_with("pam.") {
            continue;
        }
        let owner = std::fs::read_to_string(e.path().join("pid")).unwrap_or_default();
        if owner.trim() == pid.to_string() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Times `cases` (named closures, each one request and its checked
/// reply) over `rounds` rounds, interleaved and in an order that rotates
/// each round, so load on the machine falls on every case alike; returns
/// each case's median.
pub fn median_times(rounds: usize, cases: &[(&str, &dyn Fn())]) -> Vec<Duration> {
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); cases.len()];
    for round in 0..rounds {
        for k in 0..cases.len() {
            let i = (round + k) % cases.len();
            let t = Instant::now();
            (cases[i].1)();
            times[i].push(t.elapsed());
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect()
}

/// Panics unless every case's median in `medians` (as [`median_times`]
/// returned for `cases`) is within a factor of two of the first's: a
/// difference that large tells an observer which case a request was.
pub fn assert_medians_alike(cases: &[(&str, &dyn Fn())], medians: &[Duration], context: &str) {
    let base = medians[0].as_secs_f64();
    let table: String = cases
        .iter()
        .zip(medians)
        .map(|((name, _), m)| format!("  {name}: {m:?}\n"))
        .collect();
    for ((name, _), m) in cases.iter().zip(medians).skip(1) {
        let ratio = m.as_secs_f64() / base;
        assert!(
            (0.5..=2.0).contains(&ratio),
            "{name} takes {ratio:.2} times as long as {}: a timing difference that \
             tells them apart\nmedians:\n{table}{context}",
            cases[0].0
        );
    }
    eprintln!("medians:\n{table}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2865 section 7.1: the example Access-Request and Access-Accept.
    #[test]
    fn rfc2865_example() {
        let secret = b"xyzzy5461";
        let auth: [u8; 16] = unhex("0f403f9473978057bd83d5cb98f4227a")
            .try_into()
            .expect("16 bytes");
        let hidden = hide_password(b"arctangent", secret, &auth);
        assert_eq!(hex(&hidden), "0dbe708d93d413ce3196e43f782a0aee");
        assert_eq!(unhide_password(&hidden, secret, &auth), b"arctangent");

        let req = Request {
            code: code::ACCESS_REQUEST,
            id: 0,
            authenticator: auth,
            items: vec![
                Item::Raw(attr::USER_NAME, b"nemo".to_vec()),
                Item::Password(b"arctangent".to_vec()),
                Item::Raw(attr::NAS_IP_ADDRESS, vec![192, 168, 1, 16]),
                Item::Raw(5, vec![0, 0, 0, 3]),
            ],
        };
        assert_eq!(
            hex(&req.encode(secret)),
            "010000380f403f9473978057bd83d5cb98f4227a01066e656d6f02120dbe708d93d413ce3196e43f782a0aee0406c0a801100506\
             00000003"
        );
        // The example's Access-Accept: its Response Authenticator.
        let reply =
            unhex("0200002686fe220e7624ba2a1005f6bf9b55e0b20606000000010f06000000000e06c0a80103");
        let mut with_req = reply.clone();
        with_req[4..20].copy_from_slice(&auth);
        assert_eq!(md5(&[&with_req, secret])[..], reply[4..20]);
    }

    #[test]
    fn long_passwords_chain() {
        let secret = b"s3cret";
        let auth = random_authenticator();
        for len in [0usize, 1, 15, 16, 17, 40, 128] {
            let pw: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let h = hide_password(&pw, secret, &auth);
            assert_eq!(h.len(), len.div_ceil(16).max(1) * 16);
            assert_eq!(unhide_password(&h, secret, &auth), pw);
        }
    }

    #[test]
    fn replies_we_encode_check_out() {
        let secret = b"abc";
        let auth = random_authenticator();
        let r = encode_reply(
            code::ACCESS_CHALLENGE,
            7,
            &auth,
            &[
                (attr::STATE, vec![1; 16]),
                (attr::REPLY_MESSAGE, b"hi".to_vec()),
            ],
            secret,
        );
        let p = check_reply(&r, 7, &auth, secret).expect("valid");
        assert_eq!(p.reply_message().as_deref(), Some("hi"));
        assert!(check_reply(&r, 8, &auth, secret).is_err());
        assert!(check_reply(&r, 7, &auth, b"abd").is_err());
        let mut bad = r.clone();
        bad[25] ^= 1;
        assert!(check_reply(&bad, 7, &auth, secret).is_err());
    }
}
