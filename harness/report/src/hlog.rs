//! Result files as one HdrHistogram interval log (`.hlog`): the format `HistogramLogProcessor`
//! (Java) and HdrLogProcessing read, so latency measured here can go through tools people already
//! run.
//!
//! Each run contributes one interval per command type: its histogram over the measured window
//! (latency in **microseconds**, as in the result file), tagged `<style>/<command>` (`--threads N`
//! adds `/tN`), starting at the run's `started_at` and lasting its window. `BaseTime` is the
//! earliest run's start, so interval timestamps are seconds into the collection; a tag's intervals
//! are that style's runs in time order (repeats, or the rounds of a matrix).
//!
//! Per-second intervals are not written: a result keeps per-command histograms for its window
//! only (its timeline keeps each second's p99, not a histogram).

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};

use crate::collection::Loaded;

/// The interval log format written: Java HdrHistogram's current one (tags, V2 compressed
/// histograms), which `HistogramLogReader` in Java, Python and Rust read.
pub const LOG_FORMAT_VERSION: &str = "1.3";

/// The interval log of `runs`.
pub fn write(runs: &[Loaded]) -> Result<Vec<u8>> {
    let mut intervals = Vec::new();
    for l in runs {
        let r = &l.result;
        let start: SystemTime = r.start_time().with_context(|| l.path.display().to_string())?.into();
        let threads = r.parameters.threads.map(|t| format!("/t{t}")).unwrap_or_default();
        for (command, latency) in &r.commands {
            let h = latency.histogram().with_context(|| format!("{}: the {command} histogram", l.path.display()))?;
            let tag = format!("{}{threads}/{command}", r.implementation.name);
            intervals.push((start, Duration::from_secs_f64(r.parameters.duration_s), tag, h));
        }
    }
    intervals.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.2.cmp(&b.2)));
    let base = intervals.first().map_or(SystemTime::UNIX_EPOCH, |i| i.0);
    let since_epoch = base.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    // The header Java's HistogramLogWriter writes, in its order: the format version (readers
    // branch on it), the start and base times, then the column legend.
    let mut out = format!(
        "#[Histogram log format version {LOG_FORMAT_VERSION}]\n\
         #[herdbench: latency values in microseconds (HistogramLogProcessor: -outputValueUnitRatio 1000 prints milliseconds); \
         one interval per run and command, tagged style/command]\n\
         #[StartTime: {since_epoch:.3} (seconds since epoch)]\n\
         #[BaseTime: {since_epoch:.3} (seconds since epoch)]\n\
         \"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n"
    )
    .into_bytes();
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new().begin_log_with(&mut out, &mut serializer)?;
    for (start, window, tag, h) in &intervals {
        let at = start.duration_since(base).unwrap_or_default();
        let tag = Tag::new(tag).ok_or_else(|| anyhow!("{tag:?} cannot be an interval log tag"))?;
        log.write_histogram(h, at, *window, Some(tag)).map_err(|e| anyhow!("writing the interval log: {e:?}"))?;
    }
    drop(log);
    Ok(out)
}

#[cfg(test)]
mod tests {

    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    use super::*;

    #[test]
    fn a_standard_reader_gets_back_every_commands_histogram() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../results/runs/matrix-2/light");
        let mut runs = crate::collection::load(&[dir]).expect("committed results");
        runs.retain(|l| l.result.implementation.name == "event-handler" && l.result.workload.name == "herd-mixed");
        runs.truncate(2);
        assert_eq!(runs.len(), 2, "two committed event-handler runs");
        let log = write(&runs).expect("writes");
        let text = String::from_utf8(log.clone()).expect("text");
        let header: Vec<&str> = text.lines().take(5).collect();
        assert_eq!(header[0], "#[Histogram log format version 1.3]", "{text}");
        assert!(header[1].contains("microseconds"), "the unit is written down: {text}");
        assert!(header[2].starts_with("#[StartTime: ") && header[3].starts_with("#[BaseTime: "), "{text}");
        assert!(header[4].starts_with("\"StartTimestamp\",\"Interval_Length\""), "{text}");

        let mut seen = Vec::new();
        for entry in IntervalLogIterator::new(&log) {
            let LogEntry::Interval(i) = entry.expect("parses") else { continue };
            let tag = i.tag().expect("tagged").as_str().to_owned();
            let h = herd_record::result::decode_histogram(i.encoded_histogram()).expect("base64 of a V2 histogram");
            seen.push((tag, i.start_timestamp(), i.duration(), h));
        }
        let expected: usize = runs.iter().map(|l| l.result.commands.len()).sum();
        assert_eq!(seen.len(), expected, "one interval per run and command");
        assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "intervals in time order");
        assert_eq!(seen[0].1, Duration::ZERO, "the first interval starts at BaseTime");
        let start = |l: &Loaded| -> SystemTime { l.result.start_time().expect("RFC 3339").into() };
        let base = runs.iter().map(start).min().expect("runs");
        for l in &runs {
            let at = start(l).duration_since(base).expect("after the base");
            for (command, latency) in &l.result.commands {
                let tag = format!("event-handler/{command}");
                // The log keeps timestamps to the millisecond.
                let found = seen.iter().find(|s| s.0 == tag && s.1.abs_diff(at) <= Duration::from_millis(1));
                let (_, _, window, h) = found.unwrap_or_else(|| panic!("no {tag} interval at {at:?}"));
                assert_eq!(window.as_secs_f64(), l.result.parameters.duration_s);
                assert_eq!(h, &latency.histogram().expect("decodes"), "{tag}: the same histogram");
            }
        }
    }
}
