//! `smsotp doctor` on `[store] kind = "redis"` (issue #19 point 6): the
//! connection (server, version, round trip), how the server keeps data
//! across a restart, its place in replication, and whether this host's
//! code key is the one the store was first used with. Read only: nothing
//! is written to the server here. The password file's modes are checked
//! with the other secret files (`doctor.rs`, `file_modes`).
//!
//! What the server says is read by the core
//! (`smsotp_core::store::redis::info`); this file only decides what to
//! tell the admin.

use std::time::Duration;

use smsotp_core::config::{human_duration, Config, RedisAddr, RedisSpec};
use smsotp_core::files::FileError;
use smsotp_core::otp::{KeyError, OtpKey};
use smsotp_core::store::redis::info::ServerInfo;
use smsotp_core::store::redis::RedisStore;
use smsotp_core::store::{KeyFingerprint, StoreError};

use crate::report::{Finding, Level};

/// Whether doctor may go on to use the store (the users' checks open it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usable {
    Yes,
    /// Unreachable, or bound to another code key: opening it again would
    /// only repeat (and wait for) the same error.
    No,
}

/// Every check of a Redis store, in order; the connection first, and
/// nothing else when it fails.
pub(crate) fn check(cfg: &Config, spec: &RedisSpec, f: &mut Vec<Finding>) -> Usable {
    sentinel_view(spec, f);
    let store = RedisStore::lazy(spec);
    let info = match store.server_info() {
        Ok(i) => i,
        Err(e) => {
            f.push(unreachable(spec, &e));
            return Usable::No;
        }
    };
    f.push(connection(spec, &info));
    match &info.info_refused {
        None => {
            f.push(persistence(&info));
            f.push(replication(spec, &info));
        }
        Some(why) => f.push(
            Finding::new(
                Level::Warning,
                "store",
                format!(
                    "the server refuses INFO to user {} ({why}): its persistence and \
                     replication are not checked",
                    spec.username.as_deref().unwrap_or("default")
                ),
            )
            .fix(format!(
                "check by hand that the server has appendonly yes and appendfsync everysec, \
                 or allow INFO to this user (ACL: +info); {PERSISTENCE_FIX}"
            )),
        ),
    }
    key_fingerprint(cfg, spec, &store, &info, f)
}

fn timeouts(spec: &RedisSpec) -> String {
    format!(
        "store.connect_timeout {}, store.timeout {}",
        human_duration(spec.connect_timeout),
        human_duration(spec.timeout)
    )
}

fn unreachable(spec: &RedisSpec, e: &StoreError) -> Finding {
    let cause = std::error::Error::source(e).map_or_else(|| e.to_string(), |s| s.to_string());
    Finding::new(
        Level::Error,
        "store",
        format!(
            "redis store {}: cannot use it ({}): {cause}",
            spec.url,
            timeouts(spec)
        ),
    )
    .fix(
        "start the server or correct store.url; check store.username, store.password_file and \
         store.db against the server's ACL; a firewall that drops packets shows as a timeout",
    )
}

fn connection(spec: &RedisSpec, i: &ServerInfo) -> Finding {
    let user = spec.username.as_deref().unwrap_or("default");
    let auth = if spec.password_file.is_some() {
        "with a password"
    } else {
        "without a password"
    };
    let server = if i.info_refused.is_some() {
        "the server (which does not say what it is)".to_owned()
    } else {
        format!("{} {}", i.name, i.version)
    };
    Finding::new(
        Level::Ok,
        "store",
        format!(
            "redis store {}: {server} answers; user {user} {auth}, db {} selected, key prefix \
             {:?}; round trip {}",
            spec.url,
            spec.db,
            spec.key_prefix,
            round_trip(i.round_trip)
        ),
    )
}

fn round_trip(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1000 {
        format!("{us} µs")
    } else if us < 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{} ms", us / 1000)
    }
}

const PERSISTENCE_FIX: &str = "on the server: `CONFIG SET appendonly yes` and `CONFIG SET \
     appendfsync everysec`, then the same in its config file (appendonly yes, appendfsync \
     everysec) so it lasts";

fn persistence(i: &ServerInfo) -> Finding {
    if i.aof {
        return Finding::new(
            Level::Ok,
            "store",
            format!(
                "{} keeps every write in its append-only file (appendonly yes)",
                i.name
            ),
        );
    }
    let what = match i.rdb_save.as_deref() {
        Some("") => "and takes no RDB snapshots (save \"\"): a restart loses all of it".to_owned(),
        Some(rules) => format!(
            "and only RDB snapshots (save {rules}): a restart loses what was written since the \
             last one"
        ),
        None => "(its RDB snapshot rules cannot be read: CONFIG is not allowed to this user): a \
                 restart can lose what was written since the last snapshot"
            .to_owned(),
    };
    Finding::new(
        Level::Warning,
        "store",
        format!(
            "{} has the append-only file off (appendonly no) {what}; a lockout, a used backup \
             code (usable again) or an enrolled number can be lost",
            i.name
        ),
    )
    .fix(PERSISTENCE_FIX)
}

fn replication(spec: &RedisSpec, i: &ServerInfo) -> Finding {
    match i.role.as_str() {
        // Redis's word for a replica.
        "slave" | "replica" => Finding::new(
            Level::Error,
            "store",
            format!(
                "{} at {} is a replica: it refuses writes, so every login fails",
                i.name, spec.url
            ),
        )
        .fix("point store.url at the primary"),
        role => Finding::new(
            Level::Info,
            "store",
            format!(
                "replication: role {}, {} connected",
                if role == "master" { "primary" } else { role },
                smsotp_core::counted(i.connected_replicas as usize, "replica", "replicas")
            ),
        ),
    }
}

/// With `store.sentinels`: what each sentinel says the master is, each
/// asked within the timeouts; a sentinel that cannot answer is a warning
/// (the others may still lead to the master), sentinels that disagree
/// are a warning (a failover under way, or one cut off), none naming a
/// master is an error. Shown before the connection, which goes through
/// them.
fn sentinel_view(spec: &RedisSpec, f: &mut Vec<Finding>) {
    let RedisAddr::Sentinel(s) = &spec.addr else {
        return;
    };
    let answers = smsotp_core::store::redis::sentinel_view(spec);
    let mut masters: Vec<&str> = Vec::new();
    for a in &answers {
        match &a.master {
            Ok(m) => {
                if !masters.contains(&m.as_str()) {
                    masters.push(m);
                }
                f.push(Finding::new(
                    Level::Ok,
                    "store",
                    format!(
                        "sentinel {}: master {:?} is at {m}",
                        a.sentinel, s.master_name
                    ),
                ));
            }
            Err(why) => f.push(
                Finding::new(
                    Level::Warning,
                    "store",
                    format!(
                        "sentinel {}: no master {:?}: {why}",
                        a.sentinel, s.master_name
                    ),
                )
                .fix(
                    "start that sentinel or correct store.sentinels and store.master_name; \
                     check store.sentinel_username and store.sentinel_password_file against its \
                     ACL",
                ),
            ),
        }
    }
    if masters.is_empty() {
        f.push(
            Finding::new(
                Level::Error,
                "store",
                format!(
                    "no sentinel names a master {:?}: every login that needs the store fails",
                    s.master_name
                ),
            )
            .fix("start the sentinels (or correct store.sentinels); see the lines above"),
        );
    } else if masters.len() > 1 {
        f.push(
            Finding::new(
                Level::Warning,
                "store",
                format!(
                    "the sentinels disagree on the master ({}): a failover may be under way, or \
                     a sentinel is cut off from the others",
                    masters.join(", ")
                ),
            )
            .fix("run doctor again in a minute; if they still disagree, check each sentinel's SENTINEL masters"),
        );
    }
}

/// This host's key file against the fingerprint the store was first used
/// with. Reads the key without creating it.
fn key_fingerprint(
    cfg: &Config,
    spec: &RedisSpec,
    store: &RedisStore,
    info: &ServerInfo,
    f: &mut Vec<Finding>,
) -> Usable {
    let path = &cfg.otp.key_file;
    let key = match OtpKey::load(path) {
        Ok(k) => KeyFingerprint::of(&k, path),
        Err(KeyError::File(FileError::Read { source, .. }))
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            f.push(
                Finding::new(
                    Level::Warning,
                    "store",
                    format!(
                        "key fingerprint: this host has no code key yet ({} does not exist); \
                         the first login would make a new one, which {}",
                        path.display(),
                        match &info.key_fingerprint {
                            Some(fp) => format!(
                                "cannot match the key the store was first used with \
                                 (fingerprint {fp})"
                            ),
                            None => "every other host must then share".to_owned(),
                        }
                    ),
                )
                .fix(format!(
                    "copy the key file from a host that uses this store to {} (owned by root, \
                     mode 0600)",
                    path.display()
                )),
            );
            return Usable::Yes;
        }
        // An unreadable or unsafe key file is reported with the files.
        Err(_) => {
            f.push(Finding::new(
                Level::Info,
                "store",
                format!(
                    "key fingerprint: not compared, the code key {} cannot be read (see files)",
                    path.display()
                ),
            ));
            return Usable::Yes;
        }
    };
    match store.compare_key_fingerprint(&key) {
        Ok(true) => {
            f.push(Finding::new(
                Level::Ok,
                "store",
                format!(
                    "key fingerprint {}: the code key {} is the one the store was first used with",
                    key.fingerprint,
                    path.display()
                ),
            ));
            Usable::Yes
        }
        Ok(false) => {
            f.push(Finding::new(
                Level::Info,
                "store",
                format!(
                    "key fingerprint: the store holds none yet; the first use of it (a login, \
                     an smsotp command, this doctor's user checks) records this host's, {}: \
                     every host sharing the store must hold the same key file",
                    key.fingerprint
                ),
            ));
            Usable::Yes
        }
        Err(e @ StoreError::KeyMismatch(_)) => {
            f.push(
                Finding::new(
                    Level::Error,
                    "store",
                    format!("key fingerprint MISMATCH: {e}"),
                )
                .fix(format!(
                    "copy the key file from a host that works to {} (owned by root, mode 0600), \
                     or point otp.key_file at such a copy",
                    path.display()
                )),
            );
            Usable::No
        }
        Err(e) => {
            f.push(unreachable(spec, &e));
            Usable::No
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ServerInfo {
        ServerInfo {
            name: "valkey".into(),
            version: "8.0.1".into(),
            round_trip: Duration::from_micros(250),
            aof: false,
            rdb_save: Some("3600 1 300 100".into()),
            role: "master".into(),
            connected_replicas: 1,
            key_fingerprint: None,
            info_refused: None,
        }
    }

    #[test]
    fn persistence_names_what_a_restart_loses() {
        let f = persistence(&info());
        assert_eq!(f.level, Level::Warning);
        assert!(
            f.message
                .contains("only RDB snapshots (save 3600 1 300 100)"),
            "{}",
            f.message
        );
        let mut i = info();
        i.rdb_save = None;
        assert!(persistence(&i).message.contains("cannot be read"));
        i.aof = true;
        assert_eq!(persistence(&i).level, Level::Ok);
    }

    #[test]
    fn a_replica_is_an_error_and_a_primary_is_information() {
        let spec = RedisSpec {
            url: "redis://10.0.0.5".into(),
            addr: smsotp_core::config::RedisAddr::Tcp {
                host: "10.0.0.5".into(),
                port: 6379,
            },
            username: None,
            password_file: None,
            db: 0,
            key_prefix: "smsotp:".into(),
            connect_timeout: Duration::from_millis(500),
            timeout: Duration::from_secs(2),
        };
        let f = replication(&spec, &info());
        assert_eq!(f.level, Level::Info);
        assert_eq!(f.message, "replication: role primary, 1 replica connected");
        let mut i = info();
        i.role = "slave".into();
        assert_eq!(replication(&spec, &i).level, Level::Error);
        assert_eq!(round_trip(i.round_trip), "250 µs");
        assert_eq!(
            timeouts(&spec),
            "store.connect_timeout 500 milliseconds, store.timeout 2 seconds"
        );
    }
}
