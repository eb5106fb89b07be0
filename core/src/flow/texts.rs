//! Every text of the login flow that a user reads: prompts, "Code sent
//! to …", retries, verdicts. Both front ends show these and no others.

use std::time::Duration;

use super::outcome::{Accept, ChallengeInfo, Limit, Reject, Retry};
use crate::store::Step;

/// What a front end that takes the code after the password (RADIUS append
/// mode) adds once a code is out.
pub const APPEND_HINT: &str = "Log in again with your password followed by the code.";
/// [`APPEND_HINT`] when only a backup code will do.
pub const APPEND_BACKUP_HINT: &str = "Log in again with your password followed by a backup code.";

/// What the user is told when the service itself failed (the store or a
/// directory cannot be read, an internal error): not their doing, and
/// nothing they can fix.
pub const UNAVAILABLE: &str = "SMS login is not available right now. Contact your administrator.";

/// What the user is told when the configuration cannot be loaded.
pub const UNAVAILABLE_CONFIG: &str =
    "SMS login is not available (configuration problem). Contact your administrator.";

/// What a retry on a PAM handle whose code round failed is told.
pub const ROUND_OVER: &str =
    "The SMS code was not accepted; no new code is sent for this attempt. Start again to get one.";

/// "1 try left.", "3 tries left."
fn tries(n: u32) -> String {
    format!("{} left.", crate::counted(n as usize, "try", "tries"))
}

/// The prompt for the code.
pub const CODE_PROMPT: &str = "SMS code: ";
/// The prompt for a backup code (no SMS was sent).
pub const BACKUP_PROMPT: &str = "Backup code: ";
/// The prompt for a number to enroll (shown as typed).
pub const ENROLL_PROMPT: &str = "Mobile number for SMS codes: ";
impl Accept {
    /// What the user is told on success, if anything.
    pub fn user_message(&self) -> Option<String> {
        match self {
            Accept::CodeVerified | Accept::NoPhoneAllowed | Accept::ProviderDownAllowed => None,
            Accept::BackupCode { left } => Some(format!(
                "Backup code accepted; {left} left.{}",
                if *left <= 2 {
                    " Ask your administrator for new ones."
                } else {
                    ""
                }
            )),
            Accept::Enrolled => Some("Your mobile number is now registered for SMS codes.".into()),
        }
    }
}
impl Reject {
    /// What the user is told.
    ///
    /// A limit has its own text, so the user knows to wait rather than
    /// retry. It tells nothing about whether the account exists: a limit
    /// is only met by a name that has a number (a name without one ends
    /// at `no_phone` before any send), which the "Code sent to …" of its
    /// earlier logins had already shown; under PAM only a user whose
    /// password was right gets here, and under RADIUS with `primary =
    /// "pam"` likewise. The per-user count is kept by name, so an
    /// enrollment (`no_phone = "enroll"`) meets it the same for any name.
    /// The global limit is nobody's fault and says so.
    pub fn user_message(&self) -> String {
        match self {
            Reject::WrongCode => "Too many wrong codes.".into(),
            Reject::Expired => "The code has expired.".into(),
            Reject::LockedOut => {
                "A code cannot be used for this login now. Try again later.".into()
            }
            Reject::RateLimited(Limit::PerUser { wait } | Limit::Backoff { wait }) => format!(
                "Too many codes were sent recently. Try again in about {}.",
                about(*wait)
            ),
            // The limits beyond the user read alike: which one it was, and
            // the number's country, are for the audit trail only.
            Reject::RateLimited(
                Limit::Global
                | Limit::PerNumber
                | Limit::PerCountry { .. }
                | Limit::PerSource
                | Limit::DailyBudget,
            ) => {
                "Codes cannot be sent right now: this system has sent its maximum for the moment. \
                 Try again in a few minutes."
                    .into()
            }
            Reject::NoPhone => {
                "No phone number is registered for this account. Contact your administrator.".into()
            }
            Reject::ProviderDown | Reject::SendRefused => {
                "The code could not be sent. Try again later.".into()
            }
            Reject::CountryNotAllowed => {
                "The code could not be sent to your number. Contact your administrator.".into()
            }
            Reject::UnknownChallenge => {
                "This login attempt is no longer valid. Start again.".into()
            }
            Reject::NoCodeEntered => "No code was entered.".into(),
        }
    }
}
/// A wait in whole minutes (at least one), or whole hours from two hours
/// on, rounded up: "1 minute", "17 minutes", "3 hours".
fn about(wait: Duration) -> String {
    let minutes = wait.as_secs().div_ceil(60).max(1);
    match minutes {
        1 => "1 minute".into(),
        m if m < 120 => format!("{m} minutes"),
        m => format!("{} hours", m.div_ceil(60)),
    }
}
impl ChallengeInfo {
    /// What to tell the user when the challenge opens.
    pub fn intro(&self) -> String {
        match self.step {
            Step::Code => format!("Code sent to {}.", self.phone_masked),
            Step::EnrollCode => format!(
                "Code sent to {}. Enter it to register this number.",
                self.phone_masked
            ),
            Step::BackupOnly if self.phone_masked.is_empty() => {
                "No phone number is registered for this account. Enter one of your backup codes."
                    .into()
            }
            Step::BackupOnly => {
                "The code could not be sent. Enter one of your backup codes.".into()
            }
            Step::EnrollNumber => "No phone number is registered for this account. \
                                   Enter your mobile number to register it for SMS codes."
                .into(),
        }
    }

    /// The prompt for the next answer.
    pub fn prompt(&self) -> &'static str {
        match self.step {
            Step::Code | Step::EnrollCode => CODE_PROMPT,
            Step::BackupOnly => BACKUP_PROMPT,
            Step::EnrollNumber => ENROLL_PROMPT,
        }
    }

    /// [`ChallengeInfo::prompt`], naming where the code went, for a front
    /// end that cannot show info messages (PAM_SILENT, as sudo asks): the
    /// user still learns which phone to look at.
    pub fn prompt_naming_phone(&self) -> String {
        match self.step {
            Step::Code | Step::EnrollCode if !self.phone_masked.is_empty() => {
                format!("SMS code (sent to {}): ", self.phone_masked)
            }
            _ => self.prompt().to_owned(),
        }
    }

    /// [`ChallengeInfo::intro`] as one line for a front end that shows one
    /// message with its prompt (a RADIUS Access-Challenge): a code sent
    /// also says how many tries it has.
    pub fn intro_with_tries(&self) -> String {
        match self.step {
            Step::Code => format!(
                "Code sent to {}. {}",
                self.phone_masked,
                tries(self.attempts_left)
            ),
            Step::EnrollCode | Step::BackupOnly | Step::EnrollNumber => self.intro(),
        }
    }

    /// What a front end that takes the code after the password (RADIUS
    /// append mode) says when a challenge opens: it rejects this request
    /// and the user logs in again with the code typed after the password.
    pub fn appended_message(&self) -> String {
        match self.step {
            Step::Code | Step::EnrollCode => {
                format!("Code sent to {}. {APPEND_HINT}", self.phone_masked)
            }
            Step::BackupOnly => format!("{} {APPEND_BACKUP_HINT}", self.intro()),
            // Never opened for such a front end (see Engine::start_appended).
            Step::EnrollNumber => Reject::NoPhone.user_message(),
        }
    }
}

impl Retry {
    /// [`Retry::user_message`] for a front end that takes the code after
    /// the password (RADIUS append mode).
    pub fn appended_message(&self) -> String {
        format!("{} {APPEND_HINT}", self.user_message())
    }

    /// What the user is told before being asked again (one line, no
    /// trailing newline).
    pub fn user_message(&self) -> String {
        match self {
            Retry::WrongCode { tries_left } => format!("Wrong code, {}", tries(*tries_left)),
            Retry::Expired => "The code has expired. Press Enter for a new one.".into(),
            Retry::Resent { phone_masked } => format!("New code sent to {phone_masked}."),
            Retry::Cooldown { wait } => {
                let s = wait.as_secs().max(1);
                format!(
                    "Wait {s} second{} before asking for a new code.",
                    if s == 1 { "" } else { "s" }
                )
            }
            Retry::NoResendsLeft => "No new code can be sent; enter the code you received.".into(),
            Retry::ResendLimited => {
                "No new code can be sent now; enter the code you received.".into()
            }
            Retry::NeedBackupCode => "Enter one of your backup codes.".into(),
            Retry::NeedNumber => {
                "Enter your mobile number in international form, e.g. +12025550123.".into()
            }
            Retry::BadNumber(why) => format!("{why}."),
            Retry::CountryNotAllowed => {
                "Numbers of that country cannot receive codes here; enter another number.".into()
            }
            Retry::EnrollCodeSent { phone_masked } => {
                format!("Code sent to {phone_masked}. Enter it to register this number.")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A string continued over lines without its `\` keeps the next line's
    /// indentation: users then read a run of spaces.
    #[test]
    fn intros_have_no_runs_of_spaces() {
        for step in [
            Step::Code,
            Step::EnrollCode,
            Step::BackupOnly,
            Step::EnrollNumber,
        ] {
            for phone in ["", "******0123"] {
                let info = ChallengeInfo {
                    id: crate::otp::ChallengeId([0; 16]),
                    phone_masked: phone.into(),
                    expires_in: Duration::from_secs(300),
                    attempts_left: 3,
                    step,
                };
                for text in [info.intro(), info.intro_with_tries()] {
                    assert!(!text.contains("  "), "{step:?}: {text:?}");
                }
            }
        }
    }
}
