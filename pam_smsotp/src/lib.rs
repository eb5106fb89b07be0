//! pam_smsotp.so: after the password, ask for a code sent by SMS.
//!
//! This crate only translates: PAM items and the conversation in, one
//! exhaustive match (`answer`) from whatever the attempt came to (the
//! core's verdict, its error, a failed PAM call, a panic) to a PAM code and
//! the text the user is told out. Every rule about codes, and every text,
//! lives in `smsotp_core::flow`.
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
use smsotp_core::flow::texts::{round_over_in, unavailable_config_in, unavailable_in};
use smsotp_core::flow::{
    self, Conversation, ConversationError, Failure, LogOptions, LoginContext, OpenError, Verdict,
};
use smsotp_core::messages::Catalogue;
use zeroize::Zeroizing;

const IDENT: &str = "pam_smsotp";

/// pam_set_data key: the user whose code round on this handle failed.
/// Only this module sets it, always to a `String`.
const ROUND_FAILED: &str = "pam_smsotp_round_failed";

/// Everything an authentication attempt can come to.
#[derive(Debug)]
enum Outcome {
    /// The core's verdict (its text was shown by the conversation).
    Verdict(Verdict),
    /// The core failed.
    Failed(Failure),
    /// The module line in the PAM config is wrong.
    BadArguments,
    /// PAM gave an empty user name.
    NoUser,
    /// A PAM call failed; its code is passed on.
    PamFailed(PamResultCode),
    /// The application gave no conversation function.
    NoConversation,
    /// The configuration could not be loaded.
    NoConfig,
    /// The configuration loaded but the engine could not be opened (the
    /// key, the store).
    NoEngine,
    /// A retry on a handle whose code round failed.
    RoundOver,
    /// The module panicked.
    Panic,
}

/// A text the module itself tells the user (the core's texts are told by
/// the conversation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Text {
    Unavailable,
    UnavailableConfig,
    RoundOver,
}

impl Text {
    fn in_language(self, lang: &Catalogue) -> String {
        match self {
            Text::Unavailable => unavailable_in(lang),
            Text::UnavailableConfig => unavailable_config_in(lang),
            Text::RoundOver => round_over_in(lang),
        }
    }
}

/// The one mapping from what an attempt came to, to its PAM code and the
/// text the user is told, if any. Anything unexpected fails closed.
fn answer(outcome: Outcome) -> (PamResultCode, Option<Text>) {
    match outcome {
        Outcome::Verdict(Verdict::Accept(_)) => (PamResultCode::PAM_SUCCESS, None),
        Outcome::Verdict(Verdict::Reject(_)) => (PamResultCode::PAM_AUTH_ERR, None),
        Outcome::Verdict(Verdict::NotApplicable(_)) => (PamResultCode::PAM_IGNORE, None),
        Outcome::Failed(Failure::Unavailable) => {
            (PamResultCode::PAM_AUTHINFO_UNAVAIL, Some(Text::Unavailable))
        }
        Outcome::Failed(Failure::Conversation) => (PamResultCode::PAM_CONV_ERR, None),
        Outcome::Failed(Failure::Internal) => (PamResultCode::PAM_SYSTEM_ERR, None),
        Outcome::BadArguments => (PamResultCode::PAM_SERVICE_ERR, None),
        Outcome::NoUser => (PamResultCode::PAM_USER_UNKNOWN, None),
        Outcome::PamFailed(code) => (code, None),
        Outcome::NoConversation => (PamResultCode::PAM_CONV_ERR, None),
        Outcome::NoConfig => (PamResultCode::PAM_SYSTEM_ERR, Some(Text::UnavailableConfig)),
        Outcome::NoEngine => (
            PamResultCode::PAM_AUTHINFO_UNAVAIL,
            Some(Text::UnavailableConfig),
        ),
        Outcome::RoundOver => (PamResultCode::PAM_MAXTRIES, Some(Text::RoundOver)),
        Outcome::Panic => (PamResultCode::PAM_SYSTEM_ERR, None),
    }
}

/// [`answer`] for an attempt that ended before the conversation existed.
fn code(outcome: Outcome) -> PamResultCode {
    answer(outcome).0
}

/// [`answer`], telling the user its text in `lang` (best effort: the code
/// stands even if the text cannot be shown).
fn tell(conv: &mut PamConversation<'_>, outcome: Outcome, lang: &Catalogue) -> PamResultCode {
    let (code, text) = answer(outcome);
    if let Some(text) = text {
        let _ = conv.error(&text.in_language(lang));
    }
    code
}

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
            code(Outcome::Panic)
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

    fn info(&mut self, text: &str) -> Result<(), ConversationError> {
        if self.silent {
            return Ok(());
        }
        self.conv
            .send(PAM_TEXT_INFO, text)
            .map(drop)
            .map_err(conversation_error)
    }

    fn error(&mut self, text: &str) -> Result<(), ConversationError> {
        self.conv
            .send(PAM_ERROR_MSG, text)
            .map(drop)
            .map_err(conversation_error)
    }

    fn ask_secret(&mut self, prompt: &str) -> Result<Zeroizing<String>, ConversationError> {
        self.ask(PAM_PROMPT_ECHO_OFF, prompt)
    }

    fn ask_text(&mut self, prompt: &str) -> Result<Zeroizing<String>, ConversationError> {
        self.ask(PAM_PROMPT_ECHO_ON, prompt)
    }
}

/// What a failed call of the application's conversation function means:
/// the user or client gave up, or the function failed. Either way the
/// login ends with PAM_CONV_ERR; the code is kept for the log.
fn conversation_error(c: PamResultCode) -> ConversationError {
    let name = format!("{c:?}");
    match c {
        PamResultCode::PAM_ABORT
        | PamResultCode::PAM_CONV_AGAIN
        | PamResultCode::PAM_INCOMPLETE => ConversationError::Gone { detail: name },
        _ => ConversationError::Failed {
            code: c as i32,
            name,
        },
    }
}

impl PamConversation<'_> {
    fn ask(
        &mut self,
        style: pam::constants::PamMessageStyle,
        prompt: &str,
    ) -> Result<Zeroizing<String>, ConversationError> {
        let reply = self.conv.send(style, prompt).map_err(conversation_error)?;
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
            return code(Outcome::BadArguments);
        }
    };
    let user = match pamh.get_user(None) {
        Ok(u) if !u.is_empty() => u,
        Ok(_) => return code(Outcome::NoUser),
        Err(e) => return code(Outcome::PamFailed(e)),
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
        Ok(None) => return code(Outcome::NoConversation),
        Err(e) => return code(Outcome::PamFailed(e)),
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
    let engine = match flow::open_from_path(&args.config, &log, &ctx) {
        Ok(e) => e,
        Err(e) => {
            let outcome = match &e {
                OpenError::Config(_) => {
                    syslog_error("config_error", &ctx.user, &ctx.service, &e.to_string());
                    Outcome::NoConfig
                }
                // Already recorded in the config's audit sinks.
                OpenError::Flow(_) => Outcome::NoEngine,
            };
            // No config, so no catalogues but the shipped ones: the
            // session's locale picks among them.
            let lang = session_locale(pamh, ctx.rhost.is_some())
                .and_then(|l| smsotp_core::messages::normalize_tag(&l))
                .and_then(|l| Catalogue::shipped(&l))
                .unwrap_or_else(Catalogue::english);
            return tell(&mut conv, outcome, lang);
        }
    };
    let mut engine = engine;
    engine.set_session_locale(session_locale(pamh, ctx.rhost.is_some()));

    if round_failed_before(pamh, &ctx.user) {
        engine.log_round_over(&ctx);
        return tell(
            &mut conv,
            Outcome::RoundOver,
            engine.catalogue_without_store(),
        );
    }

    let outcome = match flow::run(&engine, &mut conv, &ctx) {
        Ok(v) => Outcome::Verdict(v),
        Err(e) => {
            engine.log_error(&ctx, &e);
            Outcome::Failed(e.failure())
        }
    };
    let round_over =
        matches!(&outcome, Outcome::Verdict(Verdict::Reject(r)) if r.ends_code_round());
    // The store may be what failed: its texts use the language chosen
    // without it.
    let code = tell(&mut conv, outcome, engine.catalogue_without_store());
    if round_over {
        // Best effort: without it a retry only costs one more SMS.
        let _ = pamh.set_data(ROUND_FAILED, Box::new(ctx.user.clone()));
    }
    code
}

extern "C" {
    // libpam's own (linked through pam-bindings, which does not wrap it).
    fn pam_getenv(pamh: *const PamHandle, name: *const std::ffi::c_char)
        -> *const std::ffi::c_char;
}

/// The locale names looked up, first set wins.
const LOCALE_VARIABLES: [&std::ffi::CStr; 3] = [c"LC_ALL", c"LC_MESSAGES", c"LANG"];

/// The session's locale: LC_ALL, LC_MESSAGES, then LANG, the first set
/// and not "C" or "POSIX", from the PAM environment (a module before this
/// one, or the application, may put them there), else, for a local
/// session (no PAM_RHOST), from the environment the application runs
/// with (sudo and su: the user's own; a console login: the system's). A
/// remote session's process environment is the server's, not the user's
/// (sshd learns the client's LANG only after authentication), so it is
/// not read.
fn session_locale(pamh: &PamHandle, remote: bool) -> Option<String> {
    let usable = |text: String| {
        (!text.is_empty() && text != "C" && text != "POSIX" && !text.starts_with("C."))
            .then_some(text)
    };
    let from_pam = LOCALE_VARIABLES.into_iter().find_map(|name| {
        // SAFETY: `pamh` is the live handle PAM gave this call and `name`
        // a NUL-terminated string; pam_getenv returns NULL or a string
        // owned by the handle, copied here before the handle changes.
        let value = unsafe { pam_getenv(pamh, name.as_ptr()) };
        if value.is_null() {
            return None;
        }
        // SAFETY: non-NULL, NUL-terminated (as above).
        usable(
            unsafe { CStr::from_ptr(value) }
                .to_string_lossy()
                .into_owned(),
        )
    });
    if from_pam.is_some() || remote {
        return from_pam;
    }
    LOCALE_VARIABLES.into_iter().find_map(|name| {
        let name = name.to_str().ok()?;
        std::env::var_os(name).and_then(|v| usable(v.to_string_lossy().into_owned()))
    })
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
    fn a_conversation_that_fails_keeps_its_pam_code_and_still_ends_in_conv_err() {
        assert_eq!(
            conversation_error(PamResultCode::PAM_ABORT),
            ConversationError::Gone {
                detail: "PAM_ABORT".into()
            }
        );
        let e = conversation_error(PamResultCode::PAM_CONV_ERR);
        assert_eq!(
            e,
            ConversationError::Failed {
                code: 19,
                name: "PAM_CONV_ERR".into()
            }
        );
        // The log text is the code's name, as before.
        assert_eq!(e.to_string(), "PAM_CONV_ERR");
        assert_eq!(
            code(Outcome::Failed(flow::FlowError::Conversation(e).failure())),
            PamResultCode::PAM_CONV_ERR
        );
    }

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
    fn each_outcome_has_its_pam_code_and_text() {
        use smsotp_core::flow::{Accept, Reject, Skip};
        let cases = [
            (
                Outcome::Verdict(Verdict::Accept(Accept::CodeVerified)),
                PamResultCode::PAM_SUCCESS,
                None,
            ),
            (
                Outcome::Verdict(Verdict::Reject(Reject::WrongCode)),
                PamResultCode::PAM_AUTH_ERR,
                None,
            ),
            (
                Outcome::Verdict(Verdict::NotApplicable(Skip::ExemptUser)),
                PamResultCode::PAM_IGNORE,
                None,
            ),
            (
                Outcome::Failed(Failure::Unavailable),
                PamResultCode::PAM_AUTHINFO_UNAVAIL,
                Some("SMS login is not available right now. Contact your administrator."),
            ),
            (
                Outcome::Failed(Failure::Conversation),
                PamResultCode::PAM_CONV_ERR,
                None,
            ),
            (
                Outcome::Failed(Failure::Internal),
                PamResultCode::PAM_SYSTEM_ERR,
                None,
            ),
            (Outcome::BadArguments, PamResultCode::PAM_SERVICE_ERR, None),
            (Outcome::NoUser, PamResultCode::PAM_USER_UNKNOWN, None),
            (
                Outcome::PamFailed(PamResultCode::PAM_BUF_ERR),
                PamResultCode::PAM_BUF_ERR,
                None,
            ),
            (Outcome::NoConversation, PamResultCode::PAM_CONV_ERR, None),
            (
                Outcome::NoConfig,
                PamResultCode::PAM_SYSTEM_ERR,
                Some("SMS login is not available (configuration problem). Contact your administrator."),
            ),
            (
                Outcome::NoEngine,
                PamResultCode::PAM_AUTHINFO_UNAVAIL,
                Some("SMS login is not available (configuration problem). Contact your administrator."),
            ),
            (
                Outcome::RoundOver,
                PamResultCode::PAM_MAXTRIES,
                Some("The SMS code was not accepted; no new code is sent for this attempt. Start again to get one."),
            ),
            (Outcome::Panic, PamResultCode::PAM_SYSTEM_ERR, None),
        ];
        for (outcome, want_code, want_text) in cases {
            let what = format!("{outcome:?}");
            let (got_code, got_text) = answer(outcome);
            assert_eq!(got_code, want_code, "{what}");
            let got_text = got_text.map(|t| t.in_language(Catalogue::english()));
            assert_eq!(got_text.as_deref(), want_text, "{what}");
        }
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
