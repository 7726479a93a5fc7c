"""Instructions per stream, counted by valgrind: ``python -m bench.ir`` (``make bench-ir``).

Wall-clock CPU on a shared 2-core VM cannot resolve changes under about a millisecond per
stream; instruction counts (cachegrind's ``Ir``) of the same in-process run repeat to well
under 0.1%. Each variant builds the app with ``app.asgi.build()`` from its environment and
POSTs N offline streams through ``httpx.ASGITransport`` (no sockets), under
``valgrind --tool=cachegrind --cache-sim=no``; the per-stream figure is
``(Ir at N=60 - Ir at N=10) / 50``, so start-up and imports cancel out.

``--source DIR`` counts another checkout (e.g. a ``git worktree`` of an older commit)
with this venv, for a before/after comparison of a change.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.servers import BIN, ROOT, clean_env

DRIVER = Path(__file__).with_name("ir_drive.py")
SMALL, LARGE = 10, 60
VARIANTS: dict[str, dict[str, str]] = {
    "baseline (OTEL_SDK_DISABLED, WARNING logs)": {
        "OTEL_SDK_DISABLED": "true",
        "LOG_LEVEL": "WARNING",
    },
    "full telemetry (JSON INFO logs, no OTLP endpoint)": {"LOG_FORMAT": "json"},
}


def instructions(source: Path, env: dict[str, str], streams: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cachegrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                f"--cachegrind-out-file={out}",
                str(BIN / "python"),
                str(DRIVER),
                str(streams),
            ],
            env=clean_env(
                PYTHONHASHSEED="0",
                PYTHONPATH=str(source),
                **env,
            ),
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        summary = re.search(r"^summary:\s+(\d+)", out.read_text(), re.MULTILINE)
        assert summary is not None, "no summary line in the cachegrind output"
        return int(summary.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout to count")
    args = parser.parse_args()
    source = args.source.resolve()
    commit = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    print(f"source: {source} ({commit}); instructions per stream = (Ir@{LARGE} - Ir@{SMALL})")
    print(f"/ {LARGE - SMALL}")
    print("| variant | instructions per stream |")
    print("|---|---|")
    per_stream: dict[str, float] = {}
    for name, env in VARIANTS.items():
        counts = {n: instructions(source, env, n) for n in (SMALL, LARGE)}
        per_stream[name] = (counts[LARGE] - counts[SMALL]) / (LARGE - SMALL)
        print(f"| {name} | {per_stream[name] / 1e6:.2f} M |", flush=True)
    baseline, full = per_stream.values()
    print(f"| added by telemetry | {(full - baseline) / 1e6:+.2f} M |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
