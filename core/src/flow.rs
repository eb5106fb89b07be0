//! The login conversation as a state machine both front ends drive:
//! start → sent → verify / resend → accept or reject.
//!
//! [`Engine::start`] and [`Engine::answer`] are single steps whose state lives
//! in the store (RADIUS carries the challenge id in State between packets);
//! [`run`] drives them through an interactive [`Conversation`] (PAM). The
//! rules live here once: no front end decides anything about codes.

use std::path::Path;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::audit::{Audit, AuditSink, Event, FileSink, Level, StderrSink, SyslogSink};
use crate::clock::{ms, Clock, Millis, SystemClock};
use crate::config::{Config, MessageValues, NoPhone, ProviderDown, StoreSpec};
use crate::directory::{self, Accounts, Directory, DirectoryError, SystemAccounts};
use crate::otp::{self, ChallengeId, KeyError, OtpKey};
use crate::random::{OsRandom, RandomError, RandomSource};
use crate::sms::{self, ChainOutcome, Sms, SmsProvider};
use crate::store::{ChallengeRecord, SendPermit, SqliteStore, Store, StoreCache, StoreError};

/// Who is logging in, to what, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginContext {
    pub user: String,
    /// The PAM service ("sshd", "sudo") or the RADIUS client ("radius:vpn").
    /// A code is valid only for the service it was sent for.
    pub service: String,
    pub rhost: Option<String>,
}

/// The final answer of a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept(Accept),
    Reject(Reject),
    /// The second factor does not apply to this user.
    NotApplicable(Skip),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    CodeVerified,
    /// `no_phone = "allow"` let a user without a number in.
    NoPhoneAllowed,
    /// `provider_down = "allow"` let the user in while no SMS could be sent.
    ProviderDownAllowed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reject {
    /// Every try of the code was wrong.
    WrongCode,
    /// The code expired and no new one could be sent.
    Expired,
    LockedOut,
    RateLimited,
    NoPhone,
    /// No provider could send (outage) and the policy is to deny.
    ProviderDown,
    /// The gateway refused the number.
    SendRefused,
    CountryNotAllowed,
    /// The challenge is unknown, used, or belongs to another user or service.
    UnknownChallenge,
    /// Only empty answers while no new code could be sent.
    NoCodeEntered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    ExemptUser,
    ExemptGroup,
}

/// A fixed word for logs.
pub trait Reason {
    fn word(&self) -> &'static str;
}

impl Reason for Reject {
    fn word(&self) -> &'static str {
        match self {
            Reject::WrongCode => "wrong_code",
            Reject::Expired => "expired",
            Reject::LockedOut => "locked_out",
            Reject::RateLimited => "rate_limited",
            Reject::NoPhone => "no_phone",
            Reject::ProviderDown => "provider_down",
            Reject::SendRefused => "send_refused",
            Reject::CountryNotAllowed => "country_not_allowed",
            Reject::UnknownChallenge => "unknown_challenge",
            Reject::NoCodeEntered => "no_code_entered",
        }
    }
}

impl Reject {
    /// What the user is told. Lockout and rate limits share one text that
    /// says nothing about the account.
    pub fn user_message(&self) -> &'static str {
        match self {
            Reject::WrongCode => "Too many wrong codes.",
            Reject::Expired => "The code has expired.",
            Reject::LockedOut | Reject::RateLimited => {
                "A code cannot be used for this login now. Try again later."
            }
            Reject::NoPhone => {
                "No phone number is registered for this account. Contact your administrator."
            }
            Reject::ProviderDown | Reject::SendRefused => {
                "The code could not be sent. Try again later."
            }
            Reject::CountryNotAllowed => {
                "The code could not be sent to your number. Contact your administrator."
            }
            Reject::UnknownChallenge => "This login attempt is no longer valid. Start again.",
            Reject::NoCodeEntered => "No code was entered.",
        }
    }
}

/// A code is out: what the user should be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeInfo {
    pub id: ChallengeId,
    pub phone_masked: String,
    pub expires_in: Duration,
    pub attempts_left: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Challenge(ChallengeInfo),
    Done(Verdict),
}

/// Why the user is asked again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    WrongCode { tries_left: u32 },
    Expired,
    Resent { phone_masked: String },
    Cooldown { wait: Duration },
    NoResendsLeft,
    ResendLimited,
}

impl Retry {
    pub fn user_message(&self) -> String {
        match self {
            Retry::WrongCode { tries_left: 1 } => "Wrong code, 1 try left.".into(),
            Retry::WrongCode { tries_left } => format!("Wrong code, {tries_left} tries left."),
            Retry::Expired => "The code has expired. Press Enter for a new one.".into(),
            Retry::Resent { phone_masked } => format!("New code sent to {phone_masked}."),
            Retry::Cooldown { wait } => {
                let s = wait.as_secs().max(1);
                format!(
                    "Wait {s} second{} before asking for a new code.",
                    if s == 1 { "" } else { "s" }
                )
            }
            Retry::NoResendsLeft => "No new code can be sent; enter the code you received.".into(),
            Retry::ResendLimited => {
                "No new code can be sent now; enter the code you received.".into()
            }
        }
    }

    /// Informational (not an error) messages.
    pub fn is_info(&self) -> bool {
        matches!(self, Retry::Resent { .. })
    }

    /// An empty answer that could not bring a new code.
    pub fn is_idle(&self) -> bool {
        matches!(
            self,
            Retry::Cooldown { .. } | Retry::NoResendsLeft | Retry::ResendLimited
        )
    }
}

/// What an answer that comes after the code expired gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Say so and offer a new code (an interactive prompt: PAM).
    OfferNew,
    /// Refuse and end the challenge (RADIUS: the NAS gave up on it at
    /// Session-Timeout, and an old State must not come back to life).
    Reject,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Done(Verdict),
    Retry(Retry, ChallengeInfo),
}

/// Something went wrong that is not the user's doing. Front ends fail closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error("cannot read the groups of {user}: {message}")]
    Accounts { user: String, message: String },
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the conversation with the user failed: {0}")]
    Conversation(String),
}

/// Everything a login needs, built once per PAM call or per server.
pub struct Engine {
    pub cfg: Config,
    store: Box<dyn Store>,
    directories: Vec<Box<dyn Directory>>,
    providers: Vec<Box<dyn SmsProvider>>,
    accounts: Box<dyn Accounts>,
    clock: Box<dyn Clock>,
    rng: Box<dyn RandomSource>,
    audit: Audit,
    key: OtpKey,
    host: String,
    /// When this engine last purged the store (0: never).
    last_purge: std::cell::Cell<Millis>,
}

/// The parts of an [`Engine`], for tests and for front ends that build their
/// own (the RADIUS server shares one store).
pub struct Parts {
    pub store: Box<dyn Store>,
    pub directories: Vec<Box<dyn Directory>>,
    pub providers: Vec<Box<dyn SmsProvider>>,
    pub accounts: Box<dyn Accounts>,
    pub clock: Box<dyn Clock>,
    pub rng: Box<dyn RandomSource>,
    pub audit: Audit,
    pub key: OtpKey,
    pub host: String,
}

/// How a front end wants logging set up.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// syslog identity ("pam_smsotp", "smsotp-radiusd").
    pub ident: String,
    /// Also log debug events.
    pub debug: bool,
    /// Also write every event to standard error (daemons).
    pub stderr: bool,
}

fn system_clock() -> Box<dyn Clock> {
    Box::new(SystemClock)
}

/// The sinks the config asks for.
pub fn audit_from_config(cfg: &Config, log: &LogOptions) -> Audit {
    let mut sinks: Vec<Box<dyn AuditSink>> = Vec::new();
    if cfg.audit.syslog {
        sinks.push(Box::new(SyslogSink::new(&log.ident, log.debug)));
    }
    if log.stderr {
        sinks.push(Box::new(StderrSink {
            ident: log.ident.clone(),
            debug: log.debug,
        }));
    }
    if let Some(path) = &cfg.audit.file {
        sinks.push(Box::new(FileSink {
            path: path.clone(),
            debug: log.debug,
        }));
    }
    Audit { sinks }
}

impl Engine {
    /// The production engine: real clock, OS randomness, the configured
    /// store, directories and providers.
    pub fn open(cfg: Config, log: &LogOptions) -> Result<Engine, FlowError> {
        let StoreSpec::Sqlite { path, busy_timeout } = &cfg.store;
        let store = SqliteStore::open(path, *busy_timeout)?;
        Engine::open_with_store(cfg, log, Box::new(store))
    }

    /// [`Engine::open`] with a store the caller opened (a server shares one
    /// between its threads).
    pub fn open_with_store(
        cfg: Config,
        log: &LogOptions,
        store: Box<dyn Store>,
    ) -> Result<Engine, FlowError> {
        let key = OtpKey::load_or_create(&cfg.otp.key_file, &OsRandom)?;
        let parts = Parts {
            store,
            directories: directory::from_config(&cfg.directories),
            providers: sms::from_config(&cfg.providers, system_clock),
            accounts: Box::new(SystemAccounts),
            clock: system_clock(),
            rng: Box::new(OsRandom),
            audit: audit_from_config(&cfg, log),
            key,
            host: hostname(),
        };
        Ok(Engine::with_parts(cfg, parts))
    }

    pub fn with_parts(cfg: Config, p: Parts) -> Engine {
        Engine {
            cfg,
            store: p.store,
            directories: p.directories,
            providers: p.providers,
            accounts: p.accounts,
            clock: p.clock,
            rng: p.rng,
            audit: p.audit,
            key: p.key,
            host: p.host,
            last_purge: std::cell::Cell::new(0),
        }
    }

    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    fn event(&self, ctx: &LoginContext, event: &'static str) -> Event {
        Event {
            event,
            user: ctx.user.clone(),
            service: ctx.service.clone(),
            rhost: ctx.rhost.clone(),
            ..Event::default()
        }
    }

    fn log(&self, level: Level, e: &Event) {
        self.audit.record(level, self.now(), e);
    }

    /// Records an event of the front end's own (e.g. a RADIUS password
    /// check) in the same audit trail.
    pub fn record(&self, level: Level, e: &Event) {
        self.log(level, e);
    }

    /// An event about this login, to fill in and [`Engine::record`].
    pub fn event_for(&self, ctx: &LoginContext, event: &'static str) -> Event {
        self.event(ctx, event)
    }

    /// Logs a final verdict and returns it.
    pub(crate) fn finish(&self, ctx: &LoginContext, v: Verdict, phone: Option<&str>) -> Verdict {
        let mut e = self.event(ctx, "");
        e.phone = phone.map(str::to_owned);
        let level = match v {
            Verdict::Accept(Accept::CodeVerified) => {
                e.event = "accept";
                e.outcome = Some("success");
                e.reason = Some("code_verified");
                Level::Info
            }
            Verdict::Accept(Accept::NoPhoneAllowed) => {
                e.event = "fail_open";
                e.outcome = Some("success");
                e.reason = Some("no_phone");
                e.detail = Some("no_phone = \"allow\": let in without a second factor".into());
                Level::Warning
            }
            Verdict::Accept(Accept::ProviderDownAllowed) => {
                e.event = "fail_open";
                e.outcome = Some("success");
                e.reason = Some("provider_down");
                e.detail = Some(
                    "provider_down = \"allow\": NO SMS COULD BE SENT; let in without a second factor"
                        .into(),
                );
                Level::Error
            }
            Verdict::Reject(r) => {
                e.event = "reject";
                e.outcome = Some("failure");
                e.reason = Some(r.word());
                Level::Info
            }
            Verdict::NotApplicable(s) => {
                e.event = "skip";
                e.outcome = Some("not_applicable");
                e.reason = Some(match s {
                    Skip::ExemptUser => "exempt_user",
                    Skip::ExemptGroup => "exempt_group",
                });
                Level::Info
            }
        };
        self.log(level, &e);
        v
    }

    /// Logs an error that ends a login (the front end fails closed).
    pub fn log_error(&self, ctx: &LoginContext, err: &FlowError) {
        let mut e = self.event(ctx, "error");
        e.outcome = Some("failure");
        e.detail = Some(err.to_string());
        self.log(Level::Error, &e);
    }

    /// Step one: decide whether the user needs a code, and send it.
    pub fn start(&self, ctx: &LoginContext) -> Result<Start, FlowError> {
        let policy = &self.cfg.policy;
        if policy.exempt_users.contains(&ctx.user) {
            return Ok(Start::Done(self.finish(
                ctx,
                Verdict::NotApplicable(Skip::ExemptUser),
                None,
            )));
        }
        if !policy.exempt_groups.is_empty() {
            let groups =
                self.accounts
                    .groups(&ctx.user)
                    .map_err(|message| FlowError::Accounts {
                        user: ctx.user.clone(),
                        message,
                    })?;
            if groups.iter().any(|g| policy.exempt_groups.contains(g)) {
                return Ok(Start::Done(self.finish(
                    ctx,
                    Verdict::NotApplicable(Skip::ExemptGroup),
                    None,
                )));
            }
        }
        let now = self.now();
        let keep = self
            .cfg
            .limits
            .sms_per_user
            .window
            .max(self.cfg.limits.sms_global.window);
        // Housekeeping on about one login in 32, and at most every 30 s
        // for a long-lived engine: every query already ignores stale rows,
        // so this only keeps the file small, and it scans whole tables.
        let mut dice = [0u8; 1];
        self.rng.fill(&mut dice)?;
        if dice[0] < 8 && now - self.last_purge.get() >= 30_000 {
            self.last_purge.set(now);
            self.store.purge(now, keep)?;
        }
        if self.store.locked_until(&ctx.user, now)?.is_some() {
            return Ok(Start::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::LockedOut),
                None,
            )));
        }
        let Some(found) = directory::lookup(
            &self.directories,
            &ctx.user,
            self.cfg.phone.default_region,
            &StoreCache(&*self.store),
        )?
        else {
            let v = match policy.no_phone {
                NoPhone::Allow => Verdict::Accept(Accept::NoPhoneAllowed),
                NoPhone::Deny => Verdict::Reject(Reject::NoPhone),
            };
            return Ok(Start::Done(self.finish(ctx, v, None)));
        };
        let mut e = self.event(ctx, "phone_found");
        e.phone = Some(found.phone.masked());
        e.detail = Some(format!("from {}", found.source));
        self.log(Level::Debug, &e);
        let phone = found.phone;
        let masked = phone.masked();
        if !phone.allowed(&self.cfg.phone) {
            return Ok(Start::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::CountryNotAllowed),
                Some(&masked),
            )));
        }
        let id = ChallengeId::random(&*self.rng)?;
        let code = otp::generate(&*self.rng, self.cfg.otp.length, self.cfg.otp.alphabet)?;
        let ttl = self.cfg.otp.ttl;
        let rec = ChallengeRecord {
            id,
            user: ctx.user.clone(),
            service: ctx.service.clone(),
            code_mac: self.key.mac(&id, &ctx.user, &ctx.service, code.as_str()),
            phone_masked: masked.clone(),
            created_at: now,
            sent_at: now,
            expires_at: now + ms(ttl),
            attempts_left: self.cfg.otp.max_attempts.get(),
            resends_used: 0,
        };
        // The SMS is counted against the limits and the challenge stored in
        // one transaction, before anything is sent: a store that cannot take
        // it fails the login before anyone receives a code that could never
        // work.
        let limits = &self.cfg.limits;
        match self
            .store
            .start_challenge(&rec, limits.sms_per_user, limits.sms_global)?
        {
            SendPermit::Granted => {}
            limit => {
                let mut e = self.event(ctx, "rate_limit");
                e.detail = Some(match limit {
                    SendPermit::GlobalLimit => {
                        format!("global limit {} reached", limits.sms_global)
                    }
                    _ => format!("per-user limit {} reached", limits.sms_per_user),
                });
                self.log(Level::Warning, &e);
                return Ok(Start::Done(self.finish(
                    ctx,
                    Verdict::Reject(Reject::RateLimited),
                    Some(&masked),
                )));
            }
        }
        match self.deliver(ctx, &phone, code.as_str(), "sent") {
            None => Ok(Start::Challenge(self.info(&rec, now))),
            Some(v) => {
                self.store.delete_challenge(&id)?;
                Ok(Start::Done(v))
            }
        }
    }

    /// Sends `code`; on failure returns the verdict the policy asks for.
    fn deliver(
        &self,
        ctx: &LoginContext,
        phone: &crate::phone::Phone,
        code: &str,
        event: &'static str,
    ) -> Option<Verdict> {
        let text = self.cfg.otp.message.render(&MessageValues {
            code,
            host: &self.host,
            ttl: self.cfg.otp.ttl,
            user: &ctx.user,
            service: &ctx.service,
        });
        let outcome = sms::send_with_failover(
            &self.providers,
            &Sms {
                to: phone,
                text: &text,
            },
        );
        match &outcome {
            ChainOutcome::Sent {
                provider,
                failed_over_from,
            } => {
                if let Some((from, err)) = failed_over_from {
                    let mut e = self.event(ctx, "failover");
                    e.provider = Some(from.clone());
                    e.detail = Some(format!("{err}; sent through {provider} instead"));
                    self.log(Level::Warning, &e);
                }
                let mut e = self.event(ctx, event);
                e.phone = Some(phone.masked());
                e.provider = Some(provider.clone());
                self.log(Level::Info, &e);
                None
            }
            ChainOutcome::Failed(errors) => {
                for (name, err) in errors {
                    let mut e = self.event(ctx, "send_failed");
                    e.phone = Some(phone.masked());
                    e.provider = Some(name.clone());
                    e.detail = Some(err.to_string());
                    self.log(Level::Error, &e);
                }
                let v = if !outcome.is_outage() {
                    Verdict::Reject(Reject::SendRefused)
                } else {
                    match self.cfg.policy.provider_down {
                        ProviderDown::Allow => Verdict::Accept(Accept::ProviderDownAllowed),
                        ProviderDown::Deny => Verdict::Reject(Reject::ProviderDown),
                    }
                };
                Some(self.finish(ctx, v, Some(&phone.masked())))
            }
        }
    }

    fn info(&self, rec: &ChallengeRecord, now: Millis) -> ChallengeInfo {
        ChallengeInfo {
            id: rec.id,
            phone_masked: rec.phone_masked.clone(),
            expires_in: Duration::from_millis(rec.expires_at.saturating_sub(now).max(0) as u64),
            attempts_left: rec.attempts_left,
        }
    }

    /// Step two: the user's answer to challenge `id`. An empty answer asks
    /// for a new code.
    pub fn answer(
        &self,
        ctx: &LoginContext,
        id: &ChallengeId,
        input: &str,
    ) -> Result<Answer, FlowError> {
        self.answer_with(ctx, id, input, Expired::OfferNew)
    }

    /// [`Engine::answer`], choosing what an answer after expiry gets.
    pub fn answer_with(
        &self,
        ctx: &LoginContext,
        id: &ChallengeId,
        input: &str,
        expired: Expired,
    ) -> Result<Answer, FlowError> {
        let now = self.now();
        let Some(rec) = self.store.challenge(id)? else {
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::UnknownChallenge),
                None,
            )));
        };
        if rec.user != ctx.user || rec.service != ctx.service {
            // Someone else's challenge: leave it alone, refuse this one.
            let mut e = self.event(ctx, "challenge_mismatch");
            e.detail = Some(format!(
                "challenge belongs to another user or service ({})",
                rec.service
            ));
            self.log(Level::Warning, &e);
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::UnknownChallenge),
                None,
            )));
        }
        let masked = rec.phone_masked.clone();
        if self.store.locked_until(&ctx.user, now)?.is_some() {
            self.store.delete_challenge(id)?;
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::LockedOut),
                Some(&masked),
            )));
        }
        if expired == Expired::Reject && now >= rec.expires_at {
            self.store.delete_challenge(id)?;
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::Expired),
                Some(&masked),
            )));
        }
        if input.trim().is_empty() {
            return self.resend(ctx, rec, now);
        }
        if now >= rec.expires_at {
            if rec.resends_used < self.cfg.otp.resend_max {
                return Ok(Answer::Retry(Retry::Expired, self.info(&rec, now)));
            }
            self.store.delete_challenge(id)?;
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::Expired),
                Some(&masked),
            )));
        }
        let matches = otp::normalise(input, self.cfg.otp.alphabet).is_some_and(|code| {
            let mac = self.key.mac(id, &ctx.user, &ctx.service, &code);
            otp::macs_equal(&mac, &rec.code_mac)
        });
        if matches {
            // Deleting the row is what makes the code single-use: of two
            // concurrent right answers, exactly one deletes it.
            if self.store.consume(id, &rec.code_mac, &ctx.user)? {
                return Ok(Answer::Done(self.finish(
                    ctx,
                    Verdict::Accept(Accept::CodeVerified),
                    Some(&masked),
                )));
            }
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::UnknownChallenge),
                Some(&masked),
            )));
        }
        let left = self.store.wrong_attempt(id)?;
        let limits = &self.cfg.limits;
        let failures = self.store.record_failure(
            &ctx.user,
            now,
            limits.lockout_after.get(),
            limits.lockout,
        )?;
        let mut e = self.event(ctx, "wrong_code");
        e.phone = Some(masked.clone());
        e.detail = Some(format!(
            "tries left: {}; consecutive failures: {}",
            left.unwrap_or(0),
            failures.count
        ));
        self.log(Level::Info, &e);
        if failures.locked_until.is_some() {
            self.store.delete_challenge(id)?;
            let mut e = self.event(ctx, "locked_out");
            e.detail = Some(format!(
                "{} consecutive failures; locked for {}",
                failures.count,
                humantime::format_duration(limits.lockout)
            ));
            self.log(Level::Warning, &e);
            // This login ends as a wrong code (the user knows they typed
            // it); the next one meets the lockout.
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::WrongCode),
                Some(&masked),
            )));
        }
        match left {
            Some(n) if n > 0 => {
                let mut info = self.info(&rec, now);
                info.attempts_left = n;
                Ok(Answer::Retry(Retry::WrongCode { tries_left: n }, info))
            }
            _ => Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::WrongCode),
                Some(&masked),
            ))),
        }
    }

    fn resend(
        &self,
        ctx: &LoginContext,
        rec: ChallengeRecord,
        now: Millis,
    ) -> Result<Answer, FlowError> {
        let expired = now >= rec.expires_at;
        let give_up = |this: &Self, v: Reject| -> Result<Answer, FlowError> {
            this.store.delete_challenge(&rec.id)?;
            Ok(Answer::Done(this.finish(
                ctx,
                Verdict::Reject(v),
                Some(&rec.phone_masked),
            )))
        };
        if rec.resends_used >= self.cfg.otp.resend_max {
            if expired {
                return give_up(self, Reject::Expired);
            }
            return Ok(Answer::Retry(Retry::NoResendsLeft, self.info(&rec, now)));
        }
        let ready_at = rec.sent_at + ms(self.cfg.otp.resend_cooldown);
        if now < ready_at {
            let wait = Duration::from_millis((ready_at - now) as u64 + 999);
            return Ok(Answer::Retry(
                Retry::Cooldown { wait },
                self.info(&rec, now),
            ));
        }
        let limits = &self.cfg.limits;
        if self
            .store
            .reserve_sms(&ctx.user, now, limits.sms_per_user, limits.sms_global)?
            != SendPermit::Granted
        {
            if expired {
                return give_up(self, Reject::RateLimited);
            }
            return Ok(Answer::Retry(Retry::ResendLimited, self.info(&rec, now)));
        }
        // Phone lookup again: the number may have changed since.
        let Some(found) = directory::lookup(
            &self.directories,
            &ctx.user,
            self.cfg.phone.default_region,
            &StoreCache(&*self.store),
        )?
        else {
            return give_up(self, Reject::NoPhone);
        };
        let code = otp::generate(&*self.rng, self.cfg.otp.length, self.cfg.otp.alphabet)?;
        let mac = self
            .key
            .mac(&rec.id, &ctx.user, &ctx.service, code.as_str());
        let expires_at = now + ms(self.cfg.otp.ttl);
        let attempts = self.cfg.otp.max_attempts.get();
        if !self.store.replace_code(
            &rec.id,
            &mac,
            now,
            expires_at,
            attempts,
            rec.resends_used + 1,
        )? {
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::UnknownChallenge),
                None,
            )));
        }
        if let Some(v) = self.deliver(ctx, &found.phone, code.as_str(), "resent") {
            self.store.delete_challenge(&rec.id)?;
            return Ok(Answer::Done(v));
        }
        let updated = ChallengeRecord {
            phone_masked: found.phone.masked(),
            sent_at: now,
            expires_at,
            attempts_left: attempts,
            resends_used: rec.resends_used + 1,
            ..rec
        };
        Ok(Answer::Retry(
            Retry::Resent {
                phone_masked: updated.phone_masked.clone(),
            },
            self.info(&updated, now),
        ))
    }

    /// The newest pending challenge of this user for this service, if any
    /// (for front ends that cannot carry the challenge id between rounds).
    pub fn pending(&self, ctx: &LoginContext) -> Result<Option<ChallengeInfo>, FlowError> {
        let now = self.now();
        Ok(self
            .store
            .latest_challenge(&ctx.user, &ctx.service, now)?
            .map(|rec| self.info(&rec, now)))
    }

    /// The user went away in the middle: forget the challenge.
    pub fn abandon(&self, ctx: &LoginContext, id: &ChallengeId, why: &str) {
        let _ = self.store.delete_challenge(id);
        let mut e = self.event(ctx, "abandoned");
        e.outcome = Some("failure");
        e.detail = Some(why.to_owned());
        self.log(Level::Info, &e);
    }
}

/// The host name for messages ("… your login code for web1").
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "this host".into())
}

/// How an interactive front end talks to the user (the PAM conversation).
pub trait Conversation {
    fn info(&mut self, text: &str) -> Result<(), String>;
    fn error(&mut self, text: &str) -> Result<(), String>;
    /// An echo-off prompt; the answer is zeroized when dropped.
    fn ask_secret(&mut self, prompt: &str) -> Result<Zeroizing<String>, String>;
}

/// Consecutive empty answers that cannot bring a new code before the login
/// ends.
const MAX_IDLE_ANSWERS: u32 = 3;

/// The prompt for the code.
pub const CODE_PROMPT: &str = "SMS code: ";

/// Runs a whole login through `conv`: send, ask, verify, resend, until a
/// verdict. The number of prompts is bounded so a client cannot hold the
/// login open forever.
pub fn run(
    engine: &Engine,
    conv: &mut dyn Conversation,
    ctx: &LoginContext,
) -> Result<Verdict, FlowError> {
    let challenge = match engine.start(ctx)? {
        Start::Done(v) => {
            tell_verdict(conv, &v);
            return Ok(v);
        }
        Start::Challenge(c) => c,
    };
    conv.info(&format!("Code sent to {}.", challenge.phone_masked))
        .map_err(|e| conversation_failed(engine, ctx, &challenge.id, e))?;
    let otp = &engine.cfg.otp;
    let max_prompts = (otp.max_attempts.get() + 2) * (otp.resend_max + 1) + 5;
    let mut idle = 0;
    for _ in 0..max_prompts {
        let input = conv
            .ask_secret(CODE_PROMPT)
            .map_err(|e| conversation_failed(engine, ctx, &challenge.id, e))?;
        match engine.answer(ctx, &challenge.id, &input)? {
            Answer::Done(v) => {
                tell_verdict(conv, &v);
                return Ok(v);
            }
            Answer::Retry(r, _) => {
                // A client that only sends empty answers (or hit end of
                // input) is not kept waiting for ever.
                idle = if r.is_idle() { idle + 1 } else { 0 };
                if idle > MAX_IDLE_ANSWERS {
                    engine.abandon(ctx, &challenge.id, "only empty answers");
                    let v = engine.finish(
                        ctx,
                        Verdict::Reject(Reject::NoCodeEntered),
                        Some(&challenge.phone_masked),
                    );
                    tell_verdict(conv, &v);
                    return Ok(v);
                }
                let msg = r.user_message();
                let sent = if r.is_info() {
                    conv.info(&msg)
                } else {
                    conv.error(&msg)
                };
                sent.map_err(|e| conversation_failed(engine, ctx, &challenge.id, e))?;
            }
        }
    }
    engine.abandon(ctx, &challenge.id, "too many prompts");
    let v = engine.finish(
        ctx,
        Verdict::Reject(Reject::WrongCode),
        Some(&challenge.phone_masked),
    );
    tell_verdict(conv, &v);
    Ok(v)
}

fn conversation_failed(
    engine: &Engine,
    ctx: &LoginContext,
    id: &ChallengeId,
    e: String,
) -> FlowError {
    engine.abandon(ctx, id, &format!("conversation failed: {e}"));
    FlowError::Conversation(e)
}

fn tell_verdict(conv: &mut dyn Conversation, v: &Verdict) {
    // Best effort: the verdict stands even if the message cannot be shown.
    if let Verdict::Reject(r) = v {
        let _ = conv.error(r.user_message());
    }
}

/// Loads the config at `path` and opens the engine.
pub fn open_from_path(path: &Path, log: &LogOptions) -> Result<Engine, OpenError> {
    let cfg = Config::load(path)?;
    Ok(Engine::open(cfg, log)?)
}

/// Why an engine could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Flow(#[from] FlowError),
}

#[cfg(test)]
#[path = "flow_tests.rs"]
mod tests;
