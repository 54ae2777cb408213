//! ClassBench 1K and 10K sets: every trace line must get its expected first match.
//!
//! The sets are not in the repository: they are read from `$FLOWGATE_CLASSBENCH`, by default
//! `../shared/classbench` beside the workspace root. The test skips (with a note) when absent.

use std::path::PathBuf;

use flowgate_dataplane::classify::classbench::run_classbench;

fn dir() -> PathBuf {
    match std::env::var_os("FLOWGATE_CLASSBENCH") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/classbench"),
    }
}

fn run(set: &str) {
    let d = dir();
    let rules = d.join(format!("{set}.rules"));
    let trace = d.join(format!("{set}.trace"));
    if !rules.exists() || !trace.exists() {
        eprintln!(
            "note: ClassBench set {set} not found in {}; skipped",
            d.display()
        );
        return;
    }
    match run_classbench(&rules, &trace, 1) {
        Ok(r) => eprintln!("{set}: ok\n{r}"),
        Err(e) => panic!("{set}: {e}"),
    }
}

#[test]
fn acl1_1k() {
    run("acl1_1K");
}
#[test]
fn fw1_1k() {
    run("fw1_1K");
}
#[test]
fn ipc1_1k() {
    run("ipc1_1K");
}
#[test]
fn acl1_10k() {
    run("acl1_10K");
}
#[test]
fn fw1_10k() {
    run("fw1_10K");
}
#[test]
fn ipc1_10k() {
    run("ipc1_10K");
}
