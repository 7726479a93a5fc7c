"""Every event the service sends matches the schema ``/openapi.json`` publishes for it."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import pytest

from app.pipeline.events import EVENT_PAYLOADS
from app.providers.base import SearchResult
from tests.fakes import CountingSearch, counting_providers
from tests.helpers import (
    HarnessFactory,
    LiveClientFactory,
    in_process_client,
    parse_sse,
    wait_until,
)

STREAM = "/api/fit-check/stream"
QUERY = {"query": "Senior Python engineer, Kafka"}


class BrokenSearch(CountingSearch):
    """Results the analysis cannot read: a crash outside any provider call."""

    async def search(self, query: str, *, limit: int) -> list[SearchResult]:
        # skills=None is what a provider bug would send: the analysis cannot iterate it.
        return [SearchResult(title="t", url="u", snippet="s", skills=None)]  # type: ignore[arg-type]


async def published(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
    """(event name -> its data schema, components) from the OpenAPI document."""
    document = (await client.get("/openapi.json")).json()
    stream = document["paths"][STREAM]["post"]["responses"]["200"]["content"]
    variants = stream["text/event-stream"]["schema"]["oneOf"]
    components = document["components"]["schemas"]
    schemas = {}
    for variant in variants:
        ref = variant["properties"]["data"]["contentSchema"]["$ref"]
        schemas[variant["properties"]["event"]["const"]] = components[ref.rsplit("/", 1)[1]]
    return schemas, components


def assert_events_match(events: list[tuple[str, dict[str, Any]]], schemas: dict[str, Any]) -> None:
    assert events, "no events"
    for name, data in events:
        assert name in schemas, f"{name} is not a published event"
        jsonschema.validate(data, schemas[name])


async def test_the_published_events_are_exactly_the_ones_defined(client: httpx.AsyncClient) -> None:
    schemas, _ = await published(client)
    assert set(schemas) == set(EVENT_PAYLOADS)
    assert schemas["error"]["properties"]["code"]["enum"] == [
        "AGENT_ERROR",
        "SEARCH_ERROR",
        "LLM_ERROR",
        "TIMEOUT",
        "SHUTTING_DOWN",
        "SLOW_READER",
        "INTERRUPTED",
    ]
    assert all(schema.get("additionalProperties") is False for schema in schemas.values())


@pytest.mark.parametrize(
    ("setup", "terminal"),
    [
        ({}, ("complete", None)),
        ({"include_thoughts": False}, ("complete", None)),
        ({"search_fail": True}, ("error", "SEARCH_ERROR")),
        ({"llm_fail": True}, ("error", "LLM_ERROR")),
        ({"request_timeout_s": 0.2, "llm_delay_s": 1.0}, ("error", "TIMEOUT")),
        ({"broken_search": True}, ("error", "AGENT_ERROR")),
    ],
)
async def test_every_event_on_each_path_matches_its_published_schema(
    harness_factory: HarnessFactory, setup: dict[str, Any], terminal: tuple[str, str | None]
) -> None:
    setup = dict(setup)
    include_thoughts = setup.pop("include_thoughts", True)
    timeout = setup.pop("request_timeout_s", 120.0)
    providers, _, _ = counting_providers(**{k: v for k, v in setup.items() if k != "broken_search"})
    if setup.get("broken_search"):
        providers.search = BrokenSearch()
    h = harness_factory(providers=providers, request_timeout_s=timeout)
    async with in_process_client(h.app) as client:
        schemas, _ = await published(client)
        response = await client.post(STREAM, json={**QUERY, "include_thoughts": include_thoughts})
    events = parse_sse(response.text)
    assert_events_match(events, schemas)
    name, data = events[-1]
    assert (name, data.get("code")) == terminal


async def test_a_drained_stream_matches_its_published_schema(
    live_client: LiveClientFactory,
) -> None:
    providers, _, llm = counting_providers(llm_delay_s=5)
    async with live_client(providers=providers, shutdown_grace_s=0) as (_, client, server):
        schemas, _ = await published(client)
        async with client.stream("POST", STREAM, json=QUERY) as response:
            await wait_until(lambda: llm.active == 1)
            server.server.request_drain()
            text = "".join([chunk async for chunk in response.aiter_text()])
    events = parse_sse(text)
    assert_events_match(events, schemas)
    assert events[-1][0] == "error" and events[-1][1]["code"] == "SHUTTING_DOWN"
