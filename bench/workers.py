"""One worker against two, side by side: ``python -m bench.workers`` (``make bench-workers``).

Both servers run at once (``fit-check serve --workers 1`` and ``--workers 2``, full
telemetry without a push endpoint, offline providers) and are loaded in alternated
rounds, so the machine's drift hits both alike: closed-loop throughput with wrk, then a
burst of streams opened at once (200 ms per provider call) for the time to the first
event. Prints one markdown table and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.load import percentile, run_load, streams
from bench.servers import BIN, LOAD_FROM_ONE_ADDRESS, clean_env, free_port, stop, wait_http

ENV = {
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "INFO",
    "OTEL_SDK_DISABLED": "false",
    **LOAD_FROM_ONE_ADDRESS,
}


def start(workers: int, log_dir: Path, **extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = (log_dir / f"workers-{workers}.log").open("ab")
    process = subprocess.Popen(
        [str(BIN / "fit-check"), "serve", "--workers", str(workers)],
        env=clean_env(HOST="127.0.0.1", PORT=str(port), **ENV, **extra),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_http(f"http://127.0.0.1:{port}/health", 60, process)
    return process, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--burst", type=int, default=1_000)
    args = parser.parse_args()
    log_dir = Path("bench/results")
    log_dir.mkdir(parents=True, exist_ok=True)
    rps: dict[int, list[float]] = {1: [], 2: []}
    servers = {n: start(n, log_dir) for n in (1, 2)}
    try:
        for port in (port for _, port in servers.values()):
            run_load(port, seconds=2, connections=16, prefix="warm")
        for round_ in range(args.rounds):
            for n, (_, port) in servers.items():
                result = run_load(port, seconds=args.seconds, connections=16, prefix=f"r{round_}")
                rps[n].append(result.rps)
                print(f"round {round_} workers {n}: {result.rps:.1f} streams/s", file=sys.stderr)
    finally:
        for process, _ in servers.values():
            stop(process)
    bursts: dict[int, tuple[int, float, float]] = {}
    for n in (1, 2):
        process, port = start(
            n, log_dir, FIT_CHECK_LATENCY_MS="200", FIT_CHECK_MAX_CONCURRENT_SESSIONS="2000"
        )
        try:
            asyncio.run(streams(port, total=40, concurrency=40, prefix="warm-burst"))
            started = time.monotonic()
            results = asyncio.run(
                streams(
                    port, total=args.burst, concurrency=args.burst, prefix="burst", timeout_s=120
                )
            )
            wall = time.monotonic() - started
        finally:
            stop(process)
        firsts = [r.first_event_s * 1e3 for r in results if r.first_event_s is not None]
        bursts[n] = (sum(r.completed for r in results), percentile(firsts, 0.99), wall)
    one, two = statistics.median(rps[1]), statistics.median(rps[2])
    print(
        f"| workers | streams/s (median of {args.rounds} rounds of {args.seconds} s) | range "
        f"| {args.burst} streams at once: completed, first event p99, all done in |"
    )
    print("|---|---|---|---|")
    for n, median in ((1, one), (2, two)):
        done, p99, wall = bursts[n]
        print(
            f"| {n} | {median:.1f} | {min(rps[n]):.1f}-{max(rps[n]):.1f} "
            f"| {done}/{args.burst}, {p99:.0f} ms, {wall:.1f} s |"
        )
    print(f"\n2 workers / 1 worker: {two / one:.2f}x throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
