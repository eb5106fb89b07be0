//! Opening the connection a [`super::RedisStore`] runs its commands on:
//! straight to the server `store.url` names, or to the master the
//! sentinels (`store.sentinels`) name, and making a write durable
//! ([`Conn::make_durable`]).
//!
//! Everything here is a handful of commands on the `redis` crate's
//! synchronous connection, each bounded by `store.connect_timeout`
//! (connecting, with the handshake) and `store.timeout` (each command).
//! The crate's own `sentinel` module is not used: it connects without a
//! timeout and retries a command after an I/O error.

use std::time::{Duration, Instant};

use redis::{
    Connection, ConnectionAddr, ConnectionLike, IntoConnectionInfo, RedisConnectionInfo,
    RedisResult, Value,
};

use crate::config::{join_host_port, RedisAddr, RedisSpec, SentinelSpec};

/// A connection to the master, with what was learnt about the server
/// through it.
pub(super) struct Conn {
    pub(super) c: Connection,
    waitaof: WaitAof,
    /// When a command last went through, for [`Conn::stale`].
    last_used: Instant,
}

/// A connection idle this long is PINGed before the next command.
pub(super) const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Whether `WAITAOF 1 0` is worth sending on this connection: the server
/// has it (Redis 7.2+, Valkey) and keeps an append-only file. Found out by
/// the first durable write on a connection, from the server's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitAof {
    /// Not tried yet on this connection.
    Unknown,
    /// It answered.
    Yes,
    /// No such command, or no append-only file to wait for.
    No,
}

/// One sentinel's answer to "where is the master?", for doctor
/// ([`sentinel_view`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelAnswer {
    /// The sentinel asked, as `host:port` (`[v6]:port`).
    pub sentinel: String,
    /// The master's address as it answered (`ip:port`), or why it gave
    /// none: could not connect, refused the login, does not know the
    /// master name.
    pub master: Result<String, String>,
}

/// Asks each sentinel of `spec` in order where the master is, each
/// bounded by `store.connect_timeout` and `store.timeout`; empty for a
/// store named by `url`. Does not connect to the master; what doctor
/// shows so an admin sees a sentinel whose view differs from the others.
pub fn sentinel_view(spec: &RedisSpec) -> Vec<SentinelAnswer> {
    let RedisAddr::Sentinel(s) = &spec.addr else {
        return Vec::new();
    };
    s.sentinels
        .iter()
        .map(|(host, port)| SentinelAnswer {
            sentinel: join_host_port(host, *port),
            master: ask_sentinel(spec, s, host, *port).map(|(h, p)| join_host_port(&h, p)),
        })
        .collect()
}

/// Why a connection could not be opened, for `StoreError::Unavailable`.
pub(super) enum OpenError {
    /// The one server `url` names failed as the crate says.
    Redis(redis::RedisError),
    /// A password file or the trust anchors could not be read (the
    /// message names the key).
    Setup(String),
    /// No sentinel led to a master; what each said, in order.
    Sentinels(Vec<String>),
    /// Connected, but the first command failed (no answer within
    /// `store.timeout`, refused, not Redis).
    Answer(redis::RedisError),
}

impl Conn {
    /// Connects to the master: the server `url` names, or the one the
    /// first sentinel that can answer names and that says it is master.
    /// With `ping`, a PING proves the server answers and let us in (the
    /// handshake sends nothing without a password or a db); without, the
    /// caller's first command does (the key check), saving a round trip.
    /// A master found through the sentinels has answered `ROLE` either way.
    pub(super) fn open(spec: &RedisSpec, ping: bool) -> Result<Conn, OpenError> {
        let settings = master_settings(spec)?;
        let c = match &spec.addr {
            RedisAddr::Tcp { host, port } => node(
                spec,
                ConnectionAddr::Tcp(host.clone(), *port),
                settings,
                false,
            )
            .map_err(OpenError::Redis)?,
            RedisAddr::Unix(path) => {
                node(spec, ConnectionAddr::Unix(path.clone()), settings, false)
                    .map_err(OpenError::Redis)?
            }
            RedisAddr::Tls {
                host,
                port,
                ca_file,
            } => {
                let roots = trust(ca_file.as_deref()).map_err(OpenError::Setup)?;
                node_tls(
                    spec,
                    ConnectionAddr::TcpTls {
                        host: host.clone(),
                        port: *port,
                        insecure: false,
                        tls_params: None,
                    },
                    settings,
                    Some(roots),
                    false,
                )
                .map_err(OpenError::Redis)?
            }
            RedisAddr::Sentinel(s) => via_sentinels(spec, s, settings)?,
        };
        let mut c = c;
        if ping && !matches!(spec.addr, RedisAddr::Sentinel(_)) {
            redis::cmd("PING")
                .query::<()>(&mut c)
                .map_err(OpenError::Answer)?;
        }
        Ok(Conn {
            c,
            waitaof: WaitAof::Unknown,
            last_used: Instant::now(),
        })
    }

    /// Whether a connection that sat idle for a while is dead (a server
    /// that died or a failover closed it meanwhile): PING, which changes
    /// nothing, so opening a new connection after it is not a retry. A
    /// server keeps its connections open, and one idle
    /// across a failover would otherwise fail its next login on the dead
    /// master's socket.
    pub(super) fn stale(&mut self) -> bool {
        if self.last_used.elapsed() < IDLE_CHECK {
            return false;
        }
        let dead = redis::cmd("PING").query::<()>(&mut self.c).is_err();
        self.last_used = Instant::now();
        dead
    }

    /// Notes that a command went through now.
    pub(super) fn used(&mut self) {
        self.last_used = Instant::now();
    }

    /// Asks the server to keep the last write through a failover or a
    /// crash before the caller answers: `WAIT N` for the N replicas the
    /// master has connected now (none: no wait), so the replica a failover
    /// promotes has it; then, where the server has `WAITAOF` (Redis 7.2+,
    /// Valkey) and keeps an append-only file, `WAITAOF 1 0` for its own
    /// fsync. Not `WAITAOF 1 N`: replicas without an append-only file
    /// never acknowledge it, and every such write would wait the full
    /// time. Each wait is bounded by half of `store.timeout`, so its
    /// answer comes before the socket's own timeout. Fewer
    /// acknowledgements than asked are not an error (the write stands on
    /// the master); an error here is given back for the caller to drop a
    /// broken connection, never to undo or redo the write.
    pub(super) fn make_durable(&mut self, spec: &RedisSpec) -> RedisResult<()> {
        let replicas = match redis::cmd("ROLE").query::<redis::Role>(&mut self.c)? {
            redis::Role::Primary { replicas, .. } => replicas.len(),
            // A replica refused the write already (READONLY); a sentinel
            // is not a store.
            _ => return Ok(()),
        };
        let wait_ms = u64::try_from(spec.timeout.as_millis() / 2)
            .unwrap_or(u64::MAX)
            .max(1);
        if replicas > 0 {
            redis::cmd("WAIT")
                .arg(replicas)
                .arg(wait_ms)
                .query::<i64>(&mut self.c)?;
        }
        if self.waitaof == WaitAof::No {
            return Ok(());
        }
        match redis::cmd("WAITAOF")
            .arg(1)
            .arg(0)
            .arg(wait_ms)
            .query::<(i64, i64)>(&mut self.c)
        {
            Ok(_) => {
                self.waitaof = WaitAof::Yes;
                Ok(())
            }
            // "unknown command" (before 7.2) or "appendonly is disabled":
            // nothing to wait for on this connection, now or later.
            Err(e) if e.code().is_some() && self.waitaof == WaitAof::Unknown => {
                let text = e.to_string().to_ascii_lowercase();
                if text.contains("unknown command") || text.contains("appendonly") {
                    self.waitaof = WaitAof::No;
                    Ok(())
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// A connection whose pipelines stop reading at the first answer that
/// fails to come. The crate reads every answer of a pipeline whatever
/// happened to the one before, each bounded by `store.timeout`, so a
/// server that stopped answering held a MULTI block of n commands n + 2
/// times the timeout.
pub(super) struct Bounded<'a>(pub(super) &'a mut Connection);

impl ConnectionLike for Bounded<'_> {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.0.send_packed_command(cmd)?;
        let mut answers = Vec::with_capacity(offset + count);
        while answers.len() < offset + count {
            match self.0.recv_response()? {
                // RESP3 pushes come between answers; none is asked for.
                Value::Push { .. } => {}
                v => answers.push(v),
            }
        }
        pipeline_answers(answers, offset)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }

    fn check_connection(&mut self) -> bool {
        self.0.check_connection()
    }

    fn is_open(&self) -> bool {
        self.0.is_open()
    }
}

/// A pipeline's answers from `offset` on. Before it: MULTI and QUEUED;
/// an error there is a command the server refused to queue, and the
/// block did not run.
pub(super) fn pipeline_answers(mut answers: Vec<Value>, offset: usize) -> RedisResult<Vec<Value>> {
    if let Some(Value::ServerError(e)) = answers[..offset]
        .iter()
        .find(|v| matches!(v, Value::ServerError(_)))
    {
        return Err(e.clone().into());
    }
    Ok(answers.split_off(offset))
}

/// The master's login: `username`/`password_file`, `db`.
fn master_settings(spec: &RedisSpec) -> Result<RedisConnectionInfo, OpenError> {
    login(
        RedisConnectionInfo::default().set_db(spec.db),
        spec.username.as_deref(),
        spec.password_file.as_deref(),
        "store.password_file",
    )
}

fn login(
    mut settings: RedisConnectionInfo,
    username: Option<&str>,
    password_file: Option<&std::path::Path>,
    key: &str,
) -> Result<RedisConnectionInfo, OpenError> {
    settings = settings.set_skip_set_lib_name();
    if let Some(file) = password_file {
        let password =
            crate::files::read_secret(file).map_err(|e| OpenError::Setup(format!("{key}: {e}")))?;
        settings = settings.set_password(password.expose());
    }
    if let Some(user) = username {
        settings = settings.set_username(user);
    }
    Ok(settings)
}

/// One server, connected within `connect_timeout` (the handshake
/// included), every later command bounded by `timeout`, and, with
/// `ping`, a PING answered (the handshake sends nothing without a
/// password or a db).
fn node(
    spec: &RedisSpec,
    addr: ConnectionAddr,
    settings: RedisConnectionInfo,
    ping: bool,
) -> RedisResult<Connection> {
    node_tls(spec, addr, settings, None, ping)
}

/// [`node`], over TLS trusting `roots` (PEM) when given.
fn node_tls(
    spec: &RedisSpec,
    addr: ConnectionAddr,
    settings: RedisConnectionInfo,
    roots: Option<Vec<u8>>,
    ping: bool,
) -> RedisResult<Connection> {
    // Each command is one write and waits for its answer: nothing gains
    // from Nagle's delay (other Redis clients turn it off too).
    let info = addr
        .into_connection_info()?
        .set_redis_settings(settings)
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let client = match roots {
        None => redis::Client::open(info)?,
        Some(pem) => {
            // The crate builds its rustls config with the process's
            // default provider: make it ring, as everywhere else here
            // (a no-op when one is installed already).
            let _ = rustls::crypto::ring::default_provider().install_default();
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )?
        }
    };
    let mut conn = client.get_connection_with_timeout(spec.connect_timeout)?;
    conn.set_read_timeout(Some(spec.timeout))?;
    conn.set_write_timeout(Some(spec.timeout))?;
    if ping {
        redis::cmd("PING").query::<()>(&mut conn)?;
    }
    Ok(conn)
}

/// The trust anchors of a `rediss://` store as PEM for the `redis` crate:
/// `ca_file` alone when set (read with the same rules as every CA file
/// here), else the system's CA bundle from its fixed paths, never from
/// the environment.
fn trust(ca_file: Option<&std::path::Path>) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let said = |e: crate::sms::SendError| match e {
        crate::sms::SendError::Misconfigured(m) => format!("store.{m}"),
        other => other.to_string(),
    };
    let anchors = crate::sms::tls::trust_anchors(ca_file).map_err(said)?;
    let certs = if ca_file.is_some() {
        anchors.extra
    } else {
        anchors.system
    };
    if certs.is_empty() {
        return Err(
            "no trusted CA certificates for rediss://: install the ca-certificates package or set store.ca_file"
                .to_owned(),
        );
    }
    let mut pem = Vec::new();
    for c in certs {
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(c.as_ref());
        for line in b64.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    Ok(pem)
}

/// Short words for what went wrong with one server, for a message that
/// lists several.
fn said(e: &redis::RedisError, spec: &RedisSpec) -> String {
    if e.is_timeout() {
        format!(
            "no answer within {}",
            crate::config::human_duration(spec.timeout.max(spec.connect_timeout))
        )
    } else if e.is_io_error() {
        format!("cannot connect ({e})")
    } else {
        e.to_string()
    }
}

/// `SENTINEL get-master-addr-by-name` on one sentinel.
fn ask_sentinel(
    spec: &RedisSpec,
    s: &SentinelSpec,
    host: &str,
    port: u16,
) -> Result<(String, u16), String> {
    let settings = login(
        RedisConnectionInfo::default(),
        s.username.as_deref(),
        s.password_file.as_deref(),
        "store.sentinel_password_file",
    )
    .map_err(|e| match e {
        OpenError::Setup(m) => m,
        OpenError::Redis(e) | OpenError::Answer(e) => e.to_string(),
        OpenError::Sentinels(v) => v.join("; "),
    })?;
    let mut conn = node(
        spec,
        ConnectionAddr::Tcp(host.to_owned(), port),
        settings,
        true,
    )
    .map_err(|e| said(&e, spec))?;
    let addr: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(&s.master_name)
        .query(&mut conn)
        .map_err(|e| {
            if e.to_string()
                .to_ascii_lowercase()
                .contains("unknown command")
            {
                "is not a sentinel (no SENTINEL command)".to_owned()
            } else {
                said(&e, spec)
            }
        })?;
    let Some((ip, port)) = addr else {
        return Err(format!(
            "does not monitor a master named \"{}\" (check store.master_name)",
            s.master_name
        ));
    };
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("answered the port \"{port}\""))?;
    Ok((ip, port))
}

/// Asks each sentinel in order; the first master that says it is one
/// wins. A sentinel with a stale view (its master is a replica now) or a
/// master that cannot be reached sends us to the next sentinel.
fn via_sentinels(
    spec: &RedisSpec,
    s: &SentinelSpec,
    settings: RedisConnectionInfo,
) -> Result<Connection, OpenError> {
    let mut why = Vec::new();
    for (host, port) in &s.sentinels {
        let name = join_host_port(host, *port);
        let (mh, mp) = match ask_sentinel(spec, s, host, *port) {
            Ok(a) => a,
            Err(e) => {
                why.push(format!("{name}: {e}"));
                continue;
            }
        };
        let master = join_host_port(&mh, mp);
        // ROLE, next, proves the master answers: no PING first.
        let mut conn = match node(spec, ConnectionAddr::Tcp(mh, mp), settings.clone(), false) {
            Ok(c) => c,
            Err(e) => {
                why.push(format!("{name}: master {master}: {}", said(&e, spec)));
                continue;
            }
        };
        match redis::cmd("ROLE").query::<redis::Role>(&mut conn) {
            Ok(redis::Role::Primary { .. }) => return Ok(conn),
            Ok(_) => why.push(format!(
                "{name}: named {master}, which is not a master now (a stale view)"
            )),
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) => {
                why.push(format!(
                    "{name}: master {master}: the store's user may not run ROLE (grant it +role)"
                ));
            }
            Err(e) => why.push(format!("{name}: master {master}: {}", said(&e, spec))),
        }
    }
    Err(OpenError::Sentinels(why))
}
