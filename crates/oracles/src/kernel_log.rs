//! The kernel log oracle: warnings, BUGs, oopses, panics, lockdep splats, ext4 errors and hung
//! tasks in the guest's console or `/dev/kmsg` text.

use serde::{Deserialize, Serialize};

/// What kind of kernel complaint a line starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelLogClass {
    /// `WARNING: CPU: ...` (WARN_ON) or a `[ cut here ]` block.
    Warn,
    /// `BUG: ...` (including KASAN, sleeping-in-atomic, soft lockup) or `kernel BUG at`.
    Bug,
    /// `Oops:` or `general protection fault`.
    Oops,
    /// `Kernel panic - not syncing`.
    Panic,
    /// Lockdep: circular or recursive locking, inconsistent lock state.
    Lockdep,
    /// `EXT4-fs error` (ext4_error(): the file system saw its own corruption).
    Ext4Error,
    /// `INFO: task ... blocked for more than N seconds`.
    Hung,
    /// A `Call Trace:` with no complaint line before it.
    Other,
}

impl KernelLogClass {
    /// Whether the run must end as KERNEL-ERROR: the kernel is dead or its state is
    /// untrustworthy.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            KernelLogClass::Panic | KernelLogClass::Oops | KernelLogClass::Bug
        )
    }
}

/// One complaint with the lines that explain it (register dump, call trace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelLogFinding {
    pub class: KernelLogClass,
    /// The complaint line, without timestamp or kmsg prefix.
    pub line: String,
    /// 1-based line number in the scanned text.
    pub line_no: usize,
    /// Following lines up to the end of the splat (at most [`MAX_CONTEXT`]).
    pub context: Vec<String>,
}

/// Lines of context kept per finding.
pub const MAX_CONTEXT: usize = 60;

/// Removes `\r`, a `/dev/kmsg` record prefix (`6,1234,5678,-;`), a `<4>` level prefix and a
/// `[    3.123456] ` timestamp.
pub fn strip_prefixes(line: &str) -> &str {
    let mut s = line.trim_end_matches(['\r', '\n']);
    // kmsg: "level,seq,usec,flags;message" (Documentation/ABI/testing/dev-kmsg).
    if let Some((head, rest)) = s.split_once(';') {
        let mut parts = head.split(',');
        let numeric = |p: Option<&str>| {
            p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        if numeric(parts.next()) && numeric(parts.next()) && numeric(parts.next()) {
            s = rest;
        }
    }
    if let Some(rest) = s.strip_prefix('<') {
        if let Some((lvl, rest)) = rest.split_once('>') {
            if !lvl.is_empty() && lvl.bytes().all(|b| b.is_ascii_digit()) {
                s = rest;
            }
        }
    }
    let t = s.trim_start();
    if let Some(rest) = t.strip_prefix('[') {
        if let Some((ts, rest)) = rest.split_once(']') {
            if ts.trim().bytes().all(|b| b.is_ascii_digit() || b == b'.') && !ts.trim().is_empty() {
                return rest.strip_prefix(' ').unwrap_or(rest);
            }
        }
    }
    s
}

const CUT_HERE: &str = "------------[ cut here ]------------";

/// A line of a splat's register dump (arch/x86/kernel/process_64.c __show_regs(), and the
/// lines show_regs() prints around it): `RIP:`, `RSP:`, `RAX:`, `R10:`, `CR2:`, `Code:`, ...
fn is_register_dump_line(line: &str) -> bool {
    let t = line.trim();
    if t.is_empty() {
        return true;
    }
    let Some((head, _)) = t.split_once(':') else {
        return false;
    };
    let head = head.trim();
    [
        "RIP",
        "RSP",
        "Code",
        "PKRU",
        "FS",
        "CS",
        "CPU",
        "Hardware name",
        "Workqueue",
        "Modules linked in",
    ]
    .contains(&head)
        || (head.len() <= 3
            && head.starts_with('R')
            && head
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()))
        || (head.starts_with("CR") && head.len() == 3)
}

/// Classifies one console line as it streams. `Call Trace:` alone is context, not a
/// complaint, and returns `None`.
pub fn classify_console_line(line: &str) -> Option<KernelLogClass> {
    use KernelLogClass::*;
    let s = strip_prefixes(line).trim_start();
    if s.starts_with("Kernel panic - not syncing") {
        return Some(Panic);
    }
    if s.contains("possible circular locking dependency")
        || s.contains("possible recursive locking")
        || s.contains("inconsistent lock state")
        || s.contains("possible irq lock inversion dependency")
        || s.contains("bad unlock balance detected")
    {
        return Some(Lockdep);
    }
    if s.starts_with("Oops:") || s.contains("general protection fault") {
        return Some(Oops);
    }
    if s.starts_with("BUG:") || s.starts_with("kernel BUG at") {
        return Some(Bug);
    }
    if s.starts_with("WARNING: CPU:") || s.starts_with("WARNING:") || s.starts_with(CUT_HERE) {
        return Some(Warn);
    }
    if s.starts_with("EXT4-fs error") {
        return Some(Ext4Error);
    }
    if s.starts_with("INFO: task ") && s.contains(" blocked for more than ") {
        return Some(Hung);
    }
    None
}

/// Whether a line ends a splat (`---[ end trace ... ]---`).
fn ends_splat(s: &str) -> bool {
    s.contains("---[ end trace") || s.contains("---[ end Kernel panic")
}

/// Scans a whole log. A `[ cut here ]` line merges with the complaint that follows it; the
/// lines after a complaint, up to the next complaint or the end of the trace, are its context.
pub fn scan_kernel_log(text: &str) -> Vec<KernelLogFinding> {
    let lines: Vec<&str> = text.lines().map(strip_prefixes).collect();
    let mut out: Vec<KernelLogFinding> = vec![];
    let mut open = false; // the last finding still collects context
    let mut i = 0;
    while i < lines.len() {
        let s = lines[i];
        let class = classify_console_line(s);
        let cut_here = s.trim_start().starts_with(CUT_HERE);
        match class {
            Some(mut class) => {
                let mut at = i;
                if cut_here {
                    // The next line says what was cut.
                    if let Some(next) = lines.get(i + 1).and_then(|l| classify_console_line(l)) {
                        class = next;
                        at = i + 1;
                        i += 1;
                    }
                }
                out.push(KernelLogFinding {
                    class,
                    line: lines[at].trim().to_string(),
                    line_no: at + 1,
                    context: vec![],
                });
                open = true;
            }
            None => {
                let trimmed = s.trim();
                // A dmesg read after the ring buffer wrapped can begin inside a splat whose
                // complaint line is gone: its register dump, then "Call Trace:". That tail
                // is not a new finding.
                let wrapped_tail = out.is_empty()
                    && lines[..i].iter().any(|l| !l.trim().is_empty())
                    && lines[..i].iter().all(|l| is_register_dump_line(l));
                if trimmed.starts_with("Call Trace:") && !open && wrapped_tail {
                    open = false;
                } else if trimmed.starts_with("Call Trace:") && !open {
                    out.push(KernelLogFinding {
                        class: KernelLogClass::Other,
                        line: trimmed.to_string(),
                        line_no: i + 1,
                        context: vec![],
                    });
                    open = true;
                } else if open {
                    if let Some(f) = out.last_mut() {
                        if trimmed.is_empty() || f.context.len() >= MAX_CONTEXT {
                            open = false;
                        } else {
                            f.context.push(trimmed.to_string());
                            if ends_splat(trimmed) {
                                open = false;
                            }
                        }
                    }
                }
            }
        }
        i += 1;
    }
    out
}

/// Where a complaint comes from, without the numbers that change between runs: the source
/// file and function of `WARNING: CPU: 1 PID: 2 at fs/ext4/inode.c:123 ext4_foo+0x1/0x2`
/// (`fs/ext4/inode.c ext4_foo`), the file of `kernel BUG at fs/ext4/extents.c:123!`, the
/// function of `EXT4-fs error (device vdb): ext4_mb_generate_buddy:1234: ...`, else the line
/// with its numbers replaced by `N`.
pub fn site(line: &str) -> String {
    if let Some(rest) = line.split_once(" at ").map(|(_, r)| r) {
        let mut words = rest.split_whitespace();
        if let Some(file) = words.next().and_then(|w| w.split(':').next()) {
            if file.contains('/') {
                let file = source_relative(file.trim_end_matches('!'));
                return match words.next().and_then(|f| f.split('+').next()) {
                    Some(func) if !func.is_empty() => format!("{file} {func}"),
                    _ => file.to_string(),
                };
            }
        }
    }
    if let Some((_, rest)) = line.split_once("EXT4-fs error") {
        if let Some(func) = rest
            .split_once("): ")
            .and_then(|(_, r)| r.split(':').next())
            .filter(|f| !f.is_empty() && !f.contains(' '))
        {
            return format!("EXT4-fs error {func}");
        }
    }
    crate::signature::without_numbers(line)
}

/// `line` with an out-of-tree build's absolute source paths cut to `fs/...` (see
/// [`source_relative`]), for summaries: the rest of the line stays as the kernel printed it.
pub fn with_relative_sources(line: &str) -> String {
    line.split(' ')
        .map(source_relative)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A module built out of tree (a mutant's ext4.ko) reports its sources by the build
/// folder's absolute path: keep the path from the source tree's `fs/` on, as an in-tree
/// build reports it, so that signatures name no folder of one machine.
fn source_relative(file: &str) -> &str {
    match file.rfind("/fs/") {
        Some(i) if file.starts_with('/') => &file[i + 1..],
        _ => file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_drops_what_changes_between_runs() {
        assert_eq!(
            site("WARNING: CPU: 1 PID: 231 at fs/ext4/inode.c:1234 ext4_put_io_end_defer+0x1a/0x40 [ext4]"),
            "fs/ext4/inode.c ext4_put_io_end_defer"
        );
        assert_eq!(
            site("kernel BUG at fs/ext4/extents.c:3187!"),
            "fs/ext4/extents.c"
        );
        // A mutant's module, built out of tree, names its build folder.
        assert_eq!(
            site("WARNING: CPU: 0 PID: 9 at /root/.cache/e4race/mutants/builds/6.1.0-57-amd64/23dd.build/src/fs/ext4/ext4_jbd2.c:361 __ext4_handle_dirty_metadata+0x1/0x2 [ext4]"),
            "fs/ext4/ext4_jbd2.c __ext4_handle_dirty_metadata"
        );
        assert_eq!(
            with_relative_sources("WARNING: CPU: 0 PID: 30 at /root/.cache/x/1.build/src/fs/ext4/page-io.c:231 ext4_put_io_end_defer+0xf2/0x140 [ext4]"),
            "WARNING: CPU: 0 PID: 30 at fs/ext4/page-io.c:231 ext4_put_io_end_defer+0xf2/0x140 [ext4]"
        );
        assert_eq!(
            site("EXT4-fs error (device vdb): ext4_mb_generate_buddy:1215: group 3, block bitmap and bg descriptor inconsistent"),
            "EXT4-fs error ext4_mb_generate_buddy"
        );
        assert_eq!(
            site("INFO: task e4race-agent:412 blocked for more than 120 seconds."),
            "INFO: task e4race-agent:N blocked for more than N seconds."
        );
        assert_eq!(
            site("BUG: unable to handle page fault for address: ffff8880deadbeef"),
            "BUG: unable to handle page fault for address: N"
        );
    }

    #[test]
    fn prefixes() {
        assert_eq!(strip_prefixes("[    3.123456] BUG: x\r"), "BUG: x");
        assert_eq!(
            strip_prefixes("4,1234,5678901,-;WARNING: CPU: 1"),
            "WARNING: CPU: 1"
        );
        assert_eq!(strip_prefixes("<4>[ 12.5] Oops: 0000"), "Oops: 0000");
        assert_eq!(strip_prefixes("[not a ts] x"), "[not a ts] x");
        assert_eq!(strip_prefixes(""), "");
    }

    #[test]
    fn classes() {
        use KernelLogClass::*;
        let c = classify_console_line;
        assert_eq!(
            c("[  1.0] WARNING: CPU: 0 PID: 1 at fs/ext4/inode.c:123 f+0x1/0x2"),
            Some(Warn)
        );
        assert_eq!(
            c("[  1.0] ------------[ cut here ]------------"),
            Some(Warn)
        );
        assert_eq!(
            c("BUG: unable to handle page fault for address: 0000"),
            Some(Bug)
        );
        assert_eq!(c("kernel BUG at fs/ext4/extents.c:42!"), Some(Bug));
        assert_eq!(c("Oops: 0002 [#1] PREEMPT SMP NOPTI"), Some(Oops));
        assert_eq!(
            c("general protection fault, probably for non-canonical address"),
            Some(Oops)
        );
        assert_eq!(
            c("Kernel panic - not syncing: sysrq triggered crash"),
            Some(Panic)
        );
        assert_eq!(
            c("WARNING: possible circular locking dependency detected"),
            Some(Lockdep)
        );
        assert_eq!(
            c("WARNING: possible recursive locking detected"),
            Some(Lockdep)
        );
        assert_eq!(
            c("EXT4-fs error (device vda): ext4_map_blocks:609: inode #12: block 5"),
            Some(Ext4Error)
        );
        assert_eq!(
            c("INFO: task kworker/0:1:25 blocked for more than 120 seconds."),
            Some(Hung)
        );
        assert_eq!(c("Call Trace:"), None);
        assert_eq!(c("EXT4-fs (vda): mounted filesystem"), None);
        assert!(Panic.is_fatal() && Oops.is_fatal() && Bug.is_fatal());
        assert!(!Warn.is_fatal() && !Ext4Error.is_fatal());
    }

    #[test]
    fn scan_merges_cut_here_and_collects_context() {
        let log = "\
[    5.000000] EXT4-fs (vda): mounted filesystem
[    6.000000] ------------[ cut here ]------------
[    6.000001] WARNING: CPU: 1 PID: 77 at fs/ext4/migrate.c:400 ext4_ext_migrate+0x1/0x2 [ext4]
[    6.000002] Modules linked in: ext4 jbd2
[    6.000003] Call Trace:
[    6.000004]  <TASK>
[    6.000005]  ext4_ioctl+0x10/0x20 [ext4]
[    6.000006] ---[ end trace 0000000000000000 ]---
[    6.100000] random line after the trace
[    7.000000] EXT4-fs error (device vda): ext4_lookup:1234: inode #2: comm ls: deleted inode referenced: 13
[    8.000000] BUG: kernel NULL pointer dereference, address: 0000000000000008
[    8.000001] Oops: 0000 [#1] PREEMPT SMP NOPTI
[    8.000002] RIP: 0010:ext4_foo+0x5/0x10
[    9.000000] Kernel panic - not syncing: Fatal exception
";
        let f = scan_kernel_log(log);
        let classes: Vec<_> = f.iter().map(|f| f.class).collect();
        use KernelLogClass::*;
        assert_eq!(classes, vec![Warn, Ext4Error, Bug, Oops, Panic]);
        assert!(f[0].line.starts_with("WARNING: CPU: 1"));
        assert_eq!(f[0].line_no, 3);
        assert_eq!(f[0].context.len(), 5, "{:?}", f[0].context);
        assert!(f[0].context.last().unwrap().contains("end trace"));
        assert_eq!(f[3].context, vec!["RIP: 0010:ext4_foo+0x5/0x10"]);
    }

    #[test]
    fn orphan_call_trace_is_other() {
        let f = scan_kernel_log("Call Trace:\n dump_stack+0x1\n");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].class, KernelLogClass::Other);
        assert!(scan_kernel_log("").is_empty());
    }

    /// Seen on an extents-flip run whose dmesg wrapped: the first lines are the end of a
    /// WARNING's register dump. The later, whole WARNING still counts.
    #[test]
    fn a_wrapped_dmesg_starting_inside_a_splat_is_not_a_finding() {
        let log = "[   20.05] RSP: 0018:ffffcb9080003e68 EFLAGS: 00000086\n\
[   20.05] RAX: 0000000000000001 RBX: ffff8b458247be80 RCX: ffff8b459fcc93a0\n\
[   20.05] R10: 0000000000000002 R11: 0000000000000000 R12: 0000000000000000\n\
[   20.05] CR2: 00007f1828373ee8 CR3: 000000001ff8e000 CR4: 0000000000750ef0\n\
[   20.05] PKRU: 55555554\n\
[   20.05] Call Trace:\n\
[   20.05]  <IRQ>\n\
[   20.05]  blk_update_request+0x110/0x410\n\
[   20.05] ---[ end trace 0000000000000000 ]---\n\
[   21.00] ------------[ cut here ]------------\n\
[   21.00] WARNING: CPU: 0 PID: 30 at fs/ext4/page-io.c:231 ext4_put_io_end_defer+0xf2/0x140 [ext4]\n\
[   21.00] Call Trace:\n\
[   21.00]  ext4_end_bio+0x1/0x2\n";
        let f = scan_kernel_log(log);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].class, KernelLogClass::Warn);
        // An orphan trace after other lines still counts.
        assert_eq!(
            scan_kernel_log("[ 1.0] hello\n[ 1.1] Call Trace:\n dump_stack+0x1\n").len(),
            1
        );
    }
}
