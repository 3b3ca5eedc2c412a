//! A small synthetic run directory: report.json, workload.json, writes.log, e2fsck.txt.
//!
//! One round, two files. Lost blocks and what the log says about them:
//! * r0/f0 lblk 1: written at pblk 500, which e2fsck reports unowned → orphaned, unowned;
//! * r0/f0 lblk 3: never written;
//! * r0/f1 lblk 1: written at pblk 600 where the file maps it, then overwritten → in place;
//! * r0/f1 lblk 5: written at pblk 700 (twice: first at 650), owned → orphaned, not unowned.
#![allow(dead_code)]

use std::path::Path;

use e4race_protocol::BlockTag;
use writelog::{Entry, LogOptions, LogWriter};

pub const RUN_ID: u64 = 0x5eed_0000_0007;

pub fn tag(file_id: u32, lblk: u64) -> Vec<u8> {
    BlockTag {
        run_id: RUN_ID,
        file_id,
        round: 0,
        lblk,
        generation: 0,
    }
    .to_block()
    .to_vec()
}

fn sector(pblk: u64) -> u64 {
    pblk * 8
}

fn lost(path: &str, file_id: u32, lblk: u64, pblk: Option<u64>, found: &str) -> serde_json::Value {
    serde_json::json!({
        "class": "data-loss",
        "summary": format!("{path} (round 0, file {file_id}) lblk {lblk}: expected tag generation 0, found {found}"),
        "detail": {"path": path, "ino": 12 + file_id, "file_id": file_id, "round": 0, "lblk": lblk,
                   "expected_generation": 0, "found": {"kind": found}, "pblk": pblk}
    })
}

/// Writes the fixture into `dir`; `with_run_id`: whether report.json carries run_id (else it
/// must be recovered from agent.jsonl).
pub fn make_run(dir: &Path, with_run_id: bool) {
    let log = LogWriter::create(
        dir.join("writes.log"),
        LogOptions {
            log_data: false,
            ..LogOptions::default()
        },
    )
    .unwrap();
    log.append(&Entry::write(0, 0, &[0xAA; 4096], 0)).unwrap();
    log.mark("workload-start").unwrap();
    // Prefill: lblk 0 of each file, then the fsync's flush.
    log.append(&Entry::write(0, sector(400), &tag(0, 0), 0))
        .unwrap();
    log.append(&Entry::write(1, sector(401), &tag(1, 0), 0))
        .unwrap();
    log.append(&Entry::flush(0, 0, log.next_seq())).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    // A two-block write: f0 lblk 1 lands at pblk 500 (second chunk).
    let mut two = vec![0x11u8; 4096];
    two.extend_from_slice(&tag(0, 1));
    log.append(&Entry::write(0, sector(499), &two, 0)).unwrap();
    log.append(&Entry::write(1, sector(600), &tag(1, 1), 0))
        .unwrap();
    log.append(&Entry::write(1, sector(650), &tag(1, 5), 0))
        .unwrap();
    log.append(&Entry::write(1, sector(700), &tag(1, 5), 0))
        .unwrap();
    log.append(&Entry::flush(1, 0, log.next_seq())).unwrap();
    log.mark("round-0-done").unwrap();
    // The in-place block is overwritten after the round.
    log.append(&Entry::write(0, sector(600), &[0x22; 4096], 0))
        .unwrap();
    log.mark("workload-done").unwrap();
    log.finish().unwrap();

    let file = |file_id: u32, holes: &[u64], t0: u64| {
        serde_json::json!({
            "file_id": file_id, "path": format!("r0/f{file_id}"), "ino": 12 + file_id,
            "prefilled": [0], "hole_lblks": holes,
            "hole_t_ns": holes.iter().enumerate().map(|(i, _)| t0 + i as u64 * 1_000_000).collect::<Vec<_>>(),
            "synced": true,
            "migration": {"start_ns": t0 + 500_000, "end_ns": t0 + 3_000_000, "error": 0, "flags_before": 0},
            "after": {"flags": 0x80000, "extents": 1, "content_ok": true},
            "postconditions": []
        })
    };
    let workload = serde_json::json!({"rounds": [{"round": 0, "files": [
        file(0, &[1, 3, 7], 1_000_000_000),
        file(1, &[1, 3, 5], 1_000_200_000),
    ]}]});
    std::fs::write(dir.join("workload.json"), workload.to_string()).unwrap();
    let mut findings = vec![
        lost("r0/f0", 0, 1, None, "hole"),
        lost("r0/f0", 0, 3, None, "hole"),
        lost("r0/f1", 1, 1, Some(600), "unwritten"),
        lost("r0/f1", 1, 5, None, "hole"),
    ];
    findings.push(serde_json::json!({"class": "fs-corruption", "summary": "e2fsck: block bitmap differences: 1 allocated but unowned (-), 0 owned but free (+)",
        "detail": {"kind": "block-bitmap-differences", "ranges": [{"sign": "minus", "start": 500, "end": 500}]}}));
    findings.push(serde_json::json!({"class": "fs-corruption", "summary": "e2fsck: Inode 13, i_blocks is 16, should be 8.",
        "detail": {"kind": "inode-blocks-wrong", "ino": 13, "i_blocks": 16, "should_be": 8}}));
    findings.push(serde_json::json!({"class": "kernel-warning", "summary": "kernel Ext4Error: <script>alert(1)</script>",
        "detail": {"class": "ext4-error", "line": "x", "line_no": 3, "context": []}}));
    let mut report = serde_json::json!({
        "schema": e4race_report::SCHEMA, "scenario": "migrate-mmap", "verdict": "BUG-FOUND",
        "kernel": {"requested": "6.1", "release": "6.1.0-test", "origin": "fixture"},
        "accel": "tcg", "accel_reason": "", "disk_backend": "blkrec", "mutant": "migrate-flag-clear",
        "seed": 42, "params": {}, "started_at": "2026-01-01T00:00:00Z", "duration_s": 12.5,
        "boot_s": 1.0, "error": null, "findings": findings,
        "exercise": null, "run_dir": dir.display().to_string(),
        "reproduce": "e4race run migrate-mmap --mutant migrate-flag-clear --seed 42"
    });
    if with_run_id {
        report["run_id"] = serde_json::json!(RUN_ID);
    } else {
        std::fs::write(
            dir.join("agent.jsonl"),
            format!(
                "{{\"msg\":\"ready\"}}\n{{\"id\":3,\"cmd\":\"migrate-mmap\",\"dir\":\"/mnt\",\"run_id\":{RUN_ID}}}\n"
            ),
        )
        .unwrap();
    }
    std::fs::write(dir.join("report.json"), report.to_string()).unwrap();
    std::fs::write(
        dir.join("e2fsck.txt"),
        "exit code 4\ne2fsck 1.47.0 (5-Feb-2023)\nPass 5: Checking group summary information\nBlock bitmap differences:  -500\nFix? no\n\n",
    )
    .unwrap();
}
