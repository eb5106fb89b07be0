//! `smsotp doctor`: the config, then the host. Everything that could lock
//! an admin out or let someone in without a code is a warning or an error.
//! The LDAP directories are checked step by step in `doctor_ldap.rs`, a
//! Redis store in `doctor_redis.rs`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use smsotp_core::config::{short_secret_warning, Config, DirectorySpec, NoPhone, ProviderDown};
use smsotp_core::directory::{Accounts, SystemAccounts};
use smsotp_core::files::{self, FileRule};
use smsotp_core::flow::{Engine, LogOptions};
use smsotp_core::sms::ProviderSpec;

use crate::host;
use crate::report::{self, Failure, Finding, Level};
use crate::Output;

pub(crate) fn run(
    config: &Path,
    sshd_config: &Path,
    pam_dir: &Path,
    no_network: bool,
    user: Option<&str>,
) -> Result<Output, Failure> {
    let mut f = Vec::new();
    let cfg = match Config::load(config) {
        Ok(c) => {
            f.push(Finding::new(
                Level::Ok,
                "config",
                format!("{} is valid", config.display()),
            ));
            Some(c)
        }
        Err(e) => {
            let fail = crate::config_err(e);
            let mut x = Finding::new(Level::Error, "config", fail.message);
            if let Some(fix) = fail.fix {
                x = x.fix(fix);
            }
            f.push(x);
            None
        }
    };

    let opts = host::read_sshd(sshd_config, &mut f);
    host::check_sshd(&opts, &mut f);
    host::check_root(&opts, &mut f);
    pam(pam_dir, config, &mut f);

    if let Some(cfg) = &cfg {
        let messages = smsotp_core::messages::Messages::load(
            &cfg.messages,
            cfg.otp.message_set.then_some(&cfg.otp.message),
        );
        let (_, _, sms_warnings) = crate::check_config::sms_section(
            cfg,
            &smsotp_core::config::sms_fit::every_language(cfg, &messages),
        );
        for w in cfg.warnings.iter().chain(&sms_warnings) {
            f.push(Finding::new(Level::Warning, "config", w.to_string()));
        }
        message_files(&messages, &mut f);
        policy(cfg, &mut f);
        f.extend(report::phone_list_findings(
            &smsotp_core::directory::check_phone_lists(cfg),
        ));
        file_modes(cfg, &mut f);
        radius_secrets(cfg, &mut f);
        providers(cfg, no_network, &mut f);
        crate::doctor_ldap::check(cfg, user, no_network, &mut f);
        let usable = match &cfg.store {
            smsotp_core::config::StoreSpec::Redis(r) => crate::doctor_redis::check(cfg, r, &mut f),
            _ => crate::doctor_redis::Usable::Yes,
        };
        if usable == crate::doctor_redis::Usable::Yes {
            state(cfg, &opts, &mut f);
        } else {
            f.push(Finding::new(
                Level::Info,
                "users",
                "the admins' numbers and lockouts are not checked: the state store cannot be \
                 used (see above)",
            ));
        }
    }

    let code = report::findings_exit(&f);
    let json = json!({
        "ok": code == 0,
        "findings": f.iter().map(Finding::to_json).collect::<Vec<_>>(),
        "errors": f.iter().filter(|x| x.level == Level::Error).count(),
        "warnings": f.iter().filter(|x| x.level == Level::Warning).count(),
    });
    let text = report::findings_text(&f);
    Ok(Output { text, json, code })
}

/// The languages logins can read, and each problem of the admin's
/// message files (a login shows the shipped text instead, so it is a
/// warning, not an error).
fn message_files(messages: &smsotp_core::messages::Messages, f: &mut Vec<Finding>) {
    let languages: Vec<&str> = messages.languages().collect();
    f.push(Finding::new(
        Level::Ok,
        "messages",
        format!(
            "messages in {} (default {})",
            languages.join(", "),
            messages.default_catalogue().lang()
        ),
    ));
    for p in messages.problems() {
        f.push(Finding::new(Level::Warning, "messages", p.to_string()).fix(
            "correct the file (smsotp check-config lists every problem); until then \
                 logins show the shipped text for it",
        ));
    }
}

/// Every service file in `dir` whose auth stack loads pam_smsotp.
fn pam(dir: &Path, config: &Path, f: &mut Vec<Finding>) {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(e) => {
            f.push(Finding::new(
                Level::Error,
                "pam",
                format!("cannot read {}: {e}", dir.display()),
            ));
            return;
        }
    };
    names.sort();
    let mut any = false;
    let mut seen = std::collections::BTreeSet::new();
    for name in &names {
        // common-* files are included by services; judged through them.
        if name.starts_with("common-") {
            continue;
        }
        let mut local = Vec::new();
        let lines = host::read_stack(dir, name, &mut local);
        if !lines.iter().any(host::AuthLine::is_smsotp) {
            if name == "sshd" {
                f.push(
                    Finding::new(
                        Level::Warning,
                        "pam",
                        format!("{}/sshd does not load pam_smsotp: SSH logins ask no code", dir.display()),
                    )
                    .fix("run `pam-auth-update --enable smsotp` (Debian), or add `auth required pam_smsotp.so` after the password check"),
                );
            }
            continue;
        }
        any = true;
        host::check_stack(name, &lines, config, &mut local);
        for x in local {
            if seen.insert(x.message.clone()) {
                f.push(x);
            }
        }
    }
    if !any {
        f.push(Finding::new(
            Level::Warning,
            "pam",
            format!("no PAM service in {} loads pam_smsotp", dir.display()),
        ));
    }
}

fn policy(cfg: &Config, f: &mut Vec<Finding>) {
    let p = &cfg.policy;
    if p.no_phone == NoPhone::Allow {
        f.push(
            Finding::new(
                Level::Warning,
                "policy",
                "no_phone = \"allow\": users without a number log in with the password alone",
            )
            .fix("use \"enroll\" or \"deny\""),
        );
    }
    if p.no_phone == NoPhone::Enroll {
        f.push(Finding::new(
            Level::Info,
            "policy",
            "no_phone = \"enroll\": a user without a number registers one at first login \
             (whoever knows the password first registers the number)",
        ));
    }
    if p.provider_down == ProviderDown::Allow {
        f.push(
            Finding::new(
                Level::Warning,
                "policy",
                "provider_down = \"allow\": during an SMS outage the password alone lets users in",
            )
            .fix("use \"deny\" and hand out backup codes"),
        );
    } else if !p.backup_codes {
        f.push(Finding::new(
            Level::Warning,
            "policy",
            "provider_down = \"deny\" and backup_codes = false: an SMS outage locks everyone out",
        ).fix("set backup_codes = true and hand admins backup codes"));
    }
    if p.user_opt_out && p.mandatory {
        f.push(Finding::new(
            Level::Warning,
            "policy",
            "user_opt_out = true is IGNORED because mandatory = true: opted-out users still need a code",
        ).fix("set mandatory = false to honour opt-outs, or user_opt_out = false"));
    }
    if p.opt_out_honoured() {
        f.push(Finding::new(
            Level::Info,
            "policy",
            "opt-outs are honoured: users marked with `smsotp user opt-out` log in without a code",
        ));
    }
    if !p.exempt_users.is_empty() || !p.exempt_groups.is_empty() {
        f.push(Finding::new(
            Level::Info,
            "policy",
            format!(
                "exempt (no code asked): users [{}], groups [{}]",
                p.exempt_users
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                p.exempt_groups
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
}

fn check_file(path: &Path, rule: FileRule, what: &str, f: &mut Vec<Finding>) {
    // Opened without blocking and checked as the module checks it (a
    // regular file, a symlink refused or checked, owner, mode).
    match files::inspect(path, rule) {
        Err(files::FileError::Read { source: e, .. })
            if e.kind() == std::io::ErrorKind::NotFound =>
        {
            f.push(Finding::new(
                Level::Info,
                "files",
                format!("{what} {} does not exist yet", path.display()),
            ))
        }
        Ok(m) if m.uid() != 0 => f.push(
            Finding::new(
                Level::Warning,
                "files",
                format!(
                    "{what} {} is owned by uid {}, not root",
                    path.display(),
                    m.uid()
                ),
            )
            .fix(format!("chown root: {}", path.display())),
        ),
        Ok(m) => f.push(Finding::new(
            Level::Ok,
            "files",
            format!(
                "{what} {} (mode {:04o}, root)",
                path.display(),
                m.mode() & 0o7777
            ),
        )),
        // The path at fault may be a directory on a symlink's path.
        Err(files::FileError::Unsafe {
            path: at,
            problem,
            fix,
        }) => f.push(
            Finding::new(
                Level::Error,
                "files",
                if at == path {
                    format!("{what} {}: {problem}", path.display())
                } else {
                    format!("{what} {}: {} {problem}", path.display(), at.display())
                },
            )
            .fix(fix),
        ),
        Err(e) => f.push(Finding::new(Level::Error, "files", e.to_string())),
    }
}

fn file_modes(cfg: &Config, f: &mut Vec<Finding>) {
    check_file(&cfg.path, FileRule::Config, "config", f);
    check_file(&cfg.otp.key_file, FileRule::Secret, "code key", f);
    if let Some(path) = cfg.store.local_file() {
        check_file(path, FileRule::Secret, "state store", f);
    }
    if let smsotp_core::config::StoreSpec::Redis(r) = &cfg.store {
        if let Some(pw) = &r.password_file {
            check_file(pw, FileRule::Secret, "store password (redis)", f);
        }
    }
    for d in &cfg.directories {
        if let DirectorySpec::File { path } = d {
            check_file(path, FileRule::Data, "phone list", f);
        }
    }
    if let Some(r) = &cfg.radius {
        for c in &r.clients {
            check_file(
                &c.secret_file,
                FileRule::Secret,
                &format!("RADIUS secret of {}", c.name),
                f,
            );
        }
    }
    if let Some(a) = &cfg.audit.file {
        check_file(a, FileRule::Secret, "audit file", f);
    }
    for p in &cfg.providers {
        match p {
            ProviderSpec::Http(h) => {
                for (key, path) in h.secret_paths() {
                    check_file(
                        &path,
                        FileRule::Secret,
                        &format!("provider {} secret ({key})", h.name),
                        f,
                    );
                }
                if let Some(ca) = &h.transport.ca_file {
                    check_file(
                        ca,
                        FileRule::Certificates,
                        &format!("provider {} ca_file", h.name),
                        f,
                    );
                }
            }
            ProviderSpec::Smpp(s) => {
                if let Some(pw) = &s.password_file {
                    check_file(
                        pw,
                        FileRule::Secret,
                        &format!("provider {} password_file", s.name),
                        f,
                    );
                }
            }
            ProviderSpec::Command { program, name, .. } => {
                // An admin's program runs as root at every login: nobody
                // else may be able to change it.
                check_file(
                    program,
                    FileRule::Data,
                    &format!("provider {name} program"),
                    f,
                );
            }
            _ => {}
        }
    }
}

/// The length of each RADIUS client's shared secret (never the secret).
fn radius_secrets(cfg: &Config, f: &mut Vec<Finding>) {
    let Some(r) = &cfg.radius else { return };
    for c in &r.clients {
        let path = c.secret_file.display();
        // An unreadable or unsafe file is reported by file_modes.
        let Ok(secret) = files::read_secret(&c.secret_file) else {
            continue;
        };
        let fix = format!(
            "(umask 077; head -c 24 /dev/urandom | base64 > {path}), then set the same secret \
             on the NAS and restart smsotp-radiusd"
        );
        let n = secret.expose().len();
        f.push(if n == 0 {
            Finding::new(
                Level::Error,
                "radius",
                format!("client {}: the shared secret in {path} is empty", c.name),
            )
            .fix(fix)
        } else if let Some(warning) = short_secret_warning(&c.name, n) {
            Finding::new(
                Level::Warning,
                "radius",
                format!(
                    "{warning} (a short one can be guessed offline from one captured packet; \
                     the file is {path})"
                ),
            )
            .fix(fix)
        } else {
            Finding::new(
                Level::Ok,
                "radius",
                format!("client {}: the shared secret is {n} bytes", c.name),
            )
        });
    }
}

fn providers(cfg: &Config, no_network: bool, f: &mut Vec<Finding>) {
    for p in &cfg.providers {
        let name = p.name();
        match p {
            ProviderSpec::Outbox { path, .. } => {
                let dir = path.parent().unwrap_or(Path::new("/"));
                let ok = nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok();
                f.push(if ok {
                    Finding::new(
                        Level::Ok,
                        "provider",
                        format!("{name}: outbox {} is writable", path.display()),
                    )
                } else {
                    Finding::new(
                        Level::Error,
                        "provider",
                        format!("{name}: cannot write into {}", dir.display()),
                    )
                    .fix(format!("mkdir -p {} (owned by root)", dir.display()))
                });
                f.push(Finding::new(
                    Level::Warning,
                    "provider",
                    format!("{name}: the outbox only writes to a file; no real SMS is sent"),
                ));
            }
            ProviderSpec::Command { program, .. } => {
                let ok =
                    nix::unistd::access(program.as_path(), nix::unistd::AccessFlags::X_OK).is_ok();
                f.push(if ok {
                    Finding::new(
                        Level::Ok,
                        "provider",
                        format!("{name}: {} is executable", program.display()),
                    )
                } else {
                    Finding::new(
                        Level::Error,
                        "provider",
                        format!("{name}: {} is not executable", program.display()),
                    )
                });
            }
            ProviderSpec::Http(h) => {
                let endpoint = h.endpoint();
                if no_network {
                    f.push(Finding::new(
                        Level::Info,
                        "provider",
                        format!("{name}: {endpoint} not checked (--no-network)"),
                    ));
                    continue;
                }
                f.push(match connect(&endpoint) {
                    Ok(addr) => Finding::new(
                        Level::Ok,
                        "provider",
                        format!("{name}: {endpoint} reachable ({addr})"),
                    ),
                    Err(e) => Finding::new(
                        Level::Error,
                        "provider",
                        format!("{name}: {endpoint} unreachable: {e}"),
                    )
                    .fix("check DNS, the firewall and any proxy setting"),
                });
            }
            #[allow(unreachable_patterns)]
            _ => f.push(Finding::new(
                Level::Info,
                "provider",
                format!("{name}: not checked by doctor; try `smsotp test-send`"),
            )),
        }
    }
}

/// TCP connect to the endpoint's host and port within 3 s.
fn connect(endpoint: &str) -> Result<String, String> {
    use std::net::ToSocketAddrs;
    let (scheme, rest) = endpoint.split_once("://").ok_or("not a URL")?;
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let with_port = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        hostport.to_owned()
    } else {
        format!("{hostport}:{}", if scheme == "http" { 80 } else { 443 })
    };
    let addrs: Vec<_> = with_port
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .collect();
    let mut last = "no address".to_owned();
    for a in addrs {
        match std::net::TcpStream::connect_timeout(&a, Duration::from_secs(3)) {
            Ok(_) => return Ok(a.to_string()),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

/// The store, and who could be locked out.
fn state(cfg: &Config, opts: &[host::SshdOption], f: &mut Vec<Finding>) {
    let log = LogOptions {
        ident: "smsotp".into(),
        debug: false,
        stderr: false,
        server: None,
    };
    let engine = match Engine::open(cfg.clone(), &log) {
        Ok(e) => {
            f.push(Finding::new(
                Level::Ok,
                "store",
                "the state store and the code key open",
            ));
            e
        }
        Err(e) => {
            f.push(Finding::new(
                Level::Error,
                "store",
                format!("cannot open the state store: {e}"),
            ));
            return;
        }
    };
    let store = engine.store();
    if let Ok(users) = store.opted_out_users() {
        if !users.is_empty() && !cfg.policy.opt_out_honoured() {
            f.push(Finding::new(
                Level::Warning,
                "policy",
                format!(
                    "{} user(s) marked opted out ({}) but opt-outs are ignored by the policy",
                    users.len(),
                    users.join(", ")
                ),
            ));
        }
    }
    for user in admins() {
        admin(cfg, &engine, opts, &user, f);
    }
}

/// Root, the admin running this (`$SUDO_USER`) and the members of the
/// `sudo` group: the people who must still get in to fix things.
fn admins() -> Vec<String> {
    let mut admins = vec!["root".to_owned()];
    if let Ok(u) = std::env::var("SUDO_USER") {
        admins.push(u);
    }
    if let Ok(Some(g)) = nix::unistd::Group::from_name("sudo") {
        admins.extend(g.mem);
    }
    let mut seen = std::collections::BTreeSet::new();
    admins.retain(|u| !u.is_empty() && seen.insert(u.clone()));
    admins
}

/// Can this admin still get in once 2FA is on, over SSH and elsewhere?
fn admin(
    cfg: &Config,
    engine: &Engine,
    opts: &[host::SshdOption],
    user: &str,
    f: &mut Vec<Finding>,
) {
    let p = &cfg.policy;
    let store = engine.store();
    let login = host::ssh_login(opts, user);
    let ssh_needs_code = login.path == host::SshPath::NeedsPam;
    let exempt_group = if p.exempt_groups.is_empty() {
        None
    } else {
        SystemAccounts
            .groups(user)
            .unwrap_or_default()
            .into_iter()
            .find(|g| p.exempt_groups.contains(g))
    };
    let exempt = if p.exempt_users.contains(user) {
        Some("policy.exempt_users".to_owned())
    } else {
        exempt_group.map(|g| format!("group {g} in policy.exempt_groups"))
    };
    let opted_out = p.opt_out_honoured() && store.opt_out(user).ok().flatten().is_some();
    let codes = store.backup_codes_left(user).unwrap_or(0);
    let fix_all = format!(
        "`smsotp user set-phone {user} +NUMBER` (the admin's mobile), or \
         `smsotp backup-codes generate {user}` (print them and lock them away), or add \
         \"{user}\" to policy.exempt_users (the password alone then passes pam_smsotp)"
    );
    let finding = if let Some(why) = exempt {
        let ssh = if ssh_needs_code {
            "; over SSH, keyboard-interactive asks only the password (pam_smsotp returns PAM_IGNORE)"
        } else {
            ""
        };
        Finding::new(
            Level::Info,
            "users",
            format!("{user} is exempt ({why}): never asked for a code{ssh}"),
        )
    } else if opted_out {
        Finding::new(
            Level::Info,
            "users",
            format!("{user} is opted out (honoured by the policy): never asked for a code"),
        )
    } else {
        match engine.find_phone(user) {
            Ok(Some(found)) if codes == 0 && p.backup_codes => Finding::new(
                Level::Warning,
                "users",
                format!(
                    "{user} has {} (from {}) but no backup codes: if no SMS can arrive, \
                     {user} cannot log in",
                    found.phone.masked(),
                    found.source
                ),
            )
            .fix(format!("smsotp backup-codes generate {user}")),
            Ok(Some(found)) => Finding::new(
                Level::Ok,
                "users",
                format!(
                    "{user} has {} (from {}) and {codes} backup code(s)",
                    found.phone.masked(),
                    found.source
                ),
            ),
            Ok(None) => no_phone(cfg, user, codes, &login, &fix_all),
            Err(e) => Finding::new(
                Level::Error,
                "users",
                format!("{user}: cannot look up the number: {e}"),
            )
            .fix("fix the [[directory]] source named above, then run doctor again"),
        }
    };
    f.push(finding);
    let locked = store
        .failures(user, engine.now())
        .map(|s| s.locked_until.is_some())
        .unwrap_or(false);
    if locked {
        f.push(
            Finding::new(Level::Warning, "users", format!("{user} is locked out now"))
                .fix(format!("smsotp user unlock {user}")),
        );
    }
}

/// An admin who is not exempt and has no number.
fn no_phone(
    cfg: &Config,
    user: &str,
    codes: u32,
    login: &host::SshLogin<'_>,
    fix_all: &str,
) -> Finding {
    let p = &cfg.policy;
    let usable_codes = p.backup_codes && codes > 0;
    match p.no_phone {
        NoPhone::Deny if !usable_codes => {
            if user == "root" && login.path == host::SshPath::NeedsPam {
                let permit = login.permit_text();
                Finding::new(
                    Level::Error,
                    "users",
                    format!(
                        "root cannot log in over SSH: every method root may use ({}; {permit}) \
                         asks the SMS code, and root has no number, no backup codes and is not \
                         exempt: LOCKED OUT once 2FA is on",
                        login.methods_text()
                    ),
                )
                .fix(format!(
                    "{fix_all}; or give root a key-only way in: {}",
                    host::ROOT_MATCH_FIX
                ))
            } else {
                Finding::new(
                    Level::Warning,
                    "users",
                    format!(
                        "{user} has no number, no backup codes and is not exempt: LOCKED OUT \
                         of every login as {user} that asks a code once 2FA is on"
                    ),
                )
                .fix(fix_all)
            }
        }
        NoPhone::Deny => Finding::new(
            Level::Warning,
            "users",
            format!("{user} has no number: only their {codes} backup code(s) let them in"),
        )
        .fix(format!("smsotp user set-phone {user} +NUMBER")),
        NoPhone::Enroll => Finding::new(
            Level::Warning,
            "users",
            format!(
                "{user} has no number: whoever first logs in as {user} with the password \
                 registers one (no_phone = \"enroll\")"
            ),
        )
        .fix(format!("smsotp user set-phone {user} +NUMBER")),
        NoPhone::Allow => Finding::new(
            Level::Warning,
            "users",
            format!("{user} has no number: logs in with the password alone (no_phone = \"allow\")"),
        )
        .fix(format!("smsotp user set-phone {user} +NUMBER")),
    }
}
