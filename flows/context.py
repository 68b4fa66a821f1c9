"""The process-wide Runtime and Recorder that flows and tasks work with, and the typed
hand-over from the crawl loop (and the CLI) to the flow and task runs it starts.

Flow and task parameters stay small and serialisable (ids, URLs) so that Prefect records
them cheaply and shows them in the UI; the heavy objects live here, one per process, in maps
keyed by the row id the run's parameters name.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archiveflow.tasks.crawls import CrawlStart
from archiveflow.tasks.feed import SnapshotFeed
from archiveflow.tasks.plan import ResultDone, SnapshotPlan
from archiveflow.tasks.recorder import Recorder
from archiveflow.tasks.runtime import Runtime, open_runtime


@dataclass
class SnapshotRun:
    """A claimed Snapshot handed to its task run (or subflow run) by the crawl loop."""

    plan: SnapshotPlan
    pool: ThreadPoolExecutor  # the crawl's: a snapshot's hook walk runs in it
    future: Future[list[ResultDone]] | None = None  # its hook walk, once started
    runs: int = 0  # hook walks started (a task retry prepares the snapshot again)


@dataclass
class HeadStart:
    """What the crawl flow adopts from the CLI's head start (flows/head_start.py): the feed,
    the pool, and the snapshot walks started before Prefect was ready."""

    feed: SnapshotFeed
    pool: ThreadPoolExecutor
    runs: list[SnapshotRun] = field(default_factory=list)


@dataclass
class Current:
    """The Runtime of this process, its Recorder, and what runs are handed over, by id."""

    rt: Runtime
    recorder: Recorder
    # crawl id → the claimed crawl and its on_Crawl hooks' work (the CLI runs them before
    # Prefect is ready, so the first hook never waits for it)
    crawl_starts: dict[str, CrawlStart] = field(default_factory=dict)
    # crawl id → the snapshots the CLI started while Prefect was getting ready, for the
    # crawl flow to adopt (flows/head_start.py)
    head_starts: dict[str, HeadStart] = field(default_factory=dict)
    # snapshot id → its prepared plan, for its `snapshot` task run or subflow run
    snapshot_runs: dict[str, SnapshotRun] = field(default_factory=dict)
    # Binary row id → the row its `binary` task run installs
    binary_rows: dict[str, dict[str, Any]] = field(default_factory=dict)


_lock = threading.Lock()
_current: Current | None = None


def install(rt: Runtime) -> Current:
    """Make `rt` the process's runtime (the CLI does this before starting flows)."""
    global _current
    with _lock:
        if _current is not None and _current.rt is rt:
            return _current
        _current = Current(rt, Recorder(rt.store))
        return _current


def current(data_dir: str | None = None) -> Current:
    """The installed runtime; a deployment run with no CLI opens one for `data_dir`."""
    if _current is not None:
        return _current
    if data_dir is None:
        raise RuntimeError("no archiveflow runtime in this process and no data_dir given")
    return install(open_runtime(Path(data_dir), wait_for_lock=600.0))


def uninstall() -> None:
    """Flush the recorder and forget the runtime (the index stays open for the caller)."""
    global _current
    with _lock:
        if _current is not None:
            _current.recorder.close()
            _current = None
