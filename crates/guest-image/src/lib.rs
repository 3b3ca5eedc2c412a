//! The guest image: a kernel and an initramfs that boots straight into the e4race agent.
//!
//! One code path serves every kernel: Debian packages are fetched with `apt-get download`
//! and extracted into the cache (nothing is installed on the host); a user's bzImage comes
//! with an optional modules folder. Modules are resolved from `modules.dep`, never from a fixed
//! list of files. The initramfs is rebuilt only when one of its inputs changes.

pub mod initramfs;
pub mod kernel;
pub mod modules;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use initramfs::Initramfs;
pub use kernel::{KernelSpec, PreparedKernel, DEFAULT_SERIES, KNOWN_SERIES};
pub use modules::{ModuleFile, ModuleIndex, REQUIRED};

/// Where guest-side paths live; the agent reads the same constants.
pub const MODULES_LIST: &str = "etc/e4race/modules.list";
/// The e2fsprogs programs the guest gets, by their host paths.
pub const E2FSPROGS: &[&str] = &[
    "/sbin/e2fsck",
    "/sbin/mkfs.ext4",
    "/sbin/mke2fs",
    "/sbin/tune2fs",
    "/sbin/debugfs",
    "/sbin/e4defrag",
    "/sbin/filefrag",
    "/usr/bin/chattr",
    "/usr/bin/lsattr",
];
/// Bump when the layout of the initramfs changes, to invalidate cached images.
const LAYOUT_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown kernel '{asked}'. Available: {available}")]
    UnknownKernel { asked: String, available: String },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Archive(#[from] debian_archive::Error),
    #[error(
        "the kernel lacks what the guest needs: {}. Rebuild it with these options set to y \
         (or m, and pass --modules-dir). Looked in {where_}", options.join(", ")
    )]
    MissingConfig {
        options: Vec<String>,
        where_: String,
    },
    #[error("kernel {kernel}: {detail}")]
    BadKernel { kernel: String, detail: String },
    #[error("`{tool}` is not available ({detail}); install the Debian package `{package}`")]
    ToolMissing {
        tool: String,
        package: String,
        detail: String,
    },
    #[error("`{tool}` failed with {status}: {stderr}")]
    ToolFailed {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error("the host disk is full while {what} {}; free some space (the cache is in {})", path.display(), default_cache_dir().display())]
    DiskFull { what: String, path: PathBuf },
    #[error("{what} {}: {source}", path.display())]
    PathIo {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl Error {
    /// An I/O error on a path; ENOSPC becomes [`Error::DiskFull`] so the user is told why.
    pub fn io(what: &str, path: &Path, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(28) {
            return Error::DiskFull {
                what: what.into(),
                path: path.into(),
            };
        }
        Error::PathIo {
            what: what.into(),
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Reports the steps of long operations (downloads, extraction, writing the cpio).
pub trait Progress: Sync {
    fn step(&self, what: &str);
}

impl<F: Fn(&str) + Sync> Progress for F {
    fn step(&self, what: &str) {
        self(what)
    }
}

/// `$E4RACE_CACHE`, else `$XDG_CACHE_HOME/e4race`, else `~/.cache/e4race`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("E4RACE_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("e4race");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/e4race")
}

pub(crate) fn create_dir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| Error::io("creating", p, e))
}

/// xxh3-64 of a file's bytes.
pub fn hash_file(p: &Path) -> Result<u64> {
    let mut f = std::fs::File::open(p).map_err(|e| Error::io("reading", p, e))?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io("reading", p, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.digest())
}

/// Runs a host tool, turning "not found" and failures into errors that name the package.
pub(crate) fn run_tool(cmd: &mut Command, tool: &str, package: &str) -> Result<()> {
    let out = cmd.output().map_err(|e| Error::ToolMissing {
        tool: tool.into(),
        package: package.into(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No space left on device") {
            return Err(Error::DiskFull {
                what: format!("running {tool}"),
                path: default_cache_dir(),
            });
        }
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        return Err(Error::ToolFailed {
            tool: tool.into(),
            status: out.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(())
}

/// What to put in the guest.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub kernel: KernelSpec,
    /// The static agent binary; it becomes `/init`.
    pub agent: PathBuf,
    /// A replacement ext4.ko (a mutant), loaded in place of the kernel's own.
    pub ext4_module: Option<PathBuf>,
    pub cache_dir: PathBuf,
}

/// A bootable guest.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: PreparedKernel,
    pub initramfs: PathBuf,
    /// Module names in load order.
    pub modules: Vec<String>,
    /// True when the initramfs came from the cache.
    pub cached: bool,
}

/// Prepares the kernel (fetching it if needed) and the initramfs (building it if needed).
pub fn build(req: &ImageRequest, progress: &dyn Progress) -> Result<GuestImage> {
    create_dir(&req.cache_dir)?;
    let kernel = match &req.kernel {
        KernelSpec::Debian { series } => kernel::fetch_debian(series, &req.cache_dir, progress)?,
        KernelSpec::Custom {
            bzimage,
            modules_dir,
        } => prepare_custom(bzimage, modules_dir.as_deref(), &req.cache_dir)?,
    };
    let mut ir = Initramfs::new();
    for d in [
        "dev",
        "proc",
        "sys",
        "tmp",
        "mnt",
        "run",
        "root",
        "etc/e4race",
    ] {
        ir.dir(d);
    }
    ir.chardev("dev/console", 5, 1, 0o600);
    if !req.agent.is_file() {
        return Err(Error::Usage(format!(
            "the guest agent {} does not exist; build it with `cargo build --release -p e4race-harness`",
            req.agent.display()
        )));
    }
    ir.file_from_host("init", &req.agent, 0o755);
    add_busybox(&mut ir)?;
    for tool in E2FSPROGS {
        let p = Path::new(tool);
        if !p.exists() {
            return Err(Error::ToolMissing {
                tool: tool.to_string(),
                package: "e2fsprogs".into(),
                detail: "not found on the host".into(),
            });
        }
        ir.program_with_libs(tool, p)?;
    }
    if Path::new("/etc/mke2fs.conf").exists() {
        ir.file_from_host("etc/mke2fs.conf", Path::new("/etc/mke2fs.conf"), 0o644);
    }
    let modules = add_modules(&mut ir, &kernel, req.ext4_module.as_deref())?;

    let key = {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&LAYOUT_VERSION.to_le_bytes());
        h.update(&ir.fingerprint()?.to_le_bytes());
        h.digest()
    };
    let dir = req.cache_dir.join("initramfs");
    create_dir(&dir)?;
    let out = dir.join(format!("{}-{key:016x}.cpio", kernel.release));
    let cached = out.exists();
    if !cached {
        progress.step(&format!("writing initramfs for {}", kernel.release));
        let tmp = out.with_extension("tmp");
        ir.write_to(&tmp)?;
        std::fs::rename(&tmp, &out).map_err(|e| Error::io("renaming", &out, e))?;
    }
    Ok(GuestImage {
        kernel,
        initramfs: out,
        modules,
        cached,
    })
}

fn prepare_custom(
    bzimage: &Path,
    modules_dir: Option<&Path>,
    cache: &Path,
) -> Result<PreparedKernel> {
    let user_root = match modules_dir {
        Some(d) => Some(
            kernel::find_modules_root(d, "").ok_or_else(|| Error::BadKernel {
                kernel: bzimage.display().to_string(),
                detail: format!(
                    "{} holds no modules folder; --modules-dir takes {}",
                    d.display(),
                    kernel::MODULES_LAYOUTS
                ),
            })?,
        ),
        // A Debian 7.x package keeps vmlinuz in usr/lib/modules/RELEASE, beside the modules.
        None => bzimage
            .parent()
            .filter(|p| kernel::is_modules_root(p))
            .map(Path::to_path_buf),
    };
    let release = user_root
        .as_ref()
        .and_then(|r| r.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "custom".into());
    let modules_root = match &user_root {
        Some(r) if r.join("modules.dep").is_file() && r.join("modules.builtin").is_file() => {
            Some(r.clone())
        }
        // Indexed in the cache; the user's folder is only read.
        Some(r) => {
            let config = kernel::find_config(bzimage, Some(r), &release);
            Some(kernel::shadow_modules(
                r,
                &release,
                cache,
                config.as_deref(),
            )?)
        }
        None => None,
    };
    if modules_root.is_none() {
        if let Some(cfg) = kernel::embedded_config(bzimage) {
            let missing = modules::missing_in_config(&cfg, false);
            if !missing.is_empty() {
                return Err(Error::MissingConfig {
                    options: missing,
                    where_: format!("the config embedded in {}", bzimage.display()),
                });
            }
        }
    }
    Ok(PreparedKernel {
        release,
        image: bzimage.to_path_buf(),
        modules_root,
        origin: bzimage.display().to_string(),
        package_version: None,
    })
}

fn add_busybox(ir: &mut Initramfs) -> Result<()> {
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .ok_or_else(|| Error::ToolMissing {
            tool: "busybox".into(),
            package: "busybox-static".into(),
            detail: "not found on the host".into(),
        })?;
    ir.program_with_libs("bin/busybox", bb)?;
    for applet in [
        "sh", "ls", "cat", "mount", "umount", "dmesg", "sync", "mkdir", "rm", "dd", "cmp", "sleep",
        "poweroff",
    ] {
        ir.symlink(&format!("bin/{applet}"), "busybox");
    }
    Ok(())
}

fn add_modules(ir: &mut Initramfs, k: &PreparedKernel, ext4: Option<&Path>) -> Result<Vec<String>> {
    let Some(root) = &k.modules_root else {
        if ext4.is_some() {
            return Err(Error::Usage(
                "a replacement ext4 module needs a kernel with modules (--modules-dir)".into(),
            ));
        }
        ir.file_bytes(MODULES_LIST, Vec::new(), 0o644);
        return Ok(Vec::new());
    };
    let idx = ModuleIndex::load(root)?;
    let order = idx.resolve(REQUIRED)?;
    let mut list = String::new();
    let mut names = Vec::new();
    for m in order {
        let host = match (m.name.as_str(), ext4) {
            ("ext4", Some(mutant)) => mutant.to_path_buf(),
            _ => m.path.clone(),
        };
        let guest = format!("lib/modules/{}/{}.ko", k.release, m.name);
        ir.file_bytes(&guest, read_module(&host)?, 0o644);
        // "optional" modules may fail to load (a softdep for a CPU feature TCG lacks).
        list.push_str(&format!(
            "/{guest} {}\n",
            if m.optional { "optional" } else { "required" }
        ));
        names.push(m.name);
    }
    if ext4.is_some() && !names.iter().any(|n| n == "ext4") {
        return Err(Error::Usage(format!(
            "kernel {} has ext4 built in; a replacement ext4 module cannot be loaded",
            k.release
        )));
    }
    ir.file_bytes(MODULES_LIST, list.into_bytes(), 0o644);
    Ok(names)
}

/// Reads a module, decompressing `.ko.xz` (Debian 6.12) since busybox-free loading through
/// finit_module(2) needs a kernel built with module decompression, which we cannot assume.
fn read_module(p: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(p).map_err(|e| Error::io("reading", p, e))?;
    let name = p.to_string_lossy();
    if name.ends_with(".xz") {
        let mut out = Vec::new();
        xz2::read::XzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::io("decompressing", p, e))?;
        return Ok(out);
    }
    if name.ends_with(".zst") || name.ends_with(".gz") {
        return Err(Error::BadKernel {
            kernel: name.into_owned(),
            detail: "zstd/gzip-compressed modules are not supported yet; decompress the modules folder first".into(),
        });
    }
    Ok(raw)
}
