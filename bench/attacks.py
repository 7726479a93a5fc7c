"""``/health`` latency while one hostile client attacks: ``python -m bench.attacks``.

Each attack of ``bench.attackers`` runs in a process of its own against a fresh
``fit-check serve``; a probe asks ``/health`` on a new connection every 20 ms, as a load
balancer would, and the table gives p50, p99 and failed probes, beside a run with no
attack. ``--source DIR`` serves another checkout of the code (e.g. a ``git worktree`` of
an older commit) with this venv, for a before/after comparison in one sitting.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.attackers import percentile, probe_health
from bench.servers import BIN, ROOT, clean_env, free_port, stop, wait_http

PROBES = 150
#: (attack, hostile clients, the server's open-file limit)
ATTACKS = [
    ("none", 0, None),
    ("huge-header", 4, None),
    ("slowloris", 240, 256),
    ("slowloris", 400, 256),
    ("quadratic-query", 4, None),
]


def run(
    attack: str, clients: int, open_files: int | None, source: Path
) -> tuple[float, float, int]:
    port = free_port()
    env = clean_env(
        PORT=str(port),
        HOST="127.0.0.1",
        LOG_LEVEL="WARNING",
        FIT_CHECK_HEADER_TIMEOUT_S="2",
        PYTHONPATH=str(source),
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
    attacker = None
    try:
        wait_http(f"{url}/health", 30, server)
        if clients:
            attacker = subprocess.Popen(
                [sys.executable, "-m", "bench.attackers", attack, url, str(clients)],
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
