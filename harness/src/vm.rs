//! Booting a guest under QEMU: the command line from a typed configuration, the serial
//! console saved and watched, the control channel, and hard timeouts. QEMU is killed and
//! reaped on every path: `kill_on_drop` covers errors, timeouts and Ctrl-C (the run future is
//! dropped), and QEMU runs in its own process group so a terminal's Ctrl-C reaches us first.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use e4race_protocol::{AgentError, AgentMessage, Command, Reply, Request, CONTROL_PORT_NAME};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::console::{ConsoleEvent, ConsoleWatch};

/// How QEMU executes guest code.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's software emulator, multi-threaded (one host thread per vCPU).
    Tcg,
}

impl Accel {
    /// The name `--accel` takes and the report uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// How the test disk reaches the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskAttachment {
    /// QEMU's own virtio-blk on a raw image.
    QemuVirtioBlk { image: PathBuf },
    /// A vhost-user-blk backend listening on `socket`.
    VhostUser { socket: PathBuf, num_queues: u16 },
}

/// Everything QEMU's command line is built from.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub qemu: PathBuf,
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Extra kernel command line words after ours.
    pub extra_append: Vec<String>,
    pub disk: Option<DiskAttachment>,
    pub control_socket: PathBuf,
    /// qboot.rom when present: it skips SeaBIOS's probing (~1-2 s under TCG, docs/facts.md §1).
    pub bios: Option<PathBuf>,
}

/// What the agent says about a request before its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentNote<'a> {
    /// A progress line.
    Progress(&'a str),
    /// A race workload finished round N (0-based), with its record when the agent sent it.
    RoundDone(u32, Option<&'a e4race_protocol::RoundRecord>),
}

/// `sun_path`'s size on Linux: a unix socket path must be shorter than this (it ends in a NUL).
pub const SUN_PATH_MAX: usize = 108;

/// The longest socket name any run puts in its [`SocketDir`] (the KVM probe's control socket).
const LONGEST_SOCKET_NAME: &str = "probe-ctl.sock";

/// A short private directory (mode 0700) for a run's unix sockets: the vhost-user socket, the
/// control channel and the KVM probe's. Sockets cannot live in the run directory, whose path
/// (--runs-dir + run name) may be longer than `sun_path` allows. Removed when dropped.
#[derive(Debug)]
pub struct SocketDir {
    path: PathBuf,
}

impl SocketDir {
    /// `$XDG_RUNTIME_DIR/e4race-XXXXXX` when that is set and short enough, else
    /// `$TMPDIR/e4race-XXXXXX` (`/tmp` without TMPDIR).
    pub fn create() -> Result<SocketDir, VmError> {
        let base = socket_base(
            std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
            std::env::temp_dir(),
        )?;
        SocketDir::create_in(&base)
    }

    /// `base/e4race-XXXXXX`; an error naming TMPDIR if its sockets' paths would be too long.
    pub fn create_in(base: &Path) -> Result<SocketDir, VmError> {
        check_base(base)?;
        let template = base.join("e4race-XXXXXX");
        let path = nix::unistd::mkdtemp(&template).map_err(|e| VmError::Io {
            what: format!(
                "creating a directory for the run's sockets in {} (set TMPDIR to a writable directory)",
                base.display()
            ),
            source: std::io::Error::from(e),
        })?;
        Ok(SocketDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of the socket `name` in this directory.
    pub fn socket(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The length in bytes of the longest socket path a [`SocketDir`] under `base` can hold.
fn longest_socket_path(base: &Path) -> usize {
    base.join("e4race-XXXXXX")
        .join(LONGEST_SOCKET_NAME)
        .as_os_str()
        .len()
}

fn check_base(base: &Path) -> Result<(), VmError> {
    let longest = longest_socket_path(base);
    if longest >= SUN_PATH_MAX {
        return Err(VmError::SocketDirTooLong {
            base: base.to_path_buf(),
            longest,
        });
    }
    Ok(())
}

/// Where the socket directory goes: `xdg` (`$XDG_RUNTIME_DIR`) if it is an absolute, existing
/// directory short enough for socket paths, else `tmp` if that is short enough, else an error.
fn socket_base(xdg: Option<PathBuf>, tmp: PathBuf) -> Result<PathBuf, VmError> {
    if let Some(x) = xdg.filter(|x| x.is_absolute() && x.is_dir()) {
        if check_base(&x).is_ok() {
            return Ok(x);
        }
    }
    check_base(&tmp)?;
    Ok(tmp)
}

pub const QEMU_PACKAGE: &str = "qemu-system-x86";

/// Finds qemu-system-x86_64 in PATH, /usr/sbin or /sbin.
pub fn find_qemu() -> Result<PathBuf, VmError> {
    host_tools::find_host_tool("qemu-system-x86_64").ok_or(VmError::QemuMissing)
}

pub fn default_bios() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/share/qemu/qboot.rom");
    p.exists().then_some(p)
}

impl VmConfig {
    /// The full argument list (without argv[0]).
    pub fn to_args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        match self.accel {
            Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
            // MTTCG: one host thread per vCPU (docs/facts.md §1: real parallelism on 2 cores).
            // `max` without 5-level paging: with LA57 on, 6.12 guests under QEMU 7.2's TCG
            // double-faulted in kmem_cache_alloc (EFLAGS garbage) in 1 of 60 race runs and
            // oopsed on int3 during boot about 1 in 20; with la57=off, 120 of 120 runs passed
            // (docs/facts.md §8). ext4's races do not depend on the page-table depth.
            Accel::Tcg => push(&["-accel", "tcg,thread=multi", "-cpu", "max,la57=off"]),
        }
        let mem = format!("{}M", self.memory_mib);
        // vhost-user needs the guest memory in a shared, fd-backed region it can mmap.
        push(&[
            "-m",
            &mem,
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mem},share=on"),
            "-machine",
            "pc,memory-backend=mem",
            "-smp",
            &self.cpus.to_string(),
        ]);
        if let Some(b) = &self.bios {
            push(&["-bios", &b.to_string_lossy()]);
        }
        let mut append = vec![
            "console=ttyS0".to_string(),
            // Level 5 keeps WARN (KERN_WARNING = 4) on the console, and boot chatter off it.
            "loglevel=5".into(),
            // Reboot at once on panic; with -no-reboot QEMU then exits.
            "panic=-1".into(),
            "rdinit=/init".into(),
            "mitigations=off".into(),
            // The host scans the guest's dmesg: a 16 MiB ring buffer (kernel/printk/printk.c
            // log_buf_len=, rounded to a power of two) keeps hundreds of splats without
            // wrapping, where the default drops the first ones.
            "log_buf_len=16M".into(),
        ];
        append.extend(self.extra_append.iter().cloned());
        push(&[
            "-kernel",
            &self.kernel.to_string_lossy(),
            "-initrd",
            &self.initrd.to_string_lossy(),
            "-append",
            &append.join(" "),
            "-serial",
            "stdio",
        ]);
        match &self.disk {
            Some(DiskAttachment::QemuVirtioBlk { image }) => push(&[
                "-drive",
                &format!(
                    "file={},if=none,id=disk0,format=raw,cache=writeback",
                    image.display()
                ),
                "-device",
                "virtio-blk-pci,drive=disk0",
            ]),
            Some(DiskAttachment::VhostUser { socket, num_queues }) => push(&[
                "-chardev",
                &format!("socket,id=blk0,path={}", socket.display()),
                "-device",
                // num-queues must be pinned: QEMU's default (one per vCPU) is refused by a
                // backend offering fewer (docs/facts.md §2).
                &format!("vhost-user-blk-pci,chardev=blk0,num-queues={num_queues}"),
            ]),
            None => {}
        }
        push(&[
            "-device",
            "virtio-serial-pci,id=vser0",
            "-chardev",
            &format!("socket,id=ctl,path={}", self.control_socket.display()),
            "-device",
            &format!("virtserialport,bus=vser0.0,chardev=ctl,name={CONTROL_PORT_NAME}"),
        ]);
        a
    }

    /// A shell-quoted command line, for logs and repro scripts.
    pub fn shell_line(&self) -> String {
        std::iter::once(self.qemu.to_string_lossy().into_owned())
            .chain(self.to_args())
            .map(|s| shell_quote(&s))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("QEMU is not installed: qemu-system-x86_64 is not in PATH, /usr/sbin or /sbin. Install the Debian package `{QEMU_PACKAGE}` (apt-get install {QEMU_PACKAGE})")]
    QemuMissing,
    #[error("the kernel failed: {headline}\n--- console ---\n{excerpt}")]
    KernelError { headline: String, excerpt: String },
    #[error("the kernel lacks {}: rebuild it with these options =y (or =m and pass --modules-dir)", .0.join(", "))]
    MissingConfig(Vec<String>),
    #[error("the guest agent failed before the control channel was up: {0}")]
    AgentStartup(String),
    #[error(
        "timed out after {secs} s waiting for {step}; the guest hung. Last console lines:\n{tail}"
    )]
    Timeout {
        step: String,
        secs: u64,
        tail: String,
    },
    #[error(
        "QEMU exited ({status}) during {step}. QEMU said: {stderr}\nLast console lines:\n{tail}"
    )]
    QemuExited {
        step: String,
        status: String,
        stderr: String,
        tail: String,
    },
    #[error("the agent could not {0}")]
    Agent(AgentError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("the agent sent a malformed message ({detail}): {line}")]
    Protocol { detail: String, line: String },
    #[error("interrupted")]
    Interrupted,
    #[error(
        "a run's unix sockets go in a private directory under {}, but that gives socket paths of \
         {longest} bytes and a unix socket path must be shorter than {SUN_PATH_MAX} bytes: set \
         TMPDIR to a shorter directory (e.g. TMPDIR=/tmp)",
        base.display()
    )]
    SocketDirTooLong { base: PathBuf, longest: usize },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

/// A running guest.
pub struct Vm {
    child: tokio::process::Child,
    ctl_tx: tokio::net::unix::OwnedWriteHalf,
    ctl_rx: mpsc::Receiver<Result<AgentMessage, VmError>>,
    console: ConsoleWatch,
    agent_log: std::fs::File,
    next_id: u64,
    run_dir: PathBuf,
    pub ready: AgentReady,
}

/// What the agent said when it came up.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentReady {
    pub kernel_release: String,
    pub uptime_s: f64,
    pub modules: Vec<String>,
    pub boot_s: f64,
}

impl Vm {
    /// Starts QEMU and waits (at most `boot_timeout`) for the agent's Ready.
    pub async fn start(
        cfg: &VmConfig,
        run_dir: &Path,
        boot_timeout: Duration,
    ) -> Result<Vm, VmError> {
        let t0 = std::time::Instant::now();
        let _ = std::fs::remove_file(&cfg.control_socket);
        let listener = UnixListener::bind(&cfg.control_socket)
            .map_err(io(format!("listening on {}", cfg.control_socket.display())))?;
        std::fs::write(run_dir.join("qemu.cmdline"), cfg.shell_line() + "\n")
            .map_err(io("writing qemu.cmdline"))?;
        let stderr_file = std::fs::File::create(run_dir.join("qemu.stderr"))
            .map_err(io("creating qemu.stderr"))?;
        let mut child = tokio::process::Command::new(&cfg.qemu)
            .args(cfg.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr_file))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    VmError::QemuMissing
                } else {
                    VmError::Io {
                        what: format!("starting {}", cfg.qemu.display()),
                        source: e,
                    }
                }
            })?;
        let stdout = child.stdout.take().ok_or_else(|| VmError::Io {
            what: "QEMU's stdout".into(),
            source: std::io::Error::other("not piped"),
        })?;
        let console = ConsoleWatch::spawn(stdout, run_dir.join("console.log"))
            .map_err(io("starting the console log"))?;
        let agent_log = std::fs::File::create(run_dir.join("agent.jsonl"))
            .map_err(io("creating agent.jsonl"))?;

        let mut vm_parts = (child, console);
        let accept = async {
            let (stream, _) = listener
                .accept()
                .await
                .map_err(io("accepting the control connection"))?;
            Ok::<UnixStream, VmError>(stream)
        };
        let stream = race_guest(
            &mut vm_parts.0,
            &vm_parts.1,
            run_dir,
            "the control connection",
            boot_timeout,
            accept,
        )
        .await?;
        let (rd, ctl_tx) = stream.into_split();
        let (tx, ctl_rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut lines = BufReader::new(rd).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let m =
                    serde_json::from_str::<AgentMessage>(&line).map_err(|e| VmError::Protocol {
                        detail: e.to_string(),
                        line: line.chars().take(300).collect(),
                    });
                if tx.send(m).await.is_err() {
                    break;
                }
            }
        });
        let (child, console) = vm_parts;
        let mut vm = Vm {
            child,
            ctl_tx,
            ctl_rx,
            console,
            agent_log,
            next_id: 1,
            run_dir: run_dir.to_path_buf(),
            ready: AgentReady {
                kernel_release: String::new(),
                uptime_s: 0.0,
                modules: vec![],
                boot_s: 0.0,
            },
        };
        let remaining = boot_timeout.saturating_sub(t0.elapsed());
        let msg = vm.next_message("the agent's Ready", remaining).await?;
        match msg {
            AgentMessage::Ready {
                kernel_release,
                uptime_s,
                modules,
            } => {
                vm.ready = AgentReady {
                    kernel_release,
                    uptime_s,
                    modules,
                    boot_s: t0.elapsed().as_secs_f64(),
                };
                Ok(vm)
            }
            other => Err(VmError::Protocol {
                detail: "expected Ready".into(),
                line: format!("{other:?}"),
            }),
        }
    }

    async fn next_message(
        &mut self,
        step: &str,
        timeout: Duration,
    ) -> Result<AgentMessage, VmError> {
        let rx = &mut self.ctl_rx;
        let fut = async {
            match rx.recv().await {
                Some(m) => m,
                None => std::future::pending().await,
            }
        };
        let m = race_guest(
            &mut self.child,
            &self.console,
            &self.run_dir,
            step,
            timeout,
            fut,
        )
        .await?;
        use std::io::Write;
        let _ = writeln!(
            self.agent_log,
            "{}",
            serde_json::to_string(&m).unwrap_or_default()
        );
        Ok(m)
    }

    /// Sends a command and waits for its reply, passing progress lines to `progress`.
    pub async fn request(
        &mut self,
        command: Command,
        timeout: Duration,
        on_note: &mut dyn FnMut(AgentNote<'_>),
    ) -> Result<Reply, VmError> {
        let id = self.next_id;
        self.next_id += 1;
        let step = command_name(&command);
        let req = Request { id, command };
        {
            use std::io::Write;
            let _ = writeln!(self.agent_log, "{}", req.to_line().trim_end());
        }
        self.ctl_tx
            .write_all(req.to_line().as_bytes())
            .await
            .map_err(io("writing to the control channel"))?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = match self.next_message(&step, left).await {
                // Say the whole budget, not what was left of it for the last message.
                Err(VmError::Timeout { step, tail, .. }) => {
                    return Err(VmError::Timeout {
                        step,
                        secs: timeout.as_secs(),
                        tail,
                    })
                }
                other => other?,
            };
            match msg {
                AgentMessage::Progress { text, .. } => on_note(AgentNote::Progress(&text)),
                AgentMessage::RoundDone { round, record, .. } => {
                    on_note(AgentNote::RoundDone(round, record.as_ref()))
                }
                AgentMessage::Reply { id: rid, result } if rid == id => {
                    return result.map_err(VmError::Agent);
                }
                other => {
                    return Err(VmError::Protocol {
                        detail: format!("expected the reply to request {id}"),
                        line: format!("{other:?}"),
                    })
                }
            }
        }
    }

    /// Asks the guest to power off and waits for QEMU to exit; kills it after `timeout`.
    /// QEMU's process id (None once it has been reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn power_off(mut self, timeout: Duration) -> Result<(), VmError> {
        let req = Request {
            id: self.next_id,
            command: Command::PowerOff,
        };
        let _ = self.ctl_tx.write_all(req.to_line().as_bytes()).await;
        let wait = async { self.child.wait().await.map_err(io("waiting for QEMU")) };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => {
                r?;
                // A panic while shutting down (say, in umount's aftermath) still counts.
                self.console.settle().await;
                if let Some(ConsoleEvent::KernelError { headline, excerpt }) = self.console.event()
                {
                    return Err(VmError::KernelError { headline, excerpt });
                }
                Ok(())
            }
            Err(_) => {
                let _ = self.child.kill().await;
                Err(VmError::Timeout {
                    step: "power off".into(),
                    secs: timeout.as_secs(),
                    tail: self.console.tail(30),
                })
            }
        }
    }
}

fn command_name(c: &Command) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.get("cmd").and_then(|s| s.as_str()).map(str::to_string))
        .unwrap_or_else(|| "a command".into())
}

/// Waits for `fut` while watching the guest: a kernel error on the console, an agent failure
/// printed before the channel was up, QEMU exiting, or the timeout all end the wait.
async fn race_guest<T>(
    child: &mut tokio::process::Child,
    console: &ConsoleWatch,
    run_dir: &Path,
    step: &str,
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, VmError>>,
) -> Result<T, VmError> {
    let mut events = console.subscribe();
    tokio::pin!(fut);
    let sleep = tokio::time::sleep(timeout);
    tokio::pin!(sleep);
    loop {
        if let Some(ev) = console.event() {
            // Let the rest of the oops or panic reach the console before cutting it.
            if matches!(ev, ConsoleEvent::KernelError { .. }) {
                console.settle().await;
            }
            return Err(match console.event().unwrap_or(ev) {
                ConsoleEvent::KernelError { headline, excerpt } => {
                    VmError::KernelError { headline, excerpt }
                }
                ConsoleEvent::MissingConfig(v) => VmError::MissingConfig(v),
                ConsoleEvent::AgentError(s) => VmError::AgentStartup(s),
            });
        }
        tokio::select! {
            r = &mut fut => return r,
            _ = events.changed() => continue,
            st = child.wait() => {
                console.settle().await;
                if console.event().is_some() { continue; }
                let stderr = std::fs::read_to_string(run_dir.join("qemu.stderr")).unwrap_or_default();
                return Err(VmError::QemuExited {
                    step: step.into(),
                    status: st.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                    stderr: stderr.trim().chars().take(2000).collect(),
                    tail: console.tail(30),
                });
            }
            _ = &mut sleep => {
                let _ = child.start_kill();
                return Err(VmError::Timeout { step: step.into(), secs: timeout.as_secs(), tail: console.tail(30) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory whose path is at least `len` bytes long, under `root`.
    fn deep_dir(root: &Path, len: usize) -> PathBuf {
        let mut p = root.to_path_buf();
        while p.as_os_str().len() < len {
            p.push("d".repeat(40));
        }
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn socket_dir_is_short_whatever_the_run_directory() {
        let root = std::env::temp_dir().join(format!("e4race-vm-unit-{}", std::process::id()));
        let run_dir = deep_dir(&root, 220);
        assert!(run_dir.as_os_str().len() >= 200);
        let sockets = SocketDir::create().unwrap();
        for name in ["blkrec.sock", "control.sock", LONGEST_SOCKET_NAME] {
            let s = sockets.socket(name);
            assert!(s.as_os_str().len() < SUN_PATH_MAX, "{}", s.display());
            assert!(!s.starts_with(&run_dir));
            // It really binds, where the run directory would not.
            let l = std::os::unix::net::UnixListener::bind(&s).unwrap();
            drop(l);
            assert!(std::os::unix::net::UnixListener::bind(run_dir.join(name)).is_err());
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(sockets.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let dir = sockets.path().to_path_buf();
        drop(sockets);
        assert!(
            !dir.exists(),
            "the socket directory is removed with its guard"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_too_long_tmpdir_is_a_clear_error() {
        let root = std::env::temp_dir().join(format!("e4race-vm-unit-tmp-{}", std::process::id()));
        let long = deep_dir(&root, 120);
        let e = SocketDir::create_in(&long).unwrap_err().to_string();
        assert!(e.contains("set TMPDIR to a shorter directory"), "{e}");
        assert!(e.contains("shorter than 108 bytes"), "{e}");
        // A long XDG_RUNTIME_DIR is skipped for a short TMPDIR; a long TMPDIR alone is an error.
        let short = std::env::temp_dir();
        assert_eq!(
            socket_base(Some(long.clone()), short.clone()).unwrap(),
            short
        );
        assert!(socket_base(None, long.clone()).is_err());
        assert_eq!(socket_base(Some(short.clone()), long).unwrap(), short);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
