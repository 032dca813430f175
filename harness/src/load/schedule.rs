//! When each request should be sent (open loop).

use crate::base::clock::Nanos;
use crate::base::rng::SplitMix64;

/// How intended send times are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    /// Evenly spaced: 1/rate apart.
    Uniform,
    /// Exponential gaps with mean 1/rate (a Poisson process).
    Poisson,
}

/// An offered rate that may change over time: `rate` requests/s from `at` (ns after the
/// schedule's start) until the next step; the last rate lasts forever. A fixed rate is one step.
#[derive(Debug, Clone, PartialEq)]
pub struct RateProfile {
    /// (from, requests per ns, requests intended before `from`), `from` ascending from 0.
    steps: Vec<(f64, f64, f64)>,
}

impl RateProfile {
    /// `rate` requests/s for ever.
    pub fn fixed(rate: f64) -> Self {
        Self::stepped(&[(0, rate)])
    }

    /// Rates in requests/s from the given ns offsets; the first offset is 0, the offsets ascend and
    /// every rate is above 0 (checked where they are read, in [`crate::run::scenario`]).
    pub fn stepped(steps: &[(Nanos, f64)]) -> Self {
        let mut out: Vec<(f64, f64, f64)> = Vec::with_capacity(steps.len());
        for &(at, rate) in steps {
            let at = at as f64;
            let before = out.last().map_or(0.0, |&(from, per_ns, before)| before + (at - from) * per_ns);
            out.push((at, rate / 1e9, before));
        }
        Self { steps: out }
    }

    /// The time (ns after the start) by which `count` requests were intended: the inverse of the
    /// rate's integral. `hint`: the step to look from (they are looked up in ascending order).
    fn time_of(&self, count: f64, hint: &mut usize) -> f64 {
        while *hint + 1 < self.steps.len() && self.steps[*hint + 1].2 <= count {
            *hint += 1;
        }
        let (from, per_ns, before) = self.steps[*hint];
        from + (count - before) / per_ns
    }
}

/// The intended send times of an open loop.
///
/// The k-th request is intended at the time by which the offered rate's integral reaches k
/// (`start + k/rate` at a fixed rate), never computed by adding to the previous send, so a late
/// send never delays the ones after it: latency is measured from these times, which corrects for
/// coordinated omission. Poisson arrivals are a unit-rate Poisson process on the same count axis
/// (a non-homogeneous Poisson process where the rate steps).
#[derive(Debug)]
pub struct OpenLoopSchedule {
    start: Nanos,
    profile: RateProfile,
    /// This share's step on the count axis: 1 for a whole schedule, `parts` for a slice.
    stride: f64,
    arrival: Arrival,
    rng: SplitMix64,
    /// The next request's position on the count axis, its profile step, and its time.
    next_count: f64,
    step: usize,
    next: Nanos,
}

impl OpenLoopSchedule {
    /// Sends at `rate` from `start`.
    pub fn new(start: Nanos, rate: f64, arrival: Arrival, rng: SplitMix64) -> Self {
        Self::slice(start, RateProfile::fixed(rate), arrival, rng, 0, 1)
    }

    /// Share `part` of `parts` of the schedule of `profile`: of its intended sends 0, 1, 2 …, the
    /// ones numbered `part`, `part + parts` …. Uniform: every `parts`-th slot, so the shares
    /// interleave exactly into the whole. Poisson: an independent Poisson process at `1/parts` of
    /// the rate (the union of independent Poisson processes is one at the sum of their rates),
    /// seeded by `rng`.
    pub fn slice(start: Nanos, profile: RateProfile, arrival: Arrival, rng: SplitMix64, part: u64, parts: u64) -> Self {
        let mut s =
            Self { start, profile, stride: parts as f64, arrival, rng, next_count: part as f64, step: 0, next: start };
        if arrival == Arrival::Poisson {
            s.next_count = s.gap();
        }
        s.next = s.time_of(s.next_count);
        s
    }

    fn gap(&mut self) -> f64 {
        match self.arrival {
            Arrival::Uniform => self.stride,
            Arrival::Poisson => -(1.0 - self.rng.next_f64()).ln() * self.stride,
        }
    }

    fn time_of(&mut self, count: f64) -> Nanos {
        self.start + self.profile.time_of(count, &mut self.step).round() as u64
    }

    /// The intended time of the next request.
    pub fn peek(&self) -> Nanos {
        self.next
    }

    /// Consumes the next intended time.
    pub fn advance(&mut self) -> Nanos {
        let t = self.next;
        self.next_count += self.gap();
        self.next = self.time_of(self.next_count);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::SECOND;

    #[test]
    fn uniform_times_do_not_drift() {
        let start = 7 * SECOND;
        let mut s = OpenLoopSchedule::new(start, 3.0, Arrival::Uniform, SplitMix64::new(1));
        let times: Vec<_> = (0..7).map(|_| s.advance() - start).collect();
        assert_eq!(times[6], 2 * SECOND);
        assert_eq!(times[3], SECOND);
    }

    #[test]
    fn uniform_slices_interleave_into_the_whole_schedule() {
        let start = 7 * SECOND;
        let mut whole = OpenLoopSchedule::new(start, 3000.0, Arrival::Uniform, SplitMix64::new(1));
        let whole: Vec<Nanos> = (0..300).map(|_| whole.advance()).collect();
        let mut shares: Vec<Nanos> = (0..3)
            .flat_map(|part| {
                let mut s = OpenLoopSchedule::slice(
                    start,
                    RateProfile::fixed(3000.0),
                    Arrival::Uniform,
                    SplitMix64::new(1),
                    part,
                    3,
                );
                (0..100).map(move |_| s.advance())
            })
            .collect();
        shares.sort_unstable();
        assert_eq!(shares, whole);
    }

    #[test]
    fn poisson_has_the_requested_mean_rate_and_is_reproducible() {
        let start = 7 * SECOND;
        let run = |seed| {
            let mut s = OpenLoopSchedule::new(start, 10_000.0, Arrival::Poisson, SplitMix64::new(seed));
            (0..100_000).map(|_| s.advance()).last().map(|t| t - start)
        };
        let elapsed = run(7).expect("some") as f64 / SECOND as f64;
        assert!((elapsed - 10.0).abs() < 0.2, "100k arrivals at 10k/s took {elapsed} s");
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn a_stepped_rate_sends_each_step_at_its_own_rate() {
        // 1,000/s for a second, then 4,000/s for half a second, then 500/s.
        let profile = RateProfile::stepped(&[(0, 1000.0), (SECOND, 4000.0), (SECOND * 3 / 2, 500.0)]);
        let mut s = OpenLoopSchedule::slice(0, profile.clone(), Arrival::Uniform, SplitMix64::new(1), 0, 1);
        let times: Vec<Nanos> = (0..3002).map(|_| s.advance()).collect();
        let in_range = |a: Nanos, b: Nanos| times.iter().filter(|&&t| t >= a && t < b).count();
        assert_eq!(in_range(0, SECOND), 1000);
        assert_eq!(in_range(SECOND, SECOND * 3 / 2), 2000);
        assert_eq!(times[1000], SECOND, "the step starts on time");
        assert_eq!(times[3000], SECOND * 3 / 2);
        assert_eq!(times[3001] - times[3000], 2 * SECOND / 1000, "500/s after the last step");
        // Poisson on the same profile: about the same counts per step.
        let mut p = OpenLoopSchedule::slice(0, profile, Arrival::Poisson, SplitMix64::new(3), 0, 1);
        let poisson: Vec<Nanos> = (0..3000).map(|_| p.advance()).take_while(|&t| t < SECOND * 3 / 2).collect();
        let fast = poisson.iter().filter(|&&t| t >= SECOND).count();
        assert!((1800..2200).contains(&fast), "{fast} Poisson arrivals in the 4,000/s half second");
    }
}
