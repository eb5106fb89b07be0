//! Many hosts on one Redis, and Redis down (issue #19): pam_smsotp under
//! pamtester (two "hosts": two scratch dirs with their own config, state,
//! outbox and audit, the same otp.key copied into each) and
//! smsotp-radiusd (three servers) on one `redis-server` of the test's own
//! ([`RedisServer`]), which the tests stop and start again.
//!
//! Needs what tests/pam.rs and tests/radius.rs need, the Debian package
//! `redis-server`, and `cargo build --workspace`. Every server is on
//! loopback, bounded in time and stopped on drop. Without redis-server the
//! tests say so loudly and pass.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use smsotp_e2e::pamenv::{audit_lines, Login, Outcome, PamEnv, LOGIN_TIMEOUT};
use smsotp_e2e::radiusd::{
    check_reply, code, ClientSpec, Nas, Radiusd, Reply, Request, ServerSpec,
};
use smsotp_e2e::redis::{store_table, RedisOptions, RedisServer};
use smsotp_e2e::wrong_code as wrong;
use smsotp_e2e::{run_tool, BlackHole, Outbox, Scratch, ToolRun};

const ALICE_PHONE: &str = "+12015550123";
const BOB_PHONE: &str = "+12015551123";
const CODE_SENT: &str = "Code sent to ******0123.";
const PROMPT: &str = "SMS code";
const UNAVAILABLE: &str = "SMS login is not available right now. Contact your administrator.";
const TRY_LATER: &str = "A code cannot be used for this login now. Try again later.";
const LIMIT_REACHED: &str = "Too many codes were sent recently.";
/// What pamtester prints for PAM_AUTHINFO_UNAVAIL.
const AUTHINFO_UNAVAIL: &str = "Authentication service cannot retrieve authentication info";
const SECRET: &str = "e2e-secret-hosts-5d3a";
const NAS_PASSWORD: &str = "nas-pw-5521";
const SMS_WAIT: Duration = Duration::from_secs(5);
const TOOL_LIMIT: Duration = Duration::from_secs(20);

/// One code key for every host of a test, as an admin copies it.
fn shared_key() -> Vec<u8> {
    smsotp_e2e::radiusd::random_bytes(32)
}

/// Writes `key` as `otp.key` (0600) into `scratch`; the `[otp]` table
/// that names it, with `otp` lines added.
fn key_table(scratch: &Scratch, key: &[u8], otp: &str) -> String {
    let path = scratch.path("otp.key");
    std::fs::write(&path, key).expect("write otp.key");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod otp.key");
    format!("[otp]\nkey_file = \"{}\"\n{otp}\n", path.display())
}

/// The scratch's tables with `store` in place of its SQLite `[store]`.
fn tables_with_store(scratch: &Scratch, store: &str) -> String {
    let base = scratch.base_tables(true, true);
    let sqlite = format!(
        "[store]\nkind = \"sqlite\"\npath = \"{}/state.db\"\n\n",
        scratch.dir.path().display()
    );
    assert!(base.contains(&sqlite), "the scratch's [store] changed");
    base.replace(&sqlite, store)
}

/// A PAM "host": its own scratch (phones, config, outbox, audit), the
/// store table `store`, the shared `key`, `otp` lines for `[otp]` and
/// `extra` tables; one service `name` (pam_matrix, then pam_smsotp).
fn pam_host(name: &str, store: &str, key: &[u8], otp: &str, extra: &str) -> (PamEnv, String) {
    let mut env = PamEnv::new();
    env.scratch.phones(&[("alice", ALICE_PHONE)]);
    let text = format!(
        "{extra}\n{}{}",
        key_table(&env.scratch, key, otp),
        tables_with_store(&env.scratch, store)
    );
    env.scratch.write("smsotp.toml", &text, 0o600);
    let svc = env.smsotp_service(name, "");
    (env, svc)
}

/// A RADIUS "host": its own scratch, the same store and key.
fn radius_host(store: &str, key: &[u8], otp: &str, extra: &str) -> (Scratch, Radiusd) {
    let scratch = Scratch::new();
    scratch.phones(&[("alice", ALICE_PHONE)]);
    let mut spec = ServerSpec::new(vec![ClientSpec::new("vpn", "127.0.0.1", SECRET)]);
    spec.store = Some(store.to_owned());
    spec.extra = format!("{extra}\n{}", key_table(&scratch, key, otp));
    let srv = Radiusd::start(&scratch, spec);
    // A first login (a user without a number) reads the phone list once,
    // so the test's own logins are not timed with that.
    let r = first_round(&srv, "nobody");
    assert_code(&r, code::ACCESS_REJECT, "a user without a number", &srv);
    (scratch, srv)
}

/// Two PAM hosts and three RADIUS servers on one Redis (keys under
/// "e2e:"), the same code key on all, each with `limits`; and their
/// outboxes, PAM hosts first.
struct Fleet {
    pam1: (PamEnv, String),
    pam2: (PamEnv, String),
    radius: Vec<(Scratch, Radiusd)>,
    outboxes: Vec<Outbox>,
}

fn fleet(name: &str, redis: &RedisServer, limits: &str) -> Fleet {
    let key = shared_key();
    let store = redis.store_toml("e2e:");
    let pam1 = pam_host(&format!("{name}-1"), &store, &key, "", limits);
    let pam2 = pam_host(&format!("{name}-2"), &store, &key, "", limits);
    let radius: Vec<(Scratch, Radiusd)> = (0..3)
        .map(|_| radius_host(&store, &key, "", limits))
        .collect();
    let outboxes = [&pam1.0.scratch, &pam2.0.scratch]
        .into_iter()
        .chain(radius.iter().map(|(s, _)| s))
        .map(Scratch::outbox)
        .collect();
    Fleet {
        pam1,
        pam2,
        radius,
        outboxes,
    }
}

fn nas(srv: &Radiusd) -> Nas {
    srv.nas("127.0.0.1", "vpn")
}

/// How long a test waits for a reply that must come: generous, since the
/// first login a server handles parses its phone list and these tests run
/// up to seven logins at once.
const REPLY_WAIT: Duration = Duration::from_secs(20);

/// One Access-Request (with `state`, when given) and its checked reply.
fn exchange(srv: &Radiusd, user: &str, password: &str, state: Option<&[u8]>) -> Reply {
    let n = nas(srv);
    let mut req = Request::access(n.id()).user(user).password(password);
    if let Some(s) = state {
        req = req.state(s);
    }
    n.send_bytes(&n.encode(&req));
    let bytes = n
        .recv_bytes(REPLY_WAIT)
        .unwrap_or_else(|| panic!("no reply within {REPLY_WAIT:?}\n{}", srv.context()));
    let packet = check_reply(&bytes, req.id, &req.authenticator, &n.secret)
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.context()));
    Reply { packet, bytes }
}

fn first_round(srv: &Radiusd, user: &str) -> Reply {
    exchange(srv, user, NAS_PASSWORD, None)
}

fn follow_up(srv: &Radiusd, user: &str, state: &[u8], answer: &str) -> Reply {
    exchange(srv, user, answer, Some(state))
}

/// The tests of this file take turns: each starts up to five hosts, and
/// a machine under load would otherwise miss the waits above.
fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(PoisonError::into_inner)
}

fn assert_code(reply: &Reply, expected: u8, what: &str, srv: &Radiusd) {
    srv.assert_code(reply, expected, what);
}

/// Password, then the code prompt after "Code sent".
fn up_to_code_prompt(env: &PamEnv, svc: &str, user: &str) -> Login {
    let mut login = env.login(svc, user);
    login
        .password()
        .expect_text(CODE_SENT)
        .expect_prompt(PROMPT);
    login
}

/// A whole successful login of alice with the code from `outbox`.
fn pam_login_ok(env: &PamEnv, svc: &str) {
    let outbox = env.scratch.outbox();
    let seen = outbox.count();
    let mut login = up_to_code_prompt(env, svc, "alice");
    login.answer_code_from_outbox(&outbox, seen);
    login.finish().assert_success();
}

/// Waits until the login printed one of `texts`; its index.
fn wait_for_any(login: &Login, texts: &[&str], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let t = login.transcript();
        if let Some(i) = texts.iter().position(|x| t.contains(x)) {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "none of {texts:?} within {timeout:?}:\n{}",
            login.dialog()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The built `smsotp` on `env`'s config, `--json`; must succeed.
fn tool_json(scratch: &Scratch, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let r = run_tool(scratch, &all, TOOL_LIMIT);
    assert_eq!(r.code, 0, "smsotp {args:?}: {r}");
    r.json()
}

fn tool(scratch: &Scratch, args: &[&str]) -> ToolRun {
    run_tool(scratch, args, TOOL_LIMIT)
}

fn total(outboxes: &[Outbox]) -> usize {
    outboxes.iter().map(Outbox::count).sum()
}

/// A refused login that ended by itself with PAM_AUTHINFO_UNAVAIL, after
/// telling the user so.
fn assert_unavailable(out: &Outcome) {
    out.assert_failure().assert_saw(UNAVAILABLE);
    assert_eq!(out.pam_result(), Some(AUTHINFO_UNAVAIL), "{out}");
    out.assert_not_saw(PROMPT);
}

// ----------------------------------------------------------- Redis down

/// Redis stopped: a user who needs a code is refused with
/// PAM_AUTHINFO_UNAVAIL and the reason in the audit; exempt users (by
/// name, by group) are let through to the rest of the stack; with Redis
/// back on the same socket the next login works, nothing restarted.
#[test]
fn pam_redis_down_fails_closed_exempt_users_pass_and_it_recovers() {
    let _turn = turn();
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (env, svc) = pam_host(
        "hosts-down",
        &redis.store_toml("e2e:"),
        &shared_key(),
        "",
        "[policy]\nexempt_users = [\"carol\"]\nexempt_groups = [\"svc-backup\"]\n",
    );
    let outbox = env.scratch.outbox();
    pam_login_ok(&env, &svc);

    redis.stop();
    let started = Instant::now();
    let mut login = env.login(&svc, "alice");
    login.password().expect_text(UNAVAILABLE);
    let out = login.finish();
    assert_unavailable(&out);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(outbox.count(), 1, "no SMS while the store is down");
    let lines = audit_lines(&env.scratch);
    let err = lines
        .iter()
        .rev()
        .find(|l| l["event"] == "error")
        .unwrap_or_else(|| panic!("no error line in the audit: {lines:#?}"));
    assert_eq!(err["user"], "alice", "{err}");
    let detail = err["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&redis.unix_url()) && detail.contains("cannot connect"),
        "the audit names the store and what failed: {err}"
    );

    // Exempt by name (carol) and by group (dave, erin): the stack's other
    // modules decide; a wrong password still fails.
    for user in ["carol", "dave", "erin"] {
        let mut login = env.login(&svc, user);
        login.password();
        let out = login.finish();
        out.assert_success().assert_not_saw(UNAVAILABLE);
    }
    let mut login = env.login(&svc, "carol");
    login.expect_prompt("Password").answer("not-the-password");
    login.finish().assert_failure().assert_not_saw(UNAVAILABLE);

    redis.restart();
    pam_login_ok(&env, &svc);
    assert_eq!(outbox.count(), 2);
}

/// A Redis that accepts connections and never answers: the login is
/// refused within about the configured timeouts (500 ms each), never
/// hangs; an exempt user does not even connect.
#[test]
fn pam_redis_black_hole_is_bounded_and_exempt_users_never_connect() {
    let _turn = turn();
    let hole_host = |hole: &BlackHole| {
        let store = store_table(
            &format!("redis://127.0.0.1:{}", hole.port),
            "e2e:",
            "connect_timeout = \"500ms\"\ntimeout = \"500ms\"\n",
        );
        pam_host(
            "hosts-hole",
            &store,
            &shared_key(),
            "",
            "[policy]\nexempt_users = [\"carol\"]\n",
        )
    };
    let hole = BlackHole::start();
    let (env, svc) = hole_host(&hole);
    let mut login = env.login(&svc, "carol");
    login.password();
    login.finish().assert_success();
    assert_eq!(hole.close(), 0, "an exempt login connected to the store");

    let hole = BlackHole::start();
    let (env, svc) = hole_host(&hole);
    let mut login = env.login_with_timeout(&svc, "alice", Duration::from_secs(15));
    login.expect_prompt("Password");
    let asked = Instant::now();
    login.answer(smsotp_e2e::pamenv::PASSWORD);
    let out = login.finish();
    let took = asked.elapsed();
    assert_unavailable(&out);
    assert!(
        took < Duration::from_secs(3),
        "a hung store held the login for {took:?}"
    );
    assert!(hole.close() >= 1, "the login never reached the store");
    assert_eq!(env.scratch.outbox().count(), 0);
    let lines = audit_lines(&env.scratch);
    assert!(
        lines.iter().any(|l| l["event"] == "error"
            && l["detail"]
                .as_str()
                .is_some_and(
                    |d| (d.contains("store.timeout") || d.contains("connect_timeout"))
                        && d.contains("(500 milliseconds)")
                )),
        "the audit names the timeout: {lines:#?}"
    );
}

/// smsotp-radiusd with Redis stopped answers Access-Reject and logs why;
/// with Redis back it serves the next request without a restart (each
/// worker's kept connection is dead then, and is replaced at once).
#[test]
fn radiusd_redis_down_rejects_then_reconnects() {
    let _turn = turn();
    radiusd_down_and_back(false);
}

/// [`radiusd_redis_down_rejects_then_reconnects`] over TCP, where a dead
/// connection shows as a reset or end of file rather than a broken pipe.
#[test]
fn radiusd_redis_down_over_tcp_rejects_then_reconnects() {
    let _turn = turn();
    radiusd_down_and_back(true);
}

fn radiusd_down_and_back(tcp: bool) {
    let Some(mut redis) = RedisServer::start_with(RedisOptions {
        tcp,
        ..RedisOptions::default()
    }) else {
        return;
    };
    let url = if tcp {
        redis.tcp_url()
    } else {
        redis.unix_url()
    };
    let (scratch, srv) = radius_host(&store_table(&url, "e2e:", ""), &shared_key(), "", "");
    let outbox = scratch.outbox();
    let r = first_round(&srv, "alice");
    assert_code(&r, code::ACCESS_CHALLENGE, "Redis up", &srv);
    let c = outbox.wait_beyond(0, SMS_WAIT).code();
    let ok = follow_up(&srv, "alice", &r.state(), &c);
    assert_code(&ok, code::ACCESS_ACCEPT, "right code", &srv);
    // Requests at once, so that several workers hold a connection.
    burst_of_users_without_a_number(&srv);

    redis.stop();
    let mark = srv.log_mark();
    let t = Instant::now();
    let r = first_round(&srv, "alice");
    assert_code(&r, code::ACCESS_REJECT, "Redis down", &srv);
    // The socket is gone: refused at once, well within the 2 s timeouts.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        srv.wait_log(&url, mark, Duration::from_secs(2)).is_some(),
        "the log names the store:\n{}",
        srv.context()
    );
    assert_eq!(outbox.count(), 1, "no SMS while the store is down");

    redis.restart();
    // Every worker's connection from before is dead: none may fail a login.
    let mark = srv.log_mark();
    burst_of_users_without_a_number(&srv);
    assert!(
        srv.wait_log("event=error", mark, Duration::ZERO).is_none(),
        "a login failed after Redis came back:\n{}",
        srv.context()
    );
    let r = first_round(&srv, "alice");
    assert_code(&r, code::ACCESS_CHALLENGE, "Redis back", &srv);
    let c = outbox.wait_beyond(1, SMS_WAIT).code();
    let ok = follow_up(&srv, "alice", &r.state(), &c);
    assert_code(
        &ok,
        code::ACCESS_ACCEPT,
        "right code after Redis came back",
        &srv,
    );
    assert!(srv.running());
}

/// Redis down when smsotp-radiusd starts (a reboot where Redis comes up
/// later): the server comes up all the same, says why it cannot answer
/// yet, rejects, and logs in once Redis is there, without a restart.
#[test]
fn radiusd_started_while_redis_is_down_comes_up_and_serves_when_it_is_back() {
    let _turn = turn();
    let Some(mut redis) = RedisServer::start_with(RedisOptions {
        tcp: true,
        ..RedisOptions::default()
    }) else {
        return;
    };
    let url = redis.tcp_url();
    redis.stop();
    let (scratch, srv) = radius_host(&store_table(&url, "e2e:", ""), &shared_key(), "", "");
    assert!(srv.running(), "{}", srv.context());
    assert!(
        srv.wait_log("starting anyway", 0, Duration::from_secs(2))
            .is_some(),
        "the start-up warning names the store:\n{}",
        srv.context()
    );
    let outbox = scratch.outbox();
    let r = first_round(&srv, "alice");
    assert_code(&r, code::ACCESS_REJECT, "Redis not there yet", &srv);
    assert_eq!(outbox.count(), 0);

    redis.restart();
    let r = first_round(&srv, "alice");
    assert_code(&r, code::ACCESS_CHALLENGE, "Redis there", &srv);
    let c = outbox.wait_beyond(0, SMS_WAIT).code();
    let ok = follow_up(&srv, "alice", &r.state(), &c);
    assert_code(&ok, code::ACCESS_ACCEPT, "right code", &srv);
}

/// On Redis each worker decides many requests at once, in fibers, on a
/// connection of its own: a login begun before a reload (SIGHUP: every
/// worker opens a new engine and connection) ends after it, a burst of
/// requests then each get their own answer, and SIGTERM ends the server
/// cleanly.
#[test]
fn radiusd_on_redis_finishes_a_login_across_a_reload_and_stops_cleanly() {
    let _turn = turn();
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (scratch, mut srv) = radius_host(&redis.store_toml("e2e:"), &shared_key(), "", "");
    let outbox = scratch.outbox();
    let r = first_round(&srv, "alice");
    assert_code(&r, code::ACCESS_CHALLENGE, "before the reload", &srv);
    let c = outbox.wait_beyond(0, SMS_WAIT).code();
    let mark = srv.log_mark();
    srv.signal(libc::SIGHUP);
    assert!(
        srv.wait_log("reloaded", mark, Duration::from_secs(5))
            .is_some(),
        "no 'reloaded' after SIGHUP:\n{}",
        srv.context()
    );
    burst_of_users_without_a_number(&srv);
    let ok = follow_up(&srv, "alice", &r.state(), &c);
    assert_code(&ok, code::ACCESS_ACCEPT, "the code after the reload", &srv);
    // Used: the same code again is refused.
    let again = follow_up(&srv, "alice", &r.state(), &c);
    assert_code(&again, code::ACCESS_REJECT, "the code used again", &srv);
    let status = srv.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "after SIGTERM: {status:?}\n{}",
        srv.context()
    );
}

/// Eight requests at once for users without a number: each is refused
/// for that reason (the store was read), none as unavailable.
fn burst_of_users_without_a_number(srv: &Radiusd) {
    let replies: Vec<Reply> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..8)
            .map(|i| s.spawn(move || first_round(srv, &format!("nobody{i}"))))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for r in &replies {
        assert_code(r, code::ACCESS_REJECT, "a user without a number", srv);
        assert_ne!(r.message(), UNAVAILABLE, "{}", srv.context());
    }
}

/// A Redis of the test's own with `appendonly yes`, so a stop and a
/// start keep what the file holds; `None` if redis-server is missing.
fn redis_with_aof() -> Option<RedisServer> {
    RedisServer::start_with(RedisOptions {
        appendonly: true,
        ..RedisOptions::default()
    })
}

/// With `appendonly yes`, what a login and an admin wrote survives Redis
/// being stopped and started: a lockout, a used backup code (still used),
/// an unused one (still usable), and a number set with the admin tool.
#[test]
fn state_survives_a_redis_restart_with_appendonly() {
    let _turn = turn();
    let Some(mut redis) = redis_with_aof() else {
        return;
    };
    let (env, svc) = pam_host(
        "hosts-durable",
        &redis.store_toml("e2e:"),
        &shared_key(),
        "",
        "[limits]\nlockout_after = 3\nlockout = \"1h\"\n",
    );
    env.scratch
        .phones(&[("alice", ALICE_PHONE), ("carol", "+12015552123")]);
    let outbox = env.scratch.outbox();

    // A number only the store knows.
    let r = tool(&env.scratch, &["user", "set-phone", "bob", BOB_PHONE]);
    assert_eq!(r.code, 0, "{r}");
    // Two backup codes, one used.
    let codes: Vec<String> = tool_json(
        &env.scratch,
        &["backup-codes", "generate", "alice", "--count", "2"],
    )["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let mut login = up_to_code_prompt(&env, &svc, "alice");
    login.answer(&codes[0]);
    login
        .finish()
        .assert_success()
        .assert_saw("Backup code accepted; 1 left.");
    // carol locked out by three wrong codes.
    let mut login = env.login(&svc, "carol");
    login.password().expect_prompt(PROMPT);
    let bad = wrong(&outbox.wait_beyond(1, SMS_WAIT).code());
    for _ in 0..2 {
        login
            .answer(&bad)
            .expect_text("Wrong code")
            .expect_prompt(PROMPT);
    }
    login.answer(&bad).expect_text("Too many wrong codes.");
    login.finish().assert_failure();

    redis.stop();
    assert!(!redis.running());
    redis.restart();

    let bob = tool_json(&env.scratch, &["user", "show", "bob"]);
    assert_eq!(bob["phone"], "******1123", "{bob}");
    let alice = tool_json(&env.scratch, &["user", "show", "alice"]);
    assert_eq!(alice["backup_codes_left"], 1, "{alice}");
    let mut login = env.login(&svc, "carol");
    login.password().expect_text(TRY_LATER);
    login.finish().assert_failure().assert_not_saw(PROMPT);
    let sent = outbox.count();
    // The used backup code stays used; the other still works.
    let mut login = up_to_code_prompt(&env, &svc, "alice");
    login
        .answer(&codes[0])
        .expect_text("Wrong code")
        .expect_prompt(PROMPT)
        .answer(&codes[1]);
    login
        .finish()
        .assert_success()
        .assert_saw("Backup code accepted; 0 left.");
    // bob's stored number is used.
    let mut login = env.login(&svc, "bob");
    login
        .password()
        .expect_text("Code sent to ******1123.")
        .expect_prompt(PROMPT);
    let sms = login.answer_code_from_outbox(&outbox, sent + 1);
    assert_eq!(sms.to, BOB_PHONE);
    login.finish().assert_success();
}

/// A login in progress lives in the master's memory only (not in the
/// append-only file): a Redis restart ends it. The right code for it
/// afterwards is refused, never let in, and no SMS goes out for it; a new
/// login works at once. What the file keeps, keeps: the SMS sent before
/// the restart still count against the user's limit.
#[test]
fn a_redis_restart_ends_the_logins_in_progress_and_keeps_the_sms_counts() {
    let _turn = turn();
    let Some(mut redis) = redis_with_aof() else {
        return;
    };
    let (scratch, srv) = radius_host(
        &redis.store_toml("e2e:"),
        &shared_key(),
        "",
        "[limits]\nsms_per_user = \"2/1h\"\n",
    );
    let outbox = scratch.outbox();
    let begun = first_round(&srv, "alice");
    assert_code(&begun, code::ACCESS_CHALLENGE, "before the restart", &srv);
    let c = outbox.wait_beyond(0, SMS_WAIT).code();
    // The challenge is on the server now.
    let keys = redis.command(&["DBSIZE"]).unwrap();
    assert_ne!(keys, ":0", "nothing stored before the restart");

    redis.stop();
    redis.restart();

    let late = follow_up(&srv, "alice", &begun.state(), &c);
    assert_code(
        &late,
        code::ACCESS_REJECT,
        "the right code for a login begun before the restart",
        &srv,
    );
    assert_eq!(outbox.count(), 1, "an SMS for the ended login");
    // A new login: the second SMS of two in the hour.
    let r = first_round(&srv, "alice");
    assert_code(&r, code::ACCESS_CHALLENGE, "a new login", &srv);
    let c = outbox.wait_beyond(1, SMS_WAIT).code();
    let ok = follow_up(&srv, "alice", &r.state(), &c);
    assert_code(&ok, code::ACCESS_ACCEPT, "the new login's code", &srv);
    // The first SMS was kept in the file: a third is over the limit.
    let r = first_round(&srv, "alice");
    assert_code(&r, code::ACCESS_REJECT, "a third SMS in the hour", &srv);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(outbox.count(), 2, "an SMS over the limit");
    assert!(srv.running());
}

// ----------------------------------------------------- many hosts, one Redis

/// Three smsotp-radiusd on one Redis: a challenge begun at A takes a wrong
/// code at B (the tries count down there) and the right one at C, once.
#[test]
fn three_radius_servers_share_one_challenge() {
    let _turn = turn();
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let key = shared_key();
    let store = redis.store_toml("e2e:");
    let (sa, a) = radius_host(&store, &key, "", "");
    let (_sb, b) = radius_host(&store, &key, "", "");
    let (_sc, c) = radius_host(&store, &key, "", "");
    let r = first_round(&a, "alice");
    assert_code(&r, code::ACCESS_CHALLENGE, "first round at A", &a);
    let state = r.state();
    let good = sa.outbox().wait_beyond(0, SMS_WAIT).code();
    let bad = follow_up(&b, "alice", &state, &wrong(&good));
    assert_code(&bad, code::ACCESS_CHALLENGE, "wrong code at B", &b);
    assert_eq!(bad.message(), "Wrong code, 2 tries left.");
    let ok = follow_up(&c, "alice", &state, &good);
    assert_code(&ok, code::ACCESS_ACCEPT, "right code at C", &c);
    for srv in [&a, &b, &c] {
        let again = follow_up(srv, "alice", &state, &good);
        assert_code(&again, code::ACCESS_REJECT, "the code again", srv);
    }
}

/// `sms_per_user = "3/1h"` counted across two PAM hosts and three RADIUS
/// servers: seven logins at once get exactly three SMS in all, and then
/// every host refuses.
#[test]
fn sms_per_user_limit_counts_across_hosts() {
    let _turn = turn();
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limits = "[limits]\nsms_per_user = \"3/1h\"\n";
    let Fleet {
        pam1: (pam1, svc1),
        pam2: (pam2, svc2),
        radius,
        outboxes,
    } = fleet("hosts-limit", &redis, limits);

    // Four PAM logins (two a host) and one request at each server, at once.
    let mut logins: Vec<Login> = [
        (&pam1, &svc1),
        (&pam1, &svc1),
        (&pam2, &svc2),
        (&pam2, &svc2),
    ]
    .into_iter()
    .map(|(env, svc)| env.login(svc, "alice"))
    .collect();
    for l in &mut logins {
        l.expect_prompt("Password");
    }
    let codes: Vec<u8> = std::thread::scope(|s| {
        let threads: Vec<_> = radius
            .iter()
            .map(|(_, srv)| s.spawn(move || first_round(srv, "alice").code()))
            .collect();
        for l in &mut logins {
            l.answer(smsotp_e2e::pamenv::PASSWORD);
        }
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let sent_pam = logins
        .iter()
        .filter(|l| wait_for_any(l, &[CODE_SENT, LIMIT_REACHED], REPLY_WAIT) == 0)
        .count();
    for l in logins {
        l.abort();
    }
    let challenged = codes
        .iter()
        .filter(|c| **c == code::ACCESS_CHALLENGE)
        .count();
    assert!(
        codes
            .iter()
            .all(|c| [code::ACCESS_CHALLENGE, code::ACCESS_REJECT].contains(c)),
        "{codes:?}"
    );
    assert_eq!(
        sent_pam + challenged,
        3,
        "{sent_pam} PAM logins and {challenged} RADIUS requests got a code"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(total(&outboxes), 3, "three SMS in all");

    // Then everyone refuses, and sends nothing.
    for (env, svc) in [(&pam1, &svc1), (&pam2, &svc2)] {
        let mut login = env.login(svc, "alice");
        login.password().expect_text(LIMIT_REACHED);
        login.finish().assert_failure().assert_not_saw(PROMPT);
    }
    for (_, srv) in &radius {
        let r = first_round(srv, "alice");
        assert_code(&r, code::ACCESS_REJECT, "over the limit", srv);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(total(&outboxes), 3, "no fourth SMS anywhere");
    let j = tool_json(&pam2.scratch, &["user", "show", "alice"]);
    assert_eq!(j["sms_window"]["sent"], 3, "{j}");
    assert_eq!(j["sms_window"]["limit_reached"], true, "{j}");
}

/// `lockout_after = 5`: one wrong code at each of two PAM hosts and three
/// RADIUS servers locks alice out once; then every host refuses without an
/// SMS.
#[test]
fn lockout_counts_across_hosts() {
    let _turn = turn();
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limits = "[limits]\nlockout_after = 5\nlockout = \"1h\"\nsms_per_user = \"20/1h\"\n";
    let Fleet {
        pam1: (pam1, svc1),
        pam2: (pam2, svc2),
        radius,
        outboxes,
    } = fleet("hosts-lock", &redis, limits);

    for (env, svc) in [(&pam1, &svc1), (&pam2, &svc2)] {
        let outbox = env.scratch.outbox();
        let seen = outbox.count();
        let mut login = up_to_code_prompt(env, svc, "alice");
        let bad = wrong(&outbox.wait_beyond(seen, SMS_WAIT).code());
        login
            .answer(&bad)
            .expect_text("Wrong code, 2 tries left.")
            .expect_prompt(PROMPT);
        login.abort();
    }
    for (i, (scratch, srv)) in radius.iter().enumerate() {
        let r = first_round(srv, "alice");
        assert_code(&r, code::ACCESS_CHALLENGE, "first round", srv);
        let bad = wrong(&scratch.outbox().wait_beyond(0, SMS_WAIT).code());
        let r2 = follow_up(srv, "alice", &r.state(), &bad);
        if i < 2 {
            assert_code(&r2, code::ACCESS_CHALLENGE, "wrong code", srv);
            assert_eq!(r2.message(), "Wrong code, 2 tries left.");
        } else {
            assert_code(&r2, code::ACCESS_REJECT, "the fifth wrong code", srv);
        }
    }
    let sent = total(&outboxes);
    assert_eq!(sent, 5);

    for (env, svc) in [(&pam1, &svc1), (&pam2, &svc2)] {
        let mut login = env.login(svc, "alice");
        login.password().expect_text(TRY_LATER);
        login.finish().assert_failure().assert_not_saw(PROMPT);
    }
    for (_, srv) in &radius {
        let r = first_round(srv, "alice");
        assert_code(&r, code::ACCESS_REJECT, "locked out", srv);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(total(&outboxes), sent, "no SMS while locked out");
    let locked: usize = [&pam1.scratch, &pam2.scratch]
        .into_iter()
        .chain(radius.iter().map(|(s, _)| s))
        .map(|s| {
            audit_lines(s)
                .iter()
                .filter(|l| l["event"] == "locked_out")
                .count()
        })
        .sum();
    assert_eq!(locked, 1, "one lockout recorded across the hosts");
    let j = tool_json(&pam1.scratch, &["user", "show", "alice"]);
    assert_eq!(j["failures"], 5, "{j}");
}

/// One backup code typed at two PAM hosts at the same moment: exactly one
/// login wins, five times over; then no code is left.
#[test]
fn one_backup_code_raced_from_two_hosts_wins_once() {
    let _turn = turn();
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let key = shared_key();
    let store = redis.store_toml("e2e:");
    // bob has no number: both logins go straight to the backup code prompt.
    let extra = "[limits]\nlockout_after = 50\n";
    let (pam1, svc1) = pam_host("hosts-race-1", &store, &key, "", extra);
    let (pam2, svc2) = pam_host("hosts-race-2", &store, &key, "", extra);
    let codes: Vec<String> = tool_json(
        &pam1.scratch,
        &["backup-codes", "generate", "bob", "--count", "5"],
    )["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 5);
    for (round, code) in codes.iter().enumerate() {
        let mut a = pam1.login_with_timeout(&svc1, "bob", LOGIN_TIMEOUT);
        let mut b = pam2.login_with_timeout(&svc2, "bob", LOGIN_TIMEOUT);
        a.password().expect_prompt("Backup code");
        b.password().expect_prompt("Backup code");
        a.answer(code);
        b.answer(code);
        let winner =
            [&a, &b].map(|l| wait_for_any(l, &["Backup code accepted", "Wrong code"], REPLY_WAIT));
        if winner.iter().filter(|w| **w == 0).count() != 1 {
            let (ra, rb) = (a.abort(), b.abort());
            panic!("round {round}: not exactly one login won\n{ra}\n{rb}");
        }
        let (won, lost) = if winner[0] == 0 { (a, b) } else { (b, a) };
        lost.abort();
        won.finish().assert_success();
    }
    let j = tool_json(&pam2.scratch, &["user", "show", "bob"]);
    assert_eq!(j["backup_codes_left"], 0, "{j}");
    assert_eq!(total(&[pam1.scratch.outbox(), pam2.scratch.outbox()]), 0);
}

/// The PAM path reaches Redis only when a login needs it; `smsotp doctor`
/// still opens the store at once, so a server that is down (or a wrong
/// URL) shows there, named.
#[test]
fn doctor_names_a_redis_that_is_down() {
    let _turn = turn();
    let url = format!("redis://127.0.0.1:{}", smsotp_e2e::closed_port());
    let store = store_table(&url, "e2e:", "connect_timeout = \"500ms\"\n");
    let (env, _svc) = pam_host("hosts-doctor", &store, &shared_key(), "", "");
    let pam_dir = env.scratch.path("pam.d");
    let sshd = env.scratch.write("sshd_config", "UsePAM yes\n", 0o644);
    let r = tool(
        &env.scratch,
        &[
            "doctor",
            "--no-network",
            "--sshd-config",
            sshd.to_str().unwrap(),
            "--pam-dir",
            pam_dir.to_str().unwrap(),
        ],
    );
    assert_ne!(r.code, 0, "{r}");
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("ERROR") && l.contains("cannot connect") && l.contains(&url)),
        "{r}"
    );
}
