//! `[receipts]`: what smsotp-radiusd does with delivery receipts (SMPP
//! `deliver_sm` receipts on its bound sessions): how long after a send a
//! failed receipt still sends the same code once through the next
//! provider, and how many sent codes it keeps for that in memory.

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
}

impl Default for ReceiptSettings {
    fn default() -> Self {
        ReceiptSettings {
            resend_within: Duration::from_secs(120),
            max_pending: 10_000,
        }
    }
}

/// `[receipts]`; warns when it is set but no provider asks for receipts.
pub(super) fn validate(
    c: &Checker<'_>,
    r: &RawReceipts,
    providers: &[ProviderSpec],
    warnings: &mut Vec<ConfigWarning>,
) -> Result<ReceiptSettings, ConfigError> {
    let asks = providers
        .iter()
        .any(|p| matches!(p, ProviderSpec::Smpp(s) if s.registered_delivery != 0));
    if let (Some(v), false) = (&r.resend_within, asks) {
        warnings.push(c.warning(
            v.span(),
            "receipts.resend_within",
            "no provider asks for delivery receipts, so nothing is ever resent; \
             set registered_delivery = 1 on the smpp provider",
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
}
