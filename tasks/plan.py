"""What a claimed Snapshot hands its hooks, and what each ArchiveResult's run hands back.

Plain data shared by the Snapshot and ArchiveResult modules (tasks/snapshots.py,
tasks/results.py) and the Recorder: none of them imports another for its types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archiveflow.tasks.discover import Hook
from archiveflow.tasks.hooks import HookOutcome, HookRun


@dataclass
class ResultDone:
    """The outcome of one ArchiveResult, ready to record."""

    ar_id: str
    hook: Hook
    outcome: HookOutcome
    run: HookRun | None = None


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
        """EXTRA_CONTEXT of an on_Snapshot hook (the ArchiveResult id is added per run)."""
        s = self.snapshot
        return {"snapshot_id": s["id"], "snapshot_depth": s["depth"], "crawl_id": s["crawl_id"]}

    def item(self, ar_id: str) -> PlanItem:
        """The pending ArchiveResult `ar_id` of this snapshot."""
        for it in self.items:
            if it.ar_id == ar_id:
                return it
        raise KeyError(f"snapshot {self.snapshot['id']} has no pending ArchiveResult {ar_id}")


def count_results(results: list[ResultDone]) -> dict[str, int]:
    """ArchiveResult counts by status."""
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome.status] = counts.get(r.outcome.status, 0) + 1
    return counts
