//! Message catalogues: every text a user reads (the SMS, PAM prompts and
//! messages, RADIUS Reply-Messages) in each language, and how a login's
//! language is chosen.
//!
//! Seven catalogues are built in (`core/messages/<lang>.toml`: en, de,
//! fr, es, pt, it, nl), each a flat list of [`KEYS`] with `{placeholders}`;
//! `en` is the reference, and a test holds every other to exactly its
//! keys and placeholders. An admin overrides single keys, or adds a
//! language, with `<lang>.toml` files in `messages.dir`
//! ([`Messages::load`]). A file that is wrong never fails a login: its
//! bad keys are left out (the shipped text, or English, stands in) and
//! each problem is reported ([`Messages::problems`]) for check-config
//! and the log.
//!
//! The SMS of a language, in this order: its override file's `sms`, else
//! `otp.message` when the admin set it, else the shipped `sms`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::config::{MessageSettings, MessageTemplate};

/// The language every other falls back to.
pub const ENGLISH: &str = "en";

/// Where the packages install the shipped catalogues, for reference (the
/// texts in force are built in).
pub const SHIPPED_DIR: &str = "/usr/share/smsotp/messages";

/// The built-in catalogues: language tag and the TOML text.
pub const SHIPPED: [(&str, &str); 7] = [
    ("en", include_str!("../messages/en.toml")),
    ("de", include_str!("../messages/de.toml")),
    ("fr", include_str!("../messages/fr.toml")),
    ("es", include_str!("../messages/es.toml")),
    ("pt", include_str!("../messages/pt.toml")),
    ("it", include_str!("../messages/it.toml")),
    ("nl", include_str!("../messages/nl.toml")),
];

const N: &[&str] = &["n"];
const PHONE: &[&str] = &["phone"];
const NONE: &[&str] = &[];

/// Every key a catalogue has, with the placeholders its text may use.
/// `sms` must also contain `{code}`.
pub const KEYS: &[(&str, &[&str])] = &[
    ("sms", &["code", "host", "ttl", "user", "service"]),
    ("unit.second.one", N),
    ("unit.second.other", N),
    ("unit.minute.one", N),
    ("unit.minute.other", N),
    ("unit.hour.one", N),
    ("unit.hour.other", N),
    ("prompt.code", NONE),
    ("prompt.backup", NONE),
    ("prompt.enroll", NONE),
    ("prompt.code_sent_to", PHONE),
    ("intro.code_sent", PHONE),
    ("intro.enroll_code_sent", PHONE),
    ("intro.backup_no_phone", NONE),
    ("intro.backup_send_failed", NONE),
    ("intro.enroll_number", NONE),
    ("tries_left.one", N),
    ("tries_left.other", N),
    ("retry.wrong_code.one", N),
    ("retry.wrong_code.other", N),
    ("retry.expired", NONE),
    ("retry.resent", PHONE),
    ("retry.cooldown.one", N),
    ("retry.cooldown.other", N),
    ("retry.no_resends_left", NONE),
    ("retry.resend_limited", NONE),
    ("retry.need_backup", NONE),
    ("retry.need_number", NONE),
    ("retry.bad_number", &["reason"]),
    ("retry.country_not_allowed", NONE),
    ("accept.backup_code.one", N),
    ("accept.backup_code.other", N),
    ("accept.backup_codes_low", NONE),
    ("accept.enrolled", NONE),
    ("reject.wrong_code", NONE),
    ("reject.expired", NONE),
    ("reject.locked_out", NONE),
    ("reject.wait", &["wait"]),
    ("reject.system_limit", NONE),
    ("reject.no_phone", NONE),
    ("reject.send_failed", NONE),
    ("reject.country_not_allowed", NONE),
    ("reject.unknown_challenge", NONE),
    ("reject.no_code_entered", NONE),
    ("hint.append", NONE),
    ("hint.append_backup", NONE),
    ("unavailable.service", NONE),
    ("unavailable.config", NONE),
    ("round_over", NONE),
];

/// Placeholders a text may leave out although English has them: the
/// reason a number was refused is English text, which a translation
/// may rather not show.
#[cfg(test)]
const OPTIONAL_PLACEHOLDERS: &[&str] = &["reason"];

fn allowed(key: &str) -> Option<&'static [&'static str]> {
    KEYS.iter().find(|(k, _)| *k == key).map(|(_, p)| *p)
}

/// The `{names}` in `text`, or why they cannot be read.
pub fn placeholders(text: &str) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err("has a '}' without an opening '{'".into());
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err("has a '{' without a closing '}'".into());
        };
        let name = &after[..close];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(format!("has a bad placeholder {{{name}}}"));
        }
        out.insert(name.to_owned());
        rest = &after[close + 1..];
    }
    Ok(out)
}

/// `text` with each `{name}` of `args` replaced by its value.
fn fill(text: &str, args: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let name = &after[..close];
                match args.iter().find(|(k, _)| *k == name) {
                    Some((_, v)) => out.push_str(v),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A language tag as the catalogues name it: the primary subtag in lower
/// case ("de" from "de_DE.UTF-8", "pt-BR", "DE"), or `None` when `text`
/// does not start with two or three letters.
pub fn normalize_tag(text: &str) -> Option<String> {
    let primary = text
        .split(['_', '-', '.', '@'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    ((2..=3).contains(&primary.len()) && primary.bytes().all(|b| b.is_ascii_lowercase()))
        .then_some(primary)
}

/// The language of a number's country (ISO 3166 alpha-2), for `language
/// = "by_number"`; `None` where none of the shipped languages is the
/// usual one. Where a country has several: Switzerland reads German
/// (the majority), Belgium Dutch (the majority), Luxembourg French,
/// Canada English.
pub fn language_of_region(region: &str) -> Option<&'static str> {
    Some(match region {
        "DE" | "AT" | "CH" | "LI" => "de",
        "FR" | "LU" | "MC" | "SN" | "CI" | "CM" | "MG" | "ML" | "BF" | "NE" | "TG" | "BJ"
        | "GA" | "CG" | "CD" | "GN" | "HT" | "RE" | "GP" | "MQ" | "GF" | "PF" | "NC" | "YT"
        | "PM" | "BL" | "MF" | "WF" => "fr",
        "ES" | "MX" | "AR" | "CO" | "PE" | "VE" | "CL" | "EC" | "GT" | "CU" | "BO" | "DO"
        | "HN" | "PY" | "SV" | "NI" | "CR" | "PA" | "UY" | "GQ" => "es",
        "PT" | "BR" | "AO" | "MZ" | "CV" | "GW" | "ST" | "TL" => "pt",
        "IT" | "SM" | "VA" => "it",
        "NL" | "BE" | "SR" | "AW" | "CW" | "SX" | "BQ" => "nl",
        "GB" | "US" | "IE" | "AU" | "NZ" | "CA" => "en",
        _ => return None,
    })
}

/// One language's texts: every key of [`KEYS`], and its SMS template.
#[derive(Debug, Clone)]
pub struct Catalogue {
    lang: String,
    texts: BTreeMap<&'static str, String>,
    sms: MessageTemplate,
}

/// Something wrong in a catalogue file, said as where, what and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageProblem {
    /// The file.
    pub file: PathBuf,
    /// The key, when the problem is one key's.
    pub key: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for MessageProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{}: {k}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Reads a catalogue's TOML into flat keys ("a.b.c" from nested tables
/// or dotted keys).
fn flatten(
    text: &str,
    file: &Path,
    problems: &mut Vec<MessageProblem>,
) -> Option<BTreeMap<String, String>> {
    let value: toml::Table = match toml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            problems.push(MessageProblem {
                file: file.to_owned(),
                key: None,
                message: format!(
                    "is not valid TOML ({}); write one key = \"text\" per line",
                    e.message()
                ),
            });
            return None;
        }
    };
    fn walk(
        prefix: &str,
        t: &toml::Table,
        out: &mut BTreeMap<String, String>,
        file: &Path,
        problems: &mut Vec<MessageProblem>,
    ) {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::String(s) => {
                    out.insert(key, s.clone());
                }
                toml::Value::Table(t) => walk(&key, t, out, file, problems),
                _ => problems.push(MessageProblem {
                    file: file.to_owned(),
                    key: Some(key),
                    message: "is not a string; write the text in double quotes".into(),
                }),
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", &value, &mut out, file, problems);
    Some(out)
}

/// Checks one text for `key`: a known key, placeholders it may use (and,
/// for `sms`, a valid template). `Err` says what is wrong and the fix.
fn check_text(key: &str, text: &str) -> Result<(), String> {
    let Some(allowed) = allowed(key) else {
        let near = KEYS
            .iter()
            .map(|(k, _)| *k)
            .find(|k| k.split('.').next() == key.split('.').next())
            .map(|k| format!(" (such as {k})"))
            .unwrap_or_default();
        return Err(format!(
            "is not a message key; use one of the keys of the shipped en.toml{near}"
        ));
    };
    let used = placeholders(text)?;
    if let Some(bad) = used.iter().find(|p| !allowed.contains(&p.as_str())) {
        return Err(if allowed.is_empty() {
            format!("has {{{bad}}}, but this text takes no placeholders; remove it")
        } else {
            format!(
                "has {{{bad}}}, which this text does not take; use {}",
                allowed
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
    }
    if key == "sms" {
        MessageTemplate::parse(text)?;
    }
    Ok(())
}

impl Catalogue {
    fn from_texts(lang: &str, texts: BTreeMap<&'static str, String>) -> Catalogue {
        let sms = texts
            .get("sms")
            .and_then(|t| MessageTemplate::parse(t).ok())
            .unwrap_or_else(MessageTemplate::english_default);
        Catalogue {
            lang: lang.to_owned(),
            texts,
            sms,
        }
    }

    /// A shipped catalogue, parsed (every key checked by this module's
    /// tests, so a key missing here is a build that was never tested:
    /// English stands in for it).
    fn parse_shipped(lang: &str, text: &str, english: Option<&Catalogue>) -> Catalogue {
        let mut problems = Vec::new();
        let flat = flatten(text, Path::new(lang), &mut problems).unwrap_or_default();
        let mut texts = BTreeMap::new();
        for (key, _) in KEYS {
            match flat.get(*key) {
                Some(t) => {
                    texts.insert(*key, t.clone());
                }
                None => {
                    if let Some(t) = english.and_then(|e| e.texts.get(key)) {
                        texts.insert(*key, t.clone());
                    }
                }
            }
        }
        Catalogue::from_texts(lang, texts)
    }

    /// The English catalogue as shipped.
    pub fn english() -> &'static Catalogue {
        static EN: OnceLock<Catalogue> = OnceLock::new();
        EN.get_or_init(|| Catalogue::parse_shipped(ENGLISH, SHIPPED[0].1, None))
    }

    /// A shipped catalogue as built in, or `None` for a language not shipped.
    pub fn shipped(lang: &str) -> Option<&'static Catalogue> {
        static ALL: OnceLock<Vec<Catalogue>> = OnceLock::new();
        ALL.get_or_init(|| {
            SHIPPED
                .iter()
                .map(|(l, t)| Catalogue::parse_shipped(l, t, Some(Catalogue::english())))
                .collect()
        })
        .iter()
        .find(|c| c.lang == lang)
    }

    /// Its language tag ("de").
    pub fn lang(&self) -> &str {
        &self.lang
    }

    /// The text of `key` as written, placeholders unfilled.
    pub fn raw(&self, key: &str) -> &str {
        match self.texts.get(key) {
            Some(t) => t,
            None => Catalogue::english()
                .texts
                .get(key)
                .map(String::as_str)
                .unwrap_or(""),
        }
    }

    /// The text of `key` with `args` filled in.
    pub fn text(&self, key: &str, args: &[(&str, &str)]) -> String {
        fill(self.raw(key), args)
    }

    /// Whether `n` takes the `.one` form. French and Portuguese say "0
    /// essai" like "1 essai"; the others only 1.
    fn is_one(&self, n: u64) -> bool {
        match self.lang.as_str() {
            "fr" | "pt" => n <= 1,
            _ => n == 1,
        }
    }

    /// `base.one` or `base.other` for `n`, with `{n}` and `args` filled in.
    pub fn plural(&self, base: &str, n: u64, args: &[(&str, &str)]) -> String {
        let key = format!("{base}.{}", if self.is_one(n) { "one" } else { "other" });
        let count = n.to_string();
        let mut all = vec![("n", count.as_str())];
        all.extend_from_slice(args);
        fill(self.raw(&key), &all)
    }

    /// The SMS template of this language.
    pub fn sms(&self) -> &MessageTemplate {
        &self.sms
    }

    /// A duration for people, in whole units: "5 minutes", "90
    /// seconds", "1 hour"; parts of a second round up.
    pub fn duration(&self, d: Duration) -> String {
        let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        let (n, unit) = if s >= 3600 && s % 3600 == 0 {
            (s / 3600, "unit.hour")
        } else if s >= 60 && s % 60 == 0 {
            (s / 60, "unit.minute")
        } else {
            (s, "unit.second")
        };
        self.plural(unit, n, &[])
    }

    /// A wait in whole minutes (at least one), or whole hours from two
    /// hours on, rounded up: "1 minute", "17 minutes", "3 hours".
    pub fn about(&self, wait: Duration) -> String {
        let minutes = wait.as_secs().div_ceil(60).max(1);
        if minutes < 120 {
            self.plural("unit.minute", minutes, &[])
        } else {
            self.plural("unit.hour", minutes.div_ceil(60), &[])
        }
    }
}

/// Every language a host can speak: the shipped catalogues with the
/// admin's overrides, the languages the admin added, and what was wrong
/// in their files.
#[derive(Debug, Clone)]
pub struct Messages {
    catalogues: BTreeMap<String, Catalogue>,
    default_language: String,
    problems: Vec<MessageProblem>,
}

impl Messages {
    /// The shipped catalogues and `otp.message` (when `set`), without
    /// reading any file: what tests and a host without `messages.dir` use.
    pub fn shipped(settings: &MessageSettings, otp_message: Option<&MessageTemplate>) -> Messages {
        let mut m = Messages::built_in(settings, otp_message);
        m.check_default(Path::new("messages.default_language"));
        m
    }

    fn built_in(settings: &MessageSettings, otp_message: Option<&MessageTemplate>) -> Messages {
        let mut catalogues = BTreeMap::new();
        for (lang, _) in SHIPPED {
            if let Some(c) = Catalogue::shipped(lang) {
                let mut c = c.clone();
                if let Some(m) = otp_message {
                    c.sms = m.clone();
                }
                catalogues.insert(lang.to_owned(), c);
            }
        }
        Messages {
            catalogues,
            default_language: settings.default_language.clone(),
            problems: Vec::new(),
        }
    }

    fn check_default(&mut self, file: &Path) {
        if !self.catalogues.contains_key(&self.default_language) {
            self.problems.push(MessageProblem {
                file: file.to_owned(),
                key: None,
                message: format!(
                    "messages.default_language is \"{}\", which has no catalogue; English is \
                     used. Add {}.toml with every key to messages.dir, or name one of {}",
                    self.default_language,
                    self.default_language,
                    self.languages().collect::<Vec<_>>().join(", ")
                ),
            });
            ENGLISH.clone_into(&mut self.default_language);
        }
    }

    /// The shipped catalogues with the `<lang>.toml` files of
    /// `settings.dir` applied: a file for a shipped language overrides
    /// the keys it has; a file for another language adds it, English
    /// standing in for each key it lacks (a problem, reported). A key
    /// that is unknown or has a bad placeholder is left out and
    /// reported; a missing directory is no problem. Never fails: a login
    /// must not fail for a message file.
    pub fn load(settings: &MessageSettings, otp_message: Option<&MessageTemplate>) -> Messages {
        let mut m = Messages::built_in(settings, otp_message);
        let entries = match std::fs::read_dir(&settings.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                m.check_default(&settings.dir);
                return m;
            }
            Err(e) => {
                m.problems.push(MessageProblem {
                    file: settings.dir.clone(),
                    key: None,
                    message: format!(
                        "cannot be read ({e}); make it a directory root can read, or set \
                         messages.dir elsewhere"
                    ),
                });
                m.check_default(&settings.dir);
                return m;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for path in files {
            m.apply_file(&path);
        }
        m.check_default(&settings.dir);
        m
    }

    fn apply_file(&mut self, path: &Path) {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let Some(lang) = normalize_tag(stem).filter(|l| l == stem) else {
            self.problems.push(MessageProblem {
                file: path.to_owned(),
                key: None,
                message: "is not named after a language; name it <lang>.toml with a two- or \
                          three-letter lower-case tag, e.g. de.toml"
                    .into(),
            });
            return;
        };
        let text = match crate::files::read_checked(path, crate::files::FileRule::Data) {
            Ok(t) => t,
            Err(e) => {
                self.problems.push(MessageProblem {
                    file: path.to_owned(),
                    key: None,
                    message: format!("is not used: {e}"),
                });
                return;
            }
        };
        let Some(flat) = flatten(&text, path, &mut self.problems) else {
            return;
        };
        let mut good: BTreeMap<&'static str, String> = BTreeMap::new();
        for (key, t) in &flat {
            match check_text(key, t) {
                Ok(()) => {
                    if let Some((k, _)) = KEYS.iter().find(|(k, _)| k == key) {
                        good.insert(k, t.clone());
                    }
                }
                Err(why) => self.problems.push(MessageProblem {
                    file: path.to_owned(),
                    key: Some(key.clone()),
                    message: format!("{why}; the shipped text is used instead"),
                }),
            }
        }
        let base = match self.catalogues.get(&lang) {
            Some(c) => c.clone(),
            None => {
                let missing: Vec<&str> = KEYS
                    .iter()
                    .map(|(k, _)| *k)
                    .filter(|k| !good.contains_key(k))
                    .collect();
                if !missing.is_empty() {
                    self.problems.push(MessageProblem {
                        file: path.to_owned(),
                        key: None,
                        message: format!(
                            "adds the language \"{lang}\" but lacks {} (English is shown for \
                             them); copy them from en.toml and translate them",
                            missing.join(", ")
                        ),
                    });
                }
                let mut c = Catalogue::english().clone();
                c.lang.clone_from(&lang);
                c
            }
        };
        let mut texts = base.texts;
        let sms_set = good.contains_key("sms");
        texts.extend(good);
        let mut c = Catalogue::from_texts(&lang, texts);
        if !sms_set {
            c.sms = base.sms;
        }
        self.catalogues.insert(lang, c);
    }

    /// The catalogue of `lang`, if this host has one.
    pub fn get(&self, lang: &str) -> Option<&Catalogue> {
        self.catalogues.get(lang)
    }

    /// The catalogue of `messages.default_language` (English when that
    /// has none).
    pub fn default_catalogue(&self) -> &Catalogue {
        self.catalogues
            .get(&self.default_language)
            .or_else(|| self.catalogues.get(ENGLISH))
            .unwrap_or_else(|| Catalogue::english())
    }

    /// The catalogue of the first of `candidates` this host has, else the
    /// default one.
    pub fn pick<'a>(&self, candidates: impl IntoIterator<Item = &'a str>) -> &Catalogue {
        candidates
            .into_iter()
            .find_map(|l| normalize_tag(l).and_then(|l| self.catalogues.get(&l)))
            .unwrap_or_else(|| self.default_catalogue())
    }

    /// The tags of every language this host has, sorted.
    pub fn languages(&self) -> impl Iterator<Item = &str> {
        self.catalogues.keys().map(String::as_str)
    }

    /// Per language, the SMS template it sends (for counting segments).
    pub fn sms_templates(&self) -> Vec<(&str, &MessageTemplate)> {
        self.catalogues
            .iter()
            .map(|(l, c)| (l.as_str(), &c.sms))
            .collect()
    }

    /// What was wrong in the files of `messages.dir`.
    pub fn problems(&self) -> &[MessageProblem] {
        &self.problems
    }
}

#[cfg(test)]
mod tests;
