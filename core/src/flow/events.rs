//! The audit event that ends a login, and the one for an error.

use std::time::Duration;

use super::{Accept, Engine, FlowError, Limit, LoginContext, Reason, Reject, Skip, Verdict};
use crate::audit::Level;
use crate::phone::MaskedPhone;

impl Engine {
    /// Logs a final verdict and returns it. `phone` is the number the
    /// login's code went to, if any.
    pub(crate) fn finish(
        &self,
        ctx: &LoginContext,
        v: Verdict,
        phone: Option<MaskedPhone>,
    ) -> Verdict {
        let mut e = self.event(ctx, "");
        e.phone = phone;
        let level = match v {
            Verdict::Accept(Accept::CodeVerified) => {
                e.event = "accept";
                e.outcome = Some("success");
                e.reason = Some("code_verified");
                Level::Info
            }
            Verdict::Accept(Accept::NoPhoneAllowed) => {
                e.event = "fail_open";
                e.outcome = Some("success");
                e.reason = Some("no_phone");
                e.detail = Some("no_phone = \"allow\": let in without a second factor".into());
                Level::Warning
            }
            Verdict::Accept(Accept::BackupCode { left }) => {
                e.event = "accept";
                e.outcome = Some("success");
                e.reason = Some("backup_code");
                e.detail = Some(format!("backup codes left: {left}"));
                Level::Info
            }
            Verdict::Accept(Accept::Enrolled) => {
                e.event = "accept";
                e.outcome = Some("success");
                e.reason = Some("enrolled");
                e.detail = Some("code to the new number verified; number registered".into());
                Level::Info
            }
            Verdict::Accept(Accept::ProviderDownAllowed) => {
                e.event = "fail_open";
                e.outcome = Some("success");
                e.reason = Some("provider_down");
                e.detail = Some(
                    "provider_down = \"allow\": NO SMS COULD BE SENT; let in without a second factor"
                        .into(),
                );
                Level::Error
            }
            Verdict::Reject(r @ Reject::RateLimited(limit)) => {
                e.event = "reject";
                e.outcome = Some("failure");
                e.reason = Some(r.word());
                e.limit = Some(limit.key());
                e.detail = Some(self.limit_detail(limit));
                Level::Warning
            }
            Verdict::Reject(r) => {
                e.event = "reject";
                e.outcome = Some("failure");
                e.reason = Some(r.word());
                Level::Info
            }
            Verdict::NotApplicable(s) => {
                e.event = "skip";
                e.outcome = Some("not_applicable");
                e.reason = Some(match s {
                    Skip::ExemptUser => "exempt_user",
                    Skip::ExemptGroup => "exempt_group",
                    Skip::OptedOut => "opted_out",
                });
                Level::Info
            }
        };
        self.log(level, &e);
        v
    }

    /// What the audit line says of a limit that is reached: its key, the
    /// region for a per-country limit, its setting, and for a user's own
    /// limit the wait.
    pub(super) fn limit_detail(&self, limit: Limit) -> String {
        let limits = &self.cfg.limits;
        let wait = |w: Duration| {
            humantime::format_duration(Duration::from_secs(w.as_secs().max(1))).to_string()
        };
        let rate = |r: Option<crate::config::Rate>| r.map_or_else(String::new, |r| r.to_string());
        match limit {
            Limit::PerUser { wait: w } => format!(
                "sms_per_user = {} reached; next SMS allowed in {}",
                limits.sms_per_user,
                wait(w)
            ),
            Limit::Global => format!("sms_global = {} reached", limits.sms_global),
            Limit::Backoff { wait: w } => {
                let (first, max) = limits.backoff.map_or_else(Default::default, |b| {
                    (
                        humantime::format_duration(b.first).to_string(),
                        humantime::format_duration(b.max).to_string(),
                    )
                });
                // Monitored, a grant: no wait was computed.
                if w.is_zero() {
                    format!("backoff reached (first {first}, max {max})")
                } else {
                    format!(
                        "backoff reached (first {first}, max {max}); next SMS allowed in {}",
                        wait(w)
                    )
                }
            }
            Limit::PerNumber => format!("sms_per_number = {} reached", rate(limits.sms_per_number)),
            Limit::PerCountry { region } => format!(
                "sms_per_country region={} = {} reached",
                region.as_ref().map_or("none", |r| r.as_ref()),
                rate(
                    limits
                        .sms_per_country
                        .as_ref()
                        .and_then(|c| c.rate_for(region))
                )
            ),
            Limit::PerSource => format!("sms_per_source = {} reached", rate(limits.sms_per_source)),
            Limit::DailyBudget => format!(
                "daily_budget = {} spent",
                limits
                    .daily_budget
                    .as_ref()
                    .map_or_else(String::new, |b| b.to_string())
            ),
        }
    }

    /// The first factor a front end checked itself (a RADIUS server's
    /// password check): whether it passed. A wrong password is logged as a
    /// reject and one that could not be checked as an error; the user is
    /// told neither, so the answer never hints whether the account exists.
    /// The error's text goes into the event's detail.
    pub fn first_factor<E: std::error::Error>(
        &self,
        ctx: &LoginContext,
        checked: Result<bool, E>,
    ) -> bool {
        match checked {
            Ok(true) => true,
            Ok(false) => {
                let mut e = self.event(ctx, "reject");
                e.outcome = Some("failure");
                e.reason = Some("bad_password");
                self.log(Level::Info, &e);
                false
            }
            Err(err) => {
                let mut e = self.event(ctx, "error");
                e.outcome = Some("failure");
                e.detail = Some(err.to_string());
                self.log(Level::Error, &e);
                false
            }
        }
    }

    /// An answer naming a challenge id that could never be one of ours (a
    /// RADIUS State of the wrong size): logged as an unknown challenge.
    pub fn reject_malformed_challenge(&self, ctx: &LoginContext) {
        self.finish(ctx, Verdict::Reject(Reject::UnknownChallenge), None);
    }

    /// A retry on a PAM handle whose code round already failed: refused
    /// without sending anything.
    pub fn log_round_over(&self, ctx: &LoginContext) {
        let mut e = self.event(ctx, "retry_refused");
        e.outcome = Some("failure");
        e.reason = Some("code_round_failed");
        e.detail =
            Some("pam_authenticate again on a handle whose code round failed; no SMS sent".into());
        self.log(Level::Info, &e);
    }

    /// Logs an error that ends a login (the front end fails closed).
    pub fn log_error(&self, ctx: &LoginContext, err: &FlowError) {
        let mut e = self.event(ctx, "error");
        e.outcome = Some("failure");
        e.detail = Some(err.to_string());
        self.log(Level::Error, &e);
    }
}
