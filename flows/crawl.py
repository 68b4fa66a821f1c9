"""The `crawl` flow: seeds → Snapshots (a task run each), C at a time, then seal."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from archiveflow.flows import result_runs
from archiveflow.flows.binaries import require_binaries
from archiveflow.flows.context import current
from archiveflow.flows.prefect_server import granularity
from archiveflow.flows.scheduled import hook_slot
from archiveflow.flows.snapshot import snapshot_flow
from archiveflow.tasks import work
from archiveflow.tasks.recorder import ResultDone
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

POLL_SECONDS = 0.2


@dataclass
class SnapshotRun:
    """A snapshot handed to its task run: its work was started in the crawl's pool."""

    crawl: dict[str, Any]
    snapshot: dict[str, Any]
    pool: ThreadPoolExecutor
    future: Future[list[ResultDone]] | None


def _start(pool: ThreadPoolExecutor, run: SnapshotRun,
           plan: work.SnapshotPlan | None) -> Future[list[ResultDone]]:
    # The flow's context goes along: the hook_slot concurrency limits talk to Prefect.
    ctx = contextvars.copy_context()
    return pool.submit(ctx.run, work.run_snapshot_results, current().rt, current().recorder,
                       run.crawl, run.snapshot, hook_slot, plan=plan, wait=False)


@task(name="snapshot", task_run_name="{url}", retries=2, retry_delay_seconds=2,
      cache_policy=NO_CACHE, persist_result=False)
async def archive_snapshot(url: str, snapshot_id: str, slot: str) -> dict[str, int]:
    """One Snapshot as one task run: its hooks' ArchiveResults live in DuckDB only.

    The default granularity (ARCHIVEFLOW_PREFECT_GRANULARITY=snapshot): a task run per
    ArchiveResult or a subflow per Snapshot cost 2-8x the hooks themselves on the SQLite
    Prefect server (bench/PREFECT.md); one task run per Snapshot keeps Prefect's share small.
    The snapshot's hooks were started by the crawl loop the moment a slot was free; this
    task run follows that work (it is Running while the hooks run and ends with their
    outcome), so the ~40 ms the task engine takes per run never delays a hook.
    Retries: a crash of the snapshot's own work (not a failed hook) runs it again; results
    already final are kept (prepare_snapshot resumes). Each ArchiveResult is then reported
    as a task run under this one (flows/result_runs.py).
    """
    run: SnapshotRun = current().slots[slot]
    fut, run.future = run.future, None
    if fut is None:  # a retry: prepare again (resume rules) and run in the same pool
        fut = _start(run.pool, run, None)
    results = await asyncio.wrap_future(fut)
    if result_runs.enabled():
        ctx = TaskRunContext.get()
        if ctx is not None:
            result_runs.report(results, flow_run_id=ctx.task_run.flow_run_id,
                               parent_task_run_id=ctx.task_run.id)
    return work.count_results(results)


@flow(name="crawl", flow_run_name="crawl {crawl_id}", persist_result=False,
      validate_parameters=False)
async def crawl_flow(crawl_id: str, concurrency: int = 4, data_dir: str | None = None,
                     started: bool = False) -> dict[str, Any]:
    """Claim the crawl, run its on_Crawl hooks, archive its snapshots, clean up, seal.

    `started=True`: the CLI already claimed the crawl and ran its on_Crawl hooks while
    Prefect was starting (so the first hook never waits for Prefect); the flow goes on
    from there.
    """
    cur = current(data_dir)
    rt = cur.rt
    per_result = granularity() == "task"
    if started and f"{crawl_id}:start" in cur.slots:
        crawl, start = cur.slots.pop(f"{crawl_id}:start")
    else:
        crawl = await asyncio.to_thread(work.claim_crawl, rt, crawl_id)
        start = await asyncio.to_thread(work.run_crawl_hooks, rt, crawl)
    # Before the first Snapshot: install what the crawl's plugins need (milliseconds and no
    # Prefect run when everything is present).
    await require_binaries(work.plugin_list(crawl), data_dir)
    feed = work.SnapshotFeed(rt, cur.recorder, crawl, concurrency)
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def poke(_: object) -> None:
        loop.call_soon_threadsafe(wake.set)

    busy: set[Any] = set()  # what holds a slot: a snapshot's work (or its subflow)
    tasks: dict[asyncio.Task[dict[str, int]], str] = {}  # Prefect runs still open
    with ThreadPoolExecutor(concurrency, thread_name_prefix="archiveflow-snapshot") as pool:
        while True:
            busy = {b for b in busy if not b.done()}
            free = concurrency - len(busy)
            plans = (await asyncio.to_thread(feed.take, free, not busy and not tasks)
                     if free > 0 else [])
            for plan in plans:
                snap = plan.snapshot
                slot = f"{crawl_id}:{snap['id']}"
                if per_result:
                    cur.slots[slot] = (crawl, snap, plan)
                    t = asyncio.create_task(snapshot_flow(snap["url"], snap["id"], crawl_id,
                                                          slot))
                    busy.add(t)
                else:
                    run = SnapshotRun(crawl, snap, pool, None)
                    run.future = _start(pool, run, plan)
                    run.future.add_done_callback(poke)
                    busy.add(run.future)
                    cur.slots[slot] = run
                    t = asyncio.create_task(archive_snapshot(snap["url"], snap["id"], slot))
                t.add_done_callback(poke)
                tasks[t] = slot
            for t in [t for t in tasks if t.done()]:
                cur.slots.pop(tasks.pop(t), None)
                t.result()  # a snapshot that crashed past its retries stops the crawl loudly
            if not busy and not tasks:
                if await asyncio.to_thread(feed.done):
                    break
                await asyncio.sleep(POLL_SECONDS)  # queued rows not due yet (retry backoff)
                continue
            wake.clear()
            if not any(b.done() for b in busy) and not any(t.done() for t in tasks):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), POLL_SECONDS)
    n = feed.started
    sealed = await asyncio.to_thread(work.finish_crawl, rt, crawl, start.background)
    return {"crawl_id": crawl_id, "status": sealed["status"], "snapshots": n,
            "seeded": start.created, "refused": start.refused, "failures": start.failures}
