//! Long paths (--runs-dir, --ext4-patch, TMPDIR) never overflow a unix socket's sun_path, and
//! run directory names stay short. No guest boots here: the runs stop, after the sockets are
//! made, at QEMU missing from an empty PATH.

mod common;
use common::*;

use std::path::{Path, PathBuf};

const SUN_PATH_MAX: usize = 108;

/// A directory under `root` whose path is at least `len` bytes long.
fn deep_dir(root: &Path, len: usize, folder: char) -> PathBuf {
    let mut p = root.to_path_buf();
    while p.as_os_str().len() < len {
        p.push(std::iter::repeat_n(folder, 30).collect::<String>());
    }
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A patch file (its content does not matter: these runs stop before it is applied).
fn write_patch(p: &Path) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, "--- a/fs/ext4/inode.c\n+++ b/fs/ext4/inode.c\n").unwrap();
}

/// The socket paths a run recorded in its sockets.txt.
fn recorded_sockets(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let text = std::fs::read_to_string(dir.join("sockets.txt")).expect("sockets.txt");
    let mut socket_dir = None;
    let mut sockets = vec![];
    for line in text.lines() {
        let (key, rest) = line.split_once(": ").expect("KEY: PATH");
        let path = PathBuf::from(rest.split(" (").next().unwrap());
        if key == "socket directory" {
            socket_dir = Some(path);
        } else {
            sockets.push(path);
        }
    }
    (socket_dir.expect("socket directory line"), sockets)
}

#[test]
fn long_runs_dir_and_patch_path_do_not_reach_the_sockets() {
    let root = tempfile::tempdir().unwrap();
    let runs = deep_dir(&root.path().join("runs"), 210, 'r');
    // A 200-character patch path.
    let mut patch = deep_dir(&root.path().join("patches"), 150, 'p')
        .to_string_lossy()
        .into_owned();
    patch.push('/');
    patch.push_str(&"q".repeat(200 - patch.len() - "/fix.patch".len()));
    patch.push_str("/fix.patch");
    assert_eq!(patch.len(), 200);
    write_patch(Path::new(&patch));
    let no_qemu = tempfile::tempdir().unwrap();
    let o = e4race_env(
        &["run", "smoke", "--ext4-patch", &patch],
        &runs,
        &[
            ("XDG_RUNTIME_DIR", ""),
            ("TMPDIR", "/tmp"),
            ("PATH", no_qemu.path().to_str().unwrap()),
        ],
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("qemu-system-x86"), "{}", text(&o));
    assert!(
        !out.contains("SUN_LEN") && !out.contains("shorter than"),
        "{out}"
    );

    let dir = run_dir(&runs);
    let name = dir.file_name().unwrap().to_str().unwrap();
    assert!(name.len() <= 80, "{name}");
    assert!(name.contains("-smoke-6.1-patch-fix-"), "{name}");
    assert_eq!(report(&dir).verdict, e4race_report::Verdict::InfraError);

    let (socket_dir, sockets) = recorded_sockets(&dir);
    assert_eq!(sockets.len(), 3, "{sockets:?}");
    for s in &sockets {
        assert!(
            s.as_os_str().len() < SUN_PATH_MAX,
            "{} is {} bytes",
            s.display(),
            s.as_os_str().len()
        );
        assert!(
            s.starts_with(&socket_dir) && !s.starts_with(&runs),
            "{}",
            s.display()
        );
    }
    assert!(
        socket_dir.to_string_lossy().starts_with("/tmp/e4race-"),
        "{}",
        socket_dir.display()
    );
    assert!(
        !socket_dir.exists(),
        "the socket directory {} outlived the run",
        socket_dir.display()
    );
}

#[test]
fn two_long_patch_paths_get_two_run_directories() {
    let root = tempfile::tempdir().unwrap();
    let runs = root.path().join("runs");
    let mut names = vec![];
    for folder in ['a', 'b'] {
        let p = deep_dir(&root.path().join(folder.to_string()), 190, folder).join("fix.patch");
        write_patch(&p);
        let no_qemu = tempfile::tempdir().unwrap();
        let o = e4race_env(
            &["run", "smoke", "--ext4-patch", p.to_str().unwrap()],
            &runs,
            &[("PATH", no_qemu.path().to_str().unwrap())],
        );
        assert_eq!(o.status.code(), Some(4), "{}", text(&o));
        let dir = run_dir(&runs);
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        names.push(name.split_once("-smoke-").unwrap().1.to_string());
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert_ne!(names[0], names[1]);
}

#[test]
fn a_too_long_tmpdir_says_to_shorten_it() {
    let root = tempfile::tempdir().unwrap();
    let runs = root.path().join("runs");
    let tmp = deep_dir(&root.path().join("tmp"), 120, 't');
    let o = e4race_env(
        &["run", "smoke"],
        &runs,
        &[("XDG_RUNTIME_DIR", ""), ("TMPDIR", tmp.to_str().unwrap())],
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("set TMPDIR to a shorter directory"),
        "{}",
        text(&o)
    );
    assert!(!out.contains("panicked"), "{out}");
    let dir = run_dir(&runs);
    assert_eq!(report(&dir).verdict, e4race_report::Verdict::InfraError);
    // Nothing was created under the long TMPDIR.
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}
