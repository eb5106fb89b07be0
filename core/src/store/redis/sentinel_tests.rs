//! The store behind Redis Sentinel, against real `redis-server`s on
//! 127.0.0.1 (ports from the OS) and either a real `redis-sentinel` or a
//! scripted one (a thread that answers PING and `SENTINEL
//! get-master-addr-by-name` with whatever the test set), all stopped on
//! drop: asking the sentinels in order, skipping a stale view, all
//! failing, following a demoted master, durable writes, the no-thread
//! probe on the sentinel path.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{sentinel_view, RedisStore};
use crate::config::{RedisAddr, RedisSpec, SentinelSpec};
use crate::store::{PhoneRecord, Store, StoreError};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(super) fn installed(program: &str) -> bool {
    let ok = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        eprintln!(
            "\n\n*** SKIPPED: {program} is not installed; Redis Sentinel is NOT tested \
             (scripts/deps.sh test) ***\n\n"
        );
    }
    ok
}

/// A `redis-server` or `redis-sentinel` on 127.0.0.1, its own temp dir.
pub(crate) struct Node {
    child: Child,
    pub(crate) port: u16,
    dir: tempfile::TempDir,
}

impl Node {
    /// A redis-server (extra: more `--option value` words).
    pub(super) fn server(extra: &[&str]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            // A replica's first sync at once, not after 5 s.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Node::wait(child, port, dir)
    }

    /// A redis-sentinel watching `name` at the master's port.
    fn sentinel(name: &str, master_port: u16) -> Node {
        Node::sentinel_with(name, master_port, "")
    }

    /// The same, with more lines for its config file.
    fn sentinel_with(name: &str, master_port: u16, extra: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "bind 127.0.0.1\nport {port}\ndir {}\nsentinel monitor {name} 127.0.0.1 {master_port} 1\n{extra}",
                dir.path().display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-sentinel")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Node::wait(child, port, dir)
    }

    fn wait(child: Child, port: u16, dir: tempfile::TempDir) -> Node {
        let node = Node { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "port {port} not open in 5 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        node
    }

    /// Waits (< 5 s) until a replica of this master is online.
    pub(super) fn wait_for_replica(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self
            .cmd::<String>(&["INFO", "replication"])
            .contains("state=online")
        {
            assert!(
                Instant::now() < deadline,
                "the replica did not come online in 5 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(super) fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c).unwrap()
    }
}

impl Node {
    /// Its temp dir (its append-only file is in there).
    pub(super) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scripted sentinel: answers PING, and `SENTINEL
/// get-master-addr-by-name` with `answer` (nil when `None`), until
/// dropped.
struct FakeSentinel {
    port: u16,
    answer: Arc<Mutex<Option<u16>>>,
    stop: Arc<AtomicBool>,
}

impl FakeSentinel {
    fn new(master_port: Option<u16>) -> FakeSentinel {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(Mutex::new(master_port));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (answer.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let a = a.clone();
                        std::thread::spawn(move || serve(conn, &a));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeSentinel { port, answer, stop }
    }

    fn set(&self, master_port: Option<u16>) {
        *self.answer.lock().unwrap() = master_port;
    }
}

/// Reads RESP arrays of bulk strings; answers each.
fn serve(conn: TcpStream, answer: &Mutex<Option<u16>>) {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let Some(n) = line
            .trim()
            .strip_prefix('*')
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return;
        };
        let mut words = Vec::new();
        for _ in 0..n {
            line.clear();
            let _ = r.read_line(&mut line);
            line.clear();
            let _ = r.read_line(&mut line);
            words.push(line.trim().to_ascii_uppercase());
        }
        let reply = match words.first().map(String::as_str) {
            Some("PING") => "+PONG\r\n".to_owned(),
            Some("SENTINEL") => match *answer.lock().unwrap() {
                Some(p) => {
                    let p = p.to_string();
                    format!("*2\r\n$9\r\n127.0.0.1\r\n${}\r\n{p}\r\n", p.len())
                }
                None => "*-1\r\n".to_owned(),
            },
            _ => "-ERR unknown command\r\n".to_owned(),
        };
        if w.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

impl Drop for FakeSentinel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn spec(sentinels: &[u16], name: &str) -> RedisSpec {
    let s = SentinelSpec {
        sentinels: sentinels
            .iter()
            .map(|&p| ("127.0.0.1".to_owned(), p))
            .collect(),
        master_name: name.to_owned(),
        username: None,
        password_file: None,
    };
    RedisSpec {
        url: s.url(),
        addr: RedisAddr::Sentinel(Box::new(s)),
        username: None,
        password_file: None,
        db: 0,
        key_prefix: "sent:".into(),
        connect_timeout: Duration::from_millis(500),
        timeout: Duration::from_millis(1000),
    }
}

fn phone(n: i64) -> PhoneRecord {
    PhoneRecord {
        e164: "+12025550143".into(),
        set_at: n,
        set_by: "admin:root".into(),
    }
}

fn text(e: &StoreError) -> String {
    format!(
        "{e}: {}",
        std::error::Error::source(e)
            .map(|s| s.to_string())
            .unwrap_or_default()
    )
}

#[test]
fn a_real_sentinel_names_the_master_and_the_store_follows_it() {
    if !installed("redis-server") || !installed("redis-sentinel") {
        return;
    }
    let master = Node::server(&[]);
    let sentinel = Node::sentinel("mymaster", master.port);
    let dead = free_port();
    let spec = spec(&[dead, sentinel.port], "mymaster");
    let view = sentinel_view(&spec);
    assert_eq!(view.len(), 2);
    assert_eq!(view[0].sentinel, format!("127.0.0.1:{dead}"));
    assert!(view[0].master.is_err(), "{view:?}");
    assert_eq!(view[1].master, Ok(format!("127.0.0.1:{}", master.port)));
    let mut wrong = spec.clone();
    let RedisAddr::Sentinel(s) = &mut wrong.addr else {
        unreachable!()
    };
    s.master_name = "other".into();
    let e = sentinel_view(&wrong)[1].master.clone().unwrap_err();
    assert!(
        e.contains("\"other\"") && e.contains("store.master_name"),
        "{e}"
    );

    let s = RedisStore::open(&spec).unwrap();
    s.set_phone("alice", &phone(1)).unwrap();
    let got: Option<String> = master.cmd(&["HGET", "sent:p:alice", "e"]);
    assert_eq!(got.as_deref(), Some("+12025550143"));
}

#[test]
fn sentinels_that_need_auth_get_their_own_password_never_shown() {
    use std::os::unix::fs::PermissionsExt;
    if !installed("redis-server") || !installed("redis-sentinel") {
        return;
    }
    let master = Node::server(&["--requirepass", "master-pw-1"]);
    let sentinel = Node::sentinel_with(
        "mymaster",
        master.port,
        "requirepass sentinel-pw-2\nsentinel auth-pass mymaster master-pw-1\n",
    );
    let d = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = d.path().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    let mut spec = spec(&[sentinel.port], "mymaster");
    spec.password_file = Some(file("master", "master-pw-1\n"));
    let with_sentinel_pw = |spec: &mut RedisSpec, pw: Option<PathBuf>| {
        let RedisAddr::Sentinel(s) = &mut spec.addr else {
            unreachable!()
        };
        s.password_file = pw;
    };
    // Without the sentinels' password: refused, and said so.
    let e = RedisStore::open(&spec).unwrap_err();
    let msg = text(&e);
    assert!(msg.contains("no sentinel led to a master"), "{msg}");
    with_sentinel_pw(&mut spec, Some(file("wrong", "not-it-3\n")));
    let msg = text(&RedisStore::open(&spec).unwrap_err());
    assert!(!msg.contains("not-it-3") && !msg.contains("pw-"), "{msg}");
    let view = format!("{:?}", sentinel_view(&spec));
    assert!(!view.contains("not-it-3"), "{view}");
    with_sentinel_pw(&mut spec, Some(file("sentinel", "sentinel-pw-2\n")));
    assert_eq!(
        sentinel_view(&spec)[0].master,
        Ok(format!("127.0.0.1:{}", master.port))
    );
    let s = RedisStore::open(&spec).unwrap();
    s.set_phone("alice", &phone(1)).unwrap();
    assert!(!format!("{s:?}").contains("pw"), "{s:?}");
}

#[test]
fn a_stale_sentinel_is_skipped_and_a_demoted_master_is_left() {
    if !installed("redis-server") {
        return;
    }
    let a = Node::server(&[]);
    let b = Node::server(&["--replicaof", "127.0.0.1", &a.port.to_string()]);
    a.wait_for_replica();
    // The first sentinel still names b, a replica; the second names a.
    let stale = FakeSentinel::new(Some(b.port));
    let good = FakeSentinel::new(Some(a.port));
    let mut spec = spec(&[stale.port, good.port], "m");
    // Room for WAIT on a busy test machine.
    spec.timeout = Duration::from_secs(4);
    let s = RedisStore::open(&spec).unwrap();
    s.set_phone("alice", &phone(1)).unwrap();
    let got: Option<String> = a.cmd(&["HGET", "sent:p:alice", "e"]);
    assert_eq!(got.as_deref(), Some("+12025550143"));
    // The set_phone waited for b (WAIT 1): b has it already.
    let got: Option<String> = b.cmd(&["HGET", "sent:p:alice", "e"]);
    assert_eq!(got.as_deref(), Some("+12025550143"));

    // A failover: b becomes master, a its replica; both sentinels now
    // name b. The open connection to a answers READONLY once (an error:
    // the write may not be repeated) and is dropped; the next call asks
    // again and lands on b.
    let _: () = b.cmd(&["REPLICAOF", "NO", "ONE"]);
    let _: () = a.cmd(&["REPLICAOF", "127.0.0.1", &b.port.to_string()]);
    stale.set(Some(b.port));
    good.set(Some(b.port));
    let e = s.set_phone("alice", &phone(2)).unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{}", text(&e));
    s.set_phone("alice", &phone(3)).unwrap();
    let got: Option<String> = b.cmd(&["HGET", "sent:p:alice", "t"]);
    assert_eq!(got.as_deref(), Some("3"));
}

#[test]
fn an_idle_connection_to_a_dead_master_is_replaced_before_use() {
    if !installed("redis-server") {
        return;
    }
    let mut a = Node::server(&[]);
    let sentinel = FakeSentinel::new(Some(a.port));
    let s = RedisStore::open(&spec(&[sentinel.port], "m")).unwrap();
    s.set_phone("alice", &phone(1)).unwrap();
    // The master dies while the handle sits idle; the sentinel names
    // another one.
    a.child.kill().unwrap();
    let _ = a.child.wait();
    let b = Node::server(&[]);
    sentinel.set(Some(b.port));
    std::thread::sleep(super::conn::IDLE_CHECK + Duration::from_millis(100));
    // The first call after the pause works: a PING found the old
    // connection dead and nothing was sent on it.
    assert_eq!(s.phone("alice").unwrap(), None);
    s.set_phone("alice", &phone(2)).unwrap();
    let got: Option<String> = b.cmd(&["HGET", "sent:p:alice", "t"]);
    assert_eq!(got.as_deref(), Some("2"));
}

#[test]
fn no_sentinel_leading_to_a_master_is_unavailable_naming_each() {
    if !installed("redis-server") {
        return;
    }
    let replica_of_nothing = Node::server(&["--replicaof", "127.0.0.1", "1"]);
    let dead = free_port();
    let unknown = FakeSentinel::new(None);
    let stale = FakeSentinel::new(Some(replica_of_nothing.port));
    let down = FakeSentinel::new(Some(free_port()));
    let spec = spec(&[dead, unknown.port, stale.port, down.port], "m");
    let t = Instant::now();
    let e = RedisStore::open(&spec).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let msg = text(&e);
    assert!(matches!(e, StoreError::Unavailable { .. }), "{msg}");
    assert!(
        msg.contains(&spec.url) && msg.contains("sentinel://"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("127.0.0.1:{dead}: cannot connect")),
        "{msg}"
    );
    assert!(
        msg.contains("does not monitor a master named \"m\""),
        "{msg}"
    );
    assert!(msg.contains("not a master now"), "{msg}");
    assert!(
        msg.contains(&format!("127.0.0.1:{}: master 127.0.0.1:", down.port)),
        "{msg}"
    );
}

#[test]
fn a_sentinel_that_does_not_answer_times_out() {
    // Accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let spec = spec(&[port], "m");
    let t = Instant::now();
    let e = RedisStore::lazy(&spec).phone("alice").unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let msg = text(&e);
    assert!(msg.contains("no answer within"), "{msg}");
    let t = Instant::now();
    assert!(sentinel_view(&spec)[0].master.is_err());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[test]
fn durable_writes_cope_with_no_replica_and_with_a_replica_that_lags() {
    if !installed("redis-server") {
        return;
    }
    let a = Node::server(&[]);
    let sentinel = FakeSentinel::new(Some(a.port));
    let spec = spec(&[sentinel.port], "m");
    let s = RedisStore::open(&spec).unwrap();
    // No replica: no wait at all.
    let t = Instant::now();
    let f = s
        .record_failure("bob", 1_000, 1, Duration::from_secs(60))
        .unwrap();
    assert_eq!(f.locked_until, Some(61_000));
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    // A replica that stops acknowledging (paused): the lockout waits at
    // most half of store.timeout and still stands.
    let b = Node::server(&["--replicaof", "127.0.0.1", &a.port.to_string()]);
    a.wait_for_replica();
    let pid: i64 = b
        .cmd::<redis::InfoDict>(&["INFO", "server"])
        .get("process_id")
        .unwrap();
    let stopped = Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let t = Instant::now();
    let f = s
        .record_failure("carol", 1_000, 1, Duration::from_secs(60))
        .unwrap();
    let took = t.elapsed();
    let _ = Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status();
    assert_eq!(f.locked_until, Some(61_000));
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(900),
        "{took:?}"
    );
    assert_eq!(s.locked_until("carol", 2_000).unwrap(), Some(61_000));
    // An ordinary wrong guess does not wait.
    let t = Instant::now();
    let f = s
        .record_failure("dave", 1_000, 5, Duration::from_secs(60))
        .unwrap();
    assert_eq!(f.locked_until, None);
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}

/// Runs [`sentinel_thread_probe_child`] in a fresh process: asking a
/// sentinel, connecting to the master and a durable write start no
/// thread.
#[test]
fn the_sentinel_path_starts_no_thread() {
    if !installed("redis-server") || !installed("redis-sentinel") {
        return;
    }
    let master = Node::server(&[]);
    let sentinel = Node::sentinel("probe", master.port);
    crate::sms::http::tests::run_probe(
        "store::redis::sentinel_tests::sentinel_thread_probe_child",
        &[("SMSOTP_SENTINEL_PROBE_PORT", sentinel.port.to_string())],
        "probe: stored via sentinel",
    );
}

/// Only does something when run by [`the_sentinel_path_starts_no_thread`].
#[test]
fn sentinel_thread_probe_child() {
    let Ok(port) = std::env::var("SMSOTP_SENTINEL_PROBE_PORT") else {
        return;
    };
    let spec = spec(&[port.parse().unwrap()], "probe");
    let before = crate::sms::http::tests::tasks();
    crate::sms::http::tests::forbid_new_threads();
    assert!(
        std::thread::Builder::new().spawn(|| ()).is_err(),
        "the probe must be able to see a thread being started"
    );
    assert_eq!(sentinel_view(&spec).len(), 1);
    let s = RedisStore::open(&spec).unwrap();
    s.set_phone("alice", &phone(1)).unwrap();
    s.record_failure("alice", 1_000, 1, Duration::from_secs(60))
        .unwrap();
    assert_eq!(crate::sms::http::tests::tasks(), before);
    println!("probe: stored via sentinel");
}
