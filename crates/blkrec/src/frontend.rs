//! A minimal vhost-user-blk frontend with a split-virtqueue driver (cargo feature `frontend`).
//!
//! It does what QEMU does for `-device vhost-user-blk-pci`, minus the guest: shares a memfd
//! as "guest memory" with the backend, negotiates features, sets up split virtqueues, and
//! posts virtio-blk requests itself. It works with any vhost-user-blk backend (blkrec,
//! qemu-storage-daemon, ...), so tests and benchmarks can drive one without booting a VM.
//!
//! ```no_run
//! use blkrec::frontend::{BlkClient, ClientOptions};
//! let mut c = BlkClient::connect("/tmp/blk.sock", &ClientOptions::default())?;
//! assert_eq!(c.write(0, 8, &[0xab; 4096])?, 0); // status VIRTIO_BLK_S_OK
//! let (status, data) = c.read(0, 8, 4096)?;
//! c.flush(0)?;
//! c.shutdown()?;
//! # Ok::<(), blkrec::frontend::FrontendError>(())
//! ```
//!
//! Memory layout (guest physical addresses): for each queue, its descriptor table, avail ring
//! and used ring (page aligned), then for each in-flight slot a 4 KiB page holding the request
//! header (offset 0), status byte (offset 16) and discard segment (offset 32), followed by
//! `max_io` bytes of data buffer. Slot `i` always uses descriptors `3i`, `3i+1`, `3i+2`.

use crate::virtio::{self, BlkConfig};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};
use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_blk as vb;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Frontend errors.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// vhost-user protocol error.
    #[error("vhost-user {what}: {source}")]
    Vhost {
        /// Which step.
        what: &'static str,
        /// The error.
        #[source]
        source: vhost::Error,
    },
    /// OS error.
    #[error("{what}: {source}")]
    Io {
        /// Which step.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Guest memory setup/access failed.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The backend can't do what was asked.
    #[error("backend: {0}")]
    Backend(String),
    /// Bad request from the caller.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No free slot: reap completions first.
    #[error("queue {0} is full: reap completions before submitting more")]
    QueueFull(usize),
    /// Waited too long for a completion.
    #[error("timed out after {0:?} waiting for a completion (backend dead or stuck?)")]
    Timeout(Duration),
}

type Result<T> = std::result::Result<T, FrontendError>;

fn vh(what: &'static str) -> impl FnOnce(vhost::Error) -> FrontendError {
    move |source| FrontendError::Vhost { what, source }
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> FrontendError {
    move |source| FrontendError::Io { what, source }
}

fn mem_err(e: impl std::fmt::Display) -> FrontendError {
    FrontendError::Memory(e.to_string())
}

/// Connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Queues to set up (the backend must support at least this many).
    pub num_queues: u16,
    /// Virtqueue size (power of two).
    pub queue_size: u16,
    /// Largest data transfer per request (bytes, multiple of 4096).
    pub max_io: usize,
    /// Max in-flight requests per queue (capped at queue_size / 3).
    pub queue_depth: u16,
    /// Negotiate VIRTIO_RING_F_EVENT_IDX if offered (QEMU does by default).
    pub event_idx: bool,
    /// Timeout of blocking waits.
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            num_queues: 1,
            queue_size: 128,
            max_io: 128 * 1024,
            queue_depth: 32,
            event_idx: true,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A virtio-blk request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkOp<'a> {
    /// Read `len` bytes at `sector`.
    Read {
        /// First sector.
        sector: u64,
        /// Bytes.
        len: usize,
    },
    /// Write `data` at `sector`.
    Write {
        /// First sector.
        sector: u64,
        /// Data.
        data: &'a [u8],
    },
    /// Flush.
    Flush,
    /// GET_ID (20 bytes).
    GetId,
    /// Discard `num_sectors` at `sector`.
    Discard {
        /// First sector.
        sector: u64,
        /// Count.
        num_sectors: u32,
    },
    /// Write zeroes.
    WriteZeroes {
        /// First sector.
        sector: u64,
        /// Count.
        num_sectors: u32,
        /// VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP.
        unmap: bool,
    },
}

/// A finished request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Token returned by [`BlkClient::submit`].
    pub token: u64,
    /// Status byte (`VIRTIO_BLK_S_*`).
    pub status: u8,
    /// Used length reported by the device.
    pub used_len: u32,
    /// Data read (reads and GET_ID).
    pub data: Option<Vec<u8>>,
}

struct Slot {
    token: u64,
    in_len: usize,
}

struct SplitQueue {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    slot_base: u64,
    slot_stride: u64,
    slots: Vec<Option<Slot>>,
    free: Vec<u16>,
    next_avail: u16,
    last_used: u16,
    kick: EventFd,
    call: EventFd,
}

/// Connected vhost-user-blk frontend.
pub struct BlkClient {
    frontend: Frontend,
    mem: GuestMemoryMmap<()>,
    queues: Vec<SplitQueue>,
    config: BlkConfig,
    acked: u64,
    event_idx: bool,
    max_io: usize,
    next_token: u64,
    timeout: Duration,
}

const PAGE: u64 = 4096;

fn align(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

fn memfd(size: u64) -> Result<File> {
    // SAFETY: memfd_create with a NUL-terminated name; the fd is owned by the File below.
    let fd = unsafe { libc::memfd_create(c"blkrec-frontend".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io("memfd_create")(std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size).map_err(io("size the memfd"))?;
    Ok(f)
}

impl BlkClient {
    /// Connects to a vhost-user-blk backend listening on `socket` and sets up the queues.
    pub fn connect(socket: impl AsRef<Path>, opts: &ClientOptions) -> Result<Self> {
        if opts.num_queues == 0 || !opts.queue_size.is_power_of_two() || opts.queue_size < 4 {
            return Err(FrontendError::Invalid(
                "num_queues >= 1 and queue_size a power of two >= 4".into(),
            ));
        }
        let max_io = align(opts.max_io.max(4096) as u64, PAGE);
        let depth = opts.queue_depth.clamp(1, opts.queue_size / 3);
        let qs = u64::from(opts.queue_size);
        let avail_off = 16 * qs;
        let used_off = align(avail_off + 6 + 2 * qs, PAGE);
        let ring_bytes = align(used_off + 6 + 8 * qs, PAGE);
        let slot_stride = PAGE + max_io;
        let per_queue = ring_bytes + u64::from(depth) * slot_stride;
        let mem_size = per_queue * u64::from(opts.num_queues);

        let file = memfd(mem_size)?;
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files(&[(
            GuestAddress(0),
            mem_size as usize,
            Some(FileOffset::new(file, 0)),
        )])
        .map_err(mem_err)?;
        let host = mem.get_host_address(GuestAddress(0)).map_err(mem_err)? as u64;
        let region = mem
            .find_region(GuestAddress(0))
            .ok_or_else(|| mem_err("memfd region lost"))?;
        let region_info =
            VhostUserMemoryRegionInfo::from_guest_region(region).map_err(vh("describe memory"))?;

        let mut frontend = Frontend::connect(socket.as_ref(), u64::from(opts.num_queues))
            .map_err(vh("connect"))?;
        frontend.set_owner().map_err(vh("SET_OWNER"))?;
        let offered = frontend.get_features().map_err(vh("GET_FEATURES"))?;
        let mut want = (1u64 << VIRTIO_F_VERSION_1)
            | (1 << vb::VIRTIO_BLK_F_SEG_MAX)
            | (1 << vb::VIRTIO_BLK_F_BLK_SIZE)
            | (1 << vb::VIRTIO_BLK_F_FLUSH)
            | (1 << vb::VIRTIO_BLK_F_CONFIG_WCE)
            | (1 << vb::VIRTIO_BLK_F_MQ)
            | (1 << vb::VIRTIO_BLK_F_DISCARD)
            | (1 << vb::VIRTIO_BLK_F_WRITE_ZEROES)
            | (1 << vb::VIRTIO_BLK_F_RO)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if opts.event_idx {
            want |= 1 << VIRTIO_RING_F_EVENT_IDX;
        }
        let acked = offered & want;
        if acked & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() == 0 {
            return Err(FrontendError::Backend(
                "backend does not offer VHOST_USER_F_PROTOCOL_FEATURES".into(),
            ));
        }
        let proto = frontend
            .get_protocol_features()
            .map_err(vh("GET_PROTOCOL_FEATURES"))?;
        let proto_want = VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK;
        let proto_acked = proto & proto_want;
        frontend
            .set_protocol_features(proto_acked)
            .map_err(vh("SET_PROTOCOL_FEATURES"))?;
        if proto_acked.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            // Every message is acknowledged, so errors show up at the step that caused them.
            frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        if opts.num_queues > 1 {
            let n = if proto_acked.contains(VhostUserProtocolFeatures::MQ) {
                frontend.get_queue_num().map_err(vh("GET_QUEUE_NUM"))?
            } else {
                1
            };
            if n < u64::from(opts.num_queues) {
                return Err(FrontendError::Backend(format!(
                    "backend supports {n} queues, {} requested",
                    opts.num_queues
                )));
            }
        }
        frontend.set_features(acked).map_err(vh("SET_FEATURES"))?;
        let config = if proto_acked.contains(VhostUserProtocolFeatures::CONFIG) {
            let buf = [0u8; 60];
            let (_, raw) = frontend
                .get_config(0, 60, VhostUserConfigFlags::WRITABLE, &buf)
                .map_err(vh("GET_CONFIG"))?;
            BlkConfig::from_bytes(&raw)
                .ok_or_else(|| FrontendError::Backend("short config space".into()))?
        } else {
            return Err(FrontendError::Backend(
                "backend does not offer VHOST_USER_PROTOCOL_F_CONFIG (no disk size)".into(),
            ));
        };
        frontend
            .set_mem_table(&[region_info])
            .map_err(vh("SET_MEM_TABLE"))?;

        let mut queues = Vec::new();
        for q in 0..usize::from(opts.num_queues) {
            let base = per_queue * q as u64;
            let sq = SplitQueue {
                size: opts.queue_size,
                desc: base,
                avail: base + avail_off,
                used: base + used_off,
                slot_base: base + ring_bytes,
                slot_stride,
                slots: (0..depth).map(|_| None).collect(),
                free: (0..depth).rev().collect(),
                next_avail: 0,
                last_used: 0,
                kick: EventFd::new(EFD_NONBLOCK).map_err(io("eventfd"))?,
                call: EventFd::new(EFD_NONBLOCK).map_err(io("eventfd"))?,
            };
            frontend
                .set_vring_num(q, opts.queue_size)
                .map_err(vh("SET_VRING_NUM"))?;
            frontend
                .set_vring_base(q, 0)
                .map_err(vh("SET_VRING_BASE"))?;
            // Ring addresses are frontend virtual addresses (vhost-user spec).
            let cfg = VringConfigData {
                queue_max_size: opts.queue_size,
                queue_size: opts.queue_size,
                flags: 0,
                desc_table_addr: host + sq.desc,
                used_ring_addr: host + sq.used,
                avail_ring_addr: host + sq.avail,
                log_addr: None,
            };
            frontend
                .set_vring_addr(q, &cfg)
                .map_err(vh("SET_VRING_ADDR"))?;
            frontend
                .set_vring_call(q, &sq.call)
                .map_err(vh("SET_VRING_CALL"))?;
            frontend
                .set_vring_kick(q, &sq.kick)
                .map_err(vh("SET_VRING_KICK"))?;
            frontend
                .set_vring_enable(q, true)
                .map_err(vh("SET_VRING_ENABLE"))?;
            queues.push(sq);
        }
        Ok(BlkClient {
            frontend,
            mem,
            queues,
            config,
            acked,
            event_idx: acked & (1 << VIRTIO_RING_F_EVENT_IDX) != 0,
            max_io: max_io as usize,
            next_token: 0,
            timeout: opts.timeout,
        })
    }

    /// Config space read at connect time.
    pub fn config(&self) -> BlkConfig {
        self.config
    }

    /// Disk size in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.config.capacity
    }

    /// Negotiated virtio features.
    pub fn acked_features(&self) -> u64 {
        self.acked
    }

    /// Largest data transfer per request.
    pub fn max_io(&self) -> usize {
        self.max_io
    }

    /// Number of queues.
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// Requests in flight on queue `q`.
    pub fn in_flight(&self, q: usize) -> usize {
        self.queues
            .get(q)
            .map_or(0, |sq| sq.slots.len() - sq.free.len())
    }

    /// Free slots on queue `q`.
    pub fn free_slots(&self, q: usize) -> usize {
        self.queues.get(q).map_or(0, |sq| sq.free.len())
    }

    /// Sets the device's cache mode through the config space (`wce` byte).
    pub fn set_writeback(&mut self, writeback: bool) -> Result<()> {
        self.frontend
            .set_config(
                virtio::CONFIG_WCE_OFFSET,
                VhostUserConfigFlags::WRITABLE,
                &[u8::from(writeback)],
            )
            .map_err(vh("SET_CONFIG"))
    }

    fn queue(&mut self, q: usize) -> Result<&mut SplitQueue> {
        self.queues
            .get_mut(q)
            .ok_or_else(|| FrontendError::Invalid(format!("no queue {q}")))
    }

    /// Posts `op` on queue `q` without kicking; returns its token. Call [`Self::kick`] after
    /// a batch.
    pub fn submit(&mut self, q: usize, op: BlkOp<'_>) -> Result<u64> {
        let max_io = self.max_io;
        let (req_type, sector, out_data, in_len, seg): (u32, u64, &[u8], usize, Option<[u8; 16]>) =
            match op {
                BlkOp::Read { sector, len } => (vb::VIRTIO_BLK_T_IN, sector, &[], len, None),
                BlkOp::Write { sector, data } => (vb::VIRTIO_BLK_T_OUT, sector, data, 0, None),
                BlkOp::Flush => (vb::VIRTIO_BLK_T_FLUSH, 0, &[], 0, None),
                BlkOp::GetId => (vb::VIRTIO_BLK_T_GET_ID, 0, &[], virtio::ID_BYTES, None),
                BlkOp::Discard {
                    sector,
                    num_sectors,
                }
                | BlkOp::WriteZeroes {
                    sector,
                    num_sectors,
                    ..
                } => {
                    let mut s = [0u8; 16];
                    s[0..8].copy_from_slice(&sector.to_le_bytes());
                    s[8..12].copy_from_slice(&num_sectors.to_le_bytes());
                    let (t, fl) = match op {
                        BlkOp::WriteZeroes { unmap: true, .. } => (
                            vb::VIRTIO_BLK_T_WRITE_ZEROES,
                            vb::VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
                        ),
                        BlkOp::WriteZeroes { .. } => (vb::VIRTIO_BLK_T_WRITE_ZEROES, 0),
                        _ => (vb::VIRTIO_BLK_T_DISCARD, 0),
                    };
                    s[12..16].copy_from_slice(&fl.to_le_bytes());
                    (t, 0, &[], 0, Some(s))
                }
            };
        if out_data.len() > max_io || in_len > max_io {
            return Err(FrontendError::Invalid(format!(
                "transfer larger than max_io ({max_io} bytes)"
            )));
        }
        let token = self.next_token;
        let mem = self.mem.clone();
        let sq = self.queue(q)?;
        let Some(slot) = sq.free.pop() else {
            return Err(FrontendError::QueueFull(q));
        };
        let base = sq.slot_base + u64::from(slot) * sq.slot_stride;
        let (hdr, status, segaddr, data) = (base, base + 16, base + 32, base + PAGE);
        let put = |res: std::result::Result<(), vm_memory::GuestMemoryError>| res.map_err(mem_err);
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&req_type.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        put(mem.write_slice(&h, GuestAddress(hdr)))?;
        put(mem.write_obj(0xffu8, GuestAddress(status)))?;
        let d0 = 3 * slot;
        let mut descs: Vec<(u64, u32, u16)> = vec![(hdr, 16, 0)];
        if let Some(s) = seg {
            put(mem.write_slice(&s, GuestAddress(segaddr)))?;
            descs.push((segaddr, 16, 0));
        } else if !out_data.is_empty() {
            put(mem.write_slice(out_data, GuestAddress(data)))?;
            descs.push((data, out_data.len() as u32, 0));
        } else if in_len > 0 {
            descs.push((data, in_len as u32, VRING_DESC_F_WRITE as u16));
        }
        descs.push((status, 1, VRING_DESC_F_WRITE as u16));
        let n = descs.len();
        for (i, (addr, len, flags)) in descs.into_iter().enumerate() {
            let idx = d0 + i as u16;
            let (flags, next) = if i + 1 < n {
                (flags | VRING_DESC_F_NEXT as u16, idx + 1)
            } else {
                (flags, 0)
            };
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&addr.to_le_bytes());
            raw[8..12].copy_from_slice(&len.to_le_bytes());
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..16].copy_from_slice(&next.to_le_bytes());
            put(mem.write_slice(&raw, GuestAddress(sq.desc + 16 * u64::from(idx))))?;
        }
        // avail ring: ring[next_avail % size] = head, then publish idx (virtio 1.2 §2.7.13).
        let ring_at = sq.avail + 4 + 2 * u64::from(sq.next_avail % sq.size);
        put(mem.write_obj(d0.to_le(), GuestAddress(ring_at)))?;
        sq.next_avail = sq.next_avail.wrapping_add(1);
        fence(Ordering::Release);
        mem.store(
            sq.next_avail.to_le(),
            GuestAddress(sq.avail + 2),
            Ordering::Release,
        )
        .map_err(mem_err)?;
        sq.slots[usize::from(slot)] = Some(Slot { token, in_len });
        self.next_token += 1;
        Ok(token)
    }

    /// Notifies the backend that queue `q` has new requests.
    pub fn kick(&self, q: usize) -> Result<()> {
        let sq = self
            .queues
            .get(q)
            .ok_or_else(|| FrontendError::Invalid(format!("no queue {q}")))?;
        // Always kicking is allowed even with EVENT_IDX (the device just gets extra kicks).
        fence(Ordering::SeqCst);
        sq.kick.write(1).map_err(io("kick"))
    }

    /// Collects finished requests of queue `q` without blocking.
    pub fn poll(&mut self, q: usize) -> Result<Vec<Completion>> {
        let mem = self.mem.clone();
        let event_idx = self.event_idx;
        let sq = self.queue(q)?;
        let mut out = Vec::new();
        loop {
            let used_idx: u16 = u16::from_le(
                mem.load(GuestAddress(sq.used + 2), Ordering::Acquire)
                    .map_err(mem_err)?,
            );
            while sq.last_used != used_idx {
                let at = sq.used + 4 + 8 * u64::from(sq.last_used % sq.size);
                let id: u32 = u32::from_le(mem.read_obj(GuestAddress(at)).map_err(mem_err)?);
                let len: u32 = u32::from_le(mem.read_obj(GuestAddress(at + 4)).map_err(mem_err)?);
                sq.last_used = sq.last_used.wrapping_add(1);
                let slot = (id / 3) as usize;
                let Some(s) = (id % 3 == 0)
                    .then(|| sq.slots.get_mut(slot))
                    .flatten()
                    .and_then(Option::take)
                else {
                    return Err(FrontendError::Backend(format!(
                        "used ring returned unknown head {id}"
                    )));
                };
                sq.free.push(slot as u16);
                let base = sq.slot_base + slot as u64 * sq.slot_stride;
                let status: u8 = mem.read_obj(GuestAddress(base + 16)).map_err(mem_err)?;
                let data = if s.in_len > 0 {
                    let mut v = vec![0u8; s.in_len];
                    mem.read_slice(&mut v, GuestAddress(base + PAGE))
                        .map_err(mem_err)?;
                    Some(v)
                } else {
                    None
                };
                out.push(Completion {
                    token: s.token,
                    status,
                    used_len: len,
                    data,
                });
            }
            if !event_idx {
                break;
            }
            // Ask for an interrupt on the next completion (used_event, §2.7.10), then re-check
            // so a completion that raced with this update isn't missed.
            let ue = sq.avail + 4 + 2 * u64::from(sq.size);
            mem.store(sq.last_used.to_le(), GuestAddress(ue), Ordering::Release)
                .map_err(mem_err)?;
            fence(Ordering::SeqCst);
            let again: u16 = u16::from_le(
                mem.load(GuestAddress(sq.used + 2), Ordering::Acquire)
                    .map_err(mem_err)?,
            );
            if again == sq.last_used {
                break;
            }
        }
        Ok(out)
    }

    /// Waits (up to the client timeout) until queue `q` has at least one completion.
    pub fn wait(&mut self, q: usize) -> Result<Vec<Completion>> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let got = self.poll(q)?;
            if !got.is_empty() {
                return Ok(got);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(FrontendError::Timeout(self.timeout));
            }
            let call = self.queue(q)?.call.as_raw_fd();
            let mut pfd = libc::pollfd {
                fd: call,
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(100) as libc::c_int;
            // SAFETY: poll(2) on one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, ms.max(1)) };
            let _ = self.queue(q)?.call.read();
        }
    }

    /// Waits (up to the client timeout) until at least one of `queues` has a completion and
    /// returns what all of them have, tagged with the queue index. Lets one thread drive
    /// several queues without busy polling.
    pub fn wait_any(&mut self, queues: &[usize]) -> Result<Vec<(usize, Completion)>> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let mut got = Vec::new();
            for &q in queues {
                got.extend(self.poll(q)?.into_iter().map(|c| (q, c)));
            }
            if !got.is_empty() {
                return Ok(got);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(FrontendError::Timeout(self.timeout));
            }
            let mut pfds = Vec::with_capacity(queues.len());
            for &q in queues {
                pfds.push(libc::pollfd {
                    fd: self.queue(q)?.call.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            let ms = left.as_millis().min(100) as libc::c_int;
            // SAFETY: poll(2) on a valid array of `pfds.len()` pollfds.
            unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms.max(1)) };
            for &q in queues {
                let _ = self.queue(q)?.call.read();
            }
        }
    }

    /// Submits `op`, kicks, and waits for it.
    pub fn execute(&mut self, q: usize, op: BlkOp<'_>) -> Result<Completion> {
        let token = self.submit(q, op)?;
        self.kick(q)?;
        let mut mine = None;
        while mine.is_none() {
            for c in self.wait(q)? {
                if c.token == token {
                    mine = Some(c);
                }
            }
        }
        mine.ok_or_else(|| FrontendError::Backend("completion lost".into()))
    }

    /// Writes `data` at `sector`; returns the status byte.
    pub fn write(&mut self, q: usize, sector: u64, data: &[u8]) -> Result<u8> {
        Ok(self.execute(q, BlkOp::Write { sector, data })?.status)
    }

    /// Reads `len` bytes at `sector`; returns (status, data).
    pub fn read(&mut self, q: usize, sector: u64, len: usize) -> Result<(u8, Vec<u8>)> {
        let c = self.execute(q, BlkOp::Read { sector, len })?;
        Ok((c.status, c.data.unwrap_or_default()))
    }

    /// Flushes; returns the status byte.
    pub fn flush(&mut self, q: usize) -> Result<u8> {
        Ok(self.execute(q, BlkOp::Flush)?.status)
    }

    /// GET_ID; returns (status, 20 id bytes).
    pub fn get_id(&mut self, q: usize) -> Result<(u8, Vec<u8>)> {
        let c = self.execute(q, BlkOp::GetId)?;
        Ok((c.status, c.data.unwrap_or_default()))
    }

    /// Stops the rings (GET_VRING_BASE, like QEMU on VM stop) and disconnects.
    pub fn shutdown(self) -> Result<()> {
        for q in 0..self.queues.len() {
            self.frontend
                .get_vring_base(q)
                .map_err(vh("GET_VRING_BASE"))?;
        }
        Ok(())
    }
}
