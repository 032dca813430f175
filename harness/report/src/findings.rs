//! Findings the tool checks: each claim in REPORT.md names the comparison it rests on, and
//! `harness report` says whether the result files support it.
//!
//! A finding ends with a check line:
//!
//! ```text
//! > check: herd-mixed 10k cpu event-handler < threadpool
//! ```
//!
//! read as "on herd-mixed at 10k/s, event-handler's server CPU per request is lower than
//! threadpool's". The operator is `<`, `>` or `≈` (within 10 %; `≈15%` for another tolerance); the
//! metric is one of `harness compare`'s (p50, p99, cpu, syscalls, switches, throughput). `harness report --update REPORT.md`
//! appends the verdict to the line, replacing any earlier one:
//!
//! ```text
//! > check: herd-mixed 10k cpu event-handler < threadpool — supported: ratio 0.62 (0.58–0.66), 7 rounds
//! ```
//!
//! The evidence is paired: the two styles' runs from the same folder and the same round of
//! `run --repeat` (run back to back, so the machine's slow drift cancels out in their ratio). The
//! ratio's interval is the median ratio widened by the noise band `harness compare` uses (3 × the
//! ratios' relative median absolute deviation), as a factor: median ÷ (1 + band) to median ×
//! (1 + band), so that a ratio's interval never crosses zero. The verdict is **supported** if the
//! whole interval is on the claimed side of 1 (inside 1/1.1–1.1 for `≈`), **not supported** if the
//! whole interval is on the other side, and **not resolved by the data** otherwise, or with fewer
//! than three pairs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::collection::{Key, Loaded, Metrics, median, noise_band};
use crate::compare::MetricName;

/// The factor of the noise band, as `harness compare --noise-k` defaults to.
const NOISE_K: f64 = 3.0;
/// Pairs below this say nothing about their own noise.
const MIN_PAIRS: usize = 3;
/// `≈` holds when the ratio stays within this factor of 1, unless the claim gives its own.
const SIMILAR: f64 = 1.1;

/// How the first style's metric relates to the second's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Relation {
    Lower,
    Higher,
    /// Within this factor of each other (1.1: 10 %).
    Similar(f64),
}

/// One finding's comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub workload: String,
    pub load: String,
    pub metric: MetricName,
    pub a: String,
    pub relation: Relation,
    pub b: String,
}

impl Claim {
    /// Parses `workload load metric A op B`.
    pub fn parse(text: &str) -> Result<Self> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let [workload, load, metric, a, op, b] = words[..] else {
            bail!(
                "a check reads `workload load metric A <|>|≈ B` (e.g. `herd-mixed 10k cpu event-handler < threadpool`), not `{text}`"
            );
        };
        let metric = <MetricName as clap::ValueEnum>::from_str(metric, true).map_err(|_| {
            anyhow::anyhow!(
                "unknown metric `{metric}` in `{text}`: use p50, p99, cpu, syscalls, switches or throughput"
            )
        })?;
        let relation = match op {
            "<" => Relation::Lower,
            ">" => Relation::Higher,
            _ => match op.strip_prefix('≈').or_else(|| op.strip_prefix('~')) {
                Some("") => Relation::Similar(SIMILAR),
                Some(pct) => match pct.strip_suffix('%').and_then(|p| p.parse::<f64>().ok()) {
                    Some(p) if p > 0.0 => Relation::Similar(1.0 + p / 100.0),
                    _ => bail!("a tolerance reads like `≈15%`, not `{op}` in `{text}`"),
                },
                None => bail!("unknown comparison `{op}` in `{text}`: use <, > or ≈ (or ≈15%)"),
            },
        };
        Ok(Self { workload: workload.into(), load: load.into(), metric, a: a.into(), relation, b: b.into() })
    }
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.relation {
            Relation::Lower => "<".to_owned(),
            Relation::Higher => ">".to_owned(),
            Relation::Similar(f) if (f - SIMILAR).abs() < 1e-9 => "≈".to_owned(),
            Relation::Similar(f) => format!("≈{}%", ((f - 1.0) * 100.0).round()),
        };
        let metric =
            clap::ValueEnum::to_possible_value(&self.metric).map(|v| v.get_name().to_owned()).unwrap_or_default();
        write!(f, "{} {} {metric} {} {op} {}", self.workload, self.load, self.a, self.b)
    }
}

/// What the data says of a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum Support {
    Supported(Evidence),
    NotSupported(Evidence),
    NotResolved(Option<Evidence>, String),
}

/// The paired ratios behind a verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub median: f64,
    pub low: f64,
    pub high: f64,
    pub pairs: usize,
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ratio {:.2} ({:.2}–{:.2}), {} rounds", self.median, self.low, self.high, self.pairs)
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Support::Supported(e) => write!(f, "supported: {e}"),
            Support::NotSupported(e) => write!(f, "not supported: {e}"),
            Support::NotResolved(Some(e), why) => write!(f, "not resolved by the data: {e} ({why})"),
            Support::NotResolved(None, why) => write!(f, "not resolved by the data ({why})"),
        }
    }
}

/// The ratio A/B of the claim's metric, one per pair of runs from the same folder and round.
pub fn paired_ratios(claim: &Claim, loaded: &[Loaded]) -> Vec<f64> {
    type Slot = (PathBuf, Option<usize>);
    let mut sides: [BTreeMap<Slot, Vec<f64>>; 2] = [BTreeMap::new(), BTreeMap::new()];
    for l in loaded {
        let key = Key::of(&l.result);
        if key.workload != claim.workload || key.load != claim.load || key.threads.is_some() {
            continue;
        }
        let side = if key.implementation == claim.a {
            0
        } else if key.implementation == claim.b {
            1
        } else {
            continue;
        };
        let slot = (l.path.parent().map(PathBuf::from).unwrap_or_default(), l.result.parameters.round);
        sides[side].entry(slot).or_default().push(claim.metric.value(&Metrics::of(&l.result)));
    }
    let [a, b] = sides;
    a.iter()
        .filter_map(|(slot, va)| {
            let vb = b.get(slot)?;
            // Without rounds a folder holds one pair at most; more would be ambiguous.
            (va.len() == 1 && vb.len() == 1).then(|| va[0] / vb[0])
        })
        .filter(|r| r.is_finite())
        .collect()
}

/// Judges `claim` by the paired ratios in `loaded`.
pub fn evaluate(claim: &Claim, loaded: &[Loaded]) -> Support {
    let ratios = paired_ratios(claim, loaded);
    if ratios.is_empty() {
        return Support::NotResolved(None, "no paired runs of these styles on this workload and load".into());
    }
    let m = median(&ratios);
    let band = noise_band(NOISE_K, &[ratios.as_slice()]);
    let e = Evidence { median: m, low: m / (1.0 + band), high: m * (1.0 + band), pairs: ratios.len() };
    if ratios.len() < MIN_PAIRS {
        return Support::NotResolved(Some(e), format!("fewer than {MIN_PAIRS} paired rounds"));
    }
    let (holds, fails) = match claim.relation {
        Relation::Lower => (e.high < 1.0, e.low > 1.0),
        Relation::Higher => (e.low > 1.0, e.high < 1.0),
        Relation::Similar(f) => (e.low >= 1.0 / f && e.high <= f, e.high < 1.0 / f || e.low > f),
    };
    if holds {
        Support::Supported(e)
    } else if fails {
        Support::NotSupported(e)
    } else {
        Support::NotResolved(Some(e), "the interval straddles the claim".into())
    }
}

/// Finds every check line in `text`, judges it, and returns the text with each verdict written
/// after its check, plus the verdicts in order.
pub fn check_all(text: &str, loaded: &[Loaded]) -> Result<(String, Vec<(Claim, Support)>)> {
    check_part(text, loaded, None)
}

/// [`check_all`] for the check lines of one part of a document: `check [PART]:` lines rest on the
/// runs of that part (a report made with `--part PART`), plain `check:` lines on the main runs; each
/// report judges only its own lines and leaves the others as they are.
pub fn check_part(text: &str, loaded: &[Loaded], part: Option<&str>) -> Result<(String, Vec<(Claim, Support)>)> {
    let marker = match part {
        Some(p) => format!("check [{p}]:"),
        None => "check:".to_owned(),
    };
    let mut out = String::with_capacity(text.len());
    let mut verdicts = Vec::new();
    for line in text.split_inclusive('\n') {
        // A check line: `check:`, possibly quoted (`>`) and indented under its finding.
        let body = line.trim_start().trim_start_matches('>').trim_start();
        if !body.starts_with(&marker) {
            out.push_str(line);
            continue;
        }
        let (head, rest) = line.split_at(line.len() - body.len() + marker.len());
        let claim_text = rest.split(" — ").next().unwrap_or_default().trim();
        let claim = Claim::parse(claim_text)?;
        let verdict = evaluate(&claim, loaded);
        let newline = if line.ends_with('\n') { "\n" } else { "" };
        out.push_str(&format!("{head} {claim} — {verdict}{newline}"));
        verdicts.push((claim, verdict));
    }
    Ok((out, verdicts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_record::result::RunResult;

    fn claim(text: &str) -> Claim {
        Claim::parse(text).expect("valid claim")
    }

    /// Result files for two styles over `rounds`, with CPU per request taken from `cpu(style, round)`.
    fn runs(template: &RunResult, rounds: usize, cpu: impl Fn(&str, usize) -> f64) -> Vec<Loaded> {
        let mut out = Vec::new();
        for round in 1..=rounds {
            for style in ["a", "b"] {
                let mut r = template.clone();
                r.implementation.name = style.into();
                r.parameters.round = Some(round);
                r.parameters.threads = None;
                r.summary.requests = 1_000_000;
                for (i, s) in r.servers.iter_mut().enumerate() {
                    // All the CPU on the first server: the metric is the herd's sum.
                    let cpu_user_s = if i == 0 { cpu(style, round) } else { 0.0 };
                    s.window = Some(herd_record::counters::Counters { cpu_user_s, ..Default::default() });
                }
                out.push(Loaded { path: PathBuf::from(format!("results/x/{style}-{round}.json")), result: r });
            }
        }
        out
    }

    fn template() -> RunResult {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../results/baseline/smoke/threadpool-herd-mixed-500-tdefault-01.json"
        ))
        .expect("a committed result file");
        let mut r: RunResult = serde_json::from_str(&text).expect("a valid result");
        r.workload.name = "w".into();
        r.parameters.load = "10k".into();
        r
    }

    #[test]
    fn claims_parse_and_print_back() {
        let c = claim("herd-mixed 10k cpu event-handler < threadpool");
        assert_eq!((c.metric, c.relation), (MetricName::Cpu, Relation::Lower));
        assert_eq!(c.to_string(), "herd-mixed 10k cpu event-handler < threadpool");
        assert_eq!(claim("w 1k p99 a ~ b").relation, Relation::Similar(1.1));
        let wide = claim("w 1k cpu a ≈15% b");
        assert!(matches!(wide.relation, Relation::Similar(f) if (f - 1.15).abs() < 1e-9));
        assert_eq!(wide.to_string(), "w 1k cpu a ≈15% b");
        assert!(Claim::parse("w 1k cpu a ≈x% b").is_err());
        let err = Claim::parse("herd-mixed 10k latency a < b").expect_err("no such metric").to_string();
        assert!(err.contains("unknown metric `latency`"), "{err}");
        assert!(Claim::parse("a < b").is_err());
    }

    #[test]
    fn paired_rounds_decide_and_drift_cancels() {
        let t = template();
        // The machine slows down 3x over the rounds, but a uses 20 % less CPU in every round.
        let loaded = runs(&t, 5, |s, r| (if s == "a" { 0.8 } else { 1.0 }) * r as f64);
        match evaluate(&claim("w 10k cpu a < b"), &loaded) {
            Support::Supported(e) => assert!((e.median - 0.8).abs() < 1e-9 && e.pairs == 5, "{e}"),
            v => panic!("expected supported, got {v}"),
        }
        assert!(matches!(evaluate(&claim("w 10k cpu a > b"), &loaded), Support::NotSupported(_)));
        assert!(matches!(evaluate(&claim("w 10k cpu a ≈ b"), &loaded), Support::NotSupported(_)));
        assert!(matches!(evaluate(&claim("w 10k cpu a ≈30% b"), &loaded), Support::Supported(_)));
        assert!(matches!(evaluate(&claim("w 2k cpu a < b"), &loaded), Support::NotResolved(None, _)));
    }

    #[test]
    fn noisy_or_few_pairs_resolve_nothing() {
        let t = template();
        let noisy = runs(&t, 6, |s, r| if s == "a" && r % 2 == 0 { 1.5 } else { 1.0 });
        assert!(matches!(evaluate(&claim("w 10k cpu a < b"), &noisy), Support::NotResolved(Some(_), _)));
        let few = runs(&t, 2, |s, _| if s == "a" { 0.5 } else { 1.0 });
        assert!(matches!(evaluate(&claim("w 10k cpu a < b"), &few), Support::NotResolved(Some(_), _)));
    }

    #[test]
    fn check_lines_get_their_verdict_replaced() {
        let t = template();
        let loaded = runs(&t, 3, |s, _| if s == "a" { 0.5 } else { 1.0 });
        let text = "1. **a is cheaper.**\n   > check: w 10k cpu a < b — not supported: old\nmore prose\n";
        let (out, verdicts) = check_all(text, &loaded).expect("checks parse");
        assert_eq!(verdicts.len(), 1);
        assert_eq!(
            out,
            "1. **a is cheaper.**\n   > check: w 10k cpu a < b — supported: ratio 0.50 (0.50–0.50), 3 rounds\nmore prose\n"
        );
        assert!(check_all("check: nonsense\n", &loaded).is_err());
        let prose = "A health check: not a finding.\n";
        // Another part's check lines are left alone, and a part judges only its own.
        let other = "   > check [guests]: w 10k cpu a < b — old\n";
        assert_eq!(check_all(other, &loaded).expect("checks").0, other);
        let (judged, _) = check_part(other, &loaded, Some("guests")).expect("checks");
        assert!(judged.starts_with("   > check [guests]: w 10k cpu a < b — supported"), "{judged}");
        assert_eq!(check_all(prose, &loaded).expect("no checks").0, prose);
    }
}
