//! The per-round timeline: guest events (migration windows, hole stores) and write-log
//! events (writes, flushes, marks) on one host time axis.
//!
//! The two clocks differ: the guest records CLOCK_MONOTONIC, the log records ns since blkrec
//! created it. They are aligned with one offset (`log = guest + offset`) bounded by
//! causality, never measured:
//!
//! * every guest event of the workload happens after the host wrote the `workload-start`
//!   mark, so `offset >= start_mark - first_guest_event` (lower bound);
//! * every guest event of round r happens before the host wrote `round-r-done`, and a block
//!   is stored before any write carrying it reaches the disk, so
//!   `offset <= round_done - last_guest_event(r)` and `offset <= write - store` (upper bounds).
//!
//! The drawing uses the tightest upper bound (events drawn as late as causality allows); the
//! page states the interval, so a reader knows how far off it can be.

use std::collections::HashSet;

use e4race_protocol::RoundRecord;
use serde::{Deserialize, Serialize};

use crate::attribution::{Evidence, LogScan};

/// How guest times map onto the log's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alignment {
    /// log ns = guest ns + offset_ns.
    pub offset_ns: i64,
    /// Causality bounds on the offset (None: no constraint of that kind).
    pub lower_ns: Option<i64>,
    pub upper_ns: Option<i64>,
    /// How the offset was chosen, for the page.
    pub method: String,
}

impl Alignment {
    /// Width of the uncertainty interval, if both bounds exist.
    pub fn uncertainty_ns(&self) -> Option<i64> {
        Some(self.upper_ns? - self.lower_ns?)
    }
}

fn guest_events(r: &RoundRecord) -> impl Iterator<Item = u64> + '_ {
    r.files.iter().flat_map(|f| {
        f.hole_t_ns
            .iter()
            .chain(&f.overwrite_t_ns)
            .copied()
            .chain(
                f.migration
                    .iter()
                    .flat_map(|m| [m.start_ns, m.end_ns])
                    .filter(|&t| t > 0),
            )
            .chain(f.moves.iter().flat_map(|m| [m.start_ns, m.end_ns]))
    })
}

fn signed(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// Bounds the clock offset from the marks and the attributed writes; None when nothing
/// relates the clocks (no log, or no guest times).
pub fn align(rounds: &[RoundRecord], scan: &LogScan, ev: Option<&Evidence>) -> Option<Alignment> {
    let first = rounds.iter().flat_map(guest_events).min();
    let mut lowers = vec![];
    if let (Some(m), Some(g)) = (scan.mark_time("workload-start"), first) {
        lowers.push(signed(m) - signed(g));
    }
    let mut from_prefill = false;
    for (i, r) in rounds.iter().enumerate() {
        let Some(g) = guest_events(r).min() else {
            continue;
        };
        // Round r starts after the host marked the previous round done...
        if let Some(prev) = i.checked_sub(1).and_then(|j| rounds.get(j)) {
            if let Some(m) = scan.mark_time(&format!("round-{}-done", prev.round)) {
                lowers.push(signed(m) - signed(g));
            }
        }
        // ...and after the fsync of its prefilled blocks, whose writes the log saw.
        if let Some(&w) = scan.prefill_synced_ns.get(&r.round) {
            let l = signed(w) - signed(g);
            if lowers.iter().all(|&x| l > x) {
                from_prefill = true;
            }
            lowers.push(l);
        }
    }
    let lower = lowers.into_iter().max();
    let mut uppers = vec![];
    for r in rounds {
        if let (Some(m), Some(g)) = (
            scan.mark_time(&format!("round-{}-done", r.round)),
            guest_events(r).max(),
        ) {
            uppers.push(signed(m) - signed(g));
        }
    }
    let mut from_writes = false;
    if let Some(u) = scan.store_to_write_min_ns {
        from_writes = uppers.iter().all(|&x| u < x);
        uppers.push(u);
    }
    if let Some(ev) = ev {
        for b in &ev.blocks {
            if let (Some(w), Some(t)) = (b.attribution.write(), b.store_t_ns) {
                let u = signed(w.time_ns) - signed(t);
                if uppers.iter().all(|&x| u < x) {
                    from_writes = true;
                }
                uppers.push(u);
            }
        }
    }
    let upper = uppers.into_iter().min();
    let (offset, method) = match (upper, lower) {
        (Some(u), Some(l)) if u >= l => (
            u,
            format!(
                "latest offset allowed by causality (upper bound: {}; lower bound: {}); the true offset is at most {:.1} ms earlier",
                if from_writes {
                    "a store and the write that carried it"
                } else {
                    "a round-done mark"
                },
                if from_prefill {
                    "the writes of the blocks fsynced before the race"
                } else {
                    "a mark written before the round started"
                },
                (u - l) as f64 / 1e6
            ),
        ),
        (Some(u), Some(_)) => (
            u,
            "the bounds conflict (a clock jumped?): drawn with the upper bound".to_string(),
        ),
        (Some(u), None) => (
            u,
            "upper bound only (no workload-start mark)".to_string(),
        ),
        (None, Some(l)) => (
            l,
            "anchored on the workload-start mark only: guest events may be drawn early".to_string(),
        ),
        (None, None) => return None,
    };
    Some(Alignment {
        offset_ns: offset,
        lower_ns: lower,
        upper_ns: upper,
        method,
    })
}

/// One file's row of a round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileLane {
    pub path: String,
    /// Migration window (start, end), host ns.
    pub window: Option<(i64, i64)>,
    /// MOVE_EXT windows, host ns.
    pub moves: Vec<(i64, i64)>,
    /// Every hole store / overwrite, host ns.
    pub stores: Vec<i64>,
    /// The stores of blocks that were lost.
    pub lost_stores: Vec<i64>,
    pub lost: usize,
    pub migrate_error: i32,
}

/// Everything one round's SVG shows. Times are ns on the log's clock, or on the guest's
/// clock when there is no log (`aligned == false`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundTimeline {
    pub round: u32,
    pub aligned: bool,
    /// log ns = guest ns + offset (0 when not aligned).
    pub offset_ns: i64,
    pub t0: i64,
    pub t1: i64,
    pub files: Vec<FileLane>,
    /// Log events inside [t0, t1].
    pub writes: Vec<i64>,
    pub flushes: Vec<i64>,
    pub marks: Vec<(String, i64)>,
    /// Log times of the writes that carried this round's lost blocks.
    pub lost_writes: Vec<i64>,
    /// Crash states that failed a check, at the time of their FLUSH record.
    pub bad_states: Vec<BadStateMark>,
}

/// A bad crash state on the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadStateMark {
    /// Log ns of the FLUSH the state is at.
    pub t: i64,
    /// Tooltip: seq, kind of state, problem.
    pub title: String,
}

/// The bad states of crash.json placed at their FLUSH records' log times (states whose seq
/// the scan has no flush for are left out).
pub fn bad_state_marks(report: &crash::CrashReport, scan: &LogScan) -> Vec<BadStateMark> {
    let times: std::collections::HashMap<u64, u64> = scan.flushes.iter().copied().collect();
    report
        .bad
        .iter()
        .filter_map(|b| {
            let t = *times.get(&b.state.seq)?;
            let kind = match &b.state.kind {
                crash::StateKind::AfterFlush => "after the flush".to_string(),
                crash::StateKind::Reordered { dropped } => {
                    format!(
                        "before the flush, {} unflushed writes dropped",
                        dropped.len()
                    )
                }
            };
            Some(BadStateMark {
                t: signed(t),
                title: format!(
                    "bad crash state at seq {} ({kind}): {}",
                    b.state.seq,
                    b.findings.summary()
                ),
            })
        })
        .collect()
}

/// Builds one timeline per round.
pub fn rounds(
    rounds: &[RoundRecord],
    scan: Option<&LogScan>,
    ev: Option<&Evidence>,
    align: Option<&Alignment>,
    bad: &[BadStateMark],
) -> Vec<RoundTimeline> {
    let (aligned, off) = match align {
        Some(a) if scan.is_some() => (true, a.offset_ns),
        _ => (false, 0),
    };
    let map = |t: u64| signed(t).saturating_add(off);
    let mut out = vec![];
    for r in rounds {
        let lost: HashSet<(u32, u64)> = ev
            .map(|e| {
                e.blocks
                    .iter()
                    .filter(|b| b.round == r.round)
                    .map(|b| (b.file_id, b.lblk))
                    .collect()
            })
            .unwrap_or_default();
        let mut files = vec![];
        for f in &r.files {
            let mut lane = FileLane {
                path: f.path.clone(),
                window: f
                    .migration
                    .as_ref()
                    .filter(|m| m.end_ns > 0)
                    .map(|m| (map(m.start_ns), map(m.end_ns))),
                moves: f
                    .moves
                    .iter()
                    .map(|m| (map(m.start_ns), map(m.end_ns)))
                    .collect(),
                migrate_error: f.migration.as_ref().map_or(0, |m| m.error),
                ..Default::default()
            };
            let pairs = f
                .hole_lblks
                .iter()
                .zip(&f.hole_t_ns)
                .chain(f.overwrites.iter().zip(&f.overwrite_t_ns));
            for (&l, &t) in pairs {
                lane.stores.push(map(t));
                if lost.contains(&(f.file_id, l)) {
                    lane.lost_stores.push(map(t));
                    lane.lost += 1;
                }
            }
            files.push(lane);
        }
        let lost_writes: Vec<i64> = ev
            .map(|e| {
                e.blocks
                    .iter()
                    .filter(|b| b.round == r.round)
                    .filter_map(|b| b.attribution.write())
                    .map(|w| signed(w.time_ns))
                    .collect()
            })
            .unwrap_or_default();
        let guest: Vec<i64> = guest_events(r).map(map).collect();
        let (Some(&gmin), Some(&gmax)) = (guest.iter().min(), guest.iter().max()) else {
            continue;
        };
        let mut t0 = gmin;
        let mut t1 = gmax;
        if aligned {
            if let Some(s) = scan {
                if let Some(m) = s.mark_time(&format!("round-{}-done", r.round)) {
                    t1 = t1.max(signed(m));
                }
            }
            for &w in &lost_writes {
                t0 = t0.min(w);
                t1 = t1.max(w);
            }
        }
        let pad = ((t1 - t0) / 50).max(1_000_000);
        let (t0, t1) = (t0 - pad, t1 + pad);
        let inside = |t: i64| t >= t0 && t <= t1;
        let (mut writes, mut flushes, mut marks, mut bad_states) = (vec![], vec![], vec![], vec![]);
        if let (true, Some(s)) = (aligned, scan) {
            writes = s
                .write_times
                .iter()
                .map(|&t| signed(t))
                .filter(|&t| inside(t))
                .collect();
            flushes = s
                .flushes
                .iter()
                .map(|&(_, t)| signed(t))
                .filter(|&t| inside(t))
                .collect();
            marks = s
                .marks
                .iter()
                .map(|m| (m.name.clone(), signed(m.time_ns)))
                .filter(|m| inside(m.1))
                .collect();
            bad_states = bad.iter().filter(|b| inside(b.t)).cloned().collect();
        }
        out.push(RoundTimeline {
            round: r.round,
            aligned,
            offset_ns: off,
            t0,
            t1,
            files,
            writes,
            flushes,
            marks,
            lost_writes,
            bad_states,
        });
    }
    out
}
