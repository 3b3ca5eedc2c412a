//! The test disk: a raw image in the run directory, served to the guest either by our
//! recording vhost-user-blk backend (blkrec, the default: every write lands in `writes.log`) or
//! by QEMU's own virtio-blk (for comparison).
//!
//! blkrec runs in-process, on a thread of its own: it serves exactly one frontend connection
//! and returns when QEMU disconnects, with the log synced.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::RunError;
use crate::progress::Progress;
use crate::vm::DiskAttachment;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBackend {
    /// Our recording vhost-user-blk backend; every write lands in writes.log.
    Blkrec,
    /// QEMU's own virtio-blk: no write log. For comparison.
    Qemu,
}

impl DiskBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskBackend::Blkrec => "blkrec",
            DiskBackend::Qemu => "qemu",
        }
    }
}

struct Recorder {
    socket: PathBuf,
    device: Arc<blkrec::BlkDevice>,
    log: Arc<writelog::LogWriter>,
    thread: std::thread::JoinHandle<Result<blkrec::RunSummary, blkrec::Error>>,
}

pub struct TestDisk {
    pub image: PathBuf,
    pub backend: DiskBackend,
    /// `writes.log`, when blkrec serves the disk.
    pub log: Option<PathBuf>,
    log_data: bool,
    max_log_bytes: Option<u64>,
    num_queues: u16,
    dir: PathBuf,
    /// Where blkrec listens: in the run's short socket directory, not in `dir`, whose path may
    /// be too long for a unix socket.
    socket: PathBuf,
    recorder: Option<Recorder>,
    /// Failed guest requests of the recorders already stopped (a retried boot has two).
    request_errors: blkrec::RequestErrorCounts,
    /// Every mark, as it is logged (what `--kill-at mark:NAME` waits for).
    marks: tokio::sync::broadcast::Sender<String>,
}

impl TestDisk {
    /// Creates a sparse raw image of `mib` MiB in `dir`. blkrec (if it serves the disk) listens
    /// on `socket`. A full host disk is reported as such.
    pub fn create(
        dir: &Path,
        socket: PathBuf,
        mib: u64,
        backend: DiskBackend,
        log_data: bool,
        max_log_bytes: Option<u64>,
        num_queues: u16,
    ) -> Result<Self, RunError> {
        let image = dir.join("disk.img");
        let f = std::fs::File::create(&image).map_err(|e| full_or(e, &image))?;
        f.set_len(mib << 20).map_err(|e| full_or(e, &image))?;
        Ok(TestDisk {
            image,
            backend,
            log: None,
            log_data,
            max_log_bytes,
            num_queues: num_queues.max(1),
            dir: dir.to_path_buf(),
            socket,
            recorder: None,
            request_errors: Default::default(),
            marks: tokio::sync::broadcast::channel(64).0,
        })
    }

    /// Starts the backend (if any) and says how QEMU attaches the disk.
    pub async fn start(&mut self, progress: &Progress) -> Result<DiskAttachment, RunError> {
        match self.backend {
            DiskBackend::Qemu => Ok(DiskAttachment::QemuVirtioBlk {
                image: self.image.clone(),
            }),
            DiskBackend::Blkrec => {
                let socket = self.socket.clone();
                let log = self.dir.join("writes.log");
                let mut cfg = blkrec::Config::new(&self.image, &socket, &log);
                cfg.log_data = self.log_data;
                cfg.max_log_bytes = self.max_log_bytes;
                // Durable: the log reaches the disk before a guest FLUSH completes, so a
                // crashed run's log still covers everything the guest saw acknowledged.
                cfg.durable = true;
                cfg.num_queues = self.num_queues;
                let server = blkrec::Server::bind(&cfg)
                    .map_err(|e| RunError::Other(format!("starting blkrec: {e}")))?;
                let log_writer = server.log().clone();
                let device = server.device().clone();
                let thread = std::thread::Builder::new()
                    .name("blkrec".into())
                    .spawn(move || server.serve())
                    .map_err(|e| RunError::Other(format!("starting the blkrec thread: {e}")))?;
                progress.step(&format!(
                    "blkrec serving {} on {} ({} queues, log {}{})",
                    self.image.display(),
                    socket.display(),
                    self.num_queues,
                    log.display(),
                    if self.log_data {
                        ", with data"
                    } else {
                        ", hashes only"
                    }
                ));
                self.log = Some(log);
                self.recorder = Some(Recorder {
                    socket: socket.clone(),
                    device,
                    log: log_writer,
                    thread,
                });
                Ok(DiskAttachment::VhostUser {
                    socket,
                    num_queues: self.num_queues,
                })
            }
        }
    }

    /// Inserts a named mark into the write log, ordered with the writes.
    pub fn mark(&self, name: &str) {
        if let Some(r) = &self.recorder {
            let _ = r.log.mark(name);
        }
        let _ = self.marks.send(name.to_string());
    }

    /// The marks from now on.
    pub fn subscribe_marks(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.marks.subscribe()
    }

    /// A host-side failure behind guest I/O errors so far, if any (see [`host_fault`]).
    pub fn host_fault(&self) -> Option<RunError> {
        self.recorder.as_ref().and_then(|r| host_fault(&r.device))
    }

    /// Guest requests blkrec failed so far, per kind, whether it is still serving or stopped.
    pub fn request_errors(&self) -> blkrec::RequestErrorCounts {
        let mut c = self.request_errors.clone();
        if let Some(r) = &self.recorder {
            c.add(&r.device.request_errors());
        }
        c
    }

    /// Stops the backend after the guest is gone, so the write log is complete.
    pub async fn stop(&mut self) -> Result<(), RunError> {
        let Some(r) = self.recorder.take() else {
            return Ok(());
        };
        let socket = r.socket.clone();
        let device = r.device.clone();
        let joined = tokio::task::spawn_blocking(move || {
            // serve() returns when QEMU disconnects. If QEMU never connected (it failed first),
            // a connection of our own that closes at once releases it.
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while !r.thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !r.thread.is_finished() {
                let _ = std::os::unix::net::UnixStream::connect(&socket);
            }
            let _ = r.log.sync();
            r.thread.join()
        })
        .await;
        // The workers have stopped: every request is counted.
        self.request_errors.add(&device.request_errors());
        let joined = joined.map_err(|e| RunError::Other(format!("blkrec stop task: {e}")))?;
        if let Some(e) = host_fault(&device) {
            return Err(e);
        }
        match joined {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(RunError::Other(format!("blkrec failed: {e}"))),
            Err(_) => Err(RunError::Other(
                "blkrec panicked; see the console and writes.log".into(),
            )),
        }
    }
}

/// Guest I/O that failed because of the host (a full disk, EIO, a full or failed log) makes
/// whatever the guest saw afterwards untrustworthy: an INFRA-ERROR, not a kernel finding.
fn host_fault(device: &blkrec::BlkDevice) -> Option<RunError> {
    let faults = device.faults();
    if let Some((msg, errno)) = &faults.first_image_error {
        let hint = if *errno == Some(libc::ENOSPC) {
            "the host disk is full: free some space or pass --runs-dir on another file system"
        } else {
            "check the host file system holding the run directory"
        };
        return Some(RunError::Other(format!(
            "{} guest request(s) failed on the host, so what the guest saw is not a kernel finding; first: {msg} ({hint})",
            faults.image_errors
        )));
    }
    faults.log.as_ref().map(|msg| {
        RunError::Other(format!(
            "the write log stopped recording, so guest writes failed from then on: {msg}"
        ))
    })
}

pub fn full_or(e: std::io::Error, path: &Path) -> RunError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        RunError::Other(format!(
            "the host disk is full: cannot write {}. Free some space or pass --runs-dir on another file system",
            path.display()
        ))
    } else {
        RunError::Other(format!("{}: {e}", path.display()))
    }
}
