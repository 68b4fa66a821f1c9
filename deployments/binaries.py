"""The per-machine deployment of `install_binaries`, served by `archiveflow serve`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast

from archiveflow.flows.binaries import install_binaries
from archiveflow.tasks.machine import this_machine

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

DEFAULT_INTERVAL: Final[timedelta] = timedelta(days=1)


def deployment_name(hostname: str | None = None) -> str:
    """`install-binaries-<hostname>`: one deployment per machine."""
    return f"install-binaries-{hostname or this_machine().hostname}"


def binaries_deployment(
    data_dir: Path | str,
    *,
    interval: timedelta | float | None = None,
    cron: str | None = None,
    plugins: list[str] | None = None,
) -> RunnerDeployment:
    """A deployment that runs `install_binaries` for this machine on a schedule.

    `interval` (seconds or a timedelta) or `cron`, not both; neither means once a day.
    Failed binaries are retried on every run; installed, unchanged ones start no process.
    """
    if interval is not None and cron is not None:
        raise ValueError("give interval or cron, not both")
    machine = this_machine()
    schedule = {"cron": cron} if cron is not None else {
        "interval": interval if interval is not None else DEFAULT_INTERVAL}
    # `_sync=True`: a RunnerDeployment even when called from async code (Prefect otherwise
    # hands back a coroutine there).
    deployment = install_binaries.to_deployment(  # type: ignore[call-arg]
        name=deployment_name(machine.hostname),
        parameters={"data_dir": str(Path(data_dir).resolve()), "plugins": plugins},
        description=f"Install the binaries archiveflow's plugins need on {machine.hostname} "
                    f"(machine {machine.id}).",
        tags=["archiveflow", "binaries", f"machine:{machine.id}"],
        _sync=True,
        **schedule,  # type: ignore[arg-type]
    )
    return cast("RunnerDeployment", deployment)
