"""``make up``, ``down`` and ``logs`` find Docker Compose whichever way it is installed, and
say what is missing when it is not (stand-in ``docker`` commands: nothing is started)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def make(target: str, path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``make`` with only ``path`` on PATH: a Docker installed on the machine is not seen
    (the recipes' shell is /bin/sh by its full path, and needs only its builtins)."""
    return subprocess.run(
        [shutil.which("make") or "/usr/bin/make", "-s", *flags, target],
        cwd=REPO,
        env={"PATH": str(path), "HOME": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def stand_in(directory: Path, name: str, script: str) -> None:
    command = directory / name
    command.write_text(f"#!/bin/sh\n{script}\n")
    command.chmod(0o755)


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.mark.parametrize("target", ["up", "down", "logs"])
def test_without_compose_it_says_what_to_install(bin_dir: Path, target: str) -> None:
    result = make(target, bin_dir)
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == (
        f'make {target} needs Docker Compose v2, and neither "docker compose" nor '
        '"docker-compose" works here: install the Docker compose plugin '
        "(docker-compose-plugin) or the standalone docker-compose. "
        '"make stack" runs the same stack without Docker.'
    )


def test_the_compose_plugin_is_used_when_docker_has_it(bin_dir: Path) -> None:
    stand_in(bin_dir, "docker", '[ "$1 $2" = "compose version" ] && exit 0; exit 1')
    assert make("up", bin_dir, "-n").stdout.splitlines()[-1] == "docker compose up -d --build"


def test_the_standalone_binary_is_used_otherwise(bin_dir: Path) -> None:
    stand_in(bin_dir, "docker", "exit 1")  # an engine without the compose plugin
    stand_in(bin_dir, "docker-compose", "exit 0")
    assert make("up", bin_dir, "-n").stdout.splitlines()[-1] == "docker-compose up -d --build"


def test_production_sampling_is_one_switch(bin_dir: Path) -> None:
    stand_in(bin_dir, "docker", '[ "$1 $2" = "compose version" ] && exit 0; exit 1')
    assert make("up", bin_dir, "-n", "SAMPLING=production").stdout.splitlines()[-1] == (
        "FIT_CHECK_TRACE_SAMPLE_PERCENT=10 FIT_CHECK_TRACE_DECISION_WAIT=135s "
        "docker compose up -d --build"
    )
    refused = make("up", bin_dir, "SAMPLING=prod")
    assert refused.returncode != 0
    assert "SAMPLING is local (the default) or production" in refused.stderr
