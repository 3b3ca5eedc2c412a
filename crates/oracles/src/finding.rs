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
}

impl FindingClass {
    /// The class as report.json and the summaries spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingClass::DataLoss => "data-loss",
            FindingClass::FsCorruption => "fs-corruption",
            FindingClass::ApiPostcondition => "api-postcondition",
            FindingClass::KernelWarning => "kernel-warning",
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
            Finding::KernelWarning(k) => format!("kernel {:?}: {}", k.class, k.line),
        }
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
    use e4race_protocol::{FileRecord, MigrateCall, PostconditionFailure};

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
                migrate: MigrateCall {
                    start_ns: 0,
                    end_ns: 0,
                    error: 0,
                    return_value: 0,
                    flags_before: 0,
                    flags_after: 0,
                    extents_after: 0,
                    content_ok_after: false,
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
