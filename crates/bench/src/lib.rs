//! `e4race-bench`: blkrec vs qemu-storage-daemon, each driven directly through a guest-less
//! vhost-user-blk frontend (`blkrec::frontend`).
//!
//! For each queue count and peer, the tool creates a fresh, fully written image, starts the
//! peer as a child process, connects, runs every workload over that one connection (reading
//! the peer's CPU time from `/proc/PID/stat` around each), reads the whole disk back through
//! the peer to verify it, stops the peer, and checks the image file once more on the host.
//!
//! With `--socket` ([`ExternalBackend`]) it drives a backend someone else started instead:
//! a fill pass writes the pattern over the whole device, then the workloads run and the
//! whole device is read back through the socket (no host-side image check, no log size).

pub mod crash;
pub mod pattern;
pub mod peer;
pub mod report;
pub mod stats;
pub mod workload;

use blkrec::frontend::{BlkClient, ClientOptions, FrontendError};
use pattern::{Pattern, Rng, BLOCK};
use peer::{BlkrecBin, PeerFiles, PeerKind, PeerLaunch, PeerProcess};
use report::{InstanceReport, Report, RunResult};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use workload::{DiskModel, Limit, Workload};

/// Errors that stop the benchmark (per-peer failures are recorded in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad options.
    #[error("{0}")]
    Usage(String),
    /// qemu-storage-daemon is needed but not found.
    #[error("qemu-storage-daemon not found ({0}): install it (Debian: `apt-get install qemu-system-common`), pass --qsd PATH, or leave the qsd peers out with --peers blkrec-hash,blkrec-data")]
    QsdMissing(String),
    /// A peer could not be started.
    #[error("cannot start {what}: {source}")]
    Spawn {
        /// Executable.
        what: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// A peer exited before its socket appeared.
    #[error("{peer} exited before creating its socket ({status}); its stderr: {stderr}")]
    PeerExited {
        /// Peer.
        peer: &'static str,
        /// Exit status.
        status: String,
        /// Tail of its stderr.
        stderr: String,
    },
    /// The socket never appeared.
    #[error("{peer}: socket {} did not appear within {waited:?}; its stderr: {stderr}", socket.display())]
    SocketTimeout {
        /// Peer.
        peer: &'static str,
        /// Socket path.
        socket: PathBuf,
        /// How long we waited.
        waited: Duration,
        /// Tail of its stderr.
        stderr: String,
    },
    /// Talking to the peer failed.
    #[error("{peer}: {what}: {source}")]
    Frontend {
        /// Peer.
        peer: &'static str,
        /// Step.
        what: String,
        /// Error.
        #[source]
        source: FrontendError,
    },
    /// The external backend (`--socket`) cannot be used as it is.
    #[error("--socket {}: {problem}; {fix}", socket.display())]
    External {
        /// Its socket.
        socket: PathBuf,
        /// What is wrong.
        problem: String,
        /// What to do about it.
        fix: String,
    },
    /// Connecting to the external backend (`--socket`) failed.
    #[error("--socket {}: cannot connect with {queues} queue(s): {source}; check that the backend is running, serves vhost-user-blk on this socket, supports {queues} queue(s) (else pass a smaller --queues) and still accepts a connection (blkrec serves exactly one, then exits)", socket.display())]
    ExternalConnect {
        /// Its socket.
        socket: PathBuf,
        /// Queues asked for.
        queues: u16,
        /// Error.
        #[source]
        source: FrontendError,
    },
    /// File system trouble.
    #[error("cannot {what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Image size in MiB.
    pub size_mib: u64,
    /// When each workload stops.
    pub limit: Limit,
    /// Workloads, in run order.
    pub workloads: Vec<Workload>,
    /// Queue counts.
    pub queues: Vec<u16>,
    /// Peers.
    pub peers: Vec<PeerKind>,
    /// Working directory (images, sockets, logs); a temporary one if `None`.
    pub dir: Option<PathBuf>,
    /// Keep the per-peer files.
    pub keep: bool,
    /// RNG seed (same offsets for every peer).
    pub seed: u64,
    /// How to run blkrec: `auto`, `builtin` or a path.
    pub blkrec: String,
    /// qemu-storage-daemon path (default: from PATH).
    pub qsd: Option<PathBuf>,
    /// Timeout for a peer's socket and for any single completion.
    pub timeout: Duration,
    /// Drive this already-running backend instead of starting peers.
    pub external: Option<ExternalBackend>,
    /// How many times to run every peer (the table shows medians when more than one).
    pub rounds: u32,
}

/// A vhost-user-blk backend started by someone else (`--socket`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalBackend {
    /// Its vhost-user socket.
    pub socket: PathBuf,
    /// Its process, to read its CPU time from `/proc/PID/stat` (none: CPU is not reported).
    pub pid: Option<u32>,
    /// Name shown in the report's peer column (`--socket-name`, default `external`).
    pub name: String,
}

/// Largest external device the bench takes on: it fills and reads back every block, and
/// keeps 9 bytes of state per 4 KiB block.
pub const MAX_EXTERNAL_BYTES: u64 = 64 << 30;

/// virtio-blk feature bits the external path looks at (virtio 1.2 §5.2.3).
const VIRTIO_BLK_F_RO: u64 = 5;
const VIRTIO_BLK_F_MQ: u64 = 12;

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            size_mib: 256,
            limit: Limit::Duration(Duration::from_secs(5)),
            workloads: Workload::ALL.to_vec(),
            queues: vec![1, 2],
            peers: PeerKind::ALL.to_vec(),
            dir: None,
            keep: false,
            seed: 1,
            blkrec: "auto".into(),
            qsd: None,
            timeout: Duration::from_secs(10),
            external: None,
            rounds: 1,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// Runs the benchmark. Progress goes to stderr.
pub fn run(cfg: &BenchConfig) -> Result<Report, BenchError> {
    if cfg.workloads.is_empty() || cfg.queues.is_empty() {
        return Err(BenchError::Usage(
            "need at least one workload and queue count".into(),
        ));
    }
    if let Some(q) = cfg.queues.iter().find(|&&q| q == 0 || q > 16) {
        return Err(BenchError::Usage(format!("--queues {q}: must be 1..=16")));
    }
    if cfg.rounds == 0 || cfg.rounds > 20 {
        return Err(BenchError::Usage(format!(
            "--rounds {}: must be 1..=20",
            cfg.rounds
        )));
    }
    if let Some(ext) = &cfg.external {
        if cfg.rounds > 1 {
            return Err(BenchError::Usage(
                "--rounds applies to the started peers, not to --socket (run the bench again)"
                    .into(),
            ));
        }
        return run_external(cfg, ext);
    }
    if cfg.peers.is_empty() {
        return Err(BenchError::Usage("need at least one peer".into()));
    }
    if cfg.size_mib < 16 {
        return Err(BenchError::Usage("--size-mib must be at least 16".into()));
    }
    let qsd = if cfg.peers.iter().any(|p| p.is_qsd()) {
        Some(peer::find_qsd(cfg.qsd.as_deref())?)
    } else {
        None
    };
    let blkrec = if cfg.peers.iter().any(|p| !p.is_qsd()) {
        Some(BlkrecBin::resolve(&cfg.blkrec)?)
    } else {
        None
    };
    let tmp;
    let root: PathBuf = match &cfg.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(io_err(format!("create {}", d.display())))?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("e4race-bench-")
                .tempdir()
                .map_err(io_err("create a temporary directory"))?;
            tmp.path().to_path_buf()
        }
    };
    let mut report = Report::new(cfg, blkrec.as_ref(), qsd.as_deref(), &root);
    let pattern = Pattern::new(cfg.seed);
    // Rounds are the outer loop, so that a slow spell of the machine hits every peer of one
    // round alike rather than one peer in every round.
    for (round, &queues) in (0..cfg.rounds).flat_map(|r| cfg.queues.iter().map(move |q| (r, q))) {
        for &kind in &cfg.peers {
            let round_note = if cfg.rounds > 1 {
                format!("round {}/{}: ", round + 1, cfg.rounds)
            } else {
                String::new()
            };
            eprintln!("== {round_note}{kind}, {queues} queue(s)");
            let dir = root.join(format!("{kind}-q{queues}-r{round}"));
            std::fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
            let launch = PeerLaunch {
                kind,
                files: PeerFiles::in_dir(&dir),
                num_queues: queues,
                blkrec: blkrec.clone(),
                qsd: qsd.clone(),
                start_timeout: cfg.timeout,
            };
            let (mut inst, mut results) = run_instance(cfg, &launch, &pattern);
            inst.round = round;
            for r in &mut results {
                r.round = round;
            }
            if let Some(e) = &inst.error {
                eprintln!("   {kind} q{queues}: {e}");
            }
            report.instances.push(inst);
            report.results.extend(results);
            if !cfg.keep {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    report.compute_ratios();
    Ok(report)
}

/// Drives an external backend: once per queue count (each a new connection, so the backend
/// must accept several in a row for more than one; blkrec serves one), fill pass, workloads,
/// read-back. Nothing is started, created or checked on the host.
fn run_external(cfg: &BenchConfig, ext: &ExternalBackend) -> Result<Report, BenchError> {
    check_external(ext)?;
    let mut report = Report::new(cfg, None, None, Path::new("n/a (external)"));
    report.socket = Some(ext.socket.display().to_string());
    report.size_mib = 0;
    let pattern = Pattern::new(cfg.seed);
    for &queues in &cfg.queues {
        eprintln!(
            "== {} ({}), {queues} queue(s)",
            ext.name,
            ext.socket.display()
        );
        let mut inst = InstanceReport::new(PeerKind::External, queues);
        inst.label = Some(ext.name.clone());
        inst.cmdline = format!("(external) {}", ext.socket.display());
        let mut results = Vec::new();
        let mut device_bytes = None;
        let steps = external_steps(
            cfg,
            ext,
            queues,
            &pattern,
            &mut inst,
            &mut results,
            &mut device_bytes,
        );
        if let Some(bytes) = device_bytes {
            report.size_mib = bytes >> 20;
        }
        if let Err(e) = steps {
            eprintln!("   {} q{queues}: {e}", ext.name);
            inst.error = Some(format!("failed: {e}"));
        }
        report.instances.push(inst);
        report.results.extend(results);
    }
    report.compute_ratios();
    Ok(report)
}

/// What can be checked before connecting: the socket, the PID and the name.
fn check_external(ext: &ExternalBackend) -> Result<(), BenchError> {
    let bad = |problem: String, fix: &str| BenchError::External {
        socket: ext.socket.clone(),
        problem,
        fix: fix.to_owned(),
    };
    match std::fs::metadata(&ext.socket) {
        Ok(m) if m.file_type().is_socket() => {}
        Ok(_) => {
            return Err(bad(
                "not a Unix socket".into(),
                "pass the vhost-user socket the backend listens on",
            ))
        }
        Err(e) => {
            return Err(bad(
                format!("no such socket ({e})"),
                "start the vhost-user-blk backend first, then pass the socket it listens on",
            ))
        }
    }
    let name = ext.name.as_str();
    if name.trim().is_empty() || name.len() > 64 || name.chars().any(|c| c == '|' || c.is_control())
    {
        return Err(BenchError::Usage(format!(
            "--socket-name {name:?}: use 1 to 64 characters without `|` or control characters"
        )));
    }
    if let Some(pid) = ext.pid {
        if let Err(e) = peer::cpu_seconds(&format!("/proc/{pid}/stat")) {
            return Err(BenchError::Usage(format!(
                "--socket-pid {pid}: cannot read that process's CPU time ({e}); pass the PID of the running backend, or leave --socket-pid out (CPU is then not reported)"
            )));
        }
    }
    Ok(())
}

/// One connection to the external backend with `queues` queues. Sets `device_bytes` as soon
/// as the device size is known.
fn external_steps(
    cfg: &BenchConfig,
    ext: &ExternalBackend,
    queues: u16,
    pattern: &Pattern,
    inst: &mut InstanceReport,
    results: &mut Vec<RunResult>,
    device_size: &mut Option<u64>,
) -> Result<(), BenchError> {
    let fe = |what: &str| {
        let what = what.to_owned();
        move |source| BenchError::Frontend {
            peer: PeerKind::External.name(),
            what,
            source,
        }
    };
    let bad = |problem: String, fix: &str| BenchError::External {
        socket: ext.socket.clone(),
        problem,
        fix: fix.to_owned(),
    };
    let opts = ClientOptions {
        num_queues: queues,
        queue_size: 128,
        max_io: 1 << 20,
        queue_depth: 32,
        event_idx: true,
        timeout: cfg.timeout,
    };
    let mut client =
        BlkClient::connect(&ext.socket, &opts).map_err(|source| BenchError::ExternalConnect {
            socket: ext.socket.clone(),
            queues,
            source,
        })?;
    // connect() already refuses a backend whose GET_QUEUE_NUM is too low; the config space
    // must agree (without VIRTIO_BLK_F_MQ there is exactly one queue).
    let offered = if client.acked_features() & (1 << VIRTIO_BLK_F_MQ) != 0 {
        client.config().num_queues
    } else {
        1
    };
    if offered < queues {
        return Err(bad(
            format!("the backend offers {offered} request queue(s), --queues asked for {queues}"),
            "start the backend with more queues, or pass a smaller --queues",
        ));
    }
    if client.acked_features() & (1 << VIRTIO_BLK_F_RO) != 0 {
        return Err(bad(
            "the device is read-only".into(),
            "export it writable: the bench writes the whole device",
        ));
    }
    let device_bytes = client.capacity().saturating_mul(512);
    *device_size = Some(device_bytes);
    let blocks = device_bytes / BLOCK as u64;
    if blocks == 0 {
        return Err(bad(
            format!("the device has {device_bytes} bytes, less than one 4 KiB block"),
            "give the backend a larger device",
        ));
    }
    if device_bytes > MAX_EXTERNAL_BYTES {
        return Err(bad(
            format!(
                "the device has {} MiB; the bench fills and reads back all of it and handles at most {} MiB",
                device_bytes >> 20,
                MAX_EXTERNAL_BYTES >> 20
            ),
            "give the backend a smaller device (a few GiB are plenty)",
        ));
    }
    inst.max_io = client.max_io();
    inst.cmdline = format!(
        "(external) {}, {} MiB device ({device_bytes} bytes)",
        ext.socket.display(),
        device_bytes >> 20
    );
    let mut disk = DiskModel::new(pattern.clone(), blocks);
    eprintln!(
        "   fill: writing all {blocks} blocks ({} MiB) so the contents are known",
        device_bytes >> 20
    );
    let failed =
        workload::fill(&mut client, &disk, usize::from(queues)).map_err(fe("fill pass"))?;
    if failed > 0 {
        return Err(bad(
            format!("{failed} writes of the fill pass failed"),
            "check the backend's log; the device must be writable",
        ));
    }
    let cpu = || -> Result<Option<f64>, BenchError> {
        ext.pid
            .map(|pid| peer::cpu_seconds(&format!("/proc/{pid}/stat")))
            .transpose()
    };
    let mut rng = Rng::new(cfg.seed);
    for &wl in &cfg.workloads {
        let (cpu0, me0) = (cpu()?, peer::cpu_seconds("/proc/self/stat")?);
        let raw = workload::run(
            &mut client,
            &mut disk,
            wl,
            usize::from(queues),
            cfg.limit,
            &mut rng,
        )
        .map_err(fe(wl.name()))?;
        let (cpu1, me) = (cpu()?, peer::cpu_seconds("/proc/self/stat")? - me0);
        let used = match (cpu0, cpu1) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let mut r =
            RunResult::from_raw(PeerKind::External, wl, queues, raw, used.unwrap_or(0.0), me);
        r.label = Some(ext.name.clone());
        if used.is_none() {
            // Unknown, not zero.
            r.backend_cpu_s_per_gib = None;
        }
        progress(&r, used.is_some());
        results.push(r);
    }
    let v = workload::verify(&mut client, &disk, usize::from(queues)).map_err(fe("verify pass"))?;
    eprintln!(
        "   verify: {} blocks read back, {} rewritten, {} mismatches, {} errors",
        v.blocks_checked, v.blocks_rewritten, v.mismatches, v.errors
    );
    inst.verify = Some(v);
    client.shutdown().map_err(fe("shutdown"))?;
    Ok(())
}

/// One progress line per workload on stderr.
fn progress(r: &RunResult, cpu_known: bool) {
    let cpu = if cpu_known {
        format!("{:.2} s", r.backend_cpu_s)
    } else {
        "n/a".to_owned()
    };
    eprintln!(
        "   {:<18} {:>9.0} IOPS {:>8.1} MiB/s  p50 {:>7.1} µs  p99 {:>8.1} µs  cpu {cpu}{}",
        r.workload.name(),
        r.iops,
        r.mib_s,
        r.lat_p50_us.unwrap_or(f64::NAN),
        r.lat_p99_us.unwrap_or(f64::NAN),
        if r.ok() { "" } else { "  (ERRORS)" }
    );
}

/// Runs all workloads on one peer instance. Never fails: problems end up in the instance
/// report (`error`), with whatever results were gathered before.
fn run_instance(
    cfg: &BenchConfig,
    launch: &PeerLaunch,
    pattern: &Pattern,
) -> (InstanceReport, Vec<RunResult>) {
    let mut inst = InstanceReport::new(launch.kind, launch.num_queues);
    let mut results = Vec::new();
    if let Err(e) = instance_steps(cfg, launch, pattern, &mut inst, &mut results) {
        let msg = e.to_string();
        inst.error = Some(
            if launch.kind == PeerKind::QsdLogwrites && results.is_empty() {
                format!("not available: {msg}")
            } else {
                format!("failed: {msg}")
            },
        );
    }
    (inst, results)
}

fn instance_steps(
    cfg: &BenchConfig,
    launch: &PeerLaunch,
    pattern: &Pattern,
    inst: &mut InstanceReport,
    results: &mut Vec<RunResult>,
) -> Result<(), BenchError> {
    let kind = launch.kind;
    let files = &launch.files;
    let blocks = cfg.size_mib * (1 << 20) / BLOCK as u64;
    pattern
        .create_image(&files.image, blocks)
        .map_err(io_err(format!("create {}", files.image.display())))?;
    let mut disk = DiskModel::new(pattern.clone(), blocks);
    let proc = PeerProcess::start(launch)?;
    inst.cmdline = proc.cmdline.clone();
    let fe = |what: &str| {
        let what = what.to_owned();
        move |source| BenchError::Frontend {
            peer: kind.name(),
            what,
            source,
        }
    };
    let opts = ClientOptions {
        num_queues: launch.num_queues,
        queue_size: 128,
        max_io: 1 << 20,
        queue_depth: 32,
        event_idx: true,
        timeout: cfg.timeout,
    };
    let mut client = BlkClient::connect(&files.socket, &opts).map_err(fe("connect"))?;
    if client.capacity() != blocks * (BLOCK as u64 / 512) {
        return Err(BenchError::Frontend {
            peer: kind.name(),
            what: "check capacity".into(),
            source: FrontendError::Backend(format!(
                "device has {} sectors, image has {}",
                client.capacity(),
                blocks * 8
            )),
        });
    }
    inst.max_io = client.max_io();
    let mut rng = Rng::new(cfg.seed);
    for &wl in &cfg.workloads {
        let cpu0 = proc.cpu_seconds()?;
        let me0 = peer::cpu_seconds("/proc/self/stat")?;
        let raw = workload::run(
            &mut client,
            &mut disk,
            wl,
            usize::from(launch.num_queues),
            cfg.limit,
            &mut rng,
        )
        .map_err(fe(wl.name()))?;
        let cpu = proc.cpu_seconds()? - cpu0;
        let me = peer::cpu_seconds("/proc/self/stat")? - me0;
        let r = RunResult::from_raw(kind, wl, launch.num_queues, raw, cpu, me);
        progress(&r, true);
        results.push(r);
    }
    let v = workload::verify(&mut client, &disk, usize::from(launch.num_queues))
        .map_err(fe("verify pass"))?;
    eprintln!(
        "   verify: {} blocks read back, {} rewritten, {} mismatches, {} errors",
        v.blocks_checked, v.blocks_rewritten, v.mismatches, v.errors
    );
    inst.verify = Some(v);
    client.shutdown().map_err(fe("shutdown"))?;
    inst.exit = Some(proc.stop(Duration::from_secs(10)));
    inst.log_bytes = std::fs::metadata(&files.log).ok().map(|m| m.len());
    let (checked, bad) = pattern
        .check_image(&files.image, &disk.gens)
        .map_err(io_err(format!("read back {}", files.image.display())))?;
    inst.image_blocks_checked = checked;
    inst.image_mismatches = bad.len() as u64;
    Ok(())
}

/// Parses a comma-separated list where `all` means every value of `all`.
pub fn parse_list<T: std::str::FromStr<Err = String> + Copy>(
    s: &str,
    all: &[T],
) -> Result<Vec<T>, String> {
    if s.trim() == "all" {
        return Ok(all.to_vec());
    }
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::parse)
        .collect()
}
