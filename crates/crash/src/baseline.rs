//! The copy-per-state baseline: the way fstests' `replay-log --check flush --fsck` and
//! CrashMonkey build crash states. The log is applied to a base image; at every flush the
//! base is copied (sparsely: only its allocated ranges), the copy gets the same checks as
//! [`crate::check_log`] gives (journal replay, e2fsck -fn, durability), and it is thrown away.
//! It exists to be measured against: `e4race-bench crash RUN_DIR` times both on one log.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use writelog::{Kind, LogReader};

use crate::check::{Checker, Durability};
use crate::image::create_sparse;
use crate::{
    round_done, BadState, CrashOptions, CrashReport, CrashState, Error, Result, StateKind, SCHEMA,
};

/// Checks the state after every completed flush (after `opts.from_mark`) by copying the
/// image for each one. Reordered states and the skipping of identical states are not done:
/// the baseline checks what replay-log checks. `progress` gets (states checked, seq).
pub fn check_log_copying(
    log: &Path,
    disk_size: u64,
    durability: &Durability,
    opts: &CrashOptions,
    progress: &mut dyn FnMut(usize, u64),
) -> Result<CrashReport> {
    let start = Instant::now();
    let mut reader = LogReader::open(log)?;
    if !reader.header().has_data {
        return Err(Error::NoData(log.to_path_buf()));
    }
    let ss = u64::from(reader.header().sector_size);
    let base_path = opts.work_dir.join("baseline-base.img");
    let copy_path = opts.work_dir.join("baseline-state.img");
    let base = create_sparse(&base_path, disk_size)?;
    let checker = Checker::new(opts.work_dir.join("baseline.e2undo"))?;
    let mut d = durability.clone();
    d.done_at.clear();
    let mut report = CrashReport {
        schema: SCHEMA.into(),
        stride: 1,
        ..Default::default()
    };
    let (mut checking, mut last_mark) = (false, None::<String>);
    for rec in reader.by_ref() {
        let rec = rec?;
        report.records += 1;
        match rec.kind {
            Kind::Write | Kind::Discard | Kind::WriteZeroes => {
                let off = rec.sector.saturating_mul(ss);
                let zeros;
                let bytes = match (&rec.kind, rec.data.as_deref()) {
                    (Kind::Write, Some(data)) => data,
                    (Kind::Write, None) => {
                        return Err(Error::Log(format!("write {} has no data", rec.seq)))
                    }
                    _ => {
                        zeros = vec![0u8; rec.len as usize];
                        &zeros
                    }
                };
                base.write_all_at(bytes, off)
                    .map_err(|e| Error::io(&base_path, "write", e))?;
            }
            Kind::Mark => {
                let name = rec.mark.clone().unwrap_or_default();
                if let Some(n) = round_done(&name) {
                    d.done_at.insert(n, rec.seq);
                }
                checking |= name == opts.from_mark;
                last_mark = Some(name);
            }
            Kind::Flush if checking && rec.flush_covers().is_some() => {
                report.flushes += 1;
                sparse_copy(&base, &base_path, &copy_path, disk_size)?;
                let f = checker.check_copy(&copy_path, rec.seq, &d)?;
                report.after_flush += 1;
                report.states_checked += 1;
                if !f.is_clean() {
                    report.bad.push(BadState {
                        state: CrashState {
                            seq: rec.seq,
                            kind: StateKind::AfterFlush,
                            mark_before: last_mark.clone(),
                        },
                        findings: f,
                    });
                }
                progress(report.states_checked, rec.seq);
            }
            Kind::Flush => {}
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.states_per_second = report.states_checked as f64 / report.seconds.max(1e-9);
    let _ = std::fs::remove_file(&copy_path);
    let _ = std::fs::remove_file(&base_path);
    Ok(report)
}

/// [`sparse_copy`] of the file at `src` (its size kept).
pub(crate) fn sparse_copy_path(src: &Path, dst: &Path) -> Result<()> {
    let f = File::open(src).map_err(|e| Error::io(src, "open", e))?;
    let size = f.metadata().map_err(|e| Error::io(src, "stat", e))?.len();
    sparse_copy(&f, src, dst, size)
}

/// Copies the allocated ranges of `src` (found with SEEK_DATA/SEEK_HOLE, lseek(2)) into a
/// fresh sparse file `dst` of `size` bytes, with copy_file_range(2) (as `cp --sparse=auto`).
fn sparse_copy(src: &File, src_path: &Path, dst: &Path, size: u64) -> Result<()> {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    let out = create_sparse(dst, size)?;
    let fd = src.as_raw_fd();
    let seek_err = |e: nix::Error| Error::io(src_path, "seek in", std::io::Error::from(e));
    let mut pos: i64 = 0;
    let end = size as i64;
    while pos < end {
        let data = match lseek(fd, pos, Whence::SeekData) {
            Ok(p) => p,
            Err(nix::errno::Errno::ENXIO) => break, // no data past pos
            Err(e) => return Err(seek_err(e)),
        };
        let hole = lseek(fd, data, Whence::SeekHole).map_err(seek_err)?;
        copy_range(src, &out, dst, data as u64, (hole - data) as u64)?;
        pos = hole;
    }
    Ok(())
}

/// Copies `len` bytes at `off` from `src` to the same offset of `out`: copy_file_range(2),
/// or pread/pwrite where it cannot cross the two files' file systems (EXDEV: before Linux
/// 5.19, and between some file systems still) or is not there.
fn copy_range(src: &File, out: &File, dst: &Path, off: u64, len: u64) -> Result<()> {
    let (mut off_in, mut off_out) = (off as i64, off as i64);
    let end = (off + len) as i64;
    while off_in < end {
        let want = (end - off_in) as usize;
        match nix::fcntl::copy_file_range(src, Some(&mut off_in), out, Some(&mut off_out), want) {
            Ok(0) => break,
            Ok(_) => {}
            Err(
                nix::errno::Errno::EXDEV | nix::errno::Errno::ENOSYS | nix::errno::Errno::EINVAL,
            ) => return copy_range_by_hand(src, out, dst, off_in as u64, (end - off_in) as u64),
            Err(e) => return Err(Error::io(dst, "copy into", std::io::Error::from(e))),
        }
    }
    Ok(())
}

fn copy_range_by_hand(src: &File, out: &File, dst: &Path, off: u64, len: u64) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let n = buf.len().min((len - done) as usize);
        src.read_exact_at(&mut buf[..n], off + done)
            .map_err(|e| Error::io(dst, "read the image for", e))?;
        out.write_all_at(&buf[..n], off + done)
            .map_err(|e| Error::io(dst, "copy into", e))?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_copy_holds_the_same_bytes_and_stays_sparse() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let size = 64 << 20;
        let f = create_sparse(&a, size).unwrap();
        f.write_all_at(&[7u8; 8192], 4096).unwrap();
        f.write_all_at(&[9u8; 4096], 40 << 20).unwrap();
        sparse_copy(&f, &a, &b, size).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let m = std::fs::metadata(&b).unwrap();
        assert_eq!(m.len(), size);
        // 12 KiB of data (plus file system rounding), not 64 MiB.
        assert!(m.blocks() * 512 < 1 << 20, "{} blocks", m.blocks());
        // The by-hand path (across file systems) copies the same bytes.
        let c = dir.path().join("c");
        let out = create_sparse(&c, size).unwrap();
        copy_range_by_hand(&f, &out, &c, 4096, 8192).unwrap();
        copy_range_by_hand(&f, &out, &c, 40 << 20, 4096).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
    }
}
