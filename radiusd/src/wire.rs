//! Sans-I/O RADIUS packet layer: bytes in, [`Request`] out; [`Reply`] in,
//! bytes out. No sockets, no clock, no global state.
//!
//! Covers what an Access-Request / Access-Challenge server needs from RFC 2865
//! (packet format, User-Password hiding, Proxy-State echo), RFC 2869 and 3579
//! (Message-Authenticator, HMAC-MD5), RFC 5080 (duplicate detection lives in
//! [`crate::dedup`]) and RFC 5997 (Status-Server), plus the BlastRADIUS
//! mitigations (Message-Authenticator first in every reply; optionally required
//! on every request; Proxy-State without it refused).
//!
//! # Why the attributes are parsed here and not by the `radius` crate
//!
//! The code and attribute numbers are ours too, in [`crate::dictionary`];
//! `radius` is only a test dependency, an independent check of our
//! authenticators and numbers. The TLV walk is about thirty lines here, with
//! every bound checked before any index, and every error says which attribute
//! at which offset is wrong. The `radius` crate:
//!
//! - does not check Message-Authenticator (so it would leave the BlastRADIUS
//!   checks to us anyway);
//! - hands out a decrypted User-Password in plain `Vec`s that are not zeroized,
//!   and cuts it at the first NUL instead of stripping the trailing padding;
//! - parses into owned `AVP`s that we would have to walk again to find
//!   offsets (the Message-Authenticator must be zeroed in place to verify it).
//!
//! # Checks, in order
//!
//! 1. Framing: the datagram is at most [`MAX_PACKET`] bytes, the length field
//!    is within `20..=4096` and within the datagram. Bytes after the length
//!    field are padding and ignored (RFC 2865 §3), but a datagram longer than
//!    [`MAX_PACKET`] is refused outright: no NAS sends one.
//! 2. Code: Access-Request (1) and Status-Server (12) only.
//! 3. Attributes: every length `>= 2` and inside the packet; single-valued
//!    attributes that matter here (User-Name, User-Password, State,
//!    Message-Authenticator, NAS-IP-Address, NAS-IPv6-Address, NAS-Identifier,
//!    Calling-Station-Id) appear at most once, as RFC 2865 §5.44 says, so no two
//!    parts of the server can read different ones; fixed-size values have
//!    their exact size; text is UTF-8; User-Password is 16..=128 bytes and a
//!    multiple of 16; the Proxy-States together fit into a reply.
//! 4. Message-Authenticator: if present it must verify, whatever the
//!    options; if absent, it is refused for Status-Server (RFC 5997), for
//!    EAP-Message (RFC 3579 §3.2), when `require_message_authenticator` is set,
//!    and when `limit_proxy_state` is set and a Proxy-State is present.
//! 5. Only then is User-Password decrypted.
//!
//! Every error means "discard the packet silently" (RFC 2865 §3); the
//! variants only tell the log why.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::dictionary::{attr, code};

/// Largest RADIUS packet (RFC 2865 §3), and the largest datagram accepted.
///
/// Receive into a buffer of `MAX_PACKET + 1` bytes, so that an oversized
/// datagram is seen as such instead of being truncated by the socket.
pub const MAX_PACKET: usize = 4096;

/// Code, identifier, length and authenticator.
const HEADER_LEN: usize = 20;
/// The largest value of one attribute: 255 minus the type and length octets.
const MAX_VALUE: usize = 253;
/// A Message-Authenticator attribute, header included.
const MA_LEN: usize = 18;
/// A 32-bit integer attribute, header included.
const INTEGER_ATTR_LEN: usize = 6;
/// User-Password: 16..=128 bytes, a multiple of 16 (RFC 2865 §5.2).
const PASSWORD_MIN: usize = 16;
const PASSWORD_MAX: usize = 128;
/// Proxy-States are echoed in every reply after the Message-Authenticator,
/// so together they may take at most this much.
const PROXY_STATE_BUDGET: usize = MAX_PACKET - HEADER_LEN - MA_LEN;

type HmacMd5 = Hmac<Md5>;

/// The request codes this server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestCode {
    /// Access-Request (1).
    AccessRequest,
    /// Status-Server (12, RFC 5997): a liveness probe, answered with
    /// Access-Accept by [`encode_reply`] whatever the reply code.
    StatusServer,
}

/// Why a datagram was not accepted as a request. In every case the packet
/// is to be discarded silently (RFC 2865 §3); the variant is for the log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Not a well-formed RADIUS packet; the text says what is wrong and
    /// where ("length field 10 below minimum 20", "attribute 1 at offset 20
    /// has length 1", …). Log it with the client address: a steady stream
    /// means a broken or hostile client.
    #[error("malformed packet: {0}")]
    Malformed(String),
    /// A well-formed packet with a code we do not serve, such as
    /// Accounting-Request (4), or a reply code sent to us.
    #[error("unsupported packet code {0}")]
    UnsupportedCode(u8),
    /// Message-Authenticator is required (by configuration, for
    /// Status-Server, or because of EAP-Message) but absent. The NAS must be
    /// configured to send it.
    #[error("Message-Authenticator required but absent")]
    MissingMessageAuthenticator,
    /// Message-Authenticator is present but does not verify: the shared
    /// secret differs, or the packet was altered on the way.
    #[error("Message-Authenticator does not verify (wrong shared secret or tampered packet)")]
    BadMessageAuthenticator,
    /// `limit_proxy_state` is set and the packet has a Proxy-State but no
    /// Message-Authenticator (the BlastRADIUS attack shape).
    #[error("Proxy-State without Message-Authenticator")]
    ProxyStateWithoutAuthenticator,
    /// The User-Password attribute has an impossible length: it must be
    /// 16..=128 bytes and a multiple of 16.
    #[error("bad User-Password: {0}")]
    BadUserPassword(String),
}

/// What [`decode_request`] insists on beyond RFC 2865.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Refuse requests without Message-Authenticator (BlastRADIUS; the
    /// default we recommend for every client).
    pub require_message_authenticator: bool,
    /// Refuse requests that carry a Proxy-State but no
    /// Message-Authenticator: the transition setting for clients that cannot
    /// send Message-Authenticator yet (FreeRADIUS `limit_proxy_state`).
    pub limit_proxy_state: bool,
}

/// A decoded, authenticated request.
///
/// `Debug` never prints the password.
#[derive(Clone)]
pub struct Request {
    /// Access-Request or Status-Server.
    pub code: RequestCode,
    /// Identifier; the reply carries the same.
    pub identifier: u8,
    /// Request Authenticator as sent.
    pub authenticator: [u8; 16],
    /// User-Name (1).
    pub user_name: Option<String>,
    /// User-Password (2), decrypted, trailing NUL padding stripped.
    pub user_password: Option<Zeroizing<Vec<u8>>>,
    /// State (24), as sent back by the NAS after an Access-Challenge.
    pub state: Option<Vec<u8>>,
    /// Every Proxy-State (33) in packet order; echoed in the reply.
    pub proxy_state: Vec<Vec<u8>>,
    /// Whether a (verified) Message-Authenticator was present.
    pub has_message_authenticator: bool,
    /// NAS-Identifier (32).
    pub nas_identifier: Option<String>,
    /// NAS-IP-Address (4), or else NAS-IPv6-Address (95). When a NAS sends
    /// both (RFC 3162 allows it) the IPv4 one is taken, so a NAS is always
    /// named the same way.
    pub nas_ip_address: Option<IpAddr>,
    /// Calling-Station-Id (31).
    pub calling_station_id: Option<String>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("code", &self.code)
            .field("identifier", &self.identifier)
            .field("authenticator", &self.authenticator)
            .field("user_name", &self.user_name)
            .field(
                "user_password",
                &self.user_password.as_ref().map(|_| Redacted),
            )
            .field("state", &self.state)
            .field("proxy_state", &self.proxy_state)
            .field("has_message_authenticator", &self.has_message_authenticator)
            .field("nas_identifier", &self.nas_identifier)
            .field("nas_ip_address", &self.nas_ip_address)
            .field("calling_station_id", &self.calling_station_id)
            .finish()
    }
}

/// Prints `..` in place of a secret.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("..")
    }
}

/// The answer to an Access-Request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyCode {
    /// Access-Accept (2).
    Accept,
    /// Access-Reject (3).
    Reject,
    /// Access-Challenge (11).
    Challenge,
}

/// What to say in a reply; [`encode_reply`] turns it into bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// Accept, Reject or Challenge. `None` (the `Default`) is encoded as
    /// Reject: a reply nobody decided on must not let anyone in. Ignored for
    /// Status-Server, which is always answered with Accept (RFC 5997 §3.1).
    pub code: Option<ReplyCode>,
    /// Reply-Message (18), shown to the user. Split into several attributes
    /// of at most 253 bytes (at UTF-8 character boundaries) and cut short if
    /// the packet would exceed [`MAX_PACKET`].
    pub reply_message: Option<String>,
    /// State (24), 1..=253 bytes. Not sent with Reject (RFC 2865 §5.44).
    /// If it is empty or longer than 253 bytes, the reply becomes a bare
    /// Reject: a challenge whose State cannot be sent must fail closed.
    pub state: Option<Vec<u8>>,
    /// Session-Timeout (27) in seconds: with Challenge, how long the NAS
    /// should wait for the user's answer. Not sent with Reject.
    pub session_timeout: Option<u32>,
}

/// Decodes and authenticates one datagram received from a client that
/// shares `secret` with us.
///
/// `buf` is the whole datagram. See the module docs for the checks, in
/// order. Never panics, whatever `buf` holds.
pub fn decode_request(
    buf: &[u8],
    secret: &[u8],
    opts: DecodeOptions,
) -> Result<Request, WireError> {
    let packet = frame(buf)?;
    let code = match packet[0] {
        code::ACCESS_REQUEST => RequestCode::AccessRequest,
        code::STATUS_SERVER => RequestCode::StatusServer,
        other => return Err(WireError::UnsupportedCode(other)),
    };
    let mut authenticator = [0u8; 16];
    authenticator.copy_from_slice(&packet[4..HEADER_LEN]);
    let attrs = Attributes::parse(packet)?;

    let has_message_authenticator = match attrs.message_authenticator {
        Some(offset) => {
            if !message_authenticator_ok(packet, offset, secret) {
                return Err(WireError::BadMessageAuthenticator);
            }
            true
        }
        None => {
            if code == RequestCode::StatusServer
                || opts.require_message_authenticator
                || attrs.eap_message
            {
                return Err(WireError::MissingMessageAuthenticator);
            }
            if opts.limit_proxy_state && !attrs.proxy_state.is_empty() {
                return Err(WireError::ProxyStateWithoutAuthenticator);
            }
            false
        }
    };

    Ok(Request {
        code,
        identifier: packet[1],
        authenticator,
        user_name: attrs.user_name,
        user_password: attrs
            .user_password
            .map(|hidden| unhide_password(hidden, secret, &authenticator)),
        state: attrs.state.map(<[u8]>::to_vec),
        proxy_state: attrs.proxy_state.iter().map(|p| p.to_vec()).collect(),
        has_message_authenticator,
        nas_identifier: attrs.nas_identifier,
        nas_ip_address: attrs
            .nas_ipv4
            .map(IpAddr::V4)
            .or(attrs.nas_ipv6.map(IpAddr::V6)),
        calling_station_id: attrs.calling_station_id,
    })
}

/// Checks the framing and returns the packet without trailing padding.
fn frame(buf: &[u8]) -> Result<&[u8], WireError> {
    if buf.len() > MAX_PACKET {
        return Err(malformed(format!(
            "datagram of {} bytes exceeds maximum {MAX_PACKET}",
            buf.len()
        )));
    }
    if buf.len() < HEADER_LEN {
        return Err(malformed(format!(
            "datagram of {} bytes is shorter than the {HEADER_LEN}-byte header",
            buf.len()
        )));
    }
    let length = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if length < HEADER_LEN {
        return Err(malformed(format!(
            "length field {length} below minimum {HEADER_LEN}"
        )));
    }
    if length > MAX_PACKET {
        return Err(malformed(format!(
            "length field {length} above maximum {MAX_PACKET}"
        )));
    }
    buf.get(..length).ok_or_else(|| {
        malformed(format!(
            "length field {length} exceeds the {} bytes received",
            buf.len()
        ))
    })
}

fn malformed(what: String) -> WireError {
    WireError::Malformed(what)
}

/// The attributes we use, borrowed from the packet and checked.
#[derive(Default)]
struct Attributes<'a> {
    user_name: Option<String>,
    user_password: Option<&'a [u8]>,
    state: Option<&'a [u8]>,
    proxy_state: Vec<&'a [u8]>,
    /// Offset of the Message-Authenticator attribute (its type octet).
    message_authenticator: Option<usize>,
    eap_message: bool,
    nas_identifier: Option<String>,
    nas_ipv4: Option<Ipv4Addr>,
    nas_ipv6: Option<Ipv6Addr>,
    calling_station_id: Option<String>,
}

impl<'a> Attributes<'a> {
    /// Walks the attributes of a framed `packet` (header included).
    fn parse(packet: &'a [u8]) -> Result<Self, WireError> {
        let mut attrs = Attributes::default();
        let mut proxy_state_bytes = 0usize;
        let mut offset = HEADER_LEN;
        while offset < packet.len() {
            let rest = &packet[offset..];
            let [typ, length, ..] = *rest else {
                return Err(malformed(format!(
                    "attribute at offset {offset} truncated: only {} byte left",
                    rest.len()
                )));
            };
            let length = usize::from(length);
            if length < 2 {
                return Err(malformed(format!(
                    "attribute {typ} at offset {offset} has length {length}"
                )));
            }
            let Some(value) = rest.get(2..length) else {
                return Err(malformed(format!(
                    "attribute {typ} at offset {offset} has length {length}, running past the packet end at {}",
                    packet.len()
                )));
            };
            let at = Position { typ, offset };
            match typ {
                attr::USER_NAME => once(&mut attrs.user_name, at, || text(value, at))?,
                attr::USER_PASSWORD => once(&mut attrs.user_password, at, || password(value))?,
                attr::STATE => once(&mut attrs.state, at, || Ok(value))?,
                attr::NAS_IDENTIFIER => once(&mut attrs.nas_identifier, at, || text(value, at))?,
                attr::CALLING_STATION_ID => {
                    once(&mut attrs.calling_station_id, at, || text(value, at))?
                }
                attr::NAS_IP_ADDRESS => once(&mut attrs.nas_ipv4, at, || {
                    sized::<4>(value, at).map(Ipv4Addr::from)
                })?,
                attr::NAS_IPV6_ADDRESS => once(&mut attrs.nas_ipv6, at, || {
                    sized::<16>(value, at).map(Ipv6Addr::from)
                })?,
                attr::MESSAGE_AUTHENTICATOR => once(&mut attrs.message_authenticator, at, || {
                    sized::<16>(value, at).map(|_| offset)
                })?,
                attr::PROXY_STATE => {
                    proxy_state_bytes += length;
                    attrs.proxy_state.push(value);
                }
                attr::EAP_MESSAGE => attrs.eap_message = true,
                _ => {}
            }
            offset += length;
        }
        if proxy_state_bytes > PROXY_STATE_BUDGET {
            return Err(malformed(format!(
                "Proxy-State attributes take {proxy_state_bytes} bytes; a reply echoing them would exceed {MAX_PACKET}"
            )));
        }
        Ok(attrs)
    }
}

/// Where an attribute sits, for error messages.
#[derive(Clone, Copy)]
struct Position {
    typ: u8,
    offset: usize,
}

/// Stores the first occurrence of a single-valued attribute; a second one
/// is an error.
fn once<T>(
    slot: &mut Option<T>,
    at: Position,
    value: impl FnOnce() -> Result<T, WireError>,
) -> Result<(), WireError> {
    if slot.is_some() {
        return Err(malformed(format!(
            "attribute {} at offset {} repeats a single-valued attribute",
            at.typ, at.offset
        )));
    }
    *slot = Some(value()?);
    Ok(())
}

fn text(value: &[u8], at: Position) -> Result<String, WireError> {
    String::from_utf8(value.to_vec()).map_err(|_| {
        malformed(format!(
            "attribute {} at offset {} is not UTF-8 text",
            at.typ, at.offset
        ))
    })
}

fn sized<const N: usize>(value: &[u8], at: Position) -> Result<[u8; N], WireError> {
    value.try_into().map_err(|_| {
        malformed(format!(
            "attribute {} at offset {} has length {}, expected {}",
            at.typ,
            at.offset,
            value.len() + 2,
            N + 2
        ))
    })
}

fn password(value: &[u8]) -> Result<&[u8], WireError> {
    let n = value.len();
    if (PASSWORD_MIN..=PASSWORD_MAX).contains(&n) && n % 16 == 0 {
        Ok(value)
    } else {
        Err(WireError::BadUserPassword(format!(
            "{n} bytes; must be {PASSWORD_MIN}..={PASSWORD_MAX} and a multiple of 16"
        )))
    }
}

/// HMAC-MD5 over the packet with the Message-Authenticator value zeroed
/// (RFC 3579 §3.2), compared in constant time. `offset` is where the
/// attribute starts; the parser has checked it is 18 bytes long and inside
/// `packet`.
fn message_authenticator_ok(packet: &[u8], offset: usize, secret: &[u8]) -> bool {
    let value = offset + 2..offset + MA_LEN;
    let (Some(before), Some(sent), Some(after)) = (
        packet.get(..value.start),
        packet.get(value.clone()),
        packet.get(value.end..),
    ) else {
        return false;
    };
    let computed = hmac_md5(secret, &[before, &[0u8; 16], after]);
    bool::from(computed.ct_eq(sent))
}

fn hmac_md5(secret: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    // HMAC takes keys of any length (longer ones are hashed first), so this
    // cannot fail; were it to, an all-zero MAC fails closed: it verifies no
    // request and signs no reply a NAS accepts.
    let Ok(mut mac) = HmacMd5::new_from_slice(secret) else {
        return [0u8; 16];
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn md5(parts: &[&[u8]]) -> Zeroizing<[u8; 16]> {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    Zeroizing::new(hasher.finalize().into())
}

/// RFC 2865 §5.2: `p(i) = c(i) xor MD5(secret + c(i-1))`, `c(0)` being the
/// Request Authenticator. `hidden` is a non-empty multiple of 16 bytes.
fn unhide_password(hidden: &[u8], secret: &[u8], authenticator: &[u8; 16]) -> Zeroizing<Vec<u8>> {
    // Exact capacity: the plaintext is never reallocated, so no unzeroized
    // copy is left behind.
    let mut plain = Zeroizing::new(Vec::with_capacity(hidden.len()));
    let mut previous: &[u8] = authenticator;
    for block in hidden.chunks_exact(16) {
        let pad = md5(&[secret, previous]);
        plain.extend(block.iter().zip(pad.iter()).map(|(c, b)| c ^ b));
        previous = block;
    }
    while plain.last() == Some(&0) {
        plain.pop();
    }
    plain
}

/// Encodes the reply to `req`.
///
/// Attributes, in this order: Message-Authenticator (first, BlastRADIUS),
/// Reply-Message (split, see [`Reply::reply_message`]), State,
/// Session-Timeout, then every Proxy-State of the request unchanged and in
/// order (RFC 2865 §5.33). Status-Server is answered with Access-Accept.
///
/// The result is never longer than [`MAX_PACKET`] for a request that came
/// from [`decode_request`]: Reply-Message is cut to fit; if State or
/// Session-Timeout do not fit, or State is not 1..=253 bytes, the reply
/// becomes a bare Reject (fail closed). Proxy-States that cannot be encoded
/// at all (longer than 253 bytes, or more than fit; impossible for a decoded
/// request) are left out.
pub fn encode_reply(req: &Request, reply: &Reply, secret: &[u8]) -> Vec<u8> {
    let code = match req.code {
        RequestCode::AccessRequest => reply.code.unwrap_or(ReplyCode::Reject),
        RequestCode::StatusServer => ReplyCode::Accept,
    };
    let proxy_state = echoable_proxy_state(&req.proxy_state);
    let proxy_state_len: usize = proxy_state.iter().map(|p| 2 + p.len()).sum();
    let (state, session_timeout) = match code {
        ReplyCode::Reject => (None, None),
        ReplyCode::Accept | ReplyCode::Challenge => (reply.state.as_deref(), reply.session_timeout),
    };
    let fixed_len = HEADER_LEN
        + MA_LEN
        + state.map_or(0, |s| 2 + s.len())
        + session_timeout.map_or(0, |_| INTEGER_ATTR_LEN)
        + proxy_state_len;
    let state_ok = state.is_none_or(|s| (1..=MAX_VALUE).contains(&s.len()));
    if !state_ok || fixed_len > MAX_PACKET {
        return encode(
            req,
            ReplyCode::Reject,
            None,
            None,
            None,
            &proxy_state,
            secret,
        );
    }
    let message = reply
        .reply_message
        .as_deref()
        .map(|m| (m, MAX_PACKET - fixed_len));
    encode(
        req,
        code,
        message,
        state,
        session_timeout,
        &proxy_state,
        secret,
    )
}

/// The Proxy-States that can be echoed: each at most 253 bytes, together
/// within [`PROXY_STATE_BUDGET`]. All of them, for a decoded request.
fn echoable_proxy_state(all: &[Vec<u8>]) -> Vec<&[u8]> {
    let mut budget = PROXY_STATE_BUDGET;
    let mut kept = Vec::with_capacity(all.len());
    for p in all {
        if p.len() <= MAX_VALUE && 2 + p.len() <= budget {
            budget -= 2 + p.len();
            kept.push(p.as_slice());
        }
    }
    kept
}

/// Lays out and signs a reply whose parts are known to fit; `message` comes
/// with the number of bytes it may take, attribute headers included.
fn encode(
    req: &Request,
    code: ReplyCode,
    message: Option<(&str, usize)>,
    state: Option<&[u8]>,
    session_timeout: Option<u32>,
    proxy_state: &[&[u8]],
    secret: &[u8],
) -> Vec<u8> {
    let code = match code {
        ReplyCode::Accept => code::ACCESS_ACCEPT,
        ReplyCode::Reject => code::ACCESS_REJECT,
        ReplyCode::Challenge => code::ACCESS_CHALLENGE,
    };
    // Typical replies are ~100 bytes and sit in the duplicate cache for 30 s:
    // start small rather than at MAX_PACKET.
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&[code, req.identifier, 0, 0]);
    out.extend_from_slice(&req.authenticator);
    push_attr(&mut out, attr::MESSAGE_AUTHENTICATOR, &[0u8; 16]);
    if let Some((text, budget)) = message {
        push_text(&mut out, attr::REPLY_MESSAGE, text, budget);
    }
    if let Some(state) = state {
        push_attr(&mut out, attr::STATE, state);
    }
    if let Some(seconds) = session_timeout {
        push_attr(&mut out, attr::SESSION_TIMEOUT, &seconds.to_be_bytes());
    }
    for p in proxy_state {
        push_attr(&mut out, attr::PROXY_STATE, p);
    }
    debug_assert!(out.len() <= MAX_PACKET);
    let length = u16::try_from(out.len()).unwrap_or(u16::MAX);
    out[2..4].copy_from_slice(&length.to_be_bytes());

    // Message-Authenticator first, over the packet with the Request
    // Authenticator in place (RFC 3579 §3.2); then the Response
    // Authenticator over the result.
    let ma = hmac_md5(secret, &[&out]);
    out[HEADER_LEN + 2..HEADER_LEN + MA_LEN].copy_from_slice(&ma);
    let response = md5(&[&out, secret]);
    out[4..HEADER_LEN].copy_from_slice(&response[..]);
    out
}

/// Appends one attribute; `value` is at most [`MAX_VALUE`] bytes.
fn push_attr(out: &mut Vec<u8>, typ: u8, value: &[u8]) {
    debug_assert!(value.len() <= MAX_VALUE);
    let length = u8::try_from(2 + value.len()).unwrap_or(u8::MAX);
    out.push(typ);
    out.push(length);
    out.extend_from_slice(value);
}

/// Appends `text` as consecutive attributes of at most 253 bytes each, cut
/// at character boundaries so each one is valid UTF-8 on its own, within
/// `budget` bytes in all (headers included); what does not fit is dropped.
fn push_text(out: &mut Vec<u8>, typ: u8, text: &str, mut budget: usize) {
    let mut rest = text;
    while !rest.is_empty() && budget > 2 {
        let mut cut = (budget - 2).min(MAX_VALUE).min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut == 0 {
            break;
        }
        let (chunk, tail) = rest.split_at(cut);
        push_attr(out, typ, chunk.as_bytes());
        budget -= 2 + cut;
        rest = tail;
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
