//! Where state and phone numbers are kept and where the audit goes:
//! `[[directory]]` ([`DirectorySpec`]), `[store]` ([`StoreSpec`]) and
//! `[audit]` ([`AuditSettings`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::check::{Checker, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum RawDirectory {
    File { path: Option<String> },
    Gecos { field: Option<String> },
    Ldap(Box<crate::directory::ldap::RawLdap>),
}

/// Flat rather than tagged: `kind` may be left out (sqlite).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    kind: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    busy_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    syslog: Option<bool>,
    file: Option<Spanned<String>>,
}

/// One source of phone numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectorySpec {
    /// A TOML file of `user = "+number"` lines.
    File {
        /// Absolute; default `/etc/smsotp/phones.toml`.
        path: PathBuf,
    },
    /// A comma-separated field of the passwd GECOS entry (0-based index).
    Gecos {
        /// 0 full name, 1 room, 2 work phone, 3 home phone, 4 other (the
        /// default).
        field: usize,
    },
    /// An LDAP server or Active Directory (`directory/ldap/config.rs`).
    Ldap(Box<crate::directory::ldap::LdapSpec>),
}

/// `[store]`, validated: the one backend the loader accepts today.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `kind = "sqlite"` (the default): one database file on this host.
    Sqlite {
        /// Absolute; default `/var/lib/smsotp/state.db`. The code key
        /// defaults to `otp.key` in the same directory.
        path: PathBuf,
        /// How long a write waits for another process's lock, 100ms to 60s
        /// (default 5s).
        busy_timeout: Duration,
    },
}

/// `[audit]`, validated.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Send audit lines to syslog (default true).
    pub syslog: bool,
    /// Also append one JSON line per event here (root-only file).
    pub file: Option<PathBuf>,
}

/// Validates the `[[directory]]` tables, in order; none means the default
/// phone file.
pub(super) fn directories(
    c: &Checker<'_>,
    raw: &[Spanned<RawDirectory>],
) -> Result<Vec<DirectorySpec>, ConfigError> {
    let mut directories = Vec::new();
    for (i, d) in raw.iter().enumerate() {
        let key = format!("directory[{i}]");
        directories.push(match d.get_ref() {
            RawDirectory::File { path } => DirectorySpec::File {
                path: c.absolute(
                    path.as_deref().unwrap_or("/etc/smsotp/phones.toml"),
                    d.span(),
                    &format!("{key}.path"),
                )?,
            },
            RawDirectory::Gecos { field } => DirectorySpec::Gecos {
                field: gecos_field(field.as_deref().unwrap_or("other"))
                    .map_err(|m| c.err(d.span(), &format!("{key}.field"), m))?,
            },
            RawDirectory::Ldap(raw) => DirectorySpec::Ldap(Box::new(
                crate::directory::ldap::validate(c, d.span(), &key, raw)?,
            )),
        });
    }
    if directories.is_empty() {
        directories.push(DirectorySpec::File {
            path: PathBuf::from("/etc/smsotp/phones.toml"),
        });
    }
    Ok(directories)
}

/// Validates `[store]`; the default path is in `state`.
pub(super) fn store(
    c: &Checker<'_>,
    st: &RawStore,
    state: &Path,
) -> Result<StoreSpec, ConfigError> {
    c.choice(&st.kind, "store.kind", &[("sqlite", ())], ())?;
    Ok(StoreSpec::Sqlite {
        path: match &st.path {
            None => state.join("state.db"),
            Some(p) => c.absolute(p.get_ref(), p.span(), "store.path")?,
        },
        busy_timeout: c.duration_in(
            &st.busy_timeout,
            "store.busy_timeout",
            Duration::from_millis(100),
            Duration::from_secs(60),
            Duration::from_secs(5),
        )?,
    })
}

/// Validates `[audit]`.
pub(super) fn audit(c: &Checker<'_>, a: &RawAudit) -> Result<AuditSettings, ConfigError> {
    Ok(AuditSettings {
        syslog: a.syslog.unwrap_or(true),
        file: a
            .file
            .as_ref()
            .map(|s| c.absolute(s.get_ref(), s.span(), "audit.file"))
            .transpose()?,
    })
}

/// GECOS is "full name,room,work phone,home phone,other".
fn gecos_field(name: &str) -> Result<usize, String> {
    match name {
        "full_name" => Ok(0),
        "room" => Ok(1),
        "work_phone" => Ok(2),
        "home_phone" => Ok(3),
        "other" => Ok(4),
        other => Err(format!(
            "\"{other}\" is not a GECOS field; use \"work_phone\", \"home_phone\", \"other\", \"room\" or \"full_name\""
        )),
    }
}
