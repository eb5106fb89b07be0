//! The `smpp` provider against a third-party SMSC: the server of the npm
//! `smpp` package (tests/smpp_server.js), which records every PDU it gets.
//!
//! Providers are built from config text exactly as the front ends build
//! them (`Config::from_toml`, then `sms::from_config` for the PAM module's
//! one session per send, or `sms::from_config_with` and a session pool for
//! smsotp-radiusd).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use smsotp_core::clock::{Clock, SystemClock};
use smsotp_core::config::Config;
use smsotp_core::phone::Phone;
use smsotp_core::sms::gsm::gsm7_decode;
use smsotp_core::sms::smpp::SmppSessions;
use smsotp_core::sms::{
    self, send_with_failover, ChainOutcome, ProviderContext, SendError, Sms, SmsProvider,
};
use smsotp_e2e::smpp::{Script, SmppServer};
use smsotp_e2e::Scratch;

const NUMBER: &str = "+4915112345678";
const DIGITS: &str = "4915112345678";

fn clock() -> Box<dyn Clock> {
    Box::new(SystemClock)
}

fn phone() -> Phone {
    Phone::parse(NUMBER, None).unwrap()
}

/// The password file (mode 0600) and a `[[provider]]` table for `port`.
fn smpp_table(s: &Scratch, port: u16, password: &str, extra: &str) -> String {
    let pw = s.write("smpp-password", &format!("{password}\n"), 0o600);
    format!(
        "[[provider]]\nkind = \"smpp\"\nhost = \"127.0.0.1\"\nport = {port}\nsystem_id = \"smsotp\"\n\
         password_file = \"{}\"\nsource_addr = \"ACME\"\n{extra}\n",
        pw.display()
    )
}

fn providers(toml: &str, ctx: &ProviderContext) -> Vec<Box<dyn SmsProvider>> {
    let cfg = Config::from_toml(Path::new("/etc/smsotp/smsotp.toml"), toml)
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    sms::from_config_with(&cfg.providers, clock, ctx)
}

fn per_send(toml: &str) -> Box<dyn SmsProvider> {
    providers(toml, &ProviderContext::default()).remove(0)
}

fn send(p: &dyn SmsProvider, text: &str) -> Result<(), SendError> {
    let to = phone();
    p.send(&Sms { to: &to, text })
}

fn hex(s: &serde_json::Value) -> Vec<u8> {
    let s = s.as_str().unwrap_or_else(|| panic!("not hex: {s}"));
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn assert_clean(e: &SendError, secrets: &[&str]) {
    let text = e.to_string();
    for s in secrets.iter().chain(&["482913", NUMBER, DIGITS]) {
        assert!(!text.contains(s), "{s:?} leaked into: {text}");
    }
}

#[test]
fn gsm_message_fields_as_gluu_sets_them() {
    let server = SmppServer::start(&Script::default());
    let s = Scratch::new();
    let p = per_send(&smpp_table(&s, server.port, "secret", ""));
    let text = "482913 is your code for web-1. {ok} €5 @home";
    send(&*p, text).unwrap();

    let bind = &server.pdus("bind_transmitter")[0];
    assert_eq!(bind["system_id"], "smsotp");
    assert_eq!(bind["password_ok"], true);
    assert_eq!(bind["interface_version"], 0x34);
    let subs = server.pdus("submit_sm");
    assert_eq!(subs.len(), 1, "{subs:?}");
    let m = &subs[0];
    // Gluu's defaults: source TON alphanumeric, destination international/ISDN.
    assert_eq!(m["source_addr"], "ACME");
    assert_eq!(m["source_addr_ton"], 5);
    assert_eq!(m["source_addr_npi"], 0);
    assert_eq!(m["dest_addr_ton"], 1);
    assert_eq!(m["dest_addr_npi"], 1);
    // International: the digits without '+'.
    assert_eq!(m["destination_addr"], DIGITS);
    assert_eq!(m["data_coding"], 0);
    assert_eq!(m["esm_class"], 0);
    assert_eq!(m["registered_delivery"], 0);
    // The npm package's own GSM 03.38 decoder reads the same text back.
    assert_eq!(m["text"], text);
    let septets = hex(&m["short_message_hex"]);
    assert_eq!(gsm7_decode(&septets), text);
    // '{', '}' and '€' are escapes (0x1B + septet): 3 extra bytes.
    assert_eq!(septets.len(), text.chars().count() + 3);
    // Then unbind: one session per send.
    assert_eq!(
        server.wait_for("unbind", 1, Duration::from_secs(2)).len(),
        1
    );
}

#[test]
fn non_gsm_message_goes_as_ucs2() {
    let server = SmppServer::start(&Script::default());
    let s = Scratch::new();
    let p = per_send(&smpp_table(
        &s,
        server.port,
        "secret",
        "source_addr_ton = \"INTERNATIONAL\"\nsource_addr_npi = 1\nregistered_delivery = 1\n",
    ));
    let text = "Kód 482913 — 登录 😀";
    send(&*p, text).unwrap();
    let m = &server.pdus("submit_sm")[0];
    assert_eq!(m["data_coding"], 8);
    assert_eq!(m["source_addr_ton"], 1);
    assert_eq!(m["source_addr_npi"], 1);
    assert_eq!(m["registered_delivery"], 1);
    assert_eq!(m["text"], text);
    let bytes = hex(&m["short_message_hex"]);
    let utf16: Vec<u16> = text.encode_utf16().collect();
    assert_eq!(bytes.len(), utf16.len() * 2);
    assert_eq!(&bytes[..2], &[0x00, b'K']);
}

/// `number_format = "national"` for a domestic SMSC: the national
/// significant number with TON national, or as dialled with TON unknown.
#[test]
fn national_number_format_sets_the_address_and_its_ton() {
    let s = Scratch::new();
    for (extra, ton, addr) in [
        ("number_format = \"national\"\n", 2, "15112345678"),
        (
            "number_format = \"national\"\ndest_addr_ton = \"unknown\"\n",
            0,
            "015112345678",
        ),
    ] {
        let server = SmppServer::start(&Script::default());
        let toml = format!(
            "[phone]\nallowed_countries = [\"DE\"]\n\n{}",
            smpp_table(&s, server.port, "secret", extra)
        );
        send(&*per_send(&toml), "482913 is your code").unwrap();
        let m = &server.pdus("submit_sm")[0];
        assert_eq!(m["dest_addr_ton"], ton, "{extra}");
        assert_eq!(m["dest_addr_npi"], 1, "{extra}");
        assert_eq!(m["destination_addr"], addr, "{extra}");
    }
}

#[test]
fn long_message_in_concatenated_parts_or_one_payload() {
    let server = SmppServer::start(&Script::default());
    let s = Scratch::new();
    // 200 GSM characters with an escape right at the cut of part one.
    let mut text = "x".repeat(152);
    text.push('€');
    text.push_str(&"y".repeat(47));
    let p = per_send(&smpp_table(&s, server.port, "secret", ""));
    send(&*p, &text).unwrap();
    let subs = server.pdus("submit_sm");
    assert_eq!(subs.len(), 2, "{subs:?}");
    let mut joined = Vec::new();
    let mut reference = None;
    for (i, m) in subs.iter().enumerate() {
        assert_eq!(m["esm_class"], 0x40);
        assert_eq!(m["data_coding"], 0);
        let sm = hex(&m["short_message_hex"]);
        assert_eq!(&sm[..3], &[0x05, 0x00, 0x03]);
        assert_eq!(*reference.get_or_insert(sm[3]), sm[3]);
        assert_eq!((sm[4], sm[5]), (2, i as u8 + 1));
        assert!(sm.len() - 6 <= 153);
        // The package lists the information elements (after the length byte).
        assert_eq!(hex(&m["udh_hex"]), sm[1..6].to_vec());
        joined.extend_from_slice(&sm[6..]);
    }
    // The escape was not split: part one ends before it.
    assert_eq!(hex(&subs[0]["short_message_hex"]).len() - 6, 152);
    assert_eq!(gsm7_decode(&joined), text);

    // message_payload: one submit_sm, nothing in short_message.
    let s2 = Scratch::new();
    let p = per_send(&smpp_table(
        &s2,
        server.port,
        "secret",
        "long_messages = \"payload\"\n",
    ));
    let ucs = "Код подтверждения: 482913. ".repeat(4);
    send(&*p, &ucs).unwrap();
    let subs = server.pdus("submit_sm");
    assert_eq!(subs.len(), 3);
    let m = &subs[2];
    assert_eq!(m["esm_class"], 0);
    assert_eq!(m["data_coding"], 8);
    assert!(m["short_message_hex"].is_null() || m["short_message_hex"] == "");
    assert_eq!(
        hex(&m["message_payload_hex"]).len(),
        ucs.encode_utf16().count() * 2
    );
    assert_eq!(m["text"], ucs.as_str());
}

#[test]
fn refused_bind_is_misconfigured_and_not_retried() {
    let server = SmppServer::start(&Script::default());
    let s = Scratch::new();
    let p = per_send(&smpp_table(&s, server.port, "wrong", ""));
    let e = send(&*p, "482913").unwrap_err();
    assert!(matches!(e, SendError::Misconfigured(_)), "{e:?}");
    assert!(e.to_string().contains("ESME_RBINDFAIL"), "{e}");
    assert_clean(&e, &["wrong"]);
    // A second send does not bind again (no retry storm against the SMSC).
    let e2 = send(&*p, "482913").unwrap_err();
    assert!(matches!(e2, SendError::Misconfigured(_)), "{e2:?}");
    assert_eq!(server.pdus("bind_transmitter").len(), 1);
    assert!(server.pdus("submit_sm").is_empty());
}

#[test]
fn throttled_then_failover_to_the_next_provider() {
    let server = SmppServer::start(&Script {
        throttle: 1,
        queue_full: 1,
        ..Script::default()
    });
    let s = Scratch::new();
    let outbox = s.path("outbox.jsonl");
    let toml = format!(
        "{}[[provider]]\nkind = \"outbox\"\npath = \"{}\"\n",
        smpp_table(&s, server.port, "secret", "name = \"smsc\"\n"),
        outbox.display()
    );
    let chain = providers(&toml, &ProviderContext::default());
    let to = phone();
    let sms = Sms {
        to: &to,
        text: "482913 is your code",
    };
    // ESME_RTHROTTLED: temporary, so the outbox takes it.
    match send_with_failover(&chain, &sms) {
        ChainOutcome::Sent {
            provider,
            failed_over_from: Some((from, e)),
        } => {
            assert_eq!((provider.as_str(), from.as_str()), ("outbox", "smsc"));
            assert!(matches!(e, SendError::Transient(_)), "{e:?}");
            assert!(e.to_string().contains("ESME_RTHROTTLED"), "{e}");
            assert_clean(&e, &["secret"]);
        }
        other => panic!("{other:?}"),
    }
    // ESME_RMSGQFUL: the same.
    let e = chain[0].send(&sms).unwrap_err();
    assert!(
        matches!(e, SendError::Transient(ref m) if m.contains("ESME_RMSGQFUL")),
        "{e:?}"
    );
    // Then the SMSC takes it.
    assert!(matches!(
        send_with_failover(&chain, &sms),
        ChainOutcome::Sent { ref provider, failed_over_from: None } if provider == "smsc"
    ));
    assert_eq!(server.pdus("submit_sm").len(), 3);
    assert_eq!(std::fs::read_to_string(&outbox).unwrap().lines().count(), 1);
}

#[test]
fn generic_nack_is_temporary() {
    let server = SmppServer::start(&Script {
        nack: 1,
        ..Script::default()
    });
    let s = Scratch::new();
    let p = per_send(&smpp_table(&s, server.port, "secret", ""));
    let e = send(&*p, "482913").unwrap_err();
    assert!(
        matches!(e, SendError::Transient(ref m) if m.contains("generic_nack")),
        "{e:?}"
    );
    send(&*p, "482913").unwrap();
}

#[test]
fn server_gone_or_silent_fails_within_the_timeout() {
    // Killed: the port refuses at once.
    let mut server = SmppServer::start(&Script::default());
    let s = Scratch::new();
    let p = per_send(&smpp_table(&s, server.port, "secret", ""));
    server.stop();
    let started = Instant::now();
    let e = send(&*p, "482913").unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Accepts but never answers the bind, or the submit_sm: bounded by timeout.
    for hang in ["bind", "submit"] {
        let server = SmppServer::start(&Script {
            hang: Some(hang),
            ..Script::default()
        });
        let s = Scratch::new();
        let p = per_send(&smpp_table(&s, server.port, "secret", "timeout = \"1s\"\n"));
        let started = Instant::now();
        let e = send(&*p, "482913").unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(e, SendError::Transient(ref m) if m.contains("did not answer")),
            "{hang}: {e:?}"
        );
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
            "{hang}: {took:?}"
        );
        assert_clean(&e, &["secret"]);
    }
}

#[test]
fn persistent_session_is_reused_and_rebound_after_a_drop() {
    let server = SmppServer::start(&Script {
        drop_after: Some(5),
        ..Script::default()
    });
    let s = Scratch::new();
    let pool = SmppSessions::new();
    let ctx = ProviderContext {
        smpp_sessions: Some(pool.clone()),
        ..ProviderContext::default()
    };
    let toml = smpp_table(&s, server.port, "secret", "");
    // Two providers from the same config, as two radiusd workers have.
    let a = providers(&toml, &ctx).remove(0);
    let b = providers(&toml, &ctx).remove(0);
    for i in 0..4 {
        let p = if i % 2 == 0 { &a } else { &b };
        send(&**p, &format!("48291{i} is your code")).unwrap();
    }
    assert_eq!(server.pdus("bind_transmitter").len(), 1);
    assert!(server.pdus("unbind").is_empty());
    assert_eq!(pool.idle(), 1);
    // The fifth is accepted, then the SMSC drops the connection; the next
    // send notices and binds again, and no message is sent twice.
    send(&*a, "482914 is your code").unwrap();
    let closed = Instant::now() + Duration::from_secs(2);
    while !server.events().iter().any(|e| e["event"] == "close") && Instant::now() < closed {
        std::thread::sleep(Duration::from_millis(20));
    }
    send(&*b, "482915 is your code").unwrap();
    assert_eq!(server.pdus("bind_transmitter").len(), 2);
    let texts: Vec<String> = server
        .pdus("submit_sm")
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts.len(), 6, "{texts:?}");
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(*text, format!("48291{i} is your code"));
    }
    // Dropping the pool unbinds the idle session.
    drop((a, b, pool, ctx));
    assert_eq!(
        server.wait_for("unbind", 1, Duration::from_secs(2)).len(),
        1
    );
}

#[test]
fn persistent_session_sends_enquire_link_after_idling() {
    let server = SmppServer::start(&Script::default());
    let s = Scratch::new();
    let ctx = ProviderContext {
        smpp_sessions: Some(SmppSessions::new()),
        ..ProviderContext::default()
    };
    let p = providers(
        &smpp_table(
            &s,
            server.port,
            "secret",
            "enquire_link_interval = \"1s\"\n",
        ),
        &ctx,
    )
    .remove(0);
    send(&*p, "482913").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    send(&*p, "482914").unwrap();
    let cmds: Vec<String> = server
        .events()
        .iter()
        .filter_map(|e| e["command"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        cmds,
        ["bind_transmitter", "submit_sm", "enquire_link", "submit_sm"],
        "{cmds:?}"
    );
}

#[test]
fn password_file_must_be_root_only() {
    let server = SmppServer::start(&Script::default());
    let s = Scratch::new();
    let toml = smpp_table(&s, server.port, "secret", "");
    let pw: PathBuf = s.path("smpp-password");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = send(&*per_send(&toml), "482913").unwrap_err();
    assert!(
        matches!(e, SendError::Misconfigured(ref m) if m.contains("chmod 600")),
        "{e:?}"
    );
    assert!(server.pdus("bind_transmitter").is_empty());
}

/// smsotp-radiusd keeps one bound session for all its workers and reuses it
/// for every code it sends (needs the radiusd wiring of docs/smpp.md).
#[test]
fn radiusd_reuses_one_bind_for_many_sends() {
    use smsotp_e2e::radiusd::{code, ClientSpec, Nas, Radiusd, Request, ServerSpec};
    const SECRET: &str = "e2e-smpp-secret-4c1d";
    let server = SmppServer::start(&Script::default());
    let scratch = Scratch::new();
    let users = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let numbers: Vec<(String, String)> = users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.to_string(), format!("+1201555012{i}")))
        .collect();
    let entries: Vec<(&str, &str)> = numbers
        .iter()
        .map(|(u, n)| (u.as_str(), n.as_str()))
        .collect();
    scratch.phones(&entries);
    let spec = ServerSpec::new(vec![ClientSpec::new("vpn", "127.0.0.1", SECRET)])
        .providers(&smpp_table(&scratch, server.port, "secret", ""));
    let srv = Radiusd::start(&scratch, spec);
    let nas = Nas::new("127.0.0.1".parse().unwrap(), srv.v4(), SECRET);
    for u in users {
        let req = Request::access(nas.id()).user(u).password("nas-pw");
        let reply = nas.exchange(&req, &|| srv.context());
        assert_eq!(
            reply.code(),
            code::ACCESS_CHALLENGE,
            "{u}: {}",
            srv.context()
        );
    }
    let subs = server.wait_for("submit_sm", users.len(), Duration::from_secs(5));
    assert_eq!(subs.len(), users.len(), "{}", srv.context());
    let dests: Vec<&str> = subs
        .iter()
        .map(|m| m["destination_addr"].as_str().unwrap())
        .collect();
    for (_, n) in &numbers {
        assert!(dests.contains(&&n[1..]), "{n} not in {dests:?}");
    }
    assert_eq!(
        server.pdus("bind_transmitter").len(),
        1,
        "one bind for all workers and sends\n{}",
        srv.context()
    );
    assert!(server.pdus("unbind").is_empty());
}

/// Delivery receipts (issue #21 point 4): smsotp-radiusd with the SMSC
/// first (asking for receipts) and the outbox second. A receipt of
/// UNDELIV sends the same code once through the outbox, logged; DELIVRD
/// sends nothing more; UNDELIV after the code was used sends nothing.
#[test]
fn radiusd_resends_the_same_code_once_after_an_undeliv_receipt() {
    use smsotp_e2e::radiusd::{code, ClientSpec, Nas, Radiusd, Request, ServerSpec};
    use smsotp_e2e::{extract_code, pamenv::audit_lines};
    const SECRET: &str = "e2e-receipt-secret-9a7f";
    let server = SmppServer::start(&Script {
        receipts: vec!["UNDELIV".into(), "DELIVRD".into(), "UNDELIV@2500".into()],
        ..Script::default()
    });
    let scratch = Scratch::new();
    scratch.phones(&[
        ("alice", "+12015550120"),
        ("bob", "+12015550121"),
        ("carol", "+12015550122"),
    ]);
    let providers = format!(
        "{}\n[[provider]]\nkind = \"outbox\"\npath = \"{}\"\n",
        smpp_table(
            &scratch,
            server.port,
            "secret",
            "name = \"smsc\"\nregistered_delivery = 1\n"
        ),
        scratch.outbox().path.display()
    );
    let spec =
        ServerSpec::new(vec![ClientSpec::new("vpn", "127.0.0.1", SECRET)]).providers(&providers);
    let srv = Radiusd::start(&scratch, spec);
    let nas = Nas::new("127.0.0.1".parse().unwrap(), srv.v4(), SECRET);
    let outbox = scratch.outbox();
    // Receipts come from a Node.js SMSC on timers (carol's 2.5 s after
    // her submit): on a loaded CI machine 5 s was once not enough for the
    // third to be read and acknowledged.
    let wait = Duration::from_secs(20);

    // First round: a challenge, and the code as the SMSC got it.
    let login = |user: &str, n: usize| -> (Vec<u8>, String) {
        let req = Request::access(nas.id()).user(user).password("nas-pw");
        let reply = nas.exchange(&req, &|| srv.context());
        srv.assert_code(&reply, code::ACCESS_CHALLENGE, user);
        let subs = server.wait_for("submit_sm", n, wait);
        assert_eq!(subs.len(), n, "{}", srv.context());
        let text = subs[n - 1]["text"].as_str().unwrap_or_default().to_owned();
        let code = extract_code(&text).unwrap_or_else(|| panic!("no code in {text:?}"));
        (reply.state(), code)
    };
    let answer = |user: &str, state: &[u8], code_: &str| {
        let req = Request::access(nas.id())
            .user(user)
            .password(code_)
            .state(state);
        nas.exchange(&req, &|| srv.context())
    };

    // alice: UNDELIV → the same code once through the outbox.
    let (state, sent) = login("alice", 1);
    let binds = server.pdus("bind_transceiver");
    assert_eq!(
        binds.len(),
        1,
        "receipts need a transceiver bind\n{}",
        srv.context()
    );
    assert!(server.pdus("bind_transmitter").is_empty());
    let again = outbox.wait_beyond(0, wait);
    assert_eq!(again.to, "+12015550120");
    assert_eq!(again.code(), sent, "the same code, not a new one");
    let acked = server.wait_for_event("receipt_acked", 1, wait);
    assert_eq!(acked[0]["command_status"], 0, "receipt acknowledged");
    let reply = answer("alice", &state, &sent);
    srv.assert_code(&reply, code::ACCESS_ACCEPT, "alice with the resent code");
    let resent: Vec<_> = audit_lines(&scratch)
        .into_iter()
        .filter(|l| l["event"] == "resent_after_receipt")
        .collect();
    assert_eq!(resent.len(), 1, "{}", srv.context());
    assert_eq!(resent[0]["user"], "alice");
    assert_eq!(resent[0]["provider"], "outbox");
    let detail = resent[0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("from=smsc") && detail.contains("state=UNDELIV"),
        "{detail}"
    );
    let line = resent[0].to_string();
    assert!(!line.contains(&sent), "the code is never logged: {line}");
    assert!(!line.contains("2015550120"), "the number is masked: {line}");

    // bob: DELIVRD → nothing more.
    let (state, sent) = login("bob", 2);
    server.wait_for_event("receipt_acked", 2, wait);
    // The receipt thread polls every 200 ms: give it a few rounds.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        outbox.count(),
        1,
        "no resend after DELIVRD\n{}",
        srv.context()
    );
    let reply = answer("bob", &state, &sent);
    srv.assert_code(&reply, code::ACCESS_ACCEPT, "bob");

    // The receipts (written to the store by the receipt thread) and the
    // resend are in the store's counters, as `smsotp status` shows them.
    // (The server writes its SMS counts once a second.)
    let j = smsotp_e2e::status_when(&scratch, |j| {
        let rows = j["counters"]["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let sent = |p: &str| {
            rows.iter()
                .any(|r| r["provider"] == p && r["country"] == "US" && r["sent"] == 1)
        };
        j["counters"]["total"]["sent"] == 3 && sent("outbox")
    });
    let rows = j["counters"]["rows"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let row = |p: &str| {
        rows.iter()
            .find(|r| r["provider"] == p && r["country"] == "US")
            .cloned()
            .unwrap_or_else(|| panic!("no row of {p} for US: {j}"))
    };
    let smsc = row("smsc");
    assert_eq!(smsc["sent"], 2, "{j}");
    assert_eq!(smsc["receipts"]["UNDELIV"], 1, "{j}");
    assert_eq!(smsc["receipts"]["DELIVRD"], 1, "{j}");
    let outbox_row = row("outbox");
    assert_eq!(outbox_row["sent"], 1, "{j}");
    assert_eq!(outbox_row["resent"], 1, "{j}");

    // carol: uses the code, then UNDELIV arrives 2.5 s later → nothing
    // sent. By now radiusd may hold two idle sessions (bob's send can bind
    // a second one while the receipt reader holds the first), and the
    // receipt comes on the one carol's submit used: every idle session
    // must be read (it once was not, and this receipt was never read).
    let (state, sent) = login("carol", 3);
    let reply = answer("carol", &state, &sent);
    srv.assert_code(&reply, code::ACCESS_ACCEPT, "carol");
    assert!(
        server.logged("receipt").len() < 3,
        "the receipt came too early for this test"
    );
    let acked = server.wait_for_event("receipt_acked", 3, wait);
    assert_eq!(acked.len(), 3, "{}", srv.context());
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        outbox.count(),
        1,
        "no resend for a used code\n{}",
        srv.context()
    );
    let resent = audit_lines(&scratch)
        .into_iter()
        .filter(|l| l["event"] == "resent_after_receipt")
        .count();
    assert_eq!(resent, 1);
}
