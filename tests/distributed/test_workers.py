"""Two `archiveflow worker` processes posing as two machines (own machine id, own lib
folder) and the `archiveflow add` that started the crawl share one index (DuckLake on this
session's PostgreSQL), one data folder and one Prefect server (its database on another
PostgreSQL, its API behind a password). One worker is killed with SIGKILL mid-crawl,
its hooks with it (its machine is gone): after its lease, the others archive what it held.
Right after, the catalog's PostgreSQL is SIGKILLed and started again. Every page is archived
exactly once; the per-machine split is read back with SQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from archiveflow.store.db import Store
from tests.command import ARCHIVEFLOW
from tests.distributed.conftest import new_catalog
from tests.distributed.pg import PgServer

# s: short, so the test sees a dead worker's snapshots taken over; not shorter: on a loaded
# 2-core machine a renewal can wait seconds for the write lock, and a lease that runs out
# under a live worker hands its snapshot to another (whose takeover stops the running hook)
# (and the catalog's restart below delays renewals too)
LEASE = 15.0
SLOW_PAGES = 12  # pages answering after SLOW s each: the crawl is still running at the kill
SLOW = 1.5


def _start_worker(env: dict[str, str], data: Path, machine: str, log: Path
                  ) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            # --no-binaries: headers and title need none, and the start-up install run (its
            # deployment, its Binary rows) is test_worker_binaries.py's subject
            [ARCHIVEFLOW, "--data-dir", str(data), "worker", "--concurrency", "2",
             "--lease", str(LEASE), "--poll", "0.3", "--no-binaries"],
            env={**env, "ARCHIVEFLOW_MACHINE_ID": machine,
                 "ARCHIVEFLOW_LIB_DIR": str(data.parent / f"lib-{machine}")},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _held_snapshots(proc: psutil.Process, data: Path) -> set[str]:
    """Snapshot ids whose hooks this worker is running (their cwd is the snapshot's
    plugin folder: users/…/snapshots/<day>/<domain>/<snapshot id>/<plugin>)."""
    held = set()
    for child in proc.children(recursive=True):
        try:
            cwd = Path(child.cwd())
        except psutil.Error:
            continue
        if "snapshots" in cwd.parts and cwd.is_relative_to(data):
            held.add(cwd.parent.name)
    return held


def _kill_machine(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and every process under it (hooks run in sessions of their own)."""
    p = psutil.Process(proc.pid)
    victims = [p, *p.children(recursive=True)]
    for v in victims:
        try:
            v.kill()
        except psutil.Error:
            pass
    proc.wait(10)
    psutil.wait_procs(victims[1:], timeout=10)


@pytest.mark.timeout(600)
def test_crawl_spreads_over_workers_survives_a_killed_one_and_a_catalog_restart(
        pg: PgServer, site_url: str, prefect_on_pg: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "data"  # the shared data folder (every machine mounts it)
    env = {**os.environ, "ARCHIVEFLOW_CATALOG": new_catalog(pg),
           "ARCHIVEFLOW_STORAGE": str(tmp_path / "lake"),
           "PREFECT_API_URL": prefect_on_pg["PREFECT_API_URL"],
           "PREFECT_API_AUTH_STRING": prefect_on_pg["PREFECT_API_AUTH_STRING"],
           "ARCHIVEFLOW_LOCK_WAIT": "60", "PREFECT_LOGGING_LEVEL": "WARNING"}
    logs = {m: tmp_path / f"{m}.log" for m in ("w1", "w2")}
    workers = {m: _start_worker(env, data, m, logs[m]) for m in logs}
    add: subprocess.Popen[str] | None = None
    try:
        for m in workers:
            _wait_for(lambda m=m: b"claiming snapshots" in logs[m].read_bytes()
                      or workers[m].poll() is not None, 180, f"worker {m} to start")
            assert workers[m].poll() is None, logs[m].read_text()
        urls = [f"{site_url}/index.html", f"{site_url}/page1.html", f"{site_url}/page2.html",
                f"{site_url}/page3.html",
                *(f"{site_url}/slow?s={SLOW}&n={i}" for i in range(SLOW_PAGES))]
        add = subprocess.Popen(
            [ARCHIVEFLOW, "--data-dir", str(data), "add", "--allow-private", "--plugins",
             "headers,title", "--concurrency", "1", *urls],
            env={**env, "ARCHIVEFLOW_MACHINE_ID": "origin",
                 "ARCHIVEFLOW_LIB_DIR": str(tmp_path / "lib-origin")}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True)

        # Kill w2 (and its hooks) while it holds snapshots.
        victim = psutil.Process(workers["w2"].pid)
        held = _wait_for(lambda: _held_snapshots(victim, data), 180,
                         "worker w2 to run a snapshot's hooks")
        _kill_machine(workers["w2"])
        # The catalog's PostgreSQL crashes and comes back mid-crawl: the claims, writes and
        # lease renewals in flight wait for it and go on.
        pg.kill()
        time.sleep(2)
        pg.start()

        out, err = add.communicate(timeout=300)
        assert add.returncode == 0, f"add exited {add.returncode}\n{out}\n{err[-6000:]}"

        workers["w1"].send_signal(signal.SIGTERM)
        assert workers["w1"].wait(60) == 0, logs["w1"].read_text()
        assert "stopped after" in logs["w1"].read_text()
    finally:
        for p in [*workers.values(), *([add] if add else [])]:
            if p.poll() is None:
                _kill_machine(p)  # type: ignore[arg-type]

    store = Store(data / "index.duckdb", catalog=env["ARCHIVEFLOW_CATALOG"],
                  storage=env["ARCHIVEFLOW_STORAGE"])
    try:
        cur = store.cursor()
        # every page exactly once, every snapshot sealed, every hook once per snapshot
        assert cur.execute("SELECT count(*), count(DISTINCT url), count(*) FILTER "
                           "(WHERE status = 'sealed') FROM snapshot").fetchone() == (
            len(urls), len(urls), len(urls))
        assert cur.execute("SELECT count(*), count(DISTINCT (snapshot_id, hook_name)), "
                           "count(*) FILTER (WHERE status IN ('queued', 'started')) "
                           "FROM archiveresult").fetchone() == (2 * len(urls), 2 * len(urls), 0)
        bad = cur.execute("SELECT s.url, a.hook_name, a.status, a.error FROM archiveresult a "
                          "JOIN snapshot s ON s.id = a.snapshot_id "
                          "WHERE a.status <> 'succeeded'").fetchall()
        assert not bad, bad
        # the per-machine split: which machine ran each snapshot's hooks
        split = dict(cur.execute(
            "SELECT p.machine_id, count(DISTINCT a.snapshot_id) FROM process p "
            "JOIN archiveresult a ON a.id = p.owner_id WHERE p.owner_type = 'archiveresult' "
            "AND a.status = 'succeeded' GROUP BY ALL").fetchall())
        assert split.get("w1", 0) > 0 and split.get("origin", 0) > 0, split
        # w2's snapshots were finished by the others, after its lease ran out
        finished_by = cur.execute(
            "SELECT DISTINCT p.machine_id FROM process p JOIN archiveresult a "
            "ON a.id = p.owner_id WHERE a.snapshot_id IN (SELECT unnest(?::VARCHAR[])) "
            "AND a.status = 'succeeded'", [sorted(held)]).fetchall()
        assert finished_by and ("w2",) not in finished_by, (held, finished_by)
        machines = {r[0] for r in cur.execute("SELECT id FROM machine").fetchall()}
        assert {"w1", "w2", "origin"} <= machines
        [crawl_id] = [r[0] for r in cur.execute("SELECT id FROM crawl").fetchall()]
    finally:
        store.close()
    assert not (data / "lib").exists()  # each machine installs into its own lib folder
    # any machine reads the shared index itself, read-only (no writer to go through)
    q = subprocess.run([ARCHIVEFLOW, "--data-dir", str(data), "sql", "--format", "json",
                        "SELECT count(*) AS n FROM snapshot WHERE status = 'sealed'"],
                       env={**env, "ARCHIVEFLOW_MACHINE_ID": "w1"}, capture_output=True,
                       text=True, timeout=120)
    assert q.returncode == 0, q.stderr
    assert json.loads(q.stdout.splitlines()[0]) == {"n": len(urls)}
    # the crawl's flow run is in the Prefect server's database, on PostgreSQL
    runs = subprocess.run(
        ["psql", "-h", prefect_on_pg["sock"], "-U", prefect_on_pg["user"], "-d",
         prefect_on_pg["db"], "-tA", "-c",
         f"SELECT count(*) FROM flow_run WHERE name = 'crawl {crawl_id}'"],
        capture_output=True, text=True, check=True)
    assert int(runs.stdout.strip()) == 1
