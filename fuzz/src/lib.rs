//! The bodies of smsotp's fuzz targets, one plain function per target.
//!
//! `fuzz_targets/NAME.rs` hands libFuzzer's input to [`NAME`](TARGETS);
//! `tests/replay.rs` runs every file of `corpus/NAME/` through the same
//! function in a normal `cargo test`, so CI replays the corpora without
//! libFuzzer or instrumentation. See docs/fuzzing.md.
//!
//! Each target fails (panics) on a panic of the product's code and on a
//! broken property where one is cheap to state: a decoded User-Password
//! hides back to the bytes sent, a normalised phone number normalises to
//! itself, a reply's length and authenticators are right, an SMPP header
//! is the one on the wire.

// Panicking is how a fuzz target reports a broken property.
#![allow(clippy::panic)]

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use smsotp_core::audit::Audit;
use smsotp_core::clock::FixedClock;
use smsotp_core::config::Config;
use smsotp_core::directory::{Accounts, AccountsError, Directory, DirectoryError, Entry};
use smsotp_core::flow::{self, Conversation, ConversationError, Engine, LoginContext, Parts};
use smsotp_core::otp::OtpKey;
use smsotp_core::phone::{self, MaskedPhone, MemoryNumbers, Phone};
use smsotp_core::random::FixedRandom;
use smsotp_core::sms::{SendError, Sms, SmsProvider};
use smsotp_core::store::memory::MemoryStore;
use smsotp_radiusd::triage::{classify, Kind};
use smsotp_radiusd::wire::{
    decode_request, encode_reply, DecodeOptions, Reply, ReplyCode, RequestCode, WireError,
    MAX_PACKET,
};
use zeroize::Zeroizing;

/// A target's body: any bytes in, a panic on a finding.
pub type Target = fn(&[u8]);

/// Every target by name, as `scripts/fuzz.sh list` and the replay test
/// know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("radius_request", radius_request),
    ("radius_user_password", radius_user_password),
    ("radius_triage", radius_triage),
    ("smpp_pdu", smpp_pdu),
    ("http_success_body", http_success_body),
    ("config", config),
    ("phone", phone),
    ("ldap_message", ldap_message),
    ("pam_conversation", pam_conversation),
];

// ------------------------------------------------------------------ RADIUS

const SECRET: &[u8] = b"testing123";
const HEADER: usize = 20;
const MESSAGE_AUTHENTICATOR: u8 = 80;
const PROXY_STATE: u8 = 33;

fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn hmac_md5(key: &[u8], data: &[u8]) -> [u8; 16] {
    let Ok(mut mac) = Hmac::<Md5>::new_from_slice(key) else {
        return [0; 16];
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The attributes of `packet` (as far as they are well formed): type,
/// offset of the attribute, value.
fn attributes(packet: &[u8]) -> Vec<(u8, usize, &[u8])> {
    let end = match packet.get(2..4) {
        Some(l) => usize::from(u16::from_be_bytes([l[0], l[1]])).min(packet.len()),
        None => return Vec::new(),
    };
    let mut out = Vec::new();
    let mut at = HEADER;
    while at + 2 <= end {
        let len = usize::from(packet[at + 1]);
        if len < 2 || at + len > end {
            break;
        }
        out.push((packet[at], at, &packet[at + 2..at + len]));
        at += len;
    }
    out
}

/// Writes the right Message-Authenticator for `secret` into the first
/// one `packet` has (RFC 3579 §3.2), so the fuzzer gets past the check.
fn sign_message_authenticator(packet: &mut [u8], secret: &[u8]) {
    let Some(at) = attributes(packet)
        .iter()
        .find(|(t, _, v)| *t == MESSAGE_AUTHENTICATOR && v.len() == 16)
        .map(|(_, at, _)| *at)
    else {
        return;
    };
    let end = usize::from(u16::from_be_bytes([packet[2], packet[3]])).min(packet.len());
    packet[at + 2..at + 18].fill(0);
    let mac = hmac_md5(secret, &packet[..end]);
    packet[at + 2..at + 18].copy_from_slice(&mac);
}

/// RFC 2865 §5.2 hiding, written from the RFC (not the server's code).
fn hide(plain: &[u8], secret: &[u8], authenticator: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plain.len().div_ceil(16).max(1) * 16);
    let mut padded = plain.to_vec();
    padded.resize(plain.len().div_ceil(16).max(1) * 16, 0);
    let mut previous = authenticator.to_vec();
    for block in padded.chunks(16) {
        let pad = md5(&[secret, &previous]);
        let c: Vec<u8> = block.iter().zip(pad).map(|(p, b)| p ^ b).collect();
        out.extend_from_slice(&c);
        previous = c;
    }
    out
}

/// An Access-Request: User-Name "u", then `attrs`, then a signed
/// Message-Authenticator.
fn access_request(authenticator: &[u8; 16], attrs: &[(u8, &[u8])], secret: &[u8]) -> Vec<u8> {
    let mut p = vec![1, 7, 0, 0];
    p.extend_from_slice(authenticator);
    p.extend_from_slice(&[1, 3, b'u']);
    for (t, v) in attrs {
        assert!(
            v.len() <= 253,
            "the harness built an attribute of {} bytes",
            v.len()
        );
        p.push(*t);
        p.push((v.len() + 2) as u8);
        p.extend_from_slice(v);
    }
    p.extend_from_slice(&[MESSAGE_AUTHENTICATOR, 18]);
    p.extend_from_slice(&[0; 16]);
    let len = (p.len() as u16).to_be_bytes();
    p[2..4].copy_from_slice(&len);
    sign_message_authenticator(&mut p, secret);
    p
}

/// The RADIUS request decoder and the Message-Authenticator check.
///
/// Input: one flags byte, then the datagram. Flags: bit 0
/// `require_message_authenticator`, bit 1 `limit_proxy_state`, bit 2 sign
/// the packet's Message-Authenticator first (so the rest of the decoder is
/// reached). A decoded request is answered (Accept, Reject, Challenge) and
/// each reply checked: length, identifier, Response Authenticator,
/// Message-Authenticator and the Proxy-States echoed in order.
pub fn radius_request(data: &[u8]) {
    let Some((&flags, datagram)) = data.split_first() else {
        return;
    };
    let opts = DecodeOptions {
        require_message_authenticator: flags & 1 != 0,
        limit_proxy_state: flags & 2 != 0,
    };
    let lax = DecodeOptions {
        require_message_authenticator: false,
        limit_proxy_state: false,
    };
    let mut packet = datagram.to_vec();
    if flags & 4 != 0 {
        sign_message_authenticator(&mut packet, SECRET);
    }
    let strict = decode_request(&packet, SECRET, opts);
    let relaxed = decode_request(&packet, SECRET, lax);
    if let Err(e) = &strict {
        assert!(!e.to_string().is_empty());
    }
    if strict.is_ok() {
        assert!(
            relaxed.is_ok(),
            "stricter options accepted what lax ones refused"
        );
    }
    let Ok(req) = relaxed else {
        return;
    };
    if req.has_message_authenticator {
        assert!(
            matches!(
                decode_request(&packet, b"not the secret", lax),
                Err(WireError::BadMessageAuthenticator)
            ),
            "a Message-Authenticator verified under the wrong secret"
        );
    }
    let state = datagram.get(..(usize::from(flags >> 3) % 40 + 1).min(datagram.len()));
    for code in [ReplyCode::Accept, ReplyCode::Reject, ReplyCode::Challenge] {
        let reply = Reply {
            code: Some(code),
            reply_message: Some(
                "Enter the code sent to ******0123: ü".repeat(usize::from(flags) % 130),
            ),
            state: state.map(<[u8]>::to_vec),
            session_timeout: Some(60),
        };
        check_reply(&req, &encode_reply(&req, &reply, SECRET));
    }
}

fn check_reply(req: &smsotp_radiusd::wire::Request, out: &[u8]) {
    assert!(
        out.len() >= HEADER && out.len() <= MAX_PACKET,
        "reply of {} bytes",
        out.len()
    );
    assert_eq!(usize::from(u16::from_be_bytes([out[2], out[3]])), out.len());
    assert_eq!(out[1], req.identifier);
    let attrs = attributes(out);
    let covered: usize = HEADER + attrs.iter().map(|(_, _, v)| v.len() + 2).sum::<usize>();
    assert_eq!(
        covered,
        out.len(),
        "reply attributes do not fill the packet"
    );
    // Message-Authenticator over the packet with the Request Authenticator.
    if let Some((_, at, sent)) = attrs.iter().find(|(t, _, _)| *t == MESSAGE_AUTHENTICATOR) {
        let mut copy = out.to_vec();
        copy[4..HEADER].copy_from_slice(&req.authenticator);
        copy[at + 2..at + 18].fill(0);
        assert_eq!(
            &hmac_md5(SECRET, &copy),
            sent,
            "reply Message-Authenticator"
        );
    }
    // Response Authenticator (RFC 2865 §3).
    let expected = md5(&[&out[..4], &req.authenticator, &out[HEADER..], SECRET]);
    assert_eq!(&out[4..HEADER], &expected[..], "Response Authenticator");
    let echoed: Vec<&[u8]> = attrs
        .iter()
        .filter(|(t, _, _)| *t == PROXY_STATE)
        .map(|(_, _, v)| *v)
        .collect();
    let sent: Vec<&[u8]> = req.proxy_state.iter().map(Vec::as_slice).collect();
    assert_eq!(echoed, sent, "Proxy-State not echoed in order");
}

/// The overload triage (smsotp-radiusd's reader thread): it looks at a
/// datagram before anything decodes it, to queue a user's answer to a
/// challenge (and Status-Server) ahead of first rounds. Input as for
/// [`radius_request`] (flags byte, bit 2: sign the Message-Authenticator).
/// It must never panic on any bytes, and on every datagram the decoder
/// accepts it must agree with it: Status-Server and an Access-Request
/// with a State are answers, an Access-Request without one is new.
pub fn radius_triage(data: &[u8]) {
    let Some((&flags, datagram)) = data.split_first() else {
        return;
    };
    let mut packet = datagram.to_vec();
    if flags & 4 != 0 {
        sign_message_authenticator(&mut packet, SECRET);
    }
    let kind = classify(&packet);
    let lax = DecodeOptions {
        require_message_authenticator: false,
        limit_proxy_state: false,
    };
    let Ok(req) = decode_request(&packet, SECRET, lax) else {
        return;
    };
    let answer = match req.code {
        RequestCode::StatusServer => true,
        RequestCode::AccessRequest => req.state.is_some(),
    };
    let expected = if answer { Kind::Answer } else { Kind::New };
    assert!(
        kind == expected,
        "triage says {kind:?}, the decoder reads {:?} with state {:?}",
        req.code,
        req.state
    );
}

/// User-Password decoding (RFC 2865 §5.2).
///
/// Input: a secret length byte, the secret, a 16-byte Request
/// Authenticator, then the rest. The rest is hidden as a password and
/// must decode to itself (less trailing NULs, which hiding cannot tell
/// from padding); and, taken as hidden bytes, what it decodes to must hide
/// back to exactly those bytes.
pub fn radius_user_password(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n) % 64;
    if rest.len() < n + 16 {
        return;
    }
    let (secret, rest) = rest.split_at(n);
    let (ra, rest) = rest.split_at(16);
    let mut authenticator = [0u8; 16];
    authenticator.copy_from_slice(ra);
    let lax = DecodeOptions {
        require_message_authenticator: false,
        limit_proxy_state: false,
    };

    // Hide, then decode: the identity. (An attribute holds at most 253
    // bytes: a longer hiding cannot be sent at all.)
    let plain = &rest[..rest.len().min(240)];
    let hidden = hide(plain, secret, &authenticator);
    let packet = access_request(&authenticator, &[(2, &hidden)], secret);
    match decode_request(&packet, secret, lax) {
        Ok(req) => {
            let mut want = plain.to_vec();
            while want.last() == Some(&0) {
                want.pop();
            }
            let got = req.user_password.as_ref().map(|p| p.to_vec());
            assert_eq!(
                got,
                Some(want),
                "User-Password did not decode to what was hidden"
            );
        }
        Err(WireError::BadUserPassword(_)) => assert!(
            hidden.len() > 128,
            "refused a {}-byte User-Password",
            hidden.len()
        ),
        Err(e) => panic!("a well-formed request refused: {e}"),
    }

    // Decode arbitrary hidden bytes, then hide again: the same bytes.
    let whole = rest.len() / 16 * 16;
    if !(16..=128).contains(&whole) {
        return;
    }
    let hidden = &rest[..whole];
    let packet = access_request(&authenticator, &[(2, hidden)], secret);
    let req = match decode_request(&packet, secret, lax) {
        Ok(r) => r,
        Err(e) => panic!("a well-formed request refused: {e}"),
    };
    let Some(plain) = req.user_password.as_ref() else {
        panic!("User-Password lost");
    };
    let mut padded = plain.to_vec();
    padded.resize(whole, 0);
    assert_eq!(
        hide(&padded, secret, &authenticator),
        hidden,
        "decode is not the inverse of hiding"
    );
}

// -------------------------------------------------------------------- SMPP

/// The SMPP PDU reader: framing and rusmpp's decoder over what an SMSC
/// sends. Each PDU taken must be the next bytes of the input, with its own
/// length in its length field, and the id, status and sequence the session
/// goes on with must be those in its header.
pub fn smpp_pdu(data: &[u8]) {
    let got = smsotp_core::fuzzing::smpp_stream(data);
    let mut at = 0;
    for (frame, header) in &got.pdus {
        assert_eq!(data.get(at..at + frame.len()), Some(frame.as_slice()));
        at += frame.len();
        let word =
            |i: usize| u32::from_be_bytes([frame[i], frame[i + 1], frame[i + 2], frame[i + 3]]);
        assert_eq!(word(0) as usize, frame.len());
        assert_eq!(
            *header,
            [word(4), word(8), word(12)],
            "header decoded differently from the wire"
        );
    }
    if let Some(e) = &got.error {
        assert!(!e.is_empty());
    }
}

// -------------------------------------------------------------------- HTTP

/// The HTTP providers' success-body rule: the first line is the value of
/// `success_body` as the config writes it (`{ regex = "^OK" }`, …), validated as the config
/// does; the rest is the gateway's answer body. A valid rule gives the same
/// answer twice and describes itself.
pub fn http_success_body(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (rule, body) = text.split_once('\n').unwrap_or((&text, ""));
    if rule.len() > 512 {
        // Regex compile time grows with the pattern; the config is root's.
        return;
    }
    if let Ok((matches, described)) = smsotp_core::fuzzing::success_body(rule, body) {
        assert!(!described.is_empty());
        let again = smsotp_core::fuzzing::success_body(rule, body).map(|(m, _)| m);
        assert_eq!(again, Ok(matches));
    }
}

// ------------------------------------------------------------------ config

/// The config parser: the input as a whole smsotp.toml, validated as at
/// login (no file is opened). An error names the file.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Config::from_toml(Path::new("/etc/smsotp/smsotp.toml"), &text) {
        Ok(cfg) => {
            let _ = format!("{cfg:?}");
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(!shown.is_empty());
        }
    }
}

// ------------------------------------------------------------------- phone

const REGIONS: &[&str] = &["US", "DE", "GB", "FR", "CH", "IN", "BR", "JP", "AU", "IT"];

/// Phone parsing. Input: a region byte (none, or one of a few), then the
/// text. A parsed number is E.164, parses to itself without a region, the
/// cache gives the same answer, and masking shows at most four digits.
pub fn phone(data: &[u8]) {
    let Some((&r, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let region = usize::from(r)
        .checked_sub(1)
        .and_then(|i| REGIONS.get(i % REGIONS.len()))
        .and_then(|id| id.parse().ok());
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).count();
    assert!(
        digits(&phone::mask_raw(&text)) <= 4,
        "mask_raw shows too much"
    );
    if let Some(m) = MaskedPhone::from_stored(&text) {
        let _ = m.as_str();
    }
    let parsed = Phone::parse(&text, region);
    let cache = MemoryNumbers::default();
    let cached = Phone::parse_cached(&text, region, &cache);
    assert_eq!(
        parsed.as_ref().map(Phone::e164).ok(),
        cached.as_ref().map(Phone::e164).ok(),
        "the cache changed the answer"
    );
    let again = Phone::parse_cached(&text, region, &cache);
    assert_eq!(
        cached.as_ref().map(Phone::e164).ok(),
        again.as_ref().map(Phone::e164).ok(),
        "a cached answer differs"
    );
    match parsed {
        Ok(p) => {
            let e164 = p.e164();
            assert!(
                e164.starts_with('+') && e164[1..].bytes().all(|b| b.is_ascii_digit()),
                "{e164:?}"
            );
            let back = Phone::parse(e164, None).map(|q| q.e164().to_owned());
            assert_eq!(
                back.as_deref(),
                Ok(e164),
                "E.164 form does not parse to itself"
            );
            assert!(digits(&p.masked()) <= 4, "masked phone shows too much");
            assert!(digits(MaskedPhone::of(&p).as_str()) <= 4);
        }
        Err(e) => {
            assert!(!e.problem().is_empty() && !e.fix().is_empty());
        }
    }
}

// -------------------------------------------------------------------- LDAP

/// The LDAP response reader: BER framing and rasn's decoder over what a
/// server sends, each message turned as a search or bind does. A decoded
/// message must encode and decode back to itself.
pub fn ldap_message(data: &[u8]) {
    let got = smsotp_core::fuzzing::ldap_stream(data);
    assert_eq!(
        got.roundtrip_mismatches, 0,
        "a message did not survive encode and decode"
    );
    let names = ["mobile".to_owned(), "telephoneNumber".to_owned()];
    for e in &got.entries {
        let _ = e.first_value(&names);
        let _ = e.ad_account_disabled();
    }
    assert!(!got.error.is_empty());
}

// --------------------------------------------------------------------- PAM

/// What the PAM conversation types, one answer a line. A line `@` is
/// replaced by the last code sent (so the fuzzer reaches the accepting
/// paths). The login ends within its bound of prompts; an Accept needs an
/// answer that was a code sent.
///
/// Input: a flags byte (bit 0: a user with no number and `no_phone =
/// "enroll"`; bit 1: letters and digits codes; bit 2: the conversation
/// hides information, PAM_SILENT), then the answers.
pub fn pam_conversation(data: &[u8]) {
    let _ = converse(data);
}

/// [`pam_conversation`], with the login's end for the tests.
fn converse(data: &[u8]) -> Option<Result<flow::Verdict, flow::FlowError>> {
    let (&flags, rest) = data.split_first()?;
    let text = String::from_utf8_lossy(rest);
    let enroll = flags & 1 != 0;
    let alphabet = if flags & 2 != 0 {
        "alphanumeric"
    } else {
        "digits"
    };
    let toml = format!(
        "[otp]\nalphabet = \"{alphabet}\"\nmessage = \"code:{{code}}\"\nmax_attempts = 3\n\
         [otp.resend]\nmax = 2\ncooldown = \"0s\"\n\
         [policy]\nno_phone = \"{}\"\n[phone]\ndefault_region = \"US\"\n",
        if enroll { "enroll" } else { "deny" }
    );
    let cfg = match Config::from_toml(Path::new("/fuzz/smsotp.toml"), &toml) {
        Ok(c) => c,
        Err(e) => panic!("the fuzz config is refused: {e}"),
    };
    let sent = Rc::new(RefCell::new(Vec::<String>::new()));
    let parts = Parts {
        store: Box::new(MemoryStore::new()),
        directories: vec![Box::new(Phones)],
        providers: vec![Box::new(Recorder(sent.clone()))],
        accounts: Box::new(NoGroups),
        clock: Box::new(FixedClock::at(1_700_000_000_000)),
        rng: Box::new(FixedRandom::new(7)),
        audit: Audit { sinks: Vec::new() },
        key: OtpKey::from_bytes(&[9u8; 32]),
        host: "fuzz".into(),
    };
    let engine = Engine::with_parts(cfg, parts);
    let ctx = LoginContext {
        user: if enroll { "newbie" } else { "alice" }.into(),
        service: "sshd".into(),
        rhost: None,
    };
    let mut conv = Typist {
        answers: text.split('\n').map(str::to_owned).collect(),
        next: 0,
        sent: sent.clone(),
        typed: Vec::new(),
        silent: flags & 4 != 0,
    };
    let verdict = flow::run(&engine, &mut conv, &ctx);
    if let Ok(flow::Verdict::Accept(_)) = &verdict {
        let codes = sent.borrow();
        let normal = |s: &str| -> String {
            s.chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_lowercase())
                .collect()
        };
        assert!(
            conv.typed
                .iter()
                .any(|t| codes.iter().any(|c| normal(t) == normal(c))),
            "accepted without a code that was sent"
        );
    }
    Some(verdict)
}

/// The one user with a number.
struct Phones;

impl Directory for Phones {
    fn name(&self) -> String {
        "fuzz".into()
    }
    fn lookup(&self, user: &str) -> Result<Option<Entry>, DirectoryError> {
        Ok((user == "alice").then(|| Entry {
            language: None,
            raw: "+12025550123".into(),
            source: "fuzz".into(),
            location: "fuzz:1".into(),
            line: Some(1),
        }))
    }
}

struct NoGroups;

impl Accounts for NoGroups {
    fn gecos(&self, _user: &str) -> Result<Option<String>, AccountsError> {
        Ok(Some(String::new()))
    }
    fn groups(&self, _user: &str) -> Result<Vec<String>, AccountsError> {
        Ok(Vec::new())
    }
}

/// Keeps the code of each SMS (the text is `code:{code}`).
struct Recorder(Rc<RefCell<Vec<String>>>);

impl SmsProvider for Recorder {
    fn name(&self) -> &str {
        "fuzz"
    }
    fn send(&self, sms: &Sms<'_>) -> Result<(), SendError> {
        let code = sms.text.strip_prefix("code:").unwrap_or(sms.text);
        self.0.borrow_mut().push(code.to_owned());
        Ok(())
    }
}

/// Types the scripted answers; end of input is the user gone.
struct Typist {
    answers: Vec<String>,
    next: usize,
    sent: Rc<RefCell<Vec<String>>>,
    typed: Vec<String>,
    silent: bool,
}

impl Typist {
    fn answer(&mut self) -> Result<Zeroizing<String>, ConversationError> {
        let Some(a) = self.answers.get(self.next) else {
            return Err(ConversationError::Gone {
                detail: "end of input".into(),
            });
        };
        self.next += 1;
        let a = if a == "@" {
            self.sent.borrow().last().cloned().unwrap_or_default()
        } else {
            a.clone()
        };
        self.typed.push(a.clone());
        Ok(Zeroizing::new(a))
    }
}

impl Conversation for Typist {
    fn info(&mut self, _text: &str) -> Result<(), ConversationError> {
        Ok(())
    }
    fn error(&mut self, _text: &str) -> Result<(), ConversationError> {
        Ok(())
    }
    fn shows_info(&self) -> bool {
        !self.silent
    }
    fn ask_secret(&mut self, _prompt: &str) -> Result<Zeroizing<String>, ConversationError> {
        self.answer()
    }
    fn ask_text(&mut self, _prompt: &str) -> Result<Zeroizing<String>, ConversationError> {
        self.answer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let d: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        d.chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn hide_is_rfc_2865() {
        // RFC 2865 section 7.1: "arctangent" under "xyzzy5461".
        let ra: [u8; 16] = hex("0f 40 3f 94 73 97 80 57 bd 83 d5 cb 98 f4 22 7a")
            .try_into()
            .unwrap();
        assert_eq!(
            hide(b"arctangent", b"xyzzy5461", &ra),
            hex("0d be 70 8d 93 d4 13 ce 31 96 e4 3f 78 2a 0a ee")
        );
    }

    #[test]
    fn a_built_request_passes_the_strict_decoder() {
        let p = access_request(&[5; 16], &[(2, &hide(b"pw", SECRET, &[5; 16]))], SECRET);
        let strict = DecodeOptions {
            require_message_authenticator: true,
            limit_proxy_state: true,
        };
        let req = decode_request(&p, SECRET, strict).unwrap();
        assert_eq!(
            req.user_password.as_deref().map(Vec::as_slice),
            Some(&b"pw"[..])
        );
        // And signing again after a change makes it verify again.
        let mut changed = p.clone();
        changed[1] ^= 1;
        assert!(decode_request(&changed, SECRET, strict).is_err());
        sign_message_authenticator(&mut changed, SECRET);
        assert!(decode_request(&changed, SECRET, strict).is_ok());
    }

    #[test]
    fn the_conversation_target_reaches_accept_and_reject() {
        let accept = converse(b"\x00@").unwrap().unwrap();
        assert!(matches!(accept, flow::Verdict::Accept(_)), "{accept:?}");
        let enrolled = converse(b"\x01+1 202 555 0188\n@").unwrap().unwrap();
        assert!(matches!(enrolled, flow::Verdict::Accept(_)), "{enrolled:?}");
        let wrong = converse(b"\x00000000\n000001\n000002").unwrap().unwrap();
        assert!(matches!(wrong, flow::Verdict::Reject(_)), "{wrong:?}");
    }

    #[test]
    #[should_panic(expected = "Response Authenticator")]
    fn a_wrong_reply_is_caught() {
        let p = access_request(&[5; 16], &[], SECRET);
        let lax = DecodeOptions {
            require_message_authenticator: false,
            limit_proxy_state: false,
        };
        let req = decode_request(&p, SECRET, lax).unwrap();
        let mut out = encode_reply(&req, &Reply::default(), SECRET);
        out[5] ^= 1;
        check_reply(&req, &out);
    }
}
