//! The request of `kind = "http"` in the config (URL, method, headers,
//! body, secrets, placeholders) and its success rule, checked into a
//! [`TemplateSpec`]; [`super::config`] checks the rest of the table.

use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

use super::config::{RawHttp, RawSuccessBody};
use crate::config::check::{Checker, ConfigError};
use crate::sms::http::{
    self, BodyRule, BodySpec, ContentType, JsonTemplate, Method, Pattern, Template, TemplateSpec,
};

/// The request and success rule of `kind = "http"`.
pub(super) fn template_spec(
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

pub(super) fn body_rule(b: &RawSuccessBody) -> Result<BodyRule, String> {
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
