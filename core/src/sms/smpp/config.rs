//! `kind = "smpp"` in the config: Gluu's smpp script settings, one to one
//! (see docs/smpp.md), checked into an [`SmppSpec`].

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use crate::config::check::{Checker, ConfigError, ConfigWarning};
use crate::phone::Phone;
use crate::sms::number_format::{self, Allowed, NumberFormat};
use crate::sms::raw::{timeouts, Fields};
use crate::sms::smpp;
use serde::de::IgnoredAny;
use serde::Deserialize;

/// The keys of `kind = "smpp"`, besides `kind`.
pub(crate) const KEYS: [&str; 21] = [
    "name",
    "number_format",
    "host",
    "port",
    "tls",
    "ca_file",
    "system_id",
    "password_file",
    "system_type",
    "source_addr",
    "source_addr_ton",
    "source_addr_npi",
    "dest_addr_ton",
    "dest_addr_npi",
    "registered_delivery",
    "data_coding",
    "long_messages",
    "timeout",
    "connect_timeout",
    "enquire_link_interval",
    "max_sessions",
];

/// A `kind = "smpp"` table as read (`kind` and `name` are read by the
/// shared layer in `sms/raw.rs`). Gluu's script settings, one to one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSmpp {
    #[serde(rename = "kind")]
    _kind: IgnoredAny,
    #[serde(rename = "name")]
    _name: Option<IgnoredAny>,
    number_format: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    tls: Option<Spanned<bool>>,
    ca_file: Option<Spanned<String>>,
    system_id: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    system_type: Option<Spanned<String>>,
    source_addr: Option<Spanned<String>>,
    source_addr_ton: Option<Spanned<toml::Value>>,
    source_addr_npi: Option<Spanned<toml::Value>>,
    dest_addr_ton: Option<Spanned<toml::Value>>,
    dest_addr_npi: Option<Spanned<toml::Value>>,
    registered_delivery: Option<Spanned<i64>>,
    data_coding: Option<Spanned<String>>,
    long_messages: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    enquire_link_interval: Option<Spanned<String>>,
    max_sessions: Option<Spanned<i64>>,
}

/// Validates one `kind = "smpp"` table; warns when it has no
/// `password_file`.
pub(crate) fn validate(
    table: &Fields<'_, RawSmpp>,
    name: String,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<SmppSpec, ConfigError> {
    let (c, key, span) = (table.c, table.key, table.span.clone());
    let s = smpp_spec(c, key, table.raw(), span.clone(), name)?;
    // Binding without a password is legitimate (SMSCs that trust the
    // address), so not an error; but a forgotten password_file would
    // otherwise show only as a refused bind at the first login.
    if s.password_file.is_none() {
        warnings.push(c.warning(
            span,
            &format!("{key}.password_file"),
            "is not set, so the SMSC is bound with an empty password; if it wants one, \
             put it in a file (owner root, mode 0600) and set \
             password_file = \"/etc/smsotp/secrets/smpp\"; if it trusts this host's \
             address alone, nothing to do",
        ));
    }
    Ok(s)
}

/// Validates one `kind = "smpp"` table: Gluu's smpp script settings, one
/// to one (see docs/smpp.md).
fn smpp_spec(
    c: &Checker<'_>,
    key: &str,
    r: &RawSmpp,
    span: Range<usize>,
    name: String,
) -> Result<SmppSpec, ConfigError> {
    let k = |field: &str| format!("{key}.{field}");
    // Printable ASCII of at most `max` characters (SMPP C-Octet strings).
    let ascii = |v: &Spanned<String>, field: &str, max: usize, empty_ok: bool| {
        let t = v.get_ref().trim();
        if (t.is_empty() && !empty_ok) || !t.chars().all(|ch| ch.is_ascii_graphic() || ch == ' ') {
            return Err(c.err(
                v.span(),
                &k(field),
                "must be printable ASCII on one line (SMPP sends no other characters)",
            ));
        }
        if t.len() > max {
            return Err(c.err(
                v.span(),
                &k(field),
                format!(
                    "\"{t}\" is {} characters; SMPP 3.4 allows at most {max}",
                    t.len()
                ),
            ));
        }
        Ok(t.to_owned())
    };
    let host = match &r.host {
        None => {
            return Err(c.err(
                span.clone(),
                &k("host"),
                "is missing; kind \"smpp\" needs host = \"smsc.example.net\" (Gluu: smpp_server)",
            ))
        }
        Some(h) => {
            let t = h.get_ref().trim();
            if t.is_empty()
                || t.contains(|ch: char| {
                    ch.is_whitespace() || ch.is_control() || "/:@".contains(ch)
                }) && t.parse::<std::net::Ipv6Addr>().is_err()
            {
                return Err(c.err(
                    h.span(),
                    &k("host"),
                    format!("\"{t}\" is not a host name or address; write it like \"smsc.example.net\" (no port: set port)"),
                ));
            }
            t.to_owned()
        }
    };
    let port = c.int_in(
        &r.port,
        &k("port"),
        1..=65535,
        i64::from(SmppSpec::DEFAULT_PORT),
    )? as u16;
    let system_id =
        match &r.system_id {
            None => return Err(c.err(
                span.clone(),
                &k("system_id"),
                "is missing; kind \"smpp\" needs system_id = \"…\" (the account the SMSC gave you)",
            )),
            Some(v) => ascii(v, "system_id", 15, false)?,
        };
    let system_type = match &r.system_type {
        None => String::new(),
        Some(v) => ascii(v, "system_type", 12, true)?,
    };
    let source_addr_ton = smpp_code(c, &r.source_addr_ton, &k("source_addr_ton"), &smpp::TONS, 5)?;
    let source_addr = match &r.source_addr {
        None => String::new(),
        Some(v) => {
            // An alphanumeric sender shows as at most 11 characters.
            let max = if source_addr_ton == 5 { 11 } else { 20 };
            ascii(v, "source_addr", max, true)?
        }
    };
    // NPI has no meaning for an alphanumeric sender: unknown, as SMSCs expect.
    let source_npi_default = if source_addr_ton == 5 { 0 } else { 1 };
    let source_addr_npi = smpp_code(
        c,
        &r.source_addr_npi,
        &k("source_addr_npi"),
        &smpp::NPIS,
        source_npi_default,
    )?;
    let number_format = number_format::check(
        c,
        &r.number_format,
        key,
        &Allowed {
            formats: &[NumberFormat::Digits, NumberFormat::National],
            why: "SMPP writes an international number as its digits without '+', with \
                  dest_addr_ton = 1 (international)",
        },
    )?;
    // A national number is the national significant number with TON
    // national (3GPP TS 23.040 9.1.2.5), or as dialled with TON unknown.
    let ton_default = match number_format {
        NumberFormat::National => 2,
        NumberFormat::E164 | NumberFormat::Digits => 1,
    };
    let dest_addr_ton = smpp_code(
        c,
        &r.dest_addr_ton,
        &k("dest_addr_ton"),
        &smpp::TONS,
        ton_default,
    )?;
    if let (NumberFormat::National, Some(t)) = (number_format, &r.dest_addr_ton) {
        if ![0, 2].contains(&dest_addr_ton) {
            return Err(c.err(
                t.span(),
                &k("dest_addr_ton"),
                format!(
                    "{} does not fit number_format = \"national\"; remove dest_addr_ton (it is \
                     then 2, national: the number without country code and trunk prefix) or set \
                     \"unknown\" (the number as dialled in the country, trunk prefix included)",
                    t.get_ref()
                ),
            ));
        }
    }
    let dest_addr_npi = smpp_code(c, &r.dest_addr_npi, &k("dest_addr_npi"), &smpp::NPIS, 1)?;
    let registered_delivery =
        c.int_in(&r.registered_delivery, &k("registered_delivery"), 0..=31, 0)? as u8;
    let data_coding = c.choice(
        &r.data_coding,
        &k("data_coding"),
        &[
            ("gsm7", Coding::Gsm7),
            ("latin1", Coding::Latin1),
            ("ia5", Coding::Ia5),
            ("ucs2", Coding::Ucs2),
        ],
        Coding::Gsm7,
    )?;
    let long_messages = c.choice(
        &r.long_messages,
        &k("long_messages"),
        &[
            ("udh", LongMessages::Udh),
            ("payload", LongMessages::Payload),
        ],
        LongMessages::Udh,
    )?;
    let tls = r.tls.as_ref().is_some_and(|b| *b.get_ref());
    if let (false, Some(f)) = (tls, &r.ca_file) {
        return Err(c.err(
            f.span(),
            &k("ca_file"),
            "only applies with tls = true; set tls = true or remove it",
        ));
    }
    let ca_file = r
        .ca_file
        .as_ref()
        .map(|f| c.absolute(f.get_ref(), f.span(), &k("ca_file")))
        .transpose()?;
    let password_file = r
        .password_file
        .as_ref()
        .map(|f| c.absolute(f.get_ref(), f.span(), &k("password_file")))
        .transpose()?;
    let (timeout, connect_timeout) = timeouts(
        c,
        (&r.timeout, &r.connect_timeout),
        &k,
        (SmppSpec::DEFAULT_TIMEOUT, SmppSpec::DEFAULT_CONNECT_TIMEOUT),
        "send",
    )?;
    let enquire_link_interval = c.duration_in(
        &r.enquire_link_interval,
        &k("enquire_link_interval"),
        Duration::from_secs(1),
        Duration::from_secs(3600),
        SmppSpec::DEFAULT_ENQUIRE_LINK_INTERVAL,
    )?;
    let max_sessions = c.int_in(
        &r.max_sessions,
        &k("max_sessions"),
        1..=64,
        SmppSpec::DEFAULT_MAX_SESSIONS as i64,
    )? as usize;
    Ok(SmppSpec {
        name,
        number_format,
        host,
        port,
        tls,
        ca_file,
        system_id,
        password_file,
        system_type,
        source_addr,
        source_addr_ton,
        source_addr_npi,
        dest_addr_ton,
        dest_addr_npi,
        registered_delivery,
        data_coding,
        long_messages,
        connect_timeout,
        timeout,
        enquire_link_interval,
        max_sessions,
    })
}

/// A TON or NPI: a name as jsmpp (and so Gluu) spells it, in any case, or
/// its number.
fn smpp_code(
    c: &Checker<'_>,
    v: &Option<Spanned<toml::Value>>,
    key: &str,
    table: &[(&str, u8)],
    default: u8,
) -> Result<u8, ConfigError> {
    let Some(v) = v else { return Ok(default) };
    let found = match v.get_ref() {
        toml::Value::String(s) => smpp::code_of(table, s),
        toml::Value::Integer(i) => u8::try_from(*i).ok(),
        _ => None,
    };
    found.ok_or_else(|| {
        let names: Vec<String> = table.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        c.err(
            v.span(),
            key,
            format!(
                "{} is not allowed; use one of {} (or its number, 0 to 255)",
                v.get_ref(),
                names.join(", ")
            ),
        )
    })
}

/// How a text is encoded (`data_coding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// GSM 03.38 (`data_coding` 0) when the text fits, UCS-2 otherwise.
    Gsm7,
    /// ISO-8859-1 (`data_coding` 3) when the text fits, UCS-2 otherwise.
    Latin1,
    /// IA5/ASCII (`data_coding` 1) when the text is ASCII, UCS-2 otherwise.
    Ia5,
    /// Always UCS-2 (`data_coding` 8).
    Ucs2,
}

/// How a text longer than one SMS is sent (`long_messages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongMessages {
    /// Several `submit_sm` with a concatenation header.
    Udh,
    /// One `submit_sm` with the whole text in the `message_payload` TLV.
    Payload,
}

/// A validated `[[provider]] kind = "smpp"` table. No secret in it: the
/// password is read from `password_file` at each bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmppSpec {
    /// The provider's `name` (default `smpp`), unique in the config.
    pub name: String,
    /// `digits` (default: E.164 without '+', TON international) or
    /// `national` ([`SmppSpec::destination`]).
    pub number_format: NumberFormat,
    /// The SMSC's name or address, without port.
    pub host: String,
    /// Default 2775 ([`SmppSpec::DEFAULT_PORT`]).
    pub port: u16,
    /// Connect with TLS (default false; then `ca_file` is refused).
    pub tls: bool,
    /// An extra trust anchor besides the system's CAs (with `tls`).
    pub ca_file: Option<PathBuf>,
    /// The account the SMSC gave, up to 15 ASCII characters.
    pub system_id: String,
    /// No file: bind with an empty password.
    pub password_file: Option<PathBuf>,
    /// Sent in the bind, up to 12 characters; empty by default.
    pub system_type: String,
    /// The sender (up to 11 characters when alphanumeric, TON 5); empty:
    /// the SMSC's default.
    pub source_addr: String,
    /// Type of number of the sender (default 5, alphanumeric).
    pub source_addr_ton: u8,
    /// Numbering plan of the sender (default 0 for alphanumeric, else 1).
    pub source_addr_npi: u8,
    /// Type of number of the recipient (default 1, international).
    pub dest_addr_ton: u8,
    /// Numbering plan of the recipient (default 1, E.164).
    pub dest_addr_npi: u8,
    /// The `registered_delivery` flags, 0 to 31 (default 0: no receipt).
    pub registered_delivery: u8,
    /// How the text is encoded (default GSM 7-bit when it fits).
    pub data_coding: Coding,
    /// How a long text is split (default UDH concatenation).
    pub long_messages: LongMessages,
    /// Each connection attempt.
    pub connect_timeout: Duration,
    /// A whole send: connect, bind, every part.
    pub timeout: Duration,
    /// A pooled session idle longer than this is probed before use.
    pub enquire_link_interval: Duration,
    /// smsotp-radiusd: the most sends at once, each on a bound session
    /// of its own; more wait for one (within `timeout`).
    pub max_sessions: usize,
}

impl SmppSpec {
    /// The IANA port of SMPP, used when `port` is not set (with or without
    /// TLS).
    pub const DEFAULT_PORT: u16 = 2775;
    /// `timeout` when not set.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// `connect_timeout` when not set (never more than `timeout`).
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// `enquire_link_interval` when not set.
    pub const DEFAULT_ENQUIRE_LINK_INTERVAL: Duration = Duration::from_secs(30);
    /// As many as smsotp-radiusd's 4 workers had bound before sends left
    /// them: SMSCs often limit binds per system_id.
    pub const DEFAULT_MAX_SESSIONS: usize = 4;

    /// The `destination_addr` for `to`: its E.164 digits (no '+'); with
    /// `number_format = "national"`, the national significant number
    /// under TON national (2), or the number as dialled in its country
    /// under TON unknown (0).
    pub fn destination(&self, to: &Phone) -> String {
        match (self.number_format, self.dest_addr_ton) {
            (NumberFormat::National, 0) => to.national(),
            (NumberFormat::National, _) => to.national_significant().to_owned(),
            (NumberFormat::E164 | NumberFormat::Digits, _) => to.digits().to_owned(),
        }
    }

    /// `smpp://host:port` (`smpps://` with TLS), for status and doctor
    /// output: no credentials in it.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "smpps" } else { "smpp" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Type of number names, as jsmpp's `TypeOfNumber` (Gluu) spells them, in
/// lower case.
pub const TONS: [(&str, u8); 7] = [
    ("unknown", 0),
    ("international", 1),
    ("national", 2),
    ("network_specific", 3),
    ("subscriber_number", 4),
    ("alphanumeric", 5),
    ("abbreviated", 6),
];

/// Numbering plan names, as jsmpp's `NumberingPlanIndicator` spells them.
pub const NPIS: [(&str, u8); 10] = [
    ("unknown", 0),
    ("isdn", 1),
    ("data", 3),
    ("telex", 4),
    ("land_mobile", 6),
    ("national", 8),
    ("private", 9),
    ("ermes", 10),
    ("internet", 14),
    ("wap", 18),
];

/// Looks up `name` (any case, `-` or `_`) in `TONS` or `NPIS`.
pub fn code_of(table: &[(&str, u8)], name: &str) -> Option<u8> {
    let n = name.trim().to_ascii_lowercase().replace('-', "_");
    table.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("/etc/smsotp/smsotp.toml"), text)
    }

    #[test]
    fn smpp_without_password_file_is_a_warning() {
        let smpp =
            "[[provider]]\nkind = \"smpp\"\nhost = \"smsc.example.net\"\nsystem_id = \"acme\"\n";
        let c = parse(smpp).unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        let w = c.warnings[0].to_string();
        assert!(
            w.starts_with("/etc/smsotp/smsotp.toml:1:1: provider[0].password_file: is not set")
                && w.contains("password_file = \"/etc/smsotp/secrets/smpp\"")
                && w.ends_with("section [[provider]]"),
            "{w}"
        );
        let c = parse(&format!(
            "{smpp}password_file = \"/etc/smsotp/secrets/smpp\"\n"
        ))
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(parse("").unwrap().warnings.is_empty());
    }
}
