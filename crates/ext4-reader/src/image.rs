//! [`Ext4Image`]: the image file and everything read through it.

use crate::blockset::BlockSet;
use crate::dir::{parse_dir_block, DirEntry};
use crate::error::{Error, Result};
use crate::inode::{
    GroupDesc, Inode, InodeNo, EXT4_BG_BLOCK_UNINIT, EXT4_BG_INODE_UNINIT, ROOT_INO,
};
use crate::map::{map_inode, BlockSource, Extent, FileMap, Geometry};
use crate::superblock::{
    Superblock, INCOMPAT_FILETYPE, INCOMPAT_META_BG, INCOMPAT_MMP, INCOMPAT_RECOVER,
    RO_COMPAT_GDT_CSUM, RO_COMPAT_METADATA_CSUM, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The largest file [`Ext4Image::read_file`] reads into memory (i_size is untrusted).
pub const MAX_READ_FILE: u64 = 1 << 30;
/// Largest single pread, so a long extent is read in bounded pieces.
const MAX_CHUNK: u64 = 1 << 20;

/// An ext4 image opened read-only.
#[derive(Debug)]
pub struct Ext4Image {
    file: File,
    path: PathBuf,
    image_len: u64,
    sb: Superblock,
    groups: Vec<GroupDesc>,
}

/// What one logical block of a file reads as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockRead {
    /// Not mapped.
    Hole,
    /// Mapped by an unwritten extent: reads as zeros. `pblk` is where it is allocated.
    Unwritten { pblk: u64 },
    /// Mapped and written: the block's bytes.
    Data { pblk: u64, bytes: Vec<u8> },
}

/// A group's block or inode bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupBitmap {
    pub group: u64,
    /// Block number (or inode number) of bit 0.
    pub first: u64,
    /// Number of valid bits (the last group may be short).
    pub count: u64,
    /// The group is flagged BLOCK_UNINIT / INODE_UNINIT: the bitmap was never written and
    /// `bits` is what the kernel would compute (ext4_init_block_bitmap(), fs/ext4/balloc.c;
    /// all free for inodes).
    pub uninit: bool,
    pub bits: Vec<u8>,
}

impl GroupBitmap {
    /// Whether bit `i` (0-based within the group) is set.
    pub fn is_set(&self, i: u64) -> bool {
        i < self.count
            && self
                .bits
                .get((i / 8) as usize)
                .is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    /// The block (or inode) numbers whose bits are set.
    pub fn set_items(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.count)
            .filter(|&i| self.is_set(i))
            .map(|i| self.first + i)
    }
}

/// Which blocks the in-use inodes own (data plus mapping metadata plus xattr blocks).
#[derive(Debug, Clone)]
pub struct OwnedBlocks {
    pub owned: BlockSet,
    /// Blocks claimed by more than one inode (or twice by one).
    pub multiply_claimed: BlockSet,
    /// Inodes whose maps could not be read, with the reason; their blocks are not in `owned`.
    pub unreadable: Vec<(InodeNo, String)>,
}

/// The block bitmaps compared with what is actually in use, as e2fsck pass 5 does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockAccounting {
    /// Marked allocated in the bitmap but owned by no inode and not file system metadata:
    /// e2fsck's `-N` block bitmap differences. Lost blocks of the migrate race land here.
    pub leaked: Vec<u64>,
    /// In use (owned or metadata) but free in the bitmap: e2fsck's `+N`.
    pub unmarked_in_use: Vec<u64>,
    pub multiply_claimed: Vec<u64>,
    pub unreadable_inodes: Vec<(InodeNo, String)>,
}

struct Src<'a>(&'a Ext4Image);
impl BlockSource for Src<'_> {
    fn read_fs_block(&self, pblk: u64) -> Result<Vec<u8>> {
        self.0.read_pblk(pblk)
    }
}

impl Ext4Image {
    /// Opens an image and reads its superblock and group descriptors.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let image_len = file.metadata().map_err(io)?.len();
        let raw = read_exact_at(
            &file,
            &path,
            image_len,
            SUPERBLOCK_OFFSET,
            SUPERBLOCK_SIZE as u64,
        )?;
        let sb = Superblock::parse(&raw)?;
        let bs = u64::from(sb.block_size);
        let need = sb.blocks_count.checked_mul(bs).ok_or_else(|| {
            Error::BadSuperblock(format!("s_blocks_count {} overflows", sb.blocks_count))
        })?;
        if need > image_len {
            return Err(Error::Truncated {
                offset: 0,
                len: need,
                image_len,
            });
        }
        let mut img = Ext4Image {
            file,
            path,
            image_len,
            sb,
            groups: vec![],
        };
        img.groups = img.read_group_descs()?;
        Ok(img)
    }

    fn read_group_descs(&self) -> Result<Vec<GroupDesc>> {
        let sb = &self.sb;
        let ngroups = sb.group_count();
        let dpb = self.descs_per_block();
        let desc_blocks = ngroups.div_ceil(dpb);
        let mut out = Vec::with_capacity(ngroups as usize);
        for b in 0..desc_blocks {
            let blk = self.desc_block_location(b);
            let data = self.read_pblk(blk)?;
            for (i, d) in data.chunks_exact(usize::from(sb.desc_size)).enumerate() {
                if (b * dpb + i as u64) < ngroups {
                    out.push(GroupDesc::parse(d, sb.desc_size));
                }
            }
        }
        Ok(out)
    }

    fn descs_per_block(&self) -> u64 {
        u64::from(self.sb.block_size / u32::from(self.sb.desc_size))
    }

    /// Where descriptor block `b` lives (descriptor_loc(), fs/ext4/super.c).
    fn desc_block_location(&self, b: u64) -> u64 {
        let first = u64::from(self.sb.first_data_block);
        if !self.sb.has_incompat(INCOMPAT_META_BG) || b < u64::from(self.sb.first_meta_bg) {
            return first + 1 + b;
        }
        let g = b * self.descs_per_block();
        self.group_first_block(g) + u64::from(self.sb.group_has_super(g))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }
    pub fn block_size(&self) -> u32 {
        self.sb.block_size
    }
    pub fn blocks_count(&self) -> u64 {
        self.sb.blocks_count
    }
    pub fn group_count(&self) -> u64 {
        self.groups.len() as u64
    }
    /// The journal holds transactions not yet written home (INCOMPAT_RECOVER): the image is
    /// from a crash, and this reader does not replay the journal.
    pub fn needs_recovery(&self) -> bool {
        self.sb.has_incompat(INCOMPAT_RECOVER)
    }

    pub fn group_desc(&self, g: u64) -> Result<&GroupDesc> {
        self.groups.get(g as usize).ok_or_else(|| {
            Error::Corrupt(format!(
                "group {g} does not exist ({} groups)",
                self.groups.len()
            ))
        })
    }

    fn geometry(&self) -> Geometry {
        Geometry {
            block_size: self.sb.block_size,
            blocks_count: self.sb.blocks_count,
            first_data_block: u64::from(self.sb.first_data_block),
        }
    }

    fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        read_exact_at(&self.file, &self.path, self.image_len, offset, len)
    }

    /// Reads physical block `pblk` raw, whoever owns it.
    pub fn read_pblk(&self, pblk: u64) -> Result<Vec<u8>> {
        if pblk >= self.sb.blocks_count {
            return Err(Error::Corrupt(format!(
                "block {pblk} is past the end of the file system ({} blocks)",
                self.sb.blocks_count
            )));
        }
        let bs = u64::from(self.sb.block_size);
        self.read_at(pblk * bs, bs)
    }

    fn group_first_block(&self, g: u64) -> u64 {
        u64::from(self.sb.first_data_block) + g * u64::from(self.sb.blocks_per_group)
    }

    fn group_block_count(&self, g: u64) -> u64 {
        let first = self.group_first_block(g);
        u64::from(self.sb.blocks_per_group).min(self.sb.blocks_count.saturating_sub(first))
    }

    fn inode_table_blocks(&self) -> u64 {
        (u64::from(self.sb.inodes_per_group) * u64::from(self.sb.inode_size))
            .div_ceil(u64::from(self.sb.block_size))
    }

    fn has_group_csum(&self) -> bool {
        self.sb.has_ro_compat(RO_COMPAT_GDT_CSUM) || self.sb.has_ro_compat(RO_COMPAT_METADATA_CSUM)
    }

    // ---- inodes -------------------------------------------------------------------------

    fn check_ino(&self, ino: InodeNo) -> Result<()> {
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(Error::InodeOutOfRange {
                ino,
                count: self.sb.inodes_count,
            });
        }
        Ok(())
    }

    /// Byte offset of inode `ino` in the image.
    fn inode_offset(&self, ino: InodeNo) -> Result<u64> {
        self.check_ino(ino)?;
        let ipg = u64::from(self.sb.inodes_per_group);
        let idx = u64::from(ino - 1);
        let gd = self.group_desc(idx / ipg)?;
        let table_end = gd.inode_table.checked_add(self.inode_table_blocks());
        if gd.inode_table == 0 || table_end.is_none_or(|e| e > self.sb.blocks_count) {
            return Err(Error::Corrupt(format!(
                "group {}: inode table at block {} does not fit the file system",
                idx / ipg,
                gd.inode_table
            )));
        }
        Ok(gd.inode_table * u64::from(self.sb.block_size)
            + (idx % ipg) * u64::from(self.sb.inode_size))
    }

    /// Reads inode `ino` as it is on disk, in use or not.
    pub fn inode(&self, ino: InodeNo) -> Result<Inode> {
        let off = self.inode_offset(ino)?;
        let raw = self.read_at(off, u64::from(self.sb.inode_size))?;
        Ok(Inode::parse(ino, &raw))
    }

    /// Whether the inode bitmap marks `ino` in use.
    pub fn inode_marked_in_use(&self, ino: InodeNo) -> Result<bool> {
        self.check_ino(ino)?;
        let ipg = u64::from(self.sb.inodes_per_group);
        let idx = u64::from(ino - 1);
        Ok(self.inode_bitmap(idx / ipg)?.is_set(idx % ipg))
    }

    /// Calls `f` on every inode e2fsck pass 1 would treat as in use: reserved inodes
    /// (below s_first_ino) that have a map or xattr block, and other inodes with a nonzero
    /// link count. Skips never-initialized parts of the inode tables (INODE_UNINIT groups and
    /// the bg_itable_unused tail, which may hold garbage when lazy_itable_init is on).
    pub fn for_each_in_use_inode(&self, mut f: impl FnMut(Inode)) -> Result<()> {
        let ipg = u64::from(self.sb.inodes_per_group);
        let isz = u64::from(self.sb.inode_size);
        let csum = self.has_group_csum();
        for g in 0..self.group_count() {
            let gd = self.group_desc(g)?;
            if csum && gd.flags & EXT4_BG_INODE_UNINIT != 0 {
                continue;
            }
            let mut used = ipg;
            if csum {
                used = ipg.saturating_sub(u64::from(gd.itable_unused));
            }
            used = used.min(u64::from(self.sb.inodes_count).saturating_sub(g * ipg));
            if used == 0 {
                continue;
            }
            let first_off = self.inode_offset((g * ipg + 1) as InodeNo)?;
            let per_chunk = (MAX_CHUNK / isz).max(1);
            let mut i = 0;
            while i < used {
                let n = per_chunk.min(used - i);
                let buf = self.read_at(first_off + i * isz, n * isz)?;
                for (k, raw) in buf.chunks_exact(isz as usize).enumerate() {
                    let ino = (g * ipg + i + k as u64 + 1) as InodeNo;
                    let inode = Inode::parse(ino, raw);
                    let in_use = if ino < self.sb.first_ino {
                        inode.i_block.iter().any(|&b| b != 0) || inode.file_acl != 0
                    } else {
                        inode.links_count != 0
                    };
                    if in_use {
                        f(inode);
                    }
                }
                i += n;
            }
        }
        Ok(())
    }

    // ---- block maps and file data ---------------------------------------------------------

    /// The complete block map of an inode.
    pub fn file_map(&self, ino: InodeNo) -> Result<FileMap> {
        let inode = self.inode(ino)?;
        self.map_of(&inode)
    }

    /// The block map of an inode already read.
    pub fn map_of(&self, inode: &Inode) -> Result<FileMap> {
        map_inode(&Src(self), &self.geometry(), inode)
    }

    /// Logical→physical runs of an inode, sorted by logical block.
    pub fn mapping(&self, ino: InodeNo) -> Result<Vec<Extent>> {
        Ok(self.file_map(ino)?.extents)
    }

    /// Reads logical block `lblk` of `ino`. Walks the whole map: for many blocks of one file
    /// use [`Ext4Image::file_map`] once and [`Ext4Image::read_mapped_block`].
    pub fn read_block(&self, ino: InodeNo, lblk: u64) -> Result<BlockRead> {
        let map = self.file_map(ino)?;
        self.read_mapped_block(&map, lblk)
    }

    /// Reads logical block `lblk` through a map from [`Ext4Image::file_map`].
    pub fn read_mapped_block(&self, map: &FileMap, lblk: u64) -> Result<BlockRead> {
        Ok(match map.lookup(lblk) {
            None => BlockRead::Hole,
            Some((pblk, true)) => BlockRead::Unwritten { pblk },
            Some((pblk, false)) => BlockRead::Data {
                pblk,
                bytes: self.read_pblk(pblk)?,
            },
        })
    }

    /// A whole file's contents, `i_size` bytes, holes and unwritten extents as zeros.
    /// Refuses files above [`MAX_READ_FILE`].
    pub fn read_file(&self, ino: InodeNo) -> Result<Vec<u8>> {
        let inode = self.inode(ino)?;
        if inode.size > MAX_READ_FILE {
            return Err(Error::TooLarge {
                ino,
                size: inode.size,
                limit: MAX_READ_FILE,
            });
        }
        if inode.has_inline_data() {
            return Err(Error::Unsupported(format!("inline data (inode {ino})")));
        }
        let map = self.map_of(&inode)?;
        let size = inode.size;
        let bs = u64::from(self.sb.block_size);
        let mut out = vec![0u8; size as usize];
        for e in map.extents.iter().filter(|e| !e.unwritten) {
            let start = e.lblk.saturating_mul(bs);
            if start >= size {
                break;
            }
            let end = e.lblk.saturating_add(e.len).saturating_mul(bs).min(size);
            let mut pos = start;
            while pos < end {
                let n = MAX_CHUNK.min(end - pos);
                let poff = (e.pblk + (pos - start) / bs) * bs + (pos - start) % bs;
                let data = self.read_at(poff, n)?;
                out[pos as usize..(pos + n) as usize].copy_from_slice(&data);
                pos += n;
            }
        }
        Ok(out)
    }

    // ---- directories and paths ------------------------------------------------------------

    /// Live entries of directory `ino` (including "." and ".."), in on-disk order.
    pub fn read_dir(&self, ino: InodeNo) -> Result<Vec<DirEntry>> {
        let inode = self.inode(ino)?;
        if !inode.is_dir() {
            return Err(Error::NotADirectory(format!("inode {ino}")));
        }
        if inode.has_inline_data() {
            return Err(Error::Unsupported(format!(
                "inline-data directory (inode {ino})"
            )));
        }
        let map = self.map_of(&inode)?;
        let bs = u64::from(self.sb.block_size);
        let nblocks = inode.size.div_ceil(bs);
        let filetype = self.sb.has_incompat(INCOMPAT_FILETYPE);
        let mut out = vec![];
        for e in map.extents.iter().filter(|e| !e.unwritten) {
            for k in 0..e.len {
                if e.lblk + k >= nblocks {
                    break;
                }
                let b = self.read_pblk(e.pblk + k)?;
                parse_dir_block(ino, &b, self.sb.block_size, filetype, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Resolves a path relative to the file system root (`r3/f1` or `/r3/f1`). Symlinks are
    /// not followed.
    pub fn lookup(&self, path: &str) -> Result<InodeNo> {
        let mut ino = ROOT_INO;
        let mut walked = String::new();
        for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            if comp.contains('\0') {
                return Err(Error::InvalidPath(path.to_string()));
            }
            let dir = self.inode(ino)?;
            if !dir.is_dir() {
                return Err(Error::NotADirectory(format!("/{walked}")));
            }
            let entries = self.read_dir(ino)?;
            walked = if walked.is_empty() {
                comp.to_string()
            } else {
                format!("{walked}/{comp}")
            };
            ino = entries
                .iter()
                .find(|e| e.name == comp.as_bytes())
                .map(|e| e.ino)
                .ok_or_else(|| Error::NotFound(format!("/{walked}")))?;
            self.check_ino(ino)?;
        }
        Ok(ino)
    }

    // ---- bitmaps and ownership ------------------------------------------------------------

    /// Blocks of group `g` that hold the superblock backup, group descriptors and reserved
    /// GDT blocks (ext4_num_base_meta_clusters(), fs/ext4/balloc.c).
    fn base_meta_blocks(&self, g: u64) -> Vec<u64> {
        let first = self.group_first_block(g);
        let has_super = self.sb.group_has_super(g);
        let mut v = vec![];
        if has_super {
            v.push(first);
        }
        let dpb = self.descs_per_block();
        let meta_bg = self.sb.has_incompat(INCOMPAT_META_BG);
        let first_meta_bg = u64::from(self.sb.first_meta_bg);
        let desc_blocks = self.group_count().div_ceil(dpb);
        if !meta_bg || g / dpb < first_meta_bg {
            if has_super {
                let old = if meta_bg { first_meta_bg } else { desc_blocks };
                let n = old + u64::from(self.sb.reserved_gdt_blocks);
                v.extend((1..=n).map(|k| first + k));
            }
        } else {
            let idx = g % dpb;
            if idx == 0 || idx == 1 || idx == dpb - 1 {
                v.push(first + u64::from(has_super));
            }
        }
        v.retain(|&b| b < self.sb.blocks_count);
        v
    }

    /// Static file system metadata: superblocks, descriptors, reserved GDT blocks, bitmaps,
    /// inode tables, MMP block.
    pub fn fs_metadata_blocks(&self) -> BlockSet {
        let mut s = BlockSet::new(self.sb.blocks_count);
        let itb = self.inode_table_blocks();
        for (g, gd) in self.groups.iter().enumerate() {
            for b in self.base_meta_blocks(g as u64) {
                s.insert(b);
            }
            s.insert(gd.block_bitmap);
            s.insert(gd.inode_bitmap);
            for b in gd.inode_table..gd.inode_table.saturating_add(itb) {
                if !s.insert(b) && b >= self.sb.blocks_count {
                    break;
                }
            }
        }
        if self.sb.has_incompat(INCOMPAT_MMP) {
            s.insert(self.sb.mmp_block);
        }
        s
    }

    /// Group `g`'s block bitmap.
    pub fn block_bitmap(&self, g: u64) -> Result<GroupBitmap> {
        let gd = self.group_desc(g)?;
        let first = self.group_first_block(g);
        let count = self.group_block_count(g);
        let in_group = |b: u64| b >= first && b < first + count;
        if self.has_group_csum() && gd.flags & EXT4_BG_BLOCK_UNINIT != 0 {
            let mut bits = vec![0u8; count.div_ceil(8) as usize];
            let mut set = |b: u64| {
                if in_group(b) {
                    let i = b - first;
                    bits[(i / 8) as usize] |= 1 << (i % 8);
                }
            };
            self.base_meta_blocks(g).into_iter().for_each(&mut set);
            set(gd.block_bitmap);
            set(gd.inode_bitmap);
            (gd.inode_table..gd.inode_table.saturating_add(self.inode_table_blocks()))
                .take(count as usize)
                .for_each(set);
            return Ok(GroupBitmap {
                group: g,
                first,
                count,
                uninit: true,
                bits,
            });
        }
        Ok(GroupBitmap {
            group: g,
            first,
            count,
            uninit: false,
            bits: self.read_pblk(gd.block_bitmap)?,
        })
    }

    /// Group `g`'s inode bitmap (bit i is inode g * inodes_per_group + i + 1).
    pub fn inode_bitmap(&self, g: u64) -> Result<GroupBitmap> {
        let gd = self.group_desc(g)?;
        let ipg = u64::from(self.sb.inodes_per_group);
        let uninit = self.has_group_csum() && gd.flags & EXT4_BG_INODE_UNINIT != 0;
        let bits = if uninit {
            vec![0u8; ipg.div_ceil(8) as usize]
        } else {
            self.read_pblk(gd.inode_bitmap)?
        };
        Ok(GroupBitmap {
            group: g,
            first: g * ipg + 1,
            count: ipg,
            uninit,
            bits,
        })
    }

    /// Every block the block bitmaps mark allocated.
    pub fn allocated_blocks(&self) -> Result<BlockSet> {
        let mut s = BlockSet::new(self.sb.blocks_count);
        for g in 0..self.group_count() {
            for b in self.block_bitmap(g)?.set_items() {
                s.insert(b);
            }
        }
        Ok(s)
    }

    /// Walks every in-use inode's map (data, index/indirect blocks, xattr block).
    pub fn owned_blocks(&self) -> Result<OwnedBlocks> {
        let mut r = OwnedBlocks {
            owned: BlockSet::new(self.sb.blocks_count),
            multiply_claimed: BlockSet::new(self.sb.blocks_count),
            unreadable: vec![],
        };
        self.for_each_in_use_inode(|inode| match self.inode_blocks(&inode) {
            Ok(blocks) => {
                for b in blocks {
                    if !r.owned.insert(b) {
                        r.multiply_claimed.insert(b);
                    }
                }
            }
            Err(e) => r.unreadable.push((inode.ino, e.to_string())),
        })?;
        Ok(r)
    }

    fn inode_blocks(&self, inode: &Inode) -> Result<Vec<u64>> {
        let map = self.map_of(inode)?;
        let mut v: Vec<u64> = map.physical_blocks().collect();
        if inode.file_acl != 0 && inode.file_acl < self.sb.blocks_count {
            v.push(inode.file_acl);
        }
        Ok(v)
    }

    /// Which in-use inodes own each of `pblks` (an empty list: nobody).
    pub fn owners_of(&self, pblks: &[u64]) -> Result<BTreeMap<u64, Vec<InodeNo>>> {
        let mut want: BTreeMap<u64, Vec<InodeNo>> = pblks.iter().map(|&b| (b, vec![])).collect();
        self.for_each_in_use_inode(|inode| {
            if let Ok(blocks) = self.inode_blocks(&inode) {
                for b in blocks {
                    if let Some(v) = want.get_mut(&b) {
                        v.push(inode.ino);
                    }
                }
            }
        })?;
        Ok(want)
    }

    /// Bitmap versus ownership, like e2fsck pass 5's "Block bitmap differences".
    pub fn block_accounting(&self) -> Result<BlockAccounting> {
        let allocated = self.allocated_blocks()?;
        let owned = self.owned_blocks()?;
        let meta = self.fs_metadata_blocks();
        let first = u64::from(self.sb.first_data_block);
        let leaked = allocated
            .iter()
            .filter(|&b| !owned.owned.contains(b) && !meta.contains(b))
            .collect();
        let unmarked_in_use = owned
            .owned
            .iter()
            .chain(meta.iter())
            .filter(|&b| b >= first && !allocated.contains(b))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        Ok(BlockAccounting {
            leaked,
            unmarked_in_use,
            multiply_claimed: owned.multiply_claimed.iter().collect(),
            unreadable_inodes: owned.unreadable,
        })
    }
}

/// Reads `len` bytes at `offset`, refusing reads past the image end (a truncated image) and
/// reads larger than [`MAX_READ_FILE`] (sizes come from untrusted metadata).
fn read_exact_at(
    file: &File,
    path: &Path,
    image_len: u64,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>> {
    let end = offset.checked_add(len);
    if end.is_none_or(|e| e > image_len) || len > MAX_READ_FILE {
        return Err(Error::Truncated {
            offset,
            len,
            image_len,
        });
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(buf)
}
