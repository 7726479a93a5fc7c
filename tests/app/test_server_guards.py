"""The server's guards against a real socket: later requests on a keep-alive connection,
headers trickled in small writes, the exact refusals, HTTP/1.0 bytes, proxy headers and
the signals that end a drain."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.host_names import HostAllowList
from app.http_server import DrainingServer, server_config
from app.uvicorn_protocol import LINGER_S
from tests.fakes import counting_providers
from tests.helpers import (
    HarnessFactory,
    LiveServer,
    LiveServerFactory,
    errors_logged,
    parse_sse,
    wait_until,
)

STREAM = "/api/fit-check/stream"
HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def connect(
    server: LiveServer, *, after_one_request: bool = False
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection; ``after_one_request``: a first request on it already answered (a
    kept-alive connection, whose next request the guards must count afresh)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    if after_one_request:
        writer.write(HEALTH)
        assert (await read_response(reader))[0] == b"HTTP/1.1 200 OK"
    return reader, writer


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One response with a Content-Length, read exactly."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status, *lines = head[:-4].split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines)
    body = await asyncio.wait_for(reader.readexactly(int(headers[b"content-length"])), 10)
    return status, headers, body


async def refusal(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, Any]]:
    """The server's refusal: JSON, connection: close, and then the connection closes."""
    status, headers, body = await read_response(reader)
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"connection"] == b"close"
    assert await asyncio.wait_for(reader.read(), 10) == b""
    return status, json.loads(body)


async def trickle_headers(writer: asyncio.StreamWriter, total: int, piece: int) -> None:
    """Header bytes in small writes, each given time to arrive as a read of its own."""
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    for _ in range(total // piece):
        writer.write(b"a" * piece)
        try:
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(0.002)  # the pace of the attack, not a wait for the server


@pytest.mark.parametrize("later", [False, True])
async def test_headers_trickled_past_the_cap_get_431(
    harness_factory: HarnessFactory, later: bool
) -> None:
    """Each read is far under the cap: only their sum passes it. ``later``: the first
    request on the connection was answered, and the count starts again for the next."""
    h = harness_factory(max_header_bytes=4096, header_timeout_s=30)
    async with LiveServer(h.app) as server:
        reader, writer = await connect(server, after_one_request=later)
        sending = asyncio.create_task(trickle_headers(writer, 20_000, 100))
        status, body = await refusal(reader)
        await sending
        writer.close()
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert body == {
        "code": "HEADER_TOO_LARGE",
        "message": "request headers exceed 4096 bytes",
        "errors": [],
    }
    assert h.telemetry.value("fit_check.rejected_requests", reason="header_too_large") == 1


async def test_a_later_request_past_the_cap_in_one_write_gets_431(
    harness_factory: HarnessFactory,
) -> None:
    h = harness_factory(max_header_bytes=4096)
    async with LiveServer(h.app) as server:
        reader, writer = await connect(server, after_one_request=True)
        writer.write(
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
            + b"a" * 5000
            + b"\r\n\r\n\x00not a request"  # what follows is not even parsed
        )
        status, body = await refusal(reader)
        writer.close()
    assert status.startswith(b"HTTP/1.1 431 ") and body["code"] == "HEADER_TOO_LARGE"
    assert h.telemetry.value("fit_check.rejected_requests", reason="header_too_large") == 1
    assert h.telemetry.value("fit_check.rejected_requests", reason="malformed_request") == 0


def head_of_size(size: int) -> bytes:
    """A request whose head counts ``size`` bytes as the server counts a head read whole:
    the path, and each header's name and value plus four."""
    fixed = len(b"/health") + len(b"host") + len(b"127.0.0.1") + 4 + len(b"x-pad") + 4
    return (
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * (size - fixed) + b"\r\n\r\n"
    )


async def test_a_head_read_whole_may_count_exactly_the_cap(harness_factory: HarnessFactory) -> None:
    h = harness_factory(max_header_bytes=4096)
    async with LiveServer(h.app) as server:
        reader, writer = await connect(server)
        writer.write(head_of_size(4096))
        assert (await read_response(reader))[0] == b"HTTP/1.1 200 OK"
        writer.write(head_of_size(4097))
        status, _ = await refusal(reader)
        writer.close()
    assert status.startswith(b"HTTP/1.1 431 ")


@pytest.mark.parametrize("later", [False, True])
async def test_an_unfinished_head_may_reach_exactly_the_cap(
    harness_factory: HarnessFactory, later: bool
) -> None:
    """Counted as it arrives, a head is refused once it is past the cap, not at it."""
    h = harness_factory(max_header_bytes=4096)
    async with LiveServer(h.app) as server:
        reader, writer = await connect(server, after_one_request=later)
        head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: "
        writer.write(head + b"a" * (4096 - len(head) - 3) + b"\r\n\r")
        await writer.drain()
        await asyncio.sleep(0.05)  # the client's pace: those 4096 bytes are read on their own
        writer.write(b"\n")
        status, _, _ = await read_response(reader)
        writer.close()
    assert status == b"HTTP/1.1 200 OK"


async def test_every_host_header_must_be_answered(harness_factory: HarnessFactory) -> None:
    h = harness_factory()
    async with LiveServer(h.app) as server:
        reader, writer = await connect(server)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n")
        status, body = await refusal(reader)
        writer.close()
    assert status.startswith(b"HTTP/1.1 421 ") and body["code"] == "HOST_NOT_ALLOWED"


async def test_a_refused_request_with_a_body_reaches_nothing_and_logs_no_error(
    harness_factory: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness_factory()
    async with LiveServer(h.app) as server:
        reader, writer = await connect(server)
        writer.write(
            b"POST /api/fit-check/stream HTTP/1.1\r\nHost: evil.example\r\n"
            b'Content-Type: application/json\r\nContent-Length: 19\r\n\r\n{"query": "Python"}'
        )
        status, body = await refusal(reader)
        writer.close()
    assert status.startswith(b"HTTP/1.1 421 ") and body["code"] == "HOST_NOT_ALLOWED"
    assert h.telemetry.value("fit_check.requests", status="success") == 0
    assert h.telemetry.value("fit_check.rejected_requests", reason="host_not_allowed") == 1
    assert errors_logged(caplog) == []


async def test_headers_at_the_cap_pass_in_one_write_and_in_many(
    harness_factory: HarnessFactory,
) -> None:
    """The cap is on what the server reads of one request's head, request line and blank
    line included: exactly that many bytes are answered."""
    h = harness_factory(max_header_bytes=4096)
    async with LiveServer(h.app) as server:
        reader, writer = await connect(server)
        for pieces in (1, 64):
            head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: "
            request = head + b"a" * (4096 - len(head) - 4) + b"\r\n\r\n"
            assert len(request) == 4096
            size = len(request) // pieces
            for n in range(pieces):
                writer.write(request[n * size : (n + 1) * size if n < pieces - 1 else None])
                await writer.drain()
                await asyncio.sleep(0.001)  # the client's pace
            assert (await read_response(reader))[0] == b"HTTP/1.1 200 OK"
        writer.close()
    assert h.telemetry.value("fit_check.rejected_requests", reason="header_too_large") == 0


@pytest.mark.parametrize("later", [False, True])
async def test_headers_left_unfinished_get_408(
    harness_factory: HarnessFactory, later: bool
) -> None:
    h = harness_factory(header_timeout_s=0.3)
    async with LiveServer(h.app) as server:
        reader, writer = await connect(server, after_one_request=later)
        for piece in (b"GET /health HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"X-Never: ends"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)  # the client's pace
        started = asyncio.get_running_loop().time()
        status, body = await refusal(reader)
        took = asyncio.get_running_loop().time() - started
        writer.close()
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert body == {
        "code": "HEADER_TIMEOUT",
        "message": "request headers not received within 0.3s",
        "errors": [],
    }
    assert took < 3
    assert h.telemetry.value("fit_check.rejected_requests", reason="header_timeout") == 1


async def test_an_idle_keep_alive_connection_is_not_refused(
    harness_factory: HarnessFactory,
) -> None:
    """After an answer, the header deadline waits for the next request's first byte."""
    h = harness_factory(header_timeout_s=0.2)
    async with LiveServer(h.app) as server:
        reader, writer = await connect(server, after_one_request=True)
        idle = asyncio.create_task(reader.read(1))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(idle), 0.6)
        writer.write(HEALTH)
        assert (await idle) == b"H"
        writer.close()
    assert h.telemetry.value("fit_check.rejected_requests", reason="header_timeout") == 0


async def test_a_host_not_answered_and_a_garbled_request_are_refused_in_words(
    harness_factory: HarnessFactory,
) -> None:
    h = harness_factory()
    async with LiveServer(h.app) as server:
        reader, writer = await connect(server)
        writer.write(b"GET /health HTTP/1.1\r\nHost: rebound.example\r\n\r\n")
        host = await refusal(reader)
        writer.close()
        reader, writer = await connect(server)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Nul: a\x00b\r\n\r\n")
        garbled = await refusal(reader)
        writer.close()
    assert host == (
        b"HTTP/1.1 421 Misdirected Request",
        {
            "code": "HOST_NOT_ALLOWED",
            "message": "this server does not answer to that Host name (loopback names, HOST "
            "and FIT_CHECK_ALLOWED_HOSTS)",
            "errors": [],
        },
    )
    assert garbled == (
        b"HTTP/1.1 400 Bad Request",
        {"code": "BAD_REQUEST", "message": "the request is not valid HTTP/1.1", "errors": []},
    )
    assert h.telemetry.value("fit_check.rejected_requests", reason="host_not_allowed") == 1
    assert h.telemetry.value("fit_check.rejected_requests", reason="malformed_request") == 1


async def test_a_refused_client_still_sending_reads_the_whole_answer(
    harness_factory: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Unread bytes in a closed socket would make the kernel send a reset that destroys the
    answer: the server reads and discards for a while, sends its FIN, then closes."""
    h = harness_factory(max_header_bytes=4096, header_timeout_s=0.3)
    async with LiveServer(h.app) as server:
        reader, writer = await connect(server)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 8000)
        await writer.drain()
        status, _, body = await read_response(reader)
        for _ in range(20):  # still sending after the answer: read and discarded
            writer.write(b"b" * 1000)
            await writer.drain()
        assert await asyncio.wait_for(reader.read(), LINGER_S + 5) == b""
        # Then the server closes the connection itself, with this end still open.
        await wait_until(lambda: not server.server.server_state.connections, LINGER_S + 3)
        writer.close()
    assert errors_logged(caplog) == []
    assert status.startswith(b"HTTP/1.1 431 ")
    assert json.loads(body)["code"] == "HEADER_TOO_LARGE"
    assert h.telemetry.value("fit_check.rejected_requests", reason="header_too_large") == 1
    # The header deadline passed while it lingered: nothing more is answered or counted.
    assert h.telemetry.value("fit_check.rejected_requests", reason="header_timeout") == 0


async def test_a_response_longer_than_the_header_deadline_is_not_cut(
    harness_factory: HarnessFactory,
) -> None:
    """The deadline is for the head: once it is in, an answer may take its time."""
    providers, _, _ = counting_providers(llm_delay_s=0.2)  # three calls: 0.6 s in all
    h = harness_factory(providers=providers, header_timeout_s=0.2)
    async with LiveServer(h.app) as server, httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post(STREAM, json={"query": "Python"})
    assert parse_sse(response.text)[-1][0] == "complete"
    assert h.telemetry.value("fit_check.rejected_requests", reason="header_timeout") == 0


async def streamed(scope: Scope, receive: Receive, send: Send) -> None:
    """A body of unknown length whose last message carries bytes too."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-kind", b"raw")]})
    await send({"type": "http.response.body", "body": b"first ", "more_body": True})
    await send({"type": "http.response.body", "more_body": True})  # no body: none
    await send({"type": "http.response.body", "body": b"last"})


async def bare(scope: Scope, receive: Receive, send: Send) -> None:
    """No headers at all (the key is optional in ASGI)."""
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": b"bare"})


async def chunked_by_the_app(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that frames its own body as chunked: it gets what it asked for."""
    headers = [(b"transfer-encoding", b"chunked")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"abc", "more_body": True})
    await send({"type": "http.response.body", "body": b"end"})


async def short_of_its_length(scope: Scope, receive: Receive, send: Send) -> None:
    """Says 10 bytes, sends 4: a bug the server still reports under HTTP/1.0."""
    headers = [(b"content-length", b"10")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"abcd"})


async def lines(_request: Request) -> StreamingResponse:
    async def body() -> Any:
        yield "one\n"
        yield "two\n"

    return StreamingResponse(body(), media_type="text/plain")


async def sized(_request: Request) -> JSONResponse:
    return JSONResponse({"a": 1})


async def client_address(request: Request) -> JSONResponse:
    assert request.client is not None
    return JSONResponse({"host": request.client.host, "scheme": request.url.scheme})


def fake_api() -> Starlette:
    app = Starlette(
        routes=[
            Route("/lines", lines),
            Route("/sized", sized),
            Route("/client", client_address),
        ]
    )
    app.mount("/raw", streamed)
    app.mount("/bare", bare)
    app.mount("/chunked", chunked_by_the_app)
    app.mount("/short", short_of_its_length)
    return app


def head_lines(raw: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return [line for line in head.split(b"\r\n") if not line.startswith(b"date: ")], body


async def exchange(server: LiveServer, request: bytes) -> bytes:
    reader, writer = await connect(server)
    writer.write(request)
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return raw


async def test_http_1_0_bodies_of_unknown_length_end_with_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with LiveServer(fake_api()) as server:
        raw = await exchange(server, b"GET /raw/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        streaming = await exchange(server, b"GET /lines HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        sized = await exchange(server, b"GET /sized HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        chunked = await exchange(
            server, b"GET /lines HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
    assert head_lines(raw) == (
        [b"HTTP/1.1 200 OK", b"server: uvicorn", b"x-kind: raw", b"connection: close"],
        b"first last",
    )
    assert head_lines(streaming) == (
        [
            b"HTTP/1.1 200 OK",
            b"server: uvicorn",
            b"content-type: text/plain; charset=utf-8",
            b"connection: close",
        ],
        b"one\ntwo\n",
    )
    assert head_lines(sized) == (
        [
            b"HTTP/1.1 200 OK",
            b"server: uvicorn",
            b"content-length: 7",
            b"content-type: application/json",
            b"connection: close",
        ],
        b'{"a":1}',
    )
    assert head_lines(chunked)[1] == b"4\r\none\n\r\n4\r\ntwo\n\r\n0\r\n\r\n"
    assert b"transfer-encoding: chunked" in head_lines(chunked)[0]
    assert errors_logged(caplog) == []


async def test_http_1_0_keeps_the_framing_an_app_chose(caplog: pytest.LogCaptureFixture) -> None:
    async with LiveServer(fake_api()) as server:
        no_headers = await exchange(server, b"GET /bare/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        chunked = await exchange(server, b"GET /chunked/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        assert errors_logged(caplog) == []
        short = await exchange(server, b"GET /short/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    assert head_lines(no_headers) == (
        [b"HTTP/1.1 200 OK", b"server: uvicorn", b"connection: close"],
        b"bare",
    )
    assert head_lines(chunked) == (
        [
            b"HTTP/1.1 200 OK",
            b"server: uvicorn",
            b"transfer-encoding: chunked",
            b"connection: close",
        ],
        b"3\r\nabc\r\n3\r\nend\r\n0\r\n\r\n",
    )
    assert head_lines(short)[1] == b"abcd"
    raised = [r.exc_info[1] for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    assert [str(error) for error in raised] == ["Response content shorter than Content-Length"]


async def test_an_analysis_over_http_1_0_is_the_exact_sse_stream(
    harness_factory: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness_factory()
    async with LiveServer(h.app) as server:
        raw = await exchange(
            server, f"GET {STREAM}?query=Python HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode()
        )
    head, body = head_lines(raw)
    assert head[0] == b"HTTP/1.1 200 OK"
    assert b"connection: close" in head
    assert not [line for line in head if line.startswith((b"transfer-encoding", b"content-length"))]
    text = body.decode()
    # Nothing but SSE fields and blank lines: no chunk sizes, nothing cut.
    lines = text.split("\r\n")
    assert [
        line for line in lines if not re.fullmatch(r"(retry|id|event|data): .*|:.*|", line)
    ] == []
    assert text.endswith("\r\n\r\n") and not text.endswith("\r\n\r\n\r\n")
    events = parse_sse(text)
    assert events[0][0] == "session" and events[-1][0] == "complete"
    assert [name for name, _ in events].count("complete") == 1
    assert h.telemetry.value("fit_check.requests", status="success") == 1
    assert errors_logged(caplog) == []


async def test_proxy_headers_are_trusted_only_from_the_proxies_named() -> None:
    forged = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    async with LiveServer(fake_api()) as server, httpx.AsyncClient() as client:
        direct = (await client.get(f"{server.url}/client", headers=forged)).json()
    assert direct == {"host": "127.0.0.1", "scheme": "http"}

    config = server_config(
        fake_api(),
        host="127.0.0.1",
        port=0,
        max_header_bytes=8192,
        header_timeout_s=5,
        on_reject=lambda _reason: None,
    )
    assert config.proxy_headers is False
    behind = server_config(
        fake_api(),
        host="127.0.0.2",
        port=0,
        max_header_bytes=8192,
        header_timeout_s=5,
        on_reject=lambda _reason: None,
        forwarded_allow_ips=["127.0.0.1", "10.0.0.1"],
    )
    assert behind.proxy_headers is True
    assert behind.forwarded_allow_ips == ["127.0.0.1", "10.0.0.1"]
    # The rest of the configuration, as given (uvicorn's defaults differ).
    assert (behind.host, behind.lifespan) == ("127.0.0.2", "on")


@pytest.fixture(autouse=True)
def sse_streams_not_told_to_exit() -> Iterator[None]:
    """sse-starlette wraps uvicorn's ``handle_exit`` to set a process-wide flag that ends
    every stream started after it: a server told to exit here must not end later tests'."""
    yield
    AppStatus.should_exit = False


def drain_server(drained: list[str]) -> DrainingServer:
    async def drain() -> None:
        drained.append("drained")

    config = server_config(
        fake_api(),
        host="127.0.0.1",
        port=0,
        max_header_bytes=8192,
        header_timeout_s=5,
        on_reject=lambda _reason: None,
    )
    return DrainingServer(config, drain=drain)


def exiting(server: DrainingServer) -> tuple[bool, bool]:
    """(should_exit, force_exit), read fresh."""
    return server.should_exit, server.force_exit


async def drain_done(server: DrainingServer) -> None:
    await wait_until(lambda: server._drain_task is not None and server._drain_task.done())


async def test_a_signal_drains_and_only_then_lets_the_server_exit_and_signal_again() -> None:
    drained: list[str] = []
    server = drain_server(drained)
    server.handle_exit(signal.SIGTERM, None)
    assert exiting(server) == (False, False)
    assert await server.on_tick(1) is False  # starts the drain
    await drain_done(server)
    assert drained == ["drained"]
    assert await server.on_tick(2) is True
    assert exiting(server) == (True, False)
    assert server._captured_signals == [signal.SIGTERM]  # raised again once stopped


async def test_a_drain_asked_for_by_a_call_raises_no_signal_when_it_ends() -> None:
    drained: list[str] = []
    server = drain_server(drained)
    server.request_drain()
    await server.on_tick(1)
    await drain_done(server)
    assert await server.on_tick(2) is True
    assert server._captured_signals == []
    server = drain_server(drained)
    server.handle_exit(signal.SIGTERM, None)
    server.request_drain()  # after a signal: that signal is still raised again
    await server.on_tick(1)
    await drain_done(server)
    assert await server.on_tick(2) is True
    assert server._captured_signals == [signal.SIGTERM]


async def test_a_server_told_nothing_warns_of_nothing_and_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = drain_server([])
    with caplog.at_level(logging.WARNING, logger="fit_check.server"):
        assert await server.on_tick(1) is False
    assert [r for r in caplog.records if r.name == "fit_check.server"] == []
    assert server._drain_task is None and exiting(server) == (False, False)


async def test_a_second_sigint_forces_the_exit_and_a_second_sigterm_does_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for first in (signal.SIGTERM, signal.SIGINT):
        server = drain_server([])
        server.handle_exit(first, None)
        server.handle_exit(signal.SIGTERM, None)
        server.handle_exit(signal.SIGTERM, None)
        assert exiting(server) == (False, False)
        server.handle_exit(signal.SIGINT, None)
        assert exiting(server) == (True, True)
        assert server._captured_signals == [signal.SIGINT]
    server = drain_server([])
    server.handle_exit(signal.SIGTERM, None)
    server.handle_exit(signal.SIGTERM, None)
    with caplog.at_level(logging.WARNING, logger="fit_check.server"):
        await server.on_tick(1)
        await server.on_tick(2)
        server.handle_exit(signal.SIGTERM, None)
        await server.on_tick(3)
    warnings = [r.getMessage() for r in caplog.records if r.name == "fit_check.server"]
    assert (
        warnings
        == [
            "Already shutting down: streams in flight still get their grace period and terminal "
            "event (a SIGINT forces the exit)"
        ]
        * 2
    )
    assert server._drain_task is not None
    await server._drain_task


@pytest.fixture
def raised_sigterms() -> Iterator[list[int]]:
    raised: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda sig, _frame: raised.append(sig))
    yield raised
    signal.signal(signal.SIGTERM, previous)


def test_host_allow_list_reads_its_entries() -> None:
    hosts = HostAllowList("0.0.0.0", [" api.example ", "", "svc.example:8443", "*.corp.example"])
    assert hosts.allows(b"api.example") and hosts.allows(b"API.example.:9000")
    assert hosts.allows(b"svc.example:8443") and not hosts.allows(b"svc.example:8444")
    assert not hosts.allows(b"svc.example")
    assert hosts.allows(b"a.corp.example") and not hosts.allows(b"corp.example")
    assert not hosts.allows(b"0.0.0.0") and not hosts.allows(b"other.example")
    assert hosts.allows(b"[::1]:8000") and hosts.allows(b"127.9.9.9") and hosts.allows(b"localhost")
    assert not hosts.allows("caf\u00e9.example".encode())
    assert HostAllowList("::1", []).allows(b"[::1]")
    assert HostAllowList("[::]", ["*"]).allows(b"anything.example")
    assert HostAllowList("10.1.2.3", []).allows(b"10.1.2.3:8000")
    assert not HostAllowList("10.1.2.3", []).allows(b"10.1.2.4")


def test_host_allow_list_reads_bracketed_addresses_with_ports_and_any_case() -> None:
    hosts = HostAllowList("0.0.0.0", ["[fd00::1]:8443", "[fd00::2]", "fax"])
    assert hosts.allows(b"[fd00::1]:8443") and hosts.allows(b"[FD00::1]:8443")
    assert not hosts.allows(b"[fd00::1]:8444") and not hosts.allows(b"[fd00::1]")
    assert not hosts.allows(b"[fd00::1]:9443") and not hosts.allows(b"[fd00::1]8443")
    assert hosts.allows(b"[fd00::2]") and hosts.allows(b"[fd00::2]:9000")
    assert hosts.allows(b"FAX") and hosts.allows(b"FAX.")


async def test_a_live_server_drains_on_sigterm_and_raises_it_again(
    harness_factory: HarnessFactory, live_server: LiveServerFactory, raised_sigterms: list[int]
) -> None:
    h = harness_factory(shutdown_grace_s=0)
    async with live_server(h.app) as server:
        signal.raise_signal(signal.SIGTERM)
        await wait_until(lambda: server.server.should_exit)
    assert h.service.draining
    assert raised_sigterms == [signal.SIGTERM]


async def test_a_body_queued_behind_another_answer_gets_its_whole_deadline_then_408(
    harness_factory: HarnessFactory,
) -> None:
    """The server stops reading a pipelined request while the one before it is answered:
    that time does not count against the body, and the deadline still comes after."""
    providers, _, _ = counting_providers(llm_delay_s=0.3)  # the first answer takes ~1 s
    h = harness_factory(providers=providers, body_timeout_s=0.3)
    async with LiveServer(h.app) as server:
        reader, writer = await connect(server)
        writer.write(
            f"GET {STREAM}?query=Python HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
            + b"POST /api/fit-check/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"query": '
        )
        raw = await asyncio.wait_for(reader.read(), 15)
        writer.close()
    first, end, second = raw.partition(b"\r\n0\r\n\r\nHTTP/1.1 408 ")  # after the stream's end
    assert end and first.startswith(b"HTTP/1.1 200 OK") and b"event: complete" in first
    _, _, body = second.partition(b"\r\n\r\n")
    assert json.loads(body)["code"] == "BODY_TIMEOUT"
    assert h.telemetry.value("fit_check.requests", status="success") == 1
    assert h.telemetry.value("fit_check.rejected_requests", reason="body_timeout") == 1


async def test_a_pipelined_head_past_the_cap_cuts_the_answer_before_it_not_garbles_it(
    harness_factory: HarnessFactory,
) -> None:
    """No 431 in the middle of a streaming answer: the connection is closed instead, the
    stream's app sees its client gone, and the refusal is counted."""
    providers, _, _ = counting_providers(llm_delay_s=5)
    h = harness_factory(providers=providers, max_header_bytes=4096, resume_window_s=0)
    async with LiveServer(h.app) as server:
        reader, writer = await connect(server)
        writer.write(f"GET {STREAM}?query=Python HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await asyncio.wait_for(reader.readuntil(b"event: session"), 10)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 8000)
        raw = await asyncio.wait_for(reader.read(), 10)
        # At once, not when the lingering connection is closed for good.
        await wait_until(lambda: h.service.sessions.active == 0, LINGER_S / 2)
        writer.close()
    assert b"HTTP/1.1" not in raw and b"HEADER_TOO_LARGE" not in raw
    assert h.telemetry.value("fit_check.rejected_requests", reason="header_too_large") == 1
    assert h.telemetry.value("fit_check.requests", status="cancelled") == 1


async def test_a_body_nobody_reads_after_the_answer_is_cut_off_uncounted(
    harness_factory: HarnessFactory,
) -> None:
    """Answered (a 404) before its body came: at the deadline the connection closes with no
    second answer, and nothing more is counted."""
    h = harness_factory(body_timeout_s=0.3)
    async with LiveServer(h.app) as server:
        reader, writer = await connect(server)
        writer.write(
            b"POST /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"query": '
        )
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert raw.startswith(b"HTTP/1.1 404 ") and raw.count(b"HTTP/1.1") == 1
    assert h.telemetry.value("fit_check.rejected_requests", reason="body_timeout") == 0


async def test_a_pipelined_broken_body_does_not_garble_the_answer_before_it(
    harness_factory: HarnessFactory,
) -> None:
    providers, _, _ = counting_providers(llm_delay_s=2)
    h = harness_factory(providers=providers, resume_window_s=0)
    async with LiveServer(h.app) as server:
        reader, writer = await connect(server)
        writer.write(f"GET {STREAM}?query=Python HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await asyncio.wait_for(reader.readuntil(b"event: session"), 10)
        writer.write(
            b"POST /api/fit-check/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        )
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await wait_until(lambda: h.service.sessions.active == 0)
    assert b"HTTP/1.1" not in raw and b"BAD_REQUEST" not in raw
    assert h.telemetry.value("fit_check.rejected_requests", reason="malformed_request") == 1


async def test_a_later_requests_unfinished_body_on_a_kept_alive_connection_gets_408(
    harness_factory: HarnessFactory,
) -> None:
    """The body deadline is armed again for every request on a connection, also after an
    earlier request's body completed."""
    h = harness_factory(body_timeout_s=0.3)
    head = (
        b"POST /api/fit-check/feedback HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    )
    async with LiveServer(h.app) as server:
        reader, writer = await connect(server)
        # The first body after its headers, in a write of its own: the server arms the
        # body deadline on the headers and disarms it on the body.
        writer.write(head % 2)
        await writer.drain()
        await asyncio.sleep(0.05)  # the client's pace, not a wait for the server
        writer.write(b"{}")
        status, headers, _ = await read_response(reader)
        assert status == b"HTTP/1.1 422 Unprocessable Entity"
        assert headers.get(b"connection") != b"close"
        writer.write(head % 100 + b"{")
        status, body = await refusal(reader)
        writer.close()
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert body["code"] == "BODY_TIMEOUT"
    assert h.telemetry.value("fit_check.rejected_requests", reason="body_timeout") == 1
