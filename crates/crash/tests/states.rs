//! Crash states of write logs built from a real ext4 image (mkfs.ext4 -d, no mount needed),
//! checked with the real e2fsck and e2undo.
//!
//! Invariant: a state is bad exactly when the log makes it so. The same file system is
//! written in every test; what differs is whether the log zeroes a durable block, claims a
//! round durable before its data was flushed, or wrecks metadata.

use std::path::{Path, PathBuf};
use std::process::Command;

use crash::{check_log, CrashOptions, CrashReport, Durability, StateKind};
use e4race_protocol::{BlockTag, FileRecord, RoundRecord, TAG_BLOCK_SIZE};
use writelog::{Entry, LogOptions, LogWriter};

const RUN_ID: u64 = 77;
const BLOCKS: u64 = 16;
const DISK: u64 = 16 << 20;

struct Fs {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    image: Vec<u8>,
    /// pblk of each lblk of r0/f0.
    data_pblks: Vec<u64>,
    root_dir_pblk: u64,
}

fn mkfs() -> Fs {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let src = dir.join("src/r0");
    std::fs::create_dir_all(&src).unwrap();
    let mut data = Vec::new();
    for lblk in 0..BLOCKS {
        let t = BlockTag {
            run_id: RUN_ID,
            file_id: 0,
            round: 0,
            lblk,
            generation: 0,
        };
        data.extend_from_slice(&t.to_block()[..]);
    }
    std::fs::write(src.join("f0"), &data).unwrap();
    let img = dir.join("mkfs.img");
    let mkfs = host_tools::find_host_tool("mkfs.ext4")
        .expect("e2fsprogs' mkfs.ext4 (apt-get install e2fsprogs)");
    let st = Command::new(mkfs)
        .args(["-q", "-F", "-b", "4096", "-d"])
        .arg(dir.join("src"))
        .arg(&img)
        .arg("16M")
        .env("MKE2FS_DEVICE_SECTSIZE", "512")
        .status()
        .unwrap();
    assert!(st.success());
    let fs = ext4_reader::Ext4Image::open(&img).unwrap();
    let ino = fs.lookup("r0/f0").unwrap();
    let map = fs.file_map(ino).unwrap();
    let data_pblks = (0..BLOCKS).map(|l| map.lookup(l).unwrap().0).collect();
    let root = fs.file_map(2).unwrap();
    let root_dir_pblk = root.lookup(0).unwrap().0;
    Fs {
        image: std::fs::read(&img).unwrap(),
        _dir: tmp,
        dir,
        data_pblks,
        root_dir_pblk,
    }
}

/// A log builder: the file system's blocks as writes, then whatever the test adds.
struct Log {
    w: LogWriter,
    path: PathBuf,
}

impl Log {
    fn new(dir: &Path) -> Self {
        let path = dir.join("writes.log");
        let w = LogWriter::create(
            &path,
            LogOptions {
                log_data: true,
                sector_size: 512,
                max_bytes: None,
            },
        )
        .unwrap();
        Self { w, path }
    }
    fn write_block(&self, pblk: u64, data: &[u8]) {
        self.w.append(&Entry::write(0, pblk * 8, data, 0)).unwrap();
    }
    /// Every non-zero block of the image, skipping `except`.
    fn write_fs(&self, image: &[u8], except: &[u64]) {
        for (i, b) in image.chunks(TAG_BLOCK_SIZE).enumerate() {
            if b.iter().any(|&x| x != 0) && !except.contains(&(i as u64)) {
                self.write_block(i as u64, b);
            }
        }
    }
    /// The file system made (all its blocks but `except`), flushed, then the `mounted` mark.
    fn mounted(dir: &Path, image: &[u8], except: &[u64]) -> Self {
        let log = Self::new(dir);
        log.write_fs(image, except);
        log.flush();
        log.mark("mounted");
        log
    }
    fn mark(&self, name: &str) {
        self.w.mark(name).unwrap();
    }
    fn flush(&self) {
        let covers = self.w.next_seq();
        self.w.append(&Entry::flush(0, 0, covers)).unwrap();
    }
    fn finish(self) -> PathBuf {
        self.w.finish().unwrap();
        self.path
    }
}

fn durability() -> Durability {
    Durability {
        run_id: RUN_ID,
        rounds: vec![RoundRecord {
            round: 0,
            files: vec![FileRecord {
                file_id: 0,
                path: "r0/f0".into(),
                prefilled: (0..BLOCKS).collect(),
                synced: true,
                ..Default::default()
            }],
        }],
        done_at: Default::default(),
    }
}

fn check(fs: &Fs, log: &Path, reorder: u32) -> CrashReport {
    let work = fs.dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let opts = CrashOptions {
        reorder,
        seed: 3,
        max_states: 1000,
        from_mark: "mounted".into(),
        work_dir: work,
        reuse_unchanged_files: true,
    };
    let r = check_log(log, DISK, &durability(), &opts, &mut |_, _| {}).unwrap();
    // Re-reading every durable file in every state finds the same bad states.
    let reread = CrashOptions {
        reuse_unchanged_files: false,
        ..opts.clone()
    };
    let again = check_log(log, DISK, &durability(), &reread, &mut |_, _| {}).unwrap();
    assert_eq!(
        again.bad, r.bad,
        "reusing unchanged files' results changed a verdict"
    );
    if reorder == 0 {
        // The copy-per-state baseline (the bench's peer) judges the states after each
        // flush alike: building states on one image with undo changes no verdict.
        let b = crash::check_log_copying(log, DISK, &durability(), &opts, &mut |_, _| {}).unwrap();
        assert_eq!(b.after_flush, r.after_flush);
        assert_eq!(b.first_bad(), r.first_bad(), "baseline vs working image");
        assert_eq!(b.bad.is_empty(), r.bad.is_empty());
    }
    r
}

#[test]
fn a_log_that_keeps_every_durable_block_has_no_bad_state() {
    let fs = mkfs();
    let log = Log::mounted(&fs.dir, &fs.image, &[]);
    log.mark("round-0-done");
    log.flush();
    let r = check(&fs, &log.finish(), 4);
    assert!(r.bad.is_empty(), "{:#?}", r.bad);
    assert_eq!(
        r.after_flush, 1,
        "the flush before `mounted` is not checked"
    );
    assert_eq!(r.reordered, 0, "nothing was unflushed at the last flush");
    assert_eq!(r.states_checked, 1);
}

#[test]
fn zeroing_a_durable_block_after_its_round_is_a_lost_block_at_that_flush() {
    let fs = mkfs();
    let log = Log::mounted(&fs.dir, &fs.image, &[]);
    log.mark("round-0-done");
    log.flush();
    log.write_block(fs.data_pblks[3], &[0u8; TAG_BLOCK_SIZE]);
    log.flush();
    let r = check(&fs, &log.finish(), 0);
    assert_eq!(r.bad.len(), 1, "{:#?}", r.bad);
    let b = &r.bad[0];
    assert_eq!(b.state.kind, StateKind::AfterFlush);
    assert_eq!(b.findings.lost.len(), 1);
    assert_eq!(b.findings.lost[0].lblk, 3);
    assert_eq!(b.state.mark_before.as_deref(), Some("round-0-done"));
}

#[test]
fn a_round_claimed_durable_before_its_data_was_flushed_is_caught_only_by_reordering() {
    let fs = mkfs();
    // Metadata first, flushed; the file's data after, never flushed before the claim.
    let log = Log::mounted(&fs.dir, &fs.image, &fs.data_pblks);
    for &p in &fs.data_pblks {
        let i = p as usize * TAG_BLOCK_SIZE;
        log.write_block(p, &fs.image[i..i + TAG_BLOCK_SIZE]);
    }
    log.mark("round-0-done");
    log.flush();
    let path = log.finish();
    let plain = check(&fs, &path, 0);
    assert!(
        plain.bad.is_empty(),
        "after the flush every block is there: {:#?}",
        plain.bad
    );
    let reordered = check(&fs, &path, 4);
    assert!(!reordered.bad.is_empty());
    assert!(reordered
        .bad
        .iter()
        .all(|b| matches!(b.state.kind, StateKind::Reordered { .. })));
    assert!(reordered.bad.iter().all(|b| !b.findings.lost.is_empty()));
    // Reproducible: the same seed gives the same states.
    assert_eq!(check(&fs, &path, 4).bad, reordered.bad);
    // `e4race replay --to seq:N --drop ...` rebuilds the state: the same blocks are lost.
    let b = &reordered.bad[0];
    let StateKind::Reordered { dropped } = &b.state.kind else {
        unreachable!()
    };
    assert!(b
        .state
        .replay_command("RUN")
        .contains(&format!("--to seq:{} --drop ", b.state.seq)));
    let img = fs.dir.join("replayed.img");
    std::fs::File::create(&img).unwrap().set_len(DISK).unwrap();
    let stop = writelog::LogPosition::Seq(b.state.seq);
    writelog::replay_dropping(&path, &img, &stop, dropped).unwrap();
    let image = ext4_reader::Ext4Image::open(&img).unwrap();
    let c = oracles::check_content(&image, RUN_ID, &durability().rounds).unwrap();
    assert_eq!(c.lost, b.findings.lost);
}

#[test]
fn wrecked_metadata_is_an_e2fsck_finding_and_the_working_image_is_left_as_the_log_says() {
    let fs = mkfs();
    let log = Log::mounted(&fs.dir, &fs.image, &[]);
    log.write_block(fs.root_dir_pblk, &[0xa5u8; TAG_BLOCK_SIZE]);
    log.flush();
    // The block is put back: if the check (or e2undo) changed the image, this state differs.
    let i = fs.root_dir_pblk as usize * TAG_BLOCK_SIZE;
    log.write_block(fs.root_dir_pblk, &fs.image[i..i + TAG_BLOCK_SIZE]);
    log.mark("round-0-done");
    log.flush();
    let r = check(&fs, &log.finish(), 0);
    assert_eq!(
        r.bad.len(),
        1,
        "only the wrecked state is bad: {:#?}",
        r.bad
    );
    assert!(!r.bad[0].findings.fsck.is_empty() || r.bad[0].findings.unreadable.is_some());
    // The working image is not left behind.
    assert!(!fs.dir.join("work/crash-state.img").exists());
}

/// Runs a debugfs script on `img` (writable); returns its stdout.
fn debugfs(img: &Path, script: &str) -> String {
    testkit::debugfs_script(img, script)
}

#[test]
fn an_orphan_whose_cleanup_would_free_a_durable_files_blocks_is_a_bad_state() {
    let fs = mkfs();
    // The state 6eeaf88fd586 describes: a temporary inode on the orphan list (link count 0)
    // whose extent tree maps r0/f0's blocks, as migrate's tmp inode does mid-migration.
    let img = fs.dir.join("orphaned.img");
    std::fs::write(&img, &fs.image).unwrap();
    let f0 = ext4_reader::Ext4Image::open(&img)
        .unwrap()
        .lookup("r0/f0")
        .unwrap();
    debugfs(&img, "write /dev/null tmp\n");
    let tmp = ext4_reader::Ext4Image::open(&img)
        .unwrap()
        .lookup("tmp")
        .unwrap();
    debugfs(
        &img,
        &format!("unlink tmp\ncopy_inode <{f0}> <{tmp}>\nsif <{tmp}> links_count 0\nssv last_orphan {tmp}\n"),
    );
    let orphaned = std::fs::read(&img).unwrap();
    let log = Log::mounted(&fs.dir, &fs.image, &[]);
    log.mark("round-0-done");
    log.flush();
    for (i, (new, old)) in orphaned
        .chunks(TAG_BLOCK_SIZE)
        .zip(fs.image.chunks(TAG_BLOCK_SIZE))
        .enumerate()
    {
        if new != old {
            log.write_block(i as u64, new);
        }
    }
    log.flush();
    let r = check(&fs, &log.finish(), 0);
    assert_eq!(r.bad.len(), 1, "{:#?}", r.bad);
    let f = &r.bad[0].findings;
    assert_eq!(r.bad[0].findings.problem(), "orphan-frees-owned", "{f:#?}");
    assert_eq!(f.orphan_frees_owned.len() as u64, BLOCKS, "{f:#?}");
    assert!(f
        .orphan_frees_owned
        .iter()
        .all(|c| c.orphan == tmp && c.owner == f0));
    // Nothing durable is lost yet: only the next mount's cleanup would free the blocks.
    assert!(f.lost.is_empty(), "{f:#?}");
}
