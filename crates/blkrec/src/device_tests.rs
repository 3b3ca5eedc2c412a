//! Unit tests: the device driven through virtio-queue's MockSplitQueue.

use super::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::FromRawFd;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDesc, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use writelog::{Kind, LogOptions, LogReader, Record};

const QSIZE: u16 = 256;
const MEM_SIZE: usize = 16 << 20;
const IMG_SECTORS: u64 = 2048; // 1 MiB
const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;
const INDIRECT: u64 = 0x38_0000;
const W: u16 = VRING_DESC_F_WRITE as u16;

fn raw(addr: u64, len: u32, flags: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDesc::new(addr, len, flags, 0))
}

struct H {
    dir: tempfile::TempDir,
    /// The same mappings as the device's memory, leaked so the mock queue can borrow them.
    gm: &'static GuestMem,
    /// One mock driver for the whole test: `MockSplitQueue::new` resets the rings.
    vq: MockSplitQueue<'static, GuestMem>,
    dev: Arc<BlkDevice>,
    vring: Vring,
    submitted: u16,
}

fn harness_with(opts: DeviceOptions, log_data: bool) -> H {
    harness_on(opts, log_data, |f| Arc::new(f))
}

/// A harness whose image is `wrap(the real image file)`, for fault injection.
fn harness_on(
    opts: DeviceOptions,
    log_data: bool,
    wrap: impl FnOnce(FileImage) -> Arc<dyn Image>,
) -> H {
    let log_opts = LogOptions {
        log_data,
        ..LogOptions::default()
    };
    harness_log(opts, log_opts, wrap)
}

/// A harness with these log options.
fn harness_log(
    opts: DeviceOptions,
    log_opts: LogOptions,
    wrap: impl FnOnce(FileImage) -> Arc<dyn Image>,
) -> H {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    // A recognisable initial image: byte = sector number.
    let init: Vec<u8> = (0..IMG_SECTORS * 512).map(|i| (i / 512) as u8).collect();
    std::fs::write(&img, init).unwrap();
    let log = Arc::new(LogWriter::create(dir.path().join("w.log"), log_opts).unwrap());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let image = wrap(FileImage::new(file));
    let dev = Arc::new(BlkDevice::with_image(image, &img, IMG_SECTORS * 512, opts, log).unwrap());
    let mmap = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let gm: &'static GuestMem = Box::leak(Box::new(mmap.clone()));
    let mem = GuestMemoryAtomic::new(mmap);
    dev.update_memory(mem.clone()).unwrap();
    dev.acked_features(dev.features());
    let vring = Vring::new(mem.clone(), QSIZE).unwrap();
    let vq = MockSplitQueue::new(gm, QSIZE);
    vring.set_queue_size(QSIZE);
    vring
        .set_queue_info(vq.desc_table_addr().0, vq.avail_addr().0, vq.used_addr().0)
        .unwrap();
    vring.set_queue_ready(true);
    vring.set_enabled(true);
    H {
        dir,
        gm,
        vq,
        dev,
        vring,
        submitted: 0,
    }
}

fn harness() -> H {
    harness_with(DeviceOptions::default(), true)
}

impl H {
    fn m(&self) -> &'static GuestMem {
        self.gm
    }

    fn hdr(&self, req_type: u32, sector: u64) {
        let m = self.m();
        m.write_obj(req_type.to_le(), GuestAddress(HDR)).unwrap();
        m.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
        m.write_obj(sector.to_le(), GuestAddress(HDR + 8)).unwrap();
    }

    /// Posts one chain (NEXT links filled in), runs the device, returns (used len, status).
    fn submit(&mut self, descs: &[RawDescriptor]) -> (u32, u8) {
        let m = self.m();
        m.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let chained: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let d = SplitDesc::from(*d);
                let last = i == descs.len() - 1;
                let fl = if last {
                    d.flags()
                } else {
                    d.flags() | VRING_DESC_F_NEXT as u16
                };
                RawDescriptor::from(SplitDesc::new(d.addr().0, d.len(), fl, i as u16 + 1))
            })
            .collect();
        self.vq.add_desc_chains(&chained, 0).unwrap();
        self.run_and_reap()
    }

    fn run_and_reap(&mut self) -> (u32, u8) {
        let m = self.gm;
        self.dev
            .handle_event(0, EventSet::IN, std::slice::from_ref(&self.vring), 0)
            .unwrap();
        self.submitted += 1;
        assert_eq!(
            self.vq.used().idx().load(),
            self.submitted,
            "request completed"
        );
        let elem = self
            .vq
            .used()
            .ring()
            .ref_at(usize::from((self.submitted - 1) % QSIZE))
            .unwrap()
            .load();
        assert_eq!(elem.id(), 0, "head index");
        (elem.len(), m.read_obj::<u8>(GuestAddress(STATUS)).unwrap())
    }

    fn fill(&self, addr: u64, data: &[u8]) {
        self.m().write_slice(data, GuestAddress(addr)).unwrap();
    }

    fn read_guest(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.m().read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    fn image(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("disk.img")).unwrap()
    }

    fn records(&self) -> Vec<Record> {
        self.dev.log().flush().unwrap();
        LogReader::open(self.dir.path().join("w.log"))
            .unwrap()
            .read_all()
            .unwrap()
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> (u32, u8) {
        self.hdr(VIRTIO_BLK_T_OUT, sector);
        self.fill(DATA, data);
        self.submit(&[
            raw(HDR, 16, 0),
            raw(DATA, data.len() as u32, 0),
            raw(STATUS, 1, W),
        ])
    }

    fn dwz(&mut self, req_type: u32, segs: &[(u64, u32, u32)]) -> (u32, u8) {
        self.hdr(req_type, 0);
        let mut payload = Vec::new();
        for (s, n, f) in segs {
            payload.extend_from_slice(&s.to_le_bytes());
            payload.extend_from_slice(&n.to_le_bytes());
            payload.extend_from_slice(&f.to_le_bytes());
        }
        self.fill(DATA, &payload);
        self.submit(&[
            raw(HDR, 16, 0),
            raw(DATA, payload.len() as u32, 0),
            raw(STATUS, 1, W),
        ])
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;
use crate::virtio::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES,
};

#[test]
fn valid_out_in_flush_get_id() {
    let mut h = harness();
    let data = pattern(7, 8192 + 512);
    assert_eq!(h.write(8, &data), (1, OK));
    let img = h.image();
    assert!(img[8 * 512..8 * 512 + data.len()] == data[..]);
    assert_eq!(img[7 * 512], 7, "neighbour untouched");

    // IN reads it back; used len = data + status.
    h.hdr(VIRTIO_BLK_T_IN, 8);
    h.fill(DATA, &vec![0u8; data.len()]);
    let r = h.submit(&[
        raw(HDR, 16, 0),
        raw(DATA, data.len() as u32, W),
        raw(STATUS, 1, W),
    ]);
    assert_eq!(r, (data.len() as u32 + 1, OK));
    assert_eq!(h.read_guest(DATA, data.len()), data);

    h.hdr(VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(h.submit(&[raw(HDR, 16, 0), raw(STATUS, 1, W)]), (1, OK));

    h.hdr(VIRTIO_BLK_T_GET_ID, 0);
    h.fill(DATA, &[0xaa; 20]);
    let r = h.submit(&[raw(HDR, 16, 0), raw(DATA, 20, W), raw(STATUS, 1, W)]);
    assert_eq!(r, (21, OK));
    let mut want = b"blkrec".to_vec();
    want.resize(20, 0);
    assert_eq!(h.read_guest(DATA, 20), want);

    let recs = h.records();
    assert_eq!(recs.len(), 2, "reads and GET_ID are not logged");
    let w = &recs[0];
    assert_eq!(
        (w.seq, w.kind, w.queue, w.sector, w.len),
        (0, Kind::Write, 0, 8, 8704)
    );
    assert_eq!(w.flags, 0, "writeback mode: no FUA");
    assert_eq!(w.block_hashes, writelog::block_hashes(&data));
    assert_eq!(w.data.as_deref(), Some(&data[..]));
    assert_eq!((recs[1].seq, recs[1].kind), (1, Kind::Flush));
}

#[test]
fn framing_does_not_matter() {
    let mut h = harness();
    // Header and data in one descriptor, data split over two more.
    let data = pattern(3, 2048);
    h.hdr(VIRTIO_BLK_T_OUT, 100);
    h.fill(HDR + 16, &data[..512]);
    h.fill(DATA, &data[512..]);
    let r = h.submit(&[
        raw(HDR, 16 + 512, 0),
        raw(DATA, 1000, 0),
        raw(DATA + 1000, 536, 0),
        raw(STATUS, 1, W),
    ]);
    assert_eq!(r, (1, OK));
    assert!(h.image()[100 * 512..100 * 512 + 2048] == data[..]);

    // IN whose status byte is the last byte of the data descriptor.
    h.hdr(VIRTIO_BLK_T_IN, 100);
    let m = h.m();
    let descs = [
        RawDescriptor::from(SplitDesc::new(HDR, 16, VRING_DESC_F_NEXT as u16, 1)),
        RawDescriptor::from(SplitDesc::new(STATUS - 2048, 2049, W, 0)),
    ];
    h.vq.add_desc_chains(&descs, 0).unwrap();
    assert_eq!(h.run_and_reap(), (2049, OK));
    assert_eq!(h.read_guest(STATUS - 2048, 2048), data);

    // An indirect table (VIRTIO_RING_F_INDIRECT_DESC).
    let data2 = pattern(9, 1024);
    h.hdr(VIRTIO_BLK_T_OUT, 200);
    h.fill(DATA, &data2);
    let table = [
        RawDescriptor::from(SplitDesc::new(HDR, 16, VRING_DESC_F_NEXT as u16, 1)),
        RawDescriptor::from(SplitDesc::new(DATA, 1024, VRING_DESC_F_NEXT as u16, 2)),
        RawDescriptor::from(SplitDesc::new(STATUS, 1, W, 0)),
    ];
    for (i, d) in table.iter().enumerate() {
        m.write_obj(*d, GuestAddress(INDIRECT + 16 * i as u64))
            .unwrap();
    }
    h.vq.add_desc_chains(&[raw(INDIRECT, 48, VRING_DESC_F_INDIRECT as u16)], 0)
        .unwrap();
    assert_eq!(h.run_and_reap(), (1, OK));
    assert!(h.image()[200 * 512..200 * 512 + 1024] == data2[..]);
    assert_eq!(h.records().len(), 2);
}

#[test]
fn discard_and_write_zeroes() {
    let mut h = harness();
    assert_eq!(h.dwz(VIRTIO_BLK_T_DISCARD, &[(16, 8, 0)]), (1, OK));
    assert_eq!(h.dwz(VIRTIO_BLK_T_WRITE_ZEROES, &[(40, 9, 0)]), (1, OK));
    assert_eq!(h.dwz(VIRTIO_BLK_T_WRITE_ZEROES, &[(64, 16, 1)]), (1, OK));
    let img = h.image();
    assert!(img[16 * 512..24 * 512].iter().all(|b| *b == 0));
    assert_eq!(img[24 * 512], 24);
    assert_eq!(img[15 * 512], 15);
    assert!(img[40 * 512..49 * 512].iter().all(|b| *b == 0));
    assert_eq!(img[49 * 512], 49);
    assert!(img[64 * 512..80 * 512].iter().all(|b| *b == 0));
    assert_eq!(img.len() as u64, IMG_SECTORS * 512, "size kept");
    let recs = h.records();
    let got: Vec<_> = recs
        .iter()
        .map(|r| (r.kind, r.sector, r.len, r.flags))
        .collect();
    assert_eq!(
        got,
        vec![
            (Kind::Discard, 16, 4096, 0),
            (Kind::WriteZeroes, 40, 9 * 512, 0),
            (Kind::WriteZeroes, 64, 16 * 512, writelog::flags::UNMAP),
        ]
    );
    assert!(recs
        .iter()
        .all(|r| r.block_hashes.is_empty() && r.data.is_none()));
}

#[test]
fn malformed_requests_fail_cleanly() {
    let mut h = harness();
    let before = h.image();
    let cap = IMG_SECTORS;

    // Wrong descriptor direction: OUT data device-writable, IN data device-readable, and a
    // readable descriptor after a writable one.
    h.hdr(VIRTIO_BLK_T_OUT, 0);
    assert_eq!(
        h.submit(&[raw(HDR, 16, 0), raw(DATA, 512, W), raw(STATUS, 1, W)]),
        (1, IOERR)
    );
    h.hdr(VIRTIO_BLK_T_IN, 0);
    assert_eq!(
        h.submit(&[raw(HDR, 16, 0), raw(DATA, 512, 0), raw(STATUS, 1, W)]),
        (1, IOERR)
    );
    h.hdr(VIRTIO_BLK_T_OUT, 0);
    assert_eq!(
        h.submit(&[
            raw(HDR, 16, 0),
            raw(DATA, 512, W),
            raw(DATA, 512, 0),
            raw(STATUS, 1, W)
        ]),
        (1, IOERR)
    );
    // Header device-writable.
    h.hdr(VIRTIO_BLK_T_IN, 0);
    assert_eq!(
        h.submit(&[raw(HDR, 16, W), raw(DATA, 512, W), raw(STATUS, 1, W)]),
        (1, IOERR)
    );
    // GET_ID with a device-readable buffer.
    h.hdr(VIRTIO_BLK_T_GET_ID, 0);
    assert_eq!(
        h.submit(&[raw(HDR, 16, 0), raw(DATA, 20, 0), raw(STATUS, 1, W)]),
        (1, IOERR)
    );

    // Header too short.
    h.hdr(VIRTIO_BLK_T_OUT, 0);
    assert_eq!(h.submit(&[raw(HDR, 8, 0), raw(STATUS, 1, W)]), (1, IOERR));

    // Missing status byte: last descriptor readable, zero-length, or outside guest memory.
    h.hdr(VIRTIO_BLK_T_OUT, 0);
    assert_eq!(h.submit(&[raw(HDR, 16, 0), raw(DATA, 512, 0)]), (0, 0xff));
    assert_eq!(
        h.submit(&[raw(HDR, 16, 0), raw(DATA, 512, 0), raw(STATUS, 0, W)]),
        (0, 0xff)
    );
    let outside = MEM_SIZE as u64 + 0x1000;
    assert_eq!(
        h.submit(&[raw(HDR, 16, 0), raw(DATA, 512, 0), raw(outside, 1, W)]),
        (0, 0xff)
    );

    // Sectors past the end of the disk, and sector arithmetic overflow.
    assert_eq!(h.write(cap - 1, &[1u8; 1024]), (1, IOERR));
    assert_eq!(h.write(cap, &[1u8; 512]), (1, IOERR));
    assert_eq!(h.write(u64::MAX, &[1u8; 512]), (1, IOERR));
    assert_eq!(h.write(u64::MAX / 512 + 1, &[1u8; 512]), (1, IOERR));
    h.hdr(VIRTIO_BLK_T_IN, cap - 1);
    assert_eq!(
        h.submit(&[raw(HDR, 16, 0), raw(DATA, 1024, W), raw(STATUS, 1, W)]),
        (1, IOERR)
    );
    assert_eq!(h.dwz(VIRTIO_BLK_T_DISCARD, &[(cap - 4, 8, 0)]), (1, IOERR));
    assert_eq!(
        h.dwz(VIRTIO_BLK_T_WRITE_ZEROES, &[(u64::MAX - 2, 8, 0)]),
        (1, IOERR)
    );

    // Length not a multiple of 512.
    assert_eq!(h.write(0, &[1u8; 100]), (1, IOERR));
    h.hdr(VIRTIO_BLK_T_IN, 0);
    assert_eq!(
        h.submit(&[raw(HDR, 16, 0), raw(DATA, 700, W), raw(STATUS, 1, W)]),
        (1, IOERR)
    );

    // Addresses outside guest memory (data, header, and straddling the end).
    h.hdr(VIRTIO_BLK_T_OUT, 0);
    assert_eq!(
        h.submit(&[raw(HDR, 16, 0), raw(outside, 512, 0), raw(STATUS, 1, W)]),
        (1, IOERR)
    );
    let straddle = MEM_SIZE as u64 - 256;
    assert_eq!(
        h.submit(&[raw(HDR, 16, 0), raw(straddle, 512, 0), raw(STATUS, 1, W)]),
        (1, IOERR)
    );
    assert_eq!(
        h.submit(&[raw(outside, 16, 0), raw(DATA, 512, 0), raw(STATUS, 1, W)]),
        (1, IOERR)
    );
    h.hdr(VIRTIO_BLK_T_IN, 0);
    assert_eq!(
        h.submit(&[raw(HDR, 16, 0), raw(straddle, 512, W), raw(STATUS, 1, W)]),
        (1, IOERR)
    );
    assert_eq!(
        h.submit(&[
            raw(HDR, 16, 0),
            raw(u64::MAX - 100, 512, W),
            raw(STATUS, 1, W)
        ]),
        (1, IOERR)
    );

    // Unknown request types (and SCSI passthrough, never offered).
    for t in [2u32, 3, 42, 0x7fff_ffff] {
        h.hdr(t, 0);
        assert_eq!(
            h.submit(&[raw(HDR, 16, 0), raw(STATUS, 1, W)]),
            (1, UNSUPP),
            "type {t}"
        );
    }

    // Discard / write-zeroes payload errors (virtio 1.2 §5.2.6.2).
    assert_eq!(
        h.dwz(VIRTIO_BLK_T_DISCARD, &[(0, 8, 1)]),
        (1, UNSUPP),
        "discard + unmap"
    );
    assert_eq!(
        h.dwz(VIRTIO_BLK_T_WRITE_ZEROES, &[(0, 8, 2)]),
        (1, UNSUPP),
        "unknown flag"
    );
    assert_eq!(
        h.dwz(VIRTIO_BLK_T_DISCARD, &[(0, 8, 0), (16, 8, 0)]),
        (1, UNSUPP),
        "too many segs"
    );
    assert_eq!(
        h.dwz(
            VIRTIO_BLK_T_DISCARD,
            &[(0, crate::virtio::MAX_DWZ_SECTORS + 1, 0)]
        ),
        (1, IOERR)
    );
    h.hdr(VIRTIO_BLK_T_DISCARD, 0);
    assert_eq!(
        h.submit(&[raw(HDR, 16, 0), raw(DATA, 10, 0), raw(STATUS, 1, W)]),
        (1, IOERR)
    );
    assert_eq!(h.submit(&[raw(HDR, 16, 0), raw(STATUS, 1, W)]), (1, IOERR));

    // A descriptor loop: NEXT pointing at itself. virtio-queue's TTL ends the chain; its last
    // descriptor is readable, so there is no status byte.
    h.hdr(VIRTIO_BLK_T_OUT, 0);
    let d = RawDescriptor::from(SplitDesc::new(HDR, 16, VRING_DESC_F_NEXT as u16, 0));
    h.vq.add_desc_chains(&[d], 0).unwrap();
    assert_eq!(h.run_and_reap().0, 0);

    assert!(
        h.image() == before,
        "no malformed request wrote to the image"
    );
    assert!(h.records().is_empty(), "no malformed request was logged");
}

#[test]
fn oversized_request_is_rejected() {
    let mut h = harness();
    // Two descriptors adding up to more than MAX_IO_BYTES (addresses valid, repeated).
    h.hdr(VIRTIO_BLK_T_IN, 0);
    let big = (crate::virtio::MAX_IO_BYTES / 2 + 512) as u32;
    let mem_big = harness_big_mem(&mut h, big);
    assert_eq!(mem_big, (1, IOERR));
}

fn harness_big_mem(h: &mut H, big: u32) -> (u32, u8) {
    // Guest memory is only 16 MiB: use many descriptors over the same 8 MiB window.
    let n = (2 * u64::from(big)).div_ceil(8 << 20) as usize;
    let mut descs = vec![raw(HDR, 16, 0)];
    for _ in 0..n {
        descs.push(raw(0x40_0000, 8 << 20, W));
    }
    descs.push(raw(STATUS, 1, W));
    h.submit(&descs)
}

#[test]
fn read_only_device_rejects_writes() {
    let mut h = harness_with(
        DeviceOptions {
            read_only: true,
            ..DeviceOptions::default()
        },
        false,
    );
    let before = h.image();
    assert!(h.dev.features() & (1 << virtio_bindings::virtio_blk::VIRTIO_BLK_F_RO) != 0);
    assert_eq!(h.write(0, &[9u8; 512]), (1, IOERR));
    assert_eq!(h.dwz(VIRTIO_BLK_T_DISCARD, &[(0, 8, 0)]), (1, IOERR));
    assert_eq!(h.dwz(VIRTIO_BLK_T_WRITE_ZEROES, &[(0, 8, 0)]), (1, IOERR));
    h.hdr(VIRTIO_BLK_T_IN, 3);
    let r = h.submit(&[raw(HDR, 16, 0), raw(DATA, 512, W), raw(STATUS, 1, W)]);
    assert_eq!(r, (513, OK));
    assert_eq!(h.read_guest(DATA, 512), vec![3u8; 512]);
    assert!(h.image() == before);
    assert!(h.records().is_empty());
}

#[test]
fn writethrough_and_config_space() {
    let mut h = harness_with(
        DeviceOptions {
            num_queues: 2,
            serial: "serial-1234567890abcdefXYZ".chars().take(20).collect(),
            ..DeviceOptions::default()
        },
        false,
    );
    let cfg = h.dev.get_config(0, 60);
    assert_eq!(cfg.len(), 60);
    let c = crate::virtio::BlkConfig::from_bytes(&cfg).unwrap();
    assert_eq!(
        (c.capacity, c.blk_size, c.wce, c.num_queues, c.seg_max),
        (IMG_SECTORS, 512, 1, 2, 254)
    );
    assert_eq!(
        h.dev.get_config(8, 4096 - 8).len(),
        4096 - 8,
        "exactly the asked size"
    );
    assert!(
        h.dev.set_config(0, &[0; 8]).is_err(),
        "only wce is writable"
    );
    assert!(h
        .dev
        .set_config(crate::virtio::CONFIG_WCE_OFFSET, &[0, 0])
        .is_err());
    assert_eq!(h.dev.queues_per_thread(), vec![1, 2]);
    assert!(h.dev.writeback());
    h.dev
        .set_config(crate::virtio::CONFIG_WCE_OFFSET, &[0])
        .unwrap();
    assert!(!h.dev.writeback());
    assert_eq!(
        h.dev.get_config(crate::virtio::CONFIG_WCE_OFFSET, 1),
        vec![0]
    );
    assert_eq!(h.write(0, &[5u8; 512]), (1, OK));
    let recs = h.records();
    assert_eq!(
        recs[0].flags,
        writelog::flags::FUA,
        "writethrough writes are durable on completion"
    );
    // Without CONFIG_WCE, FLUSH negotiated means writeback.
    h.dev
        .acked_features(1 << virtio_bindings::virtio_blk::VIRTIO_BLK_F_FLUSH);
    assert!(h.dev.writeback());
    h.dev.acked_features(0);
    assert!(!h.dev.writeback());
    // GET_ID with a short buffer gets a prefix.
    h.hdr(VIRTIO_BLK_T_GET_ID, 0);
    let r = h.submit(&[raw(HDR, 16, 0), raw(DATA, 6, W), raw(STATUS, 1, W)]);
    assert_eq!(r, (7, OK));
    assert_eq!(h.read_guest(DATA, 6), b"serial");
}

/// Posts three 512-byte writes (sectors 10, 11, 12, filled with 1, 2, 3) without kicking.
fn post_three_writes(h: &H) {
    let m = h.m();
    for (i, sector) in [(0u64, 10u64), (1, 11), (2, 12)] {
        m.write_obj(VIRTIO_BLK_T_OUT.to_le(), GuestAddress(HDR + 0x100 * i))
            .unwrap();
        m.write_obj(sector.to_le(), GuestAddress(HDR + 0x100 * i + 8))
            .unwrap();
        m.write_slice(&[i as u8 + 1; 512], GuestAddress(DATA + 0x1000 * i))
            .unwrap();
    }
    let mut descs = Vec::new();
    for i in 0..3u64 {
        let b = (i * 3) as u16;
        descs.push(RawDescriptor::from(SplitDesc::new(
            HDR + 0x100 * i,
            16,
            VRING_DESC_F_NEXT as u16,
            b + 1,
        )));
        descs.push(RawDescriptor::from(SplitDesc::new(
            DATA + 0x1000 * i,
            512,
            VRING_DESC_F_NEXT as u16,
            b + 2,
        )));
        descs.push(RawDescriptor::from(SplitDesc::new(STATUS + i, 1, W, 0)));
    }
    h.vq.add_desc_chains(&descs, 0).unwrap();
}

#[test]
fn finished_requests_are_signalled_while_the_queue_drains() {
    // signal_every = 0: every completion is signalled at once (3 signals); a long
    // signal_every: one signal once the ring is drained. The call eventfd counts them.
    for (every, want) in [(Duration::ZERO, 3u64), (Duration::from_secs(3600), 1)] {
        let h = harness_with(
            DeviceOptions {
                signal_every: every,
                ..DeviceOptions::default()
            },
            false,
        );
        // SAFETY: eventfd returns a new fd or -1; we own it and dup it once for the vring.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK) };
        assert!(fd >= 0);
        // SAFETY: `fd` is the valid eventfd just opened, and nothing else owns it.
        let counter = unsafe { std::fs::File::from_raw_fd(fd) };
        h.vring.set_call(Some(counter.try_clone().unwrap()));
        post_three_writes(&h);
        h.dev
            .handle_event(0, EventSet::IN, std::slice::from_ref(&h.vring), 0)
            .unwrap();
        assert_eq!(h.vq.used().idx().load(), 3);
        let mut n = [0u8; 8];
        (&counter).read_exact(&mut n).unwrap();
        assert_eq!(u64::from_ne_bytes(n), want, "signal_every {every:?}");
    }
}

#[test]
fn event_idx_path_and_batches() {
    let h = harness();
    h.dev.set_event_idx(true);
    h.vring.set_queue_event_idx(true);
    // Three chains posted at once, completed in one handle_event call.
    post_three_writes(&h);
    let m = h.m();
    h.dev
        .handle_event(0, EventSet::IN, std::slice::from_ref(&h.vring), 0)
        .unwrap();
    assert_eq!(h.vq.used().idx().load(), 3);
    // A spurious call (vhost-user-backend 0.24 calls handle_event on ring enable) is harmless.
    h.dev
        .handle_event(0, EventSet::IN, std::slice::from_ref(&h.vring), 0)
        .unwrap();
    assert_eq!(h.vq.used().idx().load(), 3);
    let img = h.image();
    for i in 0..3usize {
        assert_eq!(
            m.read_obj::<u8>(GuestAddress(STATUS + i as u64)).unwrap(),
            OK
        );
        assert!(img[(10 + i) * 512..(11 + i) * 512]
            .iter()
            .all(|b| *b == i as u8 + 1));
    }
    let seqs: Vec<_> = h.records().iter().map(|r| (r.seq, r.sector)).collect();
    assert_eq!(seqs, vec![(0, 10), (1, 11), (2, 12)]);
    // Bad thread ids / events are errors, not panics.
    assert!(h
        .dev
        .handle_event(0, EventSet::IN, std::slice::from_ref(&h.vring), 5)
        .is_err());
    assert!(h
        .dev
        .handle_event(1, EventSet::IN, std::slice::from_ref(&h.vring), 0)
        .is_err());
    assert!(h.dev.handle_event(0, EventSet::IN, &[], 0).is_err());
}

/// An image that injects faults: writes and fdatasyncs fail with a chosen errno, and a
/// write whose data starts with `stall_marker` is applied, reported on `reached`, and then
/// held for `stall` before it returns (the window between a request's pwrite and its record).
struct FaultImage {
    inner: FileImage,
    write_errno: std::sync::atomic::AtomicI32,
    sync_errno: std::sync::atomic::AtomicI32,
    stall_marker: Option<u8>,
    stall: Duration,
    reached: Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

impl FaultImage {
    fn new(inner: FileImage) -> Self {
        FaultImage {
            inner,
            write_errno: 0.into(),
            sync_errno: 0.into(),
            stall_marker: None,
            stall: Duration::ZERO,
            reached: Mutex::new(None),
        }
    }
    fn fail(e: &std::sync::atomic::AtomicI32) -> io::Result<()> {
        match e.load(Ordering::Relaxed) {
            0 => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

impl Image for FaultImage {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.inner.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        Self::fail(&self.write_errno)?;
        self.inner.write_at(buf, off)?;
        if self.stall_marker.is_some() && buf.first() == self.stall_marker.as_ref() {
            if let Some(tx) = self.reached.lock().unwrap().take() {
                let _ = tx.send(());
            }
            std::thread::sleep(self.stall);
        }
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        Self::fail(&self.sync_errno)?;
        self.inner.sync_data()
    }
    fn zero_range(&self, off: u64, len: u64, unmap: bool) -> io::Result<()> {
        Self::fail(&self.write_errno)?;
        self.inner.zero_range(off, len, unmap)
    }
}

/// A write chain at descriptor `first` with its header, data and status at `base`.
fn write_chain(h: &H, first: u16, base: u64, sector: u64, data: &[u8]) -> Vec<RawDescriptor> {
    let m = h.m();
    m.write_obj(VIRTIO_BLK_T_OUT.to_le(), GuestAddress(base))
        .unwrap();
    m.write_obj(0u32, GuestAddress(base + 4)).unwrap();
    m.write_obj(sector.to_le(), GuestAddress(base + 8)).unwrap();
    m.write_slice(data, GuestAddress(base + 0x1000)).unwrap();
    m.write_obj(0xffu8, GuestAddress(base + 0x10_000)).unwrap();
    let n = VRING_DESC_F_NEXT as u16;
    vec![
        RawDescriptor::from(SplitDesc::new(base, 16, n, first + 1)),
        RawDescriptor::from(SplitDesc::new(
            base + 0x1000,
            data.len() as u32,
            n,
            first + 2,
        )),
        RawDescriptor::from(SplitDesc::new(base + 0x10_000, 1, W, 0)),
    ]
}

/// Overlapping writes in flight on two queues: the one applied to the image last is the one
/// logged last. Queue 0's write of A is applied and then stalls before it is logged; queue 1
/// meanwhile writes B to the same sectors. Without the range lock, B was logged first and A
/// second while the image held B, so replay and forensics' last writer disagreed with it.
#[test]
fn overlapping_writes_on_two_queues_are_logged_in_image_order() {
    let (tx, rx) = std::sync::mpsc::channel();
    let opts = DeviceOptions {
        num_queues: 2,
        ..DeviceOptions::default()
    };
    let h = harness_on(opts, true, |f| {
        let mut img = FaultImage::new(f);
        img.stall_marker = Some(0xaa);
        img.stall = Duration::from_millis(300);
        *img.reached.lock().unwrap() = Some(tx);
        Arc::new(img)
    });
    let (a, b) = (vec![0xaau8; 4096], vec![0xbbu8; 4096]);
    let base_a = 0x40_0000;
    let base_b = 0x60_0000;
    h.vq.add_desc_chains(&write_chain(&h, 0, base_a, 8, &a), 0)
        .unwrap();
    let (dev, vring) = (&h.dev, &h.vring);
    std::thread::scope(|sc| {
        let on_queue = |q: usize| {
            sc.spawn(move || {
                dev.handle_event(0, EventSet::IN, std::slice::from_ref(vring), q)
                    .unwrap()
            })
        };
        let t0 = on_queue(0);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("queue 0 applied A");
        // B overlaps A (sectors 12..20 against 8..16).
        h.vq.add_desc_chains(&write_chain(&h, 3, base_b, 12, &b), 3)
            .unwrap();
        let t1 = on_queue(1);
        t0.join().unwrap();
        t1.join().unwrap();
    });
    let m = h.m();
    assert_eq!(
        m.read_obj::<u8>(GuestAddress(base_a + 0x10_000)).unwrap(),
        OK
    );
    assert_eq!(
        m.read_obj::<u8>(GuestAddress(base_b + 0x10_000)).unwrap(),
        OK
    );
    let writes: Vec<Record> = h
        .records()
        .into_iter()
        .filter(|r| r.kind == Kind::Write)
        .collect();
    assert_eq!(writes.len(), 2);
    // Replay in log order must give the image: the overlap (sectors 12..16) holds B.
    let image = h.image();
    let mut replay = image.clone();
    for w in &writes {
        let off = w.sector as usize * 512;
        replay[off..off + w.len as usize].copy_from_slice(w.data.as_ref().unwrap());
    }
    assert_eq!(image[12 * 512], 0xbb, "B was applied last");
    assert!(
        replay == image,
        "log order {:?} disagrees with the image",
        writes.iter().map(|w| w.sector).collect::<Vec<_>>()
    );
}

/// A FLUSH whose fdatasync fails completes with IOERR, and its record says FAILED, so it
/// never counts as a flush; a later good flush covers every record before it.
#[test]
fn a_failed_flush_is_logged_as_failed() {
    let img = Arc::new(Mutex::new(None::<Arc<FaultImage>>));
    let keep = img.clone();
    let mut h = harness_on(DeviceOptions::default(), true, move |f| {
        let i = Arc::new(FaultImage::new(f));
        *keep.lock().unwrap() = Some(i.clone());
        i
    });
    let fault = img.lock().unwrap().clone().unwrap();
    assert_eq!(h.write(0, &pattern(1, 4096)).1, OK);
    fault.sync_errno.store(libc::EIO, Ordering::Relaxed);
    h.hdr(VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(h.submit(&[raw(HDR, 16, 0), raw(STATUS, 1, W)]).1, IOERR);
    fault.sync_errno.store(0, Ordering::Relaxed);
    h.hdr(VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(h.submit(&[raw(HDR, 16, 0), raw(STATUS, 1, W)]).1, OK);
    let recs = h.records();
    let kinds: Vec<Kind> = recs.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [Kind::Write, Kind::Flush, Kind::Flush]);
    assert!(recs[1].flags & flags::FAILED != 0, "{:?}", recs[1]);
    assert_eq!(recs[1].flush_covers(), None);
    assert_eq!(
        recs[2].flush_covers(),
        Some(2),
        "covers the write and the failed flush"
    );
}

/// EIO and ENOSPC from the image: the request fails with IOERR, nothing is logged, the
/// image keeps its old contents, and the next write (once the fault is gone) works.
#[test]
fn image_write_errors_are_ioerr_and_not_logged() {
    for errno in [libc::EIO, libc::ENOSPC] {
        let img = Arc::new(Mutex::new(None::<Arc<FaultImage>>));
        let keep = img.clone();
        let mut h = harness_on(DeviceOptions::default(), true, move |f| {
            let i = Arc::new(FaultImage::new(f));
            *keep.lock().unwrap() = Some(i.clone());
            i
        });
        let fault = img.lock().unwrap().clone().unwrap();
        let before = h.image();
        fault.write_errno.store(errno, Ordering::Relaxed);
        assert_eq!(h.write(16, &pattern(2, 4096)).1, IOERR);
        assert_eq!(h.dwz(VIRTIO_BLK_T_WRITE_ZEROES, &[(32, 8, 0)]).1, IOERR);
        assert_eq!(h.dwz(VIRTIO_BLK_T_DISCARD, &[(40, 8, 0)]).1, IOERR);
        assert!(
            h.records().is_empty(),
            "errno {errno}: a failed request was logged"
        );
        assert!(h.image() == before, "errno {errno}: the image changed");
        let f = h.dev.faults();
        assert_eq!(f.image_errors, 3, "{f:?}");
        assert_eq!(f.first_image_error.as_ref().and_then(|e| e.1), Some(errno));
        fault.write_errno.store(0, Ordering::Relaxed);
        assert_eq!(h.write(16, &pattern(3, 4096)).1, OK);
        assert_eq!(h.records().len(), 1);
    }
}

/// With EVENT_IDX, a driver whose available index is more than the queue size ahead of the
/// device's makes pop_descriptor_chain() refuse every time while enable_notification() keeps
/// reporting work: the worker used to spin forever (fuzz target blk_request,
/// fuzz/artifacts-found/blk_request/event-idx-bogus-avail-idx-hang). It must return.
#[test]
fn bogus_avail_index_with_event_idx_does_not_hang() {
    let h = harness();
    h.dev.set_event_idx(true);
    h.vring.set_queue_event_idx(true);
    h.vq.avail().idx().store(u16::to_le(QSIZE + 7));
    let (tx, rx) = std::sync::mpsc::channel();
    let (dev, vring) = (&h.dev, &h.vring);
    std::thread::scope(|sc| {
        sc.spawn(move || {
            let r = dev.handle_event(0, EventSet::IN, std::slice::from_ref(vring), 0);
            let _ = tx.send(r.is_ok());
        });
        let done = rx.recv_timeout(Duration::from_secs(10));
        if done.is_err() {
            // Leave no spinning thread behind: abort the whole test binary.
            eprintln!("handle_event spun on a bogus avail index");
            std::process::abort();
        }
    });
    assert_eq!(h.vq.used().idx().load(), 0, "nothing was completed");
}

/// Captures what `tracing` prints while the device runs on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Runs `f` with `tracing` output captured (on this thread).
fn capture_tracing<T>(f: impl FnOnce() -> T) -> (T, String) {
    let out = Captured::default();
    let w = out.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .finish();
    let r = tracing::subscriber::with_default(sub, f);
    (r, out.text())
}

/// Submits, checks that exactly one request error of `kind` was counted and that the status
/// byte the guest got is `kind.status()`; returns the used length and status.
fn failing(h: &mut H, kind: K, descs: &[RawDescriptor]) -> (u32, u8) {
    let before = h.dev.request_errors();
    let (len, status) = h.submit(descs);
    let after = h.dev.request_errors();
    assert_eq!(after.total, before.total + 1, "{kind}: {after:?}");
    assert_eq!(after.get(kind), before.get(kind) + 1, "{kind}: {after:?}");
    assert_eq!(status, kind.status(), "{kind}: status byte");
    (len, status)
}

use crate::request_error::RequestErrorKind as K;

/// Every malformed request is counted under its own kind, and the status byte the guest got
/// is the one its kind says; successful requests are not counted.
#[test]
fn failed_requests_are_counted_per_kind() {
    let mut h = harness();
    let cap = IMG_SECTORS;
    assert_eq!(h.write(8, &pattern(1, 4096)), (1, OK));
    assert!(h.dev.request_errors().is_empty());

    // Unaligned length, twice.
    for _ in 0..2 {
        h.hdr(VIRTIO_BLK_T_OUT, 0);
        h.fill(DATA, &[1u8; 100]);
        let descs = [raw(HDR, 16, 0), raw(DATA, 100, 0), raw(STATUS, 1, W)];
        assert_eq!(failing(&mut h, K::UnalignedLength, &descs), (1, IOERR));
    }
    // Past the end of the disk.
    h.hdr(VIRTIO_BLK_T_IN, cap - 1);
    let descs = [raw(HDR, 16, 0), raw(DATA, 1024, W), raw(STATUS, 1, W)];
    assert_eq!(failing(&mut h, K::OutOfRange, &descs), (1, IOERR));
    // Unknown type.
    h.hdr(42, 0);
    let descs = [raw(HDR, 16, 0), raw(STATUS, 1, W)];
    assert_eq!(failing(&mut h, K::UnsupportedType, &descs), (1, UNSUPP));
    // Short header.
    h.hdr(VIRTIO_BLK_T_OUT, 0);
    let descs = [raw(HDR, 8, 0), raw(STATUS, 1, W)];
    assert_eq!(failing(&mut h, K::ShortHeader, &descs), (1, IOERR));
    // Misordered descriptors.
    let descs = [
        raw(HDR, 16, 0),
        raw(DATA, 512, W),
        raw(DATA, 512, 0),
        raw(STATUS, 1, W),
    ];
    assert_eq!(
        failing(&mut h, K::MisorderedDescriptors, &descs),
        (1, IOERR)
    );
    // OUT with device-writable data.
    let descs = [raw(HDR, 16, 0), raw(DATA, 512, W), raw(STATUS, 1, W)];
    assert_eq!(failing(&mut h, K::WrongDirection, &descs), (1, IOERR));
    // Outside guest memory.
    let outside = MEM_SIZE as u64 + 0x1000;
    let descs = [raw(HDR, 16, 0), raw(outside, 512, 0), raw(STATUS, 1, W)];
    assert_eq!(failing(&mut h, K::BufferOutsideMemory, &descs), (1, IOERR));
    // GET_ID without a buffer.
    h.hdr(VIRTIO_BLK_T_GET_ID, 0);
    let descs = [raw(HDR, 16, 0), raw(STATUS, 1, W)];
    assert_eq!(failing(&mut h, K::NoIdBuffer, &descs), (1, IOERR));
    // Discard / write-zeroes payloads.
    h.hdr(VIRTIO_BLK_T_DISCARD, 0);
    let descs = [raw(HDR, 16, 0), raw(DATA, 10, 0), raw(STATUS, 1, W)];
    assert_eq!(failing(&mut h, K::BadSegmentList, &descs), (1, IOERR));
    let before = h.dev.request_errors();
    assert_eq!(h.dwz(VIRTIO_BLK_T_DISCARD, &[(0, 8, 1)]), (1, UNSUPP));
    assert_eq!(
        h.dwz(VIRTIO_BLK_T_DISCARD, &[(0, 8, 0), (8, 8, 0)]),
        (1, UNSUPP)
    );
    let big = crate::virtio::MAX_DWZ_SECTORS + 1;
    assert_eq!(h.dwz(VIRTIO_BLK_T_WRITE_ZEROES, &[(0, big, 0)]), (1, IOERR));
    let after = h.dev.request_errors();
    assert_eq!(after.total, before.total + 3);
    assert_eq!(after.get(K::UnsupportedFlags), 1);
    assert_eq!(after.get(K::TooManySegments), 1);
    assert_eq!(after.get(K::TooLarge), 1);
    assert_eq!(K::UnsupportedFlags.status(), UNSUPP);
    assert_eq!(K::TooManySegments.status(), UNSUPP);
    // No status byte: counted, though the guest gets no status.
    h.hdr(VIRTIO_BLK_T_OUT, 0);
    assert_eq!(h.submit(&[raw(HDR, 16, 0), raw(DATA, 512, 0)]), (0, 0xff));

    let c = h.dev.request_errors();
    let want: BTreeMap<String, u64> = [
        (K::UnalignedLength, 2),
        (K::OutOfRange, 1),
        (K::UnsupportedType, 1),
        (K::ShortHeader, 1),
        (K::MisorderedDescriptors, 1),
        (K::WrongDirection, 1),
        (K::BufferOutsideMemory, 1),
        (K::NoIdBuffer, 1),
        (K::BadSegmentList, 1),
        (K::UnsupportedFlags, 1),
        (K::TooManySegments, 1),
        (K::TooLarge, 1),
        (K::NoStatusByte, 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.as_str().to_string(), n))
    .collect();
    assert_eq!(c.by_kind, want);
    assert_eq!(c.total, 14);
    assert_eq!(h.records().len(), 1, "only the good write was logged");
}

/// The first error of each kind is logged, later ones only counted.
#[test]
fn each_kind_is_logged_once() {
    let mut h = harness();
    let ((), text) = capture_tracing(|| {
        for _ in 0..3 {
            assert_eq!(h.write(0, &[1u8; 100]), (1, IOERR));
        }
        h.hdr(7, 0);
        assert_eq!(h.submit(&[raw(HDR, 16, 0), raw(STATUS, 1, W)]), (1, UNSUPP));
    });
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("WARN blkrec: guest request failed: data length 100 is not a multiple"),
        "{text}"
    );
    assert!(lines[0].contains("kind=\"unaligned-length\""), "{text}");
    assert!(
        lines[1].contains("request type 7 is not supported"),
        "{text}"
    );
    assert_eq!(h.dev.request_errors().get(K::UnalignedLength), 3);
}

/// Writes to a read-only device count as read-only, whatever the request.
#[test]
fn read_only_failures_are_counted() {
    let mut h = harness_with(
        DeviceOptions {
            read_only: true,
            ..DeviceOptions::default()
        },
        false,
    );
    h.hdr(VIRTIO_BLK_T_OUT, 0);
    h.fill(DATA, &[9u8; 512]);
    let descs = [raw(HDR, 16, 0), raw(DATA, 512, 0), raw(STATUS, 1, W)];
    assert_eq!(failing(&mut h, K::ReadOnly, &descs), (1, IOERR));
    assert_eq!(h.dwz(VIRTIO_BLK_T_DISCARD, &[(0, 8, 0)]), (1, IOERR));
    let c = h.dev.request_errors();
    assert_eq!((c.total, c.get(K::ReadOnly)), (2, 2));
    assert_eq!(c.to_string(), "2 (read-only 2)");
}

/// Host-side failures: image I/O errors carry the errno, a full log says so, and a failed
/// (finished) log is a log failure.
#[test]
fn host_failures_are_counted() {
    let img = Arc::new(Mutex::new(None::<Arc<FaultImage>>));
    let keep = img.clone();
    let mut h = harness_on(DeviceOptions::default(), true, move |f| {
        let i = Arc::new(FaultImage::new(f));
        *keep.lock().unwrap() = Some(i.clone());
        i
    });
    let fault = img.lock().unwrap().clone().unwrap();
    fault.write_errno.store(libc::ENOSPC, Ordering::Relaxed);
    assert_eq!(h.write(0, &pattern(1, 512)), (1, IOERR));
    fault.write_errno.store(0, Ordering::Relaxed);
    fault.sync_errno.store(libc::EIO, Ordering::Relaxed);
    h.hdr(VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(h.submit(&[raw(HDR, 16, 0), raw(STATUS, 1, W)]), (1, IOERR));
    assert_eq!(h.dev.request_errors().get(K::ImageIo), 2);
    fault.sync_errno.store(0, Ordering::Relaxed);
    h.dev.log().finish().unwrap();
    assert_eq!(h.write(0, &pattern(2, 512)), (1, IOERR));
    let c = h.dev.request_errors();
    assert_eq!((c.total, c.get(K::LogFailed)), (3, 1), "{c:?}");

    // A log capped just above its header fills up at the first write.
    let mut h = harness_log(
        DeviceOptions::default(),
        LogOptions {
            log_data: true,
            max_bytes: Some(4096),
            ..LogOptions::default()
        },
        |f| Arc::new(f),
    );
    assert_eq!(h.write(0, &pattern(3, 8192)), (1, IOERR));
    assert_eq!(h.write(0, &pattern(4, 8192)), (1, IOERR));
    let c = h.dev.request_errors();
    assert_eq!((c.total, c.get(K::LogFull)), (2, 2), "{c:?}");
}
