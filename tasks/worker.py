"""A worker: archives the Snapshots that any crawl queued in the shared index, on this
machine, until told to stop (`archiveflow worker`, docs/scaling.md).

The shared index is the queue. A crawl started on any machine (`archiveflow add`) creates
its Snapshots there and works through them itself; every live worker claims them too, with
the same set-based claim (store/transitions.claim_next) under a lease of its own:

- claim up to the free slots of one unfinished crawl's ready snapshots (queued, or started
  by a worker whose lease ran out), shallowest first; prepare them (their ArchiveResults);
  run each one's hook walk (tasks/snapshots.run) in a thread; the Recorder writes the
  outcomes and seals the snapshot, as on one machine;
- a heartbeat renews the lease of every snapshot this worker still holds, every quarter
  of the lease: a worker that dies (kill -9, a lost machine) stops renewing, and after the
  lease another worker claims its snapshots; `prepare` there keeps every result already
  final and learns finished hooks from their files (a shared data folder), so nothing is
  run twice that had finished, and nothing is lost;
- `stop()` (SIGTERM/SIGINT): claim nothing more, hand back snapshots claimed but not
  started (requeue), finish the running ones, write them, return.

The crawl itself (its on_Crawl hooks, cleanup, seal) stays with the process that started
it.

A hook whose binary this machine lacks is not run here, and not failed: its ArchiveResult
ends `skipped` with a reason naming the binary, this machine and the fix (`archiveflow
install` on this machine, then `archiveflow update --status skipped`). A failure would say
the page or the plugin is broken; a skip says this machine could not try. It is not left
for another worker either: a worker claims whole snapshots (their hooks share one folder
and run in order), and a result that no live machine can run must still end, so the
crawl ends. The worker reloads this machine's Binary rows every `binaries_every` seconds,
so a binary installed while it runs (its install deployment's next run, `archiveflow
install`) is used from then on.
No Prefect import: the CLI wraps this (and serves this machine's install deployment,
deployments/binaries.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from archiveflow.store import crawls as crawl_store
from archiveflow.store import snapshots as snapshot_store
from archiveflow.store.db import retry_conflicts
from archiveflow.store.errors import StoreError
from archiveflow.store.transitions import move, renew_leases
from archiveflow.tasks import snapshots
from archiveflow.tasks.discover import Hook, is_plugin_enabled
from archiveflow.tasks.hooks import HookOutcome
from archiveflow.tasks.plan import ResultDone, SnapshotPlan
from archiveflow.tasks.recorder import Recorder
from archiveflow.tasks.runtime import Runtime

DEFAULT_LEASE: Final[float] = 300.0  # s; renewed every quarter of it while held
DEFAULT_POLL: Final[float] = 1.0  # s between looks at the index when there is nothing to do
BINARIES_EVERY: Final[float] = 60.0  # s between reloads of this machine's Binary rows


@dataclass
class WorkerReport:
    """What a worker did before it stopped."""

    snapshots: int = 0  # archived (recorded and sealed) by this worker
    results: dict[str, int] = field(default_factory=dict)  # their ArchiveResults by status
    handed_back: int = 0  # claimed but not started when told to stop
    errors: list[str] = field(default_factory=list)
    # plugin → ArchiveResults skipped here for a binary this machine lacks
    skipped: dict[str, int] = field(default_factory=dict)


class Worker:
    """Claims and archives snapshots of every unfinished crawl, `concurrency` at a time."""

    def __init__(self, rt: Runtime, *, concurrency: int = 2, lease: float = DEFAULT_LEASE,
                 poll: float = DEFAULT_POLL, binaries_every: float = BINARIES_EVERY,
                 on_skip: Callable[[str], None] | None = None,
                 slots: Callable[[], snapshots.Hold] | None = None) -> None:
        if not rt.store.shared:
            raise ValueError("a worker needs the shared index (ARCHIVEFLOW_CATALOG)")
        self.rt = rt
        self.concurrency = max(1, concurrency)
        self.lease = lease
        self.poll = poll
        self.binaries_every = binaries_every
        self.on_skip = on_skip  # told once per plugin the first time its work is skipped
        # a fresh `hold` per snapshot walk: the plugins' global slots (flows/limits.WalkSlots,
        # Prefect's, so "one browser at a time" holds across every machine); None: no limits
        self.slots = slots
        self.report = WorkerReport()
        self.stopping = threading.Event()  # set by stop(); also ends a wait at the start
        self._stop = self.stopping
        self._held: dict[str, SnapshotPlan] = {}  # snapshot id → plan, while leased here
        self._held_lock = threading.Lock()

    def stop(self) -> None:
        """Finish what runs, start nothing new (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> WorkerReport:
        """Work until `stop()`; returns what was done."""
        recorder = Recorder(self.rt.store)
        beat = threading.Thread(target=self._heartbeat, name="archiveflow-worker-lease",
                                daemon=True)
        beat.start()
        running: set[Future[list[ResultDone]]] = set()
        reload_at = time.monotonic() + self.binaries_every
        try:
            with ThreadPoolExecutor(self.concurrency,
                                    thread_name_prefix="archiveflow-worker") as pool:
                while not self._stop.is_set():
                    if time.monotonic() >= reload_at:
                        reload_at = time.monotonic() + self.binaries_every
                        self._reload_binaries()
                    running = {f for f in running if not f.done()}
                    free = self.concurrency - len(running)
                    try:
                        plans = self._claim(free) if free > 0 else []
                    except StoreError as e:
                        # The catalog went away for longer than the store waits (or the
                        # claim lost every retry): what was claimed runs out of lease and
                        # is claimed again; look again later.
                        self.report.errors.append(f"claim: {e}")
                        plans = []
                    for plan in plans:
                        fut = pool.submit(self._archive, recorder, plan)
                        running.add(fut)
                    if not plans:
                        self._stop.wait(self.poll)
                    elif free == len(plans):
                        continue  # took every free slot: look again as soon as one frees
                    else:
                        self._stop.wait(min(self.poll, 0.2))
                for fut in running:
                    fut.result()  # the walks end on their own; an error is raised here
        finally:
            recorder.close()
            self._stop.set()
            beat.join(5)
        return self.report

    def _claim(self, free: int) -> list[SnapshotPlan]:
        """Claim and prepare up to `free` ready snapshots of the oldest unfinished crawls."""
        cur = self.rt.store.cursor()
        out: list[SnapshotPlan] = []
        for crawl in crawl_store.unfinished_crawls(cur):
            if crawl["status"] != "started" or len(out) >= free:
                continue
            claimed = snapshot_store.claim_snapshots(cur, crawl["id"], limit=free - len(out),
                                                     lease=self.lease)
            if not claimed:
                continue
            with self._held_lock:
                for s in claimed:
                    self._held[s["id"]] = None  # type: ignore[assignment]  # held, not ready
            try:
                plans = snapshots.prepare(self.rt, crawl, claimed, cannot_run=self._cannot_run)
            except BaseException:
                with self._held_lock:  # no more renewals: their leases run out, and any
                    for s in claimed:  # worker (this one too) claims them again
                        self._held.pop(s["id"], None)
                raise
            with self._held_lock:
                for plan in plans:
                    self._held[plan.snapshot["id"]] = plan
            out.extend(plans)
        return out

    def _cannot_run(self, hook: Hook, binaries: list[str], why: str) -> HookOutcome:
        """A hook whose binary this machine lacks: skipped here, saying why and the fix."""
        m = self.rt.machine
        text = skip_reason(m.id, m.hostname, hook.plugin, why)
        first = hook.plugin not in self.report.skipped
        self.report.skipped[hook.plugin] = self.report.skipped.get(hook.plugin, 0) + 1
        if first and self.on_skip is not None:
            self.on_skip(text)
        now = datetime.now(UTC)
        return HookOutcome(status="skipped", output_str=text, started_at=now, ended_at=now)

    def _reload_binaries(self) -> None:
        """This machine's Binary rows again: a binary installed meanwhile is used now."""
        try:
            self.rt.refresh_binaries()
        except StoreError as e:  # the catalog is away: keep what we had, try again later
            self.report.errors.append(f"reloading this machine's binaries: {e}")

    def unavailable(self) -> dict[str, str]:
        """Enabled plugins (of the plugins path) that cannot run here → why (a binary this
        machine lacks, or whose install failed). A crawl's own PLUGINS_PATH may add more."""
        rt = self.rt
        cfg = rt.config()
        out = dict(rt.blocked_plugins(cfg))
        for plugin in rt.plugin_dirs(cfg):
            if plugin in out or not is_plugin_enabled(plugin, cfg):
                continue
            missing = rt.missing_binaries(plugin, cfg)
            if missing:
                why = "; ".join(f"{n}: {' '.join(rt.failed_binaries[n].split())}"
                                for n in missing if n in rt.failed_binaries)
                out[plugin] = (f"binary {', '.join(missing)} not found on this machine"
                               + (f" ({why})" if why else ""))
        return dict(sorted(out.items()))

    def _archive(self, recorder: Recorder, plan: SnapshotPlan) -> list[ResultDone]:
        sid = plan.snapshot["id"]
        try:
            if self._stop.is_set():  # told to stop before it started: hand it back
                self._hand_back([sid])
                self.report.handed_back += 1
                return []
            done = snapshots.run(self.rt, recorder, plan, wait=True,
                                 hold=self.slots() if self.slots is not None else None)
            self.report.snapshots += 1
            for r in done:
                self.report.results[r.outcome.status] = (
                    self.report.results.get(r.outcome.status, 0) + 1)
            return done
        except Exception as e:
            self.report.errors.append(f"snapshot {sid} ({plan.snapshot['url']}): {e}")
            raise
        finally:
            with self._held_lock:
                self._held.pop(sid, None)

    def _hand_back(self, ids: list[str]) -> None:
        """started → queued for snapshots this worker will not run (its results, if any,
        stay as they are: the next claimer's `prepare` resumes them)."""
        if ids:
            retry_conflicts(lambda: move(self.rt.store.cursor(), "snapshot", "requeue", ids,
                                         returning="id"))
        with self._held_lock:
            for sid in ids:
                self._held.pop(sid, None)

    def _heartbeat(self) -> None:
        """Renew the lease of every snapshot held, every quarter of the lease (a renewal may
        wait for the write lock)."""
        every = max(0.5, self.lease / 4)
        while not self._stop.wait(every):
            with self._held_lock:
                ids = list(self._held)
            if ids:
                try:
                    renew_leases(self.rt.store.cursor(), "snapshot", ids, self.lease)
                except Exception as e:  # noqa: BLE001 - the next beat tries again
                    self.report.errors.append(f"lease renewal: {e}")
        # after stop: keep renewing while walks still run (they finish on their own)
        while True:
            with self._held_lock:
                ids = list(self._held)
            if not ids:
                return
            try:
                renew_leases(self.rt.store.cursor(), "snapshot", ids, self.lease)
            except Exception:  # noqa: BLE001
                pass
            time.sleep(every)



def skip_reason(machine_id: str, hostname: str, plugin: str, why: str) -> str:
    """The output_str of an ArchiveResult skipped on a machine that lacks its binary."""
    return (f"skipped on machine {machine_id} ({hostname}): {why}; fix: run `archiveflow "
            f"install` on that machine, then `archiveflow update --status skipped --plugins "
            f"{plugin}` archives it again")
