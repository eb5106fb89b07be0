//! Trust anchors for the providers that speak TLS (`http` and its presets,
//! `smpp` with `tls = true`) and for LDAP directories (ldaps://,
//! StartTLS): the system's CA bundle plus an optional `ca_file`, read and
//! checked the same way for all, and the rustls client config SMPP and
//! LDAP build from them (`client_config`).

use std::path::Path;
use std::sync::Arc;

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
        if let Ok(pem) = files::read_system_file(Path::new(path), FileRule::Certificates.cap()) {
            system = pem_certs(&pem);
            break;
        }
    }
    let mut extra = Vec::new();
    if let Some(path) = ca_file {
        // A trust anchor decides who may read the codes: root's alone to change.
        let pem = files::read_bytes_checked(path, FileRule::Certificates)
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

/// A rustls client config (ring, TLS 1.2 and 1.3, no client certificate)
/// trusting the system's CA bundle and `ca_file`: what SMPP with `tls =
/// true` and LDAP over ldaps:// or StartTLS use. Host names are checked
/// by rustls against the name connected to.
pub(crate) fn client_config(
    ca_file: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, SendError> {
    let anchors = trust_anchors(ca_file)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in anchors.system {
        let _ = roots.add(c);
    }
    let mut added = 0;
    for c in anchors.extra {
        if roots.add(c).is_ok() {
            added += 1;
        }
    }
    if let (Some(path), 0) = (ca_file, added) {
        return Err(no_certificate(path));
    }
    if roots.is_empty() {
        return Err(no_anchors());
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| SendError::Misconfigured(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A TCP connection in the clear or under TLS, as the SMPP provider and
/// the LDAP client both keep one, with the socket beneath at hand for
/// setting each read's and write's deadline.
pub(crate) enum Stream {
    /// No TLS.
    Plain(std::net::TcpStream),
    /// rustls over the socket.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>),
}

impl Stream {
    /// The socket beneath.
    pub(crate) fn tcp(&self) -> &std::net::TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
    }
}

impl std::io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl std::io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}
