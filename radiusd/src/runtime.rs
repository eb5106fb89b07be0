//! One generation of configuration, [`Runtime`]: the config, the RADIUS
//! clients with their secrets, the first factor, the shared store, phone
//! sources and SMS provider state. The server loads one at start and a new
//! one at each reload, and swaps it in whole (see `server::run`); the
//! phone lists of each are checked on a thread of their own.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use smsotp_core::audit::{AuditSink, Event, Level, ServerSinks};
use smsotp_core::config::{Config, PrimaryAuth as PrimarySpec, RadiusClient, RadiusSettings};
use smsotp_core::directory::{self, Directory};
use smsotp_core::files;
use smsotp_core::flow::LogOptions;
use smsotp_core::secret::SecretBytes;
use smsotp_core::sms::ProviderSpec;
use smsotp_core::store::{SharedBackend, SharedGuard};

use crate::outgoing;
use crate::primary::{LdapPrimary, NoPrimary, PamPrimary, PrimaryAuth};
use crate::server::{event, IDENT};

/// A NAS with its secret.
pub struct Client {
    pub spec: RadiusClient,
    pub secret: SecretBytes,
}

/// One generation of configuration: what a reload replaces as a whole.
pub struct Runtime {
    /// Delivery receipts: present when an SMPP provider asks for them
    /// (`registered_delivery` not 0; see `receipts.rs`), or an HTTP
    /// provider has a `status_callback` and `receipts.listen` is set.
    pub receipts: Option<crate::receipts::Receipts>,
    pub config: Config,
    pub radius: RadiusSettings,
    pub clients: Vec<Client>,
    pub primary: Box<dyn PrimaryAuth>,
    /// One store for all workers of this generation (SQLite: one
    /// connection, with group commit): replies wait until what they rely
    /// on is durable.
    pub store: Box<dyn SharedBackend>,
    /// The store's background work (SQLite: its commit thread); ends,
    /// after a last commit, with the generation. Declared after `store`,
    /// so it is dropped after it.
    _store_guard: SharedGuard,
    /// Phone sources shared by all workers (one parsed phone list).
    pub directories: Vec<Arc<dyn Directory + Send + Sync>>,
    /// Providers' shared state, kept and reused across sends by every
    /// thread of this generation: one pool of bound SMPP sessions, and one
    /// HTTP agent (its keep-alive connections) per HTTP provider.
    pub sms: smsotp_core::sms::ProviderContext,
    /// Whether a request that may send an SMS can wait on something
    /// beyond this host while it is decided: a provider other than an
    /// outbox (a gateway, a program), or a password check (PAM: a failure
    /// delay, a directory server; LDAP: the binds and the search). Such requests go to the send
    /// lane (see `server.rs`); with only an outbox and no password check
    /// there is nothing to wait for, and the worker decides them itself,
    /// sparing the hand-off.
    pub first_rounds_wait: bool,
    /// Whether a phone lookup can wait on something beyond this host: an
    /// LDAP directory, or the passwd database behind `gecos` (NSS may ask
    /// a directory server). A worker with fibers (`fibers.rs`) hands such
    /// first rounds to the send lane too: a fiber that blocks holds up
    /// every request of its worker.
    pub lookups_wait: bool,
    pub generation: u64,
    pub debug: bool,
    /// Where this generation logs: kept open, stderr and audit-file lines
    /// written in one go before the replies they are about.
    pub sinks: Arc<ServerSinks>,
}

impl Runtime {
    /// Loads and checks the config and every client secret. Returns the
    /// runtime and warnings worth printing.
    pub fn load(
        path: &Path,
        generation: u64,
        debug: bool,
    ) -> Result<(Runtime, Vec<String>), String> {
        let config = Config::load(path).map_err(|e| match e {
            // The loader's own advice is the PAM module's `config=PATH`.
            smsotp_core::config::ConfigError::Read { path, source } => format!(
                "{}: cannot read: {source}; create it, or point to another file with --config PATH",
                path.display()
            ),
            e => e.to_string(),
        })?;
        let Some(radius) = config.radius.clone() else {
            return Err(format!(
                "{}: no [radius] table; add one with at least one [[radius.client]] (see man 5 smsotp.toml, section [radius])",
                path.display()
            ));
        };
        if radius.clients.is_empty() {
            return Err(format!(
                "{}: no [[radius.client]]; add one for each NAS (name, address, secret_file)",
                path.display()
            ));
        }
        let mut warnings: Vec<String> = config.warnings.iter().map(|w| w.to_string()).collect();
        let mut clients = Vec::new();
        for spec in &radius.clients {
            let secret = files::read_secret(&spec.secret_file)
                .map_err(|e| format!("radius client \"{}\": secret_file {e}", spec.name))?;
            if secret.expose().is_empty() {
                return Err(format!(
                    "radius client \"{}\": secret_file {} is empty; put the shared secret in it",
                    spec.name,
                    spec.secret_file.display()
                ));
            }
            warnings.extend(smsotp_core::config::short_secret_warning(
                &spec.name,
                secret.expose().len(),
            ));
            if !spec.require_message_authenticator {
                warnings.push(format!(
                    "radius client \"{}\": Message-Authenticator is not required (limit_proxy_state on); \
                     configure the NAS to send it and remove require_message_authenticator = false",
                    spec.name
                ));
            }
            clients.push(Client {
                spec: spec.clone(),
                secret: SecretBytes::new(secret.expose().as_bytes().to_vec()),
            });
        }
        let primary: Box<dyn PrimaryAuth> = match &radius.primary {
            PrimarySpec::None => Box::new(NoPrimary),
            PrimarySpec::Pam { service } => Box::new(PamPrimary {
                service: service.clone(),
            }),
            PrimarySpec::Ldap(spec) => Box::new(
                LdapPrimary::new((**spec).clone())
                    .map_err(|e| format!("radius primary (kind = \"ldap\"): {e}"))?,
            ),
        };
        let directories = directory::shared_from_config(&config.directories);
        let config_syslog = config.audit.syslog;
        // Log lines also go to stderr, unless stderr is the journal that
        // syslog already feeds: one line per decision, not two.
        let stderr = stderr_wanted(config_syslog, std::env::var_os("JOURNAL_STREAM").is_some());
        let sinks = Arc::new(ServerSinks::new(
            IDENT,
            debug,
            config_syslog.then(|| PathBuf::from("/dev/log")),
            stderr,
            config.audit.file.clone(),
        ));
        let lookups_wait = config
            .directories
            .iter()
            .any(|d| !matches!(d, smsotp_core::config::DirectorySpec::File { .. }));
        // Any password check may wait (PAM and LDAP alike).
        let first_rounds_wait = !matches!(radius.primary, PrimarySpec::None)
            || config
                .providers
                .iter()
                .any(|p| !matches!(p, ProviderSpec::Outbox { .. }));
        let asks_receipts = config.providers.iter().any(|p| match p {
            ProviderSpec::Smpp(s) => s.registered_delivery != 0,
            ProviderSpec::Http(h) => {
                h.status_callback.is_some() && config.receipts.listen.is_some()
            }
            _ => false,
        });
        let receipts = asks_receipts
            .then(|| crate::receipts::Receipts::new(config.receipts.clone(), sinks.clone()));
        let sms = smsotp_core::sms::ProviderContext {
            smpp_sessions: Some(match &receipts {
                Some(r) => smsotp_core::sms::smpp::SmppSessions::with_receipts(r.registry.hook()),
                None => smsotp_core::sms::smpp::SmppSessions::new(),
            }),
            // As many idle connections as sends may be in flight.
            http_agents: Some(smsotp_core::sms::http::HttpAgents::new(
                radius.max_pending_sends,
            )),
        };
        let (store, store_guard) =
            smsotp_core::store::open_shared(&config.store).map_err(|e| e.to_string())?;
        // A host whose code key differs from the one a shared store was
        // first used with would fail every code: refuse to start (or
        // reload) instead, with the message that says how to fix it.
        let key = smsotp_core::otp::OtpKey::load_or_create(
            &config.otp.key_file,
            &smsotp_core::random::OsRandom,
        )
        .map_err(|e| e.to_string())?;
        // A shared store that does not answer yet (Redis down at boot) is
        // no reason to stay down: the server starts, rejects logins with
        // the reason logged, and each connection it opens later checks
        // the key as it opens. Exiting instead would have the service
        // manager give up after a few quick restarts.
        match store
            .handle()
            .check_key_fingerprint(&smsotp_core::store::KeyFingerprint::of(
                &key,
                &config.otp.key_file,
            )) {
            Ok(()) => {}
            Err(e @ smsotp_core::store::StoreError::Unavailable { .. })
                if config.store.local_file().is_none() =>
            {
                warnings.push(format!(
                    "{e}; starting anyway: logins are rejected until the store answers"
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
        // Replies queued by a batch's deferred work leave together.
        store.after_each_batch(Box::new(outgoing::flush));
        Ok((
            Runtime {
                receipts,
                config,
                radius,
                clients,
                primary,
                store,
                _store_guard: store_guard,
                directories,
                sms,
                first_rounds_wait,
                lookups_wait,
                generation,
                debug,
                sinks,
            },
            warnings,
        ))
    }

    pub(crate) fn client_for(&self, ip: IpAddr) -> Option<&Client> {
        let spec = self.radius.client_for(ip)?;
        self.clients.iter().find(|c| c.spec.name == spec.name)
    }

    pub(crate) fn log_options(&self) -> LogOptions {
        LogOptions {
            ident: IDENT.into(),
            debug: self.debug,
            // The server's sinks replace the per-event ones, stderr
            // included (see `stderr_wanted`).
            stderr: false,
            server: Some(self.sinks.clone()),
        }
    }

    /// Logs a server-level event (not about a login decision) to the same
    /// places the engine logs to.
    pub fn log(&self, level: Level, event: &Event) {
        let now = smsotp_core::clock::Clock::now_ms(&smsotp_core::clock::SystemClock);
        self.sinks.record(level, now, event);
        self.sinks.flush();
    }
}

/// Whether log lines go to stderr too. Under systemd stderr is the
/// journal (it sets `JOURNAL_STREAM`), which also receives syslog: with
/// syslog on, stderr would log every decision twice there.
pub fn stderr_wanted(syslog: bool, stderr_is_journal: bool) -> bool {
    !(syslog && stderr_is_journal)
}

/// How many bad phone-list entries are logged one by one.
const BAD_NUMBERS_LOGGED: usize = 20;

/// Validates every number in the phone lists, on a thread of its own: bad
/// entries are in the log at start (and after each reload) rather than
/// found by the users they belong to, and logins find their numbers
/// already validated (parsing one costs more than the rest of a login).
pub(crate) fn check_phone_lists(rt: Arc<Runtime>) {
    let for_errors = rt.clone();
    let spawned = std::thread::Builder::new()
        .name("phone-check".into())
        .spawn(move || {
            let store = &*rt.store;
            let mut n = 0u32;
            let checked = directory::check_numbers(
                rt.directories.iter().map(|d| &**d as &dyn Directory),
                &rt.config.phone,
                store.number_cache(),
                || {
                    // Let what this thread cached be committed now and
                    // then, like a request's writes.
                    n += 1;
                    if n % 256 == 0 {
                        store.flush();
                    }
                },
            );
            store.flush();
            // The check's working memory (every entry, the parser's tables
            // built on first use) is freed now; hand it back to the system
            // rather than keep it in the heap.
            // SAFETY: malloc_trim only releases free memory of the allocator.
            unsafe {
                libc::malloc_trim(0);
            }
            for e in checked.bad.iter().take(BAD_NUMBERS_LOGGED) {
                rt.log(Level::Warning, &event("phone_list", e.to_string()));
            }
            let bad = checked.bad.len();
            if checked.valid + bad > 0 {
                let level = if bad > 0 { Level::Warning } else { Level::Info };
                let more = if bad > BAD_NUMBERS_LOGGED {
                    format!(" ({} not shown)", bad - BAD_NUMBERS_LOGGED)
                } else {
                    String::new()
                };
                rt.log(
                    level,
                    &event(
                        "phone_list",
                        format!(
                            "phone lists checked: {} valid, {bad} not{more}",
                            smsotp_core::counted(checked.valid, "number", "numbers")
                        ),
                    ),
                );
            }
        });
    if let Err(e) = spawned {
        // Only a head start is lost: logins validate numbers as they come.
        for_errors.log(
            Level::Warning,
            &event(
                "phone_list",
                format!(
                    "cannot start the phone-list check: {e}; numbers are checked as users log in"
                ),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_reach_the_journal_once() {
        // systemd, syslog on: the journal gets syslog's line only.
        assert!(!stderr_wanted(true, true));
        // systemd, syslog off: stderr is the only log.
        assert!(stderr_wanted(false, true));
        // A terminal or a file: stderr as well as syslog.
        assert!(stderr_wanted(true, false));
        assert!(stderr_wanted(false, false));
    }
}
