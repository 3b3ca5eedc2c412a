//! `--socket`: the bench drives a backend it did not start. Here that backend is blkrec's
//! library server in this test process, on a 16 MiB image. Expected: the fill pass makes
//! the contents known, every request of the workload completes OK, and all 4096 blocks read
//! back through the socket hold what the bench last wrote; the host-side image check and
//! the log size are reported as not applicable rather than failing the run. Setup problems
//! (no socket, too few queues, a read-only device) end with an error that says what to do.
//! No timing assertions.

use e4race_bench::peer::PeerKind;
use e4race_bench::report::Report;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::JoinHandle;

const BIN: &str = env!("CARGO_BIN_EXE_e4race-bench");

/// blkrec serving a zeroed 16 MiB image on `dir/ext.sock` (one connection, then it returns).
fn start_blkrec(
    dir: &Path,
    queues: u16,
    read_only: bool,
) -> (
    PathBuf,
    JoinHandle<Result<blkrec::RunSummary, blkrec::Error>>,
) {
    let img = dir.join("disk.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(16 << 20))
        .expect("create image");
    let mut cfg = blkrec::Config::new(&img, dir.join("ext.sock"), dir.join("w.log"));
    cfg.num_queues = queues;
    cfg.read_only = read_only;
    let server = blkrec::Server::bind(&cfg).expect("bind blkrec");
    (cfg.socket, std::thread::spawn(move || server.serve()))
}

fn bench(socket: &Path, json: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--socket")
        .arg(socket)
        .args(["--workloads", "randwrite-4k-qd1", "--ops", "100", "--json"])
        .arg(json)
        .args(extra)
        .output()
        .expect("run e4race-bench")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn report(json: &Path) -> Report {
    serde_json::from_str(&std::fs::read_to_string(json).expect("json written")).expect("json")
}

#[test]
fn drives_a_backend_it_did_not_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, serving) = start_blkrec(dir.path(), 1, false);
    let json = dir.path().join("out.json");
    let out = bench(&socket, &json, &["--queues", "1"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    serving
        .join()
        .expect("blkrec thread")
        .expect("blkrec served");
    let r = report(&json);
    assert_eq!(r.size_mib, 16, "the device size replaces --size-mib");
    assert_eq!(r.socket.as_deref(), Some(socket.to_str().expect("utf-8")));
    assert_eq!(r.results.len(), 1);
    let res = &r.results[0];
    assert_eq!(res.peer, PeerKind::External);
    assert_eq!(res.peer_name(), "external");
    assert_eq!(res.submitted, 100);
    assert_eq!(res.completed, res.submitted);
    assert_eq!(res.errors, 0);
    assert_eq!(res.read_mismatches, 0);
    assert_eq!(
        res.backend_cpu_s_per_gib, None,
        "without --socket-pid the CPU is unknown, not zero"
    );
    assert_eq!(res.vs_qsd.iops, None, "no qsd in the run, so no ratios");
    assert_eq!(r.instances.len(), 1);
    let inst = &r.instances[0];
    assert!(inst.external && inst.error.is_none(), "{inst:?}");
    assert_eq!(inst.peer_name(), "external");
    assert!(inst.cmdline.contains("16 MiB device"), "{}", inst.cmdline);
    let v = inst.verify.as_ref().expect("verify pass ran");
    assert_eq!(v.blocks_checked, 4096);
    assert_eq!(v.mismatches, 0);
    assert_eq!(v.errors, 0);
    assert!(v.blocks_rewritten > 0 && v.blocks_rewritten <= 100);
    assert!(inst.verified() && r.all_ok());
    assert!(
        stdout.contains("external backend, 16 MiB device")
            && stdout.contains("| randwrite-4k-qd1 | 1 | external |")
            && stdout.contains("| n/a (external) | n/a (external) |")
            && stdout.contains("CPU: not measured"),
        "{stdout}"
    );
}

#[test]
fn two_queues_a_label_and_the_backend_cpu() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, serving) = start_blkrec(dir.path(), 2, false);
    let json = dir.path().join("out.json");
    // The backend runs in this test process, so that is the PID to watch.
    let pid = std::process::id().to_string();
    let out = bench(
        &socket,
        &json,
        &[
            "--queues",
            "2",
            "--socket-pid",
            &pid,
            "--socket-name",
            "blkrec-lib",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    serving
        .join()
        .expect("blkrec thread")
        .expect("blkrec served");
    let r = report(&json);
    let res = &r.results[0];
    assert_eq!(
        (res.peer, res.peer_name()),
        (PeerKind::External, "blkrec-lib")
    );
    assert_eq!(res.queues, 2);
    assert_eq!((res.completed, res.submitted, res.errors), (100, 100, 0));
    assert!(
        res.backend_cpu_s_per_gib.is_some(),
        "--socket-pid gives CPU"
    );
    let v = r.instances[0].verify.as_ref().expect("verify pass ran");
    assert_eq!((v.blocks_checked, v.mismatches, v.errors), (4096, 0, 0));
    assert!(
        stdout.contains("| randwrite-4k-qd1 | 2 | blkrec-lib |"),
        "{stdout}"
    );
}

#[test]
fn a_missing_socket_is_a_clear_error() {
    let out = Command::new(BIN)
        .args(["--socket", "/nonexistent", "--ops", "10"])
        .output()
        .expect("run e4race-bench");
    assert_eq!(out.status.code(), Some(2));
    let (_, err) = text(&out);
    assert!(
        err.contains("--socket /nonexistent: no such socket")
            && err.contains("start the vhost-user-blk backend first"),
        "{err}"
    );
}

#[test]
fn too_few_queues_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    // blkrec ends when the bench hangs up; its result does not matter here.
    let (socket, _serving) = start_blkrec(dir.path(), 1, false);
    let json = dir.path().join("out.json");
    let out = bench(&socket, &json, &["--queues", "2"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let inst = &report(&json).instances[0];
    let err = inst.error.as_deref().unwrap_or_default();
    assert!(
        err.contains("2 queue(s)") && err.contains("smaller --queues"),
        "{err}"
    );
    assert!(stdout.contains("| external | 2 | failed: "), "{stdout}");
}

#[test]
fn a_read_only_device_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, _serving) = start_blkrec(dir.path(), 1, true);
    let json = dir.path().join("out.json");
    let out = bench(&socket, &json, &["--queues", "1"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let inst = &report(&json).instances[0];
    let err = inst.error.as_deref().unwrap_or_default();
    assert!(
        err.contains("read-only") && err.contains("export it writable"),
        "{err}"
    );
}
