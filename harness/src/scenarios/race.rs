//! What every race scenario does around its workload: mkfs, mount, run the workload with
//! round marks in the write log, unmount, collect the kernel log, power off, and judge the
//! final image on the host with every oracle.

use std::time::Duration;

use e4race_protocol::{Command, MigrateMmapResult, Reply};

use crate::error::RunError;
use crate::fsck;
use crate::report::{Exercise, HostCheck};
use crate::scenarios::smoke::{DEVICE, MOUNT_POINT};
use crate::scenarios::{RunContext, ScenarioOutcome};
use crate::vm::Vm;

/// The scenario's own numbers (that the race was exercised) from the workload's record and
/// what the host checked.
pub type ExerciseOf = fn(&MigrateMmapResult, HostCheck) -> Exercise;

pub async fn drive(
    workload: Command,
    run_id: u64,
    mount_options: &str,
    exercise: ExerciseOf,
    mut vm: Vm,
    ctx: &mut RunContext,
) -> Result<ScenarioOutcome, RunError> {
    let t = ctx.command_timeout;
    let p = ctx.progress.clone();
    let mut quiet = |_: &str| {};
    p.step("mkfs.ext4 -b 4096 on the test disk");
    let mkfs = Command::Mkfs {
        device: DEVICE.into(),
        args: vec!["-b".into(), "4096".into()],
    };
    vm.request(mkfs, t, &mut quiet).await?;
    let mount = Command::Mount {
        device: DEVICE.into(),
        target: MOUNT_POINT.into(),
        options: mount_options.into(),
    };
    vm.request(mount, t, &mut quiet).await?;
    let p2 = p.clone();
    ctx.disk.mark("workload-start");
    let disk = &ctx.disk;
    let reply = vm
        .request(workload, t, &mut |line| {
            // Round boundaries as marks in the write log, ordered with the writes.
            if let Some(round) = line
                .strip_prefix("round ")
                .and_then(|r| r.split(':').next())
            {
                disk.mark(&format!("round-{round}-done"));
            }
            p2.step(&format!("guest: {line}"))
        })
        .await?;
    ctx.disk.mark("workload-done");
    let result = match reply {
        Reply::MigrateMmap(r) | Reply::DefragMmap(r) => r,
        other => {
            return Err(RunError::Other(format!(
                "unexpected reply to the workload: {other:?}"
            )))
        }
    };
    let _ = std::fs::write(
        ctx.dir.join("workload.json"),
        serde_json::to_string(&result).unwrap_or_default(),
    );
    // Unmount before judging: the extent status cache can hide a lost block until the inode
    // is evicted, and the host must read what is really on disk.
    p.step("unmounting");
    vm.request(
        Command::Umount {
            target: MOUNT_POINT.into(),
        },
        t,
        &mut quiet,
    )
    .await?;
    let dmesg = match vm.request(Command::Dmesg, t, &mut quiet).await? {
        Reply::Dmesg { text } => text,
        _ => String::new(),
    };
    let _ = std::fs::write(ctx.dir.join("dmesg.txt"), &dmesg);
    p.step("powering off");
    vm.power_off(Duration::from_secs(30)).await?;
    ctx.disk.stop().await?;

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
