//! Which write of the log carried each lost block, and where it went.
//!
//! Every block a workload acknowledges is a deterministic [`BlockTag`] block, so its xxh3-64
//! can be recomputed on the host and looked up among the per-4-KiB hashes blkrec records for
//! every write (`writes.log`, hashes only or with data). A lost block is then either
//!
//! * an **orphaned write**: its data reached the disk at sector S (seq N, between two marks),
//!   but the file's final mapping has a hole there or points to another block. When the
//!   write's block is among the blocks allocated but owned by no inode (e2fsck's `-N` block
//!   bitmap differences), that is the migrate race's signature: the block was allocated and
//!   written, then dropped from the file's map;
//! * **in place**: its data went to the very block the file maps the lblk to, but was later
//!   overwritten (or the extent is unwritten, so it reads as zeros);
//! * **never written**: no write in the log carried it (the page never reached writeback, or
//!   the write was not 4 KiB aligned so its hashes do not line up with blocks).
//!
//! Only the last write of the data (highest seq) is the primary evidence; how many times it
//! was written, and at which other sectors, is kept alongside.
//!
//! # evidence.json (schema `e4race-evidence/1`)
//!
//! ```text
//! schema            "e4race-evidence/1"
//! run_id            u64, the run id of the tags; run_id_source: report | agent-log | image-tag
//! log               {path, records, writes, discards, write_zeroes, flushes, marks,
//!                    has_data, sector_size, discarded_bytes, last_time_ns}
//! marks             [{name, seq, time_ns}]           every mark of the log, in order
//! unowned           {source: e2fsck | ext4-reader | none, blocks: count or null}
//! unowned_explained how many unowned blocks hold an orphaned write (null if unknown)
//! summary           Counts (below) over all lost blocks
//! files             [{path, round, file_id, ...Counts}] one per file with lost blocks
//! blocks            [{path, ino, file_id, round, lblk, expected_generation, found,
//!                     final_pblk, expected_xxh3 (16 hex digits), store_t_ns,
//!                     attribution: {class: orphaned-write | in-place, sector, pblk, seq,
//!                       time_ns, queue, after_mark, before_mark, pblk_unowned,
//!                       overwritten_by_seq, on_final_image, times_written, other_sectors}
//!                     | {class: never-written}}]
//! file_losses       data-loss findings for whole files (not attributable block by block)
//! Counts            {lost_blocks, orphaned_write, in_place, never_written,
//!                    orphaned_on_unowned, orphaned_not_unowned, orphaned_unowned_unknown}
//! ```
//!
//! Times: `time_ns` is the log's clock (ns since blkrec created the log, on the host);
//! `store_t_ns` is the guest's CLOCK_MONOTONIC. Sectors are in the log's sector size (512).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::Path;

use e4race_protocol::{BlockTag, RoundRecord, TAG_BLOCK_SIZE};
use oracles::{Found, LostBlock};
use serde::{Deserialize, Serialize};
use writelog::{Kind, LogReader};
use xxhash_rust::xxh3::xxh3_64;

use crate::Result;

/// Schema name of evidence.json.
pub const EVIDENCE_SCHEMA: &str = "e4race-evidence/1";

const BLOCK: u64 = TAG_BLOCK_SIZE as u64;
/// How many other sectors of a multiply written block are listed.
const MAX_OTHER_SECTORS: usize = 8;

/// The xxh3-64 of the 4 KiB block the guest acknowledged for `b`.
pub fn expected_hash(run_id: u64, b: &LostBlock) -> u64 {
    let tag = BlockTag {
        run_id,
        file_id: b.file_id,
        round: b.round,
        lblk: b.lblk,
        generation: b.expected_generation,
    };
    xxh3_64(&tag.to_block()[..])
}

/// A mark of the write log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkRef {
    pub name: String,
    pub seq: u64,
    pub time_ns: u64,
}

/// One 4 KiB chunk of a logged write whose hash was looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteHit {
    pub seq: u64,
    pub time_ns: u64,
    pub queue: u16,
    /// First sector of the chunk (log sector units).
    pub sector: u64,
    /// Byte offset of the chunk on the disk.
    pub byte_offset: u64,
}

/// Counts over the whole log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSummary {
    pub path: String,
    pub records: u64,
    pub writes: u64,
    pub discards: u64,
    pub write_zeroes: u64,
    pub flushes: u64,
    pub marks: u64,
    pub has_data: bool,
    pub sector_size: u32,
    pub discarded_bytes: u64,
    pub last_time_ns: u64,
}

/// What one pass over the write log found.
#[derive(Debug, Clone, Default)]
pub struct LogScan {
    pub summary: LogSummary,
    pub marks: Vec<MarkRef>,
    /// (seq, time_ns) of every flush.
    pub flushes: Vec<(u64, u64)>,
    /// time_ns of every write record, in log order (for the timeline).
    pub write_times: Vec<u64>,
    /// Every chunk whose hash was wanted, by hash, in seq order.
    pub hits: HashMap<u64, Vec<WriteHit>>,
    /// Last record (seq) that touched each 4 KiB disk block.
    pub last_touch: HashMap<u64, u64>,
    /// Per round: log time of the last write of the blocks the guest prefilled (pwrite +
    /// fsync before the race), filled in by [`crate::RunDir::evidence`]; it bounds the clock
    /// alignment from below.
    pub prefill_synced_ns: BTreeMap<u32, u64>,
    /// Smallest (log time of a hole block's first write − guest time of its store) over
    /// every hole store of the workload: a block is written only after it was stored, so
    /// this bounds the clock alignment from above. Filled in by [`crate::RunDir::evidence`].
    pub store_to_write_min_ns: Option<i64>,
}

impl LogScan {
    /// The last mark before `seq` and the first after it.
    pub fn marks_around(&self, seq: u64) -> (Option<&MarkRef>, Option<&MarkRef>) {
        let i = self.marks.partition_point(|m| m.seq < seq);
        let after = i.checked_sub(1).and_then(|j| self.marks.get(j));
        let before = self.marks[i..].iter().find(|m| m.seq > seq);
        (after, before)
    }

    /// The log time of the first mark named `name`.
    pub fn mark_time(&self, name: &str) -> Option<u64> {
        self.marks
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.time_ns)
    }
}

/// Reads the log once: marks, flushes, write times, the last writer of every 4 KiB block,
/// and every 4 KiB chunk whose hash is in `wanted`.
pub fn scan_log(path: &Path, wanted: &HashSet<u64>) -> Result<LogScan> {
    let mut rd = LogReader::open(path)?;
    let ss = u64::from(rd.header().sector_size);
    let mut s = LogScan {
        summary: LogSummary {
            path: path.display().to_string(),
            has_data: rd.header().has_data,
            sector_size: rd.header().sector_size,
            ..Default::default()
        },
        ..Default::default()
    };
    while let Some(rec) = rd.next_record()? {
        s.summary.records += 1;
        s.summary.last_time_ns = s.summary.last_time_ns.max(rec.time_ns);
        let start = rec.sector.saturating_mul(ss);
        let touch = |s: &mut LogScan| {
            let end = start.saturating_add(u64::from(rec.len));
            let mut b = start / BLOCK;
            while b.saturating_mul(BLOCK) < end {
                s.last_touch.insert(b, rec.seq);
                b += 1;
            }
        };
        match rec.kind {
            Kind::Write => {
                s.summary.writes += 1;
                s.write_times.push(rec.time_ns);
                touch(&mut s);
                for (i, h) in rec.block_hashes.iter().enumerate() {
                    if wanted.contains(h) {
                        let off = start.saturating_add(i as u64 * BLOCK);
                        s.hits.entry(*h).or_default().push(WriteHit {
                            seq: rec.seq,
                            time_ns: rec.time_ns,
                            queue: rec.queue,
                            sector: off / ss,
                            byte_offset: off,
                        });
                    }
                }
            }
            Kind::Discard | Kind::WriteZeroes => {
                if rec.kind == Kind::Discard {
                    s.summary.discards += 1;
                } else {
                    s.summary.write_zeroes += 1;
                }
                touch(&mut s);
            }
            Kind::Flush => {
                s.summary.flushes += 1;
                s.flushes.push((rec.seq, rec.time_ns));
            }
            Kind::Mark => {
                s.summary.marks += 1;
                s.marks.push(MarkRef {
                    name: rec.mark.unwrap_or_default(),
                    seq: rec.seq,
                    time_ns: rec.time_ns,
                });
            }
        }
    }
    s.summary.discarded_bytes = rd.discarded_bytes();
    Ok(s)
}

/// Blocks allocated in the bitmap but owned by no inode, and who said so.
#[derive(Debug, Clone, Default)]
pub struct UnownedBlocks {
    /// `e2fsck`, `ext4-reader` or `none`.
    pub source: String,
    pub blocks: Option<BTreeSet<u64>>,
}

/// Where the lost data went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteEvidence {
    /// First sector of the 4 KiB chunk that carried the data (log sector units).
    pub sector: u64,
    /// The file system block of that chunk (None if the write was not 4 KiB aligned).
    pub pblk: Option<u64>,
    pub seq: u64,
    /// Log clock: ns since the log was created.
    pub time_ns: u64,
    pub queue: u16,
    /// The last mark before the write and the first after it.
    pub after_mark: Option<MarkRef>,
    pub before_mark: Option<MarkRef>,
    /// Whether `pblk` is allocated but owned by no inode (None: unknown).
    pub pblk_unowned: Option<bool>,
    /// A later record that overwrote, discarded or zeroed this block, per the log.
    pub overwritten_by_seq: Option<u64>,
    /// Whether disk.img still holds the data there (None: no image).
    pub on_final_image: Option<bool>,
    /// How many logged writes carried this data.
    pub times_written: u32,
    /// Other sectors this data was written to.
    pub other_sectors: Vec<u64>,
}

/// The verdict on one lost block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "kebab-case")]
pub enum Attribution {
    /// The data reached the disk, but the file's final mapping does not point there.
    OrphanedWrite(WriteEvidence),
    /// The data reached the block the file maps the lblk to, and was later overwritten (or
    /// the extent is unwritten).
    InPlace(WriteEvidence),
    /// No logged write carried the data.
    NeverWritten,
}

impl Attribution {
    pub fn class(&self) -> &'static str {
        match self {
            Attribution::OrphanedWrite(_) => "orphaned-write",
            Attribution::InPlace(_) => "in-place",
            Attribution::NeverWritten => "never-written",
        }
    }
    pub fn write(&self) -> Option<&WriteEvidence> {
        match self {
            Attribution::OrphanedWrite(w) | Attribution::InPlace(w) => Some(w),
            Attribution::NeverWritten => None,
        }
    }
}

/// One lost block and its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockEvidence {
    pub path: String,
    pub ino: u64,
    pub file_id: u32,
    pub round: u32,
    pub lblk: u64,
    pub expected_generation: u32,
    /// What the content oracle found: hole, unwritten, zeros, stale, other-tag, corrupt, foreign.
    pub found: String,
    /// Where the final mapping points (None: a hole).
    pub final_pblk: Option<u64>,
    /// xxh3-64 of the acknowledged block, 16 hex digits.
    pub expected_xxh3: String,
    /// Guest CLOCK_MONOTONIC ns of the store that wrote this block (hole fills).
    pub store_t_ns: Option<u64>,
    pub attribution: Attribution,
}

/// Counts per class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub lost_blocks: u64,
    pub orphaned_write: u64,
    pub in_place: u64,
    pub never_written: u64,
    /// Orphaned writes whose block is allocated but owned by no inode.
    pub orphaned_on_unowned: u64,
    pub orphaned_not_unowned: u64,
    pub orphaned_unowned_unknown: u64,
}

impl Counts {
    fn add(&mut self, a: &Attribution) {
        self.lost_blocks += 1;
        match a {
            Attribution::OrphanedWrite(w) => {
                self.orphaned_write += 1;
                match w.pblk_unowned {
                    Some(true) => self.orphaned_on_unowned += 1,
                    Some(false) => self.orphaned_not_unowned += 1,
                    None => self.orphaned_unowned_unknown += 1,
                }
            }
            Attribution::InPlace(_) => self.in_place += 1,
            Attribution::NeverWritten => self.never_written += 1,
        }
    }
}

/// Counts for one file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCounts {
    pub path: String,
    pub round: u32,
    pub file_id: u32,
    #[serde(flatten)]
    pub counts: Counts,
}

/// Who reported the unowned blocks, and how many.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnownedSummary {
    pub source: String,
    pub blocks: Option<u64>,
}

/// evidence.json; see the module documentation for the schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub schema: String,
    pub run_id: u64,
    pub run_id_source: Option<RunIdSource>,
    pub log: LogSummary,
    pub marks: Vec<MarkRef>,
    pub unowned: UnownedSummary,
    pub unowned_explained: Option<u64>,
    pub summary: Counts,
    pub files: Vec<FileCounts>,
    pub blocks: Vec<BlockEvidence>,
    pub file_losses: usize,
}

fn found_kind(f: &Found) -> &'static str {
    match f {
        Found::Hole => "hole",
        Found::Unwritten => "unwritten",
        Found::Zeros => "zeros",
        Found::Stale(_) => "stale",
        Found::OtherTag(_) => "other-tag",
        Found::Corrupt => "corrupt",
        Found::Foreign => "foreign",
    }
}

/// Attributes every lost block. `image`: the final disk.img, to check whether the data is
/// still where it was written.
pub fn attribute(
    lost: &[LostBlock],
    run_id: u64,
    scan: &LogScan,
    unowned: &UnownedBlocks,
    image: Option<&Path>,
) -> Evidence {
    let img = image.and_then(|p| std::fs::File::open(p).ok());
    let on_image = |off: u64, hash: u64| -> Option<bool> {
        let f = img.as_ref()?;
        let mut buf = vec![0u8; TAG_BLOCK_SIZE];
        match f.read_exact_at(&mut buf, off) {
            Ok(()) => Some(xxh3_64(&buf) == hash),
            Err(_) => Some(false),
        }
    };
    let mut blocks = Vec::with_capacity(lost.len());
    let mut summary = Counts::default();
    let mut files: BTreeMap<(u32, u32, String), Counts> = BTreeMap::new();
    let mut explained = BTreeSet::new();
    for b in lost {
        let hash = expected_hash(run_id, b);
        let attribution = match scan.hits.get(&hash).and_then(|h| h.last().map(|l| (h, l))) {
            None => Attribution::NeverWritten,
            Some((all, last)) => {
                let pblk = (last.byte_offset % BLOCK == 0).then_some(last.byte_offset / BLOCK);
                let (after, before) = scan.marks_around(last.seq);
                let pblk_unowned = match (&unowned.blocks, pblk) {
                    (Some(set), Some(p)) => Some(set.contains(&p)),
                    (Some(_), None) => Some(false),
                    (None, _) => None,
                };
                if pblk_unowned == Some(true) {
                    explained.extend(pblk);
                }
                let overwritten_by_seq = scan
                    .last_touch
                    .get(&(last.byte_offset / BLOCK))
                    .copied()
                    .filter(|&s| s > last.seq);
                let mut other_sectors: Vec<u64> = all
                    .iter()
                    .map(|h| h.sector)
                    .filter(|&s| s != last.sector)
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                other_sectors.truncate(MAX_OTHER_SECTORS);
                let w = WriteEvidence {
                    sector: last.sector,
                    pblk,
                    seq: last.seq,
                    time_ns: last.time_ns,
                    queue: last.queue,
                    after_mark: after.cloned(),
                    before_mark: before.cloned(),
                    pblk_unowned,
                    overwritten_by_seq,
                    on_final_image: on_image(last.byte_offset, hash),
                    times_written: u32::try_from(all.len()).unwrap_or(u32::MAX),
                    other_sectors,
                };
                if pblk.is_some() && pblk == b.pblk {
                    Attribution::InPlace(w)
                } else {
                    Attribution::OrphanedWrite(w)
                }
            }
        };
        summary.add(&attribution);
        files
            .entry((b.round, b.file_id, b.path.clone()))
            .or_default()
            .add(&attribution);
        blocks.push(BlockEvidence {
            path: b.path.clone(),
            ino: b.ino,
            file_id: b.file_id,
            round: b.round,
            lblk: b.lblk,
            expected_generation: b.expected_generation,
            found: found_kind(&b.found).into(),
            final_pblk: b.pblk,
            expected_xxh3: format!("{hash:016x}"),
            store_t_ns: None,
            attribution,
        });
    }
    Evidence {
        schema: EVIDENCE_SCHEMA.into(),
        run_id,
        run_id_source: None,
        log: scan.summary.clone(),
        marks: scan.marks.clone(),
        unowned: UnownedSummary {
            source: unowned.source.clone(),
            blocks: unowned.blocks.as_ref().map(|s| s.len() as u64),
        },
        unowned_explained: unowned.blocks.as_ref().map(|_| explained.len() as u64),
        summary,
        files: files
            .into_iter()
            .map(|((round, file_id, path), counts)| FileCounts {
                path,
                round,
                file_id,
                counts,
            })
            .collect(),
        blocks,
        file_losses: 0,
    }
}

impl Evidence {
    /// Fills `store_t_ns` from the guest's records (hole fills and overwrites).
    pub fn attach_store_times(&mut self, rounds: &[RoundRecord]) {
        let mut t: HashMap<(u32, u32, u64), u64> = HashMap::new();
        for r in rounds {
            for f in &r.files {
                let pairs = f
                    .hole_lblks
                    .iter()
                    .zip(&f.hole_t_ns)
                    .chain(f.overwrites.iter().zip(&f.overwrite_t_ns));
                for (&l, &ns) in pairs {
                    t.insert((r.round, f.file_id, l), ns);
                }
            }
        }
        for b in &mut self.blocks {
            b.store_t_ns = t.get(&(b.round, b.file_id, b.lblk)).copied();
        }
    }
}

/// Where the run id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunIdSource {
    /// report.json's top-level `run_id`.
    Report,
    /// The workload request in agent.jsonl.
    AgentLog,
    /// A tagged block read back from disk.img.
    ImageTag,
}

#[cfg(test)]
mod tests {
    use super::*;
    use writelog::{Entry, LogOptions, LogWriter};

    fn lost(lblk: u64, pblk: Option<u64>) -> LostBlock {
        LostBlock {
            path: "r0/f0".into(),
            ino: 12,
            file_id: 0,
            round: 0,
            lblk,
            expected_generation: 0,
            found: Found::Hole,
            pblk,
        }
    }

    fn block(lblk: u64) -> Vec<u8> {
        BlockTag {
            run_id: 1,
            file_id: 0,
            round: 0,
            lblk,
            generation: 0,
        }
        .to_block()
        .to_vec()
    }

    #[test]
    fn classifies_and_brackets_with_marks() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("writes.log");
        let w = LogWriter::create(&p, LogOptions::default()).unwrap();
        w.mark("a").unwrap();
        w.append(&Entry::write(0, 80, &block(1), 0)).unwrap(); // pblk 10
        w.mark("b").unwrap();
        w.append(&Entry::write(0, 160, &block(2), 0)).unwrap(); // pblk 20
        w.append(&Entry::discard(0, 160, 4096, 0)).unwrap();
        w.append(&Entry::write(0, 244, &block(4), 0)).unwrap(); // not 4 KiB aligned
        w.finish().unwrap();
        let lost = [
            lost(1, None),
            lost(2, Some(20)),
            lost(3, None),
            lost(4, None),
        ];
        let wanted = lost.iter().map(|b| expected_hash(1, b)).collect();
        let scan = scan_log(&p, &wanted).unwrap();
        assert_eq!(scan.summary.writes, 3);
        assert_eq!(scan.marks.len(), 2);
        let unowned = UnownedBlocks {
            source: "e2fsck".into(),
            blocks: Some([10u64].into_iter().collect()),
        };
        let ev = attribute(&lost, 1, &scan, &unowned, None);
        match &ev.blocks[0].attribution {
            Attribution::OrphanedWrite(w) => {
                assert_eq!((w.sector, w.pblk, w.seq), (80, Some(10), 1));
                assert_eq!(w.after_mark.as_ref().unwrap().name, "a");
                assert_eq!(w.before_mark.as_ref().unwrap().name, "b");
                assert_eq!(w.pblk_unowned, Some(true));
            }
            other => panic!("{other:?}"),
        }
        match &ev.blocks[1].attribution {
            Attribution::InPlace(w) => {
                assert_eq!(w.overwritten_by_seq, Some(4), "the discard");
                assert!(w.before_mark.is_none());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ev.blocks[2].attribution, Attribution::NeverWritten);
        match &ev.blocks[3].attribution {
            Attribution::OrphanedWrite(w) => {
                assert_eq!(w.pblk, None, "unaligned: no file system block");
                assert_eq!(w.pblk_unowned, Some(false));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ev.summary.orphaned_on_unowned, 1);
        assert_eq!(ev.unowned_explained, Some(1));
        let j = serde_json::to_value(&ev.blocks[0]).unwrap();
        assert_eq!(j["attribution"]["class"], "orphaned-write");
        assert_eq!(j["attribution"]["sector"], 80);
        let back: Evidence = serde_json::from_value(serde_json::to_value(&ev).unwrap()).unwrap();
        assert_eq!(back, ev);
    }
}
