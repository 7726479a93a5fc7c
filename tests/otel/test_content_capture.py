"""Content capture by the GenAI conventions' variable, masked before it leaves."""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from pydantic import ValidationError

from app.asgi import build_app, telemetry_config
from otel.content import ContentRedactor
from otel.testing import captured_telemetry
from tests.helpers import attrs, in_process_client, make_settings

STREAM = "/api/fit-check/stream"
QUERY = {
    "query": "Staff engineer at Acme; write to jane.doe@acme.example or +1 (415) 555-0199, "
    "Kafka 2019-2024, ticket ZX-4411",
    "session_id": "capture-1",
}


async def llm_spans(**env: object) -> list[ReadableSpan]:
    settings = make_settings(**env)
    captured = captured_telemetry(telemetry_config(settings))
    async with in_process_client(build_app(settings, captured.runtime)) as client:
        response = await client.post(STREAM, json=QUERY)
    assert response.status_code == 200
    return [s for s in captured.finished_spans() if s.name.startswith("chat ")]


@pytest.mark.parametrize(
    ("mode", "on_span", "as_event"),
    [
        ("NO_CONTENT", False, False),
        ("SPAN_ONLY", True, False),
        ("EVENT_ONLY", False, True),
        ("SPAN_AND_EVENT", True, True),
    ],
)
async def test_each_mode_puts_content_where_it_says(
    mode: str, on_span: bool, as_event: bool
) -> None:
    spans = await llm_spans(capture_message_content=mode)
    assert len(spans) == 3
    for span in spans:
        assert ("gen_ai.input.messages" in attrs(span)) is on_span
        events = [e for e in span.events if e.name == "gen_ai.client.inference.operation.details"]
        assert bool(events) is as_event


async def test_captured_content_is_masked_before_it_leaves() -> None:
    spans = await llm_spans(capture_message_content="SPAN_ONLY", content_redact_pattern=r"ZX-\d+")
    sent = " ".join(str(attrs(s)["gen_ai.input.messages"]) for s in spans)
    assert "acme.example" not in sent and "555-0199" not in sent and "ZX-4411" not in sent
    assert "[email]" in sent and "[phone]" in sent and "[redacted]" in sent
    assert "2019-2024" in sent  # a year range is not a phone number
    json.loads(str(attrs(spans[0])["gen_ai.input.messages"]))


def test_the_variable_takes_the_four_values_the_old_booleans_and_nothing_else() -> None:
    assert make_settings().content_capture == "NO_CONTENT"
    assert make_settings(capture_message_content="span_only").content_capture == "SPAN_ONLY"
    assert make_settings(capture_message_content="true").content_capture == "SPAN_ONLY"
    assert make_settings(capture_content=True).content_capture == "SPAN_ONLY"
    both = make_settings(capture_content=True, capture_message_content="NO_CONTENT")
    assert both.content_capture == "NO_CONTENT"
    with pytest.raises(ValidationError):
        make_settings(capture_message_content="EVERYTHING")
    with pytest.raises(ValidationError):
        make_settings(content_redact_pattern="(")


def test_the_redactor_keeps_what_is_not_personal() -> None:
    redact = ContentRedactor()
    assert redact("Python 3.11, since 2019-2024, port 8000") == (
        "Python 3.11, since 2019-2024, port 8000"
    )
    assert redact("mail a.b+c@x.co.uk now") == "mail [email] now"
    assert redact("call 030 1234 5678") == "call [phone]"
