"""The ``fit-check`` command: ``serve`` runs the server, ``ask`` watches a stream live."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import httpx
from httpx_sse import connect_sse
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

from app.pipeline.events import PHASES


def serve(_args: argparse.Namespace) -> int:
    from app.asgi import build_server

    build_server().run()
    return 0


def ask(args: argparse.Namespace) -> int:
    """Stream one analysis: a progress line per phase with its duration, then the report."""
    console = Console(stderr=True)
    body: dict[str, object] = {"query": args.query}
    if args.session_id:
        body["session_id"] = args.session_id
    report: list[str] = []
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
            with connect_sse(
                client, "POST", f"{args.url.rstrip('/')}/api/fit-check/stream", json=body
            ) as source:
                if source.response.status_code != 200:
                    source.response.read()
                    console.print(
                        f"[red]HTTP {source.response.status_code}[/]: {source.response.text}"
                    )
                    return 2
                for sse in source.iter_sse():
                    data = json.loads(sse.data) if sse.data else {}
                    if sse.event == "session":
                        console.print(f"session {data['session_id']} trace {data.get('trace_id')}")
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
                        console.print(f"[red]{data['code']}[/]: {data['message']}")
        except httpx.HTTPError as exc:
            console.print(f"[red]cannot reach {args.url}: {type(exc).__name__}[/]")
            return 2
    if report:
        Console().print(Markdown("".join(report)))
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fit-check", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the server (HOST, PORT and the rest from env)")
    ask_parser = commands.add_parser("ask", help="stream one analysis and show its progress")
    ask_parser.add_argument("query")
    ask_parser.add_argument("--url", default="http://127.0.0.1:8000")
    ask_parser.add_argument("--session-id")
    args = parser.parse_args(argv)
    return serve(args) if args.command == "serve" else ask(args)


if __name__ == "__main__":
    sys.exit(main())
