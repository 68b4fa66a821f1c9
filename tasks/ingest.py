"""process_hook_records: hand every non-ArchiveResult record a hook printed to the store.

The one entry point for the records hooks print besides their ArchiveResult: a Crawl's
on_Crawl hooks (seeds), the Recorder's batches (every snapshot hook), and a reindex. It runs
inside the caller's transaction, so a batch of snapshots costs one transaction, not one each.
Records are grouped by type and written with one bulk statement per table. Snapshot records
are filtered with the parent's context first: URL checks, depth ≤ the crawl's max_depth,
allow/deny patterns, the crawl's URL cap, one Snapshot per URL per crawl.

A hook may print millions of records (a 2M-line URL list through the seed parser): they are
never held at once. `ingest_outcomes` feeds a snapshot's runs chunk by chunk inside the
caller's transaction; `ingest_batches` loads a crawl hook's records in batches of their own
transactions with a progress callback. Every record is loaded or refused with its reason;
refusals are counted by reason and kept one by one up to MAX_REFUSED_KEPT.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from archiveflow.store import crawls as crawl_store
from archiveflow.store import load, machines
from archiveflow.store import snapshots as snapshot_store
from archiveflow.store.cursor import Cursor
from archiveflow.store.db import Store
from archiveflow.store.records import (
    BinaryRecord,
    CrawlRecord,
    MachineRecord,
    Record,
    SnapshotRecord,
    TagRecord,
)
from archiveflow.tasks.output import RECORD_CHUNK, HookOutcome, HookRecords
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


MAX_REFUSED_KEPT: Final[int] = 10_000  # refused URLs kept one by one; all are counted


@dataclass
class IngestReport:
    """Counts by record type that were stored, and what was refused with reasons.

    `refused` holds the first MAX_REFUSED_KEPT refusals one by one; `refused_count` and
    `refused_reasons` count every one of them."""

    counts: Counter[str] = field(default_factory=Counter)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (url, reason)
    created: list[tuple[str, str]] = field(default_factory=list)  # (snapshot id, url)
    refused_count: int = 0
    refused_reasons: Counter[str] = field(default_factory=Counter)

    def refuse(self, url: str, reason: str) -> None:
        """Count one refused URL with its reason (kept one by one up to the limit)."""
        self.refused_count += 1
        self.refused_reasons[_reason_kind(reason)] += 1
        if len(self.refused) < MAX_REFUSED_KEPT:
            self.refused.append((url, reason))

    def merge(self, other: IngestReport, *, created: bool = True) -> None:
        """Add another batch's report to this one (`created=False`: counts only, so a
        multi-million import does not hold every new snapshot's id)."""
        self.counts.update(other.counts)
        room = MAX_REFUSED_KEPT - len(self.refused)
        self.refused.extend(other.refused[:max(0, room)])
        self.refused_count += other.refused_count
        self.refused_reasons.update(other.refused_reasons)
        if created:
            self.created.extend(other.created)


def _reason_kind(reason: str) -> str:
    """A refusal reason without the value it names, to count refusals by kind."""
    return re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "…", reason)[:200]


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
            report.refuse(rec.url, reason or "refused")
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


def ingest_outcomes(cur: Cursor, outcomes: Iterable[HookOutcome], ctx: Context,
                    chunk: int = RECORD_CHUNK) -> IngestReport:
    """process_hook_records for every record these runs printed, `chunk` at a time, in the
    caller's transaction (a run's records may be millions: they are read from its files,
    never all held)."""
    total = IngestReport()
    # Tag names are gathered and added once: per chunk, each add_tags re-read the tags the
    # snapshot already had (1M Tag records: 172 s to load in 40 chunks, 32 s at once), and
    # names cost far less memory than their record models.
    names: list[str] = []
    for outcome in outcomes:
        for records in outcome.other_records.chunks(chunk):
            names.extend(r.name for r in records if isinstance(r, TagRecord))
            rest = [r for r in records if not isinstance(r, TagRecord)]
            if rest:
                total.merge(process_hook_records(cur, rest, ctx))
    if names and ctx.snapshot:
        sid = ctx.snapshot["id"]
        total.counts["Tag"] += snapshot_store.add_tags(cur, ((sid, n) for n in names))
    return total


def ingest_snapshots_outcomes(cur: Cursor, batch: Sequence[tuple[Sequence[HookOutcome], Context]],
                              chunk: int = RECORD_CHUNK) -> list[IngestReport]:
    """ingest_outcomes for a batch of snapshots (the Recorder's), one report each: the
    Snapshot records they discovered go in with one insert per crawl (per `chunk` rows)
    instead of one per snapshot (~5 statements each, 8 ms of CPU per page in a C=4 crawl).

    Same rules as one at a time: each record is filtered with its own snapshot's context,
    and a URL two snapshots of the batch discovered goes to the first of them (the batch's
    order), as when they were loaded one after the other.
    """
    reports = [IngestReport() for _ in batch]
    found: dict[str, list[tuple[int, dict[str, Any]]]] = {}  # crawl id → (item, row)
    crawl_of: dict[str, dict[str, Any]] = {}
    seeds_of: dict[str, list[str]] = {}

    def insert(crawl_id: str) -> None:
        rows = found.pop(crawl_id, [])
        crawl = crawl_of[crawl_id]
        if rows and crawl.get("max_urls") is not None:
            room = max(0, int(crawl["max_urls"]) - snapshot_store.count_in_crawl(cur, crawl_id))
            rows = rows[:room]
        if not rows:
            return
        df = load.frame("snapshot", [row for _, row in rows])
        created = load.insert_snapshots(cur, df, crawl_id=crawl_id,
                                        username=crawl.get("username") or "default")
        first: dict[str, tuple[int, list[str]]] = {}
        for i, row in rows:
            first.setdefault(row["url"], (i, row["tags"]))
        crawl_tags = [t for t in (crawl.get("tags") or "").split(",") if t.strip()]
        pairs: list[tuple[str, str]] = []
        for sid, url in created:
            i, tags = first[url]
            reports[i].created.append((sid, url))
            reports[i].counts["Snapshot"] += 1
            pairs.extend((sid, t.strip()) for t in [*crawl_tags, *tags])
        if pairs:
            snapshot_store.add_tags(cur, pairs)

    for i, (outcomes, ctx) in enumerate(batch):
        names: list[str] = []
        for outcome in outcomes:
            for records in outcome.other_records.chunks(chunk):
                names.extend(r.name for r in records if isinstance(r, TagRecord))
                snaps = [r for r in records if isinstance(r, SnapshotRecord)]
                rest = [r for r in records if not isinstance(r, (TagRecord, SnapshotRecord))]
                if rest:
                    reports[i].merge(process_hook_records(cur, rest, ctx))
                if not snaps:
                    continue
                cid = ctx.crawl["id"]
                crawl_of.setdefault(cid, ctx.crawl)
                if cid not in seeds_of:
                    seeds_of[cid] = (snapshot_store.seed_urls(cur, cid)
                                     if ctx.snapshot is not None and ctx.scope != "any"
                                     else [])
                rows = _filter_snapshots(snaps, ctx, reports[i], seeds_of[cid])
                found.setdefault(cid, []).extend((i, row) for row in rows)
                if len(found[cid]) >= chunk:
                    insert(cid)
        if names and ctx.snapshot:
            sid = ctx.snapshot["id"]
            reports[i].counts["Tag"] += snapshot_store.add_tags(cur, ((sid, n) for n in names))
    for cid in list(found):
        insert(cid)
    return reports


def ingest_batches(
    store: Store,
    records: HookRecords,
    ctx: Context,
    *,
    batch: int = RECORD_CHUNK,
    on_batch: Callable[[Cursor, IngestReport], None] | None = None,
    progress: Callable[[IngestReport], None] | None = None,
) -> IngestReport:
    """Load a crawl hook's records `batch` at a time, one transaction per batch, and call
    `on_batch(cur, batch_report)` inside each (to record its refusals) and
    `progress(total)` after it. The total's `created` stays empty (counts only)."""
    total = IngestReport()
    for records_batch in records.chunks(batch):
        with store.transaction() as cur:
            rep = process_hook_records(cur, records_batch, ctx)
            if on_batch is not None:
                on_batch(cur, rep)
        total.merge(rep, created=False)
        if progress is not None:
            progress(total)
    return total
