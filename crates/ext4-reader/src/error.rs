//! Errors of the reader. Images are untrusted input: every inconsistency is one of these, never a
//! panic.

use std::path::PathBuf;

/// Why an image or a file in it could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read image {path}: {source}; check that the path exists and is readable")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "image is truncated: {len} bytes at offset {offset} are needed but the image has \
         {image_len} bytes; copy the whole disk image (and wait until the guest has shut down)"
    )]
    Truncated {
        offset: u64,
        len: u64,
        image_len: u64,
    },
    #[error(
        "not a usable ext4 image: {0}; pass the raw disk image the guest formatted \
         (not qcow2, not a partition table)"
    )]
    BadSuperblock(String),
    #[error("unsupported ext4 feature: {0}; format test images without it")]
    Unsupported(String),
    #[error("corrupt image: {0}; run `e2fsck -fn` on the image for details")]
    Corrupt(String),
    #[error("inode {ino} is out of range (the file system has inodes 1..={count})")]
    InodeOutOfRange { ino: u32, count: u32 },
    #[error("no such file or directory in the image: {0}")]
    NotFound(String),
    #[error("{0} is not a directory in the image, so a path cannot go through it")]
    NotADirectory(String),
    #[error("invalid path {0:?}: give a path relative to the file system root such as `r3/f1`")]
    InvalidPath(String),
    #[error(
        "inode {ino} claims {size} bytes, more than read_file allows ({limit}); \
         read it block by block with read_block"
    )]
    TooLarge { ino: u32, size: u64, limit: u64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
