//! Two bench runs side by side (`resetlab bench report A B`): the table of
//! rates and medians, the significance tests, and the overlaid figures.

use std::fmt::Write as _;
use std::path::Path;

use super::report::{
    fmt_ms, headline, html, is_twin, markdown, methods_of, pct, text_table, Block,
};
use super::stats::{MethodSummary, Summary};
use super::{plot, Meta, Trial};
use crate::error::Result;

/// Two runs side by side, per method (in the order of the first, then the
/// second's own).
pub fn compare_table(
    a: (&Meta, &Summary),
    b: (&Meta, &Summary),
) -> (Vec<String>, Vec<Vec<String>>) {
    let mut names: Vec<&str> = a.1.methods.iter().map(|m| m.method.as_str()).collect();
    for m in &b.1.methods {
        if !names.contains(&m.method.as_str()) {
            names.push(&m.method);
        }
    }
    let head = [
        "method",
        "A ok",
        "A rate (95% CI)",
        "B ok",
        "B rate (95% CI)",
        "A median ms",
        "B median ms",
        "Δ median",
        "A p95",
        "B p95",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    let find = |s: &Summary, n: &str| s.methods.iter().find(|m| m.method == n).cloned();
    let rate = |m: &Option<MethodSummary>| {
        m.as_ref()
            .map(|m| {
                format!(
                    "{} ({:.0}–{:.0} %)",
                    pct(m.rate),
                    m.ci_low * 100.0,
                    m.ci_high * 100.0
                )
            })
            .unwrap_or("–".into())
    };
    let ok = |m: &Option<MethodSummary>| {
        m.as_ref()
            .map(|m| format!("{}/{}", m.successes, m.trials))
            .unwrap_or("–".into())
    };
    let tot = |m: &Option<MethodSummary>, f: fn(&super::stats::Dist) -> Option<f64>| {
        m.as_ref()
            .filter(|m| m.attempted > 0)
            .and_then(|m| m.phase("total").and_then(f))
    };
    let rows = names
        .iter()
        .map(|n| {
            let (ma, mb) = (find(a.1, n), find(b.1, n));
            let (da, db) = (tot(&ma, |d| Some(d.median)), tot(&mb, |d| Some(d.median)));
            let delta = match (da, db) {
                (Some(x), Some(y)) if x > 0.0 => {
                    format!("{:+} ms ({:+.0} %)", fmt_ms(y - x), (y - x) / x * 100.0)
                }
                (Some(x), Some(y)) => format!("{:+} ms", fmt_ms(y - x)),
                _ => "–".into(),
            };
            let o = |v: Option<f64>| v.map(fmt_ms).unwrap_or("–".into());
            vec![
                n.to_string(),
                ok(&ma),
                rate(&ma),
                ok(&mb),
                rate(&mb),
                o(da),
                o(db),
                delta,
                o(tot(&ma, |d| d.p95)),
                o(tot(&mb, |d| d.p95)),
            ]
        })
        .collect();
    let _ = (a.0, b.0);
    (head, rows)
}

/// The comparison: terminal text, and Markdown and HTML documents.
/// Per method in both runs: is the difference in success rate (Fisher's
/// exact test) and in total latency (Mann–Whitney U) significant at
/// [`signif::ALPHA`]? Warm-up trials are left out, as everywhere.
pub fn signif_table(ta: &[Trial], tb: &[Trial]) -> (Vec<String>, Vec<Vec<String>>) {
    use super::signif;
    let head = [
        "method",
        "success A",
        "success B",
        "Fisher p",
        "rates differ",
        "n lat A/B",
        "Mann–Whitney p",
        "latency differs",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    let mut names: Vec<&str> = vec![];
    for t in ta.iter().chain(tb) {
        if !names.contains(&t.method.as_str()) {
            names.push(&t.method);
        }
    }
    let verdict = |p: f64| {
        if p < signif::ALPHA {
            format!("yes (p < {})", signif::ALPHA)
        } else {
            "no".to_string()
        }
    };
    let rows = names
        .iter()
        .filter_map(|n| {
            let pick = |ts: &[Trial]| -> Vec<Trial> {
                ts.iter()
                    .filter(|t| !t.warmup && t.method == *n)
                    .cloned()
                    .collect()
            };
            let (xa, xb) = (pick(ta), pick(tb));
            if xa.is_empty() || xb.is_empty() {
                return None;
            }
            let (ka, kb) = (
                xa.iter().filter(|t| t.success).count(),
                xb.iter().filter(|t| t.success).count(),
            );
            let pf = signif::fisher_exact(ka, xa.len(), kb, xb.len());
            let lat = |ts: &[Trial]| -> Vec<f64> {
                ts.iter()
                    .filter(|t| t.attempted)
                    .map(|t| t.phases.total)
                    .filter(|v| v.is_finite())
                    .collect()
            };
            let (la, lb) = (lat(&xa), lat(&xb));
            let mw = signif::mann_whitney(&la, &lb);
            Some(vec![
                n.to_string(),
                format!("{ka}/{}", xa.len()),
                format!("{kb}/{}", xb.len()),
                format!("{pf:.3}"),
                verdict(pf),
                format!("{}/{}", la.len(), lb.len()),
                mw.map(|m| format!("{:.3}{}", m.p, if m.exact { " (exact)" } else { "" }))
                    .unwrap_or("–".into()),
                mw.map(|m| verdict(m.p)).unwrap_or("–".into()),
            ])
        })
        .collect();
    (head, rows)
}

/// Two runs compared: the text, compare.md, compare.html, and the overlaid
/// plots (file name, SVG) that the .md links and the .html holds inline.
pub type Compared = (String, String, String, Vec<(String, String)>);

pub fn compare(
    a: (&Path, &Meta, &Summary, &[Trial]),
    b: (&Path, &Meta, &Summary, &[Trial]),
) -> Result<Compared> {
    let (h, r) = compare_table((a.1, a.2), (b.1, b.2));
    // Figures: the measured trials of both runs, methods in the table's order.
    let measured =
        |ts: &[Trial]| -> Vec<Trial> { ts.iter().filter(|t| !t.warmup).cloned().collect() };
    let (ma, mb) = (measured(a.3), measured(b.3));
    let mut methods = methods_of(a.3, a.1);
    for m in methods_of(b.3, b.1) {
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    let twin = if is_twin(a.1) || is_twin(b.1) {
        " — twin (simulated)"
    } else {
        ""
    };
    let lat = plot::compare_latency_svg(
        &ma,
        &mb,
        &methods,
        &format!("engine time per method, A (blue) vs B (orange){twin}"),
    )?;
    let suc = plot::compare_success_svg(
        &ma,
        &mb,
        &methods,
        &format!("success rate per method, A vs B{twin}"),
    )?;
    let (sh, sr) = signif_table(a.3, b.3);
    let runs = vec![
        vec!["A".into(), a.0.display().to_string(), headline(a.1)],
        vec!["B".into(), b.0.display().to_string(), headline(b.1)],
    ];
    // What a reader must know of either run (a twin result resting on a hypothesis), once.
    let mut notes: Vec<&String> = a.1.notes.iter().collect();
    notes.extend(b.1.notes.iter().filter(|n| !a.1.notes.contains(n)));
    let mut text = String::new();
    for r in &runs {
        let _ = writeln!(text, "{}: {} — {}", r[0], r[1], r[2]);
    }
    text.push('\n');
    text.push_str(&text_table(&h, &r));
    for n in &notes {
        let _ = writeln!(text, "note: {n}");
    }
    text.push_str("\nare the differences significant (two-sided, α = 0.05, uncorrected):\n");
    text.push_str(&text_table(&sh, &sr));
    let mut doc = vec![
        Block::H(1, "resetlab bench: two runs side by side".into()),
        Block::Table(vec!["run".into(), "directory".into(), "what".into()], runs),
        Block::Table(h, r),
    ];
    doc.extend(notes.iter().map(|n| Block::P(format!("Note: {n}"))));
    doc.extend([
        Block::P(
            "Rates with Wilson 95 % intervals; overlapping intervals mean the runs do not \
             distinguish the methods. Δ median = B − A of the engine's probe → health time."
                .into(),
        ),
        Block::Svg("compare-latency.svg".into(), lat.clone()),
        Block::Svg("compare-success.svg".into(), suc.clone()),
        Block::H(2, "Are the differences significant?".into()),
        Block::Table(sh, sr),
        Block::P(
            "Two-sided tests at α = 0.05, per method, warm-up trials left out: Fisher's exact \
             test on the 2×2 table of successes and failures; the Mann–Whitney U test on the \
             total (probe → health) times of the trials where the mechanism ran (exact for \
             samples under 50 without ties, else the normal approximation with tie and \
             continuity corrections). p-values are not corrected for testing several methods: \
             with k methods, compare p with 0.05 / k (Bonferroni) before calling a difference \
             real."
                .into(),
        ),
    ]);
    Ok((
        text,
        markdown(&doc),
        html("resetlab bench: comparison", &doc),
        vec![
            ("compare-latency.svg".into(), lat),
            ("compare-success.svg".into(), suc),
        ],
    ))
}
