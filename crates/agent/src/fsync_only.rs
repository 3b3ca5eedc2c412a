//! The fsync-only workload: tagged files written with pwrite in a seeded order, each fsynced
//! once. Every block is acknowledged by that fsync(2), so it must be on disk once the file
//! system is unmounted. The smallest workload: the worked example of adding a scenario.

use std::os::unix::fs::FileExt;

use e4race_protocol::{splitmix, BlockTag, FileRecord, RaceResult, RoundRecord, TAG_BLOCK_SIZE};
use serde::{Deserialize, Serialize};

use crate::{io_err, AResult, GuestWorkload};

/// The fsync-only workload (registered in lib.rs).
pub struct FsyncOnly;

/// Parameters of one fsync-only boot: `files` files of `file_blocks` tagged blocks, written
/// with pwrite in a seeded order and fsynced once each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsyncOnlyParams {
    pub dir: String,
    pub run_id: u64,
    pub seed: u64,
    pub files: u32,
    pub file_blocks: u64,
}

impl GuestWorkload for FsyncOnly {
    const NAME: &'static str = "fsync-only";
    type Params = FsyncOnlyParams;
    fn run(p: &FsyncOnlyParams) -> AResult<RaceResult> {
        fsync_only(p)
    }
}

fn fsync_only(p: &FsyncOnlyParams) -> AResult<RaceResult> {
    let mut files = Vec::new();
    for file_id in 0..p.files {
        let rel = format!("f{file_id}");
        let path = format!("{}/{rel}", p.dir);
        let f = crate::race::create(&path)?;
        // A seeded order (Fisher-Yates), so allocation does not just follow the file.
        let mut order: Vec<u64> = (0..p.file_blocks).collect();
        let mut state = splitmix(p.seed ^ u64::from(file_id));
        for i in (1..order.len()).rev() {
            state = splitmix(state);
            order.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut buf = [0u8; TAG_BLOCK_SIZE];
        for &lblk in &order {
            BlockTag {
                run_id: p.run_id,
                file_id,
                round: 0,
                lblk,
                generation: 0,
            }
            .encode(&mut buf);
            f.write_all_at(&buf, lblk * TAG_BLOCK_SIZE as u64)
                .map_err(|e| io_err(format!("pwrite {path}"), e))?;
        }
        let synced = f.sync_all().is_ok();
        let ino = {
            use std::os::unix::fs::MetadataExt;
            f.metadata().map(|m| m.ino()).unwrap_or(0)
        };
        order.sort_unstable();
        files.push(FileRecord {
            file_id,
            path: rel,
            ino,
            prefilled: order,
            synced,
            ..Default::default()
        });
    }
    Ok(RaceResult {
        rounds: vec![RoundRecord { round: 0, files }],
    })
}
