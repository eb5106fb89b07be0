//! What one SMS is counted against, backend-neutral: the user's own
//! window (exact sends, which also feed the optional back-off) and any
//! number of keyed windows counted in buckets (the host's global window,
//! one per destination number, per destination country, per source
//! address). Every backend takes or refuses one SMS in all of them in one
//! atomic step ([`super::Store::reserve_sends`],
//! [`super::Store::start_challenge_with`]) and evaluates them in the order
//! [`SendLimits`] lists them, so all three answer alike. The spend
//! budget (`limits.daily_budget`) is one more [`KeyedWindow`], weighted
//! (each SMS adds its [`KeyedWindow::cost`]) and last; it carries a
//! breaker ([`BreakerTrip`]): the send that finds the budget spent trips
//! it (and alone is told so, [`SendDecision::tripped_now`]), and from then
//! on every send is refused until an admin resets it or its window has
//! passed since the trip.

use std::time::Duration;

use crate::clock::{ms, Millis};
use crate::config::Rate;

/// Which limit a window is, for the decision and the audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitKind {
    /// `limits.sms_per_user`.
    PerUser,
    /// `limits.backoff`: the growing wait between one user's sends.
    Backoff,
    /// `limits.sms_global`.
    Global,
    /// `limits.sms_per_number`.
    PerNumber,
    /// `limits.sms_per_country`.
    PerCountry,
    /// `limits.sms_per_source`.
    PerSource,
    /// `limits.daily_budget`: the spend breaker.
    DailyBudget,
}

impl LimitKind {
    /// The config key under `[limits]` (`limit=` in audit lines).
    pub fn key(self) -> &'static str {
        match self {
            LimitKind::PerUser => "sms_per_user",
            LimitKind::Backoff => "backoff",
            LimitKind::Global => "sms_global",
            LimitKind::PerNumber => "sms_per_number",
            LimitKind::PerCountry => "sms_per_country",
            LimitKind::PerSource => "sms_per_source",
            LimitKind::DailyBudget => "daily_budget",
        }
    }

    /// Every kind, in the order limits are checked.
    pub const ALL: [LimitKind; 7] = [
        LimitKind::PerUser,
        LimitKind::Backoff,
        LimitKind::Global,
        LimitKind::PerNumber,
        LimitKind::PerCountry,
        LimitKind::PerSource,
        LimitKind::DailyBudget,
    ];

    /// The kind whose [`LimitKind::key`] is `key`.
    pub fn from_key(key: &str) -> Option<LimitKind> {
        LimitKind::ALL.into_iter().find(|k| k.key() == key)
    }

    /// The prefix of a keyed window's name in the store (global has none).
    fn tag(self) -> &'static str {
        match self {
            LimitKind::PerNumber => "number:",
            LimitKind::PerCountry => "country:",
            LimitKind::PerSource => "source:",
            LimitKind::DailyBudget => "budget",
            LimitKind::PerUser | LimitKind::Backoff | LimitKind::Global => "",
        }
    }
}

/// Whether a full limit refuses the send or only says it would have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitMode {
    /// Refuse the send (the default).
    #[default]
    Enforce,
    /// Send anyway, count it, and log what would have been refused.
    Monitor,
}

impl LimitMode {
    /// As `mode =` writes it.
    pub fn word(self) -> &'static str {
        match self {
            LimitMode::Enforce => "enforce",
            LimitMode::Monitor => "monitor",
        }
    }
}

/// Auth0-style back-off: after the n-th SMS of a streak the next one
/// needs `first`·2^(n-1), at most `max`, since the last. A streak ends
/// after `2 × max` without a send to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first SMS of a streak.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// How long without a send ends a streak: twice the longest wait.
    pub fn reset_after(&self) -> Duration {
        self.max.saturating_mul(2)
    }

    /// The wait required after the `n`-th SMS of a streak (n ≥ 1).
    pub fn wait_after(&self, n: u32) -> Duration {
        let shift = n.saturating_sub(1);
        if shift >= 31 {
            return self.max;
        }
        self.first
            .checked_mul(1u32 << shift)
            .map_or(self.max, |w| w.min(self.max))
    }

    /// When the user's next SMS is allowed, given their sends (`(at,
    /// count)`, oldest first, at least the last `reset_after` of them);
    /// `None`: no streak, send now.
    pub fn next_allowed(&self, sends: &[(Millis, u32)], now: Millis) -> Option<Millis> {
        let reset = ms(self.reset_after());
        let &(last, _) = sends.last()?;
        if now - last >= reset {
            return None;
        }
        let mut n: u32 = 0;
        let mut next = last;
        for &(at, k) in sends.iter().rev() {
            if next - at >= reset {
                break;
            }
            n = n.saturating_add(k);
            next = at;
        }
        Some(last + ms(self.wait_after(n)))
    }
}

/// One bucketed window a send counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedWindow {
    /// Which limit it is.
    pub kind: LimitKind,
    /// Its name in the store: "" for the global window, "budget" for the
    /// spend budget, else the kind's tag and the number, region or source
    /// ("country:NG").
    pub name: String,
    /// How many in what window (for the budget: in the units of `cost`).
    pub rate: Rate,
    /// Enforce or monitor.
    pub mode: LimitMode,
    /// What this SMS adds to the window: 1 for a count, the SMS's cost in
    /// thousandths of a cost unit for a costed budget. A send is refused
    /// when the window's sum plus `cost` would pass `rate.count`.
    pub cost: u32,
}

impl KeyedWindow {
    /// The window of `kind` for `key` (a number, region or source).
    pub fn new(kind: LimitKind, key: &str, rate: Rate, mode: LimitMode) -> Self {
        KeyedWindow {
            kind,
            name: format!("{}{key}", kind.tag()),
            rate,
            mode,
            cost: 1,
        }
    }

    /// The spend budget's window: `budget` in the units of `cost` (what
    /// this SMS adds).
    pub fn budget(budget: Rate, cost: u32, mode: LimitMode) -> Self {
        KeyedWindow {
            cost,
            ..KeyedWindow::new(LimitKind::DailyBudget, "", budget, mode)
        }
    }

    /// Whether a window holding `n` has no room for this SMS.
    pub fn full(&self, n: u32) -> bool {
        u64::from(n) + u64::from(self.cost) > u64::from(self.rate.count.get())
    }

    /// The window of the breaker this window trips: the budget's own.
    pub fn is_breaker(&self) -> bool {
        self.kind == LimitKind::DailyBudget
    }

    /// The bucket length: 60 buckets per window, at least 1 s (as the
    /// global window always had).
    pub fn bucket_ms(&self) -> Millis {
        bucket_ms(self.rate.window)
    }
}

/// 60 buckets per window, at least 1 s each.
pub fn bucket_ms(window: Duration) -> Millis {
    (ms(window) / 60).max(1000)
}

/// A bucket of size `size` can be forgotten at `now` once it is older than
/// any window of that bucket size (a window is at most 61 buckets long).
pub fn bucket_stale(size: Millis, bucket: Millis, now: Millis) -> bool {
    (bucket + 1 + 61) * size <= now
}

/// Every limit one SMS is counted against, in the order they are checked:
/// the user's window, the back-off, then `windows` (global first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendLimits {
    /// `limits.sms_per_user`.
    pub per_user: Rate,
    /// Its mode.
    pub per_user_mode: LimitMode,
    /// `limits.backoff`, if set.
    pub backoff: Option<(Backoff, LimitMode)>,
    /// The bucketed windows, the global one first.
    pub windows: Vec<KeyedWindow>,
}

impl SendLimits {
    /// The user's and the global window, both enforced: what the store
    /// counted before there were more.
    pub fn user_and_global(per_user: Rate, global: Rate) -> Self {
        SendLimits {
            per_user,
            per_user_mode: LimitMode::Enforce,
            backoff: None,
            windows: vec![KeyedWindow::new(
                LimitKind::Global,
                "",
                global,
                LimitMode::Enforce,
            )],
        }
    }

    /// How long the user's own sends must be kept: the longest of their
    /// window and the back-off's streak.
    pub fn keep_user_sends(&self) -> Duration {
        let b = self
            .backoff
            .map_or(Duration::ZERO, |(b, _)| b.reset_after());
        self.per_user.window.max(b)
    }

    /// The longest window of all (what a sweep may forget before).
    pub fn longest(&self) -> Duration {
        self.windows
            .iter()
            .map(|w| w.rate.window)
            .fold(self.keep_user_sends(), Duration::max)
    }
}

/// What the store decided about one SMS.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendDecision {
    /// The enforced limit that refused it (nothing was counted), or
    /// `None`: it was counted in every window.
    pub refused: Option<LimitKind>,
    /// Granted only: the limits in monitor mode that would have refused
    /// it.
    pub monitored: Vec<LimitKind>,
    /// Refused by the back-off: when the user's next SMS is allowed.
    pub retry_at: Option<Millis>,
    /// Refused by the budget, and this send tripped the breaker: exactly
    /// one send per trip is told so (it raises the alert); refusals while
    /// it stays tripped are not.
    pub tripped_now: bool,
}

impl SendDecision {
    /// Granted, with nothing to report.
    pub fn granted() -> Self {
        SendDecision::default()
    }

    /// The old two-limit answer.
    pub fn permit(&self) -> super::SendPermit {
        match self.refused {
            None => super::SendPermit::Granted,
            Some(LimitKind::PerUser | LimitKind::Backoff) => super::SendPermit::UserLimit,
            Some(_) => super::SendPermit::GlobalLimit,
        }
    }
}

/// A trip of the spend breaker, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerTrip {
    /// When the send that found the budget spent came.
    pub at: Millis,
    /// When the breaker closes again by itself: the budget's window after
    /// the trip (by then nothing counted before the trip is in the
    /// window, and nothing was sent since).
    pub until: Millis,
    /// The user whose send tripped it.
    pub user: String,
    /// What the window held then (units of the budget).
    pub spent: u32,
}

/// The breaker as `smsotp status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BreakerState {
    /// The trip in force (`None`: closed, SMS go out).
    pub trip: Option<BreakerTrip>,
    /// What the budget's window holds now.
    pub spent: u32,
}

/// The one rule every backend applies to what it has read: `user_sends`
/// the user's sends (oldest first, within `keep_user_sends`), `counts` each
/// window's count in its window, in `limits.windows`' order, `tripped`
/// whether the budget's breaker is tripped (a trip in force at `now`).
/// Backends that evaluate in the store (Redis's Lua) follow the same
/// order. A tripped breaker refuses as a full budget does (not in monitor
/// mode, which never trips it); a full budget that is not yet tripped
/// refuses with [`SendDecision::tripped_now`], and the backend records
/// the trip in the same atomic step.
pub fn decide(
    limits: &SendLimits,
    user_sends: &[(Millis, u32)],
    counts: &[u32],
    tripped: bool,
    now: Millis,
) -> SendDecision {
    let mut monitored = Vec::new();
    let mut hit = |kind: LimitKind, mode: LimitMode| -> Option<SendDecision> {
        match mode {
            LimitMode::Enforce => Some(SendDecision {
                refused: Some(kind),
                ..SendDecision::default()
            }),
            LimitMode::Monitor => {
                monitored.push(kind);
                None
            }
        }
    };
    let since = now - ms(limits.per_user.window);
    let in_window: u32 = user_sends
        .iter()
        .filter(|&&(at, _)| at > since)
        .map(|&(_, n)| n)
        .sum();
    if in_window >= limits.per_user.count.get() {
        if let Some(d) = hit(LimitKind::PerUser, limits.per_user_mode) {
            return d;
        }
    }
    if let Some((b, mode)) = limits.backoff {
        if let Some(at) = b.next_allowed(user_sends, now).filter(|&t| t > now) {
            if let Some(d) = hit(LimitKind::Backoff, mode) {
                return SendDecision {
                    retry_at: Some(at),
                    ..d
                };
            }
        }
    }
    for (w, &n) in limits.windows.iter().zip(counts) {
        let breaker = w.is_breaker() && w.mode == LimitMode::Enforce;
        if breaker && tripped {
            return SendDecision {
                refused: Some(w.kind),
                ..SendDecision::default()
            };
        }
        if w.full(n) {
            if let Some(d) = hit(w.kind, w.mode) {
                return SendDecision {
                    tripped_now: breaker,
                    ..d
                };
            }
        }
    }
    SendDecision {
        refused: None,
        monitored,
        retry_at: None,
        tripped_now: false,
    }
}

/// Source addresses longer than this are cut (a window name, not a log).
pub const SOURCE_MAX: usize = 64;

/// The text a source address is counted under: an IP address in its
/// canonical form (an IPv4-mapped IPv6 address as IPv4, brackets and an
/// IPv6 zone dropped), anything else trimmed and lower-cased; at most
/// [`SOURCE_MAX`] bytes. `None` for an empty source: the limit does not
/// apply.
pub fn normalise_source(raw: &str) -> Option<String> {
    let t = raw.trim();
    let bare = t
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(t);
    let bare = bare.split_once('%').map_or(bare, |(a, _)| a);
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Some(ip.to_canonical().to_string());
    }
    let mut s: String = t
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .flat_map(char::to_lowercase)
        .collect();
    if s.is_empty() {
        return None;
    }
    if s.len() > SOURCE_MAX {
        let mut end = SOURCE_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn rate(n: u32, secs: u64) -> Rate {
        Rate {
            count: NonZeroU32::new(n).unwrap(),
            window: Duration::from_secs(secs),
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = Backoff {
            first: Duration::from_secs(60),
            max: Duration::from_secs(32 * 60),
        };
        let waits: Vec<u64> = (1..=8).map(|n| b.wait_after(n).as_secs() / 60).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 32, 32]);
        assert_eq!(b.wait_after(1000), b.max);
    }

    #[test]
    fn backoff_streak_and_its_reset() {
        let b = Backoff {
            first: Duration::from_secs(60),
            max: Duration::from_secs(4 * 60),
        };
        let m = 60_000;
        assert_eq!(b.next_allowed(&[], 0), None);
        // Sends at 0, 1m, 3m: the third of a streak, so 4m after 3m.
        let sends = [(0, 1), (m, 1), (3 * m, 1)];
        assert_eq!(b.next_allowed(&sends, 3 * m), Some(7 * m));
        // 2 × max (8m) after the last send the streak is over.
        assert_eq!(b.next_allowed(&sends, 11 * m), None);
        // A gap of 8m inside the history splits the streak.
        let sends = [(0, 1), (9 * m, 1)];
        assert_eq!(b.next_allowed(&sends, 9 * m), Some(10 * m));
    }

    #[test]
    fn decide_checks_in_order_and_monitor_passes() {
        let mut l = SendLimits::user_and_global(rate(2, 3600), rate(10, 3600));
        l.windows.push(KeyedWindow::new(
            LimitKind::PerCountry,
            "NG",
            rate(1, 86400),
            LimitMode::Monitor,
        ));
        let d = decide(&l, &[(1, 1)], &[0, 1], false, 5);
        assert_eq!(d.refused, None);
        assert_eq!(d.monitored, [LimitKind::PerCountry]);
        let d = decide(&l, &[(1, 2)], &[10, 1], false, 5);
        assert_eq!(d.refused, Some(LimitKind::PerUser));
        assert!(d.monitored.is_empty());
        let d = decide(&l, &[], &[10, 0], false, 5);
        assert_eq!(d.refused, Some(LimitKind::Global));
    }

    #[test]
    fn budget_weighs_each_send_and_trips_once() {
        let mut l = SendLimits::user_and_global(rate(100, 3600), rate(100, 3600));
        // 10.000 units a day; this SMS costs 8.500.
        l.windows.push(KeyedWindow::budget(
            rate(10_000, 86400),
            8_500,
            LimitMode::Enforce,
        ));
        assert_eq!(decide(&l, &[], &[0, 1_500], false, 5).refused, None);
        let d = decide(&l, &[], &[0, 1_501], false, 5);
        assert_eq!(d.refused, Some(LimitKind::DailyBudget));
        assert!(d.tripped_now);
        // Tripped: refused with room, and not "tripped now" again.
        let d = decide(&l, &[], &[0, 0], true, 5);
        assert_eq!(d.refused, Some(LimitKind::DailyBudget));
        assert!(!d.tripped_now);
        // Monitor mode neither trips nor honours a trip.
        l.windows[1].mode = LimitMode::Monitor;
        let d = decide(&l, &[], &[0, 9_000], true, 5);
        assert_eq!(d.refused, None);
        assert!(!d.tripped_now);
        assert_eq!(d.monitored, [LimitKind::DailyBudget]);
    }

    #[test]
    fn sources_are_normalised() {
        assert_eq!(normalise_source(" ::ffff:192.0.2.1 ").unwrap(), "192.0.2.1");
        assert_eq!(normalise_source("[2001:DB8::1]").unwrap(), "2001:db8::1");
        assert_eq!(normalise_source("fe80::1%eth0").unwrap(), "fe80::1");
        assert_eq!(normalise_source("AA-BB-CC 01").unwrap(), "aa-bb-cc01");
        assert_eq!(normalise_source("   "), None);
        assert_eq!(
            normalise_source(&"x".repeat(300)).unwrap().len(),
            SOURCE_MAX
        );
    }
}
