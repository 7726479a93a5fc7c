"""fit-check: serve the service, watch an analysis stream live, read a trace in a terminal."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from httpx_sse import EventSource, connect_sse
from pydantic import ValidationError
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn

from app.config import Settings
from app.pipeline.events import PHASES
from app.trace_view import SpanRow, TraceNotFound, fetch_trace, render

#: A span reaches Jaeger after the service's batch delay (5 s) and the collector's (1 s).
TRACE_WAIT_S = 20.0
#: A W3C trace id: 32 lowercase hex digits, not all zeros.
TRACE_ID = re.compile(r"[0-9a-f]{32}")
INVALID_TRACE_ID = "0" * 32


def with_scheme(url: str) -> str:
    """``localhost:8000`` -> ``http://localhost:8000``: an address typed without a scheme."""
    url = url.strip().rstrip("/")
    return url if "://" in url else f"http://{url}"


def service_url() -> str:
    """``FIT_CHECK_URL``, else the address ``serve`` listens on, from the same settings."""
    explicit = os.environ.get("FIT_CHECK_URL")
    if explicit:
        return explicit
    settings = Settings()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}"


def settings_error(error: ValidationError) -> str:
    """A settings error as one line per problem, in the variables' own names."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem.get("loc", ())) or "settings"
        lines.append(f"{where}: {problem.get('msg', 'invalid')}".removeprefix("settings: "))
    return "\n".join(f"fit-check: {line.removeprefix('Value error, ')}" for line in lines)


def serve(args: argparse.Namespace) -> int:
    """Refuse unusable settings and files in one line each (exit 2) before any worker
    starts; with several workers, a worker that keeps dying ends it with its reason (exit 3)."""
    from app.asgi import build_server, supervise
    from app.startup import file_problem
    from app.workers import STARTUP_FAILED, WorkersGaveUp

    settings = Settings() if args.workers is None else Settings(workers=args.workers)
    problem = file_problem(settings)
    if problem is not None:
        print(f"fit-check: {problem}", file=sys.stderr)
        return 2
    if settings.workers == 1:
        build_server(settings).run()
        return 0
    try:
        return supervise(settings)
    except WorkersGaveUp as gave_up:
        print(f"fit-check: {gave_up}", file=sys.stderr)
        return STARTUP_FAILED


def http_error_line(response: httpx.Response) -> str:
    """``HTTP 422 INVALID_QUERY: query: String should have at most 2000 characters``."""
    try:
        body = response.json()
        return f"HTTP {response.status_code} {body['code']}: {body['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def unreachable(exc: httpx.HTTPError) -> str:
    """Why nothing answered, in words: ``could not connect``, ``no answer in time``."""
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    if isinstance(exc, httpx.ConnectError):
        return "could not connect"
    if isinstance(exc, httpx.UnsupportedProtocol):
        return "not an http:// or https:// URL"
    return "the connection failed"


@dataclass
class Analysis:
    """What ``ask`` read of one stream."""

    exit_code: int = 1
    #: A terminal event (``complete`` or ``error``) arrived: a stream without one was cut.
    ended: bool = False
    trace_id: str | None = None
    report: list[str] = field(default_factory=list)


def follow(source: EventSource, console: Console) -> Analysis:
    """The stream's events as a progress line per phase, shown once the stream is open."""
    analysis = Analysis()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
        transient=False,
    ) as progress:
        tasks: dict[str, TaskID] = {
            p: progress.add_task(p, total=1, note="waiting", start=False) for p in PHASES
        }
        for sse in source.iter_sse():
            data = json.loads(sse.data) if sse.data else {}
            if sse.event == "session":
                analysis.trace_id = data.get("trace_id")
                console.print(
                    f"session {data['session_id']} trace {analysis.trace_id}", markup=False
                )
            elif sse.event == "phase":
                progress.start_task(tasks[data["phase"]])
                progress.update(tasks[data["phase"]], note=data["message"])
            elif sse.event == "phase_complete":
                progress.update(
                    tasks[data["phase"]],
                    completed=1,
                    note=f"{data['duration_ms']} ms - {data['summary']}",
                )
            elif sse.event == "response":
                analysis.report.append(data["chunk"])
            elif sse.event == "complete":
                analysis.exit_code, analysis.ended = 0, True
            elif sse.event == "error":
                analysis.ended = True
                console.print(f"{data['code']}: {data['message']}", style="red", markup=False)
    if not analysis.ended:
        console.print(
            "the stream ended before the analysis did (the connection was cut or the service "
            "stopped): send the query again",
            style="red",
            markup=False,
            soft_wrap=True,
        )
    return analysis


def ask(args: argparse.Namespace) -> int:
    """Stream one analysis: a progress line per phase with its duration, then the report.
    The exit code is the analysis's: 0 when it completed, whether or not ``--trace`` could
    show its trace."""
    console = Console(stderr=True)
    url = with_scheme(args.url or service_url())
    body: dict[str, object] = {"query": args.query}
    if args.session_id:
        body["session_id"] = args.session_id
    try:
        with (
            httpx.Client(timeout=httpx.Timeout(10.0, read=None)) as client,
            connect_sse(client, "POST", f"{url}/api/fit-check/stream", json=body) as source,
        ):
            if source.response.status_code != 200:
                source.response.read()
                console.print(
                    http_error_line(source.response), style="red", markup=False, soft_wrap=True
                )
                return 2
            analysis = follow(source, console)
    except httpx.HTTPError as exc:
        console.print(
            f"cannot reach the service at {url} ({unreachable(exc)}): start it with "
            "`fit-check serve` (or `make run`), or give its address with --url or FIT_CHECK_URL",
            style="red",
            markup=False,
            soft_wrap=True,
        )
        return 2
    if analysis.report:
        Console().print(Markdown("".join(analysis.report)))
    if args.trace and analysis.trace_id:
        try:
            print_trace(analysis.trace_id, args.jaeger, wait_s=TRACE_WAIT_S)
        except TraceUnavailable as exc:
            print(f"fit-check: the trace could not be shown: {exc}", file=sys.stderr)
    return analysis.exit_code


class TraceUnavailable(Exception):
    """Why a trace cannot be shown, in one line; ``exit_code`` for ``fit-check trace``."""

    def __init__(self, reason: str, exit_code: int) -> None:
        super().__init__(reason)
        self.exit_code = exit_code


def jaeger_url(explicit: str | None) -> str:
    return with_scheme(explicit or Settings().jaeger_url)


def wait_for_trace(trace_id: str, jaeger: str, *, wait_s: float = 0.0) -> list[SpanRow]:
    """Every span of a trace from Jaeger; with ``wait_s``, wait for its root span."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            spans = fetch_trace(jaeger, trace_id)
            if all(s.parent_id for s in spans) and time.monotonic() < deadline:
                raise TraceNotFound(trace_id)  # the root is exported last: not all here yet
            return spans
        except TraceNotFound:
            if time.monotonic() < deadline:
                time.sleep(1.0)
                continue
            raise TraceUnavailable(f"trace {trace_id} is not in Jaeger at {jaeger}", 1) from None
        except httpx.HTTPStatusError as exc:
            raise TraceUnavailable(
                f"Jaeger at {jaeger} answered HTTP {exc.response.status_code}", 2
            ) from None
        except httpx.HTTPError as exc:
            raise TraceUnavailable(
                f"found no Jaeger at {jaeger} ({unreachable(exc)}). Point fit-check at yours with "
                "--jaeger URL or FIT_CHECK_JAEGER_URL; `make stack` (or `make up`, with "
                "Docker) runs one at http://localhost:16686",
                2,
            ) from None


def print_trace(trace_id: str, jaeger: str | None, *, wait_s: float = 0.0) -> None:
    print("\n".join(render(wait_for_trace(trace_id, jaeger_url(jaeger), wait_s=wait_s))))


def trace(args: argparse.Namespace) -> int:
    """Print one trace; a malformed id is refused here, without asking Jaeger."""
    trace_id = args.trace_id.strip().lower()
    if not TRACE_ID.fullmatch(trace_id) or trace_id == INVALID_TRACE_ID:
        print(
            f"fit-check: {args.trace_id!r} is not a trace id: one is 32 hexadecimal "
            "characters, not all zeros (the `session` event and the traceresponse header "
            "of a stream carry it)",
            file=sys.stderr,
        )
        return 2
    try:
        print_trace(trace_id, args.jaeger)
    except TraceUnavailable as exc:
        print(f"fit-check: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fit-check",
        description="Serve fit-check, watch an analysis stream, or read its trace.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser(
        "serve", help="run the server (HOST, PORT and every other setting from the environment)"
    )
    serve_parser.add_argument(
        "--workers",
        type=int,
        help="worker processes on one port (default: FIT_CHECK_WORKERS or WEB_CONCURRENCY, "
        "else 1); with more than one, read metrics through the collector",
    )
    ask_parser = commands.add_parser("ask", help="stream one analysis and show its progress")
    ask_parser.add_argument("query", help="a company name or a job description")
    ask_parser.add_argument(
        "--url",
        help="the service's base URL, http:// assumed when left out (default: FIT_CHECK_URL, "
        "else http://HOST:PORT from the settings `serve` reads)",
    )
    ask_parser.add_argument("--session-id", help="your own session id, e.g. to find it later")
    ask_parser.add_argument(
        "--trace", action="store_true", help="print the analysis's trace from Jaeger afterwards"
    )
    ask_parser.add_argument(
        "--jaeger", help="Jaeger's URL (default: FIT_CHECK_JAEGER_URL, else http://localhost:16686)"
    )
    trace_parser = commands.add_parser("trace", help="print a trace from Jaeger as a tree")
    trace_parser.add_argument("trace_id", help="the 32-hex trace id (the session event has it)")
    trace_parser.add_argument(
        "--jaeger", help="Jaeger's URL (default: FIT_CHECK_JAEGER_URL, else http://localhost:16686)"
    )
    args = parser.parse_args(argv)
    handlers = {"serve": serve, "ask": ask, "trace": trace}
    try:
        return handlers[args.command](args)
    except ValidationError as error:  # every command reads the settings; say which one is wrong
        print(settings_error(error), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
