"""The Prefect Runner that `archiveflow serve` runs, with three changes to Prefect's own:

* **Runs keep their schedule's parameters.** Before a run starts (where the Runner proposes
  it Pending), its parameters are compared with those its deployment was registered with from
  schedules.json; a run created through the API with others (a `PLUGINS_PATH` of someone
  else's, another data folder, ...) ends Failed with the differing names in its state message
  and never starts (see deployments/crawls.py). Prefect 3.9's Runner has no public hook there:
  this wraps its ``_state_proposer``, and refuses to serve if that is missing, rather than
  serving unchecked.
* **A quiet stop.** SIGTERM (and Ctrl-C, routed the same way) first calls ``on_stop`` with one
  line, then Prefect's graceful shutdown cancels the runs in flight (they end Cancelled).
* A schedule removed while serving has no deployment left to pause at shutdown: no error.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any
from uuid import UUID

from prefect.exceptions import ObjectNotFound
from prefect.runner import Runner
from prefect.states import Failed

from archiveflow.deployments.crawls import parameter_changes, refusal


class GuardUnavailable(RuntimeError):
    """This Prefect version's Runner has no place to check a run's parameters."""


class ServeRunner(Runner):
    """Prefect's Runner, checking each run's parameters against the registered ones."""

    def __init__(self, *args: Any, on_stop: Callable[[str], None] | None = None,
                 on_refused: Callable[[str], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.registered: dict[UUID, tuple[str, dict[str, Any]]] = {}
        self._on_stop = on_stop
        self._on_refused = on_refused

    async def serve_deployment(self, deployment: Any) -> UUID:
        """Add a RunnerDeployment and remember the parameters its runs must have."""
        dep_id: UUID = await self.aadd_deployment(deployment)
        self.registered[dep_id] = (f"{deployment.flow_name}/{deployment.name}",
                                   dict(deployment.parameters))
        return dep_id

    async def __aenter__(self) -> Any:
        entered = await super().__aenter__()
        proposer = getattr(self, "_state_proposer", None)
        if proposer is None or not hasattr(proposer, "propose_pending"):
            raise GuardUnavailable("this Prefect version's Runner has no _state_proposer: "
                                   "archiveflow serve cannot check run parameters with it; "
                                   "install the Prefect version pyproject.toml names")
        original = proposer.propose_pending

        async def propose_pending(flow_run: Any) -> bool:
            if not await self._parameters_ok(flow_run):
                return False
            return bool(await original(flow_run))

        proposer.propose_pending = propose_pending
        return entered

    async def _parameters_ok(self, flow_run: Any) -> bool:
        spec = self.registered.get(flow_run.deployment_id)
        if spec is None:  # added to Prefect's registry a moment before ours: next poll
            return False
        name, expected = spec
        changed = parameter_changes(expected, dict(flow_run.parameters or {}))
        if not changed:
            return True
        message = refusal(name, changed)
        await self._client.set_flow_run_state(flow_run.id, Failed(message=message),
                                              force=True)
        if self._on_refused is not None:
            self._on_refused(f"serve: flow run {flow_run.name} ({flow_run.id}) {message}")
        return False

    def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
        if self._on_stop is not None:
            self._on_stop(f"serve: {_signal_name(args)} received: cancelling running flow "
                          "runs and pausing the schedules, then exiting")
        super().handle_sigterm(*args, **kwargs)

    async def _pause_schedules(self) -> None:
        for dep_id in self._deployment_registry.get_deployment_ids():
            try:
                await self._client.pause_deployment(dep_id)
            except ObjectNotFound:
                continue


def _signal_name(args: tuple[Any, ...]) -> str:
    try:
        return signal.Signals(args[0]).name
    except (IndexError, ValueError, TypeError):
        return "SIGTERM"
