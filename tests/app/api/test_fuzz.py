"""Property-based fuzzing: the API from its own OpenAPI schema, the request model directly."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.asgi import build_app
from app.models import FitCheckRequest
from app.pipeline.event_ids import LastEventId, event_id, parse_last_event_id
from otel.redact import redact_url
from otel.testing import captured_telemetry
from tests.helpers import in_process_client, make_settings

OPERATIONS = [
    ("/api/fit-check/stream", "POST"),
    ("/api/fit-check/stream", "GET"),
    ("/api/fit-check/health", "GET"),
    ("/health", "GET"),
    ("/ready", "GET"),
]


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_api_never_answers_5xx_and_matches_its_schema(path: str, method: str) -> None:
    app = build_app(make_settings(max_concurrent_sessions=1000), captured_telemetry().runtime)
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case[Any]) -> None:
        response = case.call()
        assert response.status_code < 500, response.text
        # All response checks. Not "valid data accepted": the generator does not honour the
        # query's documented pattern and sends control characters the API rightly refuses.
        case.validate_response(response, excluded_checks=[positive_data_acceptance])

    check()


_text = st.text(st.characters(codec=None), max_size=2100)


@given(
    query=_text,
    session_id=st.one_of(st.none(), st.text(max_size=140)),
    include=st.one_of(st.booleans(), st.text(max_size=5), st.integers()),
)
@settings(max_examples=400, deadline=None)
def test_request_model_accepts_or_rejects_cleanly(
    query: str, session_id: str | None, include: bool | str | int
) -> None:
    body = {"query": query, "session_id": session_id, "include_thoughts": include}
    try:
        request = FitCheckRequest.model_validate(body)
    except ValidationError as exc:
        # Rejections name real fields and carry JSON-safe messages.
        for error in exc.errors():
            assert error["loc"][0] in {"query", "session_id", "include_thoughts"}
        return
    assert 1 <= len(request.query) <= 2000
    assert request.query == request.query.strip()
    json.dumps(request.model_dump(), ensure_ascii=False).encode("utf-8")  # encodable
    if request.session_id is not None:
        assert all(c.isascii() and (c.isalnum() or c in "._:-") for c in request.session_id)


@given(value=st.text(max_size=80))
@settings(max_examples=300, deadline=None)
def test_any_last_event_id_parses_to_an_id_of_ours_or_none(value: str) -> None:
    parsed = parse_last_event_id(value)
    if parsed is not None:
        assert event_id(parsed.key, parsed.seq, terminal=parsed.terminal) == value


@given(key=st.from_regex(r"[A-Za-z0-9_-]{16}", fullmatch=True), seq=st.integers(0, 10**9 - 1))
def test_every_id_we_send_reads_back(key: str, seq: int) -> None:
    for terminal in (False, True):
        parsed = parse_last_event_id(event_id(key, seq, terminal=terminal))
        assert parsed == LastEventId(key=key, seq=seq, terminal=terminal)


@given(path=st.text(max_size=40), query=st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_a_redacted_url_keeps_no_query_value(path: str, query: str) -> None:
    redacted = redact_url(f"/{path.replace('?', '')}?{query}")
    kept = redacted.split("?", 1)[1]
    for pair in filter(None, kept.split("&")):
        name, _, value = pair.partition("=")
        assert value == "REDACTED"
        assert name == "REDACTED" or re.fullmatch(r"[A-Za-z0-9_.\-]{1,32}", name)


_header_value = st.binary(max_size=200).filter(lambda b: b"\r" not in b and b"\n" not in b)


_ours = st.from_regex(r"[A-Za-z0-9_-]{16}\.[0-9]{1,9}(\.end)?", fullmatch=True).map(str.encode)


@given(
    origin=st.one_of(st.none(), _header_value, st.just(b"http://localhost:3003")),
    last_event_id=st.one_of(st.none(), _header_value, _ours),
    baggage=st.one_of(st.none(), _header_value),
)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
async def test_hostile_origin_resume_and_baggage_headers_never_get_a_5xx(
    origin: bytes | None, last_event_id: bytes | None, baggage: bytes | None
) -> None:
    app = build_app(make_settings(), captured_telemetry().runtime)
    given_headers = {b"origin": origin, b"last-event-id": last_event_id, b"baggage": baggage}
    headers = {k: v for k, v in given_headers.items() if v is not None}
    async with in_process_client(app) as client:
        response = await client.get(
            "/api/fit-check/stream", params={"query": "Python"}, headers=headers
        )
    assert response.status_code in (200, 204, 400, 403, 422), response.text
    if last_event_id and response.status_code == 200:
        raise AssertionError("a reconnect started a new analysis")
    if response.status_code not in (200, 204):
        assert set(response.json()) == {"code", "message", "errors"}
