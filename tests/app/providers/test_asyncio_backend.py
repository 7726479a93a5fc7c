"""The LLM client's network backend (asyncio transports, no cancel scope per read): what
httpx expects of a connection, and the limits of a streamed answer through it."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest

from app.providers.asyncio_backend import (
    HIGH_WATER,
    AsyncioBackend,
    AsyncioStream,
    _connect_first,
    _happy_order,
    http_transport,
)
from app.providers.base import LLMRequest, Message
from app.providers.factory import build_providers
from app.providers.openai_chat import OpenAIChat
from app.resilience.breaker import BreakerState
from otel.facade import LLMCallScope
from tests.app.providers.test_real_providers import run_stream
from tests.fake_apis import FakeAPI
from tests.helpers import HarnessFactory, LiveServerFactory, attrs, make_settings


def backend_of(client: httpx.AsyncClient) -> object:
    transport = client._transport
    assert isinstance(transport, httpx.AsyncHTTPTransport)
    return transport._pool._network_backend


def test_the_llm_client_reads_through_the_asyncio_backend() -> None:
    chat = OpenAIChat(base_url="http://127.0.0.1:9/v1", api_key=None, model="m", timeout_s=5)
    assert isinstance(backend_of(chat.http_client), AsyncioBackend)
    # httpx's defaults otherwise: certificates checked, proxies from the environment.
    assert chat.http_client._trust_env
    assert isinstance(http_transport()._pool._ssl_context, ssl.SSLContext)


def test_the_llm_client_has_a_connection_for_every_session() -> None:
    settings = make_settings(
        llm_provider="openai", openai_base_url="http://127.0.0.1:9/v1", max_concurrent_sessions=250
    )
    llm = build_providers(settings).llm
    assert isinstance(llm, OpenAIChat)
    transport = llm.http_client._transport
    assert isinstance(transport, httpx.AsyncHTTPTransport)
    assert transport._pool._max_connections == 250


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every read through the backend."""
    sizes: list[int] = []
    read = AsyncioStream.read

    async def counted(self: AsyncioStream, max_bytes: int, timeout: float | None = None) -> bytes:
        data = await read(self, max_bytes, timeout)
        sizes.append(len(data))
        return data

    monkeypatch.setattr(AsyncioStream, "read", counted)
    return sizes


async def test_a_streamed_answer_arrives_whole_and_in_order(
    live_server: LiveServerFactory, reads: list[int]
) -> None:
    words = [f"w{n}" for n in range(50)]
    fake = FakeAPI(reply=" ".join(words), chunk_gap_s=0.002)
    async with live_server(fake.app()) as api:
        chat = OpenAIChat(base_url=f"{api.url}/v1", api_key="k", model="m", timeout_s=5)
        usage = LLMCallScope()
        request = LLMRequest(task="t", messages=(Message("user", "hi"),))
        parts = [p async for p in chat.stream(request, usage)]
        await chat.aclose()
    assert "".join(parts) == " ".join(words)
    assert usage.output_tokens == 50 and usage.response_model == "fake-gpt-2026-01-01"
    assert len(reads) >= 10  # read through the backend, chunk by chunk


async def test_a_model_that_stalls_mid_answer_times_out_within_its_bound(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    """No read timeout at the socket: the gap limit is the gateway's one timer per answer.
    The call fails with the limit named, the breaker counts it, the span says why."""
    fake = FakeAPI(reply=" ".join(f"w{n}" for n in range(20)), stall_after=3, stall_s=30)
    started = time.monotonic()
    h, events = await run_stream(
        harness_factory,
        live_server,
        fake,
        llm_idle_timeout_s=0.3,
        breaker_failure_threshold=1,
    )
    elapsed = time.monotonic() - started
    assert events[-1] == (
        "error",
        {"code": "LLM_ERROR", "message": "llm call timed out: no chunk for 0.3s"},
    )
    assert elapsed < 5  # the 0.3 s gap, not the provider's 30 s stall
    assert h.service.breakers["llm"].state is BreakerState.OPEN
    (chat,) = [s for s in h.telemetry.spans.get_finished_spans() if s.name.startswith("chat ")]
    assert chat.status.status_code.name == "ERROR"
    assert attrs(chat)["error.type"] == "StreamTimeout"
    (exception,) = [e for e in chat.events if e.name == "exception"]
    assert attrs(exception)["exception.message"] == "no chunk for 0.3s"
    assert h.telemetry.value("fit_check.llm.calls", model="gpt-test", status="error") == 1


# --- the backend against what httpx and httpcore expect -------------------------------


def client(**kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=http_transport(), **kwargs)


async def serve(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> tuple[asyncio.Server, int]:
    """A server on loopback that closes each connection once ``handle`` is done with it,
    however it ended (the client hung up first, the test's loop cancelled it)."""

    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went first
        finally:
            writer.close()

    server = await asyncio.start_server(closing, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_read_given_a_timeout_times_out_as_httpcores_did() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(5)
        writer.close()

    server, port = await serve(silent)
    async with server, client(timeout=httpx.Timeout(5, read=0.2)) as c:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await c.get(f"http://127.0.0.1:{port}/")
        assert time.monotonic() - started < 2


async def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with client() as c:
        with pytest.raises(httpx.ConnectError):
            await c.get(f"http://127.0.0.1:{port}/")


async def test_a_server_that_closes_mid_answer_is_an_error_not_a_short_answer() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")
        await writer.drain()
        writer.close()

    server, port = await serve(cut)
    async with server, client() as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get(f"http://127.0.0.1:{port}/")


async def test_a_reset_connection_is_a_read_error() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()  # RST, not FIN

    server, port = await serve(reset)
    async with server, client() as c, c.stream("GET", f"http://127.0.0.1:{port}/") as r:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            async for _ in r.aiter_raw():
                pass


async def test_a_reader_that_holds_back_slows_the_server_and_loses_nothing() -> None:
    """Past HIGH_WATER unread bytes the transport stops reading (TCP then slows the
    sender); reading on resumes it, and every byte arrives in order."""
    size = 4 * HIGH_WATER
    body = bytes(range(256)) * (size // 256)

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        writer.write(body)
        await writer.drain()
        writer.close()

    server, port = await serve(big)
    got = bytearray()
    async with server, client() as c, c.stream("GET", f"http://127.0.0.1:{port}/") as r:
        await asyncio.sleep(0.3)  # the whole body is sent meanwhile, or held back by TCP
        async for data in r.aiter_raw():
            got += data
            await asyncio.sleep(0)
    assert bytes(got) == body


async def test_kept_alive_connections_are_reused_and_dropped_once_the_server_closes_them() -> None:
    connections = 0

    async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        for _ in range(2):  # two requests, then the server closes the idle connection
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    server, port = await serve(keep_alive)
    async with server, client() as c:
        for _ in range(2):
            assert (await c.get(f"http://127.0.0.1:{port}/")).text == "ok"
        assert connections == 1
        await asyncio.sleep(0.2)  # the server has closed it: not reused, no error
        assert (await c.get(f"http://127.0.0.1:{port}/")).text == "ok"
        assert connections == 2


async def test_the_next_address_is_tried_when_one_refuses_or_hangs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Happy eyeballs, as anyio connected: uvloop's own connect tries one address after
    the other, each until it fails."""

    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server, port = await serve(ok)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    loop = asyncio.get_running_loop()
    info = (socket.AF_INET, socket.SOCK_STREAM, 6, "")
    refused = (*info, ("127.0.0.1", closed_port))
    hangs = (*info, ("127.0.0.3", port))
    good = (*info, ("127.0.0.1", port))
    connect = loop.sock_connect

    async def sock_connect(sock: socket.socket, address: Any) -> None:
        if address[0] == "127.0.0.3":
            await asyncio.sleep(30)  # an address whose packets are dropped
        await connect(sock, address)

    monkeypatch.setattr(loop, "sock_connect", sock_connect)
    async with server:
        started = time.monotonic()
        for infos in ([refused, good], [hangs, good]):
            sock = await _connect_first(loop, infos, None)
            assert sock.getpeername() == ("127.0.0.1", port)
            sock.close()
        assert time.monotonic() - started < 5


def test_an_ipv6_address_is_tried_first_then_an_ipv4_one() -> None:
    v4a = (socket.AF_INET, 1, 6, "", ("192.0.2.1", 1))
    v4b = (socket.AF_INET, 1, 6, "", ("192.0.2.2", 1))
    v6 = (socket.AF_INET6, 1, 6, "", ("2001:db8::1", 1, 0, 0))
    assert _happy_order([v4a, v4b, v6]) == [v6, v4a, v4b]
    assert _happy_order([v4a, v4b]) == [v4a, v4b]


# --- TLS: the loop's own ----------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a certificate with")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_a_streamed_answer_over_tls(certificate: tuple[Path, Path], reads: list[int]) -> None:
    """The loop's own TLS (``loop.start_tls``), and what httpcore asks of it (ALPN)."""
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def serve_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for n in range(20):
            data = b"data: %d\n\n" % n
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
            await asyncio.sleep(0.001)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve_tls, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    verify = ssl.create_default_context(cafile=str(cert))
    transport = httpx.AsyncHTTPTransport(verify=verify)
    transport._pool._network_backend = AsyncioBackend()
    async with (
        server,
        httpx.AsyncClient(transport=transport) as c,
        c.stream("GET", f"https://localhost:{port}/") as r,
    ):
        body = b"".join([d async for d in r.aiter_raw()])
        tls = r.extensions["network_stream"].get_extra_info("ssl_object")
    assert body == b"".join(b"data: %d\n\n" % n for n in range(20))
    assert isinstance(tls, ssl.SSLObject)
    assert len(reads) >= 5


async def test_a_certificate_that_does_not_check_out_is_a_connect_error(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hello, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    async with server, client() as c:  # the system's CAs: a self-signed one is refused
        with pytest.raises(httpx.ConnectError):
            await c.get(f"https://localhost:{port}/")


def test_a_stream_is_an_httpcore_network_stream() -> None:
    assert issubclass(AsyncioStream, httpcore.AsyncNetworkStream)
