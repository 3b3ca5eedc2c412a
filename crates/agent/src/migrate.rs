//! The race workloads.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use e4race_protocol::{
    splitmix, BlockContent, BlockTag, FileRecord, MigrateCall, MigrateDirection, MigrateDriver,
    MigrateMmapParams, PostconditionFailure, RaceResult, EXT4_NDIR_BLOCKS, TAG_BLOCK_SIZE,
};

use crate::race::{self, SharedMap};
use crate::{err, errno_err, io_err, now_ns, AResult};

/// EXT4_EXTENTS_FL (include/uapi/linux/fs.h FS_EXTENT_FL): the inode is extent-mapped.
pub const EXTENTS_FL: libc::c_long = 0x0008_0000;

// fs/ext4/ext4.h: #define EXT4_IOC_MIGRATE _IO('f', 9)
nix::ioctl_none!(ext4_ioc_migrate, b'f', 9);
// include/uapi/linux/fs.h: FS_IOC_GETFLAGS _IOR('f', 1, long), FS_IOC_SETFLAGS _IOW('f', 2, long)
nix::ioctl_read!(fs_ioc_getflags, b'f', 1, libc::c_long);
nix::ioctl_write_ptr!(fs_ioc_setflags, b'f', 2, libc::c_long);

pub fn get_flags(f: &File) -> AResult<libc::c_long> {
    let mut v: libc::c_long = 0;
    // SAFETY: the ioctl writes at most one int into `v`, which outlives the call.
    unsafe { fs_ioc_getflags(f.as_raw_fd(), &mut v) }
        .map_err(|e| errno_err("FS_IOC_GETFLAGS", e))?;
    Ok(v & 0xffff_ffff)
}

pub fn set_flags(f: &File, v: libc::c_long) -> AResult<()> {
    // SAFETY: the ioctl reads one int from `v`, which outlives the call.
    unsafe { fs_ioc_setflags(f.as_raw_fd(), &v) }.map_err(|e| errno_err("FS_IOC_SETFLAGS", e))?;
    Ok(())
}

/// The mapped logical blocks (4 KiB) of a file, from FS_IOC_FIEMAP, and the extent count.
pub fn fiemap_blocks(f: &File, size: u64) -> AResult<(Vec<(u64, u64)>, u32)> {
    // struct fiemap (include/uapi/linux/fiemap.h): 32-byte header + 56-byte extents.
    const HDR: usize = 32;
    const EXT: usize = 56;
    const N: usize = 512;
    const FIEMAP_EXTENT_LAST: u32 = 1;
    const FIEMAP_FLAG_SYNC: u32 = 1;
    let code = nix::request_code_readwrite!(b'f', 11, HDR);
    let mut ranges = Vec::new();
    let mut count = 0u32;
    let mut start = 0u64;
    loop {
        let mut buf = vec![0u64; (HDR + N * EXT) / 8];
        {
            // SAFETY: viewing a u64 buffer as bytes; alignment is stricter than needed.
            let b = unsafe {
                std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u8, buf.len() * 8)
            };
            b[0..8].copy_from_slice(&start.to_le_bytes());
            b[8..16].copy_from_slice(&(size.saturating_sub(start)).to_le_bytes());
            b[16..20].copy_from_slice(&FIEMAP_FLAG_SYNC.to_le_bytes());
            b[24..28].copy_from_slice(&(N as u32).to_le_bytes());
        }
        // SAFETY: the buffer holds the header and room for N extents, as fm_extent_count says.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), code as _, buf.as_mut_ptr()) };
        if r < 0 {
            return Err(errno_err("FS_IOC_FIEMAP", nix::errno::Errno::last()));
        }
        // SAFETY: as above.
        let b = unsafe { std::slice::from_raw_parts(buf.as_ptr() as *const u8, buf.len() * 8) };
        let mapped = u32::from_le_bytes([b[20], b[21], b[22], b[23]]) as usize;
        if mapped == 0 {
            break;
        }
        let mut last = false;
        for i in 0..mapped.min(N) {
            let e = &b[HDR + i * EXT..HDR + (i + 1) * EXT];
            let le = |o: usize| u64::from_le_bytes(e[o..o + 8].try_into().unwrap_or([0; 8]));
            let (logical, len) = (le(0), le(16));
            let flags = u32::from_le_bytes([e[40], e[41], e[42], e[43]]);
            ranges.push((
                logical / TAG_BLOCK_SIZE as u64,
                len.div_ceil(TAG_BLOCK_SIZE as u64),
            ));
            count += 1;
            start = logical + len;
            last |= flags & FIEMAP_EXTENT_LAST != 0;
        }
        if last || start >= size {
            break;
        }
    }
    Ok((ranges, count))
}

/// Runs every round, on fresh files each time.
pub fn migrate_mmap(
    p: &MigrateMmapParams,
    progress: &mut dyn FnMut(race::Note),
) -> AResult<RaceResult> {
    race::rounds(
        &p.shape,
        progress,
        |round, file_id, rel, _dir| race_one_file(p, round, file_id, rel),
        |round, files| {
            let in_window: usize = files.iter().map(FileRecord::writes_in_window).sum();
            let writes: usize = files.iter().map(|f| f.hole_lblks.len()).sum();
            let ok = files
                .iter()
                .filter(|f| f.migration.as_ref().is_some_and(|m| m.error == 0))
                .count();
            let post: usize = files.iter().map(|f| f.postconditions.len()).sum();
            format!(
                "round {round}: {writes} hole writes, {in_window} inside migration windows, {ok}/{} migrations succeeded, {post} postcondition failures",
                files.len()
            )
        },
    )
}

fn race_one_file(
    p: &MigrateMmapParams,
    round: u32,
    file_id: u32,
    rel: String,
) -> AResult<FileRecord> {
    let path = format!("{}/{rel}", p.shape.dir);
    let direction = p.direction.for_file(file_id);
    let to_indirect = direction == MigrateDirection::ToIndirect;
    // ext4_ind_migrate() gives up (EOPNOTSUPP) on a file that spans more than the 12 direct
    // pointers, so files going that way are 12 blocks (EXT4_NDIR_BLOCKS).
    let nblocks = if to_indirect {
        EXT4_NDIR_BLOCKS
    } else {
        p.shape.file_blocks.max(2)
    };
    let size = nblocks * TAG_BLOCK_SIZE as u64;
    let f = race::create(&path)?;
    if !to_indirect {
        // A fresh empty file can be turned back into an indirect-mapped one by clearing
        // EXT4_EXTENTS_FL (ext4_ioctl_setflags → ext4_ind_migrate()), docs/facts.md §4.
        let flags = get_flags(&f)?;
        set_flags(&f, flags & !EXTENTS_FL)?;
        if get_flags(&f)? & EXTENTS_FL != 0 {
            return Err(err(
                format!("making {path} indirect-mapped"),
                "EXT4_EXTENTS_FL is still set after FS_IOC_SETFLAGS",
            ));
        }
    }
    let ino = {
        use std::os::unix::fs::MetadataExt;
        f.metadata().map(|m| m.ino()).unwrap_or(0)
    };
    let tag = |lblk| BlockTag {
        run_id: p.shape.run_id,
        file_id,
        round,
        lblk,
        generation: 0,
    };
    let mix = splitmix(p.shape.seed ^ (u64::from(round) << 32) ^ u64::from(file_id));
    let prefill = |lblk: u64| {
        if to_indirect {
            indirect_run(mix).contains(&lblk)
        } else {
            !p.hole_pattern.is_hole(lblk, mix)
        }
    };
    let mut prefilled = Vec::new();
    let mut holes = Vec::new();
    let mut buf = [0u8; TAG_BLOCK_SIZE];
    for lblk in 0..nblocks {
        if !prefill(lblk) {
            holes.push(lblk);
        } else {
            tag(lblk).encode(&mut buf);
            f.write_all_at(&buf, lblk * TAG_BLOCK_SIZE as u64)
                .map_err(|e| io_err(format!("pwrite {path}"), e))?;
            prefilled.push(lblk);
        }
    }
    f.set_len(size)
        .map_err(|e| io_err(format!("ftruncate {path}"), e))?;
    f.sync_all()
        .map_err(|e| io_err(format!("fsync {path}"), e))?;
    // Random store order from the seed.
    crate::tagged::seeded_shuffle(&mut holes, mix);
    let flags_before = get_flags(&f)? as u32;

    let map = SharedMap::new(&f, &path, size)?;
    let plan: Vec<(u64, u32)> = holes.iter().map(|&l| (l, 0)).collect();
    let (stores, migrate) = race::race_writers(
        &map,
        &plan,
        p.shape.writers as usize,
        &|lblk, _| tag(lblk),
        &|_| {},
        || {
            with_commits(&f, p.commit_ms, || {
                migrate_once(&f, &path, p.driver, direction)
            })
        },
    )?;
    let synced = map.sync_and_unmap() && f.sync_all().is_ok();
    let (start_ns, end_ns, error, return_value) = migrate;

    let mut record = FileRecord {
        file_id,
        path: rel,
        ino,
        prefilled,
        hole_lblks: stores.iter().map(|s| s.lblk).collect(),
        hole_t_ns: stores.iter().map(|s| s.t_ns).collect(),
        synced,
        migration: Some(MigrateCall {
            start_ns,
            end_ns,
            error,
            return_value,
            flags_before,
            direction,
        }),
        after: Default::default(),
        postconditions: Vec::new(),
        overwrites: Vec::new(),
        overwrite_t_ns: Vec::new(),
        moves: Vec::new(),
        extents_before: 0,
        unwritten_lblks: Vec::new(),
    };
    check_postconditions(&f, size, tag, &mut record)?;
    Ok(record)
}

/// The prefilled run of a file that goes to indirect: one extent with at least one hole
/// before it (what 8974fec7d72e "ext4: correctly migrate a file with a hole at the
/// beginning" fixed in ext4_ind_migrate()) and, most of the time, holes after it, all
/// below EXT4_NDIR_BLOCKS.
fn indirect_run(mix: u64) -> std::ops::Range<u64> {
    let lead = 1 + mix % 4;
    let len = 2 + (mix >> 8) % (EXT4_NDIR_BLOCKS - lead - 1);
    lead..(lead + len).min(EXT4_NDIR_BLOCKS)
}

/// Runs `migrate` while, with `commit_ms` > 0, a thread calls syncfs(2) on `f`'s file system
/// every `commit_ms` ms: each call makes jbd2 commit the running transaction
/// (ext4_sync_fs → jbd2_journal_start_commit), so the migration's handle must restart
/// (ext4_journal_ensure_credits) and its half-done state reaches the journal.
fn with_commits<R>(f: &File, commit_ms: u32, migrate: impl FnOnce() -> R) -> R {
    if commit_ms == 0 {
        return migrate();
    }
    let running = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|s| {
        s.spawn(|| {
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: a plain syscall on an open fd; a failure only means fewer commits.
                let _ = unsafe { libc::syncfs(f.as_raw_fd()) };
                std::thread::sleep(std::time::Duration::from_millis(u64::from(commit_ms)));
            }
        });
        let r = migrate();
        running.store(false, std::sync::atomic::Ordering::Relaxed);
        r
    })
}

/// EXT4_IOC_MIGRATE or `chattr +e` (to extents), FS_IOC_SETFLAGS without EXT4_EXTENTS_FL or
/// `chattr -e` (to indirect): returns (start ns, end ns, errno or exit status, the ioctl's
/// non-negative return value).
fn migrate_once(
    f: &File,
    path: &str,
    driver: MigrateDriver,
    direction: MigrateDirection,
) -> (u64, u64, i32, i64) {
    let to_indirect = direction == MigrateDirection::ToIndirect;
    let start = now_ns();
    let (error, ret) = match driver {
        MigrateDriver::Ioctl if to_indirect => {
            // ext4_ioctl_setflags(): clearing EXT4_EXTENTS_FL calls ext4_ind_migrate().
            match get_flags(f).and_then(|fl| set_flags(f, fl & !EXTENTS_FL)) {
                Ok(()) => (0, 0),
                Err(e) => (e.errno.unwrap_or(libc::EIO), -1),
            }
        }
        // SAFETY: a no-argument ioctl on our own open file.
        MigrateDriver::Ioctl => match unsafe { ext4_ioc_migrate(f.as_raw_fd()) } {
            Ok(r) => (0, i64::from(r)),
            Err(e) => (e as i32, -1),
        },
        MigrateDriver::Chattr => (
            std::process::Command::new("/usr/bin/chattr")
                .args([if to_indirect { "-e" } else { "+e" }, path])
                .status()
                .map(|s| s.code().unwrap_or(128))
                .unwrap_or(127),
            0,
        ),
    };
    (start, now_ns(), error, ret)
}

/// Checks the inode against what the migration returned; never trust the return code alone.
fn check_postconditions(
    f: &File,
    size: u64,
    tag: impl Fn(u64) -> BlockTag,
    r: &mut FileRecord,
) -> AResult<()> {
    let flags = get_flags(f)? as u32;
    r.after.flags = flags;
    let (error, return_value, direction) = r
        .migration
        .as_ref()
        .map_or((0, 0, MigrateDirection::ToExtents), |m| {
            (m.error, m.return_value, m.direction)
        });
    let extents = flags & EXTENTS_FL as u32 != 0;
    let mut failures = Vec::new();
    let mut fail = |check: &str, detail: String| {
        failures.push(PostconditionFailure {
            check: check.into(),
            detail,
        })
    };
    if direction == MigrateDirection::ToIndirect {
        // ext4_ind_migrate() clears EXT4_INODE_EXTENTS only once it has built i_data, and
        // returns an error (EOPNOTSUPP: more than one extent, or past block 12) before that.
        if error == 0 && extents {
            fail(
                "ind-migrate-success-clears-extents-flag",
                format!("clearing EXT4_EXTENTS_FL succeeded but flags are {flags:#x}"),
            );
        }
        if error != 0 && !extents {
            fail(
                "ind-migrate-failure-leaves-inode-extents",
                format!("clearing EXT4_EXTENTS_FL failed (errno {error}) but flags are {flags:#x}"),
            );
        }
    } else {
        if error == 0 && !extents {
            fail(
                "migrate-success-sets-extents-flag",
                format!("migration returned {return_value} but flags are {flags:#x}"),
            );
        }
        // ioctl(2): 0 on success, -1 with errno on failure. A positive value is a
        // kernel-internal status leaking out (the 1 of ext4_journal_ensure_credits() after
        // a restart).
        if error == 0 && return_value != 0 {
            fail(
                "migrate-returns-zero-on-success",
                format!("EXT4_IOC_MIGRATE returned {return_value} (flags {flags:#x})"),
            );
        }
        if error != 0 && extents {
            fail(
                "migrate-failure-leaves-inode-indirect",
                format!("migration failed (errno {error}) but flags are {flags:#x}"),
            );
        }
    }
    // A FIEMAP that fails after the conversion (an extent tree the kernel rejects, e.g. a
    // bad checksum: EFSBADCRC from __ext4_ext_check()) is the inode's problem, not the agent's.
    let (ranges, count, fiemap_ok) = match fiemap_blocks(f, size) {
        Ok((r, c)) => (r, c, true),
        Err(e) => {
            fail("fiemap-succeeds-after-migrate", e.to_string());
            (Vec::new(), 0, false)
        }
    };
    r.after.extents = count;
    if r.synced && fiemap_ok {
        let mut mapped = vec![false; (size / TAG_BLOCK_SIZE as u64) as usize];
        for (start, len) in ranges {
            for b in start..(start + len).min(mapped.len() as u64) {
                mapped[b as usize] = true;
            }
        }
        let unmapped: Vec<u64> = r
            .acknowledged()
            .filter(|&b| !mapped.get(b as usize).copied().unwrap_or(false))
            .collect();
        if !unmapped.is_empty() {
            fail(
                "fiemap-maps-every-acknowledged-block",
                format!(
                    "{} synced blocks are holes in FIEMAP, first {:?}",
                    unmapped.len(),
                    &unmapped[..unmapped.len().min(8)]
                ),
            );
        }
    }
    let mut bad = Vec::new();
    let mut buf = [0u8; TAG_BLOCK_SIZE];
    for lblk in r.acknowledged().collect::<Vec<_>>() {
        let ok = f
            .read_exact_at(&mut buf, lblk * TAG_BLOCK_SIZE as u64)
            .is_ok()
            && BlockTag::decode(&buf) == BlockContent::Tagged(tag(lblk));
        if !ok {
            bad.push(lblk);
        }
    }
    r.after.content_ok = bad.is_empty();
    if !bad.is_empty() {
        fail(
            "content-reads-back-after-migrate",
            format!(
                "{} blocks read back wrong, first {:?}",
                bad.len(),
                &bad[..bad.len().min(8)]
            ),
        );
    }
    r.postconditions = failures;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indirect_runs_have_a_leading_hole_and_fit_the_direct_pointers() {
        let mut trailing = 0;
        for i in 0..10_000u64 {
            let r = indirect_run(splitmix(i));
            assert!(r.start >= 1, "a leading hole: {r:?}");
            assert!(r.end - r.start >= 2, "at least two prefilled blocks: {r:?}");
            assert!(r.end <= EXT4_NDIR_BLOCKS, "below block 12: {r:?}");
            trailing += usize::from(r.end < EXT4_NDIR_BLOCKS);
        }
        assert!(trailing > 5_000, "most files have holes after the run too");
    }

    #[test]
    fn both_alternates_directions_by_file() {
        use MigrateDirection::*;
        assert_eq!(Both.for_file(0), ToExtents);
        assert_eq!(Both.for_file(1), ToIndirect);
        assert_eq!(ToIndirect.for_file(0), ToIndirect);
        assert_eq!(ToExtents.for_file(1), ToExtents);
    }
}
