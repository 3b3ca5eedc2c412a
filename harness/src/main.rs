//! `e4race`: the command-line harness.

mod accel;
mod artifacts;
mod cli;
mod config;
mod console;
mod crash_cmd;
mod disk;
mod error;
mod fsck;
mod logcmd;
mod mutants;
mod oracle_glue;
mod progress;
mod report;
mod run;
mod scenarios;
mod suite_cmd;
mod validate;
mod vm;

use clap::Parser;

use cli::{Cli, Cmd, ScenarioCmd};
use report::Verdict;

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        // blkrec's once-per-kind warnings (why a guest request failed) show by default.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("E4RACE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("blkrec=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(Verdict::InfraError.exit_code());
        }
    };
    let code = rt.block_on(async move {
        match cli.command {
            Cmd::Run { scenario, runs } => run_scenario(scenario, runs).await,
            Cmd::Doctor { kernel, reprobe } => doctor::doctor(&kernel, reprobe).await,
            Cmd::Validate(args) => validate::validate(args, cli::parse_run).await,
            Cmd::Suite(args) => suite_cmd::suite(args, cli::parse_run).await,
            Cmd::Merge { dirs, out } => suite_cmd::merge(&dirs, &out),
            Cmd::Log(cmd) => logcmd::log(cmd),
            Cmd::Replay {
                log,
                to,
                out,
                base,
                size,
                drop,
            } => logcmd::replay(log, &to, out, base, size, &drop),
            Cmd::Report { run_dir } => artifacts::report_cmd(&run_dir),
            Cmd::Crash {
                run_dir,
                reorder,
                seed,
                max_states,
                json,
            } => crash_cmd::crash_cmd(
                &run_dir,
                reorder,
                seed,
                usize::try_from(max_states).unwrap_or(usize::MAX),
                json,
            ),
            Cmd::Inspect {
                run_dir,
                file,
                at,
                json,
            } => artifacts::inspect_cmd(run_dir, &file, at.as_ref(), json),
        }
    });
    std::process::exit(code);
}

mod doctor;

async fn run_scenario(cmd: ScenarioCmd, runs: u32) -> i32 {
    let bisect = cmd.common().bisect;
    // Under `git bisect run`, a usage error must not read as "bad": a kernel that is not
    // there (the commit did not build) is skipped (125), anything else aborts (128).
    let usage_exit = |e: &config::ConfigError| match (bisect, e) {
        (false, _) => 2,
        (true, config::ConfigError::Kernel(_)) => 125,
        (true, _) => 128,
    };
    let mut reports = Vec::new();
    for i in 0..runs {
        // Planned anew each time: a fresh seed (unless --seed) and run id per run.
        let (config, plan) = match cli::plan(cmd.clone()) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {e}");
                return usage_exit(&e);
            }
        };
        if i == 0 {
            if let Err(e) = config.check_kernel_exists() {
                eprintln!("error: {e}");
                return usage_exit(&e);
            }
        }
        let progress = progress::Progress::new(config.quiet);
        if runs > 1 {
            progress.step(&format!("run {} of {runs}", i + 1));
        }
        let report = run::execute(&config, plan, progress).await;
        if config.output == config::Output::Json {
            println!("{}", report.to_json());
        } else {
            print!("{}", report.summary());
        }
        let found = report.verdict == Verdict::BugFound;
        reports.push(report);
        // For a bisect, one bad run decides.
        if found && bisect {
            break;
        }
    }
    if runs > 1 {
        let mut by: std::collections::BTreeMap<String, usize> = Default::default();
        for r in &reports {
            *by.entry(r.verdict.to_string()).or_default() += 1;
        }
        let line: Vec<String> = by.iter().map(|(v, n)| format!("{n} {v}")).collect();
        println!("{} runs: {}", reports.len(), line.join(", "));
    }
    // The worst outcome decides: a finding, else a kernel error, else an infrastructure
    // error, else PASS.
    let worst = reports.iter().max_by_key(|r| match r.verdict {
        Verdict::Pass => 0,
        Verdict::InfraError => 1,
        Verdict::KernelError => 2,
        Verdict::BugFound => 3,
    });
    match worst {
        Some(r) if bisect => r.bisect_code(),
        Some(r) => r.verdict.exit_code(),
        None => Verdict::InfraError.exit_code(),
    }
}
