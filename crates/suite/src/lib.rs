//! Suites: many e4race runs as one job.
//!
//! A suite file (TOML, [`SuiteFile`]) lists entries: a scenario, the kernels to run it on, an
//! optional mutant or patch, extra arguments, and how many runs or which seeds. [`Suite::jobs`]
//! expands it into [`Job`]s, each with a key that depends only on what the job runs, so that
//! [`Shard`] can split the jobs over CI runners deterministically and stably (adding an entry
//! never moves another entry's jobs to a different shard). Each job's outcome is a
//! [`JobResult`]; a [`SuiteResult`] holds them and renders the summary, `suite.json`,
//! `junit.xml` and `index.html`. Merging shards ([`SuiteResult::merge`]) gives the same result
//! as the unsharded run, because every output is computed from the job results alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use e4race_report::{Report, Verdict};

pub mod detection;
use serde::{Deserialize, Serialize};

/// What an entry's runs are expected to give.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// A correct kernel: PASS (known issues allowed).
    #[default]
    Pass,
    /// A control, such as a mutant: BUG-FOUND, or a kernel error once the agent was up.
    BugFound,
}

/// One entry of a suite file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// `smoke`, `migrate-mmap`, `defrag-mmap`, ...
    pub scenario: String,
    /// Kernels (Debian series or bzImage paths) to run it on.
    #[serde(default = "default_kernels")]
    pub kernels: Vec<String>,
    #[serde(default)]
    pub mutant: Option<String>,
    /// A patch against fs/ext4, relative to the suite file's folder.
    #[serde(default)]
    pub patch: Option<String>,
    /// More options of `e4race run SCENARIO`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Runs per kernel, each with a fresh random seed (ignored when `seeds` is given).
    #[serde(default = "one")]
    pub runs: u32,
    /// One run per seed, per kernel.
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// Default: `bug-found` for a mutant, else `pass`.
    #[serde(default)]
    pub expect: Option<Expect>,
}

fn default_kernels() -> Vec<String> {
    vec!["6.1".into()]
}

fn one() -> u32 {
    1
}

/// A suite file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteFile {
    /// Shown in the summary; default: the file's stem.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub entry: Vec<Entry>,
}

/// One run of the suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Stable identity: scenario, kernel, mutant or patch, arguments, and seed or run number.
    pub key: String,
    pub scenario: String,
    pub kernel: String,
    /// The mutant this job loads: a control, expected to be caught.
    pub mutant: Option<String>,
    pub expect: Expect,
    /// The entry's own options of `e4race run SCENARIO`, joined ("" for none): the detection
    /// table keeps a configuration's runs apart from the plain scenario's.
    pub options: String,
    /// The words after `e4race` (`run SCENARIO ...`), without the runs directory.
    pub argv: Vec<String>,
}

/// Why a suite cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source} (is the disk full?)", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a suite file: {message}(see suites/quick.toml for the format)", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: entry {index} ({scenario}): {why}", path.display())]
    Entry {
        path: PathBuf,
        index: usize,
        scenario: String,
        why: String,
    },
    #[error("{}: two entries expand to the same run {key:?}; give one of them other args or seeds", path.display())]
    DuplicateJob { path: PathBuf, key: String },
    #[error("--shard {0:?}: expected K/N with 1 <= K <= N, e.g. 2/4")]
    BadShard(String),
    #[error("{} is not a suite result: {message}", path.display())]
    Result { path: PathBuf, message: String },
    #[error("the parts disagree: {0}")]
    Merge(String),
}

/// A suite, read from its file.
#[derive(Debug, Clone)]
pub struct Suite {
    pub name: String,
    pub path: PathBuf,
    pub file: SuiteFile,
}

impl Suite {
    pub fn load(path: &Path) -> Result<Suite, SuiteError> {
        let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks a suite; `path` locates patches and names the suite in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Suite, SuiteError> {
        let file: SuiteFile = toml::from_str(text).map_err(|e| SuiteError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let name = file.name.clone().unwrap_or_else(|| {
            path.file_stem()
                .map_or("suite".into(), |s| s.to_string_lossy().into_owned())
        });
        Self::new(name, path, file)
    }

    /// A suite built in memory (`validate`), checked like a file; `path` locates patches.
    pub fn new(name: String, path: &Path, file: SuiteFile) -> Result<Suite, SuiteError> {
        let suite = Suite {
            name,
            path: path.to_path_buf(),
            file,
        };
        for (i, e) in suite.file.entry.iter().enumerate() {
            let bad = |why: &str| SuiteError::Entry {
                path: path.to_path_buf(),
                index: i + 1,
                scenario: e.scenario.clone(),
                why: why.to_string(),
            };
            if e.kernels.is_empty() {
                return Err(bad("kernels is empty"));
            }
            if e.runs == 0 {
                return Err(bad("runs must be at least 1"));
            }
            if e.mutant.is_some() && e.patch.is_some() {
                return Err(bad("give a mutant or a patch, not both"));
            }
            if e.args.iter().any(|a| {
                [
                    "--kernel",
                    "--mutant",
                    "--ext4-patch",
                    "--seed",
                    "--runs-dir",
                ]
                .contains(&a.as_str())
            }) {
                return Err(bad(
                    "args may not set --kernel, --mutant, --ext4-patch, --seed or --runs-dir: use the entry's own fields",
                ));
            }
        }
        if suite.file.entry.is_empty() {
            return Err(SuiteError::Parse {
                path: path.to_path_buf(),
                message: "it has no [[entry]]\n".into(),
            });
        }
        let mut keys = BTreeSet::new();
        for j in suite.jobs() {
            if !keys.insert(j.key.clone()) {
                return Err(SuiteError::DuplicateJob {
                    path: path.to_path_buf(),
                    key: j.key,
                });
            }
        }
        Ok(suite)
    }

    /// Every run of the suite, in file order.
    pub fn jobs(&self) -> Vec<Job> {
        let base = self.path.parent().unwrap_or(Path::new("."));
        let mut jobs = Vec::new();
        for e in &self.file.entry {
            let expect = e.expect.unwrap_or(if e.mutant.is_some() {
                Expect::BugFound
            } else {
                Expect::Pass
            });
            let runs: Vec<(String, Option<u64>)> = if e.seeds.is_empty() {
                (1..=e.runs).map(|i| (format!("run{i}"), None)).collect()
            } else {
                e.seeds
                    .iter()
                    .map(|s| (format!("seed{s}"), Some(*s)))
                    .collect()
            };
            for kernel in &e.kernels {
                for (tag, seed) in &runs {
                    let mut key = format!("{}@{kernel}", e.scenario);
                    let mut argv = vec![
                        "run".to_string(),
                        e.scenario.clone(),
                        "--kernel".into(),
                        kernel.clone(),
                    ];
                    if let Some(m) = &e.mutant {
                        key.push_str(&format!("+{m}"));
                        argv.extend(["--mutant".into(), m.clone()]);
                    }
                    if let Some(p) = &e.patch {
                        key.push_str(&format!("+patch:{p}"));
                        argv.extend(["--ext4-patch".into(), base.join(p).display().to_string()]);
                    }
                    if !e.args.is_empty() {
                        key.push_str(&format!(" {}", e.args.join(" ")));
                    }
                    argv.extend(e.args.iter().cloned());
                    if let Some(s) = seed {
                        argv.extend(["--seed".into(), s.to_string()]);
                    }
                    key.push_str(&format!("#{tag}"));
                    jobs.push(Job {
                        key,
                        scenario: e.scenario.clone(),
                        kernel: kernel.clone(),
                        mutant: e.mutant.clone(),
                        expect,
                        options: e.args.join(" "),
                        argv,
                    });
                }
            }
        }
        jobs
    }
}

/// `--shard K/N`: the jobs whose key hashes to K of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub k: u32,
    pub n: u32,
}

impl std::str::FromStr for Shard {
    type Err = SuiteError;
    fn from_str(s: &str) -> Result<Shard, SuiteError> {
        let bad = || SuiteError::BadShard(s.to_string());
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (k, n): (u32, u32) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if k == 0 || n == 0 || k > n {
            return Err(bad());
        }
        Ok(Shard { k, n })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

impl Shard {
    /// Whether the job with this key is in the shard. The key's hash alone decides (xxh3,
    /// fixed across versions and hosts), so a job never moves when others are added.
    pub fn contains(&self, key: &str) -> bool {
        (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % u64::from(self.n)) as u32 + 1 == self.k
    }
}

/// The outcome of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub key: String,
    pub scenario: String,
    pub kernel: String,
    #[serde(default)]
    pub mutant: Option<String>,
    /// The entry's own options ([`Job::options`]).
    #[serde(default)]
    pub options: String,
    pub expect: Expect,
    pub verdict: Verdict,
    /// `PASS (1 known issue)` and the like.
    pub verdict_label: String,
    /// Whether the verdict is what the entry expected.
    pub ok: bool,
    /// The run directory, relative to the suite's output folder when inside it.
    pub run_dir: String,
    pub duration_s: f64,
    /// Findings per signature.
    pub signatures: BTreeMap<String, usize>,
    /// Findings no known issue explains.
    pub new_findings: usize,
    pub known_issues: Vec<String>,
    pub error: Option<String>,
    pub reproduce: String,
    /// Whether the run convicts the kernel ([`Report::kernel_is_bad`]): what the detection
    /// table counts.
    #[serde(default)]
    pub kernel_bad: bool,
    /// What convicted it: the classes of the new findings (`data-loss`, `fs-corruption`,
    /// `api-postcondition`, `kernel-warning`), and `kernel-error` for a panic, oops or hang
    /// once the agent was up.
    #[serde(default)]
    pub caught_by: Vec<String>,
    #[serde(default)]
    pub lost_blocks: u64,
}

impl JobResult {
    /// The result of `job` from its run's report; `out` makes the run directory relative.
    pub fn from_report(job: &Job, r: &Report, out: &Path) -> JobResult {
        let ok = match job.expect {
            Expect::Pass => r.verdict == Verdict::Pass,
            Expect::BugFound => r.kernel_is_bad(),
        };
        let mut signatures = BTreeMap::new();
        for f in &r.findings {
            *signatures.entry(f.signature.clone()).or_default() += 1;
        }
        let dir = Path::new(&r.run_dir);
        JobResult {
            key: job.key.clone(),
            scenario: job.scenario.clone(),
            kernel: job.kernel.clone(),
            mutant: job.mutant.clone(),
            options: job.options.clone(),
            expect: job.expect,
            verdict: r.verdict,
            verdict_label: r.verdict_label(),
            ok,
            run_dir: dir.strip_prefix(out).unwrap_or(dir).display().to_string(),
            duration_s: r.duration_s,
            signatures,
            new_findings: r.new_findings().count(),
            known_issues: r.known_issues.iter().map(|k| k.id.clone()).collect(),
            error: r.error.clone(),
            reproduce: r.reproduce.clone(),
            kernel_bad: r.kernel_is_bad(),
            caught_by: {
                let mut c: BTreeSet<String> = r
                    .new_findings()
                    .map(|f| f.class().as_str().to_string())
                    .collect();
                if r.verdict == Verdict::KernelError && r.kernel_is_bad() {
                    c.insert("kernel-error".into());
                }
                c.into_iter().collect()
            },
            lost_blocks: r
                .exercise
                .as_ref()
                .map_or(0, |e| e.host().lost_blocks as u64),
        }
    }
}

/// The schema of `suite.json`.
pub const SCHEMA: &str = "e4race-suite/1";

/// A suite's results: one run, one shard, or shards merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteResult {
    pub schema: String,
    pub name: String,
    /// Every job of the suite (all shards), by key: what a complete result must hold.
    pub expected_jobs: Vec<String>,
    /// The shards these results cover (`2/4`), empty when unsharded.
    #[serde(default)]
    pub shards: Vec<String>,
    pub jobs: Vec<JobResult>,
}

impl SuiteResult {
    pub fn new(suite: &Suite, shard: Option<Shard>) -> SuiteResult {
        SuiteResult {
            schema: SCHEMA.into(),
            name: suite.name.clone(),
            expected_jobs: suite.jobs().into_iter().map(|j| j.key).collect(),
            shards: shard.map(|s| vec![s.to_string()]).unwrap_or_default(),
            jobs: vec![],
        }
    }

    /// Jobs of the suite that no result covers (other shards, or runs that never ended).
    pub fn missing(&self) -> Vec<&str> {
        let have: BTreeSet<&str> = self.jobs.iter().map(|j| j.key.as_str()).collect();
        self.expected_jobs
            .iter()
            .map(String::as_str)
            .filter(|k| !have.contains(k))
            .collect()
    }

    /// The suite's verdict: PASS when every job did what it was expected to; else the worst
    /// of the unexpected outcomes (BUG-FOUND before KERNEL-ERROR before INFRA-ERROR).
    pub fn verdict(&self) -> Verdict {
        let bad: Vec<Verdict> = self
            .jobs
            .iter()
            .filter(|j| !j.ok)
            .map(|j| j.verdict)
            .collect();
        if bad.is_empty() {
            Verdict::Pass
        } else if bad
            .iter()
            .any(|v| matches!(v, Verdict::BugFound | Verdict::Pass))
        {
            // A PASS that was expected to be BUG-FOUND is a missed detection: a finding of
            // the suite.
            Verdict::BugFound
        } else if bad.contains(&Verdict::KernelError) {
            Verdict::KernelError
        } else {
            Verdict::InfraError
        }
    }

    /// Merges results of the same suite (shards). Jobs are kept in the suite's order.
    pub fn merge(parts: Vec<SuiteResult>) -> Result<SuiteResult, SuiteError> {
        let mut it = parts.into_iter();
        let mut out = it
            .next()
            .ok_or_else(|| SuiteError::Merge("nothing to merge".into()))?;
        for p in it {
            if p.name != out.name || p.expected_jobs != out.expected_jobs {
                return Err(SuiteError::Merge(format!(
                    "suite {:?} and suite {:?} are not the same suite (other entries)",
                    out.name, p.name
                )));
            }
            for s in p.shards {
                if out.shards.contains(&s) {
                    return Err(SuiteError::Merge(format!("shard {s} is given twice")));
                }
                out.shards.push(s);
            }
            for j in p.jobs {
                if out.jobs.iter().any(|x| x.key == j.key) {
                    return Err(SuiteError::Merge(format!(
                        "job {:?} is in two parts",
                        j.key
                    )));
                }
                out.jobs.push(j);
            }
        }
        let order: BTreeMap<&str, usize> = out
            .expected_jobs
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i))
            .collect();
        let mut jobs = std::mem::take(&mut out.jobs);
        jobs.sort_by_key(|j| order.get(j.key.as_str()).copied().unwrap_or(usize::MAX));
        out.jobs = jobs;
        out.shards.sort();
        Ok(out)
    }

    pub fn read(path: &Path) -> Result<SuiteResult, SuiteError> {
        let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let r: SuiteResult = serde_json::from_str(&text).map_err(|e| SuiteError::Result {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if r.schema != SCHEMA {
            return Err(SuiteError::Result {
                path: path.to_path_buf(),
                message: format!("schema {:?}, this e4race reads {SCHEMA:?}", r.schema),
            });
        }
        Ok(r)
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let ok = self.jobs.iter().filter(|j| j.ok).count();
        let _ = writeln!(
            s,
            "{}: suite {}, {} of {} runs as expected{}",
            self.verdict(),
            self.name,
            ok,
            self.jobs.len(),
            if self.shards.is_empty() {
                String::new()
            } else {
                format!(" (shards {})", self.shards.join(", "))
            }
        );
        let missing = self.missing();
        if !missing.is_empty() {
            let _ = writeln!(
                s,
                "  {} runs of the suite are not in these results",
                missing.len()
            );
        }
        for j in &self.jobs {
            let _ = writeln!(
                s,
                "  {} {:<40} {} ({:.0} s){}",
                if j.ok { "ok  " } else { "FAIL" },
                j.key,
                j.verdict_label,
                j.duration_s,
                if j.expect == Expect::BugFound {
                    ", expected BUG-FOUND"
                } else {
                    ""
                }
            );
            if !j.ok {
                for (sig, n) in &j.signatures {
                    let _ = writeln!(s, "        {n} × {sig}");
                }
                if let Some(e) = &j.error {
                    let _ = writeln!(s, "        error: {}", e.lines().next().unwrap_or(""));
                }
                let _ = writeln!(s, "        reproduce: {}", j.reproduce);
            }
        }
        // Signatures over the whole suite, with how many runs showed each.
        let mut sigs: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for j in &self.jobs {
            for (sig, n) in &j.signatures {
                let e = sigs.entry(sig).or_default();
                e.0 += 1;
                e.1 += n;
            }
        }
        if !sigs.is_empty() {
            let _ = writeln!(s, "  signatures (runs, findings):");
            for (sig, (runs, n)) in sigs {
                let _ = writeln!(s, "    {sig}: {runs} runs, {n} findings");
            }
        }
        // With mutants as controls: how well the oracles did (validate's table).
        if self.jobs.iter().any(|j| j.mutant.is_some()) {
            let _ = writeln!(s, "  detection:");
            for line in detection::render(&detection::cells(&self.jobs)).lines() {
                let _ = writeln!(s, "    {line}");
            }
        }
        s
    }

    /// `junit.xml`: one test case per job, failed when the job did not do what was expected.
    pub fn junit(&self) -> String {
        use quick_junit::{NonSuccessKind, Report as JReport, TestCase, TestCaseStatus, TestSuite};
        let mut suite = TestSuite::new(format!("e4race.suite.{}", self.name));
        for j in &self.jobs {
            let status = if j.ok {
                TestCaseStatus::success()
            } else {
                let kind = match j.verdict {
                    Verdict::KernelError | Verdict::InfraError => NonSuccessKind::Error,
                    _ => NonSuccessKind::Failure,
                };
                let mut st = TestCaseStatus::non_success(kind);
                st.set_type(j.verdict.as_str());
                st.set_message(match (&j.error, j.expect) {
                    (Some(e), _) => e.lines().next().unwrap_or("").to_string(),
                    (None, Expect::BugFound) => {
                        "expected BUG-FOUND (a control was not detected)".into()
                    }
                    (None, Expect::Pass) => format!("{} new findings", j.new_findings),
                });
                st.set_description(
                    j.signatures
                        .iter()
                        .map(|(s, n)| format!("{n} × {s}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                );
                st
            };
            let mut tc = TestCase::new(j.key.clone(), status);
            tc.set_classname(format!("e4race.{}.{}", j.scenario, j.kernel));
            if j.duration_s.is_finite() && j.duration_s >= 0.0 {
                tc.set_time(std::time::Duration::from_secs_f64(j.duration_s));
            }
            tc.set_system_out(format!(
                "verdict {}\nrun directory: {}\nreproduce: {}\n",
                j.verdict_label, j.run_dir, j.reproduce
            ));
            suite.add_test_case(tc);
        }
        let mut rep = JReport::new("e4race");
        rep.add_test_suite(suite);
        rep.to_string().unwrap_or_default()
    }

    /// `index.html`: the summary as a table linking every run's report.html.
    pub fn index_html(&self) -> String {
        let esc = e4race_report::html_escape;
        let mut h = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>e4race suite {}</title>\
             <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:left}}\
             .bad{{color:#b00;font-weight:700}}</style></head><body>\n<h1>e4race suite {}: {}</h1>\n\
             <table><tr><th></th><th>run</th><th>verdict</th><th>signatures</th><th>s</th></tr>\n",
            esc(&self.name),
            esc(&self.name),
            self.verdict()
        );
        for j in &self.jobs {
            let sigs: Vec<String> = j
                .signatures
                .iter()
                .map(|(s, n)| format!("{n} × {}", esc(s)))
                .collect();
            let _ = writeln!(
                h,
                "<tr><td class=\"{}\">{}</td><td><a href=\"{}/report.html\">{}</a></td><td>{}</td><td>{}</td><td>{:.0}</td></tr>",
                if j.ok { "" } else { "bad" },
                if j.ok { "ok" } else { "FAIL" },
                esc(&j.run_dir),
                esc(&j.key),
                esc(&j.verdict_label),
                sigs.join("<br>"),
                j.duration_s
            );
        }
        h.push_str("</table></body></html>\n");
        h
    }

    /// Writes suite.json, summary.txt, junit.xml and index.html into `out`.
    pub fn write(&self, out: &Path) -> Result<(), SuiteError> {
        let w = |name: &str, text: String| {
            let p = out.join(name);
            std::fs::write(&p, text).map_err(|source| SuiteError::Write { path: p, source })
        };
        std::fs::create_dir_all(out).map_err(|source| SuiteError::Write {
            path: out.to_path_buf(),
            source,
        })?;
        w(
            "suite.json",
            serde_json::to_string_pretty(self).unwrap_or_default(),
        )?;
        w("summary.txt", self.summary())?;
        w("junit.xml", self.junit())?;
        w("index.html", self.index_html())
    }
}
