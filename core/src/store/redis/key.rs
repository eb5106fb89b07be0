//! The code key's fingerprint on a shared store (`P kf`): recorded by
//! the first host that uses the store, checked by every connection as it
//! opens (see the module doc of [`super`]), and the advice a host with
//! another key is given.

use redis::ConnectionLike;

use super::conn::Bounded;
use super::RedisStore;
use crate::config::RedisAddr;
use crate::store::{KeyFingerprint, StoreError};

impl RedisStore {
    /// [`crate::store::Store::check_key_fingerprint`]: on a shared
    /// connection, or on the handle's own.
    pub(super) fn check_key(&self, key: &KeyFingerprint) -> Result<(), StoreError> {
        if let Some(mux) = &self.mux {
            *self.key_fp_lock() = Some(key.clone());
            // A connection the handles share opens with the check; this
            // checks the one open now (or opens one), so a server refuses
            // to start at once.
            let checked = self
                .run(|c| self.read_key_check(c, key))
                .and_then(|stored| self.judge_key(key, stored));
            if checked.is_err() {
                mux.reset();
            }
            return checked;
        }
        let mut g = self.lock();
        {
            let mut k = self.key_fp_lock();
            if k.as_ref() == Some(key) && g.is_some() {
                // Every connection opened since it was set was checked.
                return Ok(());
            }
            *k = Some(key.clone());
        }
        let Some(conn) = &mut *g else {
            // Now, not on first use: a server refuses to start at once.
            // The connection opens with the check (no round trip more).
            *g = Some(self.connect()?);
            return Ok(());
        };
        let checked = self.check_key_on(&mut Bounded(&mut conn.c), key);
        if checked.is_err() {
            // Not known to be this key's: the next call reconnects and
            // checks again (and fails the same way while they differ).
            *g = None;
        }
        checked
    }

    /// Where the key fingerprint is kept: `P kf`.
    pub(super) fn kf_key(&self) -> String {
        format!("{}kf", self.spec.key_prefix)
    }

    /// Records `key`'s fingerprint if the store has none, and compares it
    /// with the one it has: one round trip.
    pub(super) fn check_key_on(
        &self,
        conn: &mut dyn ConnectionLike,
        key: &KeyFingerprint,
    ) -> Result<(), StoreError> {
        let stored = self
            .read_key_check(conn, key)
            .map_err(|e| self.map_err(&e))?;
        self.judge_key(key, stored)
    }

    /// `SET P kf <fp> NX; GET P kf` in one MULTI block: the fingerprint
    /// the store has once `key`'s is recorded if it had none.
    pub(super) fn read_key_check(
        &self,
        conn: &mut dyn ConnectionLike,
        key: &KeyFingerprint,
    ) -> redis::RedisResult<Option<String>> {
        let (stored,): (Option<String>,) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.kf_key())
            .arg(&key.fingerprint)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(self.kf_key())
            .query(conn)?;
        Ok(stored)
    }

    /// Whether the fingerprint [`Self::read_key_check`] read is `key`'s.
    pub(super) fn judge_key(
        &self,
        key: &KeyFingerprint,
        stored: Option<String>,
    ) -> Result<(), StoreError> {
        match stored {
            Some(s) if s == key.fingerprint => Ok(()),
            // Deleted between SET and GET inside MULTI cannot happen; a
            // missing value means something else answered.
            None => Err(self.corrupt("the key fingerprint could not be recorded")),
            Some(stored) => Err(self.key_mismatch(key, stored)),
        }
    }

    pub(super) fn key_mismatch(&self, key: &KeyFingerprint, stored: String) -> StoreError {
        let kf = self.kf_key();
        StoreError::KeyMismatch(Box::new(crate::store::KeyMismatch {
            location: self.spec.url.clone(),
            record: format!(
                "kept in key {kf:?}, store.key_prefix {:?}",
                self.spec.key_prefix
            ),
            forget: format!(
                "delete that key once: {} DEL {kf} (the next host to use the store records its \
                 key)",
                self.cli_command()
            ),
            key_file: key.key_file.display().to_string(),
            ours: key.fingerprint.clone(),
            stored,
        }))
    }

    /// The `redis-cli` command line that reaches this store, for advice
    /// (`--askpass` asks the password, so none is shown).
    pub fn cli_command(&self) -> String {
        let s = &self.spec;
        let mut cmd = match &s.addr {
            RedisAddr::Tcp { host, port } => format!("redis-cli -h {host} -p {port}"),
            RedisAddr::Unix(path) => format!("redis-cli -s {}", path.display()),
            RedisAddr::Tls {
                host,
                port,
                ca_file,
            } => {
                let mut c = format!("redis-cli --tls -h {host} -p {port}");
                if let Some(ca) = ca_file {
                    c.push_str(&format!(" --cacert {}", ca.display()));
                }
                c
            }
            RedisAddr::Sentinel(st) => {
                let (h, p) = st
                    .sentinels
                    .first()
                    .map_or(("SENTINEL", 26379), |(h, p)| (h.as_str(), *p));
                format!(
                    "(on the master `redis-cli -h {h} -p {p} SENTINEL \
                     get-master-addr-by-name {}` names) redis-cli -h MASTER -p PORT",
                    st.master_name
                )
            }
        };
        if s.db != 0 {
            cmd.push_str(&format!(" -n {}", s.db));
        }
        if let Some(user) = &s.username {
            cmd.push_str(&format!(" --user {user}"));
        }
        if s.password_file.is_some() {
            cmd.push_str(" --askpass");
        }
        cmd
    }

    /// The key fingerprint the store was first used with, if any (read
    /// only: `smsotp doctor`).
    pub fn stored_key_fingerprint(&self) -> Result<Option<String>, StoreError> {
        self.run(|c| redis::cmd("GET").arg(self.kf_key()).query(c))
    }

    /// Compares `key` with the store's fingerprint without recording
    /// anything: `Ok(true)` if they agree, `Ok(false)` if the store has
    /// none yet, [`StoreError::KeyMismatch`] if it has another.
    pub fn compare_key_fingerprint(&self, key: &KeyFingerprint) -> Result<bool, StoreError> {
        match self.stored_key_fingerprint()? {
            None => Ok(false),
            Some(s) if s == key.fingerprint => Ok(true),
            Some(s) => Err(self.key_mismatch(key, s)),
        }
    }
}
