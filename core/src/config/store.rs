//! Where state and phone numbers are kept and where the audit goes:
//! `[[directory]]` ([`DirectorySpec`]), `[store]` ([`StoreSpec`]) and
//! `[audit]` ([`AuditSettings`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::check::{Checker, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum RawDirectory {
    File { path: Option<String> },
    Gecos { field: Option<String> },
    Ldap(Box<crate::directory::ldap::RawLdap>),
}

/// Flat rather than tagged: `kind` may be left out (sqlite).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    kind: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    busy_timeout: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    db: Option<Spanned<i64>>,
    key_prefix: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    sentinels: Option<Spanned<Vec<String>>>,
    master_name: Option<Spanned<String>>,
    sentinel_username: Option<Spanned<String>>,
    sentinel_password_file: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    syslog: Option<bool>,
    file: Option<Spanned<String>>,
}

/// One source of phone numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectorySpec {
    /// A TOML file of `user = "+number"` lines.
    File {
        /// Absolute; default `/etc/smsotp/phones.toml`.
        path: PathBuf,
    },
    /// A comma-separated field of the passwd GECOS entry (0-based index).
    Gecos {
        /// 0 full name, 1 room, 2 work phone, 3 home phone, 4 other (the
        /// default).
        field: usize,
    },
    /// An LDAP server or Active Directory (`directory/ldap/config.rs`).
    Ldap(Box<crate::directory::ldap::LdapSpec>),
}

/// `[store]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `kind = "redis"`: a Redis (or Valkey) server several hosts share.
    Redis(Box<RedisSpec>),
    /// `kind = "sqlite"` (the default): one database file on this host.
    Sqlite {
        /// Absolute; default `/var/lib/smsotp/state.db`. The code key
        /// defaults to `otp.key` in the same directory.
        path: PathBuf,
        /// How long a write waits for another process's lock, 100ms to 60s
        /// (default 5s).
        busy_timeout: Duration,
    },
}

/// Where a Redis server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisAddr {
    /// `redis://host:port` (port 6379 if left out).
    Tcp {
        /// A name or an address (an IPv6 address without its brackets).
        host: String,
        /// The TCP port.
        port: u16,
    },
    /// `unix:///path` or `redis+unix:///path`.
    Unix(PathBuf),
    /// `rediss://host:port` (port 6379 if left out): TLS, the server's
    /// certificate checked against `ca_file` or the system's CA bundle.
    Tls {
        /// A name or an address (an IPv6 address without its brackets);
        /// the certificate must name it.
        host: String,
        /// The TCP port.
        port: u16,
        /// `store.ca_file`: the trust anchors (PEM) instead of the
        /// system's CA bundle.
        ca_file: Option<PathBuf>,
    },
    /// `sentinels` and `master_name`: the master is whichever server the
    /// sentinels name, asked again after a connection breaks.
    Sentinel(Box<SentinelSpec>),
}

/// `store.sentinels` and the keys that go with it, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelSpec {
    /// The sentinels, asked in this order: host (an IPv6 address without
    /// its brackets) and port (26379 if left out).
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the master by (`master_name`).
    pub master_name: String,
    /// The sentinels' ACL user (`sentinel_username`); `None`: the default.
    pub username: Option<String>,
    /// A root-only file holding the sentinels' password
    /// (`sentinel_password_file`), read each time a sentinel is asked.
    pub password_file: Option<PathBuf>,
}

/// `[store] kind = "redis"`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSpec {
    /// `store.url` as written, or for a sentinel set
    /// `sentinel://host:port,host:port/master_name` (what messages name the
    /// store by).
    pub url: String,
    /// Where the server listens, from `url` or `sentinels`.
    pub addr: RedisAddr,
    /// The ACL user (`AUTH username password`); `None`: the default user.
    pub username: Option<String>,
    /// A root-only file holding the password (one trailing newline is
    /// dropped); read each time the store connects.
    pub password_file: Option<PathBuf>,
    /// The logical database, 0 to 15 (default 0).
    pub db: i64,
    /// Put before every key, so several sites can share one server
    /// (default `"smsotp:"`).
    pub key_prefix: String,
    /// How long connecting may take, 100ms to 60s (default 2s).
    pub connect_timeout: Duration,
    /// How long one command may take, 100ms to 60s (default 2s).
    pub timeout: Duration,
}

/// `[audit]`, validated.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Send audit lines to syslog (default true).
    pub syslog: bool,
    /// Also append one JSON line per event here (root-only file).
    pub file: Option<PathBuf>,
}

/// Validates the `[[directory]]` tables, in order; none means the default
/// phone file.
pub(super) fn directories(
    c: &Checker<'_>,
    raw: &[Spanned<RawDirectory>],
) -> Result<Vec<DirectorySpec>, ConfigError> {
    let mut directories = Vec::new();
    for (i, d) in raw.iter().enumerate() {
        let key = format!("directory[{i}]");
        directories.push(match d.get_ref() {
            RawDirectory::File { path } => DirectorySpec::File {
                path: c.absolute(
                    path.as_deref().unwrap_or("/etc/smsotp/phones.toml"),
                    d.span(),
                    &format!("{key}.path"),
                )?,
            },
            RawDirectory::Gecos { field } => DirectorySpec::Gecos {
                field: gecos_field(field.as_deref().unwrap_or("other"))
                    .map_err(|m| c.err(d.span(), &format!("{key}.field"), m))?,
            },
            RawDirectory::Ldap(raw) => DirectorySpec::Ldap(Box::new(
                crate::directory::ldap::validate(c, d.span(), &key, raw)?,
            )),
        });
    }
    if directories.is_empty() {
        directories.push(DirectorySpec::File {
            path: PathBuf::from("/etc/smsotp/phones.toml"),
        });
    }
    Ok(directories)
}

/// Validates `[store]`; the default path is in `state`.
pub(super) fn store(
    c: &Checker<'_>,
    st: &RawStore,
    state: &Path,
) -> Result<StoreSpec, ConfigError> {
    let redis = c.choice(
        &st.kind,
        "store.kind",
        &[("sqlite", false), ("redis", true)],
        false,
    )?;
    if redis {
        return redis_store(c, st);
    }
    for (key, set) in [
        ("store.url", st.url.as_ref().map(Spanned::span)),
        ("store.username", st.username.as_ref().map(Spanned::span)),
        (
            "store.password_file",
            st.password_file.as_ref().map(Spanned::span),
        ),
        ("store.db", st.db.as_ref().map(Spanned::span)),
        (
            "store.key_prefix",
            st.key_prefix.as_ref().map(Spanned::span),
        ),
        (
            "store.connect_timeout",
            st.connect_timeout.as_ref().map(Spanned::span),
        ),
        ("store.timeout", st.timeout.as_ref().map(Spanned::span)),
        ("store.sentinels", st.sentinels.as_ref().map(Spanned::span)),
        (
            "store.master_name",
            st.master_name.as_ref().map(Spanned::span),
        ),
        (
            "store.sentinel_username",
            st.sentinel_username.as_ref().map(Spanned::span),
        ),
        (
            "store.sentinel_password_file",
            st.sentinel_password_file.as_ref().map(Spanned::span),
        ),
        ("store.ca_file", st.ca_file.as_ref().map(Spanned::span)),
    ] {
        if let Some(span) = set {
            return Err(c.err(
                span,
                key,
                "is a setting of the redis store; set kind = \"redis\" or remove it",
            ));
        }
    }
    Ok(StoreSpec::Sqlite {
        path: match &st.path {
            None => state.join("state.db"),
            Some(p) => c.absolute(p.get_ref(), p.span(), "store.path")?,
        },
        busy_timeout: c.duration_in(
            &st.busy_timeout,
            "store.busy_timeout",
            Duration::from_millis(100),
            Duration::from_secs(60),
            Duration::from_secs(5),
        )?,
    })
}

/// Validates `[store]` with `kind = "redis"`.
fn redis_store(c: &Checker<'_>, st: &RawStore) -> Result<StoreSpec, ConfigError> {
    for (key, set) in [
        ("store.path", st.path.as_ref().map(Spanned::span)),
        (
            "store.busy_timeout",
            st.busy_timeout.as_ref().map(Spanned::span),
        ),
    ] {
        if let Some(span) = set {
            return Err(c.err(
                span,
                key,
                "is a setting of the sqlite store; remove it (a redis store is named by url)",
            ));
        }
    }
    let (url, addr) = match (&st.url, &st.sentinels) {
        (Some(_), Some(s)) => {
            return Err(c.err(
                s.span(),
                "store.sentinels",
                "and store.url both name the server; keep url for one server, or sentinels (with master_name) to follow failovers, not both",
            ))
        }
        (None, None) => {
            return Err(c.err(
                st.kind.as_ref().map_or(0..0, Spanned::span),
                "store.url",
                "is missing; a redis store needs url = \"redis://host:6379\" or \"unix:///run/redis/redis.sock\", or sentinels = [\"host:26379\", ...] with master_name",
            ))
        }
        (Some(url), None) => {
            for (key, set) in [
                ("store.master_name", st.master_name.as_ref().map(Spanned::span)),
                (
                    "store.sentinel_username",
                    st.sentinel_username.as_ref().map(Spanned::span),
                ),
                (
                    "store.sentinel_password_file",
                    st.sentinel_password_file.as_ref().map(Spanned::span),
                ),
            ] {
                if let Some(span) = set {
                    return Err(c.err(
                        span,
                        key,
                        "goes with store.sentinels; remove it, or replace url with sentinels = [\"host:26379\", ...]",
                    ));
                }
            }
            let mut addr =
                redis_addr(url.get_ref()).map_err(|m| c.err(url.span(), "store.url", m))?;
            match (&mut addr, &st.ca_file) {
                (RedisAddr::Tls { ca_file, .. }, Some(p)) => {
                    *ca_file = Some(c.absolute(p.get_ref(), p.span(), "store.ca_file")?);
                }
                (RedisAddr::Tls { .. }, None) | (_, None) => {}
                (_, Some(p)) => {
                    return Err(c.err(
                        p.span(),
                        "store.ca_file",
                        "goes with a TLS url (rediss://host:6379); remove it, or write the url with rediss://",
                    ))
                }
            }
            (url.get_ref().clone(), addr)
        }
        (None, Some(list)) => {
            if let Some(p) = &st.ca_file {
                return Err(c.err(
                    p.span(),
                    "store.ca_file",
                    "goes with a TLS url (rediss://); TLS to sentinels is not supported yet, remove it",
                ));
            }
            sentinel_set(c, st, list)?
        }
    };
    let username = match &st.username {
        None => None,
        Some(u) if u.get_ref().is_empty() || u.get_ref().chars().any(|ch| ch.is_whitespace() || ch.is_control()) => {
            return Err(c.err(
                u.span(),
                "store.username",
                format!("{:?} is not a Redis user name; write the ACL user without spaces, or leave it out for the default user", u.get_ref()),
            ))
        }
        Some(u) => Some(u.get_ref().clone()),
    };
    let password_file = st
        .password_file
        .as_ref()
        .map(|p| c.absolute(p.get_ref(), p.span(), "store.password_file"))
        .transpose()?;
    if username.is_some() && password_file.is_none() {
        return Err(c.err(
            st.username.as_ref().map_or(0..0, Spanned::span),
            "store.username",
            "needs store.password_file too (a root-only file holding the user's password)",
        ));
    }
    let db = c.int_in(&st.db, "store.db", 0..=15, 0)?;
    let key_prefix = match &st.key_prefix {
        None => "smsotp:".to_owned(),
        Some(p) if p.get_ref().chars().any(|ch| ch.is_whitespace() || ch.is_control()) || p.get_ref().len() > 64 => {
            return Err(c.err(
                p.span(),
                "store.key_prefix",
                format!("{:?} is not a usable key prefix; use up to 64 characters without spaces, e.g. \"smsotp:site1:\"", p.get_ref()),
            ))
        }
        Some(p) => p.get_ref().clone(),
    };
    let span = |min, max, default, v: &Option<Spanned<String>>, key| {
        c.duration_in(v, key, min, max, default)
    };
    Ok(StoreSpec::Redis(Box::new(RedisSpec {
        url,
        addr,
        username,
        password_file,
        db,
        key_prefix,
        connect_timeout: span(
            Duration::from_millis(100),
            Duration::from_secs(60),
            Duration::from_secs(2),
            &st.connect_timeout,
            "store.connect_timeout",
        )?,
        timeout: span(
            Duration::from_millis(100),
            Duration::from_secs(60),
            Duration::from_secs(2),
            &st.timeout,
            "store.timeout",
        )?,
    })))
}

/// Validates `store.sentinels` and the keys that go with it; gives the
/// name messages use (`sentinel://h1:26379,h2:26379/name`) and the address.
fn sentinel_set(
    c: &Checker<'_>,
    st: &RawStore,
    list: &Spanned<Vec<String>>,
) -> Result<(String, RedisAddr), ConfigError> {
    let err = |m: String| c.err(list.span(), "store.sentinels", m);
    if list.get_ref().is_empty() {
        return Err(err(
            "is empty; list the sentinels, e.g. sentinels = [\"10.0.0.5:26379\", \"10.0.0.6:26379\", \"10.0.0.7:26379\"]"
                .to_owned(),
        ));
    }
    let mut sentinels: Vec<(String, u16)> = Vec::new();
    for entry in list.get_ref() {
        let (host, port) = host_port(entry, 26379).map_err(|m| {
            err(format!(
                "\"{entry}\": {m}; write \"host:26379\" or \"[::1]:26379\""
            ))
        })?;
        if sentinels.iter().any(|(h, p)| *h == host && *p == port) {
            return Err(err(format!(
                "\"{entry}\" is listed twice; list each sentinel once"
            )));
        }
        sentinels.push((host, port));
    }
    let Some(name) = &st.master_name else {
        return Err(c.err(
            list.span(),
            "store.master_name",
            "is missing; with store.sentinels set master_name to the name the sentinels monitor the master by (sentinel monitor <name> ...), e.g. master_name = \"mymaster\"",
        ));
    };
    let master_name = name.get_ref();
    if master_name.is_empty()
        || master_name.len() > 128
        || master_name
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control() || ch == '/' || ch == ',')
    {
        return Err(c.err(
            name.span(),
            "store.master_name",
            format!("{master_name:?} is not a sentinel master name; write the name from \"sentinel monitor <name> ...\" (no spaces, / or ,), e.g. \"mymaster\""),
        ));
    }
    let username = match &st.sentinel_username {
        None => None,
        Some(u) if u.get_ref().is_empty() || u.get_ref().chars().any(|ch| ch.is_whitespace() || ch.is_control()) => {
            return Err(c.err(
                u.span(),
                "store.sentinel_username",
                format!("{:?} is not a Redis user name; write the sentinels' ACL user without spaces, or leave it out for the default user", u.get_ref()),
            ))
        }
        Some(u) => Some(u.get_ref().clone()),
    };
    let password_file = st
        .sentinel_password_file
        .as_ref()
        .map(|p| c.absolute(p.get_ref(), p.span(), "store.sentinel_password_file"))
        .transpose()?;
    if username.is_some() && password_file.is_none() {
        return Err(c.err(
            st.sentinel_username.as_ref().map_or(0..0, Spanned::span),
            "store.sentinel_username",
            "needs store.sentinel_password_file too (a root-only file holding the sentinels' password)",
        ));
    }
    let spec = SentinelSpec {
        sentinels,
        master_name: master_name.clone(),
        username,
        password_file,
    };
    Ok((spec.url(), RedisAddr::Sentinel(Box::new(spec))))
}

impl SentinelSpec {
    /// `sentinel://h1:26379,[::1]:26379/name`: what messages name a
    /// sentinel-managed store by.
    pub fn url(&self) -> String {
        let list: Vec<String> = self
            .sentinels
            .iter()
            .map(|(h, p)| join_host_port(h, *p))
            .collect();
        format!("sentinel://{}/{}", list.join(","), self.master_name)
    }
}

/// `host:port`, with brackets around an IPv6 address.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Splits `host[:port]` or `[v6][:port]`; the message says what is wrong.
fn host_port(text: &str, default: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err("it has an unclosed [".to_owned());
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err(format!("\"{after}\" after ] is not :port")),
            },
        }
    } else {
        match text.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err("an IPv6 address needs brackets".to_owned())
            }
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    if host.is_empty() || host.chars().any(|ch| ch.is_whitespace() || ch == '/') {
        return Err("it names no host".to_owned());
    }
    let port = match port {
        None => default,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("\"{p}\" is not a port (1 to 65535)")),
        },
    };
    Ok((host.to_owned(), port))
}

/// Reads `store.url`: `redis://host[:port]`, `rediss://host[:port]`
/// (TLS; `ca_file` is added by the caller), `unix:///path` or
/// `redis+unix:///path`.
fn redis_addr(url: &str) -> Result<RedisAddr, String> {
    for scheme in ["unix://", "redis+unix://"] {
        if let Some(path) = url.strip_prefix(scheme) {
            let path = Path::new(path);
            if !path.is_absolute() {
                return Err(format!(
                    "\"{url}\" does not name an absolute socket path; write {scheme}/run/redis/redis.sock"
                ));
            }
            return Ok(RedisAddr::Unix(path.to_owned()));
        }
    }
    let (tls, rest) = match (url.strip_prefix("redis://"), url.strip_prefix("rediss://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => {
            return Err(format!(
                "\"{url}\" is not a Redis URL; write redis://host:6379, rediss://host:6379 (TLS) or unix:///run/redis/redis.sock"
            ))
        }
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        // Not echoed: what is before the @ may be a password.
        return Err(
            "the URL holds credentials (user:password@); remove them and set store.username and store.password_file instead"
                .to_owned(),
        );
    }
    if rest.contains('/') || rest.contains('?') {
        return Err(format!(
            "\"{url}\" has a path or options; write only redis://host:port and set the database with store.db"
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err(format!(
                "\"{url}\" has an unclosed [; write redis://[::1]:6379"
            ));
        };
        (host, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(format!("\"{url}\" names no host; write redis://host:6379"));
    }
    let port = match port {
        None => 6379,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(format!(
                    "\"{url}\": \"{p}\" is not a port; use a number from 1 to 65535"
                ))
            }
        },
    };
    if tls {
        return Ok(RedisAddr::Tls {
            host: host.to_owned(),
            port,
            ca_file: None,
        });
    }
    Ok(RedisAddr::Tcp {
        host: host.to_owned(),
        port,
    })
}

/// Validates `[audit]`.
pub(super) fn audit(c: &Checker<'_>, a: &RawAudit) -> Result<AuditSettings, ConfigError> {
    Ok(AuditSettings {
        syslog: a.syslog.unwrap_or(true),
        file: a
            .file
            .as_ref()
            .map(|s| c.absolute(s.get_ref(), s.span(), "audit.file"))
            .transpose()?,
    })
}

/// GECOS is "full name,room,work phone,home phone,other".
fn gecos_field(name: &str) -> Result<usize, String> {
    match name {
        "full_name" => Ok(0),
        "room" => Ok(1),
        "work_phone" => Ok(2),
        "home_phone" => Ok(3),
        "other" => Ok(4),
        other => Err(format!(
            "\"{other}\" is not a GECOS field; use \"work_phone\", \"home_phone\", \"other\", \"room\" or \"full_name\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{err_of, parse};
    use super::*;

    #[test]
    fn redis_store_defaults() {
        let c = parse("[store]\nkind = \"redis\"\nurl = \"redis://10.0.0.5\"\n").unwrap();
        let StoreSpec::Redis(r) = &c.store else {
            panic!("{:?}", c.store)
        };
        assert_eq!(
            r.addr,
            RedisAddr::Tcp {
                host: "10.0.0.5".into(),
                port: 6379
            }
        );
        assert_eq!(r.key_prefix, "smsotp:");
        assert_eq!(r.db, 0);
        assert_eq!(r.connect_timeout, Duration::from_secs(2));
        assert_eq!(r.timeout, Duration::from_secs(2));
        assert_eq!(r.username, None);
        // No state directory of its own: the code key stays in /var/lib/smsotp.
        assert_eq!(c.otp.key_file, Path::new("/var/lib/smsotp/otp.key"));
        assert_eq!(c.store.local_file(), None);
        assert_eq!(c.store.kind(), "redis");
        assert_eq!(c.store.location(), "redis://10.0.0.5");
    }

    #[test]
    fn redis_store_settings() {
        let c = parse(
            "[store]\nkind = \"redis\"\nurl = \"redis+unix:///run/redis/redis.sock\"\n\
             username = \"smsotp\"\npassword_file = \"/etc/smsotp/redis.pass\"\ndb = 3\n\
             key_prefix = \"smsotp:site1:\"\nconnect_timeout = \"500ms\"\ntimeout = \"1s\"\n",
        )
        .unwrap();
        let StoreSpec::Redis(r) = &c.store else {
            panic!("{:?}", c.store)
        };
        assert_eq!(r.addr, RedisAddr::Unix("/run/redis/redis.sock".into()));
        assert_eq!(r.username.as_deref(), Some("smsotp"));
        assert_eq!(
            r.password_file.as_deref(),
            Some(Path::new("/etc/smsotp/redis.pass"))
        );
        assert_eq!((r.db, r.key_prefix.as_str()), (3, "smsotp:site1:"));
        assert_eq!(r.connect_timeout, Duration::from_millis(500));
        let shown = c.store.settings();
        assert_eq!(shown[0], ("kind", "redis".to_owned()));
        assert!(shown.contains(&("db", "3".to_owned())), "{shown:?}");
        let v6 = parse("[store]\nkind = \"redis\"\nurl = \"redis://[::1]:7000\"\n").unwrap();
        let StoreSpec::Redis(r) = &v6.store else {
            panic!()
        };
        assert_eq!(
            r.addr,
            RedisAddr::Tcp {
                host: "::1".into(),
                port: 7000
            }
        );
    }

    #[test]
    fn redis_store_errors_say_what_to_do() {
        let r = |rest: &str| err_of(&format!("[store]\nkind = \"redis\"\n{rest}"));
        let e = r("");
        assert!(e.contains("store.url") && e.contains("is missing"), "{e}");
        let e = r("url = \"redis://r.example\"\nca_file = \"/etc/smsotp/redis-ca.pem\"\n");
        assert!(e.contains("goes with a TLS url"), "{e}");
        let e = r("url = \"rediss://r.example\"\nca_file = \"ca.pem\"\n");
        assert!(
            e.contains("store.ca_file") && e.contains("not an absolute path"),
            "{e}"
        );
        let e = r("url = \"http://r.example\"\n");
        assert!(e.contains("is not a Redis URL"), "{e}");
        let e = r("url = \"redis://u:pw@r.example\"\n");
        assert!(
            e.contains("password_file instead") && !e.contains("pw@"),
            "{e}"
        );
        let e = r("url = \"redis://r.example:99999\"\n");
        assert!(e.contains("is not a port"), "{e}");
        let e = r("url = \"redis://r.example/2\"\n");
        assert!(e.contains("store.db"), "{e}");
        let e = r("url = \"unix://run/redis.sock\"\n");
        assert!(e.contains("absolute socket path"), "{e}");
        let e = r("url = \"redis://\"\n");
        assert!(e.contains("names no host"), "{e}");
        let e = r("url = \"redis://r\"\ndb = 16\n");
        assert!(e.contains("store.db") && e.contains("0 to 15"), "{e}");
        let e = r("url = \"redis://r\"\nusername = \"smsotp\"\n");
        assert!(e.contains("needs store.password_file"), "{e}");
        let e = r("url = \"redis://r\"\nusername = \"a b\"\npassword_file = \"/p\"\n");
        assert!(e.contains("not a Redis user name"), "{e}");
        let e = r("url = \"redis://r\"\npassword_file = \"p\"\n");
        assert!(e.contains("not an absolute path"), "{e}");
        let e = r("url = \"redis://r\"\nkey_prefix = \"a b\"\n");
        assert!(e.contains("not a usable key prefix"), "{e}");
        let e = r("url = \"redis://r\"\ntimeout = \"2min\"\n");
        assert!(
            e.contains("store.timeout") && e.contains("out of range"),
            "{e}"
        );
        let e = r("url = \"redis://r\"\nconnect_timeout = \"1ms\"\n");
        assert!(e.contains("store.connect_timeout"), "{e}");
        let e = r("url = \"redis://r\"\npath = \"/var/lib/x.db\"\n");
        assert!(e.contains("setting of the sqlite store"), "{e}");
        let e = err_of("[store]\nurl = \"redis://r\"\n");
        assert!(
            e.contains("kind = \\\"redis\\\"") || e.contains("kind = \"redis\""),
            "{e}"
        );
    }

    #[test]
    fn redis_tls_url_and_ca_file() {
        let c = parse(
            "[store]\nkind = \"redis\"\nurl = \"rediss://r.example:6380\"\nca_file = \"/etc/smsotp/redis-ca.pem\"\n",
        )
        .unwrap();
        let StoreSpec::Redis(r) = &c.store else {
            panic!("{:?}", c.store)
        };
        assert_eq!(
            r.addr,
            RedisAddr::Tls {
                host: "r.example".into(),
                port: 6380,
                ca_file: Some("/etc/smsotp/redis-ca.pem".into())
            }
        );
        assert_eq!(c.store.location(), "rediss://r.example:6380");
        let shown = c.store.settings();
        assert!(
            shown.contains(&("ca_file", "/etc/smsotp/redis-ca.pem".to_owned())),
            "{shown:?}"
        );
        let c = parse("[store]\nkind = \"redis\"\nurl = \"rediss://[::1]\"\n").unwrap();
        let StoreSpec::Redis(r) = &c.store else {
            panic!()
        };
        assert_eq!(
            r.addr,
            RedisAddr::Tls {
                host: "::1".into(),
                port: 6379,
                ca_file: None
            }
        );
        assert!(c
            .store
            .settings()
            .contains(&("ca_file", "(none: the system's CA bundle)".to_owned())));
    }

    #[test]
    fn redis_sentinel_settings() {
        let c = parse(
            "[store]\nkind = \"redis\"\nsentinels = [\"10.0.0.5\", \"10.0.0.6:26380\", \"[::1]:26381\"]\n\
             master_name = \"mymaster\"\nsentinel_username = \"sentinel-user\"\n\
             sentinel_password_file = \"/etc/smsotp/sentinel.pass\"\n",
        )
        .unwrap();
        let StoreSpec::Redis(r) = &c.store else {
            panic!("{:?}", c.store)
        };
        let RedisAddr::Sentinel(s) = &r.addr else {
            panic!("{:?}", r.addr)
        };
        assert_eq!(
            s.sentinels,
            [
                ("10.0.0.5".to_owned(), 26379),
                ("10.0.0.6".to_owned(), 26380),
                ("::1".to_owned(), 26381)
            ]
        );
        assert_eq!(s.master_name, "mymaster");
        assert_eq!(s.username.as_deref(), Some("sentinel-user"));
        assert_eq!(
            s.password_file.as_deref(),
            Some(Path::new("/etc/smsotp/sentinel.pass"))
        );
        assert_eq!(
            c.store.location(),
            "sentinel://10.0.0.5:26379,10.0.0.6:26380,[::1]:26381/mymaster"
        );
        let shown = c.store.settings();
        assert_eq!(shown[0], ("kind", "redis".to_owned()));
        assert!(
            shown.contains(&(
                "sentinels",
                "10.0.0.5:26379, 10.0.0.6:26380, [::1]:26381".to_owned()
            )),
            "{shown:?}"
        );
        assert!(shown.contains(&("master_name", "mymaster".to_owned())));
        assert!(shown.contains(&(
            "sentinel_password_file",
            "/etc/smsotp/sentinel.pass".to_owned()
        )));
        assert!(!shown.iter().any(|(k, _)| *k == "url"), "{shown:?}");
    }

    #[test]
    fn redis_sentinel_errors_say_what_to_do() {
        let r = |rest: &str| err_of(&format!("[store]\nkind = \"redis\"\n{rest}"));
        let e = r("url = \"redis://r\"\nsentinels = [\"s1\"]\nmaster_name = \"m\"\n");
        assert!(
            e.contains("store.sentinels") && e.contains("not both"),
            "{e}"
        );
        let e = r("sentinels = [\"s1\"]\n");
        assert!(
            e.contains("store.master_name") && e.contains("is missing"),
            "{e}"
        );
        let e = r("sentinels = []\nmaster_name = \"m\"\n");
        assert!(e.contains("is empty"), "{e}");
        let e = r("sentinels = [\"s1:0\"]\nmaster_name = \"m\"\n");
        assert!(e.contains("is not a port"), "{e}");
        let e = r("sentinels = [\"::1\"]\nmaster_name = \"m\"\n");
        assert!(e.contains("needs brackets"), "{e}");
        let e = r("sentinels = [\"[::1\"]\nmaster_name = \"m\"\n");
        assert!(e.contains("unclosed ["), "{e}");
        let e = r("sentinels = [\"s1\", \"s1:26379\"]\nmaster_name = \"m\"\n");
        assert!(e.contains("listed twice"), "{e}");
        let e = r("sentinels = [\"s1\"]\nmaster_name = \"my master\"\n");
        assert!(e.contains("not a sentinel master name"), "{e}");
        let e = r("sentinels = [\"s1\"]\nmaster_name = \"m\"\nsentinel_username = \"u\"\n");
        assert!(e.contains("needs store.sentinel_password_file"), "{e}");
        let e = r("sentinels = [\"s1\"]\nmaster_name = \"m\"\nsentinel_password_file = \"p\"\n");
        assert!(e.contains("not an absolute path"), "{e}");
        let e = r("url = \"redis://r\"\nmaster_name = \"m\"\n");
        assert!(e.contains("goes with store.sentinels"), "{e}");
        let e = r("");
        assert!(e.contains("sentinels"), "{e}");
        let e = err_of("[store]\nsentinels = [\"s1\"]\n");
        assert!(e.contains("setting of the redis store"), "{e}");
    }
}
