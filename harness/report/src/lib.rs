//! herdbench's reports, from result files alone: `cargo test -p herd-report` builds no style and no
//! runtime. It reads what `herd-record` defines and writes tables, figures, REPORT.md's generated
//! parts, verdicts and exports; the harness's commands (`report`, `compare`, `export`, `gate
//! check`, `--threshold`) call it.
//!
//! # Layout (dependency order, lowest first)
//! - [`collection`]: result sets — files loaded, grouped by experiment ([`collection::Key`]), the
//!   per-run metrics ([`collection::Metrics`]), medians and noise bands.
//! - [`compare`]: a run against a baseline, and [`compare::MetricName`], the metrics by name.
//! - [`thresholds`]: `--threshold` pass/fail criteria (k6's, exit status 99).
//! - [`hlog`], [`export`]: HdrHistogram interval logs; Bencher Metric Format and
//!   github-action-benchmark JSON for CI trackers.
//! - [`gate`]: the per-style gate's metrics, baseline, bands and verdicts.
//! - [`summary`]: the table a run prints.
//! - [`glance`]: a report's first section: which style did best at what.
//! - [`findings`]: REPORT.md's checked claims.
//! - [`knees`]: the capacity knee of each style, from the medians per experiment.
//! - [`plots`]: the figures; [`scenario`]: the section on scenario runs.
//! - [`report`]: `harness report` — tables, knees, figures and REPORT.md's generated parts.
//! - [`html`]: the report as one self-contained HTML page.

pub mod collection;
pub mod compare;
pub mod export;
pub mod findings;
pub mod gate;
pub mod glance;
pub mod hlog;
pub mod html;
pub mod knees;
pub mod plots;
pub mod report;
pub mod scenario;
pub mod summary;
pub mod thresholds;
