//! The LDAP client and directory against a fake server: a thread on
//! 127.0.0.1 answering canned rasn-ldap messages, stopped on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rasn_ldap::{
    BindResponse, ExtendedResponse, LdapMessage, LdapResult, PartialAttribute, ProtocolOp,
    ResultCode, SearchResultDone, SearchResultEntry, SearchResultReference,
};

use super::*;
use crate::config::Config;
use crate::directory::{Directory, DirectoryError, DirectorySpec};

/// What the fake server does with each request it reads.
type Handler = Arc<dyn Fn(&LdapMessage) -> Vec<ProtocolOp> + Send + Sync>;

struct Fake {
    addr: SocketAddr,
    /// Every request read, in order.
    requests: Arc<Mutex<Vec<LdapMessage>>>,
    /// Bytes read from clients.
    bytes: Arc<AtomicUsize>,
    /// Connections accepted.
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_pdu(s: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head)?;
    let mut pdu = head.to_vec();
    let len = if head[1] < 0x80 {
        usize::from(head[1])
    } else {
        let mut l = vec![0u8; usize::from(head[1] & 0x7f)];
        s.read_exact(&mut l)?;
        pdu.extend_from_slice(&l);
        l.iter().fold(0, |a, &b| (a << 8) | usize::from(b))
    };
    let at = pdu.len();
    pdu.resize(at + len, 0);
    s.read_exact(&mut pdu[at..])?;
    Ok(pdu)
}

impl Fake {
    /// A server answering with `handler`; `silent` accepts and never
    /// answers; `tls` wraps every connection in TLS.
    fn start(handler: Handler, silent: bool, tls: Option<Arc<rustls::ServerConfig>>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let bytes = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, b, a, st) = (
            requests.clone(),
            bytes.clone(),
            accepted.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !st.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok((tcp, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                tcp.set_nonblocking(false).unwrap();
                tcp.set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                if silent {
                    // Hold the connection, read nothing, answer nothing.
                    while !st.load(Ordering::SeqCst) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    drop(tcp);
                    continue;
                }
                match &tls {
                    None => serve(tcp, &handler, &r, &b, &st),
                    Some(cfg) => {
                        let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                        let s = rustls::StreamOwned::new(conn, tcp);
                        serve(s, &handler, &r, &b, &st);
                    }
                }
            }
        });
        Fake {
            addr,
            requests,
            bytes,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.addr.port())
    }

    fn requests(&self) -> Vec<LdapMessage> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(
    mut s: impl Read + Write,
    handler: &Handler,
    requests: &Mutex<Vec<LdapMessage>>,
    bytes: &AtomicUsize,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        let pdu = match read_pdu(&mut s) {
            Ok(p) => p,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return,
        };
        bytes.fetch_add(pdu.len(), Ordering::SeqCst);
        let Ok(m) = rasn::ber::decode::<LdapMessage>(&pdu) else {
            return;
        };
        requests.lock().unwrap().push(m.clone());
        if matches!(m.protocol_op, ProtocolOp::UnbindRequest(_)) {
            return;
        }
        for op in handler(&m) {
            let out = rasn::ber::encode(&LdapMessage::new(m.message_id, op)).unwrap();
            if s.write_all(&out).and_then(|()| s.flush()).is_err() {
                return;
            }
        }
    }
}

fn ok_bind() -> ProtocolOp {
    ProtocolOp::BindResponse(BindResponse::new(
        ResultCode::Success,
        "".into(),
        "".into(),
        None,
        None,
    ))
}

fn done(code: ResultCode) -> ProtocolOp {
    ProtocolOp::SearchResDone(SearchResultDone(LdapResult::new(
        code,
        "".into(),
        "".into(),
    )))
}

fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> ProtocolOp {
    ProtocolOp::SearchResEntry(SearchResultEntry::new(
        dn.into(),
        attrs
            .iter()
            .map(|(n, vs)| {
                PartialAttribute::new(
                    (*n).into(),
                    vs.iter()
                        .map(|v| v.as_bytes().to_vec().into())
                        .collect::<Vec<_>>()
                        .into(),
                )
            })
            .collect(),
    ))
}

/// A directory server holding `entries` for any search, with a bind
/// password "s3cret" for every DN.
fn directory_server(entries: Vec<ProtocolOp>, end: ResultCode) -> Fake {
    Fake::start(
        Arc::new(move |m: &LdapMessage| match &m.protocol_op {
            ProtocolOp::BindRequest(b) => {
                let pw = match &b.authentication {
                    rasn_ldap::AuthenticationChoice::Simple(p) => p.to_vec(),
                    _ => Vec::new(),
                };
                if pw == b"s3cret" || (pw.is_empty() && b.name.is_empty()) {
                    vec![ok_bind()]
                } else {
                    vec![ProtocolOp::BindResponse(BindResponse::new(
                        ResultCode::InvalidCredentials,
                        "".into(),
                        "bad password".into(),
                        None,
                        None,
                    ))]
                }
            }
            ProtocolOp::SearchRequest(_) => {
                let mut v = entries.clone();
                v.push(done(end));
                v
            }
            ProtocolOp::ModifyRequest(_) => {
                vec![ProtocolOp::ModifyResponse(rasn_ldap::ModifyResponse(
                    LdapResult::new(ResultCode::Success, "".into(), "".into()),
                ))]
            }
            _ => Vec::new(),
        }),
        false,
        None,
    )
}

/// A temporary directory for password files and CA files.
struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Files {
        Files(tempfile::tempdir().unwrap())
    }
    fn secret(&self, name: &str, value: &str) -> String {
        let p = self.0.path().join(name);
        std::fs::write(&p, value).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p.display().to_string()
    }
}

fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
    Config::from_toml(std::path::Path::new("/etc/smsotp/smsotp.toml"), text)
}

fn spec_of(text: &str) -> LdapSpec {
    let c = parse(text).unwrap();
    match c.directories.into_iter().next() {
        Some(DirectorySpec::Ldap(s)) => *s,
        other => panic!("not ldap: {other:?}"),
    }
}

fn err_of(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("should be refused:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// An LDAP table for `urls`, plaintext allowed, binding as the service.
fn table(urls: &[String], f: &Files, extra: &str) -> String {
    let pw = f.secret("bindpw", "s3cret\n");
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[[directory]]\nkind = \"ldap\"\nurls = [{}]\nallow_plaintext = true\n\
         bind_dn = \"cn=svc,dc=example,dc=org\"\nbind_password_file = \"{pw}\"\n\
         base = \"ou=people,dc=example,dc=org\"\ntimeout = \"1s\"\nconnect_timeout = \"1s\"\n{extra}",
        urls.join(", ")
    )
}

// ------------------------------------------------------------ lookups

#[test]
fn bind_search_and_the_number_comes_back() {
    let s = directory_server(
        vec![entry(
            "uid=alice,ou=people,dc=example,dc=org",
            &[("mobile", &["+12025550123"])],
        )],
        ResultCode::Success,
    );
    let f = Files::new();
    let d = LdapDirectory::new(spec_of(&table(&[s.url()], &f, "")));
    let e = d.lookup("alice").unwrap().unwrap();
    assert_eq!(e.raw, "+12025550123");
    assert_eq!(e.source, format!("ldap {}", s.url()));
    assert!(e.location.contains("uid=alice,ou=people"), "{}", e.location);
    let reqs = s.requests();
    match &reqs[0].protocol_op {
        ProtocolOp::BindRequest(b) => assert_eq!(b.name.0, "cn=svc,dc=example,dc=org"),
        other => panic!("{other:?}"),
    }
    match &reqs[1].protocol_op {
        ProtocolOp::SearchRequest(r) => {
            assert_eq!(r.base_object.0, "ou=people,dc=example,dc=org");
            assert_eq!(r.size_limit, 2);
            assert_eq!(r.filter, filter::parse("(uid=alice)").unwrap());
        }
        other => panic!("{other:?}"),
    }
    // The PAM module's directory closes with an unbind.
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.requests().len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(matches!(
        s.requests()[2].protocol_op,
        ProtocolOp::UnbindRequest(_)
    ));
}

#[test]
fn phone_attributes_are_tried_in_order() {
    let s = directory_server(
        vec![entry(
            "uid=bob,dc=example,dc=org",
            &[("mobile", &[""]), ("telephoneNumber", &["+12025550188"])],
        )],
        ResultCode::Success,
    );
    let f = Files::new();
    let d = LdapDirectory::new(spec_of(&table(
        &[s.url()],
        &f,
        "phone_attributes = [\"mobile\", \"telephoneNumber\"]\n",
    )));
    assert_eq!(d.lookup("bob").unwrap().unwrap().raw, "+12025550188");
    // Only mobile asked for: an entry without it has no number here.
    let d = LdapDirectory::new(spec_of(&table(&[s.url()], &f, "")));
    assert_eq!(d.lookup("bob").unwrap(), None);
}

#[test]
fn references_and_referrals_are_not_followed() {
    let refs = ProtocolOp::SearchResRef(SearchResultReference(vec![
        "ldap://elsewhere.example.org/dc=example,dc=org".into(),
    ]));
    let s = directory_server(vec![refs], ResultCode::Success);
    let f = Files::new();
    let d = LdapDirectory::new(spec_of(&table(&[s.url()], &f, "")));
    assert_eq!(d.lookup("carol").unwrap(), None);
    let s = directory_server(Vec::new(), ResultCode::Referral);
    let d = LdapDirectory::new(spec_of(&table(&[s.url()], &f, "")));
    assert_eq!(d.lookup("carol").unwrap(), None);
}

#[test]
fn several_entries_for_one_user_are_an_error() {
    let s = directory_server(
        vec![
            entry(
                "uid=dave,ou=a,dc=example,dc=org",
                &[("mobile", &["+12025550123"])],
            ),
            entry(
                "uid=dave,ou=b,dc=example,dc=org",
                &[("mobile", &["+12025550124"])],
            ),
        ],
        ResultCode::SizeLimitExceeded,
    );
    let f = Files::new();
    let d = LdapDirectory::new(spec_of(&table(&[s.url()], &f, "")));
    let e = d.lookup("dave").unwrap_err();
    assert!(
        matches!(
            &e,
            DirectoryError::Ldap {
                error: LdapError::SeveralEntries { .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("filter matches several entries"),
        "{e}"
    );
}

#[test]
fn a_server_that_never_answers_times_out_within_the_deadline() {
    let s = Fake::start(Arc::new(|_: &LdapMessage| Vec::new()), true, None);
    let f = Files::new();
    let spec =
        spec_of(&table(&[s.url()], &f, "").replace("timeout = \"1s\"\n", "timeout = \"300ms\"\n"));
    let d = LdapDirectory::new(spec);
    let t0 = Instant::now();
    let e = d.lookup("erin").unwrap_err();
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(300 + 700), "{took:?}");
    assert!(took >= Duration::from_millis(290), "{took:?}");
    match &e {
        DirectoryError::Unavailable {
            error: LdapError::Timeout { step, url },
            ..
        } => {
            assert_eq!(*step, "binding");
            assert_eq!(url, &s.url());
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string()
            .contains("no answer within the timeout while binding"),
        "{e}"
    );
    // Over ldaps:// the handshake is what times out.
    let spec = spec_of(
        &table(&[s.url().replace("ldap://", "ldaps://")], &f, "")
            .replace("timeout = \"1s\"\n", "timeout = \"300ms\"\n"),
    );
    let t0 = Instant::now();
    match spec.connect() {
        Err(LdapError::Timeout { step, .. }) => assert_eq!(step, "the TLS handshake"),
        other => panic!("{:?}", other.err()),
    }
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
}

/// A port nothing listens on (bound, then closed).
fn refused_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("ldap://127.0.0.1:{port}")
}

#[test]
fn a_refused_first_url_fails_over_to_the_second() {
    let s = directory_server(
        vec![entry(
            "uid=fay,dc=example,dc=org",
            &[("mobile", &["+12025550123"])],
        )],
        ResultCode::Success,
    );
    let dead = refused_url();
    let f = Files::new();
    let spec = spec_of(&table(&[dead.clone(), s.url()], &f, ""));
    let d = LdapDirectory::new(spec.clone());
    let e = d.lookup("fay").unwrap().unwrap();
    // The directory's name (its first URL by default), then the server
    // that answered.
    assert_eq!(e.source, format!("ldap {dead} ({})", s.url()));
    // Alone, the dead URL is a TCP error naming the address.
    let spec = spec_of(&table(std::slice::from_ref(&dead), &f, ""));
    match spec.connect() {
        Err(e @ LdapError::Tcp { .. }) => {
            assert!(e.to_string().contains(&dead), "{e}");
            assert!(e.is_unavailable());
        }
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn a_refused_bind_does_not_fail_over() {
    let first = directory_server(Vec::new(), ResultCode::Success);
    let second = directory_server(Vec::new(), ResultCode::Success);
    let f = Files::new();
    let mut text = table(&[first.url(), second.url()], &f, "");
    let wrong = f.secret("wrongpw", "nope\n");
    text = text.replace(&f.0.path().join("bindpw").display().to_string(), &wrong);
    let d = LdapDirectory::new(spec_of(&text));
    let e = d.lookup("gus").unwrap_err();
    match &e {
        DirectoryError::Ldap {
            error: err @ LdapError::Bind {
                code: 49, message, ..
            },
            ..
        } => {
            assert!(err.is_wrong_password());
            assert_eq!(message, "bad password");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(second.accepted.load(Ordering::SeqCst), 0);
}

#[test]
fn an_empty_password_is_refused_before_anything_is_sent() {
    let s = directory_server(Vec::new(), ResultCode::Success);
    let f = Files::new();
    let spec = spec_of(&table(&[s.url()], &f, ""));
    let mut c = spec.connect().unwrap();
    let e = c.bind("uid=alice,dc=example,dc=org", "").unwrap_err();
    assert!(matches!(e, LdapError::EmptyPassword { .. }), "{e:?}");
    assert!(!e.is_unavailable() && !e.is_wrong_password());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(s.bytes.load(Ordering::SeqCst), 0);
    // The user's own bind, right and wrong, for the RADIUS primary.
    c.bind("uid=alice,dc=example,dc=org", "s3cret").unwrap();
    let e = c.bind("uid=alice,dc=example,dc=org", "guess").unwrap_err();
    assert!(e.is_wrong_password(), "{e:?}");
    c.unbind();
}

#[test]
fn a_user_name_a_login_cannot_have_sends_nothing() {
    let s = directory_server(Vec::new(), ResultCode::Success);
    let f = Files::new();
    let d = LdapDirectory::new(spec_of(&table(&[s.url()], &f, "")));
    for bad in ["", "a b", "a:b", "x\ny"] {
        let e = d.lookup(bad).unwrap_err();
        assert!(
            matches!(
                &e,
                DirectoryError::Ldap {
                    error: LdapError::BadUser { .. },
                    ..
                }
            ),
            "{e:?}"
        );
    }
    assert_eq!(s.accepted.load(Ordering::SeqCst), 0);
}

#[test]
fn injection_attempts_reach_the_server_as_one_equality() {
    let s = directory_server(Vec::new(), ResultCode::Success);
    let f = Files::new();
    let d = LdapDirectory::new(spec_of(&table(
        &[s.url()],
        &f,
        "filter = \"(&(objectClass=inetOrgPerson)(uid={user}))\"\n",
    )));
    assert_eq!(d.lookup("*)(uid=*").unwrap(), None);
    let searched: Vec<_> = s
        .requests()
        .into_iter()
        .filter_map(|m| match m.protocol_op {
            ProtocolOp::SearchRequest(r) => Some(r.filter),
            _ => None,
        })
        .collect();
    assert_eq!(
        searched,
        vec![rasn_ldap::Filter::And(
            vec![
                filter::parse("(objectClass=inetOrgPerson)").unwrap(),
                rasn_ldap::Filter::EqualityMatch(rasn_ldap::AttributeValueAssertion::new(
                    "uid".into(),
                    b"*)(uid=*".to_vec().into()
                )),
            ]
            .into()
        )]
    );
}

#[test]
fn active_directory_disabled_accounts_get_no_sms() {
    let s = directory_server(
        vec![entry(
            "CN=Hal,OU=Staff,DC=example,DC=org",
            &[
                ("telephoneNumber", &["+12025550123"]),
                ("userAccountControl", &["514"]),
            ],
        )],
        ResultCode::Success,
    );
    let f = Files::new();
    let spec = spec_of(&table(&[s.url()], &f, "preset = \"active_directory\"\n"));
    assert_eq!(spec.filter, AD_FILTER);
    assert_eq!(spec.phone_attributes, ["mobile", "telephoneNumber"]);
    let d = LdapDirectory::new(spec);
    let e = d.lookup("hal").unwrap_err();
    assert!(
        matches!(
            &e,
            DirectoryError::Ldap {
                error: LdapError::AccountDisabled { .. },
                ..
            }
        ),
        "{e:?}"
    );
    // Enabled (512): the second phone attribute answers.
    let s = directory_server(
        vec![entry(
            "CN=Ida,OU=Staff,DC=example,DC=org",
            &[
                ("telephoneNumber", &["+12025550123"]),
                ("userAccountControl", &["512"]),
            ],
        )],
        ResultCode::Success,
    );
    let d = LdapDirectory::new(spec_of(&table(
        &[s.url()],
        &f,
        "preset = \"active_directory\"\n",
    )));
    assert_eq!(d.lookup("ida").unwrap().unwrap().raw, "+12025550123");
    match &s.requests()[1].protocol_op {
        ProtocolOp::SearchRequest(r) => {
            let attrs: Vec<&str> = r.attributes.iter().map(|a| a.0.as_str()).collect();
            assert_eq!(
                attrs,
                [
                    "mobile",
                    "telephoneNumber",
                    "preferredLanguage",
                    "userAccountControl"
                ]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_server_remembers_numbers_only_for_when_the_directory_is_down() {
    let s = directory_server(
        vec![entry(
            "uid=jo,dc=example,dc=org",
            &[("mobile", &["+12025550123"])],
        )],
        ResultCode::Success,
    );
    let f = Files::new();
    let url = s.url();
    let spec = spec_of(&table(
        std::slice::from_ref(&url),
        &f,
        "cache_ttl = \"10m\"\n",
    ));
    let now = Arc::new(Mutex::new(Instant::now()));
    let clock = now.clone();
    let d = LdapDirectory::shared(spec).with_clock(Arc::new(move || *clock.lock().unwrap()));
    assert_eq!(d.lookup("jo").unwrap().unwrap().raw, "+12025550123");
    // The connection is kept: a second lookup binds no more.
    d.lookup("jo").unwrap();
    let binds = |s: &Fake| {
        s.requests()
            .iter()
            .filter(|m| matches!(m.protocol_op, ProtocolOp::BindRequest(_)))
            .count()
    };
    assert_eq!(binds(&s), 1);
    assert_eq!(s.accepted.load(Ordering::SeqCst), 1);
    drop(s);
    // Down: the remembered number, saying so.
    *now.lock().unwrap() += Duration::from_secs(60);
    let e = d.lookup("jo").unwrap().unwrap();
    assert_eq!(e.raw, "+12025550123");
    assert!(e.source.contains("cannot be reached"), "{}", e.source);
    // Unknown to the cache: unavailable.
    assert!(matches!(
        d.lookup("kim").unwrap_err(),
        DirectoryError::Unavailable { .. }
    ));
    // Older than the TTL: not used.
    *now.lock().unwrap() += Duration::from_secs(600);
    assert!(matches!(
        d.lookup("jo").unwrap_err(),
        DirectoryError::Unavailable { .. }
    ));
}

#[test]
fn the_pam_directory_remembers_nothing() {
    let s = directory_server(
        vec![entry(
            "uid=lee,dc=example,dc=org",
            &[("mobile", &["+12025550123"])],
        )],
        ResultCode::Success,
    );
    let f = Files::new();
    let d = LdapDirectory::new(spec_of(&table(&[s.url()], &f, "")));
    d.lookup("lee").unwrap().unwrap();
    drop(s);
    assert!(matches!(
        d.lookup("lee").unwrap_err(),
        DirectoryError::Unavailable { .. }
    ));
}

#[test]
fn on_unavailable_next_asks_the_next_source() {
    let dead = refused_url();
    let f = Files::new();
    let phones = f.0.path().join("phones.toml");
    std::fs::write(&phones, "mo = \"+12025550199\"\n").unwrap();
    std::fs::set_permissions(&phones, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = format!(
        "[[directory]]\nkind = \"file\"\npath = \"{}\"\n",
        phones.display()
    );
    let next = parse(&format!(
        "{}{file}",
        table(
            std::slice::from_ref(&dead),
            &f,
            "on_unavailable = \"next\"\n"
        )
    ))
    .unwrap();
    let dirs = crate::directory::from_config(&next.directories);
    let mut skipped = Vec::new();
    let found =
        crate::directory::lookup_noting(&dirs, "mo", None, &crate::phone::NoCache, &mut skipped)
            .unwrap()
            .unwrap();
    assert_eq!(found.phone.e164(), "+12025550199");
    assert_eq!(skipped.len(), 1);
    let fail = parse(&format!("{}{file}", table(&[dead], &f, ""))).unwrap();
    let dirs = crate::directory::from_config(&fail.directories);
    assert!(matches!(
        crate::directory::lookup(&dirs, "mo", None, &crate::phone::NoCache),
        Err(DirectoryError::Unavailable { .. })
    ));
}

#[test]
fn write_back_replaces_the_first_phone_attribute() {
    let s = directory_server(
        vec![entry("uid=ned,dc=example,dc=org", &[])],
        ResultCode::Success,
    );
    let f = Files::new();
    let d = LdapDirectory::new(spec_of(&table(&[s.url()], &f, "write_back = true\n")));
    assert!(d.write_back("ned", "+12025550123").unwrap());
    let m = s
        .requests()
        .into_iter()
        .find_map(|m| match m.protocol_op {
            ProtocolOp::ModifyRequest(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(m.object.0, "uid=ned,dc=example,dc=org");
    assert_eq!(m.changes.len(), 1);
    assert_eq!(m.changes[0].operation, rasn_ldap::ChangeOperation::Replace);
    assert_eq!(m.changes[0].modification.r#type.0, "mobile");
    // Without write_back nothing is written.
    let d = LdapDirectory::new(spec_of(&table(&[s.url()], &f, "")));
    assert!(!d.write_back("ned", "+12025550123").unwrap());
}

#[test]
fn a_server_speaking_garbage_is_a_protocol_error() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        if let Ok((mut c, _)) = l.accept() {
            let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let f = Files::new();
    let spec = spec_of(&table(&[format!("ldap://127.0.0.1:{port}")], &f, ""));
    let mut c = spec.connect().unwrap();
    let e = spec.bind_service(&mut c).unwrap_err();
    assert!(matches!(e, LdapError::Protocol { .. }), "{e:?}");
    assert!(e.to_string().contains("is this an LDAP server"), "{e}");
    t.join().unwrap();
}

#[test]
fn an_unknown_host_is_a_dns_error() {
    let f = Files::new();
    let spec = spec_of(&table(&["ldap://no-such-host.invalid".to_owned()], &f, ""));
    let e = spec.connect().err().unwrap();
    assert!(matches!(e, LdapError::Dns { .. }), "{e:?}");
    assert!(e.to_string().contains("ldap://no-such-host.invalid"), "{e}");
}

// ------------------------------------------------------------------ TLS

fn pki(ca_name: &str) -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
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
    (ca_cert.pem(), Arc::new(server))
}

fn tls_server(cfg: Arc<rustls::ServerConfig>) -> Fake {
    Fake::start(
        Arc::new(|m: &LdapMessage| match &m.protocol_op {
            ProtocolOp::BindRequest(_) => vec![ok_bind()],
            ProtocolOp::SearchRequest(_) => vec![
                entry(
                    "uid=oli,dc=example,dc=org",
                    &[("mobile", &["+12025550123"])],
                ),
                done(ResultCode::Success),
            ],
            _ => Vec::new(),
        }),
        false,
        Some(cfg),
    )
}

fn tls_table(url: &str, ca: &str, f: &Files) -> String {
    let pw = f.secret("bindpw", "s3cret");
    format!(
        "[[directory]]\nkind = \"ldap\"\nurls = [\"{url}\"]\nca_file = \"{ca}\"\n\
         bind_dn = \"cn=svc\"\nbind_password_file = \"{pw}\"\nbase = \"dc=example,dc=org\"\n\
         timeout = \"2s\"\n"
    )
}

#[test]
fn ldaps_verifies_the_certificate_and_the_host_name() {
    let (ca_pem, cfg) = pki("smsotp ldap test CA");
    let s = tls_server(cfg);
    let f = Files::new();
    let ca = f.0.path().join("ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    let ca = ca.display().to_string();
    let port = s.addr.port();
    let d = LdapDirectory::new(spec_of(&tls_table(
        &format!("ldaps://localhost:{port}"),
        &ca,
        &f,
    )));
    assert_eq!(d.lookup("oli").unwrap().unwrap().raw, "+12025550123");
    // 127.0.0.1 is not a name in the certificate.
    let spec = spec_of(&tls_table(&format!("ldaps://127.0.0.1:{port}"), &ca, &f));
    let e = spec.connect().err().unwrap();
    assert!(matches!(e, LdapError::Tls { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("not issued for the host in the URL (name mismatch)"),
        "{e}"
    );
    // Another CA: unknown issuer.
    let (other_pem, _) = pki("another CA");
    let other = f.0.path().join("other.pem");
    std::fs::write(&other, &other_pem).unwrap();
    let spec = spec_of(&tls_table(
        &format!("ldaps://localhost:{port}"),
        &other.display().to_string(),
        &f,
    ));
    let e = spec.connect().err().unwrap();
    assert!(
        e.to_string().contains("(unknown issuer): set ca_file"),
        "{e}"
    );
}

// ------------------------------------------------------------ no thread

/// Runs [`ldap_thread_probe_child`] in a fresh process of this test
/// binary with thread creation forbidden (seccomp): a lookup there must
/// start no thread. The fake server runs here, outside that process.
#[test]
fn a_lookup_starts_no_thread() {
    let s = directory_server(
        vec![entry(
            "uid=pat,dc=example,dc=org",
            &[("mobile", &["+12025550123"])],
        )],
        ResultCode::Success,
    );
    let (ca_pem, cfg) = pki("smsotp ldap test CA");
    let tls = tls_server(cfg);
    let f = Files::new();
    let pw = f.secret("bindpw", "s3cret\n");
    let ca = f.0.path().join("ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    crate::sms::http::tests::run_probe(
        "directory::ldap::tests::ldap_thread_probe_child",
        &[
            ("SMSOTP_LDAP_PROBE_PORT", s.addr.port().to_string()),
            ("SMSOTP_LDAP_PROBE_PW", pw.clone()),
            ("SMSOTP_LDAP_PROBE_TLS_PORT", tls.addr.port().to_string()),
            ("SMSOTP_LDAP_PROBE_CA", ca.display().to_string()),
        ],
        "probe: looked up",
    );
    assert!(s.requests().len() >= 2);
    assert!(tls.requests().len() >= 2);
}

/// Only does something when run by [`a_lookup_starts_no_thread`].
#[test]
fn ldap_thread_probe_child() {
    let Ok(port) = std::env::var("SMSOTP_LDAP_PROBE_PORT") else {
        return;
    };
    let pw = std::env::var("SMSOTP_LDAP_PROBE_PW").unwrap();
    let tls_port = std::env::var("SMSOTP_LDAP_PROBE_TLS_PORT").unwrap();
    let ca = std::env::var("SMSOTP_LDAP_PROBE_CA").unwrap();
    // A host name, so the resolver runs; the directory as PAM builds it.
    let c = parse(&format!(
        "[[directory]]\nkind = \"ldap\"\nurls = [\"ldap://localhost:{port}\"]\n\
         allow_plaintext = true\nbind_dn = \"cn=svc\"\nbind_password_file = \"{pw}\"\n\
         base = \"dc=example,dc=org\"\n\
         [[directory]]\nkind = \"ldap\"\nurls = [\"ldaps://localhost:{tls_port}\"]\n\
         ca_file = \"{ca}\"\nbind_dn = \"cn=svc\"\nbind_password_file = \"{pw}\"\n\
         base = \"dc=example,dc=org\"\n"
    ))
    .unwrap();
    let dirs = crate::directory::from_config(&c.directories);
    let before = crate::sms::http::tests::tasks();
    crate::sms::http::tests::forbid_new_threads();
    assert!(
        std::thread::Builder::new().spawn(|| ()).is_err(),
        "the probe must be able to see a thread being started"
    );
    let e = dirs[0].lookup("pat").unwrap().unwrap();
    assert_eq!(e.raw, "+12025550123");
    let e = dirs[1].lookup("oli").unwrap().unwrap();
    assert_eq!(e.raw, "+12025550123");
    assert!(e.source.starts_with("ldap ldaps://"), "{}", e.source);
    assert_eq!(crate::sms::http::tests::tasks(), before);
    println!("probe: looked up");
}

// --------------------------------------------------------------- config

#[test]
fn defaults() {
    let f = Files::new();
    let s = spec_of(&table(&["ldaps://dc1.example.org".to_owned()], &f, ""));
    assert_eq!(s.name, "ldaps://dc1.example.org");
    assert_eq!(s.urls[0].port, 636);
    assert_eq!(s.filter, "(uid={user})");
    assert_eq!(s.phone_attributes, ["mobile"]);
    assert_eq!(s.scope, Scope::Sub);
    assert_eq!(s.cache_ttl, Duration::from_secs(600));
    assert_eq!(s.on_unavailable, OnUnavailable::Fail);
    assert!(!s.write_back && !s.active_directory);
    let u = LdapUrl::parse("ldap://[::1]:3389").unwrap();
    assert_eq!((u.host.as_str(), u.port), ("::1", 3389));
    assert_eq!(LdapUrl::parse("ldap://dc1").unwrap().port, 389);
    // Explicit keys win over the preset.
    let s = spec_of(&table(
        &["ldaps://dc1.example.org".to_owned()],
        &f,
        "preset = \"active_directory\"\nphone_attributes = [\"pager\"]\nuser_dn = \"uid={user},dc=example,dc=org\"\n",
    ));
    assert_eq!(s.phone_attributes, ["pager"]);
    assert_eq!(s.filter, AD_FILTER);
    assert_eq!(s.user_dn_for("a,b").unwrap(), "uid=a\\,b,dc=example,dc=org");
    assert_eq!(s.user_dn_for("a b"), None);
}

#[test]
fn config_errors_name_the_key_and_the_fix() {
    let f = Files::new();
    let pw = f.secret("pw", "x");
    let base = "[[directory]]\nkind = \"ldap\"\nbase = \"dc=x\"\n";
    for (extra, key, words) in [
        ("", "directory[0].urls", "at least one server"),
        ("urls = []\n", "directory[0].urls", "at least one server"),
        (
            "urls = [\"http://x\"]\n",
            "directory[0].urls",
            "not an ldap:// or ldaps:// URL",
        ),
        (
            "urls = [\"ldaps://x/dc=x\"]\n",
            "directory[0].urls",
            "only a host and a port",
        ),
        (
            "urls = [\"ldaps://x:0\"]\n",
            "directory[0].urls",
            "not a port",
        ),
        (
            "urls = [\"ldaps://[::1\"]\n",
            "directory[0].urls",
            "missing ']'",
        ),
        (
            "urls = [\"ldap://x\"]\n",
            "directory[0].urls",
            "allow_plaintext = true",
        ),
        (
            "urls = [\"ldaps://x\"]\nbind_dn = \"cn=a\"\n",
            "directory[0].bind_password_file",
            "bind_dn needs bind_password_file",
        ),
        (
            &format!("urls = [\"ldaps://x\"]\nbind_password_file = \"{pw}\"\n"),
            "directory[0].bind_dn",
            "needs bind_dn",
        ),
        (
            "urls = [\"ldaps://x\"]\nwrite_back = true\n",
            "directory[0].write_back",
            "anonymous bind cannot write",
        ),
        (
            "urls = [\"ldaps://x\"]\nfilter = \"(uid={user}\"\n",
            "directory[0].filter",
            "not an LDAP filter",
        ),
        (
            "urls = [\"ldaps://x\"]\nfilter = \"(uid=alice)\"\n",
            "directory[0].filter",
            "does not hold {user}",
        ),
        (
            "urls = [\"ldaps://x\"]\nscope = \"tree\"\n",
            "directory[0].scope",
            "\"sub\", \"one\", \"base\"",
        ),
        (
            "urls = [\"ldaps://x\"]\non_unavailable = \"skip\"\n",
            "directory[0].on_unavailable",
            "\"fail\", \"next\"",
        ),
        (
            "urls = [\"ldaps://x\"]\npreset = \"openldap\"\n",
            "directory[0].preset",
            "active_directory",
        ),
        (
            "urls = [\"ldaps://x\"]\ntimeout = \"5 parsecs\"\n",
            "directory[0].timeout",
            "not a duration",
        ),
        (
            "urls = [\"ldaps://x\"]\ncache_ttl = \"30d\"\n",
            "directory[0].cache_ttl",
            "out of range",
        ),
        (
            "urls = [\"ldaps://x\"]\nphone_attributes = []\n",
            "directory[0].phone_attributes",
            "at least one",
        ),
        (
            "urls = [\"ldaps://x\"]\nuser_dn = \"ou=people\"\n",
            "directory[0].user_dn",
            "DN template",
        ),
    ] {
        let e = err_of(&format!("{base}{extra}"));
        assert!(e.contains(&format!(":1:1: {key}:")), "{extra}: {e}");
        assert!(e.contains(words), "{extra}: {e}");
    }
    let e = err_of("[[directory]]\nkind = \"ldap\"\nurls = [\"ldaps://x\"]\n");
    assert!(
        e.contains("directory[0].base") && e.contains("search base"),
        "{e}"
    );
    let e = err_of(
        "[[directory]]\nkind = \"ldap\"\nurls = [\"ldaps://x\"]\nbase = \"x\"\nbind_pw = \"x\"\n",
    );
    assert!(e.contains("bind_pw"), "{e}");
    // StartTLS makes ldap:// acceptable.
    spec_of(
        "[[directory]]\nkind = \"ldap\"\nurls = [\"ldap://x\"]\nstarttls = true\nbase = \"x\"\n",
    );
}

#[test]
fn starttls_upgrades_before_the_bind() {
    let (ca_pem, cfg) = pki("smsotp ldap test CA");
    // A plain listener answering StartTLS, then TLS on the same socket.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let t = std::thread::spawn(move || {
        let Ok((mut tcp, _)) = l.accept() else { return };
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let Ok(pdu) = read_pdu(&mut tcp) else { return };
        let m = rasn::ber::decode::<LdapMessage>(&pdu).unwrap();
        seen2.lock().unwrap().push(m.clone());
        let resp = ProtocolOp::ExtendedResp(ExtendedResponse {
            result_code: ResultCode::Success,
            matched_dn: "".into(),
            diagnostic_message: "".into(),
            referral: None,
            response_name: None,
            response_value: None,
        });
        tcp.write_all(&rasn::ber::encode(&LdapMessage::new(m.message_id, resp)).unwrap())
            .unwrap();
        let conn = rustls::ServerConnection::new(cfg).unwrap();
        let s = rustls::StreamOwned::new(conn, tcp);
        let h: Handler = Arc::new(|m: &LdapMessage| match &m.protocol_op {
            ProtocolOp::BindRequest(_) => vec![ok_bind()],
            _ => vec![done(ResultCode::Success)],
        });
        serve(s, &h, &seen2, &AtomicUsize::new(0), &AtomicBool::new(false));
    });
    let f = Files::new();
    let ca = f.0.path().join("ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    let text = tls_table(
        &format!("ldap://localhost:{port}"),
        &ca.display().to_string(),
        &f,
    ) + "starttls = true\n";
    let d = LdapDirectory::new(spec_of(&text));
    assert_eq!(d.lookup("quinn").unwrap(), None);
    t.join().unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        matches!(&seen[0].protocol_op, ProtocolOp::ExtendedReq(r) if &r.request_name[..] == b"1.3.6.1.4.1.1466.20037")
    );
    assert!(matches!(seen[1].protocol_op, ProtocolOp::BindRequest(_)));
}

#[test]
fn the_language_attribute_comes_back_with_the_number() {
    let s = directory_server(
        vec![entry(
            "uid=alice,ou=people,dc=example,dc=org",
            &[
                ("mobile", &["+12025550123"]),
                ("preferredLanguage", &["fr-CA, en;q=0.8"]),
            ],
        )],
        ResultCode::Success,
    );
    let f = Files::new();
    let spec = spec_of(&table(&[s.url()], &f, ""));
    assert_eq!(
        spec.language_attribute.as_deref(),
        Some("preferredLanguage")
    );
    assert!(spec.attributes().contains(&"preferredLanguage".to_owned()));
    let e = LdapDirectory::new(spec).lookup("alice").unwrap().unwrap();
    assert_eq!(e.language.as_deref(), Some("fr"));

    let off = spec_of(&table(&[s.url()], &f, "language_attribute = \"\"\n"));
    assert_eq!(off.language_attribute, None);
    let e = LdapDirectory::new(off).lookup("alice").unwrap().unwrap();
    assert_eq!(e.language, None);

    let e = err_of(&table(
        &[s.url()],
        &f,
        "language_attribute = \"lang uage\"\n",
    ));
    assert!(e.contains("language_attribute"), "{e}");
    assert!(e.contains("is not an attribute name"), "{e}");
}
