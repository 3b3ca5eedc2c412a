//! Verdicts, the JSON report, the human summary and the exit codes.

use serde::Serialize;

/// The outcome of a run. Exit codes are documented in `e4race run --help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING-KEBAB-CASE")]
pub enum Verdict {
    /// The scenario ran and every oracle was satisfied.
    Pass,
    /// An oracle reported a finding: lost data, corruption, a broken postcondition, a warning.
    BugFound,
    /// The kernel panicked, oopsed or hit a BUG while the run was going on.
    KernelError,
    /// Our own side failed (missing tool, bad kernel, hung guest, full disk, ...).
    InfraError,
}

impl Verdict {
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Pass => 0,
            Verdict::BugFound => 1,
            Verdict::KernelError => 3,
            Verdict::InfraError => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::BugFound => "BUG-FOUND",
            Verdict::KernelError => "KERNEL-ERROR",
            Verdict::InfraError => "INFRA-ERROR",
        }
    }
}

pub const EXIT_CODES_HELP: &str =
    "Exit codes: 0 PASS, 1 BUG-FOUND, 3 KERNEL-ERROR, 4 INFRA-ERROR, 2 bad usage.";

/// One finding, with the class the issue tracker groups them by.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// data-loss | fs-corruption | api-postcondition | kernel-warning
    pub class: String,
    /// One line for the summary.
    pub summary: String,
    /// The oracle's full record.
    pub detail: serde_json::Value,
}

/// The whole report; `report.json` in the run directory. Schema: docs in README.md.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub scenario: String,
    pub verdict: Verdict,
    pub kernel: KernelInfo,
    pub accel: String,
    pub accel_reason: String,
    pub disk_backend: String,
    pub mutant: Option<String>,
    pub seed: Option<u64>,
    /// The run id carried in every block tag the guest wrote.
    pub run_id: Option<u64>,
    pub params: serde_json::Value,
    pub started_at: String,
    pub duration_s: f64,
    pub boot_s: Option<f64>,
    /// Boots that failed with a kernel error before the agent came up and were retried
    /// (the headline of each); console-boot1.log keeps the failed boot's console.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub boot_retries: Vec<String>,
    pub error: Option<String>,
    pub findings: Vec<Finding>,
    /// Scenario-specific numbers that show what was exercised.
    pub evidence: serde_json::Value,
    pub run_dir: String,
    pub reproduce: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct KernelInfo {
    pub requested: String,
    pub release: String,
    pub origin: String,
}

pub const SCHEMA: &str = "e4race-report/1";

impl Report {
    /// The human summary printed at the end of a run and saved as `summary.txt`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "{}: {} on {} ({}), {} accel, disk {}{}\n",
            self.verdict.as_str(),
            self.scenario,
            if self.kernel.release.is_empty() {
                &self.kernel.requested
            } else {
                &self.kernel.release
            },
            self.kernel.origin,
            self.accel,
            self.disk_backend,
            self.mutant
                .as_ref()
                .map(|m| format!(", mutant {m}"))
                .unwrap_or_default()
        ));
        s.push_str(&format!(
            "  took {:.1} s{}\n",
            self.duration_s,
            self.boot_s
                .map(|b| format!(" (guest ready after {b:.1} s)"))
                .unwrap_or_default()
        ));
        if let serde_json::Value::Object(m) = &self.evidence {
            for (k, v) in m {
                s.push_str(&format!("  {k}: {v}\n"));
            }
        }
        if let Some(e) = &self.error {
            s.push_str(&format!("  error: {e}\n"));
        }
        if !self.findings.is_empty() {
            let mut by_class: std::collections::BTreeMap<&str, usize> = Default::default();
            for f in &self.findings {
                *by_class.entry(&f.class).or_default() += 1;
            }
            s.push_str(&format!(
                "  findings: {}\n",
                by_class
                    .iter()
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            s.push_str(&self.findings_digest());
        }
        s.push_str(&format!("  run directory: {}\n", self.run_dir));
        s.push_str(&format!("  reproduce: {}\n", self.reproduce));
        s
    }
}

impl Report {
    /// Findings for the summary. Lost blocks are grouped per file: a mutant run can lose
    /// thousands, and one line per file reads better than one per block.
    fn findings_digest(&self) -> String {
        use std::collections::{BTreeMap, BTreeSet};
        let mut lost: BTreeMap<&str, (usize, Vec<u64>, BTreeSet<&str>)> = BTreeMap::new();
        let mut others = Vec::new();
        for f in &self.findings {
            match (
                f.class.as_str(),
                f.detail["path"].as_str(),
                f.detail["lblk"].as_u64(),
            ) {
                ("data-loss", Some(path), Some(lblk)) => {
                    let e = lost.entry(path).or_default();
                    e.0 += 1;
                    if e.1.len() < 6 {
                        e.1.push(lblk);
                    }
                    if let Some(kind) = f.detail["found"]["kind"].as_str() {
                        e.2.insert(kind);
                    }
                }
                _ => others.push(f),
            }
        }
        let mut s = String::new();
        for (path, (n, first, kinds)) in lost.iter().take(12) {
            let lblks: Vec<String> = first.iter().map(u64::to_string).collect();
            s.push_str(&format!(
                "    [data-loss] {path}: {n} lost blocks ({}), lblk {}{}\n",
                kinds.iter().copied().collect::<Vec<_>>().join(", "),
                lblks.join(", "),
                if *n > first.len() { ", ..." } else { "" }
            ));
        }
        if lost.len() > 12 {
            s.push_str(&format!(
                "    [data-loss] ... {} more files in report.json\n",
                lost.len() - 12
            ));
        }
        for f in others.iter().take(12) {
            s.push_str(&format!("    [{}] {}\n", f.class, f.summary));
        }
        if others.len() > 12 {
            s.push_str(&format!(
                "    ... {} more in report.json\n",
                others.len() - 12
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(verdict: Verdict, findings: Vec<Finding>) -> Report {
        Report {
            schema: SCHEMA,
            scenario: "smoke".into(),
            verdict,
            kernel: KernelInfo {
                requested: "6.1".into(),
                release: "6.1.0-56-amd64".into(),
                origin: "linux-image-6.1.0-56-amd64 6.1.192-2".into(),
            },
            accel: "tcg".into(),
            accel_reason: "test".into(),
            disk_backend: "qemu".into(),
            mutant: None,
            seed: Some(1),
            run_id: Some(2),
            params: serde_json::json!({}),
            started_at: "now".into(),
            duration_s: 1.5,
            boot_s: Some(1.0),
            boot_retries: vec![],
            error: None,
            findings,
            evidence: serde_json::json!({"blocks": 3}),
            run_dir: "runs/x".into(),
            reproduce: "e4race run smoke".into(),
        }
    }

    #[test]
    fn verdicts_have_distinct_exit_codes() {
        let codes: std::collections::HashSet<i32> = [
            Verdict::Pass,
            Verdict::BugFound,
            Verdict::KernelError,
            Verdict::InfraError,
        ]
        .iter()
        .map(|v| v.exit_code())
        .collect();
        assert_eq!(codes.len(), 4);
        assert!(!codes.contains(&2), "2 is clap's usage error");
    }

    #[test]
    fn summary_lists_findings_by_class() {
        let lost = |lblk: u64| Finding {
            class: "data-loss".into(),
            summary: format!("r0/f1 block {lblk} is a hole"),
            detail: serde_json::json!({"path": "r0/f1", "lblk": lblk, "found": {"kind": "hole"}}),
        };
        let fsck = Finding {
            class: "fs-corruption".into(),
            summary: "e2fsck: block bitmap differences".into(),
            detail: serde_json::json!({}),
        };
        let s = report(Verdict::BugFound, vec![lost(7), lost(9), fsck]).summary();
        assert!(s.starts_with("BUG-FOUND: smoke on 6.1.0-56-amd64"), "{s}");
        assert!(s.contains("findings: 2 data-loss, 1 fs-corruption"), "{s}");
        assert!(
            s.contains("[data-loss] r0/f1: 2 lost blocks (hole), lblk 7, 9\n"),
            "{s}"
        );
        assert!(
            s.contains("[fs-corruption] e2fsck: block bitmap differences"),
            "{s}"
        );
        let j = serde_json::to_value(report(Verdict::Pass, vec![])).unwrap();
        assert_eq!(j["verdict"], "PASS");
        assert_eq!(j["schema"], SCHEMA);
    }
}
