//! Replacement ext4 modules: kernel mutants (`--mutant NAME`, a folder under
//! `vm-images/mutants`) and user patches (`--ext4-patch FILE`). Both are built from Debian's
//! own linux-source package for the exact kernel that boots, and cached by kernel and patch.

use std::path::{Path, PathBuf};

use e4race_guest_image::{self as image, KernelSpec};

use crate::cli::CommonArgs;
use crate::run::{Progress, RunError};

/// Where mutant folders live: `$E4RACE_MUTANTS_DIR`, else `vm-images/mutants` found from the
/// current directory upwards, else the source tree this binary was built from.
pub fn mutants_root() -> PathBuf {
    if let Some(p) = std::env::var_os("E4RACE_MUTANTS_DIR") {
        return PathBuf::from(p);
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            let p = dir.join("vm-images/mutants");
            if p.is_dir() {
                return p;
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm-images/mutants")
}

/// The patch a run asks for, and its series-specific file for a mutant.
fn patch_for(common: &CommonArgs, series: &str) -> Result<Option<PathBuf>, RunError> {
    if let Some(p) = &common.ext4_patch {
        if !p.is_file() {
            return Err(RunError::Other(format!(
                "--ext4-patch {}: no such file",
                p.display()
            )));
        }
        return Ok(Some(p.clone()));
    }
    let Some(name) = &common.mutant else {
        return Ok(None);
    };
    let root = mutants_root();
    let m = mutant::Mutant::find(&root, name).map_err(|e| {
        let known = mutant::list(&root)
            .map(|v| v.into_iter().map(|m| m.name).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        RunError::Other(format!(
            "mutant '{name}': {e}. Known mutants in {}: {known}",
            root.display()
        ))
    })?;
    let p = m
        .patch_for(series)
        .map_err(|e| RunError::Other(format!("mutant '{name}' on kernel {series}: {e}")))?;
    Ok(Some(p.to_path_buf()))
}

/// Builds (or takes from the cache) the ext4.ko a run asked for, if any.
pub async fn ext4_module_for(
    common: &CommonArgs,
    kernel: &KernelSpec,
    cache: &Path,
    progress: &Progress,
) -> Result<Option<PathBuf>, RunError> {
    if common.mutant.is_none() && common.ext4_patch.is_none() {
        return Ok(None);
    }
    let KernelSpec::Debian { series } = kernel else {
        return Err(RunError::Other(
            "--mutant and --ext4-patch rebuild ext4 from Debian's linux-source package, so they need \
             a Debian kernel (--kernel 6.1 or 6.12); for your own kernel, apply the patch to your tree"
                .into(),
        ));
    };
    let Some(patch) = patch_for(common, series)? else {
        return Ok(None);
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
