//! The e4race guest agent. It runs as `/init` of the guest's initramfs: it mounts the pseudo
//! file systems, loads the modules the host resolved, finds the control port, announces
//! itself and then executes the host's [`Request`]s one at a time until told to power off.
//!
//! Anything that goes wrong before the control channel is up is printed on the serial console
//! as a line starting with [`CONSOLE_ERROR_PREFIX`], which the host turns into a clear error.

pub mod defrag;
pub mod extents_flip;
pub mod fsync_only;
pub mod migrate;
pub mod msync_only;
pub mod race;
mod sys;
pub mod tagged;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use e4race_protocol::{
    AgentError, AgentMessage, BlockContent, BlockTag, Command, PatternResult, RaceResult, Reply,
    Request, WorkloadCall, CONTROL_PORT_NAME, TAG_BLOCK_SIZE,
};

/// Console lines the host parses.
pub const CONSOLE_ERROR_PREFIX: &str = "E4RACE-AGENT-ERROR:";
pub const CONSOLE_MISSING_PREFIX: &str = "E4RACE-MISSING-CONFIG:";
pub const CONSOLE_PROBE_OK: &str = "E4RACE-PROBE-OK";

type AResult<T> = Result<T, AgentError>;

/// A workload with its own parameter type, run by name (`Command::Workload`). The host
/// encodes [`GuestWorkload::Params`] and the agent decodes the same type, so the parameters
/// stay typed on both sides without a variant in the protocol. Register each workload in
/// `guest_workloads!` below; its file holds the type, this impl and the workload.
pub trait GuestWorkload {
    /// The name the host calls it by (its scenario's name).
    const NAME: &'static str;
    type Params: serde::Serialize + serde::de::DeserializeOwned;
    fn run(params: &Self::Params) -> Result<RaceResult, AgentError>;
}

/// The registry of [`GuestWorkload`]s: one line each.
macro_rules! guest_workloads {
    ($($w:ty),* $(,)?) => {
        /// Names of the workloads this agent can run by name.
        pub const WORKLOADS: &[&str] = &[$(<$w as GuestWorkload>::NAME),*];

        fn run_workload(call: WorkloadCall) -> AResult<RaceResult> {
            $(
                if call.name == <$w as GuestWorkload>::NAME {
                    let params = serde_json::from_value(call.params)
                        .map_err(|e| err(format!("{}'s parameters", call.name), e))?;
                    return <$w as GuestWorkload>::run(&params);
                }
            )*
            Err(err(
                "workload",
                format!(
                    "this agent has no workload {:?} (it has: {}); rebuild it with the host",
                    call.name,
                    WORKLOADS.join(", ")
                ),
            ))
        }
    };
}

guest_workloads! {
    extents_flip::ExtentsFlip,
    fsync_only::FsyncOnly,
    msync_only::MsyncOnly,
}

pub(crate) fn err(step: impl Into<String>, e: impl std::fmt::Display) -> AgentError {
    AgentError {
        step: step.into(),
        message: e.to_string(),
        errno: None,
    }
}

pub(crate) fn errno_err(step: impl Into<String>, e: nix::errno::Errno) -> AgentError {
    AgentError {
        step: step.into(),
        message: e.desc().to_string(),
        errno: Some(e as i32),
    }
}

pub(crate) fn io_err(step: impl Into<String>, e: std::io::Error) -> AgentError {
    AgentError {
        step: step.into(),
        errno: e.raw_os_error(),
        message: e.to_string(),
    }
}

/// The agent's entry point. Never returns: the guest powers off at the end.
pub fn main() -> ! {
    let pid1 = std::process::id() == 1;
    if pid1 {
        sys::mount_pseudo_filesystems();
    }
    let outcome = std::panic::catch_unwind(run);
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => console(&format!("{CONSOLE_ERROR_PREFIX} {e}")),
        Err(_) => console(&format!("{CONSOLE_ERROR_PREFIX} the agent panicked")),
    }
    sys::power_off()
}

/// A line on the serial console (init's stdout is /dev/console).
pub(crate) fn console(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "e4race-agent: {line}");
    let _ = out.flush();
}

fn run() -> AResult<()> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let modules = sys::load_modules()?;
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    // The accelerator probe only needs to know that the kernel reached userspace.
    if cmdline.split_whitespace().any(|w| w == "e4race.probe") {
        console(CONSOLE_PROBE_OK);
        return Ok(());
    }
    let missing = sys::missing_drivers();
    if !missing.is_empty() {
        console(&format!("{CONSOLE_MISSING_PREFIX} {}", missing.join(",")));
        return Ok(());
    }
    let port = sys::find_control_port(Duration::from_secs(10))?;
    // A virtio port can be open only once (drivers/char/virtio_console.c port_fops_open
    // returns EBUSY), so one read-write descriptor serves both directions.
    let tx = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&port)
        .map_err(|e| io_err(format!("opening {port}"), e))?;
    let rx = tx
        .try_clone()
        .map_err(|e| io_err(format!("duplicating {port}"), e))?;
    let mut chan = Channel { tx };
    let uptime_s = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    console(&format!(
        "ready on {port}, kernel {release}, modules {modules:?}"
    ));
    chan.send(&AgentMessage::Ready {
        kernel_release: release,
        uptime_s,
        modules,
    })?;
    for line in BufReader::new(rx).lines() {
        let line = line.map_err(|e| io_err("reading the control port", e))?;
        if line.trim().is_empty() {
            continue;
        }
        let req: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                // Without an id there is nobody to reply to; say it on the console.
                console(&format!("ignoring a malformed request ({e}): {line}"));
                continue;
            }
        };
        let id = req.id;
        let result = execute(&mut chan, req);
        chan.send(&AgentMessage::Reply { id, result })?;
    }
    Ok(())
}

pub(crate) struct Channel {
    tx: File,
}

impl Channel {
    pub(crate) fn send(&mut self, m: &AgentMessage) -> AResult<()> {
        self.tx
            .write_all(m.to_line().as_bytes())
            .map_err(|e| io_err("writing the control port", e))
    }

    /// A workload's note on request `id`.
    pub(crate) fn note(&mut self, id: u64, note: race::Note) {
        let _ = self.send(&match note {
            race::Note::Line(text) => AgentMessage::Progress { id, text },
            race::Note::RoundDone(record) => AgentMessage::RoundDone {
                id,
                round: record.round,
                record: Some(record.clone()),
            },
        });
    }
}

fn execute(chan: &mut Channel, req: Request) -> AResult<Reply> {
    match req.command {
        Command::Mkfs { device, args } => {
            let mut argv = vec!["/sbin/mkfs.ext4".to_string(), "-F".into(), "-q".into()];
            argv.extend(args);
            argv.push(device);
            let (status, stdout, stderr) = sys::exec(&argv)?;
            if status != 0 {
                return Err(err("mkfs.ext4", format!("exit {status}: {stderr}{stdout}")));
            }
            Ok(Reply::Done)
        }
        Command::Mount {
            device,
            target,
            options,
        } => {
            std::fs::create_dir_all(&target).map_err(|e| io_err(format!("mkdir {target}"), e))?;
            nix::mount::mount(
                Some(device.as_str()),
                target.as_str(),
                Some("ext4"),
                nix::mount::MsFlags::empty(),
                Some(options.as_str()).filter(|o| !o.is_empty()),
            )
            .map_err(|e| errno_err(format!("mount {device} on {target} -o {options}"), e))?;
            Ok(Reply::Done)
        }
        Command::Umount { target } => {
            nix::mount::umount(target.as_str())
                .map_err(|e| errno_err(format!("umount {target}"), e))?;
            Ok(Reply::Done)
        }
        Command::Sync => {
            nix::unistd::sync();
            Ok(Reply::Done)
        }
        Command::DropCaches => {
            sys::drop_caches()?;
            Ok(Reply::Done)
        }
        Command::Exec { argv } => {
            let (status, stdout, stderr) = sys::exec(&argv)?;
            Ok(Reply::Exec {
                status,
                stdout,
                stderr,
            })
        }
        Command::WritePattern {
            path,
            run_id,
            blocks,
        } => write_pattern(&path, run_id, blocks).map(Reply::Pattern),
        Command::MigrateMmap(p) => {
            let id = req.id;
            migrate::migrate_mmap(&p, &mut |n| chan.note(id, n)).map(Reply::Race)
        }
        Command::DefragMmap(p) => {
            let id = req.id;
            defrag::defrag_mmap(&p, &mut |n| chan.note(id, n)).map(Reply::Race)
        }
        Command::Workload(call) => run_workload(call).map(Reply::Race),
        Command::Dmesg => Ok(Reply::Dmesg {
            text: sys::read_kmsg(),
        }),
        Command::CrashKernel => {
            // sysrq must be enabled before the trigger accepts 'c' (Documentation/admin-guide/sysrq.rst).
            let _ = std::fs::write("/proc/sys/kernel/sysrq", "1");
            nix::unistd::sync();
            std::fs::write("/proc/sysrq-trigger", "c").map_err(|e| io_err("sysrq-trigger", e))?;
            Err(err("crash-kernel", "the kernel survived sysrq c"))
        }
        Command::PowerOff => sys::power_off(),
    }
}

/// Writes tagged blocks, fsyncs, drops caches and reads them back from the disk.
fn write_pattern(path: &str, run_id: u64, blocks: u64) -> AResult<PatternResult> {
    let tag = |lblk| BlockTag {
        run_id,
        file_id: 0,
        round: 0,
        lblk,
        generation: 0,
    };
    {
        let mut f = File::create(path).map_err(|e| io_err(format!("create {path}"), e))?;
        let mut buf = [0u8; TAG_BLOCK_SIZE];
        for lblk in 0..blocks {
            tag(lblk).encode(&mut buf);
            f.write_all(&buf)
                .map_err(|e| io_err(format!("write {path}"), e))?;
        }
        f.sync_all()
            .map_err(|e| io_err(format!("fsync {path}"), e))?;
    }
    sys::drop_caches()?;
    let mut f = File::open(path).map_err(|e| io_err(format!("open {path}"), e))?;
    let mut mismatched = Vec::new();
    let mut buf = [0u8; TAG_BLOCK_SIZE];
    for lblk in 0..blocks {
        let ok = f.read_exact(&mut buf).is_ok()
            && BlockTag::decode(&buf) == BlockContent::Tagged(tag(lblk));
        if !ok {
            mismatched.push(lblk);
        }
    }
    Ok(PatternResult {
        blocks_written: blocks,
        mismatched,
    })
}

/// Monotonic nanoseconds (CLOCK_MONOTONIC, the clock of the timing evidence).
pub(crate) fn now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}
