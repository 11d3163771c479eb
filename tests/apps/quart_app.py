"""A Quart app using ``sharedstate.quart``, run by tests/test_quart.py.

Under hypercorn with several worker processes: ``hypercorn --workers 4
'tests.apps.quart_app:create_app()'``, configured from the environment (``QUART_APP_URL``,
``QUART_APP_NAMESPACE``, ``QUART_APP_INSTANCE``), the way a deployed app would be. In-process:
``create_app({...config...})`` with Quart's test client.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from quart import Quart, request

from sharedstate.quart import SharedState

state = SharedState()

# Made at import time, before any app exists, and shared by every request and task: each use acts
# on the store of the app in use.
module_hits = state.counter("module_hits")
settings = state.dict("settings")
module_lock = state.lock("module_guard", ttl=30, timeout=30)


@state.cached(ttl=60)
async def slow_report(name: str) -> dict[str, Any]:
    """Decorated at import time, before any app exists; counts its real runs in the store."""
    runs = await state.incr("report_runs")
    await asyncio.sleep(0.3)
    return {"name": name, "run": runs, "pid": os.getpid()}


async def _pause() -> None:
    # Handlers pause a little when asked, so concurrent requests overlap and spread over workers.
    pause = float(request.args.get("sleep", "0"))
    if pause:
        await asyncio.sleep(min(pause, 0.5))


def create_app(config: dict[str, Any] | None = None) -> Quart:
    app = Quart(__name__, instance_path=os.environ.get("QUART_APP_INSTANCE") or None)
    if os.environ.get("QUART_APP_URL"):
        app.config["SHAREDSTATE_URL"] = os.environ["QUART_APP_URL"]
    if os.environ.get("QUART_APP_NAMESPACE"):
        app.config["SHAREDSTATE_NAMESPACE"] = os.environ["QUART_APP_NAMESPACE"]
    app.config.update(config or {})
    state.init_app(app)

    @app.get("/noop")
    async def noop() -> dict[str, Any]:
        return {"pid": os.getpid()}

    @app.get("/incr")
    async def incr() -> dict[str, Any]:
        await _pause()
        return {"n": await state.counter("hits").incr(), "pid": os.getpid()}

    @app.get("/edit")
    async def edit() -> dict[str, Any]:
        async with state.edit("global_obj", default={"param": 0}, timeout=30) as obj:
            obj["param"] += 1
            return {"param": obj["param"], "pid": os.getpid()}

    @app.get("/module-locked")
    async def module_locked() -> dict[str, Any]:
        async with module_lock:  # one module-level lock object, shared by every request
            value = await state.get("guarded_value", 0)
            await _pause()
            await state.set("guarded_value", value + 1)
        await settings.incr("guarded")
        return {"value": value + 1, "n": await module_hits.incr(), "pid": os.getpid()}

    @app.get("/report")
    async def report() -> dict[str, Any]:
        result = await slow_report("monthly")
        return {**result, "served_by": os.getpid()}

    @app.get("/get/<key>")
    async def get(key: str) -> dict[str, Any]:
        return {"value": await state.get(key)}

    return app
