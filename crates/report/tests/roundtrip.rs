//! report.json is read back as exactly what was written, for every kind of finding and
//! exercise; an unknown schema is refused with a message that names it.

use std::collections::BTreeMap;

use e4race_report::*;
use oracles::{FileProblem, FileProblemKind, Found, FsckFinding, KernelLogClass, LostBlock};

fn lost(path: &str, lblk: u64, found: Found) -> Finding {
    Finding::new(oracles::Finding::DataLoss(LostBlock {
        path: path.into(),
        ino: 12,
        file_id: 1,
        round: 0,
        lblk,
        expected_generation: 0,
        found,
        pblk: Some(9000 + lblk),
    }))
}

fn every_finding() -> Vec<Finding> {
    vec![
        lost("r0/f1", 7, Found::Hole),
        lost("r0/f1", 9, Found::Zeros),
        Finding::new(oracles::Finding::FileLoss(FileProblem {
            path: "r1/f0".into(),
            file_id: 0,
            round: 1,
            kind: FileProblemKind::Missing,
            acknowledged_blocks: 4096,
            detail: "no such entry".into(),
        })),
        Finding::new(oracles::Finding::ReadBack {
            path: "smoke".into(),
            blocks_written: 256,
            mismatched: vec![3, 4],
        }),
        Finding::new(oracles::Finding::FsCorruption(FsckFinding::IllegalBlocks {
            ino: 13,
        })),
        Finding::new(oracles::Finding::ApiPostcondition {
            path: "r0/f2".into(),
            round: 0,
            check: "migrate-success-sets-extents-flag".into(),
            detail: "still indirect".into(),
        })
        .with_known_cause("ext4_ext_migrate() overwrites retval"),
        Finding::new(oracles::Finding::KernelWarning(oracles::KernelLogFinding {
            class: KernelLogClass::Warn,
            line: "WARNING: CPU: 1 PID: 7 at fs/ext4/inode.c:1".into(),
            line_no: 40,
            context: vec!["Call Trace:".into()],
        })),
    ]
}

fn host() -> HostCheck {
    HostCheck {
        blocks_checked_on_host: 32768,
        lost_blocks: 2,
        e2fsck: "clean".into(),
    }
}

fn every_exercise() -> Vec<Exercise> {
    vec![
        Exercise::Smoke(SmokeExercise {
            blocks_written: 256,
            blocks_read_back_ok: 254,
            run_id: 77,
            host: host(),
        }),
        Exercise::MigrateMmap(MigrateExercise {
            rounds: 3,
            files: 12,
            hole_writes: 24576,
            hole_writes_inside_migration_windows: 190,
            migrations: BTreeMap::from([("ok".into(), 10), ("EAGAIN".into(), 2)]),
            mean_migration_window_ms: 3.5,
            host: host(),
        }),
        Exercise::DefragMmap(DefragExercise {
            rounds: 2,
            moves: BTreeMap::from([("ok".into(), 40)]),
            mean_extents_before: 30.0,
            mean_extents_after: 2.0,
            host: host(),
            ..DefragExercise::default()
        }),
    ]
}

fn report(findings: Vec<Finding>, exercise: Option<Exercise>) -> Report {
    let mut r = Report {
        verdict: Verdict::BugFound,
        kernel: KernelInfo {
            requested: "6.1".into(),
            release: "6.1.0-56-amd64".into(),
            origin: "linux-image-6.1.0-56-amd64 6.1.192-2".into(),
        },
        accel: "tcg".into(),
        accel_reason: "KVM probe failed".into(),
        disk_backend: "blkrec".into(),
        mutant: Some("migrate-flag-clear".into()),
        seed: Some(1),
        run_id: Some(2),
        params: serde_json::json!({"files": 4}),
        started_at: "2026-12-02T09:00:00+00:00".into(),
        duration_s: 1.5,
        boot_s: Some(1.0),
        boot_retries: vec!["Oops: int3".into()],
        findings,
        exercise,
        ..Report::new(
            "migrate-mmap",
            "6.1",
            std::path::Path::new("runs/x"),
            "e4race run migrate-mmap --seed 1",
        )
    };
    r.set_findings(findings_of(&r));
    r.verdict = Verdict::BugFound;
    r
}

fn findings_of(r: &Report) -> Vec<Finding> {
    r.findings.clone()
}

#[test]
fn what_is_written_is_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    for ex in every_exercise().into_iter().map(Some).chain([None]) {
        let r = report(every_finding(), ex);
        r.write(&path).unwrap();
        assert_eq!(Report::read(&path).unwrap(), r);
    }
}

#[test]
fn findings_keep_the_oracle_record_as_class_and_detail() {
    let r = report(every_finding(), None);
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["schema"], SCHEMA);
    let f = &v["findings"][0];
    assert_eq!(f["class"], "data-loss");
    assert_eq!(f["detail"]["lblk"], 7);
    assert_eq!(f["detail"]["found"]["kind"], "hole");
    assert_eq!(v["findings"][2]["class"], "file-loss");
    assert!(v["findings"][5]["known_cause"].is_string());
    // The typed view: file losses and read-back failures are data loss too.
    let classes: Vec<FindingClass> = r.findings.iter().map(Finding::class).collect();
    assert_eq!(
        classes
            .iter()
            .filter(|c| **c == FindingClass::DataLoss)
            .count(),
        4
    );
    assert_eq!(r.findings[4].ino(), Some(13));
    assert_eq!(r.findings[2].round(), Some(1));
}

#[test]
fn another_schema_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    std::fs::write(
        &path,
        r#"{"schema": "e4race-report/1", "scenario": "smoke"}"#,
    )
    .unwrap();
    let e = Report::read(&path).unwrap_err().to_string();
    assert!(e.contains("e4race-report/1") && e.contains(SCHEMA), "{e}");
    std::fs::write(&path, "not json").unwrap();
    let e = Report::read(&path).unwrap_err().to_string();
    assert!(e.contains("is not an e4race report"), "{e}");
    let e = Report::read(&dir.path().join("missing.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read"), "{e}");
}

#[test]
fn summary_lists_exercise_and_findings_by_class() {
    let fsck = Finding::new(oracles::Finding::FsCorruption(FsckFinding::Other {
        text: "block bitmap differences".into(),
    }));
    let r = report(
        vec![
            lost("r0/f1", 7, Found::Hole),
            lost("r0/f1", 9, Found::Hole),
            fsck,
        ],
        every_exercise().into_iter().nth(1),
    );
    let s = r.summary();
    assert!(
        s.starts_with("BUG-FOUND: migrate-mmap on 6.1.0-56-amd64"),
        "{s}"
    );
    assert!(s.contains("findings: 2 data-loss, 1 fs-corruption"), "{s}");
    assert!(
        s.contains("[data-loss] r0/f1: 2 lost blocks (hole), lblk 7, 9\n"),
        "{s}"
    );
    assert!(
        s.contains("[fs-corruption] 1 × e2fsck:block bitmap differences; first: e2fsck: "),
        "{s}"
    );
    assert!(
        s.contains("  hole writes inside migration windows: 190\n"),
        "{s}"
    );
    assert!(s.contains("  migrations: EAGAIN 2, ok 10\n"), "{s}");
    assert!(s.contains("  lost blocks: 2\n"), "{s}");
    assert!(
        s.contains("  reproduce: e4race run migrate-mmap --seed 1\n"),
        "{s}"
    );
}

#[test]
fn verdicts_have_distinct_exit_codes_apart_from_usage() {
    let all = [
        Verdict::Pass,
        Verdict::BugFound,
        Verdict::KernelError,
        Verdict::InfraError,
    ];
    let codes: std::collections::HashSet<i32> = all.iter().map(|v| v.exit_code()).collect();
    assert_eq!(codes.len(), 4);
    assert!(!codes.contains(&2), "2 is clap's usage error");
    for v in all {
        assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
    }
}

#[test]
fn request_errors_are_kept_summarized_and_optional() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let mut r = report(vec![], None);
    assert!(r
        .summary()
        .lines()
        .all(|l| !l.contains("guest requests failed")));
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert!(v.get("request_errors").is_none(), "none: not written");

    r.request_errors = BTreeMap::from([("read-only".into(), 1), ("unaligned-length".into(), 2)]);
    r.write(&path).unwrap();
    assert_eq!(Report::read(&path).unwrap(), r);
    let s = r.summary();
    assert!(
        s.contains("  guest requests failed by the host: 3 (unaligned-length 2, read-only 1)\n"),
        "{s}"
    );
    assert_eq!(
        r.request_errors_line().as_deref(),
        s.lines().find(|l| l.contains("failed by")).map(str::trim)
    );

    // A report written before the field existed still reads.
    let mut v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    v.as_object_mut().unwrap().remove("request_errors");
    let old = Report::from_json(&v.to_string(), &path).unwrap();
    assert!(old.request_errors.is_empty());
}

#[test]
fn findings_are_grouped_by_signature_with_known_issues_counted() {
    let post = |path: &str| {
        Finding::new(oracles::Finding::ApiPostcondition {
            path: path.into(),
            round: 0,
            check: "migrate-success-sets-extents-flag".into(),
            detail: "still indirect".into(),
        })
    };
    let mut r = report(
        (0..12).map(|i| post(&format!("r0/f{i}"))).collect(),
        every_exercise().into_iter().nth(1),
    );
    assert!(
        r.findings
            .iter()
            .all(|f| f.signature
                == "migrate-mmap/api-postcondition/migrate-success-sets-extents-flag")
    );
    let s = r.summary();
    assert!(
        s.contains("[api-postcondition] 12 × migrate-success-sets-extents-flag (12 of 12 migrations); first: r0/f0"),
        "{s}"
    );
    assert_eq!(s.matches("[api-postcondition]").count(), 1, "{s}");
    // One file breaking a check three times (three calls) is one file of twelve.
    let same = report(
        (0..3).map(|_| post("r0/f5")).collect(),
        every_exercise().into_iter().nth(1),
    );
    let s = same.summary();
    assert!(
        s.contains("3 × migrate-success-sets-extents-flag (1 of 12 migrations)"),
        "{s}"
    );
    for f in &mut r.findings {
        f.known_issue = Some("migrate-returns-0".into());
    }
    r.known_issues = vec![KnownIssueHit {
        id: "migrate-returns-0".into(),
        title: "EXT4_IOC_MIGRATE returns 0".into(),
        findings: 12,
        status: "unfixed".into(),
        fix: None,
    }];
    r.verdict = Verdict::Pass;
    let s = r.summary();
    assert!(s.starts_with("PASS (1 known issue): migrate-mmap"), "{s}");
    assert!(s.contains("(12 explained by known issues)"), "{s}");
    assert!(s.contains("[known issue migrate-returns-0]"), "{s}");
    assert_eq!(r.new_findings().count(), 0);
    let back = Report::from_json(&r.to_json(), std::path::Path::new("r.json")).unwrap();
    assert_eq!(back, r);
}

#[test]
fn bisect_codes_follow_git_bisect_run() {
    let mut r = report(vec![], None);
    for (verdict, boot, code) in [
        (Verdict::Pass, Some(1.0), 0),
        (Verdict::BugFound, Some(1.0), 1),
        (Verdict::KernelError, Some(1.0), 1),
        (Verdict::KernelError, None, 125),
        (Verdict::InfraError, None, 125),
        (Verdict::InfraError, Some(1.0), 125),
    ] {
        r.verdict = verdict;
        r.boot_s = boot;
        assert_eq!(r.bisect_code(), code, "{verdict} boot {boot:?}");
    }
}
