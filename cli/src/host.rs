//! What `smsotp doctor` reads of the host: sshd_config (with its Include
//! drop-ins) and the PAM stacks that load pam_smsotp. Pure parsing and
//! judging; the caller prints.

use std::path::{Path, PathBuf};

use crate::report::{Finding, Level};

// ------------------------------------------------------------------- sshd

/// One `Keyword value` line of sshd_config.
#[derive(Debug, Clone)]
pub struct SshdOption {
    /// Lower case.
    pub key: String,
    pub value: String,
    pub at: String,
    /// Inside a `Match` block: applies to some connections only.
    pub in_match: bool,
}

/// Reads `path` and every file it includes, in sshd's order.
pub fn read_sshd(path: &Path, findings: &mut Vec<Finding>) -> Vec<SshdOption> {
    let base = path.parent().unwrap_or(Path::new("/etc/ssh")).to_owned();
    let mut out = Vec::new();
    read_sshd_file(path, &base, false, 0, &mut out, findings);
    out
}

fn read_sshd_file(
    path: &Path,
    base: &Path,
    mut in_match: bool,
    depth: u32,
    out: &mut Vec<SshdOption>,
    findings: &mut Vec<Finding>,
) {
    if depth > 16 {
        findings.push(Finding::new(
            Level::Error,
            "sshd",
            format!("{}: Include nested too deeply (a loop?)", path.display()),
        ));
        return;
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            findings.push(Finding::new(
                Level::Error,
                "sshd",
                format!("cannot read {}: {e}", path.display()),
            ));
            return;
        }
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once(|c: char| c.is_whitespace() || c == '=') {
            Some((k, v)) => (k, v.trim().trim_start_matches('=').trim()),
            None => (line, ""),
        };
        let key = key.to_ascii_lowercase();
        let at = format!("{}:{}", path.display(), n + 1);
        match key.as_str() {
            "match" => in_match = true,
            "include" => {
                for pattern in value.split_whitespace() {
                    let p = if pattern.starts_with('/') {
                        PathBuf::from(pattern)
                    } else {
                        base.join(pattern)
                    };
                    for f in glob(&p) {
                        read_sshd_file(&f, base, in_match, depth + 1, out, findings);
                    }
                }
            }
            _ => out.push(SshdOption {
                key,
                value: value.to_owned(),
                at,
                in_match,
            }),
        }
    }
}

/// Files matching `p`, whose last component may hold `*` and `?`, sorted.
fn glob(p: &Path) -> Vec<PathBuf> {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !name.contains(['*', '?']) {
        return if p.exists() {
            vec![p.to_owned()]
        } else {
            vec![]
        };
    }
    let dir = p.parent().unwrap_or(Path::new("/"));
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_str().is_some_and(|n| wildcard(name, n)))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn wildcard(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// The global value of `key` (the first one outside Match blocks wins, as
/// in sshd), or `None` for sshd's default.
fn global<'a>(opts: &'a [SshdOption], keys: &[&str]) -> Option<&'a SshdOption> {
    opts.iter()
        .find(|o| !o.in_match && keys.contains(&o.key.as_str()))
}

/// Judges the sshd options for a second factor through PAM.
pub fn check_sshd(opts: &[SshdOption], findings: &mut Vec<Finding>) {
    let yes = |o: Option<&SshdOption>, default: bool| {
        o.map_or(default, |o| o.value.eq_ignore_ascii_case("yes"))
    };
    let at = |o: Option<&SshdOption>| o.map_or("default".to_owned(), |o| o.at.clone());

    let use_pam = global(opts, &["usepam"]);
    if yes(use_pam, false) {
        findings.push(Finding::new(Level::Ok, "sshd", "UsePAM yes"));
    } else {
        findings.push(
            Finding::new(
                Level::Error,
                "sshd",
                format!(
                    "UsePAM is not yes ({}): sshd never runs PAM, so no SMS code is asked",
                    at(use_pam)
                ),
            )
            .fix("set `UsePAM yes` in sshd_config"),
        );
    }

    let kbd = global(
        opts,
        &[
            "kbdinteractiveauthentication",
            "challengeresponseauthentication",
        ],
    );
    if yes(kbd, true) {
        findings.push(Finding::new(
            Level::Ok,
            "sshd",
            "KbdInteractiveAuthentication yes",
        ));
    } else {
        findings.push(
            Finding::new(
                Level::Error,
                "sshd",
                format!(
                    "KbdInteractiveAuthentication is no ({}): sshd cannot show the code prompt, \
                     so logins through PAM fail",
                    at(kbd)
                ),
            )
            .fix("set `KbdInteractiveAuthentication yes` in sshd_config"),
        );
    }

    let pw = global(opts, &["passwordauthentication"]);
    if yes(pw, true) {
        findings.push(
            Finding::new(
                Level::Warning,
                "sshd",
                format!(
                    "PasswordAuthentication is yes ({}): password logins run PAM but cannot \
                     answer the code prompt; each one wastes an SMS and an attempt",
                    at(pw)
                ),
            )
            .fix(
                "set `PasswordAuthentication no` (keyboard-interactive asks for the password too)",
            ),
        );
    }

    match global(opts, &["authenticationmethods"]) {
        None => findings.push(
            Finding::new(
                Level::Warning,
                "sshd",
                "AuthenticationMethods is not set: a public key alone logs in and skips PAM \
                 authentication, so NO SMS CODE is asked of key users",
            )
            .fix("set `AuthenticationMethods publickey,keyboard-interactive keyboard-interactive` (or `keyboard-interactive` only)"),
        ),
        Some(o) if o.value.eq_ignore_ascii_case("any") => findings.push(
            Finding::new(
                Level::Warning,
                "sshd",
                format!(
                    "AuthenticationMethods any ({}): a public key alone skips the SMS code",
                    o.at
                ),
            )
            .fix("list keyboard-interactive in every method list"),
        ),
        Some(o) => {
            let lists: Vec<&str> = o.value.split_whitespace().collect();
            let without: Vec<&str> = lists
                .iter()
                .copied()
                .filter(|l| {
                    !l.split(',')
                        .any(|m| m.starts_with("keyboard-interactive"))
                })
                .collect();
            if without.len() == lists.len() {
                findings.push(
                    Finding::new(
                        Level::Error,
                        "sshd",
                        format!(
                            "AuthenticationMethods {} ({}) never uses keyboard-interactive: \
                             NO SMS CODE is ever asked",
                            o.value, o.at
                        ),
                    )
                    .fix("add keyboard-interactive, e.g. `AuthenticationMethods publickey,keyboard-interactive`"),
                );
            } else if !without.is_empty() {
                findings.push(
                    Finding::new(
                        Level::Warning,
                        "sshd",
                        format!(
                            "AuthenticationMethods ({}): the list(s) {} log in without the SMS code",
                            o.at,
                            without.join(" ")
                        ),
                    )
                    .fix("add keyboard-interactive to every list"),
                );
            } else {
                findings.push(Finding::new(
                    Level::Ok,
                    "sshd",
                    format!("AuthenticationMethods {}", o.value),
                ));
            }
        }
    }
    for key in [
        "usepam",
        "kbdinteractiveauthentication",
        "challengeresponseauthentication",
        "authenticationmethods",
        "passwordauthentication",
    ] {
        if let Some(o) = opts.iter().find(|o| o.in_match && o.key == key) {
            findings.push(Finding::new(
                Level::Warning,
                "sshd",
                format!(
                    "{}: a Match block sets {} {} for some connections; check them by hand \
                     (`sshd -T -C user=…,host=…,addr=…`)",
                    o.at, o.key, o.value
                ),
            ));
        }
    }
}

// -------------------------------------------------------------------- PAM

/// One `auth` line after includes are expanded.
#[derive(Debug, Clone)]
pub struct AuthLine {
    pub at: String,
    /// `-auth`: silently skipped when the module file is missing.
    pub dash: bool,
    pub control: String,
    pub module: String,
    pub args: Vec<String>,
}

impl AuthLine {
    fn base(&self) -> &str {
        self.module.rsplit('/').next().unwrap_or(&self.module)
    }

    pub fn is_smsotp(&self) -> bool {
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
pub fn read_stack(dir: &Path, name: &str, findings: &mut Vec<Finding>) -> Vec<AuthLine> {
    let mut out = Vec::new();
    expand(dir, name, 0, &mut out, findings);
    out
}

fn expand(dir: &Path, name: &str, depth: u32, out: &mut Vec<AuthLine>, f: &mut Vec<Finding>) {
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
    let Ok(text) = std::fs::read_to_string(&path) else {
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
            expand(dir, rest.trim(), depth + 1, out, f);
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
        if control == "include" || control == "substack" {
            expand(dir, module, depth + 1, out, f);
            continue;
        }
        out.push(AuthLine {
            at: format!("{}:{}", path.display(), n + 1),
            dash,
            control: control.to_owned(),
            module: module.to_owned(),
            args: rest.split_whitespace().map(str::to_owned).collect(),
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

/// Judges one service's auth stack.
pub fn check_stack(service: &str, lines: &[AuthLine], config: &Path, f: &mut Vec<Finding>) {
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
        for (j, before) in lines[..k].iter().enumerate() {
            let success = before.action("success").unwrap_or_default();
            let skips =
                success == "done" || success.parse::<usize>().is_ok_and(|n| n > 0 && j + n >= k);
            if skips {
                f.push(
                    Finding::new(
                        Level::Error,
                        area,
                        format!(
                            "{service}: {} ({} {}) comes before pam_smsotp: when it succeeds, \
                             pam_smsotp is skipped and no code is asked",
                            before.at, before.control, before.module
                        ),
                    )
                    .fix("make it `requisite`/`required`, or move pam_smsotp before it"),
                );
            }
            if PASSWORD_MODULES.contains(&before.base()) {
                password_seen = true;
                if matches!(before.control.as_str(), "required" | "optional") {
                    f.push(
                        Finding::new(
                            Level::Warning,
                            area,
                            format!(
                                "{service}: {} ({} {}): a wrong password still goes on to \
                                 pam_smsotp, which sends an SMS for it",
                                before.at, before.control, before.module
                            ),
                        )
                        .fix("make the password module `requisite`"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("*.conf", "a.conf"));
        assert!(!wildcard("*.conf", "a.conf.bak"));
        assert!(wildcard("a?c", "abc"));
    }

    #[test]
    fn stack_faults_are_found() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("common-auth"),
            "auth sufficient pam_unix.so\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("svc"),
            "@include common-auth\nauth [success=ok default=ignore] pam_smsotp.so\n",
        )
        .unwrap();
        let mut f = Vec::new();
        let lines = read_stack(d.path(), "svc", &mut f);
        assert_eq!(lines.len(), 2);
        check_stack("svc", &lines, Path::new("/etc/smsotp/smsotp.toml"), &mut f);
        let text: Vec<String> = f.iter().map(|x| x.message.clone()).collect();
        assert!(
            text.iter().any(|m| m.contains("default=ignore")),
            "{text:?}"
        );
        assert!(text.iter().any(|m| m.contains("is skipped")), "{text:?}");
    }
}
