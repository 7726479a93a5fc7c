"""Hostile clients, run as a process of their own: ``python -m tests.attackers KIND URL CLIENTS``,
and the ``/health`` probe that measures what they do to everyone else. Used by
``tests/app/test_hostile_clients.py`` and by ``make bench-attacks``.

A separate process so the attack's own CPU does not slow down the probe, and so it can be
stopped at once. Each attack runs until it is killed.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time

import httpx

HUGE_HEADER_BYTES = 64 * 1024 * 1024
QUADRATIC_QUERY = json.dumps({"query": "a" * 1999 + "\x00"}).encode()


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def huge_header(url: str) -> None:
    """A request whose header goes on for 64 MB, sent as fast as the server takes it."""
    chunk = b"a" * (1024 * 1024)
    while True:
        try:
            _, writer = await _connect(url)
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ")
            for _ in range(HUGE_HEADER_BYTES // len(chunk)):
                writer.write(chunk)
                await writer.drain()
            writer.close()
        except OSError:
            await asyncio.sleep(0.01)


async def slowloris(url: str) -> None:
    """A connection that sends one more header byte every second and never finishes."""
    while True:
        try:
            _, writer = await _connect(url)
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            while True:
                await writer.drain()
                await asyncio.sleep(1)
                writer.write(b"a")
        except OSError:
            await asyncio.sleep(1)


async def quadratic_query(url: str) -> None:
    """The input that made the old query check quadratic, POSTed back to back."""
    request = (
        b"POST /api/fit-check/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(QUADRATIC_QUERY)}\r\n\r\n".encode()
        + QUADRATIC_QUERY
    )
    while True:
        try:
            reader, writer = await _connect(url)
            while True:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, StopIteration):
            await asyncio.sleep(0.01)


async def abandon(url: str) -> None:
    """A stream asked for and dropped 50 ms later, reading nothing, every 0.2 s."""
    request = b"GET /api/fit-check/stream?query=Ledgerline HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    while True:
        try:
            _, writer = await _connect(url)
            writer.write(request)
            await asyncio.sleep(0.05)
            writer.close()
        except OSError:
            pass
        await asyncio.sleep(0.15)


#: The honest client's own address: another client, as far as per-client limits go.
HONEST_ADDRESS = "127.0.0.2"


def first_event_s(url: str, give_up_s: float = 30.0) -> float:
    """Seconds until a client from ``HONEST_ADDRESS`` sees its first phase event, asking
    again 100 ms after each 429 (infinity if it never does within ``give_up_s``)."""
    started = time.perf_counter()
    transport = httpx.HTTPTransport(local_address=HONEST_ADDRESS)
    with httpx.Client(transport=transport, timeout=10) as client:
        while time.perf_counter() - started < give_up_s:
            params = {"query": "Ledgerline"}
            with client.stream("GET", f"{url}/api/fit-check/stream", params=params) as response:
                if response.status_code != 200:
                    time.sleep(0.1)  # the client's pace, not synchronisation
                    continue
                for line in response.iter_lines():
                    if line.startswith("event: phase"):
                        return time.perf_counter() - started
    return math.inf


def probe_health(url: str, probes: int = 150) -> tuple[list[float], int]:
    """Ask ``/health`` on a new connection every 20 ms, as a load balancer's check would:
    (sorted latencies in seconds, a failed probe as infinity; how many failed)."""
    latencies: list[float] = []
    failures = 0
    with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=2) as client:
        for _ in range(probes):
            started = time.perf_counter()
            try:
                ok = client.get(f"{url}/health").status_code == 200
            except httpx.HTTPError:
                ok = False
            elapsed = time.perf_counter() - started
            latencies.append(elapsed if ok else math.inf)
            failures += not ok
            time.sleep(max(0.0, 0.02 - elapsed))  # the probe's pace, not synchronisation
    return sorted(latencies), failures


def percentile(latencies: list[float], share: float) -> float:
    return latencies[max(0, int(len(latencies) * share) - 1)]


ATTACKS = {
    "huge-header": huge_header,
    "slowloris": slowloris,
    "quadratic-query": quadratic_query,
    "abandon": abandon,
}


async def main(kind: str, url: str, clients: int) -> None:
    await asyncio.gather(*(ATTACKS[kind](url) for _ in range(clients)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
