"""The local Prefect server's folder, ``<data>/prefect/``: what lives there and who may read it.

The folder is mode 0700 and every file below is the data folder owner's alone (the trust
boundary of docs/server.md: other local accounts are not trusted)::

    auth_string     the API's basic-auth secret, ``archiveflow:<random>`` (0600)
    server.json     the running server: pid + start time (PID reuse is caught), port, URLs
    server.lock     flock: one start, stop or idle exit at a time
    clients/<pid>   leases: a process using the server (a crawl, `serve`) holds it up
    activity.json   written by the server: when it last served a request or was held
    server.log, prefect.db, ...   Prefect's own files (PREFECT_HOME)

Imports neither Prefect nor DuckDB: the CLI and the server process both read these files.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import psutil

AUTH_USER: Final[str] = "archiveflow"
AUTH_FILE: Final[str] = "auth_string"
INFO_FILE: Final[str] = "server.json"
ACTIVITY_FILE: Final[str] = "activity.json"
CLIENTS_DIR: Final[str] = "clients"

_held: set[Path] = set()  # homes this process holds a lease on


def ensure_home(home: Path) -> Path:
    """Create the folder (0700) or tighten an existing one: prefect.db holds every flow run's
    parameters, server.log the API's errors, and auth_string the key to the API."""
    home.mkdir(parents=True, exist_ok=True)
    if home.stat().st_mode & 0o077:
        home.chmod(0o700)
    return home


def auth_string(home: Path) -> str:
    """The data folder's API secret (``user:password``), created on first use with mode 0600.

    Written to a private temporary file and linked into place, so two processes creating it
    at once agree on one secret and no reader ever sees a half-written file."""
    path = ensure_home(home) / AUTH_FILE
    for _ in range(3):
        with contextlib.suppress(FileNotFoundError):
            return _read_secret(path)
        tmp = path.with_name(f".{AUTH_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{AUTH_USER}:{secrets.token_urlsafe(32)}\n")
        try:
            os.link(tmp, path)  # fails if another process won the race: read theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return _read_secret(path)


def _read_secret(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as fh:
        if os.fstat(fh.fileno()).st_mode & 0o077:  # loosened by hand: tighten it again
            os.fchmod(fh.fileno(), 0o600)
        value = fh.read().strip()
    if ":" not in value:
        raise ValueError(f"{path} does not hold a `user:password` string: delete it, then run "
                         "`archiveflow server stop` so the next start makes a new one")
    return value


def read_server_info(home: Path) -> dict[str, Any] | None:
    """server.json of a live server, or None (no file, dead pid, or a pid reused since)."""
    try:
        info: dict[str, Any] = json.loads((home / INFO_FILE).read_text())
        proc = psutil.Process(info["pid"])
        if abs(proc.create_time() - info["create_time"]) > 1.0 or not proc.is_running():
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return info
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None


@contextlib.contextmanager
def locked(home: Path) -> Iterator[None]:
    """Hold server.lock (start, reuse, stop and idle exit take it)."""
    ensure_home(home)
    with open(home / "server.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- leases: who holds the server up ------------------------------------------------------

def hold(home: Path) -> None:
    """Mark this process as a user of the server until it exits (the server does not exit
    idle while a holder lives). Call under :func:`locked`, so an idle exit that takes the
    lock next sees the lease."""
    if home in _held:
        return
    folder = home / CLIENTS_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    lease = folder / str(os.getpid())
    lease.write_text(json.dumps({"pid": os.getpid(),
                                 "create_time": psutil.Process().create_time()}))
    _held.add(home)
    atexit.register(_release, lease, os.getpid())  # the server's idle clock starts now


def _release(lease: Path, owner: int) -> None:
    if os.getpid() == owner:  # not in a forked child that inherited the atexit hook
        lease.unlink(missing_ok=True)


def holders(home: Path, prune: bool = False) -> list[int]:
    """Pids of the live processes holding the server; with ``prune``, stale leases go."""
    out = []
    folder = home / CLIENTS_DIR
    for lease in sorted(folder.iterdir()) if folder.is_dir() else []:
        try:
            info = json.loads(lease.read_text())
            proc = psutil.Process(info["pid"])
            if abs(proc.create_time() - info["create_time"]) <= 1.0 and proc.is_running() \
                    and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(int(info["pid"]))
                continue
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            pass
        if prune:
            lease.unlink(missing_ok=True)
    return out


# --- activity: written by the server, read by `archiveflow server status` ----------------

def write_activity(home: Path, values: dict[str, Any]) -> None:
    """Replace activity.json atomically."""
    tmp = home / f".{ACTIVITY_FILE}.tmp"
    tmp.write_text(json.dumps(values))
    tmp.replace(home / ACTIVITY_FILE)


def read_activity(home: Path) -> dict[str, Any]:
    """What the server last wrote (empty when it has not yet)."""
    try:
        data: dict[str, Any] = json.loads((home / ACTIVITY_FILE).read_text())
        return data
    except (OSError, ValueError):
        return {}


def idle_seconds(home: Path, info: dict[str, Any]) -> float:
    """Seconds since the server last served a request or was held (0 while held)."""
    busy_at = max(float(read_activity(home).get("busy_at", 0)), float(info["started_at"]))
    return max(0.0, time.time() - busy_at)
