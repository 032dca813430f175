//! When each request should be sent (open loop), and the seeded randomness behind a run.

use super::clock::Nanos;

/// SplitMix64: tiny, fast, and fixed forever, so a seed means the same run in every version
/// (a library RNG may change its algorithm between releases).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A stream for one part of a run (a thread, a connection) derived from the run's seed.
    pub fn derive(seed: u64, stream: u64) -> Self {
        let mut s = Self(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        s.next_u64();
        s
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in the inclusive range.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// How intended send times are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    /// Evenly spaced: 1/rate apart.
    Uniform,
    /// Exponential gaps with mean 1/rate (a Poisson process).
    Poisson,
}

/// The intended send times of an open loop at a fixed rate.
///
/// Times are computed from the start (`start + k/rate`), never by adding to the previous send,
/// so a late send never delays the ones after it: latency is measured from these times, which
/// corrects for coordinated omission.
#[derive(Debug)]
pub struct OpenLoopSchedule {
    start: Nanos,
    interval_ns: f64,
    arrival: Arrival,
    rng: SplitMix64,
    /// Offset of the next send from `start`, in ns.
    next_ns: f64,
}

impl OpenLoopSchedule {
    /// Sends at `rate` from `start`. Uniform arrivals begin at `start + phase_ns` (a slice of a
    /// bigger schedule, see [`OpenLoopSchedule::slice`]); Poisson ones with a random first gap.
    pub fn new(start: Nanos, rate: f64, arrival: Arrival, rng: SplitMix64) -> Self {
        Self::with_phase(start, rate, arrival, rng, 0.0)
    }

    fn with_phase(start: Nanos, rate: f64, arrival: Arrival, rng: SplitMix64, phase_ns: f64) -> Self {
        let mut s = Self { start, interval_ns: 1e9 / rate, arrival, rng, next_ns: phase_ns };
        if arrival == Arrival::Poisson {
            s.next_ns = s.gap();
        }
        s
    }

    /// Share `part` of `parts` of a schedule at `total_rate`: of its intended sends 0, 1, 2 …, the
    /// ones numbered `part`, `part + parts` …. Uniform: every `parts`-th slot, phase-shifted, so
    /// the shares interleave exactly into the whole. Poisson: an independent Poisson process at
    /// `total_rate / parts` (the union of independent Poisson processes is one at the sum of their
    /// rates), seeded by `rng`.
    pub fn slice(start: Nanos, total_rate: f64, arrival: Arrival, rng: SplitMix64, part: u64, parts: u64) -> Self {
        let phase_ns = part as f64 * 1e9 / total_rate;
        Self::with_phase(start, total_rate / parts as f64, arrival, rng, phase_ns)
    }

    fn gap(&mut self) -> f64 {
        match self.arrival {
            Arrival::Uniform => self.interval_ns,
            Arrival::Poisson => -(1.0 - self.rng.next_f64()).ln() * self.interval_ns,
        }
    }

    /// The intended time of the next request.
    pub fn peek(&self) -> Nanos {
        self.start + self.next_ns.round() as u64
    }

    /// Consumes the next intended time.
    pub fn advance(&mut self) -> Nanos {
        let t = self.peek();
        self.next_ns += self.gap();
        t
    }
}

#[cfg(test)]
mod tests {
    use super::super::clock::SECOND;
    use super::*;

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
                let mut s = OpenLoopSchedule::slice(start, 3000.0, Arrival::Uniform, SplitMix64::new(1), part, 3);
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
}
