//! `report.html`: one self-contained page (no scripts, no external assets) with the verdict,
//! the findings grouped per file, the reproduce command, the attribution of lost blocks and
//! an SVG timeline per round.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::attribution::{Attribution, BlockEvidence, Evidence, LogScan};
use crate::rundir::RunDir;
use crate::timeline::{self, Alignment, RoundTimeline};
use e4race_report::Finding;

/// Lost blocks listed per file before the rest is only counted.
pub const BLOCKS_PER_FILE: usize = 40;
/// Findings of the other classes listed before the rest is only counted.
pub const OTHERS_PER_CLASS: usize = 60;

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

const CSS: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1340px;color:#1d232a;padding:0 16px}
h1{font-size:22px;margin:0 0 6px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d8dde3;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
.verdict{display:inline-block;padding:3px 10px;border-radius:4px;color:#fff;font-weight:700;letter-spacing:.5px}
.v-PASS{background:#2e7d32}.v-BUG-FOUND{background:#c62828}.v-KERNEL-ERROR{background:#6a1b9a}.v-INFRA-ERROR{background:#ef6c00}.v-other{background:#555}
table{border-collapse:collapse;margin:6px 0} td,th{border:1px solid #d8dde3;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f2f4f7} td.n{text-align:right;font-variant-numeric:tabular-nums}
pre,code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace} pre{background:#f5f7f9;border:1px solid #d8dde3;padding:8px;overflow-x:auto;white-space:pre-wrap}
details{margin:4px 0} summary{cursor:pointer}
.meta td:first-child{color:#555;white-space:nowrap}
.note{color:#555;font-size:13px} .bad{color:#c62828;font-weight:600} .ok{color:#2e7d32}
svg{background:#fff;border:1px solid #d8dde3;margin:4px 0}
";

/// Renders the page. `ev` and `scan` are optional: without them the page has no attribution
/// and a guest-only timeline.
pub fn render(run: &RunDir, ev: Option<&Evidence>, scan: Option<&LogScan>) -> String {
    let r = &run.report;
    let mut h = String::new();
    let title = format!(
        "{} {} on {}{}",
        r.verdict,
        r.scenario,
        r.kernel_label(),
        r.mutant
            .as_ref()
            .map(|m| format!(" (mutant {m})"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>e4race: {}</title>\
         <style>{CSS}</style></head><body>",
        esc(&title)
    );
    let vclass = format!("v-{}", r.verdict);
    let _ = writeln!(
        h,
        "<h1>e4race: <span class=\"verdict {vclass}\">{}</span> {}</h1>",
        esc(&r.verdict_label()),
        esc(&r.scenario)
    );
    h.push_str(&headline(run, ev));
    h.push_str("<table class=\"meta\">");
    let mut row = |k: &str, v: &str| {
        let _ = write!(h, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(v));
    };
    row(
        "kernel",
        &format!("{} ({})", r.kernel_label(), r.kernel.origin),
    );
    if let Some(m) = &r.mutant {
        row("mutant", m);
    }
    row("accelerator", &r.accel);
    row("disk backend", &r.disk_backend);
    if let Some(s) = r.seed {
        row("seed", &s.to_string());
    }
    if let Some(id) = run.run_id {
        row("run id (block tags)", &id.to_string());
    }
    row("started", &r.started_at);
    row("duration", &format!("{:.1} s", r.duration_s));
    row("run directory", &run.dir.display().to_string());
    if let Some(e) = &r.error {
        row("error", e);
    }
    h.push_str("</table>\n");
    let _ = writeln!(h, "<h2>Reproduce</h2><pre>{}</pre>", esc(&r.reproduce));
    if let Some(ex) = &r.exercise {
        h.push_str("<h2>What was exercised</h2><table>");
        for (k, v) in ex.lines() {
            let _ = write!(h, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(&v));
        }
        h.push_str("</table>\n");
    }
    if let Some(ev) = ev {
        h.push_str(&attribution_section(ev));
    }
    h.push_str(&timeline_section(run, ev, scan));
    h.push_str(&findings_section(run, ev));
    if let Some(f) = &run.fsck {
        let _ = writeln!(
            h,
            "<h2>e2fsck</h2><details><summary>exit code {}, {} findings, {} blocks allocated but owned by no inode</summary><pre>{}</pre></details>",
            f.exit_code,
            f.findings.len(),
            f.leaked_blocks(),
            esc(&f.output)
        );
    }
    h.push_str(
        "<p class=\"note\">Generated by <code>e4race report</code> from the run directory; \
                evidence.json holds the attribution of every lost block.</p>\n</body></html>\n",
    );
    h
}

fn headline(run: &RunDir, ev: Option<&Evidence>) -> String {
    let mut by_class: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &run.report.findings {
        *by_class.entry(f.class().as_str()).or_default() += 1;
    }
    let mut s = String::from("<p>");
    if by_class.is_empty() {
        s.push_str("No findings.");
    } else {
        let parts: Vec<String> = by_class.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let _ = write!(s, "<b>Findings:</b> {}.", esc(&parts.join(", ")));
    }
    if let Some(ev) = ev {
        let c = &ev.summary;
        let _ = write!(
            s,
            " <b>Every lost block attributed:</b> {} orphaned writes ({} on blocks allocated but owned by no inode), {} in place, {} never written.",
            c.orphaned_write, c.orphaned_on_unowned, c.in_place, c.never_written
        );
    }
    s.push_str("</p>\n");
    s
}

fn attribution_section(ev: &Evidence) -> String {
    let c = &ev.summary;
    let mut h = String::from("<h2>Where the lost data went</h2>\n");
    let _ = write!(
        h,
        "<p>For each lost block the xxh3-64 of the tagged block the guest acknowledged was looked up \
         among the hashes blkrec logged for every write ({} records, {} writes, {} flushes, {} marks{}).</p>",
        ev.log.records,
        ev.log.writes,
        ev.log.flushes,
        ev.log.marks,
        if ev.log.has_data { ", with data" } else { ", hashes only" }
    );
    h.push_str("<table><tr><th>class</th><th>blocks</th><th>meaning</th></tr>");
    let unowned_src = match ev.unowned.source.as_str() {
        "e2fsck" => "e2fsck's “-” block bitmap differences",
        "ext4-reader" => "the host ext4 reader's block accounting of disk.img",
        _ => "nobody (no e2fsck.txt and no disk.img)",
    };
    let rows = [
        ("orphaned write", c.orphaned_write, "the data reached the disk, but the file's final mapping has a hole there or points elsewhere"),
        ("… on an unowned block", c.orphaned_on_unowned, "the block that holds the data is allocated but owned by no inode"),
        ("… on an owned block", c.orphaned_not_unowned, "the block is owned by some inode (or free)"),
        ("in place", c.in_place, "the data went where the file maps the block, and was overwritten later or is mapped unwritten"),
        ("never written", c.never_written, "no logged write carried the data"),
    ];
    for (k, n, m) in rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{n}</td><td>{}</td></tr>",
            esc(k),
            esc(m)
        );
    }
    h.push_str("</table>");
    let _ = writeln!(
        h,
        "<p class=\"note\">Unowned blocks according to {}: {}{}.</p>",
        esc(unowned_src),
        ev.unowned
            .blocks
            .map_or("unknown".to_string(), |n| n.to_string()),
        match (ev.unowned_explained, ev.unowned.blocks) {
            (Some(x), Some(_)) => format!("; {x} of them hold the data of a lost block"),
            _ => String::new(),
        }
        .as_str()
    );
    h
}

fn fmt_opt(v: Option<u64>) -> String {
    v.map_or("—".into(), |v| v.to_string())
}

fn block_row(b: &BlockEvidence) -> String {
    let (class, sector, pblk, seq, t, marks, unowned) = match &b.attribution {
        Attribution::NeverWritten => (
            "never written".to_string(),
            "—".into(),
            "—".into(),
            "—".into(),
            "—".into(),
            "—".into(),
            "—".into(),
        ),
        a @ (Attribution::OrphanedWrite(w) | Attribution::InPlace(w)) => (
            a.class().replace('-', " "),
            w.sector.to_string(),
            fmt_opt(w.pblk),
            w.seq.to_string(),
            format!("{:.3} s", w.time_ns as f64 / 1e9),
            format!(
                "{} … {}",
                w.after_mark.as_ref().map_or("start", |m| &m.name),
                w.before_mark.as_ref().map_or("end", |m| &m.name)
            ),
            match w.pblk_unowned {
                Some(true) => "<span class=\"bad\">yes</span>".to_string(),
                Some(false) => "no".into(),
                None => "?".into(),
            },
        ),
    };
    format!(
        "<tr><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
        b.lblk,
        esc(&b.found),
        fmt_opt(b.final_pblk),
        esc(&class),
        sector,
        pblk,
        seq,
        t,
        esc(&marks),
        unowned
    )
}

fn findings_section(run: &RunDir, ev: Option<&Evidence>) -> String {
    let mut h = String::from("<h2>Findings</h2>\n");
    if run.report.findings.is_empty() {
        h.push_str("<p>None.</p>\n");
        return h;
    }
    // One row per signature (a kind of finding): its count and known issue, if any.
    let mut by_sig: BTreeMap<&str, (usize, Option<&str>)> = BTreeMap::new();
    for f in &run.report.findings {
        let e = by_sig.entry(&f.signature).or_insert((0, None));
        e.0 += 1;
        if let Some(k) = &f.known_issue {
            e.1 = Some(k);
        }
    }
    h.push_str("<table><tr><th>signature</th><th>findings</th><th>known issue</th></tr>");
    for (sig, (n, known)) in &by_sig {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{n}</td><td>{}</td></tr>",
            esc(sig),
            known.map_or("— (new)".to_string(), esc)
        );
    }
    h.push_str("</table>\n");
    for id in &run.report.known_not_reproduced {
        let _ = writeln!(h, "<p>Known issue {}: not reproduced.</p>", esc(id));
    }
    // Lost blocks, per file.
    let mut per_file: BTreeMap<(u32, &str), Vec<usize>> = BTreeMap::new();
    for (i, b) in run.lost.iter().enumerate() {
        per_file.entry((b.round, &b.path)).or_default().push(i);
    }
    if !per_file.is_empty() {
        let _ = write!(
            h,
            "<h3>data-loss: {} lost blocks in {} files</h3>",
            run.lost.len(),
            per_file.len()
        );
        h.push_str("<table><tr><th>file</th><th>round</th><th>lost</th><th>found</th><th>orphaned</th><th>on unowned</th><th>in place</th><th>never written</th></tr>");
        for ((round, path), idx) in &per_file {
            let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
            for &i in idx {
                let k = serde_json::to_value(&run.lost[i].found)
                    .ok()
                    .and_then(|v| v["kind"].as_str().map(str::to_string))
                    .unwrap_or_default();
                *kinds.entry(k).or_default() += 1;
            }
            let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
            let fc = ev.and_then(|e| {
                e.files
                    .iter()
                    .find(|f| f.path == *path && f.round == *round)
            });
            let cell = |f: fn(&crate::attribution::Counts) -> u64| {
                fc.map_or("—".to_string(), |c| f(&c.counts).to_string())
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"n\">{round}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(path),
                idx.len(),
                esc(&kinds.join(", ")),
                cell(|c| c.orphaned_write),
                cell(|c| c.orphaned_on_unowned),
                cell(|c| c.in_place),
                cell(|c| c.never_written)
            );
        }
        h.push_str("</table>\n");
        for ((round, path), idx) in &per_file {
            let shown = idx.len().min(BLOCKS_PER_FILE);
            let _ = write!(
                h,
                "<details><summary>{} (round {round}): {} lost blocks{}</summary>",
                esc(path),
                idx.len(),
                if shown < idx.len() {
                    format!(", first {shown} shown (all in evidence.json / report.json)")
                } else {
                    String::new()
                }
            );
            h.push_str("<table><tr><th>lblk</th><th>found</th><th>final pblk</th><th>attribution</th><th>sector</th><th>pblk written</th><th>seq</th><th>log time</th><th>between marks</th><th>unowned</th></tr>");
            for &i in idx.iter().take(shown) {
                let b = &run.lost[i];
                match ev.and_then(|e| {
                    e.blocks
                        .iter()
                        .find(|x| x.round == b.round && x.file_id == b.file_id && x.lblk == b.lblk)
                }) {
                    Some(be) => h.push_str(&block_row(be)),
                    None => {
                        let _ = write!(
                            h,
                            "<tr><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td colspan=\"7\">not attributed (no write log)</td></tr>",
                            b.lblk,
                            esc(&format!("{:?}", b.found)),
                            fmt_opt(b.pblk)
                        );
                    }
                }
            }
            h.push_str("</table></details>\n");
        }
    }
    // Everything else, per class.
    let mut others: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
    for f in &run.report.findings {
        if f.lost_block().is_none() {
            others.entry(f.class().as_str()).or_default().push(f);
        }
    }
    for (class, fs) in others {
        let _ = write!(
            h,
            "<details{}><summary><b>{}</b>: {} findings</summary><ul>",
            if fs.len() <= 10 { " open" } else { "" },
            esc(class),
            fs.len()
        );
        for f in fs.iter().take(OTHERS_PER_CLASS) {
            let _ = write!(h, "<li>{}</li>", esc(&f.summary));
        }
        if fs.len() > OTHERS_PER_CLASS {
            let _ = write!(
                h,
                "<li>… {} more in report.json</li>",
                fs.len() - OTHERS_PER_CLASS
            );
        }
        h.push_str("</ul></details>\n");
    }
    h
}

fn timeline_section(run: &RunDir, ev: Option<&Evidence>, scan: Option<&LogScan>) -> String {
    let rounds = run.rounds();
    if rounds.is_empty() {
        return String::new();
    }
    let mut h = String::from("<h2 id=\"timeline\">Timeline</h2>\n");
    let align = scan.and_then(|s| timeline::align(rounds, s, ev));
    h.push_str(&alignment_note(align.as_ref(), scan.is_some()));
    for t in timeline::rounds(rounds, scan, ev, align.as_ref()) {
        let _ = writeln!(h, "<h3>Round {}</h3>", t.round);
        h.push_str(&svg(&t));
    }
    h
}

fn alignment_note(a: Option<&Alignment>, have_log: bool) -> String {
    let mut s = String::from("<p class=\"note\">");
    match a {
        Some(a) => {
            let _ = write!(
                s,
                "Two clocks: the guest's CLOCK_MONOTONIC (migration windows, hole stores) and the write log's \
                 (ns since blkrec created it, on the host). Guest events are drawn at guest time + {:.3} s. \
                 <b>The alignment is approximate</b>: {}{}. The top axis is the log's clock, the bottom axis the guest's.",
                a.offset_ns as f64 / 1e9,
                esc(&a.method),
                match (a.lower_ns, a.upper_ns) {
                    (Some(l), Some(u)) => format!(
                        " (causality bounds the offset to [{:.3} s, {:.3} s])",
                        l as f64 / 1e9,
                        u as f64 / 1e9
                    ),
                    _ => String::new(),
                }
            );
        }
        None if have_log => s.push_str(
            "Nothing relates the guest's clock to the write log's (no marks), so only guest events are drawn, on the guest's CLOCK_MONOTONIC.",
        ),
        None => s.push_str(
            "No write log: only guest events are drawn, on the guest's CLOCK_MONOTONIC.",
        ),
    }
    s.push_str(
        " Ticks are thinned to one per pixel column; a red tick marks a lost block's store (file rows) or the write that carried it (log lane).</p>\n",
    );
    s
}

const SVG_W: f64 = 1300.0;
const LEFT: f64 = 120.0;
const RIGHT: f64 = 20.0;
const ROW: f64 = 22.0;

/// Distinct pixel columns of `times` on [t0, t1] mapped to [x0, x1].
fn columns(times: &[i64], t0: i64, t1: i64, x0: f64, x1: f64) -> Vec<f64> {
    let span = (t1 - t0).max(1) as f64;
    let mut cols: Vec<i64> = times
        .iter()
        .filter(|&&t| t >= t0 && t <= t1)
        .map(|&t| (x0 + (t - t0) as f64 / span * (x1 - x0)).round() as i64)
        .collect();
    cols.sort_unstable();
    cols.dedup();
    cols.into_iter().map(|c| c as f64).collect()
}

fn ticks(out: &mut String, cols: &[f64], y: f64, hgt: f64, color: &str, width: f64) {
    for x in cols {
        let _ = write!(
            out,
            "<line x1=\"{x:.0}\" y1=\"{y:.1}\" x2=\"{x:.0}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"{width}\"/>",
            y + hgt
        );
    }
}

/// A "nice" tick step for an axis spanning `span` ns with about `n` ticks.
fn nice_step(span: i64, n: i64) -> i64 {
    let raw = (span / n.max(1)).max(1);
    let mag = 10i64.pow((raw as f64).log10().floor().max(0.0) as u32);
    for m in [1, 2, 5, 10] {
        if m * mag >= raw {
            return m * mag;
        }
    }
    10 * mag
}

fn axis(out: &mut String, t0: i64, t1: i64, shift: i64, y: f64, label: &str, above: bool) {
    let x1 = SVG_W - RIGHT;
    let span = (t1 - t0).max(1);
    let step = nice_step(span, 10);
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{x1}\" y2=\"{y}\" stroke=\"#888\"/>"
    );
    // Ticks at round values of the axis's own clock (t - shift).
    let first = (t0 - shift).div_euclid(step) * step + step;
    let mut v = first;
    while v + shift <= t1 {
        let x = LEFT + ((v + shift - t0) as f64 / span as f64) * (x1 - LEFT);
        let (ty, ly) = if above {
            (y - 4.0, y - 7.0)
        } else {
            (y + 4.0, y + 15.0)
        };
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{y}\" x2=\"{x:.1}\" y2=\"{ty}\" stroke=\"#888\"/><text x=\"{x:.1}\" y=\"{ly}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#444\">{:.3}</text>",
            v as f64 / 1e9
        );
        v += step;
    }
    let ly = if above { y - 20.0 } else { y + 30.0 };
    let _ = write!(
        out,
        "<text x=\"{LEFT}\" y=\"{ly}\" font-size=\"11\" fill=\"#333\">{}</text>",
        esc(label)
    );
}

/// One round's timeline as an inline SVG.
pub fn svg(t: &RoundTimeline) -> String {
    let x0 = LEFT;
    let x1 = SVG_W - RIGHT;
    let top = 48.0;
    let log_rows = if t.aligned { 2.0 } else { 0.0 };
    let rows = t.files.len() as f64 + log_rows;
    let plot_h = rows * ROW + if t.aligned { 10.0 } else { 0.0 };
    let height = top + plot_h + 70.0;
    let xt = |v: i64| x0 + ((v - t.t0) as f64 / (t.t1 - t.t0).max(1) as f64) * (x1 - x0);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{SVG_W}\" height=\"{height:.0}\" viewBox=\"0 0 {SVG_W} {height:.0}\" role=\"img\" aria-label=\"round {} timeline\" font-family=\"system-ui,sans-serif\">",
        t.round
    );
    if t.aligned {
        axis(
            &mut s,
            t.t0,
            t.t1,
            0,
            top - 6.0,
            "write log clock (s since the log was created)",
            true,
        );
    }
    // File rows.
    for (i, f) in t.files.iter().enumerate() {
        let y = top + i as f64 * ROW;
        if i % 2 == 0 {
            let _ = write!(
                s,
                "<rect x=\"{x0}\" y=\"{y}\" width=\"{:.0}\" height=\"{ROW}\" fill=\"#f6f8fa\"/>",
                x1 - x0
            );
        }
        let _ = write!(
            s,
            "<text x=\"6\" y=\"{:.1}\" font-size=\"12\" fill=\"#222\">{}{}</text>",
            y + 15.0,
            esc(&f.path),
            if f.lost > 0 {
                format!(" ({} lost)", f.lost)
            } else {
                String::new()
            }
        );
        let mut window = |a: i64, b: i64, fill: &str, title: &str| {
            let (xa, xb) = (xt(a.max(t.t0)), xt(b.min(t.t1)));
            let _ = write!(
                s,
                "<rect x=\"{xa:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\" fill-opacity=\"0.45\" stroke=\"#1565c0\" stroke-width=\"0.8\"><title>{}</title></rect>",
                y + 2.0,
                (xb - xa).max(1.5),
                ROW - 4.0,
                esc(title)
            );
        };
        if let Some((a, b)) = f.window {
            let title = format!(
                "{}: EXT4_IOC_MIGRATE window, {:.1} ms{}",
                f.path,
                (b - a) as f64 / 1e6,
                if f.migrate_error != 0 {
                    format!(", errno {}", f.migrate_error)
                } else {
                    String::new()
                }
            );
            window(a, b, "#90caf9", &title);
        }
        for &(a, b) in &f.moves {
            window(a, b, "#ce93d8", &format!("{}: MOVE_EXT window", f.path));
        }
        ticks(
            &mut s,
            &columns(&f.stores, t.t0, t.t1, x0, x1),
            y + 6.0,
            ROW - 12.0,
            "#607d8b",
            1.0,
        );
        ticks(
            &mut s,
            &columns(&f.lost_stores, t.t0, t.t1, x0, x1),
            y + 3.0,
            ROW - 6.0,
            "#d32f2f",
            1.4,
        );
    }
    if t.aligned {
        let y = top + t.files.len() as f64 * ROW + 10.0;
        let _ = write!(
            s,
            "<line x1=\"{x0}\" y1=\"{:.1}\" x2=\"{x1}\" y2=\"{:.1}\" stroke=\"#bbb\" stroke-dasharray=\"4 3\"/>",
            y - 5.0,
            y - 5.0
        );
        let _ = write!(
            s,
            "<text x=\"6\" y=\"{:.1}\" font-size=\"12\" fill=\"#222\">log: writes</text><text x=\"6\" y=\"{:.1}\" font-size=\"12\" fill=\"#222\">log: flushes</text>",
            y + 15.0,
            y + ROW + 15.0
        );
        ticks(
            &mut s,
            &columns(&t.writes, t.t0, t.t1, x0, x1),
            y + 6.0,
            ROW - 12.0,
            "#9e9e9e",
            1.0,
        );
        ticks(
            &mut s,
            &columns(&t.lost_writes, t.t0, t.t1, x0, x1),
            y + 3.0,
            ROW - 6.0,
            "#d32f2f",
            1.4,
        );
        ticks(
            &mut s,
            &columns(&t.flushes, t.t0, t.t1, x0, x1),
            y + ROW + 3.0,
            ROW - 6.0,
            "#2e7d32",
            1.2,
        );
        let mut last_label = f64::NEG_INFINITY;
        let mut lift = 0.0;
        for (name, m) in &t.marks {
            let x = xt(*m);
            // Stagger the labels of marks that are close together.
            lift = if x - last_label < 110.0 {
                lift + 12.0
            } else {
                0.0
            };
            last_label = x;
            let _ = write!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#f57c00\" stroke-width=\"1.2\" stroke-dasharray=\"5 3\"><title>mark {}</title></line><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#e65100\" text-anchor=\"end\">{}</text>",
                top + plot_h,
                esc(name),
                x - 3.0,
                top + plot_h - 3.0 - lift,
                esc(name)
            );
        }
    }
    let guest_label = if t.aligned {
        "guest CLOCK_MONOTONIC (s), aligned approximately"
    } else {
        "guest CLOCK_MONOTONIC (s)"
    };
    axis(
        &mut s,
        t.t0,
        t.t1,
        t.offset_ns,
        top + plot_h + 4.0,
        guest_label,
        false,
    );
    // Legend.
    let ly = height - 12.0;
    let items = [
        ("#90caf9", "migration window", true),
        ("#607d8b", "hole store", false),
        ("#d32f2f", "lost block: store / write", false),
        ("#9e9e9e", "logged write", false),
        ("#2e7d32", "flush", false),
        ("#f57c00", "mark", false),
    ];
    let mut lx = 500.0;
    for (color, label, rect) in items {
        if rect {
            let _ = write!(
                s,
                "<rect x=\"{lx}\" y=\"{:.0}\" width=\"14\" height=\"9\" fill=\"{color}\" stroke=\"#1565c0\" stroke-width=\"0.8\"/>",
                ly - 8.0
            );
        } else {
            let _ = write!(
                s,
                "<line x1=\"{:.0}\" y1=\"{:.0}\" x2=\"{:.0}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"/>",
                lx + 7.0,
                ly - 9.0,
                lx + 7.0
            );
        }
        let _ = write!(
            s,
            "<text x=\"{:.0}\" y=\"{ly}\" font-size=\"11\" fill=\"#333\">{}</text>",
            lx + 18.0,
            esc(label)
        );
        lx += 26.0 + label.len() as f64 * 6.2;
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(esc("a\u{1b}[0m"), "a\u{fffd}[0m");
    }

    #[test]
    fn ticks_are_thinned_to_pixel_columns() {
        let times: Vec<i64> = (0..100_000).collect();
        let cols = columns(&times, 0, 100_000, 0.0, 100.0);
        assert_eq!(cols.len(), 101);
        assert!(
            columns(&[5, 500], 0, 100, 0.0, 10.0).len() == 1,
            "outside is dropped"
        );
    }

    #[test]
    fn axis_steps_are_round() {
        assert_eq!(nice_step(10_000_000_000, 10), 1_000_000_000);
        assert_eq!(nice_step(3_000_000_000, 10), 500_000_000);
        assert_eq!(nice_step(1, 10), 1);
    }

    #[test]
    fn svg_without_log_uses_the_guest_clock() {
        let t = RoundTimeline {
            round: 0,
            t0: 0,
            t1: 10_000_000,
            files: vec![timeline::FileLane {
                path: "r0/f0".into(),
                window: Some((1_000_000, 5_000_000)),
                stores: vec![2_000_000, 3_000_000],
                lost_stores: vec![3_000_000],
                lost: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        let s = svg(&t);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("guest CLOCK_MONOTONIC (s)</text>"));
        assert!(!s.contains("write log clock"));
        assert!(s.contains("r0/f0 (1 lost)"));
    }
}
