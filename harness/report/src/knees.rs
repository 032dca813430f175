//! The capacity knee: how far each style's load can rise before it stops meeting the objective.

use std::collections::BTreeMap;

use crate::collection::{self, Key, Loaded, Metrics, Row};

/// The capacity knee of one style on one workload.
#[derive(Debug, Clone)]
pub struct Knee {
    pub workload: String,
    pub implementation: String,
    pub threads: Option<usize>,
    pub connections: usize,
    /// Measured with the servers pinned apart from the generator (`run --pin`).
    pub pinned: bool,
    /// Highest offered rate meeting the objective, if any did.
    pub knee_rps: Option<f64>,
    pub loads_tried: usize,
}

/// Medians per experiment.
pub fn rows(loaded: &[Loaded]) -> Vec<Row> {
    collection::group(loaded)
        .into_iter()
        .map(|(key, runs)| {
            let all: Vec<Metrics> = runs.iter().map(|r| Metrics::of(r)).collect();
            Row { key, repeats: runs.len(), m: Metrics::median_of(&all), spread: Metrics::relative_spread_of(&all) }
        })
        .collect()
}

/// The capacity knee: the highest offered rate L such that every measured rate up to L had
/// achieved ≥ 99 % of offered, no errors, no dropped floods and p99 ≤ the objective (a pass above a
/// failure does not count), for every (workload, style, threads) measured at two or more open-loop rates.
pub fn knees(rows: &[Row], slo_us: f64) -> Vec<Knee> {
    // One series per experiment but its load: pinned and unpinned runs are series apart.
    let mut series: BTreeMap<Key, Vec<&Row>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.m.offered_rps.is_some()) {
        series.entry(r.key.series()).or_default().push(r);
    }
    series
        .into_iter()
        .filter(|(_, rs)| rs.len() >= 2)
        .map(|(Key { workload, implementation, threads, connections, pinned, .. }, rs)| {
            let mut rs = rs;
            rs.sort_by(|a, b| a.m.offered_rps.unwrap_or(0.0).total_cmp(&b.m.offered_rps.unwrap_or(0.0)));
            let knee_rps = rs
                .iter()
                .take_while(|r| {
                    let offered = r.m.offered_rps.unwrap_or(f64::INFINITY);
                    r.m.achieved_rps >= 0.99 * offered
                        && r.m.errors == 0.0
                        && r.m.floods_dropped == 0.0
                        && r.m.p99_us <= slo_us
                })
                .filter_map(|r| r.m.offered_rps)
                .last();
            Knee { workload, implementation, threads, connections, pinned, knee_rps, loads_tried: rs.len() }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(implementation: &str, offered: f64, achieved: f64, p99_us: f64, errors: f64) -> Row {
        let r = Row::example(implementation, offered);
        let m = Metrics { achieved_rps: achieved, p99_us, p999_us: p99_us, max_us: p99_us, errors, ..r.m };
        Row { m, spread: m, ..r }
    }

    #[test]
    fn knee_is_the_highest_load_meeting_every_condition() {
        let rows = vec![
            row("a", 1000.0, 1000.0, 500.0, 0.0),
            row("a", 2000.0, 1995.0, 9000.0, 0.0),
            row("a", 3000.0, 2900.0, 9000.0, 0.0),   // achieved < 99 %
            row("a", 4000.0, 4000.0, 20_000.0, 0.0), // p99 over the objective
            row("b", 1000.0, 1000.0, 500.0, 3.0),    // errors
            row("b", 2000.0, 2000.0, 500.0, 0.0),    // passes, but above a failure
            row("d", 1000.0, 1000.0, 500.0, 0.0),
            row("d", 2000.0, 2000.0, 50_000.0, 0.0),
            row("d", 3000.0, 3000.0, 500.0, 0.0), // a pass above a failure is not the knee
            row("c", 1000.0, 1000.0, 500.0, 0.0), // one load: no knee
            row("e", 1000.0, 1000.0, 500.0, 0.0),
            Row {
                m: Metrics { floods_dropped: 7.0, ..row("e", 2000.0, 2000.0, 500.0, 0.0).m },
                ..row("e", 2000.0, 0.0, 0.0, 0.0)
            },
        ];
        let knees = knees(&rows, 10_000.0);
        assert_eq!(knees.len(), 4);
        assert_eq!((knees[0].implementation.as_str(), knees[0].knee_rps), ("a", Some(2000.0)));
        assert_eq!((knees[1].implementation.as_str(), knees[1].knee_rps), ("b", None));
        assert_eq!((knees[2].implementation.as_str(), knees[2].knee_rps), ("d", Some(1000.0)));
        // Dropped floods: the herd disagrees, so that rate was not served.
        assert_eq!((knees[3].implementation.as_str(), knees[3].knee_rps), ("e", Some(1000.0)));
    }

    #[test]
    fn pinned_and_unpinned_runs_are_knees_apart() {
        let pinned = |r: Row| Row { key: Key { pinned: true, ..r.key.clone() }, ..r };
        let rows = vec![
            row("a", 1000.0, 1000.0, 500.0, 0.0),
            row("a", 2000.0, 1500.0, 50_000.0, 0.0), // unpinned: the generator starved at 2k
            pinned(row("a", 1000.0, 1000.0, 500.0, 0.0)),
            pinned(row("a", 2000.0, 2000.0, 900.0, 0.0)),
            pinned(row("a", 3000.0, 3000.0, 950.0, 0.0)),
        ];
        let knees = knees(&rows, 10_000.0);
        let of = |pinned: bool| knees.iter().find(|k| k.pinned == pinned).and_then(|k| k.knee_rps);
        assert_eq!((knees.len(), of(false), of(true)), (2, Some(1000.0), Some(3000.0)));
        assert_eq!(collection::threads_label(None, true), "default, pinned");
    }
}
