"""One client must not stall everyone: ``/health`` keeps answering while each attack runs,
and (``-m perf``, ``make test-perf``) answers fast.

The service runs as a real process (``fit-check serve``), the attack in a process of its
own (``tests/attackers.py``), and the probe here asks ``/health`` on a new connection every
20 ms, as a load balancer's health check would.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.attackers import percentile, probe_health
from tests.service_process import ROOT, ServiceProcess, service_process

PROBES = 150
P99_LIMIT_S = 0.1


def rejected(service: ServiceProcess, reason: str) -> float:
    text = httpx.get(f"{service.url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "fit_check_rejected_requests_total"
                and sample.labels.get("reason") == reason
            ):
                return sample.value
    return 0.0


def attack_under_way(service: ServiceProcess, attack: str, clients: int) -> bool:
    """The attack is doing its damage: what the service itself shows of it."""
    if attack == "huge-header":
        return rejected(service, "header_too_large") >= 1
    if attack == "quadratic-query":
        return rejected(service, "invalid_request") >= 20
    open_sockets = len(list(Path(f"/proc/{service.process.pid}/fd").iterdir()))
    return open_sockets >= clients


def wait_for(condition: Callable[[], bool], attacker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert attacker.poll() is None, "the attack stopped on its own"
        assert time.monotonic() < deadline, "the attack never got under way"
        time.sleep(0.05)


ATTACKS = pytest.mark.parametrize(
    ("attack", "clients", "open_files"),
    [
        ("huge-header", 4, None),
        ("slowloris", 240, 256),
        ("quadratic-query", 4, None),
    ],
)


def probe_under_attack(
    tmp_path: Path, attack: str, clients: int, open_files: int | None
) -> list[float]:
    """The latencies of ``PROBES`` ``/health`` probes while ``attack`` runs, once every
    probe was answered, the service outlived the attack, and slowloris's sockets were
    dropped (not held until the attacker gave up)."""
    with service_process(
        tmp_path / "service.log",
        open_files=open_files,
        FIT_CHECK_HEADER_TIMEOUT_S="2",
        LOG_LEVEL="WARNING",
    ) as service:
        attacker = subprocess.Popen(
            [sys.executable, "-m", "tests.attackers", attack, service.url, str(clients)],
            cwd=ROOT,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: attack_under_way(service, attack, clients), attacker)
            latencies, failures = probe_health(service.url, PROBES)
        finally:
            attacker.kill()
            attacker.wait(10)
        assert service.process.poll() is None, service.log()
        if attack == "slowloris":
            assert rejected(service, "header_timeout") >= clients
    assert failures == 0, f"{failures} of {PROBES} probes failed"
    return latencies


@ATTACKS
def test_health_answers_every_probe_while_an_attack_runs(
    tmp_path: Path, attack: str, clients: int, open_files: int | None
) -> None:
    probe_under_attack(tmp_path, attack, clients, open_files)


@pytest.mark.perf
@ATTACKS
def test_health_stays_fast_while_an_attack_runs(
    tmp_path: Path, attack: str, clients: int, open_files: int | None
) -> None:
    p99 = percentile(probe_under_attack(tmp_path, attack, clients, open_files), 0.99)
    assert p99 < P99_LIMIT_S, f"/health p99 {p99 * 1000:.0f} ms under {attack}"
