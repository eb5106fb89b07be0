//! smsotp-radiusd on a Redis store behind Sentinel, through a failover:
//! a master, its replica and three sentinels of the test's own
//! (`smsotp_e2e::sentinel`); the master is SIGKILLed mid-stream of
//! logins. Logins must resume once the sentinels have promoted the
//! replica, and what must not be lost (a lockout, a used backup code)
//! must still hold on the new master: those writes waited for the
//! replica before they were answered.

use std::time::{Duration, Instant};

use smsotp_e2e::radiusd::{code, ClientSpec, Nas, Radiusd, Reply, Request, ServerSpec};
use smsotp_e2e::sentinel::{query, Cluster, DOWN_AFTER, FAILOVER_TIMEOUT};
use smsotp_e2e::wrong_code as wrong;
use smsotp_e2e::{run_tool, Outbox, Scratch};

const SECRET: &str = "e2e-sentinel-secret-41c7";
/// What the user types as the password (the primary is "none").
const NAS_PASSWORD: &str = "nas-pw-8830";
const SMS_WAIT: Duration = Duration::from_secs(5);
const TOOL_LIMIT: Duration = Duration::from_secs(20);

fn send(srv: &Radiusd, nas: &Nas, user: &str, password: &str, state: Option<&[u8]>) -> Reply {
    let mut req = Request::access(nas.id()).user(user).password(password);
    if let Some(s) = state {
        req = req.state(s);
    }
    nas.exchange(&req, &|| srv.context())
}

fn expect(reply: &Reply, want: u8, what: &str, srv: &Radiusd) {
    srv.assert_code(reply, want, what);
}

/// A challenge for `user`: its State and the code the SMS brought.
fn challenge(srv: &Radiusd, nas: &Nas, outbox: &Outbox, user: &str) -> (Vec<u8>, String) {
    let seen = outbox.count();
    let r = send(srv, nas, user, NAS_PASSWORD, None);
    expect(
        &r,
        code::ACCESS_CHALLENGE,
        &format!("{user}: first round"),
        srv,
    );
    (r.state(), outbox.wait_beyond(seen, SMS_WAIT).code())
}

fn user_show(scratch: &Scratch, user: &str) -> serde_json::Value {
    let r = run_tool(scratch, &["--json", "user", "show", user], TOOL_LIMIT);
    assert_eq!(r.code, 0, "{r}");
    r.json()
}

#[test]
fn sentinel_failover_keeps_lockouts_and_used_backup_codes() {
    let started = Instant::now();
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let scratch = Scratch::new();
    scratch.phones(&[
        ("alice", "+12015550123"),
        ("bob", "+12015551123"),
        ("carol", "+12015552123"),
    ]);
    let key = scratch.path("shared-otp.key");
    let mut spec = ServerSpec::new(vec![ClientSpec::new("vpn", "127.0.0.1", SECRET)]);
    spec.store = Some(cluster.store_toml("e2e-sentinel:"));
    spec.extra = format!(
        "[otp]\nkey_file = \"{}\"\n\n[limits]\nlockout_after = 3\nlockout = \"10m\"\n\
         sms_per_user = \"100/1h\"\n",
        key.display()
    );
    let srv = Radiusd::start(&scratch, spec);
    let nas = srv.nas("127.0.0.1", "vpn");
    let outbox = scratch.outbox();

    // Two backup codes for alice, from the admin tool on the same config.
    let r = run_tool(
        &scratch,
        &["backup-codes", "generate", "alice", "--count", "2"],
        TOOL_LIMIT,
    );
    assert_eq!(r.code, 0, "{r}");
    let backup: Vec<String> = r
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.len() == 11 && l.as_bytes()[5] == b'-')
        .map(str::to_owned)
        .collect();
    assert_eq!(backup.len(), 2, "{r}");

    // An ordinary login.
    let (state, c) = challenge(&srv, &nas, &outbox, "carol");
    let r = send(&srv, &nas, "carol", &c, Some(&state));
    expect(&r, code::ACCESS_ACCEPT, "carol before the failover", &srv);

    // bob locks himself out: three wrong codes.
    let (state, c) = challenge(&srv, &nas, &outbox, "bob");
    let bad = wrong(&c);
    let mut last = send(&srv, &nas, "bob", &bad, Some(&state));
    for _ in 0..2 {
        expect(&last, code::ACCESS_CHALLENGE, "bob: a wrong code", &srv);
        last = send(&srv, &nas, "bob", &bad, Some(&last.state()));
    }
    expect(
        &last,
        code::ACCESS_REJECT,
        "bob: the third wrong code",
        &srv,
    );
    assert_eq!(user_show(&scratch, "bob")["locked"], true);

    // alice logs in with a backup code instead of the SMS code.
    let (state, _) = challenge(&srv, &nas, &outbox, "alice");
    let r = send(&srv, &nas, "alice", &backup[0], Some(&state));
    expect(&r, code::ACCESS_ACCEPT, "alice with a backup code", &srv);
    assert_eq!(user_show(&scratch, "alice")["backup_codes_left"], 1);

    // The master dies without a word (no AOF flush, no goodbye).
    let old_master = cluster.master.port;
    let killed = Instant::now();
    cluster.master.kill();

    // A stream of logins until one goes through on the new master.
    let limit = DOWN_AFTER + FAILOVER_TIMEOUT + Duration::from_secs(8);
    let mut refused = 0;
    loop {
        let seen = outbox.count();
        let r = send(&srv, &nas, "carol", NAS_PASSWORD, None);
        if r.code() == code::ACCESS_CHALLENGE {
            let c = outbox.wait_beyond(seen, SMS_WAIT).code();
            let ok = send(&srv, &nas, "carol", &c, Some(&r.state()));
            if ok.code() == code::ACCESS_ACCEPT {
                break;
            }
        } else {
            expect(
                &r,
                code::ACCESS_REJECT,
                "carol while the master is down",
                &srv,
            );
            refused += 1;
        }
        assert!(
            killed.elapsed() < limit,
            "logins did not resume within {limit:?} of the master's death ({refused} refused)\n{}\n{}",
            cluster.logs(),
            srv.context()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let resumed = killed.elapsed();
    let role = query::<redis::Role>(cluster.replica.port, &["ROLE"]);
    assert!(
        matches!(role, Ok(redis::Role::Primary { .. })),
        "the replica was promoted (old master {old_master}): {role:?}\n{}",
        cluster.logs()
    );

    // bob is still locked out: rejected at once, no SMS.
    let seen = outbox.count();
    let r = send(&srv, &nas, "bob", NAS_PASSWORD, None);
    expect(&r, code::ACCESS_REJECT, "bob after the failover", &srv);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(outbox.count(), seen, "no SMS to a locked-out user");
    assert_eq!(user_show(&scratch, "bob")["locked"], true);

    // alice's used backup code stays used; the other one works.
    assert_eq!(user_show(&scratch, "alice")["backup_codes_left"], 1);
    let (state, _) = challenge(&srv, &nas, &outbox, "alice");
    let r = send(&srv, &nas, "alice", &backup[0], Some(&state));
    assert_ne!(
        r.code(),
        code::ACCESS_ACCEPT,
        "a used backup code let alice in after the failover\n{}",
        srv.context()
    );
    let (state, _) = challenge(&srv, &nas, &outbox, "alice");
    let r = send(&srv, &nas, "alice", &backup[1], Some(&state));
    expect(&r, code::ACCESS_ACCEPT, "alice's unused backup code", &srv);

    let log = srv.log();
    for secret in [NAS_PASSWORD, backup[0].as_str(), backup[1].as_str()] {
        assert!(!log.contains(secret), "the log holds a secret:\n{log}");
    }
    eprintln!("logins resumed {resumed:?} after the master was killed ({refused} refused)");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}
