//! `check-config`: load the config, check the phone lists, and print the
//! effective values with secrets redacted (also the first part of `doctor`).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use smsotp_core::config::sms_fit::{self, LongestValues, SmsTemplate};
use smsotp_core::config::{Config, ConfigWarning};
use smsotp_core::directory;

use crate::report::{self, Failure};
use crate::{load_config, Output};

pub(crate) fn check_config(path: &Path) -> Result<Output, Failure> {
    let cfg = load_config(path)?;
    let eff = effective(&cfg);
    let lists = directory::check_phone_lists(&cfg);
    let bad: Vec<Value> = lists
        .bad
        .iter()
        .map(|b| {
            json!({"location": b.location, "path": b.path, "line": b.line, "user": b.user,
                   "problem": b.problem, "fix": b.fix})
        })
        .collect();
    let mut text = format!(
        "{}: valid; the effective values follow (secrets are never shown: they stay in their files)\n\n",
        path.display()
    );
    text.push_str(&report::effective_text(&eff));
    // The message catalogues (shipped, and the admin's files).
    let messages = smsotp_core::messages::Messages::load(
        &cfg.messages,
        cfg.otp.message_set.then_some(&cfg.otp.message),
    );
    // Each language's SMS with the longest values: encoding and count.
    let (sms_text, sms_json, sms_warnings) =
        sms_section(&cfg, &sms_fit::every_language(&cfg, &messages));
    text.push_str(&sms_text);
    let warnings: Vec<&ConfigWarning> = cfg.warnings.iter().chain(&sms_warnings).collect();
    // Settings that work but are probably not what the admin meant.
    for w in &warnings {
        text.push_str(&format!("warning: {w}\n"));
    }
    // The count, each bad entry with its fix, and what they mean.
    let findings = report::phone_list_findings(&lists);
    if let Some((summary, entries)) = findings.split_last() {
        text.push_str(&summary.message);
        text.push('\n');
        for f in entries {
            text.push_str(&format!("  {}\n", f.message));
            if let Some(fix) = &f.fix {
                text.push_str(&format!("    fix: {fix}\n"));
            }
        }
        if let Some(fix) = &summary.fix {
            text.push_str(&format!("\n{} problem(s): {fix}\n", entries.len()));
        }
    }
    let mut code = report::findings_exit(&findings);
    // The message catalogues: a bad file never fails a login (its keys
    // fall back to the shipped texts), so it is reported here.
    let languages: Vec<&str> = messages.languages().collect();
    text.push_str(&format!(
        "messages: {} (default {})\n",
        languages.join(", "),
        messages.default_catalogue().lang()
    ));
    let problems: Vec<String> = messages
        .problems()
        .iter()
        .map(ToString::to_string)
        .collect();
    for p in &problems {
        text.push_str(&format!("error: {p}\n"));
    }
    if !problems.is_empty() {
        text.push_str(&format!(
            "\n{} problem(s) in the message files: logins use the shipped text for each until fixed\n",
            problems.len()
        ));
        code = code.max(crate::report::exit::PROBLEMS);
    }
    Ok(Output {
        text,
        json: json!({"ok": lists.bad.is_empty() && problems.is_empty(), "config": path, "effective": eff,
                     "warnings": warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
                     "sms": sms_json,
                     "phone_lists": {"valid": lists.valid, "bad": bad},
                     "messages": {"languages": languages, "problems": problems}}),
        code,
    })
}

/// Each SMS template of `templates` (one per language) rendered with the
/// longest values of its placeholders on this host, with its encoding and
/// SMS count: the text for people, the JSON, and the warnings (a
/// character forcing UCS-2, more than one SMS).
pub(crate) fn sms_section(
    cfg: &Config,
    templates: &[SmsTemplate<'_>],
) -> (String, Value, Vec<ConfigWarning>) {
    let values = LongestValues::for_config(cfg, &smsotp_core::flow::hostname());
    let fits = sms_fit::check(templates, &values);
    let shown = |k: &str| match k {
        "code" => values.code.clone(),
        "host" => values.host.clone(),
        "ttl" => smsotp_core::config::human_duration(values.ttl),
        "user" => values.user.clone(),
        _ => values.service.clone(),
    };
    let mut text =
        String::from("[sms]\n# each language's SMS with the longest value of each placeholder:\n");
    for (k, note) in &values.notes {
        text.push_str(&format!("{k:<8} = {}  ({note})\n", shown(k)));
    }
    for f in &fits {
        text.push_str(&format!(
            "{} ({}): {}\n  {}\n",
            f.language,
            f.key,
            f.summary(),
            f.text
        ));
    }
    text.push('\n');
    let json = json!({
        "values": values.notes.iter().map(|(k, note)| (k.to_string(), json!({"value": shown(k), "note": note}))).collect::<serde_json::Map<_, _>>(),
        "templates": fits.iter().map(|f| json!({
            "language": f.language, "key": f.key, "text": f.text,
            "encoding": f.count.encoding.name(), "units": f.count.units,
            "unit": f.count.encoding.unit_name(), "segments": f.count.segments,
            "first_non_gsm": f.count.first_non_gsm.map(|n| json!({
                "character": n.character.to_string(), "position": n.position,
                "replacement": n.replacement(),
            })),
        })).collect::<Vec<_>>(),
    });
    // One template (otp.message) used by several languages makes the same
    // warning for each: say it once, naming them all.
    let mut warnings: Vec<(ConfigWarning, Vec<String>)> = Vec::new();
    for f in fits {
        for w in f.warnings {
            let plain = w
                .message
                .replacen(&format!("the {} SMS", f.language), "the SMS", 1);
            match warnings.iter_mut().find(|(seen, _)| {
                seen.path == w.path && seen.location == w.location && seen.message == plain
            }) {
                Some((_, langs)) => langs.push(f.language.clone()),
                None => warnings.push((
                    ConfigWarning {
                        message: plain,
                        ..w
                    },
                    vec![f.language.clone()],
                )),
            }
        }
    }
    let warnings = warnings
        .into_iter()
        .map(|(w, langs)| ConfigWarning {
            message: w
                .message
                .replacen("the SMS", &format!("the {} SMS", langs.join(", ")), 1),
            ..w
        })
        .collect();
    (text, json, warnings)
}

/// The effective config, without secrets: secret values live in files and
/// only their paths are shown; HTTP providers show only where they connect.
pub(crate) fn effective(c: &Config) -> Value {
    use smsotp_core::config::{
        Alphabet, ClientMode, DirectorySpec, LanguageChoice, NoPhone, PrimaryAuth, ProviderDown,
    };
    let d = |d: std::time::Duration| smsotp_core::config::human_duration(d);
    let providers: Vec<Value> = c.providers.iter().map(provider_json).collect();
    json!({
        "otp": {
            "length": c.otp.length,
            "alphabet": match c.otp.alphabet { Alphabet::Digits => "digits", Alphabet::Alphanumeric => "alphanumeric" },
            "ttl": d(c.otp.ttl),
            "max_attempts": c.otp.max_attempts.get(),
            "resend": {"max": c.otp.resend_max, "cooldown": d(c.otp.resend_cooldown)},
            "key_file": c.otp.key_file,
        },
        "policy": {
            "exempt_users": c.policy.exempt_users,
            "exempt_groups": c.policy.exempt_groups,
            "no_phone": match c.policy.no_phone { NoPhone::Deny => "deny", NoPhone::Allow => "allow", NoPhone::Enroll => "enroll" },
            "provider_down": match c.policy.provider_down { ProviderDown::Deny => "deny", ProviderDown::Allow => "allow" },
            "user_opt_out": c.policy.user_opt_out,
            "mandatory": c.policy.mandatory,
            "backup_codes": c.policy.backup_codes,
        },
        "phone": {
            "default_region": c.phone.default_region.map(|r| r.as_ref().to_owned()),
            "allowed_countries": c.phone.allowed_countries.iter().map(|r| r.as_ref().to_owned()).collect::<Vec<_>>(),
        },
        "limits": limits_json(&c.limits),
        "directories": c.directories.iter().map(|s| match s {
            DirectorySpec::File { path } => json!({"kind": "file", "path": path}),
            DirectorySpec::Gecos { field } => json!({"kind": "gecos", "field": field}),
            DirectorySpec::Ldap(l) => json!({
                "kind": "ldap", "name": l.name,
                "urls": l.urls.iter().map(|u| u.text.clone()).collect::<Vec<_>>(),
                "starttls": l.starttls, "ca_file": l.ca_file,
                "bind_dn": l.bind.as_ref().map(|(dn, _)| dn.clone()),
                "bind_password_file": l.bind.as_ref().map(|(_, f)| f.clone()),
                "base": l.base, "scope": format!("{:?}", l.scope).to_lowercase(), "filter": l.filter,
                "phone_attributes": l.phone_attributes,
                "connect_timeout": d(l.connect_timeout), "timeout": d(l.timeout),
                "on_unavailable": format!("{:?}", l.on_unavailable).to_lowercase(),
                "write_back": l.write_back, "cache_ttl": d(l.cache_ttl), "user_dn": l.user_dn,
                "active_directory": l.active_directory,
            }),
        }).collect::<Vec<_>>(),
        "store": c.store.settings().into_iter().map(|(k, v)| (k.to_owned(), Value::from(v))).collect::<serde_json::Map<_, _>>(),
        "providers": providers,
        "audit": {"syslog": c.audit.syslog, "file": c.audit.file},
        "messages": {
            "dir": c.messages.dir,
            "default_language": c.messages.default_language,
            "language": match c.messages.language { LanguageChoice::Default => "default", LanguageChoice::ByNumber => "by_number" },
            "follow_locale": c.messages.follow_locale,
        },
        "radius": c.radius.as_ref().map(|r| json!({
            "listen": r.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "metrics": r.metrics.map(|a| a.to_string()),
            "primary": match &r.primary { PrimaryAuth::None => "none".to_owned(), PrimaryAuth::Pam { service } => format!("pam:{service}"), PrimaryAuth::Ldap(l) => format!("ldap:{}", l.name) },
            "clients": r.clients.iter().map(|cl| json!({
                "name": cl.name, "address": cl.network.to_string(),
                "mode": match cl.mode { ClientMode::Challenge => "challenge", ClientMode::Append => "append" },
                "secret_file": cl.secret_file,
                "require_message_authenticator": cl.require_message_authenticator,
            })).collect::<Vec<_>>(),
        })),
    })
}

/// `[limits]`: each SMS limit that is set with its mode (`enforce`, or
/// `monitor` when `limits.monitor` lists it), then the lockout.
fn limits_json(l: &smsotp_core::config::Limits) -> Value {
    let mut m = serde_json::Map::new();
    for (key, setting, mode) in l.summary() {
        m.insert(
            key.to_owned(),
            json!({"limit": setting, "mode": mode.word()}),
        );
    }
    m.insert("lockout_after".into(), json!(l.lockout_after.get()));
    m.insert(
        "lockout".into(),
        json!(smsotp_core::config::human_duration(l.lockout)),
    );
    Value::Object(m)
}

/// One provider: its kind and where it connects, with the paths of its
/// secret files but never their contents.
fn provider_json(p: &smsotp_core::sms::ProviderSpec) -> Value {
    use smsotp_core::sms::http::{Gateway, Preset};
    use smsotp_core::sms::ProviderSpec;
    let d = smsotp_core::config::human_duration;
    match p {
        ProviderSpec::Outbox { name, path } => {
            json!({"name": name, "kind": "outbox", "path": path})
        }
        ProviderSpec::Command {
            name,
            program,
            args,
            timeout,
        } => json!({"name": name, "kind": "command", "program": program,
                    "args": args.len(), "timeout": d(*timeout)}),
        ProviderSpec::Http(h) => {
            let preset = match &h.gateway {
                Gateway::Template(_) => None,
                Gateway::Preset { preset, .. } => Some(match preset {
                    Preset::Twilio { .. } => "twilio",
                    Preset::Vonage { .. } => "vonage",
                    Preset::Clickatell { .. } => "clickatell",
                    Preset::Plivo { .. } => "plivo",
                    Preset::Bulksms { .. } => "bulksms",
                }),
            };
            let secret_files: Vec<PathBuf> = h.secret_paths().into_iter().map(|(_, p)| p).collect();
            json!({"name": h.name, "kind": "http", "preset": preset,
                   "endpoint": h.endpoint(), "number_format": h.number_format.word(),
                   "proxy": h.transport.proxy.as_deref().map(smsotp_core::sms::http::without_credentials),
                   "ca_file": h.transport.ca_file, "timeout": d(h.transport.timeout),
                   "secret_files": secret_files})
        }
        ProviderSpec::Smpp(s) => json!({"name": s.name, "kind": "smpp",
            "host": s.host, "port": s.port, "tls": s.tls, "endpoint": s.endpoint(),
            "system_id": s.system_id, "source_addr": s.source_addr,
            "number_format": s.number_format.word(), "dest_addr_ton": s.dest_addr_ton,
            "password_file": s.password_file, "ca_file": s.ca_file,
            "timeout": d(s.timeout)}),
    }
}
