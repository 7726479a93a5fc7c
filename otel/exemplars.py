"""Exemplars only where they serve: on the duration histograms.

An exemplar is a sampled measurement's trace id beside a histogram bucket: it answers
"show me a request that was this slow". A token count's exemplar answers nothing a trace
search does not, yet the SDK offers every measurement made inside a sampled span to a
reservoir (a lock and a random draw, for each of the two metric readers). This view gives
the token-usage histogram a reservoir that keeps nothing. (The counters are observable,
``otel.metrics.Totals``: read at collection, outside any span, they have no exemplars.)
"""

from __future__ import annotations

from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.metrics import Exemplar, ExemplarReservoir
from opentelemetry.sdk.metrics.view import View
from opentelemetry.util.types import Attributes


class _NoExemplars(ExemplarReservoir):
    def __init__(self, **_kwargs: Any) -> None:
        super().__init__()

    def offer(
        self, value: float | int, time_unix_nano: int, attributes: Attributes, context: Context
    ) -> None:
        return None

    def collect(self, point_attributes: Attributes) -> list[Exemplar]:
        return []


def _no_exemplars(_aggregation_type: type) -> type[_NoExemplars]:
    return _NoExemplars


#: The one histogram that is not a duration.
EXEMPLAR_VIEWS = (
    View(instrument_name="gen_ai.client.token.usage", exemplar_reservoir_factory=_no_exemplars),
)
