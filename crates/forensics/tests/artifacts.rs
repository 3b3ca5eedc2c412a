//! report.html, junit.xml and evidence.json from a synthetic run directory (no VM).

mod common;

use forensics::{Attribution, Evidence, RunIdSource};

fn evidence(dir: &std::path::Path) -> Evidence {
    serde_json::from_str(&std::fs::read_to_string(dir.join("evidence.json")).unwrap()).unwrap()
}

#[test]
fn every_lost_block_is_classified() {
    for with_run_id in [true, false] {
        let t = tempfile::tempdir().unwrap();
        common::make_run(t.path(), with_run_id);
        let a = forensics::write_artifacts(t.path()).unwrap();
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
        assert!(a.html.is_some() && a.junit.is_some() && a.evidence.is_some());
        let ev = evidence(t.path());
        assert_eq!(ev.schema, forensics::EVIDENCE_SCHEMA);
        assert_eq!(ev.run_id, common::RUN_ID);
        assert_eq!(
            ev.run_id_source,
            Some(if with_run_id {
                RunIdSource::Report
            } else {
                RunIdSource::AgentLog
            })
        );
        assert_eq!(ev.blocks.len(), 4);
        let by = |path: &str, lblk: u64| {
            ev.blocks
                .iter()
                .find(|b| b.path == path && b.lblk == lblk)
                .unwrap()
                .attribution
                .clone()
        };
        match by("r0/f0", 1) {
            Attribution::OrphanedWrite(w) => {
                assert_eq!((w.sector, w.pblk), (4000, Some(500)));
                assert_eq!(w.pblk_unowned, Some(true));
                assert_eq!(w.after_mark.unwrap().name, "workload-start");
                assert_eq!(w.before_mark.unwrap().name, "round-0-done");
                assert_eq!(w.overwritten_by_seq, None);
                assert_eq!(w.on_final_image, None, "no disk.img in the fixture");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(by("r0/f0", 3), Attribution::NeverWritten);
        match by("r0/f1", 1) {
            Attribution::InPlace(w) => {
                assert_eq!(w.pblk, Some(600));
                assert!(w.overwritten_by_seq.is_some_and(|s| s > w.seq));
            }
            other => panic!("{other:?}"),
        }
        match by("r0/f1", 5) {
            Attribution::OrphanedWrite(w) => {
                assert_eq!(w.pblk, Some(700), "the last write is the evidence");
                assert_eq!(w.pblk_unowned, Some(false));
                assert_eq!(w.times_written, 2);
                assert_eq!(w.other_sectors, vec![650 * 8]);
            }
            other => panic!("{other:?}"),
        }
        let c = &ev.summary;
        assert_eq!(
            (
                c.lost_blocks,
                c.orphaned_write,
                c.in_place,
                c.never_written,
                c.orphaned_on_unowned,
                c.orphaned_not_unowned
            ),
            (4, 2, 1, 1, 1, 1)
        );
        assert_eq!(ev.files.len(), 2);
        assert_eq!(ev.unowned.source, "e2fsck");
        assert_eq!(ev.unowned.blocks, Some(1));
        assert_eq!(ev.unowned_explained, Some(1));
        let b = ev.blocks.iter().find(|b| b.lblk == 5).unwrap();
        assert_eq!(b.store_t_ns, Some(1_000_200_000 + 2_000_000));
    }
}

#[test]
fn junit_has_one_case_per_round_and_the_run() {
    let t = tempfile::tempdir().unwrap();
    common::make_run(t.path(), true);
    forensics::write_artifacts(t.path()).unwrap();
    let xml = std::fs::read_to_string(t.path().join("junit.xml")).unwrap();
    let rep = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    assert_eq!(rep.test_suites.len(), 1);
    let s = &rep.test_suites[0];
    assert_eq!(s.name.as_str(), "e4race.migrate-mmap.6.1.0-test");
    assert_eq!((s.tests, s.failures, s.errors), (2, 2, 0));
    let names: Vec<&str> = s.test_cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "migrate-mmap/6.1.0-test/round-0",
            "migrate-mmap/6.1.0-test/whole-run"
        ]
    );
    // Round 0 fails with its 4 lost blocks and the e2fsck finding about inode 13 (r0/f1).
    match &s.test_cases[0].status {
        quick_junit::TestCaseStatus::NonSuccess {
            message,
            description,
            ..
        } => {
            assert_eq!(
                message.as_ref().unwrap().as_str(),
                "5 findings: 4 data-loss, 1 fs-corruption"
            );
            assert!(description.as_ref().unwrap().as_str().contains("lblk 5"));
        }
        other => panic!("{other:?}"),
    }
    match &s.test_cases[1].status {
        quick_junit::TestCaseStatus::NonSuccess { message, .. } => assert_eq!(
            message.as_ref().unwrap().as_str(),
            "2 findings: 1 fs-corruption, 1 kernel-warning"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn junit_passing_and_infra_error_runs() {
    let t = tempfile::tempdir().unwrap();
    common::make_run(t.path(), true);
    let p = t.path().join("report.json");
    let mut r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    r["findings"] = serde_json::json!([]);
    r["verdict"] = "PASS".into();
    std::fs::write(&p, r.to_string()).unwrap();
    forensics::write_artifacts(t.path()).unwrap();
    let xml = std::fs::read_to_string(t.path().join("junit.xml")).unwrap();
    let rep = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    assert_eq!((rep.tests, rep.failures, rep.errors), (2, 0, 0));
    assert!(!t.path().join("evidence.json").exists(), "nothing was lost");

    r["verdict"] = "INFRA-ERROR".into();
    r["error"] = "QEMU exited".into();
    std::fs::write(&p, r.to_string()).unwrap();
    std::fs::remove_file(t.path().join("workload.json")).unwrap();
    forensics::write_artifacts(t.path()).unwrap();
    let xml = std::fs::read_to_string(t.path().join("junit.xml")).unwrap();
    let rep = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    assert_eq!((rep.tests, rep.failures, rep.errors), (1, 0, 1));
}

#[test]
fn html_is_self_contained_with_a_timeline() {
    let t = tempfile::tempdir().unwrap();
    common::make_run(t.path(), true);
    forensics::write_artifacts(t.path()).unwrap();
    let h = std::fs::read_to_string(t.path().join("report.html")).unwrap();
    assert!(h.starts_with("<!DOCTYPE html>"));
    assert!(h.contains("BUG-FOUND"));
    assert!(h.contains("e4race run migrate-mmap --mutant migrate-flag-clear --seed 42"));
    assert!(!h.contains("<script"), "finding text must be escaped");
    assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    for ext in ["src=\"http", "href=\"http", "@import", "url("] {
        assert!(!h.contains(ext), "external asset: {ext}");
    }
    let svg_start = h.find("<svg").expect("an SVG timeline");
    let svg = &h[svg_start..h[svg_start..].find("</svg>").unwrap() + svg_start];
    assert!(svg.contains("EXT4_IOC_MIGRATE window"), "migration windows");
    assert!(svg.matches("<rect").count() >= 2);
    assert!(
        svg.matches("<line").count() >= 10,
        "ticks for stores, writes, flushes, marks"
    );
    assert!(svg.contains("#d32f2f"), "lost blocks highlighted");
    assert!(svg.contains("round-0-done"), "marks on the log lane");
    assert!(h.contains("The alignment is approximate"));
    assert!(h.contains("<details"), "findings grouped");
}

#[test]
fn missing_report_is_an_error_and_a_bad_log_a_warning() {
    let t = tempfile::tempdir().unwrap();
    let e = forensics::write_artifacts(t.path()).unwrap_err();
    assert!(e.to_string().contains("report.json"), "{e}");
    common::make_run(t.path(), true);
    std::fs::write(t.path().join("writes.log"), b"garbage").unwrap();
    let a = forensics::write_artifacts(t.path()).unwrap();
    assert!(a.html.is_some() && a.junit.is_some() && a.evidence.is_none());
    assert!(
        a.warnings.iter().any(|w| w.contains("attribution skipped")),
        "{:?}",
        a.warnings
    );
}

#[test]
fn inspect_needs_a_data_log_for_at() {
    let t = tempfile::tempdir().unwrap();
    common::make_run(t.path(), true);
    let at = writelog::LogPosition::Mark("round-0-done".into());
    let e = forensics::inspect(t.path(), "r0/f0", Some(&at)).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("--log-data"), "{msg}");
    let e = forensics::inspect(t.path(), "r0/f0", None).unwrap_err();
    assert!(e.to_string().contains("disk.img"), "{e}");
}

/// A finding of a known issue fails no test case (it is listed in whole-run's output), unless
/// the run was strict; a failure's description starts with its signatures and counts.
#[test]
fn junit_lets_known_issues_pass_unless_strict() {
    let t = tempfile::tempdir().unwrap();
    common::make_run(t.path(), true);
    let p = t.path().join("report.json");
    let mut r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let finding = serde_json::json!({
        "summary": "r0/f0 (round 0): migrate-success-sets-extents-flag: returned 0",
        "signature": "migrate-mmap/api-postcondition/migrate-success-sets-extents-flag",
        "known_issue": "migrate-returns-0-after-backoff",
        "class": "api-postcondition",
        "detail": {"path": "r0/f0", "round": 0, "check": "migrate-success-sets-extents-flag", "detail": "returned 0"}
    });
    r["findings"] = serde_json::json!([finding.clone(), finding]);
    r["verdict"] = "PASS".into();
    r["known_issues"] = serde_json::json!([{
        "id": "migrate-returns-0-after-backoff", "title": "t", "findings": 2, "status": "unfixed"
    }]);
    std::fs::write(&p, r.to_string()).unwrap();
    forensics::write_artifacts(t.path()).unwrap();
    let xml = std::fs::read_to_string(t.path().join("junit.xml")).unwrap();
    let rep = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    assert_eq!((rep.tests, rep.failures, rep.errors), (2, 0, 0), "{xml}");
    assert!(
        xml.contains("known issue migrate-returns-0-after-backoff: 2 findings"),
        "{xml}"
    );

    r["strict"] = true.into();
    r["verdict"] = "BUG-FOUND".into();
    std::fs::write(&p, r.to_string()).unwrap();
    forensics::write_artifacts(t.path()).unwrap();
    let xml = std::fs::read_to_string(t.path().join("junit.xml")).unwrap();
    let rep = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    assert_eq!((rep.tests, rep.failures, rep.errors), (2, 1, 0), "{xml}");
    assert!(
        xml.contains("2 × migrate-mmap/api-postcondition/migrate-success-sets-extents-flag"),
        "{xml}"
    );
}

#[test]
fn html_reports_crash_states_and_marks_bad_ones_on_the_timeline() {
    let t = tempfile::tempdir().unwrap();
    common::make_run(t.path(), true);
    let scan = forensics::scan_log(&t.path().join("writes.log"), &Default::default()).unwrap();
    let &(seq, _) = scan.flushes.last().expect("the fixture has flushes");
    let report = crash::CrashReport {
        schema: crash::SCHEMA.into(),
        states_checked: 6,
        after_flush: 2,
        reordered: 4,
        flushes: 2,
        bad: vec![crash::BadState {
            state: crash::CrashState {
                seq,
                kind: crash::StateKind::AfterFlush,
                mark_before: Some("workload-start".into()),
            },
            findings: crash::StateFindings {
                unreadable: Some("no superblock".into()),
                ..Default::default()
            },
        }],
        ..Default::default()
    };
    std::fs::write(
        t.path().join("crash.json"),
        serde_json::to_string(&report).unwrap(),
    )
    .unwrap();
    forensics::write_artifacts(t.path()).unwrap();
    let h = std::fs::read_to_string(t.path().join("report.html")).unwrap();
    assert!(h.contains("6 crash states checked"), "counts");
    assert!(
        h.contains(&format!("--to seq:{seq} --out crash.img")),
        "the replay command of the first bad state"
    );
    let svg_start = h.find("<svg").unwrap();
    let svg = &h[svg_start..];
    assert_eq!(
        svg.matches("class=\"bad-state\"").count(),
        1,
        "the bad state is on the round's timeline"
    );

    // A crash.json that does not parse is a warning; the page is still written, without it.
    std::fs::write(t.path().join("crash.json"), "{").unwrap();
    let a = forensics::write_artifacts(t.path()).unwrap();
    assert!(
        a.warnings.iter().any(|w| w.contains("crash.json")),
        "{:?}",
        a.warnings
    );
    let h = std::fs::read_to_string(t.path().join("report.html")).unwrap();
    assert!(!h.contains("crash states checked"));
}
