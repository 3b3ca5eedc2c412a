//! Inputs the fuzz targets found (fuzz/artifacts-found/log_reader), kept as regressions.

use writelog::dmlog::{DM_MAGIC, DM_VERSION};
use writelog::{replay_dm_log_writes, stats, Entry, LogOptions, LogPosition, LogReader, LogWriter};

/// A record at the last sectors of the u64 range: its end sector used to overflow in stats().
#[test]
fn stats_of_a_record_at_the_end_of_the_sector_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.log");
    let log = LogWriter::create(&path, LogOptions::default()).unwrap();
    log.append(&Entry::write(0, u64::MAX - 2, &[7u8; 4096], 0))
        .unwrap();
    log.finish().unwrap();
    let st = stats(&mut LogReader::open(&path).unwrap()).unwrap();
    assert_eq!(st.records, 1);
    assert!(st.sectors_touched <= 8, "{st:?}");
}

/// A dm-log-writes entry claiming 2^40 sectors of data in a file that holds none: replay
/// used to allocate the whole claimed length first (and abort); it must fail cleanly.
#[test]
fn dm_replay_of_an_entry_longer_than_its_file_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = vec![0u8; 1024];
    f[0..8].copy_from_slice(&DM_MAGIC.to_le_bytes());
    f[8..16].copy_from_slice(&DM_VERSION.to_le_bytes());
    f[16..24].copy_from_slice(&1u64.to_le_bytes()); // one entry
    f[24..28].copy_from_slice(&512u32.to_le_bytes());
    // Entry: sector 0, 2^40 sectors, no flags, no mark; its data would follow.
    f[512 + 8..512 + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    f.extend_from_slice(&[1u8; 4096]);
    let dm = dir.path().join("log.dm");
    std::fs::write(&dm, &f).unwrap();
    let img = dir.path().join("img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let e = replay_dm_log_writes(&dm, &img, &LogPosition::End).unwrap_err();
    assert!(e.to_string().contains("read the dm-log-writes file"), "{e}");
}

/// A sector size of 2^31 in the superblock used to size a 2 GiB entry buffer.
#[test]
fn dm_replay_refuses_an_absurd_sector_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = vec![0u8; 512];
    f[0..8].copy_from_slice(&DM_MAGIC.to_le_bytes());
    f[8..16].copy_from_slice(&DM_VERSION.to_le_bytes());
    f[24..28].copy_from_slice(&(1u32 << 31).to_le_bytes());
    let dm = dir.path().join("log.dm");
    std::fs::write(&dm, &f).unwrap();
    let img = dir.path().join("img");
    std::fs::write(&img, vec![0u8; 4096]).unwrap();
    let e = replay_dm_log_writes(&dm, &img, &LogPosition::End).unwrap_err();
    assert!(e.to_string().contains("sector size"), "{e}");
}
