//! Inodes (`struct ext4_inode`, fs/ext4/ext4.h) and group descriptors (`struct ext4_group_desc`).

use crate::bytes::{le16, le32};
use serde::{Deserialize, Serialize};

/// An inode number. Inode 2 is the root directory (EXT4_ROOT_INO).
pub type InodeNo = u32;
pub const ROOT_INO: InodeNo = 2;

// i_flags bits, fs/ext4/ext4.h.
pub const EXT4_INDEX_FL: u32 = 0x1000;
pub const EXT4_HUGE_FILE_FL: u32 = 0x40000;
pub const EXT4_EXTENTS_FL: u32 = 0x80000;
pub const EXT4_INLINE_DATA_FL: u32 = 0x1000_0000;

// i_mode file types (S_IFMT).
pub const S_IFMT: u16 = 0xF000;
pub const S_IFDIR: u16 = 0x4000;
pub const S_IFREG: u16 = 0x8000;
pub const S_IFLNK: u16 = 0xA000;

/// `EXT4_N_BLOCKS`: the 15 u32 of `i_block`, 60 bytes.
pub const I_BLOCK_LEN: usize = 60;

/// The fields of an on-disk inode this crate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub ino: InodeNo,
    pub mode: u16,
    /// `i_size_lo | i_size_high << 32`.
    pub size: u64,
    pub links_count: u16,
    /// `i_blocks_lo | l_i_blocks_high << 32`, in 512-byte units unless EXT4_HUGE_FILE_FL.
    pub blocks: u64,
    pub flags: u32,
    pub dtime: u32,
    pub generation: u32,
    /// The raw `i_block` area: an extent tree root or 12 direct + 3 indirect pointers.
    pub i_block: [u8; I_BLOCK_LEN],
    /// `i_file_acl_lo | l_i_file_acl_high << 32`: the extended-attribute block, 0 if none.
    pub file_acl: u64,
}

impl Inode {
    /// Parses a raw inode (at least 128 bytes; shorter input reads as zeros).
    pub fn parse(ino: InodeNo, b: &[u8]) -> Self {
        let mut i_block = [0u8; I_BLOCK_LEN];
        if let Some(s) = b.get(0x28..0x28 + I_BLOCK_LEN) {
            i_block.copy_from_slice(s);
        }
        Inode {
            ino,
            mode: le16(b, 0x0),
            size: u64::from(le32(b, 0x4)) | (u64::from(le32(b, 0x6C)) << 32),
            links_count: le16(b, 0x1A),
            blocks: u64::from(le32(b, 0x1C)) | (u64::from(le16(b, 0x74)) << 32),
            flags: le32(b, 0x20),
            dtime: le32(b, 0x14),
            generation: le32(b, 0x64),
            i_block,
            file_acl: u64::from(le32(b, 0x68)) | (u64::from(le16(b, 0x76)) << 32),
        }
    }

    pub fn file_type(&self) -> u16 {
        self.mode & S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.file_type() == S_IFDIR
    }
    pub fn is_regular(&self) -> bool {
        self.file_type() == S_IFREG
    }
    pub fn uses_extents(&self) -> bool {
        self.flags & EXT4_EXTENTS_FL != 0
    }
    pub fn has_inline_data(&self) -> bool {
        self.flags & EXT4_INLINE_DATA_FL != 0
    }

    /// Whether `i_block` holds a block map at all. Device nodes, FIFOs and sockets keep device
    /// numbers there, and a fast symlink keeps its target there (ext4_inode_is_fast_symlink():
    /// a symlink shorter than the 60 bytes of i_block).
    pub fn has_block_map(&self) -> bool {
        match self.file_type() {
            S_IFREG | S_IFDIR => !self.has_inline_data(),
            S_IFLNK => {
                !self.has_inline_data() && (self.size >= I_BLOCK_LEN as u64 || self.uses_extents())
            }
            // Reserved inodes (bad blocks inode 1, resize inode 7, journal inode 8 before
            // mode was set) may have mode 0 and still a block map.
            0 => true,
            _ => false,
        }
    }

    /// The u32 pointer `i` of an indirect-mapped `i_block` (0..15).
    pub fn block_ptr(&self, i: usize) -> u32 {
        le32(&self.i_block, i * 4)
    }
}

// bg_flags, fs/ext4/ext4.h.
pub const EXT4_BG_INODE_UNINIT: u16 = 0x1;
pub const EXT4_BG_BLOCK_UNINIT: u16 = 0x2;

/// One block group descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDesc {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    pub free_blocks_count: u32,
    pub free_inodes_count: u32,
    pub flags: u16,
    pub itable_unused: u32,
}

impl GroupDesc {
    /// Parses a 32- or 64-byte descriptor; the `_hi` halves exist only when `desc_size >= 64`
    /// (EXT4_MIN_DESC_SIZE_64BIT).
    pub fn parse(b: &[u8], desc_size: u16) -> Self {
        let big = desc_size >= 64;
        let hi32 = |off: usize| {
            if big {
                u64::from(le32(b, off)) << 32
            } else {
                0
            }
        };
        let hi16 = |off: usize| {
            if big {
                u32::from(le16(b, off)) << 16
            } else {
                0
            }
        };
        GroupDesc {
            block_bitmap: u64::from(le32(b, 0x0)) | hi32(0x20),
            inode_bitmap: u64::from(le32(b, 0x4)) | hi32(0x24),
            inode_table: u64::from(le32(b, 0x8)) | hi32(0x28),
            free_blocks_count: u32::from(le16(b, 0xC)) | hi16(0x2C),
            free_inodes_count: u32::from(le16(b, 0xE)) | hi16(0x2E),
            flags: le16(b, 0x12),
            itable_unused: u32::from(le16(b, 0x1C)) | hi16(0x32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_inode_fields() {
        let mut b = vec![0u8; 256];
        b[0..2].copy_from_slice(&0x81a4u16.to_le_bytes());
        b[4..8].copy_from_slice(&5u32.to_le_bytes());
        b[0x6C..0x70].copy_from_slice(&1u32.to_le_bytes());
        b[0x20..0x24].copy_from_slice(&EXT4_EXTENTS_FL.to_le_bytes());
        b[0x28..0x2C].copy_from_slice(&77u32.to_le_bytes());
        let i = Inode::parse(12, &b);
        assert_eq!(i.size, (1 << 32) + 5);
        assert!(i.is_regular() && i.uses_extents() && i.has_block_map());
        assert_eq!(i.block_ptr(0), 77);
        // A truncated buffer parses as zeros rather than panicking.
        let short = Inode::parse(12, &b[..10]);
        assert_eq!(short.size, 5);
        assert_eq!(short.block_ptr(0), 0);
    }

    #[test]
    fn fast_symlink_has_no_map() {
        let mut b = vec![0u8; 128];
        b[0..2].copy_from_slice(&(S_IFLNK | 0o777).to_le_bytes());
        b[4..8].copy_from_slice(&10u32.to_le_bytes());
        assert!(!Inode::parse(13, &b).has_block_map());
    }

    #[test]
    fn group_desc_32_and_64() {
        let mut b = vec![0u8; 64];
        b[0..4].copy_from_slice(&100u32.to_le_bytes());
        b[0x20..0x24].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(GroupDesc::parse(&b, 32).block_bitmap, 100);
        assert_eq!(GroupDesc::parse(&b, 64).block_bitmap, (1 << 32) + 100);
    }
}
