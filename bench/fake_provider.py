"""An OpenAI-compatible chat API and a Google Custom Search API on loopback, for
``bench.ir --realistic``: ``python -m bench.fake_provider PORT CHUNKS``.

Each chat completion streams CHUNKS content chunks (one word each) and its usage; each
search answers 5 results. The same fake the tests use (``tests/fake_apis.py``), served by
uvicorn in a process of its own, so its work is not counted with the service's.
"""

from __future__ import annotations

import sys

import uvicorn

from tests.fake_apis import FakeAPI


def main() -> int:
    port, chunks = int(sys.argv[1]), int(sys.argv[2])
    fake = FakeAPI(reply=" ".join(f"w{n}" for n in range(chunks)), results=5)
    uvicorn.run(fake.app(), host="127.0.0.1", port=port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
