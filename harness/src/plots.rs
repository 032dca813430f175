//! SVG figures for reports (plotters' SVG backend: text is left to the viewer, so no font files
//! are needed at all).
//!
//! - `latency-spectrum-<workload>.svg`: latency by percentile per style, x = log10(1/(1−p)), so
//!   p50, p90, p99, p99.9 … are evenly spaced and the tail gets the room it deserves.
//! - `p99-vs-load-<workload>.svg` and `throughput-vs-load-<workload>.svg`, for load sweeps.
//! - `throughput-vs-threads-<workload>.svg`, for thread sweeps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::collection::{Key, Loaded};
use crate::report::Row;

const PALETTE: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(23, 190, 207),
];

/// One line of a figure.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
}

/// Writes every figure the results support; returns their paths.
pub fn write_all(loaded: &[Loaded], rows: &[Row], out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut workloads: Vec<&str> = rows.iter().map(|r| r.key.workload.as_str()).collect();
    workloads.dedup();
    workloads.sort();
    workloads.dedup();
    for workload in workloads {
        let spectrum = spectrum_series(loaded, workload);
        if !spectrum.is_empty() {
            let path = out.join(format!("latency-spectrum-{workload}.svg"));
            let title = format!("{workload}: latency by percentile");
            line_chart(
                &path,
                &title,
                "percentile (0 = p0, 2 = p99, 3 = p99.9 …)",
                "latency (µs, log)",
                &spectrum,
                true,
            )?;
            written.push(path);
        }
        let by_load = series_by(rows, workload, |r| r.m.offered_rps.map(|o| (r.key.threads, o)));
        if by_load.iter().any(|(_, pts)| pts.len() >= 2) {
            let p99: Vec<Series> = by_load
                .iter()
                .map(|(label, pts)| Series {
                    label: label.clone(),
                    points: pts.iter().map(|(x, r)| (*x, r.m.p99_us)).collect(),
                })
                .collect();
            let path = out.join(format!("p99-vs-load-{workload}.svg"));
            line_chart(
                &path,
                &format!("{workload}: p99 against offered load"),
                "offered (requests/s)",
                "p99 (µs, log)",
                &p99,
                true,
            )?;
            written.push(path);
            let tput: Vec<Series> = by_load
                .iter()
                .map(|(label, pts)| Series {
                    label: label.clone(),
                    points: pts.iter().map(|(x, r)| (*x, r.m.achieved_rps)).collect(),
                })
                .collect();
            let path = out.join(format!("throughput-vs-load-{workload}.svg"));
            line_chart(
                &path,
                &format!("{workload}: achieved against offered"),
                "offered (requests/s)",
                "achieved (requests/s)",
                &tput,
                false,
            )?;
            written.push(path);
        }
        let by_threads = series_by(rows, workload, |r| r.key.threads.map(|t| (None, t as f64)));
        if by_threads.iter().any(|(_, pts)| pts.len() >= 2) {
            let tput: Vec<Series> = by_threads
                .iter()
                .map(|(label, pts)| Series {
                    label: label.clone(),
                    points: pts.iter().map(|(x, r)| (*x, r.m.achieved_rps)).collect(),
                })
                .collect();
            let path = out.join(format!("throughput-vs-threads-{workload}.svg"));
            line_chart(
                &path,
                &format!("{workload}: throughput against --threads"),
                "--threads",
                "achieved (requests/s)",
                &tput,
                false,
            )?;
            written.push(path);
        }
    }
    Ok(written)
}

/// Rows of one workload as lines: one per style (and other fixed parameter), x from `x_of`.
fn series_by<'a>(
    rows: &'a [Row],
    workload: &str,
    x_of: impl Fn(&Row) -> Option<(Option<usize>, f64)>,
) -> Vec<(String, Vec<(f64, &'a Row)>)> {
    let mut lines: BTreeMap<String, Vec<(f64, &Row)>> = BTreeMap::new();
    // Runs at an unusual connection count (10,000 connections, say) get lines of their own.
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.key.workload == workload) {
        *counts.entry(r.key.connections).or_default() += 1;
    }
    let usual = counts.iter().max_by_key(|(_, n)| **n).map_or(0, |(c, _)| *c);
    for r in rows.iter().filter(|r| r.key.workload == workload) {
        let Some((fixed_threads, x)) = x_of(r) else { continue };
        let mut label = match fixed_threads {
            Some(t) => format!("{} (t={t})", r.key.implementation),
            None if r.key.threads.is_some() && r.m.offered_rps.is_none() => format!("{} (max)", r.key.implementation),
            None => r.key.implementation.clone(),
        };
        if r.key.connections != usual {
            label.push_str(&format!(" ({} conns)", r.key.connections));
        }
        lines.entry(label).or_default().push((x, r));
    }
    for pts in lines.values_mut() {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    lines.into_iter().collect()
}

/// For each style, the latency spectrum at the workload's most measured load (repeats merged).
fn spectrum_series(loaded: &[Loaded], workload: &str) -> Vec<Series> {
    let runs: Vec<&Loaded> = loaded.iter().filter(|l| l.result.workload.name == workload).collect();
    let mut load_counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &runs {
        *load_counts.entry(l.result.parameters.load.as_str()).or_default() += 1;
    }
    let Some((&load, _)) = load_counts.iter().max_by_key(|(_, n)| **n) else { return Vec::new() };
    let mut merged: BTreeMap<Key, hdrhistogram::Histogram<u64>> = BTreeMap::new();
    for l in runs.iter().filter(|l| l.result.parameters.load == load) {
        for latency in l.result.commands.values() {
            let Ok(h) = latency.histogram() else { continue };
            let entry = merged.entry(Key::of(&l.result)).or_insert_with(herd_core::stats::new_histogram);
            let _ = entry.add(&h);
        }
    }
    merged
        .into_iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(key, h)| {
            let max_nines = (h.len() as f64).log10().min(5.0);
            let points = (0..=(max_nines * 20.0) as usize)
                .map(|i| {
                    let nines = i as f64 / 20.0;
                    let q = 1.0 - 10f64.powf(-nines);
                    (nines, h.value_at_quantile(q).max(1) as f64)
                })
                .collect();
            let label = match key.threads {
                Some(t) => format!("{} (t={t}) @ {load}", key.implementation),
                None => format!("{} @ {load}", key.implementation),
            };
            Series { label, points }
        })
        .collect()
}

fn line_chart(path: &Path, title: &str, x_desc: &str, y_desc: &str, series: &[Series], log_y: bool) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (y0, y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    let (x0, x1) = if x0 < x1 { (x0, x1) } else { (x0 - 1.0, x0 + 1.0) };
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut builder = ChartBuilder::on(&root);
    builder.caption(title, ("sans-serif", 22)).margin(16).x_label_area_size(48).y_label_area_size(72);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw().map_err(|e| err(&e))?;
            for (i, s) in series.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
                    .map_err(|e| err(&e))?
                    .label(s.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
                chart.draw_series(s.points.iter().map(|p| Circle::new(*p, 3, color.filled()))).map_err(|e| err(&e))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(&e))?;
        }};
    }
    if log_y {
        let (lo, hi) = (y0.max(1.0) / 1.5, (y1 * 1.5).max(2.0));
        finish!(builder.build_cartesian_2d(x0..x1, (lo..hi).log_scale()).map_err(|e| err(&e))?);
    } else {
        let hi = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
        finish!(builder.build_cartesian_2d(x0..x1, 0.0..hi).map_err(|e| err(&e))?);
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
