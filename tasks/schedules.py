"""A data folder's recurring crawls: the schedules in `<data>/schedules.json`, and the check
every run of their deployments must pass.

This is the Prefect-free half of deployments/crawls.py (which builds and registers the
deployments): the crawl flow that runs a schedule (flows/scheduled.py) checks its own run
against it, and flows/ may not import deployments/.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, Field, field_validator, model_validator

SCHEDULES_FILE: Final[str] = "schedules.json"
FLOW_NAME: Final[str] = "archive"  # flows.scheduled.archive's name (imported lazily: Prefect)
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
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # owner only: see below
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.chmod(tmp, 0o600)  # an old tmp file of another mode
    tmp.replace(path)


def full_name(name: str) -> str:
    """The deployment's name in the API: `archive/<name>`."""
    return f"{FLOW_NAME}/{name}"


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


def refusal(deployment: str, changed: list[str], by: str = "archiveflow serve") -> str:
    """The state message of a run refused for its parameters."""
    shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
    return (f"refused by {by}: parameters differ from deployment {deployment}'s "
            f"({shown}); a scheduled crawl runs only with its schedule's parameters: change "
            "them with `archiveflow schedule add --replace`")


class RunRefused(RuntimeError):
    """A deployment's run whose parameters are not its schedule's (or whose data folder is
    not the running user's own)."""


def _owned_by_me(path: Path, *, writable_mask: int) -> str | None:
    """Why `path` cannot be trusted as this user's own, or None."""
    try:
        st = path.stat()
    except OSError as e:
        return f"{path}: {e.strerror}"
    if st.st_uid != os.geteuid():
        return f"{path} belongs to uid {st.st_uid}, not to this user ({os.geteuid()})"
    if st.st_mode & writable_mask:
        return f"{path} is writable by other accounts (mode {st.st_mode & 0o777:o})"
    return None


def check_deployed_run(deployment: str, parameters: dict[str, Any]) -> None:
    """Raise RunRefused unless a run of `archive/<deployment>` has exactly the parameters its
    schedule has in the schedules.json of the data folder the run names, and that folder and
    file are this user's own (not writable by others).

    `serve` checks this before a run starts (deployments/runner.py); this is the same check
    where every run executes, so a run picked up by a Prefect worker, or started with
    `python -m prefect.engine`, is held to it as well. The data folder comes from the run's
    own parameters, which anyone with API access can set: an attacker's folder fails the
    owner check, since no other account can create a folder owned by this user."""
    name = deployment.split("/", 1)[-1]
    full = full_name(name)
    raw = parameters.get("data_dir")
    if not raw:
        raise RunRefused(refusal(full, ["data_dir"], by="archiveflow"))
    folder = Path(str(raw))
    # The folder: ours (a file another account renames into it is theirs, caught below).
    # schedules.json: ours and writable by nobody else (save_schedules writes it 0600).
    for path, mask in ((folder, 0o002), (schedules_path(folder), 0o022)):
        why = _owned_by_me(path, writable_mask=mask)
        if why:
            raise RunRefused(f"refused by archiveflow: deployment {full}'s run names data "
                             f"folder {folder}, which cannot be trusted: {why}")
    schedule = load_schedules(folder).get(name)
    if schedule is None:
        raise RunRefused(f"refused by archiveflow: {schedules_path(folder)} has no schedule "
                         f"{name!r}; a deployment runs only a schedule of its data folder")
    expected = {**schedule.parameters, "schedule": name,
                "data_dir": str(folder.resolve())}
    changed = parameter_changes(expected, parameters)
    if changed:
        raise RunRefused(refusal(full, changed, by="archiveflow"))
