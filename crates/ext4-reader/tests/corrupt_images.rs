//! Corrupt images give errors, never panics or runaway work.

mod common;

use common::*;
use ext4_reader::{Error, Ext4Image};
use std::fs;
use std::path::PathBuf;
use testkit::{debugfs, mkfs, INDIRECT_OPTS};

fn small_image(opts: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("st");
    stage_file(&st, "r0/f0", 1, 40, |l| l % 2 == 0);
    stage_file(&st, "small", 2, 3, |_| true);
    let img = dir.path().join("img");
    mkfs(&img, &st, opts, "16M");
    (dir, img)
}

#[test]
fn truncated_image() {
    let (_d, img) = small_image(&[]);
    let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(1 << 20).unwrap();
    let e = Ext4Image::open(&img).unwrap_err();
    assert!(matches!(e, Error::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("truncated"));
    f.set_len(1500).unwrap();
    assert!(matches!(
        Ext4Image::open(&img),
        Err(Error::Truncated { .. })
    ));
    f.set_len(0).unwrap();
    assert!(Ext4Image::open(&img).is_err());
}

#[test]
fn missing_file_is_io_error() {
    let e = Ext4Image::open("/nonexistent/e4race.img").unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

#[test]
fn garbage_superblock() {
    let (_d, img) = small_image(&[]);
    let mut b = fs::read(&img).unwrap();
    for (i, x) in b[1024..2048].iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    fs::write(&img, &b).unwrap();
    let e = Ext4Image::open(&img).unwrap_err();
    assert!(matches!(e, Error::BadSuperblock(_)), "{e}");
    // Right magic, absurd geometry.
    b[1024..2048].fill(0xFF);
    b[1024 + 0x38..1024 + 0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
    b[1024 + 0x60..1024 + 0x64].fill(0); // no unknown incompat features
    fs::write(&img, &b).unwrap();
    assert!(Ext4Image::open(&img).is_err());
}

#[test]
fn extent_header_bad_magic() {
    let (_d, img) = small_image(&[]);
    debugfs(&img, true, "sif /r0/f0 block[0] 0x00041234");
    let i = Ext4Image::open(&img).unwrap();
    let ino = i.lookup("r0/f0").unwrap();
    let e = i.file_map(ino).unwrap_err();
    assert!(
        matches!(e, Error::Corrupt(_)) && e.to_string().contains("magic"),
        "{e}"
    );
    assert!(i.read_file(ino).is_err());
    assert!(i.read_block(ino, 0).is_err());
    // Forensics keep going and name the broken inode.
    let acct = i.block_accounting().unwrap();
    assert_eq!(acct.unreadable_inodes.len(), 1);
    assert_eq!(acct.unreadable_inodes[0].0, ino);
}

#[test]
fn indirect_pointer_out_of_range() {
    let (_d, img) = small_image(INDIRECT_OPTS);
    debugfs(&img, true, "sif /small block[1] 4000000000");
    let i = Ext4Image::open(&img).unwrap();
    let ino = i.lookup("small").unwrap();
    let e = i.mapping(ino).unwrap_err();
    assert!(e.to_string().contains("outside the file system"), "{e}");
}

#[test]
fn corrupt_root_directory() {
    let (_d, img) = small_image(&[]);
    let i = Ext4Image::open(&img).unwrap();
    let root_blk = i.mapping(2).unwrap()[0].pblk;
    drop(i);
    let mut b = fs::read(&img).unwrap();
    let off = (root_blk * BS) as usize;
    b[off..off + 4096].fill(0); // rec_len 0 everywhere
    fs::write(&img, &b).unwrap();
    let i = Ext4Image::open(&img).unwrap();
    assert!(matches!(i.lookup("small"), Err(Error::Corrupt(_))));
}

#[test]
fn inode_numbers_out_of_range() {
    let (_d, img) = small_image(&[]);
    let i = Ext4Image::open(&img).unwrap();
    assert!(matches!(i.inode(0), Err(Error::InodeOutOfRange { .. })));
    assert!(matches!(
        i.inode(u32::MAX),
        Err(Error::InodeOutOfRange { .. })
    ));
    assert!(i.read_pblk(u64::MAX).is_err());
    assert!(i.block_bitmap(1 << 40).is_err());
}

/// Flips bytes in the metadata area of small images many times and runs every API on the
/// result: anything may fail, nothing may panic or hang.
#[test]
fn random_metadata_corruption_never_panics() {
    for opts in [
        &["-b", "1024"][..],
        &["-b", "1024", "-O", "^extent,^64bit,^metadata_csum"][..],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let st = dir.path().join("st");
        stage_file(&st, "r0/f0", 1, 40, |l| l % 2 == 0);
        stage_file(&st, "r0/f1", 2, 300, |l| l % 5 == 0);
        let img = dir.path().join("img");
        // mkfs -b 4096 is in the helper; the later -b wins.
        mkfs(&img, &st, opts, "4M");
        let clean = fs::read(&img).unwrap();
        let i = Ext4Image::open(&img).unwrap();
        // Corrupt only blocks holding metadata: superblock, descriptors, bitmaps, inode
        // tables, directories and indirect/extent blocks.
        let mut targets: Vec<u64> = i.fs_metadata_blocks().iter().collect();
        for p in ["", "r0", "r0/f0", "r0/f1"] {
            let ino = i.lookup(p).unwrap();
            let m = i.file_map(ino).unwrap();
            targets.extend(&m.meta_blocks);
            if p.len() <= 2 {
                targets.extend(m.physical_blocks());
            }
        }
        drop(i);
        let bs = 1024u64;
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut opened = 0;
        for _ in 0..150 {
            let mut b = clean.clone();
            for _ in 0..1 + next() % 24 {
                let blk = targets[(next() % targets.len() as u64) as usize];
                let off = (blk * bs + next() % bs) as usize;
                if let Some(x) = b.get_mut(off) {
                    *x ^= 1 << (next() % 8);
                    if next() % 4 == 0 {
                        *x = 0xFF;
                    }
                }
            }
            fs::write(&img, &b).unwrap();
            let Ok(i) = Ext4Image::open(&img) else {
                continue;
            };
            opened += 1;
            for p in ["r0/f0", "r0/f1", "nope", "r0/f0/x"] {
                if let Ok(ino) = i.lookup(p) {
                    let _ = i.inode(ino);
                    let _ = i.mapping(ino);
                    let _ = i.read_block(ino, 3);
                    let _ = i.read_file(ino);
                }
            }
            let _ = i.read_dir(2);
            let _ = i.block_accounting();
            for g in 0..i.group_count() {
                let _ = i.block_bitmap(g);
                let _ = i.inode_bitmap(g);
            }
        }
        // Most corruptions leave the superblock alone, so the deeper code is exercised.
        assert!(opened > 75, "only {opened} of 150 corrupted images opened");
    }
}
