"""One writer thread that turns finished snapshots into a few set-based statements.

Snapshot workers hand over a SnapshotDone (every ArchiveResult outcome of one snapshot) and
either wait for it to be in the index or go on at once (the crawl loop then calls `flush()`
before it decides the crawl is done, and `check()` to stop on a failed write). Not waiting is
safe: every outcome is on disk first (exit records), and a crash before the write is
recovered from those files. The recorder takes whatever has queued up (up to MAX_BATCH) and
writes it in ONE transaction: finish the results, list their files, log invalid records,
record the hook processes, store discovered records, seal the snapshots. Per-row writes cost
1–2 ms in DuckDB; this keeps the cost per snapshot to a share of one batch.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Final

from archiveflow.store import results as result_store
from archiveflow.store import snapshots as snapshot_store
from archiveflow.store.db import Store, retry_conflicts
from archiveflow.store.processes import add_processes
from archiveflow.tasks.hooks import HookOutcome, HookRun
from archiveflow.tasks.ingest import Context, IngestReport, ingest_snapshots_outcomes
from archiveflow.tasks.plan import ResultDone

MAX_BATCH: Final[int] = 256
# s a batch waits for more snapshots when nobody waits for it. A batch costs ~30 ms of CPU
# whatever its size, taken from the hooks on 2 cores: at 1 s a C=4 crawl of 3 pages/s wrote
# batches of ~4 (15 ms of CPU per page in all); a crawl loop that runs out of claimable
# snapshots hurries the write (SnapshotFeed.take), so a longer linger never stalls a crawl.
LINGER: Final[float] = 2.5
# s the search-text indexer gathers sealed snapshots before one write (derived data: a
# search adds what is missing), and at most this many snapshots per write.
INDEX_LINGER: Final[float] = 5.0
INDEX_BATCH: Final[int] = 512
_FLUSH: Final = object()  # queue marker: write what is queued now


@dataclass
class SnapshotDone:
    """Everything one snapshot produced; `wait()` returns once it is in the index."""

    ctx: Context
    results: list[ResultDone]
    seal: bool = True
    urgent: bool = False  # somebody waits for it: write without lingering
    report: IngestReport | None = None
    error: BaseException | None = None
    _done: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float | None = None) -> IngestReport:
        """Block until recorded; re-raise the recorder's error if the write failed."""
        if not self._done.wait(timeout):
            raise TimeoutError("recorder did not write the snapshot in time")
        if self.error is not None:
            raise self.error
        assert self.report is not None
        return self.report


def _result_rows(items: list[SnapshotDone]) -> dict[str, list[dict[str, Any]]]:
    finish: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    procs: list[dict[str, Any]] = []
    for item in items:
        for r in item.results:
            o = r.outcome
            finish.append({
                "id": r.ar_id, "status": o.status, "output_str": o.output_str,
                "output_json": o.output_json, "error": o.error, "start_ts": o.started_at,
                "end_ts": o.ended_at, "exit_code": o.exit_code, "output_size": o.output_size,
                "output_count": len(o.output_files),
            })
            files.extend({"archiveresult_id": r.ar_id, "path": f.path, "size": f.size,
                          "mimetype": f.mimetype} for f in o.output_files)
            errors.extend({"owner_id": r.ar_id, "hook_name": r.hook.name, "line": e.line,
                           "error": e.error} for e in o.record_errors)
            if r.run is not None:
                procs.append({**process_row("archiveresult", r.ar_id, r.run, o),
                              "machine_id": item.ctx.machine_id})  # which machine ran it
    return {"finish": finish, "files": files, "errors": errors, "procs": procs}


def process_row(owner_type: str, owner_id: str, run: HookRun, outcome: HookOutcome | None
                ) -> dict[str, Any]:
    """A `process` table row for one hook run."""
    return {
        "id": run.run_id, "owner_type": owner_type, "owner_id": owner_id, "machine_id": None,
        "hook_name": run.hook.name, "pid": run.pid, "cmd": " ".join(run.cmd),
        "cwd": str(run.paths.plugin_dir), "started_at": run.started_at,
        "ended_at": outcome.ended_at if outcome else run.ended_at,
        "exit_code": outcome.exit_code if outcome else run.exit_code,
    }


def write_batch(store: Store, items: list[SnapshotDone]) -> list[IngestReport]:
    """Record a batch of finished snapshots in one transaction (retried on conflicts)."""
    rows = _result_rows(items)

    def attempt() -> list[IngestReport]:
        with store.transaction() as cur:
            result_store.finish_results(cur, rows["finish"])
            if rows["files"]:
                result_store.add_output_files(cur, rows["files"])
            if rows["errors"]:
                result_store.add_record_errors(cur, rows["errors"])
            # Fresh UUIDv7 ids, and a retry re-runs the whole rolled-back transaction.
            add_processes(cur, rows["procs"], fresh_ids=True)
            # Chunk by chunk: a run's records may be millions (read from its files).
            reports = ingest_snapshots_outcomes(
                cur, [([r.outcome for r in item.results], item.ctx) for item in items])
            seal = [i.ctx.snapshot["id"] for i in items if i.seal and i.ctx.snapshot]
            titled = [i.ctx.snapshot["id"] for i in items if i.ctx.snapshot and any(
                r.hook.plugin == "title" and r.outcome.status == "succeeded"
                for r in i.results)]
            snapshot_store.set_titles_from_results(cur, titled)
            snapshot_store.seal_snapshots(cur, seal)
            return reports

    return retry_conflicts(attempt)


class Recorder:
    """The batch writer thread of one process, and its search-text indexer thread."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.error: BaseException | None = None  # the first failed write
        self._cond = threading.Condition()
        self._submitted = 0
        self._written = 0
        self._q: queue.Queue[SnapshotDone | object | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="archiveflow-recorder",
                                        daemon=True)
        self._thread.start()
        # Sealed snapshots' text goes into the search table off the write path: it is
        # derived data (a search adds whatever is missing), so it never delays a seal.
        self._text_q: queue.Queue[list[str] | None] = queue.Queue()
        self._indexer = threading.Thread(target=self._index_loop,
                                         name="archiveflow-search-text", daemon=True)
        self._indexer.start()

    def _index_loop(self) -> None:
        from archiveflow.store import search

        ensured = False
        while True:
            first = self._text_q.get()
            if first is None:
                return
            ids = list(first)
            stop = False
            deadline = time.monotonic() + INDEX_LINGER
            while len(ids) < INDEX_BATCH:
                try:
                    more = self._text_q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                ids.extend(more)
            try:
                with self.store.transaction() as cur:
                    if not ensured:
                        search.ensure_tables(cur)
                        ensured = True
                    search.index_snapshots(cur, self.store.path.parent, ids, ensure=False)
            except Exception:  # noqa: BLE001 - derived data; the next search catches up
                pass
            if stop:
                return

    def submit(self, item: SnapshotDone) -> SnapshotDone:
        """Queue a finished snapshot for the next batch."""
        with self._cond:
            self._submitted += 1
        self._q.put(item)
        return item

    def hurry(self) -> None:
        """Have what is queued written now, without waiting for it."""
        with self._cond:
            if self._written < self._submitted:
                self._q.put(_FLUSH)

    def flush(self) -> None:
        """Wait until everything submitted so far is written; raise a failed write."""
        with self._cond:
            target = self._submitted
            if self._written < target:
                self._q.put(_FLUSH)  # stop lingering
            self._cond.wait_for(lambda: self._written >= target)
        self.check()

    def check(self) -> None:
        """Raise the error of a batch that failed to write, if any (a crawl that does not
        wait for each snapshot's write learns of it here, and stops loudly)."""
        if self.error is not None:
            raise self.error

    def _next_batch(self) -> tuple[list[SnapshotDone], bool]:
        """The next batch, and whether to stop after it. Nobody waits for a snapshot that
        was submitted with `wait=False`, so the batch lingers (LINGER s) to take more: a
        transaction costs 20-60 ms here whatever its size. A waiter, a flush or close ends
        the lingering at once."""
        batch: list[SnapshotDone] = []
        first = self._q.get()
        if first is None:
            return batch, True
        urgent = first is _FLUSH
        if isinstance(first, SnapshotDone):
            batch.append(first)
            urgent = first.urgent
        deadline = time.monotonic() + LINGER
        while len(batch) < MAX_BATCH:
            left = 0.0 if urgent else deadline - time.monotonic()
            try:
                nxt = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                return batch, True
            if not isinstance(nxt, SnapshotDone):  # _FLUSH
                urgent = True
                continue
            batch.append(nxt)
            urgent = urgent or nxt.urgent
        return batch, False

    def _loop(self) -> None:
        while True:
            batch, stop = self._next_batch()
            if not batch:
                if stop:
                    return
                continue
            try:
                reports = write_batch(self.store, batch)
                for item, rep in zip(batch, reports, strict=True):
                    item.report = rep
            except BaseException as e:  # noqa: BLE001 - handed to every waiter
                for item in batch:
                    item.error = e
            for item in batch:
                if item.error is not None and self.error is None:
                    self.error = item.error
                item._done.set()
            with self._cond:
                self._written += len(batch)
                self._cond.notify_all()
            sealed = [i.ctx.snapshot["id"] for i in batch
                      if i.seal and i.ctx.snapshot and i.error is None]
            if sealed:
                self._text_q.put(sealed)
            if stop:
                return

    def close(self) -> None:
        """Write what is queued, index its text, then stop both threads."""
        self._q.put(None)
        self._thread.join()
        self._text_q.put(None)
        self._indexer.join()
