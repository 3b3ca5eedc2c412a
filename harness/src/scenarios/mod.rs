//! The scenarios: what runs in the guest, and how the host judges it.
//!
//! Each scenario is one file here: a clap `Args` struct (its options) that implements
//! [`Scenario`], plus its `mod` line and one line in [`scenario_list!`] below. Everything else
//! (the command line, the plan, the reproduce command, the run directory, the report) is
//! shared. A scenario whose guest side is new adds a `GuestWorkload` in the agent (its own
//! file and one line in `guest_workloads!`) and calls it with `GuestSession::run_workload`.

pub mod defrag_mmap;
pub mod extents_flip;
pub mod fsync_only;
pub mod migrate_mmap;
pub mod msync_only;
mod race;
pub mod session;
pub mod smoke;
pub mod tagged_files;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::RunConfig;
use crate::disk::TestDisk;
use crate::error::RunError;
use crate::progress::Progress;
use crate::report::{Exercise, Finding};
pub use session::GuestSession;

/// The scenario registry: `e4race run NAME` for each entry (the variant's kebab-case name),
/// with the entry's doc comment as its help. cli.rs expands it into its clap subcommands
/// (`scenario_list!(scenario_registry)`), so clap stays in cli.rs and this module does not
/// import it.
macro_rules! scenario_list {
    ($registry:ident) => {
        $registry! {
            /// Boot, mkfs + mount ext4 on the test disk, write a tagged pattern, fsync, read it back,
            /// unmount, then `e2fsck -fn` on the host. The foundation every other scenario builds on.
            Smoke => $crate::scenarios::smoke::SmokeArgs,
            /// Boot, then crash the kernel on purpose (sysrq c). Checks that a kernel panic ends the run
            /// as KERNEL-ERROR with the panic line; the expected exit code is 3.
            PanicSelftest => $crate::scenarios::smoke::PanicSelftestArgs,
            /// Race online defrag (EXT4_IOC_MOVE_EXT with a fallocated donor, or the real e4defrag)
            /// against mmap writers that fill holes and overwrite blocks with a new generation, then
            /// check every block holds the newest acknowledged generation.
            DefragMmap => $crate::scenarios::defrag_mmap::DefragMmapArgs,
            /// Race EXT4_IOC_MIGRATE (indirect → extent) against mmap writers that fill holes in the
            /// same files, then check every acknowledged block on the host (content, e2fsck,
            /// postconditions, kernel log).
            MigrateMmap => $crate::scenarios::migrate_mmap::MigrateMmapArgs,
            /// Write tagged files with pwrite, fsync each once, unmount, and check every block on the
            /// host: no race, the durability baseline (and the worked example of adding a scenario).
            FsyncOnly => $crate::scenarios::fsync_only::FsyncOnlyArgs,
            /// Store tagged blocks into sparse files through a shared mapping, msync + fsync,
            /// unmount, and check every block on the host: no race, the mmap durability baseline.
            MsyncOnly => $crate::scenarios::msync_only::MsyncOnlyArgs,
            /// Recreate files, `chattr -e`, append and `chattr +e` them over and over while sync(2)
            /// loops (writeback racing the flip of EXT4_EXTENTS_FL), then check the last version of
            /// each file on the host (content, e2fsck, kernel log).
            ExtentsFlip => $crate::scenarios::extents_flip::ExtentsFlipArgs,
        }
    };
}
pub(crate) use scenario_list;

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
    /// The records of the rounds the agent reported done so far (`RoundDone`).
    pub rounds_done: Vec<e4race_protocol::RoundRecord>,
}

/// A scenario's drive future (not `Send`: progress callbacks borrow the context).
pub type DriveFuture<'a> = Pin<Box<dyn Future<Output = Result<ScenarioOutcome, RunError>> + 'a>>;

/// Whether a scenario's runs are seeded, and with what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seeding {
    /// Nothing random: no `--seed`.
    Unseeded,
    /// `--seed` was given.
    Fixed(u64),
    /// Seeded, but the user gave none: a random one is drawn and the reproduce command fixes it.
    Random,
}

impl Seeding {
    /// A seeded scenario's seeding: the user's `--seed`, or a random one.
    pub fn of(seed: Option<u64>) -> Self {
        seed.map_or(Seeding::Random, Seeding::Fixed)
    }
}

/// plan.json's `params`: every scenario's options serialize as they are.
pub trait ScenarioParams {
    fn params(&self) -> serde_json::Value;
}

impl<T: Serialize> ScenarioParams for T {
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// One scenario: its options, turned into a plan, and how it drives the booted guest.
pub trait Scenario: ScenarioParams + std::fmt::Debug + Send + Sync {
    /// Its name on the command line and in reports (`e4race run NAME`).
    fn name(&self) -> &'static str;
    /// Its own options as words of `e4race run NAME`, with the run's seed (if seeded) fixed.
    fn argv(&self, seed: Option<u64>) -> Vec<String>;
    /// Every one of its own options set off its default, as words of `e4race run NAME`. The
    /// reproduce round-trip test (cli.rs) checks that each comes back from the reproduce
    /// command, and that no option is left out of these samples. (Only that test calls it.)
    #[cfg_attr(not(test), allow(dead_code))]
    fn off_default_argv() -> Vec<String>
    where
        Self: Sized;
    fn seeding(&self) -> Seeding {
        Seeding::Unseeded
    }
    /// The test disk's size.
    fn disk_mib(&self) -> u64 {
        64
    }
    /// Whether blkrec records the written data too (replay to any point), not only hashes.
    fn log_data(&self) -> bool {
        false
    }
    /// Drives the booted guest through the scenario, ends the session, and judges the result.
    fn drive<'a>(
        &'a self,
        plan: &'a ScenarioPlan,
        session: GuestSession,
        ctx: &'a mut RunContext,
    ) -> DriveFuture<'a>;
}

/// Everything needed to re-run a scenario; saved as plan.json.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioPlan {
    pub name: String,
    pub seed: Option<u64>,
    /// The run id the guest puts in its block tags: fresh for every run, so two runs never
    /// share tags.
    pub run_id: Option<u64>,
    pub mutant: Option<String>,
    pub params: serde_json::Value,
    pub disk_mib: u64,
    /// Record write data too (not only hashes) when blkrec serves the disk.
    pub log_data: bool,
    pub reproduce: String,
    #[serde(skip)]
    pub scenario: Arc<dyn Scenario>,
}

impl ScenarioPlan {
    /// The seed of a seeded scenario (0 for others), and the run id.
    pub fn seed_and_run_id(&self) -> (u64, u64) {
        (self.seed.unwrap_or(0), self.run_id.unwrap_or(0))
    }
}

/// Drives the booted guest through the scenario, powers it off, and judges the result.
pub async fn drive(
    plan: &ScenarioPlan,
    session: GuestSession,
    ctx: &mut RunContext,
) -> Result<ScenarioOutcome, RunError> {
    let scenario = plan.scenario.clone();
    scenario.drive(plan, session, ctx).await
}

/// How a value of a command-line enum is spelled on the command line (`--driver move-ext`).
pub fn value_name<T: clap::ValueEnum>(v: T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// `e4race ARGS...` with shell quoting.
pub fn reproduce_command(args: &[String]) -> String {
    std::iter::once("e4race".to_string())
        .chain(args.iter().map(|a| crate::vm::shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The plan of `scenario` under `config`: the seed (the user's, or a random one that the
/// reproduce command then fixes), a fresh run id for the block tags, the reproduce command
/// (`e4race run NAME` + the common options + the scenario's own), the mutant label and the
/// scenario's parameters.
pub fn plan(config: &RunConfig, scenario: Arc<dyn Scenario>) -> ScenarioPlan {
    let seed = match scenario.seeding() {
        Seeding::Unseeded => None,
        Seeding::Fixed(s) => Some(s),
        Seeding::Random => Some(smoke::rand_id()),
    };
    let mut argv = vec!["run".to_string(), scenario.name().into()];
    argv.extend(config.to_argv());
    argv.extend(scenario.argv(seed));
    ScenarioPlan {
        name: scenario.name().into(),
        seed,
        run_id: Some(smoke::rand_id()),
        mutant: config.ext4.label(),
        params: scenario.params(),
        disk_mib: scenario.disk_mib(),
        log_data: scenario.log_data(),
        reproduce: reproduce_command(&argv),
        scenario,
    }
}
