"""Capacity as a user sees it: ``python -m bench.capacity`` (in ``make bench``).

How many concurrent streams of a paced model can one worker relay while each chunk still
reaches its client promptly? The service runs as shipped (``fit-check serve``: uvicorn,
one worker, its default telemetry, uvloop as uvicorn picks it) on loopback, its
OpenAI-compatible and Google providers pointed at the fake of ``bench/fake_provider.py``,
a real HTTP server in a process of its own whose chunks come ``--gap-ms`` apart (a
model's pace): ``--chunks`` for each of the two calls read only, ``--report-chunks`` for
the report, whose chunks the service writes to its client one SSE event each. The fake
stamps every report chunk with the time it leaves (``time.monotonic()``, system-wide on
Linux, in its ASGI ``send``), and the clients note the time each chunk's line arrives:
**added delay** = arrival - sent, the relay's queueing and work, loopback twice. Only the
service's session limits are raised (``SERVICE_ENV``), so that it slows rather than
refuses.

N clients, in processes of their own (``--per-process`` streams each, asyncio on uvloop
over plain sockets), each run one stream after another; their first streams start spread
over a stream's length, so that at any time they are in every phase, as users arriving
at random would be. After that ramp, the delays of the chunks sent during ``--window-s``
are pooled. N passes when the p99 is under ``--limit-ms`` and every stream in the window
was answered (no refusal, no cut). The delay does not see a stream held back before its
chunks start (the provider client's connection pool, 100 connections per worker as httpx
sets it, queues calls past that), so the streams must also get their pace: a step whose
report chunks per second per stream fall under ``HELD_BACK`` (90%) of the first step's
fails too ("held back"). The search doubles N from ``--start`` until one fails, then
bisects to ``--resolution``, in at most ``--max-steps`` steps; each step is bounded in
time (the ramp, the window, a settle of at most 20 s).

Before and after: ``--before REV`` (default ``444910a^``, the parent of the change that
halved the relay's instructions per chunk, issue 26) is extracted with ``git archive``
into a temporary directory and served with this virtualenv (same dependencies; that
commit needs three lines of ``routes.py`` put back, ``unleak``); the current tree is
"after". The two are searched alternately, ``--rounds`` times each (A B A B), on a fresh
service and fake every time, so that a machine whose speed drifts slows both alike; every
search is reported, with the CPU of the service, the fake and the clients (in cores over
the window: the service's one core is the limit; the fake and the clients must stay
clear of saturating the other), how long the service's loop waited for a CPU, the
machine's CPU pressure and load average. ``--loop asyncio`` serves both on the standard
library's loop instead (``bench/asyncio_loop``); ``--render FILE`` prints a saved result.
Nothing listens or connects anywhere but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from array import array
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.servers import (
    BIN,
    ROOT,
    Server,
    ServerSpec,
    clean_env,
    cpu_seconds,
    free_port,
    serve,
    stop,
    wait_http,
)

QUERY = "Senior Python engineer, FastAPI, Kubernetes"
#: A report chunk as the service writes it: ``@`` and the fake's send time (``%017.6f``).
STAMP = re.compile(rb"@(\d{10}\.\d{6})")
RESULTS = ROOT / "bench" / "results"
#: Limits of one service that would refuse the load itself rather than slow under it;
#: a client that leaves ends its session at once (no resume window held open).
SERVICE_ENV = {
    "FIT_CHECK_MAX_CONCURRENT_SESSIONS": "100000",
    "FIT_CHECK_MAX_SESSIONS_PER_CLIENT": "100000",
    "FIT_CHECK_MAX_LINGERING_SESSIONS": "0",
    "FIT_CHECK_RESUME_WINDOW_S": "0",
}
SETTLE_MAX_S = 20.0
#: A step whose streams get less than this share of the first step's chunks per second
#: per stream has streams held back before their chunks (module docstring): it fails.
HELD_BACK = 0.9


def log(message: str) -> None:
    print(f"[capacity {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the clients (``--drive``: one process, many streams) ------------------------------


@dataclass
class Plan:
    """What one client process does; times are ``time.monotonic()``."""

    port: int
    streams: int
    first_start: float  # its first stream starts then, the others spread over the ramp
    ramp_s: float
    offset: int  # this process's streams are numbers offset, offset + processes, ...
    processes: int
    measure_from: float
    end: float
    out: str


@dataclass
class StreamCounts:
    started: int = 0
    completed: int = 0  # 200 and ``event: complete``
    failed: int = 0  # anything else that ended inside the window
    chunks: int = 0  # report chunks seen, in the window or not


async def one_stream(plan: Plan, sid: str, delays: array[float], counts: StreamCounts) -> None:
    """POST one stream and read it to its end, noting each stamped chunk's added delay."""
    body = json.dumps({"query": QUERY, "session_id": sid}).encode()
    head = (
        "POST /api/fit-check/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    counts.started += 1
    ok = completed = False
    writer = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", plan.port)
        writer.write(head + body)
        ok = (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
        pending = b""
        while data := await reader.read(65536):
            now = time.monotonic()
            data = pending + data
            cut = data.rfind(b"\n") + 1  # complete lines only: a stamp is seen once, whole
            lines, pending = data[:cut], data[cut:]
            for match in STAMP.finditer(lines):
                sent = float(match.group(1))
                counts.chunks += 1
                if plan.measure_from <= sent < plan.end:
                    delays.append(now - sent)
            if b"event: complete" in lines:
                completed = True
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        if writer is not None:
            writer.close()
    if ok and completed:
        counts.completed += 1
    elif time.monotonic() < plan.end:  # a stream cut by the end of the run is no failure
        counts.failed += 1


async def drive(plan: Plan) -> tuple[array[float], StreamCounts]:
    delays: array[float] = array("d")
    counts = StreamCounts()

    async def client(n: int) -> None:
        number = plan.offset + n * plan.processes
        total = plan.streams * plan.processes
        await asyncio.sleep(max(0.0, plan.first_start + plan.ramp_s * number / total - now()))
        k = 0
        while now() < plan.end:
            k += 1
            await one_stream(plan, f"cap-{number}-{k}", delays, counts)

    def now() -> float:
        return time.monotonic()

    tasks = [asyncio.ensure_future(client(n)) for n in range(plan.streams)]
    await asyncio.sleep(max(0.0, plan.end - now()))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return delays, counts


def drive_main(plan_json: str) -> int:
    import uvloop

    plan = Plan(**json.loads(plan_json))
    delays, counts = uvloop.run(drive(plan))
    out = Path(plan.out)
    out.with_suffix(".bin").write_bytes(delays.tobytes())
    out.with_suffix(".json").write_text(json.dumps(asdict(counts)))
    return 0


# --- one step: N streams against one service ------------------------------------------


@dataclass(frozen=True)
class Shape:
    """The workload and the sizes of a step."""

    chunks: int
    report_chunks: int
    gap_ms: float
    window_s: float
    per_process: int
    limit_ms: float

    @property
    def stream_s(self) -> float:
        """A stream's length at the fake's pace (three LLM calls, one after another)."""
        return (2 * self.chunks + self.report_chunks) * self.gap_ms / 1000


@dataclass
class Step:
    n: int
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    completed: int
    failed: int
    chunks_per_s: float  # report chunks sent in the window, per second: the load offered
    service_cores: float
    service_main_cores: float
    fake_cores: float
    client_cores: float
    #: Of the window, the share the service's event loop was ready to run but waiting for
    #: a CPU (its thread's run-queue time, /proc schedstat): what other work took from it.
    service_waited: float
    #: Of the window, the share some task on the machine was waiting for a CPU (PSI).
    cpu_pressure: float
    load: float  # 1-minute load average at the end of the window
    passed: bool
    #: The streams did not get their pace: report chunks per second per stream under
    #: ``HELD_BACK`` of the search's first (lightest) step's. Such a step fails.
    held_back: bool = False

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "held back" if self.held_back else "fail"

    @property
    def service_us_per_chunk(self) -> float:
        """The service's CPU per report chunk written (its whole work, the chunks read
        and the streams' own included, over the chunks written)."""
        return self.service_cores / self.chunks_per_s * 1e6 if self.chunks_per_s else math.nan

    @property
    def streams_per_core(self) -> float:
        """N over the service's CPU: the streams a whole core would carry at this cost."""
        return self.n / self.service_cores if self.service_cores else math.nan


def run_queue_s(pid: int) -> float:
    """Seconds thread ``pid`` (the main thread of process ``pid``) has waited for a CPU."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9


def cpu_pressure_s() -> float:
    """Seconds some task has waited for a CPU (/proc/pressure/cpu), NaN without PSI."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return math.nan
    return int(some.rsplit("total=", 1)[1]) / 1e6


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def run_step(server: Server, fake_pid: int, shape: Shape, n: int, work: Path) -> Step:
    """N streams for a ramp and a window; the added delays of the window's chunks."""
    processes = max(1, math.ceil(n / shape.per_process))
    ramp_s = max(shape.stream_s, 1.0)
    first_start = time.monotonic() + 1.5  # the client processes' imports
    measure_from = first_start + ramp_s
    end = measure_from + shape.window_s
    clients: list[subprocess.Popen[bytes]] = []
    outs: list[Path] = []
    try:
        for p in range(processes):
            out = work / f"n{n}-p{p}"
            outs.append(out)
            plan = Plan(
                port=server.port,
                streams=n // processes + (1 if p < n % processes else 0),
                first_start=first_start,
                ramp_s=ramp_s,
                offset=p,
                processes=processes,
                measure_from=measure_from,
                end=end,
                out=str(out),
            )
            clients.append(
                subprocess.Popen(
                    [
                        str(BIN / "python"),
                        "-m",
                        "bench.capacity",
                        "--drive",
                        json.dumps(asdict(plan)),
                    ],
                    cwd=ROOT,
                    env=clean_env(PYTHONPATH=str(ROOT)),
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        time.sleep(max(0.0, measure_from - time.monotonic()))
        pids = [server.process.pid, fake_pid, *(c.pid for c in clients)]
        cpu_before = [cpu_seconds(pid) for pid in pids]
        main_before = server.main_thread_cpu_s()
        waited_before, pressure_before = run_queue_s(server.process.pid), cpu_pressure_s()
        time.sleep(max(0.0, end - time.monotonic()))
        cpu_after = [cpu_seconds(pid) for pid in pids]
        main_after = server.main_thread_cpu_s()
        waited_after, pressure_after = run_queue_s(server.process.pid), cpu_pressure_s()
        load = os.getloadavg()[0]
        for client in clients:
            client.wait(60)
    finally:
        for client in clients:
            stop(client)
    used = [(a - b) / shape.window_s for a, b in zip(cpu_after, cpu_before, strict=True)]
    delays: array[float] = array("d")
    counts = StreamCounts()
    for out in outs:
        delays.frombytes(out.with_suffix(".bin").read_bytes())
        part = StreamCounts(**json.loads(out.with_suffix(".json").read_text()))
        counts.completed += part.completed
        counts.failed += part.failed
    ordered = sorted(d * 1e3 for d in delays)
    p99 = percentile(ordered, 0.99)
    return Step(
        n=n,
        samples=len(ordered),
        p50_ms=percentile(ordered, 0.5),
        p99_ms=p99,
        max_ms=ordered[-1] if ordered else float("nan"),
        completed=counts.completed,
        failed=counts.failed,
        chunks_per_s=len(ordered) / shape.window_s,
        service_cores=used[0],
        service_main_cores=(main_after - main_before) / shape.window_s,
        fake_cores=used[1],
        client_cores=sum(used[2:]),
        service_waited=(waited_after - waited_before) / shape.window_s,
        cpu_pressure=(pressure_after - pressure_before) / shape.window_s,
        load=load,
        passed=bool(ordered) and p99 < shape.limit_ms and counts.failed == 0,
    )


def settle(server: Server) -> None:
    """Until the service is idle (under 5% of a core over half a second), at most 20 s."""
    deadline = time.monotonic() + SETTLE_MAX_S
    while time.monotonic() < deadline:
        before = server.cpu_s()
        time.sleep(0.5)
        if server.cpu_s() - before < 0.025:
            return


# --- a search: one tree, a fresh service and fake --------------------------------------


@dataclass
class Search:
    label: str
    tree: str
    steps: list[Step] = field(default_factory=list)

    @property
    def capacity(self) -> int:
        """The largest N that passed (0 if none did)."""
        return max((s.n for s in self.steps if s.passed), default=0)

    @property
    def us_per_chunk(self) -> float:
        return statistics.median(s.service_us_per_chunk for s in self.steps)

    @property
    def per_core(self) -> float:
        return statistics.median(s.streams_per_core for s in self.steps)

    @property
    def pressure(self) -> float:
        return statistics.median(s.cpu_pressure for s in self.steps)


@contextmanager
def fake_provider(shape: Shape, log_dir: Path) -> Iterator[tuple[str, int]]:
    """``bench/fake_provider.py`` in ``stamp`` mode on a free loopback port: (url, pid)."""
    port = free_port()
    command = [
        str(BIN / "python"), "-m", "bench.fake_provider", str(port), str(shape.chunks),
        str(shape.gap_ms), str(shape.report_chunks), "stamp",
    ]  # fmt: skip
    with (log_dir / "fake.log").open("ab") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=clean_env(PYTHONPATH=str(ROOT)),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/customsearch/v1?q=up", timeout_s=30, process=process)
        yield url, process.pid
    finally:
        stop(process)


#: On PYTHONPATH, uvicorn's automatic loop is asyncio's instead of uvloop (``--loop``).
ASYNCIO_LOOP = Path(__file__).with_name("asyncio_loop")


def service_env(tree: Path, fake_url: str, extra: dict[str, str], loop: str) -> dict[str, str]:
    path = str(tree) if loop == "uvloop" else os.pathsep.join((str(tree), str(ASYNCIO_LOOP)))
    return {
        "PYTHONPATH": path,
        "FIT_CHECK_LLM_PROVIDER": "openai",
        "OPENAI_BASE_URL": f"{fake_url}/v1",
        "OPENAI_API_KEY": "sk-bench",
        "FIT_CHECK_SEARCH_PROVIDER": "google",
        "GOOGLE_SEARCH_URL": f"{fake_url}/customsearch/v1",
        "GOOGLE_API_KEY": "g-bench",
        "GOOGLE_CSE_ID": "cse-bench",
        **SERVICE_ENV,
        **extra,
    }


def check_tree(tree: Path) -> None:
    """The service this run starts from ``tree`` is ``tree``'s (PYTHONPATH before the
    editable install), not the checkout's."""
    with tempfile.TemporaryDirectory() as cwd:
        found = subprocess.run(
            [str(BIN / "python"), "-c", "import app; print(app.__file__)"],
            cwd=cwd,
            env=clean_env(PYTHONPATH=str(tree)),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    if not Path(found).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"the service would be imported from {found}, not from {tree}")


def search(label: str, tree: Path, shape: Shape, args: argparse.Namespace, run_dir: Path) -> Search:
    """Double N from ``args.start`` until a step fails, then bisect; bounded in steps."""
    result = Search(label, str(tree))
    log_dir = run_dir / f"{label}-{len(list(run_dir.iterdir()))}"
    log_dir.mkdir()
    extra = dict(kv.split("=", 1) for kv in args.env)
    with (
        fake_provider(shape, log_dir) as (fake_url, fake_pid),
        serve(
            label, ServerSpec(service_env(tree, fake_url, extra, args.loop)), log_dir=log_dir
        ) as server,
    ):
        lo, hi = 0, 0  # the largest N passed, the smallest failed (0: none yet)
        n = args.start
        first_rate = 0.0  # report chunks per second per stream at the first step
        for _ in range(args.max_steps):
            step = run_step(server, fake_pid, shape, n, log_dir)
            result.steps.append(step)
            rate = step.chunks_per_s / n
            first_rate = first_rate or rate
            if rate < HELD_BACK * first_rate:
                step.passed, step.held_back = False, True
            log(
                f"{label}: N={n} p50 {step.p50_ms:.1f} ms p99 {step.p99_ms:.1f} ms "
                f"max {step.max_ms:.0f} ms, {step.samples} chunks, {step.completed} streams "
                f"({step.failed} failed), service {step.service_cores:.2f} cores "
                f"({step.service_us_per_chunk:.0f} us per chunk written, waited "
                f"{step.service_waited:.0%}), fake {step.fake_cores:.2f}, clients "
                f"{step.client_cores:.2f}, CPU pressure {step.cpu_pressure:.0%}, load "
                f"{step.load:.2f}, {rate:.1f} chunks/s per stream -> {step.verdict}"
            )
            settle(server)
            if step.passed:
                lo = max(lo, n)
            else:
                hi = n if hi == 0 else min(hi, n)
            if hi == 0:
                if n >= args.max_n:
                    break
                n = min(n * 2, args.max_n)
                continue
            if hi - lo <= max(1, math.ceil(lo * args.resolution)):
                break
            n = (lo + hi) // 2
    return result


# --- the run ---------------------------------------------------------------------------


@contextmanager
def before_tree(rev: str) -> Iterator[Path | None]:
    """``rev`` of this checkout, extracted by ``git archive`` (reads the repository only)."""
    if rev in ("", "none"):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="capacity-before-") as tmp:
        try:
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", "--format=tar", rev],
                capture_output=True,
                check=True,
                timeout=120,
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            log(f"no before tree: git archive {rev} failed ({exc}); measuring after only")
            yield None
            return
        tar_path = Path(tmp) / "tree.tar"
        tar_path.write_bytes(archive)
        with tarfile.open(tar_path) as tar:
            tar.extractall(Path(tmp) / "tree", filter="data")
        unleak(Path(tmp) / "tree")
        yield Path(tmp) / "tree"


#: ``444910a^`` does not start as committed: 89aa1d3 (issue 27) committed a piece of the
#: change under test, ``routes.py``'s response class and its ``frames`` call, before the
#: change itself (444910a) added what it uses to ``direct_send.py`` and ``session.py``.
#: In a tree in that state, these three lines are put back as they were before (ed4d101),
#: and nothing else: the tree is then 444910a^ without any of the change.
UNLEAK = (
    (
        "from app.api.direct_send import DirectEventSourceResponse, body_frames_direct",
        "from app.api.direct_send import body_frames_direct",
    ),
    (
        "class SessionStreamResponse(DirectEventSourceResponse):",
        "class SessionStreamResponse(EventSourceResponse):",
    ),
    ("frames = run.frames(after, writer=self)", "frames = run.frames(after)"),
)


def unleak(tree: Path) -> None:
    routes = tree / "app" / "api" / "routes.py"
    direct = tree / "app" / "api" / "direct_send.py"
    if not routes.exists() or not direct.exists():
        return
    text = routes.read_text()
    if "DirectEventSourceResponse" not in text or "DirectEventSourceResponse" in direct.read_text():
        return
    for old, new in UNLEAK:
        if old not in text:
            raise RuntimeError(f"{routes}: cannot undo the early piece of 444910a ({old!r})")
        text = text.replace(old, new)
    routes.write_text(text)
    log(f"{routes.relative_to(tree)}: the piece of 444910a committed early by 89aa1d3 undone")


def commit_of(rev: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", rev],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def render(searches: list[Search], shape: Shape, meta: dict[str, Any]) -> str:
    lines = [
        f"Capacity of one worker (`python -m bench.capacity`), {meta['date']}: chunks "
        f"{shape.gap_ms:g} ms apart, {shape.chunks} per call read only x 2 and "
        f"{shape.report_chunks} for the report (written), a stream about "
        f"{shape.stream_s:.0f} s; pass = p99 added delay under {shape.limit_ms:g} ms over a "
        f"{shape.window_s:g} s window and no stream failed; the service's loop "
        f"{meta.get('loop', 'uvloop')}. Before: {meta['before']}; after: {meta['after']}.",
        "",
        "| search | N | p50 ms | p99 ms | max ms | chunks/s (per stream) | streams ok / failed "
        "| service cores | µs per chunk | service waited | fake cores | client cores "
        "| CPU pressure | load | |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, s in enumerate(searches):
        for st in s.steps:
            lines.append(
                f"| {i + 1}. {s.label} | {st.n} | {st.p50_ms:.1f} | {st.p99_ms:.1f} | "
                f"{st.max_ms:.0f} | {st.chunks_per_s:.0f} ({st.chunks_per_s / st.n:.1f}) | "
                f"{st.completed} / {st.failed} | "
                f"{st.service_cores:.2f} | {st.service_us_per_chunk:.0f} | "
                f"{st.service_waited:.0%} | {st.fake_cores:.2f} | {st.client_cores:.2f} | "
                f"{st.cpu_pressure:.0%} | {st.load:.2f} | {st.verdict} |"
            )
    lines += [
        "",
        "| search | largest N with p99 < limit | service µs per chunk written "
        "| streams per service core | CPU pressure |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {i + 1}. {s.label} | {s.capacity} | {s.us_per_chunk:.0f} | {s.per_core:.0f} "
        f"| {s.pressure:.0%} |"
        for i, s in enumerate(searches)
    ]
    lines += [
        "",
        "(the last three: medians of the search's steps; streams per service core = N / the "
        "service's CPU in cores, what one whole core would carry at that cost)",
    ]
    before = [s.capacity for s in searches if s.label == "before"]
    after = [s.capacity for s in searches if s.label == "after"]
    if before and after and min(before) > 0:
        ratios = [a / b for a, b in zip(after, before, strict=False)]
        ratio = statistics.median(after) / statistics.median(before)
        lines += [
            "",
            f"after / before, largest N: {ratio:.2f}x "
            f"(medians {statistics.median(after):g} / {statistics.median(before):g}; "
            "per A B pair: " + ", ".join(f"{r:.2f}x" for r in ratios) + ")",
        ]
        cost = [s.us_per_chunk for s in searches if s.label == "before"]
        cost_after = [s.us_per_chunk for s in searches if s.label == "after"]
        lines.append(
            "after / before, service CPU per chunk written: "
            f"{statistics.median(cost) / statistics.median(cost_after):.2f}x fewer µs"
        )
    return "\n".join(lines)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--drive":
        return drive_main(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="444910a^", help="revision, or none")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the after tree (served)")
    parser.add_argument("--rounds", type=int, default=2, help="searches of each tree, A B A B")
    parser.add_argument("--chunks", type=int, default=100, help="per call read only")
    parser.add_argument("--report-chunks", type=int, default=300)
    parser.add_argument("--gap-ms", type=float, default=20)
    parser.add_argument("--limit-ms", type=float, default=50)
    parser.add_argument("--window-s", type=float, default=15)
    parser.add_argument("--start", type=int, default=32, help="the first N")
    parser.add_argument("--max-n", type=int, default=2048)
    parser.add_argument("--resolution", type=float, default=0.1, help="of N, to stop bisecting")
    parser.add_argument("--max-steps", type=int, default=10, help="per search")
    parser.add_argument("--per-process", type=int, default=150, help="streams per client")
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for the service (repeatable)"
    )
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="the service's event loop: uvloop (uvicorn's choice, production) or asyncio",
    )
    parser.add_argument("--render", type=Path, help="print the tables of a saved result, run none")
    args = parser.parse_args()
    if args.render is not None:
        saved = json.loads(args.render.read_text())
        loaded = [
            Search(s["label"], s["tree"], [Step(**st) for st in s["steps"]])
            for s in saved["searches"]
        ]
        print(render(loaded, Shape(**saved["shape"]), saved["meta"]))
        return 0
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    shape = Shape(
        args.chunks, args.report_chunks, args.gap_ms, args.window_s, args.per_process, args.limit_ms
    )
    started = time.monotonic()
    run_dir = Path(tempfile.mkdtemp(prefix="fit-check-capacity-"))
    searches: list[Search] = []
    after_tree = args.tree.resolve()
    try:
        with before_tree(args.before) as before:
            trees = {"after": after_tree}
            if before is not None:
                trees = {"before": before, **trees}
            for tree in trees.values():
                check_tree(tree)
            for r in range(args.rounds):
                for label, tree in trees.items():
                    log(f"round {r + 1}/{args.rounds}: {label} ({tree})")
                    searches.append(search(label, tree, shape, args, run_dir))
    except KeyboardInterrupt:
        log(f"interrupted; every process it started is stopped; logs in {run_dir}")
        return 130
    except Exception:
        log(f"failed; every process it started is stopped; logs in {run_dir}")
        raise
    shutil.rmtree(run_dir, ignore_errors=True)
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    after_commit = commit_of("HEAD") + (" + uncommitted changes" if dirty else "")
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "before": f"{args.before} ({commit_of(args.before)})" if args.before != "none" else "-",
        "after": f"{after_tree} ({after_commit})",
        "loop": args.loop,
        "seconds": round(time.monotonic() - started),
        "cpus": os.cpu_count(),
    }
    markdown = render(searches, shape, meta)
    print("\n" + markdown, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"capacity-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "meta": meta,
                "shape": asdict(shape),
                "searches": [
                    {
                        "label": s.label,
                        "tree": s.tree,
                        "capacity": s.capacity,
                        "steps": [asdict(st) for st in s.steps],
                    }
                    for s in searches
                ],
            },
            indent=2,
        )
    )
    path.with_suffix(".md").write_text(markdown + "\n")
    log(f"done in {meta['seconds']} s; {path.relative_to(ROOT)} and .md beside it")
    return 0


if __name__ == "__main__":
    with suppress(BrokenPipeError):
        sys.exit(main())
