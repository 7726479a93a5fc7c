"""The real stack on loopback, started once per session through ``deploy/local/stack.sh``
(the same script and configs a developer uses), on free ports in a run dir of its own, and
stopped at the end. What drives it is in ``tests/e2e/stack.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.e2e.stack import PORT_NAMES, Stack, missing_tools
from tests.service_process import free_port


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    missing = missing_tools()
    if missing:
        message = (
            f"missing {', '.join(missing)}: run `make stack-tools` "
            "(deploy/local/build-tools.sh builds them into ~/.cache/fit-check)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    run_dir = tmp_path_factory.mktemp("stack")
    env = {
        **os.environ,
        "FIT_CHECK_STACK_DIR": str(run_dir),
        **{name: str(free_port()) for name in PORT_NAMES},
    }
    stack = Stack(env=env, run_dir=run_dir)
    stack.script("up")
    try:
        stack.start_service("fit-check-a")
        stack.start_service("fit-check-b")
        yield stack
    finally:
        stack.stop_services()
        stack.script("down")
