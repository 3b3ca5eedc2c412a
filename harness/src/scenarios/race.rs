//! What every race scenario does around its workload: mkfs, mount, run the workload with
//! round marks in the write log, unmount, collect the kernel log, power off, and judge the
//! final image on the host with every oracle.

use e4race_protocol::{Command, RaceResult, RaceShape, Reply};

use crate::error::RunError;
use crate::fsck;
use crate::report::{Exercise, HostCheck};
use crate::scenarios::session::MOUNT_POINT;
use crate::scenarios::{
    DriveFuture, GuestSession, RunContext, Scenario, ScenarioOutcome, ScenarioPlan, Seeding,
};
use crate::vm::AgentNote;

/// The options every race scenario shares (flattened into its own `Args`).
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct RaceArgs {
    /// Files raced at once in each round (each with its own writers and remapping thread).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub files: u32,
    /// mmap writer threads per file. 0: no writers, the remapping runs alone and the holes
    /// stay holes (a baseline for conversion bugs that need no race, such as a migration's
    /// own metadata).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..))]
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
    /// ext4 mount options. The default nodelalloc makes a store into a hole allocate its block
    /// in the page fault (ext4_page_mkwrite), inside the remapping window; with delalloc,
    /// allocation waits for writeback, which migration excludes (docs/facts.md §4).
    #[arg(long, default_value = "nodelalloc")]
    pub mount_options: String,
    /// Extra mkfs.ext4 options, after `-b 4096`: features (`-O ^metadata_csum`, `-O
    /// bigalloc -C 16384`), `-E` extended options, `-J size=N`. Empty: mke2fs.conf's defaults
    /// (with metadata_csum, extent, 64bit). The block size stays 4096: block tags are 4 KiB.
    #[arg(long, default_value = "", allow_hyphen_values = true, value_parser = parse_mkfs_options)]
    pub mkfs_options: String,
}

/// Checks `--mkfs-options`: whitespace-separated words, no block size of its own.
fn parse_mkfs_options(s: &str) -> Result<String, String> {
    let words: Vec<&str> = s.split_whitespace().collect();
    if let Some(w) = words.iter().find(|w| w.starts_with("-b")) {
        return Err(format!(
            "{w}: the block size is fixed at 4096 (the agent tags and checks 4 KiB blocks)"
        ));
    }
    if let Some(w) = words.first().filter(|w| !w.starts_with('-')) {
        return Err(format!(
            "{w}: expected an option (e.g. `-O ^metadata_csum`); the device is the test disk"
        ));
    }
    Ok(words.join(" "))
}

impl RaceArgs {
    /// The wire form, for files of `size_mib` MiB.
    pub fn shape(&self, size_mib: u64, seed: u64, run_id: u64) -> RaceShape {
        RaceShape {
            dir: MOUNT_POINT.into(),
            run_id,
            seed,
            files: self.files,
            file_blocks: (size_mib << 20) / 4096,
            writers: self.writers,
            rounds: self.rounds,
            duration_s: self.duration,
        }
    }

    /// The shared options as words of the reproduce command, with `seed` fixed.
    pub fn argv(&self, seed: Option<u64>) -> Vec<String> {
        let mut v = vec![
            "--files".to_string(),
            self.files.to_string(),
            "--writers".into(),
            self.writers.to_string(),
            "--rounds".into(),
            self.rounds.to_string(),
            "--duration".into(),
            self.duration.to_string(),
            "--mount-options".into(),
            self.mount_options.clone(),
        ];
        if !self.mkfs_options.is_empty() {
            v.extend(["--mkfs-options".into(), self.mkfs_options.clone()]);
        }
        if let Some(s) = seed.or(self.seed) {
            v.extend(["--seed".into(), s.to_string()]);
        }
        v
    }

    /// Every shared option off its default (for [`Scenario::off_default_argv`]), with the
    /// scenario's own choice of mount options.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn off_default_argv(mount_options: &str) -> Vec<String> {
        [
            "--files",
            "2",
            "--writers",
            "2",
            "--rounds",
            "5",
            "--duration",
            "11",
            "--seed",
            "42",
            "--mount-options",
            mount_options,
            "--mkfs-options",
            "-O ^metadata_csum",
        ]
        .map(String::from)
        .to_vec()
    }
}

/// A race scenario: the shared [`RaceArgs`] plus its own options, a race command for the
/// agent, and its exercise counters. Every race scenario is a [`Scenario`] through this.
pub trait RaceScenario: serde::Serialize + std::fmt::Debug + Send + Sync {
    const NAME: &'static str;
    fn race(&self) -> &RaceArgs;
    /// Its own options (beyond [`RaceArgs`]) as words of the reproduce command.
    fn own_argv(&self) -> Vec<String>;
    /// See [`Scenario::off_default_argv`]; [`RaceArgs::off_default_argv`] gives the shared half.
    #[cfg_attr(not(test), allow(dead_code))]
    fn off_default_argv() -> Vec<String>;
    fn disk_mib(&self) -> u64;
    /// The agent's command, and what the progress line calls the remapping call.
    fn workload(&self, seed: u64, run_id: u64) -> (String, Command);
    /// The numbers that show the race was exercised.
    fn exercise(result: &RaceResult, host: HostCheck) -> Exercise;
}

impl<T: RaceScenario> Scenario for T {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn argv(&self, seed: Option<u64>) -> Vec<String> {
        let mut v = self.race().argv(seed);
        v.extend(self.own_argv());
        v
    }

    fn off_default_argv() -> Vec<String> {
        <T as RaceScenario>::off_default_argv()
    }

    fn seeding(&self) -> Seeding {
        Seeding::of(self.race().seed)
    }

    fn disk_mib(&self) -> u64 {
        RaceScenario::disk_mib(self)
    }

    fn drive<'a>(
        &'a self,
        plan: &'a ScenarioPlan,
        session: GuestSession,
        ctx: &'a mut RunContext,
    ) -> DriveFuture<'a> {
        let (seed, run_id) = plan.seed_and_run_id();
        let (what, workload) = self.workload(seed, run_id);
        Box::pin(drive(
            what,
            workload,
            self.race(),
            T::exercise,
            session,
            ctx,
        ))
    }
}

/// The scenario's own numbers (that the race was exercised) from the workload's record and
/// what the host checked.
pub type ExerciseOf = fn(&RaceResult, HostCheck) -> Exercise;

/// Races `workload` (one of the race commands) on a fresh ext4 mounted with the scenario's
/// options; `what` names the remapping call in the progress line.
async fn drive(
    what: String,
    workload: Command,
    race: &RaceArgs,
    exercise: ExerciseOf,
    mut session: GuestSession,
    ctx: &mut RunContext,
) -> Result<ScenarioOutcome, RunError> {
    if let Some(s) = workload.race_shape() {
        ctx.progress.step(&format!(
            "racing {what}: {} rounds x {} files x {} MiB, {} writer(s) per file, seed {}",
            s.rounds,
            s.files,
            (s.file_blocks * 4096) >> 20,
            s.writers,
            s.seed
        ));
    }
    let run_id = workload.race_shape().map_or(0, |s| s.run_id);
    let mount_options = race.mount_options.as_str();
    let mkfs_args: Vec<String> = race
        .mkfs_options
        .split_whitespace()
        .map(String::from)
        .collect();
    session.fresh_ext4(ctx, &mkfs_args, mount_options).await?;
    ctx.disk.mark("workload-start");
    let (disk, done) = (&ctx.disk, &mut ctx.rounds_done);
    let p = ctx.progress.clone();
    let reply = session
        .request_with_notes(workload, &mut |note| match note {
            // Round boundaries as marks in the write log, ordered with the writes; the
            // record is kept in case the run is killed before the reply (--kill-at).
            AgentNote::RoundDone(round, record) => {
                disk.mark(&format!("round-{round}-done"));
                done.extend(record.cloned());
            }
            AgentNote::Progress(line) => p.step(&format!("guest: {line}")),
        })
        .await?;
    ctx.disk.mark("workload-done");
    let Reply::Race(result) = reply else {
        return Err(RunError::Other(format!(
            "unexpected reply to the workload: {reply:?}"
        )));
    };
    let _ = std::fs::write(
        ctx.dir.join("workload.json"),
        serde_json::to_string(&result).unwrap_or_default(),
    );
    let dmesg = session.finish(ctx).await?;

    let p = &ctx.progress;
    p.step("checking every acknowledged block on the host");
    let content =
        crate::oracle_glue::content(&ctx.disk.image, run_id, result.rounds.clone()).await?;
    let _ = std::fs::write(
        ctx.dir.join("content.json"),
        serde_json::to_string_pretty(&content).unwrap_or_default(),
    );
    p.step("e2fsck -fn on the host");
    let fsck = fsck::run(&ctx.disk.image).await?;
    let findings =
        crate::oracle_glue::findings(Some(&content), Some(&fsck), &result.rounds, &dmesg);
    let host = HostCheck {
        blocks_checked_on_host: content.blocks_checked,
        lost_blocks: content.lost.len(),
        e2fsck: fsck::headline(&fsck),
    };
    Ok(ScenarioOutcome {
        exercise: exercise(&result, host),
        findings,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_mkfs_options;

    #[test]
    fn mkfs_options_are_words_without_a_block_size() {
        assert_eq!(
            parse_mkfs_options("  -O ^metadata_csum   -E lazy_itable_init=0 "),
            Ok("-O ^metadata_csum -E lazy_itable_init=0".into())
        );
        assert_eq!(parse_mkfs_options(""), Ok(String::new()));
        assert!(parse_mkfs_options("-b 1024").unwrap_err().contains("4096"));
        assert!(parse_mkfs_options("/dev/vdb").is_err());
    }
}
