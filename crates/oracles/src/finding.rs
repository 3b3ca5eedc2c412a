//! One list of findings for the run report, whichever oracle produced them.

use crate::content::{ContentReport, FileProblem, LostBlock};
use crate::fsck::{E2fsckReport, FsckFinding};
use crate::kernel_log::KernelLogFinding;
use e4race_protocol::RoundRecord;
use serde::{Deserialize, Serialize};

/// The class of a finding, for counting and verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingClass {
    DataLoss,
    FsCorruption,
    ApiPostcondition,
    KernelWarning,
    /// A crash state of the write log is inconsistent (crates/crash).
    CrashConsistency,
}

impl FindingClass {
    /// The class as report.json and the summaries spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingClass::DataLoss => "data-loss",
            FindingClass::FsCorruption => "fs-corruption",
            FindingClass::ApiPostcondition => "api-postcondition",
            FindingClass::KernelWarning => "kernel-warning",
            FindingClass::CrashConsistency => "crash-consistency",
        }
    }
}

impl std::fmt::Display for FindingClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A finding of any oracle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", content = "detail", rename_all = "kebab-case")]
pub enum Finding {
    /// An acknowledged block is not on disk as written.
    DataLoss(LostBlock),
    /// A whole acknowledged file is missing or unreadable (also data loss).
    FileLoss(FileProblem),
    /// Blocks the guest wrote and fsynced read back wrong in the guest itself (smoke).
    ReadBack {
        path: String,
        blocks_written: u64,
        /// Logical blocks that read back wrong.
        mismatched: Vec<u64>,
    },
    /// e2fsck found the file system inconsistent.
    FsCorruption(FsckFinding),
    /// The migrate call's result disagrees with the inode afterwards (from the guest).
    ApiPostcondition {
        path: String,
        round: u32,
        check: String,
        detail: String,
    },
    /// The kernel complained (warning, BUG, oops, lockdep, ext4 error, hung task).
    KernelWarning(KernelLogFinding),
    /// A crash state built from the write log failed its checks (the first of its kind).
    CrashState(CrashStateFinding),
}

/// A bad crash state, as the report carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashStateFinding {
    /// The FLUSH record of the write log the state is at.
    pub seq: u64,
    /// `after-flush`, or `reordered` (just before the flush, some unflushed writes lost).
    pub state: String,
    /// Unflushed writes dropped (0 for after-flush states).
    pub dropped_writes: usize,
    pub mark_before: Option<String>,
    /// What was wrong: `durable-lost`, `garbage`, `journal-replay`, `unreadable`, or
    /// `e2fsck:KIND`.
    pub problem: String,
    pub detail: String,
    /// Bad states of the run with the same problem.
    pub states: usize,
    /// Rebuilds the state.
    pub replay: String,
}

impl Finding {
    pub fn class(&self) -> FindingClass {
        match self {
            Finding::DataLoss(_) | Finding::FileLoss(_) | Finding::ReadBack { .. } => {
                FindingClass::DataLoss
            }
            Finding::FsCorruption(_) => FindingClass::FsCorruption,
            Finding::ApiPostcondition { .. } => FindingClass::ApiPostcondition,
            Finding::KernelWarning(_) => FindingClass::KernelWarning,
            Finding::CrashState(_) => FindingClass::CrashConsistency,
        }
    }

    /// What identifies the finding's kind across runs: the check or loss kind and the
    /// mechanism, never a file, block, inode number or seed. With the scenario and the class
    /// in front, it is the finding's signature (e4race-report).
    pub fn signature_key(&self) -> String {
        match self {
            Finding::DataLoss(b) => format!("lost-block:{}", b.found.kind_name()),
            Finding::FileLoss(p) => match p.kind {
                crate::FileProblemKind::Missing => "file:missing".into(),
                crate::FileProblemKind::Unreadable => "file:unreadable".into(),
            },
            Finding::ReadBack { .. } => "read-back".into(),
            Finding::FsCorruption(f) => match f {
                // Unrecognized e2fsck lines: their words, without the numbers in them.
                crate::FsckFinding::Other { text } => {
                    format!("e2fsck:{}", crate::signature::without_numbers(text))
                }
                // What failed its checksum tells bugs apart (an extent block, an inode, ...).
                crate::FsckFinding::ChecksumMismatch { object, .. } => {
                    format!("e2fsck:checksum-mismatch:{object}")
                }
                _ => format!("e2fsck:{}", serde_kind(f)),
            },
            Finding::ApiPostcondition { check, .. } => check.clone(),
            Finding::KernelWarning(k) => format!(
                "{}:{}",
                serde_kind(&k.class),
                crate::kernel_log::site(&k.line)
            ),
            Finding::CrashState(c) => format!("crash:{}", c.problem),
        }
    }

    /// One line for a human.
    pub fn summary(&self) -> String {
        match self {
            Finding::DataLoss(b) => format!(
                "{} (round {}, file {}) lblk {}: expected tag generation {}, found {:?}{}",
                b.path,
                b.round,
                b.file_id,
                b.lblk,
                b.expected_generation,
                b.found,
                b.pblk.map(|p| format!(" at pblk {p}")).unwrap_or_default()
            ),
            Finding::FileLoss(p) => format!(
                "{} (round {}, file {}) {:?}: {} acknowledged blocks unverifiable: {}",
                p.path, p.round, p.file_id, p.kind, p.acknowledged_blocks, p.detail
            ),
            Finding::ReadBack {
                path,
                blocks_written,
                mismatched,
            } => format!(
                "{path}: {} of {blocks_written} blocks read back wrong in the guest, first {:?}",
                mismatched.len(),
                &mismatched[..mismatched.len().min(8)]
            ),
            Finding::FsCorruption(f) => format!("e2fsck: {}", f.summary()),
            Finding::ApiPostcondition {
                path,
                round,
                check,
                detail,
            } => format!("{path} (round {round}): {check}: {detail}"),
            Finding::KernelWarning(k) => format!(
                "kernel {:?}: {}",
                k.class,
                crate::kernel_log::with_relative_sources(&k.line)
            ),
            Finding::CrashState(c) => format!(
                "crash state at log seq {} ({}{}{}): {}; {} bad state(s) like it; rebuild: {}",
                c.seq,
                c.state,
                if c.dropped_writes > 0 {
                    format!(", {} unflushed writes lost", c.dropped_writes)
                } else {
                    String::new()
                },
                c.mark_before
                    .as_deref()
                    .map(|m| format!(", after mark {m}"))
                    .unwrap_or_default(),
                c.detail,
                c.states,
                c.replay
            ),
        }
    }
}

/// The serde name of a unit-like or tagged enum value (`kind`/plain string), for keys.
fn serde_kind<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(m)) => m
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("unknown")
            .to_string(),
        _ => "unknown".into(),
    }
}

/// Everything the oracles found, in one list: content losses, e2fsck findings, the guest's
/// postcondition failures from `rounds`, and kernel log complaints.
pub fn verdict_findings(
    content: Option<&ContentReport>,
    fsck: Option<&E2fsckReport>,
    rounds: &[RoundRecord],
    kernel_log: &[KernelLogFinding],
) -> Vec<Finding> {
    let mut out = vec![];
    if let Some(c) = content {
        out.extend(c.lost.iter().cloned().map(Finding::DataLoss));
        out.extend(c.file_problems.iter().cloned().map(Finding::FileLoss));
    }
    if let Some(f) = fsck {
        out.extend(f.findings.iter().cloned().map(Finding::FsCorruption));
    }
    for r in rounds {
        for f in &r.files {
            out.extend(f.postconditions.iter().map(|p| Finding::ApiPostcondition {
                path: f.path.clone(),
                round: r.round,
                check: p.check.clone(),
                detail: p.detail.clone(),
            }));
        }
    }
    out.extend(kernel_log.iter().cloned().map(Finding::KernelWarning));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::Found;
    use crate::kernel_log::KernelLogClass;
    use e4race_protocol::{FileRecord, InodeAfter, MigrateCall, PostconditionFailure};

    #[test]
    fn signature_keys_name_the_kind_not_the_instance() {
        let lost = |lblk, found| {
            Finding::DataLoss(LostBlock {
                path: format!("r0/f{lblk}"),
                ino: 12 + lblk,
                file_id: 0,
                round: lblk as u32,
                lblk,
                expected_generation: 0,
                found,
                pblk: Some(lblk * 7),
            })
        };
        assert_eq!(lost(1, Found::Hole).signature_key(), "lost-block:hole");
        assert_eq!(
            lost(1, Found::Hole).signature_key(),
            lost(9, Found::Hole).signature_key()
        );
        assert_ne!(
            lost(1, Found::Hole).signature_key(),
            lost(1, Found::Zeros).signature_key()
        );
        let fsck = |text: &str| {
            crate::fsck::parse_e2fsck_output(4, text)
                .findings
                .into_iter()
                .map(|f| Finding::FsCorruption(f).signature_key())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            fsck("Block bitmap differences:  -5000\nFix? no\n"),
            fsck("Block bitmap differences:  -(7000--7010)\nFix? no\n")
        );
        assert_eq!(
            fsck("Block bitmap differences:  -5000\nFix? no\n"),
            ["e2fsck:block-bitmap-differences"]
        );
        let post = Finding::ApiPostcondition {
            path: "r1/f3".into(),
            round: 1,
            check: "migrate-success-sets-extents-flag".into(),
            detail: "migration returned 0 but flags are 0x0".into(),
        };
        assert_eq!(post.signature_key(), "migrate-success-sets-extents-flag");
        let warn = |pid: u32| {
            Finding::KernelWarning(KernelLogFinding {
                class: KernelLogClass::Warn,
                line: format!("WARNING: CPU: 0 PID: {pid} at fs/ext4/page-io.c:92 ext4_put_io_end_defer+0x1/0x2"),
                line_no: pid as usize,
                context: vec![],
            })
            .signature_key()
        };
        assert_eq!(warn(1), warn(2));
        assert_eq!(warn(1), "warn:fs/ext4/page-io.c ext4_put_io_end_defer");
    }

    #[test]
    fn collects_and_serializes_every_kind() {
        let lost = LostBlock {
            path: "r0/f0".into(),
            ino: 12,
            file_id: 0,
            round: 0,
            lblk: 5,
            expected_generation: 0,
            found: Found::Hole,
            pblk: None,
        };
        let content = ContentReport {
            files_checked: 1,
            blocks_checked: 10,
            lost: vec![lost],
            ..Default::default()
        };
        let fsck =
            crate::fsck::parse_e2fsck_output(4, "Block bitmap differences:  -5000\nFix? no\n");
        let rounds = vec![RoundRecord {
            round: 0,
            files: vec![FileRecord {
                file_id: 0,
                path: "r0/f0".into(),
                ino: 12,
                prefilled: vec![],
                hole_lblks: vec![],
                hole_t_ns: vec![],
                synced: true,
                migration: Some(MigrateCall {
                    start_ns: 0,
                    end_ns: 0,
                    error: 0,
                    return_value: 0,
                    flags_before: 0,
                    ..Default::default()
                }),
                after: InodeAfter {
                    flags: 0,
                    extents: 0,
                    content_ok: false,
                },
                postconditions: vec![PostconditionFailure {
                    check: "extents-flag".into(),
                    detail: "ioctl returned 0 but EXTENTS_FL is clear".into(),
                }],
                overwrites: vec![],
                overwrite_t_ns: vec![],
                moves: vec![],
                extents_before: 0,
                unwritten_lblks: Vec::new(),
            }],
        }];
        let klog = crate::kernel_log::scan_kernel_log("[ 1.0] EXT4-fs error (device vda): x\n");
        let all = verdict_findings(Some(&content), Some(&fsck), &rounds, &klog);
        let classes: Vec<_> = all.iter().map(Finding::class).collect();
        assert_eq!(
            classes,
            vec![
                FindingClass::DataLoss,
                FindingClass::FsCorruption,
                FindingClass::ApiPostcondition,
                FindingClass::KernelWarning
            ]
        );
        assert_eq!(all[3], Finding::KernelWarning(klog[0].clone()));
        assert!(
            matches!(&all[3], Finding::KernelWarning(k) if k.class == KernelLogClass::Ext4Error)
        );
        let json = serde_json::to_string(&all).unwrap();
        assert!(json.contains(r#""class":"data-loss""#), "{json}");
        assert!(
            json.contains(r#""kind":"block-bitmap-differences""#),
            "{json}"
        );
        let back: Vec<Finding> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, all);
        for f in &all {
            assert!(!f.summary().is_empty());
        }
    }
}
