//! State shared by every login on the host (and by both front ends):
//! pending challenges, SMS send windows, failure counts and lockouts.
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
}

/// Result of asking to send one more SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendPermit {
    Granted,
    UserLimit,
    GlobalLimit,
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
    /// Takes one SMS from the user's and the global window, or says which
    /// limit is reached (and takes nothing).
    fn reserve_sms(
        &self,
        user: &str,
        now: Millis,
        per_user: Rate,
        global: Rate,
    ) -> Result<SendPermit, StoreError>;
    fn insert_challenge(&self, c: &ChallengeRecord) -> Result<(), StoreError>;
    fn challenge(&self, id: &ChallengeId) -> Result<Option<ChallengeRecord>, StoreError>;
    /// The newest challenge of `user` for `service` that has not expired at
    /// `now` (RADIUS append mode, where no State links the two requests).
    fn latest_challenge(
        &self,
        user: &str,
        service: &str,
        now: Millis,
    ) -> Result<Option<ChallengeRecord>, StoreError>;
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
    /// Deletes the challenge if its code MAC is still `code_mac`: true for
    /// exactly one caller, which makes each code single-use.
    fn consume(&self, id: &ChallengeId, code_mac: &[u8; 32]) -> Result<bool, StoreError>;
    fn delete_challenge(&self, id: &ChallengeId) -> Result<(), StoreError>;
    /// Forgets expired challenges and send records older than `keep`.
    fn purge(&self, now: Millis, keep: Duration) -> Result<(), StoreError>;
    /// A validated phone number remembered under `key`.
    fn cached_number(&self, key: &str) -> Result<Option<(String, Option<String>)>, StoreError>;
    fn cache_number(&self, key: &str, e164: &str, region: Option<&str>) -> Result<(), StoreError>;
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
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS challenge (
    id            TEXT PRIMARY KEY,
    user          TEXT NOT NULL,
    service       TEXT NOT NULL,
    code_mac      BLOB NOT NULL,
    phone_masked  TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    sent_at       INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    attempts_left INTEGER NOT NULL,
    resends_used  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS challenge_expires ON challenge(expires_at);
CREATE INDEX IF NOT EXISTS challenge_user ON challenge(user, service, created_at);
CREATE TABLE IF NOT EXISTS sms_sent (
    user TEXT NOT NULL,
    at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sms_sent_at ON sms_sent(at);
CREATE INDEX IF NOT EXISTS sms_sent_user ON sms_sent(user, at);
CREATE TABLE IF NOT EXISTS number_cache (
    key    TEXT PRIMARY KEY,
    e164   TEXT NOT NULL,
    region TEXT
);
CREATE TABLE IF NOT EXISTS failure (
    user         TEXT PRIMARY KEY,
    count        INTEGER NOT NULL,
    locked_until INTEGER
);
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
        Self::init(conn, display, busy_timeout)
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
        let s = SqliteStore { conn, path };
        s.conn.busy_timeout(busy_timeout).map_err(|e| s.err(e))?;
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
        s.conn.execute_batch(SCHEMA).map_err(|e| s.err(e))?;
        Ok(s)
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction.
    fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        // `unchecked_transaction` because the connection is shared behind &self;
        // each process has its own connection and uses it from one thread.
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let out = f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }
}

fn row_to_challenge(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChallengeRecord> {
    let id: String = r.get(0)?;
    let mac: Vec<u8> = r.get(3)?;
    let mut code_mac = [0u8; 32];
    if mac.len() == 32 {
        code_mac.copy_from_slice(&mac);
    }
    Ok(ChallengeRecord {
        id: ChallengeId::from_hex(&id).unwrap_or(ChallengeId([0; 16])),
        user: r.get(1)?,
        service: r.get(2)?,
        code_mac,
        phone_masked: r.get(4)?,
        created_at: r.get(5)?,
        sent_at: r.get(6)?,
        expires_at: r.get(7)?,
        attempts_left: r.get(8)?,
        resends_used: r.get(9)?,
    })
}

impl Store for SqliteStore {
    fn locked_until(&self, user: &str, now: Millis) -> Result<Option<Millis>, StoreError> {
        let until: Option<Option<Millis>> = self
            .conn
            .query_row(
                "SELECT locked_until FROM failure WHERE user = ?1",
                [user],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(until.flatten().filter(|&u| u > now))
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
                .query_row(
                    "SELECT count, locked_until FROM failure WHERE user = ?1",
                    [user],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
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
            tx.execute(
                "INSERT INTO failure (user, count, locked_until) VALUES (?1, ?2, ?3)
                 ON CONFLICT(user) DO UPDATE SET count = ?2, locked_until = ?3",
                params![user, count, locked_until],
            )?;
            Ok(FailureState {
                count,
                locked_until,
            })
        })
    }

    fn clear_failures(&self, user: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM failure WHERE user = ?1", [user])
            .map(drop)
            .map_err(|e| self.err(e))
    }

    fn unlock(&self, user: &str) -> Result<(), StoreError> {
        self.clear_failures(user)
    }

    fn failures(&self, user: &str, now: Millis) -> Result<FailureState, StoreError> {
        let row: Option<(u32, Option<Millis>)> = self
            .conn
            .query_row(
                "SELECT count, locked_until FROM failure WHERE user = ?1",
                [user],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(match row {
            None => FailureState::default(),
            Some((count, locked_until)) => FailureState {
                count,
                locked_until: locked_until.filter(|&u| u > now),
            },
        })
    }

    fn reserve_sms(
        &self,
        user: &str,
        now: Millis,
        per_user: Rate,
        global: Rate,
    ) -> Result<SendPermit, StoreError> {
        self.write(|tx| {
            let user_since = now - ms(per_user.window);
            let n_user: u32 = tx.query_row(
                "SELECT COUNT(*) FROM sms_sent WHERE user = ?1 AND at > ?2",
                params![user, user_since],
                |r| r.get(0),
            )?;
            if n_user >= per_user.count.get() {
                return Ok(SendPermit::UserLimit);
            }
            let n_all: u32 = tx.query_row(
                "SELECT COUNT(*) FROM sms_sent WHERE at > ?1",
                [now - ms(global.window)],
                |r| r.get(0),
            )?;
            if n_all >= global.count.get() {
                return Ok(SendPermit::GlobalLimit);
            }
            tx.execute(
                "INSERT INTO sms_sent (user, at) VALUES (?1, ?2)",
                params![user, now],
            )?;
            Ok(SendPermit::Granted)
        })
    }

    fn insert_challenge(&self, c: &ChallengeRecord) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO challenge (id, user, service, code_mac, phone_masked, created_at,
                   sent_at, expires_at, attempts_left, resends_used)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    c.id.to_hex(),
                    c.user,
                    c.service,
                    &c.code_mac[..],
                    c.phone_masked,
                    c.created_at,
                    c.sent_at,
                    c.expires_at,
                    c.attempts_left,
                    c.resends_used
                ],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    fn challenge(&self, id: &ChallengeId) -> Result<Option<ChallengeRecord>, StoreError> {
        self.conn
            .query_row(
                "SELECT id, user, service, code_mac, phone_masked, created_at, sent_at,
                        expires_at, attempts_left, resends_used
                 FROM challenge WHERE id = ?1",
                [id.to_hex()],
                row_to_challenge,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn latest_challenge(
        &self,
        user: &str,
        service: &str,
        now: Millis,
    ) -> Result<Option<ChallengeRecord>, StoreError> {
        self.conn
            .query_row(
                "SELECT id, user, service, code_mac, phone_masked, created_at, sent_at,
                        expires_at, attempts_left, resends_used
                 FROM challenge WHERE user = ?1 AND service = ?2 AND expires_at > ?3
                 ORDER BY created_at DESC LIMIT 1",
                params![user, service, now],
                row_to_challenge,
            )
            .optional()
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
        self.conn
            .execute(
                "UPDATE challenge SET code_mac = ?2, sent_at = ?3, expires_at = ?4,
                   attempts_left = ?5, resends_used = ?6 WHERE id = ?1",
                params![
                    id.to_hex(),
                    &code_mac[..],
                    sent_at,
                    expires_at,
                    attempts_left,
                    resends_used
                ],
            )
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    fn wrong_attempt(&self, id: &ChallengeId) -> Result<Option<u32>, StoreError> {
        let hex = id.to_hex();
        self.write(|tx| {
            let left: Option<u32> = tx
                .query_row(
                    "SELECT attempts_left FROM challenge WHERE id = ?1",
                    [&hex],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(left) = left else { return Ok(None) };
            let left = left.saturating_sub(1);
            if left == 0 {
                tx.execute("DELETE FROM challenge WHERE id = ?1", [&hex])?;
            } else {
                tx.execute(
                    "UPDATE challenge SET attempts_left = ?2 WHERE id = ?1",
                    params![hex, left],
                )?;
            }
            Ok(Some(left))
        })
    }

    fn consume(&self, id: &ChallengeId, code_mac: &[u8; 32]) -> Result<bool, StoreError> {
        self.conn
            .execute(
                "DELETE FROM challenge WHERE id = ?1 AND code_mac = ?2",
                params![id.to_hex(), &code_mac[..]],
            )
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    fn delete_challenge(&self, id: &ChallengeId) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM challenge WHERE id = ?1", [id.to_hex()])
            .map(drop)
            .map_err(|e| self.err(e))
    }

    fn cached_number(&self, key: &str) -> Result<Option<(String, Option<String>)>, StoreError> {
        self.conn
            .query_row(
                "SELECT e164, region FROM number_cache WHERE key = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn cache_number(&self, key: &str, e164: &str, region: Option<&str>) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO number_cache (key, e164, region) VALUES (?1, ?2, ?3)",
                params![key, e164, region],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    fn purge(&self, now: Millis, keep: Duration) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute("DELETE FROM challenge WHERE expires_at <= ?1", [now])?;
            tx.execute("DELETE FROM sms_sent WHERE at <= ?1", [now - ms(keep)])?;
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
        assert!(!s.consume(&c.id, &[9; 32]).unwrap());
        assert!(s
            .replace_code(&c.id, &[5; 32], 2_000, 302_000, 3, 1)
            .unwrap());
        assert!(
            !s.consume(&c.id, &c.code_mac).unwrap(),
            "old code after resend"
        );
        assert!(s.consume(&c.id, &[5; 32]).unwrap());
        assert!(!s.consume(&c.id, &[5; 32]).unwrap(), "second use");
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
        assert!(b.consume(&c.id, &c.code_mac).unwrap());
        assert!(!a.consume(&c.id, &c.code_mac).unwrap());
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
    fn latest_challenge_is_per_user_and_service_and_unexpired() {
        let s = SqliteStore::open_in_memory().unwrap();
        let mut a = record(5, "alice");
        s.insert_challenge(&a).unwrap();
        a.id = ChallengeId([6; 16]);
        a.created_at += 10;
        s.insert_challenge(&a).unwrap();
        let got = s.latest_challenge("alice", "sshd", 2_000).unwrap().unwrap();
        assert_eq!(got.id, ChallengeId([6; 16]));
        assert!(s
            .latest_challenge("alice", "sudo", 2_000)
            .unwrap()
            .is_none());
        assert!(s.latest_challenge("bob", "sshd", 2_000).unwrap().is_none());
        assert!(s
            .latest_challenge("alice", "sshd", a.expires_at)
            .unwrap()
            .is_none());
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
