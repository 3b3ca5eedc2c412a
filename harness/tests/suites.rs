//! `e4race suite`: the shipped suites, shards over the CLI, bad suites, and (with guests) the
//! quick suite and parallel guests.
//!
//! Invariant for the VM tests (holds across seeds): smoke and one round of each race on
//! stock 6.1 pass (the migrate return-value bug is a built-in known issue), and a smoke
//! run's verdict does not depend on whether another guest runs beside it.

mod common;
use common::*;
use std::collections::BTreeSet;

fn suites() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../suites")
}

fn list(args: &[&str]) -> BTreeSet<String> {
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(args, runs.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect()
}

#[test]
fn shards_of_the_full_suite_are_disjoint_and_complete() {
    let full = suites().join("full.toml");
    let f = full.to_str().unwrap();
    let all = list(&["suite", f, "--list"]);
    assert_eq!(all.len(), 30);
    let a = list(&["suite", f, "--list", "--shard", "1/2"]);
    let b = list(&["suite", f, "--list", "--shard", "2/2"]);
    assert!(!a.is_empty() && !b.is_empty());
    assert!(a.is_disjoint(&b));
    assert_eq!(a.union(&b).cloned().collect::<BTreeSet<_>>(), all);
    assert_eq!(
        list(&[
            "suite",
            suites().join("quick.toml").to_str().unwrap(),
            "--list"
        ])
        .len(),
        3
    );
}

#[test]
fn bad_suites_are_usage_errors_before_any_guest() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[entry]]\nscenario = \"migrate-mmap\"\nargs = [\"--rounds\", \"0\"]\n",
    )
    .unwrap();
    let o = e4race(
        &[
            "suite",
            bad.to_str().unwrap(),
            "--out",
            dir.path().join("o").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--rounds"),
        "{}",
        text(&o)
    );
    assert!(!dir.path().join("o").exists(), "nothing ran");
    let o = e4race(&["suite", "/no/such/suite.toml"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = e4race(
        &["suite", bad.to_str().unwrap(), "--shard", "3/2"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn vm_quick_suite_passes() {
    let _l = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("quick");
    let o = e4race(
        &[
            "suite",
            suites().join("quick.toml").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = suite::SuiteResult::read(&out.join("suite.json")).unwrap();
    assert_eq!(r.jobs.len(), 3);
    assert!(r.jobs.iter().all(|j| j.ok), "{r:?}");
    let xml = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(
        xml.contains("tests=\"3\"") && xml.contains("failures=\"0\""),
        "{xml}"
    );
    for j in &r.jobs {
        assert!(out.join(&j.run_dir).join("report.json").is_file(), "{j:?}");
    }
}

#[test]
fn vm_parallel_guests_give_the_verdicts_of_serial_ones() {
    let _l = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("two.toml");
    std::fs::write(
        &file,
        "[[entry]]\nscenario = \"smoke\"\nargs = [\"--cpus\", \"1\"]\n\
         [[entry]]\nscenario = \"smoke\"\nargs = [\"--cpus\", \"1\", \"--blocks\", \"64\"]\n",
    )
    .unwrap();
    let verdicts = |jobs: &str| {
        let out = dir.path().join(format!("out{jobs}"));
        let o = e4race(
            &[
                "suite",
                file.to_str().unwrap(),
                "--jobs",
                jobs,
                "--out",
                out.to_str().unwrap(),
            ],
            dir.path(),
        );
        let r = suite::SuiteResult::read(&out.join("suite.json")).unwrap();
        // Two guests started in the same millisecond must still get their own run directory.
        let dirs: std::collections::BTreeSet<_> = r.jobs.iter().map(|j| &j.run_dir).collect();
        assert_eq!(
            dirs.len(),
            r.jobs.len(),
            "shared run directory: {:?}",
            r.jobs
        );
        (
            o.status.code(),
            r.jobs
                .iter()
                .map(|j| (j.key.clone(), j.verdict))
                .collect::<Vec<_>>(),
        )
    };
    let parallel = verdicts("2");
    let serial = verdicts("1");
    assert_eq!(parallel, serial);
    assert_eq!(parallel.0, Some(0), "{parallel:?}");
}
