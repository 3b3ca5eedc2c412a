//! The working image: the write log applied in completion order, with what the current flush
//! epoch changed kept aside so that any subset of the epoch's writes can be taken back.
//!
//! One image serves every crash state: states after a flush are the image as it stands, and
//! a reordered state rewrites only the sectors of the dropped writes, then puts them back.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// One write of the epoch: its seq and its bytes (`None`: a zeroed or discarded range).
#[derive(Debug, Clone)]
pub struct EpochWrite {
    pub seq: u64,
    /// First sector.
    pub sector: u64,
    /// Sectors covered.
    pub sectors: u64,
    pub data: Option<Vec<u8>>,
}

/// The log applied so far, with the unflushed writes of the current epoch.
pub struct WorkingImage {
    path: PathBuf,
    file: File,
    sector_size: u64,
    size: u64,
    /// Writes completed since the last flush that made them durable, in completion order.
    epoch: Vec<EpochWrite>,
    /// Each sector the epoch wrote, as it was before the epoch's first write to it.
    before: HashMap<u64, Vec<u8>>,
    /// The 4 KiB blocks written since [`Self::take_changed`] last ran (log records applied,
    /// writes dropped and put back): what `Checker::check_reusing` needs.
    changed: RefCell<BTreeSet<u64>>,
}

/// A new zeroed sparse file of `size` bytes at `path`, open for reading and writing.
pub(crate) fn create_sparse(path: &Path, size: u64) -> Result<File> {
    let io = |e| Error::io(path, "create", e);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io)?;
    f.set_len(size).map_err(io)?;
    Ok(f)
}

impl WorkingImage {
    /// A zeroed sparse image of `size` bytes at `path` (runs start from an empty image).
    pub fn create(path: &Path, size: u64, sector_size: u32) -> Result<Self> {
        let file = create_sparse(path, size)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            sector_size: u64::from(sector_size),
            size,
            epoch: Vec::new(),
            before: HashMap::new(),
            changed: RefCell::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The writes that a crash now could still lose.
    pub fn epoch(&self) -> &[EpochWrite] {
        &self.epoch
    }

    fn read_at(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, off)
            .map_err(|e| Error::io(&self.path, "read the working image", e))?;
        Ok(buf)
    }

    fn write_at(&self, off: u64, data: &[u8]) -> Result<()> {
        const BLOCK: u64 = e4race_protocol::TAG_BLOCK_SIZE as u64;
        self.changed
            .borrow_mut()
            .extend(off / BLOCK..(off + data.len() as u64).div_ceil(BLOCK));
        self.file
            .write_all_at(data, off)
            .map_err(|e| Error::io(&self.path, "write the working image", e))
    }

    /// The 4 KiB blocks written since the last call.
    pub fn take_changed(&self) -> BTreeSet<u64> {
        std::mem::take(&mut *self.changed.borrow_mut())
    }

    /// Applies one completed write (or, with `data` `None`, a zeroed range of `len` bytes),
    /// keeping the old content of sectors the epoch had not touched yet.
    pub fn apply(&mut self, seq: u64, sector: u64, len: u64, data: Option<&[u8]>) -> Result<()> {
        let ss = self.sector_size;
        let sectors = len.div_ceil(ss);
        let off = sector
            .checked_mul(ss)
            .ok_or(Error::Log("a record's sector overflows".into()))?;
        let size = self.size;
        if off.saturating_add(sectors * ss) > size {
            return Err(Error::Log(format!(
                "record {seq} writes past the end of the {size}-byte disk"
            )));
        }
        let old = self.read_at(off, (sectors * ss) as usize)?;
        for (i, chunk) in old.chunks(ss as usize).enumerate() {
            self.before
                .entry(sector + i as u64)
                .or_insert_with(|| chunk.to_vec());
        }
        let bytes = match data {
            Some(d) if d.len() as u64 > sectors * ss => {
                return Err(Error::Log(format!(
                    "record {seq} carries more data than its length"
                )))
            }
            // A write shorter than its last sector leaves the rest of that sector as it was.
            Some(d) => {
                let mut b = old.clone();
                b[..d.len()].copy_from_slice(d);
                b
            }
            None => vec![0u8; (sectors * ss) as usize],
        };
        self.write_at(off, &bytes)?;
        self.epoch.push(EpochWrite {
            seq,
            sector,
            sectors,
            data: Some(bytes),
        });
        Ok(())
    }

    /// A FLUSH completed: every write with seq below `covers` is durable and leaves the epoch.
    /// Writes that completed while the flush was in flight stay, with the durable state as
    /// their "before".
    pub fn flushed(&mut self, covers: u64) {
        let (durable, open): (Vec<_>, Vec<_>) = self.epoch.drain(..).partition(|w| w.seq < covers);
        if open.is_empty() {
            self.before.clear();
            return;
        }
        let mut before = HashMap::new();
        for w in &open {
            for s in w.sector..w.sector + w.sectors {
                let kept = Self::content_of(&durable, &self.before, s, self.sector_size);
                before.entry(s).or_insert(kept);
            }
        }
        self.before = before;
        self.epoch = open;
    }

    /// Sector `s` as `writes` (in order) leave it over `before`.
    fn content_of(
        writes: &[EpochWrite],
        before: &HashMap<u64, Vec<u8>>,
        s: u64,
        ss: u64,
    ) -> Vec<u8> {
        writes
            .iter()
            .rev()
            .find(|w| (w.sector..w.sector + w.sectors).contains(&s))
            .and_then(|w| Self::sector_of(w, s, ss))
            .or_else(|| before.get(&s).cloned())
            .unwrap_or_else(|| vec![0u8; ss as usize])
    }

    /// Sector `s` of write `w` (which covers it).
    fn sector_of(w: &EpochWrite, s: u64, ss: u64) -> Option<Vec<u8>> {
        let at = ((s - w.sector) * ss) as usize;
        w.data.as_ref().map(|d| d[at..at + ss as usize].to_vec())
    }

    /// Rewrites the image as if the epoch writes at `dropped` (indices into [`Self::epoch`])
    /// never reached the disk; returns what [`Self::restore`] needs to undo it.
    pub fn drop_writes(&self, dropped: &[usize]) -> Result<Restore> {
        let ss = self.sector_size;
        let mut is_dropped = vec![false; self.epoch.len()];
        let mut sectors: BTreeMap<u64, Option<usize>> = BTreeMap::new();
        for &i in dropped {
            if let Some(w) = self.epoch.get(i) {
                is_dropped[i] = true;
                for s in w.sector..w.sector + w.sectors {
                    sectors.insert(s, None);
                }
            }
        }
        // The last kept write of each affected sector, in one pass over the epoch.
        for (i, w) in self
            .epoch
            .iter()
            .enumerate()
            .filter(|(i, _)| !is_dropped[*i])
        {
            for s in w.sector..w.sector + w.sectors {
                if let Some(last) = sectors.get_mut(&s) {
                    *last = Some(i);
                }
            }
        }
        let mut saved = Vec::new();
        for (first, n) in runs(sectors.keys().copied()) {
            let now = self.read_at(first * ss, (n * ss) as usize)?;
            let mut want = Vec::with_capacity(now.len());
            for s in first..first + n {
                let kept = sectors
                    .get(&s)
                    .copied()
                    .flatten()
                    .and_then(|i| Self::sector_of(&self.epoch[i], s, ss));
                want.extend(
                    kept.or_else(|| self.before.get(&s).cloned())
                        .unwrap_or_else(|| vec![0u8; ss as usize]),
                );
            }
            self.write_at(first * ss, &want)?;
            saved.push((first * ss, now));
        }
        Ok(Restore { saved })
    }

    /// Puts back what [`Self::drop_writes`] took away.
    pub fn restore(&self, r: Restore) -> Result<()> {
        for (off, data) in r.saved {
            self.write_at(off, &data)?;
        }
        Ok(())
    }
}

/// The content a reordered state overwrote, to put back.
#[derive(Debug, Default)]
pub struct Restore {
    saved: Vec<(u64, Vec<u8>)>,
}

/// Sorted sector numbers grouped into runs `(first, count)`.
fn runs(sectors: impl Iterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for s in sectors {
        match out.last_mut() {
            Some((first, n)) if *first + *n == s => *n += 1,
            _ => out.push((s, 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sector(img: &WorkingImage, s: u64) -> Vec<u8> {
        img.read_at(s * 512, 512).unwrap()
    }

    #[test]
    fn dropping_a_write_shows_the_last_kept_write_or_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = WorkingImage::create(&dir.path().join("w.img"), 8 * 512, 512).unwrap();
        img.apply(0, 0, 1024, Some(&[1u8; 1024])).unwrap();
        img.flushed(1);
        assert!(img.epoch().is_empty());
        img.apply(1, 1, 1024, Some(&[2u8; 1024])).unwrap(); // sectors 1, 2
        img.apply(2, 2, 512, Some(&[3u8; 512])).unwrap(); // sector 2
        img.apply(3, 5, 512, None).unwrap(); // zeroes sector 5 (already zero)

        // Drop the second write: sector 2 falls back to the first epoch write.
        let r = img.drop_writes(&[1]).unwrap();
        assert_eq!(sector(&img, 1), vec![2u8; 512]);
        assert_eq!(sector(&img, 2), vec![2u8; 512]);
        img.restore(r).unwrap();
        assert_eq!(sector(&img, 2), vec![3u8; 512]);

        // Drop both: sector 1 is the durable write's again, sector 2 what it was before.
        let r = img.drop_writes(&[0, 1]).unwrap();
        assert_eq!(sector(&img, 1), vec![1u8; 512]);
        assert_eq!(sector(&img, 2), vec![0u8; 512]);
        img.restore(r).unwrap();
        assert_eq!(sector(&img, 1), vec![2u8; 512]);
        assert_eq!(sector(&img, 2), vec![3u8; 512]);
    }

    #[test]
    fn writes_that_complete_during_a_flush_stay_droppable() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = WorkingImage::create(&dir.path().join("w.img"), 4 * 512, 512).unwrap();
        img.apply(0, 0, 512, Some(&[1u8; 512])).unwrap();
        img.apply(1, 0, 512, Some(&[2u8; 512])).unwrap();
        // A flush that covers only seq 0.
        img.flushed(1);
        assert_eq!(img.epoch().len(), 1);
        let r = img.drop_writes(&[0]).unwrap();
        assert_eq!(
            sector(&img, 0),
            vec![1u8; 512],
            "the durable write is what is left"
        );
        img.restore(r).unwrap();
        assert_eq!(sector(&img, 0), vec![2u8; 512]);
    }

    #[test]
    fn a_write_past_the_disk_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = WorkingImage::create(&dir.path().join("w.img"), 4 * 512, 512).unwrap();
        assert!(img.apply(7, 3, 1024, Some(&[1u8; 1024])).is_err());
        assert!(img.apply(8, u64::MAX, 512, None).is_err());
    }
}
