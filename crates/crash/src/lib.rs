//! Crash states from an e4race write log, checked from the host for any kernel.
//!
//! The write log holds every write in completion order, with its data (`--log-data`), and
//! every FLUSH with the seq below which it made writes durable. A crash may come at any point;
//! what the disk then holds is every durable write, plus any subset of the writes completed
//! since (a volatile write cache may lose or keep each of them, as CrashMonkey's reordering
//! allows). This crate walks the log once on one working image and checks, after the first
//! `mounted` mark:
//!
//! - the disk just after each completed FLUSH;
//! - with `reorder` N, N seeded random subsets of the unflushed writes dropped, just before
//!   each FLUSH completes.
//!
//! Each state gets journal replay (as a mount does), `e2fsck -fn`, and the durability check:
//! every block of a round the guest finished (msync + fsync, then the `round-N-done` mark)
//! holds its acknowledged tag; blocks of a round in flight hold old or new data of their own
//! block (or a torn mix of both), never another block's tag or foreign bytes. See [`check`].

mod baseline;
mod check;
mod image;
mod input;
mod power_cut;

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use writelog::{Kind, LogReader};

pub use baseline::check_log_copying;
pub use check::{Checker, Durability, StateFindings};
pub use image::WorkingImage;
pub use input::RunInput;
pub use power_cut::{check_power_cut, PowerCut};

/// Errors; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("write log: {0}")]
    Reader(#[from] writelog::Error),
    #[error(
        "{} holds no write data: crash states need a run recorded with --log-data (or --crash-states)",
        .0.display()
    )]
    NoData(PathBuf),
    #[error("the write log is inconsistent: {0}")]
    Log(String),
    /// The run directory lacks what crash states need (writes.log, plan.json) or holds
    /// something else there.
    #[error("{0}")]
    RunDir(String),
    #[error("{0} is not installed: install e2fsprogs (apt-get install e2fsprogs)")]
    ToolMissing(&'static str),
    #[error("cannot run {0}: {1}")]
    Spawn(String, #[source] std::io::Error),
    #[error("e2undo could not take back the journal replay, so the working image is no longer the log's state: {0}")]
    Undo(String),
    #[error(transparent)]
    Oracle(#[from] oracles::OracleError),
}

impl Error {
    pub(crate) fn io(path: &Path, what: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            what,
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How many states, and which.
#[derive(Debug, Clone)]
pub struct CrashOptions {
    /// Reordered states per flush epoch (0: only the states after each flush).
    pub reorder: u32,
    /// Seed of the subsets; the same seed gives the same states.
    pub seed: u64,
    /// At most this many states: past it, only every k-th flush is checked, spread over the
    /// whole log (k reported as `stride`).
    pub max_states: usize,
    /// Checking starts after the first mark of this name (before it the file system is being
    /// made, and a crash there says nothing about ext4).
    pub from_mark: String,
    /// Where the working image and the undo file go (a few hundred MiB, sparse).
    pub work_dir: PathBuf,
    /// A durable file untouched since its last check keeps its result
    /// ([`Checker::check_reusing`]). Sound unless the file system was mounted data=journal
    /// ([`RunInput::data_journal`]).
    pub reuse_unchanged_files: bool,
}

/// Which disk a crash state is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StateKind {
    /// Every write before the FLUSH at `seq`, which completed.
    AfterFlush,
    /// Just before the FLUSH at `seq` completed, with these unflushed writes (by seq) lost.
    Reordered { dropped: Vec<u64> },
}

/// One crash state and where it is in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashState {
    /// The FLUSH record the state is at.
    pub seq: u64,
    #[serde(flatten)]
    pub kind: StateKind,
    /// The last mark before it.
    pub mark_before: Option<String>,
}

impl CrashState {
    /// The `e4race replay` command that rebuilds this state (before journal replay).
    pub fn replay_command(&self, run_dir: &str) -> String {
        let drop = match &self.kind {
            StateKind::AfterFlush => String::new(),
            StateKind::Reordered { dropped } => format!(
                " --drop {}",
                dropped
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        format!(
            "e4race replay {run_dir} --to seq:{}{drop} --out crash.img",
            self.seq
        )
    }
}

/// A state that failed a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadState {
    pub state: CrashState,
    pub findings: StateFindings,
}

/// Everything checked; saved as crash.json.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CrashReport {
    pub schema: String,
    pub states_checked: usize,
    pub after_flush: usize,
    pub reordered: usize,
    /// Flushes in the checked part of the log.
    pub flushes: usize,
    /// Log records applied.
    pub records: u64,
    pub seconds: f64,
    pub states_per_second: f64,
    /// States identical to the one checked just before (no write in between, no round newly
    /// durable), so not checked again; counted in `states_checked`.
    pub identical: usize,
    /// Every `stride`-th flush was checked (1: every flush), to stay within `max_states`.
    pub stride: usize,
    /// Every bad state, in log order (the first is the one to look at).
    pub bad: Vec<BadState>,
}

pub const SCHEMA: &str = "e4race-crash/1";

impl CrashReport {
    pub fn first_bad(&self) -> Option<&BadState> {
        self.bad.first()
    }

    /// One finding per kind of problem: its first bad state, and how many states had it.
    pub fn findings(&self, run_dir: &str) -> Vec<oracles::CrashStateFinding> {
        let mut out: Vec<oracles::CrashStateFinding> = Vec::new();
        for b in &self.bad {
            let problem = b.findings.problem();
            if let Some(f) = out.iter_mut().find(|f| f.problem == problem) {
                f.states += 1;
                continue;
            }
            let (state, dropped) = match &b.state.kind {
                StateKind::AfterFlush => ("after-flush", 0),
                StateKind::Reordered { dropped } => ("reordered", dropped.len()),
            };
            out.push(oracles::CrashStateFinding {
                seq: b.state.seq,
                state: state.into(),
                dropped_writes: dropped,
                mark_before: b.state.mark_before.clone(),
                problem,
                detail: b.findings.summary(),
                states: 1,
                replay: b.state.replay_command(run_dir),
            });
        }
        out
    }
}

/// Walks `log` (recorded with data) from a zeroed disk of `disk_size` bytes and checks every
/// crash state `opts` asks for. `progress` gets (states checked, seq reached).
pub fn check_log(
    log: &Path,
    disk_size: u64,
    durability: &Durability,
    opts: &CrashOptions,
    progress: &mut dyn FnMut(usize, u64),
) -> Result<CrashReport> {
    let start = Instant::now();
    let mut reader = LogReader::open(log)?;
    if !reader.header().has_data {
        return Err(Error::NoData(log.to_path_buf()));
    }
    let ss = reader.header().sector_size;
    let stride = stride(log, opts)?;
    let img_path = opts.work_dir.join("crash-state.img");
    let mut img = WorkingImage::create(&img_path, disk_size, ss)?;
    let checker = Checker::new(opts.work_dir.join("crash-state.e2undo"))?;
    let mut d = durability.clone();
    d.done_at.clear();
    let mut report = CrashReport {
        schema: SCHEMA.into(),
        stride,
        ..Default::default()
    };
    let mut checking = false;
    // Records applied and rounds durable when the last after-flush state was checked.
    let mut last_checked: Option<(u64, usize)> = None;
    let mut last_mark: Option<String> = None;
    let mut writes_applied = 0u64;
    // Each check is told which blocks changed since the one before (Checker::check_reusing).
    let check = |img: &WorkingImage, d: &Durability, seq: u64| {
        let changed = img.take_changed();
        if opts.reuse_unchanged_files {
            checker.check_reusing(img.path(), seq, d, &changed)
        } else {
            checker.check(img.path(), seq, d)
        }
    };
    for rec in reader.by_ref() {
        let rec = rec?;
        report.records += 1;
        if matches!(rec.kind, Kind::Write | Kind::Discard | Kind::WriteZeroes) {
            writes_applied += 1;
        }
        match rec.kind {
            Kind::Write => {
                let data = rec
                    .data
                    .as_deref()
                    .ok_or_else(|| Error::Log(format!("write {} has no data", rec.seq)))?;
                img.apply(rec.seq, rec.sector, u64::from(rec.len), Some(data))?;
            }
            Kind::Discard | Kind::WriteZeroes => {
                img.apply(rec.seq, rec.sector, u64::from(rec.len), None)?;
            }
            Kind::Mark => {
                let name = rec.mark.clone().unwrap_or_default();
                if let Some(n) = round_done(&name) {
                    d.done_at.insert(n, rec.seq);
                }
                checking |= name == opts.from_mark;
                last_mark = Some(name);
            }
            Kind::Flush => {
                let Some(covers) = rec.flush_covers() else {
                    continue; // a failed flush made nothing durable
                };
                if checking {
                    report.flushes += 1;
                }
                let checking = checking && report.flushes % stride == 0;
                if checking {
                    let state = |kind| CrashState {
                        seq: rec.seq,
                        kind,
                        mark_before: last_mark.clone(),
                    };
                    for dropped in subsets(img.epoch().len(), opts, rec.seq) {
                        let seqs = dropped.iter().map(|&i| img.epoch()[i].seq).collect();
                        let undo = img.drop_writes(&dropped)?;
                        let f = check(&img, &d, rec.seq)?;
                        img.restore(undo)?;
                        report.reordered += 1;
                        report.states_checked += 1;
                        if !f.is_clean() {
                            report.bad.push(BadState {
                                state: state(StateKind::Reordered { dropped: seqs }),
                                findings: f,
                            });
                        }
                    }
                }
                img.flushed(covers);
                if checking {
                    let key = (writes_applied, d.durable_count(rec.seq));
                    report.after_flush += 1;
                    report.states_checked += 1;
                    if last_checked == Some(key) {
                        report.identical += 1;
                        continue;
                    }
                    last_checked = Some(key);
                    let f = check(&img, &d, rec.seq)?;
                    if !f.is_clean() {
                        report.bad.push(BadState {
                            state: CrashState {
                                seq: rec.seq,
                                kind: StateKind::AfterFlush,
                                mark_before: last_mark.clone(),
                            },
                            findings: f,
                        });
                    }
                    progress(report.states_checked, rec.seq);
                }
            }
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.states_per_second = report.states_checked as f64 / report.seconds.max(1e-9);
    let _ = std::fs::remove_file(&img_path);
    Ok(report)
}

/// Which flushes to check so that at most `opts.max_states` states are: every one, or every
/// k-th (a first pass over the log counts the flushes after `from_mark`).
fn stride(log: &Path, opts: &CrashOptions) -> Result<usize> {
    let mut reader = LogReader::open(log)?;
    let (mut on, mut flushes) = (false, 0usize);
    for rec in reader.by_ref() {
        let rec = rec?;
        on |= rec.kind == Kind::Mark && rec.mark.as_deref() == Some(opts.from_mark.as_str());
        if on && rec.flush_covers().is_some() {
            flushes += 1;
        }
    }
    let per_flush = 1 + opts.reorder as usize;
    Ok(flushes
        .saturating_mul(per_flush)
        .div_ceil(opts.max_states.max(1))
        .max(1))
}

/// `round-N-done` → N.
fn round_done(mark: &str) -> Option<u32> {
    mark.strip_prefix("round-")?
        .strip_suffix("-done")?
        .parse()
        .ok()
}

/// `opts.reorder` seeded subsets of an epoch of `n` writes to drop (each write lost with
/// probability 1/2, never none), the same for the same seed and flush.
fn subsets(n: usize, opts: &CrashOptions, flush_seq: u64) -> Vec<Vec<usize>> {
    if n == 0 || opts.reorder == 0 {
        return vec![];
    }
    let mut rng =
        ChaCha8Rng::seed_from_u64(opts.seed ^ flush_seq.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    (0..opts.reorder)
        .map(|_| {
            let mut s: Vec<usize> = (0..n).filter(|_| rng.gen_bool(0.5)).collect();
            if s.is_empty() {
                s.push(rng.gen_range(0..n));
            }
            s
        })
        .fold(Vec::new(), |mut all: Vec<Vec<usize>>, s| {
            // A small epoch draws the same subset again: check each once.
            if !all.contains(&s) {
                all.push(s);
            }
            all
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(reorder: u32, seed: u64) -> CrashOptions {
        CrashOptions {
            reorder,
            seed,
            max_states: usize::MAX,
            from_mark: "mounted".into(),
            work_dir: PathBuf::from("/nonexistent"),
            reuse_unchanged_files: true,
        }
    }

    #[test]
    fn subsets_are_reproducible_bounded_and_never_empty() {
        let a = subsets(10, &opts(4, 7), 100);
        assert_eq!(a, subsets(10, &opts(4, 7), 100));
        assert_ne!(a, subsets(10, &opts(4, 8), 100));
        assert!(a.len() <= 4 && !a.is_empty());
        assert!(
            subsets(1, &opts(4, 7), 100).len() == 1,
            "one write has one subset to drop"
        );
        assert!(a.iter().all(|s| !s.is_empty() && s.iter().all(|&i| i < 10)));
        assert!(subsets(0, &opts(4, 7), 100).is_empty());
        assert!(subsets(3, &opts(0, 7), 100).is_empty());
    }

    #[test]
    fn round_marks_parse() {
        assert_eq!(round_done("round-3-done"), Some(3));
        assert_eq!(round_done("round-x-done"), None);
        assert_eq!(round_done("workload-done"), None);
    }
}
