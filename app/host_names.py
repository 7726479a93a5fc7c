"""The ``Host`` names the server answers to.

A page on any site can make a browser send requests to this instance under a name the
page controls (DNS rebinding): the ``Host`` header then carries that name. Only loopback
names, ``HOST`` (unless it is a wildcard address) and ``allowed_hosts`` are answered; the
server (``app.uvicorn_protocol``) gives any other ``Host`` a ``421``, before the app runs,
so every route is covered.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

#: ``HOST`` values that name no host: listening on every address.
_WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::", "[::]"})


def _split_host(value: str) -> tuple[str, str | None]:
    """``name[:port]`` -> (lower-case name without a trailing dot, port or None);
    ``[::1]:8000`` -> ("::1", "8000")."""
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    else:
        name, port = value, None
    return name.rstrip(".").lower(), port


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostAllowList:
    """The ``Host`` names this instance answers to: loopback (``localhost``, 127.0.0.0/8,
    ``::1``) on any port, ``host`` (what it listens on) unless that is a wildcard address,
    and each entry of ``allowed``: ``name`` (any port), ``name:port``, ``*.suffix`` (any
    name under it), or ``*`` (any Host at all: a proxy in front checks it)."""

    def __init__(self, host: str, allowed: Sequence[str]) -> None:
        entries = [_split_host(entry.strip()) for entry in allowed if entry.strip()]
        if host not in _WILDCARD_ADDRESSES:
            entries.append(_split_host(host))  # an IPv6 address reads alike with or without []
        self._any = any(name == "*" for name, _ in entries)
        self._names = frozenset(name for name, port in entries if port is None)
        self._names_with_port = frozenset(
            (name, port) for name, port in entries if port is not None
        )
        self._suffixes = tuple(name[1:] for name, _ in entries if name.startswith("*."))

    def allows(self, value: bytes) -> bool:
        if self._any:
            return True
        try:
            name, port = _split_host(value.decode("ascii"))
        except UnicodeDecodeError:
            return False
        return (
            name in self._names
            or (name, port) in self._names_with_port
            or (bool(self._suffixes) and name.endswith(self._suffixes))
            or _is_loopback(name)
        )
