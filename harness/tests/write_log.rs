//! The guest's disk on blkrec, end to end: a real kernel writes a known pattern with fsync, and
//! the write log must show exactly those blocks, with matching hashes, followed by a FLUSH,
//! and replaying the log must rebuild the final image byte for byte.
//!
//! Invariant: these hold for any interleaving of the guest's requests (the log and the image
//! are updated in one order per sector range), so they do not depend on timing.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};

use e4race_protocol::BlockTag;

#[test]
fn vm_blkrec_log_covers_the_pattern_and_replays_to_the_final_image() {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let blocks = 200u64;
    let o = e4race(
        &[
            "run",
            "smoke",
            "--disk-backend",
            "blkrec",
            "--blocks",
            &blocks.to_string(),
            "--keep-image",
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let dir = run_dir(runs.path());
    let r = report(&dir);
    assert_eq!(r.disk_backend, "blkrec");
    let run_id = smoke_exercise(&r).run_id;

    // Where the file's blocks are on disk, from the host's ext4 reader.
    let img = ext4_reader::Ext4Image::open(dir.join("disk.img")).unwrap();
    let ino = img.lookup("/smoke").unwrap();
    let mut file_sectors = BTreeSet::new();
    for e in img.mapping(ino).unwrap() {
        for i in 0..e.len {
            file_sectors.insert((e.pblk + i) * 8);
        }
    }
    assert_eq!(file_sectors.len() as u64, blocks);

    // Every tagged block's hash, and where the log says each such chunk was written.
    let tag_hashes: BTreeSet<u64> = (0..blocks)
        .map(|lblk| {
            let b = BlockTag {
                run_id,
                file_id: 0,
                round: 0,
                lblk,
                generation: 0,
            }
            .to_block();
            xxhash_rust::xxh3::xxh3_64(&b[..])
        })
        .collect();
    let mut rd = writelog::LogReader::open(dir.join("writes.log")).unwrap();
    let recs = rd.read_all().unwrap();
    assert_eq!(rd.discarded_bytes(), 0);
    let mut tagged_sectors: BTreeMap<u64, u64> = BTreeMap::new(); // sector -> last seq
    let mut hashes_seen = BTreeSet::new();
    for rec in &recs {
        if rec.kind != writelog::Kind::Write {
            continue;
        }
        for (i, h) in rec.block_hashes.iter().enumerate() {
            if tag_hashes.contains(h) {
                tagged_sectors.insert(rec.sector + i as u64 * 8, rec.seq);
                hashes_seen.insert(*h);
            }
        }
    }
    let logged: BTreeSet<u64> = tagged_sectors.keys().copied().collect();
    assert_eq!(
        logged, file_sectors,
        "the log's tagged writes must cover exactly the file's blocks"
    );
    assert_eq!(
        hashes_seen, tag_hashes,
        "every tag's hash appears in the log"
    );
    let last_data = tagged_sectors.values().max().copied().unwrap();
    let synced_mark = recs
        .iter()
        .find(|r| r.kind == writelog::Kind::Mark && r.mark.as_deref() == Some("pattern-synced"))
        .expect("the harness's mark")
        .seq;
    assert!(
        recs.iter()
            .any(|r| r.kind == writelog::Kind::Flush && r.seq > last_data && r.seq < synced_mark),
        "a FLUSH must follow the data before fsync returned"
    );

    // Replay to the end onto a zeroed image: byte-identical to the final image.
    let out = dir.join("replayed.img");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_e4race"))
        .args([
            "replay",
            dir.to_str().unwrap(),
            "--to",
            "end",
            "--out",
            out.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let a = std::fs::read(dir.join("disk.img")).unwrap();
    let b = std::fs::read(&out).unwrap();
    assert!(a == b, "replayed image differs from the final image");
}

/// A real run's log exported to dm-log-writes and replayed by our own reader of that format
/// (following the kernel's dm-log-writes layout) rebuilds the final image byte for byte.
#[test]
fn vm_dm_log_writes_export_of_a_run_replays_to_the_final_image() {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(
        &["run", "smoke", "--blocks", "64", "--keep-image"],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let dir = run_dir(runs.path());
    let dm = dir.join("writes.dmlog");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_e4race"))
        .args(["log", "export", dir.to_str().unwrap(), dm.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let size = std::fs::metadata(dir.join("disk.img")).unwrap().len();
    let out = dir.join("from-dmlog.img");
    std::fs::File::create(&out).unwrap().set_len(size).unwrap();
    writelog::replay_dm_log_writes(&dm, &out, &writelog::LogPosition::End).unwrap();
    assert!(
        std::fs::read(dir.join("disk.img")).unwrap() == std::fs::read(&out).unwrap(),
        "the dm-log-writes replay differs from the final image"
    );
}
