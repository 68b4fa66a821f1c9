"""`archiveflow server status|start|stop|login`: the data folder's local Prefect server.

archiveflow starts one Prefect API server (and UI) per data folder when a crawl, `serve` or
a schedule command first needs it, and reuses it. These commands show it, start it ahead of
time (to open the UI), stop it, and print how to log in to its UI. See docs/server.md.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from archiveflow.cli.common import EXIT_FAILED, CliError, Command, data_folder, say


def _duration(seconds: float) -> str:
    """`45s`, `12m05s`, `3h07m`."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _idle_rule(idle_exit: float | None) -> str:
    if not idle_exit:
        return "never exits when idle (ARCHIVEFLOW_PREFECT_IDLE_EXIT=0)"
    return f"exits after {_duration(idle_exit)} idle"


def _external_note() -> str | None:
    url = os.environ.get("PREFECT_API_URL", "").strip()
    if url and url != os.environ.get("_ARCHIVEFLOW_LOCAL_API_URL"):
        return f"note: PREFECT_API_URL is set, so archiveflow uses {url}, not this server"
    return None


def cmd_status(args: argparse.Namespace) -> int:
    from archiveflow.flows.prefect_server import server_status

    data_dir = data_folder(args).resolve()
    st = server_status(data_dir)
    if args.json:
        print(json.dumps({
            "running": st.running, "healthy": st.healthy, "pid": st.pid,
            "api_url": st.api_url, "ui_url": st.ui_url, "rss_bytes": st.rss_bytes,
            "up_seconds": st.up_seconds, "idle_seconds": st.idle_seconds,
            "idle_exit": st.idle_exit, "holders": [pid for pid, _ in st.holders],
            "home": str(st.home)}))
        return 0
    if not st.running:
        print(f"local Prefect server of {data_dir}: not running (the next crawl, `serve` or "
              "`archiveflow server start` starts it)")
    else:
        health = "running" if st.healthy else "starting (not answering yet)"
        rss = f"{(st.rss_bytes or 0) / 2**20:.0f} MB" if st.rss_bytes is not None else "?"
        print(f"local Prefect server of {data_dir}: {health}, pid {st.pid}, "
              f"up {_duration(st.up_seconds or 0)}, RSS {rss}")
        print(f"  API  {st.api_url}")
        print(f"  UI   {st.ui_url}  (log in: `archiveflow server login`)")
        if st.holders:
            for pid, cmd in st.holders:
                print(f"  in use by pid {pid}: {cmd.splitlines()[0] if cmd else '?'}")
        else:
            print(f"  idle {_duration(st.idle_seconds or 0)}; {_idle_rule(st.idle_exit)}")
    if note := _external_note():
        say(note)
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    from archiveflow.flows.prefect_server import configure_prefect

    data_dir = data_folder(args).resolve()
    os.environ.pop("PREFECT_API_URL", None)  # `server start` means this data folder's server
    try:
        rt = configure_prefect(data_dir)
    except (OSError, RuntimeError, ValueError) as e:
        raise CliError(f"cannot start the local Prefect server: {e}") from e
    verb = "started" if rt.mode == "local-started" else "already running"
    print(f"local Prefect server of {data_dir} {verb} (pid {rt.pid}) in {rt.seconds:.1f}s")
    print(f"  API  {rt.api_url}")
    print(f"  UI   {rt.ui_url}  (log in: `archiveflow server login`)")
    from archiveflow.flows.prefect_home import read_server_info

    info = read_server_info(rt.home) if rt.home else None
    print(f"  {_idle_rule((info or {}).get('idle_exit'))}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from archiveflow.flows.prefect_server import server_status, stop_local_server

    data_dir = data_folder(args).resolve()
    st = server_status(data_dir)
    if not st.running:
        print(f"local Prefect server of {data_dir}: not running")
        return 0
    users = [(pid, cmd) for pid, cmd in st.holders if pid != os.getpid()]
    if users and not args.force:
        pid, cmd = users[0]
        raise CliError(f"the local Prefect server (pid {st.pid}) is in use by pid {pid} "
                       f"({cmd.splitlines()[0][:80] if cmd else '?'}): stop that first, "
                       "or give --force", EXIT_FAILED)
    stop_local_server(data_dir)
    print(f"local Prefect server of {data_dir} stopped (pid {st.pid})")
    return 0


def cmd_login(args: argparse.Namespace) -> int:
    from archiveflow.flows.prefect_server import login_string, server_status

    data_dir = data_folder(args).resolve()
    st = server_status(data_dir)
    secret = login_string(data_dir)
    where = st.ui_url if st.running else "(not running: `archiveflow server start`)"
    print(f"UI        {where}")
    print(f"password  {secret}")
    say("the UI asks for this password once per browser; API clients send it as HTTP basic "
        f"auth (curl -u '{secret.split(':', 1)[0]}:…'). Keep it to yourself: it runs crawls.")
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    return int(args.server_fn(args))


def _sub(parent: Any, name: str, fn: Callable[[argparse.Namespace], int],
         helptext: str) -> argparse.ArgumentParser:
    sp: argparse.ArgumentParser = parent.add_parser(name, help=helptext, description=helptext)
    sp.add_argument("--data-dir", default=argparse.SUPPRESS,
                    help="data folder (default: $ARCHIVEFLOW_DATA_DIR or ./data)")
    sp.set_defaults(server_fn=fn)
    return sp


def register(command: Command) -> None:
    """Add `server` (status, start, stop, login)."""
    s = command("server", cmd_server, "The data folder's local Prefect server (API and UI): "
                "status, start, stop, login.")
    sub = s.add_subparsers(dest="server_command", required=True, metavar="ACTION")
    st = _sub(sub, "status", cmd_status, "Running or not: pid, URLs, memory, idle time, users.")
    st.add_argument("--json", action="store_true", help="one JSON object")
    _sub(sub, "start", cmd_start, "Start it now (e.g. to open the UI); it exits when idle.")
    sp = _sub(sub, "stop", cmd_stop, "Stop it (refused while a crawl or `serve` uses it).")
    sp.add_argument("--force", action="store_true", help="stop it even while it is in use")
    _sub(sub, "login", cmd_login, "Print the UI's address and the password it asks for.")
