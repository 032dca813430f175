//! Settings every herd-core benchmark shares: an explicit noise threshold instead of criterion's
//! default, because these machines are shared. Compare builds with named baselines:
//! `cargo bench -p herd-core -- --save-baseline main`, then `-- --baseline main`.

use std::time::Duration;

use criterion::Criterion;

pub fn config() -> Criterion {
    Criterion::default()
        .noise_threshold(0.05)
        .significance_level(0.01)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}
