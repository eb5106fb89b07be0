//! The command line: every command, argument and default, as clap reads
//! them. smsotp(8) documents the same; `main.rs` dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use smsotp_core::config::DEFAULT_CONFIG_PATH;

#[derive(Debug, Parser)]
#[command(
    name = "smsotp",
    version,
    about = "Administer smsotp: SMS one-time passwords as the second factor of logins",
    long_about = None
)]
pub(crate) struct Cli {
    /// The config file.
    #[arg(long, global = true, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    pub(crate) config: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
        /// Skip the reachability of HTTP providers and the step-by-step
        /// check of LDAP directories.
        #[arg(long)]
        no_network: bool,
        /// Also look USER up in every LDAP directory (entry, account
        /// state, phone attribute, number).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
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
    /// Work on the state store as a whole.
    #[command(subcommand)]
    Store(StoreCommand),
    /// What became of the SMS today (or on --day), per provider and
    /// country: sent, failed, refused by which limit (monitored apart),
    /// receipts by state, resends; and the spend breaker (state, spend
    /// and budget in its window, since when tripped).
    Status {
        /// A UTC day of the last 8 (YYYY-MM-DD) instead of today.
        #[arg(long, value_name = "YYYY-MM-DD")]
        day: Option<String>,
    },
    /// The spend breaker (limits.daily_budget).
    #[command(subcommand)]
    Breaker(BreakerCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum BreakerCommand {
    /// State, spend and budget (the breaker part of `smsotp status`).
    Status,
    /// Close a tripped breaker and forget the budget window's spend:
    /// SMS go out again at once, and only those sent after the reset
    /// count against the budget.
    Reset,
}

#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Copy registered numbers, backup codes, opt-outs, languages and
    /// running lockouts from the configured store into the store that FILE's store
    /// table names (SQLite to Redis, or back). Pending codes, send windows
    /// and failure counts are not copied.
    Migrate {
        /// Another smsotp config; its store table and otp.key_file name the
        /// target.
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        /// Count what would be copied, and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
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
    /// Set the language USER reads prompts, messages and the SMS in (a
    /// tag such as de, fr; see the messages section of smsotp.toml(5)), or
    /// --clear it.
    SetLanguage {
        user: String,
        #[arg(required_unless_present = "clear", conflicts_with = "clear")]
        lang: Option<String>,
        /// Remove the setting: the language is chosen as for anyone else.
        #[arg(long)]
        clear: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum BackupCommand {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
