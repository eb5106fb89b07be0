//! Drives PAM stacks through the real `pamtester` under `pam_wrapper` and
//! `nss_wrapper`, so no file in /etc is read or written and no system user is
//! created.
//!
//! How the pieces fit:
//!
//! - `libpam_wrapper.so` (LD_PRELOAD, `PAM_WRAPPER=1`) makes `pam_start` read
//!   service files from `PAM_WRAPPER_SERVICE_DIR` instead of /etc/pam.d. It
//!   copies that whole directory on start, so it holds service files only.
//! - `pam_matrix.so` is the first factor: `passdb=FILE` with lines
//!   `user:password:service`. It prompts "Password: " and sets PAM_AUTHTOK.
//! - `libnss_wrapper.so` answers getpwnam/getgrouplist/... from our own
//!   passwd and group files (`NSS_WRAPPER_PASSWD`, `NSS_WRAPPER_GROUP`).
//! - pamtester's conversation (`misc_conv`) writes prompts and error messages
//!   to stderr and info messages to stdout, and reads each answer with a
//!   single `read()` on stdin. So stdout and stderr go to one pipe (in order;
//!   `libstdbuf.so` with `_STDBUF_O=0` unbuffers stdout), and a [`Login`]
//!   writes each answer only after the prompt for it has appeared.
//!
//! Every login runs under a hard timeout (a watchdog thread kills pamtester),
//! and a [`Login`] that is dropped early kills its process.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Outbox, Scratch, Sms};

/// The password every test user has in pam_matrix's passdb.
pub const PASSWORD: &str = "matrix-pw-1";
/// How long one login may run before the watchdog kills pamtester.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one `expect_*` waits for its text (bounded by the login timeout).
pub const EXPECT_TIMEOUT: Duration = Duration::from_secs(10);
/// What the Debian packages the harness needs are called.
pub const PACKAGES: &str = "pamtester libpam-wrapper libnss-wrapper libpam-modules coreutils";

const PAMTESTER: &str = "/usr/bin/pamtester";
const LIB_DIRS: [&str; 5] = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
];

/// Finds `rel` under the first library directory that has it.
fn find_lib(rel: &str) -> PathBuf {
    LIB_DIRS
        .iter()
        .map(|d| Path::new(d).join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{rel} not found under {LIB_DIRS:?}; install the Debian packages: apt-get install -y {PACKAGES}")
        })
}

/// Absolute paths of the wrapper libraries and test modules.
#[derive(Debug, Clone)]
pub struct Tools {
    pub pam_wrapper: PathBuf,
    pub nss_wrapper: PathBuf,
    pub stdbuf: PathBuf,
    pub pam_matrix: PathBuf,
    /// The directory of the system's PAM modules (pam_permit.so, ...).
    pub security_dir: PathBuf,
}

impl Tools {
    /// Locates everything, or panics naming the package to install.
    pub fn find() -> Tools {
        if !Path::new(PAMTESTER).exists() {
            panic!(
                "{PAMTESTER} not found; install the Debian packages: apt-get install -y {PACKAGES}"
            );
        }
        let stdbuf = [
            "/usr/libexec/coreutils/libstdbuf.so",
            "/usr/lib/coreutils/libstdbuf.so",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("libstdbuf.so (coreutils) not found"));
        let permit = find_lib("security/pam_permit.so");
        Tools {
            pam_wrapper: find_lib("libpam_wrapper.so"),
            nss_wrapper: find_lib("libnss_wrapper.so"),
            stdbuf,
            pam_matrix: find_lib("pam_wrapper/pam_matrix.so"),
            security_dir: permit.parent().expect("security dir").to_path_buf(),
        }
    }

    /// A system PAM module by file name, e.g. `pam_permit.so`.
    pub fn module(&self, name: &str) -> PathBuf {
        let p = self.security_dir.join(name);
        assert!(p.exists(), "{} not found", p.display());
        p
    }
}

/// A user in the fake passwd file.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
}

/// A group in the fake group file.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The gid of the default `svc-backup` group.
pub const SVC_BACKUP_GID: u32 = 3000;

/// A scratch directory with fake users and groups, a pam_matrix passdb, and
/// PAM service files; the place to start logins from.
///
/// Default users (all with password [`PASSWORD`], each with a primary group
/// of the same name unless said otherwise):
///
/// | user  | uid  | groups |
/// |-------|------|--------|
/// | root  | 0    | root |
/// | alice | 2001 | alice, users |
/// | bob   | 2002 | bob, users |
/// | carol | 2003 | carol, users |
/// | dave  | 2004 | dave, svc-backup (listed as a member) |
/// | erin  | 2005 | primary group svc-backup, not listed as a member |
///
/// Which of them has a phone, and what the module's config says, is up to
/// each test (through [`PamEnv::scratch`]).
pub struct PamEnv {
    pub scratch: Scratch,
    pub tools: Tools,
    users: Vec<User>,
    groups: Vec<Group>,
    services: Vec<String>,
    extra_env: Vec<(String, String)>,
}

impl Default for PamEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl PamEnv {
    pub fn new() -> Self {
        let tools = Tools::find();
        let scratch = Scratch::new();
        std::fs::create_dir(scratch.path("pam.d")).expect("create pam.d");
        let user = |name: &str, uid: u32, gid: u32| User {
            name: name.into(),
            uid,
            gid,
            gecos: format!("{name},,,"),
        };
        let group = |name: &str, gid: u32, members: &[&str]| Group {
            name: name.into(),
            gid,
            members: members.iter().map(|m| m.to_string()).collect(),
        };
        let env = PamEnv {
            scratch,
            tools,
            users: vec![
                User {
                    name: "root".into(),
                    uid: 0,
                    gid: 0,
                    gecos: "root".into(),
                },
                user("alice", 2001, 2001),
                user("bob", 2002, 2002),
                user("carol", 2003, 2003),
                user("dave", 2004, 2004),
                user("erin", 2005, SVC_BACKUP_GID),
            ],
            groups: vec![
                group("root", 0, &[]),
                group("users", 100, &["alice", "bob", "carol"]),
                group("alice", 2001, &[]),
                group("bob", 2002, &[]),
                group("carol", 2003, &[]),
                group("dave", 2004, &[]),
                group("svc-backup", SVC_BACKUP_GID, &["dave"]),
            ],
            services: Vec::new(),
            extra_env: Vec::new(),
        };
        // Anything that asks for a service we did not write gets pam_deny,
        // and pam_wrapper stops complaining about a missing "other".
        let deny = env.tools.module("pam_deny.so");
        let other = ["auth", "account", "password", "session"]
            .iter()
            .map(|t| format!("{t} required {}\n", deny.display()))
            .collect::<String>();
        env.write_service_file("other", &other);
        env.write_identity_files();
        env
    }

    /// Adds a user (password [`PASSWORD`]) with primary group `gid`, member
    /// of the named supplementary groups (created when missing).
    pub fn add_user(
        &mut self,
        name: &str,
        uid: u32,
        gid: u32,
        gecos: &str,
        groups: &[&str],
    ) -> &mut Self {
        self.users.push(User {
            name: name.into(),
            uid,
            gid,
            gecos: gecos.into(),
        });
        if !self.groups.iter().any(|g| g.gid == gid) {
            self.groups.push(Group {
                name: name.into(),
                gid,
                members: Vec::new(),
            });
        }
        for gname in groups {
            let next_gid = self
                .groups
                .iter()
                .map(|g| g.gid)
                .max()
                .unwrap_or(0)
                .max(4000)
                + 1;
            match self.groups.iter_mut().find(|g| g.name == *gname) {
                Some(g) => g.members.push(name.into()),
                None => self.groups.push(Group {
                    name: gname.to_string(),
                    gid: next_gid,
                    members: vec![name.into()],
                }),
            }
        }
        self.write_identity_files();
        self
    }

    /// Passes an extra environment variable to every pamtester run.
    pub fn set_env(&mut self, key: &str, value: &str) -> &mut Self {
        self.extra_env.push((key.into(), value.into()));
        self
    }

    pub fn dir(&self) -> &Path {
        self.scratch.dir.path()
    }

    /// The config path the module line points to by default.
    pub fn config_path(&self) -> PathBuf {
        self.scratch.path("smsotp.toml")
    }

    /// `auth requisite pam_matrix.so passdb=...`: the password step.
    pub fn matrix_line(&self) -> String {
        format!(
            "auth requisite {} passdb={}",
            self.tools.pam_matrix.display(),
            self.scratch.path("passdb").display()
        )
    }

    /// `auth required libpam_smsotp.so config=<scratch>/smsotp.toml ARGS`.
    pub fn smsotp_line(&self, args: &str) -> String {
        self.smsotp_line_with_config(&self.config_path(), args)
    }

    /// Like [`PamEnv::smsotp_line`] with another config path.
    pub fn smsotp_line_with_config(&self, config: &Path, args: &str) -> String {
        format!(
            "auth required {} config={} {args}",
            crate::module_path().display(),
            config.display()
        )
        .trim_end()
        .to_owned()
    }

    /// A system module as an `auth` line, e.g. `system_line("required", "pam_permit.so", "")`.
    pub fn system_line(&self, control: &str, module: &str, args: &str) -> String {
        format!(
            "auth {control} {} {args}",
            self.tools.module(module).display()
        )
        .trim_end()
        .to_owned()
    }

    /// The stack under test: pam_matrix, then pam_smsotp with the scratch
    /// config and `args`.
    pub fn smsotp_service(&mut self, name: &str, args: &str) -> String {
        let lines = [self.matrix_line(), self.smsotp_line(args)];
        self.service(name, &lines)
    }

    /// Writes service `name` with the given `auth` lines, followed by
    /// `account required pam_permit.so`, and returns the name.
    pub fn service(&mut self, name: &str, auth_lines: &[String]) -> String {
        assert!(
            !name.is_empty() && name != "other" && !name.contains('/'),
            "bad service name {name:?}"
        );
        let mut text: String = auth_lines.iter().map(|l| format!("{l}\n")).collect();
        text.push_str(&format!(
            "account required {}\n",
            self.tools.module("pam_permit.so").display()
        ));
        self.write_service_file(name, &text);
        if !self.services.iter().any(|s| s == name) {
            self.services.push(name.into());
        }
        self.write_passdb();
        name.into()
    }

    /// The text of service file `name` (for failure messages).
    pub fn service_text(&self, name: &str) -> String {
        std::fs::read_to_string(self.scratch.path("pam.d").join(name)).unwrap_or_default()
    }

    fn write_service_file(&self, name: &str, text: &str) {
        let p = self.scratch.path("pam.d").join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    fn write_passdb(&self) {
        let mut text = String::new();
        for s in &self.services {
            for u in &self.users {
                text.push_str(&format!("{}:{PASSWORD}:{s}\n", u.name));
            }
        }
        self.scratch.write("passdb", &text, 0o600);
    }

    fn write_identity_files(&self) {
        let passwd: String = self
            .users
            .iter()
            .map(|u| {
                format!(
                    "{}:x:{}:{}:{}:/nonexistent:/usr/sbin/nologin\n",
                    u.name, u.uid, u.gid, u.gecos
                )
            })
            .collect();
        let group: String = self
            .groups
            .iter()
            .map(|g| format!("{}:x:{}:{}\n", g.name, g.gid, g.members.join(",")))
            .collect();
        self.scratch.write("passwd", &passwd, 0o644);
        self.scratch.write("group", &group, 0o644);
        self.write_passdb();
    }

    /// Starts `pamtester -v SERVICE USER authenticate` with the default
    /// [`LOGIN_TIMEOUT`].
    pub fn login(&self, service: &str, user: &str) -> Login {
        self.login_with_timeout(service, user, LOGIN_TIMEOUT)
    }

    /// Starts a login that the watchdog kills after `timeout`.
    pub fn login_with_timeout(&self, service: &str, user: &str, timeout: Duration) -> Login {
        self.login_doing(service, user, "authenticate", timeout)
    }

    /// Starts a login whose pamtester operation is `operation`, e.g.
    /// `authenticate(PAM_SILENT)` (as sudo calls it).
    pub fn login_doing(
        &self,
        service: &str,
        user: &str,
        operation: &str,
        timeout: Duration,
    ) -> Login {
        self.login_with_program(
            PAMTESTER,
            &["-v", service, user, operation],
            service,
            user,
            timeout,
        )
    }

    /// Starts `program args…` under the wrappers, in place of pamtester,
    /// for a login of `user` on `service` (e.g. the `pam_retry` test
    /// driver, which retries on one handle as sudo does).
    pub fn login_with_program(
        &self,
        program: &str,
        args: &[&str],
        service: &str,
        user: &str,
        timeout: Duration,
    ) -> Login {
        let t = &self.tools;
        let preload = format!(
            "{}:{}:{}",
            t.pam_wrapper.display(),
            t.nss_wrapper.display(),
            t.stdbuf.display()
        );
        let mut cmd = Command::new("/bin/sh");
        // exec keeps the pid, so the watchdog kills pamtester itself. The
        // shell must not load the wrappers: pam_wrapper makes a /tmp/pam.X
        // directory in its constructor and removes it only at exit, which
        // an exec skips.
        cmd.args([
            "-c",
            "export LD_PRELOAD=\"$SMSOTP_E2E_PRELOAD\"; exec \"$@\" 2>&1",
            "sh",
            program,
        ])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C")
        .env("SMSOTP_E2E_PRELOAD", preload)
        .env("_STDBUF_O", "0")
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", self.scratch.path("pam.d"))
        .env("NSS_WRAPPER_PASSWD", self.scratch.path("passwd"))
        .env("NSS_WRAPPER_GROUP", self.scratch.path("group"))
        .current_dir(self.dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        Login::spawn(
            cmd,
            format!("{service}/{user}"),
            timeout,
            self.service_text(service),
        )
    }
}

/// What pamtester printed, with the answers we typed interleaved.
#[derive(Default)]
struct Buf {
    /// stdout and stderr, in order.
    text: String,
    /// (position in `text`, answer) for each answer given.
    answers: Vec<(usize, String)>,
    eof: bool,
}

impl Buf {
    fn dialog(&self) -> String {
        let mut out = String::new();
        let mut at = 0;
        for (pos, a) in &self.answers {
            out.push_str(&self.text[at..*pos]);
            out.push_str(&format!("«{a}»\n"));
            at = *pos;
        }
        out.push_str(&self.text[at..]);
        out
    }
}

type Shared = Arc<(Mutex<Buf>, Condvar)>;

/// One running `pamtester` with a scripted user at the keyboard.
///
/// Every `expect_*` call waits for its text after the end of the previous
/// match (a cursor moves through the output), and panics with the whole
/// dialog if the text does not come in time.
pub struct Login {
    label: String,
    service_text: String,
    child: Arc<Mutex<Child>>,
    stdin: Option<ChildStdin>,
    shared: Shared,
    cursor: usize,
    deadline: Instant,
    timed_out: Arc<AtomicBool>,
    stop_watchdog: Option<mpsc::Sender<()>>,
    reader: Option<JoinHandle<()>>,
    watchdog: Option<JoinHandle<()>>,
}

impl Login {
    fn spawn(mut cmd: Command, label: String, timeout: Duration, service_text: String) -> Login {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start pamtester: {e}"));
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("stdout piped");
        let shared: Shared = Arc::new((Mutex::new(Buf::default()), Condvar::new()));

        let reader = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let mut bytes = [0u8; 4096];
                let mut pending = Vec::new();
                loop {
                    let n = stdout.read(&mut bytes).unwrap_or(0);
                    let (lock, cv) = &*shared;
                    let mut buf = lock.lock().unwrap_or_else(|e| e.into_inner());
                    if n == 0 {
                        buf.text.push_str(&String::from_utf8_lossy(&pending));
                        buf.eof = true;
                        cv.notify_all();
                        return;
                    }
                    pending.extend_from_slice(&bytes[..n]);
                    // Keep an incomplete UTF-8 sequence for the next read.
                    let valid = match std::str::from_utf8(&pending) {
                        Ok(_) => pending.len(),
                        Err(e) if e.error_len().is_none() => e.valid_up_to(),
                        Err(_) => pending.len(),
                    };
                    let chunk: Vec<u8> = pending.drain(..valid).collect();
                    buf.text.push_str(&String::from_utf8_lossy(&chunk));
                    cv.notify_all();
                }
            })
        };

        let child = Arc::new(Mutex::new(child));
        let timed_out = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let watchdog = {
            let child = Arc::clone(&child);
            let timed_out = Arc::clone(&timed_out);
            std::thread::spawn(move || {
                if let Err(RecvTimeoutError::Timeout) = stop_rx.recv_timeout(timeout) {
                    let mut c = child.lock().unwrap_or_else(|e| e.into_inner());
                    if matches!(c.try_wait(), Ok(None)) {
                        timed_out.store(true, Ordering::SeqCst);
                        let _ = c.kill();
                    }
                }
            })
        };

        Login {
            label,
            service_text,
            child,
            stdin,
            shared,
            cursor: 0,
            deadline: Instant::now() + timeout,
            timed_out,
            stop_watchdog: Some(stop_tx),
            reader: Some(reader),
            watchdog: Some(watchdog),
        }
    }

    /// Everything printed so far, with answers shown as `«answer»`.
    pub fn dialog(&self) -> String {
        self.shared
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .dialog()
    }

    /// Everything printed so far.
    pub fn transcript(&self) -> String {
        self.shared
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .text
            .clone()
    }

    fn fail(&self, what: &str) -> ! {
        self.kill();
        panic!(
            "login {}: {what}\n--- dialog so far ---\n{}\n--- service file ---\n{}",
            self.label,
            self.dialog(),
            self.service_text
        );
    }

    fn kill(&self) {
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(c.try_wait(), Ok(None)) {
            let _ = c.kill();
            let _ = c.wait();
            remove_stale_wrapper_dir(c.id());
        }
    }

    /// Waits for `text` after the cursor; returns the byte range it matched.
    fn wait_for(&mut self, text: &str) -> Option<(usize, usize)> {
        let until = (Instant::now() + EXPECT_TIMEOUT).min(self.deadline);
        let (lock, cv) = &*self.shared;
        let mut buf = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(i) = buf.text[self.cursor..].find(text) {
                let start = self.cursor + i;
                return Some((start, start + text.len()));
            }
            let now = Instant::now();
            if buf.eof || now >= until {
                return None;
            }
            buf = cv
                .wait_timeout(buf, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for `text` to appear (after the previous match).
    pub fn expect_text(&mut self, text: &str) -> &mut Self {
        match self.wait_for(text) {
            Some((_, end)) => {
                self.cursor = end;
                self
            }
            None => self.fail(&format!(
                "expected text {text:?} after position {}",
                self.cursor
            )),
        }
    }

    /// Waits for a prompt such as "Password" or "SMS code" (the ": " after it
    /// is optional in `prompt`), after which the program reads an answer.
    pub fn expect_prompt(&mut self, prompt: &str) -> &mut Self {
        let Some((_, end)) = self.wait_for(prompt) else {
            self.fail(&format!("expected prompt {prompt:?}"));
        };
        let buf = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
        let rest = &buf.text[end..];
        let skip = rest.len() - rest.trim_start_matches([':', ' ']).len();
        drop(buf);
        self.cursor = end + skip;
        self
    }

    /// Types `answer` and Enter. Call only after the prompt for it appeared:
    /// pamtester reads each answer with one read(), so an answer sent early
    /// would be swallowed by the previous prompt.
    pub fn answer(&mut self, answer: &str) -> &mut Self {
        {
            let mut buf = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
            let at = buf.text.len();
            buf.answers.push((at, answer.to_owned()));
        }
        let ok = match self.stdin.as_mut() {
            Some(w) => w
                .write_all(format!("{answer}\n").as_bytes())
                .and_then(|()| w.flush())
                .is_ok(),
            None => false,
        };
        if !ok {
            self.fail(&format!(
                "could not type {answer:?}: pamtester is no longer reading"
            ));
        }
        self
    }

    /// The password step: "Password: " then [`PASSWORD`].
    pub fn password(&mut self) -> &mut Self {
        self.expect_prompt("Password").answer(PASSWORD)
    }

    /// Waits for an SMS beyond the first `seen` in `outbox`, types its code,
    /// and returns the SMS.
    pub fn answer_code_from_outbox(&mut self, outbox: &Outbox, seen: usize) -> Sms {
        let sms = outbox.wait_beyond(seen, EXPECT_TIMEOUT);
        let code = sms.code();
        self.answer(&code);
        sms
    }

    /// Closes stdin, as a user pressing Ctrl-D at the next prompt.
    pub fn close_stdin(&mut self) -> &mut Self {
        self.stdin = None;
        self
    }

    /// Kills pamtester (a dropped connection) and returns what it had printed.
    pub fn abort(mut self) -> Outcome {
        self.kill();
        self.finish_inner()
    }

    /// Closes stdin, waits for pamtester to exit (the watchdog kills it at
    /// the deadline), and returns the outcome.
    pub fn finish(mut self) -> Outcome {
        self.stdin = None;
        self.finish_inner()
    }

    /// Waits for pamtester to exit on its own, stdin still open (the
    /// watchdog kills it at the deadline), and returns the outcome.
    pub fn wait(mut self) -> Outcome {
        self.finish_inner()
    }

    fn finish_inner(&mut self) -> Outcome {
        let status = loop {
            {
                let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
                match c.try_wait() {
                    Ok(Some(s)) => break s,
                    Ok(None) if Instant::now() > self.deadline + Duration::from_secs(2) => {
                        // The watchdog should have done this already.
                        let _ = c.kill();
                        break c.wait().expect("wait for pamtester");
                    }
                    Ok(None) => {}
                    Err(e) => panic!("wait for pamtester: {e}"),
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if status.signal().is_some() {
            remove_stale_wrapper_dir(self.child.lock().unwrap_or_else(|e| e.into_inner()).id());
        }
        self.stop();
        // A grandchild (say, a provider command) could hold the pipe open:
        // wait a little for EOF, and do not join a reader that is stuck.
        {
            let (lock, cv) = &*self.shared;
            let buf = lock.lock().unwrap_or_else(|e| e.into_inner());
            let _ = cv
                .wait_timeout_while(buf, Duration::from_secs(2), |b| !b.eof)
                .unwrap_or_else(|e| e.into_inner());
        }
        if self.shared.0.lock().unwrap_or_else(|e| e.into_inner()).eof {
            if let Some(r) = self.reader.take() {
                let _ = r.join();
            }
        }
        let buf = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
        Outcome::new(
            self.label.clone(),
            status,
            self.timed_out.load(Ordering::SeqCst),
            buf.text.clone(),
            buf.dialog(),
        )
    }

    fn stop(&mut self) {
        self.stop_watchdog.take();
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Login {
    fn drop(&mut self) {
        self.kill();
        self.stop();
    }
}

/// pam_wrapper copies the service dir to /tmp/pam.X (X one character) with
/// a `pid` file, and removes it at exit; a killed pamtester leaves it. Remove
/// the one that belonged to `pid`, and no other.
fn remove_stale_wrapper_dir(pid: u32) {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.len() != 5 || !name.starts_with("pam.") {
            continue;
        }
        let owner = std::fs::read_to_string(e.path().join("pid")).unwrap_or_default();
        if owner.trim() == pid.to_string() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// How a login ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub label: String,
    /// pamtester exited 0 and said "successfully authenticated".
    pub success: bool,
    pub exit_code: Option<i32>,
    /// The signal that ended pamtester (a crash, or the watchdog's kill).
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// What the user saw: stdout and stderr in order.
    pub transcript: String,
    /// The transcript with the answers typed shown as `«answer»`.
    pub dialog: String,
}

impl Outcome {
    fn new(
        label: String,
        status: ExitStatus,
        timed_out: bool,
        transcript: String,
        dialog: String,
    ) -> Self {
        let success =
            status.success() && transcript.contains("pamtester: successfully authenticated");
        Outcome {
            label,
            success,
            exit_code: status.code(),
            signal: status.signal(),
            timed_out,
            transcript,
            dialog,
        }
    }

    /// pamtester's last word: "successfully authenticated",
    /// "Authentication failure", "System error", ...
    pub fn pam_result(&self) -> Option<&str> {
        self.transcript
            .lines()
            .filter_map(|l| l.split_once("pamtester: ").map(|(_, r)| r))
            .rfind(|r| !r.starts_with("invoking ") && !r.starts_with("performing "))
    }

    /// Panics unless the login succeeded.
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.success,
            "login {} should have succeeded:\n{self}",
            self.label
        );
        self
    }

    /// Panics unless pamtester ended normally (no crash, no timeout) and
    /// reported a failure.
    pub fn assert_failure(&self) -> &Self {
        assert!(
            !self.success,
            "login {} should have failed:\n{self}",
            self.label
        );
        assert!(
            !self.timed_out,
            "login {} hung until the watchdog killed it:\n{self}",
            self.label
        );
        assert!(
            self.signal.is_none(),
            "pamtester was killed by signal {:?} (a crash in a module?):\n{self}",
            self.signal
        );
        assert!(
            self.exit_code.is_some_and(|c| c != 0) && self.pam_result().is_some(),
            "pamtester should have reported a PAM error:\n{self}"
        );
        self
    }

    /// Panics unless the user saw `text`.
    pub fn assert_saw(&self, text: &str) -> &Self {
        assert!(
            self.transcript.contains(text),
            "login {}: expected to see {text:?}:\n{self}",
            self.label
        );
        self
    }

    /// Panics if the user saw `text`.
    pub fn assert_not_saw(&self, text: &str) -> &Self {
        assert!(
            !self.transcript.contains(text),
            "login {}: did not expect {text:?}:\n{self}",
            self.label
        );
        self
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "exit code {:?}, signal {:?}, timed out {}, PAM result {:?}",
            self.exit_code,
            self.signal,
            self.timed_out,
            self.pam_result()
        )?;
        write!(f, "--- dialog ---\n{}", self.dialog)
    }
}

/// The audit file the scratch config points to: one JSON object a line.
pub fn audit_lines(scratch: &Scratch) -> Vec<serde_json::Value> {
    let path = scratch.path("audit.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}: {l}", path.display()))
        })
        .collect()
}
