//! The SMPP session: a bound transmitter over a blocking socket (TLS
//! optional), its PDUs on the wire, and the pool that keeps sessions bound
//! between sends.

use super::*;
pub(super) use crate::sms::tls::Stream;

// ----------------------------------------------------------------- sessions

/// Bound sessions kept between sends, shared by every provider (and every
/// worker thread) given the same pool. Cheap to clone.
#[derive(Clone, Default)]
pub struct SmppSessions {
    pub(super) inner: Arc<Mutex<HashMap<String, PoolEntry>>>,
    /// Signalled when a send ends (see [`SmppSessions::permit`]).
    freed: Arc<std::sync::Condvar>,
    /// Where delivery receipts read on pooled sessions go; `None`: they
    /// are acknowledged and dropped, and sessions bind as transmitters.
    pub(super) receipts: Option<ReceiptHook>,
}

/// Called with each `deliver_sm` receipt read on a pooled session (or the
/// reason it could not be read), and the name of the provider whose
/// session it came on. It runs on the thread that read it: keep it short.
pub type ReceiptHook = Arc<dyn Fn(&str, Result<Receipt, ReceiptError>) + Send + Sync>;

#[derive(Default)]
pub(super) struct PoolEntry {
    pub(super) idle: Vec<Session>,
    pub(super) refused_until: Option<Instant>,
    /// Sends under way, each holding a [`Permit`].
    pub(super) sending: usize,
}

/// Leave for one send through a pooled provider; the send's place is
/// given back when this is dropped.
pub(super) struct Permit {
    pool: SmppSessions,
    key: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.pool.with(&self.key, |e| e.sending -= 1);
        self.pool.freed.notify_all();
    }
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
    /// An empty pool: sessions are opened by the first sends and kept.
    pub fn new() -> SmppSessions {
        SmppSessions::default()
    }

    /// An empty pool whose sessions hand delivery receipts to `hook`. Its
    /// providers that ask for receipts (`registered_delivery` not 0) bind
    /// as transceivers, since an SMSC sends `deliver_sm` to no
    /// transmitter.
    pub fn with_receipts(hook: ReceiptHook) -> SmppSessions {
        SmppSessions {
            receipts: Some(hook),
            ..SmppSessions::default()
        }
    }

    /// Reads what arrived on every idle session (receipts, `enquire_link`,
    /// `unbind`), without waiting for more, and drops the sessions that
    /// closed. A server calls this now and then so that receipts on idle
    /// sessions are not left waiting for the next send. One session at a
    /// time is taken out of the pool while it is read (about a
    /// millisecond), so a send finds the others; returns how many sessions
    /// were read.
    pub fn poll_idle(&self) -> usize {
        let keys: Vec<String> = match self.inner.lock() {
            Ok(m) => m.keys().cloned().collect(),
            Err(p) => p.into_inner().keys().cloned().collect(),
        };
        let mut n = 0;
        for key in keys {
            let count = self.with(&key, |e| e.idle.len());
            // Each idle session once, the least recently used first, put
            // back where it was, so sends (which take and return at the
            // end) keep taking the most recently used. Sends meanwhile do
            // not move the ones before it.
            let mut i = 0;
            for _ in 0..count {
                let Some(mut s) = self.with(&key, |e| (i < e.idle.len()).then(|| e.idle.remove(i)))
                else {
                    break;
                };
                n += 1;
                let alive = match s.keepalive {
                    Some(every) if s.last_used.elapsed() >= every => {
                        let ok = s.enquire_link(Instant::now() + KEEPALIVE_WAIT);
                        if ok {
                            s.last_used = Instant::now();
                        }
                        ok
                    }
                    _ => s.still_alive(),
                };
                if !alive {
                    s.healthy = false;
                    continue;
                }
                let at = i;
                i += 1;
                let extra = self.with(&key, |e| {
                    if e.idle.len() < MAX_IDLE {
                        e.idle.insert(at.min(e.idle.len()), s);
                        None
                    } else {
                        Some(s)
                    }
                });
                drop(extra);
            }
        }
        n
    }

    /// Idle sessions in the pool (for tests and status).
    pub fn idle(&self) -> usize {
        self.inner
            .lock()
            .map(|m| m.values().map(|e| e.idle.len()).sum())
            .unwrap_or(0)
    }

    pub(super) fn with<T>(&self, key: &str, f: impl FnOnce(&mut PoolEntry) -> T) -> T {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(key.to_owned()).or_default())
    }

    /// Waits until fewer than `max` sends of provider `key` are under way,
    /// or `deadline`; `None` if it passed first. A send holds its session
    /// (idle or newly bound) only while it holds the permit, so a provider
    /// never has more than `max` sessions bound: `MAX_IDLE` is at least
    /// as many as a provider may be given.
    pub(super) fn permit(&self, key: &str, max: usize, deadline: Instant) -> Option<Permit> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let e = map.entry(key.to_owned()).or_default();
            if e.sending < max {
                e.sending += 1;
                return Some(Permit {
                    pool: self.clone(),
                    key: key.to_owned(),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            map = self
                .freed
                .wait_timeout(map, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
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

/// What went wrong on the wire.
#[derive(Debug)]
pub(super) enum Wire {
    Timeout,
    Closed,
    Io(std::io::Error),
    Malformed(String),
}

/// One PDU from the SMSC: the header, and the body when rusmpp could
/// decode it (we need nothing from the bodies we receive).
#[derive(Debug)]
pub(super) struct Incoming {
    pub(super) id: CommandId,
    pub(super) status: CommandStatus,
    pub(super) seq: u32,
    /// The body of a `submit_sm_resp` or `deliver_sm` (read by hand, see
    /// `receipt.rs`); empty for every other PDU.
    pub(super) body: Vec<u8>,
}

/// A bound transmitter session.
pub(super) struct Session {
    pub(super) stream: Stream,
    /// Bytes read but not yet a whole PDU.
    pub(super) buf: Vec<u8>,
    pub(super) seq: u32,
    pub(super) last_used: Instant,
    /// Still bound and in step: worth an `unbind` when dropped.
    pub(super) healthy: bool,
    /// Where receipts read here go, with the provider's name.
    pub(super) receipts: Option<(ReceiptHook, String)>,
    /// With receipts: how long the session may idle before
    /// [`SmppSessions::poll_idle`] sends `enquire_link`, so that the SMSC
    /// keeps it bound and has somewhere to send receipts.
    pub(super) keepalive: Option<Duration>,
}

impl Session {
    pub(super) fn new(stream: Stream) -> Session {
        Session {
            stream,
            buf: Vec::new(),
            seq: 0,
            last_used: Instant::now(),
            healthy: true,
            receipts: None,
            keepalive: None,
        }
    }

    pub(super) fn next_seq(&mut self) -> u32 {
        self.seq = if self.seq >= 0x7FFF_FFFF {
            1
        } else {
            self.seq + 1
        };
        self.seq
    }

    /// Bounds the next read and write by `deadline`.
    pub(super) fn arm(&self, deadline: Instant) -> Result<(), Wire> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Wire::Timeout);
        }
        let tcp = self.stream.tcp();
        tcp.set_read_timeout(Some(left)).map_err(Wire::Io)?;
        tcp.set_write_timeout(Some(left)).map_err(Wire::Io)?;
        Ok(())
    }

    pub(super) fn write_pdu(
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

    pub(super) fn read_pdu(&mut self, deadline: Instant) -> Result<Incoming, Wire> {
        loop {
            match take_pdu(&mut self.buf) {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                Err(e) => {
                    self.healthy = false;
                    return Err(e);
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
    pub(super) fn answer(&mut self, m: &Incoming, deadline: Instant) -> Result<(), Wire> {
        let reply = match m.id {
            CommandId::EnquireLink => Pdu::EnquireLinkResp,
            CommandId::Unbind => {
                let _ = self.write_pdu(m.seq, CommandStatus::EsmeRok, &Pdu::UnbindResp, deadline);
                self.healthy = false;
                return Err(Wire::Closed);
            }
            CommandId::DeliverSm => {
                // Acknowledged whatever it holds: an SMSC resends what is
                // not acknowledged, and a garbled receipt stays garbled.
                if let Some((hook, provider)) = &self.receipts {
                    match parse_deliver_sm(&m.body) {
                        Ok(Some(r)) => hook(provider, Ok(r)),
                        Ok(None) => {}
                        Err(e) => hook(provider, Err(e)),
                    }
                }
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
    pub(super) fn await_resp(&mut self, seq: u32, deadline: Instant) -> Result<Incoming, Wire> {
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
    pub(super) fn request(&mut self, pdu: &Pdu, deadline: Instant) -> Result<Incoming, Sent> {
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
    pub(super) fn still_alive(&mut self) -> bool {
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

    pub(super) fn enquire_link(&mut self, deadline: Instant) -> bool {
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
pub(super) enum Sent {
    /// Failed before the PDU was written out: safe to retry elsewhere.
    No(Wire),
    /// Written, but no answer: the SMSC may have acted on it.
    Yes(Wire),
}

impl Sent {
    pub(super) fn wire(self) -> Wire {
        match self {
            Sent::No(w) | Sent::Yes(w) => w,
        }
    }
}

pub(super) fn wire_io(e: std::io::Error) -> Wire {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::WouldBlock | K::TimedOut => Wire::Timeout,
        K::UnexpectedEof => Wire::Closed,
        _ => Wire::Io(e),
    }
}

/// The whole PDU: header (length, id, status, sequence) and body.
pub(super) fn encode(seq: u32, status: CommandStatus, pdu: &Pdu) -> Zeroizing<Vec<u8>> {
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

/// Takes the first whole PDU out of `buf` (bytes read so far), decoded;
/// `None` while it is incomplete. A length field outside 16..=[`MAX_PDU`]
/// is an error: the stream is out of step and the session is done.
pub(super) fn take_pdu(buf: &mut Vec<u8>) -> Result<Option<Incoming>, Wire> {
    let Some(head) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*head) as usize;
    if !(16..=MAX_PDU).contains(&len) {
        return Err(Wire::Malformed(format!(
            "a PDU of {len} bytes (must be 16 to {MAX_PDU})"
        )));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let frame: Vec<u8> = buf.drain(..len).collect();
    Ok(Some(decode(&frame)))
}

/// The header, through rusmpp when it decodes the PDU, by hand when the
/// body is something it refuses (an SMSC's quirk must not fail a send).
pub(super) fn decode(frame: &[u8]) -> Incoming {
    let word = |i: usize| u32::from_be_bytes([frame[i], frame[i + 1], frame[i + 2], frame[i + 3]]);
    let mut body = BytesMut::from(&frame[4..]);
    let mut m = match Command::decode(&mut body, frame.len() - 4) {
        Ok((c, _)) => Incoming {
            id: c.id(),
            status: c.status(),
            seq: c.sequence_number(),
            body: Vec::new(),
        },
        Err(_) => Incoming {
            id: CommandId::from(word(4)),
            status: CommandStatus::from(word(8)),
            seq: word(12),
            body: Vec::new(),
        },
    };
    if matches!(m.id, CommandId::SubmitSmResp | CommandId::DeliverSm) {
        m.body = frame[16.min(frame.len())..].to_vec();
    }
    m
}

/// `ESME_RTHROTTLED (0x00000058)`.
pub(super) fn status_name(s: CommandStatus) -> String {
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
