"""Event ids: what this service hands out, and the only ``Last-Event-ID`` values it reads."""

from __future__ import annotations

import re

import pytest

from app.pipeline.event_ids import LastEventId, event_id, new_stream_key, parse_last_event_id

KEY = "AbCd_-0123456789"


def test_a_stream_key_is_16_url_safe_random_characters() -> None:
    keys = {new_stream_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{16}", key) for key in keys)


def test_an_id_names_its_stream_and_sequence_and_says_when_it_is_the_last() -> None:
    assert event_id(KEY, 7) == f"{KEY}.7"
    assert event_id(KEY, 7, terminal=True) == f"{KEY}.7.end"
    assert parse_last_event_id(event_id(KEY, 7)) == LastEventId(key=KEY, seq=7, terminal=False)
    assert parse_last_event_id(event_id(KEY, 0, terminal=True)) == LastEventId(KEY, 0, True)
    assert parse_last_event_id(f"{KEY}.999999999") == LastEventId(KEY, 999_999_999, False)


@pytest.mark.parametrize(
    "value",
    [
        "",
        KEY,
        f"{KEY}.",
        f"{KEY[:15]}.1",
        f"{KEY}x.1",
        f"{KEY[:15]}+.1",
        f"{KEY}.1234567890",
        f"{KEY}.-1",
        f"{KEY}.1.END",
        f"{KEY}.1.end.end",
        f"{KEY}.1.done",
        f" {KEY}.1",
        f"{KEY}.1\n",
        f"{KEY}.1 ",
    ],
)
def test_anything_else_is_not_an_id_of_ours(value: str) -> None:
    assert parse_last_event_id(value) is None
