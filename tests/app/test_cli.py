"""``fit-check ask`` against a real server: progress per phase, the report, the exit code."""

from __future__ import annotations

import asyncio
import sys

from app.pipeline.events import PHASES
from tests.helpers import Harness, HarnessFactory, LiveServerFactory


async def ask(url: str, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "ask",
        "Senior Python engineer, Kafka",
        "--url",
        url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"COLUMNS": "160", "PATH": "/usr/bin:/bin"},
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, output.decode()


async def test_ask_shows_phases_and_the_report(
    harness: Harness, live_server: LiveServerFactory
) -> None:
    async with live_server(harness.app) as server:
        code, output = await ask(server.url, "--session-id", "cli-1")
    assert code == 0, output
    assert "session cli-1" in output
    for phase in PHASES:
        assert phase in output
    assert "ms" in output
    assert "Fit report" in output


async def test_ask_exits_non_zero_on_an_error_event(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    h = harness_factory(fault_rate_search=1.0)
    async with live_server(h.app) as server:
        code, output = await ask(server.url)
    assert code == 1
    assert "SEARCH_ERROR" in output


async def test_ask_reports_an_unreachable_server() -> None:
    code, output = await ask("http://127.0.0.1:9")
    assert code == 2 and "cannot reach" in output
