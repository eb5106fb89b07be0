//! After a delivery receipt: the same code, once, through the next
//! provider.
//!
//! When an engine has a [`ReceiptSink`] (smsotp-radiusd sets one; the PAM
//! module never does, as nothing inside sshd could wait for a receipt),
//! every code a provider took with an id a receipt will name (SMPP's
//! `submit_sm_resp` message id) is handed to it as a [`SentCode`]. The
//! sink keeps it in memory, never on disk. When a receipt says the SMS
//! failed, the front end calls [`Engine::resend_after_receipt`], which
//! decides here, by the same rule as a typed answer (`code_opens`), whether
//! the code is still open, and only then sends it again through the
//! provider after the one that took it.

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::machine::code_opens;
use super::outcome::Limit;
use super::{Engine, FlowError, LoginContext};
use crate::audit::Level;
use crate::clock::Millis;
use crate::config::MessageValues;
use crate::otp::ChallengeId;
use crate::phone::{MaskedPhone, Phone};
use crate::sms::smpp::ReceiptState;
use crate::sms::{SendError, Sms};
use crate::store::limits::{LimitKind, LimitMode};
use crate::store::Step;

/// A code a provider took, with the id its receipt will name. It holds
/// the code: it prints without it and wipes it on drop.
pub struct SentCode {
    /// The id the provider gave the message (SMPP `message_id`).
    pub message_id: String,
    /// The provider's place in `[[provider]]` order.
    pub provider_index: usize,
    /// The provider's name.
    pub provider: String,
    /// The challenge the code belongs to.
    pub challenge: ChallengeId,
    /// Whose login, for which service, from where.
    pub login: LoginContext,
    /// The number it went to.
    pub phone: Phone,
    /// The code itself; never written anywhere.
    pub code: Zeroizing<String>,
    /// When it was sent (engine clock).
    pub sent_at: Millis,
    /// How long the code lives from `sent_at` (`otp.ttl`): no use holding
    /// it longer.
    pub valid_for: std::time::Duration,
}

impl fmt::Debug for SentCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentCode")
            .field("message_id", &self.message_id)
            .field("provider", &self.provider)
            .field("challenge", &self.challenge)
            .field("user", &self.login.user)
            .field("phone", &self.phone.masked())
            .field("code", &"[redacted]")
            .field("sent_at", &self.sent_at)
            .finish()
    }
}

/// Where an engine hands the codes whose receipts someone waits for.
pub trait ReceiptSink: Send + Sync {
    /// `code` was taken by its provider; its receipt may come later.
    fn sent(&self, code: SentCode);
    /// Challenge `id` was decided (its code used): forget its codes.
    fn done(&self, id: &ChallengeId) {
        let _ = id;
    }
}

/// What [`Engine::resend_after_receipt`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReceiptResend {
    /// Sent again through this provider.
    Resent(String),
    /// The code was used, replaced, withdrawn or expired, or the user is
    /// locked out: nothing sent.
    NotOpen,
    /// No provider after the one that took it: logged only.
    NoNextProvider,
    /// The next provider did not take it (logged).
    Failed(SendError),
    /// A limit or the spend breaker refused the second SMS (logged): it
    /// costs what any SMS does, so it is counted as one.
    Limited(Limit),
}

impl Engine {
    /// Lets this engine hand sent codes to `sink` (smsotp-radiusd).
    pub fn set_receipt_sink(&mut self, sink: Arc<dyn ReceiptSink>) {
        self.receipts = Some(sink);
    }

    /// Tells the sink, if any, that `provider_index` took `code` for
    /// challenge `id` as message `message_id`.
    pub(super) fn note_sent(
        &self,
        ctx: &LoginContext,
        id: &ChallengeId,
        phone: &Phone,
        code: &str,
        sent: Option<(usize, String)>,
    ) {
        let (Some(sink), Some((provider_index, message_id))) = (&self.receipts, sent) else {
            return;
        };
        let provider = self
            .providers
            .get(provider_index)
            .map(|p| p.name().to_owned())
            .unwrap_or_default();
        sink.sent(SentCode {
            message_id,
            provider_index,
            provider,
            challenge: *id,
            login: ctx.clone(),
            phone: phone.clone(),
            code: Zeroizing::new(code.to_owned()),
            sent_at: self.now(),
            valid_for: self.cfg.otp.ttl,
        });
    }

    /// Tells the sink, if any, that challenge `id` is decided.
    pub(super) fn note_done(&self, id: &ChallengeId) {
        if let Some(sink) = &self.receipts {
            sink.done(id);
        }
    }

    /// A receipt said `sent` failed with `state`: sends the same code once
    /// through the provider after the one that took it, if the code is
    /// still the challenge's, unused, unexpired and the user not locked
    /// out. The caller makes sure it is called at most once per code.
    pub fn resend_after_receipt(
        &self,
        sent: &SentCode,
        state: ReceiptState,
    ) -> Result<ReceiptResend, FlowError> {
        let ctx = &sent.login;
        let now = self.now();
        let st = self.store.answer_state(&sent.challenge, &ctx.user, now)?;
        let Some(rec) = st.challenge else {
            return Ok(ReceiptResend::NotOpen);
        };
        let step = match rec.step {
            s @ (Step::Code | Step::EnrollCode) => s,
            _ => return Ok(ReceiptResend::NotOpen),
        };
        let locked = st.locked_until.is_some_and(|u| u > now);
        let mac = self
            .key
            .mac(&sent.challenge, &ctx.user, &ctx.service, &sent.code);
        if !code_opens(&rec, ctx, step, locked, &mac, now) {
            return Ok(ReceiptResend::NotOpen);
        }
        let detail = |more: &str| {
            format!(
                "from={} state={} message_id={}{more}",
                sent.provider, state, sent.message_id
            )
        };
        let next_index = sent.provider_index + 1;
        let Some(next) = self.providers.get(next_index) else {
            let mut e = self.event(ctx, "receipt_failed");
            e.phone = Some(MaskedPhone::of(&sent.phone));
            e.provider = Some(sent.provider.clone());
            e.detail = Some(detail("; no provider after it to send the code again"));
            self.log(Level::Warning, &e);
            return Ok(ReceiptResend::NoNextProvider);
        };
        // The second SMS is paid for like any other: it counts against
        // every window and the breaker, which may refuse it. The user did
        // not ask for it (it stands in for one that never arrived), so it
        // does not wait for the back-off; it still counts in the streak.
        let mut limits = self.send_limits(ctx, &sent.phone);
        if let Some((_, mode)) = &mut limits.backoff {
            *mode = LimitMode::Monitor;
        }
        let mut decision = self.store.reserve_sends(&ctx.user, now, &limits)?;
        decision.monitored.retain(|&k| {
            k != LimitKind::Backoff
                || self.cfg.limits.mode(LimitKind::Backoff) == LimitMode::Monitor
        });
        if let Some(limit) = self.limited(ctx, &decision, &sent.phone, now)? {
            let mut e = self.event(ctx, "receipt_failed");
            e.phone = Some(MaskedPhone::of(&sent.phone));
            e.provider = Some(sent.provider.clone());
            e.limit = Some(limit.key());
            e.detail = Some(detail(&format!(
                "; not sent again: {}",
                self.limit_detail(limit)
            )));
            self.log(Level::Warning, &e);
            return Ok(ReceiptResend::Limited(limit));
        }
        self.durable_before_sending()?;
        let lang = self.catalogue_given(&ctx.user, &sent.phone);
        let text = lang.sms().render_in(
            &MessageValues {
                code: &sent.code,
                host: &self.host,
                ttl: self.cfg.otp.ttl,
                user: &ctx.user,
                service: &ctx.service,
            },
            lang,
        );
        let r = next.send_tracked(&Sms {
            to: &sent.phone,
            text: &text,
        });
        self.count_receipt_resend(ctx, &sent.phone, next.name(), r.is_ok());
        match r {
            Ok(_) => {
                let mut e = self.event(ctx, "resent_after_receipt");
                e.phone = Some(MaskedPhone::of(&sent.phone));
                e.provider = Some(next.name().to_owned());
                e.segments = self
                    .cfg
                    .providers
                    .iter()
                    .find(|p| p.name() == next.name())
                    .map(|p| p.segments(&text));
                e.detail = Some(detail(""));
                self.log(Level::Warning, &e);
                Ok(ReceiptResend::Resent(next.name().to_owned()))
            }
            Err(err) => {
                let mut e = self.event(ctx, "send_failed");
                e.phone = Some(MaskedPhone::of(&sent.phone));
                e.provider = Some(next.name().to_owned());
                e.detail = Some(detail(&format!("; {err}")));
                self.log(Level::Error, &e);
                Ok(ReceiptResend::Failed(err))
            }
        }
    }
}
