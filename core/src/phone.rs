//! Phone numbers: E.164 normalisation with a default region, the country
//! allow-list, and masking for anything a person or a log sees.

use std::fmt;

use phonenumber::country::Id;
use phonenumber::Mode;

use crate::config::PhoneSettings;

/// A valid number in E.164 form ("+15550100123"). `Display` masks it.
#[derive(Clone, PartialEq, Eq)]
pub struct Phone {
    e164: String,
    region: Option<Id>,
}

/// Why a text is not a number a login can use. Each case carries the text
/// masked, and says the problem and its fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneError {
    /// Not digits and separators, or not a number at all.
    #[error("{}; {}", self.problem(), self.fix())]
    Unparsable(String),
    /// A national number, and no `phone.default_region` to read it in.
    #[error("{}; {}", self.problem(), self.fix())]
    NoRegion(String),
    /// Parsed, but not a number that exists in its country.
    #[error("{}; {}", self.problem(), self.fix())]
    Invalid(String),
}

impl PhoneError {
    /// What is wrong (the number masked).
    pub fn problem(&self) -> String {
        match self {
            PhoneError::Unparsable(m) => format!("\"{m}\" is not a phone number"),
            PhoneError::NoRegion(m) => {
                format!("\"{m}\" has no country code and no phone.default_region is set")
            }
            PhoneError::Invalid(m) => format!("{m} is not a valid number for its country"),
        }
    }

    /// How to put it right.
    pub fn fix(&self) -> &'static str {
        match self {
            PhoneError::Unparsable(_) => {
                "write it in international form, e.g. \"+15550100123\""
            }
            PhoneError::NoRegion(_) => {
                "write it in international form, with + and the country code (e.g. \"+49 171 1234567\"), \
                 or set phone.default_region to the country of national numbers (e.g. \"DE\")"
            }
            PhoneError::Invalid(_) => "check the digits and the country code",
        }
    }
}

impl Phone {
    /// Parses `text` (international, or national in `default_region`).
    pub fn parse(text: &str, default_region: Option<Id>) -> Result<Phone, PhoneError> {
        let t = text.trim();
        if t.is_empty() || t.len() > 40 {
            return Err(PhoneError::Unparsable(mask_raw(t)));
        }
        let looks_like_number = t.chars().filter(char::is_ascii_digit).count() >= 3
            && t.chars()
                .all(|c| c.is_ascii_digit() || " +-.()/".contains(c));
        if !looks_like_number {
            return Err(PhoneError::Unparsable(mask_raw(t)));
        }
        let international = t.starts_with('+') || t.starts_with("00");
        if !international && default_region.is_none() {
            return Err(PhoneError::NoRegion(mask_raw(t)));
        }
        let normalised = match t.strip_prefix("00") {
            Some(rest) => format!("+{rest}"),
            None => t.to_owned(),
        };
        // An international number is read without the default region:
        // phonenumber strips a national prefix after the country code
        // ("+7 8…") only when the default region is none or the number's
        // own, so the same text gave different numbers on hosts with
        // different `phone.default_region` (found by fuzzing).
        let region = if international { None } else { default_region };
        let n = phonenumber::parse(region, &normalised)
            .map_err(|_| PhoneError::Unparsable(mask_raw(t)))?;
        if !n.is_valid() {
            return Err(PhoneError::Invalid(mask_raw(t)));
        }
        let e164 = n.format().mode(Mode::E164).to_string();
        // What is stored and sent must read back as itself (a prefix
        // stripped once could be stripped again); a number that does not
        // is refused rather than kept in two forms.
        let again = phonenumber::parse(None, &e164).ok();
        if again.is_none_or(|m| !m.is_valid() || m.format().mode(Mode::E164).to_string() != e164) {
            return Err(PhoneError::Invalid(mask_raw(t)));
        }
        Ok(Phone {
            e164,
            region: n.country().id(),
        })
    }

    /// "+15550100123".
    pub fn e164(&self) -> &str {
        &self.e164
    }

    /// "15550100123": E.164 without the plus (what many gateways want).
    pub fn digits(&self) -> &str {
        self.e164.trim_start_matches('+')
    }

    /// The number as dialled inside its own country, digits only: the
    /// national format (with the trunk prefix, e.g. "02079460018" for
    /// +44 20 7946 0018, "2025550143" for +1 202 555 0143), without its
    /// spaces and punctuation. For gateways that deliver only at home.
    pub fn national(&self) -> String {
        match phonenumber::parse(None, &self.e164) {
            Ok(n) => n
                .format()
                .mode(Mode::National)
                .to_string()
                .chars()
                .filter(char::is_ascii_digit)
                .collect(),
            // Parse checked that the E.164 form reads back.
            Err(_) => self.national_significant().to_owned(),
        }
    }

    /// The national significant number: without the country code and
    /// without a trunk prefix ("2079460018" for +44 20 7946 0018), what a
    /// type of number "national" carries (3GPP TS 23.040 9.1.2.5).
    pub fn national_significant(&self) -> &str {
        let digits = self.digits();
        let cc = phonenumber::parse(None, &self.e164)
            .map(|n| n.code().value().to_string().len())
            .unwrap_or(0);
        digits.get(cc..).unwrap_or(digits)
    }

    /// The country the number belongs to; `None` for numbers of no single
    /// country (international services).
    pub fn region(&self) -> Option<Id> {
        self.region
    }

    /// "******0123": safe to show and to log.
    pub fn masked(&self) -> String {
        mask_raw(&self.e164)
    }

    /// Is this number in one of the allowed countries (empty list: all)?
    pub fn allowed(&self, settings: &PhoneSettings) -> bool {
        settings.allowed_countries.is_empty()
            || self
                .region
                .is_some_and(|r| settings.allowed_countries.contains(&r))
    }
}

/// Remembers numbers already validated. Full validation builds the
/// metadata of every country (about 100 ms), and sshd runs each login in a
/// fresh process: without a cache every login would pay it.
pub trait NumberCache {
    /// The E.164 form and region of `key`, if validated before.
    fn get(&self, key: &str) -> Option<(String, Option<String>)>;
    /// Remembers that `key` is the valid number `e164` of `region`. Best
    /// effort: a cache that cannot write just forgets.
    fn put(&self, key: &str, e164: &str, region: Option<&str>);
}

/// A cache that remembers nothing.
pub struct NoCache;

impl NumberCache for NoCache {
    fn get(&self, _key: &str) -> Option<(String, Option<String>)> {
        None
    }
    fn put(&self, _key: &str, _e164: &str, _region: Option<&str>) {}
}

/// Validated numbers remembered in memory, shared by threads: what a
/// server keeps in front of its store's cache, since entries never change
/// meaning (the key holds the build's version). Holds at most
/// [`MemoryNumbers::CAPACITY`] entries; beyond, it starts over.
#[derive(Debug, Default)]
pub struct MemoryNumbers(std::sync::RwLock<Numbers>);

/// Number-cache key -> (E.164 number, region).
type Numbers = std::collections::HashMap<Box<str>, (Box<str>, Option<Box<str>>)>;

impl MemoryNumbers {
    /// The most entries kept before starting over.
    pub const CAPACITY: usize = 100_000;
}

impl NumberCache for MemoryNumbers {
    fn get(&self, key: &str) -> Option<(String, Option<String>)> {
        let numbers = self.0.read().unwrap_or_else(|p| p.into_inner());
        numbers
            .get(key)
            .map(|(e164, region)| (e164.to_string(), region.as_deref().map(str::to_owned)))
    }
    fn put(&self, key: &str, e164: &str, region: Option<&str>) {
        let mut numbers = self.0.write().unwrap_or_else(|p| p.into_inner());
        if numbers.len() >= Self::CAPACITY {
            numbers.clear();
        }
        numbers.insert(key.into(), (e164.into(), region.map(Into::into)));
    }
}

impl Phone {
    /// [`Phone::parse`], remembering the result in `cache`. Only valid
    /// numbers are cached; the key includes this build's version (and so its
    /// numbering metadata) and the default region.
    pub fn parse_cached(
        text: &str,
        default_region: Option<Id>,
        cache: &dyn NumberCache,
    ) -> Result<Phone, PhoneError> {
        let key = format!(
            "v1|{}|{}|{}",
            env!("CARGO_PKG_VERSION"),
            default_region.as_ref().map_or("", |r| r.as_ref()),
            text.trim()
        );
        if let Some((e164, region)) = cache.get(&key) {
            return Ok(Phone {
                e164,
                region: region.and_then(|r| r.parse().ok()),
            });
        }
        let phone = Phone::parse(text, default_region)?;
        cache.put(&key, &phone.e164, phone.region.as_ref().map(|r| r.as_ref()));
        Ok(phone)
    }
}

/// A number masked to six stars and its last four digits ("******0123"):
/// what a log or a person may see. It is only ever made by masking (a
/// [`Phone`], or text read back from the store, masked again), so it can
/// never hold a whole number; [`crate::audit::Event`] carries this type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedPhone(String);

impl MaskedPhone {
    /// `phone` masked.
    pub fn of(phone: &Phone) -> Self {
        MaskedPhone(phone.masked())
    }

    /// A masked number read back from the store (a challenge's
    /// `phone_masked`), masked again with [`mask_raw`]: unchanged when it
    /// was masked already, and reduced to its last four digits if a whole
    /// number ever got there. `None` for an empty text: a challenge that
    /// went to no phone (backup codes only).
    pub fn from_stored(text: &str) -> Option<Self> {
        (!text.is_empty()).then(|| MaskedPhone(mask_raw(text)))
    }

    /// The masked text ("******0123").
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MaskedPhone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Six stars and the last four digits, whatever the input.
pub fn mask_raw(text: &str) -> String {
    let mut tail = [0u8; 4];
    let mut n = 0;
    for d in text.bytes().filter(u8::is_ascii_digit) {
        tail.rotate_left(1);
        tail[3] = d;
        n += 1;
    }
    let mut out = String::with_capacity(10);
    out.push_str("******");
    for &d in &tail[4 - n.min(4)..] {
        out.push(char::from(d));
    }
    out
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.masked())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// A [`NumberCache`] in memory: key -> (E.164 number, region).
    #[derive(Default)]
    pub(crate) struct MemoryCache(pub RefCell<HashMap<String, (String, Option<String>)>>);

    impl NumberCache for MemoryCache {
        fn get(&self, key: &str) -> Option<(String, Option<String>)> {
            self.0.borrow().get(key).cloned()
        }
        fn put(&self, key: &str, e164: &str, region: Option<&str>) {
            self.0
                .borrow_mut()
                .insert(key.into(), (e164.into(), region.map(Into::into)));
        }
    }

    #[test]
    fn normalises_to_e164() {
        let p = Phone::parse("+1 (202) 555-0143", None).unwrap();
        assert_eq!(p.e164(), "+12025550143");
        assert_eq!(p.digits(), "12025550143");
        assert_eq!(p.region(), Some(Id::US));
        let p = Phone::parse("030 1234567", Some(Id::DE)).unwrap();
        assert_eq!(p.e164(), "+49301234567");
        let p = Phone::parse("0049 30 1234567", None).unwrap();
        assert_eq!(p.e164(), "+49301234567");
    }

    #[test]
    fn an_international_number_reads_the_same_whatever_the_default_region() {
        // Fuzzing found "+7851 (2) 55) 5574" accepted as +78512555574 with
        // default_region IT, a number that itself does not parse back
        // (phonenumber strips the "8" without a region): refused now under
        // every region, and every accepted number parses to itself.
        for text in ["+7851 (2) 55) 5574", "+7 8512 55 55 74", "+78512555574"] {
            for region in [None, Some(Id::IT), Some(Id::US), Some(Id::RU), Some(Id::DE)] {
                assert!(
                    matches!(Phone::parse(text, region), Err(PhoneError::Invalid(_))),
                    "{text} {region:?}"
                );
            }
        }
        for region in [None, Some(Id::IT), Some(Id::US), Some(Id::DE)] {
            let p = Phone::parse("+7 495 123 45 67", region).unwrap();
            assert_eq!(p.e164(), "+74951234567");
            assert_eq!(Phone::parse(p.e164(), None).unwrap().e164(), p.e164());
            let p = Phone::parse("+49 30 1234567", region).unwrap();
            assert_eq!(p.e164(), "+49301234567");
        }
    }

    #[test]
    fn refuses_garbage_and_regionless_national_numbers() {
        assert!(matches!(
            Phone::parse("call me", None),
            Err(PhoneError::Unparsable(_))
        ));
        assert!(matches!(
            Phone::parse("2025550143", None),
            Err(PhoneError::NoRegion(_))
        ));
        assert!(matches!(
            Phone::parse("+1 123", None),
            Err(PhoneError::Invalid(_))
        ));
    }

    #[test]
    fn a_masked_phone_never_holds_a_whole_number() {
        let p = Phone::parse("+12025550143", None).unwrap();
        assert_eq!(MaskedPhone::of(&p).as_str(), "******0143");
        // Masked text from the store stays as it was...
        assert_eq!(
            MaskedPhone::from_stored("******0143").unwrap(),
            MaskedPhone::of(&p)
        );
        // ...a whole number is masked...
        assert_eq!(
            MaskedPhone::from_stored("+12025550143")
                .unwrap()
                .to_string(),
            "******0143"
        );
        // ...and no text means no phone.
        assert_eq!(MaskedPhone::from_stored(""), None);
    }

    #[test]
    fn masks_all_but_last_four() {
        let p = Phone::parse("+12025550143", None).unwrap();
        assert_eq!(p.masked(), "******0143");
        assert_eq!(format!("{p}"), "******0143");
        assert_eq!(format!("{p:?}"), "Phone(******0143)");
        assert_eq!(mask_raw("+49 (30) 12-34-567"), "******4567");
        assert_eq!(mask_raw("x12"), "******12");
        assert_eq!(mask_raw("none"), "******");
        // Errors mask the number too.
        let e = Phone::parse("+1 123 4567", None).unwrap_err().to_string();
        assert!(!e.contains("123 4567"), "{e}");
    }

    #[test]
    fn cache_is_used_and_filled() {
        let cache = MemoryCache::default();
        let p = Phone::parse_cached("030 1234567", Some(Id::DE), &cache).unwrap();
        assert_eq!(p.e164(), "+49301234567");
        assert_eq!(cache.0.borrow().len(), 1);
        let again = Phone::parse_cached("030 1234567", Some(Id::DE), &cache).unwrap();
        assert_eq!(again, p);
        assert_eq!(again.region(), Some(Id::DE));
        // Another default region is another key.
        assert!(Phone::parse_cached("030 1234567", None, &cache).is_err());
        assert_eq!(cache.0.borrow().len(), 1, "invalid numbers are not cached");
    }

    #[test]
    fn allow_list() {
        let us = Phone::parse("+12025550143", None).unwrap();
        let de = Phone::parse("+49301234567", None).unwrap();
        let settings = PhoneSettings {
            default_region: None,
            allowed_countries: vec![Id::US, Id::CA],
        };
        assert!(us.allowed(&settings));
        assert!(!de.allowed(&settings));
        let open = PhoneSettings {
            default_region: None,
            allowed_countries: vec![],
        };
        assert!(de.allowed(&open));
    }
}
