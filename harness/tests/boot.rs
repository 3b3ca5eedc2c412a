//! Boots real Debian kernels under QEMU (TCG here, KVM where it works). Nothing is mocked.

mod common;
use common::*;
use e4race_report::Verdict;

/// The full smoke path on the default kernel: PASS, with the artifacts a user needs.
#[test]
fn vm_smoke_passes_on_default_kernel() {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(&["run", "smoke", "--blocks", "300"], runs.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("PASS: smoke on 6.1."), "{out}");
    let dir = run_dir(runs.path());
    let r = report(&dir);
    assert_eq!(r.verdict, Verdict::Pass);
    let ex = smoke_exercise(&r);
    assert_eq!(ex.blocks_written, 300);
    assert_eq!(ex.blocks_read_back_ok, 300);
    assert_eq!(ex.host.blocks_checked_on_host, 300);
    assert_eq!(ex.host.lost_blocks, 0);
    assert_eq!(ex.host.e2fsck, "clean");
    assert!(r.kernel.release.starts_with("6.1.0-"), "{r:?}");
    let console = std::fs::read_to_string(dir.join("console.log")).unwrap();
    assert!(
        console.contains("e4race-agent: ready on /dev/vport"),
        "{console}"
    );
    let agent = std::fs::read_to_string(dir.join("agent.jsonl")).unwrap();
    assert!(agent.contains("\"cmd\":\"write-pattern\""), "{agent}");
    assert!(dir.join("repro.sh").exists() && dir.join("summary.txt").exists());
    assert!(
        !dir.join("disk.img").exists(),
        "a passing run drops its image"
    );
}

/// The 6.12 package differs (xz modules, virtio built in): the same code path must boot it.
#[test]
fn vm_smoke_passes_on_6_12() {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(
        &["run", "smoke", "--kernel", "6.12", "--keep-image"],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let dir = run_dir(runs.path());
    let r = report(&dir);
    assert!(r.kernel.release.starts_with("6.12."), "{r:?}");
    assert!(
        dir.join("disk.img").exists(),
        "--keep-image keeps the image"
    );
}

/// A kernel panic ends the run as KERNEL-ERROR (exit 3) with the panic line, not as a
/// bug finding and not as our own failure.
#[test]
fn vm_kernel_panic_is_kernel_error() {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(&["run", "panic-selftest"], runs.path());
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let r = report(&run_dir(runs.path()));
    assert_eq!(r.verdict, Verdict::KernelError);
    let err = r.error.as_deref().unwrap();
    assert!(
        err.contains("Kernel panic - not syncing: sysrq triggered crash"),
        "{err}"
    );
}

/// A guest that does not answer in time: the run ends as INFRA-ERROR with a timeout that
/// names the step and shows the console tail, and QEMU is gone afterwards.
#[test]
fn vm_guest_hang_times_out_with_console_tail() {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    // One second is far too short for a migrate-mmap round under TCG: the guest "hangs".
    let o = e4race(
        &["run", "migrate-mmap", "--timeout", "1", "--rounds", "1"],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let dir = run_dir(runs.path());
    let r = report(&dir);
    let err = r.error.as_deref().unwrap();
    assert!(err.contains("timed out after 1 s waiting for"), "{err}");
    assert!(
        err.contains("e4race-agent: ready"),
        "console tail missing: {err}"
    );
    let sock_dir = socket_dir(&dir);
    let cmdline = std::fs::read_to_string(dir.join("qemu.cmdline")).unwrap();
    assert!(cmdline.contains(&sock_dir), "{cmdline}");
    // No QEMU of this run survives it.
    let ps = std::process::Command::new("pgrep")
        .args(["-f", &sock_dir])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "QEMU still running: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
}
