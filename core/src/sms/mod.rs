//! Sending the SMS: the `SmsProvider` trait, the failover chain, and one
//! module per provider kind: [`outbox`], [`command`], [`http`] (with the
//! vendor presets) and [`smpp`].
//!
//! Each kind owns its `[[provider]]` table: its raw struct, its key list
//! and its validation into its spec. This file reads `kind` and `name`
//! (through `raw.rs`, which keeps every position), refuses a key of
//! another kind by name, and dispatches to the kind: a new kind is its own
//! module plus one arm in `provider_keys`, `Typed` and `validate`.
//!
//! Errors say what the chain should do: `Transient` fails over to the next
//! provider (once per code, with the same code, so a user never receives two
//! different codes), `Rejected` and `Misconfigured` stop.

pub mod command;
pub mod gsm;
pub mod http;
pub mod number_format;
pub mod outbox;
mod raw;
pub mod segments;
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
use raw::{Fields, ProviderTable, ReadError};
pub(crate) use raw::{ProviderItems, RawProvider};
use smpp::{SessionMode, SmppProvider, SmppSessions, SmppSpec};

/// One message to send. The text contains the code: never log it.
pub struct Sms<'a> {
    /// The recipient, already normalised and checked against
    /// `phone.allowed_countries`.
    pub to: &'a Phone,
    /// The rendered `otp.message`, code included.
    pub text: &'a str,
}

/// Why a provider did not send, classified for the chain: only
/// `Transient` fails over. The texts are redacted (no code, no secret).
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

/// One way of sending a text. Implementations block, with their own
/// timeouts, and start no threads (they run inside sshd's PAM child).
pub trait SmsProvider {
    /// The configured `name`, for audit lines and the chain's outcome.
    fn name(&self) -> &str;
    /// Sends one message, or says why not. `Ok` means the gateway accepted
    /// it, not that it was delivered.
    fn send(&self, sms: &Sms<'_>) -> Result<(), SendError>;
    /// [`SmsProvider::send`], answering the id the gateway gave the
    /// message when it gives one that a delivery receipt will name (SMPP).
    fn send_tracked(&self, sms: &Sms<'_>) -> Result<Option<String>, SendError> {
        self.send(sms).map(|()| None)
    }
}

/// One validated `[[provider]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderSpec {
    /// `kind = "outbox"`: JSON lines appended to a root-only file.
    Outbox {
        /// Default `outbox`.
        name: String,
        /// Absolute; default `/var/lib/smsotp/outbox.jsonl`.
        path: PathBuf,
    },
    /// `kind = "command"`: the admin's program does the sending.
    Command {
        /// Default `command`.
        name: String,
        /// Absolute path of the program.
        program: PathBuf,
        /// Its arguments, as written.
        args: Vec<String>,
        /// How long it may run (default 10s).
        timeout: Duration,
    },
    /// `kind = "http"` or a vendor preset (`twilio`, `vonage`, …).
    Http(Box<HttpSpec>),
    /// `kind = "smpp"`: an SMSC over SMPP 3.4.
    Smpp(Box<SmppSpec>),
}

impl ProviderSpec {
    /// The provider's `name` (its kind when not set), unique in a config.
    pub fn name(&self) -> &str {
        match self {
            ProviderSpec::Outbox { name, .. } | ProviderSpec::Command { name, .. } => name,
            ProviderSpec::Http(h) => &h.name,
            ProviderSpec::Smpp(s) => &s.name,
        }
    }
}

impl ProviderSpec {
    /// How the provider writes the recipient's number; `None` for the
    /// kinds that hand on every form (outbox: E.164; command: E.164 and
    /// its digits in the environment).
    pub fn number_format(&self) -> Option<number_format::NumberFormat> {
        match self {
            ProviderSpec::Http(h) => Some(h.number_format),
            ProviderSpec::Smpp(s) => Some(s.number_format),
            ProviderSpec::Outbox { .. } | ProviderSpec::Command { .. } => None,
        }
    }

    /// How many SMS `text` takes through this provider: the SMPP
    /// provider's own parts (its `data_coding` may force UCS-2, Latin-1 or
    /// IA5), else [`segments::count`] (GSM-7 when it fits, else UCS-2, as
    /// gateways bill it).
    pub fn segments(&self, text: &str) -> usize {
        match self {
            ProviderSpec::Smpp(s) => {
                smpp::message_parts(text, s.data_coding, smpp::LongMessages::Udh, 0)
                    .map_or_else(|_| segments::count(text).segments, |p| p.len())
            }
            _ => segments::count(text).segments,
        }
    }
}

const PROVIDER_KINDS: &str =
    "\"outbox\", \"command\", \"http\", \"smpp\", \"twilio\", \"vonage\" (or \"nexmo\"), \
                              \"clickatell\", \"plivo\" or \"bulksms\"";

/// Every kind's name, in the order their keys are checked.
pub(crate) const KINDS: [&str; 10] = [
    "outbox",
    "command",
    "http",
    "smpp",
    "twilio",
    "vonage",
    "nexmo",
    "clickatell",
    "plivo",
    "bulksms",
];

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

/// A table read by its kind's own struct: one arm per kind.
enum Typed {
    Outbox(outbox::RawOutbox),
    Command(command::RawCommand),
    Http(Box<http::config::RawHttp>),
    Preset(http::config::RawPreset),
    Smpp(smpp::config::RawSmpp),
}

impl Typed {
    /// Reads `table` as kind `kind` takes it; `None` for a kind that does
    /// not exist.
    fn read(table: ProviderTable, kind: &str) -> Result<Option<Typed>, ReadError> {
        Ok(Some(match kind {
            "outbox" => Typed::Outbox(table.read()?),
            "command" => Typed::Command(table.read()?),
            "http" => Typed::Http(Box::new(table.read()?)),
            "smpp" => Typed::Smpp(table.read()?),
            k if http::config::preset_keys(k).is_some() => Typed::Preset(table.read()?),
            _ => return Ok(None),
        }))
    }
}

/// One `[[provider]]` table, read: its kind and name, and the rest as
/// its kind's struct read it.
pub(crate) struct ReadProvider {
    span: std::ops::Range<usize>,
    kind: Spanned<String>,
    name: Option<Spanned<String>>,
    body: Body,
}

impl ReadProvider {
    /// Where the whole table stands.
    pub(crate) fn span(&self) -> std::ops::Range<usize> {
        self.span.clone()
    }
}

/// What is known of a table beyond its kind and name.
enum Body {
    /// `kind` names no kind.
    UnknownKind,
    /// A key that belongs to another kind stands here (at this span).
    Misplaced(&'static str, std::ops::Range<usize>),
    /// Read by its kind's struct (boxed: the structs are large).
    Typed(Box<Typed>),
}

/// Reads every `[[provider]]` table of the file (`items`, copied from its
/// parse; `tables`, the first read of the same tables) with its kind's
/// struct. The first error in file order is toml's own, with its position:
/// the caller maps it as it maps every other parse error.
pub(crate) fn read(
    items: ProviderItems,
    tables: &[Spanned<RawProvider>],
) -> Result<Vec<ReadProvider>, ReadError> {
    let mut out = Vec::new();
    for (item, t) in items.into_tables().into_iter().zip(tables) {
        let head = item.head()?;
        let kind = head.kind.get_ref().as_str();
        let body = match provider_keys(kind) {
            None => Body::UnknownKind,
            Some(allowed) => {
                let present = &t.get_ref().0;
                // Only a key this kind does not take can be another kind's
                // (no kind lists `kind`): the search is for such tables.
                let foreign = present
                    .keys()
                    .any(|k| k != "kind" && !allowed.contains(&k.as_str()));
                let misplaced = if foreign {
                    KINDS
                        .iter()
                        .flat_map(|k| provider_keys(k).unwrap_or_default())
                        .find(|f| present.contains_key(*f) && !allowed.contains(f))
                } else {
                    None
                };
                match misplaced {
                    Some(f) => {
                        Body::Misplaced(f, present.get(f).map(Spanned::span).unwrap_or_default())
                    }
                    None => match Typed::read(item, kind)? {
                        Some(typed) => Body::Typed(Box::new(typed)),
                        None => Body::UnknownKind,
                    },
                }
            }
        };
        out.push(ReadProvider {
            span: t.span(),
            kind: head.kind,
            name: head.name,
            body,
        });
    }
    Ok(out)
}

/// When the first read of the file failed with `e`: an error of a
/// `[[provider]]` table (of `items`) that stands before it in the file,
/// if any, since that is the one toml would have met first had each table
/// been read with its kind's struct in that read.
pub(crate) fn earlier_error(items: &ProviderItems, e: ReadError) -> ReadError {
    let Some(at) = e.span().map(|s| s.start) else {
        return e;
    };
    let Ok(tables) = items.raw() else {
        return e;
    };
    let before: Vec<Spanned<RawProvider>> = tables
        .into_iter()
        .take_while(|p| p.span().start < at)
        .collect();
    match read(items.clone(), &before) {
        Err(p) if p.span().is_some_and(|s| s.start < at) => p,
        _ => e,
    }
}

/// Validates one `[[provider]]` table: its kind, the keys its kind takes
/// and its name here, the rest in the kind's own module.
pub(crate) fn validate(
    c: &Checker<'_>,
    key: &str,
    p: &ReadProvider,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<ProviderSpec, ConfigError> {
    let kind = p.kind.get_ref().as_str();
    let k = |field: &str| format!("{key}.{field}");
    let typed = match &p.body {
        Body::UnknownKind => {
            return Err(c.err(
                p.kind.span(),
                &k("kind"),
                format!("\"{kind}\" is not a provider kind; use {PROVIDER_KINDS}"),
            ))
        }
        Body::Misplaced(field, span) => {
            let allowed = provider_keys(kind).unwrap_or_default();
            return Err(c.err(
                span.clone(),
                &k(field),
                format!(
                    "is not a key of kind \"{kind}\"; remove it (kind \"{kind}\" takes: {})",
                    allowed.join(", ")
                ),
            ));
        }
        Body::Typed(t) => t,
    };
    let name = match &p.name {
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
    let span = p.span.clone();
    fn fields<'a, R>(
        c: &'a Checker<'a>,
        key: &'a str,
        span: std::ops::Range<usize>,
        raw: &'a R,
        kind: &'a str,
    ) -> Fields<'a, R> {
        Fields {
            c,
            key,
            span,
            raw,
            kind,
        }
    }
    Ok(match &**typed {
        Typed::Outbox(r) => outbox::validate(&fields(c, key, span, r, kind), name)?,
        Typed::Command(r) => command::validate(&fields(c, key, span, r, kind), name)?,
        Typed::Http(r) => ProviderSpec::Http(Box::new(http::config::validate(
            &fields(c, key, span, r, kind),
            name,
        )?)),
        Typed::Preset(r) => ProviderSpec::Http(Box::new(http::config::validate_preset(
            &fields(c, key, span, r, kind),
            name,
        )?)),
        Typed::Smpp(r) => ProviderSpec::Smpp(Box::new(smpp::config::validate(
            &fields(c, key, span, r, kind),
            name,
            warnings,
        )?)),
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
    /// A provider accepted the message.
    Sent {
        /// The name of the one that accepted it.
        provider: String,
        /// The first provider and its temporary failure, when the chain
        /// failed over.
        failed_over_from: Option<(String, SendError)>,
    },
    /// No provider accepted it: each one tried, with its error, in order.
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
    send_with_failover_tracked(providers, sms).0
}

/// [`send_with_failover`], also answering which provider (its index in
/// `providers`) took the message and the id it gave it, when it gave one
/// a delivery receipt will name.
pub fn send_with_failover_tracked(
    providers: &[Box<dyn SmsProvider>],
    sms: &Sms<'_>,
) -> (ChainOutcome, Option<(usize, String)>) {
    let mut failures = Vec::new();
    for (i, p) in providers.iter().enumerate().take(2) {
        match p.send_tracked(sms) {
            Ok(id) => {
                return (
                    ChainOutcome::Sent {
                        provider: p.name().to_owned(),
                        failed_over_from: failures.pop(),
                    },
                    id.map(|id| (i, id)),
                )
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
    (ChainOutcome::Failed(failures), None)
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
        /// Answers a message id ("m1", "m2", …) as an SMSC does.
        pub tracked: bool,
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
        fn send_tracked(&self, sms: &Sms<'_>) -> Result<Option<String>, SendError> {
            self.send(sms)?;
            Ok(self
                .tracked
                .then(|| format!("m{}", self.sent.borrow().len())))
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
    fn no_kind_lists_kind_among_its_keys() {
        // `read` looks for another kind's key only among the keys a table
        // sets besides `kind` and its kind's own.
        for kind in KINDS {
            assert!(!provider_keys(kind).unwrap().contains(&"kind"), "{kind}");
        }
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
