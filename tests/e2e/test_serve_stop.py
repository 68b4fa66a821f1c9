"""`archiveflow serve` stopped with SIGTERM while a scheduled crawl runs: one line, exit 0, no
traceback, the flow runs end in a final state (not Running), no hook process left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.command import ARCHIVEFLOW
from tests.e2e.conftest import REPO, af, api, secret, status
from tests.flows.conftest import hook_processes as data_processes

pytestmark = pytest.mark.timeout(400)

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def _flow_runs(data: Path, api_url: str) -> list[dict[str, Any]]:
    code, runs, _ = api(f"{api_url}/flow_runs/filter", body={}, auth=secret(data))
    assert code == 200, runs
    return list(runs)


def hook_processes(data: Path) -> list[Any]:
    """Hooks of this data folder (the Prefect server also lives in it: not a hook)."""
    server = status_pid(data)
    return [p for p in data_processes(data) if p.pid != server]


def status_pid(data: Path) -> int | None:
    from archiveflow.flows.prefect_home import read_server_info

    info = read_server_info(data / "prefect")
    return int(info["pid"]) if info else None


def _wait(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def test_sigterm_stops_serve_cleanly(tmp_path: Path, local_env: dict[str, str],
                                     site_url: str) -> None:
    data = tmp_path / "data"
    added = af(data, "schedule", "add", f"{site_url}/slow?s=90", "--every", "1h", "--name",
               "slow", "--allow-private", "--plugins", "title", "--config", "TITLE_TIMEOUT=120",
               env=local_env)
    assert added.returncode == 0, added.stderr
    log = tmp_path / "serve.err"
    with open(log, "wb") as err:
        serve = subprocess.Popen([ARCHIVEFLOW, "--data-dir", str(data), "serve",
                                  "--no-binaries", "--poll", "1"], env=local_env, cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=err,
                                 start_new_session=True)
    try:
        _wait(lambda: "serving 1 deployment" in log.read_text(), 120, "serve to start")
        assert "Prefect UI: http://127.0.0.1:" in log.read_text()
        api_url = status(data, local_env)["api_url"]
        run = af(data, "schedule", "run", "slow", env=local_env)
        assert run.returncode == 0, run.stderr
        # the title hook is fetching the slow page: the crawl is mid-flight
        _wait(lambda: bool(hook_processes(data)), 120,
              "the crawl's hook to start")
        before = log.read_text()
        t0 = time.monotonic()
        os.kill(serve.pid, signal.SIGTERM)
        rc = serve.wait(90)
        stop_seconds = time.monotonic() - t0
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
    text = log.read_text()
    assert rc == 0, text[-3000:]
    after = text[len(before):].strip().splitlines()
    assert after == ["serve: SIGTERM received: cancelling running flow runs and pausing the "
                     "schedules, then exiting"], text[-3000:]
    assert "Traceback" not in text
    print(f"\nserve exited {stop_seconds:.1f}s after SIGTERM")
    runs = _flow_runs(data, api_url)
    names = {r["name"]: r["state_type"] for r in runs}
    assert any(n.startswith("crawl ") for n in names), names
    assert all(state in FINAL for state in names.values()), names
    assert not hook_processes(data)
