//! `smoke`: boot, mkfs, mount, write a tagged pattern, fsync, read back, unmount, e2fsck.

use e4race_protocol::{Command, FileRecord, Reply, RoundRecord};

use crate::error::RunError;
use crate::fsck;
use crate::report::{Exercise, Finding, HostCheck, SmokeExercise};
use crate::scenarios::session::MOUNT_POINT;
use crate::scenarios::{
    DriveFuture, GuestSession, RunContext, Scenario, ScenarioOutcome, ScenarioPlan,
};

/// Boot, mkfs + mount ext4 on the test disk, write a tagged pattern, fsync, read it back,
/// unmount, then `e2fsck -fn` on the host.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct SmokeArgs {
    /// 4 KiB blocks to write.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=(1 << 24)))]
    pub blocks: u64,
}

impl Scenario for SmokeArgs {
    fn name(&self) -> &'static str {
        "smoke"
    }

    fn argv(&self, _seed: Option<u64>) -> Vec<String> {
        vec!["--blocks".into(), self.blocks.to_string()]
    }

    fn off_default_argv() -> Vec<String> {
        vec!["--blocks".into(), "7".into()]
    }

    fn disk_mib(&self) -> u64 {
        256.max(((self.blocks * 4096) >> 20) * 2 + 64)
    }

    fn log_data(&self) -> bool {
        true
    }

    fn drive<'a>(
        &'a self,
        plan: &'a ScenarioPlan,
        session: GuestSession,
        ctx: &'a mut RunContext,
    ) -> DriveFuture<'a> {
        Box::pin(drive(self.blocks, plan.seed_and_run_id().1, session, ctx))
    }
}

async fn drive(
    blocks: u64,
    run_id: u64,
    mut session: GuestSession,
    ctx: &mut RunContext,
) -> Result<ScenarioOutcome, RunError> {
    session.fresh_ext4(ctx, &[], "").await?;
    ctx.progress.step(&format!(
        "writing {blocks} tagged blocks, fsync, drop caches, read back"
    ));
    let reply = session
        .request(Command::WritePattern {
            path: format!("{MOUNT_POINT}/smoke"),
            run_id,
            blocks,
        })
        .await?;
    ctx.disk.mark("pattern-synced");
    let Reply::Pattern(pat) = reply else {
        return Err(RunError::Other(format!(
            "unexpected reply to write-pattern: {reply:?}"
        )));
    };
    let dmesg = session.finish(ctx).await?;
    let p = &ctx.progress;

    let mut findings = Vec::new();
    if !pat.mismatched.is_empty() {
        findings.push(Finding::new(oracles::Finding::ReadBack {
            path: "smoke".into(),
            blocks_written: pat.blocks_written,
            mismatched: pat.mismatched.clone(),
        }));
    }
    // The same pattern, read from the final image by the host's own ext4 reader.
    p.step("checking the pattern on the host");
    let rounds = vec![RoundRecord {
        round: 0,
        files: vec![FileRecord {
            file_id: 0,
            path: "smoke".into(),
            ino: 0,
            prefilled: (0..blocks).collect(),
            hole_lblks: vec![],
            hole_t_ns: vec![],
            synced: true,
            migration: None,
            after: Default::default(),
            postconditions: vec![],
            overwrites: vec![],
            overwrite_t_ns: vec![],
            moves: vec![],
            extents_before: 0,
            unwritten_lblks: Vec::new(),
        }],
    }];
    let content = crate::oracle_glue::content(&ctx.disk.image, run_id, rounds.clone()).await?;
    p.step("e2fsck -fn on the host");
    let fsck = fsck::run(&ctx.disk.image).await?;
    findings.extend(crate::oracle_glue::findings(
        Some(&content),
        Some(&fsck),
        &rounds,
        &dmesg,
    ));
    Ok(ScenarioOutcome {
        findings,
        exercise: Exercise::Smoke(SmokeExercise {
            blocks_written: pat.blocks_written,
            blocks_read_back_ok: pat.blocks_written - pat.mismatched.len() as u64,
            run_id,
            host: HostCheck {
                blocks_checked_on_host: content.blocks_checked,
                lost_blocks: content.lost.len(),
                e2fsck: fsck::headline(&fsck),
            },
        }),
    })
}

/// A run id for tags: time-based, so two runs never share tags.
pub fn rand_id() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    e4race_protocol::splitmix(t ^ u64::from(std::process::id()))
}

/// Boot, then crash the kernel on purpose (sysrq c): checks that a kernel panic ends the run
/// as KERNEL-ERROR with the panic line.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct PanicSelftestArgs {}

impl Scenario for PanicSelftestArgs {
    fn name(&self) -> &'static str {
        "panic-selftest"
    }

    fn argv(&self, _seed: Option<u64>) -> Vec<String> {
        Vec::new()
    }

    fn off_default_argv() -> Vec<String> {
        Vec::new()
    }

    fn drive<'a>(
        &'a self,
        _plan: &'a ScenarioPlan,
        mut session: GuestSession,
        ctx: &'a mut RunContext,
    ) -> DriveFuture<'a> {
        Box::pin(async move {
            // The request can only end in a kernel error (or in an infra error if the crash
            // does not happen), never in a reply.
            ctx.progress.step("crashing the kernel with sysrq c");
            session.request(Command::CrashKernel).await?;
            Err(RunError::Other("the kernel survived sysrq c".into()))
        })
    }
}
