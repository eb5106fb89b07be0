//! The code key's fingerprint on a shared Redis store (issue #19 point 4):
//! two hosts (two scratch configs) on one private `redis-server`
//! ([`smsotp_e2e::redis::RedisServer`]) with different key files. The
//! first host to use the store records its key's fingerprint; the other
//! is refused, fail closed, by the admin tool (with the message naming
//! the fix), by the PAM module (PAM_AUTHINFO_UNAVAIL, no SMS sent) and by
//! smsotp-radiusd (it does not start). Copying the key file, as the
//! message says, makes the second host work.
//!
//! Needs `cargo build --workspace`, redis-server and the PAM harness's
//! packages (scripts/deps.sh test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::path::{Path, PathBuf};
use std::time::Duration;

use smsotp_e2e::pamenv::PamEnv;
use smsotp_e2e::radiusd::{radiusd_path, run_bounded, ClientSpec, ServerSpec};
use smsotp_e2e::redis::RedisServer;
use smsotp_e2e::Scratch;

const ALICE_PHONE: &str = "+12015550123";
const PREFIX: &str = "e2e:";

/// `scratch`'s usual tables with `redis`'s `[store]` (keys under
/// [`PREFIX`]) instead of the SQLite file, and the code key in `key`,
/// followed by `extra`.
fn redis_config(scratch: &Scratch, redis: &RedisServer, key: &Path, extra: &str) -> String {
    let base = scratch.base_tables(true, true);
    let sqlite = format!(
        "[store]\nkind = \"sqlite\"\npath = \"{}/state.db\"\n\n",
        scratch.dir.path().display()
    );
    assert!(base.contains(&sqlite), "the scratch's [store] changed");
    format!(
        "[otp]\nkey_file = \"{}\"\n\n{extra}\n{}",
        key.display(),
        base.replace(&sqlite, &redis.store_toml(PREFIX))
    )
}

/// A host: phones, its own key file (`otp.key` in its scratch, made by
/// its first use) and the config on `redis`.
fn host(scratch: &Scratch, redis: &RedisServer) -> PathBuf {
    scratch.phones(&[("alice", ALICE_PHONE)]);
    let key = scratch.path("otp.key");
    let text = redis_config(scratch, redis, &key, "");
    scratch.write("smsotp.toml", &text, 0o600);
    key
}

fn smsotp(s: &Scratch, args: &[&str]) -> smsotp_e2e::ToolRun {
    smsotp_e2e::run_tool(s, args, Duration::from_secs(30))
}

/// The key mismatch message names both fingerprints' existence, this
/// host's key file and the fix.
fn assert_names_the_fix(text: &str, key: &Path) {
    for want in [
        "this host's code key",
        &key.display().to_string(),
        "has fingerprint",
        "was first used with a key of fingerprint",
        "copy the key file from a host that works",
        "mode 0600",
        "otp.key_file",
        &format!("DEL {PREFIX}kf"),
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
}

#[test]
fn a_host_with_another_code_key_is_refused_until_it_has_the_first_ones() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // Host A uses the store first: its key is recorded.
    let a = Scratch::new();
    let key_a = host(&a, &redis);
    let show = smsotp(&a, &["user", "show", "alice"]);
    assert_eq!(show.code, 0, "{show}");
    assert!(key_a.exists(), "host A's first use made its key");

    // Host B: its own key (made by its first use), the same store.
    let mut env = PamEnv::new();
    let key_b = host(&env.scratch, &redis);
    let svc = env.smsotp_service("e2e-keys", "");
    let refused = smsotp(&env.scratch, &["user", "show", "alice"]);
    assert_eq!(refused.code, 74, "{refused}");
    assert_names_the_fix(&refused.stderr, &key_b);
    assert_ne!(
        std::fs::read(&key_a).unwrap(),
        std::fs::read(&key_b).unwrap()
    );

    // A login on host B fails closed, before any SMS.
    let outbox = env.scratch.outbox();
    let mut login = env.login(&svc, "alice");
    login.password();
    let out = login.finish();
    out.assert_failure();
    assert_eq!(
        out.pam_result(),
        Some("Authentication service cannot retrieve authentication info"),
        "{out}"
    );
    // The store is reached (and the key checked) when the login first
    // needs it: after the password, as for a server that is down.
    out.assert_saw("SMS login is not available right now");
    assert_eq!(outbox.count(), 0, "no SMS from a host with the wrong key");

    // Host A is not disturbed.
    let show = smsotp(&a, &["user", "show", "alice"]);
    assert_eq!(show.code, 0, "{show}");

    // The fix the message names: host A's key file, root-only, on B.
    std::fs::copy(&key_a, &key_b).unwrap();
    std::os::unix::fs::chown(&key_b, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&key_b, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let show = smsotp(&env.scratch, &["user", "show", "alice"]);
    assert_eq!(show.code, 0, "{show}");
    let mut login = env.login(&svc, "alice");
    login
        .password()
        .expect_text("Code sent")
        .expect_prompt("SMS code");
    login.answer_code_from_outbox(&outbox, 0);
    login.finish().assert_success();
}

#[test]
fn smsotp_radiusd_with_another_code_key_does_not_start() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = Scratch::new();
    host(&a, &redis);
    let show = smsotp(&a, &["user", "show", "alice"]);
    assert_eq!(show.code, 0, "{show}");

    let b = Scratch::new();
    b.phones(&[("alice", ALICE_PHONE)]);
    let key_b = b.path("otp.key");
    let client = ClientSpec::new("vpn", "127.0.0.1", "0123456789abcdef0123");
    b.write("secret-vpn", &client.secret, 0o600);
    let mut spec = ServerSpec::new(vec![client]);
    spec.store = Some(redis.store_toml(PREFIX));
    spec.extra = format!("[otp]\nkey_file = \"{}\"\n", key_b.display());
    let config = b.write(
        "smsotp.toml",
        &spec.config_text(&b, smsotp_e2e::radiusd::free_port(false)),
        0o600,
    );
    let mut cmd = std::process::Command::new(radiusd_path());
    cmd.arg("--config")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let (status, text, timed_out) = run_bounded(cmd, b"", Duration::from_secs(20));
    assert!(
        !timed_out,
        "smsotp-radiusd started with the wrong key:\n{text}"
    );
    assert_eq!(status.code(), Some(78), "{text}");
    assert_names_the_fix(&text, &key_b);
    assert!(!text.contains("listening on"), "{text}");
}
