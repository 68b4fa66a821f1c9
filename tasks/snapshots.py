"""The Snapshot model: claim, create its ArchiveResults, run its hooks, clean up, record.

Snapshot: queued → started → sealed (store/transitions.py). Batch-shaped where the crawl
loop works on sets: `claim` and `prepare` take many snapshots in a handful of statements.

- `prepare` (queued → started): one ArchiveResult per enabled on_Snapshot hook, created
  already started, in one transaction for the batch; resumes a crashed run's results.
- `run`: THE one walk over a snapshot's hooks, for every Prefect granularity: foreground
  hooks in order, background hooks alongside, each inside its plugin's concurrency slot
  (`hold`); then `cleanup` and `record`. `run_foreground` is the per-hook callback: by
  default the ArchiveResult's own run (tasks/results.py), or a Prefect task run of it.
- `cleanup` (before started → sealed): wait for finite background hooks, stop the rest by
  pid file, `update_from_output()` each.
- `record`: hand the outcomes to the Recorder, which finishes the ArchiveResults, stores the
  other records (`process_hook_records()`, e.g. discovered Snapshots) and seals, in bulk.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from archiveflow.store import results as result_store
from archiveflow.store import snapshots as snapshot_store
from archiveflow.store.db import retry_conflicts
from archiveflow.store.ids import new_id
from archiveflow.store.transitions import move, renew_leases
from archiveflow.tasks import results
from archiveflow.tasks.config import ConfigFileError, hook_timeout, load_plugin_config
from archiveflow.tasks.crawls import LEASE, config_of, crawl_context, crawl_hook_plugins, iso
from archiveflow.tasks.discover import Hook
from archiveflow.tasks.hooks import HookOutcome, HookRun, finalize_background, wait_background
from archiveflow.tasks.ingest import IngestReport
from archiveflow.tasks.plan import PlanItem, ResultDone, SnapshotPlan
from archiveflow.tasks.process import process_is_alive
from archiveflow.tasks.recorder import Recorder, SnapshotDone
from archiveflow.tasks.runtime import Runtime

Hold = Callable[[str, Mapping[str, str]], AbstractContextManager[None]]
RunForeground = Callable[[SnapshotPlan, PlanItem], ResultDone]
CannotRun = Callable[[Hook, list[str], str], HookOutcome]

PENDING: Final[tuple[str, ...]] = ("queued", "started")
# Seconds cleanup waits for a daemon that has printed nothing yet to print its first line
# (abx-dl waits for that readiness line before the next hook starts; we wait at cleanup).
READY_WAIT: Final[float] = 3.0


def _hold_nothing(plugin: str, config: Mapping[str, str]) -> AbstractContextManager[None]:
    return contextlib.nullcontext()


def claim(rt: Runtime, crawl: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """queued (or started with an expired lease) → started for up to `limit` snapshots of
    the crawl, shallowest first."""
    return snapshot_store.claim_snapshots(rt.store.cursor(), crawl["id"], limit=limit,
                                          lease=LEASE)


def seal_claimed_again(rt: Runtime, ids: list[str]) -> list[str]:
    """Seal snapshots a claim handed out a second time, once their first run is written
    (SnapshotFeed drops the second hand-out; the claim left the row `started`)."""
    return retry_conflicts(lambda: snapshot_store.seal_snapshots(rt.store.cursor(), ids))


def set_snapshot_json(snap_dir: Path, **fields: Any) -> None:
    """Update fields of an existing `snapshot.json` (atomically; absent file: nothing)."""
    path = snap_dir / "snapshot.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    data.update({k: iso(v) for k, v in fields.items()})
    tmp = snap_dir / ".snapshot.json.tmp"
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    tmp.replace(path)


def write_snapshot_json(crawl: dict[str, Any], snapshot: dict[str, Any], snap_dir: Path,
                        tags: list[str]) -> None:
    """Write `snapshot.json`: the Snapshot's row, so the index can be rebuilt from files."""
    keys = ("id", "crawl_id", "url", "depth", "parent_id", "title", "bookmarked_at",
            "created_at", "output_dir", "config")
    data = {k: iso(snapshot.get(k)) for k in keys}
    data["tags"] = tags
    data["crawl"] = {k: iso(crawl.get(k)) for k in (
        "id", "created_at", "username", "label", "seeds", "max_depth", "tags", "plugins",
        "url_allow", "url_deny", "max_urls", "parser", "config", "schedule", "output_dir")}
    tmp = snap_dir / ".snapshot.json.tmp"
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    tmp.replace(snap_dir / "snapshot.json")


def prepare(rt: Runtime, crawl: dict[str, Any], snapshots: list[dict[str, Any]], *,
            cannot_run: CannotRun | None = None) -> list[SnapshotPlan]:
    """Create the ArchiveResults of claimed snapshots of one crawl, claimed, in ONE
    transaction for the whole batch (a handful of statements, however many snapshots).

    A fresh snapshot's results are inserted already `started` under the lease. Resuming
    after a crash: results already final are kept; a `started` one whose hook had finished
    (its exit record is on disk) is learned from its files instead of being run again; one
    whose hook is still alive from the dead run is killed and run again.
    `cannot_run(hook, binaries, why)`: the outcome of a hook whose binary this machine lacks
    (default: failed; a worker records it skipped, tasks/worker.py).
    """
    if not snapshots:
        return []
    crawl_cfg = config_of(crawl)
    allow = crawl_hook_plugins(rt, crawl)  # the selection and what it requires
    tags = snapshot_store.tags_of(rt.store.cursor(), [s["id"] for s in snapshots])
    # Snapshots of a crawl nearly always share one config: hooks and binaries once per config.
    per_config: dict[int, tuple[dict[str, Hook], dict[str, list[str]], dict[str, str]]] = {}
    plans: list[SnapshotPlan] = []
    for snapshot in snapshots:
        cfg = rt.config(crawl_cfg, config_of(snapshot))
        if id(cfg) not in per_config:
            hooks = {h.name: h for h in rt.hooks("Snapshot", cfg, allow)}
            per_config[id(cfg)] = (hooks, {h.plugin: rt.missing_binaries(h.plugin, cfg)
                                           for h in hooks.values()},
                                   rt.blocked_plugins(cfg))
        snap_dir = rt.data_dir / snapshot["output_dir"]
        env = rt.hook_env(cfg, crawl_dir=rt.data_dir / crawl["output_dir"], snap_dir=snap_dir)
        try:
            snap_dir.mkdir(parents=True, exist_ok=True)
            write_snapshot_json(crawl, snapshot, snap_dir, tags[snapshot["id"]])
        except OSError as e:
            if e.errno not in results.DISK_FULL:
                raise
            # Go on: each hook then fails with the reason instead of the whole crawl crashing.
        plans.append(SnapshotPlan(crawl, snapshot, cfg, env, snap_dir))

    def create() -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
        # One transaction, run again whole if it loses a conflict (the shared index has
        # other writers; store/lake.py).
        with rt.store.transaction() as cur:
            existing: dict[str, list[dict[str, Any]]] = {s["id"]: [] for s in snapshots}
            for row in result_store.results_of(cur, list(existing)):
                existing[row["snapshot_id"]].append(row)
            fresh = []
            for plan in plans:
                s = plan.snapshot
                hooks = per_config[id(plan.config)][0]
                have = {r["hook_name"] for r in existing[s["id"]]}
                for h in hooks.values():
                    if h.name not in have:
                        row = {"id": new_id(), "snapshot_id": s["id"], "plugin": h.plugin,
                               "hook_name": h.name,
                               "output_dir": f"{s['output_dir']}/{h.plugin}",
                               "is_background": h.is_background, "status": "started"}
                        fresh.append(row)
                        existing[s["id"]].append(row)
            result_store.create_started(cur, fresh, lease=LEASE)
            queued = [r["id"] for rows in existing.values() for r in rows
                      if r["status"] == "queued"]
            if queued:  # results a resumed snapshot had not started yet
                move(cur, "archiveresult", "claim", queued, lease=LEASE, returning="id")
            return existing, fresh

    existing, fresh = retry_conflicts(create)
    fresh_ids = {r["id"] for r in fresh}
    stale_all: list[str] = []
    for plan in plans:
        hooks, missing_of, blocked = per_config[id(plan.config)]
        rows = [r for r in existing[plan.snapshot["id"]] if r["status"] in PENDING]
        stale = {r["id"] for r in rows if r["status"] == "started" and r["id"] not in fresh_ids}
        stale_all.extend(stale)
        for row in sorted(rows, key=lambda r: (hooks[r["hook_name"]].order, r["hook_name"])
                          if r["hook_name"] in hooks else (10**6, r["hook_name"])):
            hook = hooks.get(row["hook_name"])
            if hook is None:  # plugin disabled since the row was made
                plan.done.append(ResultDone(row["id"], results.orphan_hook(row), HookOutcome(
                    status="skipped", output_str="plugin no longer enabled")))
                continue
            if row["id"] in stale:
                recovered = results.recover(hook, plan.snap_dir)
                if recovered is not None:
                    plan.done.append(ResultDone(row["id"], hook, recovered))
                    continue
            if hook.plugin in blocked:  # fails fast with the install's own reason
                why = f"plugin {hook.plugin} cannot run on this machine: {blocked[hook.plugin]}"
                plan.done.append(ResultDone(row["id"], hook, cannot_run(hook, [], why)
                                            if cannot_run else results.failed_outcome(
                                                f"{why}; see `archiveflow binaries`")))
                continue
            missing = missing_of.get(hook.plugin)
            if missing:
                names = ", ".join(missing)
                why = "; ".join(f"{n}: {' '.join(rt.failed_binaries[n].split())}"
                                for n in missing if n in rt.failed_binaries)
                why = f"binary {names} not found on this machine" + (f" ({why})" if why else "")
                plan.done.append(ResultDone(row["id"], hook, cannot_run(hook, missing, why)
                                            if cannot_run else results.failed_outcome(
                    f"{why}: run `archiveflow install --plugins {hook.plugin}`")))
                continue
            plan.items.append(PlanItem(row["id"], hook))
    if stale_all:
        # Their rows stay `started`: this process holds them now.
        renew_leases(rt.store.cursor(), "archiveresult", stale_all, LEASE)
    return plans


def run(rt: Runtime, recorder: Recorder, plan: SnapshotPlan, *, hold: Hold | None = None,
        run_foreground: RunForeground | None = None, wait: bool = True) -> list[ResultDone]:
    """Run a prepared snapshot's hooks, clean up, record; returns every ArchiveResult's
    outcome (those decided at `prepare` included).

    `hold(plugin, config)` is entered around each hook run (a background hook holds it
    until cleanup): the flows pass the plugins' global concurrency slots. It is held around
    `run_foreground` too, so a limit holds whatever the callback does (a Prefect task run).
    `run_foreground(plan, item)`: how a foreground ArchiveResult runs (default
    results.run_retrying); it returns the outcome, or raises to fail the whole snapshot.
    `wait=False`: do not wait for the Recorder's write (the crawl loop flushes it).
    """
    hold = hold or _hold_nothing
    run_foreground = run_foreground or results.run_retrying
    outcomes: list[ResultDone] = []
    background: dict[str, HookRun] = {}
    with contextlib.ExitStack() as held:
        for item in plan.items:
            if background and waits_for_background(item.hook):
                # abx-dl runs SnapshotCleanupEvent before such a hook (htmltotext, hashes):
                # the background hooks started so far finish, and their results are in.
                outcomes.extend(cleanup(plan, background))
                background = {}
            if item.hook.is_background:
                held.enter_context(hold(item.hook.plugin, plan.config))
                started = results.start(plan, item)
                if isinstance(started, ResultDone):
                    outcomes.append(started)
                else:
                    background[item.ar_id] = started
                continue
            with hold(item.hook.plugin, plan.config):
                outcomes.append(run_foreground(plan, item))
        outcomes.extend(cleanup(plan, background))
    record(rt, recorder, plan, outcomes, wait=wait)
    return [*plan.done, *outcomes]


def waits_for_background(hook: Hook) -> bool:
    """True when the hook's plugin declares `wait_for_background_cleanup` (config.json)."""
    try:
        return load_plugin_config(hook.plugin_dir).wait_for_background_cleanup
    except ConfigFileError:
        return False  # the plugin's config is reported where its defaults are read


def has_running_background_hooks(plan: SnapshotPlan) -> bool:
    """True while a background hook of this snapshot is alive (by its pid file)."""
    return any(process_is_alive(results.pid_file(plan, item))
               for item in plan.items if item.hook.is_background)


def is_finished(plan: SnapshotPlan, outcomes: list[ResultDone]) -> bool:
    """No background hook of the snapshot is alive and no ArchiveResult is pending."""
    decided = {r.ar_id for r in outcomes} | {r.ar_id for r in plan.done}
    return (all(item.ar_id in decided for item in plan.items)
            and not has_running_background_hooks(plan))


def cleanup(plan: SnapshotPlan, runs: dict[str, HookRun]) -> list[ResultDone]:
    """Wait (bounded by each hook's timeout) for finite background hooks, stop the rest,
    and learn every outcome with update_from_output."""
    finite = [r for r in runs.values() if not r.hook.is_daemon]
    if finite:
        budget = max(hook_timeout(r.hook, plan.config) -
                     (datetime.now(UTC) - r.started_at).total_seconds() for r in finite)
        wait_background([r.paths.pid_file for r in finite], timeout=max(0.0, budget))
    wait_ready([r for r in runs.values() if r.hook.is_daemon])
    out = []
    for ar_id, hook_run in runs.items():
        reason = None if hook_run.hook.is_daemon else (
            f"timed out after {hook_timeout(hook_run.hook, plan.config):g}s")
        # abx-dl gives a background hook its whole timeout between SIGTERM and SIGKILL at
        # cleanup (on_SnapshotCleanupEvent): recorders write their output when asked to stop.
        grace = hook_timeout(hook_run.hook, plan.config) if hook_run.hook.is_daemon else 2.0
        try:
            finalize_background(hook_run, grace=grace, reason=reason
                                if process_is_alive(hook_run.paths.pid_file) else None)
        except OSError as e:  # its exit record could not be written
            if e.errno not in results.DISK_FULL:
                raise
            out.append(ResultDone(ar_id, hook_run.hook,
                                  results.disk_full_outcome(hook_run.hook, e), hook_run))
            continue
        done = results.update_from_output(plan, ar_id, hook_run)
        out.append(never_ready(done, hook_run))
    return out


def _printed(hook_run: HookRun) -> bool:
    try:
        return hook_run.paths.stdout_log.stat().st_size > 0
    except OSError:
        return False


def wait_ready(daemons: list[HookRun], ready_wait: float = READY_WAIT) -> None:
    """Give daemons that have printed nothing yet until `ready_wait` s after their start to
    print their first line (abx-dl's readiness) or exit, before cleanup stops them: a
    snapshot whose hooks were quick must not stop a service before it could start; one
    that has run that long already is not waited for."""
    def young(r: HookRun) -> bool:
        return (datetime.now(UTC) - r.started_at).total_seconds() < ready_wait

    pending = [r for r in daemons if not _printed(r)]
    while pending:
        pending = [r for r in pending if young(r) and not _printed(r)
                   and process_is_alive(r.paths.pid_file)]
        if pending:
            time.sleep(0.02)


def never_ready(done: ResultDone, hook_run: HookRun) -> ResultDone:
    """A background hook stopped at cleanup that had printed nothing at all is `failed`.

    abx-dl waits for a background hook's first stdout line ("readiness") before it moves on,
    and fails the hook that never prints one ("did not become ready"); only a hook that got
    ready and then exited on the cleanup SIGTERM without an ArchiveResult is `noresult`.
    Recording it `noresults` would hide that it never worked.
    """
    if not (hook_run.stopped and done.outcome.status == "noresults") or _printed(hook_run):
        return done
    secs = (datetime.now(UTC) - hook_run.started_at).total_seconds()
    outcome = replace(done.outcome, status="failed", error=(
        f"hook {hook_run.hook.name} was stopped at cleanup after {secs:.1f}s without having "
        "printed anything: it never reported being ready"))
    return replace(done, outcome=outcome)


def record(rt: Runtime, recorder: Recorder, plan: SnapshotPlan, outcomes: list[ResultDone],
           wait: bool = True) -> IngestReport | None:
    """Hand the snapshot's outcomes to the Recorder (which also seals it); with `wait`,
    return once they are in the index (without, the crawl loop flushes the Recorder).

    A hook that ran more than once (retries, `archiveflow update`) has its attempts written
    first, from the attempts kept on disk: rare, so not worth a column in every batch."""
    title = next((r.outcome.output_str for r in outcomes if r.hook.plugin == "title"
                  and r.outcome.status == "succeeded" and r.outcome.output_str), None)
    if title:  # the index takes it from the title result (as ArchiveBox); the folder too
        with contextlib.suppress(OSError):  # best effort: a full disk fails no snapshot
            set_snapshot_json(plan.snap_dir, title=title)
    attempts = {r.ar_id: n for r in outcomes if r.run is not None
                and (n := results.attempt_of(r.run.paths)) > 1}
    if attempts:
        retry_conflicts(lambda: result_store.set_attempts(rt.store.cursor(), attempts))
    item = SnapshotDone(crawl_context(rt, plan.crawl, plan.snapshot), [*plan.done, *outcomes],
                        urgent=wait)
    recorder.submit(item)
    return item.wait() if wait else None
