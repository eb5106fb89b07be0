use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::*;
use crate::config::MessageSettings;

fn shipped_flat(lang: &str, text: &str) -> BTreeMap<String, String> {
    let mut problems = Vec::new();
    let flat = flatten(text, Path::new(lang), &mut problems).unwrap();
    assert!(problems.is_empty(), "{lang}: {problems:?}");
    flat
}

/// Every shipped catalogue has exactly the keys of [`KEYS`] (a missing or
/// an extra key fails), each text passes the override check, and it uses
/// the placeholders English uses (only the optional ones may be left
/// out).
#[test]
fn every_shipped_catalogue_has_exactly_the_english_keys_and_placeholders() {
    let keys: BTreeSet<&str> = KEYS.iter().map(|(k, _)| *k).collect();
    let en = shipped_flat("en", SHIPPED[0].1);
    for (lang, text) in SHIPPED {
        let flat = shipped_flat(lang, text);
        let have: BTreeSet<&str> = flat.keys().map(String::as_str).collect();
        let missing: Vec<_> = keys.difference(&have).collect();
        let extra: Vec<_> = have.difference(&keys).collect();
        assert!(missing.is_empty(), "{lang}.toml lacks {missing:?}");
        assert!(extra.is_empty(), "{lang}.toml has unknown keys {extra:?}");
        for (key, t) in &flat {
            check_text(key, t).unwrap_or_else(|e| panic!("{lang}.toml {key}: {e}"));
            let mine = placeholders(t).unwrap();
            let english = placeholders(&en[key]).unwrap();
            let required: BTreeSet<String> = english
                .iter()
                .filter(|p| !OPTIONAL_PLACEHOLDERS.contains(&p.as_str()))
                .cloned()
                .collect();
            assert!(
                mine.is_subset(&english) && required.is_subset(&mine),
                "{lang}.toml {key}: placeholders {mine:?}, English has {english:?}"
            );
            assert_eq!(t.trim_end(), t.trim_end_matches(' '), "{lang} {key}");
            assert!(!t.contains("  "), "{lang}.toml {key}: a run of spaces");
        }
        // A prompt ends in its one space, like the English.
        for key in ["prompt.code", "prompt.backup", "prompt.enroll"] {
            assert!(flat[key].ends_with(": "), "{lang}.toml {key}");
        }
    }
}

/// The SMS of each shipped language stays in the GSM-7 alphabet (one
/// character outside it would make every SMS UCS-2, with 70 characters
/// a segment instead of 160), and fits one segment for a 10-character
/// code, a 20-character host and the longest {ttl}.
#[test]
fn shipped_sms_texts_are_gsm7_and_short() {
    for (lang, _) in SHIPPED {
        let c = Catalogue::shipped(lang).unwrap();
        let text = c.sms().render_in(
            &crate::config::MessageValues {
                code: "ABCDEFGHJK",
                host: "host-with-20-chars.x",
                ttl: Duration::from_secs(599),
                user: "u",
                service: "sshd",
            },
            c,
        );
        assert!(crate::sms::gsm::is_gsm7(&text), "{lang}: {}", &*text);
        assert!(text.chars().count() <= 160, "{lang}: {}", &*text);
    }
}

#[test]
fn plurals_durations_and_placeholders_fill_in() {
    let de = Catalogue::shipped("de").unwrap();
    assert_eq!(de.plural("tries_left", 1, &[]), "Noch 1 Versuch.");
    assert_eq!(de.plural("tries_left", 3, &[]), "Noch 3 Versuche.");
    assert_eq!(de.duration(Duration::from_secs(300)), "5 Minuten");
    assert_eq!(de.duration(Duration::from_secs(60)), "1 Minute");
    assert_eq!(de.duration(Duration::from_secs(90)), "90 Sekunden");
    assert_eq!(de.about(Duration::from_secs(3 * 3600)), "3 Stunden");
    assert_eq!(
        de.text("intro.code_sent", &[("phone", "******0123")]),
        "Code an ******0123 gesendet."
    );
    let fr = Catalogue::shipped("fr").unwrap();
    assert_eq!(fr.plural("tries_left", 0, &[]), "Il reste 0 essai.");
    assert_eq!(fr.duration(Duration::from_millis(30_500)), "31 secondes");
    let en = Catalogue::english();
    assert_eq!(en.duration(Duration::from_secs(7200)), "2 hours");
    assert_eq!(fill("a {x} {y} {", &[("x", "1")]), "a 1 {y} {");
}

#[test]
fn language_tags_and_countries() {
    assert_eq!(normalize_tag("de_DE.UTF-8").as_deref(), Some("de"));
    assert_eq!(normalize_tag("pt-BR").as_deref(), Some("pt"));
    assert_eq!(normalize_tag("C"), None);
    assert_eq!(normalize_tag("POSIX"), None);
    assert_eq!(normalize_tag("C.UTF-8"), None);
    assert_eq!(language_of_region("CH"), Some("de"));
    assert_eq!(language_of_region("BE"), Some("nl"));
    assert_eq!(language_of_region("BR"), Some("pt"));
    assert_eq!(language_of_region("MX"), Some("es"));
    assert_eq!(language_of_region("LU"), Some("fr"));
    assert_eq!(language_of_region("SM"), Some("it"));
    assert_eq!(language_of_region("SR"), Some("nl"));
    assert_eq!(language_of_region("JP"), None);
}

fn dir_with(files: &[(&str, &str)]) -> (tempfile::TempDir, MessageSettings) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let s = MessageSettings {
        dir: dir.path().to_owned(),
        ..MessageSettings::default()
    };
    (dir, s)
}

#[test]
fn an_override_of_one_key_takes_effect_and_the_rest_stays() {
    let (_d, s) = dir_with(&[(
        "de.toml",
        "prompt.code = \"Einmalcode: \"\n[reject]\nexpired = \"Abgelaufen.\"\n",
    )]);
    let m = Messages::load(&s, None);
    assert!(m.problems().is_empty(), "{:?}", m.problems());
    let de = m.get("de").unwrap();
    assert_eq!(de.raw("prompt.code"), "Einmalcode: ");
    assert_eq!(de.raw("reject.expired"), "Abgelaufen.");
    assert_eq!(de.raw("prompt.backup"), "Backup-Code: ");
    assert_eq!(m.get("fr").unwrap().raw("prompt.code"), "Code SMS : ");
}

#[test]
fn a_bad_override_falls_back_and_names_file_key_and_fix() {
    let (_d, s) = dir_with(&[(
        "fr.toml",
        "prompt.code = \"Code {phone}: \"\nprompt.nope = \"x\"\nsms = \"Votre code\"\n\
         reject.expired = \"Expiré.\"\n",
    )]);
    let m = Messages::load(&s, None);
    let fr = m.get("fr").unwrap();
    // The good key applies, the bad ones keep the shipped text.
    assert_eq!(fr.raw("reject.expired"), "Expiré.");
    assert_eq!(fr.raw("prompt.code"), "Code SMS : ");
    assert_eq!(fr.sms(), Catalogue::shipped("fr").unwrap().sms());
    let all: Vec<String> = m.problems().iter().map(ToString::to_string).collect();
    assert_eq!(all.len(), 3, "{all:?}");
    let one = |key: &str| {
        all.iter()
            .find(|p| p.contains(&format!("fr.toml: {key}:")))
            .unwrap_or_else(|| panic!("no problem for {key}: {all:?}"))
            .clone()
    };
    assert!(one("prompt.code").contains("takes no placeholders; remove it"));
    assert!(one("prompt.nope").contains("not a message key"));
    assert!(one("prompt.nope").contains("prompt.code"));
    assert!(one("sms").contains("must contain {code}"));
}

#[test]
fn a_new_language_lacking_keys_is_reported_and_english_fills_in() {
    let (_d, s) = dir_with(&[
        ("sv.toml", "prompt.code = \"SMS-kod: \"\n"),
        ("not a tag.toml", "x = \"y\"\n"),
        ("xx.toml", "= nope\n"),
    ]);
    let m = Messages::load(&s, None);
    let sv = m.get("sv").unwrap();
    assert_eq!(sv.raw("prompt.code"), "SMS-kod: ");
    assert_eq!(sv.raw("prompt.backup"), "Backup code: ");
    let all: Vec<String> = m.problems().iter().map(ToString::to_string).collect();
    assert!(
        all.iter()
            .any(|p| p.contains("sv.toml") && p.contains("lacks sms,") && p.contains("en.toml")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|p| p.contains("not a tag.toml") && p.contains("<lang>.toml")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|p| p.contains("xx.toml") && p.contains("not valid TOML")),
        "{all:?}"
    );
    assert!(m.languages().any(|l| l == "sv"));
}

#[test]
fn sms_order_is_override_then_otp_message_then_shipped() {
    let admin = MessageTemplate::parse("Code {code}").unwrap();
    let (_d, s) = dir_with(&[("it.toml", "sms = \"Codice {code}\"\n")]);
    let m = Messages::load(&s, Some(&admin));
    assert_eq!(m.get("it").unwrap().sms().as_str(), "Codice {code}");
    assert_eq!(m.get("de").unwrap().sms().as_str(), "Code {code}");
    let m = Messages::load(&s, None);
    assert_eq!(
        m.get("de").unwrap().sms(),
        Catalogue::shipped("de").unwrap().sms()
    );
    let templates = m.sms_templates();
    assert_eq!(templates.len(), 7);
    assert!(templates
        .iter()
        .any(|(l, t)| *l == "it" && t.as_str() == "Codice {code}"));
}

#[test]
fn a_default_language_without_a_catalogue_is_reported_and_english_used() {
    let s = MessageSettings {
        dir: "/nonexistent/smsotp-messages".into(),
        default_language: "sv".into(),
        ..MessageSettings::default()
    };
    let m = Messages::load(&s, None);
    assert_eq!(m.default_catalogue().lang(), "en");
    assert!(
        m.problems()[0].to_string().contains("\"sv\""),
        "{:?}",
        m.problems()
    );
    assert_eq!(m.pick(["de_AT.UTF-8"]).lang(), "de");
    assert_eq!(m.pick(["ja", "C"]).lang(), "en");
}

#[test]
fn a_group_writable_override_is_not_used() {
    let (d, s) = dir_with(&[("nl.toml", "prompt.code = \"Code: \"\n")]);
    std::fs::set_permissions(
        d.path().join("nl.toml"),
        std::fs::Permissions::from_mode(0o664),
    )
    .unwrap();
    let m = Messages::load(&s, None);
    assert_eq!(m.get("nl").unwrap().raw("prompt.code"), "Sms-code: ");
    assert_eq!(m.problems().len(), 1, "{:?}", m.problems());
}
