"""Worker targets for the supervisor's tests. Spawned workers import this module to find
their target, so it imports next to nothing."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

MISSING = "/nowhere/profile.json"


def idle_or_fail(starts: Path, _sock: socket.socket, number: int) -> None:
    """Worker 1 waits as a serving worker would, until the supervisor stops it; any other
    notes when it started and fails at once, as a worker that cannot read a file does."""
    if number == 1:
        threading.Event().wait(60)
        return
    with starts.open("a") as file:
        file.write(f"{time.monotonic()}\n")
    raise FileNotFoundError(2, "No such file or directory", MISSING)
