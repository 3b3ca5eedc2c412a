//! Faults on the host side of a real run: the runs disk filling up under the guest, and
//! QEMU killed mid-race. Either way the verdict is INFRA-ERROR (never a kernel finding),
//! the message says what happened, and the run directory keeps its artifacts.

mod common;
use common::*;
use e4race_report::Verdict;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A tmpfs of `mib` MiB mounted on a fresh directory; unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount(8)");
        assert!(
            st.success(),
            "mounting a {mib} MiB tmpfs failed ({st}): this test needs root (CI runs as root)"
        );
        SmallDisk { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a just-exited QEMU may still hold disk.img for a moment.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The runs disk (40 MiB) fills during mkfs/the race: blkrec's pwrites of disk.img fail with
/// ENOSPC and the guest sees EIO. Invariant: that is reported as a full host disk
/// (INFRA-ERROR, exit 4), with report.json written (space for it is reserved up front).
#[test]
fn vm_full_runs_disk_is_infra_error_not_a_finding() {
    let _l = vm_lock();
    let disk = SmallDisk::mount(40);
    let o = e4race(&["run", "migrate-mmap", "--rounds", "1"], disk.path());
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("the host disk is full"), "{}", text(&o));
    let dir = run_dir(disk.path());
    let r = report(&dir);
    assert_eq!(r.verdict, Verdict::InfraError);
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("No space left on device")),
        "{r:?}"
    );
    assert!(r.findings.is_empty(), "{r:?}");
    for f in ["summary.txt", "console.log", "writes.log", "plan.json"] {
        assert!(dir.join(f).exists(), "{f} is missing");
    }
}

/// The pid of the QEMU whose command line names `needle`.
fn qemu_pid(needle: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        (cmd.starts_with("/usr/bin/qemu-system") || cmd.starts_with("qemu-system"))
            .then_some(())
            .filter(|()| cmd.contains(needle))
            .map(|()| pid)
    })
}

/// SIGKILL of QEMU while the race runs. Invariant: INFRA-ERROR (exit 4) naming QEMU, every
/// artifact kept, and writes.log reads back as a consistent prefix that includes the
/// `workload-start` mark.
#[test]
fn vm_qemu_killed_mid_race_is_infra_error_with_artifacts() {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let mut child = e4race_command(&["run", "migrate-mmap", "--rounds", "3"], runs.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Progress lines go to stderr; the summary to stdout.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let stdout = child.stdout.take().unwrap();
    let out_thread =
        std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let mut seen = String::new();
    let mut line = String::new();
    let t0 = Instant::now();
    while !seen.contains("racing EXT4_IOC_MIGRATE") {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 || t0.elapsed() > Duration::from_secs(300) {
            panic!("the race never started:\n{seen}");
        }
        seen.push_str(&line);
    }
    let dir: PathBuf = run_dir(runs.path());
    // Into the race: wait for the workload-start mark's command in the agent transcript.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(dir.join("agent.jsonl"))
        .unwrap_or_default()
        .contains("\"cmd\":\"migrate-mmap\"")
    {
        assert!(Instant::now() < deadline, "the workload never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let sock_dir = socket_dir(&dir);
    let pid = qemu_pid(&sock_dir).expect("QEMU is running");
    // SAFETY: kill(2) of the QEMU our child started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    seen.push_str(&rest);
    let status = child.wait().unwrap();
    let err = out_thread.join().unwrap();
    assert_eq!(status.code(), Some(4), "{seen}\n{err}");
    let r = report(&dir);
    assert_eq!(r.verdict, Verdict::InfraError, "{r:?}");
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.to_lowercase().contains("qemu")),
        "the error does not name QEMU: {r:?}"
    );
    for f in [
        "summary.txt",
        "console.log",
        "agent.jsonl",
        "writes.log",
        "plan.json",
        "disk.img",
    ] {
        assert!(dir.join(f).exists(), "{f} is missing");
    }
    let mut reader = writelog::LogReader::open(dir.join("writes.log")).unwrap();
    let recs = reader
        .read_all()
        .expect("writes.log reads back as a prefix");
    assert!(
        recs.iter()
            .any(|r| r.mark.as_deref() == Some("workload-start")),
        "the log prefix lacks the workload-start mark ({} records)",
        recs.len()
    );
    assert!(
        !Path::new(&sock_dir).exists(),
        "the socket directory was left behind"
    );
}
