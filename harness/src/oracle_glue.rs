//! Runs the host-side oracles and turns their findings into report findings.

use std::path::Path;

use e4race_protocol::RoundRecord;
use oracles::{ContentReport, E2fsckReport};

use crate::report::Finding;
use crate::run::RunError;

/// Kernel behaviour we have traced to its cause; attached to matching findings so a reader
/// knows it is explained. The finding stays a finding.
pub fn known_cause(check: &str) -> Option<&'static str> {
    match check {
        "migrate-success-sets-extents-flag" => Some(
            "EXT4_IOC_MIGRATE reports success although the inode stayed indirect: when \
             ext4_ext_swap_inode_data() detects a concurrent allocation it returns -EAGAIN, but \
             ext4_ext_migrate() then overwrites retval with ext4_journal_ensure_credits()'s result \
             (fs/ext4/migrate.c, 6.1 and 6.12), so the caller never learns the migration was abandoned",
        ),
        _ => None,
    }
}

/// Converts an oracle finding for the report.
pub fn to_report(f: &oracles::Finding) -> Finding {
    let v = serde_json::to_value(f).unwrap_or_default();
    let class = v["class"].as_str().unwrap_or("unknown").to_string();
    let class = if class == "file-loss" {
        "data-loss".to_string()
    } else {
        class
    };
    let mut detail = v.get("detail").cloned().unwrap_or_default();
    let mut summary = f.summary();
    if let oracles::Finding::ApiPostcondition { check, .. } = f {
        if let Some(why) = known_cause(check) {
            detail["known_cause"] = serde_json::Value::String(why.into());
            summary.push_str(" [known kernel behaviour, see known_cause]");
        }
    }
    Finding {
        class,
        summary,
        detail,
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
