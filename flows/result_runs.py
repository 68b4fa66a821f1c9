"""ArchiveResults as Prefect task runs, recorded from their outcomes (not run by Prefect).

A hook run is an ArchiveResult: archiveflow's own runtime spawns, supervises and records it
(tasks/). Running each one through Prefect's task engine costs ~15 ms of CPU per run plus the
server's recording, 2-8x a no-op hook (bench/PREFECT.md). So the default granularity runs a
Snapshot as one task run and, once its hooks are done, reports each ArchiveResult to Prefect
the way the task engine itself does in Prefect 3: as a task-run state event, which the
server's task-run recorder turns into a task run. In the UI each shows up under its Snapshot's
task run (`__parents__`), named after its plugin, with its real start and end times, its state
(Completed, or Failed with the hook's error) and tags `archiveresult` and the plugin name.
Its task run id IS the ArchiveResult id: `SELECT * FROM archiveresult WHERE id = '<id>'`.

Cost, measured here: about 1 ms of client CPU per ArchiveResult, off the hooks' path (the
Snapshot's task run does it after its hooks finished).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect.client.schemas.objects import StateDetails, TaskRun, TaskRunResult
from prefect.states import Completed, Failed, Running
from prefect.utilities.engine import emit_task_run_state_change_event

from archiveflow.tasks.plan import ResultDone

ERROR_MAX = 2000  # characters of a hook's error kept in the state message


def enabled() -> bool:
    """ARCHIVEFLOW_PREFECT_RESULT_RUNS=0 turns the reporting off."""
    return os.environ.get("ARCHIVEFLOW_PREFECT_RESULT_RUNS", "1").strip().lower() not in (
        "0", "false", "no", "off")


def _final_state(r: ResultDone, when: datetime, details: StateDetails) -> Any:
    o = r.outcome
    if o.status == "failed":
        return Failed(message=(o.error or "failed")[:ERROR_MAX], timestamp=when,
                      state_details=details)
    # succeeded / noresults / skipped all completed; the state name keeps the difference.
    name = {"succeeded": "Completed", "noresults": "NoResults", "skipped": "Skipped"}.get(
        o.status, "Completed")
    message = (o.output_str or "")[:ERROR_MAX] or None
    return Completed(name=name, message=message, timestamp=when, state_details=details)


def report(results: list[ResultDone], *, flow_run_id: UUID | None,
           parent_task_run_id: UUID | None) -> int:
    """Emit one task-run event per ArchiveResult; returns how many were emitted."""
    n = 0
    parents = {"__parents__": [TaskRunResult(id=parent_task_run_id)]} if parent_task_run_id \
        else {}
    for r in results:
        o = r.outcome
        try:
            run_id = UUID(r.ar_id)
        except ValueError:
            continue
        end = o.ended_at or datetime.now(UTC)
        start = o.started_at or end
        details = StateDetails(task_run_id=run_id, flow_run_id=flow_run_id)
        final = _final_state(r, end, details)
        running: Any = Running(timestamp=start, state_details=details)
        fields: dict[str, Any] = {
            "id": run_id, "name": r.hook.plugin, "flow_run_id": flow_run_id,
            "task_key": f"archiveresult-{r.hook.plugin}", "dynamic_key": r.ar_id,
            "tags": ["archiveresult", r.hook.plugin], "task_inputs": parents,
            "expected_start_time": start, "start_time": start, "end_time": end,
            "total_run_time": end - start, "run_count": 1, "state_id": final.id,
            "state_type": final.type, "state_name": final.name, "state": final,
            "created": start, "updated": end,
        }
        task_run = TaskRun(**fields)
        emit_task_run_state_change_event(task_run, running, final)
        n += 1
    return n
