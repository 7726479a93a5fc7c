"""fit-check: serve the service, watch an analysis stream live, read a trace in a terminal."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

import httpx
from httpx_sse import connect_sse
from pydantic import ValidationError
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

from app.config import Settings
from app.pipeline.events import PHASES
from app.trace_view import TraceNotFound, fetch_trace, render

#: A span reaches Jaeger after the service's batch delay (5 s) and the collector's (1 s).
TRACE_WAIT_S = 20.0


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
    from app.asgi import build_server, supervise

    if args.workers is not None:
        os.environ["FIT_CHECK_WORKERS"] = str(args.workers)  # the workers read it too
    settings = Settings()
    if settings.workers == 1:
        build_server(settings).run()
        return 0
    return supervise(settings)


def http_error_line(response: httpx.Response) -> str:
    """``HTTP 422 INVALID_QUERY: query: String should have at most 2000 characters``."""
    try:
        body = response.json()
        return f"HTTP {response.status_code} {body['code']}: {body['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def ask(args: argparse.Namespace) -> int:
    """Stream one analysis: a progress line per phase with its duration, then the report."""
    console = Console(stderr=True)
    url = (args.url or service_url()).rstrip("/")
    body: dict[str, object] = {"query": args.query}
    if args.session_id:
        body["session_id"] = args.session_id
    report: list[str] = []
    trace_id: str | None = None
    exit_code = 1
    with (
        httpx.Client(timeout=httpx.Timeout(10.0, read=None)) as client,
        Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[note]}"),
            console=console,
            transient=False,
        ) as progress,
    ):
        tasks = {p: progress.add_task(p, total=1, note="waiting", start=False) for p in PHASES}
        try:
            with connect_sse(client, "POST", f"{url}/api/fit-check/stream", json=body) as source:
                if source.response.status_code != 200:
                    source.response.read()
                    console.print(http_error_line(source.response), style="red", markup=False)
                    return 2
                for sse in source.iter_sse():
                    data = json.loads(sse.data) if sse.data else {}
                    if sse.event == "session":
                        trace_id = data.get("trace_id")
                        console.print(
                            f"session {data['session_id']} trace {trace_id}", markup=False
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
                        report.append(data["chunk"])
                    elif sse.event == "complete":
                        exit_code = 0
                    elif sse.event == "error":
                        console.print(
                            f"{data['code']}: {data['message']}", style="red", markup=False
                        )
        except httpx.HTTPError as exc:
            console.print(f"cannot reach {url}: {type(exc).__name__}", style="red", markup=False)
            return 2
    if report:
        Console().print(Markdown("".join(report)))
    if args.trace and trace_id:
        shown = show_trace(trace_id, args.jaeger, wait_s=TRACE_WAIT_S)
        exit_code = exit_code or shown
    return exit_code


def show_trace(trace_id: str, jaeger_url: str | None, *, wait_s: float = 0.0) -> int:
    """Print a trace from Jaeger; with ``wait_s``, wait for its root span to arrive."""
    jaeger = (jaeger_url or Settings().jaeger_url).rstrip("/")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            spans = fetch_trace(jaeger, trace_id)
            if all(s.parent_id for s in spans) and time.monotonic() < deadline:
                raise TraceNotFound(trace_id)  # the root is exported last: not all here yet
        except TraceNotFound:
            if time.monotonic() < deadline:
                time.sleep(1.0)
                continue
            print(f"fit-check: trace {trace_id} is not in Jaeger at {jaeger}", file=sys.stderr)
            return 1
        except httpx.HTTPError as exc:
            print(
                f"fit-check: cannot reach Jaeger at {jaeger}: {type(exc).__name__}", file=sys.stderr
            )
            return 2
        print("\n".join(render(spans)))
        return 0


def trace(args: argparse.Namespace) -> int:
    return show_trace(args.trace_id, args.jaeger)


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
        help="the service's base URL (default: FIT_CHECK_URL, else http://HOST:PORT from the "
        "settings `serve` reads)",
    )
    ask_parser.add_argument("--session-id", help="your own session id, e.g. to find it later")
    ask_parser.add_argument(
        "--trace", action="store_true", help="print the analysis's trace from Jaeger afterwards"
    )
    ask_parser.add_argument("--jaeger", help="Jaeger's URL (default: FIT_CHECK_JAEGER_URL)")
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
