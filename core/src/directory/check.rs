//! Every number the sources list, checked as a login would check it,
//! ahead of any login.

use std::path::{Path, PathBuf};

use super::{from_config, Directory, DirectoryError, Entry};
use crate::config::{Config, ConfigError, PhoneSettings};
use crate::phone::{NoCache, NumberCache, Phone};

/// A phone-list entry a login would refuse, or a source that could not be
/// read: what `check-config`, `doctor` and `smsotp-radiusd` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEntry {
    /// The source's name ("file /etc/smsotp/phones.toml").
    pub source: String,
    /// The file, when the source is one.
    pub path: Option<PathBuf>,
    /// "/etc/smsotp/phones.toml:2:9", or the source's name.
    pub location: String,
    /// The 1-based line in the source's file; `None` for sources without
    /// lines (GECOS) and for a file that cannot be read at all.
    pub line: Option<u32>,
    /// Whose entry; `None` when the whole source is at fault.
    pub user: Option<String>,
    /// What is wrong (numbers masked).
    pub problem: String,
    /// How to put it right.
    pub fix: String,
}

impl std::fmt::Display for BadEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.user {
            Some(user) => write!(
                f,
                "{}: the number for {user}: {}; {}",
                self.location, self.problem, self.fix
            ),
            None => write!(f, "{}: {}; {}", self.location, self.problem, self.fix),
        }
    }
}

impl BadEntry {
    /// A source that could not be read or parsed as a whole.
    fn of_source(d: &dyn Directory, e: DirectoryError) -> BadEntry {
        let mut bad = BadEntry {
            source: d.name(),
            path: d.path().map(Path::to_path_buf),
            location: d.name(),
            line: None,
            user: None,
            problem: e.to_string(),
            fix: String::new(),
        };
        match e {
            DirectoryError::File(ConfigError::Invalid {
                path,
                location,
                message,
                ..
            }) => {
                bad.location = format!("{}:{}:{}", path.display(), location.line, location.column);
                bad.line = u32::try_from(location.line).ok();
                bad.problem = message;
                bad.fix = "correct that line; the file is read as a whole, so until then no user in it gets a number".into();
            }
            DirectoryError::File(ConfigError::Unsafe {
                path, problem, fix, ..
            }) => {
                bad.location = path.display().to_string();
                bad.problem = format!("{problem}, so it is not used and logins of its users fail");
                bad.fix = fix;
            }
            DirectoryError::File(ConfigError::Read { path, source }) => {
                bad.location = path.display().to_string();
                bad.problem = format!("cannot read: {source}");
                bad.fix = "make it a regular file root can read, or remove its [[directory]] table"
                    .into();
            }
            _ => bad.fix = "see the message; logins of its users fail until it is fixed".into(),
        }
        bad
    }

    /// An entry whose number is not one a login would use.
    fn of_entry(
        d: &dyn Directory,
        entry: Entry,
        user: String,
        problem: String,
        fix: String,
    ) -> Self {
        BadEntry {
            source: entry.source,
            path: d.path().map(Path::to_path_buf),
            location: entry.location,
            line: entry.line,
            user: Some(user),
            problem,
            fix,
        }
    }
}

/// What [`check_numbers`] found.
#[derive(Debug, Default)]
pub struct NumbersChecked {
    /// Entries whose number is valid and allowed (and now cached).
    pub valid: usize,
    /// The others, and sources that could not be read.
    pub bad: Vec<BadEntry>,
}

/// Validates every number the sources list as a login would (parsed with
/// `phone.default_region`, in `phone.allowed_countries`), filling `cache`
/// so that logins find them validated and bad entries are reported before
/// anyone meets them. `pause` runs after every entry (a server lets its
/// other work through).
pub fn check_numbers<'a>(
    dirs: impl IntoIterator<Item = &'a dyn Directory>,
    settings: &PhoneSettings,
    cache: &dyn NumberCache,
    mut pause: impl FnMut(),
) -> NumbersChecked {
    let mut out = NumbersChecked::default();
    for d in dirs {
        // Names only, each looked up in turn: a large list is not copied
        // whole, and logins meanwhile are not kept from it.
        let users = match d.users() {
            Ok(u) => u,
            Err(e) => {
                out.bad.push(BadEntry::of_source(d, e));
                continue;
            }
        };
        for user in users {
            let entry = match d.lookup(&user) {
                Ok(Some(e)) => e,
                // Edited away meanwhile.
                Ok(None) => continue,
                Err(e) => {
                    out.bad.push(BadEntry::of_source(d, e));
                    break;
                }
            };
            match Phone::parse_cached(&entry.raw, settings.default_region, cache) {
                Ok(phone) if phone.allowed(settings) => out.valid += 1,
                Ok(phone) => {
                    let (problem, fix) = not_allowed(&phone, settings);
                    out.bad
                        .push(BadEntry::of_entry(d, entry, user, problem, fix));
                }
                Err(error) => {
                    let (problem, fix) = (error.problem(), error.fix().to_owned());
                    out.bad
                        .push(BadEntry::of_entry(d, entry, user, problem, fix));
                }
            }
            pause();
        }
    }
    out
}

/// Problem and fix for a valid number outside `phone.allowed_countries`
/// (the number masked).
pub fn not_allowed(phone: &Phone, settings: &PhoneSettings) -> (String, String) {
    let allowed: Vec<&str> = settings
        .allowed_countries
        .iter()
        .map(|c| c.as_ref())
        .collect();
    let allowed = allowed.join(", ");
    match phone.region() {
        Some(r) => (
            format!(
                "{} is a number in {}, which is not in phone.allowed_countries ({allowed}), so logins refuse it",
                phone.masked(),
                r.as_ref()
            ),
            format!(
                "give the user a number in {allowed}, or add \"{}\" to phone.allowed_countries",
                r.as_ref()
            ),
        ),
        None => (
            format!(
                "{} belongs to no country in phone.allowed_countries ({allowed}), so logins refuse it",
                phone.masked()
            ),
            format!("give the user a number in {allowed}"),
        ),
    }
}

/// Checks every number in the configured phone lists, as a login would:
/// the one check behind `smsotp check-config`, `smsotp doctor` and
/// `smsotp-radiusd --check`. Builds the number metadata (about 80 ms), so
/// not for a login's path.
pub fn check_phone_lists(cfg: &Config) -> NumbersChecked {
    let dirs = from_config(&cfg.directories);
    check_numbers(dirs.iter().map(|d| &**d), &cfg.phone, &NoCache, || {})
}
