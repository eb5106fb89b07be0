//! The RADIUS packet codes and attribute types this server reads or writes,
//! each named after its RFC and documented with the section defining it.
//!
//! Only the numbers [`crate::wire`] uses are here: a few lines of our own
//! instead of the `radius` crate, which would bring an async runtime into the
//! server for them. The values are IANA's "RADIUS Types" registry; a unit
//! test below checks each one against the `radius` crate (a test-only
//! dependency, written independently of this file), so a typo cannot hide.
//! Add any new constant to that test too.

/// Packet codes: the first octet of every packet (RFC 2865 §3).
pub mod code {
    /// Access-Request (1), RFC 2865 §4.1: a NAS asks whether a user may in.
    pub const ACCESS_REQUEST: u8 = 1;
    /// Access-Accept (2), RFC 2865 §4.2.
    pub const ACCESS_ACCEPT: u8 = 2;
    /// Access-Reject (3), RFC 2865 §4.3.
    pub const ACCESS_REJECT: u8 = 3;
    /// Access-Challenge (11), RFC 2865 §4.4: asks the user for more (here,
    /// the code sent by SMS).
    pub const ACCESS_CHALLENGE: u8 = 11;
    /// Status-Server (12), RFC 5997: a liveness probe (the code is reserved
    /// as experimental in RFC 2865 §3).
    pub const STATUS_SERVER: u8 = 12;
}

/// Attribute types: the first octet of every attribute.
pub mod attr {
    /// User-Name (1), RFC 2865 §5.1.
    pub const USER_NAME: u8 = 1;
    /// User-Password (2), RFC 2865 §5.2: hidden with the shared secret.
    pub const USER_PASSWORD: u8 = 2;
    /// NAS-IP-Address (4), RFC 2865 §5.4.
    pub const NAS_IP_ADDRESS: u8 = 4;
    /// Reply-Message (18), RFC 2865 §5.18: text shown to the user.
    pub const REPLY_MESSAGE: u8 = 18;
    /// State (24), RFC 2865 §5.24: sent with Access-Challenge, returned by
    /// the NAS in the next Access-Request.
    pub const STATE: u8 = 24;
    /// Session-Timeout (27), RFC 2865 §5.27.
    pub const SESSION_TIMEOUT: u8 = 27;
    /// Calling-Station-Id (31), RFC 2865 §5.31.
    pub const CALLING_STATION_ID: u8 = 31;
    /// NAS-Identifier (32), RFC 2865 §5.32.
    pub const NAS_IDENTIFIER: u8 = 32;
    /// Proxy-State (33), RFC 2865 §5.33: echoed unchanged in the reply.
    pub const PROXY_STATE: u8 = 33;
    /// EAP-Message (79), RFC 2869 §5.13 (and RFC 3579 §3.1).
    pub const EAP_MESSAGE: u8 = 79;
    /// Message-Authenticator (80), RFC 2869 §5.14 (and RFC 3579 §3.2):
    /// HMAC-MD5 over the whole packet.
    pub const MESSAGE_AUTHENTICATOR: u8 = 80;
    /// NAS-IPv6-Address (95), RFC 3162 §2.1.
    pub const NAS_IPV6_ADDRESS: u8 = 95;
}

#[cfg(test)]
mod tests {
    use super::{attr, code};
    use radius::core::code::Code;
    use radius::core::{rfc2865, rfc2869, rfc3162};

    #[test]
    fn codes_match_the_radius_crate() {
        let pairs = [
            ("ACCESS_REQUEST", code::ACCESS_REQUEST, Code::AccessRequest),
            ("ACCESS_ACCEPT", code::ACCESS_ACCEPT, Code::AccessAccept),
            ("ACCESS_REJECT", code::ACCESS_REJECT, Code::AccessReject),
            (
                "ACCESS_CHALLENGE",
                code::ACCESS_CHALLENGE,
                Code::AccessChallenge,
            ),
            ("STATUS_SERVER", code::STATUS_SERVER, Code::StatusServer),
        ];
        for (name, ours, theirs) in pairs {
            assert_eq!(ours, theirs as u8, "code::{name} ({})", theirs.string());
        }
    }

    #[test]
    fn attribute_types_match_the_radius_crate() {
        let pairs = [
            ("USER_NAME", attr::USER_NAME, rfc2865::USER_NAME_TYPE),
            (
                "USER_PASSWORD",
                attr::USER_PASSWORD,
                rfc2865::USER_PASSWORD_TYPE,
            ),
            (
                "NAS_IP_ADDRESS",
                attr::NAS_IP_ADDRESS,
                rfc2865::NAS_IP_ADDRESS_TYPE,
            ),
            (
                "REPLY_MESSAGE",
                attr::REPLY_MESSAGE,
                rfc2865::REPLY_MESSAGE_TYPE,
            ),
            ("STATE", attr::STATE, rfc2865::STATE_TYPE),
            (
                "SESSION_TIMEOUT",
                attr::SESSION_TIMEOUT,
                rfc2865::SESSION_TIMEOUT_TYPE,
            ),
            (
                "CALLING_STATION_ID",
                attr::CALLING_STATION_ID,
                rfc2865::CALLING_STATION_ID_TYPE,
            ),
            (
                "NAS_IDENTIFIER",
                attr::NAS_IDENTIFIER,
                rfc2865::NAS_IDENTIFIER_TYPE,
            ),
            ("PROXY_STATE", attr::PROXY_STATE, rfc2865::PROXY_STATE_TYPE),
            ("EAP_MESSAGE", attr::EAP_MESSAGE, rfc2869::EAP_MESSAGE_TYPE),
            (
                "MESSAGE_AUTHENTICATOR",
                attr::MESSAGE_AUTHENTICATOR,
                rfc2869::MESSAGE_AUTHENTICATOR_TYPE,
            ),
            (
                "NAS_IPV6_ADDRESS",
                attr::NAS_IPV6_ADDRESS,
                rfc3162::NAS_IPV6_ADDRESS_TYPE,
            ),
        ];
        for (name, ours, theirs) in pairs {
            assert_eq!(ours, theirs, "attr::{name}");
        }
    }
}
