//! The defrag-mmap workload: EXT4_IOC_MOVE_EXT (or the real e4defrag) swaps a fragmented
//! file's blocks for a donor's while mmap writers fill holes and overwrite blocks with a new
//! tag generation (docs/facts.md §7).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use e4race_protocol::{
    splitmix, BlockContent, BlockTag, DefragDriver, DefragMmapParams, FileRecord, MoveCall,
    PostconditionFailure, RaceResult, TAG_BLOCK_SIZE,
};

use crate::migrate::fiemap_blocks;
use crate::race::{self, SharedMap};
use crate::{errno_err, io_err, now_ns, AResult};

/// `struct move_extent` (include/uapi/linux/ext4.h / fs/ext4/ext4.h).
#[repr(C)]
#[derive(Debug, Default)]
pub struct MoveExtent {
    pub reserved: u32,
    pub donor_fd: u32,
    pub orig_start: u64,
    pub donor_start: u64,
    pub len: u64,
    pub moved_len: u64,
}

// EXT4_IOC_MOVE_EXT _IOWR('f', 15, struct move_extent)
nix::ioctl_readwrite!(ext4_ioc_move_ext, b'f', 15, MoveExtent);

/// Blocks per allocation chunk when building a fragmented file: chunks of the file alternate
/// on disk with chunks of a filler file that is deleted afterwards.
const CHUNK: u64 = 8;

pub fn defrag_mmap(
    p: &DefragMmapParams,
    progress: &mut dyn FnMut(race::Note),
) -> AResult<RaceResult> {
    race::rounds(
        &p.shape,
        progress,
        |round, file_id, rel, dir| race_one_file(p, round, file_id, rel, dir),
        |round, files| {
            let stores: usize = files
                .iter()
                .map(|f| f.hole_lblks.len() + f.overwrites.len())
                .sum();
            let in_window: usize = files.iter().map(FileRecord::writes_in_move_windows).sum();
            let calls: usize = files.iter().map(|f| f.moves.len()).sum();
            let failed: usize = files
                .iter()
                .flat_map(|f| f.moves.iter())
                .filter(|m| m.error != 0)
                .count();
            let post: usize = files.iter().map(|f| f.postconditions.len()).sum();
            format!(
                "round {round}: {stores} stores, {in_window} inside move windows, {calls} moves ({failed} failed), {post} postcondition failures"
            )
        },
    )
}

fn race_one_file(
    p: &DefragMmapParams,
    round: u32,
    file_id: u32,
    rel: String,
    dir: &str,
) -> AResult<FileRecord> {
    let path = format!("{}/{rel}", p.shape.dir);
    let nblocks = p.shape.file_blocks.max(CHUNK * 2);
    let size = nblocks * TAG_BLOCK_SIZE as u64;
    let tag = |lblk, generation| BlockTag {
        run_id: p.shape.run_id,
        file_id,
        round,
        lblk,
        generation,
    };
    let mix = splitmix(p.shape.seed ^ (u64::from(round) << 32) ^ u64::from(file_id) ^ 0xdef7a6);
    let f = race::create(&path)?;
    let filler_path = format!("{dir}/filler{file_id}");
    let filler = race::create(&filler_path)?;
    let ino = {
        use std::os::unix::fs::MetadataExt;
        f.metadata().map(|m| m.ino()).unwrap_or(0)
    };
    // Interleave allocation: a chunk of the file, synced, then a chunk of filler, synced, so
    // the file's extents are short and defrag has work to do. Every fourth chunk (by the
    // seed) stays a hole for the writers to fill.
    // With `prealloc`, half of the holes are fallocated instead: unwritten extents, which
    // MOVE_EXT swaps without copying once it has re-checked them under the folio lock
    // (move_extent_per_page(), `if (unwritten)`).
    let mut prefilled = Vec::new();
    let mut holes = Vec::new();
    let mut unwritten = Vec::new();
    let mut buf = [0u8; TAG_BLOCK_SIZE];
    let junk = [0x5au8; TAG_BLOCK_SIZE];
    for c in 0..nblocks / CHUNK {
        let pick = splitmix(mix ^ c);
        let hole = c > 0 && pick % 4 == 0;
        if hole && p.prealloc && (pick >> 8) % 2 == 0 {
            nix::fcntl::fallocate(
                f.as_raw_fd(),
                nix::fcntl::FallocateFlags::empty(),
                (c * CHUNK * TAG_BLOCK_SIZE as u64) as i64,
                (CHUNK * TAG_BLOCK_SIZE as u64) as i64,
            )
            .map_err(|e| errno_err(format!("fallocate {path}"), e))?;
            f.sync_data()
                .map_err(|e| io_err(format!("fdatasync {path}"), e))?;
            unwritten.extend(c * CHUNK..(c + 1) * CHUNK);
        }
        for lblk in c * CHUNK..(c + 1) * CHUNK {
            if hole {
                holes.push(lblk);
                continue;
            }
            tag(lblk, 0).encode(&mut buf);
            f.write_all_at(&buf, lblk * TAG_BLOCK_SIZE as u64)
                .map_err(|e| io_err(format!("pwrite {path}"), e))?;
            prefilled.push(lblk);
        }
        if !hole {
            f.sync_data()
                .map_err(|e| io_err(format!("fdatasync {path}"), e))?;
        }
        for i in 0..CHUNK {
            filler
                .write_all_at(&junk, (c * CHUNK + i) * TAG_BLOCK_SIZE as u64)
                .map_err(|e| io_err(format!("pwrite {filler_path}"), e))?;
        }
        filler
            .sync_data()
            .map_err(|e| io_err(format!("fdatasync {filler_path}"), e))?;
    }
    f.set_len(size)
        .map_err(|e| io_err(format!("ftruncate {path}"), e))?;
    f.sync_all()
        .map_err(|e| io_err(format!("fsync {path}"), e))?;
    drop(filler);
    let _ = std::fs::remove_file(&filler_path);
    let (_, extents_before) = fiemap_blocks(&f, size)?;

    // What the writers store: every hole (generation 0) and half of the data blocks
    // (generation 1), in one random order.
    let mut state = mix;
    let mut plan: Vec<(u64, u32)> = holes.iter().map(|&l| (l, 0)).collect();
    for &l in &prefilled {
        state = splitmix(state);
        if state & 1 == 1 {
            plan.push((l, 1));
        }
    }
    for i in (1..plan.len()).rev() {
        state = splitmix(state);
        plan.swap(i, (state % (i as u64 + 1)) as usize);
    }
    // Aimed stores follow the mover: ascending, each one released only once the current
    // MOVE_EXT call covers its block, so it lands in the range being moved, just ahead of
    // the page the kernel is working on.
    let aim = p.aim && p.driver == DefragDriver::MoveExt;
    if aim {
        plan.sort_unstable();
    }
    let step = p.move_blocks.max(1);
    // First block of the MOVE_EXT call in progress (u64::MAX once the moves are done).
    let cursor = AtomicU64::new(0);

    let donor_path = format!("{dir}/donor{file_id}");
    let donor = race::create(&donor_path)?;
    if p.driver == DefragDriver::MoveExt {
        // The donor gets preallocated (unwritten) extents, as e4defrag does (catalog §3).
        nix::fcntl::fallocate(
            donor.as_raw_fd(),
            nix::fcntl::FallocateFlags::empty(),
            0,
            size as i64,
        )
        .map_err(|e| errno_err(format!("fallocate {donor_path}"), e))?;
    }

    let map = SharedMap::new(&f, &path, size)?;
    let moving = AtomicBool::new(true);
    let gate = |lblk: u64| {
        while aim && lblk >= cursor.load(Ordering::Acquire).saturating_add(step) {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    };
    let (stores, moves) =
        race::race_writers(&map, &plan, p.shape.writers as usize, &tag, &gate, || {
            std::thread::scope(|s| {
                if p.flush_ms > 0 {
                    let (f, moving) = (&f, &moving);
                    s.spawn(move || {
                        // Start writeback without waiting for it (SYNC_FILE_RANGE_WRITE), so the
                        // writers' pages go to disk, and unwritten extents convert at I/O
                        // completion (ext4_end_io_rsv_work), while the moves run.
                        while moving.load(Ordering::Relaxed) {
                            // SAFETY: plain syscall on an open fd; a failure only means less
                            // writeback.
                            let _ = unsafe {
                                libc::sync_file_range(
                                    f.as_raw_fd(),
                                    0,
                                    0,
                                    libc::SYNC_FILE_RANGE_WRITE,
                                )
                            };
                            std::thread::sleep(std::time::Duration::from_millis(u64::from(
                                p.flush_ms,
                            )));
                        }
                    });
                }
                let moves = match p.driver {
                    DefragDriver::MoveExt => move_ranges(&f, &donor, nblocks, step, &cursor),
                    DefragDriver::E4defrag => vec![run_e4defrag(&path, nblocks)],
                };
                moving.store(false, Ordering::Relaxed);
                // Releases aimed writers still waiting for a range (none should be left).
                cursor.store(u64::MAX, Ordering::Release);
                moves
            })
        })?;
    let synced = map.sync_and_unmap() && f.sync_all().is_ok();
    drop(donor);
    let _ = std::fs::remove_file(&donor_path);

    let (fills, overwrites): (Vec<&race::Store>, Vec<&race::Store>) =
        stores.iter().partition(|s| s.generation == 0);
    let mut r = FileRecord {
        file_id,
        path: rel,
        ino,
        prefilled,
        hole_lblks: fills.iter().map(|s| s.lblk).collect(),
        hole_t_ns: fills.iter().map(|s| s.t_ns).collect(),
        synced,
        migration: None,
        after: Default::default(),
        postconditions: Vec::new(),
        overwrites: overwrites.iter().map(|s| s.lblk).collect(),
        overwrite_t_ns: overwrites.iter().map(|s| s.t_ns).collect(),
        moves,
        extents_before,
        unwritten_lblks: unwritten,
    };
    check_postconditions(&f, size, &tag, p.driver == DefragDriver::MoveExt, &mut r)?;
    Ok(r)
}

/// EXT4_IOC_MOVE_EXT over the whole file, `step` blocks per call, donor offset = file offset
/// (the kernel wants both starts at the same offset within a page, mext_check_arguments()).
fn move_ranges(
    f: &File,
    donor: &File,
    nblocks: u64,
    step: u64,
    cursor: &AtomicU64,
) -> Vec<MoveCall> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < nblocks {
        let len = step.min(nblocks - start);
        cursor.store(start, Ordering::Release);
        let mut me = MoveExtent {
            donor_fd: donor.as_raw_fd() as u32,
            orig_start: start,
            donor_start: start,
            len,
            ..Default::default()
        };
        let t0 = now_ns();
        // SAFETY: `me` is a valid struct move_extent that outlives the call.
        let r = unsafe { ext4_ioc_move_ext(f.as_raw_fd(), &mut me) };
        out.push(MoveCall {
            start_ns: t0,
            end_ns: now_ns(),
            orig_start: start,
            donor_start: start,
            len,
            moved_len: me.moved_len,
            error: r.err().map(|e| e as i32).unwrap_or(0),
            e4defrag: false,
        });
        start += len;
    }
    out
}

fn run_e4defrag(path: &str, nblocks: u64) -> MoveCall {
    let t0 = now_ns();
    let status = std::process::Command::new("/sbin/e4defrag")
        .arg(path)
        .output()
        .map(|o| o.status.code().unwrap_or(128))
        .unwrap_or(127);
    MoveCall {
        start_ns: t0,
        end_ns: now_ns(),
        len: nblocks,
        error: status,
        e4defrag: true,
        ..Default::default()
    }
}

/// EXT4_IOC_MOVE_EXT's `moved_len` against what the file held around each successful call.
/// `mapped[lblk]` is the file's FIEMAP after the round.
///
/// ext4_move_extents() adds to moved_len what each move_extent_per_page() swapped, and skips
/// holes (fs/ext4/move_extent.c, since 55583e899a53). Blocks that held data before the race
/// stay mapped, and writers only fill holes (nothing unmaps a block), so a successful call
/// reports at least the blocks mapped before the race, and at most those mapped after it less
/// the holes whose first store began after the call returned (the store's page fault allocates
/// the block, ext4_page_mkwrite(), so those were holes for the whole call).
fn check_moved_len(r: &FileRecord, mapped: &[bool]) -> Vec<PostconditionFailure> {
    let prefilled: std::collections::BTreeSet<u64> = r.prefilled.iter().copied().collect();
    // Fallocated blocks are unwritten extents, mapped all along: only real holes count.
    let unwritten: std::collections::BTreeSet<u64> = r.unwritten_lblks.iter().copied().collect();
    let mut first_fill: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    for (&lblk, &t) in r.hole_lblks.iter().zip(&r.hole_t_ns) {
        if unwritten.contains(&lblk) {
            continue;
        }
        let e = first_fill.entry(lblk).or_insert(t);
        *e = (*e).min(t);
    }
    let mut fails = Vec::new();
    for m in r.moves.iter().filter(|m| m.error == 0 && !m.e4defrag) {
        let range = m.orig_start..m.orig_start.saturating_add(m.len);
        let mapped_before = prefilled.range(range.clone()).count() as u64;
        let mapped_during = range
            .clone()
            .filter(|&b| mapped.get(b as usize).copied().unwrap_or(false))
            .filter(|b| first_fill.get(b).is_none_or(|&t| t <= m.end_ns))
            .count() as u64;
        if m.moved_len > m.len || m.moved_len < mapped_before {
            fails.push(PostconditionFailure {
                check: "move-ext-moved-len-within-bounds".into(),
                detail: format!(
                    "range {}+{} returned 0 with moved_len {}, but {} of its blocks held data before the race",
                    m.orig_start, m.len, m.moved_len, mapped_before
                ),
            });
        } else if m.moved_len > mapped_during {
            fails.push(PostconditionFailure {
                check: "move-ext-moved-len-counts-only-mapped-blocks".into(),
                detail: format!(
                    "range {}+{} returned 0 with moved_len {}, but at most {} of its blocks were mapped while it ran (holes counted as moved)",
                    m.orig_start, m.len, m.moved_len, mapped_during
                ),
            });
        }
    }
    fails
}

fn check_postconditions(
    f: &File,
    size: u64,
    tag: &dyn Fn(u64, u32) -> BlockTag,
    move_ext: bool,
    r: &mut FileRecord,
) -> AResult<()> {
    let mut fails = Vec::new();
    let (ranges, count) = fiemap_blocks(f, size)?;
    r.after.flags = crate::migrate::get_flags(f).map(|v| v as u32).unwrap_or(0);
    r.after.extents = count;
    let mut mapped = vec![false; (size / TAG_BLOCK_SIZE as u64) as usize];
    for (s, l) in ranges {
        for b in s..(s + l).min(mapped.len() as u64) {
            mapped[b as usize] = true;
        }
    }
    if move_ext {
        fails.extend(check_moved_len(r, &mapped));
    }
    let expected = r.acknowledged_generations();
    if r.synced {
        let unmapped: Vec<u64> = expected
            .keys()
            .copied()
            .filter(|&b| !mapped.get(b as usize).copied().unwrap_or(false))
            .collect();
        if !unmapped.is_empty() {
            fails.push(PostconditionFailure {
                check: "fiemap-maps-every-acknowledged-block".into(),
                detail: format!(
                    "{} synced blocks are holes in FIEMAP, first {:?}",
                    unmapped.len(),
                    &unmapped[..unmapped.len().min(8)]
                ),
            });
        }
    }
    let mut bad = Vec::new();
    let mut buf = [0u8; TAG_BLOCK_SIZE];
    for (&lblk, &generation) in &expected {
        let ok = f
            .read_exact_at(&mut buf, lblk * TAG_BLOCK_SIZE as u64)
            .is_ok()
            && BlockTag::decode(&buf) == BlockContent::Tagged(tag(lblk, generation));
        if !ok {
            bad.push(lblk);
        }
    }
    r.after.content_ok = bad.is_empty();
    if !bad.is_empty() {
        fails.push(PostconditionFailure {
            check: "content-reads-back-after-move".into(),
            detail: format!(
                "{} blocks read back wrong, first {:?}",
                bad.len(),
                &bad[..bad.len().min(8)]
            ),
        });
    }
    r.postconditions = fails;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(orig_start: u64, len: u64, moved_len: u64, end_ns: u64) -> MoveCall {
        MoveCall {
            start_ns: end_ns.saturating_sub(10),
            end_ns,
            orig_start,
            donor_start: orig_start,
            len,
            moved_len,
            ..Default::default()
        }
    }

    /// Blocks 0..8, data in the even ones; holes 1 and 3 filled at t=50, 5 and 7 at t=500.
    fn record(moves: Vec<MoveCall>) -> (FileRecord, Vec<bool>) {
        let r = FileRecord {
            prefilled: vec![0, 2, 4, 6],
            hole_lblks: vec![1, 3, 5, 7],
            hole_t_ns: vec![50, 50, 500, 500],
            moves,
            ..Default::default()
        };
        (r, vec![true; 8])
    }

    fn checks(r: &FileRecord, mapped: &[bool]) -> Vec<String> {
        check_moved_len(r, mapped)
            .into_iter()
            .map(|f| f.check)
            .collect()
    }

    #[test]
    fn moved_len_between_data_before_and_blocks_mapped_during_the_call_passes() {
        // Ends at t=100: 0..8 had 4 data blocks and 2 filled holes, so 4..=6 is right.
        for moved in 4..=6 {
            let (r, mapped) = record(vec![call(0, 8, moved, 100)]);
            assert!(checks(&r, &mapped).is_empty(), "moved_len {moved}");
        }
        // Ends at t=1000: every hole was filled while it ran.
        let (r, mapped) = record(vec![call(0, 8, 8, 1000)]);
        assert!(checks(&r, &mapped).is_empty());
    }

    #[test]
    fn holes_counted_as_moved_fail_the_mapped_bound() {
        // The reverted 55583e899a53 reports the whole range: 8 > 6 mapped while it ran.
        let (r, mapped) = record(vec![call(0, 8, 8, 100)]);
        assert_eq!(
            checks(&r, &mapped),
            ["move-ext-moved-len-counts-only-mapped-blocks"]
        );
        // A hole never filled is unmapped after the round, and never counts.
        let (r, mut mapped) = record(vec![call(0, 8, 8, 1000)]);
        mapped[7] = false;
        assert_eq!(
            checks(&r, &mapped),
            ["move-ext-moved-len-counts-only-mapped-blocks"]
        );
    }

    #[test]
    fn moved_len_below_data_or_above_the_range_fails_the_bounds() {
        for moved in [0, 3, 9] {
            let (r, mapped) = record(vec![call(0, 8, moved, 100)]);
            assert_eq!(
                checks(&r, &mapped),
                ["move-ext-moved-len-within-bounds"],
                "moved_len {moved}"
            );
        }
    }

    /// A fallocated block is an unwritten extent: mapped during the call even if its first
    /// store came later (what defrag-mmap's default `--prealloc` makes).
    #[test]
    fn fallocated_blocks_count_as_mapped_whenever_they_were_stored() {
        let (mut r, mapped) = record(vec![call(0, 8, 8, 100)]);
        r.unwritten_lblks = vec![5, 7];
        assert!(checks(&r, &mapped).is_empty());
        r.unwritten_lblks = vec![5];
        assert_eq!(
            checks(&r, &mapped),
            ["move-ext-moved-len-counts-only-mapped-blocks"]
        );
    }

    #[test]
    fn failed_calls_and_e4defrag_are_not_checked() {
        let mut failed = call(0, 8, 0, 100);
        failed.error = 61; // ENODATA
        let defrag = MoveCall {
            e4defrag: true,
            len: 8,
            ..Default::default()
        };
        let (r, mapped) = record(vec![failed, defrag]);
        assert!(checks(&r, &mapped).is_empty());
    }
}
