//! Known issues: kernel behaviour that e4race finds and that is understood, so that a CI job
//! can gate on *new* findings. A [`KnownIssues`] list comes from a TOML file (the built-in
//! `default.toml`, or `--known-issues FILE`); [`KnownIssues::apply`] marks the findings of a
//! report that match an entry in scope, counts them, lists the entries in scope that did
//! not show up ("not reproduced"), and lets the run pass when nothing new was found.

use std::path::{Path, PathBuf};

use e4race_report::{KnownIssueHit, Report, Verdict};
use serde::Deserialize;

/// The list shipped with e4race (`crates/known-issues/default.toml`).
pub const DEFAULT_TOML: &str = include_str!("../default.toml");

/// One known issue.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownIssue {
    pub id: String,
    pub title: String,
    /// Finding signatures (`SCENARIO/CLASS/KEY`, as report.json spells them) it explains.
    pub signatures: Vec<String>,
    /// The first kernel release it applies to (inclusive), compared numerically.
    #[serde(default)]
    pub min_release: Option<String>,
    /// The first kernel release it no longer applies to (exclusive).
    #[serde(default)]
    pub max_release: Option<String>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub fix: Option<String>,
    /// What the kernel does; attached to each matching finding as its `known_cause`.
    #[serde(default)]
    pub cause: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuesFile {
    #[serde(default)]
    issue: Vec<KnownIssue>,
}

/// Why a known-issues file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KnownIssuesError {
    #[error("cannot read the known-issues file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{origin} is not a known-issues file: {message}(format: crates/known-issues/default.toml)"
    )]
    Parse { origin: String, message: String },
    #[error("{origin}: known issue {id:?}: {why}")]
    Invalid {
        origin: String,
        id: String,
        why: String,
    },
}

/// A list of known issues.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownIssues {
    pub issues: Vec<KnownIssue>,
}

/// `7.3.4+deb13-amd64` → [7, 3, 4]; `6.1.0-57-amd64` → [6, 1, 0]; None without a leading
/// number. Padded to three parts so that `5.5` equals `5.5.0`.
fn release_key(release: &str) -> Option<Vec<u64>> {
    let head: String = release
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts: Vec<u64> = head
        .split('.')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if parts.is_empty() {
        return None;
    }
    parts.resize(parts.len().max(3), 0);
    Some(parts)
}

impl KnownIssues {
    /// The built-in list.
    pub fn builtin() -> Result<Self, KnownIssuesError> {
        Self::parse(DEFAULT_TOML, "the built-in known issues")
    }

    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<Self, KnownIssuesError> {
        let text = std::fs::read_to_string(path).map_err(|source| KnownIssuesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a list; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, KnownIssuesError> {
        let file: IssuesFile = toml::from_str(text).map_err(|e| KnownIssuesError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let invalid = |id: &str, why: String| KnownIssuesError::Invalid {
            origin: origin.to_string(),
            id: id.to_string(),
            why,
        };
        let mut ids = std::collections::BTreeSet::new();
        for i in &file.issue {
            if i.id.is_empty() || !i.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(invalid(&i.id, "id takes letters, digits and '-'".into()));
            }
            if !ids.insert(i.id.clone()) {
                return Err(invalid(&i.id, "listed twice".into()));
            }
            if i.signatures.is_empty() {
                return Err(invalid(&i.id, "signatures is empty".into()));
            }
            for s in &i.signatures {
                if s.splitn(3, '/').count() != 3 {
                    return Err(invalid(
                        &i.id,
                        format!(
                            "signature {s:?} is not SCENARIO/CLASS/KEY (copy it from report.json)"
                        ),
                    ));
                }
            }
            for r in [&i.min_release, &i.max_release].into_iter().flatten() {
                if release_key(r).is_none() {
                    return Err(invalid(
                        &i.id,
                        format!("release {r:?} does not start with a version like 6.1"),
                    ));
                }
            }
        }
        Ok(KnownIssues { issues: file.issue })
    }

    /// Whether `issue` applies to a kernel release (an unparseable release is in no range
    /// that has a bound).
    fn covers_release(issue: &KnownIssue, release: &str) -> bool {
        let key = release_key(release);
        let min_ok = issue
            .min_release
            .as_deref()
            .is_none_or(|m| matches!((&key, release_key(m)), (Some(k), Some(m)) if *k >= m));
        let max_ok = issue
            .max_release
            .as_deref()
            .is_none_or(|m| matches!((&key, release_key(m)), (Some(k), Some(m)) if *k < m));
        min_ok && max_ok
    }

    /// Marks the report's matching findings as known and sets the verdict: a run whose every
    /// finding is known passes, unless `report.strict`. Runs that did not complete
    /// (KERNEL-ERROR, INFRA-ERROR) are left as they are.
    pub fn apply(&self, report: &mut Report) {
        if !matches!(report.verdict, Verdict::Pass | Verdict::BugFound) {
            return;
        }
        let release = report.kernel.release.clone();
        let in_scope: Vec<&KnownIssue> = self
            .issues
            .iter()
            .filter(|i| Self::covers_release(i, &release))
            .collect();
        let mut hits = vec![0usize; in_scope.len()];
        for f in report
            .findings
            .iter_mut()
            .filter(|f| f.known_issue.is_none())
        {
            if let Some(n) = in_scope
                .iter()
                .position(|i| i.signatures.contains(&f.signature))
            {
                hits[n] += 1;
                f.known_issue = Some(in_scope[n].id.clone());
                if f.known_cause.is_none() {
                    f.known_cause = in_scope[n].cause.clone();
                }
            }
        }
        report.known_issues = in_scope
            .iter()
            .zip(&hits)
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| KnownIssueHit {
                id: i.id.clone(),
                title: i.title.clone(),
                findings: *n,
                status: i.status.clone(),
                fix: i.fix.clone(),
            })
            .collect();
        let scenario_prefix = format!("{}/", report.scenario);
        report.known_not_reproduced = in_scope
            .iter()
            .zip(&hits)
            .filter(|(i, n)| {
                **n == 0 && i.signatures.iter().any(|s| s.starts_with(&scenario_prefix))
            })
            .map(|(i, _)| i.id.clone())
            .collect();
        report.verdict = if report.new_findings().next().is_some()
            || (report.strict && !report.findings.is_empty())
        {
            Verdict::BugFound
        } else {
            Verdict::Pass
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_compare_numerically() {
        assert_eq!(release_key("7.3.4+deb13-amd64"), Some(vec![7, 3, 4]));
        assert_eq!(release_key("6.1.0-57-amd64"), Some(vec![6, 1, 0]));
        assert_eq!(release_key("5.5"), Some(vec![5, 5, 0]));
        assert_eq!(release_key("6.12.1"), Some(vec![6, 12, 1]));
        assert!(release_key("6.12.1") > release_key("6.9"));
        assert_eq!(release_key("linux"), None);
    }

    #[test]
    fn the_builtin_list_parses_and_names_the_migrate_bug() {
        let k = KnownIssues::builtin().unwrap();
        let i = k
            .issues
            .iter()
            .find(|i| i.id == "migrate-returns-0-after-backoff")
            .unwrap();
        assert!(i
            .signatures
            .iter()
            .any(|s| s == "migrate-mmap/api-postcondition/migrate-success-sets-extents-flag"));
        assert!(KnownIssues::covers_release(i, "6.1.0-57-amd64"));
        assert!(KnownIssues::covers_release(i, "7.3.4+deb13-amd64"));
        assert!(!KnownIssues::covers_release(i, "5.4.0"));
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let e = KnownIssues::parse(
            "[[issue]]\nid = \"x\"\ntitle = \"t\"\nsignatures = [\"nope\"]\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("is not SCENARIO/CLASS/KEY"), "{e}");
        let e = KnownIssues::parse(
            "[[issue]]\nid = \"x\"\ntitle = \"t\"\nsignature = [\"a/b/c\"]\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("f.toml is not a known-issues file"), "{e}");
        let e = KnownIssues::parse(
            "[[issue]]\nid = \"x\"\ntitle = \"t\"\nsignatures = [\"a/b/c\"]\nmin_release = \"new\"\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("does not start with a version"), "{e}");
    }
}
