"""``app.uvicorn_protocol`` leans on uvicorn's private protocol classes: every internal it
uses must still be there, so an upgrade that moves one fails here, by name."""

from __future__ import annotations

import ast
import asyncio
import inspect
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from app import uvicorn_protocol
from app.uvicorn_protocol import GuardedHttpToolsProtocol, _CloseDelimitedCycle

SOURCE = ast.parse(Path(uvicorn_protocol.__file__).read_text(encoding="utf-8"))


def _class(name: str) -> ast.ClassDef:
    [found] = [n for n in SOURCE.body if isinstance(n, ast.ClassDef) and n.name == name]
    return found


def _ours(cls: ast.ClassDef) -> set[str]:
    """What a class of ours defines itself: its methods and class attributes (and, by
    convention, every ``_private`` attribute)."""
    names = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    for node in cls.body:
        if isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _used_on(cls: ast.ClassDef, owner: str) -> set[str]:
    """Public attributes read or written on ``self`` (owner "self") or on the request's
    cycle (``cycle`` or ``self.cycle``): a write to an attribute uvicorn renamed would
    change nothing, silently."""
    used = set()
    for node in ast.walk(cls):
        if not isinstance(node, ast.Attribute):
            continue
        value = node.value
        if node.attr.startswith("_") and node.attr != "__class__":
            continue
        if owner == "self" and _is_self(value):
            used.add(node.attr)
        is_cycle = (isinstance(value, ast.Name) and value.id == "cycle") or (
            isinstance(value, ast.Attribute) and value.attr == "cycle" and _is_self(value.value)
        )
        if owner == "cycle" and is_cycle:
            used.add(node.attr)
    return used


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        return None


async def _a_protocol_with_a_request() -> HttpToolsProtocol:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()

    config = uvicorn.Config(app, http="httptools", log_config=None, lifespan="off")
    config.load()
    protocol = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    protocol.connection_made(_Transport())
    protocol.data_received(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    return protocol


async def test_every_protocol_internal_used_is_uvicorns() -> None:
    ours = _class("GuardedHttpToolsProtocol")
    needed = _used_on(ours, "self") - _ours(ours)
    protocol = await _a_protocol_with_a_request()
    missing = sorted(name for name in needed if not hasattr(protocol, name))
    assert not missing, f"uvicorn's HttpToolsProtocol no longer has {missing}"
    assert hasattr(protocol.flow, "read_paused")


async def test_every_cycle_internal_used_is_uvicorns() -> None:
    needed = _used_on(_class("GuardedHttpToolsProtocol"), "cycle")
    cycle_class = _class("_CloseDelimitedCycle")
    needed |= _used_on(cycle_class, "self") - (_ours(cycle_class) - {"send"})
    protocol = await _a_protocol_with_a_request()
    cycle = protocol.cycle
    assert isinstance(cycle, RequestResponseCycle)
    missing = sorted(name for name in needed if not hasattr(cycle, name))
    assert not missing, f"uvicorn's RequestResponseCycle no longer has {missing}"


def test_every_method_overridden_is_still_called_by_uvicorn() -> None:
    """An override of a method uvicorn renamed would never run: the guard would be gone
    without an error."""
    for ours, theirs in (
        (GuardedHttpToolsProtocol, HttpToolsProtocol),
        (_CloseDelimitedCycle, RequestResponseCycle),
    ):
        for name in sorted(_ours(_class(ours.__name__))):
            method = vars(ours)[name]
            if name.startswith("_") or not inspect.isfunction(method):
                continue
            assert hasattr(theirs, name), f"{theirs.__name__}.{name} is gone"
            expected = list(inspect.signature(getattr(theirs, name)).parameters)
            assert list(inspect.signature(method).parameters) == expected, name
