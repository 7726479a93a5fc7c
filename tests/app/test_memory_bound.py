"""The stated worst case of memory, driven for real: a runaway model and readers that stop
reading, against ``fit-check serve`` with the default caps, its RSS read from /proc."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from tests.service_process import ROOT, free_port, service_process

#: The README's figure: what one session may hold at the default caps (1 MiB of replay,
#: 256 KiB waiting for its reader, one frame, three answers of 32,768 characters and the
#: provider's line buffer), rounded up.
SESSION_BOUND_MB = 2.0
SESSIONS = 10
#: What an idle process's RSS moves by for reasons of its own (allocator, imports).
NOISE_MB = 25.0


def rss_mb(pid: int, field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (the peak) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


@contextmanager
def runaway_model(chunks: int, characters: int) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.fake_provider",
            str(port),
            "flood",
            str(chunks),
            str(characters),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError("the fake model did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.kill()
        process.wait(10)


def stalled_reader(port: int) -> socket.socket:
    """A stream whose client reads its first bytes, then nothing more, and stays."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET /api/fit-check/stream?query=Go HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    sock.recv(1024)
    return sock


def test_a_runaway_model_and_stalled_readers_stay_within_the_stated_memory(
    tmp_path: Path,
) -> None:
    with (
        runaway_model(chunks=20_000, characters=2_000) as base_url,
        service_process(
            tmp_path / "service.log",
            FIT_CHECK_LLM_PROVIDER="openai",
            OPENAI_BASE_URL=base_url,
            OPENAI_API_KEY="sk-test",
            FIT_CHECK_SLOW_READER_S="2",  # the bound does not depend on it; the test's time does
            FIT_CHECK_RESUME_WINDOW_S="1",
            FIT_CHECK_MAX_SESSIONS_PER_CLIENT=str(SESSIONS),
        ) as service,
    ):
        pid = service.process.pid
        warm = httpx.get(f"{service.url}/api/fit-check/stream", params={"query": "Go"}, timeout=60)
        assert warm.status_code == 200 and "event: complete" in warm.text
        before = rss_mb(pid, "VmRSS")
        with ExitStack() as sockets:
            for _ in range(SESSIONS):
                sockets.callback(stalled_reader(service.port).close)
            deadline = time.monotonic() + 60
            while httpx.get(f"{service.url}/api/fit-check/health").json()["active_sessions"]:
                assert time.monotonic() < deadline, "sessions did not end"
                time.sleep(0.2)
        growth = rss_mb(pid, "VmHWM") - before
    bound = SESSIONS * SESSION_BOUND_MB + NOISE_MB
    assert growth < bound, f"peak RSS grew {growth:.0f} MB; the stated bound is {bound:.0f}"
    assert service.log().count('"message":"Request completed"') == SESSIONS + 1
