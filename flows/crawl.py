"""The `crawl` flow: seeds → Snapshots (a task run or subflow run each), C at a time, then
clean up and seal. It reads as calls to the model modules (tasks/crawls.py,
tasks/snapshots.py via flows/snapshot.py); the loop batches claims through SnapshotFeed and
writes through the Recorder thread."""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import Future
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.states import Failed

from archiveflow.flows import snapshot
from archiveflow.flows.binaries import require_binaries
from archiveflow.flows.context import SnapshotRun, current
from archiveflow.flows.head_start import new_pool
from archiveflow.flows.prefect_server import granularity
from archiveflow.tasks import crawls
from archiveflow.tasks.feed import SnapshotFeed

POLL_SECONDS = 0.2


@flow(name="crawl", flow_run_name="crawl {crawl_id}", persist_result=False,
      validate_parameters=False)
async def crawl_flow(crawl_id: str, concurrency: int = 4, data_dir: str | None = None,
                     started: bool = False) -> dict[str, Any] | State[Any]:
    """Claim the crawl, run its on_Crawl hooks, archive its snapshots, clean up, seal.

    Returns the crawl's summary; the run ends Failed (with the summary as its data) when the
    crawl archived nothing, every ArchiveResult having failed, as the CLI exits 1 then.
    Callers take the summary either way with `run_crawl_flow`.

    `started=True`: the CLI already claimed the crawl and ran its on_Crawl hooks while
    Prefect was starting (so the first hook never waits for Prefect), and handed them over
    in `current().crawl_starts`, with the first snapshots it started meanwhile in
    `current().head_starts` (flows/head_start.py); the flow adopts those (a `snapshot` task
    run each, as for its own) and goes on from there.
    """
    cur = current(data_dir)
    rt = cur.rt
    per_result = granularity() == "task"
    start = cur.crawl_starts.pop(crawl_id, None) if started else None
    head = cur.head_starts.pop(crawl_id, None) if started else None
    if start is None:
        crawl = await asyncio.to_thread(crawls.claim, rt, crawl_id)
        start = await asyncio.to_thread(crawls.run, rt, crawl)
    crawl = start.crawl
    # Before the first Snapshot: install what the crawl's plugins need (milliseconds and no
    # Prefect run when everything is present).
    await require_binaries(crawls.crawl_hook_plugins(rt, crawl), data_dir, crawls.config_of(crawl))
    feed = head.feed if head else SnapshotFeed(rt, cur.recorder, crawl, concurrency)
    pool = head.pool if head else new_pool(concurrency)
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def poke(_: object) -> None:
        loop.call_soon_threadsafe(wake.set)

    # What holds a slot: a snapshot's hook walk (or its subflow run).
    busy: set[Future[Any] | asyncio.Task[Any]] = set()
    runs: dict[asyncio.Task[dict[str, int]], str] = {}  # Prefect runs still open → snapshot
    duplicates = 0  # snapshots handed out while a run of the same id was open here
    for early in head.runs if head else []:  # walks the CLI started before Prefect was ready
        assert early.future is not None
        early.future.add_done_callback(poke)
        busy.add(early.future)
        snap = early.plan.snapshot
        t = asyncio.create_task(snapshot.archive_snapshot(snap["url"], snap["id"]))
        t.add_done_callback(poke)
        runs[t] = snap["id"]
    with pool:
        while True:
            busy = {b for b in busy if not b.done()}
            free = concurrency - len(busy)
            plans = (await asyncio.to_thread(feed.take, free, not busy and not runs)
                     if free > 0 else [])
            for plan in plans:
                snap = plan.snapshot
                if snap["id"] in cur.snapshot_runs:  # the feed hands an id out once; belt
                    duplicates += 1
                    get_run_logger().warning("snapshot %s is already running in this "
                                             "process: not run twice", snap["id"])
                    continue
                run = cur.snapshot_runs[snap["id"]] = SnapshotRun(plan, pool)
                if per_result:
                    t = asyncio.create_task(snapshot.snapshot_flow(snap["url"], snap["id"],
                                                                   crawl_id))
                    busy.add(t)
                else:
                    fut = snapshot.start(run)
                    fut.add_done_callback(poke)
                    busy.add(fut)
                    t = asyncio.create_task(snapshot.archive_snapshot(snap["url"], snap["id"]))
                t.add_done_callback(poke)
                runs[t] = snap["id"]
            for t in [t for t in runs if t.done()]:
                cur.snapshot_runs.pop(runs.pop(t), None)
                t.result()  # a snapshot that crashed past its retries stops the crawl loudly
            if not busy and not runs:
                if await asyncio.to_thread(feed.done):
                    break
                await asyncio.sleep(POLL_SECONDS)  # queued rows not due yet (retry backoff)
                continue
            wake.clear()
            if not any(b.done() for b in busy) and not any(t.done() for t in runs):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), POLL_SECONDS)
    await asyncio.to_thread(crawls.cleanup, rt, start)
    sealed = await asyncio.to_thread(crawls.seal, rt, crawl)
    counts = await asyncio.to_thread(crawls.result_counts, rt, crawl)
    summary = {"crawl_id": crawl_id, "status": sealed["status"], "snapshots": feed.started,
               "seeded": start.created, "refused": start.refused, "failures": start.failures,
               "results": counts}
    if feed.duplicates or duplicates:  # a claim handed a snapshot out twice: run once
        summary["duplicate_claims"] = feed.duplicates + duplicates
        get_run_logger().warning("crawl %s: %d snapshot claims were duplicates, each run once",
                                 crawl_id, summary["duplicate_claims"])
    if archived_nothing(summary):
        return Failed(message=f"crawl {crawl_id} archived nothing: all {counts['failed']} "
                      "ArchiveResults failed", data=summary)
    return summary


def archived_nothing(summary: dict[str, Any]) -> bool:
    """True when the crawl had ArchiveResults and every one of them failed."""
    counts: dict[str, int] = summary.get("results") or {}
    return bool(counts) and set(counts) == {"failed"}


async def run_crawl_flow(crawl_id: str, concurrency: int = 4, data_dir: str | None = None,
                    started: bool = False) -> dict[str, Any]:
    """Run the `crawl` flow (as a subflow inside a flow) and return its summary, also when
    its run ended Failed because nothing was archived; a crash still raises."""
    state = await crawl_flow(crawl_id, concurrency=concurrency, data_dir=data_dir,
                             started=started, return_state=True)
    result = await state.aresult(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    if not isinstance(result, dict):
        raise RuntimeError(f"crawl {crawl_id}: its flow run ended {state.name}: {state.message}")
    return result
