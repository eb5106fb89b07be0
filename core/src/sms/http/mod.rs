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
//!
//! Here: the validated settings ([`HttpSpec`]) and [`HttpProvider`]. Beside
//! it: `template` (placeholders, escaping, the generic request), `presets`
//! (each vendor's request and answer), `redact` (secrets and redaction),
//! `transport` (the request on the wire, TLS, status classification) and
//! `config` (the `[[provider]]` keys checked into an [`HttpSpec`]).

pub mod callback;
pub(crate) mod config;
mod presets;
mod redact;
mod request_config;
mod template;
mod transport;

pub use presets::*;
pub use redact::*;
pub use template::*;
pub use transport::*;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::files;
use crate::sms::number_format::NumberFormat;
use crate::sms::segments::{self, Encoding};
use crate::sms::tls;
use crate::sms::{SendError, Sms, SmsProvider};

/// Where the callback token is kept among a send's secrets: a name no
/// `secrets.NAME` can have.
const CALLBACK_TOKEN: &str = " status_token";

/// The most of a response body we read: enough for any gateway's answer.
const MAX_RESPONSE: u64 = 64 * 1024;
/// The most of a response body an error message quotes.
const EXCERPT_CHARS: usize = 200;
// ------------------------------------------------------- validated settings

/// HTTP method of the generic provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// No body; everything goes in the URL.
    Get,
    /// The default.
    Post,
    /// For gateways that create a message with PUT.
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
    /// Sent as `null` (TOML has none; kept for symmetry with JSON).
    Null,
    /// Sent as written.
    Bool(bool),
    /// Sent as written.
    Number(serde_json::Number),
    /// Rendered, then sent as a JSON string.
    Str(Template),
    /// Each element rendered in order.
    Array(Vec<JsonTemplate>),
    /// Keys as written (not templates), values rendered; order kept.
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
        /// The body text with its placeholders.
        template: Template,
        /// Sent as `Content-Type`, and decides how values are escaped.
        content_type: ContentType,
    },
    /// A TOML table sent as a form: keys and values percent-encoded.
    Form(Vec<(String, Template)>),
    /// A TOML table sent as JSON.
    Json(JsonTemplate),
}

impl BodySpec {
    /// Every template in the body, for the checks that apply to all of them
    /// (known placeholders, secrets only where they may go).
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
    /// The body contains this text.
    Contains(String),
    /// The regular expression matches somewhere in the body.
    Regex(Pattern),
    /// The JSON value at `pointer` (RFC 6901) equals `equals`; a string
    /// also matches a number or boolean written the same way.
    JsonPointer {
        /// An RFC 6901 pointer such as `/messages/0/status`.
        pointer: String,
        /// The value expected there.
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
    /// The request URL; `https://` unless `allow_http`.
    pub url: Template,
    /// Default POST.
    pub method: Method,
    /// Extra headers, names as written, values rendered.
    pub headers: Vec<(String, Template)>,
    /// `Authorization: Basic` from these two templates (user, password).
    pub basic_auth: Option<(Template, Template)>,
    /// `None`: no body (the usual case with GET).
    pub body: Option<BodySpec>,
    /// Secret files by placeholder name ("" is `{secret}`).
    pub secrets: Vec<(String, PathBuf)>,
    /// The statuses that mean sent (default 200, 201, 202); any other is a
    /// failure, classified by status.
    pub success_status: Vec<u16>,
    /// Also required of a successful answer's body; `None`: the status
    /// decides alone.
    pub success_body: Option<BodyRule>,
}

impl TemplateSpec {
    /// Whether any of its templates holds `{status_callback}`.
    pub fn uses_status_callback(&self) -> bool {
        let mut all: Vec<&Template> = vec![&self.url];
        all.extend(self.headers.iter().map(|(_, t)| t));
        all.extend(self.basic_auth.iter().flat_map(|(u, p)| [u, p]));
        all.extend(self.body.iter().flat_map(|b| b.templates()));
        all.iter().any(|t| t.uses_status_callback())
    }
}

/// What the request is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gateway {
    /// `kind = "http"`: the request as the admin wrote it.
    Template(TemplateSpec),
    /// A vendor preset: the vendor's documented request.
    Preset {
        /// The vendor and its account keys.
        preset: Preset,
        /// The API's root, `base_url` or the vendor's (for tests and
        /// regional endpoints).
        base_url: String,
    },
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
    /// `timeout` when not set.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// `connect_timeout` when not set (never more than `timeout`).
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
}

/// One configured HTTP provider (`kind = "http"` or a preset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSpec {
    /// The provider's `name` (default its kind), unique in the config.
    pub name: String,
    /// How `{number}` (and a preset's recipient) is written: `e164` by
    /// default for `kind = "http"`; a preset's is the one its API
    /// documents.
    pub number_format: NumberFormat,
    /// What is sent and how the answer is read.
    pub gateway: Gateway,
    /// How the connection is made.
    pub transport: TransportSpec,
    /// Where the gateway reports delivery (`status_callback`); `None`:
    /// the gateway is not asked, and no message id is kept.
    pub status_callback: Option<callback::StatusCallback>,
}

impl HttpSpec {
    /// Every secret file this provider reads, with the key that names it:
    /// for `smsotp doctor`'s mode checks.
    pub fn secret_paths(&self) -> Vec<(String, PathBuf)> {
        let mut v = match &self.gateway {
            Gateway::Template(t) => t.secrets.clone(),
            Gateway::Preset { preset, .. } => preset.secret_files(),
        };
        // Twilio's callbacks are keyed with the Auth Token, listed above.
        if let Some(cb) = &self.status_callback {
            if !v.iter().any(|(_, p)| *p == cb.secret_file) {
                v.push(("status_token_file".into(), cb.secret_file.clone()));
            }
        }
        v
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
                without_credentials(&url[..i + 3 + end])
            }
            None => url,
        }
    }
}

/// The agents of a server's HTTP providers, one per provider name: a
/// server builds a provider per thread (each thread has its own engine),
/// and they all send through the one agent of their provider, so its
/// keep-alive connections are reused by every thread of a config
/// generation rather than opened per thread. A clone shares the agents.
#[derive(Clone, Default)]
pub struct HttpAgents {
    agents: Arc<Mutex<HashMap<String, ureq::Agent>>>,
    idle: usize,
}

impl fmt::Debug for HttpAgents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.agents.lock().map(|m| m.len()).unwrap_or(0);
        write!(f, "HttpAgents {{ agents: {n}, idle: {} }}", self.idle)
    }
}

impl HttpAgents {
    /// Agents that each keep up to `idle` keep-alive connections (in all
    /// and per host), for as many concurrent sends.
    pub fn new(idle: usize) -> HttpAgents {
        HttpAgents {
            agents: Arc::default(),
            idle: idle.max(1),
        }
    }

    fn get_or_build(&self, spec: &HttpSpec) -> Result<ureq::Agent, SendError> {
        let mut m = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = m.get(&spec.name) {
            return Ok(a.clone());
        }
        let a = build_agent(&spec.transport, Some(self.idle))?;
        m.insert(spec.name.clone(), a.clone());
        Ok(a)
    }
}

/// Sends through an HTTP API: the generic template or a vendor preset.
pub struct HttpProvider {
    spec: HttpSpec,
    agent: OnceLock<ureq::Agent>,
    shared: Option<HttpAgents>,
}

impl fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProvider")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl HttpProvider {
    /// A provider for `spec`; the HTTP agent is built at the first send.
    pub fn new(spec: HttpSpec) -> HttpProvider {
        HttpProvider {
            spec,
            agent: OnceLock::new(),
            shared: None,
        }
    }

    /// A provider that sends through the agent `agents` holds for its
    /// name (built by the first of them to send).
    pub fn shared(spec: HttpSpec, agents: &HttpAgents) -> HttpProvider {
        HttpProvider {
            shared: Some(agents.clone()),
            ..HttpProvider::new(spec)
        }
    }

    /// Built on first use (not for users who never get a code); a failure is
    /// not kept, so a fixed `ca_file` counts without a restart.
    fn agent(&self) -> Result<&ureq::Agent, SendError> {
        if let Some(a) = self.agent.get() {
            return Ok(a);
        }
        let a = match &self.shared {
            None => build_agent(&self.spec.transport, None)?,
            Some(agents) => agents.get_or_build(&self.spec)?,
        };
        Ok(self.agent.get_or_init(|| a))
    }
}

impl SmsProvider for HttpProvider {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn send(&self, sms: &Sms<'_>) -> Result<(), SendError> {
        self.send_tracked(sms).map(|_| ())
    }

    /// With a `status_callback`, the id the answer gives the message
    /// (Twilio's `sid`, or `status_id_pointer`): its callbacks name it.
    fn send_tracked(&self, sms: &Sms<'_>) -> Result<Option<String>, SendError> {
        let mut files = match &self.spec.gateway {
            Gateway::Template(t) => t.secrets.clone(),
            Gateway::Preset { preset, .. } => preset.secret_files(),
        };
        // `{status_callback}` carries the callback token in its query: read
        // it like a secret (and so redact it from errors).
        let token_in_url = match (&self.spec.gateway, &self.spec.status_callback) {
            (Gateway::Template(t), Some(cb)) if t.uses_status_callback() => match &cb.read {
                callback::CallbackRead::Fields(m) if m.token_header.is_none() => {
                    files.push((CALLBACK_TOKEN.to_owned(), cb.secret_file.clone()));
                    true
                }
                _ => false,
            },
            _ => false,
        };
        let secrets = read_secrets(&files)?;
        let callback_url = match (&self.spec.status_callback, token_in_url) {
            (None, _) => Zeroizing::new(String::new()),
            (Some(cb), false) => Zeroizing::new(cb.url.clone()),
            (Some(cb), true) => Zeroizing::new(format!(
                "{}{}{}={}",
                cb.url,
                if cb.url.contains('?') { '&' } else { '?' },
                callback::TOKEN_PARAM,
                percent_encode(secrets.get(CALLBACK_TOKEN).map_or("", Secret::expose))
            )),
        };
        let number = Zeroizing::new(self.spec.number_format.render(sms.to));
        let values = Values {
            number: &number,
            digits: sms.to.digits(),
            message: sms.text,
            secrets: &secrets,
            status_callback: &callback_url,
        };
        let req = match &self.spec.gateway {
            Gateway::Template(t) => t.build(&values).map_err(SendError::Misconfigured)?,
            Gateway::Preset { preset, base_url } => {
                let callback = self.spec.status_callback.as_ref().map(|c| c.url.as_str());
                preset.build(base_url, sms, &number, &secrets, callback)
            }
        };
        let mut auth: Vec<&str> = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Authorization"))
            .map(|(_, v)| v.as_str())
            .flat_map(|v| [v, v.split_once(' ').map_or(v, |(_, cred)| cred)])
            .collect();
        // user:password written into the gateway's or the proxy's URL.
        for url in [Some(req.url.as_str()), self.spec.transport.proxy.as_deref()]
            .into_iter()
            .flatten()
        {
            if let Some(info) = userinfo(url) {
                auth.push(info);
                auth.extend(info.split_once(':').map(|(_, password)| password));
            }
        }
        let red = Redactor::new(sms, &secrets, &auth);
        let agent = self.agent()?;
        let (status, body) =
            exchange(agent, &req).map_err(|e| transport_error(&e, &self.spec.transport, &red))?;
        let body = String::from_utf8_lossy(&body);
        match &self.spec.gateway {
            Gateway::Template(t) => t.judge(status, &body, &red),
            Gateway::Preset { preset, .. } => preset.judge(status, &body, &red),
        }?;
        Ok(self
            .spec
            .status_callback
            .as_ref()
            .and_then(|c| c.message_id(&body)))
    }
}

#[cfg(test)]
pub(crate) mod tests;
