"""The origin gate and the CORS answers: exact refusals, what passes, and the configured
origins read the same way by both."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from app.api.origins import OriginGate
from app.rejections import RejectionReason
from tests.helpers import HarnessFactory, LiveServer, in_process_client

STREAM = "/api/fit-check/stream"
PAGE = "http://page.example"


class Recorder:
    def __init__(self) -> None:
        self.called: list[Scope] = []
        self.sent: list[Message] = []
        self.rejections: list[RejectionReason] = []

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.called.append(scope)

    async def receive(self) -> Message:
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)


async def gate(allowed: list[str], headers: list[tuple[bytes, bytes]], **scope: Any) -> Recorder:
    recorder = Recorder()
    middleware = OriginGate(
        recorder.app, allowed_origins=allowed, on_reject=recorder.rejections.append
    )
    await middleware({"type": "http", "headers": headers, **scope}, recorder.receive, recorder.send)
    return recorder


def assert_refused(recorder: Recorder) -> None:
    assert recorder.called == []
    start, body = recorder.sent
    assert start["status"] == 403
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(body["body"])).encode()
    assert json.loads(body["body"]) == {
        "code": "ORIGIN_NOT_ALLOWED",
        "message": "this origin may not call the API (the server's ALLOWED_ORIGINS)",
        "errors": [],
    }
    assert recorder.rejections == ["origin_not_allowed"]


def assert_passed(recorder: Recorder) -> None:
    assert len(recorder.called) == 1 and recorder.sent == [] and recorder.rejections == []


@pytest.mark.parametrize("configured", [PAGE, PAGE + "/", PAGE + "//"])
async def test_an_allowed_origin_passes_with_or_without_a_trailing_slash(configured: str) -> None:
    assert_passed(await gate(["http://other.example", configured], [(b"origin", PAGE.encode())]))


async def test_only_trailing_slashes_are_trimmed_from_a_configured_origin() -> None:
    """``https://BOX/`` is ``https://BOX``: the name itself is matched whole, to its
    last character."""
    assert_passed(await gate(["https://BOX/"], [(b"origin", b"https://BOX")]))
    assert_refused(await gate(["https://BOX/"], [(b"origin", b"https://BO")]))


@pytest.mark.parametrize(
    "origin", [b"https://evil.example", b"null", PAGE.encode() + b"/", b"http://page.example.evil"]
)
async def test_any_other_origin_is_refused(origin: bytes) -> None:
    headers = [(b"host", b"127.0.0.1:8000"), (b"origin", origin)]
    assert_refused(await gate([PAGE], headers))


async def test_only_the_origin_header_is_read_as_one() -> None:
    headers = [(b"x-origin", b"https://evil.example"), (b"referer", b"https://evil.example/")]
    assert_passed(await gate([PAGE], headers))
    assert_passed(await gate([PAGE], []))


@pytest.mark.parametrize("scheme", [b"http", b"https"])
async def test_same_origin_passes_whatever_the_scheme(scheme: bytes) -> None:
    headers = [(b"origin", scheme + b"://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")]
    assert_passed(await gate([PAGE], headers))


@pytest.mark.parametrize(
    "headers",
    [
        [(b"origin", b"http://127.0.0.1:8001"), (b"host", b"127.0.0.1:8000")],
        [(b"origin", b"http://")],  # no Host: nothing to be the same as
        [(b"origin", b"http://"), (b"host", b"")],
        [(b"origin", b"127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")],  # no scheme: no origin
    ],
)
async def test_another_host_or_none_is_not_the_same_origin(
    headers: list[tuple[bytes, bytes]],
) -> None:
    assert_refused(await gate([PAGE], headers))


async def test_a_wildcard_lets_every_origin_through() -> None:
    assert_passed(await gate(["*"], [(b"origin", b"https://evil.example")]))
    assert_passed(await gate([PAGE, "*"], [(b"origin", b"https://evil.example")]))


async def test_scopes_other_than_http_pass() -> None:
    recorder = Recorder()
    middleware = OriginGate(
        recorder.app, allowed_origins=[PAGE], on_reject=recorder.rejections.append
    )
    await middleware({"type": "lifespan"}, recorder.receive, recorder.send)
    assert_passed(recorder)


async def test_cors_reads_the_configured_origins_as_the_gate_does(
    harness_factory: HarnessFactory,
) -> None:
    """``ALLOWED_ORIGINS=http://page.example/``: the gate let the page through and CORS
    refused it, so the browser hid every answer."""
    h = harness_factory(allowed_origins=f"{PAGE}/, http://other.example")
    async with in_process_client(h.app) as client:
        preflight = await client.options(
            STREAM,
            headers={
                "Origin": PAGE,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        posted = await client.post(STREAM, json={"query": "Python"}, headers={"Origin": PAGE})
    assert preflight.status_code == 200 and preflight.text == "OK"
    assert preflight.headers["access-control-allow-origin"] == PAGE
    assert posted.status_code == 200
    assert posted.headers["access-control-allow-origin"] == PAGE


async def test_a_refused_preflight_is_json_with_its_cors_headers_and_true_length(
    harness_factory: HarnessFactory,
) -> None:
    """On a real socket: a stale Content-Length of Starlette's plain-text answer would cut
    the JSON short or leave the client waiting."""
    h = harness_factory(allowed_origins=PAGE)
    async with LiveServer(h.app) as server, httpx.AsyncClient(base_url=server.url) as client:
        response = await client.options(
            STREAM,
            headers={
                "Origin": PAGE,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "x-custom",
            },
        )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(response.content))
    assert response.json() == {
        "code": "CORS_PREFLIGHT_REFUSED",
        "message": "Disallowed CORS method, headers",
        "errors": [],
    }
    assert response.headers["access-control-allow-origin"] == PAGE
    assert "POST" in response.headers["access-control-allow-methods"]
    assert response.headers["vary"].startswith("Origin")
