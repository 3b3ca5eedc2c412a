//! `RunConfig`: the options every scenario takes, validated. cli.rs turns the clap arguments
//! into one (`TryFrom<CommonArgs>`); the run, the mutant builder and validate only see this
//! type, and the reproduce command is generated from it, so it carries every option.

use std::path::{Path, PathBuf};
use std::time::Duration;

use e4race_guest_image::KernelSpec;

use crate::disk::DiskBackend;
use crate::vm::Accel;

/// Which ext4 the guest loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ext4Module {
    /// The kernel's own (built in or its module).
    Stock,
    /// ext4 rebuilt with a mutant's patch for the booted series.
    Mutant {
        name: String,
        /// `--mutants-dir` as given (None: found by [`mutants_root`]); kept for the reproduce command.
        mutants_dir: Option<PathBuf>,
        /// The mutant's patch for the booted kernel series.
        patch: PathBuf,
    },
    /// ext4 rebuilt with the user's patch (`--ext4-patch`).
    Patch(PathBuf),
}

impl Ext4Module {
    /// The report's and the run directory's label: `NAME` or `patch:PATH`.
    pub fn label(&self) -> Option<String> {
        match self {
            Ext4Module::Stock => None,
            Ext4Module::Mutant { name, .. } => Some(name.clone()),
            Ext4Module::Patch(p) => Some(format!("patch:{}", p.display())),
        }
    }

    /// The patch to build ext4 with, if any.
    pub fn patch(&self) -> Option<&Path> {
        match self {
            Ext4Module::Stock => None,
            Ext4Module::Mutant { patch, .. } | Ext4Module::Patch(patch) => Some(patch),
        }
    }
}

/// What happens to disk.img when the run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagePolicy {
    /// Kept when something was found (it is the main evidence), removed on PASS.
    KeepOnFinding,
    /// Always kept (`--keep-image`).
    Keep,
    /// Always removed (`--discard-image`; the report keeps the evidence).
    Discard,
}

impl ImagePolicy {
    pub fn keeps_image(self, passed: bool) -> bool {
        match self {
            ImagePolicy::KeepOnFinding => !passed,
            ImagePolicy::Keep => true,
            ImagePolicy::Discard => false,
        }
    }
}

/// Where the known-issues list comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KnownIssuesSource {
    /// The list built into e4race (crates/known-issues/default.toml).
    Builtin,
    /// `--known-issues FILE`.
    File(PathBuf),
    /// `--no-known-issues`.
    None,
}

impl KnownIssuesSource {
    /// Reads the list (a bad file is a usage error, told before anything runs).
    pub fn load(&self) -> Result<known_issues::KnownIssues, ConfigError> {
        Ok(match self {
            KnownIssuesSource::Builtin => known_issues::KnownIssues::builtin()?,
            KnownIssuesSource::File(p) => known_issues::KnownIssues::load(p)?,
            KnownIssuesSource::None => known_issues::KnownIssues::default(),
        })
    }
}

/// Where the verdict goes on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Summary,
    Json,
}

/// `--crash-states [--reorder N]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashConfig {
    pub reorder: u32,
}

/// `--kill-at`: when the run SIGKILLs QEMU, a real power cut of the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillAt {
    /// When the host logs this mark (`mounted`, `workload-start`, `round-N-done`, ...).
    Mark(String),
    /// This many milliseconds after the `mounted` mark.
    AfterMs(u64),
}

impl KillAt {
    /// The earliest and latest kill point `random` draws (after the `mounted` mark): a
    /// default migrate-mmap race lasts about 8 s under TCG here.
    pub const RANDOM_MS: std::ops::RangeInclusive<u64> = 200..=6_000;

    /// `mark:NAME`, `after:SECONDS`, or `random` (a point drawn now from RANDOM_MS; the
    /// reproduce command then gives it as `after:SECONDS`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?}: give mark:NAME (e.g. mark:round-1-done), after:SECONDS (after the mkfs + mount) or random")
        };
        match s.split_once(':') {
            None if s == "random" => {
                let (lo, hi) = (*Self::RANDOM_MS.start(), *Self::RANDOM_MS.end());
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                let r = e4race_protocol::splitmix(nanos ^ u64::from(std::process::id()));
                Ok(KillAt::AfterMs(lo + r % (hi - lo + 1)))
            }
            Some(("mark", name)) if !name.is_empty() => Ok(KillAt::Mark(name.into())),
            Some(("after", secs)) => match secs.trim_end_matches('s').parse::<f64>() {
                Ok(v) if (0.0..86_400.0).contains(&v) => {
                    Ok(KillAt::AfterMs((v * 1000.0).round() as u64))
                }
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for KillAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KillAt::Mark(m) => write!(f, "mark:{m}"),
            KillAt::AfterMs(ms) => write!(f, "after:{}.{:03}", ms / 1000, ms % 1000),
        }
    }
}

/// A run's validated options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunConfig {
    pub kernel: KernelSpec,
    pub accel: Option<Accel>,
    pub disk_backend: DiskBackend,
    pub log_data: bool,
    /// `--crash-states`.
    pub crash: Option<CrashConfig>,
    /// `--kill-at`.
    pub kill_at: Option<KillAt>,
    pub max_log_bytes: Option<u64>,
    pub ext4: Ext4Module,
    pub runs_dir: PathBuf,
    /// `--cache-dir` as given; [`RunConfig::cache_dir`] resolves the default.
    pub cache_dir_arg: Option<PathBuf>,
    pub image: ImagePolicy,
    pub boot_timeout: Duration,
    pub command_timeout: Duration,
    pub cpus: u32,
    pub memory_mib: u32,
    pub output: Output,
    pub quiet: bool,
    pub known_issues: KnownIssuesSource,
    /// The list `known_issues` names, read.
    pub known: known_issues::KnownIssues,
    pub strict: bool,
    pub bisect: bool,
}

/// Why the options do not make a run. Every one is a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Kernel(#[from] e4race_guest_image::Error),
    #[error(
        "--mutant and --ext4-patch rebuild ext4 from Debian's linux-source package, so they need \
         a Debian kernel (--kernel 6.1 or 6.12); for your own kernel, apply the patch to your tree"
    )]
    RebuildNeedsDebianKernel,
    #[error(transparent)]
    KnownIssues(#[from] known_issues::KnownIssuesError),
    #[error("--ext4-patch {}: no such file", .0.display())]
    NoSuchPatch(PathBuf),
    #[error(
        "--crash-states needs the write log of --disk-backend blkrec (drop --disk-backend qemu)"
    )]
    CrashStatesNeedBlkrec,
    #[error("--kill-at needs the write log of --disk-backend blkrec (drop --disk-backend qemu)")]
    KillAtNeedsBlkrec,
    #[error("--mutant {name}: {source}{hint}")]
    Mutant {
        name: String,
        #[source]
        source: Box<mutant::LoadError>,
        hint: String,
    },
}

impl RunConfig {
    /// The kernel, image and module cache.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir_arg
            .clone()
            .unwrap_or_else(e4race_guest_image::default_cache_dir)
    }

    /// A Debian series that neither the host's apt nor e4race's own suites serve
    /// (`--kernel 9.9`) is a usage error, told before anything runs. Anything else apt says
    /// (no apt, no network) is left to the run, which reports it as INFRA-ERROR with its
    /// artifacts.
    pub fn check_kernel_exists(&self) -> Result<(), ConfigError> {
        if let KernelSpec::Debian { series } = &self.kernel {
            let quiet = |_: &str| {};
            if let Err(e @ e4race_guest_image::Error::UnknownKernel { .. }) =
                e4race_guest_image::kernel::resolve_debian_package(
                    series,
                    &self.cache_dir(),
                    &quiet,
                )
            {
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// What `--kernel` said: a series, or the bzImage path.
    pub fn kernel_arg(&self) -> String {
        self.kernel.label()
    }

    /// Every option, as it would be typed: parsing these back gives this config again
    /// (config::tests check that for every option).
    pub fn to_argv(&self) -> Vec<String> {
        let mut v = vec!["--kernel".to_string(), self.kernel_arg()];
        if let KernelSpec::Custom {
            modules_dir: Some(m),
            ..
        } = &self.kernel
        {
            v.extend(["--modules-dir".into(), m.display().to_string()]);
        }
        if let Some(a) = self.accel {
            v.extend(["--accel".into(), a.as_str().into()]);
        }
        v.extend(["--disk-backend".into(), self.disk_backend.as_str().into()]);
        if self.log_data {
            v.push("--log-data".into());
        }
        if let Some(c) = self.crash {
            v.push("--crash-states".into());
            if c.reorder > 0 {
                v.extend(["--reorder".into(), c.reorder.to_string()]);
            }
        }
        if let Some(k) = &self.kill_at {
            v.extend(["--kill-at".into(), k.to_string()]);
        }
        if let Some(b) = self.max_log_bytes {
            v.extend(["--max-log-bytes".into(), b.to_string()]);
        }
        match &self.ext4 {
            Ext4Module::Stock => {}
            Ext4Module::Mutant {
                name, mutants_dir, ..
            } => {
                v.extend(["--mutant".into(), name.clone()]);
                if let Some(d) = mutants_dir {
                    v.extend(["--mutants-dir".into(), d.display().to_string()]);
                }
            }
            Ext4Module::Patch(p) => v.extend(["--ext4-patch".into(), p.display().to_string()]),
        }
        v.extend(["--runs-dir".into(), self.runs_dir.display().to_string()]);
        if let Some(c) = &self.cache_dir_arg {
            v.extend(["--cache-dir".into(), c.display().to_string()]);
        }
        match self.image {
            ImagePolicy::KeepOnFinding => {}
            ImagePolicy::Keep => v.push("--keep-image".into()),
            ImagePolicy::Discard => v.push("--discard-image".into()),
        }
        v.extend([
            "--boot-timeout".into(),
            self.boot_timeout.as_secs().to_string(),
            "--timeout".into(),
            self.command_timeout.as_secs().to_string(),
            "--cpus".into(),
            self.cpus.to_string(),
            "--memory-mib".into(),
            self.memory_mib.to_string(),
        ]);
        if self.output == Output::Json {
            v.push("--json".into());
        }
        if self.quiet {
            v.push("--quiet".into());
        }
        match &self.known_issues {
            KnownIssuesSource::Builtin => {}
            KnownIssuesSource::File(p) => {
                v.extend(["--known-issues".into(), p.display().to_string()])
            }
            KnownIssuesSource::None => v.push("--no-known-issues".into()),
        }
        if self.strict {
            v.push("--strict".into());
        }
        if self.bisect {
            v.push("--bisect".into());
        }
        v
    }
}

/// Where mutant folders live, in this order: `--mutants-dir`, `$E4RACE_MUTANTS_DIR`,
/// `vm-images/mutants` beside the executable or above it (a checkout's target/release/e4race
/// finds its own), above the current directory, and last the source tree the binary was built
/// from. None of them existing is reported when a mutant is asked for.
pub fn mutants_root(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("E4RACE_MUTANTS_DIR") {
        return PathBuf::from(p);
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let cwd = std::env::current_dir().ok();
    for start in exe_dir.iter().chain(cwd.iter()) {
        for dir in start.ancestors() {
            let p = dir.join("vm-images/mutants");
            if p.is_dir() {
                return p;
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm-images/mutants")
}

/// Resolves `--mutant NAME` to its patch for `series`.
pub fn resolve_mutant(
    name: &str,
    mutants_dir: Option<PathBuf>,
    series: &str,
) -> Result<Ext4Module, ConfigError> {
    let root = mutants_root(mutants_dir.as_deref());
    let err = |source| ConfigError::Mutant {
        name: name.to_string(),
        source: Box::new(source),
        hint: if root.is_dir() {
            String::new()
        } else {
            format!(
                ". {} does not exist: pass --mutants-dir (or set E4RACE_MUTANTS_DIR) to a checkout's vm-images/mutants",
                root.display()
            )
        },
    };
    let m = mutant::Mutant::find(&root, name).map_err(err)?;
    let patch = m.patch_for(series).map_err(err)?.to_path_buf();
    // `validate` runs the mutant with the knobs its mutant.toml names; `run` takes the
    // command line as given, so say what reaches the mechanism.
    if !m.args.is_empty() {
        eprintln!(
            "note: mutant {name} is validated as `{} {}` (its mutant.toml); `e4race validate` adds these knobs, `run` does not",
            m.scenario,
            m.args.join(" ")
        );
    }
    Ok(Ext4Module::Mutant {
        name: name.to_string(),
        mutants_dir,
        patch,
    })
}

#[cfg(test)]
mod tests {
    use super::KillAt;

    #[test]
    fn kill_points_parse_print_and_parse_back() {
        for s in ["mark:round-1-done", "after:3.000", "after:0.250"] {
            let k = KillAt::parse(s).unwrap();
            assert_eq!(k.to_string(), s);
            assert_eq!(KillAt::parse(&k.to_string()).unwrap(), k);
        }
        assert_eq!(KillAt::parse("after:2").unwrap(), KillAt::AfterMs(2000));
        assert_eq!(KillAt::parse("after:1.5s").unwrap(), KillAt::AfterMs(1500));
        // random is a fixed point within the range, given back as after:SECONDS.
        let KillAt::AfterMs(ms) = KillAt::parse("random").unwrap() else {
            panic!("random is a delay");
        };
        assert!(KillAt::RANDOM_MS.contains(&ms));
        for bad in [
            "",
            "mark:",
            "after:-1",
            "after:x",
            "after:nan",
            "soon",
            "seq:5",
        ] {
            let e = KillAt::parse(bad).unwrap_err();
            assert!(e.contains("mark:NAME"), "{bad}: {e}");
        }
    }
}
