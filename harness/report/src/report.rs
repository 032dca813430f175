//! `harness report`: result files in, Markdown tables and SVG plots out, and the generated parts of
//! REPORT.md refreshed between their markers (the prose around them is left alone).
//!
//! ```text
//! <!-- herdbench:begin tables -->
//! …generated…
//! <!-- herdbench:end tables -->
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::collection::{self, Loaded, Row, median};
use crate::findings;
use crate::knees::{Knee, knees, rows};
use crate::plots::{self, Drawn};
use herd_record::result::RunResult;

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Result files or folders (searched recursively).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Where to write report.md and the SVG plots (default: <first input folder>/report).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Refresh the generated sections of this Markdown file (e.g. REPORT.md).
    #[arg(long)]
    pub update: Option<PathBuf>,
    /// Latency objective for the capacity knee: p99 at or below this, in ms.
    #[arg(long, default_value_t = 10.0)]
    pub slo_ms: f64,
    /// Let runs whose generator fell behind its schedule count toward knees (left out by default).
    #[arg(long)]
    pub include_behind: bool,
    /// With --update: refresh the sections of this part of the document (`PART-tables`,
    /// `PART-knees`, … markers) and judge its `check [PART]:` lines, leaving the main sections and
    /// their findings to the main run (e.g. `--part guests` for the guests' own run).
    #[arg(long, requires = "update")]
    pub part: Option<String>,
    /// Also write the report as one self-contained HTML page (figures inline, sortable tables,
    /// verdicts marked): of the --update file when given (REPORT.md, answer first), else of
    /// report.md.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

pub fn run(args: &ReportArgs) -> Result<()> {
    if let Some(page) = &args.html {
        let folder = page.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !folder.is_dir() {
            bail!("--html {}: no folder {}; name a file in a folder that exists", page.display(), folder.display());
        }
    }
    // Scenario runs change their load and fault the herd mid-window: they have a section and
    // figures of their own, and stay out of the steady-state tables, knees and findings.
    let (scenarios, loaded): (Vec<Loaded>, Vec<Loaded>) =
        collection::load(&args.inputs)?.into_iter().partition(|l| l.result.scenario.is_some());
    let out = match &args.out {
        Some(o) => o.clone(),
        None => {
            let first = &args.inputs[0];
            let base =
                if first.is_dir() { first.clone() } else { first.parent().map(Path::to_path_buf).unwrap_or_default() };
            base.join("report")
        }
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let rows = rows(&loaded);
    let on_schedule = collection::on_schedule(&loaded, args.include_behind);
    let left_out = loaded.len() - on_schedule.len();
    let kept_rows = self::rows(&on_schedule);
    let knees = knees(&kept_rows, args.slo_ms * 1000.0);
    let mut figures = plots::write_all(&loaded, args.slo_ms * 1000.0, &out)?;
    // A scenario's figures live beside its runs (their folder's report/), unless --out says where.
    let scenario_out = match (&args.out, plots::run_folder(&scenarios)) {
        (None, Some(folder)) if !scenarios.is_empty() => folder.join("report"),
        _ => out.clone(),
    };
    std::fs::create_dir_all(&scenario_out).with_context(|| format!("creating {}", scenario_out.display()))?;
    figures.extend(plots::write_scenarios(&scenarios, &scenario_out)?);
    remove_stale_figures(&figures, &[&out, &scenario_out])?;
    let report_md = out.join("report.md");
    // Figure links are relative to the markdown file they appear in: the last section is per file.
    let mut sections = vec![("at a glance".to_owned(), crate::glance::section(&kept_rows, &knees))];
    sections.extend(self::sections(&loaded, &rows, &knees, left_out, args.slo_ms));
    sections.push(("scenarios".to_owned(), crate::scenario::report_section(&scenarios)));
    sections.push(figures_section(&figures, &report_md));
    let mut md = String::from("# herdbench results\n\n");
    for (name, text) in &sections {
        let _ = writeln!(md, "## {name}\n\n{text}");
    }
    std::fs::write(&report_md, md).with_context(|| format!("writing {}", report_md.display()))?;
    eprintln!("wrote {} and {} plots in {}", report_md.display(), figures.len(), out.display());
    if let Some(target) = &args.update {
        let text = std::fs::read_to_string(target).with_context(|| format!("reading {}", target.display()))?;
        *sections.last_mut().expect("the figures section") = figures_section(&figures, target);
        if let Some(part) = &args.part {
            for (name, _) in &mut sections {
                *name = format!("{part}-{name}");
            }
        }
        let updated = replace_sections(&text, &sections)?;
        let (updated, verdicts) = findings::check_part(&updated, &loaded, args.part.as_deref())?;
        std::fs::write(target, updated).with_context(|| format!("writing {}", target.display()))?;
        eprintln!("updated the generated sections of {}", target.display());
        for (claim, verdict) in &verdicts {
            eprintln!("finding {claim}: {verdict}");
        }
    }
    if let Some(page) = &args.html {
        crate::html::write(args.update.as_deref().unwrap_or(&report_md), page)?;
    }
    println!("{}", report_md.display());
    Ok(())
}

fn fmt_us(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

/// The generated sections but the figures, by marker name, in order.
/// `left_out`: runs whose generator fell behind, left out of the knees.
fn sections(loaded: &[Loaded], rows: &[Row], knees: &[Knee], left_out: usize, slo_ms: f64) -> Vec<(String, String)> {
    let mut out = Vec::new();
    out.push(("environment".to_owned(), environment(loaded)));

    let mut tables = String::new();
    let mut by_workload: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        by_workload.entry(&r.key.workload).or_default().push(r);
    }
    for (workload, rs) in by_workload {
        let _ = writeln!(tables, "### {workload}\n");
        let _ = writeln!(
            tables,
            "| style | load | threads | connections | runs | achieved/s | p50 | p99 | p99.9 | max | errors | floods dropped | CPU µs/req | syscalls/req | switches/req | RSS MiB (all servers) | threads/server |"
        );
        let _ = writeln!(tables, "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in rs {
            let (m, sp) = (&r.m, &r.spread);
            let spread =
                |v: String, s: f64| if r.repeats > 1 && s.is_finite() { format!("{v} ±{:.0}%", s * 100.0) } else { v };
            let count = |v: f64| if v.is_finite() { format!("{v:.1}") } else { "–".into() };
            let _ = writeln!(
                tables,
                "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.0} |",
                r.key.implementation,
                r.key.load,
                r.key.threads_label(),
                r.key.connections,
                r.repeats,
                m.achieved_rps,
                spread(fmt_us(m.p50_us), sp.p50_us),
                spread(fmt_us(m.p99_us), sp.p99_us),
                fmt_us(m.p999_us),
                fmt_us(m.max_us),
                m.errors,
                m.floods_dropped,
                spread(count(m.cpu_us_per_request), sp.cpu_us_per_request),
                spread(count(m.syscalls_per_request), sp.syscalls_per_request),
                spread(count(m.switches_per_request), sp.switches_per_request),
                m.rss_mib,
                m.threads
            );
        }
        tables.push('\n');
    }
    out.push(("tables".to_owned(), tables));
    out.push(("mechanisms".to_owned(), mechanisms(loaded)));

    let mut k = String::new();
    if knees.is_empty() {
        k.push_str("No load sweeps in these results (a knee needs two or more open-loop rates).\n");
    } else {
        let _ = writeln!(
            k,
            "Capacity knee: the highest offered rate L such that every rate measured up to L had achieved ≥ 99 % of offered, no errors, no dropped floods and p99 ≤ {slo_ms} ms.\n"
        );
        if left_out > 0 {
            let _ = writeln!(
                k,
                "{left_out} of the {} runs are left out of the knees: their generator fell behind its schedule (own lateness p99 > 1 ms), so their latency is partly the generator's. The tables above still include them.\n",
                loaded.len()
            );
        }
        let _ = writeln!(k, "| workload | style | threads | knee (requests/s) | loads tried |");
        let _ = writeln!(k, "|---|---|---|---:|---:|");
        for knee in knees {
            let value = knee.knee_rps.map_or_else(|| "below the lowest load".to_owned(), |v| format!("{v:.0}"));
            let threads = collection::threads_label(knee.threads, knee.pinned);
            let _ = writeln!(
                k,
                "| {} | {} | {threads} | {value} | {} |",
                knee.workload, knee.implementation, knee.loads_tried
            );
        }
    }
    out.push(("knees".to_owned(), k));
    out
}

/// Per workload and load, each style's system calls per request by name (medians over the runs
/// that counted them with `--syscalls`), the calls no style made left out.
fn mechanisms(loaded: &[Loaded]) -> String {
    type PerCall = BTreeMap<String, Vec<f64>>;
    let mut by_point: BTreeMap<(String, String), BTreeMap<String, PerCall>> = BTreeMap::new();
    for l in loaded {
        let r = &l.result;
        let (Some(counts), true) = (&r.server_syscalls, r.summary.requests > 0) else { continue };
        let style = by_point
            .entry((r.workload.name.clone(), r.parameters.load.clone()))
            .or_default()
            .entry(r.implementation.name.clone())
            .or_default();
        for (call, n) in counts {
            style.entry(call.clone()).or_default().push(*n as f64 / r.summary.requests as f64);
        }
    }
    if by_point.is_empty() {
        return "No runs with `--syscalls` in these results.\n".into();
    }
    let mut out = String::new();
    for ((workload, load), styles) in by_point {
        let mut calls: Vec<String> =
            styles.values().flat_map(|c| c.iter().filter(|(_, v)| median(v) >= 0.05).map(|(k, _)| k.clone())).collect();
        calls.sort_by_key(|c| (c != "all", c.clone()));
        calls.dedup();
        let _ = writeln!(out, "### {workload} {load}\n");
        let _ = writeln!(out, "| style | {} |", calls.join(" | "));
        let _ = writeln!(out, "|---|{}", "---:|".repeat(calls.len()));
        for (style, per_call) in styles {
            let cells: Vec<String> = calls
                .iter()
                .map(|c| per_call.get(c).map_or_else(|| "0".into(), |v| format!("{:.1}", median(v))))
                .collect();
            let _ = writeln!(out, "| {style} | {} |", cells.join(" | "));
        }
        out.push('\n');
    }
    out
}

/// The figures section of the markdown file `markdown`: each figure linked relative to it, with its
/// caption under it.
fn figures_section(figures: &[Drawn], markdown: &Path) -> (String, String) {
    let mut f = String::new();
    for fig in figures {
        let shown = link_from(markdown, &fig.svg).unwrap_or_else(|| fig.svg.clone());
        let title = fig.svg.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let _ = writeln!(f, "![{}]({})\n\n*{title}: {}*\n", title.replace('-', " "), shown.display(), fig.caption);
    }
    ("figures".to_owned(), f)
}

/// Removes the figures in `folders` that this report did not write (by [`plots::NAMES`]' prefixes,
/// SVG and PNG), so that a report folder never keeps a figure of another run beside this one's.
fn remove_stale_figures(written: &[Drawn], folders: &[&Path]) -> Result<()> {
    let kept: std::collections::BTreeSet<PathBuf> =
        written.iter().flat_map(|d| [d.svg.clone(), d.svg.with_extension("png")]).collect();
    for folder in folders {
        for entry in std::fs::read_dir(folder).with_context(|| format!("reading {}", folder.display()))? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let figure =
                plots::NAMES.iter().any(|p| name.starts_with(p)) && (name.ends_with(".svg") || name.ends_with(".png"));
            if figure && !kept.contains(&path) {
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                eprintln!("removed {}: not a figure of these results", path.display());
            }
        }
    }
    Ok(())
}

/// `target` as a relative link from the markdown file `markdown` (its directory and `target` must
/// exist).
fn link_from(markdown: &Path, target: &Path) -> Option<PathBuf> {
    let dir = match markdown.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.canonicalize().ok()?,
        _ => std::env::current_dir().ok()?,
    };
    let target = target.canonicalize().ok()?;
    let common = dir.components().zip(target.components()).take_while(|(a, b)| a == b).count();
    let ups = dir.components().count() - common;
    let mut link: PathBuf = std::iter::repeat_n(Component::ParentDir, ups).collect();
    link.extend(target.components().skip(common));
    Some(link)
}

fn environment(loaded: &[Loaded]) -> String {
    let r: &RunResult = &loaded[0].result;
    let mut commits: Vec<String> = loaded.iter().filter_map(|l| l.result.tool.git_commit.clone()).collect();
    commits.sort();
    commits.dedup();
    let pinned = loaded.iter().filter(|l| l.result.parameters.pinning.is_some()).count();
    format!(
        "{} result files. Machine: {} ({} cores, {:.1} GiB), kernel {}; {}; commit {}. \
         Generator: {} thread(s); generator and servers pinned to disjoint CPUs in {pinned} of the runs; \
         window {} s after {} s warm-up.\n",
        loaded.len(),
        r.machine.cpu_model,
        r.machine.cores,
        r.machine.memory_bytes as f64 / (1u64 << 30) as f64,
        r.machine.kernel,
        r.tool.rustc,
        commits.join(", "),
        r.parameters.generator_threads,
        r.parameters.duration_s,
        r.parameters.warmup_s,
    )
}

/// Replaces the text between `<!-- herdbench:begin NAME -->` and `<!-- herdbench:end NAME -->`
/// for every section that has markers; a section without markers in `text` is skipped.
pub fn replace_sections(text: &str, sections: &[(String, String)]) -> Result<String> {
    let mut text = text.to_owned();
    for (name, body) in sections {
        let begin = format!("<!-- herdbench:begin {name} -->");
        let end = format!("<!-- herdbench:end {name} -->");
        let (Some(b), Some(e)) = (text.find(&begin), text.find(&end)) else { continue };
        if e < b {
            bail!("marker {end} comes before {begin}");
        }
        text.replace_range(b + begin.len()..e, &format!("\n{body}\n"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanisms_table_gives_calls_per_request_and_leaves_out_rare_ones() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../results/baseline/smoke/threadpool-herd-mixed-500-tdefault-01.json"
        ))
        .expect("a committed result file");
        let mut r: herd_record::result::RunResult = serde_json::from_str(&text).expect("valid");
        r.summary.requests = 1000;
        r.server_syscalls = Some(BTreeMap::from([
            ("all".to_owned(), 3000),
            ("futex".to_owned(), 1000),
            ("read".to_owned(), 10), // 0.01 per request: noise, not a mechanism
        ]));
        let without = Loaded {
            path: PathBuf::from("b.json"),
            result: {
                let mut o = r.clone();
                o.server_syscalls = None;
                o
            },
        };
        let table = mechanisms(&[Loaded { path: PathBuf::from("a.json"), result: r }, without]);
        assert!(table.contains("| style | all | futex |"), "{table}");
        assert!(table.contains("| threadpool | 3.0 | 1.0 |"), "runs without --syscalls are not zeros: {table}");
        assert_eq!(mechanisms(&[]), "No runs with `--syscalls` in these results.\n");
    }

    #[test]
    fn only_marked_sections_change() {
        let doc = "prose\n<!-- herdbench:begin tables -->\nold\n<!-- herdbench:end tables -->\nmore prose\n";
        let out = replace_sections(doc, &[("tables".into(), "new".into()), ("absent".into(), "x".into())])
            .expect("valid markers");
        assert_eq!(out, "prose\n<!-- herdbench:begin tables -->\nnew\n<!-- herdbench:end tables -->\nmore prose\n");
        let bad = "<!-- herdbench:end t -->\n<!-- herdbench:begin t -->";
        assert!(replace_sections(bad, &[("t".into(), "x".into())]).is_err());
    }
}
