//! The CI gate on a real guest: the migrate return-value bug is a known issue by default,
//! so stock migrate-mmap passes with it listed; `--strict` makes it BUG-FOUND; `--bisect`
//! maps the verdicts to `git bisect run` codes (the skips are in bad_input.rs).
//!
//! Invariant (holds across seeds): on stock 6.1 every migration of a file whose holes are
//! being filled backs off, and 6.1 then returns 0 with the inode still indirect (the
//! `migrate-success-sets-extents-flag` postcondition, measured 12 of 12 and 4 of 4 per run);
//! a single round's 4 migrations therefore give at least one finding, all of them known.

mod common;
use common::*;
use e4race_report::Verdict;

#[test]
fn vm_known_issue_passes_strict_fails_and_bisect_maps_verdicts() {
    let _l = vm_lock();
    let race = [
        "run",
        "migrate-mmap",
        "--kernel",
        "6.1",
        "--rounds",
        "1",
        "--seed",
        "5",
    ];

    let runs = tempfile::tempdir().unwrap();
    let o = e4race(&race, runs.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = report(&run_dir(runs.path()));
    assert_eq!(r.verdict, Verdict::Pass);
    assert!(
        !r.findings.is_empty(),
        "the known issue did not show: {r:?}"
    );
    assert_eq!(r.known_issues.len(), 1, "{r:?}");
    assert_eq!(r.known_issues[0].id, "migrate-returns-0-after-backoff");
    assert_eq!(r.known_issues[0].findings, r.findings.len());
    assert_eq!(r.new_findings().count(), 0);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with("PASS (1 known issue): migrate-mmap"),
        "{out}"
    );
    let flag = r
        .findings
        .iter()
        .filter(|f| f.signature.ends_with("/migrate-success-sets-extents-flag"))
        .count();
    assert!(flag > 0, "{r:?}");
    assert!(
        out.contains(&format!("{flag} × migrate-success-sets-extents-flag")),
        "{out}"
    );

    let runs = tempfile::tempdir().unwrap();
    let strict: Vec<&str> = race
        .iter()
        .copied()
        .chain(["--strict", "--bisect"])
        .collect();
    let o = e4race(&strict, runs.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = report(&run_dir(runs.path()));
    assert_eq!(r.verdict, Verdict::BugFound);
    assert!(r.strict && r.known_issues.len() == 1, "{r:?}");

    let runs = tempfile::tempdir().unwrap();
    let o = e4race(&["run", "smoke", "--bisect"], runs.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
