//! One structured line per decision, to syslog (authpriv) and optionally a
//! JSON-lines file. Never a code, a secret or a full phone number: events
//! carry only masked numbers and fixed reason words.

//!
//! This module is the record and its formats ([`Event`], [`Level`]) and the
//! fan-out ([`Audit`]); where lines go, the sinks, is in `sinks.rs`.

mod sinks;

use std::fmt::Write as _;

use crate::clock::{rfc3339, Millis};
use crate::phone::MaskedPhone;

pub use sinks::{FileSink, ServerSinks, StderrSink, SyslogSink};

/// Severity of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// An ordinary decision: an accept, a reject, a code sent.
    Info,
    /// Worth an admin's look: a fail-open, a rate limit, a failover.
    Warning,
    /// The login could not be decided properly (a store, directory or
    /// provider failure) or was let in with no SMS sent.
    Error,
    /// Detail for troubleshooting (where a number was found); recorded
    /// only when a sink's `debug` is on.
    Debug,
    /// Needs an admin now: the spend breaker tripped (syslog `LOG_ALERT`).
    Alert,
}

/// One audit record. Build it with the fields that apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// "sent", "accept", "reject", "skip", "error", …
    pub event: &'static str,
    /// The login name the user gave (PAM_USER, or RADIUS User-Name).
    pub user: String,
    /// The PAM service ("sshd", "sudo"), or for RADIUS "radius:" and the
    /// client's configured name ("radius:vpn").
    pub service: String,
    /// Where the login comes from: PAM_RHOST, or for RADIUS the
    /// Calling-Station-Id (else the NAS's address). `None` when PAM was not
    /// told.
    pub rhost: Option<String>,
    /// "success", "failure", "not_applicable".
    pub outcome: Option<&'static str>,
    /// A fixed word such as "wrong_code" or "locked_out".
    pub reason: Option<&'static str>,
    /// The config key of the limit that refused a send ("sms_per_user",
    /// "sms_global").
    pub limit: Option<&'static str>,
    /// The number the event is about, masked: the type cannot hold a
    /// whole number. `None` when the event concerns no phone.
    pub phone: Option<MaskedPhone>,
    /// The provider's name (its `[[provider]]` `name`) that sent or failed
    /// to send an SMS; `None` for events about no send.
    pub provider: Option<String>,
    /// How many SMS the sent text took ([`crate::sms::ProviderSpec::segments`]):
    /// each is billed; `None` for events about no send.
    pub segments: Option<usize>,
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
            kv("phone", v.as_str());
        }
        if let Some(v) = &self.provider {
            kv("provider", v);
        }
        if let Some(v) = self.segments {
            kv("segments", &v.to_string());
        }
        if let Some(v) = &self.detail {
            kv("detail", v);
        }
    }

    /// The JSON object a [`FileSink`] writes: every field, absent ones as
    /// `null`, with `at` (RFC 3339, UTC) and `level` added.
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
            "phone": self.phone.as_ref().map(MaskedPhone::as_str),
            "provider": self.provider,
            "segments": self.segments,
            "detail": self.detail,
        })
    }
}

/// Where events go.
pub trait AuditSink {
    /// Records `event`, which happened at `at`. Best effort: a sink that
    /// cannot write drops the event rather than fail the login.
    fn record(&self, level: Level, at: Millis, event: &Event);
    /// Whether events of `level` are recorded at all (so callers can skip
    /// making ones nobody keeps).
    fn takes(&self, level: Level) -> bool {
        let _ = level;
        true
    }
}

fn tag(level: Level) -> &'static str {
    match level {
        Level::Info => "info",
        Level::Warning => "warning",
        Level::Error => "error",
        Level::Debug => "debug",
        Level::Alert => "alert",
    }
}

/// Sends each event to every sink.
#[derive(Default)]
pub struct Audit {
    /// Every sink an event goes to, in order; empty records nothing.
    pub sinks: Vec<Box<dyn AuditSink>>,
}

impl Audit {
    /// Gives `event` to every sink.
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
pub(crate) mod tests;
