//! What `smsotp doctor` reads of the host: sshd_config (with its Include
//! drop-ins) and the PAM stacks that load pam_smsotp. Pure parsing and
//! judging; the caller prints.

use std::path::{Path, PathBuf};

use crate::report::{Finding, Level};

// ------------------------------------------------------------------- sshd

/// A `Match` line: the lines after it, to the next `Match` or the end of
/// its file, apply only to connections that match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MatchBlock {
    /// `FILE:LINE` of the `Match` line.
    pub at: String,
    /// What follows `Match`, as written.
    pub criteria: String,
}

/// Whether a Match block applies to one user's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applies {
    Yes,
    No,
    /// It depends on more than the user name (Host, Address, Group, …).
    Unknown,
}

impl MatchBlock {
    /// `(criterion, argument)` pairs; `All`, `Canonical` and `Final` take
    /// no argument.
    fn criteria(&self) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        let mut words = self.criteria.split_whitespace();
        while let Some(w) = words.next() {
            let (key, arg) = match w.split_once('=') {
                Some((k, a)) => (k.to_ascii_lowercase(), Some(a.to_owned())),
                None => {
                    let k = w.to_ascii_lowercase();
                    let arg = if matches!(k.as_str(), "all" | "canonical" | "final") {
                        None
                    } else {
                        words.next().map(str::to_owned)
                    };
                    (k, arg)
                }
            };
            out.push((key, arg.map(|a| a.trim_matches('"').to_owned())));
        }
        out
    }

    /// Decided by the user name alone: only `User` and `All` criteria.
    pub(crate) fn users_only(&self) -> bool {
        let c = self.criteria();
        !c.is_empty() && c.iter().all(|(k, _)| k == "user" || k == "all")
    }

    /// Does this block apply to `user`? Criteria are ANDed, as in sshd: a
    /// `User` list that does not match `user` rules the block out whatever
    /// the other criteria say.
    pub(crate) fn applies_to(&self, user: &str) -> Applies {
        let criteria = self.criteria();
        if criteria.is_empty() {
            return Applies::Unknown;
        }
        let mut unknown = false;
        for (key, arg) in &criteria {
            match key.as_str() {
                "all" => {}
                "user" => {
                    if !arg.as_deref().is_some_and(|list| pattern_list(list, user)) {
                        return Applies::No;
                    }
                }
                _ => unknown = true,
            }
        }
        if unknown {
            Applies::Unknown
        } else {
            Applies::Yes
        }
    }
}

/// sshd's pattern lists: comma-separated `*`/`?` patterns; a `!pattern`
/// that matches rules the name out whatever else matches.
fn pattern_list(list: &str, name: &str) -> bool {
    let mut hit = false;
    for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some(negated) = p.strip_prefix('!') {
            if wildcard(negated, name) {
                return false;
            }
        } else if wildcard(p, name) {
            hit = true;
        }
    }
    hit
}

/// One `Keyword value` line of sshd_config.
#[derive(Debug, Clone)]
pub(crate) struct SshdOption {
    /// Lower case.
    pub key: String,
    pub value: String,
    pub at: String,
    /// The Match block the line is in: it applies to some connections only.
    pub block: Option<MatchBlock>,
}

impl SshdOption {
    pub(crate) fn in_match(&self) -> bool {
        self.block.is_some()
    }
}

/// Reads `path` and every file it includes, in sshd's order.
pub(crate) fn read_sshd(path: &Path, findings: &mut Vec<Finding>) -> Vec<SshdOption> {
    let base = path.parent().unwrap_or(Path::new("/etc/ssh")).to_owned();
    let mut out = Vec::new();
    read_sshd_file(path, &base, None, 0, &mut out, findings);
    out
}

/// `block` is the Match block the `Include` line was in. A Match block
/// opened in a file ends at the end of that file, as in sshd: `block` is
/// this call's own copy.
fn read_sshd_file(
    path: &Path,
    base: &Path,
    mut block: Option<MatchBlock>,
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
            "match" => {
                block = Some(MatchBlock {
                    at,
                    criteria: value.to_owned(),
                })
            }
            "include" => {
                for pattern in value.split_whitespace() {
                    let p = if pattern.starts_with('/') {
                        PathBuf::from(pattern)
                    } else {
                        base.join(pattern)
                    };
                    for f in glob(&p) {
                        read_sshd_file(&f, base, block.clone(), depth + 1, out, findings);
                    }
                }
            }
            _ => out.push(SshdOption {
                key,
                value: value.to_owned(),
                at,
                block: block.clone(),
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
        .find(|o| !o.in_match() && keys.contains(&o.key.as_str()))
}

/// What sshd uses for one user's connections.
#[derive(Debug, Clone)]
pub(crate) struct Effective<'a> {
    /// From the first Match block that applies, else the first global
    /// line (sshd: the first value obtained wins, and a matching block's
    /// value replaces the global one); `None`: sshd's default.
    pub opt: Option<&'a SshdOption>,
    /// Lines in Match blocks that depend on more than the user name and
    /// come before any that surely applies: they may win instead.
    pub unsure: Vec<&'a SshdOption>,
}

/// The value of `keys` that sshd uses for `user`.
pub(crate) fn effective<'a>(opts: &'a [SshdOption], keys: &[&str], user: &str) -> Effective<'a> {
    let mut unsure = Vec::new();
    let mut from_match = None;
    for o in opts.iter().filter(|o| keys.contains(&o.key.as_str())) {
        let Some(b) = &o.block else { continue };
        match b.applies_to(user) {
            Applies::Yes => {
                from_match = Some(o);
                break;
            }
            Applies::Unknown => unsure.push(o),
            Applies::No => {}
        }
    }
    Effective {
        opt: from_match.or_else(|| global(opts, keys)),
        unsure,
    }
}

fn yes(o: Option<&SshdOption>, default: bool) -> bool {
    o.map_or(default, |o| o.value.eq_ignore_ascii_case("yes"))
}

fn at(o: Option<&SshdOption>) -> String {
    o.map_or("sshd's default".to_owned(), |o| match &o.block {
        Some(b) => format!("{}, in Match {} at {}", o.at, b.criteria, b.at),
        None => o.at.clone(),
    })
}

const KBD_KEYS: &[&str] = &[
    "kbdinteractiveauthentication",
    "challengeresponseauthentication",
];

/// `AuthenticationMethods` as lists of method names (`keyboard-interactive:pam`
/// counts as `keyboard-interactive`); `None` when unset or `any`.
fn method_lists(o: Option<&SshdOption>) -> Option<Vec<Vec<String>>> {
    let o = o?;
    if o.value.eq_ignore_ascii_case("any") {
        return None;
    }
    Some(
        o.value
            .split_whitespace()
            .map(|l| {
                l.split(',')
                    .map(|m| m.split(':').next().unwrap_or(m).to_ascii_lowercase())
                    .collect()
            })
            .collect(),
    )
}

/// Methods that run PAM's auth stack, and so pam_smsotp.
fn runs_pam(method: &str) -> bool {
    method == "keyboard-interactive" || method == "password"
}

/// sshd's `PermitRootLogin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PermitRoot {
    Yes,
    /// `prohibit-password` (sshd's default) or its old name `without-password`.
    ProhibitPassword,
    ForcedCommandsOnly,
    No,
}

impl PermitRoot {
    pub(crate) fn parse(value: &str) -> Option<PermitRoot> {
        match value.to_ascii_lowercase().as_str() {
            "yes" => Some(PermitRoot::Yes),
            "prohibit-password" | "without-password" => Some(PermitRoot::ProhibitPassword),
            "forced-commands-only" => Some(PermitRoot::ForcedCommandsOnly),
            "no" => Some(PermitRoot::No),
            _ => None,
        }
    }

    /// May root use `method`? Every value but `yes` refuses
    /// keyboard-interactive and password (so PAM) for root.
    pub(crate) fn allows(self, method: &str) -> bool {
        match self {
            PermitRoot::Yes => true,
            PermitRoot::No => false,
            PermitRoot::ProhibitPassword | PermitRoot::ForcedCommandsOnly => !runs_pam(method),
        }
    }
}

/// How a user gets in over SSH, as far as sshd_config tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SshPath {
    /// `PermitRootLogin no`: root never logs in over SSH.
    RootNotPermitted,
    /// Every method list needs keyboard-interactive or password, and
    /// `PermitRootLogin` refuses both for root.
    RootRefused,
    /// No method list works for anyone (other findings say why).
    Refused,
    /// This method list logs in without PAM, so without a code.
    KeyAlone(String),
    /// Every usable method list runs PAM: the user needs a code unless
    /// exempt.
    NeedsPam,
}

/// One user's SSH login as sshd_config decides it.
#[derive(Debug, Clone)]
pub(crate) struct SshLogin<'a> {
    pub path: SshPath,
    pub methods: Effective<'a>,
    /// Root only: the value and the line it comes from (`None`: default).
    pub permit_root: Option<(PermitRoot, Option<&'a SshdOption>)>,
    /// Lines in Match blocks doctor cannot decide that may change this.
    pub unsure: Vec<&'a SshdOption>,
}

impl SshLogin<'_> {
    /// "AuthenticationMethods … (where)" for messages.
    pub(crate) fn methods_text(&self) -> String {
        match self.methods.opt {
            Some(o) => format!("AuthenticationMethods {} ({})", o.value, at(Some(o))),
            None => "AuthenticationMethods not set".to_owned(),
        }
    }

    /// "PermitRootLogin … (where)" for messages; empty for other users.
    pub(crate) fn permit_text(&self) -> String {
        match self.permit_root {
            Some((_, Some(o))) => format!("PermitRootLogin {} ({})", o.value, at(Some(o))),
            Some((_, None)) => "PermitRootLogin prohibit-password (sshd's default)".to_owned(),
            None => String::new(),
        }
    }
}

/// How `user` can log in over SSH.
pub(crate) fn ssh_login<'a>(opts: &'a [SshdOption], user: &str) -> SshLogin<'a> {
    let methods = effective(opts, &["authenticationmethods"], user);
    let kbd = effective(opts, KBD_KEYS, user);
    let pw = effective(opts, &["passwordauthentication"], user);
    let pubkey = effective(opts, &["pubkeyauthentication"], user);
    let mut unsure: Vec<&SshdOption> = [&methods, &kbd, &pw, &pubkey]
        .iter()
        .flat_map(|e| e.unsure.iter().copied())
        .collect();
    let permit_root = if user == "root" {
        let e = effective(opts, &["permitrootlogin"], user);
        unsure.extend(e.unsure.iter().copied());
        let value = e.opt.map_or(Some(PermitRoot::ProhibitPassword), |o| {
            PermitRoot::parse(&o.value)
        });
        // An unknown value stops sshd from starting; `sshd -t` says so.
        value.map(|v| (v, e.opt))
    } else {
        None
    };
    let enabled = |m: &str| match m {
        "keyboard-interactive" => yes(kbd.opt, true),
        "password" => yes(pw.opt, true),
        "publickey" => yes(pubkey.opt, true),
        _ => true,
    };
    let lists = method_lists(methods.opt).unwrap_or_else(|| {
        ["publickey", "password", "keyboard-interactive"]
            .iter()
            .map(|m| vec![(*m).to_owned()])
            .collect()
    });
    let works = |l: &Vec<String>, root: Option<PermitRoot>| {
        l.iter()
            .all(|m| enabled(m) && root.is_none_or(|p| p.allows(m)))
    };
    let usable: Vec<&Vec<String>> = lists
        .iter()
        .filter(|l| works(l, permit_root.map(|(p, _)| p)))
        .collect();
    let path = if permit_root.is_some_and(|(p, _)| p == PermitRoot::No) {
        SshPath::RootNotPermitted
    } else if usable.is_empty() {
        if permit_root.is_some() && lists.iter().any(|l| works(l, None)) {
            SshPath::RootRefused
        } else {
            SshPath::Refused
        }
    } else if let Some(l) = usable.iter().find(|l| !l.iter().any(|m| runs_pam(m))) {
        SshPath::KeyAlone(l.join(","))
    } else {
        SshPath::NeedsPam
    };
    SshLogin {
        path,
        methods,
        permit_root,
        unsure,
    }
}

/// The lines that end an sshd_config to give root a key-only way in.
pub(crate) const ROOT_MATCH_FIX: &str =
    "the two lines `Match User root` and `    AuthenticationMethods publickey`";

/// Judges root's SSH login on its own: what sshd_config alone decides.
/// Whether root needs a code it can get is judged with the user data.
pub(crate) fn check_root(opts: &[SshdOption], findings: &mut Vec<Finding>) {
    let login = ssh_login(opts, "root");
    let Some((_, permit_opt)) = login.permit_root else {
        if let Some(o) = effective(opts, &["permitrootlogin"], "root").opt {
            findings.push(
                Finding::new(
                    Level::Error,
                    "sshd",
                    format!(
                        "PermitRootLogin {} ({}) is not a value sshd knows",
                        o.value, o.at
                    ),
                )
                .fix("use yes, prohibit-password, forced-commands-only or no"),
            );
        }
        return;
    };
    match &login.path {
        SshPath::RootNotPermitted => findings.push(Finding::new(
            Level::Info,
            "sshd",
            format!(
                "{}: root never logs in over SSH; admins log in as themselves (checked under users)",
                login.permit_text()
            ),
        )),
        SshPath::RootRefused => {
            let file = login
                .methods
                .opt
                .and_then(|o| o.at.rsplit_once(':'))
                .map_or("/etc/ssh/sshd_config.d/smsotp.conf", |(f, _)| f);
            findings.push(
                Finding::new(
                    Level::Error,
                    "sshd",
                    format!(
                        "root cannot log in over SSH: {} refuses keyboard-interactive and \
                         password for root, and every list of {} needs one of them",
                        login.permit_text(),
                        login.methods_text()
                    ),
                )
                .fix(format!(
                    "give root a key-only way in: add {ROOT_MATCH_FIX} at the end of {file} \
                     (a Match block runs to the end of its file); check with \
                     `sshd -T -C user=root,host=x,addr=127.0.0.1 | grep -i authenticationmethods`"
                )),
            );
        }
        SshPath::KeyAlone(list) => {
            if let Some(b) = login.methods.opt.and_then(|o| o.block.as_ref()) {
                findings.push(Finding::new(
                    Level::Info,
                    "sshd",
                    format!(
                        "root logs in with a key alone (Match {} at {}): no SMS code for root; \
                         this is the break-glass path",
                        b.criteria, b.at
                    ),
                ));
            } else if login.methods.opt.is_some() {
                findings.push(Finding::new(
                    Level::Info,
                    "sshd",
                    format!(
                        "root logs in with `{list}` alone ({}): no SMS code for root",
                        login.methods_text()
                    ),
                ));
            }
            if permit_opt.is_some_and(|o| o.value.eq_ignore_ascii_case("forced-commands-only")) {
                findings.push(Finding::new(
                    Level::Info,
                    "sshd",
                    format!(
                        "{}: only keys with a command= option log root in",
                        login.permit_text()
                    ),
                ));
            }
        }
        // Refused for everyone: the global findings say why. NeedsPam:
        // judged with root's number and backup codes.
        SshPath::Refused | SshPath::NeedsPam => {}
    }
    if !login.unsure.is_empty() {
        let lines: Vec<&str> = login.unsure.iter().map(|o| o.at.as_str()).collect();
        findings.push(
            Finding::new(
                Level::Warning,
                "sshd",
                format!(
                    "root's SSH login may differ for some connections: Match blocks doctor cannot \
                 decide set it at {}",
                    lines.join(", ")
                ),
            )
            .fix("check by hand: `sshd -T -C user=root,host=HOST,addr=ADDR`"),
        );
    }
}

/// Judges the sshd options for a second factor through PAM.
pub(crate) fn check_sshd(opts: &[SshdOption], findings: &mut Vec<Finding>) {
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

    let kbd = global(opts, KBD_KEYS);
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

    let methods = global(opts, &["authenticationmethods"]);
    let pw = global(opts, &["passwordauthentication"]);
    if yes(pw, true) {
        // The `password` method only runs when some method list names it
        // (or when AuthenticationMethods is unset or `any`).
        let lists_password = |o: Option<&SshdOption>| {
            method_lists(o).is_none_or(|ls| ls.iter().flatten().any(|m| m == "password"))
        };
        let match_password = opts
            .iter()
            .find(|o| o.in_match() && o.key == "authenticationmethods" && lists_password(Some(o)));
        if lists_password(methods) || match_password.is_some() {
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
        } else {
            findings.push(Finding::new(
                Level::Info,
                "sshd",
                format!(
                    "PasswordAuthentication is yes ({}) but no AuthenticationMethods list names \
                     password, so it is never used",
                    at(pw)
                ),
            ));
        }
    }

    match methods {
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
                    .fix("if every user should give the code: add keyboard-interactive to every \
                          list, e.g. `AuthenticationMethods publickey,keyboard-interactive \
                          keyboard-interactive`, and keep root on its key with `Match User root` / \
                          `AuthenticationMethods publickey`"),
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
    check_match_blocks(opts, findings);
}

/// Match blocks that change how users authenticate. Those decided by the
/// user name are evaluated for root here and for the admins with the user
/// data; the rest can only be checked by hand.
fn check_match_blocks(opts: &[SshdOption], findings: &mut Vec<Finding>) {
    const KEYS: &[&str] = &[
        "kbdinteractiveauthentication",
        "challengeresponseauthentication",
        "authenticationmethods",
        "passwordauthentication",
        "pubkeyauthentication",
        "permitrootlogin",
    ];
    let mut told = std::collections::BTreeSet::new();
    for o in opts.iter().filter(|o| KEYS.contains(&o.key.as_str())) {
        let Some(b) = &o.block else { continue };
        if !told.insert((b.at.clone(), o.key.clone())) {
            continue;
        }
        if !b.users_only() {
            findings.push(Finding::new(
                Level::Warning,
                "sshd",
                format!(
                    "{}: a Match block ({} at {}) sets {} {} for some connections; check them \
                     by hand (`sshd -T -C user=…,host=…,addr=…`)",
                    o.at, b.criteria, b.at, o.key, o.value
                ),
            ));
        } else if b.applies_to("root") == Applies::No {
            findings.push(Finding::new(
                Level::Info,
                "sshd",
                format!(
                    "{}: Match {} sets {} {} for those users",
                    o.at, b.criteria, o.key, o.value
                ),
            ));
        }
    }
}

// -------------------------------------------------------------------- PAM

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
        assert!(
            text.iter().any(|m| m.contains("skips pam_smsotp")),
            "{text:?}"
        );
    }

    fn sshd(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<SshdOption>, Vec<Finding>) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sshd_config.d")).unwrap();
        for (name, text) in files {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        let mut f = Vec::new();
        let opts = read_sshd(&d.path().join("sshd_config"), &mut f);
        (d, opts, f)
    }

    fn block(criteria: &str) -> MatchBlock {
        MatchBlock {
            at: "x:1".into(),
            criteria: criteria.into(),
        }
    }

    #[test]
    fn match_user_lists_are_evaluated() {
        use Applies::*;
        assert_eq!(block("User root").applies_to("root"), Yes);
        assert_eq!(block("User root").applies_to("alice"), No);
        assert_eq!(block("user alice,root").applies_to("root"), Yes);
        assert_eq!(block("User=root").applies_to("root"), Yes);
        assert_eq!(block("User \"ad*\"").applies_to("admin"), Yes);
        assert_eq!(block("User r??t").applies_to("root"), Yes);
        assert_eq!(block("User r??t").applies_to("rooot"), No);
        // A matching negation wins over any positive pattern.
        assert_eq!(block("User *,!root").applies_to("root"), No);
        assert_eq!(block("User *,!root").applies_to("alice"), Yes);
        assert_eq!(block("User !root").applies_to("alice"), No);
        assert_eq!(block("All").applies_to("alice"), Yes);
        // Other criteria: undecided, unless the user list rules it out.
        assert_eq!(block("Address 10.0.0.0/8").applies_to("root"), Unknown);
        assert_eq!(
            block("User root Address 10.0.0.0/8").applies_to("root"),
            Unknown
        );
        assert_eq!(
            block("Address 10.0.0.0/8 User alice").applies_to("root"),
            No
        );
        assert_eq!(block("Group wheel").applies_to("root"), Unknown);
        assert!(block("User root,admin").users_only());
        assert!(!block("User root Host x").users_only());
    }

    #[test]
    fn permit_root_login_refuses_pam_methods() {
        for (v, pam, key) in [
            ("yes", true, true),
            ("prohibit-password", false, true),
            ("without-password", false, true),
            ("forced-commands-only", false, true),
            ("no", false, false),
        ] {
            let p = PermitRoot::parse(v).unwrap();
            assert_eq!(p.allows("keyboard-interactive"), pam, "{v}");
            assert_eq!(p.allows("password"), pam, "{v}");
            assert_eq!(p.allows("publickey"), key, "{v}");
        }
        assert_eq!(PermitRoot::parse("maybe"), None);
    }

    const DROP_IN: &str = "KbdInteractiveAuthentication yes\nPasswordAuthentication no\n\
        AuthenticationMethods publickey,keyboard-interactive keyboard-interactive\n";

    #[test]
    fn a_match_block_ends_with_its_included_file() {
        let main = "Include sshd_config.d/*.conf\nKbdInteractiveAuthentication no\nUsePAM yes\n\
                    PermitRootLogin no\n";
        let drop_in = format!("{DROP_IN}Match User root\n\tAuthenticationMethods publickey\n");
        let (_d, opts, f) = sshd(&[
            ("sshd_config", main),
            ("sshd_config.d/smsotp.conf", &drop_in),
        ]);
        assert!(f.is_empty(), "{f:?}");
        let use_pam = opts.iter().find(|o| o.key == "usepam").unwrap();
        assert!(
            !use_pam.in_match(),
            "the Match block leaked out of its file"
        );
        // The first value wins: the drop-in's yes, not the main file's no.
        let kbd = effective(&opts, KBD_KEYS, "alice").opt.unwrap();
        assert_eq!(kbd.value, "yes");
        let root = ssh_login(&opts, "root");
        assert_eq!(root.path, SshPath::RootNotPermitted);
        assert_eq!(root.methods.opt.unwrap().value, "publickey");
        assert_eq!(ssh_login(&opts, "alice").path, SshPath::NeedsPam);
    }

    #[test]
    fn root_paths_over_ssh() {
        let path = |main: &str, drop_in: &str| {
            let (_d, opts, _) = sshd(&[
                ("sshd_config", main),
                ("sshd_config.d/smsotp.conf", drop_in),
            ]);
            ssh_login(&opts, "root").path
        };
        let main = "Include sshd_config.d/*.conf\nUsePAM yes\n";
        // Debian's default prohibit-password refuses keyboard-interactive.
        assert_eq!(path(main, DROP_IN), SshPath::RootRefused);
        for v in ["without-password", "forced-commands-only"] {
            let d = format!("{DROP_IN}PermitRootLogin {v}\n");
            assert_eq!(path(main, &d), SshPath::RootRefused, "{v}");
        }
        let d = format!("{DROP_IN}PermitRootLogin no\n");
        assert_eq!(path(main, &d), SshPath::RootNotPermitted);
        let d = format!("{DROP_IN}PermitRootLogin yes\n");
        assert_eq!(path(main, &d), SshPath::NeedsPam);
        let d = format!("{DROP_IN}Match User root\n  AuthenticationMethods publickey\n");
        assert_eq!(path(main, &d), SshPath::KeyAlone("publickey".into()));
        // A block for other users does not touch root.
        let d = format!("{DROP_IN}Match User alice,bob\n  AuthenticationMethods publickey\n");
        assert_eq!(path(main, &d), SshPath::RootRefused);
        // No AuthenticationMethods: a key alone logs root in.
        assert_eq!(path(main, ""), SshPath::KeyAlone("publickey".into()));
        // Refused for everyone: not root's own problem.
        let d = "KbdInteractiveAuthentication no\nAuthenticationMethods keyboard-interactive\n";
        assert_eq!(path(main, d), SshPath::Refused);
    }

    #[test]
    fn root_lock_out_is_an_error_with_the_match_block_as_fix() {
        let (_d, opts, _) = sshd(&[
            ("sshd_config", "Include sshd_config.d/*.conf\nUsePAM yes\n"),
            ("sshd_config.d/smsotp.conf", DROP_IN),
        ]);
        let mut f = Vec::new();
        check_root(&opts, &mut f);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].level, Level::Error);
        assert!(
            f[0].message.starts_with("root cannot log in over SSH"),
            "{f:?}"
        );
        let fix = f[0].fix.as_deref().unwrap();
        assert!(
            fix.contains("Match User root") && fix.contains("smsotp.conf"),
            "{fix}"
        );
    }

    #[test]
    fn password_authentication_matters_only_when_listed() {
        let judge = |text: &str| {
            let (_d, opts, _) = sshd(&[("sshd_config", text)]);
            let mut f = Vec::new();
            check_sshd(&opts, &mut f);
            f.into_iter()
                .find(|x| x.message.starts_with("PasswordAuthentication"))
                .map(|x| x.level)
        };
        let base = "UsePAM yes\nPasswordAuthentication yes\n";
        assert_eq!(
            judge(&format!(
                "{base}AuthenticationMethods publickey,keyboard-interactive\n"
            )),
            Some(Level::Info)
        );
        assert_eq!(
            judge(&format!(
                "{base}AuthenticationMethods password,keyboard-interactive\n"
            )),
            Some(Level::Warning)
        );
        assert_eq!(judge(base), Some(Level::Warning));
        assert_eq!(
            judge("UsePAM yes\nPasswordAuthentication no\nAuthenticationMethods password\n"),
            None
        );
    }

    #[test]
    fn debian_stacks_are_judged_right() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("common-auth"),
            "auth [success=1 default=ignore] pam_unix.so nullok\nauth requisite pam_deny.so\n\
             auth required pam_permit.so\nauth required pam_smsotp.so\nauth optional pam_cap.so\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("su"),
            "auth sufficient pam_rootok.so\n@include common-auth\n",
        )
        .unwrap();
        let mut f = Vec::new();
        let lines = read_stack(d.path(), "su", &mut f);
        check_stack("su", &lines, Path::new("/etc/smsotp/smsotp.toml"), &mut f);
        assert!(f.iter().all(|x| x.level <= Level::Info), "{f:?}");
        let rootok = f.iter().find(|x| x.message.contains("pam_rootok")).unwrap();
        assert_eq!(rootok.level, Level::Info);
        assert!(rootok.fix.is_none());
        assert!(f
            .iter()
            .any(|x| x.level == Level::Ok && x.message.contains("pam_smsotp is required")));

        // A jump one line longer skips pam_smsotp: an error whose fix is
        // the right jump, never "requisite" for a jump.
        std::fs::write(
            d.path().join("common-auth"),
            "auth [success=3 default=ignore] pam_unix.so nullok\nauth requisite pam_deny.so\n\
             auth required pam_permit.so\nauth required pam_smsotp.so\n",
        )
        .unwrap();
        let mut f = Vec::new();
        let lines = read_stack(d.path(), "su", &mut f);
        check_stack("su", &lines, Path::new("/etc/smsotp/smsotp.toml"), &mut f);
        let skip = f
            .iter()
            .find(|x| x.message.contains("pam_unix.so"))
            .unwrap();
        assert_eq!(skip.level, Level::Error);
        assert!(
            skip.fix.as_deref().unwrap().contains("success=2 or less"),
            "{skip:?}"
        );

        // An unknown module: check what it does; exemptions go in the policy.
        std::fs::write(
            d.path().join("svc"),
            "auth requisite pam_unix.so\nauth sufficient pam_succeed_if.so user ingroup staff\n\
             auth required pam_smsotp.so\n",
        )
        .unwrap();
        let mut f = Vec::new();
        let lines = read_stack(d.path(), "svc", &mut f);
        check_stack("svc", &lines, Path::new("/etc/smsotp/smsotp.toml"), &mut f);
        let skip = f
            .iter()
            .find(|x| x.message.contains("pam_succeed_if"))
            .unwrap();
        assert_eq!(skip.level, Level::Warning);
        let fix = skip.fix.as_deref().unwrap();
        assert!(
            fix.contains("exempt_groups") && !fix.contains("requisite"),
            "{fix}"
        );
    }

    #[test]
    fn a_substack_is_one_line_to_jumps_and_keeps_its_done() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("system-auth"),
            "auth sufficient pam_unix.so\nauth requisite pam_deny.so\nauth required pam_permit.so\n",
        )
        .unwrap();
        let judge = |svc: &str| {
            std::fs::write(d.path().join("svc"), svc).unwrap();
            let mut f = Vec::new();
            let lines = read_stack(d.path(), "svc", &mut f);
            check_stack("svc", &lines, Path::new("/etc/smsotp/smsotp.toml"), &mut f);
            f.into_iter()
                .filter(|x| x.level == Level::Error)
                .map(|x| x.message)
                .collect::<Vec<_>>()
        };
        // `done` inside the substack ends only the substack.
        let e = judge("auth substack system-auth\nauth required pam_smsotp.so\n");
        assert!(e.is_empty(), "{e:?}");
        // Jumping 2 from the first line skips the substack (one line) and
        // pam_smsotp; the three lines it holds do not count.
        let e = judge(
            "auth [success=2 default=ignore] pam_sss.so\nauth substack system-auth\n\
             auth required pam_smsotp.so\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("pam_sss.so"), "{e:?}");
        let e = judge(
            "auth [success=1 default=ignore] pam_sss.so\nauth substack system-auth\n\
             auth required pam_smsotp.so\n",
        );
        assert!(e.is_empty(), "{e:?}");
        // An include is inlined: the same jump now lands inside it.
        let e = judge(
            "auth [success=2 default=ignore] pam_sss.so\nauth include system-auth\n\
             auth required pam_smsotp.so\n",
        );
        assert!(e.iter().all(|m| !m.contains("pam_sss.so")), "{e:?}");
        assert!(
            e.iter().any(|m| m.contains("sufficient pam_unix.so")),
            "{e:?}"
        );
    }
}
