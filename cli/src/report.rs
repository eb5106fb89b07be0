//! Findings of `check-config` and `doctor`, and how commands end: human
//! text or `--json`, and a conventional exit code.

use serde_json::{json, Map, Value};
use smsotp_core::directory::NumbersChecked;

/// Exit codes: 0 ok, 1 problems found, 2 usage (clap, and ours), sysexits(3)
/// else. smsotp(8), the README and the crate doc list the same; the
/// end-to-end test `every_documented_exit_code` triggers each one.
pub(crate) mod exit {
    pub(crate) const OK: i32 = 0;
    /// `check-config` or `doctor` found something to fix.
    pub(crate) const PROBLEMS: i32 = 1;
    /// What clap uses for a bad command line.
    pub(crate) const USAGE: i32 = 2;
    pub(crate) const DATAERR: i32 = 65;
    pub(crate) const NOUSER: i32 = 67;
    pub(crate) const UNAVAILABLE: i32 = 69;
    pub(crate) const IOERR: i32 = 74;
    pub(crate) const NOPERM: i32 = 77;
    pub(crate) const CONFIG: i32 = 78;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Ok,
    Info,
    Warning,
    Error,
}

impl Level {
    pub(crate) fn word(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// One thing `doctor` or `check-config` found.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    pub level: Level,
    /// "config", "sshd", "pam", "files", "store", "provider", "policy", "users".
    pub area: &'static str,
    pub message: String,
    pub fix: Option<String>,
}

impl Finding {
    pub(crate) fn new(level: Level, area: &'static str, message: impl Into<String>) -> Self {
        Finding {
            level,
            area,
            message: message.into(),
            fix: None,
        }
    }

    pub(crate) fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "level": self.level.word(),
            "area": self.area,
            "message": self.message,
            "fix": self.fix,
        })
    }
}

/// The phone-list check ([`smsotp_core::directory::check_phone_lists`]) as
/// findings: one error per entry a login would refuse (file:line, user,
/// what is wrong; the fix), then the count. For `check-config` and `doctor`.
pub(crate) fn phone_list_findings(checked: &NumbersChecked) -> Vec<Finding> {
    let mut out: Vec<Finding> = checked
        .bad
        .iter()
        .map(|b| {
            let message = match &b.user {
                Some(u) => format!("{}: {u}: {}", b.location, b.problem),
                None => format!("{}: {}", b.location, b.problem),
            };
            Finding::new(Level::Error, "users", message).fix(b.fix.clone())
        })
        .collect();
    let summary = format!(
        "phone lists: {} valid, {} not usable",
        smsotp_core::counted(checked.valid, "number", "numbers"),
        smsotp_core::counted(checked.bad.len(), "entry", "entries")
    );
    out.push(if checked.bad.is_empty() {
        Finding::new(Level::Ok, "users", summary)
    } else {
        Finding::new(Level::Error, "users", summary)
            .fix("a user with a bad entry cannot log in until it is fixed")
    });
    out
}

/// Prints findings (human) and returns the exit code: 1 if any warning or
/// error, else 0.
pub(crate) fn findings_exit(findings: &[Finding]) -> i32 {
    if findings.iter().any(|f| f.level >= Level::Warning) {
        exit::PROBLEMS
    } else {
        exit::OK
    }
}

/// Findings as text for people, with a summary line.
pub(crate) fn findings_text(findings: &[Finding]) -> String {
    let mut v = Vec::new();
    for f in findings {
        v.push(format!(
            "{:<8} {:<9} {}",
            f.level.word().to_uppercase(),
            f.area,
            f.message
        ));
        if let Some(fix) = &f.fix {
            v.push(format!("{:<8} {:<9}   fix: {fix}", "", ""));
        }
    }
    let count = |l| findings.iter().filter(|f| f.level == l).count();
    v.push(format!(
        "\n{} error(s), {} warning(s)",
        count(Level::Error),
        count(Level::Warning)
    ));
    v.join("\n") + "\n"
}

/// A command that could not do its job.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: i32,
    pub message: String,
    pub fix: Option<String>,
}

impl Failure {
    pub(crate) fn new(code: i32, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            fix: None,
        }
    }

    pub(crate) fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// The effective config (as [`crate::check_config::effective`] makes it) for people:
/// one `[section]` a table, `key = value` lines, nested tables as
/// `outer.inner`, and one block per directory, provider and RADIUS client.
pub(crate) fn effective_text(eff: &Value) -> String {
    /// The order of the reference, smsotp.toml(5); anything else after.
    const ORDER: [&str; 9] = [
        "otp",
        "policy",
        "phone",
        "limits",
        "directories",
        "store",
        "providers",
        "audit",
        "radius",
    ];
    let mut out = String::new();
    let Some(top) = eff.as_object() else {
        return out;
    };
    let rest = top.keys().filter(|k| !ORDER.contains(&k.as_str()));
    for section in ORDER.iter().copied().chain(rest.map(String::as_str)) {
        let Some(v) = top.get(section) else { continue };
        match v {
            Value::Object(table) => {
                out.push_str(&format!("[{section}]\n"));
                let mut lines = Vec::new();
                let mut blocks = String::new();
                flatten(section, "", table, &mut lines, &mut blocks);
                push_aligned(&mut out, &lines);
                out.push('\n');
                out.push_str(&blocks);
            }
            Value::Array(items) => {
                let name = match section {
                    "directories" => "directory",
                    s => s.strip_suffix('s').unwrap_or(s),
                };
                if items.is_empty() {
                    out.push_str(&format!("[[{name}]]: none\n\n"));
                }
                for item in items {
                    block(name, item, &mut out);
                }
            }
            Value::Null => out.push_str(&format!("[{section}]: not configured\n\n")),
            other => out.push_str(&format!("{section} = {}\n\n", scalar(section, other))),
        }
    }
    out
}

/// One `[[name]]` entry: a heading with its name and kind, then its keys.
fn block(name: &str, item: &Value, out: &mut String) {
    let Some(t) = item.as_object() else {
        return;
    };
    let title = match (t.get("name").and_then(Value::as_str), t.get("kind")) {
        (Some(n), Some(k)) => format!("[[{name}]] {n} ({})", scalar("kind", k)),
        (Some(n), None) => format!("[[{name}]] {n}"),
        (None, Some(k)) => format!("[[{name}]] {}", scalar("kind", k)),
        (None, None) => format!("[[{name}]]"),
    };
    out.push_str(&title);
    out.push('\n');
    let rest: Map<String, Value> = t
        .iter()
        .filter(|(k, _)| *k != "name" && *k != "kind")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut lines = Vec::new();
    let mut blocks = String::new();
    flatten(name, "", &rest, &mut lines, &mut blocks);
    push_aligned(out, &lines);
    out.push('\n');
    out.push_str(&blocks);
}

/// `key = value` pairs of a table, nested tables as `outer.inner`; arrays
/// of tables (RADIUS clients) become `[[section.client]]` blocks.
fn flatten(
    section: &str,
    prefix: &str,
    t: &Map<String, Value>,
    lines: &mut Vec<(String, String)>,
    blocks: &mut String,
) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Object(inner) => flatten(section, &key, inner, lines, blocks),
            Value::Array(items) if items.iter().any(Value::is_object) => {
                let name = format!("{section}.{}", k.strip_suffix('s').unwrap_or(k));
                for item in items {
                    block(&name, item, blocks);
                }
            }
            v => lines.push((key, scalar(k, v))),
        }
    }
}

fn push_aligned(out: &mut String, lines: &[(String, String)]) {
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in lines {
        out.push_str(&format!("  {k:<width$} = {v}\n"));
    }
}

/// A value as people read it: strings bare, lists with commas, `tls` as
/// on/off.
fn scalar(key: &str, v: &Value) -> String {
    match v {
        Value::Null => "(none)".into(),
        Value::Bool(b) if key == "tls" => if *b { "on" } else { "off" }.into(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) if a.is_empty() && key == "allowed_countries" => "(any country)".into(),
        Value::Array(a) if a.is_empty() => "(none)".into(),
        Value::Array(a) => a
            .iter()
            .map(|x| scalar(key, x))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Object(_) => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_text_is_sections_of_key_value_lines() {
        let eff = json!({
            "store": {"kind": "sqlite", "path": "/var/lib/smsotp/state.db"},
            "otp": {"length": 6, "resend": {"max": 2}},
            "phone": {"allowed_countries": [], "default_region": null},
            "providers": [{"name": "smsc", "kind": "smpp", "host": "h", "port": 2775, "tls": false}],
            "radius": {"listen": ["127.0.0.1:1812", "[::1]:1812"],
                       "clients": [{"name": "vpn", "address": "10.0.0.0/8"}]},
        });
        let t = effective_text(&eff);
        // The reference's order, not the alphabet's.
        let at = |needle: &str| {
            t.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} not in\n{t}"))
        };
        assert!(
            at("[otp]") < at("[phone]") && at("[phone]") < at("[store]"),
            "{t}"
        );
        assert!(
            at("[store]") < at("[[provider]]") && at("[[provider]]") < at("[radius]"),
            "{t}"
        );
        assert!(t.contains("  length     = 6\n  resend.max = 2\n"), "{t}");
        assert!(t.contains("allowed_countries = (any country)"), "{t}");
        assert!(t.contains("default_region    = (none)"), "{t}");
        assert!(t.contains("[[provider]] smsc (smpp)\n"), "{t}");
        assert!(t.contains("tls  = off"), "{t}");
        assert!(t.contains("listen = 127.0.0.1:1812, [::1]:1812"), "{t}");
        assert!(
            t.contains("[[radius.client]] vpn\n  address = 10.0.0.0/8"),
            "{t}"
        );
        assert!(!t.contains('{') && !t.contains('"'), "{t}");
    }
}
