"""A real local model behind the service (``make e2e-llm``): llama-cpp-python's server with
SmolLM2-135M-Instruct on loopback, built and cached by ``deploy/local/llm-server.sh build``.

Tests marked ``llm`` take minutes of CPU: they are deselected unless ``-m`` names the
marker (``make test``'s ``-m 'not e2e and not llm'`` leaves them out, and so does any other
selection, such as mutation testing's ``-m 'not e2e'``).
"""

from __future__ import annotations

import os

import pytest

from tests.e2e_llm.local_llm import SCRIPT, server_built

MARKER = "llm"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if MARKER in (config.option.markexpr or "").split():
        return  # -m decides
    deselected = [item for item in items if item.get_closest_marker(MARKER)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker(MARKER)]


@pytest.fixture(scope="session")
def built_server() -> None:
    """Skip (fail on CI) when the server has not been built: building takes minutes and
    belongs to ``make e2e-llm``, not to a test."""
    if server_built():
        return
    message = f"the local LLM server is not built: run `make e2e-llm` or `{SCRIPT} build`"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
