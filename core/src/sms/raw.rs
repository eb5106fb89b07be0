//! The layer every provider kind shares: reading a `[[provider]]` table's
//! `kind` and `name`, re-reading the table with its kind's own raw struct,
//! and what every kind's validation uses ([`Fields`]: required keys,
//! one-line text, absolute paths; [`timeouts`] of the network providers).
//!
//! Why two reads: serde's tagged enums buffer a table and lose the
//! positions `toml::Spanned` keeps, and errors must name the line and
//! column of the key at fault. So the whole file is read first with each
//! `[[provider]]` as a [`RawProvider`] (its keys and where their values
//! stand, any key allowed); then each table is read again from the same
//! text, as the one element of `provider` that a seed ([`nth`]) picks,
//! with its kind's struct (`deny_unknown_fields`). Both reads go through
//! toml's own deserializer over the same text, so every span and every
//! serde error is where it was.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{
    DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde::Deserialize;
use toml::Spanned;

use crate::config::check::{Checker, ConfigError};

/// A `[[provider]]` table as the first read sees it: the keys it sets,
/// with where each value stands. Its kind's struct reads it again.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub(crate) struct RawProvider(pub(crate) BTreeMap<String, Spanned<IgnoredAny>>);

/// What every table has whatever its kind (no `deny_unknown_fields`: the
/// kind's own struct refuses what it does not know).
#[derive(Deserialize)]
pub(crate) struct Head {
    pub(crate) kind: Spanned<String>,
    pub(crate) name: Option<Spanned<String>>,
}

/// Element `index` of the file's `[[provider]]` array, read as `T` from
/// the whole text (the other elements and tables are skipped), so spans
/// and errors are those of the file. `None`: no such element.
pub(crate) fn nth<T: DeserializeOwned>(
    text: &str,
    index: usize,
) -> Result<Option<Spanned<T>>, toml::de::Error> {
    Document::<T>(index, PhantomData).deserialize(toml::Deserializer::new(text))
}

/// The top level: only `provider` is read.
struct Document<T>(usize, PhantomData<T>);

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for Document<T> {
    type Value = Option<Spanned<T>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for Document<T> {
    type Value = Option<Spanned<T>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a config file")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut out = None;
        while let Some(key) = m.next_key::<String>()? {
            if key == "provider" {
                out = m.next_value_seed(Element::<T>(self.0, PhantomData))?;
            } else {
                m.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

/// The `provider` array: element `.0` as `T`, the others skipped.
struct Element<T>(usize, PhantomData<T>);

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for Element<T> {
    type Value = Option<Spanned<T>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for Element<T> {
    type Value = Option<Spanned<T>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of tables")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
        let mut out = None;
        let mut i = 0;
        loop {
            if i == self.0 {
                match s.next_element::<Spanned<T>>()? {
                    Some(v) => out = Some(v),
                    None => break,
                }
            } else if s.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(out)
    }
}

/// One `[[provider]]` table being validated: its key path (`provider[0]`)
/// and kind, for errors that name the key at fault.
pub(crate) struct Fields<'a, R> {
    pub(crate) c: &'a Checker<'a>,
    pub(crate) key: &'a str,
    /// The whole table, where a missing key is reported.
    pub(crate) span: Range<usize>,
    pub(crate) raw: &'a R,
    pub(crate) kind: &'a str,
}

impl<R> Fields<'_, R> {
    pub(crate) fn raw(&self) -> &R {
        self.raw
    }

    /// The full key path of `field`: `provider[0].url`.
    pub(crate) fn k(&self, field: &str) -> String {
        format!("{}.{field}", self.key)
    }

    /// `v`, or an error saying the kind needs `field = hint`.
    pub(crate) fn required(
        &self,
        v: &Option<Spanned<String>>,
        field: &str,
        hint: &str,
    ) -> Result<Spanned<String>, ConfigError> {
        v.clone().ok_or_else(|| {
            self.c.err(
                self.span.clone(),
                &self.k(field),
                format!("is missing; kind \"{}\" needs {field} = {hint}", self.kind),
            )
        })
    }

    /// A non-empty value on one line, trimmed.
    pub(crate) fn text(&self, v: &Spanned<String>, field: &str) -> Result<String, ConfigError> {
        let t = v.get_ref().trim();
        if t.is_empty() || t.chars().any(char::is_control) {
            return Err(self.c.err(
                v.span(),
                &self.k(field),
                "must be a non-empty value on one line",
            ));
        }
        Ok(t.to_owned())
    }

    /// An absolute path.
    pub(crate) fn file(&self, v: &Spanned<String>, field: &str) -> Result<PathBuf, ConfigError> {
        self.c.absolute(v.get_ref(), v.span(), &self.k(field))
    }
}

/// `timeout` and `connect_timeout` of a network provider: the connect
/// bound defaults to the shorter of its default and the total, and may not
/// outlast the total (`bounds` names what the total covers).
pub(crate) fn timeouts(
    c: &Checker<'_>,
    (raw_timeout, raw_connect): (&Option<Spanned<String>>, &Option<Spanned<String>>),
    k: &dyn Fn(&str) -> String,
    (default_total, default_connect): (Duration, Duration),
    bounds: &str,
) -> Result<(Duration, Duration), ConfigError> {
    let timeout = c.duration_in(
        raw_timeout,
        &k("timeout"),
        Duration::from_millis(100),
        Duration::from_secs(60),
        default_total,
    )?;
    let connect_timeout = match raw_connect {
        None => default_connect.min(timeout),
        Some(s) => {
            let d = c.duration_in(
                raw_connect,
                &k("connect_timeout"),
                Duration::from_millis(100),
                Duration::from_secs(60),
                default_connect,
            )?;
            if d > timeout {
                return Err(c.err(
                    s.span(),
                    &k("connect_timeout"),
                    format!(
                        "is longer than timeout ({}), which bounds the whole {bounds}; make it shorter",
                        humantime::format_duration(timeout)
                    ),
                ));
            }
            d
        }
    };
    Ok((timeout, connect_timeout))
}
