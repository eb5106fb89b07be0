//! `primary = { kind = "ldap" }`: the password is checked by binding to
//! the directory as the user.
//!
//! Each check opens a connection of its own and closes it: the service
//! bind and search, then the user's bind, happen on that one connection,
//! whose identity is the user's once the last bind succeeds, so it is
//! never kept for a service search afterwards. (Phone lookups use the
//! directory's own kept connection, `LdapDirectory::shared`.)
//!
//! The steps of a check go through [`Session`], so the decisions are
//! tested with a fake (`FakeSession` below) without a server.

use std::sync::Arc;

use smsotp_core::directory::ldap::{filter, LdapEntry, LdapError, LdapSpec};

use super::{PrimaryAuth, PrimaryError};

/// The steps of one check on one connection.
trait Session {
    /// Binds as the service identity (or anonymously).
    fn bind_service(&mut self) -> Result<(), LdapError>;
    /// The user's entry: one, or none.
    fn find_user(&mut self, user: &str) -> Result<Option<LdapEntry>, LdapError>;
    /// Binds as `dn` with `password` (never empty here).
    fn bind_user(&mut self, dn: &str, password: &str) -> Result<(), LdapError>;
    /// Ends the session politely (after an answer; a broken connection is
    /// just dropped).
    fn close(self);
}

/// A real connection with the directory's settings.
struct Live<'a> {
    spec: &'a LdapSpec,
    conn: smsotp_core::directory::ldap::Connection,
}

impl Session for Live<'_> {
    fn bind_service(&mut self) -> Result<(), LdapError> {
        self.spec.bind_service(&mut self.conn)
    }
    fn find_user(&mut self, user: &str) -> Result<Option<LdapEntry>, LdapError> {
        self.spec.find_user(&mut self.conn, user)
    }
    fn bind_user(&mut self, dn: &str, password: &str) -> Result<(), LdapError> {
        self.conn.bind(dn, password)
    }
    fn close(self) {
        self.conn.unbind();
    }
}

/// Whether `password` is `user`'s, asking a session `open` gives. Nothing
/// is opened for an empty password (an empty simple bind is an
/// unauthenticated bind that succeeds), one holding NUL or not UTF-8, or
/// a name a login cannot have: those are wrong passwords. An unknown user
/// and (with the Active Directory preset) a disabled account are `false`
/// too, like a refused bind (49): the NAS, and the audit line, cannot
/// tell them apart.
fn check_with<S: Session>(
    spec: &LdapSpec,
    user: &str,
    password: &[u8],
    open: impl FnOnce() -> Result<S, LdapError>,
) -> Result<bool, LdapError> {
    if password.is_empty() || password.contains(&0) {
        return Ok(false);
    }
    let Ok(password) = std::str::from_utf8(password) else {
        return Ok(false);
    };
    if !filter::is_login_name(user) {
        return Ok(false);
    }
    let mut session = open()?;
    let dn = match spec.user_dn_for(user) {
        Some(dn) => dn,
        None => {
            session.bind_service()?;
            match session.find_user(user)? {
                Some(entry) if !spec.is_disabled(&entry) => entry.dn,
                // Unknown or disabled: never a bind as the user. A bind
                // as a DN that cannot exist takes the place of it, so that
                // the answer costs the same round trips as a wrong
                // password and its timing does not tell the NAS (or
                // whoever watches it) which user names exist.
                _ => {
                    let _ = session.bind_user(&decoy_dn(&spec.base), password);
                    session.close();
                    return Ok(false);
                }
            }
        }
    };
    let right = match session.bind_user(&dn, password) {
        Ok(()) => true,
        Err(e) if e.is_wrong_password() => false,
        Err(e) => return Err(e),
    };
    session.close();
    Ok(right)
}

/// The DN bound as in place of an unknown or disabled user's: under the
/// search base, named so no entry has it. The directory answers it as a
/// wrong password (invalidCredentials), after the same work.
fn decoy_dn(base: &str) -> String {
    const DECOY: &str = "cn=smsotp-no-such-user-9f1c2a";
    if base.is_empty() {
        DECOY.to_owned()
    } else {
        format!("{DECOY},{base}")
    }
}

/// `primary = { kind = "ldap" }`: a bind as the user, with the settings of
/// a `[[directory]] kind = "ldap"`.
pub struct LdapPrimary {
    spec: LdapSpec,
    /// The trust anchors (system bundle and `ca_file`), loaded once per
    /// configuration generation.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl LdapPrimary {
    /// Checks passwords with these settings. The trust anchors are loaded
    /// now, so a bad `ca_file` stops the server at start (and `--check`)
    /// rather than failing every login.
    pub fn new(spec: LdapSpec) -> Result<Self, PrimaryError> {
        let mut p = LdapPrimary { spec, tls: None };
        p.tls = p.spec.tls_config().map_err(|e| p.error(e))?;
        Ok(p)
    }

    /// The directory in messages: its URL is in each error already, so
    /// only a `name` of its own is added.
    fn label(&self) -> String {
        match self.spec.urls.first() {
            Some(u) if u.text == self.spec.name => "ldap directory".to_owned(),
            _ => format!("ldap directory \"{}\"", self.spec.name),
        }
    }

    fn open(&self) -> Result<Live<'_>, LdapError> {
        Ok(Live {
            spec: &self.spec,
            conn: self.spec.connect_with(self.tls.clone())?,
        })
    }

    fn error(&self, source: LdapError) -> PrimaryError {
        let directory = self.label();
        if source.is_unavailable() {
            PrimaryError::DirectoryUnavailable { directory, source }
        } else {
            PrimaryError::DirectoryFailed { directory, source }
        }
    }
}

impl PrimaryAuth for LdapPrimary {
    fn check(&self, user: &str, password: &[u8]) -> Result<bool, PrimaryError> {
        check_with(&self.spec, user, password, || self.open()).map_err(|e| self.error(e))
    }

    fn checks_password(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use smsotp_core::config::{Config, DirectorySpec};

    use super::*;

    /// A directory of one script: who exists, which password is right,
    /// and every step taken, in order.
    #[derive(Default)]
    struct Script {
        entries: Vec<LdapEntry>,
        password: &'static str,
        /// Binds as the user fail with this instead of an answer.
        user_bind_error: Option<fn() -> LdapError>,
        steps: RefCell<Vec<String>>,
    }

    struct FakeSession<'a>(&'a Script);

    impl Session for FakeSession<'_> {
        fn bind_service(&mut self) -> Result<(), LdapError> {
            self.0.steps.borrow_mut().push("bind service".into());
            Ok(())
        }
        fn find_user(&mut self, user: &str) -> Result<Option<LdapEntry>, LdapError> {
            self.0.steps.borrow_mut().push(format!("find {user}"));
            let found: Vec<_> = (self.0.entries.iter())
                .filter(|e| e.dn.starts_with(&format!("uid={user},")))
                .cloned()
                .collect();
            match found.len() {
                0 | 1 => Ok(found.into_iter().next()),
                _ => Err(LdapError::SeveralEntries {
                    url: "ldaps://fake".into(),
                    user: user.into(),
                }),
            }
        }
        fn bind_user(&mut self, dn: &str, password: &str) -> Result<(), LdapError> {
            self.0.steps.borrow_mut().push(format!("bind {dn}"));
            if let Some(e) = self.0.user_bind_error {
                return Err(e());
            }
            if password == self.0.password && self.0.entries.iter().any(|e| e.dn == dn) {
                Ok(())
            } else {
                Err(LdapError::Bind {
                    url: "ldaps://fake".into(),
                    dn: dn.into(),
                    code: 49,
                    message: String::new(),
                })
            }
        }
        fn close(self) {
            self.0.steps.borrow_mut().push("close".into());
        }
    }

    fn entry(user: &str, uac: Option<&str>) -> LdapEntry {
        let mut attributes = vec![("mobile".to_owned(), vec![b"+12025550123".to_vec()])];
        if let Some(u) = uac {
            attributes.push(("userAccountControl".into(), vec![u.as_bytes().to_vec()]));
        }
        LdapEntry {
            dn: format!("uid={user},ou=people,dc=example,dc=org"),
            attributes,
        }
    }

    fn spec(extra: &str) -> LdapSpec {
        let text = format!(
            "[[directory]]\nkind = \"ldap\"\nurls = [\"ldaps://ldap.example.org\"]\n\
             base = \"dc=example,dc=org\"\n{extra}"
        );
        let config = Config::from_toml(std::path::Path::new("/t.toml"), &text).unwrap();
        match config.directories.into_iter().next() {
            Some(DirectorySpec::Ldap(s)) => *s,
            other => panic!("{other:?}"),
        }
    }

    fn run(spec: &LdapSpec, s: &Script, user: &str, pw: &[u8]) -> Result<bool, LdapError> {
        check_with(spec, user, pw, || Ok(FakeSession(s)))
    }

    fn steps(s: &Script) -> Vec<String> {
        s.steps.take()
    }

    #[test]
    fn right_password_binds_as_the_entry_found() {
        let spec = spec("");
        let s = Script {
            entries: vec![entry("alice", None)],
            password: "alice-pw",
            ..Script::default()
        };
        assert!(run(&spec, &s, "alice", b"alice-pw").unwrap());
        assert_eq!(
            steps(&s),
            [
                "bind service",
                "find alice",
                "bind uid=alice,ou=people,dc=example,dc=org",
                "close"
            ]
        );
        assert!(!run(&spec, &s, "alice", b"wrong").unwrap());
        assert_eq!(steps(&s).len(), 4, "a wrong password is a refused bind");
    }

    #[test]
    fn unknown_user_is_a_wrong_password_with_a_decoy_bind_not_a_user_bind() {
        let spec = spec("");
        let s = Script {
            entries: vec![entry("alice", None)],
            password: "pw",
            ..Script::default()
        };
        assert!(!run(&spec, &s, "mallory", b"pw").unwrap());
        // As many round trips as a wrong password, bound as no one's DN.
        let decoy = "bind cn=smsotp-no-such-user-9f1c2a,dc=example,dc=org";
        assert_eq!(steps(&s), ["bind service", "find mallory", decoy, "close"]);
        assert!(!run(&spec, &s, "alice", b"wrong").unwrap());
        assert_eq!(steps(&s).len(), 4, "the same steps as an unknown user");
    }

    #[test]
    fn nothing_is_opened_for_an_empty_or_unsendable_password_or_a_bad_name() {
        let spec = spec("");
        let s = Script {
            entries: vec![entry("alice", None)],
            password: "",
            ..Script::default()
        };
        let opened = std::cell::Cell::new(0);
        let go = |user: &str, pw: &[u8]| {
            check_with(&spec, user, pw, || {
                opened.set(opened.get() + 1);
                Ok(FakeSession(&s))
            })
        };
        assert!(!go("alice", b"").unwrap());
        assert!(!go("alice", b"pw\0").unwrap());
        assert!(!go("alice", b"\xff\xfe").unwrap());
        assert!(!go("a b", b"pw").unwrap());
        assert!(!go("a:b", b"pw").unwrap());
        assert_eq!(opened.get(), 0);
        assert!(steps(&s).is_empty());
    }

    #[test]
    fn a_disabled_ad_account_is_never_bound_as_even_with_its_password() {
        let ad = spec("preset = \"active_directory\"\n");
        let s = Script {
            entries: vec![entry("erin", Some("514")), entry("dave", Some("512"))],
            password: "pw",
            ..Script::default()
        };
        assert!(!run(&ad, &s, "erin", b"pw").unwrap());
        let decoy = "bind cn=smsotp-no-such-user-9f1c2a,dc=example,dc=org";
        assert_eq!(steps(&s), ["bind service", "find erin", decoy, "close"]);
        assert!(run(&ad, &s, "dave", b"pw").unwrap());
        // Without the preset, userAccountControl means nothing.
        assert!(run(&spec(""), &s, "erin", b"pw").unwrap());
    }

    #[test]
    fn a_user_dn_template_binds_without_a_search() {
        let spec = spec("user_dn = \"uid={user},ou=people,dc=example,dc=org\"\n");
        let s = Script {
            entries: vec![entry("alice", None)],
            password: "pw",
            ..Script::default()
        };
        assert!(run(&spec, &s, "alice", b"pw").unwrap());
        assert_eq!(
            steps(&s),
            ["bind uid=alice,ou=people,dc=example,dc=org", "close"]
        );
        assert!(!run(&spec, &s, "bob", b"pw").unwrap());
        // The name is escaped into the DN.
        assert!(!run(&spec, &s, "x,ou=admins", b"pw").unwrap());
        assert_eq!(
            steps(&s)[2],
            "bind uid=x\\,ou\\=admins,ou=people,dc=example,dc=org"
        );
    }

    #[test]
    fn failures_are_errors_not_answers() {
        let spec = spec("");
        // Two entries for one user.
        let s = Script {
            entries: vec![entry("alice", None), entry("alice", None)],
            password: "pw",
            ..Script::default()
        };
        let e = run(&spec, &s, "alice", b"pw").unwrap_err();
        assert!(matches!(e, LdapError::SeveralEntries { .. }), "{e}");
        // A bind refused for another reason than the password.
        let s = Script {
            entries: vec![entry("alice", None)],
            password: "pw",
            user_bind_error: Some(|| LdapError::Bind {
                url: "ldaps://fake".into(),
                dn: "uid=alice".into(),
                code: 53,
                message: "unwilling".into(),
            }),
            ..Script::default()
        };
        assert!(run(&spec, &s, "alice", b"pw").is_err());
        // Cannot connect: an error, classified as unavailable by the primary.
        let e = check_with(&spec, "alice", b"pw", || {
            Err::<FakeSession<'_>, _>(LdapError::Timeout {
                url: "ldaps://fake".into(),
                step: "connecting",
            })
        })
        .unwrap_err();
        let p = LdapPrimary::new(spec.clone()).unwrap().error(e);
        assert!(matches!(p, PrimaryError::DirectoryUnavailable { .. }));
        assert_eq!(
            p.to_string(),
            "ldap directory: ldaps://fake: no answer within the timeout while connecting"
        );
        let named = LdapPrimary::new(LdapSpec {
            name: "corp".into(),
            ..spec.clone()
        })
        .unwrap();
        let p = named.error(LdapError::SeveralEntries {
            url: "ldaps://fake".into(),
            user: "alice".into(),
        });
        assert!(matches!(p, PrimaryError::DirectoryFailed { .. }));
        assert!(
            p.to_string()
                .starts_with("ldap directory \"corp\": ldaps://fake:"),
            "{p}"
        );
    }

    #[test]
    fn a_missing_ca_file_is_found_at_start() {
        let spec = spec("ca_file = \"/nonexistent/smsotp-ca.pem\"\n");
        let Err(e) = LdapPrimary::new(spec) else {
            panic!("a missing CA file was accepted")
        };
        assert!(matches!(e, PrimaryError::DirectoryFailed { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/smsotp-ca.pem"), "{e}");
    }

    #[test]
    fn the_real_primary_sends_nothing_for_an_empty_password() {
        // A server that does not exist: any attempt would be an error.
        let spec = spec("connect_timeout = \"100ms\"\n");
        let spec = LdapSpec {
            urls: vec![
                smsotp_core::directory::ldap::LdapUrl::parse("ldaps://127.0.0.1:1").unwrap(),
            ],
            ..spec
        };
        let p = LdapPrimary::new(spec).unwrap();
        assert!(!p.check("alice", b"").unwrap());
        assert!(p.check("alice", b"pw").is_err(), "it can fail");
    }
}
