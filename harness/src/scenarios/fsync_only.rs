//! `fsync-only`: write tagged files with pwrite, fsync each once, unmount, and check on the
//! host that every block is there (content, e2fsck, kernel log). No race: the baseline that
//! fsync(2) makes data durable.

use e4race_agent::fsync_only::{FsyncOnly, FsyncOnlyParams};

use crate::error::RunError;
use crate::scenarios::session::MOUNT_POINT;
use crate::scenarios::{
    DriveFuture, GuestSession, RunContext, Scenario, ScenarioOutcome, ScenarioPlan, Seeding,
};

/// Write tagged files with pwrite in a seeded order, fsync each once, unmount, and check
/// every block on the host.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct FsyncOnlyArgs {
    /// Files to write.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub files: u32,
    /// 4 KiB blocks per file.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=(1 << 20)))]
    pub blocks: u64,
    /// Seed of the write order; random when not given.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl Scenario for FsyncOnlyArgs {
    fn name(&self) -> &'static str {
        "fsync-only"
    }

    fn argv(&self, seed: Option<u64>) -> Vec<String> {
        let mut v = vec![
            "--files".into(),
            self.files.to_string(),
            "--blocks".into(),
            self.blocks.to_string(),
        ];
        if let Some(s) = seed {
            v.extend(["--seed".into(), s.to_string()]);
        }
        v
    }

    fn off_default_argv() -> Vec<String> {
        ["--files", "3", "--blocks", "9", "--seed", "5"]
            .map(String::from)
            .to_vec()
    }

    fn seeding(&self) -> Seeding {
        Seeding::of(self.seed)
    }

    fn disk_mib(&self) -> u64 {
        let data = (u64::from(self.files) * self.blocks * 4096) >> 20;
        128.max(data * 2 + 64)
    }

    fn drive<'a>(
        &'a self,
        plan: &'a ScenarioPlan,
        session: GuestSession,
        ctx: &'a mut RunContext,
    ) -> DriveFuture<'a> {
        let (seed, run_id) = plan.seed_and_run_id();
        let params = FsyncOnlyParams {
            dir: MOUNT_POINT.into(),
            run_id,
            seed,
            files: self.files,
            file_blocks: self.blocks,
        };
        Box::pin(drive(params, session, ctx))
    }
}

async fn drive(
    params: FsyncOnlyParams,
    mut session: GuestSession,
    ctx: &mut RunContext,
) -> Result<ScenarioOutcome, RunError> {
    session.fresh_ext4(ctx, &[], "").await?;
    ctx.progress.step(&format!(
        "writing {} files x {} blocks with pwrite, fsync each",
        params.files, params.file_blocks
    ));
    let result = session.run_workload::<FsyncOnly>(&params).await?;
    ctx.disk.mark("fsynced");
    session
        .finish_and_check(ctx, "fsync-only", params.run_id, result)
        .await
}
