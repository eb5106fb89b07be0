//! `[radius]`: what smsotp-radiusd listens on, how it checks the password
//! first ([`PrimaryAuth`]) and the NASes it answers ([`RadiusClient`]).

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::check::{Checker, ConfigError};
use super::store::DirectorySpec;
use crate::directory::ldap::LdapSpec;

/// A RADIUS shared secret shorter than this is warned about: RFC 2865 asks
/// for at least 16 octets, and an offline guess of a shorter one from a
/// captured request is cheap.
pub const RADIUS_SECRET_MIN_BYTES: usize = 16;

/// The warning for a RADIUS client whose shared secret is `len` bytes long,
/// if that is too short (one threshold and one text for every front end).
pub fn short_secret_warning(client: &str, len: usize) -> Option<String> {
    (len < RADIUS_SECRET_MIN_BYTES).then(|| {
        format!(
            "radius client \"{client}\": the shared secret is only {len} bytes; use at least \
             {RADIUS_SECRET_MIN_BYTES} random characters, e.g. openssl rand -base64 24, in its \
             secret_file and on the NAS"
        )
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRadius {
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    primary: Option<Spanned<RawPrimary>>,
    workers: Option<Spanned<i64>>,
    max_pending_sends: Option<Spanned<i64>>,
    max_queued: Option<Spanned<i64>>,
    metrics: Option<Spanned<String>>,
    #[serde(default)]
    client: Vec<Spanned<RawClient>>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum RawPrimary {
    // A struct variant: a unit variant would let unknown keys through.
    None {},
    Pam { service: Option<String> },
    Ldap { directory: Option<String> },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    name: String,
    address: String,
    secret_file: String,
    mode: Option<String>,
    require_message_authenticator: Option<bool>,
    limit_proxy_state: Option<bool>,
}

/// How smsotp-radiusd checks the password before sending a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimaryAuth {
    /// The NAS checked the password already (or there is none).
    None,
    /// Run the password through this PAM service.
    Pam {
        /// The file in /etc/pam.d (default `smsotp-radius`).
        service: String,
    },
    /// Bind to an LDAP server or Active Directory as the user, with the
    /// settings of a `[[directory]] kind = "ldap"` (the first one, or the
    /// one named by `primary.directory`).
    Ldap(Box<LdapSpec>),
}

/// How a NAS asks for the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMode {
    /// Access-Challenge with State, the code in a second Access-Request.
    Challenge,
    /// For NASes without challenges: the password alone sends the code and
    /// is rejected ("Code sent"); password followed by the code logs in.
    Append,
}

/// One NAS allowed to talk to smsotp-radiusd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadiusClient {
    /// Unique among the clients; the service is `radius:NAME` in audit
    /// lines and rate keys.
    pub name: String,
    /// The source addresses it may send from (a single address is a /32 or
    /// /128); the most specific network wins.
    pub network: ipnet::IpNet,
    /// The file holding the shared secret (read by smsotp-radiusd, never
    /// kept in the config).
    pub secret_file: PathBuf,
    /// How it asks for the code (default challenge).
    pub mode: ClientMode,
    /// Drop requests without a valid Message-Authenticator (default true;
    /// false only with `limit_proxy_state`, against BlastRADIUS).
    pub require_message_authenticator: bool,
    /// Drop requests that carry Proxy-State but no Message-Authenticator
    /// (default false).
    pub limit_proxy_state: bool,
}

/// `[radius]`, validated: only smsotp-radiusd reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadiusSettings {
    /// The UDP addresses to bind; never empty (default `0.0.0.0:1812`).
    pub listen: Vec<std::net::SocketAddr>,
    /// The first factor (default none: the NAS checked the password).
    pub primary: PrimaryAuth,
    /// Worker threads, 1 to 256 (default 4; 8 with a Redis store, each
    /// deciding up to 32 requests at once).
    pub workers: usize,
    /// Requests that may send an SMS (a first round, an append-mode login,
    /// an empty-code resend) decided at once, each on a thread of its own
    /// while it waits for the gateway; more are dropped until one ends.
    /// 1 to 4096 (default 256).
    pub max_pending_sends: usize,
    /// Datagrams read and waiting for a worker, per listen address and per
    /// kind (answers with a State and Status-Server; new requests): when
    /// one queue is full, what arrives for it is dropped unanswered.
    /// 16 to 16384 (default 1024).
    pub max_queued: usize,
    /// Where `GET /metrics` is served (Prometheus text format), if set
    /// (`radius.metrics`; default off). Check-config warns unless it is
    /// a loopback address.
    pub metrics: Option<std::net::SocketAddr>,
    /// The NASes answered; a request from any other address is dropped.
    pub clients: Vec<RadiusClient>,
}

impl RadiusSettings {
    /// The most specific client whose network holds `ip`.
    pub fn client_for(&self, ip: std::net::IpAddr) -> Option<&RadiusClient> {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.clients
            .iter()
            .filter(|c| c.network.contains(&ip))
            .max_by_key(|c| c.network.prefix_len())
    }
}

/// Validates `[radius]`; `directories` are the validated `[[directory]]`
/// tables, which an LDAP primary takes its settings from.
pub(super) fn validate(
    c: &Checker<'_>,
    r: &RawRadius,
    directories: &[DirectorySpec],
    store: &super::StoreSpec,
    warnings: &mut Vec<super::ConfigWarning>,
) -> Result<RadiusSettings, ConfigError> {
    let mut listen = Vec::new();
    for l in &r.listen {
        let addr = l.get_ref().parse::<std::net::SocketAddr>().map_err(|_| {
            c.err(
                l.span(),
                "radius.listen",
                format!(
                    "\"{}\" is not an address and port; write \"0.0.0.0:1812\" or \"[::]:1812\"",
                    l.get_ref()
                ),
            )
        })?;
        listen.push(addr);
    }
    if listen.is_empty() {
        listen.push(std::net::SocketAddr::from(([0, 0, 0, 0], 1812)));
    }
    let primary = match &r.primary {
        None => PrimaryAuth::None,
        Some(p) => match p.get_ref() {
            RawPrimary::None {} => PrimaryAuth::None,
            RawPrimary::Pam { service } => {
                let service = service.clone().unwrap_or_else(|| "smsotp-radius".into());
                if service.is_empty() || service.contains('/') {
                    return Err(c.err(
                        p.span(),
                        "radius.primary.service",
                        "must be a PAM service name (a file in /etc/pam.d)",
                    ));
                }
                PrimaryAuth::Pam { service }
            }
            RawPrimary::Ldap { directory } => PrimaryAuth::Ldap(Box::new(ldap_directory(
                c,
                p.span(),
                directories,
                directory.as_deref(),
            )?)),
        },
    };
    // On a networked store (Redis) a worker decides many requests at
    // once, each in a fiber, and waits for the server's answers on a
    // connection of its own while its fibers all wait: a few more
    // workers than cores keep the CPU busy meanwhile (bench-radius
    // STORE=redis). On SQLite they would only queue for its one
    // connection.
    let default_workers = if store.local_file().is_none() { 8 } else { 4 };
    let workers = c.int_in(&r.workers, "radius.workers", 1..=256, default_workers)? as usize;
    let max_pending_sends = c.int_in(
        &r.max_pending_sends,
        "radius.max_pending_sends",
        1..=4096,
        256,
    )? as usize;
    let max_queued = c.int_in(&r.max_queued, "radius.max_queued", 16..=16_384, 1024)? as usize;
    let metrics = match &r.metrics {
        None => None,
        Some(m) => Some(
            m.get_ref()
                .trim()
                .parse::<std::net::SocketAddr>()
                .map_err(|_| {
                    c.err(
                        m.span(),
                        "radius.metrics",
                        format!(
                    "\"{}\" is not an address and port; write \"127.0.0.1:9812\" or \"[::1]:9812\"",
                    m.get_ref()
                ),
                    )
                })?,
        ),
    };
    if let (Some(addr), Some(m)) = (metrics, &r.metrics) {
        if !addr.ip().is_loopback() {
            warnings.push(c.warning(
                m.span(),
                "radius.metrics",
                &format!(
                    "{addr} is not a loopback address: anyone who can reach it reads the SMS \
                     counters and request outcomes, without a password; use \"127.0.0.1:{}\" \
                     and scrape it locally",
                    addr.port()
                ),
            ));
        }
    }
    let mut clients: Vec<RadiusClient> = Vec::new();
    for (i, cl) in r.client.iter().enumerate() {
        let key = format!("radius.client[{i}]");
        let raw = cl.get_ref();
        let name = raw.name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        {
            return Err(c.err(
                cl.span(),
                &format!("{key}.name"),
                "use letters, digits, '-', '_' or '.'",
            ));
        }
        if clients.iter().any(|o| o.name == name) {
            return Err(c.err(
                cl.span(),
                &format!("{key}.name"),
                format!("\"{name}\" names two clients; give each a distinct name"),
            ));
        }
        let address = raw.address.trim();
        let network = address
            .parse::<ipnet::IpNet>()
            .or_else(|_| address.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                c.err(
                    cl.span(),
                    &format!("{key}.address"),
                    format!("\"{address}\" is not an address or network; write \"192.0.2.10\", \"192.0.2.0/24\" or \"2001:db8::/64\""),
                )
            })?
            .trunc();
        let secret_file = c.absolute(&raw.secret_file, cl.span(), &format!("{key}.secret_file"))?;
        let mode = match raw.mode.as_deref() {
            None | Some("challenge") => ClientMode::Challenge,
            Some("append") => ClientMode::Append,
            Some(other) => {
                return Err(c.err(
                    cl.span(),
                    &format!("{key}.mode"),
                    format!("\"{other}\" is not allowed; use \"challenge\" or \"append\""),
                ))
            }
        };
        let require_message_authenticator = raw.require_message_authenticator.unwrap_or(true);
        let limit_proxy_state = raw.limit_proxy_state.unwrap_or(false);
        if !require_message_authenticator && !limit_proxy_state {
            return Err(c.err(
                cl.span(),
                &format!("{key}.require_message_authenticator"),
                "may be false only together with limit_proxy_state = true (BlastRADIUS, CVE-2024-3596); \
                 better: make the NAS send Message-Authenticator",
            ));
        }
        clients.push(RadiusClient {
            name: name.to_owned(),
            network,
            secret_file,
            mode,
            require_message_authenticator,
            limit_proxy_state,
        });
    }
    Ok(RadiusSettings {
        listen,
        primary,
        workers,
        max_pending_sends,
        max_queued,
        metrics,
        clients,
    })
}

/// The LDAP directory an LDAP primary binds to: the one named `name`, or
/// the first.
fn ldap_directory(
    c: &Checker<'_>,
    span: std::ops::Range<usize>,
    directories: &[DirectorySpec],
    name: Option<&str>,
) -> Result<LdapSpec, ConfigError> {
    let ldap: Vec<&LdapSpec> = directories
        .iter()
        .filter_map(|d| match d {
            DirectorySpec::Ldap(spec) => Some(&**spec),
            _ => None,
        })
        .collect();
    let Some(first) = ldap.first() else {
        return Err(c.err(
            span,
            "radius.primary.kind",
            "\"ldap\" binds with the settings of an LDAP directory, and there is none; add a \
             [[directory]] table with kind = \"ldap\" (urls, base, ...), or use kind = \"pam\" or \"none\"",
        ));
    };
    let Some(name) = name else {
        return Ok((*first).clone());
    };
    match ldap.iter().find(|s| s.name == name) {
        Some(spec) => Ok((*spec).clone()),
        None => {
            let names: Vec<String> = ldap.iter().map(|s| format!("\"{}\"", s.name)).collect();
            Err(c.err(
                span,
                "radius.primary.directory",
                format!(
                    "no LDAP directory is named \"{name}\"; the LDAP directories are {}: use one of \
                     these names, or set name = \"{name}\" in its [[directory]] table",
                    names.join(", ")
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{err_of, parse};

    #[test]
    fn metrics_is_an_address_warned_about_off_loopback() {
        let base = "[radius]\nprimary = { kind = \"none\" }\n";
        let c = parse(base).unwrap();
        assert_eq!(c.radius.unwrap().metrics, None);
        let c = parse(&format!("{base}metrics = \"127.0.0.1:9812\"\n")).unwrap();
        assert_eq!(
            c.radius.unwrap().metrics,
            Some("127.0.0.1:9812".parse().unwrap())
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let c = parse(&format!("{base}metrics = \"[::]:9812\"\n")).unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].message.contains("not a loopback address"));
        assert!(c.warnings[0].message.contains("\"127.0.0.1:9812\""));
        let e = err_of(&format!("{base}metrics = \"localhost\"\n"));
        assert!(
            e.contains("radius.metrics") && e.contains("\"127.0.0.1:9812\""),
            "{e}"
        );
    }

    #[test]
    fn radius_clients_are_validated() {
        let base = "[radius]\nlisten = [\"127.0.0.1:1812\", \"[::1]:1812\"]\nprimary = { kind = \"pam\" }\n";
        let ok = format!(
            "{base}[[radius.client]]\nname = \"vpn\"\naddress = \"192.0.2.0/24\"\nsecret_file = \"/etc/smsotp/secrets/vpn\"\n\
             [[radius.client]]\nname = \"fw\"\naddress = \"192.0.2.9\"\nsecret_file = \"/etc/smsotp/secrets/fw\"\nmode = \"append\"\n"
        );
        let r = parse(&ok).unwrap().radius.unwrap();
        assert_eq!(r.listen.len(), 2);
        assert_eq!(
            r.primary,
            PrimaryAuth::Pam {
                service: "smsotp-radius".into()
            }
        );
        assert_eq!(r.clients[0].mode, ClientMode::Challenge);
        assert!(r.clients[0].require_message_authenticator);
        assert_eq!((r.workers, r.max_pending_sends), (4, 256));
        // On a networked store the workers wait on it: more of them.
        let on_redis = format!("{ok}\n[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1\"\n");
        assert_eq!(parse(&on_redis).unwrap().radius.unwrap().workers, 8);
        let set = on_redis.replace("primary = {", "workers = 3\nprimary = {");
        assert_eq!(parse(&set).unwrap().radius.unwrap().workers, 3);
        let r = parse(&ok.replace("primary =", "max_pending_sends = 2\nprimary ="))
            .unwrap()
            .radius
            .unwrap();
        assert_eq!(r.max_pending_sends, 2);
        for bad in ["0", "4097", "-1"] {
            let e = err_of(&ok.replace(
                "primary =",
                &format!("max_pending_sends = {bad}\nprimary ="),
            ));
            assert!(
                e.contains("radius.max_pending_sends") && e.contains("1 to 4096"),
                "{e}"
            );
        }
        assert_eq!(parse(&ok).unwrap().radius.unwrap().max_queued, 1024);
        let q = parse(&ok.replace("primary =", "max_queued = 64\nprimary ="))
            .unwrap()
            .radius
            .unwrap();
        assert_eq!(q.max_queued, 64);
        for bad in ["15", "16385"] {
            let e = err_of(&ok.replace("primary =", &format!("max_queued = {bad}\nprimary =")));
            assert!(
                e.contains("radius.max_queued") && e.contains("16 to 16384"),
                "{e}"
            );
        }
        // The most specific network wins; IPv4-mapped IPv6 matches IPv4 clients.
        assert_eq!(
            r.client_for("192.0.2.9".parse().unwrap()).unwrap().name,
            "fw"
        );
        assert_eq!(
            r.client_for("192.0.2.10".parse().unwrap()).unwrap().name,
            "vpn"
        );
        assert_eq!(
            r.client_for("::ffff:192.0.2.10".parse().unwrap())
                .unwrap()
                .name,
            "vpn"
        );
        assert!(r.client_for("198.51.100.1".parse().unwrap()).is_none());

        let no_ma = format!(
            "{base}[[radius.client]]\nname = \"old\"\naddress = \"192.0.2.1\"\nsecret_file = \"/s\"\nrequire_message_authenticator = false\n"
        );
        let e = err_of(&no_ma);
        assert!(
            e.contains("limit_proxy_state") && e.contains("BlastRADIUS"),
            "{e}"
        );
        assert!(parse(&format!("{no_ma}limit_proxy_state = true\n")).is_ok());

        let e = err_of(&format!("{base}[[radius.client]]\nname = \"x\"\naddress = \"vpn.example\"\nsecret_file = \"/s\"\n"));
        assert!(e.contains("radius.client[0].address"), "{e}");
        let e = err_of("[radius]\nlisten = [\"1812\"]\n");
        assert!(e.contains("radius.listen"), "{e}");
        assert!(parse("").unwrap().radius.is_none());
    }

    #[test]
    fn ldap_primary_takes_a_directory_s_settings() {
        let radius = "[radius]\nprimary = { kind = \"ldap\" }\n";
        let dirs = "[[directory]]\nkind = \"file\"\n\
                    [[directory]]\nkind = \"ldap\"\nurls = [\"ldaps://dc1.example.org\"]\nbase = \"dc=example,dc=org\"\n\
                    [[directory]]\nkind = \"ldap\"\nname = \"ad\"\npreset = \"active_directory\"\n\
                    urls = [\"ldaps://ad.example.org\"]\nbase = \"dc=ad,dc=example,dc=org\"\n";
        // The first LDAP directory (the file directory is skipped).
        let r = parse(&format!("{dirs}{radius}")).unwrap().radius.unwrap();
        let PrimaryAuth::Ldap(spec) = &r.primary else {
            panic!("{:?}", r.primary)
        };
        assert_eq!(spec.name, "ldaps://dc1.example.org");
        assert!(!spec.active_directory);
        // The one named.
        let named = radius.replace("\"ldap\" }", "\"ldap\", directory = \"ad\" }");
        let r = parse(&format!("{dirs}{named}")).unwrap().radius.unwrap();
        let PrimaryAuth::Ldap(spec) = &r.primary else {
            panic!("{:?}", r.primary)
        };
        assert!(spec.active_directory && spec.name == "ad", "{spec:?}");
        // No such name: the names there are.
        let e = err_of(&format!(
            "{dirs}{}",
            radius.replace("\"ldap\" }", "\"ldap\", directory = \"dc\" }")
        ));
        assert!(
            e.contains("radius.primary.directory")
                && e.contains("no LDAP directory is named \"dc\"")
                && e.contains("\"ldaps://dc1.example.org\", \"ad\""),
            "{e}"
        );
        // No LDAP directory at all.
        let e = err_of(radius);
        assert!(
            e.contains("radius.primary.kind") && e.contains("kind = \"ldap\""),
            "{e}"
        );
        // Unknown keys are refused.
        let e = err_of(&format!(
            "{dirs}{}",
            radius.replace("\"ldap\" }", "\"ldap\", service = \"x\" }")
        ));
        assert!(e.contains("service"), "{e}");
    }

    #[test]
    fn short_secret_threshold_and_advice_agree() {
        assert_eq!(RADIUS_SECRET_MIN_BYTES, 16);
        let w = short_secret_warning("vpn", 15).unwrap();
        assert!(
            w.contains("only 15 bytes") && w.contains("at least 16 random characters"),
            "{w}"
        );
        assert!(short_secret_warning("vpn", 12).is_some());
        assert_eq!(short_secret_warning("vpn", 16), None);
    }
}
