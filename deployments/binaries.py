"""The per-machine deployment of `install_binaries`: `install-binaries-<machine id>`.

Served by `archiveflow serve` (one machine) and by `archiveflow worker` (each machine of a
shared index, docs/scaling.md). A served deployment is this machine's own queue: Prefect
hands its runs only to the Runner that registered it, which runs in a process on this
machine, so a run (scheduled, started at a worker's start, or asked for from the UI or with
`prefect deployment run`) always installs into this machine's lib folder and records this
Machine's Binary rows.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast
from uuid import UUID

from archiveflow.flows.binaries import install_binaries
from archiveflow.tasks.machine import this_machine

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

    from archiveflow.deployments.runner import ServeRunner

DEFAULT_INTERVAL: Final[timedelta] = timedelta(days=1)
# s between the worker's Runner's looks for runs of its deployment (a run asked for from the
# UI starts within this); the start-up run is created before the first look.
RUNNER_POLL: Final[float] = 5.0
# s the start-up run may take before the worker goes on without it (an install may download)
FIRST_RUN_TIMEOUT: Final[float] = 1800.0
FINAL_STATES: Final[frozenset[str]] = frozenset(
    {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


def deployment_name(machine_id: str | None = None) -> str:
    """`install-binaries-<machine id>`: one deployment per Machine, by its id (two workers
    on one host with their own ARCHIVEFLOW_MACHINE_ID are two machines)."""
    return f"install-binaries-{machine_id or this_machine().id}"


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
        name=deployment_name(machine.id),
        parameters={"data_dir": str(Path(data_dir).resolve()), "plugins": plugins},
        description=f"Install the binaries archiveflow's plugins need on machine {machine.id} "
                    f"({machine.hostname}).",
        tags=["archiveflow", "binaries", f"machine:{machine.id}"],
        _sync=True,
        **schedule,  # type: ignore[arg-type]
    )
    return cast("RunnerDeployment", deployment)


@dataclass(frozen=True)
class RunEnd:
    """How a flow run of the install deployment ended."""

    id: UUID
    name: str
    state: str  # COMPLETED, FAILED, CRASHED, CANCELLED, or TIMEOUT (still running)
    message: str
    seconds: float


class MachineInstaller:
    """This machine's install deployment, served from a thread of `archiveflow worker`.

    `start()` registers the deployment, creates its start-up flow run and starts a Prefect
    Runner (ours: it refuses runs whose parameters differ from the registered ones,
    deployments/runner.py) that executes that run and every later one (its schedule, the
    UI, `prefect deployment run`) in a subprocess, one at a time. `wait_first()` waits
    for the start-up run to end; `stop()` stops the Runner (it cancels a run in flight and
    pauses the schedule: no runs pile up for a machine that is gone).
    """

    def __init__(self, data_dir: Path, *, interval: timedelta | float | None = None,
                 poll: float = RUNNER_POLL, say: Callable[[str], None] = print) -> None:
        self.data_dir = data_dir
        self.interval = interval
        self.poll = poll
        self.say = say
        self.machine = this_machine()
        self.name = deployment_name(self.machine.id)
        self.deployment_id: UUID | None = None
        self.first_run_id: UUID | None = None
        self.error: BaseException | None = None
        self._runner: ServeRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="archiveflow-install-runner",
                                        daemon=True)

    @property
    def full_name(self) -> str:
        return f"install_binaries/{self.name}"

    def start(self, timeout: float = 120.0) -> None:
        """Register, create the start-up run, start serving; raises what went wrong."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"registering deployment {self.full_name} took over "
                               f"{timeout:.0f}s")
        if self.error is not None:
            raise self.error

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # noqa: BLE001 - reported by start() or stop()
            self.error = self.error or e
            self._ready.set()

    async def _serve(self) -> None:
        from prefect.client.orchestration import get_client

        from archiveflow.deployments.runner import ServeRunner

        runner = ServeRunner(name=f"archiveflow-worker-{self.machine.id}-{os.getpid()}",
                             limit=1, query_seconds=self.poll, pause_on_shutdown=True,
                             on_refused=self.say)
        self.deployment_id = await runner.serve_deployment(
            binaries_deployment(self.data_dir, interval=self.interval))
        async with get_client() as client:
            run = await client.create_flow_run_from_deployment(
                self.deployment_id, tags=["archiveflow", "binaries", "worker-start"])
        self.first_run_id = run.id
        self._runner = runner
        self._ready.set()
        await runner.start()

    def wait_first(self, stop: threading.Event, timeout: float = FIRST_RUN_TIMEOUT) -> RunEnd:
        """Wait for the start-up run to end (or `stop`, or `timeout`)."""
        from prefect.client.orchestration import get_client

        assert self.first_run_id is not None
        t0 = time.monotonic()
        deadline = t0 + timeout
        with get_client(sync_client=True) as client:
            while True:
                run = client.read_flow_run(self.first_run_id)
                state = run.state
                kind = state.type.value if state is not None else "SCHEDULED"
                done = kind in FINAL_STATES
                if done or stop.is_set() or time.monotonic() >= deadline or \
                        not self._thread.is_alive():
                    if not done:
                        kind = "TIMEOUT" if not stop.is_set() else "STOPPED"
                    return RunEnd(run.id, run.name, kind,
                                  (state.message or "") if state is not None else "",
                                  time.monotonic() - t0)
                stop.wait(0.5)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving (cancels a run in flight, pauses the schedule)."""
        runner = self._runner
        if runner is not None and runner.started and not runner.stopping:
            runner.stopping = True
            try:
                runner.execute_in_background(runner.astop).result(timeout)
            except Exception as e:  # noqa: BLE001 - the thread is a daemon: it goes too
                self.say(f"stopping the install deployment's runner: {e}")
        self._thread.join(timeout)

