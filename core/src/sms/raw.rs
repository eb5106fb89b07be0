//! The `[[provider]]` table as read, and what every provider's validation
//! uses to read it: [`Fields`] (required keys, one-line text, absolute
//! paths) and the `timeout`/`connect_timeout` pair of the network providers.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::check::{Checker, ConfigError};

/// Flat rather than tagged: every key keeps its own position for error
/// messages, and a key that belongs to another kind is named as such.
/// `kind` decides which keys apply (see `provider_keys` in [`crate::sms`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProvider {
    pub(crate) kind: Spanned<String>,
    pub(crate) name: Option<Spanned<String>>,
    // outbox
    pub(crate) path: Option<Spanned<String>>,
    // command
    pub(crate) program: Option<Spanned<String>>,
    pub(crate) args: Option<Spanned<Vec<String>>>,
    // command, http and presets
    pub(crate) timeout: Option<Spanned<String>>,
    // http and presets
    pub(crate) connect_timeout: Option<Spanned<String>>,
    pub(crate) ca_file: Option<Spanned<String>>,
    pub(crate) proxy: Option<Spanned<String>>,
    // http
    pub(crate) url: Option<Spanned<String>>,
    pub(crate) method: Option<Spanned<String>>,
    pub(crate) content_type: Option<Spanned<String>>,
    pub(crate) headers: Option<Spanned<toml::Table>>,
    pub(crate) basic_auth: Option<Spanned<RawBasicAuth>>,
    pub(crate) body: Option<Spanned<toml::Value>>,
    pub(crate) secret_file: Option<Spanned<String>>,
    pub(crate) secrets: Option<Spanned<toml::Table>>,
    pub(crate) success_status: Option<Spanned<Vec<Spanned<i64>>>>,
    pub(crate) success_body: Option<Spanned<RawSuccessBody>>,
    pub(crate) allow_http: Option<Spanned<bool>>,
    // presets
    pub(crate) base_url: Option<Spanned<String>>,
    pub(crate) from: Option<Spanned<String>>,
    pub(crate) account_sid: Option<Spanned<String>>,
    pub(crate) auth_token_file: Option<Spanned<String>>,
    pub(crate) messaging_service_sid: Option<Spanned<String>>,
    pub(crate) api_key: Option<Spanned<String>>,
    pub(crate) api_secret_file: Option<Spanned<String>>,
    pub(crate) api_key_file: Option<Spanned<String>>,
    pub(crate) auth_id: Option<Spanned<String>>,
    pub(crate) powerpack_uuid: Option<Spanned<String>>,
    pub(crate) username: Option<Spanned<String>>,
    pub(crate) password_file: Option<Spanned<String>>,
    // smpp (besides password_file, timeout, connect_timeout, ca_file)
    pub(crate) host: Option<Spanned<String>>,
    pub(crate) port: Option<Spanned<i64>>,
    pub(crate) tls: Option<Spanned<bool>>,
    pub(crate) system_id: Option<Spanned<String>>,
    pub(crate) system_type: Option<Spanned<String>>,
    pub(crate) source_addr: Option<Spanned<String>>,
    pub(crate) source_addr_ton: Option<Spanned<toml::Value>>,
    pub(crate) source_addr_npi: Option<Spanned<toml::Value>>,
    pub(crate) dest_addr_ton: Option<Spanned<toml::Value>>,
    pub(crate) dest_addr_npi: Option<Spanned<toml::Value>>,
    pub(crate) registered_delivery: Option<Spanned<i64>>,
    pub(crate) data_coding: Option<Spanned<String>>,
    pub(crate) long_messages: Option<Spanned<String>>,
    pub(crate) enquire_link_interval: Option<Spanned<String>>,
    pub(crate) max_sessions: Option<Spanned<i64>>,
}

impl RawProvider {
    /// The keys set in this table, with where each stands.
    pub(crate) fn present(&self) -> Vec<(&'static str, Range<usize>)> {
        let mut v = Vec::new();
        macro_rules! keys {
            ($($f:ident),*) => {$(
                if let Some(x) = &self.$f {
                    v.push((stringify!($f), x.span()));
                }
            )*};
        }
        keys!(
            name,
            path,
            program,
            args,
            timeout,
            connect_timeout,
            ca_file,
            proxy,
            url,
            method,
            content_type,
            headers,
            basic_auth,
            body,
            secret_file,
            secrets,
            success_status,
            success_body,
            allow_http,
            base_url,
            from,
            account_sid,
            auth_token_file,
            messaging_service_sid,
            api_key,
            api_secret_file,
            api_key_file,
            auth_id,
            powerpack_uuid,
            username,
            password_file,
            host,
            port,
            tls,
            system_id,
            system_type,
            source_addr,
            source_addr_ton,
            source_addr_npi,
            dest_addr_ton,
            dest_addr_npi,
            registered_delivery,
            data_coding,
            long_messages,
            enquire_link_interval,
            max_sessions
        );
        v
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBasicAuth {
    pub(crate) username: String,
    pub(crate) password: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSuccessBody {
    pub(crate) contains: Option<String>,
    pub(crate) regex: Option<String>,
    pub(crate) json_pointer: Option<String>,
    pub(crate) equals: Option<toml::Value>,
}

/// One `[[provider]]` table being validated: its key path (`provider[0]`)
/// and kind, for errors that name the key at fault.
pub(crate) struct Fields<'a> {
    pub(crate) c: &'a Checker<'a>,
    pub(crate) key: &'a str,
    pub(crate) p: &'a Spanned<RawProvider>,
    pub(crate) kind: &'a str,
}

impl Fields<'_> {
    pub(crate) fn raw(&self) -> &RawProvider {
        self.p.get_ref()
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
                self.p.span(),
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
    r: &RawProvider,
    k: &dyn Fn(&str) -> String,
    (default_total, default_connect): (Duration, Duration),
    bounds: &str,
) -> Result<(Duration, Duration), ConfigError> {
    let timeout = c.duration_in(
        &r.timeout,
        &k("timeout"),
        Duration::from_millis(100),
        Duration::from_secs(60),
        default_total,
    )?;
    let connect_timeout = match &r.connect_timeout {
        None => default_connect.min(timeout),
        Some(s) => {
            let d = c.duration_in(
                &r.connect_timeout,
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
