//! HTTP gateways: the generic `http` template provider and the vendor
//! presets (Twilio, Vonage/Nexmo, Clickatell, Plivo, Bulksms).
//!
//! Both build one request per SMS and send it through the same transport:
//! `ureq` over rustls, certificates always verified against the system's
//! CA bundle plus an optional per-provider `ca_file`, an explicit connect and
//! total timeout on every call, no redirects followed, and no proxy or CA
//! location taken from the environment (under `sudo` the environment is the
//! invoking user's: `HTTPS_PROXY` or `SSL_CERT_FILE` there must not let a user
//! read the codes).
//!
//! This runs inside sshd's forked PAM child, so it starts no thread: ureq's
//! default resolver spawns one to put a timeout on DNS, so [`SyncResolver`]
//! resolves in the calling thread instead (bounded by the resolver's own
//! `timeout`/`attempts` in `/etc/resolv.conf`; the total timeout still bounds
//! everything after it).
//!
//! Placeholders are escaped for where they stand (see [`Template`]), and
//! every error is built from a response excerpt with the secrets and the
//! message text replaced by `[redacted]` and the number masked.

pub(crate) mod config;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::files;
use crate::sms::gsm::is_gsm7;
use crate::sms::tls;
use crate::sms::{SendError, Sms, SmsProvider};

/// The most of a response body we read: enough for any gateway's answer.
const MAX_RESPONSE: u64 = 64 * 1024;
/// The most of a response body an error message quotes.
const EXCERPT_CHARS: usize = 200;
// ------------------------------------------------------------------ secrets

/// A secret read from a root-only file: zeroized when dropped, never printed.
pub struct Secret(Zeroizing<String>);

impl Secret {
    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Reads each `(name, path)` with [`files::read_secret`] (owner-only mode).
fn read_secrets(list: &[(String, PathBuf)]) -> Result<BTreeMap<String, Secret>, SendError> {
    let mut out = BTreeMap::new();
    for (name, path) in list {
        let value = files::read_secret(path).map_err(|e| match e {
            files::FileError::Read { .. } => SendError::Misconfigured(format!(
                "{e}; put the secret in that file (owner root, mode 0600)"
            )),
            other => SendError::Misconfigured(other.to_string()),
        })?;
        if value.trim().is_empty() {
            return Err(SendError::Misconfigured(format!(
                "{}: is empty; put the secret in it",
                path.display()
            )));
        }
        out.insert(name.clone(), Secret(value));
    }
    Ok(out)
}

// ---------------------------------------------------------------- templates

/// One piece of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    /// `{number}` or `$ctx.num`: E.164 with the plus.
    Number,
    /// `{number_digits}`: E.164 without the plus.
    NumberDigits,
    /// `{message}` or `$ctx.msg`.
    Message,
    /// `{secret}` (name "") or `{secret:NAME}`.
    Secret(String),
}

/// Text with placeholders: `{number}` (E.164 with `+`), `{number_digits}`
/// (without), `{message}`, `{secret}` (from `secret_file`) and
/// `{secret:NAME}` (from `secrets.NAME`). `$ctx.num` and `$ctx.msg`, as in
/// existing gateway configs, mean `{number}` and `{message}`. A `{` not
/// followed by a name and `}` is literal (JSON bodies are full of them);
/// `{{` is a literal `{` where a name follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

/// How a placeholder's value is written where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    /// Percent-encoded, everything but `A-Z a-z 0-9 - . _ ~` (URL and form).
    Percent,
    /// The inside of a JSON string.
    Json,
    /// As is, refusing control characters (header values).
    Header,
    /// As is (raw bodies).
    Verbatim,
}

/// The values placeholders stand for in one send.
struct Values<'a> {
    number: &'a str,
    digits: &'a str,
    message: &'a str,
    secrets: &'a BTreeMap<String, Secret>,
}

impl Template {
    /// Parses `text`; unknown placeholders are errors.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut i = 0;
        let b = text.as_bytes();
        while i < text.len() {
            let rest = &text[i..];
            if rest.starts_with("{{") {
                lit.push('{');
                i += 2;
                continue;
            }
            if let Some(inner) = rest.strip_prefix('{') {
                let name_len = inner
                    .find(|c: char| !(c.is_ascii_alphanumeric() || "_:-.".contains(c)))
                    .unwrap_or(inner.len());
                let name = &inner[..name_len];
                if !name.is_empty() && inner[name_len..].starts_with('}') {
                    let part = match name {
                        "number" => Part::Number,
                        "number_digits" => Part::NumberDigits,
                        "message" => Part::Message,
                        "secret" => Part::Secret(String::new()),
                        _ => match name.strip_prefix("secret:") {
                            Some(n) if valid_secret_name(n) => Part::Secret(n.to_owned()),
                            _ => {
                                return Err(format!(
                                    "unknown placeholder {{{name}}}; use {{number}}, {{number_digits}}, \
                                     {{message}}, {{secret}} or {{secret:NAME}} (write {{{{ for a literal {{)"
                                ))
                            }
                        },
                    };
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(part);
                    i += name_len + 2;
                    continue;
                }
            }
            if let Some(after) = rest.strip_prefix("$ctx.") {
                let n = after
                    .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    .unwrap_or(after.len());
                let part = match &after[..n] {
                    "num" => Part::Number,
                    "msg" => Part::Message,
                    other => {
                        return Err(format!(
                            "unknown placeholder $ctx.{other}; use $ctx.num or $ctx.msg (or {{number}}, {{message}})"
                        ))
                    }
                };
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                parts.push(part);
                i += 5 + n;
                continue;
            }
            // A copied template that lost its '$' (as in some published
            // gateway set-ups) would send the words "ctx.num" as the number.
            let word_start = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'$');
            for (typo, fix) in [("ctx.num", "$ctx.num"), ("ctx.msg", "$ctx.msg")] {
                if word_start && rest.starts_with(typo) {
                    return Err(format!(
                        "\"{typo}\" lacks its '$': write {fix} (or {})",
                        if typo.ends_with("num") {
                            "{number}"
                        } else {
                            "{message}"
                        }
                    ));
                }
            }
            let ch = rest.chars().next().unwrap_or_default();
            lit.push(ch);
            i += ch.len_utf8();
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template(parts))
    }

    fn has(&self, want: impl Fn(&Part) -> bool) -> bool {
        self.0.iter().any(want)
    }

    /// Does it contain `{message}` (or `$ctx.msg`)?
    pub fn uses_message(&self) -> bool {
        self.has(|p| *p == Part::Message)
    }

    /// Does it contain `{number}` or `{number_digits}` (or `$ctx.num`)?
    pub fn uses_number(&self) -> bool {
        self.has(|p| matches!(p, Part::Number | Part::NumberDigits))
    }

    /// Does it contain `{number}`, `{number_digits}` or `{message}`?
    pub fn uses_sms_values(&self) -> bool {
        self.has(|p| matches!(p, Part::Number | Part::NumberDigits | Part::Message))
    }

    /// The secret names it uses ("" for `{secret}`).
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Part::Secret(n) => Some(n.as_str()),
            _ => None,
        })
    }

    /// The literal text before the first placeholder.
    fn literal_prefix(&self) -> &str {
        match self.0.first() {
            Some(Part::Lit(s)) => s,
            _ => "",
        }
    }

    fn render(&self, v: &Values<'_>, esc: Escape) -> Result<Zeroizing<String>, String> {
        let mut out = Zeroizing::new(String::new());
        for p in &self.0 {
            let value: &str = match p {
                Part::Lit(s) => {
                    out.push_str(s);
                    continue;
                }
                Part::Number => v.number,
                Part::NumberDigits => v.digits,
                Part::Message => v.message,
                Part::Secret(name) => match v.secrets.get(name) {
                    Some(s) => s.expose(),
                    None => return Err(format!("secret {name:?} was not read")),
                },
            };
            match esc {
                Escape::Percent => out.push_str(&percent_encode(value)),
                Escape::Json => out.push_str(&json_escape(value)),
                Escape::Verbatim => out.push_str(value),
                Escape::Header => {
                    if value.chars().any(|c| c.is_control()) {
                        let what = match p {
                            Part::Secret(n) if n.is_empty() => "the secret".to_owned(),
                            Part::Secret(n) => format!("secret {n}"),
                            _ => "a value".to_owned(),
                        };
                        return Err(format!(
                            "{what} contains a control character (a line break?) and cannot go in a header"
                        ));
                    }
                    out.push_str(value);
                }
            }
        }
        Ok(out)
    }

    /// Renders with harmless sample values, for checks at config load.
    fn sample(&self, esc: Escape) -> String {
        let mut secrets = BTreeMap::new();
        for n in self.secret_names() {
            secrets.insert(n.to_owned(), Secret(Zeroizing::new("s3cret".into())));
        }
        let v = Values {
            number: "+12025550143",
            digits: "12025550143",
            message: "123456 \"is\" your code",
            secrets: &secrets,
        };
        self.render(&v, esc)
            .map(|s| s.to_string())
            .unwrap_or_default()
    }
}

fn valid_secret_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Percent-encodes every byte but the unreserved ones (RFC 3986), so the
/// value is safe in a path segment, a query value and a form field alike.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inside of a JSON string literal for `s` (quotes, backslashes and
/// control characters escaped).
pub fn json_escape(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

// ------------------------------------------------------- validated settings

/// HTTP method of the generic provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

/// How a string body is encoded, and so how its placeholders are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// `application/x-www-form-urlencoded`: placeholders percent-encoded.
    Form,
    /// `application/json`: placeholders JSON-escaped, and they must stand
    /// inside a JSON string.
    Json,
    /// Sent as written with the values as they are (`text/plain` unless a
    /// `Content-Type` header says otherwise).
    Raw,
}

impl ContentType {
    fn header(self) -> &'static str {
        match self {
            ContentType::Form => "application/x-www-form-urlencoded",
            ContentType::Json => "application/json",
            ContentType::Raw => "text/plain; charset=utf-8",
        }
    }
}

/// A JSON body written as a TOML table: string leaves are templates.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTemplate {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    Str(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

impl Eq for JsonTemplate {}

impl JsonTemplate {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Template)) {
        match self {
            JsonTemplate::Str(t) => f(t),
            JsonTemplate::Array(a) => a.iter().for_each(|x| x.visit(f)),
            JsonTemplate::Object(o) => o.iter().for_each(|(_, x)| x.visit(f)),
            _ => {}
        }
    }

    fn render(&self, v: &Values<'_>) -> Result<serde_json::Value, String> {
        use serde_json::Value as J;
        Ok(match self {
            JsonTemplate::Null => J::Null,
            JsonTemplate::Bool(b) => J::Bool(*b),
            JsonTemplate::Number(n) => J::Number(n.clone()),
            JsonTemplate::Str(t) => J::String(t.render(v, Escape::Verbatim)?.to_string()),
            JsonTemplate::Array(a) => {
                J::Array(a.iter().map(|x| x.render(v)).collect::<Result<_, _>>()?)
            }
            JsonTemplate::Object(o) => J::Object(
                o.iter()
                    .map(|(k, x)| Ok((k.clone(), x.render(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
        })
    }
}

/// The body of a generic request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodySpec {
    /// A string template, escaped as `content_type` says.
    Text {
        template: Template,
        content_type: ContentType,
    },
    /// A TOML table sent as a form: keys and values percent-encoded.
    Form(Vec<(String, Template)>),
    /// A TOML table sent as JSON.
    Json(JsonTemplate),
}

impl BodySpec {
    pub fn templates(&self) -> Vec<&Template> {
        match self {
            BodySpec::Text { template, .. } => vec![template],
            BodySpec::Form(f) => f.iter().map(|(_, t)| t).collect(),
            BodySpec::Json(j) => {
                let mut v = Vec::new();
                j.visit(&mut |t| v.push(t));
                v
            }
        }
    }

    fn content_type(&self) -> ContentType {
        match self {
            BodySpec::Text { content_type, .. } => *content_type,
            BodySpec::Form(_) => ContentType::Form,
            BodySpec::Json(_) => ContentType::Json,
        }
    }
}

/// A compiled `regex`, compared by its pattern.
#[derive(Clone)]
pub struct Pattern(pub regex::Regex);

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}
impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}
impl Eq for Pattern {}

/// What a successful answer's body must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRule {
    Contains(String),
    Regex(Pattern),
    /// The JSON value at `pointer` (RFC 6901) equals `equals`; a string
    /// also matches a number or boolean written the same way.
    JsonPointer {
        pointer: String,
        equals: serde_json::Value,
    },
}

impl BodyRule {
    fn matches(&self, body: &str) -> bool {
        match self {
            BodyRule::Contains(s) => body.contains(s.as_str()),
            BodyRule::Regex(p) => p.0.is_match(body),
            BodyRule::JsonPointer { pointer, equals } => {
                let Ok(doc) = serde_json::from_str::<serde_json::Value>(body) else {
                    return false;
                };
                match (doc.pointer(pointer), equals) {
                    (None, _) => false,
                    (Some(got), want) if got == want => true,
                    (Some(serde_json::Value::Number(n)), serde_json::Value::String(s)) => {
                        n.to_string() == *s
                    }
                    (Some(serde_json::Value::Bool(b)), serde_json::Value::String(s)) => {
                        b.to_string() == *s
                    }
                    (Some(serde_json::Value::String(s)), serde_json::Value::Number(n)) => {
                        n.to_string() == *s
                    }
                    _ => false,
                }
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            BodyRule::Contains(s) => format!("contains = {s:?}"),
            BodyRule::Regex(p) => format!("regex = {:?}", p.0.as_str()),
            BodyRule::JsonPointer { pointer, equals } => {
                format!("json_pointer = {pointer:?}, equals = {equals}")
            }
        }
    }
}

/// `kind = "http"`: any gateway, described by templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSpec {
    pub url: Template,
    pub method: Method,
    pub headers: Vec<(String, Template)>,
    /// `Authorization: Basic` from these two templates (user, password).
    pub basic_auth: Option<(Template, Template)>,
    pub body: Option<BodySpec>,
    /// Secret files by placeholder name ("" is `{secret}`).
    pub secrets: Vec<(String, PathBuf)>,
    pub success_status: Vec<u16>,
    pub success_body: Option<BodyRule>,
}

/// Who a Twilio message is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwilioSender {
    From(String),
    MessagingService(String),
}

/// Who a Plivo message is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlivoSender {
    Src(String),
    Powerpack(String),
}

/// A vendor's documented SMS API, configured by its own keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preset {
    /// Twilio Programmable Messaging, "Create a Message":
    /// `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, HTTP
    /// Basic with the Account SID and Auth Token, a form with `To` (E.164),
    /// `From` or `MessagingServiceSid`, and `Body`. Success: `201 Created`.
    /// Errors carry `{"code", "message"}`; 21212/21606/21659/21660 are about
    /// the sender (misconfigured), other 400s refuse the message.
    Twilio {
        account_sid: String,
        auth_token_file: PathBuf,
        sender: TwilioSender,
    },
    /// Vonage (Nexmo) SMS API: `POST {base}/sms/json`, a form with
    /// `api_key`, `api_secret`, `from`, `to` (E.164 without `+`), `text` and
    /// `type=unicode` when the text is not GSM-7. It answers `200` with a
    /// status per message part: `"0"` is success; 1 (throttled), 5
    /// (internal error), 9 (out of credit) and 10 (too many binds) are
    /// temporary; 2, 4, 8, 11, 14, 15, 23, 32 mean our account or config is
    /// wrong; the rest (3, 6, 7, 12, 22, 29, 33: invalid or barred number,
    /// message too long, …) refuse the message.
    Vonage {
        api_key: String,
        api_secret_file: PathBuf,
        from: String,
    },
    /// Clickatell Platform (SMS API, REST integration):
    /// `POST {base}/messages`, header `Authorization: <API key>`, JSON
    /// `{"content", "to": ["<E.164 without +>"], "from"?}`. Success: `202`
    /// with `messages[*].accepted == true`; a message not accepted carries
    /// `errorCode`/`errorDescription`. `402` (out of credit) is temporary.
    Clickatell {
        api_key_file: PathBuf,
        from: Option<String>,
    },
    /// Plivo Message API: `POST {base}/v1/Account/{auth_id}/Message/`, HTTP
    /// Basic with Auth ID and Auth Token, JSON `{"src" | "powerpack_uuid",
    /// "dst": "<E.164 without +>", "text"}`. Success: `202` ("message(s)
    /// queued"); errors carry `{"error"}`.
    Plivo {
        auth_id: String,
        auth_token_file: PathBuf,
        sender: PlivoSender,
    },
    /// BulkSMS JSON REST API v1: `POST {base}/v1/messages?auto-unicode=true`,
    /// HTTP Basic with username and password (or API token id and secret),
    /// JSON `{"to": "<E.164>", "body", "from"?}`. Success: `201 Created`;
    /// errors are problem documents `{"title", "detail"}`.
    Bulksms {
        username: String,
        password_file: PathBuf,
        from: Option<String>,
    },
}

impl Preset {
    /// The vendor's API address (`base_url` replaces it, e.g. for tests).
    pub fn default_base_url(&self) -> &'static str {
        match self {
            Preset::Twilio { .. } => "https://api.twilio.com",
            Preset::Vonage { .. } => "https://rest.nexmo.com",
            Preset::Clickatell { .. } => "https://platform.clickatell.com",
            Preset::Plivo { .. } => "https://api.plivo.com",
            Preset::Bulksms { .. } => "https://api.bulksms.com",
        }
    }

    fn vendor(&self) -> &'static str {
        match self {
            Preset::Twilio { .. } => "Twilio",
            Preset::Vonage { .. } => "Vonage",
            Preset::Clickatell { .. } => "Clickatell",
            Preset::Plivo { .. } => "Plivo",
            Preset::Bulksms { .. } => "BulkSMS",
        }
    }

    /// The keys to check when the gateway says the credentials are wrong.
    fn credentials(&self) -> &'static str {
        match self {
            Preset::Twilio { .. } => "account_sid and auth_token_file",
            Preset::Vonage { .. } => "api_key and api_secret_file",
            Preset::Clickatell { .. } => "api_key_file",
            Preset::Plivo { .. } => "auth_id and auth_token_file",
            Preset::Bulksms { .. } => "username and password_file",
        }
    }

    fn secret_files(&self) -> Vec<(String, PathBuf)> {
        let f = match self {
            Preset::Twilio {
                auth_token_file, ..
            }
            | Preset::Plivo {
                auth_token_file, ..
            } => auth_token_file,
            Preset::Vonage {
                api_secret_file, ..
            } => api_secret_file,
            Preset::Clickatell { api_key_file, .. } => api_key_file,
            Preset::Bulksms { password_file, .. } => password_file,
        };
        vec![(String::new(), f.clone())]
    }
}

/// What the request is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gateway {
    Template(TemplateSpec),
    Preset { preset: Preset, base_url: String },
}

/// Connection settings shared by the generic provider and the presets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportSpec {
    /// Extra trust anchors (PEM), on top of the system's CA bundle.
    pub ca_file: Option<PathBuf>,
    /// The whole exchange: connect, TLS, request, response.
    pub timeout: Duration,
    /// TCP connect and TLS handshake.
    pub connect_timeout: Duration,
    /// `http://` or `https://` CONNECT proxy.
    pub proxy: Option<String>,
    /// Plain `http://` URLs allowed (never the default: the message holds the code).
    pub allow_http: bool,
}

impl TransportSpec {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
}

/// One configured HTTP provider (`kind = "http"` or a preset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSpec {
    pub name: String,
    pub gateway: Gateway,
    pub transport: TransportSpec,
}

impl HttpSpec {
    /// Every secret file this provider reads, with the key that names it:
    /// for `smsotp doctor`'s mode checks.
    pub fn secret_paths(&self) -> Vec<(String, PathBuf)> {
        match &self.gateway {
            Gateway::Template(t) => t.secrets.clone(),
            Gateway::Preset { preset, .. } => preset.secret_files(),
        }
    }

    /// Where requests go, without path or query (no secrets): for `smsotp
    /// doctor` and `check-config`. `https://api.twilio.com`.
    pub fn endpoint(&self) -> String {
        let url = match &self.gateway {
            Gateway::Template(t) => t.url.literal_prefix().to_owned(),
            Gateway::Preset { base_url, .. } => base_url.clone(),
        };
        match url.find("://") {
            Some(i) => {
                let rest = &url[i + 3..];
                let end = rest.find(['/', '?', '{']).unwrap_or(rest.len());
                format!("{}{}", &url[..i + 3], &rest[..end])
            }
            None => url,
        }
    }
}

// ----------------------------------------------------- checks at config load

/// Checks a generic URL template: placeholders only after the host (a value
/// can never change where the request goes), https unless `allow_http`.
pub fn check_url(t: &Template, allow_http: bool) -> Result<(), String> {
    let prefix = t.literal_prefix();
    let after_scheme = prefix
        .strip_prefix("https://")
        .or_else(|| prefix.strip_prefix("http://"));
    let Some(after) = after_scheme else {
        return Err("must start with https:// (placeholders go in the path or query)".into());
    };
    if t.0.len() > 1 && !after.contains(['/', '?']) {
        return Err(
            "a placeholder stands in the host; placeholders may go in the path or query only"
                .into(),
        );
    }
    check_base(&t.sample(Escape::Percent), allow_http, true)
}

/// Checks a preset's `base_url` (or a rendered URL): parses, has a host,
/// https unless allowed.
pub fn check_base(url: &str, allow_http: bool, query_ok: bool) -> Result<(), String> {
    let uri: ureq::http::Uri = url.parse().map_err(|e| {
        format!("is not a URL ({e}); write it like \"https://api.example.net/send\"")
    })?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_http => {}
        Some("http") => {
            return Err(
                "uses plain http, which would send the code readable on the wire; \
                 use https (or, on a trusted network only, set allow_http = true)"
                    .into(),
            )
        }
        _ => return Err("must start with https://".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if !query_ok && uri.query().is_some() {
        return Err("must not have a query (\"?…\"); give the API's base address".into());
    }
    Ok(())
}

/// Checks a string body for its content type.
pub fn check_text_body(t: &Template, ct: ContentType) -> Result<(), String> {
    match ct {
        ContentType::Json => {
            // Every placeholder must stand inside a JSON string, where
            // JSON-escaping keeps it there.
            let (mut in_str, mut esc) = (false, false);
            for p in &t.0 {
                match p {
                    Part::Lit(s) => {
                        for ch in s.chars() {
                            if esc {
                                esc = false;
                            } else if in_str && ch == '\\' {
                                esc = true;
                            } else if ch == '"' {
                                in_str = !in_str;
                            }
                        }
                    }
                    _ if !in_str => {
                        return Err(
                            "a placeholder stands outside a JSON string; put it in quotes, like \"{number}\""
                                .into(),
                        )
                    }
                    _ => {}
                }
            }
            serde_json::from_str::<serde_json::Value>(&t.sample(Escape::Json))
                .map(|_| ())
                .map_err(|e| format!("is not valid JSON ({e})"))
        }
        ContentType::Form => {
            for p in &t.0 {
                if let Part::Lit(s) = p {
                    if let Some(c) = s
                        .chars()
                        .find(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
                    {
                        return Err(format!(
                            "has {c:?} in its literal text, which a form must percent-encode \
                             (write %20 for a space, %2B for a plus), or write the body as a table"
                        ));
                    }
                }
            }
            Ok(())
        }
        ContentType::Raw => Ok(()),
    }
}

/// Checks a header value template: no line breaks, no `{message}`.
pub fn check_header(t: &Template) -> Result<(), String> {
    if t.uses_message() {
        return Err("must not contain {message}; put the message in url or body".into());
    }
    for p in &t.0 {
        if let Part::Lit(s) = p {
            if s.chars().any(|c| c.is_control()) {
                return Err("contains a control character (a line break?)".into());
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ request

/// One request ready to go. Holds secrets: `Debug` shows none.
struct Outgoing {
    method: Method,
    url: Zeroizing<String>,
    headers: Vec<(String, Zeroizing<String>)>,
    body: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outgoing")
            .field("method", &self.method)
            .field("url", &"[redacted]")
            .field(
                "headers",
                &self.headers.iter().map(|h| &h.0).collect::<Vec<_>>(),
            )
            .field("body", &self.body.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl Outgoing {
    fn header(&mut self, name: &str, value: impl Into<String>) {
        self.headers
            .push((name.to_owned(), Zeroizing::new(value.into())));
    }
    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

fn basic(user: &str, password: &str) -> Zeroizing<String> {
    let pair = Zeroizing::new(format!("{user}:{password}"));
    Zeroizing::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
    ))
}

fn form(pairs: &[(&str, &str)]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(String::new());
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&percent_encode(k));
        out.push('=');
        out.push_str(&percent_encode(v));
    }
    Zeroizing::new(out.as_bytes().to_vec())
}

fn json_body(v: &serde_json::Value) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(v.to_string().into_bytes())
}

impl TemplateSpec {
    fn build(&self, v: &Values<'_>) -> Result<Outgoing, String> {
        let url = self.url.render(v, Escape::Percent)?;
        let mut out = Outgoing {
            method: self.method,
            url,
            headers: Vec::new(),
            body: None,
        };
        for (name, t) in &self.headers {
            let value = t
                .render(v, Escape::Header)
                .map_err(|e| format!("header {name}: {e}"))?;
            out.headers.push((name.clone(), value));
        }
        if let Some((user, password)) = &self.basic_auth {
            let u = user.render(v, Escape::Header)?;
            let p = password.render(v, Escape::Header)?;
            out.headers.push(("Authorization".into(), basic(&u, &p)));
        }
        if let Some(body) = &self.body {
            let bytes = match body {
                BodySpec::Text {
                    template,
                    content_type,
                } => {
                    let esc = match content_type {
                        ContentType::Form => Escape::Percent,
                        ContentType::Json => Escape::Json,
                        ContentType::Raw => Escape::Verbatim,
                    };
                    Zeroizing::new(template.render(v, esc)?.as_bytes().to_vec())
                }
                BodySpec::Form(fields) => {
                    let rendered = fields
                        .iter()
                        .map(|(k, t)| Ok((k.as_str(), t.render(v, Escape::Verbatim)?)))
                        .collect::<Result<Vec<_>, String>>()?;
                    let pairs: Vec<(&str, &str)> =
                        rendered.iter().map(|(k, s)| (*k, s.as_str())).collect();
                    form(&pairs)
                }
                BodySpec::Json(j) => json_body(&j.render(v)?),
            };
            if !out.has_header("Content-Type") {
                out.header("Content-Type", body.content_type().header());
            }
            out.body = Some(bytes);
        } else if self.method != Method::Get {
            out.body = Some(Zeroizing::new(Vec::new()));
        }
        Ok(out)
    }

    fn judge(&self, status: u16, body: &str, red: &Redactor) -> Result<(), SendError> {
        if !self.success_status.contains(&status) {
            return Err(classify_status(
                status,
                &red.excerpt(body),
                "secret_file, secrets and headers",
            ));
        }
        match &self.success_body {
            Some(rule) if !rule.matches(body) => Err(SendError::Rejected(format!(
                "the gateway answered {status} but its body does not match success_body ({}){}",
                rule.describe(),
                colon(&red.excerpt(body))
            ))),
            _ => Ok(()),
        }
    }
}

impl Preset {
    fn build(&self, base: &str, sms: &Sms<'_>, s: &BTreeMap<String, Secret>) -> Outgoing {
        let secret = s.get("").map_or("", Secret::expose);
        let text = sms.text;
        let mut out = Outgoing {
            method: Method::Post,
            url: Zeroizing::new(String::new()),
            headers: Vec::new(),
            body: None,
        };
        match self {
            Preset::Twilio {
                account_sid,
                sender,
                ..
            } => {
                out.url = Zeroizing::new(format!(
                    "{base}/2010-04-01/Accounts/{}/Messages.json",
                    percent_encode(account_sid)
                ));
                out.headers
                    .push(("Authorization".into(), basic(account_sid, secret)));
                out.header("Content-Type", ContentType::Form.header());
                let (key, from) = match sender {
                    TwilioSender::From(f) => ("From", f),
                    TwilioSender::MessagingService(m) => ("MessagingServiceSid", m),
                };
                out.body = Some(form(&[("To", sms.to.e164()), (key, from), ("Body", text)]));
            }
            Preset::Vonage { api_key, from, .. } => {
                out.url = Zeroizing::new(format!("{base}/sms/json"));
                out.header("Content-Type", ContentType::Form.header());
                let from = from.strip_prefix('+').unwrap_or(from);
                let mut pairs = vec![
                    ("api_key", api_key.as_str()),
                    ("api_secret", secret),
                    ("from", from),
                    ("to", sms.to.digits()),
                    ("text", text),
                ];
                if !is_gsm7(text) {
                    pairs.push(("type", "unicode"));
                }
                out.body = Some(form(&pairs));
            }
            Preset::Clickatell { from, .. } => {
                out.url = Zeroizing::new(format!("{base}/messages"));
                out.header("Authorization", secret);
                out.header("Content-Type", ContentType::Json.header());
                out.header("Accept", "application/json");
                let mut j = serde_json::json!({ "content": text, "to": [sms.to.digits()] });
                if let Some(f) = from {
                    j["from"] = f.as_str().into();
                }
                out.body = Some(json_body(&j));
            }
            Preset::Plivo {
                auth_id, sender, ..
            } => {
                out.url = Zeroizing::new(format!(
                    "{base}/v1/Account/{}/Message/",
                    percent_encode(auth_id)
                ));
                out.headers
                    .push(("Authorization".into(), basic(auth_id, secret)));
                out.header("Content-Type", ContentType::Json.header());
                let mut j = serde_json::json!({ "dst": sms.to.digits(), "text": text });
                match sender {
                    PlivoSender::Src(src) => j["src"] = src.as_str().into(),
                    PlivoSender::Powerpack(p) => j["powerpack_uuid"] = p.as_str().into(),
                }
                out.body = Some(json_body(&j));
            }
            Preset::Bulksms { username, from, .. } => {
                out.url = Zeroizing::new(format!("{base}/v1/messages?auto-unicode=true"));
                out.headers
                    .push(("Authorization".into(), basic(username, secret)));
                out.header("Content-Type", ContentType::Json.header());
                let mut j = serde_json::json!({ "to": sms.to.e164(), "body": text });
                if let Some(f) = from {
                    j["from"] = f.as_str().into();
                }
                out.body = Some(json_body(&j));
            }
        }
        out
    }

    fn judge(&self, status: u16, body: &str, red: &Redactor) -> Result<(), SendError> {
        let vendor = self.vendor();
        let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
        let field = |k: &str| -> Option<String> {
            json.as_ref()
                .and_then(|j| j.pointer(k))
                .filter(|v| !v.is_null())
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        };
        let excerpt = red.excerpt(body);
        match self {
            Preset::Twilio { .. } => match status {
                201 => Ok(()),
                400 | 404 => {
                    let code = field("/code").unwrap_or_default();
                    let why = red.clean(&field("/message").unwrap_or_else(|| excerpt.clone()));
                    let msg =
                        format!("{vendor} refused the message ({status}, error {code}): {why}");
                    // Errors about our sender, not the recipient.
                    if ["21212", "21606", "21659", "21660", "21705"].contains(&code.as_str()) {
                        Err(SendError::Misconfigured(format!(
                            "{msg}; check from / messaging_service_sid"
                        )))
                    } else {
                        Err(SendError::Rejected(msg))
                    }
                }
                _ => Err(classify_status(status, &excerpt, self.credentials())),
            },
            Preset::Vonage { .. } => {
                if status != 200 {
                    return Err(classify_status(status, &excerpt, self.credentials()));
                }
                let parts = json
                    .as_ref()
                    .and_then(|j| j.get("messages"))
                    .and_then(|m| m.as_array())
                    .filter(|m| !m.is_empty());
                let Some(parts) = parts else {
                    return Err(SendError::Transient(format!(
                        "{vendor} answered 200 without a message status{}",
                        colon(&excerpt)
                    )));
                };
                for p in parts {
                    let st = p
                        .get("status")
                        .map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_owned))
                        .unwrap_or_default();
                    if st == "0" {
                        continue;
                    }
                    let text = p.get("error-text").and_then(|t| t.as_str()).unwrap_or("");
                    let msg = format!("{vendor} status {st}: {}", red.clean(text));
                    return Err(match st.as_str() {
                        "1" | "5" | "9" | "10" => SendError::Transient(msg),
                        "4" | "8" | "14" | "32" => SendError::Misconfigured(format!(
                            "{msg}; bad credentials or account: check {}",
                            self.credentials()
                        )),
                        "2" | "11" | "15" | "23" => SendError::Misconfigured(format!(
                            "{msg}; check the provider's keys (from)"
                        )),
                        _ => SendError::Rejected(msg),
                    });
                }
                Ok(())
            }
            Preset::Clickatell { .. } => {
                if status == 402 {
                    return Err(SendError::Transient(format!(
                        "{vendor} answered 402 (out of credit){}",
                        colon(&excerpt)
                    )));
                }
                if !(200..300).contains(&status) {
                    return Err(classify_status(status, &excerpt, self.credentials()));
                }
                let msgs = json
                    .as_ref()
                    .and_then(|j| j.get("messages"))
                    .and_then(|m| m.as_array())
                    .filter(|m| !m.is_empty());
                let Some(msgs) = msgs else {
                    return Err(SendError::Rejected(format!(
                        "{vendor} answered {status} without accepting a message{}",
                        colon(&excerpt)
                    )));
                };
                for m in msgs {
                    if m.get("accepted") != Some(&serde_json::Value::Bool(true)) {
                        let code = m
                            .get("errorCode")
                            .filter(|c| !c.is_null())
                            .map(|c| c.to_string())
                            .unwrap_or_default();
                        let why = ["errorDescription", "error"]
                            .iter()
                            .find_map(|k| m.get(*k).and_then(|v| v.as_str()))
                            .unwrap_or("");
                        return Err(SendError::Rejected(format!(
                            "{vendor} did not accept the message (error {code}): {}",
                            red.clean(why)
                        )));
                    }
                }
                Ok(())
            }
            Preset::Plivo { .. } => match status {
                202 | 200 => Ok(()),
                400 => Err(SendError::Rejected(format!(
                    "{vendor} refused the message (400): {}",
                    red.clean(&field("/error").unwrap_or(excerpt))
                ))),
                _ => Err(classify_status(status, &excerpt, self.credentials())),
            },
            Preset::Bulksms { .. } => match status {
                201 => Ok(()),
                400 | 404 | 422 => Err(SendError::Rejected(format!(
                    "{vendor} refused the message ({status}): {}",
                    red.clean(
                        &field("/detail")
                            .or_else(|| field("/title"))
                            .unwrap_or(excerpt)
                    )
                ))),
                _ => Err(classify_status(status, &excerpt, self.credentials())),
            },
        }
    }
}

fn colon(excerpt: &str) -> String {
    if excerpt.is_empty() {
        String::new()
    } else {
        format!(": {excerpt}")
    }
}

fn status_line(status: u16) -> String {
    let reason = ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason());
    match reason {
        Some(r) => format!("{status} {r}"),
        None => status.to_string(),
    }
}

/// The classification by status alone: 408, 429 and 5xx are temporary (fail
/// over), 401/403 are bad credentials, redirects a wrong URL, other 4xx a
/// refused message.
fn classify_status(status: u16, excerpt: &str, credentials: &str) -> SendError {
    let line = status_line(status);
    let tail = colon(excerpt);
    match status {
        408 | 429 | 500..=599 => SendError::Transient(format!("the gateway answered {line}{tail}")),
        401 | 403 => SendError::Misconfigured(format!(
            "bad credentials: the gateway answered {line}{tail}; check {credentials}"
        )),
        300..=399 => SendError::Misconfigured(format!(
            "the gateway answered {line} (a redirect, which is not followed){tail}; set the URL to the new address"
        )),
        400..=499 => SendError::Rejected(format!("the gateway refused the message: {line}{tail}")),
        200..=299 => SendError::Misconfigured(format!(
            "the gateway answered {line}, which is not a success status here{tail}; if it means sent, add it to success_status"
        )),
        _ => SendError::Transient(format!("the gateway answered {line}{tail}")),
    }
}

// ---------------------------------------------------------------- redaction

/// Replaces secrets and the message text (in the forms a gateway might echo
/// them) by `[redacted]`, and the number by its masked form.
struct Redactor {
    needles: Vec<(Zeroizing<String>, String)>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redactor([redacted])")
    }
}

impl Redactor {
    fn new(sms: &Sms<'_>, secrets: &BTreeMap<String, Secret>, extra: &[&str]) -> Redactor {
        let hidden = "[redacted]".to_owned();
        let mut needles: Vec<(Zeroizing<String>, String)> = Vec::new();
        let mut add = |s: String, with: &String| {
            if !s.is_empty() {
                needles.push((Zeroizing::new(s), with.clone()));
            }
        };
        let text = sms.text;
        add(text.to_owned(), &hidden);
        add(percent_encode(text), &hidden);
        add(json_escape(text), &hidden);
        // The code itself, whatever else the gateway did to the text: any
        // word of the message with a digit in it, of four or more characters.
        for w in text.split(|c: char| !c.is_alphanumeric()) {
            if w.chars().count() >= 4 && w.chars().any(|c| c.is_ascii_digit()) {
                add(w.to_owned(), &hidden);
            }
        }
        for s in secrets
            .values()
            .map(Secret::expose)
            .chain(extra.iter().copied())
        {
            add(s.to_owned(), &hidden);
            add(percent_encode(s), &hidden);
            add(json_escape(s), &hidden);
        }
        let masked = sms.to.masked();
        add(sms.to.e164().to_owned(), &masked);
        add(percent_encode(sms.to.e164()), &masked);
        add(sms.to.digits().to_owned(), &masked);
        // Longest first, so a needle inside another is not half-replaced.
        needles.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
        Redactor { needles }
    }

    fn clean(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (needle, with) in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), with);
            }
        }
        out
    }

    /// At most [`EXCERPT_CHARS`] of `body`, redacted, on one line.
    fn excerpt(&self, body: &str) -> String {
        let clean = self.clean(body);
        let flat: String = clean
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        if flat.chars().count() > EXCERPT_CHARS {
            let cut: String = flat.chars().take(EXCERPT_CHARS).collect();
            format!("{cut}…")
        } else {
            flat
        }
    }
}

// ---------------------------------------------------------------- transport

/// Resolves in the calling thread: ureq's default resolver starts a thread
/// per lookup to bound it by the timeout, and the PAM module must start none.
#[derive(Debug, Default)]
pub struct SyncResolver;

impl ureq::unversioned::resolver::Resolver for SyncResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let host = uri
            .host()
            .ok_or_else(|| ureq::Error::BadUri("no host".into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            });
        let started = Instant::now();
        let addrs = (host, port).to_socket_addrs()?;
        if started.elapsed() > *timeout.after {
            return Err(ureq::Error::Timeout(timeout.reason));
        }
        let mut out = self.empty();
        for a in addrs {
            if out.try_push(a).is_err() {
                break;
            }
        }
        if out.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(out)
    }
}

/// The system's CA bundle plus `ca_file` (see [`tls`](crate::sms::tls)),
/// as ureq wants them.
fn trust_anchors(
    ca_file: Option<&Path>,
) -> Result<Vec<ureq::tls::Certificate<'static>>, SendError> {
    let anchors = tls::trust_anchors(ca_file)?;
    let certs: Vec<_> = anchors
        .system
        .iter()
        .chain(&anchors.extra)
        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    if certs.is_empty() {
        return Err(tls::no_anchors());
    }
    Ok(certs)
}

fn build_agent(t: &TransportSpec) -> Result<ureq::Agent, SendError> {
    use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
    let roots = trust_anchors(t.ca_file.as_deref())?;
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    let proxy = match &t.proxy {
        None => None,
        Some(p) => Some(ureq::Proxy::new(p).map_err(|e| {
            SendError::Misconfigured(format!(
                "proxy {p:?}: {e}; write it like \"http://proxy.example:3128\""
            ))
        })?),
    };
    let config = ureq::Agent::config_builder()
        .tls_config(tls)
        // Set explicitly: the default reads HTTPS_PROXY from the environment.
        .proxy(proxy)
        .https_only(!t.allow_http)
        .http_status_as_error(false)
        // A redirect could take the credentials elsewhere: never followed.
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_global(Some(t.timeout))
        .timeout_connect(Some(t.connect_timeout))
        .user_agent(concat!("smsotp/", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        SyncResolver,
    ))
}

fn transport_error(e: &ureq::Error, t: &TransportSpec, red: &Redactor) -> SendError {
    use ureq::Error as E;
    let d = |d: Duration| humantime::format_duration(d).to_string();
    let text = red.clean(&e.to_string());
    match e {
        E::Timeout(ureq::Timeout::Connect) => SendError::Transient(format!(
            "could not connect to the gateway within {}",
            d(t.connect_timeout)
        )),
        E::Timeout(_) => SendError::Transient(format!(
            "the gateway did not answer within {}",
            d(t.timeout)
        )),
        // rustls reports a refused certificate through the socket's I/O.
        E::Io(io)
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) =>
        {
            SendError::Transient(format!(
                "TLS with the gateway failed: {text}; if its certificate comes from a private CA, set ca_file"
            ))
        }
        E::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => SendError::Transient(format!(
            "the gateway did not answer within {}",
            d(t.timeout)
        )),
        E::HostNotFound => {
            SendError::Transient("cannot resolve the gateway's host name".into())
        }
        E::Io(_) | E::ConnectionFailed => {
            SendError::Transient(format!("cannot reach the gateway: {text}"))
        }
        E::Rustls(_) | E::Tls(_) => SendError::Transient(format!(
            "TLS with the gateway failed: {text}; if its certificate comes from a private CA, set ca_file"
        )),
        E::ConnectProxyFailed(_) => SendError::Transient(format!("the proxy failed: {text}")),
        E::RequireHttpsOnly(_) => SendError::Misconfigured(
            "the URL uses plain http; use https (or set allow_http = true)".into(),
        ),
        E::BadUri(_) | E::Http(_) | E::InvalidProxyUrl => {
            SendError::Misconfigured(format!("cannot build the request: {text}"))
        }
        _ => SendError::Transient(format!("the request failed: {text}")),
    }
}

/// Sends `req`; the status and at most [`MAX_RESPONSE`] bytes of the body.
fn exchange(agent: &ureq::Agent, req: &Outgoing) -> Result<(u16, Vec<u8>), ureq::Error> {
    let mut b = ureq::http::Request::builder()
        .method(req.method.as_str())
        .uri(req.url.as_str());
    for (name, value) in &req.headers {
        b = b.header(name.as_str(), value.as_str());
    }
    let mut resp = match &req.body {
        None => agent.run(b.body(())?)?,
        Some(body) => agent.run(b.body(&body[..])?)?,
    };
    let status = resp.status().as_u16();
    let mut buf = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(MAX_RESPONSE)
        .read_to_end(&mut buf)?;
    Ok((status, buf))
}

/// Sends through an HTTP API: the generic template or a vendor preset.
pub struct HttpProvider {
    spec: HttpSpec,
    agent: OnceLock<ureq::Agent>,
}

impl fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProvider")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl HttpProvider {
    pub fn new(spec: HttpSpec) -> HttpProvider {
        HttpProvider {
            spec,
            agent: OnceLock::new(),
        }
    }

    /// Built on first use (not for users who never get a code); a failure is
    /// not kept, so a fixed `ca_file` counts without a restart.
    fn agent(&self) -> Result<&ureq::Agent, SendError> {
        if let Some(a) = self.agent.get() {
            return Ok(a);
        }
        let a = build_agent(&self.spec.transport)?;
        Ok(self.agent.get_or_init(|| a))
    }
}

impl SmsProvider for HttpProvider {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn send(&self, sms: &Sms<'_>) -> Result<(), SendError> {
        let files = match &self.spec.gateway {
            Gateway::Template(t) => t.secrets.clone(),
            Gateway::Preset { preset, .. } => preset.secret_files(),
        };
        let secrets = read_secrets(&files)?;
        let values = Values {
            number: sms.to.e164(),
            digits: sms.to.digits(),
            message: sms.text,
            secrets: &secrets,
        };
        let req = match &self.spec.gateway {
            Gateway::Template(t) => t.build(&values).map_err(SendError::Misconfigured)?,
            Gateway::Preset { preset, base_url } => preset.build(base_url, sms, &secrets),
        };
        let auth: Vec<&str> = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Authorization"))
            .map(|(_, v)| v.as_str())
            .flat_map(|v| [v, v.split_once(' ').map_or(v, |(_, cred)| cred)])
            .collect();
        let red = Redactor::new(sms, &secrets, &auth);
        let agent = self.agent()?;
        let (status, body) =
            exchange(agent, &req).map_err(|e| transport_error(&e, &self.spec.transport, &red))?;
        let body = String::from_utf8_lossy(&body);
        match &self.spec.gateway {
            Gateway::Template(t) => t.judge(status, &body, &red),
            Gateway::Preset { preset, .. } => preset.judge(status, &body, &red),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
