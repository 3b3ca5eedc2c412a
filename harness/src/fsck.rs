//! `e2fsck -fn` on the host, after the guest is gone, parsed by the consistency oracle.

use std::path::Path;

use oracles::E2fsckReport;

use crate::error::RunError;

/// Runs the real e2fsck read-only on the image and saves its output as `e2fsck.txt`.
pub async fn run(image: &Path) -> Result<E2fsckReport, RunError> {
    let img = image.to_path_buf();
    let report = tokio::task::spawn_blocking(move || oracles::run_e2fsck(&img))
        .await
        .map_err(|e| RunError::Other(format!("e2fsck task: {e}")))?
        .map_err(|e| RunError::Other(format!("e2fsck: {e}")))?;
    if let Some(dir) = image.parent() {
        let _ = std::fs::write(
            dir.join("e2fsck.txt"),
            format!("exit code {}\n{}", report.exit_code, report.output),
        );
    }
    Ok(report)
}

/// One word for the summary: "clean", or what e2fsck found.
pub fn headline(r: &E2fsckReport) -> String {
    if r.clean {
        "clean".into()
    } else {
        format!(
            "exit {}, {} findings, {} allocated blocks owned by no inode",
            r.exit_code,
            r.findings.len(),
            r.leaked_blocks()
        )
    }
}
