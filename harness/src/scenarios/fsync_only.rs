//! `fsync-only`: write tagged files with pwrite, fsync each once, unmount, and check on the
//! host that every block is there (content, e2fsck, kernel log). No race: the baseline that
//! fsync(2) makes data durable.

use e4race_agent::fsync_only::FsyncOnly;
use e4race_agent::tagged::TaggedFilesParams;
use e4race_agent::GuestWorkload;

use crate::error::RunError;
use crate::scenarios::tagged_files::TaggedFilesArgs;
use crate::scenarios::{
    DriveFuture, GuestSession, RunContext, Scenario, ScenarioOutcome, ScenarioPlan, Seeding,
};

/// Write tagged files with pwrite in a seeded order, fsync each once, unmount, and check
/// every block on the host.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct FsyncOnlyArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub tagged: TaggedFilesArgs,
}

impl Scenario for FsyncOnlyArgs {
    fn name(&self) -> &'static str {
        "fsync-only"
    }

    fn argv(&self, seed: Option<u64>) -> Vec<String> {
        self.tagged.argv(seed)
    }

    fn off_default_argv() -> Vec<String> {
        TaggedFilesArgs::off_default_argv()
    }

    fn seeding(&self) -> Seeding {
        self.tagged.seeding()
    }

    fn disk_mib(&self) -> u64 {
        self.tagged.disk_mib()
    }

    fn drive<'a>(
        &'a self,
        plan: &'a ScenarioPlan,
        session: GuestSession,
        ctx: &'a mut RunContext,
    ) -> DriveFuture<'a> {
        Box::pin(drive(self.tagged.params(plan), session, ctx))
    }
}

async fn drive(
    params: TaggedFilesParams,
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
        .finish_and_check(ctx, FsyncOnly::NAME, params.run_id, result)
        .await
}
