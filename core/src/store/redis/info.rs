//! What `smsotp doctor` asks a Redis store's server, read only: who it is
//! (Redis or Valkey, which version), how long a round trip takes, how it
//! keeps data across a restart (`INFO persistence`), its place in
//! replication (`INFO replication`), and the code key fingerprint the
//! store was first used with. Parsing is here, next to the store, so the
//! admin tool holds no Redis knowledge beyond what to say about it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::RedisStore;
use crate::store::StoreError;

/// The `field:value` lines of an `INFO` reply (section headers, blank
/// lines and anything without a colon are skipped).
pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// What the server says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// "redis", or what `server_name` says ("valkey").
    pub name: String,
    /// Its version ("7.0.15"); "unknown" if it does not say.
    pub version: String,
    /// One PING on an open connection.
    pub round_trip: Duration,
    /// `aof_enabled:1`: every write is logged (append-only file).
    pub aof: bool,
    /// The RDB snapshot rules (`CONFIG GET save`, e.g. "3600 1 300
    /// 100"): empty if there are none, `None` if the server does not let
    /// this user read its config.
    pub rdb_save: Option<String>,
    /// `role` of `INFO replication`: "master" or "slave" (Redis's words).
    pub role: String,
    /// `connected_slaves`: replicas following it now.
    pub connected_replicas: u32,
    /// The code key fingerprint the store was first used with, if any.
    pub key_fingerprint: Option<String>,
    /// The server's refusal of `INFO` (an ACL that does not allow it to
    /// this user): name, version, persistence and role are then unknown.
    pub info_refused: Option<String>,
}

impl ServerInfo {
    /// From the three `INFO` replies (parsed with [`parse_info`]).
    pub fn from_sections(
        server: &BTreeMap<String, String>,
        persistence: &BTreeMap<String, String>,
        replication: &BTreeMap<String, String>,
    ) -> Self {
        let name = server
            .get("server_name")
            .cloned()
            .unwrap_or_else(|| "redis".to_owned());
        let version = server
            .get(&format!("{name}_version"))
            .or_else(|| server.get("redis_version"))
            .cloned()
            .unwrap_or_else(|| "unknown".to_owned());
        ServerInfo {
            name,
            version,
            round_trip: Duration::ZERO,
            aof: persistence.get("aof_enabled").is_some_and(|v| v == "1"),
            rdb_save: None,
            role: replication
                .get("role")
                .cloned()
                .unwrap_or_else(|| "unknown".to_owned()),
            connected_replicas: replication
                .get("connected_slaves")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            key_fingerprint: None,
            info_refused: None,
        }
    }
}

/// A reply that is the server's error (NOPERM, an unknown command), not a
/// broken connection.
fn refused(e: &redis::RedisError) -> bool {
    !(e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error())
}

/// The three `INFO` sections doctor reads.
type Sections = (String, String, String);

impl RedisStore {
    /// Asks the server about itself ([`ServerInfo`]): connects if needed
    /// (an error then says why, naming the URL and the timeout), times
    /// one PING, then reads `INFO server`, `INFO persistence` and `INFO
    /// replication` in one round trip (a server that refuses `INFO` to
    /// this user gives [`ServerInfo::info_refused`], not an error), and
    /// the key fingerprint. Writes nothing.
    pub fn server_info(&self) -> Result<ServerInfo, StoreError> {
        self.run(|c| redis::cmd("PING").query::<()>(c))?;
        let started = Instant::now();
        self.run(|c| redis::cmd("PING").query::<()>(c))?;
        let round_trip = started.elapsed();
        let sections: Result<Sections, String> = self.run(|c| {
            match redis::pipe()
                .cmd("INFO")
                .arg("server")
                .cmd("INFO")
                .arg("persistence")
                .cmd("INFO")
                .arg("replication")
                .query::<Sections>(c)
            {
                Ok(v) => Ok(Ok(v)),
                Err(e) if refused(&e) => Ok(Err(e.to_string())),
                Err(e) => Err(e),
            }
        })?;
        let key_fingerprint = self.stored_key_fingerprint()?;
        // CONFIG may be renamed away or denied by an ACL: then unknown.
        let save: Option<Vec<String>> = self
            .run(|c| redis::cmd("CONFIG").arg("GET").arg("save").query(c))
            .ok();
        let (server, persistence, replication) = sections.as_ref().map_or_else(
            |_| Default::default(),
            |(a, b, c)| (parse_info(a), parse_info(b), parse_info(c)),
        );
        let mut info = ServerInfo::from_sections(&server, &persistence, &replication);
        info.round_trip = round_trip;
        info.rdb_save = save.map(|v| v.get(1).cloned().unwrap_or_default());
        info.key_fingerprint = key_fingerprint;
        info.info_refused = sections.err();
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_sections_parse() {
        let server = parse_info("# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n");
        let persistence = parse_info("# Persistence\r\nloading:0\r\naof_enabled:1\r\n");
        let replication = parse_info("# Replication\r\nrole:master\r\nconnected_slaves:2\r\n");
        let i = ServerInfo::from_sections(&server, &persistence, &replication);
        assert_eq!(i.name, "redis");
        assert_eq!(i.version, "7.0.15");
        assert!(i.aof);
        assert_eq!(i.role, "master");
        assert_eq!(i.connected_replicas, 2);
    }

    #[test]
    fn valkey_names_itself() {
        let server =
            parse_info("# Server\nredis_version:7.2.4\nserver_name:valkey\nvalkey_version:8.0.1\n");
        let i = ServerInfo::from_sections(&server, &parse_info(""), &parse_info(""));
        assert_eq!((i.name.as_str(), i.version.as_str()), ("valkey", "8.0.1"));
        assert!(!i.aof);
        assert_eq!((i.role.as_str(), i.connected_replicas), ("unknown", 0));
    }
}
