//! What `smsotp doctor` reads of the host: sshd_config (with its Include
//! drop-ins) and the PAM stacks that load pam_smsotp. Pure parsing and
//! judging; the caller prints.
//!
//! `sshd.rs` reads sshd_config with its drop-ins and Match blocks and judges
//! how SSH logins reach pam_smsotp (root's included); `pam.rs` reads the PAM
//! stacks (with their includes and substacks) and judges what runs before
//! and after pam_smsotp.

mod pam;
mod sshd;

pub(crate) use pam::*;
pub(crate) use sshd::*;

#[cfg(test)]
mod tests;

/// Reads a system file (sshd_config, a PAM service) without blocking: a
/// FIFO or device put there is refused at once, not waited on.
fn read_text(path: &std::path::Path) -> std::io::Result<String> {
    let bytes = smsotp_core::files::read_system_file(path, 1 << 20)?;
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not valid UTF-8"))
}
