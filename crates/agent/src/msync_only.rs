//! The msync-only workload: each file is sized with ftruncate (one hole end to end), mapped
//! MAP_SHARED, and every block stored through the mapping in a seeded order, so each store
//! faults its page in (ext4_page_mkwrite reserves or, with nodelalloc, allocates its block).
//! Then msync(MS_SYNC) and fsync: every stored block is acknowledged. No race: the baseline
//! that a shared mapping's writeback is durable, which every mmap race relies on.

use std::os::unix::fs::MetadataExt;

use e4race_protocol::{FileRecord, RaceResult, RoundRecord, TAG_BLOCK_SIZE};

use crate::race::SharedMap;
use crate::tagged::TaggedFilesParams;
use crate::{io_err, now_ns, AResult, GuestWorkload};

/// The msync-only workload (registered in lib.rs).
pub struct MsyncOnly;

impl GuestWorkload for MsyncOnly {
    const NAME: &'static str = "msync-only";
    type Params = TaggedFilesParams;
    fn run(p: &TaggedFilesParams) -> AResult<RaceResult> {
        let files = (0..p.files)
            .map(|file_id| msync_file(p, file_id))
            .collect::<AResult<_>>()?;
        Ok(RaceResult {
            rounds: vec![RoundRecord { round: 0, files }],
        })
    }
}

fn msync_file(p: &TaggedFilesParams, file_id: u32) -> AResult<FileRecord> {
    let rel = format!("m{file_id}");
    let path = format!("{}/{rel}", p.dir);
    let f = crate::race::create(&path)?;
    let size = p.file_blocks * TAG_BLOCK_SIZE as u64;
    f.set_len(size)
        .map_err(|e| io_err(format!("ftruncate {path}"), e))?;
    let map = SharedMap::new(&f, &path, size)?;
    let order = p.order(file_id);
    let mut block = [0u8; TAG_BLOCK_SIZE];
    let mut t_ns = Vec::with_capacity(order.len());
    for &lblk in &order {
        p.tag(file_id, lblk).encode(&mut block);
        t_ns.push(now_ns());
        map.store(lblk, &block);
    }
    // msync(MS_SYNC) writes the dirty pages back; fsync then commits their allocation.
    let synced = map.sync_and_unmap() && f.sync_all().is_ok();
    Ok(FileRecord {
        file_id,
        path: rel,
        ino: f.metadata().map(|m| m.ino()).unwrap_or(0),
        hole_lblks: order,
        hole_t_ns: t_ns,
        synced,
        ..Default::default()
    })
}
