//! Every key the config file takes, in one table ([`KEYS`]), and the hints
//! built from it when a key is unknown or a value has the wrong type.
//!
//! The table is the single list of key paths: the unknown-key suggestions
//! read it, the tests prove it matches what the deserializer accepts (every
//! listed key is accepted, and serde's own "expected one of" lists name no
//! key missing from it), and a test checks that smsotp.toml(5) documents
//! each key in the section of its table.

use std::time::Duration;

/// What a key's value is, where a hint depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A duration string such as `"5m"`.
    Duration,
    /// A rate string, COUNT/WINDOW such as `"5/1h"`.
    Rate,
    /// Anything else (its own error says what it wants).
    Other,
}

/// One key: its dotted path (arrays of tables without an index, inline
/// tables spelled out: `otp.resend.max`) and the kind of its value.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The dotted path as a person writes it under its table, without
    /// array indices: `provider.url`, `radius.client.secret_file`.
    pub path: &'static str,
    /// What the value is, so a wrong-type error can say what to write.
    pub kind: ValueKind,
}

const fn k(path: &'static str) -> Key {
    Key {
        path,
        kind: ValueKind::Other,
    }
}

const fn d(path: &'static str) -> Key {
    Key {
        path,
        kind: ValueKind::Duration,
    }
}

const fn r(path: &'static str) -> Key {
    Key {
        path,
        kind: ValueKind::Rate,
    }
}

/// Every key of smsotp.toml.
pub const KEYS: &[Key] = &[
    k("otp.length"),
    k("otp.alphabet"),
    d("otp.ttl"),
    k("otp.max_attempts"),
    k("otp.resend.max"),
    d("otp.resend.cooldown"),
    k("otp.message"),
    k("otp.key_file"),
    k("policy.exempt_users"),
    k("policy.exempt_groups"),
    k("policy.no_phone"),
    k("policy.provider_down"),
    k("policy.user_opt_out"),
    k("policy.mandatory"),
    k("policy.backup_codes"),
    k("phone.default_region"),
    k("phone.allowed_countries"),
    r("limits.sms_per_user"),
    r("limits.sms_global"),
    k("limits.lockout_after"),
    d("limits.lockout"),
    r("limits.sms_per_number"),
    k("limits.sms_per_country"),
    r("limits.sms_per_source"),
    d("limits.backoff.first"),
    d("limits.backoff.max"),
    k("limits.daily_budget"),
    k("limits.sms_cost"),
    k("limits.monitor"),
    k("directory.kind"),
    k("directory.path"),
    k("directory.field"),
    k("directory.name"),
    k("directory.preset"),
    k("directory.urls"),
    k("directory.starttls"),
    k("directory.ca_file"),
    k("directory.allow_plaintext"),
    k("directory.bind_dn"),
    k("directory.bind_password_file"),
    k("directory.base"),
    k("directory.scope"),
    k("directory.filter"),
    k("directory.phone_attributes"),
    d("directory.connect_timeout"),
    d("directory.timeout"),
    k("directory.on_unavailable"),
    k("directory.write_back"),
    d("directory.cache_ttl"),
    k("directory.user_dn"),
    k("directory.language_attribute"),
    k("store.kind"),
    k("store.path"),
    d("store.busy_timeout"),
    k("store.url"),
    k("store.username"),
    k("store.password_file"),
    k("store.db"),
    k("store.key_prefix"),
    d("store.connect_timeout"),
    d("store.timeout"),
    k("store.sentinels"),
    k("store.master_name"),
    k("store.sentinel_username"),
    k("store.sentinel_password_file"),
    k("store.ca_file"),
    k("provider.kind"),
    k("provider.name"),
    k("provider.number_format"),
    k("provider.path"),
    k("provider.program"),
    k("provider.args"),
    d("provider.timeout"),
    d("provider.connect_timeout"),
    k("provider.ca_file"),
    k("provider.proxy"),
    k("provider.url"),
    k("provider.method"),
    k("provider.content_type"),
    k("provider.headers"),
    k("provider.basic_auth.username"),
    k("provider.basic_auth.password"),
    k("provider.body"),
    k("provider.secret_file"),
    k("provider.secrets"),
    k("provider.success_status"),
    k("provider.success_body.contains"),
    k("provider.success_body.regex"),
    k("provider.success_body.json_pointer"),
    k("provider.success_body.equals"),
    k("provider.allow_http"),
    k("provider.status_callback"),
    k("provider.status_id_pointer"),
    k("provider.status_id_field"),
    k("provider.status_field"),
    k("provider.status_failure"),
    k("provider.status_delivered"),
    k("provider.status_token_file"),
    k("provider.status_token_header"),
    k("provider.base_url"),
    k("provider.from"),
    k("provider.account_sid"),
    k("provider.auth_token_file"),
    k("provider.messaging_service_sid"),
    k("provider.api_key"),
    k("provider.api_secret_file"),
    k("provider.api_key_file"),
    k("provider.auth_id"),
    k("provider.powerpack_uuid"),
    k("provider.username"),
    k("provider.password_file"),
    k("provider.host"),
    k("provider.port"),
    k("provider.tls"),
    k("provider.system_id"),
    k("provider.system_type"),
    k("provider.source_addr"),
    k("provider.source_addr_ton"),
    k("provider.source_addr_npi"),
    k("provider.dest_addr_ton"),
    k("provider.dest_addr_npi"),
    k("provider.registered_delivery"),
    k("provider.data_coding"),
    k("provider.long_messages"),
    d("provider.enquire_link_interval"),
    k("provider.max_sessions"),
    d("receipts.resend_within"),
    k("receipts.max_pending"),
    k("receipts.listen"),
    k("messages.dir"),
    k("messages.default_language"),
    k("messages.language"),
    k("messages.follow_locale"),
    k("audit.syslog"),
    k("audit.file"),
    k("radius.listen"),
    k("radius.primary.kind"),
    k("radius.primary.service"),
    k("radius.primary.directory"),
    k("radius.workers"),
    k("radius.max_pending_sends"),
    k("radius.max_queued"),
    k("radius.metrics"),
    k("radius.client.name"),
    k("radius.client.address"),
    k("radius.client.secret_file"),
    k("radius.client.mode"),
    k("radius.client.require_message_authenticator"),
    k("radius.client.limit_proxy_state"),
];

/// The man page section that documents `path` (a key path, or a table
/// path, with or without `[n]` indices): `[otp]`, `[[provider]]`,
/// `[[radius.client]]`, …; `None` at the top level.
pub fn section_of(path: &str) -> Option<&'static str> {
    let p = strip_indices(path);
    let mut parts = p.split('.');
    Some(match (parts.next()?, parts.next()) {
        ("otp", _) => "[otp]",
        ("policy", _) => "[policy]",
        ("phone", _) => "[phone]",
        ("limits", _) => "[limits]",
        ("directory", _) => "[[directory]]",
        ("store", _) => "[store]",
        ("provider", _) => "[[provider]]",
        ("audit", _) => "[audit]",
        ("receipts", _) => "[receipts]",
        ("messages", _) => "[messages]",
        ("radius", Some("client")) => "[[radius.client]]",
        ("radius", _) => "[radius]",
        _ => return None,
    })
}

/// The text that ends every config error: where the key is documented.
pub(super) fn see_also(key: &str) -> String {
    match section_of(key) {
        Some(s) => format!("see man 5 smsotp.toml, section {s}"),
        None => "see man 5 smsotp.toml".to_owned(),
    }
}

/// `provider[2].headers.X` → `provider.headers.X`.
pub(super) fn strip_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut depth = 0usize;
    for ch in path.chars() {
        match ch {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(ch),
            _ => {}
        }
    }
    out
}

/// The key at `path` (indices ignored), if it is one.
pub(super) fn key(path: &str) -> Option<&'static Key> {
    let p = strip_indices(path);
    KEYS.iter().find(|k| k.path == p)
}

/// The names one level below `table` ("" for the top level), in table
/// order: `otp` → length, alphabet, ttl, …, resend, …
pub(super) fn children(table: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for k in KEYS {
        let rest = if table.is_empty() {
            Some(k.path)
        } else {
            k.path.strip_prefix(table).and_then(|r| r.strip_prefix('.'))
        };
        if let Some(rest) = rest {
            let first = rest.split('.').next().unwrap_or(rest);
            if !out.contains(&first) {
                out.push(first);
            }
        }
    }
    out
}

/// Is `table` a table of the schema (top level "" included)?
fn is_table(table: &str) -> bool {
    !children(table).is_empty()
}

/// A name spelled by someone else: WSO2's SMSOTP connector parameters and
/// Gluu's smpp script properties, with the smsotp key that does the same
/// (empty: nothing does) and what to know when moving the value over.
struct Foreign {
    name: &'static str,
    from: &'static str,
    ours: &'static str,
    /// The value means the same here (converted to a duration where ours
    /// is one), so "write KEY = VALUE" can be said.
    copy: bool,
    note: &'static str,
}

const FOREIGN: &[Foreign] = &[
    Foreign {
        name: "TokenExpiryTime",
        from: "WSO2",
        ours: "otp.ttl",
        copy: true,
        note: "a duration from 30s to 10m",
    },
    Foreign {
        name: "TokenLength",
        from: "WSO2",
        ours: "otp.length",
        copy: true,
        note: "6 to 10",
    },
    Foreign {
        name: "OTPLength",
        from: "WSO2",
        ours: "otp.length",
        copy: true,
        note: "6 to 10",
    },
    Foreign {
        name: "SMSOTPMandatory",
        from: "WSO2",
        ours: "policy.mandatory",
        copy: true,
        note: "true or false",
    },
    Foreign {
        name: "SMSOTPEnableByUserClaim",
        from: "WSO2",
        ours: "policy.user_opt_out",
        copy: true,
        note: "true lets admins opt users out with smsotp user opt-out",
    },
    Foreign {
        name: "ResendEnable",
        from: "WSO2",
        ours: "otp.resend.max",
        copy: false,
        note: "new codes per login; 0 turns resending off",
    },
    Foreign {
        name: "RetryEnable",
        from: "WSO2",
        ours: "otp.max_attempts",
        copy: false,
        note: "wrong answers per code; 1 allows no retry",
    },
    Foreign {
        name: "MaxAttempts",
        from: "WSO2",
        ours: "otp.max_attempts",
        copy: true,
        note: "wrong answers per code, 1 to 10",
    },
    Foreign {
        name: "BackupCode",
        from: "WSO2",
        ours: "policy.backup_codes",
        copy: true,
        note: "true or false",
    },
    Foreign {
        name: "CaptureAndUpdateMobileNumber",
        from: "WSO2",
        ours: "policy.no_phone",
        copy: false,
        note: "no_phone = \"enroll\" asks a user without a number for one at login",
    },
    Foreign {
        name: "SendOTPDirectlyToMobile",
        from: "WSO2",
        ours: "policy.no_phone",
        copy: false,
        note: "no_phone = \"enroll\" asks a user without a number for one at login",
    },
    Foreign {
        name: "SMSUrl",
        from: "WSO2",
        ours: "provider.url",
        copy: false,
        note: "in a [[provider]] with kind = \"http\"; $ctx.num and $ctx.msg work",
    },
    Foreign {
        name: "HTTPMethod",
        from: "WSO2",
        ours: "provider.method",
        copy: false,
        note: "\"GET\", \"POST\" or \"PUT\"",
    },
    Foreign {
        name: "HTTPHeaders",
        from: "WSO2",
        ours: "provider.headers",
        copy: false,
        note: "a table: headers = { Authorization = \"Bearer {secret}\" }",
    },
    Foreign {
        name: "HTTPPayload",
        from: "WSO2",
        ours: "provider.body",
        copy: false,
        note: "with content_type = \"form\", \"json\" or \"raw\"",
    },
    Foreign {
        name: "HTTPResponse",
        from: "WSO2",
        ours: "provider.success_status",
        copy: false,
        note: "a list such as [200, 202]",
    },
    Foreign {
        name: "smpp_server",
        from: "Gluu",
        ours: "provider.host",
        copy: false,
        note: "in a [[provider]] with kind = \"smpp\"; name or address, no port",
    },
    Foreign {
        name: "smpp_port",
        from: "Gluu",
        ours: "provider.port",
        copy: true,
        note: "in a [[provider]] with kind = \"smpp\"",
    },
    Foreign {
        name: "password",
        from: "Gluu",
        ours: "provider.password_file",
        copy: false,
        note:
            "the SMPP password goes in a file readable by root alone, mode 0600, never in this file",
    },
    Foreign {
        name: "usecase",
        from: "WSO2",
        ours: "",
        copy: false,
        note: "smsotp takes the user name PAM or RADIUS gives it",
    },
    Foreign {
        name: "secondaryUserstore",
        from: "WSO2",
        ours: "",
        copy: false,
        note: "numbers come from [[directory]] tables",
    },
    Foreign {
        name: "SendOtpToFederatedMobile",
        from: "WSO2",
        ours: "",
        copy: false,
        note: "numbers come from [[directory]] tables",
    },
    Foreign {
        name: "federatedMobileAttributeKey",
        from: "WSO2",
        ours: "",
        copy: false,
        note: "numbers come from [[directory]] tables",
    },
    Foreign {
        name: "redirectToMultiOptionPageOnFailure",
        from: "WSO2",
        ours: "",
        copy: false,
        note: "there is no web page",
    },
    Foreign {
        name: "SMSOTPAuthenticationEndpointURL",
        from: "WSO2",
        ours: "",
        copy: false,
        note: "the prompt is PAM's or the NAS's",
    },
    Foreign {
        name: "SMSOTPAuthenticationEndpointErrorPage",
        from: "WSO2",
        ours: "",
        copy: false,
        note: "the prompt is PAM's or the NAS's",
    },
    Foreign {
        name: "MobileNumberRegPage",
        from: "WSO2",
        ours: "",
        copy: false,
        note: "policy.no_phone = \"enroll\" asks for the number at the prompt",
    },
];

/// Case, `_`, `-` and spaces ignored: `token_expiry_time` is TokenExpiryTime.
fn fold(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Levenshtein distance with adjacent transpositions (optimal string
/// alignment), on characters.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// `table.key` in the words of a fix: "ttl in [otp]".
fn place(path: &str) -> String {
    let (table, name) = path.rsplit_once('.').unwrap_or(("", path));
    let top = table.split('.').next().unwrap_or(table);
    let sub = table
        .strip_prefix(top)
        .and_then(|r| r.strip_prefix('.'))
        .filter(|_| section_of(table) != Some("[[radius.client]]"));
    let name = match sub {
        Some(sub) => format!("{sub}.{name}"),
        None => name.to_owned(),
    };
    match section_of(path) {
        Some(s) => format!("{name} in {s}"),
        None => name,
    }
}

/// `value` (TOML) as it should be written for `key`, when it can be
/// converted: a number of seconds for a duration, a count for a rate.
fn converted(key: &Key, value: Option<&toml::Value>) -> Option<String> {
    match (key.kind, value?) {
        (ValueKind::Duration, toml::Value::Integer(n)) if *n >= 0 => Some(format!(
            "\"{}\"",
            humantime::format_duration(Duration::from_secs(n.unsigned_abs()))
        )),
        (ValueKind::Rate, toml::Value::Integer(n)) if *n > 0 => Some(format!("\"{n}/1h\"")),
        (ValueKind::Other, v @ (toml::Value::Integer(_) | toml::Value::Boolean(_))) => {
            Some(v.to_string())
        }
        _ => None,
    }
}

/// What to say about an unknown key `name` found in `table` (a path
/// without indices, "" at the top level), whose value is `value` when it
/// could be read. `expected` is serde's list of the names the table takes.
pub(super) fn unknown_key_hint(
    table: &str,
    name: &str,
    value: Option<&toml::Value>,
    expected: &[String],
) -> Option<String> {
    let folded = fold(name);
    // Another system's name for one of ours.
    if let Some(f) = FOREIGN.iter().find(|f| fold(f.name) == folded) {
        if f.ours.is_empty() {
            return Some(format!(
                "{} is {}'s setting; smsotp has no counterpart ({}): remove it",
                f.name, f.from, f.note
            ));
        }
        let ours = key(f.ours)?;
        let short = ours.path.rsplit('.').next().unwrap_or(ours.path);
        let write = match converted(ours, value) {
            Some(v) if f.copy => format!("; write {short} = {v}"),
            _ => String::new(),
        };
        return Some(format!(
            "{} is {}'s name for {} ({}){write}",
            f.name,
            f.from,
            place(ours.path),
            f.note
        ));
    }
    // A misspelling of a key of this table.
    let here: Vec<&str> = if expected.is_empty() {
        children(table)
    } else {
        expected.iter().map(String::as_str).collect()
    };
    let limit = if name.chars().count() <= 4 { 1 } else { 2 };
    let near = here
        .iter()
        .map(|c| (distance(&name.to_lowercase(), c), *c))
        .filter(|(dist, _)| *dist <= limit)
        .min_by_key(|(dist, _)| *dist);
    if let Some((_, c)) = near {
        return Some(format!("did you mean {c}?"));
    }
    // A key of another table.
    let elsewhere: Vec<&Key> = KEYS
        .iter()
        .filter(|k| {
            let (t, n) = k.path.rsplit_once('.').unwrap_or(("", k.path));
            n == name && t != table
        })
        .collect();
    if let Some(k) = elsewhere.first() {
        return Some(format!(
            "{name} belongs in another table: {}",
            place(k.path)
        ));
    }
    None
}

/// What to say when `path` holds a value of the wrong type: a number where
/// a duration or a rate is expected.
pub(super) fn wrong_type_hint(path: &str, value: Option<&toml::Value>) -> Option<String> {
    let key = key(path)?;
    let write = converted(key, value)?;
    match key.kind {
        ValueKind::Duration => Some(format!(
            "a duration is a string with a unit: write {write} (a bare number is not read as seconds)"
        )),
        ValueKind::Rate => Some(format!(
            "a rate is a string COUNT/WINDOW: write {write} (at most that many in any hour)"
        )),
        ValueKind::Other => None,
    }
}

/// The table a key stands in: the header table (from the line structure)
/// refined by serde's list of expected names, which identifies inline
/// tables such as `otp.resend` or `radius.primary`.
pub(super) fn table_for(header: &str, expected: &[String]) -> String {
    let header = strip_indices(header);
    if expected.is_empty() {
        return header;
    }
    let fits = |t: &str| {
        let c = children(t);
        expected.iter().all(|e| c.contains(&e.as_str()))
    };
    // Deepest table under the header whose names include every expected one.
    let mut best: Option<&str> = None;
    let mut tables: Vec<&str> = vec![""];
    for k in KEYS {
        let mut end = 0;
        while let Some(dot) = k.path[end..].find('.') {
            end += dot;
            let t = &k.path[..end];
            if !tables.contains(&t) {
                tables.push(t);
            }
            end += 1;
        }
    }
    for t in tables {
        let under = header.is_empty() || t == header || t.starts_with(&format!("{header}."));
        if under && fits(t) && best.is_none_or(|b| t.len() > b.len()) {
            best = Some(t);
        }
    }
    match best {
        Some(t) if is_table(t) => t.to_owned(),
        _ => header,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(n: i64) -> toml::Value {
        toml::Value::Integer(n)
    }

    #[test]
    fn misspelling_suggests_the_nearest_key_of_the_same_table() {
        let h = unknown_key_hint("otp", "lenght", Some(&int(7)), &[]).unwrap();
        assert_eq!(h, "did you mean length?");
        let h = unknown_key_hint("provider", "pasword_file", None, &[]).unwrap();
        assert_eq!(h, "did you mean password_file?");
        let h = unknown_key_hint("limits", "lockout_afetr", None, &[]).unwrap();
        assert_eq!(h, "did you mean lockout_after?");
        // Nothing near: no guess.
        assert_eq!(unknown_key_hint("otp", "colour", None, &[]), None);
    }

    #[test]
    fn a_key_of_another_table_is_pointed_there() {
        let h = unknown_key_hint("policy", "ttl", None, &[]).unwrap();
        assert!(h.contains("ttl in [otp]"), "{h}");
        let h = unknown_key_hint("otp", "lockout", None, &[]).unwrap();
        assert!(h.contains("lockout in [limits]"), "{h}");
    }

    #[test]
    fn wso2_and_gluu_names_map_to_ours() {
        let h = unknown_key_hint("otp", "TokenExpiryTime", Some(&int(300)), &[]).unwrap();
        assert!(h.contains("WSO2's name for ttl in [otp]"), "{h}");
        assert!(h.ends_with("write ttl = \"5m\""), "{h}");
        let h = unknown_key_hint("", "TokenExpiryTime", Some(&int(90)), &[]).unwrap();
        assert!(h.ends_with("write ttl = \"1m 30s\""), "{h}");
        let h = unknown_key_hint("otp", "TokenLength", Some(&int(8)), &[]).unwrap();
        assert!(
            h.contains("length in [otp]") && h.ends_with("write length = 8"),
            "{h}"
        );
        let cases = [
            ("SMSOTPMandatory", "mandatory in [policy]"),
            ("SMSOTPEnableByUserClaim", "user_opt_out in [policy]"),
            ("ResendEnable", "resend.max in [otp]"),
            ("MaxAttempts", "max_attempts in [otp]"),
            ("BackupCode", "backup_codes in [policy]"),
            ("CaptureAndUpdateMobileNumber", "no_phone = \"enroll\""),
            ("smpp_server", "host in [[provider]]"),
            ("smpp_port", "port in [[provider]]"),
            ("password", "password_file in [[provider]]"),
            ("token_expiry_time", "ttl in [otp]"),
        ];
        for (name, says) in cases {
            let h = unknown_key_hint("provider", name, None, &[]).unwrap_or_default();
            assert!(h.contains(says), "{name}: {h}");
        }
        let h = unknown_key_hint(
            "policy",
            "SMSOTPMandatory",
            Some(&toml::Value::Boolean(true)),
            &[],
        )
        .unwrap();
        assert!(h.ends_with("write mandatory = true"), "{h}");
        // A value that means something else here is not copied over.
        let h = unknown_key_hint(
            "otp",
            "ResendEnable",
            Some(&toml::Value::Boolean(true)),
            &[],
        )
        .unwrap();
        assert!(
            h.contains("resend.max in [otp]") && !h.contains("write"),
            "{h}"
        );
        let h = unknown_key_hint("", "usecase", None, &[]).unwrap();
        assert!(
            h.contains("no counterpart") && h.contains("remove it"),
            "{h}"
        );
    }

    #[test]
    fn numbers_where_durations_or_rates_belong_are_converted() {
        let h = wrong_type_hint("otp.ttl", Some(&int(300))).unwrap();
        assert!(h.contains("write \"5m\""), "{h}");
        let h = wrong_type_hint("provider[1].timeout", Some(&int(10))).unwrap();
        assert!(h.contains("write \"10s\""), "{h}");
        let h = wrong_type_hint("limits.lockout", Some(&int(3600))).unwrap();
        assert!(h.contains("write \"1h\""), "{h}");
        let h = wrong_type_hint("limits.sms_per_user", Some(&int(5))).unwrap();
        assert!(
            h.contains("COUNT/WINDOW") && h.contains("write \"5/1h\""),
            "{h}"
        );
        assert_eq!(wrong_type_hint("otp.length", Some(&int(6))), None);
        assert_eq!(
            wrong_type_hint("otp.ttl", Some(&toml::Value::Boolean(true))),
            None
        );
    }

    #[test]
    fn sections_and_tables() {
        assert_eq!(section_of("otp.resend.max"), Some("[otp]"));
        assert_eq!(
            section_of("radius.client[3].secret_file"),
            Some("[[radius.client]]")
        );
        assert_eq!(section_of("radius.primary.kind"), Some("[radius]"));
        assert_eq!(section_of("provider[0].headers.X"), Some("[[provider]]"));
        assert_eq!(section_of("(top level)"), None);
        let e = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(table_for("otp", &e(&["max", "cooldown"])), "otp.resend");
        assert_eq!(table_for("radius", &e(&["service"])), "radius.primary");
        assert_eq!(table_for("provider", &e(&["kind", "name"])), "provider");
        assert_eq!(table_for("otp", &[]), "otp");
        assert_eq!(
            children("otp"),
            [
                "length",
                "alphabet",
                "ttl",
                "max_attempts",
                "resend",
                "message",
                "key_file"
            ]
        );
    }

    #[test]
    fn distances() {
        assert_eq!(distance("lenght", "length"), 1);
        assert_eq!(distance("ttl", "ttl"), 0);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
