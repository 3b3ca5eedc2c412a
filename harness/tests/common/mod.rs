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

/// `e4race ARGS` with our agent, `runs` as the runs directory and no inherited kernel or
/// accelerator choice.
pub fn e4race_command(args: &[&str], runs: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_e4race"));
    c.args(args)
        .env("E4RACE_AGENT", env!("CARGO_BIN_EXE_e4race-agent"))
        .env("E4RACE_RUNS_DIR", runs)
        .env_remove("E4RACE_KERNEL")
        .env_remove("E4RACE_ACCEL");
    c
}

pub fn e4race_env(args: &[&str], runs: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = e4race_command(args, runs);
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

/// The run's report.json, read as the harness wrote it.
pub fn report(dir: &Path) -> e4race_report::Report {
    e4race_report::Report::read(&dir.join("report.json")).expect("report.json reads back")
}

/// What a smoke run exercised.
pub fn smoke_exercise(r: &e4race_report::Report) -> &e4race_report::SmokeExercise {
    match &r.exercise {
        Some(e4race_report::Exercise::Smoke(e)) => e,
        other => panic!("not a smoke run's exercise: {other:?}"),
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The run's socket directory, as `sockets.txt` in its run directory names it (QEMU's
/// command line contains it; the run directory's path may be too long for a socket).
pub fn socket_dir(run_dir: &Path) -> String {
    let sockets = std::fs::read_to_string(run_dir.join("sockets.txt")).expect("sockets.txt");
    sockets
        .lines()
        .find_map(|l| l.strip_prefix("socket directory: "))
        .and_then(|l| l.split(' ').next())
        .expect("sockets.txt names the socket directory")
        .to_string()
}
