//! Summaries and listings of a log.

use crate::reader::LogReader;
use crate::record::{flags, Kind, Record};
use crate::Error;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;

/// Counters over a whole log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records read.
    pub records: u64,
    /// Records by kind.
    pub by_kind: BTreeMap<Kind, u64>,
    /// Bytes by kind (writes, discards, write-zeroes).
    pub bytes_by_kind: BTreeMap<Kind, u64>,
    /// Records by queue (marks count under queue 0).
    pub by_queue: BTreeMap<u16, u64>,
    /// Writes with FUA.
    pub fua_writes: u64,
    /// Distinct sectors touched by writes, discards and write-zeroes.
    pub sectors_touched: u64,
    /// Flush records.
    pub flushes: u64,
    /// Flush records whose fdatasync failed (counted in `flushes` too).
    pub failed_flushes: u64,
    /// Mark records.
    pub marks: u64,
    /// Last seq, if any record.
    pub last_seq: Option<u64>,
    /// Time of the last record, ns since the log was created.
    pub last_time_ns: u64,
    /// Whether the log records data.
    pub has_data: bool,
    /// Sector size of the log.
    pub sector_size: u32,
    /// Bytes of torn tail ignored at the end.
    pub discarded_bytes: u64,
}

/// Union of half-open sector ranges.
#[derive(Default)]
struct RangeSet(BTreeMap<u64, u64>);

impl RangeSet {
    fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Merge with a range starting at or before `start` that reaches it.
        if let Some((&s, &e)) = self.0.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.0.remove(&s);
            }
        }
        // Swallow ranges that start inside [start, end].
        while let Some((&s, &e)) = self.0.range(start..=end).next() {
            end = end.max(e);
            self.0.remove(&s);
        }
        self.0.insert(start, end);
    }
    fn total(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s).sum()
    }
}

/// Reads the rest of `reader` and summarises it.
pub fn stats(reader: &mut LogReader) -> Result<Stats, Error> {
    let sector_size = reader.header().sector_size;
    let mut st = Stats {
        has_data: reader.header().has_data,
        sector_size,
        ..Stats::default()
    };
    let mut touched = RangeSet::default();
    for rec in reader.by_ref() {
        let rec = rec?;
        st.records += 1;
        *st.by_kind.entry(rec.kind).or_default() += 1;
        *st.by_queue.entry(rec.queue).or_default() += 1;
        st.last_seq = Some(rec.seq);
        st.last_time_ns = rec.time_ns;
        match rec.kind {
            Kind::Write | Kind::Discard | Kind::WriteZeroes => {
                *st.bytes_by_kind.entry(rec.kind).or_default() += u64::from(rec.len);
                touched.insert(rec.sector, rec.end_sector(sector_size));
                if rec.kind == Kind::Write && rec.flags & flags::FUA != 0 {
                    st.fua_writes += 1;
                }
            }
            Kind::Flush => {
                st.flushes += 1;
                if rec.flags & flags::FAILED != 0 {
                    st.failed_flushes += 1;
                }
            }
            Kind::Mark => st.marks += 1,
        }
    }
    st.sectors_touched = touched.total();
    st.discarded_bytes = reader.discarded_bytes();
    Ok(st)
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |k: Kind| self.by_kind.get(&k).copied().unwrap_or(0);
        let b = |k: Kind| self.bytes_by_kind.get(&k).copied().unwrap_or(0);
        writeln!(
            f,
            "records:         {} (seq 0..={})",
            self.records,
            self.last_seq.map_or("-".to_string(), |s| s.to_string())
        )?;
        writeln!(
            f,
            "writes:          {} ({} bytes, {} FUA)",
            n(Kind::Write),
            b(Kind::Write),
            self.fua_writes
        )?;
        writeln!(
            f,
            "discards:        {} ({} bytes)",
            n(Kind::Discard),
            b(Kind::Discard)
        )?;
        writeln!(
            f,
            "write-zeroes:    {} ({} bytes)",
            n(Kind::WriteZeroes),
            b(Kind::WriteZeroes)
        )?;
        writeln!(f, "flushes:         {}", self.flushes)?;
        if self.failed_flushes > 0 {
            writeln!(f, "failed flushes:  {}", self.failed_flushes)?;
        }
        writeln!(f, "marks:           {}", self.marks)?;
        writeln!(
            f,
            "sectors touched: {} ({} bytes, {}-byte sectors)",
            self.sectors_touched,
            self.sectors_touched * u64::from(self.sector_size),
            self.sector_size
        )?;
        let queues: Vec<String> = self
            .by_queue
            .iter()
            .map(|(q, c)| format!("q{q}={c}"))
            .collect();
        writeln!(f, "per queue:       {}", queues.join(" "))?;
        writeln!(
            f,
            "duration:        {:.6} s",
            self.last_time_ns as f64 / 1e9
        )?;
        writeln!(
            f,
            "data recorded:   {}",
            if self.has_data { "yes" } else { "no" }
        )?;
        write!(
            f,
            "torn tail:       {} bytes discarded",
            self.discarded_bytes
        )
    }
}

fn flag_names(fl: u32) -> String {
    let mut v = Vec::new();
    if fl & flags::FUA != 0 {
        v.push("FUA");
    }
    if fl & flags::BARRIER != 0 {
        v.push("BARRIER");
    }
    if fl & flags::UNMAP != 0 {
        v.push("UNMAP");
    }
    if fl & flags::FAILED != 0 {
        v.push("FAILED");
    }
    v.join(",")
}

/// One human-readable line for `rec` (no trailing newline).
///
/// `seq time q KIND sector+count len flags hash`, e.g.
/// `      12     0.004211s q0 WRITE        2048+8 4096B FUA h=3f2a9c0d11e2b4a7(1)`.
pub fn format_record(rec: &Record) -> String {
    let mut s = format!(
        "{:>8} {:>12.6}s q{} {:<12}",
        rec.seq,
        rec.time_ns as f64 / 1e9,
        rec.queue,
        rec.kind.name()
    );
    match rec.kind {
        Kind::Mark => {
            s.push_str(&format!(" {:?}", rec.mark.as_deref().unwrap_or("")));
        }
        Kind::Flush => {
            if let Some(c) = rec.flush_covers() {
                s.push_str(&format!(" covers<{c}"));
            }
        }
        Kind::Write | Kind::Discard | Kind::WriteZeroes => {
            s.push_str(&format!(
                " {}+{} {}B",
                rec.sector,
                u64::from(rec.len).div_ceil(512),
                rec.len
            ));
        }
    }
    let fl = flag_names(rec.flags);
    if !fl.is_empty() {
        s.push(' ');
        s.push_str(&fl);
    }
    if let Some(h) = rec.block_hashes.first() {
        s.push_str(&format!(" h={h:016x}({})", rec.block_hashes.len()));
    }
    s
}

/// Writes one line per remaining record of `reader`, then a comment line if a torn tail was
/// ignored.
pub fn show(reader: &mut LogReader, out: &mut impl Write) -> Result<(), Error> {
    let io = |e| Error::Output(e);
    for rec in reader.by_ref() {
        writeln!(out, "{}", format_record(&rec?)).map_err(io)?;
    }
    if reader.discarded_bytes() > 0 {
        writeln!(
            out,
            "# torn tail: {} trailing bytes after the last whole record were ignored",
            reader.discarded_bytes()
        )
        .map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_set_merges() {
        let mut r = RangeSet::default();
        r.insert(10, 20);
        r.insert(30, 40);
        r.insert(15, 35);
        assert_eq!(r.total(), 30);
        r.insert(0, 5);
        r.insert(5, 10);
        assert_eq!(r.total(), 40);
        r.insert(100, 101);
        r.insert(0, 200);
        assert_eq!(r.total(), 200);
        assert_eq!(r.0.len(), 1);
    }

    #[test]
    fn format_lines() {
        let rec = Record {
            seq: 12,
            time_ns: 4_211_000,
            queue: 0,
            kind: Kind::Write,
            sector: 2048,
            len: 4096,
            flags: flags::FUA,
            block_hashes: vec![0x3f2a9c0d11e2b4a7],
            data: None,
            mark: None,
        };
        let line = format_record(&rec);
        assert!(line.contains("WRITE"), "{line}");
        assert!(
            line.contains("2048+8 4096B FUA h=3f2a9c0d11e2b4a7(1)"),
            "{line}"
        );
    }
}
