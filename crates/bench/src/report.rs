//! Results: raw numbers (serialized to JSON) and the Markdown table.

use crate::peer::{BlkrecBin, PeerKind};
use crate::stats::{cpu_per_gib, median, ratio, Latency};
use crate::workload::{Limit, RawResult, Verify, Workload};
use crate::BenchConfig;
use std::fmt::Write as _;
use std::path::Path;

/// One (peer, workload, queues) measurement.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunResult {
    /// Peer.
    pub peer: PeerKind,
    /// Workload.
    pub workload: Workload,
    /// Queues used.
    pub queues: u16,
    /// In-flight requests per queue.
    pub queue_depth_per_queue: usize,
    /// Requests submitted.
    pub submitted: u64,
    /// Requests completed.
    pub completed: u64,
    /// Completions with a status other than OK.
    pub errors: u64,
    /// Blocks read whose content was not what was last written.
    pub read_mismatches: u64,
    /// Read/write requests.
    pub data_requests: u64,
    /// Flush requests.
    pub flushes: u64,
    /// Data bytes moved.
    pub bytes: u64,
    /// First submit to last completion, seconds.
    pub elapsed_s: f64,
    /// Completed requests per second (flushes included).
    pub iops: f64,
    /// Data MiB per second.
    pub mib_s: f64,
    /// Latency summary (all requests), µs.
    pub lat_p50_us: Option<f64>,
    /// 99th percentile latency, µs.
    pub lat_p99_us: Option<f64>,
    /// Mean latency, µs.
    pub lat_mean_us: Option<f64>,
    /// Max latency, µs.
    pub lat_max_us: Option<f64>,
    /// Backend CPU (user + system, all threads), seconds (0 when not measured: `--socket`
    /// without `--socket-pid`; `backend_cpu_s_per_gib` is then absent).
    pub backend_cpu_s: f64,
    /// Backend CPU seconds per GiB of data moved (absent if not measured or no data).
    pub backend_cpu_s_per_gib: Option<f64>,
    /// CPU used by the benchmark (frontend) process meanwhile, seconds.
    pub frontend_cpu_s: f64,
    /// Ratios to qsd for the same workload and queues (peer / qsd).
    pub vs_qsd: Ratios,
    /// Note (e.g. requests split).
    pub note: Option<String>,
    /// Name shown in the peer column instead of the peer kind's (`--socket-name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Which round (`--rounds`) this measurement comes from, from 0. In `Report::medians`:
    /// the number of rounds summarized.
    #[serde(default)]
    pub round: u32,
}

/// Each figure divided by qsd's.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ratios {
    /// IOPS ratio (higher is better).
    pub iops: Option<f64>,
    /// MiB/s ratio (higher is better).
    pub mib_s: Option<f64>,
    /// p50 ratio (lower is better).
    pub lat_p50: Option<f64>,
    /// p99 ratio (lower is better).
    pub lat_p99: Option<f64>,
    /// CPU/GiB ratio (lower is better).
    pub cpu_per_gib: Option<f64>,
}

impl RunResult {
    /// Summarizes a raw result.
    pub fn from_raw(
        peer: PeerKind,
        workload: Workload,
        queues: u16,
        mut raw: RawResult,
        backend_cpu_s: f64,
        frontend_cpu_s: f64,
    ) -> RunResult {
        let secs = raw.elapsed.as_secs_f64();
        let per_s = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
        let lat = Latency::from_ns(&mut raw.latencies_ns);
        RunResult {
            peer,
            workload,
            queues,
            queue_depth_per_queue: workload.queue_depth(),
            submitted: raw.submitted,
            completed: raw.completed,
            errors: raw.errors,
            read_mismatches: raw.read_mismatches,
            data_requests: raw.data_requests,
            flushes: raw.flushes,
            bytes: raw.bytes,
            elapsed_s: secs,
            iops: per_s(raw.completed as f64),
            mib_s: per_s(raw.bytes as f64 / f64::from(1u32 << 20)),
            lat_p50_us: lat.map(|l| l.p50_us),
            lat_p99_us: lat.map(|l| l.p99_us),
            lat_mean_us: lat.map(|l| l.mean_us),
            lat_max_us: lat.map(|l| l.max_us),
            backend_cpu_s,
            backend_cpu_s_per_gib: cpu_per_gib(backend_cpu_s, raw.bytes),
            frontend_cpu_s,
            vs_qsd: Ratios::default(),
            note: raw.note,
            label: None,
            round: 0,
        }
    }

    /// Name for the peer column: the label if any, else the peer kind.
    pub fn peer_name(&self) -> &str {
        self.label.as_deref().unwrap_or(self.peer.name())
    }

    /// Every request completed with status OK and every read matched.
    pub fn ok(&self) -> bool {
        self.completed == self.submitted && self.errors == 0 && self.read_mismatches == 0
    }
}

/// One started peer (a peer × queue count).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct InstanceReport {
    /// Peer.
    pub peer: PeerKind,
    /// Queues.
    pub queues: u16,
    /// Command line used.
    pub cmdline: String,
    /// Max transfer per request the frontend used.
    pub max_io: usize,
    /// Whole-disk read-back through the peer.
    pub verify: Option<Verify>,
    /// Blocks of the image file checked on the host after the peer stopped.
    pub image_blocks_checked: u64,
    /// Blocks of the image file that differ from what was written.
    pub image_mismatches: u64,
    /// Size of the write log (blkrec log, blklogwrites log) at the end.
    pub log_bytes: Option<u64>,
    /// How the peer process ended.
    pub exit: Option<String>,
    /// `not available: …` / `failed: …`.
    pub error: Option<String>,
    /// A backend behind `--socket`: its image is not ours, so there is no host-side check
    /// and no log size.
    #[serde(default)]
    pub external: bool,
    /// Name shown in the peer column instead of the peer kind's (`--socket-name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Which round (`--rounds`) started this instance, from 0.
    #[serde(default)]
    pub round: u32,
}

impl InstanceReport {
    /// An empty record.
    pub fn new(peer: PeerKind, queues: u16) -> Self {
        InstanceReport {
            peer,
            queues,
            cmdline: String::new(),
            max_io: 0,
            verify: None,
            image_blocks_checked: 0,
            image_mismatches: 0,
            log_bytes: None,
            exit: None,
            error: None,
            external: peer == PeerKind::External,
            label: None,
            round: 0,
        }
    }

    /// Name for the peer column: the label if any, else the peer kind.
    pub fn peer_name(&self) -> &str {
        self.label.as_deref().unwrap_or(self.peer.name())
    }

    /// Verified without a single difference, through the peer and on the host (an external
    /// backend: through the peer only).
    pub fn verified(&self) -> bool {
        self.error.is_none()
            && self.image_mismatches == 0
            && (self.image_blocks_checked > 0 || self.external)
            && self
                .verify
                .as_ref()
                .is_some_and(|v| v.mismatches == 0 && v.errors == 0 && v.blocks_checked > 0)
    }
}

/// The whole run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Image size; for an external backend its device's capacity (rounded down, 0 if never
    /// connected; the exact size is in the instance's cmdline).
    pub size_mib: u64,
    /// Seconds per workload (if time-limited).
    pub duration_s: Option<f64>,
    /// Requests per workload (if count-limited).
    pub ops: Option<u64>,
    /// RNG seed.
    pub seed: u64,
    /// blkrec executable.
    pub blkrec: Option<String>,
    /// qemu-storage-daemon executable and version.
    pub qsd: Option<String>,
    /// Working directory.
    pub dir: String,
    /// CPUs online.
    pub cpus: usize,
    /// The external backend's socket (`--socket`), if that is what was driven.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    /// Rounds run (`--rounds`): each round starts every peer once, in turn.
    #[serde(default = "one")]
    pub rounds: u32,
    /// Peer instances.
    pub instances: Vec<InstanceReport>,
    /// Measurements, every round's.
    pub results: Vec<RunResult>,
    /// With more than one round: one entry per (peer, workload, queues) holding the median of
    /// each figure over the rounds, and in `vs_qsd` the median of the per-round ratios.
    /// Counts (submitted, completed, errors, ...) are sums; `round` is the number of rounds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub medians: Vec<RunResult>,
}

fn one() -> u32 {
    1
}

impl Report {
    /// An empty report for `cfg`.
    pub fn new(
        cfg: &BenchConfig,
        blkrec: Option<&BlkrecBin>,
        qsd: Option<&Path>,
        dir: &Path,
    ) -> Self {
        let (duration_s, ops) = match cfg.limit {
            Limit::Duration(d) => (Some(d.as_secs_f64()), None),
            Limit::Ops(n) => (None, Some(n)),
        };
        Report {
            size_mib: cfg.size_mib,
            duration_s,
            ops,
            seed: cfg.seed,
            blkrec: blkrec.map(BlkrecBin::describe),
            qsd: qsd.map(|q| {
                let v = crate::peer::qsd_version(q).unwrap_or_else(|| "version unknown".into());
                format!("{} ({v})", q.display())
            }),
            dir: dir.display().to_string(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            socket: None,
            rounds: cfg.rounds.max(1),
            instances: Vec::new(),
            results: Vec::new(),
            medians: Vec::new(),
        }
    }

    /// Fills `vs_qsd` of every result from the qsd result of the same workload, queues and
    /// round, then (with more than one round) the medians.
    pub fn compute_ratios(&mut self) {
        let base: Vec<RunResult> = self
            .results
            .iter()
            .filter(|r| r.peer == PeerKind::Qsd)
            .cloned()
            .collect();
        for r in &mut self.results {
            let Some(b) = base
                .iter()
                .find(|b| b.workload == r.workload && b.queues == r.queues && b.round == r.round)
            else {
                continue;
            };
            r.vs_qsd = Ratios {
                iops: ratio(Some(r.iops), Some(b.iops)),
                mib_s: ratio(Some(r.mib_s), Some(b.mib_s)),
                lat_p50: ratio(r.lat_p50_us, b.lat_p50_us),
                lat_p99: ratio(r.lat_p99_us, b.lat_p99_us),
                cpu_per_gib: ratio(r.backend_cpu_s_per_gib, b.backend_cpu_s_per_gib),
            };
        }
        self.medians = if self.rounds > 1 {
            self.summarize_rounds()
        } else {
            Vec::new()
        };
    }

    /// One median entry per (peer, workload, queues), in first-seen order. The ratio medians
    /// are taken over the per-round ratios: each round's peers ran back to back, so that
    /// ratio is the least disturbed by the machine drifting between rounds.
    fn summarize_rounds(&self) -> Vec<RunResult> {
        let mut out: Vec<RunResult> = Vec::new();
        for r in &self.results {
            let same = |x: &RunResult| {
                x.peer == r.peer
                    && x.label == r.label
                    && x.workload == r.workload
                    && x.queues == r.queues
            };
            if out.iter().any(same) {
                continue;
            }
            let g: Vec<&RunResult> = self.results.iter().filter(|x| same(x)).collect();
            let med = |f: &dyn Fn(&RunResult) -> Option<f64>| median(g.iter().map(|x| f(x)));
            let mut m = r.clone();
            m.round = g.len() as u32;
            m.submitted = g.iter().map(|x| x.submitted).sum();
            m.completed = g.iter().map(|x| x.completed).sum();
            m.errors = g.iter().map(|x| x.errors).sum();
            m.read_mismatches = g.iter().map(|x| x.read_mismatches).sum();
            m.data_requests = g.iter().map(|x| x.data_requests).sum();
            m.flushes = g.iter().map(|x| x.flushes).sum();
            m.bytes = g.iter().map(|x| x.bytes).sum();
            m.elapsed_s = g.iter().map(|x| x.elapsed_s).sum();
            m.backend_cpu_s = g.iter().map(|x| x.backend_cpu_s).sum();
            m.frontend_cpu_s = g.iter().map(|x| x.frontend_cpu_s).sum();
            m.iops = med(&|x| Some(x.iops)).unwrap_or(0.0);
            m.mib_s = med(&|x| Some(x.mib_s)).unwrap_or(0.0);
            m.lat_p50_us = med(&|x| x.lat_p50_us);
            m.lat_p99_us = med(&|x| x.lat_p99_us);
            m.lat_mean_us = med(&|x| x.lat_mean_us);
            m.lat_max_us = med(&|x| x.lat_max_us);
            m.backend_cpu_s_per_gib = med(&|x| x.backend_cpu_s_per_gib);
            m.vs_qsd = Ratios {
                iops: med(&|x| x.vs_qsd.iops),
                mib_s: med(&|x| x.vs_qsd.mib_s),
                lat_p50: med(&|x| x.vs_qsd.lat_p50),
                lat_p99: med(&|x| x.vs_qsd.lat_p99),
                cpu_per_gib: med(&|x| x.vs_qsd.cpu_per_gib),
            };
            out.push(m);
        }
        out
    }

    /// Every result correct, every instance verified (a blklogwrites peer that is not
    /// available does not count as a failure).
    pub fn all_ok(&self) -> bool {
        self.results.iter().all(RunResult::ok)
            && self.instances.iter().all(|i| {
                i.verified()
                    || i.error
                        .as_deref()
                        .is_some_and(|e| e.starts_with("not available"))
            })
    }

    /// The Markdown rendering.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let limit = match (self.duration_s, self.ops) {
            (Some(d), _) => format!("{d} s per workload"),
            (_, Some(n)) => format!("{n} requests per workload"),
            _ => String::new(),
        };
        match &self.socket {
            None => {
                let _ = writeln!(
                    s,
                    "## e4race-bench: {} MiB image, {limit}, {} CPUs\n",
                    self.size_mib, self.cpus
                );
            }
            Some(socket) => {
                let size = if self.size_mib > 0 {
                    format!("{} MiB device", self.size_mib)
                } else {
                    "device size unknown".to_owned()
                };
                let _ = writeln!(
                    s,
                    "## e4race-bench: external backend, {size}, {limit}, {} CPUs\n",
                    self.cpus
                );
                let _ = writeln!(
                    s,
                    "- socket: `{socket}` (filled with the pattern first; no host-side image check, no log size)"
                );
                if !self.results.is_empty()
                    && self
                        .results
                        .iter()
                        .all(|r| r.backend_cpu_s_per_gib.is_none())
                {
                    let _ = writeln!(s, "- CPU: not measured (no --socket-pid)");
                }
            }
        }
        if let Some(b) = &self.blkrec {
            let _ = writeln!(s, "- blkrec: `{b}`");
        }
        if let Some(q) = &self.qsd {
            let _ = writeln!(s, "- qsd: `{q}`");
        }
        if self.rounds > 1 {
            let _ = writeln!(
                s,
                "- {} rounds, each starting every peer once, in turn. cells: the median over the rounds (the median of the per-round ratios to qsd); every round's numbers are in the JSON.",
                self.rounds
            );
        }
        let _ = writeln!(
            s,
            "- cells: value (ratio to qsd, same workload and queues). IOPS and MiB/s: higher is better; latency and CPU/GiB: lower is better.\n- QD is per queue; latency is submit → completion of every request; CPU is the backend process's utime+stime.\n"
        );
        let _ = writeln!(
            s,
            "| workload | q | peer | IOPS | MiB/s | p50 µs | p99 µs | CPU s/GiB | ok |"
        );
        let _ = writeln!(s, "|---|---:|---|---:|---:|---:|---:|---:|---|");
        let shown = if self.medians.is_empty() {
            &self.results
        } else {
            &self.medians
        };
        let mut rows: Vec<&RunResult> = shown.iter().collect();
        let wl_idx = |w: Workload| Workload::ALL.iter().position(|&x| x == w);
        let peer_idx = |p: PeerKind| PeerKind::ALL.iter().position(|&x| x == p);
        rows.sort_by_key(|r| (wl_idx(r.workload), r.queues, peer_idx(r.peer)));
        for r in rows {
            let ok = if r.ok() {
                "yes".to_owned()
            } else {
                format!(
                    "**NO**: {}/{} done, {} errors, {} bad reads",
                    r.completed, r.submitted, r.errors, r.read_mismatches
                )
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {}{} |",
                r.workload,
                r.queues,
                r.peer_name(),
                cell(Some(r.iops), r.vs_qsd.iops, 0),
                cell(Some(r.mib_s), r.vs_qsd.mib_s, 1),
                cell(r.lat_p50_us, r.vs_qsd.lat_p50, 1),
                cell(r.lat_p99_us, r.vs_qsd.lat_p99, 1),
                cell(r.backend_cpu_s_per_gib, r.vs_qsd.cpu_per_gib, 2),
                ok,
                r.note
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            );
        }
        let (round_head, round_rule) = if self.rounds > 1 {
            (" round |", "---:|")
        } else {
            ("", "")
        };
        let _ = writeln!(
            s,
            "\n| peer | q |{round_head} status | verify (read back via peer) | image file on host | log size |"
        );
        let _ = writeln!(s, "|---|---:|{round_rule}---|---|---|---:|");
        for i in &self.instances {
            let status = i.error.clone().unwrap_or_else(|| "ok".into());
            let verify = match &i.verify {
                Some(v) => format!(
                    "{} blocks, {} rewritten, {} mismatches, {} errors",
                    v.blocks_checked, v.blocks_rewritten, v.mismatches, v.errors
                ),
                None => "-".into(),
            };
            let image = if i.external {
                "n/a (external)".into()
            } else if i.image_blocks_checked > 0 {
                format!(
                    "{} blocks, {} mismatches",
                    i.image_blocks_checked, i.image_mismatches
                )
            } else {
                "-".into()
            };
            let log = match i.log_bytes {
                _ if i.external => "n/a (external)".into(),
                Some(b) => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
                None => "-".into(),
            };
            let _ = writeln!(
                s,
                "| {} | {} |{} {} | {verify} | {image} | {log} |",
                i.peer_name(),
                i.queues,
                if self.rounds > 1 {
                    format!(" {} |", i.round + 1)
                } else {
                    String::new()
                },
                status.replace('|', "\\|")
            );
        }
        s
    }
}

fn cell(v: Option<f64>, r: Option<f64>, decimals: usize) -> String {
    match (v, r) {
        (None, _) => "-".into(),
        (Some(v), Some(r)) => format!("{v:.decimals$} ({r:.2}×)"),
        (Some(v), None) => format!("{v:.decimals$}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn raw(completed: u64, bytes: u64, lat: Vec<u64>) -> RawResult {
        RawResult {
            submitted: completed,
            completed,
            data_requests: completed,
            bytes,
            elapsed: Duration::from_secs(2),
            latencies_ns: lat,
            ..RawResult::default()
        }
    }

    #[test]
    fn ratios_against_qsd() {
        let cfg = BenchConfig::default();
        let mut rep = Report::new(&cfg, None, None, Path::new("/tmp"));
        let w = Workload::RandWrite4kQd1;
        rep.results.push(RunResult::from_raw(
            PeerKind::Qsd,
            w,
            1,
            raw(2000, 2000 * 4096, vec![10_000, 20_000]),
            1.0,
            0.0,
        ));
        rep.results.push(RunResult::from_raw(
            PeerKind::BlkrecHash,
            w,
            1,
            raw(1000, 1000 * 4096, vec![20_000, 80_000]),
            1.0,
            0.0,
        ));
        // Different queue count: no qsd baseline.
        rep.results.push(RunResult::from_raw(
            PeerKind::BlkrecHash,
            w,
            2,
            raw(1000, 1000 * 4096, vec![1]),
            1.0,
            0.0,
        ));
        rep.compute_ratios();
        let q = &rep.results[0];
        assert_eq!(q.iops, 1000.0);
        assert_eq!(q.vs_qsd.iops, Some(1.0));
        let b = &rep.results[1];
        assert_eq!(b.iops, 500.0);
        assert_eq!(b.vs_qsd.iops, Some(0.5));
        assert_eq!(b.vs_qsd.mib_s, Some(0.5));
        assert_eq!(b.vs_qsd.lat_p50, Some(2.0));
        assert_eq!(b.vs_qsd.lat_p99, Some(4.0));
        // Same CPU for half the bytes: twice the CPU per GiB.
        assert_eq!(b.vs_qsd.cpu_per_gib, Some(2.0));
        assert_eq!(rep.results[2].vs_qsd, Ratios::default());
        let md = rep.markdown();
        assert!(md.contains("| randwrite-4k-qd1 | 1 | blkrec-hash | 500 (0.50×) |"));
        assert!(rep.all_ok());
    }

    #[test]
    fn rounds_show_medians_of_per_round_ratios() {
        let cfg = BenchConfig {
            rounds: 3,
            ..BenchConfig::default()
        };
        let mut rep = Report::new(&cfg, None, None, Path::new("/tmp"));
        let w = Workload::SeqWrite1mQd4;
        // (qsd completions, blkrec completions) per round, over 2 s each. Round 2 is a slow
        // spell for both: the per-round ratios are 0.5, 0.5 and 2.0.
        for (round, (q, b)) in [(4000u64, 2000u64), (400, 200), (1000, 2000)]
            .into_iter()
            .enumerate()
        {
            for (peer, n) in [(PeerKind::Qsd, q), (PeerKind::BlkrecHash, b)] {
                let mut r = RunResult::from_raw(peer, w, 1, raw(n, n << 20, vec![1000]), 1.0, 0.0);
                r.round = round as u32;
                rep.results.push(r);
            }
        }
        rep.compute_ratios();
        assert_eq!(rep.medians.len(), 2);
        let b = rep
            .medians
            .iter()
            .find(|m| m.peer == PeerKind::BlkrecHash)
            .unwrap();
        // Median IOPS of 1000, 100, 1000; median ratio of 0.5, 0.5, 2.0.
        assert_eq!(b.iops, 1000.0);
        assert_eq!(b.vs_qsd.iops, Some(0.5));
        assert_eq!((b.round, b.completed), (3, 4200));
        let md = rep.markdown();
        assert!(md.contains("3 rounds"), "{md}");
        assert!(
            md.contains("| seqwrite-1m-qd4 | 1 | blkrec-hash | 1000 (0.50×) |"),
            "{md}"
        );
        // One row per peer, not per round.
        assert_eq!(
            md.matches("| seqwrite-1m-qd4 | 1 | blkrec-hash |").count(),
            1
        );
        // An error in any round shows in the summary row.
        rep.results[1].errors = 1;
        rep.compute_ratios();
        assert!(rep.markdown().contains("**NO**"));
    }

    #[test]
    fn median_of_present_values() {
        assert_eq!(median([Some(3.0), None, Some(1.0), Some(2.0)]), Some(2.0));
        assert_eq!(median([Some(4.0), Some(1.0)]), Some(2.5));
        assert_eq!(median([None, Some(f64::NAN)]), None);
    }
}
