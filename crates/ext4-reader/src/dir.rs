//! Directory blocks: linear `struct ext4_dir_entry_2` records (fs/ext4/ext4.h, dir.c).
//!
//! Hashed (htree) directories are read linearly too: their dx_root hides behind the ".." entry's
//! rec_len and every dx_node block starts with a fake entry of inode 0 spanning the block
//! (fs/ext4/namei.c, `struct fake_dirent`), so skipping inode-0 entries skips the index.

use crate::bytes::{le16, le32, u8_at};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// One live directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub ino: u32,
    /// Raw name bytes (ext4 names are bytes, not necessarily UTF-8).
    pub name: Vec<u8>,
    /// EXT4_FT_* (1 regular, 2 directory, 7 symlink, ...) with the filetype feature, else 0.
    pub file_type: u8,
}

impl DirEntry {
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// `ext4_rec_len_from_disk()`: 64 KiB blocks encode a full-block rec_len specially.
fn rec_len_from_disk(raw: u16, block_size: u32) -> u32 {
    let len = u32::from(raw);
    if block_size >= 65536 && (raw == u16::MAX || raw == 0) {
        return block_size;
    }
    (len & 65532) | ((len & 3) << 16)
}

/// Parses the entries of one directory block, appending live ones (inode != 0) to `out`.
/// `filetype` is whether INCOMPAT_FILETYPE is set (then name_len is one byte).
pub fn parse_dir_block(
    dir_ino: u32,
    b: &[u8],
    block_size: u32,
    filetype: bool,
    out: &mut Vec<DirEntry>,
) -> Result<()> {
    let mut off = 0usize;
    while off + 8 <= b.len() {
        let ino = le32(b, off);
        let rec_len = rec_len_from_disk(le16(b, off + 4), block_size) as usize;
        let (name_len, file_type) = if filetype {
            (usize::from(u8_at(b, off + 6)), u8_at(b, off + 7))
        } else {
            (usize::from(le16(b, off + 6)), 0)
        };
        // __ext4_check_dir_entry(): rec_len >= EXT4_DIR_REC_LEN(1) = 12, a multiple of 4,
        // holds the name, and stays inside the block.
        if rec_len < 12 || rec_len % 4 != 0 || rec_len < 8 + name_len || off + rec_len > b.len() {
            return Err(Error::Corrupt(format!(
                "directory inode {dir_ino}: bad entry at offset {off} (rec_len {rec_len}, \
                 name_len {name_len})"
            )));
        }
        if ino != 0 {
            out.push(DirEntry {
                ino,
                name: b[off + 8..off + 8 + name_len].to_vec(),
                file_type,
            });
        }
        off += rec_len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ino: u32, rec_len: u16, name: &[u8]) -> Vec<u8> {
        let mut e = ino.to_le_bytes().to_vec();
        e.extend_from_slice(&rec_len.to_le_bytes());
        e.push(name.len() as u8);
        e.push(1);
        e.extend_from_slice(name);
        e.resize(usize::from(rec_len), 0);
        e
    }

    #[test]
    fn parses_and_skips_deleted() {
        let mut b = entry(2, 12, b".");
        b.extend(entry(0, 20, b"gone"));
        b.extend(entry(12, 1024 - 32, b"f0"));
        let mut out = vec![];
        parse_dir_block(2, &b, 1024, true, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].name, b"f0");
        assert_eq!(out[1].ino, 12);
    }

    #[test]
    fn bad_rec_len_is_error_not_loop() {
        let mut b = entry(2, 12, b".");
        b.extend(vec![0u8; 1012]); // rec_len 0 next
        let mut out = vec![];
        assert!(parse_dir_block(2, &b, 1024, true, &mut out).is_err());
        let b = entry(2, 2000, b"x");
        assert!(parse_dir_block(2, &b[..1024], 1024, true, &mut out).is_err());
    }

    #[test]
    fn big_block_rec_len() {
        assert_eq!(rec_len_from_disk(u16::MAX, 65536), 65536);
        assert_eq!(rec_len_from_disk(4096, 4096), 4096);
    }
}
