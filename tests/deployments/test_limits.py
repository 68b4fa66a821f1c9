"""limit_slot: a Prefect global concurrency limit, created on first use, holds across tasks."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from archiveflow.flows.scheduled import BROWSER_LIMIT, limit_slot, plugin_limit


def test_plugin_limit_maps_browser_plugins() -> None:
    assert plugin_limit("screenshot", {}) == (BROWSER_LIMIT, 1)
    assert plugin_limit("headers", {}) is None
    cfg = {"BROWSER_PLUGINS": "headers", "BROWSER_CONCURRENCY": "3"}
    assert plugin_limit("headers", cfg) == (BROWSER_LIMIT, 3)
    assert plugin_limit("screenshot", cfg) is None


@pytest.mark.timeout(300)
def test_limit_slot_creates_the_limit_and_serializes(prefect_api: str) -> None:
    from prefect import get_client

    name = f"archiveflow-test-{time.time_ns()}"
    running = 0
    peak = 0

    async def hold() -> None:
        nonlocal running, peak
        async with limit_slot(name, 1):
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.3)
            running -= 1

    async def main() -> float:
        t0 = time.monotonic()
        await asyncio.gather(*(hold() for _ in range(3)), _free())
        return time.monotonic() - t0

    async def _free() -> None:
        async with limit_slot(None):  # no limit: never waits
            pass

    seconds = asyncio.run(main())
    assert peak == 1
    assert seconds >= 0.9

    async def read() -> int:
        async with get_client() as client:
            return (await client.read_global_concurrency_limit_by_name(name)).limit

    assert asyncio.run(read()) == 1


@pytest.mark.timeout(300)
def test_hook_slot_holds_across_threads(prefect_api: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from archiveflow.flows.scheduled import hook_slot

    cfg = {"BROWSER_PLUGINS": "fakebrowser", "BROWSER_CONCURRENCY": "1"}
    lock = threading.Lock()
    state = {"running": 0, "peak": 0}

    def hold() -> None:
        with hook_slot("fakebrowser", cfg):
            with lock:
                state["running"] += 1
                state["peak"] = max(state["peak"], state["running"])
            time.sleep(0.3)
            with lock:
                state["running"] -= 1
        with hook_slot("headers", cfg):  # not limited: no API call at all
            pass

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: hold(), range(3)))
    assert state["peak"] == 1
