//! [`super::SqliteStore`]'s side of `smsotp store migrate` (see
//! [`crate::store::migrate`]): everything
//! [`crate::store::Store::export`] reads, and one record written by
//! [`crate::store::Store::import_record`], each on the connection or
//! transaction the caller holds.

use rusqlite::{params, Connection};

use crate::clock::Millis;
use crate::store::migrate::{
    BackupSet, LeftBehind, Lockout, OptOut, Record, Snapshot, UserLanguage, UserPhone,
};
use crate::store::{BackupHash, PhoneRecord};

/// A user's backup code hashes, oldest first.
pub(super) fn backup_codes_in(conn: &Connection, user: &str) -> rusqlite::Result<Vec<BackupHash>> {
    conn.prepare_cached("SELECT tag, hash FROM backup_code WHERE user = ?1 ORDER BY id")?
        .query_map([user], |r| {
            Ok(BackupHash {
                tag: r.get(0)?,
                hash: r.get(1)?,
            })
        })?
        .collect()
}

/// Everything [`crate::store::Store::export`] reads, on `conn`.
pub(super) fn export_in(conn: &Connection, now: Millis) -> rusqlite::Result<Snapshot> {
    let phones = conn
        .prepare("SELECT user, e164, set_at, set_by FROM phone ORDER BY user")?
        .query_map([], |r| {
            Ok(UserPhone {
                user: r.get(0)?,
                phone: PhoneRecord {
                    e164: r.get(1)?,
                    set_at: r.get(2)?,
                    set_by: r.get(3)?,
                },
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut backup_codes: Vec<BackupSet> = Vec::new();
    let mut st =
        conn.prepare("SELECT user, tag, hash, created_at FROM backup_code ORDER BY user, id")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let user: String = r.get(0)?;
        let code = BackupHash {
            tag: r.get(1)?,
            hash: r.get(2)?,
        };
        let at: Millis = r.get(3)?;
        match backup_codes.last_mut() {
            Some(set) if set.user == user => {
                set.codes.push(code);
                set.set_at = set.set_at.map(|s| s.min(at));
            }
            _ => backup_codes.push(BackupSet {
                user,
                codes: vec![code],
                set_at: Some(at),
            }),
        }
    }
    let opt_outs = conn
        .prepare("SELECT user, set_by, set_at FROM opt_out ORDER BY user")?
        .query_map([], |r| {
            Ok(OptOut {
                user: r.get(0)?,
                set_by: r.get(1)?,
                set_at: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let languages = conn
        .prepare("SELECT user, lang FROM language ORDER BY user")?
        .query_map([], |r| {
            Ok(UserLanguage {
                user: r.get(0)?,
                language: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let lockouts = conn
        .prepare(
            "SELECT user, count, locked_until FROM failure WHERE locked_until > ?1 ORDER BY user",
        )?
        .query_map([now], |r| {
            Ok(Lockout {
                user: r.get(0)?,
                count: r.get(1)?,
                locked_until: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<u64> {
        conn.prepare(sql)?
            .query_row(p, |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
    };
    let left_behind = LeftBehind {
        challenges: count(
            "SELECT COUNT(*) FROM challenge WHERE expires_at > ?1",
            &[&now],
        )?,
        send_windows: count("SELECT COUNT(DISTINCT user) FROM sms_sent", &[])?,
        failure_counts: count(
            "SELECT COUNT(*) FROM failure WHERE locked_until IS NULL OR locked_until <= ?1",
            &[&now],
        )?,
    };
    Ok(Snapshot {
        phones,
        backup_codes,
        opt_outs,
        languages,
        lockouts,
        left_behind,
    })
}

/// Writes `rec` over what the store holds for its user and kind.
pub(super) fn import_in(tx: &Connection, rec: &Record<'_>, now: Millis) -> rusqlite::Result<()> {
    match rec {
        Record::Phone(p) => tx
            .prepare_cached(
                "INSERT INTO phone (user, e164, set_at, set_by) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(user) DO UPDATE SET e164 = ?2, set_at = ?3, set_by = ?4",
            )?
            .execute(params![
                p.user,
                p.phone.e164,
                p.phone.set_at,
                p.phone.set_by
            ])
            .map(drop),
        Record::BackupCodes(b) => {
            tx.prepare_cached("DELETE FROM backup_code WHERE user = ?1")?
                .execute([&b.user])?;
            for (i, c) in b.codes.iter().enumerate() {
                tx.prepare_cached(
                    "INSERT INTO backup_code (user, id, tag, hash, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    b.user,
                    i as i64 + 1,
                    &c.tag[..],
                    c.hash,
                    b.set_at.unwrap_or(now)
                ])?;
            }
            Ok(())
        }
        Record::OptOut(o) => tx
            .prepare_cached(
                "INSERT INTO opt_out (user, set_at, set_by) VALUES (?1, ?2, ?3)
                 ON CONFLICT(user) DO UPDATE SET set_at = ?2, set_by = ?3",
            )?
            .execute(params![o.user, o.set_at, o.set_by])
            .map(drop),
        Record::Language(l) => tx
            .prepare_cached(
                "INSERT INTO language (user, lang) VALUES (?1, ?2)
                 ON CONFLICT(user) DO UPDATE SET lang = ?2",
            )?
            .execute(params![l.user, l.language])
            .map(drop),
        Record::Lockout(l) => tx
            .prepare_cached(
                "INSERT INTO failure (user, count, locked_until) VALUES (?1, ?2, ?3)
                 ON CONFLICT(user) DO UPDATE SET count = ?2, locked_until = ?3",
            )?
            .execute(params![l.user, l.count, l.locked_until])
            .map(drop),
    }
}
