//! `test-send`: one SMS through the configured chain (failover as at
//! login) or through one named provider, with what each provider answered.

use std::path::Path;

use serde_json::json;
use smsotp_core::phone::Phone;

use crate::report::{exit, Failure};
use crate::{flow_err, load_config, open_engine_with, Output};

pub(crate) fn test_send(
    path: &Path,
    to: Option<&str>,
    user: Option<&str>,
    only: Option<&str>,
) -> Result<Output, Failure> {
    use smsotp_core::sms::{self, ChainOutcome, Sms};
    let cfg = load_config(path)?;
    let specs = match only {
        None => cfg.providers.clone(),
        Some(name) => match cfg.providers.iter().find(|p| p.name() == name) {
            Some(p) => vec![p.clone()],
            None => {
                let names: Vec<&str> = cfg.providers.iter().map(|p| p.name()).collect();
                return Err(Failure::new(
                    exit::USAGE,
                    format!(
                        "no provider is named \"{name}\" in {}; the configured ones: {}",
                        path.display(),
                        names.join(", ")
                    ),
                )
                .fix("give --provider one of those names (each [[provider]] has a name, by default its kind)"));
            }
        },
    };
    let engine = open_engine_with(cfg)?;
    let phone = match (to, user) {
        (Some(n), _) => Phone::parse(n, engine.cfg.phone.default_region).map_err(|e| {
            Failure::new(exit::DATAERR, format!("--to: {}", e.problem())).fix(e.fix())
        })?,
        (None, Some(u)) => engine
            .find_phone(u)
            .map_err(flow_err)?
            .map(|f| f.phone)
            .ok_or_else(|| {
                Failure::new(
                    exit::NOUSER,
                    format!("no phone number is registered for {u}"),
                )
                .fix(format!("smsotp user set-phone {u} NUMBER"))
            })?,
        (None, None) => return Err(Failure::new(exit::USAGE, "give --to NUMBER or --user USER")),
    };
    if !phone.allowed(&engine.cfg.phone) {
        return Err(Failure::new(
            exit::DATAERR,
            format!(
                "{} is in a country not in phone.allowed_countries, so a login would not send to it",
                phone.masked()
            ),
        )
        .fix("use a number of an allowed country, or add its country to phone.allowed_countries"));
    }
    let providers = sms::from_config(&specs, || Box::new(smsotp_core::clock::SystemClock));
    let text = format!(
        "smsotp test message from {}. No action needed.",
        smsotp_core::flow::hostname()
    );
    let outcome = sms::send_with_failover(
        &providers,
        &Sms {
            to: &phone,
            text: &text,
        },
    );
    match outcome {
        ChainOutcome::Sent {
            provider,
            failed_over_from,
        } => {
            let mut t = format!("sent to {} through provider {provider}\n", phone.masked());
            if only.is_some() {
                t.push_str("  (--provider: that provider only, no failover)\n");
            }
            if let Some((from, err)) = &failed_over_from {
                t.push_str(&format!("  (provider {from} failed first: {err})\n"));
            }
            Ok(Output {
                text: t,
                json: json!({"ok": true, "to": phone.masked(), "provider": provider,
                    "failed_over_from": failed_over_from.as_ref().map(|(n, e)| json!({"provider": n, "error": e.to_string()}))}),
                code: exit::OK,
            })
        }
        ChainOutcome::Failed(errors) => {
            let detail: Vec<String> = errors.iter().map(|(n, e)| format!("{n}: {e}")).collect();
            Err(Failure::new(
                exit::UNAVAILABLE,
                format!(
                    "no provider could send to {}: {}",
                    phone.masked(),
                    detail.join("; ")
                ),
            )
            .fix("run `smsotp doctor` and check each provider's settings"))
        }
    }
}
