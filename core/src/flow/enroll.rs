//! Enrollment's middle step: the user typed a number at the
//! `no_phone = "enroll"` prompt; check it and send a code to it. The start
//! (an [`Step::EnrollNumber`] challenge) and the end (the code that
//! registers the number) are in the state machine (`machine.rs`).

use super::{Answer, Engine, FlowError, LoginContext, Reject, Retry, Step, Verdict};
use crate::audit::Level;
use crate::clock::{ms, Millis};
use crate::otp;
use crate::phone::{MaskedPhone, Phone};
use crate::store::ChallengeRecord;

impl Engine {
    /// Enrollment: the user typed a number. Check it, send a code to it.
    pub(super) fn enroll_number(
        &self,
        ctx: &LoginContext,
        rec: &ChallengeRecord,
        input: &str,
        now: Millis,
    ) -> Result<Answer, FlowError> {
        let refused = |retry: Retry, last: Reject| -> Result<Answer, FlowError> {
            // Bad numbers use up the challenge's tries (not the lockout
            // count: they are no guess at a secret).
            let mut e = self.event(ctx, "enroll_bad_number");
            e.detail = Some(retry.user_message());
            self.log(Level::Info, &e);
            match self.store.wrong_attempt(&rec.id)? {
                Some(n) if n > 0 => {
                    let mut info = self.info(rec, now);
                    info.attempts_left = n;
                    Ok(Answer::Retry(retry, info))
                }
                _ => Ok(Answer::Done(self.finish(ctx, Verdict::Reject(last), None))),
            }
        };
        let phone = match Phone::parse(input, self.cfg.phone.default_region) {
            Ok(p) => p,
            Err(e) => return refused(Retry::BadNumber(e.to_string()), Reject::NoPhone),
        };
        if !phone.allowed(&self.cfg.phone) {
            return refused(Retry::CountryNotAllowed, Reject::CountryNotAllowed);
        }
        let masked = phone.masked();
        let give_up = |v: Reject| -> Result<Answer, FlowError> {
            self.store.delete_challenge(&rec.id)?;
            Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(v),
                Some(MaskedPhone::of(&phone)),
            )))
        };
        // A number registered since the login began (by an admin) is not
        // for a login to replace: start again with it.
        if self.find_phone(&ctx.user)?.is_some() {
            return give_up(Reject::UnknownChallenge);
        }
        let decision = self
            .store
            .reserve_sends(&ctx.user, now, &self.send_limits(ctx, &phone))?;
        if let Some(limit) = self.limited(ctx, &decision, &phone, now)? {
            return give_up(Reject::RateLimited(limit));
        }
        let code = otp::generate(&*self.rng, self.cfg.otp.length, self.cfg.otp.alphabet)?;
        let mac = self
            .key
            .mac(&rec.id, &ctx.user, &ctx.service, code.as_str());
        let expires_at = now + ms(self.cfg.otp.ttl);
        let attempts = self.cfg.otp.max_attempts.get();
        if !self
            .store
            .enroll_number(&rec.id, phone.e164(), &mac, now, expires_at, attempts)?
        {
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::UnknownChallenge),
                None,
            )));
        }
        if let Some(v) = self.deliver(ctx, &rec.id, &phone, code.as_str(), "enroll_code_sent")? {
            self.store.delete_challenge(&rec.id)?;
            return Ok(Answer::Done(self.finish(
                ctx,
                v,
                Some(MaskedPhone::of(&phone)),
            )));
        }
        let updated = ChallengeRecord {
            phone_masked: masked.clone(),
            sent_at: now,
            expires_at,
            attempts_left: attempts,
            step: Step::EnrollCode,
            pending_phone: Some(phone.e164().to_owned()),
            ..rec.clone()
        };
        Ok(Answer::Retry(
            Retry::EnrollCodeSent {
                phone_masked: masked,
            },
            self.info(&updated, now),
        ))
    }
}
