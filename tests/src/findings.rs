//! Reading `smsotp --json doctor`'s findings in tests: the whole list as
//! text for a failure message, the one finding a test expects, how many
//! there are at a level.

use serde_json::Value;

/// Every finding as one line "level message (fix: …)", for messages.
pub fn show(findings: &[Value]) -> String {
    findings
        .iter()
        .map(|f| {
            format!(
                "{} {} (fix: {})\n",
                f["level"].as_str().unwrap_or("?"),
                f["message"].as_str().unwrap_or("?"),
                f["fix"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

/// The one finding at `level` whose message holds every needle; panics,
/// listing them all, when there is none.
pub fn find<'a>(findings: &'a [Value], level: &str, needles: &[&str]) -> &'a Value {
    findings
        .iter()
        .find(|f| {
            f["level"] == level
                && needles
                    .iter()
                    .all(|n| f["message"].as_str().unwrap_or("").contains(n))
        })
        .unwrap_or_else(|| panic!("no {level} finding with {needles:?} in\n{}", show(findings)))
}

/// How many findings are at `level`.
pub fn count(findings: &[Value], level: &str) -> usize {
    findings.iter().filter(|f| f["level"] == level).count()
}
