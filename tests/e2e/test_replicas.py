"""Replicas sharing one Redis behind round-robin nginx: any replica resumes any stream.

Local processes only (tests/e2e/replicas.py): Debian's redis-server, two ``fit-check
serve`` replicas whose LLM is the loopback OpenAI fake (which counts its calls), nginx
from ``deploy/nginx/fit-check.conf`` in front of them, and the e2e stack's collector and
Jaeger for their traces. Tests that take Redis down, cap sessions or fill Redis start
replicas of their own (another prefix, another Redis), so the shared pair stays as it was.

Bounds used here, from the feature's settings at their defaults unless a test sets them:
a dead producer is noticed within ``FIT_CHECK_PRODUCER_LEASE_S`` (3 s) + 2 s; its cap
slots come back within the lease + 1 s (the lease, plus scheduling on a busy 2-core
machine); a session's keys expire ``FIT_CHECK_RESUME_WINDOW_S`` after its terminal event.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.replicas import (
    CALLS_PER_ANALYSIS,
    LEASE_S,
    STREAM,
    Frame,
    RedisServer,
    Replica,
    Replicas,
    StreamRead,
    assert_one_whole_stream,
    read_stream,
    replica_set_fixture,  # noqa: F401
    replicas_fixture,  # noqa: F401
    report_of,
)
from tests.e2e.stack import dashboard_queries, poll

pytestmark = pytest.mark.e2e

#: A dead producer's readers get INTERRUPTED within this (the interface's bound).
INTERRUPTED_WITHIN_S = LEASE_S + 2
#: Past its phase "skills_matching" a stream has two LLM calls to go (about 2 s here).
MID_STREAM = "skills_matching"


def mid_stream(frame: Frame) -> bool:
    return frame.event == "phase" and frame.data.get("phase") == MID_STREAM


def error_code(response: httpx.Response) -> str:
    """The code of the service's error body (``ErrorBody``: code, message, errors)."""
    body: dict[str, Any] = response.json()
    return str(body["code"])


def test_a_stream_through_nginx_completes(replicas: Replicas) -> None:
    """The set itself: Redis, both replicas and nginx up; a stream through nginx is one
    whole analysis, its LLM calls counted by the fake, and nginx alternates replicas."""
    calls = replicas.llm.chat_calls()
    first = read_stream(replicas.nginx.url)
    assert first.status == 200, first.body
    frames = assert_one_whole_stream(first)
    assert frames[-1].event == "complete"
    assert replicas.llm.fake.reply in report_of(frames)
    assert replicas.llm.chat_calls() - calls == CALLS_PER_ANALYSIS
    second = read_stream(replicas.nginx.url, method="GET")
    assert second.status == 200 and second.last.event == "complete"
    served = {replicas.by_address(first.upstream).name, replicas.by_address(second.upstream).name}
    assert served == {"replica-a", "replica-b"}


def start_on_a_and_cut(replicas: Replicas, cut: str) -> StreamRead:
    """A stream through nginx on replica a, its connection cut mid-stream: by its client
    going away, or by nginx's fast shutdown (then nginx is started again)."""
    replicas.steer_to(replicas.a)
    if cut == "client-gone":
        first = read_stream(replicas.nginx.url, method="GET", stop=mid_stream)
    else:

        def nginx_goes_down(frame: Frame) -> bool:
            if mid_stream(frame):
                replicas.nginx.stop()  # SIGTERM: every connection cut at once
            return False

        first = read_stream(replicas.nginx.url, method="GET", stop=nginx_goes_down)
        assert first.cut, "nginx's fast shutdown did not cut the stream"
        replicas.nginx.start()
    assert first.status == 200, first.body
    assert replicas.by_address(first.upstream) is replicas.a
    assert first.frames and not first.ended
    return first


@pytest.mark.parametrize("cut", ["client-gone", "nginx-restarted"])
def test_a_stream_cut_mid_stream_reads_on_from_the_other_replica(
    replicas: Replicas, cut: str
) -> None:
    """The reconnect (GET with Last-Event-ID, as an EventSource sends it) goes through
    nginx to replica b, which never ran the analysis: it answers the events after the
    last one the client got, then the live ones, up to the terminal event. Every event
    once, in order; one analysis's LLM calls in all."""
    calls = replicas.llm.chat_calls()
    first = start_on_a_and_cut(replicas, cut)
    replicas.steer_to(replicas.b)
    second = read_stream(replicas.nginx.url, method="GET", last_event_id=first.last.id)
    assert second.status == 200, second.body
    assert replicas.by_address(second.upstream) is replicas.b
    frames = assert_one_whole_stream(first, second)
    assert frames[-1].event == "complete", frames[-1]
    assert report_of(frames).count(replicas.llm.fake.reply) == 1
    poll(
        lambda: replicas.llm.chat_calls() - calls >= CALLS_PER_ANALYSIS,
        timeout_s=10,
        every_s=0.1,
        what="the analysis's LLM calls",
    )
    assert replicas.llm.chat_calls() - calls == CALLS_PER_ANALYSIS


def jaeger_trace(replicas: Replicas, trace_id: str) -> dict[str, Any] | None:
    assert replicas.stack is not None
    response = httpx.get(f"{replicas.stack.jaeger}/api/traces/{trace_id}", timeout=10)
    if response.status_code != 200:
        return None
    data = response.json().get("data") or []
    trace: dict[str, Any] | None = data[0] if data else None
    return trace


def tags_of(item: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in item.get("tags", [])}


def server_spans(trace: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in trace["spans"] if tags_of(s).get("span.kind") == "server"]


def test_the_resumed_request_is_a_span_of_the_original_trace(replicas: Replicas) -> None:
    """The reconnect served by the other replica is a server span in the trace the
    analysis started (its parent context travels through Redis), with the session id and
    the event it resumed after; the two server spans come from two processes."""
    first = start_on_a_and_cut(replicas, "client-gone")
    session = first.frames[0].data
    replicas.steer_to(replicas.b)
    second = read_stream(replicas.nginx.url, method="GET", last_event_id=first.last.id)
    assert second.status == 200, second.body
    assert_one_whole_stream(first, second)
    resumed_after = first.last.parsed.seq

    def both_spans() -> dict[str, Any] | None:
        trace = jaeger_trace(replicas, session["trace_id"])
        return trace if trace is not None and len(server_spans(trace)) >= 2 else None

    trace = poll(both_spans, timeout_s=60, what="both server spans in Jaeger")
    spans = server_spans(trace)
    resumed = [s for s in spans if "fit_check.resumed_after" in tags_of(s)]
    assert len(resumed) == 1, [tags_of(s) for s in spans]
    assert int(tags_of(resumed[0])["fit_check.resumed_after"]) == resumed_after
    assert tags_of(resumed[0])["session_id"] == session["session_id"]
    instances = {
        tags_of(trace["processes"][s["processID"]]).get("service.instance.id") for s in spans
    }
    assert len(instances) == 2, "both server spans came from one process"


def producer_done(replicas: Replicas, prefix: str, key: str) -> bool:
    """Whether the session's stream in Redis holds its terminal frame."""
    with replicas.redis.client() as client:
        last = client.xrevrange(f"{prefix}s:{key}", count=1)
    return bool(last) and f"{key}." in repr(last[0]) and ".end" in repr(last[0])


#: FIT_CHECK_RESUME_WINDOW_S of the shared pair (the default).
WINDOW_S = 10
#: Not a key of the session log: ``fb:<key>`` holds what a verdict on the session needs
#: (POST /api/fit-check/feedback, a feature of its own), a short value kept for
#: ``FIT_CHECK_FEEDBACK_WINDOW_S`` (an hour by default), past the resume window.
FEEDBACK_KIND = "fb:"
FEEDBACK_WINDOW_S = 3600
#: What one ``fb:`` key may take in Redis (a session id and a traceparent).
FEEDBACK_KEY_BYTES = 512


def is_feedback(redis_key: str, prefix: str) -> bool:
    return redis_key.startswith(f"{prefix}{FEEDBACK_KIND}")


def assert_expiring(replicas: Replicas, key: str, within_s: float) -> None:
    """Every key of the session has an expiry: at most ``within_s`` away for the keys of
    the session log, at most the feedback window for its ``fb:`` key."""
    keys = [k for k in replicas.redis.keys(replicas.prefix) if k.endswith(f":{key}")]
    assert keys, f"no key of session {key} in Redis"
    with replicas.redis.client() as client:
        ttls = {k: client.pttl(k) for k in keys}
    for redis_key, ttl in ttls.items():
        limit = FEEDBACK_WINDOW_S if is_feedback(redis_key, replicas.prefix) else within_s
        assert 0 < ttl <= limit * 1000, ttls


def test_a_reconnect_reads_from_redis_and_never_starts_an_analysis(replicas: Replicas) -> None:
    """The client leaves during the report; replica a finishes the analysis with nobody
    reading. Replica b, which never ran it, answers the reconnect within the resume window
    from Redis: 200, the rest of the events, up to the terminal one. Either replica then
    replays it again from an earlier event, the same ids and data; a terminal or unknown
    id gets 204 from either, a malformed one 400. One analysis's LLM calls in all."""
    calls = replicas.llm.chat_calls()
    first = read_stream(replicas.a.url, stop=lambda frame: frame.event == "response")
    key = first.last.parsed.key
    poll(
        lambda: producer_done(replicas, replicas.prefix, key),
        timeout_s=30,
        every_s=0.1,
        what="the producer's terminal frame in Redis",
    )
    assert_expiring(replicas, key, WINDOW_S)
    rest = read_stream(replicas.b.url, last_event_id=first.last.id)
    assert rest.status == 200, rest.body
    frames = assert_one_whole_stream(first, rest)
    assert frames[-1].event == "complete"
    for replica in replicas.pair:
        again = read_stream(replica.url, last_event_id=first.frames[1].id)
        assert again.status == 200, (replica.name, again.body)
        assert [(f.id, f.event, f.data) for f in again.frames] == [
            (f.id, f.event, f.data) for f in frames[2:]
        ]
    unknown = f"{secrets.token_urlsafe(12)}.4"
    for replica in replicas.pair:
        for last_event_id in (frames[-1].id, unknown):
            ended = httpx.post(
                f"{replica.url}{STREAM}",
                json={"query": "Python"},
                headers={"Last-Event-ID": last_event_id},
                timeout=10,
            )
            assert ended.status_code == 204, (replica.name, last_event_id, ended.text)
        malformed = httpx.post(
            f"{replica.url}{STREAM}",
            json={"query": "Python"},
            headers={"Last-Event-ID": "not-an-id"},
            timeout=10,
        )
        assert malformed.status_code == 400, malformed.text
    assert replicas.llm.chat_calls() - calls == CALLS_PER_ANALYSIS


def test_a_killed_producer_ends_its_readers_with_interrupted(replicas: Replicas) -> None:
    """Replica a runs the analysis; its client reconnects to b, where it reads live
    frames; a is SIGKILLed. That reader, and another that reconnects to b after the kill,
    each get a terminal ``error`` event INTERRUPTED within the lease + 2 s, right after
    the events they had (no gap, no repeat), and b counts them."""
    a, b = replicas.pair
    before = b.metric("fit_check_streams_interrupted_total")
    first = read_stream(a.url, stop=lambda frame: frame.parsed.seq == 3)
    attached = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(
            read_stream, b.url, last_event_id=first.last.id, on_open=lambda _: attached.set()
        )
        poll(attached.is_set, timeout_s=10, every_s=0.05, what="the reader attached on b")
        assert not reading.done(), reading.result()
        killed_at = time.monotonic()
        a.kill()
        late = read_stream(b.url, last_event_id=first.last.id, timeout_s=30)
        live = reading.result(timeout=30)
    for read in (live, late):
        assert read.status == 200, read.body
        frames = assert_one_whole_stream(first, read)
        assert frames[-1].event == "error", frames[-1]
        assert frames[-1].data["code"] == "INTERRUPTED", frames[-1].data
        waited = frames[-1].at - killed_at
        assert waited <= INTERRUPTED_WITHIN_S, f"INTERRUPTED {waited:.1f}s after the kill"
    # A dead producer's keys go a lease after the resume window at the latest.
    assert_expiring(replicas, first.last.parsed.key, WINDOW_S + LEASE_S)
    after = poll(
        lambda: b.metric("fit_check_streams_interrupted_total") - before >= 2 and b,
        timeout_s=10,
        every_s=0.1,
        what="fit_check_streams_interrupted_total",
    ).metric("fit_check_streams_interrupted_total")
    assert after - before == 2  # one per resumed stream that ended so
    assert_store_panels_have_data(replicas)


def assert_store_panels_have_data(replicas: Replicas) -> None:
    """The dashboard's panels of the shared store (test_stack.py checks the others, on
    instances without Redis): the replicas' store calls and the interruption above, through
    the collector to Prometheus."""
    stack = replicas.stack
    assert stack is not None
    queries = dashboard_queries(store=True)
    assert len(queries) == 3, queries
    poll(
        lambda: all(stack.query(q) for q in queries),
        timeout_s=90,
        every_s=2,
        what=f"data for {queries}",
    )


CAP = 4
CAP_PREFIX = "fit-check-cap:"


def open_stream(client: httpx.Client, replica: Replica, stack: ExitStack) -> httpx.Response:
    """A POST to the stream whose response stays open (a session held) until ``stack``
    closes; its events are not read."""
    request = client.build_request("POST", f"{replica.url}{STREAM}", json={"query": "Python"})
    response = client.send(request, stream=True)
    stack.callback(response.close)
    return response


def test_the_global_cap_counts_streams_on_every_replica(replicas: Replicas) -> None:
    """FIT_CHECK_GLOBAL_MAX_SESSIONS=4 on two replicas: two streams on each, and a fifth is
    429 RATE_LIMITED on either, its message about all instances; the cap is one sorted
    set in Redis. A SIGKILLed replica's two slots come back within the lease (+ 1 s):
    two more streams on the survivor, then 429 again."""
    env = {
        "FIT_CHECK_REDIS_PREFIX": CAP_PREFIX,
        "FIT_CHECK_GLOBAL_MAX_SESSIONS": str(CAP),
        "FIT_CHECK_LLM_PROVIDER": "offline",
        "FIT_CHECK_LATENCY_MS": "2000",  # a stream holds its slot for about ten seconds
    }
    one = replicas.spawn("cap-1", env)
    two = replicas.spawn("cap-2", env)
    try:
        with ExitStack() as held, httpx.Client(timeout=10) as client:
            for replica in (one, two, one, two):
                assert open_stream(client, replica, held).status_code == 200
            for replica in (one, two):
                refused = open_stream(client, replica, held)
                refused.read()
                assert refused.status_code == 429, (replica.name, refused.text)
                assert error_code(refused) == "RATE_LIMITED"
                assert "all instances" in refused.json()["message"], refused.text
            with replicas.redis.client() as redis_client:
                assert redis_client.zcard(f"{CAP_PREFIX}cap") == CAP
            killed_at = time.monotonic()
            one.kill()

            def admitted() -> bool:
                response = open_stream(client, two, held)
                if response.status_code != 200:
                    response.close()
                    return False
                return True

            for n in range(2):
                poll(admitted, timeout_s=LEASE_S + 3, every_s=0.1, what=f"freed slot {n + 1}")
            waited = time.monotonic() - killed_at
            assert waited <= LEASE_S + 1, f"the dead replica's slots came back after {waited:.1f}s"
            full = open_stream(client, two, held)
            full.read()
            assert full.status_code == 429, full.text
    finally:
        replicas.discard(one, two)


MEMORY_PREFIX = "fit-check-mem:"
#: Resume window of the memory tests' replicas: their keys go this long after the end
#: (their ``fb:`` keys after the shortest feedback window there is).
MEMORY_WINDOW_S = 3
MEMORY_FEEDBACK_WINDOW_S = 60
#: Bytes of frames a session's stream may hold (FIT_CHECK_REPLAY_BUFFER_BYTES, sent, plus
#: FIT_CHECK_SEND_BUFFER_BYTES, unsent).
STREAM_BOUND = 1_048_576 + 262_144
FLOOD = (20_000, 50)  # chunks of the report, characters each (1 MB: the answer cap raised)
SESSIONS = 1_000


def memory_replica(
    replicas: Replicas, name: str, env: dict[str, str]
) -> tuple[RedisServer, Replica]:
    """A fresh Redis (so its ``used_memory_peak`` is this test's) and a replica on it
    writing under ``MEMORY_PREFIX`` with a resume window of ``MEMORY_WINDOW_S``."""
    store = replicas.new_redis(f"redis-{name}")
    replica = replicas.spawn(
        name,
        {
            "FIT_CHECK_REDIS_PREFIX": MEMORY_PREFIX,
            "FIT_CHECK_RESUME_WINDOW_S": str(MEMORY_WINDOW_S),
            "FIT_CHECK_FEEDBACK_WINDOW_S": str(MEMORY_FEEDBACK_WINDOW_S),
            **env,
        },
        redis_server=store,
    )
    return store, replica


def assert_nothing_left(store: RedisServer, ended: float, start_memory: int) -> None:
    """The resume window + the lease + 2 s after ``ended``: no key of the session log
    under the prefix (an ``fb:`` key may stay, for its feedback window at most, and small),
    and ``used_memory`` back within 1 MiB of ``start_memory``."""
    within = MEMORY_WINDOW_S + LEASE_S + 2

    def log_keys() -> list[str]:
        return [k for k in store.keys(MEMORY_PREFIX) if not is_feedback(k, MEMORY_PREFIX)]

    poll(
        lambda: not log_keys(),
        timeout_s=within,
        every_s=0.25,
        what=f"no key of the session log under {MEMORY_PREFIX}",
    )
    assert time.monotonic() - ended <= within
    with store.client() as client:
        for key in store.keys(MEMORY_PREFIX):
            assert 0 < client.pttl(key) <= MEMORY_FEEDBACK_WINDOW_S * 1000, key
            assert store.memory_usage(key) <= FEEDBACK_KEY_BYTES, key
    left = store.info_memory()["used_memory"] - start_memory
    assert left <= 1_048_576, f"used_memory {left} bytes over where it started"


class StreamSampler:
    """``MEMORY USAGE`` of every session stream under ``MEMORY_PREFIX``, every 50 ms in a
    thread while a session runs (bounded: at most 5 minutes of samples); the largest."""

    def __init__(self, store: RedisServer) -> None:
        self.store = store
        self.largest = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-sampler", daemon=True)

    def __enter__(self) -> StreamSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with self.store.client() as client:
            while not self._stop.is_set() and self.samples < 6_000:
                for key in client.scan_iter(match=f"{MEMORY_PREFIX}s:*", count=100):
                    used = client.memory_usage(key, samples=0)
                    self.largest = max(self.largest, int(used or 0))
                self.samples += 1
                self._stop.wait(0.05)  # the sampling period, not a synchronisation


def test_a_flooded_session_stays_within_its_bound_in_redis(replicas: Replicas) -> None:
    """One session whose report is 20,000 chunks of 50 characters (about 2.3 MB of frames,
    the fake's flood; the replica's answer cap raised to 1 MiB so that all of it is sent).

    At its end its stream in Redis holds at most 1 MiB + 256 KiB of frame bytes (the
    replay buffer plus the unsent allowance). At any time while it runs (sampled every
    50 ms) its stream's ``MEMORY USAGE`` is at most 1.5 times that (Redis's own encoding
    of entries of about 100 bytes adds well under a half), and Redis's
    ``used_memory_peak`` grows by at most 2 x 1.25 MiB + 1 MiB over the whole session.
    Within the resume window + the lease + 2 s of its end, no key of the session log is
    left (its ``fb:`` key stays, at most for the feedback window, and small)."""
    store, replica = memory_replica(
        replicas, "memory-flood", {"FIT_CHECK_LLM_MAX_ANSWER_CHARS": "1048576"}
    )
    try:
        start = store.info_memory()["used_memory"]
        with replicas.llm.configured(flood=FLOOD, chunk_gap_s=0.0), StreamSampler(store) as sampler:
            big = read_stream(replica.url, timeout_s=120)
        ended = time.monotonic()
        frames = assert_one_whole_stream(big)
        assert frames[-1].event == "complete", frames[-1]
        assert sum(f.event == "response" for f in frames) >= FLOOD[0]
        stream_key = f"{MEMORY_PREFIX}s:{frames[-1].parsed.key}"
        # The peak first: the reply to XRANGE below takes memory in Redis too.
        peak = store.info_memory()["used_memory_peak"] - start
        with store.client() as client:
            entries = client.xrange(stream_key)
        held = sum(len(str(v).encode()) for _, fields in entries for v in fields.values())
        measured = {
            "frame bytes in its stream at the end": (held, STREAM_BOUND),
            f"largest MEMORY USAGE of its stream ({sampler.samples} samples)": (
                sampler.largest,
                int(1.5 * STREAM_BOUND),
            ),
            "used_memory_peak growth": (peak, 2 * STREAM_BOUND + 1_048_576),
        }
        assert entries, "the session's stream is not in Redis"
        assert_nothing_left(store, ended, start)
        over = {what: f"{got} > {bound}" for what, (got, bound) in measured.items() if got > bound}
        assert not over, f"{len(entries)} entries at the end; over the bound: {over}"
    finally:
        replicas.discard(replica)


def run_sessions(replica: Replica, count: int, workers: int = 6) -> int:
    """``count`` whole streams against ``replica``, ``workers`` at a time; their bytes."""

    def some(worker: int, n: int) -> int:
        total = 0
        with httpx.Client(base_url=replica.url, timeout=30) as client:
            for i in range(n):
                body = {"query": "Python, Kafka, AWS", "session_id": f"mem-{worker}-{i}"}
                response = client.post(STREAM, json=body)
                assert response.status_code == 200, (i, response.text, replica.health())
                assert "event: complete" in response.text, response.text[-500:]
                total += len(response.content)
        return total

    shares = [count // workers + (1 if w < count % workers else 0) for w in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(some, range(workers), shares))


def test_a_thousand_sessions_leave_nothing_in_redis(replicas: Replicas) -> None:
    """1,000 sessions (offline provider, six at a time) on a fresh Redis: at most four
    keys of the session log per session (stream, meta, lease, reader marker) plus the
    cap's one at the end, and one ``fb:`` key; ``used_memory_peak`` grows by at most
    twice the bytes of all their streams plus 4 KiB a session (what they would take if
    none had expired yet). Within the resume window +
    the lease + 2 s of the last one's end, no key of the session log is left; the ``fb:``
    keys stay at most for their feedback window (60 s here), each small."""
    # A session leaves the live set a while after its terminal event (once its last write
    # to Redis is done): six clients going back to back from one address hold more than
    # the default caps at times. Not what this test is about: caps out of the way.
    env = {
        "FIT_CHECK_LLM_PROVIDER": "offline",
        "FIT_CHECK_MAX_SESSIONS_PER_CLIENT": str(SESSIONS),
        "FIT_CHECK_MAX_CONCURRENT_SESSIONS": str(SESSIONS),
    }
    store, replica = memory_replica(replicas, "memory-offline", env)
    try:
        start = store.info_memory()["used_memory"]
        sent = run_sessions(replica, SESSIONS)
        ended = time.monotonic()
        keys = store.keys(MEMORY_PREFIX)
        feedback = [k for k in keys if is_feedback(k, MEMORY_PREFIX)]
        assert len(keys) - len(feedback) <= 4 * SESSIONS + 1, len(keys)
        assert len(feedback) <= SESSIONS, len(feedback)
        peak = store.info_memory()["used_memory_peak"] - start
        assert peak <= 2 * sent + SESSIONS * 4096, f"used_memory_peak grew {peak} bytes"
        assert_nothing_left(store, ended, start)
    finally:
        replicas.discard(replica)


# --- Redis faults ------------------------------------------------------------------------

FAULT_PREFIX = "fit-check-faults:"
#: A stream on the fault replicas (offline providers at 400 ms a call) takes about 2 s;
#: with Redis down or hung it must not take more than this longer.
FAULT_SLACK_S = 3.0


@dataclass
class FaultRig:
    """A Redis of its own, and two replicas on it: failure mode open and closed."""

    redis: RedisServer
    open: Replica
    closed: Replica

    @property
    def both(self) -> tuple[Replica, Replica]:
        return self.open, self.closed


@pytest.fixture(scope="module")
def fault_rig(replica_set: Replicas) -> Iterator[FaultRig]:
    store = replica_set.new_redis("redis-faults")
    env = {
        "FIT_CHECK_REDIS_PREFIX": FAULT_PREFIX,
        "FIT_CHECK_LLM_PROVIDER": "offline",
        "FIT_CHECK_LATENCY_MS": "400",
    }
    fail_open = replica_set.spawn("faults-open", env, redis_server=store)
    fail_closed = replica_set.spawn(
        "faults-closed", {**env, "FIT_CHECK_REDIS_FAILURE_MODE": "closed"}, redis_server=store
    )
    yield FaultRig(store, fail_open, fail_closed)
    replica_set.discard(fail_open, fail_closed)


@pytest.fixture
def faults(fault_rig: FaultRig) -> FaultRig:
    """The rig with Redis up and both replicas running."""
    fault_rig.redis.resume()
    if not fault_rig.redis.running:
        fault_rig.redis.start()
    for replica in fault_rig.both:
        if not replica.alive:
            replica.start()
    return fault_rig


def store_state(replica: Replica) -> tuple[str, dict[str, Any]]:
    health = replica.health()
    return health["status"], health["session_store"]


def wait_store(replica: Replica, status: str, *, timeout_s: float = 10) -> None:
    overall = "degraded" if status == "unavailable" else "healthy"
    want = (overall, {"backend": "redis", "status": status})
    poll(
        lambda: store_state(replica) == want,
        timeout_s=timeout_s,
        every_s=0.2,
        what=f"{replica.name}'s health: store {status}",
    )


def assert_admits(replica: Replica) -> StreamRead:
    read = read_stream(replica.url, timeout_s=30)
    assert read.status == 200, read.body
    assert assert_one_whole_stream(read)[-1].event == "complete"
    return read


def assert_refuses_for_the_store(replica: Replica) -> None:
    response = httpx.post(f"{replica.url}{STREAM}", json={"query": "Python"}, timeout=10)
    assert response.status_code == 503, response.text
    assert error_code(response) == "SESSION_STORE_UNAVAILABLE"


def assert_writes_redis_again(rig: FaultRig, replica: Replica) -> None:
    """A new stream's frames reach Redis: the replica uses the store again."""
    key = assert_admits(replica).last.parsed.key
    poll(
        lambda: any(k.endswith(key) for k in rig.redis.keys(FAULT_PREFIX)),
        timeout_s=10,
        every_s=0.1,
        what=f"{replica.name}'s new session in Redis",
    )


def test_a_replica_started_while_redis_is_down_serves_and_recovers_without_restart(
    faults: FaultRig,
) -> None:
    """Redis down before start-up: the replica starts, says so in its health (degraded,
    store unavailable), serves streams when it fails open and refuses them with 503
    SESSION_STORE_UNAVAILABLE when it fails closed; Redis back, both recover on their own
    (same processes) and write to it again."""
    faults.redis.stop()
    for replica in faults.both:
        replica.restart()
    pids = [replica.process.pid for replica in faults.both if replica.process is not None]
    for replica in faults.both:
        wait_store(replica, "unavailable")
    assert_admits(faults.open)
    assert_refuses_for_the_store(faults.closed)
    faults.redis.start()
    for replica in faults.both:
        wait_store(replica, "ok")
        assert_writes_redis_again(faults, replica)
    assert [r.process.pid for r in faults.both if r.process is not None] == pids


def streams_through_a_fault(faults: FaultRig, fault: str) -> list[StreamRead]:
    """A stream on each replica; at its fourth event Redis is stopped (``stop``), paused
    (``pause``) or restarted (``restart``); each read to its end."""
    reached = threading.Barrier(3, timeout=30)

    def at_fourth(frame: Frame) -> bool:
        if frame.parsed.seq == 3:
            reached.wait()
        return False

    with ThreadPoolExecutor(2) as pool:
        reads = [
            pool.submit(read_stream, replica.url, stop=at_fourth, timeout_s=40)
            for replica in faults.both
        ]
        reached.wait()
        {"stop": faults.redis.stop, "pause": faults.redis.pause, "restart": faults.redis.restart}[
            fault
        ]()
        return [read.result(timeout=60) for read in reads]


@pytest.mark.parametrize("fault", ["stop", "pause", "restart"])
def test_a_stream_in_flight_outlives_a_redis_fault(faults: FaultRig, fault: str) -> None:
    """Redis stopped, hung (SIGSTOP: every call waits for its timeout) or restarted while a
    stream runs on each replica: both streams end with ``complete`` no later than an
    undisturbed stream + 3 s. While Redis is away the health says degraded (and answers
    at once: its check is bounded too), fail-open still admits, fail-closed refuses;
    Redis back, both recover without a restart."""
    undisturbed = assert_admits(faults.open)
    budget = undisturbed.last.at - undisturbed.started + FAULT_SLACK_S
    reads = streams_through_a_fault(faults, fault)
    for replica, read in zip(faults.both, reads, strict=True):
        assert read.status == 200, read.body
        frames = assert_one_whole_stream(read)
        assert frames[-1].event == "complete", (replica.name, frames[-1])
        took = read.last.at - read.started
        assert took <= budget, f"{replica.name}: {took:.1f}s, at most {budget:.1f}s"
    if fault != "restart":
        for replica in faults.both:
            wait_store(replica, "unavailable")
            asked = time.monotonic()
            replica.health()
            assert time.monotonic() - asked < 2, "the health check waited for Redis"
        assert_admits(faults.open)
        assert_refuses_for_the_store(faults.closed)
        if fault == "stop":
            faults.redis.start()
        else:
            faults.redis.resume()
    for replica in faults.both:
        wait_store(replica, "ok")
        assert_writes_redis_again(faults, replica)
