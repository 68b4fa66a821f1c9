"""Per-plugin concurrency limits hold in both Prefect granularities.

A crawl of four pages at concurrency 4 runs only `fakebrowser` (tests/flows/plugins), a hook
that works 0.4 s and writes when it ran. Configured as the only browser plugin with one
slot, its runs must not overlap: with ARCHIVEFLOW_PREFECT_GRANULARITY=snapshot (the
snapshot's hook walk in the crawl's pool) and =task (each ArchiveResult a Prefect task run
in a snapshot subflow), which once walked the hooks without entering the slot.
The browser slot is handed over within the crawl process (issue #18): the same crawl with
Prefect's Retry-After polling made visible (its client's debug log) shows Prefect refusing
the snapshots that wait, and none with the process-local queue in front of the limit.
Below: the plugin → limit mapping, the limit's creation, the slot across threads, and the
local queue's order.
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
    LocalSlots,
    WalkSlots,
    ensure_limit,
    hook_slot,
    plugin_limit,
)
from tests.flows.conftest import run_cli

PLUGINS = Path(__file__).resolve().parent / "plugins"
PAGES = ("/index.html", "/page1.html", "/page2.html", "/deep/page4.html")


def crawl_fakebrowser(data: Path, site_url: str, env: dict[str, str] | None = None
                     ) -> tuple[list[tuple[float, float]], str]:
    """A crawl of PAGES, 4 at once, running only fakebrowser under one browser slot: the
    (start, end) of each of its runs, sorted, and the command's stderr."""
    proc = run_cli(data, "add", "--allow-private", "--concurrency", "4",
                   "--plugins", "fakebrowser", "--config", f"PLUGINS_PATH={PLUGINS}",
                   "--config", "BROWSER_PLUGINS=fakebrowser",
                   "--config", "BROWSER_CONCURRENCY=1",
                   *(f"{site_url}{p}" for p in PAGES), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT s.output_dir, a.status FROM archiveresult a "
            "JOIN snapshot s ON s.id = a.snapshot_id WHERE a.plugin = 'fakebrowser'"
        ).fetchall()
    finally:
        con.close()
    assert len(rows) == len(PAGES) and {st for _, st in rows} == {"succeeded"}, rows
    spans = sorted(
        tuple(float(x) for x in (data / d / "fakebrowser" / "interval.txt").read_text().split())
        for d, _ in rows)
    return spans, proc.stderr  # type: ignore[return-value]


def overlapping(spans: list[tuple[float, float]]) -> list[tuple[tuple[float, float], ...]]:
    return [(a, b) for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]


@pytest.mark.parametrize("granularity", ["snapshot", "task"])
def test_browser_limit_serializes_hook_runs(tmp_path: Path, site_url: str, prefect_api: str,
                                            granularity: str) -> None:
    spans, _ = crawl_fakebrowser(tmp_path, site_url,
                                 {"ARCHIVEFLOW_PREFECT_GRANULARITY": granularity})
    assert not overlapping(spans), f"fakebrowser runs overlapped under one slot: {spans}"


# Prefect's client logs each refused acquire (HTTP 423) at debug level before sleeping the
# server's Retry-After (prefect/concurrency/services.py); PREFECT_INTERNAL_LOGGING_LEVEL
# shows it on the command's stderr.
REFUSED = f"Unable to acquire concurrency slot with lease for ['{BROWSER_LIMIT}']"
SHOW_REFUSALS = {"PREFECT_INTERNAL_LOGGING_LEVEL": "DEBUG"}


@pytest.mark.timeout(400)
def test_the_browser_slot_is_handed_over_within_the_process(
        tmp_path: Path, site_url: str, prefect_api: str) -> None:
    """Four snapshots wait for one slot. Polling Prefect alone (the local queue turned off,
    bench/browser.py's baseline), the waiters are refused and sleep Retry-After while the
    slot may be free: the crawl's stderr shows the refusals. With the queue, each waiter
    gets the slot from the one before it and Prefect never refuses one: no refusal logged.
    Either way the runs never overlap (the Prefect limit still holds). The slot's idle time
    between runs (all of them waiting) is the one time fact, with a generous bound: less than
    without the queue, where every hand-over is a release, a poll and an acquire on the API."""
    polled, polled_err = crawl_fakebrowser(tmp_path / "prefect-only", site_url,
                                           {**SHOW_REFUSALS, "_ARCHIVEFLOW_LOCAL_SLOTS": "0"})
    handed, handed_err = crawl_fakebrowser(tmp_path / "hand-over", site_url, SHOW_REFUSALS)
    assert not overlapping(polled) and not overlapping(handed), (polled, handed)
    assert polled_err.count(REFUSED) > 0, \
        "no refusal logged without the local queue: the observation is blind" + polled_err[-3000:]
    assert handed_err.count(REFUSED) == 0, handed_err[-3000:]
    assert idle(handed) < idle(polled), (handed, polled)


def idle(spans: list[tuple[float, float]]) -> float:
    """Seconds between one run's end and the next one's start, summed."""
    return sum(b[0] - a[1] for a, b in zip(spans, spans[1:], strict=False))


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


@pytest.mark.timeout(300)
def test_local_slots_hand_the_prefect_slot_over_first_come_first_served(prefect_api: str
                                                                        ) -> None:
    """Six threads of one process want a one-slot Prefect limit: they get it in the order
    they came, one at a time, and the one Prefect lease passes from each to the next (no
    call to the API between them); when nobody waits it goes back to Prefect."""
    from prefect import get_client

    name = f"archiveflow-test-{time.time_ns()}"
    asyncio.run(ensure_limit(name, 1))
    slots = LocalSlots(name, 1)
    order: list[int] = []
    leases: set[int] = set()
    state = {"running": 0, "peak": 0}
    lock = threading.Lock()
    gate = threading.Event()

    def hold(i: int) -> None:
        lease = slots.acquire()
        try:
            with lock:
                order.append(i)
                leases.add(id(lease))
                state["running"] += 1
                state["peak"] = max(state["peak"], state["running"])
            gate.wait(60)
            with lock:
                state["running"] -= 1
        finally:
            slots.release(lease)

    threads = []
    for i in range(6):  # 0 holds the slot; 1..5 queue, in this order
        t = threading.Thread(target=hold, args=(i,))
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 60
        while len(slots._waiting) + len(order) < i + 1:
            assert time.monotonic() < deadline, "thread did not reach the queue"
            time.sleep(0.01)
    gate.set()
    for t in threads:
        t.join(60)
    assert order == list(range(6)) and state["peak"] == 1, (order, state)
    assert len(leases) == 1, "the slot went back to Prefect between two waiting threads"

    async def active() -> int:
        async with get_client() as client:
            return (await client.read_global_concurrency_limit_by_name(name)).active_slots

    assert slots._busy == 0 and not slots._waiting
    assert asyncio.run(active()) == 0, "the slot was not given back to Prefect"
