//! dm-log-writes v1 export, and replay of dm-log-writes files and of our own logs.
//!
//! dm-log-writes format (kernel `drivers/md/dm-log-writes.c`, fstests
//! `src/log-writes/log-writes.h`), little endian, `S` = sectorsize:
//!
//! * sector 0: `struct log_write_super { le64 magic = 0x6a736677736872; le64 version = 1;
//!   le64 nr_entries; le32 sectorsize; }`, zero padded to `S`.
//! * from sector 1, `nr_entries` entries, each a `struct log_write_entry { le64 sector;
//!   le64 nr_sectors; le64 flags; le64 data_len; }` zero padded to `S`, followed by
//!   `nr_sectors * S` data bytes unless the entry is a DISCARD (discards carry no data).
//!   A MARK entry has `nr_sectors = 0`, `data_len = strlen(name)` and the name inside the
//!   entry sector right after the 32-byte header. `sector`/`nr_sectors` are in units of `S`.
//! * flags: FLUSH=1, FUA=2, DISCARD=4, MARK=8, METADATA=16.
//!
//! Mapping from our records: WRITE → data entry (FUA flag kept); WRITE_ZEROES → data entry
//! of zeros (what QEMU's blklogwrites does, and byte-exact on any replay target);
//! DISCARD → DISCARD entry; FLUSH → FLUSH entry; MARK → MARK entry.

use crate::position::{Approach, LogPosition};
use crate::reader::LogReader;
use crate::record::{self, Kind};
use crate::Error;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// dm-log-writes superblock magic.
pub const DM_MAGIC: u64 = 0x006a_7366_7773_6872;
/// dm-log-writes version.
pub const DM_VERSION: u64 = 1;
/// Entry flag: flush.
pub const DM_FLUSH: u64 = 1;
/// Entry flag: FUA write.
pub const DM_FUA: u64 = 2;
/// Entry flag: discard (no data follows).
pub const DM_DISCARD: u64 = 4;
/// Entry flag: mark (name in the entry sector).
pub const DM_MARK: u64 = 8;
/// Entry flag: metadata write.
pub const DM_METADATA: u64 = 16;

/// Sector size used for exports: our records address 512-byte sectors.
const EXPORT_SECTOR: u64 = 512;
const ENTRY_HDR: usize = 32;

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Entries/records consumed (applied or not, e.g. flushes and marks count).
    pub entries: u64,
    /// Data writes applied.
    pub writes: u64,
    /// Discards / zero ranges applied.
    pub zeroed: u64,
    /// Seq of the last record applied (our log only).
    pub last_seq: Option<u64>,
    /// Torn tail ignored in the source log (our log only).
    pub discarded_bytes: u64,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Entries in the dm-log-writes file.
    pub entries: u64,
    /// Torn tail of the source log that was ignored.
    pub discarded_bytes: u64,
}

fn entry_sector(sector: u64, nr_sectors: u64, flags: u64, data_len: u64, extra: &[u8]) -> Vec<u8> {
    let mut e = vec![0u8; EXPORT_SECTOR as usize];
    e[0..8].copy_from_slice(&sector.to_le_bytes());
    e[8..16].copy_from_slice(&nr_sectors.to_le_bytes());
    e[16..24].copy_from_slice(&flags.to_le_bytes());
    e[24..32].copy_from_slice(&data_len.to_le_bytes());
    e[ENTRY_HDR..ENTRY_HDR + extra.len()].copy_from_slice(extra);
    e
}

fn super_sector(nr_entries: u64) -> Vec<u8> {
    let mut s = vec![0u8; EXPORT_SECTOR as usize];
    s[0..8].copy_from_slice(&DM_MAGIC.to_le_bytes());
    s[8..16].copy_from_slice(&DM_VERSION.to_le_bytes());
    s[16..24].copy_from_slice(&nr_entries.to_le_bytes());
    s[24..28].copy_from_slice(&(EXPORT_SECTOR as u32).to_le_bytes());
    s
}

/// Converts our log at `log_path` into a dm-log-writes v1 file at `out_path` (512-byte
/// sectors), readable by fstests' `replay-log`. The log must have been recorded with data.
pub fn export_dm_log_writes(
    log_path: impl AsRef<Path>,
    out_path: impl AsRef<Path>,
) -> Result<ExportSummary, Error> {
    let out_path = out_path.as_ref();
    let mut reader = LogReader::open(log_path.as_ref())?;
    if !reader.header().has_data {
        return Err(Error::NoData(reader.path().to_path_buf()));
    }
    if reader.header().sector_size as u64 != EXPORT_SECTOR {
        return Err(Error::Unsupported(
            "only logs with 512-byte sectors can be exported",
        ));
    }
    // A FLUSH entry in dm-log-writes makes every entry before it durable. Ours is logged
    // after the image's fdatasync, so writes that raced with it may sit between the seq it
    // covers and its own: emit it at the seq it covers instead (Entry::flush), and leave out
    // flushes that failed. One pre-pass finds the flushes to move.
    let mut early: std::collections::BTreeMap<u64, Vec<u32>> = Default::default();
    let mut moved = std::collections::HashSet::new();
    for rec in LogReader::open(log_path.as_ref())? {
        let rec = rec?;
        if let Some(c) = rec.flush_covers().filter(|&c| c < rec.seq) {
            early.entry(c).or_default().push(rec.flags);
            moved.insert(rec.seq);
        }
    }
    let file = File::create(out_path).map_err(|e| Error::io(out_path, "create the export", e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let wr = |e| Error::io(out_path, "write the export", e);
    out.write_all(&super_sector(0)).map_err(wr)?;
    let zeros = vec![0u8; 1 << 20];
    let mut n = 0u64;
    let flush_entry = |flags: u32| {
        let fua = if flags & record::flags::FUA != 0 {
            DM_FUA
        } else {
            0
        };
        entry_sector(0, 0, DM_FLUSH | fua, 0, &[])
    };
    for rec in reader.by_ref() {
        let rec = rec?;
        for fl in early.remove(&rec.seq).unwrap_or_default() {
            out.write_all(&flush_entry(fl)).map_err(wr)?;
            n += 1;
        }
        let nr = u64::from(rec.len) / EXPORT_SECTOR;
        if u64::from(rec.len) % EXPORT_SECTOR != 0 {
            return Err(Error::Unsupported(
                "a record's length is not a multiple of 512 bytes",
            ));
        }
        match rec.kind {
            Kind::Write => {
                let data = rec
                    .data
                    .as_deref()
                    .ok_or(Error::Corrupt("write record without data in a data log"))?;
                let fl = if rec.flags & record::flags::FUA != 0 {
                    DM_FUA
                } else {
                    0
                };
                if nr == 0 {
                    // An empty write: replay-log would reject {flags 0, nr_sectors 0} as
                    // malformed, and it changes nothing.
                    if fl == 0 {
                        continue;
                    }
                }
                out.write_all(&entry_sector(rec.sector, nr, fl, 0, &[]))
                    .map_err(wr)?;
                out.write_all(data).map_err(wr)?;
            }
            Kind::WriteZeroes => {
                if nr == 0 {
                    continue;
                }
                out.write_all(&entry_sector(rec.sector, nr, 0, 0, &[]))
                    .map_err(wr)?;
                let mut left = u64::from(rec.len) as usize;
                while left > 0 {
                    let c = left.min(zeros.len());
                    out.write_all(&zeros[..c]).map_err(wr)?;
                    left -= c;
                }
            }
            Kind::Discard => {
                if nr == 0 {
                    continue;
                }
                out.write_all(&entry_sector(rec.sector, nr, DM_DISCARD, 0, &[]))
                    .map_err(wr)?;
            }
            Kind::Flush => {
                if rec.flush_covers().is_none() || moved.contains(&rec.seq) {
                    continue;
                }
                out.write_all(&flush_entry(rec.flags)).map_err(wr)?;
            }
            Kind::Mark => {
                let name = rec.mark.as_deref().unwrap_or("").as_bytes();
                if name.len() > record::MAX_MARK_LEN {
                    return Err(Error::Corrupt(
                        "mark name longer than a dm-log-writes entry allows",
                    ));
                }
                out.write_all(&entry_sector(0, 0, DM_MARK, name.len() as u64, name))
                    .map_err(wr)?;
            }
        }
        n += 1;
    }
    out.seek(SeekFrom::Start(0)).map_err(wr)?;
    out.write_all(&super_sector(n)).map_err(wr)?;
    let file = out.into_inner().map_err(|e| wr(e.into_error()))?;
    file.sync_all().map_err(wr)?;
    Ok(ExportSummary {
        entries: n,
        discarded_bytes: reader.discarded_bytes(),
    })
}

/// Zeroes `[off, off+len)` of `f`: punches a hole (keeps the size, reads back as zeros), or
/// writes zeros where the filesystem can't punch holes.
pub(crate) fn zero_range(f: &File, off: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    if len == 0 {
        return Ok(());
    }
    let (Ok(o), Ok(l)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    };
    // SAFETY: fallocate on a valid fd with plain integer arguments.
    let rc = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            o,
            l,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if !matches!(
        err.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
    ) {
        return Err(err);
    }
    let zeros = vec![0u8; 1 << 20];
    let mut at = off;
    let end = off + len;
    while at < end {
        let c = (end - at).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..c], at)?;
        at += c as u64;
    }
    Ok(())
}

fn open_image(image: &Path) -> Result<File, Error> {
    OpenOptions::new().write(true).open(image).map_err(|e| {
        Error::io(
            image,
            "open the replay target (it must exist, e.g. a copy of the initial image)",
            e,
        )
    })
}

/// Replays a dm-log-writes file onto `image` (an existing file, normally a copy of the image
/// the recording started from), following the format spec (see the module docs), up to
/// `stop` (`End`, `Entries`, `Mark`, `Flush`; `Seq` is not available in this format).
/// Discards are applied as zeroing, like `replay-log` on a device without discard support.
pub fn replay_dm_log_writes(
    log_path: impl AsRef<Path>,
    image: impl AsRef<Path>,
    stop: &LogPosition,
) -> Result<ReplaySummary, Error> {
    let log_path = log_path.as_ref();
    let image = image.as_ref();
    if matches!(stop, LogPosition::Seq(_)) {
        return Err(Error::Unsupported(
            "dm-log-writes files have no seq numbers: stop at an entry count, mark or flush",
        ));
    }
    let f =
        File::open(log_path).map_err(|e| Error::io(log_path, "open the dm-log-writes file", e))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let rd = |e| Error::io(log_path, "read the dm-log-writes file", e);
    let mut sup = [0u8; 28];
    r.read_exact(&mut sup).map_err(rd)?;
    if record::u64_at(&sup, 0) != DM_MAGIC {
        return Err(Error::DmFormat("bad superblock magic"));
    }
    if record::u64_at(&sup, 8) != DM_VERSION {
        return Err(Error::DmFormat("unsupported version (want 1)"));
    }
    let nr_entries = record::u64_at(&sup, 16);
    let ss = u64::from(record::u32_at(&sup, 24));
    // dm-log-writes uses the device's logical block size: 512 to 4096 in practice; refuse
    // what would make us allocate an absurd entry buffer.
    if !(512..=65536).contains(&ss) || !ss.is_power_of_two() {
        return Err(Error::DmFormat(
            "sector size is not a power of two between 512 and 65536",
        ));
    }
    let mut skip = vec![0u8; ss as usize - 28];
    r.read_exact(&mut skip).map_err(rd)?;
    let out = open_image(image)?;
    let wr = |e| Error::io(image, "write the replay target", e);

    let mut sum = ReplaySummary::default();
    let mut approach = Approach::new(stop);
    let mut entry = vec![0u8; ss as usize];
    let mut data = Vec::new();
    for _ in 0..nr_entries {
        if approach.stops_before(None) {
            break;
        }
        r.read_exact(&mut entry).map_err(rd)?;
        let sector = record::u64_at(&entry, 0);
        let nr = record::u64_at(&entry, 8);
        let flags = record::u64_at(&entry, 16);
        let data_len = record::u64_at(&entry, 24);
        // Same sanity rules as replay-log's log_entry_valid().
        if (flags == 0 && nr == 0) || (flags != DM_MARK && entry[ENTRY_HDR] != 0) {
            return Err(Error::DmFormat(
                "malformed entry (not zero padded, or empty)",
            ));
        }
        sum.entries += 1;
        let size = nr
            .checked_mul(ss)
            .ok_or(Error::DmFormat("entry size overflows"))?;
        let off = sector
            .checked_mul(ss)
            .ok_or(Error::DmFormat("entry offset overflows"))?;
        if flags & DM_DISCARD != 0 {
            zero_range(&out, off, size).map_err(wr)?;
            sum.zeroed += 1;
        } else if size > 0 {
            // In 1 MiB pieces: the entry's length comes from the file, so a damaged one must
            // not make us allocate it whole (it fails at the file's end instead).
            off.checked_add(size)
                .ok_or(Error::DmFormat("entry offset overflows"))?;
            let mut done = 0u64;
            while done < size {
                let n = (size - done).min(1 << 20) as usize;
                data.resize(n, 0);
                r.read_exact(&mut data).map_err(rd)?;
                out.write_all_at(&data, off + done).map_err(wr)?;
                done += n as u64;
            }
            sum.writes += 1;
        }
        let mark = if flags & DM_MARK != 0 {
            let l = usize::try_from(data_len)
                .ok()
                .filter(|l| ENTRY_HDR + l <= entry.len())
                .ok_or(Error::DmFormat("mark name longer than the entry sector"))?;
            Some(&entry[ENTRY_HDR..ENTRY_HDR + l])
        } else {
            None
        };
        if approach.stops_after(None, flags & DM_FLUSH != 0, mark) {
            break;
        }
    }
    approach.finish()?;
    out.sync_all().map_err(wr)?;
    Ok(sum)
}

/// Replays our own log (recorded with data) onto `image` (an existing file, normally a copy
/// of the image the recording started from) up to `stop`.
pub fn replay(
    log_path: impl AsRef<Path>,
    image: impl AsRef<Path>,
    stop: &LogPosition,
) -> Result<ReplaySummary, Error> {
    replay_dropping(log_path, image, stop, &[])
}

/// [`replay`], leaving out the records whose seq is in `dropped` (a crash state in which
/// those unflushed writes never reached the disk).
pub fn replay_dropping(
    log_path: impl AsRef<Path>,
    image: impl AsRef<Path>,
    stop: &LogPosition,
    dropped: &[u64],
) -> Result<ReplaySummary, Error> {
    let image = image.as_ref();
    let mut reader = LogReader::open(log_path.as_ref())?;
    if !reader.header().has_data {
        return Err(Error::NoData(reader.path().to_path_buf()));
    }
    let ss = u64::from(reader.header().sector_size);
    let out = open_image(image)?;
    let wr = |e| Error::io(image, "write the replay target", e);
    let mut sum = ReplaySummary::default();
    let mut approach = Approach::new(stop);
    for rec in reader.by_ref() {
        if approach.stops_before(rec.as_ref().ok().map(|r| r.seq)) {
            break;
        }
        let rec = rec?;
        sum.entries += 1;
        sum.last_seq = Some(rec.seq);
        let kind = if dropped.contains(&rec.seq) {
            Kind::Mark // applied as nothing
        } else {
            rec.kind
        };
        let off = rec
            .sector
            .checked_mul(ss)
            .ok_or(Error::Corrupt("sector overflows"))?;
        match kind {
            Kind::Write => {
                let d = rec
                    .data
                    .as_deref()
                    .ok_or(Error::Corrupt("write record without data in a data log"))?;
                out.write_all_at(d, off).map_err(wr)?;
                sum.writes += 1;
            }
            Kind::Discard | Kind::WriteZeroes => {
                zero_range(&out, off, u64::from(rec.len)).map_err(wr)?;
                sum.zeroed += 1;
            }
            Kind::Flush | Kind::Mark => {}
        }
        let mark = rec.mark.as_deref().map(str::as_bytes);
        if approach.stops_after(Some(rec.seq), rec.kind == Kind::Flush, mark) {
            break;
        }
    }
    approach.finish()?;
    sum.discarded_bytes = reader.discarded_bytes();
    out.sync_all().map_err(wr)?;
    Ok(sum)
}
