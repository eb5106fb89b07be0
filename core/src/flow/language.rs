//! Which language a login reads: the user's own setting in the store,
//! else the session's locale (PAM, `messages.follow_locale`), else the
//! number's country (`messages.language = "by_number"`), else
//! `messages.default_language`. A language without a catalogue is
//! passed over. Finding the language never fails a login: a store or
//! directory that cannot be read only skips its step (the login's own
//! reads report the failure).

use super::Engine;
use crate::audit::{Event, Level};
use crate::config::LanguageChoice;
use crate::messages::{language_of_region, Catalogue, Messages};
use crate::phone::Phone;

impl Engine {
    /// The catalogues this engine speaks.
    pub fn messages(&self) -> &Messages {
        &self.messages
    }

    /// Replaces the catalogues, logging each problem of their files once
    /// (a login goes on with the shipped texts).
    pub fn set_messages(&mut self, messages: Messages) {
        for p in messages.problems() {
            let e = Event {
                event: "messages_problem",
                outcome: Some("failure"),
                detail: Some(p.to_string()),
                ..Event::default()
            };
            self.log(Level::Warning, &e);
        }
        self.messages = messages;
    }

    /// Sets the session's locale (a LANG or LC_MESSAGES value such as
    /// "de_DE.UTF-8"), used when `messages.follow_locale` is on and the
    /// user has no setting of their own. For a front end that serves one
    /// login per engine (the PAM module).
    pub fn set_session_locale(&mut self, locale: Option<String>) {
        self.session_locale = locale;
    }

    /// The catalogue chosen without reading the store: the session's
    /// locale (when followed), else the default language. For texts
    /// shown when the store may be what failed.
    pub fn catalogue_without_store(&self) -> &Catalogue {
        self.messages.pick(self.locale())
    }

    fn locale(&self) -> Option<&str> {
        self.session_locale
            .as_deref()
            .filter(|_| self.cfg.messages.follow_locale)
    }

    /// The catalogue `user` reads. With `language = "by_number"` and no
    /// setting or locale before it, the user's number is looked up.
    pub fn catalogue_for(&self, user: &str) -> &Catalogue {
        self.choose(user, None, true)
    }

    /// [`Engine::catalogue_for`] when the login's number is known.
    pub(super) fn catalogue_given(&self, user: &str, phone: &Phone) -> &Catalogue {
        self.choose(user, Some(phone), false)
    }

    fn choose(&self, user: &str, phone: Option<&Phone>, look_up: bool) -> &Catalogue {
        let stored = self.store.language(user).unwrap_or_else(|e| {
            let mut ev = Event {
                event: "language_unread",
                user: user.to_owned(),
                detail: Some(e.to_string()),
                ..Event::default()
            };
            ev.outcome = Some("failure");
            self.log(Level::Debug, &ev);
            None
        });
        let by_number = || -> Option<&'static str> {
            if self.cfg.messages.language != LanguageChoice::ByNumber {
                return None;
            }
            let region = match phone {
                Some(p) => p.region(),
                None if look_up => self.find_phone(user).ok().flatten()?.phone.region(),
                None => None,
            }?;
            language_of_region(region.as_ref())
        };
        let candidates = [stored.as_deref(), self.locale()];
        if let Some(c) = candidates
            .into_iter()
            .flatten()
            .find_map(|l| crate::messages::normalize_tag(l).and_then(|l| self.messages.get(&l)))
        {
            return c;
        }
        match by_number().and_then(|l| self.messages.get(l)) {
            Some(c) => c,
            None => self.messages.default_catalogue(),
        }
    }
}
