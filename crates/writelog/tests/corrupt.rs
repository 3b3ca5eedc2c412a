//! Damage in the middle of a log is corruption; damage at its end is a torn tail.

use std::fs;
use std::path::Path;
use testkit::pattern;
use writelog::{Entry, Error, LogOptions, LogReader, LogWriter, Record};

const N: usize = 100;
const HEADER_LEN: usize = 40;

/// Writes `n` records of varied kinds and sizes (so offsets are not aligned); returns the
/// file's bytes.
fn make_log(path: &Path, n: usize) -> Vec<u8> {
    let log = LogWriter::create(
        path,
        LogOptions {
            log_data: true,
            ..LogOptions::default()
        },
    )
    .unwrap();
    for i in 0..n as u64 {
        match i % 7 {
            3 => log
                .append(&Entry::flush(0, 0, log.next_seq()))
                .map(drop)
                .unwrap(),
            5 => log.mark(&format!("mark {i}")).map(drop).unwrap(),
            _ => {
                let d = pattern(i, 100 + 333 * (i as usize % 13));
                log.append(&Entry::write((i % 3) as u16, i * 8, &d, 0))
                    .map(drop)
                    .unwrap()
            }
        }
    }
    log.finish().unwrap();
    drop(log);
    fs::read(path).unwrap()
}

/// Byte offset of each record (walking the frames of an undamaged log).
fn offsets(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = HEADER_LEN;
    while at + 8 <= bytes.len() {
        out.push(at);
        at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    assert_eq!(at, bytes.len());
    out
}

/// Reads record by record: the records before the first error, the error, discarded bytes.
fn read(path: &Path) -> (Vec<Record>, Option<Error>, u64) {
    let mut r = LogReader::open(path).unwrap();
    let mut recs = Vec::new();
    let err = loop {
        match r.next_record() {
            Ok(Some(rec)) => recs.push(rec),
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    assert!(
        r.next_record().unwrap().is_none(),
        "reader ends after an error"
    );
    for (i, rec) in recs.iter().enumerate() {
        assert_eq!(rec.seq, i as u64);
    }
    (recs, err, r.discarded_bytes())
}

/// Expects `CorruptRecord` at record `bad` with the next valid record being `next`.
fn expect_corrupt(path: &Path, offs: &[usize], bad: usize, next: usize, what: &str) {
    let (recs, err, _) = read(path);
    assert_eq!(recs.len(), bad, "{what}: records before the damage");
    let err = err.unwrap_or_else(|| {
        panic!(
            "{what}: expected a CorruptRecord error, got a clean end after {} records",
            recs.len()
        )
    });
    let msg = err.to_string();
    match err {
        Error::CorruptRecord {
            path: p,
            offset,
            expected_seq,
            next_valid_seq,
            next_valid_offset,
        } => {
            assert_eq!(p, path, "{what}");
            assert_eq!(offset, offs[bad] as u64, "{what}");
            assert_eq!(expected_seq, bad as u64, "{what}");
            assert_eq!(next_valid_seq, next as u64, "{what}");
            assert_eq!(next_valid_offset, offs[next] as u64, "{what}");
        }
        other => panic!("{what}: expected CorruptRecord, got {other:?}"),
    }
    assert!(
        msg.contains(&format!("byte offset {}", offs[bad]))
            && msg.contains(&format!("byte offset {}", offs[next]))
            && msg.contains("damaged after it was written")
            && msg.contains("e4race log show"),
        "{msg}"
    );
    // read_all() fails too rather than returning a silently shortened log.
    assert!(LogReader::open(path).unwrap().read_all().is_err(), "{what}");
}

#[test]
fn bad_crc_in_middle_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.log");
    let full = make_log(&path, N);
    let offs = offsets(&full);
    assert_eq!(offs.len(), N);
    let mid = N / 2;
    // A flipped byte in the payload, and one in the frame's checksum.
    for (at, what) in [
        (offs[mid] + 8 + 60, "payload"),
        (offs[mid] + 5, "crc field"),
    ] {
        let mut bad = full.clone();
        bad[at] ^= 0x10;
        fs::write(&path, &bad).unwrap();
        expect_corrupt(&path, &offs, mid, mid + 1, what);
    }
    // The first record.
    let mut bad = full.clone();
    bad[offs[0] + 8 + 20] ^= 1;
    fs::write(&path, &bad).unwrap();
    expect_corrupt(&path, &offs, 0, 1, "first record");
}

#[test]
fn damaged_length_in_middle_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.log");
    let full = make_log(&path, N);
    let offs = offsets(&full);
    let mid = 37;
    let real = (offs[mid + 1] - offs[mid] - 8) as u32;
    for len in [
        u32::MAX,
        (1 << 30) + 1,
        full.len() as u32,
        real + 1,
        real - 1,
        100,
        0,
    ] {
        let mut bad = full.clone();
        bad[offs[mid]..offs[mid] + 4].copy_from_slice(&len.to_le_bytes());
        fs::write(&path, &bad).unwrap();
        expect_corrupt(&path, &offs, mid, mid + 1, &format!("payload_len {len}"));
    }
}

#[test]
fn zeroed_hole_in_middle_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.log");
    let full = make_log(&path, N);
    let offs = offsets(&full);
    // Records 40..=45 zeroed, plus the start of 46 (e.g. a lost page).
    let mut bad = full.clone();
    bad[offs[40]..offs[46] + 10].fill(0);
    fs::write(&path, &bad).unwrap();
    expect_corrupt(&path, &offs, 40, 47, "zeroed hole");
}

#[test]
fn truncated_last_record_is_a_clean_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.log");
    let full = make_log(&path, N);
    let offs = offsets(&full);
    let last = offs[N - 1];
    let cut = last + (full.len() - last) / 2;
    fs::write(&path, &full[..cut]).unwrap();
    let (recs, err, discarded) = read(&path);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(recs.len(), N - 1);
    assert!(discarded > 0);
    assert_eq!(discarded as usize, cut - last);
}

#[test]
fn bad_last_record_then_zeros_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.log");
    let full = make_log(&path, N);
    let offs = offsets(&full);
    let last = offs[N - 1];
    // A flipped byte in the last record, then zeros (preallocated / not yet written back).
    let mut bad = full.clone();
    bad[last + 8 + 50] ^= 4;
    bad.extend_from_slice(&[0u8; 8192]);
    fs::write(&path, &bad).unwrap();
    let (recs, err, discarded) = read(&path);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(recs.len(), N - 1);
    assert_eq!(discarded as usize, bad.len() - last);
    // A half-written last record, then zeros.
    let cut = last + (full.len() - last) / 2;
    let mut torn = full[..cut].to_vec();
    torn.extend_from_slice(&[0u8; 8192]);
    fs::write(&path, &torn).unwrap();
    let (recs, err, discarded) = read(&path);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(recs.len(), N - 1);
    assert_eq!(discarded as usize, torn.len() - last);
}

#[test]
fn zeros_after_complete_log_are_a_clean_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.log");
    let mut bytes = make_log(&path, N);
    let len = bytes.len();
    for zeros in [1usize, 7, 8, 55, 56, 57, 4096, 3 << 20] {
        bytes.truncate(len);
        bytes.resize(len + zeros, 0);
        fs::write(&path, &bytes).unwrap();
        let (recs, err, discarded) = read(&path);
        assert!(err.is_none(), "{zeros} zeros: {err:?}");
        assert_eq!(recs.len(), N, "{zeros} zeros");
        // Counted as ignored trailing bytes, as tests/log.rs expects.
        assert_eq!(discarded as usize, zeros);
    }
}

/// A torn record whose data is itself a copy of log frames (a guest writing a log file):
/// the valid-looking frames inside its data must not turn the torn tail into corruption.
#[test]
fn torn_record_holding_log_frames_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let inner = make_log(&dir.path().join("inner.log"), 10);
    let path = dir.path().join("o.log");
    let log = LogWriter::create(
        &path,
        LogOptions {
            log_data: true,
            ..LogOptions::default()
        },
    )
    .unwrap();
    for i in 0..3u64 {
        log.append(&Entry::write(0, i, &pattern(i, 700), 0))
            .unwrap();
    }
    // Seq 3; its data holds inner records with seqs 0..10 (including 4.., > 3).
    log.append(&Entry::write(0, 64, &inner, 0)).unwrap();
    log.finish().unwrap();
    drop(log);
    let full = fs::read(&path).unwrap();
    let offs = offsets(&full);
    fs::write(&path, &full[..full.len() - 100]).unwrap();
    let (recs, err, discarded) = read(&path);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(recs.len(), 3);
    assert_eq!(discarded as usize, full.len() - 100 - offs[3]);
}
