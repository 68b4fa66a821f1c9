"""A Snapshot in Prefect: one task run (default) or one subflow run with a task run per
ArchiveResult (ARCHIVEFLOW_PREFECT_GRANULARITY=task). Both run the one hook walk,
tasks/snapshots.run, in the crawl's thread pool, holding the plugins' concurrency slots
(flows/limits.WalkSlots); they differ only in its per-hook callback.

Why a task run per Snapshot by default: a task run per ArchiveResult or a subflow per
Snapshot cost 2-8x the hooks themselves on the SQLite Prefect server (bench/PREFECT.md);
each ArchiveResult is still reported as a task run under its Snapshot's
(flows/result_runs.py), from its outcome, off the hooks' path.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from archiveflow.flows import result_runs
from archiveflow.flows.context import SnapshotRun, current
from archiveflow.flows.head_start import start_walk
from archiveflow.tasks import results
from archiveflow.tasks.plan import PlanItem, ResultDone, SnapshotPlan, count_results
from archiveflow.tasks.snapshots import RunForeground


def start(run: SnapshotRun, run_foreground: RunForeground | None = None, *,
          wait: bool = False) -> Future[list[ResultDone]]:
    """Start the snapshot's hook walk in the crawl's pool, in the caller's Prefect context
    (the concurrency slots and any per-hook task runs talk to Prefect from there)."""
    return start_walk(run, run_foreground, wait=wait)


@task(name="snapshot", task_run_name="{url}", retries=2, retry_delay_seconds=2,
      cache_policy=NO_CACHE, persist_result=False)
async def archive_snapshot(url: str, snapshot_id: str) -> dict[str, int]:
    """One Snapshot as one task run: its ArchiveResults live in DuckDB, and are reported
    to Prefect as task runs under this one.

    The crawl loop started the snapshot's hooks the moment a slot was free; this task run
    follows that work (Running while the hooks run, ending with their outcome), so the
    ~40 ms the task engine takes per run never delays a hook. A retry (the snapshot's own
    work crashed, not a hook failing) runs it again; results already final are kept.
    """
    run = current().snapshot_runs[snapshot_id]
    fut, run.future = run.future, None
    if fut is None:  # a retry
        fut = start(run)
    done = await asyncio.wrap_future(fut)
    if result_runs.enabled():
        ctx = TaskRunContext.get()
        if ctx is not None:
            result_runs.report(done, flow_run_id=ctx.task_run.flow_run_id,
                               parent_task_run_id=ctx.task_run.id)
    return count_results(done)


def _is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only when the hook could not start for a passing reason."""
    try:
        state.result()
    except results.TransientHookError:
        return True
    except BaseException:  # noqa: BLE001 - anything else is terminal
        return False
    return False


@task(name="archiveresult", task_run_name="{plugin}", retries=2, retry_delay_seconds=1,
      retry_condition_fn=_is_transient, cache_policy=NO_CACHE, persist_result=False)
def archive_result(plugin: str, url: str, snapshot_id: str, archiveresult_id: str
                   ) -> ResultDone:
    """Run one foreground hook of a snapshot: the ArchiveResult's own run, as a task run
    (its hook's retries for passing failures, tasks/results.run_retrying, happen inside)."""
    plan = current().snapshot_runs[snapshot_id].plan
    return results.run_retrying(plan, plan.item(archiveresult_id))


def _result_task(plan: SnapshotPlan, item: PlanItem) -> ResultDone:
    """The per-hook callback of the task granularity (called in the walk's thread, inside
    the snapshot's subflow context): the ArchiveResult as a Prefect task run."""
    s = plan.snapshot
    try:
        return archive_result(item.hook.plugin, s["url"], s["id"], item.ar_id)
    except Exception as e:  # retries exhausted or the task itself broke
        return ResultDone(item.ar_id, item.hook, results.failed_outcome(str(e)))


@flow(name="snapshot", flow_run_name="{url}", persist_result=False, validate_parameters=False)
async def snapshot_flow(url: str, snapshot_id: str, crawl_id: str) -> dict[str, int]:
    """One Snapshot as a subflow run: every foreground hook a task run, recorded, sealed."""
    run = current().snapshot_runs[snapshot_id]
    done = await asyncio.wrap_future(start(run, _result_task, wait=True))
    return count_results(done)
