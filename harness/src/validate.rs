//! `e4race validate`: mutation testing of the oracles. Each mutant runs N times, and the stock
//! kernel N times, for each scenario and kernel; the table says how often the bug was detected
//! and how often a correct kernel was blamed.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::RunConfig;
use crate::progress::Progress;
use crate::report::Verdict;
use crate::run;
use crate::scenarios::ScenarioPlan;

#[derive(Debug, Clone, clap::Args)]
pub struct ValidateArgs {
    /// Runs per (scenario, kernel, mutant-or-stock) cell.
    #[arg(long, default_value_t = 20)]
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
}

/// One cell of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub scenario: String,
    pub kernel: String,
    pub mutant: String,
    pub runs: u32,
    /// Mutant runs with at least one data-loss finding.
    pub detected: u32,
    /// Stock runs with at least one data-loss finding.
    pub false_positives: u32,
    /// Runs that ended in KERNEL-ERROR or INFRA-ERROR.
    pub errors: u32,
    /// Median wall time (s) from run start to the verdict, over runs with a data-loss finding.
    pub median_time_to_finding_s: Option<f64>,
    pub median_run_s: Option<f64>,
    pub lost_blocks_per_run: Vec<u64>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some((v[v.len() / 2] * 10.0).round() / 10.0)
}

/// Builds one run from the words of `e4race run ...` (cli::parse_run; passed in so that
/// validate does not depend on the command line module that defines its arguments).
pub type RunParser = fn(&[String]) -> Result<(RunConfig, ScenarioPlan), String>;

pub async fn validate(args: ValidateArgs, parse_run: RunParser) -> i32 {
    let root = crate::config::mutants_root(args.mutants_dir.as_deref());
    let all = mutant::list(&root).unwrap_or_default();
    let mut cells = Vec::new();
    let progress = Progress::new(false);
    for kernel in &args.kernels {
        // (scenario, mutant) cells: each mutant runs the scenario its mutant.toml names, and
        // the stock kernel runs every scenario some selected mutant targets.
        let mut variants: Vec<(String, Option<String>)> = Vec::new();
        let mut scenarios: Vec<String> = Vec::new();
        for m in &all {
            let wanted = args.mutants.is_empty() || args.mutants.contains(&m.name);
            if wanted && m.kernels.iter().any(|k| k == kernel) {
                variants.push((m.scenario.clone(), Some(m.name.clone())));
                if !scenarios.contains(&m.scenario) {
                    scenarios.push(m.scenario.clone());
                }
            }
        }
        if scenarios.is_empty() {
            scenarios.push("migrate-mmap".into());
        }
        if !args.no_stock {
            for (i, sc) in scenarios.iter().enumerate() {
                variants.insert(i, (sc.clone(), None));
            }
        }
        for (scenario, variant) in variants {
            let label = variant.clone().unwrap_or_else(|| "stock".into());
            let mut cell = Cell {
                scenario: scenario.clone(),
                kernel: kernel.clone(),
                mutant: label.clone(),
                runs: 0,
                detected: 0,
                false_positives: 0,
                errors: 0,
                median_time_to_finding_s: None,
                median_run_s: None,
                lost_blocks_per_run: vec![],
            };
            let mut times = Vec::new();
            let mut all_times = Vec::new();
            for i in 0..args.runs {
                let mut argv = vec![
                    "run".to_string(),
                    scenario.clone(),
                    "--kernel".into(),
                    kernel.clone(),
                    "-q".into(),
                    "--discard-image".into(),
                ];
                argv.extend(["--runs-dir".into(), args.runs_dir.display().to_string()]);
                if let Some(m) = &variant {
                    argv.extend(["--mutant".into(), m.clone()]);
                    argv.extend(["--mutants-dir".into(), root.display().to_string()]);
                }
                if let Some(extra) = &args.run_args {
                    argv.extend(extra.split_whitespace().map(str::to_string));
                }
                let (config, plan) = match parse_run(&argv) {
                    Ok(v) => v,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return 2;
                    }
                };
                let r = run::execute(&config, plan, Progress::new(true)).await;
                cell.runs += 1;
                let lost = r
                    .exercise
                    .as_ref()
                    .map_or(0, |e| e.host().lost_blocks as u64);
                cell.lost_blocks_per_run.push(lost);
                all_times.push(r.duration_s);
                match r.verdict {
                    Verdict::KernelError | Verdict::InfraError => cell.errors += 1,
                    _ => {}
                }
                if r.has_data_loss() {
                    times.push(r.duration_s);
                    if variant.is_some() {
                        cell.detected += 1;
                    } else {
                        cell.false_positives += 1;
                    }
                }
                progress.step(&format!(
                    "{scenario} {kernel} {label} run {}/{}: {} ({} lost blocks, {:.0} s){}",
                    i + 1,
                    args.runs,
                    r.verdict.as_str(),
                    lost,
                    r.duration_s,
                    r.error
                        .as_deref()
                        .map(|e| format!(" error: {}", e.lines().next().unwrap_or("")))
                        .unwrap_or_default()
                ));
            }
            cell.median_time_to_finding_s = median(times);
            cell.median_run_s = median(all_times);
            cells.push(cell);
        }
    }
    let table = render(&cells);
    println!("{table}");
    let _ = std::fs::create_dir_all(&args.runs_dir);
    let _ = std::fs::write(args.runs_dir.join("validate.md"), &table);
    let _ = std::fs::write(
        args.runs_dir.join("validate.json"),
        serde_json::to_string_pretty(&cells).unwrap_or_default(),
    );
    0
}

pub fn render(cells: &[Cell]) -> String {
    let mut s = String::from(
        "| scenario | kernel | mutant | runs | detected | false positives | errors | median time to finding (s) | median run (s) |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for c in cells {
        let det = if c.mutant == "stock" {
            "-".to_string()
        } else {
            format!("{}/{}", c.detected, c.runs)
        };
        let fp = if c.mutant == "stock" {
            format!("{}/{}", c.false_positives, c.runs)
        } else {
            "-".to_string()
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            c.scenario,
            c.kernel,
            c.mutant,
            c.runs,
            det,
            fp,
            c.errors,
            c.median_time_to_finding_s
                .map(|t| format!("{t:.1}"))
                .unwrap_or_else(|| "-".into()),
            c.median_run_s
                .map(|t| format!("{t:.1}"))
                .unwrap_or_else(|| "-".into()),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_separates_detection_from_false_positives() {
        let mk = |mutant: &str, detected, fp| Cell {
            scenario: "migrate-mmap".into(),
            kernel: "6.1".into(),
            mutant: mutant.into(),
            runs: 20,
            detected,
            false_positives: fp,
            errors: 0,
            median_time_to_finding_s: Some(50.0),
            median_run_s: Some(50.0),
            lost_blocks_per_run: vec![],
        };
        let t = render(&[mk("stock", 0, 0), mk("migrate-flag-clear", 19, 0)]);
        assert!(
            t.contains("| migrate-mmap | 6.1 | stock | 20 | - | 0/20 |"),
            "{t}"
        );
        assert!(t.contains("| migrate-flag-clear | 20 | 19/20 | - |"), "{t}");
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![]), None);
    }
}
