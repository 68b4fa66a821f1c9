"""A crawl's first Snapshots, run while Prefect gets ready; the crawl flow adopts them.

Why: the hooks are archiveflow's own processes, and Prefect only records them, yet the
first on_Snapshot hook used to wait for the local Prefect server and the flow engine's import
(2.5 s warm, 8-11 s on a fresh data folder, on 2 loaded cores). Now the CLI claims and
prepares Snapshots and starts their hook walks at once, C at a time, exactly as the crawl
flow's loop would (the same SnapshotFeed, the same walk, the same thread pool), until the
Prefect client is configured. The `crawl` flow then takes the feed, the pool and every walk
started here: each still gets its `snapshot` task run (running while its hooks run, or
Completed at once when they are done) with its ArchiveResults as task runs under it, so the
UI holds the same runs; only their start times are later than the hooks'.

Not started early (the flow does them, as before): a crawl whose plugins still need a
binary installed (that is an `install_binaries` subflow), and the `task` granularity (its
ArchiveResults are run by Prefect task runs). A hook under a Prefect global concurrency limit
(browser plugins) waits for Prefect inside its walk: the limit is Prefect's.

This module imports no Prefect: the CLI calls it before Prefect is loaded.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from archiveflow.flows.context import Current, HeadStart, SnapshotRun, current
from archiveflow.flows.limits import WalkSlots, plugin_limit
from archiveflow.tasks import binaries, crawls, snapshots
from archiveflow.tasks.crawls import CrawlStart
from archiveflow.tasks.feed import SnapshotFeed
from archiveflow.tasks.plan import ResultDone
from archiveflow.tasks.snapshots import Hold, RunForeground

POLL_SECONDS = 0.2


def new_pool(concurrency: int) -> ThreadPoolExecutor:
    """The crawl's pool: each snapshot's hook walk runs in one of its threads."""
    return ThreadPoolExecutor(concurrency, thread_name_prefix="archiveflow-snapshot")


def _walk(cur: Current, run: SnapshotRun, run_foreground: RunForeground | None,
          wait: bool, hold: Hold | None) -> list[ResultDone]:
    plan = run.plan
    if run.runs:  # a retry: prepare again (the resume rules keep what is final)
        plan = run.plan = snapshots.prepare(cur.rt, plan.crawl, [plan.snapshot])[0]
    run.runs += 1
    return snapshots.run(cur.rt, cur.recorder, plan, hold=hold or WalkSlots(),
                         run_foreground=run_foreground, wait=wait)


def start_walk(run: SnapshotRun, run_foreground: RunForeground | None = None, *,
               wait: bool = False, hold: Hold | None = None) -> Future[list[ResultDone]]:
    """Start the snapshot's hook walk in the crawl's pool, in the caller's context (inside a
    flow, the concurrency slots and any per-hook task runs talk to Prefect from there)."""
    ctx = contextvars.copy_context()
    run.future = run.pool.submit(ctx.run, _walk, current(), run, run_foreground, wait, hold)
    return run.future


class GatedSlots(WalkSlots):
    """WalkSlots that wait for Prefect (`ready`) before taking a global limit's slot, and
    open `go` (Prefect's import may start) as a hook is about to start."""

    def __init__(self, ready: Future[Any], go: threading.Event | None = None) -> None:
        super().__init__()
        self._ready = ready
        self._go = go

    @contextlib.contextmanager
    def __call__(self, plugin: str, config: Mapping[str, str]) -> Iterator[None]:
        if self._go is not None:
            self._go.set()
        if plugin_limit(plugin, config) is not None:
            self._ready.result()  # the client is configured: the limit is the API's
        with super().__call__(plugin, config):
            yield


def run_until_ready(cur: Current, start: CrawlStart, concurrency: int,
                    ready: Future[Any], go: threading.Event | None = None) -> HeadStart | None:
    """Keep C snapshots of the crawl running until `ready` (Prefect configured) is done or
    the crawl has nothing left; leave the HeadStart in `cur.head_starts` for the flow.

    `go` (the gate of Prefect's import, prefect_server.start_in_background) is set as the
    first hook is about to start, when no walk is left running, and on return: until then
    this thread and the first walks have the GIL to themselves."""
    try:
        return _run_until_ready(cur, start, concurrency, ready, go)
    finally:
        if go is not None:
            go.set()


def _run_until_ready(cur: Current, start: CrawlStart, concurrency: int, ready: Future[Any],
                     go: threading.Event | None) -> HeadStart | None:
    from archiveflow.flows.prefect_server import granularity

    rt, crawl = cur.rt, start.crawl
    if granularity() != "snapshot" or ready.done():
        return None
    todo = binaries.plan_binaries(rt, crawls.crawl_hook_plugins(rt, crawl), retry_failed=False,
                                  crawl_config=crawls.config_of(crawl)).todo
    if todo:
        return None  # installing comes first, as the flow's install_binaries subflow
    head = cur.head_starts[crawl["id"]] = HeadStart(
        SnapshotFeed(rt, cur.recorder, crawl, concurrency), new_pool(concurrency))
    wake = threading.Event()
    ready.add_done_callback(lambda _: wake.set())
    busy: set[Future[list[ResultDone]]] = set()
    while not ready.done():
        wake.clear()
        busy = {f for f in busy if not f.done()}
        free = concurrency - len(busy)
        plans = head.feed.take(free, not busy) if free > 0 else []
        for plan in plans:
            run = cur.snapshot_runs[plan.snapshot["id"]] = SnapshotRun(plan, head.pool)
            fut = start_walk(run, hold=GatedSlots(ready, go))
            fut.add_done_callback(lambda _: wake.set())
            busy.add(fut)
            head.runs.append(run)
        if not busy and not plans:
            if head.feed.done():
                break  # the whole crawl ran before Prefect was ready: the flow records it
            if go is not None:
                go.set()  # nothing of ours is running: Prefect's import may go on
        wake.wait(POLL_SECONDS)
    if ready.done() and ready.exception() is not None:
        # Prefect could not start and the command fails: the walks started here finish and
        # are written first, so their snapshots are sealed rather than left to a lease.
        head.pool.shutdown(wait=True)
        cur.recorder.flush()
        cur.head_starts.pop(crawl["id"], None)
    return head
