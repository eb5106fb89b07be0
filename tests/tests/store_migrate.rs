//! `smsotp store migrate` end to end: the built tool copies numbers,
//! backup codes, opt-outs, a language and a lockout from a SQLite store into a
//! `redis-server` of the test's own (and back into a fresh SQLite store),
//! with one key file for all; a backup code made before the move opens a
//! login through pamtester and the built PAM module on the Redis config.
//!
//! Needs `cargo build --workspace`, pamtester and pam_wrapper (as
//! tests/pam.rs), and `redis-server` (scripts/deps.sh test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use smsotp_core::clock::{Clock, SystemClock};
use smsotp_core::otp::ChallengeId;
use smsotp_core::store::sqlite::SqliteStore;
use smsotp_core::store::{ChallengeRecord, SendPermit, Step, Store};
use smsotp_e2e::pamenv::PamEnv;
use smsotp_e2e::redis::RedisServer;
use smsotp_e2e::{Scratch, ToolRun};

fn smsotp(scratch: &Scratch, args: &[&str]) -> ToolRun {
    smsotp_e2e::run_tool(scratch, args, Duration::from_secs(60))
}

fn ok_json(scratch: &Scratch, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let r = smsotp(scratch, &all);
    assert_eq!(r.code, 0, "smsotp {args:?}: {r}");
    r.json()
}

/// `[otp]` and `[policy]` of every config here: one key file, opt-outs
/// allowed.
fn head(key: &Path) -> String {
    format!(
        "[otp]\nkey_file = \"{}\"\n\n[policy]\nuser_opt_out = true\n\n",
        key.display()
    )
}

/// A SQLite config in `s` (its own state.db, an empty phone list).
fn sqlite_config(s: &Scratch, key: &Path) {
    s.phones(&[]);
    s.config(&head(key));
}

/// A Redis config in `s`: the scratch's tables with `[store]` swapped for
/// the server's.
fn redis_config(s: &Scratch, key: &Path, redis: &RedisServer) -> std::path::PathBuf {
    s.phones(&[]);
    let base = s.base_tables(true, true);
    let start = base.find("[store]").expect("a [store] table");
    let end = start + base[start..].find("\n\n").expect("its end") + 2;
    let text = format!(
        "{}{}{}{}",
        head(key),
        &base[..start],
        redis.store_toml("e2e:"),
        &base[end..]
    );
    s.write("smsotp.toml", &text, 0o600)
}

/// copied, already there, kept of one kind in a migrate's JSON.
fn counts(j: &Value, kind: &str) -> (u64, u64, u64) {
    let k = &j[kind];
    let n = |f: &str| {
        k[f].as_u64()
            .unwrap_or_else(|| panic!("no {kind}.{f} in {j}"))
    };
    (n("copied"), n("already_there"), n("kept"))
}

#[test]
fn migrate_sqlite_to_redis_and_back() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let src = Scratch::new();
    let key = src.path("otp.key");
    sqlite_config(&src, &key);

    // What admins and users decided, in the SQLite store.
    ok_json(&src, &["user", "set-phone", "alice", "+12015550123"]);
    ok_json(&src, &["user", "set-phone", "bob", "+12015550124"]);
    let codes: Vec<String> = ok_json(&src, &["backup-codes", "generate", "alice", "--count", "3"])
        ["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 3);
    ok_json(&src, &["user", "opt-out", "carol"]);
    ok_json(&src, &["user", "set-language", "bob", "de"]);
    // A lockout, and what stays behind: a pending code and its SMS.
    let now = SystemClock.now_ms();
    {
        let store = SqliteStore::open(&src.path("state.db"), Duration::from_secs(5)).unwrap();
        let f = store
            .record_failure("dave", now, 1, Duration::from_secs(3600))
            .unwrap();
        assert!(f.locked_until.is_some());
        let c = ChallengeRecord {
            id: ChallengeId([7; 16]),
            user: "erin".into(),
            service: "sshd".into(),
            code_mac: [7; 32],
            phone_masked: "******0125".into(),
            created_at: now,
            sent_at: now,
            expires_at: now + 300_000,
            attempts_left: 3,
            resends_used: 0,
            step: Step::Code,
            pending_phone: None,
        };
        let rate = |n, secs| smsotp_core::config::Rate {
            count: std::num::NonZeroU32::new(n).unwrap(),
            window: Duration::from_secs(secs),
        };
        assert_eq!(
            store
                .start_challenge(&c, rate(5, 3600), rate(100, 3600))
                .unwrap(),
            SendPermit::Granted
        );
    }
    assert_eq!(ok_json(&src, &["user", "show", "dave"])["locked"], true);

    // The target: Redis, the same key file, and a PAM service on it.
    let mut env = PamEnv::new();
    let target = redis_config(&env.scratch, &key, &redis);
    let svc = env.smsotp_service("migrated", "");
    let to = target.to_str().unwrap();

    // A dry run counts and writes nothing.
    let j = ok_json(&src, &["store", "migrate", "--to", to, "--dry-run"]);
    assert_eq!(j["dry_run"], true);
    assert_eq!(counts(&j, "phones"), (2, 0, 0), "{j}");
    let show = ok_json(&env.scratch, &["user", "show", "alice"]);
    assert_eq!(show["phone"], Value::Null, "{show}");
    assert_eq!(show["backup_codes_left"], 0, "{show}");

    let j = ok_json(&src, &["store", "migrate", "--to", to]);
    assert_eq!(j["dry_run"], false);
    assert_eq!(
        (j["from"]["kind"].clone(), j["to"]["kind"].clone()),
        ("sqlite".into(), "redis".into())
    );
    assert_eq!(counts(&j, "phones"), (2, 0, 0), "{j}");
    assert_eq!(counts(&j, "backup_codes"), (1, 0, 0), "{j}");
    assert_eq!(counts(&j, "opt_outs"), (1, 0, 0), "{j}");
    assert_eq!(counts(&j, "languages"), (1, 0, 0), "{j}");
    assert_eq!(counts(&j, "lockouts"), (1, 0, 0), "{j}");
    assert_eq!(j["not_copied"]["challenges"], 1, "{j}");
    assert_eq!(j["not_copied"]["send_windows"], 1, "{j}");

    // Everything is there, read through the Redis config.
    let show = ok_json(&env.scratch, &["user", "show", "alice"]);
    assert_eq!(show["phone"], "******0123", "{show}");
    assert_eq!(show["source"], "store (set by admin:root)", "{show}");
    assert_eq!(show["backup_codes_left"], 3, "{show}");
    let show = ok_json(&env.scratch, &["user", "show", "bob"]);
    assert_eq!(show["phone"], "******0124", "{show}");
    assert_eq!(show["language"], "de", "{show}");
    assert_eq!(
        ok_json(&env.scratch, &["user", "show", "carol"])["opted_out"],
        true
    );
    let show = ok_json(&env.scratch, &["user", "show", "dave"]);
    assert_eq!(
        (show["locked"].clone(), show["failures"].clone()),
        (true.into(), 1.into()),
        "{show}"
    );
    let show = ok_json(&env.scratch, &["user", "show", "erin"]);
    assert_eq!(show["sms_window"]["sent"], 0, "{show}");

    // A backup code made before the move opens a login on the Redis
    // store; the SMS goes to the migrated number.
    let mut login = env.login(&svc, "alice");
    login
        .password()
        .expect_text("Code sent to ******0123.")
        .expect_prompt("SMS code")
        .answer(&codes[0]);
    login
        .finish()
        .assert_success()
        .assert_saw("Backup code accepted; 2 left.");

    // Again: nothing copied. Alice's codes in Redis now differ from the
    // SQLite set (one was used here): the target's stay.
    let r = smsotp(&src, &["store", "migrate", "--to", to]);
    assert_eq!(r.code, 0, "{r}");
    for line in [
        "phone numbers:        0 copied, 2 already there, 0 kept",
        "backup codes (users): 0 copied, 0 already there, 1 kept (the target has codes of its own",
        "opt-outs:             0 copied, 1 already there",
        "languages:            0 copied, 1 already there, 0 kept",
        "lockouts:             0 copied, 1 already there, 0 kept",
        "not copied (short-lived, on purpose): 1 pending code, 1 user's SMS send window",
    ] {
        assert!(r.stdout.contains(line), "no {line:?} in {r}");
    }
    assert_eq!(
        ok_json(&env.scratch, &["user", "show", "alice"])["backup_codes_left"],
        2
    );

    // And back, into a fresh SQLite store: the same counts.
    let back = Scratch::new();
    sqlite_config(&back, &key);
    let back_cfg = back.path("smsotp.toml");
    let j = ok_json(
        &env.scratch,
        &["store", "migrate", "--to", back_cfg.to_str().unwrap()],
    );
    assert_eq!(
        (j["from"]["kind"].clone(), j["to"]["kind"].clone()),
        ("redis".into(), "sqlite".into())
    );
    assert_eq!(counts(&j, "phones"), (2, 0, 0), "{j}");
    assert_eq!(counts(&j, "backup_codes"), (1, 0, 0), "{j}");
    assert_eq!(counts(&j, "opt_outs"), (1, 0, 0), "{j}");
    assert_eq!(counts(&j, "languages"), (1, 0, 0), "{j}");
    assert_eq!(counts(&j, "lockouts"), (1, 0, 0), "{j}");
    // Alice's login in Redis: one SMS counted, no code pending.
    assert_eq!(j["not_copied"]["challenges"], 0, "{j}");
    assert_eq!(j["not_copied"]["send_windows"], 1, "{j}");
    let show = ok_json(&back, &["user", "show", "alice"]);
    assert_eq!(
        (show["phone"].clone(), show["backup_codes_left"].clone()),
        ("******0123".into(), 2.into()),
        "the used code stays used: {show}"
    );
    assert_eq!(ok_json(&back, &["user", "show", "dave"])["locked"], true);
    assert_eq!(
        ok_json(&back, &["user", "show", "carol"])["opted_out"],
        true
    );
    let j = ok_json(
        &env.scratch,
        &["store", "migrate", "--to", back_cfg.to_str().unwrap()],
    );
    assert_eq!(ok_json(&back, &["user", "show", "bob"])["language"], "de");
    for kind in [
        "phones",
        "backup_codes",
        "opt_outs",
        "languages",
        "lockouts",
    ] {
        assert_eq!(counts(&j, kind).0, 0, "{kind}: {j}");
    }
}

#[test]
fn migrate_refuses_the_same_store_and_another_key() {
    let src = Scratch::new();
    let key = src.path("otp.key");
    sqlite_config(&src, &key);
    ok_json(&src, &["user", "set-phone", "alice", "+12015550123"]);
    ok_json(&src, &["backup-codes", "generate", "alice", "--count", "1"]);

    // No such file: the fix is about --to.
    let r = smsotp(
        &src,
        &["store", "migrate", "--to", "/nonexistent/smsotp.toml"],
    );
    assert_eq!(r.code, 78, "{r}");
    assert!(
        r.stderr
            .contains("--to /nonexistent/smsotp.toml: cannot read"),
        "{r}"
    );
    assert!(r.stderr.contains("fix: give --to an smsotp config"), "{r}");

    // The same store, under another name.
    let same = Scratch::new();
    let text = std::fs::read_to_string(src.path("smsotp.toml")).unwrap();
    let cfg = same.write("smsotp.toml", &text, 0o600);
    let r = smsotp(&src, &["store", "migrate", "--to", cfg.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("name the same store"), "{r}");

    // Another key: backup codes would stop working.
    let other = Scratch::new();
    let other_key = other.path("otp.key");
    std::fs::write(&other_key, [0x5a; 32]).unwrap();
    std::fs::set_permissions(
        &other_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    sqlite_config(&other, &other_key);
    let cfg = other.path("smsotp.toml");
    let r = smsotp(&src, &["store", "migrate", "--to", cfg.to_str().unwrap()]);
    assert_eq!(r.code, 78, "{r}");
    assert!(r.stderr.contains("hold different keys"), "{r}");
    assert!(r.stderr.contains("fix: use one key for both: copy"), "{r}");
    assert!(!other.path("state.db").exists(), "nothing written");

    // The target's key missing: it would make a new one.
    std::fs::remove_file(&other_key).unwrap();
    let r = smsotp(&src, &["store", "migrate", "--to", cfg.to_str().unwrap()]);
    assert_eq!(r.code, 78, "{r}");
    assert!(r.stderr.contains("does not exist"), "{r}");

    // The same bytes in another file are the same key.
    std::fs::copy(&key, &other_key).unwrap();
    let j = ok_json(&src, &["store", "migrate", "--to", cfg.to_str().unwrap()]);
    assert_eq!(counts(&j, "phones"), (1, 0, 0), "{j}");
    assert_eq!(counts(&j, "backup_codes"), (1, 0, 0), "{j}");
    assert_eq!(
        ok_json(&other, &["user", "show", "alice"])["backup_codes_left"],
        1
    );
}
