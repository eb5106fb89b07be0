//! A Redis master, one replica and three `redis-sentinel`s of a test's
//! own on 127.0.0.1 (ports from the OS), each with its own temp dir and
//! config file (sentinels rewrite theirs), append-only files on; all
//! killed on drop. For `[store] sentinels = [...]` end to end, failover
//! included. Needs the Debian packages `redis-server` and
//! `redis-sentinel` (scripts/deps.sh test).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The name the sentinels monitor the master by.
pub const MASTER_NAME: &str = "e2emaster";
/// `down-after-milliseconds`: how long the master must be silent before
/// a sentinel calls it down.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);
/// `failover-timeout`.
pub const FAILOVER_TIMEOUT: Duration = Duration::from_millis(3000);

/// One `redis-server` or `redis-sentinel`.
pub struct Node {
    child: Option<Child>,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Node {
    /// Kills it with SIGKILL (nothing flushed) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its log file, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A master, its replica and three sentinels (quorum 2).
pub struct Cluster {
    /// The master at the start.
    pub master: Node,
    /// The replica at the start (`replicaof` the master).
    pub replica: Node,
    /// The three sentinels.
    pub sentinels: Vec<Node>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

fn installed(program: &str) -> bool {
    match Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "\n\n*** SKIPPED: {program} is not installed; Redis Sentinel failover is NOT \
                 tested (scripts/deps.sh test) ***\n\n"
            );
            false
        }
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

/// Starts `program` with a config file `conf` in its own dir and waits
/// (< 5 s) until its port takes connections.
fn start(program: &str, conf: impl FnOnce(u16, &std::path::Path) -> String) -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let path = dir.path().join("node.conf");
    std::fs::write(&path, conf(port, dir.path())).expect("write config");
    let child = Command::new(program)
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let node = Node {
        child: Some(child),
        port,
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{program} did not listen on {port} within 5 s:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    node
}

fn server_conf(port: u16, dir: &std::path::Path, extra: &str) -> String {
    format!(
        "bind 127.0.0.1\nport {port}\ndir {}\nlogfile {}/log\nsave \"\"\nappendonly yes\n\
         appendfsync always\nrepl-diskless-sync-delay 0\n{extra}",
        dir.display(),
        dir.display()
    )
}

/// Sends one command to 127.0.0.1:`port`, within 2 s.
pub fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> redis::RedisResult<T> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))?
        .get_connection_with_timeout(Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut c)
}

impl Cluster {
    /// Starts all five and waits (< 15 s) until the replica is in sync
    /// and every sentinel knows the replica and the two other sentinels;
    /// `None`, said loudly, if a program is not installed.
    pub fn start() -> Option<Cluster> {
        if !installed("redis-server") || !installed("redis-sentinel") {
            return None;
        }
        let master = start("redis-server", |port, dir| server_conf(port, dir, ""));
        let replica = start("redis-server", |port, dir| {
            server_conf(port, dir, &format!("replicaof 127.0.0.1 {}\n", master.port))
        });
        let sentinels = (0..3)
            .map(|_| {
                start("redis-sentinel", |port, dir| {
                    format!(
                        "bind 127.0.0.1\nport {port}\ndir {d}\nlogfile {d}/log\n\
                         sentinel monitor {MASTER_NAME} 127.0.0.1 {m} 2\n\
                         sentinel down-after-milliseconds {MASTER_NAME} {down}\n\
                         sentinel failover-timeout {MASTER_NAME} {fo}\n\
                         sentinel parallel-syncs {MASTER_NAME} 1\n",
                        d = dir.display(),
                        m = master.port,
                        down = DOWN_AFTER.as_millis(),
                        fo = FAILOVER_TIMEOUT.as_millis(),
                    )
                })
            })
            .collect();
        let cluster = Cluster {
            master,
            replica,
            sentinels,
        };
        cluster.wait_settled(Duration::from_secs(15));
        Some(cluster)
    }

    fn wait_settled(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let replica_ok = query::<String>(self.master.port, &["INFO", "replication"])
                .map(|i| i.contains("state=online"))
                .unwrap_or(false);
            let sentinels_ok = self.sentinels.iter().all(|s| {
                query::<std::collections::HashMap<String, String>>(
                    s.port,
                    &["SENTINEL", "MASTER", MASTER_NAME],
                )
                .map(|m| {
                    m.get("num-other-sentinels").map(String::as_str) == Some("2")
                        && m.get("num-slaves").map(String::as_str) == Some("1")
                })
                .unwrap_or(false)
            });
            if replica_ok && sentinels_ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels did not settle within {limit:?} (replica online: {replica_ok})\n\
                 --- sentinel log\n{}",
                self.sentinels[0].log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A `[store]` table naming the sentinels (keys under `prefix`).
    pub fn store_toml(&self, prefix: &str) -> String {
        let list: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("\"127.0.0.1:{}\"", s.port))
            .collect();
        format!(
            "[store]\nkind = \"redis\"\nsentinels = [{}]\nmaster_name = \"{MASTER_NAME}\"\n\
             key_prefix = \"{prefix}\"\nconnect_timeout = \"500ms\"\ntimeout = \"1s\"\n\n",
            list.join(", ")
        )
    }

    /// Where the first sentinel that answers says the master is (port).
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            query::<Option<(String, u16)>>(
                s.port,
                &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
            )
            .ok()
            .flatten()
            .map(|(_, p)| p)
        })
    }

    /// The sentinels' logs, for failure messages.
    pub fn logs(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("--- sentinel {}\n{}", s.port, s.log()))
            .collect()
    }
}
