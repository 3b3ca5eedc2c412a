//! The fsync-only workload: tagged files written with pwrite in a seeded order, each fsynced
//! once. Every block is acknowledged by that fsync(2), so it must be on disk once the file
//! system is unmounted.

use std::os::unix::fs::{FileExt, MetadataExt};

use e4race_protocol::{FileRecord, RaceResult, RoundRecord, TAG_BLOCK_SIZE};

use crate::tagged::TaggedFilesParams;
use crate::{io_err, AResult, GuestWorkload};

/// The fsync-only workload (registered in lib.rs).
pub struct FsyncOnly;

impl GuestWorkload for FsyncOnly {
    const NAME: &'static str = "fsync-only";
    type Params = TaggedFilesParams;
    fn run(p: &TaggedFilesParams) -> AResult<RaceResult> {
        let files = (0..p.files)
            .map(|file_id| fsync_file(p, file_id))
            .collect::<AResult<_>>()?;
        Ok(RaceResult {
            rounds: vec![RoundRecord { round: 0, files }],
        })
    }
}

fn fsync_file(p: &TaggedFilesParams, file_id: u32) -> AResult<FileRecord> {
    let rel = format!("f{file_id}");
    let path = format!("{}/{rel}", p.dir);
    let f = crate::race::create(&path)?;
    let mut order = p.order(file_id);
    let mut buf = [0u8; TAG_BLOCK_SIZE];
    for &lblk in &order {
        p.tag(file_id, lblk).encode(&mut buf);
        f.write_all_at(&buf, lblk * TAG_BLOCK_SIZE as u64)
            .map_err(|e| io_err(format!("pwrite {path}"), e))?;
    }
    let synced = f.sync_all().is_ok();
    order.sort_unstable();
    Ok(FileRecord {
        file_id,
        path: rel,
        ino: f.metadata().map(|m| m.ino()).unwrap_or(0),
        prefilled: order,
        synced,
        ..Default::default()
    })
}
