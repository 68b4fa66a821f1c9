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

Retries (tasks/results.run_retrying) show as Prefect's own engine shows them: each earlier
attempt is a Running (or Retrying) state ending in AwaitingRetry with "attempt k of n failed:
<error>", the run's `run_count` is the number of attempts, and its final state's message
starts "attempt k of n" when there was more than one.

Cost, measured here: about 1 ms of client CPU per ArchiveResult, off the hooks' path (the
Snapshot's task run does it after its hooks finished).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect.client.schemas.objects import StateDetails, TaskRun, TaskRunResult
from prefect.states import AwaitingRetry, Completed, Failed, Retrying, Running
from prefect.utilities.engine import emit_task_run_state_change_event

from archiveflow.tasks.hooks import HookOutcome
from archiveflow.tasks.plan import ResultDone
from archiveflow.tasks.results import RetriedResult

ERROR_MAX = 2000  # characters of a hook's error kept in the state message


def enabled() -> bool:
    """ARCHIVEFLOW_PREFECT_RESULT_RUNS=0 turns the reporting off."""
    return os.environ.get("ARCHIVEFLOW_PREFECT_RESULT_RUNS", "1").strip().lower() not in (
        "0", "false", "no", "off")


def _final_state(r: ResultDone, when: datetime, details: StateDetails, prefix: str = ""
                 ) -> Any:
    o = r.outcome
    if o.status == "failed":
        return Failed(message=(prefix + (o.error or "failed"))[:ERROR_MAX], timestamp=when,
                      state_details=details)
    # succeeded / noresults / skipped all completed; the state name keeps the difference.
    name = {"succeeded": "Completed", "noresults": "NoResults", "skipped": "Skipped"}.get(
        o.status, "Completed")
    message = (prefix + (o.output_str or ""))[:ERROR_MAX] or None
    return Completed(name=name, message=message, timestamp=when, state_details=details)


def _attempt_states(earlier: list[HookOutcome], last_start: datetime, limit: int,
                    details: StateDetails) -> list[tuple[int, Any]]:
    """(run_count, state) of every earlier attempt, in order: Running or Retrying at its
    start, AwaitingRetry (until the next attempt's start) at its end."""
    states: list[tuple[int, Any]] = []
    if not earlier:
        return states
    starts = [o.started_at for o in earlier[1:]] + [last_start]
    for k, (o, next_start) in enumerate(zip(earlier, starts, strict=True), start=1):
        end = o.ended_at or next_start or last_start
        begin = o.started_at or end
        running = Running if k == 1 else Retrying
        states.append((k, running(timestamp=begin, state_details=details.model_copy())))
        message = f"attempt {k} of {limit} failed: {o.error or 'failed'}"[:ERROR_MAX]
        states.append((k, AwaitingRetry(scheduled_time=next_start or end, message=message,
                                        timestamp=end, state_details=details.model_copy())))
    return states


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
        earlier = r.earlier if isinstance(r, RetriedResult) else []
        count = len(earlier) + 1
        limit = r.limit if isinstance(r, RetriedResult) else 1
        final = _final_state(r, end, details,
                             f"attempt {count} of {limit}: " if count > 1 else "")
        running: Any = (Retrying if earlier else Running)(timestamp=start,
                                                           state_details=details.model_copy())
        changes = [*_attempt_states(earlier, start, limit, details), (count, running),
                   (count, final)]
        first_start = changes[0][1].timestamp
        # One event per state change; a run without retries sends only its last (from
        # Running), as one event per ArchiveResult is what this reporting costs. The server's
        # task-run recorder keeps every state, and the run as of the latest.
        steps = list(zip([None, *[c[1] for c in changes]], changes, strict=False))
        fields: dict[str, Any] = {
            "id": run_id, "name": r.hook.plugin, "flow_run_id": flow_run_id,
            "task_key": f"archiveresult-{r.hook.plugin}", "dynamic_key": r.ar_id,
            "tags": ["archiveresult", r.hook.plugin], "task_inputs": parents,
            "expected_start_time": first_start, "start_time": first_start,
            "created": first_start, "updated": end,
        }
        for before, (run_count, state) in steps if earlier else steps[-1:]:
            done = state is final
            task_run = TaskRun(**{
                **fields, "run_count": run_count, "state_id": state.id,
                "state_type": state.type, "state_name": state.name, "state": state,
                "end_time": end if done else None,
                "total_run_time": end - first_start if done else timedelta(0)})
            emit_task_run_state_change_event(task_run, before, state)
        n += 1
    return n
