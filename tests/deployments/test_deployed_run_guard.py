"""A scheduled crawl's run checks its own parameters where it executes, not only in `serve`.

A Prefect process worker (or anyone with API access and a shell) runs a flow run with
`python -m prefect.engine` and PREFECT__FLOW_RUN_ID, bypassing `archiveflow serve`'s check.
Here that is done for real against the session's Prefect API: a run whose parameters were
changed through the API (another PLUGINS_PATH; a data folder of another account with a
schedules.json of its own) ends Failed with the reason and runs nothing, and a run with the
schedule's own parameters archives the page.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.flows.conftest import run_cli

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[2]
EVIL_HOOK = "#!/bin/sh\ntouch {marker}\n"


async def _create_run(name: str, change: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from prefect import get_client

    async with get_client() as client:
        dep = await client.read_deployment_by_name(f"archive/{name}")
        params = {**dep.parameters, **change}
        run = await client.create_flow_run_from_deployment(
            dep.id, parameters=params)
        return str(run.id), dict(dep.parameters)


async def _state(run_id: str) -> Any:
    from prefect import get_client

    async with get_client() as client:
        return (await client.read_flow_run(run_id)).state  # type: ignore[arg-type]


def _execute(run_id: str) -> subprocess.CompletedProcess[str]:
    """What a Prefect process worker does with a flow run it picked up."""
    return subprocess.run(
        [sys.executable, "-m", "prefect.engine"], capture_output=True, text=True, timeout=300,
        cwd=ROOT, env={**os.environ, "PREFECT__FLOW_RUN_ID": run_id,
                       "ARCHIVEFLOW_LOCK_WAIT": "60"})


def _crawls(data: Path) -> int:
    if not (data / "index.duckdb").exists():
        return 0
    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        row = con.execute("SELECT count(*) FROM crawl").fetchone()
        return int(row[0]) if row else 0
    finally:
        con.close()


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory: pytest.TempPathFactory, site_url: str, prefect_api: str
              ) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("guard")
    data = root / "data"
    add = run_cli(data, "schedule", "add", f"{site_url}/", "--cron", "0 3 1 1 *",
                  "--name", "guarded", "--plugins", "headers", "--allow-private")
    assert add.returncode == 0, add.stderr
    return {"root": root, "data": data.resolve()}


def test_schedules_json_is_owner_only(scheduled: dict[str, Any]) -> None:
    assert (scheduled["data"] / "schedules.json").stat().st_mode & 0o777 == 0o600


def test_a_run_with_another_plugins_path_is_refused_where_it_executes(
        scheduled: dict[str, Any]) -> None:
    root, data = scheduled["root"], scheduled["data"]
    marker = root / "evil-ran"
    hook = root / "evil" / "evil" / "on_Snapshot__01_evil.sh"
    hook.parent.mkdir(parents=True)
    hook.write_text(EVIL_HOOK.format(marker=marker))
    hook.chmod(0o755)
    _, registered = asyncio.run(_create_run("guarded", {}))
    run_id, _ = asyncio.run(_create_run("guarded", {
        "config": {**registered["config"], "PLUGINS_PATH": str(root / "evil")}}))
    before = _crawls(data)
    proc = _execute(run_id)
    state = asyncio.run(_state(run_id))
    assert state.type.value == "FAILED", (state, proc.stderr[-3000:])
    assert "refused by archiveflow: parameters differ from deployment archive/guarded's " \
           "(config.PLUGINS_PATH)" in (state.message or ""), state.message
    assert not marker.exists()
    assert _crawls(data) == before  # no crawl was created


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a folder of another account")
def test_a_data_folder_of_another_account_is_refused(scheduled: dict[str, Any]) -> None:
    root, data = scheduled["root"], scheduled["data"]
    other = root / "other"
    other.mkdir()
    schedules = json.loads((data / "schedules.json").read_text())
    schedules["guarded"]["parameters"]["config"]["PLUGINS_PATH"] = str(root / "evil")
    (other / "schedules.json").write_text(json.dumps(schedules))
    os.chown(other / "schedules.json", 65534, 65534)
    os.chown(other, 65534, 65534)
    try:
        _, registered = asyncio.run(_create_run("guarded", {}))
        run_id, _ = asyncio.run(_create_run("guarded", {
            "data_dir": str(other),
            "config": {**registered["config"], "PLUGINS_PATH": str(root / "evil")}}))
        proc = _execute(run_id)
        state = asyncio.run(_state(run_id))
        assert state.type.value == "FAILED", (state, proc.stderr[-3000:])
        assert f"names data folder {other}, which cannot be trusted: {other} belongs to " \
               f"uid 65534" in (state.message or ""), state.message
        assert not (other / "index.duckdb").exists()
    finally:
        shutil.rmtree(other)


def test_the_schedules_own_run_archives(scheduled: dict[str, Any], site_url: str) -> None:
    data = scheduled["data"]
    run_id, _ = asyncio.run(_create_run("guarded", {}))
    before = _crawls(data)
    proc = _execute(run_id)
    state = asyncio.run(_state(run_id))
    assert state.type.value == "COMPLETED", (state, proc.stderr[-3000:])
    assert _crawls(data) == before + 1
    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT a.plugin, a.status FROM archiveresult a JOIN snapshot s "
            "ON s.id = a.snapshot_id WHERE s.url = ?", [f"{site_url}/"]).fetchall()
    finally:
        con.close()
    assert ("headers", "succeeded") in rows, rows
