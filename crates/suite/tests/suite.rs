//! Suites without guests: expansion, sharding (disjoint, complete, stable), and merging
//! shards into exactly the unsharded result.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use e4race_report::Verdict;
use suite::{Expect, JobResult, Shard, Suite, SuiteResult};

const TEXT: &str = r#"
name = "t"
[[entry]]
scenario = "smoke"
kernels = ["6.1", "6.12"]

[[entry]]
scenario = "migrate-mmap"
args = ["--rounds", "1"]
seeds = [1, 2, 3]

[[entry]]
scenario = "migrate-mmap"
mutant = "migrate-flag-clear"
runs = 4

[[entry]]
scenario = "migrate-mmap"
kernels = ["7.3"]
patch = "fix.patch"
"#;

fn suite(text: &str) -> Suite {
    Suite::parse(text, Path::new("/s/t.toml")).unwrap()
}

fn result_of(key: &str, expect: Expect, verdict: Verdict) -> JobResult {
    let ok = match expect {
        Expect::Pass => verdict == Verdict::Pass,
        Expect::BugFound => verdict == Verdict::BugFound,
    };
    JobResult {
        key: key.into(),
        scenario: key.split('@').next().unwrap().into(),
        kernel: "6.1".into(),
        mutant: None,
        options: String::new(),
        expect,
        verdict,
        verdict_label: verdict.to_string(),
        ok,
        run_dir: format!("runs/{}", key.len()),
        duration_s: 1.0,
        signatures: if verdict == Verdict::BugFound {
            BTreeMap::from([("migrate-mmap/data-loss/lost-block:hole".to_string(), 3)])
        } else {
            BTreeMap::new()
        },
        new_findings: 0,
        known_issues: vec![],
        error: None,
        reproduce: format!("e4race {key}"),
        kernel_bad: verdict == Verdict::BugFound,
        caught_by: if verdict == Verdict::BugFound {
            vec!["data-loss".into()]
        } else {
            vec![]
        },
        lost_blocks: if verdict == Verdict::BugFound { 3 } else { 0 },
    }
}

/// Every job "ran": the controls were detected, everything else passed.
fn run_all(s: &Suite, shard: Option<Shard>) -> SuiteResult {
    let mut r = SuiteResult::new(s, shard);
    for j in s.jobs() {
        if shard.is_none_or(|sh| sh.contains(&j.key)) {
            let v = match j.expect {
                Expect::Pass => Verdict::Pass,
                Expect::BugFound => Verdict::BugFound,
            };
            r.jobs.push(result_of(&j.key, j.expect, v));
        }
    }
    r
}

#[test]
fn entries_expand_into_jobs_with_their_options() {
    let s = suite(TEXT);
    let jobs = s.jobs();
    // 2 kernels + 3 seeds + 4 runs + 1.
    assert_eq!(jobs.len(), 10);
    assert_eq!(jobs[0].key, "smoke@6.1#run1");
    assert_eq!(jobs[0].argv, ["run", "smoke", "--kernel", "6.1"]);
    assert_eq!(jobs[2].key, "migrate-mmap@6.1 --rounds 1#seed1");
    assert_eq!(
        jobs[2].argv,
        [
            "run",
            "migrate-mmap",
            "--kernel",
            "6.1",
            "--rounds",
            "1",
            "--seed",
            "1"
        ]
    );
    let m = &jobs[5];
    assert_eq!(m.key, "migrate-mmap@6.1+migrate-flag-clear#run1");
    assert_eq!(m.expect, Expect::BugFound, "a mutant is a control");
    let p = jobs.last().unwrap();
    assert!(p.argv.contains(&"/s/fix.patch".to_string()), "{:?}", p.argv);
    assert_eq!(p.expect, Expect::Pass);
}

#[test]
fn bad_suites_are_refused_with_the_reason() {
    let err = |t: &str| {
        Suite::parse(t, Path::new("b.toml"))
            .unwrap_err()
            .to_string()
    };
    assert!(err("").contains("has no [[entry]]"));
    assert!(
        err("[[entry]]\nscenario = \"smoke\"\nrunz = 2\n").contains("b.toml is not a suite file")
    );
    assert!(err("[[entry]]\nscenario = \"smoke\"\nruns = 0\n").contains("runs must be at least 1"));
    assert!(
        err("[[entry]]\nscenario = \"smoke\"\nargs = [\"--kernel\", \"6.12\"]\n")
            .contains("use the entry's own fields")
    );
    assert!(
        err("[[entry]]\nscenario = \"smoke\"\n[[entry]]\nscenario = \"smoke\"\n")
            .contains("expand to the same run")
    );
    for bad in ["0/2", "3/2", "1", "a/b", "1/0"] {
        assert!(bad.parse::<Shard>().is_err(), "{bad}");
    }
    assert_eq!("2/3".parse::<Shard>().unwrap(), Shard { k: 2, n: 3 });
}

#[test]
fn shards_are_disjoint_complete_and_stable() {
    let s = suite(TEXT);
    let all: BTreeSet<String> = s.jobs().into_iter().map(|j| j.key).collect();
    for n in 1..=4 {
        let mut union = BTreeSet::new();
        for k in 1..=n {
            let sh = Shard { k, n };
            for j in s.jobs().into_iter().filter(|j| sh.contains(&j.key)) {
                assert!(
                    union.insert(j.key.clone()),
                    "{} in two shards of {n}",
                    j.key
                );
            }
        }
        assert_eq!(union, all, "{n} shards");
    }
    // Adding an entry moves no existing job to another shard.
    let bigger = suite(&format!(
        "{TEXT}\n[[entry]]\nscenario = \"defrag-mmap\"\nruns = 5\n"
    ));
    let sh = Shard { k: 1, n: 2 };
    let before: BTreeSet<String> = s
        .jobs()
        .into_iter()
        .filter(|j| sh.contains(&j.key))
        .map(|j| j.key)
        .collect();
    let after: BTreeSet<String> = bigger
        .jobs()
        .into_iter()
        .filter(|j| sh.contains(&j.key) && all.contains(&j.key))
        .map(|j| j.key)
        .collect();
    assert_eq!(before, after);
}

#[test]
fn merged_shards_equal_the_unsharded_run() {
    let s = suite(TEXT);
    let whole = run_all(&s, None);
    let a = run_all(&s, Some(Shard { k: 1, n: 2 }));
    let b = run_all(&s, Some(Shard { k: 2, n: 2 }));
    assert!(
        !a.jobs.is_empty() && !b.jobs.is_empty(),
        "both shards have work here"
    );
    assert!(!a.missing().is_empty());
    let merged = SuiteResult::merge(vec![b.clone(), a.clone()]).unwrap();
    assert!(merged.missing().is_empty());
    assert_eq!(merged.jobs, whole.jobs);
    assert_eq!(merged.verdict(), whole.verdict());
    assert_eq!(merged.junit(), whole.junit());
    assert_eq!(merged.shards, ["1/2", "2/2"]);
    // The same shard twice, or another suite, is refused.
    assert!(SuiteResult::merge(vec![a.clone(), a.clone()]).is_err());
    let other = run_all(&suite("[[entry]]\nscenario = \"smoke\"\n"), None);
    assert!(SuiteResult::merge(vec![a, other]).is_err());
}

#[test]
fn the_verdict_is_pass_only_when_every_job_did_what_was_expected() {
    let s = suite(TEXT);
    let mut r = run_all(&s, None);
    assert_eq!(r.verdict(), Verdict::Pass);
    assert!(r
        .summary()
        .starts_with("PASS: suite t, 10 of 10 runs as expected"));
    // A control that was not detected is a finding of the suite.
    let i = r
        .jobs
        .iter()
        .position(|j| j.expect == Expect::BugFound)
        .unwrap();
    r.jobs[i] = result_of(&r.jobs[i].key.clone(), Expect::BugFound, Verdict::Pass);
    assert_eq!(r.verdict(), Verdict::BugFound);
    let mut r = run_all(&s, None);
    r.jobs[0] = result_of("smoke@6.1#run1", Expect::Pass, Verdict::InfraError);
    assert_eq!(r.verdict(), Verdict::InfraError);
    let xml = r.junit();
    assert!(xml.contains("<error"), "{xml}");
    let dir = tempfile::tempdir().unwrap();
    r.write(dir.path()).unwrap();
    let back = SuiteResult::read(&dir.path().join("suite.json")).unwrap();
    assert_eq!(back, r);
    for f in ["summary.txt", "junit.xml", "index.html"] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
}

#[test]
fn the_detection_table_separates_detection_from_false_positives() {
    use suite::detection;
    let mut jobs = Vec::new();
    for i in 0..20 {
        let mut stock = result_of(
            &format!("migrate-mmap@6.1#run{i}"),
            Expect::Pass,
            Verdict::Pass,
        );
        stock.duration_s = 40.0;
        jobs.push(stock);
        // 19 of 20 mutant runs lose blocks; one passes (a missed detection).
        let v = if i == 7 {
            Verdict::Pass
        } else {
            Verdict::BugFound
        };
        let mut m = result_of(
            &format!("migrate-mmap@6.1+migrate-flag-clear#run{i}"),
            Expect::BugFound,
            v,
        );
        m.mutant = Some("migrate-flag-clear".into());
        m.duration_s = 50.0 + i as f64;
        jobs.push(m);
    }
    let mut err = result_of("migrate-mmap@6.1#run99", Expect::Pass, Verdict::InfraError);
    err.duration_s = 1.0;
    jobs.push(err);
    // A panic once the agent was up is a detection by kernel-error, not an error.
    let mut oops = result_of(
        "migrate-mmap@6.1+migrate-flag-clear#run20",
        Expect::BugFound,
        Verdict::KernelError,
    );
    oops.mutant = Some("migrate-flag-clear".into());
    oops.kernel_bad = true;
    oops.caught_by = vec!["kernel-error".into()];
    jobs.push(oops);
    let cells = detection::cells(&jobs);
    assert_eq!(cells.len(), 2, "{cells:?}");
    let t = detection::render(&cells);
    assert!(
        t.contains("| migrate-mmap | 6.1 | stock | 21 | - | 0/21 | 1 |"),
        "{t}"
    );
    assert!(
        t.contains("| migrate-flag-clear | 21 | 20/21 | - | 0 | data-loss 19, kernel-error 1 |"),
        "{t}"
    );
    assert_eq!(cells[1].lost_blocks_per_run.iter().sum::<u64>(), 19 * 3);
    assert_eq!(detection::median(vec![3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(detection::median(vec![]), None);
    // A suite with controls shows the table in its summary.
    let mut r = SuiteResult::new(&suite(TEXT), None);
    r.jobs = jobs;
    assert!(r.summary().contains("detection:"), "{}", r.summary());
}
