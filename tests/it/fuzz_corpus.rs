//! The fuzz targets' seed corpus (`tests/fuzz/corpus/<target>/`), replayed on the stable
//! toolchain through the same functions the cargo-fuzz targets call
//! (`redis_autoscaler::fuzzing`), so an input that once made a parser panic stays fixed without
//! nightly. Fuzzing itself: `tests/fuzz/run.sh`.

use std::path::Path;

use redis_autoscaler::fuzzing;

/// Every target: the name of its fuzz target, corpus directory and `fuzzing` function.
const TARGETS: &[&str] = &[
    "slash_command",
    "interaction",
    "eventbridge",
    "sns",
    "signature",
    "config",
];

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{target}: only {} seed files",
        files.len()
    );
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        // The panic's own message is printed above this one.
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            panic!("tests/fuzz/corpus/{target}/{name} makes fuzzing::{target} panic");
        }
    }
}

#[test]
fn every_fuzz_target_has_a_corpus_and_a_cargo_fuzz_binary() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
    for target in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "tests/fuzz/Cargo.toml has no [[bin]] {target}"
        );
        let source = std::fs::read_to_string(fuzz.join(format!("fuzz_targets/{target}.rs")))
            .unwrap_or_else(|e| panic!("fuzz_targets/{target}.rs: {e}"));
        assert!(
            source.contains(&format!("redis_autoscaler::fuzzing::{target}(")),
            "fuzz_targets/{target}.rs does not call fuzzing::{target}"
        );
    }
    let bins = manifest.matches("[[bin]]").count();
    assert_eq!(
        bins,
        TARGETS.len(),
        "a fuzz target this test does not replay"
    );
}

#[test]
fn the_slash_command_corpus_does_not_panic() {
    replay("slash_command", fuzzing::slash_command);
}

#[test]
fn the_interaction_corpus_does_not_panic() {
    replay("interaction", fuzzing::interaction);
}

#[test]
fn the_eventbridge_corpus_does_not_panic() {
    replay("eventbridge", fuzzing::eventbridge);
}

#[test]
fn the_sns_corpus_does_not_panic() {
    replay("sns", fuzzing::sns);
}

#[test]
fn the_signature_corpus_does_not_panic() {
    replay("signature", fuzzing::signature);
}

#[test]
fn the_config_corpus_does_not_panic() {
    replay("config", fuzzing::config);
}
