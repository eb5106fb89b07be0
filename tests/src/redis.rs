//! A `redis-server` of a test's own, on a Unix socket in a temp dir (and,
//! when asked, on a TCP port of 127.0.0.1), killed on drop: for `[store]
//! kind = "redis"` end to end. It can be stopped and started again on the
//! same socket, port and directory ("Redis is down", "Redis is back"), and
//! can keep an append-only file there (`appendonly yes`) so what was
//! written survives the restart. Needs the Debian package `redis-server`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start or a restart may take until the server answers PING.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stop may take before the server is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How [`RedisServer::start_with`] runs the server.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisOptions {
    /// Also listen on a free TCP port of 127.0.0.1 ([`RedisServer::tcp_url`]).
    pub tcp: bool,
    /// `appendonly yes` (fsync every second) in the server's directory,
    /// so a stop and a start keep the data; otherwise nothing is written to
    /// disk and a restart starts empty.
    pub appendonly: bool,
}

/// A `redis-server` of the test's own; killed on drop.
pub struct RedisServer {
    /// `None` while stopped.
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: Option<u16>,
    options: RedisOptions,
}

impl RedisServer {
    /// Starts one on a Unix socket, without persistence, and waits (under
    /// 5 s) until it answers; `None`, said loudly, if `redis-server` is not
    /// installed.
    pub fn start() -> Option<RedisServer> {
        RedisServer::start_with(RedisOptions::default())
    }

    /// [`RedisServer::start`] with `options`.
    pub fn start_with(options: RedisOptions) -> Option<RedisServer> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = options.tcp.then(crate::closed_port);
        let mut server = RedisServer {
            child: None,
            dir,
            port,
            options,
        };
        match server.spawn() {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!(
                    "\n\n*** SKIPPED: redis-server is not installed; the redis store is NOT tested \
                     (scripts/deps.sh test) ***\n\n"
                );
                return None;
            }
            Err(e) => panic!("cannot start redis-server: {e}"),
        }
        server.wait_ready();
        Some(server)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        assert!(self.child.is_none(), "redis-server is running already");
        let mut cmd = Command::new("redis-server");
        match self.port {
            Some(p) => cmd.args(["--bind", "127.0.0.1", "--port", &p.to_string()]),
            None => cmd.args(["--port", "0"]),
        };
        cmd.arg("--unixsocket")
            .arg(self.sock())
            .args(["--save", "", "--appendonly"])
            .arg(if self.options.appendonly { "yes" } else { "no" })
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn()?);
        Ok(())
    }

    /// Waits until the server answers PING (not merely accepts: with an
    /// append-only file it answers LOADING while it reads it back).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.command(&["PING"]).is_ok_and(|r| r == "+PONG") {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    panic!("redis-server exited at start: {status}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server as an admin would (SIGTERM: it writes out its
    /// append-only file and exits), killing it after [`STOP_TIMEOUT`].
    /// Clients then find nothing at the socket and the port.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child, not yet reaped; no memory
        // preconditions.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.wait();
    }

    /// Starts the server again after [`RedisServer::stop`], on the same
    /// socket, port and directory, and waits until it answers.
    pub fn restart(&mut self) {
        self.spawn().expect("restart redis-server");
        self.wait_ready();
    }

    /// Whether the server process is running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Its socket.
    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// `unix:///…/redis.sock`.
    pub fn unix_url(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    /// `redis://127.0.0.1:PORT`; panics unless started with `tcp`.
    pub fn tcp_url(&self) -> String {
        let port = self.port.expect("RedisOptions::tcp was not set");
        format!("redis://127.0.0.1:{port}")
    }

    /// A `[store]` table for it (the socket), keys under `prefix`.
    pub fn store_toml(&self, prefix: &str) -> String {
        store_table(&self.unix_url(), prefix, "")
    }

    /// One command over the socket, its arguments sent as a RESP array;
    /// the first line of the reply (`+PONG`, `:3`, `$5` …), bounded by
    /// one second. For checks on the server's state.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut s = UnixStream::connect(self.sock())?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.set_write_timeout(Some(Duration::from_secs(1)))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes())?;
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            if s.read(&mut byte)? == 0 {
                break;
            }
            reply.push(byte[0]);
        }
        Ok(String::from_utf8_lossy(&reply).trim_end().to_owned())
    }
}

/// A `[store]` table for a Redis at `url`, keys under `prefix`, with
/// `extra` lines (e.g. `connect_timeout = "500ms"\n`).
pub fn store_table(url: &str, prefix: &str, extra: &str) -> String {
    format!("[store]\nkind = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n{extra}\n")
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
