//! Replacement ext4 modules: kernel mutants (`--mutant NAME`, a folder under
//! `vm-images/mutants`) and user patches (`--ext4-patch FILE`). Both are built from Debian's
//! own linux-source package for the exact kernel that boots, and cached by kernel and patch.

use std::path::{Path, PathBuf};

use e4race_guest_image::{self as image, KernelSpec};

use crate::config::Ext4Module;
use crate::error::RunError;
use crate::progress::Progress;

/// Builds (or takes from the cache) the ext4.ko a run asked for, if any.
pub async fn ext4_module_for(
    ext4: &Ext4Module,
    kernel: &KernelSpec,
    cache: &Path,
    progress: &Progress,
) -> Result<Option<PathBuf>, RunError> {
    let Some(patch) = ext4.patch().map(Path::to_path_buf) else {
        return Ok(None);
    };
    // RunConfig only holds a patch for a Debian kernel (config.rs).
    let KernelSpec::Debian { series } = kernel else {
        return Err(RunError::Other(
            crate::config::ConfigError::RebuildNeedsDebianKernel.to_string(),
        ));
    };
    let (series, cache, p) = (series.clone(), cache.to_path_buf(), progress.clone());
    let built = tokio::task::spawn_blocking(move || {
        let k = image::kernel::fetch_debian(&series, &cache, &|s: &str| p.step(s))?;
        let stock = k.modules_root.as_ref().and_then(|r| {
            ["kernel/fs/ext4/ext4.ko", "kernel/fs/ext4/ext4.ko.xz"]
                .iter()
                .map(|f| r.join(f))
                .find(|f| f.exists())
        });
        // `latest` names no series; the release does.
        let series = debian_archive::series_of(&k.release).unwrap_or(series);
        let mut req = mutant::BuildRequest::new(&k.release, &series, &patch, cache.join("mutants"));
        req.stock_module = stock;
        p.step(&format!(
            "ext4.ko for {} with {} (cached after the first build)",
            k.release,
            patch.display()
        ));
        mutant::build_ext4_module(&req, &|s: &str| p.step(s))
            .map_err(|e| RunError::Other(format!("building the ext4 mutant: {e}")))
    })
    .await
    .map_err(|e| RunError::Other(format!("mutant build task: {e}")))?;
    Ok(Some(built?))
}
