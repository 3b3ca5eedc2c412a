//! Model and property checks for the virtio-blk request path of `blkrec::BlkDevice`.
//!
//! Shared by the `blk_request` fuzz target and `crates/blkrec/tests/prop_requests.rs` (which
//! includes this file with `#[path]`), so it only uses crates both can see: blkrec and its
//! normal dependencies, virtio-queue's `test-utils` mock, writelog and tempfile.
//!
//! One [`Input`] is a device configuration and a list of driver operations. [`run`] builds a
//! fresh device over a 64 KiB image and a write log (with data), plays the operations through
//! the `VhostUserBackend` API (`update_memory`, `acked_features`, `set_event_idx`,
//! `set_config`, `handle_event`) with a split virtqueue in guest memory, and panics if a
//! property fails:
//!
//! * every completed chain that has a status byte gets a used length of at least 1, no more
//!   than its device-writable bytes, and a status byte that is OK, IOERR or UNSUPP; a chain
//!   without one gets used length 0; a bogus head is never completed;
//! * an OK IN returns exactly the image's bytes (and used length = data + 1), an OK GET_ID
//!   the serial;
//! * requests the spec forbids (misordered descriptors, short header, unaligned or
//!   out-of-range sectors, writes to a read-only device, unknown types) are never OK;
//! * the image equals a shadow model that only OK writes / discards / write-zeroes change;
//! * the log holds exactly one record per OK non-empty write / discard / write-zeroes and
//!   per OK flush, in completion order, with the request's sector, length, flags and data;
//! * replaying the log onto the original image reproduces the final image.
//!
//! Before every `handle_event` the harness copies guest memory and decodes, with
//! virtio-queue's own `Queue` on that copy, the chains the device is about to pop, so the
//! model sees exactly what the device sees even when buffers overlap descriptor tables.
#![allow(dead_code)]

use blkrec::{BlkDevice, DeviceOptions, GuestMem, Vring};
use std::fs;
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use vhost_user_backend::{VhostUserBackend, VringT};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::{AvailRing, DescriptorTable, UsedRing};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use writelog::{flags, Kind, LogOptions, LogPosition, LogReader, LogWriter};

// ---- fixed geometry --------------------------------------------------------------------------

/// Image size: 128 sectors.
pub const IMG_LEN: usize = 64 << 10;
const SECTOR: u64 = 512;
const CAP: u64 = IMG_LEN as u64 / SECTOR;
/// Guest memory: two 64 KiB regions with a 4 KiB hole between them.
const R0: (u64, usize) = (0, 0x1_0000);
const R1: (u64, usize) = (0x1_1000, 0x1_0000);
const MEM_END: u64 = R1.0 + R1.1 as u64;
/// Split ring layout (for queue size up to 256): descriptor table, avail ring, used ring.
const DESC_ADDR: u64 = 0;
const AVAIL_ADDR: u64 = 0x1000;
const USED_ADDR: u64 = 0x1400;
const RING_END: u64 = 0x2000;
/// Where the harness places headers, status bytes and indirect tables (region 0)...
const LOW: (u64, u64) = (RING_END, R0.0 + R0.1 as u64);
/// ...and data buffers (region 1).
const DATA: (u64, u64) = (R1.0, MEM_END);
const MAX_OPS: usize = 48;
/// Log size cap, and the most the harness lets requests add to the log (it withdraws chains
/// that could go past it, so a full log never turns writes into IOERR).
const LOG_MAX: u64 = 512 << 10;
const LOG_BUDGET: u64 = 384 << 10;
const MAX_BYTES: usize = 4096;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const T_DISCARD: u32 = 11;
const T_WZ: u32 = 13;
const T_BARRIER: u32 = 0x8000_0000;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
const W: u16 = VRING_DESC_F_WRITE as u16;
const N: u16 = VRING_DESC_F_NEXT as u16;
const I: u16 = VRING_DESC_F_INDIRECT as u16;
const SERIALS: [&str; 2] = ["blkrec", "0123456789abcdefghijKLMN"];

/// Environment variable that lets inputs through that hit the known bugs listed in
/// fuzz/README.md (by default they are steered around, so fuzzing goes on past them).
pub const ALLOW_KNOWN: &str = "E4RACE_FUZZ_ALLOW_KNOWN";

// ---- input -----------------------------------------------------------------------------------

fuzz_input! {
/// Device configuration.
#[derive(Debug, Clone)]
pub struct Cfg {
    pub read_only: bool,
    /// Queue size is 1 << (qsize_log2 % 9).
    pub qsize_log2: u8,
    /// Features acked: `device features & mask`.
    pub features_mask: u64,
    pub event_idx: bool,
    /// `signal_every` zero (signal after every completion) instead of the default.
    pub signal_every_zero: bool,
    /// Install a call eventfd.
    pub call_fd: bool,
    pub serial: bool,
}
}

fuzz_input! {
/// A guest physical address, biased towards interesting places.
#[derive(Debug, Clone, Copy)]
pub enum Addr {
    /// In the data area (region 1).
    Data(u16),
    /// In region 0 after the rings.
    Low(u16),
    /// Around the hole between the regions (straddling it, or inside).
    Gap(u16),
    /// Near the end of guest memory.
    End(u16),
    /// In the descriptor table / rings.
    Ring(u16),
    Raw(u64),
}
}

impl Addr {
    pub fn get(self) -> u64 {
        match self {
            Addr::Data(x) => DATA.0 + u64::from(x) % (DATA.1 - DATA.0),
            Addr::Low(x) => LOW.0 + u64::from(x) % (LOW.1 - LOW.0),
            Addr::Gap(x) => 0x1_0000 - 0x800 + u64::from(x) % 0x2000,
            Addr::End(x) => MEM_END - u64::from(x) % 0x1000,
            Addr::Ring(x) => u64::from(x) % RING_END,
            Addr::Raw(a) => a,
        }
    }
}

fuzz_input! {
/// A raw descriptor as the driver writes it.
#[derive(Debug, Clone, Copy)]
pub struct RawDesc {
    pub addr: Addr,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}
}

impl RawDesc {
    fn raw(&self) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(
            self.addr.get(),
            self.len,
            self.flags,
            self.next,
        ))
    }
}

fuzz_input! {
#[derive(Debug, Clone, Copy)]
pub enum ReqType {
    In,
    Out,
    Flush,
    GetId,
    Discard,
    WriteZeroes,
    Raw(u32),
}
}

impl ReqType {
    fn code(self) -> u32 {
        match self {
            ReqType::In => T_IN,
            ReqType::Out => T_OUT,
            ReqType::Flush => T_FLUSH,
            ReqType::GetId => T_GET_ID,
            ReqType::Discard => T_DISCARD,
            ReqType::WriteZeroes => T_WZ,
            ReqType::Raw(t) => t,
        }
    }
}

fuzz_input! {
#[derive(Debug, Clone, Copy)]
pub enum Sector {
    /// `x % capacity`.
    Small(u8),
    /// `capacity - x` (past the end for x == 0, or with long requests).
    NearEnd(u8),
    Raw(u64),
}
}

impl Sector {
    fn get(self) -> u64 {
        match self {
            Sector::Small(x) => u64::from(x) % CAP,
            Sector::NearEnd(x) => CAP.wrapping_sub(u64::from(x) % 8),
            Sector::Raw(s) => s,
        }
    }
}

fuzz_input! {
/// One discard / write-zeroes segment.
#[derive(Debug, Clone, Copy)]
pub struct DwzSeg {
    pub sector: Sector,
    /// Sectors: `num % 40` unless `raw_num`.
    pub num: u32,
    pub raw_num: bool,
    /// Flags: `flags & 1` unless `raw_flags`.
    pub flags: u32,
    pub raw_flags: bool,
}
}

fuzz_input! {
/// A request the harness lays out (mostly well formed; the knobs break it in known ways).
#[derive(Debug, Clone)]
pub struct Req {
    pub rtype: ReqType,
    pub barrier: bool,
    pub sector: Sector,
    /// Data length in sectors (`% 33`), for IN / OUT / GET_ID.
    pub sectors: u8,
    /// Replaces the data length when set (unaligned lengths).
    pub odd_len: Option<u16>,
    /// Data split over `1 + pieces % 4` descriptors.
    pub pieces: u8,
    /// Header and data in one descriptor (OUT), or status byte at the end of the last data
    /// descriptor (IN / GET_ID).
    pub merge: bool,
    /// All descriptors in an indirect table.
    pub indirect: bool,
    /// Flip the direction of the data descriptors.
    pub wrong_dir: bool,
    /// Discard / write-zeroes segments (at least one is generated if empty).
    pub segs: Vec<DwzSeg>,
    pub ioprio: u32,
    /// Data pattern seed.
    pub fill: u8,
    /// Kick right after posting.
    pub kick: bool,
}
}

fuzz_input! {
#[derive(Debug, Clone)]
pub enum Op {
    /// Post a request laid out by the harness.
    Req(Req),
    /// Write one raw descriptor into the table.
    Desc { index: u16, desc: RawDesc },
    /// Write raw descriptors into guest memory (an indirect table, or garbage).
    Table { at: Addr, descs: Vec<RawDesc> },
    /// Write bytes into guest memory.
    Mem { at: Addr, bytes: Vec<u8> },
    /// Write a request header into guest memory.
    Header { at: Addr, rtype: ReqType, sector: Sector },
    /// Queue raw heads for the next kick.
    Avail { heads: Vec<u16> },
    /// Publish up to `count` (0: all) pending heads and run the device.
    Kick { count: u8 },
    /// Set the avail index `delta` past where the device is and run it (more than the queue
    /// size ahead is a driver bug the device must survive), then restore it.
    BogusIdx { delta: u16 },
    /// Config space write (only the 1-byte `wce` field is writable).
    SetConfig { offset: u32, bytes: Vec<u8> },
    GetConfig { offset: u32, size: u16 },
    /// `handle_event` with unexpected arguments.
    BadEvent { device_event: u16, thread: u8, out: bool },
    /// Re-ack features (mask of the device features).
    Ack(u64),
}
}

fuzz_input! {
#[derive(Debug, Clone)]
pub struct Input {
    pub cfg: Cfg,
    pub ops: Vec<Op>,
}
}

// ---- harness ---------------------------------------------------------------------------------

/// Work files, reused across inputs (in /dev/shm when it exists), one set per thread (the
/// proptest suites run tests in parallel); removed when the thread ends.
#[derive(Clone)]
struct Files {
    img: PathBuf,
    log: PathBuf,
    replay: PathBuf,
}

fn files() -> Files {
    thread_local! {
        static F: (tempfile::TempDir, Files) = {
            let dir = work_dir("e4race-fuzz-blk");
            let f = Files {
                img: dir.path().join("disk.img"),
                log: dir.path().join("w.log"),
                replay: dir.path().join("replay.img"),
            };
            (dir, f)
        };
    }
    F.with(|f| f.1.clone())
}

/// A temporary directory in /dev/shm if there is one.
pub fn work_dir(prefix: &str) -> tempfile::TempDir {
    let b = tempfile::Builder::new().prefix(prefix).clone();
    if std::path::Path::new("/dev/shm").is_dir() {
        if let Ok(d) = b.tempdir_in("/dev/shm") {
            return d;
        }
    }
    b.tempdir().unwrap()
}

/// The image everything starts from: every byte nonzero and position dependent.
pub fn initial_image() -> &'static [u8] {
    static IMG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    IMG.get_or_init(|| {
        (0..IMG_LEN)
            .map(|i| ((i / 512) as u8).wrapping_mul(13) ^ (i as u8) | 1)
            .collect()
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    kind: Kind,
    sector: u64,
    len: u32,
    flags: u32,
    data: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy)]
struct Seg {
    addr: u64,
    len: u64,
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    // Half-open [start, end) ranges (end saturated).
    a.0 < b.1 && b.0 < a.1
}

fn range(s: &Seg) -> (u64, u64) {
    (s.addr, s.addr.saturating_add(s.len))
}

/// What the device will see of one chain, decoded from a copy of guest memory.
struct Chain {
    head: u16,
    readable: Vec<Seg>,
    /// Writable data segments (the status byte already taken off).
    writable: Vec<Seg>,
    /// All writable descriptor ranges, status byte included.
    writable_all: Vec<Seg>,
    misordered: bool,
    status: Option<u64>,
    /// Header type and sector, if 16 readable bytes exist.
    hdr: Option<(u32, u64)>,
    out_len: u64,
    in_len: u64,
    /// Readable bytes after the header (OUT data / DWZ segments), if readable from memory.
    payload: Option<Vec<u8>>,
    all_in_mem: bool,
}

fn gather(m: &GuestMem, segs: &[Seg], mut skip: u64, len: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; len];
    let mut done = 0usize;
    for s in segs {
        if done == len {
            break;
        }
        if skip >= s.len {
            skip -= s.len;
            continue;
        }
        let n = ((s.len - skip) as usize).min(len - done);
        m.read_slice(
            &mut out[done..done + n],
            GuestAddress(s.addr.checked_add(skip)?),
        )
        .ok()?;
        done += n;
        skip = 0;
    }
    (done == len).then_some(out)
}

fn in_mem(m: &GuestMem, addr: u64, len: u64) -> bool {
    len == 0 || GuestMemoryBackend::check_range(m, GuestAddress(addr), len as usize)
}

fn decode_chain(snap: &GuestMem, head: u16, descs: Vec<Descriptor>) -> Chain {
    let mut c = Chain {
        head,
        readable: vec![],
        writable: vec![],
        writable_all: vec![],
        misordered: false,
        status: None,
        hdr: None,
        out_len: 0,
        in_len: 0,
        payload: None,
        all_in_mem: false,
    };
    let mut last_w = false;
    for d in &descs {
        let s = Seg {
            addr: d.addr().0,
            len: u64::from(d.len()),
        };
        if d.is_write_only() {
            c.writable.push(s);
            c.writable_all.push(s);
        } else {
            c.misordered |= !c.writable.is_empty();
            c.readable.push(s);
        }
        last_w = d.is_write_only();
    }
    if last_w {
        let last = *c.writable.last().unwrap();
        if last.len > 0 {
            if let Some(a) = last.addr.checked_add(last.len - 1) {
                if in_mem(snap, a, 1) {
                    c.status = Some(a);
                    let l = c.writable.last_mut().unwrap();
                    l.len -= 1;
                    if l.len == 0 {
                        c.writable.pop();
                    }
                }
            }
        }
    }
    c.all_in_mem = c
        .readable
        .iter()
        .chain(&c.writable)
        .all(|s| in_mem(snap, s.addr, s.len));
    let rtotal: u64 = c.readable.iter().map(|s| s.len).sum();
    c.in_len = c.writable.iter().map(|s| s.len).sum();
    if let Some(h) = gather(snap, &c.readable, 0, 16) {
        let t = u32::from_le_bytes(h[0..4].try_into().unwrap());
        let sec = u64::from_le_bytes(h[8..16].try_into().unwrap());
        c.hdr = Some((t, sec));
        c.out_len = rtotal - 16;
        if c.out_len <= IMG_LEN as u64 {
            c.payload = gather(snap, &c.readable, 16, c.out_len as usize);
        }
    }
    c
}

fn hits_avail_idx(c: &Chain) -> bool {
    c.writable_all
        .iter()
        .any(|s| overlaps(range(s), (AVAIL_ADDR + 2, AVAIL_ADDR + 4)))
}

fn range_ok(sector: u64, len: u64) -> bool {
    len % SECTOR == 0 && sector.checked_add(len / SECTOR).is_some_and(|e| e <= CAP)
}

struct H<'m> {
    cfg: Cfg,
    qsize: u16,
    gm: &'m GuestMem,
    snap: GuestMem,
    dev: Arc<BlkDevice>,
    vring: Vring,
    desc: DescriptorTable<'m, GuestMem>,
    avail: AvailRing<'m, GuestMem>,
    used: UsedRing<'m, GuestMem>,
    /// Heads posted but not yet published.
    pending: Vec<u16>,
    next_desc: u16,
    low_bump: u64,
    data_bump: u64,
    shadow: Vec<u8>,
    expected: Vec<Expected>,
    /// Chains completed (used idx as the harness expects it).
    used_idx: u16,
    allow_hang: bool,
    /// Scratch for copying guest memory.
    buf: Vec<u8>,
    /// Upper bound of the bytes the log holds so far.
    log_bytes: u64,
}

fn new_mem() -> GuestMem {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(R0.0), R0.1), (GuestAddress(R1.0), R1.1)])
        .unwrap()
}

/// This thread's guest memory and its snapshot, zeroed (mapping them anew for every input
/// costs more page faults than the rest of the input).
fn mems() -> (GuestMem, GuestMem) {
    thread_local! {
        static M: (GuestMem, GuestMem) = (new_mem(), new_mem());
    }
    let (a, b) = M.with(|m| m.clone());
    let zeros = vec![0u8; R0.1];
    for (base, len) in [R0, R1] {
        a.write_slice(&zeros[..len], GuestAddress(base)).unwrap();
    }
    (a, b)
}

/// Runs one input; panics when a property fails. The bugs listed in fuzz/README.md are
/// fixed, so nothing is steered around any more; setting [`ALLOW_KNOWN`] to `0` restores
/// the steering (to fuzz an old build).
pub fn run(input: &Input) {
    run_with(
        input,
        std::env::var_os(ALLOW_KNOWN).is_none_or(|v| v != "0"),
    )
}

/// [`run`], with the known bugs (fuzz/README.md) reachable if `allow_known`.
pub fn run_with(input: &Input, allow_known: bool) {
    let f = files();
    let orig = initial_image();
    fs::write(&f.img, orig).unwrap();
    let log = Arc::new(
        LogWriter::create(
            &f.log,
            LogOptions {
                log_data: true,
                sector_size: 512,
                // The writer preallocates min(16 MiB, max_bytes) on its first append; on tmpfs
                // that is real memory, and most of the time of an input. The harness keeps the
                // log well below this (LOG_BUDGET), so the limit itself is never hit.
                max_bytes: Some(LOG_MAX),
            },
        )
        .unwrap(),
    );
    let cfg = input.cfg.clone();
    let opts = DeviceOptions {
        read_only: cfg.read_only,
        serial: SERIALS[usize::from(cfg.serial)].into(),
        signal_every: if cfg.signal_every_zero {
            std::time::Duration::ZERO
        } else {
            DeviceOptions::default().signal_every
        },
        ..DeviceOptions::default()
    };
    let dev = Arc::new(BlkDevice::open(&f.img, opts, log.clone()).unwrap());
    assert_eq!(dev.capacity(), CAP);
    let (gm, snap) = mems();
    let atomic = GuestMemoryAtomic::new(gm.clone());
    dev.update_memory(atomic.clone()).unwrap();
    dev.acked_features(dev.features() & cfg.features_mask);
    dev.set_event_idx(cfg.event_idx);
    let qsize = 1u16 << (cfg.qsize_log2 % 9);
    let vring = Vring::new(atomic, 256).unwrap();
    let desc = DescriptorTable::new(&gm, GuestAddress(DESC_ADDR), qsize);
    let avail = AvailRing::new(&gm, GuestAddress(AVAIL_ADDR), qsize);
    let used = UsedRing::new(&gm, GuestAddress(USED_ADDR), qsize);
    vring.set_queue_size(qsize);
    vring
        .set_queue_info(DESC_ADDR, AVAIL_ADDR, USED_ADDR)
        .unwrap();
    vring.set_queue_event_idx(cfg.event_idx);
    vring.set_queue_ready(true);
    vring.set_enabled(true);
    let _call = if cfg.call_fd {
        // SAFETY: eventfd returns a new fd or -1; we own it.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK) };
        assert!(fd >= 0);
        // SAFETY: `fd` is the valid eventfd just opened, and nothing else owns it.
        let file = unsafe { fs::File::from_raw_fd(fd) };
        vring.set_call(Some(file.try_clone().unwrap()));
        Some(file)
    } else {
        None
    };
    let mut h = H {
        cfg,
        qsize,
        gm: &gm,
        snap,
        buf: vec![0u8; R0.1],
        dev: dev.clone(),
        vring,
        desc,
        avail,
        used,
        pending: vec![],
        next_desc: 0,
        low_bump: LOW.0,
        data_bump: DATA.0,
        shadow: orig.to_vec(),
        expected: vec![],
        used_idx: 0,
        allow_hang: allow_known,
        log_bytes: 40,
    };
    for op in input.ops.iter().take(MAX_OPS) {
        h.op(op);
    }
    if !h.pending.is_empty() {
        h.kick(0);
    }
    let expected = std::mem::take(&mut h.expected);
    let shadow = std::mem::take(&mut h.shadow);
    drop(h);
    drop(dev);

    // The image is the shadow: only OK writes, discards and write-zeroes changed it.
    let img = fs::read(&f.img).unwrap();
    assert_eq!(img.len(), IMG_LEN, "image size changed");
    if img != shadow {
        let at = img.iter().zip(&shadow).position(|(a, b)| a != b).unwrap();
        panic!(
            "image differs from the model at byte {at} (sector {}): image {:#x}, model {:#x}",
            at / 512,
            img[at],
            shadow[at]
        );
    }
    // One record per OK logged request, in completion order.
    let n = log.finish().unwrap();
    assert_eq!(
        n,
        expected.len() as u64,
        "records in the log vs OK requests"
    );
    let mut rd = LogReader::open(&f.log).unwrap();
    let recs = rd.read_all().unwrap();
    assert_eq!(rd.discarded_bytes(), 0);
    assert_eq!(recs.len(), expected.len());
    for (i, (r, e)) in recs.iter().zip(&expected).enumerate() {
        assert_eq!(r.seq, i as u64);
        // A flush's `sector` is the seq below which it claims durability: at most its own.
        let sector = if r.kind == Kind::Flush {
            assert!(r.sector <= r.seq, "flush {i} covers records after it");
            0
        } else {
            r.sector
        };
        let got = Expected {
            kind: r.kind,
            sector,
            len: r.len,
            flags: r.flags,
            data: r.data.clone(),
        };
        assert_eq!(&got, e, "record {i}");
        match &e.data {
            Some(d) => assert_eq!(r.block_hashes, writelog::block_hashes(d), "record {i}"),
            None => assert!(r.block_hashes.is_empty(), "record {i}"),
        }
    }
    if std::env::var_os("E4RACE_FUZZ_DEBUG").is_some() {
        let kinds: Vec<Kind> = expected.iter().map(|e| e.kind).collect();
        eprintln!("blk model: {} records logged: {kinds:?}", expected.len());
    }
    // Replaying the log onto the original image gives the final image.
    fs::write(&f.replay, orig).unwrap();
    let sum = writelog::replay(&f.log, &f.replay, &LogPosition::End).unwrap();
    assert_eq!(sum.entries, expected.len() as u64);
    let replayed = fs::read(&f.replay).unwrap();
    assert!(replayed == img, "replay of the log differs from the image");
}

impl<'m> H<'m> {
    fn op(&mut self, op: &Op) {
        match op {
            Op::Req(r) => {
                self.post(r);
                if r.kick {
                    self.kick(0);
                }
            }
            Op::Desc { index, desc } => {
                let _ = self.desc.store(*index % self.qsize, desc.raw());
            }
            Op::Table { at, descs } => {
                let mut a = at.get();
                for d in descs.iter().take(64) {
                    let _ = self.gm.write_obj(d.raw(), GuestAddress(a));
                    a = a.wrapping_add(16);
                }
            }
            Op::Mem { at, bytes } => {
                let b = &bytes[..bytes.len().min(MAX_BYTES)];
                let _ = self.gm.write_slice(b, GuestAddress(at.get()));
            }
            Op::Header { at, rtype, sector } => {
                let _ = self
                    .gm
                    .write_slice(&hdr(rtype.code(), 0, sector.get()), GuestAddress(at.get()));
            }
            Op::Avail { heads } => self.pending.extend(heads.iter().take(64)),
            Op::Kick { count } => self.kick(usize::from(*count)),
            Op::BogusIdx { delta } => self.bogus(*delta),
            Op::SetConfig { offset, bytes } => {
                let b = &bytes[..bytes.len().min(256)];
                let r = self.dev.set_config(*offset, b);
                if *offset != 32 || b.len() != 1 {
                    assert!(r.is_err(), "only the wce byte is writable");
                }
                let c = self.dev.get_config(32, 1);
                if r.is_ok() {
                    assert_eq!(c, vec![u8::from(b[0] != 0)]);
                }
            }
            Op::GetConfig { offset, size } => {
                let c = self.dev.get_config(*offset, u32::from(*size));
                assert_eq!(c.len(), usize::from(*size));
            }
            Op::BadEvent {
                device_event,
                thread,
                out,
            } => {
                let ev = if *out { EventSet::OUT } else { EventSet::IN };
                let (de, th) = (*device_event, usize::from(*thread));
                if de == 0 && th == 0 && !*out {
                    return;
                }
                let before = self.used.idx().load();
                let r = self
                    .dev
                    .handle_event(de, ev, std::slice::from_ref(&self.vring), th);
                assert!(r.is_err(), "unexpected event accepted");
                assert_eq!(self.used.idx().load(), before);
            }
            Op::Ack(mask) => self.dev.acked_features(self.dev.features() & mask),
        }
    }

    fn alloc(&mut self, low: bool, len: u64) -> u64 {
        let (area, bump) = if low {
            (LOW, &mut self.low_bump)
        } else {
            (DATA, &mut self.data_bump)
        };
        let len = len.min(area.1 - area.0);
        if *bump + len > area.1 {
            *bump = area.0;
        }
        let a = *bump;
        *bump += len;
        a
    }

    fn alloc_descs(&mut self, n: u16) -> Vec<u16> {
        (0..n)
            .map(|_| {
                let i = self.next_desc % self.qsize;
                self.next_desc = self.next_desc.wrapping_add(1);
                i
            })
            .collect()
    }

    /// Lays out `r` in guest memory and the descriptor table, and queues its head.
    fn post(&mut self, r: &Req) {
        let t = r.rtype.code() | if r.barrier { T_BARRIER } else { 0 };
        let sector = r.sector.get();
        let header = hdr(t, r.ioprio, sector);
        // (addr, len, write) triples.
        let mut bufs: Vec<(u64, u32, bool)> = vec![];
        let is_dwz = matches!(r.rtype, ReqType::Discard | ReqType::WriteZeroes);
        let data_len: u32 = match (r.odd_len, is_dwz) {
            (Some(l), _) => u32::from(l),
            (None, false) => u32::from(r.sectors % 33) * 512,
            (None, true) => 0,
        };
        let device_writes = matches!(r.rtype, ReqType::In | ReqType::GetId) != r.wrong_dir;
        let pieces = u32::from(1 + r.pieces % 4);
        if is_dwz {
            let mut segs = r.segs.clone();
            if segs.is_empty() {
                segs.push(DwzSeg {
                    sector: r.sector,
                    num: u32::from(r.sectors),
                    raw_num: false,
                    flags: u32::from(r.barrier),
                    raw_flags: false,
                });
            }
            let mut payload = vec![];
            for s in segs.iter().take(4) {
                let num = if s.raw_num { s.num } else { s.num % 40 };
                let fl = if s.raw_flags { s.flags } else { s.flags & 1 };
                payload.extend_from_slice(&s.sector.get().to_le_bytes());
                payload.extend_from_slice(&num.to_le_bytes());
                payload.extend_from_slice(&fl.to_le_bytes());
            }
            let p = self.alloc(true, 16 + payload.len() as u64);
            let _ = self.gm.write_slice(&header, GuestAddress(p));
            let _ = self.gm.write_slice(&payload, GuestAddress(p + 16));
            if r.merge {
                bufs.push((p, 16 + payload.len() as u32, false));
            } else {
                bufs.push((p, 16, false));
                bufs.push((p + 16, payload.len() as u32, r.wrong_dir));
            }
        } else if r.merge && !device_writes && data_len > 0 {
            // Header and data contiguous, first piece shares the header's descriptor.
            let p = self.alloc(false, 16 + u64::from(data_len));
            let _ = self.gm.write_slice(&header, GuestAddress(p));
            let data = pattern(r.fill, data_len as usize);
            let _ = self.gm.write_slice(&data, GuestAddress(p + 16));
            let cuts = split(data_len, pieces);
            let mut at = p + 16;
            for (k, &len) in cuts.iter().enumerate() {
                if k == 0 {
                    bufs.push((p, 16 + len, false));
                } else {
                    bufs.push((at, len, r.wrong_dir));
                }
                at += u64::from(len);
            }
        } else {
            let hp = self.alloc(true, 16);
            let _ = self.gm.write_slice(&header, GuestAddress(hp));
            bufs.push((hp, 16, false));
            if data_len > 0 {
                let p = self.alloc(false, u64::from(data_len) + 1);
                if device_writes {
                    let _ = self
                        .gm
                        .write_slice(&vec![0xA5; data_len as usize], GuestAddress(p));
                } else {
                    let _ = self
                        .gm
                        .write_slice(&pattern(r.fill, data_len as usize), GuestAddress(p));
                }
                let mut at = p;
                for len in split(data_len, pieces) {
                    bufs.push((at, len, device_writes));
                    at += u64::from(len);
                }
            }
        }
        // Status byte: its own descriptor, or the last byte of a writable data buffer.
        let merged_status = r.merge && device_writes && data_len > 0 && !is_dwz;
        if merged_status {
            let last = bufs.last_mut().unwrap();
            last.1 += 1;
            let _ = self
                .gm
                .write_obj(0xEEu8, GuestAddress(last.0 + u64::from(last.1) - 1));
        } else {
            let sp = self.alloc(true, 1);
            let _ = self.gm.write_obj(0xEEu8, GuestAddress(sp));
            bufs.push((sp, 1, true));
        }
        let chained = |idx: &[u16], i: usize, b: &(u64, u32, bool)| {
            let mut fl = if b.2 { W } else { 0 };
            let mut next = 0;
            if i + 1 < idx.len() {
                fl |= N;
                next = idx[i + 1];
            }
            RawDescriptor::from(Descriptor::new(b.0, b.1, fl, next))
        };
        let head = if r.indirect {
            let tbl = self.alloc(true, 16 * bufs.len() as u64);
            let idx: Vec<u16> = (0..bufs.len() as u16).collect();
            for (i, b) in bufs.iter().enumerate() {
                let _ = self
                    .gm
                    .write_obj(chained(&idx, i, b), GuestAddress(tbl + 16 * i as u64));
            }
            let d = self.alloc_descs(1)[0];
            let _ = self.desc.store(
                d,
                RawDescriptor::from(Descriptor::new(tbl, 16 * bufs.len() as u32, I, 0)),
            );
            d
        } else {
            let idx = self.alloc_descs(bufs.len() as u16);
            for (i, b) in bufs.iter().enumerate() {
                let _ = self.desc.store(idx[i], chained(&idx, i, b));
            }
            idx[0]
        };
        self.pending.push(head);
    }

    fn next_avail(&self) -> u16 {
        self.vring.queue_next_avail()
    }

    /// Pops, on a copy of guest memory, the `k` chains the device will see next.
    fn preview(&mut self, k: usize) -> Vec<Chain> {
        for (base, len) in [R0, R1] {
            self.gm
                .read_slice(&mut self.buf[..len], GuestAddress(base))
                .unwrap();
            self.snap
                .write_slice(&self.buf[..len], GuestAddress(base))
                .unwrap();
        }
        let mut q = Queue::new(256).unwrap();
        q.set_size(self.qsize);
        q.set_desc_table_address(Some(DESC_ADDR as u32), Some(0));
        q.set_avail_ring_address(Some(AVAIL_ADDR as u32), Some(0));
        q.set_used_ring_address(Some(USED_ADDR as u32), Some(0));
        q.set_ready(true);
        q.set_next_avail(self.next_avail());
        let mut out = vec![];
        for _ in 0..k {
            let Some(ch) = q.pop_descriptor_chain(&self.snap) else {
                break;
            };
            let head = ch.head_index();
            let descs: Vec<Descriptor> = ch.collect();
            out.push(decode_chain(&self.snap, head, descs));
        }
        out
    }

    /// Whether `chains` can run in one `handle_event` with the model still exact: nothing a
    /// chain's writable buffers cover is read by another chain or is part of the rings.
    fn independent(&self, chains: &[Chain]) -> bool {
        let mut reads: Vec<(u64, u64)> = vec![(0, RING_END)];
        for i in 0..self.qsize {
            let Ok(d) = self.desc.load(i) else { continue };
            let d = Descriptor::from(d);
            if d.refers_to_indirect_table() {
                reads.push((d.addr().0, d.addr().0.saturating_add(u64::from(d.len()))));
            }
        }
        for c in chains {
            reads.extend(c.readable.iter().map(range));
        }
        let writes: Vec<(u64, u64)> = chains
            .iter()
            .flat_map(|c| c.writable_all.iter().map(range))
            .collect();
        for (i, w) in writes.iter().enumerate() {
            if reads.iter().any(|r| overlaps(*w, *r))
                || writes[i + 1..].iter().any(|o| overlaps(*w, *o))
            {
                return false;
            }
        }
        true
    }

    /// Publishes up to `count` pending heads (0: all) and runs the device.
    fn kick(&mut self, count: usize) {
        let n = if count == 0 {
            self.pending.len()
        } else {
            count.min(self.pending.len())
        }
        .min(usize::from(self.qsize));
        if n == 0 {
            // A spurious kick: nothing may complete.
            let at = self.next_avail();
            self.avail.idx().store(at);
            self.call(&[], 0);
            return;
        }
        let heads: Vec<u16> = self.pending.drain(..n).collect();
        let start = self.next_avail();
        for (j, &hd) in heads.iter().enumerate() {
            self.set_ring(start.wrapping_add(j as u16), hd);
        }
        self.avail.idx().store(start.wrapping_add(n as u16));
        let chains = self.preview(n);
        if chains.len() == n && self.independent(&chains) {
            self.call(&chains, n as u16);
            return;
        }
        // One chain per call: each one decoded from memory as the previous one left it.
        self.one_by_one(&heads);
    }

    /// Publishes `heads` one at a time, each in its own `handle_event`. A chain whose
    /// device-writable buffers cover the avail index would publish chains of its own making
    /// mid-call, which the model can't follow: such a chain is withdrawn (not published).
    fn one_by_one(&mut self, heads: &[u16]) {
        for &hd in heads {
            let at = self.next_avail();
            self.set_ring(at, hd);
            self.avail.idx().store(at.wrapping_add(1));
            let ch = self.preview(1);
            assert_eq!(ch.len(), 1);
            if hits_avail_idx(&ch[0]) {
                self.avail.idx().store(at);
                continue;
            }
            self.call(&ch, 1);
        }
    }

    fn set_ring(&self, idx: u16, head: u16) {
        self.avail
            .ring()
            .ref_at(usize::from(idx % self.qsize))
            .unwrap()
            .store(head);
    }

    fn bogus(&mut self, delta: u16) {
        let start = self.next_avail();
        let idx = start.wrapping_add(delta);
        if delta == 0 {
            return;
        }
        if delta <= self.qsize {
            // Chains made of whatever the ring holds.
            self.avail.idx().store(idx);
            let chains = self.preview(usize::from(delta));
            if chains.len() == usize::from(delta) && self.independent(&chains) {
                self.call(&chains, delta);
            } else {
                let heads: Vec<u16> = (0..delta)
                    .map(|j| {
                        self.avail
                            .ring()
                            .ref_at(usize::from(start.wrapping_add(j) % self.qsize))
                            .unwrap()
                            .load()
                    })
                    .collect();
                self.avail.idx().store(start);
                self.one_by_one(&heads);
            }
            return;
        }
        if self.cfg.event_idx && !self.allow_hang {
            // Known hang (see the README): handle_queue_event loops forever.
            return;
        }
        self.avail.idx().store(idx);
        self.call(&[], 0);
        // The driver comes to its senses.
        self.avail.idx().store(start);
    }

    /// Runs the device once; `chains` are what it is expected to pop (`k` of them).
    fn call(&mut self, chains: &[Chain], k: u16) {
        let start = self.next_avail();
        // Most a chain can add to the log: one record with its data and hashes.
        let worst: u64 = chains
            .iter()
            .map(|c| {
                128 + if c.out_len <= IMG_LEN as u64 {
                    c.out_len * 9 / 8
                } else {
                    0
                }
            })
            .sum();
        if self.log_bytes + worst > LOG_BUDGET {
            // Withdraw them: the log could fill up (see LOG_MAX).
            self.avail.idx().store(start);
            return;
        }
        self.log_bytes += worst;
        // The used index is the device's to write, but guest stores (Mem ops, IN data of an
        // earlier chain) may have scribbled on it: put back what the device last wrote.
        self.used.idx().store(self.used_idx);
        let seq0 = self.dev.log().next_seq();
        let errs0 = self.dev.request_errors().total;
        let writeback = self.dev.writeback();
        self.dev
            .handle_event(0, EventSet::IN, std::slice::from_ref(&self.vring), 0)
            .unwrap();
        assert_eq!(
            self.next_avail(),
            start.wrapping_add(k),
            "device popped a different number of chains"
        );
        let seq1 = self.dev.log().next_seq();
        let valid: Vec<&Chain> = chains.iter().filter(|c| c.head < self.qsize).collect();
        let used_now = self.used.idx().load();
        assert_eq!(
            used_now,
            self.used_idx.wrapping_add(valid.len() as u16),
            "used ring advanced by the wrong count (bogus heads must not complete)"
        );
        let single = chains.len() == 1;
        let mut logged = 0u64;
        // Chains that surely failed, and those whose status the used ring overwrote.
        let (mut failed, mut unknown) = (0u64, 0u64);
        for (j, c) in valid.iter().enumerate() {
            let slot = usize::from(self.used_idx.wrapping_add(j as u16) % self.qsize);
            let elem = self.used.ring().ref_at(slot).unwrap().load();
            assert_eq!(elem.id(), u32::from(c.head), "used id");
            match c.status {
                None => failed += 1,
                Some(a) if (USED_ADDR..RING_END).contains(&a) => unknown += 1,
                Some(a) => {
                    failed += u64::from(self.gm.read_obj::<u8>(GuestAddress(a)).unwrap() != S_OK)
                }
            }
            logged += self.check_chain(c, elem.len(), writeback, single, seq1 - seq0);
        }
        // Every failed request is counted once, and no OK one; chains with a bogus head are
        // executed but not completed, so they may count too.
        let counted = self.dev.request_errors().total - errs0;
        let bogus = (chains.len().max(usize::from(k)) - valid.len()) as u64;
        assert!(
            failed <= counted && counted <= failed + unknown + bogus,
            "request errors counted {counted}, failed chains {failed} (+{unknown} unknown, +{bogus} bogus)"
        );
        self.used_idx = used_now;
        assert_eq!(
            seq1 - seq0,
            logged,
            "log records appended by this kick vs OK logged requests"
        );
    }

    /// Checks one completed chain; returns the number of records it must have logged.
    fn check_chain(
        &mut self,
        c: &Chain,
        used_len: u32,
        wb: bool,
        single: bool,
        seq_delta: u64,
    ) -> u64 {
        let Some(st_addr) = c.status else {
            assert_eq!(
                used_len, 0,
                "chain without a status byte completed with len > 0"
            );
            return 0;
        };
        let total_w: u64 = c.writable_all.iter().map(|s| s.len).sum();
        assert!(
            used_len >= 1,
            "chain with a status byte completed with len 0"
        );
        assert!(
            u64::from(used_len) <= total_w,
            "used len {used_len} > writable {total_w}"
        );
        let in_rings = (USED_ADDR..RING_END).contains(&st_addr);
        let status = if in_rings {
            // Overwritten by the used ring update: infer from the log (single chain only).
            assert!(single, "status in the used ring in a batched kick");
            None
        } else {
            let s: u8 = self.gm.read_obj(GuestAddress(st_addr)).unwrap();
            assert!(
                matches!(s, S_OK | S_IOERR | S_UNSUPP),
                "status byte {s:#x} is not OK/IOERR/UNSUPP"
            );
            Some(s)
        };
        let Some((raw_t, sector)) = c.hdr else {
            assert_ne!(status, Some(S_OK), "request without a 16-byte header is OK");
            return 0;
        };
        let t = raw_t & !T_BARRIER;
        let bflag = if raw_t & T_BARRIER != 0 {
            flags::BARRIER
        } else {
            0
        };
        let well_formed = !c.misordered && c.all_in_mem;
        if !well_formed {
            assert_ne!(status, Some(S_OK), "misordered / out-of-memory chain is OK");
        }
        // What an OK completion of this request must have done.
        let ok = match status {
            Some(s) => s == S_OK,
            None => seq_delta > 0 || matches!(t, T_IN | T_GET_ID),
        };
        match t {
            T_IN => {
                if ok && status.is_some() {
                    assert!(c.out_len == 0 && range_ok(sector, c.in_len), "bad IN is OK");
                    assert_eq!(u64::from(used_len), c.in_len + 1, "IN used len");
                    let want = &self.shadow[(sector * SECTOR) as usize..][..c.in_len as usize];
                    self.check_written(c, st_addr, want);
                }
                0
            }
            T_GET_ID => {
                if ok && status.is_some() {
                    assert!(c.out_len == 0 && c.in_len > 0, "bad GET_ID is OK");
                    let mut id = [0u8; 20];
                    let s = SERIALS[usize::from(self.cfg.serial)].as_bytes();
                    let n = s.len().min(20);
                    id[..n].copy_from_slice(&s[..n]);
                    let n = (c.in_len as usize).min(20);
                    assert_eq!(used_len as usize, n + 1, "GET_ID used len");
                    self.check_written(c, st_addr, &id[..n]);
                }
                0
            }
            T_OUT => {
                if !ok {
                    return 0;
                }
                assert!(!self.cfg.read_only, "write to a read-only device is OK");
                assert!(
                    c.in_len == 0 && range_ok(sector, c.out_len),
                    "bad OUT is OK (sector {sector}, len {})",
                    c.out_len
                );
                assert_eq!(used_len, 1);
                let data = c.payload.clone().expect("OK OUT with unreadable data");
                let off = (sector * SECTOR) as usize;
                self.shadow[off..off + data.len()].copy_from_slice(&data);
                if data.is_empty() {
                    return 0;
                }
                let fua = if wb { 0 } else { flags::FUA };
                self.expected.push(Expected {
                    kind: Kind::Write,
                    sector,
                    len: data.len() as u32,
                    flags: bflag | fua,
                    data: Some(data),
                });
                1
            }
            T_FLUSH => {
                if !ok {
                    return 0;
                }
                self.expected.push(Expected {
                    kind: Kind::Flush,
                    sector: 0,
                    len: 0,
                    flags: bflag,
                    data: None,
                });
                1
            }
            T_DISCARD | T_WZ => {
                if !ok {
                    return 0;
                }
                assert!(
                    !self.cfg.read_only,
                    "discard/write-zeroes on a read-only device is OK"
                );
                assert!(
                    c.in_len == 0,
                    "discard/write-zeroes with device-writable data is OK"
                );
                let p = c
                    .payload
                    .clone()
                    .expect("OK discard with unreadable segments");
                assert!(
                    !p.is_empty() && p.len() % 16 == 0,
                    "discard/write-zeroes with a {}-byte payload is OK",
                    p.len()
                );
                let mut n = 0;
                for s in p.chunks(16) {
                    let sec = u64::from_le_bytes(s[0..8].try_into().unwrap());
                    let num = u32::from_le_bytes(s[8..12].try_into().unwrap());
                    let fl = u32::from_le_bytes(s[12..16].try_into().unwrap());
                    let len = u64::from(num) * SECTOR;
                    assert!(range_ok(sec, len), "discard past the end is OK");
                    assert!(fl & !1 == 0, "unknown discard/write-zeroes flags are OK");
                    assert!(t == T_WZ || fl == 0, "discard with UNMAP is OK");
                    let off = (sec * SECTOR) as usize;
                    self.shadow[off..off + len as usize].fill(0);
                    if num == 0 {
                        continue;
                    }
                    let (kind, uf) = if t == T_DISCARD {
                        (Kind::Discard, 0)
                    } else {
                        (
                            Kind::WriteZeroes,
                            if fl & 1 != 0 { flags::UNMAP } else { 0 },
                        )
                    };
                    // Writethrough: durable on completion, like writes.
                    let fua = if wb { 0 } else { flags::FUA };
                    self.expected.push(Expected {
                        kind,
                        sector: sec,
                        len: len as u32,
                        flags: bflag | uf | fua,
                        data: None,
                    });
                    n += 1;
                }
                n
            }
            _ => {
                assert_ne!(status, Some(S_OK), "unknown request type {raw_t:#x} is OK");
                0
            }
        }
    }

    /// For an OK IN / GET_ID: the first `want.len()` bytes of the writable buffers hold
    /// `want` (checked when no buffer overlaps another, the status byte or the rings).
    fn check_written(&self, c: &Chain, st: u64, want: &[u8]) {
        let segs = &c.writable;
        for (i, s) in segs.iter().enumerate() {
            let r = range(s);
            if overlaps(r, (0, RING_END))
                || overlaps(r, (st, st + 1))
                || segs[i + 1..].iter().any(|o| overlaps(r, range(o)))
            {
                return;
            }
        }
        let got = gather(self.gm, segs, 0, want.len()).expect("OK IN into unreadable memory");
        assert!(
            got == want,
            "data returned to the guest differs from the image"
        );
    }
}

fn hdr(t: u32, ioprio: u32, sector: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&t.to_le_bytes());
    h[4..8].copy_from_slice(&ioprio.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    h
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 9) as u8))
        .collect()
}

/// Splits `len` into `n` nonzero-ish pieces (the last takes the rest).
fn split(len: u32, n: u32) -> Vec<u32> {
    let n = n.min(len.max(1));
    let base = len / n;
    let mut v = vec![base; n as usize];
    *v.last_mut().unwrap() += len - base * n;
    v
}
