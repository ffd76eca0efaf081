//! `sluice tune` on the machine running the tests: every check must come out as a finding
//! (ok, advice or unsupported), never an error, and never change anything.

use sluice_tuning::{Options, Status, run};

fn options(data_dir: &std::path::Path, json: bool) -> Options {
    Options {
        root: "/".into(),
        data_dir: data_dir.to_path_buf(),
        shards: None,
        apply: false,
        json,
        only: Vec::new(),
    }
}

#[test]
fn every_check_runs_without_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut out = Vec::new();
    let outcome = run(&options(dir.path(), false), &mut out).expect("run");
    let table = String::from_utf8(out).expect("utf-8");
    println!("{table}");
    assert!(table.starts_with("TUNER"), "{table}");
    assert_eq!(table.lines().count(), outcome.findings.len() + 1);
    for finding in &outcome.findings {
        assert_ne!(finding.status, Status::Error, "{finding:?}");
    }
    assert!(outcome.applied.is_empty());
    // The O_DIRECT probe cleans up after itself.
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
}

#[test]
fn json_lists_every_tuner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut out = Vec::new();
    let outcome = run(&options(&dir.path().join("not-yet"), true), &mut out).expect("run");
    let report: serde_json::Value = serde_json::from_slice(&out).expect("json");
    let findings = report["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), outcome.findings.len());
    assert!(findings.iter().any(|f| f["tuner"] == "io_uring"));
    assert!(
        !dir.path().join("not-yet").exists(),
        "tune must not create the data dir"
    );
}
