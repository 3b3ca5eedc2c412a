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

/// Debian 7.x splits the kernel into linux-image (a meta package), linux-binary (vmlinuz
/// under usr/lib/modules/RELEASE) and linux-modules, served from suites the tool configures
/// in its own apt state (trixie-backports here). `--kernel 7.3` must fetch all three parts and
/// boot them, with the drivers' built-in state taken from linux-base's config.
#[test]
fn vm_smoke_passes_on_debian_7_3() {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(&["run", "smoke", "--kernel", "7.3"], runs.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("PASS: smoke on 7.3."), "{out}");
    let r = report(&run_dir(runs.path()));
    assert!(r.kernel.release.starts_with("7.3."), "{r:?}");
    assert_eq!(smoke_exercise(&r).host.lost_blocks, 0);
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

/// A kernel given by path as an extracted Debian package (`dpkg-deb -x`), with the modules
/// folder as such packages have it: no modules.dep and, as in 7.x packages, no
/// modules.builtin (built-ins come from the package's boot/config-RELEASE). The run must
/// boot it and leave the user's folder as it was: the index goes into the cache.
#[test]
fn vm_smoke_boots_an_extracted_package_given_by_path() {
    let _l = vm_lock();
    // The 6.1 package, fetched (or taken from the cache) as `--kernel 6.1` does.
    let cache = e4race_guest_image::default_cache_dir();
    let k = e4race_guest_image::kernel::fetch_debian(
        e4race_guest_image::DEFAULT_SERIES,
        &cache,
        &|_: &str| {},
    )
    .expect("fetching the default Debian kernel");
    let rel = &k.release;
    let modroot = k.modules_root.clone().expect("the package has modules");
    let pkg_boot = k.image.parent().unwrap();
    // A package root of our own: links to the package's files, minus the index files.
    let user = tempfile::tempdir().unwrap();
    let boot = user.path().join("boot");
    let lm = user.path().join("lib/modules").join(rel);
    std::fs::create_dir_all(&boot).unwrap();
    std::fs::create_dir_all(&lm).unwrap();
    let link = |from: std::path::PathBuf, to: std::path::PathBuf| {
        std::os::unix::fs::symlink(from, to).unwrap();
    };
    link(k.image.clone(), boot.join(format!("vmlinuz-{rel}")));
    link(
        pkg_boot.join(format!("config-{rel}")),
        boot.join(format!("config-{rel}")),
    );
    link(modroot.join("kernel"), lm.join("kernel"));
    link(modroot.join("modules.order"), lm.join("modules.order"));
    let before: Vec<_> = std::fs::read_dir(&lm)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();

    let runs = tempfile::tempdir().unwrap();
    let vmlinuz = boot.join(format!("vmlinuz-{rel}"));
    let o = e4race(
        &[
            "run",
            "smoke",
            "--kernel",
            vmlinuz.to_str().unwrap(),
            "--modules-dir",
            user.path().to_str().unwrap(),
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = report(&run_dir(runs.path()));
    assert_eq!(r.kernel.release, *rel, "{r:?}");
    let after: Vec<_> = std::fs::read_dir(&lm)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        before, after,
        "the run wrote into the user's modules folder"
    );
}

/// Runs a tagged-file baseline (`files` files of `blocks` blocks) and checks that it passes
/// with every block acknowledged and found on the host.
fn tagged_files_pass(scenario: &str, extra: &[&str], files: usize, blocks: u64) {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let (f, b) = (files.to_string(), blocks.to_string());
    let mut args = vec!["run", scenario, "--files", &f, "--blocks", &b];
    args.extend(extra);
    let o = e4race(&args, runs.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = report(&run_dir(runs.path()));
    assert_eq!(r.verdict, Verdict::Pass);
    let Some(e4race_report::Exercise::Workload(ex)) = &r.exercise else {
        panic!("not a workload exercise: {:?}", r.exercise);
    };
    let all = files as u64 * blocks;
    assert_eq!(ex.workload, scenario);
    assert_eq!(
        (ex.files, ex.files_synced, ex.blocks_written),
        (files, files, all)
    );
    assert_eq!(ex.host.blocks_checked_on_host, all);
    assert_eq!(ex.host.lost_blocks, 0);
    assert_eq!(ex.host.e2fsck, "clean");
    // The reproduce command fixes the seed that was drawn.
    assert!(r.reproduce.contains("--seed "), "{}", r.reproduce);
}

/// fsync-only: every fsynced block is on the final image.
/// Invariant (any seed): each file's fsync(2) returned 0, so all files × blocks tagged
/// blocks are acknowledged, the host checks each one and none is lost.
#[test]
fn vm_fsync_only_finds_every_fsynced_block() {
    tagged_files_pass("fsync-only", &[], 3, 100);
}

/// msync-only, the worked example of adding a scenario: every block stored through a shared
/// mapping into a hole is on the final image once msync(MS_SYNC) and fsync returned 0.
/// Invariant (any seed, any store order): both calls succeed on a healthy disk, so every
/// store is acknowledged, the host checks each one and none is lost.
#[test]
fn vm_msync_only_finds_every_msynced_block() {
    tagged_files_pass("msync-only", &["--mount-options", "nodelalloc"], 2, 150);
}

/// extents-flip on the stock kernel: files flipped between extents and indirect blocks with
/// appends in between, sync(2) looping. Invariant (any seed): ext4_ext_migrate() and
/// ext4_ind_migrate() hold s_writepages_rwsem, so writeback never sees the flag flip, and no
/// WARNING is logged; the last version of each file is fsynced, so its appended blocks are
/// all found on the host with the last tags.
#[test]
fn vm_extents_flip_keeps_the_last_file_and_logs_nothing() {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(
        &[
            "run",
            "extents-flip",
            "--files",
            "2",
            "--iterations",
            "2000",
            "--blocks",
            "3",
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let dir = run_dir(runs.path());
    let r = report(&dir);
    assert_eq!(r.verdict, Verdict::Pass);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    let Some(e4race_report::Exercise::Workload(ex)) = &r.exercise else {
        panic!("not a workload exercise: {:?}", r.exercise);
    };
    assert_eq!((ex.files, ex.files_synced, ex.blocks_written), (2, 2, 6));
    assert_eq!(ex.host.blocks_checked_on_host, 6);
    assert_eq!(ex.host.lost_blocks, 0);
    // Every flip ran: the agent's per-file counts are on the console.
    let console = std::fs::read_to_string(dir.join("console.log")).unwrap();
    for f in ["f0", "f1"] {
        assert!(
            console.contains(&format!(
                "extents-flip: {f}: 2000 flips, chattr -e failed 0, chattr +e failed 0"
            )),
            "{console}"
        );
    }
}
