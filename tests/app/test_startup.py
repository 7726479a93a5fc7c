"""The start-up line says what the instance talks to; doubtful settings warn or refuse."""

from __future__ import annotations

import io
import json

import pytest
from pydantic import ValidationError

from tests.helpers import HarnessFactory, LiveServerFactory, make_settings


def lines_of(buffer: io.StringIO, logger: str) -> list[dict[str, str]]:
    return [
        record
        for record in map(json.loads, buffer.getvalue().splitlines())
        if record["logger"] == logger
    ]


async def test_ready_line_names_providers_exports_metrics_and_sampler(
    harness_factory: HarnessFactory, live_server: LiveServerFactory, json_log: io.StringIO
) -> None:
    h = harness_factory()
    async with live_server(h.app):
        pass
    (ready,) = [r for r in lines_of(json_log, "fit_check.startup") if r["level"] == "INFO"]
    assert ready["message"].startswith("fit-check ready: ")
    assert ready["llm"] == "offline (offline-analyzer)"
    assert "fictional sample corpus" in ready["search"]
    assert ready["traces"] == ready["metrics_push"] == "none"
    assert ready["metrics"] == "/metrics on the service's port"
    assert ready["sampler"] == "parentbased_always_on"


async def test_openai_without_a_key_warns(
    harness_factory: HarnessFactory, live_server: LiveServerFactory, json_log: io.StringIO
) -> None:
    h = harness_factory(llm_provider="openai", openai_base_url="http://127.0.0.1:9/v1")
    async with live_server(h.app):
        pass
    warnings = [r for r in lines_of(json_log, "fit_check.startup") if r["level"] == "WARNING"]
    assert len(warnings) == 1 and "OPENAI_API_KEY" in warnings[0]["message"]


def test_google_search_without_its_credentials_is_refused() -> None:
    with pytest.raises(ValidationError, match="GOOGLE_API_KEY and GOOGLE_CSE_ID"):
        make_settings(search_provider="google", google_api_key="k")
