"""The resource that names this process in every exported span and metric."""

from __future__ import annotations

import uuid

from opentelemetry.sdk.resources import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_VERSION,
    OTELResourceDetector,
    Resource,
)

DEPLOYMENT_ENVIRONMENT_NAME = "deployment.environment.name"


class HashedOnceResource(Resource):
    """A resource that computes its hash once.

    The OTLP encoders group every span by its resource, a dict lookup per span, and the
    SDK's ``Resource.__hash__`` JSON-encodes all the attributes on each call (a large
    share of the span export thread's work: docs/performance.md). A
    resource's attributes are immutable, so the first answer stays right.
    """

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def build_resource(*, service_name: str, service_version: str, environment: str) -> Resource:
    """Our defaults, overridden by anything set in ``OTEL_RESOURCE_ATTRIBUTES``.

    ``service.name`` comes from the settings (``OTEL_SERVICE_NAME``), which the spec gives
    precedence over the attribute list. ``service.instance.id`` is fresh per process, which is
    what tells two workers' series apart after the collector.
    """
    from_env = OTELResourceDetector().detect().attributes
    defaults = {
        SERVICE_VERSION: service_version,
        SERVICE_INSTANCE_ID: str(uuid.uuid4()),
        DEPLOYMENT_ENVIRONMENT_NAME: environment,
    }
    attributes = {key: value for key, value in defaults.items() if key not in from_env}
    attributes[SERVICE_NAME] = service_name
    return HashedOnceResource(Resource.create(attributes))
