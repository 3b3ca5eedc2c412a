//! What the next mount's orphan cleanup would free (ext4_orphan_cleanup(), fs/ext4/orphan.c):
//! every inode on the on-disk orphan list is deleted when its link count is 0, else truncated
//! to i_size. A block that cleanup would free while another inode still maps it is the crash
//! bug of 6eeaf88fd586 ("ext4: don't use the orphan list when migrating an inode"): the freed
//! block is later allocated again and claimed twice.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::image::Ext4Image;
use crate::inode::InodeNo;

/// One inode on the orphan list and what cleanup does to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orphan {
    pub ino: InodeNo,
    pub links_count: u16,
    /// The blocks cleanup frees: all of them for an unlinked inode, else the data blocks at
    /// or past i_size (ext4_truncate()).
    pub frees: Vec<u64>,
}

/// A block orphan cleanup would free although a live inode maps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanFreesOwned {
    pub orphan: InodeNo,
    pub owner: InodeNo,
    pub pblk: u64,
}

impl Ext4Image {
    /// The on-disk orphan list, head first: `s_last_orphan`, then each inode's i_dtime
    /// (NEXT_ORPHAN()). Stops at 0, at an inode number out of range (the kernel's cleanup
    /// stops there too) or at a loop. The orphan file (COMPAT_ORPHAN_FILE) is not read.
    pub fn orphans(&self) -> Result<Vec<Orphan>> {
        let sb = self.superblock();
        let bs = u64::from(sb.block_size);
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let mut ino = sb.last_orphan;
        while ino >= sb.first_ino && ino <= sb.inodes_count && seen.insert(ino) {
            let inode = self.inode(ino)?;
            let map = self.map_of(&inode)?;
            let frees = if inode.links_count == 0 {
                let mut v: Vec<u64> = map.physical_blocks().collect();
                if inode.file_acl != 0 && inode.file_acl < sb.blocks_count {
                    v.push(inode.file_acl);
                }
                v
            } else {
                let keep = inode.size.div_ceil(bs);
                map.extents
                    .iter()
                    .flat_map(|e| (e.lblk..e.lblk + e.len).zip(e.pblk..e.pblk + e.len))
                    .filter(|&(l, _)| l >= keep)
                    .map(|(_, p)| p)
                    .collect()
            };
            out.push(Orphan {
                ino,
                links_count: inode.links_count,
                frees,
            });
            ino = inode.dtime;
        }
        Ok(out)
    }

    /// The blocks orphan cleanup would free that a live inode (not itself being deleted)
    /// still maps, one entry per block and owner.
    pub fn orphan_frees_owned(&self) -> Result<Vec<OrphanFreesOwned>> {
        let orphans = self.orphans()?;
        let freed: std::collections::BTreeMap<u64, InodeNo> = orphans
            .iter()
            .flat_map(|o| o.frees.iter().map(move |&b| (b, o.ino)))
            .collect();
        if freed.is_empty() {
            return Ok(vec![]);
        }
        let mut out = Vec::new();
        let mut err = None;
        self.for_each_in_use_inode(|inode| {
            // An orphan's own freed blocks are not a clash with itself.
            let own: BTreeSet<u64> = orphans
                .iter()
                .filter(|o| o.ino == inode.ino)
                .flat_map(|o| o.frees.iter().copied())
                .collect();
            match self.map_of(&inode) {
                Ok(map) => {
                    for b in map.physical_blocks() {
                        if let Some(&orphan) = freed.get(&b) {
                            if !own.contains(&b) {
                                out.push(OrphanFreesOwned {
                                    orphan,
                                    owner: inode.ino,
                                    pblk: b,
                                });
                            }
                        }
                    }
                }
                Err(e) => err = err.take().or(Some(e)),
            }
        })?;
        // An unreadable map elsewhere does not hide a clash found; report it only alone.
        match err {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file `a` with data, and inode `b` turned into the state the mutant leaves: a copy of
    /// a's inode (same extent tree), link count 0, at the head of the orphan list.
    #[test]
    fn an_orphan_sharing_a_live_files_blocks_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("d");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("a"), vec![7u8; 40960]).unwrap();
        std::fs::write(src.join("b"), b"x").unwrap();
        let img = dir.path().join("img");
        testkit::mkfs(&img, &src, &[], "32M");
        let fs = Ext4Image::open(&img).unwrap();
        assert!(fs.orphans().unwrap().is_empty());
        assert!(fs.orphan_frees_owned().unwrap().is_empty());
        let a = fs.lookup("/a").unwrap();
        let b = fs.lookup("/b").unwrap();
        drop(fs);
        let script = format!(
            "unlink /b\ncopy_inode <{a}> <{b}>\nsif <{b}> links_count 0\nssv last_orphan {b}\n"
        );
        testkit::debugfs_script(&img, &script);
        let fs = Ext4Image::open(&img).unwrap();
        let orphans = fs.orphans().unwrap();
        assert_eq!(orphans.len(), 1, "{orphans:?}");
        assert_eq!((orphans[0].ino, orphans[0].links_count), (b, 0));
        assert_eq!(orphans[0].frees.len(), 10, "{orphans:?}");
        let clash = fs.orphan_frees_owned().unwrap();
        assert_eq!(clash.len(), 10, "{clash:?}");
        assert!(clash.iter().all(|c| c.orphan == b && c.owner == a));
    }
}
