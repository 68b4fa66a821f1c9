"""The hook runtime: find hooks, run them as subprocesses, learn their results from files.

Plain Python: no Prefect, no DuckDB. The Prefect layer wraps these functions.

The hook contract (the runner side of docs/hooks.md):

- A hook is `plugins/<plugin>/on_<Event>__<NN>_<desc>[.bg].<ext>`; `discover_hooks` finds
  them on the search path, sorted by (NN, file name). `.bg.` (also `.finite.bg.`,
  `.daemon.bg.`) = background: started, pid recorded, not waited for. `.daemon.bg.` runs until
  killed; stopping it at cleanup is expected, not a failure.
- `run_hook` runs it with argv `--key=value` (underscores in keys become dashes), in its own
  process group, cwd `<output_dir>/<plugin>/`, env = the caller's env (config, DATA_DIR,
  SNAP_DIR, ...) plus `EXTRA_CONTEXT` (JSON). An executable file runs by its shebang, except
  `#!/usr/bin/env python[3[.X]]`, which runs with `sys.executable` (the `python3` found on
  PATH may be a version-manager shim, e.g. pyenv's, that costs ~100 ms per start, and may not
  be the interpreter archiveflow runs under); a non-executable file runs by extension
  (`.py` python, `.js` node, `.sh` bash).
- In the plugin folder, keyed by the hook's file stem, it leaves `<stem>.sh` (the command
  line, runnable by hand, and the run id as a comment, written before the hook starts;
  config env vars are left out since they may hold secrets),
  `<stem>.stdout.log`, `<stem>.stderr.log` (files, never pipes: output never passes through
  our memory; a log above 10 MB is cut to head + tail), `<stem>.pid` while it runs (pid,
  pgid, create time: PID reuse is detected) and `<stem>.exit.json` when it ended.
- A foreground hook that outlives its timeout gets SIGTERM to its group, `grace` seconds,
  then SIGKILL. Records are data and are never capped: stdout may grow to
  RECORDS_HARD_CAP (4 GiB, tens of millions of records), a limit only for a runaway hook;
  what only people read, stderr and stdout text that is no record, to OUTPUT_HARD_CAP
  (100 MB each). A hook past one is killed ("output too large") and its result is failed,
  naming how many records it printed before were kept (all of them are loaded; none is
  dropped in silence).
  After any exit, what is left of its group, its descendants and any process that inherited
  its run id (`ARCHIVEFLOW_RUN_ID`, which survives `setsid`) is killed: no orphans.
- `update_from_output` is the one way a result is learned, for foreground and background
  hooks alike: the last ArchiveResult printed, else inferred (exit 10 skipped, other non-zero
  failed with the stderr tail, exit 0 with new files succeeded, else noresults); a timeout or
  kill for cause is always failed. Other records and invalid lines are returned, not lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import psutil

from archiveflow.store.ids import new_id
from archiveflow.tasks.config import hook_timeout, resolve_config
from archiveflow.tasks.discover import (
    Hook,
    HookLaunchError,
    build_command,
    discover_hooks,
    plugin_dirs,
    plugin_search_path,
)
from archiveflow.tasks.output import (
    LOG_CAP,
    ExitInfo,
    HookOutcome,
    HookPaths,
    OutputFile,
    build_outcome,
    cap_log,
    keep_records,
    open_regular,
    read_bounded,
    snapshot_files,
    write_atomic,
)
from archiveflow.tasks.process import (
    RUN_ID_ENV,
    PidInfo,
    find_marked,
    kill_process,
    kill_tree,
    process_is_alive,
    read_pid_file,
    register,
    registered,
    snapshot_descendants,
    spawn,
    unregister,
    wait_exit,
    write_pid_file,
)

__all__ = [
    "Hook",
    "HookLaunchError",
    "HookOutcome",
    "HookPaths",
    "HookRun",
    "OutputFile",
    "RECORDS_HARD_CAP",
    "discover_hooks",
    "finalize_background",
    "kill_unrecorded",
    "hook_timeout",
    "kill_process",
    "plugin_dirs",
    "plugin_search_path",
    "process_is_alive",
    "recover_run",
    "resolve_config",
    "run_hook",
    "snapshot_files",
    "update_from_output",
    "wait_background",
]

OUTPUT_HARD_CAP: Final[int] = 100 * 1024 * 1024  # stderr: a running hook past this is killed
# stdout holds the records, which are data: only a runaway hook is stopped, far past any real
# import (2M seed URLs print ~150 MB). Its result then fails naming the records kept.
RECORDS_HARD_CAP: Final[int] = 4 * 1024 * 1024 * 1024
# Background runs this process started, by pid file, until finalize_background.
_BACKGROUND: dict[str, HookRun] = {}
# The run id line of `<stem>.sh`, written before the hook starts (see kill_unrecorded).
_RUN_LINE: Final = re.compile(rb"^# archiveflow run ([0-9a-f-]{36})$", re.MULTILINE)
# Env vars written into `<stem>.sh` so it reruns by hand; the rest of the config is not
# (it may hold secrets).
_SH_ENV: Final[tuple[str, ...]] = (
    "DATA_DIR",
    "CRAWL_DIR",
    "SNAP_DIR",
    "LIB_DIR",
    "MACHINE_ID",
    "EXTRA_CONTEXT",
)


@dataclass
class HookRun:
    """One run of a hook: how it was started and, once it ended, how it ended."""

    hook: Hook
    paths: HookPaths
    pid: int
    pgid: int
    cmd: list[str]
    run_id: str
    started_at: datetime
    ended_at: datetime | None = None
    exit_code: int | None = None  # negative: killed by that signal; None: running/unknown
    timed_out: bool = False
    kill_reason: str | None = None
    stopped: bool = False  # daemon stopped at cleanup, as planned
    leftovers_killed: bool = False  # it exited but left processes behind, which were killed
    descendants: dict[int, float] = field(default_factory=dict)
    meter: OutputMeter | None = field(default=None, repr=False)  # while it runs

    @property
    def stdout_log(self) -> Path:
        return self.paths.stdout_log

    @property
    def stderr_log(self) -> Path:
        return self.paths.stderr_log

    @property
    def pid_file(self) -> Path:
        return self.paths.pid_file

    @property
    def cmd_file(self) -> Path:
        return self.paths.cmd_file

    def exit_info(self) -> ExitInfo:
        """How the run ended, as stored in `<stem>.exit.json`."""
        return ExitInfo(
            exit_code=self.exit_code,
            started_at=self.started_at,
            ended_at=self.ended_at,
            timed_out=self.timed_out,
            kill_reason=self.kill_reason,
            stopped=self.stopped,
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _write_cmd_file(path: Path, cwd: Path, cmd: list[str], env: Mapping[str, str],
                    run_id: str) -> None:
    env_part = " ".join(f"{k}={shlex.quote(env[k])}" for k in _SH_ENV if k in env)
    line = f"cd {shlex.quote(str(cwd))} && {env_part + ' ' if env_part else ''}{shlex.join(cmd)}"
    write_atomic(path, f"#!/bin/sh\n# archiveflow run {run_id}\n{line}\n")


_RECORD_LINE: Final = re.compile(rb"^[ \t]*\{[^\n]*\n", re.MULTILINE)


class OutputMeter:
    """Watches a running hook's logs for runaway output: stderr past `cap`; stdout past
    `cap` bytes of text that is no record (lines not starting with `{`, which only people
    read), or past `records_cap` in all. Records themselves are data: a stdout of records
    is only read, never judged, below `records_cap`."""

    def __init__(self, paths: HookPaths, cap: int, records_cap: int) -> None:
        self.paths, self.cap, self.records_cap = paths, cap, records_cap
        self.offset = 0  # stdout bytes already looked at (whole lines)
        self.text = 0  # of which not record lines

    def over(self) -> str | None:
        """The reason to stop the hook now, or None."""
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.paths.stderr_log).st_size > self.cap:
                return f"output too large: {self.paths.stderr_log.name} passed {self.cap} bytes"
        try:
            size = os.stat(self.paths.stdout_log).st_size
        except FileNotFoundError:
            return None
        name = self.paths.stdout_log.name
        if size > self.records_cap:
            return f"output too large: {name} passed {self.records_cap} bytes"
        if size <= self.cap or size <= self.offset:
            return None  # the cheap case: a stat per poll
        self._scan(size)
        if self.text > self.cap:
            return (f"output too large: {name} passed {self.cap} bytes of text that is "
                    "no record")
        return None

    def _scan(self, size: int) -> None:
        fd = open_regular(self.paths.stdout_log, os.O_RDONLY)
        if fd is None:
            return
        with os.fdopen(fd, "rb") as f:
            f.seek(self.offset)
            while self.offset < size:
                chunk = f.read(min(size - self.offset, 16 << 20))
                end = chunk.rfind(b"\n") + 1
                if end == 0:
                    if len(chunk) < (16 << 20):
                        return  # a partial line: looked at once it ends
                    end = len(chunk)  # one line of 16 MB: it is text all the same
                chunk = chunk[:end]
                records = sum(len(m) for m in _RECORD_LINE.findall(chunk))
                self.text += len(chunk) - records
                self.offset += end
                f.seek(self.offset)


def _finish(run: HookRun, log_cap: int) -> HookRun:
    run.ended_at = run.ended_at or _now()
    with contextlib.suppress(FileNotFoundError):
        run.paths.pid_file.unlink()
    keep_records(run.paths.stdout_log, run.paths.records_file, log_cap)  # data: never cut
    cap_log(run.paths.stdout_log, log_cap)
    cap_log(run.paths.stderr_log, log_cap)
    run.exit_info().write(run.paths.exit_file)
    return run


def _supervise(
    run: HookRun,
    popen: subprocess.Popen[bytes],
    info: PidInfo,
    *,
    timeout: float,
    grace: float,
    output_cap: int,
    records_cap: int,
) -> None:
    """Wait for a foreground hook; kill it on timeout or runaway output."""
    meter = OutputMeter(run.paths, output_cap, records_cap)
    deadline = time.monotonic() + timeout
    interval = 0.04
    while not wait_exit(popen, min(interval, max(0.0, deadline - time.monotonic()))):
        if snapshot_descendants(popen.pid, info.descendants):
            write_pid_file(run.paths.pid_file, info)  # so another process can kill them too
        reason = meter.over()
        if reason is None and time.monotonic() >= deadline:
            run.timed_out, reason = True, f"timed out after {timeout:g}s"
        if reason is not None:
            run.kill_reason = reason
            kill_tree(info, signal.SIGTERM, grace, popen)
            return
        # The pidfd wakes wait_exit the moment the hook exits; this interval only paces the
        # timeout, output-cap and descendant checks (10 ms polling cost 8% of a crawl; from
        # 10 ms, doubling, they cost 1.5 ms of CPU per hook run of ~150 ms). A descendant
        # that escapes its group before the first check is still found by its run id.
        interval = min(interval * 2, 0.2)
    # Exited between two checks: a hook that floods its logs and exits fast (200 MB take
    # ~0.2 s) is judged by the same limits as one caught while it runs.
    reason = meter.over()
    if reason is not None:
        run.kill_reason = reason


def run_hook(
    hook: Hook,
    *,
    args: Mapping[str, str],
    output_dir: Path,
    env: Mapping[str, str],
    timeout: float,
    grace: float = 2.0,
    extra_context: Mapping[str, Any] | None = None,
    log_cap: int = LOG_CAP,
    output_cap: int = OUTPUT_HARD_CAP,
    records_cap: int = RECORDS_HARD_CAP,
) -> HookRun:
    """Run one hook; wait for a foreground hook, return at once for a background one.

    Raises HookLaunchError if the hook can never start (no interpreter, not runnable), and
    OSError (EAGAIN, ENOMEM, ...) if it could not start for now.
    """
    paths = HookPaths(output_dir / hook.plugin, hook.name)
    paths.plugin_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        paths.exit_file.unlink()  # from an earlier run of the same hook
    cmd = build_command(hook.path) + [
        f"--{key.replace('_', '-')}={value}" for key, value in args.items()
    ]
    context = {"plugin": hook.plugin, "hook_name": hook.name, **(extra_context or {})}
    run_id = new_id()
    child_env = {**env, "EXTRA_CONTEXT": json.dumps(context), RUN_ID_ENV: run_id}
    _write_cmd_file(paths.cmd_file, paths.plugin_dir, cmd, child_env, run_id)

    started_at, started = _now(), time.time()
    popen = spawn(
        cmd, cwd=paths.plugin_dir, env=child_env, stdout=paths.stdout_log, stderr=paths.stderr_log
    )
    info = PidInfo(popen.pid, popen.pid, started, cmd, run_id, started)
    try:
        with contextlib.suppress(psutil.Error):  # unreaped, so only if /proc is unreadable
            info.create_time = psutil.Process(popen.pid).create_time()
        write_pid_file(paths.pid_file, info)
        run = HookRun(
            hook, paths, popen.pid, popen.pid, cmd, run_id, started_at, descendants=info.descendants
        )
        if hook.is_background:
            register(paths.pid_file, popen)
            _BACKGROUND[os.path.abspath(paths.pid_file)] = run
            return run
        _supervise(run, popen, info, timeout=timeout, grace=grace, output_cap=output_cap,
                   records_cap=records_cap)
    except BaseException:
        # Interrupted (Ctrl-C, task cancellation) or failed: never leave the hook behind us.
        kill_tree(info, signal.SIGTERM, grace, popen)
        raise
    run.ended_at = _now()
    # Whatever it left behind (same group, descendants, setsid'd grandchildren) goes too.
    run.leftovers_killed = kill_tree(info, signal.SIGTERM, grace, popen, group_is_ours=True)
    run.exit_code = popen.returncode
    return _finish(run, log_cap)


def wait_background(
    pid_files: Iterable[Path],
    timeout: float,
    poll: float = 0.05,
    output_cap: int = OUTPUT_HARD_CAP,
    grace: float = 2.0,
    records_cap: int = RECORDS_HARD_CAP,
) -> list[Path]:
    """Wait up to `timeout` s for background hooks to exit; return the pid files still alive.

    Meanwhile a background hook this process started whose stderr log passes `output_cap`
    (or stdout log `records_cap`) is killed, and its HookRun gets kill_reason "output too
    large".
    """
    pending = list(pid_files)
    deadline = time.monotonic() + timeout
    while True:
        for pid_file in pending:
            run = _BACKGROUND.get(os.path.abspath(pid_file))
            if run is None or run.kill_reason is not None:
                continue
            if run.meter is None:
                run.meter = OutputMeter(run.paths, output_cap, records_cap)
            reason = run.meter.over()
            info = read_pid_file(pid_file) if reason else None
            if reason and info is not None:
                run.kill_reason = reason
                kill_tree(info, signal.SIGTERM, grace, registered(pid_file))
        pending = [p for p in pending if process_is_alive(p)]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))


def finalize_background(
    run: HookRun, *, grace: float = 2.0, reason: str | None = None, log_cap: int = LOG_CAP
) -> HookRun:
    """End a background run: stop it if still alive, collect its exit code, clean up.

    A daemon hook (`.daemon.bg.`) still alive is stopped as planned; a finite one still
    alive failed (`reason`, default "still running at cleanup"). A run started by an earlier
    process has no known exit code and counts as killed.
    """
    popen = registered(run.pid_file)
    info = read_pid_file(run.pid_file) or PidInfo(
        run.pid,
        run.pgid,
        run.started_at.timestamp(),
        run.cmd,
        run.run_id,
        run.started_at.timestamp(),
        dict(run.descendants),
    )
    if process_is_alive(run.pid_file):
        if run.hook.is_daemon and reason is None:
            run.stopped = True
        else:
            run.kill_reason = reason or "still running at cleanup"
        kill_tree(info, signal.SIGTERM, grace, popen)
        if run.stopped and popen is not None and popen.returncode == -signal.SIGKILL:
            run.kill_reason = f"did not stop within {grace:g}s of SIGTERM"
    else:
        run.leftovers_killed = kill_tree(
            info, signal.SIGTERM, grace, popen, group_is_ours=popen is not None
        )
    if popen is not None:
        run.exit_code = popen.returncode
        unregister(run.pid_file)
    elif run.exit_code is None:
        run.kill_reason = run.kill_reason or "exit code unknown: started by an earlier process"
    _BACKGROUND.pop(os.path.abspath(run.pid_file), None)
    return _finish(run, log_cap)


def kill_unrecorded(paths: HookPaths, grace: float = 2.0) -> bool:
    """Kill what is left of this hook's last run when its pid file was never written.

    The runner writes a run's pid file right after starting it; a runner killed in between
    (kill -9, under load that can take tens of ms) leaves a hook that no pid file points at,
    and a service hook then runs forever. The run id is in `<stem>.sh`, written before the
    start, and every process of the run carries it in its environment. True if something
    of that run was alive.
    """
    m = _RUN_LINE.search(read_bounded(paths.cmd_file, 64 * 1024))
    if m is None:
        return False
    run_id = m.group(1).decode()
    marked = find_marked(run_id)
    if not marked:
        return False
    try:
        first = min(marked, key=lambda p: p.create_time())  # the hook; the rest are its own
        info = PidInfo(first.pid, os.getpgid(first.pid), first.create_time(), [], run_id,
                       first.create_time())
    except (psutil.Error, OSError):
        return False  # gone meanwhile
    return kill_tree(info, signal.SIGTERM, grace)


def recover_run(hook: Hook, output_dir: Path) -> HookRun | None:
    """A HookRun rebuilt from the pid file a hook left (e.g. before a restart), if any."""
    paths = HookPaths(output_dir / hook.plugin, hook.name)
    info = read_pid_file(paths.pid_file)
    if info is None:
        return None
    return HookRun(
        hook,
        paths,
        info.pid,
        info.pgid,
        info.cmd,
        info.run_id,
        datetime.fromtimestamp(info.started_at, UTC),
        descendants=info.descendants,
    )


def update_from_output(
    hook_run_or_paths: HookRun | HookPaths | Hook,
    *,
    output_dir: Path,
    snapshot_dir: Path,
    started_files_snapshot: dict[str, tuple[int, int]] | None = None,
) -> HookOutcome:
    """Learn a run's result from its folder: records, exit, files (see module docstring).

    Give the HookRun when this process ran it; a HookPaths or Hook (found under
    `output_dir`) reads `<stem>.exit.json` instead. `started_files_snapshot` (from
    `snapshot_files()` before the run) limits the listing to new or changed files.
    """
    if isinstance(hook_run_or_paths, HookRun):
        paths = hook_run_or_paths.paths
        exit = (
            hook_run_or_paths.exit_info()
            if hook_run_or_paths.ended_at is not None
            else ExitInfo.read(paths.exit_file) or hook_run_or_paths.exit_info()
        )
    else:
        if isinstance(hook_run_or_paths, Hook):
            paths = HookPaths(output_dir / hook_run_or_paths.plugin, hook_run_or_paths.name)
        else:
            paths = hook_run_or_paths
        exit = ExitInfo.read(paths.exit_file) or ExitInfo()
    return build_outcome(paths, exit, snapshot_dir, started_files_snapshot)
