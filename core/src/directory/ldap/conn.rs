//! The LDAP client: URL, blocking socket with a deadline on every read and
//! write, TLS (ldaps:// and StartTLS), one BER PDU at a time, and the four
//! operations a login needs (bind, search, modify, unbind). No thread, no
//! runtime: it runs inside sshd's PAM child.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rasn_ldap::{
    AuthenticationChoice, BindRequest, ChangeOperation, ExtendedRequest, Filter, LdapMessage,
    LdapResult, ModifyRequest, ModifyRequestChanges, PartialAttribute, ProtocolOp, ResultCode,
    SearchRequest, SearchRequestDerefAliases, SearchRequestScope, SearchResultEntry, UnbindRequest,
};

use super::error::LdapError;
use crate::sms::tls::Stream;

/// The largest PDU read from a server: an entry with a few phone
/// attributes is a few hundred bytes.
pub const MAX_PDU: usize = 1 << 20;

/// StartTLS's extended operation (RFC 4511 section 4.14).
const STARTTLS_OID: &str = "1.3.6.1.4.1.1466.20037";

/// A point in time an operation must end by.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    /// `d` from now.
    pub fn after(d: Duration) -> Self {
        Deadline(Instant::now() + d)
    }

    /// The time left, `None` once it has passed.
    pub fn remaining(&self) -> Option<Duration> {
        self.0
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }
}

/// A server's URL, checked: `ldap://host[:389]` or `ldaps://host[:636]`,
/// the host a name, an IPv4 address or a bracketed IPv6 literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapUrl {
    /// As written (without a trailing '/').
    pub text: String,
    /// `ldaps://`: TLS from the first byte.
    pub ldaps: bool,
    /// The host name or address, without brackets.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl LdapUrl {
    /// Parses `text`; the error says what is wrong and what to write.
    pub fn parse(text: &str) -> Result<LdapUrl, String> {
        let how = "write it like \"ldaps://dc1.example.org\", \"ldap://10.0.0.5:389\" or \"ldaps://[2001:db8::5]:636\"";
        let (ldaps, rest) = if let Some(r) = text.strip_prefix("ldaps://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("ldap://") {
            (false, r)
        } else {
            return Err(format!(
                "\"{text}\" is not an ldap:// or ldaps:// URL; {how}"
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '@', '#', ' ']) {
            return Err(format!(
                "\"{text}\": only a host and a port may follow the scheme (no DN, user or query); {how}"
            ));
        }
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let Some((h, after)) = r.split_once(']') else {
                return Err(format!(
                    "\"{text}\": missing ']' after the IPv6 address; {how}"
                ));
            };
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("\"{text}\": \"{h}\" is not an IPv6 address; {how}"));
            }
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("\"{text}\": expected ':port' after ']'; {how}"))?,
                ),
            };
            (h, port)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty()
            || (!host.contains(':')
                && !host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        {
            return Err(format!(
                "\"{text}\": \"{host}\" is not a host name or address; {how}"
            ));
        }
        let port = match port {
            None => {
                if ldaps {
                    636
                } else {
                    389
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(format!(
                        "\"{text}\": \"{p}\" is not a port (1 to 65535); {how}"
                    ))
                }
            },
        };
        Ok(LdapUrl {
            text: text.strip_suffix('/').unwrap_or(text).to_owned(),
            ldaps,
            host: host.to_owned(),
            port,
        })
    }
}

/// How to reach one server.
#[derive(Clone)]
pub struct ConnectSettings {
    /// The server.
    pub url: LdapUrl,
    /// Ask for TLS with StartTLS on an `ldap://` URL.
    pub starttls: bool,
    /// The trust anchors, for ldaps:// and StartTLS.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The bound on resolving and connecting to each address.
    pub connect_timeout: Duration,
    /// The bound on each operation (TLS handshake, StartTLS, bind, search,
    /// modify), from request to the last byte of its answer.
    pub timeout: Duration,
}

/// An entry a search found: its DN and the attributes asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapEntry {
    /// The entry's distinguished name.
    pub dn: String,
    /// Attribute name (as the server spelled it) and values.
    pub attributes: Vec<(String, Vec<Vec<u8>>)>,
}

impl LdapEntry {
    /// The entry as a search result carries it.
    pub(crate) fn from_wire(e: SearchResultEntry) -> LdapEntry {
        LdapEntry {
            dn: e.object_name.0,
            attributes: e
                .attributes
                .into_iter()
                .map(|a| {
                    (
                        a.r#type.0,
                        a.vals.to_vec().into_iter().map(|v| v.to_vec()).collect(),
                    )
                })
                .collect(),
        }
    }

    /// The values of `name` (compared without regard to case).
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.attributes
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.iter().map(Vec::as_slice))
    }

    /// The first non-empty value of the first of `names` that has one, as
    /// text: the phone attributes tried in order.
    pub fn first_value(&self, names: &[String]) -> Option<(String, String)> {
        names.iter().find_map(|n| {
            self.values(n)
                .map(|v| String::from_utf8_lossy(v).trim().to_owned())
                .find(|v| !v.is_empty())
                .map(|v| (n.clone(), v))
        })
    }

    /// Whether Active Directory marks the account disabled:
    /// `userAccountControl` has bit 0x2 (ACCOUNTDISABLE) set. An entry
    /// without the attribute is not disabled; one whose value is not a
    /// number is taken as disabled (it cannot be shown to be enabled).
    pub fn ad_account_disabled(&self) -> bool {
        self.values("userAccountControl").any(|v| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .is_none_or(|n| n & 0x2 != 0)
        })
    }
}

/// Search scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The base entry only.
    Base,
    /// The entries right under the base.
    One,
    /// The base and everything under it (the default).
    Sub,
}

/// One open connection to one server.
pub struct Connection {
    url: String,
    stream: Stream,
    next_id: u32,
    timeout: Duration,
}

/// A TLS failure in words an admin acts on: rustls names certificate
/// problems by their enum variant ("UnknownIssuer"), which says neither
/// what is wrong in plain words nor which key fixes it.
fn tls_detail(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "the server's certificate is not signed by a trusted CA (unknown issuer): \
             set ca_file to the CA that issued it"
                .to_owned()
        }
        rustls::Error::InvalidCertificate(C::NotValidForName)
        | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => {
            "the server's certificate is not issued for the host in the URL (name mismatch): \
             use a host name the certificate names"
                .to_owned()
        }
        rustls::Error::InvalidCertificate(C::Expired)
        | rustls::Error::InvalidCertificate(C::ExpiredContext { .. }) => {
            "the server's certificate has expired".to_owned()
        }
        other => other.to_string(),
    }
}

fn io_err(url: &str, step: &'static str, e: std::io::Error) -> LdapError {
    if let Some(t) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return LdapError::Tls {
            url: url.to_owned(),
            detail: tls_detail(t),
        };
    }
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => LdapError::Timeout {
            url: url.to_owned(),
            step,
        },
        _ => LdapError::Io {
            url: url.to_owned(),
            step,
            source: e,
        },
    }
}

/// Sets the socket's timeouts to what is left of `deadline`.
fn bound(
    tcp: &TcpStream,
    deadline: Deadline,
    url: &str,
    step: &'static str,
) -> Result<(), LdapError> {
    let left = deadline.remaining().ok_or_else(|| LdapError::Timeout {
        url: url.to_owned(),
        step,
    })?;
    tcp.set_read_timeout(Some(left))
        .and_then(|()| tcp.set_write_timeout(Some(left)))
        .map_err(|e| io_err(url, step, e))
}

fn send(
    s: &mut (impl Write + ?Sized),
    tcp: &TcpStream,
    msg: &LdapMessage,
    deadline: Deadline,
    url: &str,
    step: &'static str,
) -> Result<(), LdapError> {
    let bytes = rasn::ber::encode(msg).map_err(|e| LdapError::Protocol {
        url: url.to_owned(),
        detail: format!("cannot encode the request: {e}"),
    })?;
    bound(tcp, deadline, url, step)?;
    s.write_all(&bytes)
        .and_then(|()| s.flush())
        .map_err(|e| io_err(url, step, e))
}

/// Reads exactly `buf.len()` bytes, each read bounded by what is left.
fn read_full(
    s: &mut (impl Read + ?Sized),
    tcp: &TcpStream,
    buf: &mut [u8],
    deadline: Deadline,
    url: &str,
    step: &'static str,
) -> Result<(), LdapError> {
    let mut got = 0;
    while got < buf.len() {
        bound(tcp, deadline, url, step)?;
        match s.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(LdapError::Io {
                    url: url.to_owned(),
                    step,
                    source: ErrorKind::UnexpectedEof.into(),
                })
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(url, step, e)),
        }
    }
    Ok(())
}

/// Reads one complete BER PDU (a SEQUENCE with a definite length of at
/// most [`MAX_PDU`]) and decodes it.
fn receive(
    s: &mut (impl Read + ?Sized),
    tcp: &TcpStream,
    deadline: Deadline,
    url: &str,
    step: &'static str,
) -> Result<LdapMessage, LdapError> {
    read_message(
        &mut |buf: &mut [u8]| read_full(s, tcp, buf, deadline, url, step),
        url,
    )
}

/// [`receive`] over `read_exact`, which fills its buffer or fails: kept
/// apart from the socket so the decoder is fuzzed from a byte slice.
pub(crate) fn read_message(
    read_exact: &mut dyn FnMut(&mut [u8]) -> Result<(), LdapError>,
    url: &str,
) -> Result<LdapMessage, LdapError> {
    let garbage = |detail: String| LdapError::Protocol {
        url: url.to_owned(),
        detail,
    };
    let mut head = [0u8; 2];
    read_exact(&mut head)?;
    if head[0] != 0x30 {
        return Err(garbage(format!(
            "expected an LDAP message (0x30), got 0x{:02x}: is this an LDAP server (and TLS where it expects TLS)?",
            head[0]
        )));
    }
    let mut pdu = head.to_vec();
    let len = if head[1] < 0x80 {
        usize::from(head[1])
    } else {
        let n = usize::from(head[1] & 0x7f);
        if n == 0 || n > 4 {
            return Err(garbage("indefinite or oversized BER length".into()));
        }
        let mut len_bytes = vec![0u8; n];
        read_exact(&mut len_bytes)?;
        pdu.extend_from_slice(&len_bytes);
        len_bytes
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b))
    };
    if len > MAX_PDU {
        return Err(garbage(format!(
            "a message of {len} bytes (more than {MAX_PDU}) refused"
        )));
    }
    let start = pdu.len();
    pdu.resize(start + len, 0);
    read_exact(&mut pdu[start..])?;
    rasn::ber::decode::<LdapMessage>(&pdu).map_err(|e| garbage(format!("undecodable message: {e}")))
}

/// The number of a result code (rasn-ldap's enum is non-exhaustive, so
/// it is read back from its BER encoding).
pub fn code_of(rc: ResultCode) -> u32 {
    rasn::ber::encode(&rc)
        .ok()
        .and_then(|b| {
            b.get(2..)
                .map(|v| v.iter().fold(0u32, |a, &x| (a << 8) | u32::from(x)))
        })
        .unwrap_or(80)
}

fn resolve(url: &LdapUrl) -> Result<Vec<SocketAddr>, LdapError> {
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| LdapError::Dns {
            url: url.text.clone(),
            detail: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(LdapError::Dns {
            url: url.text.clone(),
            detail: "no address".into(),
        });
    }
    Ok(addrs)
}

/// Drives a TLS handshake to its end within `deadline`.
fn handshake(
    tcp: TcpStream,
    settings: &ConnectSettings,
    deadline: Deadline,
) -> Result<Stream, LdapError> {
    let url = &settings.url.text;
    let setup = |detail: String| LdapError::Setup {
        url: url.clone(),
        detail,
    };
    let config = settings
        .tls
        .clone()
        .ok_or_else(|| setup("TLS wanted but no trust anchors loaded".into()))?;
    let name =
        rustls::pki_types::ServerName::try_from(settings.url.host.clone()).map_err(|_| {
            setup(format!(
                "\"{}\" is not a name TLS can check",
                settings.url.host
            ))
        })?;
    let mut conn = rustls::ClientConnection::new(config, name)
        .map_err(|e| setup(format!("TLS setup: {e}")))?;
    let mut tcp = tcp;
    while conn.is_handshaking() {
        bound(&tcp, deadline, url, "the TLS handshake")?;
        conn.complete_io(&mut tcp)
            .map_err(|e| io_err(url, "the TLS handshake", e))?;
    }
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
}

impl Connection {
    /// Connects (each resolved address in turn, within `connect_timeout`
    /// each) and sets up TLS (ldaps:// or StartTLS) within `timeout`.
    pub fn open(settings: &ConnectSettings) -> Result<Connection, LdapError> {
        let url = &settings.url;
        let connect = Deadline::after(settings.connect_timeout);
        let mut last = None;
        let mut tcp = None;
        for addr in resolve(url)? {
            let Some(left) = connect.remaining() else {
                break;
            };
            match TcpStream::connect_timeout(&addr, left) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some((addr, e)),
            }
        }
        let tcp = match (tcp, last) {
            (Some(t), _) => t,
            (None, Some((_, e)))
                if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) =>
            {
                return Err(LdapError::Timeout {
                    url: url.text.clone(),
                    step: "connecting",
                })
            }
            (None, Some((addr, source))) => {
                return Err(LdapError::Tcp {
                    url: url.text.clone(),
                    address: addr.to_string(),
                    source,
                })
            }
            (None, None) => {
                return Err(LdapError::Timeout {
                    url: url.text.clone(),
                    step: "connecting",
                })
            }
        };
        let _ = tcp.set_nodelay(true);
        let deadline = Deadline::after(settings.timeout);
        let stream = if url.ldaps {
            handshake(tcp, settings, deadline)?
        } else if settings.starttls {
            let mut tcp = tcp;
            let step = "StartTLS";
            let req = LdapMessage::new(
                1,
                ProtocolOp::ExtendedReq(ExtendedRequest {
                    request_name: STARTTLS_OID.as_bytes().to_vec().into(),
                    request_value: None,
                }),
            );
            let t = tcp.try_clone().map_err(|e| io_err(&url.text, step, e))?;
            send(&mut tcp, &t, &req, deadline, &url.text, step)?;
            let answer = receive(&mut tcp, &t, deadline, &url.text, step)?;
            match answer.protocol_op {
                ProtocolOp::ExtendedResp(r) if answer.message_id == 1 => {
                    let code = code_of(r.result_code);
                    if code != 0 {
                        return Err(LdapError::Refused {
                            url: url.text.clone(),
                            operation: "StartTLS".into(),
                            code,
                            message: r.diagnostic_message.0,
                        });
                    }
                }
                other => return Err(unexpected(&url.text, answer.message_id, &other)),
            }
            handshake(tcp, settings, deadline)?
        } else {
            Stream::Plain(tcp)
        };
        Ok(Connection {
            url: url.text.clone(),
            stream,
            next_id: 2,
            timeout: settings.timeout,
        })
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn request(
        &mut self,
        op: ProtocolOp,
        deadline: Deadline,
        step: &'static str,
    ) -> Result<u32, LdapError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let tcp = self
            .stream
            .tcp()
            .try_clone()
            .map_err(|e| io_err(&self.url, step, e))?;
        send(
            &mut self.stream,
            &tcp,
            &LdapMessage::new(id, op),
            deadline,
            &self.url,
            step,
        )?;
        Ok(id)
    }

    /// The next message answering `id` (a Notice of Disconnection ends
    /// the connection with an error).
    fn answer(
        &mut self,
        id: u32,
        deadline: Deadline,
        step: &'static str,
    ) -> Result<ProtocolOp, LdapError> {
        let tcp = self
            .stream
            .tcp()
            .try_clone()
            .map_err(|e| io_err(&self.url, step, e))?;
        loop {
            let m = receive(&mut self.stream, &tcp, deadline, &self.url, step)?;
            if m.message_id == id {
                return Ok(m.protocol_op);
            }
            if m.message_id == 0 {
                return Err(unexpected(&self.url, 0, &m.protocol_op));
            }
            // An answer to an earlier request given up on: skip it.
        }
    }

    /// A simple bind as `dn` with `password`. An empty password is refused
    /// before anything is sent (it would be an unauthenticated bind that
    /// succeeds). A wrong DN or password is [`LdapError::Bind`] with code
    /// 49 ([`LdapError::is_wrong_password`]).
    pub fn bind(&mut self, dn: &str, password: &str) -> Result<(), LdapError> {
        if password.is_empty() {
            return Err(LdapError::EmptyPassword {
                url: self.url.clone(),
                dn: dn.to_owned(),
            });
        }
        self.bind_raw(dn, password)
    }

    /// An anonymous bind (empty DN and password).
    pub fn bind_anonymous(&mut self) -> Result<(), LdapError> {
        self.bind_raw("", "")
    }

    fn bind_raw(&mut self, dn: &str, password: &str) -> Result<(), LdapError> {
        let step = "binding";
        let deadline = Deadline::after(self.timeout);
        let op = ProtocolOp::BindRequest(BindRequest::new(
            3,
            dn.into(),
            AuthenticationChoice::Simple(password.as_bytes().to_vec().into()),
        ));
        let id = self.request(op, deadline, step)?;
        match self.answer(id, deadline, step)? {
            ProtocolOp::BindResponse(r) => match code_of(r.result_code) {
                0 => Ok(()),
                code => Err(LdapError::Bind {
                    url: self.url.clone(),
                    dn: dn.to_owned(),
                    code,
                    message: r.diagnostic_message.0,
                }),
            },
            other => Err(unexpected(&self.url, id, &other)),
        }
    }

    /// Searches for at most one entry (size limit 2: a second entry is
    /// [`LdapError::SeveralEntries`]). References (SearchResultReference)
    /// and referral results are not followed: they count as no entry.
    /// `who` names the user in messages.
    pub fn search_one(
        &mut self,
        base: &str,
        scope: Scope,
        filter: Filter,
        attributes: &[String],
        who: &str,
    ) -> Result<Option<LdapEntry>, LdapError> {
        let step = "searching";
        let deadline = Deadline::after(self.timeout);
        let scope = match scope {
            Scope::Base => SearchRequestScope::BaseObject,
            Scope::One => SearchRequestScope::SingleLevel,
            Scope::Sub => SearchRequestScope::WholeSubtree,
        };
        let op = ProtocolOp::SearchRequest(SearchRequest::new(
            base.into(),
            scope,
            SearchRequestDerefAliases::NeverDerefAliases,
            2,
            u32::try_from(self.timeout.as_secs().max(1)).unwrap_or(u32::MAX),
            false,
            filter,
            attributes.iter().map(|a| a.as_str().into()).collect(),
        ));
        let id = self.request(op, deadline, step)?;
        let mut found: Vec<LdapEntry> = Vec::new();
        loop {
            match self.answer(id, deadline, step)? {
                ProtocolOp::SearchResEntry(e) => found.push(LdapEntry::from_wire(e)),
                ProtocolOp::SearchResRef(_) => {}
                ProtocolOp::SearchResDone(d) => {
                    let LdapResult {
                        result_code,
                        diagnostic_message,
                        ..
                    } = d.0;
                    let code = code_of(result_code);
                    if found.len() > 1 || (code == 4 && !found.is_empty()) {
                        return Err(LdapError::SeveralEntries {
                            url: self.url.clone(),
                            user: who.to_owned(),
                        });
                    }
                    return match code {
                        0 => Ok(found.pop()),
                        // A referral is not followed: no entry here.
                        10 => Ok(None),
                        _ => Err(LdapError::Search {
                            url: self.url.clone(),
                            base: base.to_owned(),
                            code,
                            message: diagnostic_message.0,
                        }),
                    };
                }
                other => return Err(unexpected(&self.url, id, &other)),
            }
        }
    }

    /// Replaces every value of `attribute` of `dn` with `value`.
    pub fn modify_replace(
        &mut self,
        dn: &str,
        attribute: &str,
        value: &str,
    ) -> Result<(), LdapError> {
        let step = "modifying";
        let deadline = Deadline::after(self.timeout);
        let op = ProtocolOp::ModifyRequest(ModifyRequest {
            object: dn.into(),
            changes: vec![ModifyRequestChanges {
                operation: ChangeOperation::Replace,
                modification: PartialAttribute::new(
                    attribute.into(),
                    vec![value.as_bytes().to_vec().into()].into(),
                ),
            }],
        });
        let id = self.request(op, deadline, step)?;
        match self.answer(id, deadline, step)? {
            ProtocolOp::ModifyResponse(r) => match code_of(r.0.result_code) {
                0 => Ok(()),
                code => Err(LdapError::Refused {
                    url: self.url.clone(),
                    operation: format!("modify of {attribute} of \"{dn}\""),
                    code,
                    message: r.0.diagnostic_message.0,
                }),
            },
            other => Err(unexpected(&self.url, id, &other)),
        }
    }

    /// Says goodbye (best effort, bounded by the timeout) and closes.
    pub fn unbind(mut self) {
        let deadline = Deadline::after(self.timeout.min(Duration::from_secs(1)));
        let _ = self.request(
            ProtocolOp::UnbindRequest(UnbindRequest),
            deadline,
            "unbinding",
        );
        if let Stream::Tls(s) = &mut self.stream {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }
}

pub(crate) fn unexpected(url: &str, id: u32, op: &ProtocolOp) -> LdapError {
    let what = match op {
        ProtocolOp::ExtendedResp(r) if id == 0 => {
            return LdapError::Protocol {
                url: url.to_owned(),
                detail: format!(
                    "the server ended the session (notice of disconnection: {})",
                    r.diagnostic_message.0
                ),
            }
        }
        ProtocolOp::BindResponse(_) => "a bind response",
        ProtocolOp::SearchResEntry(_) => "a search entry",
        ProtocolOp::SearchResDone(_) => "a search result",
        ProtocolOp::ModifyResponse(_) => "a modify response",
        ProtocolOp::ExtendedResp(_) => "an extended response",
        _ => "another message",
    };
    LdapError::Protocol {
        url: url.to_owned(),
        detail: format!("unexpected {what} (message {id})"),
    }
}
