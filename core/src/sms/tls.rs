//! Trust anchors for the providers that speak TLS (`http` and its presets,
//! `smpp` with `tls = true`): the system's CA bundle plus an optional
//! `ca_file`, read and checked the same way for both.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::files::{self, FileRule};
use crate::sms::SendError;

/// Where Linux distributions keep the system's CA bundle, in the order
/// tried. Fixed paths on purpose: what a login trusts does not depend on
/// the environment sshd or sudo was started with.
pub(crate) const SYSTEM_CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu (update-ca-certificates)
    "/etc/pki/tls/certs/ca-bundle.crt",   // RHEL, Fedora
    "/etc/ssl/ca-bundle.pem",             // SUSE
    "/etc/ssl/cert.pem",                  // Alpine, Arch
];

/// The certificates a provider may trust, by where they came from.
pub(crate) struct TrustAnchors {
    /// From the first of [`SYSTEM_CA_BUNDLES`] present (none if none is).
    pub system: Vec<CertificateDer<'static>>,
    /// From `ca_file`, when set: at least one certificate.
    pub extra: Vec<CertificateDer<'static>>,
}

/// The PEM certificates in `pem`; other PEM items and garbage are skipped.
pub(crate) fn pem_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem).flatten().collect()
}

/// The system's CA bundle plus `ca_file`. Fails when `ca_file` cannot be
/// read safely or holds no certificate.
pub(crate) fn trust_anchors(ca_file: Option<&Path>) -> Result<TrustAnchors, SendError> {
    let mut system = Vec::new();
    for path in SYSTEM_CA_BUNDLES {
        if let Ok(pem) = std::fs::read(path) {
            system = pem_certs(&pem);
            break;
        }
    }
    let mut extra = Vec::new();
    if let Some(path) = ca_file {
        // A trust anchor decides who may read the codes: root's alone to change.
        let pem = files::read_bytes_checked(path, FileRule::Data)
            .map_err(|e| SendError::Misconfigured(format!("ca_file: {e}")))?;
        extra = pem_certs(&pem);
        if extra.is_empty() {
            return Err(no_certificate(path));
        }
    }
    Ok(TrustAnchors { system, extra })
}

/// `ca_file` holds nothing usable as a trust anchor.
pub(crate) fn no_certificate(path: &Path) -> SendError {
    SendError::Misconfigured(format!(
        "ca_file: {} holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")",
        path.display()
    ))
}

/// No trust anchor at all: neither a system bundle nor `ca_file`.
pub(crate) fn no_anchors() -> SendError {
    SendError::Misconfigured(
        "no trusted CA certificates: install the ca-certificates package or set ca_file".into(),
    )
}
