"""Helpers the tests share: settings, an app per test, a real server, SSE parsing, polling."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette

from app.config import Settings
from app.http_server import DrainingServer, server_config
from app.providers.factory import Providers
from app.service import FitCheckService
from otel.testing import CapturedTelemetry

#: (event, data) pairs of an SSE body.
Events = list[tuple[str, dict[str, Any]]]


def make_settings(**overrides: Any) -> Settings:
    """Settings for a test: defaults plus overrides, ignoring any .env file."""
    return Settings(_env_file=None, **overrides)


@dataclass
class Harness:
    app: FastAPI
    telemetry: CapturedTelemetry
    settings: Settings

    @property
    def service(self) -> FitCheckService:
        service: FitCheckService = self.app.state.service
        return service


class HarnessFactory(Protocol):
    def __call__(self, *, providers: Providers | None = None, **overrides: Any) -> Harness: ...


def in_process_client(app: FastAPI) -> httpx.AsyncClient:
    """A client that calls the app directly (no sockets); the response is read whole."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def _no_drain() -> None:
    return None


class LiveServer:
    """The service's own server (limits, drain) on 127.0.0.1, in the test's event loop."""

    def __init__(self, app: Starlette) -> None:
        service: FitCheckService | None = getattr(app.state, "service", None)  # None: a fake API
        settings = service.settings if service is not None else make_settings()
        config = server_config(
            app,
            host="127.0.0.1",
            port=0,
            max_header_bytes=settings.max_header_bytes,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            allowed_hosts=settings.allowed_hosts,
            forwarded_allow_ips=settings.forwarded_allow_ips,
            on_reject=service.telemetry.rejected if service is not None else lambda _r: None,
        )
        self.server = DrainingServer(config, drain=service.drain if service else _no_drain)
        self._task: asyncio.Task[None] | None = None
        self.port = 0
        self.url = ""

    async def __aenter__(self) -> LiveServer:
        self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        self.port = int(self.server.servers[0].sockets[0].getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)


LiveServerFactory = type[LiveServer]


class Live(NamedTuple):
    """A harness served by a ``LiveServer``, and a client of that server."""

    harness: Harness
    client: httpx.AsyncClient
    server: LiveServer


class LiveClientFactory(Protocol):
    """``async with live_client(**settings) as (h, client, server)``: a harness built with
    those settings, served on loopback, and an ``httpx.AsyncClient`` on its URL."""

    def __call__(
        self, *, providers: Providers | None = None, **overrides: Any
    ) -> AbstractAsyncContextManager[Live]: ...


def parse_sse(text: str) -> Events:
    """(event, data) pairs of an SSE body; comment lines are skipped."""
    events: Events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll a condition instead of sleeping a guessed amount."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def session_tasks() -> list[asyncio.Task[Any]]:
    """The sessions' pipeline tasks still running in this event loop (named ``fit-check
    <session>``): once there are none, no session can call a provider any more."""
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("fit-check ")]


def attrs(item: ReadableSpan | Event) -> Mapping[str, Any]:
    """A span's or span event's attributes (the SDK types them as optional)."""
    return item.attributes or {}


def parent_id(span: ReadableSpan) -> int | None:
    """The span id of a span's parent, or None for a root."""
    return None if span.parent is None else span.parent.span_id


def started_ns(span: ReadableSpan) -> int:
    assert span.start_time is not None
    return span.start_time


def ended_ns(span: ReadableSpan) -> int:
    assert span.end_time is not None
    return span.end_time


def llm_spans(h: Harness) -> list[ReadableSpan]:
    """The LLM calls' client spans (``chat <model>``) of a harness, in the order they ended."""
    return [
        s
        for s in h.telemetry.finished_spans()
        if s.kind == SpanKind.CLIENT and s.name.startswith("chat ")
    ]


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Errors the server (uvicorn) and the service logged; not those of exporters that
    earlier tests left retrying their dead endpoints on threads of their own."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith(("uvicorn", "fit_check"))
    ]
