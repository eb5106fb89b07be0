//! Unit tests of the SMPP provider: encoding, splitting, the config keys,
//! and a send that starts no thread. The provider against a third-party
//! SMSC is tested end to end in tests/tests/smpp.rs.

use super::*;

use std::net::TcpListener;
use std::path::Path;

use crate::config::Config;
use crate::phone::Phone;
use crate::sms::number_format::NumberFormat;
use crate::sms::ProviderSpec;

fn spec(toml: &str) -> SmppSpec {
    let cfg = Config::from_toml(Path::new("/etc/smsotp/smsotp.toml"), toml)
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    match &cfg.providers[0] {
        ProviderSpec::Smpp(s) => (**s).clone(),
        other => panic!("{other:?}"),
    }
}

fn err_of(toml: &str) -> String {
    Config::from_toml(Path::new("/etc/smsotp/smsotp.toml"), toml)
        .map(|_| String::new())
        .unwrap_or_else(|e| e.to_string())
}

const BASE: &str =
    "[[provider]]\nkind = \"smpp\"\nhost = \"smsc.example.net\"\nsystem_id = \"acme\"\n";

#[test]
fn data_coding_follows_the_text_and_the_setting() {
    let dc = |t: &str, c: Coding| message_parts(t, c, LongMessages::Udh, 0).unwrap()[0].data_coding;
    assert_eq!(dc("123456 is your code", Coding::Gsm7), 0);
    assert_eq!(dc("Kód 123456", Coding::Gsm7), 8);
    assert_eq!(dc("Kód 123456", Coding::Latin1), 3);
    assert_eq!(dc("Код 123456", Coding::Latin1), 8);
    assert_eq!(dc("code 123456", Coding::Ia5), 1);
    assert_eq!(dc("code 123456", Coding::Ucs2), 8);
    let p = &message_parts("Kó", Coding::Latin1, LongMessages::Udh, 0).unwrap()[0];
    assert_eq!(&p.short_message[..], &[b'K', 0xF3]);
    let p = &message_parts("😀", Coding::Gsm7, LongMessages::Udh, 0).unwrap()[0];
    assert_eq!(&p.short_message[..], &[0xD8, 0x3D, 0xDE, 0x00]);
}

#[test]
fn segment_limits_and_cuts() {
    let parts = |t: &str| message_parts(t, Coding::Gsm7, LongMessages::Udh, 7).unwrap();
    // One SMS: 160 septets, or 70 UCS-2 characters.
    assert_eq!(parts(&"a".repeat(160)).len(), 1);
    assert_eq!(parts(&"ж".repeat(70)).len(), 1);
    // Then 153 / 67 per part.
    let p = parts(&"a".repeat(161));
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].short_message.len(), 6 + 153);
    assert_eq!(&p[1].short_message[..6], &[5, 0, 3, 7, 2, 2]);
    assert!(p.iter().all(|x| x.esm_class == 0x40));
    let p = parts(&"ж".repeat(71));
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].short_message.len(), 6 + 134);
    // A surrogate pair is not split: 66 characters, then the emoji.
    let t = format!("{}😀{}", "ж".repeat(66), "ж".repeat(10));
    let p = parts(&t);
    assert_eq!(p[0].short_message.len(), 6 + 132);
    assert_eq!(&p[1].short_message[6..8], &[0xD8, 0x3D]);
    // Payload: one submit_sm with everything in message_payload.
    let p = message_parts(&"a".repeat(400), Coding::Gsm7, LongMessages::Payload, 0).unwrap();
    assert_eq!(p.len(), 1);
    assert!(p[0].short_message.is_empty());
    assert_eq!(p[0].payload.as_ref().unwrap().len(), 400);
    assert_eq!(p[0].esm_class, 0);
    // A template that would need more than MAX_PARTS parts is refused.
    let e = message_parts(&"a".repeat(153 * 11), Coding::Gsm7, LongMessages::Udh, 0).unwrap_err();
    assert!(e.contains("otp.message"), "{e}");
    // Debug never shows the text.
    assert!(!format!("{:?}", parts("123456")).contains("123456"));
}

#[test]
fn parts_agree_with_the_shared_count() {
    use crate::sms::segments;
    let a = |n: usize| "a".repeat(n);
    let z = |n: usize| "ж".repeat(n);
    let texts = [
        a(160),
        a(161),
        a(306),
        a(307),
        format!("{}€", a(159)),
        format!("{}€{}", a(152), a(151)),
        format!("{}€{}", a(152), a(152)),
        z(70),
        z(71),
        z(134),
        z(135),
        format!("{}😀{}", z(66), z(66)),
        format!("{}😀{}", z(65), z(67)),
        format!("Your code 123456 – {}", a(60)),
    ];
    for t in &texts {
        let c = segments::count(t);
        let p = message_parts(t, Coding::Gsm7, LongMessages::Udh, 1).unwrap();
        assert_eq!(p.len(), c.segments, "{} chars", t.chars().count());
        let dc = if c.encoding == segments::Encoding::Gsm7 {
            0
        } else {
            8
        };
        assert!(p.iter().all(|x| x.data_coding == dc));
        // Forced UCS-2 splits as the shared count in UCS-2 says.
        let u = segments::count_in(t, segments::Encoding::Ucs2).unwrap();
        let p = message_parts(t, Coding::Ucs2, LongMessages::Udh, 1).unwrap();
        assert_eq!(p.len(), u.segments, "{} chars, ucs2", t.chars().count());
    }
}

#[test]
fn number_format_and_dest_addr_ton_agree() {
    let gb = "[phone]\nallowed_countries = [\"GB\"]\n\n";
    assert_eq!(spec(BASE).number_format, NumberFormat::Digits);
    let s = spec(&format!("{gb}{BASE}number_format = \"national\"\n"));
    assert_eq!(
        (s.number_format, s.dest_addr_ton),
        (NumberFormat::National, 2)
    );
    let e = err_of(&format!("{BASE}number_format = \"e164\"\n"));
    assert!(
        e.contains("provider[0].number_format: \"e164\" cannot be used here: SMPP writes an international number as its digits without '+'")
            && e.contains("use \"digits\", \"national\""),
        "{e}"
    );
    let e = err_of(&format!(
        "{gb}{BASE}number_format = \"national\"\ndest_addr_ton = \"international\"\n"
    ));
    assert!(
        e.contains("provider[0].dest_addr_ton: \"international\" does not fit number_format = \"national\""),
        "{e}"
    );
    // Without one allowed country, national is refused.
    let e = err_of(&format!("{BASE}number_format = \"national\"\n"));
    assert!(
        e.contains("phone.allowed_countries must name exactly one country"),
        "{e}"
    );
}

#[test]
fn defaults_are_gluus() {
    let s = spec(BASE);
    assert_eq!((s.host.as_str(), s.port), ("smsc.example.net", 2775));
    assert_eq!(s.name, "smpp");
    assert_eq!(s.source_addr_ton, 5);
    assert_eq!(s.source_addr_npi, 0);
    assert_eq!((s.dest_addr_ton, s.dest_addr_npi), (1, 1));
    assert_eq!(s.registered_delivery, 0);
    assert_eq!(s.data_coding, Coding::Gsm7);
    assert_eq!(s.long_messages, LongMessages::Udh);
    assert!(!s.tls && s.password_file.is_none() && s.system_type.is_empty());
    assert_eq!(s.timeout, SmppSpec::DEFAULT_TIMEOUT);
    assert_eq!(s.connect_timeout, SmppSpec::DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(s.enquire_link_interval, Duration::from_secs(30));

    // Gluu's jsmpp names in any case, or numbers.
    let s = spec(&format!(
        "{BASE}source_addr_ton = \"INTERNATIONAL\"\nsource_addr = \"15550100\"\n\
         dest_addr_ton = \"national\"\ndest_addr_npi = \"LAND_MOBILE\"\nsource_addr_npi = 9\n\
         port = 3550\ntls = true\nca_file = \"/etc/smsotp/smsc-ca.pem\"\n\
         password_file = \"/etc/smsotp/secrets/smpp\"\nsystem_type = \"OTP\"\n\
         registered_delivery = 1\ndata_coding = \"ucs2\"\nlong_messages = \"payload\"\n\
         timeout = \"4s\"\nconnect_timeout = \"2s\"\nenquire_link_interval = \"1m\"\n"
    ));
    assert_eq!((s.source_addr_ton, s.source_addr_npi), (1, 9));
    assert_eq!((s.dest_addr_ton, s.dest_addr_npi), (2, 6));
    assert_eq!(s.port, 3550);
    assert!(s.tls);
    assert_eq!(s.long_messages, LongMessages::Payload);
    assert_eq!(s.data_coding, Coding::Ucs2);
    assert_eq!(s.enquire_link_interval, Duration::from_secs(60));
}

#[test]
fn config_errors_name_the_key() {
    for (toml, key, says) in [
        (
            "[[provider]]\nkind = \"smpp\"\nsystem_id = \"a\"\n",
            "provider[0].host",
            "smpp_server",
        ),
        (
            "[[provider]]\nkind = \"smpp\"\nhost = \"h\"\n",
            "provider[0].system_id",
            "is missing",
        ),
        (
            &format!("{BASE}port = 70000\n"),
            "provider[0].port",
            "out of range",
        ),
        (&format!("{BASE}host2 = 1\n"), "host2", "unknown field"),
        (
            &format!("{BASE}url = \"https://x\"\n"),
            "provider[0].url",
            "not a key of kind \"smpp\"",
        ),
        (
            &format!("{BASE}source_addr_ton = \"alpha\"\n"),
            "provider[0].source_addr_ton",
            "\"alphanumeric\"",
        ),
        (
            &format!("{BASE}dest_addr_npi = 300\n"),
            "provider[0].dest_addr_npi",
            "\"isdn\"",
        ),
        (
            &format!("{BASE}source_addr = \"ACME-LOGIN-CODES\"\n"),
            "provider[0].source_addr",
            "at most 11",
        ),
        (
            &format!("{BASE}source_addr = \"Société\"\n"),
            "provider[0].source_addr",
            "ASCII",
        ),
        (
            "[[provider]]\nkind = \"smpp\"\nhost = \"h\"\nsystem_id = \"a-very-long-system-id\"\n",
            "provider[0].system_id",
            "at most 15",
        ),
        (
            &format!("{BASE}data_coding = \"utf8\"\n"),
            "provider[0].data_coding",
            "\"gsm7\"",
        ),
        (
            &format!("{BASE}long_messages = \"split\"\n"),
            "provider[0].long_messages",
            "\"payload\"",
        ),
        (
            &format!("{BASE}password_file = \"smpp.pw\"\n"),
            "provider[0].password_file",
            "absolute",
        ),
        (
            &format!("{BASE}ca_file = \"/etc/ca.pem\"\n"),
            "provider[0].ca_file",
            "tls = true",
        ),
        (
            &format!("{BASE}timeout = \"1s\"\nconnect_timeout = \"2s\"\n"),
            "provider[0].connect_timeout",
            "longer than timeout",
        ),
        (
            &format!("{BASE}registered_delivery = 64\n"),
            "provider[0].registered_delivery",
            "out of range",
        ),
        (
            "[[provider]]\nkind = \"smpp\"\nhost = \"smsc.example.net:2775\"\nsystem_id = \"a\"\n",
            "provider[0].host",
            "set port",
        ),
    ] {
        let e = err_of(toml);
        assert!(e.contains(key) && e.contains(says), "{toml}\n-> {e}");
    }
}

// ------------------------------------------------------------ a tiny SMSC

/// Answers one connection: every request gets its response with status 0
/// (`system_id`/`message_id` bodies where needed). Returns the command ids
/// it saw, when the client closes.
fn tiny_smsc() -> (u16, std::thread::JoinHandle<Vec<u32>>) {
    let (port, h) = tiny_smsc_recording();
    let ids = std::thread::spawn(move || h.join().unwrap().into_iter().map(|(id, _)| id).collect());
    (port, ids)
}

/// Each PDU a tiny SMSC read: its command id and body.
type Seen = Vec<(u32, Vec<u8>)>;

/// [`tiny_smsc`], returning each PDU's command id with its body.
fn tiny_smsc_recording() -> (u16, std::thread::JoinHandle<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut seen = Vec::new();
        loop {
            let mut head = [0u8; 16];
            if s.read_exact(&mut head).is_err() {
                return seen;
            }
            let w = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
            let mut body = vec![0u8; w(0) as usize - 16];
            s.read_exact(&mut body).unwrap();
            let id = w(4);
            seen.push((id, body.clone()));
            let reply_body: &[u8] = match id {
                0x02 => b"tiny\0",
                0x04 => b"1\0",
                _ => b"",
            };
            let mut out = Vec::new();
            out.extend_from_slice(&(16 + reply_body.len() as u32).to_be_bytes());
            out.extend_from_slice(&(id | 0x8000_0000).to_be_bytes());
            out.extend_from_slice(&0u32.to_be_bytes());
            out.extend_from_slice(&w(12).to_be_bytes());
            out.extend_from_slice(reply_body);
            s.write_all(&out).unwrap();
        }
    });
    (port, h)
}

/// The destination of a `submit_sm` body: (TON, NPI, address).
fn destination_of(body: &[u8]) -> (u8, u8, String) {
    let cstr = |at: usize| -> (String, usize) {
        let end = at + body[at..].iter().position(|&b| b == 0).unwrap();
        (String::from_utf8(body[at..end].to_vec()).unwrap(), end + 1)
    };
    let (_service_type, at) = cstr(0);
    let (_source, at) = cstr(at + 2);
    let (ton, npi) = (body[at], body[at + 1]);
    (ton, npi, cstr(at + 2).0)
}

#[test]
fn number_format_sets_the_destination_and_its_ton() {
    let to = Phone::parse("+442079460018", None).unwrap();
    for (extra, want) in [
        ("", (1, 1, "442079460018")),
        ("number_format = \"digits\"\n", (1, 1, "442079460018")),
        ("number_format = \"national\"\n", (2, 1, "2079460018")),
        (
            "number_format = \"national\"\ndest_addr_ton = \"unknown\"\n",
            (0, 1, "02079460018"),
        ),
    ] {
        let (port, h) = tiny_smsc_recording();
        let s = spec(
            &format!("[phone]\nallowed_countries = [\"GB\"]\n\n{BASE}host = \"127.0.0.1\"\nport = {port}\n{extra}")
                .replace("host = \"smsc.example.net\"\n", ""),
        );
        let p = SmppProvider::new(s, SessionMode::PerSend);
        p.send(&Sms {
            to: &to,
            text: "123456",
        })
        .unwrap();
        drop(p);
        let seen = h.join().unwrap();
        let (_, body) = seen.iter().find(|(id, _)| *id == 0x04).unwrap();
        let (ton, npi, addr) = destination_of(body);
        assert_eq!((ton, npi, addr.as_str()), want, "{extra}");
    }
}

#[test]
fn one_session_per_send_binds_submits_and_unbinds() {
    let (port, h) = tiny_smsc();
    let s = spec(
        &format!("{BASE}host = \"127.0.0.1\"\nport = {port}\n")
            .replace("host = \"smsc.example.net\"\n", ""),
    );
    let p = SmppProvider::new(s, SessionMode::PerSend);
    let to = Phone::parse("+12025550143", None).unwrap();
    p.send(&Sms {
        to: &to,
        text: "123456 is your code",
    })
    .unwrap();
    drop(p);
    assert_eq!(h.join().unwrap(), [0x02, 0x04, 0x06]);
}

/// Runs [`thread_probe_child`] in a fresh process of this test binary: a
/// send there must start no thread (seccomp refuses thread creation).
#[test]
fn a_send_starts_no_thread() {
    let (port, h) = tiny_smsc();
    crate::sms::http::tests::run_probe(
        "sms::smpp::tests::thread_probe_child",
        &[("SMSOTP_SMPP_PROBE_PORT", port.to_string())],
        "probe: sent",
    );
    assert_eq!(h.join().unwrap(), [0x02, 0x04, 0x06]);
}

/// Only does something when run by [`a_send_starts_no_thread`].
#[test]
fn thread_probe_child() {
    let Ok(port) = std::env::var("SMSOTP_SMPP_PROBE_PORT") else {
        return;
    };
    // A host name, so the resolver runs; and the whole provider, from config.
    let providers = crate::sms::from_config(
        &Config::from_toml(
            Path::new("/etc/smsotp/smsotp.toml"),
            &format!("[[provider]]\nkind = \"smpp\"\nhost = \"localhost\"\nport = {port}\nsystem_id = \"x\"\n"),
        )
        .unwrap()
        .providers,
        || Box::new(crate::clock::FixedClock::at(0)),
    );
    let before = crate::sms::http::tests::tasks();
    crate::sms::http::tests::forbid_new_threads();
    assert!(
        std::thread::Builder::new().spawn(|| ()).is_err(),
        "the probe must be able to see a thread being started"
    );
    let to = Phone::parse("+12025550143", None).unwrap();
    let r = providers[0].send(&Sms {
        to: &to,
        text: "123456 é",
    });
    drop(providers);
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(crate::sms::http::tests::tasks(), before);
    println!("probe: sent");
}

#[test]
fn max_sessions_is_checked_and_defaults_to_four() {
    assert_eq!(spec(BASE).max_sessions, 4);
    assert_eq!(spec(&format!("{BASE}max_sessions = 16\n")).max_sessions, 16);
    for bad in ["0", "65"] {
        let e = err_of(&format!("{BASE}max_sessions = {bad}\n"));
        assert!(
            e.contains("provider[0].max_sessions") && e.contains("1 to 64"),
            "{e}"
        );
    }
}

/// smsotp-radiusd's send lane may run hundreds of sends at once; a pooled
/// provider lets max_sessions of them through (each binds or reuses one
/// session) and the others wait for a place within their own deadline.
#[test]
fn a_pool_lets_max_sessions_sends_through_at_once() {
    let pool = SmppSessions::new();
    let soon = || Instant::now() + Duration::from_secs(5);
    let a = pool.permit("p", 2, soon()).unwrap();
    let b = pool.permit("p", 2, soon()).unwrap();
    // Another provider has places of its own.
    let other = pool.permit("q", 2, soon()).unwrap();
    let t = Instant::now();
    assert!(pool
        .permit("p", 2, Instant::now() + Duration::from_millis(50))
        .is_none());
    assert!(
        t.elapsed() >= Duration::from_millis(50),
        "waited its deadline"
    );
    // A place freed while a third send waits: it goes through.
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.permit("p", 2, soon()).is_some())
    };
    std::thread::sleep(Duration::from_millis(50));
    drop(a);
    assert!(waiter.join().unwrap());
    drop((b, other));
    assert_eq!(pool.with("p", |e| e.sending), 0);
}

/// The idle-session reader reads every idle session once per round. It
/// used to put each session it read back at the front and read the front
/// again, so with two or more idle sessions (a send binds a second one
/// while the reader holds the first) a receipt on any but the least
/// recently used was never read, and never acknowledged.
#[test]
fn poll_idle_reads_every_idle_session() {
    use std::sync::{Arc, Mutex};
    const SESSIONS: usize = 3;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let seen = got.clone();
    let pool = SmppSessions::with_receipts(Arc::new(move |provider: &str, r| {
        if let Ok(r) = r {
            seen.lock()
                .unwrap()
                .push((provider.to_owned(), r.message_id));
        }
    }));
    let mut far_ends = Vec::new();
    for _ in 0..SESSIONS {
        let mut s = Session::new(Stream::Plain(std::net::TcpStream::connect(addr).unwrap()));
        s.receipts = pool.receipts.clone().map(|h| (h, "smsc".to_owned()));
        far_ends.push(l.accept().unwrap().0);
        pool.with("smsc", |e| e.idle.push(s));
    }
    // The SMSC sends a receipt on the most recently used session only.
    let text = b"id:42 sub:001 dlvrd:000 stat:UNDELIV err:001";
    let mut body = vec![0u8, 1, 1];
    body.extend_from_slice(b"15550100\0");
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(b"ACME\0");
    body.extend_from_slice(&[0x04, 0, 0, 0, 0, 0, 0, 0, 0]);
    body.push(text.len() as u8);
    body.extend_from_slice(text);
    let mut pdu = Vec::new();
    pdu.extend_from_slice(&(16 + body.len() as u32).to_be_bytes());
    pdu.extend_from_slice(&0x0000_0005u32.to_be_bytes());
    pdu.extend_from_slice(&0u32.to_be_bytes());
    pdu.extend_from_slice(&7u32.to_be_bytes());
    pdu.extend_from_slice(&body);
    let last = far_ends.last_mut().unwrap();
    last.write_all(&pdu).unwrap();
    // A few rounds, as the server's thread would run them.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(pool.poll_idle(), SESSIONS, "each session read once a round");
        if !got.lock().unwrap().is_empty() {
            break;
        }
    }
    assert_eq!(*got.lock().unwrap(), [("smsc".to_owned(), "42".to_owned())]);
    // Acknowledged on the session it came on, with its sequence number.
    last.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 16];
    last.read_exact(&mut head).unwrap();
    assert_eq!(
        &head[4..8],
        &0x8000_0005u32.to_be_bytes(),
        "deliver_sm_resp"
    );
    assert_eq!(&head[12..16], &7u32.to_be_bytes());
    assert_eq!(pool.idle(), SESSIONS, "all kept");
}
