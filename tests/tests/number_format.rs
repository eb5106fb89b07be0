//! `number_format` and the SMS count end to end: a real PAM login
//! (pamtester under pam_wrapper, as in pam.rs) sends its code through a
//! `kind = "http"` provider to a gateway stub on 127.0.0.1, which records
//! the request; the number arrives in the configured format, and the audit
//! line of the send says how many SMS the text took.
//!
//! Needs what pam.rs needs (`pamtester libpam-wrapper libnss-wrapper` and
//! a built module).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use smsotp_e2e::pamenv::{audit_lines, PamEnv};

const ALICE_PHONE: &str = "+12015550123";

/// An SMS gateway that accepts every request (200 "OK") and keeps it.
/// Stopped on drop.
struct GatewayStub {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl GatewayStub {
    fn start() -> GatewayStub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, halt) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let text = smsotp_e2e::read_http_request(&mut conn);
                        reqs.lock().unwrap().push(text);
                        let _ = conn.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        GatewayStub {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// A `[[provider]]` "gw" sending through the stub: the number in the
    /// URL and in the form body.
    fn provider(&self, number_format: &str) -> String {
        format!(
            "[[provider]]\nkind = \"http\"\nname = \"gw\"\nnumber_format = \"{number_format}\"\n\
             url = \"http://{}/sms?to={{number}}\"\nmethod = \"POST\"\n\
             body = {{ to = \"{{number}}\", message = \"{{message}}\" }}\nallow_http = true\ntimeout = \"5s\"\n",
            self.addr
        )
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for GatewayStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The value of `key` in a form (`a=1&b=2`), `+` read as a space.
fn form_value(form: &str, key: &str) -> Option<String> {
    form.split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .map(|v| v.replace('+', " "))
}

/// A login whose code goes to a domestic-only gateway: the number arrives
/// in the national form, in the URL and the body, and the audit line of
/// the send names the provider and the one SMS the text took.
#[test]
fn a_login_sends_the_number_in_the_national_format() {
    let gw = GatewayStub::start();
    let mut env = PamEnv::new();
    env.scratch.phones(&[("alice", ALICE_PHONE)]);
    env.scratch.config(&format!(
        "[phone]\nallowed_countries = [\"US\"]\n\n{}",
        gw.provider("national")
    ));
    let service = env.smsotp_service("e2e-national", "");
    let mut login = env.login(&service, "alice");
    login
        .password()
        .expect_text("Code sent to ******0123.")
        .expect_prompt("SMS code");
    let reqs = gw.requests();
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    let (head, body) = reqs[0].split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("POST /sms?to=2015550123 HTTP/1.1\r\n"),
        "{head}"
    );
    assert_eq!(
        form_value(body, "to").as_deref(),
        Some("2015550123"),
        "{body}"
    );
    let message = form_value(body, "message").unwrap();
    let code = smsotp_e2e::extract_code(&message).unwrap();
    login.answer(&code);
    login.finish().assert_success();

    let audit = audit_lines(&env.scratch);
    let sent = audit
        .iter()
        .find(|l| l["event"] == "sent")
        .unwrap_or_else(|| panic!("no sent line: {audit:#?}"));
    assert_eq!(sent["provider"], "gw", "{sent}");
    assert_eq!(sent["segments"], 1, "{sent}");
    assert!(!sent.to_string().contains("2015550123"), "{sent}");
}
