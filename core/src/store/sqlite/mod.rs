//! `SqliteStore`, the embedded default: one SQLite file in WAL mode.
//! Every operation that reads and then writes runs in one `BEGIN IMMEDIATE`
//! transaction, so many sshd processes at once cannot both take the last
//! SMS of a window or both use one code. [`shared`] adds the group commit
//! smsotp-radiusd uses.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{
    BackupHash, ChallengeRecord, FailureState, PhoneRecord, SendPermit, SmsWindow, Step, Store,
    StoreError,
};
use crate::clock::{ms, Millis};
use crate::config::Rate;
use crate::otp::ChallengeId;

pub mod shared;

pub use shared::{AfterBatch, Committer, Deferred, SharedStore};

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
}

/// The layout version, in SQLite's `user_version`.
///
/// 3: `phone`, `backup_code` and `opt_out` tables; challenges carry a step
/// and a pending (enrollment) number.
const SCHEMA_VERSION: i64 = 3;

/// Tables of short-lived state, dropped and rebuilt when the layout
/// changes. The others (`phone`, `backup_code`, `opt_out`) hold what admins
/// and users decided and are never dropped: a later layout must migrate
/// them with `ALTER TABLE`.
const EPHEMERAL_TABLES: &str = "DROP TABLE IF EXISTS challenge; DROP TABLE IF EXISTS sms_sent;
     DROP TABLE IF EXISTS sms_global; DROP TABLE IF EXISTS number_cache;
     DROP TABLE IF EXISTS failure;";

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
";

impl SqliteStore {
    /// Opens the store `spec` names (see [`SqliteStore::open`]).
    pub fn open_spec(spec: &crate::config::StoreSpec) -> Result<Self, StoreError> {
        let crate::config::StoreSpec::Sqlite { path, busy_timeout } = spec;
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
        // SQLite creates files with 0644 unless told otherwise by the umask.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let conn = Connection::open(path);
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
        };
        // Waiting for the write lock: try again every millisecond (SQLite's
        // own handler backs off to 100 ms naps, and a busy smsotp-radiusd
        // frees the lock only for moments; see SharedStore's turn-taking).
        s.set_busy_timeout();
        s.conn.busy_handler(Some(busy_wait)).map_err(|e| s.err(e))?;
        // Small pages: rows are ~150 bytes, and every page a commit touches
        // is written whole to the WAL. Only takes effect on a new file.
        s.conn
            .pragma_update(None, "page_size", 1024)
            .map_err(|e| s.err(e))?;
        // WAL lets readers and one writer proceed together; NORMAL sync is
        // durable across process crashes, which is what matters here.
        s.conn
            .pragma_update(None, "journal_mode", "WAL")
            .or_else(|e| if s.path == ":memory:" { Ok(()) } else { Err(e) })
            .map_err(|e| s.err(e))?;
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

    /// Creates the tables, or replaces those of an older layout. The store
    /// holds only short-lived state (pending codes, send windows, failure
    /// counts, a cache), so an older layout is rebuilt rather than migrated.
    fn migrate(&self) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err(e))?;
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
            tx.execute_batch(EPHEMERAL_TABLES)?;
            tx.execute_batch(SCHEMA)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        })
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
        Some(C::DatabaseCorrupt | C::NotADatabase) => StoreError::Corrupt { location, source },
        Some(_) => StoreError::Unavailable { location, source },
        // Not from SQLite itself: a value read back is not what it should
        // be, or the statement is wrong for the layout.
        None => StoreError::Corrupt { location, source },
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

fn row_to_challenge(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChallengeRecord> {
    let id: Vec<u8> = r.get(0)?;
    let mac: Vec<u8> = r.get(3)?;
    let mut code_mac = [0u8; 32];
    if mac.len() == 32 {
        code_mac.copy_from_slice(&mac);
    }
    Ok(ChallengeRecord {
        id: ChallengeId(<[u8; 16]>::try_from(id.as_slice()).unwrap_or([0; 16])),
        user: r.get(1)?,
        service: r.get(2)?,
        code_mac,
        phone_masked: r.get(4)?,
        created_at: r.get(5)?,
        sent_at: r.get(6)?,
        expires_at: r.get(7)?,
        attempts_left: r.get(8)?,
        resends_used: r.get(9)?,
        step: Step::from_db(r.get(10)?),
        pending_phone: r.get(11)?,
    })
}

const SELECT_CHALLENGE: &str =
    "SELECT id, user, service, code_mac, phone_masked, created_at, sent_at,
        expires_at, attempts_left, resends_used, step, pending_phone FROM challenge";

/// Global sends are counted in 60 buckets per window rather than row by
/// row: a busy host's count stays a sum over at most 61 rows.
fn global_bucket_ms(window: Duration) -> Millis {
    (ms(window) / 60).max(1000)
}

/// `user`'s failure row, if any, with a lockout only while it lasts at
/// `now`: the one rule of what "locked out" means.
fn failure_in(
    conn: &Connection,
    user: &str,
    now: Millis,
) -> rusqlite::Result<Option<FailureState>> {
    conn.prepare_cached("SELECT count, locked_until FROM failure WHERE user = ?1")?
        .query_row([user], |r| {
            Ok(FailureState {
                count: r.get(0)?,
                locked_until: r.get::<_, Option<Millis>>(1)?.filter(|&u| u > now),
            })
        })
        .optional()
}

/// `user`'s sends in the window ending at `now`, oldest first: the one
/// rule of what the per-user window counts.
fn window_in(
    conn: &Connection,
    user: &str,
    now: Millis,
    per_user: Rate,
) -> rusqlite::Result<SmsWindow> {
    let span = ms(per_user.window);
    let sends: Vec<(Millis, u32)> = conn
        .prepare_cached("SELECT at, n FROM sms_sent WHERE user = ?1 AND at > ?2 ORDER BY at")?
        .query_map(params![user, now - span], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let sent = sends.iter().map(|&(_, n)| n).sum::<u32>();
    let limit = per_user.count.get();
    // A send counts while `now < at + window`; the next is allowed once
    // enough of the oldest have left that fewer than `limit` remain.
    let next_allowed_at = (sent >= limit).then(|| {
        let must_leave = sent - limit + 1;
        let mut left = 0;
        sends
            .iter()
            .find(|&&(_, n)| {
                left += n;
                left >= must_leave
            })
            .map_or(now, |&(at, _)| at + span)
    });
    Ok(SmsWindow {
        sent,
        next_allowed_at,
    })
}

fn count_user_sends(tx: &Connection, user: &str, since: Millis) -> rusqlite::Result<u32> {
    tx.prepare_cached("SELECT COALESCE(SUM(n), 0) FROM sms_sent WHERE user = ?1 AND at > ?2")?
        .query_row(params![user, since], |r| r.get(0))
}

/// The checks and bookkeeping of one SMS, inside a write transaction.
fn reserve_in(
    tx: &Connection,
    user: &str,
    now: Millis,
    per_user: Rate,
    global: Rate,
) -> rusqlite::Result<SendPermit> {
    if count_user_sends(tx, user, now - ms(per_user.window))? >= per_user.count.get() {
        return Ok(SendPermit::UserLimit);
    }
    let size = global_bucket_ms(global.window);
    let oldest = (now - ms(global.window)) / size;
    let n_all: u32 = tx
        .prepare_cached(
            "SELECT COALESCE(SUM(count), 0) FROM sms_global WHERE size = ?1 AND bucket > ?2",
        )?
        .query_row(params![size, oldest], |r| r.get(0))?;
    if n_all >= global.count.get() {
        return Ok(SendPermit::GlobalLimit);
    }
    tx.prepare_cached(
        "INSERT INTO sms_sent (user, at, n) VALUES (?1, ?2, 1)
         ON CONFLICT(user, at) DO UPDATE SET n = n + 1",
    )?
    .execute(params![user, now])?;
    tx.prepare_cached(
        "INSERT INTO sms_global (size, bucket, count) VALUES (?1, ?2, 1)
         ON CONFLICT(size, bucket) DO UPDATE SET count = count + 1",
    )?
    .execute(params![size, now / size])?;
    Ok(SendPermit::Granted)
}

/// Inserts `c`. A challenge with its id is replaced only if it is the
/// same user's for the same service (a [`crate::otp::OtpKey::login_id`]
/// reused); any other is a constraint error, as for a plain insert.
fn insert_in(conn: &Connection, c: &ChallengeRecord) -> rusqlite::Result<()> {
    let n = conn
        .prepare_cached(
            "INSERT INTO challenge (id, user, service, code_mac, phone_masked, created_at,
               sent_at, expires_at, attempts_left, resends_used, step, pending_phone)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT(id) DO UPDATE SET code_mac = excluded.code_mac,
               phone_masked = excluded.phone_masked, created_at = excluded.created_at,
               sent_at = excluded.sent_at, expires_at = excluded.expires_at,
               attempts_left = excluded.attempts_left, resends_used = excluded.resends_used,
               step = excluded.step, pending_phone = excluded.pending_phone
             WHERE challenge.user = excluded.user AND challenge.service = excluded.service",
        )?
        .execute(params![
            &c.id.0[..],
            c.user,
            c.service,
            &c.code_mac[..],
            c.phone_masked,
            c.created_at,
            c.sent_at,
            c.expires_at,
            c.attempts_left,
            c.resends_used,
            c.step.to_db(),
            c.pending_phone
        ])?;
    if n == 1 {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY),
            Some("challenge id already used by another login".into()),
        ))
    }
}

impl Store for SqliteStore {
    fn locked_until(&self, user: &str, now: Millis) -> Result<Option<Millis>, StoreError> {
        Ok(self.failures(user, now)?.locked_until)
    }

    fn record_failure(
        &self,
        user: &str,
        now: Millis,
        lockout_after: u32,
        lockout: Duration,
    ) -> Result<FailureState, StoreError> {
        self.write(|tx| {
            let prev: Option<(u32, Option<Millis>)> = tx
                .prepare_cached("SELECT count, locked_until FROM failure WHERE user = ?1")?
                .query_row([user], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            // A lockout that has ended starts a fresh count.
            let count = match prev {
                Some((_, Some(until))) if until <= now => 1,
                Some((c, _)) => c.saturating_add(1),
                None => 1,
            };
            let locked_until = if count >= lockout_after {
                Some(now + ms(lockout))
            } else {
                None
            };
            tx.prepare_cached(
                "INSERT INTO failure (user, count, locked_until) VALUES (?1, ?2, ?3)
                 ON CONFLICT(user) DO UPDATE SET count = ?2, locked_until = ?3",
            )?
            .execute(params![user, count, locked_until])?;
            Ok(FailureState {
                count,
                locked_until,
            })
        })
    }

    fn clear_failures(&self, user: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM failure WHERE user = ?1")?
                .execute([user])
                .map(drop)
        })
    }

    fn unlock(&self, user: &str) -> Result<(), StoreError> {
        self.clear_failures(user)
    }

    fn failures(&self, user: &str, now: Millis) -> Result<FailureState, StoreError> {
        Ok(failure_in(&self.conn, user, now)
            .map_err(|e| self.err(e))?
            .unwrap_or_default())
    }

    fn sms_window(&self, user: &str, now: Millis, per_user: Rate) -> Result<SmsWindow, StoreError> {
        window_in(&self.conn, user, now, per_user).map_err(|e| self.err(e))
    }

    fn clear_sms_window(
        &self,
        user: &str,
        now: Millis,
        window: Duration,
    ) -> Result<u32, StoreError> {
        self.write(|tx| {
            let counted = count_user_sends(tx, user, now - ms(window))?;
            tx.prepare_cached("DELETE FROM sms_sent WHERE user = ?1")?
                .execute([user])?;
            Ok(counted)
        })
    }

    fn reserve_sms(
        &self,
        user: &str,
        now: Millis,
        per_user: Rate,
        global: Rate,
    ) -> Result<SendPermit, StoreError> {
        self.write(|tx| reserve_in(tx, user, now, per_user, global))
    }

    fn insert_challenge(&self, c: &ChallengeRecord) -> Result<(), StoreError> {
        insert_in(&self.conn, c).map_err(|e| self.err(e))
    }

    fn start_challenge(
        &self,
        c: &ChallengeRecord,
        per_user: Rate,
        global: Rate,
    ) -> Result<SendPermit, StoreError> {
        self.write(|tx| {
            let permit = reserve_in(tx, &c.user, c.created_at, per_user, global)?;
            if permit == SendPermit::Granted {
                insert_in(tx, c)?;
            }
            Ok(permit)
        })
    }

    fn challenge(&self, id: &ChallengeId) -> Result<Option<ChallengeRecord>, StoreError> {
        self.conn
            .prepare_cached(&format!("{SELECT_CHALLENGE} WHERE id = ?1"))
            .and_then(|mut st| st.query_row([&id.0[..]], row_to_challenge).optional())
            .map_err(|e| self.err(e))
    }

    fn replace_code(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        sent_at: Millis,
        expires_at: Millis,
        attempts_left: u32,
        resends_used: u32,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            tx.prepare_cached(
                "UPDATE challenge SET code_mac = ?2, sent_at = ?3, expires_at = ?4,
                   attempts_left = ?5, resends_used = ?6 WHERE id = ?1",
            )?
            .execute(params![
                &id.0[..],
                &code_mac[..],
                sent_at,
                expires_at,
                attempts_left,
                resends_used
            ])
            .map(|n| n == 1)
        })
    }

    fn wrong_attempt(&self, id: &ChallengeId) -> Result<Option<u32>, StoreError> {
        let hex = &id.0[..];
        self.write(|tx| {
            let left: Option<u32> = tx
                .prepare_cached("SELECT attempts_left FROM challenge WHERE id = ?1")?
                .query_row([hex], |r| r.get(0))
                .optional()?;
            let Some(left) = left else { return Ok(None) };
            let left = left.saturating_sub(1);
            if left == 0 {
                tx.prepare_cached("DELETE FROM challenge WHERE id = ?1")?
                    .execute([hex])?;
            } else {
                tx.prepare_cached("UPDATE challenge SET attempts_left = ?2 WHERE id = ?1")?
                    .execute(params![hex, left])?;
            }
            Ok(Some(left))
        })
    }

    fn consume(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        user: &str,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let n = tx
                .prepare_cached("DELETE FROM challenge WHERE id = ?1 AND code_mac = ?2")?
                .execute(params![&id.0[..], &code_mac[..]])?;
            if n == 1 {
                tx.prepare_cached("DELETE FROM failure WHERE user = ?1")?
                    .execute([user])?;
            }
            Ok(n == 1)
        })
    }

    fn consume_code(
        &self,
        id: &ChallengeId,
        user: &str,
        service: &str,
        code_mac: &[u8; 32],
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        self.write(|tx| {
            let rec = tx
                .prepare_cached(
                    "SELECT user = ?2 AND service = ?3 AND step = ?4 AND expires_at > ?5,
                       code_mac, phone_masked FROM challenge WHERE id = ?1",
                )?
                .query_row(
                    params![&id.0[..], user, service, Step::Code.to_db(), now],
                    |r| {
                        let usable: bool = r.get(0)?;
                        let mac = r.get_ref(1)?.as_blob()?;
                        if usable && crate::otp::macs_equal(mac, code_mac) {
                            r.get::<_, String>(2).map(Some)
                        } else {
                            Ok(None)
                        }
                    },
                )
                .optional()?
                .flatten();
            let Some(masked) = rec else { return Ok(None) };
            if let Some(failures) = failure_in(tx, user, now)? {
                if failures.locked_until.is_some() {
                    return Ok(None);
                }
                tx.prepare_cached("DELETE FROM failure WHERE user = ?1")?
                    .execute([user])?;
            }
            tx.prepare_cached("DELETE FROM challenge WHERE id = ?1")?
                .execute([&id.0[..]])?;
            Ok(Some(masked))
        })
    }

    fn delete_challenge(&self, id: &ChallengeId) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM challenge WHERE id = ?1")?
                .execute([&id.0[..]])
                .map(drop)
        })
    }

    fn withdraw(&self, id: &ChallengeId, code_mac: &[u8; 32]) -> Result<bool, StoreError> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM challenge WHERE id = ?1 AND code_mac = ?2")?
                .execute(params![&id.0[..], &code_mac[..]])
                .map(|n| n == 1)
        })
    }

    fn cached_number(&self, key: &str) -> Result<Option<(String, Option<String>)>, StoreError> {
        self.conn
            .prepare_cached("SELECT e164, region FROM number_cache WHERE key = ?1")
            .and_then(|mut st| {
                st.query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| self.err(e))
    }

    fn cache_number(&self, key: &str, e164: &str, region: Option<&str>) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO number_cache (key, e164, region) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![key, e164, region])
            .map(drop)
        })
    }

    fn phone(&self, user: &str) -> Result<Option<PhoneRecord>, StoreError> {
        self.conn
            .prepare_cached("SELECT e164, set_at, set_by FROM phone WHERE user = ?1")
            .and_then(|mut st| {
                st.query_row([user], |r| {
                    Ok(PhoneRecord {
                        e164: r.get(0)?,
                        set_at: r.get(1)?,
                        set_by: r.get(2)?,
                    })
                })
                .optional()
            })
            .map_err(|e| self.err(e))
    }

    fn set_phone(&self, user: &str, rec: &PhoneRecord) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO phone (user, e164, set_at, set_by) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(user) DO UPDATE SET e164 = ?2, set_at = ?3, set_by = ?4",
            )?
            .execute(params![user, rec.e164, rec.set_at, rec.set_by])
            .map(drop)
        })
    }

    fn clear_phone(&self, user: &str) -> Result<bool, StoreError> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM phone WHERE user = ?1")?
                .execute([user])
                .map(|n| n > 0)
        })
    }

    fn enroll_number(
        &self,
        id: &ChallengeId,
        e164: &str,
        code_mac: &[u8; 32],
        sent_at: Millis,
        expires_at: Millis,
        attempts_left: u32,
    ) -> Result<bool, StoreError> {
        let masked = crate::phone::mask_raw(e164);
        self.write(|tx| {
            tx.prepare_cached(
                "UPDATE challenge SET step = ?2, pending_phone = ?3, code_mac = ?4,
                   phone_masked = ?5, sent_at = ?6, expires_at = ?7, attempts_left = ?8
                 WHERE id = ?1 AND step = ?9",
            )?
            .execute(params![
                &id.0[..],
                Step::EnrollCode.to_db(),
                e164,
                &code_mac[..],
                masked,
                sent_at,
                expires_at,
                attempts_left,
                Step::EnrollNumber.to_db()
            ])
            .map(|n| n == 1)
        })
    }

    fn complete_enrollment(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        user: &str,
        at: Millis,
        set_by: &str,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let pending: Option<Option<String>> = tx
                .prepare_cached(
                    "SELECT pending_phone FROM challenge
                     WHERE id = ?1 AND code_mac = ?2 AND user = ?3 AND step = ?4",
                )?
                .query_row(
                    params![&id.0[..], &code_mac[..], user, Step::EnrollCode.to_db()],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(Some(e164)) = pending else {
                return Ok(false);
            };
            tx.prepare_cached("DELETE FROM challenge WHERE id = ?1")?
                .execute([&id.0[..]])?;
            tx.prepare_cached("DELETE FROM failure WHERE user = ?1")?
                .execute([user])?;
            // A number registered meanwhile (by an admin) stays.
            tx.prepare_cached(
                "INSERT INTO phone (user, e164, set_at, set_by) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(user) DO NOTHING",
            )?
            .execute(params![user, e164, at, set_by])?;
            Ok(true)
        })
    }

    fn set_step(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        step: Step,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            tx.prepare_cached("UPDATE challenge SET step = ?3 WHERE id = ?1 AND code_mac = ?2")?
                .execute(params![&id.0[..], &code_mac[..], step.to_db()])
                .map(|n| n == 1)
        })
    }

    fn replace_backup_codes(
        &self,
        user: &str,
        codes: &[BackupHash],
        at: Millis,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM backup_code WHERE user = ?1")?
                .execute([user])?;
            for (i, c) in codes.iter().enumerate() {
                tx.prepare_cached(
                    "INSERT INTO backup_code (user, id, tag, hash, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![user, i as i64 + 1, &c.tag[..], c.hash, at])?;
            }
            Ok(())
        })
    }

    fn backup_candidates(&self, user: &str, tag: &[u8; 8]) -> Result<Vec<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT hash FROM backup_code WHERE user = ?1 AND tag = ?2")
            .and_then(|mut st| {
                st.query_map(params![user, &tag[..]], |r| r.get(0))?
                    .collect()
            })
            .map_err(|e| self.err(e))
    }

    fn consume_backup_code(
        &self,
        user: &str,
        hash: &str,
        challenge: Option<&ChallengeId>,
    ) -> Result<Option<u32>, StoreError> {
        self.write(|tx| {
            let n = tx
                .prepare_cached("DELETE FROM backup_code WHERE user = ?1 AND hash = ?2")?
                .execute(params![user, hash])?;
            if n != 1 {
                return Ok(None);
            }
            tx.prepare_cached("DELETE FROM failure WHERE user = ?1")?
                .execute([user])?;
            if let Some(c) = challenge {
                tx.prepare_cached("DELETE FROM challenge WHERE id = ?1")?
                    .execute([&c.0[..]])?;
            }
            tx.prepare_cached("SELECT COUNT(*) FROM backup_code WHERE user = ?1")?
                .query_row([user], |r| r.get(0))
                .map(Some)
        })
    }

    fn backup_codes_left(&self, user: &str) -> Result<u32, StoreError> {
        self.conn
            .prepare_cached("SELECT COUNT(*) FROM backup_code WHERE user = ?1")
            .and_then(|mut st| st.query_row([user], |r| r.get(0)))
            .map_err(|e| self.err(e))
    }

    fn revoke_backup_codes(&self, user: &str) -> Result<u32, StoreError> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM backup_code WHERE user = ?1")?
                .execute([user])
                .map(|n| n as u32)
        })
    }

    fn set_opt_out(&self, user: &str, set: Option<(&str, Millis)>) -> Result<(), StoreError> {
        self.write(|tx| match set {
            Some((by, at)) => tx
                .prepare_cached(
                    "INSERT INTO opt_out (user, set_at, set_by) VALUES (?1, ?2, ?3)
                     ON CONFLICT(user) DO UPDATE SET set_at = ?2, set_by = ?3",
                )?
                .execute(params![user, at, by])
                .map(drop),
            None => tx
                .prepare_cached("DELETE FROM opt_out WHERE user = ?1")?
                .execute([user])
                .map(drop),
        })
    }

    fn opt_out(&self, user: &str) -> Result<Option<(String, Millis)>, StoreError> {
        self.conn
            .prepare_cached("SELECT set_by, set_at FROM opt_out WHERE user = ?1")
            .and_then(|mut st| {
                st.query_row([user], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| self.err(e))
    }

    fn opted_out_users(&self) -> Result<Vec<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT user FROM opt_out ORDER BY user")
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
            .map_err(|e| self.err(e))
    }

    fn purge(&self, now: Millis, keep: Duration) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute("DELETE FROM challenge WHERE expires_at <= ?1", [now])?;
            tx.execute("DELETE FROM sms_sent WHERE at <= ?1", [now - ms(keep)])?;
            // Buckets hold their start / size; anything older than `keep`
            // (the longest window) counts for nothing.
            tx.execute(
                "DELETE FROM sms_global WHERE (bucket + 1) * size <= ?1",
                [now - ms(keep)],
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn number_cache_round_trip() {
        let s = SqliteStore::open_in_memory().unwrap();
        let cache = StoreCache(&s);
        assert_eq!(cache.get("k"), None);
        cache.put("k", "+12025550143", Some("US"));
        cache.put("k", "+12025550143", Some("US"));
        assert_eq!(
            cache.get("k"),
            Some(("+12025550143".into(), Some("US".into())))
        );
    }

    use super::*;
    use crate::phone::NumberCache;
    use crate::store::StoreCache;
    use std::num::NonZeroU32;

    pub(super) fn rate(n: u32, secs: u64) -> Rate {
        Rate {
            count: NonZeroU32::new(n).unwrap(),
            window: Duration::from_secs(secs),
        }
    }

    pub(super) fn record(id: u8, user: &str) -> ChallengeRecord {
        ChallengeRecord {
            id: ChallengeId([id; 16]),
            user: user.into(),
            service: "sshd".into(),
            code_mac: [id; 32],
            phone_masked: "******0143".into(),
            created_at: 1_000,
            sent_at: 1_000,
            expires_at: 301_000,
            attempts_left: 3,
            resends_used: 0,
            step: Step::Code,
            pending_phone: None,
        }
    }

    #[test]
    fn the_configured_store_opens_as_a_sqlite_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("sub").join("state.db");
        let spec = crate::config::StoreSpec::Sqlite {
            path: path.clone(),
            busy_timeout: Duration::from_secs(5),
        };
        let s = crate::store::open(&spec).unwrap();
        let rec = PhoneRecord {
            e164: "+12025550143".into(),
            set_at: 1,
            set_by: "admin:root".into(),
        };
        s.set_phone("alice", &rec).unwrap();
        let other = SqliteStore::open(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(other.phone("alice").unwrap(), Some(rec));
    }

    #[test]
    fn sqlite_errors_become_backend_neutral_cases() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.db");
        std::fs::write(&p, vec![b'x'; 4096]).unwrap();
        let e = SqliteStore::open(&p, Duration::from_secs(1))
            .err()
            .expect("garbage opened as a store");
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
        assert!(e
            .to_string()
            .starts_with(&format!("state store {}: ", p.display())));
    }

    #[test]
    fn per_user_and_global_windows() {
        let s = SqliteStore::open_in_memory().unwrap();
        let (user, global) = (rate(2, 3600), rate(3, 3600));
        assert_eq!(
            s.reserve_sms("alice", 0, user, global).unwrap(),
            SendPermit::Granted
        );
        assert_eq!(
            s.reserve_sms("alice", 1, user, global).unwrap(),
            SendPermit::Granted
        );
        assert_eq!(
            s.reserve_sms("alice", 2, user, global).unwrap(),
            SendPermit::UserLimit
        );
        assert_eq!(
            s.reserve_sms("bob", 3, user, global).unwrap(),
            SendPermit::Granted
        );
        assert_eq!(
            s.reserve_sms("carol", 4, user, global).unwrap(),
            SendPermit::GlobalLimit
        );
        // The window slides: an hour after the first sends, they no longer count.
        let later = 3_600_001;
        assert_eq!(
            s.reserve_sms("alice", later, user, global).unwrap(),
            SendPermit::Granted
        );
    }

    #[test]
    fn sms_window_counts_the_user_and_says_when_the_next_is_allowed() {
        let s = SqliteStore::open_in_memory().unwrap();
        let (user, global) = (rate(3, 3600), rate(100, 3600));
        let hour = 3_600_000;
        assert_eq!(
            s.sms_window("alice", 0, user).unwrap(),
            SmsWindow::default()
        );
        // Two sends in the same millisecond share a row.
        for at in [1_000, 1_000, 5_000] {
            s.reserve_sms("alice", at, user, global).unwrap();
        }
        s.reserve_sms("bob", 6_000, user, global).unwrap();
        assert_eq!(
            s.sms_window("alice", 10_000, user).unwrap(),
            SmsWindow {
                sent: 3,
                next_allowed_at: Some(1_000 + hour)
            }
        );
        // Below the limit: a count and no wait.
        assert_eq!(
            s.sms_window("alice", 10_000, rate(4, 3600)).unwrap(),
            SmsWindow {
                sent: 3,
                next_allowed_at: None
            }
        );
        // A limit of 1 must wait for the newest send to leave.
        assert_eq!(
            s.sms_window("alice", 10_000, rate(1, 3600))
                .unwrap()
                .next_allowed_at,
            Some(5_000 + hour)
        );
        // At that instant the first two have left, and the store agrees.
        let w = s.sms_window("alice", 1_000 + hour, user).unwrap();
        assert_eq!(
            w,
            SmsWindow {
                sent: 1,
                next_allowed_at: None
            }
        );
        assert_eq!(
            s.reserve_sms("alice", 1_000 + hour, user, global).unwrap(),
            SendPermit::Granted
        );
        assert_eq!(s.sms_window("bob", 10_000, user).unwrap().sent, 1);
    }

    #[test]
    fn clearing_the_window_lets_the_user_send_again_and_spares_others() {
        let s = SqliteStore::open_in_memory().unwrap();
        let (user, global) = (rate(2, 3600), rate(5, 3600));
        for at in [1, 2] {
            s.reserve_sms("alice", at, user, global).unwrap();
        }
        s.reserve_sms("bob", 3, user, global).unwrap();
        assert_eq!(
            s.reserve_sms("alice", 4, user, global).unwrap(),
            SendPermit::UserLimit
        );
        assert_eq!(
            s.clear_sms_window("alice", 5, Duration::from_secs(3600))
                .unwrap(),
            2
        );
        assert_eq!(
            s.sms_window("alice", 5, user).unwrap(),
            SmsWindow::default()
        );
        assert_eq!(s.sms_window("bob", 5, user).unwrap().sent, 1);
        assert_eq!(
            s.reserve_sms("alice", 6, user, global).unwrap(),
            SendPermit::Granted
        );
        // The global window still holds the cleared sends: 2 + 1 + 1 of 5.
        s.reserve_sms("carol", 7, user, global).unwrap();
        assert_eq!(
            s.reserve_sms("dave", 8, user, global).unwrap(),
            SendPermit::GlobalLimit
        );
        // Nothing left to clear.
        assert_eq!(
            s.clear_sms_window("erin", 9, Duration::from_secs(3600))
                .unwrap(),
            0
        );
    }

    #[test]
    fn lockout_after_n_failures_and_its_end() {
        let s = SqliteStore::open_in_memory().unwrap();
        let lock = Duration::from_secs(60);
        assert_eq!(s.record_failure("alice", 0, 3, lock).unwrap().count, 1);
        assert_eq!(
            s.record_failure("alice", 1, 3, lock).unwrap().locked_until,
            None
        );
        let st = s.record_failure("alice", 2, 3, lock).unwrap();
        assert_eq!(
            st,
            FailureState {
                count: 3,
                locked_until: Some(60_002)
            }
        );
        assert_eq!(s.locked_until("alice", 30_000).unwrap(), Some(60_002));
        assert_eq!(s.locked_until("alice", 60_002).unwrap(), None);
        // After the lockout, counting starts over.
        assert_eq!(s.record_failure("alice", 70_000, 3, lock).unwrap().count, 1);
        s.clear_failures("alice").unwrap();
        assert_eq!(
            s.failures("alice", 70_000).unwrap(),
            FailureState::default()
        );
    }

    #[test]
    fn wrong_attempts_count_down_and_delete() {
        let s = SqliteStore::open_in_memory().unwrap();
        let c = record(1, "alice");
        s.insert_challenge(&c).unwrap();
        assert_eq!(s.challenge(&c.id).unwrap().unwrap(), c);
        assert_eq!(s.wrong_attempt(&c.id).unwrap(), Some(2));
        assert_eq!(s.wrong_attempt(&c.id).unwrap(), Some(1));
        assert_eq!(s.wrong_attempt(&c.id).unwrap(), Some(0));
        assert_eq!(s.challenge(&c.id).unwrap(), None);
        assert_eq!(s.wrong_attempt(&c.id).unwrap(), None);
    }

    #[test]
    fn consume_succeeds_once_and_only_for_the_current_code() {
        let s = SqliteStore::open_in_memory().unwrap();
        let c = record(2, "alice");
        s.insert_challenge(&c).unwrap();
        assert!(!s.consume(&c.id, &[9; 32], "alice").unwrap());
        assert!(s
            .replace_code(&c.id, &[5; 32], 2_000, 302_000, 3, 1)
            .unwrap());
        assert!(
            !s.consume(&c.id, &c.code_mac, "alice").unwrap(),
            "old code after resend"
        );
        assert!(s.consume(&c.id, &[5; 32], "alice").unwrap());
        assert!(!s.consume(&c.id, &[5; 32], "alice").unwrap(), "second use");
    }

    #[test]
    fn consume_code_takes_only_a_usable_challenge_and_once() {
        let s = SqliteStore::open_in_memory().unwrap();
        let c = record(4, "alice");
        s.insert_challenge(&c).unwrap();
        let mut other = record(5, "alice");
        other.step = Step::EnrollCode;
        s.insert_challenge(&other).unwrap();
        let lock = Duration::from_secs(60);
        let take = |id: &ChallengeId, user: &str, service: &str, mac: &[u8; 32], now: Millis| {
            s.consume_code(id, user, service, mac, now).unwrap()
        };
        // Each condition refuses on its own, and leaves the challenge be.
        assert_eq!(take(&c.id, "alice", "sshd", &[9; 32], 2_000), None, "mac");
        assert_eq!(take(&c.id, "bob", "sshd", &c.code_mac, 2_000), None, "user");
        assert_eq!(
            take(&c.id, "alice", "sudo", &c.code_mac, 2_000),
            None,
            "service"
        );
        assert_eq!(
            take(&c.id, "alice", "sshd", &c.code_mac, 301_000),
            None,
            "expired"
        );
        let enroll = (&other.id, &other.code_mac);
        assert_eq!(
            take(enroll.0, "alice", "sshd", enroll.1, 2_000),
            None,
            "step"
        );
        s.record_failure("alice", 2_000, 1, lock).unwrap();
        assert_eq!(
            take(&c.id, "alice", "sshd", &c.code_mac, 3_000),
            None,
            "locked"
        );
        assert_eq!(s.challenge(&c.id).unwrap().as_ref(), Some(&c));
        assert_eq!(s.locked_until("alice", 3_000).unwrap(), Some(62_000));
        // Once the lockout has ended, the right code is taken, the
        // failure count cleared, and the code is used up.
        assert_eq!(
            take(&c.id, "alice", "sshd", &c.code_mac, 62_000).as_deref(),
            Some("******0143")
        );
        assert_eq!(s.challenge(&c.id).unwrap(), None);
        assert_eq!(
            s.failures("alice", 62_000).unwrap(),
            FailureState::default()
        );
        assert_eq!(
            take(&c.id, "alice", "sshd", &c.code_mac, 62_000),
            None,
            "reuse"
        );
        assert!(s.challenge(&other.id).unwrap().is_some());
    }

    #[test]
    fn file_store_is_private_and_shared_between_connections() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state/state.db");
        let a = SqliteStore::open(&p, Duration::from_secs(5)).unwrap();
        let b = SqliteStore::open(&p, Duration::from_secs(5)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(p.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        let c = record(3, "alice");
        a.insert_challenge(&c).unwrap();
        assert!(b.consume(&c.id, &c.code_mac, "alice").unwrap());
        assert!(!a.consume(&c.id, &c.code_mac, "alice").unwrap());
    }

    #[test]
    fn concurrent_processes_never_exceed_the_window() {
        // Eight connections (as eight sshd processes would have) race for a
        // window of 10 sends: exactly 10 are granted.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.db");
        drop(SqliteStore::open(&p, Duration::from_secs(10)).unwrap());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || {
                    let s = SqliteStore::open(&p, Duration::from_secs(10)).unwrap();
                    (0..5)
                        .filter(|i| {
                            s.reserve_sms("alice", *i, rate(10, 3600), rate(100, 3600))
                                .unwrap()
                                == SendPermit::Granted
                        })
                        .count()
                })
            })
            .collect();
        let granted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(granted, 10);
    }

    #[test]
    fn a_newer_challenge_of_the_login_replaces_it_but_never_another_logins() {
        let s = SqliteStore::open_in_memory().unwrap();
        let a = record(6, "alice");
        s.insert_challenge(&a).unwrap();
        let mut bob = record(6, "bob");
        bob.code_mac = [1; 32];
        assert!(s.insert_challenge(&bob).is_err(), "another user's id");
        let mut sudo = record(6, "alice");
        sudo.service = "sudo".into();
        assert!(s.insert_challenge(&sudo).is_err(), "another service's id");
        assert_eq!(s.challenge(&a.id).unwrap().as_ref(), Some(&a));
        // A newer challenge of the same login takes the id; what the older
        // request clears up after itself leaves it be.
        let mut newer = record(6, "alice");
        newer.code_mac = [2; 32];
        newer.created_at += 10;
        s.start_challenge(&newer, rate(10, 3600), rate(10, 3600))
            .unwrap();
        assert!(!s.set_step(&a.id, &a.code_mac, Step::BackupOnly).unwrap());
        assert!(!s.withdraw(&a.id, &a.code_mac).unwrap());
        assert_eq!(s.challenge(&a.id).unwrap().as_ref(), Some(&newer));
        assert!(s
            .set_step(&a.id, &newer.code_mac, Step::BackupOnly)
            .unwrap());
        assert!(s.withdraw(&a.id, &newer.code_mac).unwrap());
        assert_eq!(s.challenge(&a.id).unwrap(), None);
    }

    #[test]
    fn of_concurrent_right_answers_exactly_one_takes_the_code() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.db");
        let c = record(9, "alice");
        SqliteStore::open(&p, Duration::from_secs(5))
            .unwrap()
            .insert_challenge(&c)
            .unwrap();
        let go = std::sync::Barrier::new(6);
        let taken: usize = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..6)
                .map(|_| {
                    let (go, c, p) = (&go, &c, &p);
                    scope.spawn(move || {
                        let s = SqliteStore::open(p, Duration::from_secs(5)).unwrap();
                        go.wait();
                        s.consume_code(&c.id, "alice", "sshd", &c.code_mac, 2_000)
                            .unwrap()
                            .is_some()
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| usize::from(t.join().unwrap()))
                .sum()
        });
        assert_eq!(taken, 1);
    }

    #[test]
    fn the_old_index_by_user_is_dropped_and_the_challenges_kept() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.db");
        let c = record(8, "alice");
        {
            let s = SqliteStore::open(&p, Duration::from_secs(5)).unwrap();
            s.conn
                .execute_batch(
                    "CREATE INDEX challenge_user ON challenge(user, service, created_at)",
                )
                .unwrap();
            s.insert_challenge(&c).unwrap();
        }
        let s = SqliteStore::open(&p, Duration::from_secs(5)).unwrap();
        let indexes: i64 = s
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'challenge_user'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 0);
        assert_eq!(s.challenge(&c.id).unwrap(), Some(c));
    }

    #[test]
    fn older_layout_is_rebuilt_and_newer_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.db");
        {
            let c = Connection::open(&p).unwrap();
            c.execute_batch("CREATE TABLE challenge (id TEXT PRIMARY KEY); CREATE TABLE sms_sent (user TEXT, at INTEGER);")
                .unwrap();
        }
        let s = SqliteStore::open(&p, Duration::from_secs(5)).unwrap();
        s.insert_challenge(&record(7, "alice")).unwrap();
        assert!(s.challenge(&ChallengeId([7; 16])).unwrap().is_some());
        drop(s);
        Connection::open(&p)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let e = SqliteStore::open(&p, Duration::from_secs(5))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("newer"), "{e}");
    }

    #[test]
    fn purge_drops_expired() {
        let s = SqliteStore::open_in_memory().unwrap();
        let c = record(4, "alice");
        s.insert_challenge(&c).unwrap();
        s.purge(c.expires_at, Duration::from_secs(86400)).unwrap();
        assert_eq!(s.challenge(&c.id).unwrap(), None);
    }
}
