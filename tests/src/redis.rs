//! A `redis-server` of a test's own, on a Unix socket in a temp dir (no
//! TCP port, nothing written to disk), killed on drop: for `[store] kind =
//! "redis"` end to end. Needs the Debian package `redis-server`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct RedisServer {
    child: Child,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one and waits (under 5 s) until its socket takes connections;
    /// `None`, said loudly, if `redis-server` is not installed.
    pub fn start() -> Option<RedisServer> {
        let dir = tempfile::tempdir().expect("temp dir");
        let sock = dir.path().join("redis.sock");
        let child = match Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&sock)
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!(
                    "\n\n*** SKIPPED: redis-server is not installed; the redis store is NOT tested \
                     (scripts/deps.sh test) ***\n\n"
                );
                return None;
            }
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let server = RedisServer { child, dir };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::os::unix::net::UnixStream::connect(server.sock()).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not take connections within 5 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(server)
    }

    /// Its socket.
    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// A `[store]` table for it, keys under `prefix`.
    pub fn store_toml(&self, prefix: &str) -> String {
        format!(
            "[store]\nkind = \"redis\"\nurl = \"unix://{}\"\nkey_prefix = \"{prefix}\"\n\n",
            self.sock().display()
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
