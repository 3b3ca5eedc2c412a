//! A file's block mapping (lblk → pblk extents) at any point of the write log, read with the
//! host ext4 reader from an image rebuilt by replaying the log, or from the final disk.img.

use std::fmt::Write as _;
use std::path::Path;

use ext4_reader::{Ext4Image, Extent, MapKind};
use serde::{Deserialize, Serialize};
use writelog::{LogPosition, LogReader};

use crate::{Error, Result};

/// A file's mapping at one point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    pub path: String,
    /// `final disk.img`, or the replay point (`mark:NAME`, ...).
    pub point: String,
    pub ino: u32,
    pub size: u64,
    pub kind: MapKind,
    pub extents: Vec<Extent>,
    /// Index / indirect blocks of the map.
    pub meta_blocks: Vec<u64>,
    /// Lost blocks of this file per report.json (lblks), for reference.
    pub lost_lblks: Vec<u64>,
    /// Where evidence.json says each lost block's data was written: lblk → (pblk, seq,
    /// whether that block is allocated but owned by no inode).
    #[serde(default)]
    pub lost_writes: std::collections::BTreeMap<u64, (Option<u64>, u64, Option<bool>)>,
}

fn image_err(path: &Path) -> impl Fn(ext4_reader::Error) -> Error + '_ {
    move |source| Error::Image {
        path: path.to_path_buf(),
        source,
    }
}

fn mapping_of(img_path: &Path, file: &str, point: String) -> Result<Mapping> {
    let img = Ext4Image::open(img_path).map_err(image_err(img_path))?;
    let ino = img.lookup(file).map_err(|e| Error::NoSuchFile {
        path: file.to_string(),
        detail: format!("{e} (at {point}; files are named like r0/f1)"),
    })?;
    let inode = img.inode(ino).map_err(image_err(img_path))?;
    let map = img.map_of(&inode).map_err(image_err(img_path))?;
    Ok(Mapping {
        path: file.to_string(),
        point,
        ino,
        size: inode.size,
        kind: map.kind,
        extents: map.extents,
        meta_blocks: map.meta_blocks,
        lost_lblks: vec![],
        lost_writes: Default::default(),
    })
}

/// The mapping of `file` (a path relative to the file system root, e.g. `r0/f1`) in the run
/// directory `dir`: from disk.img when `at` is None, else from an image rebuilt by replaying
/// writes.log up to `at` (which needs a log recorded with `--log-data`).
pub fn inspect(dir: &Path, file: &str, at: Option<&LogPosition>) -> Result<Mapping> {
    let final_img = dir.join("disk.img");
    let mut m = match at {
        None => {
            if !final_img.is_file() {
                return Err(Error::NoImage(final_img));
            }
            mapping_of(&final_img, file, "final disk.img".into())?
        }
        Some(at) => {
            let log = dir.join("writes.log");
            let rd = LogReader::open(&log)?;
            if !rd.header().has_data {
                return Err(Error::NoLogData {
                    path: log,
                    at: at.to_string(),
                });
            }
            drop(rd);
            let size = image_size(dir)?;
            let tmp = tempfile::Builder::new()
                .prefix(".inspect-")
                .suffix(".img")
                .tempfile_in(dir)
                .map_err(|source| Error::Write {
                    path: dir.join(".inspect-*.img"),
                    source,
                })?;
            tmp.as_file().set_len(size).map_err(|source| Error::Write {
                path: tmp.path().to_path_buf(),
                source,
            })?;
            let sum = writelog::replay(&log, tmp.path(), at)?;
            recover_journal(tmp.path())?;
            mapping_of(
                tmp.path(),
                file,
                format!(
                    "{at} (replayed {} records, last seq {})",
                    sum.entries,
                    sum.last_seq.map_or("-".into(), |s| s.to_string())
                ),
            )?
        }
    };
    if let Ok(run) = crate::RunDir::load(dir) {
        m.lost_lblks = run
            .lost
            .iter()
            .filter(|b| b.path == file)
            .map(|b| b.lblk)
            .collect();
        m.lost_lblks.sort_unstable();
    }
    let ev = std::fs::read_to_string(dir.join("evidence.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<crate::Evidence>(&t).ok());
    for b in ev.iter().flat_map(|e| &e.blocks).filter(|b| b.path == file) {
        if let Some(w) = b.attribution.write() {
            m.lost_writes
                .insert(b.lblk, (w.pblk, w.seq, w.pblk_unowned));
        }
    }
    Ok(m)
}

/// Size of the disk the run started from: disk.img's, else plan.json's `disk_mib`.
fn image_size(dir: &Path) -> Result<u64> {
    if let Ok(md) = std::fs::metadata(dir.join("disk.img")) {
        return Ok(md.len());
    }
    let p = dir.join("plan.json");
    let text = std::fs::read_to_string(&p).map_err(|source| Error::Read {
        path: p.clone(),
        source,
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| Error::Json { path: p, source })?;
    v.get("disk_mib")
        .and_then(serde_json::Value::as_u64)
        .map(|m| m << 20)
        .ok_or_else(|| {
            Error::Other(
                "neither disk.img nor plan.json's disk_mib gives the disk size to replay onto"
                    .into(),
            )
        })
}

/// Mapping as text: one line per extent, holes between them, and the lost blocks.
pub fn format_mapping(m: &Mapping) -> String {
    let mut s = String::new();
    let kind = match m.kind {
        MapKind::Extents { depth } => format!("extent tree, depth {depth}"),
        MapKind::Indirect => "indirect block map".into(),
        MapKind::None => "no block map".into(),
    };
    let _ = writeln!(
        s,
        "{} (inode {}) at {}: {} bytes, {kind}, {} extents, {} mapped blocks, {} map blocks",
        m.path,
        m.ino,
        m.point,
        m.size,
        m.extents.len(),
        m.extents.iter().map(|e| e.len).sum::<u64>(),
        m.meta_blocks.len()
    );
    let blocks = m.size.div_ceil(4096);
    let mut next = 0u64;
    let lost_in = |a: u64, b: u64| {
        let i = m.lost_lblks.partition_point(|&l| l < a);
        let j = m.lost_lblks.partition_point(|&l| l < b);
        j - i
    };
    let hole = |s: &mut String, a: u64, b: u64| {
        let n = lost_in(a, b);
        let _ = writeln!(
            s,
            "  lblk {a:>8}..{:<8} hole ({} blocks){}",
            b - 1,
            b - a,
            if n > 0 {
                format!("  <- {n} lost blocks")
            } else {
                String::new()
            }
        );
        for (shown, (l, (p, seq, unowned))) in m.lost_writes.range(a..b).enumerate() {
            if shown == 4 {
                let _ = writeln!(s, "        ... (all in evidence.json)");
                break;
            }
            let _ = writeln!(
                s,
                "        lblk {l}: its data was written to pblk {} (log seq {seq}){}",
                p.map_or("?".into(), |p| p.to_string()),
                match unowned {
                    Some(true) => ", a block allocated but owned by no inode",
                    _ => "",
                }
            );
        }
    };
    for e in &m.extents {
        if e.lblk > next {
            hole(&mut s, next, e.lblk);
        }
        let n = lost_in(e.lblk, e.lblk + e.len);
        let _ = writeln!(
            s,
            "  lblk {:>8}..{:<8} -> pblk {:>8}..{:<8} ({} blocks){}{}",
            e.lblk,
            e.lblk + e.len - 1,
            e.pblk,
            e.pblk + e.len - 1,
            e.len,
            if e.unwritten { " unwritten" } else { "" },
            if n > 0 {
                format!("  <- {n} lost blocks")
            } else {
                String::new()
            }
        );
        next = e.lblk + e.len;
    }
    if blocks > next {
        hole(&mut s, next, blocks);
    }
    if !m.lost_lblks.is_empty() {
        let first: Vec<String> = m.lost_lblks.iter().take(20).map(u64::to_string).collect();
        let _ = writeln!(
            s,
            "lost blocks per report.json: {} (lblk {}{})",
            m.lost_lblks.len(),
            first.join(", "),
            if m.lost_lblks.len() > 20 { ", ..." } else { "" }
        );
    }
    s
}

/// Mid-run, the newest metadata (new directories, inode updates) may sit only in the jbd2
/// journal, not yet checkpointed to its home blocks. The state a mount would see after a crash
/// at that point is the image with the journal replayed, so let e2fsck do exactly that and
/// nothing else (`-E journal_only`, e2fsck(8)).
fn recover_journal(img: &Path) -> Result<()> {
    let needs = Ext4Image::open(img)
        .map(|i| i.needs_recovery())
        .unwrap_or(false);
    if !needs {
        return Ok(());
    }
    let e2fsck = oracles::find_e2fsck().map_err(|e| Error::Write {
        path: img.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let out = std::process::Command::new(e2fsck)
        .args(["-E", "journal_only", "-y"])
        .arg(img)
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| Error::Write {
            path: img.to_path_buf(),
            source,
        })?;
    // Exit codes 0 and 1 mean the journal was replayed cleanly (e2fsck(8) EXIT CODE).
    match out.status.code() {
        Some(0) | Some(1) => Ok(()),
        other => Err(Error::Write {
            path: img.to_path_buf(),
            source: std::io::Error::other(format!(
                "e2fsck -E journal_only exited {other:?}: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            )),
        }),
    }
}
