//! What a login step answers: the verdict and its reasons, the open
//! challenge, and why the user is asked again. The words people read are
//! in [`super::texts`]; the words logs use are here ([`Reason`]).

use std::time::Duration;

use crate::otp::ChallengeId;
use crate::store::Step;

/// The final answer of a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept(Accept),
    Reject(Reject),
    /// The second factor does not apply to this user.
    NotApplicable(Skip),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    CodeVerified,
    /// `no_phone = "allow"` let a user without a number in.
    NoPhoneAllowed,
    /// `provider_down = "allow"` let the user in while no SMS could be sent.
    ProviderDownAllowed,
    /// A backup code was used up; `left` remain.
    BackupCode {
        left: u32,
    },
    /// The code sent to a newly entered number was right; the number is
    /// now registered.
    Enrolled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reject {
    /// Every try of the code was wrong.
    WrongCode,
    /// The code expired and no new one could be sent.
    Expired,
    LockedOut,
    /// An SMS limit is reached, so no code was sent.
    RateLimited(Limit),
    NoPhone,
    /// No provider could send (outage) and the policy is to deny.
    ProviderDown,
    /// The gateway refused the number.
    SendRefused,
    CountryNotAllowed,
    /// The challenge is unknown, used, or belongs to another user or service.
    UnknownChallenge,
    /// Only empty answers while no new code could be sent.
    NoCodeEntered,
}

/// Which SMS limit stopped a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `limits.sms_per_user`: this user's own sends; the next one is
    /// allowed after `wait`.
    PerUser { wait: Duration },
    /// `limits.sms_global`: the sends of every user together.
    Global,
}

impl Limit {
    /// The config key, for logs (`limit=sms_per_user`).
    pub fn key(&self) -> &'static str {
        match self {
            Limit::PerUser { .. } => "sms_per_user",
            Limit::Global => "sms_global",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    ExemptUser,
    ExemptGroup,
    /// Marked opted out by an admin (`policy.user_opt_out`, not mandatory).
    OptedOut,
}

/// A fixed word for logs.
pub trait Reason {
    fn word(&self) -> &'static str;
}

impl Reason for Reject {
    fn word(&self) -> &'static str {
        match self {
            Reject::WrongCode => "wrong_code",
            Reject::Expired => "expired",
            Reject::LockedOut => "locked_out",
            Reject::RateLimited(_) => "rate_limited",
            Reject::NoPhone => "no_phone",
            Reject::ProviderDown => "provider_down",
            Reject::SendRefused => "send_refused",
            Reject::CountryNotAllowed => "country_not_allowed",
            Reject::UnknownChallenge => "unknown_challenge",
            Reject::NoCodeEntered => "no_code_entered",
        }
    }
}
impl Reject {
    /// Whether the user had a code (or a backup-code prompt) and failed
    /// it: wrong every time, expired, or no answer. A front end whose
    /// caller retries on the same handle (sudo's `passwd_tries`) refuses
    /// the retry rather than send another SMS.
    pub fn ends_code_round(&self) -> bool {
        match self {
            Reject::WrongCode | Reject::Expired | Reject::NoCodeEntered => true,
            Reject::LockedOut
            | Reject::RateLimited(_)
            | Reject::NoPhone
            | Reject::ProviderDown
            | Reject::SendRefused
            | Reject::CountryNotAllowed
            | Reject::UnknownChallenge => false,
        }
    }
}

/// A code is out: what the user should be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeInfo {
    pub id: ChallengeId,
    /// Empty when no number is known (backup code only, enrollment).
    pub phone_masked: String,
    pub expires_in: Duration,
    pub attempts_left: u32,
    /// What the next answer should be.
    pub step: Step,
}

impl ChallengeInfo {
    /// Is the answer shown as typed (a phone number, not a secret)?
    pub fn echo(&self) -> bool {
        self.step == Step::EnrollNumber
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Challenge(ChallengeInfo),
    Done(Verdict),
}

/// Why the user is asked again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    WrongCode {
        tries_left: u32,
    },
    Expired,
    Resent {
        phone_masked: String,
    },
    Cooldown {
        wait: Duration,
    },
    NoResendsLeft,
    ResendLimited,
    /// An empty answer where only a backup code will do.
    NeedBackupCode,
    /// An empty answer at the enrollment number prompt.
    NeedNumber,
    /// The number entered for enrollment is not a number (why, masked).
    BadNumber(String),
    /// The number entered for enrollment is in a country not allowed.
    CountryNotAllowed,
    /// A code went to the number entered for enrollment.
    EnrollCodeSent {
        phone_masked: String,
    },
}
impl Retry {
    /// Informational (not an error) messages.
    pub fn is_info(&self) -> bool {
        matches!(self, Retry::Resent { .. } | Retry::EnrollCodeSent { .. })
    }

    /// An empty answer that could not bring a new code.
    pub fn is_idle(&self) -> bool {
        matches!(
            self,
            Retry::Cooldown { .. }
                | Retry::NoResendsLeft
                | Retry::ResendLimited
                | Retry::NeedBackupCode
                | Retry::NeedNumber
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Say so and offer a new code (an interactive prompt: PAM).
    OfferNew,
    /// Refuse and end the challenge (RADIUS: the NAS gave up on it at
    /// Session-Timeout, and an old State must not come back to life).
    Reject,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Done(Verdict),
    Retry(Retry, ChallengeInfo),
}
