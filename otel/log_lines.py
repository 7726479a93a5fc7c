"""Logging: JSON lines (python-json-logger, orjson backend) or text, both with trace context.

The orjson backend, because a request writes a dozen lines and formatting them is a
visible share of its telemetry (docs/performance.md).

Every record passes a filter that stamps the current ``trace_id``, ``span_id`` and
``session_id``, so any line written during a request can be joined to its trace.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Literal

from opentelemetry import trace
from pythonjsonlogger.core import LogData
from pythonjsonlogger.orjson import OrjsonFormatter

from otel.context import current_session_id
from otel.redact import redact_url

_CONTEXT_FIELDS = ("trace_id", "span_id", "session_id")
#: Where a record keeps its JSON line once formatted (not a field of the line: the
#: formatter writes only the fields it is given and a record's ``extra``, and this name
#: is set after the line is made).
_FORMATTED_JSON = "_fit_check_json_line"
_LINE_SEPARATORS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_NOISY_LOGGERS = ("httpx", "httpcore")
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class TraceContextFilter(logging.Filter):
    """Adds trace ids and the session id of the current context to each record.

    Fields a caller passes in ``extra`` under these names are overwritten: a log line's trace
    context is a fact of where it was written, never something input can choose.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = format(span_context.trace_id, "032x")
            record.span_id = format(span_context.span_id, "016x")
        else:
            record.trace_id = record.span_id = None
        record.session_id = current_session_id()
        return True


class UntrustedTextFilter(logging.Filter):
    """Keeps text a client chose out of lines written by libraries.

    * uvicorn's access line carries the request path with its query string, which for the
      GET form is the user's own text, and httpx's request line (at DEBUG, or INFO where a
      user turns it on) the search API's URL with the user's text in ``q=``: query values
      are redacted (``query=REDACTED``).
    * OpenTelemetry's baggage propagator warns about a malformed or oversized ``baggage``
      header by quoting it whole (a 64 KB header made a 65 KB line): only its length is kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access":
            args = record.args
            if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
                record.args = (*args[:2], redact_url(args[2]), *args[3:])
        elif record.name == "httpx" and isinstance(record.args, tuple):
            record.args = tuple(
                redact_url(str(arg)) if "?" in str(arg) else arg for arg in record.args
            )
        elif record.name.startswith("opentelemetry.baggage") and isinstance(record.args, tuple):
            record.args = tuple(
                f"<{len(arg)} characters not logged>" if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


class TelemetryNoiseLimiter(logging.Filter):
    """Lets through one line per OpenTelemetry message template per interval.

    With a collector down or a full queue the SDK logs once per dropped span and once per
    failed batch; at a few hundred spans a second that buries the service's own lines. The
    first line of a kind passes, repeats within ``interval_s`` are counted, and the next
    line that passes says how many were suppressed.
    """

    def __init__(
        self, interval_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._clock = clock
        self._seen: dict[tuple[str, object], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("opentelemetry"):
            return True
        key = (record.name, record.msg)
        now = self._clock()
        with self._lock:
            last, suppressed = self._seen.get(key, (None, 0))
            if last is not None and now - last < self._interval_s:
                self._seen[key] = (last, suppressed + 1)
                return False
            self._seen[key] = (now, 0)
        if suppressed:
            record.suppressed = suppressed
        return True


class _ContextJsonFormatter(OrjsonFormatter):
    """Drops the context fields that are empty outside a request instead of writing nulls.

    A record is formatted once: stdout's handler, the log file's size check and its write
    all use the same line (each would format it again).
    """

    def format(self, record: logging.LogRecord) -> str:
        line = record.__dict__.get(_FORMATTED_JSON)
        if not isinstance(line, str):
            line = super().format(record)
            record.__dict__[_FORMATTED_JSON] = line
        return line

    def jsonify_log_record(self, log_data: LogData) -> str:
        # orjson writes U+0085, U+2028 and U+2029 raw; many readers (Python's splitlines,
        # JavaScript) take them for line breaks, so escape them: one record, one line.
        text = super().jsonify_log_record(log_data)
        if any(sep in text for sep in _LINE_SEPARATORS):
            for sep, escaped in _LINE_SEPARATORS.items():
                text = text.replace(sep, escaped)
        return text

    def process_log_record(self, log_data: LogData) -> LogData:
        for field in _CONTEXT_FIELDS:
            if log_data.get(field) is None:
                log_data.pop(field, None)
        return log_data


def json_formatter() -> logging.Formatter:
    return _ContextJsonFormatter(
        ["levelname", "name", "message", "module", "funcName", "lineno", *_CONTEXT_FIELDS],
        rename_fields={
            "levelname": "level",
            "name": "logger",
            "funcName": "function",
            "lineno": "line",
            "exc_info": "exception",
        },
        timestamp=True,
    )


def text_formatter() -> logging.Formatter:
    return logging.Formatter(
        "%(asctime)s %(levelname)-7s %(name)s [trace=%(trace_id)s session=%(session_id)s] "
        "%(message)s"
    )


def log_handler(fmt: Literal["text", "json"], stream: IO[str]) -> logging.Handler:
    """The service's handler: its format, trace context on every line, no untrusted text,
    and the SDK's repeated errors rate-limited."""
    return _with_filters(logging.StreamHandler(stream), fmt)


def log_file_handler(path: Path, max_bytes: int) -> logging.Handler:
    """JSON lines appended to ``path`` for the collector's file log receiver.

    Rotated by size by renaming (``path.1``, ``path.2``): the receiver follows a renamed
    file by its fingerprint, so rotation loses no line it has not read yet. One process
    per file: rotation by two processes would race.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=2, encoding="utf-8"
    )
    return _with_filters(handler, "json")


def _with_filters(handler: logging.Handler, fmt: Literal["text", "json"]) -> logging.Handler:
    handler.setFormatter(json_formatter() if fmt == "json" else text_formatter())
    handler.addFilter(TraceContextFilter())
    handler.addFilter(UntrustedTextFilter())
    handler.addFilter(TelemetryNoiseLimiter())
    return handler


def configure_logging(
    *,
    level: str,
    fmt: Literal["text", "json"],
    stream: IO[str] | None = None,
    file: Path | None = None,
    file_max_bytes: int = 64 * 1024 * 1024,
) -> logging.Handler:
    """Route the root logger, and uvicorn's, through one handler (and a JSON file when
    ``file`` is given); returns the stream's handler."""
    handler = log_handler(fmt, stream or sys.stdout)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    if file is not None:
        root.addHandler(log_file_handler(file, file_max_bytes))
    root.setLevel(level)
    # No format here writes a record's thread or process; skip looking them up per line.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    for name in _SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler
