//! The configuration file: a raw TOML schema (serde, `deny_unknown_fields`)
//! turned once into validated types.
//!
//! Every error names the file, the line and column, the key, and what would
//! fix it. Nothing downstream re-parses strings: durations are `Duration`,
//! regions are `phonenumber::country::Id`, rates are [`Rate`].

use std::collections::BTreeSet;
use std::fmt;
use std::num::NonZeroU32;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::files::{self, FileRule};

/// Where the config lives unless the front end is told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/smsotp/smsotp.toml";
/// Default state directory: store, key and outbox.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/smsotp";

/// A position in a file, 1-based, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    fn of(text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Location { line, column }
    }
}

/// Why a config (or a file it points to) could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read: {source}; create it, or point to another file with config=PATH")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Ownership or mode would let someone other than root change or read it.
    #[error("{path}: {problem}; fix with: {fix}")]
    Unsafe {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    /// A value is malformed, out of range, or an unknown key.
    #[error("{path}:{}:{}: {key}: {message}", location.line, location.column)]
    Invalid {
        path: PathBuf,
        location: Location,
        key: String,
        message: String,
    },
}

impl From<files::FileError> for ConfigError {
    fn from(e: files::FileError) -> Self {
        match e {
            files::FileError::Read { path, source } => ConfigError::Read { path, source },
            files::FileError::Unsafe { path, problem, fix } => {
                ConfigError::Unsafe { path, problem, fix }
            }
        }
    }
}

// ---------------------------------------------------------------- raw schema

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    otp: RawOtp,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    phone: RawPhone,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    directory: Vec<Spanned<RawDirectory>>,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    provider: Vec<Spanned<RawProvider>>,
    #[serde(default)]
    audit: RawAudit,
    radius: Option<RawRadius>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOtp {
    length: Option<Spanned<i64>>,
    alphabet: Option<Spanned<String>>,
    ttl: Option<Spanned<String>>,
    max_attempts: Option<Spanned<i64>>,
    resend: Option<RawResend>,
    message: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResend {
    max: Option<Spanned<i64>>,
    cooldown: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    exempt_users: Vec<Spanned<String>>,
    #[serde(default)]
    exempt_groups: Vec<Spanned<String>>,
    no_phone: Option<Spanned<String>>,
    provider_down: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhone {
    default_region: Option<Spanned<String>>,
    #[serde(default)]
    allowed_countries: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    sms_per_user: Option<Spanned<String>>,
    sms_global: Option<Spanned<String>>,
    lockout_after: Option<Spanned<i64>>,
    lockout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum RawDirectory {
    File { path: Option<String> },
    Gecos { field: Option<String> },
}

/// Flat rather than tagged: `kind` may be left out (sqlite).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    kind: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    busy_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum RawProvider {
    Outbox {
        name: Option<String>,
        path: Option<String>,
    },
    Command {
        name: Option<String>,
        program: String,
        #[serde(default)]
        args: Vec<String>,
        timeout: Option<String>,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRadius {
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    primary: Option<Spanned<RawPrimary>>,
    workers: Option<Spanned<i64>>,
    #[serde(default)]
    client: Vec<Spanned<RawClient>>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum RawPrimary {
    None,
    Pam { service: Option<String> },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    name: String,
    address: String,
    secret_file: String,
    mode: Option<String>,
    require_message_authenticator: Option<bool>,
    limit_proxy_state: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    syslog: Option<bool>,
    file: Option<Spanned<String>>,
}

// ------------------------------------------------------------ validated types

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from (for messages).
    pub path: PathBuf,
    pub otp: OtpSettings,
    pub policy: PolicySettings,
    pub phone: PhoneSettings,
    pub limits: Limits,
    pub directories: Vec<DirectorySpec>,
    pub store: StoreSpec,
    pub providers: Vec<ProviderSpec>,
    pub audit: AuditSettings,
    /// Present when the file has a `[radius]` table (smsotp-radiusd).
    pub radius: Option<RadiusSettings>,
}

/// Which characters a code is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    /// `0-9`.
    Digits,
    /// Upper-case letters and digits without look-alikes (no 0/O, 1/I/L).
    Alphanumeric,
}

#[derive(Debug, Clone)]
pub struct OtpSettings {
    pub length: usize,
    pub alphabet: Alphabet,
    pub ttl: Duration,
    pub max_attempts: NonZeroU32,
    pub resend_max: u32,
    pub resend_cooldown: Duration,
    pub message: MessageTemplate,
    pub key_file: PathBuf,
}

/// The SMS text with `{code}` and optional `{host}`, `{ttl}`, `{user}`, `{service}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageTemplate(String);

/// Values substituted into a [`MessageTemplate`].
pub struct MessageValues<'a> {
    pub code: &'a str,
    pub host: &'a str,
    pub ttl: Duration,
    pub user: &'a str,
    pub service: &'a str,
}

const MESSAGE_PLACEHOLDERS: [&str; 5] = ["code", "host", "ttl", "user", "service"];

impl MessageTemplate {
    fn parse(text: &str) -> Result<Self, String> {
        let mut seen_code = false;
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                return Err("has a '{' without a closing '}'".into());
            };
            let name = &after[..close];
            if !MESSAGE_PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "unknown placeholder {{{name}}}; use {{code}}, {{host}}, {{ttl}}, {{user}} or {{service}}"
                ));
            }
            seen_code |= name == "code";
            rest = &after[close + 1..];
        }
        if !seen_code {
            return Err("must contain {code}, or the user never sees the code".into());
        }
        if text.len() > 480 {
            return Err("is longer than 480 bytes; keep the SMS short".into());
        }
        Ok(MessageTemplate(text.to_owned()))
    }

    /// The text with every placeholder filled in.
    pub fn render(&self, v: &MessageValues<'_>) -> zeroize::Zeroizing<String> {
        let ttl = human_duration(v.ttl);
        let mut out = zeroize::Zeroizing::new(String::with_capacity(self.0.len() + 32));
        let mut rest = self.0.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after.find('}').unwrap_or(after.len());
            match &after[..close] {
                "code" => out.push_str(v.code),
                "host" => out.push_str(v.host),
                "ttl" => out.push_str(&ttl),
                "user" => out.push_str(v.user),
                "service" => out.push_str(v.service),
                other => {
                    out.push('{');
                    out.push_str(other);
                    out.push('}');
                }
            }
            rest = after.get(close + 1..).unwrap_or("");
        }
        out.push_str(rest);
        out
    }
}

/// "5 minutes", "90 seconds", "1 hour" — for messages to people.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = if s >= 3600 && s % 3600 == 0 {
        (s / 3600, "hour")
    } else if s >= 60 && s % 60 == 0 {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// What to do for a user with no phone number in any directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPhone {
    /// Refuse the login (the default: fail closed).
    Deny,
    /// Let the user in without a second factor (logged every time).
    Allow,
}

/// What to do when no provider could send the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderDown {
    /// Refuse the login (the default: fail closed).
    Deny,
    /// Let the user in without a second factor (logged loudly every time).
    Allow,
}

#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub exempt_users: BTreeSet<String>,
    pub exempt_groups: BTreeSet<String>,
    pub no_phone: NoPhone,
    pub provider_down: ProviderDown,
}

#[derive(Debug, Clone)]
pub struct PhoneSettings {
    pub default_region: Option<phonenumber::country::Id>,
    /// Empty: every country is allowed.
    pub allowed_countries: Vec<phonenumber::country::Id>,
}

/// At most `count` events in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub window: Duration,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.count,
            humantime::format_duration(self.window)
        )
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub sms_per_user: Rate,
    pub sms_global: Rate,
    pub lockout_after: NonZeroU32,
    pub lockout: Duration,
}

/// One source of phone numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectorySpec {
    /// A TOML file of `user = "+number"` lines.
    File { path: PathBuf },
    /// A comma-separated field of the passwd GECOS entry (0-based index).
    Gecos { field: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    Sqlite {
        path: PathBuf,
        busy_timeout: Duration,
    },
}

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
}

impl ProviderSpec {
    pub fn name(&self) -> &str {
        match self {
            ProviderSpec::Outbox { name, .. } | ProviderSpec::Command { name, .. } => name,
        }
    }
}

/// How smsotp-radiusd checks the password before sending a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimaryAuth {
    /// The NAS checked the password already (or there is none).
    None,
    /// Run the password through this PAM service.
    Pam { service: String },
}

/// How a NAS asks for the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMode {
    /// Access-Challenge with State, the code in a second Access-Request.
    Challenge,
    /// For NASes without challenges: the password alone sends the code and
    /// is rejected ("Code sent"); password followed by the code logs in.
    Append,
}

/// One NAS allowed to talk to smsotp-radiusd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadiusClient {
    pub name: String,
    pub network: ipnet::IpNet,
    pub secret_file: PathBuf,
    pub mode: ClientMode,
    pub require_message_authenticator: bool,
    pub limit_proxy_state: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadiusSettings {
    pub listen: Vec<std::net::SocketAddr>,
    pub primary: PrimaryAuth,
    pub workers: usize,
    pub clients: Vec<RadiusClient>,
}

impl RadiusSettings {
    /// The most specific client whose network holds `ip`.
    pub fn client_for(&self, ip: std::net::IpAddr) -> Option<&RadiusClient> {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.clients
            .iter()
            .filter(|c| c.network.contains(&ip))
            .max_by_key(|c| c.network.prefix_len())
    }
}

#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub syslog: bool,
    /// Also append one JSON line per event here (root-only file).
    pub file: Option<PathBuf>,
}

// ------------------------------------------------------------------- loading

/// Turns raw values into validated ones, remembering where each came from.
struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Checker<'_> {
    fn err(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            location: Location::of(self.text, span.start),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn int_in(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
        default: i64,
    ) -> Result<i64, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) if range.contains(s.get_ref()) => Ok(*s.get_ref()),
            Some(s) => Err(self.err(
                s.span(),
                key,
                format!(
                    "{} is out of range; set a whole number from {} to {}",
                    s.get_ref(),
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    fn duration_in(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        min: Duration,
        max: Duration,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(s) = v else { return Ok(default) };
        let d = parse_duration(s.get_ref()).map_err(|m| self.err(s.span(), key, m))?;
        if d < min || d > max {
            return Err(self.err(
                s.span(),
                key,
                format!(
                    "\"{}\" is out of range; use a duration from {} to {}",
                    s.get_ref(),
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            ));
        }
        Ok(d)
    }

    fn rate(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: Rate,
    ) -> Result<Rate, ConfigError> {
        let Some(s) = v else { return Ok(default) };
        parse_rate(s.get_ref()).map_err(|m| self.err(s.span(), key, m))
    }

    fn choice<T: Copy>(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        options: &[(&str, T)],
        default: T,
    ) -> Result<T, ConfigError> {
        let Some(s) = v else { return Ok(default) };
        options
            .iter()
            .find(|(name, _)| *name == s.get_ref())
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                let names: Vec<String> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                self.err(
                    s.span(),
                    key,
                    format!(
                        "\"{}\" is not allowed; use one of {}",
                        s.get_ref(),
                        names.join(", ")
                    ),
                )
            })
    }

    fn region(
        &self,
        s: &Spanned<String>,
        key: &str,
    ) -> Result<phonenumber::country::Id, ConfigError> {
        s.get_ref().to_ascii_uppercase().parse().map_err(|_| {
            self.err(
                s.span(),
                key,
                format!(
                    "\"{}\" is not a known region; use a two-letter ISO 3166 code such as \"US\" or \"DE\"",
                    s.get_ref()
                ),
            )
        })
    }

    fn absolute(&self, raw: &str, span: Range<usize>, key: &str) -> Result<PathBuf, ConfigError> {
        let p = PathBuf::from(raw);
        if !p.is_absolute() {
            return Err(self.err(
                span,
                key,
                format!("\"{raw}\" is not an absolute path; write the full path, starting with /"),
            ));
        }
        Ok(p)
    }
}

/// Parses "30s", "5m", "1h30m", "2 minutes".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("\"{text}\" is not a duration ({e}); write it like \"30s\", \"5m\" or \"1h\"")
    })
}

/// Parses "5/1h": at most 5 in any hour.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let bad =
        || format!("\"{text}\" is not a rate; write COUNT/WINDOW such as \"5/1h\" or \"1000/1d\"");
    let (count, window) = text.split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    let count = NonZeroU32::new(count).ok_or_else(bad)?;
    let window = humantime::parse_duration(window.trim()).map_err(|_| bad())?;
    if window < Duration::from_secs(1) || window > Duration::from_secs(31 * 86400) {
        return Err(format!("\"{text}\": the window must be from 1s to 31 days"));
    }
    Ok(Rate { count, window })
}

impl Config {
    /// Reads and validates the config at `path`. The file must be owned by root
    /// (or by the user running the check) and not be writable or readable by
    /// others, since it decides who is exempt from the second factor.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = files::read_checked(path, FileRule::Config)?;
        Config::from_toml(path, &text)
    }

    /// Validates `text` as if it had been read from `path` (no file checks).
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            ConfigError::Invalid {
                path: path.to_owned(),
                location: Location::of(text, span.start),
                key: key_at(text, span.start),
                message: format!(
                    "{}; see the config reference in README.md",
                    e.message().trim_end()
                ),
            }
        })?;
        let c = Checker { path, text };
        let state = Path::new(DEFAULT_STATE_DIR);

        let o = &raw.otp;
        let length = c.int_in(&o.length, "otp.length", 6..=10, 6)? as usize;
        let alphabet = c.choice(
            &o.alphabet,
            "otp.alphabet",
            &[
                ("digits", Alphabet::Digits),
                ("alphanumeric", Alphabet::Alphanumeric),
            ],
            Alphabet::Digits,
        )?;
        let ttl = c.duration_in(
            &o.ttl,
            "otp.ttl",
            Duration::from_secs(30),
            Duration::from_secs(600),
            Duration::from_secs(300),
        )?;
        let max_attempts = c.int_in(&o.max_attempts, "otp.max_attempts", 1..=10, 3)? as u32;
        let resend = o.resend.as_ref();
        let resend_max = c.int_in(
            &resend.and_then(|r| r.max.clone()),
            "otp.resend.max",
            0..=10,
            2,
        )? as u32;
        let resend_cooldown = c.duration_in(
            &resend.and_then(|r| r.cooldown.clone()),
            "otp.resend.cooldown",
            Duration::ZERO,
            Duration::from_secs(600),
            Duration::from_secs(30),
        )?;
        let message = match &o.message {
            None => {
                MessageTemplate::parse("{code} is your login code for {host}. It expires in {ttl}.")
                    .map_err(|m| c.err(0..0, "otp.message", m))?
            }
            Some(s) => MessageTemplate::parse(s.get_ref())
                .map_err(|m| c.err(s.span(), "otp.message", m))?,
        };
        let key_file = match &o.key_file {
            None => None,
            Some(s) => Some(c.absolute(s.get_ref(), s.span(), "otp.key_file")?),
        };
        let otp = OtpSettings {
            length,
            alphabet,
            ttl,
            max_attempts: NonZeroU32::new(max_attempts).unwrap_or(NonZeroU32::MIN),
            resend_max,
            resend_cooldown,
            message,
            key_file: PathBuf::new(),
        };

        let p = &raw.policy;
        let policy = PolicySettings {
            exempt_users: names(&c, &p.exempt_users, "policy.exempt_users")?,
            exempt_groups: names(&c, &p.exempt_groups, "policy.exempt_groups")?,
            no_phone: c.choice(
                &p.no_phone,
                "policy.no_phone",
                &[("deny", NoPhone::Deny), ("allow", NoPhone::Allow)],
                NoPhone::Deny,
            )?,
            provider_down: c.choice(
                &p.provider_down,
                "policy.provider_down",
                &[("deny", ProviderDown::Deny), ("allow", ProviderDown::Allow)],
                ProviderDown::Deny,
            )?,
        };

        let ph = &raw.phone;
        let phone = PhoneSettings {
            default_region: ph
                .default_region
                .as_ref()
                .map(|s| c.region(s, "phone.default_region"))
                .transpose()?,
            allowed_countries: ph
                .allowed_countries
                .iter()
                .map(|s| c.region(s, "phone.allowed_countries"))
                .collect::<Result<_, _>>()?,
        };

        let l = &raw.limits;
        let limits = Limits {
            sms_per_user: c.rate(
                &l.sms_per_user,
                "limits.sms_per_user",
                Rate {
                    count: nz(5),
                    window: Duration::from_secs(3600),
                },
            )?,
            sms_global: c.rate(
                &l.sms_global,
                "limits.sms_global",
                Rate {
                    count: nz(1000),
                    window: Duration::from_secs(3600),
                },
            )?,
            lockout_after: nz(
                c.int_in(&l.lockout_after, "limits.lockout_after", 1..=1000, 10)? as u32,
            ),
            lockout: c.duration_in(
                &l.lockout,
                "limits.lockout",
                Duration::from_secs(1),
                Duration::from_secs(7 * 86400),
                Duration::from_secs(900),
            )?,
        };

        let mut directories = Vec::new();
        for (i, d) in raw.directory.iter().enumerate() {
            let key = format!("directory[{i}]");
            directories.push(match d.get_ref() {
                RawDirectory::File { path } => DirectorySpec::File {
                    path: c.absolute(
                        path.as_deref().unwrap_or("/etc/smsotp/phones.toml"),
                        d.span(),
                        &format!("{key}.path"),
                    )?,
                },
                RawDirectory::Gecos { field } => DirectorySpec::Gecos {
                    field: gecos_field(field.as_deref().unwrap_or("other"))
                        .map_err(|m| c.err(d.span(), &format!("{key}.field"), m))?,
                },
            });
        }
        if directories.is_empty() {
            directories.push(DirectorySpec::File {
                path: PathBuf::from("/etc/smsotp/phones.toml"),
            });
        }

        let st = &raw.store;
        c.choice(&st.kind, "store.kind", &[("sqlite", ())], ())?;
        let store = StoreSpec::Sqlite {
            path: match &st.path {
                None => state.join("state.db"),
                Some(p) => c.absolute(p.get_ref(), p.span(), "store.path")?,
            },
            busy_timeout: c.duration_in(
                &st.busy_timeout,
                "store.busy_timeout",
                Duration::from_millis(100),
                Duration::from_secs(60),
                Duration::from_secs(5),
            )?,
        };

        // The code key lives beside the store unless configured elsewhere.
        let StoreSpec::Sqlite {
            path: store_path, ..
        } = &store;
        let mut otp = otp;
        otp.key_file =
            key_file.unwrap_or_else(|| store_path.parent().unwrap_or(state).join("otp.key"));

        let mut providers = Vec::new();
        let mut seen_names = BTreeSet::new();
        for (i, p) in raw.provider.iter().enumerate() {
            let key = format!("provider[{i}]");
            let spec = match p.get_ref() {
                RawProvider::Outbox { name, path } => ProviderSpec::Outbox {
                    name: name.clone().unwrap_or_else(|| "outbox".into()),
                    path: match path {
                        None => state.join("outbox.jsonl"),
                        Some(x) => c.absolute(x, p.span(), &format!("{key}.path"))?,
                    },
                },
                RawProvider::Command {
                    name,
                    program,
                    args,
                    timeout,
                } => ProviderSpec::Command {
                    name: name.clone().unwrap_or_else(|| "command".into()),
                    program: c.absolute(program, p.span(), &format!("{key}.program"))?,
                    args: args.clone(),
                    timeout: c.duration_in(
                        &timeout.clone().map(|t| Spanned::new(p.span(), t)),
                        &format!("{key}.timeout"),
                        Duration::from_millis(100),
                        Duration::from_secs(60),
                        Duration::from_secs(10),
                    )?,
                },
            };
            if !seen_names.insert(spec.name().to_owned()) {
                return Err(c.err(
                    p.span(),
                    &format!("{key}.name"),
                    format!(
                        "\"{}\" names two providers; give each a distinct name",
                        spec.name()
                    ),
                ));
            }
            providers.push(spec);
        }
        if providers.is_empty() {
            providers.push(ProviderSpec::Outbox {
                name: "outbox".into(),
                path: state.join("outbox.jsonl"),
            });
        }

        let audit = AuditSettings {
            syslog: raw.audit.syslog.unwrap_or(true),
            file: raw
                .audit
                .file
                .as_ref()
                .map(|s| c.absolute(s.get_ref(), s.span(), "audit.file"))
                .transpose()?,
        };

        let radius = raw
            .radius
            .as_ref()
            .map(|r| radius_settings(&c, r))
            .transpose()?;

        Ok(Config {
            radius,
            path: path.to_owned(),
            otp,
            policy,
            phone,
            limits,
            directories,
            store,
            providers,
            audit,
        })
    }
}

fn radius_settings(c: &Checker<'_>, r: &RawRadius) -> Result<RadiusSettings, ConfigError> {
    let mut listen = Vec::new();
    for l in &r.listen {
        let addr = l.get_ref().parse::<std::net::SocketAddr>().map_err(|_| {
            c.err(
                l.span(),
                "radius.listen",
                format!(
                    "\"{}\" is not an address and port; write \"0.0.0.0:1812\" or \"[::]:1812\"",
                    l.get_ref()
                ),
            )
        })?;
        listen.push(addr);
    }
    if listen.is_empty() {
        listen.push(std::net::SocketAddr::from(([0, 0, 0, 0], 1812)));
    }
    let primary = match &r.primary {
        None => PrimaryAuth::None,
        Some(p) => match p.get_ref() {
            RawPrimary::None => PrimaryAuth::None,
            RawPrimary::Pam { service } => {
                let service = service.clone().unwrap_or_else(|| "smsotp-radius".into());
                if service.is_empty() || service.contains('/') {
                    return Err(c.err(
                        p.span(),
                        "radius.primary.service",
                        "must be a PAM service name (a file in /etc/pam.d)",
                    ));
                }
                PrimaryAuth::Pam { service }
            }
        },
    };
    let workers = c.int_in(&r.workers, "radius.workers", 1..=256, 4)? as usize;
    let mut clients: Vec<RadiusClient> = Vec::new();
    for (i, cl) in r.client.iter().enumerate() {
        let key = format!("radius.client[{i}]");
        let raw = cl.get_ref();
        let name = raw.name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        {
            return Err(c.err(
                cl.span(),
                &format!("{key}.name"),
                "use letters, digits, '-', '_' or '.'",
            ));
        }
        if clients.iter().any(|o| o.name == name) {
            return Err(c.err(
                cl.span(),
                &format!("{key}.name"),
                format!("\"{name}\" names two clients; give each a distinct name"),
            ));
        }
        let address = raw.address.trim();
        let network = address
            .parse::<ipnet::IpNet>()
            .or_else(|_| address.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                c.err(
                    cl.span(),
                    &format!("{key}.address"),
                    format!("\"{address}\" is not an address or network; write \"192.0.2.10\", \"192.0.2.0/24\" or \"2001:db8::/64\""),
                )
            })?
            .trunc();
        let secret_file = c.absolute(&raw.secret_file, cl.span(), &format!("{key}.secret_file"))?;
        let mode = match raw.mode.as_deref() {
            None | Some("challenge") => ClientMode::Challenge,
            Some("append") => ClientMode::Append,
            Some(other) => {
                return Err(c.err(
                    cl.span(),
                    &format!("{key}.mode"),
                    format!("\"{other}\" is not allowed; use \"challenge\" or \"append\""),
                ))
            }
        };
        let require_message_authenticator = raw.require_message_authenticator.unwrap_or(true);
        let limit_proxy_state = raw.limit_proxy_state.unwrap_or(false);
        if !require_message_authenticator && !limit_proxy_state {
            return Err(c.err(
                cl.span(),
                &format!("{key}.require_message_authenticator"),
                "may be false only together with limit_proxy_state = true (BlastRADIUS, CVE-2024-3596); \
                 better: make the NAS send Message-Authenticator",
            ));
        }
        clients.push(RadiusClient {
            name: name.to_owned(),
            network,
            secret_file,
            mode,
            require_message_authenticator,
            limit_proxy_state,
        });
    }
    Ok(RadiusSettings {
        listen,
        primary,
        workers,
        clients,
    })
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

fn names(
    c: &Checker<'_>,
    list: &[Spanned<String>],
    key: &str,
) -> Result<BTreeSet<String>, ConfigError> {
    let mut out = BTreeSet::new();
    for s in list {
        let n = s.get_ref();
        if n.is_empty()
            || n.chars()
                .any(|ch| ch.is_whitespace() || ch == ':' || ch.is_control())
        {
            return Err(c.err(
                s.span(),
                key,
                format!("\"{n}\" is not a valid user or group name"),
            ));
        }
        out.insert(n.clone());
    }
    Ok(out)
}

/// GECOS is "full name,room,work phone,home phone,other".
fn gecos_field(name: &str) -> Result<usize, String> {
    match name {
        "full_name" => Ok(0),
        "room" => Ok(1),
        "work_phone" => Ok(2),
        "home_phone" => Ok(3),
        "other" => Ok(4),
        other => Err(format!(
            "\"{other}\" is not a GECOS field; use \"work_phone\", \"home_phone\", \"other\", \"room\" or \"full_name\""
        )),
    }
}

/// Best effort: the dotted key path of the table and key at `offset`, for
/// syntax errors that toml reports without one.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let mut table = String::new();
    let mut key = String::new();
    for line in text[..offset].lines().chain(text[offset..].lines().take(1)) {
        let t = line.trim();
        if let Some(inner) = t.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            table = inner.trim().to_owned();
            key.clear();
        } else if let Some(inner) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            table = inner.trim().to_owned();
            key.clear();
        } else if let Some((k, _)) = t.split_once('=') {
            key = k.trim().trim_matches('"').to_owned();
        }
    }
    match (table.is_empty(), key.is_empty()) {
        (true, true) => "(top level)".into(),
        (true, false) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("/etc/smsotp/smsotp.toml"), text)
    }

    fn err_of(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("config should have been refused:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn empty_config_gives_safe_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.otp.length, 6);
        assert_eq!(c.otp.alphabet, Alphabet::Digits);
        assert_eq!(c.otp.ttl, Duration::from_secs(300));
        assert_eq!(c.otp.max_attempts.get(), 3);
        assert_eq!(c.policy.no_phone, NoPhone::Deny);
        assert_eq!(c.policy.provider_down, ProviderDown::Deny);
        assert_eq!(c.limits.sms_per_user.count.get(), 5);
        assert_eq!(c.limits.lockout_after.get(), 10);
        assert!(matches!(c.providers[0], ProviderSpec::Outbox { .. }));
        assert!(matches!(c.store, StoreSpec::Sqlite { .. }));
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = err_of("[otp]\nlength = 6\nlenght = 7\n");
        assert!(e.starts_with("/etc/smsotp/smsotp.toml:3:1:"), "{e}");
        assert!(e.contains("unknown field `lenght`"), "{e}");
        assert!(e.contains("otp"), "{e}");
    }

    #[test]
    fn unknown_key_in_provider_is_refused() {
        let e = err_of("[[provider]]\nkind = \"outbox\"\npaht = \"/tmp/x\"\n");
        assert!(e.contains("paht"), "{e}");
    }

    #[test]
    fn code_length_outside_6_to_10_is_refused() {
        for bad in ["4", "5", "11"] {
            let e = err_of(&format!("[otp]\nlength = {bad}\n"));
            assert!(e.contains(":2:10: otp.length:"), "{e}");
            assert!(e.contains("from 6 to 10"), "{e}");
        }
        assert_eq!(parse("[otp]\nlength = 10\n").unwrap().otp.length, 10);
    }

    #[test]
    fn ttl_outside_30s_to_10m_is_refused() {
        for bad in ["\"10s\"", "\"11m\""] {
            let e = err_of(&format!("[otp]\nttl = {bad}\n"));
            assert!(e.contains("otp.ttl"), "{e}");
            assert!(e.contains("out of range"), "{e}");
        }
        assert_eq!(
            parse("[otp]\nttl = \"30s\"\n").unwrap().otp.ttl,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn bad_duration_says_how_to_write_one() {
        let e = err_of("[limits]\nlockout = \"fifteen\"\n");
        assert!(e.contains(":2:11: limits.lockout:"), "{e}");
        assert!(e.contains("\"5m\""), "{e}");
    }

    #[test]
    fn bad_rate_and_choice() {
        let e = err_of("[limits]\nsms_per_user = \"5 per hour\"\n");
        assert!(
            e.contains("limits.sms_per_user") && e.contains("COUNT/WINDOW"),
            "{e}"
        );
        let e = err_of("[policy]\nno_phone = \"maybe\"\n");
        assert!(
            e.contains("policy.no_phone") && e.contains("\"deny\", \"allow\""),
            "{e}"
        );
    }

    #[test]
    fn region_must_be_known() {
        let e = err_of("[phone]\ndefault_region = \"XX\"\n");
        assert!(e.contains("phone.default_region"), "{e}");
        let c = parse("[phone]\ndefault_region = \"de\"\nallowed_countries = [\"DE\", \"AT\"]\n")
            .unwrap();
        assert_eq!(c.phone.default_region, Some(phonenumber::country::Id::DE));
        assert_eq!(c.phone.allowed_countries.len(), 2);
    }

    #[test]
    fn message_template_is_checked_and_rendered() {
        let e = err_of("[otp]\nmessage = \"Your code\"\n");
        assert!(e.contains("must contain {code}"), "{e}");
        let e = err_of("[otp]\nmessage = \"{code} {nope}\"\n");
        assert!(e.contains("unknown placeholder {nope}"), "{e}");
        let c = parse("").unwrap();
        let text = c.otp.message.render(&MessageValues {
            code: "123456",
            host: "web1",
            ttl: Duration::from_secs(300),
            user: "alice",
            service: "sshd",
        });
        assert_eq!(
            &*text,
            "123456 is your login code for web1. It expires in 5 minutes."
        );
    }

    #[test]
    fn syntax_error_has_a_location() {
        let e = err_of("[otp]\nlength = = 6\n");
        assert!(e.starts_with("/etc/smsotp/smsotp.toml:2:"), "{e}");
    }

    #[test]
    fn relative_paths_are_refused() {
        let e = err_of("[[provider]]\nkind = \"outbox\"\npath = \"outbox.jsonl\"\n");
        assert!(
            e.contains("provider[0].path") && e.contains("absolute"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_provider_names_are_refused() {
        let e = err_of("[[provider]]\nkind = \"outbox\"\n[[provider]]\nkind = \"outbox\"\npath = \"/tmp/o2\"\n");
        assert!(e.contains("names two providers"), "{e}");
    }

    #[test]
    fn every_shipped_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml")
                && !path.ends_with("phones.example.toml")
            {
                let text = std::fs::read_to_string(&path).unwrap();
                if let Err(e) = Config::from_toml(&path, &text) {
                    panic!("shipped config {} does not load: {e}", path.display());
                }
                seen += 1;
            }
        }
        assert!(seen >= 1, "no config found in {}", dir.display());
    }

    #[test]
    fn radius_clients_are_validated() {
        let base = "[radius]\nlisten = [\"127.0.0.1:1812\", \"[::1]:1812\"]\nprimary = { kind = \"pam\" }\n";
        let ok = format!(
            "{base}[[radius.client]]\nname = \"vpn\"\naddress = \"192.0.2.0/24\"\nsecret_file = \"/etc/smsotp/secrets/vpn\"\n\
             [[radius.client]]\nname = \"fw\"\naddress = \"192.0.2.9\"\nsecret_file = \"/etc/smsotp/secrets/fw\"\nmode = \"append\"\n"
        );
        let r = parse(&ok).unwrap().radius.unwrap();
        assert_eq!(r.listen.len(), 2);
        assert_eq!(
            r.primary,
            PrimaryAuth::Pam {
                service: "smsotp-radius".into()
            }
        );
        assert_eq!(r.clients[0].mode, ClientMode::Challenge);
        assert!(r.clients[0].require_message_authenticator);
        // The most specific network wins; IPv4-mapped IPv6 matches IPv4 clients.
        assert_eq!(
            r.client_for("192.0.2.9".parse().unwrap()).unwrap().name,
            "fw"
        );
        assert_eq!(
            r.client_for("192.0.2.10".parse().unwrap()).unwrap().name,
            "vpn"
        );
        assert_eq!(
            r.client_for("::ffff:192.0.2.10".parse().unwrap())
                .unwrap()
                .name,
            "vpn"
        );
        assert!(r.client_for("198.51.100.1".parse().unwrap()).is_none());

        let no_ma = format!(
            "{base}[[radius.client]]\nname = \"old\"\naddress = \"192.0.2.1\"\nsecret_file = \"/s\"\nrequire_message_authenticator = false\n"
        );
        let e = err_of(&no_ma);
        assert!(
            e.contains("limit_proxy_state") && e.contains("BlastRADIUS"),
            "{e}"
        );
        assert!(parse(&format!("{no_ma}limit_proxy_state = true\n")).is_ok());

        let e = err_of(&format!("{base}[[radius.client]]\nname = \"x\"\naddress = \"vpn.example\"\nsecret_file = \"/s\"\n"));
        assert!(e.contains("radius.client[0].address"), "{e}");
        let e = err_of("[radius]\nlisten = [\"1812\"]\n");
        assert!(e.contains("radius.listen"), "{e}");
        assert!(parse("").unwrap().radius.is_none());
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(Duration::from_secs(60)), "1 minute");
        assert_eq!(human_duration(Duration::from_secs(90)), "90 seconds");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2 hours");
    }
}
