//! Every text of the login flow that a user reads: prompts, "Code sent
//! to …", retries, verdicts. Both front ends show these and no others.
//!
//! The words come from a message catalogue ([`crate::messages`]): each
//! text has an `_in` form taking the login's [`Catalogue`], and a form
//! without it in English (the shipped catalogue). The constants below are
//! the English texts, for front ends that answer before a language is
//! known and for tests.

use super::outcome::{Accept, ChallengeInfo, Limit, Reject, Retry};
use crate::messages::Catalogue;
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

/// The prompt for the code.
pub const CODE_PROMPT: &str = "SMS code: ";
/// The prompt for a backup code (no SMS was sent).
pub const BACKUP_PROMPT: &str = "Backup code: ";
/// The prompt for a number to enroll (shown as typed).
pub const ENROLL_PROMPT: &str = "Mobile number for SMS codes: ";

/// "1 try left.", "3 tries left."
fn tries(c: &Catalogue, n: u32) -> String {
    c.plural("tries_left", u64::from(n), &[])
}

/// [`UNAVAILABLE`] in `c`'s language.
pub fn unavailable_in(c: &Catalogue) -> String {
    c.text("unavailable.service", &[])
}

/// [`UNAVAILABLE_CONFIG`] in `c`'s language.
pub fn unavailable_config_in(c: &Catalogue) -> String {
    c.text("unavailable.config", &[])
}

/// [`ROUND_OVER`] in `c`'s language.
pub fn round_over_in(c: &Catalogue) -> String {
    c.text("round_over", &[])
}

impl super::Verdict {
    /// Whether the user is told anything about this verdict (so its
    /// language is worth finding).
    pub fn has_text(&self) -> bool {
        match self {
            super::Verdict::Accept(a) => a.user_message().is_some(),
            super::Verdict::Reject(_) => true,
            super::Verdict::NotApplicable(_) => false,
        }
    }
}

impl Accept {
    /// What the user is told on success, if anything.
    pub fn user_message(&self) -> Option<String> {
        self.user_message_in(Catalogue::english())
    }

    /// [`Accept::user_message`] in `c`'s language.
    pub fn user_message_in(&self, c: &Catalogue) -> Option<String> {
        match self {
            Accept::CodeVerified | Accept::NoPhoneAllowed | Accept::ProviderDownAllowed => None,
            Accept::BackupCode { left } => {
                let mut m = c.plural("accept.backup_code", u64::from(*left), &[]);
                if *left <= 2 {
                    m.push(' ');
                    m.push_str(c.raw("accept.backup_codes_low"));
                }
                Some(m)
            }
            Accept::Enrolled => Some(c.text("accept.enrolled", &[])),
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
        self.user_message_in(Catalogue::english())
    }

    /// [`Reject::user_message`] in `c`'s language.
    pub fn user_message_in(&self, c: &Catalogue) -> String {
        let key = match self {
            Reject::WrongCode => "reject.wrong_code",
            Reject::Expired => "reject.expired",
            Reject::LockedOut => "reject.locked_out",
            Reject::RateLimited(Limit::PerUser { wait } | Limit::Backoff { wait }) => {
                return c.text("reject.wait", &[("wait", &c.about(*wait))]);
            }
            // The limits beyond the user read alike: which one it was, and
            // the number's country, are for the audit trail only.
            Reject::RateLimited(
                Limit::Global
                | Limit::PerNumber
                | Limit::PerCountry { .. }
                | Limit::PerSource
                | Limit::DailyBudget,
            ) => "reject.system_limit",
            Reject::NoPhone => "reject.no_phone",
            Reject::ProviderDown | Reject::SendRefused => "reject.send_failed",
            Reject::CountryNotAllowed => "reject.country_not_allowed",
            Reject::UnknownChallenge => "reject.unknown_challenge",
            Reject::NoCodeEntered => "reject.no_code_entered",
        };
        c.text(key, &[])
    }
}
impl ChallengeInfo {
    /// What to tell the user when the challenge opens.
    pub fn intro(&self) -> String {
        self.intro_in(Catalogue::english())
    }

    /// [`ChallengeInfo::intro`] in `c`'s language.
    pub fn intro_in(&self, c: &Catalogue) -> String {
        let phone = [("phone", self.phone_masked.as_str())];
        match self.step {
            Step::Code => c.text("intro.code_sent", &phone),
            Step::EnrollCode => c.text("intro.enroll_code_sent", &phone),
            Step::BackupOnly if self.phone_masked.is_empty() => {
                c.text("intro.backup_no_phone", &[])
            }
            Step::BackupOnly => c.text("intro.backup_send_failed", &[]),
            Step::EnrollNumber => c.text("intro.enroll_number", &[]),
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

    /// [`ChallengeInfo::prompt`] in `c`'s language.
    pub fn prompt_in<'c>(&self, c: &'c Catalogue) -> &'c str {
        c.raw(match self.step {
            Step::Code | Step::EnrollCode => "prompt.code",
            Step::BackupOnly => "prompt.backup",
            Step::EnrollNumber => "prompt.enroll",
        })
    }

    /// [`ChallengeInfo::prompt`], naming where the code went, for a front
    /// end that cannot show info messages (PAM_SILENT, as sudo asks): the
    /// user still learns which phone to look at.
    pub fn prompt_naming_phone(&self) -> String {
        self.prompt_naming_phone_in(Catalogue::english())
    }

    /// [`ChallengeInfo::prompt_naming_phone`] in `c`'s language.
    pub fn prompt_naming_phone_in(&self, c: &Catalogue) -> String {
        match self.step {
            Step::Code | Step::EnrollCode if !self.phone_masked.is_empty() => {
                c.text("prompt.code_sent_to", &[("phone", &self.phone_masked)])
            }
            _ => self.prompt_in(c).to_owned(),
        }
    }

    /// [`ChallengeInfo::intro`] as one line for a front end that shows one
    /// message with its prompt (a RADIUS Access-Challenge): a code sent
    /// also says how many tries it has.
    pub fn intro_with_tries(&self) -> String {
        self.intro_with_tries_in(Catalogue::english())
    }

    /// [`ChallengeInfo::intro_with_tries`] in `c`'s language.
    pub fn intro_with_tries_in(&self, c: &Catalogue) -> String {
        match self.step {
            Step::Code => format!("{} {}", self.intro_in(c), tries(c, self.attempts_left)),
            Step::EnrollCode | Step::BackupOnly | Step::EnrollNumber => self.intro_in(c),
        }
    }

    /// What a front end that takes the code after the password (RADIUS
    /// append mode) says when a challenge opens: it rejects this request
    /// and the user logs in again with the code typed after the password.
    pub fn appended_message(&self) -> String {
        self.appended_message_in(Catalogue::english())
    }

    /// [`ChallengeInfo::appended_message`] in `c`'s language.
    pub fn appended_message_in(&self, c: &Catalogue) -> String {
        match self.step {
            Step::Code | Step::EnrollCode => format!(
                "{} {}",
                c.text("intro.code_sent", &[("phone", &self.phone_masked)]),
                c.raw("hint.append")
            ),
            Step::BackupOnly => format!("{} {}", self.intro_in(c), c.raw("hint.append_backup")),
            // Never opened for such a front end (see Engine::start_appended).
            Step::EnrollNumber => Reject::NoPhone.user_message_in(c),
        }
    }
}

impl Retry {
    /// [`Retry::user_message`] for a front end that takes the code after
    /// the password (RADIUS append mode).
    pub fn appended_message(&self) -> String {
        self.appended_message_in(Catalogue::english())
    }

    /// [`Retry::appended_message`] in `c`'s language.
    pub fn appended_message_in(&self, c: &Catalogue) -> String {
        format!("{} {}", self.user_message_in(c), c.raw("hint.append"))
    }

    /// What the user is told before being asked again (one line, no
    /// trailing newline).
    pub fn user_message(&self) -> String {
        self.user_message_in(Catalogue::english())
    }

    /// [`Retry::user_message`] in `c`'s language.
    pub fn user_message_in(&self, c: &Catalogue) -> String {
        match self {
            Retry::WrongCode { tries_left } => {
                c.plural("retry.wrong_code", u64::from(*tries_left), &[])
            }
            Retry::Expired => c.text("retry.expired", &[]),
            Retry::Resent { phone_masked } => c.text("retry.resent", &[("phone", phone_masked)]),
            Retry::Cooldown { wait } => c.plural("retry.cooldown", wait.as_secs().max(1), &[]),
            Retry::NoResendsLeft => c.text("retry.no_resends_left", &[]),
            Retry::ResendLimited => c.text("retry.resend_limited", &[]),
            Retry::NeedBackupCode => c.text("retry.need_backup", &[]),
            Retry::NeedNumber => c.text("retry.need_number", &[]),
            Retry::BadNumber(why) => c.text("retry.bad_number", &[("reason", why)]),
            Retry::CountryNotAllowed => c.text("retry.country_not_allowed", &[]),
            Retry::EnrollCodeSent { phone_masked } => {
                c.text("intro.enroll_code_sent", &[("phone", phone_masked)])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
                if phone.is_empty() && matches!(step, Step::Code | Step::EnrollCode) {
                    continue; // a code sent always names its phone
                }
                let info = ChallengeInfo {
                    id: crate::otp::ChallengeId([0; 16]),
                    phone_masked: phone.into(),
                    expires_in: Duration::from_secs(300),
                    attempts_left: 3,
                    step,
                };
                for (lang, _) in crate::messages::SHIPPED {
                    let Some(c) = Catalogue::shipped(lang) else {
                        panic!("{lang} not shipped")
                    };
                    for text in [info.intro_in(c), info.intro_with_tries_in(c)] {
                        assert!(!text.contains("  "), "{lang} {step:?}: {text:?}");
                    }
                }
            }
        }
    }

    /// The English catalogue says what the English constants say.
    #[test]
    fn english_constants_match_the_catalogue() {
        let en = Catalogue::english();
        assert_eq!(en.raw("prompt.code"), CODE_PROMPT);
        assert_eq!(en.raw("prompt.backup"), BACKUP_PROMPT);
        assert_eq!(en.raw("prompt.enroll"), ENROLL_PROMPT);
        assert_eq!(en.raw("hint.append"), APPEND_HINT);
        assert_eq!(en.raw("hint.append_backup"), APPEND_BACKUP_HINT);
        assert_eq!(unavailable_in(en), UNAVAILABLE);
        assert_eq!(unavailable_config_in(en), UNAVAILABLE_CONFIG);
        assert_eq!(round_over_in(en), ROUND_OVER);
    }

    #[test]
    fn texts_in_german() {
        let Some(de) = Catalogue::shipped("de") else {
            panic!("de not shipped")
        };
        assert_eq!(
            Retry::WrongCode { tries_left: 1 }.user_message_in(de),
            "Falscher Code, noch 1 Versuch."
        );
        assert_eq!(
            Reject::RateLimited(Limit::PerUser {
                wait: Duration::from_secs(61)
            })
            .user_message_in(de),
            "In letzter Zeit wurden zu viele Codes gesendet. Versuchen Sie es in etwa 2 Minuten erneut."
        );
        assert_eq!(
            Accept::BackupCode { left: 1 }.user_message_in(de).as_deref(),
            Some("Backup-Code akzeptiert; noch 1 übrig. Fordern Sie bei Ihrem Administrator neue an.")
        );
    }
}
