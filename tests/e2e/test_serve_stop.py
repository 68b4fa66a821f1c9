"""`archiveflow serve` as a service meets it: a run created through the API with parameters of
its own is refused (its state says why, its hooks never run); SIGTERM while a scheduled crawl
runs gives one line, exit 0, no traceback, every flow run final, no hook left behind.

One `serve` for the module; the last test stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.command import ARCHIVEFLOW
from tests.e2e.conftest import REPO, af, api, secret, status
from tests.flows.conftest import hook_processes as data_processes

pytestmark = pytest.mark.timeout(400)

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
EVIL_HOOK = """#!/bin/sh
# writes a marker where the test looks: proof that a forged PLUGINS_PATH ran
touch "{marker}"
"""


def hook_processes(data: Path) -> list[Any]:
    """Hooks of this data folder (the Prefect server also lives in it: not a hook)."""
    from archiveflow.flows.prefect_home import read_server_info

    info = read_server_info(data / "prefect")
    return [p for p in data_processes(data) if not info or p.pid != info["pid"]]


def _wait(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory, local_env: dict[str, str],
            site_url: str) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("serve")
    data = root / "data"
    added = af(data, "schedule", "add", f"{site_url}/slow?s=90", "--every", "1h", "--name",
               "slow", "--allow-private", "--plugins", "title", "--config", "TITLE_TIMEOUT=120",
               env=local_env)
    assert added.returncode == 0, added.stderr
    log = root / "serve.err"
    with open(log, "wb") as err:
        serve = subprocess.Popen([ARCHIVEFLOW, "--data-dir", str(data), "serve",
                                  "--no-binaries", "--poll", "1"], env=local_env, cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=err,
                                 start_new_session=True)
    try:
        _wait(lambda: "serving 1 deployment" in log.read_text(), 120, "serve to start")
        yield {"root": root, "data": data, "serve": serve, "log": log,
               "api_url": status(data, local_env)["api_url"]}
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
        af(data, "server", "stop", "--force", env=local_env, timeout=60)


def _run(serving: dict[str, Any], run_id: str) -> dict[str, Any]:
    code, run, _ = api(f"{serving['api_url']}/flow_runs/{run_id}",
                       auth=secret(serving["data"]))
    assert code == 200, run
    return dict(run)


def test_serve_prints_where_the_ui_is(serving: dict[str, Any]) -> None:
    text = serving["log"].read_text()
    ui = serving["api_url"].removesuffix("api")
    assert f"Prefect UI: {ui}v2/runs (log in: `archiveflow server login`)" in text, text


def test_a_run_with_other_parameters_is_refused(serving: dict[str, Any]) -> None:
    evil = serving["root"] / "evil"
    marker = serving["root"] / "evil-ran"
    hook = evil / "evil" / "on_Snapshot__01_evil.sh"
    hook.parent.mkdir(parents=True)
    hook.write_text(EVIL_HOOK.format(marker=marker))
    hook.chmod(0o755)
    auth = secret(serving["data"])
    code, deployment, _ = api(f"{serving['api_url']}/deployments/name/archive/slow", auth=auth)
    assert code == 200, deployment
    params = {**deployment["parameters"], "data_dir": str(serving["root"] / "elsewhere"),
              "config": {**deployment["parameters"]["config"], "PLUGINS_PATH": str(evil)}}
    # Prefect lets the caller switch its parameter-schema check off: serve must not rely on it
    for _ in range(5):  # a loaded SQLite-backed server may answer 503 (busy): ask again
        code, run, _ = api(
            f"{serving['api_url']}/deployments/{deployment['id']}/create_flow_run",
            auth=auth, body={"parameters": params, "enforce_parameter_schema": False})
        if code != 503:
            break
        time.sleep(2)
    assert code == 201, run
    _wait(lambda: _run(serving, run["id"])["state_type"] in FINAL, 60, "the forged run to end")
    state = _run(serving, run["id"])["state"]
    assert state["type"] == "FAILED", state
    assert state["message"].startswith(
        "refused by archiveflow serve: parameters differ from deployment archive/slow's "
        "(config.PLUGINS_PATH, data_dir)"), state
    assert not marker.exists()
    assert not (serving["root"] / "elsewhere").exists()
    assert f"serve: flow run {run['name']} ({run['id']}) refused" in serving["log"].read_text()


def test_sigterm_stops_serve_cleanly(serving: dict[str, Any], local_env: dict[str, str]
                                     ) -> None:
    data, serve, log = serving["data"], serving["serve"], serving["log"]
    run = af(data, "schedule", "run", "slow", env=local_env)
    assert run.returncode == 0, run.stderr
    # the title hook is fetching the slow page: the crawl is mid-flight
    _wait(lambda: bool(hook_processes(data)), 120, "the crawl's hook to start")
    before = log.read_text()
    t0 = time.monotonic()
    os.kill(serve.pid, signal.SIGTERM)
    rc = serve.wait(90)
    stop_seconds = time.monotonic() - t0
    text = log.read_text()
    assert rc == 0, text[-3000:]
    after = text[len(before):].strip().splitlines()
    assert after == ["serve: SIGTERM received: cancelling running flow runs and pausing the "
                     "schedules, then exiting"], text[-3000:]
    assert "Traceback" not in text
    print(f"\nserve exited {stop_seconds:.1f}s after SIGTERM")
    code, runs, _ = api(f"{serving['api_url']}/flow_runs/filter", body={},
                        auth=secret(data))
    assert code == 200, runs
    states = {r["name"]: r["state_type"] for r in runs}
    assert any(n.startswith("crawl ") for n in states), states
    assert all(state in FINAL for state in states.values()), states
    assert not hook_processes(data)
