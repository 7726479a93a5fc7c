"""What the folder names promise, checked at run time (import-linter checks the imports)."""

from __future__ import annotations

import subprocess
import sys

BUSINESS_MODULES = ("app.service", "app.api.routes", "app.pipeline.session", "app.cli")


def test_the_business_code_loads_no_opentelemetry_sdk_module() -> None:
    """``app/`` sees telemetry through the facade, which uses the OpenTelemetry API only."""
    program = (
        f"import sys; import {', '.join(BUSINESS_MODULES)}; "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"


def test_the_facade_loads_neither_fastapi_nor_instrumentation() -> None:
    program = (
        "import sys; import otel.facade; "
        "print(sorted(m for m in sys.modules if m.startswith(('fastapi', "
        "'opentelemetry.instrumentation', 'opentelemetry.sdk'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"
