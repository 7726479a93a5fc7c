"""The start-up line: what this instance talks to, said once, so nobody has to guess.

A newcomer sees which providers and model answer, that search stays on the fictional
sample corpus until Google is configured, where traces and metrics go, and the sampler;
an operator sees the same in the first line of every instance's log. Before any of it,
``profile_problem`` checks the one file the settings name that the service reads, so a
wrong path is one line at start-up, not a traceback or a worker that fails again and again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from app.config import Settings
from app.pipeline.analysis import load_profile
from app.providers.prices import PriceTable

log = logging.getLogger("fit_check.startup")


#: What ``load_profile`` needs of a profile file, for the one line that says it is not one.
PROFILE_SHAPE = (
    'a JSON object with "name" and "skills", a list of {"name": str, "level": int}, as '
    "app/providers/data/engineer_profile.json"
)


def profile_problem(path: Path | None) -> str | None:
    """Why the profile at ``FIT_CHECK_PROFILE`` cannot be used, in one line; None when it
    loads (or when none is set: the bundled sample is used)."""
    if path is None:
        return None
    where = f"FIT_CHECK_PROFILE: {path}"
    try:
        load_profile(path)
    except FileNotFoundError:
        return f"{where} does not exist"
    except IsADirectoryError:
        return f"{where} is a directory, not a file"
    except PermissionError:
        return f"{where} cannot be read (permission denied)"
    except OSError as exc:
        return f"{where} cannot be read ({exc.strerror or type(exc).__name__})"
    except UnicodeDecodeError:
        return f"{where} is not UTF-8 text"
    except json.JSONDecodeError as exc:
        return f"{where} is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
    except KeyError as exc:
        return f"{where} is not a profile: {exc} is missing; it needs {PROFILE_SHAPE}"
    except (TypeError, ValueError, AttributeError):
        return f"{where} is not a profile: it needs {PROFILE_SHAPE}"
    return None


def log_file_problem(path: Path | None) -> str | None:
    """Why ``FIT_CHECK_LOG_FILE`` cannot be appended to, in one line; None when it can.
    Missing directories are made at start-up, so the nearest one that exists must take
    them (with several workers each appends to a file beside it, in the same directory)."""
    if path is None:
        return None
    where = f"FIT_CHECK_LOG_FILE: {path}"
    if path.is_dir():
        return f"{where} is a directory, not a file"
    existing = path if path.exists() else next(p for p in path.parents if p.exists())
    if existing != path and not existing.is_dir():
        return f"{where}: {existing} is not a directory"
    if not os.access(existing, os.W_OK):
        return f"{where} cannot be written (permission denied on {existing})"
    return None


def prices_problem(path: Path | None) -> str | None:
    """Why the price table at ``FIT_CHECK_PRICES_FILE`` cannot be used, in one line."""
    if path is None:
        return None
    try:
        PriceTable.load(path)
    except ValueError as exc:
        return f"FIT_CHECK_PRICES_FILE: {exc}"
    return None


def file_problem(settings: Settings) -> str | None:
    """The first file named in the settings that the service could not use, in one line."""
    return (
        profile_problem(settings.profile_path)
        or prices_problem(settings.prices_file)
        or log_file_problem(settings.log_file)
    )


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
        "sampler": settings.traces_sampler
        + ("" if settings.traces_sampler_arg is None else f" {settings.traces_sampler_arg}"),
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
    if settings.content_capture != "NO_CONTENT":
        found.append(
            f"content capture {settings.content_capture}: prompts and completions, which "
            "hold the users' text, are recorded on spans (e-mail addresses and phone numbers "
            "masked)"
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
