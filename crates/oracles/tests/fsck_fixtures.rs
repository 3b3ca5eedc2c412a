//! The e2fsck parser against real e2fsck 1.47 outputs captured from images corrupted with
//! debugfs (tests/fixtures/e2fsck_*.txt; the last line `rc=N` is e2fsck's exit code, added
//! when capturing), and e2fsck run live on images corrupted at test time.

mod common;

use oracles::{parse_e2fsck_output, run_e2fsck, BitmapRange, BlockRange, FsckFinding, Sign};

fn fixture(name: &str) -> oracles::E2fsckReport {
    let path = format!(
        "{}/tests/fixtures/e2fsck_{name}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let (body, rc) = text.trim_end().rsplit_once("rc=").unwrap();
    parse_e2fsck_output(rc.trim().parse().unwrap(), body)
}

fn range(sign: Sign, start: u64, end: u64) -> BitmapRange {
    BitmapRange { sign, start, end }
}

#[test]
fn clean() {
    let r = fixture("clean");
    assert!(r.clean, "{:?}", r.findings);
    assert_eq!(r.exit_code, 0);
}

#[test]
fn bitmap() {
    // debugfs: setb 5000; setb 5002 3; freeb 2621.
    let r = fixture("bitmap");
    assert_eq!(r.exit_code, 4);
    assert!(!r.clean);
    assert_eq!(
        r.findings,
        vec![
            FsckFinding::BlockBitmapDifferences {
                ranges: vec![
                    range(Sign::Plus, 2621, 2621),
                    range(Sign::Minus, 5000, 5000),
                    range(Sign::Minus, 5002, 5004),
                ]
            },
            FsckFinding::GroupFreeBlocksWrong {
                group: 0,
                on_disk: 13743,
                counted: 13740
            },
            FsckFinding::FreeBlocksWrong {
                on_disk: 13743,
                counted: 13740
            },
        ]
    );
    assert_eq!(r.leaked_blocks(), 4);
}

#[test]
fn inodes() {
    // debugfs: clri /big; unlink /r0/f0; sif /huge size 5; sif /r0 links_count 5; seti <200>.
    let r = fixture("inodes");
    assert_eq!(
        r.findings,
        vec![
            FsckFinding::InodeSizeWrong {
                ino: 13,
                size: 5,
                should_be: 4505604096
            },
            FsckFinding::EntryDeletedInode {
                dir: "/".into(),
                dir_ino: 2,
                name: "big".into(),
                ino: 12
            },
            FsckFinding::Other {
                text: "Entry 'big' in / (2) has an incorrect filetype (was 1, should be 0).".into()
            },
            FsckFinding::RefCountWrong {
                ino: 14,
                on_disk: 5,
                should_be: 2
            },
            FsckFinding::UnattachedInode {
                ino: 15,
                zero_length: false
            },
            FsckFinding::BlockBitmapDifferences {
                ranges: vec![range(Sign::Minus, 2062, 2614)]
            },
            FsckFinding::InodeBitmapDifferences {
                ranges: vec![range(Sign::Minus, 12, 12), range(Sign::Minus, 200, 200)]
            },
            FsckFinding::GroupFreeInodesWrong {
                group: 0,
                on_disk: 16369,
                counted: 16368
            },
            FsckFinding::FreeInodesWrong {
                on_disk: 16369,
                counted: 16368
            },
        ]
    );
}

#[test]
fn multiply_claimed_and_illegal() {
    // debugfs: sif /r0/f0 block[2] 2000 (a journal block); sif /r0/f0 block[4] 4000000000.
    let r = fixture("multiply_illegal");
    let f = &r.findings;
    assert!(
        f.contains(&FsckFinding::IllegalBlocks { ino: 15 }),
        "{f:#?}"
    );
    assert!(f.contains(&FsckFinding::IllegalBlock {
        ino: 15,
        which: "block #4".into(),
        block: 4000000000
    }));
    assert!(f.contains(&FsckFinding::InodeBlocksWrong {
        ino: 15,
        i_blocks: 168,
        should_be: 160
    }));
    assert!(f.contains(&FsckFinding::MultiplyClaimed {
        ino: 8,
        blocks: vec![BlockRange {
            start: 2000,
            end: 2000
        }]
    }));
    assert!(f.contains(&FsckFinding::MultiplyClaimed {
        ino: 15,
        blocks: vec![BlockRange {
            start: 2000,
            end: 2000
        }]
    }));
    assert!(f.contains(&FsckFinding::MultiplyClaimedFile {
        ino: 8,
        path: "<The journal inode>".into(),
        blocks: 1,
        shared_with: vec![15]
    }));
    assert!(f.contains(&FsckFinding::MultiplyClaimedFile {
        ino: 15,
        path: "/r0/f0".into(),
        blocks: 1,
        shared_with: vec![8]
    }));
    assert!(f.contains(&FsckFinding::BlockBitmapDifferences {
        ranges: vec![
            range(Sign::Minus, 2062, 2062),
            range(Sign::Minus, 2622, 2622)
        ]
    }));
    // The one line e2fsck prints from library code stays as Other, nothing else does.
    let others: Vec<_> = f
        .iter()
        .filter(|x| matches!(x, FsckFinding::Other { .. }))
        .collect();
    assert_eq!(others.len(), 1, "{others:#?}");
}

#[test]
fn invalid_extent() {
    let r = fixture("extent");
    assert_eq!(
        r.findings[0],
        FsckFinding::InvalidExtent {
            ino: 12,
            lblk: Some(0),
            pblk: Some(281470681745430),
            len: Some(678)
        }
    );
    assert!(r.findings.contains(&FsckFinding::InodeBlocksWrong {
        ino: 12,
        i_blocks: 4416,
        should_be: 1696
    }));
}

#[test]
fn live_e2fsck_on_corrupted_images() {
    use common::*;
    use testkit::debugfs;
    let (_d, img, _) = build(&[], &standard_specs());
    assert!(run_e2fsck(&img).unwrap().clean);
    let image = ext4_reader::Ext4Image::open(&img).unwrap();
    let allocated = image.allocated_blocks().unwrap();
    let free: Vec<u64> = (9000..u64::MAX)
        .filter(|&b| !allocated.contains(b))
        .take(2)
        .collect();
    drop(image);
    // Two allocated-but-unowned blocks (the lost-block signature) and a cleared inode.
    debugfs(&img, true, &format!("setb {}", free[0]));
    debugfs(&img, true, &format!("setb {}", free[1]));
    debugfs(&img, true, "clri /r1/f1");
    let r = run_e2fsck(&img).unwrap();
    assert_eq!(r.exit_code, 4);
    assert!(!r.clean);
    let bbd = r
        .findings
        .iter()
        .find_map(|f| match f {
            FsckFinding::BlockBitmapDifferences { ranges } => Some(ranges.clone()),
            _ => None,
        })
        .unwrap();
    for b in &free {
        assert!(
            bbd.iter()
                .any(|r| r.sign == Sign::Minus && r.start <= *b && *b <= r.end),
            "{bbd:?}"
        );
    }
    assert!(r
        .findings
        .iter()
        .any(|f| matches!(f, FsckFinding::EntryDeletedInode { name, .. } if name == "f1")));
    // The reader's own accounting agrees with e2fsck on the leaked blocks.
    let acct = ext4_reader::Ext4Image::open(&img)
        .unwrap()
        .block_accounting()
        .unwrap();
    let mut fsck_leaked = vec![];
    for r in bbd.iter().filter(|r| r.sign == Sign::Minus) {
        fsck_leaked.extend(r.start..=r.end);
    }
    assert_eq!(acct.leaked, fsck_leaked);
}

#[test]
fn garbage_image_is_operational_error() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("junk");
    std::fs::write(&img, vec![0x5Au8; 1 << 20]).unwrap();
    let r = run_e2fsck(&img).unwrap();
    assert_eq!(r.exit_code, 8, "{}", r.output);
    assert!(!r.clean);
}
