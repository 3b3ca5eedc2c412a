//! Building ext4.ko for a stock Debian kernel from its own source with a patch applied.
//!
//! Cache layout (`cache_dir`, by default `~/.cache/e4race/mutants`):
//! ```text
//! debs/                                   .deb files from `apt-get download`, reused
//! source/linux-source-6.1_6.1.192-2/fs/ext4/        pristine fs/ext4 from the source tarball
//! headers/6.1.0-56-amd64_6.1.192-2/usr/{src,lib}/   linux-headers-* and linux-kbuild-*, extracted
//! stock/6.1.0-56-amd64_6.1.192-2/         stock ext4.ko(.xz) and its vermagic
//! builds/6.1.0-56-amd64/<sha256 of patch, 16 hex>/
//!     ext4.ko  patch.diff  patch.log  make.log  build-info.txt      (a finished build)
//! builds/.../<key>.build/                 a build in progress, or the logs of a failed one
//! ```
//! Each extracted folder is made under a temporary name and renamed into place when complete,
//! so an interrupted run leaves nothing that a later run would trust.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use debian_archive::{Archive, Package};
use sha2::{Digest, Sha256};

use crate::cmd::{self, capture, io_err, mkdir, pipe, rmtree, run_logged, tail};
use crate::def::is_series;
pub use crate::error::BuildError;
use crate::tree::{self, Kbuild};

/// What to build: ext4.ko for one stock kernel with one patch against `fs/ext4`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRequest {
    /// `uname -r` of the Debian kernel, e.g. "6.1.0-56-amd64" or "6.12.117+deb12-amd64".
    pub kernel_release: String,
    /// Its series, "6.1" or "6.12": picks the `linux-source-<series>` package.
    pub series: String,
    /// A unified diff against the source tree, applied with `patch -p1` at its top; it may only
    /// touch files under `fs/ext4/`.
    pub patch: PathBuf,
    /// Where downloads, extracted trees and finished modules are kept.
    pub cache_dir: PathBuf,
    /// The stock ext4.ko (or .ko.xz) to compare vermagic with. `None`: the module is taken from
    /// `linux-image-<kernel_release>`, downloaded into the cache.
    pub stock_module: Option<PathBuf>,
    /// Where packages come from: the host's apt, then e4race's own apt state (7.x kernels).
    pub archive: Archive,
}

impl BuildRequest {
    pub fn new(
        kernel_release: impl Into<String>,
        series: impl Into<String>,
        patch: impl Into<PathBuf>,
        cache_dir: impl Into<PathBuf>,
    ) -> Self {
        let cache_dir: PathBuf = cache_dir.into();
        // The module cache is CACHE/mutants; the apt state is CACHE/apt beside it.
        let archive = Archive::new(cache_dir.parent().unwrap_or(&cache_dir));
        BuildRequest {
            kernel_release: kernel_release.into(),
            series: series.into(),
            patch: patch.into(),
            cache_dir,
            stock_module: None,
            archive,
        }
    }
}

/// `$E4RACE_CACHE/mutants`, else `$XDG_CACHE_HOME/e4race/mutants`, else
/// `~/.cache/e4race/mutants` (the same root the guest images use).
pub fn default_cache_dir() -> PathBuf {
    let root = if let Some(p) = std::env::var_os("E4RACE_CACHE") {
        PathBuf::from(p)
    } else if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(p).join("e4race")
    } else {
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
        PathBuf::from(home).join(".cache/e4race")
    };
    root.join("mutants")
}

/// The archive whose own apt state sits beside [`default_cache_dir`] (`CACHE/apt`).
pub fn default_archive() -> Archive {
    let cache = default_cache_dir();
    Archive::new(cache.parent().unwrap_or(&cache))
}

/// Where, relative to the cache folder, the module for this kernel and patch is kept:
/// `builds/<release>/<first 16 hex digits of the patch's SHA-256>`. The Debian version is
/// not part of the key: Debian bumps the ABI name in the release whenever modules stop being
/// interchangeable, and a cache hit must not need a (slow, ~2 s) apt query.
pub fn cache_key(kernel_release: &str, patch: &[u8]) -> PathBuf {
    let digest = hex(&Sha256::digest(patch));
    PathBuf::from("builds")
        .join(kernel_release)
        .join(&digest[..16])
}

/// A name suffix no other process or thread uses at the same time (for temporary folders).
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds (or takes from the cache) ext4.ko for `req` and returns its path. Progress messages
/// go to `progress`; a build takes about a minute on 2 cores, a cache hit a fraction of a second.
pub fn build_ext4_module(
    req: &BuildRequest,
    progress: &dyn Fn(&str),
) -> Result<PathBuf, BuildError> {
    validate(req)?;
    let patch_bytes = std::fs::read(&req.patch).map_err(|source| BuildError::PatchUnreadable {
        path: req.patch.clone(),
        source,
    })?;
    let done = req
        .cache_dir
        .join(cache_key(&req.kernel_release, &patch_bytes));
    let module = done.join("ext4.ko");
    if module.is_file() {
        progress(&format!(
            "ext4.ko for {} (cached) {}",
            req.kernel_release,
            module.display()
        ));
        return Ok(module);
    }
    cmd::preflight()?;
    // The kernel image's Debian version picks the matching source and headers.
    let image = req.archive.find(
        &format!("linux-image-{}", req.kernel_release),
        None,
        progress,
    )?;
    let version = image.version.clone();
    let started = Instant::now();
    let debs = req.cache_dir.join("debs");
    mkdir(&debs)?;

    // 1. The pristine fs/ext4, then a patched copy in the build folder.
    let (source_dir, source_package) = ensure_source(req, &version, &debs, progress)?;
    let work = done.with_extension("build");
    rmtree(&work)?;
    let tree = work.join("src");
    cmd::copy_tree(&source_dir, &tree.join("fs/ext4"))?;
    std::fs::write(work.join("patch.diff"), &patch_bytes)
        .map_err(|e| io_err("writing", &work.join("patch.diff"), e))?;
    if patch_bytes.iter().all(u8::is_ascii_whitespace) {
        // An empty patch rebuilds the stock source: the control for a mutant, compiled by
        // the same compiler and kbuild as the mutant itself.
        std::fs::write(
            work.join("patch.log"),
            "empty patch: the stock fs/ext4, rebuilt\n",
        )
        .map_err(|e| io_err("writing", &work.join("patch.log"), e))?;
    } else {
        apply_patch(&tree, &work, &req.patch, &source_package)?;
    }

    // 2. Headers and kbuild of exactly this kernel; for a kernel built by a newer gcc than
    // the host's (Debian 7.x), a source tree configured from those headers instead (tree.rs).
    let headers = ensure_headers(req, &version, &debs, progress)?;
    let kbuild = if tree::needs_prepared_tree(&headers) {
        let source = find_version(
            &req.archive,
            &format!("linux-source-{}", req.series),
            &version,
            progress,
        )?;
        let deb = req.archive.download(&source, &debs, progress)?;
        tree::ensure_prepared(
            &req.cache_dir,
            &req.kernel_release,
            &source_package,
            &deb,
            &headers,
            progress,
        )?
    } else {
        Kbuild::Headers(headers.clone())
    };

    // 3. kbuild's out-of-tree module build of the patched fs/ext4.
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let make_log = work.join("make.log");
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(kbuild.dir())
        .args(kbuild.make_vars())
        .arg(format!("M={}", tree.join("fs/ext4").display()))
        .args(["CONFIG_EXT4_FS=m", "modules", &format!("-j{jobs}")])
        // These would redirect kbuild (another architecture, compiler prefix or output tree).
        .env_remove("ARCH")
        .env_remove("CROSS_COMPILE")
        .env_remove("KBUILD_OUTPUT")
        .env_remove("O");
    progress(&format!(
        "building ext4.ko for {} (make -j{jobs}, about a minute on 2 cores)",
        req.kernel_release
    ));
    let t = Instant::now();
    let status = run_logged(&mut make, &make_log)?;
    let built = tree.join("fs/ext4/ext4.ko");
    if !status.success() || !built.is_file() {
        return Err(BuildError::BuildFailed {
            command: cmd::display(&make),
            tail: make_errors(&make_log),
            log: make_log,
        });
    }
    progress(&format!("compiled in {:.0} s", t.elapsed().as_secs_f64()));

    // 4. Strip debug info (19 MB -> ~2 MB) and check that the stock kernel will accept it.
    let stripped = work.join("ext4.ko");
    let (st, out) = capture(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&stripped)
            .arg(&built),
    )?;
    if !st.success() {
        return Err(BuildError::Tool {
            command: format!("strip --strip-debug {}", built.display()),
            output: out,
        });
    }
    let stock = match &req.stock_module {
        Some(p) => module_vermagic(p)?,
        None => stock_vermagic(req, &version, &debs, progress)?,
    };
    let ours = module_vermagic(&stripped)?;
    if ours != stock {
        return Err(BuildError::VermagicMismatch {
            module: stripped,
            built: ours,
            stock,
            headers: match &kbuild {
                Kbuild::Headers(_) => headers_root(req, &version),
                Kbuild::Prepared { tree, .. } => tree.clone(),
            },
        });
    }

    // 5. Keep logs and the module, drop the object files, publish under the final name.
    rmtree(&tree)?;
    let info = format!(
        "kernel_release = {}\ndebian_version = {version}\nsource = {source_package}\n\
         kbuild = {}\npatch = {}\npatch_sha256 = {}\nvermagic = {ours}\nbuild_seconds = {:.0}\n",
        req.kernel_release,
        match &kbuild {
            Kbuild::Headers(d) => format!("headers {}", d.display()),
            Kbuild::Prepared { tree, localversion } => format!(
                "prepared source tree {} (CC=gcc LOCALVERSION={localversion})",
                tree.display()
            ),
        },
        req.patch.display(),
        hex(&Sha256::digest(&patch_bytes)),
        started.elapsed().as_secs_f64()
    );
    std::fs::write(work.join("build-info.txt"), info)
        .map_err(|e| io_err("writing", &work.join("build-info.txt"), e))?;
    publish(&work, &done)?;
    progress(&format!(
        "ext4.ko for {} built in {:.0} s: {}",
        req.kernel_release,
        started.elapsed().as_secs_f64(),
        module.display()
    ));
    Ok(module)
}

/// The end of make's log without kbuild's progress lines ("  CC [M]  ..."), so the compiler's
/// messages show.
fn make_errors(log: &Path) -> String {
    let text = tail(log, 400);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !(l.starts_with("  ")
                && t.split_whitespace().next().is_some_and(|w| {
                    w.len() > 1
                        && w.bytes().any(|b| b.is_ascii_uppercase())
                        && w.bytes()
                            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
                }))
        })
        .collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn validate(req: &BuildRequest) -> Result<(), BuildError> {
    let r = &req.kernel_release;
    if r.is_empty()
        || !r
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '_'))
    {
        return Err(BuildError::InvalidRequest(format!(
            "kernel release {r:?} is not a Debian kernel release like \"6.1.0-56-amd64\""
        )));
    }
    if !is_series(&req.series) {
        return Err(BuildError::InvalidRequest(format!(
            "series {:?} is not of the form MAJOR.MINOR (e.g. \"6.1\")",
            req.series
        )));
    }
    if !r.starts_with(&format!("{}.", req.series)) {
        return Err(BuildError::InvalidRequest(format!(
            "kernel release {r} does not belong to series {}",
            req.series
        )));
    }
    Ok(())
}

/// Renames a finished build folder to its final name; another process may have won the race.
fn publish(work: &Path, done: &Path) -> Result<(), BuildError> {
    if done.join("ext4.ko").is_file() {
        return rmtree(work);
    }
    rmtree(done)?;
    std::fs::rename(work, done).map_err(|e| io_err("renaming to", done, e))
}

/// `pkg` at `want` if the archive has that version, else its candidate (with a warning).
fn find_version(
    archive: &Archive,
    pkg: &str,
    want: &str,
    progress: &dyn Fn(&str),
) -> Result<Package, BuildError> {
    match archive.find(pkg, Some(want), progress) {
        Ok(p) => Ok(p),
        Err(_) => {
            let p = archive.find(pkg, None, progress)?;
            progress(&format!(
                "warning: apt has no {pkg} {want} (the kernel's version); using {}, whose \
                 fs/ext4 may differ from the running kernel's",
                p.version
            ));
            Ok(p)
        }
    }
}

/// Extracts `fs/ext4` of `linux-source-<series>` (the version of the kernel image if apt has
/// it) into `cache/source/`; returns that folder and "linux-source-X VERSION".
fn ensure_source(
    req: &BuildRequest,
    version: &str,
    debs: &Path,
    progress: &dyn Fn(&str),
) -> Result<(PathBuf, String), BuildError> {
    let pkg = format!("linux-source-{}", req.series);
    let source = find_version(&req.archive, &pkg, version, progress)?;
    let src_version = source.version.clone();
    let name = format!("{pkg}_{src_version}");
    let dir = req.cache_dir.join("source").join(&name);
    let ext4 = dir.join("fs/ext4");
    let label = format!("{pkg} {src_version}");
    if dir.join(".complete").exists() {
        return Ok((ext4, label));
    }
    let deb = req.archive.download(&source, debs, progress)?;
    progress(&format!("extracting fs/ext4 from {label}"));
    let tmp = dir.with_extension(format!("tmp-{}", unique()));
    rmtree(&tmp)?;
    mkdir(&tmp)?;
    let log = tmp.join("extract.log");
    let fail = |what: &str| BuildError::Extract {
        what: format!("{what} from {}", deb.display()),
        tail: tail(&log, 20),
        log: log.clone(),
    };
    // The package holds one tarball, usr/src/linux-source-<series>.tar.xz.
    let ok = pipe(
        Command::new("dpkg-deb").arg("--fsys-tarfile").arg(&deb),
        Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&tmp)
            .args(["--wildcards", "*/usr/src/linux-source-*.tar.xz"]),
        &log,
    )?;
    let tarball = find_file(&tmp.join("usr/src"), ".tar.xz");
    let Some(tarball) = tarball.filter(|_| ok) else {
        return Err(fail("the source tarball"));
    };
    let unpack = tmp.join("unpack");
    mkdir(&unpack)?;
    let st = run_logged(
        Command::new("tar")
            .arg("-xJf")
            .arg(&tarball)
            .arg("-C")
            .arg(&unpack)
            .args(["--wildcards", "*/fs/ext4/*"]),
        &log,
    )?;
    // The tarball's single top folder is linux-source-<series>.
    let top = std::fs::read_dir(&unpack).ok().and_then(|rd| {
        rd.flatten()
            .map(|e| e.path())
            .find(|p| p.join("fs/ext4").is_dir())
    });
    let Some(top) = top.filter(|_| st.success()) else {
        return Err(fail("fs/ext4"));
    };
    mkdir(&tmp.join("fs"))?;
    std::fs::rename(top.join("fs/ext4"), tmp.join("fs/ext4"))
        .map_err(|e| io_err("moving", &tmp.join("fs/ext4"), e))?;
    rmtree(&unpack)?;
    rmtree(&tmp.join("usr"))?;
    finish_dir(&tmp, &dir, &label)?;
    Ok((ext4, label))
}

/// `patch -p1 --dry-run`, then for real, in `tree`; output goes to `work/patch.log`.
fn apply_patch(
    tree: &Path,
    work: &Path,
    patch: &Path,
    source_package: &str,
) -> Result<(), BuildError> {
    let abs = std::path::absolute(patch).map_err(|e| io_err("resolving", patch, e))?;
    let log = work.join("patch.log");
    let run = |dry: bool| -> Result<(bool, String), BuildError> {
        let mut c = Command::new("patch");
        c.current_dir(tree)
            .args(["-p1", "--batch", "--forward", "--no-backup-if-mismatch"]);
        if dry {
            c.arg("--dry-run");
        }
        let (st, out) = capture(c.arg("-i").arg(&abs))?;
        let mut text = format!("$ {}\n{out}", cmd::display(&c));
        text.push('\n');
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
        Ok((st.success(), out))
    };
    for dry in [true, false] {
        let (ok, out) = run(dry)?;
        if !ok {
            return Err(BuildError::PatchDoesNotApply {
                patch: patch.to_path_buf(),
                source_package: source_package.to_string(),
                output: out.trim().to_string(),
                log: log.clone(),
            });
        }
    }
    Ok(())
}

fn headers_root(req: &BuildRequest, version: &str) -> PathBuf {
    req.cache_dir
        .join("headers")
        .join(format!("{}_{version}", req.kernel_release))
}

/// Extracts linux-headers-<release> and the packages it needs (linux-headers-*-common,
/// linux-kbuild-*) into `cache/headers/`, and returns the folder to pass to `make -C`.
fn ensure_headers(
    req: &BuildRequest,
    version: &str,
    debs: &Path,
    progress: &dyn Fn(&str),
) -> Result<PathBuf, BuildError> {
    let root = headers_root(req, version);
    let kdir = root
        .join("usr/src")
        .join(format!("linux-headers-{}", req.kernel_release));
    if !root.join(".complete").exists() {
        let main = format!("linux-headers-{}", req.kernel_release);
        let headers = req.archive.find(&main, Some(version), progress)?;
        let mut pkgs = vec![main.clone()];
        pkgs.extend(
            headers
                .depends
                .iter()
                .filter(|d| d.starts_with("linux-headers-") || d.starts_with("linux-kbuild-"))
                .cloned(),
        );
        let mut files = Vec::new();
        for pkg in &pkgs {
            // All of them come from the same source package and share its version.
            let p = find_version(&req.archive, pkg, version, progress)?;
            files.push(req.archive.download(&p, debs, progress)?);
        }
        progress(&format!("extracting headers for {}", req.kernel_release));
        let tmp = root.with_extension(format!("tmp-{}", unique()));
        rmtree(&tmp)?;
        mkdir(&tmp)?;
        let log = tmp.join("extract.log");
        for deb in &files {
            let st = run_logged(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp), &log)?;
            if !st.success() {
                return Err(BuildError::Extract {
                    what: deb.display().to_string(),
                    tail: tail(&log, 20),
                    log,
                });
            }
        }
        // Absolute symlinks point at /usr/src/... and /usr/lib/... of an installed system;
        // point them inside the extracted tree instead. (Debian 12's use relative links.)
        relink_absolute(&tmp.join("usr"), &root)?;
        finish_dir(&tmp, &root, &pkgs.join(" "))?;
    }
    fix_makefile(&root, &kdir)?;
    Ok(kdir)
}

/// The flavour's Makefile is one line, `include /usr/src/linux-headers-X-common/Makefile`:
/// make it name the extracted copy. Redone before each build (from the pristine copy), so the
/// cache survives being moved.
fn fix_makefile(root: &Path, kdir: &Path) -> Result<(), BuildError> {
    let makefile = kdir.join("Makefile");
    let pristine = kdir.join("Makefile.debian");
    if !pristine.exists() {
        std::fs::copy(&makefile, &pristine).map_err(|e| io_err("copying", &makefile, e))?;
    }
    let text = std::fs::read_to_string(&pristine).map_err(|e| io_err("reading", &pristine, e))?;
    let prefix = root.display().to_string();
    let fixed: String = text
        .lines()
        .map(|l| match l.strip_prefix("include /usr/") {
            Some(rest) => format!("include {prefix}/usr/{rest}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&makefile, fixed).map_err(|e| io_err("writing", &makefile, e))
}

fn relink_absolute(dir: &Path, root: &Path) -> Result<(), BuildError> {
    let rd = std::fs::read_dir(dir).map_err(|e| io_err("reading", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| io_err("reading", dir, e))?;
        let path = entry.path();
        let ty = entry.file_type().map_err(|e| io_err("reading", &path, e))?;
        if ty.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| io_err("reading", &path, e))?;
            if let Ok(rel) = target.strip_prefix("/") {
                let _ = std::fs::remove_file(&path);
                std::os::unix::fs::symlink(root.join(rel), &path)
                    .map_err(|e| io_err("creating", &path, e))?;
            }
        } else if ty.is_dir() {
            relink_absolute(&path, root)?;
        }
    }
    Ok(())
}

/// The stock module's vermagic, from `linux-image-<release>` (cached in `cache/stock/`).
fn stock_vermagic(
    req: &BuildRequest,
    version: &str,
    debs: &Path,
    progress: &dyn Fn(&str),
) -> Result<String, BuildError> {
    let dir = req
        .cache_dir
        .join("stock")
        .join(format!("{}_{version}", req.kernel_release));
    let saved = dir.join("vermagic");
    if dir.join(".complete").exists() {
        if let Ok(v) = std::fs::read_to_string(&saved) {
            return Ok(v.trim().to_string());
        }
    }
    let image = format!("linux-image-{}", req.kernel_release);
    let image_pkg = req.archive.find(&image, Some(version), progress)?;
    // Debian 7.x: linux-image is a meta package; the modules are in linux-modules-RELEASE.
    let modules = format!("linux-modules-{}", req.kernel_release);
    let (pkg, found) = if image_pkg.depends.contains(&modules) {
        let p = req.archive.find(&modules, Some(version), progress)?;
        (modules, p)
    } else {
        (image, image_pkg)
    };
    let deb = req.archive.download(&found, debs, progress)?;
    progress(&format!("extracting the stock ext4 module from {pkg}"));
    let tmp = dir.with_extension(format!("tmp-{}", unique()));
    rmtree(&tmp)?;
    mkdir(&tmp)?;
    let log = tmp.join("extract.log");
    // 6.1 ships kernel/fs/ext4/ext4.ko, 6.12 ext4.ko.xz; under lib/ or usr/lib/.
    let pattern = format!("*/modules/{}/kernel/fs/ext4/ext4.ko*", req.kernel_release);
    let ok = pipe(
        Command::new("dpkg-deb").arg("--fsys-tarfile").arg(&deb),
        Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&tmp)
            .args(["--wildcards", &pattern]),
        &log,
    )?;
    let found = find_file(&tmp, "ext4.ko").or_else(|| find_file(&tmp, "ext4.ko.xz"));
    let Some(found) = found.filter(|_| ok) else {
        return Err(BuildError::Extract {
            what: format!("fs/ext4/ext4.ko from {}", deb.display()),
            tail: tail(&log, 20),
            log,
        });
    };
    let name = found.file_name().unwrap_or_default().to_owned();
    let kept = tmp.join(&name);
    std::fs::rename(&found, &kept).map_err(|e| io_err("moving", &kept, e))?;
    for sub in ["lib", "usr"] {
        rmtree(&tmp.join(sub))?;
    }
    let v = module_vermagic(&kept)?;
    std::fs::write(tmp.join("vermagic"), format!("{v}\n"))
        .map_err(|e| io_err("writing", &tmp.join("vermagic"), e))?;
    finish_dir(&tmp, &dir, &pkg)?;
    Ok(v)
}

/// `modinfo -F vermagic`, trimmed (e.g. "6.1.0-56-amd64 SMP preempt mod_unload modversions").
/// Reads .ko and compressed .ko.xz alike.
pub fn module_vermagic(module: &Path) -> Result<String, BuildError> {
    // modinfo lives in /usr/sbin, often not in a user's PATH (preflight looks there too).
    let modinfo = host_tools::find_host_tool("modinfo").unwrap_or_else(|| "modinfo".into());
    let mut c = Command::new(modinfo);
    c.args(["-F", "vermagic"]).arg(module);
    let (st, out) = capture(&mut c)?;
    let v = out.trim().to_string();
    if !st.success() || v.is_empty() || v.contains('\n') {
        return Err(BuildError::Tool {
            command: cmd::display(&c),
            output: if v.is_empty() {
                "no vermagic".into()
            } else {
                v
            },
        });
    }
    Ok(v)
}

/// Marks `tmp` complete and renames it to `dir` (replacing a stale incomplete one).
fn finish_dir(tmp: &Path, dir: &Path, what: &str) -> Result<(), BuildError> {
    std::fs::write(tmp.join(".complete"), format!("{what}\n"))
        .map_err(|e| io_err("writing", &tmp.join(".complete"), e))?;
    if dir.join(".complete").exists() {
        // Another process finished first.
        return rmtree(tmp);
    }
    rmtree(dir)?;
    std::fs::rename(tmp, dir).map_err(|e| io_err("renaming to", dir, e))
}

/// The first file below `dir` whose name ends with `suffix`.
fn find_file(dir: &Path, suffix: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        let ty = entry.file_type().ok()?;
        if ty.is_dir() {
            if let Some(f) = find_file(&p, suffix) {
                return Some(f);
            }
        } else if p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(suffix))
        {
            return Some(p);
        }
    }
    None
}

/// The newest plain amd64 kernel release of `series` (or `latest`) that Debian serves, e.g.
/// "6.1.0-56-amd64" for "6.1" (crate `debian-archive`: the host's apt, then e4race's own).
pub fn newest_kernel_release(series: &str, archive: &Archive) -> Result<String, BuildError> {
    Ok(archive.resolve_kernel(series, &|_| {})?.release)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_errors_skips_progress_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("make.log");
        std::fs::write(
            &log,
            "  CC [M]  a.o\n  MODPOST x\na.c:1:2: error: boom\n  684 | #error boom\n  LD [M]  b.o\n",
        )
        .unwrap();
        assert_eq!(
            make_errors(&log),
            "a.c:1:2: error: boom\n  684 | #error boom"
        );
    }

    #[test]
    fn cache_key_depends_on_release_and_patch() {
        let a = cache_key("6.1.0-56-amd64", b"patch one");
        assert_eq!(a, cache_key("6.1.0-56-amd64", b"patch one"));
        assert!(a.starts_with("builds/6.1.0-56-amd64"));
        let leaf = a.file_name().unwrap().to_str().unwrap();
        assert_eq!(leaf.len(), 16);
        assert!(leaf.bytes().all(|b| b.is_ascii_hexdigit()));
        // SHA-256("abc") starts with ba7816bf8f01cfea.
        assert_eq!(
            cache_key("r", b"abc"),
            Path::new("builds/r/ba7816bf8f01cfea")
        );
        assert_ne!(a, cache_key("6.1.0-56-amd64", b"patch two"));
        assert_ne!(a, cache_key("6.1.0-55-amd64", b"patch one"));
    }

    #[test]
    fn validate_rejects_bad_requests() {
        let ok = BuildRequest::new("6.12.117+deb12-amd64", "6.12", "p", "/c");
        assert!(validate(&ok).is_ok());
        let ok = BuildRequest::new("6.1.0-56-amd64", "6.1", "p", "/c");
        assert!(validate(&ok).is_ok());
        for (r, s) in [
            ("6.12.117+deb12-amd64", "6.1"),
            ("6.1.0-56-amd64", "6.12"),
            ("6.1.0-56-amd64; rm -rf /", "6.1"),
            ("../6.1.0", "6.1"),
            ("", "6.1"),
            ("6.1.0-56-amd64", "6"),
        ] {
            let e = validate(&BuildRequest::new(r, s, "p", "/c")).unwrap_err();
            assert!(matches!(e, BuildError::InvalidRequest(_)), "{r} {s}: {e}");
        }
    }

    #[test]
    fn makefile_include_is_pointed_into_the_cache() {
        let root = tempfile::tempdir().unwrap();
        let kdir = root.path().join("usr/src/linux-headers-6.1.0-56-amd64");
        std::fs::create_dir_all(&kdir).unwrap();
        std::fs::write(
            kdir.join("Makefile"),
            "include /usr/src/linux-headers-6.1.0-56-common/Makefile\n",
        )
        .unwrap();
        for _ in 0..2 {
            fix_makefile(root.path(), &kdir).unwrap();
            let text = std::fs::read_to_string(kdir.join("Makefile")).unwrap();
            assert_eq!(
                text,
                format!(
                    "include {}/usr/src/linux-headers-6.1.0-56-common/Makefile\n",
                    root.path().display()
                )
            );
        }
    }

    #[test]
    fn absolute_symlinks_are_rewritten() {
        let root = tempfile::tempdir().unwrap();
        let usr = root.path().join("usr/src/h");
        std::fs::create_dir_all(&usr).unwrap();
        std::os::unix::fs::symlink("/usr/lib/kbuild/scripts", usr.join("scripts")).unwrap();
        std::os::unix::fs::symlink("../x", usr.join("rel")).unwrap();
        relink_absolute(&root.path().join("usr"), root.path()).unwrap();
        assert_eq!(
            std::fs::read_link(usr.join("scripts")).unwrap(),
            root.path().join("usr/lib/kbuild/scripts")
        );
        assert_eq!(
            std::fs::read_link(usr.join("rel")).unwrap(),
            Path::new("../x")
        );
    }
}
