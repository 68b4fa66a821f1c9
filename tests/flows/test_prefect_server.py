"""flows/prefect_server.py against a real Prefect API server process on 127.0.0.1 (no mocks).

One server start (~10-40 s on a loaded 2-core box) is shared by the module's tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from archiveflow.flows import prefect_server as runtime

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path_factory):
    for key in list(os.environ):
        if key.startswith("PREFECT_") or key.startswith("_ARCHIVEFLOW"):
            monkeypatch.delenv(key)
    # a template cache of our own, so a test never writes to ~/.cache; seeded read-only
    # from the user's template when there is one (saves the migrations: ~30 s here)
    cache = tmp_path_factory.getbasetemp() / "cache"
    real = runtime._template_path()
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    if real.exists() and not runtime._template_path().exists():
        runtime._template_path().parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real, runtime._template_path())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    yield d
    runtime.stop_local_server(d)


def _health(url: str) -> int:
    with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
        return resp.status


CONFIGURE = (
    "import sys; from archiveflow.flows import prefect_server as runtime;"
    " rt = runtime.configure_prefect(sys.argv[1]);"
    "print(rt.mode, rt.api_url, rt.pid)"
)


def test_start_once_then_reuse_then_stop(data_dir: Path) -> None:
    # two CLI processes at once on a fresh data dir: one starts the server, one waits for it
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    repo = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONFIGURE, str(data_dir)],
            env=env,
            cwd=repo,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = sorted(p.communicate(timeout=200)[0].split() for p in procs)
    assert [p.returncode for p in procs] == [0, 0]
    assert [o[0] for o in outs] == ["local-reused", "local-started"]
    assert outs[0][1:] == outs[1][1:]  # same URL, same pid
    url, pid = outs[0][1], int(outs[0][2])
    assert _health(url) == 200
    assert (data_dir / "prefect" / "prefect.db").exists()

    # the server outlived both processes; this process reuses it too
    first = runtime.configure_prefect(data_dir)
    assert (first.mode, first.api_url, first.pid) == ("local-reused", url, pid)
    assert os.environ["PREFECT_API_URL"] == url
    # every client we configure carries the data folder's secret (the server requires it)
    secret = (data_dir / "prefect" / "auth_string").read_text().strip()
    assert os.environ["PREFECT_API_AUTH_STRING"] == secret
    again = runtime.configure_prefect(data_dir)
    assert (again.mode, again.api_url) == ("local-reused", url)

    # the first pre-migrated DB became the template for fresh data dirs
    assert runtime._template_path().exists()

    # a flow run in this process is recorded by that server
    from prefect import flow, get_client

    @flow
    def hello() -> int:
        return 1

    assert hello() == 1
    with get_client(sync_client=True) as client:
        assert client.api_url.host == "127.0.0.1"
        assert any(r.name for r in client.read_flow_runs())

    assert runtime.stop_local_server(data_dir) is True
    assert not psutil.pid_exists(first.pid) or psutil.Process(first.pid).status() == "zombie"
    assert not (data_dir / "prefect" / "server.json").exists()
    assert runtime.stop_local_server(data_dir) is False


def test_user_api_url_is_honoured(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    rt = runtime.configure_prefect(tmp_path)
    assert (rt.mode, rt.api_url, rt.pid) == ("external", "http://127.0.0.1:9/api", None)
    assert not (tmp_path / "prefect").exists()  # no local server started
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_granularity_setting(monkeypatch) -> None:
    assert runtime.granularity() == "snapshot"
    monkeypatch.setenv("ARCHIVEFLOW_PREFECT_GRANULARITY", "task")
    assert runtime.granularity() == "task"
    monkeypatch.setenv("ARCHIVEFLOW_PREFECT_GRANULARITY", "bogus")
    with pytest.raises(ValueError):
        runtime.granularity()


def test_import_is_light() -> None:
    # the CLI imports this before its first hook: no Prefect, no DuckDB, no store/tasks
    code = (
        "import sys; import archiveflow.flows.prefect_server; "
        "print(sorted(m for m in ('prefect', 'duckdb', 'archiveflow.store', 'archiveflow.tasks')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2]).stdout  # fmt: skip
    assert out.strip() == "[]"


def test_one_secret_per_data_folder_even_when_created_at_once(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from archiveflow.flows import prefect_home;"
            " print(prefect_home.auth_string(Path(sys.argv[1])))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "prefect")],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    secrets = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(secrets) == 1
    (secret,) = secrets
    assert secret.startswith("archiveflow:") and len(secret) > 40
    assert (tmp_path / "prefect" / "auth_string").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "prefect").stat().st_mode & 0o777 == 0o700
    assert [p.name for p in (tmp_path / "prefect").iterdir()] == ["auth_string"]  # no temps


def test_server_env_auth_cors_and_ui_url(tmp_path: Path) -> None:
    user = {"PREFECT_API_URL": "http://elsewhere/api", "PREFECT_API_AUTH_STRING": "x:y",
            "PATH": "/bin"}
    env = runtime.server_env(tmp_path / "prefect", 41234, user)
    assert env["PREFECT_SERVER_API_AUTH_STRING"] == runtime.login_string(tmp_path)
    assert env["PREFECT_UI_API_URL"] == "http://127.0.0.1:41234/api"
    assert env["PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS"] == (
        "http://127.0.0.1:41234,http://localhost:41234")
    assert "PREFECT_API_URL" not in env and "PREFECT_API_AUTH_STRING" not in env
    assert env["PREFECT_HOME"] == str(tmp_path / "prefect")
    # two glibc malloc arenas for the server (its peak RSS), unless the user set another
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert runtime.server_env(tmp_path / "prefect", 41234, {"MALLOC_ARENA_MAX": "8"})[
        "MALLOC_ARENA_MAX"] == "8"


def test_idle_exit_setting() -> None:
    from archiveflow.flows.prefect_server_process import idle_exit_seconds

    assert idle_exit_seconds({}) == 600
    assert idle_exit_seconds({"ARCHIVEFLOW_PREFECT_IDLE_EXIT": "0"}) == 0
    assert idle_exit_seconds({"ARCHIVEFLOW_PREFECT_IDLE_EXIT": "90"}) == 90
    for bad in ("-1", "10m"):
        with pytest.raises(ValueError, match="ARCHIVEFLOW_PREFECT_IDLE_EXIT"):
            idle_exit_seconds({"ARCHIVEFLOW_PREFECT_IDLE_EXIT": bad})


def test_stopping_a_server_that_is_not_running_keeps_the_users_api_url(
        tmp_path: Path, monkeypatch) -> None:
    """stop_local_server forgets PREFECT_API_URL only when this process was pointed at the
    server it stopped (it dropped a user-set URL when neither was known: None == None, and
    every later CLI run of the test session then started a server of its own)."""
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.delenv("_ARCHIVEFLOW_LOCAL_API_URL", raising=False)
    runtime.prefect_home(tmp_path).mkdir(parents=True)
    assert runtime.stop_local_server(tmp_path) is False
    assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:9/api"
