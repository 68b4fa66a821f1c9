"""The ArchiveResult model: run one hook of a Snapshot and learn its outcome.

ArchiveResult: queued → started → succeeded / failed / skipped / noresults
(store/transitions.py). `run()` runs a foreground hook and calls `update_from_output()`;
`start()` starts a background hook, whose `update_from_output()` comes at its Snapshot's
cleanup (tasks/snapshots.py). Outcomes are not written here: the Snapshot hands them to the
Recorder, which finishes the rows in bulk (tasks/recorder.py).
"""

from __future__ import annotations

import errno
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from archiveflow.tasks import hooks
from archiveflow.tasks.config import hook_timeout
from archiveflow.tasks.discover import Hook
from archiveflow.tasks.hooks import HookLaunchError, HookOutcome, HookPaths, HookRun
from archiveflow.tasks.plan import PlanItem, ResultDone, SnapshotPlan
from archiveflow.tasks.process import kill_process, process_is_alive

# A full disk (or quota) is not transient for a hook: retrying at once fails the same way.
DISK_FULL: Final[frozenset[int]] = frozenset({errno.ENOSPC, errno.EDQUOT})
DISK_LOW_BYTES: Final[int] = 1024 * 1024  # below this a failed hook gets a disk-full note


class TransientHookError(RuntimeError):
    """A hook could not be run for a reason that may pass (e.g. out of processes)."""


def failed_outcome(error: str, exit_code: int | None = None) -> HookOutcome:
    """A failed outcome decided without (or instead of) the hook's own."""
    now = datetime.now(UTC)
    return HookOutcome(status="failed", error=error, exit_code=exit_code, started_at=now,
                       ended_at=now)


def disk_full_outcome(hook: Hook, e: OSError) -> HookOutcome:
    """The failure of a hook that could not run (or record its end) on a full disk."""
    return failed_outcome(f"hook {hook.name} could not run: the data folder's disk is full "
                          f"({e.strerror}: {e.filename or ''}); free space, then archive "
                          "this URL again")


def with_disk_note(outcome: HookOutcome, folder: Path) -> HookOutcome:
    """A failed hook on a full disk often could not even log why: say it for it."""
    if outcome.status != "failed":
        return outcome
    try:
        st = os.statvfs(folder)
    except OSError:
        return outcome
    free = st.f_bavail * st.f_frsize
    if free < DISK_LOW_BYTES:
        note = f"the data folder's disk is full ({free // 1024} KB free)"
        outcome.error = f"{outcome.error}\n{note}" if outcome.error else note
    return outcome


def _launch(plan: SnapshotPlan, item: PlanItem) -> HookRun:
    return hooks.run_hook(item.hook, args=plan.args, output_dir=plan.snap_dir, env=plan.env,
                          timeout=hook_timeout(item.hook, plan.config),
                          extra_context={**plan.extra_context, "archiveresult_id": item.ar_id})


def run(plan: SnapshotPlan, item: PlanItem) -> ResultDone:
    """Run one foreground hook and learn its outcome (not yet recorded).

    Raises TransientHookError when the hook could not start for a passing reason (EAGAIN,
    ENOMEM): the caller decides whether to try again."""
    hook = item.hook
    try:
        hook_run = _launch(plan, item)
    except HookLaunchError as e:
        return ResultDone(item.ar_id, hook, failed_outcome(f"hook {hook.name} cannot start: {e}"))
    except OSError as e:  # EAGAIN/ENOMEM: the machine is out of something for now
        if e.errno in DISK_FULL:
            return ResultDone(item.ar_id, hook, disk_full_outcome(hook, e))
        raise TransientHookError(f"hook {hook.name} could not start: {e}") from e
    return update_from_output(plan, item.ar_id, hook_run)


def run_retrying(plan: SnapshotPlan, item: PlanItem) -> ResultDone:
    """`run`, once more when the hook could not start for a passing reason (then raise)."""
    try:
        return run(plan, item)
    except TransientHookError:
        return run(plan, item)


def start(plan: SnapshotPlan, item: PlanItem) -> HookRun | ResultDone:
    """Start a background hook; a hook that cannot start is a finished failure."""
    try:
        return _launch(plan, item)
    except HookLaunchError as e:
        return ResultDone(item.ar_id, item.hook, failed_outcome(f"hook cannot start: {e}"))
    except OSError as e:
        if e.errno in DISK_FULL:
            return ResultDone(item.ar_id, item.hook, disk_full_outcome(item.hook, e))
        raise


def update_from_output(plan: SnapshotPlan, ar_id: str, hook_run: HookRun) -> ResultDone:
    """The single way an ArchiveResult learns its result, foreground or background: from
    the hook's logs, exit record and output folder (tasks/hooks.update_from_output)."""
    outcome = hooks.update_from_output(hook_run, output_dir=plan.snap_dir,
                                       snapshot_dir=plan.snap_dir)
    return ResultDone(ar_id, hook_run.hook, with_disk_note(outcome, plan.snap_dir), hook_run)


def recover(hook: Hook, snap_dir: Path) -> HookOutcome | None:
    """The outcome of a run a dead process started: None when it must run again (a run
    still alive is stopped first, also one whose pid file was never written)."""
    paths = HookPaths(snap_dir / hook.plugin, hook.name)
    if paths.pid_file.exists() and process_is_alive(paths.pid_file):
        kill_process(paths.pid_file, signal.SIGTERM, grace=2.0)
        return None
    if not paths.exit_file.exists():
        hooks.kill_unrecorded(paths)
        return None
    return hooks.update_from_output(paths, output_dir=snap_dir, snapshot_dir=snap_dir)


def pid_file(plan: SnapshotPlan, item: PlanItem) -> Path:
    """Where the hook of `item` keeps its pid while it runs."""
    return HookPaths(plan.snap_dir / item.hook.plugin, item.hook.name).pid_file


def orphan_hook(row: dict[str, Any]) -> Hook:
    """A stand-in Hook for a row whose plugin is no longer enabled (it is skipped)."""
    return Hook(path=Path(row["hook_name"]), plugin=row["plugin"], event="Snapshot", order=0,
                name=row["hook_name"], is_background=bool(row["is_background"]),
                is_daemon=False)
