"""The user's text stays out of telemetry; a caller's baggage stays out of third parties."""

from __future__ import annotations

import io
import json
import logging

from opentelemetry.trace import SpanKind

from tests.fake_apis import FakeAPI, provider_settings
from tests.helpers import (
    Harness,
    HarnessFactory,
    LiveClientFactory,
    LiveServerFactory,
    attrs,
    in_process_client,
    parse_sse,
)

STREAM = "/api/fit-check/stream"
SECRET_TEXT = "Quokkaville Zyxwvut Robotics"  # the user's own words, in the GET form


def everything_emitted(h: Harness, log_text: str) -> str:
    spans = [
        (s.name, dict(s.attributes or {}), [dict(e.attributes or {}) for e in s.events])
        for s in h.telemetry.finished_spans()
    ]
    return log_text + repr(spans) + repr(list(h.telemetry.metric_points()))


async def test_the_query_text_reaches_no_span_log_line_or_metric(
    live_server: LiveServerFactory, live_client: LiveClientFactory, json_log: io.StringIO
) -> None:
    fake = FakeAPI()
    async with (
        live_server(fake.app()) as api,
        live_client(**provider_settings(api.url)) as (h, c, _),
    ):
        params = {"query": SECRET_TEXT, "session_id": "privacy-1"}
        response = await c.get(STREAM, params=params)
    assert parse_sse(response.text)[-1][0] == "complete"
    assert any(SECRET_TEXT.split()[0] in r["query"].get("q", "") for r in fake.requests)

    emitted = everything_emitted(h, json_log.getvalue())
    for word in SECRET_TEXT.split():
        assert word not in emitted, word
    root = next(s for s in h.telemetry.finished_spans() if s.kind is SpanKind.SERVER)
    # The stable HTTP conventions (the service's default): the query alone, and the path.
    assert attrs(root)["url.query"] == "query=REDACTED&session_id=REDACTED"
    assert attrs(root)["url.path"] == STREAM
    assert attrs(root)["http.request.method"] == "GET"
    assert attrs(root)["http.response.status_code"] == 200
    assert attrs(root)["http.route"] == STREAM
    assert "http.url" not in attrs(root)  # the deprecated names are gone
    searches = [s for s in h.telemetry.finished_spans() if s.name == "GET"]
    assert searches and all("q=REDACTED" in attrs(s)["url.full"] for s in searches)

    access = [
        json.loads(line)
        for line in json_log.getvalue().splitlines()
        if '"uvicorn.access"' in line and "/api/fit-check/stream" in line
    ]
    (line,) = access
    assert "query=REDACTED&session_id=REDACTED" in line["message"]
    assert line["session_id"] == "privacy-1"  # the access line joins its request's lines
    assert line["trace_id"] == parse_sse(response.text)[0][1]["trace_id"]


async def test_untrusted_baggage_is_not_forwarded_nor_logged(
    harness_factory: HarnessFactory, live_server: LiveServerFactory, json_log: io.StringIO
) -> None:
    fake = FakeAPI()
    baggage = ",".join(f"k{i}=secret-baggage-{i}" for i in range(180))
    async with live_server(fake.app()) as api:
        h = harness_factory(**provider_settings(api.url))
        async with in_process_client(h.app) as client:
            await client.post(STREAM, json={"query": "Python"}, headers={"baggage": baggage})
            await client.post(STREAM, json={"query": "Go"}, headers={"baggage": "x" * 65_536})
    assert len(fake.requests) == 12
    assert not [r for r in fake.requests if "baggage" in r["headers"]]
    assert "secret-baggage" not in json_log.getvalue()
    assert "x" * 100 not in json_log.getvalue()


async def test_trusted_baggage_is_forwarded_and_never_logged_whole(
    harness_factory: HarnessFactory, live_server: LiveServerFactory, json_log: io.StringIO
) -> None:
    """Behind a trusted gateway (FIT_CHECK_TRUST_TRACEPARENT) the caller's context counts."""
    logging.getLogger().setLevel(logging.DEBUG)  # json_log restores the level
    fake = FakeAPI()
    async with live_server(fake.app()) as api:
        h = harness_factory(trust_incoming_trace=True, **provider_settings(api.url))
        async with in_process_client(h.app) as client:
            await client.post(STREAM, json={"query": "Python"}, headers={"baggage": "team=a"})
            await client.post(STREAM, json={"query": "Go"}, headers={"baggage": "y" * 65_536})
    assert all(r["headers"].get("baggage") == "team=a" for r in fake.requests[:6])
    assert "y" * 100 not in json_log.getvalue()
