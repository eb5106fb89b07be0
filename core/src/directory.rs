//! Where a user's phone number comes from: a TOML file or the passwd GECOS
//! field, tried in the configured order. The first source that knows the
//! user wins; a source that fails makes the lookup fail (closed), so a
//! broken file never silently falls through to another number.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::{Config, ConfigError, DirectorySpec, Location, PhoneSettings};
use crate::files::{self, FileRule};
use crate::phone::{NoCache, NumberCache, Phone, PhoneError};

/// A number found for a user, and where it came from (for `user show` and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub phone: Phone,
    pub source: String,
}

/// A number as a directory holds it, not yet validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub raw: String,
    /// "file /etc/smsotp/phones.toml", "gecos field 5".
    pub source: String,
    /// Where exactly, for error messages ("/etc/smsotp/phones.toml:2:7").
    pub location: String,
    /// The line in the source's file, if it has one.
    pub line: Option<u32>,
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
}

/// `alice = "+15550100123"` lines in a TOML file.
pub struct FileDirectory {
    pub path: PathBuf,
    /// The parsed file, kept while the file does not change: a server
    /// looks numbers up thousands of times a second, and a phone list can
    /// have thousands of lines. A mutex, so a server's threads can share
    /// one copy.
    cache: Mutex<Option<Parsed>>,
    /// How long the parsed file is used before it is looked at again
    /// (zero: at every lookup).
    recheck: std::time::Duration,
}

/// user -> (number as written, line, column): compact, since a server
/// keeps it for every user.
type Entries = HashMap<Box<str>, (Box<str>, u32, u32)>;

struct Parsed {
    stamp: Stamp,
    entries: Entries,
    /// When the file was last found unchanged (and its owner and mode
    /// checked).
    checked: std::time::Instant,
}

/// How long a server uses a parsed phone list before it looks at the file
/// again: it looks numbers up thousands of times a second, and an edit to
/// the list takes effect within this time (at once on reload).
pub const SERVER_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Identity and version of a file: any edit changes one of these.
#[derive(PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

impl FileDirectory {
    /// Looks at the file (owner, mode, changes) at every lookup.
    pub fn new(path: PathBuf) -> Self {
        Self::rechecked_every(path, std::time::Duration::ZERO)
    }

    /// Uses what it parsed for up to `recheck` before looking at the file
    /// again.
    pub fn rechecked_every(path: PathBuf, recheck: std::time::Duration) -> Self {
        FileDirectory {
            path,
            cache: Mutex::new(None),
            recheck,
        }
    }

    fn parse(&self, text: &str) -> Result<Entries, DirectoryError> {
        let table: BTreeMap<String, toml::Spanned<String>> = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            ConfigError::Invalid {
                path: self.path.clone(),
                location: location(text, at),
                key: "(phone list)".into(),
                message: format!(
                    "{}; each line must look like: alice = \"+12025550123\"",
                    e.message().trim_end()
                ),
            }
        })?;
        // Line starts, once: finding each entry's line by scanning from
        // the top would make a list of n users cost n² to load.
        let lines = LineIndex::new(text);
        Ok(table
            .into_iter()
            .map(|(user, raw)| {
                let loc = lines.location(text, raw.span().start);
                let value = (
                    raw.into_inner().into_boxed_str(),
                    loc.line as u32,
                    loc.column as u32,
                );
                (user.into_boxed_str(), value)
            })
            .collect())
    }

    fn entry(&self, (raw, line, col): (Box<str>, u32, u32)) -> Entry {
        Entry {
            raw: raw.into_string(),
            source: self.name(),
            location: format!("{}:{line}:{col}", self.path.display()),
            line: Some(line),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Option<Parsed>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl FileDirectory {
    /// Runs `f` on the file's entries (parsed again only when the file
    /// changed); `None` when there is no file.
    fn with_entries<T>(&self, f: impl FnOnce(&Entries) -> T) -> Result<Option<T>, DirectoryError> {
        if let Some(p) = self
            .cache()
            .as_ref()
            .filter(|p| p.checked.elapsed() < self.recheck)
        {
            return Ok(Some(f(&p.entries)));
        }
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            // No file yet means nobody has a number here: not an error.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *self.cache() = None;
                return Ok(None);
            }
            Err(source) => {
                return Err(ConfigError::from(files::FileError::Read {
                    path: self.path.clone(),
                    source,
                })
                .into())
            }
        };
        // Ownership and mode are checked whenever the file is looked at,
        // whether it changed or not.
        files::check(&self.path, &meta, FileRule::Data).map_err(ConfigError::from)?;
        let stamp = Stamp::of(&meta);
        if let Some(p) = self.cache().as_mut().filter(|p| p.stamp == stamp) {
            p.checked = std::time::Instant::now();
            return Ok(Some(f(&p.entries)));
        }
        let text = match files::read_checked(&self.path, FileRule::Data) {
            Ok(t) => t,
            Err(files::FileError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None)
            }
            Err(e) => return Err(ConfigError::from(e).into()),
        };
        let entries = self.parse(&text)?;
        let out = f(&entries);
        *self.cache() = Some(Parsed {
            stamp,
            entries,
            checked: std::time::Instant::now(),
        });
        Ok(Some(out))
    }
}

impl Directory for FileDirectory {
    fn name(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn lookup(&self, user: &str) -> Result<Option<Entry>, DirectoryError> {
        // Only the copy under the lock the server's threads share; the
        // entry's strings are made after.
        let found = self.with_entries(|e| e.get(user).cloned())?.flatten();
        Ok(found.map(|f| self.entry(f)))
    }

    fn users(&self) -> Result<Vec<String>, DirectoryError> {
        Ok(self
            .with_entries(|entries| {
                let mut all: Vec<String> = entries.keys().map(|u| u.to_string()).collect();
                all.sort();
                all
            })?
            .unwrap_or_default())
    }
}

fn location(text: &str, offset: usize) -> Location {
    LineIndex::new(text).location(text, offset)
}

/// The byte offset of every line's start, for line:column of many offsets.
struct LineIndex(Vec<usize>);

impl LineIndex {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex(starts)
    }

    /// 1-based line and column (in characters) of byte `offset`.
    fn location(&self, text: &str, offset: usize) -> Location {
        let offset = offset.min(text.len());
        // The last line starting at or before `offset`.
        let line = self.0.partition_point(|&start| start <= offset).max(1);
        let start = self.0[line - 1];
        Location {
            line,
            column: text.get(start..offset).map_or(0, |l| l.chars().count()) + 1,
        }
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
            }
        })
        .collect()
}

/// Asks each source in order; the first that knows the user answers, and
/// its number is validated (through `cache`).
pub fn lookup(
    dirs: &[Box<dyn Directory>],
    user: &str,
    default_region: Option<phonenumber::country::Id>,
    cache: &dyn NumberCache,
) -> Result<Option<Found>, DirectoryError> {
    for d in dirs {
        if let Some(entry) = d.lookup(user)? {
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
            }));
        }
    }
    Ok(None)
}

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

/// Problem and fix for a valid number outside `phone.allowed_countries`.
fn not_allowed(phone: &Phone, settings: &PhoneSettings) -> (String, String) {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::phone::NoCache;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    /// Accounts from a table: user -> (gecos, groups).
    #[derive(Default)]
    pub(crate) struct FakeAccounts(pub HashMap<String, (String, Vec<String>)>);

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

    fn find(dirs: &[Box<dyn Directory>], user: &str) -> Result<Option<Found>, DirectoryError> {
        lookup(dirs, user, Some(phonenumber::country::Id::DE), &NoCache)
    }

    fn file(path: PathBuf) -> Vec<Box<dyn Directory>> {
        vec![Box::new(FileDirectory::new(path))]
    }

    #[test]
    fn line_index_gives_line_and_column_in_characters() {
        let text = "a = 1\n\nnäme = \"x\"\nlast";
        let lines = LineIndex::new(text);
        let at = |offset| {
            let l = lines.location(text, offset);
            (l.line, l.column)
        };
        assert_eq!(at(0), (1, 1));
        assert_eq!(at(5), (1, 6), "the newline itself ends line 1");
        assert_eq!(at(6), (2, 1), "an empty line");
        assert_eq!(at(7), (3, 1));
        // "näme = " is 8 bytes but 7 characters.
        assert_eq!(at(7 + 8), (3, 8));
        assert_eq!(at(text.len()), (4, 5));
        assert_eq!(at(text.len() + 10), (4, 5), "past the end clamps");
    }

    #[test]
    fn a_long_phone_list_names_the_right_line() {
        // Each entry's line comes from the line index (a scan from the top
        // for each entry made a list of n users cost n², seconds at 10,000).
        let d = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for i in 0..5_000 {
            text.push_str(&format!("user{i:05} = \"+49 30 1234{i:05}\"\n"));
        }
        let dirs = file(phones_file(d.path(), &text, 0o600));
        let found = find(&dirs, "user04999").unwrap().unwrap();
        assert_eq!(found.phone.e164(), "+4930123404999");
        let e = dirs[0].lookup("user04999").unwrap().unwrap();
        assert!(e.location.ends_with(":5000:13"), "{}", e.location);
    }

    fn settings(
        default_region: Option<phonenumber::country::Id>,
        allowed: &[phonenumber::country::Id],
    ) -> PhoneSettings {
        PhoneSettings {
            default_region,
            allowed_countries: allowed.to_vec(),
        }
    }

    #[test]
    fn check_numbers_validates_every_entry_and_names_the_bad_ones() {
        let d = tempfile::tempdir().unwrap();
        let path = phones_file(
            d.path(),
            "alice = \"+12025550143\"\nbob = \"12\"\ncarol = \"030 1234567\"\n",
            0o600,
        );
        let dirs = file(path.clone());
        let cache = crate::phone::tests::MemoryCache::default();
        let mut pauses = 0;
        let checked = check_numbers(
            dirs.iter().map(|d| &**d),
            &settings(Some(phonenumber::country::Id::DE), &[]),
            &cache,
            || pauses += 1,
        );
        assert_eq!(checked.valid, 2);
        assert_eq!(pauses, 3);
        assert_eq!(checked.bad.len(), 1);
        let bad = &checked.bad[0];
        assert_eq!(bad.user.as_deref(), Some("bob"));
        assert_eq!(bad.line, Some(2));
        assert_eq!(bad.path.as_deref(), Some(path.as_path()));
        assert!(bad.location.ends_with("phones.toml:2:7"), "{bad:?}");
        let e = bad.to_string();
        assert!(e.contains("bob") && e.contains("phones.toml:2:"), "{e}");
        // Both good numbers are cached for logins.
        let cached: Vec<String> = cache.0.borrow().values().map(|(n, _)| n.clone()).collect();
        assert!(cached.contains(&"+12025550143".to_string()), "{cached:?}");
        assert!(cached.contains(&"+49301234567".to_string()), "{cached:?}");
        // Sources that cannot list add nothing; a missing file is no error.
        let none = check_numbers(
            file(d.path().join("absent.toml")).iter().map(|d| &**d),
            &settings(None, &[]),
            &cache,
            || {},
        );
        assert_eq!((none.valid, none.bad.len()), (0, 0));
    }

    #[test]
    fn a_national_number_without_default_region_is_reported_with_the_fix() {
        use phonenumber::country::Id;
        let d = tempfile::tempdir().unwrap();
        let path = phones_file(
            d.path(),
            "# staff\nbob = \"+12025550143\"\nalice = \"0171 1234567\"\n",
            0o644,
        );
        let checked = check_numbers(
            file(path.clone()).iter().map(|d| &**d),
            &settings(None, &[]),
            &NoCache,
            || {},
        );
        assert_eq!(checked.valid, 1);
        let [bad] = &checked.bad[..] else {
            panic!("{checked:?}")
        };
        assert_eq!(bad.user.as_deref(), Some("alice"));
        assert_eq!(bad.line, Some(3));
        assert!(bad.problem.contains("no country code"), "{bad:?}");
        assert!(
            bad.fix.contains("+49 171 1234567") && bad.fix.contains("phone.default_region"),
            "{bad:?}"
        );
        assert!(
            !bad.to_string().contains("1234567\" has"),
            "unmasked: {bad}"
        );
        // With the region set, the same list is clean.
        let checked = check_numbers(
            file(path).iter().map(|d| &**d),
            &settings(Some(Id::DE), &[]),
            &NoCache,
            || {},
        );
        assert_eq!((checked.valid, checked.bad.len()), (2, 0));
    }

    #[test]
    fn a_number_outside_the_allowed_countries_is_reported() {
        use phonenumber::country::Id;
        let d = tempfile::tempdir().unwrap();
        let path = phones_file(
            d.path(),
            "alice = \"+12025550143\"\ncarol = \"+49 30 1234567\"\n",
            0o644,
        );
        let checked = check_numbers(
            file(path).iter().map(|d| &**d),
            &settings(None, &[Id::US, Id::CA]),
            &NoCache,
            || {},
        );
        assert_eq!(checked.valid, 1);
        let [bad] = &checked.bad[..] else {
            panic!("{checked:?}")
        };
        assert_eq!((bad.user.as_deref(), bad.line), (Some("carol"), Some(2)));
        assert!(
            bad.problem.contains("in DE") && bad.problem.contains("US, CA"),
            "{bad:?}"
        );
        assert!(
            bad.fix.contains("add \"DE\" to phone.allowed_countries"),
            "{bad:?}"
        );
        assert!(!bad.to_string().contains("301234567"), "unmasked: {bad}");
    }

    #[test]
    fn a_list_that_cannot_be_used_is_one_bad_entry() {
        let d = tempfile::tempdir().unwrap();
        let path = phones_file(d.path(), "alice = \"+12025550143\"\nbob = +1202\n", 0o644);
        let checked = check_numbers(
            file(path.clone()).iter().map(|d| &**d),
            &settings(None, &[]),
            &NoCache,
            || {},
        );
        let [bad] = &checked.bad[..] else {
            panic!("{checked:?}")
        };
        assert_eq!((bad.user.as_deref(), bad.line), (None, Some(2)), "{bad:?}");
        assert!(bad.location.contains("phones.toml:2:"), "{bad:?}");

        phones_file(d.path(), "alice = \"+12025550143\"\n", 0o666);
        let checked = check_numbers(
            file(path).iter().map(|d| &**d),
            &settings(None, &[]),
            &NoCache,
            || {},
        );
        let [bad] = &checked.bad[..] else {
            panic!("{checked:?}")
        };
        assert!(
            bad.problem.contains("writable by group or others"),
            "{bad:?}"
        );
        assert!(bad.fix.contains("chmod 644"), "{bad:?}");
    }

    #[test]
    fn file_directory_finds_and_normalises() {
        let d = tempfile::tempdir().unwrap();
        let text = "alice = \"+1 202 555 0143\"\nbob = \"030 1234567\"\n";
        let dirs = file(phones_file(d.path(), text, 0o644));
        assert_eq!(
            find(&dirs, "alice").unwrap().unwrap().phone.e164(),
            "+12025550143"
        );
        assert_eq!(
            find(&dirs, "bob").unwrap().unwrap().phone.e164(),
            "+49301234567"
        );
        assert!(find(&dirs, "carol").unwrap().is_none());
    }

    #[test]
    fn file_directory_errors_name_line_and_fix() {
        let d = tempfile::tempdir().unwrap();
        let text = "alice = \"+1 202 555 0143\"\nbob = \"not a number\"\n";
        let dirs = file(phones_file(d.path(), text, 0o644));
        let e = find(&dirs, "bob").unwrap_err().to_string();
        assert!(e.contains("phones.toml:2:7"), "{e}");
        assert!(e.contains("international form"), "{e}");
        // A bad entry for bob does not lock alice out.
        assert!(find(&dirs, "alice").unwrap().is_some());

        let dirs = file(phones_file(d.path(), "alice = +1202\n", 0o644));
        let e = find(&dirs, "alice").unwrap_err().to_string();
        assert!(e.contains("phones.toml:1:"), "{e}");

        let dirs = file(phones_file(d.path(), "alice = \"+12025550143\"\n", 0o666));
        let e = find(&dirs, "alice").unwrap_err().to_string();
        assert!(e.contains("writable by group or others"), "{e}");
    }

    #[test]
    fn edits_are_seen_despite_the_cache() {
        let d = tempfile::tempdir().unwrap();
        let path = phones_file(d.path(), "alice = \"+12025550143\"\n", 0o644);
        let dirs = file(path.clone());
        assert_eq!(
            find(&dirs, "alice").unwrap().unwrap().phone.e164(),
            "+12025550143"
        );
        assert!(find(&dirs, "bob").unwrap().is_none());
        phones_file(
            d.path(),
            "alice = \"+12025550199\"\nbob = \"+12025550100\"\n",
            0o644,
        );
        assert_eq!(
            find(&dirs, "alice").unwrap().unwrap().phone.e164(),
            "+12025550199"
        );
        assert!(find(&dirs, "bob").unwrap().is_some());
        // A mode change is caught even when the contents are unchanged.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(find(&dirs, "alice").is_err());
        std::fs::remove_file(&path).unwrap();
        assert!(find(&dirs, "alice").unwrap().is_none());
    }

    #[test]
    fn a_server_sees_edits_once_its_recheck_time_is_up() {
        let d = tempfile::tempdir().unwrap();
        let path = phones_file(d.path(), "alice = \"+12025550143\"\n", 0o644);
        let recheck = std::time::Duration::from_millis(500);
        let dirs: Vec<Box<dyn Directory>> = vec![Box::new(FileDirectory::rechecked_every(
            path.clone(),
            recheck,
        ))];
        let alice = |dirs: &[Box<dyn Directory>]| {
            find(dirs, "alice")
                .unwrap()
                .unwrap()
                .phone
                .e164()
                .to_string()
        };
        // The number parser builds its tables on first use (slow in a
        // debug build): before the timed part.
        assert_eq!(alice(&dirs), "+12025550143");
        let dirs: Vec<Box<dyn Directory>> = vec![Box::new(FileDirectory::rechecked_every(
            path.clone(),
            recheck,
        ))];
        // The file is looked at during the first lookup, after `before`.
        let before = std::time::Instant::now();
        assert_eq!(alice(&dirs), "+12025550143");
        phones_file(d.path(), "alice = \"+12025550199\"\n", 0o644);
        let seen = alice(&dirs);
        if before.elapsed() < recheck {
            assert_eq!(seen, "+12025550143", "looked at the file before its time");
        }
        std::thread::sleep(recheck);
        assert_eq!(alice(&dirs), "+12025550199");
        // A mode change is caught too, on the next look.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        std::thread::sleep(recheck);
        assert!(find(&dirs, "alice").is_err());
    }

    #[test]
    fn missing_file_means_no_number() {
        assert!(find(&file("/nonexistent/phones.toml".into()), "alice")
            .unwrap()
            .is_none());
    }

    #[test]
    fn gecos_field_and_order() {
        let mut accounts = FakeAccounts::default();
        accounts
            .0
            .insert("alice".into(), ("Alice A,,,,+12025550143".into(), vec![]));
        accounts.0.insert("bob".into(), ("Bob,,,".into(), vec![]));
        let gecos: Vec<Box<dyn Directory>> = vec![Box::new(GecosDirectory { field: 4, accounts })];
        assert_eq!(
            find(&gecos, "alice").unwrap().unwrap().phone.e164(),
            "+12025550143"
        );
        assert!(find(&gecos, "bob").unwrap().is_none());
        assert!(find(&gecos, "nobody").unwrap().is_none());

        let d = tempfile::tempdir().unwrap();
        let mut dirs = file(phones_file(d.path(), "alice = \"+12025550199\"\n", 0o644));
        dirs.extend(gecos);
        let found = find(&dirs, "alice").unwrap().unwrap();
        assert_eq!(found.phone.e164(), "+12025550199");
        assert!(found.source.starts_with("file "));
    }
}
