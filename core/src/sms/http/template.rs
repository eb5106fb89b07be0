//! Request templates: placeholders (`{number}`, `{message}`, `{secret:NAME}`,
//! and Gluu's `$ctx.num`/`$ctx.msg`), each escaped for where it stands, the
//! checks a template gets when the config is loaded, and the generic
//! provider's request and success rule.

use super::*;

// ---------------------------------------------------------------- templates

/// One piece of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    Lit(String),
    /// `{number}` or `$ctx.num`: in the provider's `number_format` (E.164
    /// with the plus unless set).
    Number,
    /// `{number_digits}`: E.164 without the plus.
    NumberDigits,
    /// `{message}` or `$ctx.msg`.
    Message,
    /// `{secret}` (name "") or `{secret:NAME}`.
    Secret(String),
    /// `{status_callback}`: the provider's `status_callback`, with
    /// `?token=…` when the token goes in the query.
    StatusCallback,
}

/// Text with placeholders: `{number}` (as `number_format` says; E.164
/// with `+` by default), `{number_digits}` (E.164 without `+`, whatever
/// `number_format` says), `{message}`, `{secret}` (from `secret_file`),
/// `{secret:NAME}` (from `secrets.NAME`) and `{status_callback}` (the
/// provider's `status_callback` URL, carrying the callback token when
/// it goes in the query). `$ctx.num` and `$ctx.msg`, as in
/// existing gateway configs, mean `{number}` and `{message}`. A `{` not
/// followed by a name and `}` is literal (JSON bodies are full of them);
/// `{{` is a literal `{` where a name follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub(super) Vec<Part>);

/// How a placeholder's value is written where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Escape {
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
pub(super) struct Values<'a> {
    pub(super) number: &'a str,
    pub(super) digits: &'a str,
    pub(super) message: &'a str,
    pub(super) secrets: &'a BTreeMap<String, Secret>,
    /// What `{status_callback}` stands for ("" without one).
    pub(super) status_callback: &'a str,
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
                        "status_callback" => Part::StatusCallback,
                        _ => match name.strip_prefix("secret:") {
                            Some(n) if valid_secret_name(n) => Part::Secret(n.to_owned()),
                            _ => {
                                return Err(format!(
                                    "unknown placeholder {{{name}}}; use {{number}}, {{number_digits}}, \
                                     {{message}}, {{secret}}, {{secret:NAME}} or {{status_callback}} \
                                     (write {{{{ for a literal {{)"
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

    pub(super) fn has(&self, want: impl Fn(&Part) -> bool) -> bool {
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

    /// Does it contain `{status_callback}`?
    pub fn uses_status_callback(&self) -> bool {
        self.has(|p| *p == Part::StatusCallback)
    }

    /// The secret names it uses ("" for `{secret}`).
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Part::Secret(n) => Some(n.as_str()),
            _ => None,
        })
    }

    /// The literal text before the first placeholder.
    pub(super) fn literal_prefix(&self) -> &str {
        match self.0.first() {
            Some(Part::Lit(s)) => s,
            _ => "",
        }
    }

    pub(super) fn render(&self, v: &Values<'_>, esc: Escape) -> Result<Zeroizing<String>, String> {
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
                Part::StatusCallback => v.status_callback,
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
    pub(super) fn sample(&self, esc: Escape) -> String {
        let mut secrets = BTreeMap::new();
        for n in self.secret_names() {
            secrets.insert(n.to_owned(), Secret::new("s3cret".to_owned()));
        }
        let v = Values {
            number: "+12025550143",
            digits: "12025550143",
            message: "123456 \"is\" your code",
            secrets: &secrets,
            status_callback: "https://sms.example.org/cb?token=s3cret",
        };
        self.render(&v, esc)
            .map(|s| s.to_string())
            .unwrap_or_default()
    }
}

pub(super) fn valid_secret_name(n: &str) -> bool {
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

impl TemplateSpec {
    pub(super) fn build(&self, v: &Values<'_>) -> Result<Outgoing, String> {
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

    pub(super) fn judge(&self, status: u16, body: &str, red: &Redactor) -> Result<(), SendError> {
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
