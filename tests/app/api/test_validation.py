"""Bad input: a 4xx with a JSON body naming the field and the rule, and nothing leaked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from app.models import FitCheckRequest
from tests.helpers import Harness, HarnessFactory, in_process_client

STREAM = "/api/fit-check/stream"


def only_error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message", "errors"}
    return body


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({}, "query", "missing"),
        ({"query": ""}, "query", "string_too_short"),
        ({"query": "   \n\t "}, "query", "string_too_short"),
        ({"query": "x" * 2001}, "query", "string_too_long"),
        ({"query": 42}, "query", "string_type"),
        ({"query": ["a"]}, "query", "string_type"),
        ({"query": "ok", "include_thoughts": "maybe"}, "include_thoughts", "bool_parsing"),
        ({"query": "ok", "extra": 1}, "(unknown field)", "extra_forbidden"),
        ({"query": "nul\x00byte"}, "query", "value_error"),
        ({"query": "bell\x07"}, "query", "value_error"),
        ({"query": "ok", "session_id": "a\nb"}, "session_id", "string_pattern_mismatch"),
        ({"query": "ok", "session_id": "abc\n"}, "session_id", "string_pattern_mismatch"),
        ({"query": "ok", "session_id": 'a"b'}, "session_id", "string_pattern_mismatch"),
        ({"query": "ok", "session_id": "x" * 129}, "session_id", "string_pattern_mismatch"),
        ({"query": "ok", "session_id": "x" * 10_000}, "session_id", "string_pattern_mismatch"),
        ({"query": "ok", "session_id": "tab\there"}, "session_id", "string_pattern_mismatch"),
        ({"query": "ok", "session_id": "a/b"}, "session_id", "string_pattern_mismatch"),
        ({"query": "escape \x1b[31m red"}, "query", "value_error"),
        ({"query": "delete \x7f"}, "query", "value_error"),
        ({"query": "form \x0c feed"}, "query", "value_error"),  # inside: not trimmed
        ({"query": "ok", "session_id": ""}, "session_id", "string_pattern_mismatch"),
        ({"query": "ok", "session_id": 7}, "session_id", "string_type"),
        ({"query": "\u200b"}, "query", "string_too_short"),  # shows nothing: empty
        ({"query": " \u200b\u200c\u200d\u2060\ufeff\r\n\t "}, "query", "string_too_short"),
    ],
)
async def test_invalid_bodies_get_422_naming_field_and_rule(
    harness: Harness, client: httpx.AsyncClient, body: dict[str, Any], field: str, rule: str
) -> None:
    response = await client.post(STREAM, json=body)
    assert response.status_code == 422
    error = only_error(response)
    assert error["code"] == "INVALID_QUERY"
    assert {"field": field, "rule": rule} in [
        {"field": e["field"], "rule": e["rule"]} for e in error["errors"]
    ]
    assert harness.service.sessions.active == 0


async def test_lone_surrogate_is_rejected(client: httpx.AsyncClient) -> None:
    raw = b'{"query": "half \\ud800 a pair"}'
    response = await client.post(STREAM, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert only_error(response)["errors"][0]["field"] == "query"


async def test_rtl_marks_hebrew_and_emoji_are_fine(client: httpx.AsyncClient) -> None:
    query = "\u05de\u05d4\u05e0\u05d3\u05e1 Python\u200f \u200e engineer \U0001f40d"
    response = await client.post(STREAM, json={"query": query})
    assert response.status_code == 200
    assert "event: complete" in response.text


@pytest.mark.parametrize("char", ["\u202e", "\u202a", "\u2066", "\u2069"])
async def test_bidi_overrides_are_rejected(client: httpx.AsyncClient, char: str) -> None:
    response = await client.post(STREAM, json={"query": f"{char}Python engineer"})
    assert response.status_code == 422
    assert only_error(response)["errors"][0]["rule"] == "value_error"


@pytest.mark.parametrize("raw", [b"not json", b'{"query": ', b"[]", b"null", b'"query"'])
async def test_bodies_that_are_not_a_json_object_get_422(
    client: httpx.AsyncClient, raw: bytes
) -> None:
    response = await client.post(STREAM, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert only_error(response)["code"] == "INVALID_QUERY"


async def test_get_variant_validates_the_same_rules(client: httpx.AsyncClient) -> None:
    response = await client.get(STREAM, params={"query": "ok", "session_id": "bad id"})
    assert response.status_code == 422
    assert only_error(response)["errors"][0]["field"] == "session_id"
    response = await client.get(STREAM)
    assert response.status_code == 422
    assert only_error(response)["errors"][0] == {
        "field": "query",
        "rule": "missing",
        "message": "Field required",
    }


async def test_error_bodies_do_not_echo_the_input(client: httpx.AsyncClient) -> None:
    marker = "ECHO-ME-" + "y" * 2000
    response = await client.post(STREAM, json={"query": marker})
    assert response.status_code == 422
    assert "ECHO-ME" not in response.text


async def test_body_over_the_cap_gets_413_before_reading_it(
    harness_factory: HarnessFactory,
) -> None:
    harness = harness_factory(max_body_bytes=2048)
    async with in_process_client(harness.app) as client:
        response = await client.post(
            STREAM,
            content=b'{"query": "' + b"x" * 5000 + b'"}',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 413
        assert only_error(response)["code"] == "PAYLOAD_TOO_LARGE"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"query": "'
            for _ in range(10):
                yield b"x" * 1000
            yield b'"}'

        response = await client.post(
            STREAM, content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        ok = await client.post(STREAM, json={"query": "Python"})
        assert ok.status_code == 200


async def test_unknown_paths_and_methods_are_json_4xx(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nope")
    assert missing.status_code == 404 and only_error(missing)["code"] == "NOT_FOUND"
    wrong = await client.put(STREAM, json={"query": "x"})
    assert wrong.status_code == 405 and only_error(wrong)["code"] == "METHOD_NOT_ALLOWED"


async def test_unknown_fields_are_not_echoed(client: httpx.AsyncClient) -> None:
    response = await client.post(STREAM, json={"query": "ok", "<script>alert(1)</script>": 1})
    assert response.status_code == 422
    assert "script" not in response.text
    assert only_error(response)["errors"][0]["field"] == "(unknown field)"


async def test_error_answers_are_bounded_whatever_the_input(client: httpx.AsyncClient) -> None:
    body = {"query": "ok", **{f"k{i:05d}": i for i in range(1200)}}  # about 15 KB
    many_keys = await client.post(STREAM, json=body)
    params = {"query": "ok", **{f"p{i:05d}": "v" for i in range(4000)}}  # a 41 KB URL
    long_url = await client.get(STREAM, params=params)
    for response in (many_keys, long_url):
        assert response.status_code == 422
        assert len(response.content) < 2048, len(response.content)
        assert "k00001" not in response.text and "p00001" not in response.text


@pytest.mark.parametrize(
    "body",
    [
        {"query": "x" * 2000},  # the longest query
        {"query": "  " + "x" * 2000 + "\n"},  # counted after trimming
        {"query": "x"},  # the shortest
        {"query": "tab\tand\nnewline\rreturn"},  # the whitespace controls a text may hold
        {"query": "ok", "session_id": "s" * 128},  # the longest session id
        {"query": "ok", "session_id": "Az09._:-"},  # every kind of character it may hold
    ],
)
async def test_the_limits_themselves_are_accepted(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await client.post(STREAM, json=body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("surrogate", ["\ud800", "\udbff", "\udc00", "\udfff"])
def test_no_lone_surrogate_gets_through_the_model(surrogate: str) -> None:
    """Over HTTP the JSON parser already refuses or replaces most of them; the model is the
    rule for every way in."""
    with pytest.raises(ValidationError):
        FitCheckRequest(query=f"half {surrogate} a pair")


async def test_a_query_of_invisible_characters_is_refused_as_empty_in_both_forms(
    harness: Harness, client: httpx.AsyncClient
) -> None:
    invisible = "\u200b\u200c\u200d\u2060\ufeff"
    for response in (
        await client.post(STREAM, json={"query": invisible}),
        await client.get(STREAM, params={"query": f" {invisible} "}),
    ):
        assert response.status_code == 422
        assert only_error(response) == {
            "code": "INVALID_QUERY",
            "message": "query: String should have at least 1 visible character",
            "errors": [
                {
                    "field": "query",
                    "rule": "string_too_short",
                    "message": "String should have at least 1 visible character",
                }
            ],
        }
    assert harness.service.sessions.active == 0
    joined = await client.post(STREAM, json={"query": "Python\u200d engineer\u200b"})
    assert joined.status_code == 200  # zero-width characters among visible ones are fine


@pytest.mark.parametrize("sent", ["Go\r\nKafka\rRust", "Go\nKafka\nRust"])
def test_a_carriage_return_is_read_as_a_newline(sent: str) -> None:
    """Only tab and newline among the controls: CRLF (a form's textarea) and a lone CR are
    newlines by the time any rule or the analysis sees the query."""
    assert FitCheckRequest(query=sent).query == "Go\nKafka\nRust"
