//! `--socket`: the bench drives a backend it did not start. Here that backend is blkrec's
//! library server in this test process, on a 16 MiB image. Expected: the fill pass makes
//! the contents known, every request of the workload completes OK, and all 4096 blocks read
//! back through the socket hold what the bench last wrote; the host-side image check is
//! reported as not applicable rather than skipped silently.

use e4race_bench::peer::PeerKind;
use e4race_bench::report::Report;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_e4race-bench");

#[test]
fn drives_a_backend_it_did_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, vec![0u8; 16 << 20]).unwrap();
    let cfg = blkrec::Config::new(&img, dir.path().join("ext.sock"), dir.path().join("w.log"));
    let server = blkrec::Server::bind(&cfg).unwrap();
    let serving = std::thread::spawn(move || server.serve());
    let json = dir.path().join("out.json");
    let out = Command::new(BIN)
        .arg("--socket")
        .arg(&cfg.socket)
        .args(["--socket-pid", &std::process::id().to_string()])
        .args([
            "--queues",
            "1",
            "--workloads",
            "randwrite-4k-qd1",
            "--ops",
            "100",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serving.join().unwrap().unwrap();
    let r: Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r.results.len(), 1);
    let res = &r.results[0];
    assert_eq!(res.peer, PeerKind::External);
    assert_eq!(res.submitted, 100);
    assert_eq!(res.completed, res.submitted);
    assert_eq!(res.errors, 0);
    assert!(
        res.backend_cpu_s_per_gib.is_some(),
        "--socket-pid gives CPU"
    );
    let inst = &r.instances[0];
    assert!(inst.external && inst.error.is_none(), "{inst:?}");
    let v = inst.verify.as_ref().unwrap();
    assert_eq!(v.blocks_checked, 4096);
    assert_eq!(v.mismatches, 0);
    assert_eq!(v.errors, 0);
    assert!(v.blocks_rewritten > 0 && v.blocks_rewritten <= 100);
    assert!(
        stdout.contains("| external | 1 |") && stdout.contains("n/a (external)"),
        "{stdout}"
    );
}

#[test]
fn a_missing_socket_is_a_clear_error() {
    let out = Command::new(BIN)
        .args(["--socket", "/nonexistent/vhost.sock", "--ops", "10"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/vhost.sock") && err.contains("start the vhost-user-blk backend"),
        "{err}"
    );
}
