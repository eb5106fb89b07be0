//! toml's and serde's errors turned into ours: the key at fault (found in
//! the text, since serde does not name it), its line and column, a hint
//! from the key table, and the man page section.

use std::path::Path;

use super::check::{ConfigError, Location};
use super::keys;
use crate::files;

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

/// A syntax or schema error from toml/serde, with the key at fault, a hint
/// when one can be given (the nearest known key, another system's name for
/// one of ours, a number where a duration or rate belongs), and where the
/// key is documented.
pub(super) fn serde_error(path: &Path, text: &str, e: &toml_edit::de::Error) -> ConfigError {
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
    use crate::config::tests::err_of;

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

    #[test]
    fn syntax_error_has_a_location() {
        let e = err_of("[otp]\nlength = = 6\n");
        assert!(e.starts_with("/etc/smsotp/smsotp.toml:2:"), "{e}");
    }
}
