"""``fit-check serve`` as a real process on loopback, as a user or an orchestrator runs it."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
FIT_CHECK = ROOT / ".venv" / "bin" / "fit-check"


#: Every port ``free_port`` gave in this process.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one given before in this process: the kernel may hand
    out a port it has just handed out, and two servers given it would race to bind it
    (the loser's readiness probe then reaches the winner)."""
    for _ in range(1000):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no loopback port left that was not handed out already")


@dataclass
class ServiceProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)


def _limit_open_files(limit: int | None) -> None:
    if limit is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


@contextmanager
def service_process(
    log_path: Path, *, open_files: int | None = None, args: tuple[str, ...] = (), **env: str
) -> Iterator[ServiceProcess]:
    """Start the service (offline providers unless ``env`` says otherwise), wait until it
    answers ``/health``, and kill what is left of it at the end."""
    port = free_port()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FIT_CHECK_"))},
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_FORMAT": "json",
        **env,
    }
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(FIT_CHECK), "serve", *args],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: _limit_open_files(open_files),
        )
    service = ServiceProcess(process=process, port=port, log_path=log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"service exited early:\n{service.log()}")
            try:
                if httpx.get(f"{service.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"service not healthy in 30 s:\n{service.log()}")
            time.sleep(0.1)
        yield service
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
