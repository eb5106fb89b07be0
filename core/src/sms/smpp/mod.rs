//! The `smpp` provider: SMPP 3.4 to an SMSC, as Gluu's `smpp` script does.
//!
//! One send is `bind_transmitter`, one `submit_sm` per part, `unbind`, over a
//! blocking socket (optionally TLS through rustls) with every wait bounded:
//! `connect_timeout` for each connection attempt and `timeout` for the whole
//! send. PDUs are encoded and decoded by `rusmpp-core` (the codec crate that
//! `rusmpp` re-exports, without its tokio codec). It starts no thread: it
//! runs inside sshd's forked PAM child.
//!
//! Text goes as GSM 03.38 (`data_coding` 0, one unpacked septet per byte, the
//! form SMSCs expect over SMPP) when every character is in the GSM default
//! alphabet or its extension table, and as UCS-2 (`data_coding` 8, UTF-16BE)
//! otherwise; `data_coding` picks Latin-1, IA5 or always UCS-2 instead. A
//! text longer than one SMS (160 GSM septets, 70 UCS-2 characters, 140
//! octets) goes in parts with a concatenation header (UDH, `esm_class` 0x40,
//! 8-bit reference; 153/67/134 per part, never splitting an escape or a
//! surrogate pair), or whole in the `message_payload` TLV
//! (`long_messages = "payload"`).
//!
//! Sessions: the PAM module opens one per send ([`SessionMode::PerSend`]).
//! smsotp-radiusd keeps bound sessions in a [`SmppSessions`] pool shared by
//! its workers ([`SessionMode::Persistent`]): a send takes an idle session,
//! or binds a new one when none is idle, and puts it back afterwards, so
//! steady traffic reuses one bind. The core starts no threads, so keep-alive
//! is lazy: before reusing a session idle for longer than
//! `enquire_link_interval`, it sends `enquire_link` and binds afresh if that
//! fails; a session idle for less is checked for a close (or an `unbind` or
//! `enquire_link` from the SMSC, which are answered) without waiting. If the
//! reused session turns out dead while the first `submit_sm` is written, the
//! send binds once more and retries; once a `submit_sm` has left, it is never
//! sent again on this provider (an unanswered one fails over instead).
//!
//! Errors say what the chain should do: a refused bind (bad `system_id` or
//! password) is `Misconfigured`, and no new bind is tried for
//! [`BIND_HOLDOFF`] (an SMSC may lock the account after repeated failures);
//! `ESME_RTHROTTLED`, `ESME_RMSGQFUL`, a `generic_nack`, a reset connection or
//! a timeout are `Transient` (fail over); an invalid destination is
//! `Rejected`. No message says the password, the text or the number.

pub(crate) mod config;

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rusmpp_core::command::owned::Command;
use rusmpp_core::decode::owned::DecodeWithLength;
use rusmpp_core::encode::owned::Encode;
use rusmpp_core::encode::Length;
use rusmpp_core::pdus::owned::{BindTransmitter, DeliverSmResp, Pdu, SubmitSm};
use rusmpp_core::tlvs::owned::MessageSubmissionRequestTlvValue;
use rusmpp_core::types::owned::{AnyOctetString, COctetString, OctetString};
use rusmpp_core::values::owned::MessagePayload;
use rusmpp_core::values::{DataCoding, EsmClass, InterfaceVersion, Npi, RegisteredDelivery, Ton};
use rusmpp_core::{CommandId, CommandStatus};
use zeroize::{Zeroize, Zeroizing};

use crate::files;
use crate::sms::gsm::{gsm7_encode, ESC};
use crate::sms::tls;
use crate::sms::{SendError, Sms, SmsProvider};

/// After the SMSC refused a bind, no new bind is tried for this long.
pub const BIND_HOLDOFF: Duration = Duration::from_secs(60);
/// The most parts one message may take: a longer text is a config mistake.
pub const MAX_PARTS: usize = 10;
/// The longest PDU accepted from an SMSC.
const MAX_PDU: usize = 64 * 1024;
/// How long an `unbind` may wait for its answer.
const UNBIND_WAIT: Duration = Duration::from_millis(500);
/// The most idle sessions a pool keeps per provider.
const MAX_IDLE: usize = 4;

// ------------------------------------------------------------------- config

/// How a text is encoded (`data_coding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// GSM 03.38 (`data_coding` 0) when the text fits, UCS-2 otherwise.
    Gsm7,
    /// ISO-8859-1 (`data_coding` 3) when the text fits, UCS-2 otherwise.
    Latin1,
    /// IA5/ASCII (`data_coding` 1) when the text is ASCII, UCS-2 otherwise.
    Ia5,
    /// Always UCS-2 (`data_coding` 8).
    Ucs2,
}

/// How a text longer than one SMS is sent (`long_messages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongMessages {
    /// Several `submit_sm` with a concatenation header.
    Udh,
    /// One `submit_sm` with the whole text in the `message_payload` TLV.
    Payload,
}

/// A validated `[[provider]] kind = "smpp"` table. No secret in it: the
/// password is read from `password_file` at each bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmppSpec {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// An extra trust anchor besides the system's CAs (with `tls`).
    pub ca_file: Option<PathBuf>,
    pub system_id: String,
    /// No file: bind with an empty password.
    pub password_file: Option<PathBuf>,
    pub system_type: String,
    pub source_addr: String,
    pub source_addr_ton: u8,
    pub source_addr_npi: u8,
    pub dest_addr_ton: u8,
    pub dest_addr_npi: u8,
    pub registered_delivery: u8,
    pub data_coding: Coding,
    pub long_messages: LongMessages,
    /// Each connection attempt.
    pub connect_timeout: Duration,
    /// A whole send: connect, bind, every part.
    pub timeout: Duration,
    /// A pooled session idle longer than this is probed before use.
    pub enquire_link_interval: Duration,
}

impl SmppSpec {
    pub const DEFAULT_PORT: u16 = 2775;
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_ENQUIRE_LINK_INTERVAL: Duration = Duration::from_secs(30);

    /// `smpp://host:port` (`smpps://` with TLS), for status and doctor
    /// output: no credentials in it.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "smpps" } else { "smpp" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Type of number names, as jsmpp's `TypeOfNumber` (Gluu) spells them, in
/// lower case.
pub const TONS: [(&str, u8); 7] = [
    ("unknown", 0),
    ("international", 1),
    ("national", 2),
    ("network_specific", 3),
    ("subscriber_number", 4),
    ("alphanumeric", 5),
    ("abbreviated", 6),
];

/// Numbering plan names, as jsmpp's `NumberingPlanIndicator` spells them.
pub const NPIS: [(&str, u8); 10] = [
    ("unknown", 0),
    ("isdn", 1),
    ("data", 3),
    ("telex", 4),
    ("land_mobile", 6),
    ("national", 8),
    ("private", 9),
    ("ermes", 10),
    ("internet", 14),
    ("wap", 18),
];

/// Looks up `name` (any case, `-` or `_`) in `TONS` or `NPIS`.
pub fn code_of(table: &[(&str, u8)], name: &str) -> Option<u8> {
    let n = name.trim().to_ascii_lowercase().replace('-', "_");
    table.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
}

// ----------------------------------------------------------------- encoding

fn ucs2(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// A text in the bytes of one `data_coding`.
#[derive(Clone, PartialEq, Eq)]
pub struct Encoded {
    pub data_coding: u8,
    pub bytes: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Encoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Encoded {{ data_coding: {}, {} bytes }}",
            self.data_coding,
            self.bytes.len()
        )
    }
}

impl Encoded {
    fn of(text: &str, alphabet: Coding) -> Encoded {
        let (data_coding, bytes) = match alphabet {
            Coding::Gsm7 => match gsm7_encode(text) {
                Some(b) => (0, b),
                None => (8, ucs2(text)),
            },
            Coding::Latin1 if text.chars().all(|c| u32::from(c) <= 0xFF) => {
                (3, text.chars().map(|c| c as u8).collect())
            }
            Coding::Ia5 if text.is_ascii() => (1, text.as_bytes().to_vec()),
            Coding::Latin1 | Coding::Ia5 | Coding::Ucs2 => (8, ucs2(text)),
        };
        Encoded {
            data_coding,
            bytes: Zeroizing::new(bytes),
        }
    }

    /// (one SMS, one part of a concatenated SMS), in bytes.
    fn limits(&self) -> (usize, usize) {
        if self.data_coding == 0 {
            (160, 153)
        } else {
            (140, 134)
        }
    }

    /// The length of the unit starting at `i`: an escape and its septet, a
    /// surrogate pair, or one character.
    fn unit_at(&self, i: usize) -> usize {
        let b = &self.bytes;
        match self.data_coding {
            0 if b[i] == ESC => 2,
            8 if (0xD8..=0xDB).contains(&b[i]) => 4,
            8 => 2,
            _ => 1,
        }
        .min(b.len() - i)
    }

    /// Cuts the text into chunks of at most `max` bytes, between units.
    fn chunks(&self, max: usize) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let (mut start, mut i) = (0, 0);
        while i < self.bytes.len() {
            let u = self.unit_at(i);
            if i + u - start > max {
                out.push(&self.bytes[start..i]);
                start = i;
            }
            i += u;
        }
        if start < self.bytes.len() || out.is_empty() {
            out.push(&self.bytes[start..]);
        }
        out
    }
}

/// What goes into one `submit_sm`.
#[derive(Clone, PartialEq, Eq)]
pub struct Part {
    pub esm_class: u8,
    pub data_coding: u8,
    pub short_message: Zeroizing<Vec<u8>>,
    pub payload: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Part")
            .field("esm_class", &self.esm_class)
            .field("data_coding", &self.data_coding)
            .field("short_message_len", &self.short_message.len())
            .field("payload_len", &self.payload.as_ref().map(|p| p.len()))
            .finish()
    }
}

/// The `submit_sm` contents for `text`; `reference` identifies the parts of
/// one concatenated message.
pub fn message_parts(
    text: &str,
    alphabet: Coding,
    long: LongMessages,
    reference: u8,
) -> Result<Vec<Part>, String> {
    let enc = Encoded::of(text, alphabet);
    let (single, each) = enc.limits();
    let dc = enc.data_coding;
    if enc.bytes.len() <= single {
        return Ok(vec![Part {
            esm_class: 0,
            data_coding: dc,
            short_message: enc.bytes.clone(),
            payload: None,
        }]);
    }
    if long == LongMessages::Payload {
        return Ok(vec![Part {
            esm_class: 0,
            data_coding: dc,
            short_message: Zeroizing::new(Vec::new()),
            payload: Some(enc.bytes.clone()),
        }]);
    }
    let chunks = enc.chunks(each);
    if chunks.len() > MAX_PARTS {
        return Err(format!(
            "the message needs {} SMS parts (at most {MAX_PARTS}); shorten otp.message",
            chunks.len()
        ));
    }
    let total = chunks.len() as u8;
    Ok(chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut sm = vec![0x05, 0x00, 0x03, reference, total, i as u8 + 1];
            sm.extend_from_slice(c);
            Part {
                esm_class: 0x40,
                data_coding: dc,
                short_message: Zeroizing::new(sm),
                payload: None,
            }
        })
        .collect())
}

// ----------------------------------------------------------------- sessions

/// Bound sessions kept between sends, shared by every provider (and every
/// worker thread) given the same pool. Cheap to clone.
#[derive(Clone, Default)]
pub struct SmppSessions {
    inner: Arc<Mutex<HashMap<String, PoolEntry>>>,
}

#[derive(Default)]
struct PoolEntry {
    idle: Vec<Session>,
    refused_until: Option<Instant>,
}

impl fmt::Debug for SmppSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let idle: usize = self
            .inner
            .lock()
            .map(|m| m.values().map(|e| e.idle.len()).sum())
            .unwrap_or(0);
        write!(f, "SmppSessions {{ idle: {idle} }}")
    }
}

impl SmppSessions {
    pub fn new() -> SmppSessions {
        SmppSessions::default()
    }

    /// Idle sessions in the pool (for tests and status).
    pub fn idle(&self) -> usize {
        self.inner
            .lock()
            .map(|m| m.values().map(|e| e.idle.len()).sum())
            .unwrap_or(0)
    }

    fn with<T>(&self, key: &str, f: impl FnOnce(&mut PoolEntry) -> T) -> T {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(key.to_owned()).or_default())
    }
}

/// Whether sessions outlive a send.
#[derive(Debug, Clone)]
pub enum SessionMode {
    /// Bind, submit, unbind: the PAM module (a short-lived process).
    PerSend,
    /// Keep bound sessions in this pool: smsotp-radiusd.
    Persistent(SmppSessions),
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
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

/// What went wrong on the wire.
#[derive(Debug)]
enum Wire {
    Timeout,
    Closed,
    Io(std::io::Error),
    Malformed(String),
}

/// One PDU from the SMSC: the header, and the body when rusmpp could
/// decode it (we need nothing from the bodies we receive).
#[derive(Debug)]
struct Incoming {
    id: CommandId,
    status: CommandStatus,
    seq: u32,
}

/// A bound transmitter session.
struct Session {
    stream: Stream,
    /// Bytes read but not yet a whole PDU.
    buf: Vec<u8>,
    seq: u32,
    last_used: Instant,
    /// Still bound and in step: worth an `unbind` when dropped.
    healthy: bool,
}

impl Session {
    fn new(stream: Stream) -> Session {
        Session {
            stream,
            buf: Vec::new(),
            seq: 0,
            last_used: Instant::now(),
            healthy: true,
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = if self.seq >= 0x7FFF_FFFF {
            1
        } else {
            self.seq + 1
        };
        self.seq
    }

    /// Bounds the next read and write by `deadline`.
    fn arm(&self, deadline: Instant) -> Result<(), Wire> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Wire::Timeout);
        }
        let tcp = self.stream.tcp();
        tcp.set_read_timeout(Some(left)).map_err(Wire::Io)?;
        tcp.set_write_timeout(Some(left)).map_err(Wire::Io)?;
        Ok(())
    }

    fn write_pdu(
        &mut self,
        seq: u32,
        status: CommandStatus,
        pdu: &Pdu,
        deadline: Instant,
    ) -> Result<(), Wire> {
        let bytes = encode(seq, status, pdu);
        self.arm(deadline)?;
        let r = self
            .stream
            .write_all(&bytes)
            .and_then(|()| self.stream.flush());
        r.map_err(|e| {
            self.healthy = false;
            wire_io(e)
        })
    }

    fn read_pdu(&mut self, deadline: Instant) -> Result<Incoming, Wire> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if !(16..=MAX_PDU).contains(&len) {
                    self.healthy = false;
                    return Err(Wire::Malformed(format!(
                        "a PDU of {len} bytes (must be 16 to {MAX_PDU})"
                    )));
                }
                if self.buf.len() >= len {
                    let frame: Vec<u8> = self.buf.drain(..len).collect();
                    return Ok(decode(&frame));
                }
            }
            self.arm(deadline)?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.healthy = false;
                    return Err(Wire::Closed);
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let w = wire_io(e);
                    if !matches!(w, Wire::Timeout) {
                        self.healthy = false;
                    }
                    return Err(w);
                }
            }
        }
    }

    /// Answers what an SMSC may send a transmitter unasked. An `unbind`
    /// ends the session.
    fn answer(&mut self, m: &Incoming, deadline: Instant) -> Result<(), Wire> {
        let reply = match m.id {
            CommandId::EnquireLink => Pdu::EnquireLinkResp,
            CommandId::Unbind => {
                let _ = self.write_pdu(m.seq, CommandStatus::EsmeRok, &Pdu::UnbindResp, deadline);
                self.healthy = false;
                return Err(Wire::Closed);
            }
            CommandId::DeliverSm => {
                Pdu::DeliverSmResp(DeliverSmResp::new(COctetString::empty(), Vec::new()))
            }
            id if id.is_operation() => {
                return self.write_pdu(
                    m.seq,
                    CommandStatus::EsmeRinvcmdid,
                    &Pdu::GenericNack,
                    deadline,
                )
            }
            // A late answer to something we gave up on.
            _ => return Ok(()),
        };
        self.write_pdu(m.seq, CommandStatus::EsmeRok, &reply, deadline)
    }

    /// Waits for the answer to `seq` (or a `generic_nack` for it), answering
    /// whatever else comes meanwhile.
    fn await_resp(&mut self, seq: u32, deadline: Instant) -> Result<Incoming, Wire> {
        loop {
            let m = self.read_pdu(deadline)?;
            let nack = m.id == CommandId::GenericNack && (m.seq == seq || m.seq == 0);
            if (m.seq == seq && m.id.is_response()) || nack {
                return Ok(m);
            }
            self.answer(&m, deadline)?;
        }
    }

    /// Sends `pdu` and waits for its answer. `Err(Ok(_))`: it never left.
    fn request(&mut self, pdu: &Pdu, deadline: Instant) -> Result<Incoming, Sent> {
        let seq = self.next_seq();
        self.write_pdu(seq, CommandStatus::EsmeRok, pdu, deadline)
            .map_err(Sent::No)?;
        let r = self.await_resp(seq, deadline).map_err(Sent::Yes);
        if r.is_err() {
            // An answer may still come and would be out of step.
            self.healthy = false;
        }
        r
    }

    /// Is an idle session still usable? Handles what arrived while it was
    /// idle without waiting for more.
    fn still_alive(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_millis(1);
        loop {
            match self.read_pdu(deadline) {
                Ok(m) => {
                    if self.answer(&m, deadline + UNBIND_WAIT).is_err() {
                        return false;
                    }
                }
                Err(Wire::Timeout) => return self.healthy,
                Err(_) => return false,
            }
        }
    }

    fn enquire_link(&mut self, deadline: Instant) -> bool {
        matches!(
            self.request(&Pdu::EnquireLink, deadline),
            Ok(m) if m.id == CommandId::EnquireLinkResp && m.status == CommandStatus::EsmeRok
        ) && self.healthy
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.healthy {
            self.healthy = false;
            let _ = self.request(&Pdu::Unbind, Instant::now() + UNBIND_WAIT);
        }
    }
}

/// Whether a request may have reached the SMSC.
#[derive(Debug)]
enum Sent {
    /// Failed before the PDU was written out: safe to retry elsewhere.
    No(Wire),
    /// Written, but no answer: the SMSC may have acted on it.
    Yes(Wire),
}

impl Sent {
    fn wire(self) -> Wire {
        match self {
            Sent::No(w) | Sent::Yes(w) => w,
        }
    }
}

fn wire_io(e: std::io::Error) -> Wire {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::WouldBlock | K::TimedOut => Wire::Timeout,
        K::UnexpectedEof => Wire::Closed,
        _ => Wire::Io(e),
    }
}

/// The whole PDU: header (length, id, status, sequence) and body.
fn encode(seq: u32, status: CommandStatus, pdu: &Pdu) -> Zeroizing<Vec<u8>> {
    let len = 16 + pdu.length();
    let mut b = BytesMut::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_be_bytes());
    b.extend_from_slice(&u32::from(pdu.command_id()).to_be_bytes());
    b.extend_from_slice(&u32::from(status).to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    pdu.encode(&mut b);
    let out = Zeroizing::new(b.to_vec());
    // The bind's copy holds the password.
    b[..].zeroize();
    out
}

/// The header, through rusmpp when it decodes the PDU, by hand when the
/// body is something it refuses (an SMSC's quirk must not fail a send).
fn decode(frame: &[u8]) -> Incoming {
    let word = |i: usize| u32::from_be_bytes([frame[i], frame[i + 1], frame[i + 2], frame[i + 3]]);
    let mut body = BytesMut::from(&frame[4..]);
    match Command::decode(&mut body, frame.len() - 4) {
        Ok((c, _)) => Incoming {
            id: c.id(),
            status: c.status(),
            seq: c.sequence_number(),
        },
        Err(_) => Incoming {
            id: CommandId::from(word(4)),
            status: CommandStatus::from(word(8)),
            seq: word(12),
        },
    }
}

/// `ESME_RTHROTTLED (0x00000058)`.
fn status_name(s: CommandStatus) -> String {
    let code = u32::from(s);
    let name = match s {
        CommandStatus::Other(_) => return format!("command_status 0x{code:08X}"),
        other => format!("{other:?}"),
    };
    // EsmeRthrottled -> ESME_RTHROTTLED
    let name = match name.strip_prefix("Esme") {
        Some(rest) => format!("ESME_{}", rest.to_ascii_uppercase()),
        None => name.to_ascii_uppercase(),
    };
    format!("{name} (0x{code:08X})")
}

// ----------------------------------------------------------------- provider

/// Sends through an SMSC over SMPP 3.4.
pub struct SmppProvider {
    spec: SmppSpec,
    /// Which pooled sessions are this provider's.
    key: String,
    mode: SessionMode,
    tls: OnceLock<Arc<rustls::ClientConfig>>,
    /// Per-send mode: when a refused bind may be tried again.
    refused_until: Mutex<Option<Instant>>,
}

impl fmt::Debug for SmppProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmppProvider")
            .field("spec", &self.spec)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl SmppProvider {
    pub fn new(spec: SmppSpec, mode: SessionMode) -> SmppProvider {
        SmppProvider {
            key: format!("{spec:?}"),
            spec,
            mode,
            tls: OnceLock::new(),
            refused_until: Mutex::new(None),
        }
    }

    fn server(&self) -> String {
        format!("SMSC {}:{}", self.spec.host, self.spec.port)
    }

    fn refused_until(&self) -> Option<Instant> {
        match &self.mode {
            SessionMode::Persistent(pool) => pool.with(&self.key, |e| e.refused_until),
            SessionMode::PerSend => *self.refused_until.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    fn set_refused(&self, until: Option<Instant>) {
        match &self.mode {
            SessionMode::Persistent(pool) => pool.with(&self.key, |e| e.refused_until = until),
            SessionMode::PerSend => {
                *self.refused_until.lock().unwrap_or_else(|p| p.into_inner()) = until
            }
        }
    }

    fn wire_error(&self, w: Wire, what: &str) -> SendError {
        let server = self.server();
        match w {
            Wire::Timeout => SendError::Transient(format!(
                "{server} did not answer {what} within {}",
                humantime::format_duration(self.spec.timeout)
            )),
            Wire::Closed => SendError::Transient(format!("{server} closed the connection {what}")),
            Wire::Io(e)
                if e
                    .get_ref()
                    .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) =>
            {
                SendError::Transient(format!(
                    "TLS with {server} failed: {e}; if its certificate comes from a private CA, set ca_file"
                ))
            }
            Wire::Io(e) => SendError::Transient(format!("{server}: {e} {what}")),
            Wire::Malformed(m) => SendError::Transient(format!("{server} sent {m} {what}")),
        }
    }

    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, SendError> {
        if let Some(c) = self.tls.get() {
            return Ok(c.clone());
        }
        let c = tls_config(self.spec.ca_file.as_deref())?;
        Ok(self.tls.get_or_init(|| c).clone())
    }

    fn connect(&self, deadline: Instant) -> Result<Stream, SendError> {
        let server = self.server();
        let addrs: Vec<_> = (self.spec.host.as_str(), self.spec.port)
            .to_socket_addrs()
            .map_err(|e| SendError::Transient(format!("cannot resolve {server}: {e}")))?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for a in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match TcpStream::connect_timeout(&a, self.spec.connect_timeout.min(left)) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = tcp.ok_or_else(|| match last {
            Some(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                SendError::Transient(format!(
                    "could not connect to {server} within {}",
                    humantime::format_duration(self.spec.connect_timeout)
                ))
            }
            Some(e) => SendError::Transient(format!("cannot connect to {server}: {e}")),
            None => SendError::Transient(format!("cannot connect to {server}: no address")),
        })?;
        let _ = tcp.set_nodelay(true);
        if !self.spec.tls {
            return Ok(Stream::Plain(tcp));
        }
        let name =
            rustls::pki_types::ServerName::try_from(self.spec.host.clone()).map_err(|_| {
                SendError::Misconfigured(format!(
                    "host {:?} is not a name TLS can check",
                    self.spec.host
                ))
            })?;
        let conn = rustls::ClientConnection::new(self.tls_config()?, name)
            .map_err(|e| SendError::Misconfigured(format!("TLS setup: {e}")))?;
        Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
    }

    /// Connects and binds as a transmitter.
    fn open(&self, deadline: Instant) -> Result<Session, SendError> {
        let password = match &self.spec.password_file {
            None => Zeroizing::new(String::new()),
            Some(p) => read_password(p)?,
        };
        let mut session = Session::new(self.connect(deadline)?);
        let pdu = Pdu::BindTransmitter(BindTransmitter::new(
            c_octets(&self.spec.system_id),
            secret_c_octets(&password),
            c_octets(&self.spec.system_type),
            InterfaceVersion::Smpp3_4,
            Ton::Unknown,
            Npi::Unknown,
            COctetString::empty(),
        ));
        // The PDU's copy of the password is freed (and zeroized, see
        // secret_c_octets) when `pdu` goes out of scope.
        let m = match session.request(&pdu, deadline) {
            Ok(m) => m,
            Err(e) => {
                session.healthy = false;
                return Err(self.wire_error(e.wire(), "to bind_transmitter"));
            }
        };
        let code = u32::from(m.status);
        if m.id == CommandId::BindTransmitterResp && code == 0 {
            self.set_refused(None);
            return Ok(session);
        }
        session.healthy = false;
        let what = status_name(m.status);
        let server = self.server();
        Err(match code {
            // ESME_RBINDFAIL, ESME_RINVPASWD, ESME_RINVSYSID, ESME_RINVSYSTYP
            0x0D | 0x0E | 0x0F | 0x53 => {
                let until = Instant::now() + BIND_HOLDOFF;
                self.set_refused(Some(until));
                SendError::Misconfigured(format!(
                    "{server} refused the bind as system_id {:?}: {what}; check system_id, system_type and \
                     the password in password_file (no new bind for {})",
                    self.spec.system_id,
                    humantime::format_duration(BIND_HOLDOFF)
                ))
            }
            _ if m.id == CommandId::GenericNack => SendError::Transient(format!(
                "{server} answered bind_transmitter with generic_nack: {what}"
            )),
            _ => SendError::Transient(format!("{server} refused the bind: {what}")),
        })
    }

    /// An idle pooled session that still works, probed as the module doc
    /// says.
    fn take_idle(&self, deadline: Instant) -> Option<Session> {
        let SessionMode::Persistent(pool) = &self.mode else {
            return None;
        };
        while let Some(mut s) = pool.with(&self.key, |e| e.idle.pop()) {
            let ok = if s.last_used.elapsed() >= self.spec.enquire_link_interval {
                let probe = Instant::now() + self.spec.timeout / 2;
                s.enquire_link(probe.min(deadline))
            } else {
                s.still_alive()
            };
            if ok {
                return Some(s);
            }
            s.healthy = false;
        }
        None
    }

    fn put_back(&self, mut s: Session) {
        if !s.healthy {
            return;
        }
        match &self.mode {
            SessionMode::PerSend => drop(s),
            SessionMode::Persistent(pool) => {
                s.last_used = Instant::now();
                let extra = pool.with(&self.key, |e| {
                    if e.idle.len() < MAX_IDLE {
                        e.idle.push(s);
                        None
                    } else {
                        Some(s)
                    }
                });
                // Unbound outside the lock.
                drop(extra);
            }
        }
    }

    fn submit_pdu(&self, part: &Part, to: &str) -> Result<Pdu, SendError> {
        let addr = |v: &str, key: &str| {
            COctetString::<1, 21>::from_string(v.to_owned())
                .map_err(|e| SendError::Misconfigured(format!("{key} {v:?} cannot be sent: {e}")))
        };
        let short = OctetString::<0, 255>::from_vec(part.short_message.to_vec())
            .map_err(|e| SendError::Misconfigured(format!("message part: {e}")))?;
        let mut tlvs = Vec::new();
        if let Some(p) = &part.payload {
            tlvs.push(MessageSubmissionRequestTlvValue::MessagePayload(
                MessagePayload::new(AnyOctetString::from_vec(p.to_vec())),
            ));
        }
        let s = &self.spec;
        Ok(Pdu::SubmitSm(SubmitSm::new(
            Default::default(),
            Ton::from(s.source_addr_ton),
            Npi::from(s.source_addr_npi),
            addr(&s.source_addr, "source_addr")?,
            Ton::from(s.dest_addr_ton),
            Npi::from(s.dest_addr_npi),
            COctetString::<1, 21>::from_string(to.to_owned()).map_err(|_| {
                SendError::Rejected("the number is too long for SMPP (20 digits at most)".into())
            })?,
            EsmClass::from(part.esm_class),
            0,
            Default::default(),
            Default::default(),
            Default::default(),
            RegisteredDelivery::from(s.registered_delivery),
            Default::default(),
            DataCoding::from(part.data_coding),
            0,
            short,
            tlvs,
        )))
    }

    fn submit_error(&self, m: &Incoming) -> SendError {
        let what = status_name(m.status);
        let server = self.server();
        if m.id == CommandId::GenericNack {
            return SendError::Transient(format!(
                "{server} answered submit_sm with generic_nack: {what}"
            ));
        }
        match u32::from(m.status) {
            // ESME_RINVDSTADR, ESME_RX_R_APPN
            0x0B | 0x66 => SendError::Rejected(format!("{server} refused the number: {what}")),
            // ESME_RINVSRCADR, ESME_RINVSRCTON, ESME_RINVSRCNPI
            0x0A | 0x48 | 0x49 => SendError::Misconfigured(format!(
                "{server} refused the sender: {what}; check source_addr, source_addr_ton and source_addr_npi"
            )),
            // ESME_RINVDSTTON, ESME_RINVDSTNPI
            0x50 | 0x51 => SendError::Misconfigured(format!(
                "{server} refused the destination's type: {what}; check dest_addr_ton and dest_addr_npi"
            )),
            // ESME_RINVMSGLEN, ESME_RINVESMCLASS, ESME_RINVOPTPARSTREAM,
            // ESME_ROPTPARNOTALLWD, ESME_RINVPARLEN
            0x01 | 0x43 | 0xC0 | 0xC1 | 0xC2 => SendError::Misconfigured(format!(
                "{server} refused the message's form: {what}; check data_coding and long_messages"
            )),
            // ESME_RTHROTTLED, ESME_RMSGQFUL, ESME_RSYSERR, ESME_RSUBMITFAIL
            // and anything else: try elsewhere.
            _ => SendError::Transient(format!("{server} did not take the message: {what}")),
        }
    }

    /// One part on `session`. `Err((error, retry))`: `retry` when the part
    /// provably never reached the SMSC.
    fn submit(
        &self,
        session: &mut Session,
        pdu: &Pdu,
        deadline: Instant,
    ) -> Result<(), (SendError, bool)> {
        match session.request(pdu, deadline) {
            Ok(m) if m.id == CommandId::SubmitSmResp && u32::from(m.status) == 0 => Ok(()),
            Ok(m) => Err((self.submit_error(&m), false)),
            Err(Sent::No(w)) => Err((self.wire_error(w, "to submit_sm"), true)),
            Err(Sent::Yes(w)) => Err((self.wire_error(w, "to submit_sm"), false)),
        }
    }
}

impl SmsProvider for SmppProvider {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn send(&self, sms: &Sms<'_>) -> Result<(), SendError> {
        if let Some(until) = self.refused_until() {
            let left = until.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                return Err(SendError::Misconfigured(format!(
                    "{} refused the last bind; not binding again for {} (fix system_id or password_file)",
                    self.server(),
                    humantime::format_duration(Duration::from_secs(left.as_secs().max(1)))
                )));
            }
        }
        let reference = {
            let mut b = [0u8; 1];
            let _ = getrandom::fill(&mut b);
            b[0]
        };
        let parts = message_parts(
            sms.text,
            self.spec.data_coding,
            self.spec.long_messages,
            reference,
        )
        .map_err(SendError::Misconfigured)?;
        // TON international: digits without '+'; for the others the E.164
        // digits too (see docs/smpp.md).
        let to = sms.to.digits();
        let pdus = parts
            .iter()
            .map(|p| self.submit_pdu(p, to))
            .collect::<Result<Vec<_>, _>>()?;
        let deadline = Instant::now() + self.spec.timeout;
        let (mut session, reused) = match self.take_idle(deadline) {
            Some(s) => (s, true),
            None => (self.open(deadline)?, false),
        };
        for (i, pdu) in pdus.iter().enumerate() {
            match self.submit(&mut session, pdu, deadline) {
                Ok(()) => {}
                Err((_, true)) if i == 0 && reused => {
                    // The pooled session had died: nothing was sent yet.
                    session.healthy = false;
                    session = self.open(deadline)?;
                    if let Err((e, _)) = self.submit(&mut session, pdu, deadline) {
                        self.put_back(session);
                        return Err(e);
                    }
                }
                Err((e, _)) => {
                    self.put_back(session);
                    return Err(e);
                }
            }
        }
        self.put_back(session);
        Ok(())
    }
}

/// A C-Octet string of settings checked at config time (ASCII, short).
fn c_octets<const MIN: usize, const MAX: usize>(v: &str) -> COctetString<MIN, MAX> {
    COctetString::from_string(v.to_owned()).unwrap_or_else(|_| COctetString::empty())
}

/// The password as a C-Octet string whose bytes are zeroized when freed.
fn secret_c_octets(v: &str) -> COctetString<1, 9> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(v.len() + 1));
    bytes.extend_from_slice(v.as_bytes());
    bytes.push(0);
    COctetString::from_bytes(Bytes::from_owner(bytes)).unwrap_or_else(|_| COctetString::empty())
}

fn read_password(path: &std::path::Path) -> Result<Zeroizing<String>, SendError> {
    let p = files::read_secret(path).map_err(|e| match e {
        files::FileError::Read { .. } => SendError::Misconfigured(format!(
            "password_file {e}; put the SMPP password in that file (owner root, mode 0600)"
        )),
        other => SendError::Misconfigured(format!("password_file {other}")),
    })?;
    if p.len() > 8 || !p.is_ascii() || p.contains('\0') {
        return Err(SendError::Misconfigured(format!(
            "{}: SMPP 3.4 passwords are at most 8 ASCII characters",
            path.display()
        )));
    }
    Ok(p)
}

/// The system's CA bundle plus `ca_file`, for `tls = true`.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, SendError> {
    let anchors = tls::trust_anchors(ca_file)?;
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
        return Err(tls::no_certificate(path));
    }
    if roots.is_empty() {
        return Err(tls::no_anchors());
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

#[cfg(test)]
mod tests;
