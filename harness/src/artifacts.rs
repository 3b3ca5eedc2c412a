//! `e4race report` and `e4race inspect`, and the report.html / junit.xml / evidence.json
//! every run writes (crates/forensics does the work).

use std::path::{Path, PathBuf};

/// Writes report.html, junit.xml and (when there are lost blocks and a write log)
/// evidence.json into a finished run's directory. Failures are warnings on stderr: they
/// never change the verdict.
pub fn write_artifacts(dir: &Path) {
    // A bug in the report code must not take the verdict down with it.
    let r = std::panic::catch_unwind(|| forensics::write_artifacts(dir));
    match r.unwrap_or_else(|_| {
        Err(forensics::Error::Other(
            "the report generator panicked (a bug: please report it with the run directory)".into(),
        ))
    }) {
        Ok(a) => {
            for w in &a.warnings {
                eprintln!("warning: report artifacts: {w}");
            }
        }
        Err(e) => eprintln!("warning: report artifacts not written: {e}"),
    }
}

/// `e4race report RUN_DIR`: re-generates the artifacts and says what it wrote.
pub fn report_cmd(dir: &Path) -> i32 {
    match forensics::write_artifacts(dir) {
        Ok(a) => {
            for w in &a.warnings {
                eprintln!("warning: {w}");
            }
            for p in [&a.html, &a.junit, &a.evidence].into_iter().flatten() {
                println!("wrote {}", p.display());
            }
            if let Some(p) = &a.evidence {
                if let Ok(ev) = std::fs::read_to_string(p)
                    .map_err(|e| e.to_string())
                    .and_then(|t| {
                        serde_json::from_str::<forensics::Evidence>(&t).map_err(|e| e.to_string())
                    })
                {
                    let c = &ev.summary;
                    println!(
                        "{} lost blocks: {} orphaned writes ({} on blocks allocated but owned by no inode, per {}), {} in place, {} never written",
                        c.lost_blocks,
                        c.orphaned_write,
                        c.orphaned_on_unowned,
                        ev.unowned.source,
                        c.in_place,
                        c.never_written
                    );
                }
            }
            if a.html.is_none() || a.junit.is_none() {
                4
            } else {
                0
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            4
        }
    }
}

/// `e4race inspect RUN_DIR --file PATH [--at POSITION] [--json]`.
pub fn inspect_cmd(
    dir: PathBuf,
    file: &str,
    at: Option<&writelog::LogPosition>,
    json: bool,
) -> i32 {
    match forensics::inspect(&dir, file, at) {
        Ok(m) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
            } else {
                print!("{}", forensics::format_mapping(&m));
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            4
        }
    }
}
