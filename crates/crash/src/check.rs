//! Checking one crash state: replay the journal as a mount would, run `e2fsck -fn`, check
//! what the guest had made durable, then take the replay back with e2undo.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use e4race_protocol::{FileRecord, RoundRecord};
use ext4_reader::{Ext4Image, FileMap, OrphanFreesOwned};
use oracles::{
    check_mapped, require_tag_block_size, resolve_file, BitmapRange, FileCheck, FileProblem, Found,
    FsckFinding, LostBlock, Sign,
};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What the guest's workload says is durable, and when.
#[derive(Debug, Clone, Default)]
pub struct Durability {
    /// The run id in every block tag.
    pub run_id: u64,
    pub rounds: Vec<RoundRecord>,
    /// Log seq of each round's `round-N-done` mark. The agent sends it once every file of
    /// the round was msynced and fsynced, so a crash after it must keep the round's blocks.
    pub done_at: BTreeMap<u32, u64>,
}

impl Durability {
    /// The rounds whose every acknowledged block was durable before log seq `point`.
    fn durable_rounds(&self, point: u64) -> impl Iterator<Item = &RoundRecord> {
        self.rounds
            .iter()
            .filter(move |r| self.done_at.get(&r.round).is_some_and(|&s| s < point))
    }

    /// How many rounds were durable before `point`.
    pub fn durable_count(&self, point: u64) -> usize {
        self.durable_rounds(point).count()
    }

    /// The rounds that had started but not finished at `point` (their files are in flight).
    fn in_flight_rounds(&self, point: u64) -> impl Iterator<Item = &RoundRecord> {
        self.rounds
            .iter()
            .filter(move |r| self.done_at.get(&r.round).is_none_or(|&s| s >= point))
    }
}

/// What was wrong with one crash state (empty: the state is consistent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFindings {
    /// Journal replay failed (e2fsck's output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_replay: Option<String>,
    /// e2fsck -fn after the replay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fsck: Vec<FsckFinding>,
    /// Durable blocks that are not as acknowledged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<LostBlock>,
    /// Durable files that are missing or unreadable (every block of them lost).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost_files: Vec<FileProblem>,
    /// In-flight blocks that hold neither old nor new data of their own block: another
    /// block's tag, or foreign bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub garbage: Vec<LostBlock>,
    /// Blocks the mount's orphan cleanup would free while a live inode maps them (at most
    /// [`MAX_CLASHES`] listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphan_frees_owned: Vec<OrphanFreesOwned>,
    /// The file system could not be read at all after replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
    /// Not a problem: inodes with no link and no dtime, on no list, that e2fsck reported
    /// together with exactly the blocks and inode bits they hold (see [`leaked_inodes`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaked_inodes: Vec<u64>,
}

impl StateFindings {
    pub fn is_clean(&self) -> bool {
        self.journal_replay.is_none()
            && self.fsck.is_empty()
            && self.lost.is_empty()
            && self.lost_files.is_empty()
            && self.garbage.is_empty()
            && self.orphan_frees_owned.is_empty()
            && self.unreadable.is_none()
    }

    /// The kind of the first problem (a signature key: no block, inode or seq in it).
    pub fn problem(&self) -> String {
        if self.journal_replay.is_some() {
            "journal-replay".into()
        } else if self.unreadable.is_some() {
            "unreadable".into()
        } else if !self.lost.is_empty() || !self.lost_files.is_empty() {
            "durable-lost".into()
        } else if !self.orphan_frees_owned.is_empty() {
            "orphan-frees-owned".into()
        } else if let Some(f) = self.fsck.first() {
            let kind = serde_json::to_value(f)
                .ok()
                .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string))
                .unwrap_or_else(|| "other".into());
            format!("e2fsck:{kind}")
        } else if !self.garbage.is_empty() {
            "garbage".into()
        } else {
            "none".into()
        }
    }

    /// One line: what kinds of problem, how many.
    pub fn summary(&self) -> String {
        let mut parts = vec![];
        if self.journal_replay.is_some() {
            parts.push("journal replay failed".to_string());
        }
        if let Some(u) = &self.unreadable {
            parts.push(format!("unreadable after replay: {u}"));
        }
        if !self.fsck.is_empty() {
            let first = self
                .fsck
                .first()
                .map(FsckFinding::summary)
                .unwrap_or_default();
            parts.push(format!(
                "e2fsck: {} finding(s), first: {first}",
                self.fsck.len()
            ));
        }
        if !self.lost.is_empty() {
            parts.push(format!("{} durable block(s) lost", self.lost.len()));
        }
        if !self.lost_files.is_empty() {
            parts.push(format!(
                "{} durable file(s) missing or unreadable",
                self.lost_files.len()
            ));
        }
        if let Some(c) = self.orphan_frees_owned.first() {
            parts.push(format!(
                "orphan cleanup at mount would free {} block(s) a live inode maps (first: \
                 orphan inode {} frees block {} of inode {})",
                self.orphan_frees_owned.len(),
                c.orphan,
                c.pblk,
                c.owner
            ));
        }
        if !self.garbage.is_empty() {
            parts.push(format!(
                "{} in-flight block(s) hold garbage",
                self.garbage.len()
            ));
        }
        parts.join("; ")
    }
}

/// How many orphan-cleanup clashes a state lists (the count of the first is what matters).
pub const MAX_CLASHES: usize = 64;

/// The host tools a check runs, and what the durability check of the last states found.
pub struct Checker {
    e2fsck: PathBuf,
    e2undo: PathBuf,
    undo: PathBuf,
    /// Per durable file (round, file id): its inode, its mapping and what checking it gave,
    /// as long as none of its data blocks has been written since (see [`Self::check_reusing`]).
    checked: RefCell<HashMap<(u32, u32), CheckedFile>>,
}

/// A durable file's last check.
struct CheckedFile {
    ino: u32,
    map: FileMap,
    result: FileCheck,
}

impl CheckedFile {
    /// Whether a block the file maps is among `dirty` (4 KiB block numbers).
    fn touched_by(&self, dirty: &BTreeSet<u64>) -> bool {
        self.map
            .extents
            .iter()
            .any(|e| dirty.range(e.pblk..e.pblk + e.len).next().is_some())
    }
}

impl Checker {
    /// Finds e2fsck and e2undo (e2fsprogs); `undo` is where the replay's undo file goes.
    pub fn new(undo: PathBuf) -> Result<Self> {
        let find =
            |name: &'static str| host_tools::find_host_tool(name).ok_or(Error::ToolMissing(name));
        Ok(Self {
            e2fsck: find("e2fsck")?,
            e2undo: find("e2undo")?,
            undo,
            checked: RefCell::default(),
        })
    }

    /// Checks the state in `image` as of log seq `point` (records below it applied, or
    /// dropped by the caller), and leaves `image` as it found it.
    pub fn check(&self, image: &Path, point: u64, d: &Durability) -> Result<StateFindings> {
        self.check_state(image, point, d, true, None)
    }

    /// [`Self::check`] for states of one image in log order. `dirty` holds every 4 KiB block
    /// written since the previous call (log records applied, writes dropped or put back). A
    /// durable file whose inode and mapping are as at its last check, and none of whose
    /// data blocks is dirty, holds the same bytes, so its last result stands and its blocks
    /// are not read again. The journal replay of a state does not change that: jbd2 journals
    /// metadata only, in data=ordered and data=writeback (Documentation/filesystems/ext4.rst,
    /// "Data Mode"), so the caller must not use this under data=journal.
    pub fn check_reusing(
        &self,
        image: &Path,
        point: u64,
        d: &Durability,
        dirty: &BTreeSet<u64>,
    ) -> Result<StateFindings> {
        self.checked
            .borrow_mut()
            .retain(|_, c| !c.touched_by(dirty));
        self.check_state(image, point, d, true, Some(()))
    }

    /// [`Self::check`] on a copy that is thrown away after: the journal replay is not taken
    /// back (the copy-per-state baseline of the bench, as fstests' `replay-log --fsck` works).
    pub fn check_copy(&self, copy: &Path, point: u64, d: &Durability) -> Result<StateFindings> {
        self.check_state(copy, point, d, false, None)
    }

    /// `reuse`: whether durable files' last results may stand (see [`Self::check_reusing`]).
    fn check_state(
        &self,
        image: &Path,
        point: u64,
        d: &Durability,
        undo: bool,
        reuse: Option<()>,
    ) -> Result<StateFindings> {
        let mut out = StateFindings::default();
        let _ = std::fs::remove_file(&self.undo);
        let replay = if needs_recovery(image)? {
            // The mount's recovery: jbd2 replays the committed transactions
            // (fs/jbd2/recovery.c jbd2_journal_recover). `-E journal_only` does that and
            // nothing else; `-z` keeps the blocks it overwrites so that e2undo can take it back.
            let mut cmd = Command::new(&self.e2fsck);
            cmd.args(["-E", "journal_only", "-y"]);
            if undo {
                cmd.arg("-z").arg(&self.undo);
            }
            self.run(cmd.arg(image))?
        } else {
            (0, String::new())
        };
        // e2fsck(8): 0 nothing done, 1 errors corrected (the journal was replayed).
        if replay.0 > 1 {
            out.journal_replay = Some(format!("e2fsck exit {}: {}", replay.0, replay.1.trim()));
        } else {
            let fsck = oracles::run_e2fsck(image)?;
            let fs = Ext4Image::open(image);
            let findings: Vec<FsckFinding> = fsck
                .findings
                .into_iter()
                .filter(|f| !benign_after_crash(f))
                .collect();
            (out.fsck, out.leaked_inodes) = match &fs {
                Ok(fs) => leaked_inodes(findings, fs),
                Err(_) => (findings, Vec::new()),
            };
            match fs {
                Ok(fs) => {
                    // The mount after the crash runs ext4_orphan_cleanup(); what it would
                    // free must not be mapped by a live file (6eeaf88fd586).
                    match fs.orphan_frees_owned() {
                        Ok(mut c) => {
                            c.truncate(MAX_CLASHES);
                            out.orphan_frees_owned = c;
                        }
                        Err(e) => out.unreadable = Some(format!("orphan list: {e}")),
                    }
                    self.content(&fs, point, d, reuse.is_some(), &mut out)?
                }
                Err(e) => out.unreadable = Some(e.to_string()),
            }
        }
        if self.undo.exists() {
            let undo = self.run(Command::new(&self.e2undo).arg(&self.undo).arg(image))?;
            if undo.0 != 0 {
                return Err(Error::Undo(undo.1));
            }
        }
        Ok(out)
    }

    fn content(
        &self,
        fs: &Ext4Image,
        point: u64,
        d: &Durability,
        reuse: bool,
        out: &mut StateFindings,
    ) -> Result<()> {
        require_tag_block_size(fs)?;
        for r in d.durable_rounds(point) {
            for f in r.files.iter().filter(|f| f.synced) {
                match self.file_result(fs, d.run_id, r.round, f, reuse)? {
                    FileCheck::Checked { lost, .. } => out.lost.extend(lost),
                    FileCheck::Problem(p) => out.lost_files.push(p),
                }
            }
        }
        for r in d.in_flight_rounds(point) {
            for f in &r.files {
                // A file not created yet, or not readable yet, holds nothing to judge.
                if let FileCheck::Checked { lost, .. } =
                    self.file_result(fs, d.run_id, r.round, f, reuse)?
                {
                    out.garbage
                        .extend(lost.into_iter().filter(|l| !old_or_new(&l.found)));
                }
            }
        }
        Ok(())
    }

    /// `check_file` of one file, or with `reuse` its last result when its inode and mapping
    /// are unchanged and no block it maps was written since (`check_reusing` drops those).
    fn file_result(
        &self,
        fs: &Ext4Image,
        run_id: u64,
        round: u32,
        f: &FileRecord,
        reuse: bool,
    ) -> Result<FileCheck> {
        let expected = f.acknowledged_generations();
        let (ino, map) = match resolve_file(fs, round, f, &expected) {
            Ok(m) => m,
            Err(problem) => return Ok(problem),
        };
        let key = (round, f.file_id);
        let mut checked = self.checked.borrow_mut();
        if let Some(c) = checked.get(&key) {
            if reuse && c.ino == ino && c.map == map {
                return Ok(c.result.clone());
            }
        }
        let result = check_mapped(fs, run_id, round, f, &expected, ino, &map)?;
        if reuse {
            checked.insert(
                key,
                CheckedFile {
                    ino,
                    map,
                    result: result.clone(),
                },
            );
        }
        Ok(result)
    }

    fn run(&self, cmd: &mut Command) -> Result<(i32, String)> {
        let o = cmd
            .env("LC_ALL", "C")
            .output()
            .map_err(|e| Error::Spawn(format!("{cmd:?}"), e))?;
        let mut text = String::from_utf8_lossy(&o.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&o.stdout));
        Ok((o.status.code().unwrap_or(-1), text))
    }
}

/// Whether the superblock asks for journal recovery: EXT4_FEATURE_INCOMPAT_RECOVER (0x4) in
/// s_feature_incompat (offset 0x60 of the superblock, which starts at byte 1024), set while
/// the journal holds transactions not yet checkpointed (fs/ext4/ext4.h).
fn needs_recovery(image: &Path) -> Result<bool> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(image).map_err(|e| Error::io(image, "open the crash state", e))?;
    let mut b = [0u8; 4];
    f.read_exact_at(&mut b, 1024 + 0x60)
        .map_err(|e| Error::io(image, "read the superblock of", e))?;
    Ok(u32::from_le_bytes(b) & 0x4 != 0)
}

/// An in-flight block may hold its old or new data: not there yet (a hole, an unwritten
/// extent, zeros), an older generation of itself, or a torn mix of the two. Torn: virtio-blk
/// does not ask for stable pages (no BLK_FEAT_STABLE_WRITES), so an mmap store may change a
/// page while writeback's write of it is in flight, and the device writes part old, part new;
/// the page stays dirty and the next writeback puts it right (seen in defrag-mmap logs with
/// its 5 ms writeback loop: the tag's checksum fails in states between the two writes).
fn old_or_new(found: &Found) -> bool {
    matches!(
        found,
        Found::Hole | Found::Unwritten | Found::Zeros | Found::Stale(_) | Found::Corrupt
    )
}

/// Takes out of `findings` the inodes a crash leaks by design, and what e2fsck says of them.
/// EXT4_IOC_MIGRATE's temporary inode has no link from its creation on and, since
/// 6eeaf88fd586 ("ext4: don't use the orphan list when migrating an inode"), is on no
/// orphan list either: a crash between its creation and its eviction leaves an inode in use
/// with i_links_count 0 and i_dtime 0, which e2fsck reports as "Deleted inode N has zero
/// dtime", with "-N" in the inode bitmap and "-B" for each block it holds, and fixes by
/// clearing it. That is the trade the commit made ("e2fsck will clean it up"). An inode is
/// taken out only if the image agrees (links 0, dtime 0) and only the bitmap bits of its
/// own inode number and of blocks it maps go with it; anything else stays a finding.
pub(crate) fn leaked_inodes(
    findings: Vec<FsckFinding>,
    fs: &Ext4Image,
) -> (Vec<FsckFinding>, Vec<u64>) {
    let mut leaked: Vec<u64> = Vec::new();
    let mut blocks = BTreeSet::new();
    for f in &findings {
        let FsckFinding::DeletedInodeZeroDtime { ino } = *f else {
            continue;
        };
        let Ok(n) = u32::try_from(ino) else { continue };
        let (Ok(inode), Ok(map)) = (fs.inode(n), fs.file_map(n)) else {
            continue;
        };
        if inode.links_count != 0 || inode.dtime != 0 {
            continue;
        }
        for e in &map.extents {
            blocks.extend(e.pblk..e.pblk + e.len);
        }
        blocks.extend(map.meta_blocks.iter().copied());
        leaked.push(ino);
    }
    if leaked.is_empty() {
        return (findings, leaked);
    }
    let inode_bit =
        |r: &BitmapRange| r.sign == Sign::Minus && (r.start..=r.end).all(|i| leaked.contains(&i));
    let block_bit =
        |r: &BitmapRange| r.sign == Sign::Minus && (r.start..=r.end).all(|b| blocks.contains(&b));
    let kept = findings
        .into_iter()
        .filter_map(|f| match f {
            FsckFinding::DeletedInodeZeroDtime { ino } if leaked.contains(&ino) => None,
            FsckFinding::ChecksumMismatch {
                ino: Some(i),
                ref object,
                ..
            } if object == "inode" && leaked.contains(&i) => None,
            FsckFinding::InodeBitmapDifferences { ranges } => {
                let rest: Vec<_> = ranges.into_iter().filter(|r| !inode_bit(r)).collect();
                (!rest.is_empty()).then_some(FsckFinding::InodeBitmapDifferences { ranges: rest })
            }
            FsckFinding::BlockBitmapDifferences { ranges } => {
                let rest: Vec<_> = ranges.into_iter().filter(|r| !block_bit(r)).collect();
                (!rest.is_empty()).then_some(FsckFinding::BlockBitmapDifferences { ranges: rest })
            }
            other => Some(other),
        })
        .collect();
    (kept, leaked)
}

/// What e2fsck reports after any crash that a mount puts right by itself: the superblock's
/// free block and inode totals are not journaled; ext4_fill_super() recomputes them from
/// the group descriptors (ext4_count_free_clusters, ext4_count_free_inodes).
fn benign_after_crash(f: &FsckFinding) -> bool {
    matches!(
        f,
        FsckFinding::FreeBlocksWrong { .. } | FsckFinding::FreeInodesWrong { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inode in use with no link, no dtime and on no list (what a crash leaves of
    /// EXT4_IOC_MIGRATE's temporary inode): e2fsck's findings about it go, others stay.
    #[test]
    fn a_leaked_unlinked_inode_is_not_a_finding_but_other_damage_is() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("d");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("keep"), vec![7u8; 8192]).unwrap();
        std::fs::write(src.join("tmp"), vec![9u8; 40960]).unwrap();
        let img = dir.path().join("img");
        testkit::mkfs(&img, &src, &[], "32M");
        let fs = Ext4Image::open(&img).unwrap();
        let tmp = fs.lookup("/tmp").unwrap();
        drop(fs);
        testkit::debugfs_script(&img, &format!("unlink /tmp\nsif <{tmp}> links_count 0\n"));
        let fsck = oracles::run_e2fsck(&img).unwrap();
        let fs = Ext4Image::open(&img).unwrap();
        let findings: Vec<_> = fsck
            .findings
            .into_iter()
            .filter(|f| !benign_after_crash(f))
            .collect();
        assert!(
            findings
                .iter()
                .any(|f| matches!(f, FsckFinding::DeletedInodeZeroDtime { .. })),
            "{findings:?}"
        );
        let (kept, leaked) = leaked_inodes(findings.clone(), &fs);
        assert_eq!(leaked, vec![u64::from(tmp)]);
        assert!(
            kept.iter().all(|f| !matches!(
                f,
                FsckFinding::DeletedInodeZeroDtime { .. }
                    | FsckFinding::InodeBitmapDifferences { .. }
                    | FsckFinding::BlockBitmapDifferences { .. }
            )),
            "{kept:?}"
        );
        // A block bit that is not the leaked inode's stays.
        let mut more = findings;
        more.push(FsckFinding::BlockBitmapDifferences {
            ranges: vec![BitmapRange {
                sign: Sign::Minus,
                start: 7000,
                end: 7000,
            }],
        });
        let (kept, _) = leaked_inodes(more, &fs);
        assert!(
            kept.iter().any(|f| matches!(f, FsckFinding::BlockBitmapDifferences { ranges } if ranges.len() == 1 && ranges[0].start == 7000)),
            "{kept:?}"
        );
        // An inode that still has a link is not leaked, whatever e2fsck said.
        let keep = fs.lookup("/keep").unwrap();
        let (kept, leaked) = leaked_inodes(
            vec![FsckFinding::DeletedInodeZeroDtime {
                ino: u64::from(keep),
            }],
            &fs,
        );
        assert!(leaked.is_empty());
        assert_eq!(kept.len(), 1);
    }
}
