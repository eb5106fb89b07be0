//! Issue #20 point 4: faults a host meets, each end to end against the
//! built programs: a store file that is corrupt or not SQLite, the store's
//! file system full, smsotp-radiusd killed with SIGKILL and restarted, an
//! HTTP SMS gateway that resets connections, answers garbage, or answers
//! 200 with a body that fails the success rule.
//!
//! Needs a built workspace (`cargo build --workspace`) and the packages the
//! PAM and RADIUS suites need (pamtester, pam_wrapper, radclient). The
//! file-system-full test mounts a 1 MiB tmpfs (root in a container may do
//! so here); it says so loudly and skips if the mount is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smsotp_e2e::pamenv::{audit_lines, Outcome, PamEnv};
use smsotp_e2e::radiusd::{
    code, random_bytes, run_bounded, ClientSpec, Nas, Radiusd, Reply, Request, ServerSpec,
};
use smsotp_e2e::{Outbox, Scratch};

const ALICE_PHONE: &str = "+12015550123";
const BOB_PHONE: &str = "+12015551123";
const CAROL_PHONE: &str = "+12015552123";
const CODE_SENT: &str = "Code sent to ******0123.";
const PROMPT: &str = "SMS code";
const SECRET: &str = "e2e-faults-secret-4b1e";
const NAS_PASSWORD: &str = "nas-pw-5521";
const SMS_WAIT: Duration = Duration::from_secs(5);
/// pamtester's words for PAM_AUTHINFO_UNAVAIL.
const AUTHINFO_UNAVAIL: &str = "Authentication service cannot retrieve authentication info";
const UNAVAILABLE: &str = "SMS login is not available";

fn phones(scratch: &Scratch) {
    scratch.phones(&[("alice", ALICE_PHONE), ("bob", BOB_PHONE)]);
}

fn vpn() -> ClientSpec {
    ClientSpec::new("vpn", "127.0.0.1", SECRET)
}

fn pam_setup(name: &str, extra: &str) -> (PamEnv, String) {
    let mut env = PamEnv::new();
    phones(&env.scratch);
    env.scratch.config(extra);
    let service = env.smsotp_service(name, "");
    (env, service)
}

/// Password, code sent, the code typed: a login that must succeed.
fn good_login(env: &PamEnv, svc: &str) {
    let outbox = env.scratch.outbox();
    let seen = outbox.count();
    let mut login = env.login(svc, "alice");
    login
        .password()
        .expect_text(CODE_SENT)
        .expect_prompt(PROMPT);
    login.answer_code_from_outbox(&outbox, seen);
    login.finish().assert_success();
}

/// A login that must fail closed before any prompt for a code: pamtester
/// reports PAM_AUTHINFO_UNAVAIL, the user is told SMS login is unavailable,
/// no SMS went out.
fn refused_unavailable(env: &PamEnv, svc: &str) -> Outcome {
    let outbox = env.scratch.outbox();
    let seen = outbox.count();
    let mut login = env.login(svc, "alice");
    login.password();
    let out = login.finish();
    out.assert_failure();
    assert_eq!(out.pam_result(), Some(AUTHINFO_UNAVAIL), "{out}");
    out.assert_saw(UNAVAILABLE).assert_not_saw(PROMPT);
    assert_eq!(outbox.count(), seen, "an SMS went out: {out}");
    out
}

/// The audit lines (JSON) as one text, for searching.
fn audit_text(scratch: &Scratch) -> String {
    audit_lines(scratch)
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Random bytes of `len`, never a valid SQLite header.
fn garbage(len: usize) -> Vec<u8> {
    let mut b = random_bytes(len);
    b[0] = b'X';
    b
}

fn write_private(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

// ------------------------------------------------------------------ corrupt store

/// The state.db replaced by random bytes, then by a text file: each PAM
/// login fails closed (PAM_AUTHINFO_UNAVAIL, the unavailable text, no SMS)
/// and the audit says the store could not be read. Moving the file away
/// (doctor's advice) brings logins back.
#[test]
fn pam_fails_closed_on_a_store_that_is_not_sqlite() {
    let (env, svc) = pam_setup("e2e-corrupt-store", "");
    good_login(&env, &svc);
    let db = env.scratch.path("state.db");
    for (what, bytes) in [
        ("random bytes", garbage(64 * 1024)),
        (
            "a text file",
            b"alice = \"+12015550123\"\n# not a database\n".to_vec(),
        ),
    ] {
        let _ = std::fs::remove_file(env.scratch.path("state.db-wal"));
        let _ = std::fs::remove_file(env.scratch.path("state.db-shm"));
        write_private(&db, &bytes);
        let out = refused_unavailable(&env, &svc);
        let audit = audit_text(&env.scratch);
        assert!(
            audit.contains("\"event\":\"unavailable\"")
                && audit.contains(db.to_str().unwrap())
                && audit.contains("not a SQLite database"),
            "{what}: no audit line names the store's fault:\n{audit}\n{out}"
        );
        assert_eq!(
            std::fs::read(&db).unwrap(),
            bytes,
            "{what}: the module changed the broken file (evidence lost)"
        );
    }
    std::fs::rename(&db, env.scratch.path("state.db.broken")).unwrap();
    good_login(&env, &svc);
}

/// Doctor on a store that is not SQLite: an error naming the file, what
/// is wrong, and how to recover (and what is lost by doing so).
#[test]
fn doctor_says_how_to_recover_from_a_store_that_is_not_sqlite() {
    let s = Scratch::new();
    phones(&s);
    s.config("");
    let db = s.path("state.db");
    write_private(&db, &garbage(8192));
    let r = doctor(&s);
    let store_line = r
        .stdout
        .lines()
        .chain(r.stderr.lines())
        .find(|l| l.starts_with("ERROR") && l.contains("store") && l.contains(db.to_str().unwrap()))
        .unwrap_or_else(|| panic!("no store finding naming {}: {r}", db.display()));
    for want in [
        "not a SQLite database",
        "move the file away",
        "recreated",
        "lost unless you restore a backup",
    ] {
        assert!(
            store_line.contains(want),
            "doctor's store finding lacks {want:?}: {store_line}\n{r}"
        );
    }
    assert_ne!(r.code, 0, "doctor found an error but exited 0: {r}");
}

fn doctor(s: &Scratch) -> smsotp_e2e::ToolRun {
    let sshd = s.path("sshd_config");
    let pam = s.path("pam.d");
    smsotp_e2e::run_tool(
        s,
        &[
            "doctor",
            "--no-network",
            "--sshd-config",
            sshd.to_str().unwrap(),
            "--pam-dir",
            pam.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    )
}

/// smsotp-radiusd on a store that is not SQLite refuses to start, with a
/// message naming the file and the fix: every login would fail, and a
/// server that is down is seen by its supervisor (systemd) and the NAS's
/// failover at once, where one that rejects everyone looks like many
/// users typing wrong codes.
#[test]
fn radiusd_refuses_to_start_on_a_store_that_is_not_sqlite() {
    let scratch = Scratch::new();
    phones(&scratch);
    let spec = ServerSpec::new(vec![vpn()]);
    let db = scratch.path("state.db");
    write_private(&db, &garbage(8192));
    for c in &spec.clients {
        write_private(&c.secret_path(&scratch), c.secret.as_bytes());
    }
    let port = smsotp_e2e::radiusd::free_port(true);
    let config = scratch.write("smsotp.toml", &spec.config_text(&scratch, port), 0o600);
    let mut cmd = Command::new(smsotp_e2e::radiusd::radiusd_path());
    cmd.arg("--config")
        .arg(&config)
        .env("LANG", "C")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let (status, output, timed_out) = run_bounded(cmd, b"", Duration::from_secs(15));
    assert!(!timed_out, "smsotp-radiusd kept running:\n{output}");
    assert!(!status.success(), "started on a broken store:\n{output}");
    assert!(
        output.contains(db.to_str().unwrap()) && output.contains("not a SQLite database"),
        "the message does not name the file and the fault:\n{output}"
    );
    assert!(
        output.contains("smsotp doctor") || output.contains("move"),
        "{output}"
    );
}

/// Access-Request(user) from `nas`: expects a Challenge and an SMS;
/// returns the reply and the code.
fn challenge(srv: &Radiusd, nas: &Nas, outbox: &Outbox, user: &str) -> (Reply, String) {
    let seen = outbox.count();
    let req = Request::access(nas.id()).user(user).password(NAS_PASSWORD);
    let reply = nas.exchange(&req, &|| srv.context());
    assert_eq!(
        reply.code(),
        code::ACCESS_CHALLENGE,
        "first round for {user}: {}\n{}",
        reply.packet.describe(),
        srv.context()
    );
    let sms = outbox.wait_beyond(seen, SMS_WAIT);
    (reply, sms.code())
}

fn follow_up(srv: &Radiusd, nas: &Nas, user: &str, state: &[u8], answer: &str) -> Reply {
    let req = Request::access(nas.id())
        .user(user)
        .password(answer)
        .state(state);
    nas.exchange(&req, &|| srv.context())
}

// ------------------------------------------------------------------ SIGKILL

/// SMS in the outbox to `number`.
fn sms_to(outbox: &Outbox, number: &str) -> usize {
    outbox.all().iter().filter(|s| s.to == number).count()
}

/// Sends Access-Requests for users without a phone from a NAS of its own
/// until told to stop: load that keeps the workers and the store busy
/// while the server is killed. Returns how many it sent.
fn load(srv: &Radiusd, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    let nas = srv.nas("127.0.0.1", "vpn");
    std::thread::spawn(move || {
        let mut sent = 0usize;
        while !stop.load(Ordering::SeqCst) {
            let req = Request::access(nas.id())
                .user(&format!("load{}", sent % 50))
                .password(NAS_PASSWORD);
            nas.send_bytes(&nas.encode(&req));
            sent += 1;
            // Drain replies without waiting for them.
            let _ = nas.recv_bytes(Duration::from_millis(2));
        }
        sent
    })
}

/// smsotp-radiusd killed with SIGKILL under load, then restarted on the
/// same config and store:
/// - no State is accepted twice: alice's code, accepted before the kill,
///   is refused with its State after the restart;
/// - no answered challenge is lost: bob got his Access-Challenge before
///   the kill and completes it with his code after the restart;
/// - a retransmit of carol's first Access-Request (the same bytes) that
///   arrives after the restart sends no second SMS.
#[test]
fn sigkill_under_load_and_restart_loses_nothing_and_repeats_nothing() {
    let scratch = Scratch::new();
    scratch.phones(&[
        ("alice", ALICE_PHONE),
        ("bob", BOB_PHONE),
        ("carol", CAROL_PHONE),
    ]);
    let mut srv = Radiusd::start(&scratch, ServerSpec::new(vec![vpn()]));
    let outbox = scratch.outbox();
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(&srv, Arc::clone(&stop));

    let nas_a = srv.nas("127.0.0.1", "vpn");
    let (a, a_code) = challenge(&srv, &nas_a, &outbox, "alice");
    let ok = follow_up(&srv, &nas_a, "alice", &a.state(), &a_code);
    assert_eq!(ok.code(), code::ACCESS_ACCEPT, "{}", srv.context());

    let nas_b = srv.nas("127.0.0.1", "vpn");
    let (b, b_code) = challenge(&srv, &nas_b, &outbox, "bob");

    let nas_c = srv.nas("127.0.0.1", "vpn");
    let c_req = Request::access(nas_c.id())
        .user("carol")
        .password(NAS_PASSWORD);
    let c_bytes = nas_c.encode(&c_req);
    nas_c.send_bytes(&c_bytes);
    let c = nas_c.reply_to(&c_req, &|| srv.context());
    assert_eq!(c.code(), code::ACCESS_CHALLENGE, "{}", srv.context());
    outbox.wait_beyond(outbox.count().saturating_sub(1), SMS_WAIT);
    assert_eq!(sms_to(&outbox, CAROL_PHONE), 1);

    // Killed mid-load: no chance to finish anything.
    std::thread::sleep(Duration::from_millis(100));
    srv.signal(libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while srv.running() {
        assert!(Instant::now() < deadline, "SIGKILL did not end the server");
        std::thread::sleep(Duration::from_millis(10));
    }
    srv.restart();

    let again = follow_up(&srv, &nas_a, "alice", &a.state(), &a_code);
    assert_eq!(
        again.code(),
        code::ACCESS_REJECT,
        "alice's used State and code accepted again after the restart\n{}",
        srv.context()
    );
    let done = follow_up(&srv, &nas_b, "bob", &b.state(), &b_code);
    assert_eq!(
        done.code(),
        code::ACCESS_ACCEPT,
        "bob's challenge was lost in the kill\n{}",
        srv.context()
    );
    nas_c.send_bytes(&c_bytes);
    let retransmit = nas_c.reply_to(&c_req, &|| srv.context());
    stop.store(true, Ordering::SeqCst);
    let sent = loader.join().expect("load thread");
    eprintln!(
        "load: {sent} requests; the retransmit after the restart got {}",
        retransmit.packet.describe()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        sms_to(&outbox, CAROL_PHONE),
        1,
        "a retransmit after the restart sent carol a second SMS\n{}",
        srv.context()
    );
}

// ------------------------------------------------------------------ faulty SMS gateway

/// How [`FaultyGateway`] treats each request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Reads the request, then resets the connection (RST).
    Reset,
    /// Reads the request, answers bytes that are no HTTP, closes.
    Garbage,
    /// Reads the request, answers 200 with a body the success rule
    /// (`success_body = { contains = "ACCEPTED" }`) refuses.
    BadBody,
}

/// An HTTP SMS gateway on 127.0.0.1 that misbehaves as told; a thread of
/// the test, stopped when dropped. Keeps what it was sent (to find the
/// code that must not leak).
struct FaultyGateway {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    requests: Arc<std::sync::Mutex<Vec<String>>>,
    seen: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultyGateway {
    fn start(fault: Fault) -> FaultyGateway {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, requests, seen) =
                (Arc::clone(&stop), Arc::clone(&requests), Arc::clone(&seen));
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((mut conn, _)) => {
                            seen.fetch_add(1, Ordering::SeqCst);
                            let text = smsotp_e2e::read_http_request(&mut conn);
                            requests.lock().unwrap().push(text);
                            misbehave(conn, fault);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        FaultyGateway {
            addr,
            stop,
            requests,
            seen,
            thread: Some(thread),
        }
    }

    /// The `[[provider]]` table "flaky" that sends through it.
    fn provider(&self) -> String {
        format!(
            "[[provider]]\nkind = \"http\"\nname = \"flaky\"\nurl = \"http://{}/sms\"\nmethod = \"POST\"\n\
             body = {{ to = \"{{number}}\", message = \"{{message}}\" }}\nallow_http = true\ntimeout = \"5s\"\n\
             success_body = {{ contains = \"ACCEPTED\" }}\n",
            self.addr
        )
    }

    /// The codes in the requests it got (percent-decoded forms).
    fn codes(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| {
                let body = r.split("\r\n\r\n").nth(1)?;
                let message = body
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("message="))?
                    .replace('+', " ");
                smsotp_e2e::extract_code(&message)
            })
            .collect()
    }
}

impl Drop for FaultyGateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn misbehave(mut conn: std::net::TcpStream, fault: Fault) {
    use std::os::fd::AsRawFd;
    match fault {
        Fault::Reset => {
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: setsockopt on a socket we own, with a pointer to a
            // linger struct of the size we pass.
            let rc = unsafe {
                libc::setsockopt(
                    conn.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "SO_LINGER");
            drop(conn); // closing with linger 0 sends RST
        }
        Fault::Garbage => {
            let _ =
                conn.write_all(b"\x16\x03\x01\xff\x00garbage \xfe\xfd not http\r\n\r\n\x00\x01");
        }
        Fault::BadBody => {
            let body = "{\"status\":\"REJECTED\",\"reason\":\"no route\"}";
            let _ = conn.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    }
}

/// Challenge rows in the scratch store (sqlite3, read only).
fn open_challenges(scratch: &Scratch) -> usize {
    let out = Command::new("sqlite3")
        .arg("-readonly")
        .arg(scratch.path("state.db"))
        .arg("SELECT count(*) FROM challenge")
        .output()
        .expect("run sqlite3 (Debian package sqlite3)");
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a count")
}

fn outbox_provider(scratch: &Scratch) -> String {
    format!(
        "[[provider]]\nkind = \"outbox\"\nname = \"backup\"\npath = \"{}\"\n",
        scratch.path("outbox.jsonl").display()
    )
}

/// Each fault of the gateway, with the outbox behind it. A reset and an
/// answer that is no HTTP are transient: the login fails over (one SMS
/// through the outbox, whose code logs in) and a warning names the
/// provider and the fault. A 200 whose body fails the success rule is the
/// gateway refusing this message (as for a bad number): no failover, by
/// design (sms/mod.rs: only `Transient` fails over), so the login fails
/// closed with an error line and the backup is not used. Either way no
/// code the gateway saw is in the log or the audit, and a login that
/// failed leaves no challenge behind.
#[test]
fn a_faulty_gateway_fails_over_or_fails_closed() {
    for fault in [Fault::Reset, Fault::Garbage, Fault::BadBody] {
        let scratch = Scratch::new();
        phones(&scratch);
        let gw = FaultyGateway::start(fault);
        let spec = ServerSpec::new(vec![vpn()]).providers(&format!(
            "{}\n{}",
            gw.provider(),
            outbox_provider(&scratch)
        ));
        let srv = Radiusd::start(&scratch, spec);
        let outbox = scratch.outbox();
        let nas = srv.nas("127.0.0.1", "vpn");
        let req = Request::access(nas.id())
            .user("alice")
            .password(NAS_PASSWORD);
        let reply = nas.exchange(&req, &|| srv.context());
        eprintln!("{fault:?} with a backup: {}", reply.packet.describe());
        assert_eq!(
            gw.seen.load(Ordering::SeqCst),
            1,
            "{fault:?}: the gateway was not asked once"
        );
        if fault == Fault::BadBody {
            assert_eq!(
                reply.code(),
                code::ACCESS_REJECT,
                "{fault:?}\n{}",
                srv.context()
            );
            let line = wait_line(&srv, "event=send_failed");
            assert!(
                line.contains("provider=flaky")
                    && line.contains("rejected")
                    && line.contains("success"),
                "{fault:?}: {line}"
            );
            assert_eq!(
                outbox.count(),
                0,
                "{fault:?}: a refused message went out through the backup"
            );
            assert_eq!(
                open_challenges(&scratch),
                0,
                "{fault:?}: the challenge was kept"
            );
        } else {
            assert_eq!(
                reply.code(),
                code::ACCESS_CHALLENGE,
                "{fault:?}: no failover\n{}",
                srv.context()
            );
            let sms = outbox.wait_beyond(0, SMS_WAIT);
            let ok = follow_up(&srv, &nas, "alice", &reply.state(), &sms.code());
            assert_eq!(
                ok.code(),
                code::ACCESS_ACCEPT,
                "{fault:?}\n{}",
                srv.context()
            );
            let line = wait_line(&srv, "event=failover");
            assert!(
                line.contains("provider=flaky") && line.contains("temporary failure"),
                "{fault:?}: {line}"
            );
        }
        assert_no_code_logged(&srv, &scratch, &gw.codes(), fault);
    }
}

/// The first line of the server's log holding `text` (waits up to 5 s).
fn wait_line(srv: &Radiusd, text: &str) -> String {
    if srv.wait_log(text, 0, Duration::from_secs(5)).is_none() {
        panic!("no {text:?} in the log\n{}", srv.context());
    }
    srv.log()
        .lines()
        .find(|l| l.contains(text))
        .unwrap_or_default()
        .to_owned()
}

/// Each fault of the gateway as the only provider: the login is rejected
/// (provider_down = "deny"), an error line says which provider failed and
/// how, no code leaks, and the challenge is withdrawn: the store holds
/// none, so the code the gateway saw (and never delivered) opens nothing.
#[test]
fn a_faulty_only_gateway_fails_closed_and_withdraws_the_challenge() {
    for fault in [Fault::Reset, Fault::Garbage, Fault::BadBody] {
        let scratch = Scratch::new();
        phones(&scratch);
        let gw = FaultyGateway::start(fault);
        let spec = ServerSpec::new(vec![vpn()]).providers(&gw.provider());
        let srv = Radiusd::start(&scratch, spec);
        let nas = srv.nas("127.0.0.1", "vpn");
        let req = Request::access(nas.id())
            .user("alice")
            .password(NAS_PASSWORD);
        let reply = nas.exchange(&req, &|| srv.context());
        eprintln!("{fault:?} alone: {}", reply.packet.describe());
        assert!(
            gw.seen.load(Ordering::SeqCst) >= 1,
            "{fault:?}: the gateway was not asked"
        );
        assert_eq!(
            reply.code(),
            code::ACCESS_REJECT,
            "{fault:?}: not refused\n{}",
            srv.context()
        );
        assert!(
            reply.packet.state().is_none(),
            "{fault:?}: a State in a Reject"
        );
        let line = wait_line(&srv, "event=send_failed");
        let why = match fault {
            Fault::Reset => "reset",
            Fault::Garbage => "invalid HTTP",
            Fault::BadBody => "success",
        };
        assert!(
            line.contains("provider=flaky") && line.contains(why),
            "{fault:?}: the line does not name the provider and say {why:?}: {line}"
        );
        assert_eq!(
            open_challenges(&scratch),
            0,
            "{fault:?}: the challenge was kept"
        );
        assert_no_code_logged(&srv, &scratch, &gw.codes(), fault);
    }
}

fn assert_no_code_logged(srv: &Radiusd, scratch: &Scratch, codes: &[String], fault: Fault) {
    assert!(!codes.is_empty(), "{fault:?}: the gateway got no code");
    let log = srv.log();
    let audit = std::fs::read_to_string(scratch.path("audit.jsonl")).unwrap_or_default();
    for c in codes {
        assert!(
            !log.contains(c.as_str()),
            "{fault:?}: stderr holds the code {c}:\n{log}"
        );
        assert!(
            !audit.contains(c.as_str()),
            "{fault:?}: audit holds the code {c}:\n{audit}"
        );
    }
}

// ------------------------------------------------------------------ file system full

/// A tmpfs of `size` mounted on a directory of the scratch dir; lazily
/// unmounted when dropped.
struct Tmpfs {
    dir: std::path::PathBuf,
}

impl Tmpfs {
    /// `None` (with the reason) when the mount is refused: not root, or a
    /// container without CAP_SYS_ADMIN.
    fn mount(scratch: &Scratch, size: &str) -> Result<Tmpfs, String> {
        let dir = scratch.path("small-fs");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
            .arg("tmpfs")
            .arg(&dir)
            .output()
            .map_err(|e| format!("run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs { dir })
    }

    /// Fills the file system with `filler` until it is full.
    fn fill(&self) -> std::path::PathBuf {
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).expect("create filler");
        let chunk = vec![0x5au8; 4096];
        loop {
            if let Err(e) = f.write_all(&chunk) {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling: {e}");
                break;
            }
        }
        // Whatever is left is less than a page.
        let _ = f.write_all(&[0x5a; 512]);
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// `PRAGMA integrity_check` on the store: "ok" for a sound file.
fn integrity(db: &Path) -> String {
    let out = Command::new("sqlite3")
        .arg("-readonly")
        .arg(db)
        .arg("PRAGMA integrity_check")
        .output()
        .expect("run sqlite3 (Debian package sqlite3)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// The store on a 1 MiB tmpfs that is then filled up: a PAM login fails
/// closed (PAM_AUTHINFO_UNAVAIL, the unavailable text, no SMS) and the
/// audit (on another file system) says the store is full; the store is
/// not corrupt (PRAGMA integrity_check); once space is freed, logins work
/// again without anyone touching the store. Skips, loudly, where the
/// mount is refused (not root, no CAP_SYS_ADMIN).
#[test]
fn pam_fails_closed_on_a_full_file_system_and_recovers() {
    let mut env = PamEnv::new();
    phones(&env.scratch);
    let fs = match Tmpfs::mount(&env.scratch, "1m") {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("SKIPPED: cannot mount a tmpfs here ({e}); the full-disk fault is untested");
            return;
        }
    };
    let db = fs.dir.join("state.db");
    let text = env.scratch.base_tables(true, true).replace(
        &format!("path = \"{}\"", env.scratch.path("state.db").display()),
        &format!("path = \"{}\"", db.display()),
    );
    assert!(text.contains("small-fs/state.db"), "{text}");
    env.scratch.write("smsotp.toml", &text, 0o600);
    let svc = env.smsotp_service("e2e-disk-full", "");
    good_login(&env, &svc);

    // SQLite's write-ahead log keeps the space it had: logins go on while
    // their writes fit in it. Log in until the store cannot even hold a
    // new challenge. A login whose code was sent but whose use cannot be
    // recorded (the answer's write fails) is refused too: a code whose
    // single use is not on record must not open anything.
    let filler = fs.fill();
    let outbox = env.scratch.outbox();
    let (mut ok, mut refused_at_answer) = (0, 0);
    let out = loop {
        let seen = outbox.count();
        match attempt(&env, &svc) {
            Ok(()) => ok += 1,
            Err(out) => {
                assert_eq!(out.pam_result(), Some(AUTHINFO_UNAVAIL), "{out}");
                out.assert_failure().assert_saw(UNAVAILABLE);
                if !out.transcript.contains(PROMPT) {
                    assert_eq!(
                        outbox.count(),
                        seen,
                        "an SMS for a challenge never stored: {out}"
                    );
                    break out;
                }
                refused_at_answer += 1;
            }
        }
        assert!(
            ok + refused_at_answer < 100,
            "100 logins on a full file system"
        );
    };
    eprintln!(
        "on the full file system: {ok} logins fit in the space the store had, \
         {refused_at_answer} refused at the answer, then:\n{out}"
    );
    let audit = audit_text(&env.scratch);
    assert!(
        audit.contains("database or disk is full")
            && audit.contains("free space on the file system")
            && audit.contains(db.to_str().unwrap()),
        "no audit line says the store is full:\n{audit}"
    );
    assert_eq!(integrity(&db), "ok", "the store is damaged");
    eprintln!(
        "audit: {}",
        audit
            .lines()
            .rfind(|l| l.contains("full"))
            .unwrap_or_default()
    );

    std::fs::remove_file(&filler).expect("free the space");
    good_login(&env, &svc);
    assert_eq!(integrity(&db), "ok", "the store is damaged");
}

/// One login of alice: the code from the outbox typed if one is asked
/// for. `Err` with how it ended if it did not succeed.
fn attempt(env: &PamEnv, svc: &str) -> Result<(), Outcome> {
    let outbox = env.scratch.outbox();
    let seen = outbox.count();
    let mut login = env.login(svc, "alice");
    login.password();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = login.transcript();
        if t.contains(PROMPT) {
            login.answer_code_from_outbox(&outbox, seen);
            break;
        }
        if t.lines().any(|l| {
            l.starts_with("pamtester: ") && !l.contains("invoking") && !l.contains("performing")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the login neither asked nor ended:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = login.finish();
    if out.success {
        Ok(())
    } else {
        Err(out)
    }
}

/// The phone list, and a 1 MiB tmpfs for the store (its mount and the
/// store's path), or `None`, said loudly, where the mount is refused.
fn full_disk_store(scratch: &Scratch) -> Option<(Tmpfs, std::path::PathBuf)> {
    phones(scratch);
    match Tmpfs::mount(scratch, "1m") {
        Ok(fs) => {
            let db = fs.dir.join("state.db");
            Some((fs, db))
        }
        Err(e) => {
            eprintln!("SKIPPED: cannot mount a tmpfs here ({e}); the full-disk fault is untested");
            None
        }
    }
}

/// `spec` with its SQLite store at `db`.
fn on_store(mut spec: ServerSpec, db: &Path) -> ServerSpec {
    spec.store = Some(format!(
        "[store]\nkind = \"sqlite\"\npath = \"{}\"\n\n",
        db.display()
    ));
    spec
}

/// smsotp-radiusd with its store on a 1 MiB tmpfs that is then filled up:
/// logins go on while their writes fit in the space SQLite's log had,
/// then a first round is rejected with a log line naming the store and
/// the full disk (with the outbox, a local file, its line may have been
/// written first, see the note in the loop; a provider that reaches a
/// phone waits for the commit: the next test); the server keeps answering (Status-Server),
/// the store passes PRAGMA integrity_check, and once space is freed a
/// login works again without a restart. Skips, loudly, where the mount is
/// refused.
#[test]
fn radiusd_fails_closed_on_a_full_file_system_and_recovers() {
    let scratch = Scratch::new();
    let Some((fs, db)) = full_disk_store(&scratch) else {
        return;
    };
    let spec = ServerSpec::new(vec![vpn()]).extra("[limits]\nsms_per_user = \"100/1h\"\n");
    let srv = Radiusd::start(&scratch, on_store(spec, &db));
    let outbox = scratch.outbox();
    let nas = srv.nas("127.0.0.1", "vpn");
    let (c, code_) = challenge(&srv, &nas, &outbox, "alice");
    let ok = follow_up(&srv, &nas, "alice", &c.state(), &code_);
    assert_eq!(ok.code(), code::ACCESS_ACCEPT, "{}", srv.context());

    let filler = fs.fill();
    let mut logins = 0;
    loop {
        assert!(
            logins < 100,
            "100 logins on a full file system\n{}",
            srv.context()
        );
        let seen = outbox.count();
        let req = Request::access(nas.id())
            .user("alice")
            .password(NAS_PASSWORD);
        let first = nas.exchange(&req, &|| srv.context());
        if first.code() == code::ACCESS_REJECT {
            assert_eq!(
                first.message(),
                "SMS login is not available right now. Contact your administrator."
            );
            if outbox.count() > seen {
                // The outbox is a local file, written without waiting for
                // the commit of the batch that holds the challenge (a
                // provider that reaches a phone waits: the next test).
                // When that commit fails the login is rejected and the
                // line written opens nothing (no State was given, no
                // challenge stored). The log must say so.
                let line = wait_line(&srv, "the challenge logged for this request was not stored");
                assert!(line.contains("rejected instead"), "{line}");
                eprintln!("an SMS went out for a challenge the full disk could not hold: {line}");
            }
            break;
        }
        assert_eq!(first.code(), code::ACCESS_CHALLENGE, "{}", srv.context());
        let sms = outbox.wait_beyond(seen, SMS_WAIT);
        let answer = follow_up(&srv, &nas, "alice", &first.state(), &sms.code());
        // A code whose use cannot be recorded opens nothing.
        assert_ne!(answer.code(), code::ACCESS_CHALLENGE, "{}", srv.context());
        logins += 1;
    }
    let line = wait_line(&srv, "disk is full");
    assert!(
        line.contains(db.to_str().unwrap()) && line.contains("free space on the file system"),
        "{line}"
    );
    eprintln!("after {logins} logins on the full file system: {line}");
    let alive = nas.exchange(&Request::status(nas.id()), &|| srv.context());
    assert_eq!(
        alive.code(),
        code::ACCESS_ACCEPT,
        "Status-Server\n{}",
        srv.context()
    );
    assert_eq!(integrity(&db), "ok", "the store is damaged");

    std::fs::remove_file(&filler).expect("free the space");
    let (c, code_) = challenge(&srv, &nas, &outbox, "alice");
    let ok = follow_up(&srv, &nas, "alice", &c.state(), &code_);
    assert_eq!(
        ok.code(),
        code::ACCESS_ACCEPT,
        "after freeing space\n{}",
        srv.context()
    );
    assert_eq!(integrity(&db), "ok", "the store is damaged");
}

/// The same full disk with a provider that reaches a phone (here a
/// `command` program): the SMS leaves only once the batch holding its
/// challenge has committed, so the first round the disk cannot hold is
/// rejected with no SMS sent, never with a code that opens nothing.
#[test]
fn radiusd_sends_no_sms_for_a_challenge_the_full_disk_cannot_hold() {
    let scratch = Scratch::new();
    let Some((fs, db)) = full_disk_store(&scratch) else {
        return;
    };
    let sent = scratch.path("sent.log");
    let program = scratch.write(
        "send.sh",
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$SMSOTP_MESSAGE\" >> {}\n",
            sent.display()
        ),
        0o700,
    );
    let spec = ServerSpec::new(vec![vpn()])
        .extra("[limits]\nsms_per_user = \"100/1h\"\n\n[otp]\nmessage = \"code {code}\"\n")
        .providers(&format!(
            "[[provider]]\nkind = \"command\"\nname = \"gateway\"\nprogram = \"{}\"\n",
            program.display()
        ));
    let srv = Radiusd::start(&scratch, on_store(spec, &db));
    let nas = srv.nas("127.0.0.1", "vpn");
    let sent_codes = || -> Vec<String> {
        std::fs::read_to_string(&sent)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("code ").map(str::to_owned))
            .collect()
    };
    let filler = fs.fill();
    let mut logins = 0;
    loop {
        assert!(
            logins < 100,
            "100 logins on a full file system\n{}",
            srv.context()
        );
        let seen = sent_codes().len();
        let req = Request::access(nas.id())
            .user("alice")
            .password(NAS_PASSWORD);
        let first = nas.exchange(&req, &|| srv.context());
        if first.code() == code::ACCESS_REJECT {
            assert_eq!(
                sent_codes().len(),
                seen,
                "an SMS went out for a challenge the store could not keep\n{}",
                srv.context()
            );
            break;
        }
        assert_eq!(first.code(), code::ACCESS_CHALLENGE, "{}", srv.context());
        let codes = sent_codes();
        assert_eq!(codes.len(), seen + 1, "one SMS per challenge");
        let answer = follow_up(&srv, &nas, "alice", &first.state(), &codes[seen]);
        assert_ne!(answer.code(), code::ACCESS_CHALLENGE, "{}", srv.context());
        logins += 1;
    }
    let line = wait_line(&srv, "disk is full");
    assert!(line.contains(db.to_str().unwrap()), "{line}");
    eprintln!("after {logins} logins on the full file system: {line}");

    std::fs::remove_file(&filler).expect("free the space");
    let seen = sent_codes().len();
    let req = Request::access(nas.id())
        .user("alice")
        .password(NAS_PASSWORD);
    let first = nas.exchange(&req, &|| srv.context());
    assert_eq!(first.code(), code::ACCESS_CHALLENGE, "{}", srv.context());
    let codes = sent_codes();
    assert_eq!(codes.len(), seen + 1);
    let ok = follow_up(&srv, &nas, "alice", &first.state(), &codes[seen]);
    assert_eq!(
        ok.code(),
        code::ACCESS_ACCEPT,
        "after freeing space\n{}",
        srv.context()
    );
    assert_eq!(integrity(&db), "ok", "the store is damaged");
}
