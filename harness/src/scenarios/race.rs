//! What every race scenario does around its workload: mkfs, mount, run the workload with
//! round marks in the write log, unmount, collect the kernel log, power off, and judge the
//! final image on the host with every oracle.

use e4race_protocol::{Command, RaceResult, Reply};

use crate::error::RunError;
use crate::fsck;
use crate::report::{Exercise, HostCheck};
use crate::scenarios::{GuestSession, RunContext, ScenarioOutcome};
use crate::vm::AgentNote;

/// The scenario's own numbers (that the race was exercised) from the workload's record and
/// what the host checked.
pub type ExerciseOf = fn(&RaceResult, HostCheck) -> Exercise;

pub async fn drive(
    workload: Command,
    run_id: u64,
    mount_options: &str,
    exercise: ExerciseOf,
    mut session: GuestSession,
    ctx: &mut RunContext,
) -> Result<ScenarioOutcome, RunError> {
    session.fresh_ext4(ctx, &[], mount_options).await?;
    ctx.disk.mark("workload-start");
    let disk = &ctx.disk;
    let p = ctx.progress.clone();
    let reply = session
        .request_with_notes(workload, &mut |note| match note {
            // Round boundaries as marks in the write log, ordered with the writes.
            AgentNote::RoundDone(round) => disk.mark(&format!("round-{round}-done")),
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
