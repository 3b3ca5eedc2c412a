//! `defrag-mmap`: online defrag (EXT4_IOC_MOVE_EXT, or the real e4defrag) racing mmap writers
//! that fill holes and overwrite blocks with a new tag generation.
//!
//! MOVE_EXT swaps the file's blocks for a donor's after copying the data, page by page
//! (move_extent_per_page / move_extent_per_folio, fs/ext4/move_extent.c), while page faults
//! keep storing into the same pages. The content oracle checks every acknowledged block holds
//! the newest generation: an older one is stale data (a write lost to the swap), a hole or
//! zeros is a lost block. On a correct kernel we expect neither, with stores inside the move
//! windows as the exercise counters that show the race ran.

use e4race_protocol::{Command, DefragDriver, DefragMmapParams, RaceResult};

use crate::report::{DefragExercise, Exercise, HostCheck};
use crate::scenarios::race::{RaceArgs, RaceScenario};

#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct DefragMmapArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub race: RaceArgs,
    /// Size of each file in MiB (built fragmented: 32 KiB chunks interleaved with a filler file).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub size_mib: u64,
    /// Blocks (4 KiB) per EXT4_IOC_MOVE_EXT call.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub move_blocks: u64,
    /// The EXT4_IOC_MOVE_EXT driver (move-ext) or the real e4defrag (e4defrag).
    #[arg(long, value_enum, default_value = "move-ext")]
    pub driver: DefragDriver,
    /// Fallocate half of the holes first (unwritten extents the writers then initialise;
    /// MOVE_EXT swaps unwritten ranges without copying). --prealloc=false for plain holes.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub prealloc: bool,
    /// Start writeback of each raced file every N ms while moves run (0: leave it to the
    /// kernel), so stores reach the disk and unwritten extents convert mid-move.
    #[arg(long, default_value_t = 5)]
    pub flush_ms: u32,
    /// Aim the writers at the mover: stores go in ascending order, each held back until the
    /// MOVE_EXT call in progress covers its block (move-ext driver only). --aim=false for a
    /// random store order that ignores the mover.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub aim: bool,
}

impl RaceScenario for DefragMmapArgs {
    const NAME: &'static str = "defrag-mmap";

    fn off_default_argv() -> Vec<String> {
        let mut v = RaceArgs::off_default_argv("nodelalloc,noauto_da_alloc");
        v.extend(
            [
                "--size-mib",
                "3",
                "--move-blocks",
                "16",
                "--driver",
                "e4defrag",
                "--prealloc=false",
                "--flush-ms",
                "7",
                "--aim=false",
            ]
            .map(String::from),
        );
        v
    }

    fn own_argv(&self) -> Vec<String> {
        vec![
            "--size-mib".into(),
            self.size_mib.to_string(),
            "--move-blocks".into(),
            self.move_blocks.to_string(),
            "--driver".into(),
            super::value_name(self.driver),
            format!("--prealloc={}", self.prealloc),
            "--flush-ms".into(),
            self.flush_ms.to_string(),
            format!("--aim={}", self.aim),
        ]
    }

    /// Each round keeps its files; fillers are deleted; donors need room while they exist.
    fn disk_mib(&self) -> u64 {
        let per_round = u64::from(self.race.files) * self.size_mib;
        u64::from(self.race.rounds) * per_round + 3 * per_round + 160
    }

    fn workload(&self, seed: u64, run_id: u64) -> (String, Command) {
        let params = DefragMmapParams {
            shape: self.race.shape(self.size_mib, seed, run_id),
            move_blocks: self.move_blocks,
            driver: self.driver,
            prealloc: self.prealloc,
            flush_ms: self.flush_ms,
            aim: self.aim,
        };
        let what = format!("EXT4_IOC_MOVE_EXT ({})", super::value_name(params.driver));
        (what, Command::DefragMmap(params))
    }

    fn race(&self) -> &RaceArgs {
        &self.race
    }

    fn exercise(r: &RaceResult, host: HostCheck) -> Exercise {
        let files: Vec<_> = r.rounds.iter().flat_map(|x| x.files.iter()).collect();
        let mut moves: std::collections::BTreeMap<String, usize> = Default::default();
        for m in files.iter().flat_map(|f| f.moves.iter()) {
            let k = match (m.error, m.e4defrag) {
                (0, _) => "ok".to_string(),
                (e, true) => format!("e4defrag exit {e}"),
                (e, false) => nix::errno::Errno::from_raw(e).to_string(),
            };
            *moves.entry(k).or_default() += 1;
        }
        let covered = files
            .iter()
            .map(|f| f.stores_in_covering_move())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let mean = |v: &dyn Fn(&&e4race_protocol::FileRecord) -> u32| {
            (files.iter().map(|f| f64::from(v(f))).sum::<f64>() / files.len().max(1) as f64).round()
        };
        Exercise::DefragMmap(DefragExercise {
            rounds: r.rounds.len(),
            files: files.len(),
            hole_fills: files.iter().map(|f| f.hole_lblks.len()).sum(),
            overwrites: files.iter().map(|f| f.overwrites.len()).sum(),
            stores_inside_move_windows: files.iter().map(|f| f.writes_in_move_windows()).sum(),
            stores_into_range_being_moved: covered.0,
            unwritten_fills_into_range_being_moved: covered.1,
            preallocated_blocks: files.iter().map(|f| f.unwritten_lblks.len()).sum(),
            moves,
            mean_extents_before: mean(&|f| f.extents_before),
            mean_extents_after: mean(&|f| f.after.extents),
            host,
        })
    }
}
