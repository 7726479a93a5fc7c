"""``make bench`` / ``make bench-quick``: what the service's telemetry costs, side by side.

Variants of one service on loopback, each its own ``fit-check serve`` (one uvicorn worker,
offline providers, no added latency), loaded in short alternating rounds (A B C ..., A B C
..., ...) so that drift of the machine hits them all alike. Every figure is the median of
the rounds; every ratio or difference is the median of per-round ones:

- ``baseline``: OTEL_SDK_DISABLED=true, text logs at WARNING;
- ``peer``: the baseline plus prometheus-fastapi-instrumentator (bench/peer_app.py);
- ``full``: traces and metrics over OTLP/HTTP to a live endpoint, ``/metrics``, JSON logs
  at INFO (to a file);
- ``full-otlp-dead``: ``full`` with its OTLP endpoint on a closed port;
- ``full-sampled``: ``full`` with the head sampling docs/performance.md recommends for
  high traffic (parent-based, 10% of new traces); metrics and logs stay complete;
- ``full-no-logs``, ``full-no-spans``, ``full-no-push``: ``full`` less one piece (INFO
  logs; recorded spans; OTLP pushes), and ``metrics-only`` (all three off): what each piece
  costs inside the running service, next to its cost alone in ``bench/units.py``.

First, in process, what each unit of telemetry costs and how many a stream makes
(bench/units.py). Then, each on a fresh server, what one variant answers alone: time to
first event, 1,000 streams open at once, ``/metrics`` render time, metric series against
distinct session ids, RSS over many streams.

Usage: python -m bench.run [--quick] [--sink] [--keep-logs]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from bench import report, units
from bench.load import (
    LoadResult,
    fixed_rate,
    generator,
    percentile,
    run_gets,
    run_load,
    streams,
)
from bench.peer_app import PEER_METRICS_PATH
from bench.servers import (
    BIN,
    ROOT,
    Endpoint,
    Server,
    ServerSpec,
    dead_endpoint,
    otlp_endpoint,
    serve,
    serve_all,
    stack_available,
)

SETTLE_S = 6  # past the span processor's 5 s schedule delay
SAME_RATE = 40.0  # streams/s: under half of what `full` sustains on the 2-core machine
BASELINE = {"OTEL_SDK_DISABLED": "true", "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"}
FULL = {
    "OTEL_SDK_DISABLED": "false",
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "INFO",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    # The local stack's interval (deploy/local/stack.sh): a round then includes metric
    # exports, which the default 60 s would leave out of all but the longest rounds.
    "OTEL_METRIC_EXPORT_INTERVAL": "5000",
}
SAMPLED = {
    **FULL,
    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    "OTEL_TRACES_SAMPLER_ARG": "0.1",
}
FASTOTEL = {**FULL, "FIT_CHECK_SPAN_PROCESSOR": "fastotel"}  # spans sent by native code
NO_LOGS = {**FULL, "LOG_LEVEL": "WARNING"}
NO_SPANS = {**FULL, "OTEL_TRACES_SAMPLER": "always_off"}  # spans made, none recorded
METRICS_ONLY = {**NO_SPANS, "LOG_LEVEL": "WARNING"}


@dataclass(frozen=True)
class Profile:
    """Sizes of one run. Every loop below is bounded by these counts and by ``long_budget_s``."""

    rounds: int  # of each variant, alternated
    seconds: int  # measured per round, after ``warmup_s``
    warmup_s: int
    connections: int  # wrk's closed loop: enough to keep one worker's core busy
    rate_rounds: int  # of each variant at the fixed rate, alternated
    rate_seconds: int
    ttfe_streams: int
    ttfe_concurrency: int
    open_streams: int  # opened at once
    metrics_seconds: int  # of back-to-back scrapes, timed
    series_ids: int  # distinct session ids before the second series count
    long_streams: int  # RSS drift run
    long_slice_s: int
    long_budget_s: int  # the RSS run stops here even short of long_streams


QUICK = Profile(
    rounds=3,
    seconds=1,
    warmup_s=0,
    connections=16,
    rate_rounds=1,
    rate_seconds=1,
    ttfe_streams=50,
    ttfe_concurrency=8,
    open_streams=200,
    metrics_seconds=1,
    series_ids=300,
    long_streams=1_000,
    long_slice_s=2,
    long_budget_s=4,
)
FULL_RUN = Profile(
    rounds=12,
    seconds=5,
    warmup_s=5,
    connections=16,
    rate_rounds=6,
    rate_seconds=5,
    ttfe_streams=1_000,
    ttfe_concurrency=8,
    open_streams=1_000,
    metrics_seconds=10,
    series_ids=10_000,
    long_streams=100_000,
    long_slice_s=10,
    long_budget_s=1_800,
)


@dataclass(frozen=True)
class Variant:
    env: dict[str, str]
    peer: bool = False
    otlp: Literal["live", "dead"] | None = None


# The order of a round: each variant runs soon after the one it is compared with.
VARIANTS = {
    "baseline": Variant(BASELINE),
    "peer": Variant(BASELINE, peer=True),
    "full": Variant(FULL, otlp="live"),
    "full-fastotel": Variant(FASTOTEL, otlp="live"),
    "full-otlp-dead": Variant(FULL, otlp="dead"),
    "full-sampled": Variant(SAMPLED, otlp="live"),
    "full-no-logs": Variant(NO_LOGS, otlp="live"),
    "full-no-spans": Variant(NO_SPANS, otlp="live"),
    "full-no-push": Variant(FULL),  # no OTLP endpoint: nothing encoded or sent
    "metrics-only": Variant(METRICS_ONLY),
}
#: What one piece of the telemetry costs in the service: CPU per stream of ``with`` minus
#: that of ``without``, the two measured in the same round.
PIECES = (
    ("INFO logs (JSON, trace ids)", "full", "full-no-logs"),
    ("spans recorded (HTTP, phase, provider), processed and exported", "full", "full-no-spans"),
    ("OTLP push (spans and metrics encoded and sent)", "full", "full-no-push"),
    ("metrics alone: spec instruments, /metrics, exemplars", "metrics-only", "baseline"),
    ("all telemetry", "full", "baseline"),
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Bench:
    """One run: the sizes, the live and the dead OTLP endpoint, where servers log."""

    def __init__(self, profile: Profile, endpoint: Endpoint, dead_url: str, log_dir: Path) -> None:
        self.profile = profile
        self.endpoint = endpoint
        self.dead_url = dead_url
        self.log_dir = log_dir

    def spec(self, variant: str, **extra_env: str) -> ServerSpec:
        """How to start ``variant``, its OTLP endpoint filled in."""
        v = VARIANTS[variant]
        env = dict(v.env)
        if v.otlp:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = (
                self.endpoint.url if v.otlp == "live" else self.dead_url
            )
        return ServerSpec({**env, **extra_env}, peer=v.peer)

    def serve(self, name: str, variant: str, **extra_env: str) -> AbstractContextManager[Server]:
        """A fresh server of ``variant``."""
        return serve(name, self.spec(variant, **extra_env), log_dir=self.log_dir)

    def serve_all(
        self, names: dict[str, str], **extra_env: str
    ) -> AbstractContextManager[dict[str, Server]]:
        """Fresh servers, started together: ``names`` maps each server's name to its variant."""
        specs = {name: self.spec(variant, **extra_env) for name, variant in names.items()}
        return serve_all(specs, log_dir=self.log_dir)

    def load(self, server: Server, seconds: int, *, prefix: str) -> LoadResult:
        """The closed-loop load every throughput figure comes from (session ids ``prefix-*``)."""
        return run_load(
            server.port, seconds=seconds, connections=self.profile.connections, prefix=prefix
        )

    def throughput(
        self, names: Sequence[str] = tuple(VARIANTS)
    ) -> tuple[dict[str, dict[str, Any]], float]:
        """All variants up at once, loaded in turn: A B C D, A B C D, ...

        Short rounds in quick succession pair each variant with a baseline round measured
        seconds earlier, on a machine whose speed drifts. A server's CPU is read when each
        of its rounds starts, so a round is charged until the next one of the same variant
        begins: work deferred past the load (the span processor exports up to 5 s later)
        counts against the round that caused it. Returns the variants' figures and the
        OTLP receiver's CPU per stream of ``full`` (the only variant it hears from).
        ``names``: the variants to run (the baseline among them), all of them by default.
        """
        p = self.profile
        with self.serve_all({name: name for name in names}) as servers:
            for name, server in servers.items():
                if p.warmup_s:
                    self.load(server, p.warmup_s, prefix=f"warm-{name}")
            cpu: dict[str, list[float]] = {name: [] for name in names}
            main_cpu: dict[str, list[float]] = {name: [] for name in names}
            loads: dict[str, list[LoadResult]] = {name: [] for name in names}
            endpoint_cpu = self.endpoint.cpu_s()
            for r in range(p.rounds):
                for name, server in servers.items():
                    cpu[name].append(server.cpu_s())
                    main_cpu[name].append(server.main_thread_cpu_s())
                    loads[name].append(self.load(server, p.seconds, prefix=f"r{r}-{name}"))
                log(
                    f"round {r + 1}/{p.rounds}: "
                    + ", ".join(f"{name} {loads[name][-1].rps:.0f}/s" for name in names)
                )
            time.sleep(SETTLE_S)  # the last rounds' deferred exports
            for name, server in servers.items():
                cpu[name].append(server.cpu_s())
                main_cpu[name].append(server.main_thread_cpu_s())
            endpoint_cpu = self.endpoint.cpu_s() - endpoint_cpu
        rounds = {
            name: [
                {
                    "requests": load.requests,
                    "errors": load.errors,
                    "rps": load.rps,
                    "p50_ms": load.p50_ms,
                    "p99_ms": load.p99_ms,
                    "cpu_us_per_request": (cpu[name][r + 1] - cpu[name][r])
                    / max(load.requests, 1)
                    * 1e6,
                    "main_cpu_us_per_request": (main_cpu[name][r + 1] - main_cpu[name][r])
                    / max(load.requests, 1)
                    * 1e6,
                }
                for r, load in enumerate(loads[name])
            ]
            for name in names
        }
        # It also hears from ``full-sampled`` (its metrics, a tenth of its spans): this
        # figure is an upper bound for ``full`` alone.
        full_streams = sum(load.requests for load in loads["full"])
        return summarize(rounds), endpoint_cpu / max(full_streams, 1) * 1e6

    def same_rate(
        self, latency_ms: int, names: Sequence[str] = ("baseline", "full", "full-sampled", "peer")
    ) -> dict[str, dict[str, Any]]:
        """Stream latency at one fixed arrival rate that every variant sustains, alternated.

        The throughput rounds run each server flat out, where latency only mirrors CPU per
        stream; this is the latency users see at an equal, moderate load. With
        ``latency_ms`` 0 a stream is all CPU; with some, it runs at a provider's pace.
        """
        p = self.profile
        extra = {"FIT_CHECK_LATENCY_MS": str(latency_ms)}
        group = {f"rate{latency_ms}-{name}": name for name in names}
        with self.serve_all(group, **extra) as by_name:
            servers = dict(zip(names, by_name.values(), strict=True))
            results: dict[str, list[Any]] = {name: [] for name in names}
            for r in range(p.rate_rounds):
                for name, server in servers.items():
                    results[name] += asyncio.run(
                        fixed_rate(
                            server.port, rate=SAME_RATE, seconds=p.rate_seconds, prefix=f"rate{r}"
                        )
                    )
        out: dict[str, dict[str, Any]] = {}
        for name, rs in results.items():
            totals = [x.total_s * 1e3 for x in rs if x.completed]
            out[name] = {
                "rate": SAME_RATE,
                "latency_ms": latency_ms,
                "streams": len(rs),
                "completed": len(totals),
                "p50_ms": percentile(totals, 0.5),
                "p99_ms": percentile(totals, 0.99),
            }
        base = out["baseline"]["p99_ms"]
        log(
            f"at {SAME_RATE:.0f} streams/s, {latency_ms} ms per provider call: "
            + ", ".join(
                f"{n} p99 {v['p99_ms']:.1f} ms ({v['p99_ms'] / base:.2f}x)" for n, v in out.items()
            )
        )
        return out

    def ttfe(self) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """Time to the first ``phase`` event at modest concurrency; the peer's exposition."""
        p = self.profile
        out: dict[str, dict[str, Any]] = {}
        peer_metrics: dict[str, Any] = {}
        for name in ("baseline", "full", "peer"):
            with self.serve(f"ttfe-{name}", name) as server:
                asyncio.run(
                    streams(
                        server.port,
                        total=30,
                        concurrency=p.ttfe_concurrency,
                        prefix=f"warm-ttfe-{name}",
                    )
                )
                results = asyncio.run(
                    streams(
                        server.port,
                        total=p.ttfe_streams,
                        concurrency=p.ttfe_concurrency,
                        prefix=f"ttfe-{name}",
                    )
                )
                if name == "peer":
                    peer_metrics = time_metrics(server, PEER_METRICS_PATH, p.metrics_seconds)
            firsts = [r.first_event_s * 1e3 for r in results if r.first_event_s is not None]
            out[name] = {
                "streams": p.ttfe_streams,
                "concurrency": p.ttfe_concurrency,
                "completed": sum(r.completed for r in results),
                "p50_ms": percentile(firsts, 0.5),
                "p99_ms": percentile(firsts, 0.99),
            }
            log(
                f"time to first event {name}: p50 {out[name]['p50_ms']:.1f} ms, "
                f"p99 {out[name]['p99_ms']:.1f} ms"
            )
        return out, peer_metrics

    def open_streams(self) -> dict[str, dict[str, Any]]:
        """N streams opened at once on one process, 200 ms per provider call: all must end.

        The baseline runs it too: what it shows is the floor of the service itself, since
        every stream's first event waits behind the request handling of the ones before it.
        """
        n = self.profile.open_streams
        extra = {"FIT_CHECK_LATENCY_MS": "200", "FIT_CHECK_MAX_CONCURRENT_SESSIONS": "2000"}
        out: dict[str, dict[str, Any]] = {}
        for name in ("baseline", "full"):
            with self.serve(f"open-{name}", name, **extra) as server:
                asyncio.run(streams(server.port, total=20, concurrency=20, prefix="warm-open"))
                started = time.monotonic()
                results = asyncio.run(
                    streams(server.port, total=n, concurrency=n, prefix="open", timeout_s=120)
                )
                wall = time.monotonic() - started
                peak = server.peak_rss_mb()
            firsts = [r.first_event_s * 1e3 for r in results if r.first_event_s is not None]
            out[name] = {
                "streams": n,
                "completed": sum(r.completed for r in results),
                "p50_ms": percentile(firsts, 0.5),
                "p99_ms": percentile(firsts, 0.99),
                "max_total_s": max(r.total_s for r in results),
                "wall_s": wall,
                "rss_mb": peak,
            }
            log(
                f"{n} open streams, {name}: {out[name]['completed']} completed, first event "
                f"p99 {out[name]['p99_ms']:.0f} ms, all done in {wall:.1f} s"
            )
        return out

    def long_run(self) -> dict[str, Any]:
        """One full-telemetry server: series counts, /metrics render time, RSS over many streams."""
        p = self.profile
        with self.serve("long", "full") as server:
            rss_start = server.rss_mb()
            asyncio.run(streams(server.port, total=10, concurrency=10, prefix="ids"))
            sent, errors = 10, 0
            series_after = [[sent, series_count(server)]]
            metrics = time_metrics(server, "/metrics", p.metrics_seconds)
            metrics["floor"] = time_metrics(server, "/health", p.metrics_seconds)
            log(f"/metrics: p50 {metrics['p50_ms']:.2f} ms at {metrics['series']} series")
            samples: list[list[float]] = []
            deadline = time.monotonic() + p.long_budget_s
            next_note = time.monotonic() + 60
            while sent < p.long_streams and time.monotonic() < deadline:
                result = self.load(server, p.long_slice_s, prefix=f"long{len(samples)}")
                if result.requests == 0:
                    raise RuntimeError("the long run made no progress; see the server log")
                sent, errors = sent + result.requests, errors + result.errors
                samples.append([sent, server.rss_mb()])
                if len(series_after) == 1 and sent >= p.series_ids:
                    series_after.append([sent, series_count(server)])
                if time.monotonic() > next_note:
                    log(f"long run: {sent:,} streams, RSS {samples[-1][1]:.1f} MiB")
                    next_note += 60
            series_after.append([sent, series_count(server)])
        target = min(p.long_streams, sent)
        at_20 = next((s for s in samples if s[0] >= 0.2 * target), samples[-1])
        log(
            f"long run: {sent:,} streams, RSS {at_20[1]:.1f} MiB at {at_20[0]:,.0f} -> "
            f"{samples[-1][1]:.1f} MiB"
        )
        return {
            "rss_start_mb": rss_start,
            "rss_20pct": at_20,
            "rss_end": samples[-1],
            "rss_samples": samples,
            "series_after": series_after,
            "metrics": metrics,
            "errors": errors,
            "stopped_early": sent < p.long_streams,
        }


def summarize(rounds: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Medians of the rounds; ratios as medians of per-round ratios.

    A variant's round is divided by the baseline round run seconds before it, so a machine
    that is slower for a while (a shared VM's CPU speed drifts by tens of percent) slows
    both sides of the ratio alike.
    """
    base = rounds["baseline"]
    out = {}
    for name, rs in rounds.items():
        med = {k: statistics.median(x[k] for x in rs) for k in rs[0] if k != "errors"}
        pairs = list(zip(rs, base, strict=True))
        out[name] = {
            **med,
            "rps_min": min(x["rps"] for x in rs),
            "rps_max": max(x["rps"] for x in rs),
            "rps_ratio": statistics.median(x["rps"] / b["rps"] for x, b in pairs),
            "cpu_ratio": statistics.median(
                x["cpu_us_per_request"] / b["cpu_us_per_request"] for x, b in pairs
            ),
            "cpu_added_us": statistics.median(
                x["cpu_us_per_request"] - b["cpu_us_per_request"] for x, b in pairs
            ),
            "errors": sum(x["errors"] for x in rs),
            "rounds": rs,
        }
    if "full" in rounds and "full-otlp-dead" in rounds:
        live, dead = rounds["full"], rounds["full-otlp-dead"]
        out["full-otlp-dead"]["rps_vs_live"] = statistics.median(
            d["rps"] / f["rps"] for d, f in zip(dead, live, strict=True)
        )
    return out


def pieces(throughput: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """CPU per stream each piece adds: medians of same-round differences (see ``PIECES``)."""
    out = []
    for label, with_, without in PIECES:
        pairs = zip(throughput[with_]["rounds"], throughput[without]["rounds"], strict=True)
        diffs = [
            (
                a["cpu_us_per_request"] - b["cpu_us_per_request"],
                a["main_cpu_us_per_request"] - b["main_cpu_us_per_request"],
            )
            for a, b in pairs
        ]
        out.append(
            {
                "piece": label,
                "with": with_,
                "without": without,
                "cpu_us": statistics.median(d for d, _ in diffs),
                "main_cpu_us": statistics.median(m for _, m in diffs),
            }
        )
    return out


def series_count(server: Server, path: str = "/metrics") -> int:
    """Lines of the exposition that are samples (not ``#`` comments)."""
    text = httpx.get(f"{server.url}{path}", timeout=10).text
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def time_metrics(server: Server, path: str, seconds: int) -> dict[str, Any]:
    """Latency of back-to-back GETs of ``path`` on one keep-alive connection, after a warm-up.

    wrk when present (see ``run_gets``); else httpx, whose own parsing is then included.
    """
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(20):
            body = client.get(path).raise_for_status().content
        result = run_gets(server.port, path, seconds=seconds)
        if result is not None:
            p50, p99, gets, client_name = result.p50_ms, result.p99_ms, result.requests, "wrk"
        else:
            timings = []
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                started = time.perf_counter()
                client.get(path).raise_for_status()
                timings.append((time.perf_counter() - started) * 1e3)
            p50, p99 = percentile(timings, 0.5), percentile(timings, 0.99)
            gets, client_name = len(timings), "httpx"
    return {
        "path": path,
        "gets": gets,
        "client": client_name,
        "bytes": len(body),
        "series": series_count(server, path),
        "p50_ms": p50,
        "p99_ms": p99,
    }


def preflight() -> None:
    """Fail early, with the fix, on what the run would otherwise trip over halfway."""
    if not (BIN / "fit-check").exists():
        sys.exit("bench: .venv is missing; run `make install` (or use `make bench`)")
    if importlib.util.find_spec("prometheus_fastapi_instrumentator") is None:
        sys.exit("bench: prometheus-fastapi-instrumentator is missing; run `make install`")
    if shutil.which("wrk") is None:
        log(
            "wrk not found (`apt-get install -y wrk`); falling back to the asyncio client, "
            "which shares the CPU with the server: throughput figures will be lower"
        )


def _interrupt(signum: int, _frame: object) -> None:
    # Unwind like Ctrl-C, so every ``finally`` stops what it started.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the smoke run, under 2 minutes")
    parser.add_argument(
        "--sink",
        action="store_true",
        help="use the loopback OTLP sink even when the Collector is built",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL_RUN
    # Also SIGINT: a shell starts background jobs with it ignored, and Python keeps that.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    preflight()
    started = time.monotonic()
    run_dir = Path(tempfile.mkdtemp(prefix="fit-check-bench-"))
    keep = args.keep_logs
    try:
        use_stack = stack_available() and not args.sink
        log("starting the OTLP endpoint: " + ("the local stack" if use_stack else "the sink"))
        with otlp_endpoint(run_dir, use_stack=use_stack) as endpoint, dead_endpoint() as dead:
            bench = Bench(profile, endpoint, dead, run_dir)
            result: dict[str, Any] = {
                "command": "make bench-quick" if args.quick else "make bench",
                "quick": args.quick,
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "environment": report.environment(),
                "generator": generator(),
                "otlp_endpoint": endpoint.kind,
                "profile": asdict(profile),
            }
            log("unit costs, in process")
            result["units"] = units.measure(quick=args.quick)
            result["throughput"], result["endpoint_cpu_us_per_stream"] = bench.throughput()
            result["pieces"] = pieces(result["throughput"])
            result["same_rate"] = [bench.same_rate(latency_ms) for latency_ms in (0, 50)]
            result["ttfe"], result["peer_metrics"] = bench.ttfe()
            result["open"] = bench.open_streams()
            result["long"] = bench.long_run()
        result["seconds"] = round(time.monotonic() - started)
    except KeyboardInterrupt:
        keep = True
        log(f"interrupted; every process it started is stopped; logs in {run_dir}")
        return 130
    except Exception:
        keep = True
        log(f"failed; every process it started is stopped; server logs in {run_dir}")
        raise
    finally:
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    markdown = report.render(result)
    print("\n" + markdown)
    path = report.write(result, markdown)
    log(f"done in {result['seconds']} s; {path.relative_to(ROOT)} and .md beside it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
