//! End-to-end tests: write, read back, torn tails, stats, export + replay.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use testkit::pattern;
use writelog::{
    export_dm_log_writes, flags, replay, replay_dm_log_writes, show, stats, Entry, Kind,
    LogOptions, LogPosition, LogReader, LogWriter,
};

const IMG: u64 = 1 << 20;

/// Applies `e` to an in-memory image, the way blkrec applies it to the file.
fn apply(img: &mut [u8], e: &Entry<'_>) {
    let off = (e.sector * 512) as usize;
    match e.kind {
        Kind::Write => img[off..off + e.len as usize].copy_from_slice(e.data.unwrap()),
        Kind::Discard | Kind::WriteZeroes => img[off..off + e.len as usize].fill(0),
        _ => {}
    }
}

/// A workload of every kind; returns the final image contents (from an initial image).
fn record(log: &LogWriter, initial: &[u8]) -> Vec<u8> {
    let mut img = initial.to_vec();
    let bufs: Vec<Vec<u8>> = (0..40)
        .map(|i| pattern(i, 512 * (1 + (i as usize % 17))))
        .collect();
    for (i, b) in bufs.iter().enumerate() {
        let sector = (i as u64 * 37) % ((IMG / 512) - 40);
        let fl = if i % 5 == 0 { flags::FUA } else { 0 };
        let e = Entry::write((i % 3) as u16, sector, b, fl);
        log.append(&e).unwrap();
        apply(&mut img, &e);
        if i % 7 == 6 {
            log.append(&Entry::flush(0, 0, log.next_seq())).unwrap();
        }
        if i == 10 {
            let e = Entry::discard(1, 100, 8192, 0);
            log.append(&e).unwrap();
            apply(&mut img, &e);
            log.mark("after-discard").unwrap();
        }
        if i == 20 {
            let e = Entry::write_zeroes(2, 300, 4096 * 3, flags::UNMAP);
            log.append(&e).unwrap();
            apply(&mut img, &e);
            log.mark("migrate-start file 3").unwrap();
        }
    }
    img
}

fn make_image(dir: &std::path::Path, name: &str, contents: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    fs::write(&p, contents).unwrap();
    p
}

#[test]
fn write_read_back_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.log");
    let log = LogWriter::create(&path, LogOptions::default()).unwrap();
    let data = pattern(1, 8192 + 100);
    assert_eq!(
        log.append(&Entry::write(2, 8, &data, flags::FUA)).unwrap(),
        0
    );
    assert_eq!(log.append(&Entry::flush(0, 0, log.next_seq())).unwrap(), 1);
    assert_eq!(log.mark("hello").unwrap(), 2);
    assert_eq!(log.append(&Entry::discard(1, 64, 4096, 0)).unwrap(), 3);
    assert_eq!(log.finish().unwrap(), 4);
    assert!(
        log.append(&Entry::flush(0, 0, log.next_seq())).is_err(),
        "append after finish"
    );
    drop(log);

    let mut r = LogReader::open(&path).unwrap();
    assert!(!r.header().has_data);
    let recs = r.read_all().unwrap();
    assert_eq!(r.discarded_bytes(), 0);
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[0].kind, Kind::Write);
    assert_eq!(
        (recs[0].queue, recs[0].sector, recs[0].len, recs[0].flags),
        (2, 8, 8292, flags::FUA)
    );
    assert_eq!(recs[0].block_hashes, writelog::block_hashes(&data));
    assert_eq!(recs[0].block_hashes.len(), 3);
    assert_eq!(recs[0].data, None);
    assert_eq!(recs[2].mark.as_deref(), Some("hello"));
    assert!(recs.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    assert!(recs.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));

    let st = stats(&mut LogReader::open(&path).unwrap()).unwrap();
    assert_eq!(st.records, 4);
    assert_eq!((st.flushes, st.marks, st.fua_writes), (1, 1, 1));
    // write covers sectors 8..25 (8292 bytes → 17 sectors), discard 64..72.
    assert_eq!(st.sectors_touched, 17 + 8);
    let text = st.to_string();
    assert!(
        text.contains("writes:          1 (8292 bytes, 1 FUA)"),
        "{text}"
    );

    let mut out = Vec::new();
    show(&mut LogReader::open(&path).unwrap(), &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(
        out.lines()
            .nth(2)
            .unwrap()
            .contains("MARK         \"hello\""),
        "{out}"
    );
}

#[test]
fn concurrent_appends_are_gap_free() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.log");
    let log = Arc::new(
        LogWriter::create(
            &path,
            LogOptions {
                log_data: true,
                ..LogOptions::default()
            },
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..4u16)
        .map(|q| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..500u64 {
                    let d = pattern(i + u64::from(q) * 1000, 512);
                    log.append(&Entry::write(q, i, &d, 0)).unwrap();
                    if i % 100 == 0 {
                        log.sync().unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    log.finish().unwrap();
    let recs = LogReader::open(&path).unwrap().read_all().unwrap();
    assert_eq!(recs.len(), 2000);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.seq, i as u64);
        let q = u64::from(r.queue);
        assert_eq!(
            r.data.as_deref().unwrap(),
            &pattern(r.sector + q * 1000, 512)[..]
        );
    }
}

#[test]
fn torn_tail_reads_back_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.log");
    let log = LogWriter::create(
        &path,
        LogOptions {
            log_data: true,
            ..LogOptions::default()
        },
    )
    .unwrap();
    for i in 0..10u64 {
        log.append(&Entry::write(0, i, &pattern(i, 1024), 0))
            .unwrap();
    }
    log.finish().unwrap();
    drop(log);
    let full = fs::read(&path).unwrap();
    let rec_len = (full.len() - 40) / 10;
    // Every cut point: the reader returns the whole records before it, never an error.
    for cut in (40..full.len())
        .step_by(97)
        .chain([40, full.len() - 1, full.len() - rec_len])
    {
        fs::write(&path, &full[..cut]).unwrap();
        let mut r = LogReader::open(&path).unwrap();
        let recs = r.read_all().unwrap();
        let whole = (cut - 40) / rec_len;
        assert_eq!(recs.len(), whole, "cut at {cut}");
        assert_eq!(r.discarded_bytes() as usize, cut - 40 - whole * rec_len);
    }
    // A garbage tail (e.g. zeros from a host crash) is discarded as well.
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    fs::write(&path, &full).unwrap();
    f.write_all(&[0u8; 300]).unwrap();
    let mut r = LogReader::open(&path).unwrap();
    assert_eq!(r.read_all().unwrap().len(), 10);
    assert_eq!(r.discarded_bytes(), 300);
    // A flipped bit in the last record: that record is dropped.
    let mut bad = full.clone();
    let n = bad.len();
    bad[n - 5] ^= 1;
    fs::write(&path, &bad).unwrap();
    let mut r = LogReader::open(&path).unwrap();
    assert_eq!(r.read_all().unwrap().len(), 9);
    assert_eq!(r.discarded_bytes() as usize, rec_len);
    // Not a log at all.
    fs::write(&path, b"hello world, definitely not a log file at all").unwrap();
    let err = LogReader::open(&path).err().unwrap().to_string();
    assert!(err.contains("not an e4race write log"), "{err}");
}

#[test]
fn export_and_replays_match_final_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.log");
    let initial = pattern(99, IMG as usize);
    let log = LogWriter::create(
        &path,
        LogOptions {
            log_data: true,
            ..LogOptions::default()
        },
    )
    .unwrap();
    let final_img = record(&log, &initial);
    log.finish().unwrap();
    drop(log);

    // Our replay, whole log.
    let img = make_image(dir.path(), "ours.img", &initial);
    let sum = replay(&path, &img, &LogPosition::End).unwrap();
    assert!(sum.writes == 40 && sum.zeroed == 2, "{sum:?}");
    assert!(fs::read(&img).unwrap() == final_img, "own replay differs");

    // dm-log-writes export + replay of it, whole log.
    let dm = dir.path().join("d.dmlog");
    let ex = export_dm_log_writes(&path, &dm).unwrap();
    let nrecs = LogReader::open(&path).unwrap().read_all().unwrap().len() as u64;
    assert_eq!(ex.entries, nrecs);
    let raw = fs::read(&dm).unwrap();
    assert_eq!(
        u64::from_le_bytes(raw[0..8].try_into().unwrap()),
        0x6a736677736872
    );
    assert_eq!(u64::from_le_bytes(raw[16..24].try_into().unwrap()), nrecs);
    let img2 = make_image(dir.path(), "dm.img", &initial);
    replay_dm_log_writes(&dm, &img2, &LogPosition::End).unwrap();
    assert!(
        fs::read(&img2).unwrap() == final_img,
        "dm-log-writes replay differs"
    );

    // Partial replays agree between the two formats and with a model.
    let recs = LogReader::open(&path).unwrap().read_all().unwrap();
    let model_upto = |pred: &dyn Fn(usize) -> bool| {
        let mut m = initial.clone();
        for (i, r) in recs.iter().enumerate() {
            if !pred(i) {
                break;
            }
            let e = Entry {
                queue: 0,
                kind: r.kind,
                sector: r.sector,
                len: r.len,
                flags: 0,
                data: r.data.as_deref(),
                mark: None,
            };
            apply(&mut m, &e);
        }
        m
    };
    let mark_idx = recs
        .iter()
        .position(|r| r.mark.as_deref() == Some("migrate-start file 3"))
        .unwrap();
    let flush2_idx = recs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kind == Kind::Flush)
        .nth(1)
        .unwrap()
        .0;
    for (stop, upto) in [
        (LogPosition::Mark("migrate-start file 3".into()), mark_idx),
        (LogPosition::Flush(2), flush2_idx),
        (LogPosition::Entries(17), 16),
    ] {
        let want = model_upto(&|i| i <= upto);
        let a = make_image(dir.path(), "a.img", &initial);
        replay(&path, &a, &stop).unwrap();
        assert!(fs::read(&a).unwrap() == want, "own replay {stop:?}");
        let b = make_image(dir.path(), "b.img", &initial);
        replay_dm_log_writes(&dm, &b, &stop).unwrap();
        assert!(fs::read(&b).unwrap() == want, "dm replay {stop:?}");
    }
    let a = make_image(dir.path(), "a.img", &initial);
    replay(&path, &a, &LogPosition::Seq(5)).unwrap();
    assert!(fs::read(&a).unwrap() == model_upto(&|i| i <= 5));

    // Unreachable stops are errors.
    let err = replay(&path, &a, &LogPosition::Mark("nope".into()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not in the log"), "{err}");
    assert!(replay_dm_log_writes(&dm, &a, &LogPosition::Flush(1000)).is_err());
    assert!(replay_dm_log_writes(&dm, &a, &LogPosition::Seq(3)).is_err());
}

#[test]
fn export_needs_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.log");
    let log = LogWriter::create(&path, LogOptions::default()).unwrap();
    log.append(&Entry::write(0, 0, &[1u8; 512], 0)).unwrap();
    drop(log);
    let err = export_dm_log_writes(&path, dir.path().join("x"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--log-data"), "{err}");
    let img = make_image(dir.path(), "i.img", &[0u8; 4096]);
    assert!(replay(&path, &img, &LogPosition::End).is_err());
    // Reading a log that was dropped without finish(): Drop flushed it.
    assert_eq!(LogReader::open(&path).unwrap().read_all().unwrap().len(), 1);
    // Discard replay keeps the image size.
    let f = OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&[7u8; 4096], 0).unwrap();
}
