"""The frames of one stream: what its reader has yet to be sent, and what a reconnecting
client may ask for again."""

from __future__ import annotations

#: Dropped frames are removed from the front of the list once they are this many and half
#: of it: one move of the rest per that many drops, so each costs O(1) on average.
_COMPACT_AFTER = 64


class ReplayBuffer:
    """Frames by sequence number. Frames already sent are dropped, oldest first, once the
    buffer passes ``max_bytes``; frames not yet sent (from ``keep_from`` on) never are.

    Keeping the unsent frames is what lets a reader that keeps up never be cut: the replay
    allowance bounds what is kept *for reconnects*, and the session bounds the unsent part
    separately, by making its producer wait (``SessionRun``'s backpressure). So the buffer
    holds at most ``max_bytes`` of sent frames plus the session's send allowance.

    Every operation costs what it returns or moves, never the frames before it: frame
    ``seq`` is at ``_frames[_head + seq - _first_seq]`` (a list indexed directly, not a
    deque walked from its left end), so a long report's last write costs what its first
    did.
    """

    __slots__ = ("_first_seq", "_frames", "_head", "_keep_from", "_max_bytes", "_size", "_unsent")

    def __init__(self, max_bytes: int) -> None:
        #: Frames held are ``_frames[_head:]``; the ones before were dropped.
        self._frames: list[bytes] = []
        self._head = 0
        self._first_seq = 0
        self._size = 0
        self._max_bytes = max_bytes
        self._keep_from = 0
        self._unsent = 0

    @property
    def next_seq(self) -> int:
        """The sequence number the next frame will get."""
        return self._first_seq + len(self._frames) - self._head

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
        if self._size > self._max_bytes:
            self._evict()

    def sent_through(self, seq: int) -> None:
        """Frames before ``seq`` have been sent: they may go once the buffer is full.
        Moving back (a reconnect that asks for older frames) keeps them again."""
        seq = min(max(seq, self._first_seq), self.next_seq)
        keep_from = self._keep_from
        if seq == keep_from:
            return
        start = self._head - self._first_seq
        if seq == keep_from + 1:  # one frame sent: a chunk written as it came
            moved = len(self._frames[start + keep_from])
        else:
            low, high = sorted((seq, keep_from))
            moved = sum(map(len, self._frames[start + low : start + high]))
        self._unsent += moved if seq < keep_from else -moved
        self._keep_from = seq
        if self._size > self._max_bytes:
            self._evict()

    def _evict(self) -> None:
        frames = self._frames
        head = self._head
        while self._size > self._max_bytes and self._first_seq < self._keep_from:
            self._size -= len(frames[head])
            frames[head] = b""
            head += 1
            self._first_seq += 1
        if head >= _COMPACT_AFTER and 2 * head >= len(frames):
            del frames[:head]
            head = 0
        self._head = head

    def holds(self, seq: int) -> bool:
        """Whether the frame ``seq`` can still be sent (or is the next one to come)."""
        return self._first_seq <= seq <= self.next_seq

    def since(self, seq: int) -> list[bytes] | None:
        """Frames from ``seq`` on; None when some of them were already dropped."""
        if seq < self._first_seq:
            return None
        return self._frames[self._head + seq - self._first_seq :]
