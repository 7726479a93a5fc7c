"""The LLM client's network backend: httpx and httpcore as usual, on asyncio's own
transports and protocols instead of anyio's streams.

httpcore's default backend wraps every read of the socket in ``anyio.fail_after(timeout)``
and ``map_exceptions``, even with no read timeout (``fail_after(None)`` still enters a
cancel scope and looks the current task up several times), and anyio's ``receive`` pauses
the transport after each read and resumes it before the next. A streamed answer is one
read per chunk, so all of that is a cost per chunk (docs/performance.md, "Relaying a
chunk"). Here a read takes what the protocol has buffered, or waits on one future; and a
TLS connection uses the loop's own TLS (native code in uvloop) instead of anyio's TLS
stream, written in Python.

Timeouts keep their meaning: a read or write given a timeout gets an ``asyncio.timeout``
for that call, and raises ``httpcore.ReadTimeout`` / ``WriteTimeout`` as before. The LLM
client gives reads none (``read=None``): a streamed answer's limits (first chunk, gap
between chunks, whole answer) are the gateway's, one timer per answer
(``app.resilience.stream_timeouts``). Connecting (happy eyeballs, as anyio does it) and the
TLS handshake keep theirs.

Reading is not paused between reads: the protocol buffers what arrives and pauses the
transport only past ``HIGH_WATER`` bytes that nobody has read (a caller holding the
answer back), so the provider is still slowed by TCP's flow control once the service
stops reading.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Iterable
from typing import Any, cast

import anyio
import httpcore
import httpx

#: Unread bytes past which the transport stops reading, and below which it reads again.
HIGH_WATER = 262_144
LOW_WATER = 65_536
#: RFC 8305's delay before the next address is tried while one is still connecting.
HAPPY_EYEBALLS_DELAY_S = 0.25

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class _Protocol(asyncio.Protocol):
    """Buffers what the transport receives for ``AsyncioStream.read``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        #: A read waiting for data (or for the end of the stream).
        self.waiter: asyncio.Future[None] | None = None
        self.eof = False
        self.error: Exception | None = None
        self.reading_paused = False
        #: Set while the transport's write buffer is over its limit.
        self.writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream's: it reads and writes

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        self._wake()
        if self.buffered > HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> None:
        self.eof = True
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None:
            self.error = exc
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        writable, self.writable = self.writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection: an asyncio transport and the protocol that buffers its data."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, protocol: _Protocol
    ) -> None:
        self._loop = loop
        self._transport = transport
        self._protocol = protocol
        self._closed = False

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        chunks = protocol.chunks
        if not chunks:
            if protocol.eof or self._closed:
                return self._end_of_stream()
            waiter = self._loop.create_future()
            protocol.waiter = waiter
            try:
                if timeout is None:
                    await waiter
                else:
                    async with asyncio.timeout(timeout):
                        await waiter
            except TimeoutError as exc:
                raise httpcore.ReadTimeout(f"nothing to read for {timeout:g}s") from exc
            finally:
                protocol.waiter = None
            if not chunks:
                return self._end_of_stream()
        data = chunks.popleft()
        if len(data) > max_bytes:
            chunks.appendleft(data[max_bytes:])
            data = data[:max_bytes]
        protocol.buffered -= len(data)
        if protocol.reading_paused and protocol.buffered <= LOW_WATER:
            protocol.reading_paused = False
            self._transport.resume_reading()
        return data

    def _end_of_stream(self) -> bytes:
        """The peer closed: b"" (httpcore's end of stream), or the error that closed it."""
        if self._closed:
            raise httpcore.ReadError("the connection is closed")
        error = self._protocol.error
        if error is not None:
            raise httpcore.ReadError(str(error) or type(error).__name__) from error
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        protocol = self._protocol
        if self._closed or protocol.eof or self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(buffer)
        writable = protocol.writable
        if writable is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(writable)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(f"could not write for {timeout:g}s") from exc
        if protocol.error is not None or self._transport.is_closing():
            raise httpcore.WriteError("the connection closed while writing")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Without TLS's closing handshake, as httpcore's anyio backend does: nothing is read
        # from a connection that is closed.
        if self._transport.get_extra_info("ssl_object") is not None:
            self._transport.abort()
        else:
            self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                transport = await self._loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError as exc:
            self._transport.abort()
            raise httpcore.ConnectTimeout(f"no TLS handshake within {timeout:g}s") from exc
        except OSError as exc:  # ssl.SSLError included
            self._transport.abort()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        if transport is None:  # pragma: no cover - only for a server-side protocol
            raise httpcore.ConnectError("the TLS handshake did not complete")
        self._protocol.transport = transport
        return AsyncioStream(self._loop, transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        if info == "is_readable":
            # An idle connection with something to read has been closed by the server
            # (or broke the protocol): httpcore then drops it instead of reusing it.
            return bool(self._protocol.chunks) or self._protocol.eof
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend on the running asyncio loop (uvloop in production)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                sock = await _connect(loop, host, port, local_address)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"no connection within {timeout:g}s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
            transport, protocol = await loop.create_connection(_Protocol, sock=sock)
        except BaseException as exc:
            sock.close()
            if isinstance(exc, OSError):
                raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
            raise
        return AsyncioStream(loop, transport, protocol)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_unix_connection(_Protocol, path)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"no connection within {timeout:g}s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(loop, transport, protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connect(
    loop: asyncio.AbstractEventLoop, host: str, port: int, local_address: str | None
) -> socket.socket:
    """A connected non-blocking socket to ``host``: its addresses tried as anyio's
    ``connect_tcp`` tries them (RFC 8305: an IPv6 address first, then IPv4, the next one
    started when the previous failed or after ``HAPPY_EYEBALLS_DELAY_S``; the first to
    connect wins and the others are cancelled). uvloop's ``create_connection`` has no happy
    eyeballs: a host whose IPv6 route drops packets would cost the whole connect timeout."""
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return await _connect_first(loop, infos, local_address)


async def _connect_first(
    loop: asyncio.AbstractEventLoop, infos: list[tuple[Any, ...]], local_address: str | None
) -> socket.socket:
    """The first of ``infos`` (``getaddrinfo``'s) to connect, in ``_happy_order``."""
    connected: socket.socket | None = None
    errors: list[OSError] = []

    async def attempt(info: tuple[Any, ...], done: anyio.Event) -> None:
        nonlocal connected
        family, kind, proto, _, address = info
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            if local_address:
                sock.bind((local_address, 0))
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            return
        except BaseException:
            sock.close()
            raise
        finally:
            done.set()
        if connected is None:
            connected = sock
            group.cancel_scope.cancel()
        else:  # pragma: no cover - two connected in the same instant
            sock.close()

    try:
        async with anyio.create_task_group() as group:
            for info in _happy_order(infos):
                done = anyio.Event()
                group.start_soon(attempt, info, done)
                with anyio.move_on_after(HAPPY_EYEBALLS_DELAY_S):
                    await done.wait()
    except BaseException:
        # Cancelled (a drain, a client gone) after an attempt connected: nobody else has it.
        if connected is not None:
            connected.close()
        raise
    if connected is None:
        if len(errors) == 1:
            raise errors[0]
        raise OSError(f"all {len(errors)} connection attempts failed: {errors}")
    return connected


def _happy_order(infos: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The first IPv6 address, then the first IPv4 one, then the rest (anyio's order)."""
    first_v6 = next((i for i in infos if i[0] == socket.AF_INET6), None)
    first_v4 = next((i for i in infos if i[0] == socket.AF_INET), None)
    head = [i for i in (first_v6, first_v4) if i is not None]
    return head + [i for i in infos if i not in head]


def http_transport(max_connections: int = 100) -> httpx.AsyncHTTPTransport:
    """httpx's default transport (as ``httpx.AsyncClient()`` makes it: certificate checks,
    proxies from the environment, default keep-alive) on ``AsyncioBackend``, with room for
    ``max_connections`` requests at once (httpx's default is 100: a call past it waits for
    a connection before it is even sent)."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=20)
    transport = httpx.AsyncHTTPTransport(limits=limits)
    pool = transport._pool
    if not isinstance(pool, httpcore.AsyncConnectionPool):  # pragma: no cover - httpx changed
        raise TypeError(f"httpx's transport holds a {type(pool).__name__}, not a connection pool")
    # httpx has no parameter for httpcore's network backend; the pool reads this attribute
    # for each new connection (tests/app/providers/test_asyncio_backend.py checks it is used).
    pool._network_backend = AsyncioBackend()
    return transport
