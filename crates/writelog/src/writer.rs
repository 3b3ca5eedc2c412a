//! Concurrent appender.

use crate::record::{self, Encoded, Entry, LogHeader, FRAME_LEN, HEADER_LEN, VERSION};
use crate::Error;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How a log is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// Store written data in the records (needed for export and replay).
    pub log_data: bool,
    /// Unit of the `sector` field; 512 for virtio-blk.
    pub sector_size: u32,
    /// Largest the log file may grow (header included); `None`: no cap but the process's
    /// file-size limit (RLIMIT_FSIZE), which always applies.
    pub max_bytes: Option<u64>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            log_data: false,
            sector_size: 512,
            max_bytes: None,
        }
    }
}

/// How far ahead of its end the log file is preallocated, so that buffered records always
/// have room on disk (ENOSPC is met when space is reserved, not when the buffer is written).
const PREALLOC_CHUNK: u64 = 16 << 20;
/// How long `finish()` waits for records whose space is reserved to be committed.
const FINISH_WAIT: Duration = Duration::from_secs(10);

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

/// Why the log grows no further.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// `LogOptions::max_bytes` (blkrec `--max-log-bytes`).
    MaxBytes(u64),
    /// RLIMIT_FSIZE: a write past it fails with EFBIG (and SIGXFSZ), so stay below it.
    FileSize(u64),
}

impl Limit {
    fn bytes(self) -> u64 {
        match self {
            Limit::MaxBytes(b) | Limit::FileSize(b) => b,
        }
    }
}

struct Inner {
    out: BufWriter<SharedFile>,
    next_seq: u64,
    /// File offset just past the last committed record (buffered or written).
    end: u64,
    /// Bytes reserved by [`Pending`] records not yet committed or dropped.
    reserved: u64,
    /// Number of such records.
    pending: u64,
    /// The file is preallocated up to here.
    allocated: u64,
    /// Whether fallocate(2) works on the log's file system.
    can_prealloc: bool,
    /// Set once no new record may be reserved (cap reached, no space): records already
    /// reserved can still be committed, since their space is allocated.
    refusing: Option<String>,
    /// Set once writing to the file failed: the file may hold a partial record, so nothing
    /// more is appended.
    broken: Option<String>,
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
///
/// Two steps, so that a device never changes its image without a record: [`prepare`]
/// encodes a record and reserves its bytes (failing if the log is full, capped, failed or
/// finished), the device then applies the write, and [`Pending::commit`] gives it its seq.
/// Reserved bytes are preallocated on disk, so a commit does not run out of space.
///
/// [`prepare`]: LogWriter::prepare
pub struct LogWriter {
    inner: Mutex<Inner>,
    /// Signalled when the last pending record is committed or dropped.
    drained: Condvar,
    file: Arc<File>,
    opts: LogOptions,
    limit: Option<Limit>,
    start: Instant,
    path: PathBuf,
}

/// A record whose space is reserved in the log but which has no seq yet. Dropping it
/// releases the space (the write it describes did not happen).
#[must_use = "a prepared record is only logged once committed"]
pub struct Pending<'l, 'a> {
    log: &'l LogWriter,
    enc: Option<Encoded<'a>>,
    bytes: u64,
}

impl Pending<'_, '_> {
    /// Appends the record; returns its sequence number.
    pub fn commit(mut self) -> Result<u64, Error> {
        let enc = self
            .enc
            .take()
            .ok_or(Error::BadEntry("record committed twice"))?;
        let log = self.log;
        let mut g = log.lock();
        log.release(&mut g, self.bytes);
        if let Some(msg) = &g.broken {
            return Err(Error::Failed(msg.clone()));
        }
        let seq = g.next_seq;
        let time_ns = u64::try_from(log.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
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
                g.end += self.bytes;
                Ok(seq)
            }
            Err(e) => Err(log.break_log(&mut g, "append a record to", &e)),
        }
    }
}

impl Drop for Pending<'_, '_> {
    fn drop(&mut self) {
        if self.enc.is_some() {
            let mut g = self.log.lock();
            self.log.release(&mut g, self.bytes);
        }
    }
}

/// The process's RLIMIT_FSIZE in bytes, if it is finite.
fn file_size_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    getrlimit(Resource::RLIMIT_FSIZE)
        .ok()
        .and_then(|(soft, _)| (soft != RLIM_INFINITY).then_some(soft))
}

impl LogWriter {
    /// Creates (truncating) a log at `path` and writes its header.
    pub fn create(path: impl AsRef<Path>, opts: LogOptions) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        if !opts.sector_size.is_power_of_two() || opts.sector_size < 512 {
            return Err(Error::BadEntry("sector size must be a power of two >= 512"));
        }
        let limit = match (opts.max_bytes, file_size_limit()) {
            (Some(m), Some(f)) if f < m => Some(Limit::FileSize(f)),
            (Some(m), _) => Some(Limit::MaxBytes(m)),
            (None, Some(f)) => Some(Limit::FileSize(f)),
            (None, None) => None,
        };
        if let Some(l) = limit {
            if l.bytes() < HEADER_LEN as u64 {
                return Err(Error::Full {
                    path,
                    limit: l.bytes(),
                    what: limit_name(l),
                });
            }
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
                end: HEADER_LEN as u64,
                reserved: 0,
                pending: 0,
                allocated: HEADER_LEN as u64,
                can_prealloc: true,
                refusing: None,
                broken: None,
                finished: false,
            }),
            drained: Condvar::new(),
            file,
            opts,
            limit,
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
        // unnoticed (write errors set `broken`), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refused(g: &Inner) -> Option<Error> {
        if let Some(msg) = g.broken.as_ref().or(g.refusing.as_ref()) {
            return Some(Error::Failed(msg.clone()));
        }
        g.finished
            .then(|| Error::Failed("the log was already finished".into()))
    }

    fn release(&self, g: &mut Inner, bytes: u64) {
        g.reserved -= bytes;
        g.pending -= 1;
        if g.pending == 0 {
            self.drained.notify_all();
        }
    }

    fn break_log(&self, g: &mut Inner, what: &str, e: &io::Error) -> Error {
        let msg = format!("cannot {what} {}: {e}", self.path.display());
        g.broken = Some(msg.clone());
        Error::Failed(msg)
    }

    /// Encodes `entry` and reserves its space; the record gets its seq when committed.
    /// Fails, without reserving anything, once the log is full (its cap, the file-size
    /// limit or the disk), failed or finished. A full log stays full: every later call
    /// fails too, so a device refuses all further writes rather than record some.
    pub fn prepare<'l, 'a>(&'l self, entry: &Entry<'a>) -> Result<Pending<'l, 'a>, Error> {
        let enc = record::encode(entry, self.opts.log_data)?;
        let bytes = (FRAME_LEN + enc.payload_len()) as u64;
        let mut g = self.lock();
        if let Some(e) = Self::refused(&g) {
            return Err(e);
        }
        let need = g.end + g.reserved + bytes;
        if let Some(l) = self.limit {
            if need > l.bytes() {
                let err = Error::Full {
                    path: self.path.clone(),
                    limit: l.bytes(),
                    what: limit_name(l),
                };
                g.refusing = Some(err.to_string());
                return Err(err);
            }
        }
        if g.can_prealloc && need > g.allocated {
            let mut upto = need.max(g.allocated + PREALLOC_CHUNK);
            if let Some(l) = self.limit {
                upto = upto.min(l.bytes());
            }
            match fallocate_keep_size(&self.file, g.allocated, upto - g.allocated) {
                Ok(()) => g.allocated = upto,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) => {
                    // No preallocation here (tmpfs before 3.5, some FUSE file systems):
                    // an out-of-space log is then only seen when the buffer is written.
                    g.can_prealloc = false;
                }
                Err(e) => {
                    let msg = format!(
                        "cannot reserve space for the write log {}: {e} (free space there, \
                         or put the run on a bigger disk)",
                        self.path.display()
                    );
                    g.refusing = Some(msg.clone());
                    return Err(Error::Failed(msg));
                }
            }
        }
        g.reserved += bytes;
        g.pending += 1;
        Ok(Pending {
            log: self,
            enc: Some(enc),
            bytes,
        })
    }

    /// Appends one record and returns its sequence number.
    pub fn append(&self, entry: &Entry<'_>) -> Result<u64, Error> {
        self.prepare(entry)?.commit()
    }

    /// Appends a named mark; returns its sequence number.
    pub fn mark(&self, name: &str) -> Result<u64, Error> {
        self.append(&Entry::mark(name))
    }

    /// Pushes buffered records to the kernel (survives a crash of this process, not of the host).
    pub fn flush(&self) -> Result<(), Error> {
        let mut g = self.lock();
        Self::flush_locked(self, &mut g)
    }

    fn flush_locked(&self, g: &mut Inner) -> Result<(), Error> {
        if let Some(msg) = &g.broken {
            return Err(Error::Failed(msg.clone()));
        }
        match g.out.flush() {
            Ok(()) => Ok(()),
            Err(e) => Err(self.break_log(g, "write buffered records to", &e)),
        }
    }

    /// Makes everything appended so far durable (flush + fdatasync).
    pub fn sync(&self) -> Result<(), Error> {
        self.flush()?;
        // Outside the lock: appends that race with this sync are simply not covered by it.
        self.file
            .sync_data()
            .map_err(|e| Error::io(&self.path, "fdatasync the write log", e))
    }

    /// Closes the log for new records, waits for reserved ones to be committed, then
    /// flushes and syncs it; returns the number of records written. Records committed
    /// before this returns are all in the file; none can be added afterwards.
    pub fn finish(&self) -> Result<u64, Error> {
        let mut g = self.lock();
        g.finished = true;
        let deadline = Instant::now() + FINISH_WAIT;
        while g.pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Failed(format!(
                    "{} records of {} were still being written after {:?}",
                    g.pending,
                    self.path.display(),
                    FINISH_WAIT
                )));
            }
            g = self
                .drained
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        self.flush_locked(&mut g)?;
        let (n, end) = (g.next_seq, g.end);
        drop(g);
        self.file
            .sync_data()
            .map_err(|e| Error::io(&self.path, "fdatasync the write log", e))?;
        // Give back the preallocated space past the end (ext4_setattr truncates blocks
        // preallocated beyond i_size even when the size does not change).
        let _ = self.file.set_len(end);
        Ok(n)
    }
}

fn limit_name(l: Limit) -> &'static str {
    match l {
        Limit::MaxBytes(_) => "--max-log-bytes",
        Limit::FileSize(_) => "the file-size limit (ulimit -f, RLIMIT_FSIZE)",
    }
}

/// fallocate(FALLOC_FL_KEEP_SIZE): allocates without changing the file's size, so readers
/// of a log cut short still see it end at its last record.
fn fallocate_keep_size(f: &File, off: u64, len: u64) -> io::Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    let (Ok(o), Ok(l)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    fallocate(f.as_raw_fd(), FallocateFlags::FALLOC_FL_KEEP_SIZE, o, l).map_err(io::Error::from)
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let g = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        if g.broken.is_none() {
            let _ = g.out.flush();
        }
    }
}
