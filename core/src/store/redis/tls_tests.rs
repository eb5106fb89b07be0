//! `rediss://` against a real `redis-server` with a TLS port on 127.0.0.1
//! and a test CA made here (rcgen), killed on drop: the right CA lets the
//! store in, another CA or the system's bundle does not, a bad `ca_file`
//! is named.

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::RedisStore;
use crate::config::{RedisAddr, RedisSpec};
use crate::store::{PhoneRecord, Store, StoreError};

/// A CA's PEM, and a certificate for "localhost" it signed with its key.
fn pki(name: &str) -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, name);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_cert.pem(), leaf.pem(), key.serialize_pem())
}

struct TlsServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsServer {
    fn start() -> Option<TlsServer> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            eprintln!(
                "\n\n*** SKIPPED: redis-server is not installed; rediss:// is NOT tested \
                 (scripts/deps.sh test) ***\n\n"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = pki("smsotp redis test CA");
        let w = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        };
        w("ca.pem", &ca);
        let cert = w("cert.pem", &cert);
        let key = w("key.pem", &key);
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(["--tls-port", &port.to_string(), "--tls-cert-file"])
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = TlsServer { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server (TLS) did not start in 5 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(s)
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn spec(&self, ca_file: Option<&Path>) -> RedisSpec {
        RedisSpec {
            url: format!("rediss://localhost:{}", self.port),
            addr: RedisAddr::Tls {
                host: "localhost".into(),
                port: self.port,
                ca_file: ca_file.map(Path::to_owned),
            },
            username: None,
            password_file: None,
            db: 0,
            key_prefix: "tls:".into(),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
fn rediss_with_the_servers_ca_works() {
    let Some(server) = TlsServer::start() else {
        return;
    };
    let s = RedisStore::open(&server.spec(Some(&server.ca()))).unwrap();
    let rec = PhoneRecord {
        e164: "+12025550143".into(),
        set_at: 1,
        set_by: "admin:root".into(),
    };
    s.set_phone("alice", &rec).unwrap();
    assert_eq!(s.phone("alice").unwrap(), Some(rec));
}

#[test]
fn rediss_refuses_a_server_its_anchors_do_not_vouch_for() {
    let Some(server) = TlsServer::start() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let (other, _, _) = pki("another CA");
    let other_ca = d.path().join("other.pem");
    std::fs::write(&other_ca, other).unwrap();
    std::fs::set_permissions(&other_ca, std::fs::Permissions::from_mode(0o600)).unwrap();
    for spec in [server.spec(Some(&other_ca)), server.spec(None)] {
        let t = Instant::now();
        let e = RedisStore::open(&spec).unwrap_err();
        assert!(matches!(e, StoreError::Unavailable { .. }), "{}", text(&e));
        assert!(text(&e).contains("rediss://localhost"), "{}", text(&e));
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }
    // A ca_file others may change, or one without a certificate: named.
    std::fs::set_permissions(&other_ca, std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = text(&RedisStore::open(&server.spec(Some(&other_ca))).unwrap_err());
    assert!(e.contains("store.ca_file"), "{e}");
    let empty = d.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = text(&RedisStore::open(&server.spec(Some(&empty))).unwrap_err());
    assert!(
        e.contains("store.ca_file") && e.contains("no PEM certificate"),
        "{e}"
    );
}

/// Runs [`tls_thread_probe_child`] in a fresh process: the TLS handshake
/// (and the `redis` crate's loading of the native roots it then sets
/// aside) starts no thread.
#[test]
fn rediss_starts_no_thread() {
    let Some(server) = TlsServer::start() else {
        return;
    };
    crate::sms::http::tests::run_probe(
        "store::redis::tls_tests::tls_thread_probe_child",
        &[
            ("SMSOTP_TLS_PROBE_PORT", server.port.to_string()),
            ("SMSOTP_TLS_PROBE_CA", server.ca().display().to_string()),
        ],
        "probe: stored over TLS",
    );
}

/// Only does something when run by [`rediss_starts_no_thread`].
#[test]
fn tls_thread_probe_child() {
    let (Ok(port), Ok(ca)) = (
        std::env::var("SMSOTP_TLS_PROBE_PORT"),
        std::env::var("SMSOTP_TLS_PROBE_CA"),
    ) else {
        return;
    };
    let port: u16 = port.parse().unwrap();
    let spec = RedisSpec {
        url: format!("rediss://localhost:{port}"),
        addr: RedisAddr::Tls {
            host: "localhost".into(),
            port,
            ca_file: Some(PathBuf::from(ca)),
        },
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
    let s = RedisStore::open(&spec).unwrap();
    assert_eq!(s.phone("alice").unwrap(), None);
    assert_eq!(crate::sms::http::tests::tasks(), before);
    println!("probe: stored over TLS");
}
