//! Applying known issues to a report: matching findings become known, a run with nothing
//! new passes (unless strict), an entry in scope that did not show up is "not reproduced",
//! and kernels outside an entry's range are untouched.

use e4race_report::{Finding, Report, Verdict};
use known_issues::KnownIssues;
use oracles::{Found, LostBlock};

const LIST: &str = r#"
[[issue]]
id = "migrate-returns-0"
title = "EXT4_IOC_MIGRATE returns 0 after backing off"
signatures = ["migrate-mmap/api-postcondition/migrate-success-sets-extents-flag"]
min_release = "5.5"
max_release = "7.4"
status = "unfixed"
fix = "vm-images/fixes/migrate-keep-swap-error"
cause = "retval overwritten"
"#;

fn post(path: &str) -> Finding {
    Finding::new(oracles::Finding::ApiPostcondition {
        path: path.into(),
        round: 0,
        check: "migrate-success-sets-extents-flag".into(),
        detail: "still indirect".into(),
    })
}

fn lost() -> Finding {
    Finding::new(oracles::Finding::DataLoss(LostBlock {
        path: "r0/f1".into(),
        ino: 12,
        file_id: 1,
        round: 0,
        lblk: 3,
        expected_generation: 0,
        found: Found::Hole,
        pblk: None,
    }))
}

fn run(scenario: &str, release: &str, findings: Vec<Finding>, strict: bool) -> Report {
    let mut r = Report::new(
        scenario,
        "6.1",
        std::path::Path::new("runs/x"),
        "e4race run",
    );
    r.kernel.release = release.into();
    r.strict = strict;
    r.set_findings(findings);
    KnownIssues::parse(LIST, "list.toml").unwrap().apply(&mut r);
    r
}

#[test]
fn known_findings_alone_pass() {
    let r = run(
        "migrate-mmap",
        "6.1.0-57-amd64",
        (0..12).map(|i| post(&format!("r0/f{i}"))).collect(),
        false,
    );
    assert_eq!(r.verdict, Verdict::Pass);
    assert_eq!(r.verdict.exit_code(), 0);
    assert_eq!(r.findings.len(), 12, "known findings stay in the report");
    assert_eq!(r.known_issues.len(), 1);
    assert_eq!(r.known_issues[0].findings, 12);
    assert!(r
        .findings
        .iter()
        .all(|f| f.known_issue.as_deref() == Some("migrate-returns-0")
            && f.known_cause.as_deref() == Some("retval overwritten")));
    assert!(r.known_not_reproduced.is_empty());
    assert!(r.summary().starts_with("PASS (1 known issue): "));
}

#[test]
fn strict_keeps_known_findings_bug_found() {
    let r = run("migrate-mmap", "6.1.0-57-amd64", vec![post("r0/f0")], true);
    assert_eq!(r.verdict, Verdict::BugFound);
    assert_eq!(r.known_issues.len(), 1, "still listed as known");
}

#[test]
fn a_new_finding_beside_a_known_one_is_bug_found() {
    let r = run(
        "migrate-mmap",
        "6.12.48+deb13-amd64",
        vec![post("r0/f0"), lost()],
        false,
    );
    assert_eq!(r.verdict, Verdict::BugFound);
    assert_eq!(r.new_findings().count(), 1);
    assert_eq!(
        r.new_findings().next().unwrap().signature,
        "migrate-mmap/data-loss/lost-block:hole"
    );
}

#[test]
fn an_issue_in_scope_that_does_not_show_is_not_reproduced() {
    let r = run("migrate-mmap", "7.3.4+deb13-amd64", vec![], false);
    assert_eq!(r.verdict, Verdict::Pass);
    assert_eq!(r.known_not_reproduced, ["migrate-returns-0"]);
    assert!(r
        .summary()
        .contains("known issue migrate-returns-0: not reproduced"));
    // Another scenario cannot reproduce it: not listed.
    let r = run("defrag-mmap", "7.3.4+deb13-amd64", vec![], false);
    assert!(r.known_not_reproduced.is_empty());
}

#[test]
fn kernels_out_of_range_are_not_covered() {
    for release in ["5.4.0-1-amd64", "7.4.0-rc1"] {
        let r = run("migrate-mmap", release, vec![post("r0/f0")], false);
        assert_eq!(r.verdict, Verdict::BugFound, "{release}");
        assert!(r.known_issues.is_empty() && r.known_not_reproduced.is_empty());
    }
}

#[test]
fn unfinished_runs_are_left_alone() {
    let mut r = Report::new(
        "migrate-mmap",
        "6.1",
        std::path::Path::new("x"),
        "e4race run",
    );
    r.verdict = Verdict::InfraError;
    KnownIssues::builtin().unwrap().apply(&mut r);
    assert_eq!(r.verdict, Verdict::InfraError);
    assert!(r.known_not_reproduced.is_empty());
}

#[test]
fn a_file_on_disk_loads_and_a_missing_one_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.toml");
    std::fs::write(&p, LIST).unwrap();
    assert_eq!(KnownIssues::load(&p).unwrap().issues.len(), 1);
    let e = KnownIssues::load(&dir.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read the known-issues file"), "{e}");
}
