"""An OpenAI-compatible chat API and a Google Custom Search API on loopback, for
``bench.ir --realistic``: ``python -m bench.fake_provider PORT CHUNKS [GAP_MS]``; a
runaway model for ``bench.attacks`` and the memory test:
``python -m bench.fake_provider PORT flood CHUNKS CHARACTERS``.

Each chat completion streams CHUNKS content chunks (one word each, GAP_MS apart: a real
model's pace, so that each chunk reaches the service alone) and its usage; each
search answers 5 results. The same fake the tests use (``tests/fake_apis.py``), served by
uvicorn in a process of its own, so its work is not counted with the service's.
"""

from __future__ import annotations

import sys

import uvicorn

from tests.fake_apis import FakeAPI


def main() -> int:
    port = int(sys.argv[1])
    if sys.argv[2] == "flood":
        fake = FakeAPI(flood=(int(sys.argv[3]), int(sys.argv[4])), results=5)
    else:
        chunks = int(sys.argv[2])
        gap_s = float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.0
        fake = FakeAPI(reply=" ".join(f"w{n}" for n in range(chunks)), results=5, chunk_gap_s=gap_s)
    uvicorn.run(fake.app(), host="127.0.0.1", port=port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
