"""The replay buffer of one stream: the frames a reconnecting client may ask for again."""

from __future__ import annotations

from collections import deque
from itertools import islice


class ReplayBuffer:
    """Frames by sequence number, the oldest dropped first once they pass ``max_bytes``.

    A stream is bounded anyway (three LLM calls of bounded ``max_tokens``, a few dozen
    other events, typically 20-60 KB), so the byte cap only matters for a runaway
    provider; the newest frame is always kept, so the terminal event can always be sent.
    """

    __slots__ = ("_first_seq", "_frames", "_max_bytes", "_size")

    def __init__(self, max_bytes: int) -> None:
        self._frames: deque[bytes] = deque()
        self._first_seq = 0
        self._size = 0
        self._max_bytes = max_bytes

    @property
    def next_seq(self) -> int:
        """The sequence number the next frame will get."""
        return self._first_seq + len(self._frames)

    def append(self, frame: bytes) -> None:
        self._frames.append(frame)
        self._size += len(frame)
        while self._size > self._max_bytes and len(self._frames) > 1:
            self._size -= len(self._frames.popleft())
            self._first_seq += 1

    def holds(self, seq: int) -> bool:
        """Whether the frame ``seq`` can still be sent (or is the next one to come)."""
        return self._first_seq <= seq <= self.next_seq

    def since(self, seq: int) -> list[bytes] | None:
        """Frames from ``seq`` on; None when some of them were already dropped."""
        if seq < self._first_seq:
            return None
        return list(islice(self._frames, seq - self._first_seq, None))
