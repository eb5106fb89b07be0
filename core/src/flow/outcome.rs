//! What a login step answers: the verdict and its reasons, the open
//! challenge, and why the user is asked again. The words people read are
//! in [`super::texts`]; the words logs use are here ([`Reason`]).

use std::time::Duration;

use crate::otp::ChallengeId;
use crate::store::Step;

/// The final answer of a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The second factor is satisfied: let the user in.
    Accept(Accept),
    /// The second factor failed: keep the user out.
    Reject(Reject),
    /// The second factor does not apply to this user.
    NotApplicable(Skip),
}

/// Why a login was let in (the `reason=` of the accept event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// The code sent by SMS was entered in time.
    CodeVerified,
    /// `no_phone = "allow"` let a user without a number in.
    NoPhoneAllowed,
    /// `provider_down = "allow"` let the user in while no SMS could be sent.
    ProviderDownAllowed,
    /// A backup code was used up; `left` remain.
    BackupCode {
        /// Backup codes the user still has (so a front end can warn
        /// when they run low).
        left: u32,
    },
    /// The code sent to a newly entered number was right; the number is
    /// now registered.
    Enrolled,
}

/// Why a login was refused (the `reason=` of the reject event; the
/// user's words are in [`super::texts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reject {
    /// Every try of the code was wrong.
    WrongCode,
    /// The code expired and no new one could be sent.
    Expired,
    /// Too many failures in a row (`policy.lockout_after`): refused
    /// without sending anything until the lockout ends.
    LockedOut,
    /// An SMS limit is reached, so no code was sent.
    RateLimited(Limit),
    /// No number is known for the user and `no_phone = "deny"` (or
    /// enrollment is off or not possible here).
    NoPhone,
    /// No provider could send (outage) and the policy is to deny.
    ProviderDown,
    /// The gateway refused the number.
    SendRefused,
    /// The user's number is in a country outside
    /// `phone.allowed_countries`: no SMS is sent to it.
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
    PerUser {
        /// Until the user's next SMS is allowed.
        wait: Duration,
    },
    /// `limits.sms_global`: the sends of every user together.
    Global,
    /// `limits.backoff`: this user's next SMS must wait `wait`.
    Backoff {
        /// Until the user's next SMS is allowed.
        wait: Duration,
    },
    /// `limits.sms_per_number`: the sends to this number, whoever logged
    /// in.
    PerNumber,
    /// `limits.sms_per_country`: the sends to the number's country
    /// (`None`: a number of no region, counted under `default`).
    PerCountry {
        /// The number's region.
        region: Option<phonenumber::country::Id>,
    },
    /// `limits.sms_per_source`: the sends for logins from this source
    /// address.
    PerSource,
    /// `limits.daily_budget`: the spend breaker is tripped.
    DailyBudget,
}

impl Limit {
    /// The config key, for logs (`limit=sms_per_user`).
    pub fn key(&self) -> &'static str {
        match self {
            Limit::PerUser { .. } => "sms_per_user",
            Limit::Global => "sms_global",
            Limit::Backoff { .. } => "backoff",
            Limit::PerNumber => "sms_per_number",
            Limit::PerCountry { .. } => "sms_per_country",
            Limit::PerSource => "sms_per_source",
            Limit::DailyBudget => "daily_budget",
        }
    }
}

/// Why the second factor does not apply to a user (PAM answers
/// `PAM_IGNORE`, RADIUS accepts on the first factor alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Listed in `policy.exempt_users`.
    ExemptUser,
    /// Member of a group in `policy.exempt_groups`.
    ExemptGroup,
    /// Marked opted out by an admin (`policy.user_opt_out`, not mandatory).
    OptedOut,
}

/// A fixed word for logs.
pub trait Reason {
    /// The word itself: lower case, underscores, stable across releases
    /// (admins match on it in their log tools).
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
    /// Names the pending challenge: the RADIUS State, and what the PAM
    /// loop answers with.
    pub id: ChallengeId,
    /// Empty when no number is known (backup code only, enrollment).
    pub phone_masked: String,
    /// How long the code stays valid from now (`otp.ttl` at a send).
    pub expires_in: Duration,
    /// Wrong answers the challenge still takes before it ends.
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

/// What the first step of a login answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// A code is out (or a backup code or a number is asked for): ask the
    /// user, then call `Engine::answer` with the reply.
    Challenge(ChallengeInfo),
    /// Decided without asking anything (exempt, locked out, no phone …).
    Done(Verdict),
}

/// Why the user is asked again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// The code was wrong; the user may try again.
    WrongCode {
        /// Tries before the challenge ends (at least 1).
        tries_left: u32,
    },
    /// The code expired; an empty answer asks for a new one.
    Expired,
    /// An empty answer brought a new code.
    Resent {
        /// Where it went, masked (`+1555•••0123`).
        phone_masked: String,
    },
    /// An empty answer came too soon after the last send
    /// (`otp.resend_after`).
    Cooldown {
        /// Until a new code may be asked for.
        wait: Duration,
    },
    /// `otp.max_resends` new codes were sent already.
    NoResendsLeft,
    /// An SMS limit refused the new code.
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
        /// The entered number, masked.
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

/// What to do with a code entered after it expired: a front-end choice
/// (see `EngineOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Say so and offer a new code (an interactive prompt: PAM).
    OfferNew,
    /// Refuse and end the challenge (RADIUS: the NAS gave up on it at
    /// Session-Timeout, and an old State must not come back to life).
    Reject,
}

/// What an answer to a challenge leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The login is decided.
    Done(Verdict),
    /// Ask again: why, and the challenge as it now stands.
    Retry(Retry, ChallengeInfo),
}
