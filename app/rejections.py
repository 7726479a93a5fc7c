"""Why a request was refused before any work started.

The closed label set of ``fit_check_rejected_requests_total{reason}``: load shedding,
limits and hostile input become visible in the metrics without any input in a label.
"""

from __future__ import annotations

from typing import Literal, get_args

RejectionReason = Literal[
    "origin_not_allowed",  # 403: a browser page on an origin outside ALLOWED_ORIGINS
    "invalid_request",  # 400/415/422: query, session id, body, its type or Last-Event-ID
    "payload_too_large",  # 413: body over FIT_CHECK_MAX_BODY_BYTES
    "rate_limited",  # 429: FIT_CHECK_MAX_CONCURRENT_SESSIONS streams already running
    "shutting_down",  # 503: the instance is draining
    "header_too_large",  # 431: request headers over FIT_CHECK_MAX_HEADER_BYTES
    "header_timeout",  # 408: headers unfinished after FIT_CHECK_HEADER_TIMEOUT_S
    "body_timeout",  # 408: body unfinished FIT_CHECK_BODY_TIMEOUT_S after its headers
    "host_not_allowed",  # 421: a Host outside loopback, HOST and FIT_CHECK_ALLOWED_HOSTS
    "malformed_request",  # 400: not parsable as HTTP/1.1 (a NUL in a header, a bad request line)
    "session_store_unavailable",  # 503: Redis down and FIT_CHECK_REDIS_FAILURE_MODE=closed
    "budget_exceeded",  # 429: this hour's LLM spend reached FIT_CHECK_BUDGET_USD_PER_HOUR
]
REJECTION_REASONS: tuple[RejectionReason, ...] = get_args(RejectionReason)
