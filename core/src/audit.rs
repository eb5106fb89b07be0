//! One structured line per decision, to syslog (authpriv) and optionally a
//! JSON-lines file. Never a code, a secret or a full phone number: events
//! carry only masked numbers and fixed reason words.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::clock::{rfc3339, Millis};

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
    pub phone: Option<String>,
    pub provider: Option<String>,
    /// Free text for errors; must already be free of secrets.
    pub detail: Option<String>,
}

impl Event {
    /// `key=value` pairs, values quoted when they need it.
    pub fn to_line(&self) -> String {
        let mut s = String::new();
        let mut kv = |k: &str, v: &str| {
            if !s.is_empty() {
                s.push(' ');
            }
            if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c == '"' || c == '=') {
                let _ = write!(s, "{k}={v:?}");
            } else {
                let _ = write!(s, "{k}={v}");
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
        if let Some(v) = &self.phone {
            kv("phone", v);
        }
        if let Some(v) = &self.provider {
            kv("provider", v);
        }
        if let Some(v) = &self.detail {
            kv("detail", v);
        }
        s
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
            "phone": self.phone,
            "provider": self.provider,
            "detail": self.detail,
        })
    }
}

/// Where events go.
pub trait AuditSink {
    fn record(&self, level: Level, at: Millis, event: &Event);
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
    fn record(&self, level: Level, _at: Millis, event: &Event) {
        if level == Level::Debug && !self.debug {
            return;
        }
        let formatter = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_AUTHPRIV,
            hostname: None,
            process: self.ident.clone(),
            pid: std::process::id(),
        };
        // Logging must never break a login: errors are dropped.
        if let Ok(mut logger) = syslog::unix_custom(formatter, &self.socket) {
            let line = event.to_line();
            let _ = match level {
                Level::Info => logger.info(line),
                Level::Warning => logger.warning(line),
                Level::Error => logger.err(line),
                Level::Debug => logger.debug(line),
            };
        }
    }
}

/// One line per event on standard error, for daemons whose stderr goes to
/// the journal.
pub struct StderrSink {
    pub ident: String,
    pub debug: bool,
}

impl AuditSink for StderrSink {
    fn record(&self, level: Level, _at: Millis, event: &Event) {
        if level == Level::Debug && !self.debug {
            return;
        }
        let tag = match level {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Debug => "debug",
        };
        let line = format!("{}: {tag}: {}\n", self.ident, event.to_line());
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

/// Appends one JSON object per event to a file (mode 0600).
pub struct FileSink {
    pub path: PathBuf,
    pub debug: bool,
}

impl AuditSink for FileSink {
    fn record(&self, level: Level, at: Millis, event: &Event) {
        if level == Level::Debug && !self.debug {
            return;
        }
        let mut line = event.to_json(at, level).to_string();
        line.push('\n');
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
        {
            let _ = f.write_all(line.as_bytes());
        }
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
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;
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
    fn line_quotes_values_that_need_it() {
        let e = Event {
            event: "reject",
            user: "alice".into(),
            service: "sshd".into(),
            rhost: Some("192.0.2.1".into()),
            outcome: Some("failure"),
            reason: Some("wrong_code"),
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
    }
}
