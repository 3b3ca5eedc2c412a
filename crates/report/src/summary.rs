//! The human summary printed at the end of a run and saved as `summary.txt`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::{FindingClass, Report};

/// Files (and other findings) listed before the rest is only counted.
const LISTED: usize = 12;
/// Lost blocks named per file.
const LBLKS_PER_FILE: usize = 6;

impl Report {
    /// The summary: the verdict line, what was exercised, the findings, where to look.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}: {} on {} ({}), {} accel, disk {}{}",
            self.verdict_label(),
            self.scenario,
            self.kernel_label(),
            self.kernel.origin,
            self.accel,
            self.disk_backend,
            self.mutant
                .as_ref()
                .map(|m| format!(", mutant {m}"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "  took {:.1} s{}",
            self.duration_s,
            self.boot_s
                .map(|b| format!(" (guest ready after {b:.1} s)"))
                .unwrap_or_default()
        );
        if let Some(ex) = &self.exercise {
            for (k, v) in ex.lines() {
                let _ = writeln!(s, "  {k}: {v}");
            }
        }
        if let Some(c) = &self.crash {
            let _ = writeln!(
                s,
                "  crash states: {} checked ({} after a flush, {} reordered), {} bad, {:.1} states/s",
                c.states_checked, c.after_flush, c.reordered, c.bad_states, c.states_per_second
            );
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "  error: {e}");
        }
        if let Some(line) = self.request_errors_line() {
            let _ = writeln!(s, "  {line}");
        }
        if !self.findings.is_empty() {
            let mut by_class: BTreeMap<FindingClass, usize> = BTreeMap::new();
            for f in &self.findings {
                *by_class.entry(f.class()).or_default() += 1;
            }
            let _ = writeln!(
                s,
                "  findings: {}{}",
                by_class
                    .iter()
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                match self.findings.len() - self.new_findings().count() {
                    0 => String::new(),
                    n => format!(" ({n} explained by known issues)"),
                }
            );
            s.push_str(&self.findings_digest());
        }
        for id in &self.known_not_reproduced {
            let _ = writeln!(
                s,
                "  known issue {id}: not reproduced (in scope for this scenario and kernel; fixed?)"
            );
        }
        let _ = writeln!(s, "  run directory: {}", self.run_dir);
        let _ = writeln!(s, "  reproduce: {}", self.reproduce);
        s
    }

    /// `guest requests failed by the host: 3 (unaligned-length 2, read-only 1)`, most
    /// frequent kind first; `None` when none failed.
    pub fn request_errors_line(&self) -> Option<String> {
        let total: u64 = self.request_errors.values().sum();
        if total == 0 {
            return None;
        }
        let mut kinds: Vec<(&String, &u64)> = self.request_errors.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        Some(format!(
            "guest requests failed by the host: {total} ({})",
            kinds.join(", ")
        ))
    }

    /// Findings for the summary. Lost blocks are grouped per file: a mutant run can lose
    /// thousands, and one line per file reads better than one per block.
    fn findings_digest(&self) -> String {
        let mut lost: BTreeMap<&str, (usize, Vec<u64>, BTreeSet<String>)> = BTreeMap::new();
        let mut others = Vec::new();
        for f in &self.findings {
            match f.lost_block() {
                Some(b) => {
                    let e = lost.entry(&b.path).or_default();
                    e.0 += 1;
                    if e.1.len() < LBLKS_PER_FILE {
                        e.1.push(b.lblk);
                    }
                    e.2.insert(b.found.kind_name().to_string());
                }
                None => others.push(f),
            }
        }
        let mut s = String::new();
        for (path, (n, first, kinds)) in lost.iter().take(LISTED) {
            let lblks: Vec<String> = first.iter().map(u64::to_string).collect();
            let _ = writeln!(
                s,
                "    [data-loss] {path}: {n} lost blocks ({}), lblk {}{}",
                kinds.iter().cloned().collect::<Vec<_>>().join(", "),
                lblks.join(", "),
                if *n > first.len() { ", ..." } else { "" }
            );
        }
        if lost.len() > LISTED {
            let _ = writeln!(
                s,
                "    [data-loss] ... {} more files in report.json",
                lost.len() - LISTED
            );
        }
        // The rest, one line per signature: twelve files breaking one postcondition are one
        // cause, not twelve.
        let mut groups: BTreeMap<&str, Vec<&crate::Finding>> = BTreeMap::new();
        for f in &others {
            groups.entry(&f.signature).or_default().push(f);
        }
        let files = self.exercise.as_ref().and_then(|e| e.files_label());
        for (sig, fs) in groups.iter().take(LISTED) {
            let first = fs[0];
            let of = match (first.class(), files) {
                (FindingClass::ApiPostcondition, Some((n, what))) => {
                    // A file can break one check more than once (one per EXT4_IOC_MOVE_EXT
                    // call): count the files.
                    let distinct: std::collections::BTreeSet<_> =
                        fs.iter().map(|f| (f.round(), f.path())).collect();
                    format!(" ({} of {n} {what})", distinct.len())
                }
                _ => String::new(),
            };
            let known = first
                .known_issue
                .as_ref()
                .map(|id| format!(" [known issue {id}]"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "    [{}] {} × {}{of}{known}; first: {}",
                first.class(),
                fs.len(),
                sig.rsplit('/').next().unwrap_or(sig),
                first.summary
            );
        }
        if groups.len() > LISTED {
            let _ = writeln!(
                s,
                "    ... {} more signatures in report.json",
                groups.len() - LISTED
            );
        }
        for k in &self.known_issues {
            let _ = writeln!(
                s,
                "  known issue {}: {} ({} findings; {}{})",
                k.id,
                k.title,
                k.findings,
                k.status,
                k.fix
                    .as_ref()
                    .map(|f| format!("; fix: {f}"))
                    .unwrap_or_default()
            );
        }
        s
    }
}
