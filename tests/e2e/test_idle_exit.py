"""The local Prefect server exits when idle, not while something holds it.

ARCHIVEFLOW_PREFECT_IDLE_EXIT=4 here (default 600 s): a holder process (any process that
configured its client for the data folder: a crawl, `serve`) keeps the server up past that;
once the holder is gone and nobody calls the API for 4 s, the server exits by itself and
`archiveflow server status` says so."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import REPO, af, status

pytestmark = pytest.mark.timeout(300)

IDLE = 4.0
HOLDER = ("import sys, time; from archiveflow.flows.prefect_server import configure_prefect;"
          " configure_prefect(sys.argv[1]); print('ready', flush=True); sys.stdin.read()")


def _wait_gone(pid: int, seconds: float) -> float:
    t0 = time.monotonic()
    while psutil.pid_exists(pid) and time.monotonic() - t0 < seconds:
        time.sleep(0.2)
    return time.monotonic() - t0


def test_idle_server_exits_unless_held(tmp_path: Path, local_env: dict[str, str]) -> None:
    env = {**local_env, "ARCHIVEFLOW_PREFECT_IDLE_EXIT": f"{IDLE:g}"}
    data = tmp_path / "data"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(data)], env=env, cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "ready"
        st = status(data, env)
        assert st["running"] and st["holders"] == [holder.pid] and st["idle_exit"] == IDLE
        time.sleep(3 * IDLE)  # held: no exit, whatever the idle time
        st = status(data, env)
        assert st["running"] and st["idle_seconds"] == 0, st
        pid = st["pid"]
    finally:
        holder.stdin.close()  # the holder ends; its lease goes with it
        holder.wait(30)
    gone_after = _wait_gone(pid, IDLE + 30)
    assert not psutil.pid_exists(pid), "idle server still running"
    # exits IDLE s after the last use, checked every IDLE/4 s; the lock and shutdown add ~1 s
    assert IDLE - 1 <= gone_after <= IDLE + 10, gone_after
    print(f"\nidle exit {gone_after:.1f}s after the holder ended (idle limit {IDLE:g}s)")
    assert status(data, env)["running"] is False
    text = af(data, "server", "status", env=env).stdout
    assert "not running" in text
    log = (data / "prefect" / "server.log").read_text()
    assert f"(ARCHIVEFLOW_PREFECT_IDLE_EXIT={IDLE:g}): exiting" in log, log[-2000:]
    assert not (data / "prefect" / "server.json").exists()


def test_bad_idle_setting_is_a_one_line_error(tmp_path: Path, local_env: dict[str, str]
                                              ) -> None:
    env = {**local_env, "ARCHIVEFLOW_PREFECT_IDLE_EXIT": "ten minutes"}
    proc = af(tmp_path / "data", "server", "start", env=env, timeout=60)
    assert proc.returncode == 2  # a bad setting is a usage error, checked before anything runs
    assert proc.stderr.strip().splitlines() == [
        "archiveflow: ARCHIVEFLOW_PREFECT_IDLE_EXIT: Input should be a valid number, unable to "
        "parse string as a number (got 'ten minutes')"], proc.stderr
    assert status(tmp_path / "data", local_env)["running"] is False
