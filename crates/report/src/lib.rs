//! `report.json`, the one record of an e4race run: its verdict, its findings (the oracles'
//! typed findings, with their class) and what the scenario exercised.
//!
//! The harness writes it, and forensics, `e4race validate` and the tests read it back, all
//! through [`Report`]: a field added here is a field every reader sees, and a report that
//! does not match the type is an error, not a silently missing value.

mod exercise;
mod summary;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use exercise::{
    DefragExercise, Exercise, HostCheck, MigrateExercise, PowerCutExercise, SmokeExercise,
    WorkloadExercise,
};
pub use oracles::FindingClass;

/// The schema this crate reads and writes. Version 2: findings carry the oracle's own record
/// (`class` + `detail`) with `known_cause` beside it; `exercise` replaces version 1's untyped
/// `evidence`.
pub const SCHEMA: &str = "e4race-report/2";

/// The outcome of a run. Exit codes are documented in `e4race run --help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// What `e4race run --help` says of the exit codes.
pub const EXIT_CODES_HELP: &str =
    "Exit codes: 0 PASS, 1 BUG-FOUND, 3 KERNEL-ERROR, 4 INFRA-ERROR, 2 bad usage.";

impl Verdict {
    /// The process exit code of a run with this verdict (2 is left to usage errors).
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

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding: an oracle's record, its one-line summary, and the explanation when the
/// behaviour is a known, traced kernel behaviour (the finding stays a finding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// One line for the summary.
    pub summary: String,
    /// What identifies this kind of finding across runs, seeds and files:
    /// `SCENARIO/CLASS/KEY` (see [`signature`]); empty until [`Report::set_findings`].
    #[serde(default)]
    pub signature: String,
    /// The id of the known issue (`--known-issues`) this finding matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_issue: Option<String>,
    /// Kernel behaviour traced to its cause, for a reader to know it is explained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_cause: Option<String>,
    /// The oracle's record: `class` and `detail` in the JSON.
    #[serde(flatten)]
    pub oracle: oracles::Finding,
}

impl Finding {
    /// Wraps an oracle's finding, with its summary.
    pub fn new(oracle: oracles::Finding) -> Self {
        Finding {
            summary: oracle.summary(),
            signature: String::new(),
            known_issue: None,
            known_cause: None,
            oracle,
        }
    }

    /// Attaches a known cause, and says so in the summary.
    pub fn with_known_cause(mut self, why: &str) -> Self {
        self.summary
            .push_str(" [known kernel behaviour, see known_cause]");
        self.known_cause = Some(why.to_string());
        self
    }

    pub fn class(&self) -> FindingClass {
        self.oracle.class()
    }

    /// The lost block, for a data-loss finding that names one.
    pub fn lost_block(&self) -> Option<&oracles::LostBlock> {
        match &self.oracle {
            oracles::Finding::DataLoss(b) => Some(b),
            _ => None,
        }
    }

    /// The round the finding belongs to, when it names one.
    pub fn round(&self) -> Option<u32> {
        match &self.oracle {
            oracles::Finding::DataLoss(b) => Some(b.round),
            oracles::Finding::FileLoss(p) => Some(p.round),
            oracles::Finding::ApiPostcondition { round, .. } => Some(*round),
            _ => None,
        }
    }

    /// The inode the finding names (e2fsck findings), to map it to a file of a round.
    pub fn ino(&self) -> Option<u64> {
        match &self.oracle {
            oracles::Finding::FsCorruption(f) => f.ino(),
            _ => None,
        }
    }

    /// The file the finding is about, relative to the file system root.
    pub fn path(&self) -> Option<&str> {
        match &self.oracle {
            oracles::Finding::DataLoss(b) => Some(&b.path),
            oracles::Finding::FileLoss(p) => Some(&p.path),
            oracles::Finding::ReadBack { path, .. }
            | oracles::Finding::ApiPostcondition { path, .. } => Some(path),
            oracles::Finding::FsCorruption(_)
            | oracles::Finding::KernelWarning(_)
            | oracles::Finding::CrashState(_) => None,
        }
    }
}

/// A finding's signature: the scenario, the class and the oracle's key (the check, or the
/// loss kind and mechanism), e.g. `migrate-mmap/api-postcondition/migrate-success-sets-extents-flag`
/// or `defrag-mmap/data-loss/lost-block:zeros`. Never a file, block or seed.
pub fn signature(scenario: &str, f: &oracles::Finding) -> String {
    format!("{scenario}/{}/{}", f.class(), f.signature_key())
}

/// A known issue that some findings of the run matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownIssueHit {
    pub id: String,
    pub title: String,
    /// How many of the run's findings it explains.
    pub findings: usize,
    /// Upstream status, as the known-issues file says.
    #[serde(default)]
    pub status: String,
    /// Where a fix is (a patch or a commit), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The kernel a run asked for and the one it got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// `--kernel` as given: a Debian series or a bzImage path.
    pub requested: String,
    /// `uname -r` in the guest (empty if the guest never came up).
    pub release: String,
    /// The package and version, or the file, the kernel came from.
    pub origin: String,
}

/// The whole report; `report.json` in the run directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`]; [`Report::read`] refuses others.
    pub schema: String,
    pub scenario: String,
    pub verdict: Verdict,
    pub kernel: KernelInfo,
    /// `kvm` or `tcg`; empty when the run ended before the choice.
    pub accel: String,
    pub accel_reason: String,
    pub disk_backend: String,
    pub mutant: Option<String>,
    pub seed: Option<u64>,
    /// The run id carried in every block tag the guest wrote.
    pub run_id: Option<u64>,
    /// The scenario's parameters as the plan recorded them.
    pub params: serde_json::Value,
    pub started_at: String,
    pub duration_s: f64,
    pub boot_s: Option<f64>,
    /// Boots that failed with a kernel error before the agent came up and were retried
    /// (the headline of each); console-boot1.log keeps the failed boot's console.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boot_retries: Vec<String>,
    pub error: Option<String>,
    /// Guest requests the disk backend (blkrec) failed, per kind (its `RequestErrorKind`
    /// names); only nonzero kinds. Absent: none failed, or the backend counts none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub request_errors: BTreeMap<String, u64>,
    pub findings: Vec<Finding>,
    /// Known issues that findings matched (`--known-issues`); with no other finding the run
    /// passes, unless `strict`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_issues: Vec<KnownIssueHit>,
    /// Known issues in scope for this scenario and kernel that no finding matched: the way a
    /// fix shows up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_not_reproduced: Vec<String>,
    /// `--strict`: known issues still make the run BUG-FOUND.
    #[serde(default)]
    pub strict: bool,
    /// What the scenario exercised (absent when it did not get to run).
    pub exercise: Option<Exercise>,
    /// The crash states checked from the write log (`--crash-states`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash: Option<CrashSummary>,
    pub run_dir: String,
    pub reproduce: String,
}

/// Why a report could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source} (is the disk full?)", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} has schema {found:?}; this e4race reads {SCHEMA:?} (re-run the scenario, or use the e4race that wrote it)", path.display())]
    Schema { path: PathBuf, found: String },
    #[error("{} is not an e4race report: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// How many crash states were checked and how many were bad (details in crash.json; each
/// kind of problem is a crash-consistency finding).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CrashSummary {
    pub states_checked: usize,
    pub after_flush: usize,
    pub reordered: usize,
    pub bad_states: usize,
    pub seconds: f64,
    pub states_per_second: f64,
}

impl Report {
    /// A report of a run that has not ended yet: INFRA-ERROR until something says otherwise.
    pub fn new(scenario: &str, kernel_requested: &str, run_dir: &Path, reproduce: &str) -> Self {
        Report {
            schema: SCHEMA.into(),
            scenario: scenario.into(),
            verdict: Verdict::InfraError,
            kernel: KernelInfo {
                requested: kernel_requested.into(),
                ..KernelInfo::default()
            },
            accel: String::new(),
            accel_reason: String::new(),
            disk_backend: String::new(),
            mutant: None,
            seed: None,
            run_id: None,
            params: serde_json::Value::Object(Default::default()),
            started_at: String::new(),
            duration_s: 0.0,
            boot_s: None,
            boot_retries: vec![],
            error: None,
            request_errors: BTreeMap::new(),
            findings: vec![],
            known_issues: vec![],
            known_not_reproduced: vec![],
            strict: false,
            exercise: None,
            crash: None,
            run_dir: run_dir.display().to_string(),
            reproduce: reproduce.into(),
        }
    }

    /// The kernel as a label: the release if the guest reported one, else what was asked for.
    pub fn kernel_label(&self) -> &str {
        if self.kernel.release.is_empty() {
            &self.kernel.requested
        } else {
            &self.kernel.release
        }
    }

    /// Sets the findings, each with its signature, and the verdict they give: BUG-FOUND with
    /// any finding, else PASS. Known issues are applied afterwards (e4race-known-issues).
    pub fn set_findings(&mut self, mut findings: Vec<Finding>) {
        for f in &mut findings {
            f.signature = signature(&self.scenario, &f.oracle);
        }
        self.verdict = if findings.is_empty() {
            Verdict::Pass
        } else {
            Verdict::BugFound
        };
        self.findings = findings;
    }

    /// Findings no known issue explains.
    pub fn new_findings(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.known_issue.is_none())
    }

    /// The verdict as the summary's first word: `PASS (1 known issue)` when known issues
    /// explain every finding.
    pub fn verdict_label(&self) -> String {
        match (self.verdict, self.known_issues.len()) {
            (_, 0) => self.verdict.to_string(),
            (v, 1) => format!("{v} (1 known issue)"),
            (v, n) => format!("{v} ({n} known issues)"),
        }
    }

    /// The exit code for `git bisect run` (`--bisect`): PASS 0 (good); BUG-FOUND, or a kernel
    /// error once the agent was up, 1 (bad); INFRA-ERROR, or a kernel that died before the
    /// agent came up (the commit cannot be tested), 125 (skip).
    pub fn bisect_code(&self) -> i32 {
        match self.verdict {
            Verdict::Pass => 0,
            _ if self.kernel_is_bad() => 1,
            _ => 125,
        }
    }

    /// Whether this run convicts the kernel: a new finding, or a kernel error (panic, oops,
    /// hang) once the agent was up. A kernel that dies before the agent reports ready may just
    /// be unbootable in this setup (bisect skips it; a mutant control does not count it).
    pub fn kernel_is_bad(&self) -> bool {
        match self.verdict {
            Verdict::BugFound => true,
            Verdict::KernelError => self.boot_s.is_some(),
            Verdict::Pass | Verdict::InfraError => false,
        }
    }

    /// Whether any finding is data loss.
    pub fn has_data_loss(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.class() == FindingClass::DataLoss)
    }

    /// Parses a report, checking its schema first (so an old report gets the schema error,
    /// not a confusing missing-field one). `path` is only for messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Report, ReportError> {
        #[derive(Deserialize)]
        struct SchemaOnly {
            #[serde(default)]
            schema: String,
        }
        let head: SchemaOnly = serde_json::from_str(text).map_err(|source| ReportError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        if head.schema != SCHEMA {
            return Err(ReportError::Schema {
                path: path.to_path_buf(),
                found: head.schema,
            });
        }
        serde_json::from_str(text).map_err(|source| ReportError::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads `report.json` (or any path).
    pub fn read(path: &Path) -> Result<Report, ReportError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Report::from_json(&text, path)
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Writes the report to `path`.
    pub fn write(&self, path: &Path) -> Result<(), ReportError> {
        std::fs::write(path, self.to_json()).map_err(|source| ReportError::Write {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Escapes text (report.html, a suite's index.html) for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}
