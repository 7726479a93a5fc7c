from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.store.redis_server import RedisServer
from tests.service_process import free_port


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.resume()
        server.stop()
