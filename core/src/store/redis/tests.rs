//! The Redis store against a real `redis-server` started here on a Unix
//! socket in a temp dir (no TCP port, no disk writes), killed on drop:
//! the conformance suite, key prefixes, passwords, the server going away
//! and coming back, and that a store operation starts no thread.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::RedisStore;
use crate::config::{RedisAddr, RedisSpec};
use crate::store::conformance::{record, run_all, Backend};
use crate::store::{PhoneRecord, Store, StoreError};

/// A `redis-server` of this test's own, on a Unix socket in a temp dir.
pub(crate) struct Server {
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl Server {
    /// Starts one, or says loudly why not and gives `None` if
    /// `redis-server` is not installed (CI installs it: scripts/deps.sh).
    pub(crate) fn start(extra: &[&str]) -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            eprintln!(
                "\n\n*** SKIPPED: redis-server is not installed; the Redis store is NOT tested \
                 (apt-get install redis-server) ***\n\n"
            );
            return None;
        }
        let mut s = Server {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        s.run();
        Some(s)
    }

    pub(crate) fn sock(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// Starts the server (again) and waits (< 5 s) until it answers.
    pub(super) fn run(&mut self) {
        let _ = std::fs::remove_file(self.sock());
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(self.sock())
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if std::os::unix::net::UnixStream::connect(self.sock()).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start in 5 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(super) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// How many times the server ran `command` since its counts were
    /// last reset (`INFO commandstats`), for tests that count steps.
    pub(crate) fn calls(&self, command: &str) -> u64 {
        let mut c = redis::Client::open(format!("unix://{}", self.sock().display()))
            .unwrap()
            .get_connection()
            .unwrap();
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut c)
            .unwrap();
        let head = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&head))
            .map_or(0, |rest| {
                rest.split(',').next().unwrap_or("0").parse().unwrap()
            })
    }

    /// Resets the server's command counts (`CONFIG RESETSTAT`).
    pub(crate) fn reset_stats(&self) {
        let mut c = redis::Client::open(format!("unix://{}", self.sock().display()))
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("CONFIG").arg("RESETSTAT").exec(&mut c).unwrap();
    }

    /// A spec for this server, with keys under `prefix`.
    pub(crate) fn spec(&self, prefix: &str) -> RedisSpec {
        RedisSpec {
            url: format!("unix://{}", self.sock().display()),
            addr: RedisAddr::Unix(self.sock()),
            username: None,
            password_file: None,
            db: 0,
            key_prefix: prefix.to_owned(),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
        }
    }
}

/// A spec for a server on 127.0.0.1:`port` over TCP, keys under
/// `prefix`, both timeouts `timeout`.
pub(super) fn tcp_spec(port: u16, prefix: &str, timeout: Duration) -> RedisSpec {
    RedisSpec {
        url: format!("redis://127.0.0.1:{port}"),
        addr: RedisAddr::Tcp {
            host: "127.0.0.1".into(),
            port,
        },
        username: None,
        password_file: None,
        db: 0,
        key_prefix: prefix.to_owned(),
        connect_timeout: timeout,
        timeout,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One store for the suite: a fresh key prefix on a shared server; each
/// handle a connection of its own, as each host's process has.
struct OnRedis(RedisSpec);

impl Backend for OnRedis {
    fn with_handle(&self, f: &mut dyn FnMut(&dyn Store)) {
        f(&RedisStore::open(&self.0).unwrap());
    }
}

#[test]
fn redis_store_conforms() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let n = AtomicU32::new(0);
    run_all(&|| {
        let prefix = format!("t{}:", n.fetch_add(1, Ordering::SeqCst));
        Box::new(OnRedis(server.spec(&prefix)))
    });
}

#[test]
fn key_prefixes_and_dbs_keep_sites_apart() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let a = RedisStore::open(&server.spec("site1:")).unwrap();
    let b = RedisStore::open(&server.spec("site2:")).unwrap();
    let mut other_db = server.spec("site1:");
    other_db.db = 1;
    let c = RedisStore::open(&other_db).unwrap();
    let rec = PhoneRecord {
        e164: "+12025550143".into(),
        set_at: 1,
        set_by: "admin:root".into(),
    };
    a.set_phone("alice", &rec).unwrap();
    a.insert_challenge(&record(1, "alice")).unwrap();
    assert_eq!(a.phone("alice").unwrap(), Some(rec));
    assert_eq!(b.phone("alice").unwrap(), None);
    assert_eq!(c.phone("alice").unwrap(), None);
    assert_eq!(b.challenge(&record(1, "alice").id).unwrap(), None);
}

#[test]
fn challenges_get_a_ttl_from_the_callers_times() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let s = RedisStore::open(&server.spec("ttl:")).unwrap();
    let c = record(7, "alice");
    s.insert_challenge(&c).unwrap();
    let key = s.ch(&c.id);
    let ttl: i64 = s
        .run(|conn| redis::cmd("PTTL").arg(&key).query(conn))
        .unwrap();
    let want = c.expires_at - c.created_at + super::GRACE_MS;
    assert!(ttl > want - 5_000 && ttl <= want, "{ttl} vs {want}");
}

#[test]
fn validated_numbers_are_shared_by_hosts_and_kept_in_memory() {
    use crate::phone::{NumberCache, Phone};
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let host1 = RedisStore::open(&server.spec("nc:")).unwrap();
    let host2 = RedisStore::open(&server.spec("nc:")).unwrap();
    let parsed = Phone::parse_cached("+1 202 555 0143", None, host1.number_cache()).unwrap();
    assert_eq!(parsed.e164(), "+12025550143");
    // Another host (a process of its own) finds it on the server, with
    // its region, and keeps it in memory after.
    let key = "v1|test|US|(202) 555-0143";
    host1.put(key, "+12025550143", Some("US"));
    assert_eq!(
        host2.get(key),
        Some(("+12025550143".to_owned(), Some("US".to_owned())))
    );
    let on_server = host2.number_key(key);
    let ttl: i64 = host2
        .run(|c| redis::cmd("TTL").arg(&on_server).query(c))
        .unwrap();
    assert!(ttl > 0 && ttl <= super::NUMBER_TTL_S as i64, "{ttl}");
    host2
        .run(|c| redis::cmd("DEL").arg(&on_server).query::<i64>(c))
        .unwrap();
    assert_eq!(host2.get(key).map(|(n, _)| n), Some("+12025550143".into()));
    // What this smsotp does not write is not taken for a number.
    host2
        .run(|c| {
            redis::cmd("SET")
                .arg(host2.number_key("v1|x|"))
                .arg("call me")
                .query::<()>(c)
        })
        .unwrap();
    assert_eq!(host2.get("v1|x|"), None);
    // The server gone: the cache only forgets.
    drop(server);
    assert_eq!(host1.get("v1|absent|"), None);
    host1.put("v1|absent|", "+12025550143", None);
}

fn write_secret(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

#[test]
fn password_file_rules() {
    let Some(server) = Server::start(&["--requirepass", "s3cret-pw"]) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let mut spec = server.spec("pw:");
    // One trailing newline is not part of the password.
    spec.password_file = Some(write_secret(d.path(), "ok", "s3cret-pw\n", 0o600));
    let s = RedisStore::open(&spec).unwrap();
    assert_eq!(s.phone("alice").unwrap(), None);

    spec.password_file = Some(write_secret(d.path(), "wrong", "not-it\n", 0o600));
    let e = RedisStore::open(&spec).unwrap_err();
    let text = format!("{e}: {:?}", std::error::Error::source(&e));
    assert!(matches!(e, StoreError::Unavailable { .. }), "{text}");
    assert!(
        !text.contains("not-it") && !text.contains("s3cret"),
        "{text}"
    );

    spec.password_file = Some(write_secret(d.path(), "open", "s3cret-pw\n", 0o644));
    let e = RedisStore::open(&spec).unwrap_err();
    let text = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(
        text.contains("store.password_file") && text.contains("chmod 600"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");

    spec.password_file = None;
    let e = RedisStore::open(&spec).unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e}");
}

#[test]
fn a_stopped_server_is_unavailable_quickly_and_the_handle_recovers() {
    let Some(mut server) = Server::start(&[]) else {
        return;
    };
    let mut spec = server.spec("down:");
    spec.timeout = Duration::from_millis(500);
    spec.connect_timeout = Duration::from_millis(500);
    let s = RedisStore::open(&spec).unwrap();
    s.set_phone(
        "alice",
        &PhoneRecord {
            e164: "+12025550143".into(),
            set_at: 1,
            set_by: "admin:root".into(),
        },
    )
    .unwrap();
    server.stop();
    for _ in 0..2 {
        let t = Instant::now();
        let e = s.locked_until("alice", 1).unwrap_err();
        assert!(matches!(e, StoreError::Unavailable { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    // The data went with the server (no persistence here); the handle
    // connects again.
    server.run();
    assert_eq!(s.phone("alice").unwrap(), None);
    assert_eq!(s.locked_until("alice", 1).unwrap(), None);
}

/// A connection kept from before a restart is closed under the handle:
/// the first call after the restart works (it reconnects and runs the
/// command once more), rather than fail one login on every handle.
#[test]
fn a_kept_connection_closed_by_a_restart_is_replaced_at_once() {
    let Some(mut server) = Server::start(&[]) else {
        return;
    };
    let s = RedisStore::open(&server.spec("restart:")).unwrap();
    assert_eq!(s.phone("alice").unwrap(), None);
    server.stop();
    server.run();
    let rec = PhoneRecord {
        e164: "+12025550143".into(),
        set_at: 1,
        set_by: "admin:root".into(),
    };
    s.set_phone("alice", &rec).unwrap();
    assert_eq!(s.phone("alice").unwrap(), Some(rec));
}

#[test]
fn a_server_that_does_not_answer_times_out() {
    // Accepts and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut spec = tcp_spec(port, "x:", Duration::from_millis(300));
    let s = RedisStore::lazy(&spec);
    let t = Instant::now();
    let e = s.phone("alice").unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains(&spec.url), "{e}");
    // Not "0 seconds": a sub-second timeout is named as set.
    assert!(
        e.to_string().contains("store.timeout (300 milliseconds)"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // A MULTI block (the login's state, five answers; the key check of a
    // bound handle's connection, four) waits for the first answer only,
    // not for each in turn.
    for s in [
        RedisStore::lazy(&spec),
        RedisStore::lazy_keyed(&spec, &fp(1, "/k")),
    ] {
        let t = Instant::now();
        let e = s.login_state("alice", 1, None).unwrap_err();
        assert!(matches!(e, StoreError::Unavailable { .. }), "{e}");
        assert!(
            t.elapsed() < Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
    }
    drop(listener);
    // Nothing listens: refused at once.
    spec.db = 1;
    let t = Instant::now();
    let e = RedisStore::open(&spec).unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

/// Runs [`redis_thread_probe_child`] in a fresh process of this test
/// binary: store operations there start no thread (seccomp refuses
/// thread creation).
#[test]
fn a_store_operation_starts_no_thread() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    crate::sms::http::tests::run_probe(
        "store::redis::tests::redis_thread_probe_child",
        &[(
            "SMSOTP_REDIS_PROBE_SOCK",
            server.sock().display().to_string(),
        )],
        "probe: stored",
    );
}

/// Only does something when run by [`a_store_operation_starts_no_thread`].
#[test]
fn redis_thread_probe_child() {
    let Ok(sock) = std::env::var("SMSOTP_REDIS_PROBE_SOCK") else {
        return;
    };
    let sock = PathBuf::from(sock);
    let spec = RedisSpec {
        url: format!("unix://{}", sock.display()),
        addr: RedisAddr::Unix(sock),
        username: None,
        password_file: None,
        db: 0,
        key_prefix: "probe:".into(),
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
    };
    let before = crate::sms::http::tests::tasks();
    crate::sms::http::tests::forbid_new_threads();
    assert!(
        std::thread::Builder::new().spawn(|| ()).is_err(),
        "the probe must be able to see a thread being started"
    );
    // Connecting with the key check (a MULTI block), a script (EVALSHA,
    // then EVAL) and a plain command.
    let s = RedisStore::open_keyed(&spec, &fp(6, "/k")).unwrap();
    let c = record(3, "alice");
    s.insert_challenge(&c).unwrap();
    assert!(s.consume(&c.id, &c.code_mac, "alice").unwrap());
    assert_eq!(s.phone("alice").unwrap(), None);
    assert_eq!(crate::sms::http::tests::tasks(), before);
    println!("probe: stored");
}

#[test]
fn open_shared_opens_a_redis_store_that_keeps_the_contract() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let spec = crate::config::StoreSpec::Redis(Box::new(server.spec("shared:")));
    let (shared, guard) = crate::store::open_shared(&spec).unwrap();
    crate::store::conformance::backends::shared_backend_contract(&*shared);
    drop(shared);
    drop(guard);
    // What it wrote is on the server, for the next process to see.
    let again = crate::store::open(&spec).unwrap();
    assert!(again.challenge(&record(1, "alice").id).unwrap().is_some());
}

#[test]
fn login_and_answer_state_read_in_one_step() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let s = RedisStore::open(&server.spec("state:")).unwrap();
    let rec = PhoneRecord {
        e164: "+12025550143".into(),
        set_at: 5,
        set_by: "enroll:sshd".into(),
    };
    assert_eq!(
        s.login_state("alice", 1_000, None).unwrap(),
        Default::default()
    );
    s.set_phone("alice", &rec).unwrap();
    let f = s
        .record_failure("alice", 1_000, 1, Duration::from_secs(60))
        .unwrap();
    assert_eq!(f.locked_until, Some(61_000));
    let l = s.login_state("alice", 2_000, None).unwrap();
    assert_eq!((l.locked_until, l.phone), (Some(61_000), Some(rec)));
    assert_eq!(
        s.login_state("alice", 61_000, None).unwrap().locked_until,
        None
    );
    let c = record(9, "alice");
    s.insert_challenge(&c).unwrap();
    let a = s.answer_state(&c.id, "alice", 2_000).unwrap();
    assert_eq!(
        (a.challenge, a.locked_until),
        (Some(c.clone()), Some(61_000))
    );
    let a = s.answer_state(&record(8, "bob").id, "bob", 2_000).unwrap();
    assert_eq!((a.challenge, a.locked_until), (None, None));
    // A value that is not ours is Corrupt, not a panic or a wrong answer.
    let key = s.ch(&c.id);
    s.run(|conn| {
        redis::cmd("HSET")
            .arg(&key)
            .arg("a")
            .arg("many")
            .query::<i64>(conn)
    })
    .unwrap();
    assert!(matches!(
        s.challenge(&c.id).unwrap_err(),
        StoreError::Corrupt { .. }
    ));
}

/// The hot paths call their scripts by hash (`scripts::Call`); a server
/// that forgot them (a restart, a failover to a replica that never ran
/// them, `SCRIPT FLUSH`) gets them loaded again, and the call goes on.
#[test]
fn scripts_the_server_forgot_are_loaded_again() {
    use crate::store::conformance::rate;
    use crate::store::limits::{SendDecision, SendLimits};
    use crate::store::AtOnce;
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let s = RedisStore::open(&server.spec("flush:")).unwrap();
    let forget = || {
        s.run(|c| redis::cmd("SCRIPT").arg("FLUSH").query::<()>(c))
            .unwrap();
    };
    let limits = SendLimits::user_and_global(rate(100, 3600), rate(1000, 3600));
    let c = record(3, "alice");
    forget();
    match s.start_at_once(&c, &limits, "+12025550143", false).unwrap() {
        AtOnce::Started { decision, .. } => assert_eq!(decision, SendDecision::granted()),
        other => panic!("{other:?}"),
    }
    forget();
    let taken = s
        .consume_code(&c.id, "alice", "sshd", &c.code_mac, 2_000)
        .unwrap();
    assert_eq!(taken.as_deref(), Some("******0143"));
    forget();
    let d = record(4, "bob");
    assert_eq!(
        s.start_challenge_with(&d, &limits).unwrap(),
        SendDecision::granted()
    );
    forget();
    assert_eq!(
        s.reserve_sends("bob", 3_000, &limits).unwrap(),
        SendDecision::granted()
    );
    forget();
    s.insert_challenge(&record(5, "carol")).unwrap();
    assert_eq!(
        s.challenge(&record(5, "carol").id).unwrap(),
        Some(record(5, "carol"))
    );
    // The code was taken once: a second try finds nothing.
    assert_eq!(
        s.consume_code(&c.id, "alice", "sshd", &c.code_mac, 2_000)
            .unwrap(),
        None
    );
}

#[test]
fn an_acl_user_logs_in_with_its_password_file() {
    let Some(server) = Server::start(&["--user", "smsotp", "on", ">acl-pw", "~*", "+@all"]) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let mut spec = server.spec("acl:");
    spec.username = Some("smsotp".into());
    spec.password_file = Some(write_secret(d.path(), "pw", "acl-pw\n", 0o600));
    let s = RedisStore::open(&spec).unwrap();
    assert_eq!(s.backup_codes_left("alice").unwrap(), 0);
    spec.username = Some("nobody".into());
    let e = RedisStore::open(&spec).unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e}");
    assert!(!format!("{e:?}").contains("acl-pw"), "{e:?}");
}

#[test]
fn a_server_that_is_not_redis_is_unavailable() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let http = std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let spec = tcp_spec(port, "x:", Duration::from_secs(2));
    let e = RedisStore::open(&spec).unwrap_err();
    let text = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(matches!(e, StoreError::Unavailable { .. }), "{text}");
    assert!(text.contains("not a Redis server"), "{text}");
    http.join().unwrap();
}

#[test]
fn an_export_reads_its_own_prefix_only_and_not_by_glob() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    // Unescaped, "site[1]:" as a SCAN pattern would match "site1:" keys.
    let a = RedisStore::open(&server.spec("site[1]:")).unwrap();
    let b = RedisStore::open(&server.spec("site1:")).unwrap();
    let rec = |n: &str| PhoneRecord {
        e164: n.into(),
        set_at: 1,
        set_by: "admin:root".into(),
    };
    a.set_phone("alice", &rec("+12025550143")).unwrap();
    b.set_phone("bob", &rec("+12025550144")).unwrap();
    b.replace_backup_codes(
        "bob",
        &[crate::store::BackupHash {
            tag: [1; 8],
            hash: "h".into(),
        }],
        1,
    )
    .unwrap();
    b.set_opt_out("bob", Some(("admin:root", 1))).unwrap();
    let snap = a.export(0).unwrap();
    assert_eq!(snap.phones.len(), 1);
    assert_eq!(snap.phones[0].user, "alice");
    assert!(snap.backup_codes.is_empty() && snap.opt_outs.is_empty());
    let snap = b.export(0).unwrap();
    assert_eq!(
        (
            snap.phones.len(),
            snap.backup_codes.len(),
            snap.opt_outs.len()
        ),
        (1, 1, 1)
    );
}

pub(super) fn fp(byte: u8, file: &str) -> crate::store::KeyFingerprint {
    crate::store::KeyFingerprint::of(
        &crate::otp::OtpKey::from_bytes(&[byte; 32]),
        Path::new(file),
    )
}

#[test]
fn the_first_key_is_recorded_and_another_is_refused_with_the_fix() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let spec = server.spec("kf1:");
    let a = fp(1, "/etc/a/otp.key");
    let b = fp(2, "/etc/b/otp.key");
    let first = RedisStore::open_keyed(&spec, &a).unwrap();
    assert_eq!(
        first.stored_key_fingerprint().unwrap(),
        Some(a.fingerprint.clone())
    );
    // The same key again, from a handle told after it connected.
    let plain = RedisStore::open(&spec).unwrap();
    plain.check_key_fingerprint(&a).unwrap();
    assert!(plain.compare_key_fingerprint(&a).unwrap());

    let e = match RedisStore::open_keyed(&spec, &b) {
        Ok(_) => panic!("a second key was accepted"),
        Err(e) => e,
    };
    assert!(matches!(e, StoreError::KeyMismatch(_)), "{e}");
    let text = e.to_string();
    for want in [
        "/etc/b/otp.key",
        a.fingerprint.as_str(),
        b.fingerprint.as_str(),
        "copy the key file from a host that works",
        "0600",
        "otp.key_file",
        "\"kf1:kf\"",
        "DEL kf1:kf",
        &spec.url,
    ] {
        assert!(text.contains(want), "{want:?} not in: {text}");
    }
    // Nothing was overwritten, and a handle that has not connected yet
    // connects to check, then fails each time, not only once.
    assert!(first.compare_key_fingerprint(&a).unwrap());
    let lazy = RedisStore::lazy(&spec);
    assert!(matches!(
        lazy.check_key_fingerprint(&b).unwrap_err(),
        StoreError::KeyMismatch(_)
    ));
    for _ in 0..2 {
        assert!(matches!(
            lazy.phone("alice").unwrap_err(),
            StoreError::KeyMismatch(_)
        ));
    }
    // A handle told after it connected fails at once, and stays failed.
    let late = RedisStore::open(&spec).unwrap();
    assert!(matches!(
        late.check_key_fingerprint(&b).unwrap_err(),
        StoreError::KeyMismatch(_)
    ));
    assert!(matches!(
        late.phone("alice").unwrap_err(),
        StoreError::KeyMismatch(_)
    ));
    // Another key prefix is another store with a key of its own.
    RedisStore::open_keyed(&server.spec("kf2:"), &b).unwrap();
    // The documented way to change the key site-wide: delete P kf; the
    // next host records its key.
    first
        .run(|c| redis::cmd("DEL").arg("kf1:kf").query::<i64>(c))
        .unwrap();
    assert_eq!(late.phone("alice").unwrap(), None);
    assert_eq!(
        late.stored_key_fingerprint().unwrap(),
        Some(b.fingerprint.clone())
    );
    assert!(matches!(
        first.compare_key_fingerprint(&a).unwrap_err(),
        StoreError::KeyMismatch(_)
    ));
}

#[test]
fn open_keyed_checks_every_backend_the_same_way() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let spec = crate::config::StoreSpec::Redis(Box::new(server.spec("kf3:")));
    crate::store::open_keyed(&spec, &fp(1, "/k")).unwrap();
    assert!(matches!(
        crate::store::open_keyed(&spec, &fp(2, "/k")).map(|_| ()),
        Err(StoreError::KeyMismatch(_))
    ));
    // SQLite is one host's: nothing to compare.
    let d = tempfile::tempdir().unwrap();
    let sqlite = crate::config::StoreSpec::Sqlite {
        path: d.path().join("state.db"),
        busy_timeout: Duration::from_secs(1),
    };
    crate::store::open_keyed(&sqlite, &fp(1, "/k")).unwrap();
    crate::store::open_keyed(&sqlite, &fp(2, "/k")).unwrap();
}

#[test]
fn server_info_reads_version_persistence_role_and_fingerprint() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let spec = server.spec("info:");
    let s = RedisStore::open(&spec).unwrap();
    let i = s.server_info().unwrap();
    assert_eq!(i.name, "redis");
    assert!(i.version.starts_with(|c: char| c.is_ascii_digit()), "{i:?}");
    assert!(!i.aof, "{i:?}");
    assert_eq!(i.rdb_save.as_deref(), Some(""), "{i:?}");
    assert_eq!((i.role.as_str(), i.connected_replicas), ("master", 0));
    assert_eq!(i.key_fingerprint, None);
    assert!(i.round_trip < Duration::from_secs(2));
    s.run(|c| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("appendonly")
            .arg("yes")
            .query::<()>(c)
    })
    .unwrap();
    let k = fp(4, "/k");
    s.check_key_fingerprint(&k).unwrap();
    let i = s.server_info().unwrap();
    assert!(i.aof, "{i:?}");
    assert_eq!(i.key_fingerprint, Some(k.fingerprint));
}

#[test]
fn server_info_copes_with_an_acl_that_refuses_info() {
    let Some(server) =
        Server::start(&["--user", "smsotp", "on", ">acl-pw", "~*", "+@all", "-info"])
    else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let mut spec = server.spec("noinfo:");
    spec.username = Some("smsotp".into());
    spec.password_file = Some(write_secret(d.path(), "pw", "acl-pw\n", 0o600));
    let s = RedisStore::open_keyed(&spec, &fp(5, "/k")).unwrap();
    let i = s.server_info().unwrap();
    let why = i.info_refused.clone().unwrap_or_default();
    assert!(
        why.contains("NOPERM") || why.contains("no permissions"),
        "{i:?}"
    );
    assert_eq!(i.key_fingerprint, Some(fp(5, "/k").fingerprint));
    // The connection still works after the refusal.
    assert_eq!(s.phone("alice").unwrap(), None);
}
