//! `smsotp doctor` on `[store] kind = "redis"` (issue #19 point 6): the
//! built binary, as root, against a scratch config pointing at a private
//! `redis-server` ([`smsotp_e2e::redis::RedisServer`]), a closed port or a
//! black hole. Each case checks the store findings doctor prints: the
//! connection, persistence, replication and the code key's fingerprint.
//!
//! Needs `cargo build --workspace` (or `SMSOTP_CLI=path`) and
//! redis-server (scripts/deps.sh test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use smsotp_e2e::findings::{count, find, show};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use smsotp_e2e::redis::RedisServer;
use smsotp_e2e::{closed_port, BlackHole, Scratch, ToolRun};

/// A scratch config whose `[store]` is `store` (a whole table), with its
/// own code key (`otp.key`, root-only, `key_byte` repeated), a small sound
/// host for doctor's other checks.
fn scratch(store: &str, key_byte: u8) -> Scratch {
    let s = Scratch::new();
    let base = s.base_tables(false, true);
    let sqlite = format!(
        "[store]\nkind = \"sqlite\"\npath = \"{}/state.db\"\n\n",
        s.dir.path().display()
    );
    assert!(base.contains(&sqlite), "the scratch's [store] changed");
    let key = s.path("otp.key");
    let text = format!(
        "[otp]\nkey_file = \"{}\"\n\n{}",
        key.display(),
        base.replace(&sqlite, store)
    );
    s.write("smsotp.toml", &text, 0o600);
    std::fs::write(&key, [key_byte; 32]).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    s.write("sshd_config", "UsePAM yes\n", 0o644);
    std::fs::create_dir(s.path("pam.d")).unwrap();
    s
}

/// `smsotp --json doctor`: the run and its store findings.
fn doctor(s: &Scratch) -> (ToolRun, Vec<Value>) {
    let sshd = s.path("sshd_config");
    let pam = s.path("pam.d");
    let r = smsotp_e2e::run_tool(
        s,
        &[
            "--json",
            "doctor",
            "--sshd-config",
            sshd.to_str().unwrap(),
            "--pam-dir",
            pam.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let j: Value =
        serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{r}"));
    let all = j["findings"].as_array().cloned().unwrap_or_default();
    assert!(
        !r.stdout.contains("panicked") && !r.stderr.contains("panicked"),
        "{r}"
    );
    (r, all)
}

fn store(findings: &[Value]) -> Vec<Value> {
    findings
        .iter()
        .filter(|f| f["area"] == "store")
        .cloned()
        .collect()
}

/// `redis-cli` on the test's own server (never another).
fn redis_cli(redis: &RedisServer, args: &[&str]) {
    let out = Command::new("redis-cli")
        .arg("-s")
        .arg(redis.sock())
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
}

#[test]
fn doctor_on_a_healthy_redis_store_says_ok_and_records_the_key_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    redis_cli(&redis, &["CONFIG", "SET", "appendonly", "yes"]);
    let s = scratch(&redis.store_toml("doc1:"), 1);

    let (r, all) = doctor(&s);
    let f = store(&all);
    let url = format!("unix://{}", redis.sock().display());
    find(&f, "ok", &[&url, "redis ", "answers", "db 0", "round trip"]);
    find(&f, "ok", &["append-only file", "appendonly yes"]);
    find(&f, "info", &["replication: role primary", "0 replicas"]);
    find(&f, "info", &["key fingerprint", "holds none yet"]);
    assert_eq!(
        count(&f, "warning") + count(&f, "error"),
        0,
        "{}\n{r}",
        show(&f)
    );
    // The users' checks opened the store (and recorded this host's key).
    find(&f, "ok", &["the state store and the code key open"]);

    let (_, all) = doctor(&s);
    let f = store(&all);
    find(
        &f,
        "ok",
        &[
            "key fingerprint",
            "is the one the store was first used with",
        ],
    );
    assert_eq!(count(&f, "warning") + count(&f, "error"), 0, "{}", show(&f));
}

#[test]
fn doctor_warns_when_the_append_only_file_is_off() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // The test server runs with appendonly no and save "".
    let s = scratch(&redis.store_toml("doc2:"), 1);
    let (r, all) = doctor(&s);
    let f = store(&all);
    let w = find(
        &f,
        "warning",
        &[
            "appendonly no",
            "no RDB snapshots",
            "lockout",
            "backup code",
            "enrolled number",
        ],
    );
    let fix = w["fix"].as_str().unwrap_or("");
    assert!(
        fix.contains("appendonly yes") && fix.contains("appendfsync everysec"),
        "{fix}"
    );
    assert_eq!(r.code, 1, "a warning is a problem found: {r}");
}

#[test]
fn doctor_fails_on_a_key_fingerprint_mismatch_with_the_fix() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    redis_cli(&redis, &["CONFIG", "SET", "appendonly", "yes"]);
    let first = scratch(&redis.store_toml("doc3:"), 1);
    let show_first =
        smsotp_e2e::run_tool(&first, &["user", "show", "root"], Duration::from_secs(30));
    assert_eq!(show_first.code, 0, "{show_first}");

    let other = scratch(&redis.store_toml("doc3:"), 2);
    let (r, all) = doctor(&other);
    let f = store(&all);
    let key = other.path("otp.key").display().to_string();
    let e = find(&f, "error", &["MISMATCH", &key, "DEL doc3:kf"]);
    let fix = e["fix"].as_str().unwrap_or("");
    assert!(
        fix.contains("copy the key file from a host that works") && fix.contains(&key),
        "{fix}"
    );
    // The store is not opened again for the users' checks.
    assert!(
        !all.iter().any(|x| x["message"]
            .as_str()
            .unwrap_or("")
            .contains("cannot open the state store")),
        "{}",
        show(&all)
    );
    find(&all, "info", &["not checked", "cannot be used"]);
    assert_eq!(r.code, 1, "{r}");
}

#[test]
fn doctor_names_the_url_and_the_timeouts_of_a_server_that_is_down_or_silent() {
    let port = closed_port();
    let down = scratch(
        &format!(
            "[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\n\
             connect_timeout = \"1s\"\ntimeout = \"1s\"\n\n"
        ),
        1,
    );
    let (r, all) = doctor(&down);
    let f = store(&all);
    let e = find(
        &f,
        "error",
        &[
            &format!("redis://127.0.0.1:{port}"),
            "store.connect_timeout 1 second",
            "store.timeout 1 second",
        ],
    );
    assert!(e["fix"].as_str().unwrap_or("").contains("store.url"), "{e}");
    assert_eq!(
        f.len(),
        1,
        "nothing else about a store that is down:\n{}",
        show(&f)
    );
    assert_eq!(r.code, 1, "{r}");

    // Accepts and never answers: doctor gives up by the store's timeouts.
    let hole = BlackHole::start();
    let silent = scratch(
        &format!(
            "[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{}\"\n\
             connect_timeout = \"500ms\"\ntimeout = \"500ms\"\n\n",
            hole.port
        ),
        1,
    );
    let (r, all) = doctor(&silent);
    let f = store(&all);
    find(
        &f,
        "error",
        &[
            &format!("redis://127.0.0.1:{}", hole.port),
            "no answer within store.timeout (500 milliseconds)",
        ],
    );
    assert!(
        r.took < Duration::from_secs(10),
        "doctor took {:?} on a silent server",
        r.took
    );
    assert!(hole.close() >= 1, "doctor never connected");
}

/// With `store.sentinels`, doctor shows what each sentinel says the
/// master is before the connection it opens through them; a sentinel that
/// cannot be reached is a warning naming it, the others still lead to the
/// master.
#[test]
fn doctor_shows_each_sentinels_view_of_the_master() {
    let Some(cluster) = smsotp_e2e::sentinel::Cluster::start() else {
        return;
    };
    let master = cluster.master_port().expect("the sentinels name a master");
    let dead = closed_port();
    let table = cluster.store_toml("e2e-doc:").replacen(
        "sentinels = [",
        &format!("sentinels = [\"127.0.0.1:{dead}\", "),
        1,
    );
    let s = scratch(&table, 7);
    let (r, all) = doctor(&s);
    let st = store(&all);
    find(
        &st,
        "warning",
        &[&format!("sentinel 127.0.0.1:{dead}"), "no master"],
    );
    let ok: Vec<&Value> = st
        .iter()
        .filter(|f| {
            f["level"] == "ok"
                && f["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&format!("is at 127.0.0.1:{master}"))
        })
        .collect();
    assert_eq!(
        ok.len(),
        3,
        "each live sentinel names the master:\n{}",
        show(&st)
    );
    // Through them, the master answers and the key is recorded.
    find(&st, "ok", &["answers"]);
    assert_eq!(count(&st, "error"), 0, "{r}\n{}", show(&st));
}
