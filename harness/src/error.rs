//! `RunError`: what ends a run early, and the verdict it gives.

use std::path::{Path, PathBuf};

use e4race_guest_image as image;

use crate::report::Verdict;
use crate::vm::VmError;

/// An error of our own side, or the kernel's, that ends a run early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("{0}")]
    Other(String),
}

impl RunError {
    pub fn verdict(&self) -> Verdict {
        match self {
            RunError::Vm(VmError::KernelError { .. }) => Verdict::KernelError,
            _ => Verdict::InfraError,
        }
    }
}

/// The guest agent binary that becomes the initramfs's /init.
pub fn agent_binary() -> Result<PathBuf, RunError> {
    if let Some(p) = std::env::var_os("E4RACE_AGENT") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()
        .map_err(|e| RunError::Other(format!("locating our own binary: {e}")))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    for cand in [dir.join("e4race-agent"), dir.join("../e4race-agent")] {
        if cand.is_file() {
            return Ok(cand);
        }
    }
    Err(RunError::Other(format!(
        "the guest agent e4race-agent is not next to {}; build it with `cargo build --release -p e4race-harness` \
         or point E4RACE_AGENT at it",
        exe.display()
    )))
}
