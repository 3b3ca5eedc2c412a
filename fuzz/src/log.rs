//! Model and property checks for `writelog`'s reader, stats, dm-log-writes export and replay.
//!
//! Shared by the `log_reader` fuzz target and `crates/writelog/tests/prop_reader.rs` (which
//! includes this file with `#[path]`); it only uses writelog and tempfile.
//!
//! * [`run_raw`]: arbitrary bytes as a write log (and as a dm-log-writes file) through
//!   `LogReader`, `stats`, `show`, the export and both replays: no panic, no hang, errors are
//!   `Err` values, and what the reader returns is self-consistent (gap-free seqs, stats agree).
//! * [`run_valid`]: a log written by `LogWriter` from arbitrary entries, then
//!   * read back whole: exactly the entries;
//!   * truncated at an arbitrary byte: exactly the records that were whole, no error, and
//!     `discarded_bytes` is the torn tail; `stats` agrees;
//!   * replayed (to the end and to seq / entry-count / mark / flush stop points) and exported
//!     to dm-log-writes then replayed from that: both give the image a model computes;
//!   * damaged (bytes overwritten): no panic, and every record before the damage reads back
//!     unchanged.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use writelog::{
    export_dm_log_writes, flags, replay, replay_dm_log_writes, stats, Entry, Error, Kind,
    LogOptions, LogPosition, LogReader, LogWriter, Record,
};

/// Replay target size.
pub const IMG_LEN: usize = 128 << 10;
const HEADER_LEN: u64 = 40;

fuzz_input! {
#[derive(Debug, Clone)]
pub enum EntrySpec {
    /// A write of `sectors % 9` sectors (or `odd` bytes) of pattern `fill`.
    Write {
        queue: u16,
        sector: u16,
        sectors: u8,
        odd: Option<u16>,
        fill: u8,
        flags: u32,
    },
    Discard { queue: u16, sector: u16, sectors: u8, flags: u32 },
    WriteZeroes { queue: u16, sector: u16, sectors: u8, flags: u32 },
    /// `covers`: the seq below which the flush claims durability (kept in `sector`).
    Flush { queue: u16, flags: u32, covers: u64 },
    /// A mark named `name` (invalid names are refused by the writer).
    Mark { name: String },
    /// A mark from a small set of names (so stop-at-mark finds repeats).
    Named(u8),
}
}

fuzz_input! {
/// How the valid log is cut or damaged afterwards.
#[derive(Debug, Clone)]
pub struct Damage {
    /// Overwrite at `at % len`...
    pub at: u32,
    /// ...these bytes.
    pub bytes: Vec<u8>,
}
}

fuzz_input! {
#[derive(Debug, Clone)]
pub struct ValidInput {
    pub log_data: bool,
    pub big_sectors: bool,
    pub entries: Vec<EntrySpec>,
    /// Truncate at `cut % (len + 1)`.
    pub cut: u32,
    pub damage: Option<Damage>,
    pub stop_seq: u16,
    pub stop_entries: u16,
    pub stop_flush: u8,
    pub stop_mark: u8,
}
}

/// Work files, one set per thread (in /dev/shm when it exists); removed when the thread ends.
#[derive(Clone)]
struct Files {
    log: PathBuf,
    cut: PathBuf,
    dm: PathBuf,
    img: PathBuf,
    img2: PathBuf,
}

fn files() -> Files {
    thread_local! {
        static F: (tempfile::TempDir, Files) = {
            let b = tempfile::Builder::new().prefix("e4race-fuzz-log").clone();
            let dir = if std::path::Path::new("/dev/shm").is_dir() {
                b.tempdir_in("/dev/shm").unwrap()
            } else {
                b.tempdir().unwrap()
            };
            let p = |n: &str| dir.path().join(n);
            let f = Files {
                log: p("w.log"),
                cut: p("cut.log"),
                dm: p("dm.log"),
                img: p("a.img"),
                img2: p("b.img"),
            };
            (dir, f)
        };
    }
    F.with(|f| f.1.clone())
}

const NAMES: [&str; 4] = ["start", "mid", "end", "start"];

fn initial_image() -> Vec<u8> {
    (0..IMG_LEN)
        .map(|i| (i as u8) ^ ((i >> 9) as u8) | 0x80)
        .collect()
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

/// Environment variable that lets inputs through that hit the known bugs listed in
/// fuzz/README.md (by default they are steered around, so fuzzing goes on past them).
pub const ALLOW_KNOWN: &str = "E4RACE_FUZZ_ALLOW_KNOWN";

/// The bugs are fixed (fuzz/README.md): inputs reach them unless `E4RACE_FUZZ_ALLOW_KNOWN=0`.
fn allow_known() -> bool {
    std::env::var_os(ALLOW_KNOWN).is_none_or(|v| v != "0")
}

/// Arbitrary bytes as a write log, and as a dm-log-writes file.
pub fn run_raw(bytes: &[u8]) {
    let f = files();
    fs::write(&f.log, bytes).unwrap();
    match LogReader::open(&f.log) {
        Err(e) => {
            let _ = e.to_string();
        }
        Ok(mut r) => {
            let hdr = *r.header();
            let mut recs = vec![];
            let mut err = false;
            for x in r.by_ref() {
                match x {
                    Ok(rec) => recs.push(rec),
                    Err(e) => {
                        let _ = e.to_string();
                        err = true;
                    }
                }
            }
            assert!(r.next().is_none(), "reader yields after its end");
            for (i, rec) in recs.iter().enumerate() {
                assert_eq!(rec.seq, i as u64, "seqs are gap-free");
                let _ = writelog::format_record(rec);
            }
            // Known bug: `Record::end_sector` overflows (debug builds panic) for a record whose
            // sector is within len/sector_size of 2^64, and `stats` calls it on every record.
            let end_overflows = recs.iter().any(|r| {
                matches!(r.kind, Kind::Write | Kind::Discard | Kind::WriteZeroes)
                    && r.sector
                        .checked_add(u64::from(r.len).div_ceil(u64::from(hdr.sector_size)))
                        .is_none()
            });
            let mut r2 = LogReader::open(&f.log).unwrap();
            match if end_overflows && !allow_known() {
                Err(Error::Corrupt("skipped: known end_sector overflow"))
            } else {
                stats(&mut r2)
            } {
                Ok(st) => {
                    assert!(!err);
                    assert_eq!(st.records, recs.len() as u64);
                    assert_eq!(st.has_data, hdr.has_data);
                    let _ = st.to_string();
                }
                Err(_) => assert!(err || end_overflows, "stats failed where reading did not"),
            }
            let mut r3 = LogReader::open(&f.log).unwrap();
            let _ = writelog::show(&mut r3, &mut std::io::sink());
            if !err {
                let used: u64 = recs.iter().map(|r| 8 + payload_len(r)).sum();
                assert_eq!(
                    r.discarded_bytes(),
                    bytes.len() as u64 - HEADER_LEN - used,
                    "discarded bytes"
                );
            }
            fs::write(&f.img, initial_image()).unwrap();
            let _ = replay(&f.log, &f.img, &LogPosition::End);
            // The export writes WRITE_ZEROES as data: a 100-byte record can ask for 4 GiB of
            // zeros (by design), so only small ones are exported here.
            let zeros: u64 = recs
                .iter()
                .filter(|r| r.kind == Kind::WriteZeroes)
                .map(|r| u64::from(r.len))
                .sum();
            if zeros <= 8 << 20 && export_dm_log_writes(&f.log, &f.dm).is_ok() {
                fs::write(&f.img2, initial_image()).unwrap();
                let _ = replay_dm_log_writes(&f.dm, &f.img2, &LogPosition::End);
            }
        }
    }
    // The same bytes as a dm-log-writes file.
    if allow_known() || !dm_claims_too_much(bytes) {
        fs::write(&f.img2, initial_image()).unwrap();
        for stop in [
            LogPosition::End,
            LogPosition::Entries(2),
            LogPosition::Flush(1),
        ] {
            if let Err(e) = replay_dm_log_writes(&f.log, &f.img2, &stop) {
                let _ = e.to_string();
            }
        }
        assert!(replay_dm_log_writes(&f.log, &f.img2, &LogPosition::Seq(0)).is_err());
    }
}

/// Encoded payload length of a record as read back.
fn payload_len(r: &Record) -> u64 {
    48 + 8 * r.block_hashes.len() as u64
        + r.mark.as_ref().map_or(0, |m| m.len() as u64)
        + r.data.as_ref().map_or(0, |d| d.len() as u64)
}

/// Whether some entry of a dm-log-writes file claims more data than the file has left (what
/// `replay_dm_log_writes` would allocate before reading).
pub fn dm_claims_too_much(b: &[u8]) -> bool {
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
    };
    let (Some(nr), Some(ss)) = (u64_at(16), b.get(24..28)) else {
        return false;
    };
    let ss = u64::from(u32::from_le_bytes(ss.try_into().unwrap()));
    if ss < 512 || !ss.is_power_of_two() || ss > b.len() as u64 {
        return false;
    }
    let mut off = ss;
    for _ in 0..nr {
        let Some(e) = b.get(off as usize..(off + ss) as usize) else {
            return false;
        };
        let n = u64::from_le_bytes(e[8..16].try_into().unwrap());
        let fl = u64::from_le_bytes(e[16..24].try_into().unwrap());
        off += ss;
        if fl & 4 != 0 {
            continue;
        }
        let Some(size) = n.checked_mul(ss) else {
            return false;
        };
        if size > b.len() as u64 - off {
            return true;
        }
        off += size;
    }
    false
}

fuzz_input! {
/// A log of entries with unconstrained fields (huge sectors and lengths), for `run_raw`.
#[derive(Debug, Clone)]
pub struct WildInput {
    pub log_data: bool,
    pub sector_shift: u8,
    pub entries: Vec<(u8, u16, u64, u32, u32, Vec<u8>)>,
    pub damage: Option<Damage>,
}
}

/// Writes `input` with `LogWriter` (whatever it accepts), damages it, and runs [`run_raw`] on
/// the bytes: stats, show, export and replay of records no device would log.
pub fn run_wild(input: &WildInput) {
    let f = files();
    let w = LogWriter::create(
        &f.log,
        LogOptions {
            log_data: input.log_data,
            sector_size: 512 << (input.sector_shift % 4),
            max_bytes: Some(512 << 10),
        },
    )
    .unwrap();
    for (kind, queue, sector, len, fl, data) in input.entries.iter().take(32) {
        let data = &data[..data.len().min(4096)];
        let e = match kind % 5 {
            0 => Entry::write(*queue, *sector, data, *fl),
            1 => Entry::discard(*queue, *sector, *len, *fl),
            2 => Entry::write_zeroes(*queue, *sector, *len, *fl),
            3 => Entry::flush(*queue, *fl, *sector),
            _ => Entry::mark(std::str::from_utf8(data).unwrap_or("m")),
        };
        let _ = w.append(&e);
    }
    w.finish().unwrap();
    drop(w);
    let mut b = fs::read(&f.log).unwrap();
    if let Some(d) = &input.damage {
        let at = d.at as usize % (b.len() + 1);
        for (i, x) in d.bytes.iter().take(64).enumerate() {
            if let Some(y) = b.get_mut(at + i) {
                *y = *x;
            }
        }
    }
    run_raw(&b);
}

/// One appended record: kind, queue, sector, len, flags, data, mark.
type ModelRecord = (Kind, u16, u64, u32, u32, Option<Vec<u8>>, Option<String>);

struct Model {
    sector_size: u64,
    /// What was appended, as the reader must return it (seq = index).
    recs: Vec<ModelRecord>,
}

fn entry_sector(v: u16, sector_size: u64) -> u64 {
    u64::from(v) % (IMG_LEN as u64 / sector_size)
}

fn len_sectors(sector: u64, n: u8, sector_size: u64) -> u32 {
    // Keep every range inside the replay target.
    let max = IMG_LEN as u64 / sector_size - sector;
    (u64::from(n % 9).min(max) * sector_size) as u32
}

/// Applies the first `n` model records to `img` as a replay must.
fn apply(m: &Model, n: usize, img: &mut [u8]) {
    for (kind, _, sector, len, _, data, _) in &m.recs[..n] {
        let off = (sector * m.sector_size) as usize;
        match kind {
            Kind::Write => {
                let d = data.as_ref().unwrap();
                img[off..off + d.len()].copy_from_slice(d);
            }
            Kind::Discard | Kind::WriteZeroes => img[off..off + *len as usize].fill(0),
            _ => {}
        }
    }
}

/// Writes the log `input.entries` describe to this thread's work file; returns the model
/// and the file's bytes.
fn build(input: &ValidInput) -> (Model, Vec<u8>) {
    let f = files();
    let ss: u64 = if input.big_sectors { 4096 } else { 512 };
    let w = LogWriter::create(
        &f.log,
        LogOptions {
            log_data: input.log_data,
            sector_size: ss as u32,
            // Caps the writer's preallocation (min(16 MiB, max_bytes)), which on tmpfs is real
            // memory and dominated the time of an input. 64 entries stay far below it.
            max_bytes: Some(512 << 10),
        },
    )
    .unwrap();
    let mut m = Model {
        sector_size: ss,
        recs: vec![],
    };
    for e in input.entries.iter().take(64) {
        let (entry_data, rec);
        let res = match e {
            EntrySpec::Write {
                queue,
                sector,
                sectors,
                odd,
                fill,
                flags,
            } => {
                let s = entry_sector(*sector, ss);
                let len = match odd {
                    Some(o) => (u64::from(*o) % 4097).min((IMG_LEN as u64) - s * ss) as usize,
                    None => len_sectors(s, *sectors, ss) as usize,
                };
                entry_data = pattern(*fill, len);
                rec = (Kind::Write, *queue, s, len as u32, *flags, None, None);
                w.append(&Entry::write(*queue, s, &entry_data, *flags))
            }
            EntrySpec::Discard {
                queue,
                sector,
                sectors,
                flags,
            } => {
                let s = entry_sector(*sector, ss);
                let len = len_sectors(s, *sectors, ss);
                rec = (Kind::Discard, *queue, s, len, *flags, None, None);
                w.append(&Entry::discard(*queue, s, len, *flags))
            }
            EntrySpec::WriteZeroes {
                queue,
                sector,
                sectors,
                flags,
            } => {
                let s = entry_sector(*sector, ss);
                let len = len_sectors(s, *sectors, ss);
                rec = (Kind::WriteZeroes, *queue, s, len, *flags, None, None);
                w.append(&Entry::write_zeroes(*queue, s, len, *flags))
            }
            EntrySpec::Flush {
                queue,
                flags,
                covers,
            } => {
                // A flush covers records before it: `covers` <= its own seq (replay reads the
                // field as a sector too, and fails on values near 2^64 / sector size).
                let covers = covers % (m.recs.len() as u64 + 1);
                rec = (Kind::Flush, *queue, covers, 0, *flags, None, None);
                w.append(&Entry::flush(*queue, *flags, covers))
            }
            EntrySpec::Mark { name } => {
                rec = (Kind::Mark, 0, 0, 0, 0, None, Some(name.clone()));
                w.mark(name)
            }
            EntrySpec::Named(i) => {
                let name = NAMES[usize::from(*i) % NAMES.len()];
                rec = (Kind::Mark, 0, 0, 0, 0, None, Some(name.to_string()));
                w.mark(name)
            }
        };
        let mut rec = rec;
        match res {
            Ok(seq) => {
                assert_eq!(seq, m.recs.len() as u64);
                if let EntrySpec::Write { fill, .. } = e {
                    rec.5 = Some(pattern(*fill, rec.3 as usize));
                }
                m.recs.push(rec);
            }
            Err(err) => {
                // Only bad mark names are refused.
                assert!(
                    matches!(err, Error::BadMark { .. }),
                    "append refused: {err}"
                );
                let EntrySpec::Mark { name } = e else {
                    panic!("append refused: {err}")
                };
                assert!(
                    name.is_empty()
                        || name.len() > writelog::record::MAX_MARK_LEN
                        || name.chars().any(char::is_control),
                    "valid mark {name:?} refused"
                );
            }
        }
    }
    assert_eq!(w.finish().unwrap(), m.recs.len() as u64);
    drop(w);
    let full = fs::read(&f.log).unwrap();
    (m, full)
}

/// The bytes of the valid log `input` describes (for mutation by the caller).
pub fn valid_log_bytes(input: &ValidInput) -> Vec<u8> {
    build(input).1
}

/// A valid log from `input.entries`, then read, cut, replayed, exported and damaged.
pub fn run_valid(input: &ValidInput) {
    let f = files();
    let (m, full) = build(input);

    // Whole: exactly the entries.
    let mut r = LogReader::open(&f.log).unwrap();
    let recs = r.read_all().unwrap();
    assert_eq!(r.discarded_bytes(), 0);
    check_prefix(&m, &recs, input.log_data, recs.len());
    assert_eq!(recs.len(), m.recs.len());
    // Record boundaries (end offsets).
    let mut ends = vec![];
    let mut off = HEADER_LEN as usize;
    while off < full.len() {
        let len = u32::from_le_bytes(full[off..off + 4].try_into().unwrap()) as usize;
        off += 8 + len;
        ends.push(off);
    }
    assert_eq!(off, full.len());
    assert_eq!(ends.len(), m.recs.len());

    // Stats of the whole log.
    let st = stats(&mut LogReader::open(&f.log).unwrap()).unwrap();
    check_stats(&m, m.recs.len(), &st, 0);

    // Cut at an arbitrary byte: the longest whole prefix, no error.
    let cut = input.cut as usize % (full.len() + 1);
    fs::write(&f.cut, &full[..cut]).unwrap();
    if cut < HEADER_LEN as usize {
        assert!(
            LogReader::open(&f.cut).is_err(),
            "a log cut inside its header opened"
        );
    } else {
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        let mut r = LogReader::open(&f.cut).unwrap();
        let got = r.read_all().unwrap();
        assert_eq!(got.len(), whole, "records of a log cut at {cut}");
        check_prefix(&m, &got, input.log_data, whole);
        let last_end = if whole == 0 {
            HEADER_LEN as usize
        } else {
            ends[whole - 1]
        };
        assert_eq!(r.discarded_bytes(), (cut - last_end) as u64);
        let st = stats(&mut LogReader::open(&f.cut).unwrap()).unwrap();
        check_stats(&m, whole, &st, (cut - last_end) as u64);
        if input.log_data {
            check_replays(&m, whole, &f.cut, input);
        } else {
            fs::write(&f.img, initial_image()).unwrap();
            assert!(matches!(
                replay(&f.cut, &f.img, &LogPosition::End),
                Err(Error::NoData(_))
            ));
            assert!(matches!(
                export_dm_log_writes(&f.cut, &f.dm),
                Err(Error::NoData(_))
            ));
        }
    }

    // Damaged: no panic, and what precedes the damage reads back unchanged.
    if let Some(d) = &input.damage {
        let mut b = full.clone();
        let at = d.at as usize % (b.len() + 1);
        for (i, x) in d.bytes.iter().take(64).enumerate() {
            if let Some(y) = b.get_mut(at + i) {
                *y = *x;
            }
        }
        fs::write(&f.cut, &b).unwrap();
        if let Ok(mut r) = LogReader::open(&f.cut) {
            let intact = ends.iter().filter(|&&e| e <= at).count();
            let mut n = 0;
            for (i, x) in r.by_ref().enumerate() {
                let Ok(rec) = x else { break };
                if i < intact {
                    check_one(&m, i, &rec, input.log_data);
                }
                n += 1;
            }
            assert!(n >= intact, "records before the damage were lost");
            let _ = stats(&mut LogReader::open(&f.cut).unwrap());
            fs::write(&f.img, initial_image()).unwrap();
            let _ = replay(&f.cut, &f.img, &LogPosition::End);
            if export_dm_log_writes(&f.cut, &f.dm).is_ok() {
                fs::write(&f.img2, initial_image()).unwrap();
                let _ = replay_dm_log_writes(&f.dm, &f.img2, &LogPosition::End);
            }
        }
    }
}

fn check_one(m: &Model, i: usize, r: &Record, log_data: bool) {
    let (kind, queue, sector, len, fl, data, mark) = &m.recs[i];
    assert_eq!(r.seq, i as u64);
    assert_eq!(
        (r.kind, r.queue, r.sector, r.len, r.flags),
        (*kind, *queue, *sector, *len, *fl),
        "record {i}"
    );
    assert_eq!(&r.mark, mark, "record {i}");
    if *kind == Kind::Write {
        let d = data.as_ref().unwrap();
        assert_eq!(r.block_hashes, writelog::block_hashes(d), "record {i}");
        assert_eq!(r.data.as_ref(), log_data.then_some(d), "record {i}");
    } else {
        assert!(r.block_hashes.is_empty() && r.data.is_none(), "record {i}");
    }
}

fn check_prefix(m: &Model, got: &[Record], log_data: bool, n: usize) {
    assert_eq!(got.len(), n);
    for (i, r) in got.iter().enumerate() {
        check_one(m, i, r, log_data);
    }
}

fn check_stats(m: &Model, n: usize, st: &writelog::Stats, discarded: u64) {
    assert_eq!(st.records, n as u64);
    assert_eq!(st.discarded_bytes, discarded);
    assert_eq!(st.sector_size as u64, m.sector_size);
    let mut by_kind: BTreeMap<Kind, u64> = BTreeMap::new();
    let mut bytes: BTreeMap<Kind, u64> = BTreeMap::new();
    let mut touched = vec![false; IMG_LEN / m.sector_size as usize];
    for (kind, _, sector, len, fl, _, _) in &m.recs[..n] {
        *by_kind.entry(*kind).or_default() += 1;
        if matches!(kind, Kind::Write | Kind::Discard | Kind::WriteZeroes) {
            *bytes.entry(*kind).or_default() += u64::from(*len);
            let end = sector + u64::from(*len).div_ceil(m.sector_size);
            for t in &mut touched[*sector as usize..end as usize] {
                *t = true;
            }
        }
        let _ = fl;
    }
    assert_eq!(st.by_kind, by_kind);
    assert_eq!(st.bytes_by_kind, bytes);
    assert_eq!(st.flushes, by_kind.get(&Kind::Flush).copied().unwrap_or(0));
    assert_eq!(st.marks, by_kind.get(&Kind::Mark).copied().unwrap_or(0));
    let fua = m.recs[..n]
        .iter()
        .filter(|r| r.0 == Kind::Write && r.4 & flags::FUA != 0)
        .count() as u64;
    assert_eq!(st.fua_writes, fua);
    assert_eq!(
        st.sectors_touched,
        touched.iter().filter(|&&t| t).count() as u64
    );
    assert_eq!(st.last_seq, n.checked_sub(1).map(|s| s as u64));
}

/// Replays of the first `n` records (the whole cut log) match the model, for every kind of
/// stop point, and so does the dm-log-writes export replayed.
fn check_replays(m: &Model, n: usize, log: &std::path::Path, input: &ValidInput) {
    let f = files();
    let orig = initial_image();
    let model_after = |k: usize| {
        let mut img = orig.clone();
        apply(m, k, &mut img);
        img
    };
    let run = |stop: &LogPosition| {
        fs::write(&f.img, &orig).unwrap();
        replay(log, &f.img, stop).map(|s| (s, fs::read(&f.img).unwrap()))
    };
    let (sum, img) = run(&LogPosition::End).unwrap();
    assert_eq!(sum.entries, n as u64);
    assert!(img == model_after(n), "replay to the end");
    // Seq(s): records 0..=s; a seq past the end is not reached.
    let s = u64::from(input.stop_seq) % (n as u64 + 2);
    match run(&LogPosition::Seq(s)) {
        Ok((_, img)) => {
            assert!(s < n as u64, "seq {s} reached in a log of {n}");
            assert!(img == model_after(s as usize + 1), "replay to seq {s}");
        }
        Err(e) => {
            assert!(s >= n as u64, "replay to seq {s} of {n}: {e}");
            assert!(matches!(e, Error::StopNotReached(_)));
        }
    }
    let k = u64::from(input.stop_entries) % (n as u64 + 2);
    match run(&LogPosition::Entries(k)) {
        Ok((sum, img)) => {
            assert!(k <= n as u64);
            assert_eq!(sum.entries, k);
            assert!(img == model_after(k as usize), "replay of {k} entries");
        }
        Err(e) => assert!(k > n as u64, "replay of {k} entries of {n}: {e}"),
    }
    // Flush(k) / Mark(name): up to and including the k-th flush / first such mark.
    let fk = u64::from(input.stop_flush % 4);
    let flush_at = m.recs[..n]
        .iter()
        .enumerate()
        .filter(|r| r.1 .0 == Kind::Flush)
        .nth((fk as usize).wrapping_sub(1))
        .map(|(i, _)| i);
    let name = NAMES[usize::from(input.stop_mark) % NAMES.len()];
    let mark_at = m.recs[..n]
        .iter()
        .position(|r| r.0 == Kind::Mark && r.6.as_deref() == Some(name));
    for (stop, at) in [
        (
            LogPosition::Flush(fk),
            if fk == 0 { None } else { flush_at },
        ),
        (LogPosition::Mark(name.into()), mark_at),
    ] {
        match (run(&stop), at) {
            (Ok((_, img)), Some(i)) => assert!(img == model_after(i + 1), "replay to {stop:?}"),
            (Err(Error::StopNotReached(_)), None) => {}
            (r, at) => panic!(
                "replay to {stop:?}: {:?} (expected stop at {at:?})",
                r.map(|x| x.0)
            ),
        }
    }
    // dm-log-writes export: needs 512-byte sectors and whole-sector records.
    let exp = export_dm_log_writes(log, &f.dm);
    let odd = m.recs[..n].iter().any(|r| r.3 % 512 != 0);
    if m.sector_size != 512 || odd {
        assert!(matches!(exp, Err(Error::Unsupported(_))), "{exp:?}");
        return;
    }
    let exp = exp.unwrap();
    let run_dm = |stop: &LogPosition| {
        fs::write(&f.img2, &orig).unwrap();
        replay_dm_log_writes(&f.dm, &f.img2, stop).map(|s| (s, fs::read(&f.img2).unwrap()))
    };
    let (sum, img) = run_dm(&LogPosition::End).unwrap();
    assert_eq!(sum.entries, exp.entries);
    assert!(img == model_after(n), "dm-log-writes replay to the end");
    // The export leaves out failed flushes and emits a flush at the seq it covers (before
    // that record) rather than at its own: Flush(k) stops before the records it did not
    // cover. Records before the k-th exported flush:
    let mut early: BTreeMap<u64, usize> = BTreeMap::new();
    let mut own = vec![false; n];
    for (i, r) in m.recs[..n].iter().enumerate() {
        if r.0 == Kind::Flush && r.4 & flags::FAILED == 0 {
            if r.2 < i as u64 {
                *early.entry(r.2).or_default() += 1;
            } else {
                own[i] = true;
            }
        }
    }
    let mut dm_flush_at = vec![]; // records applied when each exported flush is reached
    for (i, own_flush) in own.iter().enumerate().take(n) {
        for _ in 0..early.get(&(i as u64)).copied().unwrap_or(0) {
            dm_flush_at.push(i);
        }
        if *own_flush {
            dm_flush_at.push(i + 1);
        }
    }
    let dm_flush = (fk as usize)
        .checked_sub(1)
        .and_then(|k| dm_flush_at.get(k).copied());
    for (stop, at) in [
        (LogPosition::Flush(fk), dm_flush),
        (LogPosition::Mark(name.into()), mark_at.map(|i| i + 1)),
    ] {
        match (run_dm(&stop), at) {
            (Ok((_, img)), Some(k)) => {
                assert!(img == model_after(k), "dm replay to {stop:?}")
            }
            (Err(Error::StopNotReached(_)), None) => {}
            (r, at) => panic!(
                "dm replay to {stop:?}: {:?} (expected {at:?})",
                r.map(|x| x.0)
            ),
        }
    }
}
