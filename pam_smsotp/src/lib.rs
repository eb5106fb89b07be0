//! pam_smsotp.so: after the password, ask for a code sent by SMS.
//!
//! This crate only translates: PAM items and the conversation in, one
//! exhaustive match from the core's verdict to a PAM code out. Every rule
//! about codes lives in `smsotp_core::flow`.
//!
//! ```text
//! auth requisite pam_unix.so
//! auth required  pam_smsotp.so [config=/etc/smsotp/smsotp.toml] [debug]
//! ```
//!
//! Safety at the boundary: each hook runs inside `catch_unwind` (a panic
//! becomes PAM_SYSTEM_ERR and a log line, never an abort of sshd), starts no
//! threads, and any error fails closed: PAM_SUCCESS only for a verified code
//! (SMS, backup code, or the code that completes enrollment)
//! or a policy the admin chose (`no_phone`/`provider_down = "allow"`),
//! PAM_IGNORE only for exempt (or, where the policy allows, opted-out) users.
//!
//! Under PAM_SILENT (sudo always asks it) info lines are not shown; the code
//! prompt then names the phone instead ("SMS code (sent to ******0123): ").
//!
//! One code round per PAM handle: once the code was wrong every time,
//! expired or not entered, a later `pam_authenticate` on the same handle
//! (sudo's `passwd_tries`, login's retries) sends no SMS and counts no
//! failure: it answers PAM_MAXTRIES, which tells a caller that honours it
//! (login) to stop. sudo treats it as any failure and may ask the password
//! again; still nothing is sent. sshd runs each keyboard-interactive try in
//! a child process, so this memory does not outlive one try there.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use pam::constants::{
    PamFlag, PamResultCode, PAM_ERROR_MSG, PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON, PAM_SILENT,
    PAM_TEXT_INFO,
};
use pam::conv::Conv;
use pam::items::{RHost, Service};
use pam::module::{PamHandle, PamHooks};
use pam::pam_hooks;
use smsotp_core::audit::{AuditSink, Event, Level, SyslogSink};
use smsotp_core::config::DEFAULT_CONFIG_PATH;
use smsotp_core::flow::{
    self, Conversation, FlowError, LogOptions, LoginContext, OpenError, Verdict,
};
use zeroize::Zeroizing;

const IDENT: &str = "pam_smsotp";

/// pam_set_data key: the user whose code round on this handle failed.
/// Only this module sets it, always to a `String`.
const ROUND_FAILED: &str = "pam_smsotp_round_failed";

/// What a retry on a handle whose code round failed is told.
const ROUND_OVER: &str =
    "The SMS code was not accepted; no new code is sent for this attempt. Start again to get one.";

struct SmsOtp;
pam_hooks!(SmsOtp);

impl PamHooks for SmsOtp {
    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        guard("authenticate", || authenticate(pamh, &args, flags))
    }

    fn sm_setcred(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        PamResultCode::PAM_SUCCESS
    }
}

/// Runs a hook body; a panic becomes PAM_SYSTEM_ERR and a log line.
fn guard(hook: &str, body: impl FnOnce() -> PamResultCode) -> PamResultCode {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(code) => code,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            syslog_error(
                "panic",
                "",
                "",
                &format!("{hook}: internal error ({what}); failing closed"),
            );
            PamResultCode::PAM_SYSTEM_ERR
        }
    }
}

/// Module arguments.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    config: PathBuf,
    debug: bool,
}

fn parse_args(args: &[&CStr]) -> Result<Args, String> {
    let mut out = Args {
        config: PathBuf::from(DEFAULT_CONFIG_PATH),
        debug: false,
    };
    for a in args {
        let a = a
            .to_str()
            .map_err(|_| "a module argument is not valid UTF-8".to_owned())?;
        if a == "debug" {
            out.debug = true;
        } else if let Some(p) = a.strip_prefix("config=") {
            if !p.starts_with('/') {
                return Err(format!("config={p}: the path must be absolute"));
            }
            out.config = PathBuf::from(p);
        } else {
            return Err(format!(
                "unknown module argument \"{a}\"; known: config=PATH, debug"
            ));
        }
    }
    Ok(out)
}

/// The PAM conversation, as the core wants it.
struct PamConversation<'a> {
    conv: Conv<'a>,
    silent: bool,
}

impl Conversation for PamConversation<'_> {
    fn shows_info(&self) -> bool {
        !self.silent
    }

    fn info(&mut self, text: &str) -> Result<(), String> {
        if self.silent {
            return Ok(());
        }
        self.conv
            .send(PAM_TEXT_INFO, text)
            .map(drop)
            .map_err(|c| format!("{c:?}"))
    }

    fn error(&mut self, text: &str) -> Result<(), String> {
        self.conv
            .send(PAM_ERROR_MSG, text)
            .map(drop)
            .map_err(|c| format!("{c:?}"))
    }

    fn ask_secret(&mut self, prompt: &str) -> Result<Zeroizing<String>, String> {
        self.ask(PAM_PROMPT_ECHO_OFF, prompt)
    }

    fn ask_text(&mut self, prompt: &str) -> Result<Zeroizing<String>, String> {
        self.ask(PAM_PROMPT_ECHO_ON, prompt)
    }
}

impl PamConversation<'_> {
    fn ask(
        &mut self,
        style: pam::constants::PamMessageStyle,
        prompt: &str,
    ) -> Result<Zeroizing<String>, String> {
        let reply = self
            .conv
            .send(style, prompt)
            .map_err(|c| format!("{c:?}"))?;
        // No reply at all is an empty answer; bytes that are not UTF-8
        // cannot be a code and are checked (and counted) as a wrong one.
        Ok(Zeroizing::new(match reply {
            None => String::new(),
            Some(r) => r
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|_| "\u{fffd}".into()),
        }))
    }
}

fn authenticate(pamh: &mut PamHandle, args: &[&CStr], flags: PamFlag) -> PamResultCode {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            syslog_error("bad_arguments", "", "", &e);
            return PamResultCode::PAM_SERVICE_ERR;
        }
    };
    let user = match pamh.get_user(None) {
        Ok(u) if !u.is_empty() => u,
        Ok(_) => return PamResultCode::PAM_USER_UNKNOWN,
        Err(e) => return e,
    };
    let service = item_string(pamh.get_item::<Service>().ok().flatten().map(|s| s.0));
    let rhost = item_string(pamh.get_item::<RHost>().ok().flatten().map(|s| s.0));
    let ctx = LoginContext {
        user,
        service: if service.is_empty() {
            "unknown".into()
        } else {
            service
        },
        rhost: (!rhost.is_empty()).then_some(rhost),
    };

    let conv = match pamh.get_item::<Conv>() {
        Ok(Some(c)) => c,
        Ok(None) => return PamResultCode::PAM_CONV_ERR,
        Err(e) => return e,
    };
    let mut conv = PamConversation {
        conv,
        silent: flags & PAM_SILENT != 0,
    };

    let log = LogOptions {
        ident: IDENT.into(),
        debug: args.debug,
        stderr: false,
        server: None,
    };
    let engine = match flow::open_from_path(&args.config, &log) {
        Ok(e) => e,
        Err(e) => {
            let (event, code) = match &e {
                OpenError::Config(_) => ("config_error", PamResultCode::PAM_SYSTEM_ERR),
                OpenError::Flow(_) => ("unavailable", PamResultCode::PAM_AUTHINFO_UNAVAIL),
            };
            syslog_error(event, &ctx.user, &ctx.service, &e.to_string());
            let _ = conv.error(
                "SMS login is not available (configuration problem). Contact your administrator.",
            );
            return code;
        }
    };

    if round_failed_before(pamh, &ctx.user) {
        let mut e = engine.event_for(&ctx, "retry_refused");
        e.outcome = Some("failure");
        e.reason = Some("code_round_failed");
        e.detail =
            Some("pam_authenticate again on a handle whose code round failed; no SMS sent".into());
        engine.record(Level::Info, &e);
        let _ = conv.error(ROUND_OVER);
        return PamResultCode::PAM_MAXTRIES;
    }

    match flow::run(&engine, &mut conv, &ctx) {
        Ok(Verdict::Accept(_)) => PamResultCode::PAM_SUCCESS,
        Ok(Verdict::Reject(r)) => {
            if r.ends_code_round() {
                // Best effort: without it a retry only costs one more SMS.
                let _ = pamh.set_data(ROUND_FAILED, Box::new(ctx.user.clone()));
            }
            PamResultCode::PAM_AUTH_ERR
        }
        Ok(Verdict::NotApplicable(_)) => PamResultCode::PAM_IGNORE,
        Err(e) => {
            engine.log_error(&ctx, &e);
            match e {
                FlowError::Conversation(_) => PamResultCode::PAM_CONV_ERR,
                FlowError::Store(_) | FlowError::Directory(_) | FlowError::Accounts { .. } => {
                    let _ = conv
                        .error("SMS login is not available right now. Contact your administrator.");
                    PamResultCode::PAM_AUTHINFO_UNAVAIL
                }
                FlowError::Random(_) | FlowError::Key(_) => PamResultCode::PAM_SYSTEM_ERR,
                _ => PamResultCode::PAM_SYSTEM_ERR,
            }
        }
    }
}

/// Whether this handle already had `user`'s code round fail.
fn round_failed_before(pamh: &PamHandle, user: &str) -> bool {
    // SAFETY: ROUND_FAILED is this module's own key and is only ever set
    // to a `String` (in `authenticate`), so the type read matches.
    let data = unsafe { pamh.get_data::<String>(ROUND_FAILED) };
    data.is_ok_and(|failed| failed == user)
}

fn item_string(item: Option<&CStr>) -> String {
    item.map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// For errors before the engine (and its configured audit sinks) exist.
fn syslog_error(event: &'static str, user: &str, service: &str, detail: &str) {
    let sink = SyslogSink::new(IDENT, false);
    let e = Event {
        event,
        user: user.into(),
        service: service.into(),
        outcome: Some("failure"),
        detail: Some(detail.into()),
        ..Event::default()
    };
    sink.record(Level::Error, 0, &e);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse_and_refuse_unknown() {
        assert_eq!(
            parse_args(&[]).unwrap_or_else(|e| unreachable!("{e}")),
            Args {
                config: DEFAULT_CONFIG_PATH.into(),
                debug: false
            }
        );
        let a =
            parse_args(&[c"config=/tmp/x.toml", c"debug"]).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            a,
            Args {
                config: "/tmp/x.toml".into(),
                debug: true
            }
        );
        assert!(parse_args(&[c"conifg=/tmp/x"]).is_err());
        assert!(parse_args(&[c"config=relative.toml"]).is_err());
    }

    #[test]
    fn a_panic_becomes_system_err() {
        let code = guard("test", || {
            let v: Vec<u8> = Vec::new();
            #[allow(clippy::indexing_slicing)]
            let _ = v[1];
            PamResultCode::PAM_SUCCESS
        });
        assert_eq!(code, PamResultCode::PAM_SYSTEM_ERR);
    }
}
