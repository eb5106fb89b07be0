//! System accounts (passwd and groups, through NSS) and the GECOS field as
//! a source of numbers.

use super::{Directory, DirectoryError, Entry};

/// Why a question about system accounts got no answer. Not "no such user"
/// (that is `Ok(None)` or no groups): the user may well exist, so callers
/// fail closed rather than treat them as unknown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountsError {
    /// NSS could not answer (an LDAP or SSSD backend down, a broken
    /// nsswitch.conf, out of memory); the error is the one the C library
    /// reported.
    #[error(transparent)]
    Lookup(#[from] nix::Error),
    /// The user name cannot be asked about: it contains a NUL byte.
    #[error(transparent)]
    InvalidName(#[from] std::ffi::NulError),
}

/// Facts about system accounts (passwd and groups). Behind a trait so tests
/// need no real users.
pub trait Accounts {
    /// The GECOS field of `user`, or `None` if the user does not exist.
    fn gecos(&self, user: &str) -> Result<Option<String>, AccountsError>;
    /// Names of all groups `user` belongs to (primary and supplementary).
    fn groups(&self, user: &str) -> Result<Vec<String>, AccountsError>;
}

/// The system's NSS (passwd, group, LDAP via nss, …).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemAccounts;

impl Accounts for SystemAccounts {
    fn gecos(&self, user: &str) -> Result<Option<String>, AccountsError> {
        Ok(nix::unistd::User::from_name(user)?.map(|u| u.gecos.to_string_lossy().into_owned()))
    }

    fn groups(&self, user: &str) -> Result<Vec<String>, AccountsError> {
        let Some(u) = nix::unistd::User::from_name(user)? else {
            return Ok(Vec::new());
        };
        let cname = std::ffi::CString::new(user)?;
        let gids = nix::unistd::getgrouplist(&cname, u.gid)?;
        let mut names = Vec::with_capacity(gids.len());
        for gid in gids {
            if let Some(g) = nix::unistd::Group::from_gid(gid)? {
                names.push(g.name);
            }
        }
        Ok(names)
    }
}

/// A comma-separated field of the GECOS entry ("Alice,,+1 555…,…").
pub struct GecosDirectory<A> {
    /// Which comma-separated field, counted from 0 (`[[directory]]`
    /// `field = "other"` is 4).
    pub field: usize,
    /// Where GECOS fields come from ([`SystemAccounts`] outside tests).
    pub accounts: A,
}

impl<A: Accounts> Directory for GecosDirectory<A> {
    fn name(&self) -> String {
        format!("gecos field {}", self.field + 1)
    }

    fn lookup(&self, user: &str) -> Result<Option<Entry>, DirectoryError> {
        let gecos = self
            .accounts
            .gecos(user)
            .map_err(|source| DirectoryError::Accounts {
                user: user.to_owned(),
                source,
            })?;
        let Some(gecos) = gecos else { return Ok(None) };
        let Some(raw) = gecos
            .split(',')
            .nth(self.field)
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        Ok(Some(Entry {
            language: None,
            raw: raw.to_owned(),
            source: self.name(),
            location: self.name(),
            line: None,
        }))
    }
}
