"""The frames of one stream: what its reader has yet to be sent, and what a reconnecting
client may ask for again."""

from __future__ import annotations

from collections import deque
from itertools import islice


class ReplayBuffer:
    """Frames by sequence number. Frames already sent are dropped, oldest first, once the
    buffer passes ``max_bytes``; frames not yet sent (from ``keep_from`` on) never are.

    Keeping the unsent frames is what lets a reader that keeps up never be cut: the replay
    allowance bounds what is kept *for reconnects*, and the session bounds the unsent part
    separately, by making its producer wait (``SessionRun``'s backpressure). So the buffer
    holds at most ``max_bytes`` of sent frames plus the session's send allowance.
    """

    __slots__ = ("_first_seq", "_frames", "_keep_from", "_max_bytes", "_size", "_unsent")

    def __init__(self, max_bytes: int) -> None:
        self._frames: deque[bytes] = deque()
        self._first_seq = 0
        self._size = 0
        self._max_bytes = max_bytes
        self._keep_from = 0
        self._unsent = 0

    @property
    def next_seq(self) -> int:
        """The sequence number the next frame will get."""
        return self._first_seq + len(self._frames)

    @property
    def first_seq(self) -> int:
        """The oldest frame still held."""
        return self._first_seq

    @property
    def unsent_bytes(self) -> int:
        """Bytes of the frames from ``keep_from`` on: what the reader has yet to be sent."""
        return self._unsent

    @property
    def size(self) -> int:
        return self._size

    def append(self, frame: bytes) -> None:
        self._frames.append(frame)
        self._size += len(frame)
        self._unsent += len(frame)
        self._evict()

    def sent_through(self, seq: int) -> None:
        """Frames before ``seq`` have been sent: they may go once the buffer is full.
        Moving back (a reconnect that asks for older frames) keeps them again."""
        seq = min(max(seq, self._first_seq), self.next_seq)
        keep_from = self._keep_from
        if seq == keep_from:
            return
        first = self._first_seq
        low, high = sorted((seq, keep_from))
        moved = sum(map(len, islice(self._frames, low - first, high - first)))
        self._unsent += moved if seq < keep_from else -moved
        self._keep_from = seq
        self._evict()

    def _evict(self) -> None:
        frames = self._frames
        while self._size > self._max_bytes and self._first_seq < self._keep_from:
            self._size -= len(frames.popleft())
            self._first_seq += 1

    def holds(self, seq: int) -> bool:
        """Whether the frame ``seq`` can still be sent (or is the next one to come)."""
        return self._first_seq <= seq <= self.next_seq

    def since(self, seq: int) -> list[bytes] | None:
        """Frames from ``seq`` on; None when some of them were already dropped."""
        if seq < self._first_seq:
            return None
        return list(islice(self._frames, seq - self._first_seq, None))
