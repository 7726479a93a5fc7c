"""What a log line costs the service on each way to a log store: ``python -m bench.log_paths``.

Two ways to get the service's log lines into VictoriaLogs:

* the collector tails what the service already writes (``filelog`` receiver): the service
  pays for the JSON line and nothing more (in compose, where stdout goes to Docker, for
  writing it twice: stdout and ``FIT_CHECK_LOG_FILE``);
* the SDK exports each record over OTLP (a ``LoggingHandler`` feeding a batch processor):
  the service pays for an OTLP log record per line on top, and its export thread encodes
  and sends them.

Both are timed here in this process, per line, inside a recorded span and a session (as a
request's lines are), the fastest of five rounds (the machine's speed drifts), exporting
to nowhere so only the service's side is counted.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import context
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)

from bench.units import best_us, production_runtime
from otel.context import bind_session
from otel.logging import log_file_handler, log_handler

LINES = 20_000


class _DiscardLogs(LogRecordExporter):
    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        return None


def per_line_us(handlers: list[logging.Handler]) -> float:
    logger = logging.getLogger("fit_check.bench.logs")
    logger.handlers[:] = handlers
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return best_us(
        lambda: logger.info(
            "Phase completed",
            extra={"phase": "deep_research", "status": "success", "duration_ms": 12},
        ),
        LINES,
    )


def main() -> int:
    runtime = production_runtime()
    assert runtime.tracer_provider is not None
    tracer = runtime.tracer_provider.get_tracer("bench.log_paths")
    provider = LoggerProvider()
    provider.add_log_record_processor(
        BatchLogRecordProcessor(_DiscardLogs(), max_queue_size=LINES * 2)
    )
    with (
        open(os.devnull, "w") as sink,
        tempfile.TemporaryDirectory() as tmp,
        tracer.start_as_current_span("bench"),
    ):
        token = bind_session("bench-session")
        json_line = log_handler("json", sink)
        file_line = log_file_handler(Path(tmp) / "fit-check.log", max_bytes=16 * 1024 * 1024)
        otlp = LoggingHandler(level=logging.INFO, logger_provider=provider)
        costs = {
            "JSON line (the collector tails it: filelog)": per_line_us([json_line]),
            "JSON line to stdout and to FIT_CHECK_LOG_FILE (compose)": per_line_us(
                [json_line, file_line]
            ),
            "JSON line and an OTLP log record (SDK export)": per_line_us([json_line, otlp]),
            "OTLP log record alone": per_line_us([otlp]),
        }
        context.detach(token)
        file_line.close()
    provider.shutdown()
    runtime.shutdown()
    print("| path | µs per line in the service | per stream (13 lines) |")
    print("|---|---|---|")
    for name, us in costs.items():
        print(f"| {name} | {us:.1f} | {us * 13:.0f} µs |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
