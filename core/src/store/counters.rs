//! What became of the SMS, counted per UTC day, provider and country, in
//! the store (so every host on a shared store adds to the same numbers):
//! sent, failed, refused or only monitored by each limit, delivery
//! receipts by state, and resends after a failed receipt.
//!
//! Backends keep [`KEEP_DAYS`] days: each write forgets (or, for Redis,
//! lets expire) older days, and a read of a day no longer kept answers
//! nothing even before it is gone. `smsotp status` and smsotp-radiusd's
//! `/metrics` read them ([`super::Store::counters`]); the engine writes
//! them ([`super::Store::count`]), and a counting error never fails a
//! login.

use std::fmt;

use super::limits::LimitKind;
use crate::clock::Millis;

/// Days kept, today included.
pub const KEEP_DAYS: i64 = 8;

/// The provider of a count no provider saw (a send refused by a limit).
pub const NO_PROVIDER: &str = "-";

/// The country of a number without a known region.
pub const NO_COUNTRY: &str = "--";

const DAY_MS: Millis = 86_400_000;

/// A UTC day, as days since 1970-01-01; shown as `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i64);

impl Day {
    /// The UTC day of `at` (ms since the epoch).
    pub fn of(at: Millis) -> Day {
        Day(at.div_euclid(DAY_MS))
    }

    /// The oldest day a store keeps when today is `self`.
    pub fn oldest_kept(self) -> Day {
        Day(self.0 - (KEEP_DAYS - 1))
    }

    /// Whether a store still holds `self`'s counts at `now`: one of the
    /// last [`KEEP_DAYS`] days, today included.
    pub fn kept_at(self, now: Millis) -> bool {
        let today = Day::of(now);
        self <= today && self >= today.oldest_kept()
    }

    /// When the day starts (ms since the epoch).
    pub fn start(self) -> Millis {
        self.0 * DAY_MS
    }

    /// When a store may forget the day: [`KEEP_DAYS`] days after it ended.
    pub fn forget_at(self) -> Millis {
        (self.0 + KEEP_DAYS) * DAY_MS
    }

    /// Reads `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Day> {
        let t = humantime::parse_rfc3339(&format!("{s}T00:00:00Z")).ok()?;
        let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        Some(Day((secs / 86_400) as i64))
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.0.max(0) as u64 * 86_400);
        let s = humantime::format_rfc3339_seconds(t).to_string();
        f.write_str(s.get(..10).unwrap_or(&s))
    }
}

/// What one counter counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counted {
    /// The provider took the SMS.
    Sent,
    /// The provider did not take it (the chain may have tried the next).
    Failed,
    /// An enforced limit refused the send (nothing was sent).
    Refused(LimitKind),
    /// A limit in monitor mode would have refused it (it was sent).
    Monitored(LimitKind),
    /// A delivery receipt of this state (`DELIVRD`, `UNDELIV`, …).
    Receipt(String),
    /// The code was sent again through this provider after a failed
    /// receipt.
    Resent,
}

impl Counted {
    /// The counter's name in the store: `sent`, `failed`, `resent`,
    /// `refused:<limit>`, `monitored:<limit>` (the `[limits]` key, as
    /// [`LimitKind::key`]), `receipt:<STATE>`.
    pub fn name(&self) -> String {
        match self {
            Counted::Sent => "sent".into(),
            Counted::Failed => "failed".into(),
            Counted::Resent => "resent".into(),
            Counted::Refused(k) => format!("refused:{}", k.key()),
            Counted::Monitored(k) => format!("monitored:{}", k.key()),
            Counted::Receipt(s) => format!("receipt:{s}"),
        }
    }

    /// Reads what [`Counted::name`] wrote; `None` for a name this build
    /// does not know (written by a newer one).
    pub fn parse(name: &str) -> Option<Counted> {
        match name {
            "sent" => return Some(Counted::Sent),
            "failed" => return Some(Counted::Failed),
            "resent" => return Some(Counted::Resent),
            _ => {}
        }
        let (what, rest) = name.split_once(':')?;
        match what {
            "refused" => LimitKind::from_key(rest).map(Counted::Refused),
            "monitored" => LimitKind::from_key(rest).map(Counted::Monitored),
            "receipt" if !rest.is_empty() => Some(Counted::Receipt(rest.to_owned())),
            _ => None,
        }
    }
}

/// One counter: what, through which provider, to which country.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    /// The provider's name (`[[provider]] name`), or [`NO_PROVIDER`].
    pub provider: String,
    /// The ISO region of the number ("NG"), or [`NO_COUNTRY`].
    pub country: String,
    /// What is counted.
    pub what: Counted,
}

impl CounterKey {
    /// `what` through `provider` to `country` (`None`: unknown region).
    pub fn new(provider: &str, country: Option<&str>, what: Counted) -> Self {
        CounterKey {
            provider: provider.to_owned(),
            country: country.unwrap_or(NO_COUNTRY).to_owned(),
            what,
        }
    }
}

/// A day's counters, as a store reads them: each key once, in key order.
pub type Counts = Vec<(CounterKey, u64)>;

/// Sorts `rows` and adds up any key that comes twice; drops zero counts.
pub fn tidy(mut rows: Counts) -> Counts {
    rows.sort();
    let mut out: Counts = Vec::with_capacity(rows.len());
    for (k, n) in rows {
        match out.last_mut() {
            Some((last, m)) if *last == k => *m += n,
            _ if n > 0 => out.push((k, n)),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_print_parse_and_roll_over_at_utc_midnight() {
        let d = Day::parse("2026-12-03").unwrap();
        assert_eq!(d.to_string(), "2026-12-03");
        assert_eq!(Day::of(d.start()), d);
        assert_eq!(Day::of(d.start() - 1), Day(d.0 - 1));
        assert!(Day::parse("2026-13-01").is_none());
        assert!(Day::parse("yesterday").is_none());
        assert!(d.kept_at(d.start()));
        assert!(Day(d.0 - 7).kept_at(d.start()));
        assert!(!Day(d.0 - 8).kept_at(d.start()));
        assert!(!Day(d.0 + 1).kept_at(d.start()));
    }

    #[test]
    fn names_round_trip() {
        for c in [
            Counted::Sent,
            Counted::Failed,
            Counted::Resent,
            Counted::Refused(LimitKind::PerCountry),
            Counted::Monitored(LimitKind::DailyBudget),
            Counted::Receipt("UNDELIV".into()),
        ] {
            assert_eq!(Counted::parse(&c.name()), Some(c));
        }
        assert_eq!(Counted::parse("refused:nonsense"), None);
        assert_eq!(Counted::parse("later"), None);
    }
}
