//! How records are keyed and written on the server, and read back: key
//! names, the scripts' arguments, and what their answers mean.
//!
//! Keys, all under `store.key_prefix` (P):
//! - `P c:<id in hex>`: a challenge, a hash (`u` user, `s` service, `m`
//!   code MAC, `k` masked phone, `c` created, `t` sent, `e` expires, `a`
//!   attempts left, `r` resends, `p` step 0-3, `n` pending phone), on
//!   the master only (`scripts.rs`);
//! - `P f:<user>`: failures, a hash (`n` count, `u` locked until);
//! - `P s:<user>`: the user's sends, a hash send time -> SMS at that time;
//! - `P g:<bucket size>`: the global window, a hash bucket -> SMS in it;
//! - `P l:<bucket size>:<kind>:<key>`: a keyed window (kind `number`,
//!   `country` or `source`), a hash bucket -> SMS in it, with a TTL of its
//!   window;
//! - `P l:<bucket size>:budget`: the spend budget's window, a hash
//!   bucket -> cost in it (each SMS adds its cost);
//! - `P k:budget`: the spend breaker's trip, a hash (`a` at, `u` until,
//!   `n` user, `s` spent), with a TTL until it ends;
//! - `P p:<user>`: the registered phone (`e` E.164, `t` set at, `b` set by);
//! - `P b:<user>`: backup codes, a hash argon2 hash -> 8-byte tag;
//! - `P o`: opt-outs, a hash user -> "set_at set_by";
//! - `P n:<cache key>`: a validated phone number ("E.164 region"), the
//!   hosts' shared [`crate::phone::NumberCache`], kept [`super::NUMBER_TTL_S`] seconds;
//! - `P d:<day>`: the SMS counters of a UTC day (days since the epoch),
//!   a hash "provider TAB country TAB counter" -> count, expiring
//!   [`crate::store::counters::KEEP_DAYS`] days after the day ends;
//! - `P kf`: the fingerprint of the code key the store was first used
//!   with (see [`crate::store::Store::check_key_fingerprint`]), no TTL.

use std::collections::HashMap;

use super::{scripts, Failed, RedisStore, GRACE_MS};
use crate::clock::{ms, Millis};
use crate::otp::ChallengeId;
use crate::store::counters::Day;
use crate::store::limits::{
    BreakerState, BreakerTrip, KeyedWindow, LimitKind, LimitMode, SendDecision, SendLimits,
};
use crate::store::{ChallengeRecord, PhoneRecord, Step, StoreError};

pub(super) fn step_num(s: Step) -> u8 {
    match s {
        Step::Code => 0,
        Step::BackupOnly => 1,
        Step::EnrollNumber => 2,
        Step::EnrollCode => 3,
    }
}

pub(super) fn num_step(n: i64) -> Option<Step> {
    Some(match n {
        0 => Step::Code,
        1 => Step::BackupOnly,
        2 => Step::EnrollNumber,
        3 => Step::EnrollCode,
        _ => return None,
    })
}

/// A TTL for something that matters until `until`, counted from `from`.
pub(super) fn ttl(from: Millis, until: Millis) -> Millis {
    until.saturating_sub(from).max(0).saturating_add(GRACE_MS)
}

/// A phone record's fields as HMGET reads them: number, set at, set by.
pub(super) type PhoneFields = (Option<String>, Option<i64>, Option<String>);

pub(super) fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

impl RedisStore {
    pub(super) fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}{kind}:{rest}", self.spec.key_prefix)
    }
    pub(super) fn ch(&self, id: &ChallengeId) -> String {
        self.key("c", &id.to_hex())
    }
    pub(super) fn fail(&self, user: &str) -> String {
        self.key("f", user)
    }
    pub(super) fn sends(&self, user: &str) -> String {
        self.key("s", user)
    }
    pub(super) fn global(&self, size: Millis) -> String {
        self.key("g", &size.to_string())
    }
    pub(super) fn phone_key(&self, user: &str) -> String {
        self.key("p", user)
    }
    pub(super) fn language_key(&self, user: &str) -> String {
        self.key("lang", user)
    }
    pub(super) fn backup(&self, user: &str) -> String {
        self.key("b", user)
    }
    pub(super) fn number_key(&self, cache_key: &str) -> String {
        self.key("n", cache_key)
    }
    pub(super) fn day_key(&self, day: Day) -> String {
        self.key("d", &day.0.to_string())
    }
    pub(super) fn opt_key(&self) -> String {
        format!("{}o", self.spec.key_prefix)
    }

    pub(super) fn corrupt(&self, what: &str) -> StoreError {
        StoreError::Corrupt {
            location: self.spec.url.clone(),
            source: Box::new(Failed(format!(
                "{what}; delete the key or the store's keys (key_prefix {:?}) to start afresh",
                self.spec.key_prefix
            ))),
        }
    }

    pub(super) fn decode_challenge(
        &self,
        id: &ChallengeId,
        h: HashMap<String, Vec<u8>>,
    ) -> Result<Option<ChallengeRecord>, StoreError> {
        if h.is_empty() {
            return Ok(None);
        }
        let bad = || self.corrupt("a challenge is not what this smsotp writes");
        let text = |f: &str| {
            h.get(f)
                .and_then(|v| String::from_utf8(v.clone()).ok())
                .ok_or_else(bad)
        };
        let int = |f: &str| text(f).and_then(|t| t.parse::<i64>().map_err(|_| bad()));
        let code_mac: [u8; 32] = h
            .get("m")
            .and_then(|m| m.as_slice().try_into().ok())
            .ok_or_else(bad)?;
        let pending_phone = match h.get("n") {
            None => None,
            Some(_) => Some(text("n")?),
        };
        Ok(Some(ChallengeRecord {
            id: *id,
            user: text("u")?,
            service: text("s")?,
            code_mac,
            phone_masked: text("k")?,
            created_at: int("c")?,
            sent_at: int("t")?,
            expires_at: int("e")?,
            attempts_left: u32::try_from(int("a")?).map_err(|_| bad())?,
            resends_used: u32::try_from(int("r")?).map_err(|_| bad())?,
            step: num_step(int("p")?).ok_or_else(bad)?,
            pending_phone,
        }))
    }

    pub(super) fn decode_phone(&self, v: PhoneFields) -> Result<Option<PhoneRecord>, StoreError> {
        match v {
            (None, None, None) => Ok(None),
            (Some(e164), Some(set_at), Some(set_by)) => Ok(Some(PhoneRecord {
                e164,
                set_at,
                set_by,
            })),
            _ => Err(self.corrupt("a phone record is not what this smsotp writes")),
        }
    }

    /// Arguments that write a challenge (see `scripts::PUT`).
    pub(super) fn challenge_args(&self, inv: &mut scripts::Call<'_>, c: &ChallengeRecord) {
        inv.arg(&c.user)
            .arg(&c.service)
            .arg(&c.code_mac[..])
            .arg(&c.phone_masked)
            .arg(c.created_at)
            .arg(c.sent_at)
            .arg(c.expires_at)
            .arg(c.attempts_left)
            .arg(c.resends_used)
            .arg(step_num(c.step))
            .arg(u8::from(c.pending_phone.is_some()))
            .arg(c.pending_phone.as_deref().unwrap_or(""))
            .arg(ttl(c.created_at.min(c.sent_at), c.expires_at));
    }

    /// Keys and arguments of the send-window part of a script (see
    /// `scripts::WINDOW`), after the sends key.
    pub(super) fn window_args(
        &self,
        inv: &mut scripts::Call<'_>,
        user: &str,
        now: Millis,
        l: &SendLimits,
    ) {
        for w in &l.windows {
            inv.key(self.window_key(w));
        }
        let budget = l.windows.iter().find(|w| w.is_breaker());
        if let Some(w) = budget {
            inv.key(self.breaker_key(w));
        }
        let mode = |m: LimitMode| u8::from(m == LimitMode::Monitor);
        let keep = ms(l.keep_user_sends());
        let (bfirst, bmax, bmode) = l
            .backoff
            .map_or((0, 0, 0), |(b, m)| (ms(b.first).max(1), ms(b.max), mode(m)));
        inv.arg(now)
            .arg(now - ms(l.per_user.window))
            .arg(l.per_user.count.get())
            .arg(mode(l.per_user_mode))
            .arg(now - keep)
            .arg(bfirst)
            .arg(bmax)
            .arg(bmode)
            .arg(ttl(now, now + keep))
            .arg(l.windows.len());
        for w in &l.windows {
            let size = w.bucket_ms();
            inv.arg((now - ms(w.rate.window)) / size)
                .arg(now / size)
                .arg(w.rate.count.get())
                .arg(mode(w.mode))
                .arg(ttl(now, now + ms(w.rate.window)))
                .arg(w.cost)
                .arg(u8::from(w.is_breaker()));
        }
        if let Some(w) = budget {
            let until = now + ms(w.rate.window);
            inv.arg(user).arg(until).arg(ttl(now, until));
        }
    }

    /// The spend breaker's hash for budget window `w`.
    pub(super) fn breaker_key(&self, w: &KeyedWindow) -> String {
        self.key("k", &w.name)
    }

    /// Reads (and with `reset`, clears) `w`'s breaker (see
    /// `scripts::BREAKER`).
    pub(super) fn breaker_op(
        &self,
        w: &KeyedWindow,
        now: Millis,
        reset: bool,
    ) -> Result<BreakerState, StoreError> {
        let size = w.bucket_ms();
        let r: Vec<String> = self.run(|c| {
            scripts::BREAKER
                .key(self.breaker_key(w))
                .key(self.window_key(w))
                .arg(now)
                .arg((now - ms(w.rate.window)) / size)
                .arg(u8::from(reset))
                .invoke(c)
        })?;
        let bad = || self.corrupt("unexpected answer from the breaker script");
        let num = |s: &String| s.parse::<i64>().map_err(|_| bad());
        let [spent, at, until, user, tspent] = r.as_slice() else {
            return Err(bad());
        };
        let spent = u32::try_from(num(spent)?).map_err(|_| bad())?;
        let trip = if until.is_empty() {
            None
        } else {
            Some(BreakerTrip {
                at: num(at)?,
                until: num(until)?,
                user: user.clone(),
                spent: u32::try_from(num(tspent)?).map_err(|_| bad())?,
            })
        };
        Ok(BreakerState { trip, spent })
    }

    /// The hash of a keyed window: the global one under its old name.
    pub(super) fn window_key(&self, w: &KeyedWindow) -> String {
        let size = w.bucket_ms();
        if w.kind == LimitKind::Global {
            return self.global(size);
        }
        self.key("l", &format!("{size}:{}", w.name))
    }

    /// Reads the send-window script's answer (see `scripts::WINDOW`).
    pub(super) fn decision(&self, r: &[i64], l: &SendLimits) -> Result<SendDecision, StoreError> {
        let kind = |code: i64| -> Result<LimitKind, StoreError> {
            match code {
                1 => Ok(LimitKind::PerUser),
                2 => Ok(LimitKind::Backoff),
                c if c >= 10 => usize::try_from(c - 10)
                    .ok()
                    .and_then(|i| l.windows.get(i))
                    .map(|w| w.kind)
                    .ok_or_else(|| self.corrupt("unexpected answer from the send-window script")),
                _ => Err(self.corrupt("unexpected answer from the send-window script")),
            }
        };
        match r.first() {
            Some(0) => Ok(SendDecision {
                refused: None,
                monitored: r[1..].iter().map(|&c| kind(c)).collect::<Result<_, _>>()?,
                retry_at: None,
                tripped_now: false,
            }),
            Some(3) => Err(StoreError::Conflict {
                location: self.spec.url.clone(),
                source: "challenge id already used by another login".into(),
            }),
            Some(&c) => {
                let refused = kind(c)?;
                Ok(SendDecision {
                    refused: Some(refused),
                    monitored: Vec::new(),
                    retry_at: if c == 2 { r.get(1).copied() } else { None },
                    tripped_now: refused == LimitKind::DailyBudget && r.get(1) == Some(&1),
                })
            }
            None => Err(self.corrupt("unexpected answer from the send-window script")),
        }
    }

    pub(super) fn permit(&self, n: i64) -> Result<(), StoreError> {
        match n {
            0 => Ok(()),
            3 => Err(StoreError::Conflict {
                location: self.spec.url.clone(),
                source: "challenge id already used by another login".into(),
            }),
            _ => Err(self.corrupt("unexpected answer from the challenge script")),
        }
    }
}
