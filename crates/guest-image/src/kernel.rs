//! Kernels: Debian packages fetched into the cache, or a user's own build.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{run_tool, Error, Progress, Result};

/// Which kernel to boot, as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSpec {
    /// A Debian `linux-image-*-amd64` package of this series ("6.1", "6.12"), newest build.
    Debian { series: String },
    /// A user's bzImage, with an optional `lib/modules/RELEASE` folder (or a folder that holds
    /// `lib/modules/RELEASE`).
    Custom {
        bzimage: PathBuf,
        modules_dir: Option<PathBuf>,
    },
}

/// The Debian series the tool knows how to fetch; any other series that apt knows works too.
pub const KNOWN_SERIES: &[&str] = &["6.1", "6.12"];
/// The kernel used when the user names none.
pub const DEFAULT_SERIES: &str = "6.1";

impl KernelSpec {
    /// Parses `--kernel`: a series such as `6.12`, or a path to a bzImage.
    pub fn parse(s: &str, modules_dir: Option<PathBuf>) -> Result<Self> {
        let looks_like_series = !s.is_empty()
            && s.chars().all(|c| c.is_ascii_digit() || c == '.')
            && s.contains('.')
            && !Path::new(s).exists();
        if looks_like_series {
            if modules_dir.is_some() {
                return Err(Error::Usage(
                    "--modules-dir only goes with --kernel PATH/bzImage; Debian kernels bring their own modules"
                        .into(),
                ));
            }
            return Ok(KernelSpec::Debian { series: s.into() });
        }
        let p = PathBuf::from(s);
        if !p.is_file() {
            return Err(Error::UnknownKernel {
                asked: s.into(),
                available: available_hint(),
            });
        }
        Ok(KernelSpec::Custom {
            bzimage: p,
            modules_dir,
        })
    }

    /// A short name for reports and run directories.
    pub fn label(&self) -> String {
        match self {
            KernelSpec::Debian { series } => series.clone(),
            KernelSpec::Custom { bzimage, .. } => bzimage.display().to_string(),
        }
    }
}

fn available_hint() -> String {
    let mut s = format!(
        "Debian series {} (default {DEFAULT_SERIES})",
        KNOWN_SERIES.join(", ")
    );
    if let Ok(cached) = cached_kernels(&crate::default_cache_dir()) {
        if !cached.is_empty() {
            s.push_str(&format!("; cached: {}", cached.join(", ")));
        }
    }
    s.push_str("; or a path to your own bzImage");
    s
}

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct PreparedKernel {
    /// `uname -r` of the kernel, e.g. `6.1.0-56-amd64`.
    pub release: String,
    pub image: PathBuf,
    /// `.../lib/modules/RELEASE`, when the kernel has modules.
    pub modules_root: Option<PathBuf>,
    /// Where it came from, e.g. `linux-image-6.1.0-56-amd64 6.1.192-2`.
    pub origin: String,
    /// The Debian package version, for Debian kernels.
    pub package_version: Option<String>,
}

/// Lists `NAME VERSION` of the kernels extracted in the cache.
pub fn cached_kernels(cache: &Path) -> Result<Vec<String>> {
    let dir = cache.join("kernels");
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            if e.path().join(".complete").exists() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Finds the newest `linux-image-<series>...-amd64` package apt knows about.
pub fn resolve_debian_package(series: &str) -> Result<(String, String)> {
    let out = Command::new("apt-cache")
        .args(["pkgnames", &format!("linux-image-{series}")])
        .output()
        .map_err(|e| Error::ToolMissing {
            tool: "apt-cache".into(),
            package: "apt".into(),
            detail: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut best: Option<(Vec<u64>, String)> = None;
    for name in text.lines().map(str::trim) {
        let Some(rest) = name.strip_prefix("linux-image-") else {
            continue;
        };
        let Some(release) = rest.strip_suffix("-amd64") else {
            continue;
        };
        // Only the plain flavour: not -rt, -cloud, -dbg or -unsigned builds.
        let after_series = &release[series.len().min(release.len())..];
        if !(after_series.starts_with('.') || after_series.starts_with('-'))
            || release.contains("cloud")
            || release.contains("-rt")
        {
            continue;
        }
        let key: Vec<u64> = release
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok())
            .collect();
        if best.as_ref().is_none_or(|(k, _)| key > *k) {
            best = Some((key, name.to_string()));
        }
    }
    let Some((_, pkg)) = best else {
        return Err(Error::UnknownKernel {
            asked: series.into(),
            available: format!(
                "{} — apt knows no linux-image-{series}*-amd64 package; run `apt-get update` first, \
                 or pick another series",
                available_hint()
            ),
        });
    };
    let policy = Command::new("apt-cache")
        .args(["show", "--no-all-versions", &pkg])
        .output()
        .map_err(|e| Error::Io {
            what: "running apt-cache show".into(),
            source: e,
        })?;
    let version = String::from_utf8_lossy(&policy.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Version: ").map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    Ok((pkg, version))
}

/// Downloads and extracts a Debian kernel into `cache/kernels/PKG_VERSION/`.
pub fn fetch_debian(series: &str, cache: &Path, progress: &dyn Progress) -> Result<PreparedKernel> {
    let (pkg, version) = resolve_debian_package(series)?;
    let release = pkg.strip_prefix("linux-image-").unwrap_or(&pkg).to_string();
    let dir = cache.join("kernels").join(format!("{pkg}_{version}"));
    let origin = format!("{pkg} {version}");
    if !dir.join(".complete").exists() {
        let debs = cache.join("debs");
        crate::create_dir(&debs)?;
        let deb = download_deb(&pkg, &version, &debs, progress)?;
        progress.step(&format!("extracting {pkg}"));
        let tmp = dir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        crate::create_dir(&tmp)?;
        run_tool(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp),
            "dpkg-deb",
            "dpkg",
        )?;
        let modroot = find_modules_root(&tmp, &release).ok_or_else(|| Error::BadKernel {
            kernel: origin.clone(),
            detail: format!("the package has no lib/modules/{release}"),
        })?;
        // Debian packages do not ship modules.dep; depmod makes it (docs/facts.md §3).
        depmod(&modroot, &release)?;
        std::fs::write(tmp.join(".complete"), &origin)
            .map_err(|e| Error::io("writing", &tmp, e))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).map_err(|e| Error::io("renaming", &dir, e))?;
    }
    let image = dir.join("boot").join(format!("vmlinuz-{release}"));
    if !image.is_file() {
        return Err(Error::BadKernel {
            kernel: origin,
            detail: format!("no {} in the package", image.display()),
        });
    }
    Ok(PreparedKernel {
        modules_root: find_modules_root(&dir, &release),
        release,
        image,
        origin,
        package_version: Some(version),
    })
}

/// `apt-get download PKG=VERSION` into `dir`, reusing a file already there.
pub fn download_deb(
    pkg: &str,
    version: &str,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    let prefix = format!("{pkg}_{}_", version.replace(':', "%3a"));
    let existing = |dir: &Path| -> Option<PathBuf> {
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
    };
    if let Some(p) = existing(dir) {
        return Ok(p);
    }
    progress.step(&format!("downloading {pkg} {version} (apt-get download)"));
    // APT's sandbox user cannot write into root's cache; download as the caller.
    run_tool(
        Command::new("apt-get")
            .current_dir(dir)
            .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
            .arg(format!("{pkg}={version}")),
        "apt-get download",
        "apt",
    )?;
    existing(dir).ok_or_else(|| Error::BadKernel {
        kernel: pkg.into(),
        detail: format!(
            "apt-get download left no {prefix}*.deb in {}",
            dir.display()
        ),
    })
}

/// `lib/modules/RELEASE` or `usr/lib/modules/RELEASE` below `root`, or `root` itself when it
/// is that folder.
pub fn find_modules_root(root: &Path, release: &str) -> Option<PathBuf> {
    if root.join("modules.order").exists() || root.join("modules.builtin").exists() {
        return Some(root.to_path_buf());
    }
    for base in ["lib/modules", "usr/lib/modules"] {
        let p = root.join(base).join(release);
        if !release.is_empty() && p.is_dir() {
            return Some(p);
        }
    }
    // A user's modules folder for an unknown release: take the only one there.
    for base in ["lib/modules", "usr/lib/modules"] {
        if let Ok(rd) = std::fs::read_dir(root.join(base)) {
            let dirs: Vec<_> = rd.flatten().filter(|e| e.path().is_dir()).collect();
            if dirs.len() == 1 {
                return Some(dirs[0].path());
            }
        }
    }
    None
}

/// Runs `depmod` for a modules folder that is not under `/lib/modules`.
pub fn depmod(modroot: &Path, release: &str) -> Result<()> {
    // depmod -b BASE wants BASE/lib/modules/RELEASE; give it a scratch base that links there.
    let base = modroot.with_file_name(format!(".depmod-base-{release}"));
    let _ = std::fs::remove_dir_all(&base);
    let lm = base.join("lib/modules");
    crate::create_dir(&lm)?;
    let abs = std::fs::canonicalize(modroot).map_err(|e| Error::io("resolving", modroot, e))?;
    std::os::unix::fs::symlink(&abs, lm.join(release)).map_err(|e| Error::io("linking", &lm, e))?;
    // Not found: running plain `depmod` fails with run_tool's "install kmod" message.
    let depmod = host_tools::find_host_tool("depmod").unwrap_or_else(|| "depmod".into());
    let r = run_tool(
        Command::new(depmod).arg("-b").arg(&base).arg(release),
        "depmod",
        "kmod",
    );
    let _ = std::fs::remove_dir_all(&base);
    r
}

/// Reads the embedded config of a bzImage built with CONFIG_IKCONFIG (what
/// scripts/extract-ikconfig does), if it is there and not compressed with an unknown method.
pub fn embedded_config(bzimage: &Path) -> Option<String> {
    use std::io::Read;
    let data = std::fs::read(bzimage).ok()?;
    // The config is stored gzip-compressed between the markers IKCFG_ST and IKCFG_ED
    // (kernel/configs.c). In a bzImage it sits inside the compressed vmlinux, so this only
    // finds it in uncompressed images or when the payload is gzip and we inflate it first.
    let find = |hay: &[u8]| -> Option<String> {
        let pos = hay.windows(8).position(|w| w == b"IKCFG_ST")?;
        let mut gz = flate2::read::GzDecoder::new(&hay[pos + 8..]);
        let mut s = String::new();
        gz.read_to_string(&mut s).ok()?;
        Some(s)
    };
    if let Some(s) = find(&data) {
        return Some(s);
    }
    // gzip-compressed payload: inflate from the first gzip header.
    let gz_at = data.windows(3).position(|w| w == [0x1f, 0x8b, 0x08])?;
    let mut inner = Vec::new();
    flate2::read::GzDecoder::new(&data[gz_at..])
        .read_to_end(&mut inner)
        .ok()?;
    find(&inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_and_paths_parse() {
        assert_eq!(
            KernelSpec::parse("6.12", None).unwrap(),
            KernelSpec::Debian {
                series: "6.12".into()
            }
        );
        let err = KernelSpec::parse("/nonexistent/bzImage", None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("6.1") && msg.contains("6.12"), "{msg}");
        assert!(KernelSpec::parse("6.1", Some("/x".into())).is_err());
    }

    #[test]
    fn modules_root_found_in_both_layouts() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("usr/lib/modules/6.12.1")).unwrap();
        assert_eq!(
            find_modules_root(t.path(), "6.12.1").unwrap(),
            t.path().join("usr/lib/modules/6.12.1")
        );
    }
}
