//! The host's cache of validated phone numbers, in SQLite's
//! `number_cache` table.

use rusqlite::{params, OptionalExtension};

use super::SqliteStore;
use crate::phone::NumberCache;
use crate::store::StoreError;

/// The host's cache of validated numbers, in the `number_cache` table.
impl SqliteStore {
    /// A phone number validated before on this host, remembered under
    /// `key` (built by [`crate::phone`] from the raw text and the build's
    /// version, so an entry never changes meaning): (E.164, region).
    pub fn validated_number(
        &self,
        key: &str,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        self.conn
            .prepare_cached("SELECT e164, region FROM number_cache WHERE key = ?1")
            .and_then(|mut st| {
                st.query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| self.err(e))
    }

    /// Remembers a validated number under `key` (see
    /// [`SqliteStore::validated_number`]).
    pub fn remember_validated_number(
        &self,
        key: &str,
        e164: &str,
        region: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO number_cache (key, e164, region) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![key, e164, region])
            .map(drop)
        })
    }
}

/// The `number_cache` table as the host's [`NumberCache`]. A failing cache
/// is only slower, never wrong, so its errors are ignored.
impl NumberCache for SqliteStore {
    fn get(&self, key: &str) -> Option<(String, Option<String>)> {
        self.validated_number(key).ok().flatten()
    }
    fn put(&self, key: &str, e164: &str, region: Option<&str>) {
        let _ = self.remember_validated_number(key, e164, region);
    }
}
