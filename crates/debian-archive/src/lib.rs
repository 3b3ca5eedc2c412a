//! Debian's package archive, as e4race fetches kernels, sources and headers from it.
//!
//! Two apt configurations are asked, in order:
//! - **the host's apt**, for the suites the host already lists (on Debian 12: bookworm, with
//!   its 6.1 kernels and 6.12 from bookworm-updates/-security);
//! - **an apt state of e4race's own**, in `CACHE/apt/`, for the suites that carry present-day
//!   kernels: trixie-backports, sid and experimental ([`OWN_SUITES`]). Its sources.list, lists
//!   and package cache live in that folder, signed with Debian's archive keyring; `apt-get
//!   update` there needs no root and never changes the host's sources.
//!
//! Nothing is installed: packages are fetched with `apt-get download` and extracted by the
//! callers with `dpkg-deb -x`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// The suites of e4race's own apt state.
pub const OWN_SUITES: &[&str] = &["trixie-backports", "sid", "experimental"];
/// The keyring the own suites are verified with (package `debian-archive-keyring`).
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// The mirror of the own suites; `E4RACE_DEBIAN_MIRROR` overrides it.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Own lists older than this are refreshed before they are used.
pub const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Which apt configuration knows a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// The host's own apt sources.
    Host,
    /// e4race's apt state in the cache ([`OWN_SUITES`]).
    Own,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Host => f.write_str("host apt"),
            Source::Own => write!(f, "e4race apt ({})", OWN_SUITES.join(", ")),
        }
    }
}

/// One version of one package, and where apt found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub source: Source,
    /// Names in `Depends:`, the first alternative of each.
    pub depends: Vec<String>,
}

/// A plain amd64 Debian kernel image package (`linux-image-RELEASE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPackage {
    pub package: Package,
    /// `uname -r`, e.g. `6.1.0-56-amd64` or `7.3.4+deb13-amd64`.
    pub release: String,
    /// `MAJOR.MINOR`, e.g. `6.1` or `7.3`.
    pub series: String,
}

impl KernelPackage {
    /// Orders releases by their numbers: 6.1.0-9 < 6.1.0-56, 7.3-amd64 (an -rc) < 7.3.4+deb13.
    pub fn sort_key(&self) -> Vec<u64> {
        release_key(&self.release)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{tool}` is not available ({detail}); install the Debian package `{package}`")]
    ToolMissing {
        tool: String,
        package: String,
        detail: String,
    },
    #[error(
        "Debian's archive keyring {KEYRING} is missing; install it with \
         `apt-get install debian-archive-keyring`"
    )]
    KeyringMissing,
    #[error(
        "`apt-get update` of e4race's own apt state ({}) failed: {output}\nCheck network \
         access to {mirror} (set E4RACE_DEBIAN_MIRROR to use another mirror)",
        dir.display()
    )]
    Update {
        dir: PathBuf,
        mirror: String,
        output: String,
    },
    #[error(
        "apt knows no package {package} in {searched}. Run `apt-get update`, or check the \
         name with `apt-cache search {package}`"
    )]
    UnknownPackage { package: String, searched: String },
    #[error("no Debian kernel of series {asked}. Series that can be fetched: {available}")]
    UnknownSeries { asked: String, available: String },
    #[error(
        "`apt-get download {spec}` failed: {output}\nCheck network access to the Debian \
         mirrors"
    )]
    Download { spec: String, output: String },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    fn io(what: &str, path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The archive: the host's apt, then e4race's own apt state under `CACHE/apt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    own: PathBuf,
    mirror: String,
}

impl Archive {
    /// The archive whose own apt state lives in `cache_root/apt`.
    pub fn new(cache_root: &Path) -> Self {
        let mirror = std::env::var("E4RACE_DEBIAN_MIRROR")
            .ok()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_MIRROR.to_string());
        Archive {
            own: cache_root.join("apt"),
            mirror,
        }
    }

    /// The folder of the own apt state.
    pub fn own_dir(&self) -> &Path {
        &self.own
    }

    /// The `-o` options that point apt at the own state. `Dir::State::status` is empty so the
    /// host's installed packages and pins play no part in choosing a candidate.
    fn own_options(&self) -> Vec<OsString> {
        let o = &self.own;
        let opts = [
            format!("Dir::Etc::SourceList={}", o.join("sources.list").display()),
            format!(
                "Dir::Etc::SourceParts={}",
                o.join("sources.list.d").display()
            ),
            format!("Dir::Etc::Preferences={}", o.join("preferences").display()),
            format!(
                "Dir::Etc::PreferencesParts={}",
                o.join("preferences.d").display()
            ),
            format!("Dir::State={}", o.join("state").display()),
            format!("Dir::State::Lists={}", o.join("lists").display()),
            "Dir::State::status=/dev/null".into(),
            format!("Dir::Cache={}", o.join("cache").display()),
            // Locks are for the host's state; this one is guarded by `lock` below.
            "Debug::NoLocking=1".into(),
            "Acquire::Languages=none".into(),
            // Only package lists: no AppStream metadata (the host's appstream config asks for it).
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false".into(),
            "APT::Architectures=amd64".into(),
        ];
        opts.into_iter()
            .flat_map(|s| [OsString::from("-o"), OsString::from(s)])
            .collect()
    }

    fn apt(&self, prog: &str, source: Source) -> Command {
        let mut c = Command::new(prog);
        c.arg("-q");
        // APT's sandbox user (_apt) may not be able to write into the caller's folders.
        c.args(["-o", "APT::Sandbox::User=root"]);
        if source == Source::Own {
            c.args(self.own_options());
        }
        c.env("LC_ALL", "C");
        c
    }

    /// The own state's sources.list.
    pub fn own_sources_list(&self) -> String {
        OWN_SUITES
            .iter()
            .map(|s| format!("deb [signed-by={KEYRING}] {} {s} main\n", self.mirror))
            .collect()
    }

    fn stamp(&self) -> PathBuf {
        self.own.join("lists/.e4race-updated")
    }

    /// True when the own lists have been fetched at least once.
    pub fn own_lists_present(&self) -> bool {
        self.stamp().exists()
    }

    /// Fetches the own lists when they are missing or older than [`LISTS_MAX_AGE`] (about
    /// 17 MB, a few seconds). A failed refresh of lists that exist is a warning, not an error.
    pub fn refresh_own(&self, progress: &dyn Fn(&str)) -> Result<()> {
        let fresh = |p: &Path| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age < LISTS_MAX_AGE)
        };
        if fresh(&self.stamp()) {
            return Ok(());
        }
        if !Path::new(KEYRING).is_file() {
            return Err(Error::KeyringMissing);
        }
        for d in [
            "lists/partial",
            "cache/archives/partial",
            "state",
            "sources.list.d",
            "preferences.d",
        ] {
            let p = self.own.join(d);
            std::fs::create_dir_all(&p).map_err(|e| Error::io("creating", &p, e))?;
        }
        // One update at a time: parallel runs share the cache.
        let lock_path = self.own.join("lock");
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("opening", &lock_path, e))?;
        let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io("locking", &lock_path, e.into()))?;
        if fresh(&self.stamp()) {
            return Ok(()); // another process refreshed them while we waited
        }
        let list = self.own.join("sources.list");
        std::fs::write(&list, self.own_sources_list())
            .map_err(|e| Error::io("writing", &list, e))?;
        progress(&format!(
            "updating e4race's own apt lists for {} from {} (about 17 MB, once a day)",
            OWN_SUITES.join(", "),
            self.mirror
        ));
        let out = self
            .apt("apt-get", Source::Own)
            .arg("update")
            .output()
            .map_err(|e| tool_missing("apt-get", e))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // apt-get update exits 0 with "W:"/"E:" lines when some index failed.
        let failed = !out.status.success() || text.lines().any(|l| l.starts_with("E:"));
        if failed {
            let tail: Vec<&str> = text.lines().rev().take(6).collect();
            let output = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
            if self.own_lists_present() {
                progress(&format!(
                    "warning: refreshing the own apt lists failed; using the old ones: {output}"
                ));
                return Ok(());
            }
            return Err(Error::Update {
                dir: self.own.clone(),
                mirror: self.mirror.clone(),
                output,
            });
        }
        std::fs::write(self.stamp(), b"").map_err(|e| Error::io("writing", &self.stamp(), e))
    }

    /// Package names matching `regex` (apt-cache search --names-only) in one source.
    fn search(&self, source: Source, regex: &str) -> Result<Vec<String>> {
        let out = self
            .apt("apt-cache", source)
            .args(["search", "--names-only", regex])
            .output()
            .map_err(|e| tool_missing("apt-cache", e))?;
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(" - ").next())
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// `apt-cache show` of some names: the candidate of each, or `name=version`.
    fn show(&self, source: Source, specs: &[String]) -> Result<Vec<Package>> {
        if specs.is_empty() {
            return Ok(vec![]);
        }
        let out = self
            .apt("apt-cache", source)
            .args(["show", "--no-all-versions"])
            .args(specs)
            .output()
            .map_err(|e| tool_missing("apt-cache", e))?;
        Ok(parse_stanzas(&String::from_utf8_lossy(&out.stdout), source))
    }

    /// One package: `version` if given, else the candidate; the host's apt first.
    pub fn find(
        &self,
        name: &str,
        version: Option<&str>,
        progress: &dyn Fn(&str),
    ) -> Result<Package> {
        let spec = match version {
            Some(v) => format!("{name}={v}"),
            None => name.to_string(),
        };
        if let Some(p) = self.show(Source::Host, std::slice::from_ref(&spec))?.pop() {
            return Ok(p);
        }
        self.refresh_own(progress)?;
        if let Some(p) = self.show(Source::Own, std::slice::from_ref(&spec))?.pop() {
            return Ok(p);
        }
        Err(Error::UnknownPackage {
            package: spec,
            searched: format!("{} or {}", Source::Host, Source::Own),
        })
    }

    /// Every plain amd64 kernel image package in the given sources.
    pub fn kernels_in(&self, source: Source) -> Result<Vec<KernelPackage>> {
        let names: Vec<String> = self
            .search(source, r"^linux-image-[0-9]+\.[0-9]+.*-amd64$")?
            .into_iter()
            .filter(|n| kernel_release(n).is_some())
            .collect();
        Ok(self
            .show(source, &names)?
            .into_iter()
            .filter_map(|p| {
                let release = kernel_release(&p.name)?.to_string();
                let series = series_of(&release)?;
                Some(KernelPackage {
                    package: p,
                    release,
                    series,
                })
            })
            .collect())
    }

    /// Every kernel that can be fetched, from both sources, newest of each series first.
    pub fn kernels(&self, progress: &dyn Fn(&str)) -> Result<Vec<KernelPackage>> {
        let mut all = self.kernels_in(Source::Host)?;
        self.refresh_own(progress)?;
        all.extend(self.kernels_in(Source::Own)?);
        all.sort_by_key(|k| std::cmp::Reverse(k.sort_key()));
        Ok(all)
    }

    /// The newest kernel of each series (newest series first).
    pub fn newest_per_series(&self, progress: &dyn Fn(&str)) -> Result<Vec<KernelPackage>> {
        let mut out: Vec<KernelPackage> = Vec::new();
        for k in self.kernels(progress)? {
            if !out.iter().any(|o| o.series == k.series) {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// The kernel `--kernel SERIES` means: the newest build of that series, from the host's
    /// apt when it has the series, else from the own suites. `latest` is the newest kernel
    /// either of them has.
    pub fn resolve_kernel(&self, series: &str, progress: &dyn Fn(&str)) -> Result<KernelPackage> {
        let newest = |ks: Vec<KernelPackage>| {
            ks.into_iter()
                .filter(|k| series == "latest" || k.series == series)
                .max_by_key(|k| k.sort_key())
        };
        if series != "latest" {
            if let Some(k) = newest(self.kernels_in(Source::Host)?) {
                return Ok(k);
            }
        }
        let all = self.kernels(progress)?;
        if let Some(k) = newest(all.clone()) {
            return Ok(k);
        }
        let mut seen: Vec<String> = Vec::new();
        for k in &all {
            if !seen.contains(&k.series) {
                seen.push(k.series.clone());
            }
        }
        Err(Error::UnknownSeries {
            asked: series.into(),
            available: if seen.is_empty() {
                "none (apt lists no linux-image-*-amd64 package)".into()
            } else {
                format!("{}, or latest", seen.join(", "))
            },
        })
    }

    /// `apt-get download NAME=VERSION` into `dir`, reusing a .deb already there. The download
    /// goes to a private folder first: apt-get leaves partial files behind on failure.
    pub fn download(&self, pkg: &Package, dir: &Path, progress: &dyn Fn(&str)) -> Result<PathBuf> {
        let prefix = format!("{}_{}_", pkg.name, pkg.version.replace(':', "%3a"));
        let existing = |d: &Path| -> Option<PathBuf> {
            std::fs::read_dir(d)
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
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        progress(&format!(
            "downloading {} {} ({})",
            pkg.name, pkg.version, pkg.source
        ));
        let tmp = dir.join(format!(".partial-{}-{}", pkg.name, std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
        let spec = format!("{}={}", pkg.name, pkg.version);
        let out = self
            .apt("apt-get", pkg.source)
            .current_dir(&tmp)
            .arg("download")
            .arg(&spec)
            .output()
            .map_err(|e| tool_missing("apt-get", e));
        let result = match out {
            Err(e) => Err(e),
            Ok(out) => match existing(&tmp) {
                Some(p) if out.status.success() => {
                    let dest = dir.join(p.file_name().unwrap_or_default());
                    std::fs::rename(&p, &dest)
                        .map(|_| dest.clone())
                        .map_err(|e| Error::io("moving to", &dest, e))
                }
                _ => Err(Error::Download {
                    spec,
                    output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                }),
            },
        };
        let _ = std::fs::remove_dir_all(&tmp);
        result
    }
}

fn tool_missing(tool: &str, e: std::io::Error) -> Error {
    Error::ToolMissing {
        tool: tool.into(),
        package: "apt".into(),
        detail: e.to_string(),
    }
}

/// Parses `apt-cache show` output: Package, Version and Depends of each stanza.
fn parse_stanzas(text: &str, source: Source) -> Vec<Package> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
                .map(|v| v.trim().to_string())
        };
        let (Some(name), Some(version)) = (field("Package"), field("Version")) else {
            continue;
        };
        let depends = field("Depends")
            .unwrap_or_default()
            .split(',')
            .filter_map(|d| d.split('|').next())
            .filter_map(|d| d.split_whitespace().next())
            .map(str::to_string)
            .collect();
        out.push(Package {
            name,
            version,
            source,
            depends,
        });
    }
    out
}

/// The release of a plain amd64 kernel image package, `linux-image-RELEASE`: not the -rt,
/// -cloud, -dbg or -unsigned builds, nor the `linux-image-amd64` meta-package.
pub fn kernel_release(package: &str) -> Option<&str> {
    let release = package.strip_prefix("linux-image-")?;
    let flavour_ok = release.ends_with("-amd64")
        && release.starts_with(|c: char| c.is_ascii_digit())
        && !release.contains("-cloud")
        && !release.contains("-rt-")
        && !release.contains("-dbg")
        && !release.contains("-unsigned");
    flavour_ok.then_some(release)
}

/// `MAJOR.MINOR` of a release: `6.12.117+deb12-amd64` → `6.12`, `7.3-amd64` → `7.3`.
pub fn series_of(release: &str) -> Option<String> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().filter(|s| !s.is_empty())?;
    let minor = parts.next().filter(|s| !s.is_empty())?;
    Some(format!("{major}.{minor}"))
}

/// The numbers of a release, in order, for comparing releases (the flavour's "amd64" is not
/// a number of the release).
pub fn release_key(release: &str) -> Vec<u64> {
    release
        .strip_suffix("-amd64")
        .unwrap_or(release)
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// True for `MAJOR.MINOR` (e.g. `6.1`, `7.3`) and `latest`.
pub fn is_series_name(s: &str) -> bool {
    s == "latest" || {
        let mut it = s.split('.');
        let ok = |p: Option<&str>| {
            p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        ok(it.next()) && ok(it.next()) && it.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_packages_are_the_plain_amd64_flavour() {
        assert_eq!(
            kernel_release("linux-image-6.1.0-56-amd64"),
            Some("6.1.0-56-amd64")
        );
        assert_eq!(
            kernel_release("linux-image-7.3.4+deb13-amd64"),
            Some("7.3.4+deb13-amd64")
        );
        assert_eq!(kernel_release("linux-image-7.3-amd64"), Some("7.3-amd64"));
        for not in [
            "linux-image-amd64",
            "linux-image-7.3.4+deb13-cloud-amd64",
            "linux-image-7.3.4+deb13-rt-amd64",
            "linux-image-7.2.11+deb13-amd64-dbg",
            "linux-image-6.1.0-56-amd64-unsigned",
            "linux-image-6.1.0-56-arm64",
            "linux-headers-6.1.0-56-amd64",
        ] {
            assert_eq!(kernel_release(not), None, "{not}");
        }
    }

    #[test]
    fn series_and_order_of_releases() {
        assert_eq!(series_of("6.12.117+deb12-amd64").as_deref(), Some("6.12"));
        assert_eq!(series_of("6.1.0-56-amd64").as_deref(), Some("6.1"));
        assert_eq!(series_of("7.3-amd64").as_deref(), Some("7.3"));
        assert_eq!(series_of("x-amd64"), None);
        assert!(release_key("6.1.0-9-amd64") < release_key("6.1.0-56-amd64"));
        // An experimental -rc (7.3-amd64) is older than the 7.3.4 stable build.
        assert!(release_key("7.3-amd64") < release_key("7.3.4+deb13-amd64"));
        assert!(release_key("7.2.12+deb13-amd64") < release_key("7.2.13+deb14-amd64"));
        assert!(release_key("6.12.117+deb12-amd64") < release_key("7.0.4+deb13-amd64"));
        assert!(is_series_name("6.1") && is_series_name("7.3") && is_series_name("latest"));
        for not in ["6", "6.", ".1", "6.1.2", "6.x", "newest", ""] {
            assert!(!is_series_name(not), "{not}");
        }
    }

    #[test]
    fn stanzas_give_name_version_and_first_alternatives() {
        let text = "Package: linux-image-7.3.4+deb13-amd64\nVersion: 7.3.4-1~bpo13+1\n\
                    Depends: dracut | initramfs-tools (>= 0.120+deb8u2), linux-base-7.3.4+deb13-amd64 \
                    (= 7.3.4-1~bpo13+1), linux-binary-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1)\n\
                    Description: Linux 7.3.4\n\nPackage: linux-source-7.3\nVersion: 7.3.4-1~bpo13+1\n\n";
        let ps = parse_stanzas(text, Source::Own);
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].version, "7.3.4-1~bpo13+1");
        assert_eq!(
            ps[0].depends,
            [
                "dracut",
                "linux-base-7.3.4+deb13-amd64",
                "linux-binary-7.3.4+deb13-amd64"
            ]
        );
        assert!(ps[1].depends.is_empty());
        assert_eq!(ps[1].source, Source::Own);
    }

    #[test]
    fn the_own_state_never_names_the_hosts_sources() {
        let t = tempfile::tempdir().unwrap();
        let a = Archive::new(t.path());
        let list = a.own_sources_list();
        for s in OWN_SUITES {
            assert!(list.contains(&format!(" {s} main")), "{list}");
        }
        assert!(list.lines().all(|l| l.contains(KEYRING)), "{list}");
        let opts: Vec<String> = a
            .own_options()
            .iter()
            .map(|o| o.to_string_lossy().into_owned())
            .collect();
        for key in ["Dir::Etc::SourceList=", "Dir::State::Lists=", "Dir::Cache="] {
            let v = opts.iter().find(|o| o.starts_with(key)).unwrap();
            assert!(v.contains(&t.path().display().to_string()), "{v}");
        }
        assert!(opts.iter().any(|o| o == "Dir::State::status=/dev/null"));
    }
}
