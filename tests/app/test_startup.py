"""The start-up line says what the instance talks to; doubtful settings warn or refuse."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.startup import log_file_problem, profile_problem, ready_fields
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
    assert ready["traces"] == "memory (/trace/{id}: the last 50 traces, at most 5 MiB)"
    assert ready["metrics_push"] == "none"
    assert ready["metrics"] == "/metrics on the service's port"
    assert ready["sampler"] == "parentbased_always_on"


def test_ready_line_names_the_sampler_and_its_argument() -> None:
    settings = make_settings(traces_sampler="parentbased_traceidratio", traces_sampler_arg="0.1")
    assert ready_fields(settings, "m", {})["sampler"] == "parentbased_traceidratio 0.1"


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


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "does not exist"),
        (b"\xff\xfe not text", "is not UTF-8 text"),
        (b"name: Alex", "is not JSON (Expecting value at line 1, column 1)"),
        (b"[]", "is not a profile: it needs"),
        (b'{"name": "Alex"}', "is not a profile: 'skills' is missing"),
        (b'{"name": "Alex", "skills": ["python"]}', "is not a profile: it needs"),
        (b'{"name": "Alex", "skills": [{"name": "go", "level": "expert"}]}', "is not a profile"),
        (b'{"name": "Alex", "skills": [{"name": 7, "level": 3}]}', "is not a profile"),
    ],
)
def test_a_profile_that_cannot_be_used_is_one_line_naming_its_variable(
    tmp_path: Path, content: bytes | None, problem: str
) -> None:
    path = tmp_path / "profile.json"
    if content is not None:
        path.write_bytes(content)
    line = profile_problem(path)
    assert line is not None
    assert line.startswith(f"FIT_CHECK_PROFILE: {path} {problem}"), line
    assert "\n" not in line


def test_a_directory_is_not_a_profile(tmp_path: Path) -> None:
    assert profile_problem(tmp_path) == f"FIT_CHECK_PROFILE: {tmp_path} is a directory, not a file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file: none is unreadable")
def test_an_unreadable_profile_says_so(tmp_path: Path) -> None:
    locked = tmp_path / "locked.json"
    locked.write_text("{}")
    locked.chmod(0)
    assert profile_problem(locked) == (
        f"FIT_CHECK_PROFILE: {locked} cannot be read (permission denied)"
    )


def test_the_bundled_profile_and_a_valid_file_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({"name": "Alex", "skills": [{"name": "Go", "level": 4}]}))
    assert profile_problem(None) is None
    assert profile_problem(path) is None


def test_a_log_file_is_refused_in_one_line_when_it_cannot_be_appended_to(tmp_path: Path) -> None:
    assert log_file_problem(None) is None
    assert log_file_problem(tmp_path / "service.log") is None  # created on first write
    assert log_file_problem(tmp_path / "new" / "service.log") is None  # so is its directory
    assert (
        log_file_problem(tmp_path) == f"FIT_CHECK_LOG_FILE: {tmp_path} is a directory, not a file"
    )
    (tmp_path / "a-file").write_text("")
    under_a_file = tmp_path / "a-file" / "service.log"
    assert log_file_problem(under_a_file) == (
        f"FIT_CHECK_LOG_FILE: {under_a_file}: {tmp_path / 'a-file'} is not a directory"
    )
