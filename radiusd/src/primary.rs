//! The first factor over RADIUS: the NAS checked the password already
//! (`none`), or we run it through a PAM service (`pam`).

use std::ffi::{CStr, CString};

use pam_client::{ConversationHandler, ErrorCode, Flag};
use zeroize::Zeroizing;

/// Checks a user's password. `Ok(false)` for a wrong password *and* for an
/// unknown user: the two must look the same from outside.
pub trait PrimaryAuth: Send + Sync {
    fn check(&self, user: &str, password: &[u8]) -> Result<bool, String>;
    /// Whether a password is checked at all.
    fn checks_password(&self) -> bool;
}

/// `primary = { kind = "none" }`: every password is fine.
pub struct NoPrimary;

impl PrimaryAuth for NoPrimary {
    fn check(&self, _user: &str, _password: &[u8]) -> Result<bool, String> {
        Ok(true)
    }
    fn checks_password(&self) -> bool {
        false
    }
}

/// `primary = { kind = "pam", service = "smsotp-radius" }`.
pub struct PamPrimary {
    pub service: String,
}

/// Answers the first echo-off prompt with the password, and nothing else:
/// a stack that asks twice (e.g. one that itself loads pam_smsotp) fails
/// instead of receiving the password as an answer to something else.
struct PasswordOnce {
    user: String,
    password: Option<Zeroizing<Vec<u8>>>,
}

impl ConversationHandler for PasswordOnce {
    fn prompt_echo_on(&mut self, _prompt: &CStr) -> Result<CString, ErrorCode> {
        CString::new(self.user.clone()).map_err(|_| ErrorCode::CONV_ERR)
    }

    fn prompt_echo_off(&mut self, _prompt: &CStr) -> Result<CString, ErrorCode> {
        let pw = self.password.take().ok_or(ErrorCode::CONV_ERR)?;
        CString::new(pw.to_vec()).map_err(|_| ErrorCode::CONV_ERR)
    }

    fn text_info(&mut self, _msg: &CStr) {}

    fn error_msg(&mut self, _msg: &CStr) {}
}

impl PrimaryAuth for PamPrimary {
    fn check(&self, user: &str, password: &[u8]) -> Result<bool, String> {
        if password.is_empty() || password.contains(&0) {
            return Ok(false);
        }
        let conv = PasswordOnce {
            user: user.to_owned(),
            password: Some(Zeroizing::new(password.to_vec())),
        };
        let mut ctx = pam_client::Context::new(&self.service, Some(user), conv)
            .map_err(|e| format!("PAM service {}: {e}", self.service))?;
        let outcome = ctx
            .authenticate(Flag::DISALLOW_NULL_AUTHTOK)
            .and_then(|()| ctx.acct_mgmt(Flag::NONE));
        match outcome {
            Ok(()) => Ok(true),
            Err(e) => match e.code() {
                ErrorCode::AUTH_ERR
                | ErrorCode::USER_UNKNOWN
                | ErrorCode::MAXTRIES
                | ErrorCode::CRED_INSUFFICIENT
                | ErrorCode::ACCT_EXPIRED
                | ErrorCode::PERM_DENIED
                | ErrorCode::NEW_AUTHTOK_REQD
                | ErrorCode::AUTHTOK_EXPIRED
                | ErrorCode::CONV_ERR => Ok(false),
                _ => Err(format!("PAM service {}: {e}", self.service)),
            },
        }
    }

    fn checks_password(&self) -> bool {
        true
    }
}
