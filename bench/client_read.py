"""Instructions per chunk of a streamed answer, by HTTP client: ``python -m bench.client_read``.

The provider's side of relaying a chunk, alone: a client reads streamed chat completions
from the loopback fake (``bench/fake_provider.py``, its chunks ``--gap-ms`` apart, so that
each arrives alone), splits the lines and decodes each chunk's JSON with orjson, as
``app.providers.openai_chat`` does; nothing else. Counted by cachegrind on uvloop, as
``bench.ir`` counts: a chunk = (Ir at N chunks - Ir at 10) / (streams x (N - 10)).

Clients: httpx on httpcore's default network backend (anyio: a cancel scope per read),
httpx on ``app.providers.asyncio_backend`` (the service's), and aiohttp (HTTP parsed in C
by llhttp), when it can be imported: it is no dependency of the service, so
``--aiohttp-path DIR`` adds a directory it was installed to (``pip install --target DIR
aiohttp``) for its runs only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from bench.ir import loopback_server, summary
from bench.servers import BIN, ROOT, clean_env

CLIENTS = ("httpx, anyio backend", "httpx, asyncio backend", "aiohttp")
BODY = {"model": "m", "messages": [], "stream": True}


def text_of(line: bytes) -> str:
    """One ``data:`` line's text, as the service reads it."""
    if not line.startswith(b"data:"):
        return ""
    payload = line[5:].strip()
    if payload == b"[DONE]":
        return ""
    chunk: dict[str, Any] = orjson.loads(payload)
    choices = chunk.get("choices") or [{}]
    content = (choices[0].get("delta") or {}).get("content")
    return content if isinstance(content, str) else ""


async def read_httpx(url: str, streams: int, asyncio_backend: bool) -> int:
    import httpx

    from app.providers.asyncio_backend import http_transport

    transport = http_transport() if asyncio_backend else None
    received = 0
    async with httpx.AsyncClient(
        transport=transport, timeout=httpx.Timeout(30, read=None)
    ) as client:
        for _ in range(streams):
            async with client.stream("POST", f"{url}/v1/chat/completions", json=BODY) as r:
                pending = b""
                async for data in r.aiter_raw():
                    *lines, pending = (pending + data if pending else data).split(b"\n")
                    for line in lines:
                        received += len(text_of(line))
    return received


async def read_aiohttp(url: str, streams: int) -> int:
    import aiohttp  # type: ignore[import-not-found, unused-ignore]  # not a dependency

    received = 0
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(streams):
            async with session.post(f"{url}/v1/chat/completions", json=BODY) as r:
                async for line in r.content:  # StreamReader: one line at a time
                    received += len(text_of(line))
    return received


def drive(client: str, url: str, streams: int) -> None:
    import uvloop

    if client == "aiohttp":
        uvloop.run(read_aiohttp(url, streams))
    else:
        uvloop.run(read_httpx(url, streams, asyncio_backend="asyncio" in client))


def count(client: str, url: str, streams: int, out: Path, extra_path: str) -> int:
    path = os.pathsep.join(p for p in (str(ROOT), extra_path) if p)
    subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}",
         str(BIN / "python"), "-m", "bench.client_read", "--drive", client, url, str(streams)],
        env=clean_env(PYTHONHASHSEED="0", PYTHONPATH=path),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )  # fmt: skip
    return summary(out)


def importable(module: str, extra_path: str) -> bool:
    env = clean_env(PYTHONPATH=extra_path) if extra_path else clean_env()
    probe = subprocess.run([str(BIN / "python"), "-c", f"import {module}"], env=env, check=False)
    return probe.returncode == 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--drive":
        drive(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=300)
    parser.add_argument("--gap-ms", type=float, default=20)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--aiohttp-path", default="")
    args = parser.parse_args()
    print(f"Instructions per chunk read (uvloop; {args.streams} streams; the fake's chunks")
    print(
        f"{args.gap_ms:g} ms apart; (Ir@{args.chunks} - Ir@10) / (streams x {args.chunks - 10})):\n"
    )
    print("| client | instructions per chunk |")
    print("|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for client in CLIENTS:
            if client == "aiohttp" and not importable("aiohttp", args.aiohttp_path):
                print("| aiohttp | not installed (--aiohttp-path) |")
                continue
            counts = []
            for chunks in (10, args.chunks):
                fake = ("bench.fake_provider", str(chunks), str(args.gap_ms))
                with loopback_server(*fake) as url:
                    out = Path(tmp) / f"{len(os.listdir(tmp))}.out"
                    counts.append(count(client, url, args.streams, out, args.aiohttp_path))
            per_chunk = (counts[1] - counts[0]) / (args.streams * (args.chunks - 10))
            print(f"| {client} | {per_chunk / 1e3:.1f} k |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
