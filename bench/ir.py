"""Instructions per stream, counted by valgrind: ``python -m bench.ir`` (``make bench-ir``).

Wall-clock CPU on a shared 2-core VM cannot resolve changes under about a millisecond per
stream; instruction counts (cachegrind's ``Ir``) of the same in-process run repeat to well
under 0.1%. Each variant builds the app with ``app.asgi.build()`` from its environment and
POSTs N offline streams through ``httpx.ASGITransport`` (no sockets), under
``valgrind --tool=cachegrind --cache-sim=no``; the per-stream figure is
``(Ir at N=60 - Ir at N=10) / 50``, so start-up and imports cancel out.

Variants: the baseline (``OTEL_SDK_DISABLED``), full telemetry, full telemetry with one
piece switched off (log lines, spans), and full telemetry exporting over OTLP/HTTP to a
loopback sink (``bench/otlp_sink.py``; by batch size, not by the clock: ``BY_BATCH``):
with the stock span processor, with fastotel's (``FIT_CHECK_SPAN_PROCESSOR``), and
without the metric push (one metric reader instead of two), then without exemplars too.
Against them, the stock SDK's floor: the same telemetry units made by the stock SDK alone
(``bench/floor_drive.py``). Then the telemetry's share split by the interpreter's C
functions (cachegrind sees C, not Python: ``_PyEval_EvalFrameDefault`` is Python code
running, the others are where it spends in C), per stream, full minus baseline.

``--redis`` runs every variant with the shared session log (``FIT_CHECK_REDIS_URL`` to a
``redis-server`` on loopback, started here, its work not counted): the log's cost is the
difference to a run without it. Its writes are batched by time (50 ms), and under valgrind
a stream takes about 50 times longer, so a write carries more frames than it would in
real time: the figure is a lower bound of the per-frame cost.

``--loop uvloop`` (the default) runs the counted program on uvloop, the loop uvicorn picks
in production; ``--loop asyncio`` on the standard library's.

``--per-chunk`` counts what one paced chunk of a real-provider stream costs, split into a
chunk only read (the first two LLM calls: their answers are shown at their phase's end)
and a chunk read and written (the report's: each chunk an SSE write of its own to the
client): the fake (``bench/fake_provider.py``) streams N chunks to one kind of call and
the smallest count to the others, and a chunk's cost is the difference between N and the
smallest count, over the same streams, so start-up and everything per stream cancel out.
Both loops, baseline and full telemetry exporting to the loopback sink. ``--socket`` counts
the service as it is deployed instead: ``fit-check serve`` (uvicorn, uvloop, httptools)
under valgrind, on loopback, driven by a client in this process (not counted), so the
server's own read and send path is counted too.

``--source DIR`` counts another checkout (e.g. a ``git worktree`` of an older commit)
with this venv, for a before/after comparison of a change; ``--only NAME`` (a prefix)
counts one variant and the baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.servers import BIN, ROOT, clean_env

DRIVER = Path(__file__).with_name("ir_drive.py")
#: The same telemetry units with the stock SDK and nothing else: the floor to compare to.
FLOOR_DRIVER = Path(__file__).with_name("floor_drive.py")
SMALL, LARGE = 10, 60
BASELINE = "baseline (OTEL_SDK_DISABLED, WARNING logs)"
FULL = "full telemetry (JSON INFO logs, no OTLP endpoint)"
SINK = "full, exporting over OTLP/HTTP to a loopback sink"
#: The opt-in native span processor; valgrind counts its Rust thread too.
SINK_FASTOTEL = "full, exporting, spans sent by fastotel (FIT_CHECK_SPAN_PROCESSOR=fastotel)"
SINK_NO_PUSH = "full, exporting spans, metrics not pushed (OTEL_METRICS_EXPORTER=none)"
SINK_NO_PUSH_NO_EXEMPLARS = "full, exporting spans, metrics not pushed, no exemplars"
#: Exports by batch size, not by the clock: under valgrind a stream takes about 50 times
#: its real time, so the SDK's 5 s span schedule (60 s for metrics) would export tiny
#: batches and charge each stream 50 times its real share of a clock-driven export.
#: Everything is still exported: the app's lifespan flushes at the end. What a
#: clock-driven export costs is a cost per second, not per stream (docs/performance.md).
BY_BATCH = {"OTEL_BSP_SCHEDULE_DELAY": "600000", "OTEL_METRIC_EXPORT_INTERVAL": "600000"}
#: The sink's endpoint is filled in when it runs.
VARIANTS: dict[str, dict[str, str]] = {
    BASELINE: {"OTEL_SDK_DISABLED": "true", "LOG_LEVEL": "WARNING"},
    FULL: {"LOG_FORMAT": "json"},
    "full minus log lines (WARNING)": {"LOG_FORMAT": "json", "LOG_LEVEL": "WARNING"},
    "full minus spans (sampler always_off; no exemplars)": {
        "LOG_FORMAT": "json",
        "OTEL_TRACES_SAMPLER": "always_off",
    },
    SINK: {"LOG_FORMAT": "json", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", **BY_BATCH},
    SINK_FASTOTEL: {
        "LOG_FORMAT": "json",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "FIT_CHECK_SPAN_PROCESSOR": "fastotel",
        **BY_BATCH,
    },
    # The second metric reader's share: each histogram record goes through every reader.
    SINK_NO_PUSH: {
        "LOG_FORMAT": "json",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRICS_EXPORTER": "none",
        **BY_BATCH,
    },
    SINK_NO_PUSH_NO_EXEMPLARS: {
        "LOG_FORMAT": "json",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_METRICS_EXEMPLAR_FILTER": "always_off",
        **BY_BATCH,
    },
}
EXPORTING = (SINK, SINK_FASTOTEL, SINK_NO_PUSH, SINK_NO_PUSH_NO_EXEMPLARS)
TOP_FUNCTIONS = 12
#: Added to every variant's environment (``--redis``, ``--loop``).
EXTRA_ENV: dict[str, str] = {}
LOOPS = ("uvloop", "asyncio")


def run_cachegrind(
    source: Path, env: dict[str, str], streams: int, out: Path, driver: Path = DRIVER
) -> None:
    subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            f"--cachegrind-out-file={out}",
            str(BIN / "python"),
            str(driver),
            str(streams),
        ],
        env=clean_env(PYTHONHASHSEED="0", PYTHONPATH=str(source), **{**env, **EXTRA_ENV}),
        cwd=out.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )


def per_function(out: Path) -> Counter[str]:
    """Instructions by function name (all files), from a cachegrind output file."""
    counts: Counter[str] = Counter()
    function = ""
    for line in out.read_text().splitlines():
        if line.startswith("fn="):
            function = line[3:]
        elif line[:1].isdigit():
            fields = line.split()
            if len(fields) >= 2:
                counts[function] += int(fields[1])
    return counts


def summary(out: Path) -> int:
    found = re.search(r"^summary:\s+(\d+)", out.read_text(), re.MULTILINE)
    assert found is not None, "no summary line in the cachegrind output"
    return int(found.group(1))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def loopback_server(module: str, *args: str) -> Iterator[str]:
    """``python -m module PORT args...`` serving HTTP on a free loopback port, in a process
    of its own (its work is not counted)."""
    port = free_port()
    server = subprocess.Popen([str(BIN / "python"), "-m", module, str(port), *args], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1).status_code < 500:
                    break
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(10)


def otlp_sink() -> contextlib.AbstractContextManager[str]:
    return loopback_server("bench.otlp_sink")


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A throw-away ``redis-server`` on a free loopback port; its URL."""
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for _ in range(100):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait(10)


def count(
    source: Path,
    env: dict[str, str],
    keep: Path,
    sizes: tuple[int, int] = (SMALL, LARGE),
    driver: Path = DRIVER,
) -> tuple[float, Counter[str]]:
    """Instructions per stream, in all and by function."""
    results = {}
    for streams in sizes:
        out = keep / f"cachegrind.{streams}.out"
        run_cachegrind(source, env, streams, out, driver)
        results[streams] = (summary(out), per_function(out))
    (small, small_fns), (large, large_fns) = results[sizes[0]], results[sizes[1]]
    functions = Counter({fn: large_fns[fn] - small_fns.get(fn, 0) for fn in large_fns})
    return (large - small) / (sizes[1] - sizes[0]), functions


#: The realistic stream: real providers' HTTP code against a loopback fake that streams
#: this many chunks per LLM call (3 calls a stream) and answers 5 results per search.
CHUNKS = (10, 300, 3000)
REALISTIC_SIZES = (2, 12)


def provider_env(url: str) -> dict[str, str]:
    return {
        "FIT_CHECK_LLM_PROVIDER": "openai",
        "OPENAI_BASE_URL": f"{url}/v1",
        "OPENAI_API_KEY": "sk-bench",
        "FIT_CHECK_SEARCH_PROVIDER": "google",
        "GOOGLE_SEARCH_URL": f"{url}/customsearch/v1",
        "GOOGLE_API_KEY": "g-bench",
        "GOOGLE_CSE_ID": "cse-bench",
    }


def realistic(source: Path, chunk_counts: tuple[int, ...] = CHUNKS, gap_ms: float = 0) -> None:
    """Telemetry's share of a realistic stream's instructions, at 10, 300, 3,000 chunks,
    with and without the outbound HTTP client spans.

    ``gap_ms`` paces the fake's chunks, as a real model does: each chunk then reaches the
    service alone, and the report's (the last of the three calls, the one streamed to the
    client) each go out as an SSE write of their own. Unpaced, the fake answers faster than
    the service (under valgrind) reads, and chunks that arrive together go out in one
    write."""
    sizes = REALISTIC_SIZES
    print("\nRealistic stream: OpenAI-compatible and Google search providers against a")
    print(
        f"loopback fake, its chunks {gap_ms:g} ms apart; per stream (Ir@{sizes[1]} - Ir@{sizes[0]})"
    )
    print(f"/ {sizes[1] - sizes[0]}; full exports over OTLP/HTTP to a loopback sink, by batch;")
    print("the last two columns with OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=httpx (no HTTP")
    print("client spans):\n")
    print(
        "| chunks per LLM call | baseline | full telemetry | added | share of the stream "
        "| added, no HTTP client spans | share |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, otlp_sink() as sink:
        for chunks in chunk_counts:
            with loopback_server("bench.fake_provider", str(chunks), str(gap_ms)) as api:
                base_env = {**VARIANTS[BASELINE], **provider_env(api)}
                full_env = {
                    **VARIANTS[SINK],
                    **provider_env(api),
                    "OTEL_EXPORTER_OTLP_ENDPOINT": sink,
                }
                lean_env = {**full_env, "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "httpx"}
                per_stream = {}
                for name, env in (("baseline", base_env), ("full", full_env), ("lean", lean_env)):
                    keep = Path(tmp) / f"{chunks}-{name}"
                    keep.mkdir()
                    per_stream[name], _ = count(source, env, keep, sizes)
            added = per_stream["full"] - per_stream["baseline"]
            lean = per_stream["lean"] - per_stream["baseline"]
            print(
                f"| {chunks} | {per_stream['baseline'] / 1e6:.2f} M | "
                f"{per_stream['full'] / 1e6:.2f} M | {added / 1e6:+.2f} M | "
                f"{added / per_stream['full']:.0%} | {lean / 1e6:+.2f} M | "
                f"{lean / per_stream['lean']:.0%} |",
                flush=True,
            )


#: Streams per count of ``--per-chunk``: a chunk's cost is (Ir at N chunks - Ir at the
#: smallest count) / (streams x calls x (N - smallest)).
PER_CHUNK_STREAMS = 4
#: Calls whose chunks are only read, and calls whose chunks are read and written.
READ_CALLS, WRITTEN_CALLS = 2, 1
#: 3,000 paced chunks take a minute a call: past the 120 s a request and an answer get.
LONG_ANSWERS = {"FIT_CHECK_REQUEST_TIMEOUT_S": "3600", "FIT_CHECK_LLM_TIMEOUT_S": "3600"}


def socket_count(
    source: Path, env: dict[str, str], streams: int, out: Path, timeout_s: float = 600
) -> None:
    """``fit-check serve`` under cachegrind on a loopback port, ``streams`` streams POSTed
    one after the other by a client in this process (not counted), then SIGTERM: the
    server drains and exits, and cachegrind writes its counts."""
    port = free_port()
    server = subprocess.Popen(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            f"--cachegrind-out-file={out}",
            str(BIN / "python"),
            "-m",
            "app.cli",
            "serve",
        ],
        env=clean_env(
            PYTHONHASHSEED="0",
            PYTHONPATH=str(source),
            HOST="127.0.0.1",
            PORT=str(port),
            **{**env, **EXTRA_ENV},
        ),
        cwd=out.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # Wait for the port by connecting only: a request would be counted, and how many
        # polls start-up takes varies.
        deadline = time.monotonic() + timeout_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited with {server.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            time.sleep(1)
        with httpx.Client(base_url=url, timeout=timeout_s) as client:
            for n in range(streams):
                body = {"query": "Senior Python engineer, FastAPI, Kafka", "session_id": f"ir-{n}"}
                with client.stream("POST", "/api/fit-check/stream", json=body) as response:
                    content = b"".join(response.iter_bytes())
                assert response.status_code == 200 and b"event: complete" in content
        server.send_signal(signal.SIGTERM)
        server.wait(timeout_s)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)


def per_chunk(
    source: Path,
    chunk_counts: tuple[int, ...],
    gap_ms: float,
    loops: tuple[str, ...],
    streams: int = PER_CHUNK_STREAMS,
    *,
    over_socket: bool = False,
    only: str = "",
) -> None:
    """Instructions per paced chunk, read only and read and written (module docstring);
    ``only``: the telemetry variants whose name starts so (``baseline``, ``full``)."""
    low, *highs = sorted(set(chunk_counts))
    where = "fit-check serve under valgrind, client outside" if over_socket else "in process"
    print(f"\nInstructions per chunk ({where}; the fake's chunks {gap_ms:g} ms apart;")
    print(f"{streams} streams; read: 2 calls at N chunks, the report at {low}; written: the")
    print(f"report at N, the others at {low}; a chunk = (Ir@N - Ir@{low}) / (streams x calls")
    print(f"x (N - {low})); average = (2 read + 1 written) / 3, a stream's mix):\n")
    print("| loop | telemetry | chunks per call | read only | read and written | written - read "
          "| average |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    variants = {"baseline": VARIANTS[BASELINE], "full, exporting": VARIANTS[SINK]}
    variants = {name: env for name, env in variants.items() if name.startswith(only)}
    with tempfile.TemporaryDirectory() as tmp, otlp_sink() as sink:
        for loop in loops:
            if over_socket and loop != "uvloop":
                print(f"| {loop} | - | - | uvicorn picks uvloop: not counted | | | |")
                continue
            for name, variant in variants.items():
                env = {
                    **variant,
                    **LONG_ANSWERS,
                    "OTEL_EXPORTER_OTLP_ENDPOINT": sink,
                    "BENCH_LOOP": loop,
                }

                def ir(chunks: int, report: int, env: dict[str, str] = env) -> int:
                    keep = Path(tempfile.mkdtemp(dir=tmp))
                    out = keep / "cachegrind.out"
                    fake = ("bench.fake_provider", str(chunks), str(gap_ms), str(report))
                    with loopback_server(*fake) as api:
                        if over_socket:
                            socket_count(source, {**env, **provider_env(api)}, streams, out)
                        else:
                            run_cachegrind(source, {**env, **provider_env(api)}, streams, out)
                    return summary(out)

                base = ir(low, low)
                for high in highs:
                    read = (ir(high, low) - base) / (streams * READ_CALLS * (high - low))
                    written = (ir(low, high) - base) / (streams * WRITTEN_CALLS * (high - low))
                    mix = (READ_CALLS * read + WRITTEN_CALLS * written) / (
                        READ_CALLS + WRITTEN_CALLS
                    )
                    print(
                        f"| {loop} | {name} | {high} | {read / 1e3:.1f} k | "
                        f"{written / 1e3:.1f} k | {(written - read) / 1e3:+.1f} k | "
                        f"{mix / 1e3:.1f} k |",
                        flush=True,
                    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout to count")
    parser.add_argument(
        "--only",
        default="",
        help="one variant (name prefix) and the baseline; with --per-chunk: baseline or full",
    )
    parser.add_argument(
        "--realistic", action="store_true", help="only the realistic stream at 10-3,000 chunks"
    )
    parser.add_argument(
        "--chunks",
        type=int,
        nargs="+",
        default=list(CHUNKS),
        help="with --realistic or --per-chunk: these chunk counts only",
    )
    parser.add_argument(
        "--gap-ms",
        type=float,
        default=0,
        help="with --realistic or --per-chunk: pause between the fake's chunks (each then "
        "arrives alone)",
    )
    parser.add_argument(
        "--redis", action="store_true", help="every variant with the shared session log"
    )
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        nargs="+",
        default=None,
        help="the event loop(s) to count on (default uvloop; --per-chunk: both)",
    )
    parser.add_argument(
        "--per-chunk",
        action="store_true",
        help="instructions per paced chunk, read only and read and written (default "
        "--chunks 10 300 --gap-ms 20)",
    )
    parser.add_argument(
        "--socket",
        action="store_true",
        help="with --per-chunk: count fit-check serve on loopback, the client outside",
    )
    parser.add_argument(
        "--streams",
        type=int,
        default=PER_CHUNK_STREAMS,
        help="with --per-chunk: streams per count",
    )
    args = parser.parse_args()
    with redis_server() if args.redis else contextlib.nullcontext("") as redis_url:
        if redis_url:
            EXTRA_ENV["FIT_CHECK_REDIS_URL"] = redis_url
            print(f"every variant with FIT_CHECK_REDIS_URL={redis_url}")
        return run(args)


def run(args: argparse.Namespace) -> int:
    source = args.source.resolve()
    commit = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    print(f"source: {source} ({commit}); instructions per stream = (Ir@{LARGE} - Ir@{SMALL})")
    print(f"/ {LARGE - SMALL}")
    if args.per_chunk:
        chunks = tuple(args.chunks) if args.chunks != list(CHUNKS) else (10, 300)
        per_chunk(
            source,
            chunks,
            args.gap_ms or 20,
            tuple(args.loop or LOOPS),
            args.streams,
            over_socket=args.socket,
            only=args.only,
        )
        return 0
    loop = (args.loop or ["uvloop"])[0]
    EXTRA_ENV["BENCH_LOOP"] = loop
    print(f"loop: {loop}")
    if args.realistic:
        realistic(source, tuple(args.chunks), args.gap_ms)
        return 0
    print("| variant | instructions per stream | over the baseline |")
    print("|---|---|---|")
    chosen = {
        name: env
        for name, env in VARIANTS.items()
        if name == BASELINE or name.startswith(args.only)
    }
    per_stream: dict[str, float] = {}
    functions: dict[str, Counter[str]] = {}
    with tempfile.TemporaryDirectory() as tmp, otlp_sink() as sink:
        for name, env in chosen.items():
            if name in EXPORTING:
                env = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": sink}
            keep = Path(tmp) / str(len(per_stream))
            keep.mkdir()
            per_stream[name], functions[name] = count(source, env, keep)
            added = per_stream[name] - per_stream[BASELINE]
            shown = "-" if name == BASELINE else f"{added / 1e6:+.2f} M"
            print(f"| {name} | {per_stream[name] / 1e6:.2f} M | {shown} |", flush=True)
        if SINK in per_stream:
            keep = Path(tmp) / "floor"
            keep.mkdir()
            env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink, **BY_BATCH}
            floor, _ = count(source, env, keep, driver=FLOOR_DRIVER)
            ours = per_stream[SINK] - per_stream[BASELINE]
            print(
                f"\nThe stock SDK's floor for the same units ({FLOOR_DRIVER.name}: 10 spans, "
                f"30 measurements, 12 JSON lines, exported; no app): {floor / 1e6:.2f} M per "
                f"stream.\nThis service's exporting telemetry adds {ours / 1e6:.2f} M: "
                f"{ours / floor:.2f}x the floor.",
                flush=True,
            )
    if FULL in functions:
        split = functions[FULL]
        split.subtract(functions[BASELINE])
        total = per_stream[FULL] - per_stream[BASELINE]
        print(f"\nWhere full telemetry's {total / 1e6:+.2f} M per stream go (C functions):\n")
        print("| function | instructions per stream | share |")
        print("|---|---|---|")
        for function, added in split.most_common(TOP_FUNCTIONS):
            per = added / (LARGE - SMALL)
            print(f"| `{function}` | {per / 1e6:+.2f} M | {per / total:.0%} |")
    if not args.only:
        realistic(source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
