//! Kernel mutants: the distro's own ext4.ko rebuilt with one historical fix reverted.
//!
//! A mutant is a folder under `vm-images/mutants/` holding a `mutant.toml` and one patch per
//! kernel series (see that folder's README.md). [`Mutant::load`] reads one, [`list`] all.
//!
//! [`build_ext4_module`] turns any patch against `fs/ext4` (a mutant's, or a user's
//! `--ext4-patch FILE`) into an `ext4.ko` that the stock Debian kernel loads in place of its own:
//! it fetches `linux-source-<series>` and the headers of exactly that kernel with
//! `apt-get download`, extracts them into a cache (nothing is installed on the host), applies the
//! patch, runs kbuild's out-of-tree module build and checks that the result's vermagic equals
//! the stock module's. Results are cached by (kernel release, SHA-256 of the patch).

mod build;
mod cmd;
mod def;
mod error;
mod tree;

pub use build::{
    build_ext4_module, cache_key, default_archive, default_cache_dir, module_vermagic,
    newest_kernel_release, BuildError, BuildRequest,
};
pub use def::{list, LoadError, Mutant, MUTANT_FILE};
