//! `e2fsck -fn` on the host, after the guest is gone.

use std::path::Path;

use crate::report::Finding;
use crate::run::RunError;

pub struct FsckResult {
    pub exit_code: i32,
    pub output: String,
}

/// Runs the real e2fsck read-only (`-fn`) on the image.
pub async fn run(image: &Path) -> Result<FsckResult, RunError> {
    let bin = crate::vm::find_in_path("e2fsck").ok_or_else(|| {
        RunError::Other("e2fsck is not installed; install the Debian package e2fsprogs".into())
    })?;
    let out = tokio::process::Command::new(bin)
        .arg("-fn")
        .arg(image)
        .output()
        .await
        .map_err(|e| RunError::Other(format!("running e2fsck: {e}")))?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(dir) = image.parent() {
        let _ = std::fs::write(dir.join("e2fsck.txt"), &output);
    }
    Ok(FsckResult {
        exit_code: out.status.code().unwrap_or(-1),
        output,
    })
}

impl FsckResult {
    pub fn clean(&self) -> bool {
        self.exit_code == 0
    }

    pub fn headline(&self) -> String {
        if self.clean() {
            "clean".into()
        } else {
            format!("exit {}", self.exit_code)
        }
    }

    pub fn findings(&self) -> Vec<Finding> {
        if self.clean() {
            return vec![];
        }
        vec![Finding {
            class: "fs-corruption".into(),
            summary: format!("e2fsck -fn exited {}", self.exit_code),
            detail: serde_json::json!({ "output": self.output }),
        }]
    }
}
