//! Helpers shared by the test suites of several crates. Only ever a `[dev-dependencies]`
//! entry; a helper one suite alone uses stays in that suite.
//!
//! * [`pattern`]: data that differs for every seed and position.
//! * [`proptest_config`]: the proptest settings of the property suites.
//! * [`e2fsprogs_tool`], [`mkfs`], [`debugfs`]: real ext4 images made with e2fsprogs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `len` pseudo-random bytes from `seed` (xorshift), different for every seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `cases` cases, and no failure files written into the source tree (a failing case is
/// printed; the fuzz targets keep the regressions).
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..Default::default()
    }
}

/// mkfs.ext4 options that give indirect-mapped files (docs/facts.md §5).
pub const INDIRECT_OPTS: &[&str] = &["-O", "^extent,^64bit,^flex_bg,^huge_file,^metadata_csum"];

/// An e2fsprogs program (mkfs.ext4, debugfs, e2fsck) in PATH, /usr/sbin or /sbin; panics
/// saying what to install when it is missing.
pub fn e2fsprogs_tool(name: &str) -> PathBuf {
    host_tools::find_host_tool(name)
        .unwrap_or_else(|| panic!("{name} not found: install the Debian package e2fsprogs"))
}

/// `mkfs.ext4 -q -F -b 4096 OPTS -d STAGING IMG SIZE`: a 4 KiB-block image holding the files
/// under `staging`; `size` as mkfs takes it (`64M`).
pub fn mkfs(img: &Path, staging: &Path, opts: &[&str], size: &str) {
    let out = Command::new(e2fsprogs_tool("mkfs.ext4"))
        .args(["-q", "-F", "-b", "4096"])
        .args(opts)
        .arg("-d")
        .arg(staging)
        .arg(img)
        .arg(size)
        .output()
        .expect("run mkfs.ext4");
    assert!(
        out.status.success(),
        "mkfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `debugfs [-w] -R CMD IMG`'s standard output; `write` opens the image read-write.
pub fn debugfs(img: &Path, write: bool, cmd: &str) -> String {
    let mut c = Command::new(e2fsprogs_tool("debugfs"));
    if write {
        c.arg("-w");
    }
    let out = c.arg("-R").arg(cmd).arg(img).output().expect("run debugfs");
    assert!(out.status.success(), "debugfs {cmd}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `debugfs -w -f - IMG` fed `script` (one command a line) on stdin; its standard output.
pub fn debugfs_script(img: &Path, script: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(e2fsprogs_tool("debugfs"))
        .args(["-w", "-f", "-"])
        .arg(img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run debugfs");
    child
        .stdin
        .take()
        .expect("debugfs's stdin")
        .write_all(script.as_bytes())
        .expect("feed debugfs");
    let out = child.wait_with_output().expect("wait for debugfs");
    assert!(out.status.success(), "debugfs -f {script:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_depends_on_seed_and_length() {
        assert_eq!(pattern(7, 4096), pattern(7, 4096));
        assert_ne!(pattern(7, 4096), pattern(8, 4096));
        assert_eq!(pattern(7, 100), pattern(7, 4096)[..100]);
        // Seeds 256 apart differ too (a seed cut to u8 would not).
        assert_ne!(pattern(1, 512), pattern(257, 512));
        // Not constant within a sector.
        let p = pattern(3, 512);
        assert!(p.iter().any(|&b| b != p[0]));
    }

    #[test]
    fn proptest_config_writes_no_failure_files() {
        let c = proptest_config(17);
        assert_eq!(c.cases, 17);
        assert!(c.failure_persistence.is_none());
    }

    #[test]
    fn mkfs_and_debugfs_make_and_read_an_image() {
        if host_tools::find_host_tool("mkfs.ext4").is_none() {
            eprintln!("skipped: e2fsprogs is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let st = dir.path().join("st");
        std::fs::create_dir(&st).unwrap();
        std::fs::write(st.join("hello"), pattern(1, 5000)).unwrap();
        let img = dir.path().join("disk.img");
        mkfs(&img, &st, INDIRECT_OPTS, "4M");
        let stat = debugfs(&img, false, "stat /hello");
        assert!(stat.contains("Size: 5000"), "{stat}");
        assert!(stat.contains("BLOCKS:"), "indirect map expected: {stat}");
    }
}
