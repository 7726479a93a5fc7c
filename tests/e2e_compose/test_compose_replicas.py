"""The replicas variant of the compose stack: docker-compose.replicas.yml over
docker-compose.yml, two replicas of the service sharing their sessions through Redis behind
nginx on port 8000 (deploy/nginx/compose.conf, round robin over one worker: strictly one
replica, then the other).

``make e2e-compose`` runs the ``compose`` tests here after docker-compose.yml's own, as
their own project (fit-check-e2e-replicas, with ``FIT_CHECK_E2E_REPLICAS=1`` in the
environment), from the same images, with the replicas paced at a second a provider call
(``FIT_CHECK_LATENCY_MS=1000``): a stream lasts about 4 s. The checks of the files
themselves at the top need no stack and run with ``make test``.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from app.pipeline.event_ids import LastEventId, parse_last_event_id
from tests.e2e.stack import poll
from tests.e2e_compose.conftest import SERVICE, ComposeStack

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "docker-compose.yml"
REPLICAS_FILE = ROOT / "docker-compose.replicas.yml"
E2E_OVERRIDE = ROOT / "deploy" / "compose-e2e" / "docker-compose.replicas.e2e.yml"
STAND_INS = ROOT / "deploy" / "compose-e2e" / "stand-ins.sh"
NGINX_CONF = ROOT / "deploy" / "nginx" / "compose.conf"
PREFIX = "fit-check-e2e/"

REPLICAS = ("fit-check", "fit-check-2")
STREAM = "/api/fit-check/stream"
#: The service's SSE ping (FIT_CHECK_SSE_PING_S's default): nginx must wait longer.
SSE_PING_S = 15
#: Where the first request is cut: the third phase starts about 1 s into a 4 s stream,
#: with three provider calls of the analysis still to come.
CUT_AT_PHASE = "skeptical_comparison"


# --- the files ---------------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    """A compose file, its !reset and !override tags read as their plain values."""
    yaml = pytest.importorskip("yaml")

    class Loader(yaml.SafeLoader):  # type: ignore[misc,name-defined]
        pass

    def plain(loader: Any, _suffix: str, node: Any) -> Any:
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return yaml.safe_load(node.value)  # !reset null: None

    Loader.add_multi_constructor("!", plain)
    loaded: dict[str, Any] = yaml.load(path.read_text(), Loader=Loader)
    return loaded


def test_the_replicas_override_publishes_nginx_alone_on_the_publish_address() -> None:
    """Neither replica nor Redis publishes a port; nginx publishes the service's port as
    docker-compose.yml did, on the same address."""
    base = load(BASE)["services"]
    services = load(REPLICAS_FILE)["services"]
    (service_port,) = base["fit-check"]["ports"]
    assert services["nginx"]["ports"] == [service_port]
    for name in (*REPLICAS, "redis"):
        assert not services[name].get("ports"), name  # fit-check's is reset
    # Built once: the second replica is the first's service, with no build of its own.
    assert services["fit-check-2"]["extends"] == {"file": BASE.name, "service": "fit-check"}
    assert "build" in services["fit-check-2"] and services["fit-check-2"]["build"] is None
    assert services["fit-check-2"]["pull_policy"] == "never"


def test_the_e2e_override_of_the_replicas_swaps_images_only() -> None:
    """Like docker-compose.e2e.yml: every service the replicas override adds runs an image
    built here under fit-check-e2e/ (stand-ins.sh builds Redis and nginx, keeping the
    upstream name's last part and tag), and is never pulled."""
    added = set(load(REPLICAS_FILE)["services"]) - set(load(BASE)["services"])
    override = load(E2E_OVERRIDE)
    assert set(override) == {"services"}
    assert set(override["services"]) == added
    built = set(re.findall(r'"\$IMAGE_PREFIX/([^"]+)"', STAND_INS.read_text()))
    upstream = load(REPLICAS_FILE)["services"]
    for name, settings in override["services"].items():
        assert set(settings) == {"image", "pull_policy"}, name
        assert settings["pull_policy"] == "never", name
        stand_in = settings["image"].removeprefix(PREFIX)
        assert settings["image"].startswith(PREFIX) and stand_in, name
        if name in REPLICAS:
            assert stand_in == "fit-check:local"  # the service image run.sh builds
            continue
        assert stand_in == upstream[name]["image"].rsplit("/", 1)[-1], name
        assert stand_in in built, name


def nginx_directives() -> dict[str, list[str]]:
    """compose.conf's directives, by name (every value each one has, in order)."""
    text = re.sub(r"#.*", "", NGINX_CONF.read_text())
    found: dict[str, list[str]] = {}
    for statement in re.split(r"[;{}]", text):
        words = statement.split(None, 1)
        if words:
            found.setdefault(words[0], []).append(words[1].strip() if len(words) > 1 else "")
    return found


def test_nginx_passes_sse_through_and_takes_turns() -> None:
    directives = nginx_directives()
    assert directives["worker_processes"] == ["1"]  # one worker: a strict turn
    # `server NAME ...` in the upstream block (a bare `server` opens the server block).
    assert [value for value in directives["server"] if value] == [
        "fit-check:8000 max_fails=1 fail_timeout=2s",
        "fit-check-2:8000 max_fails=1 fail_timeout=2s",
    ]
    for banned in ("ip_hash", "hash", "sticky", "least_conn", "random"):
        assert banned not in directives, banned
    assert directives["proxy_buffering"] == ["off"]
    assert directives["proxy_http_version"] == ["1.1"]
    headers = dict(value.split(None, 1) for value in directives["proxy_set_header"])
    assert headers["Connection"] == '""'
    assert headers["X-Forwarded-For"] == "$remote_addr"
    (read_timeout,) = directives["proxy_read_timeout"]
    assert int(read_timeout.removesuffix("s")) > SSE_PING_S


# --- the running stack ---------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    id: str
    name: str
    data: dict[str, Any]

    @property
    def parsed(self) -> LastEventId:
        parsed = parse_last_event_id(self.id)
        assert parsed is not None, f"not an id the service sends: {self.id!r}"
        return parsed


def read_events(
    params: dict[str, str],
    *,
    last_event_id: str | None = None,
    cut_after: Callable[[Event], bool] | None = None,
) -> list[Event]:
    """One GET of the stream through nginx, as an EventSource sends it: its events up to
    the terminal one, or up to the one ``cut_after`` picks, when this client closes the
    connection mid-stream."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[Event] = []
    with (
        httpx.Client(trust_env=False, timeout=httpx.Timeout(10, read=30)) as client,
        connect_sse(client, "GET", f"{SERVICE}{STREAM}", params=params, headers=headers) as source,
    ):
        response = source.response
        assert response.status_code == 200, (response.status_code, response.read())
        for sse in source.iter_sse():
            if not sse.id:
                continue  # the retry: hint
            events.append(Event(sse.id, sse.event, json.loads(sse.data)))
            if events[-1].parsed.terminal or (cut_after is not None and cut_after(events[-1])):
                break
            assert len(events) < 10_000, "more events than any stream has"
    return events


def json_lines(stack: ComposeStack, service: str) -> list[dict[str, Any]]:
    """The JSON lines one replica wrote to stdout (its container's log)."""
    text = stack.compose("logs", "--no-color", "--no-log-prefix", service)
    return [json.loads(raw) for raw in text.splitlines() if raw.startswith("{")]


def client_host(access_line: dict[str, Any]) -> str:
    """uvicorn's access line: ``<client host>:<port> - "GET ..." 200``."""
    return str(access_line["message"]).split(" - ", 1)[0].rsplit(":", 1)[0]


@pytest.fixture(scope="module")
def replicas(request: pytest.FixtureRequest) -> ComposeStack:
    if os.environ.get("FIT_CHECK_E2E_REPLICAS") != "1":
        pytest.skip(
            "needs the replicas variant: make e2e-compose runs it as the project "
            "fit-check-e2e-replicas (FIT_CHECK_E2E_REPLICAS=1 deploy/compose-e2e/compose.sh)"
        )
    stack: ComposeStack = request.getfixturevalue("stack")
    assert {*REPLICAS, "redis", "nginx"} <= set(stack.services())
    return stack


@pytest.mark.compose
@pytest.mark.timeout(300)
def test_only_nginx_publishes_the_service_and_every_port_is_on_loopback(
    replicas: ComposeStack,
) -> None:
    published: dict[str, set[int]] = {}
    for container in replicas.containers():
        service = container["Config"]["Labels"]["com.docker.compose.service"]
        if container["State"]["Status"] != "running":
            continue
        bindings = container["HostConfig"]["PortBindings"] or {}
        live_ports = container["NetworkSettings"]["Ports"] or {}
        for binding in [b for bs in bindings.values() for b in bs or []] + [
            b for bs in live_ports.values() for b in bs or []
        ]:
            assert binding["HostIp"] == "127.0.0.1", (service, binding)
            published.setdefault(service, set()).add(int(binding["HostPort"]))
    assert published["nginx"] == {8000}
    assert not {*REPLICAS, "redis"} & set(published), published


@pytest.mark.compose
@pytest.mark.timeout(300)
def test_each_replica_shares_its_sessions_through_redis(replicas: ComposeStack) -> None:
    """Each replica's own /api/fit-check/health (asked inside its container: through
    nginx, which one answers is its turn's)."""
    ask = (
        "import urllib.request; print(urllib.request.urlopen("
        "'http://127.0.0.1:8000/api/fit-check/health', timeout=5).read().decode())"
    )
    for service in REPLICAS:
        health = json.loads(replicas.compose("exec", "-T", service, "python", "-c", ask))
        assert health["session_store"] == {"backend": "redis", "status": "ok"}, (service, health)
        assert health["status"] == "healthy", (service, health)


@pytest.mark.compose
@pytest.mark.timeout(300)
def test_a_stream_cut_through_nginx_reads_on_from_the_other_replica(
    replicas: ComposeStack,
) -> None:
    """A stream through nginx, its connection closed by this client mid-analysis; the
    reconnect (Last-Event-ID, through nginx) is the next request nginx sees, so it goes to
    the other replica (its turn: one worker, round robin), which never ran the analysis:
    it reads on from Redis to the terminal ``complete``. Every event once and in order,
    one analysis in all: one "Request started" in both replicas' logs, one request in
    Prometheus summed over both."""
    session_id = f"compose-replicas-{uuid.uuid4().hex[:8]}"
    params = {"query": "Senior Python engineer, FastAPI, Kafka", "session_id": session_id}

    def mid_analysis(event: Event) -> bool:
        return event.name == "phase" and event.data.get("phase") == CUT_AT_PHASE

    # Nothing else goes through nginx between these two requests (the health checks ask
    # each replica inside its container; the previous test, too).
    first = read_events(params, cut_after=mid_analysis)
    assert first and first[-1].name == "phase" and not first[-1].parsed.terminal, first[-1:]
    rest = read_events(params, last_event_id=first[-1].id)

    events = first + rest
    ids = [event.parsed for event in events]
    assert {i.key for i in ids} == {ids[0].key}, "events of several streams"
    assert [i.seq for i in ids] == list(range(len(ids))), "not every event once and in order"
    assert [i.terminal for i in ids] == [False] * (len(ids) - 1) + [True]
    assert events[-1].name == "complete", events[-1]
    assert events[0].name == "session" and events[0].data["session_id"] == session_id

    def ours(service: str, message: str) -> list[dict[str, Any]]:
        return [
            line
            for line in json_lines(replicas, service)
            if line.get("session_id") == session_id and line.get("message") == message
        ]

    # The analysis's "Request completed" is written once it is over: its lines are all there.
    poll(
        lambda: any(ours(s, "Request completed") for s in REPLICAS),
        timeout_s=30,
        what="the analysis's last log line",
    )
    started = {service: len(ours(service, "Request started")) for service in REPLICAS}
    resumed = {service: ours(service, "Stream resumed") for service in REPLICAS}
    assert sorted(started.values()) == [0, 1], f"one analysis in all: {started}"
    (analysed,) = [s for s, n in started.items() if n]
    (other,) = [s for s in REPLICAS if s != analysed]
    assert not resumed[analysed], "the reconnect went to the replica of the analysis"
    (resume,) = resumed[other]
    assert resume["after_event"] == first[-1].parsed.seq

    # Each replica served one request of the session, and saw the client's address
    # (nginx's X-Forwarded-For, trusted from the front network), not nginx's.
    nginx = replicas.container("nginx")["NetworkSettings"]["Networks"]
    nginx_addresses = {network["IPAddress"] for network in nginx.values()}
    for service in REPLICAS:
        (access,) = [
            line
            for line in json_lines(replicas, service)
            if line.get("logger") == "uvicorn.access" and line.get("session_id") == session_id
        ]
        assert client_host(access) not in nginx_addresses, (service, access, nginx_addresses)

    # The collector has each replica's series (its own instance); together they count
    # one request.
    poll(
        lambda: (
            replicas.scalar("count(count by (instance) (fit_check_rejected_requests_total))")
            == len(REPLICAS)
        ),
        timeout_s=60,
        what="both replicas' series in Prometheus",
    )
    poll(
        lambda: replicas.scalar("sum(fit_check_requests_total)") == 1,
        timeout_s=60,
        what="sum(fit_check_requests_total) == 1 in Prometheus",
    )
    assert replicas.scalar("count(fit_check_requests_total > 0)") == 1
