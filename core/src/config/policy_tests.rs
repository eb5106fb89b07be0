//! Tests of `[policy]`, `[phone]` and `[limits]` (`policy.rs`).

use std::time::Duration;

use crate::config::tests::{err_of, parse};
use crate::store::limits::{LimitKind, LimitMode};

#[test]
fn bad_duration_says_how_to_write_one() {
    let e = err_of("[limits]\nlockout = \"fifteen\"\n");
    assert!(e.contains(":2:11: limits.lockout:"), "{e}");
    assert!(e.contains("\"5m\""), "{e}");
}

#[test]
fn bad_rate_and_choice() {
    let e = err_of("[limits]\nsms_per_user = \"5 per hour\"\n");
    assert!(
        e.contains("limits.sms_per_user") && e.contains("COUNT/WINDOW"),
        "{e}"
    );
    let e = err_of("[policy]\nno_phone = \"maybe\"\n");
    assert!(
        e.contains("policy.no_phone") && e.contains("\"deny\", \"allow\""),
        "{e}"
    );
}

#[test]
fn region_must_be_known() {
    let e = err_of("[phone]\ndefault_region = \"XX\"\n");
    assert!(e.contains("phone.default_region"), "{e}");
    let c =
        parse("[phone]\ndefault_region = \"de\"\nallowed_countries = [\"DE\", \"AT\"]\n").unwrap();
    assert_eq!(c.phone.default_region, Some(phonenumber::country::Id::DE));
    assert_eq!(c.phone.allowed_countries.len(), 2);
}

#[test]
fn limits_beyond_the_user_parse_with_days_and_modes() {
    let c = parse(
        "[limits]\nsms_per_number = \"10/1d\"\nsms_per_source = \"20/1h\"\n\
         sms_per_country = { default = \"500/1d\", ng = \"20/1d\" }\n\
         backoff = { first = \"1m\" }\nmonitor = [\"sms_per_country\", \"backoff\"]\n",
    )
    .unwrap();
    let l = &c.limits;
    assert_eq!(
        l.sms_per_number.unwrap().window,
        Duration::from_secs(86_400)
    );
    let pc = l.sms_per_country.as_ref().unwrap();
    assert_eq!(
        pc.rate_for(Some(phonenumber::country::Id::NG))
            .unwrap()
            .count
            .get(),
        20
    );
    assert_eq!(
        pc.rate_for(Some(phonenumber::country::Id::DE))
            .unwrap()
            .count
            .get(),
        500
    );
    assert_eq!(pc.rate_for(None).unwrap().count.get(), 500);
    let b = l.backoff.unwrap();
    assert_eq!(
        (b.first, b.max),
        (Duration::from_secs(60), Duration::from_secs(1920))
    );
    assert_eq!(l.mode(LimitKind::PerCountry), LimitMode::Monitor);
    assert_eq!(l.mode(LimitKind::PerNumber), LimitMode::Enforce);
    let summary: Vec<String> = l
        .summary()
        .iter()
        .map(|(k, s, m)| format!("{k}: {s} ({})", m.word()))
        .collect();
    assert_eq!(
        summary,
        [
            "sms_per_user: 5/1h (enforce)",
            "sms_global: 1000/1h (enforce)",
            "sms_per_number: 10/1day (enforce)",
            "sms_per_country: default 500/1day, NG 20/1day (monitor)",
            "sms_per_source: 20/1h (enforce)",
            "backoff: first 1m, max 32m (monitor)",
        ]
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let c = parse("[limits]\nmonitor = [\"sms_per_source\"]\n").unwrap();
    let w = c.warnings[0].to_string();
    assert!(
        w.contains("limits.monitor") && w.contains("sms_per_source, which is not set"),
        "{w}"
    );
    // Unset: none of them apply.
    let c = parse("").unwrap();
    assert!(c.limits.sms_per_number.is_none() && c.limits.backoff.is_none());
    assert!(c.limits.monitor.is_empty());
}

#[test]
fn bad_limits_name_the_key_and_the_fix() {
    let e = err_of("[limits]\nsms_per_country = { default = \"500/1d\", XX = \"20/1d\" }\n");
    assert!(
        e.contains("limits.sms_per_country") && e.contains("\"XX\" is not a known region"),
        "{e}"
    );
    assert!(
        e.contains("\"default\" or a two-letter ISO 3166 code"),
        "{e}"
    );
    let e = err_of("[limits]\nsms_per_country = { NG = \"twenty a day\" }\n");
    assert!(
        e.contains("limits.sms_per_country.NG") && e.contains("COUNT/WINDOW"),
        "{e}"
    );
    let e = err_of("[limits]\nsms_per_country = {}\n");
    assert!(e.contains("the table is empty"), "{e}");
    let e = err_of("[limits]\nsms_per_number = \"10/40d\"\n");
    assert!(
        e.contains("limits.sms_per_number") && e.contains("from 1s to 31 days"),
        "{e}"
    );
    let e = err_of("[limits]\nsms_per_source = \"0/1h\"\n");
    assert!(e.contains("limits.sms_per_source"), "{e}");
    let e = err_of("[limits]\nbackoff = { max = \"32m\" }\n");
    assert!(
        e.contains("limits.backoff.first") && e.contains("first = \"1m\""),
        "{e}"
    );
    let e = err_of("[limits]\nbackoff = { first = \"5m\", max = \"1m\" }\n");
    assert!(
        e.contains("limits.backoff.max") && e.contains("from 5m"),
        "{e}"
    );
    let e = err_of("[limits]\nmonitor = [\"per_country\"]\n");
    assert!(
        e.contains("limits.monitor")
            && e.contains("\"per_country\" is not a limit")
            && e.contains("\"sms_per_country\""),
        "{e}"
    );
}

#[test]
fn budget_counts_sms_or_costs_in_thousandths() {
    let l = parse("[limits]\ndaily_budget = 1000\n").unwrap().limits;
    let b = l.daily_budget.unwrap();
    assert_eq!(b.milli.get(), 1_000_000);
    assert_eq!(b.window, Duration::from_secs(86_400));
    assert_eq!(b.cost_for(None), 1000);
    assert_eq!(b.to_string(), "1000 SMS per 1day");
    let l = parse(
        "[limits]\ndaily_budget = \"250.5/12h\"\n\
         sms_cost = { default = 1.0, NG = 8.5, gb = 0.04 }\nmonitor = [\"daily_budget\"]\n",
    )
    .unwrap()
    .limits;
    assert_eq!(l.mode(LimitKind::DailyBudget), LimitMode::Monitor);
    let b = l.daily_budget.clone().unwrap();
    assert_eq!(b.milli.get(), 250_500);
    assert_eq!(b.window, Duration::from_secs(12 * 3600));
    assert_eq!(b.cost_for("NG".parse().ok()), 8_500);
    assert_eq!(b.cost_for("GB".parse().ok()), 40);
    assert_eq!(b.cost_for("DE".parse().ok()), 1_000);
    assert_eq!(
        b.to_string(),
        "250.5 cost units per 12h (sms_cost: default 1, NG 8.5, GB 0.04)"
    );
    assert!(l
        .summary()
        .iter()
        .any(|(k, _, m)| *k == "daily_budget" && *m == LimitMode::Monitor));
    let b = parse("[limits]\ndaily_budget = 250.0\nsms_cost = { NG = 8 }\n")
        .unwrap()
        .limits
        .daily_budget
        .unwrap();
    assert_eq!((b.milli.get(), b.cost_for(None)), (250_000, 1_000));
}

#[test]
fn bad_budgets_say_what_to_write() {
    for (text, want) in [
        ("daily_budget = 0", "above 0"),
        ("daily_budget = -5", "must be above 0"),
        ("daily_budget = 12.5", "not a whole number of SMS"),
        ("daily_budget = \"lots\"", "is not a budget"),
        ("daily_budget = \"10/soon\"", "the window is not a duration"),
        ("daily_budget = \"10/1s\"", "from 1m to 31 days"),
        ("daily_budget = 5000000", "out of range"),
        ("daily_budget = true", "is not a number"),
        (
            "daily_budget = 1.0001\nsms_cost = { default = 1 }",
            "more than three decimals",
        ),
        ("sms_cost = { NG = 8.5 }", "daily_budget, which is not set"),
        (
            "daily_budget = 10\nsms_cost = { NG = 0 }",
            "limits.sms_cost.NG",
        ),
        (
            "daily_budget = 10\nsms_cost = { NG = 0.00001 }",
            "at most three decimals",
        ),
        (
            "daily_budget = 10\nsms_cost = { XX = 1 }",
            "\"XX\" is not a known region",
        ),
    ] {
        let e = err_of(&format!("[limits]\n{text}\n"));
        assert!(e.contains(want), "{text}: {e}");
    }
    let e = err_of("[limits]\ndaily_budget = 12.5\n");
    assert!(e.contains("limits.daily_budget"), "{e}");
}
