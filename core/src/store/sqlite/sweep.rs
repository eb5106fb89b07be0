//! How a [`SqliteStore`] forgets what has expired: the writes that add
//! challenges and sends delete, now and then, the expired rows of their
//! kind. Every read that decides something already ignores stale rows, so
//! this only keeps the file small; but it scans whole tables, so it runs
//! rarely: on about one write in [`ODDS`], and at most every [`EVERY_MS`]
//! per handle (a long-lived server). That is the cost the login flow paid
//! when it purged the store itself, on about one login in 32 and at most
//! every 30 s per engine.
//!
//! A resend never sweeps challenges: the challenge it renews may have
//! expired (a new code is offered after expiry) and must still be there.

use std::cell::Cell;
use std::time::Duration;

use rusqlite::Connection;

use super::SqliteStore;
use crate::clock::{ms, Millis};
use crate::random::{OsRandom, RandomSource};

/// A write sweeps when a random byte is below this (8 in 256: one in 32).
const ODDS: u8 = 8;

/// At least this long between two sweeps of one handle, in milliseconds.
const EVERY_MS: Millis = 30_000;

/// What a write may sweep, by what it adds.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kinds {
    /// Challenges expired at the write's `now`.
    Challenges,
    /// Sends older than `keep` (the longest of the per-user and global
    /// windows the write counted against: older sends count for nothing).
    Sends { keep: Duration },
    /// Both.
    Both { keep: Duration },
}

/// The sweep schedule of one handle.
pub(super) struct Sweeper {
    /// When this handle last swept (0: never).
    last: Cell<Millis>,
    /// Where the dice come from: the OS in production; tests inject one.
    dice: Box<dyn RandomSource + Send>,
}

impl Sweeper {
    pub(super) fn new() -> Self {
        Sweeper {
            last: Cell::new(0),
            dice: Box::new(OsRandom),
        }
    }

    /// Whether a write at `now` should sweep (and if so, the sweep is
    /// counted as done). A failing source of randomness only puts the
    /// sweep off.
    fn due(&self, now: Millis) -> bool {
        if now - self.last.get() < EVERY_MS {
            return false;
        }
        let mut dice = [0u8; 1];
        if self.dice.fill(&mut dice).is_err() || dice[0] >= ODDS {
            return false;
        }
        self.last.set(now);
        true
    }
}

impl SqliteStore {
    /// Whether a write at `now` should sweep (see [`Sweeper`]).
    pub(super) fn sweep_due(&self, now: Millis) -> bool {
        self.sweeper.due(now)
    }

    /// Inside a write transaction at `now`: deletes the expired rows of
    /// `kinds`.
    pub(super) fn sweep_in(tx: &Connection, now: Millis, kinds: Kinds) -> rusqlite::Result<()> {
        if let Kinds::Challenges | Kinds::Both { .. } = kinds {
            tx.prepare_cached("DELETE FROM challenge WHERE expires_at <= ?1")?
                .execute([now])?;
        }
        if let Kinds::Sends { keep } | Kinds::Both { keep } = kinds {
            let before = now - ms(keep);
            tx.prepare_cached("DELETE FROM sms_sent WHERE at <= ?1")?
                .execute([before])?;
            // Buckets hold their start / size; anything older than `keep`
            // counts for nothing.
            tx.prepare_cached("DELETE FROM sms_global WHERE (bucket + 1) * size <= ?1")?
                .execute([before])?;
            // Keyed windows by their own length (see `limits::bucket_stale`),
            // whatever this host's configuration says.
            tx.prepare_cached("DELETE FROM sms_limit WHERE (bucket + 62) * size <= ?1")?
                .execute([now])?;
        }
        Ok(())
    }

    /// Tests: the dice this handle's sweeps roll.
    #[cfg(test)]
    pub(crate) fn set_sweep_dice(&mut self, dice: Box<dyn RandomSource + Send>) {
        self.sweeper.dice = dice;
    }
}
