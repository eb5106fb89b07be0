//! One structured line per decision, to syslog (authpriv) and optionally a
//! JSON-lines file. Never a code, a secret or a full phone number: events
//! carry only masked numbers and fixed reason words.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use crate::clock::{rfc3339, Millis};
use crate::files::AppendFile;

/// Severity of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Error,
    Debug,
}

/// One audit record. Build it with the fields that apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// "sent", "accept", "reject", "skip", "error", …
    pub event: &'static str,
    pub user: String,
    pub service: String,
    pub rhost: Option<String>,
    /// "success", "failure", "not_applicable".
    pub outcome: Option<&'static str>,
    /// A fixed word such as "wrong_code" or "locked_out".
    pub reason: Option<&'static str>,
    /// The config key of the limit that refused a send ("sms_per_user",
    /// "sms_global").
    pub limit: Option<&'static str>,
    pub phone: Option<String>,
    pub provider: Option<String>,
    /// Free text for errors; must already be free of secrets.
    pub detail: Option<String>,
}

impl Event {
    /// `key=value` pairs, values quoted when they need it.
    pub fn to_line(&self) -> String {
        let mut s = String::with_capacity(160);
        self.write_line(&mut s);
        s
    }

    /// [`Event::to_line`], appended to `s`.
    pub fn write_line(&self, s: &mut String) {
        let start = s.len();
        let mut kv = |k: &str, v: &str| {
            if s.len() > start {
                s.push(' ');
            }
            s.push_str(k);
            s.push('=');
            if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c == '"' || c == '=') {
                let _ = write!(s, "{v:?}");
            } else {
                s.push_str(v);
            }
        };
        kv("event", self.event);
        // Server-level events (start, reload) concern no login.
        if !self.user.is_empty() || !self.service.is_empty() {
            kv("user", &self.user);
            kv("service", &self.service);
        }
        if let Some(v) = &self.rhost {
            kv("rhost", v);
        }
        if let Some(v) = self.outcome {
            kv("outcome", v);
        }
        if let Some(v) = self.reason {
            kv("reason", v);
        }
        if let Some(v) = self.limit {
            kv("limit", v);
        }
        if let Some(v) = &self.phone {
            kv("phone", v);
        }
        if let Some(v) = &self.provider {
            kv("provider", v);
        }
        if let Some(v) = &self.detail {
            kv("detail", v);
        }
    }

    pub fn to_json(&self, at: Millis, level: Level) -> serde_json::Value {
        serde_json::json!({
            "at": rfc3339(at),
            "level": format!("{level:?}").to_lowercase(),
            "event": self.event,
            "user": self.user,
            "service": self.service,
            "rhost": self.rhost,
            "outcome": self.outcome,
            "reason": self.reason,
            "limit": self.limit,
            "phone": self.phone,
            "provider": self.provider,
            "detail": self.detail,
        })
    }
}

/// Where events go.
pub trait AuditSink {
    fn record(&self, level: Level, at: Millis, event: &Event);
    /// Whether events of `level` are recorded at all (so callers can skip
    /// making ones nobody keeps).
    fn takes(&self, level: Level) -> bool {
        let _ = level;
        true
    }
}

/// syslog, facility authpriv, through /dev/log. Connects per event and keeps
/// no state in the host process (no `openlog`, which would change sshd's own
/// logging identity).
pub struct SyslogSink {
    pub ident: String,
    pub debug: bool,
    /// The local syslog socket, normally /dev/log.
    pub socket: PathBuf,
}

impl SyslogSink {
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
    }
}

/// An event as a line on standard error.
fn stderr_line(ident: &str, level: Level, event: &Event) -> String {
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
    pub ident: String,
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
    pub path: PathBuf,
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
/// between events: one syslog connection (made again after an error), and
/// the stderr and audit-file lines gathered and written in one go by
/// [`ServerSinks::flush`], which the server calls before it sends the
/// replies those lines are about. Per event, the PAM module's sinks would
/// cost a connect or an open and a write each: at thousands of decisions a
/// second, more than the decisions themselves.
pub struct ServerSinks {
    ident: String,
    debug: bool,
    /// The syslog socket and the connection to it, if syslog is on.
    syslog: Option<(PathBuf, std::sync::Mutex<Option<SyslogLogger>>)>,
    stderr: bool,
    /// Whether there is an audit file (it lives in `pending`).
    to_file: bool,
    pending: std::sync::Mutex<Pending>,
}

impl std::fmt::Debug for ServerSinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSinks")
            .field("ident", &self.ident)
            .field("syslog", &self.syslog.as_ref().map(|(p, _)| p))
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
            syslog: syslog.map(|socket| (socket, std::sync::Mutex::new(None))),
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
        let Some((socket, conn)) = &self.syslog else {
            return;
        };
        let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
        let line = event.to_line();
        // A syslog daemon restarted meanwhile: connect again, once.
        for _ in 0..2 {
            if conn.is_none() {
                *conn = syslog_connect(&self.ident, socket);
            }
            let Some(logger) = conn.as_mut() else {
                return;
            };
            if syslog_send(logger, level, &line).is_ok() {
                return;
            }
            *conn = None;
        }
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

fn tag(level: Level) -> &'static str {
    match level {
        Level::Info => "info",
        Level::Warning => "warning",
        Level::Error => "error",
        Level::Debug => "debug",
    }
}

/// Sends each event to every sink.
#[derive(Default)]
pub struct Audit {
    pub sinks: Vec<Box<dyn AuditSink>>,
}

impl Audit {
    pub fn record(&self, level: Level, at: Millis, event: &Event) {
        for s in &self.sinks {
            s.record(level, at, event);
        }
    }

    /// Whether any sink records events of `level`.
    pub fn takes(&self, level: Level) -> bool {
        self.sinks.iter().any(|s| s.takes(level))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::os::unix::fs::PermissionsExt;
    use std::rc::Rc;

    /// Keeps events for assertions.
    #[derive(Clone, Default)]
    pub struct MemorySink(pub Rc<RefCell<Vec<(Level, Event)>>>);

    impl AuditSink for MemorySink {
        fn record(&self, level: Level, _at: Millis, event: &Event) {
            self.0.borrow_mut().push((level, event.clone()));
        }
    }

    #[test]
    fn syslog_lines_go_to_authpriv() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("log");
        let rx = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let sink = SyslogSink {
            ident: "pam_smsotp".into(),
            debug: false,
            socket: sock,
        };
        let e = Event {
            event: "accept",
            user: "alice".into(),
            service: "sshd".into(),
            ..Event::default()
        };
        assert!(sink.takes(Level::Info) && !sink.takes(Level::Debug));
        sink.record(Level::Info, 0, &e);
        sink.record(Level::Debug, 0, &e); // dropped: debug is off
        sink.record(Level::Warning, 0, &e);
        let mut buf = [0u8; 512];
        let n = rx.recv(&mut buf).unwrap();
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        // authpriv (10) * 8 + info (6) = 86
        assert!(line.starts_with("<86>"), "{line}");
        assert!(line.contains("pam_smsotp["), "{line}");
        assert!(
            line.ends_with("event=accept user=alice service=sshd"),
            "{line}"
        );
        let n = rx.recv(&mut buf).unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("<84>"),
            "warning next, debug skipped"
        );
    }

    #[test]
    fn audit_takes_debug_only_if_a_sink_does() {
        let quiet = || StderrSink {
            ident: "t".into(),
            debug: false,
        };
        let mut audit = Audit {
            sinks: vec![Box::new(quiet()), Box::new(quiet())],
        };
        assert!(audit.takes(Level::Info));
        assert!(!audit.takes(Level::Debug));
        audit.sinks.push(Box::new(FileSink {
            path: PathBuf::from("/nonexistent/audit.jsonl"),
            debug: true,
        }));
        assert!(audit.takes(Level::Debug));
        assert!(
            !Audit::default().takes(Level::Error),
            "no sink, nothing kept"
        );
    }

    #[test]
    fn stderr_lines_quote_what_needs_it() {
        let e = Event {
            event: "reject",
            user: "alice".into(),
            service: "radius:vpn".into(),
            outcome: Some("failure"),
            detail: Some("said \"no\" = no".into()),
            ..Event::default()
        };
        assert_eq!(
            stderr_line("smsotp-radiusd", Level::Info, &e),
            "smsotp-radiusd: info: event=reject user=alice service=radius:vpn outcome=failure \
             detail=\"said \\\"no\\\" = no\"\n"
        );
        let server = Event {
            event: "start",
            rhost: Some(String::new()),
            ..Event::default()
        };
        assert_eq!(server.to_line(), "event=start rhost=\"\"");
    }

    #[test]
    fn server_sinks_keep_one_syslog_connection_and_write_the_file_at_flush() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("log");
        let bind = || {
            let rx = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
            rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            rx
        };
        let rx = bind();
        let file = d.path().join("audit.jsonl");
        let sinks = ServerSinks::new(
            "smsotp-radiusd",
            false,
            Some(sock.clone()),
            false,
            Some(file.clone()),
        );
        let e = |user: &str| Event {
            event: "accept",
            user: user.into(),
            service: "vpn".into(),
            ..Event::default()
        };
        let recv = |rx: &std::os::unix::net::UnixDatagram| {
            let mut buf = [0u8; 512];
            let n = rx.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        sinks.record(Level::Info, 0, &e("alice"));
        sinks.record(Level::Debug, 0, &e("nobody")); // debug is off
        sinks.record(Level::Warning, 0, &e("bob"));
        assert!(recv(&rx).ends_with("user=alice service=vpn"));
        let bob = recv(&rx);
        assert!(
            bob.starts_with("<84>") && bob.contains("smsotp-radiusd["),
            "{bob}"
        );
        // The file gets its lines at flush, in one go.
        assert!(std::fs::read_to_string(&file)
            .unwrap_or_default()
            .is_empty());
        sinks.flush();
        let text = std::fs::read_to_string(&file).unwrap();
        let users: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["user"].to_string())
            .collect();
        assert_eq!(users, ["\"alice\"", "\"bob\""]);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // syslog restarted: the next line connects again and arrives.
        drop(rx);
        std::fs::remove_file(&sock).unwrap();
        let rx = bind();
        sinks.record(Level::Info, 0, &e("carol"));
        assert!(recv(&rx).ends_with("user=carol service=vpn"));

        // The file rotated away: the next flush writes to a new one.
        std::fs::rename(&file, d.path().join("audit.jsonl.1")).unwrap();
        sinks.flush();
        assert!(std::fs::read_to_string(&file).unwrap().contains("carol"));
    }

    #[test]
    fn line_quotes_values_that_need_it() {
        let e = Event {
            event: "reject",
            user: "alice".into(),
            service: "sshd".into(),
            rhost: Some("192.0.2.1".into()),
            outcome: Some("failure"),
            reason: Some("wrong_code"),
            limit: None,
            phone: Some("******0143".into()),
            provider: None,
            detail: Some("tries left: 2".into()),
        };
        assert_eq!(
            e.to_line(),
            "event=reject user=alice service=sshd rhost=192.0.2.1 outcome=failure reason=wrong_code phone=******0143 detail=\"tries left: 2\""
        );
        let j = e.to_json(0, Level::Info);
        assert_eq!(j["reason"], "wrong_code");
        assert_eq!(j["level"], "info");
        assert_eq!(j["limit"], serde_json::Value::Null);
        let limited = Event {
            reason: Some("rate_limited"),
            limit: Some("sms_per_user"),
            phone: None,
            detail: Some("sms_per_user = 5/1h reached".into()),
            ..e
        };
        assert_eq!(
            limited.to_line(),
            "event=reject user=alice service=sshd rhost=192.0.2.1 outcome=failure reason=rate_limited limit=sms_per_user detail=\"sms_per_user = 5/1h reached\""
        );
        assert_eq!(limited.to_json(0, Level::Info)["limit"], "sms_per_user");
    }
}
