//! Tests of the sources, the ordered lookup and the check of every number.

use super::file::LineIndex;
use super::*;
use crate::config::PhoneSettings;
use crate::phone::NoCache;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// Accounts from a table: user -> (gecos, groups).
#[derive(Default)]
pub(crate) struct FakeAccounts(pub HashMap<String, (String, Vec<String>)>);

impl Accounts for FakeAccounts {
    fn gecos(&self, user: &str) -> Result<Option<String>, AccountsError> {
        Ok(self.0.get(user).map(|(g, _)| g.clone()))
    }
    fn groups(&self, user: &str) -> Result<Vec<String>, AccountsError> {
        Ok(self.0.get(user).map(|(_, g)| g.clone()).unwrap_or_default())
    }
}

fn phones_file(dir: &std::path::Path, text: &str, mode: u32) -> PathBuf {
    let p = dir.join("phones.toml");
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn find(dirs: &[Box<dyn Directory>], user: &str) -> Result<Option<Found>, DirectoryError> {
    lookup(dirs, user, Some(phonenumber::country::Id::DE), &NoCache)
}

fn file(path: PathBuf) -> Vec<Box<dyn Directory>> {
    vec![Box::new(FileDirectory::new(path))]
}

#[test]
fn line_index_gives_line_and_column_in_characters() {
    let text = "a = 1\n\nnäme = \"x\"\nlast";
    let lines = LineIndex::new(text);
    let at = |offset| {
        let l = lines.location(text, offset);
        (l.line, l.column)
    };
    assert_eq!(at(0), (1, 1));
    assert_eq!(at(5), (1, 6), "the newline itself ends line 1");
    assert_eq!(at(6), (2, 1), "an empty line");
    assert_eq!(at(7), (3, 1));
    // "näme = " is 8 bytes but 7 characters.
    assert_eq!(at(7 + 8), (3, 8));
    assert_eq!(at(text.len()), (4, 5));
    assert_eq!(at(text.len() + 10), (4, 5), "past the end clamps");
}

#[test]
fn a_long_phone_list_names_the_right_line() {
    // Each entry's line comes from the line index (a scan from the top
    // for each entry made a list of n users cost n², seconds at 10,000).
    let d = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..5_000 {
        text.push_str(&format!("user{i:05} = \"+49 30 1234{i:05}\"\n"));
    }
    let dirs = file(phones_file(d.path(), &text, 0o600));
    let found = find(&dirs, "user04999").unwrap().unwrap();
    assert_eq!(found.phone.e164(), "+4930123404999");
    let e = dirs[0].lookup("user04999").unwrap().unwrap();
    assert!(e.location.ends_with(":5000:13"), "{}", e.location);
}

fn settings(
    default_region: Option<phonenumber::country::Id>,
    allowed: &[phonenumber::country::Id],
) -> PhoneSettings {
    PhoneSettings {
        default_region,
        allowed_countries: allowed.to_vec(),
    }
}

#[test]
fn check_numbers_validates_every_entry_and_names_the_bad_ones() {
    let d = tempfile::tempdir().unwrap();
    let path = phones_file(
        d.path(),
        "alice = \"+12025550143\"\nbob = \"12\"\ncarol = \"030 1234567\"\n",
        0o600,
    );
    let dirs = file(path.clone());
    let cache = crate::phone::tests::MemoryCache::default();
    let mut pauses = 0;
    let checked = check_numbers(
        dirs.iter().map(|d| &**d),
        &settings(Some(phonenumber::country::Id::DE), &[]),
        &cache,
        || pauses += 1,
    );
    assert_eq!(checked.valid, 2);
    assert_eq!(pauses, 3);
    assert_eq!(checked.bad.len(), 1);
    let bad = &checked.bad[0];
    assert_eq!(bad.user.as_deref(), Some("bob"));
    assert_eq!(bad.line, Some(2));
    assert_eq!(bad.path.as_deref(), Some(path.as_path()));
    assert!(bad.location.ends_with("phones.toml:2:7"), "{bad:?}");
    let e = bad.to_string();
    assert!(e.contains("bob") && e.contains("phones.toml:2:"), "{e}");
    // Both good numbers are cached for logins.
    let cached: Vec<String> = cache.0.borrow().values().map(|(n, _)| n.clone()).collect();
    assert!(cached.contains(&"+12025550143".to_string()), "{cached:?}");
    assert!(cached.contains(&"+49301234567".to_string()), "{cached:?}");
    // Sources that cannot list add nothing; a missing file is no error.
    let none = check_numbers(
        file(d.path().join("absent.toml")).iter().map(|d| &**d),
        &settings(None, &[]),
        &cache,
        || {},
    );
    assert_eq!((none.valid, none.bad.len()), (0, 0));
}

#[test]
fn a_national_number_without_default_region_is_reported_with_the_fix() {
    use phonenumber::country::Id;
    let d = tempfile::tempdir().unwrap();
    let path = phones_file(
        d.path(),
        "# staff\nbob = \"+12025550143\"\nalice = \"0171 1234567\"\n",
        0o644,
    );
    let checked = check_numbers(
        file(path.clone()).iter().map(|d| &**d),
        &settings(None, &[]),
        &NoCache,
        || {},
    );
    assert_eq!(checked.valid, 1);
    let [bad] = &checked.bad[..] else {
        panic!("{checked:?}")
    };
    assert_eq!(bad.user.as_deref(), Some("alice"));
    assert_eq!(bad.line, Some(3));
    assert!(bad.problem.contains("no country code"), "{bad:?}");
    assert!(
        bad.fix.contains("+49 171 1234567") && bad.fix.contains("phone.default_region"),
        "{bad:?}"
    );
    assert!(
        !bad.to_string().contains("1234567\" has"),
        "unmasked: {bad}"
    );
    // With the region set, the same list is clean.
    let checked = check_numbers(
        file(path).iter().map(|d| &**d),
        &settings(Some(Id::DE), &[]),
        &NoCache,
        || {},
    );
    assert_eq!((checked.valid, checked.bad.len()), (2, 0));
}

#[test]
fn a_number_outside_the_allowed_countries_is_reported() {
    use phonenumber::country::Id;
    let d = tempfile::tempdir().unwrap();
    let path = phones_file(
        d.path(),
        "alice = \"+12025550143\"\ncarol = \"+49 30 1234567\"\n",
        0o644,
    );
    let checked = check_numbers(
        file(path).iter().map(|d| &**d),
        &settings(None, &[Id::US, Id::CA]),
        &NoCache,
        || {},
    );
    assert_eq!(checked.valid, 1);
    let [bad] = &checked.bad[..] else {
        panic!("{checked:?}")
    };
    assert_eq!((bad.user.as_deref(), bad.line), (Some("carol"), Some(2)));
    assert!(
        bad.problem.contains("in DE") && bad.problem.contains("US, CA"),
        "{bad:?}"
    );
    assert!(
        bad.fix.contains("add \"DE\" to phone.allowed_countries"),
        "{bad:?}"
    );
    assert!(!bad.to_string().contains("301234567"), "unmasked: {bad}");
}

#[test]
fn a_list_that_cannot_be_used_is_one_bad_entry() {
    let d = tempfile::tempdir().unwrap();
    let path = phones_file(d.path(), "alice = \"+12025550143\"\nbob = +1202\n", 0o644);
    let checked = check_numbers(
        file(path.clone()).iter().map(|d| &**d),
        &settings(None, &[]),
        &NoCache,
        || {},
    );
    let [bad] = &checked.bad[..] else {
        panic!("{checked:?}")
    };
    assert_eq!((bad.user.as_deref(), bad.line), (None, Some(2)), "{bad:?}");
    assert!(bad.location.contains("phones.toml:2:"), "{bad:?}");

    phones_file(d.path(), "alice = \"+12025550143\"\n", 0o666);
    let checked = check_numbers(
        file(path).iter().map(|d| &**d),
        &settings(None, &[]),
        &NoCache,
        || {},
    );
    let [bad] = &checked.bad[..] else {
        panic!("{checked:?}")
    };
    assert!(
        bad.problem.contains("writable by group or others"),
        "{bad:?}"
    );
    assert!(bad.fix.contains("chmod 644"), "{bad:?}");
}

#[test]
fn file_directory_finds_and_normalises() {
    let d = tempfile::tempdir().unwrap();
    let text = "alice = \"+1 202 555 0143\"\nbob = \"030 1234567\"\n";
    let dirs = file(phones_file(d.path(), text, 0o644));
    assert_eq!(
        find(&dirs, "alice").unwrap().unwrap().phone.e164(),
        "+12025550143"
    );
    assert_eq!(
        find(&dirs, "bob").unwrap().unwrap().phone.e164(),
        "+49301234567"
    );
    assert!(find(&dirs, "carol").unwrap().is_none());
}

#[test]
fn file_directory_errors_name_line_and_fix() {
    let d = tempfile::tempdir().unwrap();
    let text = "alice = \"+1 202 555 0143\"\nbob = \"not a number\"\n";
    let dirs = file(phones_file(d.path(), text, 0o644));
    let e = find(&dirs, "bob").unwrap_err().to_string();
    assert!(e.contains("phones.toml:2:7"), "{e}");
    assert!(e.contains("international form"), "{e}");
    // A bad entry for bob does not lock alice out.
    assert!(find(&dirs, "alice").unwrap().is_some());

    let dirs = file(phones_file(d.path(), "alice = +1202\n", 0o644));
    let e = find(&dirs, "alice").unwrap_err().to_string();
    assert!(e.contains("phones.toml:1:"), "{e}");

    let dirs = file(phones_file(d.path(), "alice = \"+12025550143\"\n", 0o666));
    let e = find(&dirs, "alice").unwrap_err().to_string();
    assert!(e.contains("writable by group or others"), "{e}");
}

#[test]
fn edits_are_seen_despite_the_cache() {
    let d = tempfile::tempdir().unwrap();
    let path = phones_file(d.path(), "alice = \"+12025550143\"\n", 0o644);
    let dirs = file(path.clone());
    assert_eq!(
        find(&dirs, "alice").unwrap().unwrap().phone.e164(),
        "+12025550143"
    );
    assert!(find(&dirs, "bob").unwrap().is_none());
    phones_file(
        d.path(),
        "alice = \"+12025550199\"\nbob = \"+12025550100\"\n",
        0o644,
    );
    assert_eq!(
        find(&dirs, "alice").unwrap().unwrap().phone.e164(),
        "+12025550199"
    );
    assert!(find(&dirs, "bob").unwrap().is_some());
    // A mode change is caught even when the contents are unchanged.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert!(find(&dirs, "alice").is_err());
    std::fs::remove_file(&path).unwrap();
    assert!(find(&dirs, "alice").unwrap().is_none());
}

#[test]
fn a_server_sees_edits_once_its_recheck_time_is_up() {
    let d = tempfile::tempdir().unwrap();
    let path = phones_file(d.path(), "alice = \"+12025550143\"\n", 0o644);
    let recheck = std::time::Duration::from_millis(500);
    let dirs: Vec<Box<dyn Directory>> = vec![Box::new(FileDirectory::rechecked_every(
        path.clone(),
        recheck,
    ))];
    let alice = |dirs: &[Box<dyn Directory>]| {
        find(dirs, "alice")
            .unwrap()
            .unwrap()
            .phone
            .e164()
            .to_string()
    };
    // The number parser builds its tables on first use (slow in a
    // debug build): before the timed part.
    assert_eq!(alice(&dirs), "+12025550143");
    let dirs: Vec<Box<dyn Directory>> = vec![Box::new(FileDirectory::rechecked_every(
        path.clone(),
        recheck,
    ))];
    // The file is looked at during the first lookup, after `before`.
    let before = std::time::Instant::now();
    assert_eq!(alice(&dirs), "+12025550143");
    phones_file(d.path(), "alice = \"+12025550199\"\n", 0o644);
    let seen = alice(&dirs);
    if before.elapsed() < recheck {
        assert_eq!(seen, "+12025550143", "looked at the file before its time");
    }
    std::thread::sleep(recheck);
    assert_eq!(alice(&dirs), "+12025550199");
    // A mode change is caught too, on the next look.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::thread::sleep(recheck);
    assert!(find(&dirs, "alice").is_err());
}

#[test]
fn missing_file_means_no_number() {
    assert!(find(&file("/nonexistent/phones.toml".into()), "alice")
        .unwrap()
        .is_none());
}

#[test]
fn gecos_field_and_order() {
    let mut accounts = FakeAccounts::default();
    accounts
        .0
        .insert("alice".into(), ("Alice A,,,,+12025550143".into(), vec![]));
    accounts.0.insert("bob".into(), ("Bob,,,".into(), vec![]));
    let gecos: Vec<Box<dyn Directory>> = vec![Box::new(GecosDirectory { field: 4, accounts })];
    assert_eq!(
        find(&gecos, "alice").unwrap().unwrap().phone.e164(),
        "+12025550143"
    );
    assert!(find(&gecos, "bob").unwrap().is_none());
    assert!(find(&gecos, "nobody").unwrap().is_none());

    let d = tempfile::tempdir().unwrap();
    let mut dirs = file(phones_file(d.path(), "alice = \"+12025550199\"\n", 0o644));
    dirs.extend(gecos);
    let found = find(&dirs, "alice").unwrap().unwrap();
    assert_eq!(found.phone.e164(), "+12025550199");
    assert!(found.source.starts_with("file "));
}
