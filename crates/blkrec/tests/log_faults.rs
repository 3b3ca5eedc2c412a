//! The real binary with its write log under faults: a file-size limit (EFBIG), a cap
//! (--max-log-bytes), a FLUSH without --durable followed by SIGKILL, SIGTERM under load.
//!
//! After each fault: every write acknowledged to the frontend is in the log, and the image
//! is exactly the initial image with the logged records replayed (no unlogged write reached
//! the image).

use blkrec::frontend::{BlkClient, ClientOptions};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use testkit::pattern;
use writelog::{Kind, LogReader, Record};

const IMG_BYTES: usize = 256 << 10;

struct Backend {
    child: Child,
    sock: PathBuf,
    log: PathBuf,
    img: PathBuf,
}

/// Starts blkrec on a zeroed image; `fsize`: RLIMIT_FSIZE of the child, in bytes.
fn spawn(dir: &Path, extra: &[&str], fsize: Option<u64>) -> Backend {
    let img = dir.join("disk.img");
    std::fs::write(&img, vec![0u8; IMG_BYTES]).unwrap();
    let sock = dir.join("blk.sock");
    let log = dir.join("w.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blkrec"));
    cmd.arg("--image")
        .arg(&img)
        .arg("--socket")
        .arg(&sock)
        .arg("--log")
        .arg(&log)
        .args(extra)
        .stderr(Stdio::piped());
    if let Some(limit) = fsize {
        // SAFETY: only setrlimit(2), which is async-signal-safe, runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let rl = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &rl) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("blkrec: listening on "), "{line}");
    Backend {
        child,
        sock,
        log,
        img,
    }
}

/// The initial (zeroed) image with the log replayed onto it by writelog's own `replay`.
fn replayed(log: &Path) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("replay.img");
    std::fs::write(&img, vec![0u8; IMG_BYTES]).unwrap();
    writelog::replay(log, &img, &writelog::LogPosition::End).unwrap();
    std::fs::read(&img).unwrap()
}

/// Waits for the child; returns its exit status and the rest of its stderr.
fn reap(b: &mut Backend) -> (std::process::ExitStatus, String) {
    let mut err = String::new();
    let _ = b.child.stderr.take().unwrap().read_to_string(&mut err);
    (b.child.wait().unwrap(), err)
}

/// Writes 4 KiB blocks round-robin over the image until `stop_after_fail` writes in a row
/// failed; returns (seed, sector) of every write that completed OK, in order.
fn write_until_refused(c: &mut BlkClient, queues: usize) -> Vec<(u64, u64)> {
    let mut ok = Vec::new();
    let mut failed_in_a_row = 0;
    let sectors = (IMG_BYTES / 512) as u64;
    for i in 0..20_000u64 {
        let sector = (i * 8) % sectors;
        match c.write((i as usize) % queues, sector, &pattern(i, 4096)) {
            Ok(0) => {
                assert_eq!(
                    failed_in_a_row, 0,
                    "a write succeeded after the log refused one"
                );
                ok.push((i, sector));
            }
            Ok(_) | Err(_) => {
                failed_in_a_row += 1;
                if failed_in_a_row == 20 {
                    return ok;
                }
            }
        }
    }
    panic!("the log never filled: {} writes succeeded", ok.len());
}

/// Every acknowledged write is logged with its data, in order, and the image is the replay.
fn check_log_matches(b: &Backend, acked: &[(u64, u64)]) -> Vec<Record> {
    let recs = LogReader::open(&b.log).unwrap().read_all().unwrap();
    let writes: Vec<&Record> = recs.iter().filter(|r| r.kind == Kind::Write).collect();
    assert_eq!(
        writes.len(),
        acked.len(),
        "{} writes acknowledged, {} logged",
        acked.len(),
        writes.len()
    );
    for (w, (seed, sector)) in writes.iter().zip(acked) {
        assert_eq!(w.sector, *sector);
        assert_eq!(w.data.as_deref(), Some(&pattern(*seed, 4096)[..]));
    }
    let image = std::fs::read(&b.img).unwrap();
    assert!(
        image == replayed(&b.log),
        "the image holds a write the log does not"
    );
    recs
}

#[test]
fn efbig_on_the_log_stops_the_device_and_the_image_matches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    // The image (256 KiB) is below the limit; the log (4 KiB of data per write) passes it.
    let limit = 600 << 10;
    let mut b = spawn(dir.path(), &["--log-data"], Some(limit));
    let mut c = BlkClient::connect(&b.sock, &ClientOptions::default()).unwrap();
    let acked = write_until_refused(&mut c, 1);
    let _ = c.shutdown();
    let (status, err) = reap(&mut b);
    assert!(
        status.code().is_some(),
        "blkrec was killed ({status}): {err}"
    );
    assert!(err.contains("RLIMIT_FSIZE"), "{err}");
    check_log_matches(&b, &acked);
    assert!(std::fs::metadata(&b.log).unwrap().len() <= limit);
}

#[test]
fn max_log_bytes_fails_the_device_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = spawn(
        dir.path(),
        &["--log-data", "--max-log-bytes", "65536"],
        None,
    );
    let mut c = BlkClient::connect(&b.sock, &ClientOptions::default()).unwrap();
    let acked = write_until_refused(&mut c, 1);
    assert!(
        !acked.is_empty() && acked.len() < 16,
        "{} writes fit",
        acked.len()
    );
    let _ = c.shutdown();
    let (_, err) = reap(&mut b);
    assert!(err.contains("--max-log-bytes"), "{err}");
    check_log_matches(&b, &acked);
    assert!(std::fs::metadata(&b.log).unwrap().len() <= 65536);
}

#[test]
fn a_completed_flush_survives_sigkill_without_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = spawn(dir.path(), &["--log-data"], None);
    let mut c = BlkClient::connect(&b.sock, &ClientOptions::default()).unwrap();
    let mut acked = Vec::new();
    for i in 0..10u64 {
        assert_eq!(c.write(0, i * 8, &pattern(i, 4096)).unwrap(), 0);
        acked.push((i, i * 8));
    }
    assert_eq!(c.flush(0).unwrap(), 0);
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(b.child.id() as libc::pid_t, libc::SIGKILL) };
    let _ = reap(&mut b);
    let recs = check_log_matches(&b, &acked);
    assert_eq!(recs.last().map(|r| r.kind), Some(Kind::Flush));
}

#[test]
fn sigterm_under_load_loses_no_acknowledged_write() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let mut b = spawn(dir.path(), &["--log-data", "--num-queues", "2"], None);
        let opts = ClientOptions {
            num_queues: 2,
            timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        };
        let mut c = BlkClient::connect(&b.sock, &opts).unwrap();
        let pid = b.child.id();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30 + 20 * round));
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        });
        // Until the backend goes away: only OK completions count as acknowledged.
        let mut acked = Vec::new();
        let sectors = (IMG_BYTES / 512) as u64;
        for i in 0..1_000_000u64 {
            let sector = (i * 8) % sectors;
            match c.write((i % 2) as usize, sector, &pattern(i, 4096)) {
                Ok(0) => acked.push((i, sector)),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        killer.join().unwrap();
        let (status, err) = reap(&mut b);
        assert!(status.success(), "round {round}: {status}: {err}");
        check_log_matches(&b, &acked);
    }
}

/// The frontend goes away with requests in flight on both queues, overlapping ones among
/// them: blkrec exits 0, every write that completed OK before is logged, and the image is
/// exactly the replay of the log (whatever the in-flight ones did, they did it logged).
#[test]
fn frontend_disconnect_with_requests_in_flight() {
    for round in 0..5u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut b = spawn(dir.path(), &["--log-data", "--num-queues", "2"], None);
        let opts = ClientOptions {
            num_queues: 2,
            queue_depth: 32,
            ..ClientOptions::default()
        };
        let mut c = BlkClient::connect(&b.sock, &opts).unwrap();
        let bufs: Vec<Vec<u8>> = (0..64).map(|i| pattern(i + round * 64, 8192)).collect();
        let mut acked = Vec::new();
        let mut tokens = std::collections::HashMap::new();
        for (i, d) in bufs.iter().enumerate() {
            let q = i % 2;
            // Sectors 0..64 only: writes on the two queues overlap.
            let sector = (i as u64 * 4) % 64;
            let t = c
                .submit(q, blkrec::frontend::BlkOp::Write { sector, data: d })
                .unwrap();
            tokens.insert(t, (i as u64, sector));
            if i % 8 == 7 {
                c.kick(0).unwrap();
                c.kick(1).unwrap();
                for q in 0..2 {
                    for done in c.poll(q).unwrap() {
                        if done.status == 0 {
                            acked.push(tokens[&done.token]);
                        }
                    }
                }
            }
        }
        drop(c); // requests still in flight
        let (status, err) = reap(&mut b);
        assert!(status.success(), "round {round}: {status}: {err}");
        let recs = LogReader::open(&b.log).unwrap().read_all().unwrap();
        let logged: std::collections::HashSet<u64> = recs
            .iter()
            .filter(|r| r.kind == Kind::Write)
            .filter_map(|r| {
                bufs.iter()
                    .position(|d| Some(&d[..]) == r.data.as_deref())
                    .map(|i| i as u64)
            })
            .collect();
        for (i, _) in &acked {
            assert!(
                logged.contains(i),
                "round {round}: acknowledged write {i} not logged"
            );
        }
        let image = std::fs::read(&b.img).unwrap();
        assert!(
            image == replayed(&b.log),
            "round {round}: image differs from the log's replay"
        );
    }
}
