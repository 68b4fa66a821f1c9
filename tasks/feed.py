"""SnapshotFeed: claimed, prepared Snapshots of one crawl, handed to its loop C at a time."""

from __future__ import annotations

import logging
from typing import Any

from archiveflow.tasks import crawls, snapshots
from archiveflow.tasks.plan import SnapshotPlan
from archiveflow.tasks.recorder import Recorder
from archiveflow.tasks.runtime import Runtime

log = logging.getLogger(__name__)


class SnapshotFeed:
    """Claimed, prepared snapshots of one crawl for a crawl loop to run, C at a time.

    Snapshots are claimed and prepared in batches (`batch`, default 4×C): one claim and one
    transaction for their ArchiveResults serve the whole batch, instead of ~6 statements per
    snapshot (each 1–15 ms here). A claimed snapshot waiting in the batch holds its lease
    like a running one; after a crash `crawls.expire_stale` frees it.

    Each snapshot is handed out once per feed: a claim that returns a snapshot this feed
    already handed out (a claim bug did once) is dropped before `prepare` (which would take
    the first run's `started` results for a dead run's and stop its hooks), logged and
    counted in `duplicates`, so it never runs twice and the crawl loop never holds two runs
    of one id. Such a claim leaves the row `started` under this process's lease; `done()`
    seals it once nothing runs (its first run is written by then), or the crawl would wait
    for it forever.
    """

    def __init__(self, rt: Runtime, recorder: Recorder, crawl: dict[str, Any],
                 concurrency: int, batch: int | None = None) -> None:
        self.rt, self.recorder, self.crawl = rt, recorder, crawl
        self.batch = max(1, batch if batch is not None else min(64, 4 * concurrency))
        self.ready: list[SnapshotPlan] = []
        self.started = 0
        self.duplicates = 0  # claimed again while (or after) this feed handed them out
        self._handed: set[str] = set()  # every snapshot id claimed through this feed
        self._claimed_again: list[str] = []  # duplicates to seal once nothing runs

    def _claim(self, n: int) -> None:
        fresh = []
        for s in snapshots.claim(self.rt, self.crawl, n):
            if s["id"] in self._handed:
                self.duplicates += 1
                log.warning("crawl %s: snapshot %s (%s) was claimed again while this crawl "
                            "already had it; not run twice (%d such claims so far)",
                            self.crawl["id"], s["id"], s.get("url"), self.duplicates)
                self._claimed_again.append(s["id"])
                continue
            self._handed.add(s["id"])
            fresh.append(s)
        self.ready.extend(snapshots.prepare(self.rt, self.crawl, fresh))

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
        """True when the crawl is finished: nothing queued or running left (after what the
        recorder holds is written). Call it only when none of this feed's snapshots runs."""
        self.recorder.flush()
        waiting = {p.snapshot["id"] for p in self.ready}
        written = [i for i in self._claimed_again if i not in waiting]
        if written:  # their first runs are written: nothing of this feed runs
            snapshots.seal_claimed_again(self.rt, written)
            self._claimed_again = [i for i in self._claimed_again if i in waiting]
        return not self.ready and crawls.is_finished(self.rt, self.crawl)
