"""Letting go of an httpx response once it is closed.

httpx binds each response and its stream to each other (the client's ``BoundAsyncStream``
holds the response that holds it), a reference cycle that only the cyclic garbage
collector can free: a few dozen objects a provider call, alive long enough to reach the
oldest generation, where they pile up and lengthen its pauses, which every stream in
flight then waits through (docs/performance.md, "Capacity"). A closed response's stream is
never read again, so replacing it breaks the cycle and reference counting frees the rest.
"""

from __future__ import annotations

import httpx

_CLOSED = httpx.ByteStream(b"")


def let_go(response: httpx.Response) -> None:
    """Break the response's cycle; call it once the response is closed."""
    response.stream = _CLOSED
