//! `blkrec`: a vhost-user-blk backend (rust-vmm) that serves a raw image and records every
//! write, flush, discard and write-zeroes into an e4race write log (`writelog`).
//!
//! * [`run`]: what the `blkrec` binary does: serve one frontend connection, then flush the log.
//! * [`Server`]: the same in steps (bind, get the log handle for marks, serve), for in-process use.
//! * [`BlkDevice`]: the `VhostUserBackend` itself.
//! * [`control`]: the `--control` socket (`MARK <name>`, `SYNC`).
//! * `frontend` (cargo feature `frontend`): a minimal vhost-user frontend with a split-virtqueue
//!   driver, to drive any vhost-user-blk backend without a guest.

pub mod control;
pub mod device;
#[cfg(feature = "frontend")]
pub mod frontend;
pub mod request_error;
pub mod virtio;

pub use device::{BlkDevice, DeviceOptions, FileImage, Gm, GuestMem, HostFaults, Image, Vring};
pub use request_error::{RequestError, RequestErrorCounts, RequestErrorKind};

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use writelog::{LogOptions, LogWriter};

/// Errors. Messages name the file involved and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad option value.
    #[error("{0}")]
    Usage(String),
    /// The image can't be used.
    #[error("cannot open image {}: {source}: {hint}", path.display())]
    Image {
        /// Image path.
        path: PathBuf,
        /// OS error.
        #[source]
        source: io::Error,
        /// What to do.
        hint: &'static str,
    },
    /// A socket path is taken by a live listener.
    #[error("{what} {} is in use by a running process: stop it or pick another path", path.display())]
    SocketInUse {
        /// Which option.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A socket path can't be bound.
    #[error("cannot listen on {what} {}: {source}: check the directory exists and is writable", path.display())]
    Bind {
        /// Which option.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// The write log failed.
    #[error(transparent)]
    Log(#[from] writelog::Error),
    /// vhost-user daemon error.
    #[error("vhost-user: {0}")]
    Vhost(String),
    /// Other I/O.
    #[error("cannot {0}: {1}")]
    Io(String, #[source] io::Error),
}

impl Error {
    pub(crate) fn image(path: &Path, source: io::Error, read_only: bool) -> Self {
        let hint = match source.kind() {
            io::ErrorKind::NotFound => {
                "it does not exist: create it first (e.g. `truncate -s 1G IMAGE`) or fix --image"
            }
            io::ErrorKind::PermissionDenied if !read_only => {
                "it is not writable: fix its permissions, or pass --read-only to serve it read-only"
            }
            _ if source.raw_os_error() == Some(libc::EROFS) => {
                "it is on a read-only filesystem: copy it elsewhere, or pass --read-only"
            }
            _ => "check the path and permissions",
        };
        Error::Image {
            path: path.to_path_buf(),
            source,
            hint,
        }
    }
}

/// Binds a unix socket at `path`. A socket file nobody listens on (stale, from a killed run)
/// is removed first; a live listener or a non-socket file is an error.
pub(crate) fn bind_unix(path: &Path, what: &'static str) -> Result<UnixListener, Error> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Error::Bind {
                what,
                path: path.to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file that is not a socket exists there (not removing it)",
                ),
            });
        }
        match UnixStream::connect(path) {
            Ok(_) => {
                return Err(Error::SocketInUse {
                    what,
                    path: path.to_path_buf(),
                })
            }
            Err(_) => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    UnixListener::bind(path).map_err(|source| Error::Bind {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Everything `blkrec` needs to run (the CLI maps 1:1 onto this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Raw disk image to serve.
    pub image: PathBuf,
    /// vhost-user socket to listen on.
    pub socket: PathBuf,
    /// Write log to create (truncated if it exists).
    pub log: PathBuf,
    /// Record written data in the log (needed for export/replay).
    pub log_data: bool,
    /// On guest FLUSH, also fdatasync the log before completing it.
    pub durable: bool,
    /// Cap on the log file's size; once reached, every write fails (`None`: no cap).
    pub max_log_bytes: Option<u64>,
    /// Number of request queues.
    pub num_queues: u16,
    /// Maximum queue size.
    pub queue_size: u16,
    /// Serve read-only.
    pub read_only: bool,
    /// Control socket for marks.
    pub control: Option<PathBuf>,
    /// GET_ID serial (defaults to "blkrec").
    pub serial: Option<String>,
}

impl Config {
    /// Defaults for everything but the three paths.
    pub fn new(
        image: impl Into<PathBuf>,
        socket: impl Into<PathBuf>,
        log: impl Into<PathBuf>,
    ) -> Self {
        Config {
            image: image.into(),
            socket: socket.into(),
            log: log.into(),
            log_data: false,
            durable: false,
            max_log_bytes: None,
            num_queues: 1,
            queue_size: 256,
            read_only: false,
            control: None,
            serial: None,
        }
    }
}

/// What a served connection did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// Records in the log.
    pub records: u64,
    /// Guest requests that failed, per kind.
    pub request_errors: RequestErrorCounts,
}

/// A bound, not yet serving, device (socket exists; a frontend may already connect).
pub struct Server {
    device: Arc<BlkDevice>,
    log: Arc<LogWriter>,
    listener: Listener,
    socket: PathBuf,
    control: Option<control::ControlServer>,
}

impl Server {
    /// Opens the image, creates the log, binds the vhost-user socket and (if configured)
    /// starts the control socket.
    pub fn bind(config: &Config) -> Result<Server, Error> {
        let opts = DeviceOptions {
            num_queues: config.num_queues,
            queue_size: config.queue_size,
            read_only: config.read_only,
            durable: config.durable,
            serial: config.serial.clone().unwrap_or_else(|| "blkrec".into()),
            ..DeviceOptions::default()
        };
        if opts.serial.len() > virtio::ID_BYTES {
            return Err(Error::Usage(format!(
                "--serial is {} bytes; virtio-blk serials are at most {} bytes",
                opts.serial.len(),
                virtio::ID_BYTES
            )));
        }
        // Check the image before creating (truncating) the log.
        let log_opts = LogOptions {
            log_data: config.log_data,
            sector_size: virtio::SECTOR as u32,
            max_bytes: config.max_log_bytes,
        };
        let probe = std::fs::OpenOptions::new()
            .read(true)
            .write(!config.read_only)
            .open(&config.image)
            .map_err(|e| Error::image(&config.image, e, config.read_only))?;
        drop(probe);
        if opts.num_queues == 0 || !opts.queue_size.is_power_of_two() || opts.queue_size > 32768 {
            return Err(Error::Usage(
                "--num-queues must be >= 1 and --queue-size a power of two <= 32768".into(),
            ));
        }
        // Bind before creating (truncating) the log, so a second blkrec on a busy socket
        // leaves the first one's log alone.
        let listener = Listener::from(bind_unix(&config.socket, "--socket")?);
        let rest = (|| {
            let log = Arc::new(LogWriter::create(&config.log, log_opts)?);
            let device = Arc::new(BlkDevice::open(&config.image, opts, log.clone())?);
            let control = match &config.control {
                Some(p) => Some(control::ControlServer::start(p, log.clone())?),
                None => None,
            };
            Ok::<_, Error>((log, device, control))
        })();
        let (log, device, control) = match rest {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&config.socket);
                return Err(e);
            }
        };
        Ok(Server {
            device,
            log,
            listener,
            socket: config.socket.clone(),
            control,
        })
    }

    /// The write log (for marks: `server.log().mark("name")`).
    pub fn log(&self) -> &Arc<LogWriter> {
        &self.log
    }

    /// The device.
    pub fn device(&self) -> &Arc<BlkDevice> {
        &self.device
    }

    /// Path of the vhost-user socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Serves one frontend connection; when it disconnects, stops the workers, syncs the log
    /// and returns.
    pub fn serve(mut self) -> Result<RunSummary, Error> {
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let mut daemon = VhostUserDaemon::new("blkrec".into(), self.device.clone(), mem)
            .map_err(|e| Error::Vhost(format!("cannot create the daemon: {e}")))?;
        let res = daemon
            .start(&mut self.listener)
            .and_then(|()| daemon.wait());
        for h in daemon.get_epoll_handlers() {
            h.send_exit_event();
        }
        // Joins the worker threads (VhostUserHandler's Drop).
        drop(daemon);
        drop(self.control.take());
        let _ = std::fs::remove_file(&self.socket);
        let records = self.log.finish()?;
        let summary = RunSummary {
            records,
            request_errors: self.device.request_errors(),
        };
        match res {
            Ok(()) => Ok(summary),
            // A frontend that goes away mid-message (QEMU killed) is a normal end.
            Err(vhost_user_backend::Error::HandleRequest(
                vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
            )) => Ok(summary),
            Err(e) => Err(Error::Vhost(e.to_string())),
        }
    }
}

/// Runs the device as the binary does: bind, print `blkrec: listening on SOCK` to stderr,
/// serve one connection, flush the log.
pub fn run(config: Config) -> Result<RunSummary, Error> {
    let server = Server::bind(&config)?;
    eprintln!("blkrec: listening on {}", config.socket.display());
    server.serve()
}
