"""CORS, untrusted trace context, and a /metrics that need not be public."""

from __future__ import annotations

import httpx
import pytest
from opentelemetry.trace import SpanKind

from tests.conftest import in_process_client, parse_sse

STREAM = "/api/fit-check/stream"
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{CALLER_TRACE}-b7ad6b7169203331-01"


async def test_preflight_from_an_allowed_origin(client: httpx.AsyncClient) -> None:
    response = await client.options(
        STREAM,
        headers={
            "Origin": "http://localhost:3003",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://localhost:3003"
    assert "access-control-allow-credentials" not in response.headers


async def test_preflight_from_another_origin_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.options(
        STREAM, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers
    simple = await client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


async def test_exposes_the_session_and_trace_headers(client: httpx.AsyncClient) -> None:
    response = await client.post(
        STREAM, json={"query": "Python"}, headers={"Origin": "http://localhost:3003"}
    )
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "x-session-id" in exposed and "traceresponse" in exposed


async def test_wildcard_origin_never_comes_with_credentials(harness_factory) -> None:
    h = harness_factory(allowed_origins="*")
    async with in_process_client(h.app) as client:
        response = await client.options(
            STREAM,
            headers={
                "Origin": "https://anywhere.example",
                "Access-Control-Request-Method": "POST",
                "Cookie": "session=1",
            },
        )
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


async def test_caller_traceparent_is_a_link_not_a_parent_by_default(harness) -> None:
    async with in_process_client(harness.app) as client:
        response = await client.post(
            STREAM, json={"query": "Python"}, headers={"traceparent": TRACEPARENT}
        )
    trace_id = parse_sse(response.text)[0][1]["trace_id"]
    assert trace_id != CALLER_TRACE
    server = next(s for s in harness.telemetry.finished_spans() if s.kind is SpanKind.SERVER)
    assert server.parent is None
    assert [format(link.context.trace_id, "032x") for link in server.links] == [CALLER_TRACE]


async def test_trusted_traceparent_is_continued(harness_factory) -> None:
    h = harness_factory(trust_incoming_trace=True)
    async with in_process_client(h.app) as client:
        response = await client.post(
            STREAM, json={"query": "Python"}, headers={"traceparent": TRACEPARENT}
        )
    assert parse_sse(response.text)[0][1]["trace_id"] == CALLER_TRACE


async def test_metrics_behind_a_bearer_token(harness_factory) -> None:
    h = harness_factory(metrics_token="s3cret-scrape")
    async with in_process_client(h.app) as client:
        denied = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        allowed = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape"})
    assert denied.status_code == wrong.status_code == 401
    assert denied.json()["code"] == "UNAUTHORIZED"
    assert denied.headers["www-authenticate"] == "Bearer"
    assert allowed.status_code == 200 and "fit_check_requests_total" in allowed.text


async def test_metrics_on_a_port_of_their_own(harness_factory) -> None:
    h = harness_factory(metrics_port=0)
    port = h.telemetry.runtime.serve_metrics("127.0.0.1", 0)
    try:
        async with in_process_client(h.app) as client:
            public = await client.get("/metrics")
        async with httpx.AsyncClient() as scraper:
            private = await scraper.get(f"http://127.0.0.1:{port}/metrics")
    finally:
        h.telemetry.runtime.shutdown()
    assert public.status_code == 404
    assert private.status_code == 200 and "fit_check_requests_total" in private.text


@pytest.mark.parametrize("origins", ["http://a.example,http://b.example", " http://a.example "])
def test_allowed_origins_parse_from_the_env_form(origins: str) -> None:
    from tests.conftest import make_settings

    assert "http://a.example" in make_settings(allowed_origins=origins).allowed_origins
