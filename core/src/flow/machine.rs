//! The state machine: [`Engine::start`] opens a challenge (or ends the
//! login at once), [`Engine::answer`] takes each reply: the code, a backup
//! code, an empty line for a new code, or a number to enroll.

use std::time::Duration;

use super::at_once::Early;
use super::{
    Accept, Answer, ChallengeInfo, Engine, Expired, FlowError, Limit, LoginContext, Reason, Reject,
    Retry, Skip, Start, Step, Verdict,
};
use crate::audit::Level;
use crate::backup::{self, Redeemed};
use crate::clock::{ms, Millis};
use crate::config::{MessageValues, NoPhone, ProviderDown};
use crate::otp::{self, ChallengeId};
use crate::phone::{MaskedPhone, Phone};
use crate::sms::{self, ChainOutcome, ProviderSpec, Sms};
use crate::store::limits::SendDecision;
use crate::store::ChallengeRecord;

/// How [`Engine::start_with`] names a new challenge.
#[derive(Debug, Clone, Copy)]
pub(super) enum Ids {
    /// 128 random bits: the challenge id travels to the user (a RADIUS
    /// State, a PAM conversation).
    Random,
    /// [`crate::otp::OtpKey::login_id`]: found again by user and service alone.
    PerLogin,
    /// [`crate::otp::OtpKey::request_id`] of this request key: a repeat of
    /// the request finds the challenge its first copy opened.
    ForRequest([u8; 16]),
}

/// What an answer that comes after the code expired gets.
/// The code-acceptance rule, stated once: a code opens challenge `rec`
/// when the challenge is `ctx`'s user's for `ctx`'s service, waits for a
/// code of kind `step`, has not expired at `now`, holds the MAC of what was
/// typed (`mac`, compared in constant time), and the user is not locked
/// out. [`Engine::answer_with`] asks it; [`Store::consume_code`] is its
/// atomic implementation for [`Step::Code`] (the check and the delete in
/// one transaction, in SQL), and the test
/// `consume_code_agrees_with_the_rule` holds the two to the same answers.
///
/// [`Store::consume_code`]: crate::store::Store::consume_code
pub(crate) fn code_opens(
    rec: &ChallengeRecord,
    ctx: &LoginContext,
    step: Step,
    locked: bool,
    mac: &[u8; 32],
    now: Millis,
) -> bool {
    rec.user == ctx.user
        && rec.service == ctx.service
        && rec.step == step
        && now < rec.expires_at
        && !locked
        && otp::macs_equal(mac, &rec.code_mac)
}

impl Engine {
    /// Step one: decide whether the user needs a code, and send it.
    pub fn start(&self, ctx: &LoginContext) -> Result<Start, FlowError> {
        self.start_with(ctx, Ids::Random)
    }

    /// [`Engine::start`] for a request that may come again (a RADIUS
    /// Access-Request, retransmitted by its NAS until answered):
    /// `request_key` (the Request Authenticator) names the challenge. A
    /// repeat while that challenge is open for this user and service,
    /// as after a restart that lost the server's duplicate cache, gets the
    /// same challenge back and sends no second SMS.
    pub fn start_for_request(
        &self,
        ctx: &LoginContext,
        request_key: &[u8; 16],
    ) -> Result<Start, FlowError> {
        self.start_with(ctx, Ids::ForRequest(*request_key))
    }

    /// [`Engine::start`] for front ends that cannot carry the challenge id
    /// between rounds: the challenge gets the one id of this user and
    /// service ([`crate::otp::OtpKey::login_id`]), replacing any pending one, and
    /// [`Engine::pending`] finds it.
    pub fn start_one_per_login(&self, ctx: &LoginContext) -> Result<Start, FlowError> {
        self.start_with(ctx, Ids::PerLogin)
    }

    /// [`Engine::start_one_per_login`] for a front end that takes the code
    /// typed after the password (RADIUS append mode). Such a front end
    /// cannot hold the enrollment dialogue (a number, then a code), so a
    /// login that would enroll is abandoned (logged as such) and ends as
    /// [`Reject::NoPhone`].
    pub fn start_appended(&self, ctx: &LoginContext) -> Result<Start, FlowError> {
        match self.start_one_per_login(ctx)? {
            Start::Challenge(info) if info.step == Step::EnrollNumber => {
                self.abandon(ctx, &info.id, "enrollment needs challenge mode");
                Ok(Start::Done(Verdict::Reject(Reject::NoPhone)))
            }
            started => Ok(started),
        }
    }

    /// How many bytes at the end of `field` (a password with the answer to
    /// `pending` typed after it) are that answer: a backup code by its
    /// shape ([`backup::appended_len`]), else an SMS code of the configured
    /// length.
    pub fn appended_code_len(&self, pending: &ChallengeInfo, field: &[u8]) -> usize {
        backup::appended_len(field, pending.step == Step::BackupOnly).unwrap_or(self.cfg.otp.length)
    }

    fn new_id(&self, ctx: &LoginContext, ids: Ids) -> Result<ChallengeId, FlowError> {
        Ok(match ids {
            Ids::Random => ChallengeId::random(&*self.rng)?,
            Ids::PerLogin => self.key.login_id(&ctx.user, &ctx.service),
            Ids::ForRequest(k) => self.key.request_id(&ctx.user, &ctx.service, &k),
        })
    }

    fn start_with(&self, ctx: &LoginContext, ids: Ids) -> Result<Start, FlowError> {
        self.forget_stored_language();
        let policy = &self.cfg.policy;
        if policy.exempt_users.contains(&ctx.user) {
            return Ok(Start::Done(self.finish(
                ctx,
                Verdict::NotApplicable(Skip::ExemptUser),
                None,
            )));
        }
        if !policy.exempt_groups.is_empty() {
            let groups = self
                .accounts
                .groups(&ctx.user)
                .map_err(|source| FlowError::Accounts {
                    user: ctx.user.clone(),
                    source,
                })?;
            if groups.iter().any(|g| policy.exempt_groups.contains(g)) {
                return Ok(Start::Done(self.finish(
                    ctx,
                    Verdict::NotApplicable(Skip::ExemptGroup),
                    None,
                )));
            }
        }
        if policy.opt_out_honoured() && self.store.opt_out(&ctx.user)?.is_some() {
            return Ok(Start::Done(self.finish(
                ctx,
                Verdict::NotApplicable(Skip::OptedOut),
                None,
            )));
        }
        let now = self.now();
        let request = match ids {
            Ids::ForRequest(k) => Some(self.key.request_id(&ctx.user, &ctx.service, &k)),
            Ids::Random | Ids::PerLogin => None,
        };
        let (state, lookup) = match self.start_at_once(ctx, ids, now)? {
            Early::Done(start) => return Ok(start),
            Early::Read { state, lookup } => (state, lookup),
        };
        let state = match state {
            Some(state) => *state,
            None => self.store.login_state(&ctx.user, now, request.as_ref())?,
        };
        self.note_stored_language(&ctx.user, state.language.clone());
        // A copy of a request that already opened its challenge (a NAS's
        // retransmit after this server restarted, or answered by another
        // instance): that challenge again, and no second SMS.
        if let Some(rec) = state.request_challenge {
            if rec.user == ctx.user && rec.service == ctx.service && now < rec.expires_at {
                let mut e = self.event(ctx, "repeated_request");
                e.detail =
                    Some("the challenge this request opened is still open; no new SMS".into());
                self.log(Level::Info, &e);
                return Ok(Start::Challenge(self.info(&rec, now)));
            }
        }
        if state.locked_until.is_some() {
            return Ok(Start::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::LockedOut),
                None,
            )));
        }
        let Some(found) = self.find_phone_given(&ctx.user, state.phone, lookup)? else {
            return match policy.no_phone {
                NoPhone::Allow => Ok(Start::Done(self.finish(
                    ctx,
                    Verdict::Accept(Accept::NoPhoneAllowed),
                    None,
                ))),
                NoPhone::Enroll => self.open_without_sms(ctx, ids, now, Step::EnrollNumber),
                NoPhone::Deny if self.backup_usable(&ctx.user)? => {
                    self.open_without_sms(ctx, ids, now, Step::BackupOnly)
                }
                NoPhone::Deny => Ok(Start::Done(self.finish(
                    ctx,
                    Verdict::Reject(Reject::NoPhone),
                    None,
                ))),
            };
        };
        let phone = found.phone;
        self.note_phone_found(ctx, &phone, &found.source);
        if !phone.allowed(&self.cfg.phone) {
            return Ok(Start::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::CountryNotAllowed),
                Some(MaskedPhone::of(&phone)),
            )));
        }
        let (rec, code) = self.new_challenge(ctx, ids, &phone, now)?;
        // The SMS is counted against the limits and the challenge stored in
        // one transaction, before anything is sent: a store that cannot take
        // it fails the login before anyone receives a code that could never
        // work.
        let decision = self
            .store
            .start_challenge_with(&rec, &self.send_limits(ctx, &phone))?;
        self.after_start(ctx, rec, &phone, code.as_str(), &decision, now)
    }

    /// The debug line that says where `phone` came from.
    pub(super) fn note_phone_found(&self, ctx: &LoginContext, phone: &Phone, source: &str) {
        if self.audit.takes(Level::Debug) {
            let mut e = self.event(ctx, "phone_found");
            e.phone = Some(MaskedPhone::of(phone));
            e.detail = Some(format!("from {source}"));
            self.log(Level::Debug, &e);
        }
    }

    /// A new challenge of `ctx`'s login for a code to `phone`, named as
    /// `ids` says, with its code.
    pub(super) fn new_challenge(
        &self,
        ctx: &LoginContext,
        ids: Ids,
        phone: &Phone,
        now: Millis,
    ) -> Result<(ChallengeRecord, otp::Code), FlowError> {
        let id = self.new_id(ctx, ids)?;
        let code = otp::generate(&*self.rng, self.cfg.otp.length, self.cfg.otp.alphabet)?;
        let ttl = self.cfg.otp.ttl;
        let rec = ChallengeRecord {
            id,
            user: ctx.user.clone(),
            service: ctx.service.clone(),
            code_mac: self.key.mac(&id, &ctx.user, &ctx.service, code.as_str()),
            phone_masked: phone.masked(),
            created_at: now,
            sent_at: now,
            expires_at: now + ms(ttl),
            attempts_left: self.cfg.otp.max_attempts.get(),
            resends_used: 0,
            step: Step::Code,
            pending_phone: None,
        };
        Ok((rec, code))
    }

    /// What follows once the store counted the SMS of `rec` (code
    /// `code`, to `phone`) and stored it, or refused: the refusal, or the
    /// SMS sent, or what to do when it cannot be.
    pub(super) fn after_start(
        &self,
        ctx: &LoginContext,
        rec: ChallengeRecord,
        phone: &Phone,
        code: &str,
        decision: &SendDecision,
        now: Millis,
    ) -> Result<Start, FlowError> {
        let id = rec.id;
        if let Some(limit) = self.limited(ctx, decision, phone, now)? {
            let r = Reject::RateLimited(limit);
            if limit == Limit::DailyBudget && self.backup_usable(&ctx.user)? {
                // As when no provider can send: a code that costs nothing.
                let rec = ChallengeRecord {
                    step: Step::BackupOnly,
                    ..rec
                };
                self.store.insert_challenge(&rec)?;
                let mut e = self.event(ctx, "backup_fallback");
                e.phone = Some(MaskedPhone::of(phone));
                e.reason = Some(r.word());
                e.limit = Some(Limit::DailyBudget.key());
                e.detail = Some(
                    "the SMS budget is spent (breaker tripped); asking for a backup code".into(),
                );
                self.log(Level::Warning, &e);
                return Ok(Start::Challenge(self.info(&rec, now)));
            }
            return Ok(Start::Done(self.finish(
                ctx,
                Verdict::Reject(r),
                Some(MaskedPhone::of(phone)),
            )));
        }
        match self.deliver(ctx, &rec.id, phone, code, "sent")? {
            None => Ok(Start::Challenge(self.info(&rec, now))),
            Some(Verdict::Reject(r @ (Reject::ProviderDown | Reject::SendRefused)))
                if self.backup_usable(&ctx.user)? =>
            {
                // What backup codes are for: the phone cannot be reached.
                self.store.set_step(&id, &rec.code_mac, Step::BackupOnly)?;
                let mut e = self.event(ctx, "backup_fallback");
                e.phone = Some(MaskedPhone::of(phone));
                e.reason = Some(r.word());
                e.detail = Some("no SMS could be sent; asking for a backup code".into());
                self.log(Level::Warning, &e);
                let mut info = self.info(&rec, now);
                info.step = Step::BackupOnly;
                Ok(Start::Challenge(info))
            }
            Some(v) => {
                self.store.withdraw(&id, &rec.code_mac)?;
                Ok(Start::Done(self.finish(
                    ctx,
                    v,
                    Some(MaskedPhone::of(phone)),
                )))
            }
        }
    }

    /// A challenge that sends nothing yet: a backup code only, or the first
    /// step of enrollment.
    fn open_without_sms(
        &self,
        ctx: &LoginContext,
        ids: Ids,
        now: Millis,
        step: Step,
    ) -> Result<Start, FlowError> {
        let id = self.new_id(ctx, ids)?;
        // A MAC no code can have: random, and the step decides anyway.
        let mut code_mac = [0u8; 32];
        self.rng.fill(&mut code_mac)?;
        let rec = ChallengeRecord {
            id,
            user: ctx.user.clone(),
            service: ctx.service.clone(),
            code_mac,
            phone_masked: String::new(),
            created_at: now,
            sent_at: now,
            expires_at: now + ms(self.cfg.otp.ttl),
            attempts_left: self.cfg.otp.max_attempts.get(),
            resends_used: 0,
            step,
            pending_phone: None,
        };
        self.store.insert_challenge(&rec)?;
        let e = self.event(
            ctx,
            match step {
                Step::EnrollNumber => "enroll_start",
                _ => "backup_only",
            },
        );
        self.log(Level::Info, &e);
        Ok(Start::Challenge(self.info(&rec, now)))
    }

    /// Makes durable what the store was told before an SMS leaves for a
    /// phone (see [`Engine::deliver`]); nothing to wait for when every
    /// provider is the local outbox.
    pub(super) fn durable_before_sending(&self) -> Result<(), FlowError> {
        if self
            .cfg
            .providers
            .iter()
            .any(|p| !matches!(p, ProviderSpec::Outbox { .. }))
        {
            self.store.durable()?;
        }
        Ok(())
    }

    /// Sends `code`; on failure returns (without logging it) the verdict
    /// the policy asks for. First makes durable what the store was told
    /// (the challenge, the send counted), when the SMS is to leave for a
    /// phone: under smsotp-radiusd's group commit those writes may still
    /// wait for their batch's commit, and a commit that fails (a full disk)
    /// must fail the login before a code that could never work is paid for
    /// and sent. The outbox is a local file, not a phone: its line is
    /// written without that wait.
    pub(super) fn deliver(
        &self,
        ctx: &LoginContext,
        id: &ChallengeId,
        phone: &crate::phone::Phone,
        code: &str,
        event: &'static str,
    ) -> Result<Option<Verdict>, FlowError> {
        self.durable_before_sending()?;
        // The SMS in the user's language; the code and its life are the
        // same in every language.
        let lang = self.catalogue_given(&ctx.user, phone);
        let text = lang.sms().render_in(
            &MessageValues {
                code,
                host: &self.host,
                ttl: self.cfg.otp.ttl,
                user: &ctx.user,
                service: &ctx.service,
            },
            lang,
        );
        let started = std::time::Instant::now();
        let (outcome, tracked) = sms::send_with_failover_tracked(
            &self.providers,
            &Sms {
                to: phone,
                text: &text,
            },
        );
        self.count_delivery(ctx, phone, &outcome, started.elapsed());
        match &outcome {
            ChainOutcome::Sent {
                provider,
                failed_over_from,
            } => {
                if let Some((from, err)) = failed_over_from {
                    let mut e = self.event(ctx, "failover");
                    e.provider = Some(from.clone());
                    e.detail = Some(format!("{err}; sent through {provider} instead"));
                    self.log(Level::Warning, &e);
                }
                let mut e = self.event(ctx, event);
                e.phone = Some(MaskedPhone::of(phone));
                e.provider = Some(provider.clone());
                e.segments = self
                    .cfg
                    .providers
                    .iter()
                    .find(|p| p.name() == provider)
                    .map(|p| p.segments(&text));
                self.log(Level::Info, &e);
                self.note_sent(ctx, id, phone, code, tracked);
                Ok(None)
            }
            ChainOutcome::Failed(errors) => {
                for (name, err) in errors {
                    let mut e = self.event(ctx, "send_failed");
                    e.phone = Some(MaskedPhone::of(phone));
                    e.provider = Some(name.clone());
                    e.detail = Some(err.to_string());
                    self.log(Level::Error, &e);
                }
                Ok(Some(if !outcome.is_outage() {
                    Verdict::Reject(Reject::SendRefused)
                } else {
                    match self.cfg.policy.provider_down {
                        ProviderDown::Allow => Verdict::Accept(Accept::ProviderDownAllowed),
                        ProviderDown::Deny => Verdict::Reject(Reject::ProviderDown),
                    }
                }))
            }
        }
    }

    pub(super) fn info(&self, rec: &ChallengeRecord, now: Millis) -> ChallengeInfo {
        ChallengeInfo {
            id: rec.id,
            phone_masked: rec.phone_masked.clone(),
            expires_in: Duration::from_millis(rec.expires_at.saturating_sub(now).max(0) as u64),
            attempts_left: rec.attempts_left,
            step: rec.step,
        }
    }

    /// Step two: the user's answer to challenge `id`. An empty answer asks
    /// for a new code.
    pub fn answer(
        &self,
        ctx: &LoginContext,
        id: &ChallengeId,
        input: &str,
    ) -> Result<Answer, FlowError> {
        self.answer_with(ctx, id, input, Expired::OfferNew)
    }

    /// [`Engine::answer`], choosing what an answer after expiry gets.
    pub fn answer_with(
        &self,
        ctx: &LoginContext,
        id: &ChallengeId,
        input: &str,
        expired: Expired,
    ) -> Result<Answer, FlowError> {
        let now = self.now();
        // The usual answer, the right code in time, in one store step; any
        // other (and an enrollment code) is looked at closely below.
        if let Some(code) = otp::normalise(input, self.cfg.otp.alphabet) {
            let mac = self.key.mac(id, &ctx.user, &ctx.service, &code);
            if let Some(masked) = self
                .store
                .consume_code(id, &ctx.user, &ctx.service, &mac, now)?
            {
                self.note_done(id);
                let shown = MaskedPhone::from_stored(&masked);
                return Ok(Answer::Done(self.finish(
                    ctx,
                    Verdict::Accept(Accept::CodeVerified),
                    shown,
                )));
            }
        }
        let state = self.store.answer_state(id, &ctx.user, now)?;
        let Some(rec) = state.challenge else {
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::UnknownChallenge),
                None,
            )));
        };
        if rec.user != ctx.user || rec.service != ctx.service {
            // Someone else's challenge: leave it alone, refuse this one.
            let mut e = self.event(ctx, "challenge_mismatch");
            e.detail = Some(format!(
                "challenge belongs to another user or service ({})",
                rec.service
            ));
            self.log(Level::Warning, &e);
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::UnknownChallenge),
                None,
            )));
        }
        let masked = rec.phone_masked.clone();
        let shown = MaskedPhone::from_stored(&masked);
        if state.locked_until.is_some() {
            self.store.withdraw(id, &rec.code_mac)?;
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::LockedOut),
                shown,
            )));
        }
        let offers_new = matches!(rec.step, Step::Code | Step::EnrollCode);
        if now >= rec.expires_at
            && (expired == Expired::Reject
                || !offers_new
                || (!input.trim().is_empty() && rec.resends_used >= self.cfg.otp.resend_max))
        {
            self.store.withdraw(id, &rec.code_mac)?;
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::Expired),
                shown,
            )));
        }
        if input.trim().is_empty() {
            return match rec.step {
                Step::Code | Step::EnrollCode => self.resend(ctx, rec, now),
                Step::BackupOnly => Ok(Answer::Retry(Retry::NeedBackupCode, self.info(&rec, now))),
                Step::EnrollNumber => Ok(Answer::Retry(Retry::NeedNumber, self.info(&rec, now))),
            };
        }
        if now >= rec.expires_at {
            return Ok(Answer::Retry(Retry::Expired, self.info(&rec, now)));
        }
        match rec.step {
            Step::Code | Step::EnrollCode => {}
            Step::BackupOnly => {
                if let Some(v) = self.try_backup(ctx, &rec, input)? {
                    return Ok(Answer::Done(v));
                }
                return self.wrong_answer(ctx, &rec, now);
            }
            Step::EnrollNumber => {
                if backup::parse(input).is_some() {
                    if let Some(v) = self.try_backup(ctx, &rec, input)? {
                        return Ok(Answer::Done(v));
                    }
                    return self.wrong_answer(ctx, &rec, now);
                }
                return self.enroll_number(ctx, &rec, input, now);
            }
        }
        // Every other condition of the rule holds here (each was answered
        // above with its own reason); the code decides.
        let matches = otp::normalise(input, self.cfg.otp.alphabet).is_some_and(|code| {
            let mac = self.key.mac(id, &ctx.user, &ctx.service, &code);
            code_opens(&rec, ctx, rec.step, false, &mac, now)
        });
        if matches {
            // Deleting the row is what makes the code single-use: of two
            // concurrent right answers, exactly one deletes it.
            let (used, accept) = if rec.step == Step::EnrollCode {
                let by = format!("enroll:{}", ctx.service);
                (
                    self.store
                        .complete_enrollment(id, &rec.code_mac, &ctx.user, now, &by)?,
                    Accept::Enrolled,
                )
            } else {
                (
                    self.store.consume(id, &rec.code_mac, &ctx.user)?,
                    Accept::CodeVerified,
                )
            };
            if used {
                if accept == Accept::Enrolled {
                    if let Some(e164) = &rec.pending_phone {
                        self.write_back(ctx, e164);
                    }
                }
                return Ok(Answer::Done(self.finish(
                    ctx,
                    Verdict::Accept(accept),
                    shown,
                )));
            }
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::UnknownChallenge),
                shown,
            )));
        }
        if let Some(v) = self.try_backup(ctx, &rec, input)? {
            return Ok(Answer::Done(v));
        }
        self.wrong_answer(ctx, &rec, now)
    }

    /// A backup code in place of the code, if `input` is one of the user's
    /// (it is used up, and the challenge with it).
    fn try_backup(
        &self,
        ctx: &LoginContext,
        rec: &ChallengeRecord,
        input: &str,
    ) -> Result<Option<Verdict>, FlowError> {
        if !self.cfg.policy.backup_codes || backup::parse(input).is_none() {
            return Ok(None);
        }
        match backup::redeem(&*self.store, &self.key, &ctx.user, input, Some(&rec.id))? {
            Redeemed::Accepted { left } => {
                let shown = MaskedPhone::from_stored(&rec.phone_masked);
                Ok(Some(self.finish(
                    ctx,
                    Verdict::Accept(Accept::BackupCode { left }),
                    shown,
                )))
            }
            Redeemed::NoMatch => Ok(None),
        }
    }

    /// A wrong code: counts against the challenge and towards lockout.
    fn wrong_answer(
        &self,
        ctx: &LoginContext,
        rec: &ChallengeRecord,
        now: Millis,
    ) -> Result<Answer, FlowError> {
        let id = &rec.id;
        let masked = rec.phone_masked.clone();
        let shown = MaskedPhone::from_stored(&masked);
        let left = self.store.wrong_attempt(id)?;
        let limits = &self.cfg.limits;
        let failures = self.store.record_failure(
            &ctx.user,
            now,
            limits.lockout_after.get(),
            limits.lockout,
        )?;
        let mut e = self.event(ctx, "wrong_code");
        e.phone = shown.clone();
        e.detail = Some(format!(
            "tries left: {}; consecutive failures: {}",
            left.unwrap_or(0),
            failures.count
        ));
        self.log(Level::Info, &e);
        if failures.locked_until.is_some() {
            self.store.delete_challenge(id)?;
            let mut e = self.event(ctx, "locked_out");
            e.detail = Some(format!(
                "{} consecutive failures; locked for {}",
                failures.count,
                humantime::format_duration(limits.lockout)
            ));
            self.log(Level::Warning, &e);
            // This login ends as a wrong code (the user knows they typed
            // it); the next one meets the lockout.
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::WrongCode),
                shown,
            )));
        }
        match left {
            Some(n) if n > 0 => {
                let mut info = self.info(rec, now);
                info.attempts_left = n;
                Ok(Answer::Retry(Retry::WrongCode { tries_left: n }, info))
            }
            _ => Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::WrongCode),
                shown,
            ))),
        }
    }

    fn resend(
        &self,
        ctx: &LoginContext,
        rec: ChallengeRecord,
        now: Millis,
    ) -> Result<Answer, FlowError> {
        let expired = now >= rec.expires_at;
        let give_up = |this: &Self, v: Reject| -> Result<Answer, FlowError> {
            this.store.delete_challenge(&rec.id)?;
            Ok(Answer::Done(this.finish(
                ctx,
                Verdict::Reject(v),
                MaskedPhone::from_stored(&rec.phone_masked),
            )))
        };
        if rec.resends_used >= self.cfg.otp.resend_max {
            if expired {
                return give_up(self, Reject::Expired);
            }
            return Ok(Answer::Retry(Retry::NoResendsLeft, self.info(&rec, now)));
        }
        let ready_at = rec.sent_at + ms(self.cfg.otp.resend_cooldown);
        if now < ready_at {
            let wait = Duration::from_millis((ready_at - now) as u64 + 999);
            return Ok(Answer::Retry(
                Retry::Cooldown { wait },
                self.info(&rec, now),
            ));
        }
        // Enrollment resends to the number being enrolled; otherwise look
        // the number up again: it may have changed since. Looked up before
        // the send is counted, as the number's own limits count it.
        let phone = match (&rec.step, &rec.pending_phone) {
            (Step::EnrollCode, Some(e164)) => {
                Phone::parse_cached(e164, None, self.store.number_cache()).ok()
            }
            _ => self.find_phone(&ctx.user)?.map(|f| f.phone),
        };
        let Some(phone) = phone else {
            return give_up(self, Reject::NoPhone);
        };
        let decision = self
            .store
            .reserve_sends(&ctx.user, now, &self.send_limits(ctx, &phone))?;
        if let Some(limit) = self.limited(ctx, &decision, &phone, now)? {
            if expired {
                return give_up(self, Reject::RateLimited(limit));
            }
            return Ok(Answer::Retry(Retry::ResendLimited, self.info(&rec, now)));
        }
        let code = otp::generate(&*self.rng, self.cfg.otp.length, self.cfg.otp.alphabet)?;
        let mac = self
            .key
            .mac(&rec.id, &ctx.user, &ctx.service, code.as_str());
        let expires_at = now + ms(self.cfg.otp.ttl);
        let attempts = self.cfg.otp.max_attempts.get();
        if !self.store.replace_code(
            &rec.id,
            &mac,
            now,
            expires_at,
            attempts,
            rec.resends_used + 1,
        )? {
            return Ok(Answer::Done(self.finish(
                ctx,
                Verdict::Reject(Reject::UnknownChallenge),
                None,
            )));
        }
        if let Some(v) = self.deliver(ctx, &rec.id, &phone, code.as_str(), "resent")? {
            self.store.delete_challenge(&rec.id)?;
            return Ok(Answer::Done(self.finish(
                ctx,
                v,
                Some(MaskedPhone::of(&phone)),
            )));
        }
        let updated = ChallengeRecord {
            phone_masked: phone.masked(),
            sent_at: now,
            expires_at,
            attempts_left: attempts,
            resends_used: rec.resends_used + 1,
            ..rec
        };
        Ok(Answer::Retry(
            Retry::Resent {
                phone_masked: updated.phone_masked.clone(),
            },
            self.info(&updated, now),
        ))
    }

    /// The unexpired challenge [`Engine::start_one_per_login`] opened for
    /// this user and service, if any.
    pub fn pending(&self, ctx: &LoginContext) -> Result<Option<ChallengeInfo>, FlowError> {
        let now = self.now();
        let id = self.key.login_id(&ctx.user, &ctx.service);
        Ok(self
            .store
            .challenge(&id)?
            .filter(|rec| {
                rec.user == ctx.user && rec.service == ctx.service && now < rec.expires_at
            })
            .map(|rec| self.info(&rec, now)))
    }

    /// The user went away in the middle: forget the challenge.
    pub fn abandon(&self, ctx: &LoginContext, id: &ChallengeId, why: &str) {
        let _ = self.store.delete_challenge(id);
        let mut e = self.event(ctx, "abandoned");
        e.outcome = Some("failure");
        e.detail = Some(why.to_owned());
        self.log(Level::Info, &e);
    }
}
