//! `migrate-mmap`: EXT4_IOC_MIGRATE racing mmap writers that fill holes (the founding bug,
//! ext4 2008 "Fix race between migration and mmap write").
//!
//! Why it can lose blocks: migration builds the extent tree from the indirect map under
//! i_data_sem, but a page fault that fills a hole (ext4_page_mkwrite → block allocation with
//! nodelalloc) does not take the inode lock migration holds. A block allocated into the old
//! indirect map after the copy is dropped when the new i_data is swapped in. The fix clears
//! EXT4_STATE_EXT_MIGRATE on every non-extent allocation so migration fails with EAGAIN
//! instead. On a correct kernel we therefore expect no lost block, but some EAGAINs and
//! writes inside the migration windows (the exercise counters that show the race ran).

use e4race_protocol::{
    Command, HolePattern, MigrateDirection, MigrateDriver, MigrateMmapParams, RaceResult,
};

use crate::report::{Exercise, HostCheck, MigrateExercise};
use crate::scenarios::race::{RaceArgs, RaceScenario};

/// The knobs, all settable from the command line. Defaults are tuned to find the seed bug
/// quickly under TCG on 2 vCPUs while finishing well inside 90 s.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct MigrateMmapArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub race: RaceArgs,
    /// Size of each file in MiB.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub size_mib: u64,
    /// Which blocks start as holes: alternate (odd blocks), random, sparse (all but block 0).
    #[arg(long, value_enum, default_value = "alternate")]
    pub holes: HolePattern,
    /// How to migrate: the ioctl directly, or the real `chattr +e`.
    #[arg(long, value_enum, default_value = "ioctl")]
    pub driver: MigrateDriver,
    /// While each migration runs, call syncfs(2) every N ms, so jbd2 commits mid-migration
    /// (its handle restarts in ext4_journal_ensure_credits() and the transaction commits with
    /// the migration half done): what crash states need to see migrate's own crash bugs.
    /// 0: only the kernel's commits.
    #[arg(long, default_value_t = 0, value_name = "MS", value_parser = clap::value_parser!(u32).range(0..=60_000))]
    pub commit_ms: u32,
    /// Which way files are converted. to-extents: EXT4_IOC_MIGRATE (ext4_ext_migrate()).
    /// to-indirect: clearing EXT4_EXTENTS_FL (`chattr -e`, ext4_ind_migrate()), which only
    /// converts a file of one extent below block 12, so those files are 12 blocks with a
    /// leading hole, one prefilled run and holes after it (--size-mib and --holes do not
    /// apply to them). both: even files to extents, odd files to indirect.
    #[arg(long, value_enum, default_value = "to-extents")]
    pub direction: MigrateDirection,
}

impl RaceScenario for MigrateMmapArgs {
    const NAME: &'static str = "migrate-mmap";

    fn off_default_argv() -> Vec<String> {
        let mut v = RaceArgs::off_default_argv("nodelalloc,data=ordered");
        v.extend(
            [
                "--size-mib",
                "3",
                "--holes",
                "random",
                "--driver",
                "chattr",
                "--commit-ms",
                "20",
                "--direction",
                "both",
            ]
            .map(String::from),
        );
        v
    }

    fn own_argv(&self) -> Vec<String> {
        vec![
            "--size-mib".into(),
            self.size_mib.to_string(),
            "--holes".into(),
            super::value_name(self.holes),
            "--driver".into(),
            super::value_name(self.driver),
            "--commit-ms".into(),
            self.commit_ms.to_string(),
            "--direction".into(),
            super::value_name(self.direction),
        ]
    }

    /// Room for every round's files plus metadata and journal.
    fn disk_mib(&self) -> u64 {
        let data = u64::from(self.race.rounds) * u64::from(self.race.files) * self.size_mib;
        data + data / 5 + 160
    }

    fn workload(&self, seed: u64, run_id: u64) -> (String, Command) {
        let params = MigrateMmapParams {
            shape: self.race.shape(self.size_mib, seed, run_id),
            hole_pattern: self.holes,
            driver: self.driver,
            commit_ms: self.commit_ms,
            direction: self.direction,
        };
        let what = match params.direction {
            MigrateDirection::ToExtents => "EXT4_IOC_MIGRATE",
            MigrateDirection::ToIndirect => "ext4_ind_migrate",
            MigrateDirection::Both => "EXT4_IOC_MIGRATE and ext4_ind_migrate",
        };
        let what = format!("{what} ({})", super::value_name(params.driver));
        (what, Command::MigrateMmap(params))
    }

    fn race(&self) -> &RaceArgs {
        &self.race
    }

    fn exercise(r: &RaceResult, host: HostCheck) -> Exercise {
        let files: Vec<_> = r.rounds.iter().flat_map(|x| x.files.iter()).collect();
        let mut migrations: std::collections::BTreeMap<String, usize> = Default::default();
        for m in files.iter().filter_map(|f| f.migration.as_ref()) {
            let mut k = match m.error {
                0 => "ok".to_string(),
                e => nix::errno::Errno::from_raw(e).to_string(),
            };
            if m.direction == MigrateDirection::ToIndirect {
                k = format!("to-indirect {k}");
            }
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
}
