//! How a figure is drawn: looks (a colour and a marker per series), axes in the reader's units,
//! panels of lines, ranked bars, the legend column and the run named under it, SVG and PNG.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::collection::Loaded;

/// Eighteen colours a reader tells apart on white: Tableau 10 without its grey, then darker and
/// purer hues; grey is kept for an implementation the palette does not know.
const COLORS: [RGBColor; 18] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(0, 0, 0),
    RGBColor(0, 0, 128),
    RGBColor(128, 0, 0),
    RGBColor(0, 128, 128),
    RGBColor(230, 171, 2),
    RGBColor(102, 0, 153),
    RGBColor(0, 100, 0),
    RGBColor(255, 0, 255),
    RGBColor(128, 128, 0),
];
const UNKNOWN: RGBColor = RGBColor(127, 127, 127);
/// Eight shapes, drawn filled for the first eight series and hollow for the next eight: sixteen
/// markers no two alike, then two stroke-only ones.
const SHAPES: [Shape; 8] = [
    Shape::Circle,
    Shape::Triangle,
    Shape::Square,
    Shape::Diamond,
    Shape::TriangleDown,
    Shape::Pentagon,
    Shape::Hexagon,
    Shape::Star,
];

pub(super) const SIZE: (u32, u32) = (1000, 560);
const LEGEND_WIDTH: u32 = 250;
/// Height of one panel of a figure with several.
const PANEL_HEIGHT: u32 = 300;

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
    TriangleDown,
    Pentagon,
    Hexagon,
    Star,
    Cross,
    Plus,
}

/// How one implementation is drawn in every figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Look {
    color: RGBColor,
    shape: Shape,
    filled: bool,
}

/// Who gets which look: the registry's styles in its order, then every other implementation of the
/// results drawn (the guests, a reference server), by name.
#[derive(Debug, Clone)]
pub(super) struct Palette {
    names: Vec<String>,
}

impl Palette {
    pub(super) fn of(loaded: &[Loaded]) -> Self {
        let mut names: Vec<String> =
            herd_record::catalogue::styles().map(|all| all.into_iter().map(|m| m.name).collect()).unwrap_or_default();
        let mut others: Vec<String> =
            loaded.iter().map(|l| l.result.implementation.name.clone()).filter(|n| !names.contains(n)).collect();
        others.sort();
        others.dedup();
        names.extend(others);
        Self { names }
    }

    /// The look of `implementation`: the n-th name gets the n-th colour and the n-th marker, so
    /// that up to sixteen series differ in both (a name the palette does not know is grey).
    pub(super) fn look(&self, implementation: &str) -> Look {
        match self.names.iter().position(|n| n == implementation) {
            Some(i) => Look {
                color: COLORS[i % COLORS.len()],
                shape: match i {
                    16 => Shape::Cross,
                    17 => Shape::Plus,
                    _ => SHAPES[i % SHAPES.len()],
                },
                filled: (i / SHAPES.len()).is_multiple_of(2),
            },
            None => Look { color: UNKNOWN, shape: Shape::Cross, filled: false },
        }
    }
}

/// The corners of a regular polygon of `n` sides and radius `r`, pointing up.
fn polygon(n: usize, r: f64, inner: Option<f64>) -> Vec<(i32, i32)> {
    let steps = if inner.is_some() { 2 * n } else { n };
    (0..steps)
        .map(|k| {
            let radius = if k % 2 == 1 { inner.unwrap_or(r) } else { r };
            let a = std::f64::consts::PI * 2.0 * k as f64 / steps as f64 - std::f64::consts::FRAC_PI_2;
            ((radius * a.cos()).round() as i32, (radius * a.sin()).round() as i32)
        })
        .collect()
}

/// A marker of `look` at `at`, in any coordinate system (chart values, or legend pixels).
fn marker<'a, DB: DrawingBackend + 'a, C: Clone + 'a>(look: Look, at: C) -> DynElement<'a, DB, C> {
    let style = if look.filled { look.color.filled() } else { look.color.stroke_width(2) };
    let r = 5;
    let at = EmptyElement::at(at);
    let corners = match look.shape {
        Shape::Circle => return (at + Circle::new((0, 0), r, style)).into_dyn(),
        Shape::Cross => return (at + Cross::new((0, 0), r, look.color.stroke_width(2))).into_dyn(),
        Shape::Plus => {
            let stroke = look.color.stroke_width(2);
            return (at
                + PathElement::new(vec![(-r, 0), (r, 0)], stroke)
                + PathElement::new(vec![(0, -r), (0, r)], stroke))
            .into_dyn();
        }
        Shape::Square => vec![(-r + 1, -r + 1), (r - 1, -r + 1), (r - 1, r - 1), (-r + 1, r - 1)],
        Shape::Triangle => polygon(3, f64::from(r + 1), None),
        Shape::TriangleDown => polygon(3, f64::from(r + 1), None).into_iter().map(|(x, y)| (x, -y)).collect(),
        Shape::Diamond => polygon(4, f64::from(r + 1), None),
        Shape::Pentagon => polygon(5, f64::from(r), None),
        Shape::Hexagon => polygon(6, f64::from(r), None),
        Shape::Star => polygon(5, f64::from(r + 2), Some(f64::from(r) / 2.0)),
    };
    if look.filled {
        (at + Polygon::new(corners, style)).into_dyn()
    } else {
        let mut closed = corners.clone();
        closed.push(corners[0]);
        (at + PathElement::new(closed, style)).into_dyn()
    }
}

/// What an axis measures, which decides its ticks and their labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unit {
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
    pub(super) fn label(self, v: f64) -> String {
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

/// One line of a panel.
pub(super) struct Series {
    pub label: String,
    pub look: Look,
    /// A NaN value is a gap: the line stops there and starts again after it.
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed: a line to read with care (the legend says why).
    pub dashed: bool,
}

/// One axis: what it measures, in which unit, and where its ticks go.
#[derive(Debug, Clone)]
pub(super) struct Axis {
    pub label: &'static str,
    pub unit: Unit,
    /// Drawn on a log scale (latency always is).
    pub log: bool,
    /// Ticks at these values (e.g. the loads measured) instead of the unit's own.
    pub ticks: Option<Vec<f64>>,
}

impl Axis {
    pub(super) fn new(label: &'static str, unit: Unit) -> Self {
        Self { label, unit, log: unit == Unit::Micros, ticks: None }
    }
}

/// A chart of lines.
pub(super) struct Panel {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    /// Spans of x shaded behind the data (a scenario's disturbances).
    pub shaded: Vec<(f64, f64)>,
    /// A dashed horizontal line, and what it is (the latency objective).
    pub objective: Option<(f64, String)>,
}

/// One bar of a ranked chart; `None` draws no bar and says why in `note`.
pub(super) struct Bar {
    pub label: String,
    pub look: Look,
    pub value: Option<f64>,
    pub note: String,
}

/// What a figure holds: panels of lines above each other on one x axis, or ranked bars.
pub(super) enum Body {
    Panels(Vec<Panel>),
    Bars { title: String, bars: Vec<Bar> },
}

/// One figure file.
pub(super) struct Sheet {
    /// File name without extension.
    pub name: String,
    /// What to see in it: written under it in reports.
    pub caption: String,
    /// The results it was drawn from, named at its foot.
    pub run: String,
    /// Lines under the legend (what was left out, and why).
    pub notes: Vec<String>,
    pub body: Body,
}

/// A figure written: its SVG and what to see in it.
#[derive(Debug, Clone)]
pub struct Drawn {
    pub svg: PathBuf,
    pub caption: String,
}

/// Writes each sheet as SVG and, with a font, PNG into `out`.
pub(super) fn write(sheets: &[Sheet], out: &Path) -> Result<Vec<Drawn>> {
    let font = png_font();
    if let (Err(why), false) = (&font, sheets.is_empty()) {
        eprintln!("figures: SVG only: {why}");
    }
    let mut written = Vec::new();
    for sheet in sheets {
        let size = match &sheet.body {
            Body::Panels(p) if p.len() > 1 => (SIZE.0, PANEL_HEIGHT * p.len() as u32),
            Body::Bars { bars, .. } => (SIZE.0, (120 + 30 * bars.len() as u32).max(300)),
            Body::Panels(_) => SIZE,
        };
        let svg = out.join(format!("{}.svg", sheet.name));
        draw_sheet(SVGBackend::new(&svg, size).into_drawing_area(), sheet)
            .map_err(|e| anyhow!("drawing {}: {e}", svg.display()))?;
        if font.is_ok() {
            let png = out.join(format!("{}.png", sheet.name));
            draw_sheet(BitMapBackend::new(&png, size).into_drawing_area(), sheet)
                .map_err(|e| anyhow!("drawing {}: {e}", png.display()))?;
        }
        written.push(Drawn { svg, caption: sheet.caption.clone() });
    }
    Ok(written)
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

fn err(e: &dyn std::fmt::Display) -> String {
    e.to_string()
}

/// Draws a sheet: its body at the left, the legend (or nothing, for bars) and notes in a column of
/// their own at the right, the run named at the foot of that column.
fn draw_sheet<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, sheet: &Sheet) -> Result<(), String> {
    root.fill(&WHITE).map_err(|x| err(&x))?;
    let (plot, side) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    let legend: &[Series] = match &sheet.body {
        Body::Panels(panels) => panels.first().map_or(&[], |p| &p.series),
        Body::Bars { .. } => &[],
    };
    let below = draw_legend(&side, legend)?;
    let small = ("sans-serif", 13).into_font().color(&RGBColor(80, 80, 80));
    for (i, note) in sheet.notes.iter().flat_map(|n| wrap(n, 34)).enumerate() {
        side.draw(&Text::new(note, (6, below + 12 + 17 * i as i32), small.clone())).map_err(|x| err(&x))?;
    }
    let foot = side.dim_in_pixel().1 as i32 - 24;
    side.draw(&Text::new(format!("from {}", sheet.run), (6, foot), small)).map_err(|x| err(&x))?;
    match &sheet.body {
        Body::Panels(panels) => {
            // Panels share their x axis.
            let x = span(panels.iter().flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().map(|p| p.0))));
            for (area, panel) in plot.split_evenly((panels.len(), 1)).iter().zip(panels) {
                draw_chart(area, panel, x)?;
            }
        }
        Body::Bars { title, bars } => draw_bars(&plot, title, bars)?,
    }
    root.present().map_err(|x| err(&x))
}

/// Splits `text` into lines of at most `width` characters, at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("one line");
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_owned());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// The legend: a line and marker per series; returns the pixel row below it.
fn draw_legend<DB: DrawingBackend>(legend: &DrawingArea<DB, Shift>, series: &[Series]) -> Result<i32, String> {
    let mut y = 56;
    for s in series {
        let stroke = s.look.color.stroke_width(2);
        if s.dashed {
            legend.draw(&PathElement::new(vec![(4, y), (12, y)], stroke)).map_err(|x| err(&x))?;
            legend.draw(&PathElement::new(vec![(26, y), (34, y)], stroke)).map_err(|x| err(&x))?;
        } else {
            legend.draw(&PathElement::new(vec![(4, y), (34, y)], stroke)).map_err(|x| err(&x))?;
        }
        legend.draw(&marker(s.look, (19, y))).map_err(|x| err(&x))?;
        legend.draw(&Text::new(s.label.clone(), (42, y - 8), ("sans-serif", 14).into_font())).map_err(|x| err(&x))?;
        y += 22;
    }
    Ok(y)
}

/// Ranked horizontal bars, the longest at the top, each labelled with its note.
fn draw_bars<DB: DrawingBackend>(plot: &DrawingArea<DB, Shift>, title: &str, bars: &[Bar]) -> Result<(), String> {
    let (width, _) = plot.dim_in_pixel();
    plot.draw(&Text::new(title.to_owned(), (16, 14), ("sans-serif", 22).into_font())).map_err(|x| err(&x))?;
    let (label_w, top, row) = (190, 64, 30);
    let full = f64::from(width as i32 - label_w - 200);
    let best = bars.iter().filter_map(|b| b.value).fold(0.0, f64::max);
    for (i, bar) in bars.iter().enumerate() {
        let y = top + row * i as i32;
        let font = ("sans-serif", 14).into_font();
        plot.draw(&Text::new(bar.label.clone(), (16, y + 4), font.clone())).map_err(|x| err(&x))?;
        let length = match bar.value {
            Some(v) if best > 0.0 => (full * v / best).round() as i32,
            _ => 0,
        };
        let (x0, x1) = (label_w, label_w + length.max(2));
        plot.draw(&Rectangle::new([(x0, y), (x1, y + row - 8)], bar.look.color.mix(0.85).filled()))
            .map_err(|x| err(&x))?;
        plot.draw(&marker(bar.look, (x0 - 10, y + (row - 8) / 2))).map_err(|x| err(&x))?;
        plot.draw(&Text::new(bar.note.clone(), (x1 + 8, y + 4), font)).map_err(|x| err(&x))?;
    }
    Ok(())
}

/// The range and ticks of an axis over `values`.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)))
}

/// The chart of `panel` (axes, shaded spans, the objective, lines and markers) on `plot`, over
/// `x0..x1`.
fn draw_chart<DB: DrawingBackend>(
    plot: &DrawingArea<DB, Shift>,
    panel: &Panel,
    (x0, x1): (f64, f64),
) -> Result<(), String> {
    let (mut y0, mut y1) = span(panel.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    if let Some((o, _)) = panel.objective {
        (y0, y1) = (y0.min(o), y1.max(o));
    }
    let (x0, x1) = if x0 < x1 { (x0, x1) } else { (x0 - 1.0, x0 + 1.0) };
    let mut builder = ChartBuilder::on(plot);
    builder.caption(&panel.title, ("sans-serif", 22)).margin(16).x_label_area_size(48).y_label_area_size(80);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(panel.x.label)
                .y_desc(panel.y.label)
                .x_label_formatter(&|v| panel.x.unit.label(*v))
                .y_label_formatter(&|v| panel.y.unit.label(*v))
                .draw()
                .map_err(|x| err(&x))?;
            let (y_lo, y_hi) = {
                let r = chart.y_range();
                (r.start, r.end)
            };
            for &(a, b) in &panel.shaded {
                let shade = RGBColor(200, 200, 200).mix(0.35).filled();
                chart
                    .draw_series(std::iter::once(Rectangle::new([(a, y_lo), (b, y_hi)], shade)))
                    .map_err(|x| err(&x))?;
            }
            if let Some((o, what)) = &panel.objective {
                let grey = RGBColor(90, 90, 90);
                let dashed = DashedLineSeries::new([(x0, *o), (x1, *o)], 8, 6, grey.stroke_width(2));
                chart.draw_series(dashed).map_err(|x| err(&x))?;
                // Just under the line, so that the dashes do not cross the words.
                let under = if panel.y.log { *o / 1.12 } else { *o - (y_hi - y_lo) * 0.02 };
                let label = Text::new(what.clone(), (x0, under), ("sans-serif", 13).into_font().color(&grey));
                chart.plotting_area().draw(&label).map_err(|x| err(&x))?;
            }
            for s in &panel.series {
                let look = s.look;
                for piece in s.points.split(|p| p.1.is_nan()).filter(|piece| !piece.is_empty()) {
                    if s.dashed {
                        let line = DashedLineSeries::new(piece.iter().copied(), 6, 5, look.color.stroke_width(2));
                        chart.draw_series(line).map_err(|x| err(&x))?;
                    } else {
                        let line = LineSeries::new(piece.iter().copied(), look.color.stroke_width(2));
                        chart.draw_series(line).map_err(|x| err(&x))?;
                    }
                }
                // A dense line (a spectrum) carries a marker every tenth of its points.
                for p in s.points.iter().step_by((s.points.len() / 10).max(1)).filter(|p| !p.1.is_nan()) {
                    chart.plotting_area().draw(&marker(look, *p)).map_err(|x| err(&x))?;
                }
            }
        }};
    }
    let x_ticks = panel.x.ticks.clone().unwrap_or_else(|| match panel.x.unit {
        Unit::Nines => std::iter::once(2f64.log10()).chain((1..=x1.floor() as i32).map(f64::from)).collect(),
        Unit::Count => (x0 as i64..=x1 as i64).map(|t| t as f64).collect(),
        _ if panel.x.log => log_ticks(x0, x1),
        _ => linear_ticks(x0, x1),
    });
    // A log x axis (loads) gets a margin of a tenth of a decade on each side.
    let (xl0, xl1) = if panel.x.log { (x0 / 1.25, x1 * 1.25) } else { (x0, x1) };
    let y_log = panel.y.log;
    let (ylo, yhi) =
        if y_log { (y0.max(1.0) / 1.5, (y1 * 1.5).max(2.0)) } else { (0.0, if y1 > 0.0 { y1 * 1.1 } else { 1.0 }) };
    let y_ticks =
        panel.y.ticks.clone().unwrap_or_else(|| if y_log { log_ticks(ylo, yhi) } else { linear_ticks(ylo, yhi) });
    match (panel.x.log, y_log) {
        (false, false) => {
            let x = Ticked { inner: RangedCoordf64::from(xl0..xl1), ticks: x_ticks };
            let y = Ticked { inner: RangedCoordf64::from(ylo..yhi), ticks: y_ticks };
            finish!(builder.build_cartesian_2d(x, y).map_err(|x| err(&x))?);
        }
        (false, true) => {
            let x = Ticked { inner: RangedCoordf64::from(xl0..xl1), ticks: x_ticks };
            let y = Ticked { inner: LogCoord::<f64>::from((ylo..yhi).log_scale()), ticks: y_ticks };
            finish!(builder.build_cartesian_2d(x, y).map_err(|x| err(&x))?);
        }
        (true, false) => {
            let x = Ticked { inner: LogCoord::<f64>::from((xl0..xl1).log_scale()), ticks: x_ticks };
            let y = Ticked { inner: RangedCoordf64::from(ylo..yhi), ticks: y_ticks };
            finish!(builder.build_cartesian_2d(x, y).map_err(|x| err(&x))?);
        }
        (true, true) => {
            let x = Ticked { inner: LogCoord::<f64>::from((xl0..xl1).log_scale()), ticks: x_ticks };
            let y = Ticked { inner: LogCoord::<f64>::from((ylo..yhi).log_scale()), ticks: y_ticks };
            finish!(builder.build_cartesian_2d(x, y).map_err(|x| err(&x))?);
        }
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
        assert_eq!(
            wrap("left out: 40 runs whose generator fell behind", 20),
            ["left out: 40 runs", "whose generator fell", "behind"]
        );
    }

    /// Sixteen series (ten styles and six others) differ in colour and in marker, two by two; the
    /// same name keeps its look.
    #[test]
    fn sixteen_series_differ_in_colour_and_in_marker() {
        let mut names: Vec<String> =
            herd_record::catalogue::styles().expect("registry").into_iter().map(|m| m.name).collect();
        assert_eq!(names.len(), 10, "the registry's styles");
        let guests = ["asyncio", "asyncio+uvloop", "go", "node", "twisted", "echo_epoll"];
        names.extend(guests.iter().map(|g| (*g).to_owned()));
        let palette = Palette { names: names.clone() };
        let looks: std::collections::BTreeMap<&String, Look> = names.iter().map(|n| (n, palette.look(n))).collect();
        let all: Vec<&Look> = looks.values().collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(a.color != b.color, "two series share a colour: {a:?} {b:?}");
                assert!((a.shape, a.filled) != (b.shape, b.filled), "two series share a marker: {a:?} {b:?}");
            }
        }
        assert_eq!(palette.look("twisted"), looks[&"twisted".to_owned()], "the same name, the same look");
        assert_eq!(palette.look("not-drawn-before").color, UNKNOWN);
    }
}
