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
//! otherwise (both decided, with the number of parts, by the shared count
//! of [`crate::sms::segments`]); `data_coding` picks Latin-1, IA5 or
//! always UCS-2 instead. A
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
//! steady traffic reuses one bind. At most `max_sessions` sends of a
//! provider run at once, each on its own session; the others wait for a
//! place within their timeout ([`SmppSessions`]' permits), so a burst
//! never binds more sessions than the SMSC may allow. The core starts no
//! threads, so keep-alive
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
//!
//! Delivery receipts (smsotp-radiusd only): a pool made with
//! [`SmppSessions::with_receipts`] binds providers with
//! `registered_delivery` set as transceivers and hands each `deliver_sm`
//! receipt it reads (while waiting for an answer, or in
//! [`SmppSessions::poll_idle`]) to its hook; `receipt` reads them.
//! [`SmsProvider::send_tracked`] answers the `submit_sm_resp` message id.
//!
//! Here: [`SmppProvider`] (bind, submit, retry and hold-off). Beside it:
//! `config` (the validated [`SmppSpec`], TON/NPI names, and the
//! `[[provider]]` keys checked into it), `codec` (text into `submit_sm`
//! parts), `session` (the bound session, its PDUs, the pool) and
//! [`receipt`] (`deliver_sm` receipts read).

mod codec;
pub(crate) mod config;
pub mod receipt;
mod session;

pub use codec::*;
pub use config::{code_of, Coding, LongMessages, SmppSpec, NPIS, TONS};
pub use receipt::{parse_deliver_sm, Receipt, ReceiptError, ReceiptState};
pub use session::*;

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rusmpp_core::command::owned::Command;
use rusmpp_core::decode::owned::DecodeWithLength;
use rusmpp_core::encode::owned::Encode;
use rusmpp_core::encode::Length;
use rusmpp_core::pdus::owned::{BindTransceiver, BindTransmitter, DeliverSmResp, Pdu, SubmitSm};
use rusmpp_core::tlvs::owned::MessageSubmissionRequestTlvValue;
use rusmpp_core::types::owned::{AnyOctetString, COctetString, OctetString};
use rusmpp_core::values::owned::MessagePayload;
use rusmpp_core::values::{DataCoding, EsmClass, InterfaceVersion, Npi, RegisteredDelivery, Ton};
use rusmpp_core::{CommandId, CommandStatus};
use zeroize::{Zeroize, Zeroizing};

use crate::secret::Secret;

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
/// How long an `enquire_link` sent to keep an idle session bound may
/// wait for its answer.
const KEEPALIVE_WAIT: Duration = Duration::from_secs(2);
/// The most idle sessions a pool keeps per provider: at least the most
/// `max_sessions` allows, so that none is unbound just to be bound again.
const MAX_IDLE: usize = 64;

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
    /// A provider for `spec`; `mode` says whether sessions are bound per
    /// send (PAM) or kept in a pool (smsotp-radiusd). Nothing connects
    /// until the first send.
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
            None => Secret::new(String::new()),
            Some(p) => read_password(p)?,
        };
        let mut session = Session::new(self.connect(deadline)?);
        let hook = match &self.mode {
            SessionMode::Persistent(pool) if self.spec.registered_delivery != 0 => {
                pool.receipts.clone()
            }
            _ => None,
        };
        let (system_id, password, system_type) = (
            c_octets(&self.spec.system_id),
            secret_c_octets(password.expose()),
            c_octets(&self.spec.system_type),
        );
        // Receipts come only to a receiver or a transceiver.
        let (pdu, bind, expected) = if hook.is_some() {
            (
                Pdu::BindTransceiver(BindTransceiver::new(
                    system_id,
                    password,
                    system_type,
                    InterfaceVersion::Smpp3_4,
                    Ton::Unknown,
                    Npi::Unknown,
                    COctetString::empty(),
                )),
                "bind_transceiver",
                CommandId::BindTransceiverResp,
            )
        } else {
            (
                Pdu::BindTransmitter(BindTransmitter::new(
                    system_id,
                    password,
                    system_type,
                    InterfaceVersion::Smpp3_4,
                    Ton::Unknown,
                    Npi::Unknown,
                    COctetString::empty(),
                )),
                "bind_transmitter",
                CommandId::BindTransmitterResp,
            )
        };
        if let Some(h) = hook {
            session.receipts = Some((h, self.spec.name.clone()));
            session.keepalive = Some(self.spec.enquire_link_interval);
        }
        // The PDU's copy of the password is freed (and zeroized, see
        // secret_c_octets) when `pdu` goes out of scope.
        let m = match session.request(&pdu, deadline) {
            Ok(m) => m,
            Err(e) => {
                session.healthy = false;
                return Err(self.wire_error(e.wire(), &format!("to {bind}")));
            }
        };
        let code = u32::from(m.status);
        if m.id == expected && code == 0 {
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
                "{server} answered {bind} with generic_nack: {what}"
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
    ) -> Result<Option<String>, (SendError, bool)> {
        match session.request(pdu, deadline) {
            Ok(m) if m.id == CommandId::SubmitSmResp && u32::from(m.status) == 0 => {
                Ok(submit_sm_resp_id(&m.body))
            }
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
        self.send_tracked(sms).map(drop)
    }

    /// The id the SMSC gave the last part (the one a receipt names, for a
    /// message in one part).
    fn send_tracked(&self, sms: &Sms<'_>) -> Result<Option<String>, SendError> {
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
        // TON international: digits without '+'; number_format =
        // "national": the national form (see SmppSpec::destination and
        // docs/smpp.md).
        let to = self.spec.destination(sms.to);
        let pdus = parts
            .iter()
            .map(|p| self.submit_pdu(p, &to))
            .collect::<Result<Vec<_>, _>>()?;
        let deadline = Instant::now() + self.spec.timeout;
        // A pool: at most max_sessions sends (and so bound sessions) at
        // once; the rest wait their turn within their own timeout.
        let _permit = match &self.mode {
            SessionMode::PerSend => None,
            SessionMode::Persistent(pool) => Some(
                pool.permit(&self.key, self.spec.max_sessions, deadline)
                    .ok_or_else(|| {
                        SendError::Transient(format!(
                            "all {} sessions to {} stayed busy for {} (max_sessions)",
                            self.spec.max_sessions,
                            self.server(),
                            humantime::format_duration(self.spec.timeout)
                        ))
                    })?,
            ),
        };
        let (mut session, reused) = match self.take_idle(deadline) {
            Some(s) => (s, true),
            None => (self.open(deadline)?, false),
        };
        let mut message_id = None;
        for (i, pdu) in pdus.iter().enumerate() {
            match self.submit(&mut session, pdu, deadline) {
                Ok(id) => message_id = id,
                Err((_, true)) if i == 0 && reused => {
                    // The pooled session had died: nothing was sent yet.
                    session.healthy = false;
                    session = self.open(deadline)?;
                    match self.submit(&mut session, pdu, deadline) {
                        Ok(id) => message_id = id,
                        Err((e, _)) => {
                            self.put_back(session);
                            return Err(e);
                        }
                    }
                }
                Err((e, _)) => {
                    self.put_back(session);
                    return Err(e);
                }
            }
        }
        self.put_back(session);
        Ok(message_id)
    }
}

/// The `message_id` of a `submit_sm_resp` body (a C-Octet string), when
/// it is a plausible one.
fn submit_sm_resp_id(body: &[u8]) -> Option<String> {
    let id = body.split(|&c| c == 0).next()?;
    (!id.is_empty() && id.len() <= 64).then(|| String::from_utf8_lossy(id).into_owned())
}

/// A C-Octet string of settings checked at config time (ASCII, short).
/// For [`crate::fuzzing::smpp_stream`]: reads `bytes` as what an SMSC sent
/// on a session, PDU by PDU as [`Session`] does, until the bytes run out or
/// are out of step.
#[cfg(feature = "fuzzing")]
pub(crate) fn read_stream(bytes: &[u8]) -> crate::fuzzing::SmppStream {
    let mut buf = bytes.to_vec();
    let mut pdus = Vec::new();
    loop {
        let before = buf.len();
        match session::take_pdu(&mut buf) {
            Ok(Some(m)) => {
                let at = bytes.len() - before;
                let frame = bytes[at..at + before - buf.len()].to_vec();
                // The log's name for the status (a session logs it).
                let _ = session::status_name(m.status);
                pdus.push((frame, [u32::from(m.id), u32::from(m.status), m.seq]));
            }
            Ok(None) => return crate::fuzzing::SmppStream { pdus, error: None },
            Err(e) => {
                return crate::fuzzing::SmppStream {
                    pdus,
                    error: Some(format!("{e:?}")),
                }
            }
        }
    }
}

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

fn read_password(path: &std::path::Path) -> Result<Secret, SendError> {
    let p = files::read_secret(path).map_err(|e| match e {
        files::FileError::Read { .. } => SendError::Misconfigured(format!(
            "password_file {e}; put the SMPP password in that file (owner root, mode 0600)"
        )),
        other => SendError::Misconfigured(format!("password_file {other}")),
    })?;
    let text = p.expose();
    if text.len() > 8 || !text.is_ascii() || text.contains('\0') {
        return Err(SendError::Misconfigured(format!(
            "{}: SMPP 3.4 passwords are at most 8 ASCII characters",
            path.display()
        )));
    }
    Ok(p)
}

/// The system's CA bundle plus `ca_file`, for `tls = true`.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, SendError> {
    tls::client_config(ca_file)
}

#[cfg(test)]
mod tests;
