"""Several worker processes on one listening socket: ``fit-check serve --workers N``.

One Python process runs on one core; the offline stream is CPU-bound, so a second worker
is most of a second core's throughput. uvicorn's own supervisor would run each worker as
its plain ``Server``, without this service's drain and header limits, so this one is ours
and small: the parent binds the socket, starts N workers (spawned, each building its own
app, telemetry and ``service.instance.id``), forwards SIGTERM and SIGINT to them so each
drains as one instance does, replaces a worker that dies, and gives up on a worker that
outlives the drain bound.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from app.config import Settings

log = logging.getLogger("fit_check.workers")

#: Past the grace period and the drain's own 5 s, how long a worker may take to exit.
EXIT_SLACK_S = 3.0


def _worker(sock: socket.socket, number: int) -> None:
    """A worker: the whole service from the environment, on the parent's socket."""
    from app.asgi import build_server

    settings = Settings()
    if settings.log_file is not None:
        settings = settings.model_copy(
            update={"log_file": worker_log_file(settings.log_file, number)}
        )
    build_server(settings).run(sockets=[sock])


def worker_log_file(path: Path, number: int) -> Path:
    """``fit-check.log`` -> ``fit-check-w2.log``: a rotating file has one writer, and a
    replacement worker takes over its predecessor's file."""
    return path.with_name(f"{path.stem}-w{number}{path.suffix}")


class Supervisor:
    def __init__(self, settings: Settings, workers: int) -> None:
        self._settings = settings
        self._count = workers
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[BaseProcess] = []
        self._signal: int | None = None

    def run(self) -> int:
        sock = self._bind()
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self._workers = [self._start(sock, number) for number in range(1, self._count + 1)]
            log.info("Started %d workers", self._count, extra={"workers": self._count})
            while self._signal is None:
                time.sleep(0.2)
                self._replace_dead(sock)
            self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            sock.close()
        return 0

    def _bind(self) -> socket.socket:
        sock = socket.create_server(
            (self._settings.host, self._settings.port), reuse_port=False, backlog=2048
        )
        sock.set_inheritable(True)
        return sock

    def _start(self, sock: socket.socket, number: int) -> BaseProcess:
        process = self._context.Process(
            target=_worker, args=(sock, number), name=f"fit-check worker {number}"
        )
        process.start()
        return process

    def _on_signal(self, sig: int, _frame: FrameType | None) -> None:
        if self._signal is not None:  # a second signal: as a second one to each worker
            for process in self._workers:
                _send(process, sig)
        self._signal = sig

    def _replace_dead(self, sock: socket.socket) -> None:
        for index, process in enumerate(self._workers):
            if not process.is_alive() and self._signal is None:
                log.error(
                    "Worker %s exited with %s; starting another", process.pid, process.exitcode
                )
                self._workers[index] = self._start(sock, index + 1)

    def _stop_all(self) -> None:
        """Each worker drains; none is waited for past the grace period plus the drain's
        own bound plus a little."""
        sig = self._signal or signal.SIGTERM
        for process in self._workers:
            _send(process, sig)
        deadline = time.monotonic() + self._settings.shutdown_grace_s + 5 + EXIT_SLACK_S
        for process in self._workers:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("Worker %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join(5)


def _send(process: BaseProcess, sig: int) -> None:
    if process.is_alive() and process.pid is not None:
        with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
            os.kill(process.pid, sig)
