"""Split two py-spy profiles (baseline and full) into telemetry pieces, per stream.

The throughput table gives one number, CPU added per stream; this says which piece of
the telemetry it goes to. Record each server under the same load with

    py-spy record --pid PID --duration 20 --rate 250 --format raw --full-filenames -o X.raw

(``--nonblocking`` too, so the sampler does not pause the server), then

    python -m bench.split base.raw STREAMS_IN_WINDOW full.raw STREAMS_IN_WINDOW

A sample belongs to a thread's piece when its stack passes through that thread's entry
point (the span export thread, the metric export thread); otherwise to the innermost
frame that matches a piece, walking from the leaf outwards, so a log call inside a phase
counts as logging, not as the phase.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

_SITE = "site-packages/"
THREADS = (
    ("span export thread", ("BatchProcessor.worker",)),
    ("metric export thread", ("PeriodicExportingMetricReader._ticker",)),
    ("/metrics render", ("generate_latest",)),
)
PIECES = (
    ("logging", ("/logging/", "pythonjsonlogger", "/otel/logging.py")),
    (
        "SDK: spans",
        (_SITE + "opentelemetry/sdk/trace", _SITE + "opentelemetry/sdk/util", "attributes/"),
    ),
    ("SDK: metrics", (_SITE + "opentelemetry/sdk/metrics",)),
    ("OTel API and context", (_SITE + "opentelemetry/trace", _SITE + "opentelemetry/context")),
    ("HTTP server span (instrumentation)", (_SITE + "opentelemetry/instrumentation",)),
    ("facade (otel/)", ("/otel/",)),
    ("service code (app/)", ("/app/",)),
    (
        "starlette, fastapi, sse, anyio, pydantic",
        tuple(_SITE + p for p in ("starlette", "fastapi", "sse_starlette", "anyio", "pydantic")),
    ),
    ("uvicorn", (_SITE + "uvicorn", "httptools")),
    ("asyncio and the rest of the stdlib", ("/lib/python3",)),
)


def classify(stack: str) -> str:
    for piece, entries in THREADS:
        if any(entry in stack for entry in entries):
            return piece
    for frame in reversed(stack.split(";")):
        for piece, markers in PIECES:
            if any(marker in frame for marker in markers):
                return piece
    return "other"


def samples(path: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        counts[classify(stack)] += int(n)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("base_streams", type=float)
    parser.add_argument("full", type=Path)
    parser.add_argument("full_streams", type=float)
    parser.add_argument("--rate", type=float, default=250, help="py-spy's --rate")
    args = parser.parse_args()
    base, full = samples(args.base), samples(args.full)

    def us(counts: Counter[str], piece: str, streams: float) -> float:
        rate: float = args.rate
        return counts[piece] / rate / streams * 1e6

    pieces = sorted(
        set(base) | set(full),
        key=lambda p: us(base, p, args.base_streams) - us(full, p, args.full_streams),
    )
    print("| piece | baseline µs/stream | full µs/stream | added |")
    print("|---|---|---|---|")
    totals = [0.0, 0.0]
    for piece in pieces:
        b, f = us(base, piece, args.base_streams), us(full, piece, args.full_streams)
        totals[0] += b
        totals[1] += f
        print(f"| {piece} | {b:,.0f} | {f:,.0f} | {f - b:+,.0f} |")
    print(f"| **total** | {totals[0]:,.0f} | {totals[1]:,.0f} | {totals[1] - totals[0]:+,.0f} |")


if __name__ == "__main__":
    main()
