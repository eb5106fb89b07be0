//! Findings of `check-config` and `doctor`, and how commands end: human
//! text or `--json`, and a conventional exit code.

use serde_json::{json, Value};

/// Exit codes: 0 ok, 1 problems found, 2 usage (clap), sysexits(3) else.
pub mod exit {
    pub const OK: i32 = 0;
    pub const PROBLEMS: i32 = 1;
    pub const DATAERR: i32 = 65;
    pub const NOUSER: i32 = 67;
    pub const UNAVAILABLE: i32 = 69;
    pub const IOERR: i32 = 74;
    pub const NOPERM: i32 = 77;
    pub const CONFIG: i32 = 78;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn word(self) -> &'static str {
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
pub struct Finding {
    pub level: Level,
    /// "config", "sshd", "pam", "files", "store", "provider", "policy", "users".
    pub area: &'static str,
    pub message: String,
    pub fix: Option<String>,
}

impl Finding {
    pub fn new(level: Level, area: &'static str, message: impl Into<String>) -> Self {
        Finding {
            level,
            area,
            message: message.into(),
            fix: None,
        }
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    pub fn to_json(&self) -> Value {
        json!({
            "level": self.level.word(),
            "area": self.area,
            "message": self.message,
            "fix": self.fix,
        })
    }
}

/// Prints findings (human) and returns the exit code: 1 if any warning or
/// error, else 0.
pub fn findings_exit(findings: &[Finding]) -> i32 {
    if findings.iter().any(|f| f.level >= Level::Warning) {
        exit::PROBLEMS
    } else {
        exit::OK
    }
}

/// Findings as text for people, with a summary line.
pub fn findings_text(findings: &[Finding]) -> String {
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
pub struct Failure {
    pub code: i32,
    pub message: String,
    pub fix: Option<String>,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            fix: None,
        }
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}
