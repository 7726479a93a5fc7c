"""Message content on telemetry: whether it is recorded, where, and masked how.

The GenAI conventions' ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` decides:
``NO_CONTENT`` (the default: prompts and answers hold users' text), ``SPAN_ONLY`` (the
``gen_ai.input.messages`` / ``gen_ai.output.messages`` attributes), ``EVENT_ONLY`` (a
``gen_ai.client.inference.operation.details`` event on the span instead) or
``SPAN_AND_EVENT``. Whatever is recorded goes through :class:`ContentRedactor` first, in
this process: e-mail addresses, phone numbers and whatever the configured pattern
matches never leave it.
"""

from __future__ import annotations

import re
from typing import Literal

ContentCapture = Literal["NO_CONTENT", "SPAN_ONLY", "EVENT_ONLY", "SPAN_AND_EVENT"]
CONTENT_CAPTURE_VALUES: tuple[ContentCapture, ...] = (
    "NO_CONTENT",
    "SPAN_ONLY",
    "EVENT_ONLY",
    "SPAN_AND_EVENT",
)

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
#: A run that looks like a phone number; masked when it holds at least ``_PHONE_DIGITS``
#: digits, so years ("2019-2024") and versions stay.
_PHONE_LIKE = re.compile(r"\+?\(?\d[\d\s().-]{6,}\d")
_PHONE_DIGITS = 9


def on_spans(mode: ContentCapture) -> bool:
    return mode in ("SPAN_ONLY", "SPAN_AND_EVENT")


def on_events(mode: ContentCapture) -> bool:
    return mode in ("EVENT_ONLY", "SPAN_AND_EVENT")


class ContentRedactor:
    """Masks personal data in text before it is put on telemetry."""

    def __init__(self, pattern: str | None = None) -> None:
        self._custom = None if not pattern else re.compile(pattern)

    def __call__(self, text: str) -> str:
        text = _EMAIL.sub("[email]", text)
        text = _PHONE_LIKE.sub(_mask_phone, text)
        if self._custom is not None:
            text = self._custom.sub("[redacted]", text)
        return text


def _mask_phone(match: re.Match[str]) -> str:
    found = match.group(0)
    return "[phone]" if sum(c.isdigit() for c in found) >= _PHONE_DIGITS else found
