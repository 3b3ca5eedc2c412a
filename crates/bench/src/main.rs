//! `e4race-bench`: see `--help`.

use clap::Parser;
use e4race_bench::peer::PeerKind;
use e4race_bench::workload::{Limit, Workload};
use e4race_bench::{parse_list, BenchConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Benchmark blkrec against qemu-storage-daemon (qsd), without a guest.
///
/// Each backend ("peer") is started as a child process on a fresh, fully written raw image
/// (every peer gets the same size and content; page cache, no O_DIRECT on either side) and
/// driven through blkrec's own vhost-user-blk frontend: shared memfd memory, split
/// virtqueues, EVENT_IDX, one frontend thread that keeps every queue filled to its queue
/// depth (QD is per queue) and sleeps until any queue has completions.
///
/// Workloads (run in this order over one connection per peer and queue count):
///   randwrite-4k-qd1   4 KiB random writes, QD1
///   randwrite-4k-qd32  4 KiB random writes, QD32
///   seqwrite-1m-qd4    1 MiB sequential writes, QD4
///   randread-4k-qd32   4 KiB random reads, QD32 (image already full)
///   flush-every-8      8 random 4 KiB writes in flight, then a flush, repeat
///
/// Peers: blkrec-hash (blkrec logging block hashes), blkrec-data (blkrec --log-data),
/// qsd (vhost-user-blk export of a raw file), qsd-logwrites (the same through QEMU's
/// blklogwrites filter, which logs written data like dm-log-writes).
///
/// Measured per (peer, workload, queues): IOPS (all requests, flushes included), MiB/s of
/// data, p50/p99 of per-request latency (submit → completion seen by the frontend), backend
/// CPU seconds (utime+stime of the peer process from /proc/PID/stat) per GiB of data, and each
/// figure's ratio to qsd. Correctness: every request must complete with status OK, every
/// block read must hold what was last written to it, and after each peer the whole disk is
/// read back through it and the image file is checked on the host.
///
/// Any other vhost-user-blk backend: start it yourself and pass `--socket PATH` (plus
/// `--socket-pid PID` for its CPU time, `--socket-name NAME` for the table). The bench
/// then writes its pattern over the whole device (its contents are lost; the device size
/// replaces --size-mib), runs the workloads once per --queues entry (one connection each;
/// the backend must support that many queues) and reads every block back through the
/// socket. No peers are started (--peers cannot be given), and the image-file check and the
/// log size are "n/a (external)".
///
/// Prints a Markdown table on stdout (progress on stderr). Exit 0: all correct; 1: a
/// correctness failure or a peer failed; 2: setup or usage error.
///
/// `e4race-bench crash RUN_DIR` measures crash-state checking instead (see its --help).
#[derive(Debug, Parser)]
#[command(
    name = "e4race-bench",
    version,
    verbatim_doc_comment,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Image size in MiB.
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    size_mib: u64,
    /// Seconds per workload.
    #[arg(long, default_value_t = 5.0, value_name = "S", conflicts_with = "ops")]
    duration_s: f64,
    /// Requests per workload (all queues together) instead of a duration.
    #[arg(long, value_name = "N")]
    ops: Option<u64>,
    /// Workloads: `all` or a comma-separated list of the names above.
    #[arg(long, default_value = "all", value_name = "LIST")]
    workloads: String,
    /// Queue counts to run, comma separated.
    #[arg(
        long,
        default_value = "1,2",
        value_name = "LIST",
        value_delimiter = ','
    )]
    queues: Vec<u16>,
    /// Peers: `all` or a comma-separated list of blkrec-hash, blkrec-data, qsd, qsd-logwrites.
    #[arg(long, default_value = "all", value_name = "LIST")]
    peers: String,
    /// Also write every raw number as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Directory for images, sockets and logs (default: a temporary directory). One peer's
    /// files exist at a time: the image, plus for blkrec-data and qsd-logwrites a log of
    /// everything written (1-2 GiB each with the default duration; deleted after each peer
    /// unless --keep).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep each peer's image, log and stderr in --dir.
    #[arg(long, requires = "dir")]
    keep: bool,
    /// Run every peer this many times, in turn, and show the median of each figure (and of
    /// the per-round ratios to qsd). On a noisy machine 3 or 5 makes the ratios trustworthy.
    #[arg(long, default_value_t = 1, value_name = "N")]
    rounds: u32,
    /// Seed for the random offsets (every peer sees the same sequence).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// blkrec to run: `auto` (a `blkrec` binary next to this one, else builtin), `builtin`
    /// (this binary's copy of the blkrec library, same code), or a path.
    #[arg(
        long,
        default_value = "auto",
        env = "E4RACE_BLKREC",
        value_name = "auto|builtin|PATH"
    )]
    blkrec: String,
    /// qemu-storage-daemon executable (default: from PATH).
    #[arg(long, value_name = "PATH")]
    qsd: Option<PathBuf>,
    /// Seconds to wait for a peer's socket, and for any single completion.
    #[arg(long, default_value_t = 10, value_name = "S")]
    timeout_s: u64,
    /// Drive this already-running vhost-user-blk backend instead of starting peers. Its
    /// whole device is overwritten; --size-mib, --dir and --peers do not apply.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["peers", "keep", "dir"])]
    socket: Option<PathBuf>,
    /// PID of the --socket backend, to report its CPU s/GiB (without it: not reported).
    #[arg(long, value_name = "PID", requires = "socket")]
    socket_pid: Option<u32>,
    /// Name of the --socket backend in the report's peer column.
    #[arg(
        long,
        value_name = "NAME",
        requires = "socket",
        default_value = "external"
    )]
    socket_name: String,
}

#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// Crash states per second on a run's write log: e4race's working image (the log applied
    /// once to one image, each state's journal replay taken back with e2undo) against the
    /// copy-per-state baseline (a sparse copy of the image at every flush, then the same
    /// journal replay, e2fsck -fn and durability check, as fstests' `replay-log --check flush
    /// --fsck` does). After-flush states only (the baseline has no reordering). RUN_DIR is a
    /// run recorded with --log-data or --crash-states. Exit 0: both gave the same verdict in
    /// every round; 1: they disagree; 2: setup or usage error.
    #[command(verbatim_doc_comment)]
    Crash {
        /// The run directory (writes.log with data, plan.json, workload.json).
        run_dir: PathBuf,
        /// Passes of each method (alternating which goes first); medians are reported.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
        rounds: u32,
        /// Where the images go [default: /dev/shm when it has room, else RUN_DIR].
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        /// Also write every number as JSON to this file.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
}

/// Writes `report` as JSON to `path` (if given); exit 2 when it cannot.
fn write_json(
    path: Option<&std::path::Path>,
    report: &impl serde::Serialize,
) -> Result<(), ExitCode> {
    let Some(path) = path else { return Ok(()) };
    serde_json::to_string_pretty(report)
        .map_err(std::io::Error::other)
        .and_then(|j| std::fs::write(path, j + "\n"))
        .map_err(|e| {
            eprintln!("e4race-bench: cannot write {}: {e}", path.display());
            ExitCode::from(2)
        })
}

fn crash_mode(
    run_dir: PathBuf,
    rounds: u32,
    work_dir: Option<PathBuf>,
    json: Option<PathBuf>,
) -> ExitCode {
    let cfg = e4race_bench::crash::CrashBenchConfig {
        run_dir,
        rounds,
        work_dir,
    };
    let report = match e4race_bench::crash::run_crash_bench(&cfg, &mut |l| eprintln!("{l}")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("e4race-bench crash: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.markdown());
    if let Err(code) = write_json(json.as_deref(), &report) {
        return code;
    }
    if report.verdicts_agree {
        ExitCode::SUCCESS
    } else {
        eprintln!("e4race-bench crash: the two methods disagree on a verdict, see the table");
        ExitCode::FAILURE
    }
}

/// `e4race-bench __blkrec …`: blkrec's serve loop (same library call as the `blkrec`
/// binary), so the bench needs no separately built binary.
#[derive(Debug, Parser)]
#[command(name = "e4race-bench __blkrec")]
struct BuiltinBlkrec {
    #[arg(long)]
    image: PathBuf,
    #[arg(long)]
    socket: PathBuf,
    #[arg(long)]
    log: PathBuf,
    #[arg(long)]
    log_data: bool,
    #[arg(long, default_value_t = 1)]
    num_queues: u16,
    #[arg(long, default_value_t = 256)]
    queue_size: u16,
}

fn builtin_blkrec() -> ExitCode {
    let a = BuiltinBlkrec::parse_from(std::env::args_os().skip(1));
    let mut c = blkrec::Config::new(a.image, a.socket, a.log);
    c.log_data = a.log_data;
    c.num_queues = a.num_queues;
    c.queue_size = a.queue_size;
    match blkrec::run(c) {
        Ok(s) => {
            eprintln!("blkrec: frontend disconnected, {} records", s.records);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("blkrec: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "__blkrec") {
        return builtin_blkrec();
    }
    let a = Args::parse();
    if let Some(Mode::Crash {
        run_dir,
        rounds,
        work_dir,
        json,
    }) = a.mode
    {
        return crash_mode(run_dir, rounds, work_dir, json);
    }
    let usage = |msg: String| {
        eprintln!("e4race-bench: {msg}");
        ExitCode::from(2)
    };
    let workloads = match parse_list::<Workload>(&a.workloads, &Workload::ALL) {
        Ok(w) => w,
        Err(e) => return usage(format!("--workloads: {e}")),
    };
    let peers = match parse_list::<PeerKind>(&a.peers, &PeerKind::ALL) {
        Ok(p) => p,
        Err(e) => return usage(format!("--peers: {e}")),
    };
    let limit = match a.ops {
        Some(0) => return usage("--ops must be > 0".into()),
        Some(n) => Limit::Ops(n),
        None if a.duration_s > 0.0 && a.duration_s.is_finite() => {
            Limit::Duration(Duration::from_secs_f64(a.duration_s))
        }
        None => return usage("--duration-s must be > 0".into()),
    };
    let cfg = BenchConfig {
        size_mib: a.size_mib,
        limit,
        workloads,
        queues: a.queues,
        peers,
        dir: a.dir,
        keep: a.keep,
        seed: a.seed,
        blkrec: a.blkrec,
        qsd: a.qsd,
        timeout: Duration::from_secs(a.timeout_s.max(1)),
        rounds: a.rounds,
        external: a.socket.map(|socket| e4race_bench::ExternalBackend {
            socket,
            pid: a.socket_pid,
            name: a.socket_name,
        }),
    };
    let report = match e4race_bench::run(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("e4race-bench: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.markdown());
    if let Err(code) = write_json(a.json.as_deref(), &report) {
        return code;
    }
    if report.all_ok() {
        ExitCode::SUCCESS
    } else {
        eprintln!("e4race-bench: correctness failures or failed peers, see the table");
        ExitCode::FAILURE
    }
}
