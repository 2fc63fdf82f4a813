//! SVG plots of a run (plotters, SVG backend only): the latency distribution
//! per method, and success over cycles.

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::stats::quantile;
use super::Trial;
use crate::error::{Error, Result};

const W: u32 = 900;
const H: u32 = 480;

fn perr<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::failed(format!("cannot draw {what}: {e}"))
}

fn color(i: usize) -> RGBColor {
    // Okabe & Ito's colour-blind-safe palette.
    const C: [RGBColor; 8] = [
        RGBColor(0, 114, 178),
        RGBColor(230, 159, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(86, 180, 233),
        RGBColor(213, 94, 0),
        RGBColor(240, 228, 66),
        RGBColor(0, 0, 0),
    ];
    C[i % C.len()]
}

/// Per method, the engine's total time of each trial whose mechanism ran.
fn latencies(trials: &[Trial], methods: &[String]) -> Vec<Vec<(f64, bool, usize)>> {
    methods
        .iter()
        .map(|m| {
            trials
                .iter()
                .filter(|t| &t.method == m && t.attempted && t.phases.total.is_finite())
                .map(|t| (t.phases.total, t.success, t.seq))
                .collect()
        })
        .collect()
}

/// A deterministic jitter in [-0.5, 0.5) (golden-ratio sequence), so points
/// of equal value do not hide each other and the SVG is reproducible.
fn jitter(seq: usize) -> f64 {
    (seq as f64 * 0.618_033_988_749_895).fract() - 0.5
}

/// Latency distribution per method: box from the quartiles, whiskers to min
/// and max, a tick at p95 (from 20 values on), every trial as a dot
/// (filled: success, hollow: failure; black, apart from the method colours),
/// and a key naming each mark. A log scale when the values span more than 20×.
pub fn latency_svg(trials: &[Trial], methods: &[String], title: &str) -> Result<String> {
    let data = latencies(trials, methods);
    let colors: Vec<RGBColor> = (0..methods.len()).map(color).collect();
    latency_columns(&data, methods, &colors, title)
}

/// Two runs overlaid (`compare-latency.svg`): per method, run A's box (blue)
/// beside run B's (orange), with the marks of [`latency_svg`].
pub fn compare_latency_svg(
    a: &[Trial],
    b: &[Trial],
    methods: &[String],
    title: &str,
) -> Result<String> {
    let (da, db) = (latencies(a, methods), latencies(b, methods));
    let mut data = vec![];
    let mut names = vec![];
    let mut colors = vec![];
    for (i, m) in methods.iter().enumerate() {
        data.push(da[i].clone());
        data.push(db[i].clone());
        names.push(format!("{m} · A"));
        names.push(format!("{m} · B"));
        colors.extend([color(0), color(1)]);
    }
    latency_columns(&data, &names, &colors, title)
}

fn latency_columns(
    data: &[Vec<(f64, bool, usize)>],
    methods: &[String],
    colors: &[RGBColor],
    title: &str,
) -> Result<String> {
    let all: Vec<f64> = data.iter().flatten().map(|x| x.0).collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = all.iter().copied().fold(0.0_f64, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(perr("latency plot"))?;
        if all.is_empty() {
            root.draw(&Text::new(
                "no method ran: nothing to plot",
                (40, (H / 2) as i32),
                ("sans-serif", 18),
            ))
            .map_err(perr("latency plot"))?;
        } else if hi / lo.max(1e-3) > 20.0 {
            let y = (lo * 0.7).max(1e-3)..hi * 1.5;
            draw_latency(
                &root,
                y.log_scale(),
                data,
                methods,
                colors,
                title,
                "ms (log scale)",
            )?;
        } else {
            draw_latency(&root, 0.0..hi * 1.1, data, methods, colors, title, "ms")?;
        }
        root.present().map_err(perr("latency plot"))?;
    }
    Ok(svg)
}

fn draw_latency<Y>(
    root: &DrawingArea<SVGBackend, Shift>,
    y: Y,
    data: &[Vec<(f64, bool, usize)>],
    methods: &[String],
    colors: &[RGBColor],
    title: &str,
    ylabel: &str,
) -> Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let n = methods.len().max(1);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(62)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), y)
        .map_err(perr("latency plot"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(ylabel)
        .y_label_formatter(&|v: &f64| super::report::fmt_ms(*v))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(perr("latency plot"))?;
    // The key: every mark the plot draws, said once (point symbols as text,
    // so the SVG keeps one circle per trial).
    let (kx, ky) = chart.backend_coord(&(-0.5, chart.y_range().start));
    root.draw(&Text::new(
        format!(
            "Key: box = quartiles (Q1–Q3) · whiskers = min, max · thick black bar = median · \
             thin tick = p95 (only with n ≥ {}) · ● success · ○ failure",
            super::stats::P95_MIN_N
        ),
        (kx, ky + 34),
        ("sans-serif", 13),
    ))
    .map_err(perr("latency plot"))?;
    // Method names under their boxes, placed by hand: tick placement would
    // not promise one label per integer position.
    let bottom = chart.y_range().start;
    let style = TextStyle::from(("sans-serif", 14).into_font()).pos(
        plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Top,
        ),
    );
    for (i, m) in methods.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64, bottom));
        root.draw(&Text::new(m.clone(), (px, py + 8), style.clone()))
            .map_err(perr("latency plot"))?;
    }
    for (i, pts) in data.iter().enumerate() {
        if pts.is_empty() {
            chart
                .draw_series(std::iter::once(Text::new(
                    "never ran",
                    (i as f64 - 0.15, chart.y_range().start),
                    ("sans-serif", 14),
                )))
                .map_err(perr("latency plot"))?;
            continue;
        }
        let mut v: Vec<f64> = pts.iter().map(|p| p.0).collect();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| quantile(&v, p).unwrap_or(f64::NAN);
        let (min, q1, med, q3, p95, max) =
            (v[0], q(0.25), q(0.5), q(0.75), q(0.95), v[v.len() - 1]);
        let x = i as f64;
        let c = colors[i];
        let line = c.stroke_width(2);
        let mut shapes: Vec<PathElement<(f64, f64)>> = vec![
            PathElement::new(vec![(x, min), (x, q1)], line),
            PathElement::new(vec![(x, q3), (x, max)], line),
            PathElement::new(vec![(x - 0.08, min), (x + 0.08, min)], line),
            PathElement::new(vec![(x - 0.08, max), (x + 0.08, max)], line),
            PathElement::new(
                vec![(x - 0.25, med), (x + 0.25, med)],
                BLACK.stroke_width(3),
            ),
        ];
        // As in the tables: no p95 from fewer values than it needs.
        if v.len() >= super::stats::P95_MIN_N {
            shapes.push(PathElement::new(
                vec![(x - 0.12, p95), (x + 0.12, p95)],
                c.stroke_width(1),
            ));
        }
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x - 0.25, q1), (x + 0.25, q3)],
                c.mix(0.25).filled(),
            )))
            .map_err(perr("latency plot"))?;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x - 0.25, q1), (x + 0.25, q3)],
                line,
            )))
            .map_err(perr("latency plot"))?;
        chart.draw_series(shapes).map_err(perr("latency plot"))?;
        chart
            .draw_series(pts.iter().map(|(ms, ok, seq)| {
                // Outcome by shape and in black, apart from the method colours.
                let style = if *ok {
                    BLACK.filled()
                } else {
                    BLACK.stroke_width(1)
                };
                Circle::new((x + 0.18 * jitter(*seq) + 0.35, *ms), 3, style)
            }))
            .map_err(perr("latency plot"))?;
    }
    Ok(())
}

/// Success over cycles: per method, the cumulative success rate after each
/// cycle (a line at its true value, with its Wilson 95 % band), each trial as
/// a marker (filled: success, hollow: failure).
pub fn success_svg(trials: &[Trial], methods: &[String], title: &str) -> Result<String> {
    let cycles = trials.iter().map(|t| t.cycle + 1).max().unwrap_or(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(perr("success plot"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..(cycles as f64 - 0.5), -5.0..105.0)
            .map_err(perr("success plot"))?;
        chart
            .configure_mesh()
            .x_desc("cycle")
            .y_desc("cumulative success % (band: Wilson 95 % interval)")
            .x_labels(cycles.min(20))
            .x_label_formatter(&|x: &f64| format!("{}", x.round() as i64))
            .draw()
            .map_err(perr("success plot"))?;
        let n = methods.len().max(1) as f64;
        for (i, m) in methods.iter().enumerate() {
            let c = color(i);
            let mut ok = 0usize;
            let mut pts = Vec::new();
            let mut marks = Vec::new();
            let mut band_lo = Vec::new();
            let mut band_hi = Vec::new();
            // Lines sit at their true values; methods are dodged sideways
            // (x is a cycle number, so a small shift misleads nobody).
            let dx = (i as f64 - (n - 1.0) / 2.0) * 0.05;
            let ts = trials.iter().filter(|t| &t.method == m);
            for (k, t) in ts.enumerate() {
                ok += usize::from(t.success);
                let rate = ok as f64 / (k + 1) as f64 * 100.0;
                let (lo, hi) = super::stats::wilson(ok, k + 1, super::stats::Z95);
                let x = t.cycle as f64 + dx;
                pts.push((x, rate));
                marks.push((x, rate, t.success));
                band_lo.push((x, lo * 100.0));
                band_hi.push((x, hi * 100.0));
            }
            band_hi.reverse();
            band_lo.extend(band_hi);
            chart
                .draw_series(std::iter::once(Polygon::new(band_lo, c.mix(0.12).filled())))
                .map_err(perr("success plot"))?;
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .map_err(perr("success plot"))?
                .label(m.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            chart
                .draw_series(marks.into_iter().map(|(x, y, s)| {
                    let style = if s { c.filled() } else { c.stroke_width(2) };
                    Circle::new((x, y), 4, style)
                }))
                .map_err(perr("success plot"))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::MiddleRight)
            .draw()
            .map_err(perr("success plot"))?;
        root.present().map_err(perr("success plot"))?;
    }
    Ok(svg)
}

/// Two runs' success rates overlaid (`compare-success.svg`): per method, run A
/// (blue, left) and run B (orange, right) at their true rate with the Wilson
/// 95 % interval as a bar; n under each.
pub fn compare_success_svg(
    a: &[Trial],
    b: &[Trial],
    methods: &[String],
    title: &str,
) -> Result<String> {
    let n = methods.len().max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(perr("comparison plot"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(62)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..(n as f64 - 0.5), -5.0..105.0)
            .map_err(perr("comparison plot"))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("success % (bar: Wilson 95 % interval)")
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 15))
            .draw()
            .map_err(perr("comparison plot"))?;
        let bottom = chart.y_range().start;
        let (kx, ky) = chart.backend_coord(&(-0.5, bottom));
        root.draw(&Text::new(
            "Key: ● A (blue, left) · ● B (orange, right) · bar = Wilson 95 % interval · n = trials",
            (kx, ky + 34),
            ("sans-serif", 13),
        ))
        .map_err(perr("comparison plot"))?;
        let style = TextStyle::from(("sans-serif", 14).into_font()).pos(
            plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Top,
            ),
        );
        for (i, m) in methods.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64, bottom));
            root.draw(&Text::new(m.clone(), (px, py + 8), style.clone()))
                .map_err(perr("comparison plot"))?;
            for (side, trials, c) in [(-0.15, a, color(0)), (0.15, b, color(1))] {
                let ts: Vec<&Trial> = trials.iter().filter(|t| &t.method == m).collect();
                let x = i as f64 + side;
                if ts.is_empty() {
                    chart
                        .draw_series(std::iter::once(Text::new(
                            "n = 0",
                            (x - 0.08, 2.0),
                            ("sans-serif", 12),
                        )))
                        .map_err(perr("comparison plot"))?;
                    continue;
                }
                let k = ts.iter().filter(|t| t.success).count();
                let (lo, hi) = super::stats::wilson(k, ts.len(), super::stats::Z95);
                let rate = k as f64 / ts.len() as f64 * 100.0;
                chart
                    .draw_series([
                        PathElement::new(vec![(x, lo * 100.0), (x, hi * 100.0)], c.stroke_width(2)),
                        PathElement::new(
                            vec![(x - 0.05, lo * 100.0), (x + 0.05, lo * 100.0)],
                            c.stroke_width(2),
                        ),
                        PathElement::new(
                            vec![(x - 0.05, hi * 100.0), (x + 0.05, hi * 100.0)],
                            c.stroke_width(2),
                        ),
                    ])
                    .map_err(perr("comparison plot"))?;
                chart
                    .draw_series(std::iter::once(Circle::new((x, rate), 5, c.filled())))
                    .map_err(perr("comparison plot"))?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("n = {}", ts.len()),
                        (x - 0.08, -3.0),
                        ("sans-serif", 12),
                    )))
                    .map_err(perr("comparison plot"))?;
            }
        }
        root.present().map_err(perr("comparison plot"))?;
    }
    Ok(svg)
}

/// The engine's phases per method (`phases.svg`): for each phase, one bar
/// per method at its median over the trials where the mechanism ran, with a
/// line from min to max; log scale (phases span µs to seconds). A phase a
/// method spends under 1 µs on is drawn at the axis floor.
pub fn phases_svg(trials: &[Trial], methods: &[String], title: &str) -> Result<String> {
    const SHOWN: &[&str] = &["probe", "save", "reset", "ready", "restore", "health"];
    // (method, phase) → (min, median, max)
    let mut cells: Vec<Vec<Option<(f64, f64, f64)>>> = vec![];
    for m in methods {
        let mut row = vec![];
        for p in SHOWN {
            let mut v: Vec<f64> = trials
                .iter()
                .filter(|t| &t.method == m && (t.attempted || *p == "probe"))
                .map(|t| t.phases.get(p))
                .filter(|x| x.is_finite())
                .collect();
            v.sort_by(f64::total_cmp);
            row.push(if v.is_empty() {
                None
            } else {
                Some((v[0], quantile(&v, 0.5).unwrap_or(v[0]), v[v.len() - 1]))
            });
        }
        cells.push(row);
    }
    let floor = 1e-3;
    let hi = cells
        .iter()
        .flatten()
        .flatten()
        .map(|c| c.2)
        .fold(floor * 10.0, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(perr("phase plot"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                -0.5..(SHOWN.len() as f64 - 0.5),
                (floor..hi * 2.0).log_scale(),
            )
            .map_err(perr("phase plot"))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("ms (log scale): median bar, min–max line")
            .draw()
            .map_err(perr("phase plot"))?;
        let style = TextStyle::from(("sans-serif", 14).into_font()).pos(
            plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Top,
            ),
        );
        for (i, p) in SHOWN.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64, floor));
            root.draw(&Text::new(p.to_string(), (px, py + 8), style.clone()))
                .map_err(perr("phase plot"))?;
        }
        let k = methods.len().max(1) as f64;
        let bw = 0.8 / k;
        for (mi, m) in methods.iter().enumerate() {
            let c = color(mi);
            let bars: Vec<_> = cells[mi]
                .iter()
                .enumerate()
                .filter_map(|(pi, cell)| {
                    let (lo, med, hi) = (*cell)?;
                    let x0 = pi as f64 - 0.4 + mi as f64 * bw;
                    Some((x0, lo.max(floor), med.max(floor), hi.max(floor)))
                })
                .collect();
            chart
                .draw_series(bars.iter().map(|&(x0, _, med, _)| {
                    Rectangle::new([(x0, floor), (x0 + bw * 0.9, med)], c.filled())
                }))
                .map_err(perr("phase plot"))?
                .label(m.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
            chart
                .draw_series(bars.iter().map(|&(x0, lo, _, hi)| {
                    let xm = x0 + bw * 0.45;
                    PathElement::new(vec![(xm, lo), (xm, hi)], BLACK.stroke_width(1))
                }))
                .map_err(perr("phase plot"))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(perr("phase plot"))?;
        root.present().map_err(perr("phase plot"))?;
    }
    Ok(svg)
}
