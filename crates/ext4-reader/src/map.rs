//! Logical→physical block maps: extent trees (fs/ext4/ext4_extents.h, extents.c) and the
//! classic indirect map (fs/ext4/indirect.c).
//!
//! Both walks treat the image as hostile: every pointer is range-checked, extent trees must be
//! sorted and non-overlapping with strictly decreasing depth, and a walk visits at most as many
//! blocks as the file system has, so a cyclic or self-referencing map ends in an error instead of
//! a long loop or an unbounded allocation.

use crate::bytes::{le16, le32};
use crate::error::{Error, Result};
use crate::inode::{Inode, I_BLOCK_LEN};
use serde::{Deserialize, Serialize};

/// A run of logical blocks mapped to consecutive physical blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub lblk: u64,
    pub pblk: u64,
    pub len: u64,
    /// An unwritten (preallocated) extent: reads as zeros whatever its blocks hold.
    pub unwritten: bool,
}

impl Extent {
    pub fn contains(&self, lblk: u64) -> bool {
        lblk >= self.lblk && lblk - self.lblk < self.len
    }
}

/// How an inode maps its blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MapKind {
    /// EXT4_EXTENTS_FL: an extent tree of the given depth rooted in i_block.
    Extents { depth: u16 },
    /// 12 direct, single, double and triple indirect pointers in i_block.
    Indirect,
    /// No block map: device node, fast symlink, or inline data.
    None,
}

/// The complete mapping of one inode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMap {
    pub kind: MapKind,
    /// Data runs sorted by `lblk`, non-overlapping. Extent files list their on-disk extents as
    /// they are; indirect files have consecutive pointers coalesced into runs.
    pub extents: Vec<Extent>,
    /// Mapping metadata the inode owns: extent tree index/leaf blocks, or indirect,
    /// double-indirect and triple-indirect blocks, in walk order.
    pub meta_blocks: Vec<u64>,
}

impl FileMap {
    /// The extent holding `lblk`, if it is mapped.
    pub fn find(&self, lblk: u64) -> Option<&Extent> {
        let i = self.extents.partition_point(|e| e.lblk <= lblk);
        let e = self.extents.get(i.checked_sub(1)?)?;
        e.contains(lblk).then_some(e)
    }

    /// Physical block of `lblk` and whether it is unwritten.
    pub fn lookup(&self, lblk: u64) -> Option<(u64, bool)> {
        self.find(lblk)
            .map(|e| (e.pblk + (lblk - e.lblk), e.unwritten))
    }

    /// Number of data blocks mapped (written and unwritten).
    pub fn data_blocks(&self) -> u64 {
        self.extents.iter().map(|e| e.len).sum()
    }

    /// Every physical block the inode owns: data then metadata.
    pub fn physical_blocks(&self) -> impl Iterator<Item = u64> + '_ {
        self.extents
            .iter()
            .flat_map(|e| e.pblk..e.pblk + e.len)
            .chain(self.meta_blocks.iter().copied())
    }
}

/// What the walks need to know about the file system.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub block_size: u32,
    pub blocks_count: u64,
    pub first_data_block: u64,
}

impl Geometry {
    fn check_range(&self, ino: u32, what: &str, pblk: u64, len: u64) -> Result<()> {
        let end = pblk.checked_add(len);
        if pblk < self.first_data_block || end.is_none_or(|e| e > self.blocks_count) {
            return Err(Error::Corrupt(format!(
                "inode {ino}: {what} points at blocks {pblk}+{len}, outside the file system's \
                 {}..{}",
                self.first_data_block, self.blocks_count
            )));
        }
        Ok(())
    }
}

/// Reads one file system block.
pub trait BlockSource {
    fn read_fs_block(&self, pblk: u64) -> Result<Vec<u8>>;
}

/// Maps `inode` (dispatching on EXT4_EXTENTS_FL, as ext4_map_blocks() does).
pub fn map_inode(src: &dyn BlockSource, geo: &Geometry, inode: &Inode) -> Result<FileMap> {
    if !inode.has_block_map() {
        return Ok(FileMap {
            kind: MapKind::None,
            extents: vec![],
            meta_blocks: vec![],
        });
    }
    if inode.uses_extents() {
        ExtentWalk::new(src, geo, inode.ino).run(&inode.i_block)
    } else {
        IndirectWalk::new(src, geo, inode.ino).run(inode)
    }
}

// ---- extent trees -------------------------------------------------------------------------

/// `EXT4_EXT_MAGIC`.
const EXT4_EXT_MAGIC: u16 = 0xF30A;
/// `EXT4_MAX_EXTENT_DEPTH`.
const EXT4_MAX_EXTENT_DEPTH: u16 = 5;
/// `EXT_INIT_MAX_LEN`: ee_len above this marks an unwritten extent of ee_len - this blocks.
const EXT_INIT_MAX_LEN: u16 = 1 << 15;
/// Header and entries (ext4_extent, ext4_extent_idx) are all 12 bytes.
const ENTRY: usize = 12;

struct ExtentWalk<'a> {
    src: &'a dyn BlockSource,
    geo: &'a Geometry,
    ino: u32,
    budget: u64,
    next_lblk: u64,
    map: FileMap,
}

impl<'a> ExtentWalk<'a> {
    fn new(src: &'a dyn BlockSource, geo: &'a Geometry, ino: u32) -> Self {
        ExtentWalk {
            src,
            geo,
            ino,
            budget: geo.blocks_count,
            next_lblk: 0,
            map: FileMap {
                kind: MapKind::Extents { depth: 0 },
                extents: vec![],
                meta_blocks: vec![],
            },
        }
    }

    fn corrupt(&self, m: String) -> Error {
        Error::Corrupt(format!("inode {}: extent tree: {m}", self.ino))
    }

    fn run(mut self, root: &[u8; I_BLOCK_LEN]) -> Result<FileMap> {
        let depth = le16(root, 6);
        self.map.kind = MapKind::Extents { depth };
        self.node(root, None)?;
        Ok(self.map)
    }

    /// Walks one node (`struct ext4_extent_header` then entries). `want_depth` is None at the
    /// root and parent depth - 1 below it (ext4_ext_check()).
    fn node(&mut self, b: &[u8], want_depth: Option<u16>) -> Result<()> {
        let magic = le16(b, 0);
        let entries = le16(b, 2);
        let max = le16(b, 4);
        let depth = le16(b, 6);
        if magic != EXT4_EXT_MAGIC {
            return Err(self.corrupt(format!(
                "bad header magic {magic:#06x} (expected {EXT4_EXT_MAGIC:#06x})"
            )));
        }
        let capacity = (b.len() - ENTRY) / ENTRY;
        if entries > max || usize::from(max) > capacity {
            return Err(self.corrupt(format!(
                "header has {entries} entries of max {max}, room for {capacity}"
            )));
        }
        if depth > EXT4_MAX_EXTENT_DEPTH || want_depth.is_some_and(|w| w != depth) {
            return Err(self.corrupt(format!(
                "node depth {depth}, expected {}",
                want_depth.map_or("<= 5".into(), |w| w.to_string())
            )));
        }
        for i in 0..usize::from(entries) {
            let e = &b[ENTRY * (i + 1)..ENTRY * (i + 2)];
            let first = u64::from(le32(e, 0));
            if depth == 0 {
                // struct ext4_extent: ee_block, ee_len, ee_start_hi, ee_start_lo.
                let raw_len = le16(e, 4);
                let pblk = (u64::from(le16(e, 6)) << 32) | u64::from(le32(e, 8));
                let (len, unwritten) = if raw_len > EXT_INIT_MAX_LEN {
                    (raw_len - EXT_INIT_MAX_LEN, true)
                } else {
                    (raw_len, false)
                };
                let len = u64::from(len);
                if len == 0 {
                    return Err(self.corrupt(format!("zero-length extent at lblk {first}")));
                }
                if first < self.next_lblk {
                    return Err(self.corrupt(format!(
                        "extent at lblk {first} overlaps or precedes the previous one (ends at {})",
                        self.next_lblk
                    )));
                }
                self.geo.check_range(self.ino, "extent", pblk, len)?;
                self.next_lblk = first + len;
                let ext = Extent {
                    lblk: first,
                    pblk,
                    len,
                    unwritten,
                };
                self.map.extents.push(ext);
            } else {
                // struct ext4_extent_idx: ei_block, ei_leaf_lo, ei_leaf_hi.
                let leaf = u64::from(le32(e, 4)) | (u64::from(le16(e, 8)) << 32);
                self.geo.check_range(self.ino, "extent index", leaf, 1)?;
                if self.budget == 0 {
                    return Err(self.corrupt(
                        "visits more tree blocks than the file system has (cycle?)".into(),
                    ));
                }
                self.budget -= 1;
                let child = self.src.read_fs_block(leaf)?;
                self.map.meta_blocks.push(leaf);
                self.node(&child, Some(depth - 1))?;
            }
        }
        Ok(())
    }
}

// ---- indirect maps ------------------------------------------------------------------------

/// `EXT4_NDIR_BLOCKS`, and i_block slots of the single, double, triple indirect blocks.
const NDIR_BLOCKS: usize = 12;

struct IndirectWalk<'a> {
    src: &'a dyn BlockSource,
    geo: &'a Geometry,
    ino: u32,
    budget: u64,
    map: FileMap,
}

impl<'a> IndirectWalk<'a> {
    fn new(src: &'a dyn BlockSource, geo: &'a Geometry, ino: u32) -> Self {
        IndirectWalk {
            src,
            geo,
            ino,
            budget: geo.blocks_count,
            map: FileMap {
                kind: MapKind::Indirect,
                extents: vec![],
                meta_blocks: vec![],
            },
        }
    }

    fn run(mut self, inode: &Inode) -> Result<FileMap> {
        // ext4_block_to_path(): direct blocks, then levels covering ptrs, ptrs^2, ptrs^3.
        let ptrs = u64::from(self.geo.block_size / 4);
        for i in 0..NDIR_BLOCKS {
            self.data(i as u64, inode.block_ptr(i))?;
        }
        let mut base = NDIR_BLOCKS as u64;
        let mut span = ptrs;
        for level in 1..=3u32 {
            let p = inode.block_ptr(NDIR_BLOCKS + level as usize - 1);
            self.indirect(p, level, base)?;
            base += span;
            span = span.saturating_mul(ptrs);
        }
        Ok(self.map)
    }

    fn spend(&mut self) -> Result<()> {
        if self.budget == 0 {
            return Err(Error::Corrupt(format!(
                "inode {}: indirect map has more pointers than the file system has blocks \
                 (cyclic or garbage indirect blocks)",
                self.ino
            )));
        }
        self.budget -= 1;
        Ok(())
    }

    fn data(&mut self, lblk: u64, ptr: u32) -> Result<()> {
        if ptr == 0 {
            return Ok(()); // a hole
        }
        self.spend()?;
        let pblk = u64::from(ptr);
        self.geo
            .check_range(self.ino, &format!("lblk {lblk}"), pblk, 1)?;
        if let Some(last) = self.map.extents.last_mut() {
            if last.lblk + last.len == lblk && last.pblk + last.len == pblk {
                last.len += 1;
                return Ok(());
            }
        }
        self.map.extents.push(Extent {
            lblk,
            pblk,
            len: 1,
            unwritten: false,
        });
        Ok(())
    }

    /// An indirect block of `level` (1 = its pointers are data) whose first pointer maps
    /// logical block `base`.
    fn indirect(&mut self, ptr: u32, level: u32, base: u64) -> Result<()> {
        if ptr == 0 {
            return Ok(());
        }
        self.spend()?;
        let pblk = u64::from(ptr);
        self.geo
            .check_range(self.ino, &format!("level-{level} indirect block"), pblk, 1)?;
        self.map.meta_blocks.push(pblk);
        let b = self.src.read_fs_block(pblk)?;
        let ptrs = u64::from(self.geo.block_size / 4);
        let span = ptrs.pow(level - 1);
        for j in 0..ptrs {
            let child = le32(&b, (j * 4) as usize);
            let lblk = base + j * span;
            if level == 1 {
                self.data(lblk, child)?;
            } else {
                self.indirect(child, level - 1, lblk)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Mem(HashMap<u64, Vec<u8>>, usize);
    impl BlockSource for Mem {
        fn read_fs_block(&self, pblk: u64) -> Result<Vec<u8>> {
            Ok(self
                .0
                .get(&pblk)
                .cloned()
                .unwrap_or_else(|| vec![0; self.1]))
        }
    }
    const GEO: Geometry = Geometry {
        block_size: 1024,
        blocks_count: 10_000,
        first_data_block: 1,
    };

    fn header(entries: u16, max: u16, depth: u16) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&EXT4_EXT_MAGIC.to_le_bytes());
        h.extend_from_slice(&entries.to_le_bytes());
        h.extend_from_slice(&max.to_le_bytes());
        h.extend_from_slice(&depth.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h
    }
    fn leaf_entry(lblk: u32, len: u16, pblk: u32) -> Vec<u8> {
        let mut e = lblk.to_le_bytes().to_vec();
        e.extend_from_slice(&len.to_le_bytes());
        e.extend_from_slice(&0u16.to_le_bytes());
        e.extend_from_slice(&pblk.to_le_bytes());
        e
    }
    fn idx_entry(lblk: u32, leaf: u32) -> Vec<u8> {
        let mut e = lblk.to_le_bytes().to_vec();
        e.extend_from_slice(&leaf.to_le_bytes());
        e.extend_from_slice(&[0; 4]);
        e
    }
    fn inode_with(i_block: &[u8], flags: u32) -> Inode {
        let mut raw = vec![0u8; 128];
        raw[0..2].copy_from_slice(&0x8000u16.to_le_bytes());
        raw[0x20..0x24].copy_from_slice(&flags.to_le_bytes());
        raw[0x28..0x28 + i_block.len()].copy_from_slice(i_block);
        Inode::parse(12, &raw)
    }

    #[test]
    fn two_level_tree_with_unwritten() {
        let mut root = header(1, 4, 1);
        root.extend(idx_entry(0, 500));
        let mut leaf = header(2, 84, 0);
        leaf.extend(leaf_entry(0, 3, 100));
        leaf.extend(leaf_entry(10, EXT_INIT_MAX_LEN + 2, 200));
        leaf.resize(1024, 0);
        let src = Mem(HashMap::from([(500, leaf)]), 1024);
        let m = map_inode(&src, &GEO, &inode_with(&root, 0x80000)).unwrap();
        assert_eq!(m.kind, MapKind::Extents { depth: 1 });
        assert_eq!(m.meta_blocks, vec![500]);
        assert_eq!(m.lookup(2), Some((102, false)));
        assert_eq!(m.lookup(3), None);
        assert_eq!(m.lookup(11), Some((201, true)));
        assert_eq!(m.data_blocks(), 5);
    }

    #[test]
    fn bad_magic_and_cycles_are_errors() {
        let mut root = header(1, 4, 0);
        root[0] = 0;
        let src = Mem(HashMap::new(), 1024);
        let e = map_inode(&src, &GEO, &inode_with(&root, 0x80000)).unwrap_err();
        assert!(e.to_string().contains("magic"), "{e}");

        // An index node pointing at itself: depth must decrease, so this is caught.
        let mut node = header(1, 84, 1);
        node.extend(idx_entry(0, 600));
        node.resize(1024, 0);
        let mut root = header(1, 4, 2);
        root.extend(idx_entry(0, 600));
        let src = Mem(HashMap::from([(600, node)]), 1024);
        assert!(map_inode(&src, &GEO, &inode_with(&root, 0x80000)).is_err());

        // Overlapping extents.
        let mut root = header(2, 4, 0);
        root.extend(leaf_entry(0, 5, 100));
        root.extend(leaf_entry(3, 5, 200));
        assert!(map_inode(&src, &GEO, &inode_with(&root, 0x80000)).is_err());

        // Out of range physical block.
        let mut root = header(1, 4, 0);
        root.extend(leaf_entry(0, 5, 9_999));
        assert!(map_inode(&src, &GEO, &inode_with(&root, 0x80000)).is_err());
    }

    #[test]
    fn indirect_levels_and_coalescing() {
        let mut ib = vec![0u8; 60];
        for i in 0..12u32 {
            if i != 5 {
                ib[i as usize * 4..i as usize * 4 + 4].copy_from_slice(&(100 + i).to_le_bytes());
            }
        }
        ib[48..52].copy_from_slice(&300u32.to_le_bytes()); // single
        ib[52..56].copy_from_slice(&301u32.to_le_bytes()); // double
        let mut single = vec![0u8; 1024];
        single[0..4].copy_from_slice(&112u32.to_le_bytes()); // lblk 12 continues 100+11
        let mut double = vec![0u8; 1024];
        double[4..8].copy_from_slice(&302u32.to_le_bytes()); // covers 12+256+256..
        let mut dsingle = vec![0u8; 1024];
        dsingle[8..12].copy_from_slice(&400u32.to_le_bytes());
        let src = Mem(
            HashMap::from([(300, single), (301, double), (302, dsingle)]),
            1024,
        );
        let m = map_inode(&src, &GEO, &inode_with(&ib, 0)).unwrap();
        assert_eq!(m.kind, MapKind::Indirect);
        assert_eq!(m.meta_blocks, vec![300, 301, 302]);
        assert_eq!(m.lookup(4), Some((104, false)));
        assert_eq!(m.lookup(5), None);
        assert_eq!(m.lookup(12), Some((112, false)));
        assert_eq!(m.find(6).map(|e| (e.lblk, e.len)), Some((6, 7)));
        assert_eq!(m.lookup(12 + 256 + 256 + 2), Some((400, false)));
        assert_eq!(m.extents.len(), 3);
    }

    #[test]
    fn self_referencing_triple_indirect_is_bounded() {
        // Every pointer of block 700 points at 700 itself: levels 3→2→1 and then 256 data
        // pointers per leaf, 256^3 in all, which must stop at the budget (blocks_count).
        let blk: Vec<u8> = (0..256).flat_map(|_| 700u32.to_le_bytes()).collect();
        let mut ib = vec![0u8; 60];
        ib[56..60].copy_from_slice(&700u32.to_le_bytes());
        let src = Mem(HashMap::from([(700, blk)]), 1024);
        let e = map_inode(&src, &GEO, &inode_with(&ib, 0)).unwrap_err();
        assert!(e.to_string().contains("more pointers"), "{e}");
    }
}
