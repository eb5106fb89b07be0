//! Time, injected: the system clock in production, a fixed clock in tests,
//! so expiry, windows and lockouts are tested without sleeping.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Where the time comes from.
pub trait Clock {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> Millis;
}

/// The real time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as Millis)
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct FixedClock(Cell<Millis>);

impl FixedClock {
    /// A clock standing at `ms` milliseconds since the epoch.
    pub fn at(ms: Millis) -> Self {
        FixedClock(Cell::new(ms))
    }
    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.set(self.0.get() + d.as_millis() as Millis);
    }
}

impl Clock for FixedClock {
    fn now_ms(&self) -> Millis {
        self.0.get()
    }
}

/// Whole milliseconds of a duration, saturating.
pub fn ms(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

/// RFC 3339 UTC timestamp of `at`, for logs and the outbox.
pub fn rfc3339(at: Millis) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(at.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}
