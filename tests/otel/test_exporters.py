"""OTEL_TRACES_EXPORTER and OTEL_METRICS_EXPORTER: otlp, console, none."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from app.asgi import build_app, telemetry_config
from otel.exporters import chosen, describe
from otel.wiring import TelemetryConfig, setup_telemetry
from tests.helpers import in_process_client, make_settings


def test_exporter_lists_read_as_the_spec_writes_them() -> None:
    settings = make_settings(traces_exporters=" OTLP, console ", metrics_exporters="none")
    assert settings.traces_exporters == ("otlp", "console")
    assert settings.metrics_exporters == ("none",)
    assert make_settings(traces_exporters="").traces_exporters is None
    with pytest.raises(ValidationError):
        make_settings(traces_exporters="zipkin")  # a typo must not silently export nothing


def test_unset_means_otlp_when_an_endpoint_is_configured_and_nothing_otherwise() -> None:
    assert chosen(None, None) == ()
    assert chosen(None, "http://collector:4318/v1/traces") == ("otlp",)
    assert chosen(("none",), "http://collector:4318/v1/traces") == ()
    assert chosen(("console", "otlp", "console"), None) == ("console", "otlp")


def test_what_each_signal_exports_is_said_in_words() -> None:
    default = setup_telemetry(TelemetryConfig())
    explicit = setup_telemetry(TelemetryConfig(traces_exporters=("otlp", "console")))
    try:
        assert default.exports == {
            "traces": "memory (/trace/{id}: the last 50 traces, at most 5 MiB)",
            "metrics": "none",
        }
        assert explicit.exports["traces"] == "otlp http://localhost:4318/v1/traces, console"
    finally:
        for runtime in (default, explicit):
            runtime.shutdown()
    # Without building a runtime that would try to push to it at shutdown:
    assert describe(("otlp",), "grpc", "http://collector:4317", "metrics") == (
        "otlp http://collector:4317"
    )
    assert describe(("otlp",), "grpc", None, "traces") == "otlp http://localhost:4317"
    assert describe((), "http/protobuf", None, "traces") == "none"


async def test_console_prints_spans_and_metrics_as_json_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(traces_exporters="console", metrics_exporters="console")
    runtime = setup_telemetry(telemetry_config(settings))
    app = build_app(settings, runtime)
    async with in_process_client(app) as client:
        await client.post("/api/fit-check/stream", json={"query": "Python"})
    runtime.shutdown()  # flushes both
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    names = {line.get("name") for line in lines}
    assert {"POST /api/fit-check/stream", "fit_check.phase connecting"} <= names
    metrics = [line for line in lines if "resource_metrics" in line]
    assert metrics and "fit_check.requests" in json.dumps(metrics)


async def test_the_standard_sampler_variables_are_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from otel.testing import captured_telemetry

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    captured = captured_telemetry()
    app = build_app(make_settings(), captured.runtime)
    async with in_process_client(app) as client:
        response = await client.post("/api/fit-check/stream", json={"query": "Python"})
    assert "event: complete" in response.text
    assert captured.finished_spans() == ()
    assert captured.value("fit_check.requests", status="success") == 1  # metrics still count
