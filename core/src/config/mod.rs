//! The configuration file: a raw TOML schema (serde, `deny_unknown_fields`)
//! turned once into validated types.
//!
//! Every error names the file, the line and column, the key, and what would
//! fix it. Nothing downstream re-parses strings: durations are `Duration`,
//! regions are `phonenumber::country::Id`, rates are [`Rate`].
//!
//! This file only assembles: [`Config`], its entry points and the table of
//! sections. Each section owns its raw table, its validation and its
//! validated types: `otp.rs` (`[otp]`, the message template), `policy.rs`
//! (`[policy]`, `[phone]`, `[limits]` and rates), `store.rs`
//! (`[[directory]]`, `[store]`, `[audit]`), `radius.rs` (`[radius]` and
//! its clients), `receipts.rs` (`[receipts]`), `messages.rs` (`[messages]`); `sms_fit.rs` counts the SMS each
//! template takes for check-config; `[[provider]]` belongs to [`crate::sms`]. [`check`] is
//! what they share to report a problem, `keys.rs` the table of every key,
//! and `errors.rs` turns toml's errors into ours.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::files::{self, FileRule};
use crate::sms::{self, ProviderSpec, RawProvider};

pub mod check;
mod errors;
mod keys;
mod messages;
mod otp;
mod policy;
mod radius;
mod receipts;
pub mod sms_fit;
mod store;
#[cfg(test)]
mod tests;

use check::Checker;
pub use check::{
    parse_duration, plausible_name, ConfigError, ConfigWarning, Location, DEFAULT_STATE_DIR,
};
pub use keys::{section_of, Key, ValueKind, KEYS};
pub use messages::{LanguageChoice, MessageSettings};
pub use otp::{human_duration, Alphabet, MessageTemplate, MessageValues, OtpSettings};
pub use policy::{
    parse_rate, units, Budget, CountryRates, Limits, NoPhone, PhoneSettings, PolicySettings,
    ProviderDown, Rate, SmsCosts, BUDGET_MAX, COST_MAX,
};
pub use radius::{
    short_secret_warning, ClientMode, PrimaryAuth, RadiusClient, RadiusSettings,
    RADIUS_SECRET_MIN_BYTES,
};
pub use receipts::ReceiptSettings;
pub use store::{
    join_host_port, AuditSettings, DirectorySpec, RedisAddr, RedisSpec, SentinelSpec, StoreSpec,
};

/// Where the config lives unless the front end is told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/smsotp/smsotp.toml";

/// The whole file as read: one field per section, each section's raw
/// table in its own module.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    otp: otp::RawOtp,
    #[serde(default)]
    policy: policy::RawPolicy,
    #[serde(default)]
    phone: policy::RawPhone,
    #[serde(default)]
    limits: policy::RawLimits,
    #[serde(default)]
    directory: Vec<Spanned<store::RawDirectory>>,
    #[serde(default)]
    store: store::RawStore,
    #[serde(default)]
    provider: Vec<Spanned<RawProvider>>,
    #[serde(default)]
    audit: store::RawAudit,
    radius: Option<radius::RawRadius>,
    #[serde(default)]
    receipts: receipts::RawReceipts,
    #[serde(default)]
    messages: messages::RawMessages,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from (for messages).
    pub path: PathBuf,
    /// `[otp]`: the codes and the SMS text.
    pub otp: OtpSettings,
    /// `[policy]`: who is exempt and what happens when no code can be sent.
    pub policy: PolicySettings,
    /// `[phone]`: how numbers are read and which countries are allowed.
    pub phone: PhoneSettings,
    /// `[limits]`: SMS rates and the lockout.
    pub limits: Limits,
    /// The `[[directory]]` tables in file order, tried in that order; never
    /// empty (the default is the phone file `/etc/smsotp/phones.toml`).
    pub directories: Vec<DirectorySpec>,
    /// `[store]`: where state is kept.
    pub store: StoreSpec,
    /// The `[[provider]]` tables in file order, the order of failover; never
    /// empty (the default is an outbox file in the state directory), names
    /// distinct.
    pub providers: Vec<ProviderSpec>,
    /// `[audit]`: where the audit lines go besides the front end's own log.
    pub audit: AuditSettings,
    /// Present when the file has a `[radius]` table (smsotp-radiusd).
    pub radius: Option<RadiusSettings>,
    /// `[receipts]`: delivery receipts in smsotp-radiusd.
    pub receipts: ReceiptSettings,
    /// `[messages]`: the admin's catalogues and how a language is chosen.
    pub messages: MessageSettings,
    /// Allowed but probably mistaken settings, in file order.
    pub warnings: Vec<ConfigWarning>,
}

impl Config {
    /// Reads and validates the config at `path`. The file must be owned by root
    /// (or by the user running the check) and not be writable or readable by
    /// others, since it decides who is exempt from the second factor.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = files::read_checked(path, FileRule::Config)?;
        Config::from_toml(path, &text)
    }

    /// Validates `text` as if it had been read from `path` (no file checks).
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let invalid = |e: &toml_edit::de::Error| errors::serde_error(path, text, e);
        // What toml::from_str does (the same parser and deserializer, so
        // errors are toml's own), with the text parsed once for both reads:
        // the [[provider]] tables are copied from the parse before the
        // first read consumes it.
        let doc = toml_edit::ImDocument::parse(text).map_err(|e| invalid(&e.into()))?;
        let items = sms::ProviderItems::of(&doc);
        let raw = RawConfig::deserialize(toml_edit::de::Deserializer::from(doc))
            .map_err(|e| invalid(&sms::earlier_error(&items, e)))?;
        // Each [[provider]] again, with its kind's own struct.
        let read_providers = sms::read(items, &raw.provider).map_err(|e| invalid(&e))?;
        let c = Checker { path, text };
        let state = Path::new(DEFAULT_STATE_DIR);

        let (mut otp, key_file) = otp::validate(&c, &raw.otp)?;
        let policy = policy::policy(&c, &raw.policy)?;
        let phone = policy::phone(&c, &raw.phone)?;
        let mut warnings = Vec::new();
        let limits = policy::limits(&c, &raw.limits, &mut warnings)?;
        let directories = store::directories(&c, &raw.directory)?;
        let store = store::store(&c, &raw.store, state)?;

        // The code key lives beside the store unless configured elsewhere.
        // With a store elsewhere (redis), it stays in the state directory.
        otp.key_file = key_file.unwrap_or_else(|| match &store {
            StoreSpec::Sqlite {
                path: store_path, ..
            } => store_path.parent().unwrap_or(state).join("otp.key"),
            StoreSpec::Redis(_) => state.join("otp.key"),
        });

        let mut providers = Vec::new();
        let mut seen_names = BTreeSet::new();
        let mut provider_spans = Vec::new();
        for (i, p) in read_providers.iter().enumerate() {
            let key = format!("provider[{i}]");
            let spec = sms::validate(&c, &key, p, &mut warnings)?;
            if !seen_names.insert(spec.name().to_owned()) {
                return Err(c.err(
                    p.span(),
                    &format!("{key}.name"),
                    format!(
                        "\"{}\" names two providers; give each a distinct name",
                        spec.name()
                    ),
                ));
            }
            if spec.number_format() == Some(sms::number_format::NumberFormat::National) {
                sms::number_format::national_needs_one_country(
                    &c,
                    &key,
                    p.span(),
                    phone.allowed_countries.len(),
                )?;
            }
            let path = match &spec {
                ProviderSpec::Http(h) => h.status_callback.as_ref().map(|c| c.path.clone()),
                _ => None,
            };
            if let Some(path) = path {
                if let Some(other) = providers.iter().find(|o: &&ProviderSpec| {
                    matches!(o, ProviderSpec::Http(h)
                        if h.status_callback.as_ref().is_some_and(|c| c.path == path))
                }) {
                    return Err(c.err(
                        p.span(),
                        &format!("{key}.status_callback"),
                        format!(
                            "has the path {path} of provider \"{}\"; give each provider a path of its own",
                            other.name()
                        ),
                    ));
                }
            }
            provider_spans.push(p.span());
            providers.push(spec);
        }
        if providers.is_empty() {
            providers.push(ProviderSpec::Outbox {
                name: "outbox".into(),
                path: state.join("outbox.jsonl"),
            });
        }

        let audit = store::audit(&c, &raw.audit)?;
        let radius = raw
            .radius
            .as_ref()
            .map(|r| radius::validate(&c, r, &directories, &store, &mut warnings))
            .transpose()?;
        let receipts = receipts::validate(
            &c,
            &raw.receipts,
            &providers,
            &provider_spans,
            &mut warnings,
        )?;
        let messages = messages::validate(&c, &raw.messages)?;

        Ok(Config {
            radius,
            receipts,
            messages,
            path: path.to_owned(),
            otp,
            policy,
            phone,
            limits,
            directories,
            store,
            providers,
            audit,
            warnings,
        })
    }
}
