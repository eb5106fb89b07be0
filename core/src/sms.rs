//! Sending the SMS: the `SmsProvider` trait, the `outbox` and `command`
//! providers, and the failover chain (`http` is in [`crate::http`], `smpp`
//! in [`crate::smpp`]).
//!
//! Errors say what the chain should do: `Transient` fails over to the next
//! provider (once per code, with the same code, so a user never receives two
//! different codes), `Rejected` and `Misconfigured` stop.

use std::io::{Read, Seek};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::clock::{rfc3339, Clock};
use crate::config::ProviderSpec;
use crate::http::HttpProvider;
use crate::phone::Phone;
use crate::smpp::{SessionMode, SmppProvider, SmppSessions};

/// One message to send. The text contains the code: never log it.
pub struct Sms<'a> {
    pub to: &'a Phone,
    pub text: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Worth trying elsewhere: connection failure, timeout, overload.
    #[error("temporary failure: {0}")]
    Transient(String),
    /// The gateway refused this message (bad number, blocked destination).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The provider cannot work as configured (credentials, program missing).
    #[error("misconfigured: {0}")]
    Misconfigured(String),
}

pub trait SmsProvider {
    fn name(&self) -> &str;
    fn send(&self, sms: &Sms<'_>) -> Result<(), SendError>;
}

/// Appends `{"to", "message", "at"}` as one JSON line to a file (mode 0600).
/// The embedded default: no SMS account needed, codes readable by root.
pub struct OutboxProvider {
    pub name: String,
    pub path: PathBuf,
    pub clock: Box<dyn Clock>,
    /// The file, kept open between sends (a server sends many).
    file: std::sync::Mutex<crate::files::AppendFile>,
}

impl OutboxProvider {
    pub fn new(name: String, path: PathBuf, clock: Box<dyn Clock>) -> Self {
        OutboxProvider {
            name,
            file: std::sync::Mutex::new(crate::files::AppendFile::new(path.clone())),
            path,
            clock,
        }
    }

    fn append(&self, bytes: &[u8]) -> Result<(), SendError> {
        let where_ = self.path.display();
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.append(bytes).map_err(|e| match e {
            crate::files::AppendError::Open(e) => SendError::Misconfigured(format!(
                "cannot open outbox {where_}: {e}; create its directory"
            )),
            crate::files::AppendError::Write(e) => {
                SendError::Transient(format!("cannot write outbox {where_}: {e}"))
            }
        })
    }
}

impl SmsProvider for OutboxProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&self, sms: &Sms<'_>) -> Result<(), SendError> {
        // Fields in this order, as the outbox has always had them.
        #[derive(serde::Serialize)]
        struct Line<'a> {
            at: String,
            message: &'a str,
            to: &'a str,
        }
        let line = Line {
            at: rfc3339(self.clock.now_ms()),
            message: sms.text,
            to: sms.to.e164(),
        };
        // Written straight into one buffer (the message holds the code),
        // which is wiped after; sized for the worst escaping (`\u00XX`,
        // six bytes a byte) so it never grows and leaves a copy behind.
        let mut bytes = Vec::with_capacity(128 + 6 * sms.text.len());
        let r = match serde_json::to_writer(&mut bytes, &line) {
            Ok(()) => {
                bytes.push(b'\n');
                self.append(&bytes)
            }
            Err(e) => Err(SendError::Transient(format!(
                "cannot encode an outbox line: {e}"
            ))),
        };
        zeroize::Zeroize::zeroize(&mut bytes);
        r
    }
}

/// Runs the admin's program with `SMSOTP_NUMBER`, `SMSOTP_NUMBER_DIGITS` and
/// `SMSOTP_MESSAGE` in its environment. Exit 0: sent. Exit 65 (EX_DATAERR):
/// the number was refused. Exit 78 (EX_CONFIG): misconfigured. Any other
/// failure, or running past the timeout: temporary.
pub struct CommandProvider {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub timeout: Duration,
}

impl SmsProvider for CommandProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&self, sms: &Sms<'_>) -> Result<(), SendError> {
        let prog = self.program.display();
        // stderr goes to an unlinked temp file, not a pipe: a chatty program
        // cannot block on a full pipe, and we need no reader thread.
        let mut errfile = tempfile::tempfile()
            .map_err(|e| SendError::Transient(format!("{prog}: cannot create a temp file: {e}")))?;
        let child_err = errfile
            .try_clone()
            .map_err(|e| SendError::Transient(format!("{prog}: {e}")))?;
        let mut child = Command::new(&self.program)
            .args(&self.args)
            // A clean environment: nothing of the login's (LD_PRELOAD, …) leaks in.
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("SMSOTP_NUMBER", sms.to.e164())
            .env("SMSOTP_NUMBER_DIGITS", sms.to.digits())
            .env("SMSOTP_MESSAGE", sms.text)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(child_err)
            .spawn()
            .map_err(|e| SendError::Misconfigured(format!("cannot run {prog}: {e}")))?;
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(SendError::Transient(format!(
                        "{prog} did not finish within {}",
                        humantime::format_duration(self.timeout)
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    return Err(SendError::Transient(format!(
                        "{prog}: cannot wait for it: {e}"
                    )))
                }
            }
        };
        if status.success() {
            return Ok(());
        }
        let mut excerpt = String::new();
        let _ = errfile.rewind();
        let _ = errfile.take(300).read_to_string(&mut excerpt);
        let excerpt = excerpt.trim().replace(sms.text, "[message]");
        let what = match status.code() {
            Some(c) => format!("{prog} exited with status {c}"),
            None => format!("{prog} was killed by a signal"),
        };
        let msg = if excerpt.is_empty() {
            what
        } else {
            format!("{what}: {excerpt}")
        };
        Err(match status.code() {
            Some(65) => SendError::Rejected(msg),
            Some(78) => SendError::Misconfigured(msg),
            _ => SendError::Transient(msg),
        })
    }
}

/// What a front end offers providers beyond their config.
#[derive(Debug, Clone, Default)]
pub struct ProviderContext {
    /// Keep SMPP sessions bound between sends, in this pool (smsotp-radiusd:
    /// one pool per config generation, shared by every worker). `None`: one
    /// session per send, as the PAM module needs.
    pub smpp_sessions: Option<SmppSessions>,
}

/// Builds the configured providers, in order, for a short-lived process
/// (one SMPP session per send). See [`from_config_with`].
pub fn from_config(
    specs: &[ProviderSpec],
    clock: fn() -> Box<dyn Clock>,
) -> Vec<Box<dyn SmsProvider>> {
    from_config_with(specs, clock, &ProviderContext::default())
}

/// Builds the configured providers, in order, with what `ctx` offers.
pub fn from_config_with(
    specs: &[ProviderSpec],
    clock: fn() -> Box<dyn Clock>,
    ctx: &ProviderContext,
) -> Vec<Box<dyn SmsProvider>> {
    specs
        .iter()
        .map(|s| -> Box<dyn SmsProvider> {
            match s {
                ProviderSpec::Outbox { name, path } => {
                    Box::new(OutboxProvider::new(name.clone(), path.clone(), clock()))
                }
                ProviderSpec::Command {
                    name,
                    program,
                    args,
                    timeout,
                } => Box::new(CommandProvider {
                    name: name.clone(),
                    program: program.clone(),
                    args: args.clone(),
                    timeout: *timeout,
                }),
                ProviderSpec::Http(spec) => Box::new(HttpProvider::new((**spec).clone())),
                ProviderSpec::Smpp(spec) => Box::new(SmppProvider::new(
                    (**spec).clone(),
                    match &ctx.smpp_sessions {
                        None => SessionMode::PerSend,
                        Some(pool) => SessionMode::Persistent(pool.clone()),
                    },
                )),
            }
        })
        .collect()
}

/// What the chain did: who sent it, or every failure in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainOutcome {
    Sent {
        provider: String,
        failed_over_from: Option<(String, SendError)>,
    },
    Failed(Vec<(String, SendError)>),
}

impl ChainOutcome {
    /// True when every failure was temporary or a configuration problem, i.e.
    /// the gateway side is down rather than the number being refused.
    pub fn is_outage(&self) -> bool {
        match self {
            ChainOutcome::Sent { .. } => false,
            ChainOutcome::Failed(errors) => errors
                .iter()
                .all(|(_, e)| !matches!(e, SendError::Rejected(_))),
        }
    }
}

/// Tries the first provider; on a temporary failure, the next one, once.
pub fn send_with_failover(providers: &[Box<dyn SmsProvider>], sms: &Sms<'_>) -> ChainOutcome {
    let mut failures = Vec::new();
    for p in providers.iter().take(2) {
        match p.send(sms) {
            Ok(()) => {
                return ChainOutcome::Sent {
                    provider: p.name().to_owned(),
                    failed_over_from: failures.pop(),
                }
            }
            Err(e) => {
                let transient = matches!(e, SendError::Transient(_));
                failures.push((p.name().to_owned(), e));
                if !transient {
                    break;
                }
            }
        }
    }
    ChainOutcome::Failed(failures)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use std::cell::RefCell;
    use std::os::unix::fs::PermissionsExt;
    use std::rc::Rc;

    /// Records what it was asked to send; fails as scripted.
    #[derive(Clone, Default)]
    pub struct FakeSms {
        pub name: String,
        pub sent: Rc<RefCell<Vec<(String, String)>>>,
        pub fail_with: Rc<RefCell<Option<SendError>>>,
    }

    impl FakeSms {
        pub fn named(name: &str) -> Self {
            FakeSms {
                name: name.into(),
                ..Default::default()
            }
        }
        pub fn failing(name: &str, e: SendError) -> Self {
            let f = Self::named(name);
            *f.fail_with.borrow_mut() = Some(e);
            f
        }
    }

    impl SmsProvider for FakeSms {
        fn name(&self) -> &str {
            &self.name
        }
        fn send(&self, sms: &Sms<'_>) -> Result<(), SendError> {
            if let Some(e) = self.fail_with.borrow().clone() {
                return Err(e);
            }
            self.sent
                .borrow_mut()
                .push((sms.to.e164().into(), sms.text.into()));
            Ok(())
        }
    }

    fn phone() -> Phone {
        Phone::parse("+12025550143", None).unwrap()
    }

    #[test]
    fn failover_once_on_transient_only() {
        let p = phone();
        let sms = Sms {
            to: &p,
            text: "123456 is your code",
        };
        let a = FakeSms::failing("a", SendError::Transient("timeout".into()));
        let b = FakeSms::named("b");
        let c = FakeSms::named("c");
        let chain: Vec<Box<dyn SmsProvider>> =
            vec![Box::new(a), Box::new(b.clone()), Box::new(c.clone())];
        let out = send_with_failover(&chain, &sms);
        assert!(
            matches!(out, ChainOutcome::Sent { ref provider, failed_over_from: Some(_) } if provider == "b")
        );
        assert_eq!(b.sent.borrow().len(), 1);

        // A rejection does not fail over: the number is the problem.
        let a = FakeSms::failing("a", SendError::Rejected("bad number".into()));
        let chain: Vec<Box<dyn SmsProvider>> = vec![Box::new(a), Box::new(c.clone())];
        let out = send_with_failover(&chain, &sms);
        assert!(matches!(out, ChainOutcome::Failed(ref v) if v.len() == 1));
        assert!(!out.is_outage());
        assert!(c.sent.borrow().is_empty());

        // At most one failover: the third provider is never tried.
        let t = || SendError::Transient("down".into());
        let chain: Vec<Box<dyn SmsProvider>> = vec![
            Box::new(FakeSms::failing("a", t())),
            Box::new(FakeSms::failing("b", t())),
            Box::new(c.clone()),
        ];
        let out = send_with_failover(&chain, &sms);
        assert!(matches!(out, ChainOutcome::Failed(ref v) if v.len() == 2));
        assert!(out.is_outage());
        assert!(c.sent.borrow().is_empty());
    }

    #[test]
    fn outbox_appends_json_lines_with_mode_0600() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("outbox.jsonl");
        let o = OutboxProvider::new("outbox".into(), path.clone(), Box::new(FixedClock::at(0)));
        let p = phone();
        o.send(&Sms {
            to: &p,
            text: "111111 \"quoted\"\nline",
        })
        .unwrap();
        o.send(&Sms {
            to: &p,
            text: "222222",
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["to"], "+12025550143");
        assert_eq!(lines[0]["message"], "111111 \"quoted\"\nline");
        assert_eq!(lines[0]["at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    fn script(dir: &std::path::Path, body: &str) -> PathBuf {
        let p = dir.join("send.sh");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        p
    }

    #[test]
    fn command_provider_passes_env_and_classifies_exits() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("got");
        let prog = script(
            d.path(),
            &format!("printf '%s|%s|%s' \"$SMSOTP_NUMBER\" \"$SMSOTP_NUMBER_DIGITS\" \"$SMSOTP_MESSAGE\" > {}", out.display()),
        );
        let c = CommandProvider {
            name: "cmd".into(),
            program: prog,
            args: vec![],
            timeout: Duration::from_secs(5),
        };
        let p = phone();
        c.send(&Sms {
            to: &p,
            text: "123456 it's yours",
        })
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "+12025550143|12025550143|123456 it's yours"
        );

        for (body, want) in [
            ("echo 'gateway down' >&2; exit 1", "Transient"),
            ("exit 65", "Rejected"),
            ("exit 78", "Misconfigured"),
        ] {
            let prog = script(d.path(), body);
            let c = CommandProvider {
                name: "cmd".into(),
                program: prog,
                args: vec![],
                timeout: Duration::from_secs(5),
            };
            let e = c
                .send(&Sms {
                    to: &p,
                    text: "123456",
                })
                .unwrap_err();
            assert!(format!("{e:?}").starts_with(want), "{body}: {e:?}");
            if want == "Transient" {
                assert!(e.to_string().contains("gateway down"), "{e}");
            }
        }
    }

    #[test]
    fn command_provider_never_logs_the_message() {
        let d = tempfile::tempdir().unwrap();
        let prog = script(
            d.path(),
            "echo \"failed to send $SMSOTP_MESSAGE\" >&2; exit 1",
        );
        let c = CommandProvider {
            name: "cmd".into(),
            program: prog,
            args: vec![],
            timeout: Duration::from_secs(5),
        };
        let p = phone();
        let e = c
            .send(&Sms {
                to: &p,
                text: "987654 is your code",
            })
            .unwrap_err()
            .to_string();
        assert!(!e.contains("987654"), "{e}");
    }

    #[test]
    fn command_provider_times_out() {
        let d = tempfile::tempdir().unwrap();
        let prog = script(d.path(), "sleep 10");
        let c = CommandProvider {
            name: "cmd".into(),
            program: prog,
            args: vec![],
            timeout: Duration::from_millis(200),
        };
        let p = phone();
        let started = Instant::now();
        let e = c.send(&Sms { to: &p, text: "1" }).unwrap_err();
        assert!(matches!(e, SendError::Transient(_)), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        let missing = CommandProvider {
            name: "cmd".into(),
            program: "/nonexistent/send".into(),
            args: vec![],
            timeout: Duration::from_secs(1),
        };
        assert!(matches!(
            missing.send(&Sms { to: &p, text: "1" }),
            Err(SendError::Misconfigured(_))
        ));
    }
}
