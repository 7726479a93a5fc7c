"""Fixtures: an app per test with in-memory telemetry, and a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette

from app.asgi import build_app
from app.config import Settings
from app.providers.factory import Providers
from app.server import DrainingServer, server_config
from otel.logging import log_handler
from otel.testing import CapturedTelemetry, captured_telemetry


def make_settings(**overrides: Any) -> Settings:
    """Settings for a test: defaults plus overrides, ignoring any .env file."""
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


@dataclass
class Harness:
    app: FastAPI
    telemetry: CapturedTelemetry
    settings: Settings

    @property
    def service(self) -> Any:
        return self.app.state.service


@pytest.fixture
def harness_factory() -> Callable[..., Harness]:
    def factory(providers: Providers | None = None, **overrides: Any) -> Harness:
        settings = make_settings(**overrides)
        captured = captured_telemetry()
        return Harness(
            app=build_app(settings, captured.runtime, providers),
            telemetry=captured,
            settings=settings,
        )

    return factory


@pytest.fixture
def harness(harness_factory: Callable[..., Harness]) -> Harness:
    return harness_factory()


def in_process_client(app: FastAPI) -> httpx.AsyncClient:
    """A client that calls the app directly (no sockets); the response is read whole."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_client(harness.app) as c:
        yield c


class LiveServer:
    """The service's own server (limits, drain) on 127.0.0.1, in the test's event loop."""

    def __init__(self, app: Starlette) -> None:
        service = getattr(app.state, "service", None)  # None: a fake third-party API
        settings = service.settings if service is not None else make_settings()
        config = server_config(
            app,
            host="127.0.0.1",
            port=0,
            max_header_bytes=settings.max_header_bytes,
            header_timeout_s=settings.header_timeout_s,
            on_reject=service.telemetry.rejected if service is not None else lambda _r: None,
        )
        self.server = DrainingServer(config, drain=service.drain if service else _no_drain)
        self._server = self.server
        self._task: asyncio.Task[None] | None = None
        self.port = 0
        self.url = ""

    async def __aenter__(self) -> LiveServer:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.should_exit = True
        assert self._task is not None
        await asyncio.wait_for(self._task, 10)


async def _no_drain() -> None:
    return None


@pytest.fixture
def live_server() -> Callable[[Starlette], LiveServer]:
    return LiveServer


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of an SSE body; comment lines are skipped."""
    events = []
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


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The service's own JSON handler (all its filters), writing into a buffer."""
    buffer = io.StringIO()
    handler = log_handler("json", buffer)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield buffer
    root.removeHandler(handler)
    root.setLevel(old_level)
