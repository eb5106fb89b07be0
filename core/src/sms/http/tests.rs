//! Tests of the HTTP providers against a local HTTPS server (its own CA,
//! passed with `ca_file`) that records every request and answers as
//! scripted. Nothing here reaches the internet.

use super::*;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::clock::FixedClock;
use crate::config::Config;
use crate::phone::Phone;
use crate::sms::{send_with_failover, ChainOutcome};

/// Needs escaping everywhere: `+ & = " ' \n`, percent, braces that look
/// like placeholders, non-ASCII (and so not GSM-7).
const MESSAGE: &str =
    "482913 is your code & more=yes \"quoted\" 'single'\nline2 é€ 😀 +plus %41 {number} $ctx.num";
const NUMBER: &str = "+12025550143";
const DIGITS: &str = "12025550143";

fn phone() -> Phone {
    Phone::parse(NUMBER, None).unwrap()
}

fn send(p: &dyn SmsProvider, text: &str) -> Result<(), SendError> {
    let to = phone();
    p.send(&Sms { to: &to, text })
}

// ------------------------------------------------------------- test PKI

/// A CA and a server certificate for localhost and 127.0.0.1.
struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "smsotp test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone(), ca_cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    }
}

// ------------------------------------------------------- recording server

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn decode_form(s: &str) -> BTreeMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn form(&self) -> BTreeMap<String, String> {
        decode_form(std::str::from_utf8(&self.body).unwrap())
    }
    fn query(&self) -> BTreeMap<String, String> {
        decode_form(self.query.as_deref().unwrap_or(""))
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the server does with the next request.
enum Reply {
    Status(u16, String),
    /// Read the request, then say nothing for this long.
    Hang(Duration),
    /// Answer with a redirect to this location.
    Redirect(&'static str),
}

struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        Server::start_with(&pki())
    }

    fn start_with(pki: &Pki) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
        let (cfg, reqs, scr) = (pki.server.clone(), requests.clone(), script.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (cfg, reqs, scr) = (cfg.clone(), reqs.clone(), scr.clone());
                std::thread::spawn(move || {
                    let _ = serve(tcp, cfg, &reqs, &scr);
                });
            }
        });
        Server {
            addr,
            requests,
            script,
            dir,
        }
    }

    fn reply(&self, r: Reply) -> &Self {
        self.script.lock().unwrap().push_back(r);
        self
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    fn only_request(&self) -> Recorded {
        let r = self.requests();
        assert_eq!(r.len(), 1, "{r:#?}");
        r[0].clone()
    }

    fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn ca(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    /// Writes a root-only secret file and returns its path.
    fn secret(&self, name: &str, value: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, format!("{value}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p.display().to_string()
    }
}

fn serve(
    tcp: TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    reqs: &Mutex<Vec<Recorded>>,
    script: &Mutex<VecDeque<Reply>>,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ServerConnection::new(cfg).map_err(std::io::Error::other)?;
    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    let mut line = String::new();
    tls.read_line(&mut line)?;
    let mut it = line.split_whitespace();
    let method = it.next().unwrap_or_default().to_owned();
    let target = it.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        tls.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap_or(0));
    let mut body = vec![0; len];
    tls.read_exact(&mut body)?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.clone(), None),
    };
    reqs.lock().unwrap().push(Recorded {
        method,
        path,
        query,
        headers,
        body,
    });
    let reply = script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Reply::Status(200, "{}".into()));
    let (status, extra, body) = match reply {
        Reply::Hang(d) => {
            std::thread::sleep(d);
            return Ok(());
        }
        Reply::Status(s, b) => (s, String::new(), b),
        Reply::Redirect(to) => (302, format!("Location: {to}\r\n"), String::new()),
    };
    let tls = tls.get_mut();
    write!(
        tls,
        "HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    tls.flush()?;
    tls.conn.send_close_notify();
    tls.flush()
}

/// The providers of a config that has only `[[provider]]` tables.
fn providers(toml: &str) -> Vec<Box<dyn SmsProvider>> {
    let cfg = Config::from_toml(Path::new("/etc/smsotp/smsotp.toml"), toml)
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    crate::sms::from_config(&cfg.providers, || Box::new(FixedClock::at(0)))
}

fn provider(toml: &str) -> Box<dyn SmsProvider> {
    providers(toml).remove(0)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn assert_clean(e: &SendError, secrets: &[&str]) {
    let text = e.to_string();
    for s in secrets.iter().chain(&["482913", NUMBER, DIGITS, "quoted"]) {
        assert!(!text.contains(s), "{s:?} leaked into: {text}");
    }
}

// ------------------------------------------------------------- presets

#[test]
fn twilio_follows_the_messages_api() {
    let s = Server::start();
    let sid = "AC0123456789abcdef0123456789abcdef";
    let toml = format!(
        "[[provider]]\nkind = \"twilio\"\naccount_sid = \"{sid}\"\nauth_token_file = \"{}\"\n\
         from = \"+12015550100\"\nbase_url = \"{}\"\nca_file = \"{}\"\n",
        s.secret("twilio", "tw-token"),
        s.base(),
        s.ca()
    );
    let p = provider(&toml);
    s.reply(Reply::Status(
        201,
        r#"{"sid":"SM1","status":"queued"}"#.into(),
    ));
    send(&*p, MESSAGE).unwrap();
    let r = s.only_request();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, format!("/2010-04-01/Accounts/{sid}/Messages.json"));
    assert_eq!(
        r.header("authorization"),
        Some(format!("Basic {}", b64(&format!("{sid}:tw-token"))).as_str())
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let f = r.form();
    assert_eq!(f["To"], NUMBER);
    assert_eq!(f["From"], "+12015550100");
    assert_eq!(f["Body"], MESSAGE);
    assert_eq!(f.len(), 3);
    // '+' went as %2B, not as a space.
    assert!(r.text().contains("To=%2B12025550143"), "{}", r.text());

    // A bad number is the recipient's problem; credentials are ours.
    s.reply(Reply::Status(
        400,
        format!(r#"{{"code":21211,"message":"The 'To' number {NUMBER} is not a valid phone number.","status":400}}"#),
    ));
    let e = send(&*p, MESSAGE).unwrap_err();
    assert!(matches!(e, SendError::Rejected(_)), "{e:?}");
    assert!(
        e.to_string().contains("21211") && e.to_string().contains("******0143"),
        "{e}"
    );
    assert_clean(&e, &["tw-token"]);
    s.reply(Reply::Status(
        401,
        r#"{"code":20003,"message":"Authenticate"}"#.into(),
    ));
    let e = send(&*p, MESSAGE).unwrap_err();
    assert!(matches!(e, SendError::Misconfigured(_)), "{e:?}");
    assert!(e.to_string().contains("auth_token_file"), "{e}");
    s.reply(Reply::Status(
        400,
        r#"{"code":21606,"message":"The From phone number is not valid"}"#.into(),
    ));
    assert!(matches!(
        send(&*p, MESSAGE),
        Err(SendError::Misconfigured(_))
    ));
}

#[test]
fn twilio_messaging_service() {
    let s = Server::start();
    let toml = format!(
        "[[provider]]\nkind = \"twilio\"\naccount_sid = \"AC1\"\nauth_token_file = \"{}\"\n\
         messaging_service_sid = \"MG9\"\nbase_url = \"{}/\"\nca_file = \"{}\"\n",
        s.secret("twilio", "t"),
        s.base(),
        s.ca()
    );
    s.reply(Reply::Status(201, "{}".into()));
    send(&*provider(&toml), "123456").unwrap();
    let f = s.only_request().form();
    assert_eq!(f["MessagingServiceSid"], "MG9");
    assert!(!f.contains_key("From"));
}

#[test]
fn vonage_follows_the_sms_api_and_its_statuses() {
    let s = Server::start();
    // "nexmo" is the old name of the same API.
    let toml = format!(
        "[[provider]]\nkind = \"nexmo\"\napi_key = \"abcd1234\"\napi_secret_file = \"{}\"\n\
         from = \"ACME Inc\"\nbase_url = \"{}\"\nca_file = \"{}\"\n",
        s.secret("vonage", "v-secret&="),
        s.base(),
        s.ca()
    );
    let p = provider(&toml);
    assert_eq!(p.name(), "nexmo");
    let ok =
        r#"{"message-count":"1","messages":[{"to":"12025550143","message-id":"0A","status":"0"}]}"#;
    s.reply(Reply::Status(200, ok.into()));
    send(&*p, MESSAGE).unwrap();
    let r = s.only_request();
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/sms/json"));
    assert_eq!(r.header("authorization"), None);
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let f = r.form();
    assert_eq!(f["api_key"], "abcd1234");
    assert_eq!(f["api_secret"], "v-secret&=");
    assert_eq!(f["from"], "ACME Inc");
    assert_eq!(f["to"], DIGITS);
    assert_eq!(f["text"], MESSAGE);
    assert_eq!(f["type"], "unicode");

    // GSM-7 text goes without type=unicode.
    s.reply(Reply::Status(200, ok.into()));
    send(&*p, "123456 is your code").unwrap();
    assert!(!s.requests()[1].form().contains_key("type"));

    // 200 with a per-message status: 1 = throttled (fail over), 6 = bad
    // number (refused), 4 = bad credentials.
    for (status, want) in [
        ("1", "Transient"),
        ("6", "Rejected"),
        ("4", "Misconfigured"),
        ("9", "Transient"),
    ] {
        s.reply(Reply::Status(
            200,
            format!(r#"{{"message-count":"1","messages":[{{"status":"{status}","error-text":"Nope {DIGITS}"}}]}}"#),
        ));
        let e = send(&*p, MESSAGE).unwrap_err();
        assert!(format!("{e:?}").starts_with(want), "status {status}: {e:?}");
        assert!(e.to_string().contains(&format!("status {status}")), "{e}");
        assert_clean(&e, &["v-secret"]);
    }
    // A later part failing fails the message.
    s.reply(Reply::Status(
        200,
        r#"{"message-count":"2","messages":[{"status":"0"},{"status":"7","error-text":"Barred"}]}"#
            .into(),
    ));
    assert!(matches!(send(&*p, MESSAGE), Err(SendError::Rejected(_))));
}

#[test]
fn clickatell_follows_the_platform_api() {
    let s = Server::start();
    let toml = format!(
        "[[provider]]\nkind = \"clickatell\"\napi_key_file = \"{}\"\nfrom = \"27000000000\"\n\
         base_url = \"{}\"\nca_file = \"{}\"\n",
        s.secret("clickatell", "ck-KEY=="),
        s.base(),
        s.ca()
    );
    let p = provider(&toml);
    s.reply(Reply::Status(
        202,
        format!(r#"{{"messages":[{{"apiMessageId":"a1","accepted":true,"to":"{DIGITS}","errorCode":null,"error":null,"errorDescription":null}}],"errorCode":null,"error":null,"errorDescription":null}}"#),
    ));
    send(&*p, MESSAGE).unwrap();
    let r = s.only_request();
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/messages"));
    assert_eq!(r.header("authorization"), Some("ck-KEY=="));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("accept"), Some("application/json"));
    let j = r.json();
    assert_eq!(j["content"], MESSAGE);
    assert_eq!(j["to"], serde_json::json!([DIGITS]));
    assert_eq!(j["from"], "27000000000");

    s.reply(Reply::Status(
        202,
        r#"{"messages":[{"accepted":false,"errorCode":105,"errorDescription":"Invalid destination address"}]}"#.into(),
    ));
    let e = send(&*p, MESSAGE).unwrap_err();
    assert!(matches!(e, SendError::Rejected(_)), "{e:?}");
    assert!(e.to_string().contains("Invalid destination"), "{e}");
    s.reply(Reply::Status(401, r#"{"error":"Unauthorized"}"#.into()));
    let e = send(&*p, MESSAGE).unwrap_err();
    assert!(
        matches!(e, SendError::Misconfigured(_)) && e.to_string().contains("api_key_file"),
        "{e:?}"
    );
    assert_clean(&e, &["ck-KEY"]);
}

#[test]
fn plivo_follows_the_message_api() {
    let s = Server::start();
    let toml = format!(
        "[[provider]]\nkind = \"plivo\"\nauth_id = \"MAXXXXXXXXXXXXXXXXXX\"\nauth_token_file = \"{}\"\n\
         from = \"+14155550100\"\nbase_url = \"{}\"\nca_file = \"{}\"\n",
        s.secret("plivo", "pl-token"),
        s.base(),
        s.ca()
    );
    let p = provider(&toml);
    s.reply(Reply::Status(
        202,
        r#"{"api_id":"x","message":"message(s) queued","message_uuid":["u"]}"#.into(),
    ));
    send(&*p, MESSAGE).unwrap();
    let r = s.only_request();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/Account/MAXXXXXXXXXXXXXXXXXX/Message/");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Basic {}", b64("MAXXXXXXXXXXXXXXXXXX:pl-token")).as_str())
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(j["src"], "+14155550100");
    assert_eq!(j["dst"], DIGITS);
    assert_eq!(j["text"], MESSAGE);

    s.reply(Reply::Status(
        400,
        r#"{"api_id":"x","error":"invalid dst"}"#.into(),
    ));
    let e = send(&*p, MESSAGE).unwrap_err();
    assert!(
        matches!(e, SendError::Rejected(_)) && e.to_string().contains("invalid dst"),
        "{e:?}"
    );
    s.reply(Reply::Status(429, "{}".into()));
    assert!(matches!(send(&*p, MESSAGE), Err(SendError::Transient(_))));
}

#[test]
fn bulksms_follows_the_json_api() {
    let s = Server::start();
    let toml = format!(
        "[[provider]]\nkind = \"bulksms\"\nusername = \"acme\"\npassword_file = \"{}\"\n\
         base_url = \"{}\"\nca_file = \"{}\"\n",
        s.secret("bulksms", "bs:pass"),
        s.base(),
        s.ca()
    );
    let p = provider(&toml);
    s.reply(Reply::Status(201, r#"[{"id":"1","type":"SENT"}]"#.into()));
    send(&*p, MESSAGE).unwrap();
    let r = s.only_request();
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(r.query.as_deref(), Some("auto-unicode=true"));
    assert_eq!(
        r.header("authorization"),
        Some(format!("Basic {}", b64("acme:bs:pass")).as_str())
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(j["to"], NUMBER);
    assert_eq!(j["body"], MESSAGE);
    assert!(j.get("from").is_none());

    s.reply(Reply::Status(
        400,
        r#"{"type":"x","title":"Bad Request","status":400,"detail":"The number is invalid"}"#
            .into(),
    ));
    let e = send(&*p, MESSAGE).unwrap_err();
    assert!(
        matches!(e, SendError::Rejected(_)) && e.to_string().contains("number is invalid"),
        "{e:?}"
    );
    s.reply(Reply::Status(401, "{}".into()));
    assert!(matches!(
        send(&*p, MESSAGE),
        Err(SendError::Misconfigured(_))
    ));
}

// ------------------------------------------------- the generic template

#[test]
fn generic_get_puts_escaped_values_in_the_query() {
    let s = Server::start();
    let toml = format!(
        "[[provider]]\nkind = \"http\"\nmethod = \"GET\"\nsecret_file = \"{}\"\nca_file = \"{}\"\n\
         url = \"{}/send/{{number_digits}}?key={{secret}}&to={{number}}&text={{message}}\"\n",
        s.secret("key", "k&y=1"),
        s.ca(),
        s.base()
    );
    s.reply(Reply::Status(200, "OK".into()));
    send(&*provider(&toml), MESSAGE).unwrap();
    let r = s.only_request();
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, format!("/send/{DIGITS}"));
    assert!(r.body.is_empty());
    let q = r.query();
    assert_eq!(q.len(), 3, "{q:?}");
    assert_eq!(q["key"], "k&y=1");
    assert_eq!(q["to"], NUMBER);
    assert_eq!(q["text"], MESSAGE);
}

#[test]
fn generic_form_string_and_table() {
    let s = Server::start();
    let key = s.secret("key", "abc");
    let toml = format!(
        "[[provider]]\nkind = \"http\"\nname = \"a\"\nurl = \"{base}/a\"\ncontent_type = \"form\"\n\
         body = \"to={{number}}&text={{message}}&literal=x%2By\"\nca_file = \"{ca}\"\n\
         [[provider]]\nkind = \"http\"\nname = \"b\"\nurl = \"{base}/b\"\nmethod = \"put\"\nca_file = \"{ca}\"\n\
         body = {{ to = \"{{number_digits}}\", text = \"{{message}}\", \"we&ird=\" = \"v a l\", n = 3 }}\n\
         basic_auth = {{ username = \"user\", password = \"{{secret}}\" }}\nsecret_file = \"{key}\"\n",
        base = s.base(),
        ca = s.ca()
    );
    let ps = providers(&toml);
    for p in &ps {
        send(&**p, MESSAGE).unwrap();
    }
    let r = s.requests();
    assert_eq!(r[0].method, "POST");
    assert_eq!(
        r[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let f = r[0].form();
    assert_eq!((f["to"].as_str(), f["text"].as_str()), (NUMBER, MESSAGE));
    assert_eq!(f["literal"], "x+y");
    assert_eq!(f.len(), 3);
    assert_eq!(r[1].method, "PUT");
    assert_eq!(
        r[1].header("authorization"),
        Some(format!("Basic {}", b64("user:abc")).as_str())
    );
    let f = r[1].form();
    assert_eq!(f["to"], DIGITS);
    assert_eq!(f["text"], MESSAGE);
    assert_eq!(f["we&ird="], "v a l");
    assert_eq!(f["n"], "3");
}

#[test]
fn generic_json_string_and_table() {
    let s = Server::start();
    let toml = format!(
        "[[provider]]\nkind = \"http\"\nname = \"a\"\nurl = \"{base}/a\"\ncontent_type = \"json\"\nca_file = \"{ca}\"\n\
         body = '{{\"to\": \"{{number}}\", \"text\": \"{{message}}\", \"n\": 1, \"list\": [\"{{number_digits}}\"]}}'\n\
         headers = {{ Authorization = \"Bearer {{secret:token}}\", \"Content-Type\" = \"application/json; charset=utf-8\" }}\n\
         secrets = {{ token = \"{tok}\" }}\n\
         [[provider]]\nkind = \"http\"\nname = \"b\"\nurl = \"{base}/b\"\ncontent_type = \"json\"\nca_file = \"{ca}\"\n\
         body = {{ messages = [ {{ to = \"{{number}}\", text = \"{{message}}\" }} ], flag = true, ratio = 0.5 }}\n",
        base = s.base(),
        ca = s.ca(),
        tok = s.secret("token", "t0k\"en")
    );
    for p in &providers(&toml) {
        send(&**p, MESSAGE).unwrap();
    }
    let r = s.requests();
    assert_eq!(r[0].header("authorization"), Some("Bearer t0k\"en"));
    assert_eq!(
        r[0].header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        r[0].json(),
        serde_json::json!({"to": NUMBER, "text": MESSAGE, "n": 1, "list": [DIGITS]})
    );
    assert_eq!(r[1].header("content-type"), Some("application/json"));
    assert_eq!(
        r[1].json(),
        serde_json::json!({"messages": [{"to": NUMBER, "text": MESSAGE}], "flag": true, "ratio": 0.5})
    );
}

#[test]
fn raw_body_goes_as_written() {
    let s = Server::start();
    let toml = format!(
        "[[provider]]\nkind = \"http\"\nurl = \"{}/raw\"\ncontent_type = \"raw\"\nca_file = \"{}\"\n\
         body = \"TO {{number}}\\n{{message}}\"\n",
        s.base(),
        s.ca()
    );
    send(&*provider(&toml), "123456 code").unwrap();
    let r = s.only_request();
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.text(), format!("TO {NUMBER}\n123456 code"));
}

/// The WSO2 SMSOTP guide's gateway set-ups, copied into our config with
/// their `$ctx.num`/`$ctx.msg` placeholders, send what they describe.
#[test]
fn wso2_guide_setups_work_unchanged() {
    let s = Server::start();
    let (base, ca) = (s.base(), s.ca());
    let secret = s.secret("s", "SECRET");
    let basic = s.secret("basic", &b64("ACxxx:token"));
    let toml = format!(
        r#"
[[provider]]   # Nexmo: everything in the URL, POST without a body
kind = "http"
name = "nexmo"
url = "{base}/sms/json?api_key=KEY&api_secret={{secret}}&from=NEXMO&to=$ctx.num&text=$ctx.msg"
method = "POST"
secret_file = "{secret}"
ca_file = "{ca}"

[[provider]]   # Clickatell (REST API of the guide)
kind = "http"
name = "clickatell"
url = "{base}/rest/message"
method = "POST"
headers = {{ "X-Version" = "1", Authorization = "bearer {{secret}}", Accept = "application/json", "Content-Type" = "application/json" }}
body = '{{"text":" $ctx.msg ","to":[" $ctx.num "]}}'
secret_file = "{secret}"
ca_file = "{ca}"

[[provider]]   # Plivo (the guide's "ctx.num" lacks its '$')
kind = "http"
name = "plivo"
url = "{base}/v1/Account/MAXX/Message/"
headers = {{ Authorization = "Basic {{secret}}", "Content-Type" = "application/json" }}
body = '{{"src":"+94770000000","dst":"$ctx.num","text":"$ctx.msg"}}'
secret_file = "{basic}"
ca_file = "{ca}"

[[provider]]   # Bulksms (EAPI): parameters in the URL
kind = "http"
name = "bulksms"
url = "{base}/eapi/submission/send_sms/2/2.0?username=acme&password={{secret}}&message=$ctx.msg&msisdn=$ctx.num"
headers = {{ "Content-Type" = "application/x-www-form-urlencoded" }}
success_body = {{ regex = '^0\|' }}
secret_file = "{secret}"
ca_file = "{ca}"

[[provider]]   # Twilio: a form body with a literal, already encoded From
kind = "http"
name = "twilio"
url = "{base}/2010-04-01/Accounts/ACxxx/SMS/Messages.json"
headers = {{ Authorization = "Basic {{secret}}" }}
content_type = "form"
body = "Body=$ctx.msg&To=$ctx.num&From=%2B12015550100"
secret_file = "{basic}"
ca_file = "{ca}"
"#
    );
    let ps = providers(&toml);
    s.reply(Reply::Status(200, "{}".into()))
        .reply(Reply::Status(202, "{}".into()))
        .reply(Reply::Status(202, "{}".into()))
        .reply(Reply::Status(200, "0|IN_PROGRESS|1234".into()))
        .reply(Reply::Status(201, "{}".into()));
    for p in &ps {
        send(&**p, MESSAGE).unwrap_or_else(|e| panic!("{}: {e}", p.name()));
    }
    let r = s.requests();
    let q = r[0].query();
    assert_eq!(r[0].method, "POST");
    assert_eq!(
        (
            q["api_secret"].as_str(),
            q["to"].as_str(),
            q["text"].as_str()
        ),
        ("SECRET", NUMBER, MESSAGE)
    );
    assert_eq!(r[1].header("x-version"), Some("1"));
    assert_eq!(r[1].header("authorization"), Some("bearer SECRET"));
    assert_eq!(
        r[1].json(),
        serde_json::json!({"text": format!(" {MESSAGE} "), "to": [format!(" {NUMBER} ")]})
    );
    assert_eq!(r[2].json()["dst"], NUMBER);
    assert_eq!(r[2].json()["text"], MESSAGE);
    assert_eq!(
        r[2].header("authorization"),
        Some(format!("Basic {}", b64("ACxxx:token")).as_str())
    );
    let q = r[3].query();
    assert_eq!(
        (
            q["password"].as_str(),
            q["msisdn"].as_str(),
            q["message"].as_str()
        ),
        ("SECRET", NUMBER, MESSAGE)
    );
    let f = r[4].form();
    assert_eq!(
        (f["Body"].as_str(), f["To"].as_str(), f["From"].as_str()),
        (MESSAGE, NUMBER, "+12015550100")
    );

    // The Plivo payload as the guide prints it is caught at load.
    let typo = toml.replace("\"dst\":\"$ctx.num\"", "\"dst\":\"ctx.num\"");
    let e = Config::from_toml(Path::new("/etc/smsotp/smsotp.toml"), &typo)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("provider[2].body") && e.contains("write $ctx.num"),
        "{e}"
    );
}

// ------------------------------------------------------- success rules

#[test]
fn success_rules() {
    let s = Server::start();
    let cfg = |status: &str, rule: &str| {
        format!(
            "[[provider]]\nkind = \"http\"\nurl = \"{}/s?to={{number}}&m={{message}}\"\nca_file = \"{}\"\n{status}\n{rule}\n",
            s.base(),
            s.ca()
        )
    };
    let cases: [(&str, &str, u16, &str, bool); 9] = [
        ("", "", 202, "", true),
        ("", "", 204, "", false),
        ("success_status = [204]", "", 204, "", true),
        (
            "",
            "success_body = { contains = \"OK\" }",
            200,
            "status: OK",
            true,
        ),
        (
            "",
            "success_body = { contains = \"OK\" }",
            200,
            "status: FAIL",
            false,
        ),
        (
            "",
            "success_body = { regex = '^ID: \\d+$' }",
            200,
            "ID: 42",
            true,
        ),
        (
            "",
            "success_body = { regex = '^ID: \\d+$' }",
            200,
            "ERR: 42",
            false,
        ),
        (
            "",
            "success_body = { json_pointer = \"/messages/0/status\", equals = \"0\" }",
            200,
            r#"{"messages":[{"status":"0"}]}"#,
            true,
        ),
        (
            "",
            "success_body = { json_pointer = \"/messages/0/status\", equals = \"0\" }",
            200,
            r#"{"messages":[{"status":"3"}]}"#,
            false,
        ),
    ];
    for (status, rule, code, body, ok) in cases {
        let p = provider(&cfg(status, rule));
        s.reply(Reply::Status(code, body.into()));
        let r = send(&*p, MESSAGE);
        assert_eq!(r.is_ok(), ok, "{status} {rule} {code} {body}: {r:?}");
        if rule.contains("success_body") && !ok {
            let e = r.unwrap_err();
            assert!(matches!(e, SendError::Rejected(_)), "{e:?}");
            assert!(
                e.to_string().contains("success_body") && e.to_string().contains(body),
                "{e}"
            );
        }
    }
    // Equal by value: numbers and booleans match their string form.
    let rule = |equals: &str| BodyRule::JsonPointer {
        pointer: "/a".into(),
        equals: serde_json::from_str(equals).unwrap(),
    };
    assert!(rule("\"0\"").matches(r#"{"a": 0}"#));
    assert!(rule("true").matches(r#"{"a": true}"#));
    assert!(rule("\"true\"").matches(r#"{"a": true}"#));
    assert!(!rule("\"0\"").matches(r#"{"a": 1}"#));
    assert!(!rule("\"0\"").matches("not json"));
}

// ------------------------------------------- classification and failover

fn two(s: &Server, extra: &str) -> Vec<Box<dyn SmsProvider>> {
    let one = |name: &str| {
        format!(
            "[[provider]]\nkind = \"http\"\nname = \"{name}\"\nurl = \"{}/{name}?to={{number}}&m={{message}}\"\nca_file = \"{}\"\n{extra}\n",
            s.base(),
            s.ca()
        )
    };
    providers(&format!("{}{}", one("first"), one("second")))
}

#[test]
fn server_error_fails_over_to_the_next_provider() {
    let s = Server::start();
    let chain = two(&s, "");
    s.reply(Reply::Status(500, "upstream broke".into()))
        .reply(Reply::Status(200, "{}".into()));
    let to = phone();
    let out = send_with_failover(
        &chain,
        &Sms {
            to: &to,
            text: MESSAGE,
        },
    );
    match out {
        ChainOutcome::Sent {
            provider,
            failed_over_from: Some((from, SendError::Transient(why))),
        } => {
            assert_eq!((provider.as_str(), from.as_str()), ("second", "first"));
            assert!(
                why.contains("500") && why.contains("upstream broke"),
                "{why}"
            );
        }
        other => panic!("{other:?}"),
    }
    let paths: Vec<String> = s.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/first", "/second"]);
}

#[test]
fn bad_credentials_do_not_fail_over() {
    let s = Server::start();
    let chain = two(&s, "");
    s.reply(Reply::Status(401, r#"{"error":"bad key"}"#.into()));
    let to = phone();
    match send_with_failover(
        &chain,
        &Sms {
            to: &to,
            text: MESSAGE,
        },
    ) {
        ChainOutcome::Failed(v) => {
            assert_eq!(v.len(), 1);
            assert!(
                matches!(&v[0].1, SendError::Misconfigured(m) if m.contains("401") && m.contains("bad credentials")),
                "{v:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.requests().len(), 1);

    // Other 4xx: refused, no failover either.
    s.reply(Reply::Status(400, "invalid number".into()));
    match send_with_failover(
        &chain,
        &Sms {
            to: &to,
            text: MESSAGE,
        },
    ) {
        ChainOutcome::Failed(v) => assert!(
            matches!(&v[..], [(_, SendError::Rejected(m))] if m.contains("400 Bad Request: invalid number")),
            "{v:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.requests().len(), 2);
    // 429 is temporary.
    s.reply(Reply::Status(429, String::new()))
        .reply(Reply::Status(200, String::new()));
    assert!(matches!(
        send_with_failover(
            &chain,
            &Sms {
                to: &to,
                text: MESSAGE
            }
        ),
        ChainOutcome::Sent { .. }
    ));
}

#[test]
fn a_hanging_gateway_times_out_within_its_bound() {
    let s = Server::start();
    let p = provider(&format!(
        "[[provider]]\nkind = \"http\"\nurl = \"{}/hang?to={{number}}&m={{message}}\"\nca_file = \"{}\"\ntimeout = \"1s\"\n",
        s.base(),
        s.ca()
    ));
    s.reply(Reply::Hang(Duration::from_secs(6)));
    let to = phone(); // number metadata loads once, slowly in debug builds
    let started = Instant::now();
    let e = p
        .send(&Sms {
            to: &to,
            text: MESSAGE,
        })
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(e, SendError::Transient(ref m) if m.contains("within 1s")),
        "{e:?}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[test]
fn nothing_listening_is_transient() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = provider(&format!(
        "[[provider]]\nkind = \"http\"\nurl = \"https://127.0.0.1:{port}/x?to={{number}}&m={{message}}\"\n"
    ));
    let e = send(&*p, MESSAGE).unwrap_err();
    assert!(
        matches!(e, SendError::Transient(ref m) if m.contains("cannot reach")),
        "{e:?}"
    );
}

#[test]
fn redirects_are_not_followed() {
    let s = Server::start();
    let p = provider(&format!(
        "[[provider]]\nkind = \"http\"\nurl = \"{}/old?to={{number}}&m={{message}}\"\nca_file = \"{}\"\n",
        s.base(),
        s.ca()
    ));
    s.reply(Reply::Redirect("https://elsewhere.example/new"));
    let e = send(&*p, MESSAGE).unwrap_err();
    assert!(
        matches!(e, SendError::Misconfigured(ref m) if m.contains("302")),
        "{e:?}"
    );
    assert_eq!(s.requests().len(), 1);
}

#[test]
fn an_unknown_ca_is_refused() {
    let s = Server::start();
    let other = pki();
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other.pem");
    std::fs::write(&other_ca, &other.ca_pem).unwrap();
    let url = format!("{}/x?to={{number}}&m={{message}}", s.base());
    for ca in [
        format!("ca_file = \"{}\"\n", other_ca.display()),
        String::new(),
    ] {
        let p = provider(&format!(
            "[[provider]]\nkind = \"http\"\nurl = \"{url}\"\n{ca}"
        ));
        let e = send(&*p, MESSAGE).unwrap_err();
        assert!(
            matches!(e, SendError::Transient(ref m) if m.contains("TLS") && m.contains("ca_file")),
            "{e:?}"
        );
    }
    // Never got as far as a request.
    assert!(s.requests().is_empty());
}

#[test]
fn plain_http_needs_allow_http() {
    // A plain HTTP listener that answers 200 to anything.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    let url = format!("http://127.0.0.1:{port}/x?to={{number}}&m={{message}}");
    let e = Config::from_toml(
        Path::new("/etc/smsotp/smsotp.toml"),
        &format!("[[provider]]\nkind = \"http\"\nurl = \"{url}\"\n"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("provider[0].url") && e.contains("allow_http"),
        "{e}"
    );
    let p = provider(&format!(
        "[[provider]]\nkind = \"http\"\nurl = \"{url}\"\nallow_http = true\n"
    ));
    send(&*p, "123456").unwrap();
}

/// A CONNECT proxy on loopback that records the targets it was asked for.
fn connect_proxy() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                client.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut r = BufReader::new(client.try_clone()?);
                let mut line = String::new();
                r.read_line(&mut line)?;
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h)?;
                    if h.trim().is_empty() {
                        break;
                    }
                }
                let target = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                log.lock().unwrap().push(line.trim().to_owned());
                let upstream = TcpStream::connect(&target)?;
                (&client).write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
                let (mut up_r, mut up_w) = (upstream.try_clone()?, upstream);
                let mut down_w = client;
                let pump = std::thread::spawn(move || std::io::copy(&mut r, &mut up_w));
                std::io::copy(&mut up_r, &mut down_w)?;
                let _ = pump.join();
                Ok(())
            });
        }
    });
    (port, seen)
}

#[test]
fn goes_through_the_configured_proxy() {
    let s = Server::start();
    let (port, seen) = connect_proxy();
    let p = provider(&format!(
        "[[provider]]\nkind = \"http\"\nurl = \"{}/via?to={{number}}&m={{message}}\"\nca_file = \"{}\"\n\
         proxy = \"http://127.0.0.1:{port}\"\n",
        s.base(),
        s.ca()
    ));
    send(&*p, MESSAGE).unwrap();
    assert_eq!(s.only_request().path, "/via");
    assert_eq!(
        *seen.lock().unwrap(),
        [format!("CONNECT 127.0.0.1:{} HTTP/1.1", s.addr.port())]
    );
}

// ------------------------------------------------------ secrets and logs

#[test]
fn secret_files_must_be_root_only() {
    let s = Server::start();
    let path = s.secret("loose", "x");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let toml = format!(
        "[[provider]]\nkind = \"clickatell\"\napi_key_file = \"{path}\"\nbase_url = \"{}\"\nca_file = \"{}\"\n",
        s.base(),
        s.ca()
    );
    let e = send(&*provider(&toml), MESSAGE).unwrap_err();
    assert!(
        matches!(e, SendError::Misconfigured(ref m) if m.contains(&path) && m.contains("chmod 600")),
        "{e:?}"
    );
    let missing = toml.replace(&path, "/nonexistent/secret");
    let e = send(&*provider(&missing), MESSAGE).unwrap_err();
    assert!(
        matches!(e, SendError::Misconfigured(ref m) if m.contains("/nonexistent/secret")),
        "{e:?}"
    );
    assert!(s.requests().is_empty());
}

#[test]
fn errors_never_show_secrets_the_message_or_the_number() {
    let s = Server::start();
    let toml = format!(
        "[[provider]]\nkind = \"vonage\"\napi_key = \"key1\"\napi_secret_file = \"{}\"\nfrom = \"ACME\"\n\
         base_url = \"{}\"\nca_file = \"{}\"\n",
        s.secret("v", "Sup3r/Secret+"),
        s.base(),
        s.ca()
    );
    let p = provider(&toml);
    // A gateway that echoes the whole request back, in several encodings.
    let to = phone();
    s.reply(Reply::Status(
        400,
        format!(
            "bad request: api_secret=Sup3r%2FSecret%2B&text={}&to={DIGITS} raw: Sup3r/Secret+ {} {}{}",
            percent_encode(MESSAGE),
            json_escape(MESSAGE),
            MESSAGE,
            "x".repeat(500)
        ),
    ));
    let e = send(&*p, MESSAGE).unwrap_err();
    assert_clean(&e, &["Sup3r", "Secret"]);
    let text = e.to_string();
    assert!(
        text.contains("[redacted]") && text.contains(&to.masked()),
        "{text}"
    );
    assert!(
        text.chars().count() < 400,
        "{} chars: {text}",
        text.chars().count()
    );
    assert!(!text.contains('\n'));
}

#[test]
fn debug_output_holds_no_secret() {
    let s = Secret::new("hunter2".to_owned());
    assert_eq!(format!("{s:?}"), "[redacted]");
    let o = Outgoing {
        method: Method::Post,
        url: Zeroizing::new("https://x/?k=hunter2".into()),
        headers: vec![(
            "Authorization".into(),
            Zeroizing::new("Bearer hunter2".into()),
        )],
        body: Some(Zeroizing::new(b"secret=hunter2".to_vec())),
    };
    assert!(!format!("{o:?}").contains("hunter2"), "{o:?}");
    let to = phone();
    let mut secrets = BTreeMap::new();
    secrets.insert(String::new(), Secret::new("hunter2".to_owned()));
    let r = Redactor::new(
        &Sms {
            to: &to,
            text: "123456",
        },
        &secrets,
        &[],
    );
    assert!(!format!("{r:?}").contains("hunter2"));
}

// ---------------------------------------------------- templates and escaping

#[test]
fn placeholders_and_aliases() {
    let t = Template::parse(
        "a{number}b{number_digits}c{message}d$ctx.num/$ctx.msg{secret}{secret:tok}",
    )
    .unwrap();
    assert_eq!(
        t.0,
        vec![
            Part::Lit("a".into()),
            Part::Number,
            Part::Lit("b".into()),
            Part::NumberDigits,
            Part::Lit("c".into()),
            Part::Message,
            Part::Lit("d".into()),
            Part::Number,
            Part::Lit("/".into()),
            Part::Message,
            Part::Secret(String::new()),
            Part::Secret("tok".into()),
        ]
    );
    // JSON braces and `{{` are literal.
    let t = Template::parse(r#"{"a": {}, "b": { "c": 1 }, "d": "{{number}"}"#).unwrap();
    assert_eq!(
        t.0,
        vec![Part::Lit(
            r#"{"a": {}, "b": { "c": 1 }, "d": "{number}"}"#.into()
        )]
    );
    for (bad, says) in [
        ("{nubmer}", "unknown placeholder {nubmer}"),
        ("{secret:}", "unknown placeholder {secret:}"),
        ("$ctx.phone", "unknown placeholder $ctx.phone"),
        ("to=ctx.num", "lacks its '$'"),
        ("\"ctx.msg\"", "write $ctx.msg"),
    ] {
        let e = Template::parse(bad).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn values_are_escaped_for_where_they_stand() {
    let secrets = BTreeMap::new();
    let v = Values {
        number: NUMBER,
        digits: DIGITS,
        message: "a&b=c \"d\"\n\\é+",
        secrets: &secrets,
        status_callback: "",
    };
    let t = Template::parse("{number}|{message}").unwrap();
    assert_eq!(
        &*t.render(&v, Escape::Percent).unwrap(),
        "%2B12025550143|a%26b%3Dc%20%22d%22%0A%5C%C3%A9%2B"
    );
    assert_eq!(
        &*t.render(&v, Escape::Json).unwrap(),
        "+12025550143|a&b=c \\\"d\\\"\\n\\\\é+"
    );
    assert!(t.render(&v, Escape::Header).is_err());
    // A value that looks like a placeholder stays a value.
    let v2 = Values {
        message: "{number} $ctx.num",
        ..v
    };
    assert_eq!(
        &*Template::parse("{message}")
            .unwrap()
            .render(&v2, Escape::Verbatim)
            .unwrap(),
        "{number} $ctx.num"
    );
}

#[test]
fn json_placeholders_must_stand_in_strings() {
    let check = |s: &str| check_text_body(&Template::parse(s).unwrap(), ContentType::Json);
    assert!(check(r#"{"to": "{number}", "t": "x\"{message}"}"#).is_ok());
    assert!(check(r#"{"to": {number}}"#)
        .unwrap_err()
        .contains("outside a JSON string"));
    assert!(check(r#"{"to": "{number}""#)
        .unwrap_err()
        .contains("not valid JSON"));
    let form = |s: &str| check_text_body(&Template::parse(s).unwrap(), ContentType::Form);
    assert!(form("a={number}&b=x%20y").is_ok());
    assert!(form("a={number}&b=x y").unwrap_err().contains("%20"));
}

// ----------------------------------------------------------- no threads

/// Runs [`thread_probe_child`] in a fresh process of this test binary: a
/// send there must start no thread (seccomp refuses thread creation), and
/// the process has as many threads after the send as before.
#[test]
fn a_send_starts_no_thread() {
    let s = Server::start();
    s.reply(Reply::Status(201, "{}".into()));
    run_probe(
        "sms::http::tests::thread_probe_child",
        &[
            ("SMSOTP_THREAD_PROBE_PORT", s.addr.port().to_string()),
            ("SMSOTP_THREAD_PROBE_CA", s.ca().to_string()),
            (
                "SMSOTP_THREAD_PROBE_SECRET",
                s.secret("k", "key").to_string(),
            ),
        ],
        "probe: sent",
    );
    assert_eq!(s.requests().len(), 1);
}

/// Runs the test `test` of this binary alone in a fresh process with
/// `env` (a probe that restricts itself, e.g. with
/// [`forbid_new_threads`]), within 60 s; it must pass and print `said`.
pub(crate) fn run_probe(test: &str, env: &[(&str, String)], said: &str) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", test, "--test-threads=1", "--nocapture"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the probe {test} did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed") && text.contains(said), "{text}");
}

pub(crate) fn tasks() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// From here on this thread (and anything it would start) cannot create a
/// thread: `clone` with `CLONE_THREAD` fails with EAGAIN, `clone3` with
/// ENOSYS (so libc falls back to `clone`).
pub(crate) fn forbid_new_threads() {
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xC000_00B7;
    use libc::{sock_filter, sock_fprog};
    const LD: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let f = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    let prog = [
        f(LD, 0, 0, 4), // arch
        f(JEQ, 1, 0, ARCH),
        f(RET, 0, 0, libc::SECCOMP_RET_ALLOW),
        f(LD, 0, 0, 0), // syscall number
        f(JEQ, 0, 1, libc::SYS_clone3 as u32),
        f(RET, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        f(JEQ, 0, 3, libc::SYS_clone as u32),
        f(LD, 0, 0, 16), // clone flags: low half of args[0]
        f(JSET, 0, 1, libc::CLONE_THREAD as u32),
        f(RET, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EAGAIN as u32),
        f(RET, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: plain syscalls with a valid, live filter program.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &fprog as *const sock_fprog
            ),
            0,
            "seccomp: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Only does something when run by [`a_send_starts_no_thread`].
#[test]
fn thread_probe_child() {
    let Ok(port) = std::env::var("SMSOTP_THREAD_PROBE_PORT") else {
        return;
    };
    let ca = std::env::var("SMSOTP_THREAD_PROBE_CA").unwrap();
    let secret = std::env::var("SMSOTP_THREAD_PROBE_SECRET").unwrap();
    // A host name, so the resolver runs; and the whole provider, from config.
    let p = provider(&format!(
        "[[provider]]\nkind = \"clickatell\"\napi_key_file = \"{secret}\"\n\
         base_url = \"https://localhost:{port}\"\nca_file = \"{ca}\"\n"
    ));
    let before = tasks();
    forbid_new_threads();
    assert!(
        std::thread::Builder::new().spawn(|| ()).is_err(),
        "the probe must be able to see a thread being started"
    );
    let to = phone();
    let r = p.send(&Sms {
        to: &to,
        text: "123456",
    });
    // Clickatell wants messages[].accepted; the server's "{}" is a refusal,
    // which is fine: the request went out and the answer came back.
    assert!(matches!(r, Err(SendError::Rejected(_))), "{r:?}");
    assert_eq!(tasks(), before);
    println!("probe: sent");
}

#[test]
fn credentials_in_a_url_are_never_shown() {
    assert_eq!(
        without_credentials("https://user:pa55@api.example.net/send?x=1"),
        "https://***@api.example.net/send?x=1"
    );
    assert_eq!(
        without_credentials("http://proxyuser:pw@proxy.example.net:3128"),
        "http://***@proxy.example.net:3128"
    );
    assert_eq!(
        without_credentials("https://api.example.net/send?email=a@b.example"),
        "https://api.example.net/send?email=a@b.example"
    );
    assert_eq!(without_credentials("not a url"), "not a url");
}

#[test]
fn userinfo_is_what_a_url_carries_before_its_host() {
    assert_eq!(
        userinfo("https://user:pa55@api.example.net/send"),
        Some("user:pa55")
    );
    assert_eq!(userinfo("https://api.example.net/send?e=a@b"), None);
    assert_eq!(userinfo("no scheme"), None);
}

/// smsotp-radiusd builds a provider per thread; with [`HttpAgents`] they
/// send through one agent, so one keep-alive connection serves every
/// thread's sends one after another (and as many as were in flight at
/// once are kept for the next ones), instead of one connection per thread.
#[test]
fn shared_agents_reuse_one_connection_across_providers() {
    // A plain HTTP/1.1 server with keep-alive that counts connections.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut out = c.try_clone().unwrap();
                let mut r = BufReader::new(c);
                loop {
                    // A GET: headers only.
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    if out
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let toml = format!(
        "[[provider]]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/x?to={{number}}&m={{message}}\"\nallow_http = true\n"
    );
    let cfg = Config::from_toml(Path::new("/etc/smsotp/smsotp.toml"), &toml).unwrap();
    fn clock() -> Box<dyn crate::clock::Clock> {
        Box::new(FixedClock::at(0))
    }
    let build = |ctx: &crate::sms::ProviderContext| {
        crate::sms::from_config_with(&cfg.providers, clock, ctx).remove(0)
    };
    let sends = |a: &dyn SmsProvider, b: &dyn SmsProvider| {
        for _ in 0..3 {
            send(a, "123456").unwrap();
            send(b, "123456").unwrap();
        }
    };
    let wait_for = |n: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while connections.load(std::sync::atomic::Ordering::SeqCst) < n
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        connections.load(std::sync::atomic::Ordering::SeqCst)
    };

    // Two threads' providers, each with its own agent: two connections.
    let own = crate::sms::ProviderContext::default();
    let (a, b) = (build(&own), build(&own));
    sends(&*a, &*b);
    assert_eq!(wait_for(2), 2);

    // Sharing the agents of one generation: one connection for both.
    let shared = crate::sms::ProviderContext {
        http_agents: Some(HttpAgents::new(16)),
        ..Default::default()
    };
    let (a, b) = (build(&shared), build(&shared));
    sends(&*a, &*b);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(wait_for(3), 3, "one more connection, not two");
}

#[test]
fn headers_up_to_the_buffer_pass_and_larger_ones_fail_clearly() {
    // A gateway whose answer carries `pad` bytes of one extra header.
    let serve = |pad: usize| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Some(mut c) = listener.incoming().flatten().next() {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nX-Pad: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    "a".repeat(pad)
                );
                let _ = c.write_all(head.as_bytes());
            }
        });
        provider(&format!(
            "[[provider]]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/x?to={{number}}&m={{message}}\"\nallow_http = true\n"
        ))
    };
    // Far more than any gateway sends, and still within the buffer.
    send(&*serve(12 * 1024), MESSAGE).unwrap();
    let e = send(&*serve(64 * 1024), MESSAGE).unwrap_err();
    assert!(
        e.to_string().to_lowercase().contains("header"),
        "an oversized answer must fail and say why: {e}"
    );
}

// ------------------------------------------------------ status callbacks

#[test]
fn a_status_callback_is_asked_for_and_the_message_id_kept() {
    let s = Server::start();
    let to = phone();
    let sms = Sms {
        to: &to,
        text: MESSAGE,
    };
    let twilio = format!(
        "[[provider]]\nkind = \"twilio\"\naccount_sid = \"AC1\"\nauth_token_file = \"{}\"\n\
         from = \"+12015550100\"\nbase_url = \"{}\"\nca_file = \"{}\"\n",
        s.secret("twilio", "t"),
        s.base(),
        s.ca()
    );
    // Without status_callback: no StatusCallback, no id kept.
    s.reply(Reply::Status(201, r#"{"sid":"SM1"}"#.into()));
    assert_eq!(provider(&twilio).send_tracked(&sms), Ok(None));
    assert!(!s.only_request().form().contains_key("StatusCallback"));
    let url = "https://sms.example.org/smsotp/receipt/twilio?x=1&y=%20";
    let p = provider(&format!("{twilio}status_callback = \"{url}\"\n"));
    s.reply(Reply::Status(
        201,
        r#"{"sid":"SM2","status":"queued"}"#.into(),
    ));
    assert_eq!(p.send_tracked(&sms), Ok(Some("SM2".into())));
    assert_eq!(s.requests()[1].form()["StatusCallback"], url);
    // An answer without a sid still sent the SMS; there is just no id.
    s.reply(Reply::Status(201, "{}".into()));
    assert_eq!(p.send_tracked(&sms), Ok(None));

    let generic = format!(
        "[[provider]]\nkind = \"http\"\nurl = \"{}/send\"\nca_file = \"{}\"\n\
         body = {{ to = \"{{number}}\", text = \"{{message}}\" }}\n\
         status_callback = \"https://sms.example.org/cb/gw\"\n\
         status_id_pointer = \"/messages/0/id\"\nstatus_id_field = \"id\"\n\
         status_field = \"status\"\nstatus_failure = [\"failed\"]\n\
         status_token_file = \"{}\"\n",
        s.base(),
        s.ca(),
        s.secret("gw-callback", "cb-token")
    );
    let p = provider(&generic);
    s.reply(Reply::Status(200, r#"{"messages":[{"id":42}]}"#.into()));
    assert_eq!(p.send_tracked(&sms), Ok(Some("42".into())));
    s.reply(Reply::Status(200, "OK".into()));
    assert_eq!(p.send_tracked(&sms), Ok(None));
    // The token is never sent to the gateway…
    assert!(s.requests().iter().all(|r| !r.text().contains("cb-token")));
    // …but with the callback URL when {status_callback} asks for it.
    let p = provider(&generic.replace(
        "text = \"{message}\" }",
        "text = \"{message}\", notify = \"{status_callback}\" }",
    ));
    s.reply(Reply::Status(200, r#"{"messages":[{"id":"m7"}]}"#.into()));
    assert_eq!(p.send_tracked(&sms), Ok(Some("m7".into())));
    let r = s.requests().pop().unwrap();
    assert_eq!(
        r.form()["notify"],
        "https://sms.example.org/cb/gw?token=cb-token"
    );
    // In a header, the URL goes bare.
    let p = provider(&format!(
        "{}status_token_header = \"X-Token\"\n",
        generic.replace(
            "text = \"{message}\" }",
            "text = \"{message}\", notify = \"{status_callback}\" }",
        )
    ));
    s.reply(Reply::Status(200, "{}".into()));
    assert_eq!(p.send_tracked(&sms), Ok(None));
    let r = s.requests().pop().unwrap();
    assert_eq!(r.form()["notify"], "https://sms.example.org/cb/gw");
    // The placeholder without status_callback is an error naming it.
    let bare = "[[provider]]\nkind = \"http\"\n\
        url = \"https://gw.example/send?to={number}&t={message}&cb={status_callback}\"\n";
    let e = Config::from_toml(Path::new("/etc/smsotp/smsotp.toml"), bare)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("provider[0].url") && e.contains("needs status_callback"),
        "{e}"
    );
}

// ------------------------------------------------------- number_format

/// `number_format` decides how `{number}` goes (URL and body), and a
/// preset's recipient; `{number_digits}` stays the E.164 digits.
#[test]
fn number_format_decides_how_the_number_goes() {
    let s = Server::start();
    let uk = Phone::parse("+442079460018", None).unwrap();
    for (format, want) in [
        ("e164", "+442079460018"),
        ("digits", "442079460018"),
        ("national", "02079460018"),
    ] {
        let toml = format!(
            "[phone]\nallowed_countries = [\"GB\"]\n\n[[provider]]\nkind = \"http\"\n\
             number_format = \"{format}\"\nca_file = \"{}\"\n\
             url = \"{}/send/{{number}}?d={{number_digits}}\"\n\
             body = {{ to = \"{{number}}\", text = \"{{message}}\" }}\n",
            s.ca(),
            s.base()
        );
        s.requests.lock().unwrap().clear();
        provider(&toml)
            .send(&Sms {
                to: &uk,
                text: "123456",
            })
            .unwrap();
        let r = s.only_request();
        assert_eq!(
            r.path,
            format!("/send/{}", want.replace('+', "%2B")),
            "{format}"
        );
        assert_eq!(r.query()["d"], "442079460018", "{format}");
        assert_eq!(r.form()["to"], want, "{format}");
    }
    // Presets: plivo takes E.164 as well as its default digits, bulksms
    // digits as well as its default E.164.
    let toml = format!(
        "[[provider]]\nkind = \"plivo\"\nnumber_format = \"e164\"\nauth_id = \"MAXX\"\n\
         auth_token_file = \"{}\"\nfrom = \"+14155550100\"\nbase_url = \"{}\"\nca_file = \"{}\"\n\n\
         [[provider]]\nkind = \"bulksms\"\nnumber_format = \"digits\"\nusername = \"acme\"\n\
         password_file = \"{}\"\nbase_url = \"{}\"\nca_file = \"{}\"\n",
        s.secret("plivo", "pl-token"),
        s.base(),
        s.ca(),
        s.secret("bulksms", "bs-token"),
        s.base(),
        s.ca()
    );
    let p = providers(&toml);
    s.requests.lock().unwrap().clear();
    s.reply(Reply::Status(202, "{}".into()));
    s.reply(Reply::Status(201, "[]".into()));
    send(&*p[0], "123456").unwrap();
    send(&*p[1], "123456").unwrap();
    let r = s.requests();
    assert_eq!(r[0].json()["dst"], NUMBER);
    assert_eq!(r[1].json()["to"], DIGITS);
}
