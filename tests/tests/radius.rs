//! smsotp-radiusd end to end: the real server on loopback ports with a
//! scratch config (sqlite store, or a test's own redis-server for the
//! `redis_store_*` test; outbox provider, audit file), driven by
//! FreeRADIUS's `radclient`, by packets crafted in [`smsotp_e2e::radiusd`]
//! (which check every reply's Response Authenticator and that
//! Message-Authenticator comes first and is right), and by
//! `pam_radius_auth.so` under pamtester and pam_wrapper.
//!
//! Needs the Debian packages `freeradius-utils libpam-radius-auth pamtester
//! libpam-wrapper libnss-wrapper` and a built server (`cargo build -p
//! smsotp-radiusd`, or `SMSOTP_RADIUSD=path`). The `harness_*` tests check the
//! packet code against radclient and need no server.
//!
//! Each test has its own scratch dir and its own port, so they run in
//! parallel. Waits for silence (no reply expected) take one second each;
//! `challenge_expired_*` sleeps 31 s (the minimum ttl of 30 s plus one), so
//! the suite takes about 35 s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use smsotp_e2e::pamenv::{audit_lines, PamEnv, PASSWORD};
use smsotp_e2e::radiusd::{
    assert_medians_alike, attr, code, encode_reply, hex, median_times, random_bytes,
    request_message_authenticator_ok, unhide_password, ClientSpec, Nas, Packet, Primary,
    RadclientRun, Radiusd, Reply, Request, ServerSpec, REPLY_TIMEOUT, SILENCE, STOP_TIMEOUT,
};
use smsotp_e2e::wrong_code as wrong;
use smsotp_e2e::{Outbox, Scratch};

const ALICE_PHONE: &str = "+12015550123";
const BOB_PHONE: &str = "+12015551123";
const ALICE_MASKED: &str = "******0123";
const SECRET_A: &str = "e2e-secret-A-9f2c";
const SECRET_B: &str = "e2e-secret-B-71d0";
/// What the user types as the password when the primary is "none".
const NAS_PASSWORD: &str = "nas-pw-5521";
const SMS_WAIT: Duration = Duration::from_secs(5);
const ACCEPT: &str = "Access-Accept";
const REJECT: &str = "Access-Reject";
const CHALLENGE: &str = "Access-Challenge";

fn phones(scratch: &Scratch) {
    scratch.phones(&[("alice", ALICE_PHONE), ("bob", BOB_PHONE)]);
}

/// The client "vpn" on 127.0.0.1 with secret A, challenge mode.
fn vpn() -> ClientSpec {
    ClientSpec::new("vpn", "127.0.0.1", SECRET_A)
}

/// A scratch dir with phones and a server for `spec`.
fn start(spec: ServerSpec) -> (Scratch, Radiusd) {
    let scratch = Scratch::new();
    phones(&scratch);
    let srv = Radiusd::start(&scratch, spec);
    (scratch, srv)
}

/// radclient's input: User-Name, User-Password (left out when `None`),
/// Message-Authenticator, and State when given.
fn rc_attrs(user: &str, password: Option<&str>, state: Option<&[u8]>) -> String {
    let mut t = format!("User-Name = \"{user}\"\n");
    if let Some(p) = password {
        t.push_str(&format!("User-Password = \"{p}\"\n"));
    }
    t.push_str("Message-Authenticator = 0x00\n");
    if let Some(s) = state {
        t.push_str(&format!("State = 0x{}\n", hex(s)));
    }
    t
}

fn assert_no_reply(run: &RadclientRun, what: &str, srv: &Radiusd) {
    assert!(
        run.no_reply() && run.output.contains("No reply from server"),
        "{what}: expected no reply\n--- radclient ---\n{}\n{}",
        run.output,
        srv.context()
    );
}

fn assert_code(reply: &Reply, expected: u8, what: &str, srv: &Radiusd) {
    srv.assert_code(reply, expected, what);
}

/// Access-Request(user, password) from `nas`; expects a Challenge carrying
/// a 16-byte State and an SMS; returns the reply and the SMS code.
fn challenge(
    srv: &Radiusd,
    nas: &Nas,
    outbox: &Outbox,
    user: &str,
    password: &str,
) -> (Reply, String) {
    let seen = outbox.count();
    let req = Request::access(nas.id()).user(user).password(password);
    let reply = nas.exchange(&req, &|| srv.context());
    assert_code(&reply, code::ACCESS_CHALLENGE, "first round", srv);
    assert_eq!(
        reply.state().len(),
        16,
        "State is 16 bytes: {}",
        reply.packet.describe()
    );
    let sms = outbox.wait_beyond(seen, SMS_WAIT);
    (reply, sms.code())
}

/// The follow-up: State and `answer` as the password.
fn follow_up(srv: &Radiusd, nas: &Nas, user: &str, state: &[u8], answer: &str) -> Reply {
    let req = Request::access(nas.id())
        .user(user)
        .password(answer)
        .state(state);
    nas.exchange(&req, &|| srv.context())
}

/// Asserts that neither the log nor the audit file holds any of `secrets`.
fn assert_not_logged(srv: &Radiusd, scratch: &Scratch, secrets: &[&str]) {
    let log = srv.log();
    let audit = std::fs::read_to_string(scratch.path("audit.jsonl")).unwrap_or_default();
    for s in secrets {
        assert!(!log.contains(s), "stderr holds {s:?}:\n{log}");
        assert!(!audit.contains(s), "audit holds {s:?}:\n{audit}");
    }
}

// ------------------------------------------------------------------ harness

/// radclient talks to an in-test server built from our packet code: our
/// decoder reads radclient's request (Message-Authenticator and
/// User-Password check out with the secret) and radclient accepts our
/// Challenge and Accept (Response Authenticator, Message-Authenticator).
#[test]
fn harness_packets_agree_with_radclient() {
    let scratch = Scratch::new();
    let secret_file = scratch.write("secret", SECRET_A, 0o600);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(REPLY_TIMEOUT)).expect("timeout");
    let addr = sock.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        for round in 0..2 {
            let (n, from) = sock.recv_from(&mut buf).expect("a request from radclient");
            let bytes = buf[..n].to_vec();
            let p = Packet::decode(&bytes).expect("radclient's packet decodes");
            assert!(
                request_message_authenticator_ok(&bytes, SECRET_A.as_bytes()),
                "Message-Authenticator of radclient's packet"
            );
            let pw = unhide_password(
                p.attr(attr::USER_PASSWORD).expect("User-Password"),
                SECRET_A.as_bytes(),
                &p.authenticator,
            );
            let reply = if round == 0 {
                encode_reply(
                    code::ACCESS_CHALLENGE,
                    p.id,
                    &p.authenticator,
                    &[
                        (attr::STATE, vec![0xab; 16]),
                        (attr::REPLY_MESSAGE, b"Code sent to ******0123.".to_vec()),
                        (attr::SESSION_TIMEOUT, 300u32.to_be_bytes().to_vec()),
                    ],
                    SECRET_A.as_bytes(),
                )
            } else {
                encode_reply(
                    code::ACCESS_ACCEPT,
                    p.id,
                    &p.authenticator,
                    &[],
                    SECRET_A.as_bytes(),
                )
            };
            sock.send_to(&reply, from).expect("reply");
            seen.push((String::from_utf8_lossy(&pw).into_owned(), p.state()));
        }
        seen
    });
    let target = addr.to_string();
    let first = smsotp_e2e::radiusd::radclient(
        &target,
        "auth",
        &secret_file,
        &rc_attrs("alice", Some("a-password-longer-than-16"), None),
        REPLY_TIMEOUT,
    );
    assert_eq!(
        first.received.as_deref(),
        Some(CHALLENGE),
        "{}",
        first.output
    );
    assert_eq!(
        first.attr("Reply-Message"),
        Some("Code sent to ******0123.")
    );
    assert_eq!(first.attr("Session-Timeout"), Some("300"));
    assert_eq!(first.state(), vec![0xab; 16]);
    let second = smsotp_e2e::radiusd::radclient(
        &target,
        "auth",
        &secret_file,
        &rc_attrs("alice", Some("123456"), Some(&first.state())),
        REPLY_TIMEOUT,
    );
    assert_eq!(
        second.received.as_deref(),
        Some(ACCEPT),
        "{}",
        second.output
    );
    let seen = server.join().expect("fake server");
    assert_eq!(seen[0], ("a-password-longer-than-16".into(), None));
    assert_eq!(seen[1], ("123456".into(), Some(vec![0xab; 16])));
}

/// radclient drops a reply whose Message-Authenticator is wrong, so a
/// `Received` line means the server's Message-Authenticator (when there)
/// checked out.
#[test]
fn harness_radclient_verifies_reply_message_authenticator() {
    let scratch = Scratch::new();
    let secret_file = scratch.write("secret", SECRET_A, 0o600);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(REPLY_TIMEOUT)).expect("timeout");
    let addr = sock.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let (n, from) = sock.recv_from(&mut buf).expect("a request");
        let p = Packet::decode(&buf[..n]).expect("decodes");
        // A reply authenticated with the right secret except for the
        // Message-Authenticator, which is the one for another secret.
        let good = encode_reply(
            code::ACCESS_ACCEPT,
            p.id,
            &p.authenticator,
            &[],
            SECRET_A.as_bytes(),
        );
        let other = encode_reply(code::ACCESS_ACCEPT, p.id, &p.authenticator, &[], b"other");
        let mut bad = good.clone();
        bad[22..38].copy_from_slice(&other[22..38]);
        let auth = smsotp_e2e::radiusd::md5(&[
            &[&bad[..4], &p.authenticator[..], &bad[20..]].concat(),
            SECRET_A.as_bytes(),
        ]);
        bad[4..20].copy_from_slice(&auth);
        sock.send_to(&bad, from).expect("reply");
    });
    let run = smsotp_e2e::radiusd::radclient(
        &addr.to_string(),
        "auth",
        &secret_file,
        &rc_attrs("alice", Some("pw"), None),
        Duration::from_secs(1),
    );
    server.join().expect("fake server");
    assert!(
        run.received.is_none() && run.output.contains("invalid Message-Authenticator"),
        "radclient accepted a reply with a bad Message-Authenticator:\n{}",
        run.output
    );
}

// ------------------------------------------------------------------ challenge

#[test]
fn challenge_right_code_accepts_and_state_is_single_use() {
    let (scratch, srv) = start(ServerSpec::new(vec![vpn()]));
    let outbox = scratch.outbox();

    let first = srv.radclient("vpn", "auth", &rc_attrs("alice", Some(NAS_PASSWORD), None));
    first.assert_received(CHALLENGE, &srv);
    let msg = first.attr("Reply-Message").unwrap_or_default();
    assert!(
        msg.starts_with(&format!("Code sent to {ALICE_MASKED}.")) && msg.contains("3 tries left"),
        "Reply-Message {msg:?}\n{}",
        first.output
    );
    let timeout: u32 = first
        .attr("Session-Timeout")
        .unwrap_or_else(|| panic!("no Session-Timeout:\n{}", first.output))
        .parse()
        .expect("Session-Timeout is a number");
    assert!(
        (280..=300).contains(&timeout),
        "Session-Timeout {timeout} (ttl 300 s)"
    );
    let state = first.state();
    assert_eq!(state.len(), 16, "State of 16 bytes: {}", first.output);
    let sms = outbox.wait_beyond(0, SMS_WAIT);
    assert_eq!(sms.to, ALICE_PHONE);
    let code = sms.code();

    let second = srv.radclient("vpn", "auth", &rc_attrs("alice", Some(&code), Some(&state)));
    second.assert_received(ACCEPT, &srv);

    // The same State again, even with the right code: used up.
    let again = srv.radclient("vpn", "auth", &rc_attrs("alice", Some(&code), Some(&state)));
    again.assert_received(REJECT, &srv);
    assert_eq!(outbox.count(), 1, "no SMS for a used State");

    // Our own packets: every reply has Message-Authenticator first (checked
    // inside exchange), and a second login gets a different State.
    let nas = srv.nas("127.0.0.1", "vpn");
    let (reply, code2) = challenge(&srv, &nas, &outbox, "alice", NAS_PASSWORD);
    assert_ne!(reply.state(), state, "a fresh State per challenge");
    let ok = follow_up(&srv, &nas, "alice", &reply.state(), &code2);
    assert_code(&ok, code::ACCESS_ACCEPT, "right code", &srv);

    // One decision line naming client and user; nothing secret logged.
    assert!(
        srv.log()
            .lines()
            .any(|l| l.contains("alice") && l.contains("vpn") && l.contains("accept")),
        "no log line with client, user and outcome\n{}",
        srv.context()
    );
    let audit = audit_lines(&scratch);
    assert!(
        audit.iter().any(|l| l["user"] == "alice"
            && l["event"] == "accept"
            && l["service"].as_str().unwrap_or_default().contains("vpn")),
        "no audit line for alice's accept on vpn: {audit:#?}"
    );
    assert_not_logged(
        &srv,
        &scratch,
        &[&code, &code2, NAS_PASSWORD, SECRET_A, "2015550123"],
    );
}

#[test]
fn challenge_wrong_codes_count_down_then_reject() {
    let (scratch, srv) = start(ServerSpec::new(vec![vpn()]));
    let outbox = scratch.outbox();
    let nas = srv.nas("127.0.0.1", "vpn");
    let (reply, code) = challenge(&srv, &nas, &outbox, "alice", NAS_PASSWORD);
    let state = reply.state();
    let bad = wrong(&code);

    // With radclient for the first wrong code.
    let r1 = srv.radclient("vpn", "auth", &rc_attrs("alice", Some(&bad), Some(&state)));
    r1.assert_received(CHALLENGE, &srv);
    assert_eq!(
        r1.attr("Reply-Message"),
        Some("Wrong code, 2 tries left."),
        "{}",
        r1.output
    );
    assert_eq!(r1.state(), state, "same State after a wrong code");

    let r2 = follow_up(&srv, &nas, "alice", &state, &bad);
    assert_code(&r2, code::ACCESS_CHALLENGE, "second wrong code", &srv);
    assert_eq!(r2.message(), "Wrong code, 1 try left.");
    assert_eq!(r2.state(), state);

    let r3 = follow_up(&srv, &nas, "alice", &state, &bad);
    assert_code(&r3, code::ACCESS_REJECT, "third wrong code", &srv);

    // Out of tries: even the right code is refused now.
    let r4 = follow_up(&srv, &nas, "alice", &state, &code);
    assert_code(
        &r4,
        code::ACCESS_REJECT,
        "right code after the last try",
        &srv,
    );
    assert_eq!(outbox.count(), 1);
    assert_not_logged(&srv, &scratch, &[&code, &bad]);
}

#[test]
fn challenge_empty_code_sends_a_new_one() {
    let spec =
        ServerSpec::new(vec![vpn()]).extra("[otp]\nresend = { max = 2, cooldown = \"0s\" }\n");
    let (scratch, srv) = start(spec);
    let outbox = scratch.outbox();
    let nas = srv.nas("127.0.0.1", "vpn");
    let (reply, first_code) = challenge(&srv, &nas, &outbox, "alice", NAS_PASSWORD);
    let state = reply.state();

    // An empty password: User-Password of 16 NUL bytes before hiding.
    let empty = Request::access(nas.id())
        .user("alice")
        .password("")
        .state(&state);
    assert_eq!(
        Packet::decode(&nas.encode(&empty))
            .expect("decodes")
            .attr(attr::USER_PASSWORD)
            .map(<[u8]>::len),
        Some(16)
    );
    let again = nas.exchange(&empty, &|| srv.context());
    assert_code(&again, code::ACCESS_CHALLENGE, "empty code", &srv);
    assert!(
        again
            .message()
            .starts_with(&format!("New code sent to {ALICE_MASKED}.")),
        "Reply-Message {:?}",
        again.message()
    );
    let sms = outbox.wait_beyond(1, SMS_WAIT);
    let new_code = sms.code();
    assert_eq!(outbox.count(), 2);
    let state2 = again.state();
    let ok = follow_up(&srv, &nas, "alice", &state2, &new_code);
    assert_code(&ok, code::ACCESS_ACCEPT, "the new code", &srv);
    let _ = first_code;
}

/// ttl 30 s: Session-Timeout says how long the code lives; after that the
/// State is refused, even with the right code, and nothing is sent.
#[test]
fn challenge_expired_state_is_rejected_without_sms() {
    let spec = ServerSpec::new(vec![vpn()]).extra("[otp]\nttl = \"30s\"\n");
    let (scratch, srv) = start(spec);
    let outbox = scratch.outbox();
    let nas = srv.nas("127.0.0.1", "vpn");
    let sent_at = Instant::now();
    let (reply, code) = challenge(&srv, &nas, &outbox, "alice", NAS_PASSWORD);
    let timeout = reply
        .packet
        .session_timeout()
        .unwrap_or_else(|| panic!("no Session-Timeout: {}", reply.packet.describe()));
    assert!(
        (28..=30).contains(&timeout),
        "Session-Timeout {timeout} for ttl 30 s"
    );

    std::thread::sleep(Duration::from_secs(5));
    let r = follow_up(&srv, &nas, "alice", &reply.state(), &wrong(&code));
    assert_code(&r, code::ACCESS_CHALLENGE, "a wrong code 5 s in", &srv);
    if let Some(left) = r.packet.session_timeout() {
        assert!(left <= 26, "Session-Timeout {left} 5 s into a 30 s code");
    }

    std::thread::sleep(Duration::from_secs(31).saturating_sub(sent_at.elapsed()));
    let r = follow_up(&srv, &nas, "alice", &reply.state(), &code);
    assert_code(&r, code::ACCESS_REJECT, "the right code after expiry", &srv);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(outbox.count(), 1, "no SMS for an expired State");
}

#[test]
fn challenge_forged_state_is_rejected_without_sms() {
    let (scratch, srv) = start(ServerSpec::new(vec![vpn()]));
    let outbox = scratch.outbox();
    let forged = random_bytes(16);
    let run = srv.radclient(
        "vpn",
        "auth",
        &rc_attrs("alice", Some("123456"), Some(&forged)),
    );
    run.assert_received(REJECT, &srv);
    // Also a forged State of another length.
    let nas = srv.nas("127.0.0.1", "vpn");
    let r = follow_up(&srv, &nas, "alice", &random_bytes(5), "123456");
    assert_code(&r, code::ACCESS_REJECT, "5-byte State", &srv);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(outbox.count(), 0, "no SMS for a forged State");
}

/// Two clients: "vpn" on 127.0.0.1 (secret A) and "fw" on 127.0.0.2
/// (secret B). A State handed to vpn is worthless from fw.
#[test]
fn challenge_state_from_another_client_is_rejected() {
    let spec = ServerSpec::new(vec![vpn(), ClientSpec::new("fw", "127.0.0.2/32", SECRET_B)]);
    let (scratch, srv) = start(spec);
    let outbox = scratch.outbox();
    let nas_a = srv.nas("127.0.0.1", "vpn");
    let (reply, code) = challenge(&srv, &nas_a, &outbox, "alice", NAS_PASSWORD);
    let state = reply.state();

    // radclient from 127.0.0.2 with fw's secret.
    let mut attrs = rc_attrs("alice", Some(&code), Some(&state));
    attrs.push_str("Packet-Src-IP-Address = 127.0.0.2\n");
    let run = smsotp_e2e::radiusd::radclient(
        &srv.v4_text(),
        "auth",
        &srv.secret_file("fw"),
        &attrs,
        REPLY_TIMEOUT,
    );
    assert!(
        run.output.contains("from 127.0.0.2:"),
        "radclient did not send from 127.0.0.2:\n{}",
        run.output
    );
    run.assert_received(REJECT, &srv);

    // The same with our own packets.
    let nas_b = srv.nas("127.0.0.2", "fw");
    let r = follow_up(&srv, &nas_b, "alice", &state, &code);
    assert_code(&r, code::ACCESS_REJECT, "vpn's State from fw", &srv);
    assert_eq!(outbox.count(), 1, "no SMS");
}

#[test]
fn challenge_state_for_another_user_is_rejected() {
    let (scratch, srv) = start(ServerSpec::new(vec![vpn()]));
    let outbox = scratch.outbox();
    let nas = srv.nas("127.0.0.1", "vpn");
    let (reply, code) = challenge(&srv, &nas, &outbox, "alice", NAS_PASSWORD);
    let r = follow_up(&srv, &nas, "bob", &reply.state(), &code);
    assert_code(
        &r,
        code::ACCESS_REJECT,
        "alice's State and code as bob",
        &srv,
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(outbox.count(), 1, "no SMS to bob");
}

// ------------------------------------------------------------------ append

#[test]
fn append_mode_password_then_password_and_code() {
    let (scratch, srv) = start(ServerSpec::new(vec![vpn().append()]));
    let outbox = scratch.outbox();
    let first = srv.radclient("vpn", "auth", &rc_attrs("alice", Some(NAS_PASSWORD), None));
    first.assert_received(REJECT, &srv);
    let msg = first.attr("Reply-Message").unwrap_or_default();
    assert!(
        msg.starts_with(&format!("Code sent to {ALICE_MASKED}")),
        "Reply-Message {msg:?}\n{}",
        first.output
    );
    assert!(first.attr("State").is_none(), "no State in append mode");
    let code = outbox.wait_beyond(0, SMS_WAIT).code();
    let second = srv.radclient(
        "vpn",
        "auth",
        &rc_attrs("alice", Some(&format!("{NAS_PASSWORD}{code}")), None),
    );
    second.assert_received(ACCEPT, &srv);
    assert_eq!(outbox.count(), 1);
    assert_not_logged(&srv, &scratch, &[&code, NAS_PASSWORD]);
}

// ------------------------------------------------------------------ primary = pam

/// A PamEnv (pam_matrix passdb with [`PASSWORD`] for every user) with a
/// service `name` for the server's password check.
/// `smsotp-radiusd --check` prints the config's warnings and still passes:
/// a shared secret under 16 bytes, an SMPP provider without password_file.
/// At 16 bytes and with a password_file there is none.
#[test]
fn check_prints_warnings_for_short_secrets_and_smpp_without_password() {
    let check = |secret: &str, smpp_extra: &str| -> (bool, String) {
        let scratch = Scratch::new();
        phones(&scratch);
        let client = ClientSpec::new("vpn", "127.0.0.1", secret);
        scratch.write("secret-vpn", secret, 0o600);
        let smpp = format!(
            "[[provider]]\nkind = \"smpp\"\nhost = \"127.0.0.1\"\nsystem_id = \"acme\"\n{smpp_extra}"
        );
        let spec = ServerSpec::new(vec![client]).providers(&smpp);
        let config = scratch.write("smsotp.toml", &spec.config_text(&scratch, 1812), 0o600);
        let out = std::process::Command::new(smsotp_e2e::radiusd::radiusd_path())
            .args(["--config", &config.display().to_string(), "--check"])
            .output()
            .expect("run smsotp-radiusd --check");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // 15 bytes: under the threshold that the advice names.
    let (ok, stderr) = check("0123456789abcde", "");
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("smsotp-radiusd: warning: radius client \"vpn\": the shared secret is only 15 bytes; use at least 16"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: ")
            && stderr.contains(": provider[0].password_file: is not set")
            && stderr.contains("section [[provider]]"),
        "{stderr}"
    );
    let (ok, stderr) = check(
        "0123456789abcdef",
        "password_file = \"/etc/smsotp/secrets/smpp\"\n",
    );
    assert!(ok && !stderr.contains("warning"), "{stderr}");
}

fn pam_primary(name: &str) -> (PamEnv, Primary) {
    let mut env = PamEnv::new();
    phones(&env.scratch);
    let line = env.matrix_line();
    env.service(name, &[line]);
    let primary = Primary::Pam {
        service: name.into(),
        service_dir: env.scratch.path("pam.d"),
    };
    (env, primary)
}

#[test]
fn pam_primary_wrong_password_rejects_without_sms() {
    let (env, primary) = pam_primary("e2e-radius-pw");
    let srv = Radiusd::start(&env.scratch, ServerSpec::new(vec![vpn()]).primary(primary));
    let outbox = env.scratch.outbox();
    let nas = srv.nas("127.0.0.1", "vpn");

    let wrong_pw = nas.exchange(
        &Request::access(nas.id())
            .user("alice")
            .password("not-the-password"),
        &|| srv.context(),
    );
    assert_code(&wrong_pw, code::ACCESS_REJECT, "wrong password", &srv);
    let unknown = nas.exchange(
        &Request::access(nas.id())
            .user("mallory")
            .password("not-the-password"),
        &|| srv.context(),
    );
    assert_code(&unknown, code::ACCESS_REJECT, "unknown user", &srv);
    assert_eq!(
        wrong_pw.packet.attrs_but_message_authenticator(),
        unknown.packet.attrs_but_message_authenticator(),
        "a wrong password must look like an unknown user"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(outbox.count(), 0, "no SMS after a wrong password");

    let run = srv.radclient("vpn", "auth", &rc_attrs("alice", Some(PASSWORD), None));
    run.assert_received(CHALLENGE, &srv);
    let code = outbox.wait_beyond(0, SMS_WAIT).code();
    let ok = srv.radclient(
        "vpn",
        "auth",
        &rc_attrs("alice", Some(&code), Some(&run.state())),
    );
    ok.assert_received(ACCEPT, &srv);
    assert_not_logged(&srv, &env.scratch, &[&code, PASSWORD, "not-the-password"]);
}

/// Issue #20 point 6: with the password checked here (`primary = "pam"`),
/// a wrong password of a user with a number, of a user without one
/// (carol) and any password of an unknown user get the same reply, in the
/// same time (medians of 30 interleaved tries within a factor of two), and
/// no SMS. Only the right password reaches the second factor.
#[test]
fn pam_primary_wrong_password_unknown_user_and_no_number_look_the_same() {
    let (env, primary) = pam_primary("e2e-radius-enum");
    let srv = Radiusd::start(&env.scratch, ServerSpec::new(vec![vpn()]).primary(primary));
    let outbox = env.scratch.outbox();
    let nas = srv.nas("127.0.0.1", "vpn");
    let ask = |user: &str| {
        let r = nas.exchange(
            &Request::access(nas.id())
                .user(user)
                .password("not-the-password"),
            &|| srv.context(),
        );
        assert_code(&r, code::ACCESS_REJECT, user, &srv);
        r.packet.attrs_but_message_authenticator()
    };
    let known = ask("alice");
    assert_eq!(ask("carol"), known, "no number vs a wrong password");
    assert_eq!(ask("mallory"), known, "unknown user vs a wrong password");
    let cases: [(&str, &dyn Fn()); 3] = [
        ("a wrong password (alice)", &|| {
            ask("alice");
        }),
        ("no number (carol)", &|| {
            ask("carol");
        }),
        ("an unknown user (mallory)", &|| {
            ask("mallory");
        }),
    ];
    let medians = median_times(30, &cases);
    assert_medians_alike(&cases, &medians, &srv.context());
    assert_eq!(outbox.count(), 0, "no SMS for a wrong password");
}

/// The same in append mode, where a user with a code pending (alice,
/// right after her password) has the end of the field tried as that code:
/// a wrong password still gets the reply an unknown user gets.
#[test]
fn pam_primary_append_mode_wrong_password_looks_like_an_unknown_user() {
    let (env, primary) = pam_primary("e2e-radius-enum-append");
    let srv = Radiusd::start(
        &env.scratch,
        ServerSpec::new(vec![vpn().append()]).primary(primary),
    );
    let outbox = env.scratch.outbox();
    let nas = srv.nas("127.0.0.1", "vpn");
    let ask = |user: &str, password: &str| {
        nas.exchange(
            &Request::access(nas.id()).user(user).password(password),
            &|| srv.context(),
        )
    };
    let first = ask("alice", PASSWORD);
    assert_code(&first, code::ACCESS_REJECT, "alice's password alone", &srv);
    assert!(
        first.message().starts_with("Code sent to"),
        "{}",
        first.message()
    );
    outbox.wait_beyond(0, SMS_WAIT);
    let wrong = "not-the-password-123456";
    let alice = ask("alice", wrong);
    assert_code(&alice, code::ACCESS_REJECT, "alice, wrong password", &srv);
    for user in ["carol", "mallory"] {
        let r = ask(user, wrong);
        assert_code(&r, code::ACCESS_REJECT, user, &srv);
        assert_eq!(
            r.packet.attrs_but_message_authenticator(),
            alice.packet.attrs_but_message_authenticator(),
            "{user} vs alice with a code pending"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(outbox.count(), 1, "no SMS for a wrong password");
}

// ------------------------------------------------------------------ Message-Authenticator

#[test]
fn message_authenticator_missing_bad_or_unknown_client_gets_no_reply() {
    let spec = ServerSpec::new(vec![vpn(), ClientSpec::new("fw", "127.0.0.2", SECRET_B)]);
    let (scratch, srv) = start(spec);
    let outbox = scratch.outbox();

    // Missing: radclient adds Message-Authenticator only when asked to.
    let no_ma = format!("User-Name = \"alice\"\nUser-Password = \"{NAS_PASSWORD}\"\n");
    let run = srv.radclient_silent("vpn", "auth", &no_ma);
    assert!(
        !run.output.contains("Message-Authenticator"),
        "radclient sent a Message-Authenticator:\n{}",
        run.output
    );
    assert_no_reply(&run, "no Message-Authenticator", &srv);

    // Wrong secret (fw's secret from vpn's address).
    let run = radclient_with_secret(&srv, "fw", &rc_attrs("alice", Some(NAS_PASSWORD), None));
    assert_no_reply(&run, "wrong secret", &srv);

    // Right secret, Message-Authenticator altered.
    let nas = srv.nas("127.0.0.1", "vpn");
    let req = Request::access(nas.id())
        .user("alice")
        .password(NAS_PASSWORD);
    let mut bytes = nas.encode(&req);
    bytes[25] ^= 0x40;
    nas.silent(&bytes, "altered Message-Authenticator", &|| srv.context());

    // Our own packet without Message-Authenticator.
    let req = Request::access(nas.id())
        .without_message_authenticator()
        .user("alice")
        .password(NAS_PASSWORD);
    nas.silent(
        &nas.encode(&req),
        "no Message-Authenticator (crafted)",
        &|| srv.context(),
    );

    // A Status-Server without it.
    let req = Request::status(nas.id()).without_message_authenticator();
    nas.silent(
        &nas.encode(&req),
        "Status-Server without Message-Authenticator",
        &|| srv.context(),
    );

    // An address no client entry covers, with a valid packet.
    let mark = srv.log_mark();
    let stranger = Nas::new("127.0.0.3".parse().expect("ip"), srv.v4(), SECRET_A);
    let req = Request::access(stranger.id())
        .user("alice")
        .password(NAS_PASSWORD);
    stranger.silent(&stranger.encode(&req), "unknown client 127.0.0.3", &|| {
        srv.context()
    });
    assert!(
        srv.wait_log("127.0.0.3", mark, Duration::from_secs(1))
            .is_some(),
        "no log line about the unknown client 127.0.0.3\n{}",
        srv.context()
    );
    // A flood from it: still no reply, and the log line is rate-limited.
    for _ in 0..100 {
        let req = Request::access(stranger.id())
            .user("alice")
            .password(NAS_PASSWORD);
        stranger.send_bytes(&stranger.encode(&req));
    }
    assert!(
        stranger.recv_bytes(SILENCE).is_none(),
        "a reply to the unknown client"
    );
    let lines = srv
        .log()
        .lines()
        .filter(|l| l.contains("127.0.0.3"))
        .count();
    assert!(
        lines < 50,
        "{lines} log lines for 101 packets from an unknown client: not rate-limited\n{}",
        srv.context()
    );

    assert_eq!(outbox.count(), 0, "no SMS for any dropped packet");
    // Still serving.
    let run = srv.radclient("vpn", "auth", &rc_attrs("alice", Some(NAS_PASSWORD), None));
    run.assert_received(CHALLENGE, &srv);
}

/// A client that may leave Message-Authenticator out (pam_radius_auth
/// 2.0.0) with limit_proxy_state: answered without it, but a request with
/// Proxy-State and no Message-Authenticator is dropped (BlastRADIUS). The
/// replies carry Message-Authenticator first all the same.
#[test]
fn legacy_client_without_message_authenticator() {
    let (scratch, srv) = start(ServerSpec::new(vec![vpn().legacy()]));
    let outbox = scratch.outbox();
    let nas = srv.nas("127.0.0.1", "vpn");

    let with_ps = Request::access(nas.id())
        .without_message_authenticator()
        .user("alice")
        .password(NAS_PASSWORD)
        .proxy_state(b"ps");
    nas.silent(
        &nas.encode(&with_ps),
        "Proxy-State without Message-Authenticator",
        &|| srv.context(),
    );
    assert_eq!(outbox.count(), 0, "no SMS for a dropped request");

    let plain = Request::access(nas.id())
        .without_message_authenticator()
        .user("alice")
        .password(NAS_PASSWORD);
    let r = nas.exchange(&plain, &|| srv.context());
    assert_code(
        &r,
        code::ACCESS_CHALLENGE,
        "no Message-Authenticator, legacy client",
        &srv,
    );
    let code = outbox.wait_beyond(0, SMS_WAIT).code();
    let ok = Request::access(nas.id())
        .without_message_authenticator()
        .user("alice")
        .password(&code)
        .state(&r.state());
    let ok = nas.exchange(&ok, &|| srv.context());
    assert_code(&ok, code::ACCESS_ACCEPT, "follow-up", &srv);

    // With Message-Authenticator the Proxy-State is fine, but a bad one is
    // still dropped.
    let r = nas.exchange(&Request::status(nas.id()).proxy_state(b"ps"), &|| {
        srv.context()
    });
    assert_code(
        &r,
        code::ACCESS_ACCEPT,
        "Status-Server with Proxy-State",
        &srv,
    );
    let mut bad = nas.encode(
        &Request::access(nas.id())
            .user("alice")
            .password(NAS_PASSWORD),
    );
    bad[30] ^= 1;
    nas.silent(
        &bad,
        "bad Message-Authenticator from a legacy client",
        &|| srv.context(),
    );
    assert_eq!(outbox.count(), 1);
}

/// radclient against the IPv4 listener with client `secret_of`'s secret.
fn radclient_with_secret(srv: &Radiusd, secret_of: &str, attrs: &str) -> RadclientRun {
    smsotp_e2e::radiusd::radclient(
        &srv.v4_text(),
        "auth",
        &srv.secret_file(secret_of),
        attrs,
        SILENCE,
    )
}

// ------------------------------------------------------------------ duplicates

#[test]
fn retransmit_gets_the_cached_reply_and_no_second_sms() {
    let (scratch, srv) = start(ServerSpec::new(vec![vpn()]));
    let outbox = scratch.outbox();
    let nas = srv.nas("127.0.0.1", "vpn");

    // After the reply came.
    let req = Request::access(nas.id())
        .user("alice")
        .password(NAS_PASSWORD);
    let bytes = nas.encode(&req);
    nas.send_bytes(&bytes);
    let r1 = nas.reply_to(&req, &|| srv.context());
    assert_code(&r1, code::ACCESS_CHALLENGE, "first copy", &srv);
    let code = outbox.wait_beyond(0, SMS_WAIT).code();
    nas.send_bytes(&bytes);
    let r2 = nas.reply_to(&req, &|| srv.context());
    assert_eq!(
        hex(&r1.bytes),
        hex(&r2.bytes),
        "the retransmit gets the same bytes"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(outbox.count(), 1, "one SMS for two copies");

    // The accepting follow-up retransmitted: Accept again, not "State used".
    let ok = Request::access(nas.id())
        .user("alice")
        .password(&code)
        .state(&r1.state());
    let ok_bytes = nas.encode(&ok);
    nas.send_bytes(&ok_bytes);
    let a1 = nas.reply_to(&ok, &|| srv.context());
    assert_code(&a1, code::ACCESS_ACCEPT, "follow-up", &srv);
    nas.send_bytes(&ok_bytes);
    let a2 = nas.reply_to(&ok, &|| srv.context());
    assert_eq!(
        hex(&a1.bytes),
        hex(&a2.bytes),
        "the retransmitted follow-up"
    );

    // Both copies back to back, the second while the first is in flight.
    let req = Request::access(nas.id())
        .user("alice")
        .password(NAS_PASSWORD);
    let b1 = burst(&srv, &nas, &req, 2);
    assert_code(&b1, code::ACCESS_CHALLENGE, "back to back", &srv);
    assert_eq!(outbox.count(), 2, "one SMS per login, not per copy");
    let sent = audit_lines(&scratch)
        .iter()
        .filter(|l| l["event"] == "sent")
        .count();
    assert_eq!(sent, 2, "two 'sent' audit events\n{}", srv.context());
}

#[test]
fn retransmit_in_flight_checks_the_password_once() {
    let (env, primary) = pam_primary("e2e-radius-dup");
    let srv = Radiusd::start(&env.scratch, ServerSpec::new(vec![vpn()]).primary(primary));
    let outbox = env.scratch.outbox();
    let nas = srv.nas("127.0.0.1", "vpn");
    let req = Request::access(nas.id()).user("alice").password(PASSWORD);
    let first = burst(&srv, &nas, &req, 3);
    assert_code(&first, code::ACCESS_CHALLENGE, "password", &srv);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        outbox.count(),
        1,
        "one SMS for three copies\n{}",
        srv.context()
    );
    let sent = audit_lines(&env.scratch)
        .iter()
        .filter(|l| l["event"] == "sent")
        .count();
    assert_eq!(sent, 1, "one 'sent' event\n{}", srv.context());

    // A wrong password sent three times at once.
    let req = Request::access(nas.id()).user("bob").password("wrong-pw");
    let r = burst(&srv, &nas, &req, 3);
    assert_code(&r, code::ACCESS_REJECT, "wrong password", &srv);
}

/// Sends `copies` copies of `req` back to back (the later ones while the
/// first is in flight), then one more after the reply came. Every reply must
/// be the same bytes; in-flight copies may go unanswered (RFC 5080 2.2.2:
/// the reply to the first is on its way), the late copy must get the cached
/// reply. Returns the reply.
fn burst(srv: &Radiusd, nas: &Nas, req: &Request, copies: usize) -> Reply {
    let bytes = nas.encode(req);
    for _ in 0..copies {
        nas.send_bytes(&bytes);
    }
    let first = nas.reply_to(req, &|| srv.context());
    let mut extra = 0;
    while let Some(b) = nas.recv_bytes(SILENCE) {
        extra += 1;
        assert!(
            extra < copies,
            "more replies than copies sent\n{}",
            srv.context()
        );
        assert_eq!(hex(&b), hex(&first.bytes), "a different reply to a copy");
    }
    eprintln!("burst: {copies} copies sent at once, {} replies", 1 + extra);
    nas.send_bytes(&bytes);
    let late = nas.reply_to(req, &|| srv.context());
    assert_eq!(
        hex(&late.bytes),
        hex(&first.bytes),
        "a late copy gets the cached reply"
    );
    first
}

/// A provider that takes a second to send, then appends the message to
/// slow-sms.txt in the scratch dir.
fn slow_provider(scratch: &Scratch) -> String {
    format!(
        "[[provider]]\nkind = \"command\"\nname = \"slow\"\nprogram = \"/bin/sh\"\n\
         args = ['-c', 'sleep 1; printf \"%s\\n\" \"$SMSOTP_MESSAGE\" >> {}']\ntimeout = \"10s\"\n",
        scratch.path("slow-sms.txt").display()
    )
}

/// The codes the slow provider sent so far.
fn slow_codes(scratch: &Scratch) -> Vec<String> {
    std::fs::read_to_string(scratch.path("slow-sms.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(smsotp_e2e::extract_code)
        .collect()
}

fn wait_slow_codes(scratch: &Scratch, n: usize) -> Vec<String> {
    let deadline = Instant::now() + SMS_WAIT;
    loop {
        let codes = slow_codes(scratch);
        if codes.len() >= n || Instant::now() > deadline {
            return codes;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// While the first copy waits for the (slow) SMS gateway, a retransmit is
/// not processed again; after the reply, a copy gets the cached bytes.
#[test]
fn retransmit_while_the_sms_is_being_sent_is_not_processed_again() {
    let scratch = Scratch::new();
    phones(&scratch);
    let spec = ServerSpec::new(vec![vpn()]).providers(&slow_provider(&scratch));
    let srv = Radiusd::start(&scratch, spec);
    let nas = srv.nas("127.0.0.1", "vpn");
    let req = Request::access(nas.id())
        .user("alice")
        .password(NAS_PASSWORD);
    let bytes = nas.encode(&req);
    nas.send_bytes(&bytes);
    std::thread::sleep(Duration::from_millis(300));
    nas.send_bytes(&bytes);
    let first = nas.reply_to(&req, &|| srv.context());
    assert_code(&first, code::ACCESS_CHALLENGE, "slow send", &srv);
    if let Some(b) = nas.recv_bytes(SILENCE) {
        assert_eq!(hex(&b), hex(&first.bytes), "a different reply to the copy");
    }
    nas.send_bytes(&bytes);
    let late = nas.reply_to(&req, &|| srv.context());
    assert_eq!(hex(&late.bytes), hex(&first.bytes), "the cached reply");
    std::thread::sleep(Duration::from_millis(1500));
    let codes = slow_codes(&scratch);
    assert_eq!(
        codes.len(),
        1,
        "one SMS for three copies\n{}",
        srv.context()
    );
    let ok = follow_up(&srv, &nas, "alice", &first.state(), &codes[0]);
    assert_code(&ok, code::ACCESS_ACCEPT, "the code", &srv);
}

/// SIGTERM while a request waits for the SMS gateway: the request is
/// finished (the NAS gets its Challenge, the code is sent), then exit 0.
#[test]
fn sigterm_finishes_the_request_in_flight() {
    let scratch = Scratch::new();
    phones(&scratch);
    let spec = ServerSpec::new(vec![vpn()]).providers(&slow_provider(&scratch));
    let mut srv = Radiusd::start(&scratch, spec);
    let nas = srv.nas("127.0.0.1", "vpn");
    let req = Request::access(nas.id())
        .user("alice")
        .password(NAS_PASSWORD);
    nas.send_bytes(&nas.encode(&req));
    std::thread::sleep(Duration::from_millis(300));
    srv.signal(libc::SIGTERM);
    let reply = nas.reply_to(&req, &|| srv.context());
    assert_code(&reply, code::ACCESS_CHALLENGE, "in flight at SIGTERM", &srv);
    let status = srv.terminate(STOP_TIMEOUT);
    match status {
        Some(s) => assert!(
            s.success(),
            "after SIGTERM: {}\n{}",
            smsotp_e2e::radiusd::describe_status(&s),
            srv.context()
        ),
        None => panic!(
            "still running {STOP_TIMEOUT:?} after SIGTERM\n{}",
            srv.context()
        ),
    }
    assert_eq!(wait_slow_codes(&scratch, 1).len(), 1, "the code was sent");
}

// ------------------------------------------------------------------ slow SMS gateways

/// A running `smsgw` (tests/src/bin/smsgw.rs): an HTTP SMS gateway on
/// loopback that answers after a delay, or never. Killed when dropped.
struct Gateway {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    log: std::path::PathBuf,
}

impl Gateway {
    /// `delay`: milliseconds, or "hang".
    fn start(scratch: &Scratch, delay: &str) -> Gateway {
        use std::io::BufRead;
        let log = scratch.path(&format!("gateway-{delay}.jsonl"));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_smsgw"))
            .args(["--listen", "127.0.0.1:0", "--delay", delay, "--log"])
            .arg(&log)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start smsgw");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        let Some(addr) = line.trim().strip_prefix("smsgw listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("smsgw did not start: {line:?}");
        };
        let addr = addr.parse().expect("smsgw's address");
        Gateway { child, addr, log }
    }

    /// The `[[provider]]` table that sends through it, giving up after
    /// `timeout`.
    fn provider(&self, timeout: &str) -> String {
        format!(
            "[[provider]]\nkind = \"http\"\nname = \"gateway\"\nurl = \"http://{}/sms\"\nmethod = \"POST\"\n\
             body = {{ to = \"{{number}}\", message = \"{{message}}\" }}\nallow_http = true\ntimeout = \"{timeout}\"\n",
            self.addr
        )
    }

    /// The requests it received, as (number, code).
    fn received(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                let to = v["to"].as_str().unwrap_or_default().to_owned();
                let code = smsotp_e2e::extract_code(v["message"].as_str().unwrap_or_default())
                    .unwrap_or_default();
                (to, code)
            })
            .collect()
    }

    /// The code of the first SMS to `number`.
    fn code_for(&self, number: &str) -> String {
        self.received()
            .into_iter()
            .find(|(to, _)| to == number)
            .map(|(_, c)| c)
            .unwrap_or_else(|| panic!("no SMS to {number}: {:?}", self.received()))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue #17: with one worker and a gateway that takes a second, a login
/// waiting for its SMS holds up neither Status-Server nor another user's
/// code: both are answered well before the slow send ends.
#[test]
fn a_slow_gateway_holds_up_only_the_login_waiting_for_it() {
    let scratch = Scratch::new();
    phones(&scratch);
    let gw = Gateway::start(&scratch, "1000");
    let mut spec = ServerSpec::new(vec![vpn()]).providers(&gw.provider("10s"));
    spec.workers = 1;
    let srv = Radiusd::start(&scratch, spec);

    // Bob has a challenge open (his SMS took the gateway's second).
    let nas_b = srv.nas("127.0.0.1", "vpn");
    let req = Request::access(nas_b.id())
        .user("bob")
        .password(NAS_PASSWORD);
    let bob = nas_b.exchange(&req, &|| srv.context());
    assert_code(&bob, code::ACCESS_CHALLENGE, "bob's first round", &srv);
    let bob_code = gw.code_for(BOB_PHONE);

    // Alice logs in: her SMS takes a second.
    let nas_a = srv.nas("127.0.0.1", "vpn");
    let alice_req = Request::access(nas_a.id())
        .user("alice")
        .password(NAS_PASSWORD);
    let alice_sent = Instant::now();
    nas_a.send_bytes(&nas_a.encode(&alice_req));
    std::thread::sleep(Duration::from_millis(150));

    // Meanwhile: Status-Server, and bob's code with his State.
    let nas = srv.nas("127.0.0.1", "vpn");
    let t = Instant::now();
    let alive = nas.exchange(&Request::status(nas.id()), &|| srv.context());
    let status_took = t.elapsed();
    assert_code(&alive, code::ACCESS_ACCEPT, "Status-Server", &srv);
    let t = Instant::now();
    let ok = follow_up(&srv, &nas_b, "bob", &bob.state(), &bob_code);
    let code_took = t.elapsed();
    assert_code(&ok, code::ACCESS_ACCEPT, "bob's code", &srv);
    assert!(
        alice_sent.elapsed() < Duration::from_millis(900),
        "the fast answers came only after {:?}, when alice's send was nearly done\n{}",
        alice_sent.elapsed(),
        srv.context()
    );
    eprintln!("during a 1 s send: Status-Server {status_took:?}, a code {code_took:?}");

    let alice = nas_a.reply_to(&alice_req, &|| srv.context());
    assert_code(&alice, code::ACCESS_CHALLENGE, "alice's first round", &srv);
    assert!(
        alice_sent.elapsed() >= Duration::from_millis(900),
        "alice's challenge came before the gateway answered: {:?}",
        alice_sent.elapsed()
    );
    assert_eq!(gw.received().len(), 2, "one SMS each");
}

/// Issue #17: three retransmits while a two-second send is in flight get
/// nothing or the one reply; the gateway gets one SMS, the password is
/// checked once.
#[test]
fn retransmits_during_a_slow_send_send_one_sms_and_check_the_password_once() {
    let mut env = PamEnv::new();
    phones(&env.scratch);
    // Every password check appends a line to checks.txt, then pam_matrix
    // checks the password.
    let checks = env.scratch.path("checks.txt");
    let script = env.scratch.write(
        "count-check.sh",
        &format!("#!/bin/sh\necho check >> {}\n", checks.display()),
        0o755,
    );
    let count_line = env.system_line(
        "optional",
        "pam_exec.so",
        &format!("quiet {}", script.display()),
    );
    let matrix = env.matrix_line();
    env.service("e2e-radius-slow", &[count_line, matrix]);
    let primary = Primary::Pam {
        service: "e2e-radius-slow".into(),
        service_dir: env.scratch.path("pam.d"),
    };
    let gw = Gateway::start(&env.scratch, "2000");
    let spec = ServerSpec::new(vec![vpn()])
        .primary(primary)
        .providers(&gw.provider("10s"));
    let srv = Radiusd::start(&env.scratch, spec);
    let nas = srv.nas("127.0.0.1", "vpn");
    let req = Request::access(nas.id()).user("alice").password(PASSWORD);
    let bytes = nas.encode(&req);
    nas.send_bytes(&bytes);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(400));
        nas.send_bytes(&bytes);
    }
    let first = nas.reply_to(&req, &|| srv.context());
    assert_code(&first, code::ACCESS_CHALLENGE, "the slow first round", &srv);
    while let Some(b) = nas.recv_bytes(SILENCE) {
        assert_eq!(hex(&b), hex(&first.bytes), "a different reply to a copy");
    }
    // After the reply: the cached bytes.
    nas.send_bytes(&bytes);
    let late = nas.reply_to(&req, &|| srv.context());
    assert_eq!(hex(&late.bytes), hex(&first.bytes), "the cached reply");
    assert_eq!(
        gw.received().len(),
        1,
        "one SMS for four copies\n{}",
        srv.context()
    );
    let checked = std::fs::read_to_string(&checks).unwrap_or_default();
    assert_eq!(
        checked.lines().count(),
        1,
        "one password check for four copies\n{}",
        srv.context()
    );
    let ok = follow_up(
        &srv,
        &nas,
        "alice",
        &first.state(),
        &gw.code_for(ALICE_PHONE),
    );
    assert_code(&ok, code::ACCESS_ACCEPT, "the code", &srv);
}

/// Issue #17: with `max_pending_sends = 2` and a gateway that never
/// answers, a third login is dropped (not held), one warning says so,
/// Status-Server and answers with a State are still answered at once, and
/// the third login's retransmit is decided once a send has given up.
#[test]
fn a_full_send_lane_drops_a_login_until_a_send_ends() {
    let scratch = Scratch::new();
    scratch.phones(&[
        ("alice", ALICE_PHONE),
        ("bob", BOB_PHONE),
        ("carol", "+12015552123"),
    ]);
    let gw = Gateway::start(&scratch, "hang");
    let mut spec = ServerSpec::new(vec![vpn()]).providers(&gw.provider("3s"));
    spec.max_pending_sends = Some(2);
    let srv = Radiusd::start(&scratch, spec);
    let started = Instant::now();
    let mut waiting = Vec::new();
    for user in ["alice", "bob"] {
        let nas = srv.nas("127.0.0.1", "vpn");
        let req = Request::access(nas.id()).user(user).password(NAS_PASSWORD);
        nas.send_bytes(&nas.encode(&req));
        waiting.push((nas, req));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mark = srv.log_mark();
    let carol = srv.nas("127.0.0.1", "vpn");
    let carol_req = Request::access(carol.id())
        .user("carol")
        .password(NAS_PASSWORD);
    let carol_bytes = carol.encode(&carol_req);
    carol.silent(&carol_bytes, "a login beyond the bound", &|| srv.context());
    assert!(
        srv.wait_log("send_lane_full", mark, Duration::from_secs(1))
            .is_some(),
        "the drop is logged\n{}",
        srv.context()
    );

    // The fast lane works meanwhile.
    let nas = srv.nas("127.0.0.1", "vpn");
    let t = Instant::now();
    let alive = nas.exchange(&Request::status(nas.id()), &|| srv.context());
    assert_code(&alive, code::ACCESS_ACCEPT, "Status-Server", &srv);
    let unknown = follow_up(&srv, &nas, "alice", &random_bytes(16), "123456");
    assert_code(&unknown, code::ACCESS_REJECT, "a State never issued", &srv);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "answers that need no SMS took {:?}",
        t.elapsed()
    );

    // The two sends give up after the provider's 3 s: rejected.
    for (nas, req) in &waiting {
        let r = nas.reply_to(req, &|| srv.context());
        assert_code(&r, code::ACCESS_REJECT, "a send that timed out", &srv);
    }
    assert!(started.elapsed() >= Duration::from_millis(2900));
    // Carol's retransmit now finds room: decided once, through the same
    // hanging gateway.
    carol.send_bytes(&carol_bytes);
    let r = carol.reply_to(&carol_req, &|| srv.context());
    assert_code(&r, code::ACCESS_REJECT, "the retransmit, decided", &srv);
    let got: Vec<String> = gw.received().into_iter().map(|(to, _)| to).collect();
    assert_eq!(
        got.len(),
        3,
        "one request per login, none for the dropped copy: {got:?}"
    );
    assert_eq!(
        srv.log().matches("send_lane_full").count(),
        1,
        "one warning\n{}",
        srv.context()
    );
}

// ------------------------------------------------------------------ Status-Server, Proxy-State

#[test]
fn status_server_and_logins_over_ipv4_and_ipv6() {
    let spec = ServerSpec::new(vec![vpn(), ClientSpec::new("v6", "::1", SECRET_B)]);
    let (scratch, srv) = start(spec);
    let run = srv.radclient("vpn", "status", "Message-Authenticator = 0x00\n");
    run.assert_received(ACCEPT, &srv);
    let run6 = smsotp_e2e::radiusd::radclient(
        &srv.v6_text(),
        "status",
        &srv.secret_file("v6"),
        "Message-Authenticator = 0x00\n",
        REPLY_TIMEOUT,
    );
    run6.assert_received(ACCEPT, &srv);
    let nas6 = srv.nas("::1", "v6");
    let r = nas6.exchange(&Request::status(nas6.id()), &|| srv.context());
    assert_code(&r, code::ACCESS_ACCEPT, "Status-Server over IPv6", &srv);

    // A whole login over IPv6, from the ::1 client.
    let outbox = scratch.outbox();
    let (reply, code) = challenge(&srv, &nas6, &outbox, "bob", NAS_PASSWORD);
    let ok = follow_up(&srv, &nas6, "bob", &reply.state(), &code);
    assert_code(&ok, code::ACCESS_ACCEPT, "login over IPv6", &srv);
}

#[test]
fn proxy_state_is_echoed_in_order() {
    let (scratch, srv) = start(ServerSpec::new(vec![vpn()]));
    let outbox = scratch.outbox();
    let nas = srv.nas("127.0.0.1", "vpn");
    let ps1 = b"\x01first-proxy".to_vec();
    let ps2 = vec![0xff, 0x00, 0x7f];

    let req = Request::status(nas.id())
        .proxy_state(&ps1)
        .proxy_state(&ps2);
    let r = nas.exchange(&req, &|| srv.context());
    assert_code(&r, code::ACCESS_ACCEPT, "Status-Server", &srv);
    assert_eq!(r.packet.all(attr::PROXY_STATE), vec![&ps1[..], &ps2[..]]);

    let req = Request::access(nas.id())
        .proxy_state(&ps1)
        .user("alice")
        .password(NAS_PASSWORD)
        .proxy_state(&ps2);
    let r = nas.exchange(&req, &|| srv.context());
    assert_code(&r, code::ACCESS_CHALLENGE, "Access-Request", &srv);
    assert_eq!(r.packet.all(attr::PROXY_STATE), vec![&ps1[..], &ps2[..]]);
    let code = outbox.wait_beyond(0, SMS_WAIT).code();

    let req = Request::access(nas.id())
        .user("alice")
        .password(&code)
        .state(&r.state())
        .proxy_state(&ps2)
        .proxy_state(&ps1);
    let ok = nas.exchange(&req, &|| srv.context());
    assert_code(&ok, code::ACCESS_ACCEPT, "follow-up", &srv);
    assert_eq!(ok.packet.all(attr::PROXY_STATE), vec![&ps2[..], &ps1[..]]);

    // radclient agrees.
    let run = srv.radclient(
        "vpn",
        "status",
        "Message-Authenticator = 0x00\nProxy-State = 0x01\nProxy-State = 0x0202\n",
    );
    run.assert_received(ACCEPT, &srv);
    assert_eq!(
        run.all("Proxy-State"),
        vec!["0x01", "0x0202"],
        "{}",
        run.output
    );
}

// ------------------------------------------------------------------ malformed

/// Sets the length field.
fn with_length(mut b: Vec<u8>, len: u16) -> Vec<u8> {
    b[2..4].copy_from_slice(&len.to_be_bytes());
    b
}

/// A valid request's bytes with `tail` appended and the length field
/// (and Message-Authenticator) made to match.
fn with_tail(nas: &Nas, req: &Request, tail: &[u8]) -> Vec<u8> {
    let mut b = nas.encode(req);
    b.extend_from_slice(tail);
    let len = b.len() as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    // Message-Authenticator is the first attribute: recompute it.
    b[22..38].fill(0);
    let mac = smsotp_e2e::radiusd::hmac_md5(&nas.secret, &b);
    b[22..38].copy_from_slice(&mac);
    b
}

#[test]
fn malformed_packets_are_dropped_and_the_server_survives() {
    let (scratch, srv) = start(ServerSpec::new(vec![vpn()]));
    let outbox = scratch.outbox();
    let nas = srv.nas("127.0.0.1", "vpn");
    let base = || {
        Request::access(nas.id())
            .user("alice")
            .password(NAS_PASSWORD)
    };
    let good = nas.encode(&base());
    let glen = good.len() as u16;

    let mut long_attrs = Vec::new();
    while 20 + 18 + long_attrs.len() + 255 <= 4097 {
        long_attrs.extend_from_slice(&[26, 255]);
        long_attrs.extend_from_slice(&[0u8; 253]);
    }
    let fill = 4097 - 20 - 18 - long_attrs.len();
    long_attrs.extend_from_slice(&[26, fill as u8]);
    long_attrs.resize(4097 - 20 - 18, 0);
    let big = {
        let req = Request::access(nas.id());
        with_tail(&nas, &req, &long_attrs)
    };
    assert_eq!(big.len(), 4097);
    assert!(
        Packet::decode(&big).is_ok(),
        "the 4097-byte packet is otherwise well formed"
    );

    let pw15 = {
        let req = Request::access(nas.id())
            .user("alice")
            .raw(attr::USER_PASSWORD, &[0x55; 15]);
        nas.encode(&req)
    };
    let pw144 = {
        let req = Request::access(nas.id())
            .user("alice")
            .raw(attr::USER_PASSWORD, &[0x55; 144]);
        nas.encode(&req)
    };
    let pw0 = {
        let req = Request::access(nas.id())
            .user("alice")
            .raw(attr::USER_PASSWORD, &[]);
        nas.encode(&req)
    };

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty datagram", Vec::new()),
        ("truncated to 10 bytes", good[..10].to_vec()),
        ("19-byte datagram", good[..19].to_vec()),
        ("length field 19", with_length(good.clone(), 19)),
        ("length field 5000", with_length(good.clone(), 5000)),
        (
            "length field past the datagram",
            with_length(good.clone(), glen + 10),
        ),
        ("zero-length attribute", with_tail(&nas, &base(), &[1, 0])),
        (
            "attribute length 1",
            with_tail(&nas, &base(), &[1, 1, 0x61]),
        ),
        (
            "attribute past the end",
            with_tail(&nas, &base(), &[1, 10, 0x61, 0x62]),
        ),
        ("lone attribute type byte", with_tail(&nas, &base(), &[1])),
        ("User-Password of 15 bytes", pw15),
        ("User-Password of 144 bytes", pw144),
        ("User-Password of 0 bytes", pw0),
        ("4097-byte datagram", big),
    ];
    for (what, bytes) in &cases {
        let before = srv.log_mark();
        nas.silent(bytes, what, &|| srv.context());
        assert!(
            srv.running(),
            "the server died after: {what}\n{}",
            srv.context()
        );
        assert!(
            srv.log_mark() > before,
            "nothing logged about: {what}\n{}",
            srv.context()
        );
    }
    assert_eq!(outbox.count(), 0, "no SMS for a malformed packet");

    let r = nas.exchange(&base(), &|| srv.context());
    assert_code(
        &r,
        code::ACCESS_CHALLENGE,
        "a good request afterwards",
        &srv,
    );
}

// ------------------------------------------------------------------ restart, reload

#[test]
fn restart_mid_challenge_keeps_the_challenge() {
    let (scratch, mut srv) = start(ServerSpec::new(vec![vpn()]));
    let outbox = scratch.outbox();
    let nas = srv.nas("127.0.0.1", "vpn");
    let (reply, code) = challenge(&srv, &nas, &outbox, "alice", NAS_PASSWORD);

    let status = srv.terminate(STOP_TIMEOUT);
    match status {
        Some(s) => assert!(
            s.success(),
            "SIGTERM: {}\n{}",
            smsotp_e2e::radiusd::describe_status(&s),
            srv.context()
        ),
        None => panic!(
            "still running {STOP_TIMEOUT:?} after SIGTERM\n{}",
            srv.context()
        ),
    }
    srv.restart();
    let ok = follow_up(&srv, &nas, "alice", &reply.state(), &code);
    assert_code(&ok, code::ACCESS_ACCEPT, "follow-up after a restart", &srv);
    assert_eq!(outbox.count(), 1);
}

#[test]
fn sighup_keeps_the_old_config_when_the_new_one_is_bad() {
    let spec = ServerSpec::new(vec![vpn()]);
    let (scratch, srv) = start(spec.clone());
    let good_text = std::fs::read_to_string(&srv.config).expect("config");
    let nas = srv.nas("127.0.0.1", "vpn");

    // A syntax error.
    let mark = srv.log_mark();
    scratch.write("smsotp.toml", &format!("{good_text}\n[radius\n"), 0o600);
    srv.signal(libc::SIGHUP);
    assert!(
        srv.wait_log("reload failed", mark, Duration::from_secs(5))
            .is_some(),
        "no 'reload failed' after SIGHUP with a broken config\n{}",
        srv.context()
    );
    let r = nas.exchange(&Request::status(nas.id()), &|| srv.context());
    assert_code(
        &r,
        code::ACCESS_ACCEPT,
        "Status-Server after a failed reload",
        &srv,
    );
    let r = nas.exchange(
        &Request::access(nas.id())
            .user("alice")
            .password(NAS_PASSWORD),
        &|| srv.context(),
    );
    assert_code(
        &r,
        code::ACCESS_CHALLENGE,
        "Access-Request after a failed reload",
        &srv,
    );

    // A good config with one more client: after the reload it is served.
    let mut spec2 = spec.clone();
    let extra = ClientSpec::new("lab", "127.0.0.4", SECRET_B);
    scratch.write(&format!("secret-{}", extra.name), SECRET_B, 0o600);
    spec2.clients.push(extra);
    let lab = Nas::new("127.0.0.4".parse().expect("ip"), srv.v4(), SECRET_B);
    lab.silent(
        &lab.encode(&Request::status(lab.id())),
        "127.0.0.4 before it is configured",
        &|| srv.context(),
    );
    let mark = srv.log_mark();
    scratch.write("smsotp.toml", &spec2.config_text(&scratch, srv.port), 0o600);
    srv.signal(libc::SIGHUP);
    let Some(end) = srv.wait_log("reloaded", mark, Duration::from_secs(5)) else {
        panic!(
            "no 'reloaded' after SIGHUP with a good config\n{}",
            srv.context()
        );
    };
    let _ = end;
    let r = lab.exchange(&Request::status(lab.id()), &|| srv.context());
    assert_code(
        &r,
        code::ACCESS_ACCEPT,
        "the client added by the reload",
        &srv,
    );
    assert!(srv.running());
}

#[test]
fn phone_lists_are_checked_at_start_and_after_a_reload() {
    let scratch = Scratch::new();
    // Line 2 is no number at all; the others are fine.
    scratch.phones(&[
        ("alice", ALICE_PHONE),
        ("mallory", "12"),
        ("bob", BOB_PHONE),
    ]);
    let srv = Radiusd::start(&scratch, ServerSpec::new(vec![vpn()]));
    let wait = Duration::from_secs(10);
    let Some(end) = srv.wait_log("phone lists checked: 2 numbers valid, 1 not", 0, wait) else {
        panic!("no phone-list summary at start\n{}", srv.context());
    };
    let log = srv.log();
    let bad = log[..end]
        .lines()
        .find(|l| l.contains("event=phone_list") && l.contains("mallory"))
        .unwrap_or_else(|| panic!("the bad entry is not named\n{log}"));
    assert!(bad.contains("phones.toml:2:"), "no file:line in {bad}");
    // Logins go on: alice gets her challenge and her code.
    let nas = srv.nas("127.0.0.1", "vpn");
    let outbox = scratch.outbox();
    let (reply, code) = challenge(&srv, &nas, &outbox, "alice", NAS_PASSWORD);
    let ok = follow_up(&srv, &nas, "alice", &reply.state(), &code);
    assert_code(&ok, code::ACCESS_ACCEPT, "alice after the check", &srv);

    // Fixed, then reloaded: checked again, all good.
    scratch.phones(&[
        ("alice", ALICE_PHONE),
        ("mallory", "+12025550188"),
        ("bob", BOB_PHONE),
    ]);
    let mark = srv.log_mark();
    srv.signal(libc::SIGHUP);
    assert!(
        srv.wait_log("phone lists checked: 3 numbers valid, 0 not", mark, wait)
            .is_some(),
        "no phone-list summary after the reload\n{}",
        srv.context()
    );
}

// ------------------------------------------------------------------ pam_radius_auth

/// pam_radius_auth.so as the NAS: pamtester asks for the password, the
/// module sends it, shows the Challenge's Reply-Message as the next prompt
/// and sends the answer with State.
fn pam_radius_setup(tag: &str) -> (PamEnv, Radiusd, String) {
    let (mut env, primary) = pam_primary(&format!("{tag}-primary"));
    let client = vpn().legacy();
    let srv = Radiusd::start(&env.scratch, ServerSpec::new(vec![client]).primary(primary));
    let conf = env.scratch.write(
        "pam_radius_auth.conf",
        &format!("127.0.0.1:{} {SECRET_A} 3\n", srv.port),
        0o600,
    );
    let module = pam_radius_module();
    let line = format!("auth required {} conf={}", module.display(), conf.display());
    let svc = env.service(&format!("{tag}-nas"), &[line]);
    (env, srv, svc)
}

fn pam_radius_module() -> std::path::PathBuf {
    [
        "/lib/x86_64-linux-gnu/security/pam_radius_auth.so",
        "/usr/lib/x86_64-linux-gnu/security/pam_radius_auth.so",
        "/lib/aarch64-linux-gnu/security/pam_radius_auth.so",
        "/usr/lib/aarch64-linux-gnu/security/pam_radius_auth.so",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or_else(|| {
        panic!(
            "pam_radius_auth.so not found; apt-get install -y {}",
            smsotp_e2e::radiusd::PACKAGES
        )
    })
}

#[test]
fn pam_radius_auth_logs_in_with_the_code() {
    let (env, srv, svc) = pam_radius_setup("e2e-prad-ok");
    let outbox = env.scratch.outbox();
    let mut login = env.login(&svc, "alice");
    login
        .expect_prompt("Password")
        .answer(PASSWORD)
        .expect_prompt(&format!("Code sent to {ALICE_MASKED}"));
    login.answer_code_from_outbox(&outbox, 0);
    let out = login.finish();
    assert!(
        out.success,
        "pam_radius_auth login failed:\n{out}\n{}",
        srv.context()
    );
    assert_eq!(outbox.count(), 1);
}

#[test]
fn pam_radius_auth_wrong_codes_fail() {
    let (env, srv, svc) = pam_radius_setup("e2e-prad-bad");
    let outbox = env.scratch.outbox();
    let mut login = env.login(&svc, "alice");
    login
        .expect_prompt("Password")
        .answer(PASSWORD)
        .expect_prompt(&format!("Code sent to {ALICE_MASKED}"));
    let code = outbox.wait_beyond(0, SMS_WAIT).code();
    let bad = wrong(&code);
    login
        .answer(&bad)
        .expect_prompt("Wrong code, 2 tries left.")
        .answer(&bad)
        .expect_prompt("Wrong code, 1 try left.")
        .answer(&bad);
    let out = login.finish();
    assert!(!out.success, "login with wrong codes succeeded:\n{out}");
    assert!(
        !out.timed_out && out.signal.is_none(),
        "pamtester hung or crashed:\n{out}\n{}",
        srv.context()
    );
    assert!(
        out.pam_result()
            .is_some_and(|r| r.contains("Authentication failure")),
        "expected an authentication failure:\n{out}\n{}",
        srv.context()
    );
}

#[test]
fn pam_radius_auth_wrong_password_sends_no_sms() {
    let (env, srv, svc) = pam_radius_setup("e2e-prad-pw");
    let outbox = env.scratch.outbox();
    let mut login = env.login(&svc, "alice");
    login.expect_prompt("Password").answer("not-the-password");
    let out = login.finish();
    assert!(
        !out.success,
        "login with a wrong password succeeded:\n{out}"
    );
    assert!(!out.timed_out, "pamtester hung:\n{out}\n{}", srv.context());
    assert_eq!(outbox.count(), 0, "no SMS after a wrong password");
}

// ------------------------------------------------------------------ shared store

/// pam_smsotp and the server read the same config and store: a user locked
/// out by wrong codes over PAM is locked out over RADIUS too.
#[test]
fn lockout_through_pam_holds_over_radius() {
    let mut env = PamEnv::new();
    phones(&env.scratch);
    let srv = Radiusd::start(
        &env.scratch,
        ServerSpec::new(vec![vpn()]).extra("[limits]\nlockout_after = 3\nlockout = \"60s\"\n"),
    );
    let svc = env.smsotp_service("e2e-radius-lockout", "");
    let outbox = env.scratch.outbox();
    let mut login = env.login(&svc, "alice");
    login.password().expect_prompt("SMS code");
    let code = outbox.wait_beyond(0, SMS_WAIT).code();
    let bad = wrong(&code);
    for left in ["Wrong code, 2 tries left.", "Wrong code, 1 try left."] {
        login
            .answer(&bad)
            .expect_text(left)
            .expect_prompt("SMS code");
    }
    login.answer(&bad).expect_text("Too many wrong codes.");
    login.finish().assert_failure();

    let nas = srv.nas("127.0.0.1", "vpn");
    let r = nas.exchange(
        &Request::access(nas.id())
            .user("alice")
            .password(NAS_PASSWORD),
        &|| srv.context(),
    );
    assert_code(
        &r,
        code::ACCESS_REJECT,
        "alice locked out through PAM",
        &srv,
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(outbox.count(), 1, "no SMS while locked out");
}

// ------------------------------------------------------------------ --check

/// `smsotp-radiusd --config <scratch config> --check`: exit code, stdout,
/// stderr.
fn check(config: &std::path::Path) -> (i32, String, String) {
    check_with(config, &[])
}

fn check_with(config: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(smsotp_e2e::radiusd::radiusd_path())
        .arg("--config")
        .arg(config)
        .arg("--check")
        .args(extra)
        .output()
        .expect("run smsotp-radiusd --check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_validates_the_config_the_secrets_and_every_phone_list_number() {
    let scratch = Scratch::new();
    phones(&scratch);
    let spec = ServerSpec::new(vec![vpn()]);
    scratch.write("secret-vpn", SECRET_A, 0o600);
    let write =
        |spec: &ServerSpec| scratch.write("smsotp.toml", &spec.config_text(&scratch, 1812), 0o600);
    let config = write(&spec);

    // All good: 0, and the numbers are counted.
    let (code, out, err) = check(&config);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("configuration OK (1 client, 2 phone-list numbers valid)"),
        "{out}{err}"
    );

    // A national number and no phone.default_region: 1, with file:line,
    // the user and the fix; the number itself is not printed.
    scratch.phones(&[("alice", ALICE_PHONE), ("carol", "0171 1234567")]);
    let (code, out, err) = check(&config);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("phones.toml:2:9: the number for carol")
            && err.contains("phone.default_region")
            && err.contains("+49 171 1234567"),
        "{err}"
    );
    assert!(!err.contains("0171 1234567"), "unmasked number: {err}");
    assert!(
        err.contains("1 phone-list entry is not usable (1 valid)"),
        "{err}"
    );
    // What the unit's ExecStartPre runs: the entry is printed, but the
    // server may start (only carol is kept out, not everyone).
    let (code, out, err2) = check_with(&config, &["--allow-bad-numbers"]);
    assert_eq!(code, 0, "{out}{err2}");
    assert!(err2.contains("the number for carol"), "{err2}");
    // The same number with the region set is good.
    let with_region = spec.clone().extra("[phone]\ndefault_region = \"DE\"\n");
    let (code, out, err) = check(&write(&with_region));
    assert_eq!(code, 0, "{out}{err}");
    // A number outside phone.allowed_countries: 1.
    let only_us = spec
        .clone()
        .extra("[phone]\ndefault_region = \"DE\"\nallowed_countries = [\"US\"]\n");
    let (code, out, err) = check(&write(&only_us));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("carol") && err.contains("phone.allowed_countries"),
        "{err}"
    );
    phones(&scratch);

    // An invalid config: 78, with file:line:column.
    let bad = scratch.write(
        "smsotp.toml",
        &format!("[otp]\nlength = 99\n{}", spec.config_text(&scratch, 1812)),
        0o600,
    );
    let (code, out, err) = check(&bad);
    assert_eq!(code, 78, "{out}{err}");
    assert!(
        err.contains("smsotp.toml:2:") && err.contains("otp.length"),
        "{err}"
    );
    // A config that is not there: 78, and the advice is our option.
    let (code, out, err) = check(&scratch.path("absent.toml"));
    assert_eq!(code, 78, "{out}{err}");
    assert!(
        err.contains("--config PATH") && !err.contains("config="),
        "{err}"
    );
    // A client secret that cannot be read: 78.
    write(&spec);
    std::fs::remove_file(scratch.path("secret-vpn")).expect("remove secret");
    let (code, out, err) = check(&config);
    assert_eq!(code, 78, "{out}{err}");
    assert!(err.contains("secret_file"), "{err}");
}

// ------------------------------------------------------------------ redis

/// Two servers (two "hosts") on one Redis store: a challenge sent by one is
/// answered at the other, once; the code key is shared as the hosts would
/// share it.
#[test]
fn redis_store_two_servers_share_challenges() {
    let Some(redis) = smsotp_e2e::redis::RedisServer::start() else {
        return;
    };
    let scratch_a = Scratch::new();
    phones(&scratch_a);
    let key = scratch_a.path("shared-otp.key");
    let spec = || {
        let mut s = ServerSpec::new(vec![vpn()]);
        s.store = Some(redis.store_toml("e2e:"));
        s.extra = format!("[otp]\nkey_file = \"{}\"\n", key.display());
        s
    };
    let a = Radiusd::start(&scratch_a, spec());
    let outbox = scratch_a.outbox();
    let nas_a = a.nas("127.0.0.1", "vpn");
    let (reply, code) = challenge(&a, &nas_a, &outbox, "alice", NAS_PASSWORD);

    // Host B: its own scratch (phones, outbox), the same Redis and key.
    let scratch_b = Scratch::new();
    phones(&scratch_b);
    let b = Radiusd::start(&scratch_b, spec());
    let nas_b = b.nas("127.0.0.1", "vpn");
    let ok = follow_up(&b, &nas_b, "alice", &reply.state(), &code);
    assert_code(&ok, code::ACCESS_ACCEPT, "right code at the other host", &b);
    let again = follow_up(&a, &nas_a, "alice", &reply.state(), &code);
    assert_code(&again, code::ACCESS_REJECT, "the same code again", &a);
    assert!(
        !scratch_a.path("state.db").exists() && !scratch_b.path("state.db").exists(),
        "no SQLite file with a redis store"
    );
    assert_not_logged(&a, &scratch_a, &[&code, NAS_PASSWORD, SECRET_A]);
    assert_not_logged(&b, &scratch_b, &[&code, NAS_PASSWORD, SECRET_A]);
}
