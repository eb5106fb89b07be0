//! The request on the wire: building it (`Outgoing`), sending it through
//! ureq (resolver, TLS, proxy, timeouts), and classifying the answer.

use super::*;

// ------------------------------------------------------------------ request

/// One request ready to go. Holds secrets: `Debug` shows none.
pub(super) struct Outgoing {
    pub(super) method: Method,
    pub(super) url: Zeroizing<String>,
    pub(super) headers: Vec<(String, Zeroizing<String>)>,
    pub(super) body: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outgoing")
            .field("method", &self.method)
            .field("url", &"[redacted]")
            .field(
                "headers",
                &self.headers.iter().map(|h| &h.0).collect::<Vec<_>>(),
            )
            .field("body", &self.body.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl Outgoing {
    pub(super) fn header(&mut self, name: &str, value: impl Into<String>) {
        self.headers
            .push((name.to_owned(), Zeroizing::new(value.into())));
    }
    pub(super) fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

pub(super) fn basic(user: &str, password: &str) -> Zeroizing<String> {
    let pair = Zeroizing::new(format!("{user}:{password}"));
    Zeroizing::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
    ))
}

pub(super) fn form(pairs: &[(&str, &str)]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(String::new());
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&percent_encode(k));
        out.push('=');
        out.push_str(&percent_encode(v));
    }
    Zeroizing::new(out.as_bytes().to_vec())
}

pub(super) fn json_body(v: &serde_json::Value) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(v.to_string().into_bytes())
}

pub(super) fn colon(excerpt: &str) -> String {
    if excerpt.is_empty() {
        String::new()
    } else {
        format!(": {excerpt}")
    }
}

pub(super) fn status_line(status: u16) -> String {
    let reason = ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason());
    match reason {
        Some(r) => format!("{status} {r}"),
        None => status.to_string(),
    }
}

/// The classification by status alone: 408, 429 and 5xx are temporary (fail
/// over), 401/403 are bad credentials, redirects a wrong URL, other 4xx a
/// refused message.
pub(super) fn classify_status(status: u16, excerpt: &str, credentials: &str) -> SendError {
    let line = status_line(status);
    let tail = colon(excerpt);
    match status {
        408 | 429 | 500..=599 => SendError::Transient(format!("the gateway answered {line}{tail}")),
        401 | 403 => SendError::Misconfigured(format!(
            "bad credentials: the gateway answered {line}{tail}; check {credentials}"
        )),
        300..=399 => SendError::Misconfigured(format!(
            "the gateway answered {line} (a redirect, which is not followed){tail}; set the URL to the new address"
        )),
        400..=499 => SendError::Rejected(format!("the gateway refused the message: {line}{tail}")),
        200..=299 => SendError::Misconfigured(format!(
            "the gateway answered {line}, which is not a success status here{tail}; if it means sent, add it to success_status"
        )),
        _ => SendError::Transient(format!("the gateway answered {line}{tail}")),
    }
}

// ---------------------------------------------------------------- transport

/// Resolves in the calling thread: ureq's default resolver starts a thread
/// per lookup to bound it by the timeout, and the PAM module must start none.
#[derive(Debug, Default)]
pub struct SyncResolver;

impl ureq::unversioned::resolver::Resolver for SyncResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let host = uri
            .host()
            .ok_or_else(|| ureq::Error::BadUri("no host".into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            });
        let started = Instant::now();
        let addrs = (host, port).to_socket_addrs()?;
        if started.elapsed() > *timeout.after {
            return Err(ureq::Error::Timeout(timeout.reason));
        }
        let mut out = self.empty();
        for a in addrs {
            if out.try_push(a).is_err() {
                break;
            }
        }
        if out.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(out)
    }
}

/// The system's CA bundle plus `ca_file` (see [`tls`](crate::sms::tls)),
/// as ureq wants them.
pub(super) fn trust_anchors(
    ca_file: Option<&Path>,
) -> Result<Vec<ureq::tls::Certificate<'static>>, SendError> {
    let anchors = tls::trust_anchors(ca_file)?;
    let certs: Vec<_> = anchors
        .system
        .iter()
        .chain(&anchors.extra)
        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    if certs.is_empty() {
        return Err(tls::no_anchors());
    }
    Ok(certs)
}

/// The largest header section of an answer accepted (a gateway's are well
/// under 2 KiB); each connection's output buffer, and half its input one.
const MAX_ANSWER_HEADERS: usize = 16 * 1024;

/// An agent for `t`. `idle`: how many keep-alive connections it keeps
/// (per host and in all) for a server's many concurrent sends; `None`
/// keeps ureq's defaults.
pub(super) fn build_agent(
    t: &TransportSpec,
    idle: Option<usize>,
) -> Result<ureq::Agent, SendError> {
    use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
    let roots = trust_anchors(t.ca_file.as_deref())?;
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    let proxy = match &t.proxy {
        None => None,
        Some(p) => Some(ureq::Proxy::new(p).map_err(|e| {
            SendError::Misconfigured(format!(
                "proxy {:?}: {e}; write it like \"http://proxy.example:3128\"",
                without_credentials(p)
            ))
        })?),
    };
    let mut builder = ureq::Agent::config_builder();
    if let Some(n) = idle {
        builder = builder
            .max_idle_connections(n)
            .max_idle_connections_per_host(n);
    }
    let config = builder
        .tls_config(tls)
        // Set explicitly: the default reads HTTPS_PROXY from the environment.
        .proxy(proxy)
        .https_only(!t.allow_http)
        .http_status_as_error(false)
        // A redirect could take the credentials elsewhere: never followed.
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_global(Some(t.timeout))
        .timeout_connect(Some(t.connect_timeout))
        .user_agent(concat!("smsotp/", env!("CARGO_PKG_VERSION")))
        // ureq gives each connection 128 KiB each way; an SMS request and
        // its answer's headers are a few hundred bytes, and a server with
        // 256 sends in flight keeps as many connections (a 64-send rush
        // held 16 MB in these buffers). A header section must fit in the
        // input buffer with room to spare, or ureq cannot tell "too large"
        // from a server that hung up.
        .input_buffer_size(2 * MAX_ANSWER_HEADERS)
        .max_response_header_size(MAX_ANSWER_HEADERS)
        .output_buffer_size(MAX_ANSWER_HEADERS)
        .build();
    Ok(ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        SyncResolver,
    ))
}

pub(super) fn transport_error(e: &ureq::Error, t: &TransportSpec, red: &Redactor) -> SendError {
    use ureq::Error as E;
    let d = |d: Duration| humantime::format_duration(d).to_string();
    let text = red.clean(&e.to_string());
    match e {
        E::Timeout(ureq::Timeout::Connect) => SendError::Transient(format!(
            "could not connect to the gateway within {}",
            d(t.connect_timeout)
        )),
        E::Timeout(_) => SendError::Transient(format!(
            "the gateway did not answer within {}",
            d(t.timeout)
        )),
        // rustls reports a refused certificate through the socket's I/O.
        E::Io(io)
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) =>
        {
            SendError::Transient(format!(
                "TLS with the gateway failed: {text}; if its certificate comes from a private CA, set ca_file"
            ))
        }
        E::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => SendError::Transient(format!(
            "the gateway did not answer within {}",
            d(t.timeout)
        )),
        E::HostNotFound => {
            SendError::Transient("cannot resolve the gateway's host name".into())
        }
        E::Io(_) | E::ConnectionFailed => {
            SendError::Transient(format!("cannot reach the gateway: {text}"))
        }
        E::Rustls(_) | E::Tls(_) => SendError::Transient(format!(
            "TLS with the gateway failed: {text}; if its certificate comes from a private CA, set ca_file"
        )),
        E::ConnectProxyFailed(_) => SendError::Transient(format!("the proxy failed: {text}")),
        E::RequireHttpsOnly(_) => SendError::Misconfigured(
            "the URL uses plain http; use https (or set allow_http = true)".into(),
        ),
        E::BadUri(_) | E::Http(_) | E::InvalidProxyUrl => {
            SendError::Misconfigured(format!("cannot build the request: {text}"))
        }
        _ => SendError::Transient(format!("the request failed: {text}")),
    }
}

/// Sends `req`; the status and at most [`MAX_RESPONSE`] bytes of the body.
pub(super) fn exchange(agent: &ureq::Agent, req: &Outgoing) -> Result<(u16, Vec<u8>), ureq::Error> {
    let mut b = ureq::http::Request::builder()
        .method(req.method.as_str())
        .uri(req.url.as_str());
    for (name, value) in &req.headers {
        b = b.header(name.as_str(), value.as_str());
    }
    let mut resp = match &req.body {
        None => agent.run(b.body(())?)?,
        Some(body) => agent.run(b.body(&body[..])?)?,
    };
    let status = resp.status().as_u16();
    let mut buf = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(MAX_RESPONSE)
        .read_to_end(&mut buf)?;
    Ok((status, buf))
}
