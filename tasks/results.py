"""The ArchiveResult model: run one hook of a Snapshot and learn its outcome.

ArchiveResult: queued → started → succeeded / failed / skipped / noresults
(store/transitions.py). `run()` runs a foreground hook and calls `update_from_output()`;
`run_retrying()` runs it again, per its plugin's RetryPolicy (tasks/config.hook_retries),
while it fails for a passing reason (`is_transient`); every attempt stays on disk, the earlier
ones renamed `<stem>.attempt<N>.*` (`set_aside`), so `update_from_output()` reads the last;
`start()` starts a background hook, whose `update_from_output()` comes at its Snapshot's
cleanup (tasks/snapshots.py). Outcomes are not written here: the Snapshot hands them to the
Recorder, which finishes the rows in bulk (tasks/recorder.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from archiveflow.tasks import hooks
from archiveflow.tasks.config import hook_retries, hook_timeout
from archiveflow.tasks.discover import Hook
from archiveflow.tasks.hooks import HookLaunchError, HookOutcome, HookPaths, HookRun
from archiveflow.tasks.plan import PlanItem, ResultDone, SnapshotPlan
from archiveflow.tasks.process import kill_process, process_is_alive

# A full disk (or quota) is not transient for a hook: retrying at once fails the same way.
DISK_FULL: Final[frozenset[int]] = frozenset({errno.ENOSPC, errno.EDQUOT})
DISK_LOW_BYTES: Final[int] = 1024 * 1024  # below this a failed hook gets a disk-full note

# Failures that say the network or the server was busy for a moment, as hooks word them
# (urllib, wget, curl, Chromium): connection reset, DNS "try again", a timeout.
_TRANSIENT_NETWORK: Final = re.compile(
    r"connection (?:was )?reset|reset by peer|connection aborted|broken pipe"
    r"|temporary failure in name resolution|eai_again|name resolution.{0,20}try again"
    r"|timed? ?out\b|err_timed_out|err_connection_reset",
    re.IGNORECASE)
# An HTTP status that asks to come back later: 408, 429, 500, 502, 503, 504 (not 501/505,
# which say what the server can never do), next to a word that makes the number a status.
_TRANSIENT_HTTP: Final = re.compile(
    r"\b(?:http(?: error)?|error|status(?: code)?|returned error|response)[\s:=]*"
    r"(?:408|429|50[0234])\b|\b(?:408|429|50[0234]) (?:request timeout|too many requests"
    r"|internal server error|bad gateway|service unavailable|gateway time-?out)",
    re.IGNORECASE)
# The egress proxy answers 502 for a server it could not reach (tasks/egress.py): that 502
# is not the server's; only its reason (timed out, reset) may pass.
_EGRESS_MARK: Final[str] = "archiveflow egress"
_ATTEMPT_RE: Final = re.compile(r"\.attempt(\d+)\.exit\.json$")
# The runner's files of one run, renamed together when a later attempt of it starts.
_RUN_FILES: Final[tuple[str, ...]] = (".stdout.log", ".stderr.log", ".sh", ".exit.json")


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


def is_transient(outcome: HookOutcome, hook_run: HookRun | None = None) -> bool:
    """Whether a failed hook may succeed if run again soon: the retry rule, in one place.

    - A hook decides for itself when its ArchiveResult's `output_json` has `"retryable"`:
      true retries, false never does (docs/hooks.md).
    - Otherwise a failure is transient when the run timed out, or its error (the hook's own,
      its exit and its stderr tail) says the connection was reset or aborted, DNS failed
      temporarily, the request timed out, or the server answered HTTP 408, 429, 500, 502,
      503 or 504.
    - Everything else is terminal: 404 and other 4xx, refused connections (nothing listens),
      the egress policy's refusals and its 502 for a server it could not reach (unless the
      reason was a timeout or reset), bad input, a full disk, a hook that cannot start.
    """
    if outcome.status != "failed":
        return False
    if isinstance(outcome.output_json, dict):
        flag = outcome.output_json.get("retryable")
        if isinstance(flag, bool):
            return flag
    if hook_run is not None and hook_run.timed_out:
        return True
    text = outcome.error or ""
    if "disk is full" in text or "cannot start" in text:
        return False
    if _TRANSIENT_NETWORK.search(text):
        return True
    return _EGRESS_MARK not in text and _TRANSIENT_HTTP.search(text) is not None


def attempt_of(paths: HookPaths) -> int:
    """The number of a hook's latest run: 1 + the highest earlier attempt kept on disk."""
    highest = 0
    with contextlib.suppress(OSError):
        for name in os.listdir(paths.plugin_dir):
            m = _ATTEMPT_RE.search(name)
            if m and name[:m.start()] == paths.stem:
                highest = max(highest, int(m.group(1)))
    return highest + 1


def set_aside(paths: HookPaths) -> None:
    """Keep a finished earlier run of this hook as `<stem>.attempt<N>.*` before it runs again.

    The names keep the stem's `on_` and the runner's own suffixes, so they are never listed
    as output files (tasks/output.py). A run that never ended (no exit record) is not an
    attempt: the new run overwrites what it left."""
    if not paths.exit_file.exists():
        return
    n = attempt_of(paths)
    for suffix in _RUN_FILES:
        # A rename moves a symlink a hook planted, never what it points to.
        with contextlib.suppress(FileNotFoundError):
            os.replace(paths.plugin_dir / f"{paths.stem}{suffix}",
                       paths.plugin_dir / f"{paths.stem}.attempt{n}{suffix}")


def _launch(plan: SnapshotPlan, item: PlanItem) -> HookRun:
    set_aside(HookPaths(plan.snap_dir / item.hook.plugin, item.hook.name))
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


@dataclass
class RetriedResult(ResultDone):
    """The outcome of a foreground ArchiveResult's last attempt, with its earlier ones."""

    earlier: list[HookOutcome] = field(default_factory=list)  # this run's failed attempts
    attempt: int = 1  # number of the last attempt, counting every run kept on disk
    limit: int = 1  # attempts this run allowed (1 + its plugin's RETRIES)


def _run_once(plan: SnapshotPlan, item: PlanItem) -> ResultDone:
    """`run`, once more when the hook could not start for a passing reason (then raise)."""
    try:
        return run(plan, item)
    except TransientHookError:
        return run(plan, item)


def run_retrying(plan: SnapshotPlan, item: PlanItem,
                 sleep: Callable[[float], None] = time.sleep) -> RetriedResult:
    """Run a foreground hook, and again while it fails for a passing reason (`is_transient`),
    up to its plugin's RETRIES times, waiting RETRY_DELAY seconds, doubled each time.

    The wait holds the plugin's concurrency slot: a busy server is not asked more at once."""
    policy = hook_retries(item.hook, plan.config)
    earlier: list[HookOutcome] = []
    while True:
        done = _run_once(plan, item)
        if len(earlier) >= policy.retries or not is_transient(done.outcome, done.run):
            break
        earlier.append(done.outcome)
        sleep(policy.delay_before(len(earlier) + 1))
    attempt = attempt_of(done.run.paths) if done.run is not None else len(earlier) + 1
    return RetriedResult(done.ar_id, done.hook, done.outcome, done.run, earlier=earlier,
                         attempt=attempt, limit=policy.retries + 1)


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
