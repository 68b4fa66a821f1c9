"""The `crawl` flow: seeds → Snapshots, run as nested `snapshot` flows, bounded, then seal."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.binaries import require_binaries
from flows.context import current
from flows.runtime import granularity
from flows.scheduled import hook_slot
from flows.snapshot import snapshot_flow
from tasks import work

POLL_SECONDS = 0.2


@task(name="snapshot", task_run_name="{url}", retries=2, retry_delay_seconds=2,
      cache_policy=NO_CACHE, persist_result=False)
async def archive_snapshot(url: str, snapshot_id: str, slot: str) -> dict[str, int]:
    """One Snapshot as one task run: its hooks' ArchiveResults live in DuckDB only.

    The default granularity (ARCHIVEFLOW_PREFECT_GRANULARITY=snapshot): a task run per
    ArchiveResult or a subflow per Snapshot cost 2-8x the hooks themselves on the SQLite
    Prefect server (bench/PREFECT.md); one task run per Snapshot keeps Prefect's share small.
    Retries: a crash of the snapshot's own work (not a failed hook) runs it again; results
    already final are kept (prepare_snapshot resumes).
    """
    cur = current()
    crawl, snapshot, plan = cur.slots[slot]
    cur.slots[slot] = (crawl, snapshot, None)  # a retry prepares again (resume rules)
    return await asyncio.to_thread(work.run_snapshot, cur.rt, cur.recorder, crawl, snapshot,
                                   hook_slot, plan=plan, wait=False)


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
    running: dict[asyncio.Task[dict[str, int]], str] = {}
    while True:
        plans = await asyncio.to_thread(feed.take, concurrency - len(running), not running)
        for plan in plans:
            snap = plan.snapshot
            slot = f"{crawl_id}:{snap['id']}"
            cur.slots[slot] = (crawl, snap, plan)
            running[asyncio.create_task(
                snapshot_flow(snap["url"], snap["id"], crawl_id, slot) if per_result
                else archive_snapshot(snap["url"], snap["id"], slot))] = slot
        if not running:
            if await asyncio.to_thread(feed.done):
                break
            await asyncio.sleep(POLL_SECONDS)  # queued rows not due yet (retry backoff)
            continue
        done, _ = await asyncio.wait(running, timeout=POLL_SECONDS,
                                     return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            slot = running.pop(t)
            cur.slots.pop(slot, None)
            t.result()  # a snapshot that crashed past its retries stops the crawl loudly
    n = feed.started
    sealed = await asyncio.to_thread(work.finish_crawl, rt, crawl, start.background)
    return {"crawl_id": crawl_id, "status": sealed["status"], "snapshots": n,
            "seeded": start.created, "refused": start.refused, "failures": start.failures}
