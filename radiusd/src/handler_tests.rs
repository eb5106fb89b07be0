//! The handler with a real engine (in-memory store, outbox in a temp dir,
//! fixed clock) and scripted first factors. No sockets.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use smsotp_core::audit::Audit;
use smsotp_core::clock::FixedClock;
use smsotp_core::config::{ClientMode, Config};
use smsotp_core::directory::{FileDirectory, SystemAccounts};
use smsotp_core::flow::Parts;
use smsotp_core::otp::OtpKey;
use smsotp_core::random::OsRandom;
use smsotp_core::sms::outbox::OutboxProvider;
use smsotp_core::store::memory::MemoryStore;
use zeroize::Zeroizing;

use super::*;
use crate::primary::{NoPrimary, PrimaryError};
use crate::wire::{Request, RequestCode};

struct Fixture {
    engine: Engine,
    outbox: PathBuf,
    _dir: tempfile::TempDir,
}

fn fixture(extra: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let phones = dir.path().join("phones.toml");
    std::fs::write(
        &phones,
        "alice = \"+12015550123\"\nbob = \"+12015550124\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&phones, std::fs::Permissions::from_mode(0o644)).unwrap();
    let outbox = dir.path().join("outbox.jsonl");
    let cfg = Config::from_toml(Path::new("/test.toml"), extra).unwrap();
    let parts = Parts {
        store: Box::new(MemoryStore::new()),
        directories: vec![Box::new(FileDirectory::new(phones))],
        providers: vec![Box::new(OutboxProvider::new(
            "outbox".into(),
            outbox.clone(),
            Box::new(FixedClock::at(0)),
        ))],
        accounts: Box::new(SystemAccounts),
        clock: Box::new(smsotp_core::clock::SystemClock),
        rng: Box::new(OsRandom),
        audit: Audit::default(),
        key: OtpKey::from_bytes(&[9; 32]),
        host: "vpn-gw".into(),
    };
    Fixture {
        engine: Engine::with_parts(cfg, parts),
        outbox,
        _dir: dir,
    }
}

impl Fixture {
    fn sms_count(&self) -> usize {
        std::fs::read_to_string(&self.outbox).map_or(0, |t| t.lines().count())
    }
    fn last_code(&self) -> String {
        let text = std::fs::read_to_string(&self.outbox).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        line["message"]
            .as_str()
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_owned()
    }
}

fn request(user: &str, password: &str, state: Option<&[u8]>) -> Request {
    Request {
        code: RequestCode::AccessRequest,
        identifier: 1,
        authenticator: [0; 16],
        user_name: Some(user.into()),
        user_password: Some(Zeroizing::new(password.as_bytes().to_vec())),
        state: state.map(<[u8]>::to_vec),
        proxy_state: vec![],
        has_message_authenticator: true,
        nas_identifier: None,
        nas_ip_address: None,
        calling_station_id: None,
    }
}

/// A first factor that knows one password and counts its calls.
struct Password(&'static str, std::sync::atomic::AtomicUsize);

impl PrimaryAuth for Password {
    fn check(&self, _user: &str, password: &[u8]) -> Result<bool, PrimaryError> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(password == self.0.as_bytes())
    }
    fn checks_password(&self) -> bool {
        true
    }
}

fn client(mode: ClientMode) -> ClientInfo {
    ClientInfo {
        name: "vpn".into(),
        mode,
    }
}

const NAS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

#[test]
fn challenge_then_right_code_accepts() {
    let f = fixture("");
    let pw = Password("hunter2", Default::default());
    let c = client(ClientMode::Challenge);
    let Decision::Challenge {
        state,
        message,
        session_timeout,
    } = handle(&f.engine, &pw, &c, &request("alice", "hunter2", None), NAS)
    else {
        panic!("expected a challenge")
    };
    assert_eq!(message, "Code sent to ******0123. 3 tries left.");
    assert!((299..=300).contains(&session_timeout), "{session_timeout}");
    let d = handle(
        &f.engine,
        &pw,
        &c,
        &request("alice", "000000x", Some(&state)),
        NAS,
    );
    assert!(
        matches!(&d, Decision::Challenge { message, state: s, .. } if message == "Wrong code, 2 tries left." && *s == state),
        "{d:?}"
    );
    let code = f.last_code();
    let d = handle(
        &f.engine,
        &pw,
        &c,
        &request("alice", &code, Some(&state)),
        NAS,
    );
    assert_eq!(d, Decision::Accept { message: None });
    // The State is spent.
    let d = handle(
        &f.engine,
        &pw,
        &c,
        &request("alice", &code, Some(&state)),
        NAS,
    );
    assert!(matches!(d, Decision::Reject { .. }), "{d:?}");
    assert_eq!(f.sms_count(), 1);
}

#[test]
fn wrong_password_sends_nothing_and_looks_like_unknown_user() {
    let f = fixture("");
    let pw = Password("hunter2", Default::default());
    let c = client(ClientMode::Challenge);
    let wrong = handle(&f.engine, &pw, &c, &request("alice", "nope", None), NAS);
    let unknown = handle(&f.engine, &pw, &c, &request("mallory", "nope", None), NAS);
    assert_eq!(wrong, Decision::Reject { message: None });
    assert_eq!(wrong, unknown);
    assert_eq!(f.sms_count(), 0);
}

#[test]
fn forged_foreign_and_malformed_states_are_rejected_without_sms() {
    let f = fixture("");
    let c = client(ClientMode::Challenge);
    let Decision::Challenge { state, .. } =
        handle(&f.engine, &NoPrimary, &c, &request("alice", "", None), NAS)
    else {
        panic!()
    };
    let code = f.last_code();
    for (user, st, client_name) in [
        ("alice", vec![7u8; 16], "vpn"),
        ("alice", vec![1u8; 5], "vpn"),
        ("bob", state.to_vec(), "vpn"),
        ("alice", state.to_vec(), "other-nas"),
    ] {
        let other = ClientInfo {
            name: client_name.into(),
            mode: ClientMode::Challenge,
        };
        let d = handle(
            &f.engine,
            &NoPrimary,
            &other,
            &request(user, &code, Some(&st)),
            NAS,
        );
        assert!(
            matches!(d, Decision::Reject { .. }),
            "{user} {st:?} {client_name}: {d:?}"
        );
    }
    assert_eq!(f.sms_count(), 1);
    // After all that, the rightful answer still works.
    assert_eq!(
        handle(
            &f.engine,
            &NoPrimary,
            &c,
            &request("alice", &code, Some(&state)),
            NAS
        ),
        Decision::Accept { message: None }
    );
}

#[test]
fn empty_answer_sends_a_new_code() {
    let f = fixture("[otp]\nresend = { max = 1, cooldown = \"0s\" }\n");
    let c = client(ClientMode::Challenge);
    let Decision::Challenge { state, .. } =
        handle(&f.engine, &NoPrimary, &c, &request("alice", "", None), NAS)
    else {
        panic!()
    };
    let d = handle(
        &f.engine,
        &NoPrimary,
        &c,
        &request("alice", "", Some(&state)),
        NAS,
    );
    assert!(
        matches!(&d, Decision::Challenge { message, .. } if message == "New code sent to ******0123."),
        "{d:?}"
    );
    assert_eq!(f.sms_count(), 2);
    let code = f.last_code();
    assert_eq!(
        handle(
            &f.engine,
            &NoPrimary,
            &c,
            &request("alice", &code, Some(&state)),
            NAS
        ),
        Decision::Accept { message: None }
    );
}

#[test]
fn append_mode_sends_then_accepts_password_and_code() {
    let f = fixture("");
    let pw = Password("hunter2", Default::default());
    let c = client(ClientMode::Append);
    let d = handle(&f.engine, &pw, &c, &request("alice", "hunter2", None), NAS);
    assert!(
        matches!(&d, Decision::Reject { message: Some(m) } if m.starts_with("Code sent to ******0123.")),
        "{d:?}"
    );
    let code = f.last_code();
    // Wrong password with the right code: refused, code not spent.
    let d = handle(
        &f.engine,
        &pw,
        &c,
        &request("alice", &format!("hunter3{code}"), None),
        NAS,
    );
    assert!(matches!(d, Decision::Reject { .. }), "{d:?}");
    let d = handle(
        &f.engine,
        &pw,
        &c,
        &request("alice", &format!("hunter2{code}"), None),
        NAS,
    );
    assert_eq!(d, Decision::Accept { message: None });
    assert_eq!(f.sms_count(), 1);
}

#[test]
fn append_mode_a_new_password_replaces_the_pending_code() {
    let f = fixture("");
    let pw = Password("hunter2", Default::default());
    let c = client(ClientMode::Append);
    let login =
        |user: &str, field: &str| handle(&f.engine, &pw, &c, &request(user, field, None), NAS);
    assert!(matches!(
        login("alice", "hunter2"),
        Decision::Reject { message: Some(_) }
    ));
    let first = f.last_code();
    assert!(matches!(
        login("bob", "hunter2"),
        Decision::Reject { message: Some(_) }
    ));
    let bobs = f.last_code();
    // Alice asks again: a new code, in place of the first.
    assert!(matches!(
        login("alice", "hunter2"),
        Decision::Reject { message: Some(_) }
    ));
    let second = f.last_code();
    assert_eq!(f.sms_count(), 3);
    if first != second {
        assert!(matches!(
            login("alice", &format!("hunter2{first}")),
            Decision::Reject { .. }
        ));
    }
    assert_eq!(
        login("alice", &format!("hunter2{second}")),
        Decision::Accept { message: None }
    );
    // Each user's challenge is their own, and a used one is gone.
    if bobs != second {
        assert!(matches!(
            login("bob", &format!("hunter2{second}")),
            Decision::Reject { .. }
        ));
    }
    assert_eq!(
        login("bob", &format!("hunter2{bobs}")),
        Decision::Accept { message: None }
    );
    assert!(matches!(
        login("alice", &format!("hunter2{second}")),
        Decision::Reject { .. }
    ));
}

#[test]
fn status_server_and_missing_user() {
    let f = fixture("");
    let c = client(ClientMode::Challenge);
    let mut status = request("x", "", None);
    status.code = RequestCode::StatusServer;
    assert_eq!(
        handle(&f.engine, &NoPrimary, &c, &status, NAS),
        Decision::Accept { message: None }
    );
    let mut nouser = request("x", "", None);
    nouser.user_name = None;
    assert!(matches!(
        handle(&f.engine, &NoPrimary, &c, &nouser, NAS),
        Decision::Reject { .. }
    ));
    assert_eq!(f.sms_count(), 0);
}

#[test]
fn every_failure_rejects_with_the_one_core_text() {
    use smsotp_core::flow::Failure;
    for broken in [
        Broken::Login(Failure::Unavailable),
        Broken::Login(Failure::Conversation),
        Broken::Login(Failure::Internal),
        Broken::NoEngine,
        Broken::Panic,
        Broken::RolledBack,
    ] {
        assert_eq!(
            reply(Outcome::Failed(broken)),
            Decision::Reject {
                message: Some(
                    "SMS login is not available right now. Contact your administrator.".into()
                )
            },
            "{broken:?}"
        );
    }
    assert_eq!(reply(Outcome::Refused), Decision::Reject { message: None });
    assert_eq!(reply(Outcome::Alive), Decision::Accept { message: None });
}
