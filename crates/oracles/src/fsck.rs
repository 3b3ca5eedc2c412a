//! The consistency oracle: the real `e2fsck -fn` on the final image, its output parsed.
//!
//! The migrate race's signature is "Block bitmap differences: -N ..." (blocks allocated in the
//! bitmap that no inode owns: the hole fills whose mapping was lost), see
//! docs/facts.md §4. The parser knows the e2fsprogs 1.47 messages
//! (e2fsck/problem.c) this project meets; anything else is kept as [`FsckFinding::Other`].

use crate::error::{OracleError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `+` : in use but free in the bitmap; `-` : marked in the bitmap but not in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sign {
    /// e2fsck `+N`: the bitmap should have the bit set.
    Plus,
    /// e2fsck `-N`: the bitmap should have the bit clear (allocated, owned by nobody).
    Minus,
}

/// One item of a bitmap differences list: `-(A--B)` or `+N` (then `start == end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BitmapRange {
    pub sign: Sign,
    pub start: u64,
    /// Inclusive.
    pub end: u64,
}

impl BitmapRange {
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start) + 1
    }
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// An inclusive block range from a multiply-claimed list (`N` or `A--B`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRange {
    pub start: u64,
    pub end: u64,
}

/// One problem e2fsck reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FsckFinding {
    BlockBitmapDifferences {
        ranges: Vec<BitmapRange>,
    },
    InodeBitmapDifferences {
        ranges: Vec<BitmapRange>,
    },
    /// "Free blocks count wrong for group #G (on_disk, counted=counted)."
    GroupFreeBlocksWrong {
        group: u64,
        on_disk: u64,
        counted: u64,
    },
    FreeBlocksWrong {
        on_disk: u64,
        counted: u64,
    },
    GroupFreeInodesWrong {
        group: u64,
        on_disk: u64,
        counted: u64,
    },
    FreeInodesWrong {
        on_disk: u64,
        counted: u64,
    },
    GroupDirectoriesWrong {
        group: u64,
        on_disk: u64,
        counted: u64,
    },
    /// Pass 1B: "Multiply-claimed block(s) in inode N: ...".
    MultiplyClaimed {
        ino: u64,
        blocks: Vec<BlockRange>,
    },
    /// Pass 1D: "File PATH (inode #N, ...) has K multiply-claimed block(s), shared with M
    /// file(s):" and the files it shares with.
    MultiplyClaimedFile {
        ino: u64,
        path: String,
        blocks: u64,
        shared_with: Vec<u64>,
    },
    /// "Inode N has illegal block(s)."
    IllegalBlocks {
        ino: u64,
    },
    /// "Illegal block #I (B) in inode N." / "Illegal indirect block (B) in inode N."
    IllegalBlock {
        ino: u64,
        which: String,
        block: u64,
    },
    /// "Inode N has an invalid extent (logical block L, invalid physical block P, len N)".
    InvalidExtent {
        ino: u64,
        lblk: Option<u64>,
        pblk: Option<u64>,
        len: Option<u64>,
    },
    /// "Inode N, i_size is A, should be B."
    InodeSizeWrong {
        ino: u64,
        size: u64,
        should_be: u64,
    },
    /// "Inode N, i_blocks is A, should be B."
    InodeBlocksWrong {
        ino: u64,
        i_blocks: u64,
        should_be: u64,
    },
    /// "Inode N ref count is A, should be B."
    RefCountWrong {
        ino: u64,
        on_disk: u64,
        should_be: u64,
    },
    /// "Unattached inode N" / "Unattached zero-length inode N."
    UnattachedInode {
        ino: u64,
        zero_length: bool,
    },
    /// "Deleted inode N has zero dtime."
    DeletedInodeZeroDtime {
        ino: u64,
    },
    /// "Entry 'NAME' in DIR (D) has deleted/unused inode N."
    EntryDeletedInode {
        dir: String,
        dir_ino: u64,
        name: String,
        ino: u64,
    },
    /// A metadata_csum failure: "Inode N passes checks, but checksum does not match inode.",
    /// "Inode N extent block passes checks, but checksum does not match extent" followed by
    /// "(logical block L, physical block P, len N)", "... directory passes checks but fails
    /// checksum." `object` is what failed ("inode", "extent block", ...). e2fsck's pass 1
    /// checks the structure first and the checksum last, so these are blocks whose contents
    /// are sound but whose checksum was computed with another seed or not updated.
    ChecksumMismatch {
        ino: Option<u64>,
        object: String,
        lblk: Option<u64>,
        pblk: Option<u64>,
        len: Option<u64>,
    },
    /// Anything not recognized, one line each.
    Other {
        text: String,
    },
}

impl FsckFinding {
    /// The inode the problem is about, if it names one (for lines kept as text, the `N` of a
    /// leading "Inode N").
    pub fn ino(&self) -> Option<u64> {
        match self {
            FsckFinding::MultiplyClaimed { ino, .. }
            | FsckFinding::MultiplyClaimedFile { ino, .. }
            | FsckFinding::IllegalBlocks { ino }
            | FsckFinding::IllegalBlock { ino, .. }
            | FsckFinding::InvalidExtent { ino, .. }
            | FsckFinding::InodeSizeWrong { ino, .. }
            | FsckFinding::InodeBlocksWrong { ino, .. }
            | FsckFinding::RefCountWrong { ino, .. }
            | FsckFinding::UnattachedInode { ino, .. }
            | FsckFinding::DeletedInodeZeroDtime { ino }
            | FsckFinding::EntryDeletedInode { ino, .. } => Some(*ino),
            FsckFinding::ChecksumMismatch { ino, .. } => *ino,
            // "Inode 13 extent tree (at level 1) could be narrower."
            FsckFinding::Other { text } => text
                .strip_prefix("Inode ")?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok(),
            FsckFinding::BlockBitmapDifferences { .. }
            | FsckFinding::InodeBitmapDifferences { .. }
            | FsckFinding::GroupFreeBlocksWrong { .. }
            | FsckFinding::FreeBlocksWrong { .. }
            | FsckFinding::GroupFreeInodesWrong { .. }
            | FsckFinding::FreeInodesWrong { .. }
            | FsckFinding::GroupDirectoriesWrong { .. } => None,
        }
    }

    /// Blocks e2fsck found allocated but owned by nobody (the lost-block signature).
    pub fn leaked_blocks(&self) -> u64 {
        match self {
            FsckFinding::BlockBitmapDifferences { ranges } => ranges
                .iter()
                .filter(|r| r.sign == Sign::Minus)
                .map(BitmapRange::len)
                .sum(),
            _ => 0,
        }
    }

    /// One line for a report.
    pub fn summary(&self) -> String {
        match self {
            FsckFinding::BlockBitmapDifferences { ranges } => {
                let minus = self.leaked_blocks();
                let plus: u64 = ranges
                    .iter()
                    .filter(|r| r.sign == Sign::Plus)
                    .map(BitmapRange::len)
                    .sum();
                format!("block bitmap differences: {minus} allocated but unowned (-), {plus} owned but free (+)")
            }
            FsckFinding::ChecksumMismatch {
                ino,
                object,
                lblk,
                pblk,
                len,
            } => {
                let mut s = match ino {
                    Some(i) => format!("inode {i}: {object} checksum does not match"),
                    None => format!("{object}: checksum does not match"),
                };
                if let (Some(l), Some(p), Some(n)) = (lblk, pblk, len) {
                    s.push_str(&format!(
                        " (logical block {l}, physical block {p}, len {n})"
                    ));
                }
                s
            }
            FsckFinding::Other { text } => text.clone(),
            other => format!("{other:?}"),
        }
    }
}

/// What `e2fsck -fn` said about an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct E2fsckReport {
    /// e2fsck's exit status: 0 clean, 4 errors left uncorrected (always so with -n), 8
    /// operational error (e.g. unreadable superblock); see e2fsck(8).
    pub exit_code: i32,
    /// Exit 0 and nothing reported.
    pub clean: bool,
    pub findings: Vec<FsckFinding>,
    /// The complete output (stderr, then stdout), for the report.
    pub output: String,
}

impl E2fsckReport {
    /// Sum of `-` block bitmap differences: allocated blocks owned by no inode.
    pub fn leaked_blocks(&self) -> u64 {
        self.findings.iter().map(FsckFinding::leaked_blocks).sum()
    }
}

/// Finds e2fsck in PATH, /usr/sbin or /sbin.
pub fn find_e2fsck() -> Result<PathBuf> {
    host_tools::find_host_tool("e2fsck").ok_or(OracleError::E2fsckMissing)
}

/// Runs `e2fsck -fn IMAGE` (forced, read-only: the image is not modified) in the C locale and
/// parses its output.
pub fn run_e2fsck(image: &Path) -> Result<E2fsckReport> {
    let program = find_e2fsck()?;
    // The superblock's mount and write times come from the guest's clock, which may run a
    // little ahead of the host's (seen under TCG): e2fsck's check_super_block() then reports
    // "Superblock last write time is in the future", which says nothing about the file system.
    // e2fsck.conf(5) `broken_system_clock` skips those time checks and nothing else
    // (docs/facts.md §8).
    let config = e2fsck_config().map_err(|source| OracleError::Spawn {
        program: program.clone(),
        source,
    })?;
    let out = Command::new(&program)
        .arg("-fn")
        .arg(image)
        .env("LC_ALL", "C")
        .env("LANG", "C")
        .env("E2FSCK_CONFIG", config.path())
        .output()
        .map_err(|source| OracleError::Spawn {
            program: program.clone(),
            source,
        })?;
    let code = out
        .status
        .code()
        .ok_or_else(|| OracleError::Killed(format!("{:?}", out.status)))?;
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    Ok(parse_e2fsck_output(code, &text))
}

/// A private e2fsck.conf for [`run_e2fsck`] (removed when dropped).
fn e2fsck_config() -> std::io::Result<tempfile::NamedTempFile> {
    use std::io::Write;
    let mut f = tempfile::Builder::new()
        .prefix("e4race-e2fsck-")
        .suffix(".conf")
        .tempfile()?;
    f.write_all(b"[options]\n\tbroken_system_clock = true\n")?;
    f.flush()?;
    Ok(f)
}

/// Parses e2fsck's output (any mix of stdout and stderr) given its exit code.
pub fn parse_e2fsck_output(exit_code: i32, text: &str) -> E2fsckReport {
    let mut findings = vec![];
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r')).peekable();
    while let Some(raw) = lines.next() {
        let line = strip_question(raw.trim());
        if line.is_empty() || is_noise(line) {
            continue;
        }
        if let Some(f) = parse_line(line) {
            let f = match f {
                // The details follow on an indented line.
                FsckFinding::InvalidExtent { ino, .. } => {
                    let detail = lines
                        .next_if(|l| l.starts_with(['\t', ' ']) && l.contains("logical block"))
                        .map(|l| l.trim().to_string());
                    let n = detail.as_deref().map(numbers).unwrap_or_default();
                    FsckFinding::InvalidExtent {
                        ino,
                        lblk: n.first().copied(),
                        pblk: n.get(1).copied(),
                        len: n.get(2).copied(),
                    }
                }
                // "Inode N extent block passes checks, but checksum does not match extent"
                // names the extent on the next, indented line.
                FsckFinding::ChecksumMismatch {
                    ino,
                    object,
                    lblk: None,
                    ..
                } => {
                    let detail = lines
                        .next_if(|l| l.starts_with(['\t', ' ']) && l.contains("logical block"))
                        .map(|l| numbers(l.trim()))
                        .unwrap_or_default();
                    FsckFinding::ChecksumMismatch {
                        ino,
                        object,
                        lblk: detail.first().copied(),
                        pblk: detail.get(1).copied(),
                        len: detail.get(2).copied(),
                    }
                }
                FsckFinding::MultiplyClaimedFile { ino, path, .. } => {
                    let has = lines
                        .next_if(|l| l.trim_start().starts_with("has "))
                        .map(|l| numbers(l.trim()));
                    let mut shared_with = vec![];
                    while let Some(l) = lines.next_if(|l| l.starts_with('\t')) {
                        if let Some(i) =
                            after(l, "(inode #").and_then(|s| numbers(s).first().copied())
                        {
                            shared_with.push(i);
                        }
                    }
                    FsckFinding::MultiplyClaimedFile {
                        ino,
                        path,
                        blocks: has.and_then(|n| n.first().copied()).unwrap_or(0),
                        shared_with,
                    }
                }
                f => f,
            };
            findings.push(f);
        } else {
            findings.push(FsckFinding::Other {
                text: line.to_string(),
            });
        }
    }
    E2fsckReport {
        exit_code,
        clean: exit_code == 0 && findings.is_empty(),
        findings,
        output: text.to_string(),
    }
}

/// Removes e2fsck's trailing prompt and -n answer ("  Fix? no", "  Clear? no", "IGNORED.").
fn strip_question(line: &str) -> &str {
    let line = line.strip_suffix("IGNORED.").unwrap_or(line).trim_end();
    for answer in ["? no", "? yes"] {
        if line.ends_with(answer) {
            // The prompt starts after the sentence's ".  " (or is the whole line).
            return match line.rfind(".  ") {
                Some(i) => &line[..=i],
                None => "",
            };
        }
    }
    line
}

fn is_noise(line: &str) -> bool {
    is_clock_skew(line)
        || is_extent_tree_hint(line)
        || line.starts_with("e2fsck ")
        || line.starts_with("Pass ")
        || line.starts_with("Running additional passes")
        || line.starts_with("(There are ")
        || line.contains("**********")
        || line.contains("***** FILE SYSTEM WAS MODIFIED *****")
        || (line.contains(" files (") && line.ends_with(" blocks"))
}

/// e2fsck/problem.c's PR_1E_CAN_NARROW_EXTENT_TREE / PR_1E_CAN_COLLAPSE_EXTENT_TREE ("Inode N
/// extent tree (at level L) could be narrower|shorter."): an offer to rebuild a valid tree more
/// compactly, flagged PR_NOT_A_FIX, which leaves the exit code 0. A tree that a racing writer
/// grew one extent at a time is valid, just not minimal.
fn is_extent_tree_hint(line: &str) -> bool {
    line.contains(" extent tree (at level ")
        && (line.ends_with("could be narrower.") || line.ends_with("could be shorter."))
}

/// e2fsck/problem.c's PR_0_FUTURE_SB_LAST_MOUNT / _WRITE (and their _FUDGED forms): the
/// guest's clock against the host's, not a property of the file system. [`run_e2fsck`] turns
/// the check off; this keeps e2fsck.txt files of older runs from counting it.
fn is_clock_skew(line: &str) -> bool {
    (line.starts_with("Superblock last ")
        && (line.contains("is in the future") || line.contains(" time (")))
        // The unfudged form's second line: "now = DATE) is in the future."
        || (line.starts_with("now = ") && line.ends_with("is in the future."))
        || line.starts_with("(by less than a day, probably due to the hardware clock")
}

/// Every decimal number in `s`, in order.
fn numbers(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|t| !t.is_empty())
        .filter_map(|t| t.parse().ok())
        .collect()
}

fn after<'a>(s: &'a str, pat: &str) -> Option<&'a str> {
    s.find(pat).map(|i| &s[i + pat.len()..])
}

fn parse_bitmap_list(s: &str) -> Option<Vec<BitmapRange>> {
    s.split_whitespace()
        .map(|tok| {
            let (sign, rest) = match tok.split_at_checked(1)? {
                ("+", r) => (Sign::Plus, r),
                ("-", r) => (Sign::Minus, r),
                _ => return None,
            };
            let rest = rest.trim_start_matches('(').trim_end_matches(')');
            let (start, end) = match rest.split_once("--") {
                Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
                None => {
                    let n = rest.parse().ok()?;
                    (n, n)
                }
            };
            Some(BitmapRange { sign, start, end })
        })
        .collect()
}

fn parse_block_list(s: &str) -> Option<Vec<BlockRange>> {
    s.split_whitespace()
        .map(|tok| match tok.split_once("--") {
            Some((a, b)) => Some(BlockRange {
                start: a.parse().ok()?,
                end: b.parse().ok()?,
            }),
            None => {
                let n = tok.parse().ok()?;
                Some(BlockRange { start: n, end: n })
            }
        })
        .collect()
}

/// Recognizes one (prompt-stripped) line.
fn parse_line(line: &str) -> Option<FsckFinding> {
    use FsckFinding::*;
    if let Some(rest) = line.strip_prefix("Block bitmap differences:") {
        return parse_bitmap_list(rest).map(|ranges| BlockBitmapDifferences { ranges });
    }
    if let Some(rest) = line.strip_prefix("Inode bitmap differences:") {
        return parse_bitmap_list(rest).map(|ranges| InodeBitmapDifferences { ranges });
    }
    let n = numbers(line);
    let n3 = || Some((*n.first()?, *n.get(1)?, *n.get(2)?));
    let n2 = || Some((*n.first()?, *n.get(1)?));
    if line.contains("count wrong") && line.contains("counted=") {
        let per_group = line.contains("for group #");
        let (g, a, b) = if per_group {
            n3()?
        } else {
            let (a, b) = n2()?;
            (0, a, b)
        };
        let f = if line.starts_with("Free blocks count wrong") {
            if per_group {
                GroupFreeBlocksWrong {
                    group: g,
                    on_disk: a,
                    counted: b,
                }
            } else {
                FreeBlocksWrong {
                    on_disk: a,
                    counted: b,
                }
            }
        } else if line.starts_with("Free inodes count wrong") {
            if per_group {
                GroupFreeInodesWrong {
                    group: g,
                    on_disk: a,
                    counted: b,
                }
            } else {
                FreeInodesWrong {
                    on_disk: a,
                    counted: b,
                }
            }
        } else if line.starts_with("Directories count wrong") && per_group {
            GroupDirectoriesWrong {
                group: g,
                on_disk: a,
                counted: b,
            }
        } else {
            return None;
        };
        return Some(f);
    }
    if let Some(rest) = line.strip_prefix("Multiply-claimed block(s) in inode ") {
        let (ino, list) = rest.split_once(':')?;
        return Some(MultiplyClaimed {
            ino: ino.trim().parse().ok()?,
            blocks: parse_block_list(list)?,
        });
    }
    if let Some(rest) = line.strip_prefix("File ") {
        let (path, tail) = rest.rsplit_once(" (inode #")?;
        return Some(MultiplyClaimedFile {
            ino: *numbers(tail).first()?,
            path: path.to_string(),
            blocks: 0,
            shared_with: vec![],
        });
    }
    if line.starts_with("Inode ") {
        if line.ends_with("has illegal block(s).") {
            return Some(IllegalBlocks { ino: *n.first()? });
        }
        if line.ends_with("has an invalid extent") {
            return Some(InvalidExtent {
                ino: *n.first()?,
                lblk: None,
                pblk: None,
                len: None,
            });
        }
        if line.contains(", i_size is ") {
            let (ino, size, should_be) = n3()?;
            return Some(InodeSizeWrong {
                ino,
                size,
                should_be,
            });
        }
        if line.contains(", i_blocks is ") {
            let (ino, i_blocks, should_be) = n3()?;
            return Some(InodeBlocksWrong {
                ino,
                i_blocks,
                should_be,
            });
        }
        if line.contains(" ref count is ") {
            let (ino, on_disk, should_be) = n3()?;
            return Some(RefCountWrong {
                ino,
                on_disk,
                should_be,
            });
        }
    }
    if line.starts_with("Illegal ") && line.contains(" in inode ") {
        let (which, tail) = line.split_once(" (")?;
        let block = *numbers(tail.split(')').next()?).first()?;
        let ino = *numbers(after(tail, " in inode ")?).first()?;
        return Some(IllegalBlock {
            ino,
            which: which.trim_start_matches("Illegal ").to_string(),
            block,
        });
    }
    if let Some(rest) = line.strip_prefix("Unattached ") {
        return Some(UnattachedInode {
            ino: *numbers(rest).first()?,
            zero_length: rest.starts_with("zero-length"),
        });
    }
    if line.starts_with("Deleted inode ") && line.contains("has zero dtime") {
        return Some(DeletedInodeZeroDtime { ino: *n.first()? });
    }
    if line.contains("checksum does not match") || line.contains("fails checksum") {
        // e2fsck's problem table (e2fsck/problem.c): "@i %i passes checks, but checksum does
        // not match @i", "@i %i @x @b passes checks, but checksum does not match @x", "@d @i %i,
        // %B, offset %N: @d passes checks but fails checksum", ...
        let (ino, object) = match line.strip_prefix("Inode ") {
            Some(rest) => {
                let (num, tail) = rest.split_once(' ')?;
                let object = tail.split("passes checks").next().unwrap_or("").trim();
                let object = if object.is_empty() { "inode" } else { object };
                (num.trim_end_matches(',').parse().ok(), object.to_string())
            }
            None if line.starts_with("Directory inode ") => {
                (n.first().copied(), "directory block".to_string())
            }
            None => (None, crate::signature::without_numbers(line)),
        };
        return Some(ChecksumMismatch {
            ino,
            object,
            lblk: None,
            pblk: None,
            len: None,
        });
    }
    if let Some(rest) = line.strip_prefix("Entry '") {
        let (name, tail) = rest.split_once("' in ")?;
        let (dir, tail) = tail.split_once(" (")?;
        let dir_ino = *numbers(tail.split(')').next()?).first()?;
        let ino = *numbers(after(tail, "has deleted/unused inode ")?).first()?;
        return Some(EntryDeletedInode {
            dir: dir.to_string(),
            dir_ino,
            name: name.to_string(),
            ino,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn guest_clock_ahead_of_the_host_is_not_a_finding() {
        // e2fsck 1.47's PR_0_FUTURE_SB_LAST_WRITE_FUDGED, as seen on a run's image.
        let out = "e2fsck 1.47.0 (5-Feb-2023)\nSuperblock last write time is in the future.\n\t(by less than a day, probably due to the hardware clock being incorrectly set)\nSuperblock last mount time (Wed Dec  2 11:02:48 2026,\n\tnow = Wed Dec  2 10:02:48 2026) is in the future.\nPass 1: Checking inodes, blocks, and sizes\n";
        let r = parse_e2fsck_output(0, out);
        assert!(r.clean, "{:?}", r.findings);
    }

    use super::*;

    #[test]
    fn bitmap_list() {
        let r = parse_line("Block bitmap differences:  -(1234--1240) +5678 -9000").unwrap();
        let FsckFinding::BlockBitmapDifferences { ranges } = &r else {
            panic!("{r:?}")
        };
        assert_eq!(
            ranges,
            &vec![
                BitmapRange {
                    sign: Sign::Minus,
                    start: 1234,
                    end: 1240
                },
                BitmapRange {
                    sign: Sign::Plus,
                    start: 5678,
                    end: 5678
                },
                BitmapRange {
                    sign: Sign::Minus,
                    start: 9000,
                    end: 9000
                },
            ]
        );
        assert_eq!(r.leaked_blocks(), 8);
        // Malformed lists are not guessed at.
        assert_eq!(parse_line("Block bitmap differences: -(12--x)"), None);
    }

    #[test]
    fn prompts_are_stripped() {
        assert_eq!(strip_question("Fix? no"), "");
        assert_eq!(strip_question("Connect to /lost+found? no"), "");
        assert_eq!(
            strip_question("Inode 15, i_blocks is 168, should be 160.  Fix? no"),
            "Inode 15, i_blocks is 168, should be 160."
        );
        assert_eq!(
            strip_question("Illegal block #4 (4000000000) in inode 15.  IGNORED."),
            "Illegal block #4 (4000000000) in inode 15."
        );
    }

    #[test]
    fn counts_and_inodes() {
        assert_eq!(
            parse_line("Free blocks count wrong for group #3 (13743, counted=13740)."),
            Some(FsckFinding::GroupFreeBlocksWrong {
                group: 3,
                on_disk: 13743,
                counted: 13740
            })
        );
        assert_eq!(
            parse_line("Free inodes count wrong (16369, counted=16368)."),
            Some(FsckFinding::FreeInodesWrong {
                on_disk: 16369,
                counted: 16368
            })
        );
        assert_eq!(
            parse_line("Unattached zero-length inode 13."),
            Some(FsckFinding::UnattachedInode {
                ino: 13,
                zero_length: true
            })
        );
        assert_eq!(
            parse_line("Deleted inode 13 has zero dtime."),
            Some(FsckFinding::DeletedInodeZeroDtime { ino: 13 })
        );
        assert_eq!(
            parse_line("Illegal indirect block (4294967295) in inode 12."),
            Some(FsckFinding::IllegalBlock {
                ino: 12,
                which: "indirect block".into(),
                block: 4294967295
            })
        );
        assert_eq!(parse_line("Something new in e2fsprogs 1.48"), None);
    }

    #[test]
    fn clean_and_operational_error() {
        let r = parse_e2fsck_output(0, "e2fsck 1.47.0 (5-Feb-2023)\nPass 1: Checking inodes\nimg: 11/16384 files (0.0% non-contiguous), 1234/65536 blocks\n");
        assert!(r.clean, "{r:?}");
        let r = parse_e2fsck_output(
            8,
            "e2fsck: Bad magic number in super-block while trying to open img\n",
        );
        assert!(!r.clean);
        assert!(
            matches!(&r.findings[0], FsckFinding::Other { text } if text.contains("Bad magic"))
        );
    }

    #[test]
    fn checksum_mismatches_are_classified_with_their_extent() {
        let out = "Pass 1: Checking inodes, blocks, and sizes\n\
Inode 13 extent block passes checks, but checksum does not match extent\n\
\t(logical block 678, physical block 36470, len 1)\n\
Fix? no\n\n\
Inode 14 passes checks, but checksum does not match inode.  Fix? no\n\n\
Directory inode 2, block #0, offset 0: directory passes checks but fails checksum.\n\
Fix? no\n";
        let r = parse_e2fsck_output(4, out);
        assert_eq!(
            r.findings,
            vec![
                FsckFinding::ChecksumMismatch {
                    ino: Some(13),
                    object: "extent block".into(),
                    lblk: Some(678),
                    pblk: Some(36470),
                    len: Some(1),
                },
                FsckFinding::ChecksumMismatch {
                    ino: Some(14),
                    object: "inode".into(),
                    lblk: None,
                    pblk: None,
                    len: None,
                },
                FsckFinding::ChecksumMismatch {
                    ino: Some(2),
                    object: "directory block".into(),
                    lblk: None,
                    pblk: None,
                    len: None,
                },
            ],
            "{r:#?}"
        );
        assert_eq!(r.findings[0].ino(), Some(13));
        assert_eq!(
            r.findings[0].summary(),
            "inode 13: extent block checksum does not match (logical block 678, physical block 36470, len 1)"
        );
    }

    #[test]
    fn serializes_with_kind_tag() {
        let j = serde_json::to_string(&FsckFinding::Other { text: "x".into() }).unwrap();
        assert_eq!(j, r#"{"kind":"other","text":"x"}"#);
    }

    /// Seen on a migrate-mmap run with delalloc: valid trees e2fsck would rebuild smaller.
    #[test]
    fn extent_tree_optimization_offers_are_not_findings() {
        let out = "e2fsck 1.47.0 (5-Feb-2023)\nPass 1: Checking inodes, blocks, and sizes\n\
Inode 13 extent tree (at level 2) could be narrower.  Optimize? no\n\n\
Inode 15 extent tree (at level 1) could be shorter.  Optimize? no\n\n\
Pass 2: Checking directory structure\n\
img: 26/99840 files (46.2% non-contiguous), 59812/99840 blocks\n";
        let r = parse_e2fsck_output(0, out);
        assert!(r.clean, "{:?}", r.findings);
        // The same words in a real problem still count.
        let r = parse_e2fsck_output(4, "Inode 13 extent tree (at level 2) is bogus.\n");
        assert_eq!(r.findings.len(), 1);
    }
}
