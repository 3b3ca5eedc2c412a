//! Bad input gets a clear message and a report, never a traceback. No guest boots here.

mod common;
use common::*;

/// Usage errors found before anything runs: exit 2, the reason on stderr, no run directory.
fn usage_error(args: &[&str]) -> String {
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(args, runs.path());
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
    assert_eq!(
        std::fs::read_dir(runs.path()).unwrap().count(),
        0,
        "{args:?}"
    );
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn unknown_kernel_lists_the_available_ones() {
    let err = usage_error(&["run", "smoke", "--kernel", "/no/such/bzImage"]);
    assert!(err.contains("unknown kernel '/no/such/bzImage'"), "{err}");
    assert!(err.contains("6.1") && err.contains("6.12"), "{err}");
    // A series apt has no package for is refused too, before any download.
    let err = usage_error(&["run", "smoke", "--kernel", "9.9"]);
    assert!(err.contains("9.9") && err.contains("6.12"), "{err}");
}

#[test]
fn unknown_mutant_and_missing_patch_are_usage_errors() {
    let err = usage_error(&["run", "migrate-mmap", "--mutant", "no-such-mutant"]);
    assert!(
        err.contains("no-such-mutant") && err.contains("migrate-flag-clear"),
        "{err}"
    );
    let err = usage_error(&["run", "migrate-mmap", "--ext4-patch", "/no/such/fix.patch"]);
    assert!(err.contains("/no/such/fix.patch"), "{err}");
    let err = usage_error(&["run", "smoke", "--cpus", "0"]);
    assert!(err.contains("--cpus"), "{err}");
}

#[test]
fn missing_qemu_names_the_package() {
    let runs = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let path = empty.path().to_str().unwrap();
    let o = e4race_env(&["run", "smoke"], runs.path(), &[("PATH", path)]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("qemu-system-x86"), "{out}");
}

#[test]
fn user_kernel_without_drivers_names_the_config_options() {
    // A "bzImage" whose modules folder lacks the drivers and lists none as built in.
    let runs = tempfile::tempdir().unwrap();
    let k = tempfile::tempdir().unwrap();
    let bz = k.path().join("bzImage");
    std::fs::write(&bz, b"not really a kernel").unwrap();
    let md = k.path().join("lib/modules/6.99.0");
    std::fs::create_dir_all(&md).unwrap();
    std::fs::write(md.join("modules.order"), "").unwrap();
    std::fs::write(md.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
    std::fs::write(md.join("modules.dep"), "").unwrap();
    let o = e4race(
        &[
            "run",
            "smoke",
            "--kernel",
            bz.to_str().unwrap(),
            "--modules-dir",
            k.path().to_str().unwrap(),
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("CONFIG_VIRTIO_BLK") && out.contains("CONFIG_VIRTIO_PCI"),
        "{out}"
    );
    assert!(!out.contains("CONFIG_EXT4_FS"), "ext4 is built in: {out}");
}

#[test]
fn help_teaches() {
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(&["run", "--help"], runs.path());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Exit codes: 0 PASS, 1 BUG-FOUND"), "{out}");
    assert!(out.contains("migrate-mmap"), "{out}");
}

/// Zero rounds, files or sizes are refused as usage errors (exit 2, no run directory),
/// not quietly raised to 1. (`--writers 0` is valid: the remapping runs alone.)
#[test]
fn zero_counts_are_usage_errors() {
    for (scenario, flag) in [
        ("migrate-mmap", "--rounds"),
        ("migrate-mmap", "--files"),
        ("migrate-mmap", "--size-mib"),
        ("defrag-mmap", "--files"),
        ("defrag-mmap", "--move-blocks"),
        ("defrag-mmap", "--rounds"),
    ] {
        let runs = tempfile::tempdir().unwrap();
        let o = e4race(&["run", scenario, flag, "0"], runs.path());
        assert_eq!(
            o.status.code(),
            Some(2),
            "{scenario} {flag} 0: {}",
            text(&o)
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(flag),
            "{}",
            text(&o)
        );
        assert_eq!(std::fs::read_dir(runs.path()).unwrap().count(), 0);
    }
}

#[test]
fn a_bad_known_issues_file_is_a_usage_error() {
    let err = usage_error(&["run", "smoke", "--known-issues", "/no/such/known.toml"]);
    assert!(
        err.contains("cannot read the known-issues file /no/such/known.toml"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("k.toml");
    std::fs::write(
        &bad,
        "[[issue]]\nid = \"x\"\ntitle = \"t\"\nsignatures = [\"x\"]\n",
    )
    .unwrap();
    let err = usage_error(&["run", "smoke", "--known-issues", bad.to_str().unwrap()]);
    assert!(err.contains("SCENARIO/CLASS/KEY"), "{err}");
}

/// `--bisect` never reports "bad" for a commit it could not test: a missing kernel (the
/// commit did not build) and an infrastructure failure are skips (125), and a usage error
/// that no commit can fix aborts the bisect (128).
#[test]
fn bisect_skips_what_cannot_be_tested() {
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(
        &["run", "smoke", "--kernel", "/no/such/bzImage", "--bisect"],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    let empty = tempfile::tempdir().unwrap();
    let o = e4race_env(
        &["run", "smoke", "--bisect"],
        runs.path(),
        &[("PATH", empty.path().to_str().unwrap())],
    );
    assert_eq!(o.status.code(), Some(125), "INFRA-ERROR: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("INFRA-ERROR"));
    let o = e4race(
        &[
            "run",
            "smoke",
            "--known-issues",
            "/no/such.toml",
            "--bisect",
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(128), "{}", text(&o));
}

/// `--runs N` repeats the run, each with its own directory, and sums the verdicts up.
#[test]
fn runs_repeat_and_the_worst_verdict_decides() {
    let runs = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let o = e4race_env(
        &["run", "--runs", "3", "smoke", "--bisect"],
        runs.path(),
        &[("PATH", empty.path().to_str().unwrap())],
    );
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("3 runs: 3 INFRA-ERROR"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read_dir(runs.path()).unwrap().count(), 3);
}

/// `e4race crash` on a folder that is no run directory, or on a run without write data:
/// exit 2 and what is missing.
#[test]
fn crash_states_of_something_that_is_not_a_recorded_run_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let e = usage_error(&["crash", &d]);
    assert!(
        e.contains("has no writes.log") && e.contains("--log-data"),
        "{e}"
    );
    assert!(!e.contains("inconsistent"), "{e}");
    // A writes.log without plan.json.
    std::fs::write(dir.path().join("writes.log"), b"").unwrap();
    let e = usage_error(&["crash", &d]);
    assert!(e.contains("plan.json"), "{e}");
}
