//! `inspect` at a point of a data log: a log rebuilt from two mkfs.ext4 images (empty, then
//! populated with `-d`), replayed up to each mark, read with the host ext4 reader.

use std::path::Path;
use std::process::Command;

fn make_image(mkfs: &Path, img: &Path, src: Option<&Path>) {
    std::fs::File::create(img)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let mut c = Command::new(mkfs);
    c.args(["-q", "-F", "-b", "4096", "-O", "^has_journal"]);
    if let Some(s) = src {
        c.arg("-d").arg(s);
    }
    let st = c
        .arg(img)
        .env("E2FSPROGS_FAKE_TIME", "1700000000")
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn mapping_at_marks_of_a_data_log() {
    let Some(mkfs) = host_tools::find_host_tool("mkfs.ext4") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "mkfs.ext4 missing: run ci/install-deps.sh"
        );
        eprintln!("skipped: no mkfs.ext4");
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("r0")).unwrap();
    std::fs::write(src.join("r0/f1"), vec![0x5a; 3 * 4096]).unwrap();
    let (a, b) = (t.path().join("a.img"), t.path().join("b.img"));
    make_image(&mkfs, &a, None);
    make_image(&mkfs, &b, Some(&src));
    let run = t.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let log = writelog::LogWriter::create(
        run.join("writes.log"),
        writelog::LogOptions {
            log_data: true,
            ..writelog::LogOptions::default()
        },
    )
    .unwrap();
    let (da, db) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    for (i, blk) in da.chunks(4096).enumerate() {
        if blk.iter().any(|&x| x != 0) {
            log.append(&writelog::Entry::write(0, i as u64 * 8, blk, 0))
                .unwrap();
        }
    }
    log.mark("empty").unwrap();
    for (i, (x, y)) in da.chunks(4096).zip(db.chunks(4096)).enumerate() {
        if x != y {
            log.append(&writelog::Entry::write(0, i as u64 * 8, y, 0))
                .unwrap();
        }
    }
    log.mark("populated").unwrap();
    log.finish().unwrap();
    std::fs::copy(&b, run.join("disk.img")).unwrap();

    let at = |s: &str| s.parse::<writelog::LogPosition>().unwrap();
    let e = forensics::inspect(&run, "r0/f1", Some(&at("mark:empty"))).unwrap_err();
    assert!(e.to_string().contains("r0/f1"), "{e}");
    let m = forensics::inspect(&run, "r0/f1", Some(&at("mark:populated"))).unwrap();
    assert_eq!(m.size, 3 * 4096);
    assert_eq!(m.extents.iter().map(|e| e.len).sum::<u64>(), 3);
    assert_eq!(m.extents[0].lblk, 0);
    let fin = forensics::inspect(&run, "r0/f1", None).unwrap();
    assert_eq!(fin.extents, m.extents, "the replayed end equals disk.img");
    let text = forensics::format_mapping(&m);
    assert!(text.contains("-> pblk"), "{text}");
    assert!(text.contains("mark:populated"), "{text}");
    let e = forensics::inspect(&run, "r0/f1", Some(&at("mark:nope"))).unwrap_err();
    assert!(e.to_string().contains("not in the log"), "{e}");
    // No leftover replay images.
    let left: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".inspect-"))
        .collect();
    assert!(left.is_empty());
}
