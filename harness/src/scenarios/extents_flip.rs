//! `extents-flip`: recreate each file, `chattr -e` it (ext4_ind_migrate()), append tagged
//! blocks and `chattr +e` it (ext4_ext_migrate()), over and over, while sync(2) runs in a
//! loop; then check the last files on the host (content, e2fsck, kernel log). The
//! reproducer's shape from cb85f4d23f79 ("ext4: fix race between writepages and enabling
//! EXT4_EXTENTS_FL"): the race it fixed shows as a WARNING in ext4_add_complete_io().

use e4race_agent::extents_flip::{ExtentsFlip, ExtentsFlipParams, FlipOrder};
use e4race_agent::GuestWorkload;

use crate::error::RunError;
use crate::scenarios::session::MOUNT_POINT;
use crate::scenarios::{
    DriveFuture, GuestSession, RunContext, Scenario, ScenarioOutcome, ScenarioPlan, Seeding,
};

/// Flip files between extent and indirect mapping with appends in between while sync(2)
/// loops, and check the last version of each file on the host.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct ExtentsFlipArgs {
    /// Files flipped at once, each by its own thread.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub files: u32,
    /// Flips per file (recreate, chattr -e, append, chattr +e).
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub iterations: u32,
    /// 4 KiB blocks appended per flip.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub blocks: u64,
    /// Run sync(2) in a loop while the files flip (`--sync-loop=false`: no writeback but the
    /// kernel's own).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub sync_loop: bool,
    /// ext4 mount options. The default (none) is ext4's own: delalloc, so the appends are
    /// allocated by writeback, and dioread_nolock, so writeback of an extent-mapped file
    /// creates unwritten extents (ext4_should_dioread_nolock()).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub mount_options: String,
    /// When the appends happen: `flip-first` (chattr -e on the empty file, append, chattr +e:
    /// writeback races ext4_ext_migrate()) or `append-first` (append, chattr -e, chattr +e:
    /// ext4_ind_migrate() meets delayed blocks, and must refuse a file indirect mapping cannot
    /// hold: more than one extent, or blocks past the 12 direct slots).
    #[arg(long, value_enum, default_value_t = FlipOrderArg::FlipFirst)]
    pub order: FlipOrderArg,
    /// Blocks left as holes between two appended blocks (0: one contiguous run).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1024))]
    pub gap: u64,
    /// Seed of the delays between append and flip; random when not given.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `--order` (the agent's [`FlipOrder`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlipOrderArg {
    FlipFirst,
    AppendFirst,
}

impl FlipOrderArg {
    fn word(self) -> &'static str {
        match self {
            Self::FlipFirst => "flip-first",
            Self::AppendFirst => "append-first",
        }
    }
}

impl From<FlipOrderArg> for FlipOrder {
    fn from(o: FlipOrderArg) -> Self {
        match o {
            FlipOrderArg::FlipFirst => FlipOrder::FlipFirst,
            FlipOrderArg::AppendFirst => FlipOrder::AppendFirst,
        }
    }
}

impl Scenario for ExtentsFlipArgs {
    fn name(&self) -> &'static str {
        ExtentsFlip::NAME
    }

    fn argv(&self, seed: Option<u64>) -> Vec<String> {
        let mut v = vec![
            "--files".into(),
            self.files.to_string(),
            "--iterations".into(),
            self.iterations.to_string(),
            "--blocks".into(),
            self.blocks.to_string(),
            format!("--sync-loop={}", self.sync_loop),
            "--order".into(),
            self.order.word().into(),
            "--gap".into(),
            self.gap.to_string(),
        ];
        if !self.mount_options.is_empty() {
            v.extend(["--mount-options".into(), self.mount_options.clone()]);
        }
        if let Some(s) = seed {
            v.extend(["--seed".into(), s.to_string()]);
        }
        v
    }

    fn off_default_argv() -> Vec<String> {
        [
            "--files",
            "3",
            "--iterations",
            "40",
            "--blocks",
            "2",
            "--sync-loop=false",
            "--order",
            "append-first",
            "--gap",
            "1",
            "--mount-options",
            "nodelalloc",
            "--seed",
            "5",
        ]
        .map(String::from)
        .to_vec()
    }

    fn seeding(&self) -> Seeding {
        Seeding::of(self.seed)
    }

    fn disk_mib(&self) -> u64 {
        let span = self.blocks * (self.gap + 1);
        128.max(((u64::from(self.files) * span * 4096) >> 20) * 2 + 64)
    }

    fn drive<'a>(
        &'a self,
        plan: &'a ScenarioPlan,
        session: GuestSession,
        ctx: &'a mut RunContext,
    ) -> DriveFuture<'a> {
        let (seed, run_id) = plan.seed_and_run_id();
        let params = ExtentsFlipParams {
            dir: MOUNT_POINT.into(),
            run_id,
            seed,
            files: self.files,
            iterations: self.iterations,
            blocks: self.blocks,
            sync_loop: self.sync_loop,
            order: self.order.into(),
            gap: self.gap,
        };
        Box::pin(drive(params, &self.mount_options, session, ctx))
    }
}

async fn drive(
    params: ExtentsFlipParams,
    mount_options: &str,
    mut session: GuestSession,
    ctx: &mut RunContext,
) -> Result<ScenarioOutcome, RunError> {
    session.fresh_ext4(ctx, &[], mount_options).await?;
    ctx.progress.step(&format!(
        "flipping {} files between extents and indirect blocks, {} times each, {} block(s) appended per flip{}",
        params.files,
        params.iterations,
        params.blocks,
        if params.sync_loop { ", sync(2) looping" } else { "" }
    ));
    let result = session.run_workload::<ExtentsFlip>(&params).await?;
    ctx.disk.mark("flipped");
    session
        .finish_and_check(ctx, ExtentsFlip::NAME, params.run_id, result)
        .await
}
