//! The reader against images made by the real mkfs.ext4 / debugfs.

mod common;

use common::*;
use ext4_reader::{BlockRead, Error, Ext4Image, MapKind};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use testkit::{debugfs, e2fsprogs_tool, mkfs, INDIRECT_OPTS};

/// Files staged in every image: (path, seed, blocks, which are written).
type Pred = fn(u64) -> bool;
const FILES: &[(&str, u8, u64, Pred)] = &[
    ("small", 1, 5, |l| l % 2 == 0),
    ("r0/f0", 2, 40, |l| l % 2 == 0),
    ("r0/f1", 3, 13, |_| true),
    // > 1036 blocks: single and double indirect in an indirect file.
    ("r1/big", 4, 1100, |l| l % 2 == 0),
    // One block past 12 + 1024 + 1024^2: triple indirect. 4.5 GB sparse.
    ("r1/huge", 5, 1_100_001, |l| l == 1_100_000),
    ("empty", 6, 0, |_| false),
];

fn build(opts: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("st");
    for &(p, seed, n, f) in FILES {
        stage_file(&st, p, seed, n, f);
    }
    // A directory big enough for several blocks (and an htree after e2fsck -D).
    for i in 0..300 {
        fs::write(
            st.join(format!("r2/entry-with-a-longish-name-{i:04}"))
                .as_path(),
            b"",
        )
        .or_else(|_| {
            fs::create_dir_all(st.join("r2"))?;
            fs::write(st.join(format!("r2/entry-with-a-longish-name-{i:04}")), b"")
        })
        .unwrap();
    }
    let img = dir.path().join("img");
    mkfs(&img, &st, opts, "64M");
    (dir, img)
}

fn expected_content(seed: u8, n: u64, f: Pred) -> Vec<u8> {
    let mut v = vec![0u8; (n * BS) as usize];
    for l in (0..n).filter(|&l| f(l)) {
        v[(l * BS) as usize..((l + 1) * BS) as usize].copy_from_slice(&block_bytes(seed, l));
    }
    v
}

fn check_against_debugfs(img_path: &Path, want_kind: fn(MapKind) -> bool) {
    let img = Ext4Image::open(img_path).unwrap();
    for &(p, seed, n, f) in FILES {
        let ino = img.lookup(p).unwrap();
        assert_eq!(ino, img.lookup(&format!("/{p}")).unwrap());
        let inode = img.inode(ino).unwrap();
        assert_eq!(inode.size, n * BS, "{p}");
        let map = img.file_map(ino).unwrap();
        assert!(want_kind(map.kind), "{p}: {:?}", map.kind);
        // Mapping equals debugfs's view, block by block, metadata included.
        let (dbg, dbg_meta) = debugfs_map(img_path, &format!("/{p}"));
        let mut mine = BTreeMap::new();
        for e in img.mapping(ino).unwrap() {
            for k in 0..e.len {
                mine.insert(e.lblk + k, (e.pblk + k, e.unwritten));
            }
        }
        assert_eq!(mine, dbg, "{p}");
        assert_eq!(
            map.meta_blocks.iter().copied().collect::<BTreeSet<_>>(),
            dbg_meta,
            "{p}"
        );
        // Holes really are holes in the map.
        for l in (0..n.min(2000)).filter(|&l| !f(l)) {
            assert_eq!(
                img.read_mapped_block(&map, l).unwrap(),
                BlockRead::Hole,
                "{p}:{l}"
            );
        }
        if n < 100_000 {
            assert_eq!(
                img.read_file(ino).unwrap(),
                expected_content(seed, n, f),
                "{p}"
            );
        } else {
            let l = n - 1;
            match img.read_block(ino, l).unwrap() {
                BlockRead::Data { bytes, .. } => assert_eq!(bytes, block_bytes(seed, l)),
                other => panic!("{p}:{l}: {other:?}"),
            }
        }
    }
    // The many-entry directory lists every name.
    let r2 = img.lookup("r2").unwrap();
    let names: BTreeSet<String> = img
        .read_dir(r2)
        .unwrap()
        .into_iter()
        .map(|e| e.name_lossy())
        .collect();
    assert_eq!(names.len(), 302, "300 files + . + ..");
    assert!(img.lookup("r2/entry-with-a-longish-name-0299").is_ok());
    assert!(matches!(img.lookup("r2/nope"), Err(Error::NotFound(_))));
    assert!(matches!(
        img.lookup("small/x"),
        Err(Error::NotADirectory(_))
    ));
    // A clean image: bitmaps agree with ownership exactly.
    let acct = img.block_accounting().unwrap();
    assert!(acct.leaked.is_empty(), "{:?}", acct.leaked);
    assert!(
        acct.unmarked_in_use.is_empty(),
        "{:?}",
        acct.unmarked_in_use
    );
    assert!(acct.multiply_claimed.is_empty());
    assert!(
        acct.unreadable_inodes.is_empty(),
        "{:?}",
        acct.unreadable_inodes
    );
}

#[test]
fn indirect_image_matches_debugfs() {
    let (_d, img) = build(INDIRECT_OPTS);
    check_against_debugfs(&img, |k| k == MapKind::Indirect);
}

#[test]
fn extent_image_matches_debugfs() {
    let (_d, img) = build(&[]);
    check_against_debugfs(&img, |k| matches!(k, MapKind::Extents { .. }));
    // r0/f0 has 20 extents: more than the 4 in the inode, so depth 1.
    let i = Ext4Image::open(&img).unwrap();
    let m = i.file_map(i.lookup("r0/f0").unwrap()).unwrap();
    assert_eq!(m.kind, MapKind::Extents { depth: 1 });
}

#[test]
fn htree_directory_reads_linearly() {
    let (_d, img) = build(&[]);
    // e2fsck -D rebuilds directories as hashed (htree) ones.
    let out = std::process::Command::new(e2fsprogs_tool("e2fsck"))
        .args(["-fyD"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.code().unwrap_or(8) <= 1, "{out:?}");
    let i = Ext4Image::open(&img).unwrap();
    let r2 = i.lookup("r2").unwrap();
    assert_ne!(
        i.inode(r2).unwrap().flags & ext4_reader::consts::EXT4_INDEX_FL,
        0,
        "e2fsck -D should have indexed r2"
    );
    let n = i.read_dir(r2).unwrap().len();
    assert_eq!(n, 302);
    assert!(i.lookup("r2/entry-with-a-longish-name-0150").is_ok());
}

#[test]
fn unwritten_extent_reads_as_unwritten() {
    let (_d, img) = build(&[]);
    debugfs(&img, true, "fallocate /r0/f0 1 1");
    let i = Ext4Image::open(&img).unwrap();
    let ino = i.lookup("r0/f0").unwrap();
    let (dbg, _) = debugfs_map(&img, "/r0/f0");
    let (pblk, unwritten) = dbg[&1];
    assert!(unwritten);
    assert_eq!(i.read_block(ino, 1).unwrap(), BlockRead::Unwritten { pblk });
    // read_file shows it as zeros.
    let data = i.read_file(ino).unwrap();
    assert!(data[4096..8192].iter().all(|&b| b == 0));
    assert_eq!(i.block_accounting().unwrap().leaked, Vec::<u64>::new());
}

#[test]
fn bitmap_tampering_shows_in_accounting() {
    let (_d, img) = build(INDIRECT_OPTS);
    let i = Ext4Image::open(&img).unwrap();
    let allocated = i.allocated_blocks().unwrap();
    let free = (8000..16000).find(|&b| !allocated.contains(b)).unwrap();
    let ino = i.lookup("r0/f1").unwrap();
    let victim = i.mapping(ino).unwrap()[0].pblk;
    drop(i);
    debugfs(&img, true, &format!("setb {free}"));
    debugfs(&img, true, &format!("freeb {victim}"));
    let i = Ext4Image::open(&img).unwrap();
    let acct = i.block_accounting().unwrap();
    assert_eq!(acct.leaked, vec![free]);
    assert_eq!(acct.unmarked_in_use, vec![victim]);
    let owners = i.owners_of(&[free, victim]).unwrap();
    assert_eq!(owners[&free], Vec::<u32>::new());
    assert_eq!(owners[&victim], vec![ino]);
    let g = (free - u64::from(i.superblock().first_data_block))
        / u64::from(i.superblock().blocks_per_group);
    assert!(i.block_bitmap(g).unwrap().set_items().any(|b| b == free));
}

#[test]
fn one_k_blocks_and_meta_bg() {
    for opts in [
        vec!["-b", "1024"],
        vec!["-O", "meta_bg,^resize_inode"],
        vec!["-O", "^has_journal,sparse_super2"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let st = dir.path().join("st");
        stage_file(&st, "a/b", 9, 30, |l| l % 3 != 1);
        let img = dir.path().join("img");
        // -b is given twice when opts override it; mke2fs takes the last one.
        mkfs(&img, &st, &opts, "32M");
        let i = Ext4Image::open(&img).unwrap();
        let ino = i.lookup("a/b").unwrap();
        assert_eq!(
            i.read_file(ino).unwrap(),
            expected_content(9, 30, |l| l % 3 != 1),
            "{opts:?}"
        );
        let acct = i.block_accounting().unwrap();
        assert!(acct.leaked.is_empty(), "{opts:?}: {:?}", acct.leaked);
        assert!(
            acct.unmarked_in_use.is_empty(),
            "{opts:?}: {:?}",
            acct.unmarked_in_use
        );
    }
}
