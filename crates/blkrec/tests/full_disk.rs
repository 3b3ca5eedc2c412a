//! The host disk is full where the write log goes. /dev/full stands in for a full file
//! system: every write(2) to it fails with ENOSPC. Expected: blkrec refuses to serve (the
//! log header cannot be written) with an error that names the log and says why, instead of
//! serving a disk whose writes would go unrecorded.

use blkrec::{Config, Server};

#[test]
fn log_on_a_full_disk_is_refused_with_a_clear_error() {
    let full = std::path::Path::new("/dev/full");
    assert!(
        full.exists(),
        "this test needs /dev/full to simulate ENOSPC"
    );
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let cfg = Config::new(&img, dir.path().join("blk.sock"), full);
    let msg = match Server::bind(&cfg) {
        Ok(_) => panic!("blkrec served with its log on a full disk"),
        Err(e) => e.to_string(),
    };
    assert!(
        msg.contains("/dev/full"),
        "the error does not name the log: {msg}"
    );
    assert!(
        msg.contains("No space left on device"),
        "the error does not say the disk is full: {msg}"
    );
}
