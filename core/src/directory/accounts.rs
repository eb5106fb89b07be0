//! System accounts (passwd and groups, through NSS) and the GECOS field as
//! a source of numbers.

use super::{Directory, DirectoryError, Entry};

/// Facts about system accounts (passwd and groups). Behind a trait so tests
/// need no real users.
pub trait Accounts {
    /// The GECOS field of `user`, or `None` if the user does not exist.
    fn gecos(&self, user: &str) -> Result<Option<String>, String>;
    /// Names of all groups `user` belongs to (primary and supplementary).
    fn groups(&self, user: &str) -> Result<Vec<String>, String>;
}

/// The system's NSS (passwd, group, LDAP via nss, …).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemAccounts;

impl Accounts for SystemAccounts {
    fn gecos(&self, user: &str) -> Result<Option<String>, String> {
        nix::unistd::User::from_name(user)
            .map(|u| u.map(|u| u.gecos.to_string_lossy().into_owned()))
            .map_err(|e| e.to_string())
    }

    fn groups(&self, user: &str) -> Result<Vec<String>, String> {
        let Some(u) = nix::unistd::User::from_name(user).map_err(|e| e.to_string())? else {
            return Ok(Vec::new());
        };
        let cname = std::ffi::CString::new(user).map_err(|e| e.to_string())?;
        let gids = nix::unistd::getgrouplist(&cname, u.gid).map_err(|e| e.to_string())?;
        let mut names = Vec::with_capacity(gids.len());
        for gid in gids {
            if let Some(g) = nix::unistd::Group::from_gid(gid).map_err(|e| e.to_string())? {
                names.push(g.name);
            }
        }
        Ok(names)
    }
}

/// A comma-separated field of the GECOS entry ("Alice,,+1 555…,…").
pub struct GecosDirectory<A> {
    pub field: usize,
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
            .map_err(|message| DirectoryError::Accounts {
                user: user.to_owned(),
                message,
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
            raw: raw.to_owned(),
            source: self.name(),
            location: self.name(),
            line: None,
        }))
    }
}
