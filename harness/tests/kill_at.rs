//! `--kill-at`: a real power cut (QEMU SIGKILLed mid-race), then the disk as the device left
//! it checked as a crash state: journal replay, e2fsck -fn, and every block of each round
//! whose done mark was logged.
//!
//! Invariant (holds across seeds and kill points): on a stock kernel, ext4's journal makes
//! the metadata consistent after any crash, and a round's done mark is logged only after
//! every file of it was msynced and fsynced (which ends in a completed FLUSH), so its blocks
//! survive the cut. A kill at `mark:round-1-done` comes after two such rounds; a kill at
//! `after:3` lands wherever the race is then (a round in flight is allowed old or new data).

mod common;
use common::*;
use e4race_report::{Exercise, FindingClass, Verdict};

/// A passing killed run: its report, and its run directory (in a temporary runs directory
/// that lives as long as the returned guard).
fn killed_migrate_run(
    kill_at: &str,
) -> (e4race_report::Report, std::path::PathBuf, tempfile::TempDir) {
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(
        &[
            "run",
            "migrate-mmap",
            "--rounds",
            "4",
            "--seed",
            "11",
            "--kill-at",
            kill_at,
        ],
        runs.path(),
    );
    let dir = run_dir(runs.path());
    let r = report(&dir);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(r.verdict, Verdict::Pass);
    // Only the guest's postconditions of its finished rounds, each the built-in known issue
    // (EXT4_IOC_MIGRATE returns 0 after backing off): nothing from the power cut.
    for f in &r.findings {
        assert_eq!(f.class(), FindingClass::ApiPostcondition, "{f:?}");
        assert!(f.known_issue.is_some(), "{f:?}");
    }
    assert!(
        r.reproduce.contains(&format!("--kill-at {kill_at}")),
        "{}",
        r.reproduce
    );
    (r, dir, runs)
}

#[test]
fn vm_a_kill_after_a_round_keeps_the_finished_rounds() {
    let _l = vm_lock();
    let (r, dir, _runs) = killed_migrate_run("mark:round-1-done");
    let Some(Exercise::PowerCut(pc)) = &r.exercise else {
        panic!("not a power cut: {:?}", r.exercise);
    };
    assert_eq!(pc.killed_scenario, "migrate-mmap");
    assert_eq!(pc.last_mark.as_deref(), Some("round-1-done"));
    assert_eq!(pc.rounds_done, 2, "{pc:?}");
    // Two rounds x 4 files x 16 MiB: every block was required, none lost.
    assert_eq!(pc.host.blocks_checked_on_host, 2 * 4 * 4096, "{pc:?}");
    assert_eq!(pc.host.lost_blocks, 0);
    assert_eq!(pc.host.e2fsck, "clean");
    // The finished rounds' records were saved although the reply never came.
    let w = std::fs::read_to_string(dir.join("workload.json")).unwrap();
    assert!(w.contains("\"hole_t_ns\""), "{w}");
}

#[test]
fn vm_a_kill_mid_race_gives_no_false_finding() {
    let _l = vm_lock();
    let (r, _dir, _runs) = killed_migrate_run("after:3.000");
    let Some(Exercise::PowerCut(pc)) = &r.exercise else {
        panic!("not a power cut: {:?}", r.exercise);
    };
    assert_eq!(pc.host.lost_blocks, 0);
    assert_eq!(pc.host.e2fsck, "clean");
    // The kill came during the workload, before its end.
    assert_ne!(pc.last_mark.as_deref(), Some("workload-done"), "{pc:?}");
}
