//! `store migrate`: copies what is durable in the configured store
//! (numbers, backup codes, opt-outs, languages, running lockouts) into the store
//! another config file names, by the rules of
//! [`smsotp_core::store::migrate`]. Safe to run again: what is there
//! already is counted, not written; run it once before switching the
//! hosts' config and once after, to pick up what changed meanwhile.

use std::path::{Path, PathBuf};

use serde_json::json;
use smsotp_core::clock::{Clock, SystemClock};
use smsotp_core::config::{Config, ConfigError, StoreSpec};
use smsotp_core::counted;
use smsotp_core::files::{self, FileError, FileRule};
use smsotp_core::store::migrate::{self, ImportCounts, KindCounts, LeftBehind, Snapshot};

use crate::args::StoreCommand;
use crate::report::{exit, Failure};
use crate::{config_err, load_config, store_err, Output};

pub(crate) fn store_command(path: &Path, cmd: &StoreCommand) -> Result<Output, Failure> {
    match cmd {
        StoreCommand::Migrate { to, dry_run } => migrate_store(path, to, *dry_run),
    }
}

/// `path` with its directory resolved (the file itself may not exist
/// yet), to tell whether two names are one file.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .map_or_else(|_| path.to_owned(), |d| d.join(name)),
        _ => path.to_owned(),
    }
}

/// Whether two `[store]` tables name one store.
fn same_store(a: &StoreSpec, b: &StoreSpec) -> bool {
    match (a, b) {
        (StoreSpec::Sqlite { path: p, .. }, StoreSpec::Sqlite { path: q, .. }) => {
            resolved(p) == resolved(q)
        }
        (StoreSpec::Redis(r), StoreSpec::Redis(s)) => {
            r.addr == s.addr && r.db == s.db && r.key_prefix == s.key_prefix
        }
        _ => false,
    }
}

/// The store as messages name it: kind, where, and a Redis store's
/// prefix (sites may share a server).
fn describe(spec: &StoreSpec) -> String {
    match spec {
        StoreSpec::Redis(r) => format!(
            "redis {} (db {}, key_prefix {:?})",
            r.url, r.db, r.key_prefix
        ),
        StoreSpec::Sqlite { .. } => format!("sqlite {}", spec.location()),
    }
}

/// Backup codes are found by a tag keyed with `otp.key_file`: in a store
/// used with another key, none of them would ever match. Refuses unless
/// both configs use one key (one file, or two with the same bytes).
fn check_keys(from: &Config, to: &Config) -> Result<(), Failure> {
    let (a, b) = (&from.otp.key_file, &to.otp.key_file);
    if resolved(a) == resolved(b) {
        return Ok(());
    }
    let (this, other) = (from.path.display(), to.path.display());
    let read = |p: &Path| files::read_bytes_checked(p, FileRule::Secret);
    let missing = |e: &FileError| matches!(e, FileError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound);
    let copy = format!(
        "use one key for both: copy {} to {} (owned by root, mode 600), or set otp.key_file in {other} to {}",
        a.display(),
        b.display(),
        a.display()
    );
    match (read(a), read(b)) {
        (Ok(x), Ok(y)) if smsotp_core::otp::macs_equal(&x, &y) => Ok(()),
        (Ok(_), Ok(_)) => Err(Failure::new(
            exit::CONFIG,
            format!(
                "otp.key_file of {this} ({}) and of {other} ({}) hold different keys: \
                 backup codes copied would stop working (their lookup tags are keyed)",
                a.display(),
                b.display()
            ),
        )
        .fix(copy)),
        // No key yet where the codes come from: nothing was keyed with one.
        (Err(e), _) if missing(&e) => Ok(()),
        (Ok(_), Err(e)) if missing(&e) => Err(Failure::new(
            exit::CONFIG,
            format!(
                "otp.key_file of {other} ({}) does not exist: the target's hosts would make a \
                 new key, and the backup codes copied would stop working",
                b.display()
            ),
        )
        .fix(copy)),
        (Err(e), _) | (_, Err(e)) => Err(Failure::new(exit::CONFIG, e.to_string())),
    }
}

fn kind_json(k: &KindCounts) -> serde_json::Value {
    json!({"copied": k.copied, "already_there": k.present, "kept": k.kept})
}

/// One line per kind, and what stays behind.
fn report(counts: &ImportCounts, left: &LeftBehind, dry_run: bool) -> String {
    let copied = if dry_run { "to copy" } else { "copied" };
    let line = |name: &str, k: &KindCounts, kept: &str| {
        let mut l = format!(
            "{name:<22}{} {copied}, {} already there",
            k.copied, k.present
        );
        if !kept.is_empty() {
            l.push_str(&format!(", {} kept ({kept})", k.kept));
        }
        l.push('\n');
        l
    };
    let mut t = String::new();
    t.push_str(&line(
        "phone numbers:",
        &counts.phones,
        "the target's was set later",
    ));
    t.push_str(&line(
        "backup codes (users):",
        &counts.backup_codes,
        "the target has codes of its own for the user",
    ));
    t.push_str(&line("opt-outs:", &counts.opt_outs, ""));
    t.push_str(&line(
        "languages:",
        &counts.languages,
        "the target has another for the user",
    ));
    t.push_str(&line(
        "lockouts:",
        &counts.lockouts,
        "the target's ends later",
    ));
    t.push_str(&format!(
        "not copied (short-lived, on purpose): {}, {}, {}\n",
        counted(
            usize::try_from(left.challenges).unwrap_or(usize::MAX),
            "pending code",
            "pending codes"
        ),
        counted(
            usize::try_from(left.send_windows).unwrap_or(usize::MAX),
            "user's SMS send window",
            "users' SMS send windows"
        ),
        counted(
            usize::try_from(left.failure_counts).unwrap_or(usize::MAX),
            "failure count below the lockout",
            "failure counts below the lockout"
        ),
    ));
    t
}

fn migrate_store(path: &Path, to: &Path, dry_run: bool) -> Result<Output, Failure> {
    let from_cfg = load_config(path)?;
    let to_cfg = Config::load(to).map_err(|e| match e {
        // config_err's advice is about --config.
        ConfigError::Read { path, source } => Failure::new(
            exit::CONFIG,
            format!("--to {}: cannot read: {source}", path.display()),
        )
        .fix(
            "give --to an smsotp config whose [store] names the target \
             (a copy of this config with another [store] will do)",
        ),
        e => config_err(e),
    })?;
    let (from, target) = (&from_cfg.store, &to_cfg.store);
    if same_store(from, target) {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "{} and {} name the same store ({}): nothing to migrate",
                path.display(),
                to.display(),
                describe(from)
            ),
        )
        .fix("give --to a config whose [store] names the other store"));
    }
    check_keys(&from_cfg, &to_cfg)?;
    if let Some(file) = from.local_file() {
        // Opening would make an empty store: a wrong path, not a migration.
        if !file.exists() {
            return Err(Failure::new(
                exit::IOERR,
                format!(
                    "{} does not exist (store.path of {}): nothing to migrate",
                    file.display(),
                    path.display()
                ),
            )
            .fix("check store.path, or --config the file of the store to copy from"));
        }
    }
    let now = SystemClock.now_ms();
    let source = smsotp_core::store::open(from).map_err(store_err)?;
    let snap = source.export(now).map_err(store_err)?;
    drop(source);
    // A dry run creates nothing: a SQLite target that does not exist yet
    // is empty.
    let fresh = dry_run && target.local_file().is_some_and(|f| !f.exists());
    let counts = if fresh {
        migrate::plan(&Snapshot::default(), &snap)
    } else {
        let target_store = smsotp_core::store::open(target).map_err(store_err)?;
        if dry_run {
            let there = target_store.export(now).map_err(store_err)?;
            migrate::plan(&there, &snap)
        } else {
            migrate::import(&*target_store, &snap, now).map_err(|e| {
                store_err(e).fix(
                    "put the store right and run it again: what was copied stays, \
                     and counts as already there",
                )
            })?
        }
    };
    let mut text = format!(
        "{}from: {}\nto:   {}\n",
        if dry_run {
            "dry run: nothing written\n"
        } else {
            ""
        },
        describe(from),
        describe(target)
    );
    text.push_str(&report(&counts, &snap.left_behind, dry_run));
    let left = &snap.left_behind;
    let json = json!({
        "ok": true,
        "dry_run": dry_run,
        "from": {"kind": from.kind(), "location": from.location()},
        "to": {"kind": target.kind(), "location": target.location()},
        "phones": kind_json(&counts.phones),
        "backup_codes": kind_json(&counts.backup_codes),
        "opt_outs": kind_json(&counts.opt_outs),
        "languages": kind_json(&counts.languages),
        "lockouts": kind_json(&counts.lockouts),
        "not_copied": {
            "challenges": left.challenges,
            "send_windows": left.send_windows,
            "failure_counts": left.failure_counts,
        },
    });
    Ok(Output {
        text,
        json,
        code: exit::OK,
    })
}
