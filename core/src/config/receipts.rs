//! `[receipts]`: what smsotp-radiusd does with delivery receipts (SMPP
//! `deliver_sm` receipts on its bound sessions, and the status callbacks
//! of HTTP providers with a `status_callback`, served on `listen`): how
//! long after a send a failed receipt still sends the same code once
//! through the next provider, and how many sent codes it keeps for that
//! in memory.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::check::{Checker, ConfigError, ConfigWarning};
use crate::sms::ProviderSpec;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReceipts {
    resend_within: Option<Spanned<String>>,
    max_pending: Option<Spanned<i64>>,
    listen: Option<Spanned<String>>,
}

/// `[receipts]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptSettings {
    /// A receipt of UNDELIV, REJECTD or EXPIRED this soon after the send
    /// sends the same code once through the next provider; zero: never
    /// (receipts are still counted). Default 2 minutes, at most 30.
    pub resend_within: Duration,
    /// The most sent codes held in memory waiting for their receipt; the
    /// oldest is forgotten first. Default 10000, 1 to 1000000.
    pub max_pending: usize,
    /// Where smsotp-radiusd serves the HTTP providers' status callbacks
    /// (behind the admin's TLS reverse proxy); `None` (the default): not
    /// served.
    pub listen: Option<SocketAddr>,
}

impl Default for ReceiptSettings {
    fn default() -> Self {
        ReceiptSettings {
            resend_within: Duration::from_secs(120),
            max_pending: 10_000,
            listen: None,
        }
    }
}

/// `[receipts]`; warns when it is set but no provider asks for receipts.
pub(super) fn validate(
    c: &Checker<'_>,
    r: &RawReceipts,
    providers: &[ProviderSpec],
    spans: &[std::ops::Range<usize>],
    warnings: &mut Vec<ConfigWarning>,
) -> Result<ReceiptSettings, ConfigError> {
    // (name, where it stands) of each provider with a status_callback.
    let callbacks: Vec<(&str, std::ops::Range<usize>)> = providers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            ProviderSpec::Http(h) if h.status_callback.is_some() => {
                Some((h.name.as_str(), spans.get(i).cloned().unwrap_or(0..0)))
            }
            _ => None,
        })
        .collect();
    let listen = match &r.listen {
        None => None,
        Some(v) => {
            let addr: SocketAddr = v.get_ref().trim().parse().map_err(|_| {
                c.err(
                    v.span(),
                    "receipts.listen",
                    format!(
                        "{:?} is not an address and port; write \"127.0.0.1:9813\" (or \"[::1]:9813\")",
                        v.get_ref()
                    ),
                )
            })?;
            if !addr.ip().is_loopback() {
                warnings.push(c.warning(
                    v.span(),
                    "receipts.listen",
                    "is not a loopback address: the callbacks are plain HTTP; listen on \
                     127.0.0.1 and let a TLS reverse proxy forward the status_callback paths",
                ));
            }
            if callbacks.is_empty() {
                warnings.push(c.warning(
                    v.span(),
                    "receipts.listen",
                    "no provider has a status_callback, so no callback is ever answered; \
                     add status_callback to a twilio or http provider",
                ));
            }
            Some(addr)
        }
    };
    if let (Some((name, span)), None) = (callbacks.first(), &listen) {
        // A warning, not an error: a PAM host may share this file with the
        // smsotp-radiusd host that answers the callbacks.
        warnings.push(c.warning(
            span.clone(),
            "receipts.listen",
            &format!(
                "is not set, but provider \"{name}\" has a status_callback: smsotp-radiusd on \
                 this host will not answer the gateway's callbacks; set \
                 receipts.listen = \"127.0.0.1:9813\" where smsotp-radiusd runs"
            ),
        ));
    }
    let asks = !callbacks.is_empty()
        || providers
            .iter()
            .any(|p| matches!(p, ProviderSpec::Smpp(s) if s.registered_delivery != 0));
    if let (Some(v), false) = (&r.resend_within, asks) {
        warnings.push(c.warning(
            v.span(),
            "receipts.resend_within",
            "no provider asks for delivery receipts, so nothing is ever resent; \
             set registered_delivery = 1 on the smpp provider, or status_callback on an http one",
        ));
    }
    let d = ReceiptSettings::default();
    let resend_within = c.duration_in(
        &r.resend_within,
        "receipts.resend_within",
        Duration::ZERO,
        Duration::from_secs(1800),
        d.resend_within,
    )?;
    let max_pending = c.int_in(
        &r.max_pending,
        "receipts.max_pending",
        1..=1_000_000,
        d.max_pending as i64,
    )? as usize;
    Ok(ReceiptSettings {
        resend_within,
        max_pending,
        listen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("/etc/smsotp/smsotp.toml"), text)
    }

    #[test]
    fn defaults_off_and_bounds() {
        let c = load("").unwrap();
        assert_eq!(c.receipts, ReceiptSettings::default());
        let c = load("[receipts]\nresend_within = \"0\"\nmax_pending = 5\n").unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].message.contains("registered_delivery = 1"));
        assert!(c.receipts.resend_within.is_zero());
        assert_eq!(c.receipts.max_pending, 5);
        let e = load("[receipts]\nresend_within = \"1h\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("receipts.resend_within"), "{e}");
        assert!(e.contains("30m"), "{e}");
        let e = load("[receipts]\nmax_pending = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("receipts.max_pending"), "{e}");
        let e = load("[receipts]\nresend = \"1m\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("resend_within"), "{e}");
    }

    const TWILIO: &str = "[[provider]]\nkind = \"twilio\"\nname = \"tw\"\naccount_sid = \"AC1\"\n\
        auth_token_file = \"/etc/smsotp/secrets/twilio\"\nfrom = \"+12015550100\"\n";

    #[test]
    fn listen_and_status_callbacks() {
        use crate::sms::http::callback::CallbackRead;
        use crate::sms::ProviderSpec;
        let cb = "status_callback = \"https://sms.example.org/smsotp/receipt/twilio\"\n";
        let c = load(&format!(
            "{TWILIO}{cb}[receipts]\nlisten = \"127.0.0.1:9813\"\n"
        ))
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.receipts.listen, Some("127.0.0.1:9813".parse().unwrap()));
        let ProviderSpec::Http(h) = &c.providers[0] else {
            panic!("{:?}", c.providers)
        };
        let s = h.status_callback.as_ref().unwrap();
        assert_eq!(s.path, "/smsotp/receipt/twilio");
        assert_eq!(s.read, CallbackRead::Twilio);
        assert_eq!(s.secret_file, Path::new("/etc/smsotp/secrets/twilio"));

        // A callback without listen, and listen elsewhere than loopback
        // or with no callback: warnings naming the key.
        let c = load(&format!("{TWILIO}{cb}")).unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0]
            .message
            .contains("receipts.listen = \"127.0.0.1:9813\""));
        let c = load(&format!("{TWILIO}[receipts]\nlisten = \"0.0.0.0:9813\"\n")).unwrap();
        let w: Vec<_> = c.warnings.iter().map(|w| w.message.as_str()).collect();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("loopback") && w[1].contains("no provider has a status_callback"));
        let e = load("[receipts]\nlisten = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("receipts.listen") && e.contains("127.0.0.1:9813"),
            "{e}"
        );

        // Bad URLs, a twin path.
        for (url, says) in [
            ("http://sms.example.org/x", "https://"),
            ("https://sms.example.org", "path"),
            ("https://sms.example.org/", "path"),
            ("https://u:p@sms.example.org/x", "user info"),
        ] {
            let e = load(&format!("{TWILIO}status_callback = \"{url}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("provider[0].status_callback") && e.contains(says),
                "{url}: {e}"
            );
        }
        let twin = format!("{TWILIO}{cb}{}{cb}", TWILIO.replace("\"tw\"", "\"tw2\""));
        let e = load(&twin).unwrap_err().to_string();
        assert!(
            e.contains("provider[1].status_callback") && e.contains("\"tw\""),
            "{e}"
        );
    }

    const HTTP: &str = "[[provider]]\nkind = \"http\"\nname = \"gw\"\n\
        url = \"https://api.example.net/send?to={number}&text={message}\"\n";

    #[test]
    fn a_generic_callback_needs_its_fields_and_token() {
        use crate::sms::http::callback::CallbackRead;
        use crate::sms::ProviderSpec;
        let full = "status_callback = \"https://sms.example.org/cb/gw\"\n\
            status_id_pointer = \"/messages/0/id\"\nstatus_id_field = \"msgid\"\n\
            status_field = \"status\"\nstatus_failure = [\"failed\"]\n\
            status_token_file = \"/etc/smsotp/secrets/gw-callback\"\n\
            status_token_header = \"X-Callback-Token\"\n";
        let c = load(&format!(
            "{HTTP}{full}[receipts]\nlisten = \"[::1]:9813\"\n"
        ))
        .unwrap();
        let ProviderSpec::Http(h) = &c.providers[0] else {
            panic!()
        };
        let s = h.status_callback.as_ref().unwrap();
        let CallbackRead::Fields(m) = &s.read else {
            panic!("{s:?}")
        };
        assert_eq!(m.delivered, vec!["delivered".to_owned()]);
        assert_eq!(m.token_header.as_deref(), Some("X-Callback-Token"));
        assert_eq!(s.secret_file, Path::new("/etc/smsotp/secrets/gw-callback"));
        // Each required key, left out, is named with what to write.
        for key in [
            "status_id_pointer",
            "status_id_field",
            "status_field",
            "status_failure",
            "status_token_file",
        ] {
            let text: String = full
                .lines()
                .filter(|l| !l.starts_with(&format!("{key} ")))
                .map(|l| format!("{l}\n"))
                .collect();
            let e = load(&format!("{HTTP}{text}")).unwrap_err().to_string();
            assert!(
                e.contains(&format!("provider[0].{key}")) && e.contains("is missing"),
                "{key}: {e}"
            );
        }
        let e = load(&format!("{HTTP}status_field = \"status\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("provider[0].status_field") && e.contains("need status_callback"),
            "{e}"
        );
        let e = load(&format!("{HTTP}{}", full.replace("[\"failed\"]", "[]")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("provider[0].status_failure"), "{e}");
        let e = load(&format!(
            "{HTTP}{}",
            full.replace("/messages/0/id", "messages")
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("JSON pointer"), "{e}");
    }
}
