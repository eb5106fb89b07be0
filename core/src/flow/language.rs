//! Which language a login reads: the user's own setting in the store,
//! else the session's locale (PAM, `messages.follow_locale`), else the
//! LDAP directory's `language_attribute` of the entry that gave the
//! number, else the number's country (`messages.language =
//! "by_number"`), else `messages.default_language`. A language without a catalogue is
//! passed over. Finding the language never fails a login: a store or
//! directory that cannot be read only skips its step (the login's own
//! reads report the failure).

use super::Engine;
use crate::audit::{Event, Level};
use crate::config::{DirectorySpec, LanguageChoice};
use crate::messages::{language_of_region, normalize_tag, Catalogue, Messages};
use crate::phone::Phone;

/// How long a read of a user's stored language is reused (ms).
const STORED_LANGUAGE_REUSE_MS: i64 = 60_000;

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

    /// Keeps `language`, just read from the store with the login's state
    /// ([`crate::store::LoginState::language`]), as `user`'s for the
    /// login's texts: no read of its own.
    pub(super) fn note_stored_language(&self, user: &str, language: Option<String>) {
        if let Ok(mut memo) = self.stored_language.lock() {
            *memo = Some((user.to_owned(), language, self.now()));
        }
    }

    /// Forgets the stored language read for the last login: a new login
    /// reads it again, so `set-language` applies from the next login.
    pub(super) fn forget_stored_language(&self) {
        if let Ok(mut memo) = self.stored_language.lock() {
            *memo = None;
        }
    }

    /// The language stored for `user`: read once per login (a read less
    /// than a minute old for the same user is reused by the login's later
    /// steps; each new login reads it again).
    fn stored_language(&self, user: &str) -> Option<String> {
        let now = self.now();
        if let Ok(memo) = self.stored_language.lock() {
            if let Some((u, l, at)) = memo.as_ref() {
                if u == user && (0..STORED_LANGUAGE_REUSE_MS).contains(&(now - at)) {
                    return l.clone();
                }
            }
        }
        let read = self.store.language(user).unwrap_or_else(|e| {
            let ev = Event {
                event: "language_unread",
                user: user.to_owned(),
                outcome: Some("failure"),
                detail: Some(e.to_string()),
                ..Event::default()
            };
            self.log(Level::Debug, &ev);
            None
        });
        if let Ok(mut memo) = self.stored_language.lock() {
            *memo = Some((user.to_owned(), read.clone(), now));
        }
        read
    }

    fn choose(&self, user: &str, phone: Option<&Phone>, look_up: bool) -> &Catalogue {
        let stored = self.stored_language(user);
        if let Some(c) = [stored.as_deref(), self.locale()]
            .into_iter()
            .flatten()
            .find_map(|l| normalize_tag(l).and_then(|l| self.messages.get(&l)))
        {
            return c;
        }
        let from_directory = self
            .cfg
            .directories
            .iter()
            .any(|d| matches!(d, DirectorySpec::Ldap(l) if l.language_attribute.is_some()));
        let by_number = self.cfg.messages.language == LanguageChoice::ByNumber;
        if !from_directory && !by_number {
            return self.messages.default_catalogue();
        }
        let mut region = phone.and_then(Phone::region);
        // What the directories said with this user's number, if this
        // engine just looked it up (the login's own lookup).
        let mut directory_language = self.directory_language.lock().ok().and_then(|m| {
            m.as_ref()
                .filter(|(u, _)| u == user)
                .map(|(_, l)| l.clone())
        });
        let need_number = by_number && region.is_none();
        let need_language = from_directory && directory_language.is_none();
        if look_up && (need_number || need_language) {
            if let Ok(Some(found)) = self.find_phone(user) {
                region = region.or(found.phone.region());
                directory_language = Some(found.language);
            }
        }
        let candidates = [
            directory_language.flatten().filter(|_| from_directory),
            region
                .filter(|_| by_number)
                .and_then(|r| language_of_region(r.as_ref()))
                .map(str::to_owned),
        ];
        candidates
            .into_iter()
            .flatten()
            .find_map(|l| self.messages.get(&l))
            .unwrap_or_else(|| self.messages.default_catalogue())
    }
}
