//! Issue #20 point 5: smsotp-radiusd under a flood of new Access-Requests
//! at ten times what it can answer still answers the users typing their
//! codes (RFC 5080 §2.2.3), sheds the flood with a rate-limited warning,
//! keeps its memory bounded and stays up.
//!
//! The server runs with one worker, `primary = none` and the outbox
//! provider: nothing waits, so the worker decides every request itself
//! and the CPU is what runs out. One worker, so that on a 2-core machine
//! the other core is left to the test's flood: with two, the server
//! takes both cores and the flood cannot reach ten times its capacity.
//! The flood is first rounds of users without a phone number: each
//! costs a full decision (decoding, Message-Authenticator, directory,
//! store, audit line), the same every time, and sends no SMS (the global
//! SMS limit stays untouched). It comes from 16 source ports (a proxy's,
//! or several NASes'), so that each packet the test builds is sent 16
//! times as 16 distinct requests. Rates
//! are never absolute: the test first measures what the server answers
//! in a closed loop, on this machine and under its current load, and
//! floods at ten times that (and fails if it could not).
//!
//! Needs a built server (`cargo build --workspace`). Takes about 10 s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use smsotp_e2e::radiusd::{
    attr, check_reply, code, random_bytes, ClientSpec, Item, Nas, Radiusd, Request, ServerSpec,
    STOP_TIMEOUT,
};
use smsotp_e2e::Scratch;

const SECRET: &str = "e2e-overload-secret-5c1e";
const NAS_PASSWORD: &str = "nas-pw-7310";
/// Users who type their code during the flood.
const USERS: usize = 50;
const WORKERS: u32 = 1;
/// How long the closed-loop measurement runs.
const MEASURE: Duration = Duration::from_millis(1500);
/// Requests the measurement keeps in flight: enough to keep both workers
/// busy, few enough not to queue.
const WINDOW: usize = 8;
/// The flood: ten times the measured capacity, for this long.
const OVERLOAD: f64 = 10.0;
const FLOOD: Duration = Duration::from_secs(6);
/// Source ports the flood comes from.
const FLOOD_SOCKETS: usize = 16;
/// The users start answering this long into the flood (the server's
/// buffers are full by then), spread over `SPREAD`.
const USERS_START: Duration = Duration::from_secs(1);
const SPREAD: Duration = Duration::from_secs(1);
/// A NAS's retransmits: tries and the wait for each.
const TRIES: usize = 3;
const TRY_WAIT: Duration = Duration::from_secs(1);
/// Share of the users whose code must be answered.
const REQUIRED: f64 = 0.95;
/// What the server's resident memory may grow by during the flood: the
/// queues (2 × 1024 datagrams of 4 KiB at most), the duplicate cache and
/// SQLite's page cache stay well below; an unbounded queue would not.
const RSS_GROWTH_MAX_KIB: u64 = 48 * 1024;

/// 50 users with numbers core accepts: +1 201 555-0100 to -0149.
fn numbers() -> Vec<(String, String)> {
    (0..USERS)
        .map(|i| (format!("user{i:02}"), format!("+12015550{}", 100 + i)))
        .collect()
}

/// Flood requests: unique (Identifier, Request Authenticator) pairs, so
/// the duplicate cache never answers for them from one source port.
/// Built from one template with HMAC's key blocks hashed once.
struct Flood {
    secret: Vec<u8>,
    prefix: [u8; 8],
    n: u64,
    /// MD5 after HMAC's inner and outer key blocks.
    inner: Md5,
    outer: Md5,
}

/// User names of the flood: `nobody0000` to `nobody4999`, all without a
/// number.
const FLOOD_NAMES: u64 = 5000;

impl Flood {
    fn new(secret: &str) -> Flood {
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&random_bytes(8));
        let secret = secret.as_bytes().to_vec();
        assert!(secret.len() <= 64, "HMAC key longer than a block");
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for (i, b) in secret.iter().enumerate() {
            ipad[i] ^= b;
            opad[i] ^= b;
        }
        let (mut inner, mut outer) = (Md5::new(), Md5::new());
        inner.update(ipad);
        outer.update(opad);
        Flood {
            secret,
            prefix,
            n: 0,
            inner,
            outer,
        }
    }

    /// The next packet without taking it.
    fn clone_next(&self) -> (Request, Vec<u8>) {
        let mut f = Flood::new(std::str::from_utf8(&self.secret).unwrap());
        f.prefix = self.prefix;
        f.n = self.n;
        f.next()
    }

    /// The next first round: a user without a number, a fresh
    /// authenticator. Returns the request (to check its reply) and its
    /// bytes.
    fn next(&mut self) -> (Request, Vec<u8>) {
        self.n += 1;
        let mut authenticator = [0u8; 16];
        authenticator[..8].copy_from_slice(&self.prefix);
        authenticator[8..].copy_from_slice(&self.n.to_be_bytes());
        let mut req = Request {
            code: code::ACCESS_REQUEST,
            id: self.n as u8,
            authenticator,
            items: vec![Item::MessageAuthenticator],
        };
        let name = format!("nobody{:04}", self.n % FLOOD_NAMES);
        // Message-Authenticator first, as Request::encode puts it.
        let mut p = Vec::with_capacity(20 + 18 + 2 + name.len() + 18);
        p.extend_from_slice(&[code::ACCESS_REQUEST, req.id, 0, 0]);
        p.extend_from_slice(&req.authenticator);
        p.extend_from_slice(&[attr::MESSAGE_AUTHENTICATOR, 18]);
        p.extend_from_slice(&[0u8; 16]);
        p.extend_from_slice(&[attr::USER_NAME, (2 + name.len()) as u8]);
        p.extend_from_slice(name.as_bytes());
        // User-Password (RFC 2865 5.2): one block, the password padded
        // with NULs, XORed with MD5(secret, authenticator).
        let mut pad: [u8; 16] = Md5::new()
            .chain_update(&self.secret)
            .chain_update(req.authenticator)
            .finalize()
            .into();
        for (b, c) in pad.iter_mut().zip(NAS_PASSWORD.as_bytes()) {
            *b ^= c;
        }
        p.extend_from_slice(&[attr::USER_PASSWORD, 18]);
        p.extend_from_slice(&pad);
        let len = (p.len() as u16).to_be_bytes();
        p[2..4].copy_from_slice(&len);
        let inner = self.inner.clone().chain_update(&p).finalize();
        let mac = self.outer.clone().chain_update(inner).finalize();
        p[22..38].copy_from_slice(&mac);
        // What the reply is checked against.
        req = req.user(&name).password(NAS_PASSWORD);
        (req, p)
    }
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Replies per second to first rounds in a closed loop with [`WINDOW`]
/// requests in flight.
fn capacity(srv: &Radiusd, flood: &mut Flood) -> f64 {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut pending: HashMap<u8, Request> = HashMap::new();
    let send = |flood: &mut Flood, pending: &mut HashMap<u8, Request>| loop {
        let (req, bytes) = flood.next();
        if pending.contains_key(&req.id) {
            continue;
        }
        sock.send_to(&bytes, srv.v4()).unwrap();
        pending.insert(req.id, req);
        return;
    };
    for _ in 0..WINDOW {
        send(flood, &mut pending);
    }
    let mut buf = vec![0u8; 4096];
    let start = Instant::now();
    let mut answered = 0u64;
    while start.elapsed() < MEASURE {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => panic!(
                "no reply within 2 s while measuring ({answered} so far): {e}\n{}",
                srv.context()
            ),
        };
        let Some(req) = buf.get(1).and_then(|id| pending.remove(id)) else {
            continue;
        };
        check_reply(&buf[..n], req.id, &req.authenticator, SECRET.as_bytes())
            .unwrap_or_else(|e| panic!("bad reply while measuring: {e}"));
        answered += 1;
        send(flood, &mut pending);
    }
    answered as f64 / start.elapsed().as_secs_f64()
}

/// What one user's answer came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    Accept,
    Other(u8),
    Nothing,
}

/// Sends the code with its State, and the same datagram again (a NAS's
/// retransmit: same Identifier and authenticator) after each [`TRY_WAIT`]
/// without a reply, [`TRIES`] times in all.
fn answer(nas: &Nas, req: &Request) -> (Got, usize) {
    let bytes = nas.encode(req);
    for try_no in 1..=TRIES {
        nas.send_bytes(&bytes);
        let deadline = Instant::now() + TRY_WAIT;
        while let Some(reply) = nas.recv_bytes(deadline.saturating_duration_since(Instant::now())) {
            // A late reply to an earlier copy is the same reply.
            if let Ok(p) = check_reply(&reply, req.id, &req.authenticator, &nas.secret) {
                return match p.code {
                    code::ACCESS_ACCEPT => (Got::Accept, try_no),
                    other => (Got::Other(other), try_no),
                };
            }
        }
    }
    (Got::Nothing, TRIES)
}

/// Sends `packets` to `server` at `rate` a second for `length`, from
/// [`FLOOD_SOCKETS`] ports in turn, each sending every packet once (so
/// `packets` must hold a share of `rate × length`); returns how many left
/// and in what time.
fn flood_at(
    server: SocketAddr,
    packets: Arc<Vec<Vec<u8>>>,
    rate: f64,
    length: Duration,
) -> std::thread::JoinHandle<(u64, Duration)> {
    std::thread::spawn(move || {
        let socks: Vec<UdpSocket> = (0..FLOOD_SOCKETS)
            .map(|_| {
                let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                sock.connect(server).unwrap();
                sock
            })
            .collect();
        let total = ((rate * length.as_secs_f64()) as usize).min(packets.len() * FLOOD_SOCKETS);
        let start = Instant::now();
        let (mut next, mut sent) = (0usize, 0u64);
        while next < total && start.elapsed() < length {
            let due = ((start.elapsed().as_secs_f64() * rate) as usize).min(total);
            if next >= due {
                std::thread::sleep(Duration::from_micros(500));
                continue;
            }
            for i in next..due {
                let (sock, packet) = (i / packets.len(), i % packets.len());
                // A full socket buffer here is the machine's limit, not
                // the server's: count only what left.
                if socks[sock].send(&packets[packet]).is_ok() {
                    sent += 1;
                }
            }
            next = due;
        }
        (sent, start.elapsed())
    })
}

#[test]
fn codes_are_answered_under_a_flood_of_new_requests() {
    let scratch = Scratch::new();
    let users = numbers();
    let entries: Vec<(&str, &str)> = users
        .iter()
        .map(|(u, n)| (u.as_str(), n.as_str()))
        .collect();
    scratch.phones(&entries);
    let mut spec = ServerSpec::new(vec![ClientSpec::new("vpn", "127.0.0.1", SECRET)]);
    spec.workers = WORKERS;
    spec.ipv6 = false;
    let mut srv = Radiusd::start(&scratch, spec);
    let pid = srv.pid();

    // Each user gets a challenge and its SMS before the flood.
    let nases: Vec<Nas> = (0..USERS).map(|_| srv.nas("127.0.0.1", "vpn")).collect();
    let mut states = Vec::new();
    for ((user, _), nas) in users.iter().zip(&nases) {
        let req = Request::access(nas.id()).user(user).password(NAS_PASSWORD);
        let reply = nas.exchange(&req, &|| srv.context());
        srv.assert_code(&reply, code::ACCESS_CHALLENGE, "first round");
        states.push(reply.state());
    }
    let outbox = scratch.outbox();
    let deadline = Instant::now() + Duration::from_secs(5);
    while outbox.count() < USERS {
        assert!(Instant::now() < deadline, "{USERS} SMS not in the outbox");
        std::thread::sleep(Duration::from_millis(20));
    }
    let codes: HashMap<String, String> = outbox
        .all()
        .into_iter()
        .map(|sms| (sms.to.clone(), sms.code()))
        .collect();
    let answers: Vec<Request> = users
        .iter()
        .zip(&nases)
        .zip(&states)
        .map(|(((user, number), nas), state)| {
            let code = codes
                .get(number)
                .unwrap_or_else(|| panic!("no SMS to {user}"));
            Request::access(nas.id())
                .user(user)
                .password(code)
                .state(state)
        })
        .collect();

    // What the server can answer, here and now.
    let mut flood = Flood::new(SECRET);
    let (first, bytes) = flood.clone_next();
    assert_eq!(
        bytes,
        first.encode(SECRET.as_bytes()),
        "the flood's packets"
    );
    let capacity = capacity(&srv, &mut flood);
    let rate = capacity * OVERLOAD;
    let rss_before = rss_kib(pid).expect("VmRSS of the server");
    let mark = srv.log_mark();
    eprintln!("capacity {capacity:.0} requests/s; flooding at {rate:.0}/s for {FLOOD:?}");

    // The flood, built beforehand so that sending it is all the flooding
    // thread does, paced by the clock; its replies are never read. It
    // comes from FLOOD_SOCKETS source ports (a proxy's, or several
    // NASes'), each sending every packet once: a duplicate is a new
    // request from another port, so an unoptimised test build needs to
    // compute only a share of the packets.
    let built = Instant::now();
    let total = (rate * FLOOD.as_secs_f64()) as usize;
    let packets: Vec<Vec<u8>> = (0..total.div_ceil(FLOOD_SOCKETS))
        .map(|_| flood.next().1)
        .collect();
    eprintln!(
        "built {} flood packets in {:.1?}",
        packets.len(),
        built.elapsed()
    );
    let packets = Arc::new(packets);
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood_at(srv.v4(), packets.clone(), rate, FLOOD);
    // The server's memory, sampled meanwhile.
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut max = 0u64;
            while !stop.load(Ordering::Relaxed) {
                max = max.max(rss_kib(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(50));
            }
            max
        })
    };

    // The users answer during the flood, each from its own NAS socket.
    std::thread::sleep(USERS_START);
    let results: Vec<(Got, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = nases
            .into_iter()
            .zip(&answers)
            .enumerate()
            .map(|(i, (nas, req))| {
                s.spawn(move || {
                    std::thread::sleep(SPREAD.mul_f64(i as f64 / USERS as f64));
                    answer(&nas, req)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (flooded, flood_time) = flooder.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let rss_max = sampler.join().unwrap();

    let accepted = results.iter().filter(|(g, _)| *g == Got::Accept).count();
    let retried = results
        .iter()
        .filter(|(g, t)| *g == Got::Accept && *t > 1)
        .count();
    let achieved = flooded as f64 / flood_time.as_secs_f64();
    let share = accepted as f64 / USERS as f64;
    eprintln!(
        "flood: {flooded} requests in {flood_time:.1?} ({achieved:.0}/s, {:.1}× capacity); \
         codes answered: {accepted}/{USERS} ({:.0}%), {retried} after a retransmit; \
         RSS {rss_before} KiB before, {rss_max} KiB at most during the flood",
        achieved / capacity,
        share * 100.0
    );
    let log = srv.log();
    let overload: Vec<&str> = log[mark..]
        .lines()
        .filter(|l| l.contains("event=overload"))
        .collect();
    let overload_lines = overload.len();
    let not_answered: Vec<_> = results
        .iter()
        .enumerate()
        .filter(|(_, (g, _))| *g != Got::Accept)
        .map(|(i, r)| format!("user{i:02}: {r:?}"))
        .collect();
    assert!(
        share >= REQUIRED,
        "only {accepted} of {USERS} codes answered with Access-Accept under a flood at {:.1}× \
         capacity ({capacity:.0}/s); not answered: {not_answered:?}\n{}",
        achieved / capacity,
        srv.context()
    );
    // The flood really was one: otherwise the test proves nothing.
    assert!(
        achieved >= capacity * OVERLOAD * 0.5,
        "the flood reached only {achieved:.0}/s against a capacity of {capacity:.0}/s"
    );
    assert!(
        (1..=2).contains(&overload_lines),
        "expected one rate-limited overload warning, got {overload_lines}\n{}",
        srv.context()
    );
    // It says what happened and which setting bounds it.
    assert!(
        overload[0].contains("radius.max_queued") && overload[0].contains("dropped"),
        "{}",
        overload[0]
    );
    eprintln!("{}", overload[0]);
    assert!(
        rss_max <= rss_before + RSS_GROWTH_MAX_KIB,
        "RSS grew from {rss_before} KiB to {rss_max} KiB during the flood"
    );

    // Still up, and answering as before once the flood is over.
    assert!(srv.running(), "the server died\n{}", srv.context());
    let nas = srv.nas("127.0.0.1", "vpn");
    // The flood's queued requests drain first: wait for the status reply.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = Request::status(nas.id());
        nas.send_bytes(&nas.encode(&status));
        if let Some(r) = nas.recv_bytes(Duration::from_secs(1)) {
            if let Ok(p) = check_reply(&r, status.id, &status.authenticator, &nas.secret) {
                assert_eq!(p.code, code::ACCESS_ACCEPT, "Status-Server");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no answer to Status-Server after the flood\n{}",
            srv.context()
        );
    }
    let seen = outbox.count();
    let req = Request::access(nas.id())
        .user("user00")
        .password(NAS_PASSWORD);
    let reply = nas.exchange(&req, &|| srv.context());
    srv.assert_code(
        &reply,
        code::ACCESS_CHALLENGE,
        "a new login after the flood",
    );
    let code = outbox.wait_beyond(seen, Duration::from_secs(5)).code();
    let req = Request::access(nas.id())
        .user("user00")
        .password(&code)
        .state(&reply.state());
    let reply = nas.exchange(&req, &|| srv.context());
    srv.assert_code(&reply, code::ACCESS_ACCEPT, "its code after the flood");

    // Stopped in the middle of a flood, it exits cleanly: the answers
    // queued decided, the new requests queued dropped and counted.
    let burst = flood_at(srv.v4(), packets, rate, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(500));
    let mark = srv.log_mark();
    let status = srv.terminate(STOP_TIMEOUT);
    let _ = burst.join();
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM during a flood: {status:?}\n{}",
        srv.context()
    );
    let log = srv.log();
    let stopped = log[mark..]
        .lines()
        .find(|l| l.contains("event=stopped"))
        .unwrap_or_else(|| panic!("no stop line\n{log}"));
    eprintln!("{stopped}");
}
