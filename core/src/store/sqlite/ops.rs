//! The [`Store`] operations of [`SqliteStore`] in SQL: each that reads
//! and then writes runs in one write transaction ([`SqliteStore::write`]).

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::migrate::{backup_codes_in, export_in, import_in};
use super::sweep::Kinds;
use super::SqliteStore;
use crate::clock::{ms, Millis};
use crate::config::Rate;
use crate::otp::ChallengeId;
use crate::phone::NumberCache;
use crate::store::counters::{self, Counted, CounterKey, Counts, Day};
use crate::store::limits::{
    self, BreakerState, BreakerTrip, KeyedWindow, LimitKind, SendDecision, SendLimits,
};
use crate::store::migrate::{Existing, Outcome, Record, Snapshot};
use crate::store::{
    BackupHash, ChallengeRecord, FailureState, PhoneRecord, SmsWindow, Step, Store, StoreError,
};

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

/// `user`'s sends after `since`, oldest first.
fn user_sends_since(
    tx: &Connection,
    user: &str,
    since: Millis,
) -> rusqlite::Result<Vec<(Millis, u32)>> {
    tx.prepare_cached("SELECT at, n FROM sms_sent WHERE user = ?1 AND at > ?2 ORDER BY at")?
        .query_map(params![user, since], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// The sends counted in window `w` at `now`: the global one in
/// `sms_global`, the others in `sms_limit` by name.
fn window_count(tx: &Connection, w: &KeyedWindow, now: Millis) -> rusqlite::Result<u32> {
    let size = w.bucket_ms();
    let oldest = (now - ms(w.rate.window)) / size;
    if w.kind == LimitKind::Global {
        return tx
            .prepare_cached(
                "SELECT COALESCE(SUM(count), 0) FROM sms_global WHERE size = ?1 AND bucket > ?2",
            )?
            .query_row(params![size, oldest], |r| r.get(0));
    }
    tx.prepare_cached(
        "SELECT COALESCE(SUM(count), 0) FROM sms_limit
         WHERE name = ?1 AND size = ?2 AND bucket > ?3",
    )?
    .query_row(params![w.name, size, oldest], |r| r.get(0))
}

/// The trip of `w`'s breaker in force at `now`, if any.
fn trip_of(tx: &Connection, w: &KeyedWindow, now: Millis) -> rusqlite::Result<Option<BreakerTrip>> {
    tx.prepare_cached("SELECT at, until, user, spent FROM breaker WHERE name = ?1 AND until > ?2")?
        .query_row(params![w.name, now], |r| {
            Ok(BreakerTrip {
                at: r.get(0)?,
                until: r.get(1)?,
                user: r.get(2)?,
                spent: r.get(3)?,
            })
        })
        .optional()
}

/// `w`'s breaker at `now`.
fn breaker_in(tx: &Connection, w: &KeyedWindow, now: Millis) -> rusqlite::Result<BreakerState> {
    Ok(BreakerState {
        trip: trip_of(tx, w, now)?,
        spent: window_count(tx, w, now)?,
    })
}

/// The checks and bookkeeping of one SMS, inside a write transaction.
fn reserve_in(
    tx: &Connection,
    user: &str,
    now: Millis,
    l: &SendLimits,
) -> rusqlite::Result<SendDecision> {
    let sends = user_sends_since(tx, user, now - ms(l.keep_user_sends()))?;
    let mut counts = Vec::with_capacity(l.windows.len());
    for w in &l.windows {
        counts.push(window_count(tx, w, now)?);
    }
    let mut tripped = false;
    for w in l.windows.iter().filter(|w| w.is_breaker()) {
        tripped |= trip_of(tx, w, now)?.is_some();
    }
    let d = limits::decide(l, &sends, &counts, tripped, now);
    if d.tripped_now {
        if let Some((w, &n)) = l.windows.iter().zip(&counts).find(|(w, _)| w.is_breaker()) {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO breaker (name, at, until, user, spent)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![w.name, now, now + ms(w.rate.window), user, n])?;
        }
    }
    if d.refused.is_some() {
        return Ok(d);
    }
    tx.prepare_cached(
        "INSERT INTO sms_sent (user, at, n) VALUES (?1, ?2, 1)
         ON CONFLICT(user, at) DO UPDATE SET n = n + 1",
    )?
    .execute(params![user, now])?;
    for w in &l.windows {
        let size = w.bucket_ms();
        if w.kind == LimitKind::Global {
            tx.prepare_cached(
                "INSERT INTO sms_global (size, bucket, count) VALUES (?1, ?2, 1)
                 ON CONFLICT(size, bucket) DO UPDATE SET count = count + 1",
            )?
            .execute(params![size, now / size])?;
        } else {
            tx.prepare_cached(
                "INSERT INTO sms_limit (name, size, bucket, count) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(name, size, bucket) DO UPDATE SET count = count + ?4",
            )?
            .execute(params![w.name, size, now / size, w.cost])?;
        }
    }
    Ok(d)
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

    fn reserve_sends(
        &self,
        user: &str,
        now: Millis,
        limits: &SendLimits,
    ) -> Result<SendDecision, StoreError> {
        self.write(|tx| {
            // Sends only: a resend's challenge may have expired, and is
            // renewed by this very send.
            if self.sweep_due(now) {
                let keep = limits.longest();
                SqliteStore::sweep_in(tx, now, Kinds::Sends { keep })?;
            }
            reserve_in(tx, user, now, limits)
        })
    }

    fn insert_challenge(&self, c: &ChallengeRecord) -> Result<(), StoreError> {
        if self.sweep_due(c.created_at) {
            return self.write(|tx| {
                SqliteStore::sweep_in(tx, c.created_at, Kinds::Challenges)?;
                insert_in(tx, c)
            });
        }
        insert_in(&self.conn, c).map_err(|e| self.err(e))
    }

    fn start_challenge_with(
        &self,
        c: &ChallengeRecord,
        limits: &SendLimits,
    ) -> Result<SendDecision, StoreError> {
        self.write(|tx| {
            let now = c.created_at;
            if self.sweep_due(now) {
                let keep = limits.longest();
                SqliteStore::sweep_in(tx, now, Kinds::Both { keep })?;
            }
            let d = reserve_in(tx, &c.user, now, limits)?;
            if d.refused.is_none() {
                insert_in(tx, c)?;
            }
            Ok(d)
        })
    }

    fn breaker(&self, w: &KeyedWindow, now: Millis) -> Result<BreakerState, StoreError> {
        breaker_in(&self.conn, w, now).map_err(|e| self.err(e))
    }

    fn add_counts(&self, at: Millis, counts: &[(CounterKey, u64)]) -> Result<(), StoreError> {
        let day = Day::of(at);
        self.write(|tx| {
            // The primary key starts with the day: one short range.
            tx.prepare_cached("DELETE FROM sms_count WHERE day < ?1")?
                .execute([day.oldest_kept().0])?;
            let mut st = tx.prepare_cached(
                "INSERT INTO sms_count (day, provider, country, what, n)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(day, provider, country, what) DO UPDATE SET n = n + ?5",
            )?;
            for (k, n) in counts {
                let n = i64::try_from(*n).unwrap_or(i64::MAX);
                st.execute(params![day.0, k.provider, k.country, k.what.name(), n])?;
            }
            Ok(())
        })
    }

    fn counters(&self, day: Day, now: Millis) -> Result<Counts, StoreError> {
        if !day.kept_at(now) {
            return Ok(Vec::new());
        }
        let rows = self
            .conn
            .prepare_cached("SELECT provider, country, what, n FROM sms_count WHERE day = ?1")
            .and_then(|mut st| {
                st.query_map([day.0], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| self.err(e))?;
        Ok(counters::tidy(
            rows.into_iter()
                .filter_map(|(provider, country, what, n)| {
                    Some((
                        CounterKey {
                            provider,
                            country,
                            what: Counted::parse(&what)?,
                        },
                        u64::try_from(n).unwrap_or(0),
                    ))
                })
                .collect(),
        ))
    }

    fn reset_breaker(&self, w: &KeyedWindow, now: Millis) -> Result<BreakerState, StoreError> {
        self.write(|tx| {
            let before = breaker_in(tx, w, now)?;
            tx.prepare_cached("DELETE FROM breaker WHERE name = ?1")?
                .execute([&w.name])?;
            tx.prepare_cached("DELETE FROM sms_limit WHERE name = ?1")?
                .execute([&w.name])?;
            Ok(before)
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

    fn phone(&self, user: &str) -> Result<Option<PhoneRecord>, StoreError> {
        phone_in(&self.conn, user).map_err(|e| self.err(e))
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

    fn set_language(&self, user: &str, lang: Option<&str>) -> Result<(), StoreError> {
        self.write(|tx| match lang {
            Some(l) => tx
                .prepare_cached(
                    "INSERT INTO language (user, lang) VALUES (?1, ?2)
                     ON CONFLICT(user) DO UPDATE SET lang = ?2",
                )?
                .execute(params![user, l])
                .map(drop),
            None => tx
                .prepare_cached("DELETE FROM language WHERE user = ?1")?
                .execute([user])
                .map(drop),
        })
    }

    fn language(&self, user: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT lang FROM language WHERE user = ?1")
            .and_then(|mut st| st.query_row([user], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
    }

    fn export(&self, now: Millis) -> Result<Snapshot, StoreError> {
        // One read transaction, so the kinds are read as of one moment
        // (inside a batch of a shared store, the batch's transaction is).
        let tx = if self.conn.is_autocommit() {
            Some(self.conn.unchecked_transaction().map_err(|e| self.err(e))?)
        } else {
            None
        };
        let snap = export_in(&self.conn, now).map_err(|e| self.err(e))?;
        if let Some(tx) = tx {
            tx.commit().map_err(|e| self.err(e))?;
        }
        Ok(snap)
    }

    fn import_record(&self, rec: &Record<'_>, now: Millis) -> Result<Outcome, StoreError> {
        self.write(|tx| {
            let user = rec.user();
            let existing = match rec {
                Record::Phone(_) => Existing::Phone(phone_in(tx, user)?),
                Record::BackupCodes(_) => Existing::BackupCodes(backup_codes_in(tx, user)?),
                Record::OptOut(_) => Existing::OptOut(
                    tx.prepare_cached("SELECT 1 FROM opt_out WHERE user = ?1")?
                        .exists([user])?,
                ),
                Record::Language(_) => Existing::Language(
                    tx.prepare_cached("SELECT lang FROM language WHERE user = ?1")?
                        .query_row([user], |r| r.get(0))
                        .optional()?,
                ),
                Record::Lockout(_) => {
                    Existing::Lockout(failure_in(tx, user, now)?.and_then(|f| f.locked_until))
                }
            };
            let outcome = rec.outcome(&existing);
            if outcome == Outcome::Copied {
                import_in(tx, rec, now)?;
            }
            Ok(outcome)
        })
    }

    fn number_cache(&self) -> &dyn NumberCache {
        self
    }
}

fn phone_in(conn: &Connection, user: &str) -> rusqlite::Result<Option<PhoneRecord>> {
    conn.prepare_cached("SELECT e164, set_at, set_by FROM phone WHERE user = ?1")?
        .query_row([user], |r| {
            Ok(PhoneRecord {
                e164: r.get(0)?,
                set_at: r.get(1)?,
                set_by: r.get(2)?,
            })
        })
        .optional()
}
