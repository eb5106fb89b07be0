//! Where a user's phone number comes from: a TOML file or the passwd GECOS
//! field, tried in the configured order. The first source that knows the
//! user wins; a source that fails makes the lookup fail (closed), so a
//! broken file never silently falls through to another number.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::{ConfigError, DirectorySpec, Location};
use crate::files::{self, FileRule};
use crate::phone::{Phone, PhoneError};

/// A number found for a user, and where it came from (for `user show` and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub phone: Phone,
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    #[error(transparent)]
    File(#[from] ConfigError),
    #[error("{source_name}: the number for {user}: {error}")]
    BadNumber {
        source_name: String,
        user: String,
        error: PhoneError,
    },
    #[error("cannot look up {user} in the passwd database: {message}")]
    Accounts { user: String, message: String },
}

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

/// One source of numbers.
pub trait Directory {
    /// A short name for messages, e.g. "file /etc/smsotp/phones.toml".
    fn name(&self) -> String;
    fn lookup(&self, user: &str) -> Result<Option<Found>, DirectoryError>;
}

/// `alice = "+15550100123"` lines in a TOML file.
pub struct FileDirectory {
    pub path: PathBuf,
    pub default_region: Option<phonenumber::country::Id>,
}

impl Directory for FileDirectory {
    fn name(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn lookup(&self, user: &str) -> Result<Option<Found>, DirectoryError> {
        let text = match files::read_checked(&self.path, FileRule::Data) {
            Ok(t) => t,
            // No file yet means nobody has a number here: not an error.
            Err(files::FileError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None)
            }
            Err(e) => return Err(ConfigError::from(e).into()),
        };
        let table: BTreeMap<String, toml::Spanned<String>> =
            toml::from_str(&text).map_err(|e| {
                let at = e.span().map_or(0, |s| s.start);
                ConfigError::Invalid {
                    path: self.path.clone(),
                    location: location(&text, at),
                    key: "(phone list)".into(),
                    message: format!(
                        "{}; each line must look like: alice = \"+15550100123\"",
                        e.message().trim_end()
                    ),
                }
            })?;
        let Some(raw) = table.get(user) else {
            return Ok(None);
        };
        let phone = Phone::parse(raw.get_ref(), self.default_region).map_err(|error| {
            let loc = location(&text, raw.span().start);
            DirectoryError::BadNumber {
                source_name: format!("{}:{}:{}", self.path.display(), loc.line, loc.column),
                user: user.to_owned(),
                error,
            }
        })?;
        Ok(Some(Found {
            phone,
            source: self.name(),
        }))
    }
}

fn location(text: &str, offset: usize) -> Location {
    let before = &text[..offset.min(text.len())];
    Location {
        line: before.matches('\n').count() + 1,
        column: before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
    }
}

/// A comma-separated field of the GECOS entry ("Alice,,+1 555…,…").
pub struct GecosDirectory<A> {
    pub field: usize,
    pub accounts: A,
    pub default_region: Option<phonenumber::country::Id>,
}

impl<A: Accounts> Directory for GecosDirectory<A> {
    fn name(&self) -> String {
        format!("gecos field {}", self.field + 1)
    }

    fn lookup(&self, user: &str) -> Result<Option<Found>, DirectoryError> {
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
        let phone =
            Phone::parse(raw, self.default_region).map_err(|error| DirectoryError::BadNumber {
                source_name: self.name(),
                user: user.to_owned(),
                error,
            })?;
        Ok(Some(Found {
            phone,
            source: self.name(),
        }))
    }
}

/// Builds the configured sources, in order.
pub fn from_config(
    specs: &[DirectorySpec],
    default_region: Option<phonenumber::country::Id>,
) -> Vec<Box<dyn Directory>> {
    specs
        .iter()
        .map(|s| -> Box<dyn Directory> {
            match s {
                DirectorySpec::File { path } => Box::new(FileDirectory {
                    path: path.clone(),
                    default_region,
                }),
                DirectorySpec::Gecos { field } => Box::new(GecosDirectory {
                    field: *field,
                    accounts: SystemAccounts,
                    default_region,
                }),
            }
        })
        .collect()
}

/// Asks each source in order; the first that knows the user answers.
pub fn lookup(dirs: &[Box<dyn Directory>], user: &str) -> Result<Option<Found>, DirectoryError> {
    for d in dirs {
        if let Some(found) = d.lookup(user)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    /// Accounts from a table: user -> (gecos, groups).
    #[derive(Default)]
    pub struct FakeAccounts(pub HashMap<String, (String, Vec<String>)>);

    impl Accounts for FakeAccounts {
        fn gecos(&self, user: &str) -> Result<Option<String>, String> {
            Ok(self.0.get(user).map(|(g, _)| g.clone()))
        }
        fn groups(&self, user: &str) -> Result<Vec<String>, String> {
            Ok(self.0.get(user).map(|(_, g)| g.clone()).unwrap_or_default())
        }
    }

    fn phones_file(dir: &std::path::Path, text: &str, mode: u32) -> PathBuf {
        let p = dir.join("phones.toml");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn file_directory_finds_and_normalises() {
        let d = tempfile::tempdir().unwrap();
        let path = phones_file(
            d.path(),
            "alice = \"+1 202 555 0143\"\nbob = \"030 1234567\"\n",
            0o644,
        );
        let dir = FileDirectory {
            path,
            default_region: Some(phonenumber::country::Id::DE),
        };
        assert_eq!(
            dir.lookup("alice").unwrap().unwrap().phone.e164(),
            "+12025550143"
        );
        assert_eq!(
            dir.lookup("bob").unwrap().unwrap().phone.e164(),
            "+49301234567"
        );
        assert!(dir.lookup("carol").unwrap().is_none());
    }

    #[test]
    fn file_directory_errors_name_line_and_fix() {
        let d = tempfile::tempdir().unwrap();
        let path = phones_file(
            d.path(),
            "alice = \"+1 202 555 0143\"\nbob = \"not a number\"\n",
            0o644,
        );
        let dir = FileDirectory {
            path: path.clone(),
            default_region: None,
        };
        let e = dir.lookup("bob").unwrap_err().to_string();
        assert!(e.contains("phones.toml:2:7"), "{e}");
        assert!(e.contains("international form"), "{e}");
        // A bad entry for bob does not lock alice out.
        assert!(dir.lookup("alice").unwrap().is_some());

        let path = phones_file(d.path(), "alice = +1202\n", 0o644);
        let e = FileDirectory {
            path,
            default_region: None,
        }
        .lookup("alice")
        .unwrap_err()
        .to_string();
        assert!(e.contains("phones.toml:1:"), "{e}");

        let path = phones_file(d.path(), "alice = \"+12025550143\"\n", 0o666);
        let e = FileDirectory {
            path,
            default_region: None,
        }
        .lookup("alice")
        .unwrap_err()
        .to_string();
        assert!(e.contains("writable by group or others"), "{e}");
    }

    #[test]
    fn missing_file_means_no_number() {
        let dir = FileDirectory {
            path: "/nonexistent/phones.toml".into(),
            default_region: None,
        };
        assert!(dir.lookup("alice").unwrap().is_none());
    }

    #[test]
    fn gecos_field_and_order() {
        let mut accounts = FakeAccounts::default();
        accounts
            .0
            .insert("alice".into(), ("Alice A,,,,+12025550143".into(), vec![]));
        accounts.0.insert("bob".into(), ("Bob,,,".into(), vec![]));
        let gecos = GecosDirectory {
            field: 4,
            accounts,
            default_region: None,
        };
        assert_eq!(
            gecos.lookup("alice").unwrap().unwrap().phone.e164(),
            "+12025550143"
        );
        assert!(gecos.lookup("bob").unwrap().is_none());
        assert!(gecos.lookup("nobody").unwrap().is_none());

        let d = tempfile::tempdir().unwrap();
        let path = phones_file(d.path(), "alice = \"+12025550199\"\n", 0o644);
        let dirs: Vec<Box<dyn Directory>> = vec![
            Box::new(FileDirectory {
                path,
                default_region: None,
            }),
            Box::new(gecos),
        ];
        let found = lookup(&dirs, "alice").unwrap().unwrap();
        assert_eq!(found.phone.e164(), "+12025550199");
        assert!(found.source.starts_with("file "));
    }
}
