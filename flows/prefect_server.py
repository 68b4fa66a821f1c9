"""How archiveflow talks to Prefect: which API server, which settings, at what cost.

Call :func:`configure_prefect` (or :func:`start_in_background`) before running a flow.
This module imports neither DuckDB nor ``store``/``tasks``, and imports Prefect only
lazily, so the CLI can start hook processes before Prefect is loaded.

Choices (numbers from bench/prefect_overhead.py, in bench/PREFECT.md; 2 cores, loaded):

* A user-set ``PREFECT_API_URL`` wins: mode ``external``; we only add client settings.
* Otherwise a **local API server** lives under ``<data_dir>/prefect/`` (PREFECT_HOME,
  SQLite DB, ``server.json``, ``server.log``), started detached by the first command and
  reused by later ones: ``server.json`` (pid + psutil start time, so PID reuse is caught)
  and ``/api/health``; an flock makes concurrent CLIs share one server. It is Prefect's
  ASGI app under uvicorn with all services (schedules, UI), without the
  ``prefect server start`` CLI (40 vs 55 s fresh), plus a watchdog that exits when the
  data dir is deleted. Never Prefect's ephemeral mode (a server per process, ~19 s).
  3.9.1 has no in-process API for the engine: ``get_client()`` without a URL always
  spawns ``SubprocessASGIServer``.
* A fresh data dir starts from a **pre-migrated DB template** (sqlite backup of the first
  DB this user migrated, per Prefect version, in ``$XDG_CACHE_HOME/archiveflow``):
  41 -> 11 s to healthy.
* Even warm, ``import prefect`` (1.3-5 s) exceeds the 1.5 s budget to the first hook, so
  Prefect must be off that path: :func:`start_in_background` spawns/reuses the server,
  imports the engine and waits for health in a thread while the CLI starts the first
  hooks (first hook 0.2-0.5 s after process start, cold or warm).
* :func:`granularity` defaults to ``snapshot`` (one task run per Snapshot): 1.03-1.28x
  the bare process floor, vs 2.3-2.7x for a task per ArchiveResult and 1.9-8x for
  snapshot subflows; the SQLite server records only ~6-22 task runs/s.
* Client settings: analytics/telemetry/resource metrics off, results not persisted, the
  per-task-run INFO line kept off the API. Heartbeats can only be turned off in code: use
  async flows (they don't wait for the heartbeat thread) or :func:`no_heartbeats`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import psutil

Mode = Literal["external", "local-started", "local-reused"]
Granularity = Literal["task", "snapshot"]

START_TIMEOUT_S = float(os.environ.get("ARCHIVEFLOW_PREFECT_START_TIMEOUT", "120"))

CLIENT_SETTINGS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS": "false",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # The engine's per-task INFO line ("Finished in state Completed()") is one log row per
    # task run on the server; task loggers keep WARNING+, flow loggers keep INFO.
    "PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL": "WARNING",
}


# The embedded server's services, tuned for one local archiver (a variable set in the
# environment wins). Measured on 2 cores, 200 snapshots x 5 no-op hooks (a task run per
# Snapshot and per ArchiveResult): Prefect's defaults record every event in its own SQLite
# transaction, 183 ms of server CPU per Snapshot, which the hooks have to share the cores
# with; in batches of up to 500 it took 78 ms.
SERVER_SETTINGS = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "500",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "500",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "500",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": "500",
    "PREFECT_SERVER_SERVICES_TRIGGERS_READ_BATCH_SIZE": "500",
    # Prefect's raw event stream (the UI's Events page) is not stored: runs, their states and
    # logs are (they come from the same events through the task-run recorder). Storing it cost
    # ~30 ms of server CPU per Snapshot: N=1000 x 5 no-op hooks ran at 1.26x the floor without
    # it, 1.40x with it. Set this variable to true to keep the stream.
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
}


@dataclass(frozen=True)
class PrefectRuntime:
    mode: Mode
    api_url: str
    home: Path | None  # the local server's PREFECT_HOME (None when external)
    pid: int | None  # the local server's pid
    seconds: float  # time configure_prefect took (incl. waiting for health)


def granularity() -> Granularity:
    """What Prefect records per hook run: a task run each, or one per Snapshot."""
    value = os.environ.get("ARCHIVEFLOW_PREFECT_GRANULARITY", "snapshot").strip().lower()
    if value not in ("task", "snapshot"):
        raise ValueError(f"ARCHIVEFLOW_PREFECT_GRANULARITY must be task|snapshot, not {value!r}")
    return value  # type: ignore[return-value]


def prefect_home(data_dir: Path) -> Path:
    return Path(data_dir) / "prefect"


def _apply_env(values: dict[str, str]) -> None:
    os.environ.update(values)
    if "prefect.context" in sys.modules:  # Prefect already imported: re-read the env
        sys.modules["prefect.context"].refresh_global_settings_context()
    if "prefect.logging.configuration" in sys.modules:  # and re-apply logger levels
        with contextlib.suppress(Exception):
            sys.modules["prefect.logging.configuration"].setup_logging(incremental=True)


def _healthy(api_url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def _read_info(home: Path) -> dict | None:
    try:
        info = json.loads((home / "server.json").read_text())
        proc = psutil.Process(info["pid"])
        if abs(proc.create_time() - info["create_time"]) > 1.0 or not proc.is_running():
            return None  # the pid was reused by another process
        return info
    except (OSError, ValueError, KeyError, psutil.Error):
        return None


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "server.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _template_path() -> Path:
    from importlib.metadata import version

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "archiveflow" / f"prefect-{version('prefect')}-template.db"


def _seed_from_template(home: Path) -> None:
    template = _template_path()
    if not (home / "prefect.db").exists() and template.exists():
        shutil.copyfile(template, home / "prefect.db")
        memo = template.with_suffix(".memo_store.toml")  # skips block re-registration
        if memo.exists():
            shutil.copyfile(memo, home / "memo_store.toml")


def _save_template(home: Path) -> None:
    template = _template_path()
    if template.exists() or not (home / "prefect.db").exists():
        return
    template.parent.mkdir(parents=True, exist_ok=True)
    tmp = template.with_suffix(f".{os.getpid()}.tmp")
    src, dst = sqlite3.connect(home / "prefect.db"), sqlite3.connect(tmp)
    try:
        src.backup(dst)  # consistent copy of a live WAL database
    finally:
        src.close()
        dst.close()
    if (home / "memo_store.toml").exists():
        shutil.copyfile(home / "memo_store.toml", template.with_suffix(".memo_store.toml"))
    os.replace(tmp, template)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_server(home: Path) -> dict:
    """Start the server detached and record it in server.json at once (before it is healthy),
    so a concurrent caller waits for this one instead of starting a second."""
    _seed_from_template(home)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(CLIENT_SETTINGS, PREFECT_HOME=str(home), PREFECT__SERVER_FINAL="1")
    for key, value in SERVER_SETTINGS.items():
        env.setdefault(key, value)
    if os.environ.get("ARCHIVEFLOW_PREFECT_UI", "1") == "0":
        env["PREFECT_UI_ENABLED"] = "false"
    cmd = [sys.executable, "-P", str(Path(__file__).resolve()), "serve", str(home), str(port)]
    fresh = not (home / "prefect.db").exists()
    with open(home / "server.log", "ab") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=home, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, start_new_session=True, close_fds=True)  # fmt: skip
    info = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(),
            "port": port, "api_url": f"http://127.0.0.1:{port}/api",
            "started_at": time.time(), "fresh": fresh}  # fmt: skip
    (home / "server.json").write_text(json.dumps(info))
    return info


def _wait_healthy(home: Path, info: dict) -> bool:
    deadline = info["started_at"] + START_TIMEOUT_S
    while not _healthy(info["api_url"], timeout=0.5):
        if not psutil.pid_exists(info["pid"]) or time.time() > deadline:
            return False
        with contextlib.suppress(psutil.Error):
            if psutil.Process(info["pid"]).status() == psutil.STATUS_ZOMBIE:
                return False
        time.sleep(0.05)
    if info.get("fresh"):  # the first DB this user migrated becomes the template
        with contextlib.suppress(OSError, sqlite3.Error):
            _save_template(home)
    return True


def configure_prefect(data_dir: Path, wait: bool = True) -> PrefectRuntime:
    """Point this process's Prefect client at the right API server, starting one if needed.

    Idempotent; safe to call from several processes at once. Sets environment variables
    (inherited by hook subprocesses, harmlessly) and refreshes Prefect's settings if
    Prefect is already imported. ``wait=False`` returns once the server is spawned; call
    again (it then reuses) to wait for it."""
    t0 = time.perf_counter()
    user_url = os.environ.get("PREFECT_API_URL", "").strip()
    if user_url and user_url != os.environ.get("_ARCHIVEFLOW_LOCAL_API_URL"):
        _apply_env(CLIENT_SETTINGS)
        return PrefectRuntime("external", user_url, None, None, time.perf_counter() - t0)
    home = prefect_home(data_dir).resolve()
    info: dict | None = None
    for attempt in range(2):
        mode: Mode = "local-reused"
        with _locked(home):
            info = _read_info(home)
            if info is None:
                info, mode = _spawn_server(home), "local-started"
        if not wait or _wait_healthy(home, info):
            break
        with _locked(home):  # dead, or hung past its start timeout: replace it once
            if _read_info(home) == info:
                _stop_pid(info["pid"])
                (home / "server.json").unlink(missing_ok=True)
        if attempt:
            raise RuntimeError(f"Prefect server did not become healthy; see {home}/server.log")
    assert info is not None
    url = info["api_url"]
    _apply_env({**CLIENT_SETTINGS, "PREFECT_API_URL": url, "_ARCHIVEFLOW_LOCAL_API_URL": url})
    return PrefectRuntime(mode, url, home, info["pid"], time.perf_counter() - t0)


def start_in_background(data_dir: Path, warm_import: bool = True) -> Future[PrefectRuntime]:
    """Reuse-or-spawn the server, import Prefect's flow engine while it boots, wait for it:
    all in a daemon thread. The CLI calls this first, starts the first Snapshot's hooks
    meanwhile, and waits on the future only when it enters the flow."""
    fut: Future[PrefectRuntime] = Future()

    def run() -> None:
        try:
            t0 = time.perf_counter()
            first = configure_prefect(data_dir, wait=False)  # spawns at once if needed
            if warm_import:
                import prefect.flow_engine  # noqa: F401  (1-5 s, overlapped with server boot)
            rt = configure_prefect(data_dir)
            fut.set_result(replace(rt, mode=first.mode, seconds=time.perf_counter() - t0))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            fut.set_exception(exc)

    threading.Thread(target=run, name="prefect-bootstrap", daemon=True).start()
    return fut


def _stop_pid(pid: int, timeout: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)  # the server leads its own session/process group
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).wait(5)
    except psutil.Error:
        pass


def stop_local_server(data_dir: Path) -> bool:
    """Stop the data dir's local Prefect server. True if one was running."""
    home = prefect_home(data_dir).resolve()
    if not home.exists():
        return False
    with _locked(home):
        info = _read_info(home)
        if info is not None:
            if "prefect.logging.handlers" in sys.modules:  # ship this process's queued logs
                with contextlib.suppress(Exception):
                    sys.modules["prefect.logging.handlers"].APILogHandler().flush()
            _stop_pid(info["pid"])
        with contextlib.suppress(FileNotFoundError):
            (home / "server.json").unlink()
    if os.environ.get("_ARCHIVEFLOW_LOCAL_API_URL") == (info or {}).get("api_url"):
        os.environ.pop("_ARCHIVEFLOW_LOCAL_API_URL", None)
        os.environ.pop("PREFECT_API_URL", None)
    return info is not None


@contextlib.contextmanager
def no_heartbeats() -> Iterator[None]:
    """Sync flows otherwise wait ~1 s at their end for the heartbeat thread. This also
    turns off crash detection for deployed runs: use it for CLI runs only."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def _serve(home: Path, port: int) -> None:
    """The server process: Prefect's API app under uvicorn (what `prefect server start`
    runs, minus the CLI's imports), plus a watchdog that exits once the data dir is gone,
    so a deleted data dir (a test's tmp dir, say) never leaves a 220 MB server behind."""
    import uvicorn

    def watchdog() -> None:
        while home.is_dir():
            time.sleep(5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watchdog, daemon=True).start()
    uvicorn.run("prefect.server.api.server:create_app", factory=True, host="127.0.0.1",
                port=port, log_level="warning", lifespan="on")  # fmt: skip


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    _serve(Path(sys.argv[2]), int(sys.argv[3]))
