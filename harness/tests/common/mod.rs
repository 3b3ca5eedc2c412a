//! Helpers for the tests that run the real `e4race` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Serializes guest boots across test threads and processes: two TCG guests on two cores
/// starve each other into timeouts.
pub struct VmLock(nix::fcntl::Flock<std::fs::File>);

pub fn vm_lock() -> VmLock {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("e4race-vm-tests.lock"))
        .expect("open lock file");
    VmLock(nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).expect("flock"))
}

pub fn e4race(args: &[&str], runs: &Path) -> Output {
    e4race_env(args, runs, &[])
}

pub fn e4race_env(args: &[&str], runs: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_e4race"));
    c.args(args)
        .env("E4RACE_AGENT", env!("CARGO_BIN_EXE_e4race-agent"))
        .env("E4RACE_RUNS_DIR", runs)
        .env_remove("E4RACE_KERNEL")
        .env_remove("E4RACE_ACCEL");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run e4race")
}

/// The only run directory under `runs`.
pub fn run_dir(runs: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(runs)
        .expect("runs dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(dirs.len(), 1, "expected one run directory: {dirs:?}");
    dirs[0].clone()
}

pub fn report(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json");
    serde_json::from_str(&text).expect("report.json parses")
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
