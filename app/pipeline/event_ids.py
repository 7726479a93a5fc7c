"""SSE event ids, and what a reconnect's ``Last-Event-ID`` says about its stream.

An id is ``<stream key>.<sequence number>``, and the terminal event's id ends in ``.end``.
The key is random and unguessable, so an id works as a bearer token for its own stream
only: knowing a session id (client-chosen ones are guessable) is not enough to read
someone else's analysis. The ``.end`` suffix makes "this stream is over" decidable by any
instance behind a load balancer, from the header alone.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

KEY_BYTES = 12  # 96 random bits, 16 URL-safe characters
_TERMINAL_SUFFIX = ".end"
_LAST_EVENT_ID = re.compile(r"([A-Za-z0-9_-]{16})\.([0-9]{1,9})((?:\.end)?)")
MAX_LAST_EVENT_ID_LENGTH = 64


def new_stream_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


def event_id(key: str, seq: int, *, terminal: bool = False) -> str:
    return f"{key}.{seq}{_TERMINAL_SUFFIX if terminal else ''}"


@dataclass(frozen=True, slots=True)
class LastEventId:
    """A parsed ``Last-Event-ID``: which stream, the last event the client got, and
    whether that event ended the stream."""

    key: str
    seq: int
    terminal: bool


def parse_last_event_id(value: str) -> LastEventId | None:
    """The id, or None when it is not one this service hands out."""
    match = _LAST_EVENT_ID.fullmatch(value)
    if match is None:
        return None
    key, seq, suffix = match.groups()
    return LastEventId(key=key, seq=int(seq), terminal=bool(suffix))
