"""Snapshot rows: claim ready ones, seal, count, tag, look up by URL."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import duckdb
import polars as pl

from archiveflow.store.load import frame, insert_frame, scan
from archiveflow.store.transitions import claim_next, move


def claim_snapshots(
    cur: duckdb.DuckDBPyConnection, crawl_id: str, *, limit: int, lease: float
) -> list[dict[str, Any]]:
    """Claim up to `limit` ready snapshots of a crawl, shallowest first."""
    return claim_next(
        cur, "snapshot", "crawl_id = ?", [crawl_id], limit=limit, lease=lease,
        order_by="depth, created_at",
    )


def tags_of(cur: duckdb.DuckDBPyConnection, snapshot_ids: list[str]) -> dict[str, list[str]]:
    """Each snapshot's tags, sorted, for a batch of snapshots in one query."""
    out: dict[str, list[str]] = {i: [] for i in snapshot_ids}
    if snapshot_ids:
        for sid, tag in cur.execute(
            "SELECT snapshot_id, tag FROM snapshot_tag WHERE snapshot_id IN "
            "(SELECT unnest(?::VARCHAR[])) ORDER BY tag", [snapshot_ids]
        ).fetchall():
            out[sid].append(tag)
    return out


def seal_snapshots(cur: duckdb.DuckDBPyConnection, ids: Sequence[str]) -> list[str]:
    """started → sealed for many snapshots; returns the ids that moved."""
    return [r["id"] for r in move(cur, "snapshot", "seal", ids, returning="id")]


def set_titles_from_results(cur: duckdb.DuckDBPyConnection, snapshot_ids: Sequence[str]) -> None:
    """Each snapshot's title = what its `title` hook found (as in ArchiveBox), when it
    succeeded."""
    if snapshot_ids:
        cur.execute(
            """
            UPDATE snapshot SET title = a.output_str
            FROM archiveresult a
            WHERE a.snapshot_id = snapshot.id AND a.plugin = 'title'
              AND a.status = 'succeeded' AND snapshot.id IN (SELECT unnest(?::VARCHAR[]))
            """,
            [list(snapshot_ids)],
        )


def archived_urls(cur: duckdb.DuckDBPyConnection, urls: Sequence[str]) -> set[str]:
    """The subset of `urls` that has a Snapshot (in any crawl): one set-based lookup."""
    if not urls:
        return set()
    rows = cur.execute(
        "SELECT DISTINCT url FROM snapshot WHERE url IN (SELECT unnest(?::VARCHAR[]))",
        [list(urls)]).fetchall()
    return {r[0] for r in rows}


def count_in_crawl(cur: duckdb.DuckDBPyConnection, crawl_id: str) -> int:
    """How many snapshots the crawl has (any status): its URL cap counts these."""
    row = cur.execute("SELECT count(*) FROM snapshot WHERE crawl_id = ?", [crawl_id]).fetchone()
    return int(row[0]) if row else 0


def counts(cur: duckdb.DuckDBPyConnection, crawl_id: str) -> dict[str, int]:
    """Snapshots of a crawl by status."""
    rows = cur.execute(
        "SELECT status, count(*) FROM snapshot WHERE crawl_id = ? GROUP BY status", [crawl_id]
    ).fetchall()
    return {s: int(n) for s, n in rows}


def is_crawl_done(cur: duckdb.DuckDBPyConnection, crawl_id: str) -> bool:
    """True when no snapshot of the crawl is queued or started."""
    row = cur.execute(
        "SELECT count(*) FROM snapshot WHERE crawl_id = ? AND status IN ('queued', 'started')",
        [crawl_id],
    ).fetchone()
    return row is not None and row[0] == 0


def add_tags(cur: duckdb.DuckDBPyConnection, pairs: Iterable[tuple[str, str]]) -> int:
    """Attach (snapshot_id, tag) pairs in bulk; creates missing tags. Returns links added."""
    df = frame("snapshot_tag", pl.DataFrame(
        list(pairs), schema={"snapshot_id": pl.Utf8, "tag": pl.Utf8}, orient="row"))
    df = df.with_columns(pl.col("tag").str.strip_chars()).filter(
        pl.col("tag").str.len_chars() > 0)
    if df.is_empty():
        return 0
    # One tag per name whatever its case (`Harbor` and `harbor` are one tag): the first
    # spelling the index saw wins, else the batch's first.
    df = df.with_columns(pl.col("tag").str.to_lowercase().alias("_key"))
    # The keys go in as an Arrow table read by name (a replacement scan), not as a list
    # parameter: DuckDB converted a Python list value by value, with a failed module
    # import per value (100k tags: ~25 s of CPU; this way ~0.1 s).
    _af_tag_keys = scan(cur, df.select(pl.col("_key").unique()))  # noqa: F841 - read by name
    known = dict(cur.execute(
        "SELECT lower(name), any_value(name) FROM tag "
        "WHERE lower(name) IN (SELECT _key FROM _af_tag_keys) GROUP BY 1").fetchall())
    first = df.unique("_key", keep="first", maintain_order=True)
    spelling = {**dict(zip(first["_key"], first["tag"], strict=True)), **known}
    df = df.with_columns(pl.col("_key").replace_strict(spelling).alias("tag")).drop(
        "_key").unique(maintain_order=True)
    insert_frame(cur, "tag", df.select(pl.col("tag").alias("name")))
    return len(insert_frame(cur, "snapshot_tag", df))


def seed_urls(cur: duckdb.DuckDBPyConnection, crawl_id: str) -> list[str]:
    """The crawl's depth-0 URLs: what its scope is measured from."""
    rows = cur.execute("SELECT url FROM snapshot WHERE crawl_id = ? AND depth = 0",
                       [crawl_id]).fetchall()
    return [r[0] for r in rows]


@contextlib.contextmanager
def bounded_memory(cur: duckdb.DuckDBPyConnection, megabytes: int) -> Iterator[None]:
    """DuckDB's memory limit lowered to `megabytes` for a bulk import, then reset.

    Each batch's anti-join reads the crawl's URLs; without a limit DuckDB keeps every block
    it read cached (its default limit is 80% of RAM), so the importing process grew by
    ~100 MB per million snapshots. Evicted blocks are read again from the file instead."""
    cur.execute(f"SET memory_limit = '{int(megabytes)}MB'")
    try:
        yield
    finally:
        cur.execute("RESET memory_limit")
