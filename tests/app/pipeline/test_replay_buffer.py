"""The replay buffer: the same answers as the simple model it replaced, at a cost that
does not grow with the frames before the ones asked for."""

from __future__ import annotations

from collections import deque
from itertools import islice

from hypothesis import given, settings
from hypothesis import strategies as st

from app.pipeline.replay import ReplayBuffer


class Model:
    """The buffer as it was (a deque walked from its left end on every read)."""

    def __init__(self, max_bytes: int) -> None:
        self.frames: deque[bytes] = deque()
        self.first_seq = 0
        self.size = 0
        self.max_bytes = max_bytes
        self.keep_from = 0

    @property
    def next_seq(self) -> int:
        return self.first_seq + len(self.frames)

    def unsent(self) -> int:
        return sum(map(len, islice(self.frames, self.keep_from - self.first_seq, None)))

    def append(self, frame: bytes) -> None:
        self.frames.append(frame)
        self.size += len(frame)
        self.evict()

    def sent_through(self, seq: int) -> None:
        self.keep_from = min(max(seq, self.first_seq), self.next_seq)
        self.evict()

    def evict(self) -> None:
        while self.size > self.max_bytes and self.first_seq < self.keep_from:
            self.size -= len(self.frames.popleft())
            self.first_seq += 1

    def since(self, seq: int) -> list[bytes] | None:
        if seq < self.first_seq:
            return None
        return list(islice(self.frames, seq - self.first_seq, None))


operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 40)),
        st.tuples(st.just("sent"), st.integers(-3, 400)),
        st.tuples(st.just("since"), st.integers(-3, 400)),
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(max_bytes=st.integers(0, 200), ops=operations)
def test_it_answers_as_the_simple_model_does(max_bytes: int, ops: list[tuple[str, int]]) -> None:
    buffer, model = ReplayBuffer(max_bytes), Model(max_bytes)
    for n, (op, value) in enumerate(ops):
        if op == "append":
            frame = bytes([n % 256]) * value
            buffer.append(frame)
            model.append(frame)
        elif op == "sent":
            buffer.sent_through(value)
            model.sent_through(value)
        else:
            assert buffer.since(value) == model.since(value)
        assert buffer.next_seq == model.next_seq
        assert buffer.first_seq == model.first_seq
        assert buffer.size == model.size
        assert buffer.unsent_bytes == model.unsent()
        assert buffer.holds(value) == (model.first_seq <= value <= model.next_seq)


def test_a_long_report_written_frame_by_frame_keeps_its_list_short() -> None:
    """Frames dropped from the front are removed in bulk now and then, so reading the next
    frame is an index, and the list never holds much more than the frames kept."""
    buffer = ReplayBuffer(max_bytes=1000)
    for n in range(100_000):
        buffer.append(b"x" * 10)
        assert buffer.since(n) == [b"x" * 10]
        buffer.sent_through(n + 1)
        assert buffer.unsent_bytes == 0
    held = buffer.next_seq - buffer.first_seq
    assert held == 100
    assert len(buffer._frames) <= 2 * held + 64
