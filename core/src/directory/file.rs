//! The TOML phone list (`alice = "+12025550123"` lines), parsed once and
//! kept while the file does not change.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Directory, DirectoryError, Entry};
use crate::config::{ConfigError, Location};
use crate::files::{self, FileRule};

/// `alice = "+15550100123"` lines in a TOML file.
pub struct FileDirectory {
    /// The phone list; a missing file lists nobody.
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
            language: None,
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
        // Opened without blocking and checked (a regular file, its cap,
        // ownership, mode, a symlink's path) whenever the file is looked
        // at, whether it changed or not.
        let file = match files::open_checked(&self.path, FileRule::Data) {
            Ok(f) => f,
            // No file yet means nobody has a number here: not an error.
            Err(files::FileError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                *self.cache() = None;
                return Ok(None);
            }
            Err(e) => return Err(ConfigError::from(e).into()),
        };
        let stamp = Stamp::of(file.metadata());
        if let Some(p) = self.cache().as_mut().filter(|p| p.stamp == stamp) {
            p.checked = std::time::Instant::now();
            return Ok(Some(f(&p.entries)));
        }
        let text = file.read_string().map_err(ConfigError::from)?;
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
pub(super) struct LineIndex(Vec<usize>);

impl LineIndex {
    pub(super) fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex(starts)
    }

    /// 1-based line and column (in characters) of byte `offset`.
    pub(super) fn location(&self, text: &str, offset: usize) -> Location {
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
