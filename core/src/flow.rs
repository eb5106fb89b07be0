//! The login conversation as a state machine both front ends drive:
//! start → sent → verify / resend / backup code → accept or reject, and for
//! a user without a number (`no_phone = "enroll"`): number → code → the
//! number is registered and the login accepted.
//!
//! Where a number comes from: the store's `phone` table (set by `smsotp
//! user set-phone` or by enrollment) first, then the configured
//! directories in order. An admin's explicit setting wins over a file; a
//! login never changes a number that exists anywhere.
//!
//! Backup codes are accepted wherever a code is asked for (shape tells them
//! apart: 10 characters, `xxxxx-xxxxx`). A user with backup codes but no
//! number under `no_phone = "deny"`, or whose SMS could not be sent under
//! `provider_down = "deny"`, is asked for a backup code instead.
//!
//! [`Engine::start`] and [`Engine::answer`] are single steps whose state lives
//! in the store (RADIUS carries the challenge id in State between packets);
//! [`run`] drives them through an interactive [`Conversation`] (PAM). The
//! rules live here once: no front end decides anything about codes.

use std::path::Path;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::audit::{Audit, AuditSink, Event, FileSink, Level, StderrSink, SyslogSink};
use crate::backup::{self, BackupError, Redeemed};
use crate::clock::{ms, Clock, Millis, SystemClock};
use crate::config::{Config, MessageValues, NoPhone, ProviderDown};
use crate::directory::{self, Accounts, Directory, DirectoryError, Found, SystemAccounts};
use crate::otp::{self, ChallengeId, KeyError, OtpKey};
use crate::phone::{NoCache, Phone};
use crate::random::{OsRandom, RandomError, RandomSource};
use crate::sms::{self, ChainOutcome, Sms, SmsProvider};
pub use crate::store::Step;
use crate::store::{ChallengeRecord, SendPermit, Store, StoreCache, StoreError};

/// Who is logging in, to what, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginContext {
    pub user: String,
    /// The PAM service ("sshd", "sudo") or the RADIUS client ("radius:vpn").
    /// A code is valid only for the service it was sent for.
    pub service: String,
    pub rhost: Option<String>,
}

impl LoginContext {
    /// An event about this login, named as every event of it is.
    pub fn event(&self, event: &'static str) -> Event {
        Event {
            event,
            user: self.user.clone(),
            service: self.service.clone(),
            rhost: self.rhost.clone(),
            ..Event::default()
        }
    }
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
    /// A backup code was used up; `left` remain.
    BackupCode {
        left: u32,
    },
    /// The code sent to a newly entered number was right; the number is
    /// now registered.
    Enrolled,
}

impl Accept {
    /// What the user is told on success, if anything.
    pub fn user_message(&self) -> Option<String> {
        match self {
            Accept::CodeVerified | Accept::NoPhoneAllowed | Accept::ProviderDownAllowed => None,
            Accept::BackupCode { left } => Some(format!(
                "Backup code accepted; {left} left.{}",
                if *left <= 2 {
                    " Ask your administrator for new ones."
                } else {
                    ""
                }
            )),
            Accept::Enrolled => Some("Your mobile number is now registered for SMS codes.".into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reject {
    /// Every try of the code was wrong.
    WrongCode,
    /// The code expired and no new one could be sent.
    Expired,
    LockedOut,
    /// An SMS limit is reached, so no code was sent.
    RateLimited(Limit),
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

/// Which SMS limit stopped a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `limits.sms_per_user`: this user's own sends; the next one is
    /// allowed after `wait`.
    PerUser { wait: Duration },
    /// `limits.sms_global`: the sends of every user together.
    Global,
}

impl Limit {
    /// The config key, for logs (`limit=sms_per_user`).
    pub fn key(&self) -> &'static str {
        match self {
            Limit::PerUser { .. } => "sms_per_user",
            Limit::Global => "sms_global",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    ExemptUser,
    ExemptGroup,
    /// Marked opted out by an admin (`policy.user_opt_out`, not mandatory).
    OptedOut,
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
            Reject::RateLimited(_) => "rate_limited",
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
    /// What the user is told.
    ///
    /// A limit has its own text, so the user knows to wait rather than
    /// retry. It tells nothing about whether the account exists: a limit
    /// is only met by a name that has a number (a name without one ends
    /// at `no_phone` before any send), which the "Code sent to …" of its
    /// earlier logins had already shown; under PAM only a user whose
    /// password was right gets here, and under RADIUS with `primary =
    /// "pam"` likewise. The per-user count is kept by name, so an
    /// enrollment (`no_phone = "enroll"`) meets it the same for any name.
    /// The global limit is nobody's fault and says so.
    pub fn user_message(&self) -> String {
        match self {
            Reject::WrongCode => "Too many wrong codes.".into(),
            Reject::Expired => "The code has expired.".into(),
            Reject::LockedOut => {
                "A code cannot be used for this login now. Try again later.".into()
            }
            Reject::RateLimited(Limit::PerUser { wait }) => format!(
                "Too many codes were sent recently. Try again in about {}.",
                about(*wait)
            ),
            Reject::RateLimited(Limit::Global) => {
                "Codes cannot be sent right now: this system has sent its maximum for the moment. \
                 Try again in a few minutes."
                    .into()
            }
            Reject::NoPhone => {
                "No phone number is registered for this account. Contact your administrator.".into()
            }
            Reject::ProviderDown | Reject::SendRefused => {
                "The code could not be sent. Try again later.".into()
            }
            Reject::CountryNotAllowed => {
                "The code could not be sent to your number. Contact your administrator.".into()
            }
            Reject::UnknownChallenge => {
                "This login attempt is no longer valid. Start again.".into()
            }
            Reject::NoCodeEntered => "No code was entered.".into(),
        }
    }
}

impl Reject {
    /// Whether the user had a code (or a backup-code prompt) and failed
    /// it: wrong every time, expired, or no answer. A front end whose
    /// caller retries on the same handle (sudo's `passwd_tries`) refuses
    /// the retry rather than send another SMS.
    pub fn ends_code_round(&self) -> bool {
        match self {
            Reject::WrongCode | Reject::Expired | Reject::NoCodeEntered => true,
            Reject::LockedOut
            | Reject::RateLimited(_)
            | Reject::NoPhone
            | Reject::ProviderDown
            | Reject::SendRefused
            | Reject::CountryNotAllowed
            | Reject::UnknownChallenge => false,
        }
    }
}

/// A wait in whole minutes (at least one), or whole hours from two hours
/// on, rounded up: "1 minute", "17 minutes", "3 hours".
fn about(wait: Duration) -> String {
    let minutes = wait.as_secs().div_ceil(60).max(1);
    match minutes {
        1 => "1 minute".into(),
        m if m < 120 => format!("{m} minutes"),
        m => format!("{} hours", m.div_ceil(60)),
    }
}

/// A code is out: what the user should be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeInfo {
    pub id: ChallengeId,
    /// Empty when no number is known (backup code only, enrollment).
    pub phone_masked: String,
    pub expires_in: Duration,
    pub attempts_left: u32,
    /// What the next answer should be.
    pub step: Step,
}

/// The prompt for a backup code (no SMS was sent).
pub const BACKUP_PROMPT: &str = "Backup code: ";
/// The prompt for a number to enroll (shown as typed).
pub const ENROLL_PROMPT: &str = "Mobile number for SMS codes: ";

impl ChallengeInfo {
    /// What to tell the user when the challenge opens.
    pub fn intro(&self) -> String {
        match self.step {
            Step::Code => format!("Code sent to {}.", self.phone_masked),
            Step::EnrollCode => format!(
                "Code sent to {}. Enter it to register this number.",
                self.phone_masked
            ),
            Step::BackupOnly if self.phone_masked.is_empty() => {
                "No phone number is registered for this account. Enter one of your backup codes."
                    .into()
            }
            Step::BackupOnly => {
                "The code could not be sent. Enter one of your backup codes.".into()
            }
            Step::EnrollNumber => "No phone number is registered for this account.                  Enter your mobile number to register it for SMS codes."
                .into(),
        }
    }

    /// The prompt for the next answer.
    pub fn prompt(&self) -> &'static str {
        match self.step {
            Step::Code | Step::EnrollCode => CODE_PROMPT,
            Step::BackupOnly => BACKUP_PROMPT,
            Step::EnrollNumber => ENROLL_PROMPT,
        }
    }

    /// [`ChallengeInfo::prompt`], naming where the code went, for a front
    /// end that cannot show info messages (PAM_SILENT, as sudo asks): the
    /// user still learns which phone to look at.
    pub fn prompt_naming_phone(&self) -> String {
        match self.step {
            Step::Code | Step::EnrollCode if !self.phone_masked.is_empty() => {
                format!("SMS code (sent to {}): ", self.phone_masked)
            }
            _ => self.prompt().to_owned(),
        }
    }

    /// Is the answer shown as typed (a phone number, not a secret)?
    pub fn echo(&self) -> bool {
        self.step == Step::EnrollNumber
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Challenge(ChallengeInfo),
    Done(Verdict),
}

/// Why the user is asked again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    WrongCode {
        tries_left: u32,
    },
    Expired,
    Resent {
        phone_masked: String,
    },
    Cooldown {
        wait: Duration,
    },
    NoResendsLeft,
    ResendLimited,
    /// An empty answer where only a backup code will do.
    NeedBackupCode,
    /// An empty answer at the enrollment number prompt.
    NeedNumber,
    /// The number entered for enrollment is not a number (why, masked).
    BadNumber(String),
    /// The number entered for enrollment is in a country not allowed.
    CountryNotAllowed,
    /// A code went to the number entered for enrollment.
    EnrollCodeSent {
        phone_masked: String,
    },
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
            Retry::NeedBackupCode => "Enter one of your backup codes.".into(),
            Retry::NeedNumber => {
                "Enter your mobile number in international form, e.g. +12025550123.".into()
            }
            Retry::BadNumber(why) => format!("{why}."),
            Retry::CountryNotAllowed => {
                "Numbers of that country cannot receive codes here; enter another number.".into()
            }
            Retry::EnrollCodeSent { phone_masked } => {
                format!("Code sent to {phone_masked}. Enter it to register this number.")
            }
        }
    }

    /// Informational (not an error) messages.
    pub fn is_info(&self) -> bool {
        matches!(self, Retry::Resent { .. } | Retry::EnrollCodeSent { .. })
    }

    /// An empty answer that could not bring a new code.
    pub fn is_idle(&self) -> bool {
        matches!(
            self,
            Retry::Cooldown { .. }
                | Retry::NoResendsLeft
                | Retry::ResendLimited
                | Retry::NeedBackupCode
                | Retry::NeedNumber
        )
    }
}

/// How [`Engine::start_with`] names a new challenge.
#[derive(Debug, Clone, Copy)]
enum Ids {
    /// 128 random bits: the challenge id travels to the user (a RADIUS
    /// State, a PAM conversation).
    Random,
    /// [`OtpKey::login_id`]: found again by user and service alone.
    PerLogin,
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
    #[error(transparent)]
    Backup(#[from] BackupError),
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
    /// A server's sinks, kept between events and shared by its threads;
    /// when set, they replace the ones the fields above describe.
    pub server: Option<std::sync::Arc<crate::audit::ServerSinks>>,
}

fn system_clock() -> Box<dyn Clock> {
    Box::new(SystemClock)
}

/// The sinks the config asks for.
pub fn audit_from_config(cfg: &Config, log: &LogOptions) -> Audit {
    if let Some(server) = &log.server {
        return Audit {
            sinks: vec![Box::new(server.clone())],
        };
    }
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
        let store = crate::store::open(&cfg.store)?;
        Engine::open_with_store(cfg, log, store)
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

    /// [`Engine::open_with_store`] with directory sources and provider state
    /// (SMPP sessions) shared between engines, as a server's workers need
    /// (see [`directory::shared_from_config`]).
    pub fn open_shared(
        cfg: Config,
        log: &LogOptions,
        store: Box<dyn Store>,
        directories: &[std::sync::Arc<dyn Directory + Send + Sync>],
        providers: &sms::ProviderContext,
    ) -> Result<Engine, FlowError> {
        let mut engine = Engine::open_with_store(cfg, log, store)?;
        engine.providers = sms::from_config_with(&engine.cfg.providers, system_clock, providers);
        engine.directories = directories
            .iter()
            .map(|d| Box::new(d.clone()) as Box<dyn Directory>)
            .collect();
        Ok(engine)
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
        ctx.event(event)
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
            Verdict::Accept(Accept::BackupCode { left }) => {
                e.event = "accept";
                e.outcome = Some("success");
                e.reason = Some("backup_code");
                e.detail = Some(format!("backup codes left: {left}"));
                Level::Info
            }
            Verdict::Accept(Accept::Enrolled) => {
                e.event = "accept";
                e.outcome = Some("success");
                e.reason = Some("enrolled");
                e.detail = Some("code to the new number verified; number registered".into());
                Level::Info
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
            Verdict::Reject(r @ Reject::RateLimited(limit)) => {
                e.event = "reject";
                e.outcome = Some("failure");
                e.reason = Some(r.word());
                e.limit = Some(limit.key());
                let limits = &self.cfg.limits;
                e.detail = Some(match limit {
                    Limit::PerUser { wait } => format!(
                        "sms_per_user = {} reached; next SMS allowed in {}",
                        limits.sms_per_user,
                        humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)))
                    ),
                    Limit::Global => format!("sms_global = {} reached", limits.sms_global),
                });
                Level::Warning
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
                    Skip::OptedOut => "opted_out",
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

    /// The user's number and where it came from: the store (set by an
    /// admin or by enrollment) first, then the configured directories.
    pub fn find_phone(&self, user: &str) -> Result<Option<Found>, FlowError> {
        self.find_phone_given(user, self.store.phone(user)?)
    }

    /// [`Engine::find_phone`], given what the store holds for `user`.
    fn find_phone_given(
        &self,
        user: &str,
        stored: Option<crate::store::PhoneRecord>,
    ) -> Result<Option<Found>, FlowError> {
        if let Some(rec) = stored {
            // Stored numbers were validated when set; parse again (cached)
            // for the region, and never let a bad row fall through to
            // another source.
            let phone = Phone::parse_cached(&rec.e164, None, &StoreCache(&*self.store)).map_err(
                |error| DirectoryError::BadNumber {
                    source_name: "the smsotp store".into(),
                    user: user.to_owned(),
                    error,
                },
            )?;
            return Ok(Some(Found {
                phone,
                source: format!("store (set by {})", rec.set_by),
            }));
        }
        Ok(directory::lookup(
            &self.directories,
            user,
            self.cfg.phone.default_region,
            &StoreCache(&*self.store),
        )?)
    }

    /// The configured directories alone (for `user clear-phone`: does a
    /// number remain once the store's is gone?).
    pub fn find_phone_in_directories(&self, user: &str) -> Result<Option<Found>, FlowError> {
        Ok(directory::lookup(
            &self.directories,
            user,
            self.cfg.phone.default_region,
            &NoCache,
        )?)
    }

    /// Makes `count` new backup codes for `user` (replacing the old ones)
    /// and returns them, to be shown once.
    pub fn generate_backup_codes(
        &self,
        user: &str,
        count: usize,
    ) -> Result<Vec<Zeroizing<String>>, FlowError> {
        Ok(backup::generate(
            &*self.store,
            &self.key,
            &*self.rng,
            user,
            count,
            self.now(),
        )?)
    }

    /// Whether a backup code could log `user` in now.
    fn backup_usable(&self, user: &str) -> Result<bool, FlowError> {
        Ok(self.cfg.policy.backup_codes && self.store.backup_codes_left(user)? > 0)
    }

    /// Step one: decide whether the user needs a code, and send it.
    pub fn start(&self, ctx: &LoginContext) -> Result<Start, FlowError> {
        self.start_with(ctx, Ids::Random)
    }

    /// [`Engine::start`] for front ends that cannot carry the challenge id
    /// between rounds: the challenge gets the one id of this user and
    /// service ([`OtpKey::login_id`]), replacing any pending one, and
    /// [`Engine::pending`] finds it.
    pub fn start_one_per_login(&self, ctx: &LoginContext) -> Result<Start, FlowError> {
        self.start_with(ctx, Ids::PerLogin)
    }

    fn new_id(&self, ctx: &LoginContext, ids: Ids) -> Result<ChallengeId, FlowError> {
        Ok(match ids {
            Ids::Random => ChallengeId::random(&*self.rng)?,
            Ids::PerLogin => self.key.login_id(&ctx.user, &ctx.service),
        })
    }

    fn start_with(&self, ctx: &LoginContext, ids: Ids) -> Result<Start, FlowError> {
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
        if policy.opt_out_honoured() && self.store.opt_out(&ctx.user)?.is_some() {
            return Ok(Start::Done(self.finish(
                ctx,
                Verdict::NotApplicable(Skip::OptedOut),
                None,
            )));
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
        let (locked, stored_phone) = self.store.lockout_and_phone(&ctx.user, now)?;
        if locked.is_some() {
            return Ok(Start::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::LockedOut),
                None,
            )));
        }
        let Some(found) = self.find_phone_given(&ctx.user, stored_phone)? else {
            return match policy.no_phone {
                NoPhone::Allow => Ok(Start::Done(self.finish(
                    ctx,
                    Verdict::Accept(Accept::NoPhoneAllowed),
                    None,
                ))),
                NoPhone::Enroll => self.open_without_sms(ctx, ids, now, Step::EnrollNumber),
                NoPhone::Deny if self.backup_usable(&ctx.user)? => {
                    self.open_without_sms(ctx, ids, now, Step::BackupOnly)
                }
                NoPhone::Deny => Ok(Start::Done(self.finish(
                    ctx,
                    Verdict::Reject(Reject::NoPhone),
                    None,
                ))),
            };
        };
        let phone = found.phone;
        let masked = phone.masked();
        if self.audit.takes(Level::Debug) {
            let mut e = self.event(ctx, "phone_found");
            e.phone = Some(masked.clone());
            e.detail = Some(format!("from {}", found.source));
            self.log(Level::Debug, &e);
        }
        if !phone.allowed(&self.cfg.phone) {
            return Ok(Start::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::CountryNotAllowed),
                Some(&masked),
            )));
        }
        let id = self.new_id(ctx, ids)?;
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
            step: Step::Code,
            pending_phone: None,
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
            refused => {
                let r = self.limited(ctx, refused, now)?;
                return Ok(Start::Done(self.finish(
                    ctx,
                    Verdict::Reject(r),
                    Some(&masked),
                )));
            }
        }
        match self.deliver(ctx, &phone, code.as_str(), "sent") {
            None => Ok(Start::Challenge(self.info(&rec, now))),
            Some(Verdict::Reject(r @ (Reject::ProviderDown | Reject::SendRefused)))
                if self.backup_usable(&ctx.user)? =>
            {
                // What backup codes are for: the phone cannot be reached.
                self.store.set_step(&id, &rec.code_mac, Step::BackupOnly)?;
                let mut e = self.event(ctx, "backup_fallback");
                e.phone = Some(masked.clone());
                e.reason = Some(r.word());
                e.detail = Some("no SMS could be sent; asking for a backup code".into());
                self.log(Level::Warning, &e);
                let mut info = self.info(&rec, now);
                info.step = Step::BackupOnly;
                Ok(Start::Challenge(info))
            }
            Some(v) => {
                self.store.withdraw(&id, &rec.code_mac)?;
                Ok(Start::Done(self.finish(ctx, v, Some(&masked))))
            }
        }
    }

    /// The reason for a send a limit refused: which limit, and for the
    /// user's own, how long until the window lets the next SMS through.
    fn limited(
        &self,
        ctx: &LoginContext,
        permit: SendPermit,
        now: Millis,
    ) -> Result<Reject, FlowError> {
        if permit == SendPermit::GlobalLimit {
            return Ok(Reject::RateLimited(Limit::Global));
        }
        let window = self
            .store
            .sms_window(&ctx.user, now, self.cfg.limits.sms_per_user)?;
        // A window that has just freed up (a send raced this one out)
        // still reads as a short wait, never as none.
        let next = window.next_allowed_at.unwrap_or(now).max(now);
        Ok(Reject::RateLimited(Limit::PerUser {
            wait: Duration::from_millis((next - now) as u64),
        }))
    }

    /// A challenge that sends nothing yet: a backup code only, or the first
    /// step of enrollment.
    fn open_without_sms(
        &self,
        ctx: &LoginContext,
        ids: Ids,
        now: Millis,
        step: Step,
    ) -> Result<Start, FlowError> {
        let id = self.new_id(ctx, ids)?;
        // A MAC no code can have: random, and the step decides anyway.
        let mut code_mac = [0u8; 32];
        self.rng.fill(&mut code_mac)?;
        let rec = ChallengeRecord {
            id,
            user: ctx.user.clone(),
            service: ctx.service.clone(),
            code_mac,
            phone_masked: String::new(),
            created_at: now,
            sent_at: now,
            expires_at: now + ms(self.cfg.otp.ttl),
            attempts_left: self.cfg.otp.max_attempts.get(),
            resends_used: 0,
            step,
            pending_phone: None,
        };
        self.store.insert_challenge(&rec)?;
        let e = self.event(
            ctx,
            match step {
                Step::EnrollNumber => "enroll_start",
                _ => "backup_only",
            },
        );
        self.log(Level::Info, &e);
        Ok(Start::Challenge(self.info(&rec, now)))
    }

    /// Sends `code`; on failure returns (without logging it) the verdict
    /// the policy asks for.
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
                Some(if !outcome.is_outage() {
                    Verdict::Reject(Reject::SendRefused)
                } else {
                    match self.cfg.policy.provider_down {
                        ProviderDown::Allow => Verdict::Accept(Accept::ProviderDownAllowed),
                        ProviderDown::Deny => Verdict::Reject(Reject::ProviderDown),
                    }
                })
            }
        }
    }

    fn info(&self, rec: &ChallengeRecord, now: Millis) -> ChallengeInfo {
        ChallengeInfo {
            id: rec.id,
            phone_masked: rec.phone_masked.clone(),
            expires_in: Duration::from_millis(rec.expires_at.saturating_sub(now).max(0) as u64),
            attempts_left: rec.attempts_left,
            step: rec.step,
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
        // The usual answer, the right code in time, in one store step; any
        // other (and an enrollment code) is looked at closely below.
        if let Some(code) = otp::normalise(input, self.cfg.otp.alphabet) {
            let mac = self.key.mac(id, &ctx.user, &ctx.service, &code);
            if let Some(masked) = self
                .store
                .consume_code(id, &ctx.user, &ctx.service, &mac, now)?
            {
                let shown = (!masked.is_empty()).then_some(masked.as_str());
                return Ok(Answer::Done(self.finish(
                    ctx,
                    Verdict::Accept(Accept::CodeVerified),
                    shown,
                )));
            }
        }
        let (rec, locked) = self.store.challenge_and_lockout(id, &ctx.user, now)?;
        let Some(rec) = rec else {
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
        let shown = (!masked.is_empty()).then_some(masked.as_str());
        if locked.is_some() {
            self.store.withdraw(id, &rec.code_mac)?;
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::LockedOut),
                shown,
            )));
        }
        let offers_new = matches!(rec.step, Step::Code | Step::EnrollCode);
        if now >= rec.expires_at
            && (expired == Expired::Reject
                || !offers_new
                || (!input.trim().is_empty() && rec.resends_used >= self.cfg.otp.resend_max))
        {
            self.store.withdraw(id, &rec.code_mac)?;
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::Expired),
                shown,
            )));
        }
        if input.trim().is_empty() {
            return match rec.step {
                Step::Code | Step::EnrollCode => self.resend(ctx, rec, now),
                Step::BackupOnly => Ok(Answer::Retry(Retry::NeedBackupCode, self.info(&rec, now))),
                Step::EnrollNumber => Ok(Answer::Retry(Retry::NeedNumber, self.info(&rec, now))),
            };
        }
        if now >= rec.expires_at {
            return Ok(Answer::Retry(Retry::Expired, self.info(&rec, now)));
        }
        match rec.step {
            Step::Code | Step::EnrollCode => {}
            Step::BackupOnly => {
                if let Some(v) = self.try_backup(ctx, &rec, input)? {
                    return Ok(Answer::Done(v));
                }
                return self.wrong_answer(ctx, &rec, now);
            }
            Step::EnrollNumber => {
                if backup::parse(input).is_some() {
                    if let Some(v) = self.try_backup(ctx, &rec, input)? {
                        return Ok(Answer::Done(v));
                    }
                    return self.wrong_answer(ctx, &rec, now);
                }
                return self.enroll_number(ctx, &rec, input, now);
            }
        }
        let matches = otp::normalise(input, self.cfg.otp.alphabet).is_some_and(|code| {
            let mac = self.key.mac(id, &ctx.user, &ctx.service, &code);
            otp::macs_equal(&mac, &rec.code_mac)
        });
        if matches {
            // Deleting the row is what makes the code single-use: of two
            // concurrent right answers, exactly one deletes it.
            let (used, accept) = if rec.step == Step::EnrollCode {
                let by = format!("enroll:{}", ctx.service);
                (
                    self.store
                        .complete_enrollment(id, &rec.code_mac, &ctx.user, now, &by)?,
                    Accept::Enrolled,
                )
            } else {
                (
                    self.store.consume(id, &rec.code_mac, &ctx.user)?,
                    Accept::CodeVerified,
                )
            };
            if used {
                return Ok(Answer::Done(self.finish(
                    ctx,
                    Verdict::Accept(accept),
                    shown,
                )));
            }
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::UnknownChallenge),
                shown,
            )));
        }
        if let Some(v) = self.try_backup(ctx, &rec, input)? {
            return Ok(Answer::Done(v));
        }
        self.wrong_answer(ctx, &rec, now)
    }

    /// A backup code in place of the code, if `input` is one of the user's
    /// (it is used up, and the challenge with it).
    fn try_backup(
        &self,
        ctx: &LoginContext,
        rec: &ChallengeRecord,
        input: &str,
    ) -> Result<Option<Verdict>, FlowError> {
        if !self.cfg.policy.backup_codes || backup::parse(input).is_none() {
            return Ok(None);
        }
        match backup::redeem(&*self.store, &self.key, &ctx.user, input, Some(&rec.id))? {
            Redeemed::Accepted { left } => {
                let shown = (!rec.phone_masked.is_empty()).then_some(rec.phone_masked.as_str());
                Ok(Some(self.finish(
                    ctx,
                    Verdict::Accept(Accept::BackupCode { left }),
                    shown,
                )))
            }
            Redeemed::NoMatch => Ok(None),
        }
    }

    /// A wrong code: counts against the challenge and towards lockout.
    fn wrong_answer(
        &self,
        ctx: &LoginContext,
        rec: &ChallengeRecord,
        now: Millis,
    ) -> Result<Answer, FlowError> {
        let id = &rec.id;
        let masked = rec.phone_masked.clone();
        let shown = (!masked.is_empty()).then_some(masked.as_str());
        let left = self.store.wrong_attempt(id)?;
        let limits = &self.cfg.limits;
        let failures = self.store.record_failure(
            &ctx.user,
            now,
            limits.lockout_after.get(),
            limits.lockout,
        )?;
        let mut e = self.event(ctx, "wrong_code");
        e.phone = shown.map(str::to_owned);
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
                shown,
            )));
        }
        match left {
            Some(n) if n > 0 => {
                let mut info = self.info(rec, now);
                info.attempts_left = n;
                Ok(Answer::Retry(Retry::WrongCode { tries_left: n }, info))
            }
            _ => Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::WrongCode),
                shown,
            ))),
        }
    }

    /// Enrollment: the user typed a number. Check it, send a code to it.
    fn enroll_number(
        &self,
        ctx: &LoginContext,
        rec: &ChallengeRecord,
        input: &str,
        now: Millis,
    ) -> Result<Answer, FlowError> {
        let refused = |retry: Retry, last: Reject| -> Result<Answer, FlowError> {
            // Bad numbers use up the challenge's tries (not the lockout
            // count: they are no guess at a secret).
            let mut e = self.event(ctx, "enroll_bad_number");
            e.detail = Some(retry.user_message());
            self.log(Level::Info, &e);
            match self.store.wrong_attempt(&rec.id)? {
                Some(n) if n > 0 => {
                    let mut info = self.info(rec, now);
                    info.attempts_left = n;
                    Ok(Answer::Retry(retry, info))
                }
                _ => Ok(Answer::Done(self.finish(ctx, Verdict::Reject(last), None))),
            }
        };
        let phone = match Phone::parse(input, self.cfg.phone.default_region) {
            Ok(p) => p,
            Err(e) => return refused(Retry::BadNumber(e.to_string()), Reject::NoPhone),
        };
        if !phone.allowed(&self.cfg.phone) {
            return refused(Retry::CountryNotAllowed, Reject::CountryNotAllowed);
        }
        let masked = phone.masked();
        let give_up = |v: Reject| -> Result<Answer, FlowError> {
            self.store.delete_challenge(&rec.id)?;
            Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(v),
                Some(&masked),
            )))
        };
        // A number registered since the login began (by an admin) is not
        // for a login to replace: start again with it.
        if self.find_phone(&ctx.user)?.is_some() {
            return give_up(Reject::UnknownChallenge);
        }
        let limits = &self.cfg.limits;
        let permit =
            self.store
                .reserve_sms(&ctx.user, now, limits.sms_per_user, limits.sms_global)?;
        if permit != SendPermit::Granted {
            return give_up(self.limited(ctx, permit, now)?);
        }
        let code = otp::generate(&*self.rng, self.cfg.otp.length, self.cfg.otp.alphabet)?;
        let mac = self
            .key
            .mac(&rec.id, &ctx.user, &ctx.service, code.as_str());
        let expires_at = now + ms(self.cfg.otp.ttl);
        let attempts = self.cfg.otp.max_attempts.get();
        if !self
            .store
            .enroll_number(&rec.id, phone.e164(), &mac, now, expires_at, attempts)?
        {
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::UnknownChallenge),
                None,
            )));
        }
        if let Some(v) = self.deliver(ctx, &phone, code.as_str(), "enroll_code_sent") {
            self.store.delete_challenge(&rec.id)?;
            return Ok(Answer::Done(self.finish(ctx, v, Some(&masked))));
        }
        let updated = ChallengeRecord {
            phone_masked: masked.clone(),
            sent_at: now,
            expires_at,
            attempts_left: attempts,
            step: Step::EnrollCode,
            pending_phone: Some(phone.e164().to_owned()),
            ..rec.clone()
        };
        Ok(Answer::Retry(
            Retry::EnrollCodeSent {
                phone_masked: masked,
            },
            self.info(&updated, now),
        ))
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
        let permit =
            self.store
                .reserve_sms(&ctx.user, now, limits.sms_per_user, limits.sms_global)?;
        if permit != SendPermit::Granted {
            if expired {
                let r = self.limited(ctx, permit, now)?;
                return give_up(self, r);
            }
            return Ok(Answer::Retry(Retry::ResendLimited, self.info(&rec, now)));
        }
        // Enrollment resends to the number being enrolled; otherwise look
        // the number up again: it may have changed since.
        let phone = match (&rec.step, &rec.pending_phone) {
            (Step::EnrollCode, Some(e164)) => {
                Phone::parse_cached(e164, None, &StoreCache(&*self.store)).ok()
            }
            _ => self.find_phone(&ctx.user)?.map(|f| f.phone),
        };
        let Some(phone) = phone else {
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
        if let Some(v) = self.deliver(ctx, &phone, code.as_str(), "resent") {
            self.store.delete_challenge(&rec.id)?;
            return Ok(Answer::Done(self.finish(ctx, v, Some(&phone.masked()))));
        }
        let updated = ChallengeRecord {
            phone_masked: phone.masked(),
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

    /// The unexpired challenge [`Engine::start_one_per_login`] opened for
    /// this user and service, if any.
    pub fn pending(&self, ctx: &LoginContext) -> Result<Option<ChallengeInfo>, FlowError> {
        let now = self.now();
        let id = self.key.login_id(&ctx.user, &ctx.service);
        Ok(self
            .store
            .challenge(&id)?
            .filter(|rec| {
                rec.user == ctx.user && rec.service == ctx.service && now < rec.expires_at
            })
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
    /// Whether [`Conversation::info`] reaches the user. When not (PAM_SILENT),
    /// the code prompt itself names the phone the code went to.
    fn shows_info(&self) -> bool {
        true
    }
    /// An echo-off prompt; the answer is zeroized when dropped.
    fn ask_secret(&mut self, prompt: &str) -> Result<Zeroizing<String>, String>;
    /// An echo-on prompt (a phone number to enroll).
    fn ask_text(&mut self, prompt: &str) -> Result<Zeroizing<String>, String>;
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
    let mut current = match engine.start(ctx)? {
        Start::Done(v) => {
            tell_verdict(conv, &v);
            return Ok(v);
        }
        Start::Challenge(c) => c,
    };
    let id = current.id;
    conv.info(&current.intro())
        .map_err(|e| conversation_failed(engine, ctx, &id, e))?;
    let otp = &engine.cfg.otp;
    // Enrollment adds a number prompt (with its own tries) before the code.
    let max_prompts =
        (otp.max_attempts.get() + 2) * (otp.resend_max + 1) + otp.max_attempts.get() + 7;
    let mut idle = 0;
    for _ in 0..max_prompts {
        let prompt = if conv.shows_info() {
            current.prompt().to_owned()
        } else {
            current.prompt_naming_phone()
        };
        let input = if current.echo() {
            conv.ask_text(&prompt)
        } else {
            conv.ask_secret(&prompt)
        }
        .map_err(|e| conversation_failed(engine, ctx, &id, e))?;
        match engine.answer(ctx, &id, &input)? {
            Answer::Done(v) => {
                tell_verdict(conv, &v);
                return Ok(v);
            }
            Answer::Retry(r, info) => {
                // A client that only sends empty answers (or hit end of
                // input) is not kept waiting for ever.
                idle = if r.is_idle() { idle + 1 } else { 0 };
                if idle > MAX_IDLE_ANSWERS {
                    engine.abandon(ctx, &id, "only empty answers");
                    let shown =
                        (!info.phone_masked.is_empty()).then_some(info.phone_masked.as_str());
                    let v = engine.finish(ctx, Verdict::Reject(Reject::NoCodeEntered), shown);
                    tell_verdict(conv, &v);
                    return Ok(v);
                }
                let msg = r.user_message();
                let sent = if r.is_info() {
                    conv.info(&msg)
                } else {
                    conv.error(&msg)
                };
                sent.map_err(|e| conversation_failed(engine, ctx, &id, e))?;
                current = info;
            }
        }
    }
    engine.abandon(ctx, &id, "too many prompts");
    let shown = (!current.phone_masked.is_empty()).then_some(current.phone_masked.as_str());
    let v = engine.finish(ctx, Verdict::Reject(Reject::WrongCode), shown);
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
    match v {
        Verdict::Reject(r) => {
            let _ = conv.error(&r.user_message());
        }
        Verdict::Accept(a) => {
            if let Some(m) = a.user_message() {
                let _ = conv.info(&m);
            }
        }
        Verdict::NotApplicable(_) => {}
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
