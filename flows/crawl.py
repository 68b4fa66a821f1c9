"""The `crawl` flow: seeds → Snapshots, run as nested `snapshot` flows, bounded, then seal."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow

from flows.context import current
from flows.snapshot import snapshot_flow
from store import snapshots as snapshot_store
from tasks import work

POLL_SECONDS = 0.2


@flow(name="crawl", flow_run_name="crawl {crawl_id}", persist_result=False,
      validate_parameters=False)
async def crawl_flow(crawl_id: str, concurrency: int = 4, data_dir: str | None = None
                     ) -> dict[str, Any]:
    """Claim the crawl, run its on_Crawl hooks, archive its snapshots, clean up, seal."""
    cur = current(data_dir)
    rt = cur.rt
    crawl = await asyncio.to_thread(work.claim_crawl, rt, crawl_id)
    start = await asyncio.to_thread(work.run_crawl_hooks, rt, crawl)
    running: set[asyncio.Task[dict[str, int]]] = set()
    n = 0
    while True:
        free = max(0, concurrency - len(running))
        claimed = []
        if free:
            claimed = await asyncio.to_thread(
                snapshot_store.claim_snapshots, rt.store.cursor(), crawl_id,
                limit=free, lease=work.SNAPSHOT_LEASE)
        for snap in claimed:
            n += 1
            slot = f"{crawl_id}:{snap['id']}"
            cur.slots[slot] = (crawl, snap)
            running.add(asyncio.create_task(
                snapshot_flow(snap["url"], snap["id"], crawl_id, slot)))
        if not running:
            if await asyncio.to_thread(snapshot_store.is_crawl_done, rt.store.cursor(),
                                       crawl_id):
                break
            await asyncio.sleep(POLL_SECONDS)  # queued rows not due yet (retry backoff)
            continue
        done, running = await asyncio.wait(running, timeout=POLL_SECONDS,
                                           return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            t.result()  # a snapshot flow that crashed stops the crawl loudly
    sealed = await asyncio.to_thread(work.finish_crawl, rt, crawl, start.background)
    return {"crawl_id": crawl_id, "status": sealed["status"], "snapshots": n,
            "seeded": start.created, "refused": start.refused, "failures": start.failures}
