//! Kernels: Debian packages fetched into the cache, or a user's own build.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{run_tool, Error, Progress, Result};

/// Which kernel to boot, as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSpec {
    /// A Debian `linux-image-*-amd64` package of this series ("6.1", "6.12", "7.3"), newest
    /// build; "latest" is the newest kernel Debian serves.
    Debian { series: String },
    /// A user's bzImage, with an optional `lib/modules/RELEASE` folder (or a folder that holds
    /// `lib/modules/RELEASE`).
    Custom {
        bzimage: PathBuf,
        modules_dir: Option<PathBuf>,
    },
}

/// The Debian series e4race is tested on; any other series Debian serves works too
/// (`e4race doctor` lists them).
pub const KNOWN_SERIES: &[&str] = &["6.1", "6.12", "7.2", "7.3"];
/// The kernel used when the user names none.
pub const DEFAULT_SERIES: &str = "6.1";

impl KernelSpec {
    /// Parses `--kernel`: a series such as `6.12`, or a path to a bzImage.
    pub fn parse(s: &str, modules_dir: Option<PathBuf>) -> Result<Self> {
        let looks_like_series = debian_archive::is_series_name(s) && !Path::new(s).exists();
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
    s.push_str("; `latest` (the newest Debian kernel); or a path to your own bzImage");
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

/// The kernel package `--kernel SERIES` names (`6.1`, `7.3`, `latest`): the newest build, from
/// the host's apt or e4race's own apt state (crate `debian-archive`).
pub fn resolve_debian_package(
    series: &str,
    cache: &Path,
    progress: &dyn Progress,
) -> Result<debian_archive::KernelPackage> {
    let archive = debian_archive::Archive::new(cache);
    archive
        .resolve_kernel(series, &|s: &str| progress.step(s))
        .map_err(|e| match e {
            debian_archive::Error::UnknownSeries { asked, available } => Error::UnknownKernel {
                asked,
                available: format!("Debian series {available}; or a path to your own bzImage"),
            },
            other => Error::Archive(other),
        })
}

/// The packages that make up a kernel. Up to 6.x, `linux-image-RELEASE` holds the kernel and
/// its modules. From 7.x it is a meta-package: the kernel is in `linux-binary-RELEASE`
/// (`usr/lib/modules/RELEASE/vmlinuz`, no /boot), the modules in `linux-modules-RELEASE`, and
/// the config, modules.builtin and modules.order in `linux-base-RELEASE`, all at the image's
/// version.
pub fn kernel_parts(image: &debian_archive::Package, release: &str) -> Vec<String> {
    let mut parts = vec![image.name.clone()];
    for part in ["linux-binary-", "linux-modules-", "linux-base-"] {
        let name = format!("{part}{release}");
        if image.depends.contains(&name) {
            parts.push(name);
        }
    }
    parts
}

/// Downloads and extracts a Debian kernel into `cache/kernels/PKG_VERSION/`.
pub fn fetch_debian(series: &str, cache: &Path, progress: &dyn Progress) -> Result<PreparedKernel> {
    let k = resolve_debian_package(series, cache, progress)?;
    let (pkg, version, release) = (&k.package.name, &k.package.version, &k.release);
    let dir = cache.join("kernels").join(format!("{pkg}_{version}"));
    let origin = format!("{pkg} {version}");
    if !dir.join(".complete").exists() {
        let archive = debian_archive::Archive::new(cache);
        let debs = cache.join("debs");
        crate::create_dir(&debs)?;
        let log = |s: &str| progress.step(s);
        let mut files = Vec::new();
        for name in kernel_parts(&k.package, release) {
            let part = if name == *pkg {
                k.package.clone()
            } else {
                archive.find(&name, Some(version), &log)?
            };
            files.push(archive.download(&part, &debs, &log)?);
        }
        progress.step(&format!("extracting {pkg}"));
        let tmp = dir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        crate::create_dir(&tmp)?;
        for deb in &files {
            run_tool(
                Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp),
                "dpkg-deb",
                "dpkg",
            )?;
        }
        let modroot = find_modules_root(&tmp, release).ok_or_else(|| Error::BadKernel {
            kernel: origin.clone(),
            detail: format!("the package has no lib/modules/{release}"),
        })?;
        // Debian packages do not ship modules.dep; depmod makes it (docs/facts.md §3).
        depmod(&modroot, release)?;
        std::fs::write(tmp.join(".complete"), &origin)
            .map_err(|e| Error::io("writing", &tmp, e))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).map_err(|e| Error::io("renaming", &dir, e))?;
    }
    let modules_root = find_modules_root(&dir, release);
    // 6.x: boot/vmlinuz-RELEASE; 7.x: usr/lib/modules/RELEASE/vmlinuz.
    let image = [
        Some(dir.join("boot").join(format!("vmlinuz-{release}"))),
        modules_root.as_ref().map(|r| r.join("vmlinuz")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.is_file())
    .ok_or_else(|| Error::BadKernel {
        kernel: origin.clone(),
        detail: format!(
            "no boot/vmlinuz-{release} or usr/lib/modules/{release}/vmlinuz in {}",
            dir.display()
        ),
    })?;
    Ok(PreparedKernel {
        modules_root,
        release: release.clone(),
        image,
        origin,
        package_version: Some(version.clone()),
    })
}

/// The modules folder layouts `--modules-dir` takes, for error messages.
pub const MODULES_LAYOUTS: &str =
    "a lib/modules/RELEASE folder (with modules.order, modules.builtin, \
     modules.dep or a kernel/ subfolder, as Debian packages have), `make modules_install \
     INSTALL_MOD_PATH=DIR` output (DIR/lib/modules/RELEASE), or an extracted Debian package \
     (lib/modules/RELEASE or usr/lib/modules/RELEASE below it)";

/// True when `dir` is itself a `lib/modules/RELEASE` folder.
pub fn is_modules_root(dir: &Path) -> bool {
    ["modules.order", "modules.builtin", "modules.dep"]
        .iter()
        .any(|f| dir.join(f).is_file())
        || dir.join("kernel").is_dir()
}

/// `lib/modules/RELEASE` or `usr/lib/modules/RELEASE` below `root`, or `root` itself when it
/// is that folder (see [`MODULES_LAYOUTS`]).
pub fn find_modules_root(root: &Path, release: &str) -> Option<PathBuf> {
    if is_modules_root(root) {
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

/// Index files depmod writes; a shadow tree makes its own instead of linking the user's.
const DEPMOD_OUTPUTS: &[&str] = &[
    "modules.dep",
    "modules.dep.bin",
    "modules.alias",
    "modules.alias.bin",
    "modules.softdep",
    "modules.symbols",
    "modules.symbols.bin",
    "modules.devname",
    "modules.builtin.bin",
    "modules.builtin.alias.bin",
    "modules.weakdep",
];

/// A key for a modules folder's content: every file's path, size and mtime.
fn tree_key(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut stack = vec![root.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m) => files.push((p, m.len(), m.mtime(), m.mtime_nsec())),
                Err(_) => {}
            }
        }
    }
    files.sort();
    h.update(root.as_os_str().as_encoded_bytes());
    for (p, len, s, ns) in files {
        h.update(p.as_os_str().as_encoded_bytes());
        h.update(&len.to_le_bytes());
        h.update(&s.to_le_bytes());
        h.update(&ns.to_le_bytes());
    }
    h.digest()
}

/// A modules folder the guest image can use, made in the cache from a user's folder that
/// lacks `modules.dep` or `modules.builtin`, without writing into the user's folder:
/// `CACHE/custom-modules/KEY/lib/modules/RELEASE` holds a symlink to each of the user's
/// entries, `modules.builtin` written from the kernel config when the user has none (Debian
/// 7.x packages ship none; the config's `=y` lines say what is built in), and depmod's index.
pub fn shadow_modules(
    user_root: &Path,
    release: &str,
    cache: &Path,
    config: Option<&str>,
) -> Result<PathBuf> {
    let abs = std::fs::canonicalize(user_root).map_err(|e| Error::io("resolving", user_root, e))?;
    let mut key = xxhash_rust::xxh3::Xxh3::new();
    key.update(&tree_key(&abs).to_le_bytes());
    key.update(config.unwrap_or("").as_bytes());
    let base = cache
        .join("custom-modules")
        .join(format!("{:016x}", key.digest()));
    let dir = base.join("lib/modules").join(release);
    if base.join(".complete").exists() {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&base);
    crate::create_dir(&dir)?;
    let rd = std::fs::read_dir(&abs).map_err(|e| Error::io("reading", &abs, e))?;
    for e in rd.flatten() {
        let name = e.file_name();
        if DEPMOD_OUTPUTS.iter().any(|f| name == *f) {
            continue;
        }
        std::os::unix::fs::symlink(e.path(), dir.join(&name))
            .map_err(|err| Error::io("linking", &dir.join(&name), err))?;
    }
    if !dir.join("modules.builtin").exists() {
        if let Some(cfg) = config {
            let builtin: String = crate::modules::REQUIRED
                .iter()
                .filter(|(_, opt)| cfg.lines().any(|l| l.trim() == format!("{opt}=y")))
                .map(|(m, _)| format!("kernel/builtin/{m}.ko\n"))
                .collect();
            std::fs::write(dir.join("modules.builtin"), builtin)
                .map_err(|e| Error::io("writing", &dir.join("modules.builtin"), e))?;
        }
    }
    // depmod follows the symlinks into the user's folder for the .ko files and writes its
    // index here.
    depmod_in(&base, release)?;
    std::fs::write(base.join(".complete"), abs.as_os_str().as_encoded_bytes())
        .map_err(|e| Error::io("writing", &base, e))?;
    Ok(dir)
}

/// The kernel config that goes with a user's kernel, if one is beside it: `config` or
/// `config-RELEASE` in the modules folder, `boot/config-RELEASE` of an extracted package,
/// `config-RELEASE`/`config` next to the bzImage, or a build tree's `.config`
/// (arch/x86/boot/bzImage → ../../../.config).
pub fn find_config(bzimage: &Path, modules_root: Option<&Path>, release: &str) -> Option<String> {
    let mut cands: Vec<PathBuf> = Vec::new();
    let named = format!("config-{release}");
    if let Some(r) = modules_root {
        cands.push(r.join("config"));
        cands.push(r.join(&named));
        // PKG/lib/modules/REL and PKG/usr/lib/modules/REL → PKG/boot.
        for up in [3, 4] {
            let mut p = r.to_path_buf();
            for _ in 0..up {
                p.pop();
            }
            cands.push(p.join("boot").join(&named));
        }
    }
    if let Some(d) = bzimage.parent() {
        cands.push(d.join(&named));
        cands.push(d.join("config"));
        cands.push(d.join("../../../.config"));
    }
    cands
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .or_else(|| embedded_config(bzimage))
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
    let r = depmod_in(&base, release);
    let _ = std::fs::remove_dir_all(&base);
    r
}

/// `depmod -b BASE RELEASE`: indexes and writes `BASE/lib/modules/RELEASE`.
fn depmod_in(base: &Path, release: &str) -> Result<()> {
    // Not found: running plain `depmod` fails with run_tool's "install kmod" message.
    let depmod = host_tools::find_host_tool("depmod").unwrap_or_else(|| "depmod".into());
    run_tool(
        Command::new(depmod).arg("-b").arg(base).arg(release),
        "depmod",
        "kmod",
    )
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

    /// A fake modules folder: `kernel/` with junk .ko files (depmod indexes them anyway).
    fn fake_modules(root: &Path, with_builtin: bool) {
        for m in ["fs/ext4/ext4.ko", "drivers/block/virtio_blk.ko"] {
            let p = root.join("kernel").join(m);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"not an ELF file").unwrap();
        }
        if with_builtin {
            std::fs::write(
                root.join("modules.builtin"),
                "kernel/drivers/virtio/virtio_pci.ko\n",
            )
            .unwrap();
        }
    }

    /// Every file below `root`, relative.
    fn listing(root: &Path) -> Vec<String> {
        let mut out = vec![];
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path().strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_debian_release_folder_without_index_files_is_a_modules_root() {
        let t = tempfile::tempdir().unwrap();
        let rel = t.path().join("usr/lib/modules/7.3.4+deb13-amd64");
        fake_modules(&rel, false);
        assert!(is_modules_root(&rel));
        // The release folder itself, the package root and the folder above lib/modules.
        assert_eq!(find_modules_root(&rel, "").unwrap(), rel);
        assert_eq!(find_modules_root(t.path(), "").unwrap(), rel);
        assert_eq!(find_modules_root(&t.path().join("usr"), "").unwrap(), rel);
        assert!(find_modules_root(&t.path().join("usr/lib"), "").is_none());
    }

    #[test]
    fn the_shadow_tree_indexes_without_writing_into_the_users_folder() {
        if host_tools::find_host_tool("depmod").is_none() {
            panic!("depmod (kmod) is needed: apt-get install kmod");
        }
        let user = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let rel = user.path().join("lib/modules/7.3.4+deb13-amd64");
        fake_modules(&rel, false);
        let before = listing(user.path());
        let cfg = "CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_CONSOLE=y\n# CONFIG_VIRTIO_BLK is not set\nCONFIG_EXT4_FS=m\n";
        let dir = shadow_modules(&rel, "7.3.4+deb13-amd64", cache.path(), Some(cfg)).unwrap();
        assert_eq!(listing(user.path()), before, "the user's folder changed");
        assert!(dir.starts_with(cache.path()), "{}", dir.display());
        let dep = std::fs::read_to_string(dir.join("modules.dep")).unwrap();
        assert!(dep.contains("kernel/fs/ext4/ext4.ko:"), "{dep}");
        let idx = crate::modules::ModuleIndex::load(&dir).unwrap();
        assert!(idx.is_builtin("virtio_pci") && idx.is_builtin("virtio_console"));
        assert!(!idx.is_builtin("virtio_blk") && !idx.is_builtin("ext4"));
        assert!(idx.has_module("ext4") && idx.has_module("virtio_blk"));
        // The same folder again: the cached tree, no second depmod.
        std::fs::remove_file(dir.join("modules.dep")).unwrap();
        let again = shadow_modules(&rel, "7.3.4+deb13-amd64", cache.path(), Some(cfg)).unwrap();
        assert_eq!(again, dir);
        assert!(!dir.join("modules.dep").exists(), "it ran depmod again");
        // A changed module is another tree.
        std::fs::write(rel.join("kernel/fs/ext4/ext4.ko"), b"rebuilt").unwrap();
        let changed = shadow_modules(&rel, "7.3.4+deb13-amd64", cache.path(), Some(cfg)).unwrap();
        assert_ne!(changed, dir);
        assert!(changed.join("modules.dep").exists());
    }

    #[test]
    fn a_users_own_modules_builtin_is_kept() {
        let user = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        fake_modules(user.path(), true);
        let dir = shadow_modules(
            user.path(),
            "6.99.0",
            cache.path(),
            Some("CONFIG_EXT4_FS=y\n"),
        )
        .unwrap();
        let idx = crate::modules::ModuleIndex::load(&dir).unwrap();
        assert!(idx.is_builtin("virtio_pci"));
        assert!(
            !idx.is_builtin("ext4"),
            "the config must not override modules.builtin"
        );
    }

    #[test]
    fn the_config_is_found_beside_the_kernel_of_an_extracted_package() {
        let t = tempfile::tempdir().unwrap();
        let rel = t.path().join("lib/modules/6.99.0");
        fake_modules(&rel, false);
        std::fs::create_dir_all(t.path().join("boot")).unwrap();
        std::fs::write(t.path().join("boot/config-6.99.0"), "CONFIG_EXT4_FS=y\n").unwrap();
        let bz = t.path().join("boot/vmlinuz-6.99.0");
        std::fs::write(&bz, b"x").unwrap();
        assert_eq!(
            find_config(&bz, Some(&rel), "6.99.0").as_deref(),
            Some("CONFIG_EXT4_FS=y\n")
        );
        // 7.x: vmlinuz and config in usr/lib/modules/RELEASE.
        let rel7 = t.path().join("usr/lib/modules/7.3.4");
        fake_modules(&rel7, false);
        std::fs::write(rel7.join("config"), "CONFIG_VIRTIO_PCI=y\n").unwrap();
        let bz7 = rel7.join("vmlinuz");
        std::fs::write(&bz7, b"x").unwrap();
        assert_eq!(
            find_config(&bz7, Some(&rel7), "7.3.4").as_deref(),
            Some("CONFIG_VIRTIO_PCI=y\n")
        );
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
