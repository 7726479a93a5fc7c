"""Sessions shared by replicas through Redis: each session's frames as a Redis Stream, a
lease that says its producer is alive, and one sorted set for the cap across replicas.

Keys (all under the configured prefix; ``<key>`` is the stream key of the event ids):

* ``s:<key>`` the frames, one entry each, entry id ``0-<seq + 1>`` so that a reader after
  event ``n`` reads from id ``0-<n + 1>``; trimmed to what the producer's own replay
  buffer holds (its byte bound) and to ``MAX_ENTRIES``;
* ``m:<key>`` the session id, the ``traceparent`` of its first span, and the sequence
  number of the terminal frame once it is written;
* ``lease:<key>`` exists while the producer is alive (renewed every third of the lease);
* ``r:<key>`` a reader on another replica: how far it has read, or ``delivered``;
* ``cap`` the streaming sessions of every replica, scored by when their lease runs out.

``s:`` and ``m:`` expire the resume window after the terminal frame (and a lease later
while the session runs, renewed), so an ended or crashed session leaves nothing behind.

Every call is bounded by the configured timeout and raises :class:`StoreUnavailable`
when Redis cannot answer in time: callers decide what that costs (never a stream's own
frames, which its producer sends from memory).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError
from redis.typing import EncodableT, KeyT

from app.store.redis_pipe import fast_caller
from otel.facade import Telemetry

log = logging.getLogger("fit_check.store")

T = TypeVar("T")

#: A second bound on a session's stream, besides its bytes: entries of a few bytes each
#: cannot make one session's stream long.
MAX_ENTRIES = 20_000
#: Frames a reader takes per read.
READ_COUNT = 512
#: A reader's blocking read waits this long for new frames before it checks the lease.
BLOCK_MS = 1000
DELIVERED = "delivered"

# Admission to the cap across replicas, atomic: drop the expired, count, add.
_ADMIT = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[2]) then return n end
redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[3]))
return -1
"""
# One write of a producer, in one command whatever it carries (a client's cost is per
# command and argument; Redis runs it atomically). KEYS: the stream, the meta hash, the
# lease, the cap, the feedback key. ARGV: 1 the trim point (MINID, or ""), 2 the terminal
# frame's entry id (or ""), 3 the first frame's sequence number, 4 the frames' lengths
# ("12,80,7"), 5 the frames one after another, 6 the session id (only with the first
# write, else ""), 7 its traceparent, 8 the terminal sequence number (or ""), 9 the resume
# window (ms), 10 the lease (ms), 11 the feedback window (s), 12 the stream key. A frame
# written before a lost answer is written again: Redis refuses its id, as it should.
_WRITE = """
local stream, blob = KEYS[1], ARGV[5]
local seq, pos = tonumber(ARGV[3]), 1
for length in string.gmatch(ARGV[4], '%d+') do
  local n = tonumber(length)
  local id = '0-' .. string.format('%d', seq + 1)
  local data = string.sub(blob, pos, pos + n - 1)
  if id == ARGV[2] then
    redis.pcall('XADD', stream, id, 'd', data, 't', '1')
  else
    redis.pcall('XADD', stream, id, 'd', data)
  end
  pos, seq = pos + n, seq + 1
end
if ARGV[1] ~= '' then redis.call('XTRIM', stream, 'MINID', ARGV[1]) end
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[2], 'sid', ARGV[6], 'tp', ARGV[7])
  redis.call('SET', KEYS[5], ARGV[6] .. '\\n' .. ARGV[7], 'EX', ARGV[11])
end
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[2], 'term', ARGV[8])
  redis.call('PEXPIRE', stream, ARGV[9])
  redis.call('PEXPIRE', KEYS[2], ARGV[9])
  redis.call('DEL', KEYS[3])
  redis.call('ZREM', KEYS[4], ARGV[12])
elseif ARGV[6] ~= '' then
  local ttl = tonumber(ARGV[9]) + tonumber(ARGV[10])
  redis.call('PEXPIRE', stream, ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('SET', KEYS[3], 1, 'PX', ARGV[10])
end
return 1
"""
# The producer is alive, in one command. KEYS: the reader marker, the lease, the stream,
# the meta hash, the cap. ARGV: 1 the lease (ms), 2 the keys' time to live (ms), 3 the
# trim point (MINID), 4 the entries' bound, 5 the slot: "stream", "linger" or "" (no cap),
# 6 the stream key. Returns what a reader elsewhere reported.
_RENEW = """
redis.call('SET', KEYS[2], 1, 'PX', ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
redis.call('PEXPIRE', KEYS[4], ARGV[2])
redis.call('XTRIM', KEYS[3], 'MINID', ARGV[3])
redis.call('XTRIM', KEYS[3], 'MAXLEN', '~', ARGV[4])
if ARGV[5] == 'stream' then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('ZADD', KEYS[5], ms + tonumber(ARGV[1]), ARGV[6])
  redis.call('PEXPIRE', KEYS[5], 2 * tonumber(ARGV[1]))
elseif ARGV[5] == 'linger' then
  redis.call('ZREM', KEYS[5], ARGV[6])
end
return redis.call('GET', KEYS[1])
"""


class StoreUnavailable(Exception):
    """Redis did not answer in time, or refused."""


class StoredFrame(NamedTuple):
    seq: int
    data: bytes
    terminal: bool


@dataclass(frozen=True, slots=True)
class StoredSession:
    """What a replica knows about a session it does not run."""

    session_id: str
    traceparent: str | None
    terminal_seq: int | None
    #: The oldest frame still held, and one past the newest (both 0 when none is).
    first_seq: int
    next_seq: int
    producer_alive: bool
    #: Reconnects served so far, by every replica.
    reconnects: int


def _seq(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[1]) - 1


def _entry_id(seq: int) -> str:
    return f"0-{seq + 1}"


class SessionStore:
    """The Redis side of shared sessions; one per process, used by every session."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        timeout_ms: int,
        lease_s: float,
        resume_window_s: float,
        telemetry: Telemetry,
        feedback_window_s: int = 3600,
    ) -> None:
        self._feedback_window_s = feedback_window_s
        self._timeout_s = timeout_ms / 1000
        options: dict[str, Any] = {
            "socket_connect_timeout": self._timeout_s,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        self.client: Redis = Redis.from_url(url, socket_timeout=self._timeout_s, **options)
        # Blocking reads wait longer than a call may take: their own connections.
        self._blocking: Redis = Redis.from_url(
            url, socket_timeout=self._timeout_s + BLOCK_MS / 1000, **options
        )
        self._prefix = prefix
        self.lease_s = lease_s
        self._lease_ms = int(lease_s * 1000)
        self._window_ms = max(int(resume_window_s * 1000), 1)
        self._telemetry = telemetry
        self._admit = self.client.register_script(_ADMIT)
        self._write = self.client.register_script(_WRITE)
        self._renew = self.client.register_script(_RENEW)
        # A producer's writes and renewals: frequent, so on a lean connection of their own.
        self._fast, self._close_fast = fast_caller(url, self.client, self._timeout_s)
        #: Whether the last call got an answer: health says so.
        self.available = True

    def untraced(self) -> AbstractContextManager[None]:
        """Calls inside make no client spans (frequent background calls)."""
        return self._telemetry.untraced()

    def key(self, kind: str, stream_key: str = "") -> str:
        return f"{self._prefix}{kind}{stream_key}"

    async def _call(
        self,
        operation: str,
        call: Callable[[], Awaitable[T]],
        *,
        extra_s: float = 0.0,
        bounded: bool = False,
    ) -> T:
        """``call()``, measured, within the timeout (``bounded``: it has its own, as every
        call on the lean connection does)."""
        started = time.perf_counter()
        try:
            if bounded:
                result = await call()
            else:
                async with asyncio.timeout(self._timeout_s + extra_s):
                    result = await call()
        except (RedisError, OSError, TimeoutError) as exc:
            self._telemetry.store_operation(operation, "error", time.perf_counter() - started)
            if self.available:
                self.available = False
                log.warning(
                    "Session store unavailable: %s (%s)",
                    operation,
                    type(exc).__name__,
                    extra={"operation": operation},
                )
            raise StoreUnavailable(f"{operation}: {type(exc).__name__}") from exc
        self._telemetry.store_operation(operation, "ok", time.perf_counter() - started)
        if not self.available:
            self.available = True
            log.info("Session store available again")
        return result

    async def ping(self) -> bool:
        try:
            # On the lean connection: the probe runs every few seconds on every replica,
            # and it checks the connection the frames are written on.
            await self._call("ping", lambda: self._fast("PING"), bounded=True)
        except StoreUnavailable:
            return False
        return True

    async def _run(self, script: AsyncScript, keys: list[KeyT], args: list[EncodableT]) -> Any:
        """A script by its digest on the lean connection; by its text when the server does
        not know it yet (a restarted or flushed Redis), which caches it again."""
        try:
            return await self._fast("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._fast("EVAL", script.script, len(keys), *keys, *args)

    async def aclose(self) -> None:
        self._close_fast()
        await self.client.aclose()
        await self._blocking.aclose()

    # --- the producer ---------------------------------------------------------------------
    async def write(
        self,
        stream_key: str,
        frames: list[tuple[int, bytes]],
        *,
        terminal_seq: int | None,
        first_seq: int,
        opening: tuple[str, str | None] | None = None,
    ) -> None:
        """Append ``frames`` (sequence number, frame) and trim the stream to ``first_seq``
        (what the producer's replay buffer holds: its byte bound); ``opening`` (session
        id, traceparent) with the first write. With the terminal frame, start the resume
        window and give up the lease and the slot."""
        session_id, traceparent = opening or ("", None)
        keys: list[KeyT] = [
            self.key("s:", stream_key),
            self.key("m:", stream_key),
            self.key("lease:", stream_key),
            self.key("cap"),
            self.key("fb:", stream_key),
        ]
        args: list[EncodableT] = [
            _entry_id(first_seq) if first_seq > 0 else "",
            "" if terminal_seq is None else _entry_id(terminal_seq),
            frames[0][0] if frames else 0,
            ",".join(str(len(data)) for _, data in frames),
            b"".join(data for _, data in frames),
            session_id,
            traceparent or "",
            "" if terminal_seq is None else terminal_seq,
            self._window_ms,
            self._lease_ms,
            self._feedback_window_s,
            stream_key,
        ]
        await self._call("write", lambda: self._run(self._write, keys, args), bounded=True)

    async def renew(
        self, stream_key: str, *, first_seq: int, streaming: bool, capped: bool
    ) -> str | None:
        """The producer is alive: its lease, its keys' expiry, its stream trimmed to
        ``first_seq`` (what its replay buffer holds) and, when ``capped``, its slot in the
        cap while it streams. Returns what a reader elsewhere reported (:meth:`reader_at`)."""
        keys: list[KeyT] = [
            self.key("r:", stream_key),
            self.key("lease:", stream_key),
            self.key("s:", stream_key),
            self.key("m:", stream_key),
            self.key("cap"),
        ]
        slot = "" if not capped else "stream" if streaming else "linger"
        args: list[EncodableT] = [
            self._lease_ms,
            self._window_ms + self._lease_ms,
            _entry_id(first_seq),
            MAX_ENTRIES,
            slot,
            stream_key,
        ]
        reader: bytes | None = await self._call(
            "renew", lambda: self._run(self._renew, keys, args), bounded=True
        )
        return None if reader is None else reader.decode()

    async def reader_state(self, stream_key: str) -> str | None:
        """What a reader elsewhere reported, after the terminal frame was written."""
        value: bytes | None = await self._call(
            "reader_state", lambda: self._fast("GET", self.key("r:", stream_key)), bounded=True
        )
        return None if value is None else value.decode()

    async def abandon(self, stream_key: str) -> None:
        """The session ended without a terminal frame here (nobody read it): its lease and
        slot go now, its frames after the resume window."""

        async def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(self.key("lease:", stream_key))
            pipe.zrem(self.key("cap"), stream_key)
            pipe.pexpire(self.key("s:", stream_key), self._window_ms)
            pipe.pexpire(self.key("m:", stream_key), self._window_ms)
            await pipe.execute()

        await self._call("abandon", run)

    async def admit(self, stream_key: str, limit: int) -> int | None:
        """Take a slot in the cap across replicas: None when taken, else how many sessions
        stream already."""
        taken: int = await self._call(
            "admit",
            lambda: self._admit(keys=[self.key("cap")], args=[stream_key, limit, self._lease_ms]),
        )
        return None if taken < 0 else taken

    async def release(self, stream_key: str) -> None:
        await self._call("release", lambda: self.client.zrem(self.key("cap"), stream_key))

    # --- users' verdicts -----------------------------------------------------------------
    async def rated_session(self, stream_key: str) -> tuple[str, str | None] | None:
        """The session a verdict is for (its id and ``traceparent``), while its feedback
        window lasts."""
        raw: bytes | None = await self._call(
            "rated_session", lambda: self.client.get(self.key("fb:", stream_key))
        )
        if raw is None:
            return None
        session_id, _, traceparent = raw.decode().partition("\n")
        return session_id, traceparent or None

    async def claim_verdict(self, stream_key: str, window_s: int) -> bool:
        """True for the first verdict on the session, False for any other."""
        claimed = await self._call(
            "claim_verdict",
            lambda: self.client.set(self.key("fbv:", stream_key), 1, nx=True, ex=window_s),
        )
        return bool(claimed)

    # --- the spend guard's hourly total ----------------------------------------------------
    async def add_spend(self, hour: int, cost_usd: float) -> None:
        key = self.key("spend:", str(hour))

        async def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.incrbyfloat(key, cost_usd)
            pipe.expire(key, 2 * 3600)
            await pipe.execute()

        await self._call("add_spend", run)

    async def spend(self, hour: int) -> float:
        value: bytes | None = await self._call(
            "spend", lambda: self.client.get(self.key("spend:", str(hour)))
        )
        return 0.0 if value is None else float(value)

    # --- a reader on another replica -----------------------------------------------------
    async def describe(self, stream_key: str, *, reconnect: bool = False) -> StoredSession | None:
        """The session, if this store holds it; ``reconnect`` counts one more reconnect
        (``StoredSession.reconnects``), across replicas."""

        async def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            if reconnect:
                pipe.hincrby(self.key("m:", stream_key), "rc", 1)
            pipe.hgetall(self.key("m:", stream_key))
            pipe.exists(self.key("lease:", stream_key))
            pipe.xrange(self.key("s:", stream_key), count=1)
            pipe.xrevrange(self.key("s:", stream_key), count=1)
            return await pipe.execute()

        *_, meta, alive, first, last = await self._call("describe", run)
        if not meta or b"sid" not in meta:
            if reconnect:  # the count just made a key of its own: not left behind
                await self._call("describe", lambda: self.client.delete(self.key("m:", stream_key)))
            return None
        term = meta.get(b"term")
        traceparent = meta.get(b"tp", b"").decode() or None
        return StoredSession(
            session_id=meta[b"sid"].decode(),
            traceparent=traceparent,
            terminal_seq=None if term is None else int(term),
            first_seq=_seq(first[0][0]) if first else 0,
            next_seq=_seq(last[0][0]) + 1 if last else 0,
            producer_alive=bool(alive),
            reconnects=int(meta.get(b"rc", 0)),
        )

    async def read(self, stream_key: str, after: int, *, block: bool) -> list[StoredFrame]:
        """Frames after event ``after``; with ``block``, waits up to ``BLOCK_MS`` for some."""
        client = self._blocking if block else self.client

        async def run() -> Any:
            return await client.xread(
                {self.key("s:", stream_key): _entry_id(after)},
                count=READ_COUNT,
                block=BLOCK_MS if block else None,
            )

        found = await self._call("read", run, extra_s=BLOCK_MS / 1000 if block else 0.0)
        if not found:
            return []
        entries = found[0][1]
        return [
            StoredFrame(_seq(entry_id), fields[b"d"], fields.get(b"t") == b"1")
            for entry_id, fields in entries
        ]

    async def producer_alive(self, stream_key: str) -> bool:
        alive: int = await self._call(
            "lease", lambda: self.client.exists(self.key("lease:", stream_key))
        )
        return bool(alive)

    async def reader_at(self, stream_key: str, state: str) -> None:
        """Tell the producer a reader here has read up to ``state`` (a sequence number) or
        has been sent the terminal frame (``delivered``)."""
        ms = self._window_ms if state == DELIVERED else self._lease_ms
        await self._call(
            "reader_at", lambda: self.client.set(self.key("r:", stream_key), state, px=ms)
        )
