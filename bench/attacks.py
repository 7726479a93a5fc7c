"""What hostile clients and a runaway model do to everyone else: ``python -m bench.attacks``.

Each attack of ``tests.attackers`` runs in a process of its own against a fresh
``fit-check serve``; a probe asks ``/health`` on a new connection every 20 ms, as a load
balancer would, and the table gives p50, p99 and failed probes, beside a run with no
attack. Two more tables: an honest client's time to its first event (from another
loopback address) while requests are opened and dropped at the size of the session cap,
and the service's peak RSS while a runaway model streams 20,000 chunks of 2,000
characters to sessions whose readers stopped reading. ``--source DIR`` serves another
checkout of the code (e.g. a ``git worktree`` of an older commit) with this venv, for a
before/after comparison in one sitting.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from subprocess import Popen

import httpx

from bench.servers import BIN, ROOT, clean_env, free_port, stop, wait_http
from tests.attackers import first_event_s, percentile, probe_health

PROBES = 150
#: (attack, hostile clients, the server's open-file limit)
ATTACKS = [
    ("none", 0, None),
    ("huge-header", 4, None),
    ("slowloris", 240, 256),
    ("slowloris", 400, 256),
    ("quadratic-query", 4, None),
]


HONEST_STREAMS = 10
STALLED_READERS = 10
STALLED_REQUEST = b"GET /api/fit-check/stream?query=Go HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def serve(source: Path, open_files: int | None = None, **settings: str) -> tuple[Popen[bytes], str]:
    """A fresh ``fit-check serve`` of ``source``, answering: (its process, its URL)."""
    port = free_port()
    env = clean_env(
        PORT=str(port),
        HOST="127.0.0.1",
        LOG_LEVEL="WARNING",
        FIT_CHECK_HEADER_TIMEOUT_S="2",
        PYTHONPATH=str(source),
        **settings,
    )

    def limit() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    server = subprocess.Popen(
        [str(BIN / "python"), "-m", "app.cli", "serve"],
        env=env,
        cwd=source,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=limit,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", 30, server)
    except BaseException:
        stop(server)
        raise
    return server, url


def run(
    attack: str, clients: int, open_files: int | None, source: Path
) -> tuple[float, float, int]:
    server, url = serve(source, open_files)
    attacker = None
    try:
        if clients:
            attacker = subprocess.Popen(
                [sys.executable, "-m", "tests.attackers", attack, url, str(clients)],
                cwd=ROOT,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            time.sleep(3)  # a benchmark: let the attack reach its steady state
        latencies, failures = probe_health(url, PROBES)
        return percentile(latencies, 0.5), percentile(latencies, 0.99), failures
    finally:
        if attacker is not None:
            attacker.kill()
            attacker.wait()
        stop(server)


def abandoned_at_the_cap(source: Path) -> list[float]:
    """An honest client's time to its first event, ``HONEST_STREAMS`` times, while five
    requests are opened and dropped every 0.2 s against a cap of five."""
    server, url = serve(source, FIT_CHECK_MAX_CONCURRENT_SESSIONS="5", FIT_CHECK_LATENCY_MS="2000")
    attacker = subprocess.Popen(
        [sys.executable, "-m", "tests.attackers", "abandon", url, "5"],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(3)  # a benchmark: let the attack reach its steady state
        return sorted(first_event_s(url) for _ in range(HONEST_STREAMS))
    finally:
        attacker.kill()
        attacker.wait()
        stop(server)


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def runaway_model(source: Path) -> tuple[float, float, float]:
    """(RSS before, peak RSS, in MB; an honest client's time to its first event) while a
    model streams 20,000 chunks of 2,000 characters to ``STALLED_READERS`` sessions whose
    clients stopped reading."""
    model_port = free_port()
    model = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_provider", str(model_port), "flood", "20000", "2000"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server, url = serve(
        source,
        FIT_CHECK_LLM_PROVIDER="openai",
        OPENAI_BASE_URL=f"http://127.0.0.1:{model_port}/v1",
        OPENAI_API_KEY="sk-bench",
        FIT_CHECK_MAX_SESSIONS_PER_CLIENT=str(STALLED_READERS + 1),
    )
    readers: list[socket.socket] = []
    try:
        wait_http(f"http://127.0.0.1:{model_port}/v1/chat/completions", 30, model)
        httpx.get(f"{url}/api/fit-check/stream", params={"query": "Go"}, timeout=120)
        before = rss_kb(server.pid, "VmRSS")
        for _ in range(STALLED_READERS):
            reader = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reader.sendall(
                b"GET /api/fit-check/stream?query=Go HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            )
            reader.recv(1024)
            readers.append(reader)
        honest = first_event_s(url)
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/api/fit-check/health").json()["active_sessions"]:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)  # polling the service's own count
        peak = rss_kb(server.pid, "VmHWM")
        return before / 1024, peak / 1024, honest
    finally:
        for reader in readers:
            reader.close()
        stop(server)
        stop(model)


def ms(seconds: float) -> str:
    return "failed" if seconds == float("inf") else f"{seconds * 1000:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout to serve")
    args = parser.parse_args()
    source = args.source.resolve()
    print(
        f"source: {source} ({os.popen(f'git -C {source} rev-parse --short HEAD').read().strip()})"
    )
    print(f"| attack | clients | /health p50 | /health p99 | failed probes of {PROBES} |")
    print("|---|---|---|---|---|")
    for attack, clients, open_files in ATTACKS:
        p50, p99, failures = run(attack, clients, open_files, source)
        note = f" (fd limit {open_files})" if open_files else ""
        print(f"| {attack}{note} | {clients} | {ms(p50)} | {ms(p99)} | {failures} |", flush=True)
    waits = abandoned_at_the_cap(source)
    print()
    print("| abandoned requests at the cap (5 every 0.2 s, cap 5) | honest client's first event |")
    print("|---|---|")
    print(f"| p50 / max of {HONEST_STREAMS} | {ms(waits[len(waits) // 2])} / {ms(waits[-1])} |")
    before, peak, honest = runaway_model(source)
    print()
    columns = "RSS before | peak RSS | honest first event"
    print(f"| runaway model, {STALLED_READERS} stalled readers | {columns} |")
    print("|---|---|---|---|")
    print(f"| 20,000 chunks of 2,000 characters | {before:.0f} MB | {peak:.0f} MB | {ms(honest)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
