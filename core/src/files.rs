//! Reading files that decide who gets in: the config, secrets, phone lists.
//!
//! The checks run on the open file descriptor (no race between check and
//! read). A file must be owned by root, or by the user running the program
//! (so an unprivileged test or demo can use its own files; under sshd or sudo
//! that user is root).

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::secret::Secret;

/// How strictly a file is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRule {
    /// The main config: no access at all for others, not group-writable.
    Config,
    /// A secret (key, token, password): owner only.
    Secret,
    /// Data that must not be changed by others (phone lists): not group- or
    /// world-writable.
    Data,
}

/// Why a file we rely on cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file could not be opened or read (absent: `NotFound`).
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system answered.
        #[source]
        source: std::io::Error,
    },
    /// Others could change (or, for a secret, read) the file, or it is not
    /// a regular file owned by root: it is refused, not used.
    #[error("{path}: {problem}; fix with: {fix}")]
    Unsafe {
        /// The file.
        path: PathBuf,
        /// What is wrong ("is writable by group or others").
        problem: String,
        /// The command that puts it right ("chmod 644 …").
        fix: String,
    },
}

/// Checks ownership and mode of an already opened file.
pub fn check(path: &Path, meta: &std::fs::Metadata, rule: FileRule) -> Result<(), FileError> {
    let euid = nix::unistd::geteuid().as_raw();
    let quoted = path.display();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(FileError::Unsafe {
            path: path.to_owned(),
            problem: format!("is owned by uid {}, not by root", meta.uid()),
            fix: format!("chown root: {quoted}"),
        });
    }
    let mode = meta.mode() & 0o7777;
    let (bad, wanted) = match rule {
        FileRule::Config => (mode & 0o027, "0600 or 0640"),
        FileRule::Secret => (mode & 0o077, "0600"),
        FileRule::Data => (mode & 0o022, "0644 or stricter"),
    };
    if bad != 0 {
        let what = match rule {
            FileRule::Secret => "is readable or writable by group or others",
            FileRule::Config if mode & 0o007 != 0 => "is accessible to all users",
            _ => "is writable by group or others",
        };
        let fix_mode = match rule {
            FileRule::Config => "640",
            FileRule::Secret => "600",
            FileRule::Data => "644",
        };
        return Err(FileError::Unsafe {
            path: path.to_owned(),
            problem: format!("{what} (mode {mode:04o}; must be {wanted})"),
            fix: format!("chmod {fix_mode} {quoted}"),
        });
    }
    Ok(())
}

/// Reads a text file after checking it against `rule`.
pub fn read_checked(path: &Path, rule: FileRule) -> Result<String, FileError> {
    let bytes = read_bytes_checked(path, rule)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| FileError::Read {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not valid UTF-8"),
    })
}

/// Reads a file's bytes (zeroized when dropped) after checking it.
pub fn read_bytes_checked(path: &Path, rule: FileRule) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let read_err = |source| FileError::Read {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(read_err)?;
    let meta = f.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    check(path, &meta, rule)?;
    // Bounded: nothing we read legitimately comes near this.
    let mut buf = Zeroizing::new(Vec::with_capacity(meta.len().min(1 << 20) as usize));
    f.by_ref()
        .take(4 << 20)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    Ok(buf)
}

/// Reads a secret (token, password) from a root-only file, trimming one
/// trailing newline.
pub fn read_secret(path: &Path) -> Result<Secret, FileError> {
    let text = read_checked(path, FileRule::Secret)?;
    let trimmed = text.strip_suffix('\n').unwrap_or(&text);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    Ok(Secret::new(trimmed.to_owned()))
}

/// A file a long-running process appends lines to (the outbox, the audit
/// file), kept open while its path still names it: one open per line would
/// cost more than writing it. A file moved away or deleted (rotated, or
/// read and removed) is let go, and the path opened again, created 0600.
#[derive(Debug)]
pub struct AppendFile {
    path: PathBuf,
    /// The open file and its device and inode.
    open: Option<(std::fs::File, u64, u64)>,
}

/// Why [`AppendFile::append`] failed.
#[derive(Debug)]
pub enum AppendError {
    /// The path could not be opened or created.
    Open(std::io::Error),
    /// The write failed (the handle is dropped; the next append reopens).
    Write(std::io::Error),
}

impl AppendFile {
    /// Appends to `path`; nothing is opened until the first append.
    pub fn new(path: PathBuf) -> Self {
        AppendFile { path, open: None }
    }

    /// Appends `bytes` in one write (O_APPEND keeps concurrent writers'
    /// lines whole).
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), AppendError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let now = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let same = match (&self.open, now) {
            (Some((_, dev, ino)), Some(now)) => (*dev, *ino) == now,
            _ => false,
        };
        let file = match &mut self.open {
            Some((file, _, _)) if same => file,
            _ => {
                self.open = None;
                let file = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(&self.path)
                    .map_err(AppendError::Open)?;
                let m = file.metadata().map_err(AppendError::Open)?;
                &mut self.open.insert((file, m.dev(), m.ino())).0
            }
        };
        file.write_all(bytes).map_err(|e| {
            self.open = None;
            AppendError::Write(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file_with_mode(dir: &Path, mode: u32) -> PathBuf {
        let p = dir.join(format!("f{mode:o}"));
        std::fs::write(&p, "secret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn modes_are_enforced_per_rule() {
        let d = tempfile::tempdir().unwrap();
        let cases = [
            (0o600, FileRule::Secret, true),
            (0o640, FileRule::Secret, false),
            (0o604, FileRule::Secret, false),
            (0o640, FileRule::Config, true),
            (0o644, FileRule::Config, false),
            (0o660, FileRule::Config, false),
            (0o644, FileRule::Data, true),
            (0o664, FileRule::Data, false),
            (0o646, FileRule::Data, false),
        ];
        for (mode, rule, ok) in cases {
            let p = file_with_mode(d.path(), mode);
            let r = read_checked(&p, rule);
            assert_eq!(r.is_ok(), ok, "mode {mode:o} rule {rule:?}: {r:?}");
            if let Err(e) = r {
                let m = e.to_string();
                assert!(m.contains("chmod"), "{m}");
            }
        }
    }

    #[test]
    fn secret_trims_one_newline() {
        let d = tempfile::tempdir().unwrap();
        let p = file_with_mode(d.path(), 0o600);
        assert_eq!(read_secret(&p).unwrap().expose(), "secret");
    }

    #[test]
    fn an_append_file_follows_its_path_when_the_file_is_moved_or_deleted() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("log.jsonl");
        let mut f = AppendFile::new(path.clone());
        f.append(b"one\n").unwrap();
        f.append(b"two\n").unwrap();
        std::fs::rename(&path, d.path().join("log.1")).unwrap();
        f.append(b"three\n").unwrap();
        std::fs::remove_file(&path).unwrap();
        f.append(b"four\n").unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&d.path().join("log.1")), "one\ntwo\n");
        assert_eq!(read(&path), "four\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut bad = AppendFile::new(d.path().join("no/such/dir/log"));
        assert!(matches!(bad.append(b"x"), Err(AppendError::Open(_))));
    }

    #[test]
    fn missing_file_names_path() {
        let e = read_checked(Path::new("/nonexistent/smsotp.toml"), FileRule::Config).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/smsotp.toml: cannot read"),
            "{e}"
        );
    }
}
