"""The HTTP server: uvicorn, with the transport limits and the drain it lacks.

* **Header limits.** uvicorn's httptools protocol buffers request headers without bound
  and without a deadline: a 64 MB header stalled the event loop for seconds, and sockets
  that never finish their headers were held forever (slowloris). Here headers past
  ``max_header_bytes`` get ``431``, headers unfinished after ``header_timeout_s`` get
  ``408``, and a connection that sends nothing is closed after the same time.
* **Body deadline.** A body unfinished ``body_timeout_s`` after its headers gets ``408``
  (or, once an answer has started, its connection is closed): a body sent a byte at a
  time holds no connection for longer. Time the server itself stops reading (a request
  queued behind another on the connection) does not count against the client.
* **Host names.** A page on any site can make a browser send requests to this instance
  under a name the page controls (DNS rebinding): the ``Host`` header then carries that
  name. Only loopback names, ``HOST`` (unless it is a wildcard address) and
  ``allowed_hosts`` are answered; any other ``Host`` gets ``421``. Checked here, before
  the app runs, so every route is covered; callers without a socket (tests, benchmarks
  calling the app in process) are not browsers and are not checked.
* **One error shape.** Every refusal of the server is JSON ``{"code", "message",
  "errors"}``, as the app's are: an unparsable request gets ``400`` ``BAD_REQUEST``
  instead of uvicorn's plain-text one.
* **HTTP/1.0.** httptools' protocol frames every body of unknown length as chunked, which
  HTTP/1.0 does not have; such a body is sent as is and ended by closing the connection.
* **Draining.** On the first SIGTERM or SIGINT the service drains (``FitCheckService.drain``:
  ``/ready`` turns 503, new streams get 503, streams in flight get the grace period, then
  a ``SHUTTING_DOWN`` event) and only then does uvicorn shut down: close the listeners,
  wait briefly for what is left, run the lifespan shutdown (telemetry flush). A repeated
  SIGTERM changes nothing (as in uvicorn): every stream still gets its terminal event. A
  SIGINT after the first signal forces the exit, as a second Ctrl-C does in uvicorn:
  streams are cut without their terminal event and telemetry is not flushed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
from collections.abc import Callable, Coroutine, Sequence
from http import HTTPStatus
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from app.models import error_json
from app.rejections import RejectionReason

log = logging.getLogger("fit_check.server")

#: How long a refused connection is read from (and what arrives discarded) before it closes.
LINGER_S = 1.0
#: What uvicorn waits for after the drain (all streams have ended by then: this is for
#: requests still sending their body) before it cancels them.
AFTER_DRAIN_WAIT_S = 0.5
#: ``HOST`` values that name no host: listening on every address.
_WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::", "[::]"})


def _json_error(status: int, code: str, message: str) -> bytes:
    body = error_json(code, message)
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


def _split_host(value: str) -> tuple[str, str | None]:
    """``name[:port]`` -> (lower-case name without a trailing dot, port or None);
    ``[::1]:8000`` -> ("::1", "8000")."""
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    else:
        name, port = value, None
    return name.rstrip(".").lower(), port


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostAllowList:
    """The ``Host`` names this instance answers to: loopback (``localhost``, 127.0.0.0/8,
    ``::1``) on any port, ``host`` (what it listens on) unless that is a wildcard address,
    and each entry of ``allowed``: ``name`` (any port), ``name:port``, ``*.suffix`` (any
    name under it), or ``*`` (any Host at all: a proxy in front checks it)."""

    def __init__(self, host: str, allowed: Sequence[str]) -> None:
        entries = [_split_host(entry.strip()) for entry in allowed if entry.strip()]
        if host not in _WILDCARD_ADDRESSES:
            entries.append(_split_host(host.strip("[]") if ":" in host else host))
        self._any = any(name == "*" for name, _ in entries)
        self._names = frozenset(name for name, port in entries if port is None)
        self._names_with_port = frozenset(
            (name, port) for name, port in entries if port is not None
        )
        self._suffixes = tuple(name[1:] for name, _ in entries if name.startswith("*."))

    def allows(self, value: bytes) -> bool:
        if self._any:
            return True
        try:
            name, port = _split_host(value.decode("ascii"))
        except UnicodeDecodeError:
            return False
        return (
            name in self._names
            or (name, port) in self._names_with_port
            or (bool(self._suffixes) and name.endswith(self._suffixes))
            or _is_loopback(name)
        )


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


class DrainingServer(uvicorn.Server):
    """uvicorn that drains the service before it shuts down (see the module docstring)."""

    def __init__(
        self, config: uvicorn.Config, *, drain: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        super().__init__(config)
        self._drain = drain
        self._exit_signal: int | None = None
        self._drain_task: asyncio.Task[None] | None = None
        #: uvicorn raises the signals it handled again once it has stopped (so the process
        #: ends as that signal says): not when the drain was asked for by a call.
        self._raise_again = True
        self._repeated_signals = 0
        self._repeats_logged = 0

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._exit_signal is None:
            self._exit_signal = sig  # picked up by the next tick, in the event loop
        elif sig == signal.SIGINT:
            # A second Ctrl-C: uvicorn's forced exit (it needs `should_exit` set first).
            self.should_exit = True
            super().handle_exit(sig, frame)
        else:
            # Cutting the drain short would cut streams without their terminal event.
            self._repeated_signals += 1  # logged by the next tick: not in a signal handler

    def request_drain(self) -> None:
        """As a SIGTERM does (for tests and embedding), but with no SIGTERM raised in the
        process once the server has stopped."""
        if self._exit_signal is None:
            self._raise_again = False
        self.handle_exit(signal.SIGTERM, None)

    async def on_tick(self, counter: int) -> bool:
        if self._repeated_signals > self._repeats_logged:
            self._repeats_logged = self._repeated_signals
            log.warning(
                "Already shutting down: streams in flight still get their grace period and "
                "terminal event (a SIGINT forces the exit)"
            )
        if self._exit_signal is not None and not self.should_exit:
            if self._drain_task is None:
                self._drain_task = asyncio.create_task(self._drain(), name="fit-check drain")
            elif self._drain_task.done() and self._raise_again:
                super().handle_exit(self._exit_signal, None)
            elif self._drain_task.done():
                self.should_exit = True
        return await super().on_tick(counter)


def server_config(
    app: Any,
    *,
    host: str,
    port: int,
    max_header_bytes: int,
    header_timeout_s: float,
    on_reject: Callable[[RejectionReason], None],
    body_timeout_s: float = GuardedHttpToolsProtocol.body_timeout_s,
    allowed_hosts: Sequence[str] = (),
    forwarded_allow_ips: Sequence[str] = (),
) -> uvicorn.Config:
    """uvicorn's configuration with the limits above; ``allowed_hosts`` are the ``Host``
    names answered besides loopback and ``host``; requests from ``forwarded_allow_ips``
    (proxies) are taken to come from the client their ``X-Forwarded-For`` names, which
    the per-client session limit counts (uvicorn's proxy headers support)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(
            max_header_bytes=max_header_bytes,
            header_timeout_s=header_timeout_s,
            body_timeout_s=body_timeout_s,
            hosts=HostAllowList(host, allowed_hosts),
            on_reject=on_reject,
        ),
        log_config=None,
        proxy_headers=bool(forwarded_allow_ips),
        forwarded_allow_ips=list(forwarded_allow_ips) or None,
        lifespan="on",
        # [arg-type]: typed int, used as asyncio.wait_for's timeout, where a float works.
        timeout_graceful_shutdown=AFTER_DRAIN_WAIT_S,  # type: ignore[arg-type]
    )
