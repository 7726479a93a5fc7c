"""Same input, same output: the offline analysis does not depend on the hash seed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROGRAM = """
import asyncio, httpx
from app.asgi import build_app
from otel.testing import captured_telemetry
from tests.helpers import make_settings, parse_sse

async def main() -> None:
    app = build_app(make_settings(), captured_telemetry().runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for query in ("Senior Python engineer, FastAPI, Kubernetes", "Ledgerline Payments"):
            events = parse_sse((await client.post("/api/fit-check/stream",
                                                  json={"query": query})).text)
            print([d for n, d in events if n == "phase_complete"][-2]["data"]["score"])
            print("".join(d["chunk"] for n, d in events if n == "response"))

asyncio.run(main())
"""


def run_with_seed(seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed, "OTEL_SDK_DISABLED": "true"}
    return subprocess.run(
        [sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.parametrize("seeds", [("1", "3"), ("2", "4")])
def test_the_report_does_not_depend_on_the_hash_seed(seeds: tuple[str, str]) -> None:
    first, second = (run_with_seed(seed) for seed in seeds)
    assert "Fit report" in first
    assert first == second
