//! The real binary, SIGKILLed mid-run: its log must read back as a consistent prefix.

use blkrec::frontend::{BlkClient, ClientOptions};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::pattern;
use writelog::{Kind, LogReader};

#[test]
fn sigkill_leaves_a_readable_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, vec![0u8; 16 << 20]).unwrap();
    let sock = dir.path().join("blk.sock");
    let log = dir.path().join("w.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_blkrec"))
        .arg("--image")
        .arg(&img)
        .arg("--socket")
        .arg(&sock)
        .arg("--log")
        .arg(&log)
        .args(["--log-data", "--durable", "--num-queues", "2"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        format!("blkrec: listening on {}", sock.display())
    );

    let opts = ClientOptions {
        num_queues: 2,
        timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    let mut c = BlkClient::connect(&sock, &opts).unwrap();
    let pid = child.id();
    // Kill it while the loop below is writing, once a few flushes went through.
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = progress.clone();
    let killer = std::thread::spawn(move || {
        let t0 = Instant::now();
        while seen.load(std::sync::atomic::Ordering::Relaxed) < 40
            && t0.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(20));
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    });
    let start = Instant::now();
    let mut completed = 0u64; // writes the "guest" saw complete
    let mut flushed = 0u64; // writes covered by a completed FLUSH
    let mut i = 0u64;
    loop {
        let q = (i % 2) as usize;
        // Distinct sectors, so each logged write can be checked against the image.
        let sector = (i * 8) % (16 * 2048 - 64);
        match c.write(q, sector, &pattern(i, 4096)) {
            Ok(0) => {
                completed = i + 1;
                progress.store(completed, std::sync::atomic::Ordering::Relaxed);
            }
            _ => break,
        }
        if i % 16 == 15 {
            match c.flush(q) {
                Ok(0) => flushed = completed,
                _ => break,
            }
        }
        i += 1;
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "blkrec was not killed"
        );
    }
    killer.join().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed by SIGKILL");
    assert!(
        flushed > 0,
        "some flushes completed before the kill ({completed} writes)"
    );

    let mut r = LogReader::open(&log).unwrap();
    let recs = r.read_all().unwrap(); // no error, whatever the cut
    eprintln!(
        "{completed} writes completed, {flushed} flushed, {} records logged, {} torn bytes",
        recs.len(),
        r.discarded_bytes()
    );
    assert!(
        recs.iter().enumerate().all(|(n, rec)| rec.seq == n as u64),
        "seqs contiguous from 0"
    );
    let writes: Vec<_> = recs.iter().filter(|r| r.kind == Kind::Write).collect();
    // --durable: every write acknowledged before a completed FLUSH is in the log.
    assert!(
        writes.len() as u64 >= flushed,
        "{} logged < {flushed} flushed",
        writes.len()
    );
    assert!(writes.len() as u64 <= completed + 2);
    let image = std::fs::read(&img).unwrap();
    for w in &writes {
        let data = w.data.as_ref().unwrap();
        assert_eq!(w.block_hashes, writelog::block_hashes(data));
        let off = w.sector as usize * 512;
        // Sectors are reused only after wrapping the disk, which this short run never does.
        assert!(
            image[off..off + data.len()] == data[..],
            "write at sector {} on disk",
            w.sector
        );
    }
}

fn spawn(dir: &std::path::Path, extra: &[&str]) -> (std::process::Child, std::path::PathBuf) {
    let img = dir.join("disk.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let sock = dir.join("blk.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_blkrec"))
        .arg("--image")
        .arg(&img)
        .arg("--socket")
        .arg(&sock)
        .arg("--log")
        .arg(dir.join("w.log"))
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("blkrec: listening on "), "{line}");
    (child, sock)
}

#[test]
fn exits_0_with_full_log_on_disconnect_and_on_sigterm() {
    // Frontend disconnects: exit 0, every write logged.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, sock) = spawn(dir.path(), &["--serial", "abc"]);
    let mut c = BlkClient::connect(&sock, &ClientOptions::default()).unwrap();
    for i in 0..20 {
        assert_eq!(c.write(0, i * 8, &pattern(i, 4096)).unwrap(), 0);
    }
    c.shutdown().unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!sock.exists());
    let recs = LogReader::open(dir.path().join("w.log"))
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(recs.len(), 20);

    // SIGTERM with a frontend still connected: exit 0, every completed write logged.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, sock) = spawn(dir.path(), &["--log-data"]);
    let mut c = BlkClient::connect(&sock, &ClientOptions::default()).unwrap();
    for i in 0..20 {
        assert_eq!(c.write(0, i * 8, &pattern(i, 4096)).unwrap(), 0);
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let recs = LogReader::open(dir.path().join("w.log"))
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(recs.len(), 20);
    assert!(recs.iter().all(|r| r.data.is_some()));
    drop(c);
}
