"""process_hook_records: hand every non-ArchiveResult record a hook printed to the store.

The one entry point for the records hooks print besides their ArchiveResult: a Crawl's
on_Crawl hooks (seeds), the Recorder's batches (every snapshot hook), and a reindex. It runs
inside the caller's transaction, so a batch of snapshots costs one transaction, not one each.
Records are grouped by type and written with one bulk statement per table. Snapshot records
are filtered with the parent's context first: URL checks, depth ≤ the crawl's max_depth,
allow/deny patterns, the crawl's URL cap, one Snapshot per URL per crawl.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from archiveflow.store import crawls as crawl_store
from archiveflow.store import load, machines
from archiveflow.store import snapshots as snapshot_store
from archiveflow.store.cursor import Cursor
from archiveflow.store.records import (
    BinaryRecord,
    CrawlRecord,
    MachineRecord,
    Record,
    SnapshotRecord,
    TagRecord,
)
from archiveflow.tasks.scope import scope_check
from archiveflow.tasks.urls import check_url


@dataclass(frozen=True)
class Context:
    """Who printed the records: the crawl, and the snapshot when the hook ran on one."""

    crawl: dict[str, Any]
    snapshot: dict[str, Any] | None = None
    machine_id: str | None = None
    allow_private: bool = False
    allow_file: bool = False
    scope: str = "any"  # CRAWL_SCOPE of the crawl (see tasks/scope.py)


@dataclass
class IngestReport:
    """Counts by record type that were stored, and what was refused with reasons."""

    counts: Counter[str] = field(default_factory=Counter)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (url, reason)
    created: list[tuple[str, str]] = field(default_factory=list)  # (snapshot id, url)


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    return re.compile(pattern) if pattern else None


def _filter_snapshots(
    recs: Sequence[SnapshotRecord], ctx: Context, report: IngestReport,
    seeds: Sequence[str] = (),
) -> list[dict[str, Any]]:
    crawl = ctx.crawl
    parent = ctx.snapshot
    default_depth = (parent["depth"] + 1) if parent else 0
    allow = _compile(crawl.get("url_allow"))
    deny = _compile(crawl.get("url_deny"))
    in_scope = scope_check(ctx.scope, seeds) if parent is not None else None
    out: list[dict[str, Any]] = []
    for rec in recs:
        depth = rec.depth if rec.depth is not None else default_depth
        if depth > crawl["max_depth"]:
            continue  # beyond the crawl's depth: not an error, just not followed
        url, reason = check_url(rec.url, allow_private=ctx.allow_private, allow_file=ctx.allow_file)
        if url is None:
            report.refused.append((rec.url, reason or "refused"))
            continue
        if in_scope is not None and not in_scope(url):
            continue  # outside the crawl's scope: not followed (like beyond its depth)
        if allow and not allow.search(url):
            continue
        if deny and deny.search(url):
            continue
        out.append(
            {
                "url": url,
                "depth": depth,
                "title": rec.title,
                "bookmarked_at": rec.bookmarked_at,
                "parent_id": parent["id"] if parent else None,
                "tags": rec.tag_list(),
            }
        )
    return out


def process_hook_records(cur: Cursor, records: Sequence[Record], ctx: Context) -> IngestReport:
    """Store every Snapshot/Tag/Binary/Machine/Crawl record (in the caller's transaction);
    returns counts by type and the URLs refused."""
    report = IngestReport()
    by_type: dict[type, list[Any]] = {}
    for r in records:
        by_type.setdefault(type(r), []).append(r)
    crawl = ctx.crawl
    found = by_type.get(SnapshotRecord, [])
    seeds = (snapshot_store.seed_urls(cur, crawl["id"])
             if found and ctx.snapshot is not None and ctx.scope != "any" else [])
    snaps = _filter_snapshots(found, ctx, report, seeds)
    if snaps and crawl.get("max_urls") is not None:
        room = max(0, int(crawl["max_urls"]) - snapshot_store.count_in_crawl(cur, crawl["id"]))
        snaps = snaps[:room]
    if snaps:
        df = load.frame("snapshot", snaps)
        created = load.insert_snapshots(
            cur, df, crawl_id=crawl["id"], username=crawl.get("username") or "default"
        )
        report.created.extend(created)
        report.counts["Snapshot"] += len(created)
        crawl_tags = [t for t in (crawl.get("tags") or "").split(",") if t.strip()]
        tags_by_url = {s["url"]: s["tags"] for s in snaps}
        pairs = [
            (sid, t.strip())
            for sid, url in created
            for t in [*crawl_tags, *tags_by_url.get(url, [])]
        ]
        snapshot_store.add_tags(cur, pairs)
    tag_recs: list[TagRecord] = by_type.get(TagRecord, [])
    if tag_recs and ctx.snapshot:
        report.counts["Tag"] += snapshot_store.add_tags(
            cur, [(ctx.snapshot["id"], t.name) for t in tag_recs]
        )
    machine_recs: list[MachineRecord] = by_type.get(MachineRecord, [])
    if machine_recs and ctx.machine_id:
        patch: dict[str, Any] = {}
        for m in machine_recs:
            patch.update(m.config)
        machines.patch_machine_config(cur, ctx.machine_id, patch)
        report.counts["Machine"] += len(machine_recs)
    crawl_recs: list[CrawlRecord] = by_type.get(CrawlRecord, [])
    for c in crawl_recs:
        if c.label:
            crawl_store.set_label(cur, crawl["id"], c.label)
        if c.config:
            crawl_store.merge_config(cur, crawl["id"], c.config)
        report.counts["Crawl"] += 1
    # Binary records from snapshot hooks are informational; provider hooks' Binary
    # records are stored by the install flow, which knows which row they answer.
    report.counts["Binary"] += len(by_type.get(BinaryRecord, []))
    return report
