"""`archiveflow server …` and the local Prefect server's doors, through the installed command.

One server (started by `archiveflow server start`) serves the module; the last test stops it.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from tests.e2e.conftest import REPO, af, api, secret, status

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, local_env: dict[str, str]
           ) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("server") / "data"
    proc = af(data, "server", "start", env=local_env)
    assert proc.returncode == 0, proc.stderr
    st = status(data, local_env)
    yield {"data": data, "start": proc, **st}
    af(data, "server", "stop", "--force", env=local_env, timeout=60)


def test_start_prints_where_the_api_and_ui_are(server: dict[str, Any]) -> None:
    out = server["start"].stdout
    assert "started" in out and server["api_url"] in out and server["ui_url"] in out, out
    assert server["running"] and server["healthy"]
    assert server["api_url"].startswith("http://127.0.0.1:")
    assert server["api_url"] == server["ui_url"] + "api"


def test_status_shows_pid_memory_and_idle_time(server: dict[str, Any],
                                               local_env: dict[str, str]) -> None:
    proc = psutil.Process(server["pid"])
    assert server["rss_bytes"] > 50 * 2**20  # a Prefect server, not a stub
    assert server["idle_exit"] == 0  # local_env says never
    text = af(server["data"], "server", "status", env=local_env).stdout
    assert f"running, pid {proc.pid}" in text and "RSS" in text, text
    assert server["ui_url"] in text and "idle" in text and "never exits" in text, text


def test_api_refuses_a_client_without_the_secret(server: dict[str, Any]) -> None:
    url = server["api_url"]
    code, _, _ = api(f"{url}/flow_runs/filter", body={})
    assert code == 401
    code, _, _ = api(f"{url}/flow_runs/filter", body={}, auth="archiveflow:guess")
    assert code == 401
    # what another account did: create a run of a deployment with its own PLUGINS_PATH
    code, _, _ = api(f"{url}/deployments/{uuid.uuid4()}/create_flow_run",
                     body={"parameters": {"config": {"PLUGINS_PATH": "/tmp/evil"}}})
    assert code == 401
    code, body, _ = api(f"{url}/flow_runs/filter", body={}, auth=secret(server["data"]))
    assert code == 200 and isinstance(body, list)
    code, body, _ = api(f"{url}/health")  # liveness stays open (no data in it)
    assert (code, body) == (200, True)


def test_ui_settings_name_the_real_api_and_ask_for_a_login(server: dict[str, Any]) -> None:
    code, body, _ = api(f"{server['ui_url']}ui-settings")
    assert code == 200
    assert body["api_url"] == server["api_url"]  # not Prefect's default :4200
    assert body["auth"] == "BASIC"


def test_cors_only_for_the_servers_own_origin(server: dict[str, Any]) -> None:
    own = server["ui_url"].rstrip("/")
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    url = f"{server['api_url']}/flow_runs/filter"
    code, _, headers = api(url, method="OPTIONS", headers={"Origin": own, **preflight})
    assert code == 200 and headers.get("access-control-allow-origin") == own
    for other in ("http://evil.example", "http://127.0.0.1:1", "null"):
        code, _, headers = api(url, method="OPTIONS", headers={"Origin": other, **preflight})
        assert "access-control-allow-origin" not in {k.lower() for k in headers}, (other,
                                                                                   headers)


def test_secret_is_private_to_the_owner(server: dict[str, Any]) -> None:
    home = server["data"] / "prefect"
    assert stat.S_IMODE((home / "auth_string").stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert secret(server["data"]).startswith("archiveflow:")
    assert len(secret(server["data"])) > 40


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to act as a second account (nobody)")
def test_another_account_can_neither_read_the_secret_nor_use_the_api(
        server: dict[str, Any]) -> None:
    secret_file = server["data"] / "prefect" / "auth_string"
    # the tmp folders above the data folder are the test's own (0700): open them to
    # `nobody` for this test, as a shared machine's /srv or home folder would be
    opened = [p for p in [*reversed(secret_file.parents[1:5])]
              if not p.stat().st_mode & 0o001]
    for p in opened:
        p.chmod(p.stat().st_mode | 0o011)
    try:
        as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        read = subprocess.run([*as_nobody, "cat", str(secret_file)], capture_output=True,
                              text=True, timeout=30)
        assert read.returncode != 0 and "Permission denied" in read.stderr, read
        assert secret(server["data"]) not in read.stdout
        ls = subprocess.run([*as_nobody, "ls", str(secret_file.parent)], capture_output=True,
                            text=True, timeout=30)
        assert ls.returncode != 0, ls.stdout  # not even the names (prefect.db, logs) show
        code = ("import sys, urllib.request, urllib.error\n"
                "req = urllib.request.Request(sys.argv[1], data=b'{}', method='POST',"
                " headers={'Content-Type': 'application/json'})\n"
                "try:\n    print(urllib.request.urlopen(req, timeout=20).status)\n"
                "except urllib.error.HTTPError as e:\n    print(e.code)\n")
        post = subprocess.run([*as_nobody, sys.executable, "-I", "-c", code,
                               f"{server['api_url']}/flow_runs/filter"],
                              capture_output=True, text=True, timeout=60, cwd="/")
        assert post.stdout.strip() == "401", post
    finally:
        for p in opened:
            p.chmod(p.stat().st_mode & ~0o011)


def test_login_prints_the_ui_and_its_password(server: dict[str, Any],
                                              local_env: dict[str, str]) -> None:
    proc = af(server["data"], "server", "login", env=local_env)
    assert proc.returncode == 0, proc.stderr
    assert f"password  {secret(server['data'])}" in proc.stdout
    assert server["ui_url"] in proc.stdout


def test_start_again_reuses_the_running_server(server: dict[str, Any],
                                               local_env: dict[str, str]) -> None:
    proc = af(server["data"], "server", "start", env=local_env)
    assert proc.returncode == 0, proc.stderr
    assert "already running" in proc.stdout and f"pid {server['pid']}" in proc.stdout


HOLDER = ("import sys, time; from archiveflow.flows.prefect_server import configure_prefect;"
          " configure_prefect(sys.argv[1]); print('ready', flush=True); time.sleep(120)")


def test_stop_is_refused_while_in_use_then_stops(server: dict[str, Any],
                                                 local_env: dict[str, str]) -> None:
    data = server["data"]
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(data)], env=local_env,
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        st = status(data, local_env)
        assert st["holders"] == [holder.pid] and st["pid"] == server["pid"]
        refused = af(data, "server", "stop", env=local_env)
        assert refused.returncode == 1
        assert f"in use by pid {holder.pid}" in refused.stderr, refused.stderr
        assert psutil.pid_exists(server["pid"])
    finally:
        holder.kill()
        holder.wait()
    stopped = af(data, "server", "stop", env=local_env)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped (pid {server['pid']})" in stopped.stdout
    deadline = time.time() + 15
    while psutil.pid_exists(server["pid"]) and time.time() < deadline:
        time.sleep(0.2)
    assert not psutil.pid_exists(server["pid"])
    assert status(data, local_env)["running"] is False
    again = af(data, "server", "stop", env=local_env)
    assert again.returncode == 0 and "not running" in again.stdout
