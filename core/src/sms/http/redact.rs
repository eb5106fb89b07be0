//! Secrets read for a send, and the redaction of everything a gateway could
//! echo back (secrets, the message, the number) before it reaches an error.

use super::*;

// ------------------------------------------------------------------ secrets

/// The `user:password` before the host of `url`, if it has one.
pub(super) fn userinfo(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest[..end].rsplit_once('@').map(|(info, _)| info)
}

/// `url` with any `user:password@` before its host shown as `***@`, for
/// what people read (`check-config`, `doctor`): credentials written into a
/// gateway or proxy URL are secrets too.
pub fn without_credentials(url: &str) -> String {
    let Some(i) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[i + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((_, host)) => format!("{}***@{host}{}", &url[..i + 3], &rest[end..]),
        None => url.to_owned(),
    }
}

pub use crate::secret::Secret;

/// Reads each `(name, path)` with [`files::read_secret`] (owner-only mode).
pub(super) fn read_secrets(
    list: &[(String, PathBuf)],
) -> Result<BTreeMap<String, Secret>, SendError> {
    let mut out = BTreeMap::new();
    for (name, path) in list {
        let value = files::read_secret(path).map_err(|e| match e {
            files::FileError::Read { .. } => SendError::Misconfigured(format!(
                "{e}; put the secret in that file (owner root, mode 0600)"
            )),
            other => SendError::Misconfigured(other.to_string()),
        })?;
        if value.expose().trim().is_empty() {
            return Err(SendError::Misconfigured(format!(
                "{}: is empty; put the secret in it",
                path.display()
            )));
        }
        out.insert(name.clone(), value);
    }
    Ok(out)
}

// ---------------------------------------------------------------- redaction

/// Replaces secrets and the message text (in the forms a gateway might echo
/// them) by `[redacted]`, and the number by its masked form.
pub(super) struct Redactor {
    pub(super) needles: Vec<(Zeroizing<String>, String)>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redactor([redacted])")
    }
}

impl Redactor {
    pub(super) fn new(
        sms: &Sms<'_>,
        secrets: &BTreeMap<String, Secret>,
        extra: &[&str],
    ) -> Redactor {
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
        // number_format = "national" sends this form.
        add(sms.to.national(), &masked);
        // Longest first, so a needle inside another is not half-replaced.
        needles.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
        Redactor { needles }
    }

    pub(super) fn clean(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (needle, with) in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), with);
            }
        }
        out
    }

    /// At most [`EXCERPT_CHARS`] of `body`, redacted, on one line.
    pub(super) fn excerpt(&self, body: &str) -> String {
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
