//! The detection table of `e4race validate`: per (scenario, kernel, mutant or stock), how often
//! a mutant's bug was caught and how often a stock kernel was blamed, and by which class of
//! finding. A run counts when it convicts the kernel: a new finding (known issues do not
//! count), or a kernel error once the agent was up (a panic or oops is a detection, never an
//! infrastructure error). Computed from job results alone, so a validate run split over
//! shards and merged gives the same table.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::JobResult;
use e4race_report::Verdict;

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    pub scenario: String,
    /// The configuration's own options ("" for the scenario's defaults).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub options: String,
    pub kernel: String,
    /// The mutant, or `stock`.
    pub mutant: String,
    pub runs: u32,
    /// Mutant runs that convicted the kernel.
    pub detected: u32,
    /// Stock runs that convicted the kernel.
    pub false_positives: u32,
    /// Runs that could not judge the kernel: INFRA-ERROR, or a kernel error before the agent
    /// was up.
    pub errors: u32,
    /// Convicting runs per class of finding (a run counts once per class it showed).
    pub caught_by: BTreeMap<String, u32>,
    /// Median wall time (s) from run start to the verdict, over convicting runs.
    pub median_time_to_finding_s: Option<f64>,
    pub median_run_s: Option<f64>,
    pub lost_blocks_per_run: Vec<u64>,
}

/// The median, rounded to 0.1 s; `None` for no values.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some((v[v.len() / 2] * 10.0).round() / 10.0)
}

/// The rows, in the order their first job appears.
pub fn cells(jobs: &[JobResult]) -> Vec<Cell> {
    let mut cells: Vec<(Cell, Vec<f64>, Vec<f64>)> = Vec::new();
    for j in jobs {
        let mutant = j.mutant.clone().unwrap_or_else(|| "stock".into());
        let i = match cells.iter().position(|(c, ..)| {
            c.scenario == j.scenario
                && c.options == j.options
                && c.kernel == j.kernel
                && c.mutant == mutant
        }) {
            Some(i) => i,
            None => {
                cells.push((
                    Cell {
                        scenario: j.scenario.clone(),
                        options: j.options.clone(),
                        kernel: j.kernel.clone(),
                        mutant,
                        runs: 0,
                        detected: 0,
                        false_positives: 0,
                        errors: 0,
                        caught_by: BTreeMap::new(),
                        median_time_to_finding_s: None,
                        median_run_s: None,
                        lost_blocks_per_run: vec![],
                    },
                    vec![],
                    vec![],
                ));
                cells.len() - 1
            }
        };
        let (c, found_times, all_times) = &mut cells[i];
        c.runs += 1;
        c.lost_blocks_per_run.push(j.lost_blocks);
        all_times.push(j.duration_s);
        if matches!(j.verdict, Verdict::KernelError | Verdict::InfraError) && !j.kernel_bad {
            c.errors += 1;
        }
        if j.kernel_bad {
            found_times.push(j.duration_s);
            for class in &j.caught_by {
                *c.caught_by.entry(class.clone()).or_default() += 1;
            }
            if j.mutant.is_some() {
                c.detected += 1;
            } else {
                c.false_positives += 1;
            }
        }
    }
    cells
        .into_iter()
        .map(|(mut c, found, all)| {
            c.median_time_to_finding_s = median(found);
            c.median_run_s = median(all);
            c
        })
        .collect()
}

/// The table in Markdown.
pub fn render(cells: &[Cell]) -> String {
    let mut s = String::from(
        "| scenario | kernel | mutant | runs | detected | false positives | errors | caught by | median time to finding (s) | median run (s) |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let secs = |t: Option<f64>| t.map_or_else(|| "-".into(), |t| format!("{t:.1}"));
    for c in cells {
        let (det, fp) = if c.mutant == "stock" {
            ("-".to_string(), format!("{}/{}", c.false_positives, c.runs))
        } else {
            (format!("{}/{}", c.detected, c.runs), "-".to_string())
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {det} | {fp} | {} | {} | {} | {} |\n",
            if c.options.is_empty() {
                c.scenario.clone()
            } else {
                format!("{} {}", c.scenario, c.options)
            },
            c.kernel,
            c.mutant,
            c.runs,
            c.errors,
            if c.caught_by.is_empty() {
                "-".to_string()
            } else {
                c.caught_by
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            secs(c.median_time_to_finding_s),
            secs(c.median_run_s),
        ));
    }
    s
}
