//! `RedisStore`: the shared state on a Redis (or Valkey) server, so many
//! hosts share challenges, send windows, lockouts and registrations
//! (`[store] kind = "redis"`).
//!
//! The client is the `redis` crate's synchronous connection: no runtime,
//! and no thread in the PAM module (it runs inside sshd) or the admin
//! tool. One connection per store handle, opened
//! on first use and again after it broke, except that a server's handles
//! ([`RedisStore::shared`], smsotp-radiusd) share one, pipelined, on a
//! thread of its own (`mux.rs`); a failed command is not retried
//! (it may have run), the next call reconnects, except on a kept
//! connection the server had closed (see `RedisStore::run_then`). A
//! `rediss://` url is
//! TLS (the crate's rustls, with ring; trust anchors from `ca_file` or the
//! system's CA bundle, `conn.rs`). With `store.sentinels`
//! (`conn.rs`) connecting means asking the sentinels in order where the
//! master is and checking that it says it is master (`ROLE`); a broken
//! connection, a timeout or a `READONLY` reply (a failover made our
//! master a replica) drops it, so the next call asks the sentinels again.
//! A connection idle for a second is PINGed before it is used, so a
//! server's worker that sat out a failover opens a new one instead of
//! failing a login on the dead master's socket.
//!
//! Durability across a failover: Redis replicates asynchronously, so a
//! write the master acknowledged can be lost if the master dies before a
//! replica has it. The writes that must not be lost wait for the replicas
//! before the method returns (`Conn::make_durable` in `conn.rs`: `WAIT`
//! for as many replicas as the master has connected, then `WAITAOF 1 0`
//! for the master's own append-only file where the server has both,
//! Redis 7.2+ and Valkey): a failure that locks the
//! user out, an unlock, a used backup code, new or revoked backup codes,
//! a completed enrollment, a phone set or cleared, an opt-out. When fewer
//! replicas acknowledge in time (half of `store.timeout`) the write still
//! stands on the master and the method succeeds: a lockout on the master
//! holds, and failing the login would punish the user for a replica's
//! lag. Ordinary logins (a challenge started, a code taken, a wrong
//! guess) do not wait: a code lost in a failover is replaced by a new
//! one. Each challenge carries its own tries left (`a` in its hash), so a
//! failure count lost in a failover never buys more guesses at one code
//! than that code's tries (plus the guesses within the replication lag,
//! normally milliseconds).
//!
//! Commands run through `run.rs` (which connection, what a failure means);
//! `codec.rs` names the keys and reads the scripts' answers.
//!
//! Every method is one atomic step on the server: a Lua script (`scripts.rs`;
//! EVALSHA, EVAL when the server does not know it yet) where it reads
//! before it writes, else one command or a MULTI block. Decisions use the
//! `now` the caller passes, never the server's clock; challenges and send
//! windows also get a TTL computed from the caller's times plus
//! [`GRACE_MS`], a safety net so nothing needs a purge job.
//!
//! The keys, all under `store.key_prefix`, are listed in `codec.rs`,
//! which names them.
//!
//! The key check costs no round trip of its own: once the handle knows
//! the key (from [`RedisStore::open_keyed`], or
//! [`Store::check_key_fingerprint`], which connects a handle that has
//! not yet), each new connection sends `MULTI; SET P kf <fp> NX; GET P
//! kf; EXEC` in place of the PING that would otherwise prove it works.
//! Only a handle told the key after it connected pays one round trip,
//! once.
//!
//! The number cache spares parsing a number (the numbering metadata of
//! every country is built on first use, about 100 ms: every PAM login, a
//! process of its own, would pay it). A server's handles also share it in
//! memory ([`MemoryNumbers`]), so smsotp-radiusd asks the server only for
//! a number it has not seen.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::counters::{self, Counted, CounterKey, Counts, Day};
use super::limits::{BreakerState, KeyedWindow, SendDecision, SendLimits};
use super::migrate::{Outcome, Record, Snapshot};
use super::shared::AfterBatch;
use super::{
    AnswerState, AtOnce, BackupHash, ChallengeRecord, FailureState, KeyFingerprint, LoginState,
    PhoneRecord, SmsWindow, Step, Store, StoreError,
};
use crate::clock::{ms, Millis};
use crate::config::{Rate, RedisSpec};
use crate::otp::ChallengeId;
use crate::phone::{MemoryNumbers, NumberCache};

mod codec;
mod conn;
pub mod info;
mod key;
mod migrate;
mod mux;
mod numbers;
mod run;
mod scripts;
mod shared;

use codec::{count, step_num, ttl, PhoneFields};
use conn::Conn;
pub use conn::{sentinel_view, SentinelAnswer};
use mux::Mux;

/// How long past the caller's expiry the server keeps a challenge or a
/// send window before its TTL drops it (reads compare with `now` anyway).
pub const GRACE_MS: Millis = 600_000;

/// How long the server keeps a validated number in the shared number
/// cache (30 days): its entries never change meaning, the TTL only lets
/// numbers no one uses any more, and a past version's keys, go.
pub const NUMBER_TTL_S: u64 = 30 * 24 * 3600;

/// The shared state on a Redis server. Each value is one connection.
///
/// As a [`SharedBackend`](crate::store::SharedBackend) (smsotp-radiusd,
/// from [`RedisStore::shared`]; `shared.rs`) it runs deferred work at
/// once: a write is done on the server when its command returns, and as
/// durable as the server's own persistence settings make it. It and its
/// handles send their commands on one connection, pipelined (`mux.rs`),
/// and a worker with fibers on one of its own; a write that waits to be
/// durable goes on a connection of its handle's own.
pub struct RedisStore {
    spec: RedisSpec,
    conn: Mutex<Option<Conn>>,
    /// The code key this handle is bound to, once known: every connection
    /// opened since was checked against the store's fingerprint. Locked
    /// after `conn` when both are. A server's handles share it.
    key_fp: Arc<Mutex<Option<KeyFingerprint>>>,
    /// The connection a server's handles share, if this is one.
    mux: Option<Arc<Mux>>,
    /// See [`SharedBackend::after_each_batch`].
    after_batch: OnceLock<AfterBatch>,
    /// Validated numbers seen through this store or its handles.
    numbers: Arc<MemoryNumbers>,
    /// When a command last failed for want of the server (down, not
    /// answering): the number cache, only an aid, leaves the server alone
    /// for [`CACHE_PAUSE`] after, so a login on a store that does not
    /// answer waits for the store's timeouts once, not once per lookup.
    unreachable_at: Mutex<Option<Instant>>,
}

/// See `RedisStore::unreachable_at`.
const CACHE_PAUSE: Duration = Duration::from_secs(5);

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.spec.url)
            .field("key_prefix", &self.spec.key_prefix)
            .finish_non_exhaustive()
    }
}

/// What failed, for [`StoreError`]'s source: never a secret or a code.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

impl RedisStore {
    /// A store on the server `spec` names. Connects now, so a wrong URL,
    /// password or a server that is down shows at once; later calls
    /// reconnect when the connection broke.
    pub fn open(spec: &RedisSpec) -> Result<Self, StoreError> {
        let store = Self::lazy(spec);
        {
            let mut g = store.lock();
            *g = Some(store.connect()?);
        }
        Ok(store)
    }

    /// [`RedisStore::open`] bound to the code key `key`: the connection is
    /// checked against the store's key fingerprint as it opens (recording
    /// it if the store has none), in the round trip that proves it works.
    /// A store first used with another key is
    /// [`StoreError::KeyMismatch`].
    pub fn open_keyed(spec: &RedisSpec, key: &KeyFingerprint) -> Result<Self, StoreError> {
        let store = Self::lazy(spec);
        *store.key_fp_lock() = Some(key.clone());
        {
            let mut g = store.lock();
            *g = Some(store.connect()?);
        }
        Ok(store)
    }

    /// [`RedisStore::lazy`] bound to the code key `key`: its first
    /// connection, when a call needs one, is checked against the store's
    /// key fingerprint as it opens.
    pub fn lazy_keyed(spec: &RedisSpec, key: &KeyFingerprint) -> Self {
        let store = Self::lazy(spec);
        *store.key_fp_lock() = Some(key.clone());
        store
    }

    /// A store on the server `spec` names that connects on first use.
    pub fn lazy(spec: &RedisSpec) -> Self {
        RedisStore {
            spec: spec.clone(),
            conn: Mutex::new(None),
            key_fp: Arc::default(),
            mux: None,
            after_batch: OnceLock::new(),
            numbers: Arc::default(),
            unreachable_at: Mutex::new(None),
        }
    }

    /// [`RedisStore::lazy`] for a server's threads: it and its handles
    /// share one connection, their commands pipelined (see `mux.rs`).
    pub fn shared(spec: &RedisSpec) -> Self {
        let store = Self::lazy(spec);
        let connector = RedisStore {
            key_fp: store.key_fp.clone(),
            ..Self::lazy(spec)
        };
        RedisStore {
            mux: Some(Arc::new(Mux::new(connector))),
            ..store
        }
    }
}

impl Store for RedisStore {
    fn locked_until(&self, user: &str, now: Millis) -> Result<Option<Millis>, StoreError> {
        let until: Option<Millis> =
            self.run(|c| redis::cmd("HGET").arg(self.fail(user)).arg("u").query(c))?;
        Ok(until.filter(|&u| u > now))
    }

    fn login_state(
        &self,
        user: &str,
        now: Millis,
        request: Option<&ChallengeId>,
    ) -> Result<LoginState, StoreError> {
        let pipe = || {
            let mut p = redis::pipe();
            p.atomic()
                .cmd("HGET")
                .arg(self.fail(user))
                .arg("u")
                .cmd("HMGET")
                .arg(self.phone_key(user))
                .arg("e")
                .arg("t")
                .arg("b")
                .cmd("GET")
                .arg(self.language_key(user));
            p
        };
        let (until, phone, language, request_challenge) = match request {
            // The request's own challenge in the same round trip.
            Some(id) => {
                type Read = (
                    Option<Millis>,
                    PhoneFields,
                    Option<String>,
                    HashMap<String, Vec<u8>>,
                );
                let (until, phone, language, h): Read =
                    self.run(|c| pipe().cmd("HGETALL").arg(self.ch(id)).query(c))?;
                (until, phone, language, self.decode_challenge(id, h)?)
            }
            None => {
                let (until, phone, language): (Option<Millis>, PhoneFields, Option<String>) =
                    self.run(|c| pipe().query(c))?;
                (until, phone, language, None)
            }
        };
        Ok(LoginState {
            locked_until: until.filter(|&u| u > now),
            phone: self.decode_phone(phone)?,
            request_challenge,
            language,
        })
    }

    fn answer_state(
        &self,
        id: &ChallengeId,
        user: &str,
        now: Millis,
    ) -> Result<AnswerState, StoreError> {
        let (h, until): (HashMap<String, Vec<u8>>, Option<Millis>) = self.run(|c| {
            redis::pipe()
                .atomic()
                .cmd("HGETALL")
                .arg(self.ch(id))
                .cmd("HGET")
                .arg(self.fail(user))
                .arg("u")
                .query(c)
        })?;
        Ok(AnswerState {
            challenge: self.decode_challenge(id, h)?,
            locked_until: until.filter(|&u| u > now),
        })
    }

    fn record_failure(
        &self,
        user: &str,
        now: Millis,
        lockout_after: u32,
        lockout: Duration,
    ) -> Result<FailureState, StoreError> {
        // Only a failure that locks is waited for: a lost count costs at
        // most a few more tries, each bounded by the challenge's own.
        let (n, until): (i64, i64) = self.run_then(
            |c| {
                scripts::RECORD_FAILURE
                    .key(self.fail(user))
                    .arg(now)
                    .arg(lockout_after)
                    .arg(now.saturating_add(ms(lockout)))
                    .invoke(c)
            },
            |&(_, until)| until >= 0,
        )?;
        Ok(FailureState {
            count: count(n),
            locked_until: (until >= 0).then_some(until),
        })
    }

    fn clear_failures(&self, user: &str) -> Result<(), StoreError> {
        self.run(|c| redis::cmd("DEL").arg(self.fail(user)).query::<i64>(c))?;
        Ok(())
    }

    fn unlock(&self, user: &str) -> Result<(), StoreError> {
        self.run_durable(|c| redis::cmd("DEL").arg(self.fail(user)).query::<i64>(c))?;
        Ok(())
    }

    fn failures(&self, user: &str, now: Millis) -> Result<FailureState, StoreError> {
        let (n, until): (Option<i64>, Option<Millis>) = self.run(|c| {
            redis::cmd("HMGET")
                .arg(self.fail(user))
                .arg("n")
                .arg("u")
                .query(c)
        })?;
        Ok(FailureState {
            count: n.map_or(0, count),
            locked_until: until.filter(|&u| u > now),
        })
    }

    fn sms_window(&self, user: &str, now: Millis, per_user: Rate) -> Result<SmsWindow, StoreError> {
        let all: HashMap<Millis, u32> =
            self.run(|c| redis::cmd("HGETALL").arg(self.sends(user)).query(c))?;
        let span = ms(per_user.window);
        let sends: BTreeMap<Millis, u32> =
            all.into_iter().filter(|&(at, _)| at > now - span).collect();
        let sent = sends.values().sum::<u32>();
        let limit = per_user.count.get();
        let next_allowed_at = (sent >= limit).then(|| {
            let must_leave = sent - limit + 1;
            let mut left = 0;
            sends
                .iter()
                .find(|&(_, &n)| {
                    left += n;
                    left >= must_leave
                })
                .map_or(now, |(&at, _)| at + span)
        });
        Ok(SmsWindow {
            sent,
            next_allowed_at,
        })
    }

    fn clear_sms_window(
        &self,
        user: &str,
        now: Millis,
        window: Duration,
    ) -> Result<u32, StoreError> {
        let n: i64 = self.run(|c| {
            scripts::CLEAR_SENDS
                .key(self.sends(user))
                .arg(now - ms(window))
                .invoke(c)
        })?;
        Ok(count(n))
    }

    fn reserve_sends(
        &self,
        user: &str,
        now: Millis,
        limits: &SendLimits,
    ) -> Result<SendDecision, StoreError> {
        let r: Vec<i64> = self.run(|c| {
            let mut inv = scripts::Call::new(&scripts::RESERVE);
            inv.key(self.sends(user));
            self.window_args(&mut inv, user, now, limits);
            inv.invoke(c)
        })?;
        self.decision(&r, limits)
    }

    fn breaker(&self, w: &KeyedWindow, now: Millis) -> Result<BreakerState, StoreError> {
        self.breaker_op(w, now, false)
    }

    fn reset_breaker(&self, w: &KeyedWindow, now: Millis) -> Result<BreakerState, StoreError> {
        self.breaker_op(w, now, true)
    }

    fn add_counts(&self, at: Millis, counts: &[(CounterKey, u64)]) -> Result<(), StoreError> {
        if counts.is_empty() {
            return Ok(());
        }
        let day = Day::of(at);
        let key = self.day_key(day);
        // Relative to the caller's time, as every TTL here: the day is
        // forgotten KEEP_DAYS days after it ends.
        let ttl = ((day.forget_at() - at) / 1000).max(1);
        self.run(|c| {
            let mut p = redis::pipe();
            for (k, n) in counts {
                p.cmd("HINCRBY")
                    .arg(&key)
                    .arg(format!("{}\t{}\t{}", k.provider, k.country, k.what.name()))
                    .arg(i64::try_from(*n).unwrap_or(i64::MAX))
                    .ignore();
            }
            p.cmd("EXPIRE").arg(&key).arg(ttl).ignore();
            p.query::<()>(c)
        })
    }

    fn counters(&self, day: Day, now: Millis) -> Result<Counts, StoreError> {
        if !day.kept_at(now) {
            return Ok(Vec::new());
        }
        let h: HashMap<String, i64> =
            self.run(|c| redis::cmd("HGETALL").arg(self.day_key(day)).query(c))?;
        Ok(counters::tidy(
            h.into_iter()
                .filter_map(|(field, n)| {
                    let mut parts = field.rsplitn(3, '\t');
                    let what = Counted::parse(parts.next()?)?;
                    let country = parts.next()?.to_owned();
                    let provider = parts.next()?.to_owned();
                    Some((
                        CounterKey {
                            provider,
                            country,
                            what,
                        },
                        u64::try_from(n).unwrap_or(0),
                    ))
                })
                .collect(),
        ))
    }

    fn insert_challenge(&self, ch: &ChallengeRecord) -> Result<(), StoreError> {
        let n: i64 = self.run(|c| {
            let mut inv = scripts::Call::new(&scripts::INSERT);
            inv.key(self.ch(&ch.id));
            self.challenge_args(&mut inv, ch);
            inv.invoke(c)
        })?;
        self.permit(n)
    }

    fn start_challenge_with(
        &self,
        ch: &ChallengeRecord,
        limits: &SendLimits,
    ) -> Result<SendDecision, StoreError> {
        let r: Vec<i64> = self.run(|c| {
            let mut inv = scripts::Call::new(&scripts::START);
            inv.key(self.ch(&ch.id)).key(self.sends(&ch.user));
            self.challenge_args(&mut inv, ch);
            self.window_args(&mut inv, &ch.user, ch.created_at, limits);
            inv.invoke(c)
        })?;
        self.decision(&r, limits)
    }

    fn start_at_once(
        &self,
        ch: &ChallengeRecord,
        limits: &SendLimits,
        e164: &str,
        request: bool,
    ) -> Result<AtOnce, StoreError> {
        type Raw = (
            i64,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<String>,
            Option<String>,
            Option<HashMap<String, Vec<u8>>>,
            Option<Vec<i64>>,
        );
        let now = ch.created_at;
        let raw: Raw = self.run(|c| {
            let mut inv = scripts::Call::new(&scripts::START_AT_ONCE);
            inv.key(self.fail(&ch.user))
                .key(self.phone_key(&ch.user))
                .key(self.language_key(&ch.user))
                .key(self.ch(&ch.id))
                .key(self.sends(&ch.user));
            inv.arg(e164).arg(u8::from(request)).arg(now);
            self.challenge_args(&mut inv, ch);
            self.window_args(&mut inv, &ch.user, now, limits);
            inv.invoke(c)
        })?;
        match raw {
            (1, language, e, t, b, _, _, Some(r)) => Ok(AtOnce::Started {
                decision: self.decision(&r, limits)?,
                language,
                registered: self.decode_phone((e, t, b))?,
            }),
            (0, until, e, t, b, language, h, _) => {
                let until: Option<Millis> = until
                    .map(|u| {
                        u.parse()
                            .map_err(|_| self.corrupt("a lockout is not a time"))
                    })
                    .transpose()?;
                Ok(AtOnce::Seen(Box::new(LoginState {
                    locked_until: until.filter(|&u| u > now),
                    phone: self.decode_phone((e, t, b))?,
                    request_challenge: match h {
                        Some(h) => self.decode_challenge(&ch.id, h)?,
                        None => None,
                    },
                    language,
                })))
            }
            _ => Err(self.corrupt("the start script answered what it never does")),
        }
    }

    fn starts_at_once(&self) -> bool {
        true
    }

    fn challenge(&self, id: &ChallengeId) -> Result<Option<ChallengeRecord>, StoreError> {
        let h: HashMap<String, Vec<u8>> =
            self.run(|c| redis::cmd("HGETALL").arg(self.ch(id)).query(c))?;
        self.decode_challenge(id, h)
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
        let n: i64 = self.run(|c| {
            scripts::REPLACE_CODE
                .key(self.ch(id))
                .arg(&code_mac[..])
                .arg(sent_at)
                .arg(expires_at)
                .arg(attempts_left)
                .arg(resends_used)
                .arg(ttl(sent_at, expires_at))
                .invoke(c)
        })?;
        Ok(n == 1)
    }

    fn wrong_attempt(&self, id: &ChallengeId) -> Result<Option<u32>, StoreError> {
        let n: i64 = self.run(|c| scripts::WRONG_ATTEMPT.key(self.ch(id)).invoke(c))?;
        Ok((n >= 0).then(|| count(n)))
    }

    fn consume(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        user: &str,
    ) -> Result<bool, StoreError> {
        let n: i64 = self.run(|c| {
            scripts::CONSUME
                .key(self.ch(id))
                .key(self.fail(user))
                .arg(&code_mac[..])
                .invoke(c)
        })?;
        Ok(n == 1)
    }

    fn consume_code(
        &self,
        id: &ChallengeId,
        user: &str,
        service: &str,
        code_mac: &[u8; 32],
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        self.run(|c| {
            scripts::Call::new(&scripts::CONSUME_CODE)
                .key(self.ch(id))
                .key(self.fail(user))
                .arg(user)
                .arg(service)
                .arg(&code_mac[..])
                .arg(now)
                .invoke(c)
        })
    }

    fn delete_challenge(&self, id: &ChallengeId) -> Result<(), StoreError> {
        self.run(|c| redis::cmd("DEL").arg(self.ch(id)).query::<i64>(c))?;
        Ok(())
    }

    fn withdraw(&self, id: &ChallengeId, code_mac: &[u8; 32]) -> Result<bool, StoreError> {
        let n: i64 = self.run(|c| {
            scripts::WITHDRAW
                .key(self.ch(id))
                .arg(&code_mac[..])
                .invoke(c)
        })?;
        Ok(n == 1)
    }

    fn phone(&self, user: &str) -> Result<Option<PhoneRecord>, StoreError> {
        let v = self.run(|c| {
            redis::cmd("HMGET")
                .arg(self.phone_key(user))
                .arg("e")
                .arg("t")
                .arg("b")
                .query(c)
        })?;
        self.decode_phone(v)
    }

    fn set_phone(&self, user: &str, rec: &PhoneRecord) -> Result<(), StoreError> {
        self.run_durable(|c| {
            redis::cmd("HSET")
                .arg(self.phone_key(user))
                .arg("e")
                .arg(&rec.e164)
                .arg("t")
                .arg(rec.set_at)
                .arg("b")
                .arg(&rec.set_by)
                .query::<i64>(c)
        })?;
        Ok(())
    }

    fn clear_phone(&self, user: &str) -> Result<bool, StoreError> {
        let n: i64 = self.run_durable(|c| redis::cmd("DEL").arg(self.phone_key(user)).query(c))?;
        Ok(n == 1)
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
        let n: i64 = self.run(|c| {
            scripts::ENROLL_NUMBER
                .key(self.ch(id))
                .arg(e164)
                .arg(&code_mac[..])
                .arg(crate::phone::mask_raw(e164))
                .arg(sent_at)
                .arg(expires_at)
                .arg(attempts_left)
                .arg(ttl(sent_at, expires_at))
                .invoke(c)
        })?;
        Ok(n == 1)
    }

    fn complete_enrollment(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        user: &str,
        at: Millis,
        set_by: &str,
    ) -> Result<bool, StoreError> {
        let n: i64 = self.run_then(
            |c| {
                scripts::COMPLETE_ENROLLMENT
                    .key(self.ch(id))
                    .key(self.fail(user))
                    .key(self.phone_key(user))
                    .arg(&code_mac[..])
                    .arg(user)
                    .arg(at)
                    .arg(set_by)
                    .invoke(c)
            },
            |&n| n == 1,
        )?;
        Ok(n == 1)
    }

    fn set_step(
        &self,
        id: &ChallengeId,
        code_mac: &[u8; 32],
        step: Step,
    ) -> Result<bool, StoreError> {
        let n: i64 = self.run(|c| {
            scripts::SET_STEP
                .key(self.ch(id))
                .arg(&code_mac[..])
                .arg(step_num(step))
                .invoke(c)
        })?;
        Ok(n == 1)
    }

    fn replace_backup_codes(
        &self,
        user: &str,
        codes: &[BackupHash],
        _at: Millis,
    ) -> Result<(), StoreError> {
        self.run_durable(|c| {
            let mut p = redis::pipe();
            p.atomic().cmd("DEL").arg(self.backup(user)).ignore();
            if !codes.is_empty() {
                let cmd = p.cmd("HSET").arg(self.backup(user));
                for code in codes {
                    cmd.arg(&code.hash).arg(&code.tag[..]);
                }
                cmd.ignore();
            }
            p.query::<()>(c)
        })
    }

    fn backup_candidates(&self, user: &str, tag: &[u8; 8]) -> Result<Vec<String>, StoreError> {
        let all: HashMap<String, Vec<u8>> =
            self.run(|c| redis::cmd("HGETALL").arg(self.backup(user)).query(c))?;
        Ok(all
            .into_iter()
            .filter(|(_, t)| t.as_slice() == tag)
            .map(|(h, _)| h)
            .collect())
    }

    fn consume_backup_code(
        &self,
        user: &str,
        hash: &str,
        challenge: Option<&ChallengeId>,
    ) -> Result<Option<u32>, StoreError> {
        let ch = challenge.map_or_else(|| self.key("c", "-"), |id| self.ch(id));
        let n: i64 = self.run_then(
            |c| {
                scripts::CONSUME_BACKUP
                    .key(self.backup(user))
                    .key(self.fail(user))
                    .key(&ch)
                    .arg(hash)
                    .arg(u8::from(challenge.is_some()))
                    .invoke(c)
            },
            |&n| n >= 0,
        )?;
        Ok((n >= 0).then(|| count(n)))
    }

    fn backup_codes_left(&self, user: &str) -> Result<u32, StoreError> {
        let n: i64 = self.run(|c| redis::cmd("HLEN").arg(self.backup(user)).query(c))?;
        Ok(count(n))
    }

    fn revoke_backup_codes(&self, user: &str) -> Result<u32, StoreError> {
        let (n, _): (i64, i64) = self.run_durable(|c| {
            redis::pipe()
                .atomic()
                .cmd("HLEN")
                .arg(self.backup(user))
                .cmd("DEL")
                .arg(self.backup(user))
                .query(c)
        })?;
        Ok(count(n))
    }

    fn set_opt_out(&self, user: &str, set: Option<(&str, Millis)>) -> Result<(), StoreError> {
        self.run_durable(|c| match set {
            Some((by, at)) => redis::cmd("HSET")
                .arg(self.opt_key())
                .arg(user)
                .arg(migrate::opt_out_value(by, at))
                .query::<i64>(c),
            None => redis::cmd("HDEL")
                .arg(self.opt_key())
                .arg(user)
                .query::<i64>(c),
        })?;
        Ok(())
    }

    fn opt_out(&self, user: &str) -> Result<Option<(String, Millis)>, StoreError> {
        let v: Option<String> =
            self.run(|c| redis::cmd("HGET").arg(self.opt_key()).arg(user).query(c))?;
        v.map(|v| self.decode_opt_out(&v)).transpose()
    }

    fn opted_out_users(&self) -> Result<Vec<String>, StoreError> {
        let mut users: Vec<String> =
            self.run(|c| redis::cmd("HKEYS").arg(self.opt_key()).query(c))?;
        users.sort();
        Ok(users)
    }

    fn set_language(&self, user: &str, lang: Option<&str>) -> Result<(), StoreError> {
        let key = self.language_key(user);
        self.run_durable(|c| match lang {
            Some(l) => redis::cmd("SET").arg(&key).arg(l).query::<()>(c),
            None => redis::cmd("DEL").arg(&key).query::<()>(c),
        })
    }

    fn language(&self, user: &str) -> Result<Option<String>, StoreError> {
        self.run(|c| redis::cmd("GET").arg(self.language_key(user)).query(c))
    }

    fn number_cache(&self) -> &dyn NumberCache {
        self
    }

    fn export(&self, now: Millis) -> Result<Snapshot, StoreError> {
        self.export_all(now)
    }

    fn import_record(&self, rec: &Record<'_>, now: Millis) -> Result<Outcome, StoreError> {
        self.import_one(rec, now)
    }

    fn check_key_fingerprint(&self, key: &KeyFingerprint) -> Result<(), StoreError> {
        self.check_key(key)
    }
}

#[cfg(test)]
mod mux_tests;
#[cfg(test)]
mod replication_tests;
#[cfg(test)]
mod sentinel_tests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tls_tests;
#[cfg(test)]
mod window_tests;
