"""``make e2e-compose`` runs the project's own docker-compose.yml: its override may swap
image names and build settings, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
OVERRIDE = ROOT / "deploy" / "compose-e2e" / "docker-compose.e2e.yml"
STAND_INS = ROOT / "deploy" / "compose-e2e" / "stand-ins.sh"
#: What the override may set on a service.
SWAPPABLE = {"image", "pull_policy", "build"}
PREFIX = "fit-check-e2e/"


def load(path: Path) -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def test_the_override_swaps_images_and_build_settings_only() -> None:
    services = load(COMPOSE)["services"]
    override = load(OVERRIDE)
    assert set(override) == {"services"}
    for name, settings in override["services"].items():
        assert name in services, name
        assert set(settings) <= SWAPPABLE, (name, set(settings) - SWAPPABLE)
        assert settings["pull_policy"] == "never", name
        # Build settings that change where the build runs, never what it builds.
        assert set(settings.get("build", {})) <= {"network"}, name


def test_every_started_service_runs_an_image_built_here() -> None:
    """A name the override leaves alone would be looked up in a registry; a name outside
    fit-check-e2e/ would replace an image of the user's own `make up` stack."""
    services = load(COMPOSE)["services"]
    override = load(OVERRIDE)["services"]
    for name in set(services) - {"grafana"}:
        assert override.get(name, {}).get("image", "").startswith(PREFIX), name


def test_each_stand_in_keeps_the_upstream_tag() -> None:
    """fit-check-e2e/<last part of the upstream name>:<upstream tag>, as stand-ins.sh
    builds them: a version bump in docker-compose.yml shows here first."""
    services = load(COMPOSE)["services"]
    override = load(OVERRIDE)["services"]
    built = set(re.findall(r'"\$IMAGE_PREFIX/([^"]+)"', STAND_INS.read_text()))
    for name, settings in override.items():
        if "image" not in settings or "build" in services[name]:
            continue  # images compose builds itself keep their own names
        upstream = services[name]["image"]
        stand_in = settings["image"].removeprefix(PREFIX)
        assert stand_in == upstream.rsplit("/", 1)[-1], (name, upstream)
        assert stand_in in built, (name, stand_in)
