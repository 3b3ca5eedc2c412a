//! What the e4race host and its guest agent say to each other, defined once for both sides.
//!
//! The control channel is a virtio-serial port (`/dev/vport*`, named [`CONTROL_PORT_NAME`]).
//! Each message is one line of JSON. The host sends [`Request`]s; the agent answers each with
//! exactly one [`AgentMessage::Reply`] carrying the same id, and may send
//! [`AgentMessage::Progress`] lines in between. The agent announces itself with
//! [`AgentMessage::Ready`] before it reads any request.

pub mod tag;
pub mod workload;

use serde::{Deserialize, Serialize};

pub use tag::{BlockContent, BlockTag, TAG_BLOCK_SIZE};
pub use workload::*;

/// The name QEMU gives the control port (`-device virtserialport,name=...`); the guest sees it
/// in `/sys/class/virtio-ports/*/name`.
pub const CONTROL_PORT_NAME: &str = "org.e4race.control";

/// A command from the host, with the id its reply will carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub command: Command,
}

/// What the host can ask the agent to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Command {
    /// `mkfs.ext4` with the given extra arguments on `device`.
    Mkfs { device: String, args: Vec<String> },
    /// mount(2) `device` on `target` as ext4 with `options` (comma separated, may be empty).
    Mount {
        device: String,
        target: String,
        options: String,
    },
    /// umount(2).
    Umount { target: String },
    /// sync(2).
    Sync,
    /// `echo 3 > /proc/sys/vm/drop_caches`.
    DropCaches,
    /// Runs a program and returns its exit status and output.
    Exec { argv: Vec<String> },
    /// Writes `blocks` tagged 4 KiB blocks to `path`, fsyncs, drops caches and reads them
    /// back. The smoke test's workload.
    WritePattern {
        path: String,
        run_id: u64,
        blocks: u64,
    },
    /// Runs the migrate-mmap race workload.
    MigrateMmap(MigrateMmapParams),
    /// Runs the defrag-mmap race workload.
    DefragMmap(DefragMmapParams),
    /// Runs a workload that brings its own parameter type (see [`WorkloadCall`]); replies
    /// with a `Race` record.
    Workload(WorkloadCall),
    /// The kernel log so far (`/dev/kmsg` drained without blocking).
    Dmesg,
    /// Crashes the kernel on purpose with sysrq `c`. Used to test KERNEL-ERROR detection.
    CrashKernel,
    /// Syncs and powers the guest off. There is no reply when it works.
    PowerOff,
}

impl Command {
    /// The shape of a race workload (files, rounds, tags' run id and seed); `None` for the
    /// other commands.
    pub fn race_shape(&self) -> Option<&RaceShape> {
        match self {
            Command::MigrateMmap(p) => Some(&p.shape),
            Command::DefragMmap(p) => Some(&p.shape),
            _ => None,
        }
    }
}

/// A call of a workload registered in the agent by name. Its parameters are the workload's
/// own type (the agent's `GuestWorkload::Params`), encoded by the host and decoded by the
/// agent as that same Rust type: both sides name it through the trait, so a new workload adds
/// no variant here. `params` is only the type's JSON form on the wire, like every message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadCall {
    pub name: String,
    pub params: serde_json::Value,
}

/// What the agent sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "kebab-case")]
pub enum AgentMessage {
    /// The agent is up: modules are loaded and requests can be sent.
    Ready {
        kernel_release: String,
        /// Guest uptime in seconds when the agent got ready.
        uptime_s: f64,
        /// Modules the agent loaded, in order.
        modules: Vec<String>,
    },
    /// A line of progress for a long request.
    Progress { id: u64, text: String },
    /// A race workload finished round `round` (1-based): the host marks the write log here,
    /// ordered with the round's writes. `record` is the round's record as the final reply
    /// will hold it, so that a host that kills the guest later (`--kill-at`) still knows
    /// which blocks the finished rounds made durable.
    RoundDone {
        id: u64,
        round: u32,
        #[serde(default)]
        record: Option<RoundRecord>,
    },
    /// The one reply to request `id`.
    Reply {
        id: u64,
        result: Result<Reply, AgentError>,
    },
}

/// A failed request: which step failed and the OS error, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{step}: {message}")]
pub struct AgentError {
    pub step: String,
    pub message: String,
    pub errno: Option<i32>,
}

/// The successful result of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    Done,
    Exec {
        status: i32,
        stdout: String,
        stderr: String,
    },
    Pattern(PatternResult),
    /// What a race workload (migrate-mmap, defrag-mmap) did.
    Race(RaceResult),
    Dmesg {
        text: String,
    },
}

/// What `WritePattern` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatternResult {
    pub blocks_written: u64,
    /// Blocks that did not read back as the tag written there, by logical block.
    pub mismatched: Vec<u64>,
}

impl Request {
    /// One JSON line, newline included.
    pub fn to_line(&self) -> String {
        to_line(self)
    }
}

impl AgentMessage {
    pub fn to_line(&self) -> String {
        to_line(self)
    }
}

fn to_line<T: Serialize>(v: &T) -> String {
    // Serializing these plain data types cannot fail: no maps with non-string keys, no
    // custom Serialize impls.
    let mut s = serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        let r = Request {
            id: 7,
            command: Command::Mount {
                device: "/dev/vda".into(),
                target: "/mnt".into(),
                options: "nodelalloc".into(),
            },
        };
        let line = r.to_line();
        assert!(line.ends_with('\n'));
        assert!(line.contains("\"cmd\":\"mount\""), "{line}");
        let back: Request = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn reply_error_round_trip() {
        let m = AgentMessage::Reply {
            id: 3,
            result: Err(AgentError {
                step: "mount /dev/vda".into(),
                message: "EINVAL".into(),
                errno: Some(22),
            }),
        };
        let back: AgentMessage = serde_json::from_str(m.to_line().trim()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn unknown_command_is_an_error_not_a_panic() {
        assert!(serde_json::from_str::<Request>(r#"{"id":1,"cmd":"format-c"}"#).is_err());
    }
}
