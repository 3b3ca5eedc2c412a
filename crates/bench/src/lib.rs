//! `e4race-bench`: blkrec vs qemu-storage-daemon, each driven directly through a guest-less
//! vhost-user-blk frontend (`blkrec::frontend`).
//!
//! For each queue count and peer, the tool creates a fresh, fully written image, starts the
//! peer as a child process, connects, runs every workload over that one connection (reading
//! the peer's CPU time from `/proc/PID/stat` around each), reads the whole disk back through
//! the peer to verify it, stops the peer, and checks the image file once more on the host.

pub mod pattern;
pub mod peer;
pub mod report;
pub mod stats;
pub mod workload;

use blkrec::frontend::{BlkClient, ClientOptions, FrontendError};
use pattern::{Pattern, Rng, BLOCK};
use peer::{BlkrecBin, PeerFiles, PeerKind, PeerLaunch, PeerProcess};
use report::{InstanceReport, Report, RunResult};
use std::path::PathBuf;
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
}

/// A vhost-user-blk backend started by someone else (`--socket`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalBackend {
    /// Its vhost-user socket.
    pub socket: PathBuf,
    /// Its process, to read its CPU time from `/proc/PID/stat` (none: CPU is not reported).
    pub pid: Option<u32>,
}

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
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// Runs the benchmark. Progress goes to stderr.
pub fn run(cfg: &BenchConfig) -> Result<Report, BenchError> {
    if cfg.size_mib < 16 {
        return Err(BenchError::Usage("--size-mib must be at least 16".into()));
    }
    if cfg.workloads.is_empty() || cfg.queues.is_empty() || cfg.peers.is_empty() {
        return Err(BenchError::Usage(
            "need at least one workload, queue count and peer".into(),
        ));
    }
    if let Some(q) = cfg.queues.iter().find(|&&q| q == 0 || q > 16) {
        return Err(BenchError::Usage(format!("--queues {q}: must be 1..=16")));
    }
    if let Some(ext) = &cfg.external {
        return run_external(cfg, ext);
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
    for &queues in &cfg.queues {
        for &kind in &cfg.peers {
            eprintln!("== {kind}, {queues} queue(s)");
            let dir = root.join(format!("{kind}-q{queues}"));
            std::fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
            let launch = PeerLaunch {
                kind,
                files: PeerFiles::in_dir(&dir),
                num_queues: queues,
                blkrec: blkrec.clone(),
                qsd: qsd.clone(),
                start_timeout: cfg.timeout,
            };
            let (inst, results) = run_instance(cfg, &launch, &pattern);
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
    if !ext.socket.exists() {
        return Err(BenchError::Usage(format!(
            "--socket {}: no such socket; start the vhost-user-blk backend first",
            ext.socket.display()
        )));
    }
    let mut report = Report::new(cfg, None, None, &ext.socket);
    report.size_mib = 0;
    let pattern = Pattern::new(cfg.seed);
    for &queues in &cfg.queues {
        eprintln!("== external {}, {queues} queue(s)", ext.socket.display());
        let mut inst = InstanceReport::new(PeerKind::External, queues);
        inst.cmdline = format!("(external) {}", ext.socket.display());
        let mut results = Vec::new();
        if let Err(e) = external_steps(cfg, ext, queues, &pattern, &mut inst, &mut results) {
            eprintln!("   external q{queues}: {e}");
            inst.error = Some(format!("failed: {e}"));
        }
        report.instances.push(inst);
        report.results.extend(results);
    }
    report.compute_ratios();
    Ok(report)
}

fn external_steps(
    cfg: &BenchConfig,
    ext: &ExternalBackend,
    queues: u16,
    pattern: &Pattern,
    inst: &mut InstanceReport,
    results: &mut Vec<RunResult>,
) -> Result<(), BenchError> {
    let fe = |what: &str| {
        let what = what.to_owned();
        move |source| BenchError::Frontend {
            peer: PeerKind::External.name(),
            what,
            source,
        }
    };
    let opts = ClientOptions {
        num_queues: queues,
        queue_size: 128,
        max_io: 1 << 20,
        queue_depth: 32,
        event_idx: true,
        timeout: cfg.timeout,
    };
    let mut client = BlkClient::connect(&ext.socket, &opts).map_err(fe("connect"))?;
    let offered = client.config().num_queues;
    if offered < queues {
        return Err(BenchError::Usage(format!(
            "the backend offers {offered} queue(s), --queues asked for {queues}"
        )));
    }
    let blocks = client.capacity() / (BLOCK as u64 / 512);
    if blocks == 0 {
        return Err(BenchError::Usage(
            "the backend's device is smaller than 4 KiB".into(),
        ));
    }
    inst.max_io = client.max_io();
    inst.cmdline = format!(
        "(external) {}, {} MiB device",
        ext.socket.display(),
        (blocks * BLOCK as u64) >> 20
    );
    let mut disk = DiskModel::new(pattern.clone(), blocks);
    eprintln!("   fill: writing {blocks} blocks so the contents are known");
    let bad = workload::fill(&mut client, &disk, usize::from(queues)).map_err(fe("fill pass"))?;
    if bad > 0 {
        return Err(BenchError::Frontend {
            peer: PeerKind::External.name(),
            what: "fill pass".into(),
            source: FrontendError::Backend(format!("{bad} writes failed")),
        });
    }
    let cpu = || -> Result<f64, BenchError> {
        match ext.pid {
            Some(pid) => peer::cpu_seconds(&format!("/proc/{pid}/stat")),
            None => Ok(0.0),
        }
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
        let (used, me) = (cpu()? - cpu0, peer::cpu_seconds("/proc/self/stat")? - me0);
        let mut r = RunResult::from_raw(PeerKind::External, wl, queues, raw, used, me);
        if ext.pid.is_none() {
            // Unknown, not zero.
            r.backend_cpu_s_per_gib = None;
        }
        eprintln!(
            "   {:<18} {:>9.0} IOPS {:>8.1} MiB/s",
            wl.name(),
            r.iops,
            r.mib_s
        );
        results.push(r);
    }
    let v = workload::verify(&mut client, &disk, usize::from(queues)).map_err(fe("verify pass"))?;
    eprintln!(
        "   verify: {} blocks read back, {} mismatches, {} errors",
        v.blocks_checked, v.mismatches, v.errors
    );
    inst.verify = Some(v);
    client.shutdown().map_err(fe("shutdown"))?;
    Ok(())
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
        eprintln!(
            "   {:<18} {:>9.0} IOPS {:>8.1} MiB/s  p50 {:>7.1} µs  p99 {:>8.1} µs  cpu {:.2} s{}",
            wl.name(),
            r.iops,
            r.mib_s,
            r.lat_p50_us.unwrap_or(f64::NAN),
            r.lat_p99_us.unwrap_or(f64::NAN),
            r.backend_cpu_s,
            if r.ok() { "" } else { "  (ERRORS)" }
        );
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
