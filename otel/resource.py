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
    return Resource.create(attributes)
