//! `kind = "command"`: an admin's program sends the SMS.

use std::io::{Read, Seek};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::check::ConfigError;
use crate::sms::raw::Fields;
use crate::sms::{ProviderSpec, SendError, Sms, SmsProvider};
use serde::de::IgnoredAny;
use serde::Deserialize;
use toml::Spanned;

/// Runs the admin's program with `SMSOTP_NUMBER`, `SMSOTP_NUMBER_DIGITS` and
/// `SMSOTP_MESSAGE` in its environment. Exit 0: sent. Exit 65 (EX_DATAERR):
/// the number was refused. Exit 78 (EX_CONFIG): misconfigured. Any other
/// failure, or running past the timeout: temporary.
pub struct CommandProvider {
    /// The provider's `name`, for logs and the chain's outcome.
    pub name: String,
    /// Absolute path of the program, run directly (no shell).
    pub program: PathBuf,
    /// Its arguments, passed as they are (the message is only in the
    /// environment, so it never shows in `ps`).
    pub args: Vec<String>,
    /// How long it may run before it is killed and the send counts as
    /// temporary failure.
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
        let mut command = Command::new(&self.program);
        command
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
            .stderr(child_err);
        only_std_descriptors(&mut command);
        let mut child = spawn_retrying_busy(&mut command)
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

/// The program gets stdin, stdout and stderr and nothing else: every
/// other descriptor of the host process (sshd's sockets, files opened
/// without close-on-exec) is closed as it starts, as PAM's own helpers do.
///
/// The child marks every descriptor above 2 close-on-exec
/// (`close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`, Linux 5.11) rather than
/// closing it: std reports a failed exec through a close-on-exec pipe that
/// must stay open until the exec. Where the kernel lacks it, each
/// descriptor up to the soft `RLIMIT_NOFILE` (read before the fork) is
/// marked one by one. Between fork and exec only async-signal-safe calls
/// are made, and nothing is allocated.
/// Starts `command`, again (up to 5 times, 20 ms apart) while exec says
/// the program is "Text file busy" (ETXTBSY): for a moment after the
/// program was written (an upgrade installing it, a test writing its
/// script), a process forked elsewhere may still hold it open for
/// writing until its own exec closes it. Anything else fails at once.
fn spawn_retrying_busy(command: &mut Command) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 5 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn only_std_descriptors(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let limit = open_files_limit();
    let close_all = move || {
        // SAFETY: syscall and fcntl are async-signal-safe; no allocation,
        // no lock.
        let done = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
            )
        };
        if done != 0 {
            cloexec_each(limit);
        }
        Ok(())
    };
    // SAFETY: the closure only makes async-signal-safe calls (see above).
    unsafe { command.pre_exec(close_all) };
}

/// Marks descriptors 3 up to `limit` close-on-exec, one `fcntl` each
/// (async-signal-safe; EBADF for a number not open is fine): the fallback
/// where `close_range` is missing.
fn cloexec_each(limit: libc::c_int) {
    for fd in 3..limit {
        // SAFETY: fcntl on any number is sound; it only sets a flag.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// The soft limit on open files: no descriptor is numbered at or above it.
/// Bounded, so the fallback loop stays short when the limit is infinite.
fn open_files_limit() -> libc::c_int {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0;
    if !ok || rl.rlim_cur == libc::RLIM_INFINITY {
        return 1 << 20;
    }
    libc::c_int::try_from(rl.rlim_cur.min(1 << 20)).unwrap_or(1 << 20)
}

/// The keys of `kind = "command"`, besides `kind`.
pub(crate) const KEYS: [&str; 4] = ["name", "program", "args", "timeout"];

/// A `kind = "command"` table as read (`kind` and `name` are read by the
/// shared layer in `sms/raw.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCommand {
    #[serde(rename = "kind")]
    _kind: IgnoredAny,
    #[serde(rename = "name")]
    _name: Option<IgnoredAny>,
    program: Option<Spanned<String>>,
    args: Option<Spanned<Vec<String>>>,
    timeout: Option<Spanned<String>>,
}

/// Validates one `kind = "command"` table.
pub(crate) fn validate(
    table: &Fields<'_, RawCommand>,
    name: String,
) -> Result<ProviderSpec, ConfigError> {
    Ok(ProviderSpec::Command {
        name,
        program: table.file(
            &table.required(
                &table.raw().program,
                "program",
                "\"/usr/local/sbin/send-sms\"",
            )?,
            "program",
        )?,
        args: table
            .raw()
            .args
            .as_ref()
            .map(|a| a.get_ref().clone())
            .unwrap_or_default(),
        timeout: table.c.duration_in(
            &table.raw().timeout,
            &table.k("timeout"),
            Duration::from_millis(100),
            Duration::from_secs(60),
            Duration::from_secs(10),
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::Phone;
    use std::os::unix::fs::PermissionsExt;

    fn phone() -> Phone {
        Phone::parse("+12025550143", None).unwrap()
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

    /// Lists the descriptors `ls` has when started by `command` (the ones
    /// it inherited, and the one it opens for the directory).
    fn fds_seen_by(mut command: Command, out: &std::path::Path) -> Vec<i32> {
        let status = command.status().unwrap();
        assert!(status.success());
        fds_listed(out)
    }

    /// The numbers `ls /proc/self/fd` wrote to `out`, in numeric order.
    fn fds_listed(out: &std::path::Path) -> Vec<i32> {
        let text = std::fs::read_to_string(out).unwrap();
        let mut v: Vec<i32> = text
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn the_program_gets_only_stdin_stdout_and_stderr() {
        let d = tempfile::tempdir().unwrap();
        // A descriptor of the host without close-on-exec, as sshd's
        // sockets are; far above the ones the test harness uses.
        let leak = d.path().join("leak");
        std::fs::write(&leak, "x").unwrap();
        let path = std::ffi::CString::new(leak.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; the descriptors are closed below.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
        assert!(fd >= 0);
        // SAFETY: dup2 onto a free high number.
        let high = unsafe { libc::dup2(fd, 517) };
        assert_eq!(high, 517);
        let out = d.path().join("fds");
        let list = format!("ls /proc/self/fd > {}", out.display());
        // The test means something: a plain child inherits both.
        let mut plain = Command::new("/bin/sh");
        plain.arg("-c").arg(&list);
        let seen = fds_seen_by(plain, &out);
        assert!(seen.contains(&fd) && seen.contains(&517), "{seen:?}");

        let prog = script(d.path(), &list);
        let c = CommandProvider {
            name: "cmd".into(),
            program: prog,
            args: vec![],
            timeout: Duration::from_secs(5),
        };
        let p = phone();
        c.send(&Sms { to: &p, text: "1" }).unwrap();
        let seen = fds_listed(&out);
        // 0, 1, 2 and the directory `ls` reads (the lowest free number).
        assert_eq!(seen, vec![0, 1, 2, 3], "{seen:?}");

        // The fallback for kernels without close_range, run here in the
        // test process (where it only sets a flag std sets on its own
        // descriptors anyway; in this test, so no other test's leaked
        // descriptor is touched).
        // SAFETY: F_GETFD reads the flags of our descriptor.
        let flags = || unsafe { libc::fcntl(high, libc::F_GETFD) };
        assert_eq!(flags() & libc::FD_CLOEXEC, 0);
        let limit = open_files_limit();
        assert!(limit > high, "{limit}");
        cloexec_each(limit);
        assert_eq!(flags() & libc::FD_CLOEXEC, libc::FD_CLOEXEC);

        // SAFETY: ours to close.
        unsafe {
            libc::close(fd);
            libc::close(high);
        }
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
