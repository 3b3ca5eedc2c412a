//! Loading a run directory: report.json, workload.json, e2fsck.txt, the run id.

use std::collections::{BTreeSet, HashMap, HashSet};

use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::xxh3_64;

use e4race_protocol::{BlockContent, BlockTag, RaceResult, RoundRecord};
use e4race_report::{FindingClass, Report};
use oracles::{E2fsckReport, FsckFinding, LostBlock, Sign};

use crate::attribution::{self, Evidence, LogScan, RunIdSource, UnownedBlocks};
use crate::{Error, Result};

/// A run directory, loaded.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub dir: PathBuf,
    pub report: Report,
    /// workload.json, when the scenario had one.
    pub workload: Option<RaceResult>,
    /// Every data-loss finding that names a block.
    pub lost: Vec<LostBlock>,
    /// Data-loss findings for whole files (missing or unreadable).
    pub file_losses: usize,
    /// e2fsck.txt, parsed.
    pub fsck: Option<E2fsckReport>,
    pub run_id: Option<u64>,
    pub run_id_source: Option<RunIdSource>,
    /// crash.json, when crash states were checked (`--crash-states`, `e4race crash`).
    pub crash: Option<crash::CrashReport>,
    /// What could not be loaded (the rest still was).
    pub warnings: Vec<String>,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl RunDir {
    /// Loads `dir`. Only report.json is required.
    pub fn load(dir: &Path) -> Result<RunDir> {
        let rp = dir.join("report.json");
        let report = Report::read(&rp)?;
        let mut warnings = vec![];
        let wp = dir.join("workload.json");
        let workload = if wp.is_file() {
            match read(&wp).and_then(|t| {
                serde_json::from_str::<RaceResult>(&t)
                    .map_err(|source| Error::Json { path: wp, source })
            }) {
                Ok(w) => Some(w),
                Err(e) => {
                    warnings.push(e.to_string());
                    None
                }
            }
        } else {
            None
        };
        let lost: Vec<LostBlock> = report
            .findings
            .iter()
            .filter_map(|f| f.lost_block().cloned())
            .collect();
        let file_losses = report
            .findings
            .iter()
            .filter(|f| f.class() == FindingClass::DataLoss && f.lost_block().is_none())
            .count();
        let cp = dir.join("crash.json");
        let crash = if cp.is_file() {
            match read(&cp).and_then(|t| {
                serde_json::from_str::<crash::CrashReport>(&t)
                    .map_err(|source| Error::Json { path: cp, source })
            }) {
                Ok(c) => Some(c),
                Err(e) => {
                    warnings.push(e.to_string());
                    None
                }
            }
        } else {
            None
        };
        let fsck = match std::fs::read_to_string(dir.join("e2fsck.txt")) {
            Ok(t) => Some(parse_e2fsck_txt(&t)),
            Err(_) => None,
        };
        let mut run = RunDir {
            dir: dir.to_path_buf(),
            report,
            workload,
            lost,
            file_losses,
            fsck,
            run_id: None,
            run_id_source: None,
            crash,
            warnings,
        };
        (run.run_id, run.run_id_source) = match run.find_run_id() {
            Some((id, src)) => (Some(id), Some(src)),
            None => (None, None),
        };
        Ok(run)
    }

    /// The rounds of the workload (empty without workload.json).
    pub fn rounds(&self) -> &[RoundRecord] {
        self.workload.as_ref().map_or(&[], |w| &w.rounds)
    }

    /// report.json's run_id; else the workload request in agent.jsonl; else the tag of an
    /// acknowledged block read back from disk.img.
    fn find_run_id(&self) -> Option<(u64, RunIdSource)> {
        if let Some(id) = self.report.run_id {
            return Some((id, RunIdSource::Report));
        }
        if let Ok(text) = std::fs::read_to_string(self.dir.join("agent.jsonl")) {
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if v.get("cmd").is_some() {
                    if let Some(id) = v.get("run_id").and_then(serde_json::Value::as_u64) {
                        return Some((id, RunIdSource::AgentLog));
                    }
                }
            }
        }
        let img = ext4_reader::Ext4Image::open(self.dir.join("disk.img")).ok()?;
        for r in self.rounds() {
            for f in &r.files {
                let Ok(ino) = img.lookup(&f.path) else {
                    continue;
                };
                for &lblk in f.prefilled.iter().take(8) {
                    if let Ok(ext4_reader::BlockRead::Data { bytes, .. }) =
                        img.read_block(ino, lblk)
                    {
                        if let BlockContent::Tagged(t) = BlockTag::decode(&bytes) {
                            return Some((t.run_id, RunIdSource::ImageTag));
                        }
                    }
                }
            }
        }
        None
    }

    /// Blocks allocated in the bitmap but owned by no inode: e2fsck's `-` block bitmap
    /// differences when e2fsck.txt is there, else the host ext4 reader's accounting of
    /// disk.img, else nothing.
    pub fn unowned_blocks(&self) -> UnownedBlocks {
        if let Some(f) = &self.fsck {
            let mut blocks = BTreeSet::new();
            for finding in &f.findings {
                if let FsckFinding::BlockBitmapDifferences { ranges } = finding {
                    for r in ranges.iter().filter(|r| r.sign == Sign::Minus) {
                        // Ranges come from a text file: bound the expansion.
                        let end = r.end.min(r.start.saturating_add(1 << 24));
                        blocks.extend(r.start..=end);
                    }
                }
            }
            return UnownedBlocks {
                source: "e2fsck".into(),
                blocks: Some(blocks),
            };
        }
        let img = self.dir.join("disk.img");
        if img.is_file() {
            if let Ok(acc) = ext4_reader::Ext4Image::open(&img).and_then(|i| i.block_accounting()) {
                return UnownedBlocks {
                    source: "ext4-reader".into(),
                    blocks: Some(acc.leaked.into_iter().collect()),
                };
            }
        }
        UnownedBlocks {
            source: "none".into(),
            blocks: None,
        }
    }

    /// Scans the write log (for the timeline) and, when there are lost blocks, attributes
    /// each of them.
    pub fn evidence(&self, log: &Path) -> Result<(LogScan, Option<Evidence>)> {
        let Some(run_id) = self.run_id else {
            if self.lost.is_empty() {
                return Ok((attribution::scan_log(log, &Default::default())?, None));
            }
            return Err(Error::NoRunId(self.dir.clone()));
        };
        let mut wanted: HashSet<u64> = self
            .lost
            .iter()
            .map(|b| attribution::expected_hash(run_id, b))
            .collect();
        // The prefilled blocks' writes bound the clock alignment (see timeline).
        let mut prefill: HashMap<u64, u32> = HashMap::new();
        let mut stores: HashMap<u64, u64> = HashMap::new();
        for r in self.rounds() {
            for f in &r.files {
                for &lblk in &f.prefilled {
                    let tag = BlockTag {
                        run_id,
                        file_id: f.file_id,
                        round: r.round,
                        lblk,
                        generation: 0,
                    };
                    prefill.insert(xxh3_64(&tag.to_block()[..]), r.round);
                }
                for (&lblk, &t) in f.hole_lblks.iter().zip(&f.hole_t_ns) {
                    let tag = BlockTag {
                        run_id,
                        file_id: f.file_id,
                        round: r.round,
                        lblk,
                        generation: 0,
                    };
                    stores.insert(xxh3_64(&tag.to_block()[..]), t);
                }
            }
        }
        wanted.extend(prefill.keys().copied());
        wanted.extend(stores.keys().copied());
        let mut scan = attribution::scan_log(log, &wanted)?;
        for (h, round) in &prefill {
            // The first write of a prefilled block is the one its fsync waited for.
            if let Some(first) = scan.hits.get(h).and_then(|v| v.first()) {
                let e = scan.prefill_synced_ns.entry(*round).or_insert(0);
                *e = (*e).max(first.time_ns);
            }
        }
        for (h, &t) in &stores {
            if let Some(first) = scan.hits.get(h).and_then(|v| v.first()) {
                let slack = i64::try_from(first.time_ns).unwrap_or(i64::MAX)
                    - i64::try_from(t).unwrap_or(i64::MAX);
                let m = scan.store_to_write_min_ns.get_or_insert(slack);
                *m = (*m).min(slack);
            }
        }
        if self.lost.is_empty() {
            return Ok((scan, None));
        }
        let img = self.dir.join("disk.img");
        let img = img.is_file().then_some(img.as_path());
        let unowned = self.unowned_blocks();
        let mut ev = attribution::attribute(&self.lost, run_id, &scan, &unowned, img);
        ev.run_id_source = self.run_id_source;
        ev.file_losses = self.file_losses;
        ev.attach_store_times(self.rounds());
        Ok((scan, Some(ev)))
    }
}

/// e2fsck.txt as the harness writes it: `exit code N`, then e2fsck's output.
pub fn parse_e2fsck_txt(text: &str) -> E2fsckReport {
    let (code, rest) = match text.split_once('\n') {
        Some((first, rest)) if first.starts_with("exit code ") => (
            first["exit code ".len()..].trim().parse().unwrap_or(-1),
            rest,
        ),
        _ => (-1, text),
    };
    oracles::parse_e2fsck_output(code, rest)
}
