"""A deploy sends SIGTERM: streams in flight end cleanly and the exit is bounded."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path

import httpx

from tests.helpers import parse_sse
from tests.service_process import ServiceProcess, service_process

STREAMS = 20
GRACE_S = 1.0
BOUND_S = GRACE_S + 5


def stream_in_thread(service: ServiceProcess, started: threading.Semaphore) -> list[str]:
    """Reads one stream to its end in a thread; the list gets the body when it ends."""
    body: list[str] = []

    def run() -> None:
        text = ""
        try:
            with httpx.stream(
                "POST", f"{service.url}/api/fit-check/stream", json={"query": "Python"}, timeout=30
            ) as response:
                for chunk in response.iter_text():
                    if not text and "event: session" in chunk:
                        started.release()
                    text += chunk
        except httpx.HTTPError as exc:
            text += f"\n<{type(exc).__name__}>"
        body.append(text)

    threading.Thread(target=run, daemon=True).start()
    return body


def exit_seconds(service: ServiceProcess) -> float:
    started = time.monotonic()
    service.terminate()
    service.process.wait(BOUND_S + 10)
    return time.monotonic() - started


def test_sigterm_ends_every_stream_with_a_terminal_event_within_the_bound(
    tmp_path: Path,
) -> None:
    with service_process(
        tmp_path / "service.log",
        FIT_CHECK_LATENCY_MS="3000",  # every stream is mid-analysis when the signal comes
        FIT_CHECK_SHUTDOWN_GRACE_S=str(GRACE_S),
        FIT_CHECK_MAX_SESSIONS_PER_CLIENT=str(STREAMS),  # they all come from this test
    ) as service:
        started = threading.Semaphore(0)
        bodies = [stream_in_thread(service, started) for _ in range(STREAMS)]
        for _ in range(STREAMS):
            assert started.acquire(timeout=30)
        took = exit_seconds(service)
        log = service.log()
    deadline = time.monotonic() + 10
    while not all(bodies) and time.monotonic() < deadline:
        time.sleep(0.05)  # the client threads read the last bytes
    for body in bodies:
        assert body, "a client never finished"
        events = parse_sse(body[0])
        terminal = [(n, d) for n, d in events if n in ("complete", "error")]
        assert len(terminal) == 1, body[0][-300:]
        assert terminal[0][1]["code"] == "SHUTTING_DOWN"
    assert took <= BOUND_S, f"shutdown took {took:.1f} s"
    assert "without completing response" not in log
    assert "Exception in ASGI application" not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    ended = [line for line in lines if line["message"] == "Request completed"]
    assert len(ended) == STREAMS
    assert {(line["status"], line.get("reason")) for line in ended} == {("cancelled", "shutdown")}


def test_a_client_sending_its_body_slowly_does_not_hold_the_shutdown(tmp_path: Path) -> None:
    with (
        service_process(
            tmp_path / "service.log", FIT_CHECK_SHUTDOWN_GRACE_S=str(GRACE_S)
        ) as service,
        socket.create_connection(("127.0.0.1", service.port)) as slow,
    ):
        slow.sendall(
            b"POST /api/fit-check/stream HTTP/1.1\r\nHost: t\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"query": '
        )
        assert httpx.get(f"{service.url}/health").status_code == 200  # it got that far
        took = exit_seconds(service)
    assert took <= BOUND_S, f"shutdown took {took:.1f} s"


def wait_draining(service: ServiceProcess) -> None:
    """Until ``/ready`` says the instance drains (the listeners stay open meanwhile)."""
    deadline = time.monotonic() + 10
    while httpx.get(f"{service.url}/ready", timeout=5).status_code != 503:
        assert time.monotonic() < deadline, "the instance never started draining"
        time.sleep(0.05)


def test_a_second_sigterm_still_ends_every_stream_with_its_terminal_event(
    tmp_path: Path,
) -> None:
    """A second SIGTERM (an impatient operator, a supervisor that repeats itself) must not
    cut the streams that the first one promised a terminal event."""
    grace_s = 3.0
    with service_process(
        tmp_path / "service.log",
        FIT_CHECK_LATENCY_MS="10000",
        FIT_CHECK_SHUTDOWN_GRACE_S=str(grace_s),
    ) as service:
        started = threading.Semaphore(0)
        bodies = [stream_in_thread(service, started) for _ in range(5)]
        for _ in range(5):
            assert started.acquire(timeout=30)
        service.terminate()
        wait_draining(service)
        service.terminate()
        service.process.wait(grace_s + 10)
        log = service.log()
    deadline = time.monotonic() + 10
    while not all(bodies) and time.monotonic() < deadline:
        time.sleep(0.05)  # the client threads read the last bytes
    for body in bodies:
        assert body, "a client never finished"
        terminal = [(n, d) for n, d in parse_sse(body[0]) if n in ("complete", "error")]
        assert [(n, d["code"]) for n, d in terminal] == [("error", "SHUTTING_DOWN")], body[0][-300:]
    assert "Already shutting down" in log
    assert "Exception in ASGI application" not in log


def test_ctrl_c_twice_exits_at_once(tmp_path: Path) -> None:
    """The documented force-quit, as in uvicorn: no waiting for the grace period."""
    with service_process(
        tmp_path / "service.log",
        FIT_CHECK_LATENCY_MS="10000",
        FIT_CHECK_SHUTDOWN_GRACE_S="60",
    ) as service:
        started = threading.Semaphore(0)
        body = stream_in_thread(service, started)
        assert started.acquire(timeout=30)
        service.process.send_signal(signal.SIGINT)
        wait_draining(service)
        began = time.monotonic()
        service.process.send_signal(signal.SIGINT)
        service.process.wait(20)
        took = time.monotonic() - began
        log = service.log()
    assert took < 5, f"exit took {took:.1f} s"
    deadline = time.monotonic() + 10
    while not body and time.monotonic() < deadline:
        time.sleep(0.05)
    assert body and "SHUTTING_DOWN" not in body[0]  # cut: that is what forcing means
    assert "Waiting for application shutdown" not in log  # nothing waited for, as uvicorn's
