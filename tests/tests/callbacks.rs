//! HTTP status callbacks (issue #21 point 4): smsotp-radiusd with a
//! Twilio-preset provider first, pointed at a local HTTPS stand-in for
//! Twilio (tests/twilio_stub.py, with a test CA made by `openssl`), and
//! the outbox second, serving `receipts.listen` on a loopback port. The
//! test plays Twilio's callbacks, signed with python3's own hmac (not the
//! code under test): a signed `undelivered` sends the same code once
//! through the outbox; the same callback again, a badly signed one and a
//! `delivered` one send nothing. The same for a `kind = "http"` gateway
//! (the stub's `/send`) with JSON reports authenticated by a token.
//!
//! Needs `openssl` and `/usr/bin/python3`, and a built server (`cargo
//! build --workspace`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use smsotp_e2e::pamenv::audit_lines;
use smsotp_e2e::radiusd::{code, ClientSpec, Nas, Radiusd, Request, ServerSpec};
use smsotp_e2e::{extract_code, Scratch};

const SECRET: &str = "e2e-callback-secret-4c1d";
const TOKEN: &str = "twilio-auth-token-e2e-77aa";
const CALLBACK: &str = "https://sms.example.org/smsotp/receipt/twilio";
const PATH: &str = "/smsotp/receipt/twilio";
const ALICE: &str = "+12015550140";
const BOB: &str = "+12015550141";
/// How long a step may take to show (an SMS in the outbox, a line in the
/// stub's log).
const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing more happens" is watched: the resend thread polls
/// every 200 ms.
const QUIET: Duration = Duration::from_millis(800);

/// Runs `cmd` to its end, at most 20 s; panics on failure.
fn run(cmd: &mut Command, what: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            let mut err = String::new();
            child.stdout.take().unwrap().read_to_string(&mut out).ok();
            child.stderr.take().unwrap().read_to_string(&mut err).ok();
            assert!(status.success(), "{what} failed ({status}):\n{out}{err}");
            return out;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} took over 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A test CA and a server certificate it signs for 127.0.0.1, EC P-256,
/// valid two days: (ca.pem, server.pem, server.key).
fn certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(
        Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .args(["-days", "2", "-keyout"])
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca)
            .args(["-subj", "/CN=smsotp callback test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
        "openssl: the CA",
    );
    run(
        Command::new("openssl")
            .args(["req", "-x509", "-CA"])
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .args(ec)
            .args(["-days", "2", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "extendedKeyUsage=serverAuth"]),
        "openssl: the server certificate",
    );
    (ca, cert, key)
}

/// The running stand-in for Twilio; killed when dropped.
struct Twilio {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Twilio {
    fn start(scratch: &Scratch, cert: &Path, key: &Path) -> Twilio {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("twilio_stub.py");
        let log = scratch.path("twilio.jsonl");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(cert)
            .arg(key)
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start twilio_stub.py");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(WAIT).unwrap_or_default();
        let Some(port) = line
            .trim()
            .strip_prefix("twilio_stub listening on 127.0.0.1:")
            .and_then(|p| p.parse().ok())
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("twilio_stub.py did not start: {line:?}");
        };
        Twilio { child, port, log }
    }

    /// The messages it took, in order.
    fn messages(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn wait_for(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let m = self.messages();
            if m.len() >= n || Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Twilio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Twilio's signature of `params` posted to `url`, by python3's hmac:
/// base64(HMAC-SHA1(token, url + each name and value sorted by name)).
fn sign(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let program = "import base64,hashlib,hmac,sys\n\
        token, url = sys.argv[1], sys.argv[2]\n\
        it = iter(sys.argv[3:])\n\
        pairs = sorted(zip(it, it))\n\
        s = url + ''.join(n + v for n, v in pairs)\n\
        print(base64.b64encode(hmac.new(token.encode(), s.encode(), hashlib.sha1).digest()).decode())";
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-c", program, token, url]);
    for (n, v) in params {
        cmd.args([n, v]);
    }
    run(&mut cmd, "python3: the signature").trim().to_owned()
}

fn form(params: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    params
        .iter()
        .map(|(n, v)| format!("{}={}", enc(n), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// POSTs `body` (a form) to `path` on `port` with `headers`; answers
/// the status.
fn post(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    post_as(
        port,
        path,
        "application/x-www-form-urlencoded",
        headers,
        body,
    )
}

fn post_as(port: u16, path: &str, content_type: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to receipts.listen");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: sms.example.org\r\nConnection: close\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {line:?}"))
}

/// smsotp-radiusd with `providers`, serving receipts on `listen`, and a
/// NAS that talks to it.
fn start_with_receipts(scratch: &Scratch, providers: &str, listen: u16) -> (Radiusd, Nas) {
    let spec = ServerSpec::new(vec![ClientSpec::new("vpn", "127.0.0.1", SECRET)])
        .providers(providers)
        .extra(&format!("[receipts]\nlisten = \"127.0.0.1:{listen}\"\n"));
    let srv = Radiusd::start(scratch, spec);
    let nas = Nas::new("127.0.0.1".parse().unwrap(), srv.v4(), SECRET);
    (srv, nas)
}

/// A callback as Twilio sends it for message `sid` to `to`.
fn callback(sid: &str, to: &str, status: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AccountSid", "AC00000000000000000000000000000001".into()),
        ("ApiVersion", "2010-04-01".into()),
        ("From", "+12015550100".into()),
        ("MessageSid", sid.into()),
        ("MessageStatus", status.into()),
        ("SmsSid", sid.into()),
        ("SmsStatus", status.into()),
        ("To", to.into()),
    ]
}

/// POSTs the callback, signed with `token` (`None`: no signature).
fn send_callback(
    port: u16,
    path: &str,
    params: &[(&'static str, String)],
    token: Option<&str>,
) -> u16 {
    let p: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let body = form(&p);
    match token {
        Some(t) => {
            let sig = sign(t, CALLBACK, &p);
            post(port, path, &[("X-Twilio-Signature", &sig)], &body)
        }
        None => post(port, path, &[], &body),
    }
}

#[test]
fn twilio_undelivered_callback_resends_the_same_code_once() {
    let scratch = Scratch::new();
    scratch.phones(&[("alice", ALICE), ("bob", BOB)]);
    let (ca, cert, key) = certs(scratch.dir.path());
    let twilio = Twilio::start(&scratch, &cert, &key);
    let token = scratch.write("twilio-token", &format!("{TOKEN}\n"), 0o600);
    let listen = smsotp_e2e::closed_port();
    let providers = format!(
        "[[provider]]\nkind = \"twilio\"\nname = \"twilio\"\naccount_sid = \"AC00000000000000000000000000000001\"\n\
         auth_token_file = \"{}\"\nfrom = \"+12015550100\"\nbase_url = \"https://127.0.0.1:{}\"\n\
         ca_file = \"{}\"\nstatus_callback = \"{CALLBACK}\"\n\n\
         [[provider]]\nkind = \"outbox\"\npath = \"{}\"\n",
        token.display(),
        twilio.port,
        ca.display(),
        scratch.outbox().path.display()
    );
    let (srv, nas) = start_with_receipts(&scratch, &providers, listen);
    let outbox = scratch.outbox();

    let login = |user: &str, n: usize| -> (Vec<u8>, String, String) {
        let req = Request::access(nas.id()).user(user).password("nas-pw");
        let reply = nas.exchange(&req, &|| srv.context());
        srv.assert_code(&reply, code::ACCESS_CHALLENGE, user);
        let msgs = twilio.wait_for(n);
        assert_eq!(msgs.len(), n, "{msgs:?}\n{}", srv.context());
        let m = &msgs[n - 1];
        assert_eq!(m["form"]["StatusCallback"], CALLBACK, "{m}");
        let text = m["form"]["Body"].as_str().unwrap_or_default();
        let code = extract_code(text).unwrap_or_else(|| panic!("no code in {text:?}"));
        let sid = m["sid"].as_str().unwrap().to_owned();
        (reply.state(), code, sid)
    };
    let quiet = |what: &str| {
        std::thread::sleep(QUIET);
        assert_eq!(
            outbox.count(),
            0,
            "{what}: nothing resent\n{}",
            srv.context()
        );
    };

    // alice's SMS "fails": a callback with a bad signature, then none,
    // then on an unknown path, resend nothing.
    let (state, sent, alice_sid) = login("alice", 1);
    let undelivered = callback(&alice_sid, ALICE, "undelivered");
    assert_eq!(
        send_callback(listen, PATH, &undelivered, Some("not-the-token")),
        403
    );
    assert_eq!(send_callback(listen, PATH, &undelivered, None), 403);
    assert_eq!(
        send_callback(listen, "/smsotp/receipt/other", &undelivered, Some(TOKEN)),
        404
    );
    quiet("bad signature");

    // Signed: the same code once through the outbox.
    assert_eq!(send_callback(listen, PATH, &undelivered, Some(TOKEN)), 200);
    let again = outbox.wait_beyond(0, WAIT);
    assert_eq!(again.to, ALICE);
    assert_eq!(again.code(), sent, "the same code, not a new one");
    // The same callback again (Twilio retries): nothing more.
    assert_eq!(send_callback(listen, PATH, &undelivered, Some(TOKEN)), 200);
    std::thread::sleep(QUIET);
    assert_eq!(outbox.count(), 1, "resent once only\n{}", srv.context());
    let req = Request::access(nas.id())
        .user("alice")
        .password(&sent)
        .state(&state);
    let reply = nas.exchange(&req, &|| srv.context());
    srv.assert_code(&reply, code::ACCESS_ACCEPT, "alice with the resent code");

    // bob's is delivered: nothing, not even after a late failure. A
    // client stalled mid-body does not hold the callback up for long.
    let (_, _, sid) = login("bob", 2);
    let mut stalled = TcpStream::connect(("127.0.0.1", listen)).unwrap();
    stalled
        .write_all(
            format!("POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\nMessageSid=")
                .as_bytes(),
        )
        .unwrap();
    let delivered = callback(&sid, BOB, "delivered");
    let t0 = Instant::now();
    assert_eq!(send_callback(listen, PATH, &delivered, Some(TOKEN)), 200);
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    drop(stalled);
    let late = callback(&sid, BOB, "undelivered");
    assert_eq!(send_callback(listen, PATH, &late, Some(TOKEN)), 200);
    std::thread::sleep(QUIET);
    assert_eq!(
        outbox.count(),
        1,
        "no resend after delivered\n{}",
        srv.context()
    );
    // Over 16 KiB: refused unread.
    let big = format!("MessageSid=x&Pad={}", "a".repeat(17 * 1024));
    assert_eq!(post(listen, PATH, &[], &big), 413);
    // A message this server never sent: counted, answered 200.
    let unknown = callback("SM0000000000000000000000000000dead", BOB, "failed");
    assert_eq!(send_callback(listen, PATH, &unknown, Some(TOKEN)), 200);

    // The audit: one resend, two refusals; no code, id or whole number.
    let lines = audit_lines(&scratch);
    let of = |event: &str| -> Vec<&serde_json::Value> {
        lines.iter().filter(|l| l["event"] == event).collect()
    };
    let resent = of("resent_after_receipt");
    assert_eq!(resent.len(), 1, "{}", srv.context());
    assert_eq!(resent[0]["user"], "alice");
    assert_eq!(resent[0]["provider"], "outbox");
    let detail = resent[0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("from=twilio") && detail.contains("state=UNDELIV"),
        "{detail}"
    );
    let refused = of("receipt_forbidden");
    assert_eq!(refused.len(), 2, "{}", srv.context());
    for l in refused {
        let text = l.to_string();
        assert!(text.contains("provider=twilio"), "{text}");
        assert!(!text.contains(&alice_sid), "no id: {text}");
    }
    for l in &lines {
        let text = l.to_string();
        assert!(!text.contains(&sent), "the code is never logged: {text}");
        assert!(!text.contains("2015550140"), "numbers are masked: {text}");
        assert!(!text.contains(TOKEN), "the token is never logged: {text}");
    }
}

/// A `kind = "http"` gateway: the callback URL goes with each message
/// (`{status_callback}`, carrying the token), the id comes back in the
/// JSON answer, and the gateway posts JSON reports with the token in the
/// query. A report of "failed" with the token sends the same code once
/// through the outbox; without it, or with another, nothing.
#[test]
fn generic_failed_report_with_its_token_resends_the_same_code_once() {
    const GW_TOKEN: &str = "gw-callback-token-5e8f";
    let scratch = Scratch::new();
    scratch.phones(&[("alice", ALICE)]);
    let (ca, cert, key) = certs(scratch.dir.path());
    let gw = Twilio::start(&scratch, &cert, &key);
    let token = scratch.write("gw-token", &format!("{GW_TOKEN}\n"), 0o600);
    let listen = smsotp_e2e::closed_port();
    let providers = format!(
        "[[provider]]\nkind = \"http\"\nname = \"gw\"\nurl = \"https://127.0.0.1:{}/send\"\n\
         ca_file = \"{}\"\n\
         body = {{ to = \"{{number}}\", text = \"{{message}}\", report_url = \"{{status_callback}}\" }}\n\
         status_callback = \"https://sms.example.org/smsotp/receipt/gw\"\n\
         status_id_pointer = \"/messages/0/id\"\nstatus_id_field = \"/result/id\"\n\
         status_field = \"/result/status\"\nstatus_failure = [\"FAILED\", \"rejected\"]\n\
         status_token_file = \"{}\"\n\n\
         [[provider]]\nkind = \"outbox\"\npath = \"{}\"\n",
        gw.port,
        ca.display(),
        token.display(),
        scratch.outbox().path.display()
    );
    let (srv, nas) = start_with_receipts(&scratch, &providers, listen);
    let outbox = scratch.outbox();

    let req = Request::access(nas.id()).user("alice").password("nas-pw");
    let reply = nas.exchange(&req, &|| srv.context());
    srv.assert_code(&reply, code::ACCESS_CHALLENGE, "alice");
    let msgs = gw.wait_for(1);
    assert_eq!(msgs.len(), 1, "{}", srv.context());
    let form = &msgs[0]["form"];
    let sent = extract_code(form["text"].as_str().unwrap()).unwrap();
    let id = msgs[0]["sid"].as_str().unwrap();
    // The gateway got the callback URL with the token, and calls it.
    let report_url = form["report_url"].as_str().unwrap();
    assert_eq!(
        report_url,
        format!("https://sms.example.org/smsotp/receipt/gw?token={GW_TOKEN}")
    );
    let path = report_url.strip_prefix("https://sms.example.org").unwrap();
    let report = format!(r#"{{"result": {{"id": "{id}", "status": "failed", "to": "{ALICE}"}}}}"#);
    let json = "application/json";
    for bad in [
        "/smsotp/receipt/gw",
        "/smsotp/receipt/gw?token=gw-callback-token-5e8F",
    ] {
        assert_eq!(post_as(listen, bad, json, &[], &report), 403, "{bad}");
    }
    std::thread::sleep(QUIET);
    assert_eq!(outbox.count(), 0, "nothing resent\n{}", srv.context());
    assert_eq!(post_as(listen, path, json, &[], &report), 200);
    let again = outbox.wait_beyond(0, WAIT);
    assert_eq!((again.to.as_str(), again.code()), (ALICE, sent.clone()));
    assert_eq!(post_as(listen, path, json, &[], &report), 200);
    std::thread::sleep(QUIET);
    assert_eq!(outbox.count(), 1, "once only\n{}", srv.context());

    let lines = audit_lines(&scratch);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["event"] == "receipt_forbidden")
            .count(),
        2
    );
    let resent: Vec<_> = lines
        .iter()
        .filter(|l| l["event"] == "resent_after_receipt")
        .collect();
    assert_eq!(resent.len(), 1, "{}", srv.context());
    assert!(resent[0]["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("from=gw"));
    for l in &lines {
        let text = l.to_string();
        assert!(!text.contains(&sent), "the code is never logged: {text}");
        assert!(
            !text.contains(GW_TOKEN),
            "the token is never logged: {text}"
        );
    }
}
