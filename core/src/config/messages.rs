//! `[messages]`: where the admin's message catalogues are, which
//! language a login gets when nothing names one, and whether the
//! number's country or the session's locale may name it (see
//! [`crate::messages`]).

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::check::{Checker, ConfigError};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMessages {
    dir: Option<Spanned<String>>,
    default_language: Option<Spanned<String>>,
    language: Option<Spanned<String>>,
    follow_locale: Option<bool>,
}

/// How a login's language is chosen after the user's own setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LanguageChoice {
    /// `messages.default_language` for everyone without a setting.
    Default,
    /// The language of the number's country, else the default.
    ByNumber,
}

/// `[messages]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSettings {
    /// Where `<lang>.toml` overrides and added languages are
    /// (default `/etc/smsotp/messages`).
    pub dir: PathBuf,
    /// The language of a login nothing else names (default "en").
    pub default_language: String,
    /// Whether the number's country may name the language.
    pub language: LanguageChoice,
    /// Whether the PAM module follows the session's LANG / LC_MESSAGES
    /// (after the user's own setting). Default false.
    pub follow_locale: bool,
}

impl Default for MessageSettings {
    fn default() -> Self {
        MessageSettings {
            dir: PathBuf::from("/etc/smsotp/messages"),
            default_language: crate::messages::ENGLISH.to_owned(),
            language: LanguageChoice::Default,
            follow_locale: false,
        }
    }
}

/// Validates `[messages]`. Whether `default_language` has a catalogue
/// is known only once `dir` is read ([`crate::messages::Messages::load`]).
pub(super) fn validate(c: &Checker<'_>, m: &RawMessages) -> Result<MessageSettings, ConfigError> {
    let d = MessageSettings::default();
    let dir = match &m.dir {
        None => d.dir,
        Some(s) => c.absolute(s.get_ref(), s.span(), "messages.dir")?,
    };
    let default_language = match &m.default_language {
        None => d.default_language,
        Some(s) => match crate::messages::normalize_tag(s.get_ref()) {
            Some(tag) if tag == *s.get_ref() => tag,
            _ => {
                return Err(c.err(
                    s.span(),
                    "messages.default_language",
                    format!(
                        "\"{}\" is not a language tag; write two or three lower-case letters \
                         such as \"de\" (shipped: en, de, fr, es, pt, it, nl)",
                        s.get_ref()
                    ),
                ))
            }
        },
    };
    let language = c.choice(
        &m.language,
        "messages.language",
        &[
            ("default", LanguageChoice::Default),
            ("by_number", LanguageChoice::ByNumber),
        ],
        LanguageChoice::Default,
    )?;
    Ok(MessageSettings {
        dir,
        default_language,
        language,
        follow_locale: m.follow_locale.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{err_of, parse};

    #[test]
    fn defaults_and_values() {
        let c = parse("").unwrap();
        assert_eq!(c.messages, MessageSettings::default());
        let c = parse(
            "[messages]\ndir = \"/srv/msg\"\ndefault_language = \"de\"\n\
             language = \"by_number\"\nfollow_locale = true\n",
        )
        .unwrap();
        assert_eq!(c.messages.dir, PathBuf::from("/srv/msg"));
        assert_eq!(c.messages.default_language, "de");
        assert_eq!(c.messages.language, LanguageChoice::ByNumber);
        assert!(c.messages.follow_locale);
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        let e = err_of("[messages]\ndefault_language = \"German\"\n");
        assert!(e.contains("messages.default_language"), "{e}");
        assert!(e.contains("two or three lower-case letters"), "{e}");
        let e = err_of("[messages]\nlanguage = \"phone\"\n");
        assert!(e.contains("messages.language"), "{e}");
        assert!(e.contains("by_number"), "{e}");
        let e = err_of("[messages]\ndir = \"relative\"\n");
        assert!(e.contains("messages.dir"), "{e}");
    }
}
