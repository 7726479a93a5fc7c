"""The start-up line: what this instance talks to, said once, so nobody has to guess.

A newcomer sees which providers and model answer, that search stays on the fictional
sample corpus until Google is configured, where traces and metrics go, and the sampler;
an operator sees the same in the first line of every instance's log.
"""

from __future__ import annotations

import logging
import os

from app.config import Settings

log = logging.getLogger("fit_check.startup")


def metrics_served(settings: Settings) -> str:
    if settings.otel_sdk_disabled:
        return "off (OTEL_SDK_DISABLED)"
    where = (
        f"port {settings.metrics_port} on {settings.metrics_host}"
        if settings.metrics_port is not None
        else "/metrics on the service's port"
    )
    return where + (" with a bearer token" if settings.metrics_token else "")


def ready_fields(settings: Settings, llm_model: str, exports: dict[str, str]) -> dict[str, str]:
    search = (
        "google (Custom Search JSON API)"
        if settings.search_provider == "google"
        else "offline (the fictional sample corpus; FIT_CHECK_SEARCH_PROVIDER=google for real)"
    )
    llm = f"{settings.llm_provider} ({llm_model}" + (
        f" at {settings.openai_base_url})" if settings.llm_provider == "openai" else ")"
    )
    return {
        "listen": f"http://{settings.host}:{settings.port}",
        "llm": llm,
        "search": search,
        "traces": exports.get("traces", "none"),
        "metrics_push": exports.get("metrics", "none"),
        "metrics": metrics_served(settings),
        "sampler": os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on")
        + (
            f" {os.environ['OTEL_TRACES_SAMPLER_ARG']}"
            if "OTEL_TRACES_SAMPLER_ARG" in os.environ
            else ""
        ),
    }


def warnings_for(settings: Settings) -> list[str]:
    """What is allowed but probably not meant. (Missing Google credentials are refused by
    the settings: that API cannot work without them.)"""
    found = []
    if settings.llm_provider == "openai" and not settings.openai_api_key:
        found.append(
            "FIT_CHECK_LLM_PROVIDER=openai without OPENAI_API_KEY: fine for a local "
            f"OpenAI-compatible server, but {settings.openai_base_url} may answer 401"
        )
    if settings.capture_content:
        found.append(
            "FIT_CHECK_CAPTURE_CONTENT=true: prompts and completions, which hold the users' "
            "text, are recorded on spans"
        )
    return found


def announce(settings: Settings, llm_model: str, exports: dict[str, str]) -> None:
    fields = ready_fields(settings, llm_model, exports)
    log.info(
        "fit-check ready: " + "; ".join(f"{name} {value}" for name, value in fields.items()),
        extra=fields,
    )
    for warning in warnings_for(settings):
        log.warning(warning)
