"""Debian's ``redis-server`` on a free loopback port, nothing persisted: stopped, paused
(SIGSTOP) and resumed by the tests of the shared store."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RedisServer:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    #: Clients must authenticate with it (``--requirepass``).
    password: str | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                *(("--requirepass", self.password) if self.password else ()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.cli("PING") == "PONG":
                return
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [
                "redis-cli",
                "-p",
                str(self.port),
                *(("-a", self.password, "--no-auth-warning") if self.password else ()),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return done.stdout.strip()

    def stored_keys(self) -> list[str]:
        return [k for k in self.cli("--scan", "--pattern", "fit-check:*").splitlines() if k]
