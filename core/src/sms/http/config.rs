//! `kind = "http"` and the vendor presets in the config: the request
//! template, the success rule and the transport, checked into an
//! [`HttpSpec`]. The request and the success rule of `kind = "http"` are
//! checked in `request_config.rs`.

use toml::Spanned;

use crate::config::check::{Checker, ConfigError};
use crate::sms::http::callback::{CallbackRead, FieldMap, StatusCallback};
use crate::sms::http::request_config::template_spec;
use crate::sms::http::{self, Gateway, HttpSpec, PlivoSender, Preset, TransportSpec, TwilioSender};
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
    pub(super) _kind: IgnoredAny,
    #[serde(rename = "name")]
    pub(super) _name: Option<IgnoredAny>,
    pub(super) number_format: Option<Spanned<String>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) method: Option<Spanned<String>>,
    pub(super) content_type: Option<Spanned<String>>,
    pub(super) headers: Option<Spanned<toml::Table>>,
    pub(super) basic_auth: Option<Spanned<RawBasicAuth>>,
    pub(super) body: Option<Spanned<toml::Value>>,
    pub(super) secret_file: Option<Spanned<String>>,
    pub(super) secrets: Option<Spanned<toml::Table>>,
    pub(super) success_status: Option<Spanned<Vec<Spanned<i64>>>>,
    pub(super) success_body: Option<Spanned<RawSuccessBody>>,
    pub(super) allow_http: Option<Spanned<bool>>,
    // Delivery status callbacks (callback.rs).
    pub(super) status_callback: Option<Spanned<String>>,
    pub(super) status_id_pointer: Option<Spanned<String>>,
    pub(super) status_id_field: Option<Spanned<String>>,
    pub(super) status_field: Option<Spanned<String>>,
    pub(super) status_failure: Option<Spanned<Vec<String>>>,
    pub(super) status_delivered: Option<Spanned<Vec<String>>>,
    pub(super) status_token_file: Option<Spanned<String>>,
    pub(super) status_token_header: Option<Spanned<String>>,
    // The transport (TRANSPORT_KEYS).
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) connect_timeout: Option<Spanned<String>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) proxy: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBasicAuth {
    pub(super) username: String,
    pub(super) password: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSuccessBody {
    pub(super) contains: Option<String>,
    pub(super) regex: Option<String>,
    pub(super) json_pointer: Option<String>,
    pub(super) equals: Option<toml::Value>,
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
    let rule = super::request_config::body_rule(&one.success_body)?;
    Ok((rule.matches(body), rule.describe()))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
