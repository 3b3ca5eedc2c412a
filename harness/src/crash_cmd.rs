//! `e4race crash RUN_DIR`: the crash states of a finished run's write log (crates/crash),
//! checked after journal replay, with crash.json in the run directory.

use std::path::Path;

use crash::{CrashOptions, CrashReport, StateKind};

/// Exit codes of `e4race crash`.
pub mod exit {
    /// Every crash state is consistent.
    pub const CLEAN: i32 = 0;
    /// At least one crash state failed a check.
    pub const BAD_STATE: i32 = 1;
    /// Bad arguments or a run directory without what crash states need.
    pub const USAGE: i32 = 2;
    /// A tool or the image failed (nothing was judged).
    pub const ERROR: i32 = 4;
}

/// Where the working image goes: /dev/shm (memory) when it has room for it twice over, so
/// that applying the log and the tools' reads do not go through the host file system's
/// block allocation; otherwise the run directory.
pub(crate) fn work_dir(run_dir: &Path, disk_size: u64) -> std::path::PathBuf {
    let shm = Path::new("/dev/shm");
    let room = nix::sys::statvfs::statvfs(shm)
        .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
        .unwrap_or(0);
    if room > disk_size.saturating_mul(2) {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("e4race-crash-")
            .tempdir_in(shm)
        {
            return d.keep();
        }
    }
    run_dir.to_path_buf()
}

/// Checks the crash states of `dir` and writes crash.json there.
pub fn check(
    dir: &Path,
    reorder: u32,
    seed: u64,
    max_states: usize,
) -> Result<CrashReport, crash::Error> {
    let input = crash::RunInput::from_run_dir(dir)?;
    let opts = CrashOptions {
        reorder,
        seed,
        max_states,
        from_mark: "mounted".into(),
        work_dir: work_dir(dir, input.disk_size),
        reuse_unchanged_files: !input.data_journal,
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last = std::time::Instant::now();
    let report = crash::check_log(
        &input.log,
        input.disk_size,
        &input.durability,
        &opts,
        &mut |n, seq| {
            if tty && last.elapsed().as_millis() > 500 {
                eprint!("\r  crash states: {n} checked, at log seq {seq}   ");
                last = std::time::Instant::now();
            }
        },
    )?;
    if tty {
        eprint!("\r\x1b[K");
    }
    let _ = std::fs::write(
        dir.join("crash.json"),
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    );
    Ok(report)
}

/// The summary lines.
pub fn summary(dir: &Path, r: &CrashReport) -> Vec<String> {
    let mut out = vec![format!(
        "crash states: {} checked ({} after a flush, {} with unflushed writes dropped) over {} flushes in {:.1} s ({:.1} states/s){}",
        r.states_checked,
        r.after_flush,
        r.reordered,
        r.flushes,
        r.seconds,
        r.states_per_second,
        if r.stride > 1 {
            format!("; every {}th flush, to stay within the state budget", r.stride)
        } else {
            String::new()
        }
    )];
    match r.first_bad() {
        None => out.push("crash states: all consistent".into()),
        Some(b) => {
            out.push(format!(
                "crash states: {} bad; first at log seq {}",
                r.bad.len(),
                b.state.seq
            ));
            if let StateKind::Reordered { dropped } = &b.state.kind {
                out.push(format!(
                    "  just before the flush, with {} unflushed write(s) lost (seqs {:?})",
                    dropped.len(),
                    &dropped[..dropped.len().min(8)]
                ));
            }
            if let Some(m) = &b.state.mark_before {
                out.push(format!("  after mark {m}"));
            }
            out.push(format!("  {}", b.findings.summary()));
            out.push(format!(
                "  rebuild it: {}",
                b.state.replay_command(&dir.display().to_string())
            ));
        }
    }
    out
}

/// `e4race crash RUN_DIR`.
pub fn crash_cmd(dir: &Path, reorder: u32, seed: u64, max_states: usize, json: bool) -> i32 {
    match check(dir, reorder, seed, max_states) {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                for l in summary(dir, &r) {
                    println!("{l}");
                }
                println!("  details: {}", dir.join("crash.json").display());
            }
            if r.bad.is_empty() {
                exit::CLEAN
            } else {
                exit::BAD_STATE
            }
        }
        Err(e @ (crash::Error::Log(_) | crash::Error::NoData(_) | crash::Error::RunDir(_))) => {
            eprintln!("error: {e}");
            exit::USAGE
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::ERROR
        }
    }
}

/// The state budget of `run --crash-states`: about two minutes here (20 states/s).
pub const RUN_MAX_STATES: usize = 2_000;

/// `run --crash-states`: checks the finished run's crash states (on a blocking thread) and
/// gives the report's summary and one finding per kind of problem.
pub async fn after_run(
    dir: &Path,
    reorder: u32,
    seed: u64,
    progress: &crate::progress::Progress,
) -> Result<(e4race_report::CrashSummary, Vec<e4race_report::Finding>), crash::Error> {
    progress.step(&format!(
        "checking crash states of the write log (journal replay, e2fsck, durability){}",
        if reorder > 0 {
            format!(", {reorder} reordered per flush")
        } else {
            String::new()
        }
    ));
    let d = dir.to_path_buf();
    let r = tokio::task::spawn_blocking(move || check(&d, reorder, seed, RUN_MAX_STATES))
        .await
        .map_err(|e| crash::Error::Log(format!("crash state task: {e}")))??;
    for l in summary(dir, &r) {
        progress.step(&l);
    }
    let findings = r
        .findings(&dir.display().to_string())
        .into_iter()
        .map(|c| e4race_report::Finding::new(oracles::Finding::CrashState(c)))
        .collect();
    Ok((
        e4race_report::CrashSummary {
            states_checked: r.states_checked,
            after_flush: r.after_flush,
            reordered: r.reordered,
            bad_states: r.bad.len(),
            seconds: r.seconds,
            states_per_second: r.states_per_second,
        },
        findings,
    ))
}
