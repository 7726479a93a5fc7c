"""Load generators: wrk for throughput, a small asyncio client for what wrk cannot see.

wrk (Debian package ``wrk``) drives the throughput rounds: it is written in C, so on a
2-core machine the server keeps a core to itself instead of sharing it with a Python
client. Time to first event needs a client that watches the stream as it arrives, so a
small asyncio client on plain sockets does that (lighter than an HTTP library when 1,000
streams are open at once). Without wrk the same client also drives the throughput rounds;
its own CPU then competes with the server's, so the report says which generator ran.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).with_name("stream.lua")
GET_LUA = Path(__file__).with_name("get.lua")
QUERY = "Senior Python engineer, FastAPI, Kubernetes"
WRK = shutil.which("wrk")


@dataclass
class LoadResult:
    """One closed-loop load round: streams read to their end, and their latencies."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def generator() -> str:
    """Which load generator the throughput rounds use."""
    if WRK:
        return f"wrk ({WRK}, 1 thread) with bench/stream.lua"
    return "asyncio client (wrk not found; `apt-get install -y wrk` for figures unskewed by it)"


def run_load(port: int, *, seconds: int, connections: int, prefix: str) -> LoadResult:
    """``connections`` clients each stream one request after another for ``seconds``."""
    if WRK:
        return _run_wrk(port, seconds=seconds, connections=connections, prefix=prefix)
    return asyncio.run(_closed_loop(port, seconds=seconds, connections=connections, prefix=prefix))


def run_gets(port: int, path: str, *, seconds: int) -> LoadResult | None:
    """One GET after another on one connection with wrk (None without wrk).

    A C client, so the latency is the server's: a Python client spends milliseconds of its
    own parsing a 20 KB exposition, more than the server spends rendering it.
    """
    if not WRK:
        return None
    return _run_wrk(port, seconds=seconds, connections=1, prefix="get", script=GET_LUA, path=path)


def _run_wrk(
    port: int, *, seconds: int, connections: int, prefix: str, script: Path = LUA, path: str = ""
) -> LoadResult:
    assert WRK is not None
    out = subprocess.run(
        [
            WRK,
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
        env={**os.environ, "BENCH_SESSION_PREFIX": prefix},
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    return LoadResult(
        requests=data["requests"],
        errors=data["socket_errors"] + data["incomplete"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1e3,
        p99_ms=data["p99_us"] / 1e3,
    )


@dataclass
class StreamResult:
    first_event_s: float | None  # until the first `event: phase` line arrived
    total_s: float
    completed: bool  # HTTP 200 and the stream's terminal event was `complete`


async def one_stream(port: int, session_id: str, timeout_s: float) -> StreamResult:
    """POST one stream and read it to the end (the server closes: ``Connection: close``)."""
    body = json.dumps({"query": QUERY, "session_id": session_id}).encode()
    head = (
        "POST /api/fit-check/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    started = time.perf_counter()
    first: float | None = None
    status_ok = completed = False
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head.encode() + body)
            status_ok = (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
            tail = b""
            while chunk := await reader.read(65536):
                window = tail + chunk
                if first is None and b"event: phase" in window:
                    first = time.perf_counter() - started
                completed = completed or b"event: complete" in window
                tail = window[-32:]  # a marker split across two reads is still found
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        completed = False
    finally:
        if writer is not None:
            writer.close()
    return StreamResult(first, time.perf_counter() - started, status_ok and completed)


async def streams(
    port: int, *, total: int, concurrency: int, prefix: str, timeout_s: float = 60
) -> list[StreamResult]:
    """``total`` streams, at most ``concurrency`` open at once (all at once if equal)."""
    gate = asyncio.Semaphore(concurrency)

    async def gated(i: int) -> StreamResult:
        async with gate:
            return await one_stream(port, f"{prefix}-{i}", timeout_s)

    return await asyncio.gather(*(gated(i) for i in range(total)))


async def fixed_rate(port: int, *, rate: float, seconds: float, prefix: str) -> list[StreamResult]:
    """Open loop: a new stream every ``1/rate`` s, whether or not earlier ones have ended.

    The load is the same for every variant (a closed loop would give a slower server less
    work), so latencies compare the servers at equal load rather than at their limits.
    """
    started = time.perf_counter()

    async def scheduled(i: int) -> StreamResult:
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        return await one_stream(port, f"{prefix}-{i}", timeout_s=30)

    return await asyncio.gather(*(scheduled(i) for i in range(round(rate * seconds))))


async def _closed_loop(port: int, *, seconds: int, connections: int, prefix: str) -> LoadResult:
    """The wrk fallback: each client starts a new stream as soon as its last one ended."""
    deadline = time.perf_counter() + seconds
    done: list[StreamResult] = []

    async def client(c: int) -> None:
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            done.append(await one_stream(port, f"{prefix}-{c}-{n}", timeout_s=10))

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(connections)))
    elapsed = time.perf_counter() - started
    latencies = [r.total_s * 1e3 for r in done if r.completed]
    return LoadResult(
        requests=len(done),
        errors=sum(not r.completed for r in done),
        seconds=elapsed,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
    )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values (shown as such, never as a fake 0)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]
