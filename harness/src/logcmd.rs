//! `e4race log show|stats|export` and `e4race replay`: reading a run's write log.

use std::path::PathBuf;

use clap::Subcommand;
use writelog::{LogPosition, LogReader};

#[derive(Debug, Subcommand)]
pub enum LogCmd {
    /// One line per record: seq, time, queue, kind, sector range, flags, block hashes or mark.
    Show {
        /// A run's writes.log (or the run directory).
        log: PathBuf,
    },
    /// Counts by kind, bytes written, sectors touched, flushes and marks.
    Stats { log: PathBuf },
    /// Convert to dm-log-writes v1, the format fstests' replay-log reads (needs a log recorded with data).
    Export { log: PathBuf, out: PathBuf },
}

fn resolve(p: PathBuf) -> PathBuf {
    if p.is_dir() {
        p.join("writes.log")
    } else {
        p
    }
}

pub fn log(cmd: LogCmd) -> i32 {
    let r = (|| -> Result<(), String> {
        match cmd {
            LogCmd::Show { log } => {
                let mut rd = LogReader::open(resolve(log)).map_err(|e| e.to_string())?;
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                writelog::show(&mut rd, &mut out).map_err(|e| e.to_string())?;
                if rd.discarded_bytes() > 0 {
                    eprintln!(
                        "note: {} trailing bytes of a cut-short record were ignored",
                        rd.discarded_bytes()
                    );
                }
            }
            LogCmd::Stats { log } => {
                let mut rd = LogReader::open(resolve(log)).map_err(|e| e.to_string())?;
                let s = writelog::stats(&mut rd).map_err(|e| e.to_string())?;
                print!("{s}");
            }
            LogCmd::Export { log, out } => {
                let s = writelog::export_dm_log_writes(resolve(log), &out)
                    .map_err(|e| e.to_string())?;
                println!("wrote {} ({s:?})", out.display());
            }
        }
        Ok(())
    })();
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            4
        }
    }
}

/// plan.json's `disk_mib`, in bytes.
fn planned_disk_bytes(plan: &std::path::Path) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(plan).ok()?).ok()?;
    v.get("disk_mib")?.as_u64()?.checked_mul(1 << 20)
}

/// Rebuilds the disk as it was at `stop` (parsed by clap from `--to`), onto a fresh zero
/// image of `size` bytes (runs start from an empty sparse image), or onto a copy of `--base`.
pub fn replay(
    log: PathBuf,
    stop: &LogPosition,
    out: PathBuf,
    base: Option<PathBuf>,
    size: Option<u64>,
    drop: &[u64],
) -> i32 {
    let r = (|| -> Result<String, String> {
        let log = resolve(log);
        match base {
            Some(b) => {
                std::fs::copy(&b, &out).map_err(|e| format!("copying {}: {e}", b.display()))?;
            }
            None => {
                let size = match size {
                    Some(s) => s,
                    None => {
                        // Default: the size of the run's own disk.img, if it is still there,
                        // else the disk size its plan.json recorded.
                        let img = log.with_file_name("disk.img");
                        std::fs::metadata(&img)
                            .map(|m| m.len())
                            .ok()
                            .or_else(|| planned_disk_bytes(&log.with_file_name("plan.json")))
                            .ok_or_else(|| {
                                "give --size BYTES (the run's disk.img and plan.json are gone) or --base IMAGE"
                                    .to_string()
                            })?
                    }
                };
                let f =
                    std::fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?;
                f.set_len(size)
                    .map_err(|e| format!("{}: {e}", out.display()))?;
            }
        }
        let s = writelog::replay_dropping(&log, &out, stop, drop).map_err(|e| e.to_string())?;
        Ok(format!(
            "replayed {} records ({} writes, {} zeroed ranges) into {}",
            s.entries,
            s.writes,
            s.zeroed,
            out.display()
        ))
    })();
    match r {
        Ok(m) => {
            println!("{m}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            4
        }
    }
}
