"""Every refusal, the app's and its server's, is one JSON shape: ``{code, message, errors}``."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import counting_providers
from tests.helpers import Harness, HarnessFactory, LiveServerFactory, in_process_client

STREAM = "/api/fit-check/stream"
BODY = json.dumps({"query": "Python"}).encode()


def assert_error_shape(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"code", "message", "errors"}
    assert body["code"] == code


@pytest.mark.parametrize("length", [65, 200, 4000])
async def test_a_long_last_event_id_is_an_invalid_last_event_id(
    harness_factory: HarnessFactory, length: int
) -> None:
    """As any other value that is not an id this service sent: 400, not a query error."""
    providers, search, llm = counting_providers()
    h = harness_factory(providers=providers)
    value = "a" * length
    async with in_process_client(h.app) as client:
        get = await client.get(STREAM, params={"query": "Python"}, headers={"Last-Event-ID": value})
        post = await client.post(STREAM, json={"query": "Python"}, headers={"Last-Event-ID": value})
    for response in (get, post):
        assert_error_shape(response, 400, "INVALID_LAST_EVENT_ID")
        assert value not in response.text
    assert llm.calls == search.calls == 0
    assert h.telemetry.value("fit_check.rejected_requests", reason="invalid_request") == 2


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/json",
    ],
)
async def test_a_body_that_is_not_json_in_utf8_gets_415(
    harness_factory: HarnessFactory, content_type: str | None
) -> None:
    providers, _, llm = counting_providers()
    h = harness_factory(providers=providers)
    headers = {} if content_type is None else {"Content-Type": content_type}
    async with in_process_client(h.app) as client:
        response = await client.post(STREAM, content=BODY, headers=headers)
    assert_error_shape(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert "application/json" in response.json()["message"]
    assert "UTF-8" in response.json()["message"]
    assert llm.calls == 0
    assert h.telemetry.value("fit_check.rejected_requests", reason="invalid_request") == 1


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        'Application/JSON; Charset="UTF-8"',
        "application/json;charset=utf8",
        "application/merge-patch+json",
    ],
)
async def test_json_in_utf8_is_accepted(harness: Harness, content_type: str) -> None:
    async with in_process_client(harness.app) as client:
        response = await client.post(STREAM, content=BODY, headers={"Content-Type": content_type})
    assert response.status_code == 200


async def test_an_allowed_page_can_read_a_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        STREAM,
        content=BODY,
        headers={"Content-Type": "text/plain", "Origin": "http://localhost:3003"},
    )
    assert response.status_code == 415
    assert response.headers["access-control-allow-origin"] == "http://localhost:3003"


async def send_raw(url: str, request: bytes) -> tuple[bytes, bytes]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Nul: a\x00b\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Name: x\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET /he alth HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the HTTP port
    ],
)
async def test_an_unparsable_request_gets_400_in_the_one_shape(
    harness_factory: HarnessFactory, live_server: LiveServerFactory, request_bytes: bytes
) -> None:
    h = harness_factory()
    async with live_server(h.app) as server:
        head, body = await send_raw(server.url, request_bytes)
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body) == {
        "code": "BAD_REQUEST",
        "message": "the request is not valid HTTP/1.1",
        "errors": [],
    }
    assert h.telemetry.value("fit_check.rejected_requests", reason="malformed_request") == 1


async def test_a_broken_chunked_body_gets_400_and_the_app_sees_a_client_gone(
    harness_factory: HarnessFactory,
    live_server: LiveServerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = harness_factory()
    async with live_server(h.app) as server:
        head, body = await send_raw(
            server.url,
            b"POST /api/fit-check/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'5\r\n{"que\r\nzz\r\n',
        )
    assert head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(body)["code"] == "BAD_REQUEST"
    assert "Exception in ASGI application" not in caplog.text


async def test_the_new_rejection_reasons_exist_at_zero_from_start_up(
    client: httpx.AsyncClient,
) -> None:
    text = (await client.get("/metrics")).text
    reasons = {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "fit_check_rejected_requests_total"
    }
    for reason in ("body_timeout", "host_not_allowed", "malformed_request"):
        assert reasons[reason] == 0
