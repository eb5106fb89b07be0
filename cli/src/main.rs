//! `smsotp`: the admin tool. Check the config and the host before turning
//! the second factor on, send a test SMS, and look after users: their
//! number, lockout, backup codes and opt-out. See smsotp(8).
//!
//! Every command prints text for people, or one JSON object with `--json`.
//! Exit codes (the same in smsotp(8) and the README; [`report::exit`]):
//! 0 ok; 1 problems found (`check-config`: phone-list entries a login would
//! refuse; `doctor`: a warning or an error); 2 usage (also an unknown
//! `test-send --provider`); then sysexits(3): 65 bad data (a number given
//! or listed that is not valid or not allowed, a phone list that does not
//! parse), 67 no number for the user, 69 no provider could send, 74 the
//! store (or a phone list) cannot be read or written, 77 not root, 78 the
//! config is invalid or unsafe, or forbids the action.

mod doctor;
mod host;
mod report;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use smsotp_core::audit::Level as AuditLevel;
use smsotp_core::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};
use smsotp_core::directory::{self, DirectoryError};
use smsotp_core::flow::{Engine, FlowError, LogOptions};
use smsotp_core::phone::Phone;
use smsotp_core::store::PhoneRecord;

use report::{exit, Failure};

#[derive(Debug, Parser)]
#[command(
    name = "smsotp",
    version,
    about = "Administer smsotp: SMS one-time passwords as the second factor of logins",
    long_about = None
)]
struct Cli {
    /// The config file.
    #[arg(long, global = true, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the config and print its effective values (secrets redacted).
    CheckConfig,
    /// check-config, plus sshd, the PAM stacks, file modes, the store and
    /// the providers: warns before anything that could lock you out or let
    /// someone in.
    Doctor {
        /// sshd's config (its Include drop-ins are followed).
        #[arg(long, value_name = "PATH", default_value = "/etc/ssh/sshd_config")]
        sshd_config: PathBuf,
        /// The PAM service directory.
        #[arg(long, value_name = "DIR", default_value = "/etc/pam.d")]
        pam_dir: PathBuf,
        /// Do not connect to HTTP providers.
        #[arg(long)]
        no_network: bool,
    },
    /// Send a test SMS through the configured providers (failover as at
    /// login), or through one of them.
    TestSend {
        /// A number (international form, or national in phone.default_region).
        #[arg(
            long,
            value_name = "NUMBER",
            conflicts_with = "user",
            required_unless_present = "user"
        )]
        to: Option<String>,
        /// The number registered for this user.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// Only this provider (its `name`), without failover.
        #[arg(long, value_name = "NAME")]
        provider: Option<String>,
    },
    /// See and change a user's state.
    #[command(subcommand)]
    User(UserCommand),
    /// Hand out or revoke backup codes.
    #[command(subcommand)]
    BackupCodes(BackupCommand),
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Masked number and its source, lockout, SMS sent in the per-user
    /// window, backup codes left, opt-out.
    Show { user: String },
    /// Register USER's number in the store (ahead of the phone files).
    SetPhone { user: String, number: String },
    /// Remove the number registered in the store.
    ClearPhone { user: String },
    /// Lift a lockout, reset the failure count and clear the user's SMS
    /// window (limits.sms_per_user), so the next login sends a code.
    Unlock { user: String },
    /// Mark USER as opted out (needs policy.user_opt_out = true).
    OptOut { user: String },
    /// Remove the opt-out mark.
    OptIn { user: String },
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// Make new codes (replacing the old ones) and print them once.
    Generate {
        user: String,
        /// How many codes (1-50).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=50))]
        count: u16,
    },
    /// Delete all of USER's backup codes.
    Revoke { user: String },
}

/// What a command produced: text for people and the same as JSON.
struct Output {
    text: String,
    json: Value,
    code: i32,
}

fn main() {
    let cli = Cli::parse();
    let json = cli.json;
    let code = match run(cli) {
        Ok(out) => {
            if json {
                println!("{}", out.json);
            } else if !out.text.is_empty() {
                print!("{}", out.text);
            }
            out.code
        }
        Err(f) => {
            if json {
                println!(
                    "{}",
                    json!({"ok": false, "error": f.message, "fix": f.fix, "exit": f.code})
                );
            } else {
                eprintln!("smsotp: {}", f.message);
                if let Some(fix) = &f.fix {
                    eprintln!("  fix: {fix}");
                }
            }
            f.code
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> Result<Output, Failure> {
    require_root(&cli)?;
    match &cli.command {
        Command::CheckConfig => check_config(&cli.config),
        Command::Doctor {
            sshd_config,
            pam_dir,
            no_network,
        } => doctor::run(&cli.config, sshd_config, pam_dir, *no_network),
        Command::TestSend { to, user, provider } => test_send(
            &cli.config,
            to.as_deref(),
            user.as_deref(),
            provider.as_deref(),
        ),
        Command::User(u) => user_command(&cli.config, u),
        Command::BackupCodes(b) => backup_command(&cli.config, b),
    }
}

/// The tool reads root-only files and writes the store: root only, except
/// `check-config` of a file the caller owns.
fn require_root(cli: &Cli) -> Result<(), Failure> {
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        return Ok(());
    }
    if matches!(cli.command, Command::CheckConfig) {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata(&cli.config).is_ok_and(|m| m.uid() == euid.as_raw()) {
            return Ok(());
        }
    }
    Err(Failure::new(
        exit::NOPERM,
        "must run as root: it reads root-only files and writes the state store",
    )
    .fix("run it with sudo (check-config works unprivileged on a --config file you own)"))
}

fn load_config(path: &Path) -> Result<Config, Failure> {
    Config::load(path).map_err(config_err)
}

/// A config that cannot be used: EX_CONFIG, with the loader's file:line:column.
pub(crate) fn config_err(e: ConfigError) -> Failure {
    match e {
        // The loader's own advice is the PAM module's `config=PATH`.
        ConfigError::Read { path, source } => Failure::new(
            exit::CONFIG,
            format!("{}: cannot read: {source}", path.display()),
        )
        .fix("create it, or point to another file with --config PATH"),
        e => Failure::new(exit::CONFIG, e.to_string()),
    }
}

fn open_engine(path: &Path) -> Result<Engine, Failure> {
    open_engine_with(load_config(path)?)
}

fn open_engine_with(cfg: Config) -> Result<Engine, Failure> {
    let log = LogOptions {
        ident: "smsotp".into(),
        debug: false,
        stderr: false,
        server: None,
    };
    Engine::open(cfg, &log).map_err(flow_err)
}

/// A core error, by kind: a bad number or phone list is the data's fault
/// (65), an unsafe file the setup's (78), the rest could not be read or
/// written (74).
fn flow_err(e: FlowError) -> Failure {
    match e {
        FlowError::Directory(DirectoryError::BadNumber {
            source_name,
            user,
            error,
        }) => Failure::new(
            exit::DATAERR,
            format!("{source_name}: the number for {user}: {}", error.problem()),
        )
        .fix(error.fix()),
        FlowError::Directory(DirectoryError::File(e @ ConfigError::Invalid { .. })) => {
            Failure::new(exit::DATAERR, e.to_string())
                .fix("correct that line; each must look like: alice = \"+12025550123\"")
        }
        FlowError::Directory(DirectoryError::File(e @ ConfigError::Unsafe { .. })) => {
            Failure::new(exit::CONFIG, e.to_string())
        }
        e => Failure::new(exit::IOERR, e.to_string()),
    }
}

fn store_err(e: impl std::fmt::Display) -> Failure {
    Failure::new(exit::IOERR, e.to_string())
}

// ------------------------------------------------------------ check-config

fn check_config(path: &Path) -> Result<Output, Failure> {
    let cfg = load_config(path)?;
    let eff = effective(&cfg);
    let lists = directory::check_phone_lists(&cfg);
    let bad: Vec<Value> = lists
        .bad
        .iter()
        .map(|b| {
            json!({"location": b.location, "path": b.path, "line": b.line, "user": b.user,
                   "problem": b.problem, "fix": b.fix})
        })
        .collect();
    let mut text = format!(
        "{}: valid; the effective values follow (secrets are never shown: they stay in their files)\n\n",
        path.display()
    );
    text.push_str(&report::effective_text(&eff));
    // Settings that work but are probably not what the admin meant.
    for w in &cfg.warnings {
        text.push_str(&format!("warning: {w}\n"));
    }
    // The count, each bad entry with its fix, and what they mean.
    let findings = report::phone_list_findings(&lists);
    if let Some((summary, entries)) = findings.split_last() {
        text.push_str(&summary.message);
        text.push('\n');
        for f in entries {
            text.push_str(&format!("  {}\n", f.message));
            if let Some(fix) = &f.fix {
                text.push_str(&format!("    fix: {fix}\n"));
            }
        }
        if let Some(fix) = &summary.fix {
            text.push_str(&format!("\n{} problem(s): {fix}\n", entries.len()));
        }
    }
    let code = report::findings_exit(&findings);
    Ok(Output {
        text,
        json: json!({"ok": lists.bad.is_empty(), "config": path, "effective": eff,
                     "warnings": cfg.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
                     "phone_lists": {"valid": lists.valid, "bad": bad}}),
        code,
    })
}

/// The effective config, without secrets: secret values live in files and
/// only their paths are shown; HTTP providers show only where they connect.
pub fn effective(c: &Config) -> Value {
    use smsotp_core::config::{
        Alphabet, ClientMode, DirectorySpec, NoPhone, PrimaryAuth, ProviderDown,
    };
    let d = |d: std::time::Duration| smsotp_core::config::human_duration(d);
    let providers: Vec<Value> = c.providers.iter().map(provider_json).collect();
    json!({
        "otp": {
            "length": c.otp.length,
            "alphabet": match c.otp.alphabet { Alphabet::Digits => "digits", Alphabet::Alphanumeric => "alphanumeric" },
            "ttl": d(c.otp.ttl),
            "max_attempts": c.otp.max_attempts.get(),
            "resend": {"max": c.otp.resend_max, "cooldown": d(c.otp.resend_cooldown)},
            "key_file": c.otp.key_file,
        },
        "policy": {
            "exempt_users": c.policy.exempt_users,
            "exempt_groups": c.policy.exempt_groups,
            "no_phone": match c.policy.no_phone { NoPhone::Deny => "deny", NoPhone::Allow => "allow", NoPhone::Enroll => "enroll" },
            "provider_down": match c.policy.provider_down { ProviderDown::Deny => "deny", ProviderDown::Allow => "allow" },
            "user_opt_out": c.policy.user_opt_out,
            "mandatory": c.policy.mandatory,
            "backup_codes": c.policy.backup_codes,
        },
        "phone": {
            "default_region": c.phone.default_region.map(|r| r.as_ref().to_owned()),
            "allowed_countries": c.phone.allowed_countries.iter().map(|r| r.as_ref().to_owned()).collect::<Vec<_>>(),
        },
        "limits": {
            "sms_per_user": c.limits.sms_per_user.to_string(),
            "sms_global": c.limits.sms_global.to_string(),
            "lockout_after": c.limits.lockout_after.get(),
            "lockout": d(c.limits.lockout),
        },
        "directories": c.directories.iter().map(|s| match s {
            DirectorySpec::File { path } => json!({"kind": "file", "path": path}),
            DirectorySpec::Gecos { field } => json!({"kind": "gecos", "field": field}),
        }).collect::<Vec<_>>(),
        "store": c.store.settings().into_iter().map(|(k, v)| (k.to_owned(), Value::from(v))).collect::<serde_json::Map<_, _>>(),
        "providers": providers,
        "audit": {"syslog": c.audit.syslog, "file": c.audit.file},
        "radius": c.radius.as_ref().map(|r| json!({
            "listen": r.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "primary": match &r.primary { PrimaryAuth::None => "none".to_owned(), PrimaryAuth::Pam { service } => format!("pam:{service}") },
            "clients": r.clients.iter().map(|cl| json!({
                "name": cl.name, "address": cl.network.to_string(),
                "mode": match cl.mode { ClientMode::Challenge => "challenge", ClientMode::Append => "append" },
                "secret_file": cl.secret_file,
                "require_message_authenticator": cl.require_message_authenticator,
            })).collect::<Vec<_>>(),
        })),
    })
}

/// One provider: its kind and where it connects, with the paths of its
/// secret files but never their contents.
fn provider_json(p: &smsotp_core::sms::ProviderSpec) -> Value {
    use smsotp_core::sms::http::{Gateway, Preset};
    use smsotp_core::sms::ProviderSpec;
    let d = smsotp_core::config::human_duration;
    match p {
        ProviderSpec::Outbox { name, path } => {
            json!({"name": name, "kind": "outbox", "path": path})
        }
        ProviderSpec::Command {
            name,
            program,
            args,
            timeout,
        } => json!({"name": name, "kind": "command", "program": program,
                    "args": args.len(), "timeout": d(*timeout)}),
        ProviderSpec::Http(h) => {
            let preset = match &h.gateway {
                Gateway::Template(_) => None,
                Gateway::Preset { preset, .. } => Some(match preset {
                    Preset::Twilio { .. } => "twilio",
                    Preset::Vonage { .. } => "vonage",
                    Preset::Clickatell { .. } => "clickatell",
                    Preset::Plivo { .. } => "plivo",
                    Preset::Bulksms { .. } => "bulksms",
                }),
            };
            let secret_files: Vec<PathBuf> = h.secret_paths().into_iter().map(|(_, p)| p).collect();
            json!({"name": h.name, "kind": "http", "preset": preset,
                   "endpoint": h.endpoint(),
                   "proxy": h.transport.proxy.as_deref().map(smsotp_core::sms::http::without_credentials),
                   "ca_file": h.transport.ca_file, "timeout": d(h.transport.timeout),
                   "secret_files": secret_files})
        }
        ProviderSpec::Smpp(s) => json!({"name": s.name, "kind": "smpp",
            "host": s.host, "port": s.port, "tls": s.tls, "endpoint": s.endpoint(),
            "system_id": s.system_id, "source_addr": s.source_addr,
            "password_file": s.password_file, "ca_file": s.ca_file,
            "timeout": d(s.timeout)}),
    }
}

// --------------------------------------------------------------- test-send

fn test_send(
    path: &Path,
    to: Option<&str>,
    user: Option<&str>,
    only: Option<&str>,
) -> Result<Output, Failure> {
    use smsotp_core::sms::{self, ChainOutcome, Sms};
    let cfg = load_config(path)?;
    let specs = match only {
        None => cfg.providers.clone(),
        Some(name) => match cfg.providers.iter().find(|p| p.name() == name) {
            Some(p) => vec![p.clone()],
            None => {
                let names: Vec<&str> = cfg.providers.iter().map(|p| p.name()).collect();
                return Err(Failure::new(
                    exit::USAGE,
                    format!(
                        "no provider is named \"{name}\" in {}; the configured ones: {}",
                        path.display(),
                        names.join(", ")
                    ),
                )
                .fix("give --provider one of those names (each [[provider]] has a name, by default its kind)"));
            }
        },
    };
    let engine = open_engine_with(cfg)?;
    let phone = match (to, user) {
        (Some(n), _) => Phone::parse(n, engine.cfg.phone.default_region).map_err(|e| {
            Failure::new(exit::DATAERR, format!("--to: {}", e.problem())).fix(e.fix())
        })?,
        (None, Some(u)) => engine
            .find_phone(u)
            .map_err(flow_err)?
            .map(|f| f.phone)
            .ok_or_else(|| {
                Failure::new(
                    exit::NOUSER,
                    format!("no phone number is registered for {u}"),
                )
                .fix(format!("smsotp user set-phone {u} NUMBER"))
            })?,
        (None, None) => return Err(Failure::new(exit::USAGE, "give --to NUMBER or --user USER")),
    };
    if !phone.allowed(&engine.cfg.phone) {
        return Err(Failure::new(
            exit::DATAERR,
            format!(
                "{} is in a country not in phone.allowed_countries, so a login would not send to it",
                phone.masked()
            ),
        )
        .fix("use a number of an allowed country, or add its country to phone.allowed_countries"));
    }
    let providers = sms::from_config(&specs, || Box::new(smsotp_core::clock::SystemClock));
    let text = format!(
        "smsotp test message from {}. No action needed.",
        smsotp_core::flow::hostname()
    );
    let outcome = sms::send_with_failover(
        &providers,
        &Sms {
            to: &phone,
            text: &text,
        },
    );
    match outcome {
        ChainOutcome::Sent {
            provider,
            failed_over_from,
        } => {
            let mut t = format!("sent to {} through provider {provider}\n", phone.masked());
            if only.is_some() {
                t.push_str("  (--provider: that provider only, no failover)\n");
            }
            if let Some((from, err)) = &failed_over_from {
                t.push_str(&format!("  (provider {from} failed first: {err})\n"));
            }
            Ok(Output {
                text: t,
                json: json!({"ok": true, "to": phone.masked(), "provider": provider,
                    "failed_over_from": failed_over_from.as_ref().map(|(n, e)| json!({"provider": n, "error": e.to_string()}))}),
                code: exit::OK,
            })
        }
        ChainOutcome::Failed(errors) => {
            let detail: Vec<String> = errors.iter().map(|(n, e)| format!("{n}: {e}")).collect();
            Err(Failure::new(
                exit::UNAVAILABLE,
                format!(
                    "no provider could send to {}: {}",
                    phone.masked(),
                    detail.join("; ")
                ),
            )
            .fix("run `smsotp doctor` and check each provider's settings"))
        }
    }
}

// -------------------------------------------------------------------- user

/// Who did it, for the store and the audit trail.
fn admin() -> String {
    let who = std::env::var("SUDO_USER").unwrap_or_else(|_| "root".into());
    format!("admin:{who}")
}

fn audit(engine: &Engine, user: &str, event: &'static str, detail: String) {
    let ctx = smsotp_core::LoginContext {
        user: user.into(),
        service: "smsotp-admin".into(),
        rhost: None,
    };
    let mut e = engine.event_for(&ctx, event);
    e.outcome = Some("success");
    e.detail = Some(format!("{detail} (by {})", admin()));
    engine.record(AuditLevel::Info, &e);
}

fn note_unknown_user(user: &str, notes: &mut Vec<String>) {
    if matches!(nix::unistd::User::from_name(user), Ok(None)) {
        notes.push(format!(
            "note: {user} is not a system account here (fine for RADIUS-only users)"
        ));
    }
}

fn user_command(path: &Path, cmd: &UserCommand) -> Result<Output, Failure> {
    let engine = open_engine(path)?;
    let store = engine.store();
    let now = engine.now();
    let mut notes = Vec::new();
    let (text, json) = match cmd {
        UserCommand::Show { user } => {
            let found = engine.find_phone(user);
            let failures = store.failures(user, now).map_err(store_err)?;
            let per_user = engine.cfg.limits.sms_per_user;
            let window = store.sms_window(user, now, per_user).map_err(store_err)?;
            let left = store.backup_codes_left(user).map_err(store_err)?;
            let opt = store.opt_out(user).map_err(store_err)?;
            let stored = store.phone(user).map_err(store_err)?;
            let policy = &engine.cfg.policy;
            let exempt = policy.exempt_users.contains(user);
            let (phone, source, error) = match &found {
                Ok(Some(f)) => (Some(f.phone.masked()), Some(f.source.clone()), None),
                Ok(None) => (None, None, None),
                Err(e) => (None, None, Some(e.to_string())),
            };
            let locked_for = failures
                .locked_until
                .map(|u| std::time::Duration::from_millis((u - now).max(0) as u64));
            let mut t = format!("user:          {user}\n");
            t.push_str(&format!(
                "phone:         {}\n",
                match (&phone, &error) {
                    (Some(p), _) => format!("{p} (from {})", source.clone().unwrap_or_default()),
                    (None, Some(e)) => format!("ERROR: {e}"),
                    (None, None) => "none registered".into(),
                }
            ));
            t.push_str(&format!(
                "lockout:       {}\n",
                match locked_for {
                    Some(d) => format!(
                        "LOCKED for {} more ({} consecutive failures); `smsotp user unlock {user}` lifts it",
                        smsotp_core::config::human_duration(std::time::Duration::from_secs(d.as_secs().max(1))),
                        failures.count
                    ),
                    None => format!("not locked ({} consecutive failures)", failures.count),
                }
            ));
            t.push_str(&format!(
                "SMS sent:      {} of {} in the last {} (limits.sms_per_user){}\n",
                window.sent,
                per_user.count,
                smsotp_core::config::human_duration(per_user.window),
                match window.next_allowed_at {
                    Some(at) => format!(
                        "; LIMIT REACHED: next SMS allowed in {} ({}); `smsotp user unlock {user}` clears it",
                        // Whole minutes, rounded up: the exact time follows.
                        smsotp_core::config::human_duration(std::time::Duration::from_secs(
                            ((at - now).max(0) as u64).div_ceil(60_000).max(1) * 60
                        )),
                        smsotp_core::clock::rfc3339(at)
                    ),
                    None => String::new(),
                }
            ));
            t.push_str(&format!("backup codes:  {left} left\n"));
            t.push_str(&format!(
                "opt-out:       {}\n",
                match &opt {
                    None => "no".to_owned(),
                    Some(_) if policy.opt_out_honoured() => "yes (honoured)".into(),
                    Some(_) =>
                        "yes, but IGNORED (needs policy.user_opt_out = true and mandatory = false)"
                            .into(),
                }
            ));
            if exempt {
                t.push_str("exempt:        yes (policy.exempt_users)\n");
            }
            let j = json!({
                "user": user, "phone": phone, "source": source, "phone_error": error,
                "stored_phone": stored.as_ref().map(|s| json!({"set_at": smsotp_core::clock::rfc3339(s.set_at), "set_by": s.set_by})),
                "failures": failures.count,
                "locked": failures.locked_until.is_some(),
                "locked_until": failures.locked_until.map(smsotp_core::clock::rfc3339),
                "sms_window": {
                    "sent": window.sent,
                    "limit": per_user.count.get(),
                    "window_secs": per_user.window.as_secs(),
                    "limit_reached": window.next_allowed_at.is_some(),
                    "next_sms_at": window.next_allowed_at.map(smsotp_core::clock::rfc3339),
                },
                "backup_codes_left": left,
                "opted_out": opt.is_some(),
                "opt_out_honoured": opt.is_some() && policy.opt_out_honoured(),
                "exempt_user": exempt,
            });
            (t, j)
        }
        UserCommand::SetPhone { user, number } => {
            note_unknown_user(user, &mut notes);
            let phone = Phone::parse(number, engine.cfg.phone.default_region)
                .map_err(|e| Failure::new(exit::DATAERR, e.to_string()))?;
            if !phone.allowed(&engine.cfg.phone) {
                return Err(Failure::new(
                    exit::DATAERR,
                    format!("{} is in a country not in phone.allowed_countries", phone.masked()),
                )
                .fix("use a number of an allowed country, or add its country to phone.allowed_countries"));
            }
            let rec = PhoneRecord {
                e164: phone.e164().to_owned(),
                set_at: now,
                set_by: admin(),
            };
            store.set_phone(user, &rec).map_err(store_err)?;
            audit(
                &engine,
                user,
                "admin_set_phone",
                format!("number set to {}", phone.masked()),
            );
            (
                format!(
                    "{user}: number set to {} (in the store; it takes precedence over the configured phone sources)\n",
                    phone.masked()
                ),
                json!({"ok": true, "user": user, "phone": phone.masked()}),
            )
        }
        UserCommand::ClearPhone { user } => {
            let removed = store.clear_phone(user).map_err(store_err)?;
            let still = engine.find_phone_in_directories(user).map_err(store_err)?;
            if removed {
                audit(
                    &engine,
                    user,
                    "admin_clear_phone",
                    "stored number removed".into(),
                );
            }
            let mut t = if removed {
                format!("{user}: the number registered in the store was removed\n")
            } else {
                format!("{user}: no number was registered in the store\n")
            };
            if let Some(f) = &still {
                t.push_str(&format!(
                    "{user} still has {} from {} (the tool never edits that source)\n",
                    f.phone.masked(),
                    f.source
                ));
            }
            (
                t,
                json!({"ok": true, "user": user, "removed": removed,
                       "still_from": still.as_ref().map(|f| json!({"phone": f.phone.masked(), "source": f.source}))}),
            )
        }
        UserCommand::Unlock { user } => {
            let before = store.failures(user, now).map_err(store_err)?;
            store.unlock(user).map_err(store_err)?;
            let per_user = engine.cfg.limits.sms_per_user;
            let cleared = store
                .clear_sms_window(user, now, per_user.window)
                .map_err(store_err)?;
            let was_locked = before.locked_until.is_some();
            let mut done = Vec::new();
            if was_locked {
                done.push(format!(
                    "lifted the lockout ({} consecutive failures)",
                    before.count
                ));
            } else if before.count > 0 {
                done.push(format!(
                    "reset the failure count (was {}; not locked)",
                    before.count
                ));
            }
            if cleared > 0 {
                done.push(format!(
                    "cleared {cleared} SMS from the per-user window (limits.sms_per_user = {per_user})"
                ));
            }
            let said = if done.is_empty() {
                "nothing to clear (not locked, no failures, no SMS in the per-user window)"
                    .to_owned()
            } else {
                done.join("; ")
            };
            audit(&engine, user, "admin_unlock", said.clone());
            (
                format!("{user}: {said}\n"),
                json!({"ok": true, "user": user, "was_locked": was_locked,
                       "failures_before": before.count, "sms_cleared": cleared}),
            )
        }
        UserCommand::OptOut { user } | UserCommand::OptIn { user } => {
            let out = matches!(cmd, UserCommand::OptOut { .. });
            let policy = &engine.cfg.policy;
            if out && !policy.user_opt_out {
                return Err(Failure::new(
                    exit::CONFIG,
                    "opt-outs are not allowed by the config (policy.user_opt_out is false)",
                )
                .fix(format!(
                    "set `user_opt_out = true` in [policy] of {}",
                    path.display()
                )));
            }
            note_unknown_user(user, &mut notes);
            store
                .set_opt_out(
                    user,
                    out.then(|| (admin(), now))
                        .as_ref()
                        .map(|(b, t)| (b.as_str(), *t)),
                )
                .map_err(store_err)?;
            audit(
                &engine,
                user,
                if out { "admin_opt_out" } else { "admin_opt_in" },
                if out {
                    "marked opted out"
                } else {
                    "opt-out removed"
                }
                .into(),
            );
            if out && policy.mandatory {
                notes.push(
                    "warning: policy.mandatory = true, so this opt-out is ignored until it is false"
                        .into(),
                );
            }
            (
                format!(
                    "{user}: {}\n",
                    if out {
                        "opted out of the SMS code"
                    } else {
                        "must use the SMS code again"
                    }
                ),
                json!({"ok": true, "user": user, "opted_out": out, "honoured": out && policy.opt_out_honoured()}),
            )
        }
    };
    let mut text = text;
    for n in &notes {
        text.push_str(n);
        text.push('\n');
    }
    let mut json = json;
    if !notes.is_empty() {
        json["notes"] = json!(notes);
    }
    Ok(Output {
        text,
        json,
        code: exit::OK,
    })
}

// ------------------------------------------------------------ backup-codes

fn backup_command(path: &Path, cmd: &BackupCommand) -> Result<Output, Failure> {
    let engine = open_engine(path)?;
    match cmd {
        BackupCommand::Generate { user, count } => {
            let mut notes = Vec::new();
            note_unknown_user(user, &mut notes);
            if !engine.cfg.policy.backup_codes {
                notes.push(
                    "warning: policy.backup_codes = false, so these codes are not accepted until it is true"
                        .into(),
                );
            }
            let codes = engine
                .generate_backup_codes(user, usize::from(*count))
                .map_err(store_err)?;
            audit(
                &engine,
                user,
                "admin_backup_codes",
                format!("{} new backup codes", codes.len()),
            );
            let mut text = format!(
                "New backup codes for {user} (shown once; each works once; older codes no longer work):\n\n"
            );
            for c in &codes {
                text.push_str(&format!("    {}\n", c.as_str()));
            }
            text.push('\n');
            for n in &notes {
                text.push_str(n);
                text.push('\n');
            }
            let list: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
            Ok(Output {
                json: json!({"ok": true, "user": user, "codes": list, "notes": notes}),
                text,
                code: exit::OK,
            })
        }
        BackupCommand::Revoke { user } => {
            let n = engine
                .store()
                .revoke_backup_codes(user)
                .map_err(store_err)?;
            audit(
                &engine,
                user,
                "admin_backup_revoke",
                format!("{n} backup codes revoked"),
            );
            Ok(Output {
                text: format!("{user}: {n} backup code(s) revoked\n"),
                json: json!({"ok": true, "user": user, "revoked": n}),
                code: exit::OK,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
