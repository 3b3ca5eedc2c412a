//! Which kbuild an out-of-tree ext4 build runs against, and the configured source tree for
//! kernels whose own headers the host cannot use.
//!
//! Debian's 6.1 and 6.12 are built with bookworm's gcc 12, so their `linux-headers` and
//! `linux-kbuild` packages work here as they are. Debian's 7.x (trixie-backports, sid) is built
//! with gcc 14: its headers pass flags gcc 12 rejects (`-fmin-function-alignment=16`), and
//! trixie's `objtool` and `modpost` need glibc 2.38. For those kernels the module is built
//! against a `linux-source-<series>` tree configured with the headers' `.config` and
//! `Module.symvers`, `make olddefconfig` (which drops what the host's gcc lacks) and
//! `modules_prepare`, so every tool is built by the host's compiler. The resulting vermagic
//! is Debian's (checked after the build). See docs/facts.md §3.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::{self, capture, io_err, mkdir, pipe, rmtree, run_logged, tail};
use crate::error::BuildError;

/// What `make -C` runs against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kbuild {
    /// Debian's extracted headers package (its `linux-kbuild` tools run on this host).
    Headers(PathBuf),
    /// A configured and `modules_prepare`d source tree; `LOCALVERSION` makes its release
    /// equal Debian's (e.g. "+deb13-amd64" after the tree's "7.3.4").
    Prepared { tree: PathBuf, localversion: String },
}

impl Kbuild {
    /// The folder given to `make -C`.
    pub(crate) fn dir(&self) -> &Path {
        match self {
            Kbuild::Headers(d) => d,
            Kbuild::Prepared { tree, .. } => tree,
        }
    }

    /// Extra make variables.
    pub(crate) fn make_vars(&self) -> Vec<String> {
        match self {
            Kbuild::Headers(_) => vec![],
            Kbuild::Prepared { localversion, .. } => {
                vec!["CC=gcc".into(), format!("LOCALVERSION={localversion}")]
            }
        }
    }
}

/// The tools the prepared tree's `olddefconfig` and `modules_prepare` need beyond a headers
/// build, with their Debian packages (libelf-dev and libssl-dev are found by the build itself).
const PREPARE_TOOLS: &[(&str, &str)] = &[
    ("gcc", "gcc"),
    ("bc", "bc"),
    ("flex", "flex"),
    ("bison", "bison"),
];

/// `CONFIG_GCC_VERSION` of a kernel config (e.g. 140200 for gcc 14.2.0), if it has one.
pub(crate) fn config_gcc_version(config: &str) -> Option<u32> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_GCC_VERSION="))
        .and_then(|v| v.trim().parse().ok())
}

/// The same number for a `gcc -dumpfullversion` string ("12.2.0" -> 120200).
pub(crate) fn gcc_version_number(dump: &str) -> Option<u32> {
    let mut it = dump.trim().split('.').map(|p| p.parse::<u32>().ok());
    let major = it.next()??;
    let minor = it.next().flatten().unwrap_or(0);
    let patch = it.next().flatten().unwrap_or(0);
    Some(major * 10000 + minor * 100 + patch)
}

/// The host's gcc, as [`gcc_version_number`].
fn host_gcc_version() -> Option<u32> {
    let (st, out) = capture(Command::new("gcc").arg("-dumpfullversion")).ok()?;
    st.success().then(|| gcc_version_number(&out)).flatten()
}

/// Whether the headers at `kdir` need a prepared source tree: their kernel was built by a
/// newer gcc major than the host's (whose flags and tools the host cannot use).
pub(crate) fn needs_prepared_tree(kdir: &Path) -> bool {
    let config = std::fs::read_to_string(kdir.join(".config")).unwrap_or_default();
    match (config_gcc_version(&config), host_gcc_version()) {
        (Some(kernel), Some(host)) => kernel / 10000 > host / 10000,
        _ => false,
    }
}

/// The release suffix to pass as `LOCALVERSION`: `release` minus the tree's own version
/// ("7.3.4+deb13-amd64" minus "7.3.4").
pub(crate) fn localversion(release: &str, tree_version: &str) -> Option<String> {
    release
        .strip_prefix(tree_version)
        .map(str::to_string)
        .filter(|s| !s.starts_with(|c: char| c.is_ascii_digit()))
}

/// Extracts the whole `linux-source-<series>` tree from `source_deb` into
/// `cache/prepared/<release>_<source version>/`, configures it from the headers at `kdir` and
/// runs `modules_prepare`; returns the tree and the `LOCALVERSION` it was prepared with. Done
/// in place, under a lock, because kbuild records absolute paths; `.complete` marks a tree a
/// later build may trust. Takes about two minutes on 2 cores, once per kernel.
pub(crate) fn ensure_prepared(
    cache_dir: &Path,
    release: &str,
    source_label: &str,
    source_deb: &Path,
    kdir: &Path,
    progress: &dyn Fn(&str),
) -> Result<Kbuild, BuildError> {
    let name = format!("{release}_{}", source_label.replace(' ', "_"));
    let root = cache_dir.join("prepared");
    mkdir(&root)?;
    let lock_path = root.join(format!("{name}.lock"));
    let lock_file =
        std::fs::File::create(&lock_path).map_err(|e| io_err("creating", &lock_path, e))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| io_err("locking", &lock_path, e.into()))?;
    let dir = root.join(&name);
    let tree = dir.join("tree");
    let saved_lv = dir.join("localversion");
    if dir.join(".complete").exists() {
        if let Ok(lv) = std::fs::read_to_string(&saved_lv) {
            return Ok(Kbuild::Prepared {
                tree,
                localversion: lv.trim_end_matches('\n').to_string(),
            });
        }
    }
    let missing: Vec<_> = PREPARE_TOOLS
        .iter()
        .filter(|(t, _)| host_tools::find_host_tool(t).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(BuildError::MissingTools {
            tools: missing
                .iter()
                .map(|(t, _)| *t)
                .collect::<Vec<_>>()
                .join(", "),
            packages: missing
                .iter()
                .map(|(_, p)| *p)
                .collect::<Vec<_>>()
                .join(" "),
        });
    }
    rmtree(&dir)?;
    mkdir(&dir)?;
    let log = dir.join("prepare.log");
    progress(&format!(
        "extracting the whole {source_label} tree (the host's gcc cannot use {release}'s \
         headers, which gcc 14 built; once per kernel)"
    ));
    let ok = pipe(
        Command::new("dpkg-deb")
            .arg("--fsys-tarfile")
            .arg(source_deb),
        Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&dir)
            .args(["--wildcards", "*/usr/src/linux-source-*.tar.xz"]),
        &log,
    )?;
    let tarball = find_tarball(&dir.join("usr/src"));
    let Some(tarball) = tarball.filter(|_| ok) else {
        return Err(extract_error(source_deb, &log, "the source tarball"));
    };
    let unpack = dir.join("unpack");
    mkdir(&unpack)?;
    let st = run_logged(
        Command::new("tar")
            .arg("-xJf")
            .arg(&tarball)
            .arg("-C")
            .arg(&unpack),
        &log,
    )?;
    let top = std::fs::read_dir(&unpack).ok().and_then(|rd| {
        rd.flatten()
            .map(|e| e.path())
            .find(|p| p.join("Makefile").is_file())
    });
    let Some(top) = top.filter(|_| st.success()) else {
        return Err(extract_error(source_deb, &log, "the source tree"));
    };
    std::fs::rename(&top, &tree).map_err(|e| io_err("moving to", &tree, e))?;
    rmtree(&unpack)?;
    rmtree(&dir.join("usr"))?;

    // The running kernel's configuration and symbol CRCs, from its headers package.
    for f in [".config", "Module.symvers"] {
        std::fs::copy(kdir.join(f), tree.join(f))
            .map_err(|e| io_err("copying", &kdir.join(f), e))?;
    }
    let (st, out) = capture(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(&tree)
            .arg("kernelversion"),
    )?;
    let version = out.trim().to_string();
    let Some(lv) = localversion(release, &version).filter(|_| st.success()) else {
        return Err(BuildError::Tool {
            command: format!("make -s -C {} kernelversion", tree.display()),
            output: format!(
                "the tree's version {version:?} is not a prefix of the kernel release {release}"
            ),
        });
    };
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    for target in ["olddefconfig", "modules_prepare"] {
        progress(&format!(
            "make {target} in {source_label} (LOCALVERSION={lv})"
        ));
        let mut make = Command::new("make");
        make.arg("-C")
            .arg(&tree)
            .args([
                "CC=gcc",
                &format!("LOCALVERSION={lv}"),
                &format!("-j{jobs}"),
                target,
            ])
            .env_remove("ARCH")
            .env_remove("CROSS_COMPILE")
            .env_remove("KBUILD_OUTPUT")
            .env_remove("O");
        let st = run_logged(&mut make, &log)?;
        if !st.success() {
            return Err(BuildError::BuildFailed {
                command: cmd::display(&make),
                tail: tail(&log, 30),
                log,
            });
        }
    }
    std::fs::write(&saved_lv, format!("{lv}\n")).map_err(|e| io_err("writing", &saved_lv, e))?;
    std::fs::write(dir.join(".complete"), format!("{source_label}\n"))
        .map_err(|e| io_err("writing", &dir.join(".complete"), e))?;
    Ok(Kbuild::Prepared {
        tree,
        localversion: lv,
    })
}

fn find_tarball(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".tar.xz"))
        })
}

fn extract_error(deb: &Path, log: &Path, what: &str) -> BuildError {
    BuildError::Extract {
        what: format!("{what} from {}", deb.display()),
        tail: tail(log, 20),
        log: log.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcc_versions_compare_as_kbuild_numbers() {
        let cfg = "CONFIG_CC_VERSION_TEXT=\"gcc-14 (Debian 14.2.0-19) 14.2.0\"\nCONFIG_GCC_VERSION=140200\n";
        assert_eq!(config_gcc_version(cfg), Some(140200));
        assert_eq!(config_gcc_version("CONFIG_CC_IS_CLANG=y\n"), None);
        assert_eq!(gcc_version_number("12.2.0\n"), Some(120200));
        assert_eq!(gcc_version_number("14"), Some(140000));
        assert_eq!(gcc_version_number("x"), None);
    }

    #[test]
    fn localversion_is_the_release_after_the_tree_version() {
        assert_eq!(
            localversion("7.3.4+deb13-amd64", "7.3.4").as_deref(),
            Some("+deb13-amd64")
        );
        // "7.3.40" must not pass for "7.3.4".
        assert_eq!(localversion("7.3.40+deb13-amd64", "7.3.4"), None);
        assert_eq!(localversion("6.1.0-57-amd64", "7.3.4"), None);
    }
}
