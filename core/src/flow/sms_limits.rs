//! Which limits an SMS of a login counts against, and what a refusal
//! means for the login: the limit named to the user and in the log, and
//! the spend breaker's alert.

use std::time::Duration;

use super::{Engine, FlowError, Limit, LoginContext};
use crate::audit::Level;
use crate::clock::{ms, Millis};
use crate::phone::{MaskedPhone, Phone};
use crate::store::limits::{self, KeyedWindow, LimitKind, SendDecision, SendLimits};

impl Engine {
    /// Every limit an SMS to `phone` for this login counts against, in
    /// the order the store checks them: the user's window, the back-off,
    /// the global window, then those of the number, its country and the
    /// login's source address (each only if set; the source only if the
    /// front end knows one).
    pub(super) fn send_limits(&self, ctx: &LoginContext, phone: &Phone) -> SendLimits {
        let l = &self.cfg.limits;
        let mut s = SendLimits {
            per_user: l.sms_per_user,
            per_user_mode: l.mode(LimitKind::PerUser),
            backoff: l.backoff.map(|b| (b, l.mode(LimitKind::Backoff))),
            windows: vec![KeyedWindow::new(
                LimitKind::Global,
                "",
                l.sms_global,
                l.mode(LimitKind::Global),
            )],
        };
        if let Some(r) = l.sms_per_number {
            let mode = l.mode(LimitKind::PerNumber);
            s.windows.push(KeyedWindow::new(
                LimitKind::PerNumber,
                phone.e164(),
                r,
                mode,
            ));
        }
        if let Some(r) = l
            .sms_per_country
            .as_ref()
            .and_then(|c| c.rate_for(phone.region()))
        {
            let region = phone.region();
            let region = region.as_ref().map_or("none", |r| r.as_ref());
            let mode = l.mode(LimitKind::PerCountry);
            s.windows
                .push(KeyedWindow::new(LimitKind::PerCountry, region, r, mode));
        }
        if let Some(r) = l.sms_per_source {
            if let Some(src) = ctx.rhost.as_deref().and_then(limits::normalise_source) {
                let mode = l.mode(LimitKind::PerSource);
                s.windows
                    .push(KeyedWindow::new(LimitKind::PerSource, &src, r, mode));
            }
        }
        if let Some(b) = &l.daily_budget {
            s.windows.push(KeyedWindow::budget(
                b.rate(),
                b.cost_for(phone.region()),
                l.mode(LimitKind::DailyBudget),
            ));
        }
        s
    }

    /// The spend budget's window as the store knows it (what one SMS adds
    /// does not matter to a read or a reset), if `limits.daily_budget` is
    /// set.
    pub fn budget_window(&self) -> Option<KeyedWindow> {
        let l = &self.cfg.limits;
        l.daily_budget
            .as_ref()
            .map(|b| KeyedWindow::budget(b.rate(), 1000, l.mode(LimitKind::DailyBudget)))
    }

    /// The alert of a trip of the spend breaker: once per trip, to every
    /// sink at [`Level::Alert`] (syslog `LOG_ALERT`). The spend is read
    /// back from the store; if that read fails the alert goes out without
    /// it (the trip is recorded, and the login's refusal stands).
    pub(super) fn alert_trip(&self, ctx: &LoginContext, phone: &Phone, now: Millis) {
        let Some((w, b)) = self
            .budget_window()
            .zip(self.cfg.limits.daily_budget.as_ref())
        else {
            return;
        };
        let spent = match self.store.breaker(&w, now) {
            Ok(st) => {
                let until = st.trip.as_ref().map_or(now + ms(b.window), |t| t.until);
                let spent = st.trip.as_ref().map_or(st.spent, |t| t.spent);
                format!(
                    "spent {} of daily_budget = {b}; no SMS is sent until {}",
                    crate::config::units(spent),
                    crate::clock::rfc3339(until)
                )
            }
            Err(err) => format!("daily_budget = {b} spent (the spend could not be read: {err}); no SMS is sent for one window"),
        };
        let mut e = self.event(ctx, "breaker_tripped");
        e.phone = Some(MaskedPhone::of(phone));
        e.limit = Some(Limit::DailyBudget.key());
        e.detail = Some(format!(
            "{spent} or `smsotp breaker reset`; codes already sent still work"
        ));
        self.log(Level::Alert, &e);
    }

    /// What the store's `decision` means for this login: `None` if the SMS
    /// may go (after logging, at warning, each limit in monitor mode that
    /// would have refused it), else the reason it may not: which limit,
    /// and for the user's own limits how long until the next SMS.
    pub(super) fn limited(
        &self,
        ctx: &LoginContext,
        decision: &SendDecision,
        phone: &Phone,
        now: Millis,
    ) -> Result<Option<Limit>, FlowError> {
        if decision.tripped_now {
            self.alert_trip(ctx, phone, now);
        }
        self.count_decision(ctx, decision, phone);
        let Some(kind) = decision.refused else {
            for &k in &decision.monitored {
                let limit = self.limit_of(ctx, k, phone, decision, now)?;
                let mut e = self.event(ctx, "limit_monitor");
                e.phone = Some(MaskedPhone::of(phone));
                e.limit = Some(limit.key());
                let what = if k == LimitKind::DailyBudget {
                    "would have tripped the spend breaker"
                } else {
                    "would have refused the SMS"
                };
                e.detail = Some(format!(
                    "{what}: {}; sent, as limits.monitor lists {}",
                    self.limit_detail(limit),
                    limit.key()
                ));
                self.log(Level::Warning, &e);
            }
            return Ok(None);
        };
        Ok(Some(self.limit_of(ctx, kind, phone, decision, now)?))
    }

    /// The [`Limit`] of a limit kind, with what the user or the audit line
    /// is told about it.
    pub(super) fn limit_of(
        &self,
        ctx: &LoginContext,
        kind: LimitKind,
        phone: &Phone,
        decision: &SendDecision,
        now: Millis,
    ) -> Result<Limit, FlowError> {
        let wait_until = |at: Millis| Duration::from_millis((at.max(now) - now) as u64);
        Ok(match kind {
            LimitKind::Global => Limit::Global,
            LimitKind::PerNumber => Limit::PerNumber,
            LimitKind::PerCountry => Limit::PerCountry {
                region: phone.region(),
            },
            LimitKind::PerSource => Limit::PerSource,
            LimitKind::DailyBudget => Limit::DailyBudget,
            // A refusal says when; a monitored grant does not (zero).
            LimitKind::Backoff => Limit::Backoff {
                wait: wait_until(decision.retry_at.unwrap_or(now)),
            },
            LimitKind::PerUser => {
                let window = self
                    .store
                    .sms_window(&ctx.user, now, self.cfg.limits.sms_per_user)?;
                // A window that has just freed up (a send raced this one
                // out) still reads as a short wait, never as none.
                Limit::PerUser {
                    wait: wait_until(window.next_allowed_at.unwrap_or(now)),
                }
            }
        })
    }
}
