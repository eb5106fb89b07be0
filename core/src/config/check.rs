//! What every part of the config needs to report a problem: where it is
//! ([`Location`]), the error and warning types, and `Checker`, which turns
//! one raw value into a checked one and names the file, line, column and key
//! when it cannot. It imports nothing of ours but the key table, so any
//! owner of a config table (the SMS providers, the store, …) can use it
//! without importing the rest of the config.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::keys::see_also;

/// Default state directory: store, key and outbox.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/smsotp";

/// A position in a file, 1-based, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The line, counting from 1.
    pub line: usize,
    /// The column in characters (not bytes), counting from 1.
    pub column: usize,
}

impl Location {
    pub(crate) fn of(text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Location { line, column }
    }
}

/// Why a config (or a file it points to) could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read: {source}; create it, or point to another file with config=PATH")]
    Read {
        /// The file that was to be read (the config, or a file it names).
        path: PathBuf,
        /// Why the system refused it (missing, permission, …).
        #[source]
        source: std::io::Error,
    },
    /// Ownership or mode would let someone other than root change or read it.
    #[error("{path}: {problem}; fix with: {fix}")]
    Unsafe {
        /// The file whose owner or mode is wrong.
        path: PathBuf,
        /// What is wrong, for people: "is writable by group".
        problem: String,
        /// A command that fixes it, e.g. `chmod 600 /etc/smsotp/smsotp.toml`.
        fix: String,
    },
    /// A value is malformed, out of range, or an unknown key.
    #[error("{path}:{}:{}: {key}: {message}", location.line, location.column)]
    Invalid {
        /// The file the value was read from.
        path: PathBuf,
        /// Where the value (or the unknown key) stands in it.
        location: Location,
        /// The dotted key path with indices, `provider[0].url`.
        key: String,
        /// What is wrong and what to write instead, ending with the man page
        /// section that documents the key.
        message: String,
    },
}

/// Something the config allows but that is probably a mistake. The loader
/// collects these in `Config::warnings`; the front ends show them where
/// they show the RADIUS short-secret warning: `smsotp-radiusd --check`
/// prints them, a running smsotp-radiusd logs them at start and reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The config file.
    pub path: PathBuf,
    /// Where the questionable value stands.
    pub location: Location,
    /// The dotted key path with indices, `provider[1].tls`.
    pub key: String,
    /// Why it is probably a mistake and what to do, ending with the man
    /// page section of the key.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.path.display(),
            self.location.line,
            self.location.column,
            self.key,
            self.message
        )
    }
}

/// Turns raw values into validated ones, remembering where each came from.
pub(crate) struct Checker<'a> {
    pub(crate) path: &'a Path,
    pub(crate) text: &'a str,
}

impl Checker<'_> {
    pub(crate) fn err(
        &self,
        span: Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            location: Location::of(self.text, span.start),
            key: key.to_owned(),
            message: format!("{}; {}", message.into(), see_also(key)),
        }
    }

    pub(crate) fn warning(&self, span: Range<usize>, key: &str, message: &str) -> ConfigWarning {
        ConfigWarning {
            path: self.path.to_owned(),
            location: Location::of(self.text, span.start),
            key: key.to_owned(),
            message: format!("{message}; {}", see_also(key)),
        }
    }

    pub(crate) fn int_in(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
        default: i64,
    ) -> Result<i64, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) if range.contains(s.get_ref()) => Ok(*s.get_ref()),
            Some(s) => Err(self.err(
                s.span(),
                key,
                format!(
                    "{} is out of range; set a whole number from {} to {}",
                    s.get_ref(),
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    pub(crate) fn duration_in(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        min: Duration,
        max: Duration,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(s) = v else { return Ok(default) };
        let d = parse_duration(s.get_ref()).map_err(|m| self.err(s.span(), key, m))?;
        if d < min || d > max {
            return Err(self.err(
                s.span(),
                key,
                format!(
                    "\"{}\" is out of range; use a duration from {} to {}",
                    s.get_ref(),
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            ));
        }
        Ok(d)
    }

    pub(crate) fn choice<T: Copy>(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        options: &[(&str, T)],
        default: T,
    ) -> Result<T, ConfigError> {
        let Some(s) = v else { return Ok(default) };
        options
            .iter()
            .find(|(name, _)| *name == s.get_ref())
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                let names: Vec<String> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                self.err(
                    s.span(),
                    key,
                    format!(
                        "\"{}\" is not allowed; use one of {}",
                        s.get_ref(),
                        names.join(", ")
                    ),
                )
            })
    }

    pub(crate) fn absolute(
        &self,
        raw: &str,
        span: Range<usize>,
        key: &str,
    ) -> Result<PathBuf, ConfigError> {
        let p = PathBuf::from(raw);
        if !p.is_absolute() {
            return Err(self.err(
                span,
                key,
                format!("\"{raw}\" is not an absolute path; write the full path, starting with /"),
            ));
        }
        Ok(p)
    }
}

/// Whether `name` could be a user or group name: not empty, no
/// whitespace, control character or ':' (the passwd and group field
/// separator). The rule `exempt_users` and the LDAP directory's user names
/// share.
pub fn plausible_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|ch| ch.is_whitespace() || ch == ':' || ch.is_control())
}

/// Parses "30s", "5m", "1h30m", "2 minutes".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("\"{text}\" is not a duration ({e}); write it like \"30s\", \"5m\" or \"1h\"")
    })
}
