//! Sending the SMS: the `SmsProvider` trait, the failover chain, and one
//! module per provider kind: [`outbox`], [`command`], [`http`] (with the
//! vendor presets) and [`smpp`].
//!
//! Errors say what the chain should do: `Transient` fails over to the next
//! provider (once per code, with the same code, so a user never receives two
//! different codes), `Rejected` and `Misconfigured` stop.

pub mod command;
pub mod gsm;
pub mod http;
pub mod outbox;
mod raw;
pub mod smpp;
pub mod tls;

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use crate::clock::Clock;
use crate::config::check::{Checker, ConfigError, ConfigWarning};
use crate::phone::Phone;
use command::CommandProvider;
use http::{HttpAgents, HttpProvider, HttpSpec};
use outbox::OutboxProvider;
use raw::Fields;
pub(crate) use raw::RawProvider;
use smpp::{SessionMode, SmppProvider, SmppSessions, SmppSpec};

/// One message to send. The text contains the code: never log it.
pub struct Sms<'a> {
    pub to: &'a Phone,
    pub text: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Worth trying elsewhere: connection failure, timeout, overload.
    #[error("temporary failure: {0}")]
    Transient(String),
    /// The gateway refused this message (bad number, blocked destination).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The provider cannot work as configured (credentials, program missing).
    #[error("misconfigured: {0}")]
    Misconfigured(String),
}

pub trait SmsProvider {
    fn name(&self) -> &str;
    fn send(&self, sms: &Sms<'_>) -> Result<(), SendError>;
}

/// One validated `[[provider]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderSpec {
    Outbox {
        name: String,
        path: PathBuf,
    },
    Command {
        name: String,
        program: PathBuf,
        args: Vec<String>,
        timeout: Duration,
    },
    /// `kind = "http"` or a vendor preset (`twilio`, `vonage`, …).
    Http(Box<HttpSpec>),
    /// `kind = "smpp"`: an SMSC over SMPP 3.4.
    Smpp(Box<SmppSpec>),
}

impl ProviderSpec {
    pub fn name(&self) -> &str {
        match self {
            ProviderSpec::Outbox { name, .. } | ProviderSpec::Command { name, .. } => name,
            ProviderSpec::Http(h) => &h.name,
            ProviderSpec::Smpp(s) => &s.name,
        }
    }
}

const PROVIDER_KINDS: &str =
    "\"outbox\", \"command\", \"http\", \"smpp\", \"twilio\", \"vonage\" (or \"nexmo\"), \
                              \"clickatell\", \"plivo\" or \"bulksms\"";

/// The keys each provider kind takes, besides `kind`.
pub(crate) fn provider_keys(kind: &str) -> Option<Vec<&'static str>> {
    let (own, transport): (&[&str], bool) = match kind {
        "outbox" => (&outbox::KEYS, false),
        "command" => (&command::KEYS, false),
        "http" => (&http::config::KEYS, true),
        "smpp" => (&smpp::config::KEYS, false),
        _ => (http::config::preset_keys(kind)?, true),
    };
    let mut v = own.to_vec();
    if transport {
        v.extend_from_slice(&http::config::TRANSPORT_KEYS);
    }
    Some(v)
}

/// Validates one `[[provider]]` table: the keys its kind takes and its
/// name here, the rest in the kind's own module.
pub(crate) fn validate(
    c: &Checker<'_>,
    key: &str,
    p: &Spanned<RawProvider>,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<ProviderSpec, ConfigError> {
    let r = p.get_ref();
    let kind = r.kind.get_ref().as_str();
    let k = |field: &str| format!("{key}.{field}");
    let Some(allowed) = provider_keys(kind) else {
        return Err(c.err(
            r.kind.span(),
            &k("kind"),
            format!("\"{kind}\" is not a provider kind; use {PROVIDER_KINDS}"),
        ));
    };
    for (field, span) in r.present() {
        if !allowed.contains(&field) {
            return Err(c.err(
                span,
                &k(field),
                format!(
                    "is not a key of kind \"{kind}\"; remove it (kind \"{kind}\" takes: {})",
                    allowed.join(", ")
                ),
            ));
        }
    }
    let name = match &r.name {
        None => kind.to_owned(),
        Some(n) => {
            let v = n.get_ref().trim();
            if v.is_empty()
                || !v
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
            {
                return Err(c.err(n.span(), &k("name"), "use letters, digits, '-', '_' or '.'"));
            }
            v.to_owned()
        }
    };
    let table = Fields { c, key, p, kind };
    Ok(match kind {
        "outbox" => outbox::validate(&table, name)?,
        "command" => command::validate(&table, name)?,
        "smpp" => ProviderSpec::Smpp(Box::new(smpp::config::validate(&table, name, warnings)?)),
        "http" => ProviderSpec::Http(Box::new(http::config::validate(&table, name)?)),
        _ => ProviderSpec::Http(Box::new(http::config::validate_preset(&table, name)?)),
    })
}

/// What a front end offers providers beyond their config.
#[derive(Debug, Clone, Default)]
pub struct ProviderContext {
    /// Keep SMPP sessions bound between sends, in this pool (smsotp-radiusd:
    /// one pool per config generation, shared by every worker). `None`: one
    /// session per send, as the PAM module needs.
    pub smpp_sessions: Option<SmppSessions>,
    /// One agent per HTTP provider, its keep-alive connections shared by
    /// every engine (smsotp-radiusd: per config generation, by every
    /// thread). `None`: each provider builds its own, as the PAM module
    /// needs.
    pub http_agents: Option<HttpAgents>,
}

/// Builds the configured providers, in order, for a short-lived process
/// (one SMPP session per send). See [`from_config_with`].
pub fn from_config(
    specs: &[ProviderSpec],
    clock: fn() -> Box<dyn Clock>,
) -> Vec<Box<dyn SmsProvider>> {
    from_config_with(specs, clock, &ProviderContext::default())
}

/// Builds the configured providers, in order, with what `ctx` offers.
pub fn from_config_with(
    specs: &[ProviderSpec],
    clock: fn() -> Box<dyn Clock>,
    ctx: &ProviderContext,
) -> Vec<Box<dyn SmsProvider>> {
    specs
        .iter()
        .map(|s| -> Box<dyn SmsProvider> {
            match s {
                ProviderSpec::Outbox { name, path } => {
                    Box::new(OutboxProvider::new(name.clone(), path.clone(), clock()))
                }
                ProviderSpec::Command {
                    name,
                    program,
                    args,
                    timeout,
                } => Box::new(CommandProvider {
                    name: name.clone(),
                    program: program.clone(),
                    args: args.clone(),
                    timeout: *timeout,
                }),
                ProviderSpec::Http(spec) => Box::new(match &ctx.http_agents {
                    None => HttpProvider::new((**spec).clone()),
                    Some(agents) => HttpProvider::shared((**spec).clone(), agents),
                }),
                ProviderSpec::Smpp(spec) => Box::new(SmppProvider::new(
                    (**spec).clone(),
                    match &ctx.smpp_sessions {
                        None => SessionMode::PerSend,
                        Some(pool) => SessionMode::Persistent(pool.clone()),
                    },
                )),
            }
        })
        .collect()
}

/// What the chain did: who sent it, or every failure in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainOutcome {
    Sent {
        provider: String,
        failed_over_from: Option<(String, SendError)>,
    },
    Failed(Vec<(String, SendError)>),
}

impl ChainOutcome {
    /// True when every failure was temporary or a configuration problem, i.e.
    /// the gateway side is down rather than the number being refused.
    pub fn is_outage(&self) -> bool {
        match self {
            ChainOutcome::Sent { .. } => false,
            ChainOutcome::Failed(errors) => errors
                .iter()
                .all(|(_, e)| !matches!(e, SendError::Rejected(_))),
        }
    }
}

/// Tries the first provider; on a temporary failure, the next one, once.
pub fn send_with_failover(providers: &[Box<dyn SmsProvider>], sms: &Sms<'_>) -> ChainOutcome {
    let mut failures = Vec::new();
    for p in providers.iter().take(2) {
        match p.send(sms) {
            Ok(()) => {
                return ChainOutcome::Sent {
                    provider: p.name().to_owned(),
                    failed_over_from: failures.pop(),
                }
            }
            Err(e) => {
                let transient = matches!(e, SendError::Transient(_));
                failures.push((p.name().to_owned(), e));
                if !transient {
                    break;
                }
            }
        }
    }
    ChainOutcome::Failed(failures)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Records what it was asked to send; fails as scripted.
    #[derive(Clone, Default)]
    pub(crate) struct FakeSms {
        pub name: String,
        pub sent: Rc<RefCell<Vec<(String, String)>>>,
        pub fail_with: Rc<RefCell<Option<SendError>>>,
    }

    impl FakeSms {
        pub(crate) fn named(name: &str) -> Self {
            FakeSms {
                name: name.into(),
                ..Default::default()
            }
        }
        pub(crate) fn failing(name: &str, e: SendError) -> Self {
            let f = Self::named(name);
            *f.fail_with.borrow_mut() = Some(e);
            f
        }
    }

    impl SmsProvider for FakeSms {
        fn name(&self) -> &str {
            &self.name
        }
        fn send(&self, sms: &Sms<'_>) -> Result<(), SendError> {
            if let Some(e) = self.fail_with.borrow().clone() {
                return Err(e);
            }
            self.sent
                .borrow_mut()
                .push((sms.to.e164().into(), sms.text.into()));
            Ok(())
        }
    }

    fn phone() -> Phone {
        Phone::parse("+12025550143", None).unwrap()
    }

    #[test]
    fn failover_once_on_transient_only() {
        let p = phone();
        let sms = Sms {
            to: &p,
            text: "123456 is your code",
        };
        let a = FakeSms::failing("a", SendError::Transient("timeout".into()));
        let b = FakeSms::named("b");
        let c = FakeSms::named("c");
        let chain: Vec<Box<dyn SmsProvider>> =
            vec![Box::new(a), Box::new(b.clone()), Box::new(c.clone())];
        let out = send_with_failover(&chain, &sms);
        assert!(
            matches!(out, ChainOutcome::Sent { ref provider, failed_over_from: Some(_) } if provider == "b")
        );
        assert_eq!(b.sent.borrow().len(), 1);

        // A rejection does not fail over: the number is the problem.
        let a = FakeSms::failing("a", SendError::Rejected("bad number".into()));
        let chain: Vec<Box<dyn SmsProvider>> = vec![Box::new(a), Box::new(c.clone())];
        let out = send_with_failover(&chain, &sms);
        assert!(matches!(out, ChainOutcome::Failed(ref v) if v.len() == 1));
        assert!(!out.is_outage());
        assert!(c.sent.borrow().is_empty());

        // At most one failover: the third provider is never tried.
        let t = || SendError::Transient("down".into());
        let chain: Vec<Box<dyn SmsProvider>> = vec![
            Box::new(FakeSms::failing("a", t())),
            Box::new(FakeSms::failing("b", t())),
            Box::new(c.clone()),
        ];
        let out = send_with_failover(&chain, &sms);
        assert!(matches!(out, ChainOutcome::Failed(ref v) if v.len() == 2));
        assert!(out.is_outage());
        assert!(c.sent.borrow().is_empty());
    }

    #[test]
    fn unknown_key_in_provider_is_refused() {
        let text = "[[provider]]\nkind = \"outbox\"\npaht = \"/tmp/x\"\n";
        let e =
            crate::config::Config::from_toml(std::path::Path::new("/etc/smsotp/smsotp.toml"), text)
                .unwrap_err()
                .to_string();
        assert!(e.contains("paht"), "{e}");
    }
}
