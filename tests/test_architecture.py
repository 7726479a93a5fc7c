"""What the folder names promise, checked at run time (import-linter checks the imports)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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


#: What business code may import of otel/: the facade, and the content capture modes its
#: settings name. Everything else is wiring, for the composition root (app/asgi.py) only.
OTEL_ALLOWED = {"otel.facade", "otel.content"}
ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_business_code_imports_only_the_allowed_telemetry_modules() -> None:
    """An allow-list, not a deny-list: a new otel module is wiring until named here."""
    offending = {
        str(path.relative_to(ROOT)): sorted(used)
        for path in sorted((ROOT / "app").rglob("*.py"))
        if path != ROOT / "app" / "asgi.py"
        if (used := {m for m in _imports(path) if m.split(".")[0] == "otel"} - OTEL_ALLOWED)
    }
    assert not offending, offending


def test_the_import_graph_of_app_and_otel_has_no_cycle() -> None:
    """Module-level and lazy imports alike (a lazy import that dodges a cycle is one)."""
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for top in ("app", "otel")
        for path in (ROOT / top).rglob("*.py")
    }
    graph = {
        name: {m for m in _imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in done:
            return
        assert name not in visiting, f"import cycle: {' -> '.join((*trail, name))}"
        visiting.add(name)
        for imported in sorted(graph[name]):
            visit(imported, (*trail, name))
        visiting.discard(name)
        done.add(name)

    for name in sorted(graph):
        visit(name, ())


def test_imports_between_bench_and_tests_go_one_way() -> None:
    """The benchmarks may use the tests' fakes; a test never needs a benchmark to run."""
    offending = {
        str(path.relative_to(ROOT)): sorted(used)
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if (used := {m for m in _imports(path) if m.split(".")[0] == "bench"})
    }
    assert not offending, offending
