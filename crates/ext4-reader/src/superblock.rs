//! The superblock (`struct ext4_super_block`, fs/ext4/ext4.h), 1024 bytes at byte 1024.

use crate::bytes::{le16, le32};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

pub const SUPERBLOCK_OFFSET: u64 = 1024;
pub const SUPERBLOCK_SIZE: usize = 1024;
/// `EXT4_SUPER_MAGIC`.
pub const EXT4_SUPER_MAGIC: u16 = 0xEF53;

// Feature bits, fs/ext4/ext4.h (EXT4_FEATURE_*).
pub const COMPAT_HAS_JOURNAL: u32 = 0x0004;
pub const COMPAT_RESIZE_INODE: u32 = 0x0010;
pub const COMPAT_DIR_INDEX: u32 = 0x0020;
pub const COMPAT_SPARSE_SUPER2: u32 = 0x0200;
pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;
pub const RO_COMPAT_LARGE_FILE: u32 = 0x0002;
pub const RO_COMPAT_HUGE_FILE: u32 = 0x0008;
pub const RO_COMPAT_GDT_CSUM: u32 = 0x0010;
pub const RO_COMPAT_BIGALLOC: u32 = 0x0200;
pub const RO_COMPAT_METADATA_CSUM: u32 = 0x0400;
pub const INCOMPAT_FILETYPE: u32 = 0x0002;
pub const INCOMPAT_RECOVER: u32 = 0x0004;
pub const INCOMPAT_JOURNAL_DEV: u32 = 0x0008;
pub const INCOMPAT_META_BG: u32 = 0x0010;
pub const INCOMPAT_EXTENTS: u32 = 0x0040;
pub const INCOMPAT_64BIT: u32 = 0x0080;
pub const INCOMPAT_MMP: u32 = 0x0100;
pub const INCOMPAT_FLEX_BG: u32 = 0x0200;
pub const INCOMPAT_INLINE_DATA: u32 = 0x8000;

/// Incompatible features this reader understands; anything else is refused at open, as the
/// kernel refuses to mount (ext4_feature_set_ok()).
const INCOMPAT_SUPPORTED: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_RECOVER
    | INCOMPAT_META_BG
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | 0x0400 // EA_INODE: xattr values in inodes, irrelevant to block maps
    | 0x2000 // CSUM_SEED
    | 0x4000 // LARGEDIR: 3-level htree, still linear-readable
    | INCOMPAT_INLINE_DATA // refused per inode, not per file system
    | 0x10000 // ENCRYPT: names/contents unreadable, block maps fine
    | 0x20000; // CASEFOLD: lookups are exact-match here

/// The fields of the superblock this crate uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Superblock {
    pub inodes_count: u32,
    pub blocks_count: u64,
    pub free_blocks_count: u64,
    pub free_inodes_count: u32,
    pub first_data_block: u32,
    pub block_size: u32,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub state: u16,
    pub rev_level: u32,
    pub first_ino: u32,
    pub inode_size: u16,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    /// Effective group descriptor size: `s_desc_size` with 64bit, else 32
    /// (EXT4_DESC_SIZE()).
    pub desc_size: u16,
    pub reserved_gdt_blocks: u16,
    pub first_meta_bg: u32,
    pub backup_bgs: [u32; 2],
    pub mmp_block: u64,
    /// `s_last_orphan` (0xE8): the head of the on-disk orphan list, 0 when empty. Each
    /// orphan's `i_dtime` holds the next one (NEXT_ORPHAN(), fs/ext4/ext4.h).
    pub last_orphan: u32,
}

impl Superblock {
    /// Parses and validates the 1024 bytes of the superblock.
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < SUPERBLOCK_SIZE {
            return Err(Error::BadSuperblock(format!(
                "superblock is {} bytes, need {SUPERBLOCK_SIZE}",
                b.len()
            )));
        }
        let magic = le16(b, 0x38);
        if magic != EXT4_SUPER_MAGIC {
            return Err(Error::BadSuperblock(format!(
                "magic at byte 1080 is {magic:#06x}, not {EXT4_SUPER_MAGIC:#06x}"
            )));
        }
        let feature_compat = le32(b, 0x5C);
        let feature_incompat = le32(b, 0x60);
        let feature_ro_compat = le32(b, 0x64);
        let is64 = feature_incompat & INCOMPAT_64BIT != 0;
        let hi = |off: usize| {
            if is64 {
                u64::from(le32(b, off)) << 32
            } else {
                0
            }
        };
        let log_block_size = le32(b, 0x18);
        // EXT4_MIN_BLOCK_LOG_SIZE 10 .. EXT4_MAX_BLOCK_LOG_SIZE 16.
        if log_block_size > 6 {
            return Err(Error::BadSuperblock(format!(
                "s_log_block_size {log_block_size} gives a block size above 64 KiB"
            )));
        }
        let block_size = 1024u32 << log_block_size;
        let rev_level = le32(b, 0x4C);
        let (first_ino, inode_size) = if rev_level == 0 {
            (11, 128) // EXT4_GOOD_OLD_FIRST_INO, EXT4_GOOD_OLD_INODE_SIZE
        } else {
            (le32(b, 0x54), le16(b, 0x58))
        };
        let desc_size = if is64 { le16(b, 0xFE) } else { 32 };
        let sb = Superblock {
            inodes_count: le32(b, 0x0),
            blocks_count: u64::from(le32(b, 0x4)) | hi(0x150),
            free_blocks_count: u64::from(le32(b, 0xC)) | hi(0x158),
            free_inodes_count: le32(b, 0x10),
            first_data_block: le32(b, 0x14),
            block_size,
            blocks_per_group: le32(b, 0x20),
            inodes_per_group: le32(b, 0x28),
            state: le16(b, 0x3A),
            rev_level,
            first_ino,
            inode_size,
            feature_compat,
            feature_incompat,
            feature_ro_compat,
            desc_size,
            reserved_gdt_blocks: le16(b, 0xCE),
            first_meta_bg: le32(b, 0x104),
            backup_bgs: [le32(b, 0x24C), le32(b, 0x250)],
            mmp_block: u64::from(le32(b, 0x168)) | (u64::from(le32(b, 0x16C)) << 32),
            last_orphan: le32(b, 0xE8),
        };
        sb.validate()?;
        Ok(sb)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::BadSuperblock(m));
        let unknown = self.feature_incompat & !INCOMPAT_SUPPORTED;
        if unknown != 0 {
            return Err(Error::Unsupported(format!(
                "incompat feature bits {unknown:#x}"
            )));
        }
        if self.feature_incompat & INCOMPAT_JOURNAL_DEV != 0 {
            return Err(Error::Unsupported("external journal device image".into()));
        }
        if self.feature_ro_compat & RO_COMPAT_BIGALLOC != 0 {
            return Err(Error::Unsupported("bigalloc (clusters)".into()));
        }
        // ext4_fill_super(): a 1 KiB file system starts at block 1, larger ones at 0.
        let want_first = u32::from(self.block_size == 1024);
        if self.first_data_block != want_first {
            return bad(format!(
                "s_first_data_block is {} for {}-byte blocks, expected {want_first}",
                self.first_data_block, self.block_size
            ));
        }
        let bits_per_block = self.block_size * 8;
        if self.blocks_per_group == 0 || self.blocks_per_group > bits_per_block {
            return bad(format!(
                "s_blocks_per_group {} is not in 1..={bits_per_block}",
                self.blocks_per_group
            ));
        }
        if self.inodes_per_group == 0 || self.inodes_per_group > bits_per_block {
            return bad(format!(
                "s_inodes_per_group {} is not in 1..={bits_per_block}",
                self.inodes_per_group
            ));
        }
        if self.blocks_count <= u64::from(self.first_data_block) {
            return bad(format!("s_blocks_count is {}", self.blocks_count));
        }
        let groups = self.group_count();
        if u64::from(self.inodes_count) > groups * u64::from(self.inodes_per_group)
            || self.inodes_count < 2
        {
            return bad(format!(
                "s_inodes_count {} does not fit {groups} groups of {} inodes",
                self.inodes_count, self.inodes_per_group
            ));
        }
        if self.inode_size < 128
            || !self.inode_size.is_power_of_two()
            || u32::from(self.inode_size) > self.block_size
        {
            return bad(format!("s_inode_size {} is invalid", self.inode_size));
        }
        if self.feature_incompat & INCOMPAT_64BIT != 0
            && (self.desc_size < 64
                || !self.desc_size.is_power_of_two()
                || u32::from(self.desc_size) > self.block_size)
        {
            return bad(format!(
                "s_desc_size {} is invalid for 64bit",
                self.desc_size
            ));
        }
        Ok(())
    }

    /// Number of block groups (ext4_fill_super(): rounded up).
    pub fn group_count(&self) -> u64 {
        let span = self.blocks_count - u64::from(self.first_data_block);
        span.div_ceil(u64::from(self.blocks_per_group))
    }

    pub fn has_compat(&self, bit: u32) -> bool {
        self.feature_compat & bit != 0
    }
    pub fn has_incompat(&self, bit: u32) -> bool {
        self.feature_incompat & bit != 0
    }
    pub fn has_ro_compat(&self, bit: u32) -> bool {
        self.feature_ro_compat & bit != 0
    }

    /// Whether group `g` holds a superblock backup (ext4_bg_has_super(), fs/ext4/balloc.c).
    pub fn group_has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.has_compat(COMPAT_SPARSE_SUPER2) {
            return g == u64::from(self.backup_bgs[0]) || g == u64::from(self.backup_bgs[1]);
        }
        if g <= 1 || !self.has_ro_compat(RO_COMPAT_SPARSE_SUPER) {
            return true;
        }
        if g % 2 == 0 {
            return false;
        }
        [3u64, 5, 7].iter().any(|&base| is_power_of(g, base))
    }
}

fn is_power_of(mut n: u64, base: u64) -> bool {
    while n % base == 0 && n > 1 {
        n /= base;
    }
    n == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Vec<u8> {
        let mut b = vec![0u8; SUPERBLOCK_SIZE];
        b[0x38..0x3A].copy_from_slice(&EXT4_SUPER_MAGIC.to_le_bytes());
        b[0x0..0x4].copy_from_slice(&1024u32.to_le_bytes()); // inodes
        b[0x4..0x8].copy_from_slice(&8192u32.to_le_bytes()); // blocks
        b[0x18..0x1C].copy_from_slice(&2u32.to_le_bytes()); // 4 KiB
        b[0x20..0x24].copy_from_slice(&32768u32.to_le_bytes());
        b[0x28..0x2C].copy_from_slice(&1024u32.to_le_bytes());
        b[0x4C..0x50].copy_from_slice(&1u32.to_le_bytes());
        b[0x54..0x58].copy_from_slice(&11u32.to_le_bytes());
        b[0x58..0x5A].copy_from_slice(&256u16.to_le_bytes());
        b
    }

    #[test]
    fn parses_minimal() {
        let sb = Superblock::parse(&minimal()).unwrap();
        assert_eq!(sb.block_size, 4096);
        assert_eq!(sb.group_count(), 1);
        assert_eq!(sb.desc_size, 32);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            Superblock::parse(&[0xAB; 1024]),
            Err(Error::BadSuperblock(_))
        ));
        let mut b = minimal();
        b[0x18] = 7;
        assert!(Superblock::parse(&b).is_err());
        let mut b = minimal();
        b[0x20..0x24].copy_from_slice(&0u32.to_le_bytes());
        assert!(Superblock::parse(&b).is_err());
        let mut b = minimal();
        b[0x58..0x5A].copy_from_slice(&100u16.to_le_bytes());
        assert!(Superblock::parse(&b).is_err());
        assert!(Superblock::parse(&b[..10]).is_err());
    }

    #[test]
    fn sparse_super_backups() {
        let mut sb = Superblock::parse(&minimal()).unwrap();
        sb.feature_ro_compat |= RO_COMPAT_SPARSE_SUPER;
        let with: Vec<u64> = (0..60).filter(|&g| sb.group_has_super(g)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }
}
