//! `MemoryStore`: the whole [`Store`] in plain maps behind one mutex, for
//! tests and as the reference every backend is held to (see the
//! conformance suite). Each method takes the lock once, so each is atomic,
//! as the trait asks. Nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use super::counters::{self, CounterKey, Counts, Day};
use super::limits::{
    self, bucket_stale, BreakerState, BreakerTrip, KeyedWindow, LimitKind, SendDecision, SendLimits,
};
use super::migrate::{
    BackupSet, Existing, LeftBehind, Lockout, OptOut, Outcome, Record, Snapshot, UserLanguage,
    UserPhone,
};
use super::shared::{AfterBatch, Deferred, SharedBackend};
use super::{
    BackupHash, ChallengeRecord, FailureState, PhoneRecord, SmsWindow, Step, Store, StoreError,
};
use crate::clock::{ms, Millis};
use crate::config::Rate;
use crate::otp::ChallengeId;

/// The shared state in memory, with the same semantics as
/// [`super::sqlite::SqliteStore`]. A clone is another handle on the same
/// maps. Every write is done when it returns, so as a [`SharedBackend`] it
/// runs deferred work at once.
#[derive(Default, Clone)]
pub struct MemoryStore(Arc<Inner>);

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    /// See [`SharedBackend::after_each_batch`].
    after_batch: OnceLock<AfterBatch>,
}

#[derive(Default)]
struct State {
    challenges: HashMap<[u8; 16], ChallengeRecord>,
    /// user -> send time -> SMS sent at that time.
    sms_sent: HashMap<String, BTreeMap<Millis, u32>>,
    /// (bucket size, bucket) -> SMS sent in it, for the global window.
    sms_global: HashMap<(Millis, Millis), u32>,
    /// (window name, bucket size, bucket) -> SMS sent in it, for the keyed
    /// windows (per number, country, source).
    sms_limit: HashMap<(String, Millis, Millis), u32>,
    /// window name -> the breaker's trip (expired ones are ignored).
    breaker: HashMap<String, BreakerTrip>,
    /// (day, key) -> count: the SMS counters.
    counts: HashMap<(i64, CounterKey), u64>,
    /// user -> (count, locked until).
    failures: HashMap<String, (u32, Option<Millis>)>,
    phones: HashMap<String, PhoneRecord>,
    /// user -> codes.
    backup: HashMap<String, Vec<BackupHash>>,
    /// user -> (set by, set at).
    opt_out: BTreeMap<String, (String, Millis)>,
    language: BTreeMap<String, String>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock left whole values: every
        // method finishes its checks before it changes anything.
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SharedBackend for MemoryStore {
    fn handle(&self) -> Box<dyn Store> {
        Box::new(self.clone())
    }
    fn defer(&self, f: Deferred) {
        f(Ok(()));
        if let Some(after) = self.0.after_batch.get() {
            after();
        }
    }
    fn flush(&self) {}
    fn after_each_batch(&self, f: AfterBatch) {
        let _ = self.0.after_batch.set(f);
    }
}

impl State {
    /// Forgets the challenges expired at `now`: on every write that adds
    /// one (a resend's `reserve_sms` leaves them, as its challenge may have
    /// expired and be renewed by it).
    fn forget_expired_challenges(&mut self, now: Millis) {
        self.challenges.retain(|_, c| c.expires_at > now);
    }

    /// Forgets the sends that count in no window any more: those older
    /// than the longest window of `limits`, on every write that counts
    /// one; keyed windows by their own length.
    fn forget_old_sends(&mut self, now: Millis, limits: &SendLimits) {
        let before = now - ms(limits.longest());
        self.sms_limit
            .retain(|&(_, size, bucket), _| !bucket_stale(size, bucket, now));
        for sends in self.sms_sent.values_mut() {
            sends.retain(|&at, _| at > before);
        }
        self.sms_sent.retain(|_, sends| !sends.is_empty());
        self.sms_global
            .retain(|&(size, bucket), _| (bucket + 1) * size > before);
    }

    fn failure(&self, user: &str, now: Millis) -> Option<FailureState> {
        self.failures.get(user).map(|&(count, until)| FailureState {
            count,
            locked_until: until.filter(|&u| u > now),
        })
    }

    fn user_sends(&self, user: &str, since: Millis) -> u32 {
        self.sms_sent.get(user).map_or(0, |m| {
            m.range(since.saturating_add(1)..).map(|(_, &n)| n).sum()
        })
    }

    fn window(&self, user: &str, now: Millis, per_user: Rate) -> SmsWindow {
        let span = ms(per_user.window);
        let sends: Vec<(Millis, u32)> = self.sms_sent.get(user).map_or_else(Vec::new, |m| {
            m.range((now - span).saturating_add(1)..)
                .map(|(&at, &n)| (at, n))
                .collect()
        });
        let sent = sends.iter().map(|&(_, n)| n).sum::<u32>();
        let limit = per_user.count.get();
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
        SmsWindow {
            sent,
            next_allowed_at,
        }
    }

    fn window_count(&self, w: &KeyedWindow, now: Millis) -> u32 {
        let size = w.bucket_ms();
        let oldest = (now - ms(w.rate.window)) / size;
        if w.kind == LimitKind::Global {
            return self
                .sms_global
                .iter()
                .filter(|(&(s, b), _)| s == size && b > oldest)
                .map(|(_, &n)| n)
                .sum();
        }
        self.sms_limit
            .iter()
            .filter(|((name, s, b), _)| *name == w.name && *s == size && *b > oldest)
            .map(|(_, &n)| n)
            .sum()
    }

    /// Whether the breaker of `l`'s budget window, if any, is tripped.
    fn tripped(&self, l: &SendLimits, now: Millis) -> bool {
        l.windows
            .iter()
            .filter(|w| w.is_breaker())
            .any(|w| self.trip(w, now).is_some())
    }

    fn trip(&self, w: &KeyedWindow, now: Millis) -> Option<BreakerTrip> {
        self.breaker.get(&w.name).filter(|t| t.until > now).cloned()
    }

    fn reserve(&mut self, user: &str, now: Millis, l: &SendLimits) -> SendDecision {
        let since = now - ms(l.keep_user_sends());
        let sends: Vec<(Millis, u32)> = self.sms_sent.get(user).map_or_else(Vec::new, |m| {
            m.range(since.saturating_add(1)..)
                .map(|(&at, &n)| (at, n))
                .collect()
        });
        let counts: Vec<u32> = l
            .windows
            .iter()
            .map(|w| self.window_count(w, now))
            .collect();
        let tripped = self.tripped(l, now);
        let d = limits::decide(l, &sends, &counts, tripped, now);
        if d.tripped_now {
            if let Some((w, &n)) = l.windows.iter().zip(&counts).find(|(w, _)| w.is_breaker()) {
                self.breaker.insert(
                    w.name.clone(),
                    BreakerTrip {
                        at: now,
                        until: now + ms(w.rate.window),
                        user: user.to_owned(),
                        spent: n,
                    },
                );
            }
        }
        if d.refused.is_some() {
            return d;
        }
        *self
            .sms_sent
            .entry(user.to_owned())
            .or_default()
            .entry(now)
            .or_insert(0) += 1;
        for w in &l.windows {
            let size = w.bucket_ms();
            if w.kind == LimitKind::Global {
                *self.sms_global.entry((size, now / size)).or_insert(0) += 1;
            } else {
                let n = self
                    .sms_limit
                    .entry((w.name.clone(), size, now / size))
                    .or_insert(0);
                *n = n.saturating_add(w.cost);
            }
        }
        d
    }

    fn insert(&mut self, c: &ChallengeRecord) -> Result<(), StoreError> {
        if let Some(old) = self.challenges.get(&c.id.0) {
            if old.user != c.user || old.service != c.service {
                return Err(StoreError::Conflict {
                    location: LOCATION.into(),
                    source: "challenge id already used by another login".into(),
                });
            }
        }
        self.challenges.insert(c.id.0, c.clone());
        Ok(())
    }
}

/// How a [`MemoryStore`] names itself in errors.
const LOCATION: &str = "(memory)";

impl Store for MemoryStore {
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
        let mut s = self.state();
        // A lockout that has ended starts a fresh count.
        let count = match s.failures.get(user) {
            Some(&(_, Some(until))) if until <= now => 1,
            Some(&(c, _)) => c.saturating_add(1),
            None => 1,
        };
        let locked_until = (count >= lockout_after).then(|| now + ms(lockout));
        s.failures.insert(user.to_owned(), (count, locked_until));
        Ok(FailureState {
            count,
            locked_until,
        })
    }

    fn clear_failures(&self, user: &str) -> Result<(), StoreError> {
        self.state().failures.remove(user);
        Ok(())
    }

    fn unlock(&self, user: &str) -> Result<(), StoreError> {
        self.clear_failures(user)
    }

    fn failures(&self, user: &str, now: Millis) -> Result<FailureState, StoreError> {
        Ok(self.state().failure(user, now).unwrap_or_default())
    }

    fn sms_window(&self, user: &str, now: Millis, per_user: Rate) -> Result<SmsWindow, StoreError> {
        Ok(self.state().window(user, now, per_user))
    }

    fn clear_sms_window(
        &self,
        user: &str,
        now: Millis,
        window: Duration,
    ) -> Result<u32, StoreError> {
        let mut s = self.state();
        let counted = s.user_sends(user, now - ms(window));
        s.sms_sent.remove(user);
        Ok(counted)
    }

    fn reserve_sends(
        &self,
        user: &str,
        now: Millis,
        limits: &SendLimits,
    ) -> Result<SendDecision, StoreError> {
        let mut s = self.state();
        s.forget_old_sends(now, limits);
        Ok(s.reserve(user, now, limits))
    }

    fn breaker(&self, w: &KeyedWindow, now: Millis) -> Result<BreakerState, StoreError> {
        let s = self.state();
        Ok(BreakerState {
            trip: s.trip(w, now),
            spent: s.window_count(w, now),
        })
    }

    fn reset_breaker(&self, w: &KeyedWindow, now: Millis) -> Result<BreakerState, StoreError> {
        let mut s = self.state();
        let before = BreakerState {
            trip: s.trip(w, now),
            spent: s.window_count(w, now),
        };
        s.breaker.remove(&w.name);
        s.sms_limit.retain(|(name, _, _), _| *name != w.name);
        Ok(before)
    }

    fn add_counts(&self, at: Millis, counts: &[(CounterKey, u64)]) -> Result<(), StoreError> {
        let mut s = self.state();
        let day = Day::of(at);
        let oldest = day.oldest_kept().0;
        s.counts.retain(|(d, _), _| *d >= oldest);
        for (k, n) in counts {
            *s.counts.entry((day.0, k.clone())).or_default() += n;
        }
        Ok(())
    }

    fn counters(&self, day: Day, now: Millis) -> Result<Counts, StoreError> {
        if !day.kept_at(now) {
            return Ok(Vec::new());
        }
        let s = self.state();
        Ok(counters::tidy(
            s.counts
                .iter()
                .filter(|((d, _), _)| *d == day.0)
                .map(|((_, k), &n)| (k.clone(), n))
                .collect(),
        ))
    }

    fn insert_challenge(&self, c: &ChallengeRecord) -> Result<(), StoreError> {
        let mut s = self.state();
        s.forget_expired_challenges(c.created_at);
        s.insert(c)
    }

    fn start_challenge_with(
        &self,
        c: &ChallengeRecord,
        limits: &SendLimits,
    ) -> Result<SendDecision, StoreError> {
        let mut s = self.state();
        s.forget_expired_challenges(c.created_at);
        s.forget_old_sends(c.created_at, limits);
        // Checked first, so a conflict takes no SMS (SQLite rolls back).
        if let Some(old) = s.challenges.get(&c.id.0) {
            if old.user != c.user || old.service != c.service {
                return s.insert(c).map(|()| SendDecision::granted());
            }
        }
        let d = s.reserve(&c.user, c.created_at, limits);
        if d.refused.is_none() {
            s.insert(c)?;
        }
        Ok(d)
    }

    fn challenge(&self, id: &ChallengeId) -> Result<Option<ChallengeRecord>, StoreError> {
        Ok(self.state().challenges.get(&id.0).cloned())
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
        let mut s = self.state();
        let Some(c) = s.challenges.get_mut(&id.0) else {
            return Ok(false);
        };
        c.code_mac = *code_mac;
        c.sent_at = sent_at;
        c.expires_at = expires_at;
        c.attempts_left = attempts_left;
        c.resends_used = resends_used;
        Ok(true)
    }

    fn wrong_attempt(&self, id: &ChallengeId) -> Result<Option<u32>, StoreError> {
        let mut s = self.state();
        let Some(c) = s.challenges.get_mut(&id.0) else {
            return Ok(None);
        };
        let left = c.attempts_left.saturating_sub(1);
        if left == 0 {
            s.challenges.remove(&id.0);
        } else {
            c.attempts_left = left;
        }
        Ok(Some(left))
    }

    fn consume(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        user: &str,
    ) -> Result<bool, StoreError> {
        let mut s = self.state();
        if s.challenges.get(&id.0).map(|c| &c.code_mac) != Some(code_mac) {
            return Ok(false);
        }
        s.challenges.remove(&id.0);
        s.failures.remove(user);
        Ok(true)
    }

    fn consume_code(
        &self,
        id: &ChallengeId,
        user: &str,
        service: &str,
        code_mac: &[u8; 32],
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        let mut s = self.state();
        let masked = match s.challenges.get(&id.0) {
            Some(c)
                if c.user == user
                    && c.service == service
                    && c.step == Step::Code
                    && c.expires_at > now
                    && crate::otp::macs_equal(&c.code_mac, code_mac) =>
            {
                c.phone_masked.clone()
            }
            _ => return Ok(None),
        };
        if s.failure(user, now)
            .is_some_and(|f| f.locked_until.is_some())
        {
            return Ok(None);
        }
        s.failures.remove(user);
        s.challenges.remove(&id.0);
        Ok(Some(masked))
    }

    fn delete_challenge(&self, id: &ChallengeId) -> Result<(), StoreError> {
        self.state().challenges.remove(&id.0);
        Ok(())
    }

    fn withdraw(&self, id: &ChallengeId, code_mac: &[u8; 32]) -> Result<bool, StoreError> {
        let mut s = self.state();
        if s.challenges.get(&id.0).map(|c| &c.code_mac) != Some(code_mac) {
            return Ok(false);
        }
        s.challenges.remove(&id.0);
        Ok(true)
    }

    fn phone(&self, user: &str) -> Result<Option<PhoneRecord>, StoreError> {
        Ok(self.state().phones.get(user).cloned())
    }

    fn set_phone(&self, user: &str, rec: &PhoneRecord) -> Result<(), StoreError> {
        self.state().phones.insert(user.to_owned(), rec.clone());
        Ok(())
    }

    fn clear_phone(&self, user: &str) -> Result<bool, StoreError> {
        Ok(self.state().phones.remove(user).is_some())
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
        let mut s = self.state();
        let Some(c) = s.challenges.get_mut(&id.0) else {
            return Ok(false);
        };
        if c.step != Step::EnrollNumber {
            return Ok(false);
        }
        c.step = Step::EnrollCode;
        c.pending_phone = Some(e164.to_owned());
        c.code_mac = *code_mac;
        c.phone_masked = crate::phone::mask_raw(e164);
        c.sent_at = sent_at;
        c.expires_at = expires_at;
        c.attempts_left = attempts_left;
        Ok(true)
    }

    fn complete_enrollment(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        user: &str,
        at: Millis,
        set_by: &str,
    ) -> Result<bool, StoreError> {
        let mut s = self.state();
        let e164 = match s.challenges.get(&id.0) {
            Some(c) if &c.code_mac == code_mac && c.user == user && c.step == Step::EnrollCode => {
                match &c.pending_phone {
                    Some(e164) => e164.clone(),
                    None => return Ok(false),
                }
            }
            _ => return Ok(false),
        };
        s.challenges.remove(&id.0);
        s.failures.remove(user);
        // A number registered meanwhile (by an admin) stays.
        s.phones.entry(user.to_owned()).or_insert(PhoneRecord {
            e164,
            set_at: at,
            set_by: set_by.to_owned(),
        });
        Ok(true)
    }

    fn set_step(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        step: Step,
    ) -> Result<bool, StoreError> {
        let mut s = self.state();
        match s.challenges.get_mut(&id.0) {
            Some(c) if &c.code_mac == code_mac => {
                c.step = step;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn replace_backup_codes(
        &self,
        user: &str,
        codes: &[BackupHash],
        _at: Millis,
    ) -> Result<(), StoreError> {
        let codes = codes.to_vec();
        let mut s = self.state();
        if codes.is_empty() {
            s.backup.remove(user);
        } else {
            s.backup.insert(user.to_owned(), codes);
        }
        Ok(())
    }

    fn backup_candidates(&self, user: &str, tag: &[u8; 8]) -> Result<Vec<String>, StoreError> {
        Ok(self
            .state()
            .backup
            .get(user)
            .map_or_else(Vec::new, |codes| {
                codes
                    .iter()
                    .filter(|c| &c.tag == tag)
                    .map(|c| c.hash.clone())
                    .collect()
            }))
    }

    fn consume_backup_code(
        &self,
        user: &str,
        hash: &str,
        challenge: Option<&ChallengeId>,
    ) -> Result<Option<u32>, StoreError> {
        let mut s = self.state();
        let Some(codes) = s.backup.get_mut(user) else {
            return Ok(None);
        };
        let Some(at) = codes.iter().position(|c| c.hash == hash) else {
            return Ok(None);
        };
        codes.remove(at);
        let left = u32::try_from(codes.len()).unwrap_or(u32::MAX);
        s.failures.remove(user);
        if let Some(c) = challenge {
            s.challenges.remove(&c.0);
        }
        Ok(Some(left))
    }

    fn backup_codes_left(&self, user: &str) -> Result<u32, StoreError> {
        Ok(self
            .state()
            .backup
            .get(user)
            .map_or(0, |c| u32::try_from(c.len()).unwrap_or(u32::MAX)))
    }

    fn revoke_backup_codes(&self, user: &str) -> Result<u32, StoreError> {
        Ok(self
            .state()
            .backup
            .remove(user)
            .map_or(0, |c| u32::try_from(c.len()).unwrap_or(u32::MAX)))
    }

    fn set_opt_out(&self, user: &str, set: Option<(&str, Millis)>) -> Result<(), StoreError> {
        let mut s = self.state();
        match set {
            Some((by, at)) => {
                s.opt_out.insert(user.to_owned(), (by.to_owned(), at));
            }
            None => {
                s.opt_out.remove(user);
            }
        }
        Ok(())
    }

    fn opt_out(&self, user: &str) -> Result<Option<(String, Millis)>, StoreError> {
        Ok(self.state().opt_out.get(user).cloned())
    }

    fn opted_out_users(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.state().opt_out.keys().cloned().collect())
    }

    fn set_language(&self, user: &str, lang: Option<&str>) -> Result<(), StoreError> {
        let mut s = self.state();
        match lang {
            Some(l) => s.language.insert(user.to_owned(), l.to_owned()),
            None => s.language.remove(user),
        };
        Ok(())
    }

    fn language(&self, user: &str) -> Result<Option<String>, StoreError> {
        Ok(self.state().language.get(user).cloned())
    }

    fn export(&self, now: Millis) -> Result<Snapshot, StoreError> {
        let s = self.state();
        let mut phones: Vec<UserPhone> = s
            .phones
            .iter()
            .map(|(user, phone)| UserPhone {
                user: user.clone(),
                phone: phone.clone(),
            })
            .collect();
        phones.sort_by(|a, b| a.user.cmp(&b.user));
        let mut backup_codes: Vec<BackupSet> = s
            .backup
            .iter()
            .filter(|(_, codes)| !codes.is_empty())
            .map(|(user, codes)| BackupSet {
                user: user.clone(),
                codes: codes.clone(),
                set_at: None,
            })
            .collect();
        backup_codes.sort_by(|a, b| a.user.cmp(&b.user));
        let opt_outs = s
            .opt_out
            .iter()
            .map(|(user, (set_by, set_at))| OptOut {
                user: user.clone(),
                set_by: set_by.clone(),
                set_at: *set_at,
            })
            .collect();
        let languages = s
            .language
            .iter()
            .map(|(user, language)| UserLanguage {
                user: user.clone(),
                language: language.clone(),
            })
            .collect();
        let mut lockouts: Vec<Lockout> = s
            .failures
            .iter()
            .filter_map(|(user, &(count, until))| {
                let locked_until = until.filter(|&u| u > now)?;
                Some(Lockout {
                    user: user.clone(),
                    count,
                    locked_until,
                })
            })
            .collect();
        lockouts.sort_by(|a, b| a.user.cmp(&b.user));
        let n = |i: usize| u64::try_from(i).unwrap_or(u64::MAX);
        let left_behind = LeftBehind {
            challenges: n(s.challenges.values().filter(|c| c.expires_at > now).count()),
            send_windows: n(s.sms_sent.len()),
            failure_counts: n(s.failures.len() - lockouts.len()),
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

    fn import_record(&self, rec: &Record<'_>, now: Millis) -> Result<Outcome, StoreError> {
        let mut s = self.state();
        let user = rec.user();
        let existing = match rec {
            Record::Phone(_) => Existing::Phone(s.phones.get(user).cloned()),
            Record::BackupCodes(_) => {
                Existing::BackupCodes(s.backup.get(user).cloned().unwrap_or_default())
            }
            Record::OptOut(_) => Existing::OptOut(s.opt_out.contains_key(user)),
            Record::Language(_) => Existing::Language(s.language.get(user).cloned()),
            Record::Lockout(_) => {
                Existing::Lockout(s.failure(user, now).and_then(|f| f.locked_until))
            }
        };
        let outcome = rec.outcome(&existing);
        if outcome != Outcome::Copied {
            return Ok(outcome);
        }
        match rec {
            Record::Phone(p) => {
                s.phones.insert(p.user.clone(), p.phone.clone());
            }
            Record::BackupCodes(b) => {
                s.backup.insert(b.user.clone(), b.codes.clone());
            }
            Record::OptOut(o) => {
                s.opt_out
                    .insert(o.user.clone(), (o.set_by.clone(), o.set_at));
            }
            Record::Language(l) => {
                s.language.insert(l.user.clone(), l.language.clone());
            }
            Record::Lockout(l) => {
                s.failures
                    .insert(l.user.clone(), (l.count, Some(l.locked_until)));
            }
        }
        Ok(outcome)
    }
}
