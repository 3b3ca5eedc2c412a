//! `migrate-mmap`: EXT4_IOC_MIGRATE racing mmap writers that fill holes (the founding bug,
//! ext4 2008 "Fix race between migration and mmap write").
//!
//! Why it can lose blocks: migration builds the extent tree from the indirect map under
//! i_data_sem, but a page fault that fills a hole (ext4_page_mkwrite → block allocation with
//! nodelalloc) does not take the inode lock migration holds. A block allocated into the old
//! indirect map after the copy is dropped when the new i_data is swapped in. The fix clears
//! EXT4_STATE_EXT_MIGRATE on every non-extent allocation so migration fails with EAGAIN
//! instead. On a correct kernel we therefore expect no lost block, but some EAGAINs and
//! writes inside the migration windows (the evidence that the race was exercised).

use e4race_protocol::{Command, HolePattern, MigrateDriver, MigrateMmapParams, RaceResult};

use crate::report::{Exercise, HostCheck, MigrateExercise};
use crate::scenarios::session::MOUNT_POINT;
use crate::scenarios::{
    race, DriveFuture, GuestSession, RunContext, Scenario, ScenarioPlan, Seeding,
};

/// The knobs, all settable from the command line. Defaults are tuned to find the seed bug
/// quickly under TCG on 2 vCPUs while finishing well inside 90 s.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct MigrateMmapArgs {
    /// Files raced at once in each round (each with its own writers and migrator).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub files: u32,
    /// Size of each file in MiB.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub size_mib: u64,
    /// Which blocks start as holes: alternate (odd blocks), random, sparse (all but block 0).
    #[arg(long, value_enum, default_value = "alternate")]
    pub holes: HolePattern,
    /// mmap writer threads per file.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub writers: u32,
    /// Rounds per boot, on fresh files each time.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Stop starting rounds after this many seconds in the guest (0: no limit).
    #[arg(long, default_value_t = 40)]
    pub duration: u32,
    /// Seed for every random choice (hole order, patterns); random when not given.
    #[arg(long)]
    pub seed: Option<u64>,
    /// ext4 mount options. With delalloc, allocation waits for writeback, which migration
    /// excludes, so the race needs nodelalloc (docs/facts.md §4).
    #[arg(long, default_value = "nodelalloc")]
    pub mount_options: String,
    /// How to migrate: the ioctl directly, or the real `chattr +e`.
    #[arg(long, value_enum, default_value = "ioctl")]
    pub driver: MigrateDriver,
}

impl MigrateMmapArgs {
    pub fn to_params(&self, seed: u64, run_id: u64) -> MigrateMmapParams {
        MigrateMmapParams {
            dir: MOUNT_POINT.into(),
            run_id,
            seed,
            files: self.files,
            file_blocks: (self.size_mib << 20) / 4096,
            hole_pattern: self.holes,
            writers: self.writers,
            rounds: self.rounds,
            duration_s: self.duration,
            driver: self.driver,
        }
    }

    /// Room for every round's files plus metadata and journal.
    pub fn disk_mib(&self) -> u64 {
        let data = u64::from(self.rounds) * u64::from(self.files) * self.size_mib;
        data + data / 5 + 160
    }

    fn argv_with_seed(&self, seed: u64) -> Vec<String> {
        let v = vec![
            "--files".to_string(),
            self.files.to_string(),
            "--size-mib".into(),
            self.size_mib.to_string(),
            "--holes".into(),
            super::value_name(self.holes),
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
        ];
        v
    }
}

impl Scenario for MigrateMmapArgs {
    fn name(&self) -> &'static str {
        "migrate-mmap"
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
        MigrateMmapArgs::disk_mib(self)
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
            "racing EXT4_IOC_MIGRATE: {} rounds x {} files x {} MiB, {} writer(s) per file, seed {}",
            params.rounds,
            params.files,
            (params.file_blocks * 4096) >> 20,
            params.writers,
            params.seed
        ));
        Box::pin(race::drive(
            Command::MigrateMmap(params),
            run_id,
            &self.mount_options,
            exercise,
            session,
            ctx,
        ))
    }
}

/// The numbers that show the race was exercised.
fn exercise(r: &RaceResult, host: HostCheck) -> Exercise {
    let files: Vec<_> = r.rounds.iter().flat_map(|x| x.files.iter()).collect();
    let mut migrations: std::collections::BTreeMap<String, usize> = Default::default();
    for m in files.iter().filter_map(|f| f.migration.as_ref()) {
        let k = match m.error {
            0 => "ok".to_string(),
            e => nix::errno::Errno::from_raw(e).to_string(),
        };
        *migrations.entry(k).or_default() += 1;
    }
    let window_ms: f64 = files
        .iter()
        .filter_map(|f| f.migration.as_ref())
        .map(|m| (m.end_ns.saturating_sub(m.start_ns)) as f64 / 1e6)
        .sum::<f64>()
        / files.len().max(1) as f64;
    Exercise::MigrateMmap(MigrateExercise {
        rounds: r.rounds.len(),
        files: files.len(),
        hole_writes: files.iter().map(|f| f.hole_lblks.len()).sum(),
        hole_writes_inside_migration_windows: files.iter().map(|f| f.writes_in_window()).sum(),
        migrations,
        mean_migration_window_ms: (window_ms * 10.0).round() / 10.0,
        host,
    })
}
