//! `kind = "outbox"`: one JSON line per SMS in a root-only file.

use std::path::{Path, PathBuf};

use crate::clock::{rfc3339, Clock};
use crate::config::check::{ConfigError, DEFAULT_STATE_DIR};
use crate::sms::raw::Fields;
use crate::sms::ProviderSpec;
use crate::sms::{SendError, Sms, SmsProvider};
use serde::de::IgnoredAny;
use serde::Deserialize;
use toml::Spanned;

/// Appends `{"to", "message", "at"}` as one JSON line to a file (mode 0600).
/// The embedded default: no SMS account needed, codes readable by root.
pub struct OutboxProvider {
    /// The provider's `name`, for logs and the chain's outcome.
    pub name: String,
    /// The JSON-lines file, created 0600 if missing.
    pub path: PathBuf,
    /// Where the `at` time of each line comes from.
    pub clock: Box<dyn Clock>,
    /// The file, kept open between sends (a server sends many).
    file: std::sync::Mutex<crate::files::AppendFile>,
}

impl OutboxProvider {
    /// A provider appending to `path`; the file is opened at the first send.
    pub fn new(name: String, path: PathBuf, clock: Box<dyn Clock>) -> Self {
        OutboxProvider {
            name,
            file: std::sync::Mutex::new(crate::files::AppendFile::new(path.clone())),
            path,
            clock,
        }
    }

    fn append(&self, bytes: &[u8]) -> Result<(), SendError> {
        let where_ = self.path.display();
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.append(bytes).map_err(|e| match e {
            crate::files::AppendError::Open(e) if e.kind() == std::io::ErrorKind::NotFound => {
                SendError::Misconfigured(format!(
                    "cannot open outbox {where_}: {e}; create its directory"
                ))
            }
            crate::files::AppendError::Open(e) => {
                SendError::Misconfigured(format!("outbox {where_}: {e}"))
            }
            crate::files::AppendError::Write(e) => {
                SendError::Transient(format!("cannot write outbox {where_}: {e}"))
            }
        })
    }
}

impl SmsProvider for OutboxProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&self, sms: &Sms<'_>) -> Result<(), SendError> {
        // Fields in this order, as the outbox has always had them.
        #[derive(serde::Serialize)]
        struct Line<'a> {
            at: String,
            message: &'a str,
            to: &'a str,
        }
        let line = Line {
            at: rfc3339(self.clock.now_ms()),
            message: sms.text,
            to: sms.to.e164(),
        };
        // Written straight into one buffer (the message holds the code),
        // which is wiped after; sized for the worst escaping (`\u00XX`,
        // six bytes a byte) so it never grows and leaves a copy behind.
        let mut bytes = Vec::with_capacity(128 + 6 * sms.text.len());
        let r = match serde_json::to_writer(&mut bytes, &line) {
            Ok(()) => {
                bytes.push(b'\n');
                self.append(&bytes)
            }
            Err(e) => Err(SendError::Transient(format!(
                "cannot encode an outbox line: {e}"
            ))),
        };
        zeroize::Zeroize::zeroize(&mut bytes);
        r
    }
}

/// The keys of `kind = "outbox"`, besides `kind`.
pub(crate) const KEYS: [&str; 2] = ["name", "path"];

/// A `kind = "outbox"` table as read (`kind` and `name` are read by the
/// shared layer in `sms/raw.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutbox {
    #[serde(rename = "kind")]
    _kind: IgnoredAny,
    #[serde(rename = "name")]
    _name: Option<IgnoredAny>,
    path: Option<Spanned<String>>,
}

/// Validates one `kind = "outbox"` table.
pub(crate) fn validate(
    table: &Fields<'_, RawOutbox>,
    name: String,
) -> Result<ProviderSpec, ConfigError> {
    Ok(ProviderSpec::Outbox {
        name,
        path: match &table.raw().path {
            None => Path::new(DEFAULT_STATE_DIR).join("outbox.jsonl"),
            Some(x) => table.file(x, "path")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use crate::phone::Phone;
    use std::os::unix::fs::PermissionsExt;

    fn phone() -> Phone {
        Phone::parse("+12025550143", None).unwrap()
    }

    #[test]
    fn outbox_appends_json_lines_with_mode_0600() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("outbox.jsonl");
        let o = OutboxProvider::new("outbox".into(), path.clone(), Box::new(FixedClock::at(0)));
        let p = phone();
        o.send(&Sms {
            to: &p,
            text: "111111 \"quoted\"\nline",
        })
        .unwrap();
        o.send(&Sms {
            to: &p,
            text: "222222",
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["to"], "+12025550143");
        assert_eq!(lines[0]["message"], "111111 \"quoted\"\nline");
        assert_eq!(lines[0]["at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
