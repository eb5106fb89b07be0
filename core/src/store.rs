//! State shared by every login on the host (and by both front ends):
//! pending challenges, SMS send windows, failure counts and lockouts, and
//! what admins and enrollment decided about users: registered phone
//! numbers, backup-code hashes and opt-outs.
//!
//! `SqliteStore` is the embedded default. Every operation that reads and
//! then writes runs in one `BEGIN IMMEDIATE` transaction, so many sshd
//! processes at once cannot both take the last SMS of a window or both use
//! one code.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::clock::{ms, Millis};
use crate::config::Rate;
use crate::otp::ChallengeId;
use crate::phone::NumberCache;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("state store {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state store {path}: its layout version {found} is newer than this smsotp understands ({supported}); upgrade smsotp, or move the file away to start afresh")]
    Layout {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("state store {path}: cannot create its directory: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A pending challenge: what was sent, to whom, for what, and how much of it
/// is left. The code is only its MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRecord {
    pub id: ChallengeId,
    pub user: String,
    pub service: String,
    pub code_mac: [u8; 32],
    /// Masked phone, for messages on later rounds (RADIUS).
    pub phone_masked: String,
    pub created_at: Millis,
    pub sent_at: Millis,
    pub expires_at: Millis,
    pub attempts_left: u32,
    pub resends_used: u32,
    /// What the challenge waits for.
    pub step: Step,
    /// Enrollment: the number the code was sent to, saved once the code is
    /// entered.
    pub pending_phone: Option<String>,
}

/// What a pending challenge waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The code sent by SMS (or a backup code).
    Code,
    /// A backup code: no SMS could or should be sent.
    BackupOnly,
    /// Enrollment: the user's mobile number.
    EnrollNumber,
    /// Enrollment: the code sent to `pending_phone`.
    EnrollCode,
}

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

/// A number registered in the store (by an admin or by enrollment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneRecord {
    pub e164: String,
    pub set_at: Millis,
    /// "admin:root", "enroll:sshd", …
    pub set_by: String,
}

/// One stored backup code: its lookup tag and argon2id hash (PHC string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupHash {
    pub tag: [u8; 8],
    pub hash: String,
}

/// Result of asking to send one more SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendPermit {
    Granted,
    UserLimit,
    GlobalLimit,
}

/// A user's SMS in the `limits.sms_per_user` window (admin view, and the
/// wait a refused login is told).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SmsWindow {
    /// SMS sent to the user within the window ending at `now`.
    pub sent: u32,
    /// When the next SMS is allowed, if the limit is reached at `now`.
    pub next_allowed_at: Option<Millis>,
}

/// Consecutive failures of a user and the lockout they led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureState {
    pub count: u32,
    pub locked_until: Option<Millis>,
}

/// The shared state. Implementations must make each method atomic.
pub trait Store {
    /// When the user's lockout ends, if they are locked out at `now`.
    fn locked_until(&self, user: &str, now: Millis) -> Result<Option<Millis>, StoreError>;
    /// [`Store::locked_until`] and [`Store::phone`] of `user`, read
    /// together (a shared store takes its lock once for both).
    fn lockout_and_phone(
        &self,
        user: &str,
        now: Millis,
    ) -> Result<(Option<Millis>, Option<PhoneRecord>), StoreError> {
        Ok((self.locked_until(user, now)?, self.phone(user)?))
    }
    /// [`Store::challenge`] and [`Store::locked_until`] of `user`, read
    /// together.
    fn challenge_and_lockout(
        &self,
        id: &ChallengeId,
        user: &str,
        now: Millis,
    ) -> Result<(Option<ChallengeRecord>, Option<Millis>), StoreError> {
        Ok((self.challenge(id)?, self.locked_until(user, now)?))
    }
    /// Counts one failure; locks the user once `lockout_after` is reached.
    fn record_failure(
        &self,
        user: &str,
        now: Millis,
        lockout_after: u32,
        lockout: Duration,
    ) -> Result<FailureState, StoreError>;
    /// A success: the consecutive count starts over.
    fn clear_failures(&self, user: &str) -> Result<(), StoreError>;
    /// Lifts a lockout (admin action).
    fn unlock(&self, user: &str) -> Result<(), StoreError>;
    /// The current failure state (admin view).
    fn failures(&self, user: &str, now: Millis) -> Result<FailureState, StoreError>;
    /// The user's SMS in the per-user window ending at `now`, and when the
    /// next is allowed if `per_user` is reached.
    fn sms_window(&self, user: &str, now: Millis, per_user: Rate) -> Result<SmsWindow, StoreError>;
    /// Forgets every SMS counted against the user (admin action); returns
    /// how many of them were in the window of length `window` ending at
    /// `now`. The global window keeps them: it protects the host and the
    /// bill, whoever the SMS went to.
    fn clear_sms_window(
        &self,
        user: &str,
        now: Millis,
        window: Duration,
    ) -> Result<u32, StoreError>;
    /// Takes one SMS from the user's and the global window, or says which
    /// limit is reached (and takes nothing).
    fn reserve_sms(
        &self,
        user: &str,
        now: Millis,
        per_user: Rate,
        global: Rate,
    ) -> Result<SendPermit, StoreError>;
    /// Stores `c`, in place of the same user's challenge for the same
    /// service with its id (one opened with
    /// [`crate::otp::OtpKey::login_id`] replaces the last); another login's
    /// challenge with its id is an error.
    fn insert_challenge(&self, c: &ChallengeRecord) -> Result<(), StoreError>;
    /// [`Store::reserve_sms`] and, if granted, [`Store::insert_challenge`],
    /// in one transaction.
    fn start_challenge(
        &self,
        c: &ChallengeRecord,
        per_user: Rate,
        global: Rate,
    ) -> Result<SendPermit, StoreError>;
    fn challenge(&self, id: &ChallengeId) -> Result<Option<ChallengeRecord>, StoreError>;
    /// Replaces the code of a challenge (a resend). False if it is gone.
    fn replace_code(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        sent_at: Millis,
        expires_at: Millis,
        attempts_left: u32,
        resends_used: u32,
    ) -> Result<bool, StoreError>;
    /// Counts a wrong code against the challenge; returns the tries left
    /// (the challenge is deleted at zero), or `None` if it is gone.
    fn wrong_attempt(&self, id: &ChallengeId) -> Result<Option<u32>, StoreError>;
    /// Deletes the challenge if its code MAC is still `code_mac` and, if so,
    /// clears `user`'s failure count, in one transaction: true for exactly
    /// one caller, which makes each code single-use.
    fn consume(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        user: &str,
    ) -> Result<bool, StoreError>;
    /// Round two's usual case in one transaction: deletes challenge `id`
    /// if it is `user`'s for `service`, waits for an SMS code
    /// ([`Step::Code`]), has not expired at `now`, holds `code_mac`
    /// (compared in constant time) and `user` is not locked out; then
    /// clears `user`'s failure count. Returns the challenge's masked number
    /// if it did, and changes nothing if not (the caller then looks at the
    /// challenge to say why). Like [`Store::consume`], true for exactly one
    /// caller.
    fn consume_code(
        &self,
        id: &ChallengeId,
        user: &str,
        service: &str,
        code_mac: &[u8; 32],
        now: Millis,
    ) -> Result<Option<String>, StoreError>;
    fn delete_challenge(&self, id: &ChallengeId) -> Result<(), StoreError>;
    /// Deletes challenge `id` if it still holds `code_mac`: a request
    /// clearing up its own challenge leaves alone a newer one that took its
    /// id ([`crate::otp::OtpKey::login_id`]). False if there was none.
    fn withdraw(&self, id: &ChallengeId, code_mac: &[u8; 32]) -> Result<bool, StoreError>;
    /// Forgets expired challenges and send records older than `keep`.
    fn purge(&self, now: Millis, keep: Duration) -> Result<(), StoreError>;
    /// A validated phone number remembered under `key`.
    fn cached_number(&self, key: &str) -> Result<Option<(String, Option<String>)>, StoreError>;
    fn cache_number(&self, key: &str, e164: &str, region: Option<&str>) -> Result<(), StoreError>;

    /// The number registered for `user` in the store, if any.
    fn phone(&self, user: &str) -> Result<Option<PhoneRecord>, StoreError>;
    /// Registers (or replaces) `user`'s number (admin action).
    fn set_phone(&self, user: &str, rec: &PhoneRecord) -> Result<(), StoreError>;
    /// Forgets `user`'s number; true if there was one.
    fn clear_phone(&self, user: &str) -> Result<bool, StoreError>;
    /// Turns an enrollment challenge waiting for a number into one waiting
    /// for the code sent to `e164`. False if it is gone or not waiting for
    /// a number.
    fn enroll_number(
        &self,
        id: &ChallengeId,
        e164: &str,
        code_mac: &[u8; 32],
        sent_at: Millis,
        expires_at: Millis,
        attempts_left: u32,
    ) -> Result<bool, StoreError>;
    /// [`Store::consume`] for an enrollment code, which also registers the
    /// challenge's pending number, unless `user` has one by now (a login
    /// never changes a registered number). True for exactly one caller.
    fn complete_enrollment(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        user: &str,
        at: Millis,
        set_by: &str,
    ) -> Result<bool, StoreError>;
    /// Changes what a challenge waits for (e.g. to a backup code when no
    /// SMS could be sent). False if it is gone, or no longer holds
    /// `code_mac` (replaced by a newer one with its id).
    fn set_step(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        step: Step,
    ) -> Result<bool, StoreError>;

    /// Replaces all of `user`'s backup codes with `codes`.
    fn replace_backup_codes(
        &self,
        user: &str,
        codes: &[BackupHash],
        at: Millis,
    ) -> Result<(), StoreError>;
    /// The stored codes of `user` with lookup tag `tag`: (id, hash).
    fn backup_candidates(
        &self,
        user: &str,
        tag: &[u8; 8],
    ) -> Result<Vec<(i64, String)>, StoreError>;
    /// Deletes backup code `id` of `user` and, if it was there, clears the
    /// user's failures and deletes `challenge`, in one transaction. Returns
    /// the codes left, or `None` if the code was already gone (used by a
    /// concurrent login): of two concurrent uses exactly one succeeds.
    fn consume_backup_code(
        &self,
        user: &str,
        id: i64,
        challenge: Option<&ChallengeId>,
    ) -> Result<Option<u32>, StoreError>;
    fn backup_codes_left(&self, user: &str) -> Result<u32, StoreError>;
    /// Deletes all of `user`'s backup codes; returns how many there were.
    fn revoke_backup_codes(&self, user: &str) -> Result<u32, StoreError>;

    /// Marks (`Some(set_by)`) or unmarks (`None`) `user` as opted out.
    fn set_opt_out(&self, user: &str, set: Option<(&str, Millis)>) -> Result<(), StoreError>;
    /// Whether `user` is marked opted out, and by whom and when.
    fn opt_out(&self, user: &str) -> Result<Option<(String, Millis)>, StoreError>;
    /// Every user marked opted out.
    fn opted_out_users(&self) -> Result<Vec<String>, StoreError>;
}

/// The store as the cache of validated numbers. A failing cache is only
/// slower, never wrong, so its errors are ignored.
pub struct StoreCache<'a>(pub &'a dyn Store);

impl NumberCache for StoreCache<'_> {
    fn get(&self, key: &str) -> Option<(String, Option<String>)> {
        self.0.cached_number(key).ok().flatten()
    }
    fn put(&self, key: &str, e164: &str, region: Option<&str>) {
        let _ = self.0.cache_number(key, e164, region);
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
    /// Opens (creating if needed, mode 0600 in a 0700 directory) the store.
    pub fn open(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        let display = path.display().to_string();
        if let Some(dir) = path.parent() {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|source| StoreError::Dir {
                        path: display.clone(),
                        source,
                    })?;
            }
        }
        // SQLite creates files with 0644 unless told otherwise by the umask.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let conn = Connection::open(path);
        nix::sys::stat::umask(old);
        let conn = conn.map_err(|source| StoreError::Sqlite {
            path: display.clone(),
            source,
        })?;
        let mut store = Self::init(conn, display, busy_timeout)?;
        store.wait_signal = WaitSignal::open(path);
        store.drop_old_index();
        Ok(store)
    }

    /// A private in-memory store (tests, benchmarks).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Sqlite {
            path: ":memory:".into(),
            source,
        })?;
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
                path: self.path.clone(),
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
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
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

    fn backup_candidates(
        &self,
        user: &str,
        tag: &[u8; 8],
    ) -> Result<Vec<(i64, String)>, StoreError> {
        self.conn
            .prepare_cached("SELECT id, hash FROM backup_code WHERE user = ?1 AND tag = ?2")
            .and_then(|mut st| {
                st.query_map(params![user, &tag[..]], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(|e| self.err(e))
    }

    fn consume_backup_code(
        &self,
        user: &str,
        id: i64,
        challenge: Option<&ChallengeId>,
    ) -> Result<Option<u32>, StoreError> {
        self.write(|tx| {
            let n = tx
                .prepare_cached("DELETE FROM backup_code WHERE user = ?1 AND id = ?2")?
                .execute(params![user, id])?;
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

/// One store shared by the threads of a long-running server: a single
/// connection behind a mutex. SQLite would serialise the writers anyway;
/// one connection spares them its busy-wait sleeps.
///
/// [`SharedStore::batched`] adds group commit: the steps of many requests
/// share one transaction, committed by a thread of its own as soon as it
/// can, and each request's answer waits for that commit
/// ([`SharedStore::defer`]). Nothing is answered before what it relies on
/// is on disk, and a busy server pays for one commit per batch rather than
/// one per step.
#[derive(Clone)]
pub struct SharedStore(std::sync::Arc<SharedInner>);

struct SharedInner {
    state: std::sync::Mutex<SharedState>,
    /// Deferred work and what the committer waits on, under a lock of its
    /// own: a request hands in its answer without waiting for the store's
    /// lock (a commit, another request's step). Taken after `state` when
    /// both are held, never before.
    queue: std::sync::Mutex<Queue>,
    /// Wakes the committer (with `queue`): a transaction is open, or work
    /// is deferred.
    wake: std::sync::Condvar,
    /// Threads amid a request: they used the store and have not deferred
    /// their answer yet. The committer waits a little for them, so one
    /// commit serves them too.
    in_request: std::sync::atomic::AtomicUsize,
    /// The committer has ended: whoever defers commits, and steps run
    /// outside any batch. Set with both locks held.
    closed: std::sync::atomic::AtomicBool,
    batched: bool,
    /// Validated numbers, as in the `number_cache` table. Its rows never
    /// change meaning (the key holds the build's version), so they can be
    /// remembered without asking the store, or taking its lock, again.
    numbers: std::sync::RwLock<Numbers>,
    /// Runs after each batch of deferred work (see
    /// [`SharedStore::after_each_batch`]).
    after_batch: std::sync::OnceLock<AfterBatch>,
}

/// Called on the thread that ran a batch of deferred work, once all of it
/// has run.
pub type AfterBatch = Box<dyn Fn() + Send + Sync>;

/// Number-cache key -> (E.164 number, region).
type Numbers = std::collections::HashMap<Box<str>, (Box<str>, Option<Box<str>>)>;

/// Validated numbers a [`SharedStore`] remembers at most; beyond, it
/// starts over.
const NUMBERS_REMEMBERED: usize = 100_000;

struct SharedState {
    store: SqliteStore,
    /// The transaction steps run in now; counts up at every commit or
    /// rollback.
    epoch: u64,
    /// The newest epoch whose writes were rolled back (0: none), and why.
    last_failed: u64,
    failure: String,
    /// When the last commit ended, and since when transactions have
    /// followed each other with no turn for other processes.
    last_commit: std::time::Instant,
    held_since: std::time::Instant,
    /// Turns left to other processes so far.
    turns: u64,
}

/// What the committer waits on (see [`SharedInner::queue`]).
struct Queue {
    deferred: Vec<(u64, Deferred)>,
    /// A transaction is open: commit it before long even if no answer
    /// waits for it.
    open: bool,
    stop: bool,
    /// The committer sleeps on `wake` (only then is it worth a wake-up).
    idle: bool,
    /// The committer waits for `in_request` to reach zero.
    gathering: bool,
    /// Tests hold the committer off to interleave requests at will.
    #[cfg(test)]
    paused: bool,
}

/// Work to do once the writes before it are committed: called with
/// `Ok(())` if they are, or with why they were rolled back.
pub type Deferred = Box<dyn FnOnce(Result<(), &str>) + Send>;

thread_local! {
    /// The first epoch this thread's steps ran in since its last
    /// [`SharedStore::defer`], with the store it was in.
    static TOUCHED: std::cell::Cell<Option<(usize, u64)>> = const { std::cell::Cell::new(None) };
}

/// Owns the committer thread of a [`SharedStore::batched`] store. Dropping
/// it commits what is pending, runs what was deferred, and ends the thread.
pub struct Committer {
    inner: std::sync::Arc<SharedInner>,
    thread: Option<std::thread::JoinHandle<()>>,
    checkpointer: Option<std::thread::JoinHandle<()>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SharedStore {
    /// Each step commits on its own; [`SharedStore::defer`] runs at once.
    pub fn new(store: SqliteStore) -> Self {
        Self::make(store, false)
    }

    /// Group commit (see the type). Keep the [`Committer`] for as long as
    /// the store is used.
    pub fn batched(store: SqliteStore) -> std::io::Result<(Self, Committer)> {
        // Checkpoints (copying the WAL back into the database, with an
        // fsync) run on a connection and thread of their own, not inside a
        // commit that every waiting answer depends on.
        let file = store
            .conn
            .path()
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from);
        if file.is_some() {
            store
                .conn
                .pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(std::io::Error::other)?;
        }
        let busy_timeout = store.busy_timeout;
        let shared = Self::make(store, true);
        let inner = shared.0.clone();
        let thread = std::thread::Builder::new()
            .name("store-commit".into())
            .spawn(move || commit_loop(&inner))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let checkpointer = match file {
            Some(file) => {
                let stop = stop.clone();
                let inner = shared.0.clone();
                Some(
                    std::thread::Builder::new()
                        .name("store-checkpoint".into())
                        .spawn(move || checkpoint_loop(&file, busy_timeout, &inner, &stop))?,
                )
            }
            None => None,
        };
        let committer = Committer {
            inner: shared.0.clone(),
            thread: Some(thread),
            checkpointer,
            stop,
        };
        Ok((shared, committer))
    }

    fn make(store: SqliteStore, batched: bool) -> Self {
        SharedStore(std::sync::Arc::new(SharedInner {
            state: std::sync::Mutex::new(SharedState {
                store,
                epoch: 1,
                last_failed: 0,
                failure: String::new(),
                last_commit: std::time::Instant::now(),
                held_since: std::time::Instant::now(),
                turns: 0,
            }),
            queue: std::sync::Mutex::new(Queue {
                deferred: Vec::new(),
                open: false,
                stop: false,
                idle: false,
                gathering: false,
                #[cfg(test)]
                paused: false,
            }),
            wake: std::sync::Condvar::new(),
            in_request: std::sync::atomic::AtomicUsize::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
            batched,
            numbers: std::sync::RwLock::new(std::collections::HashMap::new()),
            after_batch: std::sync::OnceLock::new(),
        }))
    }

    fn id(&self) -> usize {
        std::sync::Arc::as_ptr(&self.0) as usize
    }

    /// Runs `f` once everything this thread wrote since its last `defer`
    /// is committed, on the committer thread; with an error if it was
    /// rolled back instead, in which case `f` must answer as for a failed
    /// store.
    pub fn defer(&self, f: Deferred) {
        use std::sync::atomic::Ordering::Relaxed;
        let touched = TOUCHED
            .with(|t| t.take())
            .filter(|(id, _)| *id == self.id());
        if !self.0.batched {
            f(Ok(()));
            return self.0.batch_done();
        }
        let mut q = self.0.queue();
        let in_request = if touched.is_some() {
            // Under `queue`, so the committer's wait for zero sees it.
            let was = self
                .0
                .in_request
                .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)))
                .unwrap_or(0);
            was.saturating_sub(1)
        } else {
            self.0.in_request.load(Relaxed)
        };
        // Nothing touched: nothing to lose.
        let first = touched.map_or(u64::MAX, |(_, e)| e);
        q.deferred.push((first, f));
        if self.0.closed.load(Relaxed) {
            // No committer any more (shutting down): commit here.
            drop(q);
            let done = self.0.lock().commit(&self.0);
            done.run(&self.0);
            return;
        }
        let wake = q.idle || q.gathering && in_request == 0;
        drop(q);
        if wake {
            self.0.wake.notify_one();
        }
    }

    /// Has `f` run after each batch of deferred work, on the thread that
    /// ran it: deferred work may leave something for it to finish for the
    /// whole batch at once (smsotp-radiusd queues its replies and sends
    /// them together). Set once; later calls are ignored.
    pub fn after_each_batch(&self, f: AfterBatch) {
        let _ = self.0.after_batch.set(f);
    }

    fn remember_number(&self, key: &str, e164: &str, region: Option<&str>) {
        let mut numbers = self.0.numbers.write().unwrap_or_else(|p| p.into_inner());
        if numbers.len() >= NUMBERS_REMEMBERED {
            numbers.clear();
        }
        numbers.insert(key.into(), (e164.into(), region.map(Into::into)));
    }

    /// Returns once everything deferred so far has run (its writes
    /// committed or rolled back).
    pub fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        let inner = self.0.clone();
        self.defer(Box::new(move |_| {
            // What the work before this left for the end of its batch is
            // done now, or "flushed" would not cover it.
            inner.batch_done();
            let _ = tx.send(());
        }));
        // If the committer is gone, the closure was dropped unrun: nothing
        // is left to wait for.
        let _ = rx.recv();
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&SqliteStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut st = self.0.lock();
        if !self.0.batched || self.0.closed.load(Relaxed) {
            return f(&st.store);
        }
        if st.store.conn.is_autocommit() {
            st.give_others_a_turn();
            st.store.set_busy_timeout();
            st.store
                .conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| st.store.err(e))?;
            // An idle committer sleeps until work is deferred; from now on
            // it must commit before long whatever happens.
            let mut q = self.0.queue();
            q.open = true;
            let idle = q.idle;
            drop(q);
            if idle {
                self.0.wake.notify_one();
            }
        }
        let epoch = st.epoch;
        let id = self.id();
        let first_step = TOUCHED.with(|t| {
            let first = t.get().filter(|(i, _)| *i == id).is_none();
            if first {
                t.set(Some((id, epoch)));
            }
            first
        });
        if first_step {
            self.0.in_request.fetch_add(1, Relaxed);
        }
        let out = f(&st.store);
        if let Err(e) = &out {
            if st.store.conn.is_autocommit() {
                // SQLite rolled the whole transaction back (I/O error, disk
                // full, …): everything since the last commit is gone.
                st.last_failed = st.epoch;
                st.failure = e.to_string();
                st.epoch += 1;
            }
        }
        out
    }
}

impl Queue {
    #[cfg(test)]
    fn paused(&self) -> bool {
        self.paused
    }
    #[cfg(not(test))]
    fn paused(&self) -> bool {
        false
    }
}

impl SharedInner {
    fn numbers(&self) -> std::sync::RwLockReadGuard<'_, Numbers> {
        self.numbers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SharedState> {
        lock_spinning(&self.state)
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The end of a batch of deferred work: the hook, if any.
    fn batch_done(&self) {
        if let Some(f) = self.after_batch.get() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        }
    }
}

/// Locks `m`, trying for a few dozen microseconds before sleeping.
///
/// The store's lock is held for a few microseconds per step, and taken
/// several times per request by every worker. A thread that sleeps on it
/// at once must be woken when it is free, which takes longer than the
/// step it waited for: the lock then sits free while the CPU idles, and
/// under load requests queue behind wake-ups (a lock convoy). Trying
/// again for a while avoids most of those sleeps. (Yielding the core now
/// and then while trying cost more in task switches than it saved.)
fn lock_spinning<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    let mut started = None;
    for i in 0u32.. {
        match m.try_lock() {
            Ok(g) => return g,
            Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        if i % 16 == 15 {
            let t0 = *started.get_or_insert_with(std::time::Instant::now);
            if t0.elapsed() >= SPIN_FOR {
                break;
            }
        } else {
            std::hint::spin_loop();
        }
    }
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long [`lock_spinning`] tries before it sleeps: several times a
/// step's hold, well under a wake-up's cost.
const SPIN_FOR: Duration = Duration::from_micros(50);

/// The committer: commits as soon as a transaction is open or work is
/// deferred. While it commits and runs the deferred work, other threads'
/// steps gather in the next transaction: the busier the server, the
/// larger each batch.
fn commit_loop(inner: &SharedInner) {
    // Should a commit ever panic, the store must not fall silent: whoever
    // defers commits from then on (as after shutdown), and the thread ends.
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| commit_rounds(inner)));
    if ran.is_err() {
        let _st = inner.lock();
        let _q = inner.queue();
        inner
            .closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn commit_rounds(inner: &SharedInner) {
    use std::sync::atomic::Ordering::Relaxed;
    loop {
        let mut q = inner.queue();
        // Commit when an answer waits for it. A transaction no answer
        // waits for yet gets a moment, then is committed anyway, so the
        // write lock is never kept from other processes for long.
        while !q.stop && (q.deferred.is_empty() || q.paused()) {
            q.idle = true;
            if !q.open {
                q = inner.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            } else {
                let (guard, timeout) = inner
                    .wake
                    .wait_timeout(q, IDLE_COMMIT)
                    .unwrap_or_else(|p| p.into_inner());
                q = guard;
                if timeout.timed_out() && !q.paused() {
                    q.idle = false;
                    break;
                }
            }
            q.idle = false;
        }
        // Gather: requests under way will want this commit too.
        let since = std::time::Instant::now();
        while !q.stop && inner.in_request.load(Relaxed) > 0 {
            let left = GATHER.saturating_sub(since.elapsed());
            if left.is_zero() {
                break;
            }
            q.gathering = true;
            q = inner
                .wake
                .wait_timeout(q, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            q.gathering = false;
        }
        let stopping = q.stop;
        drop(q);
        let mut st = inner.lock();
        if stopping && st.store.conn.is_autocommit() {
            let q = inner.queue();
            if q.deferred.is_empty() {
                // Whoever defers from now on commits.
                inner.closed.store(true, Relaxed);
                return;
            }
        }
        let done = st.commit(inner);
        drop(st);
        done.run(inner);
    }
}

/// Back-to-back transactions of a batched store before it leaves the
/// write lock to other processes for [`TURN`], if one says it waits (see
/// [`WaitSignal`]); and at most before it does so unasked, for a writer
/// whose signal this process cannot see (one that could not open the
/// signal file). Unasked turns come after half the store's busy timeout
/// if that is shorter (the processes sharing the store share its
/// config), so such a writer still gets its turn in time. Each turn holds
/// up every request in flight for [`TURN`]: at 500 ms, they showed in the
/// p99 latency under load.
const HOLD_MAX: Duration = Duration::from_millis(10);
const HOLD_UNASKED: Duration = Duration::from_millis(2_000);
const TURN: Duration = Duration::from_micros(2_500);

/// How long a commit waits for requests under way to join it.
const GATHER: Duration = Duration::from_micros(500);

/// How long a transaction may stay open with no answer waiting for it.
const IDLE_COMMIT: Duration = Duration::from_millis(20);

/// Deferred work taken at a commit, with how its writes ended.
struct Committed {
    deferred: Vec<(u64, Deferred)>,
    last_failed: u64,
    failure: String,
}

impl SharedState {
    /// Called before a new transaction begins. Under steady load the
    /// batches follow each other with no moment
    /// between them in which another process (an sshd login, the admin
    /// tool) could take the write lock, and it would wait out its busy
    /// timeout: after [`HOLD_MAX`] of back-to-back transactions, leave the
    /// lock free for [`TURN`] (those processes retry every millisecond) if
    /// one of them waits, and after [`SharedState::unasked_after`] in any
    /// case.
    fn give_others_a_turn(&mut self) {
        let now = std::time::Instant::now();
        let free_for = now.saturating_duration_since(self.last_commit);
        if free_for >= TURN {
            self.held_since = now;
        } else {
            let held = now.saturating_duration_since(self.held_since);
            let waits = || match &self.store.wait_signal {
                Some(signal) => signal.someone_waits(),
                None => true,
            };
            if held >= self.unasked_after() || held >= HOLD_MAX && waits() {
                std::thread::sleep(TURN.saturating_sub(free_for));
                self.held_since = std::time::Instant::now();
                self.turns += 1;
            }
        }
    }

    /// How long transactions may follow each other before a turn is left
    /// to other processes even if none says it waits.
    fn unasked_after(&self) -> Duration {
        (self.store.busy_timeout / 2).min(HOLD_UNASKED)
    }

    /// Commits the open transaction (if any) and takes the work deferred
    /// so far: all of it relies on steps that ran before, under this lock,
    /// so in this transaction or an earlier one.
    fn commit(&mut self, inner: &SharedInner) -> Committed {
        if !self.store.conn.is_autocommit() {
            if let Err(e) = self.store.conn.execute_batch("COMMIT") {
                let _ = self.store.conn.execute_batch("ROLLBACK");
                self.last_failed = self.epoch;
                self.failure = format!("state store {}: commit failed: {e}", self.store.path);
            }
            self.epoch += 1;
            self.last_commit = std::time::Instant::now();
        }
        let mut q = inner.queue();
        q.open = false;
        let deferred = std::mem::take(&mut q.deferred);
        drop(q);
        Committed {
            deferred,
            last_failed: self.last_failed,
            failure: if self.last_failed > 0 {
                self.failure.clone()
            } else {
                String::new()
            },
        }
    }
}

impl Committed {
    /// Runs the deferred work, outside the store's lock, then `inner`'s
    /// end-of-batch hook.
    fn run(self, inner: &SharedInner) {
        if self.deferred.is_empty() {
            return;
        }
        for (first, f) in self.deferred {
            let outcome = if first > self.last_failed {
                Ok(())
            } else {
                Err(self.failure.as_str())
            };
            // A panic in one answer must not stop the others.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(outcome)));
        }
        inner.batch_done();
    }
}

/// How often the checkpoint thread moves the WAL into the database. Its
/// second step holds up every request in flight for a few milliseconds
/// (it commits, copies and syncs): every 500 ms, that showed in the p99
/// latency under load. Every 2 s, the WAL of a server at full load grows
/// larger: scripts/bench-radius.sh prints it (52,680 KB after its rounds,
/// against 13,956 KB with a checkpoint every 500 ms).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(2_000);

/// Checkpoints `file`'s WAL every [`CHECKPOINT_EVERY`] until `stop`.
///
/// A PASSIVE checkpoint first, which copies most of the log without
/// holding anyone up; then, with the store's lock (the batch so far
/// committed), a second one for the few frames written meanwhile. A log
/// copied in full is started over by the next transaction, so the WAL
/// file stays bounded however busy the server is.
fn checkpoint_loop(
    file: &Path,
    busy_timeout: Duration,
    inner: &SharedInner,
    stop: &std::sync::atomic::AtomicBool,
) {
    let Ok(store) = SqliteStore::open(file, busy_timeout) else {
        return;
    };
    let checkpoint = || {
        store
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
    };
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::park_timeout(CHECKPOINT_EVERY);
        let _ = checkpoint();
        let mut st = inner.lock();
        if inner.closed.load(std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        let done = st.commit(inner);
        let _ = checkpoint();
        drop(st);
        done.run(inner);
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.checkpointer.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        self.inner.queue().stop = true;
        self.inner.wake.notify_all();
        if let Some(t) = self.thread.take() {
            // The last reference may go away inside deferred work, on the
            // committer thread itself: it ends on its own.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

impl Store for SharedStore {
    fn locked_until(&self, user: &str, now: Millis) -> Result<Option<Millis>, StoreError> {
        self.with(|s| s.locked_until(user, now))
    }
    fn lockout_and_phone(
        &self,
        user: &str,
        now: Millis,
    ) -> Result<(Option<Millis>, Option<PhoneRecord>), StoreError> {
        self.with(|s| s.lockout_and_phone(user, now))
    }
    fn challenge_and_lockout(
        &self,
        id: &ChallengeId,
        user: &str,
        now: Millis,
    ) -> Result<(Option<ChallengeRecord>, Option<Millis>), StoreError> {
        self.with(|s| s.challenge_and_lockout(id, user, now))
    }
    fn record_failure(
        &self,
        user: &str,
        now: Millis,
        after: u32,
        lockout: Duration,
    ) -> Result<FailureState, StoreError> {
        self.with(|s| s.record_failure(user, now, after, lockout))
    }
    fn clear_failures(&self, user: &str) -> Result<(), StoreError> {
        self.with(|s| s.clear_failures(user))
    }
    fn unlock(&self, user: &str) -> Result<(), StoreError> {
        self.with(|s| s.unlock(user))
    }
    fn failures(&self, user: &str, now: Millis) -> Result<FailureState, StoreError> {
        self.with(|s| s.failures(user, now))
    }
    fn sms_window(&self, user: &str, now: Millis, per_user: Rate) -> Result<SmsWindow, StoreError> {
        self.with(|s| s.sms_window(user, now, per_user))
    }
    fn clear_sms_window(
        &self,
        user: &str,
        now: Millis,
        window: Duration,
    ) -> Result<u32, StoreError> {
        self.with(|s| s.clear_sms_window(user, now, window))
    }
    fn reserve_sms(
        &self,
        user: &str,
        now: Millis,
        per_user: Rate,
        global: Rate,
    ) -> Result<SendPermit, StoreError> {
        self.with(|s| s.reserve_sms(user, now, per_user, global))
    }
    fn insert_challenge(&self, c: &ChallengeRecord) -> Result<(), StoreError> {
        self.with(|s| s.insert_challenge(c))
    }
    fn start_challenge(
        &self,
        c: &ChallengeRecord,
        per_user: Rate,
        global: Rate,
    ) -> Result<SendPermit, StoreError> {
        self.with(|s| s.start_challenge(c, per_user, global))
    }
    fn challenge(&self, id: &ChallengeId) -> Result<Option<ChallengeRecord>, StoreError> {
        self.with(|s| s.challenge(id))
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
        self.with(|s| {
            s.replace_code(
                id,
                code_mac,
                sent_at,
                expires_at,
                attempts_left,
                resends_used,
            )
        })
    }
    fn wrong_attempt(&self, id: &ChallengeId) -> Result<Option<u32>, StoreError> {
        self.with(|s| s.wrong_attempt(id))
    }
    fn consume(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        user: &str,
    ) -> Result<bool, StoreError> {
        self.with(|s| s.consume(id, code_mac, user))
    }
    fn consume_code(
        &self,
        id: &ChallengeId,
        user: &str,
        service: &str,
        code_mac: &[u8; 32],
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        self.with(|s| s.consume_code(id, user, service, code_mac, now))
    }
    fn delete_challenge(&self, id: &ChallengeId) -> Result<(), StoreError> {
        self.with(|s| s.delete_challenge(id))
    }
    fn withdraw(&self, id: &ChallengeId, code_mac: &[u8; 32]) -> Result<bool, StoreError> {
        self.with(|s| s.withdraw(id, code_mac))
    }
    fn purge(&self, now: Millis, keep: Duration) -> Result<(), StoreError> {
        self.with(|s| s.purge(now, keep))
    }
    fn cached_number(&self, key: &str) -> Result<Option<(String, Option<String>)>, StoreError> {
        if let Some((e164, region)) = self.0.numbers().get(key) {
            return Ok(Some((
                e164.to_string(),
                region.as_deref().map(str::to_owned),
            )));
        }
        let found = self.with(|s| s.cached_number(key))?;
        if let Some((e164, region)) = &found {
            self.remember_number(key, e164, region.as_deref());
        }
        Ok(found)
    }
    fn cache_number(&self, key: &str, e164: &str, region: Option<&str>) -> Result<(), StoreError> {
        self.with(|s| s.cache_number(key, e164, region))?;
        self.remember_number(key, e164, region);
        Ok(())
    }
    fn phone(&self, user: &str) -> Result<Option<PhoneRecord>, StoreError> {
        self.with(|s| s.phone(user))
    }
    fn set_phone(&self, user: &str, rec: &PhoneRecord) -> Result<(), StoreError> {
        self.with(|s| s.set_phone(user, rec))
    }
    fn clear_phone(&self, user: &str) -> Result<bool, StoreError> {
        self.with(|s| s.clear_phone(user))
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
        self.with(|s| s.enroll_number(id, e164, code_mac, sent_at, expires_at, attempts_left))
    }
    fn complete_enrollment(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        user: &str,
        at: Millis,
        set_by: &str,
    ) -> Result<bool, StoreError> {
        self.with(|s| s.complete_enrollment(id, code_mac, user, at, set_by))
    }
    fn set_step(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        step: Step,
    ) -> Result<bool, StoreError> {
        self.with(|s| s.set_step(id, code_mac, step))
    }
    fn replace_backup_codes(
        &self,
        user: &str,
        codes: &[BackupHash],
        at: Millis,
    ) -> Result<(), StoreError> {
        self.with(|s| s.replace_backup_codes(user, codes, at))
    }
    fn backup_candidates(
        &self,
        user: &str,
        tag: &[u8; 8],
    ) -> Result<Vec<(i64, String)>, StoreError> {
        self.with(|s| s.backup_candidates(user, tag))
    }
    fn consume_backup_code(
        &self,
        user: &str,
        id: i64,
        challenge: Option<&ChallengeId>,
    ) -> Result<Option<u32>, StoreError> {
        self.with(|s| s.consume_backup_code(user, id, challenge))
    }
    fn backup_codes_left(&self, user: &str) -> Result<u32, StoreError> {
        self.with(|s| s.backup_codes_left(user))
    }
    fn revoke_backup_codes(&self, user: &str) -> Result<u32, StoreError> {
        self.with(|s| s.revoke_backup_codes(user))
    }
    fn set_opt_out(&self, user: &str, set: Option<(&str, Millis)>) -> Result<(), StoreError> {
        self.with(|s| s.set_opt_out(user, set))
    }
    fn opt_out(&self, user: &str) -> Result<Option<(String, Millis)>, StoreError> {
        self.with(|s| s.opt_out(user))
    }
    fn opted_out_users(&self) -> Result<Vec<String>, StoreError> {
        self.with(|s| s.opted_out_users())
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
    use std::num::NonZeroU32;

    fn rate(n: u32, secs: u64) -> Rate {
        Rate {
            count: NonZeroU32::new(n).unwrap(),
            window: Duration::from_secs(secs),
        }
    }

    fn record(id: u8, user: &str) -> ChallengeRecord {
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

    /// A batched store on a file, and a second connection to look at it as
    /// another process would.
    fn batched_pair() -> (tempfile::TempDir, SharedStore, Committer, SqliteStore) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.db");
        let (shared, committer) =
            SharedStore::batched(SqliteStore::open(&p, Duration::from_secs(5)).unwrap()).unwrap();
        let other = SqliteStore::open(&p, Duration::from_secs(5)).unwrap();
        (d, shared, committer, other)
    }

    /// Defers a probe; returns what it was told and whether `id` was
    /// visible to `other` at that moment.
    fn probe(
        shared: &SharedStore,
        other: SqliteStore,
        id: ChallengeId,
    ) -> std::sync::mpsc::Receiver<(Result<(), String>, bool, SqliteStore)> {
        let (tx, rx) = std::sync::mpsc::channel();
        shared.defer(Box::new(move |outcome| {
            let seen = other.challenge(&id).unwrap().is_some();
            let _ = tx.send((outcome.map_err(str::to_owned), seen, other));
        }));
        rx
    }

    fn wait<T>(rx: &std::sync::mpsc::Receiver<T>) -> T {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("deferred work never ran")
    }

    #[test]
    fn deferred_work_runs_once_its_writes_are_committed() {
        let (_d, shared, _committer, other) = batched_pair();
        let c = record(1, "alice");
        shared.insert_challenge(&c).unwrap();
        let (outcome, seen, other) = wait(&probe(&shared, other, c.id));
        assert_eq!(outcome, Ok(()));
        assert!(seen, "another connection must see the challenge by then");
        // And a consumed code is gone for everyone before the answer.
        assert!(shared.consume(&c.id, &c.code_mac, "alice").unwrap());
        let (outcome, seen, _) = wait(&probe(&shared, other, c.id));
        assert_eq!(outcome, Ok(()));
        assert!(!seen);
    }

    #[test]
    fn deferred_work_of_a_rolled_back_batch_is_told_so() {
        let (_d, shared, _committer, other) = batched_pair();
        // Hold the committer off while the batch fails, as a busy server's
        // requests interleave: one request wrote, another one's step fails.
        shared.0.queue().paused = true;
        let c = record(2, "alice");
        shared.insert_challenge(&c).unwrap();
        // What SQLite does on some I/O errors: the whole transaction goes.
        let err = shared.with(|s| {
            s.conn.execute_batch("ROLLBACK").unwrap();
            Err::<(), _>(s.err(rusqlite::Error::InvalidQuery))
        });
        assert!(err.is_err());
        let rx = probe(&shared, other, c.id);
        shared.0.queue().paused = false;
        shared.0.wake.notify_one();
        let (outcome, seen, other) = wait(&rx);
        assert!(
            outcome.is_err(),
            "the challenge was rolled back: {outcome:?}"
        );
        assert!(!seen);
        // A later request starts afresh and commits.
        let c2 = record(3, "bob");
        shared.insert_challenge(&c2).unwrap();
        let (outcome, seen, other) = wait(&probe(&shared, other, c2.id));
        assert_eq!(outcome, Ok(()));
        assert!(seen);
        // A request that touched nothing is not failed by others' trouble.
        let (outcome, _, _) = wait(&probe(&shared, other, c2.id));
        assert_eq!(outcome, Ok(()));
    }

    #[test]
    fn many_threads_share_batches_and_every_answer_follows_its_commit() {
        let (_d, shared, committer, _other) = batched_pair();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            for t in 0..8u8 {
                let shared = shared.clone();
                let tx = tx.clone();
                scope.spawn(move || {
                    for i in 0..100u8 {
                        let mut c = record(i, &format!("user{t}"));
                        c.id = ChallengeId([t, i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
                        shared.insert_challenge(&c).unwrap();
                        let tx = tx.clone();
                        shared.defer(Box::new(move |o| {
                            let _ = tx.send((c.id, o.is_ok()));
                        }));
                    }
                });
            }
        });
        drop(tx);
        // Dropping the committer commits the rest and runs what is left.
        drop(committer);
        let answers: Vec<_> = rx.iter().collect();
        assert_eq!(answers.len(), 800);
        assert!(answers.iter().all(|(_, ok)| *ok));
        let epochs = shared.0.lock().epoch;
        assert!(epochs > 1, "at least one commit");
        for (id, _) in answers {
            assert!(shared.challenge(&id).unwrap().is_some());
        }
    }

    #[test]
    fn an_unbatched_shared_store_runs_deferred_work_at_once() {
        let shared = SharedStore::new(SqliteStore::open_in_memory().unwrap());
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = ran.clone();
        shared.defer(Box::new(move |o| {
            assert!(o.is_ok());
            r.store(true, std::sync::atomic::Ordering::SeqCst);
        }));
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn the_end_of_batch_hook_follows_the_work_of_its_batch() {
        use std::sync::{Arc, Mutex};
        let (_d, shared, _committer, _other) = batched_pair();
        // What ran, in order, on which thread.
        let log: Arc<Mutex<Vec<(String, std::thread::ThreadId)>>> = Arc::default();
        let l = log.clone();
        shared.after_each_batch(Box::new(move || {
            l.lock()
                .unwrap()
                .push(("hook".into(), std::thread::current().id()));
        }));
        // Set once: a second hook is ignored.
        let second = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = second.clone();
        shared.after_each_batch(Box::new(move || {
            s2.store(true, std::sync::atomic::Ordering::SeqCst);
        }));
        for n in 0..3 {
            shared.insert_challenge(&record(n, "alice")).unwrap();
            let l = log.clone();
            shared.defer(Box::new(move |o| {
                assert!(o.is_ok());
                l.lock()
                    .unwrap()
                    .push((format!("work {n}"), std::thread::current().id()));
            }));
        }
        // flush returns only once the hook has covered all of it.
        shared.flush();
        let log = log.lock().unwrap().clone();
        let works: Vec<usize> = (0..log.len()).filter(|&i| log[i].0 != "hook").collect();
        assert_eq!(works.len(), 3, "{log:?}");
        let last_work = *works.last().unwrap();
        let hook_after = log[last_work..]
            .iter()
            .find(|(what, _)| what == "hook")
            .expect("a hook run after the last work");
        // On the thread that ran the work, not the caller's.
        assert_eq!(hook_after.1, log[last_work].1, "{log:?}");
        assert_ne!(hook_after.1, std::thread::current().id());
        assert!(!second.load(std::sync::atomic::Ordering::SeqCst));

        // Unbatched: work, then the hook, at once on the caller's thread.
        let plain = SharedStore::new(SqliteStore::open_in_memory().unwrap());
        let hooked = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let h = hooked.clone();
        plain.after_each_batch(Box::new(move || {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        plain.defer(Box::new(|_| {}));
        assert_eq!(hooked.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn handing_in_an_answer_does_not_wait_for_the_store() {
        let (_d, shared, _committer, _other) = batched_pair();
        shared.insert_challenge(&record(1, "alice")).unwrap();
        // Another thread holds the store's lock, as a long step would.
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let holder = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let _st = shared.0.lock();
                held_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(500));
            })
        };
        held_rx.recv().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let t0 = std::time::Instant::now();
        shared.defer(Box::new(move |o| {
            let _ = tx.send(o.is_ok());
        }));
        let took = t0.elapsed();
        assert!(took < Duration::from_millis(250), "defer waited {took:?}");
        // It runs once the store is free and the step committed.
        assert!(wait(&rx));
        assert!(t0.elapsed() >= Duration::from_millis(400));
        holder.join().unwrap();
    }

    /// Runs `f` as one request's steps and waits for its commit.
    fn request<T>(shared: &SharedStore, f: impl FnOnce(&SharedStore) -> T) -> T {
        let out = f(shared);
        shared.flush();
        out
    }

    #[test]
    fn a_batched_store_sees_other_processes_writes_at_its_next_transaction() {
        let (_d, shared, _committer, other) = batched_pair();
        let lock = Duration::from_secs(600);
        // A batched store keeps one connection and transactions open across
        // requests; what it reads must still follow other processes'
        // commits (a guard for any caching added to it).
        request(&shared, |s| {
            assert_eq!(s.phone("alice").unwrap(), None);
            assert_eq!(s.locked_until("alice", 1_000).unwrap(), None);
            assert_eq!(s.opt_out("alice").unwrap(), None);
            assert_eq!(s.phone("alice").unwrap(), None, "twice");
        });
        // The admin tool and an sshd login, in other processes.
        let rec = PhoneRecord {
            e164: "+12025550143".into(),
            set_at: 1_000,
            set_by: "admin:root".into(),
        };
        other.set_phone("alice", &rec).unwrap();
        other.record_failure("alice", 1_000, 1, lock).unwrap();
        other
            .set_opt_out("alice", Some(("admin:root", 1_000)))
            .unwrap();
        request(&shared, |s| {
            assert_eq!(s.phone("alice").unwrap(), Some(rec.clone()));
            assert_eq!(s.locked_until("alice", 2_000).unwrap(), Some(601_000));
            assert!(s.opt_out("alice").unwrap().is_some());
            // Past the lockout.
            assert_eq!(s.locked_until("alice", 601_000).unwrap(), None);
        });
        // Our own writes are seen at once, in the same transaction.
        request(&shared, |s| {
            s.unlock("alice").unwrap();
            assert_eq!(s.locked_until("alice", 2_000).unwrap(), None);
            s.clear_phone("alice").unwrap();
            assert_eq!(s.phone("alice").unwrap(), None);
            s.set_opt_out("alice", None).unwrap();
            assert_eq!(s.opt_out("alice").unwrap(), None);
            s.record_failure("alice", 3_000, 1, lock).unwrap();
            assert_eq!(s.locked_until("alice", 3_000).unwrap(), Some(603_000));
            let c = record(9, "alice");
            s.insert_challenge(&c).unwrap();
            assert!(s.consume(&c.id, &c.code_mac, "alice").unwrap());
            assert_eq!(s.failures("alice", 3_000).unwrap().count, 0);
            assert_eq!(
                s.locked_until("alice", 3_000).unwrap(),
                None,
                "a right code clears them"
            );
        });
        // And other processes see them once committed.
        assert_eq!(other.phone("alice").unwrap(), None);
        assert_eq!(other.locked_until("alice", 3_000).unwrap(), None);
    }

    #[test]
    fn a_shared_store_remembers_validated_numbers_without_the_store() {
        let (_d, shared, _committer, other) = batched_pair();
        request(&shared, |s| {
            s.cache_number("k", "+12025550143", Some("US")).unwrap();
        });
        // Gone from the table (a layout rebuild): still known.
        other.conn.execute("DELETE FROM number_cache", []).unwrap();
        let want = Some(("+12025550143".to_string(), Some("US".to_string())));
        assert_eq!(shared.cached_number("k").unwrap(), want);
        // A row another process cached is read once, then remembered.
        other.cache_number("k2", "+12025550144", None).unwrap();
        assert!(shared.cached_number("k2").unwrap().is_some());
        shared.flush();
        other.conn.execute("DELETE FROM number_cache", []).unwrap();
        assert!(shared.cached_number("k2").unwrap().is_some());
        shared.flush();
    }

    /// Keeps `shared` at full load from 8 threads (a login's steps, then
    /// its answer waits for the commit: the batch's transaction stays open
    /// while any of them is under way) while `meanwhile` runs.
    fn under_load<T>(shared: &SharedStore, meanwhile: impl FnOnce() -> T) -> T {
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            for t in 0..8u8 {
                let shared = shared.clone();
                let stop = &stop;
                scope.spawn(move || {
                    let mut i: u32 = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        i += 1;
                        let mut c = record(t, &format!("load{t}"));
                        c.id.0[..4].copy_from_slice(&i.to_be_bytes());
                        shared.insert_challenge(&c).unwrap();
                        for _ in 0..4 {
                            shared.locked_until(&c.user, 1_000).unwrap();
                        }
                        shared.delete_challenge(&c.id).unwrap();
                        shared.defer(Box::new(|_| {}));
                    }
                });
            }
            let out = meanwhile();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            out
        })
    }

    #[test]
    fn other_processes_get_the_write_lock_while_a_batched_store_is_busy() {
        let (d, shared, committer, _other) = batched_pair();
        // Another process with a short busy timeout: an sshd login or the
        // admin tool while smsotp-radiusd is at full load.
        let admin =
            SqliteStore::open(&d.path().join("state.db"), Duration::from_millis(500)).unwrap();
        let failures = under_load(&shared, || {
            let mut failures = Vec::new();
            for i in 0..40 {
                std::thread::sleep(Duration::from_millis(5));
                if let Err(e) =
                    admin.record_failure(&format!("user{i}"), 1_000, 5, Duration::from_secs(60))
                {
                    failures.push(e.to_string());
                }
            }
            failures
        });
        assert!(
            failures.is_empty(),
            "writes that waited out the busy timeout: {failures:?}"
        );
        drop(committer);
        assert_eq!(shared.failures("user39", 1_000).unwrap().count, 1);
    }

    #[test]
    fn a_busy_batched_store_takes_no_turns_when_nobody_waits() {
        // Each turn holds up every request in flight for 2.5 ms: only for
        // a writer that says it waits (or after HOLD_UNASKED).
        let (_d, shared, committer, _other) = batched_pair();
        under_load(&shared, || std::thread::sleep(Duration::from_millis(600)));
        assert_eq!(shared.0.lock().turns, 0, "turns taken with nobody waiting");
        drop(committer);
    }

    #[test]
    fn a_busy_batched_store_leaves_a_turn_when_asked() {
        use std::os::fd::AsRawFd;
        let (d, shared, committer, _other) = batched_pair();
        let login = WaitSignal::open(&d.path().join("state.db")).unwrap();
        let busy_for = |st: &mut SharedState, held: Duration| {
            let now = std::time::Instant::now();
            st.last_commit = now;
            st.held_since = now.checked_sub(held).unwrap();
        };
        let mut st = shared.0.lock();
        busy_for(&mut st, HOLD_MAX * 2);
        st.give_others_a_turn();
        assert_eq!(st.turns, 0, "a turn with nobody waiting");
        assert!(WaitSignal::set(login.0.as_raw_fd(), true));
        let t = std::time::Instant::now();
        st.give_others_a_turn();
        assert_eq!(st.turns, 1, "no turn for a waiting login");
        assert!(t.elapsed() >= TURN);
        WaitSignal::set(login.0.as_raw_fd(), false);
        busy_for(&mut st, HOLD_UNASKED / 2);
        st.give_others_a_turn();
        assert_eq!(st.turns, 1, "an unasked turn before HOLD_UNASKED");
        busy_for(&mut st, HOLD_UNASKED);
        st.give_others_a_turn();
        assert_eq!(st.turns, 2, "no turn after HOLD_UNASKED");
        // A short busy timeout brings unasked turns forward: a writer
        // that cannot say it waits must not wait it out.
        st.store.busy_timeout = Duration::from_millis(400);
        busy_for(&mut st, Duration::from_millis(200));
        st.give_others_a_turn();
        assert_eq!(st.turns, 3, "no turn after half a 400 ms busy timeout");
        drop(st);
        drop(committer);
    }

    #[test]
    fn a_write_waiting_for_the_lock_says_so_until_it_has_it() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("state.db");
        let server = SqliteStore::open(&db, Duration::from_secs(5)).unwrap();
        let signal = server.wait_signal.as_ref().unwrap();
        // The server holds the write lock, as under load.
        server.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        std::thread::scope(|scope| {
            let login = scope.spawn(|| {
                let login = SqliteStore::open(&db, Duration::from_secs(5)).unwrap();
                login.record_failure("alice", 1_000, 5, Duration::from_secs(60))
            });
            let t = std::time::Instant::now();
            while !signal.someone_waits() {
                assert!(
                    t.elapsed() < Duration::from_secs(3),
                    "the waiting write never said so"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            server.conn.execute_batch("COMMIT").unwrap();
            login.join().unwrap().unwrap();
        });
        assert!(!signal.someone_waits(), "still says it waits once written");
        assert_eq!(server.failures("alice", 1_000).unwrap().count, 1);
    }

    #[test]
    fn the_wait_signal_is_never_opened_through_a_link() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("elsewhere");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, d.path().join("state.db-waiting")).unwrap();
        assert!(WaitSignal::open(&d.path().join("state.db")).is_none());
    }

    #[test]
    fn the_wait_signal_says_whether_someone_waits() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("state.db");
        let server = WaitSignal::open(&db).unwrap();
        let login = WaitSignal::open(&db).unwrap();
        let mode = std::fs::metadata(d.path().join("state.db-waiting"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!server.someone_waits());
        assert!(WaitSignal::set(login.0.as_raw_fd(), true));
        assert!(server.someone_waits());
        WaitSignal::set(login.0.as_raw_fd(), false);
        assert!(!server.someone_waits());
        // Closing the handle ends the wait too (a process that dies while
        // it waits).
        assert!(WaitSignal::set(login.0.as_raw_fd(), true));
        drop(login);
        assert!(!server.someone_waits());
    }

    #[test]
    fn without_its_committer_a_batched_store_commits_as_it_goes() {
        // After shutdown, or should the commit thread ever die: nothing
        // deferred may wait forever, and nothing written may stay
        // uncommitted.
        let (_d, shared, committer, other) = batched_pair();
        drop(committer);
        let c = record(5, "alice");
        shared.insert_challenge(&c).unwrap();
        let (outcome, seen, _) = wait(&probe(&shared, other, c.id));
        assert_eq!(outcome, Ok(()));
        assert!(seen);
    }
}
