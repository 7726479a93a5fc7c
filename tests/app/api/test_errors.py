"""Error answers built from pydantic's and Starlette's errors: the fields they may name,
their messages, their bounds, and the ``Allow`` of a 405."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from starlette.routing import Mount, Route, Router

from app.api.errors import _field_errors, error_response, install_error_handlers
from app.rejections import RejectionReason
from tests.helpers import in_process_client


def fields(*raw: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(e.field, e.rule, e.message) for e in _field_errors(list(raw))]


def test_the_location_names_the_field_without_where_it_came_from() -> None:
    assert fields(
        {"loc": ("body", "query"), "type": "missing", "msg": "Field required"},
        {"loc": ("query", "session_id"), "type": "string_pattern_mismatch", "msg": "m"},
        {"loc": ("header", "Last-Event-ID"), "type": "value_error", "msg": "m"},
        {"loc": ("body", "rating"), "type": "literal_error", "msg": "m"},
        {"loc": ("path", "query"), "type": "t", "msg": "m"},
        {"loc": ("query", "body", "query"), "type": "u", "msg": "m"},
    ) == [
        ("query", "missing", "Field required"),
        ("session_id", "string_pattern_mismatch", "m"),
        ("Last-Event-ID", "value_error", "m"),
        ("rating", "literal_error", "m"),
        ("(unknown field).query", "t", "m"),
        ("(unknown field).query", "u", "m"),
    ]


def test_a_field_the_client_made_up_is_never_named() -> None:
    assert fields(
        {"loc": ("body", "<script>"), "type": "extra_forbidden", "msg": "Extra inputs"},
        {"loc": ("body", "query", 3, "x"), "type": "t", "msg": "m"},
    ) == [
        (
            "(unknown field)",
            "extra_forbidden",
            "unknown field; accepted: query, session_id, include_thoughts",
        ),
        ("query.3.(unknown field)", "t", "m"),
    ]


def test_a_whole_body_error_and_missing_keys_have_names() -> None:
    assert fields({"loc": ("body",), "type": "json_invalid", "msg": "bad"}, {}) == [
        ("body", "json_invalid", "bad"),
        ("body", "invalid", "invalid"),
    ]
    assert fields({"loc": (), "msg": "m"}) == [("body", "invalid", "m")]


def test_each_field_and_rule_once_and_nothing_after_a_repeat_lost() -> None:
    raw = [{"loc": ("body", f"k{n}"), "type": "extra_forbidden", "msg": "x"} for n in range(1000)]
    raw += [
        {"loc": ("body", "query"), "type": "string_too_long", "msg": "long"},
        {"loc": ("body", "query"), "type": "string_too_long", "msg": "again"},
        {"loc": ("body", "query"), "type": "string_too_short", "msg": "short"},
    ]
    assert [(field, rule) for field, rule, _ in fields(*raw)] == [
        ("(unknown field)", "extra_forbidden"),
        ("query", "string_too_long"),
        ("query", "string_too_short"),
    ]
    assert fields(*raw)[1][2] == "long"


def test_messages_lose_pydantics_prefix_and_are_bounded() -> None:
    assert fields(
        {"loc": ("body", "query"), "type": "value_error", "msg": "Value error, no controls"},
        {"loc": ("body", "session_id"), "type": "t", "msg": "x" * 500},
        {"loc": ("body", "include_thoughts"), "type": "t", "msg": "keeps Value error, inside"},
    ) == [
        ("query", "value_error", "no controls"),
        ("session_id", "t", "x" * 200),
        ("include_thoughts", "t", "keeps Value error, inside"),
    ]


def test_error_response_is_the_one_shape_with_its_headers() -> None:
    response = error_response(429, "RATE_LIMITED", "busy", headers={"Retry-After": "3"})
    assert response.status_code == 429
    assert response.body == b'{"code":"RATE_LIMITED","message":"busy","errors":[]}'
    assert response.headers["retry-after"] == "3"
    assert response.headers["content-type"] == "application/json"


class Rejections(list[RejectionReason]):
    def __call__(self, reason: RejectionReason) -> None:
        self.append(reason)


def small_app() -> tuple[FastAPI, Rejections]:
    app = FastAPI()
    rejections = Rejections()

    @app.get("/both")
    async def get_both() -> dict[str, str]:
        return {}

    @app.post("/both")
    async def post_both(n: int) -> dict[str, int]:
        return {"n": n}

    @app.get("/get-only")
    async def get_only() -> dict[str, str]:
        return {}

    @app.put("/put")
    async def put() -> dict[str, str]:
        return {}

    @app.get("/raise/{status}")
    async def raises(status: int) -> None:
        raise HTTPException(status, detail=f"status {status}", headers={"X-Why": "test"})

    async def inner(_request: Any) -> None:
        return None

    app.router.routes.append(Mount("/mounted", app=Router([Route("/x", inner, methods=["POST"])])))
    install_error_handlers(app, rejections, get_only={"/get-only"})
    return app, rejections


async def call(method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, Rejections]:
    app, rejections = small_app()
    async with in_process_client(app) as client:
        return await client.request(method, path, **kwargs), rejections


async def test_a_405_allows_every_method_of_every_route_on_the_path() -> None:
    response, rejections = await call("DELETE", "/both")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"
    assert response.json() == {
        "code": "METHOD_NOT_ALLOWED",
        "message": "Method Not Allowed",
        "errors": [],
    }
    assert rejections == []
    response, _ = await call("GET", "/put")
    assert response.headers["allow"] == "PUT"
    response, _ = await call("POST", "/get-only")
    assert response.headers["allow"] == "GET"


async def test_a_mounted_app_names_its_own_methods() -> None:
    response, _ = await call("GET", "/mounted/x")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["code"] == "METHOD_NOT_ALLOWED"


async def test_http_errors_keep_their_status_detail_and_headers() -> None:
    expected = {400: "BAD_REQUEST", 404: "NOT_FOUND", 413: "PAYLOAD_TOO_LARGE"}
    expected |= {429: "RATE_LIMITED", 418: "HTTP_ERROR", 409: "HTTP_ERROR"}
    for status, code in expected.items():
        response, rejections = await call("GET", f"/raise/{status}")
        assert response.status_code == status
        assert response.json() == {"code": code, "message": f"status {status}", "errors": []}
        assert response.headers["x-why"] == "test"
        assert "allow" not in response.headers
        assert rejections == []
    response, _ = await call("GET", "/nowhere")
    assert response.json() == {"code": "NOT_FOUND", "message": "Not Found", "errors": []}


async def test_invalid_input_is_a_422_summing_up_each_error_and_counted_once() -> None:
    response, rejections = await call("POST", "/both", params={"n": "x"})
    assert response.status_code == 422
    assert response.json() == {
        "code": "INVALID_QUERY",
        "message": "(unknown field): Input should be a valid integer, unable to parse string "
        "as an integer",
        "errors": [
            {
                "field": "(unknown field)",
                "rule": "int_parsing",
                "message": "Input should be a valid integer, unable to parse string as an integer",
            }
        ],
    }
    assert rejections == ["invalid_request"]
    response, _ = await call("POST", "/both")
    assert response.json()["message"] == "(unknown field): Field required"


async def test_several_errors_are_joined_and_none_has_a_plain_summary() -> None:
    app = FastAPI()
    rejections = Rejections()

    @app.get("/two")
    async def two(query: int, session_id: int) -> None:
        return None

    @app.get("/invalid")
    async def invalid() -> None:
        raise RequestValidationError([])

    install_error_handlers(app, rejections)
    async with in_process_client(app) as client:
        two_errors = await client.get("/two")
        no_errors = await client.get("/invalid")
    assert two_errors.json()["message"] == "query: Field required; session_id: Field required"
    assert no_errors.status_code == 422
    assert no_errors.json() == {"code": "INVALID_QUERY", "message": "Invalid request", "errors": []}
    assert rejections == ["invalid_request", "invalid_request"]
