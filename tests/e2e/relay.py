"""What the browser tests share: a byte relay between two sockets (the proxies they put
between Chromium and the service), and the count of analyses a service ran."""

from __future__ import annotations

import asyncio
import contextlib

from tests.helpers import Harness

STATUSES = ("success", "error", "timeout", "cancelled")


async def relay(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Copy bytes both ways until either side closes; then cut the other at once."""

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.transport.abort()

    await asyncio.gather(pipe(client[0], upstream[1]), pipe(upstream[0], client[1]))


def analyses(h: Harness) -> float:
    """Requests the service counted, whatever their outcome."""
    return sum(h.telemetry.value("fit_check.requests", status=s) for s in STATUSES)
