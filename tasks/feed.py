"""SnapshotFeed: claimed, prepared Snapshots of one crawl, handed to its loop C at a time."""

from __future__ import annotations

from typing import Any

from archiveflow.tasks import crawls, snapshots
from archiveflow.tasks.plan import SnapshotPlan
from archiveflow.tasks.recorder import Recorder
from archiveflow.tasks.runtime import Runtime


class SnapshotFeed:
    """Claimed, prepared snapshots of one crawl for a crawl loop to run, C at a time.

    Snapshots are claimed and prepared in batches (`batch`, default 4×C): one claim and one
    transaction for their ArchiveResults serve the whole batch, instead of ~6 statements per
    snapshot (each 1–15 ms here). A claimed snapshot waiting in the batch holds its lease
    like a running one; after a crash `crawls.expire_stale` frees it.
    """

    def __init__(self, rt: Runtime, recorder: Recorder, crawl: dict[str, Any],
                 concurrency: int, batch: int | None = None) -> None:
        self.rt, self.recorder, self.crawl = rt, recorder, crawl
        self.batch = max(1, batch if batch is not None else min(64, 4 * concurrency))
        self.ready: list[SnapshotPlan] = []
        self.started = 0

    def _claim(self, n: int) -> None:
        claimed = snapshots.claim(self.rt, self.crawl, n)
        self.ready.extend(snapshots.prepare(self.rt, self.crawl, claimed))

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
        recorder holds is written)."""
        self.recorder.flush()
        return not self.ready and crawls.is_finished(self.rt, self.crawl)
