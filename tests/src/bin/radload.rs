//! radload: a RADIUS load generator for the two-round challenge login that
//! smsotp-radiusd speaks (and a FreeRADIUS set up the same way), used by
//! `scripts/bench-radius.sh`.
//!
//! One flow is: Access-Request (User-Name, User-Password) → Access-Challenge
//! with State → Access-Request (User-Name, State, User-Password = the code)
//! → Access-Accept. `--inflight W` flows run at once, spread over
//! `--sockets K` UDP sockets, one thread each; every in-flight slot owns its
//! own Identifiers on its socket and its own users, so a reply or an SMS can
//! never be matched to the wrong flow.
//!
//! Where round two's code comes from:
//! - `--fixed-code CODE` (FreeRADIUS with an unlang challenge),
//! - `--outbox PATH --phones PATH` (smsotp-radiusd with the outbox provider):
//!   the outbox is tailed from where it ended at start; each SMS is mapped
//!   number → user → the slot that owns that user. Reading the SMS is part of
//!   the whole-flow time, as a user would have to read it too.
//!
//! Every request carries Message-Authenticator (first) and a fresh random
//! Request Authenticator. Every reply's Response Authenticator and
//! Message-Authenticator are checked; a reply without Message-Authenticator
//! is an error unless `--reply-ma optional`.
//!
//! Latency is printed for the whole flow, each round, the code lookup, and
//! any request (both rounds' requests together: the time a NAS waits for
//! an answer, which `scripts/bench-radius.sh` holds against its p99
//! target).
//!
//! `--pending N` runs round one only, for N distinct users, and leaves the N
//! challenges pending (the script then reads the server's VmRSS).
//!
//! `--probe-interval MS` measures, beside the load, the answers that need
//! no SMS (`scripts/bench-gateway.sh`): a thread of its own sends, one at
//! a time every MS ms, a Status-Server or an Access-Request with a State
//! the server never issued (rejected after a look in its store), and
//! times each answer. These must stay fast while logins wait for a slow
//! SMS gateway.
//!
//! The target must be a loopback address: this is a load generator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use smsotp_core::phone::Phone;
use smsotp_core::random::{OsRandom, RandomSource};
use smsotp_e2e::extract_code;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "usage: radload --target 127.0.0.1:PORT --secret-file PATH
               (--fixed-code CODE | --outbox PATH --phones PATH) [options]
       radload --users N --write-phones PATH [--write-freeradius-users PATH]
       radload --free-udp-port

  --target ADDR          the server, a loopback address and port
  --secret-file PATH     the shared secret (one line; a trailing newline is ignored)
  --fixed-code CODE      round two's User-Password (FreeRADIUS)
  --outbox PATH          read round two's code from this outbox (smsotp-radiusd)
  --phones PATH          user -> number, as written by --write-phones
  --flows N              stop starting flows after N (default 20000; 0 = no limit)
  --duration S           stop starting flows after S seconds (default 60)
  --inflight W           flows in flight (default 64)
  --sockets K            UDP sockets, one thread each (default: 4, at most W)
  --users N              users bench00000.. to cycle through (default: from --phones, else 10000)
  --user-prefix P        user names are P00000, P00001, ... (default bench)
  --password P           round one's User-Password (default bench-password)
  --timeout MS           per request (default 2000)
  --retries R            retransmit an unanswered request R times (default 0)
  --reply-ma MODE        required | optional (default required)
  --pending N            round one only, for N distinct users; challenges stay pending
  --probe-interval MS    also time answers that need no SMS: a Status-Server or an
                         unknown State every MS ms, one at a time (default: off)
  --label NAME           a name for the result lines (default: the target)
  --write-phones PATH    write a phones.toml for --users valid, distinct numbers and exit
  --write-freeradius-users PATH
                         write a FreeRADIUS users file (Cleartext-Password) and exit
  --free-udp-port        print a UDP port free on 127.0.0.1 (for the script) and exit";

// RADIUS codes and attributes (RFC 2865, RFC 2869).
const ACCESS_REQUEST: u8 = 1;
const ACCESS_ACCEPT: u8 = 2;
const ACCESS_REJECT: u8 = 3;
const ACCESS_CHALLENGE: u8 = 11;
const STATUS_SERVER: u8 = 12;
const USER_NAME: u8 = 1;
const USER_PASSWORD: u8 = 2;
const REPLY_MESSAGE: u8 = 18;
const STATE: u8 = 24;
const NAS_IDENTIFIER: u8 = 32;
const MESSAGE_AUTHENTICATOR: u8 = 80;
const MAX_PACKET: usize = 4096;

/// How long a slot with a challenge in hand waits between looks at the outbox.
const CODE_POLL: Duration = Duration::from_micros(100);
/// How often an otherwise idle socket loop wakes to check its timeouts.
const IDLE_TICK: Duration = Duration::from_millis(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyMa {
    Required,
    Optional,
}

#[derive(Debug)]
struct Args {
    target: SocketAddr,
    secret: Vec<u8>,
    fixed_code: Option<String>,
    outbox: Option<PathBuf>,
    phones: Option<PathBuf>,
    flows: u64,
    duration: Duration,
    inflight: usize,
    sockets: usize,
    users: usize,
    user_prefix: String,
    password: String,
    timeout: Duration,
    retries: u32,
    reply_ma: ReplyMa,
    pending: Option<usize>,
    probe_interval: Option<Duration>,
    label: String,
}

/// What the command line asked for.
enum Job {
    Write {
        users: usize,
        prefix: String,
        password: String,
        phones: Option<PathBuf>,
        freeradius: Option<PathBuf>,
    },
    Load(Box<Args>),
}

fn parse_args() -> Result<Job> {
    let mut target = None;
    let mut secret_file: Option<PathBuf> = None;
    let mut fixed_code = None;
    let mut outbox = None;
    let mut phones = None;
    let mut flows = 20_000u64;
    let mut duration = 60.0f64;
    let mut inflight = 64usize;
    let mut sockets = None;
    let mut users: Option<usize> = None;
    let mut user_prefix = "bench".to_string();
    let mut password = "bench-password".to_string();
    let mut timeout_ms = 2000u64;
    let mut retries = 0u32;
    let mut reply_ma = ReplyMa::Required;
    let mut pending = None;
    let mut probe_ms: Option<u64> = None;
    let mut label = None;
    let mut write_phones = None;
    let mut write_freeradius = None;

    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--target" => target = Some(value()?),
            "--secret-file" => secret_file = Some(PathBuf::from(value()?)),
            "--fixed-code" => fixed_code = Some(value()?),
            "--outbox" => outbox = Some(PathBuf::from(value()?)),
            "--phones" => phones = Some(PathBuf::from(value()?)),
            "--flows" => flows = value()?.parse()?,
            "--duration" => duration = value()?.parse()?,
            "--inflight" => inflight = value()?.parse()?,
            "--sockets" => sockets = Some(value()?.parse()?),
            "--users" => users = Some(value()?.parse()?),
            "--user-prefix" => user_prefix = value()?,
            "--password" => password = value()?,
            "--timeout" => timeout_ms = value()?.parse()?,
            "--retries" => retries = value()?.parse()?,
            "--reply-ma" => {
                reply_ma = match value()?.as_str() {
                    "required" => ReplyMa::Required,
                    "optional" => ReplyMa::Optional,
                    other => {
                        return Err(
                            format!("--reply-ma is required or optional, not {other}").into()
                        )
                    }
                }
            }
            "--pending" => pending = Some(value()?.parse()?),
            "--probe-interval" => probe_ms = Some(value()?.parse()?),
            "--label" => label = Some(value()?),
            "--write-phones" => write_phones = Some(PathBuf::from(value()?)),
            "--write-freeradius-users" => write_freeradius = Some(PathBuf::from(value()?)),
            "--free-udp-port" => {
                let s = UdpSocket::bind("127.0.0.1:0")?;
                println!("{}", s.local_addr()?.port());
                std::process::exit(0);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    if user_prefix.is_empty()
        || !user_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err("--user-prefix: use letters, digits, '-' or '_'".into());
    }

    if write_phones.is_some() || write_freeradius.is_some() {
        let users = users.ok_or("--write-phones/--write-freeradius-users need --users N")?;
        return Ok(Job::Write {
            users,
            prefix: user_prefix,
            password,
            phones: write_phones,
            freeradius: write_freeradius,
        });
    }

    let target = target.ok_or_else(|| format!("--target is required\n{USAGE}"))?;
    let target: SocketAddr = target.parse().map_err(|_| {
        format!("--target {target}: write an address and port, e.g. 127.0.0.1:18120")
    })?;
    if !target.ip().is_loopback() {
        return Err(format!(
            "--target {target} is not a loopback address; radload only loads servers on this host"
        )
        .into());
    }
    let secret_file = secret_file.ok_or_else(|| format!("--secret-file is required\n{USAGE}"))?;
    let mut secret = std::fs::read(&secret_file)
        .map_err(|e| format!("cannot read {}: {e}", secret_file.display()))?;
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    if secret.is_empty() {
        return Err(format!("{} holds an empty secret", secret_file.display()).into());
    }
    match (&fixed_code, &outbox, &phones) {
        (Some(_), None, None) | (None, Some(_), Some(_)) => {}
        _ if pending.is_some() && fixed_code.is_none() => {}
        _ => {
            return Err(format!(
                "give either --fixed-code CODE or both --outbox PATH and --phones PATH\n{USAGE}"
            )
            .into())
        }
    }
    if inflight == 0 || inflight > 4096 {
        return Err("--inflight must be 1-4096".into());
    }
    let sockets = sockets.unwrap_or(4).clamp(1, inflight);
    if inflight.div_ceil(sockets) > 256 {
        return Err("more than 256 flows per socket: raise --sockets".into());
    }
    if password.len() > 128 {
        return Err("--password: at most 128 bytes (RFC 2865)".into());
    }
    if !(duration > 0.0 && duration.is_finite()) {
        return Err("--duration must be a positive number of seconds".into());
    }
    if timeout_ms == 0 {
        return Err("--timeout must be at least 1 ms".into());
    }
    let users = match users {
        Some(n) => n,
        None if phones.is_some() => 0, // filled in from the file
        None => pending.unwrap_or(10_000),
    };
    Ok(Job::Load(Box::new(Args {
        label: label.unwrap_or_else(|| target.to_string()),
        target,
        secret,
        fixed_code,
        outbox,
        phones,
        flows,
        duration: Duration::from_secs_f64(duration),
        inflight,
        sockets,
        users,
        user_prefix,
        password,
        timeout: Duration::from_millis(timeout_ms),
        retries,
        reply_ma,
        pending,
        probe_interval: probe_ms.filter(|ms| *ms > 0).map(Duration::from_millis),
    })))
}

fn user_name(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:05}")
}

// ---------------------------------------------------------------------------
// Test users

/// Distinct numbers that core's own validation accepts: the fictional
/// 555-0100..0199 block in every US area code libphonenumber knows.
fn valid_numbers(n: usize) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(n);
    'area: for area in 201..=989u32 {
        for line in 100..=199u32 {
            if out.len() == n {
                break 'area;
            }
            let number = format!("+1{area}5550{line}");
            match Phone::parse(&number, None) {
                Ok(p) => out.push(p.e164().to_string()),
                // One bad number means the area code is not in use.
                Err(_) => continue 'area,
            }
        }
    }
    if out.len() < n {
        return Err(format!("only {} valid +1 AAA 555-01XX numbers exist", out.len()).into());
    }
    Ok(out)
}

fn write_file(path: &PathBuf, text: &str, mode: u32) -> Result<()> {
    let mut f = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write_users(
    users: usize,
    prefix: &str,
    password: &str,
    phones: Option<PathBuf>,
    freeradius: Option<PathBuf>,
) -> Result<()> {
    if let Some(path) = phones {
        let numbers = valid_numbers(users)?;
        let mut text = String::with_capacity(users * 32);
        for (i, n) in numbers.iter().enumerate() {
            writeln!(text, "{} = \"{n}\"", user_name(prefix, i))?;
        }
        write_file(&path, &text, 0o644)?;
        eprintln!("radload: wrote {users} users to {}", path.display());
    }
    if let Some(path) = freeradius {
        if password.contains('"') || password.contains('\\') {
            return Err("--password must not contain '\"' or '\\' for a users file".into());
        }
        let mut text = String::with_capacity(users * 48);
        for i in 0..users {
            writeln!(
                text,
                "{} Cleartext-Password := \"{password}\"",
                user_name(prefix, i)
            )?;
        }
        write_file(&path, &text, 0o640)?;
        eprintln!("radload: wrote {users} users to {}", path.display());
    }
    Ok(())
}

/// Reads `name = "+1..."` lines; returns number -> user index for users named
/// `prefix#####`, and how many there are.
fn read_phones(path: &PathBuf, prefix: &str) -> Result<(HashMap<String, usize>, usize)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut map = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("{}:{}: expected name = \"+number\"", path.display(), n + 1);
        let (name, number) = line.split_once('=').ok_or_else(bad)?;
        let idx: usize = name
            .trim()
            .strip_prefix(prefix)
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| format!("{}:{}: user is not {prefix}NNNNN", path.display(), n + 1))?;
        let number = number.trim().trim_matches('"').to_string();
        if map.insert(number, idx).is_some() {
            return Err(format!("{}:{}: number used twice", path.display(), n + 1).into());
        }
    }
    let users = map.values().max().map_or(0, |m| m + 1);
    if users != map.len() {
        return Err(format!(
            "{}: users must be {prefix}00000 to {prefix}{:05} without gaps",
            path.display(),
            map.len().saturating_sub(1)
        )
        .into());
    }
    Ok((map, users))
}

// ---------------------------------------------------------------------------
// RADIUS packets

/// A sent request, kept to match and check its reply and to retransmit.
struct Request {
    id: u8,
    authenticator: [u8; 16],
    bytes: Vec<u8>,
}

/// A buffered source of Request Authenticators (RFC 2865 §3: unpredictable).
struct Randomness {
    pool: [u8; 4096],
    used: usize,
}

impl Randomness {
    fn new() -> Self {
        Randomness {
            pool: [0; 4096],
            used: 4096,
        }
    }

    fn authenticator(&mut self) -> Result<[u8; 16]> {
        if self.used + 16 > self.pool.len() {
            OsRandom.fill(&mut self.pool)?;
            self.used = 0;
        }
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.pool[self.used..self.used + 16]);
        self.used += 16;
        Ok(a)
    }
}

fn push_attr(p: &mut Vec<u8>, kind: u8, value: &[u8]) {
    debug_assert!(value.len() <= 253);
    p.push(kind);
    p.push(value.len() as u8 + 2);
    p.extend_from_slice(value);
}

/// RFC 2865 §5.2.
fn hide_password(secret: &[u8], authenticator: &[u8; 16], password: &[u8]) -> Vec<u8> {
    let mut out = password.to_vec();
    out.resize(password.len().div_ceil(16).max(1) * 16, 0);
    let mut prev = *authenticator;
    for chunk in out.chunks_mut(16) {
        let b = Md5::new()
            .chain_update(secret)
            .chain_update(prev)
            .finalize();
        for (c, k) in chunk.iter_mut().zip(b.iter()) {
            *c ^= k;
        }
        prev.copy_from_slice(chunk);
    }
    out
}

fn hmac_md5(secret: &[u8], data: &[u8]) -> [u8; 16] {
    let mut mac = <Hmac<Md5> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn access_request(
    secret: &[u8],
    id: u8,
    authenticator: [u8; 16],
    user: &str,
    password: &[u8],
    state: Option<&[u8]>,
) -> Request {
    let mut p = Vec::with_capacity(128);
    p.extend_from_slice(&[ACCESS_REQUEST, id, 0, 0]);
    p.extend_from_slice(&authenticator);
    // Message-Authenticator first (the BlastRADIUS advice); value zero until signed.
    p.extend_from_slice(&[MESSAGE_AUTHENTICATOR, 18]);
    let ma_at = p.len();
    p.extend_from_slice(&[0; 16]);
    push_attr(&mut p, USER_NAME, user.as_bytes());
    push_attr(
        &mut p,
        USER_PASSWORD,
        &hide_password(secret, &authenticator, password),
    );
    if let Some(s) = state {
        push_attr(&mut p, STATE, s);
    }
    push_attr(&mut p, NAS_IDENTIFIER, b"radload");
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    let mac = hmac_md5(secret, &p);
    p[ma_at..ma_at + 16].copy_from_slice(&mac);
    Request {
        id,
        authenticator,
        bytes: p,
    }
}

/// A Status-Server (RFC 5997) with Message-Authenticator.
fn status_server(secret: &[u8], id: u8, authenticator: [u8; 16]) -> Request {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&[STATUS_SERVER, id, 0, 0]);
    p.extend_from_slice(&authenticator);
    p.extend_from_slice(&[MESSAGE_AUTHENTICATOR, 18]);
    let ma_at = p.len();
    p.extend_from_slice(&[0; 16]);
    push_attr(&mut p, NAS_IDENTIFIER, b"radload");
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    let mac = hmac_md5(secret, &p);
    p[ma_at..ma_at + 16].copy_from_slice(&mac);
    Request {
        id,
        authenticator,
        bytes: p,
    }
}

/// A reply that passed every check.
struct Reply {
    code: u8,
    state: Option<Vec<u8>>,
    reply_message: Option<String>,
    ma_first: bool,
}

#[derive(Debug, Clone, Copy)]
enum BadReply {
    Malformed,
    BadAuthenticator,
    MissingMa,
    BadMa,
}

fn check_reply(
    secret: &[u8],
    request_authenticator: &[u8; 16],
    data: &[u8],
    reply_ma: ReplyMa,
) -> std::result::Result<Reply, BadReply> {
    if data.len() < 20 {
        return Err(BadReply::Malformed);
    }
    let len = u16::from_be_bytes([data[2], data[3]]) as usize;
    if !(20..=data.len()).contains(&len) {
        return Err(BadReply::Malformed);
    }
    let data = &data[..len];
    let expect = Md5::new()
        .chain_update(&data[..4])
        .chain_update(request_authenticator)
        .chain_update(&data[20..])
        .chain_update(secret)
        .finalize();
    if expect.as_slice() != &data[4..20] {
        return Err(BadReply::BadAuthenticator);
    }
    let mut reply = Reply {
        code: data[0],
        state: None,
        reply_message: None,
        ma_first: false,
    };
    let mut ma_at = None;
    let mut at = 20;
    let mut first = true;
    while at < len {
        if at + 2 > len {
            return Err(BadReply::Malformed);
        }
        let (kind, alen) = (data[at], data[at + 1] as usize);
        if alen < 2 || at + alen > len {
            return Err(BadReply::Malformed);
        }
        let value = &data[at + 2..at + alen];
        match kind {
            MESSAGE_AUTHENTICATOR => {
                if alen != 18 || ma_at.is_some() {
                    return Err(BadReply::Malformed);
                }
                ma_at = Some(at + 2);
                reply.ma_first = first;
            }
            STATE => reply.state = Some(value.to_vec()),
            REPLY_MESSAGE => {
                reply.reply_message = Some(String::from_utf8_lossy(value).into_owned());
            }
            _ => {}
        }
        first = false;
        at += alen;
    }
    match ma_at {
        Some(ma) => {
            // RFC 2869 §5.14: over the reply with the Request Authenticator
            // in place and the Message-Authenticator value zeroed.
            let mut copy = data.to_vec();
            copy[4..20].copy_from_slice(request_authenticator);
            copy[ma..ma + 16].fill(0);
            if hmac_md5(secret, &copy) != data[ma..ma + 16] {
                return Err(BadReply::BadMa);
            }
        }
        None if reply_ma == ReplyMa::Required => return Err(BadReply::MissingMa),
        None => {}
    }
    Ok(reply)
}

// ---------------------------------------------------------------------------
// The outbox

/// The outbox file, read from where it ended when radload started. Each SMS
/// bumps its user's count and sets the user's latest code.
struct OutboxTail {
    path: PathBuf,
    /// None until the server has written its first SMS (it creates the file).
    file: Option<File>,
    partial: Vec<u8>,
    by_number: HashMap<String, usize>,
    seen: Vec<u32>,
    code: Vec<String>,
    unknown: u64,
}

impl OutboxTail {
    fn open(path: &PathBuf, by_number: HashMap<String, usize>, users: usize) -> Result<Self> {
        let file = match File::open(path) {
            Ok(mut f) => {
                f.seek(SeekFrom::End(0))?;
                Some(f)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot read outbox {}: {e}", path.display()).into()),
        };
        Ok(OutboxTail {
            path: path.clone(),
            file,
            partial: Vec::new(),
            by_number,
            seen: vec![0; users],
            code: vec![String::new(); users],
            unknown: 0,
        })
    }

    /// Reads whatever was appended since the last call.
    fn poll(&mut self) {
        if self.file.is_none() {
            // Created after we started: every line in it is new.
            self.file = File::open(&self.path).ok();
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let mut buf = [0u8; 65536];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            self.partial.extend_from_slice(&buf[..n]);
        }
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        for line in complete.split(|b| *b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
                self.unknown += 1;
                continue;
            };
            let (Some(to), Some(msg)) = (v["to"].as_str(), v["message"].as_str()) else {
                self.unknown += 1;
                continue;
            };
            match (self.by_number.get(to), extract_code(msg)) {
                (Some(&u), Some(code)) => {
                    self.seen[u] += 1;
                    self.code[u] = code;
                }
                _ => self.unknown += 1,
            }
        }
    }

    /// The code for `user` if an SMS arrived after the first `seen` of theirs.
    fn code_after(&mut self, user: usize, seen: u32) -> Option<String> {
        if self.seen[user] <= seen {
            self.poll();
        }
        (self.seen[user] > seen).then(|| self.code[user].clone())
    }
}

// ---------------------------------------------------------------------------
// The load

enum CodeSource {
    Fixed(String),
    Outbox(Mutex<OutboxTail>),
    /// --pending: round two never runs.
    None,
}

struct Shared {
    args: Box<Args>,
    code: CodeSource,
    started: AtomicU64,
    /// Round ones sent (logins begun), retransmits not counted.
    begun: AtomicU64,
    stop_at: Instant,
}

impl Shared {
    /// Whether another flow may start (the --flows and --duration bounds).
    fn may_start(&self, now: Instant) -> bool {
        if now >= self.stop_at {
            return false;
        }
        if self.args.pending.is_some() || self.args.flows == 0 {
            return true;
        }
        self.started.fetch_add(1, Ordering::Relaxed) < self.args.flows
    }
}

enum Phase {
    Idle,
    /// Round one sent.
    One {
        req: Request,
        sent: Instant,
        tries: u32,
        flow: Instant,
        sms_before: u32,
    },
    /// Challenge in hand, looking for the code.
    Code {
        state: Vec<u8>,
        since: Instant,
        flow: Instant,
        one: Duration,
        sms_before: u32,
    },
    /// Round two sent.
    Two {
        req: Request,
        sent: Instant,
        tries: u32,
        flow: Instant,
        one: Duration,
        wait: Duration,
    },
    /// No more flows for this slot.
    Done,
}

struct Slot {
    /// This slot's index among all slots (users g, g+W, g+2W, ... are its own).
    global: usize,
    user: usize,
    /// Identifiers [first_id, first_id + ids) on this slot's socket.
    first_id: u8,
    ids: u8,
    next_id: u8,
    phase: Phase,
}

#[derive(Default)]
struct Errors {
    timeout_one: u64,
    timeout_two: u64,
    no_sms: u64,
    reject_one: u64,
    reject_two: u64,
    unexpected_code: u64,
    no_state: u64,
    bad_authenticator: u64,
    bad_ma: u64,
    missing_ma: u64,
    malformed: u64,
    send: u64,
}

impl Errors {
    fn total(&self) -> u64 {
        self.timeout_one
            + self.timeout_two
            + self.no_sms
            + self.reject_one
            + self.reject_two
            + self.unexpected_code
            + self.no_state
            + self.bad_authenticator
            + self.bad_ma
            + self.missing_ma
            + self.malformed
            + self.send
    }

    fn add(&mut self, o: &Errors) {
        self.timeout_one += o.timeout_one;
        self.timeout_two += o.timeout_two;
        self.no_sms += o.no_sms;
        self.reject_one += o.reject_one;
        self.reject_two += o.reject_two;
        self.unexpected_code += o.unexpected_code;
        self.no_state += o.no_state;
        self.bad_authenticator += o.bad_authenticator;
        self.bad_ma += o.bad_ma;
        self.missing_ma += o.missing_ma;
        self.malformed += o.malformed;
        self.send += o.send;
    }

    fn describe(&self) -> String {
        let parts = [
            ("timeouts round one", self.timeout_one),
            ("timeouts round two", self.timeout_two),
            ("no SMS", self.no_sms),
            ("rejects round one", self.reject_one),
            ("rejects round two", self.reject_two),
            ("unexpected codes", self.unexpected_code),
            ("challenges without State", self.no_state),
            ("bad Response Authenticator", self.bad_authenticator),
            ("bad Message-Authenticator", self.bad_ma),
            ("missing Message-Authenticator", self.missing_ma),
            ("malformed", self.malformed),
            ("send failures", self.send),
        ];
        let s: Vec<String> = parts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(what, n)| format!("{n} {what}"))
            .collect();
        if s.is_empty() {
            "none".into()
        } else {
            s.join(", ")
        }
    }
}

#[derive(Default)]
struct Stats {
    completed: u64,
    challenges: u64,
    flow_us: Vec<u32>,
    one_us: Vec<u32>,
    two_us: Vec<u32>,
    wait_us: Vec<u32>,
    states: Vec<Vec<u8>>,
    errors: Errors,
    retransmits: u64,
    stray: u64,
    ma_not_first: u64,
    samples: Vec<String>,
}

impl Stats {
    fn sample(&mut self, s: String) {
        if self.samples.len() < 5 {
            self.samples.push(s);
        }
    }

    fn merge(&mut self, o: Stats) {
        self.completed += o.completed;
        self.challenges += o.challenges;
        self.flow_us.extend(o.flow_us);
        self.one_us.extend(o.one_us);
        self.two_us.extend(o.two_us);
        self.wait_us.extend(o.wait_us);
        self.states.extend(o.states);
        self.errors.add(&o.errors);
        self.retransmits += o.retransmits;
        self.stray += o.stray;
        self.ma_not_first += o.ma_not_first;
        for s in o.samples {
            self.sample(s);
        }
    }
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// One socket, its slots, one thread.
struct Worker<'a> {
    shared: &'a Shared,
    sock: UdpSocket,
    slots: Vec<Slot>,
    /// Identifier -> slot index.
    by_id: [Option<usize>; 256],
    rng: Randomness,
    stats: Stats,
}

impl Worker<'_> {
    fn next_id(slot: &mut Slot) -> u8 {
        let id = slot.first_id + slot.next_id;
        slot.next_id = (slot.next_id + 1) % slot.ids;
        id
    }

    fn send(&mut self, req: &Request) -> bool {
        match self.sock.send(&req.bytes) {
            Ok(_) => true,
            Err(e) => {
                self.stats.errors.send += 1;
                self.stats.sample(format!("send: {e}"));
                false
            }
        }
    }

    /// Starts round one in slot `i` if the bounds allow another flow.
    fn start(&mut self, i: usize, now: Instant) -> Result<()> {
        let args = &self.shared.args;
        if let Some(n) = args.pending {
            // Each user once: the slot moves on and never wraps.
            if self.slots[i].user >= n || !self.shared.may_start(now) {
                self.slots[i].phase = Phase::Done;
                return Ok(());
            }
        } else if !self.shared.may_start(now) {
            self.slots[i].phase = Phase::Done;
            return Ok(());
        }
        let user = self.slots[i].user;
        let sms_before = match &self.shared.code {
            CodeSource::Outbox(tail) => tail.lock().expect("outbox lock").seen[user],
            _ => 0,
        };
        let id = Self::next_id(&mut self.slots[i]);
        let auth = self.rng.authenticator()?;
        let name = user_name(&args.user_prefix, user);
        let req = access_request(
            &args.secret,
            id,
            auth,
            &name,
            args.password.as_bytes(),
            None,
        );
        let now = Instant::now();
        self.by_id[id as usize] = Some(i);
        let sent = self.send(&req);
        if sent {
            self.shared.begun.fetch_add(1, Ordering::Relaxed);
        }
        self.slots[i].phase = Phase::One {
            req,
            sent: now,
            tries: 0,
            flow: now,
            sms_before,
        };
        if !sent {
            self.finish(i);
        }
        Ok(())
    }

    /// Ends the slot's flow (success or not) and moves it to its next user.
    fn finish(&mut self, i: usize) {
        let w = self.shared.args.inflight;
        let users = self.shared.args.users;
        let slot = &mut self.slots[i];
        match &slot.phase {
            Phase::One { req, .. } | Phase::Two { req, .. } => {
                self.by_id[req.id as usize] = None;
            }
            _ => {}
        }
        slot.phase = Phase::Idle;
        slot.user += w;
        if self.shared.args.pending.is_none() && slot.user >= users {
            slot.user = slot.global;
        }
    }

    fn send_round_two(&mut self, i: usize, code: &str) -> Result<()> {
        let Phase::Code {
            state,
            since,
            flow,
            one,
            ..
        } = std::mem::replace(&mut self.slots[i].phase, Phase::Idle)
        else {
            unreachable!("round two from the Code phase only");
        };
        let args = &self.shared.args;
        let id = Self::next_id(&mut self.slots[i]);
        let auth = self.rng.authenticator()?;
        let name = user_name(&args.user_prefix, self.slots[i].user);
        let req = access_request(&args.secret, id, auth, &name, code.as_bytes(), Some(&state));
        let now = Instant::now();
        self.by_id[id as usize] = Some(i);
        let sent = self.send(&req);
        self.stats.wait_us.push(micros(now - since));
        self.slots[i].phase = Phase::Two {
            req,
            sent: now,
            tries: 0,
            flow,
            one,
            wait: now - since,
        };
        if !sent {
            self.finish(i);
        }
        Ok(())
    }

    /// Looks for the code of a slot holding a challenge; sends round two
    /// when it is there, gives up after the timeout.
    fn try_code(&mut self, i: usize, now: Instant) -> Result<()> {
        let Phase::Code {
            since, sms_before, ..
        } = &self.slots[i].phase
        else {
            return Ok(());
        };
        let (since, sms_before) = (*since, *sms_before);
        let code = match &self.shared.code {
            CodeSource::Fixed(c) => Some(c.clone()),
            CodeSource::Outbox(tail) => tail
                .lock()
                .expect("outbox lock")
                .code_after(self.slots[i].user, sms_before),
            CodeSource::None => None,
        };
        match code {
            Some(c) => self.send_round_two(i, &c),
            None => {
                if now - since > self.shared.args.timeout {
                    self.stats.errors.no_sms += 1;
                    let user = self.slots[i].user;
                    self.stats.sample(format!(
                        "no SMS for {} within {:?} of the challenge",
                        user_name(&self.shared.args.user_prefix, user),
                        self.shared.args.timeout
                    ));
                    self.finish(i);
                }
                Ok(())
            }
        }
    }

    fn on_datagram(&mut self, data: &[u8], at: Instant) -> Result<()> {
        let Some(i) = data.get(1).and_then(|id| self.by_id[*id as usize]) else {
            self.stats.stray += 1;
            return Ok(());
        };
        let authenticator = match &self.slots[i].phase {
            Phase::One { req, .. } | Phase::Two { req, .. } => req.authenticator,
            _ => {
                self.stats.stray += 1;
                return Ok(());
            }
        };
        let args = &self.shared.args;
        let reply = match check_reply(&args.secret, &authenticator, data, args.reply_ma) {
            Ok(r) => r,
            Err(bad) => {
                let e = &mut self.stats.errors;
                match bad {
                    BadReply::Malformed => e.malformed += 1,
                    BadReply::BadAuthenticator => e.bad_authenticator += 1,
                    BadReply::MissingMa => e.missing_ma += 1,
                    BadReply::BadMa => e.bad_ma += 1,
                }
                self.stats
                    .sample(format!("reply code {} id {}: {bad:?}", data[0], data[1]));
                self.finish(i);
                return Ok(());
            }
        };
        if !reply.ma_first {
            self.stats.ma_not_first += 1;
        }
        let user = self.slots[i].user;
        let phase = std::mem::replace(&mut self.slots[i].phase, Phase::Idle);
        match (phase, reply.code) {
            (
                Phase::One {
                    req,
                    sent,
                    flow,
                    sms_before,
                    ..
                },
                ACCESS_CHALLENGE,
            ) => {
                self.by_id[req.id as usize] = None;
                let one = at - sent;
                self.stats.one_us.push(micros(one));
                let Some(state) = reply.state else {
                    self.stats.errors.no_state += 1;
                    self.stats.sample("Access-Challenge without State".into());
                    self.finish(i);
                    return Ok(());
                };
                self.stats.challenges += 1;
                self.stats.states.push(state.clone());
                if args.pending.is_some() {
                    self.finish(i);
                    return Ok(());
                }
                self.slots[i].phase = Phase::Code {
                    state,
                    since: at,
                    flow,
                    one,
                    sms_before,
                };
                self.try_code(i, Instant::now())?;
            }
            (
                Phase::Two {
                    req,
                    sent,
                    flow,
                    one,
                    wait,
                    ..
                },
                ACCESS_ACCEPT,
            ) => {
                self.by_id[req.id as usize] = None;
                let two = at - sent;
                self.stats.two_us.push(micros(two));
                debug_assert!(one + wait + two <= at - flow + Duration::from_millis(1));
                self.stats.flow_us.push(micros(at - flow));
                self.stats.completed += 1;
                self.slots[i].phase = Phase::Idle;
                self.finish(i);
            }
            (phase, code) => {
                // Put the request back so finish() frees its Identifier.
                let one = matches!(phase, Phase::One { .. });
                self.slots[i].phase = phase;
                let e = &mut self.stats.errors;
                match (code, one) {
                    (ACCESS_REJECT, true) => e.reject_one += 1,
                    (ACCESS_REJECT, false) => e.reject_two += 1,
                    _ => e.unexpected_code += 1,
                }
                self.stats.sample(format!(
                    "{} got code {code} in round {} (Reply-Message {:?})",
                    user_name(&args.user_prefix, user),
                    if one { "one" } else { "two" },
                    reply.reply_message.unwrap_or_default()
                ));
                self.finish(i);
            }
        }
        Ok(())
    }

    /// Retransmits or gives up on requests past their timeout.
    fn check_timeouts(&mut self, now: Instant) {
        let timeout = self.shared.args.timeout;
        let retries = self.shared.args.retries;
        for i in 0..self.slots.len() {
            let (sent, tries, one) = match &mut self.slots[i].phase {
                Phase::One { sent, tries, .. } => (sent, tries, true),
                Phase::Two { sent, tries, .. } => (sent, tries, false),
                _ => continue,
            };
            if now - *sent < timeout {
                continue;
            }
            if *tries < retries {
                *tries += 1;
                *sent = now;
                let bytes = match &self.slots[i].phase {
                    Phase::One { req, .. } | Phase::Two { req, .. } => req.bytes.clone(),
                    _ => unreachable!(),
                };
                self.stats.retransmits += 1;
                if self.sock.send(&bytes).is_err() {
                    self.stats.errors.send += 1;
                }
                continue;
            }
            if one {
                self.stats.errors.timeout_one += 1;
            } else {
                self.stats.errors.timeout_two += 1;
            }
            let user = self.slots[i].user;
            self.stats.sample(format!(
                "{}: no reply in round {} within {timeout:?}",
                user_name(&self.shared.args.user_prefix, user),
                if one { "one" } else { "two" }
            ));
            self.finish(i);
        }
    }

    fn run(mut self) -> Result<Stats> {
        let mut buf = [0u8; MAX_PACKET];
        let mut tick = IDLE_TICK;
        self.sock.set_read_timeout(Some(tick))?;
        loop {
            let now = Instant::now();
            for i in 0..self.slots.len() {
                if matches!(self.slots[i].phase, Phase::Idle) {
                    self.start(i, now)?;
                }
            }
            if self.slots.iter().all(|s| matches!(s.phase, Phase::Done)) {
                break;
            }
            let waiting = self
                .slots
                .iter()
                .any(|s| matches!(s.phase, Phase::Code { .. }));
            let want = if waiting { CODE_POLL } else { IDLE_TICK };
            if want != tick {
                tick = want;
                self.sock.set_read_timeout(Some(tick))?;
            }
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let at = Instant::now();
                    self.on_datagram(&buf[..n], at)?;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                // ECONNREFUSED from an earlier send: nobody listens (yet).
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    self.stats.sample(format!("recv: {e}"));
                }
                Err(e) => return Err(e.into()),
            }
            let now = Instant::now();
            if waiting {
                for i in 0..self.slots.len() {
                    self.try_code(i, now)?;
                }
            }
            self.check_timeouts(now);
        }
        Ok(self.stats)
    }
}

/// What the probe thread measured: answers that need no SMS.
#[derive(Default)]
struct Probes {
    status_us: Vec<u32>,
    state_us: Vec<u32>,
    /// No valid answer within the timeout.
    lost: u64,
    /// An answer of the wrong code (Status-Server: Accept; an unknown
    /// State: Reject).
    unexpected: u64,
}

/// Every `interval`, one request that needs no SMS, alternately a
/// Status-Server and an Access-Request with a State never issued; waits
/// for its answer (up to --timeout) before the next. Until `stop`.
fn probe(
    shared: &Shared,
    interval: Duration,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Probes> {
    let args = &shared.args;
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.connect(args.target)?;
    let mut rng = Randomness::new();
    let mut out = Probes::default();
    let mut buf = [0u8; MAX_PACKET];
    let user = format!("{}probe", args.user_prefix);
    let mut id = 0u8;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
            continue;
        }
        next += interval;
        id = id.wrapping_add(1);
        let status = id % 2 == 0;
        let auth = rng.authenticator()?;
        let req = if status {
            status_server(&args.secret, id, auth)
        } else {
            let state = rng.authenticator()?;
            access_request(&args.secret, id, auth, &user, b"000000", Some(&state))
        };
        let sent = Instant::now();
        sock.send(&req.bytes)?;
        let deadline = sent + args.timeout;
        let answered = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            sock.set_read_timeout(Some(left))?;
            match sock.recv(&mut buf) {
                Ok(n) if n > 1 && buf[1] == id => {
                    let at = Instant::now();
                    if let Ok(r) =
                        check_reply(&args.secret, &req.authenticator, &buf[..n], args.reply_ma)
                    {
                        break Some((r.code, at - sent));
                    }
                }
                // A late answer to an earlier probe.
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break None
                }
                Err(e) => return Err(e.into()),
            }
        };
        match answered {
            None => out.lost += 1,
            Some((code, took)) => {
                let want = if status { ACCESS_ACCEPT } else { ACCESS_REJECT };
                if code != want {
                    out.unexpected += 1;
                }
                if status {
                    out.status_us.push(micros(took));
                } else {
                    out.state_us.push(micros(took));
                }
            }
        }
    }
    Ok(out)
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

fn latency_row(name: &str, v: &mut [u32]) -> String {
    v.sort_unstable();
    format!(
        "    {name:<12} {:>8.3} {:>8.3} {:>8.3} {:>8.3}   (n={})",
        percentile(v, 0.50),
        percentile(v, 0.90),
        percentile(v, 0.99),
        percentile(v, 1.0),
        v.len()
    )
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().map(|a| shell_quote(&a)).collect();
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| ".".into());
    format!("cd {} && {}", shell_quote(&cwd), args.join(" "))
}

fn load(args: Box<Args>) -> Result<()> {
    let mut args = args;
    let code = if let Some(c) = args.fixed_code.clone() {
        CodeSource::Fixed(c)
    } else if args.pending.is_some() && args.outbox.is_none() {
        CodeSource::None
    } else {
        let (phones, outbox) = (
            args.phones
                .clone()
                .ok_or("--phones is required with --outbox")?,
            args.outbox
                .clone()
                .ok_or("--outbox is required with --phones")?,
        );
        let (by_number, users) = read_phones(&phones, &args.user_prefix)?;
        if args.users == 0 {
            args.users = users;
        } else if args.users > users {
            return Err(format!(
                "--users {} but {} lists {users}",
                args.users,
                phones.display()
            )
            .into());
        }
        CodeSource::Outbox(Mutex::new(OutboxTail::open(&outbox, by_number, users)?))
    };
    let needed = args.pending.unwrap_or(args.inflight);
    if args.users < needed {
        return Err(format!(
            "{} users for {} {}: each in-flight flow needs a user of its own",
            args.users,
            needed,
            if args.pending.is_some() {
                "pending challenges"
            } else {
                "flows in flight"
            }
        )
        .into());
    }
    if args.pending.is_some() {
        args.users = needed;
    }

    let w = args.inflight;
    let k = args.sockets;
    let per_socket = w.div_ceil(k);
    let ids = (256 / per_socket).min(255) as u8;
    let mut sockets = Vec::new();
    for _ in 0..k {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.connect(args.target)?;
        sockets.push(s);
    }

    let started = Instant::now();
    let shared = Shared {
        stop_at: started + args.duration,
        args,
        code,
        started: AtomicU64::new(0),
        begun: AtomicU64::new(0),
    };
    let mut total = Stats::default();
    let mut probes = None;
    let probing = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<()> {
        let prober = shared.args.probe_interval.map(|interval| {
            let (shared, probing) = (&shared, &probing);
            scope.spawn(move || probe(shared, interval, probing).map_err(|e| e.to_string()))
        });
        let mut handles = Vec::new();
        let mut global = 0;
        for sock in sockets {
            let mut slots = Vec::new();
            for j in 0..per_socket {
                if global == w {
                    break;
                }
                slots.push(Slot {
                    global,
                    user: global,
                    first_id: (j * ids as usize) as u8,
                    ids,
                    next_id: 0,
                    phase: Phase::Idle,
                });
                global += 1;
            }
            let worker = Worker {
                shared: &shared,
                sock,
                slots,
                by_id: [None; 256],
                rng: Randomness::new(),
                stats: Stats::default(),
            };
            handles.push(scope.spawn(move || worker.run().map_err(|e| e.to_string())));
        }
        let mut result = Ok(());
        for h in handles {
            match h.join().map_err(|_| "a worker thread panicked".to_string()) {
                Ok(Ok(stats)) => total.merge(stats),
                Ok(Err(e)) | Err(e) => result = Err(e),
            }
        }
        probing.store(true, Ordering::Relaxed);
        if let Some(p) = prober {
            probes = Some(p.join().map_err(|_| "the probe thread panicked")??);
        }
        Ok(result?)
    })?;
    let elapsed = started.elapsed();
    report(&shared, total, probes, elapsed);
    Ok(())
}

fn report(shared: &Shared, mut s: Stats, probes: Option<Probes>, elapsed: Duration) {
    let a = &shared.args;
    let secs = elapsed.as_secs_f64();
    let distinct: HashSet<&Vec<u8>> = s.states.iter().collect();
    let duplicates = s.states.len() - distinct.len();
    let errors = s.errors.total();
    println!(
        "radload {}: {} in flight over {} sockets against {}",
        a.label, a.inflight, a.sockets, a.target
    );
    if let Some(n) = a.pending {
        println!(
            "  challenges        {} of {n} pending in {secs:.2} s = {:.1} per second",
            s.challenges,
            s.challenges as f64 / secs
        );
    } else {
        println!(
            "  flows completed   {} in {secs:.2} s = {:.1} flows/s",
            s.completed,
            s.completed as f64 / secs
        );
    }
    println!("  errors            {errors} ({})", s.errors.describe());
    if s.retransmits + s.stray > 0 {
        println!(
            "  retransmits {}, stray or late replies {}",
            s.retransmits, s.stray
        );
    }
    println!(
        "  State values      {} distinct of {} ({duplicates} handed out twice)",
        distinct.len(),
        s.states.len()
    );
    if let CodeSource::Outbox(tail) = &shared.code {
        let unknown = tail.lock().map_or(0, |t| t.unknown);
        if unknown > 0 {
            println!("  outbox lines for no user of this run or without a code: {unknown}");
        }
    }
    if s.ma_not_first > 0 {
        println!(
            "  replies with Message-Authenticator not first: {}",
            s.ma_not_first
        );
    }
    println!("  latency (ms)          p50      p90      p99      max");
    if a.pending.is_none() {
        println!("{}", latency_row("whole flow", &mut s.flow_us));
    }
    println!("{}", latency_row("round one", &mut s.one_us));
    if a.pending.is_none() {
        println!("{}", latency_row("code lookup", &mut s.wait_us));
        println!("{}", latency_row("round two", &mut s.two_us));
    }
    // Every request answered, of both rounds: what a NAS waits for.
    let mut requests: Vec<u32> = s.one_us.iter().chain(&s.two_us).copied().collect();
    println!("{}", latency_row("any request", &mut requests));
    let mut fast: Vec<u32> = Vec::new();
    let mut fast_lost = 0;
    if let Some(mut p) = probes {
        println!(
            "  answers that need no SMS (one at a time, every {:?}; {} unanswered, {} of the wrong code):",
            a.probe_interval.unwrap_or_default(),
            p.lost,
            p.unexpected
        );
        println!("{}", latency_row("Status-Server", &mut p.status_us));
        println!("{}", latency_row("unknown State", &mut p.state_us));
        fast = p.status_us.iter().chain(&p.state_us).copied().collect();
        println!("{}", latency_row("either", &mut fast));
        fast_lost = p.lost + p.unexpected;
    }
    for sample in &s.samples {
        println!("  e.g. {sample}");
    }
    println!("  reproduce: {}", command_line());
    // One machine-readable line for scripts/bench-radius.sh.
    let rate = if a.pending.is_some() {
        s.challenges
    } else {
        s.completed
    } as f64
        / secs;
    let main = if a.pending.is_some() {
        &s.one_us
    } else {
        &s.flow_us
    };
    println!(
        "RESULT label={} begun={} completed={} challenges={} errors={errors} duplicate_states={duplicates} seconds={secs:.3} rate={rate:.1} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} round1_p99_ms={:.3} round2_p99_ms={:.3} request_p50_ms={:.3} request_p99_ms={:.3} fast_n={} fast_lost={fast_lost} fast_p50_ms={:.3} fast_p99_ms={:.3} fast_max_ms={:.3} retransmits={}",
        a.label,
        shared.begun.load(Ordering::Relaxed),
        s.completed,
        s.challenges,
        percentile(main, 0.5),
        percentile(main, 0.99),
        percentile(main, 1.0),
        percentile(&s.one_us, 0.99),
        percentile(&s.two_us, 0.99),
        percentile(&requests, 0.5),
        percentile(&requests, 0.99),
        fast.len(),
        percentile(&fast, 0.5),
        percentile(&fast, 0.99),
        percentile(&fast, 1.0),
        s.retransmits,
    );
}

fn main() {
    let r = match parse_args() {
        Ok(Job::Write {
            users,
            prefix,
            password,
            phones,
            freeradius,
        }) => write_users(users, &prefix, &password, phones, freeradius),
        Ok(Job::Load(args)) => load(args),
        Err(e) => Err(e),
    };
    if let Err(e) = r {
        eprintln!("radload: {e}");
        std::process::exit(2);
    }
}
