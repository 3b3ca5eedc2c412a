//! The command line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use e4race_guest_image::KernelSpec;

use crate::config::{
    self, ConfigError, CrashConfig, Ext4Module, ImagePolicy, KillAt, KnownIssuesSource, Output,
    RunConfig,
};
use crate::scenarios::{self, Scenario, ScenarioPlan};

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

// Parsed once per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run a scenario and print its verdict.
    #[command(after_help = EXIT_CODES_HELP)]
    Run {
        /// Repeat the run N times (each with its own run directory and, unless --seed is
        /// given, its own seed); the result is the worst: BUG-FOUND if any run found
        /// something. With --bisect: "not seen in N runs" is good.
        #[arg(long, global = true, default_value_t = 1, value_name = "N",
              value_parser = clap::value_parser!(u32).range(1..))]
        runs: u32,
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
        /// Size in bytes of the zeroed start image (default: the run's disk.img size, or the
        /// disk size in its plan.json).
        #[arg(long)]
        size: Option<u64>,
        /// Leave out these records (seqs, comma separated): a reordered crash state, whose
        /// unflushed writes never reached the disk (`e4race crash` prints the command).
        #[arg(long, value_name = "SEQ,...", value_delimiter = ',')]
        drop: Vec<u64>,
    },
    /// Check the crash states of a run's write log (recorded with --log-data): the disk just
    /// after each completed FLUSH and, with --reorder N, N seeded subsets of each epoch's
    /// unflushed writes lost. Each state gets journal replay (e2fsck -E journal_only, as a
    /// mount does), e2fsck -fn, and the durability check (every block of a round the guest
    /// had fsynced holds its tag; blocks in flight hold old or new data, never garbage).
    /// Writes crash.json; exits 0 when every state is consistent, 1 when one is not.
    Crash {
        /// The run directory.
        run_dir: PathBuf,
        /// Reordered states per flush epoch (0: only the states after each flush).
        #[arg(long, default_value_t = 0)]
        reorder: u32,
        /// Seed of the reordered subsets (the same seed gives the same states).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// At most this many states: past it, only every k-th flush is checked, spread over
        /// the whole log (`run --crash-states` uses 2000).
        #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..))]
        max_states: u64,
        /// Print crash.json instead of the summary.
        #[arg(long)]
        json: bool,
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
    /// and print the table (runs, detected, false positives, errors, the finding classes that
    /// caught each mutant, median times). It runs as a suite: --jobs, --shard and `e4race merge`
    /// work, and RUNS_DIR gets validate.md, validate.json, suite.json, junit.xml, index.html.
    /// Exit 0 when every mutant run was caught and no stock run was blamed.
    Validate(crate::validate::ValidateArgs),
    /// Run a suite: a TOML list of scenarios x kernels x seeds (mutants as controls) as one
    /// job, with one summary, suite.json, junit.xml and index.html; --shard splits it over CI
    /// runners, --jobs runs guests in parallel.
    #[command(
        after_help = "Exit codes: 0 every run as expected, 1 a finding (or an undetected control), 3 KERNEL-ERROR, 4 INFRA-ERROR, 2 bad usage."
    )]
    Suite(crate::suite_cmd::SuiteArgs),
    /// Merge the output folders of a suite's shards (`e4race suite --shard K/N --out DIR`) into
    /// one summary, suite.json, junit.xml and index.html, as one unsharded run would give.
    Merge {
        /// The shards' output folders.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where the merged files go.
        #[arg(long)]
        out: PathBuf,
    },
    /// Show the QEMU version, the accelerator that would be chosen and why, and the cached kernels.
    Doctor {
        #[arg(long, default_value = e4race_guest_image::DEFAULT_SERIES)]
        kernel: String,
        /// Run the KVM probe boot now even if a cached verdict exists.
        #[arg(long)]
        reprobe: bool,
    },
}

/// The scenario registry: `e4race run NAME` for each scenario, with the options every run
/// takes (`CommonArgs`) and the scenario's own (its `Args` struct, which implements
/// [`Scenario`]). The list of scenarios is `scenario_list!` in scenarios/mod.rs: adding one is
/// a line there and its own file under scenarios/.
macro_rules! scenario_registry {
    ($( $(#[$doc:meta])* $variant:ident => $args:ty, )*) => {
        #[derive(Debug, Clone, Subcommand)]
        pub enum ScenarioCmd {
            $(
                $(#[$doc])*
                $variant {
                    #[command(flatten)]
                    common: CommonArgs,
                    #[command(flatten)]
                    params: $args,
                },
            )*
        }

        impl ScenarioCmd {
            /// The options every scenario takes.
            pub fn common(&self) -> &CommonArgs {
                match self {
                    $( ScenarioCmd::$variant { common, .. } => common, )*
                }
            }

            /// Each scenario's [`Scenario::off_default_argv`], by variant name.
            #[cfg(test)]
            pub const OFF_DEFAULT_ARGVS: &[(&str, fn() -> Vec<String>)] = &[
                $( (stringify!($variant), <$args as Scenario>::off_default_argv), )*
            ];

            /// The common options, and the scenario with its own.
            pub fn into_parts(self) -> (CommonArgs, Arc<dyn Scenario>) {
                match self {
                    $( ScenarioCmd::$variant { common, params } => (common, Arc::new(params)), )*
                }
            }
        }
    };
}

// The list itself is in scenarios/mod.rs, beside the scenarios' modules.
scenarios::scenario_list!(scenario_registry);

/// Options every scenario takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Kernel: a Debian series (6.1, 6.12, 7.2, 7.3; `e4race doctor` lists them) fetched with apt-get download, or a path to a bzImage.
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
    /// After the run, check the crash states of its write log (implies --log-data; blkrec
    /// backend): the disk just after every FLUSH, with the journal replayed as a mount does,
    /// e2fsck -fn, and every block of a round the guest had fsynced still there. A bad state
    /// is a crash-consistency finding; crash.json has them all (see `e4race crash --help`).
    #[arg(long)]
    pub crash_states: bool,
    /// With --crash-states: also N seeded subsets per flush epoch of the writes not yet
    /// flushed lost (a volatile write cache may drop any of them).
    #[arg(long, default_value_t = 0, requires = "crash_states")]
    pub reorder: u32,
    /// Kill QEMU (SIGKILL: a real power cut) at `mark:NAME` (when the host logs that mark:
    /// mounted, workload-start, round-N-done, workload-done), `after:SECONDS` after the file
    /// system is made and mounted, or `random` (0.2-6 s after; the reproduce command fixes the
    /// point drawn). The disk as the device left it is then checked as a crash state: journal
    /// replay, e2fsck -fn, and every block of a round whose done mark was logged still there.
    #[arg(long, value_name = "mark:NAME|after:SECONDS|random", value_parser = KillAt::parse)]
    pub kill_at: Option<KillAt>,
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
    /// Known issues: findings matching an entry become KNOWN (listed and counted) and, when
    /// nothing new was found, the run passes with exit 0. Default: the list built into e4race
    /// (crates/known-issues/default.toml: the EXT4_IOC_MIGRATE return-value bug).
    #[arg(long, value_name = "FILE", conflicts_with = "no_known_issues")]
    pub known_issues: Option<PathBuf>,
    /// No known issues: every finding counts.
    #[arg(long)]
    pub no_known_issues: bool,
    /// Known issues still make the run BUG-FOUND (exit 1); they stay marked as known.
    #[arg(long)]
    pub strict: bool,
    /// Exit codes for `git bisect run`: 0 PASS, 1 BUG-FOUND (or a kernel error once the agent
    /// was up), 125 (skip) for INFRA-ERROR, a kernel that dies before the agent is up, or a
    /// missing kernel file; 128 (abort the bisect) for other usage errors.
    #[arg(long)]
    pub bisect: bool,
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
        let ext4 = match (a.mutant, a.ext4_patch, &kernel) {
            (None, None, _) => Ext4Module::Stock,
            (_, _, KernelSpec::Custom { .. }) => return Err(ConfigError::RebuildNeedsDebianKernel),
            // clap refuses --mutant with --ext4-patch.
            (Some(name), _, KernelSpec::Debian { series }) => {
                // A mutant's patch is per series; `latest` is looked up to find its series.
                let series = if series == "latest" {
                    let cache = a
                        .cache_dir
                        .clone()
                        .unwrap_or_else(e4race_guest_image::default_cache_dir);
                    let k = e4race_guest_image::kernel::resolve_debian_package(
                        series,
                        &cache,
                        &|_: &str| {},
                    )?;
                    k.series
                } else {
                    series.clone()
                };
                config::resolve_mutant(&name, a.mutants_dir, &series)?
            }
            (None, Some(p), _) if p.is_file() => Ext4Module::Patch(p),
            (None, Some(p), _) => return Err(ConfigError::NoSuchPatch(p)),
        };
        let known_issues = if a.no_known_issues {
            KnownIssuesSource::None
        } else if let Some(p) = a.known_issues {
            KnownIssuesSource::File(p)
        } else {
            KnownIssuesSource::Builtin
        };
        let known = known_issues.load()?;
        if a.crash_states && a.disk_backend != DiskBackend::Blkrec {
            return Err(ConfigError::CrashStatesNeedBlkrec);
        }
        if a.kill_at.is_some() && a.disk_backend != DiskBackend::Blkrec {
            return Err(ConfigError::KillAtNeedsBlkrec);
        }
        Ok(RunConfig {
            known_issues,
            known,
            strict: a.strict,
            bisect: a.bisect,
            kernel,
            accel: a.accel,
            disk_backend: a.disk_backend,
            log_data: a.log_data,
            crash: a.crash_states.then_some(CrashConfig { reorder: a.reorder }),
            kill_at: a.kill_at,
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

/// Turns the parsed command line into a validated config and a plan.
pub fn plan(cmd: ScenarioCmd) -> Result<(RunConfig, ScenarioPlan), ConfigError> {
    let (common, scenario) = cmd.into_parts();
    let config = RunConfig::try_from(common)?;
    let plan = scenarios::plan(&config, scenario);
    Ok((config, plan))
}

/// `e4race ARGS...` (without the program name) as a run's config and plan: what validate
/// uses to build each of its runs from the same words a user would type.
pub fn parse_run(args: &[String]) -> Result<(RunConfig, ScenarioPlan), String> {
    let cli =
        Cli::try_parse_from(std::iter::once("e4race".to_string()).chain(args.iter().cloned()))
            .map_err(|e| e.to_string())?;
    let Cmd::Run { scenario, .. } = cli.command else {
        return Err(format!("not a run command: {}", args.join(" ")));
    };
    plan(scenario).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::mutants_root;
    use clap::CommandFactory;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Parses `e4race ARGS...` into the scenario's config and reproduce command.
    fn parse(args: &[String]) -> Result<(RunConfig, String), String> {
        parse_run(args).map(|(cfg, plan)| (cfg, plan.reproduce))
    }

    /// The reproduce command's words, as a shell would split them, without `e4race`.
    fn words(reproduce: &str) -> Vec<String> {
        let mut w = shlex::split(reproduce).expect("the reproduce command is valid shell");
        assert_eq!(w.remove(0), "e4race");
        w
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// Every long option of `e4race run SCENARIO`, from clap itself.
    fn long_options(scenario: &str) -> BTreeSet<String> {
        let cmd = Cli::command();
        let run = cmd.find_subcommand("run").unwrap();
        let sc = run.find_subcommand(scenario).unwrap();
        sc.get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| *l != "help")
            .map(|l| format!("--{l}"))
            .collect()
    }

    /// Argument lists that together set every option of `scenario` to a value other than
    /// its default (two lists where options conflict).
    fn non_default_argvs(scenario: &str, bzimage: &Path) -> Vec<Vec<String>> {
        let k = bzimage.display().to_string();
        let mods = bzimage.parent().unwrap().display().to_string();
        let common_a = s(&[
            "--kernel",
            &k,
            "--modules-dir",
            &mods,
            "--accel",
            "tcg",
            "--disk-backend",
            "qemu",
            "--log-data",
            "--max-log-bytes",
            "1048576",
            "--runs-dir",
            "/tmp/r",
            "--cache-dir",
            "/tmp/c",
            "--keep-image",
            "--boot-timeout",
            "91",
            "--timeout",
            "301",
            "--cpus",
            "4",
            "--memory-mib",
            "1024",
            "--json",
            "--quiet",
            "--strict",
            "--bisect",
        ]);
        let mutants = mutants_root(None).display().to_string();
        let common_b = s(&[
            "--kernel",
            "6.12",
            "--mutant",
            "migrate-flag-clear",
            "--mutants-dir",
            &mutants,
            "--discard-image",
            "--accel",
            "kvm",
            "--no-known-issues",
        ]);
        let known = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crates/known-issues/default.toml"
        );
        let common_c = s(&[
            "--kernel",
            "6.1",
            "--ext4-patch",
            &k,
            "--known-issues",
            known,
            "--crash-states",
            "--reorder",
            "3",
            "--kill-at",
            "mark:round-1-done",
        ]);
        // The scenario's own options, off their defaults (`Scenario::off_default_argv`).
        let own = ScenarioCmd::OFF_DEFAULT_ARGVS
            .iter()
            .find(|(variant, _)| variant.to_lowercase() == scenario.replace('-', ""))
            .map(|(_, argv)| argv())
            .unwrap_or_else(|| panic!("scenario {scenario} is not in the registry"));
        [common_a, common_b, common_c]
            .into_iter()
            .map(|c| {
                let mut v = s(&["run", scenario]);
                v.extend(c);
                v.extend(own.iter().cloned());
                v
            })
            .collect()
    }

    #[test]
    fn reproduce_round_trips_every_option_of_every_scenario() {
        let dir = tempfile::tempdir().unwrap();
        let bzimage = dir.path().join("bzImage");
        std::fs::write(&bzimage, b"not a kernel").unwrap();
        let cmd = Cli::command();
        let scenarios: Vec<String> = cmd
            .find_subcommand("run")
            .unwrap()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        assert!(scenarios.len() >= 4, "{scenarios:?}");
        for scenario in &scenarios {
            let mut seen = BTreeSet::new();
            for argv in non_default_argvs(scenario, &bzimage) {
                seen.extend(
                    argv.iter()
                        .filter(|a| a.starts_with("--"))
                        .map(|a| a.split('=').next().unwrap().to_string()),
                );
                let (cfg, reproduce) = parse(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
                let again = words(&reproduce);
                let (cfg2, reproduce2) =
                    parse(&again).unwrap_or_else(|e| panic!("reproduce {reproduce}: {e}"));
                assert_eq!(cfg, cfg2, "reproduce: {reproduce}");
                assert_eq!(reproduce, reproduce2);
                // Every option given shows up in the reproduce command.
                for opt in argv.iter().filter(|a| a.starts_with("--")) {
                    let name = opt.split('=').next().unwrap();
                    assert!(
                        again.iter().any(|w| w.split('=').next() == Some(name)),
                        "{name} is missing from the reproduce command {reproduce}"
                    );
                }
            }
            // The samples cover every option the scenario has: a new option must be added
            // to them (and so to the reproduce command).
            let missing: Vec<_> = long_options(scenario).difference(&seen).cloned().collect();
            assert!(missing.is_empty(), "{scenario}: no sample for {missing:?}");
        }
    }

    #[test]
    fn defaults_round_trip_too() {
        let (cfg, reproduce) = parse(&s(&["run", "migrate-mmap", "--seed", "1"])).unwrap();
        assert_eq!(cfg.cpus, 2);
        assert_eq!(cfg.memory_mib, 512);
        assert_eq!(cfg.image, ImagePolicy::KeepOnFinding);
        assert!(reproduce.contains("--cpus 2") && reproduce.contains("--memory-mib 512"));
        assert_eq!(parse(&words(&reproduce)).unwrap().0, cfg);
    }

    fn usage_error(args: &[&str]) -> String {
        match parse(&s(args)) {
            Ok(_) => panic!("{args:?} was accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn bad_values_are_refused_not_clamped() {
        for bad in [
            &["run", "migrate-mmap", "--rounds", "0"][..],
            &["run", "migrate-mmap", "--files", "0"],
            &["run", "migrate-mmap", "--size-mib", "0"],
            &["run", "defrag-mmap", "--move-blocks", "0"],
            &["run", "smoke", "--cpus", "0"],
            &["run", "smoke", "--memory-mib", "16"],
            &["run", "smoke", "--boot-timeout", "0"],
            &["run", "smoke", "--timeout", "0"],
        ] {
            let e = usage_error(bad);
            assert!(e.contains("invalid value"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn unknown_mutant_missing_patch_and_missing_kernel_are_usage_errors() {
        let e = usage_error(&["run", "migrate-mmap", "--mutant", "no-such-mutant"]);
        assert!(
            e.contains("no-such-mutant") && e.contains("migrate-flag-clear"),
            "{e}"
        );
        let e = usage_error(&["run", "smoke", "--ext4-patch", "/nonexistent/fix.patch"]);
        assert!(e.contains("no such file"), "{e}");
        let e = usage_error(&["run", "smoke", "--kernel", "/nonexistent/bzImage"]);
        assert!(e.contains("/nonexistent/bzImage"), "{e}");
        let e = usage_error(&[
            "run",
            "smoke",
            "--mutant",
            "migrate-flag-clear",
            "--mutants-dir",
            "/nonexistent/mutants",
        ]);
        assert!(e.contains("--mutants-dir"), "{e}");
    }

    #[test]
    fn a_mutant_on_a_custom_kernel_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let bzimage = dir.path().join("bzImage");
        std::fs::write(&bzimage, b"x").unwrap();
        let k = bzimage.display().to_string();
        let e = usage_error(&[
            "run",
            "smoke",
            "--kernel",
            &k,
            "--mutant",
            "migrate-flag-clear",
        ]);
        assert!(e.contains("Debian kernel"), "{e}");
    }
}
