"""Each `archiveflow worker` installs its own machine's binaries through its own Prefect
deployment before it claims anything, and a worker whose machine lacks a binary records that
plugin's work `skipped` there, saying which binary, which machine and the fix; the crawl
completes.

Two workers posing as machines A and B (own machine id, own lib folder) share one index
(DuckLake on this session's PostgreSQL), one data folder and one Prefect server (on another
PostgreSQL, behind a password). The test plugin needs_tool (tests/distributed/plugins)
declares the binary `aftesttool`: A and the crawl's own process (`origin`) have it in their
lib folder, B does not. Read back with the Prefect API (each machine's deployment, its
completed start-up run, and on A a run asked for through the API while it works) and with
`archiveflow sql` (Binary rows per machine, results). needs_tool is made a browser plugin:
the browser limit (a Prefect global limit, one slot) holds across the machines' workers."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from archiveflow.store.db import Store
from tests.command import ARCHIVEFLOW
from tests.distributed.conftest import new_catalog
from tests.distributed.pg import PgServer
from tests.distributed.test_workers import _kill_machine, _wait_for

PLUGINS = Path(__file__).resolve().parent / "plugins"
SLOW_PAGES = 6  # pages answering after SLOW s each: every machine gets a share
SLOW = 1.5
TOOL = "#!/bin/sh\nsleep 0.5\necho \"aftesttool 1.0 saw $1\"\n"


def _api(prefect: dict[str, str], path: str, body: dict[str, Any]) -> Any:
    """POST to the Prefect server's API with its password (Basic auth, as Prefect's client)."""
    req = urllib.request.Request(
        f"{prefect['PREFECT_API_URL']}/{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": "Basic " + base64.b64encode(
            prefect["PREFECT_API_AUTH_STRING"].encode()).decode()})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def _run_state(prefect: dict[str, str], run_id: str) -> str:
    req = urllib.request.Request(
        f"{prefect['PREFECT_API_URL']}/flow_runs/{run_id}", headers={
            "Authorization": "Basic " + base64.b64encode(
                prefect["PREFECT_API_AUTH_STRING"].encode()).decode()})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return str(json.loads(resp.read())["state_type"])


def log_of(path: Path) -> str:
    return path.read_text(errors="replace")


def _cli(data: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([ARCHIVEFLOW, "--data-dir", str(data), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _out(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    return out


@pytest.mark.timeout(480)
def test_each_worker_installs_its_own_binaries_and_skips_what_its_machine_lacks(
        pg: PgServer, site_url: str, prefect_on_pg: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "data"  # the shared data folder
    env = {**os.environ, "ARCHIVEFLOW_CATALOG": new_catalog(pg),
           "ARCHIVEFLOW_STORAGE": str(tmp_path / "lake"), "PLUGINS_PATH": str(PLUGINS),
           # needs_tool holds the browser limit (one slot, Prefect's): on every machine
           "BROWSER_PLUGINS": "needs_tool", "BROWSER_CONCURRENCY": "1",
           "PREFECT_API_URL": prefect_on_pg["PREFECT_API_URL"],
           "PREFECT_API_AUTH_STRING": prefect_on_pg["PREFECT_API_AUTH_STRING"],
           "ARCHIVEFLOW_LOCK_WAIT": "60", "PREFECT_LOGGING_LEVEL": "WARNING"}
    lib = {m: tmp_path / f"lib-{m}" for m in ("A", "B", "origin")}
    for m in ("A", "origin"):  # B has no aftesttool anywhere
        script = lib[m] / "bin" / "aftesttool"
        script.parent.mkdir(parents=True)
        script.write_text(TOOL)
        script.chmod(0o755)
    menv = {m: {**env, "ARCHIVEFLOW_MACHINE_ID": m, "ARCHIVEFLOW_LIB_DIR": str(lib[m])}
            for m in lib}
    logs = {m: tmp_path / f"{m}.log" for m in ("A", "B")}
    workers: dict[str, subprocess.Popen[bytes]] = {}
    for m in logs:
        with open(logs[m], "wb") as out:
            workers[m] = subprocess.Popen(
                [ARCHIVEFLOW, "--data-dir", str(data), "worker", "--concurrency", "2",
                 "--poll", "0.3"], env=menv[m], stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
    try:
        for m in workers:
            _wait_for(lambda m=m: b"claiming snapshots" in logs[m].read_bytes()
                      or workers[m].poll() is not None, 180, f"worker {m} to install")
            assert workers[m].poll() is None, logs[m].read_text()
        # A run asked for while the worker runs (what the UI's "Run" and `prefect deployment
        # run` do): the worker's runner runs it too.
        [dep_a] = _api(prefect_on_pg, "deployments/filter",
                       {"deployments": {"name": {"any_": ["install-binaries-A"]}}})
        asked = _api(prefect_on_pg, f"deployments/{dep_a['id']}/create_flow_run", {})
        urls = [f"{site_url}/index.html", f"{site_url}/page1.html",
                *(f"{site_url}/slow?s={SLOW}&n={i}" for i in range(SLOW_PAGES))]
        add = subprocess.run(
            [ARCHIVEFLOW, "--data-dir", str(data), "add", "--allow-private", "--plugins",
             "headers,needs_tool", "--concurrency", "1", *urls],
            env=menv["origin"], capture_output=True, text=True, timeout=300)
        assert add.returncode == 0, f"add exited {add.returncode}\n{add.stdout}\n{add.stderr}"
        _wait_for(lambda: _run_state(prefect_on_pg, asked["id"]) in FINAL, 120,
                  "the asked-for install run on A to end")
        assert _run_state(prefect_on_pg, asked["id"]) == "COMPLETED", log_of(logs["A"])
        # Binary rows per machine with `archiveflow sql`, and B's `doctor`, while the workers
        # stop (each is a fresh process attaching the lake: seconds)
        sql = _cli(data, menv["A"], "sql", "--format", "json",
                   "SELECT machine_id, name, status, abspath, error FROM machine_binary "
                   "WHERE machine_id IN ('A', 'B') ORDER BY ALL")
        doctor = _cli(data, menv["B"], "doctor")
        for m, p in workers.items():
            p.send_signal(signal.SIGTERM)
            assert p.wait(60) == 0, logs[m].read_text()
    finally:
        for p in workers.values():
            if p.poll() is None:
                _kill_machine(p)
    log = {m: logs[m].read_text() for m in logs}

    # Each machine's own deployment, and a completed run of it (the one at its start).
    deps = {d["name"]: d for d in _api(prefect_on_pg, "deployments/filter", {
        "deployments": {"name": {"any_": ["install-binaries-A", "install-binaries-B"]}}})}
    assert set(deps) == {"install-binaries-A", "install-binaries-B"}, log
    for m in ("A", "B"):
        dep = deps[f"install-binaries-{m}"]
        assert f"machine:{m}" in dep["tags"]
        runs = _api(prefect_on_pg, "flow_runs/filter",
                    {"deployments": {"id": {"any_": [dep["id"]]}}})
        states = {r["id"]: r["state_type"] for r in runs}
        # the start-up run (its id is in the worker's log) completed; on A the run asked for
        # was seen COMPLETED while the worker ran (above). Once in a full run it showed
        # CANCELLED after the worker's SIGTERM (the runner's shutdown, suspected; not
        # explained yet): only that it ended is asserted after the stop.
        startup = [i for i in states if f"start-up run {i}" in log[m]]
        assert len(startup) == 1 and states[startup[0]] == "COMPLETED", (m, states, log[m])
        if m == "A":
            assert states.get(asked["id"]) in FINAL, (states, asked["id"])
        assert f"install_binaries/install-binaries-{m}" in log[m]
        assert "ended completed" in log[m], log[m]

    # Binary rows per machine, in the shared index: A resolved aftesttool, B could not.
    rows = [json.loads(line) for line in _out(sql).splitlines() if line.strip()]
    tool = {r["machine_id"]: r for r in rows if r["name"] == "aftesttool"}
    assert tool["A"]["status"] == "succeeded", rows
    assert tool["A"]["abspath"] == str(lib["A"] / "bin" / "aftesttool")
    assert tool["B"]["status"] == "failed" and "env" in tool["B"]["error"], rows
    assert {r["name"] for r in rows if r["machine_id"] == "B"} == \
        {r["name"] for r in rows if r["machine_id"] == "A"}  # each machine its own rows
    assert "plugin needs_tool cannot run on this machine: binary aftesttool" in log["B"]
    [line] = [ln for ln in _out(doctor).splitlines() if ln.startswith("note binaries")]
    assert "machine B: 1 failed (aftesttool); " in line and " succeeded (" in line, line
    assert "install_binaries/install-binaries-B" in line, line

    # The crawl completed: every page sealed, every result final (read with the Store)
    store = Store(data / "index.duckdb", catalog=env["ARCHIVEFLOW_CATALOG"],
                  storage=env["ARCHIVEFLOW_STORAGE"])
    cur = store.cursor()

    def q(sql: str) -> list[dict[str, Any]]:
        res = cur.execute(sql)
        cols = [d[0] for d in res.description or []]
        return [dict(zip(cols, r, strict=True)) for r in res.fetchall()]

    try:
        _check_crawl(q, log, len(urls))
    finally:
        store.close()


def _check_crawl(q: Any, log: dict[str, str], pages: int) -> None:
    [crawl] = q("SELECT status FROM crawl")
    assert crawl["status"] == "sealed", crawl
    [snaps] = q("SELECT count(*) AS n, count(*) FILTER (WHERE status = 'sealed') AS sealed "
                "FROM snapshot")
    assert snaps == {"n": pages, "sealed": pages}
    # which machine archived each snapshot: the one that ran its headers hook
    results = q("""
        SELECT s.url, a.plugin, a.status, a.output_str,
               (SELECT p.machine_id FROM archiveresult h JOIN process p ON p.owner_id = h.id
                WHERE h.snapshot_id = s.id AND h.plugin = 'headers') AS machine
        FROM archiveresult a JOIN snapshot s ON s.id = a.snapshot_id ORDER BY ALL""")
    assert len(results) == 2 * pages
    by_machine: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        assert r["status"] not in ("queued", "started"), r
        if r["plugin"] == "needs_tool":
            by_machine.setdefault(r["machine"], []).append(r)
    assert by_machine.get("B"), ("B archived no snapshot", results)
    for r in by_machine["B"]:  # skipped on B, saying which binary, which machine, the fix
        assert r["status"] == "skipped", r
        assert "machine B" in r["output_str"] and "aftesttool" in r["output_str"], r
        assert "`archiveflow install` on that machine" in r["output_str"], r
    for m in set(by_machine) - {"B"}:  # A and origin have it: it ran there
        assert all(r["status"] == "succeeded" for r in by_machine[m]), by_machine[m]
    assert all(r["status"] == "succeeded" for r in results if r["plugin"] == "headers")
    assert f"{len(by_machine['B'])} needs_tool result(s) skipped" in log["B"], log["B"]

    # The browser limit held across machines: no two needs_tool runs overlapped.
    [ran] = q("""
        SELECT count(*) AS n, count(DISTINCT machine_id) AS machines FROM process
        WHERE hook_name LIKE '%needs_tool%' AND owner_type = 'archiveresult'""")
    assert ran["n"] == pages - len(by_machine["B"]), ran
    [overlaps] = q("""
        SELECT count(*) AS n FROM process p JOIN process q ON p.id < q.id
        WHERE p.hook_name LIKE '%needs_tool%' AND q.hook_name = p.hook_name
          AND p.owner_type = 'archiveresult' AND q.owner_type = 'archiveresult'
          AND p.started_at < q.ended_at AND q.started_at < p.ended_at""")
    assert overlaps == {"n": 0}, overlaps
