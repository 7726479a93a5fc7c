"""Start and stop the processes a benchmark needs; read their CPU time and memory from /proc.

Every process is started in a session of its own, so a Ctrl-C in the terminal reaches only
the harness, whose ``finally`` blocks then stop each process by its pid, in order. Nothing
here listens or connects anywhere but 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.e2e.stack import PORT_NAMES

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
CACHE = Path(os.environ.get("FIT_CHECK_CACHE", Path.home() / ".cache" / "fit-check"))
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# The service's own settings: a variant sets exactly these, nothing leaks in from the shell.
_SERVICE_VARS = ("OTEL_", "FIT_CHECK_", "LOG_", "OPENAI_", "GOOGLE_")
_SERVICE_NAMES = {"HOST", "PORT", "ALLOWED_ORIGINS"}


def free_port() -> int:
    """A loopback port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment minus every service setting, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_SERVICE_VARS) and k not in _SERVICE_NAMES
    }
    return {**env, **extra}


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """utime + stime of a process (all its threads), or of its thread ``tid``, from /proc."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    # The command name (field 2) may contain spaces; everything after its ')' is numeric.
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    """Resident set size in MiB, from /proc/PID/statm."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * PAGE / 2**20


def wait_http(url: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers (bounded); fail early if ``process`` has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's group (it leads its own session), SIGKILL after 10 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


@dataclass
class Server:
    """One service process: one uvicorn worker, so its pid is the whole server."""

    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        return cpu_seconds(self.process.pid)

    def main_thread_cpu_s(self) -> float:
        """The event loop's thread (its tid is the pid); the rest is exporters and servers."""
        return cpu_seconds(self.process.pid, self.process.pid)

    def rss_mb(self) -> float:
        return rss_mb(self.process.pid)

    def peak_rss_mb(self) -> float:
        """The high-water mark of RSS (VmHWM), which a momentary reading can miss."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


#: Every stream of a benchmark comes from one address: the per-client share (a guard
#: against one client holding the cap) would refuse the load it is to measure.
LOAD_FROM_ONE_ADDRESS = {"FIT_CHECK_MAX_SESSIONS_PER_CLIENT": "100000"}


@dataclass(frozen=True)
class ServerSpec:
    """What to start: the service (``fit-check serve``) or the peer, with its environment."""

    env: dict[str, str]
    peer: bool = False


def _start(name: str, spec: ServerSpec, port: int, log_dir: Path) -> Server:
    if spec.peer:
        command = [str(BIN / "python"), "-m", "bench.peer_app"]
    else:
        command = [str(BIN / "fit-check"), "serve"]
    defaults = {
        "FIT_CHECK_LATENCY_MS": "0",
        "PYTHONPATH": str(ROOT),  # bench.*
        **LOAD_FROM_ONE_ADDRESS,
    }
    full_env = clean_env(**{**defaults, **spec.env, "HOST": "127.0.0.1", "PORT": str(port)})
    with (log_dir / f"{name}.log").open("ab") as log:
        # cwd is the log dir, not the repo: a developer's .env there must not change a variant.
        process = subprocess.Popen(
            command,
            cwd=log_dir,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, port, process)


@contextmanager
def serve_all(specs: dict[str, ServerSpec], *, log_dir: Path) -> Iterator[dict[str, Server]]:
    """Run several servers on free loopback ports until the block ends, all started at once.

    The service runs as ``fit-check serve``, exactly as shipped (uvicorn, one worker, its
    own logging config). The peer runs ``python -m bench.peer_app``, which makes the same
    ``uvicorn.run`` call with the peer's factory, so both start and log the same way. Each
    server's stdout/stderr (its logs) go to ``log_dir/NAME.log``. Started together, a group
    of servers is up in about the time one takes (a second of imports each).
    """
    servers: dict[str, Server] = {}
    ports: set[int] = set()
    try:
        for name, spec in specs.items():
            # Nothing listens yet, so the OS could hand out one free port twice.
            port = free_port()
            while port in ports:
                port = free_port()
            ports.add(port)
            servers[name] = _start(name, spec, port, log_dir)
        for name, server in servers.items():
            try:
                wait_http(f"{server.url}/health", timeout_s=60, process=server.process)
            except RuntimeError as exc:
                log_path = log_dir / f"{name}.log"
                raise RuntimeError(f"{name} did not start ({exc}); see {log_path}") from None
        yield servers
    finally:
        for server in servers.values():
            stop(server.process)


@contextmanager
def serve(name: str, spec: ServerSpec, *, log_dir: Path) -> Iterator[Server]:
    """One server, as :func:`serve_all` runs them."""
    with serve_all({name: spec}, log_dir=log_dir) as servers:
        yield servers[name]


@dataclass
class Endpoint:
    """Where the full-telemetry variant sends OTLP, and the pids that receive it."""

    url: str
    kind: str
    pids: list[int] = field(default_factory=list)

    def cpu_s(self) -> float:
        """CPU seconds of the receiving processes (what the telemetry costs outside the app)."""
        total = 0.0
        for pid in self.pids:
            with suppress(OSError):  # a process that exited has no CPU to add
                total += cpu_seconds(pid)
        return total


def stack_available() -> bool:
    bins = CACHE / "bin"
    prometheus = (bins / "prometheus").exists() or Path("/usr/bin/prometheus").exists()
    return (bins / "otelcol-fit-check").exists() and (bins / "jaeger").exists() and prometheus


@contextmanager
def otlp_endpoint(run_dir: Path, *, use_stack: bool) -> Iterator[Endpoint]:
    """A live OTLP/HTTP endpoint for the whole run.

    With the tools ``make stack-tools`` builds, it is the project's own local stack
    (``deploy/local/stack.sh``: the real Collector with the shipped otel-collector.yaml,
    sending to Jaeger, scraped by Prometheus) on free ports and a private run dir, so a
    ``make stack`` that is already running is left alone. Without them, a loopback sink
    (bench/otlp_sink.py) that answers every export with 200.
    """
    if use_stack:
        stack_dir = run_dir / "stack"
        ports = {name: str(free_port()) for name in PORT_NAMES}
        env = clean_env(FIT_CHECK_STACK_DIR=str(stack_dir), STACK_TIMEOUT="60", **ports)
        script = str(ROOT / "deploy" / "local" / "stack.sh")
        try:
            subprocess.run([script, "up"], env=env, check=True, capture_output=True, timeout=240)
            pids = [
                int((stack_dir / f"{name}.pid").read_text())
                for name in ("collector", "jaeger", "prometheus")
            ]
            url = f"http://127.0.0.1:{ports['OTEL_COLLECTOR_OTLP_HTTP_PORT']}"
            yield Endpoint(url, "OTel Collector 0.165.0 -> Jaeger + Prometheus (stack.sh)", pids)
        finally:
            subprocess.run([script, "down"], env=env, capture_output=True, timeout=120)
        return
    port = free_port()
    with (run_dir / "otlp_sink.log").open("ab") as log:
        sink = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "otlp_sink.py"), str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/", timeout_s=20, process=sink)
        yield Endpoint(
            f"http://127.0.0.1:{port}", "loopback OTLP sink (bench/otlp_sink.py)", [sink.pid]
        )
    finally:
        stop(sink)


@contextmanager
def dead_endpoint() -> Iterator[str]:
    """An OTLP URL whose port refuses every connection, for as long as the block runs.

    The port is bound but never listened on: connecting gets a reset at once (a collector
    that is down), and no server this run starts later can be handed the same port.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
