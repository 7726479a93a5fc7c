"""One pipelined connection to Redis for a producer's frequent calls (its writes, lease
renewals and reader checks), on hiredis directly.

redis-py's asyncio client spends most of a paced stream's relay cost on these calls: its
connection pool, lock, encoder and parser run in Python for every call, and a paced stream
makes one call every few chunks (docs/performance.md, "The shared session log"). hiredis
(the C parser redis-py itself uses) packs each command and parses each answer; what is
left here is keeping the answers in the order of the calls, and connecting again after a
connection is lost. Everything else (admission, readers, the health probe) stays on
redis-py, with its tracing.

A ``rediss://`` URL (TLS, with its certificate options) is not handled here:
:func:`fast_caller` gives redis-py's own call for it.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

#: ``call(*command)``: a command's answer, or a redis-py exception.
Call = Callable[..., Awaitable[Any]]


class _Replies(asyncio.Protocol):
    """A connection's answers, handed to its calls in order (a call whose caller gave up
    keeps its place, so the answers after it stay aligned).

    Every call is bounded by ``timeout_s``: one timer per connection watches the oldest
    call (a timer per call, or ``asyncio.timeout``, would cost more than the call itself),
    and when that call is late every call on the connection fails and the connection is
    dropped, so a stalled server's backlog is not waited on."""

    def __init__(self, timeout_s: float) -> None:
        self.transport: asyncio.Transport | None = None
        self._timeout_s = timeout_s
        self._reader = hiredis.Reader()
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream socket's

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            waiter, _ = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(RedisConnectionError("connection to Redis lost"))

    def _fail(self, error: Exception) -> None:
        while self._waiting:
            waiter, _ = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def _watch(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        loop = asyncio.get_running_loop()
        deadline = self._waiting[0][1]
        if deadline > loop.time():
            self._watchdog = loop.call_at(deadline, self._watch)
            return
        self._fail(RedisTimeoutError(f"Redis did not answer in {self._timeout_s} s"))
        if self.transport is not None:
            self.transport.abort()
            self.transport = None

    def send(self, command: tuple[EncodableT, ...]) -> asyncio.Future[Any]:
        transport = self.transport
        if transport is None:
            raise RedisConnectionError("connection to Redis lost")
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiting.append((waiter, loop.time() + self._timeout_s))
        if self._watchdog is None:
            self._watchdog = loop.call_later(self._timeout_s, self._watch)
        # cast: hiredis' stub types the command as a tuple of one item.
        transport.write(hiredis.pack_command(cast(Any, command)))
        return waiter


class RedisPipe:
    """Calls on one connection, opened on first use and again after it is lost; each
    bounded by ``timeout_s`` (connecting included)."""

    def __init__(self, options: dict[str, Any], timeout_s: float) -> None:
        self._options = options
        self._timeout_s = timeout_s
        self._replies: _Replies | None = None
        self._connecting: asyncio.Lock | None = None

    async def call(self, *command: EncodableT) -> Any:
        replies = self._replies
        if replies is None or replies.transport is None:
            replies = await self._connect()
        reply = await replies.send(command)
        if isinstance(reply, hiredis.ReplyError):
            message = str(reply)
            if message.startswith("NOSCRIPT"):
                raise NoScriptError(message)
            raise ResponseError(message)
        return reply

    def disconnect(self) -> None:
        replies = self._replies
        self._replies = None
        if replies is not None and replies.transport is not None:
            replies.transport.abort()

    async def _connect(self) -> _Replies:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting, asyncio.timeout(self._timeout_s):
            replies = self._replies
            if replies is not None and replies.transport is not None:
                return replies  # another call connected meanwhile
            loop = asyncio.get_running_loop()
            options = self._options

            def protocol() -> _Replies:
                return _Replies(self._timeout_s)

            try:
                if "path" in options:
                    _, replies = await loop.create_unix_connection(protocol, options["path"])
                else:
                    _, replies = await loop.create_connection(
                        protocol, options.get("host", "localhost"), options.get("port", 6379)
                    )
            except OSError as exc:
                raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
            setup: list[asyncio.Future[Any]] = []
            if options.get("password") is not None:
                user = options.get("username")
                password = options["password"]
                credentials = (password,) if user is None else (user, password)
                setup.append(replies.send(("AUTH", *credentials)))
            if options.get("db"):
                setup.append(replies.send(("SELECT", options["db"])))
            for waiter in setup:
                reply = await waiter
                if isinstance(reply, hiredis.ReplyError):
                    if replies.transport is not None:
                        replies.transport.abort()
                    raise ResponseError(str(reply))
            self._replies = replies
            return replies


def fast_caller(url: str, client: Redis, timeout_s: float) -> tuple[Call, Callable[[], None]]:
    """The call to use for frequent commands to ``url``, bounded by ``timeout_s``, and how
    to close its connection: a :class:`RedisPipe`, or, for a TLS URL, ``client``'s own
    (bounded by the client's socket timeout)."""
    options = parse_url(url)
    if "connection_class" in options and "path" not in options:
        return client.execute_command, lambda: None
    pipe = RedisPipe(dict(options), timeout_s)
    return pipe.call, pipe.disconnect
