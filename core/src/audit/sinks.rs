//! Where audit lines go: syslog (authpriv), standard error, a JSON-lines
//! file, and a server's shared, buffered set of them.

use std::io::Write as _;
use std::path::PathBuf;

use super::{tag, AuditSink, Event, Level};
use crate::clock::Millis;
use crate::files::AppendFile;

/// syslog, facility authpriv, through /dev/log. Connects per event and keeps
/// no state in the host process (no `openlog`, which would change sshd's own
/// logging identity).
pub struct SyslogSink {
    /// The program name each line is tagged with ("pam_smsotp").
    pub ident: String,
    /// Whether [`Level::Debug`] events are sent too.
    pub debug: bool,
    /// The local syslog socket, normally /dev/log.
    pub socket: PathBuf,
}

impl SyslogSink {
    /// A sink writing to /dev/log as `ident`.
    pub fn new(ident: &str, debug: bool) -> Self {
        SyslogSink {
            ident: ident.to_owned(),
            debug,
            socket: PathBuf::from("/dev/log"),
        }
    }
}

impl AuditSink for SyslogSink {
    fn takes(&self, level: Level) -> bool {
        level != Level::Debug || self.debug
    }

    fn record(&self, level: Level, _at: Millis, event: &Event) {
        if !self.takes(level) {
            return;
        }
        // Logging must never break a login: errors are dropped.
        if let Some(mut logger) = syslog_connect(&self.ident, &self.socket) {
            let _ = syslog_send(&mut logger, level, &event.to_line());
        }
    }
}

type SyslogLogger = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

/// A connection to the syslog socket, as `ident`, facility authpriv.
fn syslog_connect(ident: &str, socket: &std::path::Path) -> Option<SyslogLogger> {
    let formatter = syslog::Formatter3164 {
        facility: syslog::Facility::LOG_AUTHPRIV,
        hostname: None,
        process: ident.to_owned(),
        pid: std::process::id(),
    };
    syslog::unix_custom(formatter, socket).ok()
}

fn syslog_send(logger: &mut SyslogLogger, level: Level, line: &str) -> syslog::Result<()> {
    match level {
        Level::Info => logger.info(line),
        Level::Warning => logger.warning(line),
        Level::Error => logger.err(line),
        Level::Debug => logger.debug(line),
        Level::Alert => logger.alert(line),
    }
}

/// An event as a line on standard error.
pub(super) fn stderr_line(ident: &str, level: Level, event: &Event) -> String {
    let mut line = String::with_capacity(ident.len() + 200);
    line.push_str(ident);
    line.push_str(": ");
    line.push_str(tag(level));
    line.push_str(": ");
    event.write_line(&mut line);
    line.push('\n');
    line
}

/// An event as a line of the JSON-lines audit file.
fn file_line(at: Millis, level: Level, event: &Event) -> String {
    let mut line = event.to_json(at, level).to_string();
    line.push('\n');
    line
}

/// One line per event on standard error, for daemons whose stderr goes to
/// the journal.
pub struct StderrSink {
    /// The program name each line starts with ("smsotp-radiusd").
    pub ident: String,
    /// Whether [`Level::Debug`] events are written too.
    pub debug: bool,
}

impl AuditSink for StderrSink {
    fn takes(&self, level: Level) -> bool {
        level != Level::Debug || self.debug
    }

    fn record(&self, level: Level, _at: Millis, event: &Event) {
        if !self.takes(level) {
            return;
        }
        let _ = std::io::stderr().write_all(stderr_line(&self.ident, level, event).as_bytes());
    }
}

/// Appends one JSON object per event to a file (mode 0600).
pub struct FileSink {
    /// The file appended to (`audit.file`); created mode 0600 if absent,
    /// reopened if it is rotated away.
    pub path: PathBuf,
    /// Whether [`Level::Debug`] events are written too.
    pub debug: bool,
}

impl AuditSink for FileSink {
    fn takes(&self, level: Level) -> bool {
        level != Level::Debug || self.debug
    }

    fn record(&self, level: Level, at: Millis, event: &Event) {
        if !self.takes(level) {
            return;
        }
        let _ = AppendFile::new(self.path.clone()).append(file_line(at, level, event).as_bytes());
    }
}

/// The sinks of a long-running server, shared by its threads and kept
/// between events: a thread that sends the syslog lines (over one
/// connection, made again after an error), and
/// the stderr and audit-file lines gathered and written in one go by
/// [`ServerSinks::flush`], which the server calls before it sends the
/// replies those lines are about. Per event, the PAM module's sinks would
/// cost a connect or an open and a write each: at thousands of decisions a
/// second, more than the decisions themselves.
pub struct ServerSinks {
    ident: String,
    debug: bool,
    /// The way to the syslog socket, if syslog is on.
    syslog: Option<ServerSyslog>,
    stderr: bool,
    /// Whether there is an audit file (it lives in `pending`).
    to_file: bool,
    pending: std::sync::Mutex<Pending>,
}

impl std::fmt::Debug for ServerSinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSinks")
            .field("ident", &self.ident)
            .field("syslog", &self.syslog.as_ref().map(|s| &s.socket))
            .field("stderr", &self.stderr)
            .finish_non_exhaustive()
    }
}

struct Pending {
    stderr: Vec<u8>,
    file_lines: Vec<u8>,
    file: Option<AppendFile>,
}

/// Gathered bytes past which a record writes them at once.
const PENDING_MAX: usize = 64 * 1024;

impl ServerSinks {
    /// `syslog`: send to this socket (normally /dev/log); `stderr`: write
    /// lines to standard error; `file`: append JSON lines to it (0600).
    pub fn new(
        ident: &str,
        debug: bool,
        syslog: Option<PathBuf>,
        stderr: bool,
        file: Option<PathBuf>,
    ) -> Self {
        ServerSinks {
            ident: ident.to_owned(),
            debug,
            syslog: syslog.map(|socket| ServerSyslog::start(ident, socket)),
            stderr,
            to_file: file.is_some(),
            pending: std::sync::Mutex::new(Pending {
                stderr: Vec::new(),
                file_lines: Vec::new(),
                file: file.map(AppendFile::new),
            }),
        }
    }

    /// Writes the gathered stderr and audit-file lines.
    pub fn flush(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let p = &mut *p;
        if !p.stderr.is_empty() {
            let _ = std::io::stderr().write_all(&p.stderr);
            p.stderr.clear();
        }
        if !p.file_lines.is_empty() {
            if let Some(f) = p.file.as_mut() {
                let _ = f.append(&p.file_lines);
            }
            p.file_lines.clear();
        }
    }

    fn send_syslog(&self, level: Level, event: &Event) {
        let Some(syslog) = &self.syslog else {
            return;
        };
        let line = event.to_line();
        let queue = syslog.queue.read().unwrap_or_else(|e| e.into_inner());
        match queue.as_ref() {
            // Waits only while the queue is full: lines are never dropped.
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError((level, line))) = tx.send((level, line)) {
                    syslog.direct(level, &line);
                }
            }
            None => syslog.direct(level, &line),
        }
    }

    /// Sends the syslog lines still queued and stops the thread that sends
    /// them; later lines are sent by the recording thread itself. Waits at
    /// most `limit` (a syslog daemon that reads nothing must not hold up a
    /// shutdown forever).
    pub fn close(&self, limit: std::time::Duration) {
        let Some(syslog) = &self.syslog else {
            return;
        };
        let tx = syslog
            .queue
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(tx);
        let handle = syslog
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let until = std::time::Instant::now() + limit;
            while !h.is_finished() && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for ServerSinks {
    fn drop(&mut self) {
        self.close(std::time::Duration::from_secs(2));
    }
}

/// Lines waiting for the syslog thread; past this, a recording thread
/// waits for room (a few seconds of the busiest server's lines).
const SYSLOG_QUEUE: usize = 16_384;

/// A server's way to syslog: a thread of its own sends the lines, in the
/// order they were recorded, so that no worker waits for the syslog daemon
/// (a send blocks while the daemon's socket queue is full: 10 datagrams
/// where systemd has not raised `net.unix.max_dgram_qlen`). Without the
/// thread (it could not be started, or [`ServerSinks::close`] stopped it)
/// the recording thread sends through one shared connection.
struct ServerSyslog {
    socket: PathBuf,
    ident: String,
    queue: std::sync::RwLock<Option<std::sync::mpsc::SyncSender<(Level, String)>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    shared: std::sync::Mutex<Option<SyslogLogger>>,
}

impl ServerSyslog {
    fn start(ident: &str, socket: PathBuf) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Level, String)>(SYSLOG_QUEUE);
        let thread = {
            let ident = ident.to_owned();
            let socket = socket.clone();
            std::thread::Builder::new()
                .name("syslog".into())
                .spawn(move || {
                    let mut conn = None;
                    while let Ok((level, line)) = rx.recv() {
                        send_line(&mut conn, &ident, &socket, level, &line);
                    }
                })
                .ok()
        };
        ServerSyslog {
            queue: std::sync::RwLock::new(thread.as_ref().map(|_| tx)),
            thread: std::sync::Mutex::new(thread),
            shared: std::sync::Mutex::new(None),
            socket,
            ident: ident.to_owned(),
        }
    }

    /// Sends on the recording thread, through the shared connection.
    fn direct(&self, level: Level, line: &str) {
        let mut conn = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        send_line(&mut conn, &self.ident, &self.socket, level, line);
    }
}

/// Sends `line` through `conn`, connecting first if needed; a syslog
/// daemon restarted meanwhile gets one new connection. Errors drop the
/// line: logging must never break a login.
fn send_line(
    conn: &mut Option<SyslogLogger>,
    ident: &str,
    socket: &std::path::Path,
    level: Level,
    line: &str,
) {
    for _ in 0..2 {
        if conn.is_none() {
            *conn = syslog_connect(ident, socket);
        }
        let Some(logger) = conn.as_mut() else {
            return;
        };
        if syslog_send(logger, level, line).is_ok() {
            return;
        }
        *conn = None;
    }
}

impl AuditSink for ServerSinks {
    fn takes(&self, level: Level) -> bool {
        level != Level::Debug || self.debug
    }

    fn record(&self, level: Level, at: Millis, event: &Event) {
        if !self.takes(level) {
            return;
        }
        self.send_syslog(level, event);
        // Formatted before taking the lock every worker shares.
        let stderr = self.stderr.then(|| stderr_line(&self.ident, level, event));
        let file = self.to_file.then(|| file_line(at, level, event));
        let full = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(line) = &stderr {
                p.stderr.extend_from_slice(line.as_bytes());
            }
            if let Some(line) = &file {
                p.file_lines.extend_from_slice(line.as_bytes());
            }
            p.stderr.len() + p.file_lines.len() > PENDING_MAX
        };
        if full {
            self.flush();
        }
    }
}

impl AuditSink for std::sync::Arc<ServerSinks> {
    fn record(&self, level: Level, at: Millis, event: &Event) {
        (**self).record(level, at, event);
    }
    fn takes(&self, level: Level) -> bool {
        (**self).takes(level)
    }
}
