//! The generator's clock: `CLOCK_MONOTONIC` (the clock behind `Instant`) as plain nanoseconds.
//!
//! Every reply costs the generator a clock read and a few subtractions and comparisons: the
//! latency, the window it belongs to, its second. Done with `Instant` and `Duration` (normalised
//! seconds-and-nanoseconds pairs, checked at every step) that was ~110 instructions per reply, a
//! tenth of the generator's user-space work per echo round trip (callgrind); as `u64` nanoseconds it
//! is a handful. Times here are absolute (since the clock's epoch), so a timerfd can be armed with
//! them as they are.

/// Nanoseconds on `CLOCK_MONOTONIC`.
pub type Nanos = u64;

pub const MICROSECOND: Nanos = 1_000;
pub const MILLISECOND: Nanos = 1_000_000;
pub const SECOND: Nanos = 1_000_000_000;

/// Now, on `CLOCK_MONOTONIC` (through the vDSO: no system call).
pub fn now() -> Nanos {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec to write to; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * SECOND + t.tv_nsec as u64
}

/// A `Duration` as nanoseconds (saturating: no run lasts 584 years).
pub fn nanos(d: std::time::Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `later − earlier` in whole microseconds, 0 if `later` is not later.
pub fn micros_between(earlier: Nanos, later: Nanos) -> u64 {
    later.saturating_sub(earlier) / MICROSECOND
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_instants_clock() {
        // Instant is CLOCK_MONOTONIC on Linux: an interval measured by both agrees.
        let (a, i) = (now(), std::time::Instant::now());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (by_nanos, by_instant) = (now() - a, nanos(i.elapsed()));
        assert!(by_nanos >= 20 * MILLISECOND);
        assert!(by_nanos.abs_diff(by_instant) < MILLISECOND, "{by_nanos} ns against {by_instant} ns");
        assert_eq!(micros_between(5_000, 2_000), 0);
        assert_eq!(micros_between(2_000, 5_999), 3);
    }
}
