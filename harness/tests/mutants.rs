//! Detection is proven against a real kernel bug: ext4 rebuilt from Debian's own source with
//! the 2008 migration fix reverted (vm-images/mutants/migrate-flag-clear). With the fix gone, a
//! hole filled through mmap during EXT4_IOC_MIGRATE is allocated into the old indirect map and
//! dropped when the extent tree is swapped in: we expect LostBlocks (found as holes on the
//! host) and e2fsck reporting the orphaned blocks as allocated but unowned.
//!
//! Invariant for migrate-flag-clear (holds across seeds): with 4 files x 2048 holes stored
//! during migrations, at least one store lands in a migration window and is dropped with
//! the old indirect map; a dropped block always reads back as a hole, and its block stays
//! allocated without an owner, which e2fsck always reports.

mod common;
use common::*;
use e4race_report::{FindingClass, Verdict};

#[test]
fn vm_mutant_migrate_flag_clear_loses_blocks_and_is_detected() {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(
        &[
            "run",
            "migrate-mmap",
            "--mutant",
            "migrate-flag-clear",
            "--rounds",
            "2",
            "--seed",
            "11",
            // Both rounds run however slow the host is.
            "--duration",
            "0",
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let dir = run_dir(runs.path());
    let r = report(&dir);
    assert_eq!(r.verdict, Verdict::BugFound);
    assert_eq!(r.mutant.as_deref(), Some("migrate-flag-clear"));
    let lost: Vec<_> = r.findings.iter().filter_map(|f| f.lost_block()).collect();
    assert!(!lost.is_empty(), "the mutant lost no block: {r:?}");
    assert_eq!(
        r.exercise.as_ref().map(|e| e.host().lost_blocks),
        Some(lost.len())
    );
    for b in &lost {
        assert_eq!(b.found, oracles::Found::Hole, "{b:?}");
    }
    assert!(
        r.findings
            .iter()
            .any(|f| f.class() == FindingClass::FsCorruption),
        "e2fsck should see the orphaned blocks: {r:?}"
    );
    assert!(
        dir.join("disk.img").exists(),
        "a run with findings keeps its image"
    );
}

/// The defrag family: ext4 with move_extent_per_page()'s unwritten re-check removed
/// (vm-images/mutants/move-unwritten-recheck). defrag-mmap preallocates half of the holes,
/// aims the writers at the range being moved and keeps writeback running, so a store into
/// an unwritten range gets written back (and the extent converted) while MOVE_EXT still
/// believes the range is unwritten. The mutant then swaps the blocks without copying.
///
/// Invariant (holds across seeds, with all 4 rounds run: `--duration 0`): the mutant loses
/// at least one acknowledged block (3 to 13 per 3-round run when measured), and
/// every lost block lies inside (or within one move call of) a range that an
/// EXT4_IOC_MOVE_EXT call of that same file covered. How the block reads back is *not*
/// part of the invariant: usually zeros or unwritten, but the swapped-in block can also be
/// one that held another file's data (`foreign`), depending on which freed block the donor
/// was given. Asserting only zeros/unwritten failed 3 runs in 8.
#[test]
fn vm_mutant_move_unwritten_recheck_loses_blocks_in_moved_ranges() {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(
        &[
            "run",
            "defrag-mmap",
            "--mutant",
            "move-unwritten-recheck",
            "--seed",
            "5",
            // A fixed amount of work however slow the host: with the default 40 s limit a
            // loaded host ran only 2 of 3 rounds and the mutant lost nothing (1 run in CI).
            "--duration",
            "0",
            "--rounds",
            "4",
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let dir = run_dir(runs.path());
    let r = report(&dir);
    assert_eq!(r.verdict, Verdict::BugFound);
    assert_eq!(r.mutant.as_deref(), Some("move-unwritten-recheck"));
    let lost: Vec<_> = r.findings.iter().filter_map(|f| f.lost_block()).collect();
    assert!(!lost.is_empty(), "the mutant lost no block: {r:?}");

    let workload: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("workload.json")).unwrap()).unwrap();
    // The [start, end) block ranges each move call of (round, file) covered, widened by one
    // call's length on each side ("next to").
    let moved = |round: u64, file_id: u64| -> Vec<(u64, u64)> {
        workload["rounds"][round as usize]["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["file_id"] == file_id)
            .map(|f| {
                f["moves"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| {
                        let start = m["orig_start"].as_u64().unwrap();
                        let len = m["len"].as_u64().unwrap();
                        (start.saturating_sub(len), start + 2 * len)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    for b in &lost {
        let ranges = moved(u64::from(b.round), u64::from(b.file_id));
        assert!(
            ranges.iter().any(|&(s, e)| (s..e).contains(&b.lblk)),
            "lost lblk {} is not in or next to any moved range {ranges:?}: {b:?}",
            b.lblk
        );
    }
}

/// `validate` as a suite: one stock run and one mutant run on 6.1, with small races so it
/// stays short. Invariants (any seed): the stock migrate-mmap run convicts nothing (its
/// api-postcondition finding is the built-in known issue), and the mutant run always loses
/// blocks (the invariant at the top of this file), so the table reads 0/1 false positives
/// and 1/1 detected, caught by data-loss, and the suite passes.
#[test]
fn vm_validate_is_a_suite_with_a_detection_table() {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let out = runs.path().join("validate");
    let o = e4race(
        &[
            "validate",
            "--runs",
            "1",
            "--kernels",
            "6.1",
            "--mutants",
            "migrate-flag-clear",
            "--runs-dir",
            out.to_str().unwrap(),
            "--run-args",
            "--rounds 2 --duration 0",
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let table = std::fs::read_to_string(out.join("validate.md")).unwrap();
    assert!(
        table.contains("| migrate-mmap | 6.1 | stock | 1 | - | 0/1 | 0 | - |"),
        "{table}"
    );
    assert!(
        table.contains("| migrate-mmap | 6.1 | migrate-flag-clear | 1 | 1/1 | - | 0 |"),
        "{table}"
    );
    let mutant_row = table
        .lines()
        .find(|l| l.contains("migrate-flag-clear"))
        .unwrap();
    assert!(mutant_row.contains("data-loss 1"), "{table}");
    // It is a suite: suite.json holds both jobs, the mutant one as an expected BUG-FOUND.
    let s = suite::SuiteResult::read(&out.join("suite.json")).unwrap();
    assert_eq!(s.jobs.len(), 2, "{s:?}");
    assert!(s.jobs.iter().all(|j| j.ok), "{s:?}");
    assert!(out.join("index.html").exists() && out.join("junit.xml").exists());
}

/// The flags (FS_IOC_GETFLAGS) bit of an extent-mapped inode, EXT4_EXTENTS_FL.
const EXTENTS_FL: u32 = 0x0008_0000;

/// The workload record a run left (the rounds the guest finished).
fn workload(dir: &std::path::Path) -> e4race_protocol::RaceResult {
    serde_json::from_slice(&std::fs::read(dir.join("workload.json")).unwrap()).unwrap()
}

/// The `chattr -e` family: ext4_ind_migrate() with 8974fec7d72e reverted
/// (vm-images/mutants/ind-migrate-leading-hole) copies the file's one extent into i_data[0..len)
/// whatever logical block the extent starts at. `--direction to-indirect` gives every file a
/// run of blocks after a leading hole of 1 to 4 blocks, inside the 12 direct pointers.
///
/// Invariant (any seed; writers are off, so nothing else moves the blocks): every file whose
/// conversion succeeded (flags lose EXTENTS_FL) loses exactly the blocks of its run, and no
/// other file loses any. Block `start + i` now reads block `i`'s mapping: the data of block
/// `start + (i - start)` or, past the run's length, a hole. Which files convert is not part of
/// the invariant: ext4_ind_migrate() refuses (EOPNOTSUPP) a run that was allocated as two
/// extents, which happened to 2 of 12 files in one stock run.
#[test]
fn vm_mutant_ind_migrate_leading_hole_loses_every_block_of_a_converted_run() {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(
        &[
            "run",
            "migrate-mmap",
            "--mutant",
            "ind-migrate-leading-hole",
            "--direction",
            "to-indirect",
            "--writers",
            "0",
            "--rounds",
            "2",
            "--seed",
            "7",
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let dir = run_dir(runs.path());
    let r = report(&dir);
    assert_eq!(r.verdict, Verdict::BugFound);
    assert_eq!(r.mutant.as_deref(), Some("ind-migrate-leading-hole"));
    let lost: std::collections::BTreeSet<(u32, u32, u64)> = r
        .findings
        .iter()
        .filter_map(|f| f.lost_block())
        .map(|b| (b.round, b.file_id, b.lblk))
        .collect();
    let mut converted = 0;
    for round in workload(&dir).rounds {
        for f in &round.files {
            let m = f.migration.as_ref().expect("every file is migrated");
            let ok = m.error == 0 && f.after.flags & EXTENTS_FL == 0;
            let lost_here: Vec<u64> = lost
                .iter()
                .filter(|&&(r, id, _)| r == round.round && id == f.file_id)
                .map(|&(_, _, b)| b)
                .collect();
            assert!(f.prefilled.first().is_some_and(|&b| b >= 1), "{f:?}");
            if ok {
                converted += 1;
                assert_eq!(lost_here, f.prefilled, "r{}/f{}", round.round, f.file_id);
            } else {
                assert!(
                    lost_here.is_empty(),
                    "unconverted file lost {lost_here:?}: {f:?}"
                );
            }
        }
    }
    assert!(converted > 0, "no file was converted: {r:?}");
}

/// The checksum family: EXT4_IOC_MIGRATE with e81c9302a6c3 reverted
/// (vm-images/mutants/migrate-tmp-csum-seed) builds the extent tree in a temporary inode that
/// has not been given the original inode's checksum seed (metadata_csum is mkfs.ext4's
/// default). A 1 MiB file with alternate holes has 128 extents, more than fit in the inode,
/// so its tree has a leaf block, checksummed with the wrong seed.
///
/// Invariant (any seed; no writers, so every migration completes or fails as a whole): every
/// migration that succeeded leaves e2fsck a checksum mismatch on that file's extent block, and
/// no data is lost (the tree itself maps the right blocks).
#[test]
fn vm_mutant_migrate_tmp_csum_seed_fails_the_checksum_of_every_migrated_tree() {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(
        &[
            "run",
            "migrate-mmap",
            "--mutant",
            "migrate-tmp-csum-seed",
            "--writers",
            "0",
            "--size-mib",
            "1",
            "--rounds",
            "2",
            "--seed",
            "7",
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let dir = run_dir(runs.path());
    let r = report(&dir);
    assert_eq!(r.verdict, Verdict::BugFound);
    assert_eq!(r.mutant.as_deref(), Some("migrate-tmp-csum-seed"));
    assert!(r.findings.iter().all(|f| f.lost_block().is_none()), "{r:?}");
    let bad_trees: std::collections::BTreeSet<u64> = r
        .findings
        .iter()
        .filter_map(|f| match &f.oracle {
            oracles::Finding::FsCorruption(oracles::FsckFinding::ChecksumMismatch {
                ino: Some(i),
                object,
                ..
            }) if object == "extent block" => Some(*i),
            _ => None,
        })
        .collect();
    let mut migrated = 0;
    for round in workload(&dir).rounds {
        for f in &round.files {
            let m = f.migration.as_ref().expect("every file is migrated");
            if m.error == 0 && f.after.flags & EXTENTS_FL != 0 {
                migrated += 1;
                assert!(
                    bad_trees.contains(&f.ino),
                    "r{}/f{} (inode {}) migrated but its tree passed: {bad_trees:?}",
                    round.round,
                    f.file_id,
                    f.ino
                );
            }
        }
    }
    assert!(migrated > 0, "no migration succeeded: {r:?}");
}

/// move-moved-len (55583e899a53 reverted): `moved_len` is `o_start - orig_blk` again instead of
/// the sum of what move_extent_per_page() swapped.
///
/// Invariant (any seed; no writers and no preallocation, so a block that was a hole stays one
/// and every other block holds data for the whole call): a successful EXT4_IOC_MOVE_EXT call
/// over a range with both data and holes reports a wrong `moved_len`, either the whole range
/// (the holes counted as moved) or 0 (the loop left through `goto out` at a trailing hole);
/// a range of data only or holes only reports the right number. So the agent's moved_len
/// checks fail exactly once per mixed range, and never otherwise.
#[test]
fn vm_mutant_move_moved_len_miscounts_every_range_with_holes() {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(
        &[
            "run",
            "defrag-mmap",
            "--mutant",
            "move-moved-len",
            "--prealloc=false",
            "--writers",
            "0",
            "--rounds",
            "2",
            "--seed",
            "7",
            "--duration",
            "0",
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let dir = run_dir(runs.path());
    let r = report(&dir);
    assert_eq!(r.verdict, Verdict::BugFound);
    assert_eq!(r.mutant.as_deref(), Some("move-moved-len"));
    let mut mixed_total = 0;
    for round in workload(&dir).rounds {
        for f in &round.files {
            let data: std::collections::BTreeSet<u64> = f.prefilled.iter().copied().collect();
            let mixed = f
                .moves
                .iter()
                .filter(|m| m.error == 0 && !m.e4defrag)
                .filter(|m| {
                    let n = data.range(m.orig_start..m.orig_start + m.len).count() as u64;
                    n > 0 && n < m.len
                })
                .count();
            let failed = f
                .postconditions
                .iter()
                .filter(|p| p.check.starts_with("move-ext-moved-len"))
                .count();
            assert_eq!(
                failed, mixed,
                "r{}/f{}: {failed} moved_len failures for {mixed} ranges with data and holes: {:?}",
                round.round, f.file_id, f.postconditions
            );
            mixed_total += mixed;
        }
    }
    assert!(mixed_total > 0, "no range had both data and holes");
    assert!(
        r.findings
            .iter()
            .any(|f| f.class() == FindingClass::ApiPostcondition),
        "{r:?}"
    );
}

/// migrate-writepages-rwsem (cb85f4d23f79 reverted): migrations no longer exclude writeback.
///
/// Invariant (measured across seeds, see vm-images/mutants/README.md): 2 files x 10000 flips
/// with sync(2) looping make at least one writepages start on the indirect-mapped file and
/// map its delayed block after `chattr +e`, so the kernel logs the WARNING in
/// ext4_put_io_end_defer() (ext4_add_complete_io(), fs/ext4/page-io.c), the one the fix's
/// message quotes. Which file and how often vary; that it happens, and where, does not.
#[test]
fn vm_mutant_migrate_writepages_rwsem_warns_in_ext4_put_io_end_defer() {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(
        &[
            "run",
            "extents-flip",
            "--mutant",
            "migrate-writepages-rwsem",
            "--iterations",
            "10000",
            "--seed",
            "7",
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = report(&run_dir(runs.path()));
    assert_eq!(r.verdict, Verdict::BugFound);
    assert_eq!(r.mutant.as_deref(), Some("migrate-writepages-rwsem"));
    let warns: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.class() == FindingClass::KernelWarning)
        .collect();
    assert!(
        warns
            .iter()
            .any(|f| f.signature.ends_with("page-io.c ext4_put_io_end_defer")),
        "no WARNING in ext4_put_io_end_defer: {:?}",
        r.findings
    );
}

/// migrate-tmp-orphan (6eeaf88fd586 reverted): the temporary inode of a migration is on the
/// orphan list again while its extent tree maps the file's blocks.
///
/// Invariant (measured on 6.12: 20 of 20 validate runs, see vm-images/mutants/README.md): with
/// a syncfs every 10 ms during each migration, jbd2 commits while the temporary inode is on
/// the orphan list, so some flush of the write log leaves a crash state in which journal
/// recovery and e2fsck trip over that orphan; the live run itself stays clean (the bug needs
/// a crash), so what catches it is a crash-consistency finding, never a lost block.
#[test]
fn vm_mutant_migrate_tmp_orphan_is_caught_by_a_crash_state() {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(
        &[
            "run",
            "migrate-mmap",
            "--kernel",
            "6.12",
            "--mutant",
            "migrate-tmp-orphan",
            "--crash-states",
            "--reorder",
            "2",
            "--commit-ms",
            "10",
            "--seed",
            "7",
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = report(&run_dir(runs.path()));
    assert_eq!(r.verdict, Verdict::BugFound);
    assert_eq!(r.mutant.as_deref(), Some("migrate-tmp-orphan"));
    assert!(
        r.findings
            .iter()
            .any(|f| f.class() == FindingClass::CrashConsistency),
        "no crash-state finding: {:?}",
        r.findings
    );
    assert!(r.findings.iter().all(|f| f.lost_block().is_none()), "{r:?}");
}

/// ind-migrate-delalloc (part a of "ext4: be more strict when migrating to non-extent based
/// file" reverted): ext4_ind_migrate() checks the extent header without allocating delayed
/// blocks first.
///
/// Invariant (any seed): with delalloc (ext4's default) and no sync loop, nothing allocates the
/// two blocks written one block apart before `chattr -e` (writeback waits 30 s,
/// dirty_expire_centisecs), so the header is empty and the conversion succeeds on a file that
/// needs two extents, which the agent's postcondition reports. The stock kernel refuses
/// every one of them (its run in the same validate table has 0 such findings).
#[test]
fn vm_mutant_ind_migrate_delalloc_converts_a_two_extent_file() {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(
        &[
            "run",
            "extents-flip",
            "--mutant",
            "ind-migrate-delalloc",
            "--order",
            "append-first",
            "--blocks",
            "2",
            "--gap",
            "1",
            "--iterations",
            "500",
            "--sync-loop=false",
            "--seed",
            "7",
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = report(&run_dir(runs.path()));
    assert_eq!(r.verdict, Verdict::BugFound);
    assert!(
        r.findings.iter().any(|f| f
            .signature
            .ends_with("ind-migrate-refuses-what-indirect-cannot-map")),
        "{:?}",
        r.findings
    );
    // The data is not what breaks: the last file's blocks read back.
    assert!(r.findings.iter().all(|f| f.lost_block().is_none()), "{r:?}");
}
