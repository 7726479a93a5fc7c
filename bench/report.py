"""What a result needs to be read later: the machine and versions, tables, files on disk.

The markdown printed at the end is also written to ``bench/results/<stamp>.md``, ready to
paste into docs/performance.md; the JSON beside it holds every round's raw figures.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench import units
from bench.servers import ROOT

RESULTS = ROOT / "bench" / "results"
PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "sse-starlette",
    "pydantic",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-instrumentation-fastapi",
    "opentelemetry-exporter-prometheus",
    "prometheus-client",
    "prometheus-fastapi-instrumentator",
    "python-json-logger",
)


def _cpuinfo(key: str) -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(key):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _command(*args: str) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, Any]:
    """Machine, software and source revision: a figure means little without them."""
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    dirty = bool(_command("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"))
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": _cpuinfo("model name"),
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git": _command("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")
        + (" (with uncommitted changes)" if dirty else ""),
        "wrk": _command("wrk", "--version").splitlines()[0] if _command("which", "wrk") else "",
        "packages": {p: _version(p) for p in PACKAGES},
    }


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table padded to line up in a terminal too."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def num(value: float, digits: int = 0) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def render(report: dict[str, Any]) -> str:
    """The markdown snippet: context, the side-by-side table, then the other checks."""
    env, profile, t = report["environment"], report["profile"], report["throughput"]
    rows = []
    for name, s in t.items():
        rows.append(
            [
                name,
                num(s["rps"], 1),
                f"{num(s['rps_min'])}-{num(s['rps_max'])}",
                num(s["rps_ratio"], 2),
                num(s["p50_ms"], 1),
                num(s["p99_ms"], 1),
                num(s["cpu_us_per_request"]),
                num(s["cpu_ratio"], 2),
                str(s["errors"]),
            ]
        )
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    out = [
        f"### `{report['command']}`, {report['date']}",
        "",
        f"- machine: {env['nproc']} CPUs ({env['cpu_model']}), {env['memory_gib']} GiB, "
        f"Linux {env['kernel']}; Python {env['python']}; source {env['git']}",
        f"- packages: {packages}",
        f"- load: {report['generator']}; {profile['connections']} connections, "
        f"{profile['rounds']} rounds of {profile['seconds']} s per variant, alternated "
        f"({' '.join(t)} ...); one server per variant, all up at once (`fit-check serve`, "
        f"one uvicorn worker, offline providers, FIT_CHECK_LATENCY_MS=0)",
        f"- OTLP endpoint of `full`: {report['otlp_endpoint']}; `full-otlp-dead` sends to a "
        f"closed loopback port",
        "",
        table(
            [
                "variant",
                "req/s",
                "rounds",
                "x base",
                "p50 ms",
                "p99 ms",
                "CPU us/req",
                "x base",
                "errors",
            ],
            rows,
        ),
        "",
        "`baseline`: OTEL_SDK_DISABLED=true, text logs at WARNING. `full`: traces and metrics "
        "over OTLP/HTTP (metrics every 5 s), Prometheus `/metrics`, JSON logs at INFO to a "
        "file. `peer`: baseline plus prometheus-fastapi-instrumentator. `full-sampled`: `full` "
        "with parent-based 10% trace sampling (metrics and logs complete). `full-fastotel`: "
        "`full` with FIT_CHECK_SPAN_PROCESSOR=fastotel. `full-no-logs`: "
        "LOG_LEVEL=WARNING; `full-no-spans`: OTEL_TRACES_SAMPLER=always_off (spans started, "
        "none recorded or exported); `full-no-push`: no OTLP endpoint (spans recorded, "
        "metrics on `/metrics`, nothing encoded or sent); `metrics-only`: all three. CPU is "
        "utime+stime of "
        "the server process from the start of a round to the start of its next round (so "
        "deferred export work counts) divided by the streams completed in the round. `req/s`, "
        "latency and CPU are medians of the rounds, `rounds` the range of req/s; each `x base` "
        "is the median of per-round ratios to the baseline round run just before.",
        "",
        "What each piece costs in the running service: CPU per stream of one variant minus "
        "another's, median of same-round differences. The pieces overlap (span export is in "
        "both spans and push), so they need not add up to the total:",
        "",
        table(
            ["piece", "measured as", "CPU us/stream", "of it, event-loop thread"],
            piece_rows(report),
        ),
        "",
        table(["check", "result"], checks(report)),
        "",
        "Unit costs (bench/units.py, in process, fastest of 5 rounds):",
        "",
        units.markdown(report["units"]),
    ]
    return "\n".join(out) + "\n"


def piece_rows(report: dict[str, Any]) -> list[list[str]]:
    return [
        [
            p["piece"],
            f"`{p['with']}` - `{p['without']}`",
            num(p["cpu_us"]),
            num(p["main_cpu_us"]),
        ]
        for p in report["pieces"]
    ]


def checks(report: dict[str, Any]) -> list[list[str]]:
    t, s, o, long = report["throughput"], report["ttfe"], report["open"], report["long"]
    full, dead, peer = t["full"], t["full-otlp-dead"], t["peer"]
    keep = dead["rps_vs_live"]
    rows = [
        [
            "CPU added per stream: full telemetry / 10% sampled / peer",
            f"{num(full['cpu_added_us'])} / {num(t['full-sampled']['cpu_added_us'])} / "
            f"{num(peer['cpu_added_us'])} us",
        ],
        [
            "OTLP receiver's own CPU per `full` stream (upper bound: it also receives "
            "`full-sampled`'s exports)",
            f"{num(report['endpoint_cpu_us_per_stream'])} us",
        ],
        [
            "OTLP endpoint down: req/s against live (must be at least 95%)",
            f"{num(keep * 100, 1)}% ({'PASS' if keep >= 0.95 else 'FAIL'})",
        ],
    ]
    for same_rate in report["same_rate"]:
        base_p99 = same_rate["baseline"]["p99_ms"]
        for name, v in same_rate.items():
            rows.append(
                [
                    f"stream latency at a fixed {num(v['rate'])} streams/s, "
                    f"{v['latency_ms']} ms per provider call: {name} ({v['streams']} streams)",
                    f"p50 {num(v['p50_ms'], 1)} ms, p99 {num(v['p99_ms'], 1)} ms "
                    f"({num(v['p99_ms'] / base_p99, 2)}x baseline p99); "
                    f"{v['completed']}/{v['streams']} completed",
                ]
            )
    for name, v in s.items():
        rows.append(
            [
                f"time to first `phase` event, {name} ({v['streams']} streams, "
                f"{v['concurrency']} at once)",
                f"p50 {num(v['p50_ms'], 1)} ms, p99 {num(v['p99_ms'], 1)} ms; "
                f"{v['completed']}/{v['streams']} completed",
            ]
        )
    for name, v in o.items():
        rows.append(
            [
                f"{v['streams']} streams open at once ({name}, 200 ms per provider call)",
                f"{v['completed']}/{v['streams']} completed "
                f"({'PASS' if v['completed'] == v['streams'] else 'FAIL'}); first event p50 "
                f"{num(v['p50_ms'])} ms, p99 {num(v['p99_ms'])} ms; slowest stream "
                f"{num(v['max_total_s'], 1)} s; RSS {num(v['rss_mb'])} MiB",
            ]
        )
    m = long["metrics"]
    rows += [
        [
            f"GET /metrics latency (full, {num(m['gets'])} GETs by {m['client']}, one at a time)",
            f"p50 {num(m['p50_ms'], 2)} ms, p99 {num(m['p99_ms'], 2)} ms "
            f"({m['series']} series, {num(m['bytes'])} bytes); GET /health on the same "
            f"server, the HTTP floor: p50 {num(m['floor']['p50_ms'], 2)} ms",
        ],
        [
            f"GET {report['peer_metrics']['path']} render (peer)",
            f"p50 {num(report['peer_metrics']['p50_ms'], 2)} ms, "
            f"p99 {num(report['peer_metrics']['p99_ms'], 2)} ms "
            f"({report['peer_metrics']['series']} series)",
        ],
        [
            "metric series after 10 / "
            + " / ".join(f"{num(n)}" for n, _ in long["series_after"][1:])
            + " session ids",
            " / ".join(str(c) for _, c in long["series_after"]),
        ],
        [
            f"RSS (full): start / after {num(long['rss_20pct'][0])} streams (20%) / after "
            f"{num(long['rss_end'][0])} (100%)",
            f"{num(long['rss_start_mb'], 1)} / {num(long['rss_20pct'][1], 1)} / "
            f"{num(long['rss_end'][1], 1)} MiB; drift 20%->100%: "
            f"{long['rss_end'][1] - long['rss_20pct'][1]:+.1f} MiB; "
            f"{long['errors']} streams not complete",
        ],
    ]
    if long["stopped_early"]:
        rows.append(["long run", f"stopped by its time bound at {num(long['rss_end'][0])} streams"])
    return rows


def write(report: dict[str, Any], markdown: str) -> Path:
    """bench/results/<UTC stamp>.json and .md (the directory is gitignored)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ("-quick" if report["quick"] else "")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{stamp}.md").write_text(markdown)
    return RESULTS / f"{stamp}.json"
