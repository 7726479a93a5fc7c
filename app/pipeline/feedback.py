"""Users' verdicts on analyses: which session a stream key names, once per session.

A verdict is accepted for ``window_s`` after its session ended (or while it runs), once
per session, and at most ``per_client_per_minute`` times a minute from one address: a
replayed or flooded verdict is refused, not counted. The sessions that ended are
remembered here (bounded, oldest forgotten first); with the shared store every replica
knows every session, so a verdict can land on any of them.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from app.store.redis_log import SessionStore, StoreUnavailable

#: Sessions remembered for their verdict; past it the oldest is forgotten.
MAX_REMEMBERED = 10_000
#: Addresses whose posting rate is tracked; past it the table starts over.
MAX_CLIENTS = 10_000

Verdict = Literal["recorded", "unknown", "duplicate", "rate_limited"]


@dataclass(slots=True)
class RatedSession:
    session_id: str
    traceparent: str | None
    expires_at: float
    rated: bool = False


class FeedbackLedger:
    def __init__(
        self,
        *,
        window_s: float,
        per_client_per_minute: int,
        store: SessionStore | None = None,
    ) -> None:
        self._window_s = window_s
        self._per_minute = per_client_per_minute
        self._store = store
        self._sessions: OrderedDict[str, RatedSession] = OrderedDict()
        self._clients: dict[str, tuple[float, int]] = {}

    def remember(self, key: str, session_id: str, traceparent: str | None) -> None:
        """A session ended here (or is rated while it runs): its verdict may come for the
        window from now. A verdict already given stays given."""
        expires_at = time.monotonic() + self._window_s
        known = self._sessions.get(key)
        if known is None:
            self._sessions[key] = RatedSession(session_id, traceparent, expires_at)
        else:
            known.expires_at = expires_at
        self._sessions.move_to_end(key)
        while len(self._sessions) > MAX_REMEMBERED:
            self._sessions.popitem(last=False)

    def _allowed(self, client: str) -> bool:
        now = time.monotonic()
        started, count = self._clients.get(client, (now, 0))
        if now - started >= 60:
            started, count = now, 0
        if count >= self._per_minute:
            return False
        if len(self._clients) >= MAX_CLIENTS and client not in self._clients:
            self._clients.clear()
        self._clients[client] = (started, count + 1)
        return True

    async def claim(
        self, key: str, client: str, live: RatedSession | None
    ) -> tuple[Verdict, RatedSession | None]:
        """Whether a verdict on the session ``key`` may be recorded now (and marks it rated):
        ``live`` is the session when it still runs on this replica."""
        if not self._allowed(client):
            return "rate_limited", None
        session = self._local(key)
        if session is None and live is not None:
            self.remember(key, live.session_id, live.traceparent)
            session = self._sessions[key]
        if self._store is not None:
            with contextlib.suppress(StoreUnavailable):
                shared = session
                if shared is None:
                    found = await self._store.rated_session(key)
                    if found is None:
                        return "unknown", None
                    shared = RatedSession(found[0], found[1], expires_at=0.0)
                if not await self._store.claim_verdict(key, int(self._window_s)):
                    return "duplicate", None
                if session is not None:
                    session.rated = True
                return "recorded", shared
        if session is None:
            return "unknown", None
        if session.rated:
            return "duplicate", None
        session.rated = True
        return "recorded", session

    def _local(self, key: str) -> RatedSession | None:
        session = self._sessions.get(key)
        if session is not None and session.expires_at < time.monotonic():
            del self._sessions[key]
            return None
        return session
