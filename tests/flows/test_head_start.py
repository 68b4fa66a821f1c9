"""The first Snapshot's hooks do not wait for Prefect (flows/head_start.py), and the crawl
flow still records them: `archiveflow add` on a fresh data folder, whose local Prefect
server takes seconds to start, against the local test site."""

from __future__ import annotations

import base64
import json
import shutil
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from archiveflow.flows import prefect_server
from tests.flows.conftest import run_cli


@pytest.fixture
def data(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
         monkeypatch: pytest.MonkeyPatch) -> Any:
    # The pre-migrated DB template from a cache of our own (seeded from the user's when there
    # is one), as tests/flows/test_prefect_server.py does: a test never writes ~/.cache.
    real = prefect_server._template_path()
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    if real.exists() and not prefect_server._template_path().exists():
        prefect_server._template_path().parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real, prefect_server._template_path())
    d = tmp_path / "data"
    yield d
    prefect_server.stop_local_server(d)


def _api(data: Path, path: str, body: dict[str, Any]) -> Any:
    home = data / "prefect"
    url = json.loads((home / "server.json").read_text())["api_url"]
    auth = base64.b64encode((home / "auth_string").read_bytes().strip()).decode()
    req = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_first_snapshot_runs_before_prefect_and_is_recorded(data: Path, site_url: str) -> None:
    url = f"{site_url}/page1.html"
    # No PREFECT_API_URL: the data folder's own local server, started by this command.
    proc = run_cli(data, "add", "--allow-private", "--plugins", "headers", url,
                   env={"PREFECT_API_URL": "", "PREFECT_API_AUTH_STRING": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "starting the local Prefect server" in proc.stderr
    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        crawl_id, snap_id, ar_id, status, started = con.execute(
            "SELECT s.crawl_id, s.id, a.id, a.status, a.start_ts FROM archiveresult a "
            "JOIN snapshot s ON s.id = a.snapshot_id").fetchone()
        assert con.execute("SELECT status FROM snapshot").fetchall() == [("sealed",)]
    finally:
        con.close()
    assert status == "succeeded"
    (crawl_run,) = _api(data, "/flow_runs/filter",
                        {"flow_runs": {"name": {"any_": [f"crawl {crawl_id}"]}}})
    assert crawl_run["state"]["type"] == "COMPLETED"
    # The hook started while the server was still starting: before the crawl's flow run.
    assert started < _when(crawl_run["start_time"])
    deadline = time.monotonic() + 60  # the server records task-run events in batches
    while True:
        tasks = _api(data, "/task_runs/filter",
                     {"flow_runs": {"id": {"any_": [crawl_run["id"]]}}})
        by_id = {t["id"]: t for t in tasks}
        if ar_id in by_id or time.monotonic() > deadline:
            break
        time.sleep(1)
    (snap_run,) = [t for t in tasks if t["name"] == url]
    assert snap_run["state"]["type"] == "COMPLETED"
    result_run = by_id[ar_id]  # the ArchiveResult's task run: its id is the row's
    assert result_run["name"] == "headers"
    assert result_run["state"]["type"] == "COMPLETED"
    assert [p["id"] for p in result_run["task_inputs"]["__parents__"]] == [snap_run["id"]]


def test_snapshots_started_early_are_recorded_when_prefect_fails(tmp_path: Path) -> None:
    """The local server cannot become healthy (its database cannot be opened, and a start
    timeout too short for any server): `add` fails with the reason, after the snapshot it
    had started finished and was written. (The timeout alone is not enough: the engine's
    import now waits for the first hook, and a server may be healthy by then.)"""
    plugins = tmp_path / "plugins" / "slow"
    plugins.mkdir(parents=True)
    hook = plugins / "on_Snapshot__10_slow.py"
    hook.write_text("#!/usr/bin/env python3\n# Sleeps, then reports success.\nimport time\n"
                    "time.sleep(20)\n"
                    'print(\'{"type": "ArchiveResult", "status": "succeeded", '
                    '"output_str": "slept"}\')\n')
    hook.chmod(0o755)
    data = tmp_path / "data"
    not_a_dir = tmp_path / "not-a-dir"
    not_a_dir.write_text("")
    try:
        proc = run_cli(data, "add", "--plugins", "slow", "--config",
                       f"PLUGINS_PATH={plugins.parent}", "https://example.com/slow",
                       env={"PREFECT_API_URL": "", "PREFECT_API_AUTH_STRING": "",
                            "ARCHIVEFLOW_PREFECT_START_TIMEOUT": "0.01",
                            "PREFECT_SERVER_DATABASE_CONNECTION_URL":
                                f"sqlite+aiosqlite:///{not_a_dir}/prefect.db"})
    finally:
        prefect_server.stop_local_server(data)
    assert proc.returncode != 0
    assert "Prefect server did not become healthy" in proc.stderr
    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT status FROM snapshot").fetchall() == [("sealed",)]
        assert con.execute("SELECT plugin, status, output_str FROM archiveresult").fetchall() \
            == [("slow", "succeeded", "slept")]
    finally:
        con.close()
