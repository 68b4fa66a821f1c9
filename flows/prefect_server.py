"""How archiveflow talks to Prefect: which API server, which settings, at what cost.

Call :func:`configure_prefect` (or :func:`start_in_background`) before running a flow.
This module imports neither DuckDB nor ``store``/``tasks``, and imports Prefect only
lazily, so the CLI can start hook processes before Prefect is loaded.

Choices (numbers from bench/prefect_overhead.py, in bench/PREFECT.md; 2 cores, loaded):

* A user-set ``PREFECT_API_URL`` wins: mode ``external``; we only add client settings.
* Otherwise a **local API server** lives under ``<data_dir>/prefect/`` (PREFECT_HOME,
  SQLite DB, ``server.json``, ``server.log``; files listed in flows/prefect_home.py),
  started detached by the first command and reused by later ones: ``server.json`` (pid +
  psutil start time, so PID reuse is caught) and ``/api/health``; an flock makes
  concurrent CLIs share one server. It is Prefect's ASGI app under uvicorn with all
  services (schedules, UI), without the ``prefect server start`` CLI (40 vs 55 s fresh);
  see flows/prefect_server_process.py for its idle exit and watchdog. Never Prefect's
  ephemeral mode (a server per process, ~19 s).
* The local server **requires authentication**: Prefect's basic auth with a secret made
  per data folder (``<data_dir>/prefect/auth_string``, 0600), given to the server and to
  every client this module configures (``PREFECT_API_AUTH_STRING``, inherited by `serve`'s
  run subprocesses); CORS allows only the server's own origin; the UI is told the real API
  URL (Prefect's default names port 4200).
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
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import psutil

from archiveflow.flows import prefect_home as files
from archiveflow.flows.prefect_server_process import idle_exit_seconds
from archiveflow.settings import settings

Mode = Literal["external", "local-started", "local-reused"]
Granularity = Literal["task", "snapshot"]


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
    # Not a Prefect setting: glibc's malloc arenas. The server's threads (uvicorn, a thread
    # per aiosqlite connection, services) each got an arena of their own, holding freed
    # memory apart; two arenas: peak RSS during a 1,000-URL crawl 233-238 -> 226-231 MB
    # (bench/README.md, #18). Other allocators ignore it.
    "MALLOC_ARENA_MAX": "2",
}


@dataclass(frozen=True)
class PrefectRuntime:
    mode: Mode
    api_url: str
    home: Path | None  # the local server's PREFECT_HOME (None when external)
    pid: int | None  # the local server's pid
    seconds: float  # time configure_prefect took (incl. waiting for health)

    @property
    def ui_url(self) -> str:
        """The Prefect UI's address (the API's server, without ``/api``), ending in ``/``."""
        return self.api_url.removesuffix("/").removesuffix("/api") + "/"

    def ui_line(self) -> str:
        """One line for the user: where to watch runs, and how to log in."""
        login = " (log in: `archiveflow server login`)" if self.mode != "external" else ""
        return f"Prefect UI: {runs_page(self.ui_url)}{login}"


def runs_page(ui_url: str) -> str:
    """The UI's runs page. Prefect serves two UIs (v1 at ``/``, v2 under ``/v2``) and names
    its default in ``/ui-settings``; the runs page of the default one."""
    try:
        with urllib.request.urlopen(f"{ui_url}ui-settings", timeout=2) as resp:
            ui = json.loads(resp.read())
        base = ui.get(f"{ui.get('default_ui')}_base_url") or "/"
    except (OSError, ValueError, AttributeError):
        base = "/"
    return ui_url.removesuffix("/") + base.rstrip("/") + "/runs"


def granularity() -> Granularity:
    """What Prefect records per hook run: a task run each, or one per Snapshot."""
    return settings().prefect_granularity  # SettingsError (a ValueError) names a bad value


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


def _read_info(home: Path) -> dict[str, Any] | None:
    return files.read_server_info(home)


_locked = files.locked


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


def server_env(home: Path, port: int, environ: dict[str, str]) -> dict[str, str]:
    """The server process's environment: ours, minus client-only values, plus its settings.

    Auth: Prefect's basic auth (``PREFECT_SERVER_API_AUTH_STRING``). CORS: only the
    server's own origins (the UI is same-origin; a page elsewhere gets no CORS grant). The
    UI's API URL: Prefect's default names port 4200, not ours."""
    origin = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in environ.items()
           if k not in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_API_KEY")}
    env.update(CLIENT_SETTINGS, PREFECT_HOME=str(home), PREFECT__SERVER_FINAL="1")
    for key, value in SERVER_SETTINGS.items():
        env.setdefault(key, value)
    env.update(
        PREFECT_SERVER_API_AUTH_STRING=files.auth_string(home),
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_UI_API_URL=f"{origin}/api",
        PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS=f"{origin},http://localhost:{port}",
    )
    if not settings(environ).prefect_ui:
        env["PREFECT_UI_ENABLED"] = "false"
    return env


def _spawn_server(home: Path) -> dict[str, Any]:
    """Start the server detached and record it in server.json at once (before it is healthy),
    so a concurrent caller waits for this one instead of starting a second."""
    _seed_from_template(home)
    port = _free_port()
    env = server_env(home, port, dict(os.environ))
    idle_exit = idle_exit_seconds(env)  # a bad value fails here, in the user's command
    script = Path(__file__).resolve().with_name("prefect_server_process.py")
    cmd = [sys.executable, "-P", str(script), "serve", str(home), str(port)]
    fresh = not (home / "prefect.db").exists()
    log_fd = os.open(home / "server.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(log_fd, "ab") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=home, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, start_new_session=True, close_fds=True)  # fmt: skip
    info = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(),
            "port": port, "api_url": f"http://127.0.0.1:{port}/api",
            "started_at": time.time(), "fresh": fresh, "auth": True,
            "idle_exit": idle_exit}  # fmt: skip
    (home / "server.json").write_text(json.dumps(info))
    return info


def _wait_healthy(home: Path, info: dict) -> bool:
    deadline = info["started_at"] + settings().prefect_start_timeout
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
    info: dict[str, Any] | None = None
    for attempt in range(2):
        mode: Mode = "local-reused"
        with _locked(home):
            info = _read_info(home)
            if info is not None and not info.get("auth"):
                # started by an archiveflow without API auth: replace it with one that has it
                _stop_pid(info["pid"])
                info = None
            if info is None:
                info, mode = _spawn_server(home), "local-started"
            files.hold(home)  # under the lock: an idle exit that comes next sees the lease
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
    _apply_env({**CLIENT_SETTINGS, "PREFECT_API_URL": url, "_ARCHIVEFLOW_LOCAL_API_URL": url,
                "PREFECT_API_AUTH_STRING": files.auth_string(home)})
    return PrefectRuntime(mode, url, home, info["pid"], time.perf_counter() - t0)


def start_in_background(data_dir: Path, warm_import: bool = True,
                        report: Callable[[str], None] | None = None,
                        gate: threading.Event | None = None) -> Future[PrefectRuntime]:
    """Reuse-or-spawn the server, import Prefect's flow engine while it boots, wait for it:
    all in a daemon thread. The CLI calls this first, starts the first Snapshot's hooks
    meanwhile, and waits on the future only when it enters the flow.

    ``report`` (e.g. the CLI's ``say``) gets one line when a server is being started (why
    the first crawl of a data folder waits) and one with the UI's address once it is up.
    ``gate``: the engine's import waits until it is set (one GIL: the caller's first hooks
    go first; the server is spawned at once all the same)."""
    fut: Future[PrefectRuntime] = Future()

    def run() -> None:
        try:
            t0 = time.perf_counter()
            first = configure_prefect(data_dir, wait=False)  # spawns at once if needed
            if report is not None and first.mode == "local-started":
                _report(report, f"starting the local Prefect server for {data_dir} "
                        f"({_start_estimate()}; later commands reuse it)…")
            if gate is not None:
                gate.wait()
            if warm_import:
                import prefect.flow_engine  # noqa: F401  (1-5 s, overlapped with server boot)
            rt = configure_prefect(data_dir)
            if report is not None:
                _report(report, rt.ui_line())
            fut.set_result(replace(rt, mode=first.mode, seconds=time.perf_counter() - t0))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            fut.set_exception(exc)

    threading.Thread(target=run, name="prefect-bootstrap", daemon=True).start()
    return fut


def _start_estimate() -> str:
    # measured (MEASUREMENTS.md, bench/PREFECT.md): ~11 s from the pre-migrated template DB,
    # ~40 s when this machine has migrated none yet
    return "first run: ~10 s" if _template_path().exists() else "first run on this machine: ~40 s"


def _report(report: Callable[[str], None], line: str) -> None:
    # Said from the bootstrap thread, maybe while the crawl's live progress line is drawn
    # with \r on a terminal: clear that line first so ours is not glued to its end.
    report(("\r\x1b[K" if sys.stderr.isatty() else "") + line)


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
    """Stop the data dir's local Prefect server. True if one was running.

    It stops even while a crawl or `serve` holds it (they lose their Prefect API):
    `archiveflow server stop` checks :func:`server_status` ``holders`` first."""
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
    # Forget the URL only when this process was pointed at the server just stopped: with
    # neither set (None == None) this used to drop a PREFECT_API_URL the user had set.
    local = os.environ.get("_ARCHIVEFLOW_LOCAL_API_URL")
    if local is not None and info is not None and local == info.get("api_url"):
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


@dataclass(frozen=True)
class ServerStatus:
    """What `archiveflow server status` shows about a data folder's local server."""

    running: bool
    home: Path
    pid: int | None = None
    api_url: str | None = None
    healthy: bool = False
    rss_bytes: int | None = None
    up_seconds: float | None = None
    idle_seconds: float | None = None
    idle_exit: float | None = None  # seconds of idleness before it exits; 0 = never
    holders: tuple[tuple[int, str], ...] = ()  # (pid, command line) of processes using it

    @property
    def ui_url(self) -> str | None:
        """The UI's address, ending in ``/``."""
        return self.api_url.removesuffix("/api") + "/" if self.api_url else None


def server_status(data_dir: Path) -> ServerStatus:
    """The local server of ``data_dir``, read from its files and process; starts nothing.

    The health probe is unauthenticated and does not count as activity, so asking does
    not keep an idle server up."""
    home = prefect_home(data_dir).resolve()
    info = _read_info(home) if home.is_dir() else None
    if info is None:
        return ServerStatus(running=False, home=home)
    rss = None
    with contextlib.suppress(psutil.Error):
        rss = psutil.Process(info["pid"]).memory_info().rss
    held = []
    for pid in files.holders(home):
        with contextlib.suppress(psutil.Error):
            held.append((pid, " ".join(psutil.Process(pid).cmdline())[:200]))
    return ServerStatus(
        running=True, home=home, pid=info["pid"], api_url=info["api_url"],
        healthy=_healthy(info["api_url"]), rss_bytes=rss,
        up_seconds=time.time() - float(info["started_at"]),
        idle_seconds=0.0 if held else files.idle_seconds(home, info),
        idle_exit=float(info.get("idle_exit", 0)), holders=tuple(held))


def login_string(data_dir: Path) -> str:
    """The UI's password for ``data_dir``'s local server (its ``user:password`` auth
    string; created now if no server has started yet)."""
    return files.auth_string(prefect_home(data_dir).resolve())
