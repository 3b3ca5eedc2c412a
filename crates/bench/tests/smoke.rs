//! Runs the `e4race-bench` binary on tiny workloads against blkrec only (no
//! qemu-storage-daemon needed) and checks its correctness figures. No timing assertions.

use e4race_bench::peer::PeerKind;
use e4race_bench::report::Report;
use e4race_bench::workload::Workload;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_e4race-bench");

fn run_bench(args: &[&str]) -> (Report, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("out.json");
    let out = Command::new(BIN)
        .args(args)
        .args(["--blkrec", "builtin", "--size-mib", "16", "--dir"])
        .arg(dir.path().join("work"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run e4race-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "e4race-bench failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("json written");
    (serde_json::from_str(&text).expect("json parses"), stdout)
}

fn check(report: &Report, peers: usize, workloads: usize) {
    assert_eq!(report.instances.len(), peers);
    assert_eq!(report.results.len(), peers * workloads);
    for r in &report.results {
        assert!(r.iops > 0.0, "{r:?}");
        assert!(r.submitted > 0);
        assert_eq!(r.completed, r.submitted, "{r:?}");
        assert_eq!(r.errors, 0, "{r:?}");
        assert_eq!(r.read_mismatches, 0, "{r:?}");
        assert!(r.lat_p50_us.is_some() && r.lat_p99_us >= r.lat_p50_us);
        assert!(r.ok());
    }
    for i in &report.instances {
        assert_eq!(i.error, None);
        let v = i.verify.as_ref().expect("verify pass ran");
        // 16 MiB = 4096 blocks, all read back through blkrec, none different from what the
        // bench last wrote there.
        assert_eq!(v.blocks_checked, 4096);
        assert_eq!(v.mismatches, 0);
        assert_eq!(v.errors, 0);
        assert!(v.blocks_rewritten > 0, "the workload wrote nothing");
        assert_eq!(i.image_blocks_checked, 4096);
        assert_eq!(i.image_mismatches, 0);
        assert!(i.log_bytes.is_some_and(|b| b > 0), "blkrec wrote no log");
        assert!(i.verified());
    }
    assert!(report.all_ok());
}

#[test]
fn randwrite_qd1_one_queue_blkrec() {
    let (report, md) = run_bench(&[
        "--peers",
        "blkrec-hash",
        "--workloads",
        "randwrite-4k-qd1",
        "--queues",
        "1",
        "--ops",
        "200",
    ]);
    check(&report, 1, 1);
    let r = &report.results[0];
    assert_eq!(r.peer, PeerKind::BlkrecHash);
    assert_eq!(r.workload, Workload::RandWrite4kQd1);
    assert_eq!(r.submitted, 200);
    assert_eq!(r.bytes, 200 * 4096);
    let v = report.instances[0].verify.as_ref().expect("verify");
    // 200 random 4 KiB writes over 4096 blocks touch at most 200 blocks.
    assert!(v.blocks_rewritten <= 200);
    assert!(
        md.contains("| randwrite-4k-qd1 | 1 | blkrec-hash |"),
        "{md}"
    );
}

#[test]
fn every_workload_two_queues_blkrec_data() {
    let (report, _) = run_bench(&[
        "--peers",
        "blkrec-data",
        "--workloads",
        "all",
        "--queues",
        "2",
        "--ops",
        "200",
    ]);
    check(&report, 1, Workload::ALL.len());
    let flush = report
        .results
        .iter()
        .find(|r| r.workload == Workload::FlushEvery8)
        .expect("flush workload ran");
    assert!(flush.flushes > 0);
    assert!(flush.data_requests >= 8 * flush.flushes);
}

#[test]
fn missing_qsd_is_a_clear_error() {
    let out = Command::new(BIN)
        .args([
            "--peers",
            "qsd",
            "--qsd",
            "/nonexistent/qemu-storage-daemon",
        ])
        .output()
        .expect("run e4race-bench");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("qemu-storage-daemon not found"), "{err}");
}

#[test]
fn blklogwrites_failure_is_reported_not_fatal() {
    // A "qemu-storage-daemon" that exits at once: the qsd-logwrites peer is reported as not
    // available and the run still completes.
    let fake = std::path::Path::new("/bin/false");
    if !fake.is_file() {
        eprintln!("skipping: no /bin/false");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args([
            "--peers",
            "qsd-logwrites",
            "--ops",
            "10",
            "--size-mib",
            "16",
        ])
        .args(["--workloads", "randwrite-4k-qd1", "--queues", "1", "--qsd"])
        .arg(fake)
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("run e4race-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("| qsd-logwrites | 1 | not available: qsd-logwrites exited"),
        "{stdout}"
    );
}

#[test]
fn two_rounds_start_each_peer_twice_and_summarize() {
    let (report, md) = run_bench(&[
        "--peers",
        "blkrec-hash,blkrec-data",
        "--workloads",
        "randwrite-4k-qd1",
        "--queues",
        "1",
        "--ops",
        "100",
        "--rounds",
        "2",
    ]);
    // Every round started every peer anew, and each of those instances verified its disk.
    check(&report, 4, 1);
    let rounds: Vec<u32> = report.instances.iter().map(|i| i.round).collect();
    assert_eq!(rounds, vec![0, 0, 1, 1]);
    assert_eq!(report.rounds, 2);
    // One summary per peer, covering both rounds' requests.
    assert_eq!(report.medians.len(), 2);
    for m in &report.medians {
        assert_eq!((m.round, m.submitted, m.completed), (2, 200, 200), "{m:?}");
    }
    assert!(md.contains("2 rounds"), "{md}");
    assert_eq!(
        md.matches("| randwrite-4k-qd1 | 1 | blkrec-data |").count(),
        1,
        "{md}"
    );
}
