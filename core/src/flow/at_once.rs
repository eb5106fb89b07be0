//! The first round in one store step, where the store has one
//! ([`Store::starts_at_once`]: Redis, where it saves a round trip of
//! three per login): [`Engine::start_at_once`].
//!
//! The usual order reads the store first (the lockout, a number
//! registered there, the request's own challenge), then asks the
//! directories only if the store has no number, then counts the SMS and
//! stores the challenge. Here the directories are asked first, and the
//! store reads what it would have and counts and stores in the same
//! step, doing so only if what it read changes nothing: no lockout, no
//! other number registered, no challenge of the request's yet. Otherwise
//! it writes nothing and hands what it read back to the usual order,
//! with what the directories said, so nothing is asked twice and every
//! login ends as the usual order would end it.
//!
//! [`Store::starts_at_once`]: crate::store::Store::starts_at_once

use super::machine::Ids;
use super::{Engine, FlowError, LoginContext, Start};
use crate::clock::Millis;
use crate::directory::{DirectoryError, Found};
use crate::store::{AtOnce, LoginState};

/// What the directories said of a user: the number found (or why none
/// could be), and the directories skipped on the way (`on_unavailable =
/// "next"`), whose warnings are logged once the answer is taken.
pub(super) struct Lookup {
    pub(super) found: Result<Option<Found>, DirectoryError>,
    pub(super) skipped: Vec<DirectoryError>,
}

/// How far [`Engine::start_at_once`] got.
pub(super) enum Early {
    /// The login's first round is decided.
    Done(Start),
    /// Go on in the usual order, with what was read already: the store's
    /// state (if it was read) and the directories' answer (if asked).
    Read {
        state: Option<Box<LoginState>>,
        lookup: Option<Lookup>,
    },
}

impl Engine {
    /// Tries the first round in one store step (see the module doc).
    pub(super) fn start_at_once(
        &self,
        ctx: &LoginContext,
        ids: Ids,
        now: Millis,
    ) -> Result<Early, FlowError> {
        if !self.store.starts_at_once() {
            return Ok(Early::Read {
                state: None,
                lookup: None,
            });
        }
        let lookup = self.look_up(&ctx.user);
        let phone = match &lookup.found {
            Ok(Some(found)) if found.phone.allowed(&self.cfg.phone) => found.phone.clone(),
            // No number, a directory that failed, or a country the
            // policy refuses: the store's number, if any, may still do.
            _ => {
                return Ok(Early::Read {
                    state: None,
                    lookup: Some(lookup),
                })
            }
        };
        let (rec, code) = self.new_challenge(ctx, ids, &phone, now)?;
        let request = matches!(ids, Ids::ForRequest(_));
        let limits = self.send_limits(ctx, &phone);
        match self
            .store
            .start_at_once(&rec, &limits, phone.e164(), request)?
        {
            AtOnce::Seen(state) => Ok(Early::Read {
                state: Some(state),
                lookup: Some(lookup),
            }),
            AtOnce::Started {
                decision,
                language,
                registered,
            } => {
                self.note_stored_language(&ctx.user, language);
                // The usual order takes a registered number from the
                // store and never asks the directories: so here, down to
                // the language, when the store has the number they gave.
                let source = match registered {
                    Some(rec) => format!("store (set by {})", rec.set_by),
                    None => match self.settle_lookup(&ctx.user, lookup)? {
                        Some(found) => found.source,
                        None => String::new(),
                    },
                };
                self.note_phone_found(ctx, &phone, &source);
                Ok(Early::Done(self.after_start(
                    ctx,
                    rec,
                    &phone,
                    code.as_str(),
                    &decision,
                    now,
                )?))
            }
        }
    }
}
