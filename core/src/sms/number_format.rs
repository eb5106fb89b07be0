//! `number_format`: how a provider writes the recipient's number. Gateways
//! differ: with `+` (E.164), its digits without `+`, or the national form
//! for gateways that deliver only in their own country.
//!
//! Each provider kind says which formats its API takes and which is its
//! default (`check` refuses the others, saying why); SMPP writes an
//! international number as its digits with `dest_addr_ton` 1, and a
//! national one as the national significant number with `dest_addr_ton`
//! 2 (see `sms/smpp/config.rs`). A national number has no country code,
//! so the loader also requires `phone.allowed_countries` to name exactly
//! one country when a provider uses it: a number of another country
//! would otherwise reach a stranger there.

use std::ops::Range;

use toml::Spanned;

use crate::config::check::{Checker, ConfigError};
use crate::phone::Phone;

/// How a provider writes the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberFormat {
    /// `"e164"`: `+` and the digits, `+442079460018`.
    E164,
    /// `"digits"`: E.164 without `+`, `442079460018`.
    Digits,
    /// `"national"`: as dialled inside the country, digits only
    /// ([`Phone::national`], `02079460018`).
    National,
}

impl NumberFormat {
    /// Every format, as the config spells it.
    pub const ALL: [(&'static str, NumberFormat); 3] = [
        ("e164", NumberFormat::E164),
        ("digits", NumberFormat::Digits),
        ("national", NumberFormat::National),
    ];

    /// The config's word for it.
    pub fn word(self) -> &'static str {
        match self {
            NumberFormat::E164 => "e164",
            NumberFormat::Digits => "digits",
            NumberFormat::National => "national",
        }
    }

    /// `phone` written in this format.
    pub fn render(self, phone: &Phone) -> String {
        match self {
            NumberFormat::E164 => phone.e164().to_owned(),
            NumberFormat::Digits => phone.digits().to_owned(),
            NumberFormat::National => phone.national(),
        }
    }
}

/// What a provider kind allows: each format it takes, the default first,
/// and why it refuses the others.
pub(crate) struct Allowed<'a> {
    /// The formats its API takes; the first is the default.
    pub formats: &'a [NumberFormat],
    /// Why the others are refused: "Twilio's API takes only E.164
    /// numbers".
    pub why: &'a str,
}

/// Reads `number_format` of one provider table (`key` is the table's,
/// `provider[0]`).
pub(crate) fn check(
    c: &Checker<'_>,
    v: &Option<Spanned<String>>,
    key: &str,
    allowed: &Allowed<'_>,
) -> Result<NumberFormat, ConfigError> {
    let default = allowed
        .formats
        .first()
        .copied()
        .unwrap_or(NumberFormat::E164);
    let Some(s) = v else { return Ok(default) };
    let k = format!("{key}.number_format");
    let words = |fs: &[NumberFormat]| {
        fs.iter()
            .map(|f| format!("\"{}\"", f.word()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(f) = NumberFormat::ALL
        .iter()
        .find(|(w, _)| *w == s.get_ref().trim())
        .map(|(_, f)| *f)
    else {
        return Err(c.err(
            s.span(),
            &k,
            format!(
                "\"{}\" is not a number format; use {}",
                s.get_ref(),
                words(&NumberFormat::ALL.map(|(_, f)| f))
            ),
        ));
    };
    if !allowed.formats.contains(&f) {
        return Err(c.err(
            s.span(),
            &k,
            format!(
                "\"{}\" cannot be used here: {}; use {} (the default), or remove number_format",
                f.word(),
                allowed.why,
                words(allowed.formats)
            ),
        ));
    }
    Ok(f)
}

/// The config-wide rule for `national` (see the module doc): `Err` with
/// the message when `allowed_countries` is not exactly one country.
pub(crate) fn national_needs_one_country(
    c: &Checker<'_>,
    key: &str,
    span: Range<usize>,
    allowed_countries: usize,
) -> Result<(), ConfigError> {
    if allowed_countries == 1 {
        return Ok(());
    }
    Err(c.err(
        span,
        &format!("{key}.number_format"),
        format!(
            "\"national\" drops the country code, so phone.allowed_countries must name exactly \
             one country (it names {}): a code for a number of another country would reach \
             a stranger's phone; set phone.allowed_countries = [\"DE\"] (the gateway's \
             country), or use number_format = \"e164\"",
            if allowed_countries == 0 {
                "none: every country is allowed".to_owned()
            } else {
                allowed_countries.to_string()
            }
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_for_a_few_countries() {
        // (E.164, digits, national, national significant)
        for (e164, national, nsn) in [
            ("+442079460018", "02079460018", "2079460018"), // GB, trunk 0
            ("+12025550143", "2025550143", "2025550143"),   // US, no trunk
            ("+4915112345678", "015112345678", "15112345678"), // DE mobile
            ("+33612345678", "0612345678", "612345678"),    // FR mobile
            ("+390612345678", "0612345678", "0612345678"),  // IT: the 0 stays
            ("+79123456789", "89123456789", "9123456789"),  // RU, trunk 8
        ] {
            let p = Phone::parse(e164, None).unwrap();
            assert_eq!(NumberFormat::E164.render(&p), e164);
            assert_eq!(NumberFormat::Digits.render(&p), &e164[1..]);
            assert_eq!(NumberFormat::National.render(&p), national, "{e164}");
            assert_eq!(p.national_significant(), nsn, "{e164}");
        }
    }
}
