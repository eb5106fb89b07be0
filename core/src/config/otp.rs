//! `[otp]`: how codes look and live (length, alphabet, lifetime, tries,
//! resends) and the SMS text they are sent in ([`MessageTemplate`]).

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::check::{Checker, ConfigError};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOtp {
    length: Option<Spanned<i64>>,
    alphabet: Option<Spanned<String>>,
    ttl: Option<Spanned<String>>,
    max_attempts: Option<Spanned<i64>>,
    resend: Option<RawResend>,
    message: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResend {
    max: Option<Spanned<i64>>,
    cooldown: Option<Spanned<String>>,
}

/// Which characters a code is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    /// `0-9`.
    Digits,
    /// Upper-case letters and digits without look-alikes (no 0/O, 1/I/L).
    Alphanumeric,
}

/// `[otp]`, validated: what a code looks like, how long it lives and how
/// often a user may try or ask again.
#[derive(Debug, Clone)]
pub struct OtpSettings {
    /// Characters per code, 6 to 10 (default 6).
    pub length: usize,
    /// What the characters are drawn from (default digits).
    pub alphabet: Alphabet,
    /// How long a code can be used after it is sent, 30s to 10m (default 5m).
    pub ttl: Duration,
    /// Wrong answers allowed for one code before it is void, 1 to 10
    /// (default 3).
    pub max_attempts: NonZeroU32,
    /// New codes a user may ask for (an empty answer) in one login, 0 to 10
    /// (default 2).
    pub resend_max: u32,
    /// The least time between two sends in one login, 0 to 10m (default 30s).
    pub resend_cooldown: Duration,
    /// The SMS text, checked to contain `{code}`.
    pub message: MessageTemplate,
    /// Where `otp.message` stands in the file; `None` for the built-in
    /// text.
    pub message_at: Option<super::Location>,
    /// Whether the admin set `otp.message`: then it is the SMS of every
    /// language whose override file does not set `sms` (see
    /// [`crate::messages`]).
    pub message_set: bool,
    /// The key the stored code HMACs are made with: `otp.key_file`, or
    /// `otp.key` beside the store's database.
    pub key_file: PathBuf,
}

/// The SMS text with `{code}` and optional `{host}`, `{ttl}`, `{user}`, `{service}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageTemplate(String);

/// Values substituted into a [`MessageTemplate`].
pub struct MessageValues<'a> {
    /// The code itself: the rendered text is a secret.
    pub code: &'a str,
    /// This host's name, as the user knows it.
    pub host: &'a str,
    /// How long the code lives (`otp.ttl`), rendered for people ("5 minutes").
    pub ttl: Duration,
    /// The login name.
    pub user: &'a str,
    /// The PAM service (`sshd`, `sudo`) or `radius:NAME` of the client.
    pub service: &'a str,
}

const MESSAGE_PLACEHOLDERS: [&str; 5] = ["code", "host", "ttl", "user", "service"];

/// The shipped English SMS (`sms` of `core/messages/en.toml`).
const ENGLISH_SMS: &str = "{code} is your login code for {host}. It expires in {ttl}.";

impl MessageTemplate {
    /// The shipped English SMS text.
    pub fn english_default() -> MessageTemplate {
        MessageTemplate(ENGLISH_SMS.to_owned())
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks `text`: known placeholders, `{code}` present, at most 480
    /// bytes. `Err` says what is wrong and how to fix it.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut seen_code = false;
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                return Err("has a '{' without a closing '}'".into());
            };
            let name = &after[..close];
            if !MESSAGE_PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "unknown placeholder {{{name}}}; use {{code}}, {{host}}, {{ttl}}, {{user}} or {{service}}"
                ));
            }
            seen_code |= name == "code";
            rest = &after[close + 1..];
        }
        if !seen_code {
            return Err("must contain {code}, or the user never sees the code".into());
        }
        if text.len() > 480 {
            return Err("is longer than 480 bytes; keep the SMS short".into());
        }
        Ok(MessageTemplate(text.to_owned()))
    }

    /// The text with every placeholder filled in.
    pub fn render(&self, v: &MessageValues<'_>) -> zeroize::Zeroizing<String> {
        self.render_with_ttl(v, &human_duration(v.ttl))
    }

    /// [`MessageTemplate::render`] with `{ttl}` in `lang`'s words.
    pub fn render_in(
        &self,
        v: &MessageValues<'_>,
        lang: &crate::messages::Catalogue,
    ) -> zeroize::Zeroizing<String> {
        self.render_with_ttl(v, &lang.duration(v.ttl))
    }

    fn render_with_ttl(&self, v: &MessageValues<'_>, ttl: &str) -> zeroize::Zeroizing<String> {
        let mut out = zeroize::Zeroizing::new(String::with_capacity(self.0.len() + 32));
        let mut rest = self.0.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after.find('}').unwrap_or(after.len());
            match &after[..close] {
                "code" => out.push_str(v.code),
                "host" => out.push_str(v.host),
                "ttl" => out.push_str(ttl),
                "user" => out.push_str(v.user),
                "service" => out.push_str(v.service),
                other => {
                    out.push('{');
                    out.push_str(other);
                    out.push('}');
                }
            }
            rest = after.get(close + 1..).unwrap_or("");
        }
        out.push_str(rest);
        out
    }
}

/// "5 minutes", "90 seconds", "1 hour", "500 milliseconds" — for
/// messages to people.
pub fn human_duration(d: Duration) -> String {
    // Timeouts may be set below a second ("500ms"): not "0 seconds".
    if d.subsec_millis() != 0 {
        let ms = d.as_millis();
        return if ms == 1 {
            "1 millisecond".into()
        } else {
            format!("{ms} milliseconds")
        };
    }
    let s = d.as_secs();
    let (n, unit) = if s >= 3600 && s % 3600 == 0 {
        (s / 3600, "hour")
    } else if s >= 60 && s % 60 == 0 {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// Validates `[otp]`. The code key's path is returned apart
/// (`OtpSettings::key_file` is left empty): it defaults to the store's
/// directory, which the caller knows.
pub(super) fn validate(
    c: &Checker<'_>,
    o: &RawOtp,
) -> Result<(OtpSettings, Option<PathBuf>), ConfigError> {
    let length = c.int_in(&o.length, "otp.length", 6..=10, 6)? as usize;
    let alphabet = c.choice(
        &o.alphabet,
        "otp.alphabet",
        &[
            ("digits", Alphabet::Digits),
            ("alphanumeric", Alphabet::Alphanumeric),
        ],
        Alphabet::Digits,
    )?;
    let ttl = c.duration_in(
        &o.ttl,
        "otp.ttl",
        Duration::from_secs(30),
        Duration::from_secs(600),
        Duration::from_secs(300),
    )?;
    let max_attempts = c.int_in(&o.max_attempts, "otp.max_attempts", 1..=10, 3)? as u32;
    let resend = o.resend.as_ref();
    let resend_max = c.int_in(
        &resend.and_then(|r| r.max.clone()),
        "otp.resend.max",
        0..=10,
        2,
    )? as u32;
    let resend_cooldown = c.duration_in(
        &resend.and_then(|r| r.cooldown.clone()),
        "otp.resend.cooldown",
        Duration::ZERO,
        Duration::from_secs(600),
        Duration::from_secs(30),
    )?;
    let message = match &o.message {
        None => MessageTemplate::english_default(),
        Some(s) => {
            MessageTemplate::parse(s.get_ref()).map_err(|m| c.err(s.span(), "otp.message", m))?
        }
    };
    let key_file = match &o.key_file {
        None => None,
        Some(s) => Some(c.absolute(s.get_ref(), s.span(), "otp.key_file")?),
    };
    let otp = OtpSettings {
        length,
        alphabet,
        ttl,
        max_attempts: NonZeroU32::new(max_attempts).unwrap_or(NonZeroU32::MIN),
        resend_max,
        resend_cooldown,
        message,
        message_at: o
            .message
            .as_ref()
            .map(|s| super::Location::of(c.text, s.span().start)),
        message_set: o.message.is_some(),
        key_file: PathBuf::new(),
    };
    Ok((otp, key_file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{err_of, parse};

    #[test]
    fn code_length_outside_6_to_10_is_refused() {
        for bad in ["4", "5", "11"] {
            let e = err_of(&format!("[otp]\nlength = {bad}\n"));
            assert!(e.contains(":2:10: otp.length:"), "{e}");
            assert!(e.contains("from 6 to 10"), "{e}");
        }
        assert_eq!(parse("[otp]\nlength = 10\n").unwrap().otp.length, 10);
    }

    #[test]
    fn ttl_outside_30s_to_10m_is_refused() {
        for bad in ["\"10s\"", "\"11m\""] {
            let e = err_of(&format!("[otp]\nttl = {bad}\n"));
            assert!(e.contains("otp.ttl"), "{e}");
            assert!(e.contains("out of range"), "{e}");
        }
        assert_eq!(
            parse("[otp]\nttl = \"30s\"\n").unwrap().otp.ttl,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn message_template_is_checked_and_rendered() {
        let e = err_of("[otp]\nmessage = \"Your code\"\n");
        assert!(e.contains("must contain {code}"), "{e}");
        let e = err_of("[otp]\nmessage = \"{code} {nope}\"\n");
        assert!(e.contains("unknown placeholder {nope}"), "{e}");
        let c = parse("").unwrap();
        let text = c.otp.message.render(&MessageValues {
            code: "123456",
            host: "web1",
            ttl: Duration::from_secs(300),
            user: "alice",
            service: "sshd",
        });
        assert_eq!(
            &*text,
            "123456 is your login code for web1. It expires in 5 minutes."
        );
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(Duration::from_secs(60)), "1 minute");
        assert_eq!(human_duration(Duration::from_secs(90)), "90 seconds");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2 hours");
        assert_eq!(
            human_duration(Duration::from_millis(500)),
            "500 milliseconds"
        );
        assert_eq!(
            human_duration(Duration::from_millis(1500)),
            "1500 milliseconds"
        );
        assert_eq!(human_duration(Duration::from_millis(2000)), "2 seconds");
    }
}
