//! Scenarios (`harness run --scenario FILE`): overload and faults inside one measured run.
//!
//! A scenario file (TOML, under `workloads/scenarios/`, unknown keys rejected) gives the run's
//! window as **phases** of offered load, each a multiple of the run's `--load` (`"0.5x"`) or a
//! rate of its own (`"5k"`), and **events** timed from the window's start that act on the herd
//! the run started:
//!
//! ```toml
//! description = "Welsh stops answering for 2 s (SIGSTOP, then SIGCONT)"
//! workload = "herd-mixed"   # the run's workload
//! objective = "10ms"        # a reply later than this is late (goodput counts the others)
//! step = "100ms"            # the finer timeline's step (default 100ms)
//! [[phase]]
//! name = "steady"
//! duration = "12s"
//! load = "0.5x"
//! [[event]]
//! action = "hang"           # hang (SIGSTOP … SIGCONT), crash (SIGKILL, restart), upstream-stall, upstream-fail
//! member = "Welsh"
//! at = "4s"
//! for = "2s"
//! ```
//!
//! The warm-up runs at the first phase's rate. The result records what happened when (each
//! event's planned and actual times), a timeline in `step`s (throughput, p50/p99, replies within
//! the objective, errors by kind and by server, each server's RSS and dropped floods, read from
//! the counters every server appends to `<logs>/<name>.samples.jsonl`), each phase's goodput and
//! Jain's fairness over connections, and a recovery record per disturbance ([`Recovery`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer};

use crate::base::clock::{self, MILLISECOND, Nanos};
use crate::env::herd::Herd;
use crate::load::{Failure, Progress, RateProfile, ScenarioLoad, StepPlan, StepReport};
use herd_record::scenario::{
    BASELINE, CONVERGED_HOLD, EventRecord, PhaseRecord, RECOVERED_WITHIN, RECOVERY_HOLD, Recovery, Sample,
    ScenarioRecord, ServerTally, StepRecord, jain,
};
use herd_record::units::Load;

/// A scenario file, as read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The file's stem (`overload`); filled in on load.
    #[serde(default, skip_deserializing)]
    pub name: String,
    /// One sentence on what the scenario does.
    pub description: String,
    /// The workload the run drives (a name in workloads/).
    pub workload: String,
    /// Latency objective: replies later than this are late (goodput counts the others).
    #[serde(deserialize_with = "duration")]
    pub objective: Duration,
    /// Step of the finer timeline.
    #[serde(default = "default_step", deserialize_with = "duration")]
    pub step: Duration,
    #[serde(rename = "phase")]
    pub phases: Vec<Phase>,
    #[serde(default, rename = "event")]
    pub events: Vec<Event>,
}

/// A stretch of the window at one offered rate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    #[serde(deserialize_with = "duration")]
    pub duration: Duration,
    /// `"0.5x"`: a multiple of the run's `--load`; `"5k"`: a rate of its own.
    pub load: PhaseLoad,
}

/// A phase's offered load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PhaseLoad {
    Times(f64),
    Rate(f64),
}

impl<'de> Deserialize<'de> for PhaseLoad {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for PhaseLoad {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let hint = "expected a multiple of the run's --load such as \"0.5x\" or a rate such as \"5k\"";
        if let Some(times) = s.trim().strip_suffix('x') {
            return match times.parse::<f64>() {
                Ok(t) if t.is_finite() && t > 0.0 => Ok(Self::Times(t)),
                _ => Err(format!("`{s}`: {hint}")),
            };
        }
        match s.parse::<Load>() {
            Ok(Load::Rate(r)) if r > 0.0 => Ok(Self::Rate(r)),
            _ => Err(format!("`{s}`: {hint} (a phase is open loop: not `max`)")),
        }
    }
}

impl PhaseLoad {
    fn rps(self, base: f64) -> f64 {
        match self {
            Self::Times(t) => t * base,
            Self::Rate(r) => r,
        }
    }
}

/// Something done to the herd at a time of the window.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Event {
    /// SIGSTOP to `member` at `at`, SIGCONT `for` later: a member that hangs, links and all.
    Hang {
        member: String,
        #[serde(deserialize_with = "duration")]
        at: Duration,
        #[serde(rename = "for", deserialize_with = "duration")]
        lasting: Duration,
    },
    /// SIGKILL to `member` at `at`, started again (same port, empty store) `restart_after` later.
    Crash {
        member: String,
        #[serde(deserialize_with = "duration")]
        at: Duration,
        #[serde(deserialize_with = "duration")]
        restart_after: Duration,
    },
    /// The places backend holds every request from `at` for `for` (answered when it ends).
    UpstreamStall {
        #[serde(deserialize_with = "duration")]
        at: Duration,
        #[serde(rename = "for", deserialize_with = "duration")]
        lasting: Duration,
    },
    /// The places backend answers every request 503 from `at` for `for`.
    UpstreamFail {
        #[serde(deserialize_with = "duration")]
        at: Duration,
        #[serde(rename = "for", deserialize_with = "duration")]
        lasting: Duration,
    },
}

impl Event {
    /// When it starts and ends, after the window's start.
    pub fn span(&self) -> (Duration, Duration) {
        match self {
            Self::Hang { at, lasting, .. }
            | Self::UpstreamStall { at, lasting }
            | Self::UpstreamFail { at, lasting } => (*at, *at + *lasting),
            Self::Crash { at, restart_after, .. } => (*at, *at + *restart_after),
        }
    }

    pub fn member(&self) -> Option<&str> {
        match self {
            Self::Hang { member, .. } | Self::Crash { member, .. } => Some(member),
            Self::UpstreamStall { .. } | Self::UpstreamFail { .. } => None,
        }
    }

    pub fn action(&self) -> &'static str {
        match self {
            Self::Hang { .. } => "hang",
            Self::Crash { .. } => "crash",
            Self::UpstreamStall { .. } => "upstream-stall",
            Self::UpstreamFail { .. } => "upstream-fail",
        }
    }

    /// `hang Welsh`, `upstream-stall`.
    pub fn label(&self) -> String {
        match self.member() {
            Some(m) => format!("{} {m}", self.action()),
            None => self.action().to_owned(),
        }
    }

    /// What the harness does, in order: at the start, and at the end.
    fn steps(&self) -> [Act; 2] {
        match self {
            Self::Hang { member, .. } => {
                [Act::Signal(member.clone(), libc::SIGSTOP), Act::Signal(member.clone(), libc::SIGCONT)]
            }
            Self::Crash { member, .. } => [Act::Kill(member.clone()), Act::Restart(member.clone())],
            Self::UpstreamStall { .. } => {
                [Act::Places(crate::places::OUTAGE_STALL), Act::Places(crate::places::OUTAGE_END)]
            }
            Self::UpstreamFail { .. } => {
                [Act::Places(crate::places::OUTAGE_FAIL), Act::Places(crate::places::OUTAGE_END)]
            }
        }
    }
}

/// One thing the harness does to the herd.
#[derive(Debug, Clone)]
enum Act {
    Signal(String, libc::c_int),
    Kill(String),
    Restart(String),
    /// A signal to the places backend (see [`crate::places`]'s outages).
    Places(libc::c_int),
}

fn default_step() -> Duration {
    Duration::from_millis(100)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    herd_record::units::parse_duration(&s).map_err(serde::de::Error::custom)
}

/// What a scenario disturbed, and when: a phase that raised the offered load, or a timed event.
struct Disturbance<'a> {
    label: String,
    /// When it started and ended (an event's, as the run did it).
    span: (Duration, Duration),
    /// Jain's fairness over connections in an overload phase.
    fairness: Option<f64>,
    event: Option<&'a Event>,
}

/// The committed scenarios (`workloads/scenarios/*.toml`), built into the binary like the
/// workloads (`herd_record::workload::BUILT_IN`).
pub const STANDARD: [(&str, &str); 4] = [
    ("member-crash", include_str!("../../../workloads/scenarios/member-crash.toml")),
    ("member-hang", include_str!("../../../workloads/scenarios/member-hang.toml")),
    ("overload", include_str!("../../../workloads/scenarios/overload.toml")),
    ("upstream-stall", include_str!("../../../workloads/scenarios/upstream-stall.toml")),
];

impl Scenario {
    /// Loads a built-in scenario ([`STANDARD`], the committed `workloads/scenarios/*.toml`) by
    /// name, or the file at `name` if it is a path.
    pub fn load(name: &str) -> Result<Self> {
        let p = Path::new(name);
        let (text, stem) = if p.extension().is_some() || p.components().count() > 1 {
            let text = std::fs::read_to_string(p).with_context(|| {
                format!("reading scenario {name} (the standard ones: {})", Self::standard().join(", "))
            })?;
            (text, p.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
        } else {
            let Some((stem, text)) = STANDARD.iter().find(|(n, _)| *n == name) else {
                bail!(
                    "no scenario `{name}`; use --scenario with one of: {} (or the path of a .toml file)",
                    Self::standard().join(", ")
                );
            };
            ((*text).to_owned(), (*stem).to_owned())
        };
        let mut s: Scenario = toml::from_str(&text).with_context(|| format!("in scenario {name}"))?;
        s.name = stem;
        s.check().with_context(|| format!("in scenario {name}"))?;
        Ok(s)
    }

    /// The names of the built-in scenarios.
    pub fn standard() -> Vec<String> {
        STANDARD.iter().map(|(n, _)| (*n).to_owned()).collect()
    }

    /// Phases and events that make sense: at least one phase, no empty phase, events inside the
    /// window and with a duration.
    pub fn check(&self) -> Result<()> {
        if self.phases.is_empty() {
            bail!("a scenario needs at least one [[phase]]");
        }
        if self.step.is_zero() || self.objective.is_zero() {
            bail!("step and objective must be above 0, e.g. step = \"100ms\", objective = \"10ms\"");
        }
        for p in &self.phases {
            if p.duration.is_zero() {
                bail!("phase {} lasts 0 s; give it a duration such as \"5s\"", p.name);
            }
        }
        let window = self.window();
        for e in &self.events {
            let (start, end) = e.span();
            if end <= start {
                bail!("event {} at {start:?} lasts 0 s; give it a `for` (or `restart_after`) above 0", e.label());
            }
            if end >= window {
                bail!("event {} ends at {end:?}, not inside the scenario's {window:?}", e.label());
            }
        }
        Ok(())
    }

    /// The measured window: every phase, end to end.
    pub fn window(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }

    /// Every member an event names must be in the herd.
    pub fn check_members(&self, servers: &[String]) -> Result<()> {
        for e in &self.events {
            if let Some(m) = e.member()
                && !servers.iter().any(|s| s == m)
            {
                bail!("event {} names {m}, not a server of this herd ({})", e.label(), servers.join(", "));
            }
        }
        Ok(())
    }

    /// The load's rate profile from the warm-up's start (the warm-up at the first phase's rate),
    /// the finer timeline's plan, and the mean offered rate; `base`: the run's `--load`.
    pub fn offered(&self, base: Option<f64>, warmup: Duration) -> Result<ScenarioLoad> {
        let needs_base = self.phases.iter().any(|p| matches!(p.load, PhaseLoad::Times(_)));
        let base = match base {
            Some(b) => b,
            None if needs_base => {
                bail!("scenario {} gives its phases as multiples of --load: give a rate, e.g. --load 10k", self.name)
            }
            None => 0.0,
        };
        let mut steps = Vec::new();
        let mut phase_ends = Vec::new();
        let mut at = clock::nanos(warmup);
        let mut intended = 0.0;
        for (i, p) in self.phases.iter().enumerate() {
            let rps = p.load.rps(base);
            steps.push((if i == 0 { 0 } else { at }, rps));
            at += clock::nanos(p.duration);
            intended += rps * p.duration.as_secs_f64();
            phase_ends.push(at - clock::nanos(warmup));
        }
        Ok(ScenarioLoad {
            profile: RateProfile::stepped(&steps),
            steps: StepPlan { step: clock::nanos(self.step), phase_ends },
            mean_rps: intended / self.window().as_secs_f64(),
        })
    }

    /// Performs the events on `herd` at their times, once the load's window is fixed, and returns
    /// what was done when. Ends early (recording nothing more) once `over()` (the run was stopped,
    /// or the load ended). Call it on the thread that started the herd: a restarted member is a
    /// child of the calling thread, and dies when that thread ends.
    pub fn perform(&self, herd: &mut Herd, progress: &Progress, over: &dyn Fn() -> bool) -> Vec<EventRecord> {
        let mut records: Vec<EventRecord> = self
            .events
            .iter()
            .map(|e| {
                let (start, end) = e.span();
                EventRecord {
                    action: e.action().to_owned(),
                    member: e.member().map(str::to_owned),
                    planned_ms: [start.as_millis() as u64, end.as_millis() as u64],
                    done_ms: [None, None],
                    error: None,
                }
            })
            .collect();
        let window = loop {
            if let Some(w) = progress.window.get() {
                break *w;
            }
            if over() {
                return records;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut acts: Vec<(Duration, usize, usize, Act)> = Vec::new();
        for (i, e) in self.events.iter().enumerate() {
            let (start, end) = e.span();
            let [first, second] = e.steps();
            acts.push((start, i, 0, first));
            acts.push((end, i, 1, second));
        }
        acts.sort_by_key(|(at, i, edge, _)| (*at, *i, *edge));
        for (at, i, edge, act) in acts {
            let due = window.measure_start + clock::nanos(at);
            while clock::now() < due {
                if over() {
                    return records;
                }
                std::thread::sleep(
                    Duration::from_nanos(due.saturating_sub(clock::now())).min(Duration::from_millis(20)),
                );
            }
            let done = clock::now();
            let outcome = act.perform(herd);
            let record = &mut records[i];
            record.done_ms[edge] = Some((done.saturating_sub(window.measure_start) / MILLISECOND) as u64);
            if let Err(e) = outcome {
                eprintln!("scenario {}: {} failed: {e:#}", self.name, self.events[i].label());
                record.error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
        records
    }
}

impl Act {
    fn perform(&self, herd: &mut Herd) -> Result<()> {
        let signal = |name: &str, pid: Option<i32>, sig: libc::c_int| -> Result<()> {
            let pid = pid.with_context(|| format!("{name} is not running"))?;
            // SAFETY: kill(2) on a child this harness started and has not reaped.
            if unsafe { libc::kill(pid, sig) } != 0 {
                bail!("signal {sig} to {name}: {}", std::io::Error::last_os_error());
            }
            Ok(())
        };
        match self {
            Self::Signal(member, sig) => signal(member, herd.pid(member), *sig),
            Self::Places(sig) => signal("places", herd.pid("places"), *sig),
            Self::Kill(member) => herd.kill(member),
            Self::Restart(member) => herd.restart(member),
        }
    }
}

/// Everything the record is built from.
#[derive(Debug)]
pub struct Measured<'a> {
    pub base_rps: Option<f64>,
    pub fine: &'a StepReport,
    pub events: Vec<EventRecord>,
    /// The window's start, on the monotonic clock.
    pub measure_start: Nanos,
    /// Target index → server name.
    pub servers: &'a [String],
    /// Each server's samples, by name.
    pub samples: BTreeMap<String, Vec<Sample>>,
}

impl Scenario {
    /// The result file's record of this scenario's run.
    pub fn record(&self, m: Measured<'_>) -> ScenarioRecord {
        let step = clock::nanos(self.step);
        let objective_us = self.objective.as_micros() as u64;
        let steps: Vec<StepRecord> = m
            .fine
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let end = m.measure_start + step * (i as u64 + 1);
                let start = end - step;
                let mut rss_kib = BTreeMap::new();
                let mut floods_dropped = 0;
                for (name, samples) in &m.samples {
                    if let Some(last) = samples.iter().rev().find(|x| x.t_ns < end) {
                        rss_kib.insert(name.clone(), last.rss_kib);
                    }
                    floods_dropped += dropped_between(samples, start, end);
                }
                StepRecord {
                    at_ms: (step * i as u64) / MILLISECOND,
                    completed: s.completed(),
                    p50_us: s.latency.value_at_quantile(0.5),
                    p99_us: s.latency.value_at_quantile(0.99),
                    within_objective: s.latency.count_between(0, objective_us),
                    errors: Failure::ALL
                        .iter()
                        .filter(|f| s.errors[f.index()] > 0)
                        .map(|f| (f.name().to_owned(), s.errors[f.index()]))
                        .collect(),
                    errors_by_server: m
                        .servers
                        .iter()
                        .zip(&s.errors_by_target)
                        .filter(|(_, n)| **n > 0)
                        .map(|(name, n)| (name.clone(), *n))
                        .collect(),
                    floods_dropped,
                    rss_kib,
                }
            })
            .collect();
        let mut by_server: BTreeMap<String, ServerTally> = BTreeMap::new();
        for (t, name) in m.servers.iter().enumerate() {
            let tally = by_server.entry(name.clone()).or_default();
            tally.completed += m.fine.completed_by_target.get(t).copied().unwrap_or(0);
            tally.errors += m.fine.steps.iter().map(|s| s.errors_by_target.get(t).copied().unwrap_or(0)).sum::<u64>();
        }
        let mut phases = Vec::new();
        let mut start = Duration::ZERO;
        for (p, phase) in self.phases.iter().enumerate() {
            let end = start + phase.duration;
            let span = self.steps_in(start, end, steps.len());
            let completed: u64 = steps[span.clone()].iter().map(|s| s.completed).sum();
            let within: u64 = steps[span].iter().map(|s| s.within_objective).sum();
            let secs = phase.duration.as_secs_f64();
            let per_connection: Vec<u64> =
                m.fine.conns.iter().filter_map(|(_, by_phase)| by_phase.get(p).copied()).collect();
            phases.push(PhaseRecord {
                name: phase.name.clone(),
                start_ms: start.as_millis() as u64,
                end_ms: end.as_millis() as u64,
                offered_rps: phase.load.rps(m.base_rps.unwrap_or(0.0)),
                achieved_rps: completed as f64 / secs,
                goodput_rps: within as f64 / secs,
                fairness: jain(per_connection.iter().copied()),
                per_connection,
            });
            start = end;
        }
        let mut record = ScenarioRecord {
            name: self.name.clone(),
            description: self.description.clone(),
            base_rps: m.base_rps,
            step_ms: self.step.as_millis() as u64,
            objective_us,
            phases,
            events: m.events,
            steps,
            by_server,
            recovery: Vec::new(),
        };
        record.recovery = self.recoveries(&record, m.fine, m.servers);
        record
    }

    /// The steps from `start` to `end` (clipped to `n` steps).
    fn steps_in(&self, start: Duration, end: Duration, n: usize) -> std::ops::Range<usize> {
        let at = |d: Duration| ((d.as_nanos() / self.step.as_nanos()) as usize).min(n);
        at(start)..at(end)
    }

    fn recoveries(&self, record: &ScenarioRecord, fine: &StepReport, servers: &[String]) -> Vec<Recovery> {
        let mut disturbances = Vec::new();
        for (p, phase) in record.phases.iter().enumerate().skip(1) {
            if phase.offered_rps > record.phases[p - 1].offered_rps {
                disturbances.push(Disturbance {
                    label: format!("overload ({} phase)", phase.name),
                    span: (Duration::from_millis(phase.start_ms), Duration::from_millis(phase.end_ms)),
                    fairness: phase.fairness,
                    event: None,
                });
            }
        }
        for (e, rec) in self.events.iter().zip(&record.events) {
            let (planned_start, planned_end) = e.span();
            let start = rec.done_ms[0].map_or(planned_start, Duration::from_millis);
            let end = rec.done_ms[1].map_or(planned_end, Duration::from_millis);
            disturbances.push(Disturbance { label: e.label(), span: (start, end), fairness: None, event: Some(e) });
        }
        disturbances.into_iter().map(|d| self.recovery(d, record, fine, servers)).collect()
    }

    /// How the run went through disturbance `d` and came back, from the steps around it.
    fn recovery(&self, d: Disturbance<'_>, record: &ScenarioRecord, fine: &StepReport, servers: &[String]) -> Recovery {
        let Disturbance { label: disturbance, span: (start, end), fairness, event } = d;
        let n = fine.steps.len();
        let span = self.steps_in(start, end, n);
        let before = self.steps_in(start.saturating_sub(BASELINE), start, n);
        let mut baseline = Histogram::<u64>::new_with_bounds(1, 60_000_000, 2).expect("static bounds");
        for s in &fine.steps[before.clone()] {
            let _ = baseline.add(&s.latency);
        }
        let baseline_p99 = (!baseline.is_empty()).then(|| baseline.value_at_quantile(0.99));
        let hold = (RECOVERY_HOLD.as_nanos() / self.step.as_nanos()).max(1) as usize;
        let recovered_at = baseline_p99.and_then(|b| {
            let ok = |s: &crate::load::Step| s.latency.value_at_quantile(0.99) as f64 <= RECOVERED_WITHIN * b as f64;
            (span.end..n.saturating_sub(hold - 1)).find(|&k| fine.steps[k..k + hold].iter().all(ok))
        });
        let until = recovered_at.unwrap_or(n);
        let objective_us = self.objective.as_micros() as u64;
        let affected = &fine.steps[span.start..until.max(span.start)];
        let step_ms = self.step.as_millis() as u64;
        let rss = |k: usize| record.steps.get(k).map_or(0, |s| s.rss_kib.values().sum::<u64>());
        let rss_before_kib = rss(span.start.saturating_sub(1));
        let rss_peak_kib = (span.start..until.max(span.start + 1)).map(rss).max().unwrap_or(0);
        let member = event.and_then(Event::member);
        let converged_after_ms = match event {
            Some(Event::Crash { member, .. }) => servers.iter().position(|s| s == member).and_then(|t| {
                let hold = (CONVERGED_HOLD.as_nanos() / self.step.as_nanos()).max(1) as usize;
                (span.end..n.saturating_sub(hold - 1))
                    .find(|&k| fine.steps[k..k + hold].iter().all(|s| s.errors_by_target[t] == 0))
                    .map(|k| (k - span.end) as u64 * step_ms)
            }),
            _ => None,
        };
        let errors_on_others = member.map(|m| {
            fine.steps[span.start..]
                .iter()
                .map(|s| {
                    s.errors_by_target
                        .iter()
                        .zip(servers)
                        .filter(|(_, name)| name.as_str() != m)
                        .map(|(n, _)| n)
                        .sum::<u64>()
                })
                .sum()
        });
        let member_completed_after = member
            .and_then(|m| servers.iter().position(|s| s == m))
            .map(|t| fine.steps[span.end..].iter().map(|s| s.completed_by_target[t]).sum::<u64>());
        let secs = (end - start).as_secs_f64().max(self.step.as_secs_f64());
        Recovery {
            disturbance,
            start_ms: start.as_millis() as u64,
            end_ms: end.as_millis() as u64,
            baseline_p99_us: baseline_p99,
            recovered_after_ms: recovered_at.map(|k| (k - span.end) as u64 * step_ms),
            failed: affected.iter().map(|s| s.errors.iter().sum::<u64>()).sum(),
            late: affected.iter().map(|s| s.latency.len() - s.latency.count_between(0, objective_us)).sum(),
            goodput_rps: fine.steps[span].iter().map(|s| s.latency.count_between(0, objective_us)).sum::<u64>() as f64
                / secs,
            fairness,
            rss_before_kib,
            rss_peak_kib,
            converged_after_ms,
            errors_on_others,
            member_completed_after,
        }
    }
}

/// Floods dropped between `start` and `end` by one server, from its cumulative counter (a restart
/// starts it again from 0).
fn dropped_between(samples: &[Sample], start: Nanos, end: Nanos) -> u64 {
    let mut total = 0;
    let mut previous: Option<u64> = None;
    for s in samples.iter().filter(|s| s.t_ns < end) {
        let gained = match previous {
            Some(p) if s.floods_dropped >= p => s.floods_dropped - p,
            _ => s.floods_dropped, // the first sample, or a new process
        };
        if s.t_ns >= start {
            total += gained;
        }
        previous = Some(s.floods_dropped);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Step;

    fn parse(text: &str) -> Result<Scenario> {
        let s: Scenario = toml::from_str(text)?;
        s.check()?;
        Ok(s)
    }

    const HANG: &str = r#"
        description = "d"
        workload = "herd-mixed"
        objective = "10ms"
        [[phase]]
        name = "a"
        duration = "2s"
        load = "0.5x"
        [[phase]]
        name = "b"
        duration = "1s"
        load = "3k"
        [[event]]
        action = "hang"
        member = "Welsh"
        at = "1s"
        for = "500ms"
    "#;

    #[test]
    fn every_standard_scenario_parses() {
        let names = Scenario::standard();
        let committed =
            herd_record::workload::toml_stems(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../workloads/scenarios"));
        assert_eq!(names, committed, "workloads/scenarios/ and STANDARD differ");
        for name in ["overload", "member-crash", "member-hang", "upstream-stall"] {
            assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
            let s = Scenario::load(name).expect("a standard scenario loads");
            s.check_members(&crate::base::topology::Topology::default_herd().servers).expect("members of the herd");
        }
    }

    #[test]
    fn phases_make_the_window_and_the_rate_profile() {
        let s = parse(HANG).expect("valid");
        assert_eq!(s.window(), Duration::from_secs(3));
        assert_eq!(s.step, Duration::from_millis(100), "the default step");
        let load = s.offered(Some(10_000.0), Duration::from_secs(1)).expect("a base is given");
        assert_eq!(load.steps.phase_ends, [2 * clock::SECOND, 3 * clock::SECOND]);
        assert!((load.mean_rps - (5000.0 * 2.0 + 3000.0) / 3.0).abs() < 1e-9);
        let err = s.offered(None, Duration::ZERO).expect_err("0.5x needs a --load");
        assert!(err.to_string().contains("--load 10k"), "{err}");
    }

    #[test]
    fn bad_scenarios_are_refused_with_what_to_write() {
        let unknown = HANG.replace("for = \"500ms\"", "for = \"500ms\"\nsignal = 9");
        assert!(parse(&unknown).is_err(), "an unknown key in an event");
        let unknown = HANG.replace("objective", "bogus = 1\nobjective");
        assert!(parse(&unknown).is_err(), "an unknown top-level key");
        let late = HANG.replace("at = \"1s\"", "at = \"2.8s\"");
        let err = parse(&late).expect_err("ends after the window").to_string();
        assert!(err.contains("not inside"), "{err}");
        let closed = HANG.replace("\"3k\"", "\"max\"");
        assert!(format!("{:#}", parse(&closed).expect_err("max is not a phase load")).contains("0.5x"));
        let action = HANG.replace("\"hang\"", "\"explode\"");
        assert!(parse(&action).is_err(), "an unknown action");
        let s = parse(HANG).expect("valid");
        let err = s.check_members(&["Alford".to_owned()]).expect_err("Welsh is not in this herd").to_string();
        assert!(err.contains("Welsh") && err.contains("Alford"), "{err}");
    }

    #[test]
    fn jain_is_one_when_even_and_one_over_n_when_one_gets_all() {
        assert_eq!(jain([5, 5, 5, 5].into_iter()), Some(1.0));
        assert_eq!(jain([8, 0, 0, 0].into_iter()), Some(0.25));
        assert_eq!(jain([0, 0].into_iter()), None);
        assert_eq!(jain(std::iter::empty()), None);
    }

    #[test]
    fn dropped_floods_are_counted_per_step_across_a_restart() {
        let sample = |t: u64, d: u64| Sample { t_ns: t, rss_kib: 1, floods_dropped: d };
        // 10 dropped before 100, 5 more by 150; restarted at 160 (counter from 0), 3 by 190.
        let samples = [sample(50, 10), sample(100, 10), sample(150, 15), sample(170, 1), sample(190, 3)];
        assert_eq!(dropped_between(&samples, 0, 100), 10);
        assert_eq!(dropped_between(&samples, 100, 200), 5 + 1 + 2);
    }

    /// A run's steps made by hand: `p99s[i]` is every reply's latency in step i (100 per step).
    fn steps(p99s: &[u64], failures: &[(usize, usize)]) -> StepReport {
        let mut report = StepReport { completed_by_target: vec![0, 0], ..StepReport::default() };
        for (i, &latency) in p99s.iter().enumerate() {
            let mut step = Step::new(2);
            step.latency.record_n(latency, 100).expect("in range");
            step.completed_by_target = vec![50, 50];
            for &(at, target) in failures {
                if at == i {
                    step.errors[Failure::Timeout.index()] += 1;
                    step.errors_by_target[target] += 1;
                }
            }
            report.steps.push(step);
        }
        report
    }

    #[test]
    fn recovery_is_timed_from_the_end_until_p99_holds_within_the_bound() {
        let s = parse(HANG).expect("valid"); // hang Welsh from 1.0 s to 1.5 s, 100 ms steps
        // 1 ms before; 900 ms during; 2 ms (within 1.5× of... no: 2× the baseline) for 300 ms
        // after; then 1.2 ms (within 1.5×) from 1.8 s on.
        let mut p99s = vec![1000; 10];
        p99s.extend([900_000; 5]);
        p99s.extend([2000; 3]);
        p99s.extend([1200; 12]);
        let fine = steps(&p99s, &[(11, 1), (12, 1), (13, 0)]);
        let servers = ["Alford".to_owned(), "Welsh".to_owned()];
        let events = vec![EventRecord {
            action: "hang".into(),
            member: Some("Welsh".into()),
            planned_ms: [1000, 1500],
            done_ms: [Some(1000), Some(1500)],
            error: None,
        }];
        let record = s.record(Measured {
            base_rps: Some(6000.0), // both phases at 3k/s: no overload
            fine: &fine,
            events,
            measure_start: 0,
            servers: &servers,
            samples: BTreeMap::new(),
        });
        assert_eq!(record.steps.len(), 30);
        assert_eq!(record.steps[11].errors_by_server.get("Welsh"), Some(&1));
        let [r] = record.recovery.as_slice() else { panic!("one disturbance: {:?}", record.recovery) };
        assert_eq!(r.disturbance, "hang Welsh");
        assert!((1000..=1010).contains(&r.baseline_p99_us.expect("steps before")), "{:?}", r.baseline_p99_us);
        assert_eq!(r.recovered_after_ms, Some(300), "back within 1.5× from 1.8 s, 300 ms after the end");
        assert_eq!(r.failed, 3);
        assert_eq!(r.late, 5 * 100, "the hang's replies are over the 10 ms objective");
        assert_eq!(r.goodput_rps, 0.0, "nothing met the objective during the hang");
        assert_eq!(r.errors_on_others, Some(1), "one failure on Alford's connections");
        assert_eq!(r.member_completed_after, Some(15 * 50));
        // The second phase offers 3k against the first's 1k: an overload disturbance of its own.
        let faster = HANG.replace("\"0.5x\"", "\"1k\"");
        let s = parse(&faster).expect("valid");
        let record = s.record(Measured {
            base_rps: None,
            fine: &fine,
            events: Vec::new(),
            measure_start: 0,
            servers: &servers,
            samples: BTreeMap::new(),
        });
        assert_eq!(record.recovery[0].disturbance, "overload (b phase)");
        assert_eq!(record.recovery[0].recovered_after_ms, None, "the window ends with the phase");
    }
}
