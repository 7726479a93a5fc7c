"""Several ``fit-check serve`` replicas sharing one Redis, behind nginx, as local processes.

What the replica tests (``test_replicas.py``, ``test_replicas_browser.py``) stand on:

- ``RedisServer``: Debian's ``redis-server`` on a free loopback port, nothing persisted
  (``--save ''``, ``--appendonly no``), its dir in the test's run dir; stopped, killed,
  paused (SIGSTOP) and resumed, restarted on the same port.
- ``FakeLLM``: the loopback OpenAI fake of ``tests/fake_apis.py`` served from this
  process (a uvicorn thread), so a test counts the chat completions the replicas ask for
  and changes the fake's pace or flood while they run.
- ``Replica``: one ``fit-check serve`` process; SIGKILLed and started again on its port.
- ``Nginx``: ``deploy/nginx/fit-check.conf`` rendered for two replicas, run as a local
  process (``-p <run dir> -g 'daemon off;'``); its ``X-Fit-Check-Upstream`` header and
  access log say which replica answered.
- ``Replicas``: the set the module fixture starts once per test module (lazily: only the
  modules whose tests ask for it): Redis, the fake, replicas ``a`` and ``b`` (the LLM is
  the fake; traces, metrics and logs exported to the e2e stack's collector, so a trace is
  read back from Jaeger) and nginx in front of them; ``spawn`` adds more replicas (another
  prefix, another Redis, other settings) that the fixture stops at the end.

Only loopback traffic; every wait is a bounded poll of a condition.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from httpx_sse import connect_sse
from prometheus_client.parser import text_string_to_metric_families

from app.pipeline.event_ids import LastEventId, parse_last_event_id
from tests.e2e.stack import CACHE, ROOT, Stack, poll
from tests.fake_apis import FakeAPI
from tests.service_process import free_port

NGINX_TEMPLATE = ROOT / "deploy" / "nginx" / "fit-check.conf"
FIT_CHECK = ROOT / ".venv" / "bin" / "fit-check"
STREAM = "/api/fit-check/stream"
UPSTREAM_HEADER = "X-Fit-Check-Upstream"
#: The feature's defaults (FIT_CHECK_PRODUCER_LEASE_S, FIT_CHECK_REDIS_PREFIX).
LEASE_S = 3.0
DEFAULT_PREFIX = "fit-check:"
#: Chat completions one analysis asks for (checked by the plain stream test).
CALLS_PER_ANALYSIS = 3
#: The fake's pause between the words of its answer in the shared set: a stream takes
#: about 3.5 s, long enough to be cut and resumed mid-way.
PACE_S = 0.1
QUERY = "Senior Python engineer, FastAPI, Kafka"


def tool(name: str) -> str | None:
    """A binary from ``make stack-tools`` (linked in the cache's bin dir), else on PATH."""
    cached = CACHE / "bin" / name
    if os.access(cached, os.X_OK):
        return str(cached)
    for directory in (*os.environ.get("PATH", "").split(os.pathsep), "/usr/sbin", "/usr/bin"):
        candidate = Path(directory) / name
        if directory and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require_tools() -> tuple[str, str]:
    """redis-server and nginx, or the test is skipped (failed on CI)."""
    found = {name: tool(name) for name in ("redis-server", "nginx")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        message = (
            f"missing {', '.join(missing)}: run `make stack-tools` "
            "(deploy/local/build-tools.sh installs Debian's redis-server and nginx-light)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    redis_server, nginx = found["redis-server"], found["nginx"]
    assert redis_server is not None and nginx is not None
    return redis_server, nginx


def _stop_process(process: subprocess.Popen[bytes], sig: int, *, group: bool = False) -> None:
    """Signal ``process`` (its group: ``group``), wait for its exit, SIGKILL after 15 s."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
        process.wait(10)


# --- Redis -----------------------------------------------------------------------------


class RedisServer:
    """``redis-server`` on loopback; ``start()`` again after a stop keeps the same port."""

    def __init__(self, run_dir: Path, name: str = "redis") -> None:
        self.binary = require_tools()[0]
        self.port = free_port()
        self.dir = run_dir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        assert not self.running, "redis is already running"
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.paused = False
        poll(self._answers, timeout_s=15, every_s=0.05, what=f"redis on {self.port}")

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"redis exited: {self.log_path.read_text(errors='replace')}")
        try:
            return bool(self.client(timeout_s=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """SIGTERM, as an operator stops it; nothing is saved."""
        if self.process is not None:
            self.resume()
            _stop_process(self.process, signal.SIGTERM)

    def kill(self) -> None:
        if self.process is not None:
            self.resume()
            _stop_process(self.process, signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered (a hung Redis)."""
        assert self.process is not None and self.running
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.paused and self.process is not None:
            self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def client(self, timeout_s: float = 5.0) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            decode_responses=True,
        )

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (SCAN, which skips expired keys)."""
        with self.client() as client:
            return sorted(str(k) for k in client.scan_iter(match=f"{prefix}*", count=1000))

    def info_memory(self) -> dict[str, Any]:
        with self.client() as client:
            info: dict[str, Any] = client.info("memory")
            return info

    def memory_usage(self, key: str) -> int:
        """Bytes Redis holds for ``key``, every element counted (``SAMPLES 0``)."""
        with self.client() as client:
            used = client.memory_usage(key, samples=0)
            return int(used or 0)


# --- the fake LLM ----------------------------------------------------------------------


class FakeLLM:
    """``FakeAPI`` on a loopback port, served by uvicorn in a thread of this process."""

    def __init__(self, **knobs: Any) -> None:
        self.fake = FakeAPI(**knobs)
        self.defaults = dict(knobs)
        self.port = free_port()
        config = uvicorn.Config(
            self.fake.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="fake-llm", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        self.thread.start()
        poll(lambda: self.server.started, timeout_s=15, every_s=0.05, what="the fake LLM")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    def chat_calls(self) -> int:
        return sum(1 for r in list(self.fake.requests) if r["path"] == "/v1/chat/completions")

    def reset(self) -> None:
        """Back to the knobs it was made with (a test may have changed them)."""
        fresh = FakeAPI(**self.defaults)
        for knob in dataclasses.fields(FakeAPI):
            if knob.name != "requests":
                setattr(self.fake, knob.name, getattr(fresh, knob.name))

    @contextlib.contextmanager
    def configured(self, **knobs: Any) -> Iterator[FakeAPI]:
        """The fake with ``knobs`` set, for the ``with`` block only."""
        for name, value in knobs.items():
            setattr(self.fake, name, value)
        try:
            yield self.fake
        finally:
            self.reset()


# --- the service -----------------------------------------------------------------------


def base_env() -> dict[str, str]:
    """This process's environment without any service or telemetry setting of its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FIT_CHECK_"))}


@dataclass
class Replica:
    """One ``fit-check serve``; ``start()`` again after a kill reuses its port and env."""

    name: str
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """As nginx names it in ``X-Fit-Check-Upstream``."""
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, **env: str) -> Replica:
        assert not self.alive, f"{self.name} is already running"
        self.env.update(env)
        environment = {
            **base_env(),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            **self.env,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(FIT_CHECK), "serve"],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        poll(self._healthy, timeout_s=30, every_s=0.1, what=f"{self.name} healthy")
        return self

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{self.name} exited ({self.process.returncode}):\n{tail}")
        return httpx.get(f"{self.url}/health", timeout=1).status_code == 200

    def kill(self) -> None:
        """SIGKILL: a crash, nothing said to anyone."""
        if self.process is not None:
            _stop_process(self.process, signal.SIGKILL, group=True)

    def stop(self) -> None:
        if self.process is not None:
            _stop_process(self.process, signal.SIGTERM, group=True)

    def restart(self, **env: str) -> Replica:
        self.kill()
        return self.start(**env)

    def health(self) -> dict[str, Any]:
        """``/api/fit-check/health`` (the store's state is in ``session_store``)."""
        response = httpx.get(f"{self.url}/api/fit-check/health", timeout=5)
        body: dict[str, Any] = response.json()
        return body

    def metric(self, name: str) -> float:
        """The sum of the samples named ``name`` (all labels) on its ``/metrics``."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        )

    def log_lines(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [json.loads(raw) for raw in lines if raw.startswith("{")]

    def logged(self, message: str) -> list[dict[str, Any]]:
        return [line for line in self.log_lines() if line.get("message") == message]


# --- nginx -----------------------------------------------------------------------------


def render_nginx_conf(listen: str, a: str, b: str) -> str:
    """The template with its three placeholders filled, as envsubst naming them does."""
    text = NGINX_TEMPLATE.read_text()
    for name, value in (("NGINX_LISTEN", listen), ("FIT_CHECK_A", a), ("FIT_CHECK_B", b)):
        text = text.replace("${" + name + "}", value)
    return text


class Nginx:
    """nginx in front of two replicas, a local process with every file in its run dir."""

    def __init__(self, run_dir: Path, upstreams: tuple[Replica, Replica]) -> None:
        self.binary = require_tools()[1]
        self.dir = run_dir / "nginx"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.upstreams = upstreams
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(
            render_nginx_conf(f"127.0.0.1:{self.port}", upstreams[0].address, upstreams[1].address)
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.dir / "access.log"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        assert not self.alive
        # As root the workers would run as nobody, who cannot write the run dir.
        directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
        args = [self.binary, "-p", str(self.dir), "-c", str(self.conf)]
        args += ["-e", str(self.dir / "error.log"), "-g", directives]
        with (self.dir / "stdout.log").open("ab") as out:
            self.process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        poll(self._listening, timeout_s=15, every_s=0.05, what="nginx listening")

    def _listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            errors = (self.dir / "error.log").read_text(errors="replace")
            raise AssertionError(f"nginx exited ({self.process.returncode}):\n{errors}")
        # A bare connection: no request, so no turn of the round robin is used.
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
            return True
        return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: nginx's fast shutdown, every connection cut (a crashed front, as its
        clients see it); SIGQUIT: graceful."""
        if self.process is not None:
            _stop_process(self.process, sig)

    def restart(self) -> None:
        self.stop()
        self.start()

    def access_lines(self) -> list[str]:
        return self.access_log.read_text().splitlines() if self.access_log.exists() else []


# --- reading streams -------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One event of a stream: its id, name, data and when this client got it."""

    id: str
    event: str
    data: dict[str, Any]
    at: float

    @property
    def parsed(self) -> LastEventId:
        parsed = parse_last_event_id(self.id)
        assert parsed is not None, f"not an id the service sends: {self.id!r}"
        return parsed


@dataclass
class StreamRead:
    """What one request to the stream got: its status and upstream, and its events (200)
    or its JSON body (anything else)."""

    status: int
    headers: dict[str, str]
    frames: list[Frame] = field(default_factory=list)
    body: Any = None
    started: float = 0.0
    #: The server's side closed the connection before the terminal event.
    cut: bool = False

    @property
    def upstream(self) -> str | None:
        return self.headers.get(UPSTREAM_HEADER.lower())

    @property
    def last(self) -> Frame:
        assert self.frames, f"no events (status {self.status}, body {self.body!r})"
        return self.frames[-1]

    @property
    def ended(self) -> bool:
        return bool(self.frames) and self.frames[-1].parsed.terminal


def read_stream(
    base_url: str,
    *,
    last_event_id: str | None = None,
    stop: Callable[[Frame], bool] | None = None,
    method: str = "POST",
    query: str = QUERY,
    session_id: str | None = None,
    timeout_s: float = 60.0,
    max_frames: int = 100_000,
    on_open: Callable[[StreamRead], None] | None = None,
) -> StreamRead:
    """One request to the stream, read until its terminal event, until ``stop`` says so
    (the connection is then cut: closed by this client mid-stream), or until the server
    ends it. Bounded by ``timeout_s`` and ``max_frames``."""
    body: dict[str, str] = {"query": query}
    if session_id is not None:
        body["session_id"] = session_id
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    request: dict[str, Any] = {"json": body} if method == "POST" else {"params": body}
    deadline = time.monotonic() + timeout_s
    timeout = httpx.Timeout(10, read=min(20.0, timeout_s))
    with (
        httpx.Client(timeout=timeout) as client,
        connect_sse(client, method, f"{base_url}{STREAM}", headers=headers, **request) as source,
    ):
        response = source.response
        result = StreamRead(
            status=response.status_code,
            headers=dict(response.headers),
            started=time.monotonic(),
        )
        if response.status_code != 200:
            raw = response.read()
            result.body = json.loads(raw) if raw else None
            return result
        if on_open is not None:
            on_open(result)
        try:
            for sse in source.iter_sse():
                if not sse.id:
                    continue
                frame = Frame(sse.id, sse.event, json.loads(sse.data), time.monotonic())
                result.frames.append(frame)
                if frame.parsed.terminal or (stop is not None and stop(frame)):
                    return result
                assert len(result.frames) < max_frames, "more events than any stream has"
                assert time.monotonic() < deadline, f"the stream did not end in {timeout_s}s"
        except (httpx.RemoteProtocolError, httpx.ReadError):
            pass  # cut by the server's side: what was read stands
        result.cut = True
    return result


def assert_one_whole_stream(*parts: StreamRead) -> list[Frame]:
    """The parts read together are one stream: one key, every event once and in order
    (0, 1, 2, ...), ended by its terminal event and only by it. Returns the events."""
    frames = [frame for part in parts for frame in part.frames]
    assert frames, "no events"
    ids = [frame.parsed for frame in frames]
    assert {i.key for i in ids} == {ids[0].key}, "events of several streams"
    seqs = [i.seq for i in ids]
    assert seqs == list(range(len(seqs))), f"not every event once and in order: {seqs}"
    assert [i.terminal for i in ids] == [False] * (len(ids) - 1) + [True], "terminal event"
    return frames


def report_of(frames: list[Frame]) -> str:
    return "".join(str(f.data["chunk"]) for f in frames if f.event == "response")


# --- the set ---------------------------------------------------------------------------


@dataclass
class Replicas:
    """Redis, the fake LLM, replicas ``a`` and ``b`` and nginx in front of them."""

    run_dir: Path
    redis: RedisServer
    llm: FakeLLM
    a: Replica
    b: Replica
    nginx: Nginx
    prefix: str = DEFAULT_PREFIX
    stack: Stack | None = None
    spawned: list[Replica] = field(default_factory=list)
    extra_redis: list[RedisServer] = field(default_factory=list)

    @property
    def pair(self) -> tuple[Replica, Replica]:
        return self.a, self.b

    def other(self, replica: Replica) -> Replica:
        return self.b if replica is self.a else self.a

    def by_address(self, address: str | None) -> Replica:
        """The replica nginx names in ``X-Fit-Check-Upstream`` (or its access log)."""
        for replica in (*self.pair, *self.spawned):
            if replica.address == address:
                return replica
        raise AssertionError(f"no replica at {address!r}")

    def replica_env(
        self, env: Mapping[str, str] | None = None, redis_server: RedisServer | None = None
    ) -> dict[str, str]:
        """The settings every replica here has; ``env`` over them."""
        return {
            "FIT_CHECK_REDIS_URL": (redis_server or self.redis).url,
            "FIT_CHECK_REDIS_PREFIX": self.prefix,
            "FIT_CHECK_FORWARDED_ALLOW_IPS": "127.0.0.1",
            "FIT_CHECK_LLM_PROVIDER": "openai",
            "OPENAI_BASE_URL": self.llm.base_url,
            "OPENAI_API_KEY": "sk-test",
            "FIT_CHECK_SSE_RETRY_MS": "500",
            **(env or {}),
        }

    def spawn(
        self,
        name: str,
        env: Mapping[str, str] | None = None,
        *,
        redis_server: RedisServer | None = None,
        start: bool = True,
    ) -> Replica:
        """Another replica (stopped with the set); ``env`` over the shared settings."""
        replica = Replica(
            name=name,
            env=self.replica_env(env, redis_server),
            log_path=self.run_dir / f"{name}.log",
        )
        self.spawned.append(replica)
        return replica.start() if start else replica

    def new_redis(self, name: str, *, start: bool = True) -> RedisServer:
        """Another Redis (stopped with the set): for tests that take theirs down."""
        server = RedisServer(self.run_dir, name)
        self.extra_redis.append(server)
        if start:
            server.start()
        return server

    def discard(self, *replicas: Replica) -> None:
        for replica in replicas:
            replica.kill()
            if replica in self.spawned:
                self.spawned.remove(replica)

    def steer_to(self, target: Replica) -> None:
        """Make the next request through nginx go to ``target``: with one worker and two
        upstreams the round robin alternates strictly, so once a probe lands on the other
        replica, the next request goes to ``target`` (unless nginx holds one of them as
        failed, for its fail_timeout of 2 s: then the probes wait that out)."""
        other = self.other(target)
        landed: list[str | None] = []
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and len(landed) < 40:
            probe = httpx.get(f"{self.nginx.url}/health", timeout=5)
            assert probe.status_code == 200, probe.text
            landed.append(probe.headers.get(UPSTREAM_HEADER))
            if landed[-1] == other.address:
                return
            if len(landed) >= 2:  # the other was skipped: nginx holds it as failed
                time.sleep(0.25)
        raise AssertionError(f"nginx never sent a probe to {other.name}: {landed}")

    def ensure_up(self) -> None:
        """Whatever a previous test took down, up again; the fake back to its defaults."""
        self.llm.reset()
        self.redis.resume()
        if not self.redis.running:
            self.redis.start()
        for replica in self.pair:
            if not replica.alive:
                replica.start()
        if not self.nginx.alive:
            self.nginx.start()

    def stop(self) -> None:
        for replica in (*self.spawned, *self.pair):
            replica.stop()
        self.nginx.stop(signal.SIGQUIT)
        for server in (*self.extra_redis, self.redis):
            server.stop()
        self.llm.stop()


def telemetry_env(stack: Stack, name: str) -> dict[str, str]:
    """A replica exporting to the e2e stack's collector, as ``Stack.start_service`` does."""
    collector = f"http://127.0.0.1:{stack.port('OTEL_COLLECTOR_OTLP_HTTP_PORT')}"
    return {
        # Their own service name: the stack's exact sums count its own two services only.
        "OTEL_SERVICE_NAME": "fit-check-replicas",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector,
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
        "FIT_CHECK_LOG_FILE": str(stack.run_dir / "logs" / f"{name}.log"),
    }


@contextlib.contextmanager
def started_replicas(run_dir: Path, stack: Stack | None) -> Iterator[Replicas]:
    require_tools()
    llm = FakeLLM(chunk_gap_s=PACE_S)
    redis_server = RedisServer(run_dir)
    partial: list[Callable[[], None]] = []
    try:
        llm.start()
        partial.append(llm.stop)
        redis_server.start()
        partial.append(redis_server.stop)
        pair = []
        for name in ("replica-a", "replica-b"):
            replica = Replica(name=name, env={}, log_path=run_dir / f"{name}.log")
            partial.append(replica.stop)
            pair.append(replica)
        a, b = pair
        nginx = Nginx(run_dir, (a, b))
        partial.append(nginx.stop)
        replicas = Replicas(
            run_dir=run_dir, redis=redis_server, llm=llm, a=a, b=b, nginx=nginx, stack=stack
        )
        for replica in pair:
            replica.env = replicas.replica_env(
                telemetry_env(stack, replica.name) if stack is not None else None
            )
            replica.start()
        nginx.start()
    except BaseException:
        for undo in reversed(partial):
            undo()
        raise
    try:
        yield replicas
    finally:
        replicas.stop()


@pytest.fixture(scope="module", name="replica_set")
def replica_set_fixture(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    """Started once per module that asks for it; their telemetry goes to the e2e stack."""
    with started_replicas(tmp_path_factory.mktemp("replicas"), stack) as replicas:
        yield replicas


@pytest.fixture(name="replicas")
def replicas_fixture(replica_set: Replicas) -> Replicas:
    """The set, everything in it up and the fake at its defaults."""
    replica_set.ensure_up()
    return replica_set
