//! The first factor over RADIUS: the NAS checked the password already
//! (`none`), we run it through a PAM service (`pam`), or bind to an LDAP
//! directory as the user (`ldap`, in `primary_ldap.rs`).

use std::ffi::{CStr, CString};

use pam_client::{ConversationHandler, ErrorCode, Flag};
use smsotp_core::directory::ldap::LdapError;
use smsotp_core::secret::SecretBytes;

#[path = "primary_ldap.rs"]
mod ldap;
pub use ldap::LdapPrimary;

/// Why a password could not be checked: neither "right" nor "wrong". The
/// login is refused either way (and the user told nothing more); the
/// cases tell an admin where to look.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrimaryError {
    /// The PAM service could not be started (libpam refused to open it:
    /// a missing or broken file in /etc/pam.d, a module that does not
    /// load): this host is misconfigured, and no password passes until it
    /// is fixed.
    #[error("PAM service {service}: {source}")]
    Unavailable {
        /// The configured `primary.service`.
        service: String,
        /// What libpam answered, with its code.
        source: pam_client::Error,
    },
    /// The service ran but failed with an error that says nothing about
    /// the password (PAM_SYSTEM_ERR, PAM_AUTHINFO_UNAVAIL, PAM_BUF_ERR, …):
    /// a module or the service behind it is broken or down.
    #[error("PAM service {service}: {source}")]
    Failed {
        /// The configured `primary.service`.
        service: String,
        /// What the PAM stack answered, with its code.
        source: pam_client::Error,
    },
    /// The LDAP directory could not be asked (DNS, TCP, TLS, a timeout, a
    /// broken connection, a busy or unavailable server): no password
    /// passes until it answers again.
    #[error("{directory}: {source}")]
    DirectoryUnavailable {
        /// `ldap directory`, with its `name` when it has one.
        directory: String,
        /// What failed, with the server's URL.
        source: LdapError,
    },
    /// The LDAP directory answered, but not about the password: the
    /// service bind was refused, the filter matched several entries, the
    /// user's bind failed for another reason than the password, a local
    /// setting (CA file, bind password file) is wrong.
    #[error("{directory}: {source}")]
    DirectoryFailed {
        /// `ldap directory`, with its `name` when it has one.
        directory: String,
        /// What the directory answered, with the server's URL.
        source: LdapError,
    },
}

/// Checks a user's password. `Ok(false)` for a wrong password *and* for an
/// unknown user: the two must look the same from outside.
pub trait PrimaryAuth: Send + Sync {
    /// Whether `password` is `user`'s; an error when it could not be
    /// checked at all.
    fn check(&self, user: &str, password: &[u8]) -> Result<bool, PrimaryError>;
    /// Whether a password is checked at all.
    fn checks_password(&self) -> bool;
}

/// `primary = { kind = "none" }`: every password is fine.
pub struct NoPrimary;

impl PrimaryAuth for NoPrimary {
    fn check(&self, _user: &str, _password: &[u8]) -> Result<bool, PrimaryError> {
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
    password: Option<SecretBytes>,
}

impl ConversationHandler for PasswordOnce {
    fn prompt_echo_on(&mut self, _prompt: &CStr) -> Result<CString, ErrorCode> {
        CString::new(self.user.clone()).map_err(|_| ErrorCode::CONV_ERR)
    }

    fn prompt_echo_off(&mut self, _prompt: &CStr) -> Result<CString, ErrorCode> {
        let pw = self.password.take().ok_or(ErrorCode::CONV_ERR)?;
        CString::new(pw.expose().to_vec()).map_err(|_| ErrorCode::CONV_ERR)
    }

    fn text_info(&mut self, _msg: &CStr) {}

    fn error_msg(&mut self, _msg: &CStr) {}
}

impl PrimaryAuth for PamPrimary {
    fn check(&self, user: &str, password: &[u8]) -> Result<bool, PrimaryError> {
        if password.is_empty() || password.contains(&0) {
            return Ok(false);
        }
        let conv = PasswordOnce {
            user: user.to_owned(),
            password: Some(SecretBytes::new(password.to_vec())),
        };
        let mut ctx =
            pam_client::Context::new(&self.service, Some(user), conv).map_err(|source| {
                PrimaryError::Unavailable {
                    service: self.service.clone(),
                    source,
                }
            })?;
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
                _ => Err(PrimaryError::Failed {
                    service: self.service.clone(),
                    source: e,
                }),
            },
        }
    }

    fn checks_password(&self) -> bool {
        true
    }
}
