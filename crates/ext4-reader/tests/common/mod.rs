//! Helpers that build real ext4 images with e2fsprogs (mkfs.ext4 -d, debugfs) in a tempdir.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use testkit::{debugfs, e2fsprogs_tool};

pub const BS: u64 = 4096;

/// The content a staged block gets: every byte derived from (file seed, lblk).
pub fn block_bytes(seed: u8, lblk: u64) -> Vec<u8> {
    (0..BS)
        .map(|i| (i as u8) ^ seed ^ (lblk as u8).wrapping_mul(31) ^ ((lblk >> 8) as u8))
        .collect()
}

/// Writes a sparse file of `nblocks` blocks where `written(lblk)` blocks hold data.
pub fn stage_file(root: &Path, rel: &str, seed: u8, nblocks: u64, written: impl Fn(u64) -> bool) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    let mut f = fs::File::create(&p).unwrap();
    for l in (0..nblocks).filter(|&l| written(l)) {
        f.seek(SeekFrom::Start(l * BS)).unwrap();
        f.write_all(&block_bytes(seed, l)).unwrap();
    }
    f.set_len(nblocks * BS).unwrap();
}

/// debugfs `stat`'s BLOCKS/EXTENTS list: lblk → (pblk, unwritten), and the map's metadata
/// blocks (IND, DIND, TIND, ETBn).
pub fn debugfs_map(img: &Path, path: &str) -> (BTreeMap<u64, (u64, bool)>, BTreeSet<u64>) {
    let text = debugfs(img, false, &format!("stat {path}"));
    let list = text
        .split_once("BLOCKS:\n")
        .or_else(|| text.split_once("EXTENTS:\n"))
        .map(|(_, rest)| rest.lines().next().unwrap_or(""))
        .unwrap_or("");
    let mut data = BTreeMap::new();
    let mut meta = BTreeSet::new();
    for item in list.split(", ").filter(|s| !s.is_empty()) {
        let (l, p) = item.trim().split_once("):").expect(item);
        let l = l.trim_start_matches('(');
        let unwritten = l.ends_with("[u]");
        let l = l.trim_end_matches("[u]");
        let range = |s: &str| -> (u64, u64) {
            match s.split_once('-') {
                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                None => (s.parse().unwrap(), s.parse().unwrap()),
            }
        };
        let (p0, p1) = range(p);
        if l.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            let (l0, l1) = range(l);
            assert_eq!(l1 - l0, p1 - p0, "{item}");
            for k in 0..=l1 - l0 {
                data.insert(l0 + k, (p0 + k, unwritten));
            }
        } else {
            meta.extend(p0..=p1);
        }
    }
    (data, meta)
}

pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(e2fsprogs_tool(cmd))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.code().is_some(), "{cmd}: {out:?}");
}
