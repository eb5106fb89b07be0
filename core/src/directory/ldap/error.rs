//! What can go wrong talking to an LDAP server, classified by the step
//! that failed, so `smsotp doctor` can say exactly what to fix.

/// Why an LDAP operation failed. Every message names the server's URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LdapError {
    /// The host name does not resolve.
    #[error("{url}: the host name does not resolve: {detail}; check the name and the DNS")]
    Dns {
        /// The server.
        url: String,
        /// What the resolver answered.
        detail: String,
    },
    /// No TCP connection to any address of the host.
    #[error("{url}: cannot connect to {address}: {source}")]
    Tcp {
        /// The server.
        url: String,
        /// The address last tried.
        address: String,
        /// Refused, unreachable, …
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (ldaps:// or StartTLS); `detail` is the
    /// certificate's problem as rustls reports it (unknown issuer, name
    /// mismatch, expired, …).
    #[error("{url}: TLS: {detail}")]
    Tls {
        /// The server.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The server did not answer in time.
    #[error("{url}: no answer within the timeout while {step}")]
    Timeout {
        /// The server.
        url: String,
        /// The step: "connecting", "the TLS handshake", "binding", …
        step: &'static str,
    },
    /// The connection broke (reset, closed by the server).
    #[error("{url}: the connection broke while {step}: {source}")]
    Io {
        /// The server.
        url: String,
        /// The step.
        step: &'static str,
        /// What the socket said.
        #[source]
        source: std::io::Error,
    },
    /// A bind was refused: wrong DN or password (code 49), or another
    /// result code.
    #[error("{url}: bind as \"{dn}\" refused: {} ({code}){}", code_name(*code), diag(message))]
    Bind {
        /// The server.
        url: String,
        /// Who tried to bind.
        dn: String,
        /// The LDAP result code (49 invalidCredentials, 53 unwilling, …).
        code: u32,
        /// The server's diagnostic message.
        message: String,
    },
    /// A password was empty: an empty simple bind is an unauthenticated
    /// bind that "succeeds", so none is sent.
    #[error("{url}: refusing to bind as \"{dn}\" with an empty password")]
    EmptyPassword {
        /// The server.
        url: String,
        /// Who was to bind.
        dn: String,
    },
    /// A search failed (no such base, insufficient access, …).
    #[error("{url}: search under \"{base}\" failed: {} ({code}){}", code_name(*code), diag(message))]
    Search {
        /// The server.
        url: String,
        /// The search base.
        base: String,
        /// The LDAP result code.
        code: u32,
        /// The server's diagnostic message.
        message: String,
    },
    /// The filter matched more than one entry for one user.
    #[error(
        "{url}: the filter matches several entries for {user}; make it match one entry per user"
    )]
    SeveralEntries {
        /// The server.
        url: String,
        /// The user looked up.
        user: String,
    },
    /// A modify (write-back) or StartTLS request was refused.
    #[error("{url}: {operation} refused: {} ({code}){}", code_name(*code), diag(message))]
    Refused {
        /// The server.
        url: String,
        /// "StartTLS", "modify of uid=alice,…".
        operation: String,
        /// The LDAP result code.
        code: u32,
        /// The server's diagnostic message.
        message: String,
    },
    /// The server sent something that is not the LDAP answer expected.
    #[error("{url}: protocol error: {detail}")]
    Protocol {
        /// The server.
        url: String,
        /// What was wrong with it.
        detail: String,
    },
    /// With the Active Directory preset: the account is disabled
    /// (userAccountControl bit 0x2); it gets no SMS.
    #[error("{url}: the account \"{dn}\" is disabled (userAccountControl); no code is sent")]
    AccountDisabled {
        /// The server.
        url: String,
        /// The account's entry.
        dn: String,
    },
    /// The user name holds characters a login name cannot hold; nothing
    /// was sent.
    #[error("{user} is not a login name (empty, too long, or holds whitespace, ':' or control characters); not looked up")]
    BadUser {
        /// The name as given (Debug-escaped in the message).
        user: String,
    },
    /// Something local is wrong: the bind password file, the CA file, the
    /// URL, the filter.
    #[error("{url}: {detail}")]
    Setup {
        /// The server or directory.
        url: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
}

impl LdapError {
    /// Whether the server could not be reached or did not answer (DNS,
    /// TCP, TLS, timeout, broken connection, or result codes busy (51),
    /// unavailable (52)): the cases `on_unavailable = "next"` and the
    /// cache of a server are for. A refused bind, a failed search or
    /// several entries are answers, not unavailability.
    pub fn is_unavailable(&self) -> bool {
        match self {
            LdapError::Dns { .. }
            | LdapError::Tcp { .. }
            | LdapError::Tls { .. }
            | LdapError::Timeout { .. }
            | LdapError::Io { .. } => true,
            LdapError::Bind { code, .. } | LdapError::Search { code, .. } => {
                matches!(code, 51 | 52)
            }
            _ => false,
        }
    }

    /// Whether a bind was refused for a wrong DN or password
    /// (invalidCredentials, 49): the answer for a user's password check.
    pub fn is_wrong_password(&self) -> bool {
        matches!(self, LdapError::Bind { code: 49, .. })
    }
}

fn diag(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// The name RFC 4511 gives a result code.
pub fn code_name(code: u32) -> &'static str {
    match code {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        13 => "confidentialityRequired",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        19 => "constraintViolation",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials (wrong DN or password)",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        65 => "objectClassViolation",
        80 => "other",
        _ => "result code",
    }
}
