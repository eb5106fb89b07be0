//! The interactive loop (PAM): start, then prompt and answer until a
//! verdict, telling the user each step in the words of [`super::texts`].

use zeroize::Zeroizing;

use super::{Answer, Engine, FlowError, LoginContext, Reject, Start, Verdict};
use crate::messages::Catalogue;
use crate::otp::ChallengeId;
use crate::phone::MaskedPhone;

/// Why the conversation with the user broke. Every case ends the login
/// closed, with the challenge abandoned (a PAM front end answers
/// PAM_CONV_ERR for each); the cases differ in what the log tells an
/// admin: nothing to fix on this host, or an application whose
/// conversation function fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConversationError {
    /// The user or client went away or gave up before answering: end of
    /// input, a hung-up connection, an aborted prompt (PAM_ABORT,
    /// PAM_CONV_AGAIN, PAM_INCOMPLETE). `detail` is how the front end
    /// learnt it (for PAM, the return code's name).
    #[error("{detail}")]
    Gone {
        /// How the front end learnt it, for the log ("PAM_ABORT").
        detail: String,
    },
    /// The application's conversation function failed.
    #[error("{name}")]
    Failed {
        /// The front end's own error code, kept as it came (for PAM, the
        /// return code: 19 is PAM_CONV_ERR).
        code: i32,
        /// That code's name, for the log ("PAM_CONV_ERR").
        name: String,
    },
}

/// How an interactive front end talks to the user (the PAM conversation).
pub trait Conversation {
    /// Shows `text` as information (PAM_TEXT_INFO); a front end that hides
    /// information (PAM_SILENT) drops it and says so in
    /// [`Conversation::shows_info`].
    fn info(&mut self, text: &str) -> Result<(), ConversationError>;
    /// Shows `text` as an error message (PAM_ERROR_MSG), always.
    fn error(&mut self, text: &str) -> Result<(), ConversationError>;
    /// Whether [`Conversation::info`] reaches the user. When not (PAM_SILENT),
    /// the code prompt itself names the phone the code went to.
    fn shows_info(&self) -> bool {
        true
    }
    /// An echo-off prompt; the answer is zeroized when dropped.
    fn ask_secret(&mut self, prompt: &str) -> Result<Zeroizing<String>, ConversationError>;
    /// An echo-on prompt (a phone number to enroll).
    fn ask_text(&mut self, prompt: &str) -> Result<Zeroizing<String>, ConversationError>;
}

/// Consecutive empty answers that cannot bring a new code before the login
/// ends.
const MAX_IDLE_ANSWERS: u32 = 3;
/// Runs a whole login through `conv`: send, ask, verify, resend, until a
/// verdict. The number of prompts is bounded so a client cannot hold the
/// login open forever.
pub fn run(
    engine: &Engine,
    conv: &mut dyn Conversation,
    ctx: &LoginContext,
) -> Result<Verdict, FlowError> {
    let mut current = match engine.start(ctx)? {
        Start::Done(v) => {
            if v.has_text() {
                tell_verdict(conv, &v, engine.catalogue_for(&ctx.user));
            }
            return Ok(v);
        }
        Start::Challenge(c) => c,
    };
    // Chosen once the login needs state anyway (an exempt user's login
    // reads nothing), and kept for the whole conversation.
    let lang = engine.catalogue_for(&ctx.user);
    let id = current.id;
    conv.info(&current.intro_in(lang))
        .map_err(|e| conversation_failed(engine, ctx, &id, e))?;
    let otp = &engine.cfg.otp;
    // Enrollment adds a number prompt (with its own tries) before the code.
    let max_prompts =
        (otp.max_attempts.get() + 2) * (otp.resend_max + 1) + otp.max_attempts.get() + 7;
    let mut idle = 0;
    for _ in 0..max_prompts {
        let prompt = if conv.shows_info() {
            current.prompt_in(lang).to_owned()
        } else {
            current.prompt_naming_phone_in(lang)
        };
        let input = if current.echo() {
            conv.ask_text(&prompt)
        } else {
            conv.ask_secret(&prompt)
        }
        .map_err(|e| conversation_failed(engine, ctx, &id, e))?;
        match engine.answer(ctx, &id, &input)? {
            Answer::Done(v) => {
                tell_verdict(conv, &v, lang);
                return Ok(v);
            }
            Answer::Retry(r, info) => {
                // A client that only sends empty answers (or hit end of
                // input) is not kept waiting for ever.
                idle = if r.is_idle() { idle + 1 } else { 0 };
                if idle > MAX_IDLE_ANSWERS {
                    engine.abandon(ctx, &id, "only empty answers");
                    let shown = MaskedPhone::from_stored(&info.phone_masked);
                    let v = engine.finish(ctx, Verdict::Reject(Reject::NoCodeEntered), shown);
                    tell_verdict(conv, &v, lang);
                    return Ok(v);
                }
                let msg = r.user_message_in(lang);
                let sent = if r.is_info() {
                    conv.info(&msg)
                } else {
                    conv.error(&msg)
                };
                sent.map_err(|e| conversation_failed(engine, ctx, &id, e))?;
                current = info;
            }
        }
    }
    engine.abandon(ctx, &id, "too many prompts");
    let shown = MaskedPhone::from_stored(&current.phone_masked);
    let v = engine.finish(ctx, Verdict::Reject(Reject::WrongCode), shown);
    tell_verdict(conv, &v, lang);
    Ok(v)
}

fn conversation_failed(
    engine: &Engine,
    ctx: &LoginContext,
    id: &ChallengeId,
    e: ConversationError,
) -> FlowError {
    engine.abandon(ctx, id, &format!("conversation failed: {e}"));
    FlowError::Conversation(e)
}

fn tell_verdict(conv: &mut dyn Conversation, v: &Verdict, lang: &Catalogue) {
    // Best effort: the verdict stands even if the message cannot be shown.
    match v {
        Verdict::Reject(r) => {
            let _ = conv.error(&r.user_message_in(lang));
        }
        Verdict::Accept(a) => {
            if let Some(m) = a.user_message_in(lang) {
                let _ = conv.info(&m);
            }
        }
        Verdict::NotApplicable(_) => {}
    }
}
