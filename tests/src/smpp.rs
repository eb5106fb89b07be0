//! An SMSC for the SMPP tests: `tests/smpp_server.js`, the server of the
//! npm `smpp` package (installed under `tests/node` by `scripts/deps.sh
//! test`), on a loopback port, recording every PDU it receives.
//!
//! [`SmppServer::start`] waits for the port it prints; the process is killed
//! when the guard is dropped, and ends by itself after [`LIFETIME`].

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::workspace_root;

/// How long the server may take to listen.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A server is killed after this long whatever the test does.
pub const LIFETIME: Duration = Duration::from_secs(120);

/// What the server does; `Default` accepts everything from `system_id`
/// "smsotp" with password "secret".
#[derive(Debug, Clone)]
pub struct Script {
    pub system_id: String,
    pub password: String,
    /// The first N submit_sm get ESME_RTHROTTLED.
    pub throttle: u32,
    /// Then N get ESME_RMSGQFUL.
    pub queue_full: u32,
    /// Then N get generic_nack.
    pub nack: u32,
    /// "bind" or "submit": never answered.
    pub hang: Option<&'static str>,
    /// Close a session after N accepted submit_sm.
    pub drop_after: Option<u32>,
    /// Fixed port (0: any free one).
    pub port: u16,
    /// The k-th accepted submit_sm asking for a receipt gets a deliver_sm
    /// receipt with the k-th state ("UNDELIV", "DELIVRD@2500": after 2.5 s;
    /// "-": none).
    pub receipts: Vec<String>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            system_id: "smsotp".into(),
            password: "secret".into(),
            throttle: 0,
            queue_full: 0,
            nack: 0,
            hang: None,
            drop_after: None,
            port: 0,
            receipts: Vec::new(),
        }
    }
}

/// The node_modules directory the server loads `smpp` from.
pub fn node_modules() -> PathBuf {
    workspace_root().join("tests/node/node_modules")
}

/// One running server.
pub struct SmppServer {
    pub port: u16,
    pub log: PathBuf,
    child: Child,
    _stdin: ChildStdin,
    _dir: tempfile::TempDir,
}

impl SmppServer {
    pub fn start(script: &Script) -> SmppServer {
        assert!(
            node_modules().join("smpp").is_dir(),
            "the npm smpp package is missing under {}; run scripts/deps.sh test",
            node_modules().display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("pdus.jsonl");
        let js = workspace_root().join("tests/smpp_server.js");
        let mut cmd = Command::new("node");
        cmd.arg(&js)
            .args(["--lifetime", &LIFETIME.as_secs().to_string()])
            .args(["--log", &log.display().to_string()])
            .args(["--port", &script.port.to_string()])
            .args(["--system-id", &script.system_id])
            .args(["--password", &script.password])
            .args(["--throttle", &script.throttle.to_string()])
            .args(["--queue-full", &script.queue_full.to_string()])
            .args(["--nack", &script.nack.to_string()]);
        if let Some(h) = script.hang {
            cmd.args(["--hang", h]);
        }
        if let Some(n) = script.drop_after {
            cmd.args(["--drop-after", &n.to_string()]);
        }
        if !script.receipts.is_empty() {
            cmd.args(["--receipts", &script.receipts.join(",")]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node tests/smpp_server.js (is nodejs installed?)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        // The first line names the port; read it without blocking forever.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("the SMPP server did not start within {START_TIMEOUT:?}");
            }
        };
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("SMPP server said {line:?}: {e}"));
        let port = v["port"].as_u64().expect("port") as u16;
        SmppServer {
            port,
            log,
            child,
            _stdin: stdin,
            _dir: dir,
        }
    }

    /// Every logged line so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        read_log(&self.log)
    }

    /// The PDUs named `command`, in order.
    pub fn pdus(&self, command: &str) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|e| e["command"] == command)
            .collect()
    }

    /// The logged events named `event` ("receipt", "receipt_acked", …).
    pub fn logged(&self, event: &str) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == event)
            .collect()
    }

    /// Waits until at least `n` events named `event` were logged.
    pub fn wait_for_event(
        &self,
        event: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.logged(event);
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until at least `n` PDUs named `command` were logged.
    pub fn wait_for(&self, command: &str, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.pdus(command);
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server now (its port then refuses connections).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SmppServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_log(path: &Path) -> Vec<serde_json::Value> {
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad log line {l:?}: {e}")))
        .collect()
}
