//! Builds real ext4 images holding tagged files, and the RoundRecords that describe them.
#![allow(dead_code)]

use e4race_protocol::{BlockTag, FileRecord, InodeAfter, MigrateCall, RoundRecord, TAG_BLOCK_SIZE};
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use testkit::mkfs;

pub const RUN_ID: u64 = 0xE4_2ACE;
pub const BS: u64 = TAG_BLOCK_SIZE as u64;

/// One staged file: `blocks` blocks, `prefilled` written before the race, `holes` filled
/// during it (here all staged up front), the rest left as holes.
pub struct Spec {
    pub round: u32,
    pub file_id: u32,
    pub blocks: u64,
    pub synced: bool,
}

impl Spec {
    pub fn path(&self) -> String {
        format!("r{}/f{}", self.round, self.file_id)
    }
    /// Even blocks prefilled, odd blocks hole-filled, the last block never written.
    pub fn prefilled(&self) -> Vec<u64> {
        (0..self.blocks - 1).filter(|l| l % 2 == 0).collect()
    }
    pub fn hole_lblks(&self) -> Vec<u64> {
        (0..self.blocks - 1).filter(|l| l % 2 == 1).rev().collect()
    }
    pub fn tag(&self, lblk: u64) -> BlockTag {
        BlockTag {
            run_id: RUN_ID,
            file_id: self.file_id,
            round: self.round,
            lblk,
            generation: 0,
        }
    }
}

pub fn stage(root: &Path, specs: &[Spec]) {
    for s in specs {
        let p = root.join(s.path());
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut f = fs::File::create(&p).unwrap();
        for l in s.prefilled().into_iter().chain(s.hole_lblks()) {
            f.seek(SeekFrom::Start(l * BS)).unwrap();
            f.write_all(&s.tag(l).to_block()[..]).unwrap();
        }
        f.set_len(s.blocks * BS).unwrap();
    }
}

pub fn records(specs: &[Spec]) -> Vec<RoundRecord> {
    let mut rounds: Vec<RoundRecord> = vec![];
    for s in specs {
        let rec = FileRecord {
            file_id: s.file_id,
            path: s.path(),
            ino: 0,
            prefilled: s.prefilled(),
            hole_lblks: s.hole_lblks(),
            hole_t_ns: s.hole_lblks().iter().map(|l| 1000 + l).collect(),
            synced: s.synced,
            migration: Some(MigrateCall {
                start_ns: 1000,
                end_ns: 2000,
                error: 0,
                return_value: 0,
                flags_before: 0,
                ..Default::default()
            }),
            after: InodeAfter {
                flags: 0x80000,
                extents: 1,
                content_ok: true,
            },
            postconditions: vec![],
            overwrites: vec![],
            overwrite_t_ns: vec![],
            moves: vec![],
            extents_before: 0,
            unwritten_lblks: Vec::new(),
        };
        match rounds.iter_mut().find(|r| r.round == s.round) {
            Some(r) => r.files.push(rec),
            None => rounds.push(RoundRecord {
                round: s.round,
                files: vec![rec],
            }),
        }
    }
    rounds
}

/// The standard layout: two synced files in round 0, one in round 1, one unsynced.
pub fn standard_specs() -> Vec<Spec> {
    vec![
        Spec {
            round: 0,
            file_id: 0,
            blocks: 40,
            synced: true,
        },
        Spec {
            round: 0,
            file_id: 1,
            blocks: 1100,
            synced: true,
        },
        Spec {
            round: 1,
            file_id: 0,
            blocks: 17,
            synced: true,
        },
        Spec {
            round: 1,
            file_id: 1,
            blocks: 8,
            synced: false,
        },
    ]
}

/// Stages `specs`, makes an image with `opts`, returns (tempdir, image, records).
pub fn build(opts: &[&str], specs: &[Spec]) -> (tempfile::TempDir, PathBuf, Vec<RoundRecord>) {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("st");
    stage(&st, specs);
    let img = dir.path().join("disk.img");
    mkfs(&img, &st, opts, "64M");
    (dir, img, records(specs))
}

/// Overwrites physical block `pblk` of the image with `data` (behind the file system's back).
pub fn poke_block(img: &Path, pblk: u64, data: &[u8]) {
    let f = fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(data, pblk * BS).unwrap();
}
