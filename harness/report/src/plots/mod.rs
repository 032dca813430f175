//! Figures for reports, each written as SVG and, beside it, PNG, each with a caption saying what to
//! see in it and the run it comes from named at its foot.
//!
//! - `latency-spectrum-<workload>-<load>`: latency by percentile per style from p50 on, x =
//!   log10(1/(1−p)), so p90, p99, p99.9 … are evenly spaced and the tail gets the room it deserves;
//!   one figure per load that two or more styles were measured at, its title saying when most
//!   styles were past their knee there (saturated) and when the load was closed-loop (`max`: service
//!   time, not latency under an offered load).
//! - `p99-vs-load-<workload>`: p99 against offered load on log–log axes, ticked at the loads
//!   measured, with the objective as a dashed line.
//! - `knees-<workload>`: each style's capacity knee as a ranked bar, in % of the best.
//! - `timeline-<workload>-<load>`: the p99 of every second of every run (the timeline each result
//!   stores), rounds laid end to end.
//! - `throughput-vs-threads-<workload>`, for thread sweeps.
//! - `memory-per-connection-<workload>-<load>`: the servers' RSS against the connections held, each
//!   style's slope (bytes per connection) in the legend.
//! - `scenario-<name>`: a scenario's timeline, one panel per metric (throughput, p99, failed
//!   requests per second, the servers' RSS) above each other on one time axis, its disturbances
//!   shaded.
//!
//! Runs whose generator fell behind its schedule are left out of every figure but the timelines
//! (which show what happened), and each figure says how many it left out. A suffix names what sets
//! a figure apart from the workload's usual runs: `-<N>-conns`, `-t<N>` (`--threads`), `-pinned`.
//!
//! What a reader needs to take a figure in at a glance:
//! - each implementation keeps **one colour and one marker in every figure** (the registry's styles
//!   first, then the others by name): sixteen series differ in both;
//! - the legend has a column of its own right of the plot, never over the data;
//! - axes speak the reader's units: `50 %`, `99.9 %`; `100 µs`, `1 ms`, `1 s`; `5k/s`.
//!
//! SVG text is left to the viewer (no font needed); PNG text is drawn with a TrueType font read
//! from the system ([`FONT_FILES`]): without one, PNGs are skipped and the report says why.

mod draw;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use crate::collection::{Key, Loaded, Row};
use crate::knees::{self, Knee};
use draw::{Axis, Bar, Body, Palette, Panel, Series, Sheet, Unit};
pub use draw::{Drawn, FONT_FILES};

/// Writes every figure the steady-state results in `loaded` support into `out` (SVG, and PNG
/// beside it when a font is found); `slo_us` is the latency objective the knees are judged by.
pub fn write_all(loaded: &[Loaded], slo_us: f64, out: &Path) -> Result<Vec<Drawn>> {
    let palette = Palette::of(loaded);
    let kept: Vec<Loaded> = loaded.iter().filter(|l| !fell_behind(l)).cloned().collect();
    let rows = knees::rows(&kept);
    let every_row = knees::rows(loaded);
    let knees = knees::knees(&rows, slo_us);
    let mut workloads: Vec<&str> = loaded.iter().map(|l| l.result.workload.name.as_str()).collect();
    workloads.sort();
    workloads.dedup();
    let mut sheets = Vec::new();
    for workload in workloads {
        let of = |l: &&Loaded| l.result.workload.name == workload;
        let runs: Vec<&Loaded> = loaded.iter().filter(of).collect();
        let cores = runs.first().map_or(1, |l| l.result.machine.cores.max(1));
        let figure = Figures { workload, palette: &palette, slo_us, usual: usual_connections(&runs), cores };
        sheets.extend(figure.spectra(&runs, &rows));
        sheets.extend(figure.p99_against_load(&rows, &runs));
        sheets.extend(figure.knee_bars(&knees, &rows, &runs));
        sheets.extend(figure.threads(&rows, &runs));
        sheets.extend(figure.timelines(&runs));
        // Memory is not latency: runs whose generator fell behind count here.
        sheets.extend(figure.memory_per_connection(&every_row, &runs));
    }
    draw::write(&sheets, out)
}

/// Writes each scenario's timeline (`scenario-<name>`, SVG and PNG) from the scenario runs among
/// `loaded`.
pub fn write_scenarios(loaded: &[Loaded], out: &Path) -> Result<Vec<Drawn>> {
    draw::write(&scenario_sheets(loaded, &Palette::of(loaded)), out)
}

/// The names figures may have: a report removes earlier files of these names it did not write
/// again, so that a folder never shows a figure from another run.
pub const NAMES: [&str; 7] = [
    "latency-spectrum-",
    "p99-vs-load-",
    "throughput-vs-",
    "knees-",
    "timeline-",
    "scenario-",
    "throughput-vs-threads-",
];

/// A load is saturated where the median style's servers use this share of the machine's cores.
const SATURATED: f64 = 0.6;

fn fell_behind(l: &Loaded) -> bool {
    l.result.send_lag.as_ref().is_some_and(|s| s.fell_behind)
}

/// The folder the results came from: the deepest folder holding them all (`results/runs/matrix-3`).
fn run_name<L: std::borrow::Borrow<Loaded>>(runs: &[L]) -> String {
    let folders: Vec<&Path> = runs.iter().map(|l| l.borrow().path.parent().unwrap_or(Path::new(""))).collect();
    match common_folder(&folders) {
        Some(c) if !c.as_os_str().is_empty() => c.display().to_string(),
        _ => "the current folder".into(),
    }
}

/// The deepest folder holding every result of `loaded`, if any.
pub fn run_folder(loaded: &[Loaded]) -> Option<std::path::PathBuf> {
    let folders: Vec<&Path> = loaded.iter().map(|l| l.path.parent().unwrap_or(Path::new(""))).collect();
    common_folder(&folders)
}

/// The deepest folder holding all of `folders`.
fn common_folder(folders: &[&Path]) -> Option<std::path::PathBuf> {
    let mut common: Option<std::path::PathBuf> = None;
    for dir in folders {
        let dir = dir.to_path_buf();
        common = Some(match common {
            None => dir,
            Some(c) => c.components().zip(dir.components()).take_while(|(a, b)| a == b).map(|(a, _)| a).collect(),
        });
    }
    common
}

/// The connection count most of a workload's runs used.
fn usual_connections(runs: &[&Loaded]) -> usize {
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for l in runs {
        *counts.entry(l.result.parameters.connections).or_default() += 1;
    }
    counts.iter().max_by_key(|(_, n)| **n).map_or(0, |(c, _)| *c)
}

/// What sets a group of runs apart from the workload's usual ones, each as a file-name part and as
/// words for a title: `-10000-conns` / `, 10000 connections`, `-t1` / `, --threads 1`, `-pinned` /
/// `, pinned`.
fn apart(key: &Key, usual: usize) -> Vec<(String, String)> {
    let mut parts = Vec::new();
    if key.connections != usual {
        parts.push((format!("-{}-conns", key.connections), format!(", {} connections", key.connections)));
    }
    if let Some(t) = key.threads {
        parts.push((format!("-t{t}"), format!(", --threads {t}")));
    }
    if key.pinned {
        parts.push(("-pinned".to_owned(), ", pinned".to_owned()));
    }
    parts
}

/// [`apart`] as a file-name suffix.
fn suffix(key: &Key, usual: usize) -> String {
    apart(key, usual).into_iter().map(|(name, _)| name).collect()
}

/// [`apart`] as words for a title.
fn suffix_words(key: &Key, usual: usize) -> String {
    apart(key, usual).into_iter().map(|(_, words)| words).collect()
}

/// How many styles a load must have been measured with to get a figure of its own: two, or one
/// where no load of the workload had more (a folder of one style's runs).
fn shared_by(styles_per_load: impl Iterator<Item = usize>) -> usize {
    styles_per_load.max().unwrap_or(0).clamp(1, 2)
}

/// `N runs whose generator fell behind its schedule left out`, or nothing.
fn left_out(n: usize) -> Vec<String> {
    match n {
        0 => Vec::new(),
        1 => vec!["left out: 1 run whose generator fell behind its schedule".into()],
        n => vec![format!("left out: {n} runs whose generator fell behind its schedule")],
    }
}

/// The figures of one workload.
struct Figures<'a> {
    workload: &'a str,
    palette: &'a Palette,
    slo_us: f64,
    usual: usize,
    /// The machine's cores, to tell a saturated load.
    cores: usize,
}

impl Figures<'_> {
    /// A figure drawn from `runs`, which its foot names.
    fn sheet(&self, name: String, caption: String, notes: Vec<String>, body: Body, runs: &[&Loaded]) -> Sheet {
        Sheet { name, caption, run: run_name(runs), notes, body }
    }

    /// A latency spectrum for every load two or more styles were measured at (every load, for one
    /// style's runs), repeats merged. Runs
    /// whose generator fell behind are left out, unless a style has no other: then they are drawn
    /// dashed, and the legend says so.
    fn spectra(&self, runs: &[&Loaded], rows: &[Row]) -> Vec<Sheet> {
        /// Merged histograms and run counts: kept runs, then runs whose generator fell behind.
        type Merged = [(hdrhistogram::Histogram<u64>, usize); 2];
        let mut points: BTreeMap<Key, BTreeMap<Key, Merged>> = BTreeMap::new();
        let mut drawn: BTreeMap<Key, Vec<&Loaded>> = BTreeMap::new();
        for l in runs {
            let key = Key::of(&l.result);
            let point = key.point();
            drawn.entry(point.clone()).or_default().push(l);
            let merged = points.entry(point).or_default().entry(key).or_insert_with(|| {
                [(herd_record::result::new_histogram(), 0), (herd_record::result::new_histogram(), 0)]
            });
            let entry = &mut merged[usize::from(fell_behind(l))];
            entry.1 += 1;
            for latency in l.result.commands.values() {
                if let Ok(h) = latency.histogram() {
                    let _ = entry.0.add(&h);
                }
            }
        }
        let shared = shared_by(points.values().map(BTreeMap::len));
        let mut sheets = Vec::new();
        for (point, styles) in points.into_iter().filter(|(_, s)| s.len() >= shared) {
            let (mut n_behind, mut dashed) = (0, 0);
            let mut series = Vec::new();
            for (key, [kept, late]) in &styles {
                let only_late = kept.1 == 0;
                let (h, label) = if only_late {
                    dashed += 1;
                    (&late.0, format!("{} (behind)", key.style_label()))
                } else {
                    n_behind += late.1;
                    (&kept.0, key.style_label())
                };
                if !h.is_empty() {
                    let look = self.palette.look(&key.implementation);
                    series.push(Series { label, look, points: spectrum(h), dashed: only_late });
                }
            }
            let styles: BTreeMap<&Key, usize> = styles.iter().map(|(k, [a, b])| (k, a.1.max(b.1))).collect();
            let rounds = styles.values().copied().max().unwrap_or(0);
            let load = &point.load;
            let closed = load == "max";
            let at = if closed { "closed loop".to_owned() } else { format!("{load}/s") };
            let (past, of, cores_used) = self.saturation(rows, &point);
            let mut title = format!("{} at {at}{}: ", self.workload, suffix_words(&point, self.usual));
            let mut caption = format!(
                "Latency by percentile on {} at {at}{}, one line per style, its rounds merged (up to {rounds}). \
                 Lower is better; the left end is the typical request, the right end the tail, and where lines \
                 cross a style with the better median has the worse tail.",
                self.workload,
                suffix_words(&point, self.usual)
            );
            if closed {
                title = format!(
                    "{}{}, closed loop: service time by percentile",
                    self.workload,
                    suffix_words(&point, self.usual)
                );
                caption.push_str(
                    " Closed loop: each connection sends its next request when the reply comes, so this is \
                     service time at the pace the servers set, not latency under an offered load.",
                );
            } else if past * 2 > of || cores_used >= SATURATED * self.cores as f64 {
                title.push_str(&format!("latency by percentile (saturated: {cores_used:.1} of {} cores)", self.cores));
                caption.push_str(&format!(
                    " Saturated: the servers use {cores_used:.1} of the machine's {} cores (the median style) and \
                     {past} of the {of} styles are past their knee, so the tails say more about queueing on a \
                     full machine than about the style.",
                    self.cores
                ));
            } else {
                title.push_str("latency by percentile");
            }
            let mut notes = left_out(n_behind);
            if dashed > 0 {
                notes.push(format!(
                    "dashed, \"(behind)\": {dashed} style(s) whose every run here had its generator fall behind: \
                     partly the generator's latency"
                ));
            }
            let panel = Panel {
                title,
                x: Axis::new("percentile", Unit::Nines),
                y: Axis::new("latency (log)", Unit::Micros),
                series,
                shaded: Vec::new(),
                objective: None,
            };
            let name = format!("latency-spectrum-{}-{load}{}", self.workload, suffix(&point, self.usual));
            let runs = drawn.remove(&point).unwrap_or_default();
            sheets.push(self.sheet(name, caption, notes, Body::Panels(vec![panel]), &runs));
        }
        sheets
    }

    /// How many of the styles measured at `point` were past their knee there (its medians missed
    /// the objective, achieved under 99 % of offered, or failed a request), of how many, and the
    /// cores the median style's servers used.
    fn saturation(&self, rows: &[Row], point: &Key) -> (usize, usize, f64) {
        let here: Vec<&Row> = rows.iter().filter(|r| r.key.point() == *point).collect();
        let past = here
            .iter()
            .filter(|r| {
                let offered = r.m.offered_rps.unwrap_or(0.0);
                r.m.p99_us > self.slo_us || r.m.achieved_rps < 0.99 * offered || r.m.errors > 0.0
            })
            .count();
        let cores: Vec<f64> = here.iter().map(|r| r.m.cpu_us_per_request * r.m.achieved_rps / 1e6).collect();
        (past, here.len(), crate::collection::median(&cores))
    }

    /// p99 against offered load where a style was measured at two or more open-loop loads, on
    /// log–log axes ticked at the loads measured, the objective dashed.
    fn p99_against_load(&self, rows: &[Row], runs: &[&Loaded]) -> Vec<Sheet> {
        let mut groups: BTreeMap<Key, BTreeMap<Key, Vec<(f64, f64)>>> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.key.workload == self.workload) {
            let Some(offered) = r.m.offered_rps else { continue };
            let line = r.key.series();
            groups.entry(r.key.group()).or_default().entry(line).or_default().push((offered, r.m.p99_us));
        }
        let mut sheets = Vec::new();
        for (group, lines) in groups.into_iter().filter(|(_, l)| l.values().any(|p| p.len() >= 2)) {
            let in_group: Vec<&Loaded> = runs.iter().copied().filter(|l| Key::of(&l.result).group() == group).collect();
            let behind = in_group.iter().filter(|l| fell_behind(l)).count();
            let mut loads: Vec<f64> = lines.values().flatten().map(|p| p.0).collect();
            loads.sort_by(f64::total_cmp);
            loads.dedup();
            let series = lines
                .into_iter()
                .map(|(key, mut points)| {
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    Series {
                        label: key.style_label(),
                        look: self.palette.look(&key.implementation),
                        points,
                        dashed: false,
                    }
                })
                .collect();
            let slo = Unit::Micros.label(self.slo_us);
            let panel = Panel {
                title: format!("{}{}: p99 against offered load", self.workload, suffix_words(&group, self.usual)),
                x: Axis { log: true, ticks: Some(loads), ..Axis::new("offered (log)", Unit::PerSecond) },
                y: Axis::new("p99 (log)", Unit::Micros),
                series,
                shaded: Vec::new(),
                objective: Some((self.slo_us, format!(" objective: p99 ≤ {slo}"))),
            };
            let caption = format!(
                "p99 against offered load on {}, one line per style (medians over rounds), log–log, ticked at \
                 the loads measured; the dashed line is the objective (p99 ≤ {slo}). A style's knee is its \
                 last load under the line with every request served; where a line stops, the generator fell \
                 behind at the next load and those runs are left out.",
                self.workload
            );
            let name = format!("p99-vs-load-{}{}", self.workload, suffix(&group, self.usual));
            sheets.push(self.sheet(name, caption, left_out(behind), Body::Panels(vec![panel]), &in_group));
        }
        sheets
    }

    /// Each style's knee as a ranked bar, in % of the best; a knee at the highest load judged (the
    /// highest with a run whose generator kept up) says so: the style may hold more.
    fn knee_bars(&self, knees: &[Knee], rows: &[Row], runs: &[&Loaded]) -> Vec<Sheet> {
        let mut groups: BTreeMap<(Option<usize>, bool, usize), Vec<&Knee>> = BTreeMap::new();
        for k in knees.iter().filter(|k| k.workload == self.workload) {
            groups.entry((k.threads, k.pinned, k.connections)).or_default().push(k);
        }
        let slo = Unit::Micros.label(self.slo_us);
        let mut sheets = Vec::new();
        for ((threads, pinned, connections), mut ks) in groups.into_iter().filter(|(_, ks)| ks.len() >= 2) {
            ks.sort_by(|a, b| b.knee_rps.unwrap_or(0.0).total_cmp(&a.knee_rps.unwrap_or(0.0)));
            let best = ks.first().and_then(|k| k.knee_rps).unwrap_or(0.0);
            let judged = |k: &Knee| {
                rows.iter()
                    .filter(|r| r.key.workload == k.workload && r.key.implementation == k.implementation)
                    .filter(|r| {
                        (r.key.threads, r.key.pinned, r.key.connections) == (k.threads, k.pinned, k.connections)
                    })
                    .filter_map(|r| r.m.offered_rps)
                    .fold(0.0, f64::max)
            };
            let bars = ks
                .iter()
                .map(|k| Bar {
                    label: k.implementation.clone(),
                    look: self.palette.look(&k.implementation),
                    value: k.knee_rps,
                    note: match k.knee_rps {
                        Some(v) if v >= judged(k) => {
                            format!("{} ({:.0} %), the highest load judged", Unit::PerSecond.label(v), 100.0 * v / best)
                        }
                        Some(v) => format!("{} ({:.0} %)", Unit::PerSecond.label(v), 100.0 * v / best),
                        None => format!("none of {} loads met it", k.loads_tried),
                    },
                })
                .collect();
            let key = Key {
                workload: self.workload.into(),
                implementation: String::new(),
                load: String::new(),
                threads,
                connections,
                pinned,
            };
            let title = format!("{}{}: capacity knee (p99 ≤ {slo})", self.workload, suffix_words(&key, self.usual));
            let caption = format!(
                "The capacity knee on {}: the highest offered load each style held with p99 ≤ {slo}, at least 99 % \
                 of it achieved, no failed request and no dropped flood, at every load up to it; ranked, in % of the \
                 best. The resolution is the loads tried: two styles with the same bar may differ between them; \
                 \"the highest load judged\" marks a knee at the highest load where the generator kept its \
                 schedule (runs above it are left out), so that style may hold more.",
                self.workload
            );
            let name = format!("knees-{}{}", self.workload, suffix(&key, self.usual));
            let in_group: Vec<&Loaded> = runs
                .iter()
                .copied()
                .filter(|l| (l.result.parameters.threads, l.result.parameters.pinning.is_some()) == (threads, pinned))
                .filter(|l| l.result.parameters.connections == connections)
                .collect();
            sheets.push(self.sheet(name, caption, Vec::new(), Body::Bars { title, bars }, &in_group));
        }
        sheets
    }

    /// Throughput against `--threads`, for thread sweeps.
    fn threads(&self, rows: &[Row], runs: &[&Loaded]) -> Vec<Sheet> {
        let mut groups: BTreeMap<Key, BTreeMap<Key, Vec<(f64, f64)>>> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.key.workload == self.workload) {
            let Some(t) = r.key.threads else { continue };
            let group = Key { threads: None, ..r.key.group() };
            let line = Key { threads: None, ..r.key.clone() };
            groups.entry(group).or_default().entry(line).or_default().push((t as f64, r.m.achieved_rps));
        }
        let mut sheets = Vec::new();
        for (group, lines) in groups.into_iter().filter(|(_, l)| l.values().any(|p| p.len() >= 2)) {
            let series = lines
                .into_iter()
                .map(|(key, mut points)| {
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    Series {
                        label: format!("{} @ {}", key.style_label(), key.load),
                        look: self.palette.look(&key.implementation),
                        points,
                        dashed: false,
                    }
                })
                .collect();
            let panel = Panel {
                title: format!("{}{}: throughput against --threads", self.workload, suffix_words(&group, self.usual)),
                x: Axis::new("--threads", Unit::Count),
                y: Axis::new("achieved", Unit::PerSecond),
                series,
                shaded: Vec::new(),
                objective: None,
            };
            let caption = format!(
                "Achieved throughput on {} against the servers' thread count: where a line flattens, more threads \
                 stopped helping.",
                self.workload
            );
            let name = format!("throughput-vs-threads-{}{}", self.workload, suffix(&group, self.usual));
            let in_group: Vec<&Loaded> =
                runs.iter().copied().filter(|l| l.result.parameters.threads.is_some()).collect();
            sheets.push(self.sheet(name, caption, Vec::new(), Body::Panels(vec![panel]), &in_group));
        }
        sheets
    }

    /// For every load two or more styles were measured at (every load, for one style's runs), the
    /// p99 of each second of every run,
    /// rounds laid end to end (a gap between rounds).
    fn timelines(&self, runs: &[&Loaded]) -> Vec<Sheet> {
        let mut points: BTreeMap<Key, BTreeMap<Key, Vec<&Loaded>>> = BTreeMap::new();
        for l in runs.iter().filter(|l| !l.result.timeline.is_empty()) {
            let key = Key::of(&l.result);
            points.entry(key.point()).or_default().entry(key).or_default().push(l);
        }
        let shared = shared_by(points.values().map(BTreeMap::len));
        let mut sheets = Vec::new();
        for (point, styles) in points.into_iter().filter(|(_, s)| s.len() >= shared) {
            let mut behind = 0;
            let drawn: Vec<&Loaded> = styles.values().flatten().copied().collect();
            let series = styles
                .into_iter()
                .map(|(key, mut rounds)| {
                    rounds.sort_by_key(|l| (l.result.parameters.round, l.result.started_at.clone()));
                    behind += rounds.iter().filter(|l| fell_behind(l)).count();
                    let mut points = Vec::new();
                    let mut start = 0.0;
                    for l in rounds {
                        for t in &l.result.timeline {
                            points.push((start + f64::from(t.second) + 1.0, t.p99_us.max(1) as f64));
                        }
                        start += l.result.parameters.duration_s.ceil();
                        points.push((start + 0.5, f64::NAN));
                    }
                    Series {
                        label: key.style_label(),
                        look: self.palette.look(&key.implementation),
                        points,
                        dashed: false,
                    }
                })
                .collect();
            let load = &point.load;
            let at = if load == "max" { ", closed loop".to_owned() } else { format!(" at {load}/s") };
            let notes = match behind {
                0 => Vec::new(),
                1 => vec!["kept: 1 run whose generator fell behind (its seconds are the generator's too)".to_owned()],
                n => {
                    vec![format!("kept: {n} runs whose generator fell behind (their seconds are the generator's too)")]
                }
            };
            let panel = Panel {
                title: format!("{}{at}{}: p99 of each second", self.workload, suffix_words(&point, self.usual)),
                x: Axis::new("seconds of measured window, rounds end to end", Unit::Seconds),
                y: Axis::new("p99 (log)", Unit::Micros),
                series,
                shaded: Vec::new(),
                objective: None,
            };
            let caption = format!(
                "The p99 of every second of every run on {}{at}, each style's rounds laid end to end with a gap \
                 between them: a line that climbs within a round is a queue building; one high second is a stall; \
                 a round above the others is the machine's weather.",
                self.workload
            );
            let name = format!("timeline-{}-{load}{}", self.workload, suffix(&point, self.usual));
            sheets.push(self.sheet(name, caption, notes, Body::Panels(vec![panel]), &drawn));
        }
        sheets
    }
}

impl Figures<'_> {
    /// The servers' RSS against the connections held, where a style ran one load at two or more
    /// connection counts: the slope is what one more connection costs.
    fn memory_per_connection(&self, rows: &[Row], runs: &[&Loaded]) -> Vec<Sheet> {
        let mut groups: BTreeMap<Key, BTreeMap<Key, Vec<(f64, f64)>>> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.key.workload == self.workload && r.m.rss_mib.is_finite()) {
            let group = Key { implementation: String::new(), connections: 0, ..r.key.clone() };
            let line = Key { connections: 0, ..r.key.clone() };
            groups.entry(group).or_default().entry(line).or_default().push((r.key.connections as f64, r.m.rss_mib));
        }
        let mut sheets = Vec::new();
        for (group, lines) in groups.into_iter().filter(|(_, l)| l.values().filter(|p| p.len() >= 3).count() >= 2) {
            let mut counts: Vec<f64> = lines.values().flatten().map(|p| p.0).collect();
            counts.sort_by(f64::total_cmp);
            counts.dedup();
            let series = lines
                .into_iter()
                .filter(|(_, p)| p.len() >= 2)
                .map(|(key, mut points)| {
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let (first, last) = (points[0], points[points.len() - 1]);
                    let slope_kib = (last.1 - first.1) * 1024.0 / (last.0 - first.0);
                    Series {
                        label: format!("{} ({slope_kib:.1} KiB/conn)", key.style_label()),
                        look: self.palette.look(&key.implementation),
                        points,
                        dashed: false,
                    }
                })
                .collect();
            let load = &group.load;
            let panel = Panel {
                title: format!("{} at {load}/s: the servers' memory against connections", self.workload),
                x: Axis { ticks: Some(counts), ..Axis::new("connections (all servers)", Unit::Count) },
                y: Axis::new("peak RSS, five servers", Unit::Mebibytes),
                series,
                shaded: Vec::new(),
                objective: None,
            };
            let caption = format!(
                "The servers' peak RSS, summed, against the connections they held, on {} at {load}/s (medians over \
                 rounds, every run: memory is not latency, so runs whose generator fell behind count here): the \
                 legend gives each style's slope, what one more connection costs in user space \
                 (kernel socket buffers are not in RSS). Stacks per connection (a thread's, a coroutine's) make the \
                 steep lines; buffers held only while a connection is busy make the flat ones.",
                self.workload
            );
            let name = format!("memory-per-connection-{}-{load}", self.workload);
            let drawn: Vec<&Loaded> = runs.iter().copied().filter(|l| l.result.parameters.load == *load).collect();
            sheets.push(self.sheet(name, caption, Vec::new(), Body::Panels(vec![panel]), &drawn));
        }
        sheets
    }
}

/// A histogram's latency by percentile, from p50 as far into the tail as the sample reaches (10^n
/// requests show n nines).
fn spectrum(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, f64)> {
    let p50 = 2f64.log10();
    let max_nines = (h.len() as f64).log10().min(5.0);
    let steps = ((max_nines - p50) * 20.0).max(0.0) as usize;
    (0..=steps)
        .map(|i| {
            let nines = p50 + i as f64 / 20.0;
            (nines, h.value_at_quantile(1.0 - 10f64.powf(-nines)).max(1) as f64)
        })
        .collect()
}

/// For each scenario in the results, its timeline: one line per style (its first run of the
/// scenario), one panel per metric, the disturbances of the first run shaded.
fn scenario_sheets(loaded: &[Loaded], palette: &Palette) -> Vec<Sheet> {
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
        type Metric = fn(&herd_record::scenario::ScenarioRecord) -> Vec<(f64, f64)>;
        let metrics: [(&str, (&'static str, Unit), Metric); 4] = [
            ("replies per second", ("replies", Unit::PerSecond), |s| {
                per_step(s, |st| Some(st.completed as f64 * 1000.0 / s.step_ms as f64))
            }),
            ("p99 of each step", ("p99 (log)", Unit::Micros), |s| {
                per_step(s, |st| (st.completed > 0).then_some(st.p99_us.max(1) as f64))
            }),
            ("failed requests per second (whole seconds)", ("failed", Unit::PerSecond), failures_per_second),
            ("servers' RSS", ("RSS", Unit::Mebibytes), |s| {
                per_step(s, |st| (!st.rss_kib.is_empty()).then(|| st.rss_kib.values().sum::<u64>() as f64 / 1024.0))
            }),
        ];
        let panels = metrics
            .iter()
            .enumerate()
            .map(|(i, (what, (label, unit), metric))| Panel {
                title: if i == 0 { format!("scenario {name}: {what}") } else { (*what).to_owned() },
                x: Axis::new("seconds into the window", Unit::Seconds),
                y: Axis::new(label, *unit),
                series: firsts
                    .iter()
                    .map(|(style, s)| Series {
                        label: (*style).to_owned(),
                        look: palette.look(style),
                        points: metric(s),
                        dashed: false,
                    })
                    .collect(),
                shaded: shaded.clone(),
                objective: None,
            })
            .collect();
        let caption = format!(
            "Scenario {name}, each style's first run, on one time axis: replies per second and the p99 of each \
             step, failed requests per second (counted in whole seconds, when they failed: a backlog that times \
             out at once shows as one tall second), and the five servers' RSS; the disturbance is shaded."
        );
        out.push(Sheet {
            name: format!("scenario-{name}"),
            caption,
            run: run_name(&runs),
            notes: Vec::new(),
            body: Body::Panels(panels),
        });
    }
    out
}

/// A value per step of a scenario's window; a step without one (no reply) breaks the line.
fn per_step(
    s: &herd_record::scenario::ScenarioRecord,
    value: impl Fn(&herd_record::scenario::StepRecord) -> Option<f64>,
) -> Vec<(f64, f64)> {
    s.steps.iter().map(|st| (st.at_ms as f64 / 1000.0, value(st).unwrap_or(f64::NAN))).collect()
}

/// Failed requests per second of a scenario's window, summed over each whole second of steps and
/// drawn at the second's middle.
fn failures_per_second(s: &herd_record::scenario::ScenarioRecord) -> Vec<(f64, f64)> {
    let mut seconds: BTreeMap<u64, u64> = BTreeMap::new();
    for st in &s.steps {
        *seconds.entry(st.at_ms / 1000).or_default() += st.errors.values().sum::<u64>();
    }
    seconds.into_iter().map(|(second, failed)| (second as f64 + 0.5, failed as f64)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_per_whole_second() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../results/runs/scenarios-1/callback-member-crash-10000.json"
        ))
        .expect("a committed scenario result");
        let r: herd_record::result::RunResult = serde_json::from_str(&text).expect("valid");
        let mut s = r.scenario.expect("a scenario run");
        assert!(s.step_ms < 1000, "steps shorter than a second");
        for (i, st) in s.steps.iter_mut().enumerate() {
            st.errors = BTreeMap::from([("timeout".to_owned(), i as u64 % 3)]);
        }
        let total: u64 = s.steps.iter().map(|st| st.errors.values().sum::<u64>()).sum();
        let per_second = failures_per_second(&s);
        assert_eq!(per_second.iter().map(|p| p.1).sum::<f64>() as u64, total, "every failure counted once");
        let last_step = s.steps.last().map_or(0, |st| st.at_ms);
        assert_eq!(per_second.len() as u64, last_step / 1000 + 1, "one point per second");
        assert!(per_second.iter().all(|p| p.0.fract() == 0.5), "at each second's middle");
    }

    #[test]
    fn a_run_folder_names_its_figures() {
        let at = |p: &str| Loaded {
            path: p.into(),
            result: serde_json::from_str(
                &std::fs::read_to_string(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../results/baseline/smoke/threadpool-herd-mixed-500-tdefault-01.json"
                ))
                .expect("a committed result"),
            )
            .expect("valid"),
        };
        let runs = [at("results/runs/m/light/a.json"), at("results/runs/m/knee/b.json")];
        assert_eq!(run_name(&runs), "results/runs/m");
        assert_eq!(run_name(&runs[..1]), "results/runs/m/light");
        let key = Key::of(&runs[0].result);
        let far = Key { connections: 10_000, threads: Some(1), pinned: true, ..key };
        assert_eq!(suffix(&far, 64), "-10000-conns-t1-pinned");
        assert_eq!(suffix_words(&far, 64), ", 10000 connections, --threads 1, pinned");
    }
}
