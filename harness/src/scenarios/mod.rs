//! The scenarios: what runs in the guest, and how the host judges it.

pub mod defrag_mmap;
pub mod migrate_mmap;
mod race;
pub mod smoke;

use serde::Serialize;

use crate::config::{ConfigError, RunConfig};

use crate::run::{RunContext, RunError, ScenarioOutcome};
use crate::vm::Vm;

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
fn base_plan(
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

/// Turns the parsed command line into a validated config and a plan.
pub fn plan(cmd: crate::cli::ScenarioCmd) -> Result<(RunConfig, ScenarioPlan), ConfigError> {
    use crate::cli::ScenarioCmd;
    match cmd {
        ScenarioCmd::Smoke { common, blocks } => {
            let common = RunConfig::try_from(common)?;
            let plan = ScenarioPlan {
                disk_mib: 256.max(((blocks * 4096) >> 20) * 2 + 64),
                log_data: true,
                ..base_plan(
                    "smoke",
                    &common,
                    vec!["--blocks".into(), blocks.to_string()],
                    serde_json::json!({ "blocks": blocks }),
                    ScenarioKind::Smoke { blocks },
                )
            };
            Ok((common, plan))
        }
        ScenarioCmd::PanicSelftest { common } => {
            let common = RunConfig::try_from(common)?;
            let plan = base_plan(
                "panic-selftest",
                &common,
                Vec::new(),
                serde_json::json!({}),
                ScenarioKind::PanicSelftest,
            );
            Ok((common, plan))
        }
        ScenarioCmd::DefragMmap { common, params } => {
            let common = RunConfig::try_from(common)?;
            let seed = params.seed.unwrap_or_else(smoke::rand_id);
            let run_id = smoke::rand_id();
            let plan = ScenarioPlan {
                seed: Some(seed),
                run_id: Some(run_id),
                disk_mib: params.disk_mib(),
                ..base_plan(
                    "defrag-mmap",
                    &common,
                    params.to_argv(seed),
                    serde_json::to_value(&params).unwrap_or_default(),
                    ScenarioKind::DefragMmap(
                        params.to_params(seed, run_id),
                        params.mount_options.clone(),
                    ),
                )
            };
            Ok((common, plan))
        }
        ScenarioCmd::MigrateMmap { common, params } => {
            let common = RunConfig::try_from(common)?;
            let seed = params.seed.unwrap_or_else(smoke::rand_id);
            let run_id = smoke::rand_id();
            let plan = ScenarioPlan {
                seed: Some(seed),
                run_id: Some(run_id),
                disk_mib: params.disk_mib(),
                ..base_plan(
                    "migrate-mmap",
                    &common,
                    params.to_argv(seed),
                    serde_json::to_value(&params).unwrap_or_default(),
                    ScenarioKind::MigrateMmap(
                        params.to_params(seed, run_id),
                        params.mount_options.clone(),
                    ),
                )
            };
            Ok((common, plan))
        }
    }
}
