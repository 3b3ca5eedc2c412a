//! Replacement ext4 modules: kernel mutants and user patches (`--mutant`, `--ext4-patch`).

use std::path::{Path, PathBuf};

use e4race_guest_image::KernelSpec;

use crate::cli::CommonArgs;
use crate::run::{Progress, RunError};

/// Builds (or takes from the cache) the ext4.ko a run asked for, if any.
pub async fn ext4_module_for(
    common: &CommonArgs,
    _kernel: &KernelSpec,
    _cache: &Path,
    _progress: &Progress,
) -> Result<Option<PathBuf>, RunError> {
    if common.mutant.is_none() && common.ext4_patch.is_none() {
        return Ok(None);
    }
    Err(RunError::Other("mutant builds are not wired in yet".into()))
}
