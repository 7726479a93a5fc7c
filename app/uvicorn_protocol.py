"""uvicorn's httptools protocol with the transport limits it lacks.

**Bound to uvicorn's internals, on purpose, and only here.** uvicorn has no option for
what this adds, and an ASGI middleware runs too late for it (after headers are parsed and
buffered whole, after the answer to an HTTP/1.0 request is framed), so this subclasses
``HttpToolsProtocol`` and, for HTTP/1.0, swaps the class of the request's
``RequestResponseCycle``. Both are uvicorn's private classes: the version range in
pyproject.toml is the one this was written against, and
``tests/app/test_uvicorn_protocol.py`` names every internal attribute and method used here,
so an upgrade that moves one fails there, loudly, before any behaviour test does.

* **Header limits.** uvicorn's httptools protocol buffers request headers without bound
  and without a deadline: a 64 MB header stalled the event loop for seconds, and sockets
  that never finish their headers were held forever (slowloris). Here headers past
  ``max_header_bytes`` get ``431``, headers unfinished after ``header_timeout_s`` get
  ``408``, and a connection that sends nothing is closed after the same time.
* **Body deadline.** A body unfinished ``body_timeout_s`` after its headers gets ``408``
  (or, once an answer has started, its connection is closed): a body sent a byte at a
  time holds no connection for longer. Time the server itself stops reading (a request
  queued behind another on the connection) does not count against the client.
* **Host names** (``app.host_names``): any ``Host`` outside the allow-list gets ``421``.
  Callers without a socket (tests, benchmarks calling the app in process) are not
  browsers and are not checked.
* **One error shape.** Every refusal here is JSON ``{"code", "message", "errors"}``, as the
  app's are: an unparsable request gets ``400`` ``BAD_REQUEST`` instead of uvicorn's
  plain-text one.
* **HTTP/1.0.** httptools' protocol frames every body of unknown length as chunked, which
  HTTP/1.0 does not have; such a body is sent as is and ended by closing the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from app.host_names import HostAllowList
from app.models import error_json
from app.rejections import RejectionReason

#: How long a refused connection is read from (and what arrives discarded) before it closes.
LINGER_S = 1.0


def _json_error(status: int, code: str, message: str) -> bytes:
    body = error_json(code, message)
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with caps and deadlines on headers and body, a
    ``Host`` allow-list, and its refusals in the API's JSON shape.

    ``guarded_protocol`` makes a subclass with the limits set; uvicorn instantiates it
    once per connection.
    """

    max_header_bytes = 32_768
    header_timeout_s = 10.0
    body_timeout_s = 10.0
    hosts = HostAllowList("127.0.0.1", ())
    on_reject: Callable[[RejectionReason], None] = staticmethod(lambda _reason: None)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # [override]: uvicorn narrows asyncio.Protocol's BaseTransport to Transport, as here.
        super().connection_made(transport)
        self._refused = False
        self._reading_headers = True
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_timers()
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
        if self._refused or self.transport.is_closing():
            return
        if self._reading_headers:
            if self._header_bytes > self.max_header_bytes:
                self._refuse(431, "header_too_large")
        elif self._body_timer is None:
            # A request's headers are in and its body is not (all of it would have ended
            # the message, and ``on_message_complete`` sets ``_reading_headers``).
            self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_too_slow)

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_header_bytes:
            # All of it arrived in one read: the count above never saw it unfinished.
            self._refuse(431, "header_too_large")
            return
        if not all(self.hosts.allows(value) for name, value in self.headers if name == b"host"):
            self._refuse(421, "host_not_allowed")
            return
        self._reading_headers = False
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
        self._disarm_body_timer()
        super().on_message_complete()
        self._reading_headers = True  # what comes next is the next request's headers
        self._header_bytes = 0

    def send_400_response(self, msg: str) -> None:
        """httptools could not parse the request (uvicorn answers in plain text)."""
        if not self._refused:
            self._refuse(400, "malformed_request")

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _disarm_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _disarm_timers(self) -> None:
        self._disarm_header_timer()
        self._disarm_body_timer()

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self._reading_headers or self.transport.is_closing():
            return
        if self._header_bytes == 0:
            self.transport.close()  # connected and said nothing: nobody to answer
            return
        self._refuse(408, "header_timeout")

    def _body_too_slow(self) -> None:
        self._body_timer = None
        if self._reading_headers or self._refused or self.transport.is_closing():
            return
        if self.flow.read_paused or self.pipeline:
            # The server stopped reading (a body the app has not taken yet), or this request
            # waits behind another one on the connection (whose app may resume reading to
            # watch for a disconnect): not the client's time, it does not count.
            self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_too_slow)
            return
        self._refuse(408, "body_timeout")

    def _refuse(self, status: int, reason: RejectionReason) -> None:
        """Answer ``status`` (unless that would garble a response already on its way),
        then close the connection."""
        self._refused = True  # the parser's remaining callbacks for this data do nothing
        self._disarm_timers()
        cycle = self.cycle
        if self._reading_headers or cycle is None:
            # A new request's headers: `cycle` is the one before it, maybe still answering.
            counted = True
            answer = cycle is None or cycle.response_complete
        else:
            # This request's body: answered unless its response has started (or another
            # request's response is still ahead of it on the connection).
            answer = not cycle.response_started and not self.pipeline
            counted = not cycle.response_complete
        if counted:
            self.on_reject(reason)
        if answer:
            self.transport.write(_json_error(status, *self._explain(reason)))
        if cycle is not None and not cycle.response_complete:
            # Its app sees a client that left: what it sends from now on goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        self._close_lingering()

    def _explain(self, reason: RejectionReason) -> tuple[str, str]:
        """The answer's code and message; the client's input is never echoed."""
        if reason == "header_too_large":
            return "HEADER_TOO_LARGE", f"request headers exceed {self.max_header_bytes} bytes"
        if reason == "header_timeout":
            return "HEADER_TIMEOUT", (
                f"request headers not received within {self.header_timeout_s:g}s"
            )
        if reason == "body_timeout":
            return "BODY_TIMEOUT", f"request body not received within {self.body_timeout_s:g}s"
        if reason == "host_not_allowed":
            return "HOST_NOT_ALLOWED", (
                "this server does not answer to that Host name (loopback names, HOST and "
                "FIT_CHECK_ALLOWED_HOSTS)"
            )
        return "BAD_REQUEST", "the request is not valid HTTP/1.1"

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
        elif message["type"] == "http.response.body" and self._close_delimited:
            # No length to keep to: each message is all uvicorn expects until the next.
            self.expected_content_length = len(message.get("body", b""))
        await super().send(message)


def guarded_protocol(
    *,
    max_header_bytes: int,
    header_timeout_s: float,
    body_timeout_s: float,
    hosts: HostAllowList,
    on_reject: Callable[[RejectionReason], None],
) -> type[GuardedHttpToolsProtocol]:
    return type(
        "FitCheckHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "max_header_bytes": max_header_bytes,
            "header_timeout_s": header_timeout_s,
            "body_timeout_s": body_timeout_s,
            "hosts": hosts,
            "on_reject": staticmethod(on_reject),
        },
    )
