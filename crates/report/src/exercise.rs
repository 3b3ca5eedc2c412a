//! What each scenario exercised: the numbers that show a PASS means something (the race
//! windows were hit, the blocks were checked), typed per scenario.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a scenario exercised, tagged with the scenario's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scenario", rename_all = "kebab-case")]
pub enum Exercise {
    Smoke(SmokeExercise),
    MigrateMmap(MigrateExercise),
    DefragMmap(DefragExercise),
    /// Any workload that writes files and checks them: what a scenario with no counters of
    /// its own reports (fsync-only and other scenarios added by name), like the protocol's
    /// neutral `RaceResult`.
    Workload(WorkloadExercise),
    /// A run killed on purpose (`--kill-at`): the final disk checked as after a power cut.
    PowerCut(PowerCutExercise),
}

/// Where a `--kill-at` run was killed, and what the power-cut check of its disk required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerCutExercise {
    /// The scenario that was running (`scenario` is the exercise's own tag).
    pub killed_scenario: String,
    /// The kill point as given (`mark:NAME`, `after:SECONDS`).
    pub kill_at: String,
    /// The last mark in the write log before the kill.
    pub last_mark: Option<String>,
    /// Rounds whose done mark was logged before the kill: their blocks had to survive.
    pub rounds_done: usize,
    #[serde(flatten)]
    pub host: HostCheck,
}

/// What the host checked after a race, whatever the race.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCheck {
    /// Acknowledged blocks the content oracle read back from the final image.
    pub blocks_checked_on_host: u64,
    /// Of those, the ones not as written.
    pub lost_blocks: usize,
    /// e2fsck's one-line verdict: `clean`, or what it found.
    pub e2fsck: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmokeExercise {
    pub blocks_written: u64,
    pub blocks_read_back_ok: u64,
    pub run_id: u64,
    #[serde(flatten)]
    pub host: HostCheck,
}

/// Files written and synced by a workload: the counters every scenario without its own have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadExercise {
    /// The scenario's name (`fsync-only`, ...).
    pub workload: String,
    pub files: usize,
    /// Of those, the ones whose fsync(2)/msync(2) succeeded (their blocks are acknowledged).
    pub files_synced: usize,
    pub blocks_written: u64,
    #[serde(flatten)]
    pub host: HostCheck,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MigrateExercise {
    pub rounds: usize,
    pub files: usize,
    pub hole_writes: usize,
    /// Hole stores that landed while EXT4_IOC_MIGRATE ran on the file: without them the race
    /// was not exercised.
    pub hole_writes_inside_migration_windows: usize,
    /// Migration calls by outcome: `ok` or the errno's name.
    pub migrations: BTreeMap<String, usize>,
    pub mean_migration_window_ms: f64,
    #[serde(flatten)]
    pub host: HostCheck,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DefragExercise {
    pub rounds: usize,
    pub files: usize,
    pub hole_fills: usize,
    pub overwrites: usize,
    pub stores_inside_move_windows: usize,
    /// Stores into the very range a MOVE_EXT call was swapping.
    pub stores_into_range_being_moved: usize,
    /// Of those, fills of preallocated (unwritten) blocks.
    pub unwritten_fills_into_range_being_moved: usize,
    pub preallocated_blocks: usize,
    /// Move calls by outcome: `ok`, the errno's name, or `e4defrag exit N`.
    pub moves: BTreeMap<String, usize>,
    pub mean_extents_before: f64,
    pub mean_extents_after: f64,
    #[serde(flatten)]
    pub host: HostCheck,
}

impl Exercise {
    /// How many files the race checked, and what each one stands for (one migration call
    /// per file in migrate-mmap).
    pub fn files_label(&self) -> Option<(usize, &'static str)> {
        match self {
            Exercise::Smoke(_) | Exercise::Workload(_) | Exercise::PowerCut(_) => None,
            Exercise::MigrateMmap(e) => Some((e.files, "migrations")),
            Exercise::DefragMmap(e) => Some((e.files, "files")),
        }
    }

    /// What the host checked, for every scenario that checks blocks.
    pub fn host(&self) -> &HostCheck {
        match self {
            Exercise::Smoke(e) => &e.host,
            Exercise::MigrateMmap(e) => &e.host,
            Exercise::DefragMmap(e) => &e.host,
            Exercise::Workload(e) => &e.host,
            Exercise::PowerCut(e) => &e.host,
        }
    }

    /// `name: value` lines for the summary, in a fixed order.
    pub fn lines(&self) -> Vec<(&'static str, String)> {
        let map = |m: &BTreeMap<String, usize>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut v: Vec<(&'static str, String)> = match self {
            Exercise::Smoke(e) => vec![
                ("blocks written", e.blocks_written.to_string()),
                ("blocks read back ok", e.blocks_read_back_ok.to_string()),
                ("run id", e.run_id.to_string()),
            ],
            Exercise::PowerCut(e) => vec![
                ("killed", format!("{} at {}", e.killed_scenario, e.kill_at)),
                (
                    "last mark before the kill",
                    e.last_mark.clone().unwrap_or_else(|| "none".into()),
                ),
                ("rounds done before the kill", e.rounds_done.to_string()),
            ],
            Exercise::Workload(e) => vec![
                ("workload", e.workload.clone()),
                ("files", e.files.to_string()),
                ("files synced", e.files_synced.to_string()),
                ("blocks written", e.blocks_written.to_string()),
            ],
            Exercise::MigrateMmap(e) => vec![
                ("rounds", e.rounds.to_string()),
                ("files", e.files.to_string()),
                ("hole writes", e.hole_writes.to_string()),
                (
                    "hole writes inside migration windows",
                    e.hole_writes_inside_migration_windows.to_string(),
                ),
                ("migrations", map(&e.migrations)),
                (
                    "mean migration window",
                    format!("{:.1} ms", e.mean_migration_window_ms),
                ),
            ],
            Exercise::DefragMmap(e) => vec![
                ("rounds", e.rounds.to_string()),
                ("files", e.files.to_string()),
                ("hole fills", e.hole_fills.to_string()),
                ("overwrites", e.overwrites.to_string()),
                (
                    "stores inside move windows",
                    e.stores_inside_move_windows.to_string(),
                ),
                (
                    "stores into the range being moved",
                    e.stores_into_range_being_moved.to_string(),
                ),
                (
                    "unwritten fills into the range being moved",
                    e.unwritten_fills_into_range_being_moved.to_string(),
                ),
                ("preallocated blocks", e.preallocated_blocks.to_string()),
                ("moves", map(&e.moves)),
                (
                    "mean extents before/after",
                    format!("{} / {}", e.mean_extents_before, e.mean_extents_after),
                ),
            ],
        };
        let h = self.host();
        v.push((
            "blocks checked on the host",
            h.blocks_checked_on_host.to_string(),
        ));
        v.push(("lost blocks", h.lost_blocks.to_string()));
        v.push(("e2fsck", h.e2fsck.clone()));
        v
    }
}
