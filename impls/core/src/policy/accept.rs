//! The pause after an accept error.
//!
//! An accept that fails (most often: out of file descriptors) leaves the listener readable, so a
//! loop that accepts again at once spins a core and starves the connections it already has. Every
//! style pauses by the same rule: [`Limits::accept_backoff`] after the first error, doubling on each
//! further one up to [`Limits::accept_backoff_max`], back to the start after an accept succeeds.
//!
//! # Calling order
//! After each accept: [`AcceptBackoff::on_accepted`] or [`AcceptBackoff::on_error`], which says
//! until when not to accept again (the caller sleeps, or arms a timer and stops watching the listener).

use std::time::{Duration, Instant};

use crate::policy::Limits;

#[derive(Debug, Clone)]
pub struct AcceptBackoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl AcceptBackoff {
    pub fn new(limits: &Limits) -> Self {
        Self { first: limits.accept_backoff, max: limits.accept_backoff_max, next: limits.accept_backoff }
    }

    pub fn on_accepted(&mut self) {
        self.next = self.first;
    }

    /// Accepting failed at `now`: returns when to try again.
    pub fn on_error(&mut self, now: Instant) -> Instant {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        now + pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets_on_success() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let limits = Limits { accept_backoff: ms(10), accept_backoff_max: ms(35), ..Limits::default() };
        let mut b = AcceptBackoff::new(&limits);
        let pauses: Vec<_> = (0..4).map(|_| b.on_error(t0) - t0).collect();
        assert_eq!(pauses, [ms(10), ms(20), ms(35), ms(35)]);
        b.on_accepted();
        assert_eq!(b.on_error(t0) - t0, ms(10));
    }
}
