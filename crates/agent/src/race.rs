//! What the race workloads share: rounds of files raced in parallel, and mmap writers that
//! store tag blocks through a shared mapping while a remapping ioctl runs on the same file.

use std::fs::File;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::Barrier;
use std::time::Instant;

use e4race_protocol::{BlockTag, FileRecord, RaceResult, RaceShape, RoundRecord, TAG_BLOCK_SIZE};
use nix::sys::mman::{mmap, msync, munmap, MapFlags, MsFlags, ProtFlags};

use crate::{err, errno_err, io_err, now_ns, AResult};

/// Runs `shape.rounds` rounds (fewer once `shape.duration_s` has passed, 0 = no limit). Each
/// round gets its own directory `r<round>` under `shape.dir` and races `shape.files` files at
/// once, one thread per file: `race_file(round, file_id, "r<round>/f<file_id>", dir)`. `summary` turns a finished
/// round into its progress line, sent after the round's [`Note::RoundDone`].
pub fn rounds(
    shape: &RaceShape,
    progress: &mut dyn FnMut(Note),
    race_file: impl Fn(u32, u32, String, &str) -> AResult<FileRecord> + Sync,
    summary: impl Fn(u32, &[FileRecord]) -> String,
) -> AResult<RaceResult> {
    let (root, files, duration_s) = (&shape.dir, shape.files, shape.duration_s);
    let start = Instant::now();
    let mut out = Vec::new();
    for round in 0..shape.rounds {
        if duration_s > 0 && start.elapsed().as_secs() >= u64::from(duration_s) {
            progress(Note::Line(format!(
                "duration {duration_s} s reached after {round} rounds"
            )));
            break;
        }
        let rel_dir = format!("r{round}");
        let dir = format!("{root}/{rel_dir}");
        std::fs::create_dir_all(&dir).map_err(|e| io_err(format!("mkdir {dir}"), e))?;
        let race_file = &race_file;
        let results: Vec<AResult<FileRecord>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..files)
                .map(|file_id| {
                    let rel = format!("{rel_dir}/f{file_id}");
                    let dir = dir.as_str();
                    s.spawn(move || race_file(round, file_id, rel, dir))
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(err("race thread", "panicked")))
                })
                .collect()
        });
        let files = results.into_iter().collect::<AResult<Vec<_>>>()?;
        let record = RoundRecord { round, files };
        progress(Note::RoundDone(&record));
        progress(Note::Line(summary(round, &record.files)));
        out.push(record);
    }
    Ok(RaceResult { rounds: out })
}

/// Creates (or truncates) `path` for reading and writing.
pub fn create(path: &str) -> AResult<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| io_err(format!("create {path}"), e))
}

/// What a workload tells the host while it runs.
pub enum Note<'a> {
    /// A progress line.
    Line(String),
    /// A round is over (every store of it returned): its record.
    RoundDone(&'a RoundRecord),
}

/// A MAP_SHARED read-write mapping of a whole file, stored into by several writer threads.
pub struct SharedMap {
    ptr: NonNull<std::ffi::c_void>,
    len: usize,
}

// SAFETY: the mapping stays valid until `sync_and_unmap`/drop, which take `self` by value or
// run after every borrow (and so every writer thread in a scope) has ended; writers store to
// disjoint pages.
unsafe impl Send for SharedMap {}
// SAFETY: as for Send: shared references only store to disjoint pages of a live mapping.
unsafe impl Sync for SharedMap {}

impl SharedMap {
    pub fn new(f: &File, path: &str, size: u64) -> AResult<SharedMap> {
        let len = NonZeroUsize::new(size as usize).ok_or_else(|| err("mmap", "empty file"))?;
        // SAFETY: a fresh shared mapping of our own open file, unmapped in sync_and_unmap/drop.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                f,
                0,
            )
        }
        .map_err(|e| errno_err(format!("mmap {path}"), e))?;
        Ok(SharedMap {
            ptr,
            len: len.get(),
        })
    }

    /// Stores one whole block. The first store to a clean or hole page faults
    /// (ext4_page_mkwrite: with nodelalloc a hole gets its block allocated right there).
    pub fn store(&self, lblk: u64, block: &[u8; TAG_BLOCK_SIZE]) {
        let off = lblk as usize * TAG_BLOCK_SIZE;
        assert!(off + TAG_BLOCK_SIZE <= self.len, "store past the mapping");
        // SAFETY: in bounds (checked above); the mapping is alive while `self` is borrowed.
        unsafe {
            std::ptr::copy_nonoverlapping(
                block.as_ptr(),
                (self.ptr.as_ptr() as *mut u8).add(off),
                TAG_BLOCK_SIZE,
            )
        };
    }

    /// msync(MS_SYNC) and munmap: whether every store was written back without error.
    pub fn sync_and_unmap(self) -> bool {
        // SAFETY: we own the mapping; no borrow of `self` is left.
        let synced = unsafe { msync(self.ptr, self.len, MsFlags::MS_SYNC) }.is_ok();
        drop(self);
        synced
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: as in sync_and_unmap; the pointer is not used after this.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

/// One store through the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Store {
    pub lblk: u64,
    pub generation: u32,
    /// CLOCK_MONOTONIC ns just before the store.
    pub t_ns: u64,
}

/// Races `writers` threads storing `plan` (block, generation) through `map` against `race`,
/// which runs on the calling thread. Entry i of the plan goes to writer i % writers, in plan
/// order; everyone starts at one barrier. `gate(lblk)` runs before each store (aimed writers
/// wait there for the mover). Returns every store and what `race` returned; a writer that
/// panicked is an error, since its stores would otherwise silently drop out of the record.
pub fn race_writers<R>(
    map: &SharedMap,
    plan: &[(u64, u32)],
    writers: usize,
    tag: &(dyn Fn(u64, u32) -> BlockTag + Sync),
    gate: &(dyn Fn(u64) + Sync),
    race: impl FnOnce() -> R,
) -> AResult<(Vec<Store>, R)> {
    if writers == 0 {
        // `--writers 0`: the remapping runs alone and nothing is stored.
        return Ok((Vec::new(), race()));
    }
    let barrier = Barrier::new(writers + 1);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..writers)
            .map(|w| {
                let mine: Vec<(u64, u32)> = plan.iter().copied().skip(w).step_by(writers).collect();
                let barrier = &barrier;
                s.spawn(move || {
                    let mut block = [0u8; TAG_BLOCK_SIZE];
                    let mut out = Vec::with_capacity(mine.len());
                    barrier.wait();
                    for (lblk, generation) in mine {
                        gate(lblk);
                        tag(lblk, generation).encode(&mut block);
                        let t_ns = now_ns();
                        map.store(lblk, &block);
                        out.push(Store {
                            lblk,
                            generation,
                            t_ns,
                        });
                    }
                    out
                })
            })
            .collect();
        barrier.wait();
        let r = race();
        let mut stores = Vec::new();
        for h in hs {
            stores.extend(h.join().map_err(|_| err("mmap writer", "panicked"))?);
        }
        Ok((stores, r))
    })
}
