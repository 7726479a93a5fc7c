"""What the service is asked: the one request model, shared by the API and the service.

It lives below the API layer so the service can use it without importing HTTP code; it is
also the OpenAPI documentation of the request (the POST body and the GET query alike).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

SESSION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
# Not in a query: C0 controls other than tab/newline/CR, DEL, bidi embedding and override
# controls (they make text display other than it reads), and UTF-16 surrogates (a lone one
# cannot even be encoded for the response). Written with escapes so the OpenAPI document
# stays ASCII; the same character classes are the check and its documentation. A CR is
# allowed in, and read as a newline: a browser's form sends a textarea's lines with CRLF.
_BANNED = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
# Characters that show nothing, besides whitespace: soft hyphen, Mongolian vowel separator,
# zero-width space, non-joiner and joiner, LRM and RLM, word joiner, invisible operators
# and the BOM. Allowed in a query, but a query of nothing else is empty.
_INVISIBLE = r"\u00ad\u180e\u200b-\u200f\u2060-\u2064\ufeff"
#: The documented rule. Not what runs: a backtracking engine takes quadratic time on it
#: (a long query with a NUL at the end costs milliseconds a check).
QUERY_PATTERN = rf"^[^{_BANNED}]*[^\s{_INVISIBLE}{_BANNED}][^{_BANNED}]*$"
#: What runs, in linear time: one scan for a banned character, one for a visible one.
_BANNED_CHARACTER = re.compile(f"[{_BANNED}]")
_VISIBLE_CHARACTER = re.compile(rf"[^\s{_INVISIBLE}]")


class FitCheckRequest(BaseModel):
    """What the employer asks. The same model validates the POST body and the GET query."""

    model_config = ConfigDict(extra="forbid")

    query: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)
    ] = Field(
        description="A company name or a job description (1-2,000 characters after trimming, "
        "not all of them invisible; no control characters but tab, newline and CR, which is "
        "read as a newline; no bidi overrides or lone surrogates).",
        examples=["Senior Python engineer, FastAPI, Kubernetes"],
        json_schema_extra={"pattern": QUERY_PATTERN},
    )
    session_id: Annotated[str, Field(pattern=SESSION_ID_PATTERN)] | None = Field(
        None, description="Optional client-chosen id; the server makes a UUID4 when absent."
    )
    include_thoughts: bool = Field(True, description="Stream `thought` events as well.")

    @field_validator("query", mode="before")
    @classmethod
    def _one_newline(cls, value: object) -> object:
        """CRLF and CR, as forms send a textarea's lines, become LF before any rule."""
        if isinstance(value, str) and "\r" in value:
            return value.replace("\r\n", "\n").replace("\r", "\n")
        return value

    @field_validator("query")
    @classmethod
    def _printable(cls, value: str) -> str:
        if _BANNED_CHARACTER.search(value) is not None:
            raise ValueError(
                "query must not contain control characters, bidi overrides or lone surrogates"
            )
        if _VISIBLE_CHARACTER.search(value) is None:  # only zero-width characters left
            raise PydanticCustomError(
                "string_too_short",
                "String should have at least 1 visible character",
                {"min_length": 1},
            )
        return value


STREAM_KEY_PATTERN = r"^[A-Za-z0-9_-]{16}$"


class FeedbackRequest(BaseModel):
    """A user's verdict on one analysis, sent by whoever read its stream."""

    model_config = ConfigDict(extra="forbid")

    stream_key: Annotated[str, Field(pattern=STREAM_KEY_PATTERN)] = Field(
        description="The part of the stream's event ids before the first dot: only a reader "
        "of the stream knows it, so only a reader can rate it.",
        examples=["q3J9c1x0bW8tZ2Vu"],
    )
    rating: Literal["up", "down"] = Field(description="Was the analysis right?")
    comment: Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)] | None = (
        Field(
            None,
            description="Optional, at most 1,000 characters. Never on a metric; on the trace "
            "only when content capture is on (it may hold personal data).",
        )
    )

    @field_validator("comment")
    @classmethod
    def _printable_comment(cls, value: str | None) -> str | None:
        if value is not None and _BANNED_CHARACTER.search(value) is not None:
            raise ValueError(
                "comment must not contain control characters, bidi overrides or lone surrogates"
            )
        return value


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the offending field, e.g. `query`.")
    rule: str = Field(description="The rule it broke, e.g. `string_too_long`.")
    message: str


class ErrorBody(BaseModel):
    """Every 4xx answer of the API has this shape."""

    code: str = Field(description="INVALID_QUERY, RATE_LIMITED, PAYLOAD_TOO_LARGE, NOT_FOUND...")
    message: str
    errors: list[FieldError] = Field(default_factory=list)


def error_json(code: str, message: str) -> bytes:
    """The one JSON error body, for a refusal sent below the app (the server's own, the
    metrics port's): the same shape as every API error (``ErrorBody``)."""
    return ErrorBody(code=code, message=message).model_dump_json().encode()
