//! LDAP and Active Directory as a phone directory (`[[directory]] kind =
//! "ldap"`), with a synchronous client of our own: BER from `rasn-ldap`
//! over a blocking `std::net::TcpStream`, TLS by rustls, no thread and no
//! runtime, so it runs inside sshd's PAM child.
//!
//! Files: `conn.rs` the client ([`Connection`]: URL, deadlines, TLS, one
//! PDU at a time, bind, search, modify, unbind); `filter.rs` the RFC 4515
//! filter parser and the escaping of a user name into a filter or a DN
//! (RFC 4514); `config.rs` the table and its validation ([`LdapSpec`]);
//! `error.rs` the classified errors ([`LdapError`]).
//!
//! # The API other parts build on
//!
//! `smsotp doctor` and smsotp-radiusd's LDAP primary use the steps one by
//! one, each with its own classified error:
//!
//! ```no_run
//! # use smsotp_core::directory::ldap::{LdapSpec, LdapError};
//! # fn f(spec: &LdapSpec) -> Result<(), LdapError> {
//! let mut conn = spec.connect()?;         // DNS, TCP, TLS: URLs in order (failover)
//! spec.bind_service(&mut conn)?;          // bind_dn + bind_password_file, or anonymous
//! if let Some(entry) = spec.find_user(&mut conn, "alice")? {  // one entry or none
//!     let disabled = spec.is_disabled(&entry);               // AD userAccountControl
//!     let phone = spec.phone_of(&entry);                     // first phone attribute with a value
//!     match conn.bind(&entry.dn, "password") {               // the user's password
//!         Ok(()) => {}
//!         Err(e) if e.is_wrong_password() => {}              // code 49
//!         Err(e) => return Err(e),                           // e.is_unavailable(), …
//!     }
//! }
//! conn.unbind();
//! # Ok(()) }
//! ```
//!
//! [`LdapSpec::user_dn_for`] gives the DN from the `user_dn` template
//! instead of a search. [`LdapError::is_unavailable`] separates "could
//! not ask" (DNS, TCP, TLS, timeout, broken connection, busy or
//! unavailable servers) from answers.
//!
//! # Rules
//!
//! - Only connection failures (DNS, TCP, TLS, a timeout while connecting
//!   or during StartTLS and the handshake) move on to the next URL; a
//!   refused bind or a search result is the directory's answer.
//! - Every read and write is bounded by what is left of its step's
//!   deadline (`connect_timeout` per server for the TCP connect,
//!   `timeout` for the TLS handshake with StartTLS, and for each bind,
//!   search and modify). Name resolution is getaddrinfo in this process
//!   (no resolver thread), bounded by the resolver's own timeouts
//!   (resolv.conf), not by `connect_timeout`.
//! - Referrals (SearchResultReference and referral results) are not
//!   followed: they count as no entry.
//! - A filter matching two entries for one user is an error, not a pick.
//! - With `preset = "active_directory"` a disabled account
//!   (userAccountControl bit 0x2) is [`LdapError::AccountDisabled`]: the
//!   login fails closed. It is not "no phone", which would let the next
//!   directory or enrollment give the account a number.
//! - [`LdapDirectory::shared`] (smsotp-radiusd) keeps one idle connection
//!   and remembers each user's number for `cache_ttl`, used only while
//!   the directory cannot be reached; [`LdapDirectory::new`] (the PAM
//!   module) connects for each login and remembers nothing.
//! - Write-back failures do not fail the login: the number stays in the
//!   store, and the engine records a warning.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use super::{Directory, DirectoryError, Entry};
use crate::files;

mod config;
mod conn;
mod error;
pub mod filter;
#[cfg(test)]
mod tests;

pub(crate) use config::{validate, RawLdap};
pub use config::{LdapSpec, OnUnavailable, AD_FILTER};
pub use conn::{
    code_of, ConnectSettings, Connection, Deadline, LdapEntry, LdapUrl, Scope, MAX_PDU,
};
#[cfg(feature = "fuzzing")]
pub(crate) use conn::{read_message, unexpected};
pub use error::{code_name, LdapError};

/// How many users' numbers a server remembers at most (the oldest go
/// first).
pub const CACHE_MAX: usize = 10_000;

impl LdapSpec {
    /// The trust anchors for ldaps:// and StartTLS: the system's CA
    /// bundle and `ca_file`. `None` when no URL needs TLS.
    pub fn tls_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>, LdapError> {
        if !self.starttls && self.urls.iter().all(|u| !u.ldaps) {
            return Ok(None);
        }
        crate::sms::tls::client_config(self.ca_file.as_deref())
            .map(Some)
            .map_err(|e| LdapError::Setup {
                url: self.name.clone(),
                detail: e.to_string(),
            })
    }

    /// Connects to the first URL that answers (failover on DNS, TCP, TLS
    /// and timeouts while connecting); the error is the last URL's.
    pub fn connect(&self) -> Result<Connection, LdapError> {
        self.connect_with(self.tls_config()?)
    }

    /// [`LdapSpec::connect`] with trust anchors already loaded.
    pub fn connect_with(
        &self,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Connection, LdapError> {
        let mut last = None;
        for url in &self.urls {
            let settings = ConnectSettings {
                url: url.clone(),
                starttls: self.starttls && !url.ldaps,
                tls: tls.clone(),
                connect_timeout: self.connect_timeout,
                timeout: self.timeout,
            };
            match Connection::open(&settings) {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| LdapError::Setup {
            url: self.name.clone(),
            detail: "no URL to connect to".into(),
        }))
    }

    /// Binds as the service identity (`bind_dn` with the password read
    /// from `bind_password_file`, root-only, one trailing newline
    /// dropped), or anonymously when none is configured.
    pub fn bind_service(&self, conn: &mut Connection) -> Result<(), LdapError> {
        match &self.bind {
            None => conn.bind_anonymous(),
            Some((dn, file)) => {
                let password = files::read_secret(file).map_err(|e| LdapError::Setup {
                    url: conn.url().to_owned(),
                    detail: format!("bind_password_file: {e}"),
                })?;
                conn.bind(dn, password.expose())
            }
        }
    }

    /// The attributes a lookup asks for: the phone attributes, and
    /// userAccountControl with the Active Directory preset.
    pub fn attributes(&self) -> Vec<String> {
        let mut a = self.phone_attributes.clone();
        a.extend(self.language_attribute.iter().cloned());
        if self.active_directory {
            a.push("userAccountControl".into());
        }
        a
    }

    /// `user`'s entry (one or none), found with the configured base, scope
    /// and filter. A name a login cannot have is refused before anything
    /// is sent.
    pub fn find_user(
        &self,
        conn: &mut Connection,
        user: &str,
    ) -> Result<Option<LdapEntry>, LdapError> {
        if !filter::is_login_name(user) {
            return Err(LdapError::BadUser {
                user: format!("{user:?}"),
            });
        }
        let f = filter::user_filter(&self.filter, user).map_err(|e| LdapError::Setup {
            url: conn.url().to_owned(),
            detail: format!("filter \"{}\": {e}", self.filter),
        })?;
        conn.search_one(&self.base, self.scope, f, &self.attributes(), user)
    }

    /// Whether the entry is a disabled Active Directory account (only with
    /// the preset).
    pub fn is_disabled(&self, entry: &LdapEntry) -> bool {
        self.active_directory && entry.ad_account_disabled()
    }

    /// The number: the first phone attribute with a non-empty value, with
    /// that attribute's name.
    pub fn phone_of(&self, entry: &LdapEntry) -> Option<(String, String)> {
        entry.first_value(&self.phone_attributes)
    }

    /// The user's language: the language attribute's first value
    /// (`preferredLanguage`, RFC 2798: "de", "fr-CA", "en;q=0.8, de").
    pub fn language_of(&self, entry: &LdapEntry) -> Option<String> {
        let attr = self.language_attribute.as_ref()?;
        let (_, v) = entry.first_value(std::slice::from_ref(attr))?;
        crate::messages::normalize_tag(v.split([',', ';']).next()?.trim())
    }

    /// The DN from the `user_dn` template, the name escaped per RFC 4514;
    /// `None` without a template or for a name a login cannot have.
    pub fn user_dn_for(&self, user: &str) -> Option<String> {
        let t = self.user_dn.as_ref()?;
        filter::is_login_name(user).then(|| filter::substitute(t, user, filter::escape_dn_value))
    }
}

/// A number remembered for when the directory cannot be asked.
struct Remembered {
    entry: Entry,
    at: Instant,
}

/// A configured LDAP directory as a source of numbers.
pub struct LdapDirectory {
    spec: LdapSpec,
    /// A server's idle connection, reused by the next lookup; `None` for
    /// the PAM module, which connects for each login.
    idle: Option<Mutex<Option<Connection>>>,
    /// A server's remembered numbers; `None` without a cache.
    cache: Option<Mutex<HashMap<String, Remembered>>>,
    tls: OnceLock<Option<Arc<rustls::ClientConfig>>>,
    now: Arc<dyn Fn() -> Instant + Send + Sync>,
}

impl LdapDirectory {
    /// For one login (the PAM module): connects each lookup, no cache.
    pub fn new(spec: LdapSpec) -> Self {
        LdapDirectory {
            spec,
            idle: None,
            cache: None,
            tls: OnceLock::new(),
            now: Arc::new(Instant::now),
        }
    }

    /// For a long-lived process: keeps one idle connection, and numbers
    /// for `cache_ttl` (when not zero) for when the directory is down.
    pub fn shared(spec: LdapSpec) -> Self {
        let cache = (!spec.cache_ttl.is_zero()).then(|| Mutex::new(HashMap::new()));
        LdapDirectory {
            spec,
            idle: Some(Mutex::new(None)),
            cache,
            tls: OnceLock::new(),
            now: Arc::new(Instant::now),
        }
    }

    /// Replaces the clock of the cache (tests move time without sleeping).
    pub fn with_clock(mut self, now: Arc<dyn Fn() -> Instant + Send + Sync>) -> Self {
        self.now = now;
        self
    }

    /// The validated settings.
    pub fn spec(&self) -> &LdapSpec {
        &self.spec
    }

    fn tls(&self) -> Result<Option<Arc<rustls::ClientConfig>>, LdapError> {
        if let Some(t) = self.tls.get() {
            return Ok(t.clone());
        }
        let t = self.spec.tls_config()?;
        // A server keeps what it loaded; PAM loads it once per login.
        let _ = self.tls.set(t.clone());
        Ok(t)
    }

    /// A connection bound as the service identity: the idle one, else a
    /// new one.
    fn session(&self) -> Result<Connection, LdapError> {
        if let Some(idle) = &self.idle {
            if let Some(c) = idle.lock().ok().and_then(|mut g| g.take()) {
                return Ok(c);
            }
        }
        let mut c = self.spec.connect_with(self.tls()?)?;
        self.spec.bind_service(&mut c)?;
        Ok(c)
    }

    /// Gives back a connection that worked (a server keeps one), or
    /// closes it.
    fn done(&self, conn: Connection) {
        if let Some(Ok(mut g)) = self.idle.as_ref().map(|m| m.lock()) {
            if g.is_none() {
                *g = Some(conn);
                return;
            }
        }
        conn.unbind();
    }

    /// Runs `op` on a bound connection; a kept connection that fails to
    /// answer (the server may have closed it) is replaced once.
    fn with_session<T>(
        &self,
        op: impl Fn(&mut Connection) -> Result<T, LdapError>,
    ) -> Result<T, LdapError> {
        let reused = self
            .idle
            .as_ref()
            .and_then(|m| m.lock().ok())
            .is_some_and(|g| g.is_some());
        let mut conn = self.session()?;
        let mut r = op(&mut conn);
        if reused
            && matches!(&r, Err(e) if e.is_unavailable() || matches!(e, LdapError::Protocol { .. }))
        {
            conn = self.spec.connect_with(self.tls()?)?;
            self.spec.bind_service(&mut conn)?;
            r = op(&mut conn);
        }
        match &r {
            Err(e) if e.is_unavailable() || matches!(e, LdapError::Protocol { .. }) => {}
            _ => self.done(conn),
        }
        r
    }

    fn ask(&self, user: &str) -> Result<Option<Entry>, LdapError> {
        if !filter::is_login_name(user) {
            return Err(LdapError::BadUser {
                user: format!("{user:?}"),
            });
        }
        let found = self.with_session(|c| {
            let entry = self.spec.find_user(c, user)?;
            Ok((c.url().to_owned(), entry))
        })?;
        let (url, Some(entry)) = found else {
            return Ok(None);
        };
        if self.spec.is_disabled(&entry) {
            return Err(LdapError::AccountDisabled { url, dn: entry.dn });
        }
        Ok(self.spec.phone_of(&entry).map(|(attr, raw)| Entry {
            raw,
            // The configured name (what the audit and the man page call
            // it), and the server that answered when that is not the name.
            source: if self.spec.name == url {
                format!("ldap {url}")
            } else {
                format!("ldap {} ({url})", self.spec.name)
            },
            location: format!("{url} {} {attr}", entry.dn),
            line: None,
            language: self.spec.language_of(&entry),
        }))
    }

    fn remember(&self, user: &str, entry: Option<&Entry>) {
        let Some(Ok(mut cache)) = self.cache.as_ref().map(|m| m.lock()) else {
            return;
        };
        match entry {
            None => {
                cache.remove(user);
            }
            Some(e) => {
                if cache.len() >= CACHE_MAX && !cache.contains_key(user) {
                    let oldest = cache
                        .iter()
                        .min_by_key(|(_, r)| r.at)
                        .map(|(k, _)| k.clone());
                    if let Some(k) = oldest {
                        cache.remove(&k);
                    }
                }
                cache.insert(
                    user.to_owned(),
                    Remembered {
                        entry: e.clone(),
                        at: (self.now)(),
                    },
                );
            }
        }
    }

    /// The remembered number, if younger than `cache_ttl`.
    fn remembered(&self, user: &str) -> Option<Entry> {
        let cache = self.cache.as_ref()?.lock().ok()?;
        let r = cache.get(user)?;
        let age = (self.now)().checked_duration_since(r.at)?;
        (age < self.spec.cache_ttl).then(|| Entry {
            source: format!(
                "{} (remembered {}s ago: the directory cannot be reached)",
                r.entry.source,
                age.as_secs()
            ),
            ..r.entry.clone()
        })
    }
}

impl LdapDirectory {
    /// The directory in an error message: the URL is in the error already,
    /// so only a `name` of its own is added.
    fn label(&self) -> String {
        match self.spec.urls.first() {
            Some(u) if u.text == self.spec.name => "ldap directory".to_owned(),
            _ => format!("ldap directory \"{}\"", self.spec.name),
        }
    }
}

impl Directory for LdapDirectory {
    fn name(&self) -> String {
        format!("ldap {}", self.spec.name)
    }

    fn lookup(&self, user: &str) -> Result<Option<Entry>, DirectoryError> {
        match self.ask(user) {
            Ok(e) => {
                self.remember(user, e.as_ref());
                Ok(e)
            }
            Err(error) if error.is_unavailable() => match self.remembered(user) {
                Some(e) => Ok(Some(e)),
                None => Err(DirectoryError::Unavailable {
                    directory: self.label(),
                    error,
                }),
            },
            Err(error) => {
                self.remember(user, None);
                Err(DirectoryError::Ldap {
                    directory: self.label(),
                    error,
                })
            }
        }
    }

    fn next_when_unavailable(&self) -> bool {
        self.spec.on_unavailable == OnUnavailable::Next
    }

    fn write_back(&self, user: &str, e164: &str) -> Result<bool, DirectoryError> {
        if !self.spec.write_back {
            return Ok(false);
        }
        let Some(attr) = self.spec.phone_attributes.first() else {
            return Ok(false);
        };
        let r = self.with_session(|c| {
            let Some(entry) = self.spec.find_user(c, user)? else {
                return Ok(false);
            };
            c.modify_replace(&entry.dn, attr, e164)?;
            Ok(true)
        });
        r.map_err(|error| DirectoryError::Ldap {
            directory: self.label(),
            error,
        })
    }
}
