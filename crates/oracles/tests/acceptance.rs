//! The mandatory acceptance test: a tagged image, one block deliberately lost by the host,
//! and the content oracle must report exactly that block and nothing else. Run on both an
//! indirect-mapped and an extent-mapped image.

mod common;

use common::*;
use e4race_protocol::BlockTag;
use ext4_reader::Ext4Image;
use oracles::{check_content, run_e2fsck, FileProblemKind, Found, FsckFinding, LostBlock, Sign};
use testkit::{debugfs, e2fsprogs_tool, INDIRECT_OPTS};

fn content(
    img: &std::path::Path,
    rounds: &[e4race_protocol::RoundRecord],
) -> oracles::ContentReport {
    let image = Ext4Image::open(img).unwrap();
    check_content(&image, RUN_ID, rounds).unwrap()
}

/// Acknowledged blocks of the synced files in `standard_specs`.
fn acknowledged() -> u64 {
    standard_specs()
        .iter()
        .filter(|s| s.synced)
        .map(|s| s.blocks - 1)
        .sum()
}

fn intact_image_is_clean(opts: &[&str]) {
    let (_d, img, rounds) = build(opts, &standard_specs());
    let r = content(&img, &rounds);
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(r.blocks_checked, acknowledged());
    assert_eq!(r.files_checked, 3);
    assert_eq!(r.files_unsynced, 1);
    let fsck = run_e2fsck(&img).unwrap();
    assert!(fsck.clean, "{fsck:?}");
    assert_eq!(fsck.exit_code, 0);
}

fn punched_block_is_the_only_loss(opts: &[&str]) {
    let (_d, img, rounds) = build(opts, &standard_specs());
    debugfs(&img, true, "punch /r0/f0 5 5");
    let r = content(&img, &rounds);
    let ino = Ext4Image::open(&img).unwrap().lookup("r0/f0").unwrap();
    assert_eq!(
        r.lost,
        vec![LostBlock {
            path: "r0/f0".into(),
            ino: u64::from(ino),
            file_id: 0,
            round: 0,
            lblk: 5,
            expected_generation: 0,
            found: Found::Hole,
            pblk: None,
        }]
    );
    assert!(r.file_problems.is_empty());
    assert_eq!(r.blocks_checked, acknowledged());
    // punch freed the block properly: the file system itself stays consistent.
    assert!(run_e2fsck(&img).unwrap().clean);
}

fn overwritten_blocks_are_classified(opts: &[&str]) {
    let (_d, img, rounds) = build(opts, &standard_specs());
    let image = Ext4Image::open(&img).unwrap();
    let ino = image.lookup("r0/f1").unwrap();
    let map = image.file_map(ino).unwrap();
    let pblk = |l| map.lookup(l).unwrap().0;
    let specs = standard_specs();
    let f1 = &specs[1];
    // lblk 7 gets lblk 8's tag (misdirected write), 1050 (double indirect in the indirect
    // image) foreign bytes, 9 zeros, 11 a torn tag.
    poke_block(&img, pblk(7), &f1.tag(8).to_block()[..]);
    poke_block(&img, pblk(1050), &[0xAB; 4096]);
    poke_block(&img, pblk(9), &[0; 4096]);
    let mut torn = f1.tag(11).to_block();
    torn[2048..].copy_from_slice(&f1.tag(12).to_block()[2048..]);
    poke_block(&img, pblk(11), &torn[..]);
    drop(image);
    let r = content(&img, &rounds);
    let got: Vec<(String, u64, Found, Option<u64>)> = r
        .lost
        .iter()
        .map(|b| (b.path.clone(), b.lblk, b.found.clone(), b.pblk))
        .collect();
    let p = |s: &str| s.to_string();
    assert_eq!(
        got,
        vec![
            (p("r0/f1"), 7, Found::OtherTag(f1.tag(8)), Some(pblk(7))),
            (p("r0/f1"), 9, Found::Zeros, Some(pblk(9))),
            (p("r0/f1"), 11, Found::Corrupt, Some(pblk(11))),
            (p("r0/f1"), 1050, Found::Foreign, Some(pblk(1050))),
        ]
    );
}

#[test]
fn indirect_intact_image_is_clean() {
    intact_image_is_clean(INDIRECT_OPTS);
}
#[test]
fn extent_intact_image_is_clean() {
    intact_image_is_clean(&[]);
}
#[test]
fn indirect_punched_block_is_the_only_loss() {
    punched_block_is_the_only_loss(INDIRECT_OPTS);
}
#[test]
fn extent_punched_block_is_the_only_loss() {
    punched_block_is_the_only_loss(&[]);
}
#[test]
fn indirect_overwritten_blocks_are_classified() {
    overwritten_blocks_are_classified(INDIRECT_OPTS);
}
#[test]
fn extent_overwritten_blocks_are_classified() {
    overwritten_blocks_are_classified(&[]);
}

/// The migrate race's signature, made by hand: an indirect pointer is zeroed but the block
/// stays allocated. The content oracle sees a hole, e2fsck a `-pblk` bitmap difference, and
/// the reader's own accounting the same leaked block.
#[test]
fn zeroed_indirect_pointer_is_hole_and_leak() {
    let (_d, img, rounds) = build(INDIRECT_OPTS, &standard_specs());
    let image = Ext4Image::open(&img).unwrap();
    let ino = image.lookup("r0/f0").unwrap();
    let pblk = image.file_map(ino).unwrap().lookup(3).unwrap().0;
    drop(image);
    debugfs(&img, true, "sif /r0/f0 block[3] 0");
    let r = content(&img, &rounds);
    assert_eq!(r.lost.len(), 1, "{:?}", r.lost);
    assert_eq!((r.lost[0].lblk, &r.lost[0].found), (3, &Found::Hole));
    let fsck = run_e2fsck(&img).unwrap();
    assert!(!fsck.clean);
    assert_eq!(fsck.exit_code, 4);
    assert!(
        fsck.findings
            .contains(&FsckFinding::BlockBitmapDifferences {
                ranges: vec![oracles::BitmapRange {
                    sign: Sign::Minus,
                    start: pblk,
                    end: pblk
                }]
            }),
        "{:#?}",
        fsck.findings
    );
    assert_eq!(fsck.leaked_blocks(), 1);
    let acct = Ext4Image::open(&img).unwrap().block_accounting().unwrap();
    assert_eq!(acct.leaked, vec![pblk]);
}

#[test]
fn missing_file_is_a_file_problem() {
    let (_d, img, rounds) = build(&[], &standard_specs());
    debugfs(&img, true, "rm /r1/f0");
    let r = content(&img, &rounds);
    assert!(r.lost.is_empty());
    assert_eq!(r.file_problems.len(), 1);
    let p = &r.file_problems[0];
    assert_eq!(
        (p.path.as_str(), p.kind, p.acknowledged_blocks),
        ("r1/f0", FileProblemKind::Missing, 16)
    );
}

#[test]
fn corrupt_extent_tree_is_unreadable_not_error() {
    let (_d, img, rounds) = build(&[], &standard_specs());
    debugfs(&img, true, "sif /r0/f1 block[0] 0x00041234");
    let r = content(&img, &rounds);
    assert_eq!(r.file_problems.len(), 1, "{r:?}");
    assert_eq!(r.file_problems[0].kind, FileProblemKind::Unreadable);
    assert!(r.file_problems[0].detail.contains("magic"));
}

#[test]
fn stale_generation_is_reported_as_stale() {
    // The defrag-style use: generation 1 acknowledged, generation 0 on disk.
    let (_d, img, rounds) = build(&[], &standard_specs());
    let image = Ext4Image::open(&img).unwrap();
    let file = &rounds[0].files[0];
    let expected = [(2u64, 1u32), (4, 0)].into_iter().collect();
    let oracles::FileCheck::Checked { blocks, lost } =
        oracles::check_file(&image, RUN_ID, 0, file, &expected).unwrap()
    else {
        panic!("file should be readable")
    };
    assert_eq!(blocks, 2);
    assert_eq!(lost.len(), 1);
    let old = BlockTag {
        run_id: RUN_ID,
        file_id: 0,
        round: 0,
        lblk: 2,
        generation: 0,
    };
    assert_eq!(lost[0].found, Found::Stale(old));
    assert_eq!(lost[0].expected_generation, 1);
}

#[test]
fn wrong_block_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let out = std::process::Command::new(e2fsprogs_tool("mkfs.ext4"))
        .args(["-q", "-F", "-b", "1024"])
        .arg(&img)
        .arg("8M")
        .output()
        .unwrap();
    assert!(out.status.success());
    let image = Ext4Image::open(&img).unwrap();
    let e = check_content(&image, RUN_ID, &[]).unwrap_err();
    assert!(e.to_string().contains("mkfs.ext4 -b 4096"), "{e}");
}
