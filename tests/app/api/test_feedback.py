"""Users' verdicts: into the session's own trace, once per session, only by a reader of its
stream, bounded and rate-limited."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from opentelemetry.trace import SpanKind

from app.asgi import build_app
from otel.testing import captured_telemetry
from otel.wiring import TelemetryConfig
from tests.helpers import (
    Harness,
    HarnessFactory,
    attrs,
    in_process_client,
    make_settings,
    parse_sse,
)

STREAM = "/api/fit-check/stream"
FEEDBACK = "/api/fit-check/feedback"
QUERY = {"query": "Senior Python engineer, Kafka", "session_id": "rated-1"}


async def stream_key(client: httpx.AsyncClient) -> tuple[str, str]:
    """A whole stream; its key (from an event id) and its trace id."""
    response = await client.post(STREAM, json=QUERY)
    event_id = next(line[4:] for line in response.text.splitlines() if line.startswith("id: "))
    return event_id.split(".")[0], parse_sse(response.text)[0][1]["trace_id"]


async def test_a_verdict_lands_in_the_sessions_trace_once(
    harness: Harness, json_log: io.StringIO
) -> None:
    async with in_process_client(harness.app) as client:
        key, trace_id = await stream_key(client)
        first = await client.post(FEEDBACK, json={"stream_key": key, "rating": "down"})
        again = await client.post(FEEDBACK, json={"stream_key": key, "rating": "up"})
    assert first.status_code == 202 and first.json() == {"status": "recorded"}
    assert again.status_code == 409 and again.json()["code"] == "FEEDBACK_EXISTS"
    spans = harness.telemetry.finished_spans()
    (root,) = [s for s in spans if s.kind == SpanKind.SERVER and s.name.startswith("POST")][:1]
    (verdict,) = [s for s in spans if s.name == "fit_check.feedback"]
    assert format(verdict.context.trace_id, "032x") == trace_id
    assert verdict.parent is not None and verdict.parent.span_id == root.context.span_id
    assert attrs(verdict)["gen_ai.evaluation.score.label"] == "down"
    assert attrs(verdict)["gen_ai.evaluation.score.value"] == 0.0
    assert attrs(verdict)["session_id"] == attrs(verdict)["gen_ai.conversation.id"] == "rated-1"
    (event,) = verdict.events
    assert event.name == "gen_ai.evaluation.result"
    assert harness.telemetry.value("fit_check.feedback", rating="down", model="offline-analyzer")
    assert harness.telemetry.value("fit_check.feedback", rating="up", model="offline-analyzer") == 0
    lines = [json.loads(x) for x in json_log.getvalue().splitlines()]
    (logged,) = [x for x in lines if x["message"] == "Feedback received"]
    assert logged["trace_id"] == trace_id and logged["session_id"] == "rated-1"


async def test_the_comment_stays_off_the_trace_without_content_capture() -> None:
    for capture, expected in ((False, None), (True, "Missed the Kafka work")):
        settings = make_settings(capture_content=capture)
        captured = captured_telemetry(TelemetryConfig(capture_content=capture))
        h = Harness(build_app(settings, captured.runtime), captured, settings)
        async with in_process_client(h.app) as client:
            key, _ = await stream_key(client)
            body = {"stream_key": key, "rating": "up", "comment": "Missed the Kafka work"}
            assert (await client.post(FEEDBACK, json=body)).status_code == 202
        (verdict,) = [s for s in h.telemetry.finished_spans() if s.name == "fit_check.feedback"]
        assert attrs(verdict).get("gen_ai.evaluation.explanation") == expected


async def test_an_unknown_key_a_bad_rating_and_a_long_comment_are_refused(
    harness: Harness,
) -> None:
    async with in_process_client(harness.app) as client:
        unknown = await client.post(
            FEEDBACK, json={"stream_key": "AAAAAAAAAAAAAAAA", "rating": "up"}
        )
        key, _ = await stream_key(client)
        bad_rating = await client.post(FEEDBACK, json={"stream_key": key, "rating": "5"})
        long_comment = await client.post(
            FEEDBACK, json={"stream_key": key, "rating": "up", "comment": "x" * 1001}
        )
        bad_key = await client.post(FEEDBACK, json={"stream_key": "../etc", "rating": "up"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "UNKNOWN_SESSION"
    for response in (bad_rating, long_comment, bad_key):
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "INVALID_QUERY"
    assert not [s for s in harness.telemetry.finished_spans() if s.name == "fit_check.feedback"]


@pytest.mark.parametrize("limit", [3])
async def test_a_flood_of_verdicts_is_rate_limited(
    harness_factory: HarnessFactory, limit: int
) -> None:
    h = harness_factory(feedback_per_client_per_minute=limit)
    async with in_process_client(h.app) as client:
        codes = [
            (
                await client.post(FEEDBACK, json={"stream_key": "AAAAAAAAAAAAAAAA", "rating": "up"})
            ).status_code
            for _ in range(limit + 2)
        ]
    assert codes == [404] * limit + [429, 429]
