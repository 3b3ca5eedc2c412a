//! `e4race-bench crash RUN_DIR`: crash states per second of e4race's working image (one
//! image, the log applied once, journal replay taken back with e2undo; `crash::check_log`)
//! against the copy-per-state baseline (a sparse copy of the image for every flush state,
//! as fstests' `replay-log --check flush --fsck` does; `crash::check_log_copying`), on the
//! same log, in the same process, rounds alternating which goes first.

use std::path::{Path, PathBuf};

use crash::{CrashOptions, CrashReport, RunInput};
use serde::Serialize;

use crate::stats::{median, ratio};

/// What to measure.
#[derive(Debug, Clone)]
pub struct CrashBenchConfig {
    pub run_dir: PathBuf,
    pub rounds: u32,
    /// Where both methods keep their images (memory, /dev/shm, by default when it has room).
    pub work_dir: Option<PathBuf>,
}

/// One round: each method once over the whole log.
#[derive(Debug, Clone, Serialize)]
pub struct CrashRound {
    pub working_image: MethodRun,
    pub copy_per_state: MethodRun,
}

/// One method's pass over the log.
#[derive(Debug, Clone, Serialize)]
pub struct MethodRun {
    pub states: usize,
    /// States whose checks ran (the working image skips a state identical to the last one).
    pub states_run: usize,
    pub seconds: f64,
    pub states_per_second: f64,
    pub bad_states: usize,
}

impl MethodRun {
    fn of(r: &CrashReport) -> Self {
        MethodRun {
            states: r.states_checked,
            states_run: r.states_checked - r.identical,
            seconds: r.seconds,
            states_per_second: r.states_per_second,
            bad_states: r.bad.len(),
        }
    }
}

/// Every round, and the medians.
#[derive(Debug, Clone, Serialize)]
pub struct CrashBenchReport {
    pub run_dir: PathBuf,
    pub log_records: u64,
    pub flushes: usize,
    pub rounds: Vec<CrashRound>,
    pub median_working_image_states_per_second: Option<f64>,
    pub median_copy_per_state_states_per_second: Option<f64>,
    /// Median of the per-round ratios (working image / copy per state).
    pub median_ratio: Option<f64>,
    /// Both methods found the same first bad state (or none) in every round.
    pub verdicts_agree: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CrashBenchError {
    #[error("{0}")]
    Crash(#[from] crash::Error),
    #[error("cannot make a work directory in {0}: {1}")]
    WorkDir(PathBuf, #[source] std::io::Error),
}

/// Runs both methods `cfg.rounds` times on the run directory's log (after-flush states only:
/// the states the baseline can build), `progress` gets one line per pass.
pub fn run_crash_bench(
    cfg: &CrashBenchConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<CrashBenchReport, CrashBenchError> {
    let input = RunInput::from_run_dir(&cfg.run_dir)?;
    let parent = cfg
        .work_dir
        .clone()
        .unwrap_or_else(|| default_work_parent(&cfg.run_dir, input.disk_size));
    let work = tempfile::Builder::new()
        .prefix("e4race-crash-bench-")
        .tempdir_in(&parent)
        .map_err(|e| CrashBenchError::WorkDir(parent.clone(), e))?;
    let opts = CrashOptions {
        reorder: 0,
        seed: 1,
        max_states: usize::MAX,
        from_mark: "mounted".into(),
        work_dir: work.path().to_path_buf(),
        reuse_unchanged_files: !input.data_journal,
    };
    let mut rounds = Vec::new();
    let (mut agree, mut flushes, mut records) = (true, 0, 0);
    for round in 0..cfg.rounds.max(1) {
        let mut pass = |copying: bool| -> Result<CrashReport, crash::Error> {
            let f = if copying {
                crash::check_log_copying
            } else {
                crash::check_log
            };
            let r = f(
                &input.log,
                input.disk_size,
                &input.durability,
                &opts,
                &mut |_, _| {},
            )?;
            progress(&format!(
                "round {}: {} {} states in {:.1} s ({:.1} states/s)",
                round + 1,
                if copying {
                    "copy-per-state"
                } else {
                    "working-image "
                },
                r.states_checked,
                r.seconds,
                r.states_per_second
            ));
            Ok(r)
        };
        // Alternate which goes first, so page-cache warmth favours neither.
        let (w, c) = if round % 2 == 0 {
            let w = pass(false)?;
            (w, pass(true)?)
        } else {
            let c = pass(true)?;
            (pass(false)?, c)
        };
        agree &= w.first_bad() == c.first_bad();
        flushes = w.after_flush;
        records = w.records;
        rounds.push(CrashRound {
            working_image: MethodRun::of(&w),
            copy_per_state: MethodRun::of(&c),
        });
    }
    let w = median(
        rounds
            .iter()
            .map(|r| Some(r.working_image.states_per_second)),
    );
    let c = median(
        rounds
            .iter()
            .map(|r| Some(r.copy_per_state.states_per_second)),
    );
    let q = median(rounds.iter().map(|r| {
        ratio(
            Some(r.working_image.states_per_second),
            Some(r.copy_per_state.states_per_second),
        )
    }));
    Ok(CrashBenchReport {
        run_dir: cfg.run_dir.clone(),
        log_records: records,
        flushes,
        rounds,
        median_working_image_states_per_second: w,
        median_copy_per_state_states_per_second: c,
        median_ratio: q,
        verdicts_agree: agree,
    })
}

/// /dev/shm when it holds both methods' images twice over, else the run directory.
fn default_work_parent(run_dir: &Path, disk_size: u64) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let room = nix::sys::statvfs::statvfs(shm)
        .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
        .unwrap_or(0);
    if room > disk_size.saturating_mul(4) {
        shm.to_path_buf()
    } else {
        run_dir.to_path_buf()
    }
}

impl CrashBenchReport {
    /// A Markdown table: one row a round, then the medians.
    pub fn markdown(&self) -> String {
        let f = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}"));
        let mut s = format!(
            "crash states of {} ({} records, {} after-flush states)\n\n\
             | round | working image: states/s (run / all, s) | copy per state: states/s (s) | ratio |\n\
             |---|---|---|---|\n",
            self.run_dir.display(),
            self.log_records,
            self.flushes
        );
        for (i, r) in self.rounds.iter().enumerate() {
            s += &format!(
                "| {} | {:.2} ({} / {}, {:.1} s) | {:.2} ({:.1} s) | {} |\n",
                i + 1,
                r.working_image.states_per_second,
                r.working_image.states_run,
                r.working_image.states,
                r.working_image.seconds,
                r.copy_per_state.states_per_second,
                r.copy_per_state.seconds,
                f(ratio(
                    Some(r.working_image.states_per_second),
                    Some(r.copy_per_state.states_per_second)
                ))
            );
        }
        s += &format!(
            "| median | {} | {} | {} |\n\nverdicts agree: {}\n",
            f(self.median_working_image_states_per_second),
            f(self.median_copy_per_state_states_per_second),
            f(self.median_ratio),
            if self.verdicts_agree { "yes" } else { "NO" }
        );
        s
    }
}
