//! Record types and their on-disk encoding.
//!
//! File layout (all integers little endian):
//!
//! ```text
//! header (40 bytes):
//!   0  magic        [u8; 8] = b"E4RWLOG\0"
//!   8  version      u32     = 1
//!   12 sector_size  u32     unit of `Record::sector` (512 for virtio-blk)
//!   16 flags        u32     bit 0: records carry the written data
//!   20 reserved     u32     = 0
//!   24 created_ns   u64     wall clock (ns since the Unix epoch) when the log was created
//!   32 reserved     u32     = 0
//!   36 crc32c       u32     of bytes 0..36
//! records, each:
//!   0  payload_len  u32
//!   4  crc32c       u32     of the payload
//!   8  payload:
//!        0  seq        u64
//!        8  time_ns    u64   monotonic ns since the log was created
//!        16 kind       u8
//!        17 rflags     u8    bit 0: data present
//!        18 queue      u16
//!        20 flags      u32   FUA / BARRIER / UNMAP
//!        24 sector     u64   FLUSH: seq below which records are covered (Entry::flush)
//!        32 len        u32   bytes
//!        36 n_hashes   u32
//!        40 mark_len   u32
//!        44 data_len   u32
//!        48 hashes     [u64; n_hashes]
//!        .. mark       [u8; mark_len]   (UTF-8)
//!        .. data       [u8; data_len]
//! ```

use crate::Error;
use std::fmt;

/// Magic at the start of every write log.
pub const MAGIC: [u8; 8] = *b"E4RWLOG\0";
/// Current format version.
pub const VERSION: u32 = 1;
/// Size of the file header.
pub const HEADER_LEN: usize = 40;
/// Size of the per-record frame (payload length + checksum).
pub const FRAME_LEN: usize = 8;
/// Size of the fixed part of a payload.
pub const FIXED_LEN: usize = 48;
/// Size of the part of the payload that is stamped under the writer's lock (seq, time).
pub const STAMP_LEN: usize = 16;
/// Records larger than this are treated as corruption by the reader.
pub const MAX_PAYLOAD: u32 = 1 << 30;
/// Block size the write hashes are computed over.
pub const HASH_BLOCK: usize = 4096;
/// Longest mark name: a dm-log-writes MARK entry carries its name inside the 512-byte entry
/// sector after the 32-byte entry header (kernel `log_mark()` rejects longer ones).
pub const MAX_MARK_LEN: usize = 512 - 32;
/// Header flag: records carry data.
pub const HDR_FLAG_DATA: u32 = 1;
const RFLAG_DATA: u8 = 1;

/// Request flags carried by a record.
pub mod flags {
    /// Forced unit access: the write was durable when it completed.
    pub const FUA: u32 = 1;
    /// Legacy virtio `VIRTIO_BLK_T_BARRIER` bit was set on the request.
    pub const BARRIER: u32 = 2;
    /// WRITE_ZEROES with `VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP`.
    pub const UNMAP: u32 = 4;
    /// FLUSH whose fdatasync of the image failed (the guest got IOERR): it made nothing
    /// durable.
    pub const FAILED: u32 = 8;
    /// All known flags.
    pub const ALL: u32 = FUA | BARRIER | UNMAP | FAILED;
}

/// What a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    /// Data written (VIRTIO_BLK_T_OUT).
    Write = 1,
    /// Range discarded.
    Discard = 2,
    /// Range zeroed.
    WriteZeroes = 3,
    /// Cache flush.
    Flush = 4,
    /// Named mark inserted by the harness.
    Mark = 5,
}

impl Kind {
    /// Decodes the on-disk kind byte.
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Write,
            2 => Kind::Discard,
            3 => Kind::WriteZeroes,
            4 => Kind::Flush,
            5 => Kind::Mark,
            _ => return None,
        })
    }

    /// Upper-case name used in listings.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Write => "WRITE",
            Kind::Discard => "DISCARD",
            Kind::WriteZeroes => "WRITE_ZEROES",
            Kind::Flush => "FLUSH",
            Kind::Mark => "MARK",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One logged event, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Global sequence number (completion order), contiguous from 0.
    pub seq: u64,
    /// Monotonic ns since the log was created.
    pub time_ns: u64,
    /// Virtqueue the request came from (0 for marks).
    pub queue: u16,
    /// Record kind.
    pub kind: Kind,
    /// First sector (in units of the log's sector size, 512 for virtio-blk).
    pub sector: u64,
    /// Length in bytes (0 for flush and mark).
    pub len: u32,
    /// [`flags`] bits.
    pub flags: u32,
    /// xxh3-64 of each 4096-byte chunk of the written data (last may be shorter).
    pub block_hashes: Vec<u64>,
    /// Written data, when the log records data.
    pub data: Option<Vec<u8>>,
    /// Mark name for [`Kind::Mark`].
    pub mark: Option<String>,
}

impl Record {
    /// For a FLUSH that succeeded: the seq below which every record was durable when it
    /// completed (see [`Entry::flush`]). `None` for other kinds and for failed flushes.
    pub fn flush_covers(&self) -> Option<u64> {
        (self.kind == Kind::Flush && self.flags & flags::FAILED == 0).then_some(self.sector)
    }

    /// End sector (exclusive) of the range this record touches, for `sector_size`-byte sectors.
    pub fn end_sector(&self, sector_size: u32) -> u64 {
        // Saturating: a record read from a damaged log may name any sector.
        self.sector
            .saturating_add(u64::from(self.len).div_ceil(u64::from(sector_size.max(1))))
    }
}

/// What the writer is asked to append (borrowed; the writer hashes and copies what it needs).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Virtqueue index.
    pub queue: u16,
    /// Record kind.
    pub kind: Kind,
    /// First sector.
    pub sector: u64,
    /// Length in bytes (for writes: must equal `data.len()`).
    pub len: u32,
    /// [`flags`] bits.
    pub flags: u32,
    /// The written data (writes only): hashed always, stored when the log records data.
    pub data: Option<&'a [u8]>,
    /// Mark name (marks only).
    pub mark: Option<&'a str>,
}

impl<'a> Entry<'a> {
    /// A write of `data` at `sector`.
    pub fn write(queue: u16, sector: u64, data: &'a [u8], flags: u32) -> Self {
        Entry {
            queue,
            kind: Kind::Write,
            sector,
            len: u32::try_from(data.len()).unwrap_or(u32::MAX),
            flags,
            data: Some(data),
            mark: None,
        }
    }
    /// A discard of `len` bytes at `sector`.
    pub fn discard(queue: u16, sector: u64, len: u32, flags: u32) -> Self {
        Entry {
            queue,
            kind: Kind::Discard,
            sector,
            len,
            flags,
            data: None,
            mark: None,
        }
    }
    /// A write-zeroes of `len` bytes at `sector`.
    pub fn write_zeroes(queue: u16, sector: u64, len: u32, flags: u32) -> Self {
        Entry {
            queue,
            kind: Kind::WriteZeroes,
            sector,
            len,
            flags,
            data: None,
            mark: None,
        }
    }
    /// A cache flush, logged once the image's fdatasync returned. `covers`: every record
    /// with a seq below it had been applied to the image before that fdatasync started, so
    /// it is durable once the flush completed (unless [`flags::FAILED`]). Records between
    /// `covers` and the flush's own seq raced with it and are not claimed. Stored in the
    /// record's `sector` field, which a flush has no other use for.
    pub fn flush(queue: u16, flags: u32, covers: u64) -> Self {
        Entry {
            queue,
            kind: Kind::Flush,
            sector: covers,
            len: 0,
            flags,
            data: None,
            mark: None,
        }
    }
    /// A named mark.
    pub fn mark(name: &'a str) -> Self {
        Entry {
            queue: 0,
            kind: Kind::Mark,
            sector: 0,
            len: 0,
            flags: 0,
            data: None,
            mark: Some(name),
        }
    }
}

/// xxh3-64 of each 4096-byte chunk of `data` (the last chunk may be shorter).
pub fn block_hashes(data: &[u8]) -> Vec<u64> {
    data.chunks(HASH_BLOCK)
        .map(xxhash_rust::xxh3::xxh3_64)
        .collect()
}

/// Checks a mark name: non-empty, at most [`MAX_MARK_LEN`] bytes, no control characters
/// (the control socket is line based and dm-log-writes stores it as a C string).
pub fn validate_mark(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > MAX_MARK_LEN || name.chars().any(|c| c.is_control()) {
        return Err(Error::BadMark {
            name: name.chars().take(64).collect(),
            max: MAX_MARK_LEN,
        });
    }
    Ok(())
}

/// An encoded record minus its stamp (seq, time), ready to be appended under the lock.
pub(crate) struct Encoded<'a> {
    /// Payload bytes after the stamp, before the data: fixed fields, hashes, mark.
    pub body: Vec<u8>,
    /// Data appended after `body` (borrowed, not copied).
    pub data: Option<&'a [u8]>,
    /// crc32c over body ++ data.
    pub crc_rest: u32,
}

impl Encoded<'_> {
    pub fn rest_len(&self) -> usize {
        self.body.len() + self.data.map_or(0, <[u8]>::len)
    }
    pub fn payload_len(&self) -> usize {
        STAMP_LEN + self.rest_len()
    }
}

/// Validates `e` and encodes everything but the stamp. `keep_data`: store the data.
pub(crate) fn encode<'a>(e: &Entry<'a>, keep_data: bool) -> Result<Encoded<'a>, Error> {
    let mut hashes = Vec::new();
    let mut data = None;
    match e.kind {
        Kind::Write => {
            let d = e
                .data
                .ok_or(Error::BadEntry("a write entry needs its data"))?;
            if u32::try_from(d.len()).ok() != Some(e.len) {
                return Err(Error::BadEntry(
                    "write entry len differs from its data length",
                ));
            }
            hashes = block_hashes(d);
            if keep_data {
                data = Some(d);
            }
        }
        Kind::Mark => {
            validate_mark(
                e.mark
                    .ok_or(Error::BadEntry("a mark entry needs its name"))?,
            )?;
        }
        Kind::Discard | Kind::WriteZeroes | Kind::Flush => {}
    }
    if e.kind != Kind::Write && e.data.is_some() {
        return Err(Error::BadEntry("only write entries carry data"));
    }
    if e.kind != Kind::Mark && e.mark.is_some() {
        return Err(Error::BadEntry("only mark entries carry a name"));
    }
    let mark = e.mark.unwrap_or("").as_bytes();
    let data_len = data.map_or(0, <[u8]>::len);
    let payload = STAMP_LEN + (FIXED_LEN - STAMP_LEN) + hashes.len() * 8 + mark.len() + data_len;
    if payload > MAX_PAYLOAD as usize {
        return Err(Error::BadEntry("record too large (over 1 GiB)"));
    }
    let mut body = Vec::with_capacity(FIXED_LEN - STAMP_LEN + hashes.len() * 8 + mark.len());
    body.push(e.kind as u8);
    body.push(if data.is_some() { RFLAG_DATA } else { 0 });
    body.extend_from_slice(&e.queue.to_le_bytes());
    body.extend_from_slice(&e.flags.to_le_bytes());
    body.extend_from_slice(&e.sector.to_le_bytes());
    body.extend_from_slice(&e.len.to_le_bytes());
    // The casts below cannot truncate: the payload was bounded by MAX_PAYLOAD above.
    body.extend_from_slice(&(hashes.len() as u32).to_le_bytes());
    body.extend_from_slice(&(mark.len() as u32).to_le_bytes());
    body.extend_from_slice(&(data_len as u32).to_le_bytes());
    for h in &hashes {
        body.extend_from_slice(&h.to_le_bytes());
    }
    body.extend_from_slice(mark);
    let mut crc_rest = crc32c::crc32c(&body);
    if let Some(d) = data {
        crc_rest = crc32c::crc32c_append(crc_rest, d);
    }
    Ok(Encoded {
        body,
        data,
        crc_rest,
    })
}

/// The 16-byte stamp and the frame (length + crc over the whole payload).
pub(crate) fn frame(enc: &Encoded<'_>, seq: u64, time_ns: u64) -> [u8; FRAME_LEN + STAMP_LEN] {
    let mut out = [0u8; FRAME_LEN + STAMP_LEN];
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    out[16..24].copy_from_slice(&time_ns.to_le_bytes());
    let crc = crate::crc::crc32c_concat(
        crc32c::crc32c(&out[8..24]),
        enc.crc_rest,
        enc.rest_len() as u64,
    );
    // payload_len <= MAX_PAYLOAD, checked in encode().
    out[0..4].copy_from_slice(&(enc.payload_len() as u32).to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes a payload whose checksum was already verified. `None` if it is inconsistent.
pub(crate) fn decode(p: &[u8]) -> Option<Record> {
    if p.len() < FIXED_LEN {
        return None;
    }
    let kind = Kind::from_u8(p[16])?;
    let has_data = p[17] & RFLAG_DATA != 0;
    let n_hashes = u32_at(p, 36) as usize;
    let mark_len = u32_at(p, 40) as usize;
    let data_len = u32_at(p, 44) as usize;
    let need = FIXED_LEN
        .checked_add(n_hashes.checked_mul(8)?)?
        .checked_add(mark_len)?
        .checked_add(data_len)?;
    if need != p.len() || (!has_data && data_len != 0) {
        return None;
    }
    let mut at = FIXED_LEN;
    let block_hashes = (0..n_hashes).map(|i| u64_at(p, at + i * 8)).collect();
    at += n_hashes * 8;
    let mark = if kind == Kind::Mark {
        Some(String::from_utf8(p[at..at + mark_len].to_vec()).ok()?)
    } else if mark_len != 0 {
        return None;
    } else {
        None
    };
    at += mark_len;
    let data = has_data.then(|| p[at..at + data_len].to_vec());
    let len = u32_at(p, 32);
    if let Some(d) = &data {
        if d.len() != len as usize {
            return None;
        }
    }
    Some(Record {
        seq: u64_at(p, 0),
        time_ns: u64_at(p, 8),
        kind,
        queue: u16_at(p, 18),
        flags: u32_at(p, 20),
        sector: u64_at(p, 24),
        len,
        block_hashes,
        data,
        mark,
    })
}

/// Parsed file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHeader {
    /// Format version.
    pub version: u32,
    /// Unit of `Record::sector` in bytes.
    pub sector_size: u32,
    /// Whether records carry data.
    pub has_data: bool,
    /// Wall clock at creation, ns since the Unix epoch.
    pub created_ns: u64,
}

impl LogHeader {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&self.version.to_le_bytes());
        h[12..16].copy_from_slice(&self.sector_size.to_le_bytes());
        let fl = if self.has_data { HDR_FLAG_DATA } else { 0 };
        h[16..20].copy_from_slice(&fl.to_le_bytes());
        h[24..32].copy_from_slice(&self.created_ns.to_le_bytes());
        let crc = crc32c::crc32c(&h[0..36]);
        h[36..40].copy_from_slice(&crc.to_le_bytes());
        h
    }

    pub(crate) fn decode(h: &[u8; HEADER_LEN]) -> Result<Self, Error> {
        if h[0..8] != MAGIC {
            return Err(Error::NotALog);
        }
        if crc32c::crc32c(&h[0..36]) != u32_at(h, 36) {
            return Err(Error::BadHeader("header checksum mismatch"));
        }
        let version = u32_at(h, 8);
        if version != VERSION {
            return Err(Error::Version(version));
        }
        let sector_size = u32_at(h, 12);
        if !sector_size.is_power_of_two() || sector_size < 512 {
            return Err(Error::BadHeader("sector size is not a power of two >= 512"));
        }
        Ok(LogHeader {
            version,
            sector_size,
            has_data: u32_at(h, 16) & HDR_FLAG_DATA != 0,
            created_ns: u64_at(h, 24),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(e: Entry<'_>, keep: bool) -> Record {
        let enc = encode(&e, keep).unwrap();
        let fr = frame(&enc, 7, 99);
        let mut payload = fr[8..].to_vec();
        payload.extend_from_slice(&enc.body);
        if let Some(d) = enc.data {
            payload.extend_from_slice(d);
        }
        assert_eq!(u32_at(&fr, 0) as usize, payload.len());
        assert_eq!(u32_at(&fr, 4), crc32c::crc32c(&payload), "combined crc");
        decode(&payload).unwrap()
    }

    #[test]
    fn write_roundtrip_with_and_without_data() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let r = roundtrip(Entry::write(3, 16, &data, flags::FUA), true);
        assert_eq!(
            (r.seq, r.time_ns, r.queue, r.sector, r.len),
            (7, 99, 3, 16, 10_000)
        );
        assert_eq!(r.kind, Kind::Write);
        assert_eq!(r.flags, flags::FUA);
        assert_eq!(r.block_hashes.len(), 3);
        assert_eq!(r.block_hashes[2], xxhash_rust::xxh3::xxh3_64(&data[8192..]));
        assert_eq!(r.data.as_deref(), Some(&data[..]));
        let r = roundtrip(Entry::write(0, 16, &data, 0), false);
        assert_eq!(r.data, None);
        assert_eq!(r.block_hashes.len(), 3);
    }

    #[test]
    fn mark_and_others_roundtrip() {
        let r = roundtrip(Entry::mark("migrate-start file 3"), true);
        assert_eq!(r.mark.as_deref(), Some("migrate-start file 3"));
        assert_eq!(r.len, 0);
        let r = roundtrip(Entry::discard(1, 8, 4096, 0), true);
        assert_eq!(
            (r.kind, r.len, r.data.is_none()),
            (Kind::Discard, 4096, true)
        );
        let r = roundtrip(Entry::write_zeroes(1, 8, 512, flags::UNMAP), true);
        assert_eq!((r.kind, r.flags), (Kind::WriteZeroes, flags::UNMAP));
        let r = roundtrip(Entry::flush(2, 0, 7), true);
        assert_eq!((r.kind, r.queue), (Kind::Flush, 2));
    }

    #[test]
    fn bad_entries_are_rejected() {
        assert!(encode(&Entry::mark(""), true).is_err());
        assert!(encode(&Entry::mark("a\nb"), true).is_err());
        assert!(encode(&Entry::mark(&"x".repeat(MAX_MARK_LEN + 1)), true).is_err());
        let mut e = Entry::write(0, 0, b"abc", 0);
        e.len = 4;
        assert!(encode(&e, true).is_err());
    }

    #[test]
    fn header_roundtrip() {
        let h = LogHeader {
            version: VERSION,
            sector_size: 512,
            has_data: true,
            created_ns: 12345,
        };
        assert_eq!(LogHeader::decode(&h.encode()).unwrap(), h);
        let mut raw = h.encode();
        raw[20] = 1;
        assert!(LogHeader::decode(&raw).is_err());
    }
}
