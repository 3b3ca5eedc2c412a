//! The test disk: a raw image in the run directory, served to the guest either by QEMU's own
//! virtio-blk or by our recording vhost-user-blk backend (blkrec).

use std::path::{Path, PathBuf};

use crate::run::{Progress, RunError};
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

pub struct TestDisk {
    pub image: PathBuf,
    pub backend: DiskBackend,
    pub log: Option<PathBuf>,
    log_data: bool,
    dir: PathBuf,
    server: Option<tokio::process::Child>,
}

impl TestDisk {
    /// Creates a sparse raw image of `mib` MiB. A full host disk is reported as such.
    pub fn create(
        dir: &Path,
        mib: u64,
        backend: DiskBackend,
        log_data: bool,
    ) -> Result<Self, RunError> {
        let image = dir.join("disk.img");
        let f = std::fs::File::create(&image).map_err(|e| full_or(e, &image))?;
        f.set_len(mib << 20).map_err(|e| full_or(e, &image))?;
        Ok(TestDisk {
            image,
            backend,
            log: None,
            log_data,
            dir: dir.to_path_buf(),
            server: None,
        })
    }

    /// Starts the backend (if any) and says how QEMU attaches the disk.
    pub async fn start(&mut self, progress: &Progress) -> Result<DiskAttachment, RunError> {
        match self.backend {
            DiskBackend::Qemu => Ok(DiskAttachment::QemuVirtioBlk {
                image: self.image.clone(),
            }),
            DiskBackend::Blkrec => {
                let _ = (progress, self.log_data, &self.dir, &mut self.server);
                Err(RunError::Other(
                    "the blkrec backend is not wired in yet; use --disk-backend qemu".into(),
                ))
            }
        }
    }

    /// Stops the backend after the guest is gone, so the write log is complete.
    pub async fn stop(&mut self) -> Result<(), RunError> {
        if let Some(mut s) = self.server.take() {
            let _ = s.wait().await;
        }
        Ok(())
    }
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
