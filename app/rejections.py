"""Why a request was refused before any work started.

The closed label set of ``fit_check_rejected_requests_total{reason}``: load shedding,
limits and hostile input become visible in the metrics without any input in a label.
"""

from __future__ import annotations

from otel.facade import REJECTION_REASONS, RejectionReason

__all__ = ["REJECTION_REASONS", "RejectionReason"]
