//! `[[directory]] kind = "ldap"`: the raw table, its validation and the
//! validated [`LdapSpec`].
//!
//! The `[[directory]]` tables are read as one tagged enum, which cannot
//! keep the position of each value, so errors here point at the table.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::conn::{LdapUrl, Scope};
use super::filter;
use crate::config::check::{Checker, ConfigError};
use crate::config::parse_duration;

/// The Active Directory preset's filter.
pub const AD_FILTER: &str = "(&(objectCategory=person)(objectClass=user)(sAMAccountName={user}))";

/// The table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLdap {
    name: Option<String>,
    preset: Option<String>,
    urls: Option<Vec<String>>,
    starttls: Option<bool>,
    ca_file: Option<String>,
    allow_plaintext: Option<bool>,
    bind_dn: Option<String>,
    bind_password_file: Option<String>,
    base: Option<String>,
    scope: Option<String>,
    filter: Option<String>,
    phone_attributes: Option<Vec<String>>,
    connect_timeout: Option<String>,
    timeout: Option<String>,
    on_unavailable: Option<String>,
    write_back: Option<bool>,
    cache_ttl: Option<String>,
    user_dn: Option<String>,
    language_attribute: Option<String>,
}

/// What to do when the directory cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Fail the login (closed): the default.
    Fail,
    /// Ask the next `[[directory]]`.
    Next,
}

/// A validated LDAP directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapSpec {
    /// For messages: `name`, or the first URL.
    pub name: String,
    /// Tried in order when one cannot be reached (at least one).
    pub urls: Vec<LdapUrl>,
    /// StartTLS on `ldap://` URLs.
    pub starttls: bool,
    /// Extra trust anchors (PEM), besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The service identity: DN and the root-only file holding its
    /// password; `None` binds anonymously.
    pub bind: Option<(String, PathBuf)>,
    /// The search base.
    pub base: String,
    /// The search scope.
    pub scope: Scope,
    /// The filter template with `{user}`, known to parse.
    pub filter: String,
    /// Tried in order; the first non-empty value is the number.
    pub phone_attributes: Vec<String>,
    /// Bound on connecting to each server.
    pub connect_timeout: Duration,
    /// Bound on each operation.
    pub timeout: Duration,
    /// Fail or ask the next directory when this one cannot be reached.
    pub on_unavailable: OnUnavailable,
    /// Write a number confirmed at enrollment to the first phone attribute.
    pub write_back: bool,
    /// How long a server keeps a looked-up number for when the directory
    /// cannot be reached (zero: no cache).
    pub cache_ttl: Duration,
    /// A DN template with `{user}` (escaped per RFC 4514), for binding as
    /// the user without a search.
    pub user_dn: Option<String>,
    /// The Active Directory preset: disabled accounts have no phone.
    pub active_directory: bool,
    /// Where the user's language is (default `preferredLanguage`);
    /// `None` when set to "".
    pub language_attribute: Option<String>,
}

fn duration(
    c: &Checker<'_>,
    span: std::ops::Range<usize>,
    v: &Option<String>,
    key: &str,
    min: Duration,
    max: Duration,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(s) = v else { return Ok(default) };
    let d = parse_duration(s).map_err(|m| c.err(span.clone(), key, m))?;
    if d < min || d > max {
        return Err(c.err(
            span,
            key,
            format!(
                "\"{s}\" is out of range; use a duration from {} to {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(d)
}

/// Validates one `[[directory]] kind = "ldap"` table; `key` is
/// `directory[i]`.
pub(crate) fn validate(
    c: &Checker<'_>,
    span: std::ops::Range<usize>,
    key: &str,
    raw: &RawLdap,
) -> Result<LdapSpec, ConfigError> {
    let err = |k: &str, m: String| c.err(span.clone(), &format!("{key}.{k}"), m);
    let ad = match raw.preset.as_deref() {
        None => false,
        Some("active_directory") => true,
        Some(p) => {
            return Err(err(
                "preset",
                format!("\"{p}\" is not a preset; the one preset is \"active_directory\""),
            ))
        }
    };
    let Some(url_texts) = raw.urls.as_ref().filter(|u| !u.is_empty()) else {
        return Err(err(
            "urls",
            "an LDAP directory needs at least one server: urls = [\"ldaps://dc1.example.org\"]"
                .into(),
        ));
    };
    let mut urls = Vec::new();
    for u in url_texts {
        urls.push(LdapUrl::parse(u).map_err(|m| err("urls", m))?);
    }
    let starttls = raw.starttls.unwrap_or(false);
    let allow_plaintext = raw.allow_plaintext.unwrap_or(false);
    if let Some(plain) = urls.iter().find(|u| !u.ldaps) {
        if !starttls && !allow_plaintext {
            return Err(err(
                "urls",
                format!(
                    "\"{}\" would send the bind password and numbers unencrypted; use ldaps://, or set starttls = true, or (on a trusted network only) allow_plaintext = true",
                    plain.text
                ),
            ));
        }
    }
    let ca_file = raw
        .ca_file
        .as_deref()
        .map(|p| c.absolute(p, span.clone(), &format!("{key}.ca_file")))
        .transpose()?;
    let bind = match (&raw.bind_dn, &raw.bind_password_file) {
        (None, None) => None,
        (Some(dn), Some(file)) if !dn.is_empty() => Some((
            dn.clone(),
            c.absolute(file, span.clone(), &format!("{key}.bind_password_file"))?,
        )),
        (Some(_), Some(_)) => {
            return Err(err(
                "bind_dn",
                "is empty; give the service account's DN, or leave out bind_dn and bind_password_file to bind anonymously".into(),
            ))
        }
        (Some(_), None) => {
            return Err(err(
                "bind_password_file",
                "bind_dn needs bind_password_file (a root-only file holding the password); or leave out bind_dn to bind anonymously".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(err(
                "bind_dn",
                "bind_password_file needs bind_dn (the DN to bind as); or leave out both to bind anonymously".into(),
            ))
        }
    };
    let Some(base) = raw.base.clone() else {
        return Err(err(
            "base",
            "an LDAP directory needs a search base, e.g. base = \"ou=people,dc=example,dc=org\""
                .into(),
        ));
    };
    let scope = match raw.scope.as_deref() {
        None | Some("sub") => Scope::Sub,
        Some("one") => Scope::One,
        Some("base") => Scope::Base,
        Some(s) => {
            return Err(err(
                "scope",
                format!("\"{s}\" is not allowed; use one of \"sub\", \"one\", \"base\""),
            ))
        }
    };
    let filter = raw
        .filter
        .clone()
        .unwrap_or_else(|| if ad { AD_FILTER } else { "(uid={user})" }.to_owned());
    if !filter.contains("{user}") {
        return Err(err(
            "filter",
            format!("\"{filter}\" does not hold {{user}}; write it like \"(uid={{user}})\""),
        ));
    }
    if let Err(e) = filter::user_filter(&filter, "user") {
        return Err(err(
            "filter",
            format!("\"{filter}\" is not an LDAP filter (RFC 4515): {e}"),
        ));
    }
    let phone_attributes = match &raw.phone_attributes {
        None if ad => vec!["mobile".to_owned(), "telephoneNumber".to_owned()],
        None => vec!["mobile".to_owned()],
        Some(v) if v.is_empty() => {
            return Err(err(
                "phone_attributes",
                "is empty; name at least one attribute, e.g. [\"mobile\"]".into(),
            ))
        }
        Some(v) => {
            if let Some(bad) = v.iter().find(|a| {
                a.is_empty()
                    || !a
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == ';')
            }) {
                return Err(err(
                    "phone_attributes",
                    format!("\"{bad}\" is not an attribute name (letters, digits, '-')"),
                ));
            }
            v.clone()
        }
    };
    let connect_timeout = duration(
        c,
        span.clone(),
        &raw.connect_timeout,
        &format!("{key}.connect_timeout"),
        Duration::from_millis(100),
        Duration::from_secs(60),
        Duration::from_secs(3),
    )?;
    let timeout = duration(
        c,
        span.clone(),
        &raw.timeout,
        &format!("{key}.timeout"),
        Duration::from_millis(100),
        Duration::from_secs(60),
        Duration::from_secs(5),
    )?;
    let cache_ttl = duration(
        c,
        span.clone(),
        &raw.cache_ttl,
        &format!("{key}.cache_ttl"),
        Duration::ZERO,
        Duration::from_secs(7 * 86400),
        Duration::from_secs(600),
    )?;
    let on_unavailable = match raw.on_unavailable.as_deref() {
        None | Some("fail") => OnUnavailable::Fail,
        Some("next") => OnUnavailable::Next,
        Some(s) => {
            return Err(err(
                "on_unavailable",
                format!("\"{s}\" is not allowed; use one of \"fail\", \"next\""),
            ))
        }
    };
    let write_back = raw.write_back.unwrap_or(false);
    if write_back && bind.is_none() {
        return Err(err(
            "write_back",
            "needs a bind identity allowed to write (bind_dn and bind_password_file); an anonymous bind cannot write".into(),
        ));
    }
    if let Some(t) = &raw.user_dn {
        if !t.contains("{user}") || !t.contains('=') {
            return Err(err(
                "user_dn",
                format!("\"{t}\" is not a DN template; write it like \"uid={{user}},ou=people,dc=example,dc=org\""),
            ));
        }
    }
    if let Some(n) = &raw.name {
        if n.is_empty() || n.chars().any(char::is_control) {
            return Err(err("name", "must be one line of text, not empty".into()));
        }
    }
    let language_attribute = match raw.language_attribute.as_deref() {
        None => Some("preferredLanguage".to_owned()),
        Some("") => None,
        Some(a) if a.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-') => {
            Some(a.to_owned())
        }
        Some(a) => {
            return Err(err(
                "language_attribute",
                format!(
                    "\"{a}\" is not an attribute name (letters, digits, '-'); \
                     write \"\" to read no language from the directory"
                ),
            ))
        }
    };
    Ok(LdapSpec {
        language_attribute,
        name: raw.name.clone().unwrap_or_else(|| urls[0].text.clone()),
        urls,
        starttls,
        ca_file,
        bind,
        base,
        scope,
        filter,
        phone_attributes,
        connect_timeout,
        timeout,
        on_unavailable,
        write_back,
        cache_ttl,
        user_dn: raw.user_dn.clone(),
        active_directory: ad,
    })
}
