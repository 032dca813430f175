//! Figures for reports, each written as SVG and, beside it, PNG.
//!
//! - `latency-spectrum-<workload>`: latency by percentile per style from p50 on, x = log10(1/(1−p)),
//!   so p90, p99, p99.9 … are evenly spaced and the tail gets the room it deserves.
//! - `p99-vs-load-<workload>` and `throughput-vs-load-<workload>`, for load sweeps.
//! - `throughput-vs-threads-<workload>`, for thread sweeps.
//! - `scenario-<name>`: a scenario's timeline, one panel per metric (throughput, p99, failed
//!   requests, the servers' RSS) above each other on one time axis, its disturbances shaded.
//!
//! What a reader needs to take a figure in at a glance:
//! - each style keeps **one colour and one marker in every figure** ([`look`], by its place in the
//!   registry of implementations), so a reader learns them once;
//! - the legend has a column of its own right of the plot, never over the data;
//! - axes speak the reader's units: `50 %`, `99.9 %`; `100 µs`, `1 ms`, `1 s`; `5k/s`;
//! - runs at another connection count than the workload's usual one (the 10,000-connection
//!   variants) get figures of their own (`…-10000-conns`), drawn only where a line has two points;
//!   single points stay in the tables.
//!
//! SVG text is left to the viewer (no font needed); PNG text is drawn with a TrueType font read
//! from the system ([`FONT_FILES`]): without one, PNGs are skipped and the report says why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::collection::Row;
use crate::collection::{Key, Loaded};

/// Tableau 10: distinct, and readable on white.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(127, 127, 127),
];
const SHAPES: [Shape; 5] = [Shape::Circle, Shape::Triangle, Shape::Square, Shape::Diamond, Shape::Cross];

const SIZE: (u32, u32) = (1000, 560);
const LEGEND_WIDTH: u32 = 250;

/// Fonts tried, in order, for the PNGs (Debian's fonts-dejavu-core, and where other systems keep it).
pub const FONT_FILES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Circle,
    Triangle,
    Square,
    Diamond,
    Cross,
}

/// How one style is drawn in every figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Look {
    color: RGBColor,
    shape: Shape,
    filled: bool,
}

/// Who gets which look: the registry's styles in its order, then every other implementation of the
/// results drawn (the guests), by name.
#[derive(Debug, Clone)]
struct Palette {
    names: Vec<String>,
}

impl Palette {
    fn of(loaded: &[Loaded]) -> Self {
        let mut names: Vec<String> =
            herd_record::catalogue::styles().map(|all| all.into_iter().map(|m| m.name).collect()).unwrap_or_default();
        let mut others: Vec<String> =
            loaded.iter().map(|l| l.result.implementation.name.clone()).filter(|n| !names.contains(n)).collect();
        others.sort();
        others.dedup();
        names.extend(others);
        Self { names }
    }

    /// The look of `implementation`: the n-th name gets the n-th colour, and shapes cycle so that
    /// no two share both (a name the palette does not know is grey).
    fn look(&self, implementation: &str) -> Look {
        match self.names.iter().position(|n| n == implementation) {
            Some(i) => Look {
                color: COLORS[i % (COLORS.len() - 1)],
                shape: SHAPES[i % SHAPES.len()],
                filled: (i / SHAPES.len()).is_multiple_of(2),
            },
            None => Look { color: COLORS[COLORS.len() - 1], shape: Shape::Cross, filled: false },
        }
    }
}

/// A marker of `look` at `at`, in any coordinate system (chart values, or legend pixels).
fn marker<'a, DB: DrawingBackend + 'a, C: Clone + 'a>(look: Look, at: C) -> DynElement<'a, DB, C> {
    let style = if look.filled { look.color.filled() } else { look.color.stroke_width(2) };
    let r = 5;
    let at = EmptyElement::at(at);
    match look.shape {
        Shape::Circle => (at + Circle::new((0, 0), r, style)).into_dyn(),
        Shape::Triangle => (at + TriangleMarker::new((0, 0), r + 1, style)).into_dyn(),
        Shape::Square => (at + Rectangle::new([(-r + 1, -r + 1), (r - 1, r - 1)], style)).into_dyn(),
        Shape::Diamond if look.filled => (at + Polygon::new(vec![(0, -r), (r, 0), (0, r), (-r, 0)], style)).into_dyn(),
        Shape::Diamond => (at + PathElement::new(vec![(0, -r), (r, 0), (0, r), (-r, 0), (0, -r)], style)).into_dyn(),
        Shape::Cross => (at + Cross::new((0, 0), r, look.color.stroke_width(2))).into_dyn(),
    }
}

/// What an axis measures, which decides its ticks and their labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Latency in µs, on a log scale.
    Micros,
    /// A rate in requests/s.
    PerSecond,
    /// Percentile as log10(1/(1−p)).
    Nines,
    /// A plain count (`--threads`).
    Count,
    /// Time into the window, in seconds.
    Seconds,
    /// Memory in MiB.
    Mebibytes,
}

impl Unit {
    fn label(self, v: f64) -> String {
        match self {
            Unit::Micros if v >= 1e6 => format!("{} s", trim(v / 1e6)),
            Unit::Micros if v >= 1e3 => format!("{} ms", trim(v / 1e3)),
            Unit::Micros => format!("{} µs", trim(v)),
            Unit::PerSecond if v >= 1e6 => format!("{}M/s", trim(v / 1e6)),
            Unit::PerSecond if v >= 1e3 => format!("{}k/s", trim(v / 1e3)),
            Unit::PerSecond => format!("{}/s", trim(v)),
            Unit::Nines => {
                let p = 100.0 * (1.0 - 10f64.powf(-v));
                let decimals = (v.round() as i64 - 2).max(0) as usize;
                format!("{p:.decimals$} %")
            }
            Unit::Count => trim(v),
            Unit::Seconds => format!("{} s", trim(v)),
            Unit::Mebibytes => format!("{} MiB", trim(v)),
        }
    }
}

/// `2` rather than `2.0`, `1.5` as it is; three significant digits at most.
fn trim(v: f64) -> String {
    let s = format!("{:.2}", v);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Ticks at 1-2-5 steps covering `lo..hi` (about six of them).
fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo) / 6.0;
    if !(raw.is_finite() && raw > 0.0) {
        return vec![lo];
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Ticks for a log axis: every power of ten in `lo..hi`; 2× and 5× as well when fewer than three
/// would show, and every multiple when even those are fewer than three.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let of = |multiples: &'static [f64]| -> Vec<f64> {
        (a..=b)
            .flat_map(|e| multiples.iter().map(move |m| m * 10f64.powi(e)))
            .filter(|v| (lo..=hi).contains(v))
            .collect()
    };
    let steps: [&'static [f64]; 3] = [&[1.0], &[1.0, 2.0, 5.0], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]];
    let mut ticks = Vec::new();
    for multiples in steps {
        ticks = of(multiples);
        if ticks.len() >= 3 {
            break;
        }
    }
    ticks
}

/// An axis with the ticks we chose (plotters' own choice for a log axis can be 1, 1.2, 1.5 …),
/// labelled by the chart's formatter.
struct Ticked<R> {
    inner: R,
    ticks: Vec<f64>,
}

impl<R: Ranged<ValueType = f64>> Ranged for Ticked<R> {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, _: Hint) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

/// One line of a figure.
struct Series {
    label: String,
    look: Look,
    points: Vec<(f64, f64)>,
}

struct Figure {
    /// File name without extension.
    name: String,
    title: String,
    x: (&'static str, Unit),
    y: (&'static str, Unit),
    series: Vec<Series>,
    /// Spans of x shaded behind the data (a scenario's disturbances).
    shaded: Vec<(f64, f64)>,
}

/// Figures on one x axis, drawn as panels above each other with one legend (most are one panel).
struct Panels {
    name: String,
    panels: Vec<Figure>,
}

/// Writes every figure the results support (SVG, and PNG beside it when a font is found); returns
/// the SVGs' paths.
pub fn write_all(loaded: &[Loaded], rows: &[Row], out: &Path) -> Result<Vec<PathBuf>> {
    let palette = Palette::of(loaded);
    let mut workloads: Vec<&str> = rows.iter().map(|r| r.key.workload.as_str()).collect();
    workloads.sort();
    workloads.dedup();
    let mut figures = Vec::new();
    for workload in workloads {
        for (threads, spectrum) in spectrum_series(loaded, workload, &palette) {
            let (suffix, given) =
                threads.map_or((String::new(), String::new()), |t| (format!("-t{t}"), format!(", --threads {t}")));
            figures.push(Figure {
                name: format!("latency-spectrum-{workload}{suffix}"),
                title: format!("{workload}{given}: latency by percentile"),
                x: ("percentile", Unit::Nines),
                y: ("latency (log)", Unit::Micros),
                series: spectrum,
                shaded: Vec::new(),
            });
        }
        for (suffix, lines) in series_by(rows, workload, &palette, |r| r.m.offered_rps.map(|o| (r.key.threads, o))) {
            let of = |metric: fn(&Row) -> f64| -> Vec<Series> {
                lines
                    .iter()
                    .map(|(label, look, pts)| Series {
                        label: label.clone(),
                        look: *look,
                        points: pts.iter().map(|(x, r)| (*x, metric(r))).collect(),
                    })
                    .collect()
            };
            type Metric = fn(&Row) -> f64;
            let against_load: [(&str, &str, (&'static str, Unit), Metric); 2] = [
                ("p99-vs-load", "p99 against offered load", ("p99 (log)", Unit::Micros), |r| r.m.p99_us),
                ("throughput-vs-load", "achieved against offered", ("achieved", Unit::PerSecond), |r| r.m.achieved_rps),
            ];
            for (name, what, y, metric) in against_load {
                figures.push(Figure {
                    name: format!("{name}-{workload}{suffix}"),
                    title: format!("{workload}{}: {what}", suffix.replace('-', " ")),
                    x: ("offered", Unit::PerSecond),
                    y,
                    series: of(metric),
                    shaded: Vec::new(),
                });
            }
        }
        for (suffix, lines) in series_by(rows, workload, &palette, |r| r.key.threads.map(|t| (None, t as f64))) {
            figures.push(Figure {
                name: format!("throughput-vs-threads-{workload}{suffix}"),
                title: format!("{workload}{}: throughput against --threads", suffix.replace('-', " ")),
                x: ("--threads", Unit::Count),
                y: ("achieved", Unit::PerSecond),
                series: lines
                    .iter()
                    .map(|(label, look, pts)| Series {
                        label: label.clone(),
                        look: *look,
                        points: pts.iter().map(|(x, r)| (*x, r.m.achieved_rps)).collect(),
                    })
                    .collect(),
                shaded: Vec::new(),
            });
        }
    }
    let figures: Vec<Panels> = figures.into_iter().map(|f| Panels { name: f.name.clone(), panels: vec![f] }).collect();
    write(&figures, out)
}

/// Writes each scenario's timeline (`scenario-<name>`, SVG and PNG) from the scenario runs among
/// `loaded`; returns the SVGs' paths.
pub fn write_scenarios(loaded: &[Loaded], out: &Path) -> Result<Vec<PathBuf>> {
    write(&scenario_panels(loaded, &Palette::of(loaded)), out)
}

/// Writes each figure as SVG and, with a font, PNG; returns the SVGs' paths.
fn write(figures: &[Panels], out: &Path) -> Result<Vec<PathBuf>> {
    let font = png_font();
    if let (Err(why), false) = (&font, figures.is_empty()) {
        eprintln!("figures: SVG only: {why}");
    }
    let mut written = Vec::new();
    for p in figures {
        let size = match p.panels.len() {
            1 => SIZE,
            n => (SIZE.0, PANEL_HEIGHT * n as u32),
        };
        let svg = out.join(format!("{}.svg", p.name));
        draw_panels(SVGBackend::new(&svg, size).into_drawing_area(), p)
            .map_err(|e| anyhow!("drawing {}: {e}", svg.display()))?;
        if font.is_ok() {
            let png = out.join(format!("{}.png", p.name));
            draw_panels(BitMapBackend::new(&png, size).into_drawing_area(), p)
                .map_err(|e| anyhow!("drawing {}: {e}", png.display()))?;
        }
        written.push(svg);
    }
    Ok(written)
}

/// Height of one panel of a scenario's timeline.
const PANEL_HEIGHT: u32 = 300;

/// For each scenario in the results, its timeline: one line per style (its first run of the
/// scenario), one panel per metric, the disturbances of the first run shaded.
fn scenario_panels(loaded: &[Loaded], palette: &Palette) -> Vec<Panels> {
    let mut by_name: BTreeMap<&str, Vec<&Loaded>> = BTreeMap::new();
    for l in loaded {
        if let Some(s) = &l.result.scenario {
            by_name.entry(s.name.as_str()).or_default().push(l);
        }
    }
    let mut out = Vec::new();
    for (name, runs) in by_name {
        // Runs at the base load most of them share (a comparison at equal offered load), when
        // two or more styles share one; otherwise every run.
        let base = |l: &Loaded| l.result.scenario.as_ref().and_then(|s| s.base_rps).map(|b| b.round() as u64);
        let mut bases: BTreeMap<Option<u64>, usize> = BTreeMap::new();
        for l in &runs {
            *bases.entry(base(l)).or_default() += 1;
        }
        let common = bases.iter().max_by_key(|(_, n)| **n).filter(|(_, n)| **n >= 2).map(|(b, _)| *b);
        let runs: Vec<&Loaded> = runs.into_iter().filter(|l| common.is_none_or(|c| base(l) == c)).collect();
        let mut firsts: BTreeMap<&str, &herd_record::scenario::ScenarioRecord> = BTreeMap::new();
        for l in &runs {
            if let Some(s) = &l.result.scenario {
                firsts.entry(l.result.implementation.name.as_str()).or_insert(s);
            }
        }
        let Some(first) = firsts.values().next() else { continue };
        let shaded: Vec<(f64, f64)> =
            first.recovery.iter().map(|r| (r.start_ms as f64 / 1000.0, r.end_ms as f64 / 1000.0)).collect();
        type Metric = fn(&herd_record::scenario::ScenarioRecord, &herd_record::scenario::StepRecord) -> Option<f64>;
        let metrics: [(&str, (&'static str, Unit), Metric); 4] = [
            ("throughput", ("replies", Unit::PerSecond), |s, st| Some(st.completed as f64 * 1000.0 / s.step_ms as f64)),
            ("p99", ("p99 (log)", Unit::Micros), |_, st| (st.completed > 0).then_some(st.p99_us.max(1) as f64)),
            ("failed requests", ("failed", Unit::PerSecond), |s, st| {
                Some(st.errors.values().sum::<u64>() as f64 * 1000.0 / s.step_ms as f64)
            }),
            ("servers' RSS", ("RSS", Unit::Mebibytes), |_, st| {
                (!st.rss_kib.is_empty()).then(|| st.rss_kib.values().sum::<u64>() as f64 / 1024.0)
            }),
        ];
        let panels = metrics
            .iter()
            .enumerate()
            .map(|(i, (what, y, metric))| Figure {
                name: String::new(),
                title: if i == 0 { format!("scenario {name}: {what}") } else { (*what).to_owned() },
                x: ("seconds into the window", Unit::Seconds),
                y: *y,
                series: firsts
                    .iter()
                    .map(|(style, s)| Series {
                        label: (*style).to_owned(),
                        look: palette.look(style),
                        points: s
                            .steps
                            .iter()
                            // A step without a value (no reply) breaks the line.
                            .map(|st| (st.at_ms as f64 / 1000.0, metric(s, st).unwrap_or(f64::NAN)))
                            .collect(),
                    })
                    .collect(),
                shaded: shaded.clone(),
            })
            .collect();
        out.push(Panels { name: format!("scenario-{name}"), panels });
    }
    out
}

/// Registers the first font of [`FONT_FILES`] for PNG text, once.
fn png_font() -> Result<(), String> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let (path, bytes) = FONT_FILES.iter().find_map(|p| std::fs::read(p).ok().map(|b| (p, b))).ok_or_else(|| {
            format!("no TrueType font for PNG text in {FONT_FILES:?} (Debian: apt-get install fonts-dejavu-core)")
        })?;
        // Fonts live as long as the process: plotters keeps a `'static` reference.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{path} is not a font plotters can read"))
    })
    .clone()
}

/// Lines of one workload by connection count: the usual count (the one most runs used) under no
/// suffix, any other under `-<N>-conns`; one line per style (and fixed `--threads`), x from
/// `x_of`. Groups where no line has two points are left out (their points are in the tables).
#[allow(clippy::type_complexity)]
fn series_by<'a>(
    rows: &'a [Row],
    workload: &str,
    palette: &Palette,
    x_of: impl Fn(&Row) -> Option<(Option<usize>, f64)>,
) -> Vec<(String, Vec<(String, Look, Vec<(f64, &'a Row)>)>)> {
    let rows: Vec<&Row> = rows.iter().filter(|r| r.key.workload == workload).collect();
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for r in &rows {
        *counts.entry(r.key.connections).or_default() += 1;
    }
    let usual = counts.iter().max_by_key(|(_, n)| **n).map_or(0, |(c, _)| *c);
    let mut groups: BTreeMap<usize, BTreeMap<String, (Look, Vec<(f64, &Row)>)>> = BTreeMap::new();
    for r in rows {
        let Some((fixed_threads, x)) = x_of(r) else { continue };
        let style = r.key.style_label();
        let label = match fixed_threads {
            Some(t) => format!("{style} (t={t})"),
            None if r.key.threads.is_some() && r.m.offered_rps.is_none() => format!("{style} (max)"),
            None => style,
        };
        let line = groups
            .entry(r.key.connections)
            .or_default()
            .entry(label)
            .or_insert_with(|| (palette.look(&r.key.implementation), Vec::new()));
        line.1.push((x, r));
    }
    groups
        .into_iter()
        .filter(|(_, lines)| lines.values().any(|(_, pts)| pts.len() >= 2))
        .map(|(connections, lines)| {
            let suffix = if connections == usual { String::new() } else { format!("-{connections}-conns") };
            let lines = lines
                .into_iter()
                .map(|(label, (look, mut pts))| {
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    (label, look, pts)
                })
                .collect();
            (suffix, lines)
        })
        .collect()
}

/// For each style, the latency spectrum at the workload's most measured load (repeats merged); runs
/// with `--threads N` apart from those at each style's default (`None`).
fn spectrum_series(loaded: &[Loaded], workload: &str, palette: &Palette) -> BTreeMap<Option<usize>, Vec<Series>> {
    let runs: Vec<&Loaded> = loaded.iter().filter(|l| l.result.workload.name == workload).collect();
    let mut load_counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &runs {
        *load_counts.entry(l.result.parameters.load.as_str()).or_default() += 1;
    }
    let Some((&load, _)) = load_counts.iter().max_by_key(|(_, n)| **n) else { return BTreeMap::new() };
    let mut merged: BTreeMap<Key, hdrhistogram::Histogram<u64>> = BTreeMap::new();
    for l in runs.iter().filter(|l| l.result.parameters.load == load) {
        for latency in l.result.commands.values() {
            let Ok(h) = latency.histogram() else { continue };
            let entry = merged.entry(Key::of(&l.result)).or_insert_with(herd_record::result::new_histogram);
            let _ = entry.add(&h);
        }
    }
    let p50 = 2f64.log10();
    let mut figures: BTreeMap<Option<usize>, Vec<Series>> = BTreeMap::new();
    for (key, h) in merged.into_iter().filter(|(_, h)| !h.is_empty()) {
        let series = {
            // As far into the tail as the sample reaches: 10^n requests show n nines.
            let max_nines = (h.len() as f64).log10().min(5.0);
            let steps = ((max_nines - p50) * 20.0).max(0.0) as usize;
            let points = (0..=steps)
                .map(|i| {
                    let nines = p50 + i as f64 / 20.0;
                    (nines, h.value_at_quantile(1.0 - 10f64.powf(-nines)).max(1) as f64)
                })
                .collect();
            Series { label: format!("{} @ {load}", key.style_label()), look: palette.look(&key.implementation), points }
        };
        figures.entry(key.threads).or_default().push(series);
    }
    figures
}

/// Draws the panels above each other, and the legend (of the first) in a column of its own at the
/// right.
fn draw_panels<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, panels: &Panels) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (plot, legend) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    if let Some(first) = panels.panels.first() {
        draw_legend(&legend, &first.series)?;
    }
    for (area, figure) in plot.split_evenly((panels.panels.len(), 1)).iter().zip(&panels.panels) {
        draw_chart(area, figure)?;
    }
    root.present().map_err(|x| e(&x))
}

fn draw_legend<DB: DrawingBackend>(legend: &DrawingArea<DB, Shift>, series: &[Series]) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    for (i, s) in series.iter().enumerate() {
        let y = 56 + 22 * i as i32;
        legend.draw(&PathElement::new(vec![(4, y), (34, y)], s.look.color.stroke_width(2))).map_err(|x| e(&x))?;
        legend.draw(&marker(s.look, (19, y))).map_err(|x| e(&x))?;
        legend.draw(&Text::new(s.label.clone(), (42, y - 8), ("sans-serif", 14).into_font())).map_err(|x| e(&x))?;
    }
    Ok(())
}

/// The chart of `figure` (axes, shaded spans, lines and markers) on `plot`.
fn draw_chart<DB: DrawingBackend>(plot: &DrawingArea<DB, Shift>, figure: &Figure) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let xs = figure.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let ys = figure.series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (y0, y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    let (x0, x1) = if x0 < x1 { (x0, x1) } else { (x0 - 1.0, x0 + 1.0) };
    let x_ticks = match figure.x.1 {
        Unit::Nines => std::iter::once(2f64.log10()).chain((1..=x1.floor() as i32).map(f64::from)).collect(),
        Unit::Count => (x0 as i64..=x1 as i64).map(|t| t as f64).collect(),
        _ => linear_ticks(x0, x1),
    };
    let mut builder = ChartBuilder::on(plot);
    builder.caption(&figure.title, ("sans-serif", 22)).margin(16).x_label_area_size(48).y_label_area_size(80);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(figure.x.0)
                .y_desc(figure.y.0)
                .x_label_formatter(&|v| figure.x.1.label(*v))
                .y_label_formatter(&|v| figure.y.1.label(*v))
                .draw()
                .map_err(|x| e(&x))?;
            let (_, (y_lo, y_hi)) = (chart.x_range(), {
                let r = chart.y_range();
                (r.start, r.end)
            });
            for &(a, b) in &figure.shaded {
                let shade = RGBColor(200, 200, 200).mix(0.35).filled();
                chart.draw_series(std::iter::once(Rectangle::new([(a, y_lo), (b, y_hi)], shade))).map_err(|x| e(&x))?;
            }
            for s in &figure.series {
                let look = s.look;
                // A NaN value is a gap: the line stops there and starts again after it.
                for piece in s.points.split(|p| p.1.is_nan()).filter(|piece| !piece.is_empty()) {
                    let line = LineSeries::new(piece.iter().copied(), look.color.stroke_width(2));
                    chart.draw_series(line).map_err(|x| e(&x))?;
                }
                // A dense line (a spectrum) carries a marker every tenth of its points.
                for p in s.points.iter().step_by((s.points.len() / 10).max(1)).filter(|p| !p.1.is_nan()) {
                    chart.plotting_area().draw(&marker(look, *p)).map_err(|x| e(&x))?;
                }
            }
        }};
    }
    let x = Ticked { inner: RangedCoordf64::from(x0..x1), ticks: x_ticks };
    if figure.y.1 == Unit::Micros {
        let (lo, hi) = (y0.max(1.0) / 1.5, (y1 * 1.5).max(2.0));
        let y: LogCoord<f64> = (lo..hi).log_scale().into();
        finish!(builder.build_cartesian_2d(x, Ticked { inner: y, ticks: log_ticks(lo, hi) }).map_err(|x| e(&x))?);
    } else {
        let hi = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
        let y = Ticked { inner: RangedCoordf64::from(0.0..hi), ticks: linear_ticks(0.0, hi) };
        finish!(builder.build_cartesian_2d(x, y).map_err(|x| e(&x))?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_speak_the_readers_units() {
        assert_eq!(Unit::Micros.label(100.0), "100 µs");
        assert_eq!(Unit::Micros.label(1000.0), "1 ms");
        assert_eq!(Unit::Micros.label(2500.0), "2.5 ms");
        assert_eq!(Unit::Micros.label(1e6), "1 s");
        assert_eq!(Unit::PerSecond.label(5000.0), "5k/s");
        assert_eq!(Unit::PerSecond.label(1.5e6), "1.5M/s");
        assert_eq!(Unit::Nines.label(2f64.log10()), "50 %");
        assert_eq!(Unit::Nines.label(1.0), "90 %");
        assert_eq!(Unit::Nines.label(2.0), "99 %");
        assert_eq!(Unit::Nines.label(3.0), "99.9 %");
        assert_eq!(Unit::Nines.label(4.0), "99.99 %");
        assert_eq!(linear_ticks(0.0, 11_000.0), [0.0, 2000.0, 4000.0, 6000.0, 8000.0, 10_000.0]);
        assert_eq!(log_ticks(50.0, 20_000.0), [100.0, 1000.0, 10_000.0]);
        assert_eq!(log_ticks(130.0, 45_000.0), [200.0, 500.0, 1000.0, 2000.0, 5000.0, 10_000.0, 20_000.0]);
        assert_eq!(log_ticks(15_000.0, 75_000.0), [20_000.0, 30_000.0, 40_000.0, 50_000.0, 60_000.0, 70_000.0]);
        assert_eq!(log_ticks(150.0, 900.0), [200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0, 900.0]);
    }

    #[test]
    fn every_style_keeps_one_look_and_no_two_share_it() {
        let all = herd_record::catalogue::styles().expect("registry");
        let palette = Palette::of(&[]);
        let looks: Vec<Look> = all.iter().map(|m| palette.look(&m.name)).collect();
        for (i, a) in looks.iter().enumerate() {
            assert_eq!(*a, palette.look(&all[i].name), "the same style, the same look");
            for b in &looks[i + 1..] {
                assert!(a != b, "two styles drawn alike: {a:?}");
                assert!(a.color != b.color || all.len() > COLORS.len() - 1, "{a:?} and {b:?} share a colour");
            }
        }
        assert_eq!(palette.look("not-a-style").color, COLORS[COLORS.len() - 1]);
    }
}
