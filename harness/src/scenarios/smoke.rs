//! `smoke`: boot, mkfs, mount, write a tagged pattern, fsync, read back, unmount, e2fsck.

use std::time::Duration;

use e4race_protocol::{Command, FileRecord, MigrateCall, Reply, RoundRecord};

use crate::error::RunError;
use crate::fsck;
use crate::report::{Exercise, Finding, HostCheck, SmokeExercise};
use crate::scenarios::{RunContext, ScenarioOutcome};
use crate::vm::Vm;

pub const DEVICE: &str = "/dev/vda";
pub const MOUNT_POINT: &str = "/mnt";

pub async fn drive(
    blocks: u64,
    mut vm: Vm,
    ctx: &mut RunContext,
) -> Result<ScenarioOutcome, RunError> {
    let t = ctx.command_timeout;
    let p = ctx.progress.clone();
    let mut quiet = |_: &str| {};
    p.step("mkfs.ext4 on the test disk");
    vm.request(
        Command::Mkfs {
            device: DEVICE.into(),
            args: vec!["-b".into(), "4096".into()],
        },
        t,
        &mut quiet,
    )
    .await?;
    vm.request(
        Command::Mount {
            device: DEVICE.into(),
            target: MOUNT_POINT.into(),
            options: String::new(),
        },
        t,
        &mut quiet,
    )
    .await?;
    ctx.disk.mark("mounted");
    let run_id: u64 = rand_id();
    p.step(&format!(
        "writing {blocks} tagged blocks, fsync, drop caches, read back"
    ));
    let reply = vm
        .request(
            Command::WritePattern {
                path: format!("{MOUNT_POINT}/smoke"),
                run_id,
                blocks,
            },
            t,
            &mut quiet,
        )
        .await?;
    ctx.disk.mark("pattern-synced");
    let Reply::Pattern(pat) = reply else {
        return Err(RunError::Other(format!(
            "unexpected reply to write-pattern: {reply:?}"
        )));
    };
    vm.request(
        Command::Umount {
            target: MOUNT_POINT.into(),
        },
        t,
        &mut quiet,
    )
    .await?;
    p.step("powering off");
    vm.power_off(Duration::from_secs(30)).await?;
    ctx.disk.stop().await?;

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
            migrate: MigrateCall::default(),
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
        "",
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

/// Crashes the guest kernel with sysrq `c`. The request can only end in a kernel error (or
/// in an infra error if the crash does not happen), never in a reply.
pub async fn crash(mut vm: Vm, ctx: &mut RunContext) -> Result<ScenarioOutcome, RunError> {
    ctx.progress.step("crashing the kernel with sysrq c");
    vm.request(Command::CrashKernel, ctx.command_timeout, &mut |_| {})
        .await?;
    Err(RunError::Other("the kernel survived sysrq c".into()))
}
