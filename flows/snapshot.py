"""The `snapshot` flow: one Snapshot's hooks, each ArchiveResult a Prefect task.

Used with ARCHIVEFLOW_PREFECT_GRANULARITY=task, which shows every hook run in the Prefect UI
at a cost of ~0.5 s per subflow and ~40 ms + the server's recording per task (bench/
PREFECT.md); the default runs each Snapshot as one task (flows/crawl.py: archive_snapshot).
"""

from __future__ import annotations

import asyncio
from typing import Any

from archiveflow.flows.context import current
from archiveflow.tasks import work
from archiveflow.tasks.hooks import HookRun
from archiveflow.tasks.recorder import ResultDone
from prefect import flow, task
from prefect.cache_policies import NO_CACHE


def _is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only when the hook could not start for a passing reason."""
    try:
        state.result()
    except work.TransientHookError:
        return True
    except BaseException:  # noqa: BLE001 - anything else is terminal
        return False
    return False


@task(name="archiveresult", task_run_name="{plugin}", retries=2, retry_delay_seconds=1,
      retry_condition_fn=_is_transient, cache_policy=NO_CACHE, persist_result=False)
async def archive_result(plugin: str, url: str, slot: str) -> str:
    """Run one foreground hook of a snapshot (the ArchiveResult's work)."""
    cur = current()
    plan, item = cur.slots[slot]
    done: ResultDone = await asyncio.to_thread(work.run_result, cur.rt, plan, item)
    cur.slots[slot] = done
    return done.outcome.status


@flow(name="snapshot", flow_run_name="{url}", persist_result=False, validate_parameters=False)
async def snapshot_flow(url: str, snapshot_id: str, crawl_id: str, slot: str) -> dict[str, int]:
    """Run every enabled on_Snapshot hook of one claimed snapshot, record, seal."""
    cur = current()
    rt = cur.rt
    crawl, snapshot, plan = cur.slots.pop(slot)
    if plan is None:
        plan = await asyncio.to_thread(work.prepare_snapshot, rt, crawl, snapshot)
    results: list[ResultDone] = []
    background: dict[str, HookRun] = {}
    for i, item in enumerate(plan.items):
        if item.hook.is_background:
            started = await asyncio.to_thread(work.start_background, rt, plan, item)
            if isinstance(started, ResultDone):
                results.append(started)
            else:
                background[item.ar_id] = started
            continue
        key = f"{slot}:{i}"
        cur.slots[key] = (plan, item)
        try:
            await archive_result(item.hook.plugin, url, key)
            results.append(cur.slots[key])
        except Exception as e:  # retries exhausted or the task itself broke
            results.append(ResultDone(item.ar_id, item.hook, work.failed_outcome(str(e))))
        finally:
            cur.slots.pop(key, None)
    results.extend(await asyncio.to_thread(work.finish_background, rt, plan, background))
    await asyncio.to_thread(work.record_snapshot, rt, cur.recorder, plan, results)
    return work.count_results([*plan.done, *results])
