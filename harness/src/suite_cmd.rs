//! `e4race suite FILE` and `e4race merge DIR...`: many runs as one CI job (crates/suite),
//! with parallel guests and shards.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use suite::{JobResult, Shard, Suite, SuiteResult};

use crate::config::RunConfig;
use crate::progress::Progress;
use crate::run;
use crate::scenarios::ScenarioPlan;

/// Builds one run from the words of `e4race run ...` (cli::parse_run; passed in so that
/// the runner does not depend on the command line module that defines its arguments).
pub type RunParser = fn(&[String]) -> Result<(RunConfig, ScenarioPlan), String>;

#[derive(Debug, Clone, clap::Args)]
pub struct SuiteArgs {
    /// The suite file (TOML), e.g. suites/quick.toml or suites/full.toml; its format is in
    /// suites/README.md.
    pub file: PathBuf,
    /// Run only the K-th of N deterministic parts of the suite (CI matrix jobs), e.g. 2/4.
    /// A job's part depends on nothing but the job, so adding entries moves no other job.
    /// Merge the parts' output folders with `e4race merge`.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
    /// Guests at once [default: host cores / vCPUs per guest, at least 1]. Two TCG guests on
    /// two cores starve each other; give each guest --cpus 1 in run-args to run 2 there.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// Output folder: runs/, suite.json, summary.txt, junit.xml, index.html
    /// [default: runs/suite-NAME-TIME].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Extra options for every run (e.g. "--accel tcg --cpus 1").
    #[arg(long, allow_hyphen_values = true)]
    pub run_args: Option<String>,
    /// Print the jobs (of the shard) and exit.
    #[arg(long)]
    pub list: bool,
    /// Options for every run that are not part of the jobs' keys (so not of their shard):
    /// validate's --mutants-dir, a host path.
    #[arg(skip)]
    pub fixed_args: Vec<String>,
}

pub async fn suite(args: SuiteArgs, parse_run: RunParser) -> i32 {
    let s = match Suite::load(&args.file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if args.list {
        print_jobs(&s, args.shard);
        return 0;
    }
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!(
            "suite-{}-{}",
            s.name,
            chrono::Local::now().format("%Y-%m-%dT%H-%M-%S")
        ))
    });
    match run_suite(&s, &args, &out, parse_run).await {
        Ok(result) => finish(&result, &out),
        Err(code) => code,
    }
}

/// `--list`: the jobs of `s` in `shard`, one `KEY<TAB>e4race ARGS` line each.
pub fn print_jobs(s: &Suite, shard: Option<Shard>) {
    for j in shard_jobs(s, shard) {
        println!("{}\te4race {}", j.key, j.argv.join(" "));
    }
}

/// The jobs of `s` in `shard` (all without one).
fn shard_jobs(s: &Suite, shard: Option<Shard>) -> Vec<suite::Job> {
    s.jobs()
        .into_iter()
        .filter(|j| shard.is_none_or(|sh| sh.contains(&j.key)))
        .collect()
}

/// Runs the jobs of `s` (of `args.shard`), `args.jobs` guests at once, with their run
/// directories under `out/runs`. Err: the exit code when a job's options are refused.
pub async fn run_suite(
    s: &Suite,
    args: &SuiteArgs,
    out: &Path,
    parse_run: RunParser,
) -> Result<SuiteResult, i32> {
    let jobs = shard_jobs(s, args.shard);
    let out = out.to_path_buf();
    let runs_dir = out.join("runs");
    // Every job's options are checked before the first guest boots.
    let mut planned = Vec::new();
    for j in &jobs {
        let mut argv = j.argv.clone();
        argv.extend([
            "--runs-dir".into(),
            runs_dir.display().to_string(),
            "-q".into(),
        ]);
        argv.extend(args.fixed_args.iter().cloned());
        if let Some(extra) = &args.run_args {
            argv.extend(extra.split_whitespace().map(str::to_string));
        }
        match parse_run(&argv) {
            Ok((config, plan)) => planned.push((j.clone(), config, plan)),
            Err(e) => {
                eprintln!("error: {}: {e}", j.key);
                return Err(2);
            }
        }
    }
    let cpus = planned.first().map_or(2, |(_, c, _)| c.cpus.max(1));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let parallel = args.jobs.unwrap_or((cores / cpus).max(1)) as usize;
    let progress = Progress::new(false);
    progress.step(&format!(
        "suite {}: {} runs{}, {parallel} at a time; output in {}",
        s.name,
        planned.len(),
        args.shard
            .map(|sh| format!(" (shard {sh} of {} in all)", s.jobs().len()))
            .unwrap_or_default(),
        out.display()
    ));
    let mut result = SuiteResult::new(s, args.shard);
    let total = planned.len();
    let display = SuiteDisplay::new(total, progress);
    let out_for_tasks = out.clone();
    // The run future is not Send (progress callbacks), so the guests share this thread:
    // they are I/O-bound on the host side (QEMU does the work in its own processes).
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
    let local = tokio::task::LocalSet::new();
    let done = local
        .run_until(async move {
            let mut set = tokio::task::JoinSet::new();
            for (i, (job, config, plan)) in planned.into_iter().enumerate() {
                let sem = sem.clone();
                let display = display.clone();
                set.spawn_local(async move {
                    let _permit = sem.acquire_owned().await;
                    let (run_progress, line) = display.start(&job.key, i + 1);
                    let r = run::execute(&config, plan, run_progress).await;
                    (i, job, r, line)
                });
            }
            let mut done: Vec<(usize, JobResult)> = Vec::new();
            while let Some(joined) = set.join_next().await {
                let Ok((i, job, r, line)) = joined else {
                    display.println("error: a run's task failed");
                    continue;
                };
                let jr = JobResult::from_report(&job, &r, &out_for_tasks);
                display.finish(
                    line,
                    &format!(
                        "{} {}: {}{}",
                        if jr.ok { "ok  " } else { "FAIL" },
                        job.key,
                        r.verdict_label(),
                        if jr.ok { "" } else { " (not as expected)" },
                    ),
                );
                done.push((i, jr));
            }
            display.clear();
            done
        })
        .await;
    let mut done = done;
    done.sort_by_key(|(i, _)| *i);
    result.jobs = done.into_iter().map(|(_, j)| j).collect();
    Ok(result)
}

/// What a running suite shows: on a terminal, one live line per running guest (its latest
/// progress step) above an overall bar with an ETA; elsewhere (CI logs), one stamped line per
/// start and per result, with the ETA in it.
#[derive(Clone)]
struct SuiteDisplay {
    lines: indicatif::MultiProgress,
    overall: indicatif::ProgressBar,
    log: Progress,
    started: Instant,
    total: usize,
}

impl SuiteDisplay {
    fn new(total: usize, log: Progress) -> Self {
        // Hidden when stderr is not a terminal: the stamped lines take over.
        let lines = indicatif::MultiProgress::new();
        let overall = lines.add(indicatif::ProgressBar::new(total as u64));
        overall.set_style(
            indicatif::ProgressStyle::with_template(
                "[{elapsed_precise}] {bar:30} {pos}/{len} runs, about {eta} left",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        SuiteDisplay {
            lines,
            overall,
            log,
            started: Instant::now(),
            total,
        }
    }

    fn live(&self) -> bool {
        !self.lines.is_hidden()
    }

    /// A run starts: its live line, and the progress it reports into.
    fn start(&self, key: &str, n: usize) -> (Progress, Option<indicatif::ProgressBar>) {
        if !self.live() {
            self.log.step(&format!("start {key} ({n}/{})", self.total));
            return (Progress::new(true), None);
        }
        let line = self
            .lines
            .insert_before(&self.overall, indicatif::ProgressBar::new_spinner());
        line.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        line.set_prefix(key.to_string());
        line.enable_steady_tick(std::time::Duration::from_millis(200));
        (Progress::on_line(line.clone()), Some(line))
    }

    /// A run ended with `result` (one line that stays above the live ones).
    fn finish(&self, line: Option<indicatif::ProgressBar>, result: &str) {
        if let Some(line) = line {
            line.finish_and_clear();
            self.lines.remove(&line);
        }
        self.overall.inc(1);
        let n = self.overall.position() as usize;
        if self.live() {
            let _ = self.lines.println(result);
        } else {
            let elapsed = self.started.elapsed().as_secs_f64();
            let eta = elapsed / n as f64 * self.total.saturating_sub(n) as f64;
            self.log.step(&format!(
                "{result} [{n}/{}, about {eta:.0} s left]",
                self.total
            ));
        }
    }

    fn println(&self, msg: &str) {
        if self.live() {
            let _ = self.lines.println(msg);
        } else {
            eprintln!("{msg}");
        }
    }

    fn clear(&self) {
        self.overall.finish_and_clear();
    }
}

pub fn finish(result: &SuiteResult, out: &Path) -> i32 {
    if let Err(e) = result.write(out) {
        eprintln!("error: {e}");
    }
    print!("{}", result.summary());
    println!(
        "  output: {} (summary.txt, suite.json, junit.xml, index.html)",
        out.display()
    );
    result.verdict().exit_code()
}

/// `e4race merge DIR... --out DIR`.
pub fn merge(dirs: &[PathBuf], out: &Path) -> i32 {
    let mut parts = Vec::new();
    for d in dirs {
        match SuiteResult::read(&d.join("suite.json")) {
            Ok(mut r) => {
                // Run directories stay where the part put them.
                for j in &mut r.jobs {
                    j.run_dir = d.join(&j.run_dir).display().to_string();
                }
                parts.push(r);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        }
    }
    match SuiteResult::merge(parts) {
        Ok(r) => finish(&r, out),
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}
