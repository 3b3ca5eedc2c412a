//! The content oracle: every block the guest acknowledged must be on disk, as written.
//!
//! The guest's [`RoundRecord`]s say which logical blocks of which file were written and
//! fsynced. Each block carries a self-describing [`BlockTag`], so reading the final image's
//! block back tells whether it holds exactly that tag, and if not, what it holds instead.

use crate::error::{OracleError, Result};
use e4race_protocol::{BlockContent, BlockTag, FileRecord, RoundRecord, TAG_BLOCK_SIZE};
use ext4_reader::{BlockRead, Ext4Image, FileMap};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a block that should have held a tag holds instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "tag", rename_all = "kebab-case")]
pub enum Found {
    /// Not mapped at all: the write's block allocation was lost.
    Hole,
    /// Mapped by an unwritten extent: reads as zeros.
    Unwritten,
    /// Mapped and written, but all zeros.
    Zeros,
    /// The same block (run, file, round, lblk) at an older generation than acknowledged:
    /// stale data (a defrag/overwrite scenario's loss). Never produced for generation 0.
    Stale(BlockTag),
    /// A complete tag of some other block or file (misdirected or cross-linked data).
    OtherTag(BlockTag),
    /// A torn or mixed write: starts with the tag magic but fails its checksum, or is the
    /// expected tag with some bytes still zero (see [`Found::classify`]).
    Corrupt,
    /// Anything else (metadata, another program's data).
    Foreign,
}

impl Found {
    /// The kind as report.json spells it (`kind`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Found::Hole => "hole",
            Found::Unwritten => "unwritten",
            Found::Zeros => "zeros",
            Found::Stale(_) => "stale",
            Found::OtherTag(_) => "other-tag",
            Found::Corrupt => "corrupt",
            Found::Foreign => "foreign",
        }
    }

    /// Classifies what was read where `expected` should be; `None` if it is exactly there.
    pub fn classify(expected: &BlockTag, read: &BlockRead) -> Option<Found> {
        match read {
            BlockRead::Hole => Some(Found::Hole),
            BlockRead::Unwritten { .. } => Some(Found::Unwritten),
            BlockRead::Data { bytes, .. } => match BlockTag::decode(bytes) {
                BlockContent::Tagged(t) if t == *expected => None,
                BlockContent::Tagged(t) => {
                    let same_block = BlockTag {
                        generation: expected.generation,
                        ..t
                    } == *expected;
                    Some(if same_block && t.generation < expected.generation {
                        Found::Stale(t)
                    } else {
                        Found::OtherTag(t)
                    })
                }
                BlockContent::Zeros => Some(Found::Zeros),
                BlockContent::Corrupt => Some(Found::Corrupt),
                // Every byte either zero (the hole or unwritten block it was) or the
                // expected tag's own byte: the page was read for writeback while the store
                // into it was still copying (virtio-blk asks for no stable pages, so
                // writeback does not wait for the store; the block gets the tag's tail and
                // the old zeros at its head, or any other split). Seen in crash states of
                // migrate-mmap: the first 40 bytes zero, the rest the tag.
                BlockContent::Foreign if torn_with_zeros(bytes, expected) => Some(Found::Corrupt),
                BlockContent::Foreign => Some(Found::Foreign),
            },
        }
    }
}

/// Whether `bytes` is `expected`'s block with some bytes zero instead.
fn torn_with_zeros(bytes: &[u8], expected: &BlockTag) -> bool {
    let want = expected.to_block();
    bytes.len() == want.len()
        && bytes
            .iter()
            .zip(want.iter())
            .all(|(&b, &w)| b == 0 || b == w)
}

/// An acknowledged block that is not on disk as acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostBlock {
    /// Path relative to the file system root, as in the [`FileRecord`].
    pub path: String,
    /// Inode the path resolves to in the final image.
    pub ino: u64,
    pub file_id: u32,
    pub round: u32,
    pub lblk: u64,
    /// The generation that was acknowledged.
    pub expected_generation: u32,
    pub found: Found,
    /// Physical block the lblk maps to in the image, if mapped.
    pub pblk: Option<u64>,
}

/// Why a whole file could not be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileProblemKind {
    /// The path does not resolve in the final image.
    Missing,
    /// It resolves but its inode or block map cannot be read (corrupt).
    Unreadable,
}

/// A file of the records that could not be checked block by block; all its acknowledged
/// blocks count as lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileProblem {
    pub path: String,
    pub file_id: u32,
    pub round: u32,
    pub kind: FileProblemKind,
    /// Acknowledged blocks of this file, none of which could be verified.
    pub acknowledged_blocks: u64,
    pub detail: String,
}

/// The outcome of [`check_content`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentReport {
    /// Files whose records were synced and so were checked.
    pub files_checked: u64,
    /// Files skipped because msync/fsync did not succeed (nothing was acknowledged).
    pub files_unsynced: u64,
    /// Acknowledged blocks compared against the image.
    pub blocks_checked: u64,
    pub lost: Vec<LostBlock>,
    pub file_problems: Vec<FileProblem>,
}

impl ContentReport {
    /// No acknowledged block is missing or wrong.
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty() && self.file_problems.is_empty()
    }

    fn merge(&mut self, f: FileCheck) {
        match f {
            FileCheck::Checked { blocks, lost } => {
                self.files_checked += 1;
                self.blocks_checked += blocks;
                self.lost.extend(lost);
            }
            FileCheck::Problem(p) => {
                self.files_checked += 1;
                self.file_problems.push(p);
            }
        }
    }
}

/// Checks every synced file of every round: each acknowledged lblk must hold
/// `BlockTag { run_id, file_id, round, lblk, generation: 0 }`.
pub fn check_content(
    image: &Ext4Image,
    run_id: u64,
    rounds: &[RoundRecord],
) -> Result<ContentReport> {
    require_tag_block_size(image)?;
    let mut report = ContentReport::default();
    for r in rounds {
        for f in &r.files {
            if !f.synced {
                report.files_unsynced += 1;
                continue;
            }
            let expected: BTreeMap<u64, u32> = f.acknowledged_generations();
            report.merge(check_file(image, run_id, r.round, f, &expected)?);
        }
    }
    Ok(report)
}

/// The block size must equal the tag size for one lblk to be one tag.
pub fn require_tag_block_size(image: &Ext4Image) -> Result<()> {
    if image.block_size() as usize != TAG_BLOCK_SIZE {
        return Err(OracleError::BlockSize(image.block_size()));
    }
    Ok(())
}

/// What checking one file gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCheck {
    Checked { blocks: u64, lost: Vec<LostBlock> },
    Problem(FileProblem),
}

/// Checks one file against `expected`: lblk → acknowledged generation. The defrag-style
/// scenarios pass later generations here; the migrate race passes 0 for every block.
/// Errors only for I/O on the image itself; a missing or corrupt file is a
/// [`FileCheck::Problem`].
pub fn check_file(
    image: &Ext4Image,
    run_id: u64,
    round: u32,
    file: &FileRecord,
    expected: &BTreeMap<u64, u32>,
) -> Result<FileCheck> {
    match resolve_file(image, round, file, expected) {
        Ok((ino, map)) => check_mapped(image, run_id, round, file, expected, ino, &map),
        Err(problem) => Ok(problem),
    }
}

/// `file` of `round` could not be checked (every acknowledged block of it counts as lost).
fn file_problem(
    file: &FileRecord,
    round: u32,
    expected: &BTreeMap<u64, u32>,
    kind: FileProblemKind,
    detail: String,
) -> FileCheck {
    FileCheck::Problem(FileProblem {
        path: file.path.clone(),
        file_id: file.file_id,
        round,
        kind,
        acknowledged_blocks: expected.len() as u64,
        detail,
    })
}

/// The first half of [`check_file`]: the file's inode and mapping, or the problem that
/// stops it from being checked (a [`FileCheck::Problem`]).
pub fn resolve_file(
    image: &Ext4Image,
    round: u32,
    file: &FileRecord,
    expected: &BTreeMap<u64, u32>,
) -> std::result::Result<(u32, FileMap), FileCheck> {
    let problem = |kind, detail| file_problem(file, round, expected, kind, detail);
    let ino = match image.lookup(&file.path) {
        Ok(ino) => ino,
        Err(e @ (ext4_reader::Error::NotFound(_) | ext4_reader::Error::NotADirectory(_))) => {
            return Err(problem(FileProblemKind::Missing, e.to_string()))
        }
        Err(e) => return Err(problem(FileProblemKind::Unreadable, e.to_string())),
    };
    match image.file_map(ino) {
        Ok(m) => Ok((ino, m)),
        Err(e) => Err(problem(FileProblemKind::Unreadable, e.to_string())),
    }
}

/// The second half of [`check_file`]: every expected block of the file mapped by `map`.
pub fn check_mapped(
    image: &Ext4Image,
    run_id: u64,
    round: u32,
    file: &FileRecord,
    expected: &BTreeMap<u64, u32>,
    ino: u32,
    map: &FileMap,
) -> Result<FileCheck> {
    let problem = |kind, detail| Ok(file_problem(file, round, expected, kind, detail));
    let mut lost = vec![];
    for (&lblk, &generation) in expected {
        let want = BlockTag {
            run_id,
            file_id: file.file_id,
            round,
            lblk,
            generation,
        };
        let read = match image.read_mapped_block(map, lblk) {
            Ok(r) => r,
            Err(e) => return problem(FileProblemKind::Unreadable, e.to_string()),
        };
        if let Some(found) = Found::classify(&want, &read) {
            lost.push(LostBlock {
                path: file.path.clone(),
                ino: u64::from(ino),
                file_id: file.file_id,
                round,
                lblk,
                expected_generation: generation,
                found,
                pblk: map.lookup(lblk).map(|(p, _)| p),
            });
        }
    }
    Ok(FileCheck::Checked {
        blocks: expected.len() as u64,
        lost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(generation: u32) -> BlockTag {
        BlockTag {
            run_id: 9,
            file_id: 1,
            round: 2,
            lblk: 5,
            generation,
        }
    }
    fn data(b: &[u8]) -> BlockRead {
        BlockRead::Data {
            pblk: 100,
            bytes: b.to_vec(),
        }
    }

    #[test]
    fn classify_all_kinds() {
        let want = tag(1);
        assert_eq!(Found::classify(&want, &data(&want.to_block()[..])), None);
        assert_eq!(Found::classify(&want, &BlockRead::Hole), Some(Found::Hole));
        assert_eq!(
            Found::classify(&want, &BlockRead::Unwritten { pblk: 3 }),
            Some(Found::Unwritten)
        );
        assert_eq!(
            Found::classify(&want, &data(&[0; 4096])),
            Some(Found::Zeros)
        );
        assert_eq!(
            Found::classify(&want, &data(&[7; 4096])),
            Some(Found::Foreign)
        );
        // The tag's tail with its head still zero (a store copied while writeback read it).
        let mut half = want.to_block();
        half[..40].fill(0);
        assert_eq!(
            Found::classify(&want, &data(&half[..])),
            Some(Found::Corrupt)
        );
        // Another block's tag with zeros in it is not its own torn write.
        let mut other = BlockTag { lblk: 6, ..want }.to_block();
        other[..40].fill(0);
        assert_eq!(
            Found::classify(&want, &data(&other[..])),
            Some(Found::Foreign)
        );
        let mut torn = want.to_block();
        torn[100] ^= 1;
        assert_eq!(
            Found::classify(&want, &data(&torn[..])),
            Some(Found::Corrupt)
        );
        assert_eq!(
            Found::classify(&want, &data(&tag(0).to_block()[..])),
            Some(Found::Stale(tag(0)))
        );
        assert_eq!(
            Found::classify(&want, &data(&tag(2).to_block()[..])),
            Some(Found::OtherTag(tag(2)))
        );
        let other = BlockTag { lblk: 6, ..want };
        assert_eq!(
            Found::classify(&want, &data(&other.to_block()[..])),
            Some(Found::OtherTag(other))
        );
    }

    #[test]
    fn found_serializes_readably() {
        let j = serde_json::to_string(&Found::Hole).unwrap();
        assert_eq!(j, r#"{"kind":"hole"}"#);
        let j = serde_json::to_string(&Found::OtherTag(tag(0))).unwrap();
        assert!(
            j.starts_with(r#"{"kind":"other-tag","tag":{"run_id":9"#),
            "{j}"
        );
        let back: Found = serde_json::from_str(&j).unwrap();
        assert_eq!(back, Found::OtherTag(tag(0)));
    }
}

#[cfg(test)]
mod kind_name_tests {
    use super::*;

    #[test]
    fn kind_name_is_the_serialized_kind() {
        let tag = BlockTag {
            run_id: 1,
            file_id: 2,
            round: 3,
            lblk: 4,
            generation: 5,
        };
        for f in [
            Found::Hole,
            Found::Unwritten,
            Found::Zeros,
            Found::Stale(tag),
            Found::OtherTag(tag),
            Found::Corrupt,
            Found::Foreign,
        ] {
            let v = serde_json::to_value(&f).unwrap();
            assert_eq!(v["kind"], f.kind_name(), "{v}");
        }
    }
}
