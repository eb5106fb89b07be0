//! `kind = "http"` and the vendor presets in the config: the request
//! template, the success rule and the transport, checked into an
//! [`HttpSpec`].

use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

use crate::config::check::{Checker, ConfigError};
use crate::sms::http::callback::{CallbackRead, FieldMap, StatusCallback};
use crate::sms::http::{
    self, BodyRule, BodySpec, ContentType, Gateway, HttpSpec, JsonTemplate, Method, Pattern,
    PlivoSender, Preset, Template, TemplateSpec, TransportSpec, TwilioSender,
};
use crate::sms::number_format::{self, Allowed, NumberFormat};
use crate::sms::raw::{timeouts, Fields};
use serde::de::IgnoredAny;
use serde::Deserialize;

/// The keys of `kind = "http"`, besides `kind` and the transport's.
pub(crate) const KEYS: [&str; 21] = [
    "name",
    "number_format",
    "url",
    "method",
    "content_type",
    "headers",
    "basic_auth",
    "body",
    "secret_file",
    "secrets",
    "success_status",
    "success_body",
    "allow_http",
    "status_callback",
    "status_id_pointer",
    "status_id_field",
    "status_field",
    "status_failure",
    "status_delivered",
    "status_token_file",
    "status_token_header",
];

/// The keys of `kind = "http"` that describe its status callbacks: each
/// needs `status_callback`.
const STATUS_KEYS: [&str; 7] = [
    "status_id_pointer",
    "status_id_field",
    "status_field",
    "status_failure",
    "status_delivered",
    "status_token_file",
    "status_token_header",
];

/// The keys every HTTP provider takes for its transport.
pub(crate) const TRANSPORT_KEYS: [&str; 4] = ["timeout", "connect_timeout", "ca_file", "proxy"];

/// The keys of a preset `kind`, besides `kind` and the transport's; `None`
/// for a kind that is no preset.
pub(crate) fn preset_keys(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "twilio" => &[
            "name",
            "number_format",
            "base_url",
            "account_sid",
            "auth_token_file",
            "from",
            "messaging_service_sid",
            "status_callback",
        ],
        "vonage" | "nexmo" => &[
            "name",
            "number_format",
            "base_url",
            "api_key",
            "api_secret_file",
            "from",
        ],
        "clickatell" => &["name", "number_format", "base_url", "api_key_file", "from"],
        "plivo" => &[
            "name",
            "number_format",
            "base_url",
            "auth_id",
            "auth_token_file",
            "from",
            "powerpack_uuid",
        ],
        "bulksms" => &[
            "name",
            "number_format",
            "base_url",
            "username",
            "password_file",
            "from",
        ],
        _ => return None,
    })
}

/// A `kind = "http"` table as read (`kind` and `name` are read by the
/// shared layer in `sms/raw.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    #[serde(rename = "kind")]
    _kind: IgnoredAny,
    #[serde(rename = "name")]
    _name: Option<IgnoredAny>,
    number_format: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    method: Option<Spanned<String>>,
    content_type: Option<Spanned<String>>,
    headers: Option<Spanned<toml::Table>>,
    basic_auth: Option<Spanned<RawBasicAuth>>,
    body: Option<Spanned<toml::Value>>,
    secret_file: Option<Spanned<String>>,
    secrets: Option<Spanned<toml::Table>>,
    success_status: Option<Spanned<Vec<Spanned<i64>>>>,
    success_body: Option<Spanned<RawSuccessBody>>,
    allow_http: Option<Spanned<bool>>,
    // Delivery status callbacks (callback.rs).
    status_callback: Option<Spanned<String>>,
    status_id_pointer: Option<Spanned<String>>,
    status_id_field: Option<Spanned<String>>,
    status_field: Option<Spanned<String>>,
    status_failure: Option<Spanned<Vec<String>>>,
    status_delivered: Option<Spanned<Vec<String>>>,
    status_token_file: Option<Spanned<String>>,
    status_token_header: Option<Spanned<String>>,
    // The transport (TRANSPORT_KEYS).
    timeout: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    proxy: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    username: String,
    password: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuccessBody {
    contains: Option<String>,
    regex: Option<String>,
    json_pointer: Option<String>,
    equals: Option<toml::Value>,
}

/// A preset table (`twilio`, `vonage`, …) as read: the keys of every
/// preset; the shared layer has refused those of another preset (by
/// [`preset_keys`]) before this struct reads the table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPreset {
    #[serde(rename = "kind")]
    _kind: IgnoredAny,
    #[serde(rename = "name")]
    _name: Option<IgnoredAny>,
    number_format: Option<Spanned<String>>,
    base_url: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    account_sid: Option<Spanned<String>>,
    auth_token_file: Option<Spanned<String>>,
    messaging_service_sid: Option<Spanned<String>>,
    api_key: Option<Spanned<String>>,
    api_secret_file: Option<Spanned<String>>,
    api_key_file: Option<Spanned<String>>,
    auth_id: Option<Spanned<String>>,
    powerpack_uuid: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    status_callback: Option<Spanned<String>>,
    // The transport (TRANSPORT_KEYS).
    timeout: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    proxy: Option<Spanned<String>>,
}

/// The transport keys of an HTTP table, whichever kind read it.
struct RawTransport<'a> {
    timeout: &'a Option<Spanned<String>>,
    connect_timeout: &'a Option<Spanned<String>>,
    ca_file: &'a Option<Spanned<String>>,
    proxy: &'a Option<Spanned<String>>,
}

/// Validates one `kind = "http"` table.
pub(crate) fn validate(table: &Fields<'_, RawHttp>, name: String) -> Result<HttpSpec, ConfigError> {
    let (c, key, r) = (table.c, table.key, table.raw());

    let allow_http = r.allow_http.as_ref().is_some_and(|b| *b.get_ref());
    let raw_transport = RawTransport {
        timeout: &r.timeout,
        connect_timeout: &r.connect_timeout,
        ca_file: &r.ca_file,
        proxy: &r.proxy,
    };
    let transport = transport_spec(c, key, &raw_transport, allow_http)?;
    let gateway = Gateway::Template(template_spec(c, key, r, table.span.clone(), allow_http)?);
    let number_format = number_format::check(
        c,
        &r.number_format,
        key,
        &Allowed {
            formats: &[
                NumberFormat::E164,
                NumberFormat::Digits,
                NumberFormat::National,
            ],
            why: "",
        },
    )?;
    let status_callback = generic_callback(table)?;
    Ok(HttpSpec {
        name,
        number_format,
        gateway,
        transport,
        status_callback,
    })
}

/// Validates one preset table (`twilio`, `vonage`, …).
pub(crate) fn validate_preset(
    table: &Fields<'_, RawPreset>,
    name: String,
) -> Result<HttpSpec, ConfigError> {
    let (c, key, r, kind) = (table.c, table.key, table.raw(), table.kind);
    let k = |field: &str| table.k(field);
    let raw_transport = RawTransport {
        timeout: &r.timeout,
        connect_timeout: &r.connect_timeout,
        ca_file: &r.ca_file,
        proxy: &r.proxy,
    };
    let transport = transport_spec(c, key, &raw_transport, false)?;
    let preset = match kind {
        "twilio" => Preset::Twilio {
            account_sid: table.text(
                &table.required(&r.account_sid, "account_sid", "\"AC…\" (from the Twilio console)")?,
                "account_sid",
            )?,
            auth_token_file: table.file(
                &table.required(
                    &r.auth_token_file,
                    "auth_token_file",
                    "\"/etc/smsotp/secrets/twilio\" (the Auth Token, mode 0600)",
                )?,
                "auth_token_file",
            )?,
            sender: match (&r.from, &r.messaging_service_sid) {
                (Some(f), None) => TwilioSender::From(table.text(f, "from")?),
                (None, Some(m)) => {
                    TwilioSender::MessagingService(table.text(m, "messaging_service_sid")?)
                }
                (Some(_), Some(m)) => {
                    return Err(c.err(
                        m.span(),
                        &k("messaging_service_sid"),
                        "set either from or messaging_service_sid, not both",
                    ))
                }
                (None, None) => {
                    return Err(c.err(
                        table.span.clone(),
                        &k("from"),
                        "is missing; kind \"twilio\" needs from = \"+1…\" (your Twilio number) \
                         or messaging_service_sid = \"MG…\"",
                    ))
                }
            },
        },
        "vonage" | "nexmo" => Preset::Vonage {
            api_key: table.text(
                &table.required(&r.api_key, "api_key", "\"…\" (from the Vonage dashboard)")?,
                "api_key",
            )?,
            api_secret_file: table.file(
                &table.required(
                    &r.api_secret_file,
                    "api_secret_file",
                    "\"/etc/smsotp/secrets/vonage\" (the API secret, mode 0600)",
                )?,
                "api_secret_file",
            )?,
            from: table.text(
                &table.required(&r.from, "from", "\"ACME\" or a number")?,
                "from",
            )?,
        },
        "clickatell" => Preset::Clickatell {
            api_key_file: table.file(
                &table.required(
                    &r.api_key_file,
                    "api_key_file",
                    "\"/etc/smsotp/secrets/clickatell\" (the API key, mode 0600)",
                )?,
                "api_key_file",
            )?,
            from: r.from.as_ref().map(|f| table.text(f, "from")).transpose()?,
        },
        "plivo" => Preset::Plivo {
            auth_id: table.text(
                &table.required(&r.auth_id, "auth_id", "\"MA…\" (from the Plivo console)")?,
                "auth_id",
            )?,
            auth_token_file: table.file(
                &table.required(
                    &r.auth_token_file,
                    "auth_token_file",
                    "\"/etc/smsotp/secrets/plivo\" (the Auth Token, mode 0600)",
                )?,
                "auth_token_file",
            )?,
            sender: match (&r.from, &r.powerpack_uuid) {
                (Some(f), None) => PlivoSender::Src(table.text(f, "from")?),
                (None, Some(u)) => PlivoSender::Powerpack(table.text(u, "powerpack_uuid")?),
                (Some(_), Some(u)) => {
                    return Err(c.err(
                        u.span(),
                        &k("powerpack_uuid"),
                        "set either from or powerpack_uuid, not both",
                    ))
                }
                (None, None) => {
                    return Err(c.err(
                        table.span.clone(),
                        &k("from"),
                        "is missing; kind \"plivo\" needs from = \"+1…\" (a Plivo number or sender ID) \
                         or powerpack_uuid = \"…\"",
                    ))
                }
            },
        },
        _ => Preset::Bulksms {
            username: table.text(
                &table.required(&r.username, "username", "\"…\" (or an API token id)")?,
                "username",
            )?,
            password_file: table.file(
                &table.required(
                    &r.password_file,
                    "password_file",
                    "\"/etc/smsotp/secrets/bulksms\" (password or token secret, mode 0600)",
                )?,
                "password_file",
            )?,
            from: r.from.as_ref().map(|f| table.text(f, "from")).transpose()?,
        },
    };
    let base_url = match &r.base_url {
        None => preset.default_base_url().to_owned(),
        Some(b) => {
            http::check_base(b.get_ref(), false, false)
                .map_err(|m| c.err(b.span(), &k("base_url"), m))?;
            b.get_ref().trim_end_matches('/').to_owned()
        }
    };
    let number_format = number_format::check(c, &r.number_format, key, &preset_formats(kind))?;
    let status_callback = match (&r.status_callback, &preset) {
        (None, _) => None,
        (
            Some(v),
            Preset::Twilio {
                auth_token_file, ..
            },
        ) => {
            let (url, path) = callback_url(c, &k("status_callback"), v)?;
            Some(StatusCallback {
                url,
                path,
                secret_file: auth_token_file.clone(),
                read: CallbackRead::Twilio,
            })
        }
        // preset_keys lets it through for twilio only.
        (Some(v), _) => {
            return Err(c.err(
                v.span(),
                &k("status_callback"),
                "is read for kind \"twilio\" and \"http\" only; remove it",
            ))
        }
    };
    Ok(HttpSpec {
        name,
        number_format,
        gateway: Gateway::Preset { preset, base_url },
        transport,
        status_callback,
    })
}

/// `status_callback`: an `https://` URL with a path; answers it as
/// written (the gateway is given it, Twilio signs it) and its path.
fn callback_url(
    c: &Checker<'_>,
    key: &str,
    v: &Spanned<String>,
) -> Result<(String, String), ConfigError> {
    let url = v.get_ref().trim();
    let how = "write the public https:// URL the gateway is to call, e.g. \
               \"https://sms.example.org/smsotp/receipt/twilio\", and have the reverse proxy \
               forward that path to receipts.listen";
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(c.err(v.span(), key, format!("must start with https://; {how}")));
    };
    let path_at = rest.find('/');
    let host = &rest[..path_at.unwrap_or(rest.len())];
    let path = path_at.map_or("", |i| &rest[i..]);
    let path = &path[..path.find('?').unwrap_or(path.len())];
    if host.is_empty()
        || host.contains('@')
        || url.contains('#')
        || url.chars().any(|ch| ch.is_whitespace() || ch.is_control())
    {
        return Err(c.err(
            v.span(),
            key,
            format!("is not a usable URL (no host, user info, a fragment or spaces); {how}"),
        ));
    }
    if path.len() < 2 {
        return Err(c.err(
            v.span(),
            key,
            format!("needs a path that names this provider, like /smsotp/receipt/NAME; {how}"),
        ));
    }
    Ok((url.to_owned(), path.to_owned()))
}

/// The status callback of a `kind = "http"` table, if it has one.
fn generic_callback(table: &Fields<'_, RawHttp>) -> Result<Option<StatusCallback>, ConfigError> {
    let (c, r) = (table.c, table.raw());
    let k = |field: &str| table.k(field);
    let Some(cb) = &r.status_callback else {
        let set = [
            r.status_id_pointer.as_ref().map(Spanned::span),
            r.status_id_field.as_ref().map(Spanned::span),
            r.status_field.as_ref().map(Spanned::span),
            r.status_failure.as_ref().map(Spanned::span),
            r.status_delivered.as_ref().map(Spanned::span),
            r.status_token_file.as_ref().map(Spanned::span),
            r.status_token_header.as_ref().map(Spanned::span),
        ];
        if let Some((field, Some(span))) = STATUS_KEYS.iter().zip(set).find(|(_, s)| s.is_some()) {
            return Err(c.err(
                span,
                &k(field),
                "describes status callbacks, which need status_callback = \"https://…\" \
                 (the URL the gateway calls); add it or remove this key",
            ));
        }
        return Ok(None);
    };
    let (url, path) = callback_url(c, &k("status_callback"), cb)?;
    let need = |v: &Option<Spanned<String>>, field: &str, hint: &str| {
        let v = table.required(v, field, hint).map_err(|_| {
            c.err(
                cb.span(),
                &k(field),
                format!("is missing; status_callback needs {field} = {hint}"),
            )
        })?;
        table.text(&v, field).map(|t| (t, v.span()))
    };
    let (id_pointer, span) = need(
        &r.status_id_pointer,
        "status_id_pointer",
        "\"/messages/0/id\" (where the send answer holds the message id)",
    )?;
    if !id_pointer.starts_with('/') {
        return Err(c.err(
            span,
            &k("status_id_pointer"),
            format!("{id_pointer:?} must be a JSON pointer starting with \"/\", like \"/messages/0/id\""),
        ));
    }
    let (id_field, _) = need(
        &r.status_id_field,
        "status_id_field",
        "\"id\" (the callback field naming the message)",
    )?;
    let (status_field, _) = need(
        &r.status_field,
        "status_field",
        "\"status\" (the callback field holding the status)",
    )?;
    let list = |v: &Option<Spanned<Vec<String>>>,
                field: &str|
     -> Result<Option<Vec<String>>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        let items: Vec<String> = v.get_ref().iter().map(|s| s.trim().to_owned()).collect();
        if items.is_empty() || items.iter().any(String::is_empty) {
            return Err(c.err(
                v.span(),
                &k(field),
                "must list one or more non-empty status values, e.g. [\"failed\", \"undelivered\"]",
            ));
        }
        Ok(Some(items))
    };
    let Some(failure) = list(&r.status_failure, "status_failure")? else {
        return Err(c.err(
            cb.span(),
            &k("status_failure"),
            "is missing; status_callback needs status_failure = [\"failed\", \"undelivered\"] \
             (the status values after which the code is sent through the next provider)",
        ));
    };
    let delivered = list(&r.status_delivered, "status_delivered")?
        .unwrap_or_else(|| vec!["delivered".to_owned()]);
    let Some(token_file) = &r.status_token_file else {
        return Err(c.err(
            cb.span(),
            &k("status_token_file"),
            "is missing; status_callback needs status_token_file = \"/etc/smsotp/secrets/NAME-callback\" \
             (a random token, mode 0600, that the gateway sends with each callback)",
        ));
    };
    let secret_file = table.file(token_file, "status_token_file")?;
    let token_header = match &r.status_token_header {
        None => None,
        Some(h) => {
            let name = h.get_ref().trim();
            if ureq::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(c.err(
                    h.span(),
                    &k("status_token_header"),
                    "is not a valid header name; write e.g. \"X-Callback-Token\"",
                ));
            }
            Some(name.to_owned())
        }
    };
    Ok(Some(StatusCallback {
        url,
        path,
        secret_file,
        read: CallbackRead::Fields(FieldMap {
            id_pointer,
            id_field,
            status_field,
            failure,
            delivered,
            token_header,
        }),
    }))
}

/// The number formats each vendor's API takes, its documented one first
/// (the default), and why it takes no other.
fn preset_formats(kind: &str) -> Allowed<'static> {
    use NumberFormat::{Digits, E164};
    match kind {
        "twilio" => Allowed {
            formats: &[E164],
            why: "Twilio's API takes the To number only in E.164, with '+'",
        },
        "vonage" | "nexmo" => Allowed {
            formats: &[Digits],
            why: "Vonage's SMS API takes the to number in international form without '+' or 00",
        },
        "clickatell" => Allowed {
            formats: &[Digits],
            why: "Clickatell's API takes numbers in international form without '+'",
        },
        "plivo" => Allowed {
            formats: &[Digits, E164],
            why: "Plivo's API takes the dst number in international form only",
        },
        _ => Allowed {
            formats: &[E164, Digits],
            why: "BulkSMS's API takes the to number in international form only",
        },
    }
}

/// Timeouts, extra CA and proxy of an HTTP provider.
fn transport_spec(
    c: &Checker<'_>,
    key: &str,
    r: &RawTransport<'_>,
    allow_http: bool,
) -> Result<TransportSpec, ConfigError> {
    let k = |field: &str| format!("{key}.{field}");
    let (timeout, connect_timeout) = timeouts(
        c,
        (r.timeout, r.connect_timeout),
        &k,
        (
            TransportSpec::DEFAULT_TIMEOUT,
            TransportSpec::DEFAULT_CONNECT_TIMEOUT,
        ),
        "exchange",
    )?;
    let ca_file = r
        .ca_file
        .as_ref()
        .map(|f| c.absolute(f.get_ref(), f.span(), &k("ca_file")))
        .transpose()?;
    let proxy = match r.proxy {
        None => None,
        Some(s) => {
            let v = s.get_ref().trim();
            let ok = (v.starts_with("http://") || v.starts_with("https://"))
                && ureq::Proxy::new(v).is_ok();
            if !ok {
                return Err(c.err(
                    s.span(),
                    &k("proxy"),
                    format!("\"{v}\" is not a proxy URL; write \"http://proxy.example:3128\" or \"https://…\""),
                ));
            }
            Some(v.to_owned())
        }
    };
    Ok(TransportSpec {
        ca_file,
        timeout,
        connect_timeout,
        proxy,
        allow_http,
    })
}

/// The request and success rule of `kind = "http"`.
fn template_spec(
    c: &Checker<'_>,
    key: &str,
    r: &RawHttp,
    span: Range<usize>,
    allow_http: bool,
) -> Result<TemplateSpec, ConfigError> {
    let k = |field: &str| format!("{key}.{field}");
    let tpl = |text: &str, span: Range<usize>, field: &str| {
        Template::parse(text).map_err(|m| c.err(span, &k(field), m))
    };
    // Every template with where it stands, for the placeholder checks below.
    let mut used: Vec<(String, Range<usize>, Template)> = Vec::new();

    let Some(url_s) = &r.url else {
        return Err(c.err(
            span,
            &k("url"),
            "is missing; kind \"http\" needs url = \"https://api.example.net/send?to={number}\"",
        ));
    };
    let url = tpl(url_s.get_ref(), url_s.span(), "url")?;
    http::check_url(&url, allow_http).map_err(|m| c.err(url_s.span(), &k("url"), m))?;
    used.push((k("url"), url_s.span(), url.clone()));

    let method = match &r.method {
        None => Method::Post,
        Some(m) => c.choice(
            &Some(Spanned::new(m.span(), m.get_ref().to_ascii_uppercase())),
            &k("method"),
            &[
                ("GET", Method::Get),
                ("POST", Method::Post),
                ("PUT", Method::Put),
            ],
            Method::Post,
        )?,
    };
    let content_type = r
        .content_type
        .as_ref()
        .map(|ct| {
            c.choice(
                &Some(ct.clone()),
                &k("content_type"),
                &[
                    ("form", ContentType::Form),
                    ("json", ContentType::Json),
                    ("raw", ContentType::Raw),
                ],
                ContentType::Form,
            )
        })
        .transpose()?;

    let mut headers = Vec::new();
    if let Some(h) = &r.headers {
        for (name, value) in h.get_ref() {
            let field = format!("headers.{name}");
            if ureq::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(c.err(h.span(), &k(&field), "is not a valid header name"));
            }
            let Some(v) = value.as_str() else {
                return Err(c.err(h.span(), &k(&field), "must be a string"));
            };
            let t = tpl(v, h.span(), &field)?;
            http::check_header(&t).map_err(|m| c.err(h.span(), &k(&field), m))?;
            used.push((k(&field), h.span(), t.clone()));
            headers.push((name.clone(), t));
        }
    }

    let basic_auth = match &r.basic_auth {
        None => None,
        Some(b) => {
            if headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("Authorization"))
            {
                return Err(c.err(
                    b.span(),
                    &k("basic_auth"),
                    "and headers.Authorization both set the Authorization header; keep one",
                ));
            }
            let user = tpl(&b.get_ref().username, b.span(), "basic_auth.username")?;
            let pass = tpl(&b.get_ref().password, b.span(), "basic_auth.password")?;
            for t in [&user, &pass] {
                if t.uses_sms_values() {
                    return Err(c.err(
                        b.span(),
                        &k("basic_auth"),
                        "may hold literal text and {secret} placeholders only",
                    ));
                }
                http::check_header(t).map_err(|m| c.err(b.span(), &k("basic_auth"), m))?;
            }
            used.push((k("basic_auth"), b.span(), user.clone()));
            used.push((k("basic_auth"), b.span(), pass.clone()));
            Some((user, pass))
        }
    };

    // Without content_type, a Content-Type header says how the body is
    // encoded (as in configs copied from elsewhere); the two must agree.
    let header_ct = r.headers.as_ref().and_then(|h| {
        let (name, v) = h
            .get_ref()
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Content-Type"))?;
        let v = v.as_str()?.to_ascii_lowercase();
        let ct = if v.contains("json") {
            ContentType::Json
        } else if v.contains("x-www-form-urlencoded") {
            ContentType::Form
        } else {
            ContentType::Raw
        };
        Some((name.clone(), ct, h.span()))
    });
    let content_type = match (content_type, &header_ct) {
        (Some(ct), Some((name, hct, span)))
            if ct != ContentType::Raw && *hct != ContentType::Raw && ct != *hct =>
        {
            return Err(c.err(
                span.clone(),
                &k(&format!("headers.{name}")),
                format!(
                    "says {} but content_type is \"{}\"; make them agree (or drop the header)",
                    if *hct == ContentType::Json {
                        "JSON"
                    } else {
                        "form"
                    },
                    if ct == ContentType::Json {
                        "json"
                    } else {
                        "form"
                    },
                ),
            ));
        }
        (Some(ct), _) => Some(ct),
        (None, Some((_, hct, _))) if r.body.is_some() => Some(*hct),
        (None, _) => None,
    };

    let body = match &r.body {
        None => {
            if let Some(ct) = &r.content_type {
                return Err(c.err(
                    ct.span(),
                    &k("content_type"),
                    "is set but there is no body; remove it or add body",
                ));
            }
            None
        }
        Some(b) => {
            if method == Method::Get {
                return Err(c.err(
                    b.span(),
                    &k("body"),
                    "a GET request sends no body; use method = \"POST\", or put the values in url",
                ));
            }
            let spec = match b.get_ref() {
                toml::Value::String(s) => {
                    let Some(ct) = content_type else {
                        return Err(c.err(
                            b.span(),
                            &k("body"),
                            "is a string: set content_type = \"form\", \"json\" or \"raw\" (or a Content-Type header) to say how it is encoded",
                        ));
                    };
                    let t = tpl(s, b.span(), "body")?;
                    http::check_text_body(&t, ct).map_err(|m| c.err(b.span(), &k("body"), m))?;
                    BodySpec::Text {
                        template: t,
                        content_type: ct,
                    }
                }
                toml::Value::Table(table) => match content_type.unwrap_or(ContentType::Form) {
                    ContentType::Form => {
                        let mut fields = Vec::new();
                        for (name, v) in table {
                            let field = format!("body.{name}");
                            let text = match v {
                                toml::Value::String(s) => s.clone(),
                                toml::Value::Integer(_) | toml::Value::Boolean(_) => v.to_string(),
                                _ => {
                                    return Err(c.err(
                                        b.span(),
                                        &k(&field),
                                        "a form field must be a string, a number or a boolean",
                                    ))
                                }
                            };
                            fields.push((name.clone(), tpl(&text, b.span(), &field)?));
                        }
                        BodySpec::Form(fields)
                    }
                    ContentType::Json => BodySpec::Json(
                        json_template(b.get_ref()).map_err(|m| c.err(b.span(), &k("body"), m))?,
                    ),
                    ContentType::Raw => {
                        return Err(c.err(
                            b.span(),
                            &k("body"),
                            "a table is sent as a form or as JSON; set content_type = \"form\" or \"json\", \
                             or write a raw body as a string",
                        ))
                    }
                },
                _ => {
                    return Err(c.err(
                        b.span(),
                        &k("body"),
                        "must be a string or a table",
                    ))
                }
            };
            for t in spec.templates() {
                used.push((k("body"), b.span(), t.clone()));
            }
            Some(spec)
        }
    };

    // Secrets: each one used is declared, each one declared is used.
    let mut secrets: Vec<(String, PathBuf, String, Range<usize>)> = Vec::new();
    if let Some(f) = &r.secret_file {
        secrets.push((
            String::new(),
            c.absolute(f.get_ref(), f.span(), &k("secret_file"))?,
            k("secret_file"),
            f.span(),
        ));
    }
    if let Some(t) = &r.secrets {
        for (name, v) in t.get_ref() {
            let field = format!("secrets.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
            {
                return Err(c.err(
                    t.span(),
                    &k(&field),
                    "a secret's name uses letters, digits, '_' or '-'",
                ));
            }
            let Some(path) = v.as_str() else {
                return Err(c.err(
                    t.span(),
                    &k(&field),
                    "must be the path of a file holding the secret",
                ));
            };
            secrets.push((
                name.clone(),
                c.absolute(path, t.span(), &k(&field))?,
                k(&field),
                t.span(),
            ));
        }
    }
    for (field, span, t) in &used {
        for name in t.secret_names() {
            if !secrets.iter().any(|(n, ..)| n == name) {
                let fix = if name.is_empty() {
                    "{secret} needs secret_file = \"/etc/smsotp/secrets/…\" (mode 0600)".to_owned()
                } else {
                    format!("{{secret:{name}}} needs secrets = {{ {name} = \"/etc/smsotp/secrets/…\" }}")
                };
                return Err(c.err(span.clone(), field, fix));
            }
        }
    }
    for (name, _, field, span) in &secrets {
        if !used
            .iter()
            .any(|(_, _, t)| t.secret_names().any(|n| n == name))
        {
            let ph = if name.is_empty() {
                "{secret}".to_owned()
            } else {
                format!("{{secret:{name}}}")
            };
            return Err(c.err(
                span.clone(),
                field,
                format!("is never used; put {ph} in url, headers or body, or remove it"),
            ));
        }
    }
    if r.status_callback.is_none() {
        if let Some((field, span, _)) = used.iter().find(|(_, _, t)| t.uses_status_callback()) {
            return Err(c.err(
                span.clone(),
                field,
                "uses {status_callback}, which needs status_callback = \"https://…\" \
                 (and the keys that read the callbacks); add it or remove the placeholder",
            ));
        }
    }
    let in_url_or_body = |f: &String| *f == k("url") || *f == k("body");
    if !used
        .iter()
        .any(|(f, _, t)| in_url_or_body(f) && t.uses_message())
    {
        return Err(c.err(
            url_s.span(),
            &k("url"),
            "{message} (or $ctx.msg) is in neither url nor body, so the SMS would have no text; add it",
        ));
    }
    if !used.iter().any(|(_, _, t)| t.uses_number()) {
        return Err(c.err(
            url_s.span(),
            &k("url"),
            "{number} (or {number_digits}, $ctx.num) is in none of url, headers and body; \
             add it where the gateway wants the recipient",
        ));
    }

    let success_status = match &r.success_status {
        None => vec![200, 201, 202],
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(c.err(
                    list.span(),
                    &k("success_status"),
                    "is empty; list the statuses that mean sent, e.g. [200, 201, 202]",
                ));
            }
            let mut v = Vec::new();
            for s in list.get_ref() {
                let n = *s.get_ref();
                if !(100..=599).contains(&n) {
                    return Err(c.err(
                        s.span(),
                        &k("success_status"),
                        format!("{n} is not an HTTP status; use numbers from 100 to 599"),
                    ));
                }
                v.push(n as u16);
            }
            v
        }
    };
    let success_body = r
        .success_body
        .as_ref()
        .map(|b| body_rule(b.get_ref()).map_err(|m| c.err(b.span(), &k("success_body"), m)))
        .transpose()?;

    Ok(TemplateSpec {
        url,
        method,
        headers,
        basic_auth,
        body,
        secrets: secrets.into_iter().map(|(n, p, ..)| (n, p)).collect(),
        success_status,
        success_body,
    })
}

/// A TOML value as a JSON body whose strings are templates.
fn json_template(v: &toml::Value) -> Result<JsonTemplate, String> {
    Ok(match v {
        toml::Value::String(s) => JsonTemplate::Str(Template::parse(s)?),
        toml::Value::Integer(i) => JsonTemplate::Number((*i).into()),
        toml::Value::Float(f) => {
            JsonTemplate::Number(serde_json::Number::from_f64(*f).ok_or("a number must be finite")?)
        }
        toml::Value::Boolean(b) => JsonTemplate::Bool(*b),
        toml::Value::Datetime(d) => JsonTemplate::Str(Template::parse(&d.to_string())?),
        toml::Value::Array(a) => {
            JsonTemplate::Array(a.iter().map(json_template).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(t) => JsonTemplate::Object(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), json_template(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

fn body_rule(b: &RawSuccessBody) -> Result<BodyRule, String> {
    let how = "write { contains = \"OK\" }, { regex = \"^OK\" } or { json_pointer = \"/status\", equals = \"0\" }";
    match (&b.contains, &b.regex, &b.json_pointer, &b.equals) {
        (Some(s), None, None, None) if !s.is_empty() => Ok(BodyRule::Contains(s.clone())),
        (None, Some(re), None, None) => regex::Regex::new(re)
            .map(|r| BodyRule::Regex(Pattern(r)))
            .map_err(|e| format!("regex does not compile: {e}")),
        (None, None, Some(ptr), Some(eq)) => {
            if !ptr.starts_with('/') {
                return Err(format!(
                    "json_pointer {ptr:?} must start with \"/\", like \"/messages/0/status\""
                ));
            }
            let equals = match eq {
                toml::Value::String(s) => serde_json::Value::from(s.clone()),
                toml::Value::Integer(i) => serde_json::Value::from(*i),
                toml::Value::Boolean(b) => serde_json::Value::from(*b),
                toml::Value::Float(f) => serde_json::Number::from_f64(*f)
                    .map(serde_json::Value::Number)
                    .ok_or("equals must be finite")?,
                _ => return Err("equals must be a string, a number or a boolean".into()),
            };
            Ok(BodyRule::JsonPointer {
                pointer: ptr.clone(),
                equals,
            })
        }
        (None, None, Some(_), None) => Err(format!("json_pointer needs equals; {how}")),
        _ => Err(format!("takes exactly one rule; {how}")),
    }
}

/// For [`crate::fuzzing::success_body`]: `rule` is the value of
/// `success_body` as written in the config (`{ contains = "OK" }`, …),
/// validated as the config does; then whether `body` passes it, and the
/// rule as the log describes it.
#[cfg(feature = "fuzzing")]
pub(crate) fn success_body(rule: &str, body: &str) -> Result<(bool, String), String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct One {
        success_body: RawSuccessBody,
    }
    let one: One = toml::from_str(&format!("success_body = {rule}")).map_err(|e| e.to_string())?;
    let rule = body_rule(&one.success_body)?;
    Ok((rule.matches(body), rule.describe()))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
