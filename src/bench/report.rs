//! Reports of a run: `trials.csv`, `summary.json`, the two SVG plots,
//! `report.md` and a self-contained `report.html` (plots inline), the
//! terminal table, and the side-by-side comparison of two runs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::stats::{summarize, MethodSummary, Summary};
use super::{plot, write_json, Meta, Trial, PHASES};
use crate::error::{Error, Result};

pub use super::compare::{compare, compare_table, signif_table, Compared};

/// A report as structured blocks, rendered to Markdown or HTML.
pub(super) enum Block {
    H(u8, String),
    P(String),
    Pre(String),
    Table(Vec<String>, Vec<Vec<String>>),
    /// A plot: its file name and its SVG text.
    Svg(String, String),
}

/// Every file a report writes, by name.
pub const FILES: &[&str] = &[
    "trials.csv",
    "summary.json",
    "latency.svg",
    "success.svg",
    "phases.svg",
    "report.md",
    "report.html",
];

/// A quantile the sample may not support: "—" when it does not.
pub fn opt_ms(v: Option<f64>) -> String {
    v.map(fmt_ms).unwrap_or_else(|| "—".into())
}

pub fn fmt_ms(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub(super) fn pct(v: f64) -> String {
    format!("{:.0} %", v * 100.0)
}

fn label(m: &MethodSummary) -> String {
    if m.forced {
        format!("{} (forced)", m.method)
    } else {
        m.method.clone()
    }
}

pub(super) fn methods_of(trials: &[Trial], meta: &Meta) -> Vec<String> {
    let mut v: Vec<String> = meta.methods.clone();
    for t in trials {
        if !v.contains(&t.method) {
            v.push(t.method.clone());
        }
    }
    v
}

/// One CSV field (RFC 4180: quoted when it holds a comma, quote or newline).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub const CSV_HEADER: &[&str] = &[
    "seq",
    "cycle",
    "method",
    "forced",
    "warmup",
    "device",
    "t_ms",
    "success",
    "method_ok",
    "applies",
    "attempted",
    "healthy",
    "error_kind",
    "reason",
    "dirty_ok",
    "dirty_ms",
    "probe_ms",
    "save_ms",
    "reset_ms",
    "ready_ms",
    "restore_ms",
    "health_ms",
    "total_ms",
    "chain_ms",
    "vm_stop_ok",
    "vm_stop_ms",
    "vm_start_ok",
    "vm_start_ms",
    "vm_guest_ok",
    "vm_checks",
    "vm_ready_ms",
];

/// The trials as CSV, one row per trial, columns [`CSV_HEADER`]; numbers in
/// full precision, empty where not applicable.
pub fn csv(trials: &[Trial]) -> String {
    let mut out = CSV_HEADER.join(",");
    out.push('\n');
    let b = |v: bool| v.to_string();
    let ob = |v: Option<bool>| v.map(|x| x.to_string()).unwrap_or_default();
    let of = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    for t in trials {
        let vm = t.vm.as_ref();
        let row: Vec<String> = vec![
            t.seq.to_string(),
            t.cycle.to_string(),
            t.method.clone(),
            b(t.forced),
            b(t.warmup),
            t.device.clone(),
            t.t_ms.to_string(),
            b(t.success),
            b(t.method_ok),
            b(t.applies),
            b(t.attempted),
            ob(t.healthy),
            t.error_kind.clone().unwrap_or_default(),
            t.reason.clone().unwrap_or_default(),
            ob(t.dirty.as_ref().map(|d| d.ok)),
            of(t.dirty.as_ref().map(|d| d.ms)),
            t.phases.probe.to_string(),
            t.phases.save.to_string(),
            t.phases.reset.to_string(),
            t.phases.ready.to_string(),
            t.phases.restore.to_string(),
            t.phases.health.to_string(),
            t.phases.total.to_string(),
            t.chain_ms.to_string(),
            ob(vm.map(|v| v.stop.ok)),
            of(vm.map(|v| v.stop.ms)),
            ob(vm.and_then(|v| v.start.as_ref()).map(|s| s.ok)),
            of(vm.and_then(|v| v.start.as_ref()).map(|s| s.ms)),
            ob(vm.and_then(|v| v.guest.as_ref()).map(|s| s.ok)),
            vm.map(|v| v.checks.to_string()).unwrap_or_default(),
            of(vm.and_then(|v| v.ready_ms)),
        ];
        let row: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

pub(super) fn headline(meta: &Meta) -> String {
    let dev = match &meta.device_name {
        Some(n) => format!("{} ({n})", meta.device),
        None => meta.device.clone(),
    };
    let what = match &meta.vmid {
        Some(v) if meta.mode == "twin-vm" => {
            format!("VM {v} on the twin: start → stop (with or without release) → start → check")
        }
        Some(v) => format!("VM {v} stop → method → start → guest check"),
        None => format!("dirty before each: {}", meta.dirty),
    };
    let warm = if meta.warmup {
        meta.methods.len().min(meta.trials)
    } else {
        0
    };
    format!(
        "{dev}{} · {} method(s) × {} cycle(s) = {} trial(s){}, {} · {what}",
        if is_twin(meta) {
            " on the twin (simulated)"
        } else {
            ""
        },
        meta.methods.len(),
        meta.cycles,
        meta.trials - warm,
        if warm > 0 {
            format!(" + {warm} warm-up")
        } else {
            String::new()
        },
        match meta.seed {
            Some(s) => format!("shuffled per cycle (seed {s})"),
            None => "interleaved".to_string(),
        }
    )
}

fn overhead_line(s: &Summary) -> Option<String> {
    let o = s.overhead.as_ref()?;
    Some(
        match (
            &o.shortest_method,
            o.shortest_median_ms,
            o.percent_of_shortest,
        ) {
            (Some(m), Some(med), Some(p)) => format!(
            "harness overhead: {} ms per trial = {p:.2} % of the shortest method's engine chain \
             ({m}: median {} ms with scan, guards and lock)",
            fmt_ms(o.per_trial_ms),
            fmt_ms(med)
        ),
            _ => format!("harness overhead: {} ms per trial", fmt_ms(o.per_trial_ms)),
        },
    )
}

fn summary_table(s: &Summary) -> (Vec<String>, Vec<Vec<String>>) {
    // In VM cycles what a user waits for is the guest: its columns come first,
    // the engine's own time after, named as such.
    let vm = s.methods.iter().any(|m| m.vm.is_some());
    let engine: &[&str] = if vm {
        &["engine min", "engine median", "engine p95", "engine max"]
    } else {
        &["min ms", "median", "p95", "max"]
    };
    let mut head: Vec<String> = ["method", "trials", "ok", "rate", "95% CI"]
        .iter()
        .map(|x| x.to_string())
        .collect();
    if vm {
        head.extend(
            ["started", "guest ok", "guest ready median", "ready p95"]
                .iter()
                .map(|x| x.to_string()),
        );
    }
    head.extend(engine.iter().map(|x| x.to_string()));
    let rows = s
        .methods
        .iter()
        .map(|m| {
            let tot = m.phase("total").filter(|_| m.attempted > 0);
            let f = |g: fn(&super::stats::Dist) -> Option<f64>| {
                tot.and_then(g).map(fmt_ms).unwrap_or("–".into())
            };
            let mut r = vec![
                label(m),
                m.trials.to_string(),
                format!("{}/{}", m.successes, m.trials),
                pct(m.rate),
                format!("{:.0}–{:.0} %", m.ci_low * 100.0, m.ci_high * 100.0),
            ];
            if let Some(v) = &m.vm {
                r.push(format!("{}/{}", v.start_ok, m.trials));
                r.push(format!("{}/{}", v.guest_ok, m.trials));
                r.push(
                    v.ready
                        .as_ref()
                        .map(|d| fmt_ms(d.median))
                        .unwrap_or("–".into()),
                );
                r.push(
                    v.ready
                        .as_ref()
                        .and_then(|d| d.p95)
                        .map(fmt_ms)
                        .unwrap_or("–".into()),
                );
            } else if vm {
                r.extend(std::iter::repeat_n("–".to_string(), 4));
            }
            r.extend([
                f(|d| Some(d.min)),
                f(|d| Some(d.median)),
                f(|d| d.p95),
                f(|d| Some(d.max)),
            ]);
            r
        })
        .collect();
    (head, rows)
}

fn phase_table(s: &Summary) -> (Vec<String>, Vec<Vec<String>>) {
    let head = ["method", "phase", "n", "min ms", "median", "p95", "max"]
        .iter()
        .map(|x| x.to_string())
        .collect();
    let mut rows = Vec::new();
    for m in &s.methods {
        for p in PHASES {
            if let Some(d) = m.phase(p) {
                rows.push(vec![
                    label(m),
                    p.to_string(),
                    d.n.to_string(),
                    fmt_ms(d.min),
                    fmt_ms(d.median),
                    opt_ms(d.p95),
                    fmt_ms(d.max),
                ]);
            }
        }
        if let Some(d) = &m.chain {
            rows.push(vec![
                label(m),
                "engine chain".into(),
                d.n.to_string(),
                fmt_ms(d.min),
                fmt_ms(d.median),
                opt_ms(d.p95),
                fmt_ms(d.max),
            ]);
        }
    }
    (head, rows)
}

fn failures(s: &Summary) -> Vec<String> {
    let mut out = Vec::new();
    for m in &s.methods {
        for (r, n) in m.reasons.iter().take(3) {
            out.push(format!("{}: {n}× {r}", m.method));
        }
    }
    out
}

/// Plain-text table for the terminal (fixed-width columns).
pub fn text_table(head: &[String], rows: &[Vec<String>]) -> String {
    let cols = head.len();
    let mut w = vec![0usize; cols];
    for r in std::iter::once(head).chain(rows.iter().map(|r| r.as_slice())) {
        for (i, c) in r.iter().enumerate().take(cols) {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(head).chain(rows.iter().map(|r| r.as_slice())) {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate().take(cols) {
            let pad = w[i] - c.chars().count();
            // Numbers right-aligned, the first column left-aligned.
            if i == 0 {
                let _ = write!(line, "{c}{}", " ".repeat(pad));
            } else {
                let _ = write!(line, "  {}{c}", " ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// What `resetlab bench` prints at the end.
pub fn terminal(meta: &Meta, s: &Summary, dir: Option<&Path>) -> String {
    let mut out = format!("resetlab bench: {}\n\n", headline(meta));
    let (h, r) = summary_table(s);
    out.push_str(&text_table(&h, &r));
    out.push_str(if s.methods.iter().any(|m| m.vm.is_some()) {
        "\n(guest ready = the second start issued → the guest's first good check; engine = the \
         method's probe → health time; 95 % CI: Wilson score)\n"
    } else {
        "\n(total = the method's probe → health time in the engine; 95 % CI: Wilson score)\n"
    });
    for n in &meta.notes {
        let _ = writeln!(out, "note: {n}");
    }
    let w = warmup_lines(s);
    if !w.is_empty() {
        out.push_str("\nwarm-up trials (one per method, first; not in the statistics):\n");
        for l in w {
            let _ = writeln!(out, "  {l}");
        }
    }
    let f = failures(s);
    if !f.is_empty() {
        out.push_str("\nwhy trials failed (most common first):\n");
        for l in f {
            let _ = writeln!(out, "  {l}");
        }
    }
    if let Some(st) = &meta.stopped {
        let _ = writeln!(out, "\nstopped early: {st}");
    }
    if let Some(o) = overhead_line(s) {
        let _ = writeln!(out, "\n{o}");
    }
    if let Some(d) = dir {
        let _ = writeln!(
            out,
            "report: {} (also report.md, trials.csv, trials.jsonl, latency.svg, success.svg, phases.svg)",
            d.join("report.html").display()
        );
    }
    out
}

fn report_doc(meta: &Meta, s: &Summary, latency: &str, success: &str, phases: &str) -> Vec<Block> {
    let mut b = vec![
        Block::H(1, format!("resetlab bench: {}", meta.device)),
        Block::P(headline(meta)),
    ];
    let mut facts = vec![
        vec!["resetlab".into(), meta.resetlab.clone()],
        vec!["sysfs".into(), meta.sysfs.clone()],
        vec!["mode".into(), meta.mode.clone()],
        vec!["methods".into(), meta.methods.join(", ")],
        vec![
            "forced (--force for this method only)".into(),
            if meta.forced.is_empty() {
                "none".into()
            } else {
                meta.forced.join(", ")
            },
        ],
        vec!["started (UTC)".into(), super::utc_stamp(meta.started_unix)],
    ];
    if !meta.host.is_empty() {
        facts.push(vec![
            "host".into(),
            if is_twin(meta) {
                "twin (simulated)".into()
            } else {
                "live".into()
            },
        ]);
        facts.push(vec![
            "trial order".into(),
            match meta.seed {
                Some(s) => format!("shuffled per cycle, seed {s}"),
                None => "as given, every cycle".into(),
            },
        ]);
        facts.push(vec!["started".into(), meta.started.clone()]);
        if let Some(e) = &meta.ended {
            facts.push(vec!["ended".into(), e.clone()]);
        }
        facts.push(vec!["kernel".into(), meta.kernel.clone()]);
        facts.push(vec![
            "commit".into(),
            meta.commit.clone().unwrap_or_else(|| "unknown".into()),
        ]);
        if let Some(f) = &meta.firmware {
            facts.push(vec![
                "firmware".into(),
                format!("PMFW {}; VBIOS {}; BIOS {}", f.pmfw, f.vbios, f.bios),
            ]);
        }
        facts.push(vec!["command".into(), meta.argv.join(" ")]);
    }
    if let Some(w) = meta.wall_ms {
        facts.push(vec!["wall time".into(), format!("{} ms", fmt_ms(w))]);
    }
    if let Some(st) = &meta.stopped {
        facts.push(vec!["stopped early".into(), st.clone()]);
    }
    b.push(Block::Table(vec!["".into(), "".into()], facts));
    b.push(Block::H(2, "Success and latency per method".into()));
    let (h, r) = summary_table(s);
    b.push(Block::Table(h, r));
    for n in &meta.notes {
        b.push(Block::P(format!("Note: {n}")));
    }
    b.push(Block::P(
        "Success is the engine's verdict (the mechanism ran without error and every health check \
         passed afterwards; in VM mode: the guest answered its check after the start). The interval \
         is Wilson's score interval at 95 %. Latencies are the method's engine time from probe to \
         health, over the trials where the mechanism ran."
            .into(),
    ));
    if let Some(o) = overhead_line(s) {
        b.push(Block::P(o));
    }
    let w = warmup_lines(s);
    if !w.is_empty() {
        b.push(Block::P(format!(
            "Warm-up trials (one per method, run first, left out of every statistic above): {}.",
            w.join("; ")
        )));
    }
    b.push(Block::Svg("latency.svg".into(), latency.to_string()));
    b.push(Block::Svg("success.svg".into(), success.to_string()));
    b.push(Block::Svg("phases.svg".into(), phases.to_string()));
    let f = failures(s);
    if !f.is_empty() {
        b.push(Block::H(2, "Why trials failed".into()));
        b.push(Block::Pre(f.join("\n")));
    }
    b.push(Block::H(2, "Phases".into()));
    let (h, r) = phase_table(s);
    b.push(Block::Table(h, r));
    b.push(Block::P(
        "probe: the method's applicability check; save: config saved and the device disabled; \
         reset: the mechanism with its spec delays; ready: the wait for config reads to answer; \
         restore: saved config written back; health: the checks after. The engine chain adds the \
         topology scan, guards, lock and wake around the method."
            .into(),
    ));
    b.push(Block::P(
        "Files: trials.jsonl (one trial per line, as recorded), trials.csv, summary.json, \
         meta.json, latency.svg, success.svg. Re-render with `resetlab bench report DIR`."
            .into(),
    ));
    b
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub(super) fn markdown(blocks: &[Block]) -> String {
    let mut out = String::new();
    for b in blocks {
        match b {
            Block::H(l, t) => {
                let _ = writeln!(out, "{} {t}\n", "#".repeat(*l as usize));
            }
            Block::P(t) => {
                let _ = writeln!(out, "{t}\n");
            }
            Block::Pre(t) => {
                let _ = writeln!(out, "```\n{t}\n```\n");
            }
            Block::Table(h, rows) => {
                let _ = writeln!(
                    out,
                    "| {} |",
                    h.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | ")
                );
                let _ = writeln!(out, "|{}", "---|".repeat(h.len()));
                for r in rows {
                    let _ = writeln!(
                        out,
                        "| {} |",
                        r.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | ")
                    );
                }
                out.push('\n');
            }
            Block::Svg(file, _) => {
                let _ = writeln!(out, "![{file}]({file})\n");
            }
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG text without its XML declaration, for inlining.
fn inline_svg(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

pub(super) fn html(title: &str, blocks: &[Block]) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\n\
         body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}}\n\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}\n\
         td:first-child,th:first-child{{text-align:left}}th{{background:#f3f3f3}}\n\
         pre{{background:#f7f7f7;padding:.8em;overflow-x:auto}}svg{{max-width:100%;height:auto}}\n\
         </style></head><body>\n",
        esc(title)
    );
    for b in blocks {
        match b {
            Block::H(l, t) => {
                let _ = writeln!(out, "<h{l}>{}</h{l}>", esc(t));
            }
            Block::P(t) => {
                let _ = writeln!(out, "<p>{}</p>", esc(t));
            }
            Block::Pre(t) => {
                let _ = writeln!(out, "<pre>{}</pre>", esc(t));
            }
            Block::Table(h, rows) => {
                out.push_str("<table>\n");
                if h.iter().any(|c| !c.is_empty()) {
                    out.push_str("<tr>");
                    for c in h {
                        let _ = write!(out, "<th>{}</th>", esc(c));
                    }
                    out.push_str("</tr>\n");
                }
                for r in rows {
                    out.push_str("<tr>");
                    for c in r {
                        let _ = write!(out, "<td>{}</td>", esc(c));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</table>\n");
            }
            Block::Svg(file, svg) => {
                let _ = writeln!(
                    out,
                    "<figure>{}<figcaption>{}</figcaption></figure>",
                    inline_svg(svg),
                    esc(file)
                );
            }
        }
    }
    out.push_str("</body></html>\n");
    out
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, text).map_err(|e| Error::io("write", &p, e))?;
    Ok(p)
}

/// Writes every report file of a run into `dir` from its meta and trials;
/// returns the summary.
/// Whether the run was on the twin (older meta.json: by its sysfs line).
pub fn is_twin(meta: &Meta) -> bool {
    meta.host == "twin" || (meta.host.is_empty() && meta.sysfs.contains("twin"))
}

fn warmup_lines(s: &Summary) -> Vec<String> {
    s.warmup
        .iter()
        .map(|w| {
            format!(
                "{}: {} in {} ms{}",
                w.method,
                if w.success { "ok" } else { "failed" },
                fmt_ms(w.total_ms),
                w.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

pub fn write_all(dir: &Path, meta: &Meta, trials: &[Trial]) -> Result<Summary> {
    let s = summarize(trials, meta.harness_ms);
    let methods = methods_of(trials, meta);
    write(dir, "trials.csv", &csv(trials))?;
    write_json(&dir.join("summary.json"), &s)?;
    // Figures show the measured trials; warm-ups are in the tables apart.
    let measured: Vec<Trial> = trials.iter().filter(|t| !t.warmup).cloned().collect();
    let twin = if is_twin(meta) {
        " — twin (simulated)"
    } else {
        ""
    };
    let lat = plot::latency_svg(
        &measured,
        &methods,
        &format!(
            "{}: engine time per method (probe → health){twin}",
            meta.device
        ),
    )?;
    let suc = plot::success_svg(
        &measured,
        &methods,
        &format!("{}: success over cycles{twin}", meta.device),
    )?;
    let ph = plot::phases_svg(
        &measured,
        &methods,
        &format!("{}: engine phases per method{twin}", meta.device),
    )?;
    write(dir, "latency.svg", &lat)?;
    write(dir, "success.svg", &suc)?;
    write(dir, "phases.svg", &ph)?;
    let doc = report_doc(meta, &s, &lat, &suc, &ph);
    write(dir, "report.md", &markdown(&doc))?;
    write(
        dir,
        "report.html",
        &html(&format!("resetlab bench: {}", meta.device), &doc),
    )?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn text_table_aligns_columns() {
        let t = text_table(
            &["m".into(), "n".into()],
            &[
                vec!["flr".into(), "1".into()],
                vec!["remove_rescan".into(), "10".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[1], "flr             1");
        assert_eq!(lines[2], "remove_rescan  10");
    }

    #[test]
    fn html_escapes_text() {
        let h = html("t", &[Block::P("<b>&".into())]);
        assert!(h.contains("<p>&lt;b&gt;&amp;</p>"));
    }
}
