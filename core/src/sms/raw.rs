//! The layer every provider kind shares: reading a `[[provider]]` table's
//! `kind` and `name`, re-reading the table with its kind's own raw struct,
//! and what every kind's validation uses ([`Fields`]: required keys,
//! one-line text, absolute paths; [`timeouts`] of the network providers).
//!
//! Why two reads: serde's tagged enums buffer a table and lose the
//! positions `toml::Spanned` keeps, and errors must name the line and
//! column of the key at fault. So the whole file is read first with each
//! `[[provider]]` as a [`RawProvider`] (its keys and where their values
//! stand, any key allowed); then each table is read again with its kind's
//! struct (`deny_unknown_fields`).
//!
//! Why one parse: the text is parsed once, by the parser `toml::from_str`
//! runs underneath (toml_edit), and the `provider` item of that parse is
//! copied ([`ProviderItems`]) before the first read consumes the document.
//! Each table's second read is toml's own deserializer over its copy,
//! exactly as the first read meets it as an element of `provider`, so
//! every span and every serde error is what `toml::from_str` gives, and
//! the cost no longer grows with the number of tables.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{DeserializeOwned, IgnoredAny, IntoDeserializer};
use serde::Deserialize;
use toml::Spanned;
use toml_edit::de::Deserializer as ItemDeserializer;
use toml_edit::{DocumentMut, ImDocument, Item, Table, Value};

use crate::config::check::{Checker, ConfigError};

/// A syntax or schema error of the file, with its position: what
/// `toml::de::Error` wraps (same message, same span).
pub(crate) type ReadError = toml_edit::de::Error;

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

/// The file's `provider` item as parsed (spans kept), copied before the
/// first read consumes the document; `None` when the file has none.
#[derive(Clone)]
pub(crate) struct ProviderItems(Option<Item>);

impl ProviderItems {
    /// Copies the `provider` item out of the parsed file.
    pub(crate) fn of<S>(doc: &ImDocument<S>) -> ProviderItems {
        ProviderItems(doc.as_table().get("provider").cloned())
    }

    /// The tables in file order: `[[provider]]` tables or the elements of
    /// an inline array (what the first read took for each [`RawProvider`]).
    pub(crate) fn into_tables(self) -> Vec<ProviderTable> {
        match self.0 {
            Some(Item::ArrayOfTables(a)) => a.into_iter().map(ProviderTable::Table).collect(),
            Some(Item::Value(Value::Array(a))) => {
                a.into_iter().map(ProviderTable::Inline).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Every table as a [`RawProvider`], as a file holding only this
    /// `provider` item is read: what the first read would have given had
    /// it not failed elsewhere.
    pub(crate) fn raw(&self) -> Result<Vec<Spanned<RawProvider>>, ReadError> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            provider: Vec<Spanned<RawProvider>>,
        }
        let mut root = Table::new();
        if let Some(item) = &self.0 {
            root.insert("provider", item.clone());
        }
        File::deserialize(ItemDeserializer::from(DocumentMut::from(root))).map(|f| f.provider)
    }
}

/// One `[[provider]]` table as parsed.
#[derive(Clone)]
pub(crate) enum ProviderTable {
    /// A `[[provider]]` table.
    Table(Table),
    /// An inline table, element of `provider = [{ … }]`.
    Inline(Value),
}

impl ProviderTable {
    /// Its `kind` and `name` as [`Head`] reads them. When both are strings
    /// (or `name` is absent) they are taken from the parsed values, with
    /// their span (the one toml's deserializer gives `Spanned`), which
    /// spares a copy and a read of every table; otherwise the table is read
    /// as [`Head`], for toml's own error.
    pub(crate) fn head(&self) -> Result<Head, ReadError> {
        match self.strings() {
            Some(head) => Ok(head),
            None => self.clone().read(),
        }
    }

    /// `kind` and `name` when reading [`Head`] cannot fail: `kind` a
    /// string, `name` a string or absent, both with a span.
    fn strings(&self) -> Option<Head> {
        /// `None`: `key` is not set; `Some(None)`: it is, to a table.
        fn get<'a>(t: &'a ProviderTable, key: &str) -> Option<Option<&'a Value>> {
            match t {
                ProviderTable::Table(t) => t.get(key).map(Item::as_value),
                ProviderTable::Inline(v) => v.as_inline_table().and_then(|t| t.get(key)).map(Some),
            }
        }
        fn string(v: Option<&Value>) -> Option<Spanned<String>> {
            match v? {
                v @ Value::String(s) => Some(Spanned::new(v.span()?, s.value().clone())),
                _ => None,
            }
        }
        if let ProviderTable::Inline(v) = self {
            v.as_inline_table()?;
        }
        let kind = string(get(self, "kind")?)?;
        let name = match get(self, "name") {
            None => None,
            Some(v) => Some(string(v)?),
        };
        Some(Head { kind, name })
    }

    /// The table read as `T`, as the first read met it: toml's
    /// deserializer over the element of `provider`, spans and errors
    /// included.
    pub(crate) fn read<T: DeserializeOwned>(self) -> Result<T, ReadError> {
        match self {
            ProviderTable::Table(t) => T::deserialize(ItemDeserializer::from(DocumentMut::from(t))),
            ProviderTable::Inline(v) => T::deserialize(v.into_deserializer()),
        }
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
