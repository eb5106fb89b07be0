//! The PAM stacks that load pam_smsotp: their lines with includes and
//! substacks expanded, and what runs before and after the module.

use std::path::{Path, PathBuf};

use crate::report::{Finding, Level};

/// One `auth` line after includes are expanded.
#[derive(Debug, Clone)]
pub(crate) struct AuthLine {
    pub at: String,
    /// `-auth`: silently skipped when the module file is missing.
    pub dash: bool,
    pub control: String,
    pub module: String,
    pub args: Vec<String>,
    /// Where the line runs: its index among the lines of its stack, after
    /// the indexes of the `substack` lines that lead to it. Includes are
    /// inlined (jumps count their lines); a substack counts as one line
    /// where it is called, and its `done`, `die` and jumps stay inside it.
    place: Vec<usize>,
}

impl AuthLine {
    fn base(&self) -> &str {
        self.module.rsplit('/').next().unwrap_or(&self.module)
    }

    pub(crate) fn is_smsotp(&self) -> bool {
        self.base().starts_with("pam_smsotp") || self.base().starts_with("libpam_smsotp")
    }

    /// `[a=b c=d]` pairs, or the simple keyword's meaning.
    fn actions(&self) -> Vec<(String, String)> {
        let c = self.control.trim();
        if let Some(inner) = c.strip_prefix('[').and_then(|c| c.strip_suffix(']')) {
            inner
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_ascii_lowercase()))
                .collect()
        } else {
            let v = |pairs: &[(&str, &str)]| {
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            };
            match c {
                "required" => v(&[("success", "ok"), ("ignore", "ignore"), ("default", "bad")]),
                "requisite" => v(&[("success", "ok"), ("ignore", "ignore"), ("default", "die")]),
                "sufficient" => v(&[("success", "done"), ("default", "ignore")]),
                "optional" => v(&[("success", "ok"), ("default", "ignore")]),
                _ => Vec::new(),
            }
        }
    }

    fn action(&self, key: &str) -> Option<String> {
        let acts = self.actions();
        acts.iter()
            .find(|(k, _)| k == key)
            .or_else(|| acts.iter().find(|(k, _)| k == "default"))
            .map(|(_, v)| v.clone())
    }
}

/// The auth lines of service `name` in `dir`, includes expanded.
pub(crate) fn read_stack(dir: &Path, name: &str, findings: &mut Vec<Finding>) -> Vec<AuthLine> {
    let mut out = Vec::new();
    let mut frame = Frame {
        outer: Vec::new(),
        next: 0,
    };
    expand(dir, name, 0, &mut frame, &mut out, findings);
    out
}

/// The stack lines are read into: the places of the substack lines that
/// lead to it, and the index of its next line.
struct Frame {
    outer: Vec<usize>,
    next: usize,
}

impl Frame {
    fn take(&mut self) -> Vec<usize> {
        let mut place = self.outer.clone();
        place.push(self.next);
        self.next += 1;
        place
    }
}

fn expand(
    dir: &Path,
    name: &str,
    depth: u32,
    frame: &mut Frame,
    out: &mut Vec<AuthLine>,
    f: &mut Vec<Finding>,
) {
    let path = if name.starts_with('/') {
        PathBuf::from(name)
    } else {
        dir.join(name)
    };
    if depth > 16 {
        f.push(Finding::new(
            Level::Error,
            "pam",
            format!("{}: includes nested too deeply (a loop?)", path.display()),
        ));
        return;
    }
    let Ok(text) = super::read_text(&path) else {
        if depth > 0 {
            f.push(Finding::new(
                Level::Warning,
                "pam",
                format!("{} is included but cannot be read", path.display()),
            ));
        }
        return;
    };
    // Continuation lines end with a backslash.
    let joined = text.replace("\\\n", " ");
    for (n, raw) in joined.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("@include") {
            expand(dir, rest.trim(), depth + 1, frame, out, f);
            continue;
        }
        let (ty, rest) = split_word(line);
        let dash = ty.starts_with('-');
        if !ty.trim_start_matches('-').eq_ignore_ascii_case("auth") {
            continue;
        }
        let (control, rest) = if rest.starts_with('[') {
            match rest.find(']') {
                Some(i) => (&rest[..=i], rest[i + 1..].trim_start()),
                None => (rest, ""),
            }
        } else {
            split_word(rest)
        };
        let (module, rest) = split_word(rest);
        if control == "include" {
            expand(dir, module, depth + 1, frame, out, f);
            continue;
        }
        if control == "substack" {
            let mut inner = Frame {
                outer: frame.take(),
                next: 0,
            };
            expand(dir, module, depth + 1, &mut inner, out, f);
            continue;
        }
        out.push(AuthLine {
            at: format!("{}:{}", path.display(), n + 1),
            dash,
            control: control.to_owned(),
            module: module.to_owned(),
            args: rest.split_whitespace().map(str::to_owned).collect(),
            place: frame.take(),
        });
    }
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// Modules that check the password (the first factor).
const PASSWORD_MODULES: &[&str] = &[
    "pam_unix.so",
    "pam_sss.so",
    "pam_ldap.so",
    "pam_krb5.so",
    "pam_winbind.so",
    "pam_radius_auth.so",
    "pam_matrix.so",
];

/// Error values of pam_smsotp that must never become success or be ignored.
const ERROR_VALUES: &[&str] = &[
    "auth_err",
    "authinfo_unavail",
    "system_err",
    "service_err",
    "conv_err",
    "user_unknown",
    "cred_insufficient",
    "maxtries",
    "buf_err",
    "abort",
];

/// Why a line that succeeds before pam_smsotp and skips it is there, and
/// what to do about it. `jump` is the line's `success=N` and the largest N
/// that still lands on pam_smsotp.
fn skip_finding(service: &str, before: &AuthLine, jump: Option<(usize, usize)>) -> Finding {
    let what = format!(
        "{service}: {} ({} {}) comes before pam_smsotp",
        before.at, before.control, before.module
    );
    match before.base() {
        // Debian's su, su-l, chfn, chsh and runuser: only a caller who is
        // already root passes. Making it requisite or required would stop
        // every other caller before the password prompt.
        "pam_rootok.so" => Finding::new(
            Level::Info,
            "pam",
            format!(
                "{what}: it lets a caller who is already root through without a password or \
                 code (Debian's standard line); everyone else goes on to pam_smsotp"
            ),
        ),
        "pam_permit.so" => Finding::new(
            Level::Error,
            "pam",
            format!("{what}: pam_permit always succeeds, so pam_smsotp never runs and NO CODE is asked"),
        )
        .fix("remove this line (Debian's `required pam_permit.so` after `requisite pam_deny.so` is fine)"),
        m if PASSWORD_MODULES.contains(&m) => {
            let fix = match jump {
                Some((n, max)) if max > 0 => format!(
                    "make the jump land on pam_smsotp or before it: success={max} or less \
                     (it is success={n}); Debian's shape is `[success=1 default=ignore] pam_unix.so` \
                     / `requisite pam_deny.so` / `required pam_permit.so` / `required pam_smsotp.so`"
                ),
                _ => "make it `requisite` (or `[success=ok default=die]`), so a right password \
                 goes on to pam_smsotp and a wrong one ends the stack"
                    .to_owned(),
            };
            Finding::new(
                Level::Error,
                "pam",
                format!("{what}: a right password skips pam_smsotp, so NO CODE is asked"),
            )
            .fix(fix)
        }
        _ => Finding::new(
            Level::Warning,
            "pam",
            format!(
                "{what}: when it succeeds, pam_smsotp is skipped and no code is asked"
            ),
        )
        .fix(
            "check what this module does and who it lets through; to spare users the code, \
             use policy.exempt_users or policy.exempt_groups instead of a PAM line",
        ),
    }
}

/// Judges one service's auth stack.
pub(crate) fn check_stack(service: &str, lines: &[AuthLine], config: &Path, f: &mut Vec<Finding>) {
    let area = "pam";
    for (k, l) in lines.iter().enumerate().filter(|(_, l)| l.is_smsotp()) {
        let who = format!("{service}: {} ({})", l.at, l.control);
        match l.control.as_str() {
            "required" | "requisite" => f.push(Finding::new(
                Level::Ok,
                area,
                format!("{service}: pam_smsotp is {} at {}", l.control, l.at),
            )),
            "sufficient" | "optional" => f.push(
                Finding::new(
                    Level::Error,
                    area,
                    format!(
                        "{who}: pam_smsotp is `{}`, so its failure is ignored and the password \
                         alone lets users in (fail open)",
                        l.control
                    ),
                )
                .fix("use `required` (or `requisite`)"),
            ),
            _ => {
                for (key, v) in l.actions() {
                    let err_key = key == "default" || ERROR_VALUES.contains(&key.as_str());
                    if err_key && matches!(v.as_str(), "ignore" | "ok" | "done") {
                        f.push(
                            Finding::new(
                                Level::Error,
                                area,
                                format!(
                                    "{who}: `{key}={v}` turns pam_smsotp's failures into \
                                     {v}: when SMS login fails or errors, the rest of the \
                                     stack lets users in (fail open)"
                                ),
                            )
                            .fix("use `required`, or map errors to `bad`/`die`"),
                        );
                    }
                }
            }
        }
        if l.dash {
            f.push(
                Finding::new(
                    Level::Error,
                    area,
                    format!(
                        "{service}: {}: `-auth` skips pam_smsotp silently if its file is missing",
                        l.at
                    ),
                )
                .fix("drop the leading `-`"),
            );
        }
        if l.module.starts_with('/') && !Path::new(&l.module).exists() {
            f.push(Finding::new(
                Level::Error,
                area,
                format!("{service}: {}: module {} does not exist", l.at, l.module),
            ));
        }
        if let Some(c) = l.args.iter().find_map(|a| a.strip_prefix("config=")) {
            if Path::new(c) != config {
                f.push(Finding::new(
                    Level::Info,
                    area,
                    format!(
                        "{service}: {} uses config={c}, not {} (the file checked here)",
                        l.at,
                        config.display()
                    ),
                ));
            }
        }
        let mut password_seen = false;
        for before in &lines[..k] {
            // Only a line in pam_smsotp's stack, or in a stack that runs
            // it as a substack, can skip it.
            let d = before.place.len().saturating_sub(1);
            let outer = before.place.get(..d);
            let places = before.place.get(d).zip(l.place.get(d));
            if let (Some((&b, &s)), true) = (places, outer == l.place.get(..d)) {
                let success = before.action("success").unwrap_or_default();
                let jump = success.parse::<usize>().ok().filter(|n| *n > 0);
                // A jump of n lines lands on line b + n + 1.
                let skips = success == "done" || jump.is_some_and(|n| b + n >= s);
                if skips {
                    f.push(skip_finding(
                        service,
                        before,
                        jump.map(|n| (n, s.saturating_sub(b + 1))),
                    ));
                }
            }
            if PASSWORD_MODULES.contains(&before.base()) {
                if before.control == "optional" {
                    f.push(
                        Finding::new(
                            Level::Warning,
                            area,
                            format!(
                                "{service}: {} (optional {}): an optional module's result is \
                                 ignored, so it does not check the password for this stack",
                                before.at, before.module
                            ),
                        )
                        .fix(
                            "make sure another line checks the password before pam_smsotp \
                             (e.g. `requisite`); do not simply make this one requisite if \
                             some users are not in its backend",
                        ),
                    );
                    continue;
                }
                password_seen = true;
                if before.control == "required" {
                    f.push(
                        Finding::new(
                            Level::Warning,
                            area,
                            format!(
                                "{service}: {} (required {}): a wrong password still goes on to \
                                 pam_smsotp, which sends an SMS for it",
                                before.at, before.module
                            ),
                        )
                        .fix("make the password module `requisite`: a wrong password then stops the stack at once"),
                    );
                }
            }
        }
        if !password_seen {
            f.push(Finding::new(
                Level::Info,
                area,
                format!(
                    "{service}: no known password module before pam_smsotp at {}; make sure \
                     the first factor is checked before a code is sent",
                    l.at
                ),
            ));
        }
    }
}
