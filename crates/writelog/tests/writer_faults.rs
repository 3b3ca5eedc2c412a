//! The writer under faults: finish() racing appends, and a capped log.

use std::sync::{Arc, Mutex};
use writelog::{Entry, LogOptions, LogReader, LogWriter};

/// finish() racing appenders: every record finish() counts is in the file when it returns
/// (read while the writer is still alive), and every append that succeeded has a seq below
/// that count. The old finish() synced and sealed under two lock holds, so an append in
/// between was counted but left in the buffer.
#[test]
fn finish_racing_appends_loses_no_counted_record() {
    let data = vec![0x5au8; 512];
    for iter in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.log");
        let log = Arc::new(LogWriter::create(&path, LogOptions::default()).unwrap());
        let acked = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..4u16)
            .map(|q| {
                let (log, acked, data) = (log.clone(), acked.clone(), data.clone());
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while let Ok(seq) = log.append(&Entry::write(q, i % 1024, &data, 0)) {
                        acked.lock().unwrap().push(seq);
                        i += 1;
                    }
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_micros(200 + iter * 50));
        let n = log.finish().unwrap();
        let on_disk = LogReader::open(&path).unwrap().read_all().unwrap().len() as u64;
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            on_disk, n,
            "iteration {iter}: finish() counted {n}, the file holds {on_disk}"
        );
        let acked = acked.lock().unwrap();
        assert!(
            acked.iter().all(|&s| s < n),
            "iteration {iter}: an append succeeded after finish() returned {n}"
        );
    }
}
