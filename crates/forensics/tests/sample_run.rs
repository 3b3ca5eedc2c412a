//! On a real mutant run directory, when one is at hand (it is not in git): every lost block
//! is attributed, and every orphaned write's block is one e2fsck reports allocated but owned
//! by no inode. Point E4RACE_SAMPLE_RUN at a run directory; without it the test looks in
//! /work/sample-runs and skips when nothing is there. The harness's `vm_` test makes such a
//! run itself.

use std::path::PathBuf;

fn sample() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("E4RACE_SAMPLE_RUN") {
        return Some(PathBuf::from(p));
    }
    std::fs::read_dir("/work/sample-runs")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("report.json").is_file() && p.join("writes.log").is_file())
}

#[test]
fn sample_mutant_run_is_fully_attributed() {
    let Some(src) = sample() else {
        eprintln!("skipped: no sample run directory (set E4RACE_SAMPLE_RUN)");
        return;
    };
    // Work on links so the sample directory is not written to.
    let t = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_file() {
            std::os::unix::fs::symlink(e.path(), t.path().join(e.file_name())).unwrap();
        }
    }
    for f in ["report.html", "junit.xml", "evidence.json"] {
        let _ = std::fs::remove_file(t.path().join(f));
    }
    let run = forensics::RunDir::load(t.path()).unwrap();
    if run.lost.is_empty() {
        eprintln!("skipped: {} has no lost blocks", src.display());
        return;
    }
    let a = forensics::write_artifacts(t.path()).unwrap();
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    let ev: forensics::Evidence =
        serde_json::from_str(&std::fs::read_to_string(a.evidence.expect("evidence.json")).unwrap())
            .unwrap();
    assert_eq!(
        ev.blocks.len(),
        run.lost.len(),
        "every lost block classified"
    );
    let unowned = run.unowned_blocks().blocks.expect("e2fsck.txt or disk.img");
    for b in &ev.blocks {
        if let forensics::Attribution::OrphanedWrite(w) = &b.attribution {
            let p = w.pblk.expect("4 KiB aligned");
            assert_eq!(w.sector * 512 / 4096, p);
            assert!(
                unowned.contains(&p),
                "{} lblk {}: pblk {p} is owned",
                b.path,
                b.lblk
            );
            assert_eq!(w.pblk_unowned, Some(true));
        }
    }
    assert!(ev.summary.orphaned_write > 0);
}
