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

use e4race_protocol::{
    splitmix, BlockTag, FileRecord, PostconditionFailure, RaceResult, RoundRecord, TAG_BLOCK_SIZE,
};
use serde::{Deserialize, Serialize};

use crate::migrate::{get_flags, set_flags, EXTENTS_FL};
use crate::{err, io_err, AResult, GuestWorkload};

/// EXT4_NDIR_BLOCKS (fs/ext4/ext4.h): the direct slots of an indirect-mapped inode, the only
/// ones ext4_ind_migrate() fills.
const NDIR_BLOCKS: u64 = 12;

/// When the appends happen relative to `chattr -e`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FlipOrder {
    /// chattr -e on the empty file, append, chattr +e: writeback meets ext4_ext_migrate().
    #[default]
    FlipFirst,
    /// append, chattr -e, chattr +e: ext4_ind_migrate() meets delayed blocks.
    AppendFirst,
}

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
    #[serde(default)]
    pub order: FlipOrder,
    /// Blocks left as holes between two appended blocks (0: one contiguous run).
    #[serde(default)]
    pub gap: u64,
}

impl ExtentsFlipParams {
    /// The file blocks the appends write: `blocks` of them, `gap` apart.
    pub fn lblks(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.blocks).map(|i| i * (self.gap + 1))
    }

    /// Whether ext4_ind_migrate() may convert a file holding exactly these blocks: one
    /// extent (no gap, or a single block), inside the direct slots.
    pub fn fits_indirect(&self) -> bool {
        (self.blocks == 1 || self.gap == 0) && self.lblks().last().is_none_or(|l| l < NDIR_BLOCKS)
    }

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
    /// chattr -e calls that succeeded on a file ext4_ind_migrate() must refuse.
    pub to_indirect_wrongly_ok: u32,
    pub first_wrongly_ok: Option<u32>,
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
                "extents-flip: {}: {} flips, chattr -e failed {}, chattr +e failed {}, chattr -e wrongly succeeded {}",
                rec.path, c.iterations, c.to_indirect_failed, c.to_extents_failed, c.to_indirect_wrongly_ok
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

/// `chattr -e`: clear EXT4_EXTENTS_FL (ext4_ioctl_setflags() runs ext4_ind_migrate()).
/// `must_refuse`: the file holds what indirect mapping cannot, so a success is wrong.
fn to_indirect(
    f: &std::fs::File,
    iteration: u32,
    counts: &mut FlipCounts,
    must_refuse: bool,
) -> AResult<()> {
    let flags = get_flags(f)?;
    if set_flags(f, flags & !EXTENTS_FL).is_err() {
        counts.to_indirect_failed += 1;
    } else if must_refuse {
        counts.to_indirect_wrongly_ok += 1;
        counts.first_wrongly_ok.get_or_insert(iteration);
    }
    Ok(())
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
        if p.order == FlipOrder::FlipFirst {
            to_indirect(&f, iteration, &mut counts, false)?;
        }
        // `echo X >> f`: buffered appends (delayed allocation under the default mount).
        for lblk in p.lblks() {
            p.tag(file_id, lblk, iteration).encode(&mut buf);
            f.write_all_at(&buf, lblk * TAG_BLOCK_SIZE as u64)
                .map_err(|e| io_err(format!("append to {path}"), e))?;
        }
        if p.order == FlipOrder::AppendFirst {
            to_indirect(&f, iteration, &mut counts, !p.fits_indirect())?;
        }
        // Vary the gap between the append and the flip a little, so writeback meets the flip
        // at different points.
        state = splitmix(state);
        for _ in 0..state % 64 {
            std::hint::spin_loop();
        }
        let flags = get_flags(&f)?;
        if flags & EXTENTS_FL == 0 && set_flags(&f, flags | EXTENTS_FL).is_err() {
            counts.to_extents_failed += 1;
        }
        counts.iterations += 1;
        last = Some(f);
    }
    let f = last.ok_or_else(|| err("extents-flip", "no iteration ran"))?;
    let synced = f.sync_all().is_ok();
    let mut postconditions = Vec::new();
    if counts.to_indirect_wrongly_ok > 0 {
        // ext4_ind_migrate() takes only one extent inside the direct slots; it must count
        // delayed blocks too (it allocates them first, ext4_alloc_da_blocks()).
        postconditions.push(PostconditionFailure {
            check: "ind-migrate-refuses-what-indirect-cannot-map".into(),
            detail: format!(
                "chattr -e succeeded {} times (first in flip {}) on a file of {} blocks {} apart, which needs {}",
                counts.to_indirect_wrongly_ok,
                counts.first_wrongly_ok.unwrap_or(0),
                p.blocks,
                p.gap + 1,
                if p.blocks > 1 && p.gap > 0 { "more than one extent" } else { "blocks past the direct slots" }
            ),
        });
    }
    Ok((
        FileRecord {
            file_id,
            path: rel,
            ino: f.metadata().map(|m| m.ino()).unwrap_or(0),
            prefilled: p.lblks().collect(),
            synced,
            postconditions,
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
            order: FlipOrder::FlipFirst,
            gap: 0,
        };
        assert_eq!(p.tag(0, 1, 4).generation, 0);
        assert_eq!(p.tag(0, 1, 0).generation, 4);
        assert_ne!(p.tag(0, 1, 3), p.tag(0, 1, 4));
    }

    #[test]
    fn only_one_extent_inside_the_direct_slots_fits_indirect_mapping() {
        let p = |blocks, gap| ExtentsFlipParams {
            dir: "/mnt".into(),
            run_id: 3,
            seed: 1,
            files: 1,
            iterations: 5,
            blocks,
            sync_loop: false,
            order: FlipOrder::AppendFirst,
            gap,
        };
        assert!(p(1, 0).fits_indirect());
        assert!(p(12, 0).fits_indirect());
        assert!(p(1, 40).fits_indirect());
        assert!(!p(13, 0).fits_indirect());
        assert!(!p(2, 1).fits_indirect());
        assert_eq!(p(3, 1).lblks().collect::<Vec<_>>(), [0, 2, 4]);
    }
}
