"""Fixtures: an app per test with in-memory telemetry, a real server (and a client of it), a
JSON log buffer."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from app.asgi import build_app
from app.providers.factory import Providers
from otel.log_lines import log_handler
from otel.testing import captured_telemetry
from tests.helpers import (
    Harness,
    HarnessFactory,
    Live,
    LiveClientFactory,
    LiveServer,
    LiveServerFactory,
    in_process_client,
    make_settings,
)


@pytest.fixture
def harness_factory() -> HarnessFactory:
    def factory(*, providers: Providers | None = None, **overrides: Any) -> Harness:
        settings = make_settings(**overrides)
        captured = captured_telemetry()
        return Harness(
            app=build_app(settings, captured.runtime, providers),
            telemetry=captured,
            settings=settings,
        )

    return factory


@pytest.fixture
def harness(harness_factory: HarnessFactory) -> Harness:
    return harness_factory()


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_client(harness.app) as c:
        yield c


@pytest.fixture
def live_server() -> LiveServerFactory:
    return LiveServer


@pytest.fixture
def live_client(harness_factory: HarnessFactory) -> LiveClientFactory:
    """The opening of every test that talks to the service over a real socket."""

    @asynccontextmanager
    async def open_live(
        *, providers: Providers | None = None, **overrides: Any
    ) -> AsyncIterator[Live]:
        harness = harness_factory(providers=providers, **overrides)
        async with (
            LiveServer(harness.app) as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            yield Live(harness, client, server)

    return open_live


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
