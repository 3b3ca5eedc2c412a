//! `e4race validate`: mutation testing of the oracles. Each mutant runs N times, and the stock
//! kernel N times, for each scenario and kernel; the table says how often the bug was detected
//! and how often a correct kernel was blamed. It is a suite built in memory (mutants as
//! controls), run by the suite runner: `--jobs`, `--shard` and `e4race merge` work as there,
//! and the detection table (crates/suite/src/detection.rs) is computed from the job results.

use std::path::{Path, PathBuf};

use suite::{detection, Entry, Shard, Suite, SuiteFile};

use crate::suite_cmd::{finish, print_jobs, run_suite, RunParser, SuiteArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct ValidateArgs {
    /// Runs per (scenario, kernel, mutant-or-stock) cell.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Kernels (Debian series), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "6.1,6.12")]
    pub kernels: Vec<String>,
    /// Mutants to run (default: every mutant under vm-images/mutants for the kernel).
    #[arg(long, value_delimiter = ',')]
    pub mutants: Vec<String>,
    /// Skip the stock-kernel runs.
    #[arg(long)]
    pub no_stock: bool,
    /// Where the run directories and the table go.
    #[arg(long, default_value = "runs/validate")]
    pub runs_dir: PathBuf,
    /// Where mutant folders are [default: vm-images/mutants beside or above the executable or
    /// the current directory].
    #[arg(long, value_name = "DIR", env = "E4RACE_MUTANTS_DIR")]
    pub mutants_dir: Option<PathBuf>,
    /// Extra options passed to every `e4race run SCENARIO` (e.g. "--accel tcg").
    #[arg(long, allow_hyphen_values = true)]
    pub run_args: Option<String>,
    /// Guests at once [default: host cores / vCPUs per guest, at least 1], as in `suite`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// Run only the K-th of N parts (CI matrix jobs); `e4race merge` the parts' folders.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
    /// Print the runs (of the shard) and exit.
    #[arg(long)]
    pub list: bool,
}

/// Builds validate's suite: for each kernel, each selected mutant runs the scenario its
/// mutant.toml names (expected BUG-FOUND), and the stock kernel runs every scenario some
/// selected mutant targets (expected PASS), `runs` times each.
pub fn validate_suite(args: &ValidateArgs, root: &Path) -> Result<Suite, String> {
    let all = mutant::list(root).map_err(|e| e.to_string())?;
    let unknown: Vec<&String> = args
        .mutants
        .iter()
        .filter(|m| !all.iter().any(|d| &d.name == *m))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "no mutant {unknown:?} in {} (it has: {})",
            root.display(),
            all.iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let entry = |scenario: &str, run_args: &[String], kernel: &str, mutant: Option<&str>| Entry {
        scenario: scenario.into(),
        kernels: vec![kernel.into()],
        mutant: mutant.map(str::to_string),
        patch: None,
        args: run_args.to_vec(),
        runs: args.runs,
        seeds: vec![],
        expect: None,
    };
    let mut entries = Vec::new();
    for kernel in &args.kernels {
        // A stock control per (scenario, options) some mutant uses: a mutant that needs
        // `--crash-states` is compared with stock runs that check crash states too.
        let mut configs: Vec<(&str, &[String])> = Vec::new();
        let mut mutants = Vec::new();
        for m in &all {
            let wanted = args.mutants.is_empty() || args.mutants.contains(&m.name);
            if wanted && m.kernels.iter().any(|k| k == kernel) {
                mutants.push(entry(&m.scenario, &m.args, kernel, Some(&m.name)));
                let config = (m.scenario.as_str(), m.args.as_slice());
                if !configs.contains(&config) {
                    configs.push(config);
                }
            }
        }
        if configs.is_empty() {
            configs.push(("migrate-mmap", &[]));
        }
        if !args.no_stock {
            entries.extend(configs.iter().map(|(sc, a)| entry(sc, a, kernel, None)));
        }
        entries.extend(mutants);
    }
    if entries.is_empty() {
        return Err("nothing to run: no mutant targets these kernels, and --no-stock".into());
    }
    Suite::new(
        "validate".into(),
        &args.runs_dir.join("validate.toml"),
        SuiteFile {
            name: Some("validate".into()),
            entry: entries,
        },
    )
    .map_err(|e| e.to_string())
}

pub async fn validate(args: ValidateArgs, parse_run: RunParser) -> i32 {
    let root = crate::config::mutants_root(args.mutants_dir.as_deref());
    let s = match validate_suite(&args, &root) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let suite_args = SuiteArgs {
        file: s.path.clone(),
        shard: args.shard,
        jobs: args.jobs,
        out: Some(args.runs_dir.clone()),
        run_args: args.run_args.clone(),
        list: false,
        // Batch runs keep their evidence in the report, not in a disk image per run.
        fixed_args: vec![
            "--discard-image".into(),
            "--mutants-dir".into(),
            root.display().to_string(),
        ],
    };
    if args.list {
        print_jobs(&s, args.shard);
        return 0;
    }
    let result = match run_suite(&s, &suite_args, &args.runs_dir, parse_run).await {
        Ok(r) => r,
        Err(code) => return code,
    };
    let code = finish(&result, &args.runs_dir);
    let cells = detection::cells(&result.jobs);
    let _ = std::fs::write(args.runs_dir.join("validate.md"), detection::render(&cells));
    let _ = std::fs::write(
        args.runs_dir.join("validate.json"),
        serde_json::to_string_pretty(&cells).unwrap_or_default(),
    );
    println!(
        "  table: {} (and validate.json); merge shards' folders with `e4race merge`",
        args.runs_dir.join("validate.md").display()
    );
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        v: ValidateArgs,
    }

    fn args(extra: &[&str]) -> ValidateArgs {
        T::parse_from(std::iter::once("t").chain(extra.iter().copied())).v
    }

    fn shipped() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm-images/mutants")
    }

    #[test]
    fn validate_is_a_suite_of_stock_runs_and_mutant_controls() {
        let s = validate_suite(&args(&["--runs", "3", "--kernels", "6.1"]), &shipped()).unwrap();
        let jobs = s.jobs();
        let stock: Vec<_> = jobs.iter().filter(|j| j.mutant.is_none()).collect();
        let controls: Vec<_> = jobs.iter().filter(|j| j.mutant.is_some()).collect();
        assert!(!stock.is_empty() && !controls.is_empty(), "{jobs:?}");
        assert!(stock.iter().all(|j| j.expect == suite::Expect::Pass));
        assert!(controls.iter().all(|j| j.expect == suite::Expect::BugFound));
        assert!(controls
            .iter()
            .any(|j| j.key.contains("+migrate-flag-clear")));
        // Every (scenario, variant) cell has --runs runs; keys hold no host path (shards
        // on runners with other checkouts must agree).
        assert_eq!(jobs.len() % 3, 0);
        assert!(jobs.iter().all(|j| !j.key.contains('/')), "{jobs:?}");
        // Each stock scenario is one some control targets.
        for c in &controls {
            assert!(stock.iter().any(|j| j.scenario == c.scenario), "{}", c.key);
        }
    }

    #[test]
    fn validate_refuses_unknown_mutants_and_an_empty_selection() {
        let e = validate_suite(&args(&["--mutants", "no-such"]), &shipped()).unwrap_err();
        assert!(
            e.contains("no-such") && e.contains("migrate-flag-clear"),
            "{e}"
        );
        let e = validate_suite(
            &args(&[
                "--no-stock",
                "--kernels",
                "9.9",
                "--mutants",
                "migrate-flag-clear",
            ]),
            &shipped(),
        )
        .unwrap_err();
        assert!(e.contains("nothing to run"), "{e}");
        assert!(T::try_parse_from(["t", "--runs", "0"]).is_err());
    }
}
