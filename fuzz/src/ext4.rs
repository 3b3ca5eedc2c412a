//! Corrupted ext4 images through `ext4_reader`: every API on the result, nothing may panic or
//! hang, errors are `Err` values, and what the reader does return keeps its documented
//! invariants (sorted, non-overlapping, in-range block maps; `read_file` returns `i_size`
//! bytes; bitmaps answer only inside their group).
//!
//! Shared by the `ext4_image` fuzz target and `crates/ext4-reader/tests/prop_ext4.rs` (via
//! `#[path]`); it only uses ext4_reader and tempfile.
//!
//! An input patches one of two small images made by mkfs.ext4 (`fuzz/seeds/`, see
//! `fuzz/seeds/make-ext4-seeds.sh`): a 512 KiB extent-mapped file system with two groups,
//! 64-bit descriptors and metadata_csum, and a 128 KiB indirect-mapped one (no extents, no
//! 64bit, no flex_bg). Patches land mostly in metadata blocks (superblock, descriptors,
//! bitmaps, inode tables, directory, extent and indirect blocks), found once per image with
//! the reader itself. Or, rarely, the input is the raw image bytes.
#![allow(dead_code)]

use ext4_reader::{BlockRead, Error, Ext4Image, FileMap, InodeNo};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fuzz_input! {
#[derive(Debug, Clone)]
pub enum Where {
    /// Byte `off % block_size` of metadata block number `blk % count`.
    Meta { blk: u16, off: u16 },
    /// Byte `off` of the superblock (image bytes 1024..2048).
    Super(u16),
    /// Anywhere: `at % image length`.
    Any(u32),
}
}

fuzz_input! {
#[derive(Debug, Clone)]
pub enum Value {
    Bytes(Vec<u8>),
    U16(u16),
    U32(u32),
    U64(u64),
    /// XOR one bit.
    Flip(u8),
}
}

fuzz_input! {
#[derive(Debug, Clone)]
pub struct Patch {
    pub at: Where,
    pub value: Value,
}
}

fuzz_input! {
#[derive(Debug, Clone)]
pub enum Ext4Input {
    Patched {
        indirect: bool,
        patches: Vec<Patch>,
        /// Extra inode numbers and logical blocks to probe.
        probes: Vec<(u32, u32)>,
    },
    Raw(Vec<u8>),
}
}

/// The two seed images (committed under fuzz/seeds/).
pub const EXTENTS_IMG: &[u8] = include_bytes!("../seeds/ext4-extents.img");
pub const INDIRECT_IMG: &[u8] = include_bytes!("../seeds/ext4-indirect.img");

struct Base {
    bytes: &'static [u8],
    block_size: u64,
    /// Metadata blocks, sorted.
    meta: Vec<u64>,
}

/// The image file, one per thread (in /dev/shm when it exists); removed when the thread ends.
fn work_path() -> PathBuf {
    thread_local! {
        static P: (tempfile::TempDir, PathBuf) = {
            let b = tempfile::Builder::new().prefix("e4race-fuzz-ext4").clone();
            let dir = if Path::new("/dev/shm").is_dir() {
                b.tempdir_in("/dev/shm").unwrap()
            } else {
                b.tempdir().unwrap()
            };
            let p = dir.path().join("img");
            (dir, p)
        };
    }
    P.with(|p| p.1.clone())
}

fn base(indirect: bool) -> &'static Base {
    static B: OnceLock<[Base; 2]> = OnceLock::new();
    &B.get_or_init(|| [EXTENTS_IMG, INDIRECT_IMG].map(scan_base))[usize::from(indirect)]
}

/// Finds the metadata blocks of a clean image with the reader.
fn scan_base(bytes: &'static [u8]) -> Base {
    let p = work_path().with_extension("seed");
    fs::write(&p, bytes).unwrap();
    let i = Ext4Image::open(&p).expect("seed image opens");
    let mut meta: Vec<u64> = i.fs_metadata_blocks().iter().collect();
    i.for_each_in_use_inode(|inode| {
        if let Ok(m) = i.map_of(&inode) {
            meta.extend(&m.meta_blocks);
            if inode.is_dir() {
                meta.extend(m.physical_blocks());
            }
        }
        if inode.file_acl != 0 {
            meta.push(inode.file_acl);
        }
    })
    .unwrap();
    meta.sort_unstable();
    meta.dedup();
    let acct = i.block_accounting().unwrap();
    assert!(
        acct.leaked.is_empty() && acct.unmarked_in_use.is_empty(),
        "seed image is clean: {acct:?}"
    );
    Base {
        bytes,
        block_size: u64::from(i.block_size()),
        meta,
    }
}

/// Builds the image an input describes.
pub fn image_of(input: &Ext4Input) -> (Vec<u8>, Vec<(u32, u32)>) {
    match input {
        Ext4Input::Raw(b) => (b.clone(), vec![]),
        Ext4Input::Patched {
            indirect,
            patches,
            probes,
        } => {
            let b = base(*indirect);
            let mut img = b.bytes.to_vec();
            for p in patches.iter().take(32) {
                let at = match p.at {
                    Where::Meta { blk, off } => {
                        let blk = b.meta[usize::from(blk) % b.meta.len()];
                        blk * b.block_size + u64::from(off) % b.block_size
                    }
                    Where::Super(off) => 1024 + u64::from(off) % 1024,
                    Where::Any(a) => u64::from(a) % img.len() as u64,
                } as usize;
                let bytes: Vec<u8> = match &p.value {
                    Value::Bytes(v) => v.iter().take(64).copied().collect(),
                    Value::U16(x) => x.to_le_bytes().to_vec(),
                    Value::U32(x) => x.to_le_bytes().to_vec(),
                    Value::U64(x) => x.to_le_bytes().to_vec(),
                    Value::Flip(bit) => {
                        img[at] ^= 1 << (bit % 8);
                        continue;
                    }
                };
                for (k, x) in bytes.iter().enumerate() {
                    if let Some(y) = img.get_mut(at + k) {
                        *y = *x;
                    }
                }
            }
            (img, probes.iter().take(16).copied().collect())
        }
    }
}

/// Runs one input.
pub fn run(input: &Ext4Input) {
    let (img, probes) = image_of(input);
    let p = work_path();
    write_image(&p, &img);
    exercise(&p, &probes);
}

/// Writes `img` to `p`, rewriting only what differs from the previous image of this thread
/// (a patched seed differs from the last one in a few bytes; writing 512 KiB per input was
/// most of the time).
fn write_image(p: &Path, img: &[u8]) {
    use std::os::unix::fs::FileExt;
    thread_local! {
        static LAST: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match last.as_mut() {
            Some(prev) if prev.len() == img.len() && p.exists() => {
                let f = fs::OpenOptions::new().write(true).open(p).unwrap();
                let bs = 4096;
                for (k, (a, b)) in prev.chunks(bs).zip(img.chunks(bs)).enumerate() {
                    if a != b {
                        f.write_all_at(b, (k * bs) as u64).unwrap();
                    }
                }
                prev.copy_from_slice(img);
            }
            _ => {
                fs::write(p, img).unwrap();
                *last = Some(img.to_vec());
            }
        }
    });
}

fn check_map(i: &Ext4Image, m: &FileMap) {
    let sb = i.superblock();
    let first = u64::from(sb.first_data_block);
    let mut next = 0u64;
    for e in &m.extents {
        assert!(e.len > 0, "empty extent {e:?}");
        assert!(
            e.lblk >= next,
            "extents overlap or are unsorted: {:?}",
            m.extents
        );
        next = e.lblk + e.len;
        assert!(
            e.pblk >= first
                && e.pblk
                    .checked_add(e.len)
                    .is_some_and(|x| x <= sb.blocks_count),
            "extent {e:?} outside the file system (blocks {first}..{})",
            sb.blocks_count
        );
        assert_eq!(m.lookup(e.lblk), Some((e.pblk, e.unwritten)));
        assert_eq!(m.lookup(next - 1), Some((e.pblk + e.len - 1, e.unwritten)));
    }
    for &b in &m.meta_blocks {
        assert!(
            b >= first && b < sb.blocks_count,
            "meta block {b} out of range"
        );
    }
}

fn probe_inode(i: &Ext4Image, ino: InodeNo, lblks: &[u64]) {
    let Ok(inode) = i.inode(ino) else { return };
    let _ = i.inode_marked_in_use(ino);
    if let Ok(m) = i.map_of(&inode) {
        check_map(i, &m);
        for &l in lblks {
            match i.read_mapped_block(&m, l) {
                Ok(BlockRead::Data { pblk, bytes }) => {
                    assert_eq!(bytes.len() as u64, u64::from(i.block_size()));
                    assert_eq!(m.lookup(l), Some((pblk, false)));
                }
                Ok(BlockRead::Unwritten { pblk }) => assert_eq!(m.lookup(l), Some((pblk, true))),
                Ok(BlockRead::Hole) => assert_eq!(m.lookup(l), None),
                Err(_) => {}
            }
        }
        if let Some(e) = m.extents.last() {
            let _ = i.read_block(ino, e.lblk + e.len - 1);
        }
    }
    if inode.size > ext4_reader::MAX_READ_FILE {
        assert!(matches!(i.read_file(ino), Err(Error::TooLarge { .. })));
    } else if inode.size <= 4 << 20 {
        if let Ok(data) = i.read_file(ino) {
            assert_eq!(data.len() as u64, inode.size, "read_file length");
        }
    }
    if inode.is_dir() {
        let _ = i.read_dir(ino);
    } else {
        assert!(i.read_dir(ino).is_err());
    }
}

/// Every API on the image at `p`.
pub fn exercise(p: &Path, probes: &[(u32, u32)]) {
    let i = match Ext4Image::open(p) {
        Ok(i) => i,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let sb = i.superblock().clone();
    let _ = (
        i.needs_recovery(),
        i.block_size(),
        i.blocks_count(),
        i.path(),
    );
    assert!(i.read_pblk(sb.blocks_count).is_err());
    assert!(i.inode(0).is_err() && i.inode(u32::MAX).is_err());
    assert!(i.group_desc(i.group_count()).is_err());
    for g in 0..i.group_count().min(64) {
        let _ = i.group_desc(g).unwrap();
        for bm in [i.block_bitmap(g), i.inode_bitmap(g)].into_iter().flatten() {
            assert!(!bm.is_set(bm.count));
            let n = bm.set_items().take(1 << 16).count();
            let _ = n;
        }
    }
    let meta = i.fs_metadata_blocks();
    let _ = meta.count();
    if let Ok(a) = i.block_accounting() {
        assert!(a.leaked.iter().all(|&b| b < sb.blocks_count));
        let _ = i.owners_of(&a.leaked.iter().take(8).copied().collect::<Vec<_>>());
    }
    // In-use inodes (capped).
    let mut inos = vec![];
    let _ = i.for_each_in_use_inode(|inode| {
        if inos.len() < 128 {
            inos.push(inode.ino);
        }
    });
    for &ino in &inos {
        probe_inode(&i, ino, &[0, 1, 12, 300]);
    }
    // Directory tree from the root, breadth first (capped), and lookups of what it finds.
    let mut queue = vec![(ext4_reader::ROOT_INO, String::new())];
    let mut seen = 0;
    while let Some((dir, path)) = queue.pop() {
        seen += 1;
        if seen > 64 {
            break;
        }
        let Ok(entries) = i.read_dir(dir) else {
            continue;
        };
        for (k, e) in entries.iter().take(64).enumerate() {
            let _ = e.name_lossy();
            if e.name == b"." || e.name == b".." || e.name.contains(&b'/') || e.name.is_empty() {
                continue;
            }
            let Ok(name) = std::str::from_utf8(&e.name) else {
                continue;
            };
            let child = format!("{path}/{name}");
            // Path walks re-read every directory on the way: only a few per directory.
            if k < 6 {
                let _ = i.lookup(&child);
            }
            if e.file_type == 2 && path.matches('/').count() < 6 {
                queue.push((e.ino, child));
            }
        }
    }
    for path in [
        "small",
        "d1/f1",
        "/d1/d2/f2",
        "link",
        "dind",
        "tind",
        "nope",
        "small/x",
        "/",
        "a\0b",
    ] {
        if let Ok(ino) = i.lookup(path) {
            probe_inode(&i, ino, &[0, 299, 300, 65804]);
        }
    }
    for &(ino, lblk) in probes {
        probe_inode(&i, ino, &[u64::from(lblk)]);
    }
}
