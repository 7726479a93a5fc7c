"""The HTTP server: uvicorn, with the transport limits and the drain it lacks.

* **Header limits.** uvicorn's httptools protocol buffers request headers without bound
  and without a deadline: a 64 MB header stalled the event loop for seconds, and sockets
  that never finish their headers were held forever (slowloris). Here headers past
  ``max_header_bytes`` get ``431``, headers unfinished after ``header_timeout_s`` get
  ``408``, and a connection that sends nothing is closed after the same time.
* **HTTP/1.0.** httptools' protocol frames every body of unknown length as chunked, which
  HTTP/1.0 does not have; such a body is sent as is and ended by closing the connection.
* **Draining.** On the first SIGTERM or SIGINT the service drains (``FitCheckService.drain``:
  ``/ready`` turns 503, new streams get 503, streams in flight get the grace period, then
  a ``SHUTTING_DOWN`` event) and only then does uvicorn shut down: close the listeners,
  wait briefly for what is left, run the lifespan shutdown (telemetry flush). A second
  signal skips the rest of the drain; a third SIGINT forces the exit, as in uvicorn.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from app.rejections import RejectionReason

log = logging.getLogger("fit_check.server")

#: How long a refused connection is read from (and what arrives discarded) before it closes.
LINGER_S = 1.0
#: What uvicorn waits for after the drain (all streams have ended by then: this is for
#: requests still sending their body) before it cancels them.
AFTER_DRAIN_WAIT_S = 0.5


def _json_error(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"code": code, "message": message, "errors": []}).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on header bytes and a deadline on headers.

    ``guarded_protocol`` makes a subclass with the limits set; uvicorn instantiates it
    once per connection.
    """

    max_header_bytes = 32_768
    header_timeout_s = 10.0
    on_reject: Callable[[RejectionReason], None] = staticmethod(lambda _reason: None)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # [override]: uvicorn narrows asyncio.Protocol's BaseTransport to Transport, as here.
        super().connection_made(transport)
        self._refused = False
        self._reading_headers = True
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._reading_headers:
            # Counted before parsing: httptools would buffer a huge header whole.
            self._header_bytes += len(data)
            if self._header_timer is None:
                self._arm_header_timer()
        super().data_received(data)
        if (
            self._reading_headers
            and self._header_bytes > self.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._refuse(431, "Request Header Fields Too Large", "header_too_large")

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._disarm_header_timer()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_header_bytes:
            # All of it arrived in one read: the count above never saw it unfinished.
            self._refuse(431, "Request Header Fields Too Large", "header_too_large")
            return
        super().on_headers_complete()
        if self.scope["http_version"] == "1.0" and self.cycle is not None:
            # The ASGI task is created but has not run yet: its `send` is looked up later.
            self.cycle.__class__ = _CloseDelimitedCycle

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        super().on_message_complete()
        self._reading_headers = True  # what comes next is the next request's headers
        self._header_bytes = 0

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self._reading_headers or self.transport.is_closing():
            return
        if self._header_bytes == 0:
            self.transport.close()  # connected and said nothing: nobody to answer
            return
        self._refuse(408, "Request Timeout", "header_timeout")

    def _refuse(self, status: int, phrase: str, reason: RejectionReason) -> None:
        self._refused = True  # the parser's remaining callbacks for this data do nothing
        self._disarm_header_timer()
        self.on_reject(reason)
        if self.cycle is None or self.cycle.response_complete:
            message = (
                f"request headers exceed {self.max_header_bytes} bytes"
                if status == 431
                else f"request headers not received within {self.header_timeout_s:g}s"
            )
            self.transport.write(_json_error(status, phrase, reason.upper(), message))
        self._close_lingering()

    def _close_lingering(self) -> None:
        """Closing a socket with unread bytes in it sends a reset, which can destroy the
        answer before the client reads it. So: send the answer and a FIN, discard what
        still arrives (``data_received`` ignores it), and close for good shortly after."""
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(LINGER_S, transport.close)
        else:
            transport.close()


class _CloseDelimitedCycle(RequestResponseCycle):
    """HTTP/1.0 has no chunked encoding: a body of unknown length is written as is and
    ends when the connection closes (RFC 9112, 6.3). uvicorn closes HTTP/1.0 connections
    after the response and says ``connection: close`` already."""

    _close_delimited = False

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start" and not self.response_started:
            names = {name.lower() for name, _ in message.get("headers", [])}
            if not names & {b"content-length", b"transfer-encoding"}:
                self._close_delimited = True
                self.chunked_encoding = False
                self.expected_content_length = sys.maxsize
        elif (
            message["type"] == "http.response.body"
            and self._close_delimited
            and not message.get("more_body", False)
        ):
            self.expected_content_length = len(message.get("body", b""))
        await super().send(message)


def guarded_protocol(
    *,
    max_header_bytes: int,
    header_timeout_s: float,
    on_reject: Callable[[RejectionReason], None],
) -> type[GuardedHttpToolsProtocol]:
    return type(
        "FitCheckHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "max_header_bytes": max_header_bytes,
            "header_timeout_s": header_timeout_s,
            "on_reject": staticmethod(on_reject),
        },
    )


class DrainingServer(uvicorn.Server):
    """uvicorn that drains the service before it shuts down (see the module docstring)."""

    def __init__(
        self, config: uvicorn.Config, *, drain: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        super().__init__(config)
        self._drain = drain
        self._exit_signal: int | None = None
        self._drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._exit_signal is None:
            self._exit_signal = sig  # picked up by the next tick, in the event loop
            return
        super().handle_exit(sig, frame)

    def request_drain(self) -> None:
        """As a SIGTERM does (for tests and embedding)."""
        self.handle_exit(signal.SIGTERM, None)

    async def on_tick(self, counter: int) -> bool:
        if self._exit_signal is not None and not self.should_exit:
            if self._drain_task is None:
                self._drain_task = asyncio.create_task(self._drain(), name="fit-check drain")
            elif self._drain_task.done():
                super().handle_exit(self._exit_signal, None)
        return await super().on_tick(counter)


def server_config(
    app: Any,
    *,
    host: str,
    port: int,
    max_header_bytes: int,
    header_timeout_s: float,
    on_reject: Callable[[RejectionReason], None],
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(
            max_header_bytes=max_header_bytes,
            header_timeout_s=header_timeout_s,
            on_reject=on_reject,
        ),
        log_config=None,
        proxy_headers=False,
        lifespan="on",
        # [arg-type]: typed int, used as asyncio.wait_for's timeout, where a float works.
        timeout_graceful_shutdown=AFTER_DRAIN_WAIT_S,  # type: ignore[arg-type]
    )
