//! `blkrec`: vhost-user-blk backend that records every write. See README.md.

use blkrec::{Config, Server};
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use std::path::PathBuf;
use std::process::ExitCode;

/// vhost-user-blk backend that serves a raw image and records every write in a write log.
///
/// Serves one frontend (QEMU) connection; when it disconnects, the log is flushed and blkrec
/// exits 0. SIGTERM/SIGINT also flush the log and exit.
#[derive(Debug, Parser)]
#[command(name = "blkrec", version)]
struct Args {
    /// Raw disk image to serve (must exist; its size is the disk size).
    #[arg(long, value_name = "PATH")]
    image: PathBuf,
    /// vhost-user socket to listen on (a stale socket file is replaced).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Write log to create (truncated if it exists).
    #[arg(long, value_name = "PATH")]
    log: PathBuf,
    /// Also record the written data (needed for `log export` and replay).
    #[arg(long)]
    log_data: bool,
    /// On a guest FLUSH, fdatasync the log too before completing it. Without it a FLUSH
    /// still pushes the log's buffer to the kernel, so what it covers survives SIGKILL of
    /// blkrec (not a host crash).
    #[arg(long)]
    durable: bool,
    /// Cap the write log at this many bytes. Once reached, blkrec fails every guest write
    /// with IOERR (the image is left as the log describes it) and says so on stderr.
    #[arg(long, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(4096..))]
    max_log_bytes: Option<u64>,
    /// Number of request queues (QEMU: -device vhost-user-blk-pci,num-queues=N).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    num_queues: u16,
    /// Maximum virtqueue size (power of two; QEMU's queue-size must not exceed it).
    #[arg(long, value_name = "N", default_value_t = 256)]
    queue_size: u16,
    /// Serve the image read-only (writes fail with IOERR).
    #[arg(long)]
    read_only: bool,
    /// Control socket for marks: `MARK <name>` → `OK <seq>`, `SYNC` → `OK`.
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Serial number returned by GET_ID (at most 20 bytes).
    #[arg(long, value_name = "STR")]
    serial: Option<String>,
}

fn main() -> ExitCode {
    let a = Args::parse();
    // Warnings (the first failed guest request of each kind) to stderr; BLKREC_LOG overrides.
    let filter = tracing_subscriber::EnvFilter::try_from_env("BLKREC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let config = Config {
        image: a.image,
        socket: a.socket.clone(),
        log: a.log,
        log_data: a.log_data,
        durable: a.durable,
        max_log_bytes: a.max_log_bytes,
        num_queues: a.num_queues,
        queue_size: a.queue_size,
        read_only: a.read_only,
        control: a.control.clone(),
        serial: a.serial,
    };
    // Block SIGTERM/SIGINT in every thread (threads inherit the mask) and take them on a
    // dedicated thread, so a signal never interrupts a half-appended record.
    // A write past RLIMIT_FSIZE raises SIGXFSZ, which kills by default. The log stays below
    // the limit by itself; an image write past it then fails with EFBIG (IOERR to the guest)
    // instead of killing blkrec with records still buffered.
    // SAFETY: setting a signal's disposition to SIG_IGN runs no handler code.
    let ignored =
        unsafe { nix::sys::signal::signal(Signal::SIGXFSZ, nix::sys::signal::SigHandler::SigIgn) };
    if let Err(e) = ignored {
        eprintln!("blkrec: cannot ignore SIGXFSZ: {e}");
        return ExitCode::FAILURE;
    }
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGTERM);
    sigs.add(Signal::SIGINT);
    if let Err(e) = sigs.thread_block() {
        eprintln!("blkrec: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    let server = match Server::bind(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("blkrec: {e}");
            return ExitCode::FAILURE;
        }
    };
    let log = server.log().clone();
    let socket = a.socket;
    let control = a.control;
    let spawned = std::thread::Builder::new()
        .name("blkrec-signals".into())
        .spawn(move || {
            if let Ok(sig) = sigs.wait() {
                let code = match log.finish() {
                    Ok(n) => {
                        eprintln!("blkrec: {sig}: log flushed ({n} records), exiting");
                        0
                    }
                    Err(e) => {
                        eprintln!("blkrec: {sig}: {e}");
                        1
                    }
                };
                let _ = std::fs::remove_file(&socket);
                if let Some(c) = &control {
                    let _ = std::fs::remove_file(c);
                }
                std::process::exit(code);
            }
        });
    if let Err(e) = spawned {
        eprintln!("blkrec: cannot spawn the signal thread: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("blkrec: listening on {}", config.socket.display());
    match server.serve() {
        Ok(s) => {
            eprintln!(
                "blkrec: frontend disconnected, log flushed ({} records)",
                s.records
            );
            if !s.request_errors.is_empty() {
                eprintln!("blkrec: guest requests failed: {}", s.request_errors);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("blkrec: {e}");
            ExitCode::FAILURE
        }
    }
}
