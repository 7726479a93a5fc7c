"""Several worker processes on one listening socket: ``fit-check serve --workers N``.

One Python process runs on one core; the offline stream is CPU-bound, so a second worker
is most of a second core's throughput. uvicorn's own supervisor would run each worker as
its plain ``Server``, without this service's drain and header limits, so this one is ours
and small: the parent binds the socket, starts N workers (spawned, each building its own
app, telemetry and ``service.instance.id``), forwards SIGTERM and SIGINT to them so each
drains as one instance does, replaces a worker that dies, and gives up on a worker that
outlives the drain bound.

A worker whose start-up raises (a file it cannot read, say) sends the supervisor one line,
``ExceptionType: message``, and exits with ``STARTUP_FAILED`` (3, uvicorn's code for a
failed start-up). A worker that dies is started again after 0.5 s, 1 s, then 2 s
(``RESTART_DELAYS_S``: by how many times it died in the last 60 s); its fourth death
within 60 s (``GIVE_UP_AFTER``, ``FAILURE_WINDOW_S``) ends the supervisor: the other
workers drain and stop, the listening socket is closed, and ``WorkersGaveUp`` carries the
worker's reason (``fit-check serve`` prints it in one line and exits 3). A worker that
cannot start fails again at once, so such a loop ends within about ten seconds instead of
holding a port that nobody serves.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from app.config import Settings

log = logging.getLogger("fit_check.workers")

#: Past the grace period and the drain's own 5 s, how long a worker may take to exit.
EXIT_SLACK_S = 3.0
#: A worker's exit code when its start-up failed (uvicorn's own for a failed lifespan).
STARTUP_FAILED = 3
#: Before the first, second and third restart of a worker within ``FAILURE_WINDOW_S``.
RESTART_DELAYS_S = (0.5, 1.0, 2.0)
#: The death of one worker that ends the supervisor, counted within ``FAILURE_WINDOW_S``.
GIVE_UP_AFTER = len(RESTART_DELAYS_S) + 1
FAILURE_WINDOW_S = 60.0
#: How often the supervisor looks at its workers.
TICK_S = 0.1

#: What a worker runs: the socket and its number (1..N). Spawned, so it is pickled by
#: reference: a module-level function (or a partial of one).
WorkerTarget = Callable[[socket.socket, int], None]


class WorkersGaveUp(Exception):
    """A worker kept dying: the message is its reason, in one line."""


def _run_worker(target: WorkerTarget, sock: socket.socket, number: int, report: Connection) -> None:
    """The worker process: ``target``, and its failure reported to the supervisor in one
    line rather than as a traceback on every restart (``LOG_LEVEL=DEBUG`` logs it)."""
    try:
        target(sock, number)
    except Exception as exc:
        log.debug("Worker %d failed", number, exc_info=True)
        report.send(one_line(exc))
        report.close()
        sys.exit(STARTUP_FAILED)


def one_line(exc: BaseException) -> str:
    """``FileNotFoundError: [Errno 2] No such file or directory: 'x'``."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def worker_log_file(path: Path, number: int) -> Path:
    """``fit-check.log`` -> ``fit-check-w2.log``: a rotating file has one writer, and a
    replacement worker takes over its predecessor's file."""
    return path.with_name(f"{path.stem}-w{number}{path.suffix}")


@dataclass
class _Worker:
    """One of the N places: its current process (None while waiting to restart), the
    pipe it reports on, and when it died recently."""

    number: int
    process: BaseProcess | None = None
    report: Connection | None = None
    deaths: deque[float] = field(default_factory=deque)
    restart_at: float = 0.0


class Supervisor:
    def __init__(self, settings: Settings, workers: int, *, target: WorkerTarget) -> None:
        self._settings = settings
        self._target = target
        self._context = multiprocessing.get_context("spawn")
        self._workers = [_Worker(number) for number in range(1, workers + 1)]
        self._signal: int | None = None

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT (then 0), or raise ``WorkersGaveUp``."""
        sock = self._bind()
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        failure: str | None = None
        try:
            for worker in self._workers:
                self._start(sock, worker)
            count = len(self._workers)
            log.info("Started %d workers", count, extra={"workers": count})
            while self._signal is None and failure is None:
                time.sleep(TICK_S)
                failure = self._tend(sock)
            self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            sock.close()
            for worker in self._workers:
                if worker.report is not None:
                    worker.report.close()
        if failure is not None:
            raise WorkersGaveUp(failure)
        return 0

    def _bind(self) -> socket.socket:
        sock = socket.create_server(
            (self._settings.host, self._settings.port), reuse_port=False, backlog=2048
        )
        sock.set_inheritable(True)
        return sock

    def _start(self, sock: socket.socket, worker: _Worker) -> None:
        if worker.report is not None:
            worker.report.close()
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_run_worker,
            args=(self._target, sock, worker.number, writer),
            name=f"fit-check worker {worker.number}",
        )
        process.start()
        writer.close()  # the worker has its own copy: the parent only reads
        worker.process, worker.report = process, reader

    def _on_signal(self, sig: int, _frame: FrameType | None) -> None:
        if self._signal is not None:  # a second signal: as a second one to each worker
            for worker in self._workers:
                _send(worker.process, sig)
        self._signal = sig

    def _tend(self, sock: socket.socket) -> str | None:
        """Note the workers that died, start those whose delay is over; the reason to give
        up when one died ``GIVE_UP_AFTER`` times within ``FAILURE_WINDOW_S``."""
        now = time.monotonic()
        for worker in self._workers:
            process = worker.process
            if process is not None and not process.is_alive():
                death = self._death(worker, process)
                worker.process = None
                worker.deaths.append(now)
                while worker.deaths[0] < now - FAILURE_WINDOW_S:
                    worker.deaths.popleft()
                if len(worker.deaths) >= GIVE_UP_AFTER:
                    log.error(
                        "Worker %d %s; %d times in %g s: stopping",
                        worker.number,
                        death,
                        GIVE_UP_AFTER,
                        FAILURE_WINDOW_S,
                    )
                    return f"worker {worker.number} {death}"
                delay = RESTART_DELAYS_S[len(worker.deaths) - 1]
                log.error(
                    "Worker %d %s; starting another in %g s",
                    worker.number,
                    death,
                    delay,
                    extra={"worker": worker.number, "restart_in_s": delay},
                )
                worker.restart_at = now + delay
            if worker.process is None and now >= worker.restart_at:
                self._start(sock, worker)
        return None

    @staticmethod
    def _death(worker: _Worker, process: BaseProcess) -> str:
        """What became of a dead worker, in the words it sent if it sent any."""
        sent: object = None
        report = worker.report
        with contextlib.suppress(EOFError, OSError):
            if report is not None and report.poll():
                sent = report.recv()
        code = process.exitcode
        if code == STARTUP_FAILED:
            return f"could not start: {sent}" if sent else "could not start (its log says why)"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def _stop_all(self) -> None:
        """Each worker drains; none is waited for past the grace period plus the drain's
        own bound plus a little."""
        sig = self._signal or signal.SIGTERM
        running = [w.process for w in self._workers if w.process is not None]
        for process in running:
            _send(process, sig)
        deadline = time.monotonic() + self._settings.shutdown_grace_s + 5 + EXIT_SLACK_S
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("Worker %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join(5)


def _send(process: BaseProcess | None, sig: int) -> None:
    if process is not None and process.is_alive() and process.pid is not None:
        with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
            os.kill(process.pid, sig)
