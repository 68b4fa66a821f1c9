"""The `install_binaries` flow: resolve this Machine's declared binaries, one task each."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from archiveflow.flows.context import current
from archiveflow.tasks import binaries
from archiveflow.tasks.machine import this_machine

DEFAULT_CONCURRENCY = 4


def _run_name() -> str:
    return f"install-binaries {this_machine().hostname}"


@task(name="plan-binaries", task_run_name="plan-binaries",
      cache_policy=NO_CACHE, persist_result=False)
async def plan_binaries(plugins: list[str] | None, force: bool, retry_failed: bool,
                        crawl_config: dict[str, Any] | None = None) -> binaries.BinaryPlan:
    """Give declared binaries rows; decide which need installing (no process started)."""
    rt = current().rt
    return await asyncio.to_thread(binaries.plan_binaries, rt, plugins, force=force,
                                   retry_failed=retry_failed, crawl_config=crawl_config)


@task(name="binary", task_run_name="{name}", cache_policy=NO_CACHE, persist_result=False)
async def install_binary(name: str, binary_id: str) -> dict[str, Any]:
    """Run the provider hooks of one Binary row until one provides it."""
    cur = current()
    row = cur.binary_rows[binary_id]
    return await asyncio.to_thread(binaries.run, cur.rt, row)


@task(name="finish-binaries", task_run_name="finish-binaries",
      cache_policy=NO_CACHE, persist_result=False)
async def finish_binaries(plan: binaries.BinaryPlan, results: list[dict[str, Any]]
                          ) -> dict[str, Any]:
    """Refresh the runtime's binaries and the Machine config; summarize."""
    rt = current().rt
    report = await asyncio.to_thread(binaries.finish_binaries, rt, plan, results)
    return report.to_dict()


@flow(name="install_binaries", flow_run_name=_run_name, persist_result=False,
      validate_parameters=False)
async def install_binaries(plugins: list[str] | None = None, data_dir: str | None = None,
                           force: bool = False, retry_failed: bool = True,
                           concurrency: int = DEFAULT_CONCURRENCY,
                           crawl_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Install every binary the enabled plugins (or `plugins`) declare on this machine
    (`crawl_config`: a crawl's own config, whose PLUGINS_PATH counts)."""
    cur = current(data_dir)
    plan = await plan_binaries(plugins, force, retry_failed, crawl_config)
    limit = asyncio.Semaphore(max(1, concurrency))

    async def one(row: dict[str, Any]) -> dict[str, Any]:
        async with limit:
            cur.binary_rows[row["id"]] = row
            try:
                return await install_binary(row["name"], row["id"])
            except Exception as e:  # the task itself broke (not a provider failure)
                return {**row, "action": "failed", "hooks_started": 0, "error": str(e)}
            finally:
                cur.binary_rows.pop(row["id"], None)

    results = await asyncio.gather(*(one(r) for r in plan.todo))
    return await finish_binaries(plan, list(results))


async def require_binaries(plugins: list[str] | None = None, data_dir: str | None = None,
                           crawl_config: dict[str, Any] | None = None
                           ) -> dict[str, Any] | None:
    """Before a crawl's first Snapshot: check the binaries its plugins declare.

    When everything is installed this is one index read and a few file stats (no hook
    process, no Prefect run); otherwise `install_binaries` runs as a subflow, without
    retrying binaries that already failed (`archiveflow install` does that).
    """
    rt = current(data_dir).rt
    plan = await asyncio.to_thread(binaries.plan_binaries, rt, plugins, retry_failed=False,
                                   crawl_config=crawl_config)
    if not plan.todo:
        return None
    return await install_binaries(plugins=plugins, data_dir=data_dir, retry_failed=False,
                                  crawl_config=crawl_config)
