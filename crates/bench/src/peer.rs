//! The backends under test, each started as a child process (so their CPU time can be read
//! from `/proc/PID/stat` the same way for all of them) and killed by a drop guard.

use crate::BenchError;
use std::fmt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// A backend configuration under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerKind {
    /// blkrec recording xxh3 hashes of written blocks (the default e4race mode).
    BlkrecHash,
    /// blkrec recording hashes and the written data (`--log-data`).
    BlkrecData,
    /// qemu-storage-daemon vhost-user-blk export (the baseline).
    Qsd,
    /// qemu-storage-daemon with a blklogwrites filter (the C peer that also logs data).
    QsdLogwrites,
    /// A backend someone else started (`--socket`); not in [`PeerKind::ALL`], since the
    /// bench does not launch it.
    External,
}

impl PeerKind {
    /// All peers, in table order.
    pub const ALL: [PeerKind; 4] = [
        PeerKind::BlkrecHash,
        PeerKind::BlkrecData,
        PeerKind::Qsd,
        PeerKind::QsdLogwrites,
    ];

    /// Name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::BlkrecHash => "blkrec-hash",
            PeerKind::BlkrecData => "blkrec-data",
            PeerKind::Qsd => "qsd",
            PeerKind::QsdLogwrites => "qsd-logwrites",
            PeerKind::External => "external",
        }
    }

    /// Whether this peer is qemu-storage-daemon.
    pub fn is_qsd(self) -> bool {
        matches!(self, PeerKind::Qsd | PeerKind::QsdLogwrites)
    }
}

impl fmt::Display for PeerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PeerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PeerKind::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown peer {s:?}; known: {}",
                    PeerKind::ALL.map(PeerKind::name).join(", ")
                )
            })
    }
}

/// How to run blkrec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlkrecBin {
    /// A `blkrec` executable.
    Binary(PathBuf),
    /// This executable's hidden `__blkrec` mode (same library code as the `blkrec` binary,
    /// `blkrec::run`), used when no `blkrec` binary is at hand.
    Builtin(PathBuf),
}

impl BlkrecBin {
    /// Resolves `--blkrec`: `auto` (a `blkrec` next to this executable, else builtin),
    /// `builtin`, or a path.
    pub fn resolve(spec: &str) -> Result<BlkrecBin, BenchError> {
        let exe = || {
            std::env::current_exe().map_err(|source| BenchError::Io {
                what: "find the path of this executable".into(),
                source,
            })
        };
        match spec {
            "builtin" => Ok(BlkrecBin::Builtin(exe()?)),
            "auto" => {
                let me = exe()?;
                let sibling = me.parent().map(|d| d.join("blkrec"));
                match sibling {
                    Some(s) if s.is_file() => Ok(BlkrecBin::Binary(s)),
                    _ => Ok(BlkrecBin::Builtin(me)),
                }
            }
            path => {
                let p = PathBuf::from(path);
                if p.is_file() {
                    Ok(BlkrecBin::Binary(p))
                } else {
                    Err(BenchError::Usage(format!(
                        "--blkrec {path}: no such file (build it with `cargo build -p blkrec`, or use `builtin`)"
                    )))
                }
            }
        }
    }

    /// Human-readable description.
    pub fn describe(&self) -> String {
        match self {
            BlkrecBin::Binary(p) => p.display().to_string(),
            BlkrecBin::Builtin(p) => format!("{} __blkrec (builtin)", p.display()),
        }
    }
}

/// Locates qemu-storage-daemon: an explicit path, or `qemu-storage-daemon` on `PATH`.
pub fn find_qsd(spec: Option<&Path>) -> Result<PathBuf, BenchError> {
    if let Some(p) = spec {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(BenchError::QsdMissing(format!(
                "{} does not exist",
                p.display()
            )))
        };
    }
    host_tools::find_host_tool("qemu-storage-daemon")
        .ok_or_else(|| BenchError::QsdMissing("not in PATH, /usr/sbin or /sbin".into()))
}

/// `qemu-storage-daemon --version`, first line.
pub fn qsd_version(qsd: &Path) -> Option<String> {
    let out = Command::new(qsd).arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_owned)
}

/// Where a peer instance keeps its files.
#[derive(Debug, Clone)]
pub struct PeerFiles {
    /// Raw image served.
    pub image: PathBuf,
    /// vhost-user socket.
    pub socket: PathBuf,
    /// Write log (blkrec's log or blklogwrites' log), if the peer keeps one.
    pub log: PathBuf,
    /// stderr of the peer.
    pub stderr: PathBuf,
}

impl PeerFiles {
    /// Standard names inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        PeerFiles {
            image: dir.join("disk.img"),
            socket: dir.join("vhost.sock"),
            log: dir.join("writes.log"),
            stderr: dir.join("stderr.txt"),
        }
    }
}

/// How to start a peer.
#[derive(Debug, Clone)]
pub struct PeerLaunch {
    /// Which peer.
    pub kind: PeerKind,
    /// Its files.
    pub files: PeerFiles,
    /// Request queues.
    pub num_queues: u16,
    /// blkrec executable (blkrec peers).
    pub blkrec: Option<BlkrecBin>,
    /// qemu-storage-daemon executable (qsd peers).
    pub qsd: Option<PathBuf>,
    /// How long to wait for the socket.
    pub start_timeout: Duration,
}

impl PeerLaunch {
    /// The command line that starts the peer.
    pub fn command(&self) -> Result<(PathBuf, Vec<String>), BenchError> {
        let f = &self.files;
        let p = |x: &Path| x.display().to_string();
        match self.kind {
            PeerKind::BlkrecHash | PeerKind::BlkrecData => {
                let (exe, mut args) = match &self.blkrec {
                    Some(BlkrecBin::Binary(b)) => (b.clone(), vec![]),
                    Some(BlkrecBin::Builtin(b)) => (b.clone(), vec!["__blkrec".to_owned()]),
                    None => return Err(BenchError::Usage("no blkrec executable".into())),
                };
                args.extend([
                    "--image".to_owned(),
                    p(&f.image),
                    "--socket".to_owned(),
                    p(&f.socket),
                    "--log".to_owned(),
                    p(&f.log),
                    "--num-queues".to_owned(),
                    self.num_queues.to_string(),
                ]);
                if self.kind == PeerKind::BlkrecData {
                    args.push("--log-data".to_owned());
                }
                Ok((exe, args))
            }
            PeerKind::External => Err(BenchError::Usage(
                "an external backend is not started by the bench".into(),
            )),
            PeerKind::Qsd | PeerKind::QsdLogwrites => {
                let exe = self
                    .qsd
                    .clone()
                    .ok_or_else(|| BenchError::QsdMissing("no path given".into()))?;
                // Commas in QEMU option values must be doubled.
                let q = |x: &Path| p(x).replace(',', ",,");
                let mut args = vec![
                    "--blockdev".to_owned(),
                    format!(
                        "driver=file,node-name=file0,filename={},cache.direct=off",
                        q(&f.image)
                    ),
                    "--blockdev".to_owned(),
                    "driver=raw,node-name=disk0,file=file0".to_owned(),
                ];
                let node = if self.kind == PeerKind::QsdLogwrites {
                    args.extend([
                        "--blockdev".to_owned(),
                        format!("driver=file,node-name=log0,filename={}", q(&f.log)),
                        "--blockdev".to_owned(),
                        "driver=blklogwrites,node-name=lw0,file=disk0,log=log0,log-sector-size=512"
                            .to_owned(),
                    ]);
                    "lw0"
                } else {
                    "disk0"
                };
                args.extend([
                    "--export".to_owned(),
                    format!(
                        "type=vhost-user-blk,id=exp0,node-name={node},addr.type=unix,addr.path={},writable=on,num-queues={}",
                        q(&f.socket),
                        self.num_queues
                    ),
                ]);
                Ok((exe, args))
            }
        }
    }
}

/// A running peer. Dropping it kills the process (SIGTERM, then SIGKILL).
#[derive(Debug)]
pub struct PeerProcess {
    kind: PeerKind,
    child: Option<Child>,
    pid: u32,
    stderr: PathBuf,
    /// The command line, for the report.
    pub cmdline: String,
}

/// Last `n` lines of a file (best effort).
pub fn tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

impl PeerProcess {
    /// Starts the peer and waits until its socket exists. (It is not probed by connecting:
    /// blkrec serves exactly one connection.)
    pub fn start(launch: &PeerLaunch) -> Result<PeerProcess, BenchError> {
        let (exe, args) = launch.command()?;
        let cmdline = std::iter::once(exe.display().to_string())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        let _ = std::fs::remove_file(&launch.files.socket);
        if launch.kind == PeerKind::QsdLogwrites {
            // blklogwrites writes its superblock into an existing file.
            std::fs::File::create(&launch.files.log).map_err(|source| BenchError::Io {
                what: format!("create {}", launch.files.log.display()),
                source,
            })?;
        }
        let stderr =
            std::fs::File::create(&launch.files.stderr).map_err(|source| BenchError::Io {
                what: format!("create {}", launch.files.stderr.display()),
                source,
            })?;
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                // Die with the bench, even if it is SIGKILLed and no destructor runs.
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().map_err(|source| BenchError::Spawn {
            what: exe.display().to_string(),
            source,
        })?;
        let mut peer = PeerProcess {
            kind: launch.kind,
            pid: child.id(),
            child: Some(child),
            stderr: launch.files.stderr.clone(),
            cmdline,
        };
        let t0 = Instant::now();
        loop {
            if let Ok(m) = std::fs::symlink_metadata(&launch.files.socket) {
                if m.file_type().is_socket() {
                    return Ok(peer);
                }
            }
            if let Some(c) = peer.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    peer.child = None;
                    return Err(BenchError::PeerExited {
                        peer: launch.kind.name(),
                        status: status.to_string(),
                        stderr: tail(&launch.files.stderr, 5),
                    });
                }
            }
            if t0.elapsed() > launch.start_timeout {
                return Err(BenchError::SocketTimeout {
                    peer: launch.kind.name(),
                    socket: launch.files.socket.clone(),
                    waited: launch.start_timeout,
                    stderr: tail(&launch.files.stderr, 5),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// CPU seconds (user + system, all threads) the process has used so far.
    pub fn cpu_seconds(&self) -> Result<f64, BenchError> {
        cpu_seconds(&format!("/proc/{}/stat", self.pid))
    }

    /// Stops the peer: waits up to `grace` for it to exit on its own (blkrec does when the
    /// frontend disconnects), then SIGTERM, then SIGKILL. Returns how it ended.
    pub fn stop(mut self, grace: Duration) -> String {
        let Some(mut child) = self.child.take() else {
            return "already gone".into();
        };
        let wait_for = |child: &mut Child, d: Duration| {
            let t0 = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(s)) => return Some(s.to_string()),
                    Ok(None) if t0.elapsed() < d => std::thread::sleep(Duration::from_millis(10)),
                    _ => return None,
                }
            }
        };
        if !self.kind.is_qsd() {
            if let Some(s) = wait_for(&mut child, grace) {
                return s;
            }
        }
        terminate(self.pid);
        match wait_for(&mut child, grace) {
            Some(s) => s,
            None => {
                let _ = child.kill();
                match child.wait() {
                    Ok(s) => format!("{s} (SIGKILL after SIGTERM was ignored)"),
                    Err(e) => format!("wait failed: {e}"),
                }
            }
        }
    }

    /// Tail of the peer's stderr.
    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr, 5)
    }
}

fn terminate(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(self.pid);
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(2) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn clk_tck() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` file, in seconds.
pub fn cpu_seconds(stat_path: &str) -> Result<f64, BenchError> {
    let s = std::fs::read_to_string(stat_path).map_err(|source| BenchError::Io {
        what: format!("read {stat_path}"),
        source,
    })?;
    parse_stat_ticks(&s)
        .map(|t| t as f64 / clk_tck())
        .ok_or_else(|| BenchError::Io {
            what: format!("parse {stat_path}"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, s),
        })
}

/// utime + stime in ticks from the text of `/proc/<pid>/stat`. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 → index 11, stime → 12.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing() {
        let s = "1234 (qemu (x) d) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 100 0 0";
        assert_eq!(parse_stat_ticks(s), Some(300));
        assert_eq!(parse_stat_ticks("garbage"), None);
        let me = cpu_seconds("/proc/self/stat");
        assert!(matches!(me, Ok(v) if v >= 0.0));
    }

    #[test]
    fn peer_names() {
        for p in PeerKind::ALL {
            assert_eq!(p.name().parse::<PeerKind>(), Ok(p));
        }
        assert!("nope".parse::<PeerKind>().is_err());
        for p in PeerKind::ALL {
            let j = serde_json::to_string(&p).expect("serialize");
            assert_eq!(j, format!("\"{}\"", p.name()));
        }
    }
}
