//! The disk after a real power cut (`run --kill-at`): QEMU was SIGKILLed mid-workload, so
//! disk.img holds every write the device completed, flushed or not (one of the states a
//! crash may leave; the reordered ones are `check_log`'s). It gets the checks every crash
//! state gets: journal replay as the next mount does, e2fsck -fn, and every block of a round
//! whose `round-N-done` mark is in the log still there.

use std::path::Path;

use serde::{Deserialize, Serialize};
use writelog::{Kind, LogReader};

use crate::baseline::sparse_copy_path;
use crate::check::Checker;
use crate::{round_done, Result, RunInput, StateFindings};

/// What the check of a killed run's final disk found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerCut {
    pub findings: StateFindings,
    /// Rounds whose done mark reached the log before the kill.
    pub rounds_done: usize,
    /// Their acknowledged blocks: the ones the check required.
    pub durable_blocks: usize,
    /// The last record in the log, and the last mark before the kill.
    pub last_seq: u64,
    pub last_mark: Option<String>,
}

/// Checks `run_dir`'s disk.img as the disk after a power cut (on a sparse copy in
/// `work_dir`; disk.img stays as the device left it).
pub fn check_power_cut(run_dir: &Path, work_dir: &Path) -> Result<PowerCut> {
    let input = RunInput::from_run_dir(run_dir)?;
    let mut d = input.durability;
    let mut out = PowerCut::default();
    let mut reader = LogReader::open(&input.log)?;
    for rec in reader.by_ref() {
        let rec = rec?;
        out.last_seq = rec.seq;
        if rec.kind == Kind::Mark {
            let name = rec.mark.clone().unwrap_or_default();
            if let Some(n) = round_done(&name) {
                d.done_at.insert(n, rec.seq);
            }
            out.last_mark = Some(name);
        }
    }
    let point = out.last_seq + 1;
    out.rounds_done = d.durable_count(point);
    out.durable_blocks = d
        .rounds
        .iter()
        .filter(|r| d.done_at.contains_key(&r.round))
        .flat_map(|r| &r.files)
        .map(|f| f.acknowledged_generations().len())
        .sum();
    let copy = work_dir.join("power-cut.img");
    sparse_copy_path(&run_dir.join("disk.img"), &copy)?;
    let checker = Checker::new(work_dir.join("power-cut.e2undo"))?;
    let checked = checker.check_copy(&copy, point, &d);
    let _ = std::fs::remove_file(&copy);
    out.findings = checked?;
    Ok(out)
}
