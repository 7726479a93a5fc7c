"""CORS, Host names (DNS rebinding), untrusted trace context, and a /metrics that need not
be public."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from opentelemetry.trace import SpanKind

from app.host_names import HostAllowList
from tests.fakes import counting_providers
from tests.helpers import Harness, HarnessFactory, LiveServer, in_process_client, parse_sse

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
    assert response.status_code == 403
    assert response.json()["code"] == "ORIGIN_NOT_ALLOWED"
    assert "access-control-allow-origin" not in response.headers
    assert "evil" not in response.text


async def test_refused_preflight_of_an_allowed_origin_is_json(client: httpx.AsyncClient) -> None:
    response = await client.options(
        STREAM, headers={"Origin": "http://localhost:3003", "Access-Control-Request-Method": "PUT"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == "CORS_PREFLIGHT_REFUSED"


async def test_exposes_the_session_and_trace_headers(client: httpx.AsyncClient) -> None:
    response = await client.post(
        STREAM, json={"query": "Python"}, headers={"Origin": "http://localhost:3003"}
    )
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "x-session-id" in exposed and "traceresponse" in exposed


async def test_wildcard_origin_never_comes_with_credentials(
    harness_factory: HarnessFactory,
) -> None:
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


async def test_caller_traceparent_is_a_link_not_a_parent_by_default(harness: Harness) -> None:
    async with in_process_client(harness.app) as client:
        response = await client.post(
            STREAM, json={"query": "Python"}, headers={"traceparent": TRACEPARENT}
        )
    trace_id = parse_sse(response.text)[0][1]["trace_id"]
    assert trace_id != CALLER_TRACE
    server = next(s for s in harness.telemetry.finished_spans() if s.kind is SpanKind.SERVER)
    assert server.parent is None
    assert [format(link.context.trace_id, "032x") for link in server.links] == [CALLER_TRACE]


async def test_trusted_traceparent_is_continued(harness_factory: HarnessFactory) -> None:
    h = harness_factory(trust_incoming_trace=True)
    async with in_process_client(h.app) as client:
        response = await client.post(
            STREAM, json={"query": "Python"}, headers={"traceparent": TRACEPARENT}
        )
    assert parse_sse(response.text)[0][1]["trace_id"] == CALLER_TRACE


async def test_metrics_behind_a_bearer_token(harness_factory: HarnessFactory) -> None:
    h = harness_factory(metrics_token="s3cret-scrape")
    async with in_process_client(h.app) as client:
        denied = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        allowed = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape"})
    assert denied.status_code == wrong.status_code == 401
    assert denied.json()["code"] == "UNAUTHORIZED"
    assert denied.headers["www-authenticate"] == "Bearer"
    assert allowed.status_code == 200 and "fit_check_requests_total" in allowed.text


async def test_metrics_on_a_port_of_their_own(harness_factory: HarnessFactory) -> None:
    h = harness_factory(metrics_port=0)
    port = h.telemetry.runtime.metrics_port
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
    from tests.helpers import make_settings

    assert "http://a.example" in make_settings(allowed_origins=origins).allowed_origins


async def test_a_page_on_another_origin_cannot_start_an_analysis(
    harness_factory: HarnessFactory,
) -> None:
    providers, search, llm = counting_providers()
    h = harness_factory(providers=providers)
    async with in_process_client(h.app) as client:
        post = await client.post(
            STREAM, json={"query": "Python"}, headers={"Origin": "https://evil.example"}
        )
        get = await client.get(
            STREAM, params={"query": "Python"}, headers={"Origin": "https://evil.example"}
        )
        null = await client.get(STREAM, params={"query": "Python"}, headers={"Origin": "null"})
    for response in (post, get, null):
        assert response.status_code == 403
        assert response.json()["code"] == "ORIGIN_NOT_ALLOWED"
    assert llm.calls == search.calls == 0
    assert h.telemetry.value("fit_check.rejected_requests", reason="origin_not_allowed") == 3


async def test_allowed_same_origin_and_originless_requests_pass(
    harness_factory: HarnessFactory,
) -> None:
    providers, _, llm = counting_providers()
    h = harness_factory(providers=providers)
    async with in_process_client(h.app) as client:
        allowed = await client.post(
            STREAM, json={"query": "Python"}, headers={"Origin": "http://localhost:3003"}
        )
        # A page the service serves itself: its POSTs carry the service's own origin.
        same = await client.post(STREAM, json={"query": "Python"}, headers={"Origin": "http://t"})
        curl = await client.post(STREAM, json={"query": "Python"})
    assert allowed.status_code == same.status_code == curl.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3003"
    assert llm.calls == 9


async def test_trailing_slash_is_a_404_never_a_redirect_to_the_host_header(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/fit-check/health/", headers={"Host": "evil.example"})
    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.json()["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    "accept",
    [
        "application/openmetrics-text; version=abc",
        "text/plain; version=abc",
        "application/openmetrics-text; version=1.0.0; escaping=zz",
        "\x01garbage",
    ],
)
async def test_metrics_with_an_accept_header_it_cannot_parse_is_plain_text(
    client: httpx.AsyncClient, accept: str
) -> None:
    response = await client.get("/metrics", headers={"Accept": accept})
    assert response.status_code == 200
    assert "fit_check_requests_total" in response.text


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_the_bearer_scheme_is_case_insensitive(
    harness_factory: HarnessFactory, scheme: str
) -> None:
    h = harness_factory(metrics_token="s3cret-scrape")
    async with in_process_client(h.app) as client:
        response = await client.get(
            "/metrics", headers={"Authorization": f"{scheme} s3cret-scrape"}
        )
    assert response.status_code == 200


async def test_the_metrics_port_needs_the_token_too(harness_factory: HarnessFactory) -> None:
    h = harness_factory(metrics_port=0, metrics_token="s3cret-scrape")
    port = h.telemetry.runtime.metrics_port
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as scraper:
            denied = await scraper.get("/metrics")
            wrong = await scraper.get("/metrics", headers={"Authorization": "Bearer nope"})
            allowed = await scraper.get(
                "/metrics", headers={"Authorization": "bearer s3cret-scrape"}
            )
            odd = await scraper.get(
                "/metrics",
                headers={
                    "Authorization": "Bearer s3cret-scrape",
                    "Accept": "text/plain; version=x",
                },
            )
    finally:
        h.telemetry.runtime.shutdown()
    assert denied.status_code == wrong.status_code == 401
    assert denied.json()["code"] == "UNAUTHORIZED"
    assert allowed.status_code == odd.status_code == 200
    assert "fit_check_requests_total" in allowed.text


async def test_a_same_origin_page_behind_a_tls_proxy_passes(harness: Harness) -> None:
    """The page is https at the proxy, this hop is http: the host decides, not the scheme."""
    async with in_process_client(harness.app) as client:
        response = await client.post(
            STREAM,
            json={"query": "Python"},
            headers={"Origin": "https://fit.example", "Host": "fit.example"},
        )
        other = await client.post(
            STREAM,
            json={"query": "Python"},
            headers={"Origin": "https://evil.example", "Host": "fit.example"},
        )
    assert response.status_code == 200
    assert other.status_code == 403


@pytest.mark.parametrize(
    ("host", "allowed", "header", "answered"),
    [
        ("127.0.0.1", [], "127.0.0.1:8000", True),
        ("127.0.0.1", [], "127.0.0.2", True),
        ("127.0.0.1", [], "localhost:8000", True),
        ("127.0.0.1", [], "LOCALHOST", True),
        ("127.0.0.1", [], "[::1]:8000", True),
        ("127.0.0.1", [], "evil.example:8000", False),
        ("127.0.0.1", [], "localhost.evil.example", False),
        ("127.0.0.1", [], "127.0.0.1.evil.example", False),
        ("127.0.0.1", [], "", False),
        ("0.0.0.0", [], "0.0.0.0:8000", False),  # a wildcard HOST names no host
        ("::", [], "[::]:8000", False),
        ("192.0.2.7", [], "192.0.2.7:8000", True),
        ("fit.internal", [], "fit.internal:8000", True),
        ("::1", [], "[::1]", True),
        ("0.0.0.0", ["fit-check"], "fit-check:8000", True),
        ("0.0.0.0", ["fit.example"], "FIT.example.", True),
        ("0.0.0.0", ["fit.example:443"], "fit.example:443", True),
        ("0.0.0.0", ["fit.example:443"], "fit.example:8443", False),
        ("0.0.0.0", ["*.fit.example"], "eu.fit.example", True),
        ("0.0.0.0", ["*.fit.example"], "fit.example.evil.example", False),
        ("0.0.0.0", ["*"], "anything.example", True),
    ],
)
def test_the_host_allow_list(host: str, allowed: list[str], header: str, answered: bool) -> None:
    assert HostAllowList(host, allowed).allows(header.encode()) is answered


def test_allowed_hosts_parse_from_the_env_form() -> None:
    from tests.helpers import make_settings

    settings = make_settings(allowed_hosts=" fit-check, fit.example:443 ")
    assert settings.allowed_hosts == ["fit-check", "fit.example:443"]


async def test_a_dns_rebinding_page_cannot_drive_the_instance(
    harness_factory: HarnessFactory,
) -> None:
    """The page's origin names the host it sent the request to, so the same-origin check
    passes; the Host name is what gives it away."""
    providers, search, llm = counting_providers()
    h = harness_factory(providers=providers)
    async with LiveServer(h.app) as server, httpx.AsyncClient() as client:
        rebound = f"evil.example:{server.port}"
        refused = [
            await client.post(
                f"{server.url}/api/fit-check/stream",
                json={"query": "Python"},
                headers={"Host": rebound, "Origin": f"http://{rebound}"},
            ),
            await client.get(
                f"{server.url}/api/fit-check/stream",
                params={"query": "Python"},
                headers={"Host": rebound, "Origin": f"http://{rebound}"},
            ),
            *[
                await client.get(f"{server.url}{path}", headers={"Host": rebound})
                for path in ("/health", "/ready", "/api/fit-check/health", "/metrics", "/")
            ],
        ]
        local = await client.get(
            f"{server.url}/health", headers={"Host": f"localhost:{server.port}"}
        )
    for response in refused:
        assert response.status_code == 421
        assert response.headers["content-type"] == "application/json"
        assert response.json()["code"] == "HOST_NOT_ALLOWED"
        assert "evil" not in response.text
    assert local.status_code == 200
    assert llm.calls == search.calls == 0
    assert h.telemetry.value("fit_check.rejected_requests", reason="host_not_allowed") == 7


async def test_a_second_host_header_cannot_smuggle_a_name_in(
    harness_factory: HarnessFactory,
) -> None:
    h = harness_factory()
    async with LiveServer(h.app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 421 ")
    assert json.loads(body)["code"] == "HOST_NOT_ALLOWED"


async def test_names_in_allowed_hosts_are_answered(harness_factory: HarnessFactory) -> None:
    """Behind a load balancer that sends the public name: FIT_CHECK_ALLOWED_HOSTS."""
    h = harness_factory(allowed_hosts="fit.example")
    async with LiveServer(h.app) as server, httpx.AsyncClient() as client:
        same_origin = await client.post(
            f"{server.url}/api/fit-check/stream",
            json={"query": "Python"},
            headers={"Host": "fit.example", "Origin": "https://fit.example"},
        )
        ready = await client.get(f"{server.url}/ready", headers={"Host": "fit.example"})
        other = await client.get(f"{server.url}/ready", headers={"Host": "fit.example.evil"})
    assert same_origin.status_code == 200
    assert parse_sse(same_origin.text)[-1][0] == "complete"
    assert ready.status_code == 200
    assert other.status_code == 421
