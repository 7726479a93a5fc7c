"""``fit-check serve --workers 2``: one port, two processes, each its own instance."""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.workers import GIVE_UP_AFTER, RESTART_DELAYS_S, Supervisor, WorkersGaveUp
from tests.app.worker_targets import MISSING, idle_or_fail
from tests.helpers import make_settings, parse_sse
from tests.service_process import FIT_CHECK, ServiceProcess, free_port, service_process


def workers_of(service: ServiceProcess) -> list[int]:
    children = Path(f"/proc/{service.process.pid}/task/{service.process.pid}/children")
    pids = [int(pid) for pid in children.read_text().split()]
    # The spawn start method adds a resource tracker: the workers run fit-check.
    return [p for p in pids if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]


def stream(url: str, session_id: str) -> str:
    response = httpx.post(
        f"{url}/api/fit-check/stream",
        json={"query": "Python", "session_id": session_id},
        timeout=30,
    )
    return response.text


def test_two_workers_serve_one_port_as_two_instances(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    with service_process(
        log, args=("--workers", "2"), OTEL_TRACES_EXPORTER="console", FIT_CHECK_LATENCY_MS="200"
    ) as service:
        assert len(workers_of(service)) == 2
        with httpx.Client() as client:
            metrics = client.get(f"{service.url}/metrics")
        assert metrics.status_code == 404 and "2 workers" in metrics.json()["message"]
        # Both workers wait on the socket and race for each connection: over 24 of them,
        # one worker taking all has odds of about one in ten million.
        with ThreadPoolExecutor(8) as pool:
            bodies = list(pool.map(lambda n: stream(service.url, f"w-{n}"), range(24)))
        assert all(parse_sse(body)[-1][0] == "complete" for body in bodies)
        service.terminate()
        service.process.wait(30)
    spans = [json.loads(line) for line in log.read_text().splitlines() if '"resource"' in line]
    roots = [s for s in spans if s["name"] == "POST /api/fit-check/stream"]
    instances = {s["resource"]["attributes"]["service.instance.id"] for s in roots}
    assert len(roots) == 24
    assert len(instances) == 2, "each worker is its own instance (its own service.instance.id)"


def test_each_worker_writes_its_own_log_file(tmp_path: Path) -> None:
    """A rotating file has one writer: the parent and each worker write their own."""
    log_dir = tmp_path / "logs"
    with service_process(
        tmp_path / "service.log",
        args=("--workers", "2"),
        FIT_CHECK_LOG_FILE=str(log_dir / "fit-check.log"),
    ) as service:
        # /health answers as soon as one worker serves: wait for the other's file too.
        deadline = time.monotonic() + 30
        while not (log_dir / "fit-check-w2.log").exists():
            assert time.monotonic() < deadline, "worker 2 never started"
            time.sleep(0.05)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: stream(service.url, f"f-{n}"), range(16)))
        service.terminate()
        service.process.wait(30)
    names = sorted(path.name for path in log_dir.iterdir())
    assert names == ["fit-check-w1.log", "fit-check-w2.log", "fit-check.log"]
    completed = []
    for name in names:
        for raw in (log_dir / name).read_text().splitlines():
            line = json.loads(raw)  # every line whole
            if line["message"] == "Request completed":
                completed.append((name, line["session_id"]))
    assert sorted(s for _, s in completed) == sorted(f"f-{n}" for n in range(16))
    assert {name for name, _ in completed} <= {"fit-check-w1.log", "fit-check-w2.log"}


def test_a_worker_that_dies_is_replaced(tmp_path: Path) -> None:
    with service_process(tmp_path / "service.log", args=("--workers", "2")) as service:
        first, second = workers_of(service)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            current = workers_of(service)
            if len(current) == 2 and first not in current:
                break
            assert time.monotonic() < deadline, f"not replaced: {current}"
            time.sleep(0.1)
        assert second in current
        deadline = time.monotonic() + 30
        while "event: complete" not in stream(service.url, "after-replace"):
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_sigterm_drains_every_worker_within_the_bound(tmp_path: Path) -> None:
    with service_process(
        tmp_path / "service.log",
        args=("--workers", "2"),
        FIT_CHECK_LATENCY_MS="3000",
        FIT_CHECK_SHUTDOWN_GRACE_S="1",
    ) as service:
        with httpx.stream(
            "POST", f"{service.url}/api/fit-check/stream", json={"query": "Go"}, timeout=30
        ) as response:
            chunks = response.iter_text()
            text = next(chunks)
            started = time.monotonic()
            service.terminate()
            text += "".join(chunks)
        service.process.wait(1 + 5 + 5)
        took = time.monotonic() - started
    assert parse_sse(text)[-1][1]["code"] == "SHUTTING_DOWN"
    assert took <= 1 + 5 + 3


def test_a_metrics_port_cannot_be_shared_by_workers() -> None:
    result = subprocess.run(
        [str(FIT_CHECK), "serve", "--workers", "2"],
        env={**os.environ, "FIT_CHECK_METRICS_PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("fit-check: FIT_CHECK_METRICS_PORT cannot be shared")


def assert_refused(port: int) -> None:
    """Nothing holds the port: not the supervisor, not a worker it left behind."""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


@pytest.mark.timeout(60)
def test_a_worker_that_keeps_failing_is_retried_later_each_time_then_given_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Worker 2 fails at start-up every time, worker 1 serves: worker 2 is started again
    after growing delays, then the supervisor stops worker 1, closes the socket and gives
    up with worker 2's own reason."""
    starts = tmp_path / "starts"
    port = free_port()
    settings = make_settings(host="127.0.0.1", port=port, shutdown_grace_s=0)
    supervisor = Supervisor(settings, 2, target=functools.partial(idle_or_fail, starts))
    began = time.monotonic()
    with (
        caplog.at_level(logging.ERROR, logger="fit_check.workers"),
        pytest.raises(WorkersGaveUp) as gave_up,
    ):
        supervisor.run()
    assert time.monotonic() - began < 30
    assert str(gave_up.value) == (
        f"worker 2 could not start: FileNotFoundError: [Errno 2] No such file or directory: "
        f"'{MISSING}'"
    )
    delays = [r.restart_in_s for r in caplog.records if hasattr(r, "restart_in_s")]
    assert delays == sorted(set(delays)) == list(RESTART_DELAYS_S)  # each longer
    started = [float(line) for line in starts.read_text().splitlines()]
    assert len(started) == GIVE_UP_AFTER
    waited = [later - earlier for earlier, later in itertools.pairwise(started)]
    assert all(w >= d for w, d in zip(waited, delays, strict=True)), (waited, delays)
    assert_refused(port)


def run_serve(*args: str, timeout_s: float, **env: str) -> subprocess.CompletedProcess[str]:
    """``fit-check serve`` to its end, in a process group of its own: whatever it leaves
    behind (the workers of a supervisor that did not end in time) is killed with it."""
    process = subprocess.Popen(
        [str(FIT_CHECK), "serve", *args],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FIT_CHECK_"))},
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_serve_gives_up_on_a_worker_that_cannot_start_in_one_line(tmp_path: Path) -> None:
    """The real worker, failing where only a worker can (its own log file is a directory):
    ``fit-check serve`` ends with exit 3 and the worker's reason as its last line, and
    leaves nothing listening."""
    logs = tmp_path / "logs"
    (logs / "fit-check-w2.log").mkdir(parents=True)
    port = free_port()
    result = run_serve(
        "--workers",
        "2",
        timeout_s=60,
        HOST="127.0.0.1",
        PORT=str(port),
        FIT_CHECK_SHUTDOWN_GRACE_S="0",
        FIT_CHECK_LOG_FILE=str(logs / "fit-check.log"),
    )
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "fit-check: worker 2 could not start: IsADirectoryError: [Errno 21] Is a directory: "
        f"'{logs / 'fit-check-w2.log'}'"
    )
    assert_refused(port)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_missing_profile_is_one_line_before_any_worker_starts(workers: str) -> None:
    result = run_serve(
        "--workers", workers, timeout_s=30, PORT=str(free_port()), FIT_CHECK_PROFILE=MISSING
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"fit-check: FIT_CHECK_PROFILE: {MISSING} does not exist"]
    assert result.stdout == ""  # no "Started 2 workers", no worker's log


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_log_file_that_cannot_be_written_is_one_line_before_any_worker_starts(
    workers: str, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    impossible = tmp_path / "a-file" / "fit-check.log"  # its "directory" is a file
    result = run_serve(
        "--workers",
        workers,
        timeout_s=30,
        PORT=str(free_port()),
        FIT_CHECK_LOG_FILE=str(impossible),
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"fit-check: FIT_CHECK_LOG_FILE: {impossible}: {impossible.parent} is not a directory"
    ]
    assert result.stdout == ""
