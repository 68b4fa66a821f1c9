"""Hook processes: spawning, pid files that survive PID reuse, killing whole trees.

A hook runs in its own process group (its pid is the pgid). Three nets catch what it leaves
behind: the process group (`killpg`), the descendants seen while it ran (read cheaply from
`/proc/<pid>/task/*/children`), and the run id it inherits in `ARCHIVEFLOW_RUN_ID`, which a
grandchild that called `setsid` still carries in `/proc/<pid>/environ`. Every pid taken from
a file is checked against its recorded create time before it is signalled.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psutil

from archiveflow.tasks.discover import HookLaunchError
from archiveflow.tasks.output import write_atomic

RUN_ID_ENV: Final[str] = "ARCHIVEFLOW_RUN_ID"
_CREATE_TIME_TOLERANCE: Final[float] = 0.02
_TRANSIENT_ERRNOS: Final[frozenset[int]] = frozenset(
    {errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.ENOSPC}
)
_REGISTRY: dict[str, subprocess.Popen[bytes]] = {}


@dataclass
class PidInfo:
    """What a pid file records about a running hook."""

    pid: int
    pgid: int
    create_time: float
    cmd: list[str]
    run_id: str
    started_at: float
    descendants: dict[int, float] = field(default_factory=dict)  # pid → create_time


def _fresh(path: Path) -> Any:
    """A new, empty log file at `path` (whatever an earlier run left there, symlinks
    included, is removed first, so a log is never written through a planted link)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "wb")


def spawn(
    cmd: Sequence[str], *, cwd: Path, env: dict[str, str], stdout: Path, stderr: Path
) -> subprocess.Popen[bytes]:
    """Start `cmd` in a new session with its output going straight to files.

    Raises HookLaunchError when it can never start (missing interpreter, not executable),
    OSError (EAGAIN, ENOMEM, ...) when it might on a retry.
    """
    with _fresh(stdout) as out, _fresh(stderr) as err:
        try:
            return subprocess.Popen(
                list(cmd),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        except OSError as e:
            if e.errno in _TRANSIENT_ERRNOS:
                raise  # out of processes or memory for now: the caller may retry
            raise HookLaunchError(f"cannot start {cmd[0]}: {e}") from e


def write_pid_file(path: Path, info: PidInfo) -> None:
    """Write the pid file atomically (a reader never sees half a file)."""
    data = {  # by hand: dataclasses.asdict deep-copies and costs ~0.4 ms per run here
        "pid": info.pid,
        "pgid": info.pgid,
        "create_time": info.create_time,
        "cmd": info.cmd,
        "run_id": info.run_id,
        "started_at": info.started_at,
        "descendants": [[p, t] for p, t in info.descendants.items()],
    }
    write_atomic(path, json.dumps(data))  # never through a symlink the hook planted


def read_pid_file(path: Path) -> PidInfo | None:
    """The pid file's contents, or None if it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return PidInfo(
            pid=int(data["pid"]),
            pgid=int(data["pgid"]),
            create_time=float(data["create_time"]),
            cmd=[str(c) for c in data.get("cmd", [])],
            run_id=str(data.get("run_id", "")),
            started_at=float(data.get("started_at", 0.0)),
            descendants={int(p): float(t) for p, t in data.get("descendants", [])},
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _verified(pid: int, create_time: float) -> psutil.Process | None:
    """The live process `pid` if it is the one recorded (same create time), else None."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > _CREATE_TIME_TOLERANCE:
            return None  # the pid now belongs to another process
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (all threads), from /proc; empty if it is gone."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return out


def snapshot_descendants(pid: int, into: dict[int, float]) -> bool:
    """Add every live descendant of `pid` (pid → create time) to `into`; True if any is new."""
    grew = False
    stack = child_pids(pid)
    while stack:
        child = stack.pop()
        if child not in into:
            try:
                into[child] = psutil.Process(child).create_time()
                grew = True
            except psutil.Error:
                continue
        stack.extend(child_pids(child))
    return grew


def find_marked(run_id: str, since_pid: int = 0) -> list[psutil.Process]:
    """Processes whose environment carries `ARCHIVEFLOW_RUN_ID=<run_id>`.

    Only pids from `since_pid` on are read unless pids wrapped around since then: anything a
    hook started was allocated after the hook itself.
    """
    if not run_id:
        return []
    needle = f"{RUN_ID_ENV}={run_id}".encode()
    try:
        with open("/proc/sys/kernel/ns_last_pid", "rb") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = 0
    floor = since_pid if 0 < since_pid <= last else 0
    found: list[psutil.Process] = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) < floor:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle + b"\0" in env or env.endswith(needle):
            with contextlib.suppress(psutil.Error):
                found.append(psutil.Process(int(name)))
    return found


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to `timeout` s for `proc` to exit, waking at once when it does; True if it did."""
    if proc.poll() is not None:
        return True
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if poller.poll(max(0, int(timeout * 1000))):
            proc.wait()
            return True
        return proc.poll() is not None
    finally:
        os.close(fd)


def kill_tree(
    info: PidInfo,
    sig: int = signal.SIGTERM,
    grace: float = 2.0,
    popen: subprocess.Popen[bytes] | None = None,
    group_is_ours: bool = False,
) -> bool:
    """Signal a hook, its process group and its descendants; SIGKILL what outlives `grace`.

    `group_is_ours` says the caller knows the pgid was not reused (it just reaped the
    leader); otherwise the group is signalled only through a verified member. Each process
    gets the signal once (a second SIGTERM would interrupt a hook's own SIGTERM handler).
    Returns True if any process of the hook was alive.
    """
    leader = _verified(info.pid, info.create_time)
    if popen is not None and popen.poll() is None:
        leader = psutil.Process(info.pid)  # our own unreaped child: it is the one recorded
    if leader is not None:
        snapshot_descendants(info.pid, info.descendants)
    procs: dict[int, psutil.Process] = {}
    for pid, ctime in info.descendants.items():
        p = _verified(pid, ctime)
        if p is not None:
            procs[pid] = p
    for p in find_marked(info.run_id, since_pid=info.pid):
        procs.setdefault(p.pid, p)
    procs.pop(info.pid, None)
    in_group = {pid for pid, p in procs.items() if _pgid(p) == info.pgid}
    group_ok = group_is_ours or leader is not None or bool(in_group)
    if leader is None and not procs and not (group_ok and _group_exists(info.pgid)):
        return False
    outside = [p for pid, p in procs.items() if not (group_ok and pid in in_group)]
    known = [*procs.values(), *([leader] if leader is not None else [])]

    def send(s: int) -> None:
        if group_ok:  # always so when the leader lives: it is its own group's leader
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(info.pgid, s)
        for p in outside:
            with contextlib.suppress(psutil.Error):
                p.send_signal(s)  # psutil refuses if the pid was reused meanwhile

    send(sig)
    deadline = time.monotonic() + (grace if sig != signal.SIGKILL else 0.0)
    if not _wait_gone(info, popen, known, deadline) or (group_ok and _group_exists(info.pgid)):
        # SIGKILL to a group of zombies only is harmless; waiting on them would not be.
        send(signal.SIGKILL)
        _wait_gone(info, popen, known, time.monotonic() + 5.0)
    return True


def _pgid(p: psutil.Process) -> int | None:
    try:
        return os.getpgid(p.pid)
    except OSError:
        return None


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(
    info: PidInfo,
    popen: subprocess.Popen[bytes] | None,
    procs: list[psutil.Process],
    deadline: float,
) -> bool:
    """Wait until every known process is gone (zombies count as gone); True if they are."""
    # Reap our own child through Popen, never psutil: that keeps its exit code.
    if popen is not None and not wait_exit(popen, max(0.0, deadline - time.monotonic())):
        return False
    others = [p for p in procs if p.pid != info.pid or popen is None]
    while any(_alive(p) for p in others):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def register(pid_file: Path, popen: subprocess.Popen[bytes]) -> None:
    """Remember a background hook's Popen so its exit code can be collected later."""
    _REGISTRY[os.path.abspath(pid_file)] = popen


def registered(pid_file: Path) -> subprocess.Popen[bytes] | None:
    """The Popen of a background hook this process started, if any."""
    return _REGISTRY.get(os.path.abspath(pid_file))


def unregister(pid_file: Path) -> None:
    """Forget a background hook's Popen (after it was reaped)."""
    _REGISTRY.pop(os.path.abspath(pid_file), None)


def process_is_alive(pid_file: Path) -> bool:
    """True if the hook recorded in `pid_file` still runs (same pid AND same create time)."""
    popen = registered(pid_file)
    if popen is not None:
        return popen.poll() is None  # also reaps it, so no zombie lingers
    info = read_pid_file(pid_file)
    return info is not None and _verified(info.pid, info.create_time) is not None


def kill_process(pid_file: Path, sig: int = signal.SIGTERM, grace: float = 2.0) -> bool:
    """Kill the hook of `pid_file` with its group and descendants; remove the pid file.

    Sends `sig`, then SIGKILL after `grace` seconds. True if something was alive.
    """
    info = read_pid_file(pid_file)
    if info is None:
        return False
    killed = kill_tree(info, sig, grace, popen=registered(pid_file))
    with contextlib.suppress(FileNotFoundError):
        pid_file.unlink()
    return killed


def wait_background(pid_files: Iterable[Path], timeout: float, poll: float = 0.05) -> list[Path]:
    """Wait up to `timeout` s for the hooks of `pid_files` to exit; return those still alive."""
    pending = list(pid_files)
    deadline = time.monotonic() + timeout
    while True:
        pending = [p for p in pending if process_is_alive(p)]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
