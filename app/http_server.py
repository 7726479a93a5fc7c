"""The HTTP server: uvicorn with the guarded protocol (``app.uvicorn_protocol``) and the
drain it lacks.

**Draining.** On the first SIGTERM or SIGINT the service drains (``FitCheckService.drain``:
``/ready`` turns 503, new streams get 503, streams in flight get the grace period, then a
``SHUTTING_DOWN`` event) and only then does uvicorn shut down: close the listeners, wait
briefly for what is left, run the lifespan shutdown (telemetry flush). A repeated SIGTERM
changes nothing (as in uvicorn): every stream still gets its terminal event. A SIGINT
after the first signal forces the exit, as a second Ctrl-C does in uvicorn: streams are
cut without their terminal event and telemetry is not flushed. This uses uvicorn's
``Server`` through its overridable ``handle_exit`` and ``on_tick``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine, Sequence
from types import FrameType
from typing import Any

import uvicorn

from app.host_names import HostAllowList
from app.rejections import RejectionReason
from app.uvicorn_protocol import GuardedHttpToolsProtocol, guarded_protocol

log = logging.getLogger("fit_check.server")

#: What uvicorn waits for after the drain (all streams have ended by then: this is for
#: requests still sending their body) before it cancels them.
AFTER_DRAIN_WAIT_S = 0.5


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
