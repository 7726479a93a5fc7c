"""``make bench-ab``: the user-facing A/B of issue 15, full telemetry against none.

Two servers up at once, ``baseline`` (``OTEL_SDK_DISABLED=true``, WARNING text logs) and
``full`` (traces and metrics pushed over OTLP/HTTP to the local stack's real Collector, or
the loopback sink without it; JSON INFO logs), and ``full-fastotel``, the same with the
opt-in native span processor (``FIT_CHECK_SPAN_PROCESSOR=fastotel``), with ``make
bench``'s full-run sizes:

* 12 alternated rounds of 5 s flat out (wrk, 16 connections): CPU per stream, and the
  CPU telemetry adds, as medians of same-round differences;
* streams at a fixed 40 per second with 50 ms per provider call, 6 alternated rounds of
  5 s each: the p99 of each, and their ratio.

About 4 minutes; the same figures as those rows of ``make bench`` (35 minutes), without
the other variants and checks. The instruction-count view of the same question is
``make bench-ir``.

Usage: python -m bench.ab [--sink]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.run import FULL_RUN, Bench, log, preflight
from bench.servers import dead_endpoint, otlp_endpoint, stack_available

NAMES = ("baseline", "full", "full-fastotel")
LATENCY_MS = 50


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sink", action="store_true", help="the loopback OTLP sink even if the Collector is built"
    )
    args = parser.parse_args(argv)
    preflight()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fit-check-ab-") as tmp:
        use_stack = stack_available() and not args.sink
        log("OTLP endpoint: " + ("the local stack's Collector" if use_stack else "the sink"))
        with otlp_endpoint(Path(tmp), use_stack=use_stack) as endpoint, dead_endpoint() as dead:
            bench = Bench(FULL_RUN, endpoint, dead, Path(tmp))
            throughput, _ = bench.throughput(NAMES)
            rate = bench.same_rate(LATENCY_MS, NAMES)
    base = throughput["baseline"]
    print(f"\n`make bench-ab`, {FULL_RUN.rounds} alternated rounds of {FULL_RUN.seconds} s")
    print(f"({round(time.monotonic() - started)} s)\n")
    print("| variant | streams/s | CPU µs per stream | x baseline CPU | added µs per stream |")
    print("|---|---|---|---|---|")
    for name in NAMES:
        row = throughput[name]
        added = "-" if name == "baseline" else f"{row['cpu_added_us']:,.0f}"
        print(
            f"| {name} | {row['rps']:.1f} | {row['cpu_us_per_request']:,.0f} | "
            f"{row['cpu_ratio']:.2f} | {added} |"
        )
    for name in NAMES[1:]:
        per_round = [
            f"{f['cpu_us_per_request'] - b['cpu_us_per_request']:,.0f}"
            for f, b in zip(throughput[name]["rounds"], base["rounds"], strict=True)
        ]
        print(f"\nAdded CPU per stream by {name}, round by round (µs): {', '.join(per_round)}")
    base_p99 = rate["baseline"]["p99_ms"]
    print(f"\nAt {rate['baseline']['rate']:.0f} streams/s, {LATENCY_MS} ms per provider call:")
    for name in NAMES:
        print(
            f"- {name}: p99 {rate[name]['p99_ms']:.1f} ms "
            f"({rate[name]['p99_ms'] / base_p99:.2f}x the baseline's), "
            f"{rate[name]['completed']}/{rate[name]['streams']} completed"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
