//! Workloads and the single-threaded request engine that runs them over a [`BlkClient`].
//!
//! One thread drives all queues: it keeps each queue filled to its queue depth (QD is per
//! queue, like fio's `iodepth` with one job per queue), kicks, and sleeps in
//! [`BlkClient::wait_any`] until any queue has completions. `BlkClient` owns all rings of the
//! one vhost-user connection and needs `&mut self`, so a thread per queue is not possible
//! without splitting it; the backends still see two independent queues (blkrec: one worker
//! thread per queue).

use crate::pattern::{Pattern, Rng, BLOCK, UNKNOWN};
use blkrec::frontend::{BlkClient, BlkOp, FrontendError};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

const SECTORS_PER_BLOCK: u64 = (BLOCK / 512) as u64;

/// A workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Workload {
    /// 4 KiB random writes, QD1.
    #[serde(rename = "randwrite-4k-qd1")]
    RandWrite4kQd1,
    /// 4 KiB random writes, QD32.
    #[serde(rename = "randwrite-4k-qd32")]
    RandWrite4kQd32,
    /// 1 MiB sequential writes, QD4.
    #[serde(rename = "seqwrite-1m-qd4")]
    SeqWrite1mQd4,
    /// 4 KiB random reads, QD32.
    #[serde(rename = "randread-4k-qd32")]
    RandRead4kQd32,
    /// Groups of 8 4 KiB random writes (in flight together), then a flush once all 8 have
    /// completed; the next group starts when the flush has completed.
    #[serde(rename = "flush-every-8")]
    FlushEvery8,
}

impl Workload {
    /// All workloads, in run order.
    pub const ALL: [Workload; 5] = [
        Workload::RandWrite4kQd1,
        Workload::RandWrite4kQd32,
        Workload::SeqWrite1mQd4,
        Workload::RandRead4kQd32,
        Workload::FlushEvery8,
    ];

    /// Name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::RandWrite4kQd1 => "randwrite-4k-qd1",
            Workload::RandWrite4kQd32 => "randwrite-4k-qd32",
            Workload::SeqWrite1mQd4 => "seqwrite-1m-qd4",
            Workload::RandRead4kQd32 => "randread-4k-qd32",
            Workload::FlushEvery8 => "flush-every-8",
        }
    }

    /// In-flight requests per queue.
    pub fn queue_depth(self) -> usize {
        match self {
            Workload::RandWrite4kQd1 => 1,
            Workload::RandWrite4kQd32 | Workload::RandRead4kQd32 => 32,
            Workload::SeqWrite1mQd4 => 4,
            Workload::FlushEvery8 => 8,
        }
    }

    /// Bytes per data request (before any split to the device's max transfer).
    pub fn request_bytes(self) -> usize {
        match self {
            Workload::SeqWrite1mQd4 => 1 << 20,
            _ => BLOCK,
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown workload {s:?}; known: {}",
                    Workload::ALL.map(Workload::name).join(", ")
                )
            })
    }
}

/// When a workload stops submitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// After this much time.
    Duration(Duration),
    /// After this many requests (all queues together, flushes included).
    Ops(u64),
}

/// What the disk should hold: the generation of every 4 KiB block.
#[derive(Debug)]
pub struct DiskModel {
    /// Pattern the blocks are made of.
    pub pattern: Pattern,
    /// Expected generation per block ([`UNKNOWN`] after a failed write).
    pub gens: Vec<u64>,
    busy: Vec<bool>,
    next_gen: u64,
    seq_cursor: u64,
}

impl DiskModel {
    /// A disk of `blocks` blocks, all generation 0.
    pub fn new(pattern: Pattern, blocks: u64) -> Self {
        DiskModel {
            pattern,
            gens: vec![0; blocks as usize],
            busy: vec![false; blocks as usize],
            next_gen: 1,
            seq_cursor: 0,
        }
    }

    /// Number of blocks.
    pub fn blocks(&self) -> u64 {
        self.gens.len() as u64
    }

    fn range_free(&self, first: u64, n: u64) -> bool {
        (first..first + n).all(|b| !self.busy[b as usize])
    }

    fn set_busy(&mut self, first: u64, n: u64, v: bool) {
        for b in first..first + n {
            self.busy[b as usize] = v;
        }
    }

    /// A random block no in-flight request touches.
    fn random_free(&mut self, rng: &mut Rng) -> Option<u64> {
        (0..64)
            .map(|_| rng.below(self.blocks()))
            .find(|&b| !self.busy[b as usize])
    }
}

/// Raw outcome of one workload run.
#[derive(Debug, Clone, Default)]
pub struct RawResult {
    /// Requests submitted.
    pub submitted: u64,
    /// Requests completed.
    pub completed: u64,
    /// Completions whose status was not VIRTIO_BLK_S_OK.
    pub errors: u64,
    /// Blocks read back whose content was not what was last written.
    pub read_mismatches: u64,
    /// Data requests (reads + writes).
    pub data_requests: u64,
    /// Flush requests.
    pub flushes: u64,
    /// Data bytes transferred by successful requests.
    pub bytes: u64,
    /// First submit to last completion.
    pub elapsed: Duration,
    /// Submit → completion of every request, nanoseconds.
    pub latencies_ns: Vec<u64>,
    /// Anything worth saying (e.g. requests split).
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Write { first: u64, n: u64, gen: u64 },
    Read { first: u64, n: u64 },
    Flush,
}

#[derive(Debug)]
struct Pending {
    q: usize,
    start: Instant,
    op: Op,
}

#[derive(Debug, Default, Clone, Copy)]
struct QState {
    inflight: usize,
    /// flush-every-8: writes submitted in the current group.
    group_writes: usize,
    /// flush-every-8: the group's flush is in flight.
    flushing: bool,
}

/// Runs `wl` on `queues` queues until `limit`, checking every completion.
pub fn run(
    client: &mut BlkClient,
    disk: &mut DiskModel,
    wl: Workload,
    queues: usize,
    limit: Limit,
    rng: &mut Rng,
) -> Result<RawResult, FrontendError> {
    let chunk_blocks = (wl.request_bytes().min(client.max_io()) / BLOCK).max(1) as u64;
    let mut res = RawResult::default();
    if chunk_blocks as usize * BLOCK < wl.request_bytes() {
        res.note = Some(format!(
            "requests split to {} KiB (device max transfer)",
            chunk_blocks as usize * BLOCK / 1024
        ));
    }
    let depth = wl.queue_depth();
    let mut qs = vec![QState::default(); queues];
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut buf = vec![0u8; chunk_blocks as usize * BLOCK];
    let all: Vec<usize> = (0..queues).collect();
    let t0 = Instant::now();
    let mut last_done = t0;
    let mut stopping = false;
    // Rotate the queue that gets to submit first, so no queue is always served first.
    let mut first_q = 0usize;
    loop {
        if !stopping {
            stopping = match limit {
                Limit::Duration(d) => t0.elapsed() >= d,
                Limit::Ops(n) => res.submitted >= n,
            };
        }
        if !stopping {
            for i in 0..queues {
                let q = (first_q + i) % queues;
                let mut kicked = false;
                loop {
                    if let Limit::Ops(n) = limit {
                        if res.submitted >= n {
                            break;
                        }
                    }
                    let Some(op) = next_op(wl, &mut qs[q], depth, disk, rng, chunk_blocks) else {
                        break;
                    };
                    let token = match op {
                        Op::Write { first, n, gen } => {
                            let data = &mut buf[..n as usize * BLOCK];
                            for i in 0..n {
                                let at = i as usize * BLOCK;
                                disk.pattern.fill(first + i, gen, &mut data[at..at + BLOCK]);
                            }
                            client.submit(
                                q,
                                BlkOp::Write {
                                    sector: first * SECTORS_PER_BLOCK,
                                    data,
                                },
                            )?
                        }
                        Op::Read { first, n } => client.submit(
                            q,
                            BlkOp::Read {
                                sector: first * SECTORS_PER_BLOCK,
                                len: n as usize * BLOCK,
                            },
                        )?,
                        Op::Flush => client.submit(q, BlkOp::Flush)?,
                    };
                    pending.insert(
                        token,
                        Pending {
                            q,
                            start: Instant::now(),
                            op,
                        },
                    );
                    res.submitted += 1;
                    kicked = true;
                }
                if kicked {
                    client.kick(q)?;
                }
            }
            first_q = (first_q + 1) % queues;
        }
        if pending.is_empty() {
            if stopping {
                break;
            }
            // Nothing could be submitted (every candidate block busy): cannot happen with
            // nothing in flight, but don't spin if it does.
            return Err(FrontendError::Invalid(
                "workload made no progress (disk too small for the queue depth?)".into(),
            ));
        }
        for (_, c) in client.wait_any(&all)? {
            let Some(p) = pending.remove(&c.token) else {
                return Err(FrontendError::Backend(format!(
                    "completion for unknown token {}",
                    c.token
                )));
            };
            let now = Instant::now();
            last_done = now;
            res.latencies_ns
                .push(u64::try_from((now - p.start).as_nanos()).unwrap_or(u64::MAX));
            res.completed += 1;
            let ok = c.status == 0;
            if !ok {
                res.errors += 1;
            }
            let st = &mut qs[p.q];
            st.inflight -= 1;
            match p.op {
                Op::Write { first, n, gen } => {
                    res.data_requests += 1;
                    disk.set_busy(first, n, false);
                    for b in first..first + n {
                        disk.gens[b as usize] = if ok { gen } else { UNKNOWN };
                    }
                    if ok {
                        res.bytes += n * BLOCK as u64;
                    }
                }
                Op::Read { first, n } => {
                    res.data_requests += 1;
                    disk.set_busy(first, n, false);
                    if ok {
                        res.bytes += n * BLOCK as u64;
                        let data = c.data.unwrap_or_default();
                        res.read_mismatches += count_mismatches(disk, first, n, &data);
                    }
                }
                Op::Flush => {
                    res.flushes += 1;
                    st.flushing = false;
                    st.group_writes = 0;
                }
            }
        }
    }
    res.elapsed = last_done - t0;
    Ok(res)
}

fn count_mismatches(disk: &DiskModel, first: u64, n: u64, data: &[u8]) -> u64 {
    (0..n)
        .filter(|&i| {
            let at = i as usize * BLOCK;
            let lba = first + i;
            let block = data.get(at..at + BLOCK).unwrap_or(&[]);
            !disk.pattern.check(lba, disk.gens[lba as usize], block)
        })
        .count() as u64
}

/// The next request for a queue in state `st`, or `None` if it must wait for completions.
fn next_op(
    wl: Workload,
    st: &mut QState,
    depth: usize,
    disk: &mut DiskModel,
    rng: &mut Rng,
    chunk_blocks: u64,
) -> Option<Op> {
    if st.inflight >= depth {
        return None;
    }
    let op = match wl {
        Workload::RandWrite4kQd1 | Workload::RandWrite4kQd32 => {
            let first = disk.random_free(rng)?;
            write_op(disk, first, 1)
        }
        Workload::RandRead4kQd32 => {
            let first = disk.random_free(rng)?;
            disk.set_busy(first, 1, true);
            Op::Read { first, n: 1 }
        }
        Workload::SeqWrite1mQd4 => {
            let n = chunk_blocks.min(disk.blocks());
            let mut first = disk.seq_cursor;
            if first + n > disk.blocks() {
                first = 0;
            }
            if !disk.range_free(first, n) {
                return None;
            }
            disk.seq_cursor = first + n;
            write_op(disk, first, n)
        }
        Workload::FlushEvery8 => {
            if st.flushing {
                return None;
            }
            if st.group_writes < 8 {
                let first = disk.random_free(rng)?;
                st.group_writes += 1;
                write_op(disk, first, 1)
            } else if st.inflight == 0 {
                st.flushing = true;
                Op::Flush
            } else {
                return None;
            }
        }
    };
    st.inflight += 1;
    Some(op)
}

fn write_op(disk: &mut DiskModel, first: u64, n: u64) -> Op {
    disk.set_busy(first, n, true);
    let gen = disk.next_gen;
    disk.next_gen += 1;
    Op::Write { first, n, gen }
}

/// Result of reading the whole disk back through the backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verify {
    /// Blocks read back and compared.
    pub blocks_checked: u64,
    /// Blocks whose content differed from what was last written.
    pub mismatches: u64,
    /// Read requests that failed.
    pub errors: u64,
    /// Up to 8 mismatching LBAs (4 KiB units).
    pub first_bad: Vec<u64>,
    /// Blocks that were written (generation > 0) at least once during the run.
    pub blocks_rewritten: u64,
}

/// Reads every block back (large reads, QD4 per queue) and compares it with the model.
pub fn verify(
    client: &mut BlkClient,
    disk: &DiskModel,
    queues: usize,
) -> Result<Verify, FrontendError> {
    let chunk = ((1usize << 20).min(client.max_io()) / BLOCK).max(1) as u64;
    let mut v = Verify {
        blocks_rewritten: disk.gens.iter().filter(|&&g| g != 0).count() as u64,
        ..Verify::default()
    };
    let all: Vec<usize> = (0..queues).collect();
    let mut inflight = vec![0usize; queues];
    let mut pending: HashMap<u64, (usize, u64, u64)> = HashMap::new();
    let mut next = 0u64;
    while next < disk.blocks() || !pending.is_empty() {
        for (q, inf) in inflight.iter_mut().enumerate() {
            let mut kicked = false;
            while *inf < 4 && next < disk.blocks() {
                let n = chunk.min(disk.blocks() - next);
                let t = client.submit(
                    q,
                    BlkOp::Read {
                        sector: next * SECTORS_PER_BLOCK,
                        len: n as usize * BLOCK,
                    },
                )?;
                pending.insert(t, (q, next, n));
                next += n;
                *inf += 1;
                kicked = true;
            }
            if kicked {
                client.kick(q)?;
            }
        }
        for (_, c) in client.wait_any(&all)? {
            let Some((q, first, n)) = pending.remove(&c.token) else {
                return Err(FrontendError::Backend(format!(
                    "completion for unknown token {}",
                    c.token
                )));
            };
            inflight[q] -= 1;
            if c.status != 0 {
                v.errors += 1;
                continue;
            }
            let data = c.data.unwrap_or_default();
            for i in 0..n {
                let at = i as usize * BLOCK;
                let lba = first + i;
                v.blocks_checked += 1;
                let block = data.get(at..at + BLOCK).unwrap_or(&[]);
                if !disk.pattern.check(lba, disk.gens[lba as usize], block) {
                    v.mismatches += 1;
                    if v.first_bad.len() < 8 {
                        v.first_bad.push(lba);
                    }
                }
            }
        }
    }
    Ok(v)
}

/// Writes generation 0 of the pattern over the whole device, sequentially in chunks of up to
/// 1 MiB (at most 4 in flight per queue), so a backend whose image we did not create (an
/// external socket) holds what [`DiskModel::new`] assumes. Returns the number of failed
/// writes.
pub fn fill(client: &mut BlkClient, disk: &DiskModel, queues: usize) -> Result<u64, FrontendError> {
    let chunk = ((1usize << 20).min(client.max_io()) / BLOCK).max(1) as u64;
    let all: Vec<usize> = (0..queues).collect();
    let mut inflight = vec![0usize; queues];
    let mut pending: HashMap<u64, usize> = HashMap::new();
    let mut next = 0u64;
    let mut errors = 0;
    let mut buf = vec![0u8; chunk as usize * BLOCK];
    while next < disk.blocks() || !pending.is_empty() {
        for (q, inf) in inflight.iter_mut().enumerate() {
            let mut kicked = false;
            while *inf < 4 && next < disk.blocks() {
                let n = chunk.min(disk.blocks() - next);
                let data = &mut buf[..n as usize * BLOCK];
                for i in 0..n {
                    let at = i as usize * BLOCK;
                    disk.pattern.fill(next + i, 0, &mut data[at..at + BLOCK]);
                }
                let t = client.submit(
                    q,
                    BlkOp::Write {
                        sector: next * SECTORS_PER_BLOCK,
                        data,
                    },
                )?;
                pending.insert(t, q);
                next += n;
                *inf += 1;
                kicked = true;
            }
            if kicked {
                client.kick(q)?;
            }
        }
        for (_, c) in client.wait_any(&all)? {
            let Some(q) = pending.remove(&c.token) else {
                return Err(FrontendError::Backend(format!(
                    "completion for unknown token {}",
                    c.token
                )));
            };
            inflight[q] -= 1;
            if c.status != 0 {
                errors += 1;
            }
        }
    }
    Ok(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names() {
        for w in Workload::ALL {
            assert_eq!(w.name().parse::<Workload>(), Ok(w));
        }
        assert!("x".parse::<Workload>().is_err());
        for w in Workload::ALL {
            let j = serde_json::to_string(&w).expect("serialize");
            assert_eq!(j, format!("\"{}\"", w.name()));
        }
    }

    #[test]
    fn flush_groups() {
        let mut disk = DiskModel::new(Pattern::new(1), 1000);
        let mut rng = Rng::new(1);
        let mut st = QState::default();
        let mut ops = vec![];
        while let Some(op) = next_op(Workload::FlushEvery8, &mut st, 8, &mut disk, &mut rng, 1) {
            ops.push(op);
        }
        assert_eq!(ops.len(), 8);
        assert!(ops.iter().all(|o| matches!(o, Op::Write { .. })));
        // Writes complete → the flush is next, and nothing after it until it completes.
        st.inflight = 0;
        let f = next_op(Workload::FlushEvery8, &mut st, 8, &mut disk, &mut rng, 1);
        assert!(matches!(f, Some(Op::Flush)));
        assert!(next_op(Workload::FlushEvery8, &mut st, 8, &mut disk, &mut rng, 1).is_none());
    }

    #[test]
    fn seq_wraps_and_respects_busy() {
        let mut disk = DiskModel::new(Pattern::new(1), 600);
        let mut rng = Rng::new(1);
        let mut st = QState::default();
        let w = Workload::SeqWrite1mQd4;
        let a = next_op(w, &mut st, 4, &mut disk, &mut rng, 256);
        let b = next_op(w, &mut st, 4, &mut disk, &mut rng, 256);
        assert!(matches!(
            a,
            Some(Op::Write {
                first: 0,
                n: 256,
                ..
            })
        ));
        assert!(matches!(
            b,
            Some(Op::Write {
                first: 256,
                n: 256,
                ..
            })
        ));
        // 512 + 256 > 600 → wraps to 0, which is still busy.
        assert!(next_op(w, &mut st, 4, &mut disk, &mut rng, 256).is_none());
        disk.set_busy(0, 256, false);
        let c = next_op(w, &mut st, 4, &mut disk, &mut rng, 256);
        assert!(matches!(c, Some(Op::Write { first: 0, .. })));
    }
}
