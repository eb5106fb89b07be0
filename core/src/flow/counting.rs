//! What the engine counts in the store's SMS counters
//! ([`crate::store::counters`]), and the send-time hook a server's
//! metrics read.
//!
//! Counting is a side note to a login: a store that cannot take the
//! count gets an audit line at warning, and the login goes on as if it
//! had.

use std::sync::Arc;
use std::time::Duration;

use super::{Engine, LoginContext};
use crate::audit::Level;
use crate::phone::Phone;
use crate::sms::ChainOutcome;
use crate::store::counters::NO_PROVIDER;
use crate::store::{Counted, CounterKey, SendDecision};

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

    /// Adds one to each of `keys`; a failure is logged, never returned.
    pub(super) fn count(&self, ctx: &LoginContext, keys: &[CounterKey]) {
        if keys.is_empty() {
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
