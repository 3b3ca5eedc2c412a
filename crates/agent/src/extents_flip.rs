//! The extents-flip workload: each file is recreated, made indirect-mapped (`chattr -e`:
//! FS_IOC_SETFLAGS without EXT4_EXTENTS_FL, ext4_ind_migrate()), appended to and made
//! extent-mapped again (`chattr +e`: ext4_ext_migrate()), over and over, while one thread
//! calls sync(2) in a loop. The shape of the reproducer in cb85f4d23f79 ("ext4: fix race
//! between writepages and enabling EXT4_EXTENTS_FL"): writeback that starts on the
//! indirect-mapped file and maps its delayed blocks after the flip.
//!
//! The last file of each slot stays: its blocks must read back with the last tags.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicBool, Ordering};

use e4race_protocol::{splitmix, BlockTag, FileRecord, RaceResult, RoundRecord, TAG_BLOCK_SIZE};
use serde::{Deserialize, Serialize};

use crate::migrate::{get_flags, set_flags};
use crate::{err, io_err, AResult, GuestWorkload};

/// EXT4_EXTENTS_FL (include/uapi/linux/fs.h FS_EXTENT_FL).
const EXTENTS_FL: libc::c_long = 0x0008_0000;

/// `files` slots under `dir`, `iterations` flips each, `blocks` appended per flip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtentsFlipParams {
    pub dir: String,
    pub run_id: u64,
    pub seed: u64,
    pub files: u32,
    pub iterations: u32,
    pub blocks: u64,
    /// Run sync(2) in a loop while the files flip.
    pub sync_loop: bool,
}

impl ExtentsFlipParams {
    /// The tag of block `lblk` written in `iteration`: the last iteration writes
    /// generation 0, the one the host expects; older files' blocks carry higher generations,
    /// so one that shows up in the last file reads as stale.
    pub fn tag(&self, file_id: u32, lblk: u64, iteration: u32) -> BlockTag {
        BlockTag {
            run_id: self.run_id,
            file_id,
            round: 0,
            lblk,
            generation: self.iterations - 1 - iteration,
        }
    }
}

/// What one slot's flips did, reported on the console.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlipCounts {
    pub iterations: u32,
    pub to_indirect_failed: u32,
    pub to_extents_failed: u32,
}

/// The extents-flip workload (registered in lib.rs).
pub struct ExtentsFlip;

impl GuestWorkload for ExtentsFlip {
    const NAME: &'static str = "extents-flip";
    type Params = ExtentsFlipParams;
    fn run(p: &ExtentsFlipParams) -> AResult<RaceResult> {
        if p.iterations == 0 || p.blocks == 0 {
            return Err(err(
                "extents-flip",
                "iterations and blocks must be at least 1",
            ));
        }
        let done = AtomicBool::new(false);
        let files = std::thread::scope(|s| {
            let syncer = p.sync_loop.then(|| {
                s.spawn(|| {
                    let mut n = 0u64;
                    while !done.load(Ordering::Acquire) {
                        nix::unistd::sync();
                        n += 1;
                    }
                    n
                })
            });
            let hs: Vec<_> = (0..p.files)
                .map(|file_id| s.spawn(move || flip_file(p, file_id)))
                .collect();
            let out: Vec<AResult<(FileRecord, FlipCounts)>> = hs
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(err("extents-flip", "a flipping thread panicked")))
                })
                .collect();
            done.store(true, Ordering::Release);
            let syncs = syncer.and_then(|h| h.join().ok()).unwrap_or(0);
            crate::console(&format!("extents-flip: {syncs} sync(2) calls"));
            out
        });
        let mut records = Vec::new();
        for r in files {
            let (rec, c) = r?;
            crate::console(&format!(
                "extents-flip: {}: {} flips, chattr -e failed {}, chattr +e failed {}",
                rec.path, c.iterations, c.to_indirect_failed, c.to_extents_failed
            ));
            records.push(rec);
        }
        Ok(RaceResult {
            rounds: vec![RoundRecord {
                round: 0,
                files: records,
            }],
        })
    }
}

fn flip_file(p: &ExtentsFlipParams, file_id: u32) -> AResult<(FileRecord, FlipCounts)> {
    let rel = format!("f{file_id}");
    let path = format!("{}/{rel}", p.dir);
    let mut counts = FlipCounts::default();
    let mut buf = [0u8; TAG_BLOCK_SIZE];
    let mut state = splitmix(p.seed ^ u64::from(file_id));
    let mut last = None;
    for iteration in 0..p.iterations {
        // `rm -f f; touch f`: a new, empty, extent-mapped inode each time.
        let _ = std::fs::remove_file(&path);
        let f = crate::race::create(&path)?;
        let flags = get_flags(&f)?;
        if set_flags(&f, flags & !EXTENTS_FL).is_err() {
            counts.to_indirect_failed += 1;
        }
        // `echo X >> f`: buffered appends (delayed allocation under the default mount).
        for lblk in 0..p.blocks {
            p.tag(file_id, lblk, iteration).encode(&mut buf);
            f.write_all_at(&buf, lblk * TAG_BLOCK_SIZE as u64)
                .map_err(|e| io_err(format!("append to {path}"), e))?;
        }
        // Vary the gap between the append and the flip a little, so writeback meets the flip
        // at different points.
        state = splitmix(state);
        for _ in 0..state % 64 {
            std::hint::spin_loop();
        }
        let flags = get_flags(&f)?;
        if set_flags(&f, flags | EXTENTS_FL).is_err() {
            counts.to_extents_failed += 1;
        }
        counts.iterations += 1;
        last = Some(f);
    }
    let f = last.ok_or_else(|| err("extents-flip", "no iteration ran"))?;
    let synced = f.sync_all().is_ok();
    Ok((
        FileRecord {
            file_id,
            path: rel,
            ino: f.metadata().map(|m| m.ino()).unwrap_or(0),
            prefilled: (0..p.blocks).collect(),
            synced,
            ..Default::default()
        },
        counts,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_flip_writes_the_generation_the_host_expects() {
        let p = ExtentsFlipParams {
            dir: "/mnt".into(),
            run_id: 3,
            seed: 1,
            files: 1,
            iterations: 5,
            blocks: 2,
            sync_loop: true,
        };
        assert_eq!(p.tag(0, 1, 4).generation, 0);
        assert_eq!(p.tag(0, 1, 0).generation, 4);
        assert_ne!(p.tag(0, 1, 3), p.tag(0, 1, 4));
    }
}
