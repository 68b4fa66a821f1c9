"""Per-plugin concurrency limits hold in both Prefect granularities.

A crawl of four pages at concurrency 4 runs only `fakebrowser` (tests/flows/plugins), a hook
that works 0.4 s and writes when it ran. Configured as the only browser plugin with one
slot, its runs must not overlap: with ARCHIVEFLOW_PREFECT_GRANULARITY=snapshot (the
snapshot's hook walk in the crawl's pool) and =task (each ArchiveResult a Prefect task run
in a snapshot subflow), which once walked the hooks without entering the slot.
Below: the plugin → limit mapping, the limit's creation, and the slot across threads.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pytest

from archiveflow.flows.limits import (
    BROWSER_LIMIT,
    WalkSlots,
    ensure_limit,
    hook_slot,
    plugin_limit,
)
from tests.flows.conftest import run_cli

PLUGINS = Path(__file__).resolve().parent / "plugins"
PAGES = ("/index.html", "/page1.html", "/page2.html", "/deep/page4.html")


@pytest.mark.parametrize("granularity", ["snapshot", "task"])
def test_browser_limit_serializes_hook_runs(tmp_path: Path, site_url: str, prefect_api: str,
                                            granularity: str) -> None:
    proc = run_cli(tmp_path, "add", "--allow-private", "--concurrency", "4",
                   "--plugins", "fakebrowser", "--config", f"PLUGINS_PATH={PLUGINS}",
                   "--config", "BROWSER_PLUGINS=fakebrowser",
                   "--config", "BROWSER_CONCURRENCY=1",
                   *(f"{site_url}{p}" for p in PAGES),
                   env={"ARCHIVEFLOW_PREFECT_GRANULARITY": granularity})
    assert proc.returncode == 0, proc.stderr[-3000:]
    con = duckdb.connect(str(tmp_path / "index.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT s.output_dir, a.status FROM archiveresult a "
            "JOIN snapshot s ON s.id = a.snapshot_id WHERE a.plugin = 'fakebrowser'"
        ).fetchall()
    finally:
        con.close()
    assert len(rows) == len(PAGES) and {st for _, st in rows} == {"succeeded"}, rows
    spans = sorted(
        tuple(float(x) for x in (tmp_path / d / "fakebrowser" / "interval.txt")
              .read_text().split())
        for d, _ in rows)
    overlaps = [(a, b) for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]
    assert not overlaps, f"fakebrowser runs overlapped under one slot: {overlaps}"


def test_plugin_limit_maps_browser_plugins() -> None:
    assert plugin_limit("screenshot", {}) == (BROWSER_LIMIT, 1)
    assert plugin_limit("headers", {}) is None
    cfg = {"BROWSER_PLUGINS": "headers, pdf", "BROWSER_CONCURRENCY": "3"}
    assert plugin_limit("pdf", cfg) == (BROWSER_LIMIT, 3)
    assert plugin_limit("screenshot", cfg) is None
    assert plugin_limit("pdf", {**cfg, "BROWSER_CONCURRENCY": "x"}) == (BROWSER_LIMIT, 1)


def test_ensure_limit_creates_a_missing_limit_and_keeps_an_existing_one(prefect_api: str
                                                                      ) -> None:
    from prefect import get_client

    name = f"archiveflow-test-{time.time_ns()}"

    async def run() -> tuple[int, int]:
        await ensure_limit(name, 2)
        async with get_client() as client:
            first = (await client.read_global_concurrency_limit_by_name(name)).limit
        await ensure_limit(name, 5)  # already there: its size may have been set in the UI
        async with get_client() as client:
            return first, (await client.read_global_concurrency_limit_by_name(name)).limit

    assert asyncio.run(run()) == (2, 2)


@pytest.mark.timeout(300)
def test_hook_slot_holds_across_threads(prefect_api: str) -> None:
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


@pytest.mark.timeout(300)
def test_a_walk_runs_its_next_browser_hook_in_the_slot_it_holds(prefect_api: str) -> None:
    """Snapshot A's background browser hook holds the one slot until A's cleanup: A's next
    browser hook runs in it (asking again would wait for itself forever); B waits for A."""
    cfg = {"BROWSER_PLUGINS": "fakebrowser,fakepdf", "BROWSER_CONCURRENCY": "1"}
    a, b = WalkSlots(), WalkSlots()
    order: list[str] = []
    waiter = threading.Thread(target=lambda: _run_in(b, cfg, order, "b-pdf"))
    with a("fakebrowser", cfg):  # A's background hook, until A's cleanup
        waiter.start()
        done = threading.Thread(target=lambda: _run_in(a, cfg, order, "a-pdf"))
        done.start()
        done.join(60)
        assert not done.is_alive(), "snapshot A waited for its own slot"
        time.sleep(0.5)
        assert order == ["a-pdf"]  # B still waits for the slot A holds
    waiter.join(60)
    assert order == ["a-pdf", "b-pdf"]


def _run_in(slots: WalkSlots, cfg: dict[str, str], order: list[str], name: str) -> None:
    with slots("fakepdf", cfg):
        order.append(name)
