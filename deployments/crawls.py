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

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast
from uuid import UUID

from pydantic import BaseModel, Field, field_validator, model_validator

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

SCHEDULES_FILE: Final[str] = "schedules.json"
FLOW_NAME: Final[str] = "archive"  # flows.scheduled.archive's name (imported lazily: Prefect)
TAGS: Final[list[str]] = ["archiveflow", "crawl"]
_UNITS: Final[dict[str, int]] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


class ScheduleError(ValueError):
    """A schedule that cannot be made: bad name, interval, cron, or a duplicate."""


def parse_every(text: str) -> int:
    """`90s`, `30m`, `12h`, `1d`, `2w` → seconds (at least 60)."""
    m = _EVERY.match(text)
    if not m:
        raise ScheduleError(f"--every {text!r}: write a number and a unit, e.g. 30m, 12h, 1d, 1w")
    seconds = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if seconds < 60:
        raise ScheduleError(f"--every {text!r}: at least one minute")
    return seconds


def check_cron(expr: str) -> str:
    """A 5-field cron string, validated the way Prefect will read it."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=expr)
    except ValueError as e:
        raise ScheduleError(f"--cron {expr!r} is not a valid cron string: {e}") from None
    return expr.strip()


def default_name(seeds: str) -> str:
    """A schedule name from its seeds: host and last path part, e.g. `blog.example.com-feed.xml`."""
    m = re.search(r"[a-z][a-z0-9+.-]*://[^\s\"']+", seeds, flags=re.IGNORECASE)
    first = m.group(0) if m else (seeds.strip().splitlines() or ["crawl"])[0]
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", first, flags=re.IGNORECASE)
    parts = [p for p in re.split(r"[/?#]+", text) if p]
    if not parts:
        return "crawl"
    pick = parts[:1] + parts[-1:] if len(parts) > 1 else parts
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(pick)).strip("-._")
    return (name or "crawl")[:80]


class Schedule(BaseModel):
    """One recurring crawl: the `archive` flow's parameters and when to run it."""

    name: str = Field(description="Schedule name; the deployment is `archive/<name>`.")
    every_seconds: int | None = Field(default=None, description="Interval between runs.")
    cron: str | None = Field(default=None, description="Cron string (5 fields), instead of an "
                             "interval.")
    timezone: str | None = Field(default=None, description="Time zone of the cron string "
                                 "(default UTC).")
    parameters: dict[str, Any] = Field(description="Parameters of the `archive` flow run.")
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(),
                            description="When the schedule was added (UTC, ISO 8601).")

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"schedule name {v!r}: use letters, digits, '.', '_' or '-' "
                             "(at most 80)")
        return v

    @model_validator(mode="after")
    def _one_schedule(self) -> Schedule:
        if (self.every_seconds is None) == (self.cron is None):
            raise ValueError("give an interval (--every) or a cron string (--cron), not both")
        return self

    def describe(self) -> str:
        """`every 1d` / `cron 0 3 * * *` for tables and messages."""
        if self.cron is not None:
            return f"cron {self.cron}" + (f" ({self.timezone})" if self.timezone else "")
        secs = int(self.every_seconds or 0)
        for unit, n in sorted(_UNITS.items(), key=lambda kv: -kv[1]):
            if secs % n == 0:
                return f"every {secs // n}{unit}"
        return f"every {secs}s"


# --- the data folder's copy ------------------------------------------------------------

def schedules_path(data_dir: Path) -> Path:
    return Path(data_dir) / SCHEDULES_FILE


def load_schedules(data_dir: Path) -> dict[str, Schedule]:
    """Every schedule of the data folder by name (empty when there is no file)."""
    path = schedules_path(data_dir)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise ScheduleError(f"{path}: not valid JSON ({e})") from None
    return {name: Schedule.model_validate({**spec, "name": name}) for name, spec in raw.items()}


def save_schedules(data_dir: Path, schedules: dict[str, Schedule]) -> None:
    """Write schedules.json atomically (a crash leaves the old or the new file)."""
    path = schedules_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {n: s.model_dump(exclude={"name"}) for n, s in sorted(schedules.items())}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


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


def full_name(name: str) -> str:
    """The deployment's name in the API: `archive/<name>`."""
    return f"{FLOW_NAME}/{name}"


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


def parameter_changes(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Names of the parameters (``config.KEY`` inside ``config``) whose values differ between
    a deployment's registered parameters and a run's; empty when the run is the schedule's."""
    want = json.loads(json.dumps(expected, default=str))  # as the API stores them
    have = json.loads(json.dumps(got, default=str))
    changed = []
    for key in sorted(set(want) | set(have)):
        a, b = want.get(key), have.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            changed += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            changed.append(key)
    return changed


def refusal(deployment: str, changed: list[str]) -> str:
    """The state message of a run refused for its parameters."""
    shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
    return (f"refused by archiveflow serve: parameters differ from deployment {deployment}'s "
            f"({shown}); a scheduled crawl runs only with its schedule's parameters: change "
            "them with `archiveflow schedule add --replace`")


async def trigger(name: str) -> UUID:
    """Create a flow run of the schedule's deployment now (a served deployment runs it)."""
    from prefect.deployments.flow_runs import arun_deployment

    run = await arun_deployment(full_name(name), timeout=0, as_subflow=False)
    return run.id
