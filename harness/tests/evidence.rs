//! report.html, junit.xml, evidence.json and `e4race report` / `e4race inspect`.

mod common;
use common::*;

use std::path::Path;

/// A run directory with a report and a hashes-only write log, no VM.
fn tiny_run(dir: &Path) {
    let log = writelog::LogWriter::create(dir.join("writes.log"), Default::default()).unwrap();
    log.mark("workload-start").unwrap();
    log.append(&writelog::Entry::write(0, 8, &[1u8; 4096], 0))
        .unwrap();
    log.finish().unwrap();
    let report = e4race_report::Report {
        verdict: e4race_report::Verdict::Pass,
        ..e4race_report::Report::new("smoke", "6.1", dir, "e4race run smoke")
    };
    report.write(&dir.join("report.json")).unwrap();
}

#[test]
fn report_regenerates_and_inspect_explains_a_hashes_only_log() {
    let runs = tempfile::tempdir().unwrap();
    let dir = runs.path().join("run");
    std::fs::create_dir_all(&dir).unwrap();
    tiny_run(&dir);
    let o = e4race(&["report", dir.to_str().unwrap()], runs.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(dir.join("report.html").is_file() && dir.join("junit.xml").is_file());
    let o = e4race(
        &[
            "inspect",
            dir.to_str().unwrap(),
            "--file",
            "r0/f0",
            "--at",
            "mark:workload-start",
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--log-data"),
        "{}",
        text(&o)
    );
    let o = e4race(
        &[
            "inspect",
            dir.to_str().unwrap(),
            "--file",
            "r0/f0",
            "--at",
            "tomorrow",
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = e4race(
        &["report", runs.path().join("nope").to_str().unwrap()],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
}

/// A real mutant run recorded with data: every lost block is attributed, every orphaned
/// write sits on a block e2fsck reports allocated but unowned, junit.xml has one case per
/// round plus the whole run, and `inspect` reads mappings at a mark and at the end.
/// Invariant: attribution is asserted for whatever blocks the mutant lost (at least one,
/// which migrate-flag-clear gives in every measured run), never for a particular block.
#[test]
fn vm_mutant_run_has_evidence_for_every_lost_block() {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(
        &[
            "run",
            "migrate-mmap",
            "--mutant",
            "migrate-flag-clear",
            "--rounds",
            "1",
            "--seed",
            "11",
            "--log-data",
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("warning: report artifacts"),
        "{}",
        text(&o)
    );
    let dir = run_dir(runs.path());
    for f in ["report.html", "junit.xml", "evidence.json"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let run = forensics::RunDir::load(&dir).unwrap();
    assert!(!run.lost.is_empty());
    let ev: forensics::Evidence =
        serde_json::from_str(&std::fs::read_to_string(dir.join("evidence.json")).unwrap()).unwrap();
    assert_eq!(
        ev.blocks.len(),
        run.lost.len(),
        "every lost block classified"
    );
    assert_eq!(ev.unowned.source, "e2fsck");
    let unowned = run.unowned_blocks().blocks.unwrap();
    let mut orphaned = 0;
    for b in &ev.blocks {
        if let forensics::Attribution::OrphanedWrite(w) = &b.attribution {
            orphaned += 1;
            let p = w.pblk.expect("4 KiB aligned write");
            assert!(
                unowned.contains(&p),
                "{} lblk {}: pblk {p} is not unowned",
                b.path,
                b.lblk
            );
        }
    }
    assert!(orphaned > 0, "{:?}", ev.summary);

    let xml = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    let rep = forensics::quick_junit::Report::deserialize_from_str(&xml).unwrap();
    assert_eq!(rep.tests, 2, "round 0 and the whole run");
    assert!(rep.failures >= 1);

    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("EXT4_IOC_MIGRATE window"));

    let file = &run.lost[0].path;
    let d = dir.to_str().unwrap();
    let o = e4race(
        &["inspect", d, "--file", file, "--at", "mark:round-0-done"],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("-> pblk"),
        "{}",
        text(&o)
    );
    let o = e4race(&["inspect", d, "--file", file], runs.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("lost blocks"),
        "{}",
        text(&o)
    );
    let o = e4race(&["report", d], runs.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
