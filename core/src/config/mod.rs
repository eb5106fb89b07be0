//! The configuration file: a raw TOML schema (serde, `deny_unknown_fields`)
//! turned once into validated types.
//!
//! Every error names the file, the line and column, the key, and what would
//! fix it. Nothing downstream re-parses strings: durations are `Duration`,
//! regions are `phonenumber::country::Id`, rates are [`Rate`].

use std::collections::BTreeSet;
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::files::{self, FileRule};
use crate::sms::{self, ProviderSpec, RawProvider};

pub mod check;
mod keys;
use check::Checker;
pub use check::{parse_duration, ConfigError, ConfigWarning, Location, DEFAULT_STATE_DIR};
pub use keys::{section_of, Key, ValueKind, KEYS};

/// Where the config lives unless the front end is told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/smsotp/smsotp.toml";

/// A RADIUS shared secret shorter than this is warned about: RFC 2865 asks
/// for at least 16 octets, and an offline guess of a shorter one from a
/// captured request is cheap.
pub const RADIUS_SECRET_MIN_BYTES: usize = 16;

/// The warning for a RADIUS client whose shared secret is `len` bytes long,
/// if that is too short (one threshold and one text for every front end).
pub fn short_secret_warning(client: &str, len: usize) -> Option<String> {
    (len < RADIUS_SECRET_MIN_BYTES).then(|| {
        format!(
            "radius client \"{client}\": the shared secret is only {len} bytes; use at least \
             {RADIUS_SECRET_MIN_BYTES} random characters, e.g. openssl rand -base64 24, in its \
             secret_file and on the NAS"
        )
    })
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
    user_opt_out: Option<bool>,
    mandatory: Option<bool>,
    backup_codes: Option<bool>,
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRadius {
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    primary: Option<Spanned<RawPrimary>>,
    workers: Option<Spanned<i64>>,
    max_pending_sends: Option<Spanned<i64>>,
    #[serde(default)]
    client: Vec<Spanned<RawClient>>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum RawPrimary {
    // A struct variant: a unit variant would let unknown keys through.
    None {},
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
    /// Allowed but probably mistaken settings, in file order.
    pub warnings: Vec<ConfigWarning>,
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
    /// Ask for a number at login, send a code to it, and register it once
    /// that code is entered (WSO2's CaptureAndUpdateMobileNumber).
    Enroll,
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
    /// Admins may mark users as opted out (WSO2's SMSOTPEnableByUserClaim).
    /// Default false.
    pub user_opt_out: bool,
    /// Everyone not exempt must use the second factor, opt-outs or not
    /// (WSO2's SMSOTPMandatory). Default false; opt-outs only count when
    /// `user_opt_out` is true as well.
    pub mandatory: bool,
    /// Backup codes are accepted in place of the SMS code. Default true.
    pub backup_codes: bool,
}

impl PolicySettings {
    /// Are opt-outs recorded in the store honoured?
    pub fn opt_out_honoured(&self) -> bool {
        self.user_opt_out && !self.mandatory
    }
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
    /// Requests that may send an SMS (a first round, an append-mode login,
    /// an empty-code resend) decided at once, each on a thread of its own
    /// while it waits for the gateway; more are dropped until one ends.
    pub max_pending_sends: usize,
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

/// The checks that need this module's own types.
impl Checker<'_> {
    fn rate(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: Rate,
    ) -> Result<Rate, ConfigError> {
        let Some(s) = v else { return Ok(default) };
        parse_rate(s.get_ref()).map_err(|m| self.err(s.span(), key, m))
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
        let raw: RawConfig = toml::from_str(text).map_err(|e| serde_error(path, text, &e))?;
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
                &[
                    ("deny", NoPhone::Deny),
                    ("allow", NoPhone::Allow),
                    ("enroll", NoPhone::Enroll),
                ],
                NoPhone::Deny,
            )?,
            provider_down: c.choice(
                &p.provider_down,
                "policy.provider_down",
                &[("deny", ProviderDown::Deny), ("allow", ProviderDown::Allow)],
                ProviderDown::Deny,
            )?,
            user_opt_out: p.user_opt_out.unwrap_or(false),
            mandatory: p.mandatory.unwrap_or(false),
            backup_codes: p.backup_codes.unwrap_or(true),
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

        let mut warnings = Vec::new();
        let mut providers = Vec::new();
        let mut seen_names = BTreeSet::new();
        for (i, p) in raw.provider.iter().enumerate() {
            let key = format!("provider[{i}]");
            let spec = sms::validate(&c, &key, p, &mut warnings)?;
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
            warnings,
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
            RawPrimary::None {} => PrimaryAuth::None,
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
    let max_pending_sends = c.int_in(
        &r.max_pending_sends,
        "radius.max_pending_sends",
        1..=4096,
        256,
    )? as usize;
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
        max_pending_sends,
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

/// A syntax or schema error from toml/serde, with the key at fault, a hint
/// when one can be given (the nearest known key, another system's name for
/// one of ours, a number where a duration or rate belongs), and where the
/// key is documented.
fn serde_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let span = e.span().unwrap_or(0..0);
    let raw_message = e.message().trim_end();
    let mut shown = raw_message.to_owned();
    let mut key = key_at(text, span.start);
    let value = value_at(text, span.start);
    let mut hint = None;
    if let Some(rest) = raw_message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        let expected: Vec<String> = rest
            .split_once("expected ")
            .map(|(_, list)| {
                list.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        // key_at names the header table and the key; the table may be an
        // inline one below it, which the expected names identify.
        let line_start = text[..span.start.min(text.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let before = &text[line_start..span.start.min(text.len())];
        let mut header = match key.rsplit_once('.') {
            Some((t, _)) => t.to_owned(),
            None => String::new(),
        };
        // In an inline table (`resend = { … }`): the key before the '{'.
        if let Some((outer, _)) = before.split_once('{') {
            let outer = outer.trim_end().trim_end_matches('=').trim();
            if !outer.is_empty() {
                header = if header.is_empty() {
                    outer.to_owned()
                } else {
                    format!("{header}.{outer}")
                };
            }
        }
        let table = keys::table_for(&header, &expected);
        key = if table.is_empty() {
            name.to_owned()
        } else {
            format!("{table}.{name}")
        };
        hint = if rest.contains("there are no fields") {
            Some("this kind takes no other key".to_owned())
        } else {
            keys::unknown_key_hint(&table, name, value.as_ref(), &expected)
        };
        // With a hint, serde's list of every name is noise (46 for a provider).
        if hint.is_some() {
            shown = format!("unknown field `{name}`");
        }
    } else if raw_message.starts_with("invalid type") {
        key = inline_key(text, span.start, key);
        hint = keys::wrong_type_hint(&key, value.as_ref());
    }
    let message = match hint {
        Some(h) => format!("{shown}; {h}; {}", keys::see_also(&key)),
        None => format!("{shown}; {}", keys::see_also(&key)),
    };
    ConfigError::Invalid {
        path: path.to_owned(),
        location: Location::of(text, span.start),
        key,
        message,
    }
}

/// The value written after the key at `offset` (a key or a value), when it
/// stands on one line: `ttl = 300` → 300.
fn value_at(text: &str, offset: usize) -> Option<toml::Value> {
    let offset = offset.min(text.len());
    let rest = text[offset..].lines().next()?;
    // At a key: the value follows its '='. At a value: it starts here.
    let after_eq = match rest.split_once('=') {
        Some((k, v)) if !k.contains(['"', '\'', '{', '[']) => v,
        _ => rest,
    };
    let after_eq = after_eq.trim_start();
    // The longest prefix that parses: stops before ", next = …" or " }".
    let mut ends: Vec<usize> = after_eq
        .char_indices()
        .filter(|(_, c)| matches!(c, ',' | '}' | '#'))
        .map(|(i, _)| i)
        .collect();
    ends.push(after_eq.len());
    ends.into_iter().rev().find_map(|end| {
        toml::from_str::<toml::Table>(&format!("v = {}", after_eq[..end].trim()))
            .ok()
            .and_then(|mut t| t.remove("v"))
    })
}

/// For a value inside an inline table (`resend = { cooldown = 30 }`), the
/// key path `key_at` gives (`otp.resend`) plus the inner key.
fn inline_key(text: &str, offset: usize, key: String) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let before = &text[line_start..offset];
    if !before.contains('{') {
        return key;
    }
    let inner = before
        .trim_end()
        .trim_end_matches('=')
        .trim_end()
        .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .next()
        .unwrap_or_default();
    if inner.is_empty() {
        key
    } else {
        format!("{key}.{inner}")
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
    fn errors_point_to_the_man_page_section_of_the_key() {
        let cases = [
            ("[otp]\nlength = 4\n", "otp.length", "[otp]"),
            ("[limits]\nlockout = \"x\"\n", "limits.lockout", "[limits]"),
            (
                "[[provider]]\nkind = \"outbox\"\npath = \"o\"\n",
                "provider[0].path",
                "[[provider]]",
            ),
            ("[radius]\nlisten = [\"x\"]\n", "radius.listen", "[radius]"),
            ("[otp]\nlength = \"six\"\n", "otp.length", "[otp]"),
            ("[store]\nkindd = \"sqlite\"\n", "store.kindd", "[store]"),
        ];
        for (text, key, section) in cases {
            let e = err_of(text);
            assert!(
                e.contains(&format!(": {key}: "))
                    && e.ends_with(&format!("; see man 5 smsotp.toml, section {section}")),
                "{text}: {e}"
            );
            assert!(!e.contains("README"), "{e}");
        }
        let e = err_of("[otp]\nlength = = 6\n");
        assert!(e.contains("see man 5 smsotp.toml"), "{e}");
    }

    #[test]
    fn unknown_keys_get_the_nearest_known_key() {
        let e = err_of("[otp]\nlength = 6\nlenght = 7\n");
        assert!(
            e.contains(": otp.lenght: unknown field `lenght`")
                && e.contains("did you mean length?"),
            "{e}"
        );
        // Inside an inline table: the inline table's keys.
        let e = err_of("[otp]\nresend = { max = 2, cooldwn = \"30s\" }\n");
        assert!(
            e.contains(": otp.resend.cooldwn: ") && e.contains("did you mean cooldown?"),
            "{e}"
        );
        let e = err_of("[policy]\nttl = \"5m\"\n");
        assert!(e.contains("ttl in [otp]"), "{e}");
        // Names copied from WSO2's and Gluu's documentation.
        let e = err_of("[otp]\nTokenExpiryTime = 300\n");
        assert!(
            e.contains("otp.TokenExpiryTime")
                && e.contains("WSO2's name for ttl in [otp]")
                && e.contains("write ttl = \"5m\""),
            "{e}"
        );
        let e = err_of("[policy]\nSMSOTPMandatory = true\n");
        assert!(e.contains("write mandatory = true"), "{e}");
        let e = err_of("[[provider]]\nkind = \"smpp\"\nsmpp_server = \"smsc.example.net\"\n");
        assert!(
            e.contains("provider.smpp_server")
                && e.contains("Gluu's name for host in [[provider]]"),
            "{e}"
        );
    }

    #[test]
    fn numbers_for_durations_and_rates_say_what_to_write() {
        let e = err_of("[otp]\nttl = 300\n");
        assert!(
            e.contains(":2:7: otp.ttl: invalid type") && e.contains("write \"5m\""),
            "{e}"
        );
        let e = err_of("[otp]\nresend = { max = 2, cooldown = 30 }\n");
        assert!(
            e.contains("otp.resend.cooldown") && e.contains("write \"30s\""),
            "{e}"
        );
        let e = err_of("[limits]\nsms_per_user = 5\n");
        assert!(
            e.contains("limits.sms_per_user")
                && e.contains("COUNT/WINDOW")
                && e.contains("write \"5/1h\""),
            "{e}"
        );
        let e = err_of("[[provider]]\nkind = \"command\"\nprogram = \"/bin/true\"\ntimeout = 10\n");
        assert!(e.contains("write \"10s\""), "{e}");
    }

    /// A minimal file that sets `path` (from [`KEYS`]) to a value of some
    /// type, with what its table needs to reach that key (a tag).
    fn setting(path: &str) -> String {
        let (table, name) = path.rsplit_once('.').unwrap();
        let v = "1";
        match table {
            "directory" => {
                let kind = if name == "field" { "gecos" } else { "file" };
                format!("[[directory]]\nkind = \"{kind}\"\n{name} = {v}\n")
            }
            "radius.primary" => {
                let kind = if name == "service" { "pam" } else { "none" };
                format!("[radius]\nprimary = {{ kind = \"{kind}\", {name} = {v} }}\n")
            }
            "provider" | "radius.client" => format!("[[{table}]]\n{name} = {v}\n"),
            t if t.starts_with("provider.") => {
                format!(
                    "[[provider]]\nkind = \"http\"\n{} = {{ {name} = {v} }}\n",
                    &t[9..]
                )
            }
            "otp.resend" => format!("[otp]\nresend = {{ {name} = {v} }}\n"),
            t => format!("[{t}]\n{name} = {v}\n"),
        }
    }

    /// Every key of the table is one the deserializer accepts.
    #[test]
    fn every_listed_key_is_accepted() {
        for key in KEYS {
            let text = setting(key.path);
            if let Err(e) = toml::from_str::<RawConfig>(&text) {
                assert!(
                    !e.message().contains("unknown field"),
                    "{} is in KEYS but refused:\n{text}\n{e}",
                    key.path
                );
            }
        }
        // The check can fail: a key that is not in the schema.
        let e = toml::from_str::<RawConfig>(&setting("otp.not_a_key")).unwrap_err();
        assert!(e.message().contains("unknown field"), "{e}");
    }

    /// Every key the deserializer accepts is in the table: serde lists the
    /// names a table takes when it meets an unknown one.
    #[test]
    fn every_accepted_key_is_listed() {
        let mut tables: Vec<String> = vec![String::new()];
        for key in KEYS {
            let mut t = String::new();
            for part in key
                .path
                .split('.')
                .collect::<Vec<_>>()
                .split_last()
                .unwrap()
                .1
            {
                if !t.is_empty() {
                    t.push('.');
                }
                t.push_str(part);
                if !tables.contains(&t) {
                    tables.push(t.clone());
                }
            }
        }
        for table in &tables {
            let text = if table.is_empty() {
                "zz_unknown = 1\n".to_owned()
            } else {
                setting(&format!("{table}.zz_unknown"))
            };
            let e = toml::from_str::<RawConfig>(&text).unwrap_err();
            let m = e.message();
            assert!(m.contains("unknown field `zz_unknown`"), "{table}: {m}");
            let listed = keys::children(table);
            let expected: Vec<&str> = m
                .split_once("expected ")
                .map(|(_, l)| l.split('`').skip(1).step_by(2).collect())
                .unwrap_or_default();
            // (kind = "none" of radius.primary takes nothing else.)
            assert!(
                !expected.is_empty() || m.contains("there are no fields"),
                "{table}: {m}"
            );
            for name in expected {
                assert!(
                    listed.contains(&name),
                    "{table}.{name} is accepted but not in KEYS"
                );
            }
        }
        // The tagged tables list their keys per kind.
        for (text, table) in [
            ("[[directory]]\nkind = \"gecos\"\nzz = 1\n", "directory"),
            (
                "[radius]\nprimary = { kind = \"pam\", zz = 1 }\n",
                "radius.primary",
            ),
        ] {
            let m = toml::from_str::<RawConfig>(text)
                .unwrap_err()
                .message()
                .to_owned();
            let listed = keys::children(table);
            for name in m.split('`').skip(3).step_by(2) {
                assert!(listed.contains(&name), "{table}.{name}: {m}");
            }
        }
        // Each provider kind's keys are keys of [[provider]].
        let listed = keys::children("provider");
        for kind in [
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
        ] {
            for name in crate::sms::provider_keys(kind).unwrap() {
                assert!(listed.contains(&name), "provider.{name} ({kind})");
            }
        }
    }

    /// smsotp.toml(5) documents every key of [`KEYS`] as a term (`.TP`
    /// then `.B key` or `.BR key …`) in the section of its table, so the
    /// man page cannot drift from the schema.
    #[test]
    fn man_page_documents_every_key_in_its_section() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/man/smsotp.toml.5");
        let page = std::fs::read_to_string(&path).unwrap();
        // Section heading → the terms defined in it.
        let mut terms: Vec<(String, Vec<String>)> = Vec::new();
        let mut after_tp = false;
        for line in page.lines() {
            if let Some(h) = line.strip_prefix(".SH ") {
                terms.push((h.trim().to_owned(), Vec::new()));
            } else if after_tp {
                let term = line
                    .strip_prefix(".BR ")
                    .or_else(|| line.strip_prefix(".B "))
                    .and_then(|t| t.split_whitespace().next());
                if let (Some(t), Some((_, list))) = (term, terms.last_mut()) {
                    list.push(t.trim_matches('"').to_owned());
                }
            }
            after_tp = line == ".TP";
        }
        let mut missing = Vec::new();
        for key in KEYS {
            let section = section_of(key.path).unwrap();
            // The key's name below its section's table: otp.resend.max is
            // resend.max in [otp], radius.client.name is name.
            let table = section.trim_matches(|c| c == '[' || c == ']');
            let name = key
                .path
                .strip_prefix(table)
                .and_then(|r| r.strip_prefix('.'))
                .unwrap();
            let found = terms
                .iter()
                .any(|(h, list)| h == section && list.iter().any(|t| t == name));
            if !found {
                missing.push(format!("{name} (in {section})"));
            }
        }
        assert!(
            missing.is_empty(),
            "{} does not document: {}",
            path.display(),
            missing.join(", ")
        );
        // The check can fail: a term in the wrong section does not count.
        assert!(!terms
            .iter()
            .any(|(h, list)| h == "[otp]" && list.iter().any(|t| t == "lockout")));
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

    /// The commented `[[provider]]` examples of the shipped config work
    /// once uncommented.
    #[test]
    fn shipped_provider_examples_parse() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/smsotp.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut blocks: Vec<String> = Vec::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            if line == "# [[provider]]" {
                current = Some(String::from("[[provider]]\n"));
            } else if let (Some(b), Some(rest)) = (current.as_mut(), line.strip_prefix("# ")) {
                b.push_str(rest);
                b.push('\n');
            } else if let Some(b) = current.take() {
                blocks.push(b);
            }
        }
        assert!(blocks.len() >= 8, "{blocks:?}");
        for b in &blocks {
            let c = parse(b).unwrap_or_else(|e| panic!("{e}\n{b}"));
            assert_eq!(c.providers.len(), 1);
        }
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
        assert_eq!((r.workers, r.max_pending_sends), (4, 256));
        let r = parse(&ok.replace("primary =", "max_pending_sends = 2\nprimary ="))
            .unwrap()
            .radius
            .unwrap();
        assert_eq!(r.max_pending_sends, 2);
        for bad in ["0", "4097", "-1"] {
            let e = err_of(&ok.replace(
                "primary =",
                &format!("max_pending_sends = {bad}\nprimary ="),
            ));
            assert!(
                e.contains("radius.max_pending_sends") && e.contains("1 to 4096"),
                "{e}"
            );
        }
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
    fn short_secret_threshold_and_advice_agree() {
        assert_eq!(RADIUS_SECRET_MIN_BYTES, 16);
        let w = short_secret_warning("vpn", 15).unwrap();
        assert!(
            w.contains("only 15 bytes") && w.contains("at least 16 random characters"),
            "{w}"
        );
        assert!(short_secret_warning("vpn", 12).is_some());
        assert_eq!(short_secret_warning("vpn", 16), None);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(Duration::from_secs(60)), "1 minute");
        assert_eq!(human_duration(Duration::from_secs(90)), "90 seconds");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2 hours");
    }
}
