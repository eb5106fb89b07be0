//! sshd_config as sshd reads it: Include drop-ins, Match blocks, the
//! first value of each keyword winning; and what it means for a login.

use std::path::{Path, PathBuf};

use crate::report::{Finding, Level};

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
    let text = match super::read_text(path) {
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

pub(super) fn wildcard(pattern: &str, name: &str) -> bool {
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

pub(super) const KBD_KEYS: &[&str] = &[
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
