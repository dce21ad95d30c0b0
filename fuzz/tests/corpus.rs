//! Replays every committed corpus input through its target (`fuzz/corpus/<target>/`): the seeds, what
//! fuzzing added and every finding's regression input. A target that panics on one fails here, on
//! stable, without the fuzzer.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in &entries {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target} panicked on {}", path.display());
    }
    entries.len()
}

#[test]
fn every_corpus_replays_without_a_panic() {
    for (target, run) in tether_fuzz::TARGETS {
        let n = replay(target, *run);
        // The seeds alone are about ten per target: an empty directory means a lost corpus.
        assert!(n >= 8, "{target}: only {n} corpus inputs");
        println!("{target}: {n} inputs replayed");
    }
}
