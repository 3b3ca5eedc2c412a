//! The scenarios: what runs in the guest, and how the host judges it.

pub mod defrag_mmap;
pub mod migrate_mmap;
mod race;
pub mod smoke;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::config::RunConfig;
use crate::disk::TestDisk;
use crate::error::RunError;
use crate::progress::Progress;
use crate::report::{Exercise, Finding};
use crate::vm::Vm;

/// What a scenario hands to the report.
pub struct ScenarioOutcome {
    pub findings: Vec<Finding>,
    pub exercise: Exercise,
}

/// Everything a scenario needs while the guest runs.
pub struct RunContext {
    pub dir: PathBuf,
    pub progress: Progress,
    pub disk: TestDisk,
    pub command_timeout: Duration,
}

/// Everything needed to re-run a scenario; saved as plan.json.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioPlan {
    pub name: String,
    pub seed: Option<u64>,
    /// The run id the guest puts in its block tags (scenarios that tag blocks).
    pub run_id: Option<u64>,
    pub mutant: Option<String>,
    pub params: serde_json::Value,
    pub disk_mib: u64,
    /// Record write data too (not only hashes) when blkrec serves the disk.
    pub log_data: bool,
    pub reproduce: String,
    #[serde(skip)]
    pub kind: ScenarioKind,
}

#[derive(Debug, Clone)]
pub enum ScenarioKind {
    Smoke { blocks: u64 },
    PanicSelftest,
    MigrateMmap(e4race_protocol::MigrateMmapParams, String),
    DefragMmap(e4race_protocol::DefragMmapParams, String),
}

/// Drives the booted guest through the scenario, powers it off, and judges the result.
pub async fn drive(
    plan: &ScenarioPlan,
    vm: Vm,
    ctx: &mut RunContext,
) -> Result<ScenarioOutcome, RunError> {
    match &plan.kind {
        ScenarioKind::Smoke { blocks } => smoke::drive(*blocks, vm, ctx).await,
        ScenarioKind::PanicSelftest => smoke::crash(vm, ctx).await,
        ScenarioKind::DefragMmap(params, mount_options) => {
            defrag_mmap::drive(params, mount_options, vm, ctx).await
        }
        ScenarioKind::MigrateMmap(params, mount_options) => {
            migrate_mmap::drive(params, mount_options, vm, ctx).await
        }
    }
}

/// `e4race ARGS...` with shell quoting.
pub fn reproduce_command(args: &[String]) -> String {
    std::iter::once("e4race".to_string())
        .chain(args.iter().map(|a| crate::vm::shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What every plan shares: its name, the reproduce command (`e4race run NAME` + the common
/// options + the scenario's own), the mutant label and the scenario's parameters.
pub fn base_plan(
    name: &str,
    config: &RunConfig,
    scenario_argv: Vec<String>,
    params: serde_json::Value,
    kind: ScenarioKind,
) -> ScenarioPlan {
    let mut argv = vec!["run".to_string(), name.into()];
    argv.extend(config.to_argv());
    argv.extend(scenario_argv);
    ScenarioPlan {
        name: name.into(),
        seed: None,
        run_id: None,
        mutant: config.ext4.label(),
        params,
        disk_mib: 64,
        log_data: false,
        reproduce: reproduce_command(&argv),
        kind,
    }
}
