//! A real OpenSSH `sshd` on a loopback port, with a PAM stack of its own, and
//! the paramiko client (`tests/ssh_client.py`) that logs in to it.
//!
//! sshd names its PAM service after its program name, so it runs through a
//! link `<tmp>/smsotp-test-sshd-<pid>-<n> -> /usr/sbin/sshd` and reads
//! `/etc/pam.d/smsotp-test-sshd-<pid>-<n>`: the system's own sshd config and
//! `/etc/pam.d/sshd` are never touched, and tests running at the same time
//! do not share a stack. The first factor is `pam_matrix` (libpam-wrapper)
//! with a password file in the temp dir, so no system password is set.
//!
//! Needs root (sshd, /etc/pam.d, useradd), Debian's openssh-server,
//! libpam-wrapper and python3-paramiko (for /usr/bin/python3).
//!
//! Lifetime: sshd runs under `timeout(1)`, so it dies after
//! [`SshdSetup::lifetime`] even if the test process is killed; normally
//! [`Sshd`]'s `Drop` stops it and every process it forked, then removes the
//! PAM service file. Test users created by [`ensure_user`] are left in place
//! (they have no password and no home, and sshd only admits them through a
//! test stack; removing them while another test uses them would race).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The system sshd the link points to.
pub const SSHD: &str = "/usr/sbin/sshd";
/// pam_matrix from Debian's libpam-wrapper: checks `user:password:service`
/// lines in its `passdb=` file; works outside pam_wrapper too.
pub const PAM_MATRIX: &str = "/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_matrix.so";
/// Debian's python, the one python3-paramiko is installed for.
pub const PYTHON: &str = "/usr/bin/python3";

/// What to start: the user and password the first factor accepts, and the
/// `auth` lines that follow it (e.g. pam_smsotp).
#[derive(Debug, Clone)]
pub struct SshdSetup {
    pub user: String,
    pub password: String,
    /// Full PAM lines placed after the pam_matrix password line.
    pub extra_auth: Vec<String>,
    /// Hard limit on sshd's life, enforced by timeout(1).
    pub lifetime: Duration,
}

impl SshdSetup {
    pub fn new(user: &str, password: &str) -> Self {
        SshdSetup {
            user: user.to_owned(),
            password: password.to_owned(),
            extra_auth: Vec::new(),
            lifetime: Duration::from_secs(120),
        }
    }

    /// Adds `auth required <module> <args>` after the password check.
    pub fn then_required(mut self, module: &Path, args: &str) -> Self {
        self.extra_auth
            .push(format!("auth required {} {args}", module.display()));
        self
    }
}

/// A running sshd; stopped (with all its children) and cleaned up on drop.
pub struct Sshd {
    pub port: u16,
    /// The PAM service name (also the name of the sshd link).
    pub service: String,
    pub dir: tempfile::TempDir,
    child: Child,
    /// Removed on drop, after sshd has stopped (fields drop after `drop`).
    _pam_file: RemoveOnDrop,
    log: Arc<Mutex<String>>,
}

static INSTANCE: AtomicUsize = AtomicUsize::new(0);

/// Panics unless the test runs as root, naming what needs it.
pub fn require_root(what: &str) {
    let euid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    assert_eq!(
        euid, 0,
        "{what} needs root (sshd, /etc/pam.d, useradd); run the tests as root"
    );
}

/// Creates a local user (no home, no password, shell /bin/sh) unless it
/// exists. The user is left in place afterwards.
pub fn ensure_user(name: &str) {
    // Tests in one binary run in parallel; two useradd at once can fail on
    // the passwd lock.
    static USERADD: Mutex<()> = Mutex::new(());
    let _serial = USERADD.lock().unwrap_or_else(|e| e.into_inner());
    let exists = |n: &str| {
        Command::new("getent")
            .args(["passwd", n])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if exists(name) {
        return;
    }
    let out = Command::new("useradd")
        .args(["-M", "-s", "/bin/sh", "-c", "smsotp e2e test user", name])
        .output()
        .expect("run useradd");
    // 9: created meanwhile by another test process.
    assert!(
        out.status.success() || out.status.code() == Some(9) || exists(name),
        "useradd {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Sshd {
    /// Starts sshd and waits until it listens. Retries with another port if
    /// the free port it picked was taken meanwhile.
    pub fn start(setup: &SshdSetup) -> Sshd {
        require_root("sshd end-to-end test");
        for p in [SSHD, PAM_MATRIX, PYTHON] {
            assert!(
                Path::new(p).exists(),
                "{p} is missing: apt-get install openssh-server libpam-wrapper python3-paramiko"
            );
        }
        // sshd refuses to start without its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");

        let dir = tempfile::Builder::new()
            .prefix("smsotp-sshd-")
            .tempdir()
            .expect("create sshd temp dir");
        let service = format!(
            "smsotp-test-sshd-{}-{}",
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::Relaxed)
        );
        let link = dir.path().join(&service);
        std::os::unix::fs::symlink(SSHD, &link).expect("link sshd");

        let key = dir.path().join("host_ed25519_key");
        host_key(&key);

        let passdb = dir.path().join("passdb");
        std::fs::write(
            &passdb,
            format!("{}:{}:{service}\n", setup.user, setup.password),
        )
        .expect("write passdb");

        let mut stack = format!("auth requisite {PAM_MATRIX} passdb={}\n", passdb.display());
        for line in &setup.extra_auth {
            stack.push_str(line);
            stack.push('\n');
        }
        stack.push_str("account required pam_permit.so\nsession required pam_permit.so\n");
        let pam_file = RemoveOnDrop(Path::new("/etc/pam.d").join(&service));
        std::fs::write(&pam_file.0, stack).expect("write /etc/pam.d service file");

        let config = dir.path().join("sshd_config");
        let (port, child, log) = listening_sshd(|port| {
            std::fs::write(&config, sshd_config(dir.path(), &key, port, &setup.user))
                .expect("write sshd_config");
            let mut cmd = Command::new("timeout");
            cmd.args(["-s", "TERM", "-k", "5"])
                .arg(format!("{}", setup.lifetime.as_secs().max(1)))
                .arg(&link) // absolute: sshd re-execs itself by this path
                .args(["-D", "-e", "-f"])
                .arg(&config);
            cmd
        });
        Sshd {
            port,
            service,
            dir,
            child,
            _pam_file: pam_file,
            log,
        }
    }

    /// Everything sshd wrote to stderr so far (`-e`, LogLevel DEBUG1).
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until sshd's log contains `needle` (it arrives through a pipe,
    /// a moment after the client saw the effect).
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Logs in with the paramiko client. `outbox` is where the code is read
    /// from; `code` is how the code prompt is answered.
    pub fn login(
        &self,
        user: &str,
        password: &str,
        outbox: Option<&Path>,
        code: CodeAnswer,
    ) -> Login {
        login_kbd_interactive(self.port, user, password, outbox, code)
    }
}

/// Logs in to the sshd on 127.0.0.1:`port` with the paramiko client
/// (keyboard-interactive): the password prompt gets `password`, a code
/// prompt what `code` says (read from `outbox`); then runs `echo ok`.
pub fn login_kbd_interactive(
    port: u16,
    user: &str,
    password: &str,
    outbox: Option<&Path>,
    code: CodeAnswer,
) -> Login {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ssh_client.py");
    let mut cmd = Command::new(PYTHON);
    cmd.arg(&script)
        .args([
            "--port",
            &port.to_string(),
            "--user",
            user,
            "--password",
            password,
        ])
        .args(["--code", code.as_arg(), "--timeout", "20"]);
    if let Some(o) = outbox {
        cmd.arg("--outbox").arg(o);
    }
    let out = run_bounded(cmd, Duration::from_secs(30));
    let events = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect();
    Login {
        status: out.status,
        events,
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        stop_tree(&mut self.child);
        if std::thread::panicking() {
            eprintln!("---- sshd {} log ----\n{}", self.service, self.log());
        }
    }
}

/// A file (the /etc/pam.d service) removed when this is dropped, so a panic
/// anywhere after it was written leaves nothing behind.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// How the client answers the code prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeAnswer {
    /// The code from the newest SMS.
    Right,
    /// A code of the same shape that differs from the one sent, every time.
    Wrong,
    /// No code expected: any such prompt gets an empty answer.
    None,
}

impl CodeAnswer {
    fn as_arg(self) -> &'static str {
        match self {
            CodeAnswer::Right => "right",
            CodeAnswer::Wrong => "wrong",
            CodeAnswer::None => "none",
        }
    }
}

/// What the client saw and how it ended.
#[derive(Debug)]
pub struct Login {
    pub status: ExitStatus,
    /// One JSON object per line the client printed (see ssh_client.py).
    pub events: Vec<serde_json::Value>,
    pub stdout: String,
    pub stderr: String,
}

impl Login {
    /// Logged in and `echo ok` printed ok.
    pub fn succeeded(&self) -> bool {
        self.status.code() == Some(0)
    }

    /// Authentication was refused (as opposed to a harness error).
    pub fn refused(&self) -> bool {
        self.status.code() == Some(1)
    }

    /// Every prompt text the server sent, in order.
    pub fn prompts(&self) -> Vec<String> {
        self.of("round")
            .flat_map(|e| e["prompts"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p[0].as_str().map(str::to_owned))
            .collect()
    }

    /// Every instruction / name text (where sshd puts PAM info messages).
    pub fn infos(&self) -> Vec<String> {
        self.of("round")
            .flat_map(|e| [e["name"].as_str(), e["instruction"].as_str()])
            .flatten()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Events of one kind.
    pub fn of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a serde_json::Value> + 'a {
        self.events.iter().filter(move |e| e["event"] == kind)
    }

    /// The client's transcript, for assertion messages.
    pub fn transcript(&self) -> String {
        format!(
            "status {}\nstdout:\n{}stderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

fn sshd_config(dir: &Path, key: &Path, port: u16, user: &str) -> String {
    format!(
        "# Written by the smsotp e2e tests; only for this run.\n\
         Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {key}\n\
         PidFile {pid}\n\
         UsePAM yes\n\
         KbdInteractiveAuthentication yes\n\
         PasswordAuthentication no\n\
         PubkeyAuthentication no\n\
         AuthenticationMethods keyboard-interactive\n\
         AuthorizedKeysFile none\n\
         PermitRootLogin no\n\
         AllowUsers {user}\n\
         LoginGraceTime 30\n\
         UseDNS no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         X11Forwarding no\n\
         LogLevel DEBUG1\n",
        key = key.display(),
        pid = dir.join("sshd.pid").display(),
    )
}

/// Makes an ed25519 host key at `key`.
fn host_key(key: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "smsotp-test", "-f"])
        .arg(key)
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the sshd that `command(port)` describes on a free loopback port,
/// its stderr collected, and waits until it listens. Tries another port if
/// the one picked was taken meanwhile.
fn listening_sshd(mut command: impl FnMut(u16) -> Command) -> (u16, Child, Arc<Mutex<String>>) {
    let mut last_log = String::new();
    for _attempt in 0..5 {
        let port = free_port();
        let mut child = command(port)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sshd");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap_or_else(|e| e.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
        match wait_listening(&mut child, &log, port, Duration::from_secs(10)) {
            Ok(()) => return (port, child, log),
            Err(text) => {
                stop_tree(&mut child);
                if !text.contains("Address already in use") {
                    panic!("sshd did not start:\n{text}");
                }
                last_log = text;
            }
        }
    }
    panic!("sshd could not bind a free port in 5 attempts:\n{last_log}");
}

fn wait_listening(
    child: &mut Child,
    log: &Mutex<String>,
    port: u16,
    timeout: Duration,
) -> Result<(), String> {
    let text = || log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let needle = format!("Server listening on 127.0.0.1 port {port}");
    let deadline = Instant::now() + timeout;
    loop {
        if text().contains(&needle) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Let the reader thread drain what sshd said before it died.
            std::thread::sleep(Duration::from_millis(100));
            return Err(format!("sshd exited ({status}):\n{}", text()));
        }
        if Instant::now() > deadline {
            return Err(format!("sshd not listening after {timeout:?}:\n{}", text()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops `child` (timeout(1) running sshd) and every process below it.
/// sshd's connection children call setsid, so a process-group kill would
/// miss them; they are found through /proc instead.
fn stop_tree(child: &mut Child) {
    let root = child.id();
    let mut pids = descendants(root);
    pids.push((root, start_time(root)));
    signal(&pids, "TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Whatever is left (same pid *and* start time, so never a reused pid).
    signal(&pids, "KILL");
    let _ = child.kill();
    let _ = child.wait();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// Start time of a process (field 22 of /proc/PID/stat), to tell a process
/// from a later one that reuses its pid.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

/// All live descendants of `root`, with their start times.
fn descendants(root: u32) -> Vec<(u32, Option<u64>)> {
    let all: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|pid| Some((pid, parent_of(pid)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(all.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found
        .into_iter()
        .skip(1)
        .map(|pid| (pid, start_time(pid)))
        .collect()
}

/// Sends `sig` to each process that is still the one we recorded.
fn signal(pids: &[(u32, Option<u64>)], sig: &str) {
    let live: Vec<String> = pids
        .iter()
        .filter(|(pid, t)| t.is_some() && start_time(*pid) == *t)
        .map(|(pid, _)| pid.to_string())
        .collect();
    if live.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(&live)
        .stderr(Stdio::null())
        .status();
}

/// Output of a program run with a time limit.
pub struct Bounded {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd`, killing it after `limit`; collects stdout and stderr.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Bounded {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let read = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = read(child.stdout.take().map(|r| Box::new(r) as _));
    let err = read(child.stderr.take().map(|r| Box::new(r) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for child") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait for killed child");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Bounded {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// The system's own sshd set-up — `/etc/ssh/sshd_config` with its drop-ins
/// and the PAM service `sshd` (so `/etc/pam.d/sshd` and common-auth) — on
/// a loopback port, with a host key and authorized keys
/// (`<dir>/<user>.keys`) from a scratch dir. For the package test, which
/// checks what the README's install steps do to real logins. Stopped, with
/// every process it forked, on drop.
pub struct SystemSshd {
    pub port: u16,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl SystemSshd {
    /// Starts `/usr/sbin/sshd -D -f /etc/ssh/sshd_config` with command-line
    /// overrides for the port, the address, the host key, the pid file and
    /// where authorized keys are read; every other setting is the system's.
    pub fn start(dir: &Path) -> SystemSshd {
        require_root("the system sshd test");
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let key = dir.join("host_ed25519_key");
        if !key.exists() {
            host_key(&key);
        }
        let (port, child, log) = listening_sshd(|port| {
            let mut cmd = Command::new("timeout");
            cmd.args(["-s", "TERM", "-k", "5", "120", SSHD, "-D", "-e"])
                .args(["-f", "/etc/ssh/sshd_config"])
                .args(["-o", &format!("Port={port}")])
                .args(["-o", "ListenAddress=127.0.0.1"])
                .args(["-o", "PidFile=none"])
                .args(["-o", "StrictModes=no"])
                .args(["-o", "LogLevel=DEBUG1"])
                .args([
                    "-o",
                    &format!("AuthorizedKeysFile={}/%u.keys", dir.display()),
                ])
                .arg("-h")
                .arg(&key);
            cmd
        });
        SystemSshd { port, child, log }
    }

    /// Everything sshd wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `ssh -i key user@127.0.0.1 echo ok` with OpenSSH's client, public
    /// key only (no password or keyboard-interactive): true when it logged
    /// in and printed ok.
    pub fn key_login(&self, user: &str, key: &Path) -> (bool, String) {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-i"]).arg(key).args([
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "PreferredAuthentications=publickey",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
            "-p",
            &self.port.to_string(),
            &format!("{user}@127.0.0.1"),
            "echo",
            "ok",
        ]);
        let out = run_bounded(cmd, Duration::from_secs(30));
        (
            out.status.success() && out.stdout.trim() == "ok",
            format!("{}{}", out.stdout, out.stderr),
        )
    }
}

impl Drop for SystemSshd {
    fn drop(&mut self) {
        stop_tree(&mut self.child);
        if std::thread::panicking() {
            eprintln!("---- system sshd log ----\n{}", self.log());
        }
    }
}
