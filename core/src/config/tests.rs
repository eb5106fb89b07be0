//! Tests of the config as a whole: defaults, the key table against the
//! schema and the man page, the shipped files. Each section's own tests
//! are beside it; the helpers here serve them all.

use std::path::Path;
use std::time::Duration;

use super::*;

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(Path::new("/etc/smsotp/smsotp.toml"), text)
}

pub(super) fn err_of(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("config should have been refused:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn empty_config_gives_safe_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.otp.length, 6);
    assert_eq!(c.otp.alphabet, Alphabet::Digits);
    assert_eq!(c.otp.ttl, Duration::from_secs(300));
    assert_eq!(c.otp.max_attempts.get(), 3);
    assert_eq!(c.policy.no_phone, NoPhone::Deny);
    assert_eq!(c.policy.provider_down, ProviderDown::Deny);
    assert_eq!(c.limits.sms_per_user.count.get(), 5);
    assert_eq!(c.limits.lockout_after.get(), 10);
    assert!(matches!(c.providers[0], ProviderSpec::Outbox { .. }));
    assert!(matches!(c.store, StoreSpec::Sqlite { .. }));
}

/// A minimal file that sets `path` (from [`KEYS`]) to a value of some
/// type, with what its table needs to reach that key (a tag).
fn setting(path: &str) -> String {
    let (table, name) = path.rsplit_once('.').unwrap();
    let v = "1";
    match table {
        "directory" => {
            let kind = match name {
                "field" => "gecos",
                "path" | "kind" => "file",
                _ => "ldap",
            };
            format!("[[directory]]\nkind = \"{kind}\"\n{name} = {v}\n")
        }
        "radius.primary" => {
            let kind = match name {
                "service" => "pam",
                "directory" => "ldap",
                _ => "none",
            };
            format!("[radius]\nprimary = {{ kind = \"{kind}\", {name} = {v} }}\n")
        }
        "provider" if name == "kind" => format!("[[provider]]\nkind = {v}\n"),
        // The first kind that takes the key (http for one none takes).
        "provider" => {
            let kind = crate::sms::KINDS
                .iter()
                .find(|k| crate::sms::provider_keys(k).unwrap().contains(&name))
                .unwrap_or(&"http");
            format!("[[provider]]\nkind = \"{kind}\"\n{name} = {v}\n")
        }
        "radius.client" => format!("[[{table}]]\n{name} = {v}\n"),
        t if t.starts_with("provider.") => {
            format!(
                "[[provider]]\nkind = \"http\"\n{} = {{ {name} = {v} }}\n",
                &t[9..]
            )
        }
        "otp.resend" => format!("[otp]\nresend = {{ {name} = {v} }}\n"),
        t => format!("[{t}]\n{name} = {v}\n"),
    }
}

/// Both reads of the loader: the file, then each `[[provider]]` with its
/// kind's struct.
fn read_raw(text: &str) -> Result<(), toml_edit::de::Error> {
    let doc = toml_edit::ImDocument::parse(text)?;
    let items = crate::sms::ProviderItems::of(&doc);
    let raw = RawConfig::deserialize(toml_edit::de::Deserializer::from(doc))?;
    crate::sms::read(items, &raw.provider).map(|_| ())
}

/// Every key of the table is one the deserializer accepts.
#[test]
fn every_listed_key_is_accepted() {
    for key in KEYS {
        let text = setting(key.path);
        if let Err(e) = read_raw(&text) {
            assert!(
                !e.message().contains("unknown field"),
                "{} is in KEYS but refused:\n{text}\n{e}",
                key.path
            );
        }
    }
    // The check can fail: a key that is not in the schema.
    let e = toml::from_str::<RawConfig>(&setting("otp.not_a_key")).unwrap_err();
    assert!(e.message().contains("unknown field"), "{e}");
    // Each kind's struct takes every key of the kind's list.
    for kind in crate::sms::KINDS {
        for name in crate::sms::provider_keys(kind).unwrap() {
            let text = format!("[[provider]]\nkind = \"{kind}\"\n{name} = 1\n");
            if let Err(e) = read_raw(&text) {
                assert!(
                    !e.message().contains("unknown field"),
                    "{kind} lists {name} but refuses it:\n{e}"
                );
            }
        }
    }
    let e = read_raw(&setting("provider.not_a_key")).unwrap_err();
    assert!(e.message().contains("unknown field"), "{e}");
}

/// Every key the deserializer accepts is in the table: serde lists the
/// names a table takes when it meets an unknown one.
#[test]
fn every_accepted_key_is_listed() {
    let mut tables: Vec<String> = vec![String::new()];
    for key in KEYS {
        let mut t = String::new();
        for part in key
            .path
            .split('.')
            .collect::<Vec<_>>()
            .split_last()
            .unwrap()
            .1
        {
            if !t.is_empty() {
                t.push('.');
            }
            t.push_str(part);
            if !tables.contains(&t) {
                tables.push(t.clone());
            }
        }
    }
    for table in &tables {
        let text = if table.is_empty() {
            "zz_unknown = 1\n".to_owned()
        } else {
            setting(&format!("{table}.zz_unknown"))
        };
        let e = read_raw(&text).unwrap_err();
        let m = e.message();
        assert!(m.contains("unknown field `zz_unknown`"), "{table}: {m}");
        let listed = keys::children(table);
        let expected: Vec<&str> = m
            .split_once("expected ")
            .map(|(_, l)| l.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        // (kind = "none" of radius.primary takes nothing else.)
        assert!(
            !expected.is_empty() || m.contains("there are no fields"),
            "{table}: {m}"
        );
        for name in expected {
            assert!(
                listed.contains(&name),
                "{table}.{name} is accepted but not in KEYS"
            );
        }
    }
    // The tagged tables list their keys per kind.
    for (text, table) in [
        ("[[directory]]\nkind = \"gecos\"\nzz = 1\n", "directory"),
        (
            "[radius]\nprimary = { kind = \"pam\", zz = 1 }\n",
            "radius.primary",
        ),
    ] {
        let m = toml::from_str::<RawConfig>(text)
            .unwrap_err()
            .message()
            .to_owned();
        let listed = keys::children(table);
        for name in m.split('`').skip(3).step_by(2) {
            assert!(listed.contains(&name), "{table}.{name}: {m}");
        }
    }
    // Each kind's struct takes only keys of [[provider]] (serde lists
    // the names it takes)…
    let listed = keys::children("provider");
    for kind in crate::sms::KINDS {
        let text = format!("[[provider]]\nkind = \"{kind}\"\nzz_unknown = 1\n");
        let e = read_raw(&text).unwrap_err();
        let m = e.message();
        assert!(m.contains("unknown field `zz_unknown`"), "{kind}: {m}");
        for name in m.split('`').skip(3).step_by(2) {
            assert!(listed.contains(&name), "provider.{name} ({kind}): {m}");
        }
    }
    // …and each kind's list of keys names only keys of [[provider]].
    for kind in crate::sms::KINDS {
        for name in crate::sms::provider_keys(kind).unwrap() {
            assert!(listed.contains(&name), "provider.{name} ({kind})");
        }
    }
}

/// smsotp.toml(5) documents every key of [`KEYS`] as a term (`.TP`
/// then `.B key` or `.BR key …`) in the section of its table, so the
/// man page cannot drift from the schema.
#[test]
fn man_page_documents_every_key_in_its_section() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/man/smsotp.toml.5");
    let page = std::fs::read_to_string(&path).unwrap();
    // Section heading → the terms defined in it.
    let mut terms: Vec<(String, Vec<String>)> = Vec::new();
    let mut after_tp = false;
    for line in page.lines() {
        if let Some(h) = line.strip_prefix(".SH ") {
            terms.push((h.trim().to_owned(), Vec::new()));
        } else if after_tp {
            let term = line
                .strip_prefix(".BR ")
                .or_else(|| line.strip_prefix(".B "))
                .and_then(|t| t.split_whitespace().next());
            if let (Some(t), Some((_, list))) = (term, terms.last_mut()) {
                list.push(t.trim_matches('"').to_owned());
            }
        }
        after_tp = line == ".TP";
    }
    let mut missing = Vec::new();
    for key in KEYS {
        let section = section_of(key.path).unwrap();
        // The key's name below its section's table: otp.resend.max is
        // resend.max in [otp], radius.client.name is name.
        let table = section.trim_matches(|c| c == '[' || c == ']');
        let name = key
            .path
            .strip_prefix(table)
            .and_then(|r| r.strip_prefix('.'))
            .unwrap();
        let found = terms
            .iter()
            .any(|(h, list)| h == section && list.iter().any(|t| t == name));
        if !found {
            missing.push(format!("{name} (in {section})"));
        }
    }
    assert!(
        missing.is_empty(),
        "{} does not document: {}",
        path.display(),
        missing.join(", ")
    );
    // The check can fail: a term in the wrong section does not count.
    assert!(!terms
        .iter()
        .any(|(h, list)| h == "[otp]" && list.iter().any(|t| t == "lockout")));
}

#[test]
fn relative_paths_are_refused() {
    let e = err_of("[[provider]]\nkind = \"outbox\"\npath = \"outbox.jsonl\"\n");
    assert!(
        e.contains("provider[0].path") && e.contains("absolute"),
        "{e}"
    );
}

#[test]
fn duplicate_provider_names_are_refused() {
    let e = err_of(
        "[[provider]]\nkind = \"outbox\"\n[[provider]]\nkind = \"outbox\"\npath = \"/tmp/o2\"\n",
    );
    assert!(e.contains("names two providers"), "{e}");
}

#[test]
fn every_shipped_config_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") && !path.ends_with("phones.example.toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = Config::from_toml(&path, &text) {
                panic!("shipped config {} does not load: {e}", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen >= 1, "no config found in {}", dir.display());
}

/// The commented `[[provider]]` examples of the shipped config work
/// once uncommented.
#[test]
fn shipped_provider_examples_parse() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/smsotp.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut blocks: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line == "# [[provider]]" {
            current = Some(String::from("[[provider]]\n"));
        } else if let (Some(b), Some(rest)) = (current.as_mut(), line.strip_prefix("# ")) {
            b.push_str(rest);
            b.push('\n');
        } else if let Some(b) = current.take() {
            blocks.push(b);
        }
    }
    assert!(blocks.len() >= 8, "{blocks:?}");
    for b in &blocks {
        let c = parse(b).unwrap_or_else(|e| panic!("{e}\n{b}"));
        assert_eq!(c.providers.len(), 1);
    }
}
