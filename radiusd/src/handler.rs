//! One Access-Request in, one decision out. No sockets, no secrets, no
//! duplicate cache: those belong to the server loop. The login rules are
//! the core's ([`Engine::start`], [`Engine::answer`]), and so are the
//! texts; this module only translates between packets and those calls.
//! Whatever a request comes to, an [`Outcome`], becomes a [`Decision`] in
//! one place, [`reply`].

use std::net::IpAddr;
use std::time::Duration;

use smsotp_core::config::ClientMode;
use smsotp_core::flow::{texts, Answer, ChallengeInfo, Expired, Failure, Start, Verdict};
use smsotp_core::messages::Catalogue;
use smsotp_core::otp::ChallengeId;
use smsotp_core::{Engine, LoginContext};

use crate::primary::PrimaryAuth;
use crate::wire::{Request, RequestCode};

/// What to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept {
        message: Option<String>,
    },
    Reject {
        message: Option<String>,
    },
    Challenge {
        state: [u8; 16],
        message: String,
        session_timeout: u32,
    },
}

impl Decision {
    /// The decision in one word, as logs name it.
    pub fn word(&self) -> &'static str {
        match self {
            Decision::Accept { .. } => "accept",
            Decision::Reject { .. } => "reject",
            Decision::Challenge { .. } => "challenge",
        }
    }
}

/// The NAS a request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub name: String,
    pub mode: ClientMode,
}

/// Everything a request can come to, before it is an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A Status-Server: the server is alive.
    Alive,
    /// Refused without a word, so the answer never hints whether the
    /// account exists: no user name worth looking up, a wrong password, a
    /// State we never sent.
    Refused,
    /// The core's verdict.
    Verdict(Verdict),
    /// A challenge is open; the text says what to type.
    Challenge(ChallengeInfo, String),
    /// Append mode: this request is rejected with the text, and the user
    /// logs in again with the code typed after the password.
    LogInAgain(String),
    /// The login could not be decided.
    Failed(Broken),
}

/// Why a login could not be decided. Each fails closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The core failed (store, directory, randomness, …).
    Login(Failure),
    /// The engine could not be opened (the key, the store).
    NoEngine,
    /// Handling the request panicked.
    Panic,
    /// The decision was logged but the store rolled back what it relied
    /// on (a consumed code, a new challenge), so it does not stand.
    RolledBack,
}

/// The one mapping from what a request came to, to the RADIUS answer,
/// in English (before an engine, and so a language, exists).
pub fn reply(outcome: Outcome) -> Decision {
    reply_in(outcome, Catalogue::english())
}

/// [`reply`] with the texts in `lang`.
pub fn reply_in(outcome: Outcome, lang: &Catalogue) -> Decision {
    match outcome {
        Outcome::Alive => Decision::Accept { message: None },
        Outcome::Refused => Decision::Reject { message: None },
        Outcome::Verdict(Verdict::Accept(a)) => Decision::Accept {
            message: a.user_message_in(lang),
        },
        // Exempt users have passed the first factor (ours or the NAS's).
        Outcome::Verdict(Verdict::NotApplicable(_)) => Decision::Accept { message: None },
        Outcome::Verdict(Verdict::Reject(r)) => Decision::Reject {
            message: Some(r.user_message_in(lang)),
        },
        Outcome::Challenge(info, message) => challenge(&info, message),
        Outcome::LogInAgain(message) => Decision::Reject {
            message: Some(message),
        },
        Outcome::Failed(
            Broken::Login(Failure::Unavailable | Failure::Conversation | Failure::Internal)
            | Broken::NoEngine
            | Broken::Panic
            | Broken::RolledBack,
        ) => Decision::Reject {
            message: Some(texts::unavailable_in(lang)),
        },
    }
}

/// Decides the answer to one request.
pub fn handle(
    engine: &Engine,
    primary: &dyn PrimaryAuth,
    client: &ClientInfo,
    req: &Request,
    from: IpAddr,
) -> Decision {
    // The language is looked up only for a request that shows a text to
    // a known user: an exempt user's login, or a refused password, reads
    // nothing for it.
    let outcome = decide(engine, primary, client, req, from);
    let lang = match (&outcome, login_context(&client.name, req, from)) {
        (Outcome::Verdict(v), _) if !v.has_text() => Catalogue::english(),
        (Outcome::Alive | Outcome::Refused, _) | (_, None) => Catalogue::english(),
        // The store may be what failed: the default language, unread.
        (Outcome::Failed(_), Some(_)) => engine.catalogue_without_store(),
        (Outcome::Verdict(_), Some(ctx)) => engine.catalogue_for(&ctx.user),
        // Their texts are already in the user's language.
        (Outcome::Challenge(..) | Outcome::LogInAgain(_), Some(_)) => Catalogue::english(),
    };
    reply_in(outcome, lang)
}

/// What one request comes to.
fn decide(
    engine: &Engine,
    primary: &dyn PrimaryAuth,
    client: &ClientInfo,
    req: &Request,
    from: IpAddr,
) -> Outcome {
    if req.code == RequestCode::StatusServer {
        return Outcome::Alive;
    }
    let Some(ctx) = login_context(&client.name, req, from) else {
        return Outcome::Refused;
    };
    let password: &[u8] = req.user_password.as_deref().map_or(&[], |p| p.as_slice());
    let result = match (&req.state, client.mode) {
        (Some(state), _) => answer_state(engine, &ctx, state, password),
        (None, ClientMode::Challenge) => {
            first_round(engine, primary, &ctx, password, &req.authenticator)
        }
        (None, ClientMode::Append) => append(engine, primary, &ctx, password),
    };
    result.unwrap_or_else(|e| {
        engine.log_error(&ctx, &e);
        Outcome::Failed(Broken::Login(e.failure()))
    })
}

/// The login a request is about, as the core and the log name it: `None`
/// without a user name worth looking up.
pub(crate) fn login_context(client: &str, req: &Request, from: IpAddr) -> Option<LoginContext> {
    let user = req
        .user_name
        .as_deref()
        .map(str::trim)
        .filter(|u| valid_user(u))?;
    Some(LoginContext {
        user: user.to_owned(),
        service: format!("radius:{client}"),
        rhost: req
            .calling_station_id
            .clone()
            .or_else(|| Some(req.nas_ip_address.unwrap_or(from).to_string())),
    })
}

/// A user name worth looking up: printable, no path or field separators.
fn valid_user(u: &str) -> bool {
    !u.is_empty() && u.len() <= 256 && !u.chars().any(|c| c.is_control() || c == ':' || c == '/')
}

type Flow<T> = Result<T, smsotp_core::flow::FlowError>;

/// Checks the password; the core logs a failure, and the answer gives no
/// hint whether the user exists.
fn password_ok(
    engine: &Engine,
    primary: &dyn PrimaryAuth,
    ctx: &LoginContext,
    password: &[u8],
) -> bool {
    engine.first_factor(ctx, primary.check(&ctx.user, password))
}

fn first_round(
    engine: &Engine,
    primary: &dyn PrimaryAuth,
    ctx: &LoginContext,
    password: &[u8],
    authenticator: &[u8; 16],
) -> Flow<Outcome> {
    if !password_ok(engine, primary, ctx, password) {
        return Ok(Outcome::Refused);
    }
    // Keyed by the Request Authenticator: a retransmit the duplicate cache
    // no longer knows (the server restarted) gets the same challenge, not
    // a second SMS.
    Ok(match engine.start_for_request(ctx, authenticator)? {
        Start::Challenge(info) => {
            let message = info.intro_with_tries_in(engine.catalogue_for(&ctx.user));
            Outcome::Challenge(info, message)
        }
        Start::Done(v) => Outcome::Verdict(v),
    })
}

fn answer_state(engine: &Engine, ctx: &LoginContext, state: &[u8], code: &[u8]) -> Flow<Outcome> {
    let Ok(id) = <[u8; 16]>::try_from(state) else {
        // Not a State we ever sent: logged as an unknown one.
        engine.reject_malformed_challenge(ctx);
        return Ok(Outcome::Refused);
    };
    let code = String::from_utf8_lossy(code);
    Ok(
        match engine.answer_with(ctx, &ChallengeId(id), &code, Expired::Reject)? {
            Answer::Done(v) => Outcome::Verdict(v),
            Answer::Retry(r, info) => {
                Outcome::Challenge(info, r.user_message_in(engine.catalogue_for(&ctx.user)))
            }
        },
    )
}

/// For NASes that cannot do challenges: the password alone sends a code
/// and is rejected ("Code sent"); password followed by the code logs in.
fn append(
    engine: &Engine,
    primary: &dyn PrimaryAuth,
    ctx: &LoginContext,
    field: &[u8],
) -> Flow<Outcome> {
    if let Some(pending) = engine.pending(ctx)? {
        let code_len = engine.appended_code_len(&pending, field);
        if field.len() >= code_len && (field.len() > code_len || !primary.checks_password()) {
            let (password, code) = field.split_at(field.len() - code_len);
            if password_ok(engine, primary, ctx, password) {
                let code = String::from_utf8_lossy(code);
                return Ok(
                    match engine.answer_with(ctx, &pending.id, &code, Expired::Reject)? {
                        Answer::Done(v) => Outcome::Verdict(v),
                        Answer::Retry(r, _) => Outcome::LogInAgain(
                            r.appended_message_in(engine.catalogue_for(&ctx.user)),
                        ),
                    },
                );
            }
            // Perhaps the whole field is the password (a fresh attempt):
            // fall through, checking it as such.
        }
    }
    if !password_ok(engine, primary, ctx, field) {
        return Ok(Outcome::Refused);
    }
    Ok(match engine.start_appended(ctx)? {
        Start::Challenge(info) => {
            Outcome::LogInAgain(info.appended_message_in(engine.catalogue_for(&ctx.user)))
        }
        Start::Done(v) => Outcome::Verdict(v),
    })
}

fn challenge(info: &ChallengeInfo, message: String) -> Decision {
    // Session-Timeout: how long the NAS should wait for the answer, which is
    // the code's remaining life (at least one second).
    let secs = info.expires_in.max(Duration::from_secs(1)).as_secs();
    Decision::Challenge {
        state: info.id.0,
        message,
        session_timeout: u32::try_from(secs).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
#[path = "handler_tests.rs"]
mod tests;
