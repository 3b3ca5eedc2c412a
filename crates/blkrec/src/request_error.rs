//! Why a guest request failed: one [`RequestError`] per reason, the status byte it earns the
//! guest, and per-kind counts (each kind logged once per device), so an EIO the guest saw has
//! a reason on the host.
//!
//! Statuses follow virtio 1.2 §5.2.6 "Device Operation": VIRTIO_BLK_S_IOERR for "device or
//! driver error", VIRTIO_BLK_S_UNSUPP for "a request unsupported by device".

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::virtio;

/// Why the device failed one virtio-blk request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The chain's last byte is not device-writable (or is outside guest memory): there is
    /// nowhere to put a status, so the chain completes with used length 0 and no status.
    #[error(
        "the descriptor chain does not end in a device-writable status byte inside guest \
         memory (a driver bug): completed with used length 0 and no status"
    )]
    NoStatusByte,
    /// A device-readable descriptor after a device-writable one (virtio 1.2 §2.7.4.2).
    #[error(
        "a device-readable descriptor follows a device-writable one (virtio 1.2 §2.7.4.2; \
         a driver bug)"
    )]
    MisorderedDescriptors,
    /// A buffer (or part of one) lies outside guest memory.
    #[error("guest buffer {addr:#x} (+{len} bytes) is outside guest memory (a driver bug)")]
    BufferOutsideMemory {
        /// Guest address of the buffer.
        addr: u64,
        /// Its length.
        len: u64,
    },
    /// Fewer than 16 device-readable bytes before the data: no `virtio_blk_outhdr` (§5.2.6).
    #[error(
        "the request has {len} device-readable bytes; virtio-blk needs a 16-byte header \
         (virtio 1.2 §5.2.6; a driver bug)"
    )]
    ShortHeader {
        /// Device-readable bytes in the chain.
        len: u64,
    },
    /// Data buffers that go the wrong way for the request type.
    #[error(
        "{req} request with device-{} data buffers: its data must go the other way (a driver bug)",
        direction(.readable)
    )]
    WrongDirection {
        /// The request type's name.
        req: &'static str,
        /// The offending buffers are device-readable (else device-writable).
        readable: bool,
    },
    /// GET_ID without a buffer for the id (§5.2.6: 20 bytes, a shorter buffer gets a prefix).
    #[error("GET_ID request without a device-writable buffer for the id (a driver bug)")]
    NoIdBuffer,
    /// More data than blkrec takes in one request.
    #[error(
        "{len}-byte request exceeds blkrec's limit of {max} bytes (Linux never sends more \
         than max_sectors_kb; a driver bug)"
    )]
    TooLarge {
        /// Bytes asked for.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A data length that is not whole 512-byte sectors (§5.2.6: sectors are 512 bytes).
    #[error("data length {len} is not a multiple of the 512-byte sector (a driver bug)")]
    UnalignedLength {
        /// Data bytes.
        len: u64,
    },
    /// Sectors past the end of the disk (or a sector number that overflows).
    #[error(
        "sectors {sector}..+{sectors} are past the end of the {capacity}-sector disk (the \
         guest's idea of the disk size is wrong, or the image shrank)"
    )]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Sectors asked for.
        sectors: u64,
        /// Disk size in sectors.
        capacity: u64,
    },
    /// A write, discard or write-zeroes on a read-only device (§5.2.6.2: a device offering
    /// VIRTIO_BLK_F_RO must fail writes with IOERR).
    #[error(
        "the guest wrote to a read-only disk (VIRTIO_BLK_F_RO): serve it without --read-only \
         to allow writes"
    )]
    ReadOnly,
    /// A discard / write-zeroes payload that is not whole `virtio_blk_discard_write_zeroes`
    /// segments.
    #[error(
        "discard/write-zeroes payload of {len} bytes is not a nonempty multiple of 16-byte \
         segments (a driver bug)"
    )]
    BadSegmentList {
        /// Payload bytes.
        len: u64,
    },
    /// More discard / write-zeroes segments than `max_discard_seg` allows. UNSUPP, as QEMU.
    #[error(
        "{segments} discard/write-zeroes segments; the device advertises at most {max} \
         (max_discard_seg)"
    )]
    TooManySegments {
        /// Segments sent.
        segments: u64,
        /// The advertised limit.
        max: u32,
    },
    /// Discard / write-zeroes flags the device does not take. §5.2.6.2: UNSUPP for unknown
    /// flags, and for the unmap flag on a discard.
    #[error("{req} segment with unsupported flags {flags:#x} (virtio 1.2 §5.2.6.2)")]
    UnsupportedFlags {
        /// DISCARD or WRITE_ZEROES.
        req: &'static str,
        /// The segment's flags.
        flags: u32,
    },
    /// A request type blkrec does not implement (§5.2.6: UNSUPP).
    #[error("request type {req_type} is not supported by blkrec")]
    UnsupportedType {
        /// The header's type (BARRIER bit masked off).
        req_type: u32,
    },
    /// Reading, writing, zeroing or syncing the image failed on the host.
    #[error(
        "{op} at sector {sector} of the image failed on the host: {} (check the file system \
         holding the image: full, read-only or failing?)",
        errno_text(.errno)
    )]
    ImageIo {
        /// What was being done.
        op: &'static str,
        /// First sector involved (0 for fdatasync).
        sector: u64,
        /// The OS error number, if there was one.
        errno: Option<i32>,
    },
    /// The write log reached its cap (`--max-log-bytes`, RLIMIT_FSIZE) or the disk is full:
    /// writes fail from then on, with the image left as the log describes it.
    #[error(
        "the write log is full, so the request was refused: raise --max-log-bytes or free \
         space where the log is"
    )]
    LogFull,
    /// The write log failed (I/O error, finished); the first such error is printed once.
    #[error("the write log failed, so the request was refused (see the write log error above)")]
    LogFailed,
}

fn direction(readable: &bool) -> &'static str {
    if *readable {
        "readable"
    } else {
        "writable"
    }
}

fn errno_text(errno: &Option<i32>) -> String {
    match errno {
        Some(n) => io::Error::from_raw_os_error(*n).to_string(),
        None => "an error without an errno".into(),
    }
}

impl RequestError {
    /// An image I/O error.
    pub fn image_io(op: &'static str, sector: u64, e: &io::Error) -> Self {
        RequestError::ImageIo {
            op,
            sector,
            errno: e.raw_os_error(),
        }
    }

    /// The status byte the guest gets (§5.2.6). [`RequestError::NoStatusByte`] has no status
    /// byte to write; it says IOERR.
    pub fn status(&self) -> u8 {
        self.kind().status()
    }

    /// What kind of error it is, for counting.
    pub fn kind(&self) -> RequestErrorKind {
        use RequestErrorKind as K;
        match self {
            RequestError::NoStatusByte => K::NoStatusByte,
            RequestError::MisorderedDescriptors => K::MisorderedDescriptors,
            RequestError::BufferOutsideMemory { .. } => K::BufferOutsideMemory,
            RequestError::ShortHeader { .. } => K::ShortHeader,
            RequestError::WrongDirection { .. } => K::WrongDirection,
            RequestError::NoIdBuffer => K::NoIdBuffer,
            RequestError::TooLarge { .. } => K::TooLarge,
            RequestError::UnalignedLength { .. } => K::UnalignedLength,
            RequestError::OutOfRange { .. } => K::OutOfRange,
            RequestError::ReadOnly => K::ReadOnly,
            RequestError::BadSegmentList { .. } => K::BadSegmentList,
            RequestError::TooManySegments { .. } => K::TooManySegments,
            RequestError::UnsupportedFlags { .. } => K::UnsupportedFlags,
            RequestError::UnsupportedType { .. } => K::UnsupportedType,
            RequestError::ImageIo { .. } => K::ImageIo,
            RequestError::LogFull => K::LogFull,
            RequestError::LogFailed => K::LogFailed,
        }
    }
}

/// The kinds of [`RequestError`], without their data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestErrorKind {
    NoStatusByte,
    MisorderedDescriptors,
    BufferOutsideMemory,
    ShortHeader,
    WrongDirection,
    NoIdBuffer,
    TooLarge,
    UnalignedLength,
    OutOfRange,
    ReadOnly,
    BadSegmentList,
    TooManySegments,
    UnsupportedFlags,
    UnsupportedType,
    ImageIo,
    LogFull,
    LogFailed,
}

impl RequestErrorKind {
    /// Every kind, in declaration order (`kind as usize` indexes this).
    pub const ALL: [RequestErrorKind; 17] = {
        use RequestErrorKind::*;
        [
            NoStatusByte,
            MisorderedDescriptors,
            BufferOutsideMemory,
            ShortHeader,
            WrongDirection,
            NoIdBuffer,
            TooLarge,
            UnalignedLength,
            OutOfRange,
            ReadOnly,
            BadSegmentList,
            TooManySegments,
            UnsupportedFlags,
            UnsupportedType,
            ImageIo,
            LogFull,
            LogFailed,
        ]
    };

    /// The status byte requests failing this way get (§5.2.6): UNSUPP for what the device
    /// does not support, IOERR for the rest.
    pub fn status(self) -> u8 {
        use RequestErrorKind::*;
        match self {
            TooManySegments | UnsupportedFlags | UnsupportedType => {
                virtio::VIRTIO_BLK_S_UNSUPP as u8
            }
            _ => virtio::VIRTIO_BLK_S_IOERR as u8,
        }
    }

    /// The kebab-case name (as serialized).
    pub fn as_str(self) -> &'static str {
        use RequestErrorKind::*;
        match self {
            NoStatusByte => "no-status-byte",
            MisorderedDescriptors => "misordered-descriptors",
            BufferOutsideMemory => "buffer-outside-memory",
            ShortHeader => "short-header",
            WrongDirection => "wrong-direction",
            NoIdBuffer => "no-id-buffer",
            TooLarge => "too-large",
            UnalignedLength => "unaligned-length",
            OutOfRange => "out-of-range",
            ReadOnly => "read-only",
            BadSegmentList => "bad-segment-list",
            TooManySegments => "too-many-segments",
            UnsupportedFlags => "unsupported-flags",
            UnsupportedType => "unsupported-type",
            ImageIo => "image-io",
            LogFull => "log-full",
            LogFailed => "log-failed",
        }
    }
}

impl std::fmt::Display for RequestErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Failed requests of one device so far: the nonzero kinds by name, and their sum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestErrorCounts {
    /// All failed requests.
    pub total: u64,
    /// Failed requests per [`RequestErrorKind::as_str`] name; only nonzero kinds.
    pub by_kind: BTreeMap<String, u64>,
}

impl RequestErrorCounts {
    /// Whether no request failed.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Failed requests of `kind`.
    pub fn get(&self, kind: RequestErrorKind) -> u64 {
        self.by_kind.get(kind.as_str()).copied().unwrap_or(0)
    }

    /// Adds `other`'s counts (e.g. of an earlier device of the same run).
    pub fn add(&mut self, other: &RequestErrorCounts) {
        self.total += other.total;
        for (k, n) in &other.by_kind {
            *self.by_kind.entry(k.clone()).or_default() += n;
        }
    }
}

/// `3 (unaligned-length 2, read-only 1)`: the total, then the kinds, most frequent first.
impl std::fmt::Display for RequestErrorCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kinds: Vec<(&String, &u64)> = self.by_kind.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        write!(f, "{}", self.total)?;
        for (i, (k, n)) in kinds.iter().enumerate() {
            let sep = if i == 0 { " (" } else { ", " };
            write!(f, "{sep}{k} {n}")?;
        }
        if !kinds.is_empty() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Per-kind counters of one device; counting allocates nothing.
pub(crate) struct RequestErrorCounters([AtomicU64; RequestErrorKind::ALL.len()]);

impl Default for RequestErrorCounters {
    fn default() -> Self {
        RequestErrorCounters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl RequestErrorCounters {
    /// Counts `e`; the first error of each kind is logged (`tracing::warn!`), later ones
    /// are only counted.
    pub(crate) fn record(&self, queue: u16, e: &RequestError) {
        let kind = e.kind();
        if self.0[kind as usize].fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                target: "blkrec",
                kind = kind.as_str(),
                queue,
                status = e.status(),
                "guest request failed: {e}; later {kind} failures are only counted"
            );
        }
    }

    pub(crate) fn snapshot(&self) -> RequestErrorCounts {
        let mut c = RequestErrorCounts::default();
        for k in RequestErrorKind::ALL {
            let n = self.0[k as usize].load(Ordering::Relaxed);
            if n > 0 {
                c.total += n;
                c.by_kind.insert(k.as_str().to_string(), n);
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_indexed_and_named_as_serialized() {
        for (i, k) in RequestErrorKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "{k:?}");
            let json = serde_json::to_value(k).unwrap();
            assert_eq!(json, k.as_str());
        }
    }

    #[test]
    fn unsupported_requests_get_unsupp_and_the_rest_ioerr() {
        let unsupp = virtio::VIRTIO_BLK_S_UNSUPP as u8;
        let ioerr = virtio::VIRTIO_BLK_S_IOERR as u8;
        assert_eq!(
            RequestError::UnsupportedType { req_type: 42 }.status(),
            unsupp
        );
        let flags = RequestError::UnsupportedFlags {
            req: "DISCARD",
            flags: 1,
        };
        assert_eq!(flags.status(), unsupp);
        assert_eq!(RequestError::ReadOnly.status(), ioerr);
        let e = RequestError::image_io("write", 8, &io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.status(), ioerr);
        assert!(e.to_string().contains("No space left on device"), "{e}");
    }

    #[test]
    fn counts_only_nonzero_kinds_and_add_up() {
        let c = RequestErrorCounters::default();
        c.record(0, &RequestError::ReadOnly);
        c.record(1, &RequestError::ReadOnly);
        c.record(0, &RequestError::UnalignedLength { len: 100 });
        let s = c.snapshot();
        assert_eq!(s.total, 3);
        assert_eq!(s.by_kind.len(), 2);
        assert_eq!(s.get(RequestErrorKind::ReadOnly), 2);
        assert_eq!(s.get(RequestErrorKind::UnalignedLength), 1);
        let mut sum = s.clone();
        sum.add(&s);
        assert_eq!((sum.total, sum.get(RequestErrorKind::ReadOnly)), (6, 4));
        assert_eq!(s.to_string(), "3 (read-only 2, unaligned-length 1)");
        let back: RequestErrorCounts =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
