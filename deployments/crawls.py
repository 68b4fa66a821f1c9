"""Recurring crawls: `<data>/schedules.json` and the Prefect deployments built from it.

A schedule is a name, the `archive` flow's parameters and an interval or a cron string.
It lives in two places, on purpose:

* ``<data>/schedules.json`` (name → parameters + schedule) is the data folder's own copy:
  `schedule list/remove` and `serve` work from it alone, and it survives a new or wiped
  Prefect database (serve registers every schedule again);
* the Prefect API holds one deployment per schedule, ``archive/<name>``, with that
  schedule and those parameters, so runs, states, retries and logs show in the UI.

A deployment registered by `schedule add` is **paused** until `archiveflow serve` serves
it (serve un-pauses it, and Prefect pauses it again when serve stops): a schedule nobody
serves never piles up late runs.

A run accepts **only the parameters its schedule defines**. Anyone who can call the API can
create a flow run of a deployment with parameters of their own (`config: {"PLUGINS_PATH":
...}` would run their hooks as the owner), and Prefect's parameter-schema check can be
switched off per run by the caller. So `serve` compares each run's parameters with the ones
it registered from schedules.json (:func:`parameter_changes`) before it starts the run, and a
run that differs ends Failed with the differing names in its state message.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast
from uuid import UUID

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

from archiveflow.tasks.schedules import (  # re-exported: the CLI and tests use them here
    FLOW_NAME,
    SCHEDULES_FILE,
    RunRefused,
    Schedule,
    ScheduleError,
    check_cron,
    check_deployed_run,
    default_name,
    full_name,
    load_schedules,
    parameter_changes,
    parse_every,
    refusal,
    save_schedules,
    schedules_path,
)

__all__ = ["FLOW_NAME", "SCHEDULES_FILE", "TAGS", "RunRefused", "Schedule", "ScheduleError",
           "check_cron", "check_deployed_run", "crawl_deployment", "default_name",
           "deployment_info", "full_name", "load_schedules", "parameter_changes",
           "parse_every", "refusal", "register", "save_schedules", "schedules_path",
           "trigger", "unregister"]

TAGS: Final[list[str]] = ["archiveflow", "crawl"]


# --- deployments -----------------------------------------------------------------------

def crawl_deployment(schedule: Schedule, data_dir: Path, *, paused: bool = False
                     ) -> RunnerDeployment:
    """The Prefect deployment `archive/<name>` of one schedule (not yet registered)."""
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
    from prefect.types.entrypoint import EntrypointType

    from archiveflow.flows.scheduled import archive

    params = {**schedule.parameters, "schedule": schedule.name,
              "data_dir": str(Path(data_dir).resolve())}
    sched: CronSchedule | IntervalSchedule
    if schedule.cron is not None:
        sched = CronSchedule(cron=schedule.cron, timezone=schedule.timezone or "UTC")
    else:
        # Anchored at the schedule's creation, so restarting serve does not shift the times.
        sched = IntervalSchedule(interval=timedelta(seconds=int(schedule.every_seconds or 0)),
                                 anchor_date=datetime.fromisoformat(schedule.created_at))
    deployment = archive.to_deployment(  # type: ignore[call-arg]
        name=schedule.name,
        parameters=params,
        schedules=[sched],
        paused=paused,
        description=f"Recurring crawl of {schedule.parameters.get('seeds', '')!s:.200} "
                    f"({schedule.describe()}) into {params['data_dir']}.",
        tags=[*TAGS, f"schedule:{schedule.name}"],
        # A module path, not a file path: the run subprocess imports `flows.scheduled`
        # whatever the working directory of `serve` is.
        entrypoint_type=EntrypointType.MODULE_PATH,
        _sync=True,  # a RunnerDeployment even when called from async code
    )
    return cast("RunnerDeployment", deployment)


async def register(schedule: Schedule, data_dir: Path, *, paused: bool) -> UUID:
    """Create or update the schedule's deployment in the Prefect API."""
    return await crawl_deployment(schedule, data_dir, paused=paused).aapply()


async def unregister(name: str) -> bool:
    """Delete the schedule's deployment (and its scheduled runs). False if there was none."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            dep = await client.read_deployment_by_name(full_name(name))
        except ObjectNotFound:
            return False
        await client.delete_deployment(dep.id)
        return True


async def deployment_info(names: list[str]) -> dict[str, dict[str, Any]]:
    """For each registered schedule: deployment id, paused, next scheduled run."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound

    out: dict[str, dict[str, Any]] = {}
    async with get_client() as client:
        for name in names:
            try:
                dep = await client.read_deployment_by_name(full_name(name))
            except ObjectNotFound:
                continue
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=1)
            out[name] = {"id": str(dep.id), "paused": dep.paused,
                         "next_run": runs[0].expected_start_time if runs else None}
    return out


async def trigger(name: str) -> UUID:
    """Create a flow run of the schedule's deployment now (a served deployment runs it)."""
    from prefect.deployments.flow_runs import arun_deployment

    run = await arun_deployment(full_name(name), timeout=0, as_subflow=False)
    return run.id
