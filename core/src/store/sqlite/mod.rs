//! `SqliteStore`, the embedded default: one SQLite file in WAL mode.
//! Every operation that reads and then writes runs in one `BEGIN IMMEDIATE`
//! transaction, so many sshd processes at once cannot both take the last
//! SMS of a window or both use one code. `sweep.rs` deletes expired rows
//! now and then, from the writes that add rows; [`shared`] (with
//! `commit.rs`) adds the group commit smsotp-radiusd uses. `ops.rs` holds
//! the [`super::Store`] operations in SQL and the host's cache of
//! validated numbers.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::{Step, StoreError};

mod migrate;
mod numbers;
mod ops;
pub mod shared;
mod sweep;

pub use shared::{Committer, SharedStore};

impl Step {
    fn to_db(self) -> i64 {
        match self {
            Step::Code => 0,
            Step::BackupOnly => 1,
            Step::EnrollNumber => 2,
            Step::EnrollCode => 3,
        }
    }

    fn from_db(v: i64) -> Step {
        match v {
            1 => Step::BackupOnly,
            2 => Step::EnrollNumber,
            3 => Step::EnrollCode,
            // Unknown values wait for a code, which nothing matches but
            // the right MAC: the safe reading.
            _ => Step::Code,
        }
    }
}

/// SQLite in WAL mode with a busy timeout.
pub struct SqliteStore {
    conn: Connection,
    path: String,
    busy_timeout: Duration,
    /// Says this process waits for the write lock (none in memory, or if
    /// the file cannot be made).
    wait_signal: Option<WaitSignal>,
    /// When this handle deletes expired rows (see `sweep.rs`).
    sweeper: sweep::Sweeper,
}

/// The layout version, in SQLite's `user_version`.
///
/// 3: `phone`, `backup_code` and `opt_out` tables; challenges carry a step
/// and a pending (enrollment) number.
/// 4: `sms_limit`, the keyed send windows (per number, country, source);
/// a layout-3 store only gains the table, keeping even its pending
/// challenges and windows.
/// 5: `breaker`, the spend breaker's trip; layouts 3 and 4 only gain
/// tables.
/// 6: `sms_count`, the SMS counters per day, provider and country
/// (`store/counters.rs`); layouts 3 to 5 only gain tables.
/// 7: `language`, the language a user reads messages in; layouts 3 to 6
/// only gain tables.
const SCHEMA_VERSION: i64 = 7;

/// WAL pages after which a commit of a short-lived handle (PAM, the admin
/// tool) checkpoints; see [`SqliteStore::init`].
const SHORT_LIVED_CHECKPOINT: i64 = 128;

/// Tables of short-lived state, dropped and rebuilt when the layout
/// changes. The others (`phone`, `backup_code`, `opt_out`, `language`, and `failure`,
/// which holds lockouts) are never dropped: a later layout must migrate
/// them (`ALTER TABLE`, or copy as [`KEEP_FAILURES`] does), and the
/// fixtures in `testdata/` (one per layout, opened by the tests
/// `layout_*_keeps_*`) hold it to that.
const EPHEMERAL_TABLES: &str = "DROP TABLE IF EXISTS challenge; DROP TABLE IF EXISTS sms_sent;
     DROP TABLE IF EXISTS sms_global; DROP TABLE IF EXISTS number_cache;
     DROP TABLE IF EXISTS sms_limit; DROP TABLE IF EXISTS breaker;
     DROP TABLE IF EXISTS sms_count;";

/// Carries the failure counts and lockouts of any earlier layout (every
/// one had `failure (user, count, locked_until)`; layout 1 as a rowid
/// table) into today's table. Layouts up to 2 dropped them on upgrade, so
/// an upgrade unlocked every locked-out user.
const KEEP_FAILURES: &str = "ALTER TABLE failure RENAME TO failure_old;
     CREATE TABLE failure (
         user         TEXT PRIMARY KEY,
         count        INTEGER NOT NULL,
         locked_until INTEGER
     ) WITHOUT ROWID;
     INSERT OR REPLACE INTO failure (user, count, locked_until)
         SELECT user, count, locked_until FROM failure_old;
     DROP TABLE failure_old;";

/// Tables are `WITHOUT ROWID` and carry few indexes: every page a write
/// touches is copied into the WAL, so fewer B-trees means less I/O per
/// login.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS challenge (
    id            BLOB PRIMARY KEY,
    user          TEXT NOT NULL,
    service       TEXT NOT NULL,
    code_mac      BLOB NOT NULL,
    phone_masked  TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    sent_at       INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    attempts_left INTEGER NOT NULL,
    resends_used  INTEGER NOT NULL,
    step          INTEGER NOT NULL DEFAULT 0,
    pending_phone TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sms_sent (
    user TEXT NOT NULL,
    at   INTEGER NOT NULL,
    n    INTEGER NOT NULL,
    PRIMARY KEY (user, at)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sms_global (
    size   INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (size, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sms_limit (
    name   TEXT NOT NULL,
    size   INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (name, size, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS breaker (
    name  TEXT PRIMARY KEY,
    at    INTEGER NOT NULL,
    until INTEGER NOT NULL,
    user  TEXT NOT NULL,
    spent INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sms_count (
    day      INTEGER NOT NULL,
    provider TEXT NOT NULL,
    country  TEXT NOT NULL,
    what     TEXT NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (day, provider, country, what)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS number_cache (
    key    TEXT PRIMARY KEY,
    e164   TEXT NOT NULL,
    region TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS failure (
    user         TEXT PRIMARY KEY,
    count        INTEGER NOT NULL,
    locked_until INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS phone (
    user   TEXT PRIMARY KEY,
    e164   TEXT NOT NULL,
    set_at INTEGER NOT NULL,
    set_by TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS backup_code (
    user       TEXT NOT NULL,
    id         INTEGER NOT NULL,
    tag        BLOB NOT NULL,
    hash       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS opt_out (
    user   TEXT PRIMARY KEY,
    set_at INTEGER NOT NULL,
    set_by TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS language (
    user TEXT PRIMARY KEY,
    lang TEXT NOT NULL
) WITHOUT ROWID;
";

impl SqliteStore {
    /// Opens the store `spec` names (see [`SqliteStore::open`]).
    pub fn open_spec(spec: &crate::config::StoreSpec) -> Result<Self, StoreError> {
        let crate::config::StoreSpec::Sqlite { path, busy_timeout } = spec else {
            return Err(StoreError::Unavailable {
                location: spec.location(),
                source: format!("a {} store is not a SQLite file", spec.kind()).into(),
            });
        };
        Self::open(path, *busy_timeout)
    }

    /// Opens (creating if needed, mode 0600 in a 0700 directory) the store.
    pub fn open(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        let display = path.display().to_string();
        if let Some(dir) = path.parent() {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|source| StoreError::Io {
                        location: display.clone(),
                        source,
                    })?;
            }
        }
        refuse_odd_file(path)?;
        // SQLite creates files with 0644 unless told otherwise by the umask.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        // Never through a symlink, even one planted after the check above.
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW,
        );
        nix::sys::stat::umask(old);
        let conn = conn.map_err(|source| sqlite_error(display.clone(), source))?;
        let mut store = Self::init(conn, display, busy_timeout)?;
        store.wait_signal = WaitSignal::open(path);
        store.drop_old_index();
        Ok(store)
    }

    /// A private in-memory store (tests, benchmarks).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()
            .map_err(|source| sqlite_error(":memory:".into(), source))?;
        Self::init(conn, ":memory:".into(), Duration::from_secs(5))
    }

    fn init(conn: Connection, path: String, busy_timeout: Duration) -> Result<Self, StoreError> {
        let mut s = SqliteStore {
            conn,
            path,
            busy_timeout,
            wait_signal: None,
            sweeper: sweep::Sweeper::new(),
        };
        // Waiting for the write lock: try again every millisecond (SQLite's
        // own handler backs off to 100 ms naps, and a busy smsotp-radiusd
        // frees the lock only for moments; see SharedStore's turn-taking).
        s.set_busy_timeout();
        s.conn.busy_handler(Some(busy_wait)).map_err(|e| s.err(e))?;
        // Every query here goes by key, so its plan never depends on the
        // values bound. Without the query planner stability guarantee
        // SQLite marks some parameters (the `at` of a range, a user
        // compared by `=`) as able to change the plan, and re-parses the
        // statement each time one is bound anew: measured at 8% of
        // smsotp-radiusd's CPU under load, all of it in the send
        // window's read.
        s.conn
            .set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
                true,
            )
            .map_err(|e| s.err(e))?;
        // Small pages: rows are ~150 bytes, and every page a commit touches
        // is written whole to the WAL. Only takes effect on a new file, so a
        // store already at this layout is spared the statement.
        if s.layout_version()? != SCHEMA_VERSION {
            s.conn
                .pragma_update(None, "page_size", 1024)
                .map_err(|e| s.err(e))?;
        }
        // WAL lets readers and one writer proceed together; NORMAL sync is
        // durable across process crashes, which is what matters here.
        if s.path != ":memory:" {
            s.use_wal()?;
        }
        s.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| s.err(e))?;
        if s.path != ":memory:" {
            // Each sshd login is a short-lived process. By default the last
            // connection to close checkpoints and deletes the WAL (several
            // fsyncs per login); keep the WAL and let SQLite's automatic
            // checkpoints (every 1000 pages) do that work instead.
            s.conn
                .set_db_config(
                    rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                    true,
                )
                .map_err(|e| s.err(e))?;
            // A process that opens the store while no other has it open
            // (every sshd login, unless smsotp-radiusd runs on the host)
            // rebuilds SQLite's WAL index by reading every frame written
            // since the last checkpoint, one read each: with SQLite's
            // default of a checkpoint every 1000 pages that was up to 1 M
            // instructions of a login. Checkpointing every
            // SHORT_LIVED_CHECKPOINT pages instead (one login writes ~6)
            // bounds that read, for two fsyncs every ~20 logins. The WAL
            // starts again at the first write after a finished checkpoint
            // in the same process (a login's second write: the code
            // consumed); a fresh process cannot know that the last one
            // finished. smsotp-radiusd turns automatic checkpoints off on
            // its own connection and runs its own.
            s.conn
                .pragma_update(None, "wal_autocheckpoint", SHORT_LIVED_CHECKPOINT)
                .map_err(|e| s.err(e))?;
            let mut persist: std::os::raw::c_int = 1;
            s.conn
                .file_control(
                    Some(rusqlite::MAIN_DB),
                    rusqlite::FileControl::PersistWal(&mut persist),
                )
                .map_err(|e| s.err(e))?;
        }
        s.migrate()?;
        Ok(s)
    }

    /// Creates the tables, or brings those of an older layout to today's:
    /// short-lived state (pending codes, send windows, a cache) is rebuilt,
    /// what is durable (numbers, backup codes, opt-outs, failure counts
    /// and lockouts) is kept.
    fn migrate(&self) -> Result<(), StoreError> {
        let version = self.layout_version()?;
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::Layout {
                location: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        self.write(|tx| {
            // Another process may have done it meanwhile.
            let v: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if v == SCHEMA_VERSION {
                return Ok(());
            }
            if (3..=6).contains(&v) {
                // Layouts 4 to 7 only add tables.
                tx.execute_batch(SCHEMA)?;
                return tx.pragma_update(None, "user_version", SCHEMA_VERSION);
            }
            tx.execute_batch(EPHEMERAL_TABLES)?;
            let has_failures: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master
                   WHERE type = 'table' AND name = 'failure')",
                [],
                |r| r.get(0),
            )?;
            if has_failures {
                tx.execute_batch(KEEP_FAILURES)?;
            }
            tx.execute_batch(SCHEMA)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        })
    }

    /// The layout version the file says it has (`user_version`; 0 for a
    /// new file).
    /// Puts the file in WAL mode (it stays so: every later open finds it
    /// already set and writes nothing). Several processes opening a new
    /// store at once (logins racing on a fresh host) contend for the
    /// switch, and SQLite answers the losers SQLITE_BUSY at once, without
    /// its busy handler; they try again for up to `busy_timeout`.
    fn use_wal(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        loop {
            let r = self
                .conn
                .pragma_query_value(None, "journal_mode", |r| r.get::<_, String>(0))
                .and_then(|mode| {
                    if mode.eq_ignore_ascii_case("wal") {
                        Ok(())
                    } else {
                        self.conn.pragma_update(None, "journal_mode", "WAL")
                    }
                });
            match r {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && started.elapsed() < self.busy_timeout =>
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                r => return r.map_err(|e| self.err(e)),
            }
        }
    }

    fn layout_version(&self) -> Result<i64, StoreError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Stores made by builds before append-mode challenges had ids of their
    /// own carry an index by user that nothing reads any more, and that every
    /// login paid for twice (insert, delete). Dropping it needs no new
    /// layout version: a build that still has it in its schema reads the
    /// same tables without it. Best effort, once the store can say it
    /// waits for the write lock.
    fn drop_old_index(&self) {
        let has = self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master
               WHERE type = 'index' AND name = 'challenge_user')",
            [],
            |r| r.get::<_, bool>(0),
        );
        // Only slower if it stays: a busy store is left for a later open.
        if has.unwrap_or(false) {
            let _ = self.write(|tx| tx.execute_batch("DROP INDEX IF EXISTS challenge_user"));
        }
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        sqlite_error(self.path.clone(), source)
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction or, inside a batch
    /// ([`SharedStore::batched`] keeps one transaction open), in a
    /// savepoint, so a failed step undoes itself and nothing else.
    fn write<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.set_busy_timeout();
        if !self.conn.is_autocommit() {
            return self.in_savepoint(f);
        }
        // `unchecked_transaction` because the connection is shared behind &self;
        // each process has its own connection and uses it from one thread.
        let tx = self
            .saying_we_wait(|| {
                rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            })
            .map_err(|e| self.err(e))?;
        let out = f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// Runs `f` (which takes the write lock) with the busy handler saying
    /// through the [`WaitSignal`] that this process waits, if it does.
    fn saying_we_wait<T>(&self, f: impl FnOnce() -> T) -> T {
        use std::os::fd::AsRawFd;
        let Some(signal) = &self.wait_signal else {
            return f();
        };
        /// Ends the wait however `f` ends: the lock dropped, and no
        /// handle left behind for a later busy handler on this thread.
        struct Done;
        impl Drop for Done {
            fn drop(&mut self) {
                let (fd, held) = WAIT_SIGNAL.with(|w| w.replace((-1, false)));
                if held {
                    WaitSignal::set(fd, false);
                }
            }
        }
        WAIT_SIGNAL.with(|w| w.set((signal.0.as_raw_fd(), false)));
        let _done = Done;
        f()
    }

    fn set_busy_timeout(&self) {
        let ms = u64::try_from(self.busy_timeout.as_millis()).unwrap_or(u64::MAX);
        BUSY_TIMEOUT_MS.with(|t| t.set(ms));
    }

    fn in_savepoint<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let run = |sql: &str| self.conn.prepare_cached(sql)?.execute([]).map(drop);
        run("SAVEPOINT step").map_err(|e| self.err(e))?;
        match f(&self.conn) {
            Ok(v) => {
                run("RELEASE step").map_err(|e| self.err(e))?;
                Ok(v)
            }
            Err(e) => {
                // The transaction itself may be gone (SQLite rolls back the
                // whole of it on some errors): then there is nothing to undo.
                if !self.conn.is_autocommit() {
                    let _ = run("ROLLBACK TO step").and_then(|()| run("RELEASE step"));
                }
                Err(self.err(e))
            }
        }
    }
}

/// SQLite's error as a [`StoreError`], by what the caller can do about it.
fn sqlite_error(location: String, source: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    let code = source.sqlite_error_code();
    let source: super::BackendError = Box::new(source);
    match code {
        Some(C::DatabaseBusy | C::DatabaseLocked) => StoreError::Busy { location, source },
        Some(C::ConstraintViolation) => StoreError::Conflict { location, source },
        Some(C::DatabaseCorrupt | C::NotADatabase) => StoreError::Corrupt {
            location,
            source: Box::new(Damaged(source)),
        },
        Some(C::DiskFull) => StoreError::Unavailable {
            location,
            source: Box::new(Full(source)),
        },
        Some(_) => StoreError::Unavailable { location, source },
        // Not from SQLite itself: a value read back is not what it should
        // be, or the statement is wrong for the layout.
        None => StoreError::Corrupt { location, source },
    }
}

/// SQLite found the file is no database, or a damaged one: what it said,
/// and how the admin recovers (issue #20: a store that is corrupt or not
/// SQLite fails closed, and the message says what to do).
#[derive(Debug)]
struct Damaged(super::BackendError);

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (not a SQLite database, or a damaged one); every login fails until it is \
             fixed: move the file away (keep it for inspection) and the store is recreated \
             empty at the next use; registered numbers, backup codes, opt-outs and lockouts \
             in it are lost unless you restore a backup",
            self.0
        )
    }
}

/// SQLite could not grow the file or its log: what it said, and that
/// logins come back by themselves once there is room.
#[derive(Debug)]
struct Full(super::BackendError);

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; logins fail closed until there is free space on the file system holding \
             the store, then work again with nothing to repair",
            self.0
        )
    }
}

impl std::error::Error for Full {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

impl std::error::Error for Damaged {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

thread_local! {
    /// The busy timeout of the store this thread last opened or wrote
    /// through (SQLite's busy handler gets no context of its own, and runs
    /// on the thread that waits).
    static BUSY_TIMEOUT_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(5_000) };
}

thread_local! {
    /// The wait-signal file of the store this thread writes through (-1:
    /// none), and whether this thread holds its shared lock now.
    static WAIT_SIGNAL: std::cell::Cell<(std::os::fd::RawFd, bool)> = const { std::cell::Cell::new((-1, false)) };
}

/// SQLite's busy handler: `true` to try again after a millisecond's nap,
/// `false` (SQLITE_BUSY) once the busy timeout has passed. While it waits,
/// it says so through the store's [`WaitSignal`].
fn busy_wait(attempts: i32) -> bool {
    let waited_ms = u64::try_from(attempts).unwrap_or(0);
    if waited_ms >= BUSY_TIMEOUT_MS.with(std::cell::Cell::get) {
        return false;
    }
    WAIT_SIGNAL.with(|w| {
        let (fd, held) = w.get();
        if fd >= 0 && !held {
            w.set((fd, WaitSignal::set(fd, true)));
        }
    });
    std::thread::sleep(Duration::from_millis(1));
    true
}

/// Refuses a store path that is a symlink (the store is never opened
/// through one) or anything but a regular file (a FIFO, device or
/// directory), at once and naming it. A missing file is created.
fn refuse_odd_file(path: &Path) -> Result<(), StoreError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let t = meta.file_type();
    let problem = if t.is_symlink() {
        "is a symlink; the store is never opened through a link: point store.path at the real file"
    } else if t.is_file() {
        return Ok(());
    } else {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            "is a FIFO, not a regular file; point store.path at a regular file"
        } else if t.is_dir() {
            "is a directory, not a regular file; point store.path at a file in it"
        } else if t.is_socket() {
            "is a socket, not a regular file; point store.path at a regular file"
        } else {
            "is a device, not a regular file; point store.path at a regular file"
        }
    };
    Err(StoreError::Unavailable {
        location: path.display().to_string(),
        source: problem.into(),
    })
}

/// `<store>-waiting`, a file beside the store on which a process waiting
/// for the store's write lock holds a shared lock (an open-file-description
/// lock, so it is per handle and goes with the handle). smsotp-radiusd
/// keeps the write lock busy almost all the time under load; it leaves it
/// free for a moment when this says someone waits, instead of at fixed
/// times, which would hold up every request in flight for nothing.
struct WaitSignal(std::fs::File);

impl WaitSignal {
    fn open(store: &Path) -> Option<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut path = store.as_os_str().to_owned();
        path.push("-waiting");
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            // Never through a link planted where the file should be.
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .ok()
            .map(WaitSignal)
    }

    fn range(kind: libc::c_int) -> libc::flock {
        libc::flock {
            l_type: kind as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 1,
            l_pid: 0,
        }
    }

    /// Takes (`on`) or drops the shared lock; true if it is held after.
    fn set(fd: std::os::fd::RawFd, on: bool) -> bool {
        let lock = Self::range(if on { libc::F_RDLCK } else { libc::F_UNLCK });
        let done = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_OFD_SETLK(&lock)).is_ok();
        on && done
    }

    /// Whether some handle holds the shared lock (someone waits).
    fn someone_waits(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut probe = Self::range(libc::F_WRLCK);
        match nix::fcntl::fcntl(
            self.0.as_raw_fd(),
            nix::fcntl::FcntlArg::F_OFD_GETLK(&mut probe),
        ) {
            Ok(_) => probe.l_type != libc::F_UNLCK as libc::c_short,
            // Cannot tell: assume someone does.
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests;
