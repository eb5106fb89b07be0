//! State shared by every login on the host (and by both front ends):
//! pending challenges, SMS send windows, failure counts and lockouts, and
//! what admins and enrollment decided about users: registered phone
//! numbers, backup-code hashes and opt-outs.
//!
//! This module holds the [`Store`] trait, its records and its
//! backend-neutral error, and [`open`], the one place a [`StoreSpec`]
//! becomes a store (with the `StoreSpec` methods front ends use to name
//! and check the store without matching on its backend). The trait speaks
//! the domain: reads that a login needs together are one method each
//! ([`Store::login_state`], [`Store::answer_state`]), and expiry is the
//! backend's business (no purge: a backend forgets expired challenges and
//! old sends on its own, and never honours them meanwhile). The host's
//! cache of validated phone numbers is not shared state: a backend may
//! offer one through [`Store::number_cache`].
//!
//! [`migrate`] moves the durable part of the state (numbers, backup
//! codes, opt-outs, languages, lockouts) from one store into another, by one rule per
//! kind that every backend applies in [`Store::import_record`].
//!
//! [`limits`] is what one SMS is counted against ([`SendLimits`]: the
//! user's window, the back-off and any number of keyed windows, each
//! enforced or monitored) and the one rule that decides it, which every
//! backend applies in the same atomic step as the count.
//!
//! [`counters`] is what became of the SMS per UTC day, provider and
//! country (sent, failed, refused by which limit, receipts, resends),
//! kept for a bounded number of days in every backend.
//!
//! [`shared`] is what a server's threads need from one store besides the
//! trait ([`SharedBackend`]: a reply waits until what it relies on is
//! durable), opened by [`open_shared`].
//!
//! Backends live beside it: [`sqlite`] (the embedded default; `sweep.rs`
//! forgets what has expired, and [`sqlite::shared`] with `commit.rs` is
//! the group commit smsotp-radiusd uses), [`redis`] (a Redis or Valkey
//! server several hosts share; `redis/scripts.rs` holds the Lua that makes
//! each method one atomic step, `redis/info.rs` what `smsotp doctor` asks
//! the server) and [`memory`] (plain maps, for tests). One conformance suite (`conformance.rs`) runs against every
//! backend, and a short contract test against every [`SharedBackend`]: a
//! new backend is done when it passes them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock::Millis;
use crate::config::{Rate, StoreSpec};
use crate::otp::ChallengeId;
use crate::phone::{NoCache, NumberCache};

pub use counters::{Counted, CounterKey, Counts, Day};
pub use limits::{
    Backoff, BreakerState, BreakerTrip, KeyedWindow, LimitKind, LimitMode, SendDecision, SendLimits,
};

/// Why the store could not do what was asked. Backend-neutral: each
/// backend maps its own errors onto these, keeping its error as the
/// source. Every case means "could not check" to a login (PAM answers
/// `PAM_AUTHINFO_UNAVAIL`, RADIUS rejects), never a wrong code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached or used at all (cannot open the file,
    /// read-only, disk full, server down). Fix the store's location or the
    /// host, then retry.
    #[error("state store {location}: {source}")]
    Unavailable {
        /// Where the store is, as [`StoreSpec::location`] names it (a
        /// SQLite file's path; "(memory)" for a `MemoryStore`).
        location: String,
        /// The backend's own error.
        #[source]
        source: BackendError,
    },
    /// Others held the store for longer than the configured wait
    /// (`store.busy_timeout`). Transient: a later login may succeed.
    #[error("state store {location}: {source}")]
    Busy {
        /// Where the store is, as [`StoreSpec::location`] names it (a
        /// SQLite file's path; "(memory)" for a `MemoryStore`).
        location: String,
        /// The backend's own error.
        #[source]
        source: BackendError,
    },
    /// The write contradicts what is stored (e.g. a challenge id held by
    /// another login); nothing was changed.
    #[error("state store {location}: {source}")]
    Conflict {
        /// Where the store is, as [`StoreSpec::location`] names it (a
        /// SQLite file's path; "(memory)" for a `MemoryStore`).
        location: String,
        /// The backend's own error.
        #[source]
        source: BackendError,
    },
    /// What is stored cannot be read as what it should be (a damaged file,
    /// a value of the wrong type). Move the store away to start afresh.
    #[error("state store {location}: {source}")]
    Corrupt {
        /// Where the store is, as [`StoreSpec::location`] names it (a
        /// SQLite file's path; "(memory)" for a `MemoryStore`).
        location: String,
        /// The backend's own error.
        #[source]
        source: BackendError,
    },
    /// The store was written by a newer smsotp, whose layout this one does
    /// not understand.
    #[error("state store {location}: its layout version {found} is newer than this smsotp understands ({supported}); upgrade smsotp, or move the file away to start afresh")]
    Layout {
        /// Where the store is, as [`StoreSpec::location`] names it (a
        /// SQLite file's path; "(memory)" for a `MemoryStore`).
        location: String,
        /// The layout version found in the store.
        found: i64,
        /// The newest layout version this build understands.
        supported: i64,
    },
    /// The store's background work (a shared SQLite store's commit
    /// thread) could not be started: the host is out of threads or
    /// memory.
    #[error("state store {location}: cannot start the store's commit thread: {source}")]
    Start {
        /// Where the store is, as [`StoreSpec::location`] names it (a
        /// SQLite file's path; "(memory)" for a `MemoryStore`).
        location: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The store was first used with another code key than this host's
    /// (see [`Store::check_key_fingerprint`]): every code this host sent
    /// or checked would fail. Fail closed until the keys agree.
    #[error("{0}")]
    KeyMismatch(Box<KeyMismatch>),
    /// The operating system refused something the store needs besides the
    /// store itself (here: creating its directory).
    #[error("state store {location}: cannot create its directory: {source}")]
    Io {
        /// Where the store is, as [`StoreSpec::location`] names it (a
        /// SQLite file's path; "(memory)" for a `MemoryStore`).
        location: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

/// A backend's own error, kept as the source of a [`StoreError`].
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// What [`StoreError::KeyMismatch`] says: which store, which keys, and how
/// to make them agree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "state store {location}: this host's code key {key_file} has fingerprint {ours}, but the \
     store was first used with a key of fingerprint {stored} ({record}), so every code this \
     host sends or checks would fail; copy the key file from a host that works to {key_file} \
     on this host (owned by root, mode 0600), or point otp.key_file at such a copy. To change \
     the key on every host on purpose, put the new key on every host, then {forget}"
)]
pub struct KeyMismatch {
    /// Where the store is, as [`StoreSpec::location`] names it.
    pub location: String,
    /// Where in the store the fingerprint is kept (for Redis: the key,
    /// named with its `store.key_prefix`).
    pub record: String,
    /// How to make the store forget its fingerprint (the next host to use
    /// it records its own).
    pub forget: String,
    /// This host's key file (`otp.key_file`).
    pub key_file: String,
    /// The fingerprint of this host's key
    /// ([`crate::otp::OtpKey::fingerprint`]).
    pub ours: String,
    /// The fingerprint the store was first used with.
    pub stored: String,
}

/// This host's code key as a store records and compares it
/// ([`Store::check_key_fingerprint`]): its public fingerprint, and the file
/// it came from (for the message when they disagree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFingerprint {
    /// [`crate::otp::OtpKey::fingerprint`] of the key.
    pub fingerprint: String,
    /// The key file it was read from (`otp.key_file`).
    pub key_file: PathBuf,
}

impl KeyFingerprint {
    /// The fingerprint of `key`, read from `key_file`.
    pub fn of(key: &crate::otp::OtpKey, key_file: &Path) -> Self {
        KeyFingerprint {
            fingerprint: key.fingerprint(),
            key_file: key_file.to_owned(),
        }
    }
}

/// A pending challenge: what was sent, to whom, for what, and how much of it
/// is left. The code is only its MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRecord {
    /// Random, or one per user and service
    /// ([`crate::otp::OtpKey::login_id`]); travels to the front end (a
    /// RADIUS State) and back.
    pub id: ChallengeId,
    /// Who is logging in; only this user's answers count.
    pub user: String,
    /// What the login is for (the PAM service, "radius:NAME"); a code is
    /// good for this service only.
    pub service: String,
    /// The HMAC of the code, bound to id, user and service
    /// ([`crate::otp::OtpKey::mac`]); the code itself is never stored.
    pub code_mac: [u8; 32],
    /// Masked phone, for messages on later rounds (RADIUS).
    pub phone_masked: String,
    /// When the login opened the challenge (ms since the epoch).
    pub created_at: Millis,
    /// When the current code was sent (ms since the epoch): a resend's
    /// cooldown counts from here.
    pub sent_at: Millis,
    /// From this moment (ms since the epoch) the code is no longer taken;
    /// the backend may forget the challenge any time after.
    pub expires_at: Millis,
    /// Wrong answers the current code still allows; at zero the challenge
    /// is deleted.
    pub attempts_left: u32,
    /// New codes sent for this challenge so far (`otp.resend.max` caps
    /// them).
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

/// A number registered in the store (by an admin or by enrollment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneRecord {
    /// The number in E.164 form ("+12025550143"), validated when set.
    pub e164: String,
    /// When it was set (ms since the epoch).
    pub set_at: Millis,
    /// "admin:root", "enroll:sshd", …
    pub set_by: String,
}

/// One stored backup code: its lookup tag and argon2id hash (PHC string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupHash {
    /// A keyed tag of the code, so a login verifies (slowly) only the
    /// hashes that could match what was typed, not all of them.
    pub tag: [u8; 8],
    /// The code's argon2id hash, a PHC string with a salt of its own.
    pub hash: String,
}

/// Result of asking to send one more SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendPermit {
    /// The SMS was counted in both windows: send it.
    Granted,
    /// The user's window (`limits.sms_per_user`) is full; nothing counted.
    UserLimit,
    /// The host's window (`limits.sms_global`) is full; nothing counted.
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
    /// Wrong codes in a row since the last success, lockout end or
    /// unlock.
    pub count: u32,
    /// When the lockout ends (ms since the epoch), if the user is locked
    /// out at the `now` asked about; `None` otherwise.
    pub locked_until: Option<Millis>,
}

/// What [`Store::login_state`] reads: whether `user` may be sent a code at
/// all, and the number the store holds for them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoginState {
    /// When the user's lockout ends, if they are locked out at the `now`
    /// asked about (as [`Store::locked_until`]).
    pub locked_until: Option<Millis>,
    /// The number registered in the store (by an admin or by enrollment),
    /// which wins over the configured directories; `None` if there is none.
    pub phone: Option<PhoneRecord>,
    /// The challenge with the id asked about, whoever's it is and expired
    /// or not (the caller checks both); `None` if none was asked about or
    /// there is none.
    pub request_challenge: Option<ChallengeRecord>,
    /// The user's language (`smsotp user set-language`), read in the same
    /// step so a login needs no read of its own for it.
    pub language: Option<String>,
}

/// What [`Store::start_at_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtOnce {
    /// Nothing stood in the way: the SMS was counted against the limits
    /// and, if granted, the challenge stored, as
    /// [`Store::start_challenge_with`] decided; with the user's language
    /// ([`LoginState::language`]).
    Started {
        /// What the limits said.
        decision: SendDecision,
        /// The user's language, if set.
        language: Option<String>,
        /// The number registered in the store, if any (the one the
        /// caller found).
        registered: Option<PhoneRecord>,
    },
    /// Something the caller must look at first (a lockout, a number
    /// registered in the store other than the one it found, the
    /// request's challenge): nothing was written. The state as
    /// [`Store::login_state`] reads it.
    Seen(Box<LoginState>),
}

/// What [`Store::answer_state`] reads: the challenge an answer is for, and
/// whether its user is locked out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnswerState {
    /// The challenge with the id asked about, whoever's it is and expired
    /// or not (the flow checks both); `None` if it was used, withdrawn or
    /// forgotten.
    pub challenge: Option<ChallengeRecord>,
    /// When the user's lockout ends, if they are locked out at the `now`
    /// asked about.
    pub locked_until: Option<Millis>,
}

/// The shared state. Implementations must make each method atomic.
///
/// Expiry is the backend's business: a backend forgets expired challenges
/// and send records older than every window on its own (SQLite now and
/// then as challenges and sends are written, see `sqlite/sweep.rs`), and
/// never honours an expired record before that: every read that decides
/// something compares `expires_at` or the window with the `now` it is
/// given.
pub trait Store {
    /// When the user's lockout ends, if they are locked out at `now`.
    fn locked_until(&self, user: &str, now: Millis) -> Result<Option<Millis>, StoreError>;
    /// What [`crate::flow::Engine::start`] needs to know about `user`
    /// before it sends anything: the lockout and the registered number,
    /// and, when `request` names one, the challenge with that id (a
    /// RADIUS request's own, [`crate::otp::OtpKey::request_id`], opened by
    /// an earlier copy of the request), in one step where the backend can
    /// (one lock for the SQLite `SharedStore`, one round trip for a
    /// networked store). The default reads them one after the other.
    fn login_state(
        &self,
        user: &str,
        now: Millis,
        request: Option<&ChallengeId>,
    ) -> Result<LoginState, StoreError> {
        Ok(LoginState {
            locked_until: self.locked_until(user, now)?,
            phone: self.phone(user)?,
            request_challenge: match request {
                Some(id) => self.challenge(id)?,
                None => None,
            },
            language: self.language(user)?,
        })
    }
    /// [`Store::login_state`] of `c.user` (with `c.id` as the request's
    /// challenge when `request`) and, if it shows no lockout, no number
    /// registered other than `e164` and no such challenge,
    /// [`Store::start_challenge_with`]: for a caller that found the
    /// number before reading the store (in a directory). One step where
    /// the backend can ([`Store::starts_at_once`]); the default does the
    /// two one after the other, as the caller would.
    fn start_at_once(
        &self,
        c: &ChallengeRecord,
        limits: &SendLimits,
        e164: &str,
        request: bool,
    ) -> Result<AtOnce, StoreError> {
        let state = self.login_state(&c.user, c.created_at, request.then_some(&c.id))?;
        if state.locked_until.is_some()
            || state.request_challenge.is_some()
            || state.phone.as_ref().is_some_and(|p| p.e164 != e164)
        {
            return Ok(AtOnce::Seen(Box::new(state)));
        }
        Ok(AtOnce::Started {
            decision: self.start_challenge_with(c, limits)?,
            language: state.language,
            registered: state.phone,
        })
    }
    /// Whether [`Store::start_at_once`] is one step where
    /// [`Store::login_state`] then [`Store::start_challenge_with`] are two
    /// (a networked store: one round trip fewer). Only then does
    /// [`crate::flow::Engine::start`] look for the number in the
    /// directories before it reads the store.
    fn starts_at_once(&self) -> bool {
        false
    }
    /// What [`crate::flow::Engine::answer`] judges an answer to challenge
    /// `id` against, when the one-step [`Store::consume_code`] did not
    /// take it: the challenge and `user`'s lockout, in one step where the
    /// backend can (as [`Store::login_state`]).
    fn answer_state(
        &self,
        id: &ChallengeId,
        user: &str,
        now: Millis,
    ) -> Result<AnswerState, StoreError> {
        Ok(AnswerState {
            challenge: self.challenge(id)?,
            locked_until: self.locked_until(user, now)?,
        })
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
    /// limit is reached (and takes nothing): [`Store::reserve_sends`] with
    /// those two, enforced.
    fn reserve_sms(
        &self,
        user: &str,
        now: Millis,
        per_user: Rate,
        global: Rate,
    ) -> Result<SendPermit, StoreError> {
        let l = SendLimits::user_and_global(per_user, global);
        Ok(self.reserve_sends(user, now, &l)?.permit())
    }
    /// Takes one SMS from every window of `limits`, or says which enforced
    /// limit is reached (and takes nothing), in one atomic step; limits in
    /// monitor mode that are reached are named in the answer and counted
    /// all the same. Checked in the order of [`limits::decide`].
    fn reserve_sends(
        &self,
        user: &str,
        now: Millis,
        limits: &SendLimits,
    ) -> Result<SendDecision, StoreError>;
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
    ) -> Result<SendPermit, StoreError> {
        let l = SendLimits::user_and_global(per_user, global);
        Ok(self.start_challenge_with(c, &l)?.permit())
    }
    /// [`Store::reserve_sends`] (at `c.created_at`, for `c.user`) and, if
    /// granted, [`Store::insert_challenge`], in one transaction.
    fn start_challenge_with(
        &self,
        c: &ChallengeRecord,
        limits: &SendLimits,
    ) -> Result<SendDecision, StoreError>;
    /// The spend breaker of the budget window `w` (see
    /// [`KeyedWindow::budget`]) at `now`: the trip in force, if any, and
    /// what the window holds (admin view).
    fn breaker(&self, w: &KeyedWindow, now: Millis) -> Result<BreakerState, StoreError>;
    /// Clears the trip of `w`'s breaker and forgets what its window holds,
    /// in one atomic step (admin action): sends go out again at once, and
    /// only those after the reset count against the budget. Returns the
    /// state it cleared.
    fn reset_breaker(&self, w: &KeyedWindow, now: Millis) -> Result<BreakerState, StoreError>;
    /// Adds one to each of `keys` (a key may come more than once) on the
    /// UTC day of `at`, as [`Store::add_counts`].
    fn count(&self, at: Millis, keys: &[CounterKey]) -> Result<(), StoreError> {
        let counts: Vec<(CounterKey, u64)> = keys.iter().map(|k| (k.clone(), 1)).collect();
        self.add_counts(at, &counts)
    }
    /// Adds each `n` to its key (a key may come more than once) on the UTC
    /// day of `at`, in one atomic step (one round trip for a networked
    /// store), and forgets the days before the last
    /// [`counters::KEEP_DAYS`] (a networked store lets them expire).
    fn add_counts(&self, at: Millis, counts: &[(CounterKey, u64)]) -> Result<(), StoreError>;
    /// The counters of `day`, each key once, in key order; none if `day`
    /// is not one of the [`counters::KEEP_DAYS`] days ending at `now`
    /// (even if the backend has not forgotten it yet). Counts this build
    /// cannot name (written by a newer one) are left out.
    fn counters(&self, day: Day, now: Millis) -> Result<Counts, StoreError>;
    /// The challenge with id `id`, whoever's it is and expired or not (the
    /// caller checks both); `None` if it is gone.
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
    /// caller. This is the atomic implementation of the acceptance rule
    /// that `flow::machine::code_opens` states; a flow test checks that
    /// the two agree.
    fn consume_code(
        &self,
        id: &ChallengeId,
        user: &str,
        service: &str,
        code_mac: &[u8; 32],
        now: Millis,
    ) -> Result<Option<String>, StoreError>;
    /// Deletes challenge `id`, whatever it holds (the login ended); no
    /// error if it is gone already.
    fn delete_challenge(&self, id: &ChallengeId) -> Result<(), StoreError>;
    /// Deletes challenge `id` if it still holds `code_mac`: a request
    /// clearing up its own challenge leaves alone a newer one that took its
    /// id ([`crate::otp::OtpKey::login_id`]). False if there was none.
    fn withdraw(&self, id: &ChallengeId, code_mac: &[u8; 32]) -> Result<bool, StoreError>;
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
    /// The hashes of `user`'s stored codes with lookup tag `tag`. The
    /// caller verifies the typed code against them (argon2, slow) outside
    /// any store operation, then uses the one that matched with
    /// [`Store::consume_backup_code`].
    fn backup_candidates(&self, user: &str, tag: &[u8; 8]) -> Result<Vec<String>, StoreError>;
    /// Deletes `user`'s backup code stored with hash `hash` (each hash has
    /// a salt of its own, so it names one code) and, if it was there,
    /// clears the user's failures and deletes `challenge`, in one atomic
    /// step. Returns the codes left, or `None` if the code was already gone
    /// (used by a concurrent login): of two concurrent uses exactly one
    /// succeeds.
    fn consume_backup_code(
        &self,
        user: &str,
        hash: &str,
        challenge: Option<&ChallengeId>,
    ) -> Result<Option<u32>, StoreError>;
    /// How many backup codes `user` has left (0: none, or none made).
    fn backup_codes_left(&self, user: &str) -> Result<u32, StoreError>;
    /// Deletes all of `user`'s backup codes; returns how many there were.
    fn revoke_backup_codes(&self, user: &str) -> Result<u32, StoreError>;

    /// Marks (`Some(set_by)`) or unmarks (`None`) `user` as opted out.
    fn set_opt_out(&self, user: &str, set: Option<(&str, Millis)>) -> Result<(), StoreError>;
    /// Whether `user` is marked opted out, and by whom and when.
    fn opt_out(&self, user: &str) -> Result<Option<(String, Millis)>, StoreError>;
    /// Every user marked opted out.
    fn opted_out_users(&self) -> Result<Vec<String>, StoreError>;

    /// Sets (`Some`, a tag such as "de") or clears (`None`) the language
    /// `user` reads messages in (`smsotp user set-language`).
    fn set_language(&self, user: &str, lang: Option<&str>) -> Result<(), StoreError>;
    /// The language set for `user`, if any.
    fn language(&self, user: &str) -> Result<Option<String>, StoreError>;

    /// Everything durable the store holds, for moving it to another store
    /// ([`migrate`]): registered numbers, backup codes, opt-outs and the
    /// lockouts that run at `now`, with a count of what stays behind
    /// (challenges, send windows, failure counts).
    fn export(&self, now: Millis) -> Result<migrate::Snapshot, StoreError>;
    /// Reads what the store holds for `rec`'s user and kind and, if the
    /// kind's rule ([`migrate::Record::outcome`]) says so, writes `rec`
    /// over it, in one atomic step; `now` judges whether a lockout runs.
    fn import_record(
        &self,
        rec: &migrate::Record<'_>,
        now: Millis,
    ) -> Result<migrate::Outcome, StoreError>;
    /// Makes what this handle has written so far durable now, before
    /// something that cannot be taken back happens (an SMS leaves for a
    /// phone): a store that could not keep the challenge fails the login
    /// before anyone receives a code that could never work. The default
    /// does nothing: every write of the backend is durable (or, for Redis,
    /// as durable as the server's persistence makes it) when it returns.
    /// A shared SQLite store under group commit waits here for the commit
    /// of the batch this thread's writes are in.
    fn durable(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Binds this handle to the code key `key` ([`Engine`] calls it once
    /// it has loaded the key, before any login step). A store that
    /// several hosts share records the key's fingerprint the first time
    /// any host uses it and compares it now (connecting if need be) and
    /// on each new connection: a host with another key gets
    /// [`StoreError::KeyMismatch`] from this call and from every later
    /// one, instead of failing every code silently. The default does
    /// nothing: a store on one host has one key file.
    ///
    /// [`Engine`]: crate::flow::Engine
    fn check_key_fingerprint(&self, key: &KeyFingerprint) -> Result<(), StoreError> {
        let _ = key;
        Ok(())
    }

    /// Where this host remembers phone numbers it has validated, if the
    /// backend keeps such a cache (SQLite does, in its file; a shared
    /// SQLite store also in memory). Not part of the shared state: it only
    /// spares the validation (parsing a number costs more than the rest of
    /// a login), may forget entries at any time, and a failing cache is
    /// only slower, never wrong. The default keeps nothing.
    fn number_cache(&self) -> &dyn NumberCache {
        &NoCache
    }
}

/// Opens the configured store, whichever backend it is: the one place
/// that turns a [`StoreSpec`] into a store. A server that shares one store
/// between threads opens it with [`open_shared`] instead.
pub fn open(spec: &StoreSpec) -> Result<Box<dyn Store>, StoreError> {
    match spec {
        StoreSpec::Sqlite { .. } => Ok(Box::new(sqlite::SqliteStore::open_spec(spec)?)),
        StoreSpec::Redis(r) => Ok(Box::new(redis::RedisStore::open(r)?)),
    }
}

/// [`open`] for one login (the PAM module), bound to the code key `key`:
/// a store on a server (Redis) connects on its first use (checking the
/// key as that connection opens), so a login that needs no state (an
/// exempt user) neither waits for it nor fails when it is down; the first
/// call that needs it reports it unavailable. A store in a local file
/// opens at once, as with [`open_keyed`]. The admin tool's checks use
/// [`open`], so a wrong URL still shows there.
pub fn open_on_first_use(
    spec: &StoreSpec,
    key: &KeyFingerprint,
) -> Result<Box<dyn Store>, StoreError> {
    match spec {
        StoreSpec::Sqlite { .. } => open_keyed(spec, key),
        StoreSpec::Redis(r) => Ok(Box::new(redis::RedisStore::lazy_keyed(r, key))),
    }
}

/// [`open`], bound to the code key `key` from the start
/// ([`Store::check_key_fingerprint`]): a networked store checks the key in
/// the round trip that opens its connection, so the check costs no round
/// trip of its own.
pub fn open_keyed(spec: &StoreSpec, key: &KeyFingerprint) -> Result<Box<dyn Store>, StoreError> {
    match spec {
        StoreSpec::Sqlite { .. } => {
            let store = open(spec)?;
            store.check_key_fingerprint(key)?;
            Ok(store)
        }
        StoreSpec::Redis(r) => Ok(Box::new(redis::RedisStore::open_keyed(r, key)?)),
    }
}

/// What front ends say about the configured store without matching on its
/// backend.
impl StoreSpec {
    /// The backend, as `store.kind` names it: "sqlite" or "redis".
    pub fn kind(&self) -> &'static str {
        match self {
            StoreSpec::Sqlite { .. } => "sqlite",
            StoreSpec::Redis(_) => "redis",
        }
    }

    /// Where the store is, for messages (the same text its errors name
    /// it by): a SQLite file's path, a Redis URL.
    pub fn location(&self) -> String {
        match self {
            StoreSpec::Sqlite { path, .. } => path.display().to_string(),
            StoreSpec::Redis(r) => r.url.clone(),
        }
    }

    /// Every `[store]` setting in force, `kind` first, keyed as the config
    /// file names them, with values as people read them (durations as
    /// [`crate::config::human_duration`] writes them): what check-config
    /// shows.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        match self {
            StoreSpec::Sqlite { path, busy_timeout } => vec![
                ("kind", self.kind().to_owned()),
                ("path", path.display().to_string()),
                ("busy_timeout", crate::config::human_duration(*busy_timeout)),
            ],
            StoreSpec::Redis(r) => {
                let mut v = vec![("kind", self.kind().to_owned())];
                match &r.addr {
                    crate::config::RedisAddr::Sentinel(s) => {
                        let list: Vec<String> = s
                            .sentinels
                            .iter()
                            .map(|(h, p)| crate::config::join_host_port(h, *p))
                            .collect();
                        v.extend([
                            ("sentinels", list.join(", ")),
                            ("master_name", s.master_name.clone()),
                            (
                                "sentinel_username",
                                s.username
                                    .clone()
                                    .unwrap_or_else(|| "(default user)".into()),
                            ),
                            (
                                "sentinel_password_file",
                                s.password_file
                                    .as_ref()
                                    .map_or_else(|| "(none)".into(), |p| p.display().to_string()),
                            ),
                        ]);
                    }
                    crate::config::RedisAddr::Tls { ca_file, .. } => v.extend([
                        ("url", r.url.clone()),
                        (
                            "ca_file",
                            ca_file.as_ref().map_or_else(
                                || "(none: the system's CA bundle)".into(),
                                |p| p.display().to_string(),
                            ),
                        ),
                    ]),
                    _ => v.push(("url", r.url.clone())),
                }
                v.extend(vec![
                    (
                        "username",
                        r.username
                            .clone()
                            .unwrap_or_else(|| "(default user)".into()),
                    ),
                    (
                        "password_file",
                        r.password_file
                            .as_ref()
                            .map_or_else(|| "(none)".into(), |p| p.display().to_string()),
                    ),
                    ("db", r.db.to_string()),
                    ("key_prefix", format!("{:?}", r.key_prefix)),
                    (
                        "connect_timeout",
                        crate::config::human_duration(r.connect_timeout),
                    ),
                    ("timeout", crate::config::human_duration(r.timeout)),
                ]);
                v
            }
        }
    }

    /// The file on this host that holds the store, if the backend keeps
    /// one (SQLite): it holds pending codes' MACs and who is locked out,
    /// so doctor checks that only root can read or change it. `None` for
    /// a store elsewhere.
    pub fn local_file(&self) -> Option<&Path> {
        match self {
            StoreSpec::Sqlite { path, .. } => Some(path),
            StoreSpec::Redis(_) => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod conformance;
pub mod counters;
pub mod limits;
pub mod memory;
pub mod migrate;
pub mod redis;
pub mod shared;
pub mod sqlite;
pub mod suspend;

pub use shared::{open_shared, SharedBackend, SharedGuard};
