"""The local Prefect server process: Prefect's API and UI app under uvicorn, plus two watchers.

Started detached by flows/prefect_server.py as ``python -P <this file> serve <home> <port>``
with the server's settings in its environment (auth string, UI API URL, CORS origins; see
``server_env`` there). Prefect's own ``prefect server start`` CLI is not used: its imports
cost 15 s more on a fresh start.

* **Idle exit.** The app is wrapped in an ASGI layer that notes the time of every request
  (health probes excepted, so `archiveflow server status` does not keep it up) and counts
  open websockets. The server exits once it has been idle for ``ARCHIVEFLOW_PREFECT_IDLE_EXIT``
  seconds (default 600; 0 = never): no request, no open websocket, and no live holder lease
  (a crawl or `serve` holds it for as long as it runs; see prefect_home.hold). It takes
  server.lock before it goes, so a CLI that is about to reuse it either gets in first (and
  its lease keeps the server) or waits and starts a new one.
* **Watchdog.** It exits once the data folder is deleted (a test's tmp dir, say), so a
  deleted data folder never leaves a 220 MB server behind.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

from archiveflow.settings import settings

QUIET_PATHS: Final[frozenset[str]] = frozenset({"/api/health", "/api/ready"})
FORCED_EXIT_AFTER_S: Final[float] = 30.0
_KEPT: list[Any] = []  # the lock file of an idle exit: held until the process is gone


def idle_exit_seconds(environ: dict[str, str] | None = None) -> float:
    """``ARCHIVEFLOW_PREFECT_IDLE_EXIT`` (seconds, 0 = never), default 600."""
    return settings(environ).prefect_idle_exit  # SettingsError (a ValueError) names a bad value


class Activity:
    """ASGI wrapper: when the last request came, how many websockets are open."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last_request = time.time()
        self.open_websockets = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope.get("type")
        if kind == "websocket":
            self.open_websockets += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self.open_websockets -= 1
                self.last_request = time.time()
            return
        if kind == "http" and scope.get("path") not in QUIET_PATHS:
            self.last_request = time.time()
        await self.app(scope, receive, send)


def _exit_if_idle(home: Path, activity: Activity, idle_exit: float) -> bool:
    """Take server.lock without waiting, check again that nobody uses the server, and if so
    remove server.json and stop. The lock stays held until this process is gone."""
    from archiveflow.flows.prefect_home import holders, read_server_info

    fh = open(home / "server.lock", "w")  # noqa: SIM115 - kept open on purpose (see above)
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # a CLI is starting, reusing or stopping: look again next tick
        fh.close()
        return False
    idle = time.time() - activity.last_request
    if holders(home, prune=True) or activity.open_websockets or idle < idle_exit:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()
        return False
    info = read_server_info(home)
    if info is not None and info.get("pid") == os.getpid():
        (home / "server.json").unlink(missing_ok=True)
    print(f"archiveflow: idle for {idle:.0f}s (ARCHIVEFLOW_PREFECT_IDLE_EXIT={idle_exit:g}): "
          "exiting", file=sys.stderr, flush=True)
    _stop_self(keep=fh)
    return True


def _stop_self(keep: Any = None) -> None:
    """SIGTERM to ourselves (uvicorn shuts down gracefully), and a hard exit if that hangs."""
    def force() -> None:
        time.sleep(FORCED_EXIT_AFTER_S)
        os._exit(0)

    threading.Thread(target=force, daemon=True).start()
    if keep is not None:
        _KEPT.append(keep)
    os.kill(os.getpid(), signal.SIGTERM)


def _watch(home: Path, activity: Activity, idle_exit: float) -> None:
    """Every tick: exit if the data folder is gone; record activity; exit when idle."""
    from archiveflow.flows.prefect_home import holders, write_activity

    tick = 5.0 if idle_exit <= 0 else min(5.0, max(0.5, idle_exit / 4))
    busy_at = time.time()
    last_written: dict[str, Any] = {}
    while True:
        time.sleep(tick)
        if not home.is_dir():
            _stop_self()
            return
        now = time.time()
        held = holders(home, prune=True)
        if held or activity.open_websockets:
            busy_at = now
        busy_at = max(busy_at, activity.last_request)
        state = {"busy_at": round(busy_at, 1), "holders": held,
                 "open_websockets": activity.open_websockets, "idle_exit": idle_exit}
        if state != last_written:
            try:
                write_activity(home, state)
                last_written = state
            except OSError:
                pass
        if idle_exit > 0 and now - busy_at >= idle_exit and _exit_if_idle(home, activity,
                                                                           idle_exit):
            return


def serve(home: Path, port: int) -> None:
    """Run the server in this process until SIGTERM, the idle exit or the watchdog."""
    import uvicorn
    from prefect.server.api.server import create_app

    idle_exit = idle_exit_seconds()
    activity = Activity(create_app())
    threading.Thread(target=_watch, args=(home, activity, idle_exit), daemon=True,
                     name="archiveflow-idle-watch").start()
    uvicorn.run(activity, host="127.0.0.1", port=port, log_level="warning", lifespan="on")


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve(Path(sys.argv[2]), int(sys.argv[3]))
