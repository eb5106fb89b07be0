//! CI's replay: every file of `corpus/<target>/` through the target's
//! function, without libFuzzer. A target without a corpus (directory
//! missing or empty) fails: a target nobody seeded is not being tested.

use std::path::Path;

#[test]
fn every_corpus_file_replays_without_a_finding() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut problems = Vec::new();
    for (name, run) in smsotp_fuzz::TARGETS {
        let dir = root.join(name);
        let files: Vec<_> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).collect(),
            Err(e) => {
                problems.push(format!("{}: {e}; seed it (docs/fuzzing.md)", dir.display()));
                continue;
            }
        };
        if files.is_empty() {
            problems.push(format!(
                "{} is empty; seed it (docs/fuzzing.md)",
                dir.display()
            ));
        }
        for f in files {
            let data = std::fs::read(&f).unwrap();
            // A finding panics here and names the file to reproduce it with.
            eprintln!("replaying {}", f.display());
            run(&data);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_target_has_a_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, _) in smsotp_fuzz::TARGETS {
        let bin = root.join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&bin).unwrap();
        assert!(
            text.contains(&format!("smsotp_fuzz::{name}(")),
            "{}",
            bin.display()
        );
    }
}

#[test]
fn fuzz_sh_knows_every_target() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fuzz.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("targets=("))
        .expect("a targets=( line in scripts/fuzz.sh");
    let listed: Vec<&str> = line
        .trim_start_matches("targets=(")
        .trim_end_matches(')')
        .split_whitespace()
        .collect();
    let known: Vec<&str> = smsotp_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        listed, known,
        "scripts/fuzz.sh and fuzz/src/lib.rs TARGETS differ"
    );
}
