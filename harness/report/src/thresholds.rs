//! `--threshold`: pass/fail criteria on a run, as k6 has them, for CI pipelines that want a
//! verdict from one command: `--threshold 'p99<10ms' --threshold 'errors==0'`.
//!
//! A threshold is `METRIC OP VALUE`: a metric as [`MetricName::name`] spells it (`p50`, `p99`,
//! `p999`, `cpu-per-request`, `syscalls-per-request`, `switches-per-request`, `throughput`,
//! `errors`), one of `<` `<=` `>` `>=` `==` `!=`, and a value — with its unit for the times (`800us`,
//! `10ms`, `1s`), a plain number otherwise (`throughput>9.5k` takes the load's suffixes). Each is
//! judged on the result the run just wrote (the measurement is kept whatever the verdict), printed
//! as a table, and any breach ends the command with exit status [`EXIT_BREACHED`] — k6's — so a
//! pipeline can tell "slower than promised" (99) from "could not measure" (1) and bad arguments (2).

use std::fmt;
use std::str::FromStr;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::collection::Metrics;
use crate::compare::MetricName;
use herd_record::result::RunResult;

/// The exit status of a command whose thresholds were breached (k6's `ThresholdsHaveFailed`).
pub const EXIT_BREACHED: u8 = 99;

/// One criterion: `metric op value`, the value in the metric's unit (µs for times).
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub metric: MetricName,
    pub op: Op,
    pub value: f64,
    /// As the user wrote it.
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Equal,
    NotEqual,
}

impl Op {
    /// Longest first, so that `<=` is not read as `<`.
    const SPELLINGS: [(&'static str, Op); 6] = [
        ("<=", Op::LessOrEqual),
        (">=", Op::GreaterOrEqual),
        ("==", Op::Equal),
        ("!=", Op::NotEqual),
        ("<", Op::Less),
        (">", Op::Greater),
    ];

    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Less => a < b,
            Op::LessOrEqual => a <= b,
            Op::Greater => a > b,
            Op::GreaterOrEqual => a >= b,
            Op::Equal => a == b,
            Op::NotEqual => a != b,
        }
    }
}

impl FromStr for Threshold {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let example = "write a threshold as METRIC OP VALUE, e.g. 'p99<10ms', 'errors==0' or 'cpu-per-request<300us'";
        let (at, spelling, op) = Op::SPELLINGS
            .iter()
            .filter_map(|&(spelling, op)| text.find(spelling).map(|at| (at, spelling, op)))
            .min_by_key(|&(at, spelling, _)| (at, std::cmp::Reverse(spelling.len())))
            .ok_or_else(|| format!("`{text}` has no comparison (<, <=, >, >=, ==, !=): {example}"))?;
        let (name, value) = (text[..at].trim(), text[at + spelling.len()..].trim());
        let metric = MetricName::named(name).map_err(|e| format!("`{text}`: {e}"))?;
        let value = if metric.is_time() {
            if value.chars().all(|c| c.is_ascii_digit() || c == '.') {
                return Err(format!(
                    "`{text}`: {} is a time: give its unit, e.g. {name}{spelling}{value}ms or {name}{spelling}{value}us",
                    metric.name()
                ));
            }
            herd_record::units::parse_duration(value).map_err(|e| format!("`{text}`: {e}"))?.as_secs_f64() * 1e6
        } else if metric == MetricName::Throughput {
            let load: herd_record::units::Load =
                value.trim_end_matches("/s").parse().map_err(|e| format!("`{text}`: {e}"))?;
            load.offered_rps()
                .ok_or_else(|| format!("`{text}`: throughput is compared with a rate, e.g. throughput>9.5k"))?
        } else {
            value.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| {
                format!("`{text}`: `{value}` is not a number ({} counts {})", metric.name(), metric.unit())
            })?
        };
        Ok(Threshold { metric, op, value, text: text.trim().to_owned() })
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Thresholds on what only a herd's servers tell (CPU, system calls, switches) cannot be judged
/// by a bare generator: an error for `harness load`, said before anything is measured.
pub fn only_of_the_generator(thresholds: &[Threshold]) -> Result<(), String> {
    match thresholds.iter().find(|t| t.metric.of_servers()) {
        Some(t) => Err(format!(
            "--threshold '{t}': {} is counted on the herd's servers, which `harness load` does not run; \
             use `harness run` (it starts and measures them), or a threshold on p50, p99, p999, throughput or errors",
            t.metric.name()
        )),
        None => Ok(()),
    }
}

/// One threshold judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub threshold: Threshold,
    /// The run's value, `None` if the run did not measure it (`--syscalls` not given).
    pub value: Option<f64>,
    pub met: bool,
}

/// Judges every threshold on `result`. A metric the run did not measure is a breach: a pipeline
/// that asked for it must not pass without it.
pub fn judge(thresholds: &[Threshold], result: &RunResult) -> Vec<Judged> {
    let metrics = Metrics::of(result);
    thresholds
        .iter()
        .map(|t| {
            let value = Some(t.metric.value(&metrics)).filter(|v| v.is_finite());
            let met = value.is_some_and(|v| t.op.holds(v, t.value));
            Judged { threshold: t.clone(), value, met }
        })
        .collect()
}

/// The table of `judged`, and an error (exit status [`EXIT_BREACHED`]) naming each breach.
pub fn report(judged: &[Judged]) -> anyhow::Result<()> {
    if judged.is_empty() {
        return Ok(());
    }
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header(["threshold", "measured", "verdict"]);
    for j in judged {
        let measured = match j.value {
            Some(v) => format!("{} {}", trim(v), j.threshold.metric.unit()),
            None => "not measured".to_owned(),
        };
        table.add_row([j.threshold.text.clone(), measured, (if j.met { "ok" } else { "BREACHED" }).to_owned()]);
    }
    println!("{table}");
    let breached: Vec<String> = judged.iter().filter(|j| !j.met).map(|j| format!("'{}'", j.threshold)).collect();
    if breached.is_empty() {
        return Ok(());
    }
    Err(Breached(breached).into())
}

fn trim(v: f64) -> String {
    if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.3}") }
}

/// The error of a run whose thresholds were breached; `main` turns it into [`EXIT_BREACHED`].
#[derive(Debug)]
pub struct Breached(pub Vec<String>);

impl fmt::Display for Breached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "threshold(s) breached: {} (exit status {EXIT_BREACHED})", self.0.join(", "))
    }
}

impl std::error::Error for Breached {}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Threshold {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn thresholds_read_as_k6_writes_them() {
        let t = parse("p99<10ms");
        assert_eq!((t.metric, t.op, t.value), (MetricName::P99, Op::Less, 10_000.0));
        assert_eq!(parse("p50 <= 800us").value, 800.0);
        assert_eq!(parse("cpu-per-request<300us").metric, MetricName::Cpu);
        assert_eq!(parse("cpu<300us").metric, MetricName::Cpu, "compare's short name");
        assert_eq!((parse("errors==0").op, parse("errors==0").value), (Op::Equal, 0.0));
        assert_eq!(parse("throughput>=9.5k").value, 9500.0);
        assert_eq!(parse("throughput>2000/s").value, 2000.0);
        assert_eq!(parse("syscalls-per-request!=20").op, Op::NotEqual);
    }

    #[test]
    fn a_bad_threshold_says_what_to_write_instead() {
        let err = |s: &str| s.parse::<Threshold>().expect_err(s);
        assert!(err("p99").contains("no comparison"), "{}", err("p99"));
        assert!(err("p99<10").contains("give its unit, e.g. p99<10ms"), "{}", err("p99<10"));
        assert!(err("latency<10ms").contains("the metrics are p50, p99"), "{}", err("latency<10ms"));
        assert!(err("errors==none").contains("not a number"), "{}", err("errors==none"));
        assert!(err("p99<10 parsecs").contains("unknown unit"), "{}", err("p99<10 parsecs"));
        let load_only = only_of_the_generator(&[parse("p99<1s"), parse("cpu-per-request<300us")]);
        assert!(load_only.expect_err("cpu needs the servers").contains("use `harness run`"));
        assert!(only_of_the_generator(&[parse("p99<1s"), parse("errors==0")]).is_ok());
    }

    fn result() -> RunResult {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../results/baseline/smoke/threadpool-herd-mixed-500-tdefault-01.json"
        ))
        .expect("a committed result file");
        serde_json::from_str(&text).expect("a valid result")
    }

    #[test]
    fn a_breach_or_a_metric_not_measured_fails_and_the_rest_pass() {
        let r = result();
        let p99 = r.summary.latency_us.p99 as f64;
        let judged = judge(
            &[
                parse(&format!("p99<={}us", p99)),
                parse(&format!("p99<{}us", p99)),
                parse("errors==0"),
                parse("syscalls-per-request<1000"),
            ],
            &r,
        );
        let verdicts: Vec<bool> = judged.iter().map(|j| j.met).collect();
        assert_eq!(r.summary.errors, 0);
        assert!(r.server_syscalls.is_none(), "the smoke result has no --syscalls counts");
        assert_eq!(verdicts, [true, false, true, false]);
        assert_eq!(judged[3].value, None, "not measured");
        let err = report(&judged).expect_err("two breaches");
        let breached = err.downcast_ref::<Breached>().expect("the breach error, for exit 99");
        assert_eq!(breached.0, [format!("'p99<{p99}us'"), "'syscalls-per-request<1000'".to_owned()]);
        assert!(report(&judged[..1]).is_ok());
    }
}
