//! Does each SMS template fit one GSM-7 SMS? `smsotp check-config` renders
//! every language's template with the longest values its placeholders
//! take on this host ([`LongestValues`]), counts it with
//! [`crate::sms::segments`] and warns, naming the key, when one character
//! forces UCS-2 or the text needs more than one SMS: either makes each
//! login cost more, and a UCS-2 text may arrive cut into parts.
//!
//! The templates come as a list ([`SmsTemplate`]) so that every
//! language's catalogue can be checked the same way; [`configured`] gives
//! the config's own (`otp.message`).

use std::path::PathBuf;
use std::time::Duration;

use super::check::{ConfigWarning, Location};
use super::keys::see_also;
use super::{Alphabet, Config, MessageTemplate, MessageValues};
use crate::sms::segments::{self, Encoding, SegmentCount};

/// The longest PAM service name checked when no RADIUS client name is
/// longer: the longest of the services an SMS login commonly guards
/// (sshd, sudo, su, login, cockpit, gdm-password).
pub const LONGEST_PAM_SERVICE: &str = "gdm-password";

/// The user name checked: 32 characters, the longest most systems allow
/// (useradd's limit on Linux).
pub const LONGEST_USER: &str = "abcdefghijklmnopqrstuvwxyz012345";

/// One SMS template to check.
#[derive(Debug, Clone)]
pub struct SmsTemplate<'a> {
    /// Its language (`"en"`, `"de"`, …).
    pub language: String,
    /// The key that sets it, for the warning: `otp.message`, or a
    /// catalogue's key.
    pub key: String,
    /// The file it is set in.
    pub path: PathBuf,
    /// Where it stands in that file (1:1 when it is the built-in default).
    pub location: Location,
    /// The template.
    pub template: &'a MessageTemplate,
    /// The language's catalogue, which words `{ttl}`; `None`: English.
    pub catalogue: Option<&'a crate::messages::Catalogue>,
}

/// The config's own SMS template: `otp.message`, in English until the
/// catalogues name a language.
pub fn configured(cfg: &Config) -> Vec<SmsTemplate<'_>> {
    vec![SmsTemplate {
        language: "en".into(),
        key: "otp.message".into(),
        path: cfg.path.clone(),
        location: cfg
            .otp
            .message_at
            .unwrap_or(Location { line: 1, column: 1 }),
        template: &cfg.otp.message,
        catalogue: None,
    }]
}

/// Every language's SMS template as `messages` holds it (the override
/// file's `sms`, else `otp.message` when set, else the shipped text),
/// each named by where it is set: `otp.message` in the config, `sms` in
/// the language's file of `messages.dir`, or `sms` of the shipped
/// catalogue (as installed for reference under [`SHIPPED_DIR`]).
///
/// [`SHIPPED_DIR`]: crate::messages::SHIPPED_DIR
pub fn every_language<'a>(
    cfg: &'a Config,
    messages: &'a crate::messages::Messages,
) -> Vec<SmsTemplate<'a>> {
    messages
        .sms_templates()
        .into_iter()
        .map(|(lang, template)| {
            let file = cfg.messages.dir.join(format!("{lang}.toml"));
            let (key, path, location) = if cfg.otp.message_set && template == &cfg.otp.message {
                (
                    "otp.message".to_owned(),
                    cfg.path.clone(),
                    cfg.otp
                        .message_at
                        .unwrap_or(Location { line: 1, column: 1 }),
                )
            } else if file.is_file() {
                ("sms".to_owned(), file, Location { line: 1, column: 1 })
            } else {
                (
                    "sms".to_owned(),
                    std::path::Path::new(crate::messages::SHIPPED_DIR).join(format!("{lang}.toml")),
                    Location { line: 1, column: 1 },
                )
            };
            SmsTemplate {
                language: lang.to_owned(),
                key,
                path,
                location,
                template,
                catalogue: messages.get(lang),
            }
        })
        .collect()
}

/// The longest value of each placeholder, and where it comes from (for
/// people: check-config prints the notes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongestValues {
    /// A code of `otp.length` characters of `otp.alphabet`.
    pub code: String,
    /// The host name logins on this host put in `{host}`.
    pub host: String,
    /// `otp.ttl`.
    pub ttl: Duration,
    /// [`LONGEST_USER`].
    pub user: String,
    /// The longest of [`LONGEST_PAM_SERVICE`] and `radius:NAME` of each
    /// RADIUS client.
    pub service: String,
    /// What each value is, one line each: `("host", "this machine's host
    /// name, as logins here send it")`.
    pub notes: Vec<(&'static str, String)>,
}

impl LongestValues {
    /// The values for `cfg` on a host named `hostname` (the name logins
    /// here put in `{host}`, `flow::hostname`).
    pub fn for_config(cfg: &Config, hostname: &str) -> LongestValues {
        // Any character of either alphabet is one GSM-7 septet.
        let sample: &[u8] = match cfg.otp.alphabet {
            Alphabet::Digits => b"4829173650",
            Alphabet::Alphanumeric => b"K7PX9QWM3R",
        };
        let code: String = sample
            .iter()
            .cycle()
            .take(cfg.otp.length)
            .map(|&b| char::from(b))
            .collect();
        let radius = cfg
            .radius
            .iter()
            .flat_map(|r| r.clients.iter())
            .map(|c| format!("radius:{}", c.name))
            .max_by_key(|s| s.chars().count());
        let (service, service_note) = match radius {
            Some(r) if r.chars().count() > LONGEST_PAM_SERVICE.len() => {
                (r, "the longest RADIUS client's service".to_owned())
            }
            _ => (
                LONGEST_PAM_SERVICE.to_owned(),
                "the longest common PAM service of sshd, sudo, su, login, cockpit, gdm-password"
                    .to_owned(),
            ),
        };
        let notes = vec![
            (
                "code",
                format!("otp.length = {}; a sample, not a code", cfg.otp.length),
            ),
            (
                "host",
                "this machine's host name, as logins here send it; a longer one elsewhere \
                 makes a longer SMS"
                    .to_owned(),
            ),
            ("ttl", "otp.ttl".to_owned()),
            (
                "user",
                "32 characters, the longest Linux user name".to_owned(),
            ),
            ("service", service_note),
        ];
        LongestValues {
            code,
            host: hostname.to_owned(),
            ttl: cfg.otp.ttl,
            user: LONGEST_USER.to_owned(),
            service,
            notes,
        }
    }
}

/// One template rendered with the longest values, counted.
#[derive(Debug, Clone)]
pub struct SmsFit {
    /// The template's language.
    pub language: String,
    /// The key that sets it.
    pub key: String,
    /// The text with the longest values (a sample code, not a real one).
    pub text: String,
    /// Its encoding, length and SMS count.
    pub count: SegmentCount,
    /// What is wrong with it: a character forcing UCS-2, more than one
    /// SMS. Empty when it fits one GSM-7 SMS.
    pub warnings: Vec<ConfigWarning>,
}

impl SmsFit {
    /// "GSM-7, 97 septets, 1 SMS" for people.
    pub fn summary(&self) -> String {
        let c = &self.count;
        format!(
            "{}, {} {}, {}",
            c.encoding,
            c.units,
            c.encoding.unit_name(),
            crate::counted(c.segments, "SMS", "SMS")
        )
    }
}

/// Renders and counts each template, with its warnings.
pub fn check(templates: &[SmsTemplate<'_>], values: &LongestValues) -> Vec<SmsFit> {
    templates.iter().map(|t| check_one(t, values)).collect()
}

fn check_one(t: &SmsTemplate<'_>, v: &LongestValues) -> SmsFit {
    let values = MessageValues {
        code: &v.code,
        host: &v.host,
        ttl: v.ttl,
        user: &v.user,
        service: &v.service,
    };
    let text = match t.catalogue {
        Some(lang) => t.template.render_in(&values, lang),
        None => t.template.render(&values),
    };
    let count = segments::count(&text);
    let warn = |message: String| ConfigWarning {
        path: t.path.clone(),
        location: t.location,
        key: t.key.clone(),
        message: format!("{message}; {}", see_also("otp.message")),
    };
    let mut warnings = Vec::new();
    if let Some(n) = count.first_non_gsm {
        let fix = match n.replacement() {
            Some(r) => format!("write {r:?} instead"),
            None => "reword without it".to_owned(),
        };
        warnings.push(warn(format!(
            "the {} SMS goes as UCS-2 because of {:?} (U+{:04X}), character {} of the \
             rendered text: one SMS then holds {} characters instead of {}; {fix}, \
             so that it goes as GSM-7",
            t.language,
            n.character,
            u32::from(n.character),
            n.position,
            segments::UCS2_SINGLE,
            segments::GSM7_SINGLE,
        )));
    }
    if count.segments > 1 {
        let (single, _) = count.encoding.limits();
        let shorter = match count.encoding {
            Encoding::Gsm7 => "shorten it".to_owned(),
            Encoding::Ucs2 => format!(
                "shorten it, or keep to GSM-7 characters ({} septets in one SMS)",
                segments::GSM7_SINGLE
            ),
        };
        warnings.push(warn(format!(
            "the {} SMS takes {} SMS with the longest values ({} {}, {}; one SMS holds \
             {single}), so each code costs {} messages; {shorter}",
            t.language,
            count.segments,
            count.units,
            count.encoding.unit_name(),
            count.encoding,
            count.segments,
        )));
    }
    SmsFit {
        language: t.language.clone(),
        key: t.key.clone(),
        text: text.as_str().to_owned(),
        count,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse;

    fn fit(toml: &str, host: &str) -> SmsFit {
        let cfg = parse(toml).unwrap();
        let v = LongestValues::for_config(&cfg, host);
        check(&configured(&cfg), &v).remove(0)
    }

    #[test]
    fn the_default_template_fits_one_gsm7_sms() {
        let f = fit("", "web1.example.net");
        assert_eq!(
            f.text,
            "482917 is your login code for web1.example.net. It expires in 5 minutes."
        );
        assert_eq!(f.count.encoding, Encoding::Gsm7);
        assert_eq!(f.count.segments, 1);
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
        assert_eq!(f.summary(), "GSM-7, 72 septets, 1 SMS");
    }

    #[test]
    fn longest_values_follow_the_config() {
        let cfg = parse(
            "[otp]\nlength = 8\nalphabet = \"alphanumeric\"\nttl = \"90s\"\n\
             message = \"{code} {user} {service} {ttl}\"\n",
        )
        .unwrap();
        let v = LongestValues::for_config(&cfg, "h");
        assert_eq!(v.code, "K7PX9QWM");
        assert_eq!(v.user.chars().count(), 32);
        assert_eq!(v.service, LONGEST_PAM_SERVICE);
        let f = check(&configured(&cfg), &v).remove(0);
        assert_eq!(
            f.text,
            format!("K7PX9QWM {LONGEST_USER} gdm-password 90 seconds")
        );
        // A RADIUS client with a longer name is the longest service.
        let cfg = parse(
            "[radius]\n[[radius.client]]\nname = \"vpn-gateway-frankfurt\"\naddress = \"192.0.2.1\"\n\
             secret_file = \"/etc/smsotp/secrets/vpn\"\n",
        )
        .unwrap();
        let v = LongestValues::for_config(&cfg, "h");
        assert_eq!(v.service, "radius:vpn-gateway-frankfurt");
    }

    #[test]
    fn a_ucs2_character_is_named_with_its_position_and_a_replacement() {
        let f = fit(
            "[otp]\nmessage = \"Your code: {code} – valid {ttl}\"\n",
            "h",
        );
        assert_eq!(f.count.encoding, Encoding::Ucs2);
        assert_eq!(f.warnings.len(), 1, "{:?}", f.warnings);
        let w = f.warnings[0].to_string();
        assert!(
            w.starts_with("/etc/smsotp/smsotp.toml:2:11: otp.message: the en SMS goes as UCS-2")
                && w.contains("'–' (U+2013), character 19")
                && w.contains("write \"-\" instead"),
            "{w}"
        );
        let f = fit("[otp]\nmessage = \"{code} 😀\"\n", "h");
        assert!(
            f.warnings[0].message.contains("reword without it"),
            "{:?}",
            f.warnings
        );
    }

    #[test]
    fn a_long_template_warns_with_its_count() {
        // 6 + 1 + 160 = 167 septets: two GSM-7 SMS.
        let long = "x".repeat(160);
        let f = fit(&format!("[otp]\nmessage = \"{{code}} {long}\"\n"), "h");
        assert_eq!((f.count.units, f.count.segments), (167, 2));
        assert_eq!(f.warnings.len(), 1);
        let m = &f.warnings[0].message;
        assert!(
            m.contains("takes 2 SMS") && m.contains("167 septets, GSM-7") && m.contains("shorten"),
            "{m}"
        );
        // A long host name alone can push it over.
        let body = "y".repeat(140);
        let f = fit(
            &format!("[otp]\nmessage = \"{{code}} {{host}} {body}\"\n"),
            "h",
        );
        assert_eq!(f.count.segments, 1);
        let f = fit(
            &format!("[otp]\nmessage = \"{{code}} {{host}} {body}\"\n"),
            &"h".repeat(20),
        );
        assert_eq!(f.count.segments, 2);
        // UCS-2 and long: both warnings.
        let f = fit(
            &format!("[otp]\nmessage = \"{{code}} ’{}\"\n", "z".repeat(70)),
            "h",
        );
        assert_eq!(f.warnings.len(), 2, "{:?}", f.warnings);
        assert!(f.warnings[1].message.contains("keep to GSM-7"));
    }

    #[test]
    fn every_language_is_checked() {
        let cfg = parse("").unwrap();
        let de = MessageTemplate::parse("{code} ist Ihr Anmeldecode für {host}.").unwrap();
        let mut list = configured(&cfg);
        list.push(SmsTemplate {
            language: "de".into(),
            key: "messages/de.toml: sms".into(),
            path: "/usr/share/smsotp/messages/de.toml".into(),
            location: Location { line: 3, column: 7 },
            template: &de,
            catalogue: None,
        });
        let fits = check(&list, &LongestValues::for_config(&cfg, "h"));
        assert_eq!(fits.len(), 2);
        // 'ü' is GSM-7.
        assert_eq!(fits[1].count.encoding, Encoding::Gsm7);
        assert!(fits.iter().all(|f| f.warnings.is_empty()));
    }
}
