"""The work under the flows: crawl set-up and tear-down, and one snapshot's hooks.

Plain Python, no Prefect: flows/ wraps these functions in flows and tasks. Every function
takes the process's Runtime; DuckDB writes go through store/ (set-based) and the Recorder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from archiveflow.store import crawls as crawl_store
from archiveflow.store import results as result_store
from archiveflow.store import snapshots as snapshot_store
from archiveflow.store.ids import new_id
from archiveflow.store.load import frame, insert_frame
from archiveflow.store.snapshots import renew_leases
from archiveflow.store.transitions import move
from archiveflow.tasks.config import hook_timeout
from archiveflow.tasks.discover import Hook
from archiveflow.tasks.hooks import (
    HookLaunchError,
    HookOutcome,
    HookPaths,
    HookRun,
    finalize_background,
    kill_process,
    process_is_alive,
    run_hook,
    update_from_output,
    wait_background,
)
from archiveflow.tasks.ingest import Context, IngestReport, ingest_records
from archiveflow.tasks.recorder import Recorder, ResultDone, SnapshotDone, process_row
from archiveflow.tasks.runtime import Runtime

ARG_INLINE_MAX: Final[int] = 8 * 1024  # longer seed text goes through a file
SNAPSHOT_LEASE: Final[float] = 6 * 3600.0
_URLISH = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s"]+""")  # not into JSON quotes


# A full disk (or quota) is not transient for a hook: retrying at once fails the same way.
_DISK_FULL: Final[frozenset[int]] = frozenset({errno.ENOSPC, errno.EDQUOT})
DISK_LOW_BYTES: Final[int] = 1024 * 1024  # below this a failed hook gets a disk-full note


def _disk_full(hook: Hook, e: OSError) -> HookOutcome:
    return failed_outcome(f"hook {hook.name} could not run: the data folder's disk is full "
                          f"({e.strerror}: {e.filename or ''}); free space, then archive "
                          "this URL again")


def _with_disk_note(outcome: HookOutcome, folder: Path) -> HookOutcome:
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


class TransientHookError(RuntimeError):
    """A hook could not be run for a reason that may pass (e.g. out of processes)."""


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return json.loads(value) if value else {}


def crawl_context(rt: Runtime, crawl: dict[str, Any],
                  snapshot: dict[str, Any] | None = None) -> Context:
    """The filter context of records printed under this crawl (and snapshot)."""
    cfg = rt.config(_json(crawl.get("config")))
    truthy = ("true", "1", "yes", "on")
    return Context(
        crawl=crawl, snapshot=snapshot, machine_id=rt.machine.id,
        allow_private=cfg.get("URL_ALLOW_PRIVATE", "False").lower() in truthy,
        allow_file=cfg.get("URL_ALLOW_FILE", "False").lower() in truthy,
    )


def plugin_list(crawl: dict[str, Any]) -> list[str] | None:
    """The crawl's plugin allow-list (None: every enabled plugin)."""
    raw = crawl.get("plugins")
    return [p.strip() for p in raw.split(",") if p.strip()] if raw else None


# --- crawl -----------------------------------------------------------------------------

@dataclass
class CrawlStart:
    """What the on_Crawl hooks did: snapshots created, URLs refused, hooks that failed."""

    created: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    background: list[HookRun] = field(default_factory=list)


def claim_crawl(rt: Runtime, crawl_id: str) -> dict[str, Any]:
    """queued → started (or reclaim a started crawl whose worker died)."""
    return crawl_store.claim_crawl(rt.store.cursor(), crawl_id, lease=SNAPSHOT_LEASE)


def run_crawl_hooks(rt: Runtime, crawl: dict[str, Any]) -> CrawlStart:
    """Run the crawl's on_Crawl hooks and store their records (depth-0 Snapshots)."""
    out = CrawlStart()
    cfg = rt.config(_json(crawl.get("config")))
    crawl_dir = rt.data_dir / crawl["output_dir"]
    crawl_dir.mkdir(parents=True, exist_ok=True)
    (crawl_dir / "crawl.json").write_text(
        json.dumps({k: _iso(v) for k, v in crawl.items()}, default=str), encoding="utf-8")
    seeds: str = crawl["seeds"]
    source = seeds
    if len(seeds) > ARG_INLINE_MAX or "\n" in seeds:
        src = crawl_dir / "sources" / "seeds.txt"
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(seeds, encoding="utf-8")
        source = str(src)
    m = _URLISH.search(seeds) if len(seeds) < 1_000_000 else None
    args = {"url": m.group(0) if m else seeds.strip()[:2000], "crawl_id": crawl["id"],
            "source_url": source}
    if crawl.get("parser"):
        args["parser"] = crawl["parser"]
    env = rt.hook_env(cfg, crawl_dir=crawl_dir)
    ctx = crawl_context(rt, crawl)
    procs: list[dict[str, Any]] = []
    for hook in rt.hooks("Crawl", cfg):
        # Resuming after a crash: a run of this hook that the dead process started (a
        # crawl-wide service runs until stopped) is stopped before the new one starts.
        stale = HookPaths(crawl_dir / hook.plugin, hook.name).pid_file
        if stale.exists() and process_is_alive(stale):
            kill_process(stale, signal.SIGTERM, grace=2.0)
        try:
            run = run_hook(hook, args=args, output_dir=crawl_dir, env=env,
                           timeout=hook_timeout(hook, cfg),
                           extra_context={"crawl_id": crawl["id"]})
        except HookLaunchError as e:
            out.failures.append(f"{hook.name}: {e}")
            continue
        if hook.is_background:
            out.background.append(run)
            continue
        outcome = update_from_output(run, output_dir=crawl_dir, snapshot_dir=crawl_dir)
        procs.append(process_row("crawl", crawl["id"], run, outcome))
        if outcome.status == "failed":
            # A seed parser that failed printed nothing usable: archive nothing half-way.
            out.failures.append(f"{hook.plugin}: {outcome.error or 'failed'}")
            continue
        with rt.store.transaction() as cur:
            rep = ingest_records(cur, outcome.other_records, ctx)
        out.created += rep.counts.get("Snapshot", 0)
        out.refused.extend(rep.refused)
    if procs:
        with rt.store.transaction() as cur:
            insert_frame(cur, "process", frame("process", procs))
    return out


def finish_crawl(rt: Runtime, crawl: dict[str, Any], background: list[HookRun]) -> dict[str, Any]:
    """Stop the crawl's background hooks, run on_CrawlEnd hooks, seal the crawl."""
    for run in background:
        finalize_background(run)
    cfg = rt.config(_json(crawl.get("config")))
    crawl_dir = rt.data_dir / crawl["output_dir"]
    env = rt.hook_env(cfg, crawl_dir=crawl_dir)
    for hook in rt.hooks("CrawlEnd", cfg):
        try:
            run_hook(hook, args={"crawl_id": crawl["id"]}, output_dir=crawl_dir, env=env,
                     timeout=hook_timeout(hook, cfg), extra_context={"crawl_id": crawl["id"]})
        except HookLaunchError:
            continue
    return crawl_store.seal_crawl(rt.store.cursor(), crawl["id"])


# --- snapshot --------------------------------------------------------------------------

@dataclass
class PlanItem:
    """One ArchiveResult to run: its row id and its hook."""

    ar_id: str
    hook: Hook


@dataclass
class SnapshotPlan:
    """A claimed snapshot with its pending ArchiveResults, ready to run."""

    crawl: dict[str, Any]
    snapshot: dict[str, Any]
    config: dict[str, str]
    env: dict[str, str]
    snap_dir: Path
    items: list[PlanItem] = field(default_factory=list)
    done: list[ResultDone] = field(default_factory=list)  # decided without running

    @property
    def args(self) -> dict[str, str]:
        """argv of an on_Snapshot hook."""
        s = self.snapshot
        return {"url": s["url"], "snapshot_id": s["id"], "crawl_id": s["crawl_id"],
                "depth": str(s["depth"])}

    @property
    def extra_context(self) -> dict[str, Any]:
        s = self.snapshot
        return {"snapshot_id": s["id"], "snapshot_depth": s["depth"], "crawl_id": s["crawl_id"]}


def failed_outcome(error: str, exit_code: int | None = None) -> HookOutcome:
    now = datetime.now(UTC)
    return HookOutcome(status="failed", error=error, exit_code=exit_code, started_at=now,
                       ended_at=now)


def prepare_snapshot(rt: Runtime, crawl: dict[str, Any], snapshot: dict[str, Any]
                     ) -> SnapshotPlan:
    """prepare_snapshots for one claimed snapshot."""
    return prepare_snapshots(rt, crawl, [snapshot])[0]


def prepare_snapshots(rt: Runtime, crawl: dict[str, Any], snapshots: list[dict[str, Any]]
                      ) -> list[SnapshotPlan]:
    """Create the ArchiveResults of claimed snapshots of one crawl, claimed, in ONE
    transaction for the whole batch (a handful of statements, however many snapshots).

    A fresh snapshot's results are inserted already `started` under the lease. Resuming
    after a crash: results already final are kept; a `started` one whose hook had finished
    (its exit record is on disk) is learned from its files instead of being run again; one
    whose hook is still alive from the dead run is killed and run again.
    """
    if not snapshots:
        return []
    crawl_cfg = _json(crawl.get("config"))
    allow = plugin_list(crawl)
    tags = snapshot_store.tags_of(rt.store.cursor(), [s["id"] for s in snapshots])
    # Snapshots of a crawl nearly always share one config: hooks and binaries once per config.
    per_config: dict[int, tuple[dict[str, Hook], dict[str, list[str]]]] = {}
    plans: list[SnapshotPlan] = []
    for snapshot in snapshots:
        cfg = rt.config(crawl_cfg, _json(snapshot.get("config")))
        if id(cfg) not in per_config:
            hooks = {h.name: h for h in rt.hooks("Snapshot", cfg, allow)}
            per_config[id(cfg)] = (hooks, {h.plugin: rt.missing_binaries(h.plugin, cfg)
                                           for h in hooks.values()})
        snap_dir = rt.data_dir / snapshot["output_dir"]
        env = rt.hook_env(cfg, crawl_dir=rt.data_dir / crawl["output_dir"], snap_dir=snap_dir)
        try:
            snap_dir.mkdir(parents=True, exist_ok=True)
            write_snapshot_json(crawl, snapshot, snap_dir, tags[snapshot["id"]])
        except OSError as e:
            if e.errno not in _DISK_FULL:
                raise
            # Go on: each hook then fails with the reason instead of the whole crawl crashing.
        plans.append(SnapshotPlan(crawl, snapshot, cfg, env, snap_dir))
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
                           "hook_name": h.name, "output_dir": f"{s['output_dir']}/{h.plugin}",
                           "is_background": h.is_background, "status": "started"}
                    fresh.append(row)
                    existing[s["id"]].append(row)
        result_store.create_started(cur, fresh, lease=SNAPSHOT_LEASE)
        queued = [r["id"] for rows in existing.values() for r in rows if r["status"] == "queued"]
        if queued:  # results a resumed snapshot had not started yet
            move(cur, "archiveresult", "claim", queued, lease=SNAPSHOT_LEASE, returning="id")
    fresh_ids = {r["id"] for r in fresh}
    stale_all: list[str] = []
    for plan in plans:
        hooks, missing_of = per_config[id(plan.config)]
        rows = [r for r in existing[plan.snapshot["id"]]
                if r["status"] in ("queued", "started")]
        stale = {r["id"] for r in rows if r["status"] == "started" and r["id"] not in fresh_ids}
        stale_all.extend(stale)
        for row in sorted(rows, key=lambda r: (hooks[r["hook_name"]].order, r["hook_name"])
                          if r["hook_name"] in hooks else (10**6, r["hook_name"])):
            hook = hooks.get(row["hook_name"])
            if hook is None:  # plugin disabled since the row was made
                plan.done.append(ResultDone(row["id"], _orphan_hook(row), HookOutcome(
                    status="skipped", output_str="plugin no longer enabled")))
                continue
            if row["id"] in stale:
                recovered = _recover(hook, plan.snap_dir)
                if recovered is not None:
                    plan.done.append(ResultDone(row["id"], hook, recovered))
                    continue
            missing = missing_of.get(hook.plugin)
            if missing:
                names = ", ".join(missing)
                plan.done.append(ResultDone(row["id"], hook, failed_outcome(
                    f"binary {names} not found on this machine: run "
                    f"`archiveflow install --plugins {hook.plugin}`")))
                continue
            plan.items.append(PlanItem(row["id"], hook))
    if stale_all:
        # Their rows stay `started`: this process holds them now.
        renew_leases(rt.store.cursor(), "archiveresult", stale_all, SNAPSHOT_LEASE)
    return plans


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def write_snapshot_json(crawl: dict[str, Any], snapshot: dict[str, Any], snap_dir: Path,
                        tags: list[str]) -> None:
    """Write `snapshot.json`: the Snapshot's row, so the index can be rebuilt from files."""
    keys = ("id", "crawl_id", "url", "depth", "parent_id", "title", "bookmarked_at",
            "created_at", "output_dir", "config")
    data = {k: _iso(snapshot.get(k)) for k in keys}
    data["tags"] = tags
    data["crawl"] = {k: _iso(crawl.get(k)) for k in (
        "id", "created_at", "username", "label", "seeds", "max_depth", "tags", "plugins",
        "url_allow", "url_deny", "max_urls", "parser", "config", "schedule", "output_dir")}
    tmp = snap_dir / ".snapshot.json.tmp"
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    tmp.replace(snap_dir / "snapshot.json")


def _orphan_hook(row: dict[str, Any]) -> Hook:
    return Hook(path=Path(row["hook_name"]), plugin=row["plugin"], event="Snapshot", order=0,
                name=row["hook_name"], is_background=bool(row["is_background"]),
                is_daemon=False)


def _recover(hook: Hook, snap_dir: Path) -> HookOutcome | None:
    """The outcome of a run a dead process started: None when it must run again."""
    paths = HookPaths(snap_dir / hook.plugin, hook.name)
    if paths.pid_file.exists() and process_is_alive(paths.pid_file):
        kill_process(paths.pid_file, signal.SIGTERM, grace=2.0)
        return None
    if not paths.exit_file.exists():
        return None
    return update_from_output(paths, output_dir=snap_dir, snapshot_dir=snap_dir)


def run_result(rt: Runtime, plan: SnapshotPlan, item: PlanItem) -> ResultDone:
    """Run one foreground hook and learn its outcome (not yet recorded)."""
    hook = item.hook
    try:
        run = run_hook(hook, args=plan.args, output_dir=plan.snap_dir, env=plan.env,
                       timeout=hook_timeout(hook, plan.config),
                       extra_context={**plan.extra_context, "archiveresult_id": item.ar_id})
    except HookLaunchError as e:
        return ResultDone(item.ar_id, hook, failed_outcome(f"hook {hook.name} cannot start: {e}"))
    except OSError as e:  # EAGAIN/ENOMEM: the machine is out of something for now
        if e.errno in _DISK_FULL:
            return ResultDone(item.ar_id, hook, _disk_full(hook, e))
        raise TransientHookError(f"hook {hook.name} could not start: {e}") from e
    outcome = update_from_output(run, output_dir=plan.snap_dir, snapshot_dir=plan.snap_dir)
    return ResultDone(item.ar_id, hook, _with_disk_note(outcome, plan.snap_dir), run)


def start_background(rt: Runtime, plan: SnapshotPlan, item: PlanItem) -> HookRun | ResultDone:
    """Start a background hook; a hook that cannot start is a finished failure."""
    try:
        return run_hook(item.hook, args=plan.args, output_dir=plan.snap_dir, env=plan.env,
                        timeout=hook_timeout(item.hook, plan.config),
                        extra_context={**plan.extra_context, "archiveresult_id": item.ar_id})
    except HookLaunchError as e:
        return ResultDone(item.ar_id, item.hook, failed_outcome(f"hook cannot start: {e}"))
    except OSError as e:
        if e.errno in _DISK_FULL:
            return ResultDone(item.ar_id, item.hook, _disk_full(item.hook, e))
        raise


def finish_background(rt: Runtime, plan: SnapshotPlan, runs: dict[str, HookRun]
                      ) -> list[ResultDone]:
    """Wait (bounded by each hook's timeout) for finite background hooks, stop the rest,
    and learn every outcome with update_from_output."""
    finite = [r for r in runs.values() if not r.hook.is_daemon]
    if finite:
        budget = max(hook_timeout(r.hook, plan.config) -
                     (datetime.now(UTC) - r.started_at).total_seconds() for r in finite)
        wait_background([r.paths.pid_file for r in finite], timeout=max(0.0, budget))
    out = []
    for ar_id, run in runs.items():
        reason = None if run.hook.is_daemon else (
            f"timed out after {hook_timeout(run.hook, plan.config):g}s")
        try:
            finalize_background(run, reason=reason if process_is_alive(run.paths.pid_file)
                                else None)
        except OSError as e:  # its exit record could not be written
            if e.errno not in _DISK_FULL:
                raise
            out.append(ResultDone(ar_id, run.hook, _disk_full(run.hook, e), run))
            continue
        outcome = update_from_output(run, output_dir=plan.snap_dir, snapshot_dir=plan.snap_dir)
        out.append(ResultDone(ar_id, run.hook, _with_disk_note(outcome, plan.snap_dir), run))
    return out


def record_snapshot(rt: Runtime, recorder: Recorder, plan: SnapshotPlan,
                    results: list[ResultDone], wait: bool = True) -> IngestReport | None:
    """Hand the snapshot's outcomes to the recorder; with `wait`, return once they are in
    the index (without, the caller's crawl loop flushes the recorder before it ends)."""
    item = SnapshotDone(crawl_context(rt, plan.crawl, plan.snapshot), [*plan.done, *results],
                        urgent=wait)
    recorder.submit(item)
    return item.wait() if wait else None


Hold = Callable[[str, Mapping[str, str]], AbstractContextManager[None]]


def _hold_nothing(plugin: str, config: Mapping[str, str]) -> AbstractContextManager[None]:
    return contextlib.nullcontext()


def run_snapshot(rt: Runtime, recorder: Recorder, crawl: dict[str, Any],
                 snapshot: dict[str, Any], hold: Hold | None = None, *,
                 plan: SnapshotPlan | None = None, wait: bool = True) -> dict[str, int]:
    """run_snapshot_results, as result counts by status."""
    return count_results(run_snapshot_results(rt, recorder, crawl, snapshot, hold, plan=plan,
                                              wait=wait))


def count_results(results: list[ResultDone]) -> dict[str, int]:
    """Result counts by status."""
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome.status] = counts.get(r.outcome.status, 0) + 1
    return counts


def run_snapshot_results(rt: Runtime, recorder: Recorder, crawl: dict[str, Any],
                         snapshot: dict[str, Any], hold: Hold | None = None, *,
                         plan: SnapshotPlan | None = None, wait: bool = True
                         ) -> list[ResultDone]:
    """A whole snapshot in one call: foreground hooks in order, background hooks alongside,
    then cleanup and record. Returns every ArchiveResult's outcome.

    `hold(plugin, config)` is entered around each hook run (a background hook holds it
    until it is finished): the flows pass a global concurrency slot for browser plugins.
    `plan`: already prepared (SnapshotFeed prepares a batch at once); `wait=False`: do not
    wait for the recorder (see record_snapshot).
    """
    hold = hold or _hold_nothing
    plan = plan if plan is not None else prepare_snapshot(rt, crawl, snapshot)
    results: list[ResultDone] = []
    background: dict[str, HookRun] = {}
    with contextlib.ExitStack() as held:
        for item in plan.items:
            if item.hook.is_background:
                held.enter_context(hold(item.hook.plugin, plan.config))
                started = start_background(rt, plan, item)
                if isinstance(started, ResultDone):
                    results.append(started)
                else:
                    background[item.ar_id] = started
                continue
            with hold(item.hook.plugin, plan.config):
                try:
                    results.append(run_result(rt, plan, item))
                except TransientHookError:
                    results.append(run_result(rt, plan, item))  # once more, then raise
        results.extend(finish_background(rt, plan, background))
    record_snapshot(rt, recorder, plan, results, wait=wait)
    return [*plan.done, *results]


class SnapshotFeed:
    """Claimed, prepared snapshots of one crawl for a crawl loop to run, C at a time.

    Snapshots are claimed and prepared in batches (`batch`, default 4×C): one claim and one
    transaction for their ArchiveResults serve the whole batch, instead of ~6 statements per
    snapshot (each 1–15 ms here). A claimed snapshot waiting in the batch holds its lease
    like a running one; after a crash `recover_stale` frees it.
    """

    def __init__(self, rt: Runtime, recorder: Recorder, crawl: dict[str, Any],
                 concurrency: int, batch: int | None = None) -> None:
        self.rt, self.recorder, self.crawl = rt, recorder, crawl
        self.batch = max(1, batch if batch is not None else min(64, 4 * concurrency))
        self.ready: list[SnapshotPlan] = []
        self.started = 0

    def _claim(self, n: int) -> None:
        claimed = snapshot_store.claim_snapshots(
            self.rt.store.cursor(), self.crawl["id"], limit=n, lease=SNAPSHOT_LEASE)
        self.ready.extend(prepare_snapshots(self.rt, self.crawl, claimed))

    def take(self, free: int, idle: bool) -> list[SnapshotPlan]:
        """Up to `free` prepared snapshots. `idle`: nothing of this crawl is running, so
        what the recorder still holds (sealed snapshots, discovered URLs) is written first."""
        self.recorder.check()
        if free <= 0:
            return []
        if len(self.ready) < free:
            self._claim(max(self.batch, free) - len(self.ready))
        if not self.ready:
            # Nothing claimable: the recorder may hold discovered URLs (depth crawls). Idle,
            # wait for it; otherwise have it write now, and the next take() finds them.
            if not idle:
                self.recorder.hurry()
                return []
            self.recorder.flush()
            self._claim(max(self.batch, free))
        out, self.ready = self.ready[:free], self.ready[free:]
        self.started += len(out)
        return out

    def done(self) -> bool:
        """True when the crawl has nothing queued or running left (after a flush)."""
        self.recorder.flush()
        return not self.ready and snapshot_store.is_crawl_done(self.rt.store.cursor(),
                                                               self.crawl["id"])


def recover_stale(rt: Runtime) -> int:
    """After a crash: expire the leases of rows a dead process held.

    Safe because a local index.duckdb has one writer at a time: if we could open it, no
    other process is working on it. Returns how many rows were released.
    """
    cur = rt.store.cursor()
    n = 0
    for table in ("crawl", "snapshot", "archiveresult", "machine_binary"):
        res = cur.execute(
            f"UPDATE {table} SET retry_at = now() - INTERVAL 1 SECOND "
            "WHERE status = 'started' RETURNING id").fetchall()
        n += len(res)
    return n
