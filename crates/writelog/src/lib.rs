//! Append-only log of block-device writes, as recorded by `blkrec`.
//!
//! * [`LogWriter`]: thread-safe appender (seq numbers are global and gap-free, file order is
//!   seq order), with [`LogWriter::sync`] for durability.
//! * [`LogReader`]: streaming reader; a log cut short by a crash reads back as its longest
//!   whole prefix ([`LogReader::discarded_bytes`] says how much was cut).
//! * [`stats()`], [`show()`], [`format_record`]: for `e4race log stats|show`.
//! * [`export_dm_log_writes`]: dm-log-writes v1 (fstests `replay-log`) export.
//! * [`replay`], [`replay_dm_log_writes`]: rebuild an image up to a [`LogPosition`] (a seq,
//!   mark, flush or entry count; `LogPosition: FromStr` is the one parser of `--to`/`--at`).
//!
//! The file format is documented in [`record`].

mod crc;
pub mod dmlog;
pub mod position;
pub mod reader;
pub mod record;
pub mod stats;
pub mod writer;

pub use dmlog::{
    export_dm_log_writes, replay, replay_dm_log_writes, replay_dropping, ExportSummary,
    ReplaySummary,
};
pub use position::{LogPosition, PositionError, POSITION_FORMS};
pub use reader::LogReader;
pub use record::{block_hashes, flags, Entry, Kind, LogHeader, Record};
pub use stats::{format_record, show, stats, Stats};
pub use writer::{LogOptions, LogWriter, Pending};

use std::path::{Path, PathBuf};

/// Errors of this crate. Messages say what went wrong and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// I/O on a named file failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What we were doing.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing a listing failed.
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
    /// Wrong magic (internal; surfaced as [`Error::NotALogAt`]).
    #[error("not an e4race write log (bad magic)")]
    NotALog,
    /// The file is not a write log.
    #[error("{p} is not an e4race write log ({1}): pass the file blkrec wrote with --log", p = .0.display())]
    NotALogAt(PathBuf, &'static str),
    /// The header is damaged.
    #[error("damaged write log header: {0}")]
    BadHeader(&'static str),
    /// Written by a newer/older format.
    #[error("write log format version {0} is not supported (this build reads version {v}): use the matching e4race build", v = record::VERSION)]
    Version(u32),
    /// The caller passed an inconsistent entry.
    #[error("invalid log entry: {0}")]
    BadEntry(&'static str),
    /// A mark name that can't be stored.
    #[error("invalid mark name {name:?}: it must be 1..={max} bytes with no control characters (no newlines)")]
    BadMark {
        /// (Prefix of) the name.
        name: String,
        /// Longest allowed name.
        max: usize,
    },
    /// An earlier append failed; the log is closed for appends.
    #[error(
        "write log unusable: {0} (check free space / permissions; the recording is incomplete)"
    )]
    Failed(String),
    /// Records out of order.
    #[error("{}: expected seq {expected}, found {found}: the log is corrupt", path.display())]
    SeqGap {
        /// The log.
        path: PathBuf,
        /// Expected seq.
        expected: u64,
        /// Seq found.
        found: u64,
    },
    /// A damaged record with valid records after it: not a torn tail.
    #[error(
        "{}: the record at byte offset {offset} (seq {expected_seq}) is damaged, but a valid \
         record (seq {next_valid_seq}) follows at byte offset {next_valid_offset}: the log was \
         damaged after it was written, not cut short by a crash. Records from byte offset \
         {offset} on were not read; `e4race log show` lists the {expected_seq} records before \
         it. Use a backup copy of the log or record again",
        path.display()
    )]
    CorruptRecord {
        /// The log.
        path: PathBuf,
        /// Byte offset of the damaged record.
        offset: u64,
        /// Seq the damaged record should have had (= records read before it).
        expected_seq: u64,
        /// Seq of the first valid record found after it.
        next_valid_seq: u64,
        /// Byte offset of that record.
        next_valid_offset: u64,
    },
    /// The log reached its size limit; the device refuses writes from here on.
    #[error("the write log {} is full: it reached {what} ({limit} bytes); the device now fails every write. Raise the limit (blkrec/e4race --max-log-bytes, ulimit -f) or record less (no --log-data)", path.display())]
    Full {
        /// The log.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
        /// Which limit: `--max-log-bytes` or RLIMIT_FSIZE.
        what: &'static str,
    },
    /// A record decoded but is inconsistent.
    #[error("corrupt write log: {0}")]
    Corrupt(&'static str),
    /// Export/replay needs data.
    #[error("{} was recorded without data: export and replay need a log recorded with `blkrec --log-data`", .0.display())]
    NoData(PathBuf),
    /// Not supported.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// Malformed dm-log-writes file.
    #[error("malformed dm-log-writes file: {0}")]
    DmFormat(&'static str),
    /// A replay's stop point is not in the log.
    #[error(
        "log position {0} is not in the log: check the mark name or count with `e4race log show`"
    )]
    StopNotReached(LogPosition),
}

impl Error {
    pub(crate) fn io(path: &Path, what: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            what,
            source,
        }
    }
}
