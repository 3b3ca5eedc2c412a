//! `msync-only`: store tagged blocks into sparse files through a shared mapping, msync and
//! fsync, unmount, and check on the host that every block is there (content, e2fsck, kernel
//! log). No race: the baseline that a shared mapping's writeback is durable. The worked
//! example of adding a scenario: this file, the agent's msync_only.rs, and one registry
//! line on each side (docs/architecture.md, "Adding a scenario").

use e4race_agent::msync_only::MsyncOnly;
use e4race_agent::tagged::TaggedFilesParams;
use e4race_agent::GuestWorkload;

use crate::error::RunError;
use crate::scenarios::tagged_files::TaggedFilesArgs;
use crate::scenarios::{
    DriveFuture, GuestSession, RunContext, Scenario, ScenarioOutcome, ScenarioPlan, Seeding,
};

/// Store tagged blocks into sparse files through a shared mapping in a seeded order, msync
/// and fsync, unmount, and check every block on the host.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct MsyncOnlyArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub tagged: TaggedFilesArgs,
    /// ext4 mount options. With the default nodelalloc, each store's page fault allocates
    /// its block (ext4_page_mkwrite); with delalloc, writeback does.
    #[arg(long, default_value = "nodelalloc")]
    pub mount_options: String,
}

impl Scenario for MsyncOnlyArgs {
    fn name(&self) -> &'static str {
        MsyncOnly::NAME
    }

    fn argv(&self, seed: Option<u64>) -> Vec<String> {
        let mut v = self.tagged.argv(seed);
        v.extend(["--mount-options".into(), self.mount_options.clone()]);
        v
    }

    fn off_default_argv() -> Vec<String> {
        let mut v = TaggedFilesArgs::off_default_argv();
        v.extend(["--mount-options".into(), "delalloc".into()]);
        v
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
        let params = self.tagged.params(plan);
        Box::pin(drive(params, &self.mount_options, session, ctx))
    }
}

async fn drive(
    params: TaggedFilesParams,
    mount_options: &str,
    mut session: GuestSession,
    ctx: &mut RunContext,
) -> Result<ScenarioOutcome, RunError> {
    session.fresh_ext4(ctx, &[], mount_options).await?;
    ctx.progress.step(&format!(
        "storing {} files x {} blocks through shared mappings, msync + fsync each",
        params.files, params.file_blocks
    ));
    let result = session.run_workload::<MsyncOnly>(&params).await?;
    ctx.disk.mark("msynced");
    session
        .finish_and_check(ctx, MsyncOnly::NAME, params.run_id, result)
        .await
}
