//! `status` and `breaker`: what the SMS limits look like now. Each part
//! of the report is one function returning its text and its JSON object
//! under one key (today `breaker`), so more parts (per provider and
//! country counters) slot in beside it.

use std::path::Path;

use serde_json::json;
use smsotp_core::audit::Level as AuditLevel;
use smsotp_core::clock::rfc3339;
use smsotp_core::config::units;
use smsotp_core::flow::Engine;
use smsotp_core::store::{BreakerState, LimitMode};

use crate::report::Failure;
use crate::{open_engine, store_err, Output};

/// `smsotp status` (and `smsotp breaker status`).
pub(crate) fn status(path: &Path) -> Result<Output, Failure> {
    let engine = open_engine(path)?;
    let (text, breaker) = breaker_part(&engine)?;
    Ok(Output {
        text,
        json: json!({"ok": true, "breaker": breaker}),
        code: 0,
    })
}

/// The breaker: (text, JSON object).
fn breaker_part(engine: &Engine) -> Result<(String, serde_json::Value), Failure> {
    let (Some(w), Some(b)) = (
        engine.budget_window(),
        engine.cfg.limits.daily_budget.as_ref(),
    ) else {
        return Ok((
            "breaker: off (limits.daily_budget is not set)\n".into(),
            json!({"configured": false, "state": "off"}),
        ));
    };
    let now = engine.now();
    let s = engine.store().breaker(&w, now).map_err(store_err)?;
    let state = match (&s.trip, w.mode) {
        (_, LimitMode::Monitor) => "monitor",
        (Some(_), LimitMode::Enforce) => "tripped",
        (None, LimitMode::Enforce) => "closed",
    };
    let mut text = format!("breaker: {state}\n  spent: {} of {b}\n", units(s.spent),);
    if let Some(t) = &s.trip {
        text.push_str(&format!(
            "  tripped: {} by a login of {} (spent then: {})\n  closes: {} (or `smsotp breaker reset`)\n",
            rfc3339(t.at),
            t.user,
            units(t.spent),
            rfc3339(t.until)
        ));
    }
    let json = json!({
        "configured": true,
        "state": state,
        "mode": w.mode.word(),
        "unit": b.unit(),
        "spent": units(s.spent),
        "budget": units(b.milli.get()),
        "spent_milli": s.spent,
        "budget_milli": b.milli.get(),
        "window_secs": b.window.as_secs(),
        "trip": s.trip.as_ref().map(|t| json!({
            "at": rfc3339(t.at),
            "until": rfc3339(t.until),
            "user": t.user,
            "spent": units(t.spent),
        })),
    });
    Ok((text, json))
}

/// `smsotp breaker reset`: closes the breaker and forgets the window's
/// spend (so the next login sends at once, instead of tripping again on
/// the spend that tripped it), with an audit line naming the admin and
/// what was forgotten.
pub(crate) fn breaker_reset(path: &Path) -> Result<Output, Failure> {
    let engine = open_engine(path)?;
    let Some(w) = engine.budget_window() else {
        return Err(Failure::new(
            crate::report::exit::CONFIG,
            "there is no breaker: limits.daily_budget is not set",
        )
        .fix(format!(
            "set daily_budget in [limits] of {} to use the spend breaker",
            path.display()
        )));
    };
    let before: BreakerState = engine
        .store()
        .reset_breaker(&w, engine.now())
        .map_err(store_err)?;
    let who = std::env::var("SUDO_USER").unwrap_or_else(|_| "root".into());
    let said = match &before.trip {
        Some(t) => format!(
            "reset the spend breaker tripped at {}; forgot a spend of {} in its window",
            rfc3339(t.at),
            units(before.spent)
        ),
        None => format!(
            "reset the spend breaker (it was not tripped); forgot a spend of {} in its window",
            units(before.spent)
        ),
    };
    let ctx = smsotp_core::LoginContext {
        user: String::new(),
        service: "smsotp-admin".into(),
        rhost: None,
    };
    let mut e = engine.event_for(&ctx, "breaker_reset");
    e.outcome = Some("success");
    e.limit = Some("daily_budget");
    e.detail = Some(format!("{said} (by admin:{who})"));
    engine.record(AuditLevel::Warning, &e);
    Ok(Output {
        text: format!("{said}\n"),
        json: json!({"ok": true, "was_tripped": before.trip.is_some(),
                     "spent_forgotten": units(before.spent)}),
        code: 0,
    })
}
