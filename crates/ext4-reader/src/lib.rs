//! A read-only reader for raw ext4 images, for the e4race host's oracles and forensics.
//!
//! It reads what the oracles need and nothing more: the superblock, group descriptors, inodes,
//! directories, both kinds of block map (extent trees and the classic indirect map), and the
//! on-disk bitmaps, and it can tell which physical blocks each inode owns.
//!
//! Why not the `ext4-view` crate: version 1.0 reads extent-mapped and indirect-mapped files,
//! but only by path and only as bytes. Its block-map and extent iterators, inodes and
//! group descriptors are all `pub(crate)`, so it cannot say which physical block backs a
//! logical block, whether an extent is unwritten, which blocks an inode owns, or what the
//! block bitmap says — the very things the oracles and forensics need. It also needs
//! Rust 1.85, above this workspace's rust-version (1.82).
//!
//! Checksums (metadata_csum) are not verified and the journal is not replayed: images come
//! from a cleanly unmounted file system, and [`Ext4Image::needs_recovery`] says when not.

mod blockset;
mod bytes;
mod dir;
mod error;
mod image;
mod inode;
mod map;
mod orphan;
mod superblock;

pub use blockset::BlockSet;
pub use dir::DirEntry;
pub use error::{Error, Result};
pub use image::{BlockAccounting, BlockRead, Ext4Image, GroupBitmap, OwnedBlocks, MAX_READ_FILE};
pub use inode::{GroupDesc, Inode, InodeNo, ROOT_INO};
pub use map::{Extent, FileMap, MapKind};
pub use orphan::{Orphan, OrphanFreesOwned};
pub use superblock::Superblock;

/// Feature and flag constants from fs/ext4/ext4.h, for callers that inspect raw values.
pub mod consts {
    pub use crate::inode::{
        EXT4_BG_BLOCK_UNINIT, EXT4_BG_INODE_UNINIT, EXT4_EXTENTS_FL, EXT4_HUGE_FILE_FL,
        EXT4_INDEX_FL, EXT4_INLINE_DATA_FL, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG,
    };
    pub use crate::superblock::{
        COMPAT_DIR_INDEX, COMPAT_HAS_JOURNAL, COMPAT_RESIZE_INODE, COMPAT_SPARSE_SUPER2,
        INCOMPAT_64BIT, INCOMPAT_EXTENTS, INCOMPAT_FILETYPE, INCOMPAT_FLEX_BG,
        INCOMPAT_INLINE_DATA, INCOMPAT_META_BG, INCOMPAT_MMP, INCOMPAT_RECOVER, RO_COMPAT_GDT_CSUM,
        RO_COMPAT_HUGE_FILE, RO_COMPAT_LARGE_FILE, RO_COMPAT_METADATA_CSUM, RO_COMPAT_SPARSE_SUPER,
    };
}
