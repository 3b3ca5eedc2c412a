//! What crash states need from a run directory: writes.log, the disk size (plan.json) and
//! the workload record (workload.json), read by `e4race crash`, `run --crash-states` and
//! the bench's crash mode.

use std::path::{Path, PathBuf};

use crate::{Durability, Error, Result};

/// A run directory's write log, disk size and durability facts.
pub struct RunInput {
    pub log: PathBuf,
    pub disk_size: u64,
    pub durability: Durability,
    /// The scenario mounted with data=journal: file data goes through the journal too, so
    /// a state's journal replay may rewrite data blocks (no `reuse_unchanged_files`).
    pub data_journal: bool,
}

impl RunInput {
    /// Reads `dir`. A missing workload record is not an error (a scenario without one):
    /// journal replay and e2fsck still judge its states.
    pub fn from_run_dir(dir: &Path) -> Result<Self> {
        let log = dir.join("writes.log");
        if !log.exists() {
            return Err(Error::RunDir(format!(
                "{} has no writes.log: crash states need a run with the blkrec disk backend and --log-data",
                dir.display()
            )));
        }
        #[derive(serde::Deserialize)]
        struct Plan {
            disk_mib: u64,
            run_id: Option<u64>,
            #[serde(default)]
            params: serde_json::Value,
        }
        let plan_path = dir.join("plan.json");
        let plan: Plan = std::fs::read_to_string(&plan_path)
            .map_err(|e| Error::RunDir(format!("cannot read {}: {e}", plan_path.display())))
            .and_then(|s| {
                serde_json::from_str(&s).map_err(|e| {
                    Error::RunDir(format!("{} is not a plan: {e}", plan_path.display()))
                })
            })?;
        let workload_path = dir.join("workload.json");
        let rounds = match std::fs::read_to_string(&workload_path) {
            Ok(s) => {
                serde_json::from_str::<e4race_protocol::RaceResult>(&s)
                    .map_err(|e| {
                        Error::RunDir(format!(
                            "{} is not a workload record: {e}",
                            workload_path.display()
                        ))
                    })?
                    .rounds
            }
            Err(_) => Vec::new(),
        };
        let data_journal = plan
            .params
            .get("mount_options")
            .and_then(|m| m.as_str())
            .is_some_and(|m| m.split(',').any(|o| o == "data=journal"));
        Ok(RunInput {
            data_journal,
            log,
            disk_size: plan.disk_mib << 20,
            durability: Durability {
                run_id: plan.run_id.unwrap_or(0),
                rounds,
                done_at: Default::default(),
            },
        })
    }
}
