//! Real builds against Debian's packages. The heavy ones are `#[ignore]`d: they download
//! ~400 MB on a cold cache and compile ext4 (~1 min on 2 cores). Run them with
//! `cargo test -p e4race-mutant -- --include-ignored`.
//!
//! Environment: `E4RACE_MUTANT_TEST_CACHE` (default: the user's cache, so downloads are shared
//! with real runs), `E4RACE_TEST_KERNEL_6_1` / `E4RACE_TEST_KERNEL_6_12` (default: the newest
//! release apt knows).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mutant::{
    build_ext4_module, default_cache_dir, module_vermagic, newest_kernel_release, BuildError,
    BuildRequest, Mutant,
};

fn mutants_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../vm-images/mutants")
}

fn cache() -> PathBuf {
    std::env::var_os("E4RACE_MUTANT_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(default_cache_dir)
}

fn release(series: &str) -> String {
    let var = format!("E4RACE_TEST_KERNEL_{}", series.replace('.', "_"));
    std::env::var(var).unwrap_or_else(|_| {
        newest_kernel_release(series, &mutant::default_archive()).expect("apt knows the series")
    })
}

fn log(s: &str) {
    eprintln!("[mutant] {s}");
}

/// The stock module's vermagic, extracted here independently of the library's own check.
fn stock_vermagic(cache: &Path, release: &str) -> String {
    let debs = cache.join("debs");
    let deb = std::fs::read_dir(&debs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(&format!("linux-image-{release}_")) && n.ends_with(".deb")
        })
        .expect("the build downloaded linux-image");
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' --wildcards '*/kernel/fs/ext4/ext4.ko*'",
        deb.display(),
        dir.path().display()
    );
    assert!(Command::new("sh")
        .args(["-c", &script])
        .status()
        .unwrap()
        .success());
    let out = Command::new("sh")
        .args([
            "-c",
            &format!(
                "modinfo -F vermagic $(find '{}' -name 'ext4.ko*')",
                dir.path().display()
            ),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Builds the mutant's patch for `series` for real (a unique first line in the patch header
/// gives a fresh cache key, so the build is not skipped), checks the module, then checks that
/// asking again hits the cache.
fn build_mutant(series: &str) {
    let m = Mutant::find(&mutants_root(), "migrate-flag-clear").unwrap();
    assert_eq!(m.reverts, "ext4: Fix race between migration and mmap write");
    let original = std::fs::read_to_string(m.patch_for(series).unwrap()).unwrap();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let tmp = tempfile::tempdir().unwrap();
    let patch = tmp.path().join(format!("{series}.patch"));
    std::fs::write(&patch, format!("test build {nanos}\n{original}")).unwrap();

    let cache = cache();
    let release = release(series);
    let req = BuildRequest::new(&release, series, &patch, &cache);
    let t = Instant::now();
    let ko = build_ext4_module(&req, &log).unwrap();
    eprintln!(
        "built {} for {release} in {:.0} s",
        ko.display(),
        t.elapsed().as_secs_f64()
    );
    assert!(ko.is_file());
    let bytes = std::fs::read(&ko).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert!(
        bytes.len() < 8 << 20,
        "debug info was not stripped ({} bytes)",
        bytes.len()
    );
    let ours = module_vermagic(&ko).unwrap();
    assert_eq!(ours, stock_vermagic(&cache, &release));
    assert!(ours.starts_with(&format!("{release} ")), "{ours}");
    let dir = ko.parent().unwrap().to_path_buf();
    for f in ["make.log", "patch.log", "build-info.txt", "patch.diff"] {
        assert!(dir.join(f).is_file(), "{f} kept");
    }

    let t = Instant::now();
    let messages = std::cell::RefCell::new(Vec::new());
    let again =
        build_ext4_module(&req, &|s: &str| messages.borrow_mut().push(s.to_string())).unwrap();
    assert_eq!(again, ko);
    assert!(
        t.elapsed().as_secs() < 5,
        "cache hit took {:?}",
        t.elapsed()
    );
    assert!(messages.borrow().iter().any(|s| s.contains("cached")));

    // The unique test patch would never be asked for again.
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
#[ignore = "downloads Debian packages and compiles ext4 (~1 min)"]
fn builds_migrate_flag_clear_for_6_1() {
    build_mutant("6.1");
}

#[test]
#[ignore = "downloads Debian packages and compiles ext4 (~1 min)"]
fn builds_migrate_flag_clear_for_6_12() {
    build_mutant("6.12");
}

#[test]
#[ignore = "downloads linux-source-6.1 (~140 MB) on a cold cache"]
fn patch_that_does_not_apply_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let patch = tmp.path().join("stale.patch");
    std::fs::write(
        &patch,
        "--- a/fs/ext4/inode.c\n+++ b/fs/ext4/inode.c\n@@ -1,3 +1,3 @@\n \
         this line\n-is not\n+in ext4\n at all\n",
    )
    .unwrap();
    let req = BuildRequest::new(release("6.1"), "6.1", &patch, cache());
    let err = build_ext4_module(&req, &log).unwrap_err();
    match &err {
        BuildError::PatchDoesNotApply {
            patch: p, output, ..
        } => {
            assert_eq!(p, &patch);
            assert!(output.contains("FAILED"), "{output}");
        }
        other => panic!("expected PatchDoesNotApply, got {other}"),
    }
    let msg = err.to_string();
    eprintln!("{msg}");
    if let BuildError::PatchDoesNotApply { log, .. } = &err {
        assert!(log.is_file());
        std::fs::remove_dir_all(log.parent().unwrap()).unwrap();
    }
    assert!(msg.contains(&patch.display().to_string()), "{msg}");
    assert!(msg.contains("does not apply"), "{msg}");
}

#[test]
fn unreadable_patch_and_bad_request_fail_before_any_download() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.patch");
    let req = BuildRequest::new("6.1.0-56-amd64", "6.1", &missing, tmp.path());
    let err = build_ext4_module(&req, &log).unwrap_err();
    assert!(matches!(err, BuildError::PatchUnreadable { .. }), "{err}");
    assert!(err.to_string().contains("missing.patch"));

    let req = BuildRequest::new("6.12.117+deb12-amd64", "6.1", &missing, tmp.path());
    let err = build_ext4_module(&req, &log).unwrap_err();
    assert!(matches!(err, BuildError::InvalidRequest(_)), "{err}");
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing cached"
    );
}

#[test]
fn the_shipped_mutants_load() {
    let all = mutant::list(&mutants_root()).unwrap();
    let m = all
        .iter()
        .find(|m| m.name == "migrate-flag-clear")
        .expect("migrate-flag-clear is shipped");
    assert_eq!(m.kernels, ["6.1", "6.12", "7.3"]);
    assert_eq!(m.scenario, "migrate-mmap");
    for series in &m.kernels {
        let text = std::fs::read_to_string(m.patch_for(series).unwrap()).unwrap();
        assert!(text.contains("--- a/fs/ext4/inode.c"), "{series}");
        assert!(
            text.contains("-\t\t\text4_clear_inode_state(inode, EXT4_STATE_EXT_MIGRATE);"),
            "{series}: the patch removes the clearing"
        );
    }
}

/// vm-images/fixes/migrate-keep-swap-error: one mail per series, each with a kernel-style
/// message and a diff that only touches ext4_ext_migrate()'s credit check.
#[test]
fn the_shipped_migrate_fix_is_a_patch_mail_per_series() {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../vm-images/fixes/migrate-keep-swap-error");
    for series in ["6.1", "6.12", "7.3"] {
        let text = std::fs::read_to_string(dir.join(format!("{series}.patch"))).unwrap();
        assert!(text.starts_with("Subject: [PATCH"), "{series}");
        assert!(
            text.contains(
                "\nFixes: a413036791d0 (\"ext4: Provide function to handle transaction restarts\")\n"
            ),
            "{series}"
        );
        assert!(
            text.contains("e4race run migrate-mmap --kernel 7.3"),
            "{series}"
        );
        let files: Vec<&str> = text.lines().filter(|l| l.starts_with("+++ ")).collect();
        assert!(
            !files.is_empty() && files.iter().all(|f| *f == "+++ b/fs/ext4/migrate.c"),
            "{series}: {files:?}"
        );
        // 6.12 and later also need finish_range() not to return the restart's 1 (2/2).
        let finish_range = text.contains("Subject: [PATCH 2/2] ext4: don't take a restarted")
            && text.contains("+\tretval = 0;\n \tpath = ext4_ext_insert_extent(");
        assert_eq!(finish_range, series != "6.1", "{series}");
        assert!(
            text.contains("-\tretval = ext4_journal_ensure_credits(handle, 1, 0);")
                && text.contains("+\tretval2 = ext4_journal_ensure_credits(handle, 1, 0);"),
            "{series}: the credit check no longer overwrites retval"
        );
    }
}

/// The mutant's 6.1 patch with a unique header line and, if `break_build`, an `#error` that
/// keeps the hunk's line counts (the comment that follows it still closes).
fn variant_of_6_1_patch(dir: &Path, break_build: bool) -> PathBuf {
    let m = Mutant::find(&mutants_root(), "migrate-flag-clear").unwrap();
    let mut text = std::fs::read_to_string(m.patch_for("6.1").unwrap()).unwrap();
    if break_build {
        assert!(text.contains("+\t\t/*\n"));
        text = text.replacen(
            "+\t\t/*\n",
            "+#error deliberate e4race test failure /*\n",
            1,
        );
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let patch = dir.join("variant.patch");
    std::fs::write(&patch, format!("test variant {nanos}\n{text}")).unwrap();
    patch
}

#[test]
#[ignore = "compiles part of ext4 (~20 s)"]
fn compile_error_gives_build_failed_with_log() {
    let tmp = tempfile::tempdir().unwrap();
    let patch = variant_of_6_1_patch(tmp.path(), true);
    let req = BuildRequest::new(release("6.1"), "6.1", &patch, cache());
    let err = build_ext4_module(&req, &log).unwrap_err();
    eprintln!("{err}");
    let BuildError::BuildFailed { log, tail, .. } = &err else {
        panic!("expected BuildFailed, got {err}");
    };
    assert!(tail.contains("deliberate e4race test failure"), "{tail}");
    assert!(log.is_file());
    assert!(err.to_string().contains(&log.display().to_string()));
    std::fs::remove_dir_all(log.parent().unwrap()).unwrap();
}

#[test]
#[ignore = "compiles ext4 for 6.1 (~1 min), and for 6.12 on a cold cache"]
fn vermagic_mismatch_is_refused() {
    // A 6.12 module plays the part of the "stock" module of a 6.1 kernel.
    let m = Mutant::find(&mutants_root(), "migrate-flag-clear").unwrap();
    let other = BuildRequest::new(
        release("6.12"),
        "6.12",
        m.patch_for("6.12").unwrap(),
        cache(),
    );
    let other_ko = build_ext4_module(&other, &log).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let patch = variant_of_6_1_patch(tmp.path(), false);
    let mut req = BuildRequest::new(release("6.1"), "6.1", &patch, cache());
    req.stock_module = Some(other_ko);
    let err = build_ext4_module(&req, &log).unwrap_err();
    eprintln!("{err}");
    let BuildError::VermagicMismatch {
        module,
        built,
        stock,
        ..
    } = &err
    else {
        panic!("expected VermagicMismatch, got {err}");
    };
    assert!(built.starts_with(&release("6.1")));
    assert!(stock.starts_with(&release("6.12")));
    std::fs::remove_dir_all(module.parent().unwrap()).unwrap();
}
