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

mod at_once;
use at_once::Lookup;
mod conversation;
mod counting;
mod enroll;
mod events;
mod language;
mod machine;
mod outcome;
mod receipt;
mod sms_limits;
pub mod texts;

use std::path::Path;

use zeroize::Zeroizing;

use crate::audit::{Audit, AuditSink, Event, FileSink, Level, StderrSink, SyslogSink};
use crate::backup::{self, BackupError};
use crate::clock::{Clock, Millis, SystemClock};
use crate::config::Config;
use crate::directory::{
    self, Accounts, AccountsError, Directory, DirectoryError, Found, SystemAccounts,
};
use crate::otp::{KeyError, OtpKey};
use crate::phone::{NoCache, Phone};
use crate::random::{OsRandom, RandomError, RandomSource};
use crate::sms::{self, SmsProvider};
pub use crate::store::Step;
use crate::store::{KeyFingerprint, Store, StoreError};

pub use conversation::{run, Conversation, ConversationError};
pub use counting::{CountBatch, SendObserver};
pub use outcome::{
    Accept, Answer, ChallengeInfo, Expired, Limit, Reason, Reject, Retry, Skip, Start, Verdict,
};
pub use receipt::{ReceiptResend, ReceiptSink, SentCode};
pub use texts::{BACKUP_PROMPT, CODE_PROMPT, ENROLL_PROMPT, UNAVAILABLE};

/// Who is logging in, to what, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginContext {
    /// The login name as the front end got it (PAM_USER, RADIUS
    /// User-Name); every record of the login is keyed by it.
    pub user: String,
    /// The PAM service ("sshd", "sudo") or the RADIUS client ("radius:vpn").
    /// A code is valid only for the service it was sent for.
    pub service: String,
    /// Where the login comes from (PAM_RHOST, the NAS's
    /// Calling-Station-Id), for logs only; `None` when not known.
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

/// Something went wrong that is not the user's doing. Front ends fail closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A phone source failed (unreadable list, a bad number in it): the
    /// lookup fails closed rather than fall through to another number.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// The groups of the user could not be read (for
    /// `policy.exempt_groups`).
    #[error("cannot read the groups of {user}: {source}")]
    Accounts {
        /// Whose groups.
        user: String,
        /// What NSS answered.
        source: AccountsError,
    },
    /// No randomness for a code or a challenge id.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// The code key could not be read or made.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The conversation with the user broke; the challenge was abandoned.
    #[error("the conversation with the user failed: {0}")]
    Conversation(ConversationError),
    /// Backup codes could not be checked (a damaged hash, the store).
    #[error(transparent)]
    Backup(#[from] BackupError),
}

/// What kind of failure a [`FlowError`] is, for a front end's one match.
/// [`FlowError`] is `#[non_exhaustive]`, so another crate cannot match it
/// without a wildcard; this is not, so a new kind is a compile error in
/// every front end rather than a silent default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The store, a directory or the account database could not be read:
    /// the service is unavailable for now.
    Unavailable,
    /// The conversation with the user broke (the user went away).
    Conversation,
    /// Randomness, the key or backup-code checking failed: something on
    /// this host is broken.
    Internal,
}

impl FlowError {
    /// The kind of failure, which decides what a front end answers.
    pub fn failure(&self) -> Failure {
        match self {
            FlowError::Store(_) | FlowError::Directory(_) | FlowError::Accounts { .. } => {
                Failure::Unavailable
            }
            FlowError::Conversation(_) => Failure::Conversation,
            FlowError::Random(_) | FlowError::Key(_) | FlowError::Backup(_) => Failure::Internal,
        }
    }
}

/// Everything a login needs, built once per PAM call or per server.
pub struct Engine {
    /// The configuration it was opened with; a reload opens a new engine.
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
    /// Where sent codes go to wait for their delivery receipt
    /// (smsotp-radiusd); `None` in the PAM module.
    receipts: Option<std::sync::Arc<dyn ReceiptSink>>,
    /// Told how long each send took (smsotp-radiusd's metrics); `None`
    /// in the PAM module.
    sends: Option<std::sync::Arc<dyn SendObserver>>,
    /// Where counts go when not straight to the store (smsotp-radiusd).
    count_batch: Option<std::sync::Arc<CountBatch>>,
    /// The texts in every language this host has.
    messages: crate::messages::Messages,
    /// The session's LANG / LC_MESSAGES (PAM, `messages.follow_locale`).
    session_locale: Option<String>,
    /// The language the directories gave with the last number they found
    /// (user, language), so the SMS of that login need not ask again.
    directory_language: std::sync::Mutex<Option<(String, Option<String>)>>,
    /// The user's stored language as last read (user, language, when),
    /// so the texts and the SMS of one login cost one read.
    stored_language: std::sync::Mutex<Option<(String, Option<String>, Millis)>>,
}

/// The parts of an [`Engine`], for tests and for front ends that build their
/// own (the RADIUS server shares one store).
pub struct Parts {
    /// Pending challenges, send windows, lockouts, registered numbers.
    pub store: Box<dyn Store>,
    /// Where numbers come from, asked in this order.
    pub directories: Vec<Box<dyn Directory>>,
    /// The SMS providers, tried in this order (failover).
    pub providers: Vec<Box<dyn SmsProvider>>,
    /// Groups (exempt_groups) and GECOS of system accounts.
    pub accounts: Box<dyn Accounts>,
    /// Time, in milliseconds since the epoch.
    pub clock: Box<dyn Clock>,
    /// Codes and challenge ids come from here (the OS CSPRNG outside
    /// tests).
    pub rng: Box<dyn RandomSource>,
    /// Where decisions are logged.
    pub audit: Audit,
    /// The host's secret key: codes are stored only as MACs under it.
    pub key: OtpKey,
    /// This host's name, for the `{host}` of the message template.
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
        // The key first: a shared store checks it in the round trip that
        // opens its connection. A store that cannot be opened is still
        // the error reported first, as it always was.
        let key = OtpKey::load_or_create(&cfg.otp.key_file, &OsRandom);
        let store = match &key {
            Ok(k) => {
                crate::store::open_keyed(&cfg.store, &KeyFingerprint::of(k, &cfg.otp.key_file))?
            }
            Err(_) => crate::store::open(&cfg.store)?,
        };
        Engine::with_key(cfg, log, store, key?)
    }

    /// [`Engine::open`] for one login (the PAM module): the store is
    /// opened with [`crate::store::open_on_first_use`], so a server store
    /// (Redis) is first reached when the login needs state. Exemption is
    /// decided before that: an exempt user gets in while the store is
    /// down, and a store that is down costs a login no more than its
    /// configured timeouts.
    pub fn open_for_login(cfg: Config, log: &LogOptions) -> Result<Engine, FlowError> {
        let key = OtpKey::load_or_create(&cfg.otp.key_file, &OsRandom)?;
        // Bound to the key without connecting: the first connection a
        // login needs checks it as it opens.
        let store = crate::store::open_on_first_use(
            &cfg.store,
            &KeyFingerprint::of(&key, &cfg.otp.key_file),
        )?;
        Engine::build(cfg, log, store, key)
    }

    /// [`Engine::open`] with a store the caller opened (a server shares one
    /// between its threads). The store is bound to the code key
    /// ([`Store::check_key_fingerprint`]) before anything else.
    pub fn open_with_store(
        cfg: Config,
        log: &LogOptions,
        store: Box<dyn Store>,
    ) -> Result<Engine, FlowError> {
        let key = OtpKey::load_or_create(&cfg.otp.key_file, &OsRandom)?;
        Engine::with_key(cfg, log, store, key)
    }

    fn with_key(
        cfg: Config,
        log: &LogOptions,
        store: Box<dyn Store>,
        key: OtpKey,
    ) -> Result<Engine, FlowError> {
        store.check_key_fingerprint(&KeyFingerprint::of(&key, &cfg.otp.key_file))?;
        Engine::build(cfg, log, store, key)
    }

    /// The engine on a store already bound to `key`.
    fn build(
        cfg: Config,
        log: &LogOptions,
        store: Box<dyn Store>,
        key: OtpKey,
    ) -> Result<Engine, FlowError> {
        let messages = crate::messages::Messages::load(
            &cfg.messages,
            cfg.otp.message_set.then_some(&cfg.otp.message),
        );
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
        let mut engine = Engine::with_parts(cfg, parts);
        engine.set_messages(messages);
        Ok(engine)
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

    /// An engine from parts the caller built (tests, a server that shares
    /// one store between its threads).
    pub fn with_parts(cfg: Config, p: Parts) -> Engine {
        let messages = crate::messages::Messages::shipped(
            &cfg.messages,
            cfg.otp.message_set.then_some(&cfg.otp.message),
        );
        Engine {
            messages,
            session_locale: None,
            directory_language: std::sync::Mutex::new(None),
            stored_language: std::sync::Mutex::new(None),
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
            receipts: None,
            sends: None,
            count_batch: None,
        }
    }

    /// The store logins use (the admin tool reads and edits through it).
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// The engine's clock, in milliseconds since the epoch.
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

    /// The user's number and where it came from: the store (set by an
    /// admin or by enrollment) first, then the configured directories.
    pub fn find_phone(&self, user: &str) -> Result<Option<Found>, FlowError> {
        self.find_phone_given(user, self.store.phone(user)?, None)
    }

    /// [`Engine::find_phone`], given what the store holds for `user`, and
    /// what the directories said if they were asked already.
    fn find_phone_given(
        &self,
        user: &str,
        stored: Option<crate::store::PhoneRecord>,
        looked: Option<Lookup>,
    ) -> Result<Option<Found>, FlowError> {
        if let Some(rec) = stored {
            // Stored numbers were validated when set; parse again (cached)
            // for the region, and never let a bad row fall through to
            // another source.
            let phone = Phone::parse_cached(&rec.e164, None, self.store.number_cache()).map_err(
                |error| DirectoryError::BadNumber {
                    source_name: "the smsotp store".into(),
                    user: user.to_owned(),
                    error,
                },
            )?;
            return Ok(Some(Found {
                phone,
                source: format!("store (set by {})", rec.set_by),
                language: None,
            }));
        }
        let looked = looked.unwrap_or_else(|| self.look_up(user));
        self.settle_lookup(user, looked)
    }

    /// Asks the configured directories for `user`'s number, in order.
    fn look_up(&self, user: &str) -> Lookup {
        let mut skipped = Vec::new();
        let found = directory::lookup_noting(
            &self.directories,
            user,
            self.cfg.phone.default_region,
            self.store.number_cache(),
            &mut skipped,
        );
        Lookup { found, skipped }
    }

    /// Takes what the directories said as the login's answer: notes the
    /// language they gave and logs those that were skipped.
    fn settle_lookup(&self, user: &str, looked: Lookup) -> Result<Option<Found>, FlowError> {
        let Lookup { found, skipped } = looked;
        if let (Ok(f), Ok(mut memo)) = (&found, self.directory_language.lock()) {
            *memo = Some((user.to_owned(), f.as_ref().and_then(|f| f.language.clone())));
        }
        for e in skipped {
            // on_unavailable = "next": the login went on without it.
            self.log(
                Level::Warning,
                &Event {
                    event: "directory_skipped",
                    user: user.to_owned(),
                    detail: Some(e.to_string()),
                    ..Event::default()
                },
            );
        }
        Ok(found?)
    }

    /// Enrollment confirmed `e164` by its code: each directory configured
    /// to (`write_back = true`) writes it to the user's entry. A failed
    /// write does not fail the login: the number is in the store already
    /// and is used from there; the failure is recorded as a warning.
    fn write_back(&self, ctx: &LoginContext, e164: &str) {
        for d in &self.directories {
            match d.write_back(&ctx.user, e164) {
                Ok(false) => {}
                Ok(true) => {
                    let mut e = self.event(ctx, "directory_write_back");
                    e.detail = Some(d.name());
                    self.log(Level::Info, &e);
                }
                Err(err) => {
                    let mut e = self.event(ctx, "directory_write_back_failed");
                    e.detail = Some(err.to_string());
                    self.log(Level::Warning, &e);
                }
            }
        }
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
}

/// The host name for messages ("… your login code for web1").
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "this host".into())
}

/// Loads the config at `path` and opens the engine for one login
/// ([`Engine::open_for_login`]: a server store is reached on first use).
///
/// When the config is valid but the engine cannot be opened (the key, or
/// a store that is unreachable, damaged or not SQLite), the failure is
/// recorded as an `unavailable` error event for `ctx` in the config's
/// audit sinks (syslog, the audit file) before it is returned, so the
/// caller must not log it again; a config error is the caller's to log.
pub fn open_from_path(
    path: &Path,
    log: &LogOptions,
    ctx: &LoginContext,
) -> Result<Engine, OpenError> {
    let cfg = Config::load(path)?;
    let audit = audit_from_config(&cfg, log);
    Engine::open_for_login(cfg, log).map_err(|e| {
        let event = Event {
            event: "unavailable",
            user: ctx.user.clone(),
            service: ctx.service.clone(),
            rhost: ctx.rhost.clone(),
            outcome: Some("failure"),
            detail: Some(e.to_string()),
            ..Event::default()
        };
        audit.record(Level::Error, SystemClock.now_ms(), &event);
        OpenError::Flow(e)
    })
}

/// Why an engine could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The config file is missing or invalid (its error names the line).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The config is valid but a part could not be opened (the key, the
    /// store).
    #[error(transparent)]
    Flow(#[from] FlowError),
}

#[cfg(test)]
mod at_once_tests;
#[cfg(test)]
mod tests;
