"""On ``PYTHONPATH``, uvicorn's ``loop="auto"`` (the service's: uvloop when installed, as in
production) becomes the standard library's asyncio loop: ``bench.capacity --loop asyncio``
serves the service so, its code unchanged. Python imports ``sitecustomize`` at start-up."""

from __future__ import annotations

import uvicorn.config

uvicorn.config.LOOP_FACTORIES["auto"] = uvicorn.config.LOOP_FACTORIES["asyncio"]
