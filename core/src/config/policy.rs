//! `[policy]` (exemptions, `no_phone`, `provider_down`, opt-outs),
//! `[phone]` (regions) and `[limits]` (the SMS rates and the lockout).

use std::collections::BTreeSet;
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::check::{Checker, ConfigError};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    #[serde(default)]
    exempt_users: Vec<Spanned<String>>,
    #[serde(default)]
    exempt_groups: Vec<Spanned<String>>,
    no_phone: Option<Spanned<String>>,
    provider_down: Option<Spanned<String>>,
    user_opt_out: Option<bool>,
    mandatory: Option<bool>,
    backup_codes: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPhone {
    default_region: Option<Spanned<String>>,
    #[serde(default)]
    allowed_countries: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    sms_per_user: Option<Spanned<String>>,
    sms_global: Option<Spanned<String>>,
    lockout_after: Option<Spanned<i64>>,
    lockout: Option<Spanned<String>>,
}

/// What to do for a user with no phone number in any directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPhone {
    /// Refuse the login (the default: fail closed).
    Deny,
    /// Let the user in without a second factor (logged every time).
    Allow,
    /// Ask for a number at login, send a code to it, and register it once
    /// that code is entered (WSO2's CaptureAndUpdateMobileNumber).
    Enroll,
}

/// What to do when no provider could send the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderDown {
    /// Refuse the login (the default: fail closed).
    Deny,
    /// Let the user in without a second factor (logged loudly every time).
    Allow,
}

/// `[policy]`, validated: who needs a code, and what happens when none can
/// be sent.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    /// Users who log in without a code.
    pub exempt_users: BTreeSet<String>,
    /// Members of these groups (primary or supplementary) log in without a
    /// code.
    pub exempt_groups: BTreeSet<String>,
    /// A user without a number (default deny).
    pub no_phone: NoPhone,
    /// No provider could send (default deny).
    pub provider_down: ProviderDown,
    /// Admins may mark users as opted out (WSO2's SMSOTPEnableByUserClaim).
    /// Default false.
    pub user_opt_out: bool,
    /// Everyone not exempt must use the second factor, opt-outs or not
    /// (WSO2's SMSOTPMandatory). Default false; opt-outs only count when
    /// `user_opt_out` is true as well.
    pub mandatory: bool,
    /// Backup codes are accepted in place of the SMS code. Default true.
    pub backup_codes: bool,
}

impl PolicySettings {
    /// Are opt-outs recorded in the store honoured?
    pub fn opt_out_honoured(&self) -> bool {
        self.user_opt_out && !self.mandatory
    }
}

/// `[phone]`, validated: how numbers are read.
#[derive(Debug, Clone)]
pub struct PhoneSettings {
    /// The region a number without `+` is read in; `None`: such numbers are
    /// refused.
    pub default_region: Option<phonenumber::country::Id>,
    /// Empty: every country is allowed.
    pub allowed_countries: Vec<phonenumber::country::Id>,
}

/// At most `count` events in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// How many events the window holds, at least 1.
    pub count: NonZeroU32,
    /// The sliding window, 1s to 31 days.
    pub window: Duration,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.count,
            humantime::format_duration(self.window)
        )
    }
}

/// `[limits]`, validated: how many SMS may go out, and when a user is
/// locked out.
#[derive(Debug, Clone)]
pub struct Limits {
    /// SMS to one user (default 5 per hour).
    pub sms_per_user: Rate,
    /// SMS from this host (or this smsotp-radiusd) to anyone (default 1000
    /// per hour): a bound on cost if logins are abused.
    pub sms_global: Rate,
    /// Wrong codes in a row, over logins, that lock the user out, 1 to 1000
    /// (default 10).
    pub lockout_after: NonZeroU32,
    /// How long a lockout lasts, 1s to 7 days (default 15m); an admin can
    /// lift it with `smsotp user unlock`.
    pub lockout: Duration,
}

/// The checks that need this module's own types ([`Rate`], regions).
impl Checker<'_> {
    fn rate(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: Rate,
    ) -> Result<Rate, ConfigError> {
        let Some(s) = v else { return Ok(default) };
        parse_rate(s.get_ref()).map_err(|m| self.err(s.span(), key, m))
    }

    fn region(
        &self,
        s: &Spanned<String>,
        key: &str,
    ) -> Result<phonenumber::country::Id, ConfigError> {
        s.get_ref().to_ascii_uppercase().parse().map_err(|_| {
            self.err(
                s.span(),
                key,
                format!(
                    "\"{}\" is not a known region; use a two-letter ISO 3166 code such as \"US\" or \"DE\"",
                    s.get_ref()
                ),
            )
        })
    }
}

/// Parses "5/1h": at most 5 in any hour.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let bad =
        || format!("\"{text}\" is not a rate; write COUNT/WINDOW such as \"5/1h\" or \"1000/1d\"");
    let (count, window) = text.split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    let count = NonZeroU32::new(count).ok_or_else(bad)?;
    let window = humantime::parse_duration(window.trim()).map_err(|_| bad())?;
    if window < Duration::from_secs(1) || window > Duration::from_secs(31 * 86400) {
        return Err(format!("\"{text}\": the window must be from 1s to 31 days"));
    }
    Ok(Rate { count, window })
}

/// Validates `[policy]`.
pub(super) fn policy(c: &Checker<'_>, p: &RawPolicy) -> Result<PolicySettings, ConfigError> {
    Ok(PolicySettings {
        exempt_users: names(c, &p.exempt_users, "policy.exempt_users")?,
        exempt_groups: names(c, &p.exempt_groups, "policy.exempt_groups")?,
        no_phone: c.choice(
            &p.no_phone,
            "policy.no_phone",
            &[
                ("deny", NoPhone::Deny),
                ("allow", NoPhone::Allow),
                ("enroll", NoPhone::Enroll),
            ],
            NoPhone::Deny,
        )?,
        provider_down: c.choice(
            &p.provider_down,
            "policy.provider_down",
            &[("deny", ProviderDown::Deny), ("allow", ProviderDown::Allow)],
            ProviderDown::Deny,
        )?,
        user_opt_out: p.user_opt_out.unwrap_or(false),
        mandatory: p.mandatory.unwrap_or(false),
        backup_codes: p.backup_codes.unwrap_or(true),
    })
}

/// Validates `[phone]`.
pub(super) fn phone(c: &Checker<'_>, ph: &RawPhone) -> Result<PhoneSettings, ConfigError> {
    Ok(PhoneSettings {
        default_region: ph
            .default_region
            .as_ref()
            .map(|s| c.region(s, "phone.default_region"))
            .transpose()?,
        allowed_countries: ph
            .allowed_countries
            .iter()
            .map(|s| c.region(s, "phone.allowed_countries"))
            .collect::<Result<_, _>>()?,
    })
}

/// Validates `[limits]`.
pub(super) fn limits(c: &Checker<'_>, l: &RawLimits) -> Result<Limits, ConfigError> {
    Ok(Limits {
        sms_per_user: c.rate(
            &l.sms_per_user,
            "limits.sms_per_user",
            Rate {
                count: nz(5),
                window: Duration::from_secs(3600),
            },
        )?,
        sms_global: c.rate(
            &l.sms_global,
            "limits.sms_global",
            Rate {
                count: nz(1000),
                window: Duration::from_secs(3600),
            },
        )?,
        lockout_after: nz(c.int_in(&l.lockout_after, "limits.lockout_after", 1..=1000, 10)? as u32),
        lockout: c.duration_in(
            &l.lockout,
            "limits.lockout",
            Duration::from_secs(1),
            Duration::from_secs(7 * 86400),
            Duration::from_secs(900),
        )?,
    })
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

fn names(
    c: &Checker<'_>,
    list: &[Spanned<String>],
    key: &str,
) -> Result<BTreeSet<String>, ConfigError> {
    let mut out = BTreeSet::new();
    for s in list {
        let n = s.get_ref();
        if !super::check::plausible_name(n) {
            return Err(c.err(
                s.span(),
                key,
                format!("\"{n}\" is not a valid user or group name"),
            ));
        }
        out.insert(n.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{err_of, parse};

    #[test]
    fn bad_duration_says_how_to_write_one() {
        let e = err_of("[limits]\nlockout = \"fifteen\"\n");
        assert!(e.contains(":2:11: limits.lockout:"), "{e}");
        assert!(e.contains("\"5m\""), "{e}");
    }

    #[test]
    fn bad_rate_and_choice() {
        let e = err_of("[limits]\nsms_per_user = \"5 per hour\"\n");
        assert!(
            e.contains("limits.sms_per_user") && e.contains("COUNT/WINDOW"),
            "{e}"
        );
        let e = err_of("[policy]\nno_phone = \"maybe\"\n");
        assert!(
            e.contains("policy.no_phone") && e.contains("\"deny\", \"allow\""),
            "{e}"
        );
    }

    #[test]
    fn region_must_be_known() {
        let e = err_of("[phone]\ndefault_region = \"XX\"\n");
        assert!(e.contains("phone.default_region"), "{e}");
        let c = parse("[phone]\ndefault_region = \"de\"\nallowed_countries = [\"DE\", \"AT\"]\n")
            .unwrap();
        assert_eq!(c.phone.default_region, Some(phonenumber::country::Id::DE));
        assert_eq!(c.phone.allowed_countries.len(), 2);
    }
}
