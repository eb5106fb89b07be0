//! `status` and `breaker`: what became of the SMS and what the limits
//! look like now. Each part of the report is one function returning its
//! text and its JSON object under one key: `counters` (per provider and
//! country, for one UTC day) and `breaker`.
//!
//! The JSON shape is stable (smsotp(8) documents it): `{"ok": true,
//! "counters": {"day", "kept_days", "rows": [{"provider", "country",
//! "sent", "failed", "resent", "refused": {limit: n}, "monitored":
//! {limit: n}, "receipts": {state: n}}], "total": {the same without
//! provider and country}}, "breaker": {…}}`. A refused send has provider
//! "-" (no provider saw it); a number of unknown region has country "--".

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value};
use smsotp_core::audit::Level as AuditLevel;
use smsotp_core::clock::rfc3339;
use smsotp_core::config::units;
use smsotp_core::flow::Engine;
use smsotp_core::store::counters::KEEP_DAYS;
use smsotp_core::store::{BreakerState, Counted, Counts, Day, LimitMode};

use crate::report::{exit, Failure};
use crate::{open_engine, store_err, Output};

/// `smsotp status [--day YYYY-MM-DD]`.
pub(crate) fn status(path: &Path, day: Option<&str>) -> Result<Output, Failure> {
    let engine = open_engine(path)?;
    let now = engine.now();
    let day = match day {
        None => Day::of(now),
        Some(d) => parse_day(d, now)?,
    };
    let counts = engine.store().counters(day, now).map_err(store_err)?;
    let (ctext, counters) = counters_part(day, &counts);
    let (btext, breaker) = breaker_part(&engine)?;
    Ok(Output {
        text: format!("{ctext}{btext}"),
        json: json!({"ok": true, "counters": counters, "breaker": breaker}),
        code: 0,
    })
}

/// `smsotp breaker status`: the breaker part alone.
pub(crate) fn breaker_status(path: &Path) -> Result<Output, Failure> {
    let engine = open_engine(path)?;
    let (text, breaker) = breaker_part(&engine)?;
    Ok(Output {
        text,
        json: json!({"ok": true, "breaker": breaker}),
        code: 0,
    })
}

/// `--day`: a day the store still keeps.
fn parse_day(s: &str, now: smsotp_core::clock::Millis) -> Result<Day, Failure> {
    let today = Day::of(now);
    let kept = || {
        format!(
            "give a UTC day from {} to {} as YYYY-MM-DD (the store keeps {KEEP_DAYS} days)",
            today.oldest_kept(),
            today
        )
    };
    let Some(day) = Day::parse(s) else {
        return Err(Failure::new(exit::USAGE, format!("--day {s:?} is not a date")).fix(kept()));
    };
    if !day.kept_at(now) {
        return Err(Failure::new(
            exit::USAGE,
            format!("--day {day}: the store keeps no counters for that day"),
        )
        .fix(kept()));
    }
    Ok(day)
}

/// One row of the counters part: what one provider did for one country.
#[derive(Default)]
struct Row {
    sent: u64,
    failed: u64,
    resent: u64,
    refused: BTreeMap<String, u64>,
    monitored: BTreeMap<String, u64>,
    receipts: BTreeMap<String, u64>,
}

impl Row {
    fn add(&mut self, what: &Counted, n: u64) {
        match what {
            Counted::Sent => self.sent += n,
            Counted::Failed => self.failed += n,
            Counted::Resent => self.resent += n,
            Counted::Refused(k) => *self.refused.entry(k.key().into()).or_default() += n,
            Counted::Monitored(k) => *self.monitored.entry(k.key().into()).or_default() += n,
            Counted::Receipt(s) => *self.receipts.entry(s.clone()).or_default() += n,
        }
    }

    fn json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("sent".into(), self.sent.into());
        m.insert("failed".into(), self.failed.into());
        m.insert("resent".into(), self.resent.into());
        m.insert("refused".into(), json!(self.refused));
        m.insert("monitored".into(), json!(self.monitored));
        m.insert("receipts".into(), json!(self.receipts));
        m
    }

    fn text(&self) -> String {
        let list = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        if self.sent > 0 || self.failed > 0 || self.resent > 0 {
            let mut p = format!("sent {}, failed {}", self.sent, self.failed);
            if self.resent > 0 {
                p.push_str(&format!(", resent after a receipt {}", self.resent));
            }
            parts.push(p);
        }
        if !self.refused.is_empty() {
            parts.push(format!("refused by {}", list(&self.refused)));
        }
        if !self.monitored.is_empty() {
            parts.push(format!(
                "over a monitored limit (sent) {}",
                list(&self.monitored)
            ));
        }
        if !self.receipts.is_empty() {
            parts.push(format!("receipts {}", list(&self.receipts)));
        }
        parts.join("; ")
    }
}

/// The counters of `day`: (text, JSON object).
fn counters_part(day: Day, counts: &Counts) -> (String, Value) {
    let mut rows: BTreeMap<(&str, &str), Row> = BTreeMap::new();
    let mut total = Row::default();
    for (k, n) in counts {
        rows.entry((&k.provider, &k.country))
            .or_default()
            .add(&k.what, *n);
        total.add(&k.what, *n);
    }
    let mut text = format!("SMS on {day} (UTC), per provider and country:\n");
    if rows.is_empty() {
        text.push_str("  none counted\n");
    }
    let width = rows.keys().map(|(p, _)| p.len()).max().unwrap_or(0);
    for ((p, c), r) in &rows {
        text.push_str(&format!("  {p:<width$} {c}: {}\n", r.text()));
    }
    if !rows.is_empty() {
        text.push_str(&format!("  total: {}\n", total.text()));
    }
    let jrows: Vec<Value> = rows
        .iter()
        .map(|((p, c), r)| {
            let mut m = Map::new();
            m.insert("provider".into(), (*p).into());
            m.insert("country".into(), (*c).into());
            m.extend(r.json());
            Value::Object(m)
        })
        .collect();
    let json = json!({
        "day": day.to_string(),
        "kept_days": KEEP_DAYS,
        "rows": jrows,
        "total": Value::Object(total.json()),
    });
    (text, json)
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

#[cfg(test)]
mod tests {
    use super::*;
    use smsotp_core::store::{CounterKey, LimitKind};

    #[test]
    fn the_counters_part_in_text_and_json() {
        let day = Day::parse("2026-12-03").unwrap();
        let k = |p: &str, c: &str, w| CounterKey::new(p, Some(c), w);
        let counts = vec![
            (k("-", "NG", Counted::Refused(LimitKind::PerCountry)), 3),
            (k("-", "US", Counted::Monitored(LimitKind::Global)), 1),
            (k("smpp", "GB", Counted::Sent), 2),
            (k("smpp", "GB", Counted::Receipt("DELIVRD".into())), 1),
            (k("smpp", "GB", Counted::Receipt("UNDELIV".into())), 1),
            (k("web", "GB", Counted::Sent), 1),
            (k("web", "GB", Counted::Resent), 1),
            (k("smpp", "US", Counted::Failed), 1),
        ];
        let (text, json) = counters_part(day, &counts);
        assert_eq!(
            text,
            "SMS on 2026-12-03 (UTC), per provider and country:\n\
             \x20 -    NG: refused by sms_per_country 3\n\
             \x20 -    US: over a monitored limit (sent) sms_global 1\n\
             \x20 smpp GB: sent 2, failed 0; receipts DELIVRD 1, UNDELIV 1\n\
             \x20 smpp US: sent 0, failed 1\n\
             \x20 web  GB: sent 1, failed 0, resent after a receipt 1\n\
             \x20 total: sent 3, failed 1, resent after a receipt 1; refused by sms_per_country 3; \
             over a monitored limit (sent) sms_global 1; receipts DELIVRD 1, UNDELIV 1\n"
        );
        assert_eq!(json["day"], "2026-12-03");
        assert_eq!(json["kept_days"], 8);
        let rows = json["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 5);
        assert_eq!(
            rows[0],
            json!({"provider": "-", "country": "NG", "sent": 0, "failed": 0, "resent": 0,
                   "refused": {"sms_per_country": 3}, "monitored": {}, "receipts": {}})
        );
        assert_eq!(rows[2]["receipts"]["UNDELIV"], 1);
        assert_eq!(json["total"]["sent"], 3);
        assert_eq!(json["total"]["refused"]["sms_per_country"], 3);
        assert_eq!(json["total"]["monitored"]["sms_global"], 1);

        let (text, json) = counters_part(day, &Vec::new());
        assert_eq!(
            text,
            "SMS on 2026-12-03 (UTC), per provider and country:\n  none counted\n"
        );
        assert_eq!(json["rows"], json!([]));
        assert_eq!(json["total"]["sent"], 0);
    }

    #[test]
    fn day_must_be_a_kept_date() {
        let now = Day::parse("2026-12-03").unwrap().start() + 1000;
        assert_eq!(
            parse_day("2026-11-26", now).unwrap().to_string(),
            "2026-11-26"
        );
        let e = parse_day("2026-11-25", now).unwrap_err();
        assert!(
            format!("{e:?}").contains("from 2026-11-26 to 2026-12-03"),
            "{e:?}"
        );
        let e = parse_day("3 Dec", now).unwrap_err();
        assert!(format!("{e:?}").contains("is not a date"), "{e:?}");
    }
}
