//! `defrag-mmap`: online defrag (EXT4_IOC_MOVE_EXT, or the real e4defrag) racing mmap writers
//! that fill holes and overwrite blocks with a new tag generation.
//!
//! MOVE_EXT swaps the file's blocks for a donor's after copying the data, page by page
//! (move_extent_per_page / move_extent_per_folio, fs/ext4/move_extent.c), while page faults
//! keep storing into the same pages. The content oracle checks every acknowledged block holds
//! the newest generation: an older one is stale data (a write lost to the swap), a hole or
//! zeros is a lost block. On a correct kernel we expect neither, with stores inside the move
//! windows as evidence that the race was exercised.

use e4race_protocol::{Command, DefragDriver, DefragMmapParams, RaceResult};

use crate::report::{DefragExercise, Exercise, HostCheck};
use crate::scenarios::session::MOUNT_POINT;
use crate::scenarios::{
    race, DriveFuture, GuestSession, RunContext, Scenario, ScenarioPlan, Seeding,
};

#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct DefragMmapArgs {
    /// Files raced at once per round.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub files: u32,
    /// Size of each file in MiB (built fragmented: 32 KiB chunks interleaved with a filler file).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub size_mib: u64,
    /// Blocks (4 KiB) per EXT4_IOC_MOVE_EXT call.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub move_blocks: u64,
    /// mmap writer threads per file.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub writers: u32,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Stop starting rounds after this many seconds in the guest (0: no limit).
    #[arg(long, default_value_t = 40)]
    pub duration: u32,
    #[arg(long)]
    pub seed: Option<u64>,
    /// ext4 mount options; nodelalloc makes a hole fill allocate in the page fault.
    #[arg(long, default_value = "nodelalloc")]
    pub mount_options: String,
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

impl DefragMmapArgs {
    pub fn to_params(&self, seed: u64, run_id: u64) -> DefragMmapParams {
        DefragMmapParams {
            dir: MOUNT_POINT.into(),
            run_id,
            seed,
            files: self.files,
            file_blocks: (self.size_mib << 20) / 4096,
            move_blocks: self.move_blocks,
            writers: self.writers,
            rounds: self.rounds,
            duration_s: self.duration,
            driver: self.driver,
            prealloc: self.prealloc,
            flush_ms: self.flush_ms,
            aim: self.aim,
        }
    }

    /// Each round keeps its files; fillers are deleted; donors need room while they exist.
    pub fn disk_mib(&self) -> u64 {
        let per_round = u64::from(self.files) * self.size_mib;
        u64::from(self.rounds) * per_round + 3 * per_round + 160
    }

    fn argv_with_seed(&self, seed: u64) -> Vec<String> {
        vec![
            "--files".into(),
            self.files.to_string(),
            "--size-mib".into(),
            self.size_mib.to_string(),
            "--move-blocks".into(),
            self.move_blocks.to_string(),
            "--writers".into(),
            self.writers.to_string(),
            "--rounds".into(),
            self.rounds.to_string(),
            "--duration".into(),
            self.duration.to_string(),
            "--seed".into(),
            seed.to_string(),
            "--mount-options".into(),
            self.mount_options.clone(),
            "--driver".into(),
            super::value_name(self.driver),
            format!("--prealloc={}", self.prealloc),
            "--flush-ms".into(),
            self.flush_ms.to_string(),
            format!("--aim={}", self.aim),
        ]
    }
}

impl Scenario for DefragMmapArgs {
    fn name(&self) -> &'static str {
        "defrag-mmap"
    }

    fn argv(&self, seed: Option<u64>) -> Vec<String> {
        self.argv_with_seed(seed.unwrap_or(0))
    }

    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn seeding(&self) -> Seeding {
        self.seed.map_or(Seeding::Random, Seeding::Fixed)
    }

    fn disk_mib(&self) -> u64 {
        DefragMmapArgs::disk_mib(self)
    }

    fn drive<'a>(
        &'a self,
        plan: &'a ScenarioPlan,
        session: GuestSession,
        ctx: &'a mut RunContext,
    ) -> DriveFuture<'a> {
        let (seed, run_id) = plan.seed_and_run_id();
        let params = self.to_params(seed, run_id);
        ctx.progress.step(&format!(
            "racing {:?}: {} rounds x {} fragmented files x {} MiB, seed {}",
            params.driver,
            params.rounds,
            params.files,
            (params.file_blocks * 4096) >> 20,
            params.seed
        ));
        Box::pin(race::drive(
            Command::DefragMmap(params),
            run_id,
            &self.mount_options,
            exercise,
            session,
            ctx,
        ))
    }
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
