//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use e4race_guest_image::KernelSpec;

use crate::config::{self, ConfigError, Ext4Module, ImagePolicy, Output, RunConfig};

use crate::disk::DiskBackend;
use crate::report::EXIT_CODES_HELP;
use crate::vm::Accel;

#[derive(Debug, Parser)]
#[command(
    name = "e4race",
    version,
    about = "Find lost-block races in Linux file systems: boot a stock kernel under QEMU on a disk we \
             serve and record, race remapping ioctls against mmap writers, and check every block on the host.",
    after_help = "Examples:\n  \
      e4race run smoke                      boot Debian 6.1, write+fsync+read a pattern, e2fsck: PASS\n  \
      e4race run migrate-mmap --kernel 6.12 race EXT4_IOC_MIGRATE against mmap hole writers\n  \
      e4race run migrate-mmap --mutant migrate-flag-clear   the same on ext4 with the 2008 fix reverted\n  \
      e4race run smoke --kernel ~/linux/arch/x86/boot/bzImage --modules-dir ~/linux/mod-install\n  \
      e4race doctor                         QEMU version, accelerator and cached kernels\n\n\
      Every run leaves a directory under ./runs with console.log, agent.jsonl, report.json, summary.txt, repro.sh\n\
      (and disk.img when something was found)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run a scenario and print its verdict.
    #[command(after_help = EXIT_CODES_HELP)]
    Run {
        #[command(subcommand)]
        scenario: ScenarioCmd,
    },
    /// Read a run's write log (recorded by blkrec): show, stats, export to dm-log-writes.
    #[command(subcommand)]
    Log(crate::logcmd::LogCmd),
    /// Rebuild the test disk as it was at any point of a write log (recorded with data).
    Replay {
        /// writes.log, or the run directory.
        log: PathBuf,
        /// Where to stop: end, seq:N, mark:NAME (e.g. mark:round-0-done), flush:N, entries:N.
        #[arg(long, value_name = "POSITION", default_value = "end")]
        to: writelog::LogPosition,
        /// The image to write.
        #[arg(long)]
        out: PathBuf,
        /// Start from a copy of this image instead of a zeroed one.
        #[arg(long)]
        base: Option<PathBuf>,
        /// Size in bytes of the zeroed start image (default: the run's disk.img size).
        #[arg(long)]
        size: Option<u64>,
    },
    /// Re-generate report.html, junit.xml and evidence.json (where every lost block's data went,
    /// per the write log) from a run directory.
    Report {
        /// The run directory (runs/<time>-<scenario>-<kernel>).
        run_dir: PathBuf,
    },
    /// Show a file's block mapping (lblk → pblk extents) in the final disk.img, or at any point
    /// of the write log (--at; needs a run recorded with --log-data).
    Inspect {
        /// The run directory.
        run_dir: PathBuf,
        /// The file, relative to the file system root, e.g. r0/f1.
        #[arg(long)]
        file: String,
        /// Where in the log: end, seq:N, mark:NAME (e.g. mark:round-0-done), flush:N, entries:N.
        #[arg(long, value_name = "POSITION")]
        at: Option<writelog::LogPosition>,
        /// Print the mapping as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure detection: run each mutant and the stock kernel N times per scenario and kernel,
    /// and print the table (runs, detected, false positives, median time).
    Validate(crate::validate::ValidateArgs),
    /// Show the QEMU version, the accelerator that would be chosen and why, and the cached kernels.
    Doctor {
        #[arg(long, default_value = e4race_guest_image::DEFAULT_SERIES)]
        kernel: String,
        /// Run the KVM probe boot now even if a cached verdict exists.
        #[arg(long)]
        reprobe: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScenarioCmd {
    /// Boot, mkfs + mount ext4 on the test disk, write a tagged pattern, fsync, read it back,
    /// unmount, then `e2fsck -fn` on the host. The foundation every other scenario builds on.
    Smoke {
        #[command(flatten)]
        common: CommonArgs,
        /// 4 KiB blocks to write.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=(1 << 24)))]
        blocks: u64,
    },
    /// Boot, then crash the kernel on purpose (sysrq c). Checks that a kernel panic ends the run
    /// as KERNEL-ERROR with the panic line; the expected exit code is 3.
    PanicSelftest {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Race online defrag (EXT4_IOC_MOVE_EXT with a fallocated donor, or the real e4defrag)
    /// against mmap writers that fill holes and overwrite blocks with a new generation, then
    /// check every block holds the newest acknowledged generation.
    DefragMmap {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        params: crate::scenarios::defrag_mmap::DefragMmapArgs,
    },
    /// Race EXT4_IOC_MIGRATE (indirect → extent) against mmap writers that fill holes in the
    /// same files, then check every acknowledged block on the host (content, e2fsck, postconditions, kernel log).
    MigrateMmap {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        params: crate::scenarios::migrate_mmap::MigrateMmapArgs,
    },
}

/// Options every scenario takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Kernel: a Debian series (6.1, 6.12) fetched with apt-get download, or a path to a bzImage.
    #[arg(long, default_value = e4race_guest_image::DEFAULT_SERIES, env = "E4RACE_KERNEL")]
    pub kernel: String,
    /// With --kernel PATH: the modules folder (`make modules_install INSTALL_MOD_PATH=DIR`, or lib/modules/RELEASE).
    #[arg(long)]
    pub modules_dir: Option<PathBuf>,
    /// Accelerator; by default KVM only if a test boot works (cached), else TCG.
    #[arg(long, value_enum, env = "E4RACE_ACCEL")]
    pub accel: Option<Accel>,
    /// Who serves the test disk.
    #[arg(long, value_enum, default_value = "blkrec")]
    pub disk_backend: DiskBackend,
    /// Record the written data in writes.log too, not only hashes (enables replay to any point).
    #[arg(long)]
    pub log_data: bool,
    /// Cap writes.log at this many bytes. Once it is reached, blkrec fails every further guest
    /// write and the run ends in INFRA-ERROR saying so (a guard for small CI disks; --log-data
    /// logs every byte the guest writes).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(4096..))]
    pub max_log_bytes: Option<u64>,
    /// Load ext4 rebuilt with this mutant (a folder name under vm-images/mutants).
    #[arg(long, conflicts_with = "ext4_patch")]
    pub mutant: Option<String>,
    /// Where mutant folders are [default: vm-images/mutants beside or above the executable or
    /// the current directory].
    #[arg(long, value_name = "DIR", env = "E4RACE_MUTANTS_DIR")]
    pub mutants_dir: Option<PathBuf>,
    /// Load ext4 rebuilt with this patch against fs/ext4 applied (`patch -p1` from the source top).
    #[arg(long)]
    pub ext4_patch: Option<PathBuf>,
    /// Where run directories go.
    #[arg(long, default_value = "runs", env = "E4RACE_RUNS_DIR")]
    pub runs_dir: PathBuf,
    /// Kernel, image and module cache [default: ~/.cache/e4race, or $E4RACE_CACHE].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Keep disk.img even when the run passes.
    #[arg(long, conflicts_with = "discard_image")]
    pub keep_image: bool,
    /// Delete disk.img even when something was found (batch runs; the report keeps the evidence).
    #[arg(long)]
    pub discard_image: bool,
    /// Seconds the guest may take to boot and report ready.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..))]
    pub boot_timeout: u64,
    /// Seconds any single guest command may take (the whole race counts as one).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Guest vCPUs; blkrec serves one queue per vCPU.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub cpus: u32,
    /// Guest memory in MiB (the initramfs and the raced files' page cache live in it).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(128..=65536))]
    pub memory_mib: u32,
    /// Print the JSON report on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

impl TryFrom<CommonArgs> for RunConfig {
    type Error = ConfigError;

    /// Checks what can be checked before anything runs: the kernel path, the patch file,
    /// the mutant and its patch for the series. Ranges are clap's.
    fn try_from(a: CommonArgs) -> Result<Self, ConfigError> {
        let kernel = KernelSpec::parse(&a.kernel, a.modules_dir)?;
        let ext4 = match (a.mutant, a.ext4_patch) {
            (None, None) => Ext4Module::Stock,
            (mutant, patch) => {
                let KernelSpec::Debian { series } = &kernel else {
                    return Err(ConfigError::RebuildNeedsDebianKernel);
                };
                match (mutant, patch) {
                    (Some(name), _) => config::resolve_mutant(&name, a.mutants_dir, series)?,
                    (None, Some(p)) if p.is_file() => Ext4Module::Patch(p),
                    (None, Some(p)) => return Err(ConfigError::NoSuchPatch(p)),
                    (None, None) => Ext4Module::Stock,
                }
            }
        };
        Ok(RunConfig {
            kernel,
            accel: a.accel,
            disk_backend: a.disk_backend,
            log_data: a.log_data,
            max_log_bytes: a.max_log_bytes,
            ext4,
            runs_dir: a.runs_dir,
            cache_dir_arg: a.cache_dir,
            image: if a.keep_image {
                ImagePolicy::Keep
            } else if a.discard_image {
                ImagePolicy::Discard
            } else {
                ImagePolicy::KeepOnFinding
            },
            boot_timeout: Duration::from_secs(a.boot_timeout),
            command_timeout: Duration::from_secs(a.timeout),
            cpus: a.cpus,
            memory_mib: a.memory_mib,
            output: if a.json {
                Output::Json
            } else {
                Output::Summary
            },
            quiet: a.quiet,
        })
    }
}
