//! `[policy]` (exemptions, `no_phone`, `provider_down`, opt-outs),
//! `[phone]` (regions) and `[limits]` (the SMS rates and the lockout).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::check::{Checker, ConfigError, ConfigWarning};
use crate::store::limits::{Backoff, LimitKind, LimitMode};

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
    sms_per_number: Option<Spanned<String>>,
    sms_per_country: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    sms_per_source: Option<Spanned<String>>,
    backoff: Option<Spanned<RawBackoff>>,
    daily_budget: Option<Spanned<toml::Value>>,
    sms_cost: Option<Spanned<BTreeMap<String, Spanned<toml::Value>>>>,
    #[serde(default)]
    monitor: Vec<Spanned<String>>,
    lockout_after: Option<Spanned<i64>>,
    lockout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackoff {
    first: Option<Spanned<String>>,
    max: Option<Spanned<String>>,
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
    /// SMS to one destination number, whoever logs in (default: none).
    pub sms_per_number: Option<Rate>,
    /// SMS to one destination country, each its own window (default:
    /// none).
    pub sms_per_country: Option<CountryRates>,
    /// SMS for logins from one source address (PAM_RHOST, RADIUS
    /// Calling-Station-Id); logins without one are not counted (default:
    /// none).
    pub sms_per_source: Option<Rate>,
    /// The growing wait between one user's SMS (default: none).
    pub backoff: Option<Backoff>,
    /// The spend budget that trips the breaker (`limits.daily_budget`,
    /// weighed by `limits.sms_cost`; default: none).
    pub daily_budget: Option<Budget>,
    /// The limits that only log what they would refuse
    /// (`limits.monitor`).
    pub monitor: Vec<LimitKind>,
}

impl Limits {
    /// Whether `kind` refuses sends or only logs.
    pub fn mode(&self, kind: LimitKind) -> LimitMode {
        if self.monitor.contains(&kind) {
            LimitMode::Monitor
        } else {
            LimitMode::Enforce
        }
    }

    /// Every limit that is set, with its setting as people read it (for
    /// check-config and logs): (key, setting, mode).
    pub fn summary(&self) -> Vec<(&'static str, String, LimitMode)> {
        let mut v = vec![
            (LimitKind::PerUser, Some(self.sms_per_user.to_string())),
            (LimitKind::Global, Some(self.sms_global.to_string())),
            (
                LimitKind::PerNumber,
                self.sms_per_number.map(|r| r.to_string()),
            ),
            (
                LimitKind::PerCountry,
                self.sms_per_country.as_ref().map(CountryRates::to_string),
            ),
            (
                LimitKind::PerSource,
                self.sms_per_source.map(|r| r.to_string()),
            ),
            (
                LimitKind::Backoff,
                self.backoff.map(|b| {
                    format!(
                        "first {}, max {}",
                        humantime::format_duration(b.first),
                        humantime::format_duration(b.max)
                    )
                }),
            ),
            (
                LimitKind::DailyBudget,
                self.daily_budget.as_ref().map(Budget::to_string),
            ),
        ];
        v.retain(|(_, s)| s.is_some());
        v.into_iter()
            .filter_map(|(k, s)| s.map(|s| (k.key(), s, self.mode(k))))
            .collect()
    }
}

/// The largest budget, in units (SMS, or cost units): its thousandths
/// must fit the store's 32-bit counters.
pub const BUDGET_MAX: u32 = 4_000_000;

/// The largest cost of one SMS in `limits.sms_cost`.
pub const COST_MAX: u32 = 1000;

/// `limits.daily_budget` (with `limits.sms_cost`), validated. Amounts
/// are whole thousandths of a unit (of an SMS without a cost table), so
/// every backend adds integers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// The budget, in thousandths of a unit, per `window`.
    pub milli: NonZeroU32,
    /// The window (one day unless written as AMOUNT/WINDOW).
    pub window: Duration,
    /// `limits.sms_cost`; `None`: each SMS costs 1 (a count of SMS).
    pub costs: Option<SmsCosts>,
}

impl Budget {
    /// As the store counts it.
    pub fn rate(&self) -> Rate {
        Rate {
            count: self.milli,
            window: self.window,
        }
    }

    /// What one SMS to `region` adds, in thousandths.
    pub fn cost_for(&self, region: Option<phonenumber::country::Id>) -> u32 {
        self.costs.as_ref().map_or(1000, |c| c.cost_for(region))
    }

    /// The unit amounts are read in: "SMS" or "cost units".
    pub fn unit(&self) -> &'static str {
        if self.costs.is_some() {
            "cost units"
        } else {
            "SMS"
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} per {}",
            units(self.milli.get()),
            self.unit(),
            humantime::format_duration(self.window)
        )?;
        if let Some(c) = &self.costs {
            write!(f, " (sms_cost: {c})")?;
        }
        Ok(())
    }
}

/// `limits.sms_cost`: what one SMS costs, in thousandths, per destination
/// region, and for the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsCosts {
    /// Each listed region's cost.
    pub regions: Vec<(phonenumber::country::Id, u32)>,
    /// Every other region's (and a number without one): `default`, else
    /// 1.
    pub default: u32,
}

impl SmsCosts {
    /// What one SMS to `region` costs, in thousandths.
    pub fn cost_for(&self, region: Option<phonenumber::country::Id>) -> u32 {
        region
            .and_then(|r| self.regions.iter().find(|(id, _)| *id == r))
            .map_or(self.default, |&(_, c)| c)
    }
}

impl fmt::Display for SmsCosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "default {}", units(self.default))?;
        for (id, c) in &self.regions {
            write!(f, ", {} {}", id.as_ref(), units(*c))?;
        }
        Ok(())
    }
}

/// Thousandths as people write the amount: "250", "8.5", "0.04".
pub fn units(milli: u32) -> String {
    let (whole, frac) = (milli / 1000, milli % 1000);
    if frac == 0 {
        return whole.to_string();
    }
    let f = format!("{frac:03}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

/// A decimal amount with at most three decimals, in thousandths.
fn milli_of_text(t: &str) -> Option<u64> {
    let t = t.trim();
    let (w, f) = t.split_once('.').unwrap_or((t, ""));
    if w.is_empty() || !w.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if f.len() > 3 || !f.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = w.parse().ok()?;
    let frac: u64 = format!("{f:0<3}").parse().ok()?;
    whole.checked_mul(1000)?.checked_add(frac)
}

/// A TOML number (integer or float, at most three decimals) in
/// thousandths; `Err` names what is wrong.
fn milli_of_value(v: &toml::Value) -> Result<u64, &'static str> {
    match v {
        toml::Value::Integer(i) if *i > 0 => u64::try_from(*i)
            .ok()
            .and_then(|i| i.checked_mul(1000))
            .ok_or("is too large"),
        toml::Value::Float(x) if x.is_finite() && *x > 0.0 => {
            let m = (x * 1000.0).round();
            if (x * 1000.0 - m).abs() > 1e-6 {
                return Err("has more than three decimals");
            }
            if !(1.0..=1e15).contains(&m) {
                return Err("is out of range");
            }
            Ok(m as u64)
        }
        toml::Value::Integer(_) | toml::Value::Float(_) => Err("must be above 0"),
        _ => Err("is not a number"),
    }
}

/// `limits.sms_per_country`: a rate per region, and one for the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountryRates {
    /// Each listed region's rate.
    pub regions: Vec<(phonenumber::country::Id, Rate)>,
    /// The rate of every region not listed (and of numbers without one);
    /// `None`: those are not limited per country.
    pub default: Option<Rate>,
}

impl CountryRates {
    /// The rate for `region`, if any.
    pub fn rate_for(&self, region: Option<phonenumber::country::Id>) -> Option<Rate> {
        region
            .and_then(|r| self.regions.iter().find(|(id, _)| *id == r))
            .map(|&(_, rate)| rate)
            .or(self.default)
    }
}

impl fmt::Display for CountryRates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(d) = self.default {
            parts.push(format!("default {d}"));
        }
        for (id, r) in &self.regions {
            parts.push(format!("{} {r}", id.as_ref()));
        }
        f.write_str(&parts.join(", "))
    }
}

/// The checks that need this module's own types ([`Rate`], regions).
impl Checker<'_> {
    fn one_rate(&self, s: &Spanned<String>, key: &str) -> Result<Rate, ConfigError> {
        parse_rate(s.get_ref()).map_err(|m| self.err(s.span(), key, m))
    }

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

/// Validates `[limits]`; a limit `limits.monitor` lists but that is not
/// set is a warning.
pub(super) fn limits(
    c: &Checker<'_>,
    l: &RawLimits,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<Limits, ConfigError> {
    let limits = Limits {
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
        sms_per_number: l
            .sms_per_number
            .as_ref()
            .map(|s| c.one_rate(s, "limits.sms_per_number"))
            .transpose()?,
        sms_per_country: l
            .sms_per_country
            .as_ref()
            .map(|t| country_rates(c, t))
            .transpose()?,
        sms_per_source: l
            .sms_per_source
            .as_ref()
            .map(|s| c.one_rate(s, "limits.sms_per_source"))
            .transpose()?,
        backoff: l.backoff.as_ref().map(|b| backoff(c, b)).transpose()?,
        daily_budget: budget(c, l)?,
        monitor: monitor(c, l)?,
    };
    let set: Vec<&str> = limits.summary().iter().map(|(k, _, _)| *k).collect();
    for s in &l.monitor {
        if !set.contains(&s.get_ref().as_str()) {
            warnings.push(c.warning(
                s.span(),
                "limits.monitor",
                &format!(
                    "lists {0}, which is not set, so there is nothing to monitor; set \
                     limits.{0} or take it off the list",
                    s.get_ref()
                ),
            ));
        }
    }
    Ok(limits)
}

/// The names `limits.monitor` takes.
const MONITORABLE: [LimitKind; 7] = [
    LimitKind::PerUser,
    LimitKind::Global,
    LimitKind::PerNumber,
    LimitKind::PerCountry,
    LimitKind::PerSource,
    LimitKind::Backoff,
    LimitKind::DailyBudget,
];

fn monitor(c: &Checker<'_>, l: &RawLimits) -> Result<Vec<LimitKind>, ConfigError> {
    let mut out = Vec::new();
    for s in &l.monitor {
        let Some(k) = MONITORABLE.iter().find(|k| k.key() == s.get_ref()) else {
            let names: Vec<String> = MONITORABLE
                .iter()
                .map(|k| format!("\"{}\"", k.key()))
                .collect();
            return Err(c.err(
                s.span(),
                "limits.monitor",
                format!(
                    "\"{}\" is not a limit; list some of {}",
                    s.get_ref(),
                    names.join(", ")
                ),
            ));
        };
        if !out.contains(k) {
            out.push(*k);
        }
    }
    Ok(out)
}

fn country_rates(
    c: &Checker<'_>,
    t: &Spanned<BTreeMap<String, Spanned<String>>>,
) -> Result<CountryRates, ConfigError> {
    let key = "limits.sms_per_country";
    let mut out = CountryRates {
        regions: Vec::new(),
        default: None,
    };
    for (name, v) in t.get_ref() {
        let rate =
            parse_rate(v.get_ref()).map_err(|m| c.err(v.span(), &format!("{key}.{name}"), m))?;
        if name == "default" {
            out.default = Some(rate);
            continue;
        }
        let id = table_region(c, key, name, v.span(), &out.regions)?;
        out.regions.push((id, rate));
    }
    if out.default.is_none() && out.regions.is_empty() {
        return Err(c.err(
            t.span(),
            key,
            "the table is empty; set default = \"COUNT/WINDOW\" and a rate per region, \
             such as { default = \"500/1d\", NG = \"20/1d\" }",
        ));
    }
    Ok(out)
}

/// `limits.daily_budget` and `limits.sms_cost`.
fn budget(c: &Checker<'_>, l: &RawLimits) -> Result<Option<Budget>, ConfigError> {
    let costs = l.sms_cost.as_ref().map(|t| sms_costs(c, t)).transpose()?;
    let Some(v) = &l.daily_budget else {
        if let Some(t) = &l.sms_cost {
            return Err(c.err(
                t.span(),
                "limits.sms_cost",
                "weighs limits.daily_budget, which is not set; set daily_budget (cost units \
                 a day, such as 250.0) or take sms_cost out",
            ));
        }
        return Ok(None);
    };
    let key = "limits.daily_budget";
    let unit = if costs.is_some() {
        "cost units (limits.sms_cost is set)"
    } else {
        "SMS"
    };
    let bad = |why: &str| {
        c.err(
            v.span(),
            key,
            format!(
                "{why}; write the {unit} allowed per day, such as 1000 or 250.5, or \
                 AMOUNT/WINDOW such as \"1000/1d\", above 0 and at most {BUDGET_MAX}"
            ),
        )
    };
    let (milli, window) = match v.get_ref() {
        toml::Value::String(t) => {
            let (a, w) = t
                .split_once('/')
                .ok_or_else(|| bad(&format!("\"{t}\" is not a budget")))?;
            let milli = milli_of_text(a).ok_or_else(|| {
                bad(&format!(
                    "\"{t}\": the amount is not a number with at most three decimals"
                ))
            })?;
            let window = humantime::parse_duration(w.trim())
                .map_err(|_| bad(&format!("\"{t}\": the window is not a duration")))?;
            if window < Duration::from_secs(60) || window > Duration::from_secs(31 * 86400) {
                return Err(c.err(
                    v.span(),
                    key,
                    format!("\"{t}\": the window must be from 1m to 31 days, such as \"1d\""),
                ));
            }
            (milli, window)
        }
        other => (
            milli_of_value(other).map_err(|why| bad(&format!("{other} {why}")))?,
            Duration::from_secs(86400),
        ),
    };
    if milli == 0 || milli > u64::from(BUDGET_MAX) * 1000 {
        return Err(bad("the budget is out of range"));
    }
    if costs.is_none() && milli % 1000 != 0 {
        return Err(c.err(
            v.span(),
            key,
            "is not a whole number of SMS; without limits.sms_cost the budget counts SMS \
             (such as 1000); set limits.sms_cost to budget in cost units",
        ));
    }
    Ok(Some(Budget {
        milli: nz(u32::try_from(milli).unwrap_or(u32::MAX)),
        window,
        costs,
    }))
}

/// `limits.sms_cost`.
fn sms_costs(
    c: &Checker<'_>,
    t: &Spanned<BTreeMap<String, Spanned<toml::Value>>>,
) -> Result<SmsCosts, ConfigError> {
    let key = "limits.sms_cost";
    let mut out = SmsCosts {
        regions: Vec::new(),
        default: 1000,
    };
    for (name, v) in t.get_ref() {
        let cost = milli_of_value(v.get_ref())
            .ok()
            .filter(|&m| m <= u64::from(COST_MAX) * 1000)
            .ok_or_else(|| {
                c.err(
                    v.span(),
                    &format!("{key}.{name}"),
                    format!(
                        "{} is not a cost; write what one SMS costs as a number above 0 and \
                         at most {COST_MAX}, with at most three decimals, such as 8.5 or 0.04",
                        v.get_ref()
                    ),
                )
            })?;
        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
        if name == "default" {
            out.default = cost;
            continue;
        }
        let id = table_region(c, key, name, v.span(), &out.regions)?;
        out.regions.push((id, cost));
    }
    Ok(out)
}

/// The region a per-country table (`key`) names with `name`: a two-letter
/// ISO 3166 code in either case, not listed before (`taken`).
fn table_region<T>(
    c: &Checker<'_>,
    key: &str,
    name: &str,
    span: std::ops::Range<usize>,
    taken: &[(phonenumber::country::Id, T)],
) -> Result<phonenumber::country::Id, ConfigError> {
    let id: phonenumber::country::Id = name.to_ascii_uppercase().parse().map_err(|_| {
        c.err(
            span.clone(),
            key,
            format!(
                "\"{name}\" is not a known region; use \"default\" or a two-letter ISO 3166 \
                 code such as \"NG\" or \"DE\""
            ),
        )
    })?;
    if taken.iter().any(|(r, _)| *r == id) {
        return Err(c.err(
            span,
            key,
            format!("{} is listed twice; keep one", id.as_ref()),
        ));
    }
    Ok(id)
}

fn backoff(c: &Checker<'_>, b: &Spanned<RawBackoff>) -> Result<Backoff, ConfigError> {
    let Some(first) = &b.get_ref().first else {
        return Err(c.err(
            b.span(),
            "limits.backoff.first",
            "backoff needs the first wait; write backoff = { first = \"1m\", max = \"32m\" }",
        ));
    };
    let first = c.duration_in(
        &Some(first.clone()),
        "limits.backoff.first",
        Duration::from_secs(1),
        Duration::from_secs(3600),
        Duration::from_secs(60),
    )?;
    let default_max = first.saturating_mul(32).min(Duration::from_secs(86400));
    let max = c.duration_in(
        &b.get_ref().max,
        "limits.backoff.max",
        first,
        Duration::from_secs(86400),
        default_max,
    )?;
    Ok(Backoff { first, max })
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
#[path = "policy_tests.rs"]
mod tests;
