//! Evidence for every lost block of an e4race run.
//!
//! A run directory (see the README, "A run directory") holds the verdict and the findings
//! (`report.json`), what the guest did (`workload.json`), what the disk saw (`writes.log`,
//! recorded by blkrec) and what e2fsck said (`e2fsck.txt`). This crate joins them:
//!
//! * [`attribution`]: for every [`oracles::LostBlock`], the xxh3-64 of the block the guest
//!   acknowledged is looked up in the write log. Either the data reached the disk at some
//!   sector ([`Attribution::OrphanedWrite`]: the file's final mapping has a hole there or
//!   points elsewhere; [`Attribution::InPlace`]: it went where the file maps it but was
//!   overwritten or is mapped unwritten), or it never did ([`Attribution::NeverWritten`]).
//!   Each orphaned write is checked against the blocks e2fsck (or the host ext4 reader) finds
//!   allocated but owned by no inode. The result is `evidence.json`, schema
//!   [`EVIDENCE_SCHEMA`] ([`Evidence`]).
//! * [`html`]: a self-contained `report.html` with the verdict, grouped findings, the
//!   reproduce command and an SVG timeline per round.
//! * [`junit`]: `junit.xml`, one test case per scenario × kernel × round.
//! * [`inspect`]: a file's block mapping at any point of a write log recorded with data.
//!
//! [`write_artifacts`] does all of it for one run directory.

pub mod attribution;
pub mod html;
pub mod inspect;
pub mod junit;
pub mod rundir;
pub mod timeline;

pub use attribution::RunIdSource;
pub use attribution::{
    attribute, expected_hash, scan_log, Attribution, BlockEvidence, Counts, Evidence, FileCounts,
    LogScan, LogSummary, MarkRef, UnownedBlocks, WriteEvidence, WriteHit, EVIDENCE_SCHEMA,
};
pub use inspect::{format_mapping, inspect, Mapping};
/// The JUnit data model `junit.xml` is written with (also reads it back).
pub use quick_junit;
pub use rundir::RunDir;
pub use timeline::{bad_state_marks, Alignment, BadStateMark, RoundTimeline};

use std::path::{Path, PathBuf};

/// Errors of this crate. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the run directory could not be read.
    #[error("cannot read {}: {source}; pass a run directory e4race wrote (runs/<time>-<scenario>-<kernel>)", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file of the run directory could not be written.
    #[error("cannot write {}: {source}; check free space and permissions of the run directory", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file does not parse.
    #[error("{} does not parse ({source}); it was cut short or written by an incompatible e4race", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// report.json could not be read.
    #[error(transparent)]
    Report(#[from] e4race_report::ReportError),
    /// The write log could not be read.
    #[error("write log: {0}")]
    Log(#[from] writelog::Error),
    /// The image could not be read.
    #[error("ext4 image {}: {source}", path.display())]
    Image {
        path: PathBuf,
        #[source]
        source: ext4_reader::Error,
    },
    /// The tags' run id is nowhere to be found.
    #[error("the run id of {} is unknown: report.json has no run_id, agent.jsonl has no workload request and no tagged block could be read from disk.img; attribution needs it to recompute the tags", .0.display())]
    NoRunId(PathBuf),
    /// A point-in-time inspection needs the written data.
    #[error("{} was recorded with hashes only, so the disk cannot be rebuilt at {at}; re-run the scenario with --log-data (or omit --at to inspect the final disk.img)", path.display())]
    NoLogData { path: PathBuf, at: String },
    /// The final image is gone.
    #[error("{} is gone (runs that pass delete it unless --keep-image was given); re-run with --keep-image, or pass --at with a log recorded with --log-data", .0.display())]
    NoImage(PathBuf),
    /// The file is not in the run.
    #[error("{path}: {detail}")]
    NoSuchFile { path: String, detail: String },
    /// The JUnit XML could not be produced.
    #[error("JUnit XML: {0}")]
    Junit(String),
    /// Anything else, with its explanation.
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What [`write_artifacts`] wrote, and what it could not do.
#[derive(Debug, Default, Clone)]
pub struct Artifacts {
    pub html: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    pub evidence: Option<PathBuf>,
    /// Steps that failed or were skipped; the others were still done.
    pub warnings: Vec<String>,
}

/// Writes `report.html`, `junit.xml` and (when the run has lost blocks and a write log)
/// `evidence.json` into the run directory `dir`. Only a missing or unreadable `report.json`
/// is an error; every other failure becomes a warning and the remaining files are still
/// written.
pub fn write_artifacts(dir: &Path) -> Result<Artifacts> {
    let run = RunDir::load(dir)?;
    let mut out = Artifacts {
        warnings: run.warnings.clone(),
        ..Default::default()
    };
    let log_path = dir.join("writes.log");
    let mut scan = None;
    let mut evidence = None;
    if log_path.is_file() {
        match run.evidence(&log_path) {
            Ok((s, e)) => {
                scan = Some(s);
                evidence = e;
            }
            Err(e) => out.warnings.push(format!("attribution skipped: {e}")),
        }
    }
    if let Some(ev) = &evidence {
        let p = dir.join("evidence.json");
        match serde_json::to_string_pretty(ev) {
            Ok(text) => match std::fs::write(&p, text) {
                Ok(()) => out.evidence = Some(p),
                Err(source) => out
                    .warnings
                    .push(Error::Write { path: p, source }.to_string()),
            },
            Err(e) => out.warnings.push(format!("evidence.json: {e}")),
        }
    }
    let p = dir.join("report.html");
    let page = html::render(&run, evidence.as_ref(), scan.as_ref());
    match std::fs::write(&p, page) {
        Ok(()) => out.html = Some(p),
        Err(source) => out
            .warnings
            .push(Error::Write { path: p, source }.to_string()),
    }
    let p = dir.join("junit.xml");
    match junit::write(&run, &p) {
        Ok(()) => out.junit = Some(p),
        Err(e) => out.warnings.push(e.to_string()),
    }
    Ok(out)
}
