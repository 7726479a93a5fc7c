"""The lean connection a producer writes on (``app/store/redis_pipe.py``), against a real
``redis-server``: answers in order, errors as redis-py's exceptions, a stalled server
given up on in time, a restarted one reconnected, and the URL's password and database."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.store.redis_pipe import RedisPipe, fast_caller
from tests.app.store.redis_server import RedisServer
from tests.service_process import free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="make e2e installs it"),
]


def pipe_to(server: RedisServer, timeout_s: float = 2.0) -> RedisPipe:
    return RedisPipe({"host": "127.0.0.1", "port": server.port}, timeout_s)


async def test_answers_come_back_to_their_own_calls(redis_server: RedisServer) -> None:
    pipe = pipe_to(redis_server)
    answers = await asyncio.gather(*(pipe.call("ECHO", f"call {n}") for n in range(50)))
    assert answers == [f"call {n}".encode() for n in range(50)]
    assert await pipe.call("SET", "k", 7) == b"OK"
    assert await pipe.call("INCR", "k") == 8
    assert await pipe.call("GET", "missing") is None
    pipe.disconnect()


async def test_an_error_answer_is_raised_as_redis_py_would(redis_server: RedisServer) -> None:
    pipe = pipe_to(redis_server)
    with pytest.raises(ResponseError, match="unknown command"):
        await pipe.call("NO-SUCH-COMMAND")
    with pytest.raises(NoScriptError):
        await pipe.call("EVALSHA", "0" * 40, 0)
    assert await pipe.call("ECHO", "after") == b"after"  # still aligned
    pipe.disconnect()


async def test_a_stalled_server_is_given_up_on_in_time_then_used_again(
    redis_server: RedisServer,
) -> None:
    pipe = pipe_to(redis_server, timeout_s=0.3)
    assert await pipe.call("ECHO", "before") == b"before"
    redis_server.pause()
    try:
        started = time.monotonic()
        calls = [asyncio.ensure_future(pipe.call("ECHO", n)) for n in range(3)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, RedisTimeoutError) for r in results), results
        assert time.monotonic() - started < 2.0
    finally:
        redis_server.resume()
    # A new connection: the stalled one's late answers never reach a later call.
    assert await pipe.call("ECHO", "after") == b"after"
    pipe.disconnect()


async def test_a_restarted_server_is_connected_to_again(redis_server: RedisServer) -> None:
    pipe = pipe_to(redis_server)
    assert await pipe.call("PING") == b"PONG"
    redis_server.stop()
    with pytest.raises(RedisConnectionError):
        await pipe.call("PING")
    redis_server.start()
    assert await pipe.call("PING") == b"PONG"
    pipe.disconnect()


async def test_nothing_listening_is_a_connection_error() -> None:
    pipe = RedisPipe({"host": "127.0.0.1", "port": free_port()}, 1.0)
    with pytest.raises(RedisConnectionError):
        await pipe.call("PING")


async def test_the_urls_password_and_database_are_used(tmp_path: Path) -> None:
    server = RedisServer(free_port(), tmp_path, password="s3cret")
    server.start()
    try:
        url = f"redis://:s3cret@127.0.0.1:{server.port}/3"
        client = Redis.from_url(url)
        call, close = fast_caller(url, client, 2.0)
        assert await call("SET", "where", "db3") == b"OK"
        assert server.cli("-n", "3", "GET", "where") == "db3"
        assert server.cli("-n", "0", "GET", "where") == ""
        close()
        wrong, close_wrong = fast_caller(url.replace("s3cret", "wrong"), client, 2.0)
        with pytest.raises(ResponseError):
            await wrong("PING")
        close_wrong()
        await client.aclose()
    finally:
        server.stop()


def test_a_tls_url_is_left_to_redis_py() -> None:
    client = Redis.from_url("rediss://127.0.0.1:6380/0")
    call, _ = fast_caller("rediss://127.0.0.1:6380/0", client, 1.0)
    assert call == client.execute_command
