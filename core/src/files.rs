//! Reading files that decide who gets in: the config, secrets, phone lists.
//!
//! Every file is opened without blocking (`O_NONBLOCK`: a FIFO put where a
//! file belongs returns at once instead of hanging the login) and checked
//! on the open descriptor, not the path (no race between check and read):
//! it must be a regular file (a FIFO, device, socket or directory is
//! refused), no larger than its kind's cap ([`FileRule::cap`]), owned by
//! root or by the user running the program (so an unprivileged test or demo
//! can use its own files; under sshd or sudo that user is root), with the
//! mode its kind allows.
//!
//! Secrets and the code key are never read through a symlink
//! (`O_NOFOLLOW`). The config, phone lists and CA bundles may be symlinks
//! (or lie in a directory reached through one) when, as sshd's StrictModes
//! asks, the link and every directory on the path it resolves to are owned
//! by root and not writable by group or others. Files written ([`AppendFile`]: the outbox, the audit file) refuse
//! symlinks too.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::secret::Secret;

/// How strictly a file is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRule {
    /// The main config: no access at all for others, not group-writable.
    Config,
    /// A secret (key, token, password): owner only, never through a symlink.
    Secret,
    /// Data that must not be changed by others (phone lists): not group- or
    /// world-writable.
    Data,
    /// A CA bundle (`ca_file`): as [`FileRule::Data`], with its own cap.
    Certificates,
}

impl FileRule {
    /// The largest file of this kind that is read: config 1 MiB, secret
    /// 64 KiB, phone list 64 MiB, CA bundle 4 MiB. Anything larger is
    /// refused (a wrong path, or something filling the file).
    pub fn cap(self) -> u64 {
        match self {
            FileRule::Config => 1 << 20,
            FileRule::Secret => 64 << 10,
            FileRule::Data => 64 << 20,
            FileRule::Certificates => 4 << 20,
        }
    }

    /// What such a file is, for messages.
    fn noun(self) -> &'static str {
        match self {
            FileRule::Config => "config file",
            FileRule::Secret => "secret or key file",
            FileRule::Data => "phone list",
            FileRule::Certificates => "CA bundle",
        }
    }

    /// Whether a symlink is followed (after [`check_link`]).
    fn follows_links(self) -> bool {
        match self {
            FileRule::Config | FileRule::Data | FileRule::Certificates => true,
            FileRule::Secret => false,
        }
    }
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
    /// Others could change (or, for a secret, read) the file or a link or
    /// directory leading to it, or it is not a regular file, or it is over
    /// its kind's cap: it is refused, not used.
    #[error("{path}: {problem}; fix with: {fix}")]
    Unsafe {
        /// The file (or the link or directory at fault).
        path: PathBuf,
        /// What is wrong ("is writable by group or others").
        problem: String,
        /// The command that puts it right ("chmod 644 …").
        fix: String,
    },
}

/// The owners a file we rely on may have: root, and the user running the
/// program.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// Checks ownership and mode of an already opened file.
pub fn check(path: &Path, meta: &Metadata, rule: FileRule) -> Result<(), FileError> {
    let quoted = path.display();
    if !trusted_owner(meta.uid()) {
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
        FileRule::Data | FileRule::Certificates => (mode & 0o022, "0644 or stricter"),
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
            FileRule::Data | FileRule::Certificates => "644",
        };
        return Err(FileError::Unsafe {
            path: path.to_owned(),
            problem: format!("{what} (mode {mode:04o}; must be {wanted})"),
            fix: format!("chmod {fix_mode} {quoted}"),
        });
    }
    Ok(())
}

/// What a file that is not a regular file is, or `None` for a regular file.
fn not_regular(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_char_device() || t.is_block_device() {
        Some("a device")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_symlink() {
        Some("a symlink")
    } else {
        Some("not a regular file")
    }
}

/// Refuses anything but a regular file, naming what it is.
fn regular(path: &Path, meta: &Metadata) -> Result<(), FileError> {
    match not_regular(meta) {
        None => Ok(()),
        Some(what) => Err(FileError::Unsafe {
            path: path.to_owned(),
            problem: format!("is {what}, not a regular file"),
            fix: "name a regular file here instead".into(),
        }),
    }
}

/// The error for a symlink where none is followed.
fn link_refused(path: &Path, rule: FileRule) -> FileError {
    FileError::Unsafe {
        path: path.to_owned(),
        problem: format!(
            "is a symlink; a {} is never read through a link",
            rule.noun()
        ),
        fix: "point the config at the real file".into(),
    }
}

/// A symlink is followed only when the link and every directory on the
/// path it resolves to are owned by root (or the user running the program)
/// and not writable by group or others, as sshd's StrictModes checks:
/// otherwise whoever can change one of them chooses what is read. Returns
/// the resolved path.
pub fn check_link(path: &Path, link: &Metadata) -> Result<PathBuf, FileError> {
    if !trusted_owner(link.uid()) {
        return Err(FileError::Unsafe {
            path: path.to_owned(),
            problem: format!(
                "is a symlink owned by uid {}; a link is followed only when root owns it",
                link.uid()
            ),
            fix: format!("chown -h root: {}", path.display()),
        });
    }
    let resolved = std::fs::canonicalize(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    check_resolved_dirs(path, &resolved)?;
    Ok(resolved)
}

/// Every directory on `resolved` (what `path`, which goes through a
/// symlink, resolves to) must be owned by root (or us) and not writable by
/// group or others.
fn check_resolved_dirs(path: &Path, resolved: &Path) -> Result<(), FileError> {
    for dir in resolved.ancestors().skip(1) {
        let meta = std::fs::metadata(dir).map_err(|source| FileError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let on_path = format!(
            "is on the path {} resolves to through a symlink ({})",
            path.display(),
            resolved.display()
        );
        if !trusted_owner(meta.uid()) {
            return Err(FileError::Unsafe {
                path: dir.to_owned(),
                problem: format!("{on_path} and is owned by uid {}, not root", meta.uid()),
                fix: format!(
                    "chown root: {}, or point the config at a file in a directory only root can change",
                    dir.display()
                ),
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(FileError::Unsafe {
                path: dir.to_owned(),
                problem: format!(
                    "{on_path} and is writable by group or others (mode {mode:04o})"
                ),
                fix: format!(
                    "chmod go-w {}, or point the config at a file in a directory only root can change",
                    dir.display()
                ),
            });
        }
    }
    Ok(())
}

/// Opens for reading without blocking and never through a final symlink
/// (`O_NOFOLLOW`; `O_CLOEXEC` is std's default). `ELOOP` is the symlink.
fn open_nofollow(path: &Path, rule: FileRule) -> Result<File, FileError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::ELOOP) {
                link_refused(path, rule)
            } else {
                FileError::Read {
                    path: path.to_owned(),
                    source,
                }
            }
        })
}

/// A file opened and checked by [`open_checked`], not read yet.
#[derive(Debug)]
pub struct CheckedFile {
    path: PathBuf,
    rule: FileRule,
    file: File,
    meta: Metadata,
}

impl CheckedFile {
    /// The open file's metadata (from `fstat`).
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// Reads the whole file (zeroized when dropped), refusing it if it
    /// grew past its kind's cap since it was opened.
    pub fn read_bytes(mut self) -> Result<Zeroizing<Vec<u8>>, FileError> {
        let cap = self.rule.cap();
        let mut buf = Zeroizing::new(Vec::with_capacity(self.meta.len().min(cap) as usize));
        (&mut self.file)
            .take(cap + 1)
            .read_to_end(&mut buf)
            .map_err(|source| FileError::Read {
                path: self.path.clone(),
                source,
            })?;
        if buf.len() as u64 > cap {
            return Err(over_cap(&self.path, self.rule, buf.len() as u64));
        }
        Ok(buf)
    }

    /// Reads the whole file as UTF-8 text.
    pub fn read_string(self) -> Result<String, FileError> {
        let path = self.path.clone();
        let bytes = self.read_bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| FileError::Read {
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not valid UTF-8"),
        })
    }
}

fn over_cap(path: &Path, rule: FileRule, size: u64) -> FileError {
    FileError::Unsafe {
        path: path.to_owned(),
        problem: format!(
            "is larger than {}, the most read from a {} (it is {} bytes or more)",
            human_size(rule.cap()),
            rule.noun(),
            size
        ),
        fix: format!(
            "check that {} is the right file; a {} is never that large",
            path.display(),
            rule.noun()
        ),
    }
}

fn human_size(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{} KiB", n >> 10)
    }
}

/// Opens `path` without blocking and checks it against `rule` (a regular
/// file, its cap, owner and mode; a symlink refused or checked by
/// [`check_link`]), all on the open descriptor. A missing file is
/// [`FileError::Read`] with `NotFound`.
pub fn open_checked(path: &Path, rule: FileRule) -> Result<CheckedFile, FileError> {
    let (file, meta) = open_inspected(path, rule)?;
    if meta.len() > rule.cap() {
        return Err(over_cap(path, rule, meta.len()));
    }
    Ok(CheckedFile {
        path: path.to_owned(),
        rule,
        file,
        meta,
    })
}

/// Checks `path` as [`open_checked`] does, except its size, without
/// opening it, and returns its metadata: for files that are looked at, not
/// read (the store, the audit file, by `smsotp doctor`). Not opening
/// matters for the store: closing any descriptor of a SQLite file drops
/// the POSIX locks the process's own connections hold on it.
pub fn inspect(path: &Path, rule: FileRule) -> Result<Metadata, FileError> {
    let target = resolve(path, rule)?;
    let meta = std::fs::symlink_metadata(&target).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    regular(path, &meta)?;
    check(path, &meta, rule)?;
    Ok(meta)
}

/// The path to open for `path`: itself, or where its symlinks lead once
/// [`check_link`] (or, for a directory reached through a link, the same
/// directory check) allows it. A secret that is a symlink is refused.
fn resolve(path: &Path, rule: FileRule) -> Result<PathBuf, FileError> {
    let read_err = |source| FileError::Read {
        path: path.to_owned(),
        source,
    };
    let link = std::fs::symlink_metadata(path).map_err(read_err)?;
    if link.file_type().is_symlink() {
        return if rule.follows_links() {
            check_link(path, &link)
        } else {
            Err(link_refused(path, rule))
        };
    }
    if !rule.follows_links() {
        return Ok(path.to_owned());
    }
    // A directory on the path may be a symlink: then the directories it
    // leads to are checked as a link's are.
    let resolved = std::fs::canonicalize(path).map_err(read_err)?;
    if resolved != std::path::absolute(path).map_err(read_err)? {
        check_resolved_dirs(path, &resolved)?;
    }
    Ok(resolved)
}

fn open_inspected(path: &Path, rule: FileRule) -> Result<(File, Metadata), FileError> {
    let read_err = |source| FileError::Read {
        path: path.to_owned(),
        source,
    };
    // The resolved path is opened with O_NOFOLLOW too: it holds no link,
    // and one planted since is refused.
    let target = resolve(path, rule)?;
    let file = open_nofollow(&target, rule).map_err(|e| match e {
        // Name the path the caller gave, not the resolved one.
        FileError::Read { source, .. } => read_err(source),
        FileError::Unsafe { .. } => link_refused(path, rule),
    })?;
    let meta = file.metadata().map_err(read_err)?;
    regular(path, &meta)?;
    check(path, &meta, rule)?;
    Ok((file, meta))
}

/// Reads a text file after checking it against `rule`.
pub fn read_checked(path: &Path, rule: FileRule) -> Result<String, FileError> {
    open_checked(path, rule)?.read_string()
}

/// Reads a file's bytes (zeroized when dropped) after checking it.
pub fn read_bytes_checked(path: &Path, rule: FileRule) -> Result<Zeroizing<Vec<u8>>, FileError> {
    open_checked(path, rule)?.read_bytes()
}

/// Reads a file the system owns (the system's CA bundle, sshd_config,
/// /etc/pam.d) without blocking: a regular file of at most `cap` bytes,
/// symlinks followed, owner and mode the system's business.
pub fn read_system_file(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = f.metadata()?;
    if let Some(what) = not_regular(&meta) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("is {what}, not a regular file"),
        ));
    }
    let mut buf = Vec::with_capacity(meta.len().min(cap) as usize);
    f.by_ref().take(cap + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("is larger than {}", human_size(cap)),
        ));
    }
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
    /// lines whole). The file is opened without blocking and never through
    /// a symlink, and must be a regular file.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), AppendError> {
        use std::io::Write as _;
        // lstat: a link put in the file's place is noticed and refused.
        let now = std::fs::symlink_metadata(&self.path)
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
                let file = self.open_new().map_err(AppendError::Open)?;
                let m = file.metadata().map_err(AppendError::Open)?;
                &mut self.open.insert((file, m.dev(), m.ino())).0
            }
        };
        file.write_all(bytes).map_err(|e| {
            self.open = None;
            AppendError::Write(e)
        })
    }

    fn open_new(&self) -> std::io::Result<File> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
            .open(&self.path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "is a symlink; it is never written through a link: point the config at the real file",
                    )
                } else {
                    e
                }
            })?;
        if let Some(what) = not_regular(&file.metadata()?) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("is {what}, not a regular file; name a regular file instead"),
            ));
        }
        Ok(file)
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

    /// A directory on a path no one but root (or us) can change, never
    /// under /tmp (world-writable, so never trusted on a symlink's path):
    /// the test binary's own directory when the checkout is in such a
    /// place, else /run (root's, 0755, on every Debian host; CI runs as
    /// root).
    fn trusted_tempdir() -> tempfile::TempDir {
        let safe = |base: &Path| {
            base.ancestors().all(|dir| {
                std::fs::metadata(dir)
                    .is_ok_and(|m| trusted_owner(m.uid()) && m.mode() & 0o022 == 0)
            })
        };
        let exe = std::env::current_exe().unwrap();
        let here = exe.parent().unwrap().to_path_buf();
        let base = [here, PathBuf::from("/run")]
            .into_iter()
            .find(|b| safe(b))
            .expect("neither the test binary's directory nor /run is owned by root (or us) and closed to group and others");
        tempfile::Builder::new()
            .prefix("files-test")
            .tempdir_in(base)
            .unwrap()
    }

    fn mkfifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    /// Runs `f` on a thread and fails the test if it has not returned
    /// within 5 s (a FIFO must never block).
    fn promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("returned within 5 s instead of blocking")
    }

    #[test]
    fn a_fifo_is_refused_at_once_for_every_rule() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("smsotp.toml");
        mkfifo(&fifo);
        for rule in [
            FileRule::Config,
            FileRule::Secret,
            FileRule::Data,
            FileRule::Certificates,
        ] {
            let p = fifo.clone();
            let e = promptly(move || read_checked(&p, rule)).unwrap_err();
            let m = e.to_string();
            assert!(m.contains("is a FIFO, not a regular file"), "{rule:?}: {m}");
            assert!(m.starts_with(&fifo.display().to_string()), "{m}");
        }
        let p = fifo.clone();
        let e = promptly(move || inspect(&p, FileRule::Secret)).unwrap_err();
        assert!(e.to_string().contains("is a FIFO"), "{e}");
        let p = fifo.clone();
        let e = promptly(move || read_system_file(&p, 1 << 20)).unwrap_err();
        assert!(e.to_string().contains("is a FIFO"), "{e}");
        let p = fifo.clone();
        let e = promptly(move || AppendFile::new(p).append(b"x")).unwrap_err();
        assert!(
            format!("{e:?}").contains("FIFO") || format!("{e:?}").contains("No such device"),
            "{e:?}"
        );
    }

    #[test]
    fn a_directory_or_a_device_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = read_checked(d.path(), FileRule::Data).unwrap_err();
        assert!(
            e.to_string().contains("is a directory, not a regular file"),
            "{e}"
        );
        let e = read_checked(Path::new("/dev/null"), FileRule::Data).unwrap_err();
        assert!(
            e.to_string()
                .contains("/dev/null: is a device, not a regular file"),
            "{e}"
        );
        let e = inspect(Path::new("/dev/null"), FileRule::Secret).unwrap_err();
        assert!(e.to_string().contains("is a device"), "{e}");
        let e = AppendFile::new("/dev/null".into())
            .append(b"x")
            .unwrap_err();
        assert!(format!("{e:?}").contains("is a device"), "{e:?}");
    }

    #[test]
    fn secrets_and_append_files_refuse_symlinks() {
        let d = trusted_tempdir();
        let real = file_with_mode(d.path(), 0o600);
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = read_secret(&link).unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");
        assert!(e.contains("point the config at the real file"), "{e}");
        let e = inspect(&link, FileRule::Secret).unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");
        let e = read_bytes_checked(&link, FileRule::Secret).unwrap_err();
        assert!(
            e.to_string().starts_with(&link.display().to_string()),
            "{e}"
        );
        let e = AppendFile::new(link.clone()).append(b"x").unwrap_err();
        assert!(format!("{e:?}").contains("is a symlink"), "{e:?}");
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "secret\n");
        // A link put in place of an append file already open is noticed.
        let path = d.path().join("out");
        let mut f = AppendFile::new(path.clone());
        f.append(b"one\n").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&real, &path).unwrap();
        assert!(f.append(b"two\n").is_err());
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "secret\n");
    }

    #[test]
    fn a_symlinked_config_is_followed_only_through_safe_directories() {
        let d = trusted_tempdir();
        let real_dir = d.path().join("real");
        std::fs::create_dir(&real_dir).unwrap();
        std::fs::set_permissions(&real_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let real = real_dir.join("smsotp.toml");
        std::fs::write(&real, "x = 1\n").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = d.path().join("smsotp.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(read_checked(&link, FileRule::Config).unwrap(), "x = 1\n");
        // A phone list too.
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_checked(&link, FileRule::Data).is_ok());
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();

        for mode in [0o775, 0o757] {
            std::fs::set_permissions(&real_dir, std::fs::Permissions::from_mode(mode)).unwrap();
            for rule in [FileRule::Config, FileRule::Data] {
                let e = read_checked(&link, rule).unwrap_err();
                let FileError::Unsafe { path, problem, fix } = &e else {
                    panic!("{e:?}")
                };
                assert_eq!(path, &real_dir, "{e}");
                assert!(problem.contains("writable by group or others"), "{e}");
                assert!(problem.contains(&link.display().to_string()), "{e}");
                assert!(fix.starts_with("chmod go-w"), "{e}");
            }
        }
        // The file itself in a writable directory, not through a link: as
        // before, only its own owner and mode count.
        assert!(read_checked(&real, FileRule::Config).is_ok());
        std::fs::set_permissions(&real_dir, std::fs::Permissions::from_mode(0o755)).unwrap();

        // A link someone else owns is not followed (needs root to chown).
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::lchown(&link, Some(65534), None).unwrap();
            let e = read_checked(&link, FileRule::Config)
                .unwrap_err()
                .to_string();
            assert!(e.contains("is a symlink owned by uid 65534"), "{e}");
            assert!(e.contains("chown -h root:"), "{e}");
        }
        // A directory on the path that is a link: the directories it
        // leads to are checked the same way.
        let dir_link = d.path().join("etc");
        std::os::unix::fs::symlink(&real_dir, &dir_link).unwrap();
        let via_dir = dir_link.join("smsotp.toml");
        assert!(read_checked(&via_dir, FileRule::Config).is_ok());
        std::fs::set_permissions(&real_dir, std::fs::Permissions::from_mode(0o775)).unwrap();
        let e = read_checked(&via_dir, FileRule::Config).unwrap_err();
        assert!(
            matches!(&e, FileError::Unsafe { path, .. } if path == &real_dir),
            "{e}"
        );
        std::fs::set_permissions(&real_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A dangling link reads as a missing file.
        let dangling = d.path().join("dangling");
        std::os::unix::fs::symlink(d.path().join("nothing"), &dangling).unwrap();
        let e = read_checked(&dangling, FileRule::Data).unwrap_err();
        assert!(
            matches!(&e, FileError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{e:?}"
        );
    }

    #[test]
    fn files_over_their_cap_are_refused_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big.toml");
        std::fs::write(&p, vec![b'#'; (1 << 20) + 1]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = read_checked(&p, FileRule::Config).unwrap_err().to_string();
        assert!(
            e.contains("is larger than 1 MiB, the most read from a config file"),
            "{e}"
        );
        assert!(read_checked(&p, FileRule::Data).is_ok());
        let e = read_secret(&p).unwrap_err().to_string();
        assert!(e.contains("64 KiB"), "{e}");
        // Looking without reading (doctor, for the store) has no cap.
        assert!(inspect(&p, FileRule::Secret).is_ok());
        let e = read_system_file(&p, 1024).unwrap_err().to_string();
        assert!(e.contains("larger than 1 KiB"), "{e}");
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
