"""The deploy stack's config files, checked by the real tools that run them.

promtool and the collector binary come from deploy/local/build-tools.sh (cached under
$FIT_CHECK_CACHE, default ~/.cache/fit-check) or PATH. A missing tool skips its test
locally and fails it in CI (CI=true), where build-tools.sh is expected to have run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any, NoReturn

import pytest

# The real tools come from `make stack-tools`, which `make e2e` runs first.
pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("FIT_CHECK_CACHE") or Path.home() / ".cache" / "fit-check")
CACHE_BIN = CACHE / "bin"

COLLECTOR_CONFIG = REPO / "otel-collector.yaml"
MANIFEST = REPO / "deploy" / "collector" / "builder-config.yaml"
COMPOSE = REPO / "docker-compose.yml"
BUILD_TOOLS = REPO / "deploy" / "local" / "build-tools.sh"
STACK = REPO / "deploy" / "local" / "stack.sh"
PROM_DIR = REPO / "deploy" / "prometheus"
GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "fit-check.json"

# Loopback values deploy/local/stack.sh gives the collector.
LOOPBACK_COLLECTOR_ENV = {
    "OTEL_COLLECTOR_HOST": "127.0.0.1",
    "JAEGER_OTLP_ENDPOINT": "127.0.0.1:14317",
}


def _missing(what: str) -> NoReturn:
    message = f"{what} not found in {CACHE_BIN} or on PATH: run deploy/local/build-tools.sh"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def _tool(*names: str) -> str:
    """The first of ``names`` found in the build cache, then on PATH."""
    for name in names:
        cached = CACHE_BIN / name
        if cached.is_file() and os.access(cached, os.X_OK):
            return str(cached)
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    _missing(" / ".join(names))
    raise AssertionError("unreachable")


def _run(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path = REPO) -> str:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=90, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{output}"
    return output


def _yaml() -> Any:
    """PyYAML (a dev dependency; untyped, hence Any)."""
    return pytest.importorskip("yaml")


# --- Prometheus ------------------------------------------------------------------------


def test_promtool_check_config_compose_file() -> None:
    promtool = _tool("promtool")
    _run([promtool, "check", "config", str(PROM_DIR / "prometheus.yml")])


def test_promtool_check_config_local_loopback_copy(tmp_path: Path) -> None:
    """The copy deploy/local/stack.sh actually runs: compose targets mapped to loopback."""
    promtool = _tool("promtool")
    _run(["bash", str(STACK), "render", str(tmp_path)])
    rendered = "\n".join(
        line
        for line in (tmp_path / "prometheus.yml").read_text().splitlines()
        if not line.lstrip().startswith("#")
    )
    assert "otel-collector:" not in rendered
    assert '"127.0.0.1:8889"' in rendered and '"127.0.0.1:8888"' in rendered
    assert (tmp_path / "rules.yml").read_text() == (PROM_DIR / "rules.yml").read_text()
    _run([promtool, "check", "config", str(tmp_path / "prometheus.yml")])


def test_promtool_check_rules() -> None:
    promtool = _tool("promtool")
    _run([promtool, "check", "rules", str(PROM_DIR / "rules.yml")])


def test_promtool_test_rules() -> None:
    promtool = _tool("promtool")
    _run([promtool, "test", "rules", str(PROM_DIR / "rules.test.yml")])


def test_every_alert_has_a_rule_test() -> None:
    yaml = _yaml()
    rules = yaml.safe_load((PROM_DIR / "rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert {
        "FitCheckHighErrorRate",
        "FitCheckCircuitBreakerOpen",
        "FitCheckSlowRequests",
        "FitCheckSheddingLoad",
        "OtelCollectorRefusingData",
        "OtelCollectorExportFailing",
    } <= alerts
    tests = yaml.safe_load((PROM_DIR / "rules.test.yml").read_text())["tests"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert alerts <= firing, f"alerts without a firing test: {alerts - firing}"
    assert alerts <= silent, f"alerts without a not-firing test: {alerts - silent}"


# --- OpenTelemetry Collector ----------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [pytest.param({}, id="compose-defaults"), pytest.param(LOOPBACK_COLLECTOR_ENV, id="loopback")],
)
def test_collector_validates_config(env: dict[str, str]) -> None:
    collector = _tool("otelcol-fit-check", "otelcol-contrib")
    _run([collector, "validate", f"--config={COLLECTOR_CONFIG}"], env=env)


def test_collector_version_pinned_consistently() -> None:
    """Manifest, compose image and build script name the same collector version."""
    yaml = _yaml()
    manifest = yaml.safe_load(MANIFEST.read_text())
    version = manifest["dist"]["version"]
    modules = [
        m["gomod"]
        for kind in ("receivers", "processors", "exporters", "extensions")
        for m in manifest[kind]
    ]
    # The one documented exception (builder-config.yaml): tail sampling at v0.161.0,
    # because its newer releases need a module the proxy here does not serve.
    older = [m for m in modules if not m.endswith(f" v{version}")]
    assert older == [
        "github.com/open-telemetry/opentelemetry-collector-contrib/processor/"
        "tailsamplingprocessor v0.161.0"
    ], older
    compose = yaml.safe_load(COMPOSE.read_text())
    image = compose["services"]["otel-collector"]["image"]
    assert image == f"otel/opentelemetry-collector-contrib:{version}"
    assert f'COLLECTOR_VERSION="{version}"' in BUILD_TOOLS.read_text()


def test_jaeger_version_pinned_consistently() -> None:
    yaml = _yaml()
    compose = yaml.safe_load(COMPOSE.read_text())
    tag = compose["services"]["jaeger"]["image"].split(":")[1]
    assert f'JAEGER_V2_VERSION="v{tag}"' in BUILD_TOOLS.read_text()


def test_victorialogs_version_pinned_consistently() -> None:
    """The compose image is built FROM the upstream image at the version build-tools.sh
    builds from the Go module."""
    dockerfile = (REPO / "deploy" / "victorialogs" / "Dockerfile").read_text()
    (tag,) = re.findall(r"^FROM victoriametrics/victoria-logs:(\S+)$", dockerfile, re.M)
    assert f'VICTORIALOGS_VERSION="{tag}"' in BUILD_TOOLS.read_text()
    compose = _yaml().safe_load(COMPOSE.read_text())
    assert compose["services"]["victorialogs"]["image"].endswith(f":{tag}")


def test_every_compose_build_arg_is_declared_by_its_dockerfile() -> None:
    """Docker ignores a build argument no ``ARG`` declares (a warning, no error): the
    extras of the service image would then silently not be installed."""
    compose = _yaml().safe_load(COMPOSE.read_text())
    checked = 0
    for service in compose["services"].values():
        build = service.get("build")
        if not isinstance(build, dict) or not build.get("args"):
            continue
        dockerfile = (REPO / build.get("context", ".") / build["dockerfile"]).read_text()
        declared = set(re.findall(r"^ARG (\w+)", dockerfile, re.M))
        assert set(build["args"]) <= declared, (build["dockerfile"], declared)
        checked += 1
    assert checked
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "fastotel" in extras["optional-dependencies"]  # what the README tells to pass


# --- Grafana ---------------------------------------------------------------------------


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows
    return [p for p in panels if p.get("type") != "row"]


def test_dashboard_parses_and_every_panel_has_an_expr() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "Fit Check"
    panels = _panels(dashboard)
    assert panels
    exprs = []
    for panel in panels:
        targets = panel.get("targets") or []
        assert targets, f"panel {panel.get('title')!r} has no targets"
        for target in targets:
            expr = target.get("expr", "")
            assert expr.strip(), f"panel {panel.get('title')!r} has a target without expr"
            assert expr.count("(") == expr.count(")"), expr
            exprs.append(expr)
    joined = "\n".join(exprs)
    for needle in (
        "sum(fit_check_active_sessions)",
        "sum by (status) (rate(fit_check_requests_total[5m]))",
        "histogram_quantile(0.95, sum by (le) "
        "(rate(fit_check_request_duration_seconds_bucket[5m])))",
        "fit_check_phase_completions_total",
        "fit_check_circuit_breaker_state",
        'sum(rate(fit_check_requests_total{status="error"}[5m])) '
        "/ sum(rate(fit_check_requests_total[5m]))",
        "fit_check_phase_duration_seconds_bucket",
        "fit_check_llm_latency_seconds_bucket",
        "sum by (reason) (rate(fit_check_rejected_requests_total[5m]))",
    ):
        assert needle in joined, f"no panel queries {needle}"
    assert "session_id" not in joined  # never a label


def test_dashboard_datasources_are_provisioned() -> None:
    yaml = _yaml()
    provisioned = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yml").read_text()
    )["datasources"]
    uids = {d["uid"]: d for d in provisioned}
    assert uids["prometheus"]["type"] == "prometheus"
    assert uids["jaeger"]["type"] == "jaeger"
    links = uids["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert {"name": "trace_id", "datasourceUid": "jaeger"} in links
    # trace -> logs and logs -> trace
    assert uids["victorialogs"]["type"] == "victoriametrics-logs-datasource"
    to_logs = uids["jaeger"]["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == "victorialogs"
    assert to_logs["query"] == 'trace_id:="$${__span.traceId}"'
    (to_trace,) = uids["victorialogs"]["jsonData"]["derivedFields"]
    assert to_trace["matcherType"] == "label" and to_trace["matcherRegex"] == "trace_id"
    assert to_trace["datasourceUid"] == "jaeger"
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids


# --- docker compose ---------------------------------------------------------------------


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    for candidate in (CACHE_BIN / "docker-compose", shutil.which("docker-compose")):
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        probe = subprocess.run(
            [str(candidate), "version"], capture_output=True, text=True, check=False
        )
        match = re.search(r"version v?(\d+)\.", probe.stdout)
        if probe.returncode == 0 and match and int(match.group(1)) >= 2:
            return [str(candidate)]  # compose v2+ standalone binary, same CLI
    return None


def test_docker_compose_config_is_valid() -> None:
    compose = _compose_command()
    if compose is None:
        _missing("docker compose (v2+; build-tools.sh builds it with WITH_COMPOSE=1)")
    _run([*compose, "-f", str(COMPOSE), "config", "-q"])


def _rendered_services(**env: str) -> dict[str, Any]:
    """The services as compose renders them with ``env`` (and no FIT_CHECK_ variable of
    the caller's)."""
    compose = _compose_command()
    if compose is None:
        _missing("docker compose (v2+; build-tools.sh builds it with WITH_COMPOSE=1)")
    rendered = subprocess.run(
        [*compose, "-f", str(COMPOSE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("FIT_CHECK_")} | env,
    )
    services: dict[str, Any] = json.loads(rendered.stdout)["services"]
    return services


def _published(**env: str) -> dict[str, set[str]]:
    """Each service's published ports as ``host address:port``."""
    return {
        name: {f"{port.get('host_ip', '0.0.0.0')}:{port['published']}" for port in ports}
        for name, service in _rendered_services(**env).items()
        if (ports := service.get("ports"))
    }


def test_compose_publishes_every_port_on_loopback_unless_told_otherwise() -> None:
    """OTLP ingest, Prometheus and VictoriaLogs' insert API have no authentication: by
    default nothing is reachable from another machine."""
    published = _published()
    assert published["fit-check"] == {"127.0.0.1:8000"}
    addresses = {port.rsplit(":", 1)[0] for ports in published.values() for port in ports}
    assert addresses == {"127.0.0.1"}
    assert sum(len(ports) for ports in published.values()) == 9
    opened = _published(FIT_CHECK_PUBLISH_ADDRESS="0.0.0.0")
    assert {p.rsplit(":", 1)[0] for ports in opened.values() for p in ports} == {"0.0.0.0"}


def _collector_environment(**env: str) -> dict[str, str]:
    environment: dict[str, str] = _rendered_services(**env)["otel-collector"]["environment"]
    return environment


def test_compose_keeps_every_trace_at_once_unless_sampling_is_production() -> None:
    local = _collector_environment()
    assert local["FIT_CHECK_TRACE_SAMPLE_PERCENT"] == "100"
    assert local["FIT_CHECK_TRACE_DECISION_WAIT"] == "2s"
    production = _collector_environment(
        FIT_CHECK_TRACE_SAMPLE_PERCENT="10", FIT_CHECK_TRACE_DECISION_WAIT="135s"
    )  # what `make up SAMPLING=production` sets (tests/deploy/test_make_up.py)
    assert production["FIT_CHECK_TRACE_SAMPLE_PERCENT"] == "10"
    assert production["FIT_CHECK_TRACE_DECISION_WAIT"] == "135s"


def test_compose_passes_the_demo_pacing_through() -> None:
    service = _yaml().safe_load(COMPOSE.read_text())["services"]["fit-check"]
    assert service["environment"]["FIT_CHECK_LATENCY_MS"] == "${FIT_CHECK_LATENCY_MS:-0}"


# --- Jaeger ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({}, id="compose-defaults"),
        pytest.param({"JAEGER_HOST": "127.0.0.1", "JAEGER_OTLP_GRPC_PORT": "14317"}, id="loopback"),
    ],
)
def test_jaeger_validates_config(env: dict[str, str]) -> None:
    jaeger = _tool("jaeger")
    _run([jaeger, "validate", f"--config={REPO / 'deploy' / 'jaeger' / 'config.yaml'}"], env=env)


def test_compose_stop_grace_period_covers_the_drain() -> None:
    """Docker's SIGKILL must not come before the drain (grace + 5 s) is over."""
    from app.config import Settings

    service = _yaml().safe_load(COMPOSE.read_text())["services"]["fit-check"]
    grace = service["environment"]["FIT_CHECK_SHUTDOWN_GRACE_S"]
    assert grace.startswith("${FIT_CHECK_SHUTDOWN_GRACE_S:-")
    default_grace = float(grace.split(":-")[1].rstrip("}"))
    assert default_grace == Settings(_env_file=None).shutdown_grace_s
    assert service["stop_grace_period"].endswith("s")
    assert float(service["stop_grace_period"][:-1]) >= default_grace + 5
