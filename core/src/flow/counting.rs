//! What the engine counts in the store's SMS counters
//! ([`crate::store::counters`]), and the send-time hook a server's
//! metrics read.
//!
//! Counting is a side note to a login: a store that cannot take the
//! count gets an audit line at warning, and the login goes on as if it
//! had.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Engine, LoginContext};
use crate::audit::Level;
use crate::clock::Millis;
use crate::phone::Phone;
use crate::sms::ChainOutcome;
use crate::store::counters::NO_PROVIDER;
use crate::store::{Counted, CounterKey, Day, SendDecision, Store, StoreError};

/// Counts gathered in memory and written to the store together now and
/// then, for a server that makes many logins a second
/// (smsotp-radiusd writes them every second and when it stops): one
/// store write a second instead of one per SMS. The PAM module, one
/// login per process, writes each at once.
#[derive(Debug, Default)]
pub struct CountBatch {
    days: Mutex<Days>,
}

/// Per UTC day: the latest time counted in it, and each key's count.
type Days = BTreeMap<i64, (Millis, BTreeMap<CounterKey, u64>)>;

impl CountBatch {
    /// An empty batch.
    pub fn new() -> CountBatch {
        CountBatch::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Days> {
        self.days.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `n` to each of `counts`' keys on the day of `at`.
    pub fn add(&self, at: Millis, counts: impl IntoIterator<Item = (CounterKey, u64)>) {
        let mut days = self.lock();
        let (latest, keys) = days.entry(Day::of(at).0).or_default();
        *latest = (*latest).max(at);
        for (k, n) in counts {
            let c = keys.entry(k).or_default();
            *c = c.saturating_add(n);
        }
    }

    /// Whether nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Writes everything gathered to `store`, a day at a time; returns how
    /// many counts it wrote. A day the store did not take goes back into
    /// the batch (with what was counted meanwhile) for the next call.
    pub fn flush(&self, store: &dyn Store) -> Result<u64, StoreError> {
        let taken = std::mem::take(&mut *self.lock());
        let mut written = 0;
        let mut failed = None;
        for (day, (at, keys)) in taken {
            if failed.is_none() {
                let counts: Vec<(CounterKey, u64)> =
                    keys.iter().map(|(k, &n)| (k.clone(), n)).collect();
                match store.add_counts(at, &counts) {
                    Ok(()) => {
                        written += counts.iter().map(|(_, n)| n).sum::<u64>();
                        continue;
                    }
                    Err(e) => failed = Some(e),
                }
            }
            let mut days = self.lock();
            let (latest, now_keys) = days.entry(day).or_default();
            *latest = (*latest).max(at);
            for (k, n) in keys {
                let c = now_keys.entry(k).or_default();
                *c = c.saturating_add(n);
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }
}

/// Told how long each send through the provider chain took
/// (smsotp-radiusd's `/metrics`; the PAM module sets none).
pub trait SendObserver: Send + Sync {
    /// The chain took `took` and ended at `provider`: the one that took
    /// the SMS (`sent`), or the last that failed. A send that failed
    /// over is timed whole, under the provider that took it.
    fn send_took(&self, provider: &str, took: Duration, sent: bool);
}

/// The region of `phone` as the counters name it.
pub(super) fn country(phone: &Phone) -> Option<String> {
    phone.region().map(|r| r.as_ref().to_owned())
}

impl Engine {
    /// Lets this engine tell `observer` how long each send took.
    pub fn set_send_observer(&mut self, observer: Arc<dyn SendObserver>) {
        self.sends = Some(observer);
    }

    /// Lets this engine count into `batch` instead of writing each count
    /// to the store at once (see [`CountBatch`]).
    pub fn set_count_batch(&mut self, batch: Arc<CountBatch>) {
        self.count_batch = Some(batch);
    }

    /// Adds one to each of `keys`; a failure is logged, never returned.
    pub(super) fn count(&self, ctx: &LoginContext, keys: &[CounterKey]) {
        if keys.is_empty() {
            return;
        }
        if let Some(batch) = &self.count_batch {
            batch.add(self.now(), keys.iter().map(|k| (k.clone(), 1)));
            return;
        }
        if let Err(err) = self.store.count(self.now(), keys) {
            let mut e = self.event(ctx, "count_failed");
            e.detail = Some(format!(
                "the SMS counters were not updated ({}): {err}; the login goes on",
                keys.iter()
                    .map(|k| k.what.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            self.log(Level::Warning, &e);
        }
    }

    /// Counts what the store decided about an SMS to `phone`: the limit
    /// that refused it, and each monitored limit that would have.
    pub(super) fn count_decision(&self, ctx: &LoginContext, d: &SendDecision, phone: &Phone) {
        let country = country(phone);
        let key = |what| CounterKey::new(NO_PROVIDER, country.as_deref(), what);
        let mut keys: Vec<CounterKey> = d
            .monitored
            .iter()
            .map(|&k| key(Counted::Monitored(k)))
            .collect();
        keys.extend(d.refused.map(|k| key(Counted::Refused(k))));
        self.count(ctx, &keys);
    }

    /// Counts a send through the chain: each provider that failed, and
    /// the one that took it; tells the observer, if any, how long it took.
    pub(super) fn count_delivery(
        &self,
        ctx: &LoginContext,
        phone: &Phone,
        outcome: &ChainOutcome,
        took: Duration,
    ) {
        let country = country(phone);
        let key = |p: &str, what| CounterKey::new(p, country.as_deref(), what);
        let mut keys = Vec::new();
        let last = match outcome {
            ChainOutcome::Sent {
                provider,
                failed_over_from,
            } => {
                if let Some((from, _)) = failed_over_from {
                    keys.push(key(from, Counted::Failed));
                }
                keys.push(key(provider, Counted::Sent));
                Some((provider.as_str(), true))
            }
            ChainOutcome::Failed(errors) => {
                keys.extend(errors.iter().map(|(p, _)| key(p, Counted::Failed)));
                errors.last().map(|(p, _)| (p.as_str(), false))
            }
        };
        if let (Some(obs), Some((p, sent))) = (&self.sends, last) {
            obs.send_took(p, took, sent);
        }
        self.count(ctx, &keys);
    }

    /// Counts a resend after a failed receipt through `provider`: sent and
    /// resent if it took the SMS, failed if not.
    pub(super) fn count_receipt_resend(
        &self,
        ctx: &LoginContext,
        phone: &Phone,
        provider: &str,
        sent: bool,
    ) {
        let country = country(phone);
        let key = |what| CounterKey::new(provider, country.as_deref(), what);
        let keys = if sent {
            vec![key(Counted::Sent), key(Counted::Resent)]
        } else {
            vec![key(Counted::Failed)]
        };
        self.count(ctx, &keys);
    }
}
