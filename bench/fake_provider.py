"""An OpenAI-compatible chat API and a Google Custom Search API on loopback, for
``bench.ir --realistic``: ``python -m bench.fake_provider PORT CHUNKS [GAP_MS
[REPORT_CHUNKS [stamp]]]``; a runaway model for ``bench.attacks`` and the memory test:
``python -m bench.fake_provider PORT flood CHUNKS CHARACTERS``.

Each chat completion streams CHUNKS content chunks (one word each, GAP_MS apart: a real
model's pace, so that each chunk reaches the service alone) and its usage; each
search answers 5 results. With REPORT_CHUNKS, the report's call (the one whose chunks the
service streams to its client, one SSE write each) streams that many instead, and the
other calls (read, not written) CHUNKS: ``bench.ir --per-chunk`` counts the two kinds of
chunk apart that way. With ``stamp`` (``bench.capacity``), each of the report's chunks is
the word :data:`STAMP_WORD`, which the server's last hop before the socket (its ASGI
``send``) replaces with the time the chunk leaves, ``@`` and ``time.monotonic()`` (the
system-wide clock on Linux, so a client on this machine can subtract it from its own
arrival time). The same fake the tests use (``tests/fake_apis.py``), served by
uvicorn in a process of its own, so its work is not counted with the service's.
"""

from __future__ import annotations

import sys
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.fake_apis import FakeAPI

#: How the report's prompt ends (``FitCheckPipeline._request``): the call streamed to the
#: client.
REPORT_TASK = "Write a short markdown fit report"
#: A report chunk of ``stamp`` mode, replaced as it leaves by ``@`` and the time, as many
#: characters: ``@`` and ``time.monotonic()`` as ``%017.6f`` (``@0000012345.678901``).
STAMP_WORD = "@" + "_" * 17
_STAMP_BYTES = STAMP_WORD.encode()


def words(count: int) -> str:
    return " ".join(f"w{n}" for n in range(count))


def by_task(report: FakeAPI, other: FakeAPI) -> Starlette:
    """One server: the report's chat completions answered by ``report``, the rest by
    ``other``."""

    async def chat(request: Request) -> Response:
        body = await request.json()  # kept on the request: the fake reads it again
        messages = body.get("messages") or [{}]
        fake = report if REPORT_TASK in str(messages[-1].get("content", "")) else other
        return await fake._chat(request)

    async def search(request: Request) -> Response:
        return await other._search(request)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/customsearch/v1", search, methods=["GET"]),
        ]
    )


def stamping(app: ASGIApp) -> ASGIApp:
    """``app`` whose response bodies have :data:`STAMP_WORD` replaced, as each is handed to
    the server, by the time it is."""

    async def stamped(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_stamped(message: Message) -> None:
            if message["type"] == "http.response.body":
                body = message.get("body", b"")
                if _STAMP_BYTES in body:
                    now = f"@{time.monotonic():017.6f}".encode()
                    message = {**message, "body": body.replace(_STAMP_BYTES, now)}
            await send(message)

        await app(scope, receive, send_stamped)

    return stamped


def main() -> int:
    port = int(sys.argv[1])
    app: ASGIApp
    if sys.argv[2] == "flood":
        app = FakeAPI(flood=(int(sys.argv[3]), int(sys.argv[4])), results=5).app()
    else:
        chunks = int(sys.argv[2])
        gap_s = float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.0
        app = FakeAPI(reply=words(chunks), results=5, chunk_gap_s=gap_s).app()
        if len(sys.argv) > 4:
            report_chunks = int(sys.argv[4])
            stamp = len(sys.argv) > 5 and sys.argv[5] == "stamp"
            reply = " ".join([STAMP_WORD] * report_chunks) if stamp else words(report_chunks)
            report = FakeAPI(reply=reply, results=5, chunk_gap_s=gap_s)
            other = FakeAPI(reply=words(chunks), results=5, chunk_gap_s=gap_s)
            app = stamping(by_task(report, other)) if stamp else by_task(report, other)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
