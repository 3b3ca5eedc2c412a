//! Runs the host-side oracles and turns their findings into report findings.

use std::path::Path;

use e4race_protocol::RoundRecord;
use oracles::{ContentReport, E2fsckReport};

use crate::error::RunError;
use crate::report::Finding;

/// Kernel behaviour we have traced to its cause; attached to matching findings so a reader
/// knows it is explained. The finding stays a finding.
pub fn known_cause(check: &str) -> Option<&'static str> {
    match check {
        "migrate-success-sets-extents-flag" => Some(
            "EXT4_IOC_MIGRATE reports success although the inode stayed indirect: when \
             ext4_ext_swap_inode_data() detects a concurrent allocation it returns -EAGAIN, but \
             ext4_ext_migrate() then overwrites retval with ext4_journal_ensure_credits()'s result \
             (fs/ext4/migrate.c, 6.1, 6.12 and 7.3), so the caller never learns the migration was abandoned; \
             fix: vm-images/fixes/migrate-keep-swap-error",
        ),
        _ => None,
    }
}

/// Wraps an oracle finding for the report, with its known cause if it has one.
pub fn to_report(f: &oracles::Finding) -> Finding {
    let finding = Finding::new(f.clone());
    match f {
        oracles::Finding::ApiPostcondition { check, .. } => match known_cause(check) {
            Some(why) => finding.with_known_cause(why),
            None => finding,
        },
        _ => finding,
    }
}

/// The content oracle over the final image.
pub async fn content(
    image: &Path,
    run_id: u64,
    rounds: Vec<RoundRecord>,
) -> Result<ContentReport, RunError> {
    let img = image.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let fs = ext4_reader::Ext4Image::open(&img)
            .map_err(|e| RunError::Other(format!("reading the final image: {e}")))?;
        oracles::check_content(&fs, run_id, &rounds)
            .map_err(|e| RunError::Other(format!("content oracle: {e}")))
    })
    .await
    .map_err(|e| RunError::Other(format!("content oracle task: {e}")))?
}

/// Every finding of a run, in report form.
pub fn findings(
    content: Option<&ContentReport>,
    fsck: Option<&E2fsckReport>,
    rounds: &[RoundRecord],
    kernel_log: &str,
) -> Vec<Finding> {
    let log = oracles::scan_kernel_log(kernel_log);
    oracles::verdict_findings(content, fsck, rounds, &log)
        .iter()
        .map(to_report)
        .collect()
}
