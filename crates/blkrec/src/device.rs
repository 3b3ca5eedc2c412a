//! The vhost-user-blk device: request parsing, execution and logging.

use crate::request_error::{RequestError, RequestErrorCounters, RequestErrorCounts};
use crate::virtio::{self, BlkConfig, SECTOR};
use crate::Error;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringMutex, VringT};
use virtio_bindings::virtio_blk as vb;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::QueueT;
use vm_memory::{
    Address, Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend,
    GuestMemoryMmap,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};
use writelog::{flags, Entry, LogWriter};

/// Guest memory as the daemon maps it.
pub type GuestMem = GuestMemoryMmap<()>;
/// Shared, swappable guest memory.
pub type Gm = GuestMemoryAtomic<GuestMem>;
/// Vring type of the device.
pub type Vring = VringMutex<Gm>;

/// Device settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceOptions {
    /// Number of request queues (one worker thread each).
    pub num_queues: u16,
    /// Largest queue size the driver may configure (power of two).
    pub queue_size: u16,
    /// Serve the image read-only (VIRTIO_BLK_F_RO).
    pub read_only: bool,
    /// On FLUSH, also fdatasync the write log before completing (a FLUSH always pushes the
    /// log's buffer to the kernel, so completed flushes survive a crash of this process;
    /// this makes them survive a crash of the host too).
    pub durable: bool,
    /// GET_ID string (at most 20 bytes are returned).
    pub serial: String,
    /// How much work may pass before finished requests are signalled to the driver while the
    /// queue is still being drained (the rest are signalled once it is empty).
    pub signal_every: Duration,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            num_queues: 1,
            queue_size: 256,
            read_only: false,
            durable: false,
            serial: "blkrec".into(),
            // Well under one 1 MiB write (~300 µs), so large requests are signalled one by
            // one, and ~10 4 KiB writes share one interrupt.
            signal_every: Duration::from_micros(50),
        }
    }
}

/// Per-queue state, touched only by that queue's worker thread (so its Mutex is uncontended).
#[derive(Default)]
struct QueueState {
    /// Bounce buffer reused across requests.
    buf: Vec<u8>,
}

impl QueueState {
    /// `len` bytes of the bounce buffer. Grown (zero-filled) only when a request is larger
    /// than any before; otherwise handed out as is, since every caller overwrites all `len`
    /// bytes (pread or gather) before reading them. Re-zeroing it per request cost a 1 MiB
    /// memset per 1 MiB write (e4race-bench seqwrite-1m profile).
    fn scratch(&mut self, len: usize) -> &mut [u8] {
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        &mut self.buf[..len]
    }
}

/// The disk's backing store. [`FileImage`] is the real one; tests wrap it to inject faults
/// (EIO, ENOSPC, delays), as cloud-hypervisor's `block` crate puts a trait between its
/// virtio-blk device and the disk file.
pub trait Image: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `off`.
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
    /// Writes all of `buf` at `off`.
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()>;
    /// Makes every completed write durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Zeroes `len` bytes at `off`; `unmap`: deallocate them as well.
    fn zero_range(&self, off: u64, len: u64, unmap: bool) -> io::Result<()>;
}

/// A raw image file.
pub struct FileImage(File);

impl FileImage {
    /// Wraps an open image file.
    pub fn new(file: File) -> Self {
        FileImage(file)
    }
}

impl Image for FileImage {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.0.write_all_at(buf, off)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn zero_range(&self, off: u64, len: u64, unmap: bool) -> io::Result<()> {
        zero_image_range(&self.0, off, len, unmap)
    }
}

/// Sector ranges held by requests between changing the image and logging the change, across
/// all queues. Overlapping writes are thereby applied and logged in the same order, so the
/// log's last writer of every sector is the image's (virtio itself does not order requests
/// in flight, §5.2.6.4, so any order is allowed, but it must be the same in both places).
/// Each queue runs one request at a time, so at most `num_queues` ranges are held.
#[derive(Default)]
struct RangeLocks {
    held: Mutex<Vec<(u64, u64)>>,
    freed: Condvar,
}

struct RangeGuard<'a> {
    locks: &'a RangeLocks,
    range: (u64, u64),
}

impl RangeLocks {
    /// Waits until no held range overlaps sectors `[start, end)`, then holds it.
    fn lock(&self, start: u64, end: u64) -> RangeGuard<'_> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        while held.iter().any(|&(s, e)| s < end && start < e) {
            held = self.freed.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        held.push((start, end));
        RangeGuard {
            locks: self,
            range: (start, end),
        }
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = held.iter().position(|r| *r == self.range) {
            held.swap_remove(i);
        }
        self.locks.freed.notify_all();
    }
}

/// The device. Implements [`VhostUserBackend`] with `&self` methods: each queue has its own
/// worker thread and its own state; the image `File` is shared (`pread`/`pwrite` take `&self`)
/// and the log has its own short critical section, so there is no device-wide lock on the
/// data path.
pub struct BlkDevice {
    image: Arc<dyn Image>,
    image_path: PathBuf,
    capacity: u64,
    opts: DeviceOptions,
    log: Arc<LogWriter>,
    mem: RwLock<Gm>,
    acked: AtomicU64,
    event_idx: AtomicBool,
    /// The `wce` config byte: writeback (true) or writethrough.
    wce: AtomicBool,
    queues: Vec<Mutex<QueueState>>,
    ranges: RangeLocks,
    faults: Mutex<HostFaults>,
    /// Whether a driver's bogus available ring was reported (a guest error, printed once).
    bad_ring_reported: AtomicBool,
    /// Failed requests per kind.
    request_errors: RequestErrorCounters,
    /// The write log refused a record for being full (later refusals are then "full" too).
    log_full: AtomicBool,
}

/// Host-side failures behind guest I/O errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFaults {
    /// Guest requests that failed because reading, writing or syncing the image failed.
    pub image_errors: u64,
    /// The first of those: what failed, and its errno.
    pub first_image_error: Option<(String, Option<i32>)>,
    /// Why the write log stopped taking records, if it did.
    pub log: Option<String>,
}

/// Result of executing one request: bytes written to the guest's data buffers, or why it
/// failed.
type Done = Result<u32, RequestError>;

/// A guest buffer segment.
#[derive(Debug, Clone, Copy)]
struct Seg {
    addr: GuestAddress,
    len: u64,
}

/// Total length of `segs`.
fn total(segs: &[Seg]) -> u64 {
    segs.iter().map(|s| s.len).sum()
}

/// The guest bytes `[addr, addr + len)` that a copy could not reach.
fn outside(addr: GuestAddress, len: u64) -> RequestError {
    RequestError::BufferOutsideMemory { addr: addr.0, len }
}

/// Where a stream of `segs` falls `missing` bytes short.
fn short(segs: &[Seg], missing: usize) -> RequestError {
    let end = segs.last().map_or(0, |s| s.addr.0.saturating_add(s.len));
    outside(GuestAddress(end), missing as u64)
}

/// Copies `out.len()` bytes starting `skip` bytes into the stream formed by `segs`.
fn gather(mem: &GuestMem, segs: &[Seg], mut skip: u64, out: &mut [u8]) -> Result<(), RequestError> {
    let mut done = 0usize;
    for s in segs {
        if done == out.len() {
            break;
        }
        if skip >= s.len {
            skip -= s.len;
            continue;
        }
        let avail = (s.len - skip) as usize;
        let n = avail.min(out.len() - done);
        let addr = s
            .addr
            .checked_add(skip)
            .ok_or_else(|| outside(s.addr, s.len))?;
        mem.read_slice(&mut out[done..done + n], addr)
            .map_err(|_| outside(addr, n as u64))?;
        done += n;
        skip = 0;
    }
    if done == out.len() {
        Ok(())
    } else {
        Err(short(segs, out.len() - done))
    }
}

/// Copies `data` into the stream formed by `segs` (from its start).
fn scatter(mem: &GuestMem, segs: &[Seg], data: &[u8]) -> Result<(), RequestError> {
    let mut done = 0usize;
    for s in segs {
        if done == data.len() {
            break;
        }
        let n = (s.len as usize).min(data.len() - done);
        mem.write_slice(&data[done..done + n], s.addr)
            .map_err(|_| outside(s.addr, n as u64))?;
        done += n;
    }
    if done == data.len() {
        Ok(())
    } else {
        Err(short(segs, data.len() - done))
    }
}

fn fallocate(f: &File, mode: libc::c_int, off: u64, len: u64) -> io::Result<()> {
    let (Ok(o), Ok(l)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: fallocate(2) on a file descriptor we own, with integer arguments.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, o, l) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Zeroes a range of the image: punch a hole (`unmap`) or zero it in place; falls back to
/// writing zeros where the filesystem supports neither.
fn zero_image_range(f: &File, off: u64, len: u64, unmap: bool) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let mode = if unmap {
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
    } else {
        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
    };
    match fallocate(f, mode, off, len) {
        Ok(()) => return Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
            ) => {}
        Err(e) => return Err(e),
    }
    let zeros = vec![0u8; (1 << 20).min(len as usize)];
    let mut at = off;
    while at < off + len {
        let n = (off + len - at).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Pops the status byte (the chain's last byte, device-writable, inside guest memory) off
/// `writable` and returns its address.
fn take_status_byte(
    mem: &GuestMem,
    last_writable: bool,
    writable: &mut Vec<Seg>,
) -> Option<GuestAddress> {
    if !last_writable {
        return None;
    }
    let last = writable.last_mut()?;
    if last.len == 0 {
        return None;
    }
    let status_addr = last.addr.checked_add(last.len - 1)?;
    if !GuestMemoryBackend::check_range(mem, status_addr, 1) {
        return None;
    }
    last.len -= 1;
    if last.len == 0 {
        writable.pop();
    }
    Some(status_addr)
}

/// `len` bytes are within the `max` one request may move.
fn check_size(len: u64, max: u64) -> Result<(), RequestError> {
    if len > max {
        Err(RequestError::TooLarge { len, max })
    } else {
        Ok(())
    }
}

/// The request type's name, for messages.
fn req_name(req_type: u32) -> &'static str {
    match req_type {
        virtio::VIRTIO_BLK_T_IN => "IN (read)",
        virtio::VIRTIO_BLK_T_OUT => "OUT (write)",
        virtio::VIRTIO_BLK_T_FLUSH => "FLUSH",
        virtio::VIRTIO_BLK_T_GET_ID => "GET_ID",
        virtio::VIRTIO_BLK_T_DISCARD => "DISCARD",
        virtio::VIRTIO_BLK_T_WRITE_ZEROES => "WRITE_ZEROES",
        _ => "unknown",
    }
}

impl BlkDevice {
    /// Opens `image` and builds the device around `log`.
    pub fn open(image: &Path, opts: DeviceOptions, log: Arc<LogWriter>) -> Result<Self, Error> {
        if opts.num_queues == 0 {
            return Err(Error::Usage("--num-queues must be at least 1".into()));
        }
        if !opts.queue_size.is_power_of_two() || opts.queue_size > 32768 {
            return Err(Error::Usage(
                "--queue-size must be a power of two between 1 and 32768".into(),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!opts.read_only)
            .open(image)
            .map_err(|e| Error::image(image, e, opts.read_only))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::image(image, e, opts.read_only))?;
        if !meta.is_file() {
            return Err(Error::Usage(format!(
                "image {} is not a regular file: pass a raw disk image file",
                image.display()
            )));
        }
        let capacity = meta.len() / SECTOR;
        if capacity == 0 {
            return Err(Error::Usage(format!(
                "image {} is smaller than one 512-byte sector: size it first (truncate -s 1G {})",
                image.display(),
                image.display()
            )));
        }
        Self::with_image(
            Arc::new(FileImage::new(file)),
            image,
            capacity * SECTOR,
            opts,
            log,
        )
    }

    /// Builds the device around any [`Image`] of `size` bytes (`path` only names it in
    /// messages).
    pub fn with_image(
        image: Arc<dyn Image>,
        path: &Path,
        size: u64,
        opts: DeviceOptions,
        log: Arc<LogWriter>,
    ) -> Result<Self, Error> {
        let capacity = size / SECTOR;
        if capacity == 0 {
            return Err(Error::Usage(format!(
                "image {} is smaller than one 512-byte sector",
                path.display()
            )));
        }
        let queues = (0..opts.num_queues).map(|_| Mutex::default()).collect();
        Ok(BlkDevice {
            image,
            image_path: path.to_path_buf(),
            capacity,
            log,
            mem: RwLock::new(GuestMemoryAtomic::new(GuestMemoryMmap::new())),
            acked: AtomicU64::new(0),
            event_idx: AtomicBool::new(false),
            wce: AtomicBool::new(true),
            queues,
            ranges: RangeLocks::default(),
            faults: Mutex::new(HostFaults::default()),
            bad_ring_reported: AtomicBool::new(false),
            request_errors: RequestErrorCounters::default(),
            log_full: AtomicBool::new(false),
            opts,
        })
    }

    /// The write log.
    pub fn log(&self) -> &Arc<LogWriter> {
        &self.log
    }

    /// Image capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Path of the image.
    pub fn image_path(&self) -> &Path {
        &self.image_path
    }

    /// Config space values.
    pub fn config(&self) -> BlkConfig {
        BlkConfig {
            capacity: self.capacity,
            // Linux needs seg_max ≤ queue size - 2 (header + status take two descriptors).
            seg_max: u32::from(self.opts.queue_size.saturating_sub(2).max(1)),
            blk_size: SECTOR as u32,
            wce: u8::from(self.wce.load(Ordering::Relaxed)),
            num_queues: self.opts.num_queues,
        }
    }

    /// Whether writes are cached (writeback) rather than written through.
    ///
    /// virtio 1.2 §5.2.6.3 / §5.2.5: with VIRTIO_BLK_F_CONFIG_WCE negotiated the driver picks
    /// the mode through the `writeback` config byte; without it the device is writeback iff
    /// VIRTIO_BLK_F_FLUSH was negotiated.
    pub fn writeback(&self) -> bool {
        let acked = self.acked.load(Ordering::Relaxed);
        if virtio::has(acked, vb::VIRTIO_BLK_F_CONFIG_WCE) {
            self.wce.load(Ordering::Relaxed)
        } else {
            virtio::has(acked, vb::VIRTIO_BLK_F_FLUSH)
        }
    }

    /// `len` bytes from `sector` are whole sectors inside the disk.
    fn check_range(&self, sector: u64, len: u64) -> Result<(), RequestError> {
        if len % SECTOR != 0 {
            return Err(RequestError::UnalignedLength { len });
        }
        let sectors = len / SECTOR;
        if sector
            .checked_add(sectors)
            .is_some_and(|end| end <= self.capacity)
        {
            Ok(())
        } else {
            Err(RequestError::OutOfRange {
                sector,
                sectors,
                capacity: self.capacity,
            })
        }
    }

    /// Requests that failed so far, per kind (guest errors and host faults alike).
    pub fn request_errors(&self) -> RequestErrorCounts {
        self.request_errors.snapshot()
    }

    /// Processes one descriptor chain and returns the used length to report.
    ///
    /// Buffer layout (virtio 1.2 §5.2.6): a device-readable 16-byte header, data buffers,
    /// and a device-writable status byte that is the chain's last byte. Per §2.7.4.1 the
    /// device must not rely on how the driver splits this into descriptors, so the header may
    /// share a descriptor with data and the status byte is the last byte of the last
    /// (device-writable) descriptor.
    ///
    /// The one place a status byte is written: a failed request is counted (and the first of
    /// its kind logged) here.
    fn process_chain<I>(&self, queue: u16, mem: &GuestMem, descs: I, state: &mut QueueState) -> u32
    where
        I: Iterator<Item = Descriptor>,
    {
        let mut readable: Vec<Seg> = Vec::new();
        let mut writable: Vec<Seg> = Vec::new();
        let mut misordered = false;
        let mut last_writable = false;
        for d in descs {
            let seg = Seg {
                addr: d.addr(),
                len: u64::from(d.len()),
            };
            if d.is_write_only() {
                writable.push(seg);
            } else {
                // §2.7.4.2: device-readable descriptors must come before device-writable ones.
                misordered |= !writable.is_empty();
                readable.push(seg);
            }
            last_writable = d.is_write_only();
        }
        // Without a device-writable last byte there is nowhere to report a status, so the
        // chain is completed with used len 0.
        let Some(status_addr) = take_status_byte(mem, last_writable, &mut writable) else {
            self.request_errors
                .record(queue, &RequestError::NoStatusByte);
            return 0;
        };
        let done = if misordered {
            Err(RequestError::MisorderedDescriptors)
        } else {
            self.execute(queue, mem, &readable, &writable, state)
        };
        let (status, written) = match done {
            Ok(n) => (virtio::VIRTIO_BLK_S_OK as u8, n),
            Err(e) => {
                self.request_errors.record(queue, &e);
                (e.status(), 0)
            }
        };
        if mem.write_obj(status, status_addr).is_err() {
            return 0;
        }
        written.saturating_add(1)
    }

    fn execute(
        &self,
        queue: u16,
        mem: &GuestMem,
        readable: &[Seg],
        writable: &[Seg],
        state: &mut QueueState,
    ) -> Done {
        // Every guest address must lie inside guest memory before we touch the image.
        if let Some(s) = readable
            .iter()
            .chain(writable)
            .find(|s| s.len != 0 && !GuestMemoryBackend::check_range(mem, s.addr, s.len as usize))
        {
            return Err(outside(s.addr, s.len));
        }
        let read_len = total(readable);
        if read_len < virtio::OUTHDR_LEN as u64 {
            return Err(RequestError::ShortHeader { len: read_len });
        }
        let mut hdr = [0u8; virtio::OUTHDR_LEN];
        gather(mem, readable, 0, &mut hdr)?;
        let raw_type = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let mut sector_b = [0u8; 8];
        sector_b.copy_from_slice(&hdr[8..16]);
        let sector = u64::from_le_bytes(sector_b);
        // VIRTIO_BLK_T_BARRIER is a legacy-interface bit (§5.2.6.3); QEMU masks it off. Keep it
        // as a log flag, execute the request normally.
        let barrier = raw_type & virtio::VIRTIO_BLK_T_BARRIER != 0;
        let req_type = raw_type & !virtio::VIRTIO_BLK_T_BARRIER;
        let out_len = read_len - virtio::OUTHDR_LEN as u64;
        let in_len = total(writable);
        let bflag = if barrier { flags::BARRIER } else { 0 };
        let wrong_dir = |readable| RequestError::WrongDirection {
            req: req_name(req_type),
            readable,
        };
        match req_type {
            virtio::VIRTIO_BLK_T_IN => {
                if out_len != 0 {
                    return Err(wrong_dir(true));
                }
                check_size(in_len, virtio::MAX_IO_BYTES)?;
                self.check_range(sector, in_len)?;
                let buf = state.scratch(in_len as usize);
                if let Err(e) = self.image.read_at(buf, sector * SECTOR) {
                    return Err(self.image_failed("read", sector, &e));
                }
                scatter(mem, writable, buf)?;
                Ok(in_len as u32)
            }
            virtio::VIRTIO_BLK_T_OUT => {
                // §5.2.6.2: a device offering VIRTIO_BLK_F_RO must fail writes with IOERR.
                if self.opts.read_only {
                    return Err(RequestError::ReadOnly);
                }
                if in_len != 0 {
                    return Err(wrong_dir(false));
                }
                check_size(out_len, virtio::MAX_IO_BYTES)?;
                self.check_range(sector, out_len)?;
                // Copy the data out of guest memory once; the hash, the image write and the
                // log all use this buffer, so the guest rewriting its buffer meanwhile can't
                // make the log disagree with the disk.
                let buf = state.scratch(out_len as usize);
                gather(mem, readable, virtio::OUTHDR_LEN as u64, buf)?;
                if out_len == 0 {
                    return Ok(0);
                }
                let entry = Entry::write(queue, sector, buf, self.durability_flag() | bflag);
                self.apply_logged(&entry, "write", || {
                    self.image.write_at(buf, sector * SECTOR)
                })?;
                Ok(0)
            }
            virtio::VIRTIO_BLK_T_FLUSH => {
                // Every record with a seq below `covers` was applied to the image before the
                // fdatasync starts, so it is durable once it returns; writes that race with
                // the flush are not claimed (Entry::flush). The record is appended after the
                // fdatasync, with FAILED if it failed, so a failed flush never counts.
                let covers = self.log.next_seq();
                let sync_err = if self.opts.read_only {
                    None
                } else {
                    self.image
                        .sync_data()
                        .err()
                        .map(|e| self.image_failed("fdatasync", 0, &e))
                };
                let fl = bflag | if sync_err.is_none() { 0 } else { flags::FAILED };
                if let Err(e) = self.log.append(&Entry::flush(queue, fl, covers)) {
                    return Err(self.log_failed(&e));
                }
                // Push the log's buffer to the kernel on every FLUSH, so what a completed
                // flush covers survives a crash of this process; --durable also survives
                // a host crash.
                let pushed = if self.opts.durable {
                    self.log.sync()
                } else {
                    self.log.flush()
                };
                if let Err(e) = pushed {
                    return Err(self.log_failed(&e));
                }
                match sync_err {
                    None => Ok(0),
                    Some(e) => Err(e),
                }
            }
            virtio::VIRTIO_BLK_T_GET_ID => {
                if out_len != 0 {
                    return Err(wrong_dir(true));
                }
                if in_len == 0 {
                    return Err(RequestError::NoIdBuffer);
                }
                // §5.2.6: 20 bytes, NUL padded; a shorter buffer gets a prefix.
                let mut id = [0u8; virtio::ID_BYTES];
                let s = self.opts.serial.as_bytes();
                let n = s.len().min(virtio::ID_BYTES);
                id[..n].copy_from_slice(&s[..n]);
                let n = (in_len as usize).min(virtio::ID_BYTES);
                scatter(mem, writable, &id[..n])?;
                Ok(n as u32)
            }
            virtio::VIRTIO_BLK_T_DISCARD | virtio::VIRTIO_BLK_T_WRITE_ZEROES => {
                if self.opts.read_only {
                    return Err(RequestError::ReadOnly);
                }
                if in_len != 0 {
                    return Err(wrong_dir(false));
                }
                self.discard_write_zeroes(queue, mem, req_type, readable, out_len, bflag)?;
                Ok(0)
            }
            // §5.2.6: a request type the device does not support gets VIRTIO_BLK_S_UNSUPP.
            _ => Err(RequestError::UnsupportedType { req_type }),
        }
    }

    fn discard_write_zeroes(
        &self,
        queue: u16,
        mem: &GuestMem,
        req_type: u32,
        readable: &[Seg],
        out_len: u64,
        bflag: u32,
    ) -> Result<(), RequestError> {
        let discard = req_type == virtio::VIRTIO_BLK_T_DISCARD;
        let seg_len = virtio::DWZ_SEG_LEN as u64;
        if out_len == 0 || out_len % seg_len != 0 {
            return Err(RequestError::BadSegmentList { len: out_len });
        }
        let nseg = out_len / seg_len;
        // Like QEMU: more segments than max_*_seg is UNSUPP.
        if nseg > u64::from(virtio::MAX_DWZ_SEG) {
            return Err(RequestError::TooManySegments {
                segments: nseg,
                max: virtio::MAX_DWZ_SEG,
            });
        }
        let mut segs = Vec::with_capacity(nseg as usize);
        for i in 0..nseg {
            let mut raw = [0u8; virtio::DWZ_SEG_LEN];
            gather(
                mem,
                readable,
                virtio::OUTHDR_LEN as u64 + i * seg_len,
                &mut raw,
            )?;
            let mut s8 = [0u8; 8];
            s8.copy_from_slice(&raw[0..8]);
            let sector = u64::from_le_bytes(s8);
            let num = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
            let fl = u32::from_le_bytes([raw[12], raw[13], raw[14], raw[15]]);
            // §5.2.6.2: unknown flags → UNSUPP; and for DISCARD the unmap flag → UNSUPP.
            if fl & !virtio::VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0 || (discard && fl != 0) {
                return Err(RequestError::UnsupportedFlags {
                    req: req_name(req_type),
                    flags: fl,
                });
            }
            let len = u64::from(num) * SECTOR;
            check_size(len, u64::from(virtio::MAX_DWZ_SECTORS) * SECTOR)?;
            self.check_range(sector, len)?;
            segs.push((
                sector,
                num,
                fl & virtio::VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0,
            ));
        }
        for (sector, num, unmap) in segs {
            if num == 0 {
                continue;
            }
            let len = u64::from(num) * SECTOR;
            // num ≤ MAX_DWZ_SECTORS, so len fits u32.
            let fl = self.durability_flag() | bflag;
            let (e, op) = if discard {
                (Entry::discard(queue, sector, len as u32, fl), "discard")
            } else {
                let uf = if unmap { flags::UNMAP } else { 0 };
                let e = Entry::write_zeroes(queue, sector, len as u32, fl | uf);
                (e, "write-zeroes")
            };
            // Discard deallocates (§5.2.6.2 "MAY deallocate"); we punch a hole, so discarded
            // sectors read back as zeros, which makes replays deterministic. WRITE_ZEROES
            // must read back as zeros; with UNMAP we also deallocate.
            self.apply_logged(&e, op, || {
                self.image
                    .zero_range(sector * SECTOR, len, discard || unmap)
            })?;
        }
        Ok(())
    }

    /// FUA when the device is writethrough: a write is then durable when it completes.
    fn durability_flag(&self) -> u32 {
        if self.writeback() {
            0
        } else {
            flags::FUA
        }
    }

    /// Applies `e` to the image with `apply`, logged: the sectors' range is held across
    /// queues (RangeLocks), the record's space is reserved before the image changes (a full
    /// or failed log refuses the request while the image is untouched), and the record is
    /// committed only once the change (and, writethrough, its fdatasync) succeeded. A
    /// failed change is not logged: the guest sees IOERR, so the sectors' contents are
    /// undefined to it (a partial pwrite may have changed them).
    fn apply_logged(
        &self,
        e: &Entry<'_>,
        op: &'static str,
        apply: impl FnOnce() -> io::Result<()>,
    ) -> Result<(), RequestError> {
        let _range = self
            .ranges
            .lock(e.sector, e.sector + u64::from(e.len) / SECTOR);
        let pending = self.log.prepare(e).map_err(|err| self.log_failed(&err))?;
        let applied = apply().and_then(|()| {
            if e.flags & flags::FUA != 0 {
                self.image.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(err) = applied {
            return Err(self.image_failed(op, e.sector, &err));
        }
        pending.commit().map_err(|err| self.log_failed(&err))?;
        Ok(())
    }

    /// The write log refused a record: printed once, and the request fails.
    fn log_failed(&self, e: &writelog::Error) -> RequestError {
        let mut f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        if f.log.is_none() {
            eprintln!("blkrec: write log failed, failing guest I/O from now on: {e}");
            f.log = Some(e.to_string());
        }
        // A full log stays full: its later refusals (Error::Failed) are "full" too.
        if matches!(e, writelog::Error::Full { .. }) {
            self.log_full.store(true, Ordering::Relaxed);
        }
        if self.log_full.load(Ordering::Relaxed) {
            RequestError::LogFull
        } else {
            RequestError::LogFailed
        }
    }

    /// A guest request failed because the host could not access the image: counted, and
    /// the first one printed, so an EIO the guest saw has a reason on the host.
    fn image_failed(&self, op: &'static str, sector: u64, e: &io::Error) -> RequestError {
        let mut f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        f.image_errors += 1;
        if f.first_image_error.is_none() {
            let msg = format!(
                "{op} at sector {sector} of {}: {e}",
                self.image_path.display()
            );
            eprintln!("blkrec: guest I/O failed on the host: {msg}");
            f.first_image_error = Some((msg, e.raw_os_error()));
        }
        RequestError::image_io(op, sector, e)
    }

    /// What went wrong on the host side so far (image and log errors), for the run's
    /// verdict: a guest whose I/O failed because of the host is not a kernel bug.
    pub fn faults(&self) -> HostFaults {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Drains the available ring of `vring` (queue `queue`). Returns whether some completions
    /// are still to be signalled, and how many chains were taken.
    pub(crate) fn process_queue(&self, queue: u16, vring: &Vring) -> io::Result<(bool, u64)> {
        let mem = self.mem.read().unwrap_or_else(|p| p.into_inner()).memory();
        let mut state = self.queues[queue as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // When the work behind the completions not yet signalled began.
        let mut batch_start = Instant::now();
        let mut unsignalled = false;
        let mut taken = 0u64;
        loop {
            // Take the vring lock only to pop; I/O runs without it.
            let chain = vring.get_mut().get_queue_mut().pop_descriptor_chain(&*mem);
            let Some(chain) = chain else { break };
            taken += 1;
            let head = chain.head_index();
            let used_len = self.process_chain(queue, &mem, chain, &mut state);
            if let Err(e) = vring.add_used(head, used_len) {
                // Only a bogus head index gets here; nothing to complete.
                eprintln!("blkrec: queue {queue}: cannot complete descriptor {head}: {e}");
                continue;
            }
            unsignalled = true;
            // Signal after `signal_every` of work instead of only when the ring is drained:
            // with large requests (1 MiB at queue depth 4) waiting for the drain leaves the
            // driver nothing to refill until every request is done, and the queue runs dry.
            // Small requests still share one interrupt per `signal_every` of work.
            if batch_start.elapsed() >= self.opts.signal_every {
                self.signal_used(vring)?;
                batch_start = Instant::now();
                unsignalled = false;
            }
        }
        Ok((unsignalled, taken))
    }

    fn report_bad_ring(&self, queue: u16) {
        if !self.bad_ring_reported.swap(true, Ordering::Relaxed) {
            eprintln!(
                "blkrec: queue {queue}: the driver's available ring index is invalid; ignoring the queue until its next kick"
            );
        }
    }

    /// Signals the used ring; with EVENT_IDX only if the driver asked for it (virtio 1.2
    /// §2.7.10: `used_event`).
    fn signal_used(&self, vring: &Vring) -> io::Result<()> {
        if !self.event_idx.load(Ordering::Relaxed) {
            return vring.signal_used_queue();
        }
        match vring.needs_notification() {
            Ok(true) | Err(_) => vring.signal_used_queue(),
            Ok(false) => Ok(()),
        }
    }

    /// Handles a kick (or the spurious call vhost-user-backend 0.24 makes on ring enable).
    pub fn handle_queue_event(&self, queue: u16, vring: &Vring) -> io::Result<()> {
        if self.event_idx.load(Ordering::Relaxed) {
            // With EVENT_IDX the driver may not kick for buffers added while we work, so
            // re-enable notifications and loop until nothing new arrived (virtio 1.2 §2.7.10).
            loop {
                let _ = vring.disable_notification();
                let (unsignalled, taken) = self.process_queue(queue, vring)?;
                if unsignalled {
                    self.signal_used(vring)?;
                }
                match vring.enable_notification() {
                    // More buffers, but none could be taken: the driver's avail index is
                    // bogus (virtio 1.2 §2.7.13: more than the queue size ahead of the used
                    // ones), so pop_descriptor_chain() refuses every time. Stop until the
                    // next kick instead of spinning (found by fuzz target blk_request).
                    Ok(true) if taken == 0 => {
                        self.report_bad_ring(queue);
                        break;
                    }
                    Ok(true) => continue,
                    Ok(false) | Err(_) => break,
                }
            }
        } else if self.process_queue(queue, vring)?.0 {
            self.signal_used(vring)?;
        }
        Ok(())
    }
}

impl VhostUserBackend for BlkDevice {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        usize::from(self.opts.num_queues)
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.opts.queue_size)
    }

    fn features(&self) -> u64 {
        virtio::device_features(self.opts.read_only)
    }

    fn acked_features(&self, features: u64) {
        self.acked.store(features, Ordering::Relaxed);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // CONFIG: QEMU reads the config space at realize. MQ: multiqueue. Never
        // INFLIGHT_SHMFD: vhost-user-backend does not implement it.
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn update_memory(&self, mem: Gm) -> io::Result<()> {
        *self.mem.write().unwrap_or_else(|p| p.into_inner()) = mem;
        Ok(())
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        self.config().read(offset, size)
    }

    fn set_config(&self, offset: u32, buf: &[u8]) -> io::Result<()> {
        // Only the writeback byte is driver-writable (§5.2.4: "writeback" with
        // VIRTIO_BLK_F_CONFIG_WCE); QEMU writes exactly that byte.
        if offset != virtio::CONFIG_WCE_OFFSET || buf.len() != 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "only the 1-byte writeback field of the config space is writable",
            ));
        }
        let wb = buf[0] != 0;
        let was = self.wce.swap(wb, Ordering::Relaxed);
        if was && !wb && !self.opts.read_only {
            // Switching to writethrough: make what was cached durable now.
            self.image.sync_data()?;
        }
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        // One worker thread per queue; device_event is then always 0 and vrings has one entry.
        (0..self.opts.num_queues).map(|i| 1u64 << i).collect()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Vring],
        thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unexpected epoll event",
            ));
        }
        let (Some(vring), 0) = (vrings.first(), device_event) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unexpected device event",
            ));
        };
        let queue = u16::try_from(thread_id)
            .ok()
            .filter(|q| *q < self.opts.num_queues)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "unexpected thread id"))?;
        self.handle_queue_event(queue, vring)
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
