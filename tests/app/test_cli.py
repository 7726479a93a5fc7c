"""``fit-check ask`` against a real server: progress per phase, the report, the exit code."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from app.pipeline.events import PHASES
from tests.helpers import Harness, HarnessFactory, LiveServerFactory


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"COLUMNS": "160", "PATH": "/usr/bin:/bin", **(env or {})},
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, output.decode()


async def ask(url: str, *args: str) -> tuple[int, str]:
    return await cli("ask", "Senior Python engineer, Kafka", "--url", url, *args)


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


async def test_ask_errors_are_the_error_line_alone() -> None:
    """No progress lines before the stream is open: a refused connection is one line."""
    code, output = await ask("http://127.0.0.1:9")
    assert code == 2
    assert output.strip().splitlines() == [
        "cannot reach the service at http://127.0.0.1:9 (could not connect): start it with "
        "`fit-check serve` (or `make run`), or give its address with --url or FIT_CHECK_URL"
    ]


async def test_ask_takes_an_address_without_a_scheme(
    harness: Harness, live_server: LiveServerFactory
) -> None:
    async with live_server(harness.app) as server:
        by_flag = await ask(f"127.0.0.1:{server.port}")
        by_env = await cli("ask", "Python", env={"FIT_CHECK_URL": f"localhost:{server.port}/"})
    assert by_flag[0] == 0, by_flag[1]
    assert by_env[0] == 0, by_env[1]


async def test_ask_trace_without_jaeger_keeps_the_analysis_exit_code(
    harness: Harness, live_server: LiveServerFactory
) -> None:
    async with live_server(harness.app) as server:
        code, output = await ask(server.url, "--trace", "--jaeger", "http://127.0.0.1:9")
    assert code == 0, output
    assert "Fit report" in output
    (note,) = [line for line in output.splitlines() if "trace" in line and "shown" in line]
    assert note.startswith("fit-check: the trace could not be shown: found no Jaeger at ")


async def test_trace_without_jaeger_says_where_it_looked_and_what_to_do() -> None:
    code, output = await cli(
        "trace", "4bf92f3577b34da6a3ce929d0e0e4736", "--jaeger", "http://127.0.0.1:9"
    )
    assert code == 2
    assert output.strip().splitlines() == [
        "fit-check: found no Jaeger at http://127.0.0.1:9 (could not connect). Point "
        "fit-check at yours with --jaeger URL or FIT_CHECK_JAEGER_URL; `make stack` (or "
        "`make up`, with Docker) runs one at http://localhost:16686"
    ]


@pytest.mark.parametrize(
    "trace_id",
    ["nothex", "0" * 32, "4bf92f3577b34da6a3ce929d0e0e473", "4bf92f3577b34da6a3ce929d0e0e473g"],
)
async def test_trace_refuses_what_is_not_a_trace_id_without_asking_jaeger(
    trace_id: str,
) -> None:
    code, output = await cli("trace", trace_id, "--jaeger", "http://127.0.0.1:9")
    assert code == 2
    assert output.strip().splitlines() == [
        f"fit-check: {trace_id!r} is not a trace id: one is 32 hexadecimal characters, not "
        "all zeros (the `session` event and the traceresponse header of a stream carry it)"
    ]


async def test_ask_finds_the_server_as_serve_would(
    harness: Harness, live_server: LiveServerFactory
) -> None:
    """No --url: the same HOST and PORT ``serve`` reads, or FIT_CHECK_URL."""
    async with live_server(harness.app) as server:
        by_port = await cli("ask", "Python", env={"HOST": "0.0.0.0", "PORT": str(server.port)})
        by_url = await cli("ask", "Python", env={"FIT_CHECK_URL": server.url})
    assert by_port[0] == 0, by_port[1]
    assert by_url[0] == 0, by_url[1]


async def test_an_http_error_is_one_human_line(
    harness: Harness, live_server: LiveServerFactory
) -> None:
    async with live_server(harness.app) as server:
        code, output = await cli("ask", "x" * 2001, "--url", server.url)
    assert code == 2
    assert output.strip().splitlines() == [
        "HTTP 422 INVALID_QUERY: query: String should have at most 2000 characters"
    ]


async def test_help_reads_as_plain_text() -> None:
    for args in (("--help",), ("ask", "--help"), ("trace", "--help")):
        code, output = await cli(*args)
        assert code == 0
        assert "``" not in output, output
    code, output = await cli("ask", "--help")
    assert "FIT_CHECK_URL" in output and "--url" in output


async def test_serve_refuses_google_search_without_its_key_in_one_line() -> None:
    code, output = await cli("serve", env={"FIT_CHECK_SEARCH_PROVIDER": "google", "PORT": "0"})
    assert code == 2
    lines = output.strip().splitlines()
    assert lines == [
        "fit-check: FIT_CHECK_SEARCH_PROVIDER=google needs GOOGLE_API_KEY and GOOGLE_CSE_ID"
    ]


async def test_ask_reports_an_invalid_setting_in_one_line() -> None:
    """Without --url, ``ask`` reads the settings ``serve`` reads: same error, no traceback."""
    code, output = await cli("ask", "Python", env={"PORT": "not-a-port"})
    assert code == 2
    assert output.startswith("fit-check: PORT: Input should be a valid integer"), output
    assert "Traceback" not in output


async def test_ask_says_so_when_the_stream_is_cut_before_its_end(
    live_server: LiveServerFactory,
) -> None:
    """A stream that stops without a terminal event (the service died, a proxy cut it)."""

    async def cut(_request: Request) -> StreamingResponse:
        async def one_event() -> AsyncIterator[bytes]:
            yield b'id: AAAAAAAAAAAAAAAA.0\r\nevent: session\r\ndata: {"session_id": "s"}\r\n\r\n'

        return StreamingResponse(one_event(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/api/fit-check/stream", cut, methods=["POST"])])
    async with live_server(app) as server:
        code, output = await ask(server.url)
    assert code == 1
    assert output.strip().splitlines()[-1] == (
        "the stream ended before the analysis did (the connection was cut or the service "
        "stopped): send the query again"
    )
