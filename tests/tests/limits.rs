//! The limits beyond the user (issue #21) end to end: two PAM "hosts"
//! (pam_smsotp under pamtester, each its own scratch dir with config,
//! phone list, outbox and audit) and one smsotp-radiusd, all on one SQLite
//! store file, as hosts sharing a store would be. The per-number limit
//! counts the sends of every account of the number on all three; a
//! per-country limit in monitor mode sends and logs. The spend breaker
//! (`limits.daily_budget`) trips once for a PAM host and smsotp-radiusd
//! together, alerts once, shows in `smsotp status` and is reset by
//! `smsotp breaker reset`.
//!
//! Needs what tests/pam.rs and tests/radius.rs need, and `cargo build
//! --workspace`. Every server is on loopback, bounded in time and stopped
//! on drop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::time::Duration;

use smsotp_e2e::pamenv::{audit_lines, Login, PamEnv};
use smsotp_e2e::radiusd::{code, ClientSpec, Radiusd, Reply, Request, ServerSpec};
use smsotp_e2e::{run_tool, Outbox, Scratch};

/// One number, three accounts: alice and dave log in over PAM, carol over
/// RADIUS.
const SHARED_PHONE: &str = "+12015550123";
const CODE_SENT: &str = "Code sent to ******0123.";
const PROMPT: &str = "SMS code";
/// What a user over a limit beyond their own reads: the global text.
const SYSTEM_MAX: &str = "this system has sent its maximum";
const SECRET: &str = "e2e-secret-limits-41c7";
const NAS_PASSWORD: &str = "nas-pw-7713";
const REPLY_WAIT: Duration = Duration::from_secs(20);
const TOOL_LIMIT: Duration = Duration::from_secs(20);

fn phones(scratch: &Scratch) {
    scratch.phones(&[
        ("alice", SHARED_PHONE),
        ("dave", SHARED_PHONE),
        ("carol", SHARED_PHONE),
        ("erin", "+12015553123"),
    ]);
}

/// Writes `key` as `otp.key` (0600) into `scratch`; the `[otp]` table
/// naming it.
fn key_table(scratch: &Scratch, key: &[u8]) -> String {
    let path = scratch.path("otp.key");
    std::fs::write(&path, key).expect("write otp.key");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod otp.key");
    format!("[otp]\nkey_file = \"{}\"\n", path.display())
}

/// A PAM "host": its own scratch, the shared `store` table and `key`,
/// `limits`; one service `name`.
fn pam_host(name: &str, store: &str, key: &[u8], limits: &str) -> (PamEnv, String) {
    let mut env = PamEnv::new();
    phones(&env.scratch);
    let base = env.scratch.base_tables(true, true);
    let own = format!(
        "[store]\nkind = \"sqlite\"\npath = \"{}/state.db\"\n\n",
        env.scratch.dir.path().display()
    );
    assert!(base.contains(&own), "the scratch's [store] changed");
    let text = format!(
        "{limits}\n{}{}",
        key_table(&env.scratch, key),
        base.replace(&own, store)
    );
    env.scratch.write("smsotp.toml", &text, 0o600);
    let svc = env.smsotp_service(name, "");
    (env, svc)
}

fn first_round(srv: &Radiusd, user: &str, calling_station: Option<&str>) -> Reply {
    let n = srv.nas("127.0.0.1", "vpn");
    let mut req = Request::access(n.id()).user(user).password(NAS_PASSWORD);
    if let Some(c) = calling_station {
        // Calling-Station-Id (31): the end user's address.
        req = req.raw(31, c.as_bytes());
    }
    n.send_bytes(&n.encode(&req));
    let bytes = n
        .recv_bytes(REPLY_WAIT)
        .unwrap_or_else(|| panic!("no reply within {REPLY_WAIT:?}\n{}", srv.context()));
    let packet = smsotp_e2e::radiusd::check_reply(&bytes, req.id, &req.authenticator, &n.secret)
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.context()));
    Reply { packet, bytes }
}

/// Password, then `sent` ("Code sent to …") and the prompt; the login is
/// left open.
fn gets_a_code(env: &PamEnv, svc: &str, user: &str, sent: &str) -> Login {
    let mut login = env.login(svc, user);
    login.password().expect_text(sent).expect_prompt(PROMPT);
    login
}

fn total(outboxes: &[Outbox]) -> usize {
    outboxes.iter().map(Outbox::count).sum()
}

/// Every audit line of `scratch`, checked to hold no whole number.
fn audit(scratch: &Scratch) -> Vec<serde_json::Value> {
    let lines = audit_lines(scratch);
    for l in &lines {
        assert!(
            !l.to_string().contains("2015550123"),
            "an audit line holds the whole number: {l}"
        );
    }
    lines
}

/// `sms_per_number = "3/1d"` across two PAM hosts and a RADIUS server on
/// one store: three accounts of one number get three SMS in all, then
/// every host refuses the fourth with the global text and names the limit
/// in its audit. The per-country limit in monitor mode lets every send
/// through and logs each it would have refused.
#[test]
fn per_number_limit_counts_across_pam_hosts_and_radius() {
    let shared = Scratch::new();
    let store = format!(
        "[store]\nkind = \"sqlite\"\npath = \"{}\"\n\n",
        shared.path("state.db").display()
    );
    let key = smsotp_e2e::radiusd::random_bytes(32);
    let limits = "[limits]\nsms_per_number = \"3/1d\"\n\
                  sms_per_country = { US = \"1/1d\" }\nmonitor = [\"sms_per_country\"]\n";
    let (pam1, svc1) = pam_host("e2e-lim-1", &store, &key, limits);
    let (pam2, svc2) = pam_host("e2e-lim-2", &store, &key, limits);
    let rscratch = Scratch::new();
    phones(&rscratch);
    let mut spec = ServerSpec::new(vec![ClientSpec::new("vpn", "127.0.0.1", SECRET)]);
    spec.store = Some(store.clone());
    spec.extra = format!("{limits}\n{}", key_table(&rscratch, &key));
    let srv = Radiusd::start(&rscratch, spec);
    let outboxes = [&pam1.scratch, &pam2.scratch, &rscratch].map(Scratch::outbox);

    // check-config shows each limit with its mode.
    let r = run_tool(&pam1.scratch, &["--json", "check-config"], TOOL_LIMIT);
    assert_eq!(r.code, 0, "{r}");
    let j = r.json();
    let lim = &j["effective"]["limits"];
    assert_eq!(lim["sms_per_number"]["limit"], "3/1day", "{j}");
    assert_eq!(lim["sms_per_number"]["mode"], "enforce", "{j}");
    assert_eq!(lim["sms_per_country"]["mode"], "monitor", "{j}");
    assert_eq!(lim["sms_per_user"]["mode"], "enforce", "{j}");

    // alice on host 1, dave on host 2, carol over RADIUS: one number.
    let l1 = gets_a_code(&pam1, &svc1, "alice", CODE_SENT);
    let l2 = gets_a_code(&pam2, &svc2, "dave", CODE_SENT);
    let r = first_round(&srv, "carol", Some("::ffff:192.0.2.9"));
    srv.assert_code(&r, code::ACCESS_CHALLENGE, "carol's first round");
    l1.abort();
    l2.abort();
    assert_eq!(total(&outboxes), 3, "three SMS in all");

    // The fourth, on any host, is refused and sends nothing.
    let mut login = pam1.login(&svc1, "dave");
    login.password().expect_text(SYSTEM_MAX);
    login.finish().assert_failure().assert_not_saw(PROMPT);
    let r = first_round(&srv, "alice", None);
    srv.assert_code(&r, code::ACCESS_REJECT, "over the per-number limit");
    assert!(
        r.message().contains(SYSTEM_MAX),
        "RADIUS tells the global text: {}",
        r.message()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(total(&outboxes), 3, "no fourth SMS anywhere");

    let a1 = audit(&pam1.scratch);
    let refused = a1
        .iter()
        .find(|l| l["event"] == "reject" && l["reason"] == "rate_limited")
        .unwrap_or_else(|| panic!("no rate_limited reject on host 1: {a1:#?}"));
    assert_eq!(refused["limit"], "sms_per_number", "{refused}");
    assert_eq!(refused["user"], "dave", "{refused}");
    let ar = audit(&rscratch);
    assert!(
        ar.iter()
            .any(|l| l["reason"] == "rate_limited" && l["limit"] == "sms_per_number"),
        "{ar:#?}"
    );

    // Monitor mode: every US send after the first was over the country's
    // 1/1d, and went out all the same, with a warning that says so.
    let a2 = audit(&pam2.scratch);
    let monitored: Vec<&serde_json::Value> = a1
        .iter()
        .chain(&a2)
        .chain(&ar)
        .filter(|l| l["event"] == "limit_monitor")
        .collect();
    assert_eq!(monitored.len(), 2, "{monitored:#?}");
    for m in &monitored {
        assert_eq!(m["limit"], "sms_per_country", "{m}");
        assert!(
            m["detail"]
                .as_str()
                .is_some_and(|d| d.contains("region=US") && d.contains("would have refused")),
            "{m}"
        );
    }

    // Another number is not held back by the first one's limit (and is
    // only monitored for its country).
    let l = gets_a_code(&pam2, &svc2, "erin", "Code sent to ******3123.");
    l.abort();
    assert_eq!(total(&outboxes), 4);
}

/// `sms_per_source` over RADIUS: the Calling-Station-Id, in any spelling
/// of one address, is one source; a request without one is not counted.
#[test]
fn per_source_limit_reads_the_calling_station_id() {
    let scratch = Scratch::new();
    phones(&scratch);
    let spec = ServerSpec::new(vec![ClientSpec::new("vpn", "127.0.0.1", SECRET)])
        .extra("[limits]\nsms_per_source = \"1/1h\"\n");
    let srv = Radiusd::start(&scratch, spec);
    let r = first_round(&srv, "carol", Some("::ffff:192.0.2.9"));
    srv.assert_code(&r, code::ACCESS_CHALLENGE, "the source's first SMS");
    let r = first_round(&srv, "erin", Some(" 192.0.2.9"));
    srv.assert_code(&r, code::ACCESS_REJECT, "the source's second SMS");
    let r = first_round(&srv, "erin", Some("192.0.2.10"));
    srv.assert_code(&r, code::ACCESS_CHALLENGE, "another source");
    let r = first_round(&srv, "dave", None);
    srv.assert_code(&r, code::ACCESS_CHALLENGE, "no source known");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(scratch.outbox().count(), 3);
    let a = audit(&scratch);
    assert!(
        a.iter()
            .any(|l| l["limit"] == "sms_per_source" && l["user"] == "erin"),
        "{a:#?}"
    );
}

/// `daily_budget = 2` for a PAM host and smsotp-radiusd on one store: two
/// SMS go out, the third login (PAM) is refused and trips the breaker
/// with one alert line, the fourth (RADIUS) is refused without another;
/// `smsotp status --json` shows the trip, and `smsotp breaker reset`
/// (audited) lets the next login send.
#[test]
fn spend_breaker_trips_once_across_pam_and_radius_and_resets() {
    let shared = Scratch::new();
    let store = format!(
        "[store]\nkind = \"sqlite\"\npath = \"{}\"\n\n",
        shared.path("state.db").display()
    );
    let key = smsotp_e2e::radiusd::random_bytes(32);
    let limits = "[limits]\ndaily_budget = 2\n";
    let (pam, svc) = pam_host("e2e-brk-1", &store, &key, limits);
    let rscratch = Scratch::new();
    phones(&rscratch);
    let mut spec = ServerSpec::new(vec![ClientSpec::new("vpn", "127.0.0.1", SECRET)]);
    spec.store = Some(store.clone());
    spec.extra = format!("{limits}\n{}", key_table(&rscratch, &key));
    let srv = Radiusd::start(&rscratch, spec);
    let outboxes = [&pam.scratch, &rscratch].map(Scratch::outbox);

    let status = || {
        let r = run_tool(&pam.scratch, &["--json", "status"], TOOL_LIMIT);
        assert_eq!(r.code, 0, "{r}");
        r.json()
    };
    let j = status();
    assert_eq!(j["breaker"]["state"], "closed", "{j}");
    assert_eq!(j["breaker"]["budget"], "2", "{j}");

    let l = gets_a_code(&pam, &svc, "alice", CODE_SENT);
    l.abort();
    let r = first_round(&srv, "carol", None);
    srv.assert_code(&r, code::ACCESS_CHALLENGE, "the second SMS");
    assert_eq!(total(&outboxes), 2);

    // The third: refused with the global text, and the trip.
    let mut login = pam.login(&svc, "dave");
    login.password().expect_text(SYSTEM_MAX);
    login.finish().assert_failure().assert_not_saw(PROMPT);
    // The fourth, over RADIUS: refused, no second alert.
    let r = first_round(&srv, "erin", None);
    srv.assert_code(&r, code::ACCESS_REJECT, "breaker tripped");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(total(&outboxes), 2, "no SMS while tripped");

    let ap = audit(&pam.scratch);
    let ar = audit(&rscratch);
    let alerts: Vec<&serde_json::Value> = ap
        .iter()
        .chain(&ar)
        .filter(|l| l["event"] == "breaker_tripped")
        .collect();
    assert_eq!(alerts.len(), 1, "one alert per trip: {alerts:#?}");
    let a = alerts[0];
    assert_eq!(a["level"], "alert", "{a}");
    assert_eq!(a["user"], "dave", "{a}");
    assert!(
        a["detail"]
            .as_str()
            .is_some_and(|d| d.contains("spent 2 of daily_budget = 2 SMS")),
        "{a}"
    );
    assert!(
        ar.iter()
            .any(|l| l["reason"] == "rate_limited" && l["limit"] == "daily_budget"),
        "{ar:#?}"
    );

    // (smsotp-radiusd writes its SMS counts once a second.)
    let j = smsotp_e2e::status_when(&pam.scratch, |j| {
        let t = &j["counters"]["total"];
        t["sent"] == 2 && t["refused"]["daily_budget"] == 2
    });
    let b = &j["breaker"];
    assert_eq!(b["state"], "tripped", "{j}");
    assert_eq!(b["spent"], "2", "{j}");
    assert_eq!(b["trip"]["user"], "dave", "{j}");
    // The counters, from both hosts on the one store: two sent, two
    // refused by the budget (one PAM, one RADIUS).
    let t = &j["counters"]["total"];
    assert_eq!(t["sent"], 2, "{j}");
    assert_eq!(t["refused"]["daily_budget"], 2, "{j}");

    // The admin resets it; the next login sends.
    let r = run_tool(&pam.scratch, &["breaker", "reset"], TOOL_LIMIT);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("reset the spend breaker"), "{r}");
    let ap = audit(&pam.scratch);
    let reset = ap
        .iter()
        .find(|l| l["event"] == "breaker_reset")
        .unwrap_or_else(|| panic!("no breaker_reset line: {ap:#?}"));
    assert!(
        reset["detail"]
            .as_str()
            .is_some_and(|d| d.contains("(by admin:root)")),
        "{reset}"
    );
    assert_eq!(status()["breaker"]["state"], "closed");
    let r = first_round(&srv, "erin", None);
    srv.assert_code(&r, code::ACCESS_CHALLENGE, "after the reset");
    assert_eq!(total(&outboxes), 3);
}
