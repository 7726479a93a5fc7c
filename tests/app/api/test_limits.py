"""The body guards as ASGI middleware, called directly: what reaches the app, what the
client is answered, and how often a refusal is counted."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from app.api.limits import BodySizeLimit, BodyTooLarge, JsonBodiesOnly, is_json_in_utf8
from app.rejections import RejectionReason

CAP = 10


def http_scope(headers: list[tuple[bytes, bytes]], method: str = "POST") -> Scope:
    return {
        "type": "http",
        "method": method,
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": headers,
    }


class Client:
    """The server's side of one request: the body it hands out, what the app sends back."""

    def __init__(self, *chunks: bytes, body_key: bool = True) -> None:
        self.messages: list[Message] = []
        for n, chunk in enumerate(chunks):
            message: dict[str, Any] = {"type": "http.request", "more_body": n < len(chunks) - 1}
            if body_key:
                message["body"] = chunk
            self.messages.append(message)
        self.received = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.received += 1
        if self.messages:
            return self.messages.pop(0)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        assert len(starts) == 1, self.sent
        status: int = starts[0]["status"]
        return status

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return list(start["headers"])

    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


async def echo_length(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the whole body and answers its length."""
    body = await Request(scope, receive).body()
    await JSONResponse({"length": len(body)})(scope, receive, send)


class Rejections(list[RejectionReason]):
    def __call__(self, reason: RejectionReason) -> None:
        self.append(reason)


def size_limit(app: Any = echo_length) -> tuple[BodySizeLimit, Rejections]:
    rejections = Rejections()
    return BodySizeLimit(app, max_bytes=CAP, on_reject=rejections), rejections


def assert_413(client: Client, rejections: Rejections) -> None:
    assert client.status == 413
    assert client.json() == {
        "code": "PAYLOAD_TOO_LARGE",
        "message": f"request body exceeds {CAP} bytes",
        "errors": [],
    }
    headers = dict(client.headers)
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"connection"] == b"close"
    body = b"".join(m.get("body", b"") for m in client.sent[1:])
    assert headers[b"content-length"] == str(len(body)).encode()
    assert rejections == ["payload_too_large"]


async def test_a_content_length_over_the_cap_is_refused_without_reading_the_body() -> None:
    called = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        called.append(scope)

    guard, rejections = size_limit(app)
    client = Client(b"x" * (CAP + 1))
    await guard(
        http_scope([(b"content-length", str(CAP + 1).encode())]), client.receive, client.send
    )
    assert client.received == 0 and called == []
    assert_413(client, rejections)


@pytest.mark.parametrize("value", [b"ten", b"-1", b"1e3", b"", b" 5"])
async def test_a_content_length_that_is_not_a_number_is_refused(value: bytes) -> None:
    guard, rejections = size_limit()
    client = Client(b"x")
    await guard(http_scope([(b"content-length", value)]), client.receive, client.send)
    assert client.received == 0
    assert_413(client, rejections)


@pytest.mark.parametrize("declared", [True, False])
async def test_exactly_the_cap_is_read_and_one_byte_more_is_refused(declared: bool) -> None:
    for size in (CAP, CAP + 1):
        guard, rejections = size_limit()
        client = Client(b"x" * 4, b"x" * (size - 4))
        headers = [(b"content-length", str(size).encode())] if declared else []
        await guard(http_scope(headers), client.receive, client.send)
        if size == CAP:
            assert client.status == 200 and client.json() == {"length": CAP}
            assert rejections == []
        else:
            assert_413(client, rejections)


async def test_other_headers_and_messages_do_not_count() -> None:
    """Only ``content-length`` is read as one; a disconnect message carries no body."""
    guard, rejections = size_limit()
    client = Client(b"x" * CAP)
    headers = [(b"x-content-length", b"99"), (b"content-type", b"12345678901")]
    await guard(http_scope(headers), client.receive, client.send)
    assert client.status == 200 and rejections == []

    received: list[Message] = []

    async def reads_past_the_end(scope: Scope, receive: Receive, send: Send) -> None:
        received.extend([await receive(), await receive(), await receive()])
        await JSONResponse({})(scope, receive, send)

    guard, rejections = size_limit(reads_past_the_end)
    client = Client(b"x" * CAP)
    client.messages.append({"type": "http.disconnect", "body": b"x" * 100})
    await guard(http_scope([]), client.receive, client.send)
    assert client.status == 200 and rejections == []


async def test_a_message_without_a_body_counts_as_empty() -> None:
    guard, rejections = size_limit()
    client = Client(b"", body_key=False)
    await guard(http_scope([]), client.receive, client.send)
    assert client.status == 200 and client.json() == {"length": 0} and rejections == []


async def test_the_apps_own_answer_to_the_aborted_read_is_replaced_once() -> None:
    """The framework answers the aborted read itself (and may raise it again): the client
    gets one 413, counted once, and nothing of the framework's answer."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await Request(scope, receive).body()
        except BodyTooLarge:
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b"framework error"})
            await send({"type": "http.response.start", "status": 500, "headers": []})
            raise

    guard, rejections = size_limit(app)
    client = Client(b"x" * (CAP + 1))
    await guard(http_scope([]), client.receive, client.send)
    assert_413(client, rejections)
    assert b"framework error" not in b"".join(m.get("body", b"") for m in client.sent)


async def test_an_app_that_answers_the_aborted_read_and_returns_gets_one_413() -> None:
    """As FastAPI does: the aborted read becomes its own 400, and nothing is raised."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await Request(scope, receive).body()
        except BodyTooLarge:
            await JSONResponse({"detail": "framework error"}, status_code=400)(scope, receive, send)

    guard, rejections = size_limit(app)
    client = Client(b"x" * 6, b"x" * 6)
    await guard(http_scope([]), client.receive, client.send)
    assert_413(client, rejections)
    assert b"framework error" not in b"".join(m.get("body", b"") for m in client.sent)


async def test_an_app_that_lets_the_aborted_read_through_gets_one_413() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await Request(scope, receive).body()

    guard, rejections = size_limit(app)
    client = Client(b"x" * 6, b"x" * 6)
    await guard(http_scope([]), client.receive, client.send)
    assert_413(client, rejections)


async def test_an_answer_sent_before_the_overflow_is_passed_on() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard, rejections = size_limit(app)
    client = Client(b"x")
    await guard(http_scope([]), client.receive, client.send)
    assert client.status == 200 and client.sent[1]["body"] == b"ok" and rejections == []


async def test_a_non_http_scope_passes_untouched() -> None:
    seen: list[tuple[Scope, Receive, Send]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope, receive, send))

    guard, rejections = size_limit(app)
    client = Client()
    scope = {"type": "lifespan", "headers": [(b"content-length", b"99")]}
    await guard(scope, client.receive, client.send)
    assert seen == [(scope, client.receive, client.send)]
    assert client.sent == [] and rejections == []


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        (None, False),
        (b"application/json", True),
        (b"Application/JSON", True),
        (b" application/json ", True),
        (b"application/problem+json", True),
        (b"application/jsonx", False),
        (b"application/json-seq", False),
        (b"text/json", False),
        (b"json", False),
        (b"application/vnd/+json", False),  # two slashes: FastAPI reads it as text/plain
        (b"application/json/", False),
        (b"application/json; charset=utf-8", True),
        (b"application/json;charset=UTF8", True),
        (b'application/json; charset="utf-8"', True),
        (b"application/json; CHARSET = Utf-8 ", True),
        (b"application/json; charset=latin-1", False),
        (b"application/json; charset=utf-16", False),
        (b"application/json; charset=utf-8=x", False),
        (b"application/json; charset=XUTF-8X", False),
        (b"application/json; format=flowed", True),
        (b"application/json; x-note=\xe9t\xe9", True),  # latin-1, not UTF-8
    ],
)
def test_what_counts_as_json_in_utf8(content_type: bytes | None, accepted: bool) -> None:
    assert is_json_in_utf8(content_type) is accepted


async def test_a_post_without_json_gets_415_and_is_counted() -> None:
    called: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        called.append(scope)

    rejections = Rejections()
    guard = JsonBodiesOnly(app, on_reject=rejections)
    client = Client(b"x")
    await guard(http_scope([(b"x-content-type", b"application/json")]), client.receive, client.send)
    assert called == [] and client.status == 415
    assert client.json() == {
        "code": "UNSUPPORTED_MEDIA_TYPE",
        "message": "the body must be JSON in UTF-8, sent with Content-Type: application/json",
        "errors": [],
    }
    assert rejections == ["invalid_request"]


@pytest.mark.parametrize(
    ("scope_type", "method", "headers"),
    [
        ("http", "POST", [(b"content-type", b"application/json")]),
        ("http", "GET", []),
        ("lifespan", "POST", []),
    ],
)
async def test_json_posts_and_everything_else_pass(
    scope_type: str, method: str, headers: list[tuple[bytes, bytes]]
) -> None:
    called: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        called.append(scope)

    rejections = Rejections()
    guard = JsonBodiesOnly(app, on_reject=rejections)
    client = Client()
    scope = {**http_scope(headers, method), "type": scope_type}
    await guard(scope, client.receive, client.send)
    assert called == [scope] and client.sent == [] and rejections == []
