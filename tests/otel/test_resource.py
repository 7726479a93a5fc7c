"""The process's resource: hashed once, equal to the SDK's own."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.resources import Resource

from otel.resource import build_resource


def test_resource_hashes_once_and_like_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    resource = build_resource(service_name="fit-check", service_version="1", environment="x")
    plain = Resource(resource.attributes, resource.schema_url)
    assert resource == plain and plain == resource
    assert hash(resource) == hash(plain)

    def encode_again(_self: Resource) -> int:
        raise AssertionError("the resource's attributes were encoded again")

    # The OTLP encoders look every span's resource up in a dict: the SDK's hash encodes
    # all its attributes as JSON each time; ours answers from the first time.
    monkeypatch.setattr(Resource, "__hash__", encode_again)
    assert {resource: 1}[resource] == 1
