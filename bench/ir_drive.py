"""The program bench/ir.py counts: N offline streams through the app, in process.

Run as a file (``python bench/ir_drive.py N``) so that ``app`` comes from ``PYTHONPATH``:
the checkout being counted, which may be another one than this. ``BENCH_LOOP=uvloop``
runs it on uvloop, the loop uvicorn picks in production (``asyncio``, the default, is
the standard library's).
"""

from __future__ import annotations

import asyncio
import os
import sys

import httpx

from app.asgi import build


async def drive(streams: int) -> None:
    app = build()
    transport = httpx.ASGITransport(app=app)
    # The app's lifespan, as a server runs it: at the end the telemetry is flushed, so an
    # exporting variant counts every export, not only those its schedule happened to run.
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench") as client,
    ):
        for n in range(streams):
            body = {"query": "Senior Python engineer, FastAPI, Kafka", "session_id": f"ir-{n}"}
            response = await client.post("/api/fit-check/stream", json=body)
            assert response.status_code == 200 and b"event: complete" in response.content


if __name__ == "__main__":
    if os.environ.get("BENCH_LOOP", "asyncio") == "uvloop":
        import uvloop

        uvloop.run(drive(int(sys.argv[1])))
    else:
        asyncio.run(drive(int(sys.argv[1])))
