//! Streaming reader that tolerates a torn tail but reports damage in the middle.

use crate::record::{self, Kind, LogHeader, Record, FIXED_LEN, FRAME_LEN, HEADER_LEN, MAX_PAYLOAD};
use crate::Error;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Smallest possible record: frame plus the fixed part of the payload.
const MIN_RECORD: u64 = (FRAME_LEN + FIXED_LEN) as u64;
/// Record flag "data present" (`RFLAG_DATA` in [`record`]).
const RFLAG_DATA: u8 = 1;
/// Window of the look-ahead scan.
const SCAN_CHUNK: usize = 1 << 20;

/// Reads a write log record by record, in seq order.
///
/// The writer appends in seq order, so file order is seq order; the reader checks that
/// seqs increase by one and fails with [`Error::SeqGap`] otherwise. At the first record that
/// is incomplete, fails its checksum or does not decode, the reader scans the rest of the file
/// once for a valid record with a later seq. If there is one, the log was damaged in the
/// middle and the reader fails with [`Error::CorruptRecord`]. If not, it is a torn tail: the
/// log ends there and everything from there on (including any zeros after it) is counted in
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

    /// The record at `self.offset` is bad: corruption if a valid record follows, else a torn
    /// tail.
    fn bad_record(&mut self) -> Option<Result<Record, Error>> {
        match self.find_valid_after() {
            Ok(None) => self.stop(),
            Ok(Some((next_valid_offset, next_valid_seq))) => {
                self.done = true;
                Some(Err(Error::CorruptRecord {
                    path: self.path.clone(),
                    offset: self.offset,
                    expected_seq: self.expect_seq,
                    next_valid_seq,
                    next_valid_offset,
                }))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    /// Offset and seq of the first valid record after the bad one at `self.offset`, with a
    /// seq above `self.expect_seq`. Records are not aligned, so this tries every byte offset;
    /// header checks reject almost every offset before any checksum is computed, and a run
    /// of zeros is skipped at memory speed, so it is one linear pass over the rest of the file.
    fn find_valid_after(&self) -> Result<Option<(u64, u64)>, Error> {
        let file = self.r.get_ref();
        let io = |e| Error::io(&self.path, "read the write log", e);
        let (bad, expect, end) = (self.offset, self.expect_seq, self.file_len);
        let mut buf = vec![0u8; SCAN_CHUNK + MIN_RECORD as usize - 1];
        // If the bad record's own header is intact (the usual torn tail: the payload was cut
        // short, or a bit flipped in it), its length is right: skip its payload, which may
        // hold anything (a guest can write a copy of a log).
        let mut base = bad + 1;
        if bad + MIN_RECORD <= end {
            let head = &mut buf[..MIN_RECORD as usize];
            file.read_exact_at(head, bad).map_err(io)?;
            if let Some((seq, len)) = plausible_header(head) {
                if seq == expect {
                    base = bad + FRAME_LEN as u64 + len;
                }
            }
        }
        while base + MIN_RECORD <= end {
            let n = (end - base).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], base).map_err(io)?;
            // Candidate record starts base + i for i < cands have all MIN_RECORD bytes in buf.
            let cands = n - MIN_RECORD as usize + 1;
            let mut i = 0;
            while i < cands {
                let head = &buf[i..i + MIN_RECORD as usize];
                if head[..4] == [0; 4] {
                    // Zero length: skip to 3 bytes before the next non-zero byte.
                    i = buf[i..n]
                        .iter()
                        .position(|&b| b != 0)
                        .map_or(cands, |z| i + z - 3);
                    continue;
                }
                let at = base + i as u64;
                if let Some((seq, len)) = plausible_header(head) {
                    // Records expect..seq fit between the bad record and this one.
                    if seq > expect
                        && seq - expect <= (at - bad) / MIN_RECORD
                        && at + FRAME_LEN as u64 + len <= end
                        && self.valid_record_at(at, len, record::u32_at(head, 4))?
                    {
                        return Ok(Some((at, seq)));
                    }
                }
                i += 1;
            }
            base += cands as u64;
        }
        Ok(None)
    }

    /// Whether the `len`-byte payload at `at + FRAME_LEN` has checksum `crc` and decodes.
    fn valid_record_at(&self, at: u64, len: u64, crc: u32) -> Result<bool, Error> {
        let file = self.r.get_ref();
        let io = |e| Error::io(&self.path, "read the write log", e);
        let start = at + FRAME_LEN as u64;
        // Checksum in pieces first: a candidate that fails costs no large allocation.
        let mut piece = vec![0u8; (len as usize).min(SCAN_CHUNK)];
        let mut got = 0u32;
        let mut done = 0u64;
        while done < len {
            let k = (len - done).min(piece.len() as u64) as usize;
            file.read_exact_at(&mut piece[..k], start + done)
                .map_err(io)?;
            got = crc32c::crc32c_append(got, &piece[..k]);
            done += k as u64;
        }
        if got != crc {
            return Ok(false);
        }
        let mut payload = vec![0u8; len as usize];
        file.read_exact_at(&mut payload, start).map_err(io)?;
        Ok(record::decode(&payload).is_some())
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
            return self.bad_record();
        }
        let mut payload = vec![0u8; len as usize];
        if let Err(e) = self.r.read_exact(&mut payload) {
            self.done = true;
            return Some(Err(Error::io(&self.path, "read the write log", e)));
        }
        if crc32c::crc32c(&payload) != crc {
            return self.bad_record();
        }
        let Some(rec) = record::decode(&payload) else {
            return self.bad_record();
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

/// `(seq, payload_len)` of a record starting with `head` (its first [`MIN_RECORD`] bytes) if
/// the frame and the fixed fields agree, i.e. the checks of `record::decode` that need no
/// more of the payload. Random bytes pass with a probability far below 2^-40.
fn plausible_header(head: &[u8]) -> Option<(u64, u64)> {
    let len = record::u32_at(head, 0);
    if len > MAX_PAYLOAD {
        return None;
    }
    let p = &head[FRAME_LEN..];
    let kind = Kind::from_u8(p[16])?;
    let has_data = p[17] & RFLAG_DATA != 0;
    let field = |at| u64::from(record::u32_at(p, at));
    let (rlen, n_hashes, mark_len, data_len) = (field(32), field(36), field(40), field(44));
    let consistent = FIXED_LEN as u64 + n_hashes * 8 + mark_len + data_len == u64::from(len)
        && (kind == Kind::Mark || mark_len == 0)
        && if has_data {
            data_len == rlen
        } else {
            data_len == 0
        };
    consistent.then(|| (record::u64_at(p, 0), u64::from(len)))
}
