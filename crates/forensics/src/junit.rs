//! `junit.xml`: the run as JUnit test cases, for CI dashboards.
//!
//! One test suite per run (`e4race.<scenario>.<kernel>`) with one test case per round of the
//! workload (`<scenario>/<kernel>/round-N`) and one `<scenario>/<kernel>/whole-run` case. A
//! round fails with the findings that name it (lost blocks and postconditions by their
//! round; e2fsck findings by the inode of one of the round's files). Findings that belong to
//! no round (kernel warnings, e2fsck's file-system-wide counts) fail the whole-run case; a
//! KERNEL-ERROR or INFRA-ERROR verdict makes it an error. Findings of a known issue fail
//! nothing (unless the run was `--strict`); whole-run's output lists them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::rundir::RunDir;
use crate::{Error, Result};
use e4race_report::{Finding, Verdict};

/// Lines of finding summaries put in a failure's description before the rest is counted.
pub const MAX_LINES: usize = 200;

/// The round a finding belongs to: its `round`, or the round of the file whose inode it names.
fn round_of(f: &Finding, by_ino: &HashMap<u64, u32>) -> Option<u32> {
    f.round().or_else(|| by_ino.get(&f.ino()?).copied())
}

fn failure(findings: &[&Finding]) -> TestCaseStatus {
    let mut by_class: BTreeMap<&str, usize> = BTreeMap::new();
    for f in findings {
        *by_class.entry(f.class().as_str()).or_default() += 1;
    }
    let msg: Vec<String> = by_class.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
    st.set_message(format!("{} findings: {}", findings.len(), msg.join(", ")));
    st.set_type(
        by_class
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or("finding", |(k, _)| k),
    );
    // One line per signature first (a cause, with its count), then the findings themselves.
    let mut by_sig: BTreeMap<&str, usize> = BTreeMap::new();
    for f in findings {
        *by_sig.entry(&f.signature).or_default() += 1;
    }
    let mut desc: Vec<String> = by_sig
        .iter()
        .map(|(sig, n)| format!("{n} × {sig}"))
        .collect();
    desc.extend(
        findings
            .iter()
            .take(MAX_LINES)
            .map(|f| format!("[{}] {}", f.class(), f.summary)),
    );
    if findings.len() > MAX_LINES {
        desc.push(format!(
            "... {} more in report.json",
            findings.len() - MAX_LINES
        ));
    }
    st.set_description(desc.join("\n"));
    st
}

/// Builds the JUnit report of a run.
pub fn report(run: &RunDir) -> Report {
    let r = &run.report;
    let kernel = r.kernel_label();
    let class = format!("e4race.{}.{}", r.scenario, kernel);
    let mut by_ino = HashMap::new();
    for round in run.rounds() {
        for f in &round.files {
            by_ino.insert(f.ino, round.round);
        }
    }
    let mut per_round: BTreeMap<u32, Vec<&Finding>> =
        run.rounds().iter().map(|x| (x.round, vec![])).collect();
    let mut rest = vec![];
    // Known issues fail nothing unless the run was strict; they are listed in whole-run's
    // output.
    let counted = r
        .findings
        .iter()
        .filter(|f| f.known_issue.is_none() || r.strict);
    for f in counted {
        match round_of(f, &by_ino).and_then(|n| per_round.get_mut(&n)) {
            Some(v) => v.push(f),
            None => rest.push(f),
        }
    }
    let mut suite = TestSuite::new(class.clone());
    for (round, fs) in &per_round {
        let status = if fs.is_empty() {
            TestCaseStatus::success()
        } else {
            failure(fs)
        };
        let mut tc = TestCase::new(format!("{}/{kernel}/round-{round}", r.scenario), status);
        tc.set_classname(class.clone());
        suite.add_test_case(tc);
    }
    let status = match r.verdict {
        Verdict::KernelError | Verdict::InfraError => {
            let mut st = TestCaseStatus::non_success(NonSuccessKind::Error);
            st.set_type(r.verdict.as_str());
            st.set_message(r.error.clone().unwrap_or_else(|| r.verdict.to_string()));
            if !rest.is_empty() {
                st.set_description(
                    rest.iter()
                        .map(|f| format!("[{}] {}", f.class(), f.summary))
                        .collect::<Vec<_>>()
                        .join("\n"),
                );
            }
            st
        }
        _ if !rest.is_empty() => failure(&rest),
        _ => TestCaseStatus::success(),
    };
    let mut tc = TestCase::new(format!("{}/{kernel}/whole-run", r.scenario), status);
    tc.set_classname(class.clone());
    let mut known_lines = String::new();
    for k in &r.known_issues {
        known_lines.push_str(&format!(
            "known issue {}: {} findings ({})\n",
            k.id, k.findings, k.title
        ));
    }
    for id in &r.known_not_reproduced {
        known_lines.push_str(&format!("known issue {id}: not reproduced\n"));
    }
    tc.set_system_out(format!(
        "verdict {}\nreproduce: {}\nrun directory: {}\n{known_lines}",
        r.verdict_label(),
        r.reproduce,
        run.dir.display()
    ));
    suite.add_test_case(tc);
    if r.duration_s.is_finite() && r.duration_s >= 0.0 {
        suite.set_time(Duration::from_secs_f64(r.duration_s));
    }
    let mut rep = Report::new("e4race");
    rep.add_test_suite(suite);
    rep
}

/// Writes the JUnit report of `run` to `path`.
pub fn write(run: &RunDir, path: &Path) -> Result<()> {
    let xml = report(run)
        .to_string()
        .map_err(|e| Error::Junit(e.to_string()))?;
    std::fs::write(path, xml).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}
