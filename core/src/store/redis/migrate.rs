//! [`RedisStore`]'s side of [`crate::store::migrate`].
//!
//! Reading walks the store's keys with SCAN under `store.key_prefix`
//! (never KEYS, which stops the server for as long as it runs), so other
//! sites' keys on the same server, under other prefixes, are never read.
//! Writing one record is one WATCH/MULTI transaction on the record's key:
//! the kind's rule decides in Rust, as for every backend, and the write
//! happens only if nobody changed the key in between (else it is judged
//! again, a few times at most).

use std::collections::{BTreeSet, HashMap};

use redis::{ConnectionLike, Pipeline, RedisResult};

use super::codec::{count, PhoneFields};
use super::RedisStore;
use crate::clock::Millis;
use crate::store::migrate::{
    BackupSet, Existing, LeftBehind, Lockout, OptOut, Outcome, Record, Snapshot, UserLanguage,
    UserPhone,
};
use crate::store::{BackupHash, StoreError};

/// Keys asked for per SCAN step, and read per pipeline.
const BATCH: usize = 500;

/// How often one record's transaction is tried while others keep changing
/// its key.
const TRIES: u32 = 20;

/// `text` as a SCAN MATCH pattern that matches only itself.
fn glob_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// An opt-out as the `o` hash holds it: "set_at set_by".
pub(super) fn opt_out_value(set_by: &str, set_at: Millis) -> String {
    format!("{set_at} {set_by}")
}

/// A failure record's fields as HMGET reads them: count, locked until.
type FailureFields = (Option<i64>, Option<Millis>);

/// What the store's keys hold, before it is checked.
#[derive(Default)]
struct Raw {
    phones: Vec<(String, PhoneFields)>,
    backups: Vec<(String, HashMap<String, Vec<u8>>)>,
    opt_outs: HashMap<String, String>,
    languages: Vec<(String, Option<String>)>,
    failures: Vec<(String, FailureFields)>,
    challenges: u64,
    send_windows: u64,
}

impl RedisStore {
    /// An opt-out's "set_at set_by", as (set_by, set_at).
    pub(super) fn decode_opt_out(&self, v: &str) -> Result<(String, Millis), StoreError> {
        v.split_once(' ')
            .and_then(|(at, by)| Some((by.to_owned(), at.parse::<Millis>().ok()?)))
            .ok_or_else(|| self.corrupt("an opt-out is not what this smsotp writes"))
    }

    /// The part after `P kind:` of every hash key of this store of that
    /// kind, each once, in order.
    fn names_of(&self, c: &mut dyn ConnectionLike, kind: &str) -> RedisResult<Vec<String>> {
        self.names_of_type(c, kind, "hash")
    }

    /// [`Self::names_of`] for keys of the Redis type `type_`.
    fn names_of_type(
        &self,
        c: &mut dyn ConnectionLike,
        kind: &str,
        type_: &str,
    ) -> RedisResult<Vec<String>> {
        let head = self.key(kind, "");
        let pattern = format!("{}*", glob_literal(&head));
        let mut names = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(BATCH)
                .arg("TYPE")
                .arg(type_)
                .query(c)?;
            names.extend(
                keys.iter()
                    .filter_map(|k| k.strip_prefix(head.as_bytes()))
                    .filter_map(|n| std::str::from_utf8(n).ok())
                    .map(str::to_owned),
            );
            if next == 0 {
                return Ok(names.into_iter().collect());
            }
            cursor = next;
        }
    }

    /// `read` of each of `names`' keys of `kind`, pipelined `BATCH` at a
    /// time.
    fn read_each<T: redis::FromRedisValue>(
        &self,
        c: &mut dyn ConnectionLike,
        kind: &str,
        names: Vec<String>,
        read: impl Fn(&mut Pipeline, String),
    ) -> RedisResult<Vec<(String, T)>> {
        let mut out = Vec::with_capacity(names.len());
        for chunk in names.chunks(BATCH) {
            let mut p = redis::pipe();
            for n in chunk {
                read(&mut p, self.key(kind, n));
            }
            let values: Vec<T> = p.query(c)?;
            out.extend(chunk.iter().cloned().zip(values));
        }
        Ok(out)
    }

    fn read_all(&self, c: &mut dyn ConnectionLike, now: Millis) -> RedisResult<Raw> {
        let users = self.names_of(c, "p")?;
        let phones = self.read_each(c, "p", users, |p, k| {
            p.cmd("HMGET").arg(k).arg("e").arg("t").arg("b");
        })?;
        let users = self.names_of(c, "b")?;
        let backups = self.read_each(c, "b", users, |p, k| {
            p.cmd("HGETALL").arg(k);
        })?;
        let opt_outs = redis::cmd("HGETALL").arg(self.opt_key()).query(c)?;
        let users = self.names_of_type(c, "lang", "string")?;
        let languages = self.read_each(c, "lang", users, |p, k| {
            p.cmd("GET").arg(k);
        })?;
        let users = self.names_of(c, "f")?;
        let failures = self.read_each(c, "f", users, |p, k| {
            p.cmd("HMGET").arg(k).arg("n").arg("u");
        })?;
        let ids = self.names_of(c, "c")?;
        let expiries: Vec<(String, Option<Millis>)> = self.read_each(c, "c", ids, |p, k| {
            p.cmd("HGET").arg(k).arg("e");
        })?;
        let challenges = expiries
            .iter()
            .filter(|(_, e)| e.is_some_and(|e| e > now))
            .count();
        let send_windows = self.names_of(c, "s")?.len();
        Ok(Raw {
            phones,
            backups,
            opt_outs,
            languages,
            failures,
            challenges: u64::try_from(challenges).unwrap_or(u64::MAX),
            send_windows: u64::try_from(send_windows).unwrap_or(u64::MAX),
        })
    }

    fn decode_codes(&self, h: HashMap<String, Vec<u8>>) -> Result<Vec<BackupHash>, StoreError> {
        let mut codes = h
            .into_iter()
            .map(|(hash, tag)| {
                let tag = <[u8; 8]>::try_from(tag.as_slice())
                    .map_err(|_| self.corrupt("a backup code's tag is not 8 bytes"))?;
                Ok(BackupHash { tag, hash })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        codes.sort_by(|a, b| a.hash.cmp(&b.hash));
        Ok(codes)
    }

    /// See [`crate::store::Store::export`]. Keys that vanish between the
    /// SCAN and their read are left out.
    pub(super) fn export_all(&self, now: Millis) -> Result<Snapshot, StoreError> {
        let raw = self.run(|c| self.read_all(c, now))?;
        let mut phones = Vec::new();
        for (user, fields) in raw.phones {
            if let Some(phone) = self.decode_phone(fields)? {
                phones.push(UserPhone { user, phone });
            }
        }
        let mut backup_codes = Vec::new();
        for (user, h) in raw.backups {
            let codes = self.decode_codes(h)?;
            if !codes.is_empty() {
                backup_codes.push(BackupSet {
                    user,
                    codes,
                    set_at: None,
                });
            }
        }
        let mut opt_outs = Vec::new();
        for (user, v) in raw.opt_outs {
            let (set_by, set_at) = self.decode_opt_out(&v)?;
            opt_outs.push(OptOut {
                user,
                set_by,
                set_at,
            });
        }
        opt_outs.sort_by(|a, b| a.user.cmp(&b.user));
        let languages = raw
            .languages
            .into_iter()
            .filter_map(|(user, language)| {
                Some(UserLanguage {
                    user,
                    language: language?,
                })
            })
            .collect();
        let mut lockouts = Vec::new();
        let mut failure_counts = 0;
        for (user, (n, until)) in raw.failures {
            match (n, until.filter(|&u| u > now)) {
                (Some(n), Some(locked_until)) => lockouts.push(Lockout {
                    user,
                    count: count(n),
                    locked_until,
                }),
                (Some(_), None) => failure_counts += 1,
                (None, _) => {}
            }
        }
        Ok(Snapshot {
            phones,
            backup_codes,
            opt_outs,
            languages,
            lockouts,
            left_behind: LeftBehind {
                challenges: raw.challenges,
                send_windows: raw.send_windows,
                failure_counts,
            },
        })
    }

    /// The key that holds `rec` in this store.
    fn key_of(&self, rec: &Record<'_>) -> String {
        match rec {
            Record::Phone(p) => self.phone_key(&p.user),
            Record::BackupCodes(b) => self.backup(&b.user),
            Record::OptOut(_) => self.opt_key(),
            Record::Language(l) => self.language_key(&l.user),
            Record::Lockout(l) => self.fail(&l.user),
        }
    }

    /// What the store holds for `rec`'s user and kind (on a watched key).
    fn existing(
        &self,
        c: &mut dyn ConnectionLike,
        rec: &Record<'_>,
        key: &str,
        now: Millis,
    ) -> RedisResult<Result<Existing, StoreError>> {
        Ok(match rec {
            Record::Phone(_) => {
                let v: PhoneFields = redis::cmd("HMGET")
                    .arg(key)
                    .arg("e")
                    .arg("t")
                    .arg("b")
                    .query(c)?;
                self.decode_phone(v).map(Existing::Phone)
            }
            Record::BackupCodes(_) => {
                let h: HashMap<String, Vec<u8>> = redis::cmd("HGETALL").arg(key).query(c)?;
                self.decode_codes(h).map(Existing::BackupCodes)
            }
            Record::OptOut(o) => {
                let there: bool = redis::cmd("HEXISTS").arg(key).arg(&o.user).query(c)?;
                Ok(Existing::OptOut(there))
            }
            Record::Language(_) => {
                let language: Option<String> = redis::cmd("GET").arg(key).query(c)?;
                Ok(Existing::Language(language))
            }
            Record::Lockout(_) => {
                let until: Option<Millis> = redis::cmd("HGET").arg(key).arg("u").query(c)?;
                Ok(Existing::Lockout(until.filter(|&u| u > now)))
            }
        })
    }

    /// Adds to `p` the commands that write `rec` at `key`, as the store's
    /// own methods write it.
    fn write(p: &mut Pipeline, rec: &Record<'_>, key: &str) {
        match rec {
            Record::Phone(r) => {
                p.cmd("HSET")
                    .arg(key)
                    .arg("e")
                    .arg(&r.phone.e164)
                    .arg("t")
                    .arg(r.phone.set_at)
                    .arg("b")
                    .arg(&r.phone.set_by)
                    .ignore();
            }
            Record::BackupCodes(b) => {
                p.cmd("DEL").arg(key).ignore();
                if !b.codes.is_empty() {
                    let cmd = p.cmd("HSET").arg(key);
                    for code in &b.codes {
                        cmd.arg(&code.hash).arg(&code.tag[..]);
                    }
                    cmd.ignore();
                }
            }
            Record::OptOut(o) => {
                p.cmd("HSET")
                    .arg(key)
                    .arg(&o.user)
                    .arg(opt_out_value(&o.set_by, o.set_at))
                    .ignore();
            }
            Record::Language(l) => {
                p.cmd("SET").arg(key).arg(&l.language).ignore();
            }
            Record::Lockout(l) => {
                p.cmd("DEL").arg(key).ignore();
                p.cmd("HSET")
                    .arg(key)
                    .arg("n")
                    .arg(l.count)
                    .arg("u")
                    .arg(l.locked_until)
                    .ignore();
            }
        }
    }

    /// See [`crate::store::Store::import_record`].
    pub(super) fn import_one(&self, rec: &Record<'_>, now: Millis) -> Result<Outcome, StoreError> {
        let key = self.key_of(rec);
        let busy = || {
            StoreError::Busy {
            location: self.spec.url.clone(),
            source: format!(
                "{key} kept changing while a record was written into it ({TRIES} tries); run the migration again"
            )
            .into(),
        }
        };
        // WATCH holds until EXEC on the connection that sent it: never on
        // one other handles share.
        self.run_alone(|c| {
            for _ in 0..TRIES {
                redis::cmd("WATCH").arg(&key).exec(c)?;
                let existing = match self.existing(c, rec, &key, now)? {
                    Ok(e) => e,
                    Err(e) => {
                        redis::cmd("UNWATCH").exec(c)?;
                        return Ok(Err(e));
                    }
                };
                let outcome = rec.outcome(&existing);
                if outcome != Outcome::Copied {
                    redis::cmd("UNWATCH").exec(c)?;
                    return Ok(Ok(outcome));
                }
                let mut p = redis::pipe();
                p.atomic();
                Self::write(&mut p, rec, &key);
                // One answer that is not ignored: EXEC's nil (someone
                // changed the key) reads as None.
                p.cmd("EXISTS").arg(&key);
                let done: Option<(i64,)> = p.query(c)?;
                if done.is_some() {
                    return Ok(Ok(outcome));
                }
            }
            Ok(Err(busy()))
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::glob_literal;

    #[test]
    fn prefixes_match_only_themselves() {
        assert_eq!(glob_literal("smsotp:site1:"), "smsotp:site1:");
        assert_eq!(glob_literal("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
