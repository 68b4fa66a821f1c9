"""Resuming after a crash: a hook the dead runner started is stopped before it runs again,
also when the runner died before it wrote the hook's pid file."""

from __future__ import annotations

import subprocess
from pathlib import Path

from hook_helpers import ProcGuard, fixture_hook

from archiveflow.tasks import results
from archiveflow.tasks.discover import Hook
from archiveflow.tasks.hooks import HookPaths, HookRun, kill_unrecorded, run_hook
from archiveflow.tasks.process import registered, unregister


def _start_service(snap_dir: Path, proc_guard: ProcGuard
                   ) -> tuple[Hook, HookRun, subprocess.Popen[bytes]]:
    hook = fixture_hook("daemon")  # a background service that runs until stopped
    run = run_hook(hook, args={"url": "https://example.com"}, output_dir=snap_dir,
                   env=proc_guard.env(), timeout=30)
    proc_guard.track(run.pid, run.pgid)
    popen = registered(run.paths.pid_file)
    assert popen is not None and popen.poll() is None
    return hook, run, popen


def test_recover_stops_a_run_whose_pid_file_was_never_written(
        snap_dir: Path, proc_guard: ProcGuard) -> None:
    hook, run, popen = _start_service(snap_dir, proc_guard)
    run.paths.pid_file.unlink()  # as if the runner was killed before writing it
    try:
        assert results.recover(hook, snap_dir) is None  # no exit record: it runs again
        assert popen.wait(10) is not None  # and the orphan was stopped first
    finally:
        unregister(run.paths.pid_file)


def test_kill_unrecorded_leaves_other_runs_alone(snap_dir: Path, proc_guard: ProcGuard
                                                 ) -> None:
    hook, run, popen = _start_service(snap_dir, proc_guard)
    other = HookPaths(snap_dir / "other", "on_Snapshot__10_other")
    other.plugin_dir.mkdir()
    other.cmd_file.write_text("#!/bin/sh\n# archiveflow run 01a23300-0000-7000-8000-000000000000\n")
    try:
        assert not kill_unrecorded(other)  # a run id nobody carries: nothing to kill
        assert popen.poll() is None
        assert kill_unrecorded(run.paths)
        assert popen.wait(10) is not None
    finally:
        unregister(run.paths.pid_file)
