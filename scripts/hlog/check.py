"""Reads an interval log written by `harness export --format hlog` with an independent reader, the
PyPI `hdrhistogram` package (HdrHistogram's Python port), and checks every interval against the
result files it came from: one interval per run and command, with the same count and maximum.

    python check.py LOG RESULT.json...
"""
import datetime
import json
import sys

from hdrh.log import HistogramLogReader
from hdrh.histogram import HdrHistogram


def expected(paths):
    """(tag, start in ms since the epoch) -> (count, max) of every run's commands."""
    want = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            r = json.load(f)
        start = datetime.datetime.fromisoformat(r["started_at"].replace("Z", "+00:00")).timestamp()
        threads = r["parameters"].get("threads")
        style = r["implementation"]["name"] + (f"/t{threads}" if threads else "")
        for command, latency in r["commands"].items():
            key = (f"{style}/{command}", round(start * 1000))
            want[key] = (latency["count"], latency["percentiles_us"]["max"])
    return want


def main():
    log, results = sys.argv[1], sys.argv[2:]
    want = expected(results)
    reader = HistogramLogReader(log, HdrHistogram(1, 60 * 1000 * 1000, 3))
    seen = 0
    while (h := reader.get_next_interval_histogram()) is not None:
        key = (h.get_tag(), round(h.get_start_time_stamp()))
        # The log keeps timestamps to the millisecond: look a millisecond either side.
        match = next((k for k in [key, (key[0], key[1] - 1), (key[0], key[1] + 1)] if k in want), None)
        if match is None:
            sys.exit(f"hlog-check: interval {key} matches no run and command of the result files")
        count, top = want.pop(match)
        got = (h.get_total_count(), h.get_max_value())
        if got != (count, top):
            sys.exit(f"hlog-check: {key[0]}: the log's count and max {got}, the result file's {(count, top)}")
        seen += 1
    if want:
        sys.exit(f"hlog-check: no interval for {sorted(want)[:3]} (and {max(len(want) - 3, 0)} more)")
    if seen == 0:
        sys.exit("hlog-check: the log holds no interval")
    print(f"hlog-check: {seen} intervals read by the PyPI hdrhistogram package; counts and max equal the result files'")


main()
