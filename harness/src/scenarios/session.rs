//! What every scenario does in the guest around its own workload: a fresh ext4 on the test
//! disk, requests to the agent, and the orderly end (unmount, kernel log, power off, disk
//! stopped), so that the host judges an image nobody writes to any more.

use std::time::Duration;

use e4race_agent::GuestWorkload;
use e4race_protocol::{Command, RaceResult, Reply, WorkloadCall};

use crate::error::RunError;
use crate::fsck;
use crate::report::{Exercise, HostCheck, WorkloadExercise};
use crate::scenarios::{RunContext, ScenarioOutcome};
use crate::vm::{AgentNote, Vm};

/// The test disk as the guest sees it (the first virtio-blk device).
pub const DEVICE: &str = "/dev/vda";
/// Where the agent mounts it.
pub const MOUNT_POINT: &str = "/mnt";

/// A booted guest with its agent, and the time any one request may take.
pub struct GuestSession {
    vm: Vm,
    timeout: Duration,
}

impl GuestSession {
    pub fn new(vm: Vm, ctx: &RunContext) -> Self {
        GuestSession {
            vm,
            timeout: ctx.command_timeout,
        }
    }

    /// A request whose notes nobody needs.
    pub async fn request(&mut self, command: Command) -> Result<Reply, RunError> {
        Ok(self.vm.request(command, self.timeout, &mut |_| {}).await?)
    }

    /// A request whose progress lines and round ends go to `on_note`.
    pub async fn request_with_notes(
        &mut self,
        command: Command,
        on_note: &mut dyn FnMut(AgentNote<'_>),
    ) -> Result<Reply, RunError> {
        Ok(self.vm.request(command, self.timeout, on_note).await?)
    }

    /// Runs the agent's workload `W` with its own typed parameters (`Command::Workload`).
    pub async fn run_workload<W: GuestWorkload>(
        &mut self,
        params: &W::Params,
    ) -> Result<RaceResult, RunError> {
        let params = serde_json::to_value(params)
            .map_err(|e| RunError::Other(format!("encoding {}'s parameters: {e}", W::NAME)))?;
        let reply = self
            .request(Command::Workload(WorkloadCall {
                name: W::NAME.into(),
                params,
            }))
            .await?;
        match reply {
            Reply::Race(result) => Ok(result),
            other => Err(RunError::Other(format!(
                "unexpected reply to workload {}: {other:?}",
                W::NAME
            ))),
        }
    }

    /// `mkfs.ext4 -b 4096 MKFS_ARGS` on the test disk, then mounts it with `mount_options`.
    pub async fn fresh_ext4(
        &mut self,
        ctx: &RunContext,
        mkfs_args: &[String],
        mount_options: &str,
    ) -> Result<(), RunError> {
        let mut args = vec!["-b".to_string(), "4096".into()];
        args.extend(mkfs_args.iter().cloned());
        ctx.progress
            .step(&format!("mkfs.ext4 {} on the test disk", args.join(" ")));
        self.request(Command::Mkfs {
            device: DEVICE.into(),
            args,
        })
        .await?;
        self.request(Command::Mount {
            device: DEVICE.into(),
            target: MOUNT_POINT.into(),
            options: mount_options.into(),
        })
        .await?;
        ctx.disk.mark("mounted");
        Ok(())
    }

    /// Unmounts (so the host reads what is really on disk: the extent status cache can hide
    /// a lost block until the inode is evicted), saves the kernel log as dmesg.txt, powers the
    /// guest off and stops the disk. Returns the kernel log.
    pub async fn finish(mut self, ctx: &mut RunContext) -> Result<String, RunError> {
        ctx.progress.step("unmounting");
        self.request(Command::Umount {
            target: MOUNT_POINT.into(),
        })
        .await?;
        let dmesg = match self.request(Command::Dmesg).await? {
            Reply::Dmesg { text } => text,
            _ => String::new(),
        };
        let _ = std::fs::write(ctx.dir.join("dmesg.txt"), &dmesg);
        ctx.progress.step("powering off");
        self.vm.power_off(Duration::from_secs(30)).await?;
        ctx.disk.stop().await?;
        Ok(dmesg)
    }

    /// The end of a workload that writes tagged files and syncs them: [`Self::finish`], then
    /// every acknowledged block, e2fsck and the kernel log checked on the host, and the
    /// neutral [`WorkloadExercise`] counters.
    pub async fn finish_and_check(
        self,
        ctx: &mut RunContext,
        workload: &str,
        run_id: u64,
        result: RaceResult,
    ) -> Result<ScenarioOutcome, RunError> {
        let dmesg = self.finish(ctx).await?;
        ctx.progress.step("checking every synced block on the host");
        let content =
            crate::oracle_glue::content(&ctx.disk.image, run_id, result.rounds.clone()).await?;
        let fsck = fsck::run(&ctx.disk.image).await?;
        let findings =
            crate::oracle_glue::findings(Some(&content), Some(&fsck), &result.rounds, &dmesg);
        let files: Vec<_> = result.rounds.iter().flat_map(|r| &r.files).collect();
        Ok(ScenarioOutcome {
            findings,
            exercise: Exercise::Workload(WorkloadExercise {
                workload: workload.into(),
                files: files.len(),
                files_synced: files.iter().filter(|f| f.synced).count(),
                // Every block the file must hold: written with pwrite or stored through a map.
                blocks_written: files.iter().map(|f| f.acknowledged().count() as u64).sum(),
                host: HostCheck {
                    blocks_checked_on_host: content.blocks_checked,
                    lost_blocks: content.lost.len(),
                    e2fsck: fsck::headline(&fsck),
                },
            }),
        })
    }
}
