//! The host-side oracles of e4race: they turn the final disk image, the guest's records and
//! the kernel log into findings.
//!
//! - [`content`]: every acknowledged tagged block must be on disk ([`check_content`]);
//! - [`fsck`]: the real `e2fsck -fn`, parsed ([`run_e2fsck`]);
//! - [`kernel_log`]: warnings, BUGs, oopses, panics ([`scan_kernel_log`],
//!   [`classify_console_line`]);
//! - [`finding`]: one [`Finding`] list for the report ([`verdict_findings`]).

pub mod content;
pub mod error;
pub mod finding;
pub mod fsck;
pub mod kernel_log;
mod signature;

pub use content::{
    check_content, check_file, check_mapped, require_tag_block_size, resolve_file, ContentReport,
    FileCheck, FileProblem, FileProblemKind, Found, LostBlock,
};
pub use error::{OracleError, Result};
pub use finding::{verdict_findings, CrashStateFinding, Finding, FindingClass};
pub use fsck::{
    find_e2fsck, parse_e2fsck_output, run_e2fsck, BitmapRange, BlockRange, E2fsckReport,
    FsckFinding, Sign,
};
pub use kernel_log::{
    classify_console_line, scan_kernel_log, strip_prefixes, KernelLogClass, KernelLogFinding,
};
