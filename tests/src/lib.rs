//! Shared helpers for the end-to-end tests: where the built module is, a
//! scratch directory with a config, reading codes from the outbox, and a
//! server that never answers ([`BlackHole`]) or a port that refuses
//! ([`closed_port`]).
//!
//! Every server or program a test starts is bound to loopback, bounded in
//! time, and stopped when the guard that owns it is dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

pub mod findings;
pub mod pamenv;
pub mod radiusd;
pub mod redis;
pub mod sentinel;
pub mod slapd;
pub mod smpp;
pub mod sshd;

use std::io::BufRead;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The built PAM module. `SMSOTP_PAM_MODULE` overrides (e.g. an installed one);
/// otherwise target/{debug,release}/libpam_smsotp.so, whichever is newer.
/// The README's test command runs `cargo build --workspace` first.
pub fn module_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SMSOTP_PAM_MODULE") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let candidates = [
        target.join("debug/libpam_smsotp.so"),
        target.join("release/libpam_smsotp.so"),
    ];
    let newest = candidates
        .iter()
        .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p.clone());
    newest.unwrap_or_else(|| {
        panic!(
            "libpam_smsotp.so not found under {}; run `cargo build --workspace` first",
            target.display()
        )
    })
}

/// A scratch directory for one test: config, phones, store, outbox.
/// Files are created with the modes the module insists on.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("smsotp-e2e-")
            .tempdir()
            .expect("create temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod temp dir");
        Scratch { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name` with `contents` and `mode`.
    pub fn write(&self, name: &str, contents: &str, mode: u32) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).expect("write scratch file");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    /// Writes phones.toml (user -> number) with mode 0644.
    pub fn phones(&self, entries: &[(&str, &str)]) -> PathBuf {
        let text: String = entries
            .iter()
            .map(|(u, n)| format!("{u} = \"{n}\"\n"))
            .collect();
        self.write("phones.toml", &text, 0o644)
    }

    /// Writes smsotp.toml (mode 0600): store, key, outbox, phones and audit
    /// file all inside this scratch dir, followed by `extra` TOML.
    /// `extra` must not repeat `[store]`, `[audit]`, `[[directory]]` or `[[provider]]`;
    /// the code key is created beside the store (otp.key).
    pub fn config(&self, extra: &str) -> PathBuf {
        let text = format!("{extra}\n{}", self.base_tables(true, true));
        self.write("smsotp.toml", &text, 0o600)
    }

    /// The `[store]`, `[[directory]]`, `[[provider]]` and `[audit]` tables that point
    /// into this dir; `directory` and `provider` can be left out so a test can
    /// write its own.
    pub fn base_tables(&self, directory: bool, provider: bool) -> String {
        let d = self.dir.path().display();
        let mut t = format!(
            "[audit]\nsyslog = false\nfile = \"{d}/audit.jsonl\"\n\n[store]\nkind = \"sqlite\"\npath = \"{d}/state.db\"\n\n"
        );
        if directory {
            t.push_str(&format!(
                "[[directory]]\nkind = \"file\"\npath = \"{d}/phones.toml\"\n\n"
            ));
        }
        if provider {
            t.push_str(&format!(
                "[[provider]]\nkind = \"outbox\"\npath = \"{d}/outbox.jsonl\"\n\n"
            ));
        }
        t
    }

    pub fn outbox(&self) -> Outbox {
        Outbox {
            path: self.path("outbox.jsonl"),
        }
    }
}

/// One SMS as the outbox provider wrote it.
#[derive(Debug, Clone)]
pub struct Sms {
    pub to: String,
    pub message: String,
    pub at: String,
}

impl Sms {
    /// The first run of 6-10 code characters in the message.
    pub fn code(&self) -> String {
        extract_code(&self.message).unwrap_or_else(|| panic!("no code in SMS {:?}", self.message))
    }
}

/// A code of the same shape as `code` that is not `code` (its first
/// character changed), for tests that type a wrong one.
pub fn wrong_code(code: &str) -> String {
    code.chars()
        .enumerate()
        .map(|(i, c)| match (i, c) {
            (0, '9') => '1',
            (0, d) if d.is_ascii_digit() => char::from(d as u8 + 1),
            (0, _) => '2',
            (_, c) => c,
        })
        .collect()
}

/// Finds the code in an SMS text: the first word of 6-10 digits or
/// upper-case letters and digits.
pub fn extract_code(message: &str) -> Option<String> {
    message
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find(|w| {
            (6..=10).contains(&w.len())
                && w.chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
                && w.chars().any(|c| c.is_ascii_digit())
        })
        .map(str::to_owned)
}

/// The outbox file: one JSON line per SMS.
pub struct Outbox {
    pub path: PathBuf,
}

impl Outbox {
    pub fn all(&self) -> Vec<Sms> {
        let Ok(f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        std::io::BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(&l)
                    .unwrap_or_else(|e| panic!("bad outbox line {l:?}: {e}"));
                let s = |k: &str| {
                    v[k].as_str()
                        .unwrap_or_else(|| panic!("outbox line lacks {k}: {l}"))
                        .to_owned()
                };
                Sms {
                    to: s("to"),
                    message: s("message"),
                    at: s("at"),
                }
            })
            .collect()
    }

    pub fn count(&self) -> usize {
        self.all().len()
    }

    /// Waits until the outbox holds more than `seen` messages and returns the
    /// newest; panics after `timeout`.
    pub fn wait_beyond(&self, seen: usize, timeout: Duration) -> Sms {
        let deadline = Instant::now() + timeout;
        loop {
            let all = self.all();
            if all.len() > seen {
                return all.last().cloned().expect("non-empty");
            }
            if Instant::now() > deadline {
                panic!("no new SMS in {} after {timeout:?}", self.path.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A TCP server on 127.0.0.1 that accepts connections and never answers
/// (for "the server hangs" tests: a client must give up by its own
/// deadline). Every connection is closed when the guard is dropped.
pub struct BlackHole {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl BlackHole {
    pub fn start() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            held.len()
        });
        BlackHole {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops accepting, closes every connection, and says how many there
    /// were.
    pub fn close(mut self) -> usize {
        self.end()
    }

    fn end(&mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("black hole thread"))
            .unwrap_or(0)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.end();
    }
}

/// A port on 127.0.0.1 where nothing listens right now, so a connection is
/// refused (a "server down" URL). Another process could take it in the
/// meantime; tests use it at once.
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// The built `smsotp` admin tool: `$SMSOTP_CLI`, or the debug build in
/// the target directory (`cargo build --workspace` first).
pub fn cli_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SMSOTP_CLI") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let p = target.join("debug/smsotp");
    assert!(
        p.exists(),
        "{} not found; run `cargo build --workspace`",
        p.display()
    );
    p
}

/// One run of the `smsotp` admin tool.
pub struct ToolRun {
    /// Exit code (-1 when killed by a signal or by the time limit).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Start to exit.
    pub took: Duration,
}

impl ToolRun {
    /// Standard output as JSON (`--json`); panics with both streams if not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {self}"))
    }
}

impl std::fmt::Display for ToolRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {} after {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
}

/// `smsotp --json status` on `scratch`'s config, asked again every 100 ms
/// until `ready` holds of its answer or 5 s have passed (smsotp-radiusd
/// writes its SMS counts to the store once a second); the last answer
/// either way, for the test's own asserts.
pub fn status_when(
    scratch: &Scratch,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let r = run_tool(scratch, &["--json", "status"], Duration::from_secs(20));
        assert_eq!(r.code, 0, "{r}");
        let j = r.json();
        if ready(&j) || Instant::now() >= until {
            return j;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `smsotp --config SCRATCH/smsotp.toml ARGS` (no `SUDO_USER`, stdin
/// closed), killed and the test failed if it runs past `limit`.
pub fn run_tool(scratch: &Scratch, args: &[&str], limit: Duration) -> ToolRun {
    let started = Instant::now();
    let mut child = Command::new(cli_path())
        .arg("--config")
        .arg(scratch.path("smsotp.toml"))
        .args(args)
        .env_remove("SUDO_USER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run smsotp");
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = started + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for smsotp") {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let r = ToolRun {
        code: status.and_then(|s| s.code()).unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        took: started.elapsed(),
    };
    assert!(status.is_some(), "smsotp {args:?} ran past {limit:?}: {r}");
    r
}

/// Reads one HTTP request (headers and a Content-Length body) within 2 s,
/// for the tests' local HTTP gateways; what came if the client stops.
pub fn read_http_request(conn: &mut TcpStream) -> String {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + len {
                return text;
            }
        }
        match std::io::Read::read(conn, &mut buf) {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&data).into_owned(),
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_codes() {
        assert_eq!(
            extract_code("123456 is your login code for web1. It expires in 5 minutes.").as_deref(),
            Some("123456")
        );
        assert_eq!(extract_code("Code: K7PX9QRT").as_deref(), Some("K7PX9QRT"));
        assert_eq!(extract_code("no code here"), None);
    }
}
