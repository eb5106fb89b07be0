//! `smsotp`: the admin tool. Check the config and the host before turning
//! the second factor on, send a test SMS, look after users (their number,
//! lockout, backup codes and opt-out), move the state to another store,
//! and see or reset the spend breaker (`status`, `breaker`). See
//! smsotp(8).
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

mod args;
mod check_config;
mod doctor;
mod doctor_ldap;
mod doctor_redis;
mod host;
mod report;
mod status;
mod store_cmd;
mod test_send;
mod user;

use std::path::Path;

use clap::Parser;
use serde_json::json;
use smsotp_core::config::{Config, ConfigError};
use smsotp_core::directory::DirectoryError;
use smsotp_core::flow::{Engine, FlowError, LogOptions};

use args::{Cli, Command};
use check_config::check_config;
use report::{exit, Failure};
use test_send::test_send;
use user::{backup_command, user_command};

/// What a command produced: text for people and the same as JSON.
pub(crate) struct Output {
    pub(crate) text: String,
    pub(crate) json: serde_json::Value,
    pub(crate) code: i32,
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
            user,
        } => doctor::run(
            &cli.config,
            sshd_config,
            pam_dir,
            *no_network,
            user.as_deref(),
        ),
        Command::TestSend { to, user, provider } => test_send(
            &cli.config,
            to.as_deref(),
            user.as_deref(),
            provider.as_deref(),
        ),
        Command::User(u) => user_command(&cli.config, u),
        Command::BackupCodes(b) => backup_command(&cli.config, b),
        Command::Store(s) => store_cmd::store_command(&cli.config, s),
        Command::Status { day } => status::status(&cli.config, day.as_deref()),
        Command::Breaker(args::BreakerCommand::Status) => status::breaker_status(&cli.config),
        Command::Breaker(args::BreakerCommand::Reset) => status::breaker_reset(&cli.config),
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

pub(crate) fn load_config(path: &Path) -> Result<Config, Failure> {
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

pub(crate) fn open_engine(path: &Path) -> Result<Engine, Failure> {
    open_engine_with(load_config(path)?)
}

pub(crate) fn open_engine_with(cfg: Config) -> Result<Engine, Failure> {
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
pub(crate) fn flow_err(e: FlowError) -> Failure {
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

pub(crate) fn store_err(e: impl std::fmt::Display) -> Failure {
    Failure::new(exit::IOERR, e.to_string())
}
