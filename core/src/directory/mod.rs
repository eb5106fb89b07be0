//! Where a user's phone number comes from: a TOML file, the passwd GECOS
//! field or an LDAP directory, tried in the configured order. The first
//! source that knows the user wins; a source that fails makes the lookup
//! fail (closed), so a broken file never silently falls through to
//! another number. Only an LDAP directory that cannot be reached and says
//! `on_unavailable = "next"` lets the next source answer.
//!
//! This file holds the [`Directory`] trait, its errors, the configured
//! sources and the ordered [`lookup`]; `file.rs` the TOML phone list
//! ([`FileDirectory`]) with its parse cache; `accounts.rs` the system
//! accounts ([`Accounts`], [`SystemAccounts`]) and the GECOS source
//! ([`GecosDirectory`]); `ldap/` LDAP and Active Directory
//! ([`LdapDirectory`], its client, filters and config); `check.rs` the check of every listed number
//! ([`check_numbers`], [`check_phone_lists`]) behind `check-config`,
//! `doctor` and `smsotp-radiusd --check`.

use std::path::Path;
use std::sync::Arc;

use crate::config::{ConfigError, DirectorySpec};
use crate::phone::{NumberCache, Phone, PhoneError};

mod accounts;
mod check;
mod file;
pub mod ldap;
#[cfg(test)]
pub(crate) mod tests;

pub use accounts::{Accounts, AccountsError, GecosDirectory, SystemAccounts};
pub use check::{check_numbers, check_phone_lists, not_allowed, BadEntry, NumbersChecked};
pub use file::{FileDirectory, SERVER_RECHECK};
pub use ldap::LdapDirectory;

/// A number found for a user, and where it came from (for `user show` and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The number, validated and in E.164 form.
    pub phone: Phone,
    /// The source that knew the user ("file /etc/smsotp/phones.toml").
    pub source: String,
    /// The user's language as the source has it (LDAP's
    /// `language_attribute`), if it has one.
    pub language: Option<String>,
}

/// A number as a directory holds it, not yet validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The number as written in the source ("030 1234567").
    pub raw: String,
    /// "file /etc/smsotp/phones.toml", "gecos field 5".
    pub source: String,
    /// Where exactly, for error messages ("/etc/smsotp/phones.toml:2:7").
    pub location: String,
    /// The line in the source's file, if it has one.
    pub line: Option<u32>,
    /// The user's language, from a source that keeps one (LDAP).
    pub language: Option<String>,
}

/// Why a source could not answer. Every case fails the login closed: the
/// user may have a number, so none is not assumed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// A phone list cannot be used as a whole: unreadable, unsafe owner or
    /// mode, or not valid TOML (the error names file, line and fix).
    #[error(transparent)]
    File(#[from] ConfigError),
    /// The user's entry holds no number a login can use.
    #[error("{source_name}: the number for {user}: {error}")]
    BadNumber {
        /// Where the entry is ("/etc/smsotp/phones.toml:2:7", "gecos field 5").
        source_name: String,
        /// Whose entry it is.
        user: String,
        /// What is wrong with the number (masked).
        error: PhoneError,
    },
    /// The passwd database could not be asked for the GECOS field.
    #[error("cannot look up {user} in the passwd database: {source}")]
    Accounts {
        /// Whom the lookup was for.
        user: String,
        /// What NSS answered.
        source: AccountsError,
    },
    /// A directory server could not be asked: DNS, TCP, TLS, a timeout,
    /// a broken connection, a busy server ([`ldap::LdapError::is_unavailable`]).
    /// Fails the login closed unless the directory says
    /// `on_unavailable = "next"`.
    #[error("{directory} cannot be reached: {error}")]
    Unavailable {
        /// The directory ("ldap ldaps://dc1.example.org").
        directory: String,
        /// What failed, classified.
        error: ldap::LdapError,
    },
    /// A directory server answered, but not with a usable entry: a
    /// refused service bind, a failed search, several entries, a disabled
    /// account, a refused write.
    #[error("{directory}: {error}")]
    Ldap {
        /// The directory.
        directory: String,
        /// What failed, classified.
        error: ldap::LdapError,
    },
}

/// One source of numbers.
pub trait Directory {
    /// A short name for messages, e.g. "file /etc/smsotp/phones.toml".
    fn name(&self) -> String;
    /// `user`'s entry, not yet validated; `None` when this source does not
    /// know the user (the next source is asked).
    fn lookup(&self, user: &str) -> Result<Option<Entry>, DirectoryError>;
    /// The file this source reads, if it is one (for reports by file).
    fn path(&self) -> Option<&Path> {
        None
    }
    /// Every user this source lists, for checking them all ahead of any
    /// login. Sources that cannot list (the passwd database) return none.
    fn users(&self) -> Result<Vec<String>, DirectoryError> {
        Ok(Vec::new())
    }
    /// Whether [`lookup`] asks the next source when this one is
    /// [`DirectoryError::Unavailable`] (`on_unavailable = "next"`), rather
    /// than failing the login.
    fn next_when_unavailable(&self) -> bool {
        false
    }
    /// Writes a number confirmed at enrollment (E.164) to `user`'s entry,
    /// where the source is configured to (`write_back = true`); `Ok(true)`
    /// when it wrote. Sources that cannot write do nothing.
    fn write_back(&self, user: &str, e164: &str) -> Result<bool, DirectoryError> {
        let _ = (user, e164);
        Ok(false)
    }
}

/// A source shared by several engines (a server's worker threads), so a
/// large phone list is parsed and held once.
impl<D: Directory + ?Sized> Directory for Arc<D> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn lookup(&self, user: &str) -> Result<Option<Entry>, DirectoryError> {
        (**self).lookup(user)
    }
    fn path(&self) -> Option<&Path> {
        (**self).path()
    }
    fn users(&self) -> Result<Vec<String>, DirectoryError> {
        (**self).users()
    }
    fn next_when_unavailable(&self) -> bool {
        (**self).next_when_unavailable()
    }
    fn write_back(&self, user: &str, e164: &str) -> Result<bool, DirectoryError> {
        (**self).write_back(user, e164)
    }
}

/// The configured sources, built once to be shared between threads; give
/// each engine `shared.iter().map(|d| Box::new(d.clone()) as Box<dyn Directory>)`.
pub fn shared_from_config(specs: &[DirectorySpec]) -> Vec<Arc<dyn Directory + Send + Sync>> {
    specs
        .iter()
        .map(|s| -> Arc<dyn Directory + Send + Sync> {
            match s {
                DirectorySpec::File { path } => {
                    Arc::new(FileDirectory::rechecked_every(path.clone(), SERVER_RECHECK))
                }
                DirectorySpec::Gecos { field } => Arc::new(GecosDirectory {
                    field: *field,
                    accounts: SystemAccounts,
                }),
                DirectorySpec::Ldap(spec) => Arc::new(LdapDirectory::shared((**spec).clone())),
            }
        })
        .collect()
}

/// Builds the configured sources, in order.
pub fn from_config(specs: &[DirectorySpec]) -> Vec<Box<dyn Directory>> {
    specs
        .iter()
        .map(|s| -> Box<dyn Directory> {
            match s {
                DirectorySpec::File { path } => Box::new(FileDirectory::new(path.clone())),
                DirectorySpec::Gecos { field } => Box::new(GecosDirectory {
                    field: *field,
                    accounts: SystemAccounts,
                }),
                DirectorySpec::Ldap(spec) => Box::new(LdapDirectory::new((**spec).clone())),
            }
        })
        .collect()
}

/// Asks each source in order; the first that knows the user answers, and
/// its number is validated (through `cache`). A source that cannot be
/// reached fails the lookup, unless it says `on_unavailable = "next"`.
pub fn lookup(
    dirs: &[Box<dyn Directory>],
    user: &str,
    default_region: Option<phonenumber::country::Id>,
    cache: &dyn NumberCache,
) -> Result<Option<Found>, DirectoryError> {
    lookup_noting(dirs, user, default_region, cache, &mut Vec::new())
}

/// [`lookup`], putting the sources skipped as unavailable (with why) in
/// `skipped`, for the audit.
pub fn lookup_noting(
    dirs: &[Box<dyn Directory>],
    user: &str,
    default_region: Option<phonenumber::country::Id>,
    cache: &dyn NumberCache,
    skipped: &mut Vec<DirectoryError>,
) -> Result<Option<Found>, DirectoryError> {
    for d in dirs {
        let answer = match d.lookup(user) {
            Err(e @ DirectoryError::Unavailable { .. }) if d.next_when_unavailable() => {
                skipped.push(e);
                continue;
            }
            other => other?,
        };
        if let Some(entry) = answer {
            let phone =
                Phone::parse_cached(&entry.raw, default_region, cache).map_err(|error| {
                    DirectoryError::BadNumber {
                        source_name: entry.location.clone(),
                        user: user.to_owned(),
                        error,
                    }
                })?;
            return Ok(Some(Found {
                phone,
                source: entry.source,
                language: entry.language,
            }));
        }
    }
    Ok(None)
}
