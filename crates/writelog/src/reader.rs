//! Streaming reader that tolerates a torn tail.

use crate::record::{self, LogHeader, Record, FRAME_LEN, HEADER_LEN, MAX_PAYLOAD};
use crate::Error;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Reads a write log record by record, in seq order.
///
/// The writer appends in seq order, so file order is seq order; the reader checks that
/// seqs increase by one and fails with [`Error::SeqGap`] otherwise. The first record that is
/// incomplete or fails its checksum ends the log: everything from there on is counted in
/// [`LogReader::discarded_bytes`] (a log cut short by SIGKILL or a host crash reads back as
/// its longest whole prefix, without an error).
pub struct LogReader {
    r: BufReader<File>,
    path: PathBuf,
    header: LogHeader,
    offset: u64,
    file_len: u64,
    expect_seq: u64,
    done: bool,
    discarded: u64,
}

impl LogReader {
    /// Opens a log and checks its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, "open the write log", e))?;
        let file_len = file
            .metadata()
            .map_err(|e| Error::io(&path, "stat the write log", e))?
            .len();
        let mut r = BufReader::with_capacity(256 * 1024, file);
        let mut h = [0u8; HEADER_LEN];
        if file_len < HEADER_LEN as u64 {
            return Err(Error::NotALogAt(path, "shorter than the log header"));
        }
        r.read_exact(&mut h)
            .map_err(|e| Error::io(&path, "read the log header", e))?;
        let header = LogHeader::decode(&h).map_err(|e| match e {
            Error::NotALog => Error::NotALogAt(path.clone(), "bad magic"),
            other => other,
        })?;
        Ok(LogReader {
            r,
            path,
            header,
            offset: HEADER_LEN as u64,
            file_len,
            expect_seq: 0,
            done: false,
            discarded: 0,
        })
    }

    /// The log's header.
    pub fn header(&self) -> &LogHeader {
        &self.header
    }

    /// Path of the log.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes after the last whole record that were ignored (a torn tail). Final once the
    /// reader returned `None`.
    pub fn discarded_bytes(&self) -> u64 {
        self.discarded
    }

    /// Number of records returned so far.
    pub fn records_read(&self) -> u64 {
        self.expect_seq
    }

    fn stop(&mut self) -> Option<Result<Record, Error>> {
        self.done = true;
        self.discarded = self.file_len.saturating_sub(self.offset);
        None
    }

    /// Next record, `None` at the end (or at the start of a torn tail).
    pub fn next_record(&mut self) -> Result<Option<Record>, Error> {
        self.next().transpose()
    }

    /// Reads all remaining records.
    pub fn read_all(&mut self) -> Result<Vec<Record>, Error> {
        self.collect()
    }
}

impl Iterator for LogReader {
    type Item = Result<Record, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let left = self.file_len.saturating_sub(self.offset);
        if left < FRAME_LEN as u64 {
            return self.stop();
        }
        let mut fr = [0u8; FRAME_LEN];
        if let Err(e) = self.r.read_exact(&mut fr) {
            self.done = true;
            return Some(Err(Error::io(&self.path, "read the write log", e)));
        }
        let len = record::u32_at(&fr, 0);
        let crc = record::u32_at(&fr, 4);
        if len > MAX_PAYLOAD || u64::from(len) > left - FRAME_LEN as u64 {
            return self.stop();
        }
        let mut payload = vec![0u8; len as usize];
        if let Err(e) = self.r.read_exact(&mut payload) {
            self.done = true;
            return Some(Err(Error::io(&self.path, "read the write log", e)));
        }
        if crc32c::crc32c(&payload) != crc {
            return self.stop();
        }
        let Some(rec) = record::decode(&payload) else {
            return self.stop();
        };
        if rec.seq != self.expect_seq {
            self.done = true;
            return Some(Err(Error::SeqGap {
                path: self.path.clone(),
                expected: self.expect_seq,
                found: rec.seq,
            }));
        }
        self.expect_seq += 1;
        self.offset += (FRAME_LEN + payload.len()) as u64;
        Some(Ok(rec))
    }
}
