"""``LiveServer`` with the transport settings it does not pass on yet (the body deadline,
the allowed hosts), taken from the app's settings as ``build_server`` takes them."""

from __future__ import annotations

from starlette.applications import Starlette

from app.server import DrainingServer, server_config
from app.service import FitCheckService
from tests.helpers import LiveServer


class GuardedLiveServer(LiveServer):
    def __init__(self, app: Starlette) -> None:
        super().__init__(app)
        service: FitCheckService = app.state.service
        settings = service.settings
        config = server_config(
            app,
            host="127.0.0.1",
            port=0,
            max_header_bytes=settings.max_header_bytes,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            allowed_hosts=settings.allowed_hosts,
            on_reject=service.telemetry.rejected,
        )
        self.server = DrainingServer(config, drain=service.drain)
