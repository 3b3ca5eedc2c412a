//! Runs the host-side oracles and turns their findings into report findings. Which of them
//! are known kernel behaviour is the known-issues list's business (crates/known-issues).

use std::path::Path;

use e4race_protocol::RoundRecord;
use oracles::{ContentReport, E2fsckReport};

use crate::error::RunError;
use crate::report::Finding;

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
        .map(|f| Finding::new(f.clone()))
        .collect()
}
