//! Concurrent appender.

use crate::record::{self, Entry, LogHeader, VERSION};
use crate::Error;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// How a log is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// Store written data in the records (needed for export and replay).
    pub log_data: bool,
    /// Unit of the `sector` field; 512 for virtio-blk.
    pub sector_size: u32,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            log_data: false,
            sector_size: 512,
        }
    }
}

/// `Write` over a shared file, so that `sync()` can fdatasync outside the lock.
struct SharedFile(Arc<File>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Inner {
    out: BufWriter<SharedFile>,
    next_seq: u64,
    /// Set once an append failed: the file may hold a partial record, so refuse further appends.
    failed: Option<String>,
    finished: bool,
}

/// Append-only writer, shareable between threads (`&self` everywhere).
///
/// Concurrency design: hashing, validation and encoding (the expensive part, including the
/// crc32c over the data) run outside any lock. A short critical section then assigns the
/// sequence number and timestamp, folds them into the checksum (`crc::crc32c_concat`), and
/// copies the record into a 256 KiB `BufWriter`. Assigning `seq` under the same lock as the
/// append makes file order equal seq order, so a log cut short by a crash is always a
/// gap-free prefix `0..n` — which a channel to a writer thread would not guarantee. The
/// critical section is a memcpy (plus an occasional large `write(2)`); `sync()` drops the
/// lock before `fdatasync`, so a guest FLUSH does not stall other queues' appends.
pub struct LogWriter {
    inner: Mutex<Inner>,
    file: Arc<File>,
    opts: LogOptions,
    start: Instant,
    path: PathBuf,
}

impl LogWriter {
    /// Creates (truncating) a log at `path` and writes its header.
    pub fn create(path: impl AsRef<Path>, opts: LogOptions) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        if !opts.sector_size.is_power_of_two() || opts.sector_size < 512 {
            return Err(Error::BadEntry("sector size must be a power of two >= 512"));
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::io(&path, "create the write log", e))?;
        let created_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let header = LogHeader {
            version: VERSION,
            sector_size: opts.sector_size,
            has_data: opts.log_data,
            created_ns,
        };
        let file = Arc::new(file);
        (&*file)
            .write_all(&header.encode())
            .map_err(|e| Error::io(&path, "write the log header", e))?;
        Ok(LogWriter {
            inner: Mutex::new(Inner {
                out: BufWriter::with_capacity(256 * 1024, SharedFile(file.clone())),
                next_seq: 0,
                failed: None,
                finished: false,
            }),
            file,
            opts,
            start: Instant::now(),
            path,
        })
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether records carry data.
    pub fn logs_data(&self) -> bool {
        self.opts.log_data
    }

    /// Options the log was created with.
    pub fn options(&self) -> LogOptions {
        self.opts
    }

    /// Sequence number the next record will get (= number of records appended).
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written record in the buffer
        // unnoticed (write errors set `failed`), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one record and returns its sequence number.
    pub fn append(&self, entry: &Entry<'_>) -> Result<u64, Error> {
        let enc = record::encode(entry, self.opts.log_data)?;
        let mut g = self.lock();
        if let Some(msg) = &g.failed {
            return Err(Error::Failed(msg.clone()));
        }
        if g.finished {
            return Err(Error::Failed("the log was already finished".into()));
        }
        let seq = g.next_seq;
        let time_ns = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let head = record::frame(&enc, seq, time_ns);
        let res = (|| {
            g.out.write_all(&head)?;
            g.out.write_all(&enc.body)?;
            if let Some(d) = enc.data {
                g.out.write_all(d)?;
            }
            Ok::<(), io::Error>(())
        })();
        match res {
            Ok(()) => {
                g.next_seq += 1;
                Ok(seq)
            }
            Err(e) => {
                let msg = format!("appending to {} failed: {e}", self.path.display());
                g.failed = Some(msg.clone());
                Err(Error::Failed(msg))
            }
        }
    }

    /// Appends a named mark; returns its sequence number.
    pub fn mark(&self, name: &str) -> Result<u64, Error> {
        self.append(&Entry::mark(name))
    }

    /// Pushes buffered records to the kernel (survives a crash of this process, not of the host).
    pub fn flush(&self) -> Result<(), Error> {
        let mut g = self.lock();
        if let Some(msg) = &g.failed {
            return Err(Error::Failed(msg.clone()));
        }
        g.out
            .flush()
            .map_err(|e| Error::io(&self.path, "flush the write log", e))
    }

    /// Makes everything appended so far durable (flush + fdatasync).
    pub fn sync(&self) -> Result<(), Error> {
        self.flush()?;
        // Outside the lock: appends that race with this sync are simply not covered by it.
        self.file
            .sync_data()
            .map_err(|e| Error::io(&self.path, "fdatasync the write log", e))
    }

    /// Flushes, syncs and closes the log; returns the number of records written.
    pub fn finish(&self) -> Result<u64, Error> {
        self.sync()?;
        let mut g = self.lock();
        g.finished = true;
        Ok(g.next_seq)
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let g = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        if g.failed.is_none() {
            let _ = g.out.flush();
        }
    }
}
