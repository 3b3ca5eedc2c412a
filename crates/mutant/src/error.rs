//! Why a module build failed.

use std::path::PathBuf;

/// Why a module could not be built. Each variant names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid build request: {0}")]
    InvalidRequest(String),
    #[error("cannot read the patch {}: {source}", path.display())]
    PatchUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "building ext4.ko needs {tools}, which are not installed; \
         install them with `apt-get install {packages}`"
    )]
    MissingTools { tools: String, packages: String },
    #[error("extracting {what} failed; log: {}\n{tail}", log.display())]
    Extract {
        what: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "patch {} does not apply to fs/ext4 of {source_package}; `patch -p1 --dry-run` said:\n\
         {output}\nRegenerate the patch against that tree (paths a/fs/ext4/..., applied with \
         `patch -p1` at the top of the tree); only files under fs/ext4 exist there. Log: {}",
        patch.display(), log.display()
    )]
    PatchDoesNotApply {
        patch: PathBuf,
        source_package: String,
        output: String,
        log: PathBuf,
    },
    #[error("build failed (`{command}`); full log: {}\nlast lines:\n{tail}", log.display())]
    BuildFailed {
        command: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "vermagic mismatch: the built {} has {built:?} but the stock kernel's ext4 module has \
         {stock:?}; the kernel would refuse it. The headers do not match the kernel release: \
         delete {} and retry",
        module.display(), headers.display()
    )]
    VermagicMismatch {
        module: PathBuf,
        built: String,
        stock: String,
        headers: PathBuf,
    },
    #[error(transparent)]
    Archive(#[from] debian_archive::Error),
    #[error("`{command}` failed: {output}")]
    Tool { command: String, output: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}
